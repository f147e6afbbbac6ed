/* Exponential backoff with jitter, pure. */
#include "backoff.h"

void backoff_init(struct backoff *b, uint32_t base_ms, uint32_t max_ms, uint64_t seed)
{
    b->base_ms = base_ms ? base_ms : 1;
    b->max_ms = max_ms < b->base_ms ? b->base_ms : max_ms;
    b->attempt = 0;
    b->rng = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

static uint64_t next_rand(struct backoff *b)
{
    uint64_t x = b->rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    b->rng = x;
    return x;
}

uint32_t backoff_rand(struct backoff *b, uint32_t n)
{
    return n ? (uint32_t)(next_rand(b) % n) : 0;
}

uint32_t backoff_next(struct backoff *b)
{
    uint64_t bound = b->base_ms;

    for (uint32_t i = 0; i < b->attempt && bound < b->max_ms; i++)
        bound *= 2;
    if (bound > b->max_ms)
        bound = b->max_ms;
    if (b->attempt < UINT32_MAX)
        b->attempt++;
    return (uint32_t)(bound / 2 + backoff_rand(b, (uint32_t)(bound - bound / 2) + 1));
}

void backoff_reset(struct backoff *b)
{
    b->attempt = 0;
}
