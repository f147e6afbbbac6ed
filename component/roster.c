/* The roster writer (see roster.h). Work is kept per user: a whole roster to check, or
 * some of its items (rosterplan_diff's pairs), or items the user unsubscribed from. A
 * user's work starts with a read of its records (only the items at stake, or all of them
 * for a whole roster), which becomes changes, each written in three steps:
 *
 *     record "~<item>" (intent)  ->  write to the server  ->  record "+<item>" (or forget)
 *
 * so that a change whose outcome was lost (a crash, a dropped stream) is still known to be
 * ours and is written again, and an item never recorded is never ours. The records'
 * values: "+<signature>" an item we wrote (rosterplan_sig), "~<signature>" / "~-" a write
 * / removal in progress, "-own" an item the user had before us, "-declined" one of ours
 * the user removed.
 *
 * Pacing: at most [component] roster_rate writes per second (the one token bucket,
 * ratelimit.h), at most WINDOW in flight, at most MAX_LOADS record reads out and
 * QUEUE_HIGH changes planned ahead; a user's next batch is planned only once its previous
 * one is answered, so one item never has two writes in flight. */
#include "roster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "strutil.h"

#define WINDOW 32             /* writes in flight at most */
#define MAX_LOADS 16          /* record reads out at most */
#define QUEUE_HIGH 4096       /* changes planned and waiting: planning pauses above */
#define RETRY_MIN_MS 10000    /* a user whose write failed waits this, doubling... */
#define RETRY_MAX_MS 3600000  /* ...up to an hour */
#define REFUSE_AFTER 3        /* writes failing in a row, none ever through: server cannot */

#define REC_OWN "-own"
#define REC_DECLINED "-declined"
#define REC_REMOVING "~-"

enum op_kind { OP_ADD, OP_UPDATE, OP_REMOVE };
static const char *const op_names[] = {"add", "update", "remove", NULL};

enum op_stage { ST_QUEUED, ST_INTENT, ST_SENT };

/* One user's pending work. */
struct rwork {
    char *user;               /* owned; the key in roster.work */
    bool full;                /* the whole roster */
    struct strmap pairs;      /* contacts whose item to check (owned keys) */
    struct strmap declines;   /* contacts the user unsubscribed from (owned keys) */
    int busy;                 /* reads and changes out for this user */
    bool queued;              /* in roster.queue */
    int failures;             /* failed writes in a row */
    int64_t retry_at;         /* monotonic ms: not planned before */
    struct rwork *next;       /* in roster.queue */
};

/* A read of one user's records, out to the store. */
struct rload {
    char key[24];             /* the cookie, as the key in roster.loads */
    char *user;
    bool full;
    char **pairs;
    size_t npairs;
    char **declines;
    size_t ndeclines;
};

/* One change of one item. */
struct rop {
    struct roster *r;
    char key[24];             /* the cookie, as the key in roster.ops (once out) */
    unsigned long cookie;
    char *user, *contact;     /* owned */
    enum op_kind kind;
    enum op_stage stage;
    char *value;              /* the record once written: "+<sig>", or NULL (forget) */
    char name[ROSTER_NAME_MAX];
    char *groups[CFG_MAX_GROUPS]; /* owned */
    int ngroups;
    bool via_api;
    struct rop *next;         /* in roster.opq */
};

/* What one server domain lets the writer do, in this stream. */
struct rdomain {
    char *name;               /* owned; the key in roster.domains */
    bool refused;             /* writes fail there in this stream: off until the next */
    bool wrote;               /* a write went through there in this stream */
    int fails_in_row;
    bool explained;           /* why nothing is written there, said in this stream */
};

struct roster {
    struct event_base *base;
    struct users *d;
    const struct stanza_out *out;
    struct privileged *priv;
    struct roster_io io;
    struct roster_ops ops;
    void *arg;
    struct rosterplan plan;   /* of d->cfg (rebuilt by roster_apply) */
    bool ready;               /* watchers loaded: ownership can be told */
    bool started;             /* the first pass was queued */
    bool listing;             /* io.list out */
    bool store_up;
    bool stopping;            /* a clean stop: nothing new is written */
    struct strmap work;       /* user -> struct rwork* */
    struct rwork *qhead, **qtail;
    struct strmap loads;      /* cookie -> struct rload* */
    struct rop *ophead, **optail;
    size_t nqueued_ops;
    struct strmap ops_out;    /* cookie -> struct rop* (intent or write out) */
    struct strmap domains;    /* server domain -> struct rdomain* */
    struct strmap capped;     /* users over roster_max_items (owned keys) */
    size_t over_limit;
    size_t over_limit_said;   /* over_limit when it was last logged */
    bool first_pass_said;     /* the first pass's end was logged */
    unsigned long next_cookie;
    struct ratelimit limit;
    struct ratelimit_bucket bucket;
    struct ratelimit_gate fail_gate;
    struct event *kick;       /* zero-delay: run step() from the loop */
    struct event *rate_timer; /* the next token of roster_rate */
    struct event *retry_timer; /* the next parked user whose wait is over */
    int64_t retry_at;         /* when retry_timer fires (monotonic ms), 0: not armed */
    long retry_min_ms;        /* a failed user's first wait (RETRY_MIN_MS) */
    size_t pass_changes;      /* changes since the queue was last empty */
    int64_t pass_started_ms;
};

static struct metric *m_writes, *m_pending, *m_over, *m_domains, *m_errors;

/* offhook_roster_write_errors_total's reasons, declared: a server cannot mint more. */
static const char *const reasons[] = {
    "bad-request",           "conflict",          "feature-not-implemented", "forbidden",
    "internal-server-error", "item-not-found",    "not-allowed",             "not-authorized",
    "policy-violation",      "resource-constraint", "service-unavailable",
    "undefined-condition",   "api",               "timeout",                 "other",
    NULL};

static const char *reason_label(const char *why)
{
    for (const char *const *r = reasons; *r; r++) {
        if (strcmp(*r, why) == 0)
            return *r;
    }
    return strncmp(why, "api", 3) == 0 ? "api" : "other";
}

void roster_register_metrics(void)
{
    m_writes = metric_new(METRIC_COUNTER, "offhook_roster_writes_total",
                          "Roster items the component wrote into users' rosters (XEP-0356 "
                          "or roster_api), by change and outcome.",
                          "change", op_names);
    m_errors = metric_new(METRIC_COUNTER, "offhook_roster_write_errors_total",
                          "Roster writes that failed, by reason (the stanza error condition, "
                          "api, timeout).",
                          "reason", reasons);
    m_pending = metric_new(METRIC_GAUGE, "offhook_roster_pending",
                           "Roster changes waiting or in flight, and users whose records are "
                           "being read (0: every roster is as offhook wants it).",
                           NULL, NULL);
    m_over = metric_new(METRIC_GAUGE, "offhook_roster_users_over_limit",
                        "Users whose roster would hold more phone contacts than [component] "
                        "roster_max_items: they are given no new ones.",
                        NULL, NULL);
    m_domains = metric_new(METRIC_GAUGE, "offhook_roster_domains",
                           "Users' domains by how their rosters are written: xep0356, api, or "
                           "none (no grant, or the server fails the writes).",
                           "via", (const char *const[]){"xep0356", "api", "none", NULL});
}

static void kick(struct roster *r);

/* ---- small helpers ---------------------------------------------------------------------- */

static const char *domain_of(const char *jid)
{
    const char *at = strchr(jid, '@');

    return at ? at + 1 : jid;
}

static void set_add(struct strmap *m, const char *s)
{
    if (!strmap_get(m, s)) {
        char *k = xstrdup(s);
        strmap_put(m, k, k);
    }
}

static char **set_take(struct strmap *m, size_t *n)
{
    char **out = xcalloc(m->count + 1, sizeof *out);
    size_t pos = 0, i = 0;
    const char *k;
    void *v;

    while (strmap_next(m, &pos, &k, &v))
        out[i++] = v; /* the owned key, handed over */
    strmap_free(m);
    strmap_init(m);
    *n = i;
    return out;
}

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static struct rdomain *domain_get(struct roster *r, const char *name, bool create)
{
    struct rdomain *dm = strmap_get(&r->domains, name);

    if (!dm && create) {
        dm = xcalloc(1, sizeof *dm);
        dm->name = xstrdup(name);
        strmap_put(&r->domains, dm->name, dm);
    }
    return dm;
}

/* How user's roster is written now: "api", "xep0356", or NULL (not now). */
static const char *via(const struct roster *r, const char *user)
{
    const char *domain = domain_of(user);
    const struct rdomain *dm;

    if (r->io.api_write)
        return "api";
    dm = strmap_get(&r->domains, domain);
    if (stanza_out_up(r->out) && priv_may_roster(r->priv, domain, PRIV_SET) &&
        !(dm && dm->refused))
        return "xep0356";
    return NULL;
}

static void update_gauges(struct roster *r)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int n_xep = 0, n_api = 0, n_none = 0;

    metric_set(m_pending, NULL, (double)(r->nqueued_ops + r->ops_out.count + r->loads.count +
                                         r->work.count));
    metric_set(m_over, NULL, (double)r->over_limit);
    while (strmap_next(&r->d->user_domains, &pos, &k, &v)) {
        char probe[JID_MAX + 1];
        const char *w;
        snprintf(probe, sizeof probe, "x@%s", k);
        w = via(r, probe);
        if (!w)
            n_none++;
        else if (strcmp(w, "api") == 0)
            n_api++;
        else
            n_xep++;
    }
    metric_set(m_domains, "xep0356", n_xep);
    metric_set(m_domains, "api", n_api);
    metric_set(m_domains, "none", n_none);
}

/* ---- work --------------------------------------------------------------------------- */

static struct rwork *work_get(struct roster *r, const char *user)
{
    struct rwork *w = strmap_get(&r->work, user);

    if (!w) {
        w = xcalloc(1, sizeof *w);
        w->user = xstrdup(user);
        strmap_init(&w->pairs);
        strmap_init(&w->declines);
        strmap_put(&r->work, w->user, w);
    }
    return w;
}

static bool has_work(const struct rwork *w)
{
    return w->full || w->pairs.count || w->declines.count;
}

static void work_free(struct rwork *w)
{
    strmap_clear_owned(&w->pairs);
    strmap_free(&w->pairs);
    strmap_clear_owned(&w->declines);
    strmap_free(&w->declines);
    free(w->user);
    free(w);
}

static void enqueue(struct roster *r, struct rwork *w)
{
    if (w->queued || w->busy || !has_work(w))
        return;
    w->queued = true;
    w->next = NULL;
    *r->qtail = w;
    r->qtail = &w->next;
}

/* Done with w for now: freed if nothing is left, queued again if something is. */
static void settle(struct roster *r, struct rwork *w)
{
    if (w->busy || w->queued)
        return;
    if (!has_work(w)) {
        strmap_del(&r->work, w->user);
        work_free(w);
        return;
    }
    enqueue(r, w);
}

/* contact NULL: the whole roster. */
static void mark(struct roster *r, const char *user, const char *contact)
{
    struct rwork *w;

    if (!r->nqueued_ops && !r->ops_out.count && !r->loads.count && !r->work.count)
        r->pass_started_ms = clock_mono_ms(); /* a pass begins */
    w = work_get(r, user);

    if (contact)
        set_add(&w->pairs, contact);
    else
        w->full = true;
    enqueue(r, w);
}

static void mark_fn(void *arg, const char *user, const char *contact)
{
    mark(arg, user, contact);
}

/* ---- the plan ----------------------------------------------------------------------- */

static bool plan_allowed(void *arg, const char *user)
{
    struct roster *r = arg;

    return users_requester_allowed(r->d, user);
}

/* Counts and says who is over roster_max_items, once per configuration. */
static void check_limits(struct roster *r)
{
    const struct offhook_config *cfg = r->d->cfg;
    const char *example = NULL;

    r->over_limit = 0;
    for (size_t i = 0; cfg->roster_mode != CFG_ROSTER_NONE && i < cfg->nusers; i++) {
        if (rosterplan_over_limit(&r->plan, &cfg->users[i])) {
            r->over_limit++;
            if (!example)
                example = cfg->users[i].jid;
        }
    }
    if (r->over_limit == r->over_limit_said)
        return;
    r->over_limit_said = r->over_limit;
    if (!r->over_limit) {
        log_notice("roster", "event=roster_within_limit max=%ld", cfg->roster_max_items);
        return;
    }
    if (cfg->roster_mode == CFG_ROSTER_EVERYONE)
        log_err("roster", "event=roster_over_limit users=%zu example=%s max=%ld reason=\"roster = "
                          "everyone would give each user of the domain every other user's phone "
                          "contact, more than [component] roster_max_items\" action=\"no new "
                          "items for them: use roster = groups, or raise roster_max_items\"",
                r->over_limit, example, cfg->roster_max_items);
    else
        log_warn("roster", "event=roster_over_limit users=%zu example=%s max=%ld reason=\"their "
                           "groups hold more colleagues than [component] roster_max_items\" "
                           "action=\"no new items for them\"",
                 r->over_limit, example, cfg->roster_max_items);
}

/* ---- the first pass ----------------------------------------------------------------- */

static void start(struct roster *r)
{
    if (r->started || !r->ready || !r->store_up || r->listing)
        return;
    if (r->io.list(r->io.arg) == 0)
        r->listing = true;
}

void roster_known(struct roster *r, bool ok, const char *const *users, size_t n)
{
    const struct offhook_config *cfg = r->d->cfg;

    r->listing = false;
    if (!ok) {
        log_warn("roster", "event=roster_store_unreadable action=\"first pass when Redis is back\"");
        return;
    }
    r->started = true;
    r->pass_started_ms = clock_mono_ms();
    /* Everyone with a record (some may have left while offhook was stopped), and, unless
     * no roster is provisioned, every user. */
    for (size_t i = 0; i < n; i++)
        mark(r, users[i], NULL);
    if (cfg->roster_mode != CFG_ROSTER_NONE)
        for (size_t i = 0; i < cfg->nusers; i++)
            mark(r, cfg->users[i].jid, NULL);
    log_notice("roster", "event=roster_pass mode=%s users=%zu with_records=%zu",
               cfg->component_roster, cfg->nusers, n);
    kick(r);
}

void roster_ready(struct roster *r)
{
    if (r->ready)
        return;
    r->ready = true;
    check_limits(r);
    start(r);
    update_gauges(r);
}

void roster_apply(struct roster *r, const struct offhook_config *next)
{
    struct rosterplan plan;
    size_t pos = 0;
    const char *k;
    void *v;

    rosterplan_build(&plan, next, plan_allowed, r);
    if (r->started) {
        rosterplan_diff(&r->plan, &plan, mark_fn, r);
        /* A roster that was over the limit may have room now. */
        while (strmap_next(&r->capped, &pos, &k, &v))
            mark(r, k, NULL);
    }
    strmap_clear_owned(&r->capped);
    rosterplan_free(&r->plan);
    r->plan = plan;
    r->limit.rate = (double)next->roster_rate;
    r->limit.burst = r->limit.rate / 10 > 1 ? r->limit.rate / 10 : 1;
    if (r->ready)
        check_limits(r);
    kick(r);
}

void roster_resync(struct roster *r)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!r->started)
        return;
    while (strmap_next(&r->d->by_jid, &pos, &k, &v))
        mark(r, k, NULL);
    r->started = false; /* lists everyone with a record again */
    start(r);
    kick(r);
}

/* ---- reads: records -> changes ------------------------------------------------------------ */

static void op_free(struct rop *op)
{
    free(op->user);
    free(op->contact);
    free(op->value);
    for (int i = 0; i < op->ngroups; i++)
        free(op->groups[i]);
    free(op);
}

static void queue_op(struct roster *r, const char *user, const char *contact, enum op_kind kind,
                     const struct rosterplan_item *it)
{
    struct rop *op = xcalloc(1, sizeof *op);

    op->r = r;
    op->user = xstrdup(user);
    op->contact = xstrdup(contact);
    op->kind = kind;
    if (it) {
        char sig[ROSTER_SIG_MAX];
        rosterplan_sig(it, sig, sizeof sig);
        op->value = xstrdup(sig);
        str_copy(op->name, sizeof op->name, it->name);
        for (int i = 0; i < it->ngroups; i++)
            op->groups[op->ngroups++] = xstrdup(it->groups[i]);
    }
    *r->optail = op;
    r->optail = &op->next;
    r->nqueued_ops++;
}

/* What a user's planning found, for its log line. */
struct tally {
    int add, update, remove, own, declined, capped, forgotten;
};

/* Whether watcher already watches v's contact through a subscription of their own. */
static bool watches(const struct cuser *v, const char *user)
{
    return v && strmap_get(&v->watchers, user) != NULL;
}

static void save(struct roster *r, const char *user, const char *contact, const char *value)
{
    (void)r->io.save(r->io.arg, 0, user, contact, value);
}

/* One item of user's roster: what it should be (it, or NULL: absent) against its record
 * (rec, or NULL: none). */
static void decide(struct roster *r, const char *user, const struct cfg_user *ucfg,
                   const char *contact, const struct rosterplan_item *it, const char *rec,
                   struct tally *t)
{
    struct cuser *v = users_by_contact(r->d, contact);

    if (!rec) {
        if (!it)
            return;
        if (watches(v, user)) {
            /* The user subscribed to it on their own before: their item, not ours. */
            save(r, user, contact, REC_OWN);
            t->own++;
            return;
        }
        if (ucfg && rosterplan_over_limit(&r->plan, ucfg)) {
            set_add(&r->capped, user);
            t->capped++;
            return;
        }
        queue_op(r, user, contact, OP_ADD, it);
        t->add++;
        return;
    }
    if (rec[0] == '-') {
        /* The user's: left alone, forgotten once the contact is nobody's. */
        if (!it && !v) {
            save(r, user, contact, NULL);
            t->forgotten++;
        }
        return;
    }
    if (rec[0] == '~') {
        /* A write whose outcome is unknown: written again, the way it should be now. */
        if (it)
            queue_op(r, user, contact, OP_ADD, it), t->add++;
        else
            queue_op(r, user, contact, OP_REMOVE, NULL), t->remove++;
        return;
    }
    if (!it) {
        queue_op(r, user, contact, OP_REMOVE, NULL);
        t->remove++;
        return;
    }
    {
        char sig[ROSTER_SIG_MAX];
        rosterplan_sig(it, sig, sizeof sig);
        if (strcmp(sig, rec) != 0) {
            queue_op(r, user, contact, OP_UPDATE, it);
            t->update++;
        }
    }
}

struct full_ctx {
    struct roster *r;
    const char *user;
    const struct cfg_user *ucfg;
    struct strmap *recs;      /* contact -> value (borrowed from the reply) */
    struct strmap seen;
    struct tally *t;
};

static bool full_item(void *arg, const struct rosterplan_item *it)
{
    struct full_ctx *c = arg;

    strmap_put(&c->seen, it->contact, (void *)it->contact);
    decide(c->r, c->user, c->ucfg, it->contact, it, strmap_get(c->recs, it->contact), c->t);
    return true;
}

static void load_free(struct rload *l)
{
    free(l->user);
    strv_free(l->pairs, l->npairs);
    strv_free(l->declines, l->ndeclines);
    free(l);
}

/* Hands l's work back to its user (the read failed). */
static void unload(struct roster *r, struct rload *l)
{
    struct rwork *w = work_get(r, l->user);

    w->full |= l->full;
    for (size_t i = 0; i < l->npairs; i++)
        set_add(&w->pairs, l->pairs[i]);
    for (size_t i = 0; i < l->ndeclines; i++)
        set_add(&w->declines, l->declines[i]);
}

void roster_loaded(struct roster *r, unsigned long cookie, bool ok, const char *const *contacts,
                   const char *const *values, size_t n)
{
    char key[24];
    struct rload *l;
    struct rwork *w;
    struct strmap recs;
    struct tally t = {0};
    const struct cuser *u;
    const struct cfg_user *ucfg;

    snprintf(key, sizeof key, "%lu", cookie);
    l = strmap_del(&r->loads, key);
    if (!l)
        return;
    w = work_get(r, l->user);
    w->busy--;
    if (!ok) {
        unload(r, l);
        load_free(l);
        settle(r, w);
        update_gauges(r);
        return;
    }
    strmap_init(&recs);
    for (size_t i = 0; i < n; i++) {
        if (values[i])
            strmap_put(&recs, contacts[i], (void *)values[i]);
    }
    u = users_by_jid(r->d, l->user);
    ucfg = u ? u->cfg : NULL;
    /* Items the user took out of their roster: ours no more, never put back. */
    for (size_t i = 0; i < l->ndeclines; i++) {
        const char *rec = strmap_get(&recs, l->declines[i]);
        if (rec && rec[0] == '+') {
            save(r, l->user, l->declines[i], REC_DECLINED);
            strmap_put(&recs, l->declines[i], (void *)REC_DECLINED);
            t.declined++;
        }
    }
    if (l->full) {
        struct full_ctx c = {.r = r, .user = l->user, .ucfg = ucfg, .recs = &recs, .t = &t};
        size_t pos = 0;
        const char *k;
        void *v;

        strmap_init(&c.seen);
        if (ucfg)
            rosterplan_each(&r->plan, ucfg, full_item, &c);
        while (strmap_next(&recs, &pos, &k, &v)) {
            if (!strmap_get(&c.seen, k))
                decide(r, l->user, ucfg, k, NULL, v, &t);
        }
        strmap_free(&c.seen);
    } else {
        for (size_t i = 0; i < l->npairs; i++) {
            const char *contact = l->pairs[i];
            struct cuser *v = users_by_contact(r->d, contact);
            struct rosterplan_item it;
            bool want = ucfg && v && rosterplan_item(&r->plan, ucfg, v->cfg, &it);
            decide(r, l->user, ucfg, contact, want ? &it : NULL, strmap_get(&recs, contact), &t);
        }
    }
    strmap_free(&recs);
    w->busy += t.add + t.update + t.remove;
    if (t.add || t.update || t.remove || t.own || t.declined || t.capped || t.forgotten)
        log_info("roster", "event=roster_planned user=%s scope=%s add=%d update=%d remove=%d "
                           "theirs=%d declined=%d over_limit=%d forgotten=%d",
                 l->user, l->full ? "all" : "items", t.add, t.update, t.remove, t.own,
                 t.declined, t.capped, t.forgotten);
    load_free(l);
    settle(r, w);
    kick(r);
}

static void start_load(struct roster *r, struct rwork *w)
{
    struct rload *l = xcalloc(1, sizeof *l);
    unsigned long cookie = ++r->next_cookie;
    const char **contacts = NULL;
    size_t n = 0;

    snprintf(l->key, sizeof l->key, "%lu", cookie);
    l->user = xstrdup(w->user);
    l->full = w->full;
    w->full = false;
    l->pairs = set_take(&w->pairs, &l->npairs);
    l->declines = set_take(&w->declines, &l->ndeclines);
    if (!l->full) {
        contacts = xcalloc(l->npairs + l->ndeclines + 1, sizeof *contacts);
        for (size_t i = 0; i < l->npairs; i++)
            contacts[n++] = l->pairs[i];
        for (size_t i = 0; i < l->ndeclines; i++)
            contacts[n++] = l->declines[i];
    }
    if (r->io.load(r->io.arg, cookie, l->user, contacts, n) < 0) {
        unload(r, l);
        load_free(l);
        free(contacts);
        return;
    }
    free(contacts);
    w->busy++;
    strmap_put(&r->loads, l->key, l);
}

/* ---- writes ----------------------------------------------------------------------------- */

static struct rop *op_pop(struct roster *r)
{
    struct rop *op = r->ophead;

    if (!op)
        return NULL;
    r->ophead = op->next;
    if (!r->ophead)
        r->optail = &r->ophead;
    op->next = NULL;
    r->nqueued_ops--;
    return op;
}

static void op_out(struct roster *r, struct rop *op)
{
    op->cookie = ++r->next_cookie;
    snprintf(op->key, sizeof op->key, "%lu", op->cookie);
    strmap_put(&r->ops_out, op->key, op);
}

/* op is over (written, failed or dropped): its user may go on. */
static void op_done(struct roster *r, struct rop *op)
{
    struct rwork *w = strmap_get(&r->work, op->user);

    if (op->key[0])
        strmap_del(&r->ops_out, op->key);
    if (w) {
        w->busy--;
        settle(r, w);
    }
    op_free(op);
}

/* The change did not happen (or may not have): its item is checked again later. */
static void op_retry(struct roster *r, struct rop *op, bool backoff)
{
    struct rwork *w = work_get(r, op->user);

    set_add(&w->pairs, op->contact);
    if (backoff) {
        int64_t wait = r->retry_min_ms;
        for (int i = 0; i < w->failures && wait < RETRY_MAX_MS; i++)
            wait *= 2;
        w->failures++;
        w->retry_at = clock_mono_ms() + (wait < RETRY_MAX_MS ? wait : RETRY_MAX_MS);
    }
}

static void finish(struct roster *r, struct rop *op, const char *why);
static void kick(struct roster *r);

/* The user's server answered a roster set (or the stream went first). */
static void on_xep_done(void *arg, const char *user, const struct priv_answer *a)
{
    struct rop *op = arg;
    struct roster *r = op->r;

    switch (a->result) {
    case PRIV_OK:
        finish(r, op, NULL);
        break;
    case PRIV_ERROR:
        /* Removing what is gone already is done. */
        finish(r, op, op->kind == OP_REMOVE && strcmp(a->condition, "item-not-found") == 0
                          ? NULL
                          : a->condition);
        break;
    case PRIV_TIMEOUT:
        finish(r, op, "timeout");
        break;
    case PRIV_LOST:
        /* The stream went: written again once it is back. */
        op_retry(r, op, false);
        op_done(r, op);
        kick(r);
        break;
    }
}

static void send_xep(struct roster *r, struct rop *op)
{
    xmpp_ctx_t *ctx = r->out->ctx;
    xmpp_stanza_t *q = xmpp_stanza_new(ctx), *item;

    xmpp_stanza_set_name(q, "query");
    xmpp_stanza_set_ns(q, NS_ROSTER);
    item = stanza_child(ctx, q, "item", NULL);
    xmpp_stanza_set_attribute(item, "jid", op->contact);
    if (op->kind == OP_REMOVE) {
        xmpp_stanza_set_attribute(item, "subscription", "remove");
    } else {
        /* "to": the user's server probes the contact at each login and shows its
         * presence; the component holds the other side (the user as a watcher). */
        xmpp_stanza_set_attribute(item, "name", op->name);
        xmpp_stanza_set_attribute(item, "subscription", "to");
        for (int i = 0; i < op->ngroups; i++)
            stanza_text_child(ctx, item, "group", op->groups[i]);
    }
    op->stage = ST_SENT;
    if (priv_roster_request(r->priv, op->user, PRIV_SET, q, on_xep_done, op) < 0) {
        /* No grant or no stream any more: written once there is. */
        op_retry(r, op, false);
        op_done(r, op);
    }
}

static void send_api(struct roster *r, struct rop *op)
{
    struct rosterplan_item it = {.contact = op->contact, .ngroups = op->ngroups};

    str_copy(it.name, sizeof it.name, op->name);
    for (int i = 0; i < op->ngroups; i++)
        it.groups[i] = op->groups[i];
    op->stage = ST_SENT;
    op->via_api = true;
    if (r->io.api_write(r->io.arg, op->cookie, op->user, op->contact,
                        op->kind == OP_REMOVE ? NULL : &it) < 0) {
        op_retry(r, op, true);
        op_done(r, op);
    }
}

void roster_saved(struct roster *r, unsigned long cookie, bool ok)
{
    char key[24];
    struct rop *op;

    snprintf(key, sizeof key, "%lu", cookie);
    op = strmap_get(&r->ops_out, key);
    if (!op || op->stage != ST_INTENT)
        return;
    if (!ok || !via(r, op->user)) {
        /* No intent recorded (Redis went), or no way to write any more: later. */
        op_retry(r, op, false);
        op_done(r, op);
        kick(r);
        return;
    }
    if (r->io.api_write)
        send_api(r, op);
    else
        send_xep(r, op);
}

/* A write's outcome. why: NULL when it went through, else the reason (a condition). */
static void finish(struct roster *r, struct rop *op, const char *why)
{
    struct rdomain *dm = domain_get(r, domain_of(op->user), true);
    struct rwork *w = work_get(r, op->user);

    if (!why) {
        struct cuser *v = users_by_contact(r->d, op->contact);
        metric_inc(m_writes, op_names[op->kind]);
        save(r, op->user, op->contact, op->kind == OP_REMOVE ? NULL : op->value);
        dm->wrote = true;
        dm->fails_in_row = 0;
        w->failures = 0;
        r->pass_changes++;
        log_debug("roster", "event=roster_written user=%s contact=%s change=%s", op->user,
                  op->contact, op_names[op->kind]);
        if (op->kind == OP_ADD && v)
            r->ops.on_added(r->arg, v, op->user);
        else if (op->kind == OP_REMOVE)
            r->ops.on_removed(r->arg, v, op->contact, op->user);
        op_done(r, op);
        kick(r);
        return;
    }
    metric_inc(m_errors, reason_label(why));
    {
        uint64_t held = 0;
        if (ratelimit_gate_pass(&ratelimit_peer_log, &r->fail_gate, clock_mono_ms(), &held))
            log_warn("roster", "event=roster_write_failed user=%s contact=%s change=%s "
                               "reason=%s via=%s held_back=%llu action=\"retried later\"",
                     op->user, op->contact, op_names[op->kind], log_q(why),
                     op->via_api ? "api" : "xep0356", (unsigned long long)held);
    }
    if (!op->via_api && !dm->wrote && ++dm->fails_in_row >= REFUSE_AFTER && !dm->refused &&
        (strcmp(why, "internal-server-error") == 0 || strcmp(why, "forbidden") == 0 ||
         strcmp(why, "not-allowed") == 0 || strcmp(why, "feature-not-implemented") == 0)) {
        dm->refused = true;
        log_err("roster", "event=roster_off domain=%s reason=\"the server grants the XEP-0356 "
                          "roster permission but failed every write (%d in a row, last: %s): "
                          "ejabberd before 23.10 cannot (it fails privileged roster sets)\" "
                          "action=\"set [component] roster_api (ejabberd), or fix the server; "
                          "tried again on the next stream\"",
                dm->name, dm->fails_in_row, log_q(why));
    }
    op_retry(r, op, true);
    op_done(r, op);
    update_gauges(r);
    kick(r);
}

void roster_api_done(struct roster *r, unsigned long cookie, bool ok, const char *why)
{
    char key[24];
    struct rop *op;

    snprintf(key, sizeof key, "%lu", cookie);
    op = strmap_get(&r->ops_out, key);
    if (!op || op->stage != ST_SENT || !op->via_api)
        return;
    finish(r, op, ok ? NULL : (why && why[0] ? why : "api"));
}

/* ---- the loop ----------------------------------------------------------------------------- */

static struct timeval ms_tv(int64_t ms)
{
    return (struct timeval){.tv_sec = (time_t)(ms / 1000), .tv_usec = (ms % 1000) * 1000};
}

/* The next token: always the same wait, so a pending timer is the right one. */
static void arm_rate(struct roster *r, long ms)
{
    struct timeval tv = ms_tv(ms);

    if (!evtimer_pending(r->rate_timer, NULL))
        evtimer_add(r->rate_timer, &tv);
}

/* A parked user's wait ends at at: the timer fires then, unless it fires earlier. */
static void arm_retry(struct roster *r, int64_t at, int64_t now)
{
    struct timeval tv;

    if (r->retry_at && r->retry_at <= at && evtimer_pending(r->retry_timer, NULL))
        return;
    tv = ms_tv(at > now ? at - now + 1 : 1);
    r->retry_at = at;
    evtimer_add(r->retry_timer, &tv);
}

/* The record written before op goes out: "~<signature>" for an item, "~-" for a removal. */
static const char *intent(struct rop *op)
{
    static char buf[ROSTER_SIG_MAX + 1];

    if (op->kind == OP_REMOVE)
        return REC_REMOVING;
    snprintf(buf, sizeof buf, "~%s", op->value + 1);
    return buf;
}

static void step(struct roster *r)
{
    int64_t now = clock_mono_ms(), next_retry = 0;
    size_t rounds = r->work.count;

    /* Plan: users' reads, while there is room ahead. */
    while (r->store_up && r->qhead && r->loads.count < MAX_LOADS &&
           r->nqueued_ops < QUEUE_HIGH && rounds-- > 0) {
        struct rwork *w = r->qhead;
        r->qhead = w->next;
        if (!r->qhead)
            r->qtail = &r->qhead;
        w->queued = false;
        w->next = NULL;
        if (w->busy)
            continue; /* queued again when its changes are answered */
        if (!via(r, w->user))
            continue; /* parked: queued again when its domain can be written */
        if (w->retry_at > now) {
            if (!next_retry || w->retry_at < next_retry)
                next_retry = w->retry_at;
            continue; /* parked until retry_at (the timer queues it again) */
        }
        start_load(r, w);
        settle(r, w);
    }
    /* Write: the changes planned, paced. */
    while (r->store_up && !r->stopping && r->ophead && r->ops_out.count < WINDOW) {
        struct rop *op = r->ophead;
        if (!via(r, op->user)) {
            op_pop(r);
            op_retry(r, op, false);
            op_done(r, op);
            continue;
        }
        if (!ratelimit_take(&r->limit, &r->bucket, now)) {
            arm_rate(r, ratelimit_wait_ms(&r->limit, &r->bucket, now));
            break;
        }
        op_pop(r);
        op->stage = ST_INTENT;
        op_out(r, op);
        /* The intent first: if the answer is lost, the item is still known to be ours. */
        if (r->io.save(r->io.arg, op->cookie, op->user, op->contact, intent(op)) < 0) {
            op_retry(r, op, false);
            op_done(r, op);
        }
    }
    if (next_retry)
        arm_retry(r, next_retry, now);
    if (!r->work.count && !r->nqueued_ops && !r->ops_out.count && !r->loads.count &&
        r->started &&
        (r->pass_changes ||
         (!r->first_pass_said && r->d->cfg->roster_mode != CFG_ROSTER_NONE))) {
        log_notice("roster", "event=roster_synced changes=%zu seconds=%.2f", r->pass_changes,
                   (double)(now - r->pass_started_ms) / 1000.0);
        r->pass_changes = 0;
        r->first_pass_said = true;
    }
    update_gauges(r);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    step(arg);
}

/* Parked users whose time has come, or whose domain can be written now: queued again;
 * the retry timer armed for the next one still waiting. */
static void requeue(struct roster *r)
{
    int64_t now = clock_mono_ms(), next = 0;
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&r->work, &pos, &k, &v)) {
        struct rwork *w = v;
        if (w->queued || w->busy || !has_work(w) || !via(r, w->user))
            continue;
        if (w->retry_at <= now)
            enqueue(r, w);
        else if (!next || w->retry_at < next)
            next = w->retry_at;
    }
    if (next)
        arm_retry(r, next, now);
}

static void on_rate(evutil_socket_t fd, short what, void *arg)
{
    step(arg);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct roster *r = arg;

    r->retry_at = 0;
    requeue(r);
    step(r);
}

static void kick(struct roster *r)
{
    event_active(r->kick, EV_TIMEOUT, 0);
}

/* ---- news ---------------------------------------------------------------------------------- */

void roster_unsubscribed(struct roster *r, struct cuser *v, const char *user)
{
    struct rwork *w;
    size_t pos = 0;
    const char *k;
    void *val;

    if (!r->started)
        return;
    /* Our own removal of that item (ejabberd says it with an unsubscribe) is no decline. */
    while (strmap_next(&r->ops_out, &pos, &k, &val)) {
        const struct rop *op = val;
        if (strcmp(op->user, user) == 0 && strcmp(op->contact, v->contact) == 0)
            return;
    }
    w = work_get(r, user);
    set_add(&w->declines, v->contact);
    enqueue(r, w);
    kick(r);
}

void roster_store_state(struct roster *r, bool up)
{
    r->store_up = up;
    if (up) {
        start(r);
        requeue(r);
        kick(r);
    }
}

void roster_connected(struct roster *r)
{
    size_t pos = 0;
    const char *k;
    void *v;

    /* A new stream: what the server can do is found out again. */
    while (strmap_next(&r->domains, &pos, &k, &v)) {
        struct rdomain *dm = v;
        dm->refused = dm->wrote = dm->explained = false;
        dm->fails_in_row = 0;
    }
    if (r->io.api_write) {
        requeue(r);
        kick(r);
    }
    update_gauges(r);
}

void roster_link_down(struct roster *r)
{
    /* The writes out on the stream come back PRIV_LOST (privileged.c) and are redone. */
    update_gauges(r);
}

/* Why domain's rosters are not written, once per stream, when there is anything to do. */
static void explain(struct roster *r, const char *domain, const char *why)
{
    struct rdomain *dm = domain_get(r, domain, true);

    if (dm->explained || r->io.api_write || r->d->cfg->roster_mode == CFG_ROSTER_NONE)
        return;
    dm->explained = true;
    log_warn("roster", "event=roster_off domain=%s reason=\"%s\" action=\"grant it (see the "
                       "operator guide), or use the server's shared roster (offhookctl roster)\"",
             domain, why);
}

void roster_granted(struct roster *r, const char *domain)
{
    if (priv_may_roster(r->priv, domain, PRIV_SET)) {
        if (r->d->cfg->roster_mode != CFG_ROSTER_NONE && !r->io.api_write)
            log_notice("roster", "event=roster_grant domain=%s roster=on", domain);
        requeue(r);
        kick(r);
    } else {
        explain(r, domain, "no XEP-0356 roster set permission");
    }
    update_gauges(r);
}

void roster_missing(struct roster *r, const char *domain)
{
    explain(r, domain, "the server sent no XEP-0356 <privilege/> (mod_privilege not enabled "
                       "or no privileged_entities entry)");
    update_gauges(r);
}

void roster_stopping(struct roster *r)
{
    r->stopping = true;
}

size_t roster_users_over_limit(const struct roster *r)
{
    return r->over_limit;
}

void roster_set_retry(struct roster *r, long first_ms)
{
    r->retry_min_ms = first_ms;
}

size_t roster_pending(const struct roster *r)
{
    return r->nqueued_ops + r->ops_out.count + r->loads.count + r->work.count;
}

/* ---- life -------------------------------------------------------------------------------- */

struct roster *roster_new(struct event_base *base, struct users *d,
                          const struct stanza_out *out, struct privileged *priv,
                          const struct roster_io *io, const struct roster_ops *ops, void *arg)
{
    struct roster *r = xcalloc(1, sizeof *r);

    r->base = base;
    r->d = d;
    r->out = out;
    r->priv = priv;
    r->io = *io;
    r->ops = *ops;
    r->arg = arg;
    strmap_init(&r->work);
    strmap_init(&r->loads);
    strmap_init(&r->ops_out);
    strmap_init(&r->domains);
    strmap_init(&r->capped);
    r->qtail = &r->qhead;
    r->optail = &r->ophead;
    r->limit.rate = (double)d->cfg->roster_rate;
    r->limit.burst = r->limit.rate / 10 > 1 ? r->limit.rate / 10 : 1;
    ratelimit_bucket_init(&r->bucket, r->limit.burst, clock_mono_ms());
    r->kick = event_new(base, -1, 0, on_kick, r);
    r->retry_min_ms = RETRY_MIN_MS;
    r->rate_timer = evtimer_new(base, on_rate, r);
    r->retry_timer = evtimer_new(base, on_retry, r);
    rosterplan_build(&r->plan, d->cfg, plan_allowed, r);
    return r;
}

void roster_free(struct roster *r)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!r)
        return;
    event_free(r->kick);
    event_free(r->rate_timer);
    event_free(r->retry_timer);
    while (strmap_next(&r->work, &pos, &k, &v))
        work_free(v);
    strmap_free(&r->work);
    for (pos = 0; strmap_next(&r->loads, &pos, &k, &v);)
        load_free(v);
    strmap_free(&r->loads);
    for (pos = 0; strmap_next(&r->ops_out, &pos, &k, &v);)
        op_free(v);
    strmap_free(&r->ops_out);
    while (r->ophead)
        op_free(op_pop(r));
    for (pos = 0; strmap_next(&r->domains, &pos, &k, &v);) {
        struct rdomain *dm = v;
        free(dm->name);
        free(dm);
    }
    strmap_free(&r->domains);
    strmap_clear_owned(&r->capped);
    strmap_free(&r->capped);
    rosterplan_free(&r->plan);
    free(r);
}
