/* sipbridge/expiry.c: when a grant is refreshed under [sip] min_expires, which NOTIFYs
 * make a grant short, and the pace of new SUBSCRIBEs after short grants. Tables of cases,
 * then every grant from 1 s to a day against the floor's promise. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>

#include "expiry.h"

/* Each case is tried with every rnd from 0 to 3,999: every point of its window (none is
 * wider) is reached, so [lo, hi] is exactly the window. */
static const struct {
    long delta, floor;
    long lo, hi; /* the refresh is within [lo, hi]; 0, 0: not refreshed */
    const char *what;
} refresh_cases[] = {
    {1, 60, 0, 0, "Expires: 1 under the default floor: let lapse"},
    {59, 60, 0, 0, "just below the floor: let lapse"},
    {1, 10, 0, 0, "Expires: 1 under the lowest floor: let lapse"},
    {0, 60, 0, 0, "Expires: 0 (ended): nothing to refresh"},
    {60, 60, 45, 45, "a grant of exactly the floor: at the window's end (3/4), not 15 s"},
    {100, 60, 60, 70, "91..299 s: 30-60 s before the end, raised to the floor"},
    {100, 10, 40, 70, "91..299 s under a low floor: nua's window as it was"},
    {3600, 60, 900, 2700, "an hour: the middle half"},
    {80, 60, 60, 60, "the middle half [20, 60] raised to the floor, its end"},
    {10, 10, 8, 8, "the lowest floor granted: the window's end (8 of 10 s)"},
};

static void test_refresh_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof refresh_cases / sizeof refresh_cases[0]; i++) {
        long lo = 1L << 30, hi = 0;
        for (uint64_t r = 0; r < 4000; r++) {
            long at = expiry_refresh_at(refresh_cases[i].delta, refresh_cases[i].floor, r);
            lo = at < lo ? at : lo;
            hi = at > hi ? at : hi;
        }
        if (lo != refresh_cases[i].lo || hi != refresh_cases[i].hi)
            fail_msg("%s: delta %ld floor %ld refreshed in [%ld, %ld], expected [%ld, %ld]",
                     refresh_cases[i].what, refresh_cases[i].delta, refresh_cases[i].floor, lo,
                     hi, refresh_cases[i].lo, refresh_cases[i].hi);
    }
}

/* Every grant from 1 s to a day, every floor the config allows at steps: a grant below
 * the floor is never refreshed; one at or above it is refreshed before it ends (a second
 * at least to spare), never in its first second, and no sooner than the floor unless the
 * window ends sooner (then at 3/4 of the grant at the earliest). */
static void test_refresh_promise(void **state)
{
    static const long floors[] = {10, 30, 60, 300, 3600};
    (void)state;
    for (size_t f = 0; f < sizeof floors / sizeof floors[0]; f++) {
        long floor = floors[f];
        for (long delta = 1; delta <= 86400; delta += delta < 400 ? 1 : 97) {
            for (uint64_t r = 0; r < 5; r++) {
                long at = expiry_refresh_at(delta, floor, r * 0x9e3779b97f4a7c15ULL);
                if (delta < floor) {
                    if (at != 0)
                        fail_msg("delta %ld < floor %ld refreshed at %ld", delta, floor, at);
                    continue;
                }
                if (at < 1 || at > delta - 1)
                    fail_msg("delta %ld floor %ld: refresh at %ld, outside the grant", delta,
                             floor, at);
                if (at < floor && at < (3 * delta) / 4)
                    fail_msg("delta %ld floor %ld: refresh at %ld, sooner than the floor "
                             "and than 3/4 of the grant", delta, floor, at);
            }
        }
    }
}

static void test_notify_shortens(void **state)
{
    (void)state;
    /* 2xx Expires: 3600 at t=0, then a NOTIFY at 10 s saying 1 s left: shortened. */
    assert_true(expiry_notify_shortens(1, 60, 10000, 3600000));
    /* The same, 3,590 s on: what is left of the hour, not a cut. */
    assert_false(expiry_notify_shortens(10, 60, 3590000, 3600000));
    /* Within the transit slack of the grant's end: the same grant. */
    assert_false(expiry_notify_shortens(30, 60, 0, 30900));
    assert_true(expiry_notify_shortens(30, 60, 0, 31001));
    /* At or above the floor, or no grant known yet (NOTIFY before the 2xx): not short. */
    assert_false(expiry_notify_shortens(60, 60, 0, 3600000));
    assert_false(expiry_notify_shortens(1, 60, 0, 0));
    /* expires=0 or absent (-1) is not a grant. */
    assert_false(expiry_notify_shortens(0, 60, 0, 3600000));
    assert_false(expiry_notify_shortens(-1, 60, 0, 3600000));
}

static void test_floor_wait(void **state)
{
    (void)state;
    /* Never sent: no wait. */
    assert_int_equal(expiry_floor_wait_ms(0, 10, 5000), 0);
    /* Sent at 1 s, floor 10 s: at 2 s (the PBX's timeout NOTIFY), 9 s to wait. */
    assert_int_equal(expiry_floor_wait_ms(1000, 10, 2000), 9000);
    assert_int_equal(expiry_floor_wait_ms(1000, 10, 10999), 1);
    assert_int_equal(expiry_floor_wait_ms(1000, 10, 11000), 0);
    assert_int_equal(expiry_floor_wait_ms(1000, 10, 500000), 0);
    /* A PBX ending the dialog every 100 ms for a minute: one SUBSCRIBE per floor. */
    {
        int64_t sent = 1, now;
        int n = 1;
        for (now = 1; now <= 60000; now += 100) {
            if (expiry_floor_wait_ms(sent, 10, now) == 0) {
                sent = now;
                n++;
            }
        }
        assert_int_equal(n, 6); /* at 1 ms, then 10.001 s, 20.001 s, ... 50.001 s */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refresh_table),
        cmocka_unit_test(test_refresh_promise),
        cmocka_unit_test(test_notify_shortens),
        cmocka_unit_test(test_floor_wait),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
