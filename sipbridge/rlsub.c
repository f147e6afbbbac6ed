/* RFC 4662 resource-list subscription: the index of member phones, the list's version,
 * and the walk over each list NOTIFY's resources (see rlsub.h). */
#include "rlsub.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dialoginfo.h"
#include "log.h"
#include "metrics.h"
#include "mime.h"
#include "ratelimit.h"
#include "rlmi.h"
#include "strmap.h"
#include "strutil.h"
#include "subscription.h"

#define LIST_ACCEPT "multipart/related, application/rlmi+xml, " DLGINFO_TYPE
#define AMBIGUOUS ((void *)1)

struct rlsub {
    struct subs_mgr *subs;
    char *uri;
    size_t max_body;
    const struct rlsub_ops *ops;
    void *arg;
    struct subscription *sub;   /* NULL until rlsub_start */
    struct docver ver;          /* the list document's versions */
    struct ratelimit_gate log_gate; /* lines the list's NOTIFYs cause */
    struct strmap by_key;       /* "user@host" of each AOR (owned) -> struct rlsub_member* */
    struct strmap by_user;      /* user part (owned) -> struct rlsub_member*, or AMBIGUOUS */
};

static struct metric *m_resources;

void rlsub_register_metrics(void)
{
    m_resources = metric_new(METRIC_COUNTER, "offhook_list_resources_total",
                             "Resources of resource-list NOTIFYs, by outcome.", "outcome",
                             (const char *const[]){"applied", "unknown_uri", "terminated",
                                                   "missing", NULL});
}

/* ---- the index ----------------------------------------------------------------------- */

/* "user@host" of a SIP URI: scheme, port, parameters and headers cut, host lower-cased.
 * The PBX names list resources in its own form; this is what must match. */
static int aor_key(const char *uri, char *out, size_t len, const char **user_end)
{
    const char *p = strchr(uri, ':'), *at, *end;
    size_t n;

    if (!p)
        return -1;
    p++;
    at = strchr(p, '@');
    if (!at)
        return -1;
    end = at + 1 + strcspn(at + 1, ":;?>");
    n = (size_t)(end - p);
    if (n >= len)
        return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    for (char *h = out + (at - p) + 1; *h; h++)
        *h = (char)tolower((unsigned char)*h);
    *user_end = out + (at - p);
    return 0;
}

void rlsub_index_add(struct rlsub *l, struct rlsub_member *m)
{
    char key[512];
    const char *ue;
    char *kcopy, *ucopy;
    void *prev;

    if (aor_key(m->aor, key, sizeof key, &ue) < 0)
        return;
    kcopy = xstrdup(key);
    prev = strmap_put(&l->by_key, kcopy, m);
    if (prev) /* the same AOR for two users: the config allows it, the list cannot */
        log_warn("bridge", "event=list_duplicate_aor aor=%s", log_q(key));
    ucopy = xstrndup(key, (size_t)(ue - key));
    if (strmap_get(&l->by_user, ucopy))
        strmap_put(&l->by_user, ucopy, AMBIGUOUS);
    else
        strmap_put(&l->by_user, ucopy, m);
}

void rlsub_index_clear(struct rlsub *l)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&l->by_key, &pos, &k, &v))
        free((char *)k);
    pos = 0;
    while (strmap_next(&l->by_user, &pos, &k, &v))
        free((char *)k);
    strmap_free(&l->by_key);
    strmap_free(&l->by_user);
    strmap_init(&l->by_key);
    strmap_init(&l->by_user);
}

static struct rlsub_member *find(struct rlsub *l, const char *uri)
{
    char key[512];
    const char *ue;
    struct rlsub_member *m;

    if (aor_key(uri, key, sizeof key, &ue) < 0)
        return NULL;
    m = strmap_get(&l->by_key, key);
    if (m)
        return m;
    key[ue - key] = '\0';
    m = strmap_get(&l->by_user, key);
    return m == AMBIGUOUS ? NULL : m;
}

/* ---- list NOTIFYs -------------------------------------------------------------------- */

/* A resource problem is logged once per kind per member, not on every NOTIFY. detail
 * may come from the PBX: quoted. */
static void problem(struct rlsub_member *m, const char *kind, const char *detail)
{
    metric_inc(m_resources, kind);
    if (m->problem == kind)
        return;
    m->problem = kind;
    log_warn("bridge", "event=list_resource_%s user=%s aor=%s detail=%s", kind, log_q(m->user),
             log_q(m->aor), log_q(detail));
}

/* A line the list's NOTIFYs cause may be logged now; *held: how many were held back. */
static bool peer_log_ok(struct rlsub *l, uint64_t *held)
{
    return ratelimit_gate_pass(&ratelimit_peer_log, &l->log_gate, clock_mono_ms(), held);
}

static void apply_list(struct rlsub *l, const struct sipua_notify *n)
{
    struct rlmi_doc doc;
    const char *reason = NULL;
    bool need_full = false;
    size_t pos = 0;
    const char *k;
    void *v;
    uint32_t last = l->ver.last;
    enum docver_anomaly anomaly;
    uint64_t held = 0;

    if (rlmi_parse(n->content_type, n->body, n->len, l->max_body, &doc, &reason) < 0) {
        l->ops->on_rejected(l->arg, NULL, reason);
        if (peer_log_ok(l, &held))
            log_warn("bridge", "event=list_body_rejected uri=%s reason=%s "
                               "action=state_unchanged suppressed=%llu",
                     log_q(l->uri), log_q(reason), (unsigned long long)held);
        return;
    }
    switch (docver_check(&l->ver, doc.version, doc.full, &anomaly)) {
    case DOCVER_STALE:
        l->ops->on_outdated(l->arg);
        rlmi_doc_free(&doc);
        return;
    case DOCVER_RESYNC:
        l->ops->on_outdated(l->arg);
        rlmi_doc_free(&doc);
        subs_resync(l->sub, "list versions stale again: the notifier counts from elsewhere");
        return;
    case DOCVER_GAP:
        need_full = true; /* RFC 4662 5.2: a gap in partial lists calls for full state */
        break;
    case DOCVER_APPLY:
        break;
    }
    if (anomaly != DOCVER_NORMAL) {
        l->ops->on_version_anomaly(l->arg, anomaly);
        if (peer_log_ok(l, &held))
            log_warn("bridge", "event=version_%s list=%s version=%u last=%u action=applied "
                               "suppressed=%llu",
                     docver_anomaly_name(anomaly), log_q(l->uri), doc.version, last,
                     (unsigned long long)held);
    }
    for (size_t i = 0; i < doc.nres; i++) {
        const struct rlmi_resource *r = &doc.res[i];
        struct rlsub_member *m = find(l, r->uri);
        bool terminated = r->state == RLMI_TERMINATED;

        if (!m) {
            metric_inc(m_resources, "unknown_uri");
            log_debug("bridge", "event=list_resource_unknown uri=%s", log_q(r->uri));
            continue;
        }
        m->seen = doc.full; /* only a full state's walk below reads it */
        log_trace(&m->trace, "bridge", "event=trace_list_resource user=%s aor=%s uri=%s "
                                       "state=%s reason=%s body_len=%zu list_version=%u",
                  m->user, log_q(m->aor), log_q(r->uri), terminated ? "terminated" : "active",
                  r->reason[0] ? log_q(r->reason) : "-", r->body ? r->body_len : 0,
                  doc.version);
        for (size_t off = 0; r->body && m->trace.bodies && log_traced(&m->trace) &&
                             off < r->body_len;) {
            size_t piece = str_utf8_cut(r->body + off, r->body_len - off, LOG_Q_MAX);
            if (!piece)
                piece = 1;
            log_trace(&m->trace, "bridge", "event=trace_list_resource_body user=%s offset=%zu "
                                           "body=%s",
                      m->user, off, log_qn(r->body + off, piece));
            off += piece;
        }
        if (terminated) {
            problem(m, "terminated", r->reason[0] ? r->reason : "no reason");
        } else if (r->body) {
            if (!mime_is(r->ctype, strlen(r->ctype), DLGINFO_TYPE)) {
                l->ops->on_rejected(l->arg, m, "unexpected content type");
                continue;
            }
            m->problem = NULL;
            metric_inc(m_resources, "applied");
        }
        if (!l->ops->on_resource(l->arg, m, terminated, terminated ? NULL : r->body,
                                 terminated ? 0 : r->body_len, n->received_us))
            need_full = true;
    }
    /* Full state: a user the PBX does not list is not watched at all. */
    while (doc.full && strmap_next(&l->by_key, &pos, &k, &v)) {
        struct rlsub_member *m = v;
        if (!m->seen) {
            problem(m, "missing", "not in the PBX's resource list");
            l->ops->on_lost(l->arg, m, false, n->received_us);
        }
    }
    /* Only a full state walks every member: a partial NOTIFY (one resource, ~1,000/s on a
     * busy PBX) walking 100,000 members twice kept sipbridge from ever catching up. */
    pos = 0;
    while (doc.full && strmap_next(&l->by_key, &pos, &k, &v))
        ((struct rlsub_member *)v)->seen = false;
    rlmi_doc_free(&doc);
    if (need_full)
        subs_request_full_state(l->sub, "resource list version gap or too many dialogs");
}

/* ---- the subscription's owner callbacks ---------------------------------------------- */

static void on_notify(void *owner, struct subscription *sub, const struct sipua_notify *n)
{
    struct rlsub *l = owner;

    if (!n->body)
        return;
    if (!mime_is(n->content_type, n->content_type ? strlen(n->content_type) : 0,
                 "multipart/related")) {
        uint64_t held = 0;
        l->ops->on_rejected(l->arg, NULL, "unexpected content type");
        if (peer_log_ok(l, &held))
            log_warn("bridge", "event=list_body_rejected uri=%s reason=\"not "
                               "multipart/related (is the URI a resource list?)\" "
                               "content_type=%s suppressed=%llu",
                     log_q(l->uri), log_q(n->content_type), (unsigned long long)held);
        return;
    }
    apply_list(l, n);
}

static void on_restart(void *owner, struct subscription *sub)
{
    struct rlsub *l = owner;
    size_t pos = 0;
    const char *k;
    void *v;

    docver_restart(&l->ver);
    while (strmap_next(&l->by_key, &pos, &k, &v))
        l->ops->on_restart(l->arg, v);
}

static void on_stale(void *owner, struct subscription *sub, long down_s)
{
    struct rlsub *l = owner;
    size_t pos = 0;
    const char *k;
    void *v;

    log_warn("bridge", "event=state_lost list=%s down_s=%ld reason=\"list subscription not "
                       "re-established\"",
             log_q(l->uri), down_s);
    while (strmap_next(&l->by_key, &pos, &k, &v))
        l->ops->on_lost(l->arg, v, true, clock_wall_us());
}

static void report_state(struct rlsub *l, enum sub_state st)
{
    size_t pos = 0;
    const char *k;
    void *v;
    char state[64];

    snprintf(state, sizeof state, "%s(list)", sub_state_name(st));
    while (strmap_next(&l->by_key, &pos, &k, &v))
        l->ops->on_state(l->arg, v, state);
}

static void on_state(void *owner, struct subscription *sub, enum sub_state st)
{
    report_state(owner, st);
}

/* The list serves every member phone: counted as that many users. */
static int list_users(void *owner, const void **key)
{
    *key = NULL;
    return (int)((struct rlsub *)owner)->by_key.count;
}

static const struct subs_owner_ops list_ops = {
    .on_notify = on_notify,
    .on_restart = on_restart,
    .on_state = on_state,
    .on_stale = on_stale,
    .users = list_users,
};

/* ---- public -------------------------------------------------------------------------- */

struct rlsub *rlsub_new(struct subs_mgr *subs, const char *uri, size_t max_body,
                        const struct rlsub_ops *ops, void *arg)
{
    struct rlsub *l = xcalloc(1, sizeof *l);

    l->subs = subs;
    l->uri = xstrdup(uri);
    l->max_body = max_body;
    l->ops = ops;
    l->arg = arg;
    strmap_init(&l->by_key);
    strmap_init(&l->by_user);
    return l;
}

void rlsub_start(struct rlsub *l)
{
    if (!l->sub)
        l->sub = subs_new(l->subs, l->uri, "dialog", LIST_ACCEPT, true, &list_ops, l);
}

void rlsub_set_max_body(struct rlsub *l, size_t max_body)
{
    l->max_body = max_body;
}

void rlsub_report_state(struct rlsub *l)
{
    if (l->sub)
        report_state(l, subs_state(l->sub));
}

void rlsub_free(struct rlsub *l)
{
    if (!l)
        return;
    subs_free(l->sub);
    rlsub_index_clear(l);
    strmap_free(&l->by_key);
    strmap_free(&l->by_user);
    free(l->uri);
    free(l);
}

const struct subscription *rlsub_subscription(const struct rlsub *l)
{
    return l ? l->sub : NULL;
}
