/* Notifier groups, probes, and the lost/back sweeps over a group (see probe.h). */
#include "probe.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "strmap.h"
#include "strutil.h"

#define PROBE_QUIET_MS 1000 /* a dialog heard from more recently is not probed */

/* At most one "notifier is back" sweep per notifier per second. */
static const struct ratelimit back_limit = {.rate = 1, .burst = 1};

/* Where a group of subscriptions is served: the host[:port] of their AORs. */
struct probe_notifier {
    struct probe *p;
    char *key;
    struct probe_member *head;       /* its members (doubly linked) */
    struct probe_member *cursor;     /* next candidate for a probe */
    struct probe_member *probing;    /* refresh in flight as a probe, or NULL */
    struct ratelimit_bucket back;    /* "notifier is back" sweeps */
};

struct probe {
    const struct probe_ops *ops;
    struct strmap notifiers;         /* key -> struct probe_notifier* */
    struct event *timer;             /* every probe interval, if not 0 */
};

static struct metric *m_probes, *m_lost;

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

void probe_attach(struct probe *p, struct probe_member *m, const char *aor, const char *event)
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
    m->aor = aor;
    m->event = event;
    m->nt = nt;
    m->prev = NULL;
    m->next = nt->head;
    if (nt->head)
        nt->head->prev = m;
    nt->head = m;
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
}

void probe_heard(struct probe_member *m, int64_t now_ms)
{
    m->heard_ms = now_ms;
}

bool probe_answered(struct probe_member *m, int status)
{
    if (!m->nt || m->nt->probing != m)
        return false;
    m->nt->probing = NULL;
    metric_inc(m_probes, status < 300 ? "ok" : status == 481 ? "lost" : "failed");
    return true;
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
             log_q(nt->key), log_q(trigger->aor), trigger->event, n);
}

void probe_notifier_back(struct probe_member *trigger)
{
    struct probe_notifier *nt = trigger->nt;
    int n = 0;

    if (!ratelimit_take(&back_limit, &nt->back, clock_mono_ms()))
        return;
    for (struct probe_member *m = nt->head; m; m = m->next)
        n += nt->p->ops->retry(m);
    if (n)
        log_notice("sip", "event=notifier_back notifier=%s retrying=%d", log_q(nt->key), n);
}

/* Refreshes the next established member of nt not heard from within PROBE_QUIET_MS,
 * unless a probe is still in flight (the stack retransmits it; a notifier back within
 * 32 s answers it). */
static void probe_notifier(struct probe *p, struct probe_notifier *nt, int64_t now)
{
    struct probe_member *m = nt->cursor ? nt->cursor : nt->head;

    if (nt->probing)
        return;
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
    log_debug("sip", "event=probe notifier=%s aor=%s package=%s", log_q(nt->key), log_q(m->aor),
              m->event);
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

    evtimer_del(p->timer);
    if (seconds > 0)
        evtimer_add(p->timer, &tv); /* persistent: every tv */
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
