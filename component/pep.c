/* The user's own status: XEP-0108 User Activity and XEP-0152 Reachability published into
 * each user's PEP through XEP-0356 privileged IQs, where the user's server granted the
 * component the IQ permission for pubsub set. Learns the grants from the server's
 * <privilege/> message and asks (pep_ops.on_granted) for every user of a domain on each
 * grant, so a restart never leaves a stale "on the phone"; says once why it does not
 * publish where it cannot. Remembers per user what it last published.
 * Called by router.c (privilege messages, IQ answers) and publisher.c (views). */
#include "pep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "stanza.h"
#include "strutil.h"

#define GRANT_WAIT_S 5        /* after connecting, how long a server has to say <privilege/> */
#define ID_PREFIX "pep-"

struct grant {
    char *domain;
    bool advertised;          /* a <privilege/> message came from it in this stream */
    bool pubsub_set;          /* IQ permission for pubsub set (XEP-0356 v2) */
    char version[8];          /* "1" or "2" */
    bool explained;           /* "not publishing because..." logged in this stream */
};

/* What was last published into one user's PEP. */
struct published {
    char *jid;                /* the user's JID: the key in pep.published (owned) */
    char sig[96];             /* "talking|text|reachable"; "" = nothing known out there */
};

struct pep {
    const struct users *d;
    const struct stanza_out *out;
    struct pep_ops ops;
    void *arg;
    struct strmap grants;     /* server domain -> struct grant* (owned) */
    struct strmap published;  /* user JID -> struct published* (owned) */
    struct event *wait;       /* GRANT_WAIT_S after connect: explain missing grants */
    unsigned long next_id;
};

static struct metric *m_enabled, *m_publish, *m_priv_errors;

/* The label values of offhook_privilege_errors_total: declared, so each series exists from
 * the first scrape and a hostile server cannot mint label values. */
static const char *const priv_conditions[] = {
    "bad_request",           "conflict",           "feature_not_implemented",
    "forbidden",             "internal_server_error", "item_not_found",
    "not_allowed",           "not_authorized",     "policy_violation",
    "remote_server_timeout", "resource_constraint", "service_unavailable",
    "undefined_condition",   "other",              NULL};

/* RFC 6120's condition element name -> its label value. */
static const char *priv_condition_label(const char *condition)
{
    char name[32];
    size_t i;

    for (i = 0; condition[i] && i < sizeof name - 1; i++)
        name[i] = condition[i] == '-' ? '_' : condition[i];
    name[i] = '\0';
    for (const char *const *c = priv_conditions; *c; c++) {
        if (!condition[i] && strcmp(*c, name) == 0)
            return *c;
    }
    return "other";
}

void pep_register_metrics(void)
{
    m_enabled = metric_new(METRIC_GAUGE, "offhook_pep_domains",
                           "Users' domains whose server granted pubsub IQ privileges "
                           "(PEP publishing on) or not.",
                           "granted", (const char *const[]){"yes", "no", NULL});
    m_publish = metric_new(METRIC_COUNTER, "offhook_pep_publishes_total",
                           "Privileged PEP publishes, by outcome.", "result",
                           (const char *const[]){"sent", "ok", "error", NULL});
    m_priv_errors = metric_new(METRIC_COUNTER, "offhook_privilege_errors_total",
                               "Privileged IQs the server refused, by stanza error condition "
                               "(RFC 6120's, dashes as underscores; other: anything else).",
                               "condition", priv_conditions);
}

static struct grant *grant_for(struct pep *p, const char *domain, bool create)
{
    struct grant *g = strmap_get(&p->grants, domain);

    if (!g && create) {
        g = xcalloc(1, sizeof *g);
        g->domain = xstrdup(domain);
        strmap_put(&p->grants, g->domain, g);
    }
    return g;
}

static void update_metric(struct pep *p)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int yes = 0, no = 0;

    while (strmap_next(&p->d->user_domains, &pos, &k, &v)) {
        struct grant *g = grant_for(p, k, false);
        if (g && g->pubsub_set)
            yes++;
        else
            no++;
    }
    metric_set(m_enabled, "yes", yes);
    metric_set(m_enabled, "no", no);
}

/* ---- building the privileged IQ ----------------------------------------------------- */

/* <publish-options>: the items are for the user's presence subscribers only. */
static void publish_options(xmpp_ctx_t *ctx, xmpp_stanza_t *pubsub)
{
    xmpp_stanza_t *opts = stanza_child(ctx, pubsub, "publish-options", NULL);
    xmpp_stanza_t *x = stanza_child(ctx, opts, "x", NS_DATA), *f;

    xmpp_stanza_set_type(x, "submit");
    f = stanza_child(ctx, x, "field", NULL);
    xmpp_stanza_set_attribute(f, "var", "FORM_TYPE");
    xmpp_stanza_set_type(f, "hidden");
    stanza_text_child(ctx, f, "value", "http://jabber.org/protocol/pubsub#publish-options");
    f = stanza_child(ctx, x, "field", NULL);
    xmpp_stanza_set_attribute(f, "var", "pubsub#access_model");
    stanza_text_child(ctx, f, "value", "presence");
}

/* Sends <iq type=set to=user><privileged_iq><iq xmlns=jabber:client type=set><pubsub>
 * <publish node=node><item id=current>payload</item></publish>+options. Takes payload. */
static void send_publish(struct pep *p, const char *user, const char *node,
                         xmpp_stanza_t *payload)
{
    xmpp_ctx_t *ctx = p->out->ctx;
    char id[40], inner_id[48];
    xmpp_stanza_t *outer, *priv, *inner, *pubsub, *publish, *item;

    snprintf(id, sizeof id, ID_PREFIX "%lu", ++p->next_id);
    snprintf(inner_id, sizeof inner_id, "%s-in", id);
    outer = xmpp_iq_new(ctx, "set", id);
    xmpp_stanza_set_from(outer, p->d->cfg->xmpp_domain);
    xmpp_stanza_set_to(outer, user);
    priv = stanza_child(ctx, outer, "privileged_iq", NS_PRIV2);
    /* Prosody's mod_privilege wants the wrapped IQ explicitly in jabber:client, with an
     * id and the same type as the wrapper; its from, if any, must be the user. */
    inner = xmpp_iq_new(ctx, "set", inner_id);
    xmpp_stanza_set_ns(inner, NS_CLIENT);
    xmpp_stanza_add_child_ex(priv, inner, 0);
    pubsub = stanza_child(ctx, inner, "pubsub", NS_PUBSUB);
    publish = stanza_child(ctx, pubsub, "publish", NULL);
    xmpp_stanza_set_attribute(publish, "node", node);
    item = stanza_child(ctx, publish, "item", NULL);
    xmpp_stanza_set_id(item, "current");
    xmpp_stanza_add_child_ex(item, payload, 0);
    publish_options(ctx, pubsub);
    if (stanza_send(p->out, outer, "iq_request") == 0)
        metric_inc(m_publish, "sent");
    xmpp_stanza_release(outer);
}

void pep_user(struct pep *p, const struct cuser *u, const struct user_view *v, bool force)
{
    xmpp_ctx_t *ctx;
    struct jid j;
    struct grant *g;
    struct published *pub;
    char sig[sizeof pub->sig];

    if (!p || !p->d->cfg->publish_pep || !stanza_out_up(p->out))
        return;
    if (jid_parse(u->jid, &j) < 0)
        return;
    g = grant_for(p, j.domain, false);
    if (!g || !g->pubsub_set)
        return;
    snprintf(sig, sizeof sig, "%d|%s|%d", v->talking, v->activity, v->reachable);
    pub = strmap_get(&p->published, u->jid);
    if (!force && pub && strcmp(sig, pub->sig) == 0)
        return;
    if (!pub) {
        pub = xcalloc(1, sizeof *pub);
        pub->jid = xstrdup(u->jid);
        strmap_put(&p->published, pub->jid, pub);
    }
    str_copy(pub->sig, sizeof pub->sig, sig);
    ctx = p->out->ctx;
    {
        xmpp_stanza_t *act = xmpp_stanza_new(ctx);
        xmpp_stanza_set_name(act, "activity");
        xmpp_stanza_set_ns(act, NS_ACTIVITY);
        if (v->talking) {
            xmpp_stanza_t *general = stanza_child(ctx, act, "talking", NULL);
            stanza_child(ctx, general, "on_the_phone", NULL);
            stanza_text_child(ctx, act, "text", v->activity);
        }
        send_publish(p, u->jid, NS_ACTIVITY, act);
    }
    send_publish(p, u->jid, NS_REACH, view_reach(ctx, u, v->reachable));
}

static void published_free(struct published *pub)
{
    free(pub->jid);
    free(pub);
}

void pep_forget(struct pep *p, const struct cuser *u)
{
    struct published *pub = strmap_del(&p->published, u->jid);

    if (pub)
        published_free(pub);
}

/* ---- the server's grants ------------------------------------------------------------ */

static void explain(struct pep *p, struct grant *g, const char *domain, const char *why)
{
    if (g && g->explained)
        return;
    if (!g)
        g = grant_for(p, domain, true);
    g->explained = true;
    log_warn("pep", "event=pep_off domain=%s reason=\"%s\" note=\"phone contacts still "
                    "work\"",
             domain, why);
}

static void on_wait(evutil_socket_t fd, short what, void *arg)
{
    struct pep *p = arg;
    size_t pos = 0;
    const char *k;
    void *v;

    if (!p->d->cfg->publish_pep)
        return;
    while (strmap_next(&p->d->user_domains, &pos, &k, &v)) {
        struct grant *g = grant_for(p, k, false);
        if (!g || !g->advertised)
            explain(p, g, k, "the server sent no XEP-0356 <privilege/> for this domain "
                             "(mod_privilege not enabled or no privileged_entities entry)");
    }
    update_metric(p);
}

void pep_connected(struct pep *p)
{
    struct timeval tv = {.tv_sec = GRANT_WAIT_S};
    size_t pos = 0;
    const char *k;
    void *v;

    /* A new stream: the server advertises its grants again. */
    while (strmap_next(&p->grants, &pos, &k, &v)) {
        struct grant *g = v;
        g->advertised = g->pubsub_set = g->explained = false;
    }
    evtimer_add(p->wait, &tv);
}

bool pep_on_message(struct pep *p, xmpp_stanza_t *msg, const char *from_domain)
{
    xmpp_stanza_t *priv = xmpp_stanza_get_child_by_name_and_ns(msg, "privilege", NS_PRIV2);
    struct grant *g;
    char perms[256] = "";
    size_t used = 0;

    if (!priv)
        priv = xmpp_stanza_get_child_by_name_and_ns(msg, "privilege", NS_PRIV1);
    if (!priv)
        return false;
    if (!strmap_get(&p->d->user_domains, from_domain)) {
        log_debug("pep", "event=privilege_ignored domain=%s reason=\"no users there\"",
                  from_domain);
        return true;
    }
    g = grant_for(p, from_domain, true);
    g->advertised = true;
    g->pubsub_set = false;
    str_copy(g->version, sizeof g->version,
             strcmp(xmpp_stanza_get_ns(priv), NS_PRIV2) == 0 ? "2" : "1");
    for (xmpp_stanza_t *perm = xmpp_stanza_get_children(priv); perm;
         perm = xmpp_stanza_get_next(perm)) {
        const char *access, *type;
        if (!xmpp_stanza_is_tag(perm) || strcmp(xmpp_stanza_get_name(perm), "perm") != 0)
            continue;
        access = xmpp_stanza_get_attribute(perm, "access");
        type = xmpp_stanza_get_attribute(perm, "type");
        if (!access)
            continue;
        if (strcmp(access, "iq") == 0) {
            for (xmpp_stanza_t *ns = xmpp_stanza_get_children(perm); ns;
                 ns = xmpp_stanza_get_next(ns)) {
                const char *nsname, *nstype;
                if (!xmpp_stanza_is_tag(ns) || strcmp(xmpp_stanza_get_name(ns), "namespace"))
                    continue;
                nsname = xmpp_stanza_get_attribute(ns, "ns");
                nstype = xmpp_stanza_get_attribute(ns, "type");
                if (nsname && strcmp(nsname, NS_PUBSUB) == 0 && nstype &&
                    (strcmp(nstype, "set") == 0 || strcmp(nstype, "both") == 0))
                    g->pubsub_set = true;
            }
            type = g->pubsub_set ? "pubsub-set" : "other";
        }
        if (used < sizeof perms)
            used += (size_t)snprintf(perms + used, sizeof perms - used, "%s%s=%s",
                                     used ? "," : "", access, type ? type : "?");
    }
    log_notice("pep", "event=privileges domain=%s xep0356_version=%s perms=\"%s\" pep=%s",
               from_domain, g->version, perms, g->pubsub_set ? "on" : "off");
    if (!g->pubsub_set && p->d->cfg->publish_pep)
        explain(p, g, from_domain,
                strcmp(g->version, "1") == 0
                    ? "privileges are XEP-0356 v1 (no IQ permission): ejabberd needs 24.10 or "
                      "later for privileged pubsub"
                    : "no IQ permission for http://jabber.org/protocol/pubsub set");
    update_metric(p);
    /* Everything published before may be stale (a restart, a grant that was off). */
    if (g->pubsub_set && p->ops.on_granted)
        p->ops.on_granted(p->arg, from_domain);
    return true;
}

bool pep_on_iq(struct pep *p, xmpp_stanza_t *iq)
{
    const char *id = xmpp_stanza_get_id(iq), *type = xmpp_stanza_get_type(iq);
    const char *from = xmpp_stanza_get_from(iq);
    xmpp_stanza_t *inner = NULL, *err;
    const char *condition = "undefined-condition";

    if (!id || strncmp(id, ID_PREFIX, strlen(ID_PREFIX)) != 0)
        return false;
    if (type && strcmp(type, "result") == 0) {
        /* The answer of the user's server is forwarded inside <privilege><forwarded>. */
        xmpp_stanza_t *priv = xmpp_stanza_get_child_by_name(iq, "privilege");
        xmpp_stanza_t *fwd = priv ? xmpp_stanza_get_child_by_ns(priv, NS_FORWARD) : NULL;
        inner = fwd ? xmpp_stanza_get_child_by_name(fwd, "iq") : NULL;
        if (!inner || !xmpp_stanza_get_type(inner) ||
            strcmp(xmpp_stanza_get_type(inner), "error") != 0) {
            metric_inc(m_publish, "ok");
            return true;
        }
    }
    err = xmpp_stanza_get_child_by_name(inner ? inner : iq, "error");
    for (xmpp_stanza_t *c = err ? xmpp_stanza_get_children(err) : NULL; c;
         c = xmpp_stanza_get_next(c)) {
        if (xmpp_stanza_is_tag(c) && strcmp(xmpp_stanza_get_name(c), "text") != 0) {
            condition = xmpp_stanza_get_name(c);
            break;
        }
    }
    metric_inc(m_publish, "error");
    metric_inc(m_priv_errors, priv_condition_label(condition));
    log_warn("pep", "event=publish_refused user=%s condition=%s", from ? from : "?", condition);
    /* Publish again on the next change instead of believing it is out there. */
    if (from) {
        char bare[JID_MAX + 1];
        struct published *pub = jid_to_bare(from, bare, sizeof bare) == 0
                                    ? strmap_get(&p->published, bare)
                                    : NULL;
        if (pub)
            pub->sig[0] = '\0';
    }
    return true;
}

struct pep *pep_new(struct event_base *base, const struct users *d,
                    const struct stanza_out *out, const struct pep_ops *ops, void *arg)
{
    struct pep *p = xcalloc(1, sizeof *p);

    p->d = d;
    p->out = out;
    p->ops = *ops;
    p->arg = arg;
    strmap_init(&p->grants);
    strmap_init(&p->published);
    p->wait = evtimer_new(base, on_wait, p);
    return p;
}

void pep_free(struct pep *p)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!p)
        return;
    while (strmap_next(&p->grants, &pos, &k, &v)) {
        struct grant *g = v;
        free(g->domain);
        free(g);
    }
    strmap_free(&p->grants);
    for (pos = 0; strmap_next(&p->published, &pos, &k, &v);)
        published_free(v);
    strmap_free(&p->published);
    event_free(p->wait);
    free(p);
}
