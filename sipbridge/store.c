/* User state to Redis: hash + stream entry per change in one script, with a per-user
 * pending slot while the link is down. On every reconnect the users whose latest state
 * was already written are checked again (storecodec_write_script's "check"): a Redis
 * that restarted without persistence, was flushed, or is a new master that lacked the
 * old one's last writes (Sentinel failover) has lost them; those are written again, with
 * an event. Every write carries this member's lease (fencing): a write refused because
 * the lease was lost is held until the next lease; one refused because another member
 * owns the user is dropped; both go up to the owner (store_on_fenced). A handover's claim
 * that found a newer state of the live old owner in Redis only took the ownership
 * (STORECODEC_CLAIM_KEPT): the latest state is written again CLAIM_RESEND_MS later, as
 * the owner, unless a change has written it before. */
#include "store.h"

#include <stddef.h>
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
#include "timerq.h"

#define REWRITE_BATCH 1000 /* users rewritten per loop turn after a reconnect */
/* After a claim that kept the old owner's newer state: long enough for this member's own
 * subscription to bring that newer NOTIFY too (the two subscriptions' NOTIFYs are not
 * ordered, and they differ by the PBX's queueing, milliseconds), short enough that a clock
 * skew between hosts delays the final state by about this, never more. */
#define CLAIM_RESEND_MS 1000

/* A user's record while it carries something the owner's (store_owner_ops) does not: a
 * write pending or in flight, a removal, a claim's resend (entry_done frees it after).
 * The JID is in the same allocation. */
struct entry {
    struct store_rec rec;
    uint64_t gen;        /* bumped on each put */
    uint64_t written;    /* gen confirmed by Redis; gen != written means unwritten */
    struct store *st;    /* its store (the resend timer's callback) */
    struct tq_timer resend; /* armed after a claim kept a newer state (claim_kept) */
    unsigned nflight;    /* commands in flight that point at it (struct inflight) */
    bool removed;        /* the latest change is a removal */
    bool owned;          /* this member writes it (false once handed over: store_release) */
    bool claim;          /* its writes claim the user (see storecodec_write_script) */
    bool resent;         /* rec's ts was brought forward by a resend: rec is no longer the
                          * owner's, so it stays until the next put or the release */
    char jid[];          /* the map's key */
};

struct store {
    struct redislink *link;
    struct timerq *tq;         /* the entries' resend timers */
    struct event *beat;        /* heartbeat:sipbridge refresh */
    char *beat_key;
    void (*on_up)(void *arg);
    void *on_up_arg;
    struct strmap entries; /* jid -> struct entry*: only the users that need one */
    struct store_owner_ops owner; /* the other users' records (bridge.c) */
    void *owner_arg;
    char *prefix;
    char *events_key;
    int npending;          /* entries with gen != written */
    char *rw;              /* JIDs to check after a reconnect, one after the other, and */
    size_t *rw_at;         /* where each begins (a copy: users come and go meanwhile) */
    size_t nrw, rw_pos, rw_len, rw_cap;
    struct event *rw_ev;
    unsigned long refused; /* writes refused since the last accepted one */
    struct event *retry_ev; /* re-sends the unwritten users after a refusal */
    struct backoff bo;
    char *members_key;     /* sipbridge's members hash: the fencing check */
    char name[STORECODEC_MEMBER_NAME_MAX + 1]; /* this member's lease: every write */
    char epoch[24];        /* carries it; "" = no lease yet: writes are held */
    bool fenced;           /* a write was refused for a lost lease: held until the next */
    bool script_sent;      /* the write script's text went out on this connection: the
                            * writes behind it go by EVALSHA (storecodec.c says why) */
    unsigned long noscript; /* NOSCRIPT replies since the last accepted write (logged once) */
    void (*on_fenced)(void *arg, const char *jid, bool lease_lost);
    void *on_fenced_arg;
};

struct inflight {
    struct store *st;
    struct entry *e;
    uint64_t gen;
    char epoch[24];        /* the lease it was sent with */
};

static struct metric *m_pending, *m_writes, *m_rewrites, *m_repairs, *m_claims_kept;

void store_register_metrics(void)
{
    m_pending = metric_new(METRIC_GAUGE, "offhook_store_pending_users",
                           "Users whose latest state waits for Redis (bounded by users).", NULL,
                           NULL);
    m_writes = metric_new(METRIC_COUNTER, "offhook_store_writes_total",
                          "User state writes to Redis, by result (fenced: refused for a lost "
                          "lease, or a user another sipbridge owns now; noscript: Redis had "
                          "lost the write script, sent again with its text).",
                          "result",
                          (const char *const[]){"ok", "error", "retried", "fenced", "noscript",
                                                NULL});
    m_rewrites = metric_new(METRIC_COUNTER, "offhook_store_rewrites_total",
                            "Users checked again after a Redis reconnect.", NULL, NULL);
    m_repairs = metric_new(METRIC_COUNTER, "offhook_store_repairs_total",
                           "Users whose latest state Redis had lost, found after a reconnect "
                           "(restart, failover) and written again with an event.",
                           NULL, NULL);
    m_claims_kept = metric_new(METRIC_COUNTER, "offhook_store_claims_kept_total",
                               "Handover claims that found a newer state of the live previous "
                               "owner in Redis: only the ownership moved, and the latest state "
                               "was written again shortly after.",
                               NULL, NULL);
}

static void update_pending_metric(struct store *st)
{
    metric_set(m_pending, NULL, st->npending);
}

static void flush(struct store *st);
static void on_written(struct redislink *l, redisReply *r, void *arg);

/* Frees e if it carries nothing the owner's record does not: nothing in flight, nothing
 * unwritten, no resend due, its rec the owner's. */
static void entry_done(struct store *st, struct entry *e)
{
    if (e->nflight || e->gen != e->written || tq_armed(&e->resend) ||
        (e->resent && e->owned && !e->removed))
        return;
    strmap_del(&st->entries, e->jid);
    store_rec_clear(&e->rec);
    free(e);
}

/* The end of f's command: f is freed, and its entry if nothing else needs it. */
static void flight_end(struct inflight *f)
{
    struct store *st = f->st;
    struct entry *e = f->e;

    free(f);
    e->nflight--;
    entry_done(st, e);
}

/* Writes may go out now: the link is up, Redis takes writes, and a lease is held. */
static bool can_send(const struct store *st)
{
    return redislink_up(st->link) && !st->refused && st->epoch[0] && !st->fenced;
}

static void mark_written(struct store *st, struct entry *e, uint64_t gen)
{
    if (gen > e->written) {
        bool was_unwritten = e->written != e->gen;
        e->written = gen;
        if (was_unwritten && e->written == e->gen)
            st->npending--;
    }
}

/* A write refused by the fencing check: true if r was one (handled). */
static bool fenced(struct store *st, struct inflight *f, const redisReply *r)
{
    struct entry *e = f->e;

    if (r->type != REDIS_REPLY_ERROR || !r->str)
        return false;
    if (strncmp(r->str, STORECODEC_FENCED_LEASE, strlen(STORECODEC_FENCED_LEASE)) == 0) {
        /* Another member found this one dead and took its users: everything is held
         * until the next lease (store_set_lease), then written as that lease decides. */
        metric_inc(m_writes, "fenced");
        if (strcmp(f->epoch, st->epoch) == 0 && !st->fenced) {
            st->fenced = true;
            log_warn("store", "event=fenced reason=lease_lost epoch=%s user=%s "
                              "action=\"holding writes until the lease is renewed\"",
                     f->epoch, log_q(e->jid));
        }
        if (st->on_fenced)
            st->on_fenced(st->on_fenced_arg, e->jid, true);
        return true;
    }
    if (strncmp(r->str, STORECODEC_FENCED_OWNER, strlen(STORECODEC_FENCED_OWNER)) == 0) {
        /* Handed over, and the new owner has written: this state is not ours to write. */
        metric_inc(m_writes, "fenced");
        mark_written(st, e, f->gen);
        log_debug("store", "event=fenced reason=owned_elsewhere user=%s %s", log_q(e->jid),
                  log_q(r->str));
        if (st->on_fenced)
            st->on_fenced(st->on_fenced_arg, e->jid, false);
        return true;
    }
    return false;
}

static int send_record(struct store *st, struct entry *e, bool check, bool text,
                       redislink_reply_fn fn);

/* A write or check that found Redis' script cache empty (SCRIPT FLUSH, or a promoted
 * replica that never ran it): true if r was one (handled). It did nothing, so this is
 * the user's latest state that has not reached Redis; it goes again with the script's
 * text (EVAL, which also caches it for the EVALSHAs behind). Only the reply to the
 * latest gen sent sends again, from the entry's state now: a later write's own reply
 * (accepted, or NOSCRIPT too) covers an older one, so no older state ever lands after
 * a newer. Held (not sent) without a lease: the next lease's flush sends it. Sent even
 * during a run of refusals: it may be retry_refused's probe, whose answer ends the run. */
static bool on_noscript(struct store *st, struct inflight *f, const redisReply *r, bool check,
                        redislink_reply_fn fn)
{
    struct entry *e = f->e;

    if (r->type != REDIS_REPLY_ERROR || !r->str ||
        strncmp(r->str, STORECODEC_NOSCRIPT, strlen(STORECODEC_NOSCRIPT)) != 0)
        return false;
    metric_inc(m_writes, "noscript");
    if (st->noscript++ == 0)
        log_notice("store", "event=script_missing user=%s "
                            "action=\"sending the write again with the script text\"",
                   log_q(e->jid));
    if (f->gen != e->gen || !redislink_up(st->link) || !st->epoch[0] || st->fenced)
        return true;
    if (!check && e->gen == e->written)
        return true;
    if (send_record(st, e, check, true, fn) == -1)
        redislink_reset(st->link, "cannot queue a write");
    return true;
}

/* The latest state of a user whose claim kept a newer one (CLAIM_RESEND_MS after): it is
 * written again as the owner's, so the last word in Redis is this live subscriber's. Its
 * ts is brought to now, the time this member vouches for that state: the component, on a
 * snapshot, keeps what it holds over an older ts. */
static void resend_due(struct tq_timer *t)
{
    struct entry *e = (struct entry *)((char *)t - offsetof(struct entry, resend));
    struct store *st = e->st;
    int64_t now = clock_wall_us();

    if (!e->owned || e->removed || !e->gen || e->gen != e->written) {
        entry_done(st, e);
        return; /* handed over, or a change is on its way (written as the owner) */
    }
    if (!can_send(st)) {
        /* A reconnect's check would also do, but not a refusal's end: try again. */
        tq_arm(st->tq, &e->resend, resend_due, CLAIM_RESEND_MS);
        return;
    }
    if (e->rec.event_us < now) {
        e->rec.event_us = now;
        e->resent = true;
    }
    log_debug("store", "event=claim_resent user=%s", log_q(e->jid));
    if (send_record(st, e, false, false, on_written) == -1)
        redislink_reset(st->link, "cannot queue a resend");
    entry_done(st, e);
}

/* A claim (of f's write) that only took the ownership (STORECODEC_CLAIM_KEPT): true if r
 * says so; the latest state then goes out again later (resend_due). */
static bool claim_kept(struct store *st, struct inflight *f, const redisReply *r)
{
    struct entry *e = f->e;

    if (r->type != REDIS_REPLY_INTEGER || r->integer != STORECODEC_CLAIM_KEPT)
        return false;
    metric_inc(m_claims_kept, NULL);
    log_debug("store", "event=claim_kept user=%s resend_ms=%d", log_q(e->jid),
              CLAIM_RESEND_MS);
    if (!tq_armed(&e->resend))
        tq_arm(st->tq, &e->resend, resend_due, CLAIM_RESEND_MS);
    return true;
}

static void on_written(struct redislink *l, redisReply *r, void *arg)
{
    struct inflight *f = arg;
    struct store *st = f->st;
    struct entry *e = f->e;

    if (r && on_noscript(st, f, r, false, on_written)) {
        update_pending_metric(st);
        flight_end(f);
        return;
    }
    if (r && fenced(st, f, r)) {
        update_pending_metric(st);
        flight_end(f);
        return;
    }
    if (r && r->type != REDIS_REPLY_ERROR) {
        mark_written(st, e, f->gen);
        metric_inc(m_writes, "ok");
        st->noscript = 0;
        (void)claim_kept(st, f, r);
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
    flight_end(f);
}

/* Queues the write of e's latest state with a stream entry, or with check only if Redis
 * holds something else (storecodec_write_script), under this member's lease. By EVALSHA,
 * except the first on a connection and when text is set (after NOSCRIPT): EVAL, whose
 * text Redis caches before it runs any command queued behind. fn gets the reply with an
 * inflight (owned by fn). Returns 0, -1 if it could not be queued, or -2 for a JID too
 * long for a key (nothing queued). */
static int send_record(struct store *st, struct entry *e, bool check, bool text,
                       redislink_reply_fn fn)
{
    char key[2048];
    struct store_fields f;
    const char *argv[11 + 2 * STORE_FIELDS_MAX];
    struct inflight *fl;
    int argc = 0;

    if (storecodec_key_user(st->prefix, e->jid, key, sizeof key) < 0)
        return -2;
    fl = xmalloc(sizeof *fl);
    fl->st = st;
    fl->e = e;
    fl->gen = e->gen;
    e->nflight++;
    str_copy(fl->epoch, sizeof fl->epoch, st->epoch);
    text = text || !st->script_sent;
    argv[argc++] = text ? "EVAL" : "EVALSHA";
    argv[argc++] = text ? storecodec_write_script : storecodec_write_script_sha;
    argv[argc++] = "3";
    argv[argc++] = key;
    argv[argc++] = st->events_key;
    argv[argc++] = st->members_key;
    argv[argc++] = e->jid;
    argv[argc++] = st->name;
    argv[argc++] = st->epoch;
    argv[argc++] = check ? "check" : "write";
    argv[argc++] = e->claim ? "1" : "0";
    if (!e->removed) {
        struct user_record full;
        store_rec_expand(&e->rec, &full);
        storecodec_encode(&full, &f);
        for (int i = 0; i < f.n; i++) {
            argv[argc++] = f.name[i];
            argv[argc++] = f.value[i];
        }
    }
    if (redislink_command_argv(st->link, fn, fl, argc, argv, NULL) < 0) {
        free(fl);
        e->nflight--;
        return -1;
    }
    if (text)
        st->script_sent = true;
    return 0;
}

/* Queues the write of e's latest state with its change event. */
static void send_entry(struct store *st, struct entry *e)
{
    if (send_record(st, e, false, false, on_written) == -1)
        redislink_reset(st->link, "cannot queue a write");
}

/* The answer to a check (repair after a reconnect, or a claim). */
static void on_checked(struct redislink *l, redisReply *r, void *arg)
{
    struct inflight *f = arg;

    if (r && on_noscript(f->st, f, r, true, on_checked)) {
        flight_end(f);
        return;
    }
    if (r && !fenced(f->st, f, r) && !claim_kept(f->st, f, r) &&
        r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        metric_inc(m_repairs, NULL);
    flight_end(f);
}

/* A record for the check of jid, a user the owner holds and has handed a state over
 * (store_owner_ops.get), that needs none while nothing of it is in flight: written. */
static struct entry *entry_new(struct store *st, const char *jid, bool claim);

static struct entry *check_entry(struct store *st, const char *jid, const struct store_rec *r,
                                 bool claim)
{
    struct entry *e = entry_new(st, jid, claim);

    store_rec_copy(&e->rec, r);
    e->owned = true;
    e->gen = e->written = 1;
    return e;
}

static void rewrite_clear(struct store *st)
{
    free(st->rw);
    free(st->rw_at);
    st->rw = NULL;
    st->rw_at = NULL;
    st->nrw = st->rw_pos = st->rw_len = st->rw_cap = 0;
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
        const char *jid = st->rw + st->rw_at[st->rw_pos];
        struct entry *e = strmap_get(&st->entries, jid);
        const struct store_rec *rec = NULL;
        bool claim = true;
        int rc;

        if (e) {
            if (e->gen != e->written || e->removed || !e->owned || !e->gen)
                continue; /* on its way with an event, nothing to hold, or not ours */
        } else if (!st->owner.get || !st->owner.get(st->owner_arg, jid, &rec, &claim)) {
            continue; /* gone meanwhile, or nothing written yet */
        }
        if (!can_send(st))
            return; /* the next connection or lease starts over */
        if (!e)
            e = check_entry(st, jid, rec, claim);
        rc = send_record(st, e, true, false, on_checked);
        entry_done(st, e);
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
    rewrite_clear(st);
}

static void rewrite_add(void *arg, const char *jid)
{
    struct store *st = arg;
    size_t n = strlen(jid) + 1;

    if (st->rw_len + n > st->rw_cap) {
        st->rw_cap = (st->rw_len + n) * 2;
        st->rw = xrealloc(st->rw, st->rw_cap);
    }
    if (st->nrw % 1024 == 0)
        st->rw_at = xrealloc(st->rw_at, (st->nrw + 1024) * sizeof *st->rw_at);
    memcpy(st->rw + st->rw_len, jid, n);
    st->rw_at[st->nrw++] = st->rw_len;
    st->rw_len += n;
}

/* Every user the owner holds is checked again (rewrite_step), from its JID: the users
 * may come and go during the check. */
static void rewrite_start(struct store *st)
{
    struct timeval now = {0, 0};

    rewrite_clear(st);
    if (st->owner.each)
        st->owner.each(st->owner_arg, rewrite_add, st);
    evtimer_add(st->rw_ev, &now);
}

static void flush(struct store *st)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;

    if (!can_send(st))
        return;
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

    if (!redislink_up(st->link) || !st->epoch[0] || st->fenced)
        return; /* the reconnect, or the next lease, flushes everything */
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

    st->script_sent = false; /* a new connection may be a new (or emptied) Redis */
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
    if (storecodec_key_members(cfg->redis_prefix, "sipbridge", key, sizeof key) < 0)
        key[0] = '\0';
    st->members_key = xstrdup(key);
    st->tq = timerq_new(base);
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
    rewrite_clear(st);
    redislink_free(st->link); /* in-flight callbacks run now, with NULL replies (entries
                               * with nothing else left are freed by them) */
    while (strmap_next(&st->entries, &pos, &k, &v)) {
        struct entry *e = v;
        tq_cancel(st->tq, &e->resend);
        store_rec_clear(&e->rec);
        free(e);
    }
    strmap_free(&st->entries);
    timerq_free(st->tq);
    free(st->prefix);
    free(st->events_key);
    free(st->beat_key);
    free(st->members_key);
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

static struct entry *entry_new(struct store *st, const char *jid, bool claim)
{
    size_t n = offsetof(struct entry, jid) + strlen(jid) + 1;
    struct entry *e = xcalloc(1, n > sizeof *e ? n : sizeof *e);

    memcpy(e->jid, jid, strlen(jid) + 1);
    e->claim = claim;
    e->st = st;
    strmap_put(&st->entries, e->jid, e);
    return e;
}

/* jid's entry for a change (made if it has none). */
static struct entry *entry_for(struct store *st, const char *jid, bool claim)
{
    struct entry *e = strmap_get(&st->entries, jid);

    if (!e)
        e = entry_new(st, jid, claim);
    e->claim = claim;
    return e;
}

void store_set_owner(struct store *st, const struct store_owner_ops *ops, void *arg)
{
    if (ops)
        st->owner = *ops;
    else
        memset(&st->owner, 0, sizeof st->owner);
    st->owner_arg = arg;
}

static void changed(struct store *st, struct entry *e)
{
    tq_cancel(st->tq, &e->resend); /* this change is the latest state: it goes out now */
    e->owned = true;
    if (e->gen == e->written)
        st->npending++;
    e->gen++;
    if (can_send(st))
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

void store_put(struct store *st, const char *jid, const struct store_rec *r, bool claim)
{
    struct entry *e = entry_for(st, jid, claim);

    store_rec_copy(&e->rec, r);
    e->removed = false;
    e->resent = false;
    changed(st, e);
}

void store_remove(struct store *st, const char *jid, bool claim)
{
    struct entry *e = entry_for(st, jid, claim);

    store_rec_clear(&e->rec);
    e->removed = true;
    e->resent = false;
    changed(st, e);
}

void store_on_fenced(struct store *st, void (*fn)(void *arg, const char *jid, bool lease_lost),
                     void *arg)
{
    st->on_fenced = fn;
    st->on_fenced_arg = arg;
}

void store_set_lease(struct store *st, const char *name, uint64_t epoch)
{
    char e[sizeof st->epoch] = "";

    if (epoch)
        snprintf(e, sizeof e, "%llu", (unsigned long long)epoch);
    if (strcmp(e, st->epoch) == 0 && strcmp(name, st->name) == 0)
        return;
    str_copy(st->name, sizeof st->name, name);
    str_copy(st->epoch, sizeof st->epoch, e);
    if (st->fenced)
        log_notice("store", "event=unfenced epoch=%s", st->epoch[0] ? st->epoch : "none");
    st->fenced = false;
    flush(st); /* what was held for want of a lease */
    /* A check of every written user that a reconnect began stops where it found no lease
     * (rewrite_step): a Redis that restarted empty gives the lease back after the store's
     * link is up, and the users that did not change meanwhile would stay missing there
     * until their next change. A new lease checks them all again. */
    if (st->epoch[0] && redislink_up(st->link))
        rewrite_start(st);
}

void store_set_claim(struct store *st, const char *jid, bool claim)
{
    struct entry *e = strmap_get(&st->entries, jid);

    if (e)
        e->claim = claim;
}

void store_claim(struct store *st, const char *jid, const struct store_rec *r)
{
    struct entry *e = strmap_get(&st->entries, jid);

    if (e && (!e->owned || e->removed || !e->gen || e->gen != e->written || !e->claim))
        return; /* unwritten ones go out with the claim anyway */
    if (!can_send(st))
        return;
    if (!e)
        e = check_entry(st, jid, r, true);
    if (send_record(st, e, true, false, on_checked) == -1)
        redislink_reset(st->link, "cannot queue a claim");
    entry_done(st, e);
}

void store_release(struct store *st, const char *jid)
{
    struct entry *e = strmap_get(&st->entries, jid);

    if (!e)
        return;
    e->owned = false;
    tq_cancel(st->tq, &e->resend);
    mark_written(st, e, e->gen); /* not ours to write any more */
    update_pending_metric(st);
    entry_done(st, e);
}

/* ---- owners ---------------------------------------------------------------------------- */

struct owners_req {
    void (*fn)(void *arg, const char *const *owners, size_t n, bool ok);
    void *arg;
    char **owners;
    size_t n, left;
    bool ok;
};

struct owner_slot {
    struct owners_req *req;
    size_t i;
};

static void on_owner(struct redislink *l, redisReply *r, void *arg)
{
    struct owner_slot *slot = arg;
    struct owners_req *req = slot->req;

    if (!r || r->type == REDIS_REPLY_ERROR)
        req->ok = false;
    else if (r->type == REDIS_REPLY_STRING)
        req->owners[slot->i] = xstrdup(r->str);
    free(slot);
    if (--req->left)
        return;
    req->fn(req->arg, (const char *const *)req->owners, req->n, req->ok);
    for (size_t i = 0; i < req->n; i++)
        free(req->owners[i]);
    free(req->owners);
    free(req);
}

int store_read_owners(struct store *st, const char *const *jids, size_t n,
                      void (*fn)(void *arg, const char *const *owners, size_t n, bool ok),
                      void *arg)
{
    struct owners_req *req;
    size_t queued = 0;

    if (!redislink_up(st->link) || n == 0)
        return -1;
    req = xcalloc(1, sizeof *req);
    req->fn = fn;
    req->arg = arg;
    req->n = n;
    req->owners = xcalloc(n, sizeof *req->owners);
    req->ok = true;
    req->left = n; /* replies come from the loop, never while queueing */
    for (; queued < n; queued++) {
        char key[2048];
        struct owner_slot *slot = xmalloc(sizeof *slot);
        slot->req = req;
        slot->i = queued;
        if (storecodec_key_user(st->prefix, jids[queued], key, sizeof key) < 0 ||
            redislink_command(st->link, on_owner, slot, "HGET %s owner", key) < 0) {
            free(slot);
            break;
        }
    }
    if (queued == n)
        return 0;
    if (queued == 0) {
        free(req->owners);
        free(req);
        redislink_reset(st->link, "cannot queue an owner read");
        return -1;
    }
    /* The reset answers the ones queued (NULL replies), the last of them calling fn. */
    req->ok = false;
    req->left = queued;
    redislink_reset(st->link, "cannot queue an owner read");
    return 0;
}

void store_sub_clear(struct store *st, const char *jid)
{
    char key[2048];

    if (redislink_up(st->link) && storecodec_key_subs(st->prefix, jid, key, sizeof key) == 0 &&
        redislink_command(st->link, NULL, NULL, "DEL %s", key) < 0)
        redislink_reset(st->link, "cannot queue a delete");
}
