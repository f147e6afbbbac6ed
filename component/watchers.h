/* The watcher store: who watches each phone contact, in memory (authoritative while
 * running, kept in the users' sets) and in Redis sets (so a restart remembers), and the
 * watcher policy applied to them after a reload. News goes up through watchers_ops.
 * Calls nothing in the component but the directory (users.h). Called by main.c. */
#ifndef OFFHOOK_WATCHERS_H
#define OFFHOOK_WATCHERS_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>

#include "users.h"

struct event_base;
struct watchers;

/* News for the owner (main.c), wired at watchers_new. u and bare are valid only during
 * the call. */
struct watchers_ops {
    /* Redis remembered bare watching u's contact and memory did not: it watches again
     * (the owner sends it u's presence). */
    void (*on_learned)(void *arg, struct cuser *u, const char *bare);
    /* watchers_enforce_policy is about to drop bare from u's watchers: tell it. */
    void (*on_dropped)(void *arg, struct cuser *u, const char *bare);
};

/* d and base are borrowed and must outlive the store (d->cfg is read on every write);
 * ops is copied. Connects to Redis from base's loop. */
struct watchers *watchers_new(struct event_base *base, struct users *d,
                              const struct watchers_ops *ops, void *arg);
void watchers_free(struct watchers *w);
void watchers_register_metrics(void);
/* Redis is up and every contact's set has been read back. */
bool watchers_up(const struct watchers *w);
/* The active component holds every watcher in memory, read from Redis (now, and after
 * every reconnect, merged with its own and written back). A standby holds none (false:
 * memory is emptied); it starts inactive. */
void watchers_set_active(struct watchers *w, bool active);
/* Adds/removes a watcher in memory and in Redis (now, or once Redis is up or takes
 * writes again: a refused write is retried, never dropped); bare is copied. */
void watchers_add(struct watchers *w, struct cuser *u, const char *bare);
void watchers_remove(struct watchers *w, struct cuser *u, const char *bare);
/* bare no longer watches contact, which is nobody's any more (its user left): only Redis
 * remembered it. */
void watchers_forget(struct watchers *w, const char *contact, const char *bare);
/* After a reload (or a directory change) added users: reads back their sets from Redis,
 * so that a user who comes (back) keeps whoever watched their contact before (on_learned
 * for each). */
void watchers_load_new(struct watchers *w);
/* After a reload tightened [component] allow_watchers: whoever may no longer watch is
 * told (on_dropped) and removed, in memory and in Redis. */
void watchers_enforce_policy(struct watchers *w);

#endif
