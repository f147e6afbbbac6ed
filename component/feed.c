/* User records from Redis: an atomic snapshot (one read-only script: the event stream's
 * last id and every configured user's hash), then XREAD BLOCK from that id, so no change
 * is missed or applied twice. Each record is kept in its user and announced (feed_ops).
 * On any reconnect: a new snapshot.
 *
 * Users a reload adds are read on a second connection, since the blocking XREAD cannot be
 * cancelled on its own: MULTI { the stream's last id P; their hashes }. Each user keeps
 * the stream id its record reflects (rec_id): the snapshot's or P for a read, an event's
 * own id for an event. An event no newer than rec_id is already in the record and is not
 * applied; a read whose P is older than an event already applied to that user (the XREAD
 * got there first) is not applied. So the stream goes on from where it was, nothing is
 * missed or applied twice, and nobody else's state is read or sent again. */
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
    struct redislink *reader;  /* one-off reads of added users, beside the blocking XREAD */
    char **added_jids;         /* users asked for in the read out on it, in order */
    size_t nadded;
    bool reading;              /* that read is out */
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

/* Stream ids "ms-seq" are compared as numbers, "" (none) before everything; each user
 * keeps its own parsed (struct cuser rec_id). u's := id ("": none). */
static void id_keep(struct cuser *u, const char *id)
{
    unsigned long long ms = 0, seq = 0;

    u->rec_id_set = id[0] != '\0';
    if (u->rec_id_set)
        (void)sscanf(id, "%llu-%llu", &ms, &seq);
    u->rec_id[0] = ms;
    u->rec_id[1] = seq;
}

/* id against u's stream id: <0, 0, >0. */
static int id_cmp_user(const char *id, const struct cuser *u)
{
    unsigned long long ms = 0, seq = 0;

    if (!id[0] || !u->rec_id_set)
        return id[0] ? 1 : u->rec_id_set ? -1 : 0;
    (void)sscanf(id, "%llu-%llu", &ms, &seq);
    if (ms != u->rec_id[0])
        return ms < u->rec_id[0] ? -1 : 1;
    return seq < u->rec_id[1] ? -1 : seq > u->rec_id[1];
}

/* Keeps rec as jid's state (NULL: sipbridge removed the user) as of stream id id.
 * Returns that user, or NULL when jid is not one of ours (another deployment's, or not
 * configured here). */
static struct cuser *keep(struct feed *f, const char *jid, const struct user_record *rec,
                          const char *id)
{
    struct cuser *u = users_by_jid(f->d, jid);

    if (!u)
        return NULL;
    users_set_record(u, rec);
    u->rec_at_ms = clock_wall_ms();
    id_keep(u, id);
    log_trace(&u->trace, "feed", "event=trace_record user=%s state=%s",
              jid, rec ? user_state_name(rec->state) : "removed");
    return u;
}

/* An event for jid at stream id id that the user's record already reflects (read after
 * it was written): not applied again. */
static bool seen_event(struct feed *f, const char *jid, const char *id)
{
    struct cuser *u = users_by_jid(f->d, jid);

    return u && id_cmp_user(id, u) <= 0;
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
static void on_reader(struct redislink *l, bool up, void *arg);

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
            if (se.kind != STREAM_COMMAND && seen_event(f, se.user, f->last_id)) {
                f->ops.on_event(f->arg, NULL, 0); /* still proves sipbridge alive */
                continue;
            }
            switch (se.kind) {
            case STREAM_COMMAND:
                command(f, se.cmd, se.user);
                break;
            case STREAM_REMOVED:
                f->ops.on_event(f->arg, keep(f, se.user, NULL, f->last_id), 0);
                break;
            case STREAM_STATE:
                if (users_by_jid(f->d, se.user))
                    check_record(f, se.user, names, values, (size_t)n, &se.rec);
                u = keep(f, se.user, &se.rec, f->last_id);
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
        /* Whatever is kept below, it stands for the stream up to last_id. */
        u->rec_read = true;
        id_keep(u, f->last_id);
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
        (void)keep(f, f->snapshot_jids[i], &rec, f->last_id);
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

/* Queues the snapshot script (storecodec_snapshot_script) on l for every user, or only
 * those whose record was never read (only_unread): the stream's last id, then their
 * hashes. One read-only script, not MULTI ... EXEC: Redis at maxmemory refuses every
 * command queued in a MULTI, and a component started then never loaded its users' states.
 * *jids gets the users asked for, in order (caller frees, free_jids); *n their count, 0
 * when there was nobody to read (nothing queued). Returns 0, or -1 when the command could
 * not be queued. */
static int read_users(struct feed *f, struct redislink *l, redislink_reply_fn fn,
                      bool only_unread, char ***jids, size_t *n)
{
    size_t pos = 0, i = 0, max = f->d->by_jid.count;
    const char **argv = xcalloc(max + 4, sizeof *argv);
    char **keys = xcalloc(max + 1, sizeof *keys);
    char numkeys[24];
    const char *k;
    void *v;
    int argc = 0, rc = 0;

    *jids = xcalloc(max + 1, sizeof **jids);
    argv[argc++] = "EVAL";
    argv[argc++] = storecodec_snapshot_script;
    argv[argc++] = numkeys;
    argv[argc++] = f->events_key;
    while (strmap_next(&f->d->by_jid, &pos, &k, &v)) {
        char key[4096];
        if (only_unread && ((struct cuser *)v)->rec_read)
            continue;
        if (storecodec_key_user(f->d->cfg->redis_prefix, k, key, sizeof key) < 0)
            continue;
        (*jids)[i] = xstrdup(k);
        keys[i] = xstrdup(key);
        argv[argc++] = keys[i++];
    }
    *n = i;
    snprintf(numkeys, sizeof numkeys, "%zu", i + 1);
    if ((i || !only_unread) && redislink_command_argv(l, fn, f, argc, argv, NULL) < 0)
        rc = -1;
    for (size_t j = 0; j < i; j++)
        free(keys[j]);
    free(keys);
    free(argv);
    return rc;
}

static void snapshot(struct feed *f)
{
    free_snapshot(f);
    if (read_users(f, f->link, on_snapshot, false, &f->snapshot_jids, &f->nsnapshot) < 0) {
        free_snapshot(f);
        redislink_reset(f->link, "cannot queue snapshot");
    }
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
    f->reader = redislink_new(base, d->cfg, "feed_read", 10000, on_reader, f);
    return f;
}

/* ---- users a reload added: read on the second connection ------------------------------ */

static void free_added(struct feed *f)
{
    for (size_t i = 0; i < f->nadded; i++)
        free(f->added_jids[i]);
    free(f->added_jids);
    f->added_jids = NULL;
    f->nadded = 0;
}

static void read_added(struct feed *f);

static void on_added_read(struct redislink *l, redisReply *r, void *arg)
{
    struct feed *f = arg;
    const redisReply *last;
    char at[64] = "0-0";
    size_t loaded = 0, stale = 0;

    f->reading = false;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != f->nadded + 1) {
        if (r)
            log_err("feed", "event=read_failed what=added_users error=%s",
                    log_q(r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply"));
        free_added(f);
        return; /* read again once the connection is back (or by the next snapshot) */
    }
    last = r->element[0];
    if (last->type == REDIS_REPLY_ARRAY && last->elements == 1 &&
        last->element[0]->type == REDIS_REPLY_ARRAY && last->element[0]->elements == 2 &&
        last->element[0]->element[0]->type == REDIS_REPLY_STRING)
        str_copy(at, sizeof at, last->element[0]->element[0]->str);
    for (size_t i = 0; i < f->nadded; i++) {
        const char *names[STORE_FIELDS_MAX + 2], *values[STORE_FIELDS_MAX + 2];
        long n = pairs(r->element[i + 1], names, values, STORE_FIELDS_MAX + 2);
        struct cuser *u = users_by_jid(f->d, f->added_jids[i]);
        struct user_record rec;
        char err[128];

        if (!u || u->rec_read)
            continue; /* gone again, or a snapshot read it meanwhile */
        u->rec_read = true;
        if (id_cmp_user(at, u) < 0) {
            stale++; /* the XREAD applied a newer event already */
        } else if (n > 0 && storecodec_decode(names, values, (size_t)n, &rec, err,
                                              sizeof err) == 0) {
            check_record(f, u->jid, names, values, (size_t)n, &rec);
            (void)keep(f, u->jid, &rec, at);
            loaded++;
        } else {
            if (n > 0)
                bad_record(f, u->jid, err);
            id_keep(u, at);
        }
        f->ops.on_loaded(f->arg, u);
    }
    log_notice("feed", "event=users_read users=%zu with_state=%zu newer_in_stream=%zu "
                       "stream_id=%s",
               f->nadded, loaded, stale, log_q(at));
    free_added(f);
    read_added(f); /* users added while this read was out */
}

/* The users whose record was never read (a reload added them), on the second
 * connection: the snapshot script for them alone. */
static void read_added(struct feed *f)
{
    if (f->reading || !redislink_up(f->reader))
        return;
    if (read_users(f, f->reader, on_added_read, true, &f->added_jids, &f->nadded) < 0) {
        free_added(f);
        redislink_reset(f->reader, "cannot queue the read of added users");
        return;
    }
    if (!f->nadded) {
        free_added(f);
        return;
    }
    f->reading = true;
}

void feed_users_added(struct feed *f)
{
    read_added(f);
}

static void on_reader(struct redislink *l, bool up, void *arg)
{
    struct feed *f = arg;

    if (up)
        read_added(f);
}

void feed_free(struct feed *f)
{
    if (!f)
        return;
    redislink_free(f->link);
    redislink_free(f->reader);
    free_snapshot(f);
    free_added(f);
    free(f);
}
