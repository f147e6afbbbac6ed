/* Notifier groups, probes, and the lost/back sweeps over a group (see probe.h). */
#include "probe.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "sbuf.h"
#include "strmap.h"
#include "strutil.h"

#define PROBE_QUIET_MS 1000 /* a dialog heard from more recently is not probed */
/* A probe, or a try of an unreachable notifier, gets its answer (408 at worst) within a
 * transaction timeout; one unanswered for this long (a try lost in the ramp queue behind
 * a reload, a refresh the SIP layer did not send because the dialog ended meanwhile) no
 * longer holds the next one back. */
#define STUCK_MS 60000
/* A subscription's own failure makes its notifier unreachable only if nothing was heard
 * from it for this many probe intervals (else it is that subscription's trouble). */
#define QUIET_INTERVALS 2

/* At most one "notifier is back" sweep per notifier per second. */
static const struct ratelimit back_limit = {.rate = 1, .burst = 1};

/* Where a group of subscriptions is served: the host[:port] of their AORs. */
struct probe_notifier {
    struct probe *p;
    char *key;
    struct probe_member *head;       /* its members (doubly linked) */
    struct probe_member *cursor;     /* next candidate for a probe */
    struct probe_member *probing;    /* refresh in flight as a probe, or NULL */
    int64_t probe_sent_ms;           /* when that refresh was sent (monotonic) */
    struct ratelimit_bucket back;    /* "notifier is back" sweeps */
    int members;
    int64_t heard_ms;                /* any member's last sign of life (monotonic), 0 */
    /* Unreachable: a probe got no answer. Its members are parked until a sign of life. */
    bool unreachable;
    int64_t down_since_ms;           /* the unanswered probe's sending (monotonic) */
    int parked_subs, parked_users;   /* counted when it became unreachable, for /readyz */
    struct probe_member *trying;     /* parked member trying again, or NULL */
    int64_t try_ms;                  /* when it was asked to */
};

struct probe {
    const struct probe_ops *ops;
    struct strmap notifiers;         /* key -> struct probe_notifier* */
    struct event *timer;             /* every probe interval, if not 0 */
    long interval;                   /* seconds; 0: no probes */
};

static struct metric *m_probes, *m_lost, *m_notifiers;

void probe_register_metrics(void)
{
    static const char *const results[] = {"ok", "lost", "failed", NULL};

    m_probes = metric_new(METRIC_COUNTER, "offhook_notifier_probes_total",
                          "Refreshes sent to check that a notifier still has our "
                          "subscriptions, by answer (lost: 481, it forgot them).",
                          "result", results);
    m_lost = metric_new(METRIC_COUNTER, "offhook_notifier_lost_total",
                        "Times a notifier was found to have forgotten our subscriptions "
                        "(restarted): all of them were re-established.",
                        NULL, NULL);
    m_notifiers = metric_new(METRIC_GAUGE, "offhook_notifiers",
                             "Notifiers (the PBX host:port serving a group of subscriptions) "
                             "by state: unreachable when a probe got no answer.",
                             "state", (const char *const[]){"reachable", "unreachable", NULL});
}

static void update_gauge(struct probe *p)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int up = 0, down = 0;

    while (strmap_next(&p->notifiers, &pos, &k, &v)) {
        struct probe_notifier *nt = v;
        if (nt->members == 0)
            continue;
        if (nt->unreachable)
            down++;
        else
            up++;
    }
    metric_set(m_notifiers, "reachable", up);
    metric_set(m_notifiers, "unreachable", down);
}

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

static const char *m_aor(const struct probe_member *m)
{
    return m->nt->p->ops->aor(m);
}

static const char *m_event(const struct probe_member *m)
{
    return m->nt->p->ops->event(m);
}

void probe_attach(struct probe *p, struct probe_member *m, const char *aor)
{
    char key[512];
    struct probe_notifier *nt;

    notifier_key(aor, key, sizeof key);
    nt = strmap_get(&p->notifiers, key);
    if (!nt) {
        nt = xcalloc(1, sizeof *nt);
        nt->p = p;
        nt->key = xstrdup(key);
        ratelimit_bucket_init(&nt->back, back_limit.burst, clock_mono_ms());
        strmap_put(&p->notifiers, nt->key, nt);
    }
    m->nt = nt;
    m->prev = NULL;
    m->next = nt->head;
    if (nt->head)
        nt->head->prev = m;
    nt->head = m;
    if (nt->members++ == 0)
        update_gauge(p);
}

void probe_forget(struct probe_member *m)
{
    if (m->nt && m->nt->probing == m)
        m->nt->probing = NULL;
}

void probe_detach(struct probe_member *m)
{
    struct probe_notifier *nt = m->nt;

    if (!nt)
        return;
    probe_forget(m);
    if (nt->trying == m)
        nt->trying = NULL;
    if (nt->cursor == m)
        nt->cursor = m->next;
    if (m->prev)
        m->prev->next = m->next;
    else
        nt->head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->prev = m->next = NULL;
    m->nt = NULL;
    if (--nt->members == 0)
        update_gauge(nt->p);
}

void probe_heard(struct probe_member *m, int64_t now_ms)
{
    m->heard_ms = now_ms;
    if (m->nt)
        m->nt->heard_ms = now_ms;
}

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(const void *const *)a, y = (uintptr_t)*(const void *const *)b;

    return x < y ? -1 : x > y;
}

/* Users served by nt's members: distinct keys, plus what list members serve. */
static int count_users(struct probe_notifier *nt)
{
    const void **keys = xcalloc((size_t)nt->members + 1, sizeof *keys);
    int n = 0, users = 0;

    for (struct probe_member *m = nt->head; m && n < nt->members; m = m->next) {
        const void *key = NULL;
        int served = nt->p->ops->users(m, &key);
        if (key)
            keys[n++] = key;
        else
            users += served;
    }
    /* Distinct pointers: sorted, then each run counted once. */
    qsort(keys, (size_t)n, sizeof *keys, cmp_ptr);
    for (int i = 0; i < n; i++)
        users += i == 0 || keys[i] != keys[i - 1];
    free(keys);
    return users;
}

/* nt stopped answering (a probe sent at since_ms got none): every member is parked, down
 * as of since_ms, and the notifier waits for a sign of life. With probes off nothing would
 * try it again: members then fail and retry one by one, as they would without probes. */
static void notifier_unreachable(struct probe_notifier *nt, struct probe_member *trigger,
                                 int status, int64_t since_ms)
{
    int subs = 0;

    if (nt->unreachable || nt->p->interval <= 0)
        return;
    nt->unreachable = true;
    nt->down_since_ms = since_ms;
    nt->trying = NULL;
    for (struct probe_member *m = nt->head; m; m = m->next) {
        nt->p->ops->park(m, since_ms);
        subs++;
    }
    nt->parked_subs = subs;
    nt->parked_users = count_users(nt);
    update_gauge(nt->p);
    log_warn("sip", "event=notifier_unreachable notifier=%s users=%d subscriptions=%d "
                    "status=%d silent_s=%.1f aor=%s package=%s reason=\"%s\" action=\"users "
                    "go unknown after [sip] stale_after; one subscription tries again every "
                    "probe interval\"",
             log_q(nt->key), nt->parked_users, subs, status,
             (double)(clock_mono_ms() - since_ms) / 1000.0, log_q(m_aor(trigger)), m_event(trigger),
             status == 408 ? "no answer within the transaction timeout"
                           : "transport error (nothing listening, connection refused) or "
                             "overloaded");
}

/* Ends nt's unreachable spell: logged, and every parked member retries. */
static void notifier_reachable(struct probe_notifier *nt, const char *aor)
{
    int n = 0;

    nt->unreachable = false;
    nt->trying = NULL;
    update_gauge(nt->p);
    /* The sweep that ends the spell takes the token: a second one just behind it would
     * find nothing to retry. */
    ratelimit_bucket_init(&nt->back, 0, clock_mono_ms());
    for (struct probe_member *m = nt->head; m; m = m->next)
        n += nt->p->ops->retry(m);
    log_notice("sip", "event=notifier_reachable notifier=%s down_s=%lld aor=%s retrying=%d",
               log_q(nt->key), (long long)((clock_mono_ms() - nt->down_since_ms) / 1000),
               aor ? log_q(aor) : "-", n);
}

bool probe_answered(struct probe_member *m, int status)
{
    struct probe_notifier *nt = m->nt;

    if (!nt)
        return false;
    if (nt->trying == m) {
        /* A parked subscription tried again: its answer says whether the notifier is
         * back (the caller's success path) or still silent (it parks again). */
        nt->trying = NULL;
        metric_inc(m_probes, status < 300 ? "ok" : "failed");
        return true;
    }
    if (nt->probing != m)
        return false;
    nt->probing = NULL;
    metric_inc(m_probes, status < 300 ? "ok" : status == 481 ? "lost" : "failed");
    if (status < 300)
        nt->heard_ms = clock_mono_ms();
    else if (status == 408 || status == 503)
        notifier_unreachable(nt, m, status, nt->probe_sent_ms);
    return true;
}

bool probe_failed(struct probe_member *m, int status)
{
    struct probe_notifier *nt = m->nt;
    int64_t now = clock_mono_ms();

    if (!nt)
        return false;
    if (status != 408 && status != 503) {
        /* An answer, even a refusal: the notifier is there. */
        if (nt->unreachable)
            notifier_reachable(nt, m_aor(m));
        return false;
    }
    if (nt->unreachable)
        return true;
    if (nt->heard_ms && now - nt->heard_ms < QUIET_INTERVALS * nt->p->interval * 1000)
        return false;
    notifier_unreachable(nt, m, status, now);
    return nt->unreachable;
}

bool probe_unreachable(const struct probe_member *m)
{
    return m->nt && m->nt->unreachable;
}

int probe_report_unreachable(const struct probe *p, struct sbuf *why)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;
    int64_t now = clock_mono_ms();

    while (strmap_next(&p->notifiers, &pos, &k, &v)) {
        struct probe_notifier *nt = v;
        if (!nt->unreachable || nt->members == 0)
            continue;
        sbuf_printf(why, "sip: notifier %s unreachable for %lld s (no answer to probes; %d "
                         "users, %d subscriptions waiting)\n",
                    nt->key, (long long)((now - nt->down_since_ms) / 1000), nt->parked_users,
                    nt->parked_subs);
        n++;
    }
    return n;
}

void probe_notifier_lost(struct probe_member *trigger)
{
    struct probe_notifier *nt = trigger->nt;
    int n = 0;

    metric_inc(m_lost, NULL);
    for (struct probe_member *m = nt->head; m; m = m->next)
        n += nt->p->ops->resubscribe(m);
    log_warn("sip", "event=notifier_lost notifier=%s aor=%s package=%s resubscribing=%d "
                    "reason=\"481 to an in-dialog refresh: the notifier restarted or dropped "
                    "our subscriptions\"",
             log_q(nt->key), log_q(m_aor(trigger)), m_event(trigger), n);
}

void probe_notifier_back(struct probe_member *trigger)
{
    struct probe_notifier *nt = trigger->nt;
    int n = 0;

    if (!nt)
        return;
    if (nt->unreachable) {
        notifier_reachable(nt, m_aor(trigger));
        return;
    }
    if (!ratelimit_take(&back_limit, &nt->back, clock_mono_ms()))
        return;
    for (struct probe_member *m = nt->head; m; m = m->next)
        n += nt->p->ops->retry(m);
    if (n)
        log_notice("sip", "event=notifier_back notifier=%s retrying=%d", log_q(nt->key), n);
}

/* nt is unreachable: one parked member tries again, unless one still waits for its
 * answer. Taken in turn, like probes. */
static void try_notifier(struct probe *p, struct probe_notifier *nt, int64_t now)
{
    struct probe_member *m = nt->cursor ? nt->cursor : nt->head;

    if (nt->trying && now - nt->try_ms < STUCK_MS)
        return;
    nt->trying = NULL;
    for (struct probe_member *first = m; m;) {
        struct probe_member *next = m->next ? m->next : nt->head;
        if (p->ops->try_again(m)) {
            nt->cursor = m->next;
            nt->trying = m;
            nt->try_ms = now;
            log_debug("sip", "event=notifier_try notifier=%s aor=%s package=%s",
                      log_q(nt->key), log_q(m_aor(m)), m_event(m));
            return;
        }
        m = next == first ? NULL : next;
    }
}

/* Refreshes the next established member of nt not heard from within PROBE_QUIET_MS,
 * unless a probe is still in flight (the stack retransmits it; its answer, 408 at worst,
 * comes within the transaction timeout). */
static void probe_notifier(struct probe *p, struct probe_notifier *nt, int64_t now)
{
    struct probe_member *m = nt->cursor ? nt->cursor : nt->head;

    if (nt->unreachable) {
        try_notifier(p, nt, now);
        return;
    }
    if (nt->probing && now - nt->probe_sent_ms < STUCK_MS)
        return;
    nt->probing = NULL;
    for (struct probe_member *first = m; m;) {
        if (p->ops->can_probe(m) && now - m->heard_ms >= PROBE_QUIET_MS)
            break;
        m = m->next ? m->next : nt->head;
        if (m == first)
            m = NULL;
    }
    if (!m)
        return; /* nothing established to ask about */
    nt->cursor = m->next;
    nt->probing = m;
    nt->probe_sent_ms = now;
    log_debug("sip", "event=probe notifier=%s aor=%s package=%s", log_q(nt->key), log_q(m_aor(m)),
              m_event(m));
    p->ops->refresh(m);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    size_t pos = 0;
    const char *k;
    void *v;
    int64_t now = clock_mono_ms();

    while (strmap_next(&p->notifiers, &pos, &k, &v))
        probe_notifier(p, v, now);
}

struct probe *probe_new(struct event_base *base, const struct probe_ops *ops)
{
    struct probe *p = xcalloc(1, sizeof *p);

    p->ops = ops;
    p->timer = event_new(base, -1, EV_PERSIST, on_timer, p);
    strmap_init(&p->notifiers);
    return p;
}

void probe_set_interval(struct probe *p, long seconds)
{
    struct timeval tv = {.tv_sec = seconds};
    size_t pos = 0;
    const char *k;
    void *v;

    p->interval = seconds > 0 ? seconds : 0;
    evtimer_del(p->timer);
    if (seconds > 0) {
        evtimer_add(p->timer, &tv); /* persistent: every tv */
        return;
    }
    while (strmap_next(&p->notifiers, &pos, &k, &v)) {
        if (((struct probe_notifier *)v)->unreachable)
            notifier_reachable(v, NULL);
    }
}

void probe_free(struct probe *p)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!p)
        return;
    event_free(p->timer);
    while (strmap_next(&p->notifiers, &pos, &k, &v)) {
        struct probe_notifier *nt = v;
        free(nt->key);
        free(nt);
    }
    strmap_free(&p->notifiers);
    free(p);
}

const char *probe_notifier_name(const struct probe_member *m)
{
    return m->nt ? m->nt->key : "";
}
