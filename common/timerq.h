/* One timer structure for many timers: a binary min-heap of deadlines driven by a single
 * libevent timer, for objects that exist by the hundred thousand (sipbridge's
 * subscriptions and dialogs: refresh, watchdog, retry, stale, flood). A timer is a small
 * struct embedded in its owner (24 bytes, against ~150 for a struct event and its
 * allocation); arming, re-arming and cancelling are O(log n) and nothing ever walks the
 * timers that are not due. Called by sipbridge's subscription.c, sipua.c and probe.c. */
#ifndef OFFHOOK_TIMERQ_H
#define OFFHOOK_TIMERQ_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct timerq;
struct tq_timer;

/* Called from the loop when t is due (t is disarmed first: the callback may arm it
 * again, arm or cancel others, or free t's owner after cancelling nothing else). */
typedef void tq_fn(struct tq_timer *t);

/* Embedded in its owner, zero-initialised = not armed. Owned by the owner; the queue
 * only points at it while it is armed, so cancel it before freeing the owner. */
struct tq_timer {
    int64_t due_ms;           /* monotonic ms (clock_mono_ms) when armed */
    uint32_t slot;            /* 1 + index in the heap; 0 = not armed */
    uint32_t seq;             /* the queue's arming count when armed */
    tq_fn *fn;
};

struct timerq *timerq_new(struct event_base *base);
/* Every timer must have been cancelled (or have fired) before. */
void timerq_free(struct timerq *q);
/* Arms (or re-arms) t to call fn in delay_ms (negative: 0). */
void tq_arm(struct timerq *q, struct tq_timer *t, tq_fn *fn, int64_t delay_ms);
/* Arms t for an absolute monotonic deadline. */
void tq_arm_at(struct timerq *q, struct tq_timer *t, tq_fn *fn, int64_t due_ms);
/* Disarms t if armed; harmless otherwise. */
void tq_cancel(struct timerq *q, struct tq_timer *t);
static inline bool tq_armed(const struct tq_timer *t)
{
    return t->slot != 0;
}
/* Milliseconds until t is due (0 if overdue), or -1 if not armed. */
int64_t tq_remaining_ms(const struct tq_timer *t);
/* Timers armed (for tests and metrics). */
uint32_t timerq_count(const struct timerq *q);

#endif
