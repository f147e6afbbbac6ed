/* Redis key names and user record encoding, pure. */
#include "storecodec.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"

static void put(struct store_fields *f, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void put(struct store_fields *f, const char *name, const char *fmt, ...)
{
    va_list ap;

    if (f->n >= STORE_FIELDS_MAX)
        return;
    f->name[f->n] = name;
    va_start(ap, fmt);
    vsnprintf(f->value[f->n], STORE_VALUE_MAX, fmt, ap);
    va_end(ap);
    f->n++;
}

void storecodec_encode(const struct user_record *r, struct store_fields *out)
{
    out->n = 0;
    put(out, "state", "%s", user_state_name(r->state));
    put(out, "dir", "%s", call_dir_name(r->dir));
    put(out, "reach", "%s", phone_reach_name(r->reach));
    put(out, "dnd", "%d", r->dnd ? 1 : 0);
    put(out, "since", "%" PRId64, r->since_ms);
    put(out, "ts", "%" PRId64, r->event_us);
    if (r->remote[0])
        put(out, "remote", "%s", r->remote);
    /* Only when true: older readers ignore it, and nothing is written for most phones. */
    if (r->video)
        put(out, "video", "1");
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || !*s || *end)
        return -1;
    *out = v;
    return 0;
}

int storecodec_decode(const char *const *names, const char *const *values, size_t n,
                      struct user_record *r, char *err, size_t errlen)
{
    bool have_state = false;

    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < n; i++) {
        const char *k = names[i], *v = values[i];
        int rc = 0;

        if (strcmp(k, "state") == 0) {
            rc = user_state_from_name(v, &r->state);
            have_state = rc == 0;
        } else if (strcmp(k, "dir") == 0) {
            rc = call_dir_from_name(v, &r->dir);
        } else if (strcmp(k, "reach") == 0) {
            rc = phone_reach_from_name(v, &r->reach);
        } else if (strcmp(k, "dnd") == 0) {
            r->dnd = strcmp(v, "1") == 0;
        } else if (strcmp(k, "since") == 0) {
            rc = parse_i64(v, &r->since_ms);
        } else if (strcmp(k, "ts") == 0) {
            rc = parse_i64(v, &r->event_us);
        } else if (strcmp(k, "remote") == 0) {
            /* Written by sipbridge as whole UTF-8 characters; whatever else is in Redis
             * is cut and scrubbed the same way before it can reach a stanza. */
            str_copy_utf8(r->remote, sizeof r->remote, v);
            str_utf8_scrub(r->remote);
        } else if (strcmp(k, "video") == 0) {
            r->video = strcmp(v, "1") == 0;
        }
        if (rc < 0) {
            snprintf(err, errlen, "invalid value for field %s", k);
            return -1;
        }
    }
    if (!have_state) {
        snprintf(err, errlen, "record has no state field");
        return -1;
    }
    return 0;
}

int storecodec_decode_entry(const char *const *names, const char *const *values, size_t n,
                            struct stream_entry *e, char *err, size_t errlen)
{
    memset(e, 0, sizeof *e);
    e->kind = STREAM_STATE;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], "user") == 0) {
            e->user = values[i];
        } else if (strcmp(names[i], "cmd") == 0) {
            e->cmd = values[i];
            e->kind = STREAM_COMMAND;
        } else if (strcmp(names[i], "state") == 0 && strcmp(values[i], "removed") == 0 &&
                   e->kind != STREAM_COMMAND) {
            e->kind = STREAM_REMOVED;
        }
    }
    if (!e->user) {
        snprintf(err, errlen, "stream entry has no user field");
        return -1;
    }
    if (e->kind != STREAM_STATE)
        return 0;
    return storecodec_decode(names, values, n, &e->rec, err, errlen);
}

/* The texts are common/lua/write.lua and lease.lua, embedded at build time
 * (cmake/embed.cmake) with their SHA1s. Most scripts go out as EVAL: they run seldom
 * (heartbeat, lease, watchers, snapshot), and EVAL needs no reload step after a Redis
 * restart, failover or SCRIPT FLUSH. The exception is sipbridge's write, sent once per
 * state change: EVAL made Redis hash the whole text on every event and the text crossed
 * the socket each time, so it goes by EVALSHA (storecodec_write_script_sha). Redis'
 * script cache can be empty under it in three ways: a restarted Redis and a new master
 * after a Sentinel failover (both a new connection: sipbridge sends its first write on
 * each connection as EVAL, which caches the text before any EVALSHA behind it on that
 * connection runs), and SCRIPT FLUSH on a live connection (or a replica promoted without
 * the script): the write gets NOSCRIPT, did nothing, and sipbridge sends the user's
 * latest state again as EVAL (sipbridge/store.c on_noscript). */
#include "storecodec_lua.h"

const char storecodec_heartbeat_script[] =
    "redis.call('DEL',KEYS[1])\n"
    "return redis.call('SET',KEYS[1],ARGV[1],'PX',ARGV[2])\n";

/* SREM first: a write that needs no memory (see storecodec.h). One SADD per member, not
 * unpack(): Lua's unpack stops at a few thousand values. */
const char storecodec_watchers_add_script[] =
    "local had=redis.call('SREM',KEYS[1],ARGV[1])\n"
    "local n=0\n"
    "for i=1,#ARGV do n=n+redis.call('SADD',KEYS[1],ARGV[i]) end\n"
    "return n-had\n";

const char storecodec_snapshot_script[] =
    "local r={redis.call('XREVRANGE',KEYS[1],'+','-','COUNT',1)}\n"
    "for i=2,#KEYS do r[i]=redis.call('HGETALL',KEYS[i]) end\n"
    "return r\n";

int storecodec_command_argv(const char *events_key, const char *cmd, const char *user,
                            const char *argv[STORECODEC_COMMAND_ARGC])
{
    int n = 0;

    argv[n++] = "XADD";
    argv[n++] = events_key;
    argv[n++] = "MAXLEN";
    argv[n++] = "~";
    argv[n++] = STORECODEC_STREAM_MAXLEN_STR;
    argv[n++] = "*";
    argv[n++] = "cmd";
    argv[n++] = cmd;
    argv[n++] = "user";
    argv[n++] = user;
    return n;
}

static int key(char *buf, size_t len, const char *prefix, const char *kind, const char *id)
{
    int n = snprintf(buf, len, "%s%s%s", prefix, kind, id);

    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

int storecodec_key_user(const char *prefix, const char *jid, char *buf, size_t len)
{
    return key(buf, len, prefix, "user:", jid);
}

int storecodec_key_events(const char *prefix, char *buf, size_t len)
{
    return key(buf, len, prefix, "events", "");
}

int storecodec_key_watchers(const char *prefix, const char *contact, char *buf, size_t len)
{
    return key(buf, len, prefix, "watchers:", contact);
}

int storecodec_key_subs(const char *prefix, const char *jid, char *buf, size_t len)
{
    return key(buf, len, prefix, "subs:", jid);
}

int storecodec_key_heartbeat(const char *prefix, const char *daemon, char *buf, size_t len)
{
    return key(buf, len, prefix, "heartbeat:", daemon);
}

int storecodec_key_directory(const char *prefix, char *buf, size_t len)
{
    return key(buf, len, prefix, "directory:users", "");
}

int storecodec_key_directory_meta(const char *prefix, char *buf, size_t len)
{
    return key(buf, len, prefix, "directory:meta", "");
}

int storecodec_key_roster(const char *prefix, const char *jid, char *buf, size_t len)
{
    return key(buf, len, prefix, "roster:", jid);
}

int storecodec_key_rosters(const char *prefix, char *buf, size_t len)
{
    return key(buf, len, prefix, "rosters", "");
}

int storecodec_key_members(const char *prefix, const char *group, char *buf, size_t len)
{
    return key(buf, len, prefix, "members:", group);
}

int storecodec_key_epoch(const char *prefix, char *buf, size_t len)
{
    return key(buf, len, prefix, "members:", "epoch");
}

int storecodec_key_wake(const char *prefix, const char *group, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%smembers:%s:wake", prefix, group);

    return (n < 0 || (size_t)n >= len) ? -1 : 0;
}

/* ---- leases ---------------------------------------------------------------------------- */

static int parse_u64(const char *s, const char **end, uint64_t *out)
{
    char *e;
    unsigned long long v;

    if (*s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &e, 10);
    if (errno)
        return -1;
    *out = v;
    *end = e;
    return 0;
}

int storecodec_member_parse(const char *value, struct member_rec *m)
{
    uint64_t epoch, expires, ready, count, since;
    const char *p = value, *phase;
    size_t plen;

    memset(m, 0, sizeof *m);
    if (!value || parse_u64(p, &p, &epoch) < 0 || *p++ != ' ' ||
        parse_u64(p, &p, &expires) < 0 || *p++ != ' ')
        return -1;
    phase = p;
    plen = strcspn(p, " ");
    p += plen;
    if (*p++ != ' ' || parse_u64(p, &p, &ready) < 0 || *p++ != ' ' ||
        parse_u64(p, &p, &count) < 0 || *p++ != ' ' || parse_u64(p, &p, &since) < 0 || *p ||
        ready > 1 || epoch == 0)
        return -1;
    if (plen == 6 && strncmp(phase, "active", 6) == 0)
        m->leaving = false;
    else if (plen == 7 && strncmp(phase, "leaving", 7) == 0)
        m->leaving = true;
    else
        return -1;
    m->epoch = epoch;
    m->expires_ms = (int64_t)expires;
    m->ready = ready == 1;
    m->count = count > (uint64_t)LONG_MAX ? LONG_MAX : (long)count;
    m->since_ms = (int64_t)since;
    return 0;
}

int storecodec_owner_parse(const char *value, uint64_t *epoch, char *name, size_t len)
{
    const char *p = value;

    if (!value || parse_u64(p, &p, epoch) < 0 || *p++ != ' ' || !storecodec_member_name_ok(p) ||
        *epoch == 0)
        return -1;
    if (name && len && str_copy(name, len, p) < 0)
        return -1;
    return 0;
}

bool storecodec_member_name_ok(const char *name)
{
    size_t n = 0;

    if (!name || name[0] == '@')
        return false;
    for (; name[n]; n++) {
        if ((unsigned char)name[n] <= ' ' || (unsigned char)name[n] >= 0x7f)
            return false;
    }
    return n >= 1 && n <= STORECODEC_MEMBER_NAME_MAX;
}

/* FNV-1a over member, a NUL, key; then a 64-bit finaliser (splitmix64's) so that names
 * differing in one character still give independent weights. */
uint64_t storecodec_rendezvous(const char *member, const char *key_)
{
    uint64_t h = 0xcbf29ce484222325ULL;

    for (const unsigned char *p = (const unsigned char *)member; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    h = (h ^ 0) * 0x100000001b3ULL;
    for (const unsigned char *p = (const unsigned char *)key_; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}
