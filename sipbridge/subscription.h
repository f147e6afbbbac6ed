/* The life of each SIP event subscription (one AOR, one event package): started at a
 * bounded rate, re-established with backoff and jitter after any failure (error response,
 * timeout, Subscription-State: terminated, silence past its expiry), never waiting longer
 * than max_backoff whatever the notifier asks, refreshed on demand when its owner sees a
 * version gap, made anew when its owner sees the versions disagree, NOTIFY floods held to
 * a rate, grants below [sip] min_expires let lapse and made again once per that floor
 * (warned about per notifier), and its owner told when it has been
 * down for stale_after. Every state is visible in logs and a gauge; log lines its
 * notifier's messages cause are rate-limited per subscription; a ramp (start-up, reload,
 * mass resubscribe) logs its progress and its end.
 * Called by bridge.c and rlsub.c, which own subscriptions and get their news through
 * struct subs_owner_ops; uses sipua.c for the wire and probe.c for notifier liveness. */
#ifndef OFFHOOK_SUBSCRIPTION_H
#define OFFHOOK_SUBSCRIPTION_H

#include <stdbool.h>
#include <stdint.h>

#include "log.h"
#include "sipua.h"

struct event_base;
struct sbuf;
struct subs_mgr;
struct subscription;
struct timerq;

/* The default floor on granted expiry ([sip] min_expires, subs_mgr_set_min_expires):
 * RFC 6665 leaves the floor to the notifier (423 Min-Expires), and a PBX granting
 * Expires: 1 would cost a refresh per second per user. */
#define SUBS_EXPIRES_FLOOR_S 60

enum sub_state {
    SUB_QUEUED,      /* waiting for the start-up ramp */
    SUB_SUBSCRIBING, /* SUBSCRIBE sent, no final answer yet */
    SUB_PENDING,     /* accepted, notifier says pending (authorization) */
    SUB_ACTIVE,      /* accepted and notifying */
    SUB_BACKOFF,     /* failed; waiting to resubscribe */
    SUB__COUNT
};

struct subs_owner_ops {
    /* A NOTIFY arrived on this subscription (pointers valid during the call). */
    void (*on_notify)(void *owner, struct subscription *s, const struct sipua_notify *n);
    /* A new subscription dialog starts: the owner restarts version tracking. */
    void (*on_restart)(void *owner, struct subscription *s);
    /* The subscription changed state (optional). */
    void (*on_state)(void *owner, struct subscription *s, enum sub_state st);
    /* The subscription has been down (neither active nor pending) for the manager's
     * stale_after, down_s seconds: what it said is void (optional). */
    void (*on_stale)(void *owner, struct subscription *s, long down_s);
    /* How many users the subscription serves, for the count in a notifier's log line and
     * /readyz; *key: the same non-NULL pointer for every subscription of one user, or NULL
     * when it serves several (optional: each subscription then counts as one user). */
    int (*users)(void *owner, const void **key);
};

/* Timers run on tq (one heap for every subscription's). */
struct subs_mgr *subs_mgr_new(struct event_base *base, struct timerq *tq, struct sipua *ua,
                              long expires, double rate_per_s);
void subs_mgr_free(struct subs_mgr *m);
void subs_mgr_set_expires(struct subs_mgr *m, long expires);
void subs_mgr_set_rate(struct subs_mgr *m, double rate_per_s);
/* n datagrams were dropped on the SIP port: a ramp under way halves its pace, and comes
 * back to subscribe_rate by a quarter each second without drops. */
void subs_mgr_datagrams_dropped(struct subs_mgr *m, uint32_t n);
/* The floor on granted expiry (seconds, from [sip] min_expires; the caller keeps it at
 * most the expires asked for). A grant below it (a 2xx's Expires, or a NOTIFY's expires=
 * that shortens the grant) is short: counted (offhook_short_expiry_grants_total), warned
 * about once per notifier and event package when short grants start (then at most every
 * ten minutes, with how many came), not refreshed (sipua.c lets it lapse), and the
 * subscription's next SUBSCRIBE, whatever ends the dialog, waits until a floor after its
 * last one. Between the grant's end and that SUBSCRIBE the subscription is down (backoff,
 * stale_after applies); NOTIFYs still arriving in the dialog are applied. */
void subs_mgr_set_min_expires(struct subs_mgr *m, long seconds);
/* A subscription down this long (seconds; 0: never) is reported by on_stale. Applies
 * from the next time one goes down. */
void subs_mgr_set_stale_after(struct subs_mgr *m, long seconds);
/* The longest a subscription waits before it is tried again (seconds, at least 1),
 * whatever its backoff, a notifier's Retry-After / retry-after= or a rejection asks for.
 * Applies from the next wait. Default 300. */
void subs_mgr_set_max_backoff(struct subs_mgr *m, long seconds);
/* Every seconds (0: never), refresh one active subscription per notifier to learn whether
 * it still has them (see probe.h). */
void subs_mgr_set_probe(struct subs_mgr *m, long seconds);
/* NOTIFYs applied per subscription per second at most (bursts of twice that); beyond it
 * only the latest is kept and applied when allowed. Resource lists are exempt. 0: none. */
void subs_mgr_set_notify_rate(struct subs_mgr *m, double per_s);
/* One line per notifier taken for unreachable, appended to why (for /readyz); returns how
 * many there are. */
int subs_mgr_report_unreachable(const struct subs_mgr *m, struct sbuf *why);
/* Number of subscriptions in each state (for readiness and status lines). */
int subs_mgr_count(const struct subs_mgr *m, enum sub_state st);
int subs_mgr_total(const struct subs_mgr *m);

/* Creates and queues a subscription. event: "dialog", "presence" or "reg". eventlist:
 * the URI is an RFC 4662 resource list (Supported: eventlist). ops (static) report to
 * owner. aor, event and accept are not copied: they must stay valid until subs_free (the
 * owner's own strings, or static ones); at 100,000 subscriptions copies would cost
 * three allocations each. */
struct subscription *subs_new(struct subs_mgr *m, const char *aor, const char *event,
                              const char *accept, bool eventlist,
                              const struct subs_owner_ops *ops, void *owner);
/* Stops it (a live subscription gets Expires: 0) and frees it. Not from the owner's
 * callbacks. */
void subs_free(struct subscription *s);
/* Asks the notifier for a fresh full state (re-SUBSCRIBE in the dialog). why: static. */
void subs_request_full_state(struct subscription *s, const char *why);
/* The notifier's document versions and ours no longer agree in this dialog (docver.h):
 * a new subscription (through the ramp; on_restart when it starts) begins a new count.
 * Nothing if one is already on its way. why: static, for the log. */
void subs_resync(struct subscription *s, const char *why);
/* The callbacks sipua_new() must be given: the user agent reports to subscriptions. */
const struct sipua_ops *subs_ua_ops(void);
const char *subs_aor(const struct subscription *s);
const char *subs_event(const struct subscription *s);
enum sub_state subs_state(const struct subscription *s);
const char *sub_state_name(enum sub_state st);
void subs_register_metrics(void);

/* What the control socket shows of one subscription. Strings point into it: valid until
 * it changes (read them in the same loop turn). Times are wall-clock ms, 0 for never. */
struct subs_info {
    const char *aor, *event;
    enum sub_state state;
    bool eventlist;            /* the RFC 4662 list subscription */
    int64_t since_ms;          /* when it entered state */
    int last_status;           /* last final answer to a SUBSCRIBE (initial, refresh,
                                * probe); 0: none yet */
    const char *last_phrase;   /* its reason phrase */
    int64_t last_answer_ms;
    int64_t last_notify_ms;    /* the last NOTIFY */
    const char *end_reason;    /* reason of the last Subscription-State: terminated, "" */
    const char *down_cause;    /* why it last went to backoff: error_response, timeout,
                                * terminated, silence, ...; "" if never */
    int64_t next_try_ms;       /* in backoff: when it will be tried again; 0 otherwise */
    long granted_s;            /* the expiry the notifier granted, 0 without a dialog */
    unsigned failures;         /* attempts failed since the last success */
    bool failed;               /* the last attempt timed out or got a 5xx (a notifier's
                                * recovery retries it at once) */
    struct log_trace trace;
};
void subs_get_info(const struct subscription *s, struct subs_info *out);
/* Its SIP messages and decisions go to the log at debug level while t runs (copied). */
void subs_set_trace(struct subscription *s, const struct log_trace *t);

#endif
