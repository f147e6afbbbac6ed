/* The token bucket every rate limit of offhook uses, pure: at most rate events per second
 * on average, bursts of up to burst at once. The caller passes the time (monotonic ms), so
 * it runs from any loop and unit-tests without a clock. Used by subscription.c (the
 * SUBSCRIBE ramp, NOTIFY floods per subscription) and probe.c (notifier-is-back sweeps),
 * and through struct ratelimit_gate by every log line a peer can cause.
 *
 * The limit and the buckets are apart: one struct ratelimit (a configured rate) serves any
 * number of buckets (one per subscription, per source, per log line), and changing it at a
 * reload changes them all; each bucket keeps the tokens it had. */
#ifndef OFFHOOK_RATELIMIT_H
#define OFFHOOK_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ratelimit {
    double rate;      /* tokens per second; <= 0: no limit at all */
    double burst;     /* most tokens a bucket holds (the largest burst); at least 1 */
};

struct ratelimit_bucket {
    double tokens;    /* as of at_ms */
    int64_t at_ms;    /* when tokens was last brought up to date */
};

/* A bucket holding tokens at now_ms. A new bucket's tokens are the burst its owner grants
 * before the first refill: full (burst) or less (1: the first event only). */
void ratelimit_bucket_init(struct ratelimit_bucket *b, double tokens, int64_t now_ms);
/* Takes one token if there is one (refilled up to now_ms first): true, the event may go;
 * false, it must wait (see ratelimit_wait_ms). Always true without a limit. */
bool ratelimit_take(const struct ratelimit *rl, struct ratelimit_bucket *b, int64_t now_ms)
    __attribute__((warn_unused_result));
/* Milliseconds from now_ms until the bucket holds a token (0: it holds one now, or there
 * is no limit), rounded up so a timer armed for it finds the token there. Changes nothing. */
long ratelimit_wait_ms(const struct ratelimit *rl, const struct ratelimit_bucket *b,
                       int64_t now_ms);

/* One kind of log line about one peer (or one subscription, one notifier), held to a
 * rate: a flood of what causes it logs a few lines, each saying how many were held
 * back since the one before. Zeroed, a gate lets its first event pass at once and then
 * grants the limit's burst before refilling. */
struct ratelimit_gate {
    struct ratelimit_bucket bucket;
    uint64_t held;    /* events held back since the last that passed */
    bool started;     /* bucket set up (by the first event) */
};

/* The limit of log lines a peer can cause, per gate (per peer, subscription or source):
 * bursts of 5, then one per 10 s. */
extern const struct ratelimit ratelimit_peer_log;

/* Whether this event may be logged at now_ms. If so, *held_back (if not NULL) gets how
 * many were held back before it, and that count starts again from zero. */
bool ratelimit_gate_pass(const struct ratelimit *rl, struct ratelimit_gate *g, int64_t now_ms,
                         uint64_t *held_back) __attribute__((warn_unused_result));

#endif
