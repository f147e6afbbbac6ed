/* Liveness between the daemons, through Redis: the component refreshes its own heartbeat
 * key and watches sipbridge's. While sipbridge's beat is missing or old, what Redis holds
 * is no longer being kept true, so every phone shows "unknown" instead of a frozen state.
 * A fresh beat, or any state event in the stream, brings it back. Until the first check
 * nothing is known: the owner waits for it before showing anything. Called by main.c. */
#include "health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "redislink.h"
#include "storecodec.h"
#include "strutil.h"

struct health {
    struct health_ops ops;
    void *arg;
    struct redislink *link;
    struct event *tick;
    char own_key[512];
    char sipbridge_key[512];
    int sipbridge;            /* -1 not checked yet, 0 missing or old, 1 beating */
    int64_t up_since_ms;      /* when the Redis link last came up */
};

/* After a reconnect, a missing beat counts only once sipbridge has had a full beat
 * period to write it: a Redis that restarted empty has lost the key, not sipbridge. Not at
 * the first check: a component starting while sipbridge is down must not show what Redis
 * last held as if it were being kept true. */
#define MISSING_GRACE_MS (STORE_HEARTBEAT_EVERY_MS + 2000)
/* A beat is fresh if written within one period plus this: the key outlives a dead
 * sipbridge by its TTL (STORE_HEARTBEAT_TTL_MS), three periods. */
#define FRESH_SLACK_MS 5000

static struct metric *m_sipbridge;

void health_register_metrics(void)
{
    m_sipbridge = metric_new(METRIC_GAUGE, "offhook_sipbridge_alive",
                             "1 while sipbridge's heartbeat in Redis is fresh.", NULL, NULL);
}

/* Records the new liveness; returns true if it changed what watchers should see. */
static bool note_alive(struct health *h, int alive)
{
    if (alive == h->sipbridge)
        return false;
    if (h->sipbridge >= 0 || !alive)
        log_notice("health", "event=sipbridge_%s%s", alive ? "back" : "missing",
                   alive ? "" : " action=showing_unknown");
    else
        log_info("health", "event=sipbridge_alive");
    h->sipbridge = alive;
    metric_set(m_sipbridge, NULL, alive);
    return true;
}

/* The feed kept following the stream either way: only what watchers see changes. */
static void set_alive(struct health *h, int alive)
{
    if (note_alive(h, alive))
        h->ops.on_sipbridge(h->arg, alive);
}

bool health_seen_sipbridge(struct health *h)
{
    return h && h->sipbridge != 1 && note_alive(h, 1);
}

bool health_known(const struct health *h)
{
    return h->sipbridge >= 0;
}

/* PTTL of sipbridge's beat: -2 no key, else milliseconds left of its TTL (Redis's clock,
 * so no clock of ours or sipbridge's is compared). */
static void on_pttl(struct redislink *l, redisReply *r, void *arg)
{
    struct health *h = arg;
    bool fresh;

    if (!r || r->type != REDIS_REPLY_INTEGER)
        return;
    /* -1: a key without expiry, written by hand: taken as a beat. */
    fresh = r->integer == -1 ||
            r->integer > STORE_HEARTBEAT_TTL_MS - STORE_HEARTBEAT_EVERY_MS - FRESH_SLACK_MS;
    if (!fresh && h->sipbridge >= 0 && r->integer == -2 &&
        clock_mono_ms() - h->up_since_ms < MISSING_GRACE_MS)
        return;
    set_alive(h, fresh);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;

    if (!redislink_up(h->link))
        return;
    if (redislink_heartbeat(h->link, h->own_key, STORE_HEARTBEAT_TTL_MS) < 0 ||
        redislink_command(h->link, on_pttl, h, "PTTL %s", h->sipbridge_key) < 0)
        redislink_reset(h->link, "cannot queue heartbeat");
}

static void on_link(struct redislink *l, bool up, void *arg)
{
    struct health *h = arg;

    if (up) {
        h->up_since_ms = clock_mono_ms();
        on_tick(-1, 0, arg);
    }
}

struct health *health_new(struct event_base *base, const struct offhook_config *cfg,
                          const struct health_ops *ops, void *arg)
{
    struct health *h = xcalloc(1, sizeof *h);
    struct timeval tv = {.tv_sec = STORE_HEARTBEAT_EVERY_MS / 1000 / 2};

    h->ops = *ops;
    h->arg = arg;
    h->sipbridge = -1; /* the owner assumes alive until Redis says otherwise */
    storecodec_key_heartbeat(cfg->redis_prefix, "component", h->own_key, sizeof h->own_key);
    storecodec_key_heartbeat(cfg->redis_prefix, "sipbridge", h->sipbridge_key,
                        sizeof h->sipbridge_key);
    h->tick = event_new(base, -1, EV_PERSIST, on_tick, h);
    event_add(h->tick, &tv);
    h->link = redislink_new(base, cfg, "health", 10000, on_link, h);
    return h;
}

void health_free(struct health *h)
{
    if (!h)
        return;
    event_free(h->tick);
    redislink_free(h->link);
    free(h);
}
