/* The metrics registry both daemons count into, and its Prometheus text rendering. Pure:
 * the HTTP endpoint that serves it is httpd.c. Metrics are created once at start-up and
 * live for the process; each has at most one label, whose values are declared up front
 * (so every series is exported from the first scrape) or added on first use (bounded). */
#ifndef OFFHOOK_METRICS_H
#define OFFHOOK_METRICS_H

#include "sbuf.h"

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

struct metric;

/* labels: NULL-terminated list of values known up front, or NULL. label_name NULL means
 * the metric has no label. Returned pointers live until metrics_reset(). */
struct metric *metric_new(enum metric_type type, const char *name, const char *help,
                          const char *label_name, const char *const *labels);
/* A histogram with the given upper bounds (ascending, +Inf implied). */
struct metric *metric_histogram(const char *name, const char *help, const double *bounds,
                                int nbounds);

/* An info metric (Prometheus convention: a gauge of 1 whose labels carry the facts, such
 * as offhook_build_info{version="0.1.0",commit="..."}). pairs: NULL-terminated list of
 * label name, value, name, value...; pairs with an empty value are left out. Copied. */
struct metric *metric_info(const char *name, const char *help, const char *const *pairs);

/* label may be NULL for unlabelled metrics. Values past the label limit land in "other".
 * m may be NULL (a metric nobody registered): updates are then no-ops, reads give 0. */
void metric_inc(struct metric *m, const char *label);
void metric_add(struct metric *m, const char *label, double v);
void metric_set(struct metric *m, const char *label, double v);
double metric_get(struct metric *m, const char *label);
void metric_observe(struct metric *m, double v);

/* Called before each render so gauges that are cheaper to compute than to track
 * (users by state, process RSS) can be refreshed. */
typedef void (*metrics_collect_fn)(void *arg);
void metrics_add_collector(metrics_collect_fn fn, void *arg);

void metrics_render(struct sbuf *out);
/* Frees every metric (tests). */
void metrics_reset(void);

/* Latency buckets in seconds, from 100 us to 10 s. */
extern const double metrics_latency_buckets[];
extern const int metrics_latency_nbuckets;

#endif
