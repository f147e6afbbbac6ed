/* The roster writer's records in Redis (see rosterstore.h): HGETALL / HMGET to read a
 * user's, HSET + SADD to record an item, a script to forget one (HDEL, and SREM of the
 * user once their hash is empty), SMEMBERS to list who has one. */
#include "rosterstore.h"

#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "log.h"
#include "redislink.h"
#include "storecodec.h"
#include "strutil.h"

/* HDEL, and the user out of the set once nothing is left. KEYS: hash, set; ARGV: contact,
 * user. */
static const char forget_script[] =
    "redis.call('HDEL', KEYS[1], ARGV[1]) "
    "if redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end "
    "return 1";

struct rosterstore {
    struct users *d;
    struct rosterstore_ops ops;
    void *arg;
    struct redislink *link;
};

/* What a reply is for. */
struct req {
    struct rosterstore *s;
    unsigned long cookie;
    char **contacts;          /* HMGET: the contacts asked, in order (owned) */
    size_t n;
};

static struct req *req_new(struct rosterstore *s, unsigned long cookie)
{
    struct req *q = xcalloc(1, sizeof *q);

    q->s = s;
    q->cookie = cookie;
    return q;
}

static void req_free(struct req *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->contacts[i]);
    free(q->contacts);
    free(q);
}

static bool keys_for(struct rosterstore *s, const char *user, char *hash, char *set, size_t len)
{
    const char *prefix = s->d->cfg->redis_prefix;

    return storecodec_key_roster(prefix, user, hash, len) == 0 &&
           storecodec_key_rosters(prefix, set, len) == 0;
}

static void on_loaded(struct redislink *l, redisReply *r, void *arg)
{
    struct req *q = arg;
    struct rosterstore *s = q->s;
    const char **contacts = NULL, **values = NULL;
    size_t n = 0;
    bool ok = r && r->type == REDIS_REPLY_ARRAY;

    if (ok && q->contacts) {
        /* HMGET: a value (or nil) per contact asked. */
        ok = r->elements == q->n;
        contacts = xcalloc(q->n + 1, sizeof *contacts);
        values = xcalloc(q->n + 1, sizeof *values);
        for (size_t i = 0; ok && i < q->n; i++) {
            contacts[n] = q->contacts[i];
            values[n++] = r->element[i]->type == REDIS_REPLY_STRING ? r->element[i]->str
                                                                    : NULL;
        }
    } else if (ok) {
        /* HGETALL: contact, value, ... */
        ok = r->elements % 2 == 0;
        contacts = xcalloc(r->elements / 2 + 1, sizeof *contacts);
        values = xcalloc(r->elements / 2 + 1, sizeof *values);
        for (size_t i = 0; ok && i + 1 < r->elements; i += 2) {
            if (r->element[i]->type != REDIS_REPLY_STRING ||
                r->element[i + 1]->type != REDIS_REPLY_STRING)
                continue;
            contacts[n] = r->element[i]->str;
            values[n++] = r->element[i + 1]->str;
        }
    }
    if (r && !ok)
        log_warn("roster", "event=unexpected_reply command=%s", q->contacts ? "HMGET" : "HGETALL");
    s->ops.on_loaded(s->arg, q->cookie, ok, ok ? contacts : NULL, ok ? values : NULL,
                     ok ? n : 0);
    free(contacts);
    free(values);
    req_free(q);
}

int rosterstore_load(struct rosterstore *s, unsigned long cookie, const char *user,
                     const char *const *contacts, size_t n)
{
    char hash[4096], set[4096];
    struct req *q;
    int rc;

    if (!redislink_up(s->link) || !keys_for(s, user, hash, set, sizeof hash))
        return -1;
    q = req_new(s, cookie);
    if (!contacts) {
        rc = redislink_command(s->link, on_loaded, q, "HGETALL %s", hash);
    } else {
        const char **argv = xcalloc(n + 3, sizeof *argv);
        argv[0] = "HMGET";
        argv[1] = hash;
        q->contacts = xcalloc(n + 1, sizeof *q->contacts);
        for (size_t i = 0; i < n; i++) {
            q->contacts[q->n++] = xstrdup(contacts[i]);
            argv[i + 2] = contacts[i];
        }
        rc = n ? redislink_command_argv(s->link, on_loaded, q, (int)n + 2, argv, NULL) : -1;
        free(argv);
    }
    if (rc < 0)
        req_free(q);
    return rc;
}

static void on_saved(struct redislink *l, redisReply *r, void *arg)
{
    struct req *q = arg;

    q->s->ops.on_saved(q->s->arg, q->cookie, r && r->type != REDIS_REPLY_ERROR);
    req_free(q);
}

int rosterstore_save(struct rosterstore *s, unsigned long cookie, const char *user,
                     const char *contact, const char *value)
{
    char hash[4096], set[4096];
    struct req *q;
    int rc;

    if (!redislink_up(s->link) || !keys_for(s, user, hash, set, sizeof hash))
        return -1;
    q = cookie ? req_new(s, cookie) : NULL;
    if (value) {
        /* Ordered on the one connection: the SADD's reply answers for both. */
        rc = redislink_command(s->link, NULL, NULL, "HSET %s %s %s", hash, contact, value);
        if (rc == 0)
            rc = redislink_command(s->link, q ? on_saved : NULL, q, "SADD %s %s", set, user);
    } else {
        rc = redislink_command(s->link, q ? on_saved : NULL, q, "EVAL %s 2 %s %s %s %s",
                               forget_script, hash, set, contact, user);
    }
    if (rc < 0 && q)
        req_free(q);
    return rc;
}

static void on_known(struct redislink *l, redisReply *r, void *arg)
{
    struct rosterstore *s = arg;
    const char **users = NULL;
    size_t n = 0;
    bool ok = r && r->type == REDIS_REPLY_ARRAY;

    if (ok) {
        users = xcalloc(r->elements + 1, sizeof *users);
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type == REDIS_REPLY_STRING)
                users[n++] = r->element[i]->str;
        }
    }
    s->ops.on_known(s->arg, ok, users, n);
    free(users);
}

int rosterstore_list(struct rosterstore *s)
{
    char set[4096];

    if (!redislink_up(s->link) || storecodec_key_rosters(s->d->cfg->redis_prefix, set,
                                                         sizeof set) < 0)
        return -1;
    return redislink_command(s->link, on_known, s, "SMEMBERS %s", set);
}

static void on_link(struct redislink *l, bool up, void *arg)
{
    struct rosterstore *s = arg;

    s->ops.on_state(s->arg, up);
}

bool rosterstore_up(const struct rosterstore *s)
{
    return redislink_up(s->link);
}

struct rosterstore *rosterstore_new(struct event_base *base, struct users *d,
                                    const struct rosterstore_ops *ops, void *arg)
{
    struct rosterstore *s = xcalloc(1, sizeof *s);

    s->d = d;
    s->ops = *ops;
    s->arg = arg;
    s->link = redislink_new(base, d->cfg, "roster", 10000, on_link, s);
    return s;
}

void rosterstore_free(struct rosterstore *s)
{
    if (!s)
        return;
    redislink_free(s->link);
    free(s);
}
