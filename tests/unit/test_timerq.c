/* common/timerq.c: deadlines fire in order, once each; re-arming moves a timer,
 * cancelling removes it; callbacks may arm and cancel others; a timer re-armed at 0 from
 * its own callback waits for the next pass. Driven by a real libevent loop. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "strutil.h"
#include "timerq.h"

#define N 2000

struct item {
    struct tq_timer t;
    int id;
    int fired;
    int64_t due;
};

static struct timerq *q;
static struct event_base *base;
static int order[N], norder;
static struct item items[N];

static void on_item(struct tq_timer *t)
{
    struct item *it = (struct item *)((char *)t - offsetof(struct item, t));

    it->fired++;
    order[norder++] = it->id;
    if (norder == N || timerq_count(q) == 0)
        event_base_loopbreak(base);
}

static void run_until_idle(void)
{
    while (timerq_count(q))
        event_base_loop(base, EVLOOP_ONCE);
}

static int setup(void **state)
{
    base = event_base_new();
    q = timerq_new(base);
    norder = 0;
    memset(items, 0, sizeof items);
    return 0;
}

static int teardown(void **state)
{
    timerq_free(q);
    event_base_free(base);
    return 0;
}

static void fire_in_deadline_order(void **state)
{
    uint64_t rng = 88172645463325252ULL;
    int64_t t0 = clock_mono_ms();

    for (int i = 0; i < N; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        items[i].id = i;
        items[i].due = t0 + (int64_t)(rng % 60);
        tq_arm_at(q, &items[i].t, on_item, items[i].due);
    }
    /* Move a tenth, cancel another tenth. */
    for (int i = 0; i < N; i += 10) {
        items[i].due = t0 + 30 + i % 7;
        tq_arm_at(q, &items[i].t, on_item, items[i].due);
        tq_cancel(q, &items[i + 1].t);
        assert_false(tq_armed(&items[i + 1].t));
    }
    assert_int_equal(timerq_count(q), N - N / 10);
    run_until_idle();
    assert_int_equal(norder, N - N / 10);
    for (int i = 1; i < norder; i++)
        assert_true(items[order[i - 1]].due <= items[order[i]].due);
    for (int i = 0; i < N; i++)
        assert_int_equal(items[i].fired, i % 10 == 1 ? 0 : 1);
}

static int rearmed;

static void on_rearm(struct tq_timer *t)
{
    struct item *it = (struct item *)((char *)t - offsetof(struct item, t));

    it->fired++;
    /* Re-armed at 0 from its own callback: the next pass, never this one. */
    if (it->fired < 5) {
        rearmed++;
        tq_arm(q, t, on_rearm, 0);
        assert_true(tq_armed(t));
    }
}

static void cancel_other(struct tq_timer *t)
{
    tq_cancel(q, &items[2].t);
    tq_arm(q, &items[3].t, on_item, 1);
}

static void callbacks_arm_and_cancel(void **state)
{
    items[3].id = 3;
    tq_arm(q, &items[0].t, on_rearm, 0);
    tq_arm(q, &items[1].t, cancel_other, 5);
    tq_arm(q, &items[2].t, on_item, 50);
    event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(items[0].fired, 1); /* one pass, one call */
    run_until_idle();
    assert_int_equal(items[0].fired, 5);
    assert_int_equal(rearmed, 4);
    assert_int_equal(items[2].fired, 0); /* cancelled by item 1's callback */
    assert_int_equal(items[3].fired, 1); /* armed by it */
    assert_int_equal(tq_remaining_ms(&items[3].t), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(fire_in_deadline_order, setup, teardown),
        cmocka_unit_test_setup_teardown(callbacks_arm_and_cancel, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
