/* Subscription lifecycle: ramp, backoff, RFC 6665 termination reasons, silence watchdog. */
#include "subscription.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "backoff.h"
#include "log.h"
#include "metrics.h"
#include "strutil.h"

#define RETRY_BASE_MS 1000
#define RETRY_MAX_MS 300000       /* 5 minutes between attempts at worst */
#define REJECTED_MIN_MS 60000     /* rejected/noresource: no point in hammering */
#define RETRY_AFTER_MAX_S 3600
#define WATCHDOG_GRACE_MAX_S 30   /* silence allowed past the granted expiry ... */
#define WATCHDOG_GRACE_MIN_S 2    /* ... at least, for very short expiries */

struct subscription {
    struct subs_mgr *mgr;
    char *aor;
    char *event;
    char *accept;
    void *owner;
    struct sipua_handle *h;
    enum sub_state state;
    struct backoff bo;
    struct event *timer;          /* retry, or watchdog while subscribed */
    long granted;                 /* expiry the notifier granted, seconds; 0 = no answer yet */
    long min_expires;             /* the notifier's Min-Expires (423), 0 if none */
    bool notified;                /* a NOTIFY arrived in this dialog */
    const struct subs_owner_ops *ops;
    struct subscription *qnext;   /* ramp queue link */
    bool queued;
    bool eventlist;               /* RFC 4662 list subscription */
};

struct subs_mgr {
    struct event_base *base;
    struct sipua *ua;
    long expires;
    double rate;                  /* SUBSCRIBEs per second at most */
    double tokens;
    int64_t tokens_at;            /* mono ms of the last refill */
    struct subscription *qhead, **qtail;
    struct event *ramp;
    int count[SUB__COUNT];
    int total;
    uint64_t seed;
};

static const char *const state_names[SUB__COUNT] = {
    [SUB_QUEUED] = "queued",   [SUB_SUBSCRIBING] = "subscribing", [SUB_PENDING] = "pending",
    [SUB_ACTIVE] = "active",   [SUB_BACKOFF] = "backoff",
};

static struct metric *m_state, *m_resub, *m_sent;

const char *sub_state_name(enum sub_state st)
{
    return (unsigned)st < SUB__COUNT ? state_names[st] : "?";
}

void subs_register_metrics(void)
{
    static const char *const states[] = {"queued", "subscribing", "pending", "active",
                                         "backoff", NULL};
    static const char *const causes[] = {"error_response", "timeout", "terminated",
                                         "silence", "version_gap", NULL};

    m_state = metric_new(METRIC_GAUGE, "offhook_subscriptions",
                         "SIP event subscriptions by state.", "state", states);
    m_resub = metric_new(METRIC_COUNTER, "offhook_resubscribes_total",
                         "Subscriptions re-established or refreshed early, by cause.", "cause",
                         causes);
    m_sent = metric_new(METRIC_COUNTER, "offhook_subscribe_sent_total",
                        "Initial SUBSCRIBE requests sent (refreshes by the stack not counted).",
                        NULL, NULL);
}

static void set_state(struct subscription *s, enum sub_state st)
{
    if (s->state == st)
        return;
    s->mgr->count[s->state]--;
    s->mgr->count[st]++;
    if (m_state) {
        metric_set(m_state, sub_state_name(s->state), s->mgr->count[s->state]);
        metric_set(m_state, sub_state_name(st), s->mgr->count[st]);
    }
    log_debug("sip", "event=subscription_state aor=%s package=%s from=%s to=%s", s->aor,
              s->event, sub_state_name(s->state), sub_state_name(st));
    s->state = st;
    if (s->ops->on_state)
        s->ops->on_state(s->owner, s, st);
}

static void arm(struct subscription *s, long ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    evtimer_add(s->timer, &tv);
}

static void enqueue(struct subscription *s);

/* A NOTIFY must come within the granted expiry: RFC 6665 has the notifier send one after
 * every refresh. A notifier that answers refreshes but has stopped notifying (Asterisk's
 * stale subscriptions) trips this, and the subscription is rebuilt. */
static void arm_watchdog(struct subscription *s)
{
    long granted = s->granted > 0 ? s->granted : s->mgr->expires;
    long grace = granted / 2;

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
    s->h = sipua_subscribe(m->ua, s->aor, s->event, s->accept, expires, s->eventlist, s);
    if (!s->h) {
        log_err("sip", "event=subscribe_failed aor=%s package=%s reason=\"cannot create "
                       "handle\"",
                s->aor, s->event);
        set_state(s, SUB_BACKOFF);
        arm(s, backoff_next(&s->bo));
        return;
    }
    if (m_sent)
        metric_inc(m_sent, NULL);
    s->ops->on_restart(s->owner, s);
    set_state(s, SUB_SUBSCRIBING);
    s->granted = 0;
    s->notified = false;
    /* If the stack never answers (it will, with 408, but belt and braces): silence. */
    arm_watchdog(s);
}

/* Drops the dialog and schedules a fresh subscription. */
static void restart_later(struct subscription *s, const char *cause, long min_ms,
                          long retry_after_s)
{
    long ms = backoff_next(&s->bo);

    if (ms < min_ms)
        ms = min_ms;
    if (retry_after_s >= 0) {
        if (retry_after_s > RETRY_AFTER_MAX_S)
            retry_after_s = RETRY_AFTER_MAX_S;
        if (retry_after_s * 1000 > ms)
            ms = retry_after_s * 1000;
    }
    if (s->h) {
        /* A dead dialog gets no Expires: 0; a live one (silence) is told we leave. */
        sipua_release(s->h);
        s->h = NULL;
    }
    if (m_resub)
        metric_inc(m_resub, cause);
    set_state(s, SUB_BACKOFF);
    arm(s, ms);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct subscription *s = arg;

    switch (s->state) {
    case SUB_BACKOFF:
        enqueue(s);
        break;
    case SUB_SUBSCRIBING:
    case SUB_PENDING:
    case SUB_ACTIVE:
        log_warn("sip", "event=subscription_silent aor=%s package=%s granted_s=%ld "
                        "notified=%s action=resubscribe",
                 s->aor, s->event, s->granted, s->notified ? "yes" : "never");
        restart_later(s, "silence", 0, -1);
        break;
    case SUB_QUEUED:
    case SUB__COUNT:
        break;
    }
}

/* ---- ramp -------------------------------------------------------------------------- */

static void ramp_schedule(struct subs_mgr *m);

static void on_ramp(evutil_socket_t fd, short what, void *arg)
{
    struct subs_mgr *m = arg;
    int64_t now = clock_mono_ms();

    m->tokens += (double)(now - m->tokens_at) * m->rate / 1000.0;
    if (m->tokens > m->rate)
        m->tokens = m->rate; /* burst of at most one second's worth */
    m->tokens_at = now;
    while (m->qhead && m->tokens >= 1.0) {
        struct subscription *s = m->qhead;
        m->qhead = s->qnext;
        if (!m->qhead)
            m->qtail = &m->qhead;
        s->queued = false;
        s->qnext = NULL;
        m->tokens -= 1.0;
        send_subscribe(s);
    }
    ramp_schedule(m);
}

static void ramp_schedule(struct subs_mgr *m)
{
    long ms;
    struct timeval tv;

    if (!m->qhead || evtimer_pending(m->ramp, NULL))
        return;
    ms = m->tokens >= 1.0 ? 0 : (long)((1.0 - m->tokens) * 1000.0 / m->rate) + 1;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(m->ramp, &tv);
}

static void enqueue(struct subscription *s)
{
    struct subs_mgr *m = s->mgr;

    if (s->queued)
        return;
    evtimer_del(s->timer);
    set_state(s, SUB_QUEUED);
    s->queued = true;
    s->qnext = NULL;
    *m->qtail = s;
    m->qtail = &s->qnext;
    ramp_schedule(m);
}

static void dequeue(struct subscription *s)
{
    struct subs_mgr *m = s->mgr;
    struct subscription **pp = &m->qhead;

    if (!s->queued)
        return;
    while (*pp && *pp != s)
        pp = &(*pp)->qnext;
    if (*pp) {
        *pp = s->qnext;
        if (m->qtail == &s->qnext)
            m->qtail = pp;
    }
    s->queued = false;
}

/* ---- events from the user agent ----------------------------------------------------- */

static void on_response(void *owner, int status, const char *phrase, long expires,
                        long retry_after)
{
    struct subscription *s = owner;

    if (status < 300) {
        bool first = s->granted == 0;
        s->granted = expires > 0 ? expires : s->mgr->expires;
        backoff_reset(&s->bo);
        if (s->state == SUB_SUBSCRIBING) {
            log_info("sip", "event=subscribed aor=%s package=%s status=%d expires=%ld", s->aor,
                     s->event, status, s->granted);
            /* 202 means the notifier has not decided yet; its NOTIFY says pending. */
            set_state(s, SUB_ACTIVE);
        }
        /* Only the first answer arms the watchdog; refreshes do not prove NOTIFYs flow. */
        if (first && !s->notified)
            arm_watchdog(s);
        return;
    }
    if (status == 423 && expires > 0 && expires <= 86400 && expires > s->min_expires) {
        /* Interval Too Brief: ask again at once with what the notifier wants. */
        log_notice("sip", "event=interval_too_brief aor=%s package=%s min_expires=%ld "
                          "action=resubscribe",
                   s->aor, s->event, expires);
        s->min_expires = expires;
        restart_later(s, "error_response", 0, -1);
        evtimer_del(s->timer);
        enqueue(s);
        return;
    }
    log_warn("sip", "event=subscribe_error aor=%s package=%s status=%d phrase=\"%s\" "
                    "action=resubscribe",
             s->aor, s->event, status, phrase ? phrase : "");
    /* 408 is the stack's own timeout; 481 a dialog the notifier forgot: start afresh. */
    restart_later(s, status == 408 ? "timeout" : "error_response",
                  status == 403 || status == 404 || status == 489 ? REJECTED_MIN_MS : 0,
                  retry_after);
}

static void on_notify(void *owner, const struct sipua_notify *n)
{
    struct subscription *s = owner;
    const char *substate = n->substate ? n->substate : "active";

    s->ops->on_notify(s->owner, s, n);
    if (strcmp(substate, "terminated") == 0) {
        const char *reason = n->reason ? n->reason : "";
        /* RFC 6665 4.1.3: deactivated and timeout invite an immediate retry; probation
         * and giveup a later one; rejected, noresource and invariant mean the notifier
         * will not serve it, so retry slowly in case the PBX's configuration changes. */
        long min_ms = 0;
        if (!strcmp(reason, "rejected") || !strcmp(reason, "noresource") ||
            !strcmp(reason, "invariant"))
            min_ms = REJECTED_MIN_MS;
        else if (!strcmp(reason, "deactivated") || !strcmp(reason, "timeout"))
            backoff_reset(&s->bo);
        log_warn("sip", "event=subscription_terminated aor=%s package=%s reason=%s "
                        "action=resubscribe",
                 s->aor, s->event, reason[0] ? reason : "none");
        restart_later(s, "terminated", min_ms, n->retry_after);
        return;
    }
    set_state(s, strcmp(substate, "pending") == 0 ? SUB_PENDING : SUB_ACTIVE);
    if (n->expires > 0)
        s->granted = n->expires;
    s->notified = true;
    arm_watchdog(s);
}

static const struct sipua_ops ua_ops = {
    .on_response = on_response,
    .on_notify = on_notify,
};

const struct sipua_ops *subs_ua_ops(void)
{
    return &ua_ops;
}

/* ---- public ------------------------------------------------------------------------ */

struct subs_mgr *subs_mgr_new(struct event_base *base, struct sipua *ua, long expires,
                              double rate_per_s)
{
    struct subs_mgr *m = xcalloc(1, sizeof *m);

    m->base = base;
    m->ua = ua;
    m->expires = expires;
    m->rate = rate_per_s > 0 ? rate_per_s : 1;
    m->tokens = 1;
    m->tokens_at = clock_mono_ms();
    m->qtail = &m->qhead;
    m->ramp = evtimer_new(base, on_ramp, m);
    m->seed = (uint64_t)clock_wall_us();
    return m;
}

void subs_mgr_free(struct subs_mgr *m)
{
    if (!m)
        return;
    event_free(m->ramp);
    free(m);
}

void subs_mgr_set_expires(struct subs_mgr *m, long expires)
{
    m->expires = expires;
}

void subs_mgr_set_rate(struct subs_mgr *m, double rate_per_s)
{
    m->rate = rate_per_s > 0 ? rate_per_s : 1;
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
    s->ops = ops;
    s->mgr = m;
    s->aor = xstrdup(aor);
    s->event = xstrdup(event);
    s->accept = xstrdup(accept);
    s->owner = owner;
    m->seed = m->seed * 6364136223846793005ULL + 1442695040888963407ULL;
    backoff_init(&s->bo, RETRY_BASE_MS, RETRY_MAX_MS, m->seed);
    s->timer = evtimer_new(m->base, on_timer, s);
    /* Born in backoff with no timer: enqueue() moves it to the ramp queue. */
    s->state = SUB_BACKOFF;
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
    if (s->h)
        sipua_release(s->h);
    m->count[s->state]--;
    m->total--;
    if (m_state)
        metric_set(m_state, sub_state_name(s->state), m->count[s->state]);
    event_free(s->timer);
    free(s->aor);
    free(s->event);
    free(s->accept);
    free(s);
}

void subs_request_full_state(struct subscription *s, const char *why)
{
    if (!s->h || (s->state != SUB_ACTIVE && s->state != SUB_PENDING))
        return;
    log_notice("sip", "event=refresh_for_full_state aor=%s package=%s reason=\"%s\"", s->aor,
               s->event, why);
    if (m_resub)
        metric_inc(m_resub, "version_gap");
    /* Same dialog, same version count: the full-state NOTIFY it triggers is newer. */
    sipua_refresh(s->h, s->mgr->expires);
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
