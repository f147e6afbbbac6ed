/* Redis Sentinel client: master lookups in turn with timeouts, +switch-master listening. */
#include "sentinel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "backoff.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "strutil.h"

/* A sentinel that has not answered by then is skipped for the next one: sentinels answer
 * from memory, so a slow one is a sick one, and the loop must not wait on it. */
#define SENTINEL_TIMEOUT_MS 2000
#define SUB_RETRY_MIN_MS 200
#define SUB_RETRY_MAX_MS 5000
#define SWITCH_CHANNEL "+switch-master"

struct sentinel;

/* One lookup: the sentinels asked one after the other until one names the master. */
struct query {
    struct sentinel *s;
    redisAsyncContext *ac;     /* the sentinel being asked; NULL between two */
    struct event *step;        /* timeout of the sentinel asked, or the next step, deferred */
    struct event *deliver;     /* the answer, handed over from the loop */
    bool active;               /* started and not yet answered or cancelled */
    int first, tried, cur;     /* the round starts at first; cur is being asked */
    sentinel_addr_fn fn;
    void *arg;
    char host[256];            /* the answer; "" = none of them named a master */
    int port;
};

struct sentinel {
    struct event_base *base;
    char *link;
    struct redis_addr addr[CFG_MAX_SENTINELS]; /* copies of the configured ones */
    int n;
    char *master_name;
    char *password;            /* NULL when the sentinels ask for none */
    int good;                  /* the sentinel to ask first: the last one that answered */
    bool failing[CFG_MAX_SENTINELS]; /* failed since its last success: logged once */
    struct query lookup;       /* the owner's */
    struct query check;        /* ours, after the subscription was taken again */
    redisAsyncContext *sub;    /* the +switch-master subscription; NULL while down */
    int sub_cur;               /* the sentinel it is (or will be) on */
    bool sub_confirmed;        /* SUBSCRIBE answered on sub */
    bool sub_ever;             /* a subscription was confirmed before: a retake checks */
    struct event *sub_ev;      /* subscribe timeout, or the retry after backoff */
    struct backoff sub_bo;
    struct event *announce;    /* hands an announced master over from the loop */
    char ann_host[256];
    int ann_port;
    sentinel_addr_fn on_master;
    void *arg;
};

static struct metric *m_errors;

void sentinel_register_metrics(void)
{
    m_errors = metric_new(METRIC_COUNTER, "offhook_redis_sentinel_errors_total",
                          "Sentinels that could not be reached, timed out, refused or did not "
                          "know the master, per Redis link.",
                          "link", NULL);
}

void sentinel_metrics_link(const char *link)
{
    metric_add(m_errors, link, 0);
}

static void addr_text(const struct redis_addr *a, char *out, size_t len)
{
    snprintf(out, len, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host, a->port);
}

/* Logged when a sentinel starts failing, not again until it has answered. */
static void sentinel_failed(struct sentinel *s, int i, const char *why)
{
    char a[300];

    metric_inc(m_errors, s->link);
    addr_text(&s->addr[i], a, sizeof a);
    /* why may quote the sentinel's own words: log_q keeps them inside the field. */
    if (!s->failing[i])
        log_warn("redis", "event=sentinel_failed link=%s sentinel=%s reason=%s", s->link, log_q(a),
                 log_q(why));
    else
        log_debug("redis", "event=sentinel_failed link=%s sentinel=%s reason=%s", s->link, log_q(a),
                  log_q(why));
    s->failing[i] = true;
}

static void sentinel_ok(struct sentinel *s, int i)
{
    char a[300];

    if (!s->failing[i])
        return;
    s->failing[i] = false;
    addr_text(&s->addr[i], a, sizeof a);
    log_notice("redis", "event=sentinel_ok link=%s sentinel=%s", s->link, log_q(a));
}

/* A new connection to sentinel i with AUTH queued, or NULL (why says why). */
static redisAsyncContext *sentinel_connect(struct sentinel *s, int i, void *data,
                                           redisCallbackFn *auth_fn, char *why, size_t len)
{
    redisAsyncContext *ac = redisAsyncConnect(s->addr[i].host, s->addr[i].port);

    if (!ac || ac->err) {
        snprintf(why, len, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        return NULL;
    }
    ac->data = data;
    redisLibeventAttach(ac, s->base);
    if (s->password && redisAsyncCommand(ac, auth_fn, "AUTH", "AUTH %s", s->password) != REDIS_OK) {
        snprintf(why, len, "cannot queue AUTH");
        ac->data = NULL;
        redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

/* ---- lookups ------------------------------------------------------------------------ */

/* Drops q's connection. Its pending callbacks then run with a NULL reply and find no
 * query (data cleared); inside one of its own callbacks hiredis defers the free. */
static void query_drop(struct query *q)
{
    redisAsyncContext *ac = q->ac;

    if (!ac)
        return;
    q->ac = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

/* The next step runs from the loop, outside hiredis's callbacks. */
static void query_defer(struct query *q)
{
    evtimer_del(q->step);
    event_active(q->step, EV_TIMEOUT, 1);
}

/* The sentinel being asked failed; gone is true when hiredis frees its context itself
 * (failed connect, disconnect callback). */
static void query_failed(struct query *q, const char *why, bool gone)
{
    if (gone)
        q->ac = NULL;
    else
        query_drop(q);
    sentinel_failed(q->s, q->cur, why);
    query_defer(q);
}

static void query_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct query *q = ac->data;
    redisReply *r = reply;
    const char *what = priv;
    long port;

    if (!q || q->ac != ac || !r)
        return; /* dropped, or gone: the disconnect callback tells */
    if (strcmp(what, "AUTH") == 0) {
        if (r->type == REDIS_REPLY_ERROR)
            query_failed(q, "AUTH refused (sentinel_password)", false);
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
        str_parse_long(r->element[1]->str, 1, 65535, &port) == 0 &&
        str_copy(q->host, sizeof q->host, r->element[0]->str) == 0 && q->host[0]) {
        q->port = (int)port;
        q->s->good = q->cur;
        sentinel_ok(q->s, q->cur);
        query_drop(q);
        q->active = false;
        evtimer_del(q->step);
        event_active(q->deliver, EV_TIMEOUT, 1);
        return;
    }
    if (r->type == REDIS_REPLY_NIL) {
        char why[200];
        snprintf(why, sizeof why, "does not monitor a master named %.128s", q->s->master_name);
        query_failed(q, why, false);
    } else {
        query_failed(q, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply", false);
    }
}

static void query_on_connect(const redisAsyncContext *ac, int status)
{
    struct query *q = ac->data;

    if (!q || q->ac != ac || status == REDIS_OK)
        return;
    query_failed(q, ac->errstr[0] ? ac->errstr : "connect failed", true);
}

static void query_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct query *q = ac->data;

    if (!q || q->ac != ac)
        return;
    query_failed(q, ac->errstr[0] ? ac->errstr : "connection closed", true);
}

/* Asks the next sentinel of the round; when all have failed, answers "none". */
static void query_next(struct query *q)
{
    struct sentinel *s = q->s;
    struct timeval tv = {.tv_sec = SENTINEL_TIMEOUT_MS / 1000,
                         .tv_usec = (SENTINEL_TIMEOUT_MS % 1000) * 1000};
    char why[160];
    redisAsyncContext *ac;

    if (q->tried == s->n) {
        q->host[0] = '\0';
        q->port = 0;
        q->active = false;
        event_active(q->deliver, EV_TIMEOUT, 1);
        return;
    }
    q->cur = (q->first + q->tried++) % s->n;
    ac = sentinel_connect(s, q->cur, q, query_reply, why, sizeof why);
    if (!ac) {
        sentinel_failed(s, q->cur, why);
        query_defer(q);
        return;
    }
    q->ac = ac;
    redisAsyncSetConnectCallback(ac, query_on_connect);
    redisAsyncSetDisconnectCallback(ac, query_on_disconnect);
    if (redisAsyncCommand(ac, query_reply, "GET", "SENTINEL get-master-addr-by-name %s",
                          s->master_name) != REDIS_OK) {
        query_failed(q, "cannot queue SENTINEL get-master-addr-by-name", false);
        return;
    }
    evtimer_add(q->step, &tv);
}

static void query_step(evutil_socket_t fd, short what, void *arg)
{
    struct query *q = arg;

    if (!q->active)
        return;
    if (q->ac) {
        /* The timeout of the sentinel being asked. */
        query_drop(q);
        sentinel_failed(q->s, q->cur, "no answer in time");
    }
    query_next(q);
}

static void query_deliver(evutil_socket_t fd, short what, void *arg)
{
    struct query *q = arg;

    if (q->fn)
        q->fn(q->arg, q->host[0] ? q->host : NULL, q->port);
}

static void query_init(struct query *q, struct sentinel *s)
{
    q->s = s;
    q->step = evtimer_new(s->base, query_step, q);
    q->deliver = evtimer_new(s->base, query_deliver, q);
}

static void query_cancel(struct query *q)
{
    q->active = false;
    query_drop(q);
    evtimer_del(q->step);
    event_del(q->deliver);
}

static void query_start(struct query *q, sentinel_addr_fn fn, void *arg)
{
    query_cancel(q);
    q->fn = fn;
    q->arg = arg;
    q->active = true;
    q->first = q->s->good;
    q->tried = 0;
    query_defer(q);
}

static void query_free(struct query *q)
{
    query_cancel(q);
    event_free(q->step);
    event_free(q->deliver);
}

void sentinel_lookup(struct sentinel *s, sentinel_addr_fn fn, void *arg)
{
    query_start(&s->lookup, fn, arg);
}

void sentinel_cancel(struct sentinel *s)
{
    query_cancel(&s->lookup);
}

/* The answer to our own check goes to the owner like an announcement. */
static void checked(void *arg, const char *host, int port)
{
    struct sentinel *s = arg;

    if (host)
        s->on_master(s->arg, host, port);
}

/* ---- the +switch-master subscription ---------------------------------------------- */

static void sub_start(struct sentinel *s);

static void sub_drop(struct sentinel *s)
{
    redisAsyncContext *ac = s->sub;

    if (!ac)
        return;
    s->sub = NULL;
    ac->data = NULL;
    redisAsyncFree(ac);
}

/* The subscription failed or was lost: the next sentinel, after backoff. */
static void sub_failed(struct sentinel *s, const char *why, bool gone)
{
    uint32_t ms = backoff_next(&s->sub_bo);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    if (gone)
        s->sub = NULL;
    else
        sub_drop(s);
    sentinel_failed(s, s->sub_cur, why);
    s->sub_cur = (s->sub_cur + 1) % s->n;
    s->sub_confirmed = false;
    evtimer_del(s->sub_ev);
    evtimer_add(s->sub_ev, &tv);
}

/* "+switch-master <name> <old ip> <old port> <new ip> <new port>" */
static void switch_announced(struct sentinel *s, const char *payload)
{
    char name[129], old_ip[256], new_ip[256];
    int old_port, new_port;

    if (sscanf(payload, "%128s %255s %d %255s %d", name, old_ip, &old_port, new_ip,
               &new_port) != 5 ||
        strcmp(name, s->master_name) != 0 || new_port < 1 || new_port > 65535)
        return; /* another master these sentinels watch */
    log_debug("redis", "event=switch_announced link=%s master_name=%s old=%s:%d new=%s:%d",
             s->link, log_q(name), log_q(old_ip), old_port, log_q(new_ip), new_port);
    str_copy(s->ann_host, sizeof s->ann_host, new_ip);
    s->ann_port = new_port;
    event_active(s->announce, EV_TIMEOUT, 1);
}

static void announce(evutil_socket_t fd, short what, void *arg)
{
    struct sentinel *s = arg;

    s->on_master(s->arg, s->ann_host, s->ann_port);
}

static void sub_message(redisAsyncContext *ac, void *reply, void *priv)
{
    struct sentinel *s = ac->data;
    redisReply *r = reply;
    const char *kind;

    if (!s || s->sub != ac || !r)
        return;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return;
    kind = r->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        evtimer_del(s->sub_ev);
        s->sub_confirmed = true;
        backoff_reset(&s->sub_bo);
        sentinel_ok(s, s->sub_cur);
        /* While it was down a switch may have been announced unheard: ask. */
        if (s->sub_ever)
            query_start(&s->check, checked, s);
        s->sub_ever = true;
        return;
    }
    if (strcmp(kind, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING)
        switch_announced(s, r->element[2]->str);
}

static void sub_auth(redisAsyncContext *ac, void *reply, void *priv)
{
    struct sentinel *s = ac->data;
    redisReply *r = reply;

    if (s && s->sub == ac && r && r->type == REDIS_REPLY_ERROR)
        sub_failed(s, "AUTH refused (sentinel_password)", false);
}

static void sub_on_connect(const redisAsyncContext *ac, int status)
{
    struct sentinel *s = ac->data;

    if (!s || s->sub != ac || status == REDIS_OK)
        return;
    sub_failed(s, ac->errstr[0] ? ac->errstr : "connect failed", true);
}

static void sub_on_disconnect(const redisAsyncContext *ac, int status)
{
    struct sentinel *s = ac->data;

    if (!s || s->sub != ac)
        return;
    sub_failed(s, ac->errstr[0] ? ac->errstr : "connection closed", true);
}

static void sub_start(struct sentinel *s)
{
    struct timeval tv = {.tv_sec = SENTINEL_TIMEOUT_MS / 1000,
                         .tv_usec = (SENTINEL_TIMEOUT_MS % 1000) * 1000};
    char why[160];
    redisAsyncContext *ac = sentinel_connect(s, s->sub_cur, s, sub_auth, why, sizeof why);

    s->sub_confirmed = false;
    if (!ac) {
        sub_failed(s, why, true);
        return;
    }
    s->sub = ac;
    /* The subscription may stay silent for months: let TCP notice a vanished peer. */
    (void)redisEnableKeepAlive(&ac->c);
    redisAsyncSetConnectCallback(ac, sub_on_connect);
    redisAsyncSetDisconnectCallback(ac, sub_on_disconnect);
    if (redisAsyncCommand(ac, sub_message, NULL, "SUBSCRIBE " SWITCH_CHANNEL) != REDIS_OK) {
        sub_failed(s, "cannot queue SUBSCRIBE", false);
        return;
    }
    evtimer_add(s->sub_ev, &tv); /* until confirmed */
}

static void sub_step(evutil_socket_t fd, short what, void *arg)
{
    struct sentinel *s = arg;

    if (s->sub && !s->sub_confirmed) {
        sub_failed(s, "no answer to SUBSCRIBE in time", false);
        return;
    }
    if (!s->sub)
        sub_start(s);
}

/* ---- life cycle --------------------------------------------------------------------- */

struct sentinel *sentinel_new(struct event_base *base, const struct offhook_config *cfg,
                              const char *link, sentinel_addr_fn on_master, void *arg)
{
    struct sentinel *s = xcalloc(1, sizeof *s);
    struct timeval now = {0, 0};

    s->base = base;
    s->link = xstrdup(link);
    s->n = cfg->redis_nsentinels;
    for (int i = 0; i < s->n; i++) {
        s->addr[i].host = xstrdup(cfg->redis_sentinel[i].host);
        s->addr[i].port = cfg->redis_sentinel[i].port;
    }
    s->master_name = xstrdup(cfg->redis_master_name);
    s->password = cfg->redis_sentinel_password && cfg->redis_sentinel_password[0]
                      ? xstrdup(cfg->redis_sentinel_password)
                      : NULL;
    s->on_master = on_master;
    s->arg = arg;
    query_init(&s->lookup, s);
    query_init(&s->check, s);
    backoff_init(&s->sub_bo, SUB_RETRY_MIN_MS, SUB_RETRY_MAX_MS,
                 (uint64_t)clock_wall_us() ^ (uintptr_t)s);
    s->sub_ev = evtimer_new(base, sub_step, s);
    s->announce = evtimer_new(base, announce, s);
    evtimer_add(s->sub_ev, &now);
    return s;
}

void sentinel_free(struct sentinel *s)
{
    if (!s)
        return;
    query_free(&s->lookup);
    query_free(&s->check);
    sub_drop(s);
    event_free(s->sub_ev);
    event_free(s->announce);
    for (int i = 0; i < s->n; i++)
        free(s->addr[i].host);
    if (s->password) {
        explicit_bzero(s->password, strlen(s->password));
        free(s->password);
    }
    free(s->master_name);
    free(s->link);
    free(s);
}
