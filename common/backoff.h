/* Exponential backoff with full jitter for every reconnect and resubscribe, pure.
 * Used by the Redis link, the XMPP link and sipbridge's subscriptions. */
#ifndef OFFHOOK_BACKOFF_H
#define OFFHOOK_BACKOFF_H

#include <stdint.h>

struct backoff {
    uint32_t base_ms;  /* first delay's upper bound */
    uint32_t max_ms;   /* cap on the upper bound */
    uint32_t attempt;  /* failures since the last success */
    uint64_t rng;      /* xorshift state; seed it per object so peers do not align */
};

void backoff_init(struct backoff *b, uint32_t base_ms, uint32_t max_ms, uint64_t seed);
/* Next delay: uniform in [bound/2, bound], bound = min(max, base * 2^attempt). Counts the
 * attempt. Half the bound is kept so a fleet never retries at once yet never spins. */
uint32_t backoff_next(struct backoff *b);
void backoff_reset(struct backoff *b);
/* A uniformly distributed value in [0, n) from the same generator. */
uint32_t backoff_rand(struct backoff *b, uint32_t n);

#endif
