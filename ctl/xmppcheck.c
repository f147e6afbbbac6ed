/* offhookctl check's XMPP side: an XEP-0114 handshake with the configured domain and
 * secret, and the tag scanner that reads the server's answers. Called by offhookctl.c. */
#include "xmppcheck.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "config.h"
#include "strutil.h"

#define XMPP_BUF 16384 /* a stream header and an error fit many times over */

/* ---- the scanner (pure) ------------------------------------------------------------- */

static const char *local_name(const char *name)
{
    const char *colon = strrchr(name, ':');

    return colon ? colon + 1 : name;
}

/* The value of attribute attr in a start tag's text (between the name and '>'). */
static bool tag_attr(const char *tag, size_t len, const char *attr, char *out, size_t outlen)
{
    size_t alen = strlen(attr);

    for (size_t i = 1; i + alen + 2 < len; i++) {
        char q;
        const char *v, *end;
        if ((tag[i - 1] != ' ' && tag[i - 1] != '\t' && tag[i - 1] != '\n' &&
             tag[i - 1] != '\r') ||
            memcmp(tag + i, attr, alen) != 0 || tag[i + alen] != '=')
            continue;
        q = tag[i + alen + 1];
        if (q != '\'' && q != '"')
            return false;
        v = tag + i + alen + 2;
        end = memchr(v, q, len - (size_t)(v - tag));
        if (!end)
            return false;
        check_printable(out, outlen, v, (size_t)(end - v));
        return true;
    }
    return false;
}

static void start_tag(struct xmpp_scan *st, const char *name, const char *tag, size_t len,
                      bool empty)
{
    const char *local = local_name(name);

    if (st->depth == 0) {
        /* The first element: the server's stream header (it stays open). */
        st->header = strcmp(local, "stream") == 0;
        if (st->header)
            tag_attr(tag, len, "id", st->id, sizeof st->id);
        st->depth = 1;
        return;
    }
    if (st->depth == 1) {
        if (strcmp(local, "handshake") == 0)
            st->handshake = true;
        else if (strcmp(local, "error") == 0)
            st->error = true;
    } else if (st->depth == 2 && st->error) {
        if (strcmp(local, "text") == 0)
            st->in_text = !empty;
        else if (!st->condition[0])
            str_copy(st->condition, sizeof st->condition, local);
    }
    if (!empty)
        st->depth++;
}

int xmppcheck_scan(struct xmpp_scan *st, const char *buf, size_t len, size_t *pos)
{
    size_t p = *pos;

    while (p < len) {
        const char *lt = memchr(buf + p, '<', len - p), *gt;
        size_t tlen;
        char name[64];
        bool end, empty;

        if (!lt) {
            if (st->in_text) {
                size_t have = strlen(st->text);
                check_printable(st->text + have, sizeof st->text - have, buf + p, len - p);
            }
            p = len;
            break;
        }
        if (st->in_text && lt > buf + p) {
            size_t have = strlen(st->text);
            check_printable(st->text + have, sizeof st->text - have, buf + p,
                            (size_t)(lt - (buf + p)));
        }
        p = (size_t)(lt - buf);
        /* The tag's end, outside quoted attribute values. */
        gt = NULL;
        for (size_t i = p + 1, q = 0; i < len && !gt; i++) {
            if (q) {
                if (buf[i] == (char)q)
                    q = 0;
            } else if (buf[i] == '\'' || buf[i] == '"') {
                q = (unsigned char)buf[i];
            } else if (buf[i] == '>') {
                gt = buf + i;
            }
        }
        if (!gt)
            break; /* incomplete: wait for more */
        tlen = (size_t)(gt - lt) + 1;
        if (lt[1] == '?' || lt[1] == '!') {
            p += tlen; /* the XML declaration, a comment */
            continue;
        }
        end = lt[1] == '/';
        empty = !end && gt[-1] == '/';
        {
            const char *n = lt + (end ? 2 : 1);
            size_t nl = 0;
            while (n + nl < gt && !strchr(" \t\r\n/", n[nl]))
                nl++;
            if (nl == 0 || nl >= sizeof name) {
                str_copy(st->condition, sizeof st->condition, "not XML");
                return -1;
            }
            memcpy(name, n, nl);
            name[nl] = '\0';
        }
        if (end) {
            if (st->depth > 0)
                st->depth--;
            if (st->in_text && strcmp(local_name(name), "text") == 0)
                st->in_text = false;
            if (st->depth == 0)
                st->closed = true;
        } else {
            start_tag(st, name, lt, tlen, empty);
        }
        p += tlen;
    }
    *pos = p;
    return 0;
}

void xmppcheck_handshake_hex(const char *id, const char *secret, char hex[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    hex[0] = '\0';
    if (!ctx)
        return;
    if (EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, id, strlen(id)) == 1 &&
        EVP_DigestUpdate(ctx, secret, strlen(secret)) == 1 &&
        EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 20) {
        for (unsigned i = 0; i < mdlen; i++)
            snprintf(hex + 2 * i, 3, "%02x", md[i]);
    }
    EVP_MD_CTX_free(ctx);
    explicit_bzero(md, sizeof md);
}

/* ---- the check ------------------------------------------------------------------------ */

/* Reads and scans until done(st) or the deadline. Returns 0, or -1 with why in err. */
static int read_until(int fd, char *buf, size_t *len, size_t *pos, struct xmpp_scan *st,
                      bool (*done)(const struct xmpp_scan *), int64_t deadline, char *err,
                      size_t errlen)
{
    while (!done(st)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, check_left_ms(deadline));
        ssize_t n;

        if (rc == 0) {
            snprintf(err, errlen, "no answer from the server in time");
            return -1;
        }
        if (*len >= XMPP_BUF - 1) {
            snprintf(err, errlen, "the server sent more than %d bytes without an answer",
                     XMPP_BUF);
            return -1;
        }
        n = rc < 0 ? -1 : recv(fd, buf + *len, XMPP_BUF - 1 - *len, 0);
        if (n < 0) {
            snprintf(err, errlen, "reading: %s", strerror(errno));
            return -1;
        }
        if (n == 0) {
            snprintf(err, errlen, "the server closed the connection");
            return -1;
        }
        *len += (size_t)n;
        buf[*len] = '\0';
        if (xmppcheck_scan(st, buf, *len, pos) < 0) {
            snprintf(err, errlen, "the server's answer is not XML");
            return -1;
        }
    }
    return 0;
}

static bool have_header(const struct xmpp_scan *st)
{
    return st->header || st->error || st->closed;
}

static bool have_verdict(const struct xmpp_scan *st)
{
    return st->handshake || (st->error && st->condition[0]) || st->closed;
}

static int send_all(int fd, const char *s, size_t len)
{
    while (len) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

/* An operator's reading of a stream error. */
static void error_verdict(struct check_result *r, const struct xmpp_scan *st,
                          const struct offhook_config *cfg)
{
    const char *c = st->condition;
    char said[200] = "";

    if (st->text[0])
        snprintf(said, sizeof said, " (\"%s\")", st->text);
    if (strcmp(c, "not-authorized") == 0)
        check_end(r, false,
                  "the server refused the secret for %s%s: [xmpp] secret (or secret_file) "
                  "differs from the server's component secret",
                  cfg->xmpp_domain, said);
    else if (strcmp(c, "host-unknown") == 0)
        check_end(r, false,
                  "the server has no component %s%s: check [xmpp] domain against its "
                  "component configuration",
                  cfg->xmpp_domain, said);
    else if (strcmp(c, "conflict") == 0)
        check_end(r, true,
                  "secret accepted; %s is already connected%s (offhook-component running)",
                  cfg->xmpp_domain, said);
    else if (strcmp(c, "invalid-namespace") == 0 || strcmp(c, "unsupported-stanza-type") == 0)
        check_end(r, false,
                  "not a component port (stream error %s%s): [xmpp] port is the server's "
                  "XEP-0114 listener, not its client port",
                  c, said);
    else
        check_end(r, false, "stream error %s%s", c[0] ? c : "(no condition)", said);
}

void check_xmpp(const struct offhook_config *cfg, int timeout_ms, struct check_result *r)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    struct xmpp_scan st = {0};
    char buf[XMPP_BUF], err[256], hex[41], msg[256];
    size_t len = 0, pos = 0;
    int fd, n;

    check_begin(r, "xmpp", "%s:%ld %s", cfg->xmpp_host, cfg->xmpp_port, cfg->xmpp_domain);
    fd = check_tcp_connect(cfg->xmpp_host, (int)cfg->xmpp_port, timeout_ms, err, sizeof err);
    if (fd < 0) {
        check_end(r, false, "cannot connect: %s (is the XMPP server's component listener on "
                            "[xmpp] host and port?)",
                  err);
        return;
    }
    n = snprintf(msg, sizeof msg,
                 "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                 "xmlns:stream='http://etherx.jabber.org/streams' to='%s'>",
                 cfg->xmpp_domain);
    if (send_all(fd, msg, (size_t)n) < 0) {
        check_end(r, false, "sending the stream header: %s", strerror(errno));
        goto out;
    }
    if (read_until(fd, buf, &len, &pos, &st, have_header, deadline, err, sizeof err) < 0 &&
        !st.error) {
        check_end(r, false, "%s, before the stream header", err);
        goto out;
    }
    if (st.error) {
        /* Refused before any handshake (host-unknown): the error may still be arriving. */
        (void)read_until(fd, buf, &len, &pos, &st, have_verdict, deadline, err, sizeof err);
        error_verdict(r, &st, cfg);
        goto out;
    }
    if (!st.header || !st.id[0]) {
        check_end(r, false, "no XEP-0114 stream header with an id: is [xmpp] port the "
                            "server's component port?");
        goto out;
    }
    xmppcheck_handshake_hex(st.id, cfg->xmpp_secret, hex);
    n = snprintf(msg, sizeof msg, "<handshake>%s</handshake>", hex);
    explicit_bzero(hex, sizeof hex);
    if (send_all(fd, msg, (size_t)n) < 0) {
        explicit_bzero(msg, sizeof msg);
        check_end(r, false, "sending the handshake: %s", strerror(errno));
        goto out;
    }
    explicit_bzero(msg, sizeof msg);
    if (read_until(fd, buf, &len, &pos, &st, have_verdict, deadline, err, sizeof err) < 0 &&
        !st.error) {
        check_end(r, false, "%s, after the handshake", err);
        goto out;
    }
    if (st.handshake)
        check_end(r, true, "handshake accepted for %s", cfg->xmpp_domain);
    else if (st.error)
        error_verdict(r, &st, cfg);
    else
        check_end(r, false, "the server closed the stream without accepting the handshake");
    if (st.handshake)
        (void)send_all(fd, "</stream:stream>", 16);
out:
    close(fd);
}
