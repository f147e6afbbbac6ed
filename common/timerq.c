/* A binary min-heap of deadlines behind one libevent timer (see timerq.h). */
#include "timerq.h"

#include <stdlib.h>

#include <event2/event.h>

#include "strutil.h"

struct timerq {
    struct tq_timer **heap;   /* heap[0] is the earliest */
    uint32_t n, cap;
    struct event *ev;         /* fires at heap[0]->due_ms */
    int64_t ev_due;           /* deadline ev is set for; INT64_MIN: not set */
    uint32_t seq;             /* timers armed so far (wraps) */
    bool running;             /* inside on_fire: rescheduled once at its end */
};

static void place(struct timerq *q, uint32_t i, struct tq_timer *t)
{
    q->heap[i] = t;
    t->slot = i + 1;
}

static void sift_up(struct timerq *q, uint32_t i)
{
    struct tq_timer *t = q->heap[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (q->heap[parent]->due_ms <= t->due_ms)
            break;
        place(q, i, q->heap[parent]);
        i = parent;
    }
    place(q, i, t);
}

static void sift_down(struct timerq *q, uint32_t i)
{
    struct tq_timer *t = q->heap[i];

    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= q->n)
            break;
        if (c + 1 < q->n && q->heap[c + 1]->due_ms < q->heap[c]->due_ms)
            c++;
        if (t->due_ms <= q->heap[c]->due_ms)
            break;
        place(q, i, q->heap[c]);
        i = c;
    }
    place(q, i, t);
}

/* The libevent timer follows the earliest deadline; it is moved only when that changes,
 * so arming a timer that is not the earliest costs no libevent call at all. */
static void reschedule(struct timerq *q)
{
    int64_t due, delay;
    struct timeval tv;

    if (q->running)
        return;
    if (q->n == 0) {
        if (q->ev_due != INT64_MIN)
            evtimer_del(q->ev);
        q->ev_due = INT64_MIN;
        return;
    }
    due = q->heap[0]->due_ms;
    if (due == q->ev_due)
        return;
    delay = due - clock_mono_ms();
    if (delay < 0)
        delay = 0;
    tv.tv_sec = (time_t)(delay / 1000);
    tv.tv_usec = (suseconds_t)((delay % 1000) * 1000);
    evtimer_add(q->ev, &tv);
    q->ev_due = due;
}

static void remove_at(struct timerq *q, uint32_t i)
{
    struct tq_timer *t = q->heap[i];

    t->slot = 0;
    q->n--;
    if (i == q->n)
        return;
    place(q, i, q->heap[q->n]);
    if (i > 0 && q->heap[i]->due_ms < q->heap[(i - 1) / 2]->due_ms)
        sift_up(q, i);
    else
        sift_down(q, i);
}

static void on_fire(evutil_socket_t fd, short what, void *arg)
{
    struct timerq *q = arg;
    int64_t now = clock_mono_ms();
    uint32_t pass = q->seq;

    q->ev_due = INT64_MIN;
    q->running = true;
    /* A callback may arm a timer that is already due (delay 0): it runs in the next
     * pass, not this one, so a timer re-arming itself at 0 cannot starve the loop. */
    while (q->n && q->heap[0]->due_ms <= now && (int32_t)(q->heap[0]->seq - pass) < 0) {
        struct tq_timer *t = q->heap[0];
        remove_at(q, 0);
        t->fn(t);
    }
    q->running = false;
    reschedule(q);
}

struct timerq *timerq_new(struct event_base *base)
{
    struct timerq *q = xcalloc(1, sizeof *q);

    q->ev = evtimer_new(base, on_fire, q);
    q->ev_due = INT64_MIN;
    return q;
}

void timerq_free(struct timerq *q)
{
    if (!q)
        return;
    for (uint32_t i = 0; i < q->n; i++)
        q->heap[i]->slot = 0;
    event_free(q->ev);
    free(q->heap);
    free(q);
}

void tq_arm_at(struct timerq *q, struct tq_timer *t, tq_fn *fn, int64_t due_ms)
{
    t->fn = fn;
    t->seq = q->seq++;
    if (t->slot) {
        uint32_t i = t->slot - 1;
        int64_t old = t->due_ms;
        t->due_ms = due_ms;
        if (due_ms < old)
            sift_up(q, i);
        else if (due_ms > old)
            sift_down(q, i);
    } else {
        if (q->n == q->cap) {
            q->cap = q->cap ? q->cap * 2 : 64;
            q->heap = xrealloc(q->heap, q->cap * sizeof *q->heap);
        }
        t->due_ms = due_ms;
        place(q, q->n++, t);
        sift_up(q, q->n - 1);
    }
    reschedule(q);
}

void tq_arm(struct timerq *q, struct tq_timer *t, tq_fn *fn, int64_t delay_ms)
{
    tq_arm_at(q, t, fn, clock_mono_ms() + (delay_ms > 0 ? delay_ms : 0));
}

void tq_cancel(struct timerq *q, struct tq_timer *t)
{
    if (!t->slot)
        return;
    remove_at(q, t->slot - 1);
    reschedule(q);
}

int64_t tq_remaining_ms(const struct tq_timer *t)
{
    int64_t left;

    if (!t->slot)
        return -1;
    left = t->due_ms - clock_mono_ms();
    return left > 0 ? left : 0;
}

uint32_t timerq_count(const struct timerq *q)
{
    return q->n;
}
