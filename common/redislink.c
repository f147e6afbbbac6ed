/* A Redis connection on the libevent loop with reconnect, AUTH/SELECT and stall detection;
 * with [redis] sentinels, to the master they name, followed through failovers. */
#include "redislink.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "backoff.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "sentinel.h"
#include "storecodec.h"
#include "strutil.h"

#define CONNECT_TIMEOUT_MS 5000
#define HEALTH_INTERVAL_MS 5000
#define IDLE_PING_MS 15000
#define ADDR_MAX 300

/* RESOLVING: asking the sentinels where the master is (sentinel mode only). */
enum rl_state { RL_DOWN, RL_RESOLVING, RL_CONNECTING, RL_HANDSHAKE, RL_UP };

struct redislink {
    struct event_base *base;
    redisAsyncContext *ac;    /* NULL while down */
    enum rl_state state;
    struct backoff bo;
    struct event *retry;      /* reconnect after backoff */
    struct event *health;     /* connect timeout and stall detection */
    char *name;
    char *host, *unix_path, *password;
    int port, db;
    unsigned stall_ms;
    int outstanding;          /* commands sent, reply not yet seen */
    int64_t last_activity;    /* mono ms of the last reply, or of the first send after idle */
    int64_t connect_started;
    int handshake_left;       /* AUTH/SELECT/ROLE/PING replies still awaited */
    redislink_state_fn on_state;
    void *arg;
    bool logged_down;         /* "cannot connect" is logged once per outage */
    bool restarting;          /* redislink_restart(): not an error, reconnect at once */
    unsigned long err_streak; /* error replies since the last good one */
    char err_last[128];       /* the last error logged: the same one is not logged again */
    struct sentinel *sentinel; /* NULL: the url's address; else where the master is */
    char master[ADDR_MAX];    /* the server of the connection being made or up */
    char up_master[ADDR_MAX]; /* the server of the last connection that came up; "" = none */
    bool counted;             /* up_master is counted in offhook_redis_master */
    char next_host[256];      /* a master the sentinels named unasked: the next connection */
    int next_port;            /* goes there without asking; "" = ask */
    uint64_t master_gen;      /* changes of master seen */
};

struct pending {
    struct redislink *link;
    redislink_reply_fn fn;
    void *arg;
    redisAsyncContext *ac;    /* the connection it was sent on */
};

static struct metric *m_connected, *m_errors, *m_master, *m_master_changes;

/* ---- hiredis on libevent ---------------------------------------------------------------
 * hiredis's own adapter (adapters/libevent.h) in the same shape, with two changes that
 * matter at a thousand commands a second: the read event is persistent (hiredis asks for
 * it again after every read, and re-adding a one-shot event is an epoll_ctl each time),
 * and a command does not arm the write event: what one loop turn queued is written by one
 * write() at the end of that turn (event_active on a flush event, no system call), so the
 * turn's commands go out pipelined. The write event is armed only when the socket takes
 * less than was queued, and while connecting (a non-blocking connect completes when the
 * socket turns writable). */
struct rl_events {
    redisAsyncContext *ac;
    struct event *rev, *wev, *flush;
    bool reading, writing, flushing, dead;
};

static void rl_free_events(struct rl_events *e)
{
    event_free(e->rev);
    event_free(e->wev);
    event_free(e->flush);
    free(e);
}

static void rl_on_read(evutil_socket_t fd, short what, void *arg)
{
    struct rl_events *e = arg;

    redisAsyncHandleRead(e->ac);
}

static void rl_on_write(evutil_socket_t fd, short what, void *arg)
{
    struct rl_events *e = arg;

    e->writing = false; /* a one-shot event: it is no longer armed */
    redisAsyncHandleWrite(e->ac);
}

static void rl_on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct rl_events *e = arg;

    /* hiredis may free the context (and call rl_cleanup) from inside: then the events
     * are freed here, after it returns. */
    e->flushing = true;
    redisAsyncHandleWrite(e->ac);
    e->flushing = false;
    if (e->dead)
        rl_free_events(e);
}

static void rl_add_read(void *pd)
{
    struct rl_events *e = pd;

    if (!e->reading) {
        event_add(e->rev, NULL);
        e->reading = true;
    }
}

static void rl_del_read(void *pd)
{
    struct rl_events *e = pd;

    if (e->reading) {
        event_del(e->rev);
        e->reading = false;
    }
}

static void rl_add_write(void *pd)
{
    struct rl_events *e = pd;

    if ((e->ac->c.flags & REDIS_CONNECTED) && !e->flushing) {
        event_active(e->flush, EV_WRITE, 1); /* once per turn however many commands */
        return;
    }
    if (!e->writing) {
        event_add(e->wev, NULL);
        e->writing = true;
    }
}

static void rl_del_write(void *pd)
{
    struct rl_events *e = pd;

    if (e->writing) {
        event_del(e->wev);
        e->writing = false;
    }
}

static void rl_cleanup(void *pd)
{
    struct rl_events *e = pd;

    event_del(e->rev);
    event_del(e->wev);
    event_del(e->flush);
    if (e->flushing) {
        e->dead = true;
        return;
    }
    rl_free_events(e);
}

static void rl_attach(redisAsyncContext *ac, struct event_base *base)
{
    struct rl_events *e = xcalloc(1, sizeof *e);

    e->ac = ac;
    e->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, rl_on_read, e);
    e->wev = event_new(base, ac->c.fd, EV_WRITE, rl_on_write, e);
    e->flush = event_new(base, -1, 0, rl_on_flush, e);
    ac->ev.addRead = rl_add_read;
    ac->ev.delRead = rl_del_read;
    ac->ev.addWrite = rl_add_write;
    ac->ev.delWrite = rl_del_write;
    ac->ev.cleanup = rl_cleanup;
    ac->ev.data = e;
    rl_add_read(e);
    rl_add_write(e);
}

void redislink_register_metrics(void)
{
    m_connected = metric_new(METRIC_GAUGE, "offhook_redis_connected",
                             "1 when the Redis connection is up and authenticated.", "link",
                             NULL);
    m_errors = metric_new(METRIC_COUNTER, "offhook_redis_errors_total",
                          "Redis connection failures, stalls and error replies.", "link", NULL);
    m_master = metric_new(METRIC_GAUGE, "offhook_redis_master",
                          "Redis links of this process up on each server (the master; 0 for "
                          "one left, after a failover).",
                          "master", NULL);
    m_master_changes = metric_new(METRIC_COUNTER, "offhook_redis_master_changes_total",
                                  "Connections that came up on another master than the last "
                                  "one (Sentinel failovers).",
                                  "link", NULL);
    sentinel_register_metrics();
}

static void count_error(struct redislink *l)
{
    metric_inc(m_errors, l->name);
}

static void set_connected_metric(struct redislink *l, bool up)
{
    metric_set(m_connected, l->name, up ? 1 : 0);
}

static void addr_text(char *out, size_t len, const char *host, int port)
{
    snprintf(out, len, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
}

static void schedule_retry(struct redislink *l)
{
    uint32_t ms = backoff_next(&l->bo);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    event_add(l->retry, &tv);
}

static void went_down(struct redislink *l, const char *why)
{
    bool was_up = l->state == RL_UP;

    if (l->state == RL_RESOLVING)
        sentinel_cancel(l->sentinel);
    l->ac = NULL;
    l->state = RL_DOWN;
    l->outstanding = 0;
    set_connected_metric(l, false);
    if (l->counted) {
        metric_add(m_master, l->up_master, -1);
        l->counted = false;
    }
    if (l->restarting) {
        l->restarting = false;
        log_info("redis", "event=reconnecting link=%s reason=%s", l->name, log_q(why));
        if (was_up)
            l->on_state(l, false, l->arg);
        evtimer_del(l->retry);
        event_active(l->retry, EV_TIMEOUT, 1);
        return;
    }
    if (was_up) {
        log_warn("redis", "event=disconnected link=%s reason=%s", l->name, log_q(why));
        l->logged_down = true;
        l->on_state(l, false, l->arg);
    } else if (!l->logged_down) {
        log_warn("redis", "event=connect_failed link=%s reason=%s retry=backoff", l->name,
                 log_q(why));
        l->logged_down = true;
    } else {
        log_debug("redis", "event=connect_failed link=%s reason=%s", l->name, log_q(why));
    }
    schedule_retry(l);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redislink *l = ac->data;

    if (!l || l->ac != ac)
        return;
    count_error(l);
    went_down(l, status == REDIS_OK ? "closed" : (ac->errstr[0] ? ac->errstr : "error"));
}

static void handshake_reply(struct redislink *l, redisReply *r, void *arg)
{
    const char *what = arg;

    if (!r)
        return; /* connection went away: on_disconnect handles it */
    if (r->type == REDIS_REPLY_ERROR) {
        /* The reply may echo what we sent; log only the command name. */
        log_err("redis", "event=handshake_failed link=%s command=%s", l->name, what);
        count_error(l);
        redislink_reset(l, "handshake failed");
        return;
    }
    if (strcmp(what, "ROLE") == 0 &&
        (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
         r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "master"))) {
        /* A sentinel answered before it learnt of a failover, or the server was demoted
         * since: writes would be refused, reads stale. Ask again. */
        log_warn("redis", "event=not_master link=%s server=%s role=%s", l->name, log_q(l->master),
                 r->type == REDIS_REPLY_ARRAY && r->elements && r->element[0]->str
                     ? log_qn(r->element[0]->str, strnlen(r->element[0]->str, 20))
                     : "?");
        redislink_reset(l, "not a master");
        return;
    }
    if (--l->handshake_left > 0)
        return;
    l->state = RL_UP;
    backoff_reset(&l->bo);
    set_connected_metric(l, true);
    if (l->up_master[0] && strcmp(l->up_master, l->master) != 0) {
        /* Before on_state: the owner may look at the generation there. */
        l->master_gen++;
        metric_inc(m_master_changes, l->name);
        log_notice("redis", "event=master_changed link=%s old=%s new=%s changes=%llu", l->name,
                   log_q(l->up_master), log_q(l->master), (unsigned long long)l->master_gen);
    }
    str_copy(l->up_master, sizeof l->up_master, l->master);
    metric_add(m_master, l->up_master, 1);
    l->counted = true;
    log_notice("redis", "event=connected link=%s server=%s", l->name, log_q(l->master));
    l->logged_down = false;
    l->on_state(l, true, l->arg);
}

static void send_handshake(struct redislink *l)
{
    int rc = 0;

    l->state = RL_HANDSHAKE;
    l->handshake_left = 1;
    if (l->password) {
        const char *argv[] = {"AUTH", l->password};
        l->handshake_left++;
        rc |= redislink_command_argv(l, handshake_reply, "AUTH", 2, argv, NULL);
    }
    if (l->db) {
        l->handshake_left++;
        rc |= redislink_command(l, handshake_reply, "SELECT", "SELECT %d", l->db);
    }
    if (l->sentinel) {
        l->handshake_left++;
        rc |= redislink_command(l, handshake_reply, "ROLE", "ROLE");
    }
    rc |= redislink_command(l, handshake_reply, "PING", "PING");
    if (rc)
        redislink_reset(l, "cannot queue handshake");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redislink *l = ac->data;

    if (!l || l->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback. */
        count_error(l);
        went_down(l, ac->errstr[0] ? ac->errstr : "connect failed");
        return;
    }
    send_handshake(l);
}

/* Connects to host:port, or to the url's unix socket when host is NULL. */
static void connect_to(struct redislink *l, const char *host, int port)
{
    redisAsyncContext *ac = host ? redisAsyncConnect(host, port)
                                 : redisAsyncConnectUnix(l->unix_path);

    if (host)
        addr_text(l->master, sizeof l->master, host, port);
    else
        snprintf(l->master, sizeof l->master, "unix:%s", l->unix_path);

    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        count_error(l);
        l->ac = NULL;
        went_down(l, why);
        return;
    }
    ac->data = l;
    l->ac = ac;
    l->state = RL_CONNECTING;
    l->connect_started = clock_mono_ms();
    l->outstanding = 0;
    rl_attach(ac, l->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void on_lookup(void *arg, const char *host, int port)
{
    struct redislink *l = arg;

    if (l->state != RL_RESOLVING)
        return;
    if (!host) {
        count_error(l);
        went_down(l, "no sentinel named a master");
        return;
    }
    l->state = RL_DOWN; /* the lookup is over: nothing to cancel */
    connect_to(l, host, port);
}

static void start_connect(struct redislink *l)
{
    if (!l->sentinel) {
        connect_to(l, l->unix_path ? NULL : l->host, l->port);
        return;
    }
    if (l->next_host[0]) {
        char host[sizeof l->next_host];
        str_copy(host, sizeof host, l->next_host);
        l->next_host[0] = '\0'; /* once: if it fails, the sentinels are asked */
        connect_to(l, host, l->next_port);
        return;
    }
    l->state = RL_RESOLVING;
    l->connect_started = clock_mono_ms();
    sentinel_lookup(l->sentinel, on_lookup, l);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    start_connect(arg);
}

/* The sentinels name host:port as the master, unasked (a failover was announced, or a
 * check after the subscription was lost). A link on (or going to) another server moves:
 * down, then up on a fresh connection, as after any reconnect. Called from the loop. */
static void on_master_named(void *arg, const char *host, int port)
{
    struct redislink *l = arg;
    char addr[ADDR_MAX];
    redisAsyncContext *ac = l->ac;

    addr_text(addr, sizeof addr, host, port);
    if (l->state != RL_DOWN && l->state != RL_RESOLVING && strcmp(addr, l->master) == 0)
        return; /* already there */
    str_copy(l->next_host, sizeof l->next_host, host);
    l->next_port = port;
    switch (l->state) {
    case RL_DOWN:
        /* Waiting out a backoff after the old master vanished: go now. */
        evtimer_del(l->retry);
        event_active(l->retry, EV_TIMEOUT, 1);
        return;
    case RL_RESOLVING:
        sentinel_cancel(l->sentinel);
        start_connect(l);
        return;
    default:
        break;
    }
    ac->data = NULL;
    l->restarting = true; /* not an error: reconnect at once, to next_host */
    went_down(l, "the sentinels named another master");
    redisAsyncFree(ac);
}

static void on_health(evutil_socket_t fd, short what, void *arg)
{
    struct redislink *l = arg;
    int64_t now = clock_mono_ms();

    if ((l->state == RL_CONNECTING || l->state == RL_HANDSHAKE) &&
        now - l->connect_started > CONNECT_TIMEOUT_MS) {
        redislink_reset(l, "connect timeout");
        return;
    }
    if (l->state != RL_UP)
        return;
    if (l->outstanding > 0 && now - l->last_activity > (int64_t)l->stall_ms) {
        log_err("redis", "event=stalled link=%s outstanding=%d silent_ms=%lld", l->name,
                l->outstanding, (long long)(now - l->last_activity));
        redislink_reset(l, "stalled");
        return;
    }
    if (l->outstanding == 0 && now - l->last_activity > IDLE_PING_MS) {
        /* An idle link still proves the server is alive; a half-open TCP shows here. */
        if (redislink_command(l, NULL, NULL, "PING") < 0)
            redislink_reset(l, "cannot send ping");
    }
}

struct redislink *redislink_new(struct event_base *base, const struct offhook_config *cfg,
                                const char *name, unsigned stall_ms,
                                redislink_state_fn on_state, void *arg)
{
    struct redislink *l = xcalloc(1, sizeof *l);
    struct timeval hi = {.tv_sec = HEALTH_INTERVAL_MS / 1000,
                         .tv_usec = (HEALTH_INTERVAL_MS % 1000) * 1000};

    l->base = base;
    l->name = xstrdup(name);
    l->host = cfg->redis.host ? xstrdup(cfg->redis.host) : NULL;
    l->unix_path = cfg->redis.unix_path ? xstrdup(cfg->redis.unix_path) : NULL;
    l->port = cfg->redis.port;
    l->db = cfg->redis.db;
    l->password = cfg->redis_password[0] ? xstrdup(cfg->redis_password) : NULL;
    l->stall_ms = stall_ms;
    l->on_state = on_state;
    l->arg = arg;
    /* Capped at 3 s: once Redis is back, state converges within seconds. */
    backoff_init(&l->bo, 200, 3000, (uint64_t)clock_wall_us() ^ (uintptr_t)l);
    l->retry = evtimer_new(base, on_retry, l);
    l->health = event_new(base, -1, EV_PERSIST, on_health, l);
    event_add(l->health, &hi);
    set_connected_metric(l, false);
    /* Exported from zero: rate() and increase() need a sample before the first error,
     * and "no data" would read as "no such link". */
    metric_add(m_errors, l->name, 0);
    metric_add(m_master_changes, l->name, 0);
    sentinel_metrics_link(l->name);
    if (cfg->redis_nsentinels > 0) {
        l->sentinel = sentinel_new(base, cfg, name, on_master_named, l);
        l->db = 0; /* the url is not used */
    }
    start_connect(l);
    return l;
}

void redislink_free(struct redislink *l)
{
    if (!l)
        return;
    event_free(l->retry);
    event_free(l->health);
    sentinel_free(l->sentinel);
    l->sentinel = NULL;
    if (l->counted)
        metric_add(m_master, l->up_master, -1);
    if (l->ac) {
        redisAsyncContext *ac = l->ac;
        l->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (l->password) {
        explicit_bzero(l->password, strlen(l->password));
        free(l->password);
    }
    free(l->host);
    free(l->unix_path);
    free(l->name);
    free(l);
}

bool redislink_up(const struct redislink *l)
{
    return l->state == RL_UP;
}

const char *redislink_master(const struct redislink *l)
{
    return l->up_master;
}

uint64_t redislink_master_gen(const struct redislink *l)
{
    return l->master_gen;
}

void redislink_reset(struct redislink *l, const char *why)
{
    redisAsyncContext *ac = l->ac;

    if (!ac)
        return;
    count_error(l);
    /* Detach first: the free below runs pending callbacks with NULL replies, and no
     * disconnect callback may touch this link again. */
    ac->data = NULL;
    redisAsyncSetDisconnectCallback(ac, NULL);
    went_down(l, why);
    redisAsyncFree(ac);
}

void redislink_restart(struct redislink *l, const char *why)
{
    redisAsyncContext *ac = l->ac;

    if (!ac)
        return;
    ac->data = NULL;
    redisAsyncSetDisconnectCallback(ac, NULL);
    l->restarting = true;
    went_down(l, why);
    redisAsyncFree(ac);
}

/* Counts every error reply; logs one only when its code (the first word: READONLY,
 * OOM, NOAUTH...) differs from the last one logged, so a Redis that refuses every write
 * gives one line, not one per write or per retry; the first good reply after a run
 * logs how many there were. */
static void error_reply(struct redislink *l, const char *err)
{
    char code[sizeof l->err_last];

    if (!err)
        err = "";
    count_error(l);
    l->err_streak++;
    snprintf(code, sizeof code, "%.*s", (int)strcspn(err, " "), err);
    if (l->err_streak > 1 && strcmp(code, l->err_last) == 0)
        return;
    snprintf(l->err_last, sizeof l->err_last, "%s", code);
    log_warn("redis", "event=error_reply link=%s error=%s", l->name,
             log_qn(err, strnlen(err, 120)));
}

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    struct pending *p = priv;
    struct redislink *l = p->link;

    /* A reply to a connection this link has since dropped still belongs to the caller,
     * but it no longer counts as activity on the link. */
    if (ac->data == l && l->ac == p->ac) {
        if (l->outstanding > 0)
            l->outstanding--;
        l->last_activity = clock_mono_ms();
        if (r && ((redisReply *)r)->type == REDIS_REPLY_ERROR)
            error_reply(l, ((redisReply *)r)->str);
        else if (r && l->err_streak) {
            if (l->err_streak > 1)
                log_notice("redis", "event=error_replies_ended link=%s count=%lu", l->name,
                           l->err_streak);
            l->err_streak = 0;
            l->err_last[0] = '\0';
        }
    }
    if (p->fn)
        p->fn(l, r, p->arg);
    /* With sentinels, READONLY means the master was demoted under us (a failover whose
     * announcement has not arrived, or was missed): ask the sentinels again. The caller
     * had the reply first and holds what was refused. */
    if (r && l->sentinel && ((redisReply *)r)->type == REDIS_REPLY_ERROR &&
        ((redisReply *)r)->str && strncmp(((redisReply *)r)->str, "READONLY", 8) == 0 &&
        ac->data == l && l->ac == p->ac)
        redislink_reset(l, "the server is a replica now (READONLY)");
    free(p);
}

static struct pending *new_pending(struct redislink *l, redislink_reply_fn fn, void *arg)
{
    struct pending *p = xmalloc(sizeof *p);

    p->link = l;
    p->fn = fn;
    p->arg = arg;
    p->ac = l->ac;
    if (l->outstanding++ == 0)
        l->last_activity = clock_mono_ms();
    return p;
}

int redislink_command(struct redislink *l, redislink_reply_fn fn, void *arg, const char *fmt,
                      ...)
{
    struct pending *p;
    va_list ap;
    int rc;

    if (!l->ac || (l->state != RL_UP && l->state != RL_HANDSHAKE))
        return -1;
    p = new_pending(l, fn, arg);
    va_start(ap, fmt);
    rc = redisvAsyncCommand(l->ac, on_reply, p, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        l->outstanding--;
        free(p);
        return -1;
    }
    return 0;
}

int redislink_heartbeat(struct redislink *l, const char *key, int ttl_ms)
{
    char ms[24], ttl[16];
    const char *argv[] = {"EVAL", storecodec_heartbeat_script, "1", key, ms, ttl};

    snprintf(ms, sizeof ms, "%lld", (long long)clock_wall_ms());
    snprintf(ttl, sizeof ttl, "%d", ttl_ms);
    /* A script, so that Redis at maxmemory still takes it (storecodec.h). */
    return redislink_command_argv(l, NULL, NULL, 6, argv, NULL);
}

int redislink_command_argv(struct redislink *l, redislink_reply_fn fn, void *arg, int argc,
                           const char **argv, const size_t *argvlen)
{
    struct pending *p;

    if (!l->ac || (l->state != RL_UP && l->state != RL_HANDSHAKE))
        return -1;
    p = new_pending(l, fn, arg);
    if (redisAsyncCommandArgv(l->ac, on_reply, p, argc, argv, argvlen) != REDIS_OK) {
        l->outstanding--;
        free(p);
        return -1;
    }
    return 0;
}
