/* libstrophe on libevent for an XEP-0114 component connection.
 *
 * libstrophe offers xmpp_run_once(ctx, 0): write what is queued, then read what the
 * socket has. We run it when the socket is readable (or, while TCP connects, writable)
 * and after our own sends, and repeat a pass whenever the previous one read data,
 * because replies queued while reading go out only at the start of the next pass.
 *
 * libstrophe 0.12.2 never allocates stream-management state for component connections
 * and dereferences it on the first send or receive after the handshake. We give the
 * connection a state allocated by the client path: a throwaway connection starts a
 * client connect whose socket our sockopt callback refuses (no packet leaves), and its
 * state moves to the real connection through the public get/set_sm_state calls.
 * test_component_link keeps this honest across library upgrades. */
#include "xmpplink.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "backoff.h"
#include "config.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "sbuf.h"
#include "stanza.h"
#include "strutil.h"

#define CONNECT_TIMEOUT_S 10
#define MAX_PASSES 64
#define HANDSHAKE_NUDGE_MS 20
/* A turn's text goes to libstrophe in pieces of about this size (libstrophe copies each
 * piece), and a buffer grown past OUT_KEEP is freed once handed over. */
#define OUT_CHUNK (64 * 1024)
#define OUT_KEEP (256 * 1024)

struct xmpplink {
    struct event_base *base;
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    struct xmpplink_ops ops;
    void *arg;
    char *domain;
    char *host;
    unsigned short port;
    int fd;                   /* the connection's socket, -1 when none */
    struct event *ev_fd;
    short ev_what;            /* what ev_fd waits for */
    struct event *ev_retry;   /* reconnect after backoff, or connect timeout */
    struct event *ev_nudge;   /* extra pass while the handshake is in flight */
    struct event *ev_close;   /* a pass after libstrophe's disconnect timeout */
    struct event *ev_flush;   /* one pass for everything sent in this loop turn */
    bool flush_pending;
    struct sbuf out;          /* this turn's stanzas as text, handed over in one piece */
    unsigned out_n;           /* stanzas in out */
    struct backoff bo;
    bool up;                  /* handshake accepted */
    bool connecting;          /* xmpp_connect_component issued, not yet up or down */
    bool dirty;               /* something was queued since the last pass */
    bool in_pass;
    bool fd_closed;           /* libstrophe closed fd during a pass */
    bool closing;             /* xmpplink_free in progress: no reconnect */
    bool enabled;             /* xmpplink_start'ed and not stopped: (re)connect */
    bool refuse_sockets;      /* the state-priming connect must not open anything */
    bool secret_warned;
    bool invalid_xml;         /* the server sent XML that does not parse */
    xmpp_log_t log;           /* libstrophe's logger, with this link as its userdata */
    bool lost_counted;        /* the coming disconnect is already counted */
    unsigned long sent;
    struct ratelimit_gate repaired_log; /* event=stanza_repaired lines */
    struct barrier *barriers; /* pings awaiting their answer */
    unsigned long next_barrier;
};

/* One xmpplink_barrier() waiting for the server's answer. */
struct barrier {
    struct xmpplink *l;
    char id[32];
    void (*done)(void *arg, bool ok);
    void *arg;
    struct barrier *next;
};

/* One line at once, then at most one a minute saying how many more: the same bad name
 * in Redis is in every stanza sent for its user. */
static const struct ratelimit repaired_rate = {.rate = 1.0 / 60, .burst = 1};

static struct metric *m_connected, *m_sent, *m_refused, *m_disconnects, *m_repaired;

void xmpplink_register_metrics(void)
{
    static const char *const kinds[] = {"presence", "iq_result", "iq_error", "iq_request",
                                        "message", NULL};

    m_connected = metric_new(METRIC_GAUGE, "offhook_xmpp_connected",
                             "1 when the component stream is up (handshake accepted).", NULL,
                             NULL);
    m_sent = metric_new(METRIC_COUNTER, "offhook_stanzas_sent_total",
                        "Stanzas written to the XMPP server, by kind.", "kind", kinds);
    m_refused = metric_new(METRIC_COUNTER, "offhook_stanzas_refused_total",
                           "Outgoing stanzas refused (link down, or from outside our domain).",
                           "reason",
                           (const char *const[]){"link_down", "foreign_from", "no_memory", NULL});
    m_repaired = metric_new(METRIC_COUNTER, "offhook_stanzas_repaired_total",
                            "Outgoing stanzas that held text XML cannot carry (bytes that "
                            "are not UTF-8, control characters), sent with each such "
                            "character replaced by '?'.",
                            NULL, NULL);
    m_disconnects = metric_new(METRIC_COUNTER, "offhook_xmpp_disconnects_total",
                               "Component stream losses, by cause.", "cause",
                               (const char *const[]){"not_authorized", "stream_error",
                                                     "connect_failed", "socket", "timeout",
                                                     "invalid_xml", NULL});
}

/* ---- libstrophe logging ------------------------------------------------------------ */

static void strophe_log(void *userdata, xmpp_log_level_t level, const char *area,
                        const char *msg)
{
    /* libstrophe's info and debug are protocol traces (stanza text): debug for us. */
    int prio = level == XMPP_LEVEL_ERROR ? LOG_ERR
               : level == XMPP_LEVEL_WARN ? LOG_WARNING
                                          : LOG_DEBUG;

    /* Once up, every write is a batch of our stanzas, each already traced by
     * xmpplink_send: the batch's trace would repeat them, cut at 1500 bytes. */
    if (userdata && ((struct xmpplink *)userdata)->up && area && strcmp(area, "conn") == 0 &&
        strncmp(msg, "SENT: ", 6) == 0)
        return;
    /* Traces hold stanzas: whatever a peer put in them stays inside msg. */
    if (prio <= log_level) {
        char q[LOG_Q_SIZE(1500)];
        log_write(prio, "strophe", "area=%s msg=%s", log_q(area), log_q_buf(q, msg, 1500));
    }
    /* libstrophe 0.12 answers XML it cannot parse with a stream error but keeps the
     * socket, with its parser dead: the stream would stay up and deaf. Its only sign is
     * this debug line, so the link closes the stream itself after the pass. */
    if (userdata && area && strcmp(area, "xmpp") == 0 && strncmp(msg, "parse error", 11) == 0)
        ((struct xmpplink *)userdata)->invalid_xml = true;
}

/* ---- socket watching --------------------------------------------------------------- */

static void watch(struct xmpplink *l, short what);

/* Hands this turn's stanzas to libstrophe as one queue entry, so its send loop writes a
 * burst with one send() instead of one per stanza. The empty entry after a batch of
 * several keeps xmpp_conn_send_queue_len above 0 until the batch's last byte is
 * written: libstrophe 0.12 stops counting an entry once a write of it was tried, so a
 * batch cut short by a full socket would otherwise show an empty queue and wait,
 * unwritten, for the next event instead of for room (write interest). It costs one
 * send() of 0 bytes; a single stanza goes alone, as xmpp_send would queue it. Order is
 * kept: everything we send passes here, and libstrophe's own output (stream header,
 * handshake, </stream:stream>) is queued only outside a turn's sends. */
static void out_drain(struct xmpplink *l)
{
    if (l->out.len == 0)
        return;
    if (l->up) {
        xmpp_send_raw(l->conn, l->out.data, l->out.len);
        if (l->out_n > 1)
            xmpp_send_raw(l->conn, "", 0);
    }
    l->out_n = 0;
    if (l->out.cap > OUT_KEEP) {
        /* A burst's buffer (a reconnect's presence for every user) is not kept. */
        sbuf_free(&l->out);
        sbuf_init(&l->out);
    } else {
        sbuf_reset(&l->out);
    }
}

static void run_passes(struct xmpplink *l)
{
    int passes = 0;

    if (l->in_pass)
        return;
    l->in_pass = true;
    for (;;) {
        int avail = 0;
        bool was_connecting = l->fd >= 0 && xmpp_conn_is_connecting(l->conn);

        if (l->fd >= 0 && !l->fd_closed && ioctl(l->fd, FIONREAD, &avail) < 0)
            avail = 0;
        l->dirty = false;
        out_drain(l);
        xmpp_run_once(l->ctx, 0);
        passes++;
        if (l->invalid_xml) {
            l->invalid_xml = false;
            metric_inc(m_disconnects, "invalid_xml");
            log_err("xmpp", "event=stream_error domain=%s reason=\"the server sent XML that "
                            "does not parse\" action=reconnect",
                    log_q(l->domain));
            l->lost_counted = true;
            xmpp_disconnect(l->conn);
            /* It waits for the server's </stream:stream> up to 2 s, a timed handler that
             * only runs inside a pass: make sure one comes. */
            {
                struct timeval tv = {.tv_sec = 2, .tv_usec = 200000};
                evtimer_add(l->ev_close, &tv);
            }
        }
        if (l->fd_closed || passes >= MAX_PASSES)
            break;
        /* Another pass flushes what this one queued while reading or connecting. */
        if (!(avail > 0 || l->dirty || (was_connecting && !xmpp_conn_is_connecting(l->conn))))
            break;
    }
    l->in_pass = false;
    /* Stanzas sent in the last pass allowed: queued now, written when the socket has room. */
    out_drain(l);
    if (l->fd_closed) {
        l->fd_closed = false;
        l->fd = -1;
        if (l->ev_fd) {
            event_free(l->ev_fd);
            l->ev_fd = NULL;
        }
        return;
    }
    if (l->fd >= 0) {
        /* Writable interest only while TCP connects or our stanzas wait for room. */
        bool want_write = xmpp_conn_is_connecting(l->conn) || xmpp_conn_send_queue_len(l->conn) > 0;
        watch(l, (short)(EV_READ | (want_write ? EV_WRITE : 0)));
    }
    /* libstrophe queues the stream header and <handshake/> internally, where no public
     * call shows them; if the server's answer was read in the same pass that queued the
     * next step, nothing wakes us to write it. Until the stream is up, look again soon.
     * Bounded by the connect timeout; once up, only our own sends queue output. */
    if (l->connecting && !l->up && !l->closing) {
        struct timeval tv = {.tv_sec = 0, .tv_usec = HANDSHAKE_NUDGE_MS * 1000};
        evtimer_add(l->ev_nudge, &tv);
    }
}

static void on_fd(evutil_socket_t fd, short what, void *arg)
{
    run_passes(arg);
}

static void on_nudge(evutil_socket_t fd, short what, void *arg)
{
    struct xmpplink *l = arg;

    if (l->fd >= 0 && l->connecting && !l->up)
        run_passes(l);
}

static void on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct xmpplink *l = arg;

    l->flush_pending = false;
    if (l->fd >= 0 && l->dirty)
        run_passes(l);
}

static void on_close_timer(evutil_socket_t fd, short what, void *arg)
{
    struct xmpplink *l = arg;

    if (l->fd >= 0)
        run_passes(l);
}

static void watch(struct xmpplink *l, short what)
{
    if (l->ev_fd && l->ev_what == what)
        return;
    if (l->ev_fd)
        event_free(l->ev_fd);
    l->ev_fd = event_new(l->base, l->fd, (short)(what | EV_PERSIST), on_fd, l);
    l->ev_what = what;
    event_add(l->ev_fd, NULL);
}

/* libstrophe's sockopt callback carries no user pointer; sockets are created inside
 * xmpp_connect_component(), during which this names the link connecting. */
static struct xmpplink *connecting_link;

static int sockopt_cb(xmpp_conn_t *conn, void *socket)
{
    int fd = *(int *)socket;
    int on = 1, idle = 30, intvl = 10, cnt = 3;

    if (!connecting_link)
        return -1;
    connecting_link->fd = fd;
    /* Dead peers show within about a minute even when nothing is being sent. */
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    return 0;
}

static int refuse_socket(xmpp_conn_t *conn, void *socket)
{
    return -1;
}

/* ---- barriers ----------------------------------------------------------------------- */

static void barrier_unlink(struct barrier *b)
{
    for (struct barrier **pp = &b->l->barriers; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            return;
        }
    }
}

static int on_barrier(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    struct barrier *b = userdata;

    barrier_unlink(b);
    b->done(b->arg, true);
    free(b);
    return 0; /* libstrophe drops the handler */
}

/* The stream is gone (or the link freed): no answer will come. */
static void barriers_fail(struct xmpplink *l)
{
    while (l->barriers) {
        struct barrier *b = l->barriers;
        l->barriers = b->next;
        xmpp_id_handler_delete(l->conn, on_barrier, b->id);
        b->done(b->arg, false);
        free(b);
    }
}

int xmpplink_barrier(struct xmpplink *l, const char *server, void (*done)(void *arg, bool ok),
                     void *arg)
{
    struct barrier *b;
    xmpp_stanza_t *iq;
    int rc;

    if (!l->up)
        return -1;
    b = xcalloc(1, sizeof *b);
    b->l = l;
    b->done = done;
    b->arg = arg;
    snprintf(b->id, sizeof b->id, "barrier-%lu", ++l->next_barrier);
    iq = xmpp_iq_new(l->ctx, "get", b->id);
    xmpp_stanza_set_from(iq, l->domain);
    xmpp_stanza_set_to(iq, server);
    stanza_child(l->ctx, iq, "ping", NS_PING);
    rc = xmpplink_send(l, iq, "iq_request");
    xmpp_stanza_release(iq);
    if (rc < 0) {
        free(b);
        return -1;
    }
    xmpp_id_handler_add(l->conn, on_barrier, b->id, b);
    b->next = l->barriers;
    l->barriers = b;
    return 0;
}

/* ---- connection lifecycle ---------------------------------------------------------- */

static void schedule_reconnect(struct xmpplink *l)
{
    uint32_t ms = backoff_next(&l->bo);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

    evtimer_del(l->ev_retry);
    evtimer_add(l->ev_retry, &tv);
}

static const char *stream_error_cause(const xmpp_stream_error_t *se)
{
    return se && se->type == XMPP_SE_NOT_AUTHORIZED ? "not_authorized" : "stream_error";
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                    xmpp_stream_error_t *se, void *userdata)
{
    struct xmpplink *l = userdata;

    if (status == XMPP_CONN_CONNECT) {
        l->up = true;
        l->connecting = false;
        l->secret_warned = false;
        backoff_reset(&l->bo);
        evtimer_del(l->ev_retry);
        metric_set(m_connected, NULL, 1);
        log_notice("xmpp", "event=connected domain=%s server=%s:%u", log_q(l->domain),
                   log_q(l->host), l->port);
        l->ops.on_up(l->arg);
        return;
    }
    if (status != XMPP_CONN_DISCONNECT && status != XMPP_CONN_FAIL)
        return;
    /* libstrophe has closed the socket inside this pass. */
    l->fd_closed = true;
    if (se) {
        const char *cause = stream_error_cause(se);
        metric_inc(m_disconnects, cause);
        if (se->type == XMPP_SE_NOT_AUTHORIZED) {
            /* Logged once per outage: a wrong secret would otherwise log every retry. */
            if (!l->secret_warned)
                log_err("xmpp", "event=handshake_rejected domain=%s server=%s:%u "
                                "reason=\"server refused the component secret (check [xmpp] "
                                "secret and domain against the server's component config)\"",
                        log_q(l->domain), log_q(l->host), l->port);
            l->secret_warned = true;
        } else {
            log_err("xmpp", "event=stream_error domain=%s text=%s", log_q(l->domain),
                    log_q(se->text));
        }
    } else if (l->up && (l->closing || !l->enabled)) {
        log_info("xmpp", "event=closed domain=%s", log_q(l->domain));
    } else if (l->up) {
        if (!l->lost_counted)
            metric_inc(m_disconnects, "socket");
        log_warn("xmpp", "event=disconnected domain=%s error=%d", log_q(l->domain), error);
    } else {
        metric_inc(m_disconnects, "connect_failed");
        log_warn("xmpp", "event=connect_failed server=%s:%u error=\"%s\"", log_q(l->host),
                 l->port, error ? strerror(error) : "closed");
    }
    barriers_fail(l);
    sbuf_reset(&l->out); /* lost with the stream, like libstrophe's queue */
    l->out_n = 0;
    if (l->up) {
        l->up = false;
        metric_set(m_connected, NULL, 0);
        l->ops.on_down(l->arg);
    }
    l->connecting = false;
    l->lost_counted = false;
    if (!l->closing && l->enabled)
        schedule_reconnect(l);
}

static int on_stanza(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *userdata)
{
    struct xmpplink *l = userdata;

    l->ops.on_stanza(l->arg, stanza);
    return 1; /* keep the handler */
}

static void start_connect(struct xmpplink *l)
{
    struct timeval tv = {.tv_sec = CONNECT_TIMEOUT_S};
    int rc;

    l->fd = -1;
    connecting_link = l;
    rc = xmpp_connect_component(l->conn, l->host, l->port, on_conn, l);
    connecting_link = NULL;
    if (rc != 0 || l->fd < 0) {
        metric_inc(m_disconnects, "connect_failed");
        log_warn("xmpp", "event=connect_failed server=%s:%u reason=\"cannot create socket "
                         "(name resolution?)\"",
                 log_q(l->host), l->port);
        schedule_reconnect(l);
        return;
    }
    l->connecting = true;
    watch(l, EV_READ | EV_WRITE);
    /* The retry timer doubles as the connect timeout while connecting. */
    evtimer_add(l->ev_retry, &tv);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct xmpplink *l = arg;

    if (!l->enabled)
        return;
    if (l->connecting) {
        metric_inc(m_disconnects, "timeout");
        log_warn("xmpp", "event=connect_timeout server=%s:%u after_s=%d", log_q(l->host),
                 l->port, CONNECT_TIMEOUT_S);
        xmpp_disconnect(l->conn);
        run_passes(l);
        return;
    }
    start_connect(l);
}

static void noop_conn(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                      xmpp_stream_error_t *se, void *userdata)
{
}

/* See the top of this file: 0.12.2 needs client-path stream-management state. */
static int prime_sm_state(struct xmpplink *l)
{
    xmpp_conn_t *tmp;
    xmpp_sm_state_t *sm;
    int rc = -1;

    tmp = xmpp_conn_new(l->ctx);
    if (!tmp)
        return -1;
    xmpp_conn_set_jid(tmp, l->domain);
    xmpp_conn_set_sockopt_callback(tmp, refuse_socket);
    /* Fails before any packet: the refused socket ends the attempt. */
    (void)xmpp_connect_client(tmp, "127.0.0.1", 9, noop_conn, NULL);
    sm = xmpp_conn_get_sm_state(tmp);
    if (sm && xmpp_conn_set_sm_state(l->conn, sm) == 0)
        rc = 0;
    else if (sm)
        xmpp_free_sm_state(sm);
    xmpp_conn_release(tmp);
    return rc;
}

struct xmpplink *xmpplink_new(struct event_base *base, const struct offhook_config *cfg,
                              const struct xmpplink_ops *ops, void *arg)
{
    struct xmpplink *l = xcalloc(1, sizeof *l);

    xmpp_initialize();
    l->base = base;
    l->ops = *ops;
    l->arg = arg;
    l->fd = -1;
    sbuf_init(&l->out);
    l->domain = xstrdup(cfg->xmpp_domain);
    l->host = xstrdup(cfg->xmpp_host);
    l->port = (unsigned short)cfg->xmpp_port;
    /* Capped at 5 s: once the server is back, watchers see the truth within seconds. */
    backoff_init(&l->bo, 500, 5000, (uint64_t)clock_wall_us() ^ (uintptr_t)l);
    l->log.handler = strophe_log;
    l->log.userdata = l;
    l->ctx = xmpp_ctx_new(NULL, &l->log);
    l->conn = xmpp_conn_new(l->ctx);
    xmpp_conn_set_jid(l->conn, cfg->xmpp_domain);
    xmpp_conn_set_pass(l->conn, cfg->xmpp_secret);
    xmpp_conn_set_sockopt_callback(l->conn, sockopt_cb);
    xmpp_handler_add(l->conn, on_stanza, NULL, NULL, NULL, l);
    if (prime_sm_state(l) < 0)
        log_warn("xmpp", "event=sm_state_prime_failed note=\"libstrophe 0.12.2 may crash on "
                         "the first stanza\"");
    l->ev_retry = evtimer_new(base, on_retry, l);
    l->ev_nudge = evtimer_new(base, on_nudge, l);
    l->ev_close = evtimer_new(base, on_close_timer, l);
    l->ev_flush = event_new(base, -1, 0, on_flush, l);
    metric_set(m_connected, NULL, 0);
    return l;
}

void xmpplink_start(struct xmpplink *l)
{
    if (l->enabled)
        return;
    l->enabled = true;
    backoff_reset(&l->bo);
    if (!l->up && !l->connecting)
        start_connect(l);
}

void xmpplink_stop(struct xmpplink *l)
{
    if (!l->enabled)
        return;
    l->enabled = false;
    evtimer_del(l->ev_retry);
    if (l->up || l->connecting) {
        /* Sends </stream:stream> and closes; the handler runs inside this pass (on_down). */
        out_drain(l);
        xmpp_disconnect(l->conn);
        run_passes(l);
    }
}

void xmpplink_free(struct xmpplink *l)
{
    if (!l)
        return;
    l->closing = true;
    if (l->up || l->connecting) {
        /* Sends </stream:stream> and closes; the handler runs inside this pass. */
        out_drain(l);
        xmpp_disconnect(l->conn);
        run_passes(l);
    }
    barriers_fail(l);
    if (l->ev_fd)
        event_free(l->ev_fd);
    event_free(l->ev_retry);
    event_free(l->ev_nudge);
    event_free(l->ev_close);
    event_free(l->ev_flush);
    xmpp_conn_release(l->conn);
    xmpp_ctx_free(l->ctx);
    xmpp_shutdown();
    sbuf_free(&l->out);
    free(l->domain);
    free(l->host);
    free(l);
}

bool xmpplink_up(const struct xmpplink *l)
{
    return l->up;
}

xmpp_ctx_t *xmpplink_ctx(const struct xmpplink *l)
{
    return l->ctx;
}

unsigned long xmpplink_sent(const struct xmpplink *l)
{
    return l->sent;
}

/* True if from is the component's domain or a JID on it. */
static bool from_is_ours(const struct xmpplink *l, const char *from)
{
    struct jid j;

    return from && jid_parse(from, &j) == 0 && strcmp(j.domain, l->domain) == 0;
}

int xmpplink_send(struct xmpplink *l, xmpp_stanza_t *stanza, const char *kind)
{
    const char *from = xmpp_stanza_get_from(stanza);

    if (!from_is_ours(l, from)) {
        /* A bug, not an input error: every stanza we build sets an address of ours. */
        metric_inc(m_refused, "foreign_from");
        log_err("xmpp", "event=send_refused reason=\"from outside our domain\" domain=%s "
                        "from=%s",
                log_q(l->domain), log_q(from));
        return -1;
    }
    if (!l->up) {
        metric_inc(m_refused, "link_down");
        return -1;
    }
    /* Text from Redis or the config file (a caller's name cut mid-character by an older
     * sipbridge, a control character) would make the server close the stream, and the
     * same stanza would follow every reconnect: repaired here, the one gate every stanza
     * passes, so one bad name never keeps the component off XMPP. */
    {
        const char *where;
        size_t fixed = stanza_scrub(stanza, &where);
        uint64_t held = 0;

        if (fixed) {
            metric_inc(m_repaired, NULL);
            if (ratelimit_gate_pass(&repaired_rate, &l->repaired_log, clock_mono_ms(), &held))
                log_warn("xmpp", "event=stanza_repaired kind=%s to=%s element=%s replaced=%zu "
                                 "suppressed=%llu reason=\"text that is not UTF-8 or not "
                                 "allowed in XML (from Redis or the config file), sent as "
                                 "'?'\"",
                         kind, log_q(xmpp_stanza_get_to(stanza)), log_q(where), fixed,
                         (unsigned long long)held);
        }
    }
    /* Serialised now (libstrophe's escaping), written with the turn's other stanzas. */
    {
        char *text = NULL;
        size_t len = 0;

        if (xmpp_stanza_to_text(stanza, &text, &len) != XMPP_EOK) {
            metric_inc(m_refused, "no_memory");
            log_err("xmpp", "event=send_refused reason=\"cannot serialise (out of memory)\" "
                            "kind=%s",
                    kind);
            return -1;
        }
        if (LOG_DEBUG <= log_level) {
            char q[LOG_Q_SIZE(1500)];

            log_debug("xmpp", "event=stanza_out kind=%s stanza=%s", kind,
                      log_q_buf(q, text, 1500));
        }
        sbuf_append(&l->out, text, len);
        l->out_n++;
        xmpp_free(l->ctx, text);
        if (l->out.len >= OUT_CHUNK)
            out_drain(l);
    }
    l->sent++;
    metric_inc(m_sent, kind);
    l->dirty = true;
    /* One libstrophe pass (select, serialize, send, re-arm) for all the stanzas queued
     * in this turn of the loop, not one per stanza: a burst of changes is one write. */
    if (!l->in_pass && !l->flush_pending) {
        l->flush_pending = true;
        event_active(l->ev_flush, EV_TIMEOUT, 1);
    }
    return 0;
}
