/* Outgoing presence of the phone contacts: builds each stanza from the user's view and
 * sends it to the contact's watchers, only when what they see changes. */
#include "presence_out.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caps.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "strutil.h"

/* A presence_view as remembered, one per user: its status (most often empty, up to
 * ~200 bytes) on the heap only when there is one. */
struct kept_view {
    const char *show;            /* static, as in presence_view */
    char *status;                /* owned; NULL: "" */
    bool available;
    bool video;
};

/* What one watcher was sent on its own (an answer to its probe or subscription, an
 * "unavailable"), for the control socket. One allocation with its key. */
struct sent_to {
    struct kept_view view;
    int64_t at_ms;               /* wall clock */
    const char *how;             /* static: "answer", "unavailable" */
    char jid[];                  /* bare watcher JID: the key in sent.to */
};

/* What one user's watchers were last sent. The common case, every watcher holding the
 * last change, costs this alone: `to` is empty (no memory) unless a watcher was sent
 * something else since. */
struct sent {
    struct kept_view view;       /* the presence every watcher was sent */
    bool valid;                  /* view is what they hold (false: unknown, send again) */
    int watchers;                /* how many it went to */
    int64_t at_ms;               /* wall clock of that change sent to every watcher, 0 */
    struct strmap to;            /* watcher -> struct sent_to* (owned); current watchers
                                  * only, pruned at each change: bounded by the set */
};

struct presence_out {
    const struct users *d;
    const struct stanza_out *out;
    struct strmap sent;          /* user JID (the cuser's: presout_forget comes before a
                                    user is freed) -> struct sent* (owned) */
    char caps_ver[2][32];        /* XEP-0115 ver of a contact's disco#info, without and with
                                    video ("" until known) */
};

static struct metric *m_latency, *m_published;

void presout_register_metrics(void)
{
    m_latency = metric_histogram("offhook_event_latency_seconds",
                                 "From NOTIFY received by sipbridge to presence written by the "
                                 "component.",
                                 metrics_latency_buckets, metrics_latency_nbuckets);
    m_published = metric_new(METRIC_COUNTER, "offhook_presence_updates_total",
                             "Phone-contact state changes broadcast to watchers.", NULL, NULL);
}

/* XEP-0115: lets clients cache what a phone contact supports. */
static void add_caps(struct presence_out *po, xmpp_stanza_t *pres, bool video)
{
    char *ver = po->caps_ver[video];
    xmpp_stanza_t *c;

    /* Two hashes in all (see caps.h): each computed once. */
    if (!ver[0] && caps_contact_ver(video, ver, sizeof po->caps_ver[0]) < 0)
        return;
    c = stanza_child(po->out->ctx, pres, "c", NS_CAPS);
    xmpp_stanza_set_attribute(c, "hash", "sha-1");
    xmpp_stanza_set_attribute(c, "node", CAPS_NODE);
    xmpp_stanza_set_attribute(c, "ver", ver);
}

/* XEP-0172: what a roster should call the contact. */
static void add_nick(xmpp_ctx_t *ctx, xmpp_stanza_t *pres, const struct cuser *u)
{
    char nick[JID_MAX + 16];
    xmpp_stanza_t *n;

    view_nick(u, nick, sizeof nick);
    n = stanza_text_child(ctx, pres, "nick", nick);
    xmpp_stanza_set_ns(n, NS_NICK);
}

/* The contact's phone resource, where its availability comes from. */
static void full_jid(const struct cuser *u, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", u->contact, CONTACT_RESOURCE);
}

/* A traced user's stanza, whole, into the log: in pieces of LOG_Q_MAX bytes, one line
 * each, quoted as every peer's text is (log_qn). */
static void trace_stanza(const struct cuser *u, const char *dir, xmpp_stanza_t *st)
{
    char *text = NULL;
    size_t len = 0;

    if (!log_traced(&u->trace) && LOG_DEBUG > log_level)
        return;
    if (xmpp_stanza_to_text(st, &text, &len) != XMPP_EOK)
        return;
    for (size_t off = 0; off < len;) {
        size_t piece = str_utf8_cut(text + off, len - off, LOG_Q_MAX);
        if (!piece)
            piece = 1;
        log_trace(&u->trace, "publish", "event=trace_stanza user=%s %s=%s offset=%zu len=%zu",
                  u->jid, dir, log_qn(text + off, piece), off, len);
        off += piece;
    }
    xmpp_free(xmpp_stanza_get_context(st), text);
}

static xmpp_stanza_t *build(struct presence_out *po, const struct cuser *u,
                            const struct presence_view *v, const char *to)
{
    xmpp_ctx_t *ctx = po->out->ctx;
    xmpp_stanza_t *p = xmpp_presence_new(ctx);
    char from[JID_MAX + 1];

    full_jid(u, from, sizeof from);
    xmpp_stanza_set_from(p, from);
    xmpp_stanza_set_to(p, to);
    if (!v->available)
        xmpp_stanza_set_type(p, "unavailable");
    if (v->show)
        stanza_text_child(ctx, p, "show", v->show);
    if (v->status[0])
        stanza_text_child(ctx, p, "status", v->status);
    if (v->available) {
        add_nick(ctx, p, u);
        /* XEP-0152 reachability: how to reach the user's phone, while it is reachable. */
        xmpp_stanza_add_child_ex(p, view_reach(ctx, u, true), 0);
        add_caps(po, p, v->video);
    }
    return p;
}

static void kept_set(struct kept_view *k, const struct presence_view *v)
{
    k->show = v->show;
    k->available = v->available;
    k->video = v->video;
    if (k->status && strcmp(k->status, v->status) == 0)
        return;
    free(k->status);
    k->status = v->status[0] ? xstrdup(v->status) : NULL;
}

static void kept_get(const struct kept_view *k, struct presence_view *out)
{
    memset(out, 0, sizeof *out);
    out->show = k->show;
    out->available = k->available;
    out->video = k->video;
    if (k->status)
        str_copy(out->status, sizeof out->status, k->status);
}

static struct sent *sent_get(struct presence_out *po, const struct cuser *u)
{
    struct sent *s = strmap_get(&po->sent, u->jid);

    if (!s) {
        s = xcalloc(1, sizeof *s);
        strmap_init(&s->to);
        strmap_put(&po->sent, u->jid, s);
    }
    return s;
}

static void sent_to_free(struct sent_to *e)
{
    free(e->view.status);
    free(e);
}

/* Notes what one watcher (to, a bare or full JID) was sent on its own, if it is one of
 * u's watchers: nobody else gets memory here. */
static void note_sent_to(struct presence_out *po, const struct cuser *u, const char *to,
                         const struct presence_view *v, const char *how)
{
    char bare[JID_MAX + 1];
    struct sent *s;
    struct sent_to *e;

    if (jid_to_bare(to, bare, sizeof bare) < 0 || !strmap_get(&u->watchers, bare))
        return;
    s = sent_get(po, u);
    e = strmap_get(&s->to, bare);
    if (!e) {
        size_t len = strlen(bare) + 1;
        e = xcalloc(1, sizeof *e + len);
        memcpy(e->jid, bare, len);
        strmap_put(&s->to, e->jid, e);
    }
    kept_set(&e->view, v);
    e->at_ms = clock_wall_ms();
    e->how = how;
}

/* A change went to every watcher: what each was sent alone before is superseded, and
 * those no longer watching are forgotten. */
static void prune_sent_to(struct sent *s, const struct cuser *u)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&s->to, &pos, &k, &v)) {
        if (!strmap_get(&u->watchers, k) || ((struct sent_to *)v)->at_ms <= s->at_ms) {
            strmap_del(&s->to, k);
            sent_to_free(v);
        }
    }
}

static bool same_view(const struct presence_view *a, const struct kept_view *b)
{
    return a->available == b->available && a->show == b->show && a->video == b->video &&
           strcmp(a->status, b->status ? b->status : "") == 0;
}

void presout_user_to(struct presence_out *po, const struct cuser *u,
                     const struct user_view *v, const char *to)
{
    xmpp_stanza_t *p;

    if (!po->d->cfg->publish_contacts) {
        presout_unavailable(po, u, to);
        return;
    }
    p = build(po, u, &v->presence, to);
    if (stanza_send(po->out, p, "presence") == 0) {
        note_sent_to(po, u, to, &v->presence, "answer");
        trace_stanza(u, "sent", p);
    }
    xmpp_stanza_release(p);
}

void presout_user(struct presence_out *po, const struct cuser *u, const struct user_view *v,
                  bool force, int64_t event_us)
{
    struct sent *s;
    size_t pos = 0;
    const char *w;
    void *val;
    int n = 0;

    if (!po->d->cfg->publish_contacts)
        return;
    s = strmap_get(&po->sent, u->jid);
    if (!force && s && s->valid && same_view(&v->presence, &s->view))
        return;
    if (!stanza_out_up(po->out)) {
        /* Nothing is lost: pub_all() sends everyone's current state on reconnect. */
        if (s)
            s->valid = false;
        return;
    }
    while (strmap_next(&u->watchers, &pos, &w, &val)) {
        xmpp_stanza_t *p = build(po, u, &v->presence, w);
        if (stanza_send(po->out, p, "presence") == 0) {
            n++;
            trace_stanza(u, "sent", p);
        }
        xmpp_stanza_release(p);
    }
    s = sent_get(po, u);
    kept_set(&s->view, &v->presence);
    s->valid = true;
    s->at_ms = clock_wall_ms();
    s->watchers = n;
    prune_sent_to(s, u);
    if (!force) {
        metric_inc(m_published, NULL);
        log_info("publish", "event=presence user=%s contact=%s state=%s watchers=%d",
                 log_q(u->jid), log_q(u->contact),
                 user_state_name(u->have_rec ? u->rec.state : US_UNKNOWN), n);
    }
    if (event_us > 0 && n > 0) {
        int64_t now = clock_wall_us();
        if (now >= event_us)
            metric_observe(m_latency, (double)(now - event_us) / 1e6);
    }
}

void presout_type(struct presence_out *po, const char *from, const char *to, const char *type)
{
    xmpp_stanza_t *p = xmpp_presence_new(po->out->ctx);

    xmpp_stanza_set_from(p, from);
    xmpp_stanza_set_to(p, to);
    xmpp_stanza_set_type(p, type);
    (void)stanza_send(po->out, p, "presence");
    xmpp_stanza_release(p);
}

void presout_unavailable(struct presence_out *po, const struct cuser *u, const char *to)
{
    char from[JID_MAX + 1];
    struct presence_view off = {.available = false};

    full_jid(u, from, sizeof from);
    presout_type(po, from, to, "unavailable");
    note_sent_to(po, u, to, &off, "unavailable");
}

void presout_subscribed(struct presence_out *po, const struct cuser *u, const char *to)
{
    xmpp_ctx_t *ctx = po->out->ctx;
    xmpp_stanza_t *p = xmpp_presence_new(ctx);

    xmpp_stanza_set_from(p, u->contact);
    xmpp_stanza_set_to(p, to);
    xmpp_stanza_set_type(p, "subscribed");
    add_nick(ctx, p, u);
    (void)stanza_send(po->out, p, "presence");
    xmpp_stanza_release(p);
}

void presout_goodbye(struct presence_out *po, const struct cuser *u)
{
    size_t pos = 0;
    const char *w;
    void *val;

    if (!po->d->cfg->publish_contacts)
        return;
    while (strmap_next(&u->watchers, &pos, &w, &val))
        presout_unavailable(po, u, w);
}

void presout_link_down(struct presence_out *po)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&po->sent, &pos, &k, &v))
        ((struct sent *)v)->valid = false;
}

static void sent_free(struct sent *s)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&s->to, &pos, &k, &v))
        sent_to_free(v);
    strmap_free(&s->to);
    free(s->view.status);
    free(s);
}

void presout_forget(struct presence_out *po, const struct cuser *u)
{
    struct sent *s = strmap_del(&po->sent, u->jid);

    if (s)
        sent_free(s);
}

struct presence_out *presout_new(const struct users *d, const struct stanza_out *out)
{
    struct presence_out *po = xcalloc(1, sizeof *po);

    po->d = d;
    po->out = out;
    strmap_init(&po->sent);
    return po;
}

void presout_free(struct presence_out *po)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!po)
        return;
    while (strmap_next(&po->sent, &pos, &k, &v))
        sent_free(v);
    strmap_free(&po->sent);
    free(po);
}

void presout_last_sent(const struct presence_out *po, const struct cuser *u, const char *to,
                       struct presout_sent *out)
{
    const struct sent *s = strmap_get(&po->sent, u->jid);
    const struct sent_to *e = s ? strmap_get(&s->to, to) : NULL;

    memset(out, 0, sizeof *out);
    if (e && (!s->at_ms || e->at_ms > s->at_ms)) {
        kept_get(&e->view, &out->view);
        out->at_ms = e->at_ms;
        out->how = e->how;
    } else if (s && s->at_ms) {
        kept_get(&s->view, &out->view);
        out->at_ms = s->at_ms;
        out->how = "change";
        out->owed = !s->valid;
    }
}

void presout_last_change(const struct presence_out *po, const struct cuser *u,
                         struct presout_sent *out, int *watchers)
{
    const struct sent *s = strmap_get(&po->sent, u->jid);

    memset(out, 0, sizeof *out);
    *watchers = 0;
    if (!s || !s->at_ms)
        return;
    kept_get(&s->view, &out->view);
    out->at_ms = s->at_ms;
    out->how = "change";
    out->owed = !s->valid;
    *watchers = s->watchers;
}
