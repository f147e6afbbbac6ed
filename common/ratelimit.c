/* Token bucket, pure. Tokens are fractional so a rate below one per second works. */
#include "ratelimit.h"

const struct ratelimit ratelimit_peer_log = {.rate = 0.1, .burst = 5};

void ratelimit_bucket_init(struct ratelimit_bucket *b, double tokens, int64_t now_ms)
{
    b->tokens = tokens > 0 ? tokens : 0;
    b->at_ms = now_ms;
}

/* What b holds at now_ms. */
static double tokens_at(const struct ratelimit *rl, const struct ratelimit_bucket *b,
                        int64_t now_ms)
{
    double t = b->tokens, cap = rl->burst < 1.0 ? 1.0 : rl->burst; /* else nothing passes */

    if (now_ms > b->at_ms)
        t += (double)(now_ms - b->at_ms) * rl->rate / 1000.0;
    return t > cap ? cap : t;
}

bool ratelimit_take(const struct ratelimit *rl, struct ratelimit_bucket *b, int64_t now_ms)
{
    if (rl->rate <= 0)
        return true;
    b->tokens = tokens_at(rl, b, now_ms);
    if (now_ms > b->at_ms)
        b->at_ms = now_ms;
    if (b->tokens < 1.0)
        return false;
    b->tokens -= 1.0;
    return true;
}

long ratelimit_wait_ms(const struct ratelimit *rl, const struct ratelimit_bucket *b,
                       int64_t now_ms)
{
    double t;

    if (rl->rate <= 0)
        return 0;
    t = tokens_at(rl, b, now_ms);
    /* +1: the division truncates, and a timer that fires a hair early finds no token. */
    return t >= 1.0 ? 0 : (long)((1.0 - t) * 1000.0 / rl->rate) + 1;
}

bool ratelimit_gate_pass(const struct ratelimit *rl, struct ratelimit_gate *g, int64_t now_ms,
                         uint64_t *held_back)
{
    if (!g->started) {
        ratelimit_bucket_init(&g->bucket, rl->burst < 1 ? 1 : rl->burst, now_ms);
        g->started = true;
    }
    if (!ratelimit_take(rl, &g->bucket, now_ms)) {
        g->held++;
        return false;
    }
    if (held_back)
        *held_back = g->held;
    g->held = 0;
    return true;
}
