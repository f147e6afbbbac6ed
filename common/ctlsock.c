/* The control socket (see ctlsock.h): a Unix listener, bounded clients on bufferevents,
 * one request at a time per client, answers produced turn by turn. */
#include "ctlsock.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "ctlproto.h"
#include "log.h"
#include "metrics.h"
#include "strutil.h"

#define ACCEPTS_PER_TURN 16
#define LOW_WATERMARK (CTL_TURN_BYTES / 4) /* a waiting answer resumes below this */

struct client;

struct ctl_call {
    struct client *cl;
    const struct ctl_command *cmd;
    struct ctl_request req;
    struct sbuf turn;           /* this turn's body, not yet dot-stuffed */
    bool first;                 /* the first turn is running */
    bool started;               /* the status line has been written */
    bool failed;                /* ctl_fail() was called */
    char status[CTL_LINE_MAX];  /* "ERR code text" when failed */
    bool line_start;            /* the body written so far ends a line */
    void *state;
    void (*free_state)(void *state);
};

struct client {
    struct ctlsock *s;
    struct client *prev, *next;   /* in s->clients, or in s->dead once closed */
    struct bufferevent *bev;
    struct event *resume;         /* runs the next turn of a call from a fresh loop turn */
    struct ctl_call call;
    bool busy;                    /* a call is being answered */
    bool waiting;                 /* ... and waits for the client to read (CTL_MORE) */
    bool closing;                 /* close once what is queued is written */
    bool eof;                     /* the client will send nothing more */
    int64_t partial_since_ms;     /* mono: a request line began and has no LF yet (0: no) */
    bool dead;
    long uid, pid;                /* the peer (SO_PEERCRED), -1 unknown */
};

struct ctlsock {
    struct event_base *base;
    char *path;
    int fd;
    dev_t dev;                    /* of the socket file we made: removed only if still ours */
    ino_t ino;
    struct event *accept_ev;
    struct event *reap_ev;        /* frees closed clients outside their callbacks */
    struct event *pause_ev;       /* accepting again after running out of descriptors */
    struct client *clients, *dead;
    int nclients;
    struct ctl_command cmds[CTL_MAX_COMMANDS];
    int ncmds;
};

static struct metric *m_requests;

void ctlsock_register_metrics(void)
{
    m_requests = metric_new(METRIC_COUNTER, "offhook_control_requests_total",
                            "Requests on the control socket, by outcome: ok, error (an ERR "
                            "answer), bad_request (not a request line: the client is "
                            "dropped), busy (too many clients: dropped).",
                            "outcome",
                            (const char *const[]){"ok", "error", "bad_request", "busy", NULL});
}

/* ---- the listening socket -------------------------------------------------------------- */

static int bind_socket(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    struct stat st;
    mode_t old;
    int fd, rc;

    if (n == 0 || n >= sizeof sa.sun_path) {
        snprintf(err, errlen, "path is %zu bytes long, at most %zu fit a Unix socket", n,
                 sizeof sa.sun_path - 1);
        return -1;
    }
    memcpy(sa.sun_path, path, n);
    if (lstat(path, &st) == 0) {
        int probe;
        if (!S_ISSOCK(st.st_mode)) {
            snprintf(err, errlen, "exists and is not a socket: not replacing it");
            return -1;
        }
        /* A socket file outlives a daemon that was killed: replace it unless someone
         * still answers on it (the daemon running twice). */
        probe = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (probe < 0) {
            snprintf(err, errlen, "socket: %s", strerror(errno));
            return -1;
        }
        rc = connect(probe, (struct sockaddr *)&sa, sizeof sa);
        if (rc == 0 || errno == EAGAIN || errno == EINPROGRESS) {
            close(probe);
            snprintf(err, errlen, "another process serves it (is the daemon running "
                                  "already?)");
            return -1;
        }
        if (errno != ECONNREFUSED && errno != ENOENT) {
            snprintf(err, errlen, "cannot tell whether it is in use: %s", strerror(errno));
            close(probe);
            return -1;
        }
        close(probe);
        if (errno == ECONNREFUSED && unlink(path) < 0 && errno != ENOENT) {
            snprintf(err, errlen, "cannot remove the stale socket: %s", strerror(errno));
            return -1;
        }
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* Created with the final mode: there is no moment at which others may connect. */
    old = umask(0777 & ~CTL_SOCKET_MODE);
    rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0) {
        snprintf(err, errlen, "bind: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (chmod(path, CTL_SOCKET_MODE) < 0 || listen(fd, CTL_MAX_CLIENTS * 2) < 0) {
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

/* ---- clients --------------------------------------------------------------------------- */

static void list_remove(struct client **head, struct client *cl)
{
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        *head = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    cl->prev = cl->next = NULL;
}

static void list_push(struct client **head, struct client *cl)
{
    cl->prev = NULL;
    cl->next = *head;
    if (*head)
        (*head)->prev = cl;
    *head = cl;
}

static void call_end(struct ctl_call *call)
{
    if (call->free_state)
        call->free_state(call->state);
    call->state = NULL;
    call->free_state = NULL;
    sbuf_free(&call->turn);
}

/* Closes cl now; the memory goes at the reaper's turn (never inside cl's own callback). */
static void client_close(struct client *cl, const char *why)
{
    struct ctlsock *s = cl->s;

    if (cl->dead)
        return;
    cl->dead = true;
    if (cl->busy)
        call_end(&cl->call);
    cl->busy = false;
    log_debug("control", "event=client_closed peer_uid=%ld reason=\"%s\"", cl->uid, why);
    bufferevent_disable(cl->bev, EV_READ | EV_WRITE);
    event_del(cl->resume);
    list_remove(&s->clients, cl);
    s->nclients--;
    list_push(&s->dead, cl);
    event_active(s->reap_ev, EV_TIMEOUT, 0);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    struct ctlsock *s = arg;

    while (s->dead) {
        struct client *cl = s->dead;
        list_remove(&s->dead, cl);
        bufferevent_free(cl->bev);
        event_free(cl->resume);
        free(cl);
    }
}

/* Writes the body of this turn into the client's output, dot-stuffed. */
static void put_body(struct client *cl)
{
    struct ctl_call *call = &cl->call;
    struct evbuffer *out = bufferevent_get_output(cl->bev);
    const char *p = call->turn.data, *end = p + call->turn.len;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        if (call->line_start && *p == '.')
            evbuffer_add(out, ".", 1);
        evbuffer_add(out, p, n);
        call->line_start = nl != NULL;
        p += n;
    }
    sbuf_reset(&call->turn);
}

static void serve_input(struct client *cl);

/* Nothing is being answered and nothing more can be read: after an EOF from the client,
 * close once the answers are written. */
static void idle_after_eof(struct client *cl)
{
    if (!cl->eof || cl->busy || cl->dead)
        return;
    cl->closing = true;
    if (evbuffer_get_length(bufferevent_get_output(cl->bev)) == 0)
        client_close(cl, "closed by the client");
}

static void run_turn(struct client *cl)
{
    struct ctl_call *call = &cl->call;
    struct evbuffer *out = bufferevent_get_output(cl->bev);
    enum ctl_result r;

    cl->waiting = false;
    r = call->cmd->run(call->cmd->arg, call);
    if (call->failed && !call->started)
        r = CTL_DONE;
    if (!call->started) {
        call->started = true;
        evbuffer_add_printf(out, "%s\n", call->failed ? call->status : "OK");
        metric_inc(m_requests, call->failed ? "error" : "ok");
    }
    put_body(cl);
    call->first = false;
    if (r == CTL_MORE) {
        cl->waiting = true;
        /* Room already: go on in the next loop turn, after everything else waiting. */
        if (evbuffer_get_length(out) < LOW_WATERMARK)
            event_active(cl->resume, EV_TIMEOUT, 0);
        return;
    }
    evbuffer_add(out, call->line_start ? ".\n" : "\n.\n", call->line_start ? 2 : 3);
    call_end(call);
    cl->busy = false;
    if (!cl->eof)
        bufferevent_enable(cl->bev, EV_READ);
    /* A request that came in behind this one: in the next loop turn, one per turn. */
    if (evbuffer_get_length(bufferevent_get_input(cl->bev)))
        event_active(cl->resume, EV_TIMEOUT, 0);
    else
        idle_after_eof(cl);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct client *cl = arg;

    if (cl->dead)
        return;
    if (cl->busy && cl->waiting)
        run_turn(cl);
    else if (!cl->busy)
        serve_input(cl);
}

static const struct ctl_command *find_command(const struct ctlsock *s, const char *name)
{
    for (int i = 0; i < s->ncmds; i++) {
        if (strcmp(s->cmds[i].name, name) == 0)
            return &s->cmds[i];
    }
    return NULL;
}

static void reply_error(struct client *cl, const char *code, const char *text,
                        const char *outcome)
{
    evbuffer_add_printf(bufferevent_get_output(cl->bev), "ERR %s %s\n.\n", code, text);
    metric_inc(m_requests, outcome);
}

static void start_call(struct client *cl, const struct ctl_request *req)
{
    const struct ctl_command *cmd = find_command(cl->s, req->argv[0]);
    struct ctl_call *call = &cl->call;

    if (!cmd) {
        char text[160];
        snprintf(text, sizeof text, "no command '%.64s' (try help)", req->argv[0]);
        reply_error(cl, CTL_ERR_UNKNOWN, text, "error");
        return;
    }
    if (cmd->changes)
        log_notice("control", "event=request command=%s peer_uid=%ld peer_pid=%ld", cmd->name,
                   cl->uid, cl->pid);
    else
        log_debug("control", "event=request command=%s peer_uid=%ld", cmd->name, cl->uid);
    memset(call, 0, sizeof *call);
    call->cl = cl;
    call->cmd = cmd;
    call->req = *req;
    /* argv points into buf: re-point into the copy. */
    for (int i = 0; i < req->argc; i++)
        call->req.argv[i] = call->req.buf + (req->argv[i] - req->buf);
    sbuf_init(&call->turn);
    call->first = true;
    call->line_start = true;
    cl->busy = true;
    bufferevent_disable(cl->bev, EV_READ); /* one request at a time */
    run_turn(cl);
}

/* Answers the next complete request line waiting in cl's input (empty lines skipped),
 * unless a call is running: one request per loop turn. */
static void serve_input(struct client *cl)
{
    struct evbuffer *in = bufferevent_get_input(cl->bev);

    while (!cl->dead && !cl->busy && !cl->closing) {
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF);
        char line[CTL_LINE_MAX + 2];
        struct ctl_request req;
        const char *why = NULL;
        size_t n;
        int rc;

        if (eol.pos < 0) {
            size_t have = evbuffer_get_length(in);
            if (have > CTL_LINE_MAX + 1) {
                why = "request line too long";
                goto bad;
            }
            /* A line trickled in a byte at a time never times out as idle: it gets as
             * long as an idle client, counted from its first byte. */
            if (have && !cl->partial_since_ms)
                cl->partial_since_ms = clock_mono_ms();
            if (have && clock_mono_ms() - cl->partial_since_ms > CTL_IDLE_TIMEOUT_S * 1000) {
                why = "request line not finished in time";
                goto bad;
            }
            idle_after_eof(cl); /* after an EOF, a last line without LF is not a request */
            return;
        }
        cl->partial_since_ms = 0;
        n = (size_t)eol.pos;
        if (n > CTL_LINE_MAX + 1) {
            why = "request line too long";
            goto bad;
        }
        evbuffer_remove(in, line, n);
        evbuffer_drain(in, 1); /* the LF */
        line[n] = '\0';
        rc = ctlproto_parse(line, n, &req, &why);
        if (rc < 0)
            goto bad;
        if (rc == 0) {
            start_call(cl, &req);
            return;
        }
        continue;
    bad:
        /* Not our protocol: say so once and hang up, so nothing can keep us reading. */
        log_info("control", "event=bad_request peer_uid=%ld reason=\"%s\" action=closing",
                 cl->uid, why);
        reply_error(cl, CTL_ERR_BADREQ, why, "bad_request");
        cl->closing = true;
        bufferevent_disable(cl->bev, EV_READ);
        return;
    }
}

static void on_read(struct bufferevent *bev, void *arg)
{
    serve_input(arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;

    if (cl->dead)
        return;
    if (cl->busy && cl->waiting) {
        run_turn(cl);
        return;
    }
    if (cl->closing && !cl->busy && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        client_close(cl, cl->eof ? "closed by the client" : "protocol error");
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct client *cl = arg;

    if (cl->dead)
        return;
    if (what & BEV_EVENT_TIMEOUT) {
        client_close(cl, what & BEV_EVENT_READING ? "idle" : "not reading its answer");
    } else if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_READING)) {
        /* The client shut down its side (echo status | socat - UNIX-CONNECT:...): the
         * requests it sent still get their answers, then we close. */
        cl->eof = true;
        bufferevent_disable(bev, EV_READ);
        if (!cl->busy)
            serve_input(cl);
    } else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        client_close(cl, "socket error");
    }
}

static void add_client(struct ctlsock *s, int fd)
{
    struct client *cl = xcalloc(1, sizeof *cl);
    struct timeval rtv = {.tv_sec = CTL_IDLE_TIMEOUT_S}, wtv = {.tv_sec = CTL_WRITE_TIMEOUT_S};
    struct ucred cred;
    socklen_t clen = sizeof cred;

    cl->s = s;
    cl->uid = cl->pid = -1;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
        cl->uid = (long)cred.uid;
        cl->pid = (long)cred.pid;
    }
    cl->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE |
                                                      BEV_OPT_DEFER_CALLBACKS);
    cl->resume = event_new(s->base, -1, 0, on_resume, cl);
    bufferevent_setcb(cl->bev, on_read, on_write, on_event, cl);
    /* Input stops being read past one request line: a client cannot make us buffer more. */
    bufferevent_setwatermark(cl->bev, EV_READ, 0, CTL_LINE_MAX + 2);
    bufferevent_setwatermark(cl->bev, EV_WRITE, LOW_WATERMARK, 0);
    bufferevent_set_timeouts(cl->bev, &rtv, &wtv);
    bufferevent_enable(cl->bev, EV_READ);
    list_push(&s->clients, cl);
    s->nclients++;
    log_debug("control", "event=client peer_uid=%ld peer_pid=%ld clients=%d", cl->uid, cl->pid,
              s->nclients);
}

static void on_unpause(evutil_socket_t fd, short what, void *arg)
{
    struct ctlsock *s = arg;

    event_add(s->accept_ev, NULL);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct ctlsock *s = arg;

    for (int i = 0; i < ACCEPTS_PER_TURN; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED)
                return;
            /* Out of descriptors: the listener would stay readable and spin the loop.
             * Stop accepting for a second. */
            log_warn("control", "event=accept_failed error=\"%s\" action=pausing_1s",
                     strerror(errno));
            event_del(s->accept_ev);
            event_add(s->pause_ev, &(struct timeval){.tv_sec = 1});
            return;
        }
        if (s->nclients >= CTL_MAX_CLIENTS) {
            static const char busy[] = "ERR " CTL_ERR_BUSY " too many control clients ("
                                       "at most 8); try again\n.\n";
            _Static_assert(CTL_MAX_CLIENTS == 8, "the message names the limit");
            /* A fresh socket's buffer takes these few bytes; if not, the client misses
             * only the reason. */
            if (send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
                log_debug("control", "event=busy_not_told error=\"%s\"", strerror(errno));
            metric_inc(m_requests, "busy");
            log_info("control", "event=client_refused reason=\"at most %d clients\"",
                     CTL_MAX_CLIENTS);
            close(fd);
            continue;
        }
        add_client(s, fd);
    }
}

/* ---- help ------------------------------------------------------------------------------ */

static enum ctl_result run_help(void *arg, struct ctl_call *c)
{
    struct ctlsock *s = arg;

    if (ctl_json(c)) {
        ctl_puts(c, "{\"commands\":[");
        for (int i = 0; i < s->ncmds; i++) {
            ctl_printf(c, "%s{\"name\":", i ? "," : "");
            ctl_json_str(c, s->cmds[i].name);
            ctl_puts(c, ",\"usage\":");
            ctl_json_str(c, s->cmds[i].usage);
            ctl_puts(c, ",\"help\":");
            ctl_json_str(c, s->cmds[i].help);
            ctl_puts(c, "}");
        }
        ctl_puts(c, "]}\n");
        return CTL_DONE;
    }
    for (int i = 0; i < s->ncmds; i++) {
        char head[128];
        snprintf(head, sizeof head, "%s%s%s", s->cmds[i].name, s->cmds[i].usage[0] ? " " : "",
                 s->cmds[i].usage);
        ctl_printf(c, "%-40s %s\n", head, s->cmds[i].help);
    }
    ctl_puts(c, "Any command takes --json for a JSON answer.\n");
    return CTL_DONE;
}

/* ---- public ---------------------------------------------------------------------------- */

struct ctlsock *ctlsock_new(struct event_base *base, const char *path, char *err,
                            size_t errlen)
{
    struct ctlsock *s;
    struct stat st;
    int fd = bind_socket(path, err, errlen);

    if (fd < 0)
        return NULL;
    s = xcalloc(1, sizeof *s);
    s->base = base;
    s->path = xstrdup(path);
    s->fd = fd;
    if (stat(path, &st) == 0) {
        s->dev = st.st_dev;
        s->ino = st.st_ino;
    }
    s->accept_ev = event_new(base, fd, EV_READ | EV_PERSIST, on_accept, s);
    s->reap_ev = event_new(base, -1, 0, on_reap, s);
    s->pause_ev = evtimer_new(base, on_unpause, s);
    event_add(s->accept_ev, NULL);
    ctlsock_add(s, &(struct ctl_command){.name = "help", .usage = "",
                                         .help = "this list", .run = run_help, .arg = s});
    log_info("control", "event=listening path=%s mode=%04o", path, CTL_SOCKET_MODE);
    return s;
}

void ctlsock_add(struct ctlsock *s, const struct ctl_command *cmd)
{
    if (s->ncmds == CTL_MAX_COMMANDS || find_command(s, cmd->name))
        abort(); /* a wiring bug in main.c */
    s->cmds[s->ncmds++] = *cmd;
}

void ctlsock_free(struct ctlsock *s)
{
    struct stat st;

    if (!s)
        return;
    while (s->clients)
        client_close(s->clients, "daemon stopping");
    on_reap(-1, 0, s);
    event_free(s->accept_ev);
    event_free(s->reap_ev);
    event_free(s->pause_ev);
    close(s->fd);
    /* Only our own file: a daemon started since may have replaced it. */
    if (stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
        unlink(s->path);
    free(s->path);
    free(s);
}

/* ---- inside a command -------------------------------------------------------------------- */

int ctl_argc(const struct ctl_call *c)
{
    return c->req.argc - 1;
}

const char *ctl_arg(const struct ctl_call *c, int i)
{
    return i >= 0 && i + 1 < c->req.argc ? c->req.argv[i + 1] : NULL;
}

bool ctl_json(const struct ctl_call *c)
{
    return c->req.json;
}

bool ctl_first(const struct ctl_call *c)
{
    return c->first;
}

void ctl_printf(struct ctl_call *c, const char *fmt, ...)
{
    va_list ap;
    char small[512];
    int n;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        sbuf_append(&c->turn, small, (size_t)n);
        return;
    }
    {
        char *big = xmalloc((size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        sbuf_append(&c->turn, big, (size_t)n);
        free(big);
    }
}

void ctl_puts(struct ctl_call *c, const char *s)
{
    sbuf_puts(&c->turn, s);
}

void ctl_json_str(struct ctl_call *c, const char *s)
{
    ctlproto_json_str(&c->turn, s);
}

void ctl_fail(struct ctl_call *c, const char *code, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (c->started)
        return; /* too late to change the status: a bug in the command */
    n = snprintf(c->status, sizeof c->status, "ERR %s ", code);
    va_start(ap, fmt);
    vsnprintf(c->status + n, sizeof c->status - (size_t)n, fmt, ap);
    va_end(ap);
    /* One line, whatever the text held. */
    for (char *p = c->status; *p; p++) {
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    }
    c->failed = true;
}

bool ctl_full(const struct ctl_call *c)
{
    return c->turn.len + evbuffer_get_length(bufferevent_get_output(c->cl->bev)) >=
           CTL_TURN_BYTES;
}

void *ctl_state(const struct ctl_call *c)
{
    return c->state;
}

void ctl_set_state(struct ctl_call *c, void *state, void (*free_fn)(void *state))
{
    c->state = state;
    c->free_state = free_fn;
}

int ctl_parse_args(struct ctl_call *c, struct ctl_opt *opts, int nopts, const char **pos,
                   int max_pos, int *npos)
{
    int n = 0;

    for (int i = 0; i < nopts; i++) {
        opts[i].value = NULL;
        opts[i].given = false;
    }
    for (int i = 0; i < ctl_argc(c); i++) {
        const char *a = ctl_arg(c, i);
        int k;
        if (a[0] == '-' && a[1] == '-') {
            for (k = 0; k < nopts && strcmp(opts[k].name, a) != 0; k++)
                ;
            if (k == nopts)
                goto usage;
            opts[k].given = true;
            if (opts[k].has_value) {
                if (i + 1 >= ctl_argc(c))
                    goto usage;
                opts[k].value = ctl_arg(c, ++i);
            }
            continue;
        }
        if (n == max_pos)
            goto usage;
        pos[n++] = a;
    }
    if (npos)
        *npos = n;
    return 0;
usage:
    ctl_fail(c, CTL_ERR_USAGE, "%s %s", c->cmd->name, c->cmd->usage);
    return -1;
}
