/* User records from Redis: an atomic snapshot (one read-only script: the event stream's
 * last id and every configured user's hash), then XREAD BLOCK from that id, so no change
 * is missed or applied twice. Each record is kept in its user and announced (feed_ops).
 * On any reconnect: a new snapshot. */
#include "feed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "redislink.h"
#include "stanza.h"
#include "storecodec.h"
#include "strutil.h"

#define BLOCK_MS 5000
#define READ_COUNT 1000

struct feed {
    struct users *d;
    struct feed_ops ops;
    void *arg;
    struct redislink *link;
    char events_key[512];
    char last_id[64];
    bool synced;
    char **snapshot_jids;  /* users asked for in the pending snapshot, in order */
    size_t nsnapshot;
    struct ratelimit_gate bad_log;      /* event=bad_record lines */
    struct ratelimit_gate repaired_log; /* event=record_repaired lines */
};

/* A bad record logs at once, then a few a minute with how many were held back: a
 * corrupted or foreign writer would otherwise write a line per entry it adds. */
static const struct ratelimit feed_log_rate = {.rate = 1.0 / 10, .burst = 5};

static struct metric *m_events, *m_bad, *m_synced, *m_repaired;

void feed_register_metrics(void)
{
    m_events = metric_new(METRIC_COUNTER, "offhook_feed_events_total",
                          "State change events read from the Redis stream.", NULL, NULL);
    m_bad = metric_new(METRIC_COUNTER, "offhook_feed_bad_records_total",
                       "Records in Redis that could not be decoded (ignored).", NULL, NULL);
    m_repaired = metric_new(METRIC_COUNTER, "offhook_feed_records_repaired_total",
                            "Records from Redis whose remote party text was not UTF-8 or "
                            "held control characters, used with each such character "
                            "replaced by '?'.",
                            NULL, NULL);
    m_synced = metric_new(METRIC_GAUGE, "offhook_feed_synced",
                          "1 once the component holds every user's state from Redis.", NULL,
                          NULL);
}

bool feed_synced(const struct feed *f)
{
    return f->synced;
}

/* Keeps rec as jid's state (NULL: sipbridge removed the user). Returns that user, or
 * NULL when jid is not one of ours (another deployment's, or not configured here). */
static struct cuser *keep(struct feed *f, const char *jid, const struct user_record *rec)
{
    struct cuser *u = users_by_jid(f->d, jid);

    if (!u)
        return NULL;
    u->have_rec = rec != NULL;
    if (rec)
        u->rec = *rec;
    u->rec_at_ms = clock_wall_ms();
    log_trace(&u->trace, "feed", "event=trace_record user=%s state=%s",
              jid, rec ? user_state_name(rec->state) : "removed");
    return u;
}

static void bad_record(struct feed *f, const char *jid, const char *err)
{
    uint64_t held = 0;

    metric_inc(m_bad, NULL);
    if (ratelimit_gate_pass(&feed_log_rate, &f->bad_log, clock_mono_ms(), &held))
        log_warn("feed", "event=bad_record user=%s reason=%s suppressed=%llu", log_q(jid),
                 log_q(err), (unsigned long long)held);
}

/* The record's text (the other party, when the operator opted in) goes into stanzas,
 * and Redis holds whatever was written there: an older sipbridge cut names mid-character,
 * and anyone who can write to Redis can write anything. storecodec_decode already made it
 * well-formed UTF-8; control characters, which XML cannot carry either, go here too,
 * counted and logged, so the stanza built from it never needs the link's repair. */
static void check_record(struct feed *f, const char *jid, const char *const *names,
                         const char *const *values, size_t n, struct user_record *rec)
{
    const char *raw = NULL;
    uint64_t held = 0;

    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], "remote") == 0)
            raw = values[i];
    }
    if (!raw || stanza_text_ok(raw))
        return;
    (void)stanza_text_repair(rec->remote);
    metric_inc(m_repaired, NULL);
    if (ratelimit_gate_pass(&feed_log_rate, &f->repaired_log, clock_mono_ms(), &held))
        log_warn("feed", "event=record_repaired user=%s field=remote suppressed=%llu "
                         "reason=\"not UTF-8, or control characters: each replaced by '?'\"",
                 log_q(jid), (unsigned long long)held);
}

/* Splits a flat [name, value, ...] reply into arrays; returns the pair count or -1. */
static long pairs(const redisReply *r, const char **names, const char **values, size_t max)
{
    size_t n = 0;

    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2)
        return -1;
    for (size_t i = 0; i + 1 < r->elements && n < max; i += 2) {
        if (r->element[i]->type != REDIS_REPLY_STRING ||
            r->element[i + 1]->type != REDIS_REPLY_STRING)
            return -1;
        names[n] = r->element[i]->str;
        values[n] = r->element[i + 1]->str;
        n++;
    }
    return (long)n;
}

static void read_next(struct feed *f);

/* offhookctl resync [JID]: send everything again (presence to every watcher, PEP). */
static void command(struct feed *f, const char *cmd, const char *jid)
{
    struct cuser *u;

    if (strcmp(cmd, "resync") != 0) {
        log_warn("feed", "event=unknown_command cmd=%s", log_q(cmd));
        return;
    }
    if (!f->synced)
        return; /* a snapshot is coming anyway */
    if (!jid || strcmp(jid, "*") == 0) {
        log_notice("feed", "event=resync scope=all");
        f->ops.on_resync(f->arg, NULL);
        return;
    }
    u = users_by_jid(f->d, jid);
    if (u) {
        log_notice("feed", "event=resync user=%s", log_q(jid));
        f->ops.on_resync(f->arg, u);
    }
}

static void on_read(struct redislink *l, redisReply *r, void *arg)
{
    struct feed *f = arg;

    if (!r)
        return; /* link lost: a new snapshot follows reconnection */
    if (r->type == REDIS_REPLY_NIL) {
        read_next(f); /* BLOCK timed out: nothing happened */
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 1 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[0]->elements != 2) {
        log_err("feed", "event=unexpected_reply command=XREAD");
        redislink_reset(l, "unexpected XREAD reply");
        return;
    }
    {
        const redisReply *entries = r->element[0]->element[1];
        for (size_t i = 0; i < entries->elements; i++) {
            const redisReply *e = entries->element[i];
            const char *names[STORE_FIELDS_MAX + 2], *values[STORE_FIELDS_MAX + 2];
            struct stream_entry se;
            struct cuser *u;
            char err[128];
            long n;

            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
                e->element[0]->type != REDIS_REPLY_STRING)
                continue;
            str_copy(f->last_id, sizeof f->last_id, e->element[0]->str);
            metric_inc(m_events, NULL);
            n = pairs(e->element[1], names, values, STORE_FIELDS_MAX + 2);
            if (n < 0) {
                metric_inc(m_bad, NULL);
                continue;
            }
            if (storecodec_decode_entry(names, values, (size_t)n, &se, err, sizeof err) < 0) {
                /* Entries for nobody, or for users not ours, are not ours to judge; any
                 * user's entry still proves sipbridge alive. */
                if (se.user && users_by_jid(f->d, se.user))
                    bad_record(f, se.user, err);
                if (se.user)
                    f->ops.on_event(f->arg, NULL, 0);
                continue;
            }
            switch (se.kind) {
            case STREAM_COMMAND:
                command(f, se.cmd, se.user);
                break;
            case STREAM_REMOVED:
                f->ops.on_event(f->arg, keep(f, se.user, NULL), 0);
                break;
            case STREAM_STATE:
                if (users_by_jid(f->d, se.user))
                    check_record(f, se.user, names, values, (size_t)n, &se.rec);
                u = keep(f, se.user, &se.rec);
                f->ops.on_event(f->arg, u, u ? se.rec.event_us : 0);
                break;
            }
        }
    }
    read_next(f);
}

static void read_next(struct feed *f)
{
    if (redislink_command(f->link, on_read, f, "XREAD COUNT %d BLOCK %d STREAMS %s %s",
                          READ_COUNT, BLOCK_MS, f->events_key, f->last_id) < 0)
        redislink_reset(f->link, "cannot queue XREAD");
}

static void free_snapshot(struct feed *f)
{
    for (size_t i = 0; i < f->nsnapshot; i++)
        free(f->snapshot_jids[i]);
    free(f->snapshot_jids);
    f->snapshot_jids = NULL;
    f->nsnapshot = 0;
}

static void on_snapshot(struct redislink *l, redisReply *r, void *arg)
{
    struct feed *f = arg;
    const redisReply *last;
    size_t loaded = 0, kept = 0, newer = 0;

    if (!r) {
        free_snapshot(f);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != f->nsnapshot + 1) {
        log_err("feed", "event=snapshot_failed error=%s",
                log_q(r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply"));
        free_snapshot(f);
        redislink_reset(l, "snapshot failed");
        return;
    }
    last = r->element[0];
    if (last->type == REDIS_REPLY_ARRAY && last->elements == 1 &&
        last->element[0]->type == REDIS_REPLY_ARRAY && last->element[0]->elements == 2)
        str_copy(f->last_id, sizeof f->last_id, last->element[0]->element[0]->str);
    else
        str_copy(f->last_id, sizeof f->last_id, "0-0");
    for (size_t i = 0; i < f->nsnapshot; i++) {
        const char *names[STORE_FIELDS_MAX + 2], *values[STORE_FIELDS_MAX + 2];
        long n = pairs(r->element[i + 1], names, values, STORE_FIELDS_MAX + 2);
        struct cuser *u = users_by_jid(f->d, f->snapshot_jids[i]);
        struct user_record rec;
        char err[128];

        if (!u)
            continue;
        if (n <= 0) {
            /* Nothing written for this user yet, or Redis lost it (restarted empty):
             * what this process last saw stays until sipbridge writes it again, which
             * it does for every user when it reconnects. */
            if (u->have_rec)
                kept++;
            continue;
        }
        /* A hash holds a record, never a removal (sipbridge deletes the hash). Published
         * all at once by on_synced, not one by one. */
        if (storecodec_decode(names, values, (size_t)n, &rec, err, sizeof err) < 0) {
            bad_record(f, f->snapshot_jids[i], err);
            continue;
        }
        /* Older than what this process holds: a new master (failover) that lacks the old
         * one's last writes. What was seen stays; sipbridge writes the newer state again,
         * as an event (its repair after reconnecting). */
        if (u->have_rec && rec.event_us < u->rec.event_us) {
            newer++;
            continue;
        }
        check_record(f, f->snapshot_jids[i], names, values, (size_t)n, &rec);
        (void)keep(f, f->snapshot_jids[i], &rec);
        loaded++;
    }
    log_notice("feed", "event=synced users=%zu with_state=%zu kept_missing=%zu kept_newer=%zu "
               "stream_id=%s",
               f->nsnapshot, loaded, kept, newer, log_q(f->last_id));
    free_snapshot(f);
    f->synced = true;
    metric_set(m_synced, NULL, 1);
    f->ops.on_synced(f->arg);
    read_next(f);
}

/* One read-only script, not MULTI ... EXEC: Redis at maxmemory refuses every command
 * queued in a MULTI, and a component started then never loaded its users' states. The
 * reply has EXEC's shape (storecodec_snapshot_script). */
static void snapshot(struct feed *f)
{
    size_t pos = 0, i = 0, n = f->d->by_jid.count;
    const char **argv = xcalloc(n + 4, sizeof *argv);
    char **keys = xcalloc(n + 1, sizeof *keys);
    const char *k;
    void *v;
    int argc = 0;

    free_snapshot(f);
    f->snapshot_jids = xcalloc(n + 1, sizeof *f->snapshot_jids);
    argv[argc++] = "EVAL";
    argv[argc++] = storecodec_snapshot_script;
    argv[argc++] = NULL; /* numkeys, below */
    argv[argc++] = f->events_key;
    while (strmap_next(&f->d->by_jid, &pos, &k, &v)) {
        char key[4096];
        if (storecodec_key_user(f->d->cfg->redis_prefix, k, key, sizeof key) < 0)
            continue;
        f->snapshot_jids[i] = xstrdup(k);
        keys[i] = xstrdup(key);
        argv[argc++] = keys[i++];
    }
    f->nsnapshot = i;
    {
        char numkeys[24];
        snprintf(numkeys, sizeof numkeys, "%zu", i + 1);
        argv[2] = numkeys;
        if (redislink_command_argv(f->link, on_snapshot, f, argc, argv, NULL) < 0) {
            free_snapshot(f);
            redislink_reset(f->link, "cannot queue snapshot");
        }
    }
    for (size_t j = 0; j < i; j++)
        free(keys[j]);
    free(keys);
    free(argv);
}

static void on_link(struct redislink *l, bool up, void *arg)
{
    struct feed *f = arg;

    if (up) {
        snapshot(f);
        return;
    }
    f->synced = false;
    metric_set(m_synced, NULL, 0);
}

struct feed *feed_new(struct event_base *base, struct users *d, const struct feed_ops *ops,
                      void *arg)
{
    struct feed *f = xcalloc(1, sizeof *f);

    f->d = d;
    f->ops = *ops;
    f->arg = arg;
    storecodec_key_events(d->cfg->redis_prefix, f->events_key, sizeof f->events_key);
    str_copy(f->last_id, sizeof f->last_id, "0-0");
    metric_set(m_synced, NULL, 0);
    f->link = redislink_new(base, d->cfg, "feed", BLOCK_MS + 10000, on_link, f);
    return f;
}

/* After a reload: users may have come and gone, so take a fresh snapshot. The blocking
 * XREAD in flight cannot be cancelled on its connection: a new connection is the way. */
void feed_resync(struct feed *f)
{
    if (redislink_up(f->link))
        redislink_restart(f->link, "configuration reloaded");
}

void feed_free(struct feed *f)
{
    if (!f)
        return;
    redislink_free(f->link);
    free_snapshot(f);
    free(f);
}
