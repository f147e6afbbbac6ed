/* offhookctl check: the result helpers, a TCP connect with a timeout, and the Redis
 * check. Called by offhookctl.c; xmppcheck.c and sipcheck.c use the helpers. */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "strutil.h"

void check_begin(struct check_result *r, const char *name, const char *target_fmt, ...)
{
    va_list ap;

    memset(r, 0, sizeof *r);
    str_copy(r->name, sizeof r->name, name);
    va_start(ap, target_fmt);
    vsnprintf(r->target, sizeof r->target, target_fmt, ap);
    va_end(ap);
    r->t0_us = clock_wall_us();
}

bool check_end(struct check_result *r, bool ok, const char *fmt, ...)
{
    va_list ap;

    r->ok = ok;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
    r->ms = (double)(clock_wall_us() - r->t0_us) / 1000.0;
    return ok;
}

int check_left_ms(int64_t deadline)
{
    int64_t left = deadline - clock_mono_ms();

    return left > 0 ? (int)left : 0;
}

void check_printable(char *out, size_t outlen, const char *s, size_t len)
{
    size_t n = 0;

    if (!outlen)
        return;
    for (size_t i = 0; i < len && s[i] && n + 1 < outlen; i++)
        out[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    out[n] = '\0';
}

static int connect_one(const struct addrinfo *ai, int timeout_ms, char *err, size_t errlen)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
    struct pollfd pfd;
    int soerr = 0, rc;
    socklen_t sl = sizeof soerr;

    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
    rc = poll(&pfd, 1, timeout_ms);
    if (rc == 0) {
        snprintf(err, errlen, "no answer to the connection within %d ms", timeout_ms);
        close(fd);
        return -1;
    }
    if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr) {
        snprintf(err, errlen, "%s", strerror(soerr ? soerr : errno));
        close(fd);
        return -1;
    }
    /* Blocking from here on (OpenSSL's handshake wants it), each read and write bounded
     * by the timeout: the checks poll before reading as well. */
    {
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) {
            snprintf(err, errlen, "socket options: %s", strerror(errno));
            close(fd);
            return -1;
        }
    }
    return fd;
}

int check_tcp_connect(const char *host, int port, int timeout_ms, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char portstr[16];
    int fd = -1, gai;

    snprintf(portstr, sizeof portstr, "%d", port);
    gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        fd = connect_one(ai, timeout_ms, err, errlen);
    freeaddrinfo(res);
    return fd;
}

/* ---- Redis ----------------------------------------------------------------------------- */

/* The first word of a Redis error (NOAUTH, WRONGPASS, READONLY...) and its text: Redis
 * never echoes a password in its errors. */
static const char *reply_error(const redisContext *c, const redisReply *rep, char *buf,
                               size_t len)
{
    if (!rep)
        check_printable(buf, len, c->errstr, strlen(c->errstr));
    else if (rep->type == REDIS_REPLY_ERROR)
        check_printable(buf, len, rep->str, rep->len);
    else
        snprintf(buf, len, "unexpected reply type %d", rep->type);
    return buf;
}

/* Appends to note (NUL-terminated, len bytes), "; "-separated. */
static void note_add(char *note, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note_add(char *note, size_t len, const char *fmt, ...)
{
    size_t used = strlen(note);
    va_list ap;

    if (used + 3 >= len)
        return;
    if (used) {
        memcpy(note + used, "; ", 3);
        used += 2;
    }
    va_start(ap, fmt);
    vsnprintf(note + used, len - used, fmt, ap);
    va_end(ap);
}

/* One sentinel's answer: true with host/port, or false with why. */
static bool ask_one(const struct offhook_config *cfg, const struct redis_addr *a,
                    int timeout_ms, char *host, size_t hostlen, int *port, char *why,
                    size_t whylen)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *s = redisConnectWithTimeout(a->host, a->port, tv);
    redisReply *rep = NULL;
    char err[256];
    long p;
    bool ok = false;

    if (!s || s->err) {
        snprintf(why, whylen, "%s", s ? s->errstr : "out of memory");
        goto out;
    }
    redisSetTimeout(s, tv);
    if (cfg->redis_sentinel_password[0]) {
        rep = redisCommand(s, "AUTH %s", cfg->redis_sentinel_password);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            snprintf(why, whylen, "refused AUTH (sentinel_password): %s",
                     reply_error(s, rep, err, sizeof err));
            goto out;
        }
        freeReplyObject(rep);
    }
    rep = redisCommand(s, "SENTINEL get-master-addr-by-name %s", cfg->redis_master_name);
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_STRING &&
        rep->element[1]->type == REDIS_REPLY_STRING &&
        str_parse_long(rep->element[1]->str, 1, 65535, &p) == 0 &&
        str_copy(host, hostlen, rep->element[0]->str) == 0) {
        *port = (int)p;
        ok = true;
    } else if (rep && rep->type == REDIS_REPLY_NIL) {
        snprintf(why, whylen, "does not know the master (no master_name %.128s there)",
                 cfg->redis_master_name);
    } else {
        snprintf(why, whylen, "%s", reply_error(s, rep, err, sizeof err));
    }
out:
    freeReplyObject(rep);
    if (s)
        redisFree(s);
    return ok;
}

bool check_ask_sentinels(const struct offhook_config *cfg, int timeout_ms, bool all,
                         char *host, size_t hostlen, int *port, char *note, size_t notelen)
{
    char h[256], why[384], scratch[2];
    bool found = false;
    int p;

    if (!note) {
        note = scratch;
        notelen = sizeof scratch;
    }
    note[0] = '\0';
    for (int i = 0; i < cfg->redis_nsentinels && (all || !found); i++) {
        const struct redis_addr *a = &cfg->redis_sentinel[i];
        bool v6 = strchr(a->host, ':') != NULL;

        if (!ask_one(cfg, a, timeout_ms, h, sizeof h, &p, why, sizeof why)) {
            note_add(note, notelen, "sentinel %s%s%s:%d %s", v6 ? "[" : "", a->host,
                     v6 ? "]" : "", a->port, why);
            continue;
        }
        if (!found) {
            str_copy(host, hostlen, h);
            *port = p;
            found = true;
        } else if (p != *port || strcmp(h, host) != 0) {
            note_add(note, notelen, "sentinel %s%s%s:%d names %s:%d", v6 ? "[" : "", a->host,
                     v6 ? "]" : "", a->port, h, p);
        }
    }
    if (!cfg->redis_nsentinels)
        note_add(note, notelen, "no sentinel configured");
    return found;
}

/* The checks of one Redis server, begun by the caller: AUTH, SELECT, PING, ROLE. where
 * says how the server was chosen, for the advice on a replica. note, if not empty, ends
 * a good verdict. */
static void check_server(const struct offhook_config *cfg, const char *host, int port,
                         int db, int timeout_ms, const char *where, const char *note,
                         struct check_result *r)
{
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    redisContext *c;
    redisReply *rep = NULL;
    char err[256], version[64] = "", role[32] = "";

    c = !host ? redisConnectUnixWithTimeout(cfg->redis.unix_path, tv)
              : redisConnectWithTimeout(host, port, tv);
    if (!c || c->err) {
        check_end(r, false, "cannot connect: %s", c ? c->errstr : "out of memory");
        goto out;
    }
    redisSetTimeout(c, tv);
    if (cfg->redis_password[0]) {
        rep = redisCommand(c, "AUTH %s", cfg->redis_password);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            check_end(r, false, "AUTH refused: %s (check [redis] password or password_file)",
                      reply_error(c, rep, err, sizeof err));
            goto out;
        }
        freeReplyObject(rep);
    }
    if (db) {
        rep = redisCommand(c, "SELECT %d", db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            check_end(r, false, "SELECT %d refused: %s", db,
                      reply_error(c, rep, err, sizeof err));
            goto out;
        }
        freeReplyObject(rep);
    }
    rep = redisCommand(c, "PING");
    if (!rep || rep->type != REDIS_REPLY_STATUS || strcmp(rep->str, "PONG") != 0) {
        check_end(r, false, "PING failed: %s%s", reply_error(c, rep, err, sizeof err),
                  rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOAUTH", 6) == 0
                      ? " (Redis wants a password: set [redis] password_file)"
                      : "");
        goto out;
    }
    freeReplyObject(rep);
    /* The version is nice to have; an ACL may refuse INFO, which changes nothing. */
    rep = redisCommand(c, "INFO server");
    if (rep && rep->type == REDIS_REPLY_STRING) {
        const char *v = strstr(rep->str, "redis_version:");
        if (v)
            snprintf(version, sizeof version, "Redis %.*s, ", (int)strcspn(v + 14, "\r\n"),
                     v + 14);
    }
    freeReplyObject(rep);
    rep = redisCommand(c, "ROLE");
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
        rep->element[0]->type == REDIS_REPLY_STRING)
        check_printable(role, sizeof role, rep->element[0]->str, rep->element[0]->len);
    if (strcmp(role, "slave") == 0) {
        check_end(r, false, "%sa read-only replica: sipbridge's writes would be refused (%s)",
                  version, where);
    } else if (strcmp(role, "sentinel") == 0) {
        check_end(r, false, "a Sentinel, not a Redis server (%s)", where);
    } else {
        check_end(r, true, "%s%s, PING answered%s%s", version,
                  role[0] ? role : "role unknown (ROLE refused)", note[0] ? "; " : "", note);
    }
out:
    freeReplyObject(rep);
    if (c)
        redisFree(c);
}

void check_redis(const struct offhook_config *cfg, int timeout_ms, struct check_result *r)
{
    char host[256], note[300];
    int port;

    if (cfg->redis_nsentinels > 0) {
        check_begin(r, "redis", "master %s via %d sentinels", cfg->redis_master_name,
                    cfg->redis_nsentinels);
        if (!check_ask_sentinels(cfg, timeout_ms, true, host, sizeof host, &port, note,
                                 sizeof note)) {
            check_end(r, false, "no sentinel named a master: %s", note);
            return;
        }
        snprintf(r->target, sizeof r->target, strchr(host, ':') ? "[%s]:%d (master %s)"
                                                                 : "%s:%d (master %s)",
                 host, port, cfg->redis_master_name);
        check_server(cfg, host, port, 0, timeout_ms,
                     "the sentinels name it master: a failover in progress?", note, r);
        return;
    }
    if (cfg->redis.unix_path)
        check_begin(r, "redis", "unix:%s db %d", cfg->redis.unix_path, cfg->redis.db);
    else
        check_begin(r, "redis", "%s:%d db %d", cfg->redis.host, cfg->redis.port, cfg->redis.db);
    check_server(cfg, cfg->redis.unix_path ? NULL : cfg->redis.host, cfg->redis.port,
                 cfg->redis.db, timeout_ms, "point [redis] url at the master", "", r);
}
