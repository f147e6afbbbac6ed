/* User state to Redis: hash + stream entry per change in one script, with a per-user
 * pending slot while the link is down. On every reconnect the users whose latest state
 * was already written are checked again (storecodec_repair_script): a Redis that
 * restarted without persistence, was flushed, or is a new master that lacked the old
 * one's last writes (Sentinel failover) has lost them; those are written again, with an
 * event. */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "backoff.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "redislink.h"
#include "strmap.h"
#include "strutil.h"

#define REWRITE_BATCH 1000 /* users rewritten per loop turn after a reconnect */

struct entry {
    char *jid;
    struct store_rec rec;
    bool removed;        /* the latest change is a removal */
    uint64_t gen;        /* bumped on each put */
    uint64_t written;    /* gen confirmed by Redis; gen != written means unwritten */
};

struct store {
    struct redislink *link;
    struct event *beat;        /* heartbeat:sipbridge refresh */
    char *beat_key;
    void (*on_up)(void *arg);
    void *on_up_arg;
    struct strmap entries; /* jid -> struct entry* */
    char *prefix;
    char *events_key;
    int npending;          /* entries with gen != written */
    struct entry **rw;     /* entries to rewrite after a reconnect */
    size_t nrw, rw_pos;
    struct event *rw_ev;
    unsigned long refused; /* writes refused since the last accepted one */
    struct event *retry_ev; /* re-sends the unwritten users after a refusal */
    struct backoff bo;
};

struct inflight {
    struct store *st;
    struct entry *e;
    uint64_t gen;
};

static struct metric *m_pending, *m_writes, *m_rewrites, *m_repairs;

void store_register_metrics(void)
{
    m_pending = metric_new(METRIC_GAUGE, "offhook_store_pending_users",
                           "Users whose latest state waits for Redis (bounded by users).", NULL,
                           NULL);
    m_writes = metric_new(METRIC_COUNTER, "offhook_store_writes_total",
                          "User state writes to Redis, by result.", "result",
                          (const char *const[]){"ok", "error", "retried", NULL});
    m_rewrites = metric_new(METRIC_COUNTER, "offhook_store_rewrites_total",
                            "Users checked again after a Redis reconnect.", NULL, NULL);
    m_repairs = metric_new(METRIC_COUNTER, "offhook_store_repairs_total",
                           "Users whose latest state Redis had lost, found after a reconnect "
                           "(restart, failover) and written again with an event.",
                           NULL, NULL);
}

static void update_pending_metric(struct store *st)
{
    metric_set(m_pending, NULL, st->npending);
}

static void flush(struct store *st);

static void on_written(struct redislink *l, redisReply *r, void *arg)
{
    struct inflight *f = arg;
    struct store *st = f->st;
    struct entry *e = f->e;

    if (r && r->type != REDIS_REPLY_ERROR) {
        if (f->gen > e->written) {
            bool was_unwritten = e->written != e->gen;
            e->written = f->gen;
            if (was_unwritten && e->written == e->gen)
                st->npending--;
        }
        metric_inc(m_writes, "ok");
        if (st->refused) {
            log_notice("store", "event=writes_accepted refused_before=%lu", st->refused);
            st->refused = 0;
            backoff_reset(&st->bo);
            evtimer_del(st->retry_ev);
            flush(st); /* the users held meanwhile */
        }
    } else if (r) {
        /* Refused (read-only replica, a script error...): the connection is fine, so it
         * stays; the unwritten users are held (changed() sends nothing more) and sent
         * again after backoff, instead of hammering a sick server. Logged once per run
         * of refusals (each is counted); the first accepted write ends it. */
        metric_inc(m_writes, "error");
        if (st->refused++ == 0)
            log_err("store", "event=write_failed user=%s error=%s "
                    "action=\"holding state, retrying after backoff\"",
                    log_q(e->jid), log_qn(r->str ? r->str : "", r->str ? strnlen(r->str, 120) : 0));
        if (!evtimer_pending(st->retry_ev, NULL)) {
            uint32_t ms = backoff_next(&st->bo);
            struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
            evtimer_add(st->retry_ev, &tv);
        }
    } else {
        /* Lost with the link: the latest state goes out again on reconnect. */
        metric_inc(m_writes, "retried");
    }
    update_pending_metric(st);
    free(f);
}

/* Queues the write of e's latest state with a stream entry (storecodec_write_script), or
 * with repair its check (storecodec_repair_script). fn/arg get the reply. Returns 0, -1
 * if it could not be queued, or -2 for a JID too long for a key (nothing queued). */
static int send_record(struct store *st, struct entry *e, bool repair, redislink_reply_fn fn,
                       void *arg)
{
    char key[2048];
    struct store_fields f;
    const char *argv[6 + 2 * STORE_FIELDS_MAX];
    int argc = 0;

    if (storecodec_key_user(st->prefix, e->jid, key, sizeof key) < 0)
        return -2;
    argv[argc++] = "EVAL";
    argv[argc++] = repair ? storecodec_repair_script : storecodec_write_script;
    argv[argc++] = "2";
    argv[argc++] = key;
    argv[argc++] = st->events_key;
    argv[argc++] = e->jid;
    if (!e->removed) {
        struct user_record full;
        store_rec_expand(&e->rec, &full);
        storecodec_encode(&full, &f);
        for (int i = 0; i < f.n; i++) {
            argv[argc++] = f.name[i];
            argv[argc++] = f.value[i];
        }
    }
    return redislink_command_argv(st->link, fn, arg, argc, argv, NULL) < 0 ? -1 : 0;
}

/* Queues the write of e's latest state with its change event. */
static void send_entry(struct store *st, struct entry *e)
{
    struct inflight *fl = xmalloc(sizeof *fl);
    int rc;

    fl->st = st;
    fl->e = e;
    fl->gen = e->gen;
    rc = send_record(st, e, false, on_written, fl);
    if (rc < 0)
        free(fl);
    if (rc == -1)
        redislink_reset(st->link, "cannot queue a write");
}

static void on_repaired(struct redislink *l, redisReply *r, void *arg)
{
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        metric_inc(m_repairs, NULL);
}

/* Checks the next batch of already-written users again (after a reconnect). */
static void rewrite_step(evutil_socket_t fd, short what, void *arg)
{
    struct store *st = arg;
    size_t end = st->rw_pos + REWRITE_BATCH;
    struct timeval now = {0, 0};

    if (!redislink_up(st->link))
        return; /* the next connection starts over */
    if (end > st->nrw)
        end = st->nrw;
    for (; st->rw_pos < end; st->rw_pos++) {
        struct entry *e = st->rw[st->rw_pos];
        int rc;

        if (e->gen != e->written || e->removed || e->gen == 0)
            continue; /* on its way with an event, or nothing to hold */
        rc = send_record(st, e, true, on_repaired, NULL);
        if (rc == -2)
            continue;
        if (rc) {
            redislink_reset(st->link, "cannot queue a rewrite");
            return;
        }
        metric_inc(m_rewrites, NULL);
    }
    if (st->rw_pos < st->nrw) {
        evtimer_add(st->rw_ev, &now);
        return;
    }
    log_info("store", "event=rewritten users=%zu", st->nrw);
    free(st->rw);
    st->rw = NULL;
    st->nrw = st->rw_pos = 0;
}

static void rewrite_start(struct store *st)
{
    size_t pos = 0;
    const char *k;
    void *v;
    struct timeval now = {0, 0};

    free(st->rw);
    st->rw = xcalloc(st->entries.count + 1, sizeof *st->rw);
    st->nrw = st->rw_pos = 0;
    while (strmap_next(&st->entries, &pos, &k, &v))
        st->rw[st->nrw++] = v; /* entries live as long as the store */
    evtimer_add(st->rw_ev, &now);
}

static void flush(struct store *st)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;

    while (strmap_next(&st->entries, &pos, &k, &v)) {
        struct entry *e = v;
        if (e->gen != e->written) {
            send_entry(st, e);
            n++;
        }
    }
    if (n && !st->refused)
        log_notice("store", "event=flushed users=%d", n);
}

/* After a refusal: one unwritten user's write goes out as a probe; its answer decides
 * (accepted: on_written() sends the rest; refused: another backoff). */
static void retry_refused(evutil_socket_t fd, short what, void *arg)
{
    struct store *st = arg;
    size_t pos = 0;
    const char *k;
    void *v;

    if (!redislink_up(st->link))
        return; /* the reconnect flushes everything */
    while (strmap_next(&st->entries, &pos, &k, &v)) {
        struct entry *e = v;
        if (e->gen != e->written) {
            send_entry(st, e);
            return;
        }
    }
    st->refused = 0; /* nothing left unwritten */
    backoff_reset(&st->bo);
}

static void heartbeat(evutil_socket_t fd, short what, void *arg)
{
    struct store *st = arg;

    if (redislink_up(st->link) &&
        redislink_heartbeat(st->link, st->beat_key, STORE_HEARTBEAT_TTL_MS) < 0)
        redislink_reset(st->link, "cannot queue heartbeat");
}

static void on_link(struct redislink *l, bool up, void *arg)
{
    struct store *st = arg;

    if (up) {
        flush(st);
        rewrite_start(st);
        heartbeat(-1, 0, st);
        if (st->on_up)
            st->on_up(st->on_up_arg);
    }
    else if (st->npending)
        log_warn("store", "event=buffering pending_users=%d", st->npending);
}

struct store *store_new(struct event_base *base, const struct offhook_config *cfg)
{
    struct store *st = xcalloc(1, sizeof *st);
    char key[512];

    strmap_init(&st->entries);
    st->prefix = xstrdup(cfg->redis_prefix);
    if (storecodec_key_events(cfg->redis_prefix, key, sizeof key) < 0)
        key[0] = '\0';
    st->events_key = xstrdup(key);
    if (storecodec_key_heartbeat(cfg->redis_prefix, "sipbridge", key, sizeof key) < 0)
        key[0] = '\0';
    st->beat_key = xstrdup(key);
    st->beat = event_new(base, -1, EV_PERSIST, heartbeat, st);
    st->rw_ev = evtimer_new(base, rewrite_step, st);
    st->retry_ev = evtimer_new(base, retry_refused, st);
    backoff_init(&st->bo, 200, 3000, (uint64_t)(uintptr_t)st);
    {
        struct timeval tv = {.tv_sec = STORE_HEARTBEAT_EVERY_MS / 1000};
        event_add(st->beat, &tv);
    }
    st->link = redislink_new(base, cfg, "store", 10000, on_link, st);
    update_pending_metric(st);
    return st;
}

void store_free(struct store *st)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!st)
        return;
    event_free(st->beat);
    event_free(st->rw_ev);
    event_free(st->retry_ev);
    free(st->rw);
    redislink_free(st->link); /* in-flight callbacks run now, with NULL replies */
    while (strmap_next(&st->entries, &pos, &k, &v)) {
        struct entry *e = v;
        free(e->jid);
        store_rec_clear(&e->rec);
        free(e);
    }
    strmap_free(&st->entries);
    free(st->prefix);
    free(st->events_key);
    free(st->beat_key);
    free(st);
}

void store_on_up(struct store *st, void (*fn)(void *arg), void *arg)
{
    st->on_up = fn;
    st->on_up_arg = arg;
}

void store_sub_state(struct store *st, const char *jid, const char *package, const char *aor,
                     const char *state)
{
    char key[2048], field[1024], value[64];

    if (!redislink_up(st->link) || storecodec_key_subs(st->prefix, jid, key, sizeof key) < 0)
        return;
    snprintf(field, sizeof field, "%s %s", package, aor);
    snprintf(value, sizeof value, "%s %lld", state, (long long)clock_wall_ms());
    if (redislink_command(st->link, NULL, NULL, "HSET %s %s %s", key, field, value) < 0)
        redislink_reset(st->link, "cannot queue a subscription state");
}

bool store_up(const struct store *st)
{
    return redislink_up(st->link);
}

int store_pending(const struct store *st)
{
    return st->npending;
}

static struct entry *entry_for(struct store *st, const char *jid)
{
    struct entry *e = strmap_get(&st->entries, jid);

    if (!e) {
        e = xcalloc(1, sizeof *e);
        e->jid = xstrdup(jid);
        strmap_put(&st->entries, e->jid, e);
    }
    return e;
}

const char *store_key(struct store *st, const char *jid)
{
    return entry_for(st, jid)->jid;
}

static void changed(struct store *st, struct entry *e)
{
    if (e->gen == e->written)
        st->npending++;
    e->gen++;
    if (redislink_up(st->link) && !st->refused)
        send_entry(st, e);
    update_pending_metric(st);
}

bool store_rec_same(const struct store_rec *a, const struct store_rec *b)
{
    return a->state == b->state && a->dir == b->dir && a->reach == b->reach &&
           a->dnd == b->dnd && a->video == b->video &&
           strcmp(a->remote ? a->remote : "", b->remote ? b->remote : "") == 0;
}

void store_rec_copy(struct store_rec *dst, const struct store_rec *src)
{
    char *remote = src->remote ? xstrdup(src->remote) : NULL;

    free(dst->remote);
    *dst = *src;
    dst->remote = remote;
}

void store_rec_expand(const struct store_rec *r, struct user_record *out)
{
    memset(out, 0, sizeof *out);
    out->state = (enum user_state)r->state;
    out->dir = (enum call_dir)r->dir;
    out->reach = (enum phone_reach)r->reach;
    out->dnd = r->dnd;
    out->video = r->video;
    out->since_ms = r->since_ms;
    out->event_us = r->event_us;
    if (r->remote)
        str_copy_utf8(out->remote, sizeof out->remote, r->remote);
}

void store_rec_clear(struct store_rec *r)
{
    free(r->remote);
    r->remote = NULL;
}

void store_put(struct store *st, const char *jid, const struct store_rec *r)
{
    struct entry *e = entry_for(st, jid);

    store_rec_copy(&e->rec, r);
    e->removed = false;
    changed(st, e);
}

void store_remove(struct store *st, const char *jid)
{
    struct entry *e = entry_for(st, jid);

    store_rec_clear(&e->rec);
    e->removed = true;
    changed(st, e);
}

void store_sub_clear(struct store *st, const char *jid)
{
    char key[2048];

    if (redislink_up(st->link) && storecodec_key_subs(st->prefix, jid, key, sizeof key) == 0 &&
        redislink_command(st->link, NULL, NULL, "DEL %s", key) < 0)
        redislink_reset(st->link, "cannot queue a delete");
}
