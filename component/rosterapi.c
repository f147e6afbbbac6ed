/* Roster items through ejabberd's HTTP API (see rosterapi.h):
 *
 *   POST <path>/add_rosteritem    {"localuser":"bob","localhost":"example.com",
 *                                  "user":"alice","host":"phone.example.com",
 *                                  "nick":"Alice (phone)","group":"Sales;Support",
 *                                  "subs":"to"}
 *   POST <path>/delete_rosteritem {"localuser":..,"localhost":..,"user":..,"host":..}
 *
 * ejabberd answers 200 with 0 when done (a JSON error and 4xx otherwise); both commands
 * push the change to the user's online sessions. Requests go round-robin over a few
 * keep-alive connections (libevent's client queues them per connection). */
#include "rosterapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "sbuf.h"
#include "strutil.h"

#define NCONNS 4             /* keep-alive connections to the API */
#define TIMEOUT_S 10         /* per request */
#define BODY_MAX 4096        /* of an answer, read */

struct call {
    struct rosterapi *a;
    unsigned long cookie;
    struct evhttp_request *req;
    struct call *prev, *next; /* the calls out, so that free can drop them */
};

struct rosterapi {
    struct event_base *base;
    struct evdns_base *dns;
    struct rosterapi_ops ops;
    void *arg;
    struct evhttp_connection *conns[NCONNS];
    unsigned next_conn;
    char host[256];
    int port;
    char path[256];          /* without a trailing '/' */
    char host_header[300];
    char auth[512];          /* "Basic <base64>", or "" */
    struct call *calls;
};

static void b64(const unsigned char *in, size_t n, char *out, size_t outlen)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;

    for (size_t i = 0; i < n && o + 5 < outlen; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = t[v >> 18 & 63];
        out[o++] = t[v >> 12 & 63];
        out[o++] = i + 1 < n ? t[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? t[v & 63] : '=';
    }
    out[o] = '\0';
}

/* A JSON string: quotes, backslashes and control characters escaped (the text is UTF-8
 * already: names and groups are checked where they come from). */
static void json_str(struct sbuf *b, const char *s)
{
    sbuf_puts(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sbuf_printf(b, "\\%c", c);
        else if (c < 0x20)
            sbuf_printf(b, "\\u%04x", c);
        else
            sbuf_append(b, s, 1);
    }
    sbuf_puts(b, "\"");
}

static void json_kv(struct sbuf *b, const char *k, const char *v, bool first)
{
    if (!first)
        sbuf_puts(b, ",");
    json_str(b, k);
    sbuf_puts(b, ":");
    json_str(b, v);
}

/* "local@domain" -> local, domain (copies into the buffers). */
static bool split_jid(const char *jid, char *local, size_t llen, char *domain, size_t dlen)
{
    const char *at = strchr(jid, '@');

    if (!at || (size_t)(at - jid) >= llen || strlen(at + 1) >= dlen)
        return false;
    memcpy(local, jid, (size_t)(at - jid));
    local[at - jid] = '\0';
    str_copy(domain, dlen, at + 1);
    return true;
}

static void call_unlink(struct rosterapi *a, struct call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        a->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

static void on_answer(struct evhttp_request *req, void *arg)
{
    struct call *c = arg;
    struct rosterapi *a = c->a;
    char body[BODY_MAX + 1] = "", why[BODY_MAX + 64];
    int code = req ? evhttp_request_get_response_code(req) : 0;

    if (req) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        size_t n = evbuffer_get_length(in);
        if (n > BODY_MAX)
            n = BODY_MAX;
        evbuffer_copyout(in, body, n);
        body[n] = '\0';
    }
    call_unlink(a, c);
    if (code == 200 && strcmp(str_trim(body), "0") == 0) {
        a->ops.on_done(a->arg, c->cookie, true, NULL);
    } else {
        if (code)
            snprintf(why, sizeof why, "api: HTTP %d %.200s", code, str_trim(body));
        else
            snprintf(why, sizeof why, "api: no answer from %s:%d", a->host, a->port);
        a->ops.on_done(a->arg, c->cookie, false, why);
    }
    free(c);
}

int rosterapi_write(struct rosterapi *a, unsigned long cookie, const char *user,
                    const char *contact, const struct rosterplan_item *it)
{
    char lu[1024], ld[1024], cu[1024], cd[1024], uri[320];
    struct evhttp_connection *conn = a->conns[a->next_conn++ % NCONNS];
    struct evhttp_request *req;
    struct evkeyvalq *headers;
    struct sbuf body;
    struct call *c;

    if (!split_jid(user, lu, sizeof lu, ld, sizeof ld) ||
        !split_jid(contact, cu, sizeof cu, cd, sizeof cd))
        return -1;
    sbuf_init(&body);
    sbuf_puts(&body, "{");
    json_kv(&body, "localuser", lu, true);
    json_kv(&body, "localhost", ld, false);
    json_kv(&body, "user", cu, false);
    json_kv(&body, "host", cd, false);
    if (it) {
        struct sbuf groups;
        sbuf_init(&groups);
        /* ejabberd splits the groups on ';': one inside a group name becomes ','. */
        for (int i = 0; i < it->ngroups; i++) {
            if (i)
                sbuf_puts(&groups, ";");
            for (const char *p = it->groups[i]; *p; p++)
                sbuf_append(&groups, *p == ';' ? "," : p, 1);
        }
        json_kv(&body, "nick", it->name, false);
        json_kv(&body, "group", groups.data ? groups.data : "", false);
        json_kv(&body, "subs", "to", false);
        sbuf_free(&groups);
    }
    sbuf_puts(&body, "}");
    snprintf(uri, sizeof uri, "%s/%s", a->path, it ? "add_rosteritem" : "delete_rosteritem");
    c = xcalloc(1, sizeof *c);
    c->a = a;
    c->cookie = cookie;
    req = evhttp_request_new(on_answer, c);
    headers = evhttp_request_get_output_headers(req);
    evhttp_add_header(headers, "Host", a->host_header);
    evhttp_add_header(headers, "Content-Type", "application/json");
    if (a->auth[0])
        evhttp_add_header(headers, "Authorization", a->auth);
    evbuffer_add(evhttp_request_get_output_buffer(req), body.data, body.len);
    sbuf_free(&body);
    c->req = req;
    if (evhttp_make_request(conn, req, EVHTTP_REQ_POST, uri) < 0) {
        /* libevent freed req */
        free(c);
        return -1;
    }
    c->next = a->calls;
    if (a->calls)
        a->calls->prev = c;
    a->calls = c;
    return 0;
}

struct rosterapi *rosterapi_new(struct event_base *base, const struct offhook_config *cfg,
                                const struct rosterapi_ops *ops, void *arg)
{
    struct evhttp_uri *u = evhttp_uri_parse(cfg->roster_api);
    struct rosterapi *a;
    const char *host = u ? evhttp_uri_get_host(u) : NULL, *path;
    size_t hl;

    if (!u || !host || !host[0]) {
        log_err("roster", "event=roster_api_unusable url=%s reason=\"not an http://HOST[:PORT]/PATH "
                          "URL\"",
                log_q(cfg->roster_api));
        if (u)
            evhttp_uri_free(u);
        return NULL;
    }
    a = xcalloc(1, sizeof *a);
    a->base = base;
    a->ops = *ops;
    a->arg = arg;
    /* An IPv6 literal comes in brackets. */
    hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']')
        snprintf(a->host, sizeof a->host, "%.*s", (int)(hl - 2), host + 1);
    else
        str_copy(a->host, sizeof a->host, host);
    a->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 80;
    path = evhttp_uri_get_path(u);
    str_copy(a->path, sizeof a->path, path && path[0] ? path : "");
    hl = strlen(a->path);
    if (hl && a->path[hl - 1] == '/')
        a->path[hl - 1] = '\0';
    snprintf(a->host_header, sizeof a->host_header, "%s:%d", host, a->port);
    evhttp_uri_free(u);
    if (cfg->roster_api_user[0]) {
        char cred[1024];
        size_t n = (size_t)snprintf(cred, sizeof cred, "%s:%s", cfg->roster_api_user,
                                    cfg->roster_api_password);
        snprintf(a->auth, sizeof a->auth, "Basic ");
        b64((const unsigned char *)cred, n < sizeof cred ? n : sizeof cred - 1, a->auth + 6,
            sizeof a->auth - 6);
        explicit_bzero(cred, sizeof cred);
    }
    /* A name is resolved without blocking the loop; an address needs no lookup. */
    a->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    for (int i = 0; i < NCONNS; i++) {
        a->conns[i] = evhttp_connection_base_new(base, a->dns, a->host, (ev_uint16_t)a->port);
        evhttp_connection_set_timeout(a->conns[i], TIMEOUT_S);
        evhttp_connection_set_retries(a->conns[i], 0);
    }
    log_notice("roster", "event=roster_api url=%s user=%s", log_q(cfg->roster_api),
               cfg->roster_api_user[0] ? log_q(cfg->roster_api_user) : "none");
    return a;
}

void rosterapi_free(struct rosterapi *a)
{
    if (!a)
        return;
    /* libevent frees the requests still queued without calling back. */
    while (a->calls) {
        struct call *c = a->calls;
        a->calls = c->next;
        free(c);
    }
    for (int i = 0; i < NCONNS; i++)
        evhttp_connection_free(a->conns[i]);
    if (a->dns)
        evdns_base_free(a->dns, 0);
    explicit_bzero(a->auth, sizeof a->auth);
    free(a);
}
