/* One Redis connection driven by the daemon's libevent loop (hiredis async + its
 * libevent adapter): AUTH and SELECT on connect, reconnect with backoff and jitter, and
 * a stall detector so a frozen server is noticed even when TCP stays up. With [redis]
 * sentinels, each connection goes to the master the sentinels name (sentinel.c), checked
 * with ROLE, and a failover moves the link: down, then up on a fresh connection to the
 * new master. sipbridge's store and the component's feed, watcher store and health each
 * own one. */
#ifndef OFFHOOK_REDISLINK_H
#define OFFHOOK_REDISLINK_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct redisReply;
struct redislink;
struct offhook_config;

/* reply is NULL when the connection went away before the answer came; it is valid only
 * during the callback. */
typedef void (*redislink_reply_fn)(struct redislink *l, struct redisReply *reply, void *arg);
typedef void (*redislink_state_fn)(struct redislink *l, bool up, void *arg);

/* name is used in logs and metrics ("store", "feed"). stall_ms: a command outstanding for
 * longer than this marks the server dead (blocking reads must allow for their block
 * time). on_state is called after the link comes up (AUTH/SELECT done) and after it
 * goes down. */
struct redislink *redislink_new(struct event_base *base, const struct offhook_config *cfg,
                                const char *name, unsigned stall_ms,
                                redislink_state_fn on_state, void *arg);
void redislink_free(struct redislink *l);
bool redislink_up(const struct redislink *l);
/* The server of the last connection that came up, "HOST:PORT" ("[ADDR]:PORT" for IPv6) or
 * "unix:PATH"; "" before the first. Valid until the link's next state change. */
const char *redislink_master(const struct redislink *l);
/* How many times a connection came up on another master than the one before (Sentinel
 * failovers). It changes before on_state(up) is called, so an owner that keeps anything
 * tied to one dataset (a stream position, a lease, a fencing token) compares it there with
 * the value it saw last: the new master may lack the old one's last writes. Every change
 * of master comes as on_state(down) then on_state(up) on a fresh connection. */
uint64_t redislink_master_gen(const struct redislink *l);
/* Queues a command. Returns 0, or -1 when the link is not up (fn is then not called). */
int redislink_command(struct redislink *l, redislink_reply_fn fn, void *arg, const char *fmt,
                      ...) __attribute__((warn_unused_result));
int redislink_command_argv(struct redislink *l, redislink_reply_fn fn, void *arg, int argc,
                           const char **argv, const size_t *argvlen)
    __attribute__((warn_unused_result));
/* SET key <wall-clock ms> PX ttl_ms: a daemon's heartbeat, as a script that Redis at
 * maxmemory still runs (storecodec_heartbeat_script). Returns as redislink_command. */
int redislink_heartbeat(struct redislink *l, const char *key, int ttl_ms)
    __attribute__((warn_unused_result));
/* Drops the connection now and reconnects after backoff (used on protocol errors):
 * counted in offhook_redis_errors_total and logged as a warning. */
void redislink_reset(struct redislink *l, const char *why);
/* The same, on purpose (e.g. to cancel a blocking read after a reload): reconnects at
 * once, counted nowhere, logged at info. */
void redislink_restart(struct redislink *l, const char *why);
/* Registers offhook_redis_connected{link}, offhook_redis_errors_total{link},
 * offhook_redis_master{master}, offhook_redis_master_changes_total{link} and
 * offhook_redis_sentinel_errors_total{link}. */
void redislink_register_metrics(void);

#endif
