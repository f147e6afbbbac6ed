/* The users in force from a directory: checked sets from dir_ldap.c, the last known copy
 * in Redis, the state said in metrics, log and /readyz. */
#include "directory.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "dir_ldap.h"
#include "dirbuild.h"
#include "log.h"
#include "metrics.h"
#include "redislink.h"
#include "storecodec.h"
#include "strmap.h"
#include "strutil.h"

#define REDIS_STALL_MS 10000

struct directory {
    struct event_base *base;
    bool ldap;                   /* source = ldap; else nothing below is used */
    struct offhook_config keys;  /* a copy of the keys (domain, template, attributes) */
    char *daemon;
    directory_changed_fn changed;
    void *arg;
    struct dir_ldap *session;
    struct redislink *redis;
    char key_users[512], key_meta[512];

    /* The users in force (checked), and their encodings, to tell a change from none. */
    struct cfg_user *users;
    size_t nusers;
    struct strmap enc;           /* JID -> encoding of the user in force (owned) */
    bool have_users;             /* from the directory or its last known copy */
    bool from_directory;         /* ... from the directory itself, in this process */

    bool up;                     /* the directory answers */
    bool said_down;              /* the outage was logged */
    const char *mode;
    char error[256];
    int64_t down_since_ms;       /* wall clock */
    struct dir_report report;    /* the last sync's, logged when it changes */

    /* The last known copy in Redis. */
    bool copy_read;              /* read since the link last came up */
    bool copy_reading;
    struct strmap saved;         /* JID -> encoding, as Redis holds it to our knowledge */
};

static struct metric *m_up, *m_users, *m_skipped, *m_updates, *m_errors, *m_last_sync,
    *m_sync_seconds, *m_mode;

void directory_register_metrics(void)
{
    static const char *const kinds[] = {"session", "empty", "copy", NULL};
    static const char *const modes[] = {"config", "syncrepl", "poll", NULL};
    m_up = metric_new(METRIC_GAUGE, "offhook_directory_up",
                      "1 while the user directory answers (always with source = config); 0 "
                      "while the last known users are served.",
                      NULL, NULL);
    m_users = metric_new(METRIC_GAUGE, "offhook_directory_users",
                         "Users in force, from the directory or its last known copy.", NULL,
                         NULL);
    m_skipped = metric_new(METRIC_GAUGE, "offhook_directory_skipped_entries",
                           "Directory entries left out of the last sync, by reason.", "reason",
                           dir_skip_names);
    m_updates = metric_new(METRIC_COUNTER, "offhook_directory_updates_total",
                           "Changed sets of users taken from the directory (full syncs and "
                           "changes) or from its last known copy.",
                           NULL, NULL);
    m_errors = metric_new(METRIC_COUNTER, "offhook_directory_errors_total",
                          "Directory problems: session (connect, bind, search, lost), empty (a "
                          "sync that listed no usable user was refused), copy (the last known "
                          "copy could not be read or written).",
                          "kind", kinds);
    m_last_sync = metric_new(METRIC_GAUGE, "offhook_directory_last_sync_timestamp_seconds",
                             "When the directory last delivered its users (Unix time).", NULL,
                             NULL);
    m_sync_seconds = metric_new(METRIC_GAUGE, "offhook_directory_sync_seconds",
                                "How long the last full read of the directory took.", NULL,
                                NULL);
    m_mode = metric_new(METRIC_GAUGE, "offhook_directory_mode",
                        "1 for the way users are taken: config (the file), syncrepl (RFC 4533 "
                        "persistent search) or poll.",
                        "mode", modes);
}

/* ---- users in force ------------------------------------------------------------------- */

static void free_users(struct cfg_user *users, size_t n)
{
    for (size_t i = 0; i < n; i++)
        config_user_free(&users[i]);
    free(users);
}

static void enc_clear(struct strmap *m)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(m, &pos, &k, &v)) {
        free((char *)k);
        free(v);
    }
    strmap_free(m);
    strmap_init(m);
}

/* Replaces the users in force with users[0..n) (taken) unless they are the same. Returns
 * true if they changed (and tells the daemon). */
static bool install(struct directory *d, struct cfg_user *users, size_t n)
{
    struct strmap enc;
    bool same = d->have_users && n == d->nusers;

    strmap_init(&enc);
    for (size_t i = 0; i < n; i++) {
        char *e = dirbuild_encode(&users[i]);
        const char *cur = strmap_get(&d->enc, users[i].jid);
        same = same && cur && strcmp(cur, e) == 0;
        strmap_put(&enc, xstrdup(users[i].jid), e);
    }
    if (same) {
        enc_clear(&enc);
        strmap_free(&enc);
        free_users(users, n);
        return false;
    }
    enc_clear(&d->enc);
    strmap_free(&d->enc);
    d->enc = enc;
    free_users(d->users, d->nusers);
    d->users = users;
    d->nusers = n;
    d->have_users = true;
    metric_set(m_users, NULL, (double)n);
    metric_inc(m_updates, NULL);
    d->changed(d->arg);
    return true;
}

/* ---- the last known copy --------------------------------------------------------------- */

static void read_copy(struct directory *d);

static void on_saved(struct redislink *l, redisReply *r, void *arg)
{
    struct directory *d = arg;
    const char *why = NULL;

    if (!r) {
        d->copy_read = false; /* link down: read again when it is back */
        return;
    }
    if (r->type == REDIS_REPLY_ERROR)
        why = r->str;
    else if (r->type != REDIS_REPLY_ARRAY)
        why = "transaction aborted";
    for (size_t i = 0; !why && i < r->elements; i++) {
        if (r->element[i]->type == REDIS_REPLY_ERROR)
            why = r->element[i]->str;
    }
    if (!why)
        return;
    /* Not written (or not known to be): read it again before the next write. */
    log_warn("directory", "event=last_known_not_saved key=%s reason=%s", log_q(d->key_users),
             log_q(why));
    metric_inc(m_errors, "copy");
    d->copy_read = false;
    read_copy(d);
}

/* Writes what changed in the users in force since the copy Redis holds, in one
 * transaction: one field per user, so a change costs what changed, whoever else (the
 * other daemon, on this host or another) writes the same. Only users the directory
 * itself gave are written. */
static void save_copy(struct directory *d)
{
    size_t cap = 8 + 2 * (d->nusers + d->saved.count), argc = 0, pos = 0, nset, ndel;
    const char **argv = xmalloc(cap * sizeof *argv);
    size_t *lens = xmalloc(cap * sizeof *lens);
    char saved_ms[32], users[32];
    const char *k;
    void *v;
    int rc = 0;

    if (!d->from_directory || !d->copy_read || !redislink_up(d->redis))
        goto out;
    argv[argc++] = "HSET";
    argv[argc++] = d->key_users;
    while (strmap_next(&d->enc, &pos, &k, &v)) {
        const char *was = strmap_get(&d->saved, k);
        if (was && strcmp(was, v) == 0)
            continue;
        argv[argc++] = k;
        argv[argc++] = v;
    }
    nset = (argc - 2) / 2;
    argv[argc++] = "HDEL";
    argv[argc++] = d->key_users;
    pos = 0;
    while (strmap_next(&d->saved, &pos, &k, &v)) {
        if (!strmap_get(&d->enc, k))
            argv[argc++] = k;
    }
    ndel = argc - 4 - 2 * nset;
    if (nset == 0 && ndel == 0)
        goto out;
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    snprintf(saved_ms, sizeof saved_ms, "%lld", (long long)clock_wall_ms());
    snprintf(users, sizeof users, "%zu", d->nusers);
    {
        const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
        const char *meta[] = {"HSET", d->key_meta, "saved_ms", saved_ms, "users", users, "by",
                              d->daemon};
        size_t hdel_at = 2 + 2 * nset;

        rc |= redislink_command_argv(d->redis, NULL, NULL, 1, multi, NULL);
        if (nset)
            rc |= redislink_command_argv(d->redis, NULL, NULL, (int)hdel_at, argv, lens);
        if (ndel)
            rc |= redislink_command_argv(d->redis, NULL, NULL, (int)(argc - hdel_at),
                                         argv + hdel_at, lens + hdel_at);
        rc |= redislink_command_argv(d->redis, NULL, NULL, 8, meta, NULL);
        rc |= redislink_command_argv(d->redis, on_saved, d, 1, exec, NULL);
    }
    if (rc) {
        d->copy_read = false; /* the link went down meanwhile: read again when back */
        goto out;
    }
    /* What Redis will hold once EXEC is done. */
    enc_clear(&d->saved);
    pos = 0;
    while (strmap_next(&d->enc, &pos, &k, &v))
        strmap_put(&d->saved, xstrdup(k), xstrdup(v));
    log_debug("directory", "event=last_known_saved users=%zu written=%zu removed=%zu",
              d->nusers, nset, ndel);
out:
    free(argv);
    free(lens);
}

static void on_copy(struct redislink *l, redisReply *r, void *arg)
{
    struct directory *d = arg;
    struct dir_entry *entries;
    const struct dir_entry **ptrs;
    struct cfg_user *users;
    struct dir_report rep;
    size_t n = 0, nusers;

    d->copy_reading = false;
    if (!r)
        return; /* link down: read again when it is back */
    if (r->type != REDIS_REPLY_ARRAY) {
        log_warn("directory", "event=last_known_unreadable key=%s reason=%s", log_q(d->key_users),
                 log_q(r->type == REDIS_REPLY_ERROR ? r->str : "not a hash"));
        metric_inc(m_errors, "copy");
        return;
    }
    enc_clear(&d->saved);
    entries = xcalloc(r->elements / 2 + 1, sizeof *entries);
    ptrs = xcalloc(r->elements / 2 + 1, sizeof *ptrs);
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *f = r->element[i], *v = r->element[i + 1];
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        strmap_put(&d->saved, xstrndup(f->str, (size_t)f->len), xstrndup(v->str, (size_t)v->len));
        if (dirbuild_decode(v->str, (size_t)v->len, "last known copy", &entries[n]) < 0) {
            dir_entry_free(&entries[n]);
            continue;
        }
        ptrs[n] = &entries[n];
        n++;
    }
    d->copy_read = true;
    if (!d->from_directory && n > 0) {
        /* The directory has not answered yet (or not since the start): serve whom it
         * listed last, checked again as if it had just listed them. */
        users = dirbuild_users(&d->keys, ptrs, n, 0, &nusers, &rep);
        log_notice("directory", "event=last_known_loaded users=%zu skipped=%zu reason=\"%s\"",
                   nusers, rep.total,
                   d->said_down ? "the directory does not answer"
                                : "the directory has not answered yet");
        install(d, users, nusers);
    }
    for (size_t i = 0; i < n; i++)
        dir_entry_free(&entries[i]);
    free(entries);
    free(ptrs);
    save_copy(d);
}

static void read_copy(struct directory *d)
{
    if (d->copy_reading)
        return;
    d->copy_reading =
        redislink_command(d->redis, on_copy, d, "HGETALL %s", d->key_users) == 0;
}

static void on_redis(struct redislink *l, bool up, void *arg)
{
    struct directory *d = arg;

    d->copy_read = false;
    d->copy_reading = false;
    if (up)
        read_copy(d);
}

/* ---- news from the LDAP session ------------------------------------------------------ */

static void set_state(struct directory *d, bool up, const char *mode, const char *error)
{
    if (mode && *mode) {
        if (d->mode)
            metric_set(m_mode, d->mode, 0);
        d->mode = mode;
        metric_set(m_mode, mode, 1);
    }
    if (up) {
        if (!d->up)
            log_notice("directory", "event=directory_up url=%s mode=%s%s",
                       log_q(d->keys.dir_ldap_url), d->mode, d->said_down ? " after=outage" : "");
        d->up = true;
        d->said_down = false;
        d->error[0] = '\0';
        metric_set(m_up, NULL, 1);
        return;
    }
    metric_set(m_up, NULL, 0);
    if (d->up || !d->said_down) {
        d->down_since_ms = clock_wall_ms();
        metric_inc(m_errors, "session");
        log_warn("directory", "event=directory_down url=%s reason=%s users=%zu action=%s",
                 log_q(d->keys.dir_ldap_url), log_q(error), d->nusers,
                 d->have_users ? "serving_last_known" : "waiting_for_users");
        d->said_down = true;
    } else if (strcmp(d->error, error) != 0) {
        metric_inc(m_errors, "session");
        log_info("directory", "event=directory_still_down reason=%s", log_q(error));
    } else {
        metric_inc(m_errors, "session");
        log_debug("directory", "event=directory_still_down reason=%s", log_q(error));
    }
    d->up = false;
    snprintf(d->error, sizeof d->error, "%s", error);
}

static void report(struct directory *d, const struct dir_report *rep)
{
    char line[1024];

    for (int i = 0; i < DIR_SKIP__N; i++)
        metric_set(m_skipped, dir_skip_names[i], (double)rep->skipped[i]);
    if (dir_report_same(rep, &d->report))
        return; /* said already: the same entries are still bad */
    dir_report_format(rep, line, sizeof line);
    if (rep->total)
        log_warn("directory", "event=directory_entries_skipped %s", line);
    else
        log_notice("directory", "event=directory_entries_skipped total=0 was=%zu",
                   d->report.total);
    d->report = *rep;
}

static void on_news(void *arg, struct dir_ldap_news *news)
{
    struct directory *d = arg;

    if (news->have_set) {
        const struct dir_entry **ptrs = xcalloc(news->n + 1, sizeof *ptrs);
        struct dir_report rep;
        struct cfg_user *users;
        size_t n;
        bool changed;

        for (size_t i = 0; i < news->n; i++)
            ptrs[i] = &news->entries[i];
        users = dirbuild_users(&d->keys, ptrs, news->n, news->over_limit, &n, &rep);
        free(ptrs);
        report(d, &rep);
        metric_set(m_last_sync, NULL, (double)clock_wall_ms() / 1000.0);
        if (n == 0 && d->nusers > 0) {
            /* A wrong base or filter, an ACL that hides the attributes, an emptied
             * subtree: taken for a fault, not for everyone leaving at once. */
            log_err("directory", "event=directory_empty_refused entries=%zu skipped=%zu "
                                 "users_kept=%zu",
                    news->n, rep.total, d->nusers);
            metric_inc(m_errors, "empty");
            free_users(users, n);
        } else {
            d->from_directory = true;
            changed = install(d, users, n);
            if (news->full) {
                metric_set(m_sync_seconds, NULL, (double)news->sync_ms / 1000.0);
                log_notice("directory", "event=directory_synced mode=%s entries=%zu users=%zu "
                                        "skipped=%zu took_ms=%ld changed=%s",
                           news->mode, news->n, n, rep.total, news->sync_ms,
                           changed ? "yes" : "no");
            } else if (changed) {
                log_info("directory", "event=directory_changed users=%zu", n);
            }
            save_copy(d);
        }
    }
    set_state(d, news->up, news->mode, news->error);
}

/* ---- the interface ---------------------------------------------------------------------- */

struct directory *directory_new(struct event_base *base, const struct offhook_config *cfg,
                                const char *daemon, directory_changed_fn changed, void *arg)
{
    struct directory *d = xcalloc(1, sizeof *d);

    d->base = base;
    d->ldap = cfg->dir_ldap;
    d->daemon = xstrdup(daemon);
    d->changed = changed;
    d->arg = arg;
    strmap_init(&d->enc);
    strmap_init(&d->saved);
    config_copy_keys(&d->keys, cfg);
    if (!d->ldap) {
        metric_set(m_up, NULL, 1);
        metric_set(m_mode, "config", 1);
        metric_set(m_users, NULL, (double)cfg->nusers);
        return d;
    }
    if (storecodec_key_directory(cfg->redis_prefix, d->key_users, sizeof d->key_users) < 0 ||
        storecodec_key_directory_meta(cfg->redis_prefix, d->key_meta, sizeof d->key_meta) < 0) {
        log_err("directory", "event=start_failed reason=\"[redis] prefix too long\"");
        directory_free(d);
        return NULL;
    }
    log_notice("directory", "event=starting source=ldap url=%s base=%s sync=%s",
               log_q(cfg->dir_ldap_url), log_q(cfg->dir_base), cfg->dir_sync);
    d->redis = redislink_new(base, cfg, "directory", REDIS_STALL_MS, on_redis, d);
    d->session = dir_ldap_new(base, cfg, on_news, d);
    if (!d->session) {
        directory_free(d);
        return NULL;
    }
    return d;
}

void directory_free(struct directory *d)
{
    if (!d)
        return;
    /* The thread first: no news can come after this. */
    dir_ldap_free(d->session);
    redislink_free(d->redis);
    free_users(d->users, d->nusers);
    enc_clear(&d->enc);
    strmap_free(&d->enc);
    enc_clear(&d->saved);
    strmap_free(&d->saved);
    config_free(&d->keys);
    free(d->daemon);
    free(d);
}

void directory_fill(const struct directory *d, struct offhook_config *next)
{
    if (!d || !d->ldap) {
        metric_set(m_users, NULL, (double)next->nusers);
        return;
    }
    config_copy_users(next, d->users, d->nusers);
}

bool directory_ready(const struct directory *d, struct sbuf *why)
{
    if (!d || !d->ldap)
        return true;
    if (!d->have_users) {
        sbuf_printf(why, "directory: no users yet (%s; last known copy in Redis: %s)\n",
                    d->up ? "the first sync is running"
                          : d->error[0] ? d->error : "connecting",
                    d->copy_read ? "empty" : "not read");
        return false;
    }
    if (!d->up) {
        long s = (long)((clock_wall_ms() - d->down_since_ms) / 1000);
        sbuf_printf(why,
                    "directory: %s does not answer for %ld s (%s): serving the %zu last known "
                    "users\n",
                    d->keys.dir_ldap_url, s, d->error, d->nusers);
    }
    return true;
}
