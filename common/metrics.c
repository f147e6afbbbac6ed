/* The metrics registry and Prometheus text exposition (format 0.0.4), pure. */
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"

#define MAX_LABELS 48 /* values per metric; more go to "other" */

struct series {
    char *label;
    double value;
};

struct metric {
    enum metric_type type;
    char *name, *help, *label_name;
    char *const_labels;         /* rendered name="value" pairs of metric_info(), or NULL */
    struct series series[MAX_LABELS];
    int nseries;
    /* histogram */
    double *bounds;
    unsigned long long *counts; /* per bound, non-cumulative; last = +Inf */
    int nbounds;
    double sum;
    unsigned long long count;
    struct metric *next;
};

struct collector {
    metrics_collect_fn fn;
    void *arg;
    struct collector *next;
};

static struct metric *head, **tail = &head;

static void put_escaped(struct sbuf *out, const char *s, bool is_help);
static struct collector *collectors;

/* Fine between 0.5 and 3 ms, where offhook's own latency lives (p50 ~0.4 ms, p99 ~2 ms at
 * 1,000 events/s): with only 1 and 2.5 ms bounds there, a p99 read off the histogram was
 * an interpolation across the whole bucket and could not say which side of 2 ms it is. */
const double metrics_latency_buckets[] = {0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015,
                                          0.002,  0.0025,  0.003,  0.005,   0.0075, 0.01,
                                          0.025,  0.05,    0.1,    0.25,    0.5,    1,
                                          2.5,    5,       10};
const int metrics_latency_nbuckets = sizeof metrics_latency_buckets / sizeof(double);

static struct series *series_for(struct metric *m, const char *label)
{
    const char *key = label ? label : "";

    for (int i = 0; i < m->nseries; i++) {
        if (strcmp(m->series[i].label, key) == 0)
            return &m->series[i];
    }
    if (m->nseries >= MAX_LABELS - 1 && strcmp(key, "other") != 0)
        return series_for(m, "other");
    m->series[m->nseries].label = xstrdup(key);
    m->series[m->nseries].value = 0;
    return &m->series[m->nseries++];
}

struct metric *metric_new(enum metric_type type, const char *name, const char *help,
                          const char *label_name, const char *const *labels)
{
    struct metric *m = xcalloc(1, sizeof *m);

    m->type = type;
    m->name = xstrdup(name);
    m->help = xstrdup(help);
    m->label_name = label_name ? xstrdup(label_name) : NULL;
    if (!label_name)
        series_for(m, NULL);
    for (; labels && *labels; labels++)
        series_for(m, *labels);
    *tail = m;
    tail = &m->next;
    return m;
}

struct metric *metric_histogram(const char *name, const char *help, const double *bounds,
                                int nbounds)
{
    struct metric *m = metric_new(METRIC_HISTOGRAM, name, help, NULL, NULL);

    m->bounds = xmalloc((size_t)nbounds * sizeof *m->bounds);
    memcpy(m->bounds, bounds, (size_t)nbounds * sizeof *bounds);
    m->counts = xcalloc((size_t)nbounds + 1, sizeof *m->counts);
    m->nbounds = nbounds;
    return m;
}

struct metric *metric_info(const char *name, const char *help, const char *const *pairs)
{
    struct metric *m = metric_new(METRIC_GAUGE, name, help, NULL, NULL);
    struct sbuf b;

    sbuf_init(&b);
    for (; pairs && pairs[0] && pairs[1]; pairs += 2) {
        if (!pairs[1][0])
            continue; /* an empty value is the same as no label: say nothing */
        sbuf_printf(&b, "%s%s=\"", b.len ? "," : "", pairs[0]);
        put_escaped(&b, pairs[1], false);
        sbuf_puts(&b, "\"");
    }
    if (b.len)
        m->const_labels = xstrdup(b.data);
    sbuf_free(&b);
    metric_set(m, NULL, 1);
    return m;
}

/* Every update takes a NULL metric as a no-op: code shared by a daemon and a tool (or a
 * test) that never registered the metric needs no guard at each call. */
void metric_add(struct metric *m, const char *label, double v)
{
    if (m)
        series_for(m, label)->value += v;
}

void metric_inc(struct metric *m, const char *label)
{
    metric_add(m, label, 1);
}

void metric_set(struct metric *m, const char *label, double v)
{
    if (m)
        series_for(m, label)->value = v;
}

double metric_get(struct metric *m, const char *label)
{
    return m ? series_for(m, label)->value : 0;
}

void metric_observe(struct metric *m, double v)
{
    int i = 0;

    if (!m)
        return;
    while (i < m->nbounds && v > m->bounds[i])
        i++;
    m->counts[i]++;
    m->count++;
    m->sum += v;
}

void metrics_add_collector(metrics_collect_fn fn, void *arg)
{
    struct collector *c = xmalloc(sizeof *c);

    c->fn = fn;
    c->arg = arg;
    c->next = collectors;
    collectors = c;
}

static void put_escaped(struct sbuf *out, const char *s, bool is_help)
{
    for (; *s; s++) {
        if (*s == '\\')
            sbuf_puts(out, "\\\\");
        else if (*s == '\n')
            sbuf_puts(out, "\\n");
        else if (*s == '"' && !is_help)
            sbuf_puts(out, "\\\"");
        else
            sbuf_append(out, s, 1);
    }
}

/* The shortest text that reads back as the same double (as Go's FormatFloat(v, 'g', -1)
 * writes it): a bucket bound of 0.00025 renders as "0.00025", not the
 * "0.00025000000000000001" that %.17g gives, and a scraper sees the same le values as
 * the ones in the code and the docs. */
static void put_number(struct sbuf *out, double v)
{
    char buf[32];

    if (isnan(v)) {
        sbuf_puts(out, "NaN");
        return;
    }
    if (isinf(v)) {
        sbuf_puts(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == (double)(long long)v && fabs(v) < 1e15) {
        sbuf_printf(out, "%lld", (long long)v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    sbuf_puts(out, buf);
}

static const char *type_name(enum metric_type t)
{
    return t == METRIC_COUNTER ? "counter" : t == METRIC_GAUGE ? "gauge" : "histogram";
}

void metrics_render(struct sbuf *out)
{
    for (struct collector *c = collectors; c; c = c->next)
        c->fn(c->arg);
    for (struct metric *m = head; m; m = m->next) {
        sbuf_printf(out, "# HELP %s ", m->name);
        put_escaped(out, m->help, true);
        sbuf_printf(out, "\n# TYPE %s %s\n", m->name, type_name(m->type));
        if (m->type == METRIC_HISTOGRAM) {
            unsigned long long cum = 0;
            for (int i = 0; i <= m->nbounds; i++) {
                cum += m->counts[i];
                sbuf_printf(out, "%s_bucket{le=\"", m->name);
                put_number(out, i < m->nbounds ? m->bounds[i] : INFINITY);
                sbuf_printf(out, "\"} %llu\n", cum);
            }
            sbuf_printf(out, "%s_sum ", m->name);
            put_number(out, m->sum);
            sbuf_printf(out, "\n%s_count %llu\n", m->name, m->count);
            continue;
        }
        for (int i = 0; i < m->nseries; i++) {
            sbuf_puts(out, m->name);
            if (m->const_labels || m->label_name) {
                sbuf_puts(out, "{");
                if (m->const_labels)
                    sbuf_puts(out, m->const_labels);
                if (m->label_name) {
                    sbuf_printf(out, "%s%s=\"", m->const_labels ? "," : "", m->label_name);
                    put_escaped(out, m->series[i].label, false);
                    sbuf_puts(out, "\"");
                }
                sbuf_puts(out, "}");
            }
            sbuf_puts(out, " ");
            put_number(out, m->series[i].value);
            sbuf_puts(out, "\n");
        }
    }
}

void metrics_reset(void)
{
    while (head) {
        struct metric *m = head;
        head = m->next;
        for (int i = 0; i < m->nseries; i++)
            free(m->series[i].label);
        free(m->name);
        free(m->help);
        free(m->label_name);
        free(m->const_labels);
        free(m->bounds);
        free(m->counts);
        free(m);
    }
    tail = &head;
    while (collectors) {
        struct collector *c = collectors;
        collectors = c->next;
        free(c);
    }
}
