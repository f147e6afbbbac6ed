/* The Redis data model shared by sipbridge (writer) and component (reader), pure:
 * key names and the field encoding of a user's state record.
 *
 *   <prefix>user:<jid>          hash   the user's current state record
 *   <prefix>events              stream one entry per change: user=<jid> + the record
 *   <prefix>watchers:<contact>  set    bare JIDs subscribed to a phone contact
 *   <prefix>subs:<jid>          hash   "<package> <aor>" -> "<state> <unix ms>", sipbridge's
 *                                      subscriptions for the user (for offhookctl)
 *   <prefix>heartbeat:<daemon>  string unix ms of the daemon's last beat, expires after 30 s
 *   <prefix>directory:users     hash   JID -> the user as an LDAP directory last listed them
 *                                      (dirbuild.h's encoding): the last known users,
 *                                      written by each daemon that reads the directory,
 *                                      read at start until the directory answers
 *   <prefix>directory:meta      hash   saved_ms, users, by: when and by whom it was written
 *
 * A stream entry with cmd=resync (and user=<jid> or "*") asks the component to send
 * everything again (offhookctl resync).
 *
 * sipbridge writes the hash and the stream entry in one script (EVAL), so a reader that takes
 * the stream's last id before reading the hashes and then follows the stream misses
 * nothing and ends on the latest state. */
#ifndef OFFHOOK_STORECODEC_H
#define OFFHOOK_STORECODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "callstate.h"

#define STORE_REMOTE_MAX 128
#define STORE_FIELDS_MAX 12
#define STORE_VALUE_MAX (STORE_REMOTE_MAX + 1)

struct user_record {
    enum user_state state;
    enum call_dir dir;         /* direction of the most significant call */
    enum phone_reach reach;
    bool dnd;
    bool video;                /* the phone can do video (its PIDF says so, RFC 5196) */
    int64_t since_ms;          /* wall clock when this state began */
    int64_t event_us;          /* wall clock when sipbridge received the NOTIFY behind it */
    char remote[STORE_REMOTE_MAX]; /* the other party; "" unless the operator opted in */
};

struct store_fields {
    int n;
    const char *name[STORE_FIELDS_MAX];
    char value[STORE_FIELDS_MAX][STORE_VALUE_MAX];
};

/* Encodes r into name/value pairs (remote only when non-empty). */
void storecodec_encode(const struct user_record *r, struct store_fields *out);
/* Decodes n name/value pairs. Unknown names are ignored so that newer writers can add
 * fields; a missing or invalid state is an error. Returns 0/-1 with a reason in err. */
int storecodec_decode(const char *const *names, const char *const *values, size_t n,
                      struct user_record *r, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* ---- the event stream --------------------------------------------------------------
 * Every entry names its user. A state entry carries the record's fields (as the hash
 * does); a removal carries state=removed; a command (offhookctl) carries cmd=NAME and
 * user=<jid> or "*". sipbridge writes state entries with storecodec_write_script, trimmed
 * to about STORECODEC_STREAM_MAXLEN entries, enough for a component catching up. */
#define STORECODEC_STREAM_MAXLEN 100000
#define STORECODEC_STREAM_MAXLEN_STR "100000"

enum stream_kind { STREAM_STATE, STREAM_REMOVED, STREAM_COMMAND };

struct stream_entry {
    enum stream_kind kind;
    const char *user;          /* the JID, or "*" for a command to all; points into values */
    const char *cmd;           /* STREAM_COMMAND: its name; points into values */
    struct user_record rec;    /* STREAM_STATE */
};

/* Decodes one stream entry's n name/value pairs into e (whose pointers then point into
 * values: valid as long as they are). Returns 0, or -1 with a reason in err for an entry
 * with no user or an undecodable state. */
int storecodec_decode_entry(const char *const *names, const char *const *values, size_t n,
                            struct stream_entry *e, char *err, size_t errlen)
    __attribute__((warn_unused_result));

/* The one write of a user's state (EVAL): replaces the hash KEYS[1] and, when KEYS[2] is
 * given, appends the entry to the stream KEYS[2]. ARGV[1] is the JID, ARGV[2..] the
 * record's name/value pairs from storecodec_encode (none: the user was removed). */
extern const char storecodec_write_script[];

/* The check of a user's state after a reconnect (EVAL), with the same keys (both given)
 * and arguments as storecodec_write_script for a state (not a removal). Returns 0 when
 * the hash holds exactly these fields; otherwise Redis lost the user's latest state (it
 * restarted empty, was flushed, or is a new master that lacked the old one's last writes)
 * and a reader may since have read the older one, so the state is written with a stream
 * entry, as a change, and it returns 1. */
extern const char storecodec_repair_script[];

/* Redis at maxmemory with the noeviction policy refuses every command that may need
 * memory (SET, SADD, HSET, XADD) with OOM, and every command queued in a MULTI. It lets
 * a script finish once the script has written, so that a script stays atomic: each
 * script below that writes starts with a write that needs no memory (DEL, SREM), as
 * storecodec_write_script does (storecodec_repair_script's first write is a DEL too),
 * and goes over the limit by what it writes rather than losing it. What they write is
 * small and bounded (a key per daemon, a member per watcher). Checked on Redis 7.0.15
 * (tests/integration/test_hostile_component.py); Redis 6 keeps scripts going by the same
 * rule, while a shebang's allow-oom flag would need Redis 7. */

/* A daemon's heartbeat (EVAL): SET KEYS[1] ARGV[1] (wall-clock ms) PX ARGV[2]. Refused at
 * maxmemory as a plain SET, every phone would show "unknown" once the last beat expired. */
extern const char storecodec_heartbeat_script[];
/* Adds ARGV[1..] to the watcher set KEYS[1] (EVAL); returns how many were new. */
extern const char storecodec_watchers_add_script[];
/* The component's snapshot (EVAL, read-only): KEYS[1] the event stream, KEYS[2..] users'
 * hashes. Returns what MULTI, XREVRANGE KEYS[1] + - COUNT 1, HGETALL KEYS[i]..., EXEC
 * returned: one array, the stream's last entry, then each hash (empty: none), read at
 * one instant. Unlike MULTI, Redis runs it at maxmemory. */
extern const char storecodec_snapshot_script[];

/* Fills argv with an XADD of command cmd for user (a JID or "*") to the stream at
 * events_key; returns argc (at most STORECODEC_COMMAND_ARGC). Pointers are borrowed. */
#define STORECODEC_COMMAND_ARGC 10
int storecodec_command_argv(const char *events_key, const char *cmd, const char *user,
                            const char *argv[STORECODEC_COMMAND_ARGC]);

/* Key builders: write into buf; return 0/-1 if it does not fit. */
int storecodec_key_user(const char *prefix, const char *jid, char *buf, size_t len);
int storecodec_key_events(const char *prefix, char *buf, size_t len);
int storecodec_key_watchers(const char *prefix, const char *contact, char *buf, size_t len);
int storecodec_key_subs(const char *prefix, const char *jid, char *buf, size_t len);
int storecodec_key_heartbeat(const char *prefix, const char *daemon, char *buf, size_t len);
int storecodec_key_directory(const char *prefix, char *buf, size_t len);
int storecodec_key_directory_meta(const char *prefix, char *buf, size_t len);
/* The component's roster records: a hash per user (phone contact -> what it wrote there,
 * component/roster.c), and the set of users that have one. */
int storecodec_key_roster(const char *prefix, const char *jid, char *buf, size_t len);
int storecodec_key_rosters(const char *prefix, char *buf, size_t len);

#define STORE_HEARTBEAT_EVERY_MS 10000 /* each daemon beats this often ... */
#define STORE_HEARTBEAT_TTL_MS 30000   /* ... and is taken for dead when a beat is this old */

#endif
