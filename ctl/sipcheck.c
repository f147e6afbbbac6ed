/* offhookctl check's SIP side: an OPTIONS to the PBX over UDP, TCP or TLS, and the URI
 * and response parsers it needs. Called by offhookctl.c. */
#include "sipcheck.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "strutil.h"
#include "version.h"

#define SIP_BUF 8192   /* an OPTIONS answer's headers; a body beyond is not read */
#define T1_MS 500      /* RFC 3261 timer T1: the first UDP retransmission */

/* ---- parsers (pure) --------------------------------------------------------------- */

int sipcheck_parse_target(const char *uri, struct sip_target *t, char *err, size_t errlen)
{
    const char *p, *at, *end;
    size_t hl;

    memset(t, 0, sizeof *t);
    if (strncasecmp(uri, "sips:", 5) == 0) {
        t->sips = true;
        p = uri + 5;
    } else if (strncasecmp(uri, "sip:", 4) == 0) {
        p = uri + 4;
    } else {
        snprintf(err, errlen, "'%s' is not a sip: or sips: URI", uri);
        return -1;
    }
    end = p + strcspn(p, ";?");
    at = memchr(p, '@', (size_t)(end - p));
    if (at)
        p = at + 1;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb) {
            snprintf(err, errlen, "'%s': unterminated [IPv6] host", uri);
            return -1;
        }
        hl = (size_t)(rb - p - 1);
        if (hl == 0 || hl >= sizeof t->host)
            goto bad_host;
        memcpy(t->host, p + 1, hl);
        t->ipv6 = true;
        p = rb + 1;
    } else {
        hl = strcspn(p, ":;?");
        if (hl == 0 || hl >= sizeof t->host || p + hl > end)
            goto bad_host;
        memcpy(t->host, p, hl);
        p += hl;
    }
    t->host[hl] = '\0';
    t->port = 0;
    if (*p == ':') {
        long port;
        char num[8];
        size_t nl = strcspn(p + 1, ";?");
        if (nl == 0 || nl >= sizeof num)
            goto bad_port;
        memcpy(num, p + 1, nl);
        num[nl] = '\0';
        if (str_parse_long(num, 1, 65535, &port) < 0)
            goto bad_port;
        t->port = (int)port;
    }
    str_copy(t->transport, sizeof t->transport, t->sips ? "tls" : "udp");
    t->transport_set = t->sips;
    for (const char *q = strchr(end, ';'); q && *q == ';'; q = strchr(q + 1, ';')) {
        if (strncasecmp(q, ";transport=", 11) == 0) {
            const char *v = q + 11;
            size_t vl = strcspn(v, ";?");
            if (vl == 3 && (strncasecmp(v, "udp", 3) == 0 || strncasecmp(v, "tcp", 3) == 0 ||
                            strncasecmp(v, "tls", 3) == 0)) {
                memcpy(t->transport, v, 3);
                t->transport[3] = '\0';
                str_lower(t->transport);
                t->transport_set = true;
            } else {
                snprintf(err, errlen, "'%s': transport %.*s is not udp, tcp or tls", uri,
                         (int)vl, v);
                return -1;
            }
        }
    }
    if (!t->port)
        t->port = strcmp(t->transport, "tls") == 0 ? 5061 : 5060;
    return 0;
bad_host:
    snprintf(err, errlen, "'%s' has no usable host", uri);
    return -1;
bad_port:
    snprintf(err, errlen, "'%s' has a bad port", uri);
    return -1;
}

/* The value of header name (or its compact form) in the header block, trimmed. */
static bool header_value(const char *head, size_t len, const char *name, const char *compact,
                         const char **val, size_t *vlen)
{
    const char *p = memchr(head, '\n', len), *end = head + len;

    while (p && p + 1 < end) {
        const char *line = p + 1, *eol = memchr(line, '\n', (size_t)(end - line));
        const char *colon;
        size_t nl;

        if (!eol)
            eol = end;
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon) {
            nl = (size_t)(colon - line);
            while (nl && (line[nl - 1] == ' ' || line[nl - 1] == '\t'))
                nl--;
            if ((nl == strlen(name) && strncasecmp(line, name, nl) == 0) ||
                (compact && nl == strlen(compact) && strncasecmp(line, compact, nl) == 0)) {
                const char *v = colon + 1, *ve = eol;
                while (v < ve && (*v == ' ' || *v == '\t'))
                    v++;
                while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                    ve--;
                *val = v;
                *vlen = (size_t)(ve - v);
                return true;
            }
        }
        p = eol < end ? eol : NULL;
    }
    return false;
}

int sipcheck_parse_response(const char *buf, size_t len, const char *callid, int *status,
                            char *phrase, size_t phraselen, char *server, size_t serverlen)
{
    const char *hend = NULL, *eol, *v;
    size_t vlen;

    if (len < 8)
        return 0;
    if (strncmp(buf, "SIP/2.0 ", 8) != 0)
        return -1;
    for (size_t i = 0; i + 3 < len; i++) {
        if (memcmp(buf + i, "\r\n\r\n", 4) == 0) {
            hend = buf + i + 2;
            break;
        }
    }
    if (!hend)
        return 0;
    eol = memchr(buf, '\r', (size_t)(hend - buf));
    if (!eol || eol - buf < 12 || buf[8] < '1' || buf[8] > '6' || buf[9] < '0' || buf[9] > '9' ||
        buf[10] < '0' || buf[10] > '9' || (buf[11] != ' ' && buf + 11 != eol))
        return -1;
    *status = (buf[8] - '0') * 100 + (buf[9] - '0') * 10 + (buf[10] - '0');
    check_printable(phrase, phraselen, buf + 12, eol > buf + 12 ? (size_t)(eol - buf - 12) : 0);
    if (!header_value(buf, (size_t)(hend - buf), "Call-ID", "i", &v, &vlen) ||
        vlen != strlen(callid) || memcmp(v, callid, vlen) != 0)
        return -1;
    server[0] = '\0';
    if (header_value(buf, (size_t)(hend - buf), "Server", NULL, &v, &vlen) ||
        header_value(buf, (size_t)(hend - buf), "User-Agent", NULL, &v, &vlen))
        check_printable(server, serverlen, v, vlen);
    return 1;
}

/* ---- the request ---------------------------------------------------------------------- */

static void random_hex(char *out, size_t bytes)
{
    unsigned char b[16];

    if (bytes > sizeof b)
        bytes = sizeof b;
    if (getrandom(b, bytes, 0) != (ssize_t)bytes) {
        uint64_t x = (uint64_t)clock_wall_us() ^ ((uint64_t)getpid() << 32);
        memcpy(b, &x, bytes < sizeof x ? bytes : sizeof x);
    }
    for (size_t i = 0; i < bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

struct request {
    char text[2048];
    size_t len;
    char callid[64];
};

/* The OPTIONS, with a Via naming the local address lfd is bound to. */
static void build_request(const struct offhook_config *cfg, const struct sip_target *t,
                          int lfd, struct request *rq)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char lhost[INET6_ADDRSTRLEN + 2] = "0.0.0.0", ruri[320], from[320], branch[33], tag[17],
                                       cid[33];
    int lport = 0;

    if (getsockname(lfd, (struct sockaddr *)&ss, &sl) == 0) {
        char a[INET6_ADDRSTRLEN];
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &s6->sin6_addr, a, sizeof a);
            snprintf(lhost, sizeof lhost, "[%s]", a);
            lport = ntohs(s6->sin6_port);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &s4->sin_addr, a, sizeof a);
            snprintf(lhost, sizeof lhost, "%s", a);
            lport = ntohs(s4->sin_port);
        }
    }
    /* To the proxy itself, no user part: a server answers OPTIONS to its own URI. */
    snprintf(ruri, sizeof ruri, "%s:%s%s%s:%d%s%s", t->sips ? "sips" : "sip",
             t->ipv6 ? "[" : "", t->host, t->ipv6 ? "]" : "", t->port,
             t->transport_set && !t->sips ? ";transport=" : "",
             t->transport_set && !t->sips ? t->transport : "");
    /* The From sipbridge's SUBSCRIBEs carry, so a PBX that filters by it answers alike. */
    if (cfg->sip_from[0])
        snprintf(from, sizeof from, "%s", cfg->sip_from);
    else
        snprintf(from, sizeof from, "sip:%s@%s%s%s",
                 cfg->sip_username[0] ? cfg->sip_username : "offhook", t->ipv6 ? "[" : "",
                 t->host, t->ipv6 ? "]" : "");
    random_hex(branch, 16);
    random_hex(tag, 8);
    random_hex(cid, 16);
    snprintf(rq->callid, sizeof rq->callid, "%s@offhookctl", cid);
    rq->len = (size_t)snprintf(
        rq->text, sizeof rq->text,
        "OPTIONS %s SIP/2.0\r\n"
        "Via: SIP/2.0/%s %s:%d;branch=z9hG4bK%s;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <%s>;tag=%s\r\n"
        "To: <%s>\r\n"
        "Call-ID: %s\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Accept: application/sdp\r\n"
        "User-Agent: offhookctl/%s\r\n"
        "Content-Length: 0\r\n\r\n",
        ruri, strcmp(t->transport, "udp") == 0 ? "UDP" : strcmp(t->transport, "tcp") == 0 ? "TCP" : "TLS",
        lhost, lport, branch, from, tag, ruri, rq->callid, OFFHOOK_VERSION);
    if (rq->len >= sizeof rq->text)
        rq->len = sizeof rq->text - 1;
}

static void answered(struct check_result *r, int status, const char *phrase, const char *server,
                     const char *extra)
{
    check_end(r, true, "answered OPTIONS with %d %s%s%s%s%s", status, phrase,
              server[0] ? " (" : "", server, server[0] ? ")" : "", extra);
}

/* ---- UDP ------------------------------------------------------------------------------ */

static void options_udp(const struct offhook_config *cfg, const struct sip_target *t,
                        int timeout_ms, struct check_result *r)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
    struct addrinfo *res = NULL;
    char portstr[16], buf[SIP_BUF], phrase[128], server[96];
    struct request rq;
    int64_t deadline = clock_mono_ms() + timeout_ms, next;
    int fd = -1, gai, wait = T1_MS, status = 0;

    snprintf(portstr, sizeof portstr, "%d", t->port);
    gai = getaddrinfo(t->host, portstr, &hints, &res);
    if (gai != 0) {
        check_end(r, false, "cannot resolve %s: %s", t->host, gai_strerror(gai));
        return;
    }
    /* Connected, so that an ICMP port unreachable comes back as ECONNREFUSED. */
    fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
        check_end(r, false, "cannot send: %s", strerror(errno));
        goto out;
    }
    build_request(cfg, t, fd, &rq);
    next = clock_mono_ms();
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc, left;
        ssize_t n;

        if (clock_mono_ms() >= next) {
            /* Retransmitted at T1, 2*T1, 4*T1... as a SIP client does over UDP. */
            if (send(fd, rq.text, rq.len, 0) < 0 && errno != ECONNREFUSED) {
                check_end(r, false, "cannot send: %s", strerror(errno));
                goto out;
            }
            next = clock_mono_ms() + wait;
            wait *= 2;
        }
        left = check_left_ms(deadline);
        if (left == 0) {
            check_end(r, false, "no answer within %d ms (is a SIP server listening on udp "
                                "%s:%d? a firewall?)",
                      timeout_ms, t->host, t->port);
            goto out;
        }
        rc = poll(&pfd, 1, check_left_ms(next) < left ? check_left_ms(next) : left);
        if (rc <= 0)
            continue;
        n = recv(fd, buf, sizeof buf - 1, 0);
        if (n < 0) {
            if (errno == ECONNREFUSED) {
                check_end(r, false, "connection refused: nothing listens on udp %s:%d", t->host,
                          t->port);
                goto out;
            }
            continue;
        }
        buf[n] = '\0';
        if (sipcheck_parse_response(buf, (size_t)n, rq.callid, &status, phrase, sizeof phrase,
                                    server, sizeof server) == 1 &&
            status >= 200) {
            answered(r, status, phrase, server, "");
            goto out;
        }
        /* 1xx, a stray or a foreign datagram: keep waiting. */
    }
out:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(res);
}

/* ---- TCP and TLS ---------------------------------------------------------------------- */

/* Reads a response over a stream (TLS when ssl is set) until a final one. Returns the
 * status, or -1 with why in err. */
static int read_stream(int fd, SSL *ssl, const struct request *rq, int64_t deadline,
                       char *phrase, size_t phraselen, char *server, size_t serverlen,
                       char *err, size_t errlen)
{
    char buf[SIP_BUF];
    size_t len = 0;
    int status = 0;

    for (;;) {
        int rc;
        ssize_t n;

        if (!ssl || SSL_pending(ssl) == 0) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            rc = poll(&pfd, 1, check_left_ms(deadline));
            if (rc <= 0) {
                snprintf(err, errlen, "no answer to OPTIONS in time");
                return -1;
            }
        }
        if (len >= sizeof buf - 1) {
            snprintf(err, errlen, "an answer larger than %d bytes", SIP_BUF);
            return -1;
        }
        n = ssl ? SSL_read(ssl, buf + len, (int)(sizeof buf - 1 - len))
                : recv(fd, buf + len, sizeof buf - 1 - len, 0);
        if (n <= 0) {
            snprintf(err, errlen, "the connection was closed without an answer");
            return -1;
        }
        len += (size_t)n;
        buf[len] = '\0';
        for (;;) {
            rc = sipcheck_parse_response(buf, len, rq->callid, &status, phrase, phraselen,
                                         server, serverlen);
            if (rc == 0)
                break;
            if (rc < 0) {
                snprintf(err, errlen, "an answer that is not a SIP response to the OPTIONS");
                return -1;
            }
            if (status >= 200)
                return status;
            /* A provisional answer: drop its headers and read on. */
            {
                char *e = strstr(buf, "\r\n\r\n");
                size_t used = (size_t)(e + 4 - buf);
                memmove(buf, buf + used, len - used + 1);
                len -= used;
            }
        }
    }
}

/* Does the certificate name host as Sofia-SIP checks it: a DNS name or the CN (no
 * wildcards), or a sip:/sips: URI, equal to the host? */
static bool cert_names_host(X509 *cert, const char *host)
{
    GENERAL_NAMES *sans;
    bool ok = X509_check_host(cert, host, 0,
                              X509_CHECK_FLAG_ALWAYS_CHECK_SUBJECT |
                                  X509_CHECK_FLAG_NO_WILDCARDS,
                              NULL) == 1;

    sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; !ok && sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        const char *u;
        int ul;
        if (gn->type != GEN_URI)
            continue;
        u = (const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        ul = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        for (int skip = 4; skip <= 5 && !ok; skip++) {
            ok = ul == skip + (int)strlen(host) &&
                 strncasecmp(u, skip == 4 ? "sip:" : "sips:", (size_t)skip) == 0 &&
                 strncasecmp(u + skip, host, strlen(host)) == 0;
        }
    }
    GENERAL_NAMES_free(sans);
    return ok;
}

static const char *tls_error(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();

    if (!e)
        snprintf(buf, len, "%s", errno ? strerror(errno) : "the handshake failed");
    else
        ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* The TLS session sipbridge would have: tls_dir's cafile.pem and agent.pem, tls_verify. */
static SSL *tls_start(const struct offhook_config *cfg, const struct sip_target *t, int fd,
                      SSL_CTX **ctxp, char *note, size_t notelen, char *err, size_t errlen)
{
    bool verify = strcmp(cfg->sip_tls_verify, "none") != 0;
    char path[4096], ebuf[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    X509 *cert = NULL;
    long v;

    *ctxp = ctx;
    if (!ctx) {
        snprintf(err, errlen, "TLS: %s", tls_error(ebuf, sizeof ebuf));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (verify) {
        snprintf(path, sizeof path, "%s/cafile.pem", cfg->sip_tls_dir);
        if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1) {
            snprintf(err, errlen, "cannot use %.200s: %s", path, tls_error(ebuf, sizeof ebuf));
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    snprintf(path, sizeof path, "%s/agent.pem", cfg->sip_tls_dir);
    if (SSL_CTX_use_certificate_chain_file(ctx, path) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "cannot use %.200s (offhook's certificate and key): %s", path,
                 tls_error(ebuf, sizeof ebuf));
        return NULL;
    }
    ssl = SSL_new(ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1) {
        snprintf(err, errlen, "TLS: %s", tls_error(ebuf, sizeof ebuf));
        SSL_free(ssl);
        return NULL;
    }
    {
        struct in6_addr a6;
        struct in_addr a4;
        if (inet_pton(AF_INET, t->host, &a4) != 1 && inet_pton(AF_INET6, t->host, &a6) != 1)
            SSL_set_tlsext_host_name(ssl, t->host);
    }
    if (SSL_connect(ssl) != 1) {
        v = SSL_get_verify_result(ssl);
        if (v != X509_V_OK)
            snprintf(err, errlen, "the PBX's certificate does not chain to %s/cafile.pem: %s",
                     cfg->sip_tls_dir, X509_verify_cert_error_string(v));
        else
            snprintf(err, errlen, "TLS handshake failed: %s", tls_error(ebuf, sizeof ebuf));
        SSL_free(ssl);
        return NULL;
    }
    cert = SSL_get1_peer_certificate(ssl);
    if (strcmp(cfg->sip_tls_verify, "subject") == 0 && (!cert || !cert_names_host(cert, t->host))) {
        snprintf(err, errlen, "the PBX's certificate does not name %s (tls_verify = subject "
                              "wants a DNS name, sip: URI or CN equal to it)",
                 t->host);
        X509_free(cert);
        SSL_free(ssl);
        return NULL;
    }
    if (cert) {
        char cn[128] = "";
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
        snprintf(note, notelen, "; %s, certificate CN=%s, checked: %s", SSL_get_version(ssl),
                 cn, cfg->sip_tls_verify);
        X509_free(cert);
    }
    return ssl;
}

static void options_stream(const struct offhook_config *cfg, const struct sip_target *t,
                           bool tls, int timeout_ms, struct check_result *r)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    char err[384], phrase[128], server[96], note[200] = "";
    struct request rq;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    int fd, status;

    fd = check_tcp_connect(t->host, t->port, timeout_ms, err, sizeof err);
    if (fd < 0) {
        check_end(r, false, "cannot connect: %s", err);
        return;
    }
    if (tls && !(ssl = tls_start(cfg, t, fd, &ctx, note, sizeof note, err, sizeof err))) {
        check_end(r, false, "%s", err);
        goto out;
    }
    build_request(cfg, t, fd, &rq);
    if ((ssl ? SSL_write(ssl, rq.text, (int)rq.len) : send(fd, rq.text, rq.len, MSG_NOSIGNAL)) !=
        (ssize_t)rq.len) {
        check_end(r, false, "cannot send the OPTIONS: %s", strerror(errno));
        goto out;
    }
    status = read_stream(fd, ssl, &rq, deadline, phrase, sizeof phrase, server, sizeof server,
                         err, sizeof err);
    if (status < 0)
        check_end(r, false, "%s", err);
    else
        answered(r, status, phrase, server, note);
out:
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    SSL_CTX_free(ctx);
    close(fd);
}

/* ---- the check ------------------------------------------------------------------------ */

static bool listens_tcp(const struct offhook_config *cfg)
{
    for (int i = 0; i < cfg->sip_nlisten; i++) {
        const char *u = cfg->sip_listen_urls[i];
        if (strncmp(u, "sip:", 4) == 0 && (!strstr(u, ";transport=") || strstr(u, "=tcp")))
            return true;
    }
    return false;
}

static void one(const struct offhook_config *cfg, struct sip_target t, const char *transport,
                int timeout_ms, struct check_result *r)
{
    str_copy(t.transport, sizeof t.transport, transport);
    check_begin(r, "pbx", "%s %s%s%s:%d", transport, t.ipv6 ? "[" : "", t.host, t.ipv6 ? "]" : "",
                t.port);
    if (strcmp(transport, "udp") == 0)
        options_udp(cfg, &t, timeout_ms, r);
    else
        options_stream(cfg, &t, strcmp(transport, "tls") == 0, timeout_ms, r);
}

int check_pbx(const struct offhook_config *cfg, int timeout_ms, struct check_result *r,
              int max)
{
    struct sip_target t;
    char err[320];
    int n = 0;

    if (max < 1)
        return 0;
    if (sipcheck_parse_target(cfg->sip_pbx, &t, err, sizeof err) < 0) {
        check_begin(&r[0], "pbx", "%s", cfg->sip_pbx);
        check_end(&r[0], false, "%s", err);
        return 1;
    }
    one(cfg, t, t.transport, timeout_ms, &r[n++]);
    /* Sofia sends a request over TCP when it is too large for UDP, and a PBX may notify
     * over TCP: with TCP listening, that path is checked too. */
    if (!t.transport_set && listens_tcp(cfg) && n < max)
        one(cfg, t, "tcp", timeout_ms, &r[n++]);
    return n;
}
