/* Outgoing presence of the phone contacts: builds each stanza from presence.c's view and
 * sends it to the contact's watchers, only when what they see changes. */
#include <stdio.h>
#include <string.h>

#include "caps.h"
#include "jid.h"
#include "component.h"
#include "pep.h"
#include "log.h"
#include "metrics.h"
#include "stanza.h"
#include "strutil.h"
#include "xmpplink.h"

static struct metric *m_latency, *m_published;

void pub_register_metrics(void)
{
    m_latency = metric_histogram("offhook_event_latency_seconds",
                                 "From NOTIFY received by sipbridge to presence written by the "
                                 "component.",
                                 metrics_latency_buckets, metrics_latency_nbuckets);
    m_published = metric_new(METRIC_COUNTER, "offhook_presence_updates_total",
                             "Phone-contact state changes broadcast to watchers.", NULL, NULL);
}

void reach_addresses(xmpp_ctx_t *ctx, xmpp_stanza_t *reach, const struct cuser *u)
{
    for (int i = 0; i < u->cfg->naors; i++) {
        xmpp_stanza_t *addr = stanza_child(ctx, reach, "addr", NULL);
        xmpp_stanza_set_attribute(addr, "uri", u->cfg->aors[i]);
    }
    if (u->cfg->tel) {
        char uri[128];
        xmpp_stanza_t *addr = stanza_child(ctx, reach, "addr", NULL);
        size_t n = 0;
        /* tel: URIs carry digits and a leading +, no visual separators. */
        n = (size_t)snprintf(uri, sizeof uri, "tel:");
        for (const char *p = u->cfg->tel; *p && n < sizeof uri - 1; p++) {
            if ((*p >= '0' && *p <= '9') || (*p == '+' && n == 4))
                uri[n++] = *p;
        }
        uri[n] = '\0';
        xmpp_stanza_set_attribute(addr, "uri", uri);
    }
}

/* XEP-0152 reachability: how to reach the user's phone, while it is reachable. */
static void add_reach(xmpp_ctx_t *ctx, xmpp_stanza_t *pres, const struct cuser *u)
{
    xmpp_stanza_t *reach = stanza_child(ctx, pres, "reach", NS_REACH);

    reach_addresses(ctx, reach, u);
}

/* XEP-0115: lets clients cache what a phone contact supports. */
static void add_caps(xmpp_ctx_t *ctx, xmpp_stanza_t *pres, struct cuser *u)
{
    xmpp_stanza_t *c;

    if (!u->caps_ver[0] && caps_contact_ver(u->caps_ver, sizeof u->caps_ver) < 0)
        return;
    c = stanza_child(ctx, pres, "c", NS_CAPS);
    xmpp_stanza_set_attribute(c, "hash", "sha-1");
    xmpp_stanza_set_attribute(c, "node", CAPS_NODE);
    xmpp_stanza_set_attribute(c, "ver", u->caps_ver);
}

/* XEP-0172: what a roster should call the contact. */
static void add_nick(xmpp_ctx_t *ctx, xmpp_stanza_t *pres, const struct cuser *u)
{
    char nick[JID_MAX + 16];
    xmpp_stanza_t *n;

    snprintf(nick, sizeof nick, "%s (phone)", u->cfg->name ? u->cfg->name : u->jid);
    n = stanza_text_child(ctx, pres, "nick", nick);
    xmpp_stanza_set_ns(n, NS_NICK);
}

/* The contact's phone resource, where its availability comes from. */
static void full_jid(const struct cuser *u, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", u->contact, CONTACT_RESOURCE);
}

static xmpp_stanza_t *build(struct component *c, struct cuser *u,
                            const struct presence_view *v, const char *to)
{
    xmpp_ctx_t *ctx = xmpplink_ctx(c->xmpp);
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
        add_reach(ctx, p, u);
        add_caps(ctx, p, u);
    }
    return p;
}

static void current_view(const struct component *c, const struct cuser *u,
                         struct presence_view *v)
{
    presence_for_record(cuser_record(c, u), v);
}

static bool same_view(const struct presence_view *a, const struct presence_view *b)
{
    return a->available == b->available && a->show == b->show &&
           strcmp(a->status, b->status) == 0;
}

void pub_user_to(struct component *c, struct cuser *u, const char *to)
{
    struct presence_view v;
    xmpp_stanza_t *p;

    if (!c->cfg->publish_contacts) {
        pub_unavailable(c, u, to);
        return;
    }
    current_view(c, u, &v);
    p = build(c, u, &v, to);
    (void)xmpplink_send(c->xmpp, p, "presence");
    xmpp_stanza_release(p);
}

void pub_user(struct component *c, struct cuser *u, bool force, int64_t event_us)
{
    struct presence_view v;
    size_t pos = 0;
    const char *w;
    void *val;
    int sent = 0;

    pep_user(c->pep, u, force);
    if (!c->cfg->publish_contacts)
        return;
    current_view(c, u, &v);
    if (!force && u->sent_valid && same_view(&v, &u->sent))
        return;
    if (!xmpplink_up(c->xmpp)) {
        /* Nothing is lost: pub_all() sends everyone's current state on reconnect. */
        u->sent_valid = false;
        return;
    }
    while (strmap_next(&u->watchers, &pos, &w, &val)) {
        xmpp_stanza_t *p = build(c, u, &v, w);
        if (xmpplink_send(c->xmpp, p, "presence") == 0)
            sent++;
        xmpp_stanza_release(p);
    }
    u->sent = v;
    u->sent_valid = true;
    if (!force) {
        metric_inc(m_published, NULL);
        log_info("publish", "event=presence user=%s contact=%s state=%s watchers=%d",
                 u->jid, u->contact, user_state_name(u->have_rec ? u->rec.state : US_UNKNOWN),
                 sent);
    }
    if (event_us > 0 && sent > 0) {
        int64_t now = clock_wall_us();
        if (now >= event_us)
            metric_observe(m_latency, (double)(now - event_us) / 1e6);
    }
}

void pub_all(struct component *c)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int users = 0;

    while (strmap_next(&c->by_jid, &pos, &k, &v)) {
        pub_user(c, v, true, 0);
        users++;
    }
    log_info("publish", "event=republished users=%d", users);
}

void pub_changed(struct component *c)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&c->by_jid, &pos, &k, &v))
        pub_user(c, v, false, 0);
}

void pub_goodbye(struct component *c)
{
    size_t pos = 0, wpos;
    const char *k, *w;
    void *v, *val;
    int n = 0;

    if (!xmpplink_up(c->xmpp))
        return;
    while (strmap_next(&c->by_jid, &pos, &k, &v)) {
        struct cuser *u = v;
        if (c->cfg->publish_contacts) {
            for (wpos = 0; strmap_next(&u->watchers, &wpos, &w, &val);)
                pub_unavailable(c, u, w);
        }
        pep_clear(c->pep, u);
        n++;
    }
    log_notice("publish", "event=goodbye users=%d note=\"watchers see the phones unavailable "
                          "until offhook is back\"", n);
}

void pub_presence_type(struct component *c, const char *from, const char *to,
                       const char *type)
{
    xmpp_stanza_t *p = xmpp_presence_new(xmpplink_ctx(c->xmpp));

    xmpp_stanza_set_from(p, from);
    xmpp_stanza_set_to(p, to);
    xmpp_stanza_set_type(p, type);
    (void)xmpplink_send(c->xmpp, p, "presence");
    xmpp_stanza_release(p);
}

void pub_unavailable(struct component *c, const struct cuser *u, const char *to)
{
    char from[JID_MAX + 1];

    full_jid(u, from, sizeof from);
    pub_presence_type(c, from, to, "unavailable");
}

void pub_subscribed(struct component *c, struct cuser *u, const char *to)
{
    xmpp_ctx_t *ctx = xmpplink_ctx(c->xmpp);
    xmpp_stanza_t *p = xmpp_presence_new(ctx);

    xmpp_stanza_set_from(p, u->contact);
    xmpp_stanza_set_to(p, to);
    xmpp_stanza_set_type(p, "subscribed");
    add_nick(ctx, p, u);
    (void)xmpplink_send(c->xmpp, p, "presence");
    xmpp_stanza_release(p);
}
