/* Who watches each phone contact: kept in memory (authoritative while running) and in
 * Redis sets (so a restart remembers). A change Redis has not taken (the link is down,
 * or Redis refused the write) waits in a queue (bounded) and is written again: at once
 * when the link comes up, after a backoff when Redis refused it. Whatever waits is
 * written as memory then holds it, so the order of the changes never matters. When the
 * link comes up, memory is written back whole (Redis may have restarted empty) and the
 * sets are read back and merged. */
#include "watchers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "backoff.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "redislink.h"
#include "storecodec.h"
#include "strutil.h"

#define MAX_QUEUED_OPS 100000

/* One change of a watcher set to write. */
struct op {
    struct watchers *w;
    char *contact;
    char *bare;     /* NULL: the contact's whole set as memory holds it */
    bool add;       /* what was asked; memory decides again when it is written */
    struct op *next;
};

struct watchers {
    struct users *d;
    struct watchers_ops ops;
    void *arg;
    struct redislink *link;
    struct op *head, **tail;  /* changes waiting: link down, or refused and to be retried */
    int nops;
    struct event *retry;      /* the next try after Redis refused a write */
    struct backoff bo;
    unsigned long refused;    /* writes refused since one last went through */
    bool dropped_logged;
    int loads_pending;
    struct ratelimit_gate bad_log; /* event=bad_entry lines */
    bool active;           /* the active component: memory loaded, and written back */
};

static const struct ratelimit bad_log_rate = {.rate = 1.0 / 10, .burst = 5};

static struct metric *m_writes, *m_pending, *m_bad;

void watchers_register_metrics(void)
{
    m_writes = metric_new(METRIC_COUNTER, "offhook_watcher_writes_total",
                          "Writes of watcher sets to Redis, by result (refused: Redis said "
                          "no, the change is written again after a backoff).",
                          "result", (const char *const[]){"ok", "refused", NULL});
    m_pending = metric_new(METRIC_GAUGE, "offhook_watcher_writes_pending",
                           "Watcher changes not yet in Redis (link down, or refused and "
                           "waiting to be written again).",
                           NULL, NULL);
    m_bad = metric_new(METRIC_COUNTER, "offhook_watchers_bad_entries_total",
                       "Members of watcher sets in Redis that are not a bare JID (ignored).",
                       NULL, NULL);
}

/* ---- Redis ------------------------------------------------------------------------- */

static void op_free(struct op *o)
{
    free(o->contact);
    free(o->bare);
    free(o);
}

static struct op *op_new(struct watchers *w, const char *contact, const char *bare, bool add)
{
    struct op *o = xcalloc(1, sizeof *o);

    o->w = w;
    o->contact = xstrdup(contact);
    o->bare = bare ? xstrdup(bare) : NULL;
    o->add = add;
    return o;
}

static void set_pending(struct watchers *w)
{
    metric_set(m_pending, NULL, w->nops);
}

/* Takes o. */
static void enqueue(struct watchers *w, struct op *o)
{
    if (w->nops >= MAX_QUEUED_OPS) {
        /* Memory stays right; only persistence of this change is lost. */
        if (!w->dropped_logged)
            log_err("watchers", "event=queue_full ops=%d action=dropping_persistence",
                    w->nops);
        w->dropped_logged = true;
        op_free(o);
        return;
    }
    o->next = NULL;
    *w->tail = o;
    w->tail = &o->next;
    w->nops++;
    set_pending(w);
}

static struct op *dequeue(struct watchers *w)
{
    struct op *o = w->head;

    if (!o)
        return NULL;
    w->head = o->next;
    if (!w->head)
        w->tail = &w->head;
    w->nops--;
    set_pending(w);
    return o;
}

static int write_op(struct watchers *w, struct op *o);

static void flush(struct watchers *w)
{
    struct op *o;

    while (redislink_up(w->link) && (o = dequeue(w))) {
        if (write_op(w, o) < 0) {
            /* Back in front: the link went; it replays the queue when it comes up. */
            o->next = w->head;
            w->head = o;
            if (!o->next)
                w->tail = &o->next;
            w->nops++;
            set_pending(w);
            return;
        }
    }
}

static void on_written(struct redislink *l, redisReply *r, void *arg)
{
    struct op *o = arg;
    struct watchers *w = o->w;

    if (!r) {
        /* The link went before the answer: written again when it comes up. */
        enqueue(w, o);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        /* A replica (READONLY), failed persistence (MISCONF), too few replicas... The
         * change stays in memory, waits, and is written again after a backoff, one
         * write at a time until Redis takes one. */
        metric_inc(m_writes, "refused");
        if (w->refused++ == 0)
            log_err("watchers", "event=write_refused contact=%s error=%s pending=%d "
                                "action=retrying",
                    log_q(o->contact), log_q(r->str), w->nops + 1);
        enqueue(w, o);
        if (!evtimer_pending(w->retry, NULL)) {
            uint32_t ms = backoff_next(&w->bo);
            struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
            evtimer_add(w->retry, &tv);
        }
        return;
    }
    metric_inc(m_writes, "ok");
    op_free(o);
    if (w->refused) {
        log_notice("watchers", "event=writes_accepted refused_before=%lu pending=%d",
                   w->refused, w->nops);
        w->refused = 0;
        backoff_reset(&w->bo);
        evtimer_del(w->retry);
        flush(w);
    }
}

/* Sends o as memory holds it now. Returns 1: sent, o belongs to the reply; 0: nothing to
 * write (o freed); -1: the link cannot take it (o is still the caller's). */
static int write_op(struct watchers *w, struct op *o)
{
    struct cuser *u = users_by_contact(w->d, o->contact);
    char key[4096];
    int rc;

    if (storecodec_key_watchers(w->d->cfg->redis_prefix, o->contact, key, sizeof key) < 0) {
        op_free(o);
        return 0;
    }
    if (!o->bare) {
        size_t n = u ? u->watchers.count : 0, pos = 0, argc = 0;
        const char **argv;
        const char *k;
        void *v;
        char numkeys[] = "1";

        if (n == 0) {
            op_free(o);
            return 0;
        }
        argv = xcalloc(n + 4, sizeof *argv);
        argv[argc++] = "EVAL";
        argv[argc++] = storecodec_watchers_add_script;
        argv[argc++] = numkeys;
        argv[argc++] = key;
        while (strmap_next(&u->watchers, &pos, &k, &v) && argc < n + 4)
            argv[argc++] = k;
        rc = redislink_command_argv(w->link, on_written, o, (int)argc, argv, NULL);
        free(argv);
        return rc < 0 ? -1 : 1;
    }
    /* The user may be gone from the configuration: then as it was asked. */
    if (u)
        o->add = strmap_get(&u->watchers, o->bare) != NULL;
    if (o->add) {
        /* A script: Redis at maxmemory still takes it (storecodec.h). */
        const char *argv[] = {"EVAL", storecodec_watchers_add_script, "1", key, o->bare};
        rc = redislink_command_argv(w->link, on_written, o, 5, argv, NULL);
    } else {
        rc = redislink_command(w->link, on_written, o, "SREM %s %s", key, o->bare);
    }
    return rc < 0 ? -1 : 1;
}

/* A change to write: now, unless the link is down or Redis is refusing writes (then it
 * waits for the link, or for the retry). */
static void queue_op(struct watchers *w, const char *contact, const char *bare, bool add)
{
    struct op *o = op_new(w, contact, bare, add);

    if (redislink_up(w->link) && !w->refused && write_op(w, o) >= 0)
        return;
    enqueue(w, o);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct watchers *w = arg;
    struct op *o;

    /* One write to find out whether Redis takes writes again; the rest follow it. */
    while (redislink_up(w->link) && (o = dequeue(w))) {
        int rc = write_op(w, o);
        if (rc < 0)
            enqueue(w, o);
        if (rc != 0)
            return;
    }
}

struct load_ctx {
    struct watchers *w;
    char *contact;
};

/* A member a watcher set may hold: a bare JID as the component writes it (normalized). */
static bool is_bare_jid(const redisReply *e)
{
    char bare[JID_MAX + 1];

    return e->type == REDIS_REPLY_STRING && strlen(e->str) == e->len &&
           jid_to_bare(e->str, bare, sizeof bare) == 0 && strcmp(bare, e->str) == 0;
}

static void on_members(struct redislink *l, redisReply *r, void *arg)
{
    struct load_ctx *lc = arg;
    struct watchers *w = lc->w;
    struct cuser *u = users_by_contact(w->d, lc->contact);
    int learned = 0, dropped = 0;

    w->loads_pending--;
    if (r && r->type == REDIS_REPLY_ARRAY && u) {
        for (size_t i = 0; i < r->elements; i++) {
            const char *bare = r->element[i]->str;
            uint64_t held = 0;
            if (!is_bare_jid(r->element[i])) {
                /* Not written by the component: it would become a stanza's 'to'. */
                metric_inc(m_bad, NULL);
                if (ratelimit_gate_pass(&bad_log_rate, &w->bad_log, clock_mono_ms(), &held))
                    log_warn("watchers", "event=bad_entry contact=%s member=%s "
                                         "suppressed=%llu reason=\"not a bare JID\" "
                                         "action=ignored",
                             log_q(u->contact),
                             r->element[i]->type == REDIS_REPLY_STRING
                                 ? log_qn(bare, r->element[i]->len)
                                 : "(not a string)",
                             (unsigned long long)held);
                continue;
            }
            if (!users_watcher_allowed(w->d, u, bare)) {
                /* The policy changed since it subscribed: it sees nothing now. */
                queue_op(w, u->contact, bare, false);
                dropped++;
                continue;
            }
            if (users_watcher_add(u, bare)) {
                learned++;
                w->ops.on_learned(w->arg, u, bare);
            }
        }
        if (learned || dropped)
            log_debug("watchers", "event=loaded contact=%s learned=%d dropped=%d",
                      log_q(u->contact), learned, dropped);
    }
    free(lc->contact);
    free(lc);
}

/* Writes u's watchers in memory to Redis (it may have come back empty), then reads the
 * set back. Returns 0, or -1 when the link cannot take it. */
static int load_one(struct watchers *w, struct cuser *u)
{
    char key[4096];
    struct load_ctx *lc;

    if (storecodec_key_watchers(w->d->cfg->redis_prefix, u->contact, key, sizeof key) < 0)
        return 0;
    if (u->watchers.count) {
        struct op *o = op_new(w, u->contact, NULL, true);
        if (write_op(w, o) < 0) {
            op_free(o);
            return -1;
        }
    }
    lc = xmalloc(sizeof *lc);
    lc->w = w;
    lc->contact = xstrdup(u->contact);
    if (redislink_command(w->link, on_members, lc, "SMEMBERS %s", key) < 0) {
        free(lc->contact);
        free(lc);
        return -1;
    }
    u->watchers_read = true;
    w->loads_pending++;
    return 0;
}

/* Reads back the sets of every user, or (only_unread) of those not read yet. */
static void load_all(struct watchers *w, bool only_unread)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&w->d->by_contact, &pos, &k, &v)) {
        struct cuser *u = v;

        if (only_unread && u->watchers_read)
            continue;
        if (load_one(w, u) < 0)
            return;
    }
}

void watchers_load_new(struct watchers *w)
{
    /* Not up: on_link reads everyone's when it comes. A standby holds none: taking over
     * reads everyone's. */
    if (w->active && redislink_up(w->link))
        load_all(w, true);
}

static void on_link(struct redislink *l, bool up, void *arg)
{
    struct watchers *w = arg;

    if (!up)
        return;
    /* What changed while down (or was refused), then memory whole, then the union read
     * back. A refusal seen on the old connection is tried again on this one. */
    w->refused = 0;
    evtimer_del(w->retry);
    backoff_reset(&w->bo);
    flush(w);
    w->dropped_logged = false;
    if (w->active)
        load_all(w, false);
}

struct watchers *watchers_new(struct event_base *base, struct users *d,
                              const struct watchers_ops *ops, void *arg)
{
    struct watchers *w = xcalloc(1, sizeof *w);

    w->d = d;
    w->ops = *ops;
    w->arg = arg;
    w->tail = &w->head;
    /* From 200 ms up to 5 s between tries while Redis refuses writes. */
    backoff_init(&w->bo, 200, 5000, (uint64_t)clock_wall_us() ^ (uintptr_t)w);
    w->retry = evtimer_new(base, on_retry, w);
    set_pending(w);
    w->link = redislink_new(base, d->cfg, "watchers", 10000, on_link, w);
    return w;
}

void watchers_free(struct watchers *w)
{
    struct op *o;

    if (!w)
        return;
    /* First: pending replies come back NULL, and their changes join the queue. */
    redislink_free(w->link);
    event_free(w->retry);
    while ((o = dequeue(w)))
        op_free(o);
    free(w);
}

bool watchers_up(const struct watchers *w)
{
    return redislink_up(w->link) && w->loads_pending == 0;
}

void watchers_set_active(struct watchers *w, bool active)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (w->active == active)
        return;
    w->active = active;
    if (active) {
        if (redislink_up(w->link))
            load_all(w, false);
        return;
    }
    /* A standby's memory would go stale while the active one changes the sets: emptied,
     * so that taking over again loads Redis's sets, not this copy written back over them. */
    while (strmap_next(&w->d->by_jid, &pos, &k, &v)) {
        struct cuser *u = v;
        char **all = xcalloc(u->watchers.count + 1, sizeof *all);
        size_t n = 0, wpos = 0;
        const char *bare;
        void *val;
        while (strmap_next(&u->watchers, &wpos, &bare, &val))
            all[n++] = xstrdup(bare);
        for (size_t i = 0; i < n; i++) {
            users_watcher_del(u, all[i]);
            free(all[i]);
        }
        free(all);
    }
}

void watchers_add(struct watchers *w, struct cuser *u, const char *bare)
{
    if (users_watcher_add(u, bare))
        log_info("watchers", "event=subscribed contact=%s watcher=%s", log_q(u->contact),
                 log_q(bare));
    /* Persist even if known in memory: Redis may have lost it (flushed, restarted). */
    queue_op(w, u->contact, bare, true);
}

void watchers_remove(struct watchers *w, struct cuser *u, const char *bare)
{
    if (users_watcher_del(u, bare))
        log_info("watchers", "event=unsubscribed contact=%s watcher=%s", log_q(u->contact),
                 log_q(bare));
    queue_op(w, u->contact, bare, false);
}

void watchers_forget(struct watchers *w, const char *contact, const char *bare)
{
    queue_op(w, contact, bare, false);
}

void watchers_enforce_policy(struct watchers *w)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int dropped = 0;

    while (strmap_next(&w->d->by_jid, &pos, &k, &v)) {
        struct cuser *u = v;
        char **gone = NULL;
        size_t ngone = 0, wpos = 0;
        const char *bare;
        void *val;

        /* Collected first: the set cannot change under its own iteration. */
        while (strmap_next(&u->watchers, &wpos, &bare, &val)) {
            if (!users_watcher_allowed(w->d, u, bare)) {
                gone = xrealloc(gone, (ngone + 1) * sizeof *gone);
                gone[ngone++] = xstrdup(bare);
            }
        }
        for (size_t i = 0; i < ngone; i++) {
            w->ops.on_dropped(w->arg, u, gone[i]);
            watchers_remove(w, u, gone[i]);
            free(gone[i]);
            dropped++;
        }
        free(gone);
    }
    if (dropped)
        log_notice("main", "event=watchers_dropped count=%d reason=\"no longer allowed by "
                           "[component] allow_watchers\"",
                   dropped);
}
