/* common/ratelimit.c, the token bucket, driven by tables of (time, expected answer). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>

#include "ratelimit.h"

#define MAX_STEPS 16

struct step {
    int64_t t_ms;     /* when */
    char op;          /* 't': take, expect ok; 'w': ratelimit_wait_ms, expect wait */
    int ok;           /* for 't': 1 allowed, 0 refused */
    long wait;        /* for 'w' */
};

static const struct {
    const char *what;
    struct ratelimit rl;
    double initial;
    struct step steps[MAX_STEPS];
    int nsteps;
} cases[] = {
    {"SUBSCRIBE ramp at 50/s: one at once, then one per 20 ms",
     {50, 50}, 1,
     {{0, 't', 1, 0}, {0, 't', 0, 0}, {0, 'w', 0, 21}, {10, 't', 0, 0}, {10, 'w', 0, 11},
      {20, 't', 1, 0}, {20, 't', 0, 0}, {40, 't', 1, 0}},
     8},
    {"after a quiet spell the ramp bursts one second's worth, no more",
     {5, 5}, 1,
     {{0, 't', 1, 0}, {10000, 't', 1, 0}, {10000, 't', 1, 0}, {10000, 't', 1, 0},
      {10000, 't', 1, 0}, {10000, 't', 1, 0}, {10000, 't', 0, 0}, {10000, 'w', 0, 201}},
     8},
    {"NOTIFY flood at 2/s with a burst of 4: four at once, then one per 500 ms",
     {2, 4}, 4,
     {{0, 't', 1, 0}, {0, 't', 1, 0}, {0, 't', 1, 0}, {0, 't', 1, 0}, {0, 't', 0, 0},
      {0, 'w', 0, 501}, {499, 't', 0, 0}, {500, 't', 1, 0}, {600, 'w', 0, 401}},
     9},
    {"a refused take costs nothing: the token still comes on time",
     {1, 1}, 0,
     {{0, 't', 0, 0}, {300, 't', 0, 0}, {600, 't', 0, 0}, {999, 't', 0, 0},
      {1000, 't', 1, 0}, {1000, 'w', 0, 1001}},
     6},
    {"no limit (rate 0): everything passes, nothing waits",
     {0, 0}, 0,
     {{0, 't', 1, 0}, {0, 't', 1, 0}, {0, 't', 1, 0}, {0, 'w', 0, 0}},
     4},
    {"fractional rates: one every 4 s",
     {0.25, 1}, 1,
     {{0, 't', 1, 0}, {0, 'w', 0, 4001}, {3999, 't', 0, 0}, {4000, 't', 1, 0}},
     4},
    {"a burst below one still lets one through",
     {2, 0.5}, 0,
     {{0, 't', 0, 0}, {500, 't', 1, 0}, {10000, 't', 1, 0}, {10000, 't', 0, 0}},
     4},
    {"time going backwards adds nothing",
     {10, 10}, 1,
     {{1000, 't', 1, 0}, {500, 't', 0, 0}, {1000, 't', 0, 0}, {1100, 't', 1, 0}},
     4},
};

static void test_ratelimit_table(void **state)
{
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct ratelimit_bucket b;

        ratelimit_bucket_init(&b, cases[c].initial, cases[c].steps[0].t_ms);
        for (int i = 0; i < cases[c].nsteps; i++) {
            const struct step *s = &cases[c].steps[i];
            if (s->op == 't') {
                bool ok = ratelimit_take(&cases[c].rl, &b, s->t_ms);
                if (ok != (bool)s->ok)
                    fail_msg("%s: step %d (t=%lld ms): take %s, expected %s", cases[c].what, i,
                             (long long)s->t_ms, ok ? "allowed" : "refused",
                             s->ok ? "allowed" : "refused");
            } else {
                long w = ratelimit_wait_ms(&cases[c].rl, &b, s->t_ms);
                if (w != s->wait)
                    fail_msg("%s: step %d (t=%lld ms): wait %ld ms, expected %ld",
                             cases[c].what, i, (long long)s->t_ms, w, s->wait);
            }
        }
    }
}

/* One limit, many buckets: a reload that changes the limit changes every bucket's pace,
 * and each bucket keeps what it held. */
static void test_ratelimit_shared_limit(void **state)
{
    struct ratelimit rl = {1, 2};
    struct ratelimit_bucket a, b;

    ratelimit_bucket_init(&a, 2, 0);
    ratelimit_bucket_init(&b, 0, 0);
    assert_true(ratelimit_take(&rl, &a, 0));
    assert_false(ratelimit_take(&rl, &b, 0));
    rl.rate = 10;
    rl.burst = 20;
    assert_true(ratelimit_take(&rl, &a, 0));  /* a's second token, held from before */
    assert_false(ratelimit_take(&rl, &a, 0));
    assert_int_equal(ratelimit_wait_ms(&rl, &b, 0), 101);
    assert_true(ratelimit_take(&rl, &b, 100)); /* b fills at the new rate */
    assert_true(ratelimit_take(&rl, &a, 100));
    /* A smaller burst caps what a bucket may spend at once. */
    rl.burst = 2;
    assert_true(ratelimit_take(&rl, &a, 100000));
    assert_true(ratelimit_take(&rl, &a, 100000));
    assert_false(ratelimit_take(&rl, &a, 100000));
}

/* A log line's gate: a flood logs the burst, then one line per token, each saying how many
 * were held back; a quiet spell lets the next one through with the count so far. */
static void test_ratelimit_gate(void **state)
{
    const struct ratelimit rl = {0.1, 3}; /* one line per 10 s, bursts of 3 */
    struct ratelimit_gate g = {0};
    uint64_t held = 99;
    int passed = 0;

    assert_true(ratelimit_gate_pass(&rl, &g, 1000, &held));
    assert_int_equal(held, 0);
    for (int i = 0; i < 1000; i++) /* 1,000 in the same millisecond */
        passed += ratelimit_gate_pass(&rl, &g, 1000, &held);
    assert_int_equal(passed, 2);
    assert_int_equal(g.held, 998);
    assert_false(ratelimit_gate_pass(&rl, &g, 10999, &held));
    assert_true(ratelimit_gate_pass(&rl, &g, 11000, &held));
    assert_int_equal(held, 999);
    assert_int_equal(g.held, 0);
    /* NULL: the count is not wanted, and still restarts. */
    assert_true(ratelimit_gate_pass(&rl, &g, 100000, NULL));
    assert_int_equal(g.held, 0);
    /* A limit whose burst is below one still lets the first event through. */
    {
        const struct ratelimit tiny = {1, 0};
        struct ratelimit_gate t = {0};
        assert_true(ratelimit_gate_pass(&tiny, &t, 0, &held));
        assert_false(ratelimit_gate_pass(&tiny, &t, 0, &held));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ratelimit_table),
        cmocka_unit_test(test_ratelimit_shared_limit),
        cmocka_unit_test(test_ratelimit_gate),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
