/* The operators' HTTP endpoint of each daemon (libevent evhttp): /metrics in Prometheus
 * text format, /healthz (process alive), /readyz (upstreams connected) and an index page
 * at /; other methods than GET and HEAD get 405. Also registers the standard process_*
 * metrics and offhook_build_info. Called by each daemon's main. */
#ifndef OFFHOOK_HTTPD_H
#define OFFHOOK_HTTPD_H

#include <stdbool.h>

#include "sbuf.h"

struct event_base;
struct httpd;

/* Returns true when ready; otherwise appends the reasons (one per line) to why. Lines
 * appended while returning true are notes (degraded but serving), shown after "ready". */
typedef bool (*httpd_ready_fn)(void *arg, struct sbuf *why);

/* Binds hostport ("HOST:PORT"). Returns NULL (and logs why) on failure. */
struct httpd *httpd_start(struct event_base *base, const char *hostport, httpd_ready_fn ready,
                          void *arg);
void httpd_free(struct httpd *h);
/* process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...,
 * and offhook_build_info. */
void httpd_register_process_metrics(void);

#endif
