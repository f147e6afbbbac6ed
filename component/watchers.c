/* Who watches each phone contact: kept in memory (authoritative while running) and in
 * Redis sets (so a restart remembers). Changes made while Redis is down are queued
 * (bounded) and replayed; then memory is written back whole (Redis may have restarted
 * empty) and the sets are read back and merged. */
#include "watchers.h"

#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "log.h"
#include "redislink.h"
#include "storecodec.h"
#include "strutil.h"

#define MAX_QUEUED_OPS 100000

struct op {
    char *contact;
    char *bare;
    bool add;
    struct op *next;
};

struct watchers {
    struct users *d;
    struct watchers_ops ops;
    void *arg;
    struct redislink *link;
    struct op *head, **tail;
    int nops;
    bool dropped_logged;
    int loads_pending;
};

/* ---- Redis ------------------------------------------------------------------------- */

static int send_op(struct watchers *w, const char *contact, const char *bare, bool add)
{
    char key[4096];

    if (storecodec_key_watchers(w->d->cfg->redis_prefix, contact, key, sizeof key) < 0)
        return 0;
    return redislink_command(w->link, NULL, NULL, add ? "SADD %s %s" : "SREM %s %s", key,
                             bare);
}

static void queue_op(struct watchers *w, const char *contact, const char *bare, bool add)
{
    struct op *o;

    if (redislink_up(w->link) && send_op(w, contact, bare, add) == 0)
        return;
    if (w->nops >= MAX_QUEUED_OPS) {
        /* Memory stays right; only persistence of this change is lost. */
        if (!w->dropped_logged)
            log_err("watchers", "event=queue_full ops=%d action=dropping_persistence",
                    w->nops);
        w->dropped_logged = true;
        return;
    }
    o = xmalloc(sizeof *o);
    o->contact = xstrdup(contact);
    o->bare = xstrdup(bare);
    o->add = add;
    o->next = NULL;
    *w->tail = o;
    w->tail = &o->next;
    w->nops++;
}

struct load_ctx {
    struct watchers *w;
    char *contact;
};

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
            if (r->element[i]->type != REDIS_REPLY_STRING)
                continue;
            if (!users_watcher_allowed(w->d, u, bare)) {
                /* The policy changed since it subscribed: it sees nothing now. */
                send_op(w, u->contact, bare, false);
                dropped++;
                continue;
            }
            if (users_watcher_add(u, bare)) {
                learned++;
                w->ops.on_learned(w->arg, u, bare);
            }
        }
        if (learned || dropped)
            log_debug("watchers", "event=loaded contact=%s learned=%d dropped=%d", u->contact,
                      learned, dropped);
    }
    free(lc->contact);
    free(lc);
}

/* SADD of everything u's watchers in memory: Redis may have come back empty. */
static int persist_all(struct watchers *w, struct cuser *u, const char *key)
{
    size_t n = u->watchers.count, pos = 0, argc = 0;
    const char **argv = xcalloc(n + 2, sizeof *argv);
    const char *k;
    void *v;
    int rc;

    argv[argc++] = "SADD";
    argv[argc++] = key;
    while (strmap_next(&u->watchers, &pos, &k, &v) && argc < n + 2)
        argv[argc++] = k;
    rc = redislink_command_argv(w->link, NULL, NULL, (int)argc, argv, NULL);
    free(argv);
    return rc;
}

/* Reads back the sets of every user, or (only_unread) of those not read yet. */
static void load_all(struct watchers *w, bool only_unread)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&w->d->by_contact, &pos, &k, &v)) {
        struct cuser *u = v;
        char key[4096];
        struct load_ctx *lc;

        if (only_unread && u->watchers_read)
            continue;
        if (storecodec_key_watchers(w->d->cfg->redis_prefix, u->contact, key, sizeof key) < 0)
            continue;
        if (u->watchers.count && persist_all(w, u, key) < 0)
            return;
        lc = xmalloc(sizeof *lc);
        lc->w = w;
        lc->contact = xstrdup(u->contact);
        if (redislink_command(w->link, on_members, lc, "SMEMBERS %s", key) < 0) {
            free(lc->contact);
            free(lc);
            return;
        }
        u->watchers_read = true;
        w->loads_pending++;
    }
}

void watchers_load_new(struct watchers *w)
{
    /* Not up: on_link reads everyone's when it comes. */
    if (redislink_up(w->link))
        load_all(w, true);
}

static void on_link(struct redislink *l, bool up, void *arg)
{
    struct watchers *w = arg;

    if (!up)
        return;
    /* Replay what changed while down, then read back the union. */
    while (w->head) {
        struct op *o = w->head;
        if (send_op(w, o->contact, o->bare, o->add) < 0)
            return;
        w->head = o->next;
        if (!w->head)
            w->tail = &w->head;
        w->nops--;
        free(o->contact);
        free(o->bare);
        free(o);
    }
    w->dropped_logged = false;
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
    w->link = redislink_new(base, d->cfg, "watchers", 10000, on_link, w);
    return w;
}

void watchers_free(struct watchers *w)
{
    if (!w)
        return;
    redislink_free(w->link);
    while (w->head) {
        struct op *o = w->head;
        w->head = o->next;
        free(o->contact);
        free(o->bare);
        free(o);
    }
    free(w);
}

bool watchers_up(const struct watchers *w)
{
    return redislink_up(w->link) && w->loads_pending == 0;
}

void watchers_add(struct watchers *w, struct cuser *u, const char *bare)
{
    if (users_watcher_add(u, bare))
        log_info("watchers", "event=subscribed contact=%s watcher=%s", u->contact, bare);
    /* Persist even if known in memory: Redis may have lost it (flushed, restarted). */
    queue_op(w, u->contact, bare, true);
}

void watchers_remove(struct watchers *w, struct cuser *u, const char *bare)
{
    if (users_watcher_del(u, bare))
        log_info("watchers", "event=unsubscribed contact=%s watcher=%s", u->contact, bare);
    queue_op(w, u->contact, bare, false);
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
