/* A Redis Sentinel client on the daemon's libevent loop: asks the sentinels of [redis]
 * sentinels, in turn and with a timeout each, where the master named master_name is, and
 * listens on one of them for +switch-master. Owned by a redislink (one per link), which
 * it tells what it learns through callbacks; it never blocks the loop. */
#ifndef OFFHOOK_SENTINEL_H
#define OFFHOOK_SENTINEL_H

#include <stdbool.h>

struct event_base;
struct offhook_config;
struct sentinel;

/* host:port is where the sentinels say the master is; host is NULL when none of them
 * answered (each failure is logged and counted). host is valid only during the call.
 * Always called from the event loop, never from inside a sentinel_* call, so the owner
 * may call sentinel_lookup() or sentinel_cancel() from it (not sentinel_free()). */
typedef void (*sentinel_addr_fn)(void *arg, const char *host, int port);

/* cfg must have redis_nsentinels > 0; what it needs is copied. link names the owner in
 * logs and metrics. on_master is called whenever the sentinels name the master without
 * being asked: a +switch-master announcement, or the answer to the check made after the
 * subscription was lost and taken again (a switch may have been missed meanwhile); the
 * owner compares it with where it is connected. */
struct sentinel *sentinel_new(struct event_base *base, const struct offhook_config *cfg,
                              const char *link, sentinel_addr_fn on_master, void *arg);
/* Not from inside one of its callbacks. */
void sentinel_free(struct sentinel *s);
/* Asks the sentinels where the master is, starting with the one that answered last;
 * fn(arg, ...) gets the answer once. Replaces a lookup in flight (its fn is not called). */
void sentinel_lookup(struct sentinel *s, sentinel_addr_fn fn, void *arg);
/* Abandons the lookup in flight, if any: its fn is not called. */
void sentinel_cancel(struct sentinel *s);
/* Registers offhook_redis_sentinel_errors_total{link} (redislink_register_metrics does). */
void sentinel_register_metrics(void);
/* Exports link's sentinel error counter from zero, with or without sentinels (every
 * counter has a sample from the first scrape). */
void sentinel_metrics_link(const char *link);

#endif
