/* XEP-0356 grants and privileged IQs, with every answer matched to a request actually
 * sent (see privileged.h). Anyone can send the component an IQ result or error: only
 * one that carries the id of a pending request (ids are random per process, so nobody
 * outside can guess one) and comes from that request's user or the user's server is
 * taken as its answer.
 *
 * At 10,000 users a start is tens of thousands of requests (each user's PEP nodes read,
 * then written; the vCard): they are paced, PACE_WINDOW in flight at most and the rest
 * waiting their turn (writes first: they finish what a read began), so that presence,
 * sent unpaced, never queues behind them at the server. A user whose server refuses the
 * privileged IQ itself (no such account, most often) is left alone for a while
 * (REFUSED_HOLD_MIN_S, then doubling), and the refusals of one round make one log line. */
#include "privileged.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "strutil.h"

#define GRANT_WAIT_S 5          /* after connecting, how long a server has to say <privilege/> */
#define REQUEST_TIMEOUT_S 30    /* a request unanswered this long has failed */
#define SWEEP_S 5               /* how often timeouts are looked for */
#define PENDING_MAX 65536       /* requests in flight at most (a stalled server bounds us) */
#define PARKED_MAX 16           /* grants kept for domains with no user (yet) */
/* Requests in flight, at most; the others wait. Prosody handles a few hundred privileged
 * requests a second here (each loads the user's PEP service or vCard): 32 keep it busy,
 * and a presence change sent meanwhile waits behind 32 of them, not thousands. */
#define PACE_WINDOW 32
#define WAITING_MAX (1 << 20)    /* requests waiting, at most (a few per configured user) */
#define REFUSED_HOLD_MIN_S 300   /* a refused user is asked again after 5 minutes, ... */
#define REFUSED_HOLD_MAX_S 3600  /* ... then 10, 20, 40, at most every hour */
#define REFUSED_CHECK_S 30       /* holds are looked at this often */
#define REFUSED_LOG_MAX_S 300    /* a round's line waits for the requests to be answered, or
                                  * this long */
#define REFUSED_EXAMPLES 3

static const char *const ns_names[PRIV_NS_MAX] = {NS_PUBSUB, NS_VCARD};

struct grant {
    char *domain;                       /* owned; the key in privileged.grants */
    bool advertised;                    /* a <privilege/> came from it in this stream */
    bool may[PRIV_NS_MAX][2];           /* [ns][PRIV_GET/PRIV_SET] */
    bool roster[2];                     /* the roster permission [PRIV_GET/PRIV_SET] */
    char version[8];                    /* "1" or "2" */
    char perms[256];                    /* as advertised, for the log */
    bool announced;                     /* on_granted told, in this stream */
    bool missing_said;                  /* on_missing told, in this stream */
};

struct pending {
    char id[48];                        /* the key in privileged.pending */
    char *user;                         /* the request's user (bare JID, owned) */
    const char *domain;                 /* into user */
    bool get;                           /* a read: item-not-found is an answer, not a refusal */
    bool roster;                        /* the roster permission's: its writer backs off */
    int64_t deadline_ms;
    priv_done_fn done;
    void *arg;
};

/* A request waiting for room in the window. Its payload is kept serialised: a parsed one
 * costs several times as much, and a start at 100,000 users queues hundreds of thousands. */
struct waiting {
    char *user;                         /* bare JID (owned) */
    enum priv_type type;
    bool roster;                        /* the roster permission's request (not wrapped) */
    char *payload;                      /* the payload element as XML text (owned) */
    priv_done_fn done;
    void *arg;
    struct waiting *next;
};

/* A user whose server refused the privileged IQ itself. */
struct refusal {
    char *user;                         /* the key in privileged.refused (owned) */
    int64_t until_ms;                   /* left alone until then (monotonic) */
    long hold_s;                        /* the hold now; doubles with each round refused */
    unsigned round;                     /* the log round it was last counted in */
};

struct privileged {
    const struct users *d;
    const struct stanza_out *out;
    struct privileged_ops ops;
    void *arg;
    struct strmap grants;               /* server domain -> struct grant* (owned) */
    struct strmap pending;              /* id -> struct pending* (owned) */
    struct event *wait;                 /* GRANT_WAIT_S after connecting */
    bool waited;                        /* that wait is over, in this stream */
    struct event *sweep;                /* timeouts */
    char id_prefix[24];                 /* random per process */
    unsigned long next_id;
    void (*idle_fn)(void *arg);         /* priv_when_idle's waiter */
    void *idle_arg;
    struct ratelimit_gate ignored_log;  /* answer_ignored lines: a peer can cause them */
    /* Pacing (pace_*): requests waiting for room, sets first ([PRIV_SET]), then gets. */
    struct waiting *wait_head[2], **wait_tail[2];
    size_t waiting;
    bool pumping;
    /* Refusals (refusal_*): who is left alone, and this round's one log line. */
    struct strmap refused;              /* user bare JID -> struct refusal* (owned) */
    struct event *refused_check;        /* every REFUSED_CHECK_S: holds that ended */
    struct event *refused_log;          /* REFUSED_LOG_MAX_S into a round: its line */
    unsigned round;
    int round_users;
    char round_condition[32];
    char round_examples[REFUSED_EXAMPLES * 64 + 8];
};

static struct metric *m_priv_errors, *m_ignored, *m_requests;

/* The label values of offhook_privilege_errors_total: declared, so each series exists from
 * the first scrape and a hostile server cannot mint label values. */
static const char *const priv_conditions[] = {
    "bad_request",           "conflict",           "feature_not_implemented",
    "forbidden",             "internal_server_error", "item_not_found",
    "not_allowed",           "not_authorized",     "policy_violation",
    "remote_server_timeout", "resource_constraint", "service_unavailable",
    "undefined_condition",   "other",              NULL};

void priv_register_metrics(void)
{
    m_priv_errors = metric_new(METRIC_COUNTER, "offhook_privilege_errors_total",
                               "Privileged IQs the server refused, by stanza error condition "
                               "(RFC 6120's, dashes as underscores; other: anything else).",
                               "condition", priv_conditions);
    m_ignored = metric_new(METRIC_COUNTER, "offhook_privileged_answers_ignored_total",
                           "IQ results and errors that answered no request of the component "
                           "(unknown_id) or came from someone else than its user or their "
                           "server (wrong_sender).",
                           "reason", (const char *const[]){"unknown_id", "wrong_sender", NULL});
    m_requests = metric_new(METRIC_COUNTER, "offhook_privileged_requests_total",
                            "Privileged IQs into users' accounts (PEP reads and writes, vCard, "
                            "roster items), by outcome.",
                            "result",
                            (const char *const[]){"sent", "ok", "error", "timeout", "lost",
                                                  NULL});
}

/* RFC 6120's condition element name -> its label value. */
static const char *condition_label(const char *condition)
{
    char name[32];
    size_t i;

    for (i = 0; condition[i] && i < sizeof name - 1; i++)
        name[i] = condition[i] == '-' ? '_' : condition[i];
    name[i] = '\0';
    for (const char *const *c = priv_conditions; *c; c++) {
        if (!condition[i] && strcmp(*c, name) == 0)
            return *c;
    }
    return "other";
}

/* ---- grants ---------------------------------------------------------------------------- */

static struct grant *grant_for(const struct privileged *p, const char *domain)
{
    return strmap_get(&p->grants, domain);
}

static struct grant *grant_new(struct privileged *p, const char *domain)
{
    struct grant *g = grant_for(p, domain);

    if (!g) {
        g = xcalloc(1, sizeof *g);
        g->domain = xstrdup(domain);
        strmap_put(&p->grants, g->domain, g);
    }
    return g;
}

bool priv_advertised(const struct privileged *p, const char *domain)
{
    const struct grant *g = grant_for(p, domain);

    return g && g->advertised;
}

bool priv_may(const struct privileged *p, const char *domain, enum priv_ns ns,
              enum priv_type type)
{
    const struct grant *g = grant_for(p, domain);

    return g && g->advertised && g->may[ns][type];
}

bool priv_may_roster(const struct privileged *p, const char *domain, enum priv_type type)
{
    const struct grant *g = grant_for(p, domain);

    return g && g->advertised && g->roster[type];
}

/* g's grants to the owner, once per stream: its domain has users now. */
static void announce(struct privileged *p, struct grant *g)
{
    g->announced = true;
    log_notice("privileged", "event=privileges domain=%s xep0356_version=%s perms=%s",
               log_q(g->domain), log_q(g->version), log_q(g->perms));
    if (p->ops.on_granted)
        p->ops.on_granted(p->arg, g->domain);
}

/* Domains with users and no <privilege/> once the wait is over: said once per stream. */
static void say_missing(struct privileged *p)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&p->d->user_domains, &pos, &k, &v)) {
        struct grant *g = grant_new(p, k);
        if (g->advertised || g->missing_said)
            continue;
        g->missing_said = true;
        if (p->ops.on_missing)
            p->ops.on_missing(p->arg, k);
    }
}

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
    struct privileged *p = arg;

    p->waited = true;
    say_missing(p);
}

void priv_users_changed(struct privileged *p)
{
    size_t pos = 0;
    const char *k;
    void *v;

    /* A grant the server advertised before any user of its domain was known (the
     * directory's users come after the stream when Redis has no copy of them). */
    while (strmap_next(&p->d->user_domains, &pos, &k, &v)) {
        struct grant *g = grant_for(p, k);
        if (g && g->advertised && !g->announced)
            announce(p, g);
    }
    if (p->waited)
        say_missing(p);
}

/* Grants kept for domains that have no user. */
static size_t parked(const struct privileged *p)
{
    size_t pos = 0, n = 0;
    const char *k;
    void *v;

    while (strmap_next(&p->grants, &pos, &k, &v)) {
        if (!strmap_get(&p->d->user_domains, k))
            n++;
    }
    return n;
}

/* <perm access='iq'><namespace ns='...' type='get|set|both'/></perm> (v2). Prosody's
 * mod_privilege (prosody-modules of 2023-02, Debian 12) forgets to close each <namespace/>,
 * so a second one arrives inside the first: they are read at any depth (bounded). */
static void read_iq_perm(struct grant *g, xmpp_stanza_t *perm, int depth)
{
    if (depth > 8)
        return;
    for (xmpp_stanza_t *ns = xmpp_stanza_get_children(perm); ns; ns = xmpp_stanza_get_next(ns)) {
        const char *name, *type;
        if (!xmpp_stanza_is_tag(ns) || strcmp(xmpp_stanza_get_name(ns), "namespace") != 0)
            continue;
        read_iq_perm(g, ns, depth + 1);
        name = xmpp_stanza_get_attribute(ns, "ns");
        type = xmpp_stanza_get_attribute(ns, "type");
        if (!name || !type)
            continue;
        for (int i = 0; i < PRIV_NS_MAX; i++) {
            if (strcmp(name, ns_names[i]) != 0)
                continue;
            g->may[i][PRIV_GET] = !strcmp(type, "get") || !strcmp(type, "both");
            g->may[i][PRIV_SET] = !strcmp(type, "set") || !strcmp(type, "both");
        }
    }
}

/* A word the server sent, as logged inside perms="...": itself if it is a short plain
 * word (what XEP-0356 defines), else "?". */
static const char *token(const char *s)
{
    size_t n = 0;

    if (!s)
        return "?";
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= 24 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return "?";
    }
    return n ? s : "?";
}

static const char *perm_name(const struct grant *g, int ns)
{
    const bool *m = g->may[ns];

    return m[PRIV_GET] && m[PRIV_SET] ? "both" : m[PRIV_GET] ? "get" : m[PRIV_SET] ? "set"
                                                                                     : "none";
}

bool priv_on_message(struct privileged *p, xmpp_stanza_t *msg, const char *from_domain)
{
    xmpp_stanza_t *priv = xmpp_stanza_get_child_by_name_and_ns(msg, "privilege", NS_PRIV2);
    struct grant *g;
    char *perms;
    size_t used = 0;
    bool users_there;

    if (!priv)
        priv = xmpp_stanza_get_child_by_name_and_ns(msg, "privilege", NS_PRIV1);
    if (!priv)
        return false;
    /* A domain with no user yet is kept (its users may come from the directory after the
     * stream started), a few at most: anyone's server can send this. */
    users_there = strmap_get(&p->d->user_domains, from_domain) != NULL;
    if (!users_there && !grant_for(p, from_domain) && parked(p) >= PARKED_MAX) {
        log_debug("privileged", "event=privilege_ignored domain=%s reason=\"no users there\"",
                  log_q(from_domain));
        return true;
    }
    g = grant_new(p, from_domain);
    g->advertised = true;
    g->announced = false;
    perms = g->perms;
    perms[0] = '\0';
    memset(g->may, 0, sizeof g->may);
    memset(g->roster, 0, sizeof g->roster);
    str_copy(g->version, sizeof g->version,
             strcmp(xmpp_stanza_get_ns(priv), NS_PRIV2) == 0 ? "2" : "1");
    for (xmpp_stanza_t *perm = xmpp_stanza_get_children(priv); perm;
         perm = xmpp_stanza_get_next(perm)) {
        const char *access, *type;
        if (!xmpp_stanza_is_tag(perm) || strcmp(xmpp_stanza_get_name(perm), "perm") != 0)
            continue;
        access = xmpp_stanza_get_attribute(perm, "access");
        type = xmpp_stanza_get_attribute(perm, "type");
        if (!access)
            continue;
        if (strcmp(access, "iq") == 0) {
            read_iq_perm(g, perm, 0);
            continue;
        }
        if (strcmp(access, "roster") == 0 && type) {
            /* The roster writer's ([component] roster). */
            g->roster[PRIV_GET] = !strcmp(type, "get") || !strcmp(type, "both");
            g->roster[PRIV_SET] = !strcmp(type, "set") || !strcmp(type, "both");
        }
        /* message, presence: offhook uses neither (see the guide). */
        if (used < sizeof g->perms)
            used += (size_t)snprintf(perms + used, sizeof g->perms - used, "%s%s=%s",
                                     used ? "," : "", token(access), token(type));
    }
    for (int i = 0; i < PRIV_NS_MAX; i++) {
        if (used < sizeof g->perms)
            used += (size_t)snprintf(perms + used, sizeof g->perms - used, "%siq:%s=%s",
                                     used ? "," : "", ns_names[i], perm_name(g, i));
    }
    if (users_there)
        announce(p, g);
    else
        log_debug("privileged", "event=privilege_kept domain=%s reason=\"no users there yet\"",
                  log_q(from_domain));
    return true;
}

/* ---- requests and answers --------------------------------------------------------- */

static void pending_free(struct pending *q)
{
    free(q->user);
    free(q);
}

static void refusal_log_round(struct privileged *p);
static bool refusal_holds(struct privileged *p, const char *user);
static void refusal_refused(struct privileged *p, const char *user, const char *condition);
static void refusal_accepted(struct privileged *p, const char *user);
static void pace_pump(struct privileged *p);
static void pace_drop(struct privileged *p);

static void check_idle(struct privileged *p)
{
    void (*fn)(void *) = p->idle_fn;

    if (p->pending.count || p->waiting)
        return;
    refusal_log_round(p); /* the round of requests is over */
    if (fn) {
        p->idle_fn = NULL;
        fn(p->idle_arg);
    }
}

/* Whether a says "nothing there" to a read: a node or vCard not created yet. */
static bool empty_read(const struct pending *q, const struct priv_answer *a)
{
    return q->get && a->result == PRIV_ERROR && strcmp(a->condition, "item-not-found") == 0;
}

/* Ends q (already out of the map) with a: its callback, then q freed. */
static void finish(struct privileged *p, struct pending *q, const struct priv_answer *a)
{
    static const char *const results[] = {"ok", "error", "timeout", "lost"};

    metric_inc(m_requests, empty_read(q, a) ? "ok" : results[a->result]);
    q->done(q->arg, q->user, a);
    pending_free(q);
}

/* Ends every pending request for which pred holds, each with result r. Collected first:
 * a callback may send new requests into the map. */
static void finish_all(struct privileged *p, enum priv_result r, int64_t before_ms)
{
    struct pending **all = xmalloc((p->pending.count + 1) * sizeof *all);
    size_t n = 0, pos = 0;
    const char *k;
    void *v;
    struct priv_answer a = {.result = r};

    while (strmap_next(&p->pending, &pos, &k, &v)) {
        struct pending *q = v;
        if (before_ms == 0 || q->deadline_ms <= before_ms)
            all[n++] = q;
    }
    for (size_t i = 0; i < n; i++)
        strmap_del(&p->pending, all[i]->id);
    for (size_t i = 0; i < n; i++) {
        if (r == PRIV_TIMEOUT)
            log_warn("privileged", "event=request_timeout user=%s after_s=%d",
                     log_q(all[i]->user), REQUEST_TIMEOUT_S);
        finish(p, all[i], &a);
    }
    free(all);
    if (r == PRIV_LOST)
        pace_drop(p); /* the stream is gone: nothing waiting will be sent on it */
    else
        pace_pump(p);
    check_idle(p);
}

/* Armed only while requests are pending: an idle component sleeps. */
static void arm_sweep(struct privileged *p)
{
    struct timeval tv = {.tv_sec = SWEEP_S};

    if (p->pending.count && !evtimer_pending(p->sweep, NULL))
        evtimer_add(p->sweep, &tv);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    struct privileged *p = arg;

    if (p->pending.count)
        finish_all(p, PRIV_TIMEOUT, clock_mono_ms());
    arm_sweep(p);
}

/* Sends the request now (the checks of request() passed): wrapped in <privileged_iq/>
 * (the IQ permission) or as the IQ's own child (the roster permission). Takes payload. */
static int send_now(struct privileged *p, const char *user, enum priv_type type,
                    xmpp_stanza_t *payload, bool roster, priv_done_fn done, void *arg)
{
    xmpp_ctx_t *ctx = p->out->ctx;
    const char *t = type == PRIV_GET ? "get" : "set";
    struct pending *q = NULL;
    xmpp_stanza_t *outer = NULL, *priv, *inner;
    char inner_id[64];
    int rc = -1;

    if (!stanza_out_up(p->out) || p->pending.count >= PENDING_MAX)
        goto out;
    q = xcalloc(1, sizeof *q);
    snprintf(q->id, sizeof q->id, "%s-%lu", p->id_prefix, ++p->next_id);
    q->user = xstrdup(user);
    q->domain = strchr(q->user, '@') ? strchr(q->user, '@') + 1 : q->user;
    q->get = type == PRIV_GET;
    q->roster = roster;
    q->deadline_ms = clock_mono_ms() + REQUEST_TIMEOUT_S * 1000;
    q->done = done;
    q->arg = arg;
    outer = xmpp_iq_new(ctx, t, q->id);
    xmpp_stanza_set_from(outer, p->d->cfg->xmpp_domain);
    xmpp_stanza_set_to(outer, user);
    if (roster) {
        xmpp_stanza_add_child_ex(outer, payload, 0);
    } else {
        snprintf(inner_id, sizeof inner_id, "%s-in", q->id);
        priv = stanza_child(ctx, outer, "privileged_iq", NS_PRIV2);
        /* Prosody's mod_privilege wants the wrapped IQ explicitly in jabber:client, with
         * an id and the same type as the wrapper; its from, if any, must be the user. */
        inner = xmpp_iq_new(ctx, t, inner_id);
        xmpp_stanza_set_ns(inner, NS_CLIENT);
        xmpp_stanza_add_child_ex(priv, inner, 0);
        xmpp_stanza_add_child_ex(inner, payload, 0);
    }
    payload = NULL;
    if (stanza_send(p->out, outer, "iq_request") < 0)
        goto out;
    metric_inc(m_requests, "sent");
    strmap_put(&p->pending, q->id, q);
    q = NULL;
    arm_sweep(p);
    rc = 0;
out:
    if (payload)
        xmpp_stanza_release(payload);
    if (outer)
        xmpp_stanza_release(outer);
    if (q)
        pending_free(q);
    return rc;
}

/* ---- refusals ----------------------------------------------------------------------- */

/* Conditions that say the account will not be acted in until something changes there;
 * the others (a busy or broken server) are tried again as any error. */
static bool refusal_lasting(const char *condition)
{
    static const char *const passing[] = {"internal-server-error", "resource-constraint",
                                          "remote-server-timeout", "undefined-condition",
                                          NULL};

    for (const char *const *c = passing; *c; c++) {
        if (strcmp(*c, condition) == 0)
            return false;
    }
    return true;
}

/* The refusals of a round (everything requested until all was answered, or at most
 * REFUSED_LOG_MAX_S): one line, with their number and a few of them. */
static void refusal_log_round(struct privileged *p)
{
    if (!p->round_users)
        return;
    evtimer_del(p->refused_log);
    log_warn("privileged", "event=publish_refused users=%d condition=%s examples=%s "
                           "retry_in_s=%d note=\"the server refused to act in these users' "
                           "accounts (no account there?): left alone, asked again later or "
                           "when the user comes online; phone contacts are not affected\"",
             p->round_users, log_q(p->round_condition), log_q(p->round_examples),
             REFUSED_HOLD_MIN_S);
    p->round_users = 0;
    p->round_examples[0] = '\0';
}

static void refusal_on_log(evutil_socket_t fd, short what, void *arg)
{
    refusal_log_round(arg);
}

/* Holds that ended: their users are published again (ops.on_due), the answer deciding
 * whether they are left alone longer. */
static void refusal_on_check(evutil_socket_t fd, short what, void *arg)
{
    struct privileged *p = arg;
    size_t pos = 0;
    const char *k;
    void *v;
    int64_t now = clock_mono_ms();

    while (strmap_next(&p->refused, &pos, &k, &v)) {
        struct refusal *r = v;
        if (now < r->until_ms || !p->ops.on_due)
            continue;
        p->ops.on_due(p->arg, r->user);
        /* Until its answer comes: not asked again at the next check. */
        r->until_ms = now + (int64_t)r->hold_s * 1000;
    }
}

/* True while user is left alone. */
static bool refusal_holds(struct privileged *p, const char *user)
{
    struct refusal *r = p->refused.count ? strmap_get(&p->refused, user) : NULL;

    return r && clock_mono_ms() < r->until_ms;
}

/* user's server refused to act in its account: left alone for its hold (doubled at each
 * new round of refusals), counted in this round's log line. */
static void refusal_refused(struct privileged *p, const char *user, const char *condition)
{
    struct refusal *r = strmap_get(&p->refused, user);
    struct timeval tv = {.tv_sec = REFUSED_LOG_MAX_S};

    if (!p->round_users) {
        if (++p->round == 0)
            p->round = 1;
        str_copy(p->round_condition, sizeof p->round_condition, condition);
        evtimer_add(p->refused_log, &tv);
    }
    if (!r) {
        r = xcalloc(1, sizeof *r);
        r->user = xstrdup(user);
        strmap_put(&p->refused, r->user, r);
    }
    if (r->round == p->round)
        return; /* another request of the same round */
    r->round = p->round;
    r->hold_s = r->hold_s ? r->hold_s * 2 : REFUSED_HOLD_MIN_S;
    if (r->hold_s > REFUSED_HOLD_MAX_S)
        r->hold_s = REFUSED_HOLD_MAX_S;
    r->until_ms = clock_mono_ms() + (int64_t)r->hold_s * 1000;
    log_debug("privileged", "event=refused user=%s condition=%s hold_s=%ld", log_q(user),
              log_q(condition), r->hold_s);
    if (p->round_users++ < REFUSED_EXAMPLES) {
        size_t used = strlen(p->round_examples);
        snprintf(p->round_examples + used, sizeof p->round_examples - used, "%s%.63s",
                 used ? "," : "", user);
    }
}

static void refusal_clear(struct privileged *p, const char *user)
{
    struct refusal *r = p->refused.count ? strmap_del(&p->refused, user) : NULL;

    if (r) {
        free(r->user);
        free(r);
    }
}

static void refusal_accepted(struct privileged *p, const char *user)
{
    refusal_clear(p, user);
}

bool priv_account_seen(struct privileged *p, const char *bare)
{
    if (!p->refused.count || !strmap_get(&p->refused, bare))
        return false;
    log_info("privileged", "event=refusal_over user=%s reason=\"the user is online\"",
             log_q(bare));
    refusal_clear(p, bare);
    return true;
}

/* ---- pacing ------------------------------------------------------------------------- */

static void waiting_free(struct waiting *w)
{
    free(w->user);
    free(w->payload);
    free(w);
}

/* Queues a request for its turn. Takes payload. */
static int pace_wait(struct privileged *p, const char *user, enum priv_type type,
                     xmpp_stanza_t *payload, bool roster, priv_done_fn done, void *arg)
{
    struct waiting *w;
    char *text = NULL;
    size_t len = 0;
    int rc = xmpp_stanza_to_text(payload, &text, &len);

    xmpp_stanza_release(payload);
    if (rc != XMPP_EOK || p->waiting >= WAITING_MAX) {
        if (text)
            xmpp_free(p->out->ctx, text);
        return -1;
    }
    w = xcalloc(1, sizeof *w);
    w->user = xstrdup(user);
    w->type = type;
    w->roster = roster;
    w->payload = xstrdup(text);
    xmpp_free(p->out->ctx, text);
    w->done = done;
    w->arg = arg;
    *p->wait_tail[type] = w;
    p->wait_tail[type] = &w->next;
    p->waiting++;
    return 0;
}

static struct waiting *pace_pop(struct privileged *p)
{
    static const enum priv_type order[] = {PRIV_SET, PRIV_GET};

    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        enum priv_type t = order[i];
        struct waiting *w = p->wait_head[t];
        if (!w)
            continue;
        p->wait_head[t] = w->next;
        if (!p->wait_head[t])
            p->wait_tail[t] = &p->wait_head[t];
        p->waiting--;
        return w;
    }
    return NULL;
}

/* Ends a waiting request that will not be sent: its callback says PRIV_LOST. */
static void pace_lost(struct privileged *p, struct waiting *w)
{
    struct priv_answer a = {.result = PRIV_LOST};

    metric_inc(m_requests, "lost");
    w->done(w->arg, w->user, &a);
    waiting_free(w);
}

/* Sends what waits while the window has room. A callback run from here (a request that
 * can no longer be sent) may queue new ones: the loop takes them too. */
static void pace_pump(struct privileged *p)
{
    struct waiting *w;

    if (p->pumping)
        return;
    p->pumping = true;
    while (p->pending.count < PACE_WINDOW && (w = pace_pop(p))) {
        xmpp_stanza_t *payload = xmpp_stanza_new_from_string(p->out->ctx, w->payload);
        if (!payload || send_now(p, w->user, w->type, payload, w->roster, w->done, w->arg) < 0)
            pace_lost(p, w);
        else
            waiting_free(w);
    }
    p->pumping = false;
}

/* Every waiting request ends PRIV_LOST (their callbacks may queue others: ended too). */
static void pace_drop(struct privileged *p)
{
    struct waiting *w;

    while ((w = pace_pop(p)))
        pace_lost(p, w);
}

void priv_drop_waiting(struct privileged *p)
{
    pace_drop(p);
    check_idle(p);
}

/* The checks every request passes (permission granted, stream up, the account not left
 * alone), then sent now or queued for its turn. Takes payload. */
static int request(struct privileged *p, const char *user, enum priv_type type,
                   xmpp_stanza_t *payload, bool roster, priv_done_fn done, void *arg)
{
    const char *ns = xmpp_stanza_get_ns(payload);
    struct jid j;
    int nsi = 0, rc;
    bool may = jid_parse(user, &j) == 0;

    if (may && roster) {
        may = ns && strcmp(ns, NS_ROSTER) == 0 && priv_may_roster(p, j.domain, type);
    } else if (may) {
        for (nsi = 0; nsi < PRIV_NS_MAX && !(ns && strcmp(ns, ns_names[nsi]) == 0); nsi++)
            ;
        may = nsi < PRIV_NS_MAX && priv_may(p, j.domain, nsi, type);
    }
    /* The roster writer keeps its own per-user backoff: a refused PEP write does not hold
     * it, nor does a refused roster write hold PEP (its answer is not wrapped). */
    if (!may || !stanza_out_up(p->out) || (!roster && refusal_holds(p, user))) {
        xmpp_stanza_release(payload);
        return -1;
    }
    if (p->pending.count < PACE_WINDOW && !p->waiting)
        return send_now(p, user, type, payload, roster, done, arg);
    rc = pace_wait(p, user, type, payload, roster, done, arg);
    pace_pump(p);
    return rc;
}

int priv_request(struct privileged *p, const char *user, enum priv_type type,
                 xmpp_stanza_t *payload, priv_done_fn done, void *arg)
{
    return request(p, user, type, payload, false, done, arg);
}

int priv_roster_request(struct privileged *p, const char *user, enum priv_type type,
                        xmpp_stanza_t *payload, priv_done_fn done, void *arg)
{
    return request(p, user, type, payload, true, done, arg);
}

unsigned priv_pending(const struct privileged *p)
{
    return (unsigned)(p->pending.count + p->waiting);
}

void priv_when_idle(struct privileged *p, void (*fn)(void *arg), void *arg)
{
    p->idle_fn = fn;
    p->idle_arg = arg;
    check_idle(p);
}

/* Counted always, logged as a peer's doing: a few lines, then one per 10 s, each with how
 * many were held back (ratelimit_peer_log). */
static void ignored(struct privileged *p, const char *reason, const char *from)
{
    char bare[JID_MAX + 1];
    uint64_t held = 0;

    metric_inc(m_ignored, reason);
    if (!ratelimit_gate_pass(&ratelimit_peer_log, &p->ignored_log, clock_mono_ms(), &held))
        return;
    if (!from || jid_to_bare(from, bare, sizeof bare) < 0)
        str_copy(bare, sizeof bare, "?");
    log_notice("privileged", "event=answer_ignored reason=%s from=%s held_back=%llu",
               log_q(reason), log_q(bare), (unsigned long long)held);
}

/* Whether from is q's user (any resource) or the user's server. */
static bool from_expected(const struct pending *q, const char *from)
{
    struct jid j;
    char bare[JID_MAX + 1];

    if (!from || jid_parse(from, &j) < 0 || jid_format_bare(&j, bare, sizeof bare) < 0)
        return false;
    if (!j.local[0])
        return !j.resource[0] && strcmp(j.domain, q->domain) == 0;
    return strcmp(bare, q->user) == 0;
}

/* The error's defined condition and an application condition, if any. */
static void read_error(xmpp_stanza_t *iq, struct priv_answer *a)
{
    xmpp_stanza_t *err = xmpp_stanza_get_child_by_name(iq, "error");

    a->condition = "undefined-condition";
    a->app_condition = NULL;
    for (xmpp_stanza_t *c = err ? xmpp_stanza_get_children(err) : NULL; c;
         c = xmpp_stanza_get_next(c)) {
        const char *ns = xmpp_stanza_get_ns(c), *name = xmpp_stanza_get_name(c);
        if (!xmpp_stanza_is_tag(c) || strcmp(name, "text") == 0)
            continue;
        if (ns && strcmp(ns, NS_STANZAS) == 0)
            a->condition = name;
        else if (!a->app_condition)
            a->app_condition = name;
    }
}

bool priv_on_iq(struct privileged *p, xmpp_stanza_t *iq)
{
    const char *id = xmpp_stanza_get_id(iq), *type = xmpp_stanza_get_type(iq);
    const char *from = xmpp_stanza_get_from(iq);
    struct pending *q = id ? strmap_get(&p->pending, id) : NULL;
    struct priv_answer a = {.result = PRIV_OK};
    xmpp_stanza_t *inner = NULL;

    if (!q) {
        ignored(p, "unknown_id", from);
        return false;
    }
    if (!from_expected(q, from)) {
        /* The real answer may still come: the request stays pending. */
        ignored(p, "wrong_sender", from);
        return false;
    }
    strmap_del(&p->pending, id);
    if (type && strcmp(type, "result") == 0) {
        /* The answer of the user's server is forwarded inside <privilege><forwarded>. */
        xmpp_stanza_t *priv = xmpp_stanza_get_child_by_name(iq, "privilege");
        xmpp_stanza_t *fwd = priv ? xmpp_stanza_get_child_by_ns(priv, NS_FORWARD) : NULL;
        inner = fwd ? xmpp_stanza_get_child_by_name(fwd, "iq") : NULL;
    }
    if (!type || strcmp(type, "result") != 0 ||
        (inner && xmpp_stanza_get_type(inner) && !strcmp(xmpp_stanza_get_type(inner), "error"))) {
        a.result = PRIV_ERROR;
        read_error(inner ? inner : iq, &a);
        if (!empty_read(q, &a))
            metric_inc(m_priv_errors, condition_label(a.condition));
        /* The privileged IQ itself refused (not the wrapped one): the server will not act
         * in this account at all (Prosody: forbidden, no such user). */
        if (!inner && !q->roster && refusal_lasting(a.condition)) {
            a.refused = true;
            refusal_refused(p, q->user, a.condition);
        }
    } else if (inner) {
        for (a.payload = xmpp_stanza_get_children(inner); a.payload && !xmpp_stanza_is_tag(a.payload);
             a.payload = xmpp_stanza_get_next(a.payload))
            ;
    }
    if (a.result == PRIV_OK || inner)
        refusal_accepted(p, q->user); /* the server acted in the account: it exists */
    finish(p, q, &a);
    pace_pump(p);
    check_idle(p);
    return true;
}

/* ---- the stream --------------------------------------------------------------------- */

void priv_connected(struct privileged *p)
{
    struct timeval tv = {.tv_sec = GRANT_WAIT_S};
    size_t pos = 0;
    const char *k;
    void *v;

    /* A new stream: the server advertises its grants again. */
    while (strmap_next(&p->grants, &pos, &k, &v)) {
        struct grant *g = v;
        g->advertised = g->announced = g->missing_said = false;
        memset(g->may, 0, sizeof g->may);
        memset(g->roster, 0, sizeof g->roster);
    }
    p->waited = false;
    evtimer_add(p->wait, &tv);
}

void priv_link_down(struct privileged *p)
{
    evtimer_del(p->wait);
    p->waited = false;
    if (p->pending.count || p->waiting)
        finish_all(p, PRIV_LOST, 0);
}

struct privileged *priv_new(struct event_base *base, const struct users *d,
                            const struct stanza_out *out, const struct privileged_ops *ops,
                            void *arg)
{
    struct privileged *p = xcalloc(1, sizeof *p);
    unsigned long long r;

    p->d = d;
    p->out = out;
    p->ops = *ops;
    p->arg = arg;
    strmap_init(&p->grants);
    strmap_init(&p->pending);
    /* Unguessable ids: an answer cannot be forged for a request one has not seen. */
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (unsigned long long)clock_wall_us() ^ ((unsigned long long)getpid() << 32);
    snprintf(p->id_prefix, sizeof p->id_prefix, "oh%016llx", r);
    p->wait = evtimer_new(base, on_wait, p);
    p->sweep = evtimer_new(base, on_sweep, p);
    for (int t = 0; t < 2; t++)
        p->wait_tail[t] = &p->wait_head[t];
    strmap_init(&p->refused);
    p->refused_log = evtimer_new(base, refusal_on_log, p);
    p->refused_check = event_new(base, -1, EV_PERSIST, refusal_on_check, p);
    {
        struct timeval tv = {.tv_sec = REFUSED_CHECK_S};
        evtimer_add(p->refused_check, &tv);
    }
    return p;
}

void priv_free(struct privileged *p)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!p)
        return;
    while (strmap_next(&p->grants, &pos, &k, &v)) {
        struct grant *g = v;
        free(g->domain);
        free(g);
    }
    strmap_free(&p->grants);
    for (pos = 0; strmap_next(&p->pending, &pos, &k, &v);)
        pending_free(v);
    strmap_free(&p->pending);
    for (int t = 0; t < 2; t++) {
        while (p->wait_head[t]) {
            struct waiting *w = p->wait_head[t];
            p->wait_head[t] = w->next;
            waiting_free(w);
        }
    }
    for (pos = 0; strmap_next(&p->refused, &pos, &k, &v);) {
        free(((struct refusal *)v)->user);
        free(v);
    }
    strmap_free(&p->refused);
    event_free(p->refused_log);
    event_free(p->refused_check);
    event_free(p->wait);
    event_free(p->sweep);
    free(p);
}
