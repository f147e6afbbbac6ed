/* offhookctl's reads from Redis (see redisread.h). */
#include "redisread.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "check.h"
#include "dirbuild.h"
#include "strutil.h"

#define SENTINEL_ROUNDS 5 /* ... a second apart: time for a failover in progress to end */

static void say(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *err, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (!err || !len)
        return;
    va_start(ap, fmt);
    vsnprintf(err, len, fmt, ap);
    va_end(ap);
}

/* Sends AUTH password on r; false if refused or lost. */
static bool auth(redisContext *r, const char *password)
{
    redisReply *rep = redisCommand(r, "AUTH %s", password);
    bool ok = rep && rep->type != REDIS_REPLY_ERROR;

    freeReplyObject(rep);
    return ok;
}

/* Whether r is a master (ROLE). */
static bool is_master(redisContext *r)
{
    redisReply *rep = redisCommand(r, "ROLE");
    bool ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
              rep->element[0]->type == REDIS_REPLY_STRING &&
              strcmp(rep->element[0]->str, "master") == 0;

    freeReplyObject(rep);
    return ok;
}

/* With [redis] sentinels: the master they name, checked with ROLE. During a failover the
 * sentinels may still name the old master for a moment (dead, or demoted), so a few
 * rounds are tried. */
static redisContext *connect_via_sentinels(const struct offhook_config *cfg, char *server,
                                           size_t slen, char *err, size_t len)
{
    struct timeval tv = {.tv_sec = 3};
    char host[256], why[512] = "";
    int port;

    for (int round = 0; round < SENTINEL_ROUNDS; round++) {
        redisContext *r;

        if (round)
            sleep(1);
        /* None answering is not a failover: the next round would say the same. */
        if (!check_ask_sentinels(cfg, 2000, false, host, sizeof host, &port, why, sizeof why))
            break;
        snprintf(server, slen, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        r = redisConnectWithTimeout(host, port, tv);
        if (!r || r->err) {
            snprintf(why, sizeof why, "master %s named by the sentinels: %s", server,
                     r ? r->errstr : "out of memory");
            redisFree(r);
            continue;
        }
        redisSetTimeout(r, tv);
        if (cfg->redis_password[0] && !auth(r, cfg->redis_password)) {
            say(err, len, "Redis at %s refused AUTH", server);
            redisFree(r);
            return NULL;
        }
        if (is_master(r))
            return r;
        snprintf(why, sizeof why, "%s, named master by the sentinels, is not a master", server);
        redisFree(r);
    }
    say(err, len, "no Redis master found through the sentinels (master_name %s): %s",
        cfg->redis_master_name, why);
    return NULL;
}

redisContext *redisread_connect(const struct offhook_config *cfg, char *server, size_t slen,
                                char *err, size_t len)
{
    struct timeval tv = {.tv_sec = 3};
    redisContext *r;
    redisReply *rep;

    if (cfg->redis_nsentinels > 0)
        return connect_via_sentinels(cfg, server, slen, err, len);
    snprintf(server, slen, "%s", cfg->redis_url);
    r = cfg->redis.unix_path ? redisConnectUnixWithTimeout(cfg->redis.unix_path, tv)
                             : redisConnectWithTimeout(cfg->redis.host, cfg->redis.port, tv);
    if (!r || r->err) {
        say(err, len, "cannot reach Redis at %s: %s", cfg->redis_url,
            r ? r->errstr : "out of memory");
        goto fail;
    }
    redisSetTimeout(r, tv);
    if (cfg->redis_password[0] && !auth(r, cfg->redis_password)) {
        say(err, len, "Redis refused AUTH");
        goto fail;
    }
    if (cfg->redis.db) {
        rep = redisCommand(r, "SELECT %d", cfg->redis.db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            say(err, len, "Redis refused SELECT %d", cfg->redis.db);
            freeReplyObject(rep);
            goto fail;
        }
        freeReplyObject(rep);
    }
    return r;
fail:
    if (r)
        redisFree(r);
    return NULL;
}

int redisread_directory_users(redisContext *r, struct offhook_config *cfg)
{
    char key[512];
    redisReply *rep;
    struct dir_entry *entries;
    const struct dir_entry **ptrs;
    struct dir_report report;
    struct cfg_user *users;
    size_t n = 0, nusers;

    if (!cfg->dir_ldap || storecodec_key_directory(cfg->redis_prefix, key, sizeof key) < 0)
        return 0;
    rep = redisread_cmd(r, "HGETALL %s", key);
    if (!rep)
        return -1;
    if (rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        return 0;
    }
    entries = xcalloc(rep->elements / 2 + 1, sizeof *entries);
    ptrs = xcalloc(rep->elements / 2 + 1, sizeof *ptrs);
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        redisReply *v = rep->element[i + 1];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        if (dirbuild_decode(v->str, (size_t)v->len, "copy", &entries[n]) < 0) {
            dir_entry_free(&entries[n]);
            continue;
        }
        ptrs[n] = &entries[n];
        n++;
    }
    users = dirbuild_users(cfg, ptrs, n, 0, &nusers, &report);
    config_set_users(cfg, users, nusers);
    for (size_t i = 0; i < n; i++)
        dir_entry_free(&entries[i]);
    free(entries);
    free(ptrs);
    freeReplyObject(rep);
    return 0;
}

redisReply *redisread_cmd(redisContext *r, const char *fmt, ...)
{
    va_list ap;
    redisReply *rep;

    va_start(ap, fmt);
    rep = redisvCommand(r, fmt, ap);
    va_end(ap);
    return rep;
}

bool redisread_record(redisContext *r, const struct offhook_config *cfg, const char *jid,
                      struct user_record *rec, bool *failed)
{
    char key[4096], err[128];
    const char *names[16], *values[16];
    redisReply *rep;
    size_t n = 0;
    bool ok;

    if (storecodec_key_user(cfg->redis_prefix, jid, key, sizeof key) < 0)
        return false;
    rep = redisread_cmd(r, "HGETALL %s", key);
    if (!rep) {
        if (failed)
            *failed = true;
        return false;
    }
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements && n < 16; i += 2) {
        names[n] = rep->element[i]->str;
        values[n] = rep->element[i + 1]->str;
        n++;
    }
    ok = n > 0 && storecodec_decode(names, values, n, rec, err, sizeof err) == 0;
    freeReplyObject(rep);
    return ok;
}

int64_t redisread_heartbeat(redisContext *r, const struct offhook_config *cfg,
                            const char *daemon)
{
    char key[512];
    redisReply *rep;
    int64_t v = 0;

    storecodec_key_heartbeat(cfg->redis_prefix, daemon, key, sizeof key);
    rep = redisread_cmd(r, "GET %s", key);
    if (!rep)
        return -1;
    if (rep->type == REDIS_REPLY_STRING)
        v = strtoll(rep->str, NULL, 10);
    freeReplyObject(rep);
    return v;
}

redisReply *redisread_subs(redisContext *r, const struct offhook_config *cfg, const char *jid)
{
    char key[4096];

    if (storecodec_key_subs(cfg->redis_prefix, jid, key, sizeof key) < 0)
        return NULL;
    return redisread_cmd(r, "HGETALL %s", key);
}
