/* /metrics, /healthz and /readyz over libevent's evhttp, plus process metrics read from
 * /proc at scrape time. */
#include "httpd.h"

#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "metrics.h"
#include "buildinfo.h"
#include "strutil.h"
#include "version.h"

struct httpd {
    struct evhttp *http;
    httpd_ready_fn ready;
    void *arg;
};

static void reply_text(struct evhttp_request *req, int code, const char *reason,
                       const char *ctype, const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();

    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
    evbuffer_add(buf, body, len);
    evhttp_send_reply(req, code, reason, buf);
    evbuffer_free(buf);
}

/* What a person who points a browser at the port finds: the daemon and its endpoints
 * (relative links, so it also works behind a reverse proxy's path prefix). */
static void put_index(struct sbuf *out)
{
    const char *prog = program_invocation_short_name;

    sbuf_printf(out,
                "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>\n"
                "<body><h1>%s %s</h1>\n<ul>\n"
                "<li><a href=\"metrics\">/metrics</a>: Prometheus metrics</li>\n"
                "<li><a href=\"healthz\">/healthz</a>: liveness (200 while the event loop "
                "runs)</li>\n"
                "<li><a href=\"readyz\">/readyz</a>: readiness (200 when the upstreams are "
                "connected, else 503 with the reasons)</li>\n"
                "</ul></body></html>\n",
                prog, prog, OFFHOOK_VERSION);
}

static void handle(struct evhttp_request *req, void *arg)
{
    struct httpd *h = arg;
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    size_t plen = strcspn(uri, "?");
    struct sbuf body;

    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        /* RFC 9110 15.5.6: a method the server knows but the resource does not support
         * is 405 with Allow (501 is for methods the server does not know at all). */
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
        reply_text(req, 405, "Method Not Allowed", "text/plain", "GET or HEAD only\n", 17);
        return;
    }
    sbuf_init(&body);
    if (plen == 8 && strncmp(uri, "/metrics", 8) == 0) {
        metrics_render(&body);
        reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body.data,
                   body.len);
    } else if (plen == 8 && strncmp(uri, "/healthz", 8) == 0) {
        reply_text(req, 200, "OK", "text/plain", "ok\n", 3);
    } else if (plen == 7 && strncmp(uri, "/readyz", 7) == 0) {
        if (!h->ready || h->ready(h->arg, &body)) {
            /* Ready, and what is degraded all the same (a directory serving its last
             * known users), after the first line. */
            struct sbuf ok;
            sbuf_init(&ok);
            sbuf_printf(&ok, "ready\n%s", body.data ? body.data : "");
            reply_text(req, 200, "OK", "text/plain", ok.data, ok.len);
            sbuf_free(&ok);
        } else {
            reply_text(req, 503, "Service Unavailable", "text/plain", body.data ? body.data : "",
                       body.len);
        }
    } else if (plen == 1 && uri[0] == '/') {
        put_index(&body);
        reply_text(req, 200, "OK", "text/html; charset=utf-8", body.data, body.len);
    } else {
        reply_text(req, 404, "Not Found", "text/plain", "not found\n", 10);
    }
    sbuf_free(&body);
}

struct httpd *httpd_start(struct event_base *base, const char *hostport, httpd_ready_fn ready,
                          void *arg)
{
    struct httpd *h;
    char host[256];
    const char *colon = strrchr(hostport, ':');
    long port;
    size_t hl;

    if (!colon || (hl = (size_t)(colon - hostport)) == 0 || hl >= sizeof host ||
        str_parse_long(colon + 1, 1, 65535, &port) < 0) {
        log_err("http", "event=listen_failed addr=%s reason=\"not HOST:PORT\"", log_q(hostport));
        return NULL;
    }
    memcpy(host, hostport, hl);
    host[hl] = '\0';
    if (host[0] == '[' && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    h = xcalloc(1, sizeof *h);
    h->ready = ready;
    h->arg = arg;
    h->http = evhttp_new(base);
    /* Scrapers send tiny requests; anything bigger is not a scraper. */
    evhttp_set_max_headers_size(h->http, 8192);
    evhttp_set_max_body_size(h->http, 1024);
    evhttp_set_timeout(h->http, 10);
    /* evhttp answers a method outside this set with 501 itself; let every method it
     * parses through, so that handle() can answer 405 with Allow. */
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(h->http, handle, h);
    if (evhttp_bind_socket(h->http, host, (ev_uint16_t)port) < 0) {
        log_err("http", "event=listen_failed addr=%s reason=\"bind failed\"", log_q(hostport));
        evhttp_free(h->http);
        free(h);
        return NULL;
    }
    log_info("http", "event=listening addr=%s paths=/,/metrics,/healthz,/readyz", log_q(hostport));
    return h;
}

void httpd_free(struct httpd *h)
{
    if (!h)
        return;
    evhttp_free(h->http);
    free(h);
}

/* ---- process metrics --------------------------------------------------------------- */

static struct metric *m_cpu, *m_rss, *m_vsz, *m_fds, *m_start, *m_heap;

static void collect_process(void *arg)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    int nfds = 0;
    DIR *d;

    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        char *p;
        fclose(f);
        buf[n] = '\0';
        /* Fields after the ")" closing comm: state(3) ... utime(14) stime(15) ...
         * starttime(22) vsize(23) rss(24). */
        p = strrchr(buf, ')');
        if (p) {
            unsigned long utime, stime, vsize;
            unsigned long long starttime;
            long rss;
            if (sscanf(p + 2,
                       "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d "
                       "%*d %*d %llu %lu %ld",
                       &utime, &stime, &starttime, &vsize, &rss) == 5) {
                metric_set(m_cpu, NULL, (double)(utime + stime) / (double)ticks);
                metric_set(m_vsz, NULL, (double)vsize);
                metric_set(m_rss, NULL, (double)rss * (double)page);
                (void)starttime;
            }
        }
    }
    {
        /* What is allocated, as opposed to RSS, which also holds freed but unreturned
         * pages: the difference is fragmentation. */
        struct mallinfo2 mi = mallinfo2();
        metric_set(m_heap, NULL, (double)(mi.uordblks + mi.hblkhd));
    }
    d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            nfds += e->d_name[0] != '.';
        closedir(d);
        metric_set(m_fds, NULL, nfds - 1); /* minus the one opendir holds */
    }
}

void httpd_register_process_metrics(void)
{
    m_cpu = metric_new(METRIC_COUNTER, "process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds.", NULL, NULL);
    m_rss = metric_new(METRIC_GAUGE, "process_resident_memory_bytes",
                       "Resident memory size in bytes.", NULL, NULL);
    m_vsz = metric_new(METRIC_GAUGE, "process_virtual_memory_bytes",
                       "Virtual memory size in bytes.", NULL, NULL);
    m_fds = metric_new(METRIC_GAUGE, "process_open_fds", "Number of open file descriptors.",
                       NULL, NULL);
    m_start = metric_new(METRIC_GAUGE, "process_start_time_seconds",
                         "Start time of the process since unix epoch in seconds.", NULL, NULL);
    m_heap = metric_new(METRIC_GAUGE, "offhook_heap_inuse_bytes",
                        "Heap memory allocated and in use (glibc mallinfo2).", NULL, NULL);
    /* Which build runs where: joins onto any series with "* on(job, instance)
     * group_left(version) offhook_build_info". No commit label outside a git build. */
    metric_info("offhook_build_info", "The offhook version (and git commit) this daemon runs.",
                (const char *const[]){"version", OFFHOOK_VERSION, "commit", OFFHOOK_COMMIT,
                                      NULL});
    metric_set(m_start, NULL, (double)clock_wall_ms() / 1000.0);
    metrics_add_collector(collect_process, NULL);
}
