/* Subscription lifecycle: ramp, backoff, RFC 6665 termination reasons, silence watchdog,
 * and the notifier probe.
 *
 * A notifier that restarts forgets its subscriptions and says nothing: its NOTIFYs just
 * stop. Every probe interval one active subscription per notifier (taken in turn) is
 * refreshed, skipping any the notifier answered or notified within the last second: that
 * answer already says the dialog is alive, and a refresh right behind a 2xx would cross
 * the NOTIFY the notifier sends with it. The answer 481 to any in-dialog refresh means
 * the notifier has lost the dialog, and then every subscription to it is re-established
 * (through the ramp, old dialogs released as each new one starts). A notifier that was
 * unreachable is retried all at once when any subscription to it succeeds again, instead
 * of each waiting out its own backoff. */
#include "subscription.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "backoff.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "strmap.h"
#include "strutil.h"

#define RETRY_BASE_MS 1000
#define RETRY_MAX_MS 300000       /* 5 minutes between attempts at worst */
#define REJECTED_MIN_MS 60000     /* rejected/noresource: no point in hammering */
#define RETRY_AFTER_MAX_S 3600
#define WATCHDOG_GRACE_MAX_S 30   /* silence allowed past the granted expiry ... */
#define WATCHDOG_GRACE_MIN_S 2    /* ... at least, for very short expiries */
#define WAKE_MIN_INTERVAL_MS 1000 /* at most one "notifier is back" sweep per second */
#define PROBE_QUIET_MS 1000       /* a dialog heard from more recently is not probed */

/* Where a group of subscriptions is served: the host[:port] of their AORs. */
struct notifier {
    char *key;
    struct subscription *head;    /* its subscriptions (doubly linked) */
    struct subscription *cursor;  /* next candidate for a probe */
    struct subscription *probing; /* refresh in flight as a probe, or NULL */
    int64_t woke_ms;              /* last "notifier is back" sweep */
};

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
    int64_t heard_ms;             /* mono ms of the notifier's last 2xx (not to a probe)
                                   * or NOTIFY in this dialog */
    const struct subs_owner_ops *ops;
    struct subscription *qnext;   /* ramp queue link */
    bool queued;
    bool eventlist;               /* RFC 4662 list subscription */
    bool failed;                  /* the last attempt failed (timeout, transport, 5xx) */
    struct notifier *nt;
    struct subscription *nprev, *nnext; /* in nt's list */
    /* NOTIFY flood control (not for resource lists): a NOTIFY beyond the manager's
     * notify limit waits here, replaced by any newer one, until a token comes. */
    struct ratelimit_bucket nbucket;
    struct stash *stash;
    struct event *stash_ev;
    uint64_t throttled;           /* in the current flood */
};

struct stash {
    char *content_type;
    char *body;
    size_t len;
    long expires;
    int64_t received_us;
};

struct subs_mgr {
    struct event_base *base;
    struct sipua *ua;
    long expires;
    struct ratelimit ramp;        /* SUBSCRIBEs per second, bursts of one second's worth */
    struct ratelimit_bucket ramp_bucket;
    struct subscription *qhead, **qtail;
    struct event *ramp_ev;
    int count[SUB__COUNT];
    int total;
    uint64_t seed;
    struct strmap notifiers;      /* key -> struct notifier* */
    struct event *probe;          /* every [sip] probe_interval, if not 0 */
    struct ratelimit notify;      /* NOTIFYs per subscription; rate 0: no limit */
};

static const char *const state_names[SUB__COUNT] = {
    [SUB_QUEUED] = "queued",   [SUB_SUBSCRIBING] = "subscribing", [SUB_PENDING] = "pending",
    [SUB_ACTIVE] = "active",   [SUB_BACKOFF] = "backoff",
};

static struct metric *m_state, *m_resub, *m_sent, *m_probes, *m_lost, *m_throttled,
    *m_notifies;

const char *sub_state_name(enum sub_state st)
{
    return (unsigned)st < SUB__COUNT ? state_names[st] : "?";
}

void subs_register_metrics(void)
{
    static const char *const states[] = {"queued", "subscribing", "pending", "active",
                                         "backoff", NULL};
    static const char *const causes[] = {"error_response", "timeout", "terminated",
                                         "silence", "version_gap", "notifier_lost",
                                         "notifier_back", NULL};
    static const char *const results[] = {"ok", "lost", "failed", NULL};

    m_state = metric_new(METRIC_GAUGE, "offhook_subscriptions",
                         "SIP event subscriptions by state.", "state", states);
    m_resub = metric_new(METRIC_COUNTER, "offhook_resubscribes_total",
                         "Subscriptions re-established or refreshed early, by cause.", "cause",
                         causes);
    m_sent = metric_new(METRIC_COUNTER, "offhook_subscribe_sent_total",
                        "Initial SUBSCRIBE requests sent (refreshes by the stack not counted).",
                        NULL, NULL);
    m_probes = metric_new(METRIC_COUNTER, "offhook_notifier_probes_total",
                          "Refreshes sent to check that a notifier still has our "
                          "subscriptions, by answer (lost: 481, it forgot them).",
                          "result", results);
    m_notifies = metric_new(METRIC_COUNTER, "offhook_notifies_total",
                            "NOTIFY requests received, by event package.", "package",
                            (const char *const[]){"dialog", "presence", "reg", NULL});
    m_throttled = metric_new(METRIC_COUNTER, "offhook_notifies_throttled_total",
                             "NOTIFYs beyond [sip] notify_rate on one subscription: deferred "
                             "(applied late) or superseded (a newer one was applied instead).",
                             "outcome", (const char *const[]){"deferred", "superseded", NULL});
    m_lost = metric_new(METRIC_COUNTER, "offhook_notifier_lost_total",
                        "Times a notifier was found to have forgotten our subscriptions "
                        "(restarted): all of them were re-established.",
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
static void stash_drop(struct subscription *s);

/* s's handle is going away: a probe riding on it is over. */
static void probe_forget(struct subscription *s)
{
    if (s->nt && s->nt->probing == s)
        s->nt->probing = NULL;
}

/* s leaves its dialog: a NOTIFY held back from it and a probe riding on it go too. */
static void drop_dialog(struct subscription *s)
{
    stash_drop(s);
    if (s->h) {
        probe_forget(s);
        sipua_release(s->h);
        s->h = NULL;
    }
}

/* The notifier forgot s's dialog (481 to a refresh): it restarted and forgot them all.
 * Every subscription to it not already being re-established goes through the ramp again;
 * each keeps its old handle until its new SUBSCRIBE is sent. */
static void notifier_lost(struct subscription *trigger)
{
    struct notifier *nt = trigger->nt;
    int n = 0;

    if (m_lost)
        metric_inc(m_lost, NULL);
    for (struct subscription *s = nt->head; s; s = s->nnext) {
        if (s->queued || s->state == SUB_SUBSCRIBING)
            continue; /* already on its way to a new dialog */
        if (m_resub)
            metric_inc(m_resub, "notifier_lost");
        backoff_reset(&s->bo);
        s->failed = false;
        enqueue(s);
        n++;
    }
    log_warn("sip", "event=notifier_lost notifier=%s aor=%s package=%s resubscribing=%d "
                    "reason=\"481 to an in-dialog refresh: the notifier restarted or dropped "
                    "our subscriptions\"",
             nt->key, trigger->aor, trigger->event, n);
}

/* A subscription to nt succeeded after failures: nt is reachable again, so the others
 * that failed with it retry now instead of at the end of their own backoff. */
static void notifier_back(struct subscription *trigger)
{
    struct notifier *nt = trigger->nt;
    int64_t now = clock_mono_ms();
    int n = 0;

    if (now - nt->woke_ms < WAKE_MIN_INTERVAL_MS)
        return;
    nt->woke_ms = now;
    for (struct subscription *s = nt->head; s; s = s->nnext) {
        if (s->state != SUB_BACKOFF || !s->failed)
            continue;
        if (m_resub)
            metric_inc(m_resub, "notifier_back");
        backoff_reset(&s->bo);
        enqueue(s);
        n++;
    }
    if (n)
        log_notice("sip", "event=notifier_back notifier=%s retrying=%d", nt->key, n);
}

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
    /* Re-established after the notifier lost it: the old dialog goes now, paced by the
     * ramp like the new SUBSCRIBE (its un-SUBSCRIBE gets a harmless 481); a held-back
     * NOTIFY goes with it, the new dialog starts with a full state. */
    drop_dialog(s);
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
    /* A dead dialog gets no Expires: 0; a live one (silence) is told we leave. */
    drop_dialog(s);
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

    while (m->qhead && ratelimit_take(&m->ramp, &m->ramp_bucket, now)) {
        struct subscription *s = m->qhead;
        m->qhead = s->qnext;
        if (!m->qhead)
            m->qtail = &m->qhead;
        s->queued = false;
        s->qnext = NULL;
        send_subscribe(s);
    }
    ramp_schedule(m);
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
    bool in_dialog = s->state == SUB_ACTIVE || s->state == SUB_PENDING;
    bool probe = s->nt->probing == s;

    if (probe) {
        s->nt->probing = NULL;
        if (m_probes)
            metric_inc(m_probes, status < 300 ? "ok" : status == 481 ? "lost" : "failed");
    }
    if (s->queued)
        return; /* an old dialog, replaced when the ramp reaches it */
    if (status < 300) {
        bool first = s->granted == 0;
        /* A probe's own answer does not count: a quiet dialog would keep itself from
         * ever being asked again. */
        if (!probe)
            s->heard_ms = clock_mono_ms();
        s->granted = expires > 0 ? expires : s->mgr->expires;
        backoff_reset(&s->bo);
        if (s->failed) {
            s->failed = false;
            notifier_back(s);
        }
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
    if (status == 481 && in_dialog) {
        notifier_lost(s);
        return;
    }
    log_warn("sip", "event=subscribe_error aor=%s package=%s status=%d phrase=\"%s\" "
                    "action=resubscribe%s",
             s->aor, s->event, status, phrase ? phrase : "",
             /* Sofia reports a refused certificate or a failed handshake only this way. */
             status == 408 && s->mgr->ua && sipua_tls(s->mgr->ua)
                 ? " hint=\"over TLS a failed handshake or certificate check also ends in "
                   "408: check [sip] tls_dir/cafile.pem and that the PBX's certificate "
                   "names the pbx host\""
                 : "");
    /* Unreachable or overloaded: when one subscription gets through again, all retry. */
    s->failed = status == 408 || status >= 500;
    /* 408 is the stack's own timeout; 481 a dialog the notifier forgot: start afresh. */
    restart_later(s, status == 408 ? "timeout" : "error_response",
                  status == 403 || status == 404 || status == 489 ? REJECTED_MIN_MS : 0,
                  retry_after);
}

/* ---- NOTIFY flood control ------------------------------------------------------------ */

static void stash_drop(struct subscription *s)
{
    if (!s->stash)
        return;
    free(s->stash->content_type);
    free(s->stash->body);
    free(s->stash);
    s->stash = NULL;
    evtimer_del(s->stash_ev);
}

static bool take_token(struct subscription *s)
{
    return s->eventlist || ratelimit_take(&s->mgr->notify, &s->nbucket, clock_mono_ms());
}

static void arm_stash(struct subscription *s)
{
    long ms = ratelimit_wait_ms(&s->mgr->notify, &s->nbucket, clock_mono_ms());
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    evtimer_add(s->stash_ev, &tv);
}

/* Keeps n to apply later (the newest replaces an older one: each carries the state). */
static void stash_keep(struct subscription *s, const struct sipua_notify *n)
{
    if (s->stash) {
        if (m_throttled)
            metric_inc(m_throttled, "superseded");
        free(s->stash->content_type);
        free(s->stash->body);
    } else {
        s->stash = xcalloc(1, sizeof *s->stash);
        if (m_throttled)
            metric_inc(m_throttled, "deferred");
    }
    if (s->throttled++ == 0)
        log_warn("sip", "event=notify_flood aor=%s package=%s rate_per_s=%.0f "
                        "action=applying_latest_only",
                 s->aor, s->event, s->mgr->notify.rate);
    s->stash->content_type = n->content_type ? xstrdup(n->content_type) : NULL;
    s->stash->body = n->body ? xmalloc(n->len + 1) : NULL;
    if (n->body) {
        memcpy(s->stash->body, n->body, n->len);
        s->stash->body[n->len] = '\0';
    }
    s->stash->len = n->len;
    s->stash->expires = n->expires;
    s->stash->received_us = n->received_us;
    if (!evtimer_pending(s->stash_ev, NULL))
        arm_stash(s);
}

static void on_stash(evutil_socket_t fd, short what, void *arg)
{
    struct subscription *s = arg;
    struct sipua_notify n = {.substate = "active", .expires = -1, .retry_after = -1};

    if (!s->stash)
        return;
    if (!take_token(s)) {
        arm_stash(s);
        return;
    }
    n.content_type = s->stash->content_type;
    n.body = s->stash->body;
    n.len = s->stash->len;
    n.expires = s->stash->expires;
    n.received_us = s->stash->received_us;
    s->ops->on_notify(s->owner, s, &n);
    stash_drop(s);
    log_notice("sip", "event=notify_flood_over aor=%s package=%s throttled=%llu", s->aor,
               s->event, (unsigned long long)s->throttled);
    s->throttled = 0;
}

static void on_notify(void *owner, const struct sipua_notify *n)
{
    struct subscription *s = owner;
    const char *substate = n->substate ? n->substate : "active";

    if (m_notifies)
        metric_inc(m_notifies, s->event);
    if (s->queued) {
        /* An old dialog waiting to be replaced: its news still counts, its end does not
         * change what is already scheduled. */
        if (strcmp(substate, "terminated") != 0)
            s->ops->on_notify(s->owner, s, n);
        return;
    }
    if (strcmp(substate, "terminated") != 0 && (s->stash || !take_token(s))) {
        stash_keep(s, n); /* a flood: only the latest is applied, when a token comes */
    } else {
        stash_drop(s); /* superseded by this one, applied now */
        s->ops->on_notify(s->owner, s, n);
    }
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
    s->heard_ms = clock_mono_ms();
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

/* ---- notifiers and probes ---------------------------------------------------------- */

/* host[:port] of a SIP URI: "sip:1001@pbx:5060;transport=tcp" -> "pbx:5060". */
static void notifier_key(const char *aor, char *out, size_t len)
{
    const char *p = strchr(aor, ':'), *at;
    size_t n;

    p = p ? p + 1 : aor;
    at = strchr(p, '@');
    if (at)
        p = at + 1;
    n = strcspn(p, ";?>");
    if (n >= len)
        n = len - 1;
    memcpy(out, p, n);
    out[n] = '\0';
}

static void notifier_attach(struct subs_mgr *m, struct subscription *s)
{
    char key[512];
    struct notifier *nt;

    notifier_key(s->aor, key, sizeof key);
    nt = strmap_get(&m->notifiers, key);
    if (!nt) {
        nt = xcalloc(1, sizeof *nt);
        nt->key = xstrdup(key);
        strmap_put(&m->notifiers, nt->key, nt);
    }
    s->nt = nt;
    s->nprev = NULL;
    s->nnext = nt->head;
    if (nt->head)
        nt->head->nprev = s;
    nt->head = s;
}

static void notifier_detach(struct subscription *s)
{
    struct notifier *nt = s->nt;

    probe_forget(s);
    if (nt->cursor == s)
        nt->cursor = s->nnext;
    if (s->nprev)
        s->nprev->nnext = s->nnext;
    else
        nt->head = s->nnext;
    if (s->nnext)
        s->nnext->nprev = s->nprev;
    s->nprev = s->nnext = NULL;
}

/* Refreshes the next active subscription of nt not heard from within PROBE_QUIET_MS,
 * unless a probe is still in flight (the stack retransmits it; a notifier back within
 * 32 s answers it). */
static void probe_notifier(struct subs_mgr *m, struct notifier *nt, int64_t now)
{
    struct subscription *s = nt->cursor ? nt->cursor : nt->head;

    if (nt->probing)
        return;
    for (struct subscription *first = s; s;) {
        if (s->state == SUB_ACTIVE && !s->queued && s->h && now - s->heard_ms >= PROBE_QUIET_MS)
            break;
        s = s->nnext ? s->nnext : nt->head;
        if (s == first)
            s = NULL;
    }
    if (!s)
        return; /* nothing established to ask about */
    nt->cursor = s->nnext;
    nt->probing = s;
    log_debug("sip", "event=probe notifier=%s aor=%s package=%s", nt->key, s->aor, s->event);
    sipua_refresh(s->h, m->expires);
}

static void on_probe(evutil_socket_t fd, short what, void *arg)
{
    struct subs_mgr *m = arg;
    size_t pos = 0;
    const char *k;
    void *v;
    int64_t now = clock_mono_ms();

    while (strmap_next(&m->notifiers, &pos, &k, &v))
        probe_notifier(m, v, now);
}

void subs_mgr_set_notify_rate(struct subs_mgr *m, double per_s)
{
    m->notify.rate = per_s > 0 ? per_s : 0;
    m->notify.burst = 2 * m->notify.rate; /* a burst of two seconds' worth */
}

void subs_mgr_set_probe(struct subs_mgr *m, long seconds)
{
    struct timeval tv = {.tv_sec = seconds};

    evtimer_del(m->probe);
    if (seconds > 0)
        evtimer_add(m->probe, &tv); /* persistent: every tv */
}

/* ---- public ------------------------------------------------------------------------ */

struct subs_mgr *subs_mgr_new(struct event_base *base, struct sipua *ua, long expires,
                              double rate_per_s)
{
    struct subs_mgr *m = xcalloc(1, sizeof *m);

    m->base = base;
    m->ua = ua;
    m->expires = expires;
    subs_mgr_set_rate(m, rate_per_s);
    ratelimit_bucket_init(&m->ramp_bucket, 1, clock_mono_ms()); /* the first at once */
    m->qtail = &m->qhead;
    m->ramp_ev = evtimer_new(base, on_ramp, m);
    m->probe = event_new(base, -1, EV_PERSIST, on_probe, m);
    m->seed = (uint64_t)clock_wall_us();
    strmap_init(&m->notifiers);
    return m;
}

void subs_mgr_free(struct subs_mgr *m)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!m)
        return;
    event_free(m->ramp_ev);
    event_free(m->probe);
    while (strmap_next(&m->notifiers, &pos, &k, &v)) {
        struct notifier *nt = v;
        free(nt->key);
        free(nt);
    }
    strmap_free(&m->notifiers);
    free(m);
}

void subs_mgr_set_expires(struct subs_mgr *m, long expires)
{
    m->expires = expires;
}

void subs_mgr_set_rate(struct subs_mgr *m, double rate_per_s)
{
    m->ramp.rate = rate_per_s > 0 ? rate_per_s : 1;
    m->ramp.burst = m->ramp.rate; /* at most one second's worth at once */
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
    s->stash_ev = evtimer_new(m->base, on_stash, s);
    ratelimit_bucket_init(&s->nbucket, m->notify.burst, clock_mono_ms());
    notifier_attach(m, s);
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
    drop_dialog(s);
    notifier_detach(s);
    m->count[s->state]--;
    m->total--;
    if (m_state)
        metric_set(m_state, sub_state_name(s->state), m->count[s->state]);
    event_free(s->stash_ev);
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
