/* Drives Sofia-SIP's su_root from sipbridge's libevent loop, in the shape of hiredis's
 * adapters/libevent.h: the su_root's epoll descriptor is watched for readability and its
 * next timer deadline becomes a libevent timer, so Sofia runs only when it has work and
 * an idle sipbridge sleeps. Called by sipbridge's main; everything else uses the root. */
#ifndef OFFHOOK_SULOOP_H
#define OFFHOOK_SULOOP_H

#include <sofia-sip/su_wait.h>

struct event_base;
struct suloop;

/* Initialises Sofia (su_init), creates a single-threaded su_root and attaches it to base.
 * Returns NULL (and logs why) if the root's descriptor cannot be found. */
struct suloop *suloop_new(struct event_base *base);
su_root_t *suloop_root(const struct suloop *l);
/* Schedules a Sofia step on the next loop iteration. Call after every nta_*() call made
 * outside Sofia's callbacks: the port does not wake itself for same-thread messages. */
void suloop_kick(struct suloop *l);
/* Destroys the root and calls su_deinit. Destroy every Sofia object on the root first. */
void suloop_free(struct suloop *l);
/* Routes Sofia's own log output (all modules) into offhook's logger. */
void suloop_route_logs(int offhook_level);

#endif
