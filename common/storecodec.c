/* Redis key names and user record encoding, pure. */
#include "storecodec.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
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

/* EVAL, not EVALSHA: Redis caches the compiled script by its SHA1, and a Redis that
 * restarted or ran SCRIPT FLUSH needs no reload step (no NOSCRIPT case). One script does
 * what MULTI/DEL/HSET/XADD/EXEC did, atomically, with the fields sent once. */
const char storecodec_write_script[] =
    "redis.call('DEL',KEYS[1])\n"
    "if #ARGV>1 then redis.call('HSET',KEYS[1],unpack(ARGV,2)) end\n"
    "if #KEYS<2 then return 0 end\n"
    "if #ARGV>1 then\n"
    " return redis.call('XADD',KEYS[2],'MAXLEN','~','" STORECODEC_STREAM_MAXLEN_STR
    "','*','user',ARGV[1],unpack(ARGV,2))\n"
    "end\n"
    "return redis.call('XADD',KEYS[2],'MAXLEN','~','" STORECODEC_STREAM_MAXLEN_STR
    "','*','user',ARGV[1],'state','removed')\n";

/* A hash already equal to the fields is left alone; otherwise the state is written as a
 * change. Fields are compared as a set: HGETALL's order is not the order written. */
const char storecodec_repair_script[] =
    "if #ARGV<3 then return 0 end\n"
    "local cur=redis.call('HGETALL',KEYS[1])\n"
    "if #cur==#ARGV-1 then\n"
    " local have={}\n"
    " for i=1,#cur,2 do have[cur[i]]=cur[i+1] end\n"
    " local same=true\n"
    " for i=2,#ARGV,2 do if have[ARGV[i]]~=ARGV[i+1] then same=false break end end\n"
    " if same then return 0 end\n"
    "end\n"
    "redis.call('DEL',KEYS[1])\n"
    "redis.call('HSET',KEYS[1],unpack(ARGV,2))\n"
    "redis.call('XADD',KEYS[2],'MAXLEN','~','" STORECODEC_STREAM_MAXLEN_STR
    "','*','user',ARGV[1],unpack(ARGV,2))\n"
    "return 1\n";

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
