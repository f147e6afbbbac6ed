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
 *   <prefix>members:<group>     hash   the leases of a group of daemons ("sipbridge",
 *                                      "component"), see "Leases" below
 *   <prefix>members:epoch       string the last lease epoch handed out (INCR)
 *   <prefix>members:<group>:wake list  a member that gave up the group's holder role wakes
 *                                      a waiting one through it
 *
 * A user's hash also holds "owner" = "<epoch> <name>": the sipbridge member whose lease
 * wrote it last (fencing, see storecodec_write_script). Readers ignore it.
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

/* The one write of a user's state (EVALSHA, or EVAL to load it; the text is
 * common/lua/write.lua, which says it all): KEYS[1] the user's hash, KEYS[2] the stream,
 * KEYS[3] sipbridge's members hash; ARGV: JID, the writer's member name and lease epoch,
 * "write" or "check", "1"/"0" claim, then the record's name/value pairs from
 * storecodec_encode (none: the user was removed). "write" replaces the hash and appends
 * the entry; "check" does so only when Redis holds something else (the repair after a
 * reconnect: Redis restarted empty, was flushed, or is a new master that lacked the old
 * one's last writes, and a reader may have read the older state since). Fenced: refused
 * with an error starting STORECODEC_FENCED_LEASE when the writer's lease is gone,
 * STORECODEC_FENCED_OWNER when it does not claim and another live member owns the user.
 * A state equal to the one held keeps the held 'since'. Returns 1 when it wrote an
 * entry, 0 when nothing needed writing, and STORECODEC_CLAIM_KEPT when a claim over
 * another live owner carried a state whose ts is within STORECODEC_CLAIM_ORDER_US of the
 * one held (older or newer: the handover's two subscriptions are not ordered, and two
 * hosts' receipt times cannot order changes that close): only the ownership moved, and
 * the claimer writes its latest state again, as the owner, shortly after. */
extern const char storecodec_write_script[];
/* Its SHA1 (40 hex digits, computed at build time by cmake/embed.cmake): the name that
 * EVALSHA gives it once Redis holds the text (see storecodec.c for when it does not). */
extern const char storecodec_write_script_sha[];
#define STORECODEC_NOSCRIPT "NOSCRIPT"
#define STORECODEC_CLAIM_KEPT 2
#define STORECODEC_CLAIM_ORDER_US 2000000 /* write.lua's CLAIM_ORDER_US: hosts' clocks agree within it */
#define STORECODEC_FENCED_LEASE "FENCED lease"
#define STORECODEC_FENCED_OWNER "FENCED owner"

/* Redis at maxmemory with the noeviction policy refuses every command that may need
 * memory (SET, SADD, HSET, XADD) with OOM, and every command queued in a MULTI. It lets
 * a script finish once the script has written, so that a script stays atomic: each
 * script below that writes starts with a write that needs no memory (DEL, SREM), as
 * storecodec_write_script (an HDEL before the HSET of a "check" that only re-owns a user)
 * and storecodec_lease_script (an HDEL of a field no member has) do, and goes over the
 * limit by what it writes rather than losing it. What they write is small and bounded (a
 * key per daemon, a member per watcher or lease). Checked on Redis 7.0.15
 * (tests/integration/test_hostile_component.py, test_cluster_scripts.py); Redis 6 keeps
 * scripts going by the same rule, while a shebang's allow-oom flag would need Redis 7. */

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

int storecodec_key_members(const char *prefix, const char *group, char *buf, size_t len);
int storecodec_key_epoch(const char *prefix, char *buf, size_t len);
int storecodec_key_wake(const char *prefix, const char *group, char *buf, size_t len);

/* ---- Leases ------------------------------------------------------------------------
 * Each daemon holds a lease in its group's members hash (lease.c renews it with
 * storecodec_lease_script): name -> "<epoch> <expires ms> <phase> <ready> <count>
 * <since ms>", times on the Redis server's clock, and the group's holder (the sipbridge
 * that holds the resource list, the component connected to the XMPP server) as
 * "@holder" -> "<epoch> <name>". An epoch is handed out once (INCR), so it names one
 * lease of one process: the fencing token of its writes. */
#define STORECODEC_MEMBER_NAME_MAX 64
#define STORECODEC_HOLDER_FIELD "@holder"

struct member_rec {
    uint64_t epoch;
    int64_t expires_ms;        /* Redis server clock */
    bool leaving;              /* phase "leaving": handing its work over */
    bool ready;                /* ready to be the group's holder */
    long count;                /* what it reports (sipbridge: users owned) */
    int64_t since_ms;          /* when this epoch began */
};

/* Parses a member's value; returns 0 or -1. */
int storecodec_member_parse(const char *value, struct member_rec *m)
    __attribute__((warn_unused_result));
/* Parses an owner or holder value "<epoch> <name>"; name (up to len-1 bytes) may be NULL.
 * Returns 0 or -1. */
int storecodec_owner_parse(const char *value, uint64_t *epoch, char *name, size_t len)
    __attribute__((warn_unused_result));
/* Whether name can name a member: 1 to STORECODEC_MEMBER_NAME_MAX printable ASCII bytes,
 * no space, not starting with '@'. */
bool storecodec_member_name_ok(const char *name);
/* Rendezvous (highest random weight) hashing: the weight of member for key. A key
 * belongs to the member with the highest weight among the members assigned work (ties,
 * which need a 64-bit collision, go to the smaller name): each member's share moves only
 * when members come or go, and only to or from the one that came or went. */
uint64_t storecodec_rendezvous(const char *member, const char *key);

/* The lease renewal (EVAL; the text is common/lua/lease.lua, which says it all): KEYS the
 * members hash, the epoch counter, the wake list; ARGV name, epoch ("0": none), ttl ms,
 * phase ("active", "leaving", "gone"), ready "1"/"0", count, prune "1"/"0", holder
 * ("want", "release", "none"). Returns {status, epoch, now ms, the hash flat}. */
extern const char storecodec_lease_script[];

#define STORE_HEARTBEAT_EVERY_MS 10000 /* each daemon beats this often ... */
#define STORE_HEARTBEAT_TTL_MS 30000   /* ... and is taken for dead when a beat is this old */

#endif
