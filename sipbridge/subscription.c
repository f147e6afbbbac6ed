/* Subscription lifecycle: ramp, backoff, RFC 6665 termination reasons, silence watchdog,
 * NOTIFY flood control. Which notifier serves a subscription and whether it still has
 * them is probe.c's: the answer 481 to any in-dialog refresh means the notifier has lost
 * the dialog, and then probe.c has every subscription to it re-established here (through
 * the ramp, old dialogs released as each new one starts). */
#include "subscription.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "backoff.h"
#include "expiry.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "ratelimit.h"
#include "strmap.h"
#include "strutil.h"
#include "timerq.h"

#define RETRY_BASE_MS 1000
#define RETRY_MAX_MS 300000       /* 5 minutes between attempts at worst */
#define REJECTED_MIN_MS 60000     /* rejected/noresource: no point in hammering */
#define WATCHDOG_GRACE_MAX_S 30   /* silence allowed past the granted expiry ... */
#define WATCHDOG_GRACE_MIN_S 2    /* ... at least, for very short expiries */
#define RAMP_REPORT_S 10          /* a ramp's progress is logged this often ... */
#define RAMP_REPORT_MIN 100       /* ... and its end at notice if it sent this many */
#define SHORT_LOG_EVERY_MS 600000 /* a notifier's short grants: one line when they start,
                                   * then one at most this often while they go on */

struct subscription {
    struct subs_mgr *mgr;
    const char *aor;              /* the owner's strings (or static): see subs_new */
    const char *event;
    const char *accept;
    void *owner;
    struct sipua_handle *h;
    struct backoff bo;
    struct tq_timer timer;        /* retry, or watchdog while subscribed */
    struct tq_timer stale_t;      /* armed while down, for the manager's stale_after */
    int64_t sent_ms;              /* mono ms of its last new SUBSCRIBE; 0: none yet */
    int64_t grant_end_ms;         /* mono ms the notifier's grant in this dialog runs out
                                   * (2xx Expires, or a NOTIFY's expires=); 0: unknown */
    struct subscription *qnext;   /* ramp queue link */
    struct subscription **qpprev; /* what points at it in the queue: dequeue in O(1) (a
                                   * sipbridge handing 50,000 queued users over frees
                                   * them all in one pass) */
    /* Packed into 16 bytes (a subscription exists once per user and package). */
    bool queued : 1;
    bool eventlist : 1;           /* RFC 4662 list subscription */
    bool failed : 1;              /* the last attempt failed (timeout, transport, 5xx) */
    bool parked : 1;              /* its notifier is unreachable: no retry of its own */
    bool short_grant : 1;         /* the notifier's last grant was below the floor: the
                                   * dialog lapses unrefreshed and the next SUBSCRIBE
                                   * waits for sent_ms + floor, whatever ends it */
    bool notified : 1;            /* a NOTIFY arrived in this dialog */
    uint8_t state;                /* enum sub_state */
    int16_t last_status;          /* last final answer to a SUBSCRIBE; 0: none yet */
    int32_t granted;              /* expiry the notifier granted, seconds (secs32); 0 = no
                                   * answer yet */
    int32_t min_expires;          /* the notifier's Min-Expires (423), 0 if none */
    uint8_t ops_ix;               /* its owner's ops: mgr->ops[ops_ix] (a pointer each
                                   * would cost 8 B per user and package) */
    uint8_t down_cause;           /* enum down_cause: why it last went to backoff */
    /* What the control socket shows (subs_info): the last reason phrase (WORD_PHRASE) and
     * the reason of the last Subscription-State: terminated ("" until one, WORD_END):
     * an index in common_words, or WORD_OWNED: the copy in cold->words. See word_set. */
    uint8_t words[2];
    int64_t down_ms;              /* mono ms it went down (left active/pending) */
    struct probe_member pm;       /* in its notifier's group (probe.c) */
    /* NOTIFY flood control (not for resource lists): a NOTIFY beyond the manager's
     * notify limit waits here, replaced by any newer one, until a token comes. */
    struct ratelimit_bucket nbucket;
    struct stash *stash;          /* while a flood is held back */
    struct sub_cold *cold;        /* what few subscriptions ever need (log gate, trace):
                                   * from the first use on, NULL until then */
    /* What the control socket shows (subs_info): bookkeeping only, no decision reads it. */
    int64_t since_ms;             /* wall ms the current state began */
    int64_t last_answer_ms;       /* wall ms of it */
    int64_t last_notify_ms;       /* wall ms of the last NOTIFY, 0: never */
};

/* The 264 B above are a 272 B chunk per user and package: keep it so. */
_Static_assert(sizeof(struct subscription) <= 264, "struct subscription grew a chunk");

/* The rare part of a subscription, allocated by the first line its notifier's messages
 * make it log or the first offhookctl trace of it, freed with it. */
struct sub_cold {
    struct ratelimit_gate log_gate; /* the log lines its notifier's messages cause */
    struct log_trace trace;       /* offhookctl trace of its AOR or user */
    char *words[2];               /* owned: the uncommon words (see subscription.words) */
};

#define WORD_PHRASE 0
#define WORD_END 1
#define WORD_OWNED UINT8_MAX

/* Why a subscription last went to backoff (subs_info.down_cause): the words the log and
 * offhook_resubscriptions_total use. */
enum down_cause {
    DOWN_NONE,
    DOWN_NO_HANDLE,
    DOWN_SILENCE,
    DOWN_ERROR_RESPONSE,
    DOWN_TIMEOUT,
    DOWN_TERMINATED,
    DOWN_SHORT_GRANT,
    DOWN__COUNT
};

static const char *const down_causes[DOWN__COUNT] = {
    [DOWN_NONE] = "",
    [DOWN_NO_HANDLE] = "cannot create handle",
    [DOWN_SILENCE] = "silence",
    [DOWN_ERROR_RESPONSE] = "error_response",
    [DOWN_TIMEOUT] = "timeout",
    [DOWN_TERMINATED] = "terminated",
    [DOWN_SHORT_GRANT] = "short_grant",
};

/* Distinct owner ops one manager serves (bridge.c's and rlsub.c's). */
#define SUBS_MAX_OPS 4

struct stash {
    struct subscription *s;
    char *content_type;
    char *body;
    size_t len;
    long expires;
    int64_t received_us;
    struct tq_timer t;            /* when a token comes */
    uint64_t throttled;           /* NOTIFYs held back in this flood */
};

struct subs_mgr {
    struct event_base *base;
    struct timerq *tq;
    struct sipua *ua;
    long expires;
    struct ratelimit ramp;        /* SUBSCRIBEs per second, bursts of one second's worth */
    struct ratelimit_bucket ramp_bucket;
    double ramp_rate;             /* [sip] subscribe_rate; ramp.rate is it times the
                                   * slow-down factor below */
    double ramp_factor;           /* 1, halved on each report of dropped datagrams, back up
                                   * a quarter a second while none come */
    struct event *ramp_recover;   /* while slowed down */
    struct subscription *qhead, **qtail;
    struct event *ramp_ev;
    int count[SUB__COUNT];
    int total;
    uint64_t seed;
    struct probe *probe;          /* notifier groups and probes */
    struct ratelimit notify;      /* NOTIFYs per subscription; rate 0: no limit */
    long stale_after;             /* seconds down before owners are told; 0: never */
    long max_backoff_ms;          /* the longest wait before a retry, whatever is asked */
    long floor_s;                 /* [sip] min_expires: grants below are short */
    struct strmap short_notes;    /* "notifier package" -> struct short_note (owned) */
    /* The ramp under way (start-up, reload, mass resubscribe): from the first enqueue
     * until the queue is empty and every SUBSCRIBE it sent has its answer. */
    bool ramping;
    int64_t ramp_start_ms;
    int ramp_sent;
    struct event *ramp_tick;      /* progress line every RAMP_REPORT_S */
    const struct subs_owner_ops *ops[SUBS_MAX_OPS]; /* subscriptions' ops_ix: the owners' */
    int n_ops;
};

static const struct subs_owner_ops *sub_ops(const struct subscription *s)
{
    return s->mgr->ops[s->ops_ix];
}

/* s's trace, NULL while it never had one (log_traced takes NULL for off). */
static const struct log_trace *sub_trace(const struct subscription *s)
{
    return s->cold ? &s->cold->trace : NULL;
}

static struct sub_cold *sub_cold(struct subscription *s)
{
    if (!s->cold)
        s->cold = xcalloc(1, sizeof *s->cold);
    return s->cold;
}

/* Seconds kept in 32 bits (the parsers cap what they read at 2^30). */
static int32_t secs32(long v)
{
    return v < 0 ? 0 : v > INT32_MAX ? INT32_MAX : (int32_t)v;
}

static const char *const state_names[SUB__COUNT] = {
    [SUB_QUEUED] = "queued",   [SUB_SUBSCRIBING] = "subscribing", [SUB_PENDING] = "pending",
    [SUB_ACTIVE] = "active",   [SUB_BACKOFF] = "backoff",
};

/* The short grants of one notifier for one event package, for its aggregated warning. */
struct short_note {
    int64_t logged_ms;            /* mono ms of its last line */
    uint64_t grants;              /* short grants since that line */
    char key[];                   /* "notifier package": the map's key */
};

/* The words subs_info shows (the last reason phrase, the last termination reason) are
 * nearly always one of these: a subscription keeps the static word's index and allocates
 * only for another one. Two fixed buffers cost 88 bytes in each of 100,000 records. */
#define PHRASE_MAX 63
#define END_REASON_MAX 23
static const char *const common_words[] = {
    "", "OK", "Accepted", "none", "deactivated", "probation", "rejected", "timeout",
    "giveup", "noresource", "invariant", "Request Timeout", "Forbidden", "Not Found",
    "Service Unavailable", "Server Internal Error", "Unauthorized",
    "Proxy Authentication Required", "Interval Too Brief", "Bad Event",
    "Call/Transaction Does Not Exist", NULL};

static const char *word_get(const struct subscription *s, int k)
{
    return s->words[k] == WORD_OWNED ? s->cold->words[k] : common_words[s->words[k]];
}

/* s's word k = v cut to max bytes (on a UTF-8 boundary): the index of the static word if
 * common, else an owned copy (kept as it is on allocation failure: bookkeeping only). */
static void word_set(struct subscription *s, int k, const char *v, size_t max)
{
    char buf[PHRASE_MAX + 1];
    char *copy;

    str_copy_utf8(buf, max + 1 < sizeof buf ? max + 1 : sizeof buf, v);
    if (!strcmp(word_get(s, k), buf))
        return;
    for (uint8_t i = 0; common_words[i]; i++)
        if (!strcmp(common_words[i], buf)) {
            if (s->cold) {
                free(s->cold->words[k]);
                s->cold->words[k] = NULL;
            }
            s->words[k] = i;
            return;
        }
    copy = strdup(buf);
    if (!copy)
        return;
    free(sub_cold(s)->words[k]);
    s->cold->words[k] = copy;
    s->words[k] = WORD_OWNED;
}

static struct metric *m_state, *m_resub, *m_sent, *m_throttled, *m_notifies, *m_short;

const char *sub_state_name(enum sub_state st)
{
    return (unsigned)st < SUB__COUNT ? state_names[st] : "?";
}

void subs_register_metrics(void)
{
    static const char *const states[] = {"queued", "subscribing", "pending", "active",
                                         "backoff", NULL};
    static const char *const causes[] = {"error_response", "timeout", "terminated",
                                         "silence", "version_gap", "stale_versions",
                                         "notifier_lost", "notifier_back", "short_grant",
                                         NULL};

    m_state = metric_new(METRIC_GAUGE, "offhook_subscriptions",
                         "SIP event subscriptions by state.", "state", states);
    m_resub = metric_new(METRIC_COUNTER, "offhook_resubscribes_total",
                         "Subscriptions re-established or refreshed early, by cause.", "cause",
                         causes);
    m_sent = metric_new(METRIC_COUNTER, "offhook_subscribe_sent_total",
                        "Initial SUBSCRIBE requests sent (refreshes by the stack not counted).",
                        NULL, NULL);
    m_notifies = metric_new(METRIC_COUNTER, "offhook_notifies_total",
                            "NOTIFY requests received, by event package.", "package",
                            (const char *const[]){"dialog", "presence", "reg", NULL});
    m_throttled = metric_new(METRIC_COUNTER, "offhook_notifies_throttled_total",
                             "NOTIFYs beyond [sip] notify_rate on one subscription: deferred "
                             "(applied late) or superseded (a newer one was applied instead).",
                             "outcome", (const char *const[]){"deferred", "superseded", NULL});
    m_short = metric_new(METRIC_COUNTER, "offhook_short_expiry_grants_total",
                         "Subscription grants (2xx Expires, or a NOTIFY's expires= shortening "
                         "one) below [sip] min_expires: each lapses, and is made again at "
                         "that pace.",
                         NULL, NULL);
}

/* Whether a line about s that its notifier's messages caused may be logged now; held
 * gets how many were held back since the last one (the gate of ratelimit_peer_log). */
static bool peer_log_ok(struct subscription *s, uint64_t *held)
{
    return ratelimit_gate_pass(&ratelimit_peer_log, &sub_cold(s)->log_gate, clock_mono_ms(),
                               held);
}

#define OF(field, t) ((struct subscription *)((char *)(t) - offsetof(struct subscription, field)))

static bool is_up(enum sub_state st)
{
    return st == SUB_ACTIVE || st == SUB_PENDING;
}

static void on_stale(struct tq_timer *t)
{
    struct subscription *s = OF(stale_t, t);

    if (sub_ops(s)->on_stale)
        sub_ops(s)->on_stale(s->owner, s, s->mgr->stale_after);
}

/* Down (neither active nor pending) for stale_after, counted from when it went down
 * (down_ms, which a parked subscription dates back to its notifier's last probe): what the
 * subscription said is void. Up again, the count stops. */
static void watch_stale(struct subscription *s)
{
    if (is_up(s->state) || s->mgr->stale_after <= 0) {
        tq_cancel(s->mgr->tq, &s->stale_t);
        return;
    }
    if (!tq_armed(&s->stale_t))
        tq_arm_at(s->mgr->tq, &s->stale_t, on_stale,
                  s->down_ms + (int64_t)s->mgr->stale_after * 1000);
}

static void ramp_check_done(struct subs_mgr *m);

/* Moves s to st; a subscription leaving active/pending is down as of since_ms. */
static void set_state_since(struct subscription *s, enum sub_state st, int64_t since_ms)
{
    if (s->state == st)
        return;
    if (is_up(s->state) && !is_up(st))
        s->down_ms = since_ms;
    s->mgr->count[s->state]--;
    s->mgr->count[st]++;
    metric_set(m_state, sub_state_name(s->state), s->mgr->count[s->state]);
    metric_set(m_state, sub_state_name(st), s->mgr->count[st]);
    log_trace(sub_trace(s), "sip", "event=subscription_state aor=%s package=%s from=%s to=%s",
              log_q(s->aor), s->event, sub_state_name(s->state), sub_state_name(st));
    s->state = st;
    s->since_ms = clock_wall_ms();
    watch_stale(s);
    if (sub_ops(s)->on_state)
        sub_ops(s)->on_state(s->owner, s, st);
    ramp_check_done(s->mgr);
}

static void set_state(struct subscription *s, enum sub_state st)
{
    set_state_since(s, st, clock_mono_ms());
}

static void on_timer(struct tq_timer *t);

static void arm(struct subscription *s, long ms)
{
    tq_arm(s->mgr->tq, &s->timer, on_timer, ms);
}

static void enqueue(struct subscription *s);
static void stash_drop(struct subscription *s);

/* s leaves its dialog: a NOTIFY held back from it and a probe riding on it go too. */
static void drop_dialog(struct subscription *s)
{
    stash_drop(s);
    if (s->h) {
        probe_forget(&s->pm);
        sipua_release(s->h);
        s->h = NULL;
    }
}

/* When s may send its next new SUBSCRIBE after a short grant (mono ms): one per floor. */
static int64_t floor_at(const struct subscription *s)
{
    return s->sent_ms + (int64_t)s->mgr->floor_s * 1000;
}

/* How long a restart must wait to keep to the floor: after a short grant, the notifier's
 * end of the dialog (terminated;reason=timeout as the grant lapses, deactivated,
 * probation, silence, an error) must not become a SUBSCRIBE at the grant's rate. */
static long floor_wait_ms(const struct subscription *s)
{
    return s->short_grant ? expiry_floor_wait_ms(s->sent_ms, s->mgr->floor_s, clock_mono_ms())
                          : 0;
}

/* A NOTIFY must come within the granted expiry: RFC 6665 has the notifier send one after
 * every refresh. A notifier that answers refreshes but has stopped notifying (Asterisk's
 * stale subscriptions) trips this, and the subscription is rebuilt. A short grant has no
 * refresh to wait for: the timer goes off when it lapses (on_short_timer). */
static void arm_watchdog(struct subscription *s)
{
    long granted = s->granted > 0 ? s->granted : s->mgr->expires;
    long grace = granted / 2;

    if (s->short_grant) {
        int64_t now = clock_mono_ms();
        int64_t at = s->grant_end_ms > now ? s->grant_end_ms : floor_at(s);
        arm(s, at > now ? (long)(at - now) : 0);
        return;
    }
    if (grace > WATCHDOG_GRACE_MAX_S)
        grace = WATCHDOG_GRACE_MAX_S;
    if (grace < WATCHDOG_GRACE_MIN_S)
        grace = WATCHDOG_GRACE_MIN_S;
    arm(s, (granted + grace) * 1000);
}

static void send_subscribe(struct subscription *s)
{
    struct subs_mgr *m = s->mgr;
    /* Up to a tenth less than configured: refreshes of subscriptions started together
     * drift apart instead of reaching the PBX in one burst every period. */
    long expires = m->expires - (long)backoff_rand(&s->bo, (uint32_t)(m->expires / 10) + 1);

    if (expires < s->min_expires)
        expires = s->min_expires;
    /* Re-established after the notifier lost it: the old dialog goes now, paced by the
     * ramp like the new SUBSCRIBE (its un-SUBSCRIBE gets a harmless 481); a held-back
     * NOTIFY goes with it, the new dialog starts with a full state. */
    drop_dialog(s);
    s->h = sipua_subscribe(m->ua, s->aor, s->event, s->accept, expires, s->eventlist, s);
    if (!s->h) {
        log_err("sip", "event=subscribe_failed aor=%s package=%s reason=\"cannot create "
                       "handle\"",
                log_q(s->aor), s->event);
        s->down_cause = DOWN_NO_HANDLE;
        set_state(s, SUB_BACKOFF);
        arm(s, backoff_next(&s->bo));
        return;
    }
    metric_inc(m_sent, NULL);
    s->sent_ms = clock_mono_ms();
    s->grant_end_ms = 0;
    log_trace(sub_trace(s), "sip", "event=trace_subscribe aor=%s package=%s expires=%ld%s",
              log_q(s->aor), s->event, expires, s->eventlist ? " eventlist=yes" : "");
    sub_ops(s)->on_restart(s->owner, s);
    set_state(s, SUB_SUBSCRIBING);
    s->granted = 0;
    s->notified = false;
    /* If the stack never answers (it will, with 408, but belt and braces): silence. */
    arm_watchdog(s);
}

/* Drops the dialog and schedules a fresh subscription; returns the wait, ms. min_ms and
 * the notifier's retry_after_s (-1: none) lengthen the backoff, and the manager's
 * max_backoff bounds the whole: one forged "terminated;reason=probation;retry-after=3600"
 * must not keep a phone away for an hour (RFC 6665 makes retry-after a SHOULD). */
static long restart_later(struct subscription *s, enum down_cause why, long min_ms,
                          long retry_after_s)
{
    const char *cause = down_causes[why];
    long ms = backoff_next(&s->bo);

    if (ms < min_ms)
        ms = min_ms;
    if (retry_after_s > 0 && retry_after_s * 1000 > ms)
        ms = retry_after_s > 86400 ? 86400000 : retry_after_s * 1000;
    if (ms > s->mgr->max_backoff_ms)
        ms = s->mgr->max_backoff_ms;
    /* The floor wins over max_backoff: it bounds what the notifier can make us send. */
    if (ms < floor_wait_ms(s))
        ms = floor_wait_ms(s);
    /* A dead dialog gets no Expires: 0; a live one (silence) is told we leave. */
    drop_dialog(s);
    s->down_cause = (uint8_t)why;
    log_trace(sub_trace(s), "sip", "event=trace_retry aor=%s package=%s cause=%s in_ms=%ld",
              log_q(s->aor), s->event, cause, ms);
    metric_inc(m_resub, cause);
    set_state(s, SUB_BACKOFF);
    arm(s, ms);
    return ms;
}

/* The notifier granted this subscription granted_s seconds (a 2xx's Expires, or a
 * NOTIFY's expires= that shortened the grant): below the floor ([sip] min_expires), the
 * grant is short. Keeping it alive would take a SUBSCRIBE every granted_s/2 seconds per
 * user (every second at Expires: 1), so the stack lets it lapse (sipua.c) and s subscribes
 * again once per floor. Counted each time; logged per notifier and event package when
 * short grants start, then at most once per SHORT_LOG_EVERY_MS with how many came: it is
 * the notifier's configuration, not one user's, and 10,000 users must not make 10,000
 * lines. A grant at or above the floor ends the short spell of s. */
static void check_grant(struct subscription *s, long granted_s)
{
    struct subs_mgr *m = s->mgr;
    char key[320];
    struct short_note *note;
    int64_t now = clock_mono_ms();
    bool first;

    if (granted_s <= 0)
        return;
    s->short_grant = granted_s < m->floor_s;
    if (!s->short_grant)
        return;
    metric_inc(m_short, NULL);
    snprintf(key, sizeof key, "%s %s", probe_notifier_name(&s->pm), s->event);
    note = strmap_get(&m->short_notes, key);
    first = !note;
    if (first) {
        size_t n = strlen(key) + 1;
        note = xcalloc(1, sizeof *note + n);
        memcpy(note->key, key, n);
        strmap_put(&m->short_notes, note->key, note);
    }
    note->grants++;
    if (!first && now - note->logged_ms < SHORT_LOG_EVERY_MS)
        return;
    log_warn("sip", "event=short_expiry notifier=%s package=%s granted_s=%ld floor_s=%ld "
                    "asked_s=%ld grants=%llu since_s=%lld aor=%s action=\"subscribe again "
                    "every floor_s; state between a grant's end and the next SUBSCRIBE is "
                    "the last notified\" hint=\"the PBX shortens subscriptions below [sip] "
                    "min_expires: raise its minimum subscription expiry\"",
             log_q(probe_notifier_name(&s->pm)), s->event, granted_s, m->floor_s, m->expires,
             (unsigned long long)note->grants,
             first ? 0LL : (long long)((now - note->logged_ms) / 1000), log_q(s->aor));
    note->logged_ms = now;
    note->grants = 0;
}

/* A short grant's timer: at its end, s is down (the notifier has let it go) until the
 * floor allows the next SUBSCRIBE; then that SUBSCRIBE goes, through the ramp. Quiet: the
 * notifier's short_expiry line speaks for every user. */
static void on_short_timer(struct subscription *s)
{
    int64_t now = clock_mono_ms();

    metric_inc(m_resub, "short_grant");
    if (now >= floor_at(s)) {
        log_debug("sip", "event=short_grant_renew aor=%s package=%s", log_q(s->aor),
                  s->event);
        backoff_reset(&s->bo);
        enqueue(s);
        return;
    }
    /* Lapsed before the floor: the dialog is kept (a lenient notifier's NOTIFYs in it
     * still count) but s is down, so stale_after applies as to any subscription down. */
    s->down_cause = DOWN_SHORT_GRANT;
    set_state(s, SUB_BACKOFF);
    arm(s, (long)(floor_at(s) - now));
}

static void on_timer(struct tq_timer *t)
{
    struct subscription *s = OF(timer, t);

    switch (s->state) {
    case SUB_BACKOFF:
        enqueue(s);
        break;
    case SUB_SUBSCRIBING:
    case SUB_PENDING:
    case SUB_ACTIVE:
        if (s->short_grant) {
            on_short_timer(s);
            break;
        }
        log_warn("sip", "event=subscription_silent aor=%s package=%s granted_s=%ld "
                        "notified=%s action=resubscribe",
                 log_q(s->aor), s->event, (long)s->granted, s->notified ? "yes" : "never");
        restart_later(s, DOWN_SILENCE, 0, -1);
        break;
    case SUB_QUEUED:
    case SUB__COUNT:
        break;
    }
}

/* ---- ramp -------------------------------------------------------------------------- */

static void ramp_schedule(struct subs_mgr *m);

/* SUBSCRIBEs answered by neither a final response nor a NOTIFY are in flight; the ramp
 * keeps at most a second's worth of them, so a PBX (or a loop) that falls behind slows the
 * ramp down instead of piling up retransmissions and bursts of NOTIFYs. */
static void on_ramp_recover(evutil_socket_t fd, short what, void *arg);

static bool ramp_window_full(const struct subs_mgr *m)
{
    double window = m->ramp.rate > 100 ? m->ramp.rate : 100;

    return m->count[SUB_SUBSCRIBING] >= window;
}

static void on_ramp(evutil_socket_t fd, short what, void *arg)
{
    struct subs_mgr *m = arg;
    int64_t now = clock_mono_ms();

    if (m->qhead && ramp_window_full(m)) {
        struct timeval tv = {0, 50000};
        evtimer_add(m->ramp_ev, &tv);
        return;
    }
    while (m->qhead && !ramp_window_full(m) &&
           ratelimit_take(&m->ramp, &m->ramp_bucket, now)) {
        struct subscription *s = m->qhead;
        m->qhead = s->qnext;
        if (m->qhead)
            m->qhead->qpprev = &m->qhead;
        else
            m->qtail = &m->qhead;
        s->queued = false;
        s->qnext = NULL;
        m->ramp_sent++;
        send_subscribe(s);
    }
    ramp_schedule(m);
}

static int queued_count(const struct subs_mgr *m)
{
    return m->count[SUB_QUEUED];
}

/* Every RAMP_REPORT_S while a ramp runs: where it is, at notice, so that an operator
 * watching a 10,000-user start (or a mass resubscribe) sees it move. */
static void on_ramp_tick(evutil_socket_t fd, short what, void *arg)
{
    struct subs_mgr *m = arg;
    int queued = queued_count(m);

    log_notice("sip", "event=ramp_progress sent=%d queued=%d waiting=%d active=%d pending=%d "
                      "backoff=%d elapsed_s=%lld eta_s=%.0f",
               m->ramp_sent, queued, m->count[SUB_SUBSCRIBING], m->count[SUB_ACTIVE],
               m->count[SUB_PENDING], m->count[SUB_BACKOFF],
               (long long)((clock_mono_ms() - m->ramp_start_ms) / 1000),
               (double)queued / m->ramp.rate);
}

static void ramp_begin(struct subs_mgr *m)
{
    struct timeval tv = {.tv_sec = RAMP_REPORT_S};

    if (m->ramping)
        return;
    m->ramping = true;
    m->ramp_start_ms = clock_mono_ms();
    m->ramp_sent = 0;
    evtimer_add(m->ramp_tick, &tv);
}

/* The ramp is over once nothing is queued and nothing it sent waits for an answer: one
 * line says so, with the time it took. */
static void ramp_check_done(struct subs_mgr *m)
{
    int64_t took;
    int up;

    if (!m->ramping || m->qhead || m->count[SUB_SUBSCRIBING] > 0)
        return;
    m->ramping = false;
    evtimer_del(m->ramp_tick);
    took = clock_mono_ms() - m->ramp_start_ms;
    up = m->count[SUB_ACTIVE] + m->count[SUB_PENDING];
    if (m->ramp_sent < RAMP_REPORT_MIN && took < RAMP_REPORT_S * 1000) {
        log_debug("sip", "event=ramp_done sent=%d active=%d backoff=%d took_s=%.1f",
                  m->ramp_sent, up, m->count[SUB_BACKOFF], (double)took / 1000.0);
        return;
    }
    if (up == m->total)
        log_notice("sip", "event=all_subscribed subscriptions=%d sent=%d took_s=%.1f", m->total,
                   m->ramp_sent, (double)took / 1000.0);
    else
        log_notice("sip", "event=ramp_done subscriptions=%d sent=%d active=%d pending=%d "
                          "backoff=%d took_s=%.1f note=\"those in backoff retry on their own\"",
                   m->total, m->ramp_sent, m->count[SUB_ACTIVE], m->count[SUB_PENDING],
                   m->count[SUB_BACKOFF], (double)took / 1000.0);
}

static void ramp_schedule(struct subs_mgr *m)
{
    long ms;
    struct timeval tv;

    if (!m->qhead || evtimer_pending(m->ramp_ev, NULL))
        return;
    ms = ratelimit_wait_ms(&m->ramp, &m->ramp_bucket, clock_mono_ms());
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(m->ramp_ev, &tv);
}

static void enqueue(struct subscription *s)
{
    struct subs_mgr *m = s->mgr;

    if (s->queued)
        return;
    tq_cancel(m->tq, &s->timer);
    set_state(s, SUB_QUEUED);
    s->queued = true;
    s->parked = false;
    s->qnext = NULL;
    s->qpprev = m->qtail;
    *m->qtail = s;
    m->qtail = &s->qnext;
    ramp_begin(m);
    ramp_schedule(m);
}

static void dequeue(struct subscription *s)
{
    struct subs_mgr *m = s->mgr;

    if (!s->queued)
        return;
    *s->qpprev = s->qnext;
    if (s->qnext)
        s->qnext->qpprev = s->qpprev;
    else
        m->qtail = s->qpprev;
    s->qnext = NULL;
    s->queued = false;
}

/* s's notifier is unreachable: s is down as of since_ms and waits, no timer of its own,
 * keeping its dialog (a NOTIFY on it shows the notifier back). failed: the notifier's
 * "back" sweep retries it. */
static void park(struct subscription *s, int64_t since_ms)
{
    dequeue(s);
    tq_cancel(s->mgr->tq, &s->timer);
    s->failed = true;
    s->parked = true;
    if (!is_up(s->state) && since_ms < s->down_ms) {
        /* Already down, but the notifier was silent before: its stale count starts then. */
        s->down_ms = since_ms;
        tq_cancel(s->mgr->tq, &s->stale_t);
    }
    set_state_since(s, SUB_BACKOFF, since_ms);
    watch_stale(s);
}

/* ---- events from the user agent ----------------------------------------------------- */

/* One failure's warning. wait_ms < 0: parked (its notifier is unreachable), no wait of
 * its own. */
static void log_failure(const struct subscription *s, int status, const char *phrase,
                        long retry_after, long wait_ms, uint64_t held)
{
    /* Sofia reports a refused certificate or a failed handshake only this way. */
    const char *hint = status == 408 && s->mgr->ua && sipua_tls(s->mgr->ua)
                           ? " hint=\"over TLS a failed handshake or certificate check also "
                             "ends in 408: check [sip] tls_dir/cafile.pem and that the PBX's "
                             "certificate names the pbx host\""
                           : "";

    if (wait_ms < 0)
        log_warn("sip", "event=subscribe_error aor=%s package=%s status=%d phrase=%s "
                        "retry_after_s=%ld action=park suppressed=%llu%s",
                 log_q(s->aor), s->event, status, log_q(phrase), retry_after,
                 (unsigned long long)held, hint);
    else
        log_warn("sip", "event=subscribe_error aor=%s package=%s status=%d phrase=%s "
                        "retry_after_s=%ld action=resubscribe wait_s=%ld suppressed=%llu%s",
                 log_q(s->aor), s->event, status, log_q(phrase), retry_after,
                 (wait_ms + 999) / 1000,
                 (unsigned long long)held, hint);
}

static void on_response(void *owner, int status, const char *phrase, long expires,
                        long retry_after)
{
    struct subscription *s = owner;
    bool in_dialog = s->state == SUB_ACTIVE || s->state == SUB_PENDING;
    bool was_unreachable = probe_unreachable(&s->pm);
    bool probe = probe_answered(&s->pm, status);
    uint64_t held = 0;
    long wait_ms;

    log_trace(sub_trace(s), "sip", "event=trace_response aor=%s package=%s status=%d phrase=%s "
                                "expires=%ld retry_after=%ld probe=%s%s",
              log_q(s->aor), s->event, status, log_q(phrase), expires, retry_after,
              probe ? "yes" : "no", s->queued ? " dialog=old" : "");
    s->last_status = (int16_t)(status >= -32768 && status <= 32767 ? status : 0);
    word_set(s, WORD_PHRASE, phrase ? phrase : "", PHRASE_MAX);
    s->last_answer_ms = clock_wall_ms();
    if (s->queued)
        return; /* an old dialog, replaced when the ramp reaches it */
    if (status < 300) {
        bool first = s->granted == 0;
        /* A probe's own answer does not count: a quiet dialog would keep itself from
         * ever being asked again. */
        if (!probe)
            probe_heard(&s->pm, clock_mono_ms());
        bool was_short = s->short_grant;
        s->granted = secs32(expires > 0 ? expires : s->mgr->expires);
        s->grant_end_ms = clock_mono_ms() + (int64_t)s->granted * 1000;
        check_grant(s, expires);
        backoff_reset(&s->bo);
        if (s->failed || probe_unreachable(&s->pm)) {
            s->failed = false;
            s->parked = false;
            probe_notifier_back(&s->pm);
        }
        /* SUBSCRIBING: the answer to a new SUBSCRIBE. BACKOFF: parked while its notifier
         * was silent, and the dialog it kept has just answered a refresh. */
        if (s->state == SUB_SUBSCRIBING || s->state == SUB_BACKOFF) {
            bool parked = s->state == SUB_BACKOFF;
            log_info("sip", "event=subscribed aor=%s package=%s status=%d expires=%ld",
                     log_q(s->aor), s->event, status, (long)s->granted);
            /* 202 means the notifier has not decided yet; its NOTIFY says pending. */
            set_state(s, SUB_ACTIVE);
            if (parked)
                arm_watchdog(s);
        }
        /* Only the first answer arms the watchdog (refreshes do not prove NOTIFYs flow),
         * or one that makes the grant short or no longer short: its end is the timer. */
        if ((first && !s->notified) || was_short || s->short_grant)
            arm_watchdog(s);
        return;
    }
    if (status == 423 && expires > 0 && expires <= 86400 && expires > s->min_expires) {
        /* Interval Too Brief: ask again at once with what the notifier wants. */
        if (peer_log_ok(s, &held))
            log_notice("sip", "event=interval_too_brief aor=%s package=%s min_expires=%ld "
                              "action=resubscribe suppressed=%llu",
                       log_q(s->aor), s->event, expires, (unsigned long long)held);
        s->min_expires = secs32(expires);
        /* After a short grant, not at once: the floor holds against 423s too. */
        restart_later(s, DOWN_ERROR_RESPONSE, 0, -1);
        if (floor_wait_ms(s) > 0)
            return;
        tq_cancel(s->mgr->tq, &s->timer);
        enqueue(s);
        return;
    }
    if (status == 481 && in_dialog) {
        probe_notifier_lost(&s->pm);
        return;
    }
    if (probe_failed(&s->pm, status)) {
        /* Its notifier is silent: wait with the others, let the notifier's tries find it
         * back. The failure that showed it is logged as any (its status, the TLS hint);
         * the others only at debug: the notifier's one line speaks for them. */
        if (!was_unreachable && peer_log_ok(s, &held))
            log_failure(s, status, phrase, retry_after, -1, held);
        else
            log_debug("sip", "event=subscribe_error aor=%s package=%s status=%d action=park",
                      log_q(s->aor), s->event, status);
        park(s, clock_mono_ms());
        return;
    }
    /* Unreachable or overloaded: when one subscription gets through again, all retry. */
    s->failed = status == 408 || status >= 500;
    /* 408 is the stack's own timeout; 481 a dialog the notifier forgot: start afresh. */
    wait_ms = restart_later(s, status == 408 ? DOWN_TIMEOUT : DOWN_ERROR_RESPONSE,
                            status == 403 || status == 404 || status == 489 ? REJECTED_MIN_MS
                                                                            : 0,
                            retry_after);
    if (peer_log_ok(s, &held))
        log_failure(s, status, phrase, retry_after, wait_ms, held);
}

/* ---- NOTIFY flood control ------------------------------------------------------------ */

static void stash_drop(struct subscription *s)
{
    if (!s->stash)
        return;
    tq_cancel(s->mgr->tq, &s->stash->t);
    free(s->stash->content_type);
    free(s->stash->body);
    free(s->stash);
    s->stash = NULL;
}

static bool take_token(struct subscription *s)
{
    return s->eventlist || ratelimit_take(&s->mgr->notify, &s->nbucket, clock_mono_ms());
}

static void on_stash(struct tq_timer *t);

static void arm_stash(struct subscription *s)
{
    long ms = ratelimit_wait_ms(&s->mgr->notify, &s->nbucket, clock_mono_ms());

    tq_arm(s->mgr->tq, &s->stash->t, on_stash, ms);
}

/* Keeps n to apply later (the newest replaces an older one: each carries the state). */
static void stash_keep(struct subscription *s, const struct sipua_notify *n)
{
    uint64_t held = 0;

    if (s->stash) {
        metric_inc(m_throttled, "superseded");
        free(s->stash->content_type);
        free(s->stash->body);
    } else {
        s->stash = xcalloc(1, sizeof *s->stash);
        s->stash->s = s;
        metric_inc(m_throttled, "deferred");
    }
    log_trace(sub_trace(s), "sip", "event=trace_notify_deferred aor=%s package=%s", log_q(s->aor),
              s->event);
    if (s->stash->throttled++ == 0 && peer_log_ok(s, &held))
        log_warn("sip", "event=notify_flood aor=%s package=%s rate_per_s=%.0f "
                        "action=applying_latest_only suppressed=%llu",
                 log_q(s->aor), s->event, s->mgr->notify.rate, (unsigned long long)held);
    s->stash->content_type = n->content_type ? xstrdup(n->content_type) : NULL;
    s->stash->body = n->body ? xmalloc(n->len + 1) : NULL;
    if (n->body) {
        memcpy(s->stash->body, n->body, n->len);
        s->stash->body[n->len] = '\0';
    }
    s->stash->len = n->len;
    s->stash->expires = n->expires;
    s->stash->received_us = n->received_us;
    if (!tq_armed(&s->stash->t))
        arm_stash(s);
}

static void on_stash(struct tq_timer *t)
{
    struct stash *st = (struct stash *)((char *)t - offsetof(struct stash, t));
    struct subscription *s = st->s;
    struct sipua_notify n = {.substate = "active", .expires = -1, .retry_after = -1};
    uint64_t held = 0, throttled;

    if (!take_token(s)) {
        arm_stash(s);
        return;
    }
    n.content_type = s->stash->content_type;
    n.body = s->stash->body;
    n.len = s->stash->len;
    n.expires = s->stash->expires;
    n.received_us = s->stash->received_us;
    throttled = s->stash->throttled;
    sub_ops(s)->on_notify(s->owner, s, &n);
    stash_drop(s);
    if (peer_log_ok(s, &held))
        log_notice("sip", "event=notify_flood_over aor=%s package=%s throttled=%llu "
                          "suppressed=%llu",
                   log_q(s->aor), s->event, (unsigned long long)throttled,
                   (unsigned long long)held);
}

/* A NOTIFY as it came, into the trace: its headers of interest and, when the operator
 * asked for bodies, the body in pieces of LOG_Q_MAX bytes, one line each (each names the
 * offset it starts at), quoted as every peer's text is (log_qn). */
static void trace_notify(struct subscription *s, const struct sipua_notify *n,
                         const char *substate)
{
    log_trace(sub_trace(s), "sip", "event=trace_notify aor=%s package=%s substate=%s reason=%s "
                                "expires=%ld content_type=%s len=%zu%s",
              log_q(s->aor), s->event, log_q(substate), n->reason ? log_q(n->reason) : "-",
              n->expires, log_q(n->content_type), n->len, s->queued ? " dialog=old" : "");
    if (!n->body || !log_traced(sub_trace(s)) || !s->cold->trace.bodies)
        return;
    for (size_t off = 0; off < n->len;) {
        size_t piece = str_utf8_cut(n->body + off, n->len - off, LOG_Q_MAX);
        if (!piece)
            piece = 1;
        log_trace(sub_trace(s), "sip", "event=trace_notify_body aor=%s package=%s offset=%zu "
                                    "len=%zu body=%s",
                  log_q(s->aor), s->event, off, n->len, log_qn(n->body + off, piece));
        off += piece;
    }
}

static void on_notify(void *owner, const struct sipua_notify *n)
{
    struct subscription *s = owner;
    const char *substate = n->substate ? n->substate : "active";
    uint64_t held = 0;
    long wait_ms;
    bool revives = false;

    metric_inc(m_notifies, s->event);
    s->last_notify_ms = clock_wall_ms();
    if (log_traced(sub_trace(s)) || log_level >= LOG_DEBUG)
        trace_notify(s, n, substate);
    if (s->queued) {
        /* An old dialog waiting to be replaced: its news still counts, its end does not
         * change what is already scheduled. */
        if (strcmp(substate, "terminated") != 0)
            sub_ops(s)->on_notify(s->owner, s, n);
        return;
    }
    /* A NOTIFY from a notifier taken for unreachable: it is back, and once this one is
     * handled the others retry (this one keeps the dialog that proved alive). */
    if (probe_unreachable(&s->pm)) {
        revives = true;
        s->failed = false;
        s->parked = false;
    }
    if (strcmp(substate, "terminated") != 0 && (s->stash || !take_token(s))) {
        stash_keep(s, n); /* a flood: only the latest is applied, when a token comes */
    } else {
        stash_drop(s); /* superseded by this one, applied now */
        sub_ops(s)->on_notify(s->owner, s, n);
    }
    if (strcmp(substate, "terminated") == 0) {
        const char *reason = n->reason ? n->reason : "";
        /* A short grant running out, as the notifier says it should: expected, and the
         * notifier's short_expiry line already says so. */
        bool lapse = s->short_grant && !strcmp(reason, "timeout");
        /* RFC 6665 4.1.3: deactivated and timeout invite an immediate retry; probation
         * and giveup a later one; rejected, noresource and invariant mean the notifier
         * will not serve it, so retry slowly in case the PBX's configuration changes. */
        long min_ms = 0;
        if (!strcmp(reason, "rejected") || !strcmp(reason, "noresource") ||
            !strcmp(reason, "invariant"))
            min_ms = REJECTED_MIN_MS;
        else if (!strcmp(reason, "deactivated") || !strcmp(reason, "timeout"))
            backoff_reset(&s->bo);
        word_set(s, WORD_END, reason[0] ? reason : "none", END_REASON_MAX);
        wait_ms = restart_later(s, DOWN_TERMINATED, min_ms, n->retry_after);
        if (lapse)
            log_debug("sip", "event=subscription_terminated aor=%s package=%s reason=timeout "
                             "short_grant=yes action=resubscribe wait_s=%ld",
                      log_q(s->aor), s->event, (wait_ms + 999) / 1000);
        else if (peer_log_ok(s, &held))
            log_warn("sip", "event=subscription_terminated aor=%s package=%s reason=%s "
                            "retry_after_s=%ld action=resubscribe wait_s=%ld suppressed=%llu",
                     log_q(s->aor), s->event, reason[0] ? log_q(reason) : "none", n->retry_after,
                     (wait_ms + 999) / 1000, (unsigned long long)held);
    } else {
        set_state(s, strcmp(substate, "pending") == 0 ? SUB_PENDING : SUB_ACTIVE);
        if (n->expires > 0) {
            int64_t end = clock_mono_ms() + (int64_t)n->expires * 1000;
            /* expires= is the time left, which runs low before every refresh: below the
             * floor, it is a short grant only if it shortens the one we had (by more than
             * a second of transit), as sipua.c then stops refreshing it. */
            if (expiry_notify_shortens(n->expires, s->mgr->floor_s, clock_mono_ms(),
                                       s->grant_end_ms))
                check_grant(s, n->expires);
            s->grant_end_ms = end;
            s->granted = secs32(n->expires);
        }
        s->notified = true;
        probe_heard(&s->pm, clock_mono_ms());
        arm_watchdog(s);
    }
    if (revives)
        probe_notifier_back(&s->pm);
}

static void ua_names(void *owner, const char **aor, const char **event, const char **accept)
{
    const struct subscription *s = owner;

    *aor = s->aor;
    *event = s->event;
    *accept = s->accept;
}

static const struct sipua_ops ua_ops = {
    .on_response = on_response,
    .on_notify = on_notify,
    .names = ua_names,
};

const struct sipua_ops *subs_ua_ops(void)
{
    return &ua_ops;
}

/* ---- what probe.c asks of a subscription ------------------------------------------ */

#define OF_MEMBER(m) ((struct subscription *)((char *)(m) - offsetof(struct subscription, pm)))

static bool pm_can_probe(struct probe_member *m)
{
    struct subscription *s = OF_MEMBER(m);

    /* Not a short grant's dialog: lapsed (or about to), it would answer 481, and that
     * would take the whole notifier for lost. */
    return s->state == SUB_ACTIVE && !s->queued && s->h && !s->short_grant;
}

static void pm_refresh(struct probe_member *m)
{
    struct subscription *s = OF_MEMBER(m);

    sipua_refresh(s->h, s->mgr->expires);
}

/* Each keeps its old handle until its new SUBSCRIBE is sent. */
static bool pm_resubscribe(struct probe_member *m)
{
    struct subscription *s = OF_MEMBER(m);

    if (s->queued || s->state == SUB_SUBSCRIBING)
        return false; /* already on its way to a new dialog */
    metric_inc(m_resub, "notifier_lost");
    backoff_reset(&s->bo);
    s->failed = false;
    enqueue(s);
    return true;
}

static bool pm_retry(struct probe_member *m)
{
    struct subscription *s = OF_MEMBER(m);

    if (s->state != SUB_BACKOFF || !s->failed)
        return false;
    metric_inc(m_resub, "notifier_back");
    backoff_reset(&s->bo);
    enqueue(s);
    return true;
}

static void pm_park(struct probe_member *m, int64_t since_ms)
{
    park(OF_MEMBER(m), since_ms);
}

/* One parked subscription asks the silent notifier again (a fresh SUBSCRIBE, through
 * the ramp): not counted as a resubscribe, the probe metric counts its answer. */
static bool pm_try_again(struct probe_member *m)
{
    struct subscription *s = OF_MEMBER(m);

    if (!s->parked || s->state != SUB_BACKOFF)
        return false;
    enqueue(s);
    return true;
}

static int pm_users(struct probe_member *m, const void **key)
{
    struct subscription *s = OF_MEMBER(m);

    if (sub_ops(s)->users)
        return sub_ops(s)->users(s->owner, key);
    *key = s;
    return 1;
}

static const char *pm_aor(const struct probe_member *m)
{
    return OF_MEMBER(m)->aor;
}

static const char *pm_event(const struct probe_member *m)
{
    return OF_MEMBER(m)->event;
}

static const struct probe_ops member_ops = {
    .can_probe = pm_can_probe,
    .refresh = pm_refresh,
    .resubscribe = pm_resubscribe,
    .retry = pm_retry,
    .park = pm_park,
    .try_again = pm_try_again,
    .users = pm_users,
    .aor = pm_aor,
    .event = pm_event,
};

void subs_mgr_set_notify_rate(struct subs_mgr *m, double per_s)
{
    m->notify.rate = per_s > 0 ? per_s : 0;
    m->notify.burst = 2 * m->notify.rate; /* a burst of two seconds' worth */
}

void subs_mgr_set_probe(struct subs_mgr *m, long seconds)
{
    probe_set_interval(m->probe, seconds);
}

/* ---- public ------------------------------------------------------------------------ */

struct subs_mgr *subs_mgr_new(struct event_base *base, struct timerq *tq, struct sipua *ua,
                              long expires, double rate_per_s)
{
    struct subs_mgr *m = xcalloc(1, sizeof *m);

    m->base = base;
    m->tq = tq;
    m->ua = ua;
    m->expires = expires;
    subs_mgr_set_rate(m, rate_per_s);
    ratelimit_bucket_init(&m->ramp_bucket, 1, clock_mono_ms()); /* the first at once */
    m->qtail = &m->qhead;
    m->ramp_ev = evtimer_new(base, on_ramp, m);
    m->ramp_recover = evtimer_new(base, on_ramp_recover, m);
    m->ramp_tick = event_new(base, -1, EV_PERSIST, on_ramp_tick, m);
    m->probe = probe_new(base, &member_ops);
    m->seed = (uint64_t)clock_wall_us();
    m->max_backoff_ms = RETRY_MAX_MS;
    m->floor_s = SUBS_EXPIRES_FLOOR_S;
    strmap_init(&m->short_notes);
    return m;
}

void subs_mgr_free(struct subs_mgr *m)
{
    if (!m)
        return;
    event_free(m->ramp_ev);
    event_free(m->ramp_recover);
    event_free(m->ramp_tick);
    probe_free(m->probe);
    {
        size_t pos = 0;
        const char *key;
        void *note;
        while (strmap_next(&m->short_notes, &pos, &key, &note))
            free(note);
    }
    strmap_free(&m->short_notes);
    free(m);
}

void subs_mgr_set_max_backoff(struct subs_mgr *m, long seconds)
{
    m->max_backoff_ms = (seconds > 0 ? seconds : 1) * 1000;
}

void subs_mgr_set_min_expires(struct subs_mgr *m, long seconds)
{
    m->floor_s = seconds > 0 ? seconds : 1;
}

void subs_mgr_set_stale_after(struct subs_mgr *m, long seconds)
{
    m->stale_after = seconds > 0 ? seconds : 0;
}

void subs_mgr_set_expires(struct subs_mgr *m, long expires)
{
    m->expires = expires;
}

static void apply_ramp_rate(struct subs_mgr *m)
{
    m->ramp.rate = m->ramp_rate * m->ramp_factor;
    if (m->ramp.rate < 1)
        m->ramp.rate = 1;
    m->ramp.burst = m->ramp.rate; /* at most one second's worth at once */
}

void subs_mgr_set_rate(struct subs_mgr *m, double rate_per_s)
{
    m->ramp_rate = rate_per_s > 0 ? rate_per_s : 1;
    if (m->ramp_factor <= 0)
        m->ramp_factor = 1;
    apply_ramp_rate(m);
}

static void on_ramp_recover(evutil_socket_t fd, short what, void *arg)
{
    struct subs_mgr *m = arg;
    struct timeval tv = {1, 0};

    m->ramp_factor *= 1.25;
    if (m->ramp_factor >= 1) {
        m->ramp_factor = 1;
        apply_ramp_rate(m);
        log_notice("sip", "event=ramp_resumed rate_per_s=%.0f", m->ramp.rate);
        return;
    }
    apply_ramp_rate(m);
    evtimer_add(m->ramp_recover, &tv);
}

void subs_mgr_datagrams_dropped(struct subs_mgr *m, uint32_t n)
{
    struct timeval tv = {1, 0};

    if (!m->qhead)
        return; /* not ramping: nothing of ours to slow down */
    m->ramp_factor = m->ramp_factor / 2 < 0.05 ? 0.05 : m->ramp_factor / 2;
    apply_ramp_rate(m);
    log_notice("sip", "event=ramp_slowed dropped=%u rate_per_s=%.0f reason=\"datagrams "
                      "dropped on the SIP port: the loop fell behind the answers\"",
               n, m->ramp.rate);
    evtimer_del(m->ramp_recover);
    evtimer_add(m->ramp_recover, &tv);
}

int subs_mgr_report_unreachable(const struct subs_mgr *m, struct sbuf *why)
{
    return probe_report_unreachable(m->probe, why);
}

int subs_mgr_count(const struct subs_mgr *m, enum sub_state st)
{
    return m->count[st];
}

int subs_mgr_total(const struct subs_mgr *m)
{
    return m->total;
}

struct subscription *subs_new(struct subs_mgr *m, const char *aor, const char *event,
                              const char *accept, bool eventlist,
                              const struct subs_owner_ops *ops, void *owner)
{
    struct subscription *s = xcalloc(1, sizeof *s);

    s->eventlist = eventlist;
    for (s->ops_ix = 0; s->ops_ix < m->n_ops && m->ops[s->ops_ix] != ops; s->ops_ix++)
        ;
    if (s->ops_ix == m->n_ops) {
        if (m->n_ops == SUBS_MAX_OPS) {
            /* A programming error: raise SUBS_MAX_OPS. */
            log_err("sip", "event=too_many_owner_kinds max=%d", SUBS_MAX_OPS);
            abort();
        }
        m->ops[m->n_ops++] = ops;
    }
    s->mgr = m;
    s->aor = aor;
    s->event = event;
    s->accept = accept;
    s->owner = owner;
    m->seed = m->seed * 6364136223846793005ULL + 1442695040888963407ULL;
    backoff_init(&s->bo, RETRY_BASE_MS, RETRY_MAX_MS, m->seed);
    ratelimit_bucket_init(&s->nbucket, m->notify.burst, clock_mono_ms());
    probe_attach(m->probe, &s->pm, s->aor);
    /* Born in backoff with no timer: enqueue() moves it to the ramp queue. */
    s->state = SUB_BACKOFF;
    s->since_ms = clock_wall_ms();
    s->down_ms = clock_mono_ms();
    m->count[SUB_BACKOFF]++;
    m->total++;
    enqueue(s);
    return s;
}

void subs_free(struct subscription *s)
{
    struct subs_mgr *m;

    if (!s)
        return;
    m = s->mgr;
    dequeue(s);
    drop_dialog(s);
    probe_detach(&s->pm);
    m->count[s->state]--;
    m->total--;
    metric_set(m_state, sub_state_name(s->state), m->count[s->state]);
    tq_cancel(m->tq, &s->stale_t);
    if (s->cold) {
        free(s->cold->words[WORD_PHRASE]);
        free(s->cold->words[WORD_END]);
        free(s->cold);
    }
    tq_cancel(m->tq, &s->timer);
    free(s);
}

void subs_request_full_state(struct subscription *s, const char *why)
{
    uint64_t held = 0;

    if (!s->h || (s->state != SUB_ACTIVE && s->state != SUB_PENDING))
        return;
    if (s->short_grant) {
        /* No refresh of a short grant (the floor): the next SUBSCRIBE, at most a floor
         * away, starts a new dialog with a full state. */
        log_debug("sip", "event=refresh_for_full_state aor=%s package=%s action=wait_for_floor",
                  log_q(s->aor), s->event);
        return;
    }
    if (peer_log_ok(s, &held))
        log_notice("sip", "event=refresh_for_full_state aor=%s package=%s reason=\"%s\" "
                          "suppressed=%llu",
                   log_q(s->aor), s->event, why, (unsigned long long)held);
    metric_inc(m_resub, "version_gap");
    /* Same dialog, same version count: the full-state NOTIFY it triggers is newer. */
    sipua_refresh(s->h, s->mgr->expires);
}

void subs_resync(struct subscription *s, const char *why)
{
    uint64_t held = 0;

    if (s->queued || s->state == SUB_SUBSCRIBING || s->state == SUB_BACKOFF)
        return; /* already on its way to a new dialog */
    if (s->short_grant)
        return; /* so is a short grant's: a new dialog at most a floor away */
    if (peer_log_ok(s, &held))
        log_notice("sip", "event=resubscribe_for_versions aor=%s package=%s reason=\"%s\" "
                          "suppressed=%llu",
                   log_q(s->aor), s->event, why, (unsigned long long)held);
    metric_inc(m_resub, "stale_versions");
    /* Through the ramp like any new subscription; the old dialog stays until then. */
    enqueue(s);
}

const char *subs_aor(const struct subscription *s)
{
    return s->aor;
}

const char *subs_event(const struct subscription *s)
{
    return s->event;
}

enum sub_state subs_state(const struct subscription *s)
{
    return s->state;
}

void subs_get_info(const struct subscription *s, struct subs_info *out)
{
    memset(out, 0, sizeof *out);
    out->aor = s->aor;
    out->event = s->event;
    out->state = s->state;
    out->eventlist = s->eventlist;
    out->since_ms = s->since_ms;
    out->last_status = s->last_status;
    out->last_phrase = word_get(s, WORD_PHRASE);
    out->last_answer_ms = s->last_answer_ms;
    out->last_notify_ms = s->last_notify_ms;
    out->end_reason = word_get(s, WORD_END);
    out->down_cause = down_causes[s->down_cause];
    out->granted_s = s->h ? s->granted : 0;
    out->failures = s->bo.attempt;
    out->failed = s->failed;
    if (s->state == SUB_BACKOFF && tq_armed(&s->timer))
        out->next_try_ms = clock_wall_ms() + (s->timer.due_ms - clock_mono_ms());
    if (s->cold)
        out->trace = s->cold->trace;
    else
        memset(&out->trace, 0, sizeof out->trace);
}

void subs_set_trace(struct subscription *s, const struct log_trace *t)
{
    /* Turning off a trace never set allocates nothing. */
    if (s->cold || t->until_ms)
        sub_cold(s)->trace = *t;
}
