/* Liveness between the daemons, through Redis: the component's own heartbeat key, and
 * sipbridge's watched. Whether sipbridge is alive goes up through health_ops; calls
 * nothing in the component. Created by main.c, which also tells it of stream events. */
#ifndef OFFHOOK_HEALTH_H
#define OFFHOOK_HEALTH_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>

struct event_base;
struct health;
struct offhook_config;

/* News for the owner (main.c), wired at health_new. */
struct health_ops {
    /* sipbridge's heartbeat came or went, or was checked for the first time (not called
     * for health_seen_sipbridge). */
    void (*on_sipbridge)(void *arg, bool alive);
};

/* cfg is read only here (keys, Redis address); base must outlive the module; ops is
 * copied. Connects to Redis from base's loop. */
struct health *health_new(struct event_base *base, const struct offhook_config *cfg,
                          const struct health_ops *ops, void *arg);
void health_free(struct health *h);
void health_register_metrics(void);
/* A state event from sipbridge arrived: it is alive, whatever the last beat said. Returns
 * true if that is news (the caller then publishes what changed). */
bool health_seen_sipbridge(struct health *h);
/* Whether sipbridge's liveness is known (its beat checked once, or an event seen). Until
 * then nothing should be published: it would be unknown or frozen state, by chance. */
bool health_known(const struct health *h);

#endif
