/* The client of the control socket (see ctlclient.h). */
#include "ctlclient.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctlproto.h"

enum { ST_STATUS, ST_LINE_START, ST_DOT, ST_MID, ST_DONE };

static void emit(const char *p, size_t n, FILE *out, struct sbuf *body)
{
    if (!n)
        return;
    if (out)
        fwrite(p, 1, n, out);
    else if (body)
        sbuf_append(body, p, n);
}

long ctlclient_feed(struct ctlclient_parser *p, const char *buf, size_t n, FILE *out,
                    struct sbuf *body)
{
    size_t i = 0, run = 0; /* body bytes buf[run..i) not yet emitted */

    while (i < n && p->stage != ST_DONE) {
        char c = buf[i];
        switch (p->stage) {
        case ST_STATUS:
            i++;
            if (c == '\n') {
                p->status[p->status_len] = '\0';
                if (p->status_len && p->status[p->status_len - 1] == '\r')
                    p->status[--p->status_len] = '\0';
                if (strcmp(p->status, "OK") != 0 && strncmp(p->status, "ERR ", 4) != 0) {
                    p->bad = true;
                    return -1;
                }
                p->stage = ST_LINE_START;
                return (long)i; /* the caller now knows where the body goes */
            } else if (p->status_len + 1 >= sizeof p->status) {
                p->bad = true;
                return -1;
            } else {
                p->status[p->status_len++] = c;
            }
            break;
        case ST_LINE_START:
            if (c == '.') {
                emit(buf + run, i - run, out, body);
                p->stage = ST_DOT;
                i++;
                run = i;
            } else {
                p->stage = c == '\n' ? ST_LINE_START : ST_MID;
                i++;
            }
            break;
        case ST_DOT:
            if (c == '\n') { /* the terminator */
                p->stage = ST_DONE;
                i++;
                run = i;
            } else {
                /* ".." is a stuffed dot; anything else a daemon never sends: kept. */
                if (c != '.')
                    emit(".", 1, out, body);
                p->stage = ST_MID;
                run = i;
                i++;
            }
            break;
        case ST_MID:
            i++;
            if (c == '\n')
                p->stage = ST_LINE_START;
            break;
        }
    }
    if (p->stage != ST_STATUS)
        emit(buf + run, i - run, out, body);
    return (long)i;
}

bool ctlclient_done(const struct ctlclient_parser *p)
{
    return p->stage == ST_DONE;
}

void ctlclient_reply_free(struct ctlclient_reply *r)
{
    sbuf_free(&r->body);
}

static enum ctlclient_outcome fail(struct ctlclient_reply *r, enum ctlclient_outcome o,
                                   const char *what, int err)
{
    snprintf(r->text, sizeof r->text, "%s%s%s", what, err ? ": " : "", err ? strerror(err) : "");
    r->outcome = o;
    return o;
}

/* Writes all of buf, waiting at most timeout_ms for room each time. */
static int send_all(int fd, const char *buf, size_t n, int timeout_ms)
{
    while (n) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        ssize_t w;
        if (poll(&pfd, 1, timeout_ms) <= 0)
            return -1;
        w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

enum ctlclient_outcome ctlclient_ask(const char *path, const char *line, int timeout_ms,
                                     FILE *out, struct ctlclient_reply *r)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct ctlclient_parser p = {0};
    char req[CTL_LINE_MAX + 2], buf[65536];
    size_t llen = strlen(line);
    int fd, send_err;

    memset(r, 0, sizeof *r);
    sbuf_init(&r->body);
    if (strlen(path) >= sizeof sa.sun_path)
        return fail(r, CTLC_DOWN, "socket path too long", 0);
    if (llen > CTL_LINE_MAX)
        return fail(r, CTLC_BROKEN, "request too long", 0);
    memcpy(sa.sun_path, path, strlen(path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail(r, CTLC_BROKEN, "socket", errno);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        close(fd);
        if (e == ENOENT || e == ECONNREFUSED || e == ENOTDIR)
            return fail(r, CTLC_DOWN, path, e);
        if (e == EACCES || e == EPERM)
            return fail(r, CTLC_DENIED, path, e);
        return fail(r, CTLC_BROKEN, path, e);
    }
    memcpy(req, line, llen);
    req[llen] = '\n';
    /* A daemon that hangs up at once (too many clients) has said why first: read it. */
    send_err = send_all(fd, req, llen + 1, timeout_ms) < 0 ? (errno ? errno : ETIMEDOUT) : 0;
    while (!ctlclient_done(&p)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, timeout_ms);
        ssize_t n;
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc == 0) {
            close(fd);
            return fail(r, CTLC_BROKEN, "no answer in time (--timeout)", 0);
        }
        n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : 0;
            close(fd);
            if (send_err && p.stage == ST_STATUS)
                return fail(r, CTLC_BROKEN, "cannot send the request", send_err);
            return fail(r, CTLC_BROKEN, n < 0 ? "connection lost" : "connection closed "
                                                                    "before the end of the "
                                                                    "answer",
                        e);
        }
        {
            long used = 0;
            if (p.stage == ST_STATUS) {
                used = ctlclient_feed(&p, buf, (size_t)n, NULL, NULL);
                if (used < 0) {
                    close(fd);
                    return fail(r, CTLC_BROKEN, "not an offhook control socket", 0);
                }
            }
            /* The status line decides where the body goes: an ERR's detail is kept. */
            if (p.stage != ST_STATUS)
                ctlclient_feed(&p, buf + used, (size_t)(n - used),
                               strcmp(p.status, "OK") == 0 ? out : NULL, &r->body);
        }
    }
    close(fd);
    if (strcmp(p.status, "OK") == 0) {
        r->outcome = CTLC_OK;
        return r->outcome;
    }
    {
        const char *text = "";
        if (ctlproto_status(p.status, r->code, sizeof r->code, &text) != 0)
            return fail(r, CTLC_BROKEN, "not an offhook control socket", 0);
        snprintf(r->text, sizeof r->text, "%s", text);
    }
    r->outcome = CTLC_ERR;
    return r->outcome;
}
