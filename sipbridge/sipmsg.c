/* One SIP datagram parsed into slices, and stateless responses (see sipmsg.h). */
#include "sipmsg.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *const method_names[SIP_M__COUNT] = {
    [SIP_M_OTHER] = "", [SIP_M_NOTIFY] = "NOTIFY", [SIP_M_OPTIONS] = "OPTIONS",
    [SIP_M_SUBSCRIBE] = "SUBSCRIBE", [SIP_M_INVITE] = "INVITE", [SIP_M_ACK] = "ACK",
    [SIP_M_BYE] = "BYE", [SIP_M_CANCEL] = "CANCEL", [SIP_M_MESSAGE] = "MESSAGE",
    [SIP_M_REFER] = "REFER", [SIP_M_REGISTER] = "REGISTER", [SIP_M_PUBLISH] = "PUBLISH",
    [SIP_M_INFO] = "INFO", [SIP_M_UPDATE] = "UPDATE", [SIP_M_PRACK] = "PRACK",
};

const char *sipmsg_method_name(enum sipmsg_method m)
{
    return (unsigned)m < SIP_M__COUNT ? method_names[m] : "";
}

bool sip_str_eq(struct sip_str s, const char *w)
{
    size_t n = strlen(w);

    return s.p && s.n == n && strncasecmp(s.p, w, n) == 0;
}

long sip_str_long(struct sip_str s, long max)
{
    long v = 0;

    if (!s.p || s.n == 0 || s.n > 10)
        return -1;
    for (size_t i = 0; i < s.n; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return -1;
        v = v * 10 + (s.p[i] - '0');
    }
    return v <= max ? v : -1;
}

/* ---- lexical helpers ------------------------------------------------------------------ */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

/* RFC 3261 token characters. */
static bool is_token(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-.!%*_+`'~", c) != NULL;
}

static struct sip_str trim(const char *p, const char *end)
{
    while (p < end && is_ws(*p))
        p++;
    while (end > p && is_ws(end[-1]))
        end--;
    return (struct sip_str){p, (size_t)(end - p)};
}

/* Past a quoted string starting at p (on the opening quote); NULL if it never ends. */
static const char *skip_quoted(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\') {
            if (++p >= end)
                return NULL;
        } else if (*p == '"') {
            return p + 1;
        }
    }
    return NULL;
}

/* The first position in [p, end) of c outside quoted strings and <...>, or end. NULL if
 * a quote or bracket is unbalanced. */
static const char *find_outside(const char *p, const char *end, char c)
{
    while (p < end) {
        if (*p == '"') {
            p = skip_quoted(p, end);
            if (!p)
                return NULL;
            continue;
        }
        if (*p == '<') {
            const char *gt = memchr(p, '>', (size_t)(end - p));
            if (!gt)
                return NULL;
            if (c == '<')
                return p;
            p = gt + 1;
            continue;
        }
        if (*p == c)
            return p;
        p++;
    }
    return end;
}

/* Walks ";name[=value]" parameters in [p, end): calls back for each, trimmed. Returns -1
 * on a malformed parameter. */
typedef void param_fn(void *arg, struct sip_str name, struct sip_str value);

static int params(const char *p, const char *end, param_fn *fn, void *arg)
{
    while (p < end) {
        const char *semi, *eq;
        struct sip_str name, value = {NULL, 0};

        while (p < end && is_ws(*p))
            p++;
        if (p == end)
            break;
        if (*p != ';')
            return -1;
        p++;
        semi = find_outside(p, end, ';');
        if (!semi)
            return -1;
        eq = memchr(p, '=', (size_t)(semi - p));
        name = trim(p, eq ? eq : semi);
        if (name.n == 0)
            return -1;
        for (size_t i = 0; i < name.n; i++) {
            if (!is_token(name.p[i]))
                return -1;
        }
        if (eq) {
            value = trim(eq + 1, semi);
            if (value.n >= 2 && value.p[0] == '"') { /* the quotes are not the value */
                value.p++;
                value.n -= 2;
            }
        }
        fn(arg, name, value);
        p = semi;
    }
    return 0;
}

/* ---- header values -------------------------------------------------------------------- */

struct tag_arg {
    struct sip_str *tag;
    int dup;
};

static void tag_param(void *arg, struct sip_str name, struct sip_str value)
{
    struct tag_arg *t = arg;

    if (!sip_str_eq(name, "tag"))
        return;
    if (t->tag->p)
        t->dup = 1;
    *t->tag = value;
}

/* From / To: name-addr or addr-spec, then header parameters; the tag is one of them.
 * Without <>, RFC 3261 20.10 makes every ';' after the URI start a header parameter. */
static int addr_tag(struct sip_str v, struct sip_str *tag)
{
    const char *end = v.p + v.n, *lt = find_outside(v.p, end, '<'), *pstart;
    struct tag_arg t = {tag, 0};

    if (!lt)
        return -1;
    if (lt < end) {
        pstart = memchr(lt, '>', (size_t)(end - lt));
        if (!pstart)
            return -1;
        pstart++;
    } else {
        pstart = memchr(v.p, ';', v.n);
        if (!pstart)
            pstart = end;
    }
    if (params(pstart, end, tag_param, &t) < 0 || t.dup)
        return -1;
    if (tag->p && tag->n == 0)
        return -1;
    return 0;
}

/* A SIP or SIPS URI sipbridge may send requests to: it becomes a request line or a Route
 * value verbatim, so no white space, control character, quote or angle bracket (RFC 3261
 * 25.1 allows none of them unescaped). Anything else (tel:, "part headers.1:5060>") is
 * not a target. */
static bool sip_uri_ok(struct sip_str u)
{
    size_t skip;

    if (u.n > 4 && strncasecmp(u.p, "sip:", 4) == 0)
        skip = 4;
    else if (u.n > 5 && strncasecmp(u.p, "sips:", 5) == 0)
        skip = 5;
    else
        return false;
    for (size_t i = skip; i < u.n; i++) {
        unsigned char c = (unsigned char)u.p[i];
        if (c <= 0x20 || c >= 0x7f || c == '<' || c == '>' || c == '"')
            return false;
    }
    return true;
}

/* The URI of a name-addr or addr-spec (the first of a comma-separated list). */
static int addr_uri(struct sip_str v, struct sip_str *uri)
{
    const char *end = v.p + v.n, *comma = find_outside(v.p, end, ','), *lt;

    if (!comma)
        return -1;
    end = comma;
    lt = find_outside(v.p, end, '<');
    if (!lt)
        return -1;
    if (lt < end) {
        const char *gt = memchr(lt, '>', (size_t)(end - lt));
        if (!gt)
            return -1;
        *uri = trim(lt + 1, gt);
    } else {
        const char *semi = memchr(v.p, ';', (size_t)(end - v.p));
        *uri = trim(v.p, semi ? semi : end);
    }
    return sip_uri_ok(*uri) ? 0 : -1;
}

struct sub_arg {
    struct sip_msg *m;
};

static void substate_param(void *arg, struct sip_str name, struct sip_str value)
{
    struct sip_msg *m = arg;

    if (sip_str_eq(name, "reason"))
        m->reason = value;
    else if (sip_str_eq(name, "expires"))
        m->sub_expires = sip_str_long(value, 1L << 30);
    else if (sip_str_eq(name, "retry-after"))
        m->retry_after = sip_str_long(value, 1L << 30);
}

static void event_param(void *arg, struct sip_str name, struct sip_str value)
{
    struct sip_msg *m = arg;

    if (sip_str_eq(name, "id"))
        m->event_id = value;
}

/* "token;params": the token into *tok, parameters to fn. */
static int token_params(struct sip_str v, struct sip_str *tok, param_fn *fn, void *arg)
{
    const char *end = v.p + v.n, *p = v.p;

    while (p < end && is_token(*p))
        p++;
    if (p == v.p)
        return -1;
    *tok = (struct sip_str){v.p, (size_t)(p - v.p)};
    return params(p, end, fn, arg);
}

struct via_arg {
    struct sip_msg *m;
};

static void via_param(void *arg, struct sip_str name, struct sip_str value)
{
    struct sip_msg *m = arg;

    if (sip_str_eq(name, "rport") && !value.p)
        m->via_rport = true;
    else if (sip_str_eq(name, "branch"))
        m->via_branch = value;
}

/* The top via-parm: "SIP/2.0/UDP host[:port];params". */
static int top_via(struct sip_msg *m, struct sip_str line)
{
    const char *end = line.p + line.n, *comma = find_outside(line.p, end, ','), *p, *slash;
    const char *hp, *hend, *semi;

    if (!comma)
        return -1;
    m->top_via = trim(line.p, comma);
    p = m->top_via.p;
    end = p + m->top_via.n;
    if ((size_t)(end - p) < 8 || strncasecmp(p, "SIP", 3) != 0)
        return -1;
    /* SIP / 2.0 / transport, white space allowed around the slashes */
    slash = memchr(p, '/', (size_t)(end - p));
    if (!slash || !(slash = memchr(slash + 1, '/', (size_t)(end - slash - 1))))
        return -1;
    p = slash + 1;
    while (p < end && is_ws(*p))
        p++;
    hp = p;
    while (p < end && is_token(*p))
        p++;
    m->via_transport = (struct sip_str){hp, (size_t)(p - hp)};
    if (m->via_transport.n == 0)
        return -1;
    while (p < end && is_ws(*p))
        p++;
    semi = memchr(p, ';', (size_t)(end - p));
    hend = semi ? semi : end;
    hp = p;
    if (hp < hend && *hp == '[') {
        const char *rb = memchr(hp, ']', (size_t)(hend - hp));
        if (!rb)
            return -1;
        p = rb + 1;
    } else {
        p = hp;
        while (p < hend && *p != ':' && !is_ws(*p))
            p++;
    }
    m->via_host = (struct sip_str){hp, (size_t)(p - hp)};
    if (m->via_host.n == 0)
        return -1;
    m->via_port = -1;
    if (p < hend && *p == ':') {
        struct sip_str port = trim(p + 1, hend);
        m->via_port = sip_str_long(port, 65535);
        if (m->via_port <= 0)
            return -1;
    } else if (trim(p, hend).n != 0) {
        return -1;
    }
    return params(hend, end, via_param, m);
}

/* Record-Route: "<uri>;params, <uri>" entries (possibly over several lines). */
static int record_route(struct sip_msg *m, struct sip_str v)
{
    const char *p = v.p, *end = v.p + v.n;

    while (p < end) {
        const char *comma = find_outside(p, end, ','), *gt;
        struct sip_str e;

        if (!comma)
            return -1;
        e = trim(p, comma);
        if (e.n < 3 || e.p[0] != '<')
            return -1;
        gt = memchr(e.p, '>', e.n);
        if (!gt || !sip_uri_ok(trim(e.p + 1, gt)))
            return -1;
        if (m->nroute == SIPMSG_MAX_ROUTE)
            return -1;
        m->route[m->nroute++] = e;
        p = comma < end ? comma + 1 : end;
    }
    return 0;
}

/* ---- header dispatch ------------------------------------------------------------------ */

enum hdr {
    H_OTHER, H_VIA, H_FROM, H_TO, H_CALL_ID, H_CSEQ, H_EVENT, H_SUBSTATE, H_CTYPE,
    H_CLEN, H_CONTACT, H_RROUTE, H_EXPIRES, H_MIN_EXPIRES, H_RETRY_AFTER, H_WWW_AUTH,
    H_PROXY_AUTH
};

static enum hdr header_kind(struct sip_str name)
{
    static const struct {
        const char *name;
        char compact;
        enum hdr h;
    } known[] = {
        {"via", 'v', H_VIA},          {"from", 'f', H_FROM},
        {"to", 't', H_TO},            {"call-id", 'i', H_CALL_ID},
        {"cseq", 0, H_CSEQ},          {"event", 'o', H_EVENT},
        {"subscription-state", 0, H_SUBSTATE},
        {"content-type", 'c', H_CTYPE},
        {"content-length", 'l', H_CLEN},
        {"contact", 'm', H_CONTACT},  {"record-route", 0, H_RROUTE},
        {"expires", 0, H_EXPIRES},    {"min-expires", 0, H_MIN_EXPIRES},
        {"retry-after", 0, H_RETRY_AFTER},
        {"www-authenticate", 0, H_WWW_AUTH},
        {"proxy-authenticate", 0, H_PROXY_AUTH},
    };

    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (name.n == 1 && known[i].compact && (name.p[0] | 0x20) == known[i].compact)
            return known[i].h;
        if (sip_str_eq(name, known[i].name))
            return known[i].h;
    }
    return H_OTHER;
}

static int once(struct sip_str *slot, struct sip_str v, const char **err)
{
    if (slot->p) {
        *err = "a header that must appear once appears twice";
        return -1;
    }
    *slot = v;
    return 0;
}

static int header(struct sip_msg *m, struct sip_str name, struct sip_str v, long *clen,
                  const char **err)
{
    switch (header_kind(name)) {
    case H_VIA:
        if (m->nvia == SIPMSG_MAX_VIA) {
            *err = "too many Via headers";
            return -1;
        }
        if (m->nvia == 0 && top_via(m, v) < 0) {
            *err = "malformed Via";
            return -1;
        }
        m->via[m->nvia++] = v;
        return 0;
    case H_FROM:
        if (once(&m->from, v, err) < 0)
            return -1;
        if (addr_tag(v, &m->from_tag) < 0) {
            *err = "malformed From";
            return -1;
        }
        return 0;
    case H_TO:
        if (once(&m->to, v, err) < 0)
            return -1;
        if (addr_tag(v, &m->to_tag) < 0) {
            *err = "malformed To";
            return -1;
        }
        return 0;
    case H_CALL_ID:
        if (once(&m->call_id, v, err) < 0)
            return -1;
        for (size_t i = 0; i < v.n; i++) {
            if (is_ws(v.p[i]) || v.p[i] == ',' || (unsigned char)v.p[i] < 0x21) {
                *err = "malformed Call-ID";
                return -1;
            }
        }
        return 0;
    case H_CSEQ: {
        const char *p = v.p, *end = v.p + v.n, *num;
        long n;

        if (once(&m->cseq_value, v, err) < 0)
            return -1;
        num = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        n = sip_str_long((struct sip_str){num, (size_t)(p - num)}, 0x7fffffffL);
        m->cseq_method = trim(p, end);
        if (n < 0 || p == end || !is_ws(*p) || m->cseq_method.n == 0) {
            *err = "malformed CSeq";
            return -1;
        }
        m->cseq = (uint32_t)n;
        return 0;
    }
    case H_EVENT:
        if (m->event.p) {
            *err = "a header that must appear once appears twice";
            return -1;
        }
        if (token_params(v, &m->event, event_param, m) < 0) {
            *err = "malformed Event";
            return -1;
        }
        return 0;
    case H_SUBSTATE:
        if (m->substate.p) {
            *err = "a header that must appear once appears twice";
            return -1;
        }
        if (token_params(v, &m->substate, substate_param, m) < 0) {
            *err = "malformed Subscription-State";
            return -1;
        }
        return 0;
    case H_CTYPE:
        return once(&m->content_type, v, err);
    case H_CLEN:
        if (*clen >= 0) {
            *err = "a header that must appear once appears twice";
            return -1;
        }
        *clen = sip_str_long(v, 1L << 24);
        if (*clen < 0) {
            *err = "malformed Content-Length";
            return -1;
        }
        return 0;
    case H_CONTACT:
        if (!m->contact.p && addr_uri(v, &m->contact) < 0) {
            *err = "malformed Contact";
            return -1;
        }
        return 0;
    case H_RROUTE:
        if (record_route(m, v) < 0) {
            *err = "malformed or too many Record-Route";
            return -1;
        }
        return 0;
    case H_EXPIRES:
        m->expires = sip_str_long(v, 1L << 30);
        return 0;
    case H_MIN_EXPIRES:
        m->min_expires = sip_str_long(v, 1L << 30);
        return 0;
    case H_RETRY_AFTER: {
        /* delta-seconds, then an optional comment and parameters */
        const char *p = v.p, *end = v.p + v.n;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        m->retry_after_hdr = sip_str_long((struct sip_str){v.p, (size_t)(p - v.p)}, 1L << 30);
        return 0;
    }
    case H_WWW_AUTH:
        if (m->nwww_auth < SIPMSG_MAX_AUTH)
            m->www_auth[m->nwww_auth++] = v;
        return 0;
    case H_PROXY_AUTH:
        if (m->nproxy_auth < SIPMSG_MAX_AUTH)
            m->proxy_auth[m->nproxy_auth++] = v;
        return 0;
    case H_OTHER:
        return 0;
    }
    return 0;
}

/* ---- the message ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    enum sipmsg_method m;
} methods[] = {
    {"NOTIFY", SIP_M_NOTIFY},   {"OPTIONS", SIP_M_OPTIONS}, {"SUBSCRIBE", SIP_M_SUBSCRIBE},
    {"INVITE", SIP_M_INVITE},   {"ACK", SIP_M_ACK},         {"BYE", SIP_M_BYE},
    {"CANCEL", SIP_M_CANCEL},   {"MESSAGE", SIP_M_MESSAGE}, {"REFER", SIP_M_REFER},
    {"REGISTER", SIP_M_REGISTER}, {"PUBLISH", SIP_M_PUBLISH}, {"INFO", SIP_M_INFO},
    {"UPDATE", SIP_M_UPDATE},   {"PRACK", SIP_M_PRACK},
};

static int start_line(struct sip_msg *m, const char *p, const char *end, const char **err)
{
    const char *sp1, *sp2;

    if ((size_t)(end - p) > 8 && memcmp(p, "SIP/2.0 ", 8) == 0) {
        m->request = false;
        m->status = (int)sip_str_long((struct sip_str){p + 8, 3}, 699);
        if ((size_t)(end - p) < 11 || m->status < 100 || (end - p > 11 && p[11] != ' ')) {
            *err = "malformed status line";
            return -1;
        }
        m->phrase = end - p > 12 ? (struct sip_str){p + 12, (size_t)(end - p - 12)}
                                 : (struct sip_str){"", 0};
        return 0;
    }
    m->request = true;
    sp1 = memchr(p, ' ', (size_t)(end - p));
    if (!sp1 || sp1 == p) {
        *err = "malformed request line";
        return -1;
    }
    for (const char *c = p; c < sp1; c++) {
        if (!is_token(*c)) {
            *err = "malformed request line";
            return -1;
        }
    }
    m->method_name = (struct sip_str){p, (size_t)(sp1 - p)};
    m->method = SIP_M_OTHER;
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        /* Method names are case-sensitive (RFC 3261 7.1). */
        if (m->method_name.n == strlen(methods[i].name) &&
            memcmp(p, methods[i].name, m->method_name.n) == 0)
            m->method = methods[i].m;
    }
    sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
    if (!sp2 || sp2 == sp1 + 1 || (size_t)(end - sp2 - 1) != 7 ||
        memcmp(sp2 + 1, "SIP/2.0", 7) != 0) {
        *err = "malformed request line or not SIP/2.0";
        return -1;
    }
    m->ruri = (struct sip_str){sp1 + 1, (size_t)(sp2 - sp1 - 1)};
    return 0;
}

int sipmsg_parse(char *buf, size_t len, struct sip_msg *m, const char **err)
{
    char *p = buf, *end = buf + len, *hdr_end, *line;
    long clen = -1;
    int nlines = 0;

    memset(m, 0, sizeof *m);
    m->sub_expires = m->retry_after = m->expires = -1;
    m->min_expires = m->retry_after_hdr = -1;
    m->via_port = -1;
    *err = NULL;
    /* Blank lines before the start line are tolerated (RFC 3261 7.5); keepalives are
     * nothing but those. */
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    if (p == end) {
        *err = "empty";
        return -1;
    }
    hdr_end = NULL;
    for (char *c = p; c + 3 < end; c++) {
        if (c[0] == '\r' && c[1] == '\n' && c[2] == '\r' && c[3] == '\n') {
            hdr_end = c + 2; /* the CRLF ending the last header line */
            break;
        }
    }
    if (!hdr_end) {
        *err = "no end of headers";
        return -1;
    }
    if (memchr(p, '\0', (size_t)(hdr_end - p))) {
        *err = "NUL in the headers";
        return -1;
    }
    /* Unfold: CRLF followed by white space continues the line (RFC 3261 7.3.1). */
    for (char *c = p; c + 2 < hdr_end; c++) {
        if (c[0] == '\r' && c[1] == '\n' && is_ws(c[2]))
            c[0] = c[1] = ' ';
    }
    line = memchr(p, '\r', (size_t)(hdr_end - p));
    if (!line || line[1] != '\n' || start_line(m, p, line, err) < 0) {
        if (!*err)
            *err = "malformed start line";
        return -1;
    }
    for (line += 2; line < hdr_end;) {
        char *eol = memchr(line, '\r', (size_t)(hdr_end - line)), *colon;
        struct sip_str name, value;

        if (!eol || eol[1] != '\n') {
            *err = "bare CR in the headers";
            return -1;
        }
        if (++nlines > SIPMSG_MAX_HEADERS) {
            *err = "too many header lines";
            return -1;
        }
        colon = memchr(line, ':', (size_t)(eol - line));
        if (!colon) {
            *err = "header line without a colon";
            return -1;
        }
        name = trim(line, colon);
        if (name.n == 0) {
            *err = "header line without a name";
            return -1;
        }
        for (size_t i = 0; i < name.n; i++) {
            if (!is_token(name.p[i])) {
                *err = "malformed header name";
                return -1;
            }
        }
        value = trim(colon + 1, eol);
        if (header(m, name, value, &clen, err) < 0)
            return -1;
        line = eol + 2;
    }
    p = hdr_end + 2;
    if (clen > end - p) {
        *err = "body shorter than Content-Length";
        return -1;
    }
    if (clen < 0)
        clen = end - p; /* over UDP the datagram ends the body */
    m->body = clen ? (struct sip_str){p, (size_t)clen} : (struct sip_str){NULL, 0};
    p[clen] = '\0'; /* body parsers want a terminated string; buf has room (see .h) */
    if (!m->nvia || !m->from.p || !m->to.p || !m->call_id.p || !m->cseq_value.p ||
        m->call_id.n == 0) {
        *err = "a mandatory header (Via, From, To, Call-ID, CSeq) is missing";
        return -1;
    }
    if (m->request && (m->cseq_method.n != m->method_name.n ||
                       memcmp(m->cseq_method.p, m->method_name.p, m->cseq_method.n) != 0)) {
        *err = "CSeq method differs from the request's";
        return -1;
    }
    return 0;
}

/* ---- responses ------------------------------------------------------------------------ */

struct out {
    char *p;
    size_t len, used;
    bool full;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->full || n > o->len - o->used) {
        o->full = true;
        return;
    }
    memcpy(o->p + o->used, s, n);
    o->used += n;
}

static void puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_str(struct out *o, struct sip_str s)
{
    put(o, s.p, s.n);
}

/* The top via-parm with received= (its host is not the source address) and rport= (it
 * asked) set: RFC 3261 18.2.1, RFC 3581 4. An existing received= is replaced. */
static void put_top_via(struct out *o, const struct sip_msg *req, const char *src_ip,
                        unsigned src_port)
{
    const char *p = req->top_via.p, *end = p + req->top_via.n;
    const char *semi = find_outside(p, end, ';');
    char num[16];
    bool same_host = src_ip && req->via_host.n == strlen(src_ip) &&
                     strncasecmp(req->via_host.p, src_ip, req->via_host.n) == 0;

    if (!semi)
        semi = end;
    put(o, p, (size_t)(semi - p));
    while (semi < end) {
        const char *next = find_outside(semi + 1, end, ';'), *eq;
        struct sip_str name;

        if (!next)
            next = end;
        eq = memchr(semi + 1, '=', (size_t)(next - semi - 1));
        name = trim(semi + 1, eq ? eq : next);
        if (sip_str_eq(name, "received")) {
            semi = next;
            continue;
        }
        if (sip_str_eq(name, "rport") && !eq && src_ip) {
            snprintf(num, sizeof num, ";rport=%u", src_port);
            puts_(o, num);
        } else {
            put(o, semi, (size_t)(next - semi));
        }
        semi = next;
    }
    if (src_ip && (!same_host || req->via_rport)) {
        puts_(o, ";received=");
        puts_(o, src_ip);
    }
}

size_t sipmsg_response(const struct sip_msg *req, int status, const char *phrase,
                       const char *to_tag, const char *src_ip, unsigned src_port,
                       const char *extra, char *out, size_t outlen)
{
    struct out o = {out, outlen, 0, false};
    char line[64];
    const char *rest, *vend;

    snprintf(line, sizeof line, "SIP/2.0 %d ", status);
    puts_(&o, line);
    puts_(&o, phrase);
    puts_(&o, "\r\nVia: ");
    put_top_via(&o, req, src_ip, src_port);
    /* The rest of the first Via line (other via-parms on it), then the other lines. */
    rest = req->top_via.p + req->top_via.n;
    vend = req->via[0].p + req->via[0].n;
    if (rest < vend)
        put(&o, rest, (size_t)(vend - rest));
    for (int i = 1; i < req->nvia; i++) {
        puts_(&o, "\r\nVia: ");
        put_str(&o, req->via[i]);
    }
    puts_(&o, "\r\nFrom: ");
    put_str(&o, req->from);
    puts_(&o, "\r\nTo: ");
    put_str(&o, req->to);
    if (!req->to_tag.p && status > 100 && to_tag) {
        puts_(&o, ";tag=");
        puts_(&o, to_tag);
    }
    puts_(&o, "\r\nCall-ID: ");
    put_str(&o, req->call_id);
    puts_(&o, "\r\nCSeq: ");
    put_str(&o, req->cseq_value);
    puts_(&o, "\r\n");
    if (extra)
        puts_(&o, extra);
    puts_(&o, "Content-Length: 0\r\n\r\n");
    return o.full ? 0 : o.used;
}

unsigned sipmsg_response_port(const struct sip_msg *req, unsigned src_port)
{
    if (req->via_rport)
        return src_port;
    return req->via_port > 0 ? (unsigned)req->via_port : 5060;
}
