/* Whether each notifier (the host[:port] serving a group of subscriptions) still has our
 * subscriptions, and the sweeps over a notifier's group when it has lost them or is back.
 * Called by subscription.c, which embeds a struct probe_member in each subscription,
 * reports its life here and is told what to do through struct probe_ops. Knows nothing
 * of SIP messages: subscription.c sends the refreshes and hands their answers back.
 *
 * A notifier that restarts forgets its subscriptions and says nothing: its NOTIFYs just
 * stop. Every probe interval one established subscription per notifier (taken in turn) is
 * refreshed, skipping any the notifier answered or notified within the last second: that
 * answer already says the dialog is alive, and a refresh right behind a 2xx would cross
 * the NOTIFY the notifier sends with it. When the notifier turns out to have lost a
 * dialog, every subscription to it is re-established; when one succeeds after failures,
 * all that failed with it retry at once instead of each waiting out its own backoff.
 *
 * A notifier that stops answering is unreachable: a probe got no answer within the
 * transaction timeout (408) or a transport error (503: nothing listens there), or a
 * subscription failed so while nothing had been heard from the notifier for two probe
 * intervals (a PBX down at start-up). Every subscription to it is then parked, down as of
 * the probe's sending, so that its users go unknown stale_after later, and none retries
 * on its own. While it is unreachable, each probe interval one parked subscription tries
 * again; the first sign of life (that attempt answered, any NOTIFY or 2xx) makes it
 * reachable, and every parked subscription is re-established (through the ramp). */
#ifndef OFFHOOK_PROBE_H
#define OFFHOOK_PROBE_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct sbuf;
struct probe;
struct probe_notifier;

/* One subscription as the probe sees it. Embedded in the subscription (zeroed), joined to
 * its notifier by probe_attach and left by probe_detach. */
struct probe_member {
    struct probe_notifier *nt;
    struct probe_member *prev, *next; /* in nt's group */
    int64_t heard_ms;                 /* mono ms of the notifier's last 2xx (not to a
                                       * probe) or NOTIFY in this dialog */
};

/* What the probe asks of a member's owner. Each is called from the loop, never from
 * inside another probe_* call of the same member. */
struct probe_ops {
    /* m's dialog is established (active, with a handle, not waiting for the ramp). */
    bool (*can_probe)(struct probe_member *m);
    /* Refresh m's dialog; its final answer must come back through probe_answered. */
    void (*refresh)(struct probe_member *m);
    /* m's notifier lost our dialogs: put m on its way to a new one. false: it already is
     * (not counted). */
    bool (*resubscribe)(struct probe_member *m);
    /* m's notifier is reachable again: retry m now if it failed with it. false: not. */
    bool (*retry)(struct probe_member *m);
    /* m's notifier stopped answering: m is down as of since_ms (monotonic) and waits for
     * the notifier, retrying nothing by itself. Its dialog, if any, is kept: a NOTIFY on
     * it is a sign of life. */
    void (*park)(struct probe_member *m, int64_t since_ms);
    /* While the notifier is unreachable: try parked m once more now, its final answer
     * back through probe_answered. false: m is not parked (not tried). */
    bool (*try_again)(struct probe_member *m);
    /* How many users m's subscription serves; *key is the same non-NULL pointer for every
     * subscription of one user, or NULL when m serves several (a resource list). */
    int (*users)(struct probe_member *m, const void **key);
    /* For logs: m's AOR and event package (its owner's strings: a member does not keep
     * copies of them, it exists once per subscription). */
    const char *(*aor)(const struct probe_member *m);
    const char *(*event)(const struct probe_member *m);
};

/* ops (static) is kept. Probing is off until probe_set_interval. */
struct probe *probe_new(struct event_base *base, const struct probe_ops *ops);
/* Frees every notifier; every member must have been detached. */
void probe_free(struct probe *p);
/* Every seconds (0: never), probe each notifier once. 0 also ends every unreachable
 * spell (nothing would try the notifier again): its members retry. */
void probe_set_interval(struct probe *p, long seconds);
/* Joins m to the notifier of aor (its AOR and package for logs come from ops). */
void probe_attach(struct probe *p, struct probe_member *m, const char *aor);
void probe_detach(struct probe_member *m);
/* The notifier showed m's dialog alive at now_ms (a NOTIFY, or a 2xx not to a probe). */
void probe_heard(struct probe_member *m, int64_t now_ms);
/* m's dialog is going away: a probe riding on it is over. */
void probe_forget(struct probe_member *m);
/* A final answer (status) to a refresh of m's dialog, or to m's SUBSCRIBE tried again
 * while its notifier is unreachable, arrived. True if it answered a probe (counted by
 * result); the caller then must not count it as a sign of life. A probe answered 408 (no
 * answer within the transaction timeout) or 503 (transport error) makes the notifier
 * unreachable: every member, m included, is parked before this returns. */
bool probe_answered(struct probe_member *m, int status);
/* m's SUBSCRIBE (not a probe) failed with status. True if its notifier is unreachable,
 * already or now (408 or 503 from a notifier silent for two probe intervals): the caller
 * parks m instead of retrying it. */
bool probe_failed(struct probe_member *m, int status);
/* Whether m's notifier is unreachable (a failure of m then parks it again). */
bool probe_unreachable(const struct probe_member *m);
/* One line per unreachable notifier ("sip: notifier ... unreachable ...\n", for /readyz)
 * appended to why; returns how many there are. */
int probe_report_unreachable(const struct probe *p, struct sbuf *why);
/* The notifier of trigger forgot trigger's dialog (481 to an in-dialog refresh): it
 * restarted and forgot them all. Every member of the group is asked to resubscribe. */
void probe_notifier_lost(struct probe_member *trigger);
/* A subscription to trigger's notifier succeeded after failures, or showed life while
 * the notifier was unreachable: the others that failed with it are asked to retry now
 * (at most one such sweep per notifier per second, except the one that ends an
 * unreachable spell). */
void probe_notifier_back(struct probe_member *trigger);
/* The host[:port] naming m's notifier (for logs; valid while m is attached), or "". */
const char *probe_notifier_name(const struct probe_member *m);
void probe_register_metrics(void);

#endif
