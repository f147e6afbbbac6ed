/* The user's own status: XEP-0108 User Activity and XEP-0152 Reachability published into
 * each user's PEP through XEP-0356 privileged IQs (privileged.c), without ever destroying
 * what the user published there.
 *
 * XEP-0163 gives a node no per-publisher items, and a PEP node usually keeps one item
 * (Prosody's default max_items is 1): a publish replaces whatever the user had there. So
 * every write is preceded by a read of the node (which needs the IQ permission for pubsub
 * get as well as set), and offhook's items carry the id PEP_ITEM_ID:
 *
 *   - the node holds nothing, or offhook's own item: it is written as the view says
 *     (only if that differs from what is there: no duplicate notifications);
 *   - the activity node holds the user's own item when a call starts: offhook covers it
 *     for the call with "on the phone", carrying the user's item inside its own
 *     (<previous/>, offhook's namespace), and puts it back, under its own id, when the
 *     call ends; the copy lives in the node itself, so a restart loses nothing;
 *   - the user publishes during a call: theirs wins; offhook leaves the node alone until
 *     the next call;
 *   - the reach node holds the user's own item: offhook leaves it alone.
 *
 * Items are published with publish-options access_model=presence; a node the user set
 * to a narrower model (whitelist, roster, authorize) is written under that model, one
 * set to open (wider than the user's presence subscribers) is not written at all. Each
 * such decision is counted and said once per user and node. Where the server grants only
 * pubsub set, nothing is written (it would be blind): said once per domain.
 * Called by publisher.c (views) and main.c (the stream, the grants). */
#include "pep.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "stanza.h"
#include "strutil.h"

#define PREVIOUS_MAX 4096      /* largest user item offhook keeps to put back (serialised) */

enum node { NODE_ACTIVITY, NODE_REACH, NODE_MAX };
static const char *const node_names[NODE_MAX] = {NS_ACTIVITY, NS_REACH};
static const char *const node_short[NODE_MAX] = {"activity", "reach"};

/* publish-options access models tried in turn when a node's differs: presence first,
 * then the ones narrower than it. An open node is never written. */
static const char *const models[] = {"presence", "whitelist", "roster", "authorize"};
#define NMODELS ((int)(sizeof models / sizeof models[0]))

/* One node of one user. Contents are compared by a 64-bit hash of their signature (see
 * activity_sig, reach_sig), so the state stays small at many users. */
struct node_state {
    uint64_t want;            /* what the view asks for */
    uint64_t done;            /* the node was last left satisfying this (0: unknown) */
    bool busy;                /* a read or write is in flight */
    bool again;               /* the view changed meanwhile: sync once it is answered */
    bool covered;             /* activity: offhook covered the user's item for this call */
    bool yielded;             /* activity: the user published over it during this call */
    int model;                /* index into models: the node's access model, as learned */
    int adopted;              /* the narrower model last reported (0: none) */
    unsigned gen;             /* requests issued: an answer for an older one is stale */
    const char *said;         /* the decision last logged for this node (static), or NULL */
    /* For the control socket (pep_status): the last answer, none of it decides anything. */
    int64_t answer_ms;        /* wall clock, 0: none yet */
    const char *result;       /* static: "ok", "refused", "timeout", "lost" */
    char condition[32];       /* of a refusal */
    bool read;                /* ... to a read (else a write) */
};

struct pep_user {
    char *jid;                /* the key in pep.users (owned) */
    bool talking;             /* the view last handed */
    char activity[64];
    bool reachable;
    struct node_state n[NODE_MAX];
};

/* What one request was for; freed by its answer. */
enum req_kind { REQ_READ, REQ_WRITE };
struct request {
    struct pep *p;
    enum node node;
    enum req_kind kind;
    unsigned gen;
    uint64_t sig;             /* REQ_WRITE: what the node satisfies once it succeeds */
    bool ours_talking;        /* REQ_WRITE: it puts offhook's "on the phone" there */
    xmpp_stanza_t *item;      /* REQ_WRITE: the <item/> published, kept for a retry under
                                 another access model (owned) */
    int tries;                /* REQ_WRITE: access models tried */
};

struct pep {
    const struct users *d;
    const struct stanza_out *out;
    struct privileged *priv;
    struct strmap users;      /* user JID -> struct pep_user* (owned) */
    struct strmap explained;  /* domains told about in this stream (owned keys) */
};

static struct metric *m_enabled, *m_publish, *m_skipped, *m_model;

void pep_register_metrics(void)
{
    m_enabled = metric_new(METRIC_GAUGE, "offhook_pep_domains",
                           "Users' domains whose server granted the IQ permission for pubsub "
                           "get and set (PEP publishing on) or not.",
                           "granted", (const char *const[]){"yes", "no", NULL});
    m_publish = metric_new(METRIC_COUNTER, "offhook_pep_publishes_total",
                           "Privileged PEP publishes (activity, reachability), by outcome.",
                           "result", (const char *const[]){"sent", "ok", "error", NULL});
    m_skipped = metric_new(METRIC_COUNTER, "offhook_pep_skipped_total",
                           "PEP writes not made to leave the user's own things alone: the node "
                           "held the user's item (user_item) or was open to anyone (open_node).",
                           "reason", (const char *const[]){"user_item", "open_node", NULL});
    m_model = metric_new(METRIC_COUNTER, "offhook_pep_model_adopted_total",
                         "Users' PEP nodes found set to an access model narrower than presence, "
                         "and written under it.",
                         "model", (const char *const[]){"whitelist", "roster", "authorize", NULL});
}

/* ---- signatures ------------------------------------------------------------------------ */

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h ? h : 1; /* 0 means unknown */
}

static xmpp_stanza_t *first_tag(xmpp_stanza_t *st)
{
    xmpp_stanza_t *c = st ? xmpp_stanza_get_children(st) : NULL;

    while (c && !xmpp_stanza_is_tag(c))
        c = xmpp_stanza_get_next(c);
    return c;
}

/* "general/specific|text" of an <activity/>, "" for an empty one (what a client shows). */
static void activity_sig(xmpp_stanza_t *act, char *out, size_t len)
{
    const char *general = "", *specific = "";
    char *text = NULL;
    xmpp_stanza_t *t;

    for (xmpp_stanza_t *c = first_tag(act); c; c = xmpp_stanza_get_next(c)) {
        const char *ns = xmpp_stanza_get_ns(c);
        if (!xmpp_stanza_is_tag(c) || (ns && strcmp(ns, NS_ACTIVITY) != 0))
            continue;
        if (strcmp(xmpp_stanza_get_name(c), "text") != 0 && !general[0]) {
            xmpp_stanza_t *s = first_tag(c);
            general = xmpp_stanza_get_name(c);
            specific = s ? xmpp_stanza_get_name(s) : "";
        }
    }
    t = act ? xmpp_stanza_get_child_by_name(act, "text") : NULL;
    text = t ? xmpp_stanza_get_text(t) : NULL;
    if (!general[0] && !(text && *text))
        out[0] = '\0';
    else
        snprintf(out, len, "%s/%s|%s", general, specific, text ? text : "");
    if (text)
        xmpp_free(xmpp_stanza_get_context(act), text);
}

/* The addresses of a <reach/>, space-separated, "" for none. */
static void reach_sig(xmpp_stanza_t *reach, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (xmpp_stanza_t *c = first_tag(reach); c; c = xmpp_stanza_get_next(c)) {
        const char *uri;
        if (!xmpp_stanza_is_tag(c) || strcmp(xmpp_stanza_get_name(c), "addr") != 0)
            continue;
        uri = xmpp_stanza_get_attribute(c, "uri");
        if (uri && used < len)
            used += (size_t)snprintf(out + used, len - used, "%s%s", used ? " " : "", uri);
    }
}

static uint64_t payload_hash(enum node node, xmpp_stanza_t *payload)
{
    char sig[2048];

    if (node == NODE_ACTIVITY)
        activity_sig(payload, sig, sizeof sig);
    else
        reach_sig(payload, sig, sizeof sig);
    return hash(sig);
}

/* The payload the view asks for (the caller owns it). */
static xmpp_stanza_t *build(struct pep *p, const struct cuser *u, const struct pep_user *pu,
                            enum node node)
{
    xmpp_ctx_t *ctx = p->out->ctx;
    xmpp_stanza_t *act;

    if (node == NODE_REACH)
        return view_reach(ctx, u, pu->reachable);
    act = xmpp_stanza_new(ctx);
    xmpp_stanza_set_name(act, "activity");
    xmpp_stanza_set_ns(act, NS_ACTIVITY);
    if (pu->talking) {
        xmpp_stanza_t *general = stanza_child(ctx, act, "talking", NULL);
        stanza_child(ctx, general, "on_the_phone", NULL);
        stanza_text_child(ctx, act, "text", pu->activity);
    }
    return act;
}

static uint64_t want_hash(struct pep *p, const struct cuser *u, const struct pep_user *pu,
                          enum node node)
{
    xmpp_stanza_t *payload = build(p, u, pu, node);
    uint64_t h = payload_hash(node, payload);

    xmpp_stanza_release(payload);
    return h;
}

/* ---- saying things once ------------------------------------------------------------- */

static void say(struct pep_user *pu, enum node node, const char *decision, const char *line)
{
    struct node_state *n = &pu->n[node];

    if (n->said && strcmp(n->said, decision) == 0)
        return;
    n->said = decision;
    log_notice("pep", "event=%s user=%s node=%s %s", decision, log_q(pu->jid), node_short[node],
               line);
}

static void skip(struct pep_user *pu, enum node node, const char *reason, const char *line)
{
    metric_inc(m_skipped, reason);
    say(pu, node, reason, line);
}

static void update_metric(struct pep *p)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int yes = 0, no = 0;

    while (strmap_next(&p->d->user_domains, &pos, &k, &v)) {
        if (priv_may(p->priv, k, PRIV_PUBSUB, PRIV_GET) && priv_may(p->priv, k, PRIV_PUBSUB, PRIV_SET))
            yes++;
        else
            no++;
    }
    metric_set(m_enabled, "yes", yes);
    metric_set(m_enabled, "no", no);
}

static void explain(struct pep *p, const char *domain, const char *why)
{
    if (!p->d->cfg->publish_pep || strmap_get(&p->explained, domain))
        return;
    {
        char *k = xstrdup(domain);
        strmap_put(&p->explained, k, k);
    }
    log_warn("pep", "event=pep_off domain=%s reason=\"%s\" note=\"phone contacts still "
                    "work\"",
             log_q(domain), why);
}

void pep_granted(struct pep *p, const char *domain)
{
    bool get = priv_may(p->priv, domain, PRIV_PUBSUB, PRIV_GET);
    bool set = priv_may(p->priv, domain, PRIV_PUBSUB, PRIV_SET);

    log_notice("pep", "event=grant domain=%s pep=%s", log_q(domain),
               get && set && p->d->cfg->publish_pep ? "on" : "off");
    if (set && !get)
        explain(p, domain, "the server grants pubsub set but not get: offhook reads a node "
                           "before writing it so as never to overwrite what the user "
                           "published there; grant both");
    else if (!set && !get)
        explain(p, domain, "no IQ permission for http://jabber.org/protocol/pubsub (XEP-0356 "
                           "v1 has none: ejabberd needs 24.10 or later)");
    else if (!set)
        explain(p, domain, "the server grants pubsub get but not set; grant both");
    update_metric(p);
}

void pep_missing(struct pep *p, const char *domain)
{
    explain(p, domain, "the server sent no XEP-0356 <privilege/> for this domain "
                       "(mod_privilege not enabled or no privileged_entities entry)");
    update_metric(p);
}

/* ---- requests ---------------------------------------------------------------------- */

static void on_answer(void *arg, const char *user, const struct priv_answer *a);
static void sync_node(struct pep *p, const struct cuser *u, struct pep_user *pu, enum node node);

static struct request *request_new(struct pep *p, struct pep_user *pu, enum node node,
                                   enum req_kind kind)
{
    struct request *r = xcalloc(1, sizeof *r);

    r->p = p;
    r->node = node;
    r->kind = kind;
    r->gen = ++pu->n[node].gen;
    return r;
}

static void request_free(struct request *r)
{
    if (r->item)
        xmpp_stanza_release(r->item);
    free(r);
}

static void send_read(struct pep *p, struct pep_user *pu, enum node node)
{
    xmpp_ctx_t *ctx = p->out->ctx;
    xmpp_stanza_t *pubsub = xmpp_stanza_new(ctx), *items;
    struct request *r = request_new(p, pu, node, REQ_READ);

    xmpp_stanza_set_name(pubsub, "pubsub");
    xmpp_stanza_set_ns(pubsub, NS_PUBSUB);
    items = stanza_child(ctx, pubsub, "items", NULL);
    xmpp_stanza_set_attribute(items, "node", node_names[node]);
    xmpp_stanza_set_attribute(items, "max_items", "1");
    pu->n[node].busy = true;
    if (priv_request(p->priv, pu->jid, PRIV_GET, pubsub, on_answer, r) < 0) {
        pu->n[node].busy = false;
        request_free(r);
    }
}

/* <publish-options>: the node must have this access model (XEP-0223). */
static void publish_options(xmpp_ctx_t *ctx, xmpp_stanza_t *pubsub, const char *model)
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
    stanza_text_child(ctx, f, "value", model);
}

/* Sends r's item under the node's access model as learned; r goes to the answer. */
static void send_write(struct pep *p, struct pep_user *pu, struct request *r)
{
    xmpp_ctx_t *ctx = p->out->ctx;
    xmpp_stanza_t *pubsub = xmpp_stanza_new(ctx), *publish;

    xmpp_stanza_set_name(pubsub, "pubsub");
    xmpp_stanza_set_ns(pubsub, NS_PUBSUB);
    publish = stanza_child(ctx, pubsub, "publish", NULL);
    xmpp_stanza_set_attribute(publish, "node", node_names[r->node]);
    xmpp_stanza_add_child_ex(publish, xmpp_stanza_copy(r->item), 0);
    publish_options(ctx, pubsub, models[pu->n[r->node].model]);
    pu->n[r->node].busy = true;
    if (priv_request(p->priv, pu->jid, PRIV_SET, pubsub, on_answer, r) < 0) {
        pu->n[r->node].busy = false;
        request_free(r);
        return;
    }
    metric_inc(m_publish, "sent");
}

/* Publishes payload (taken) under id; the node then satisfies sig. */
static void write_item(struct pep *p, struct pep_user *pu, enum node node, const char *id,
                       xmpp_stanza_t *payload, uint64_t sig, bool ours_talking)
{
    struct request *r = request_new(p, pu, node, REQ_WRITE);

    r->item = xmpp_stanza_new(p->out->ctx);
    xmpp_stanza_set_name(r->item, "item");
    xmpp_stanza_set_id(r->item, id);
    xmpp_stanza_add_child_ex(r->item, payload, 0);
    r->sig = sig;
    r->ours_talking = ours_talking;
    send_write(p, pu, r);
}

/* ---- deciding ----------------------------------------------------------------------- */

/* What a read found: the node's item (borrowed from the answer) and whose it is. */
struct found {
    xmpp_stanza_t *payload;   /* the item's payload, NULL for none */
    const char *id;
    bool ours;                /* offhook's own item */
    xmpp_stanza_t *previous;  /* activity: the user's item offhook keeps inside its own */
    const char *previous_id;
};

/* Items offhook published before it had its own id: "current", with a content only it
 * writes. Treated as its own, so an upgrade does not leave a stale "on the phone". */
static bool legacy_ours(enum node node, const struct cuser *u, const struct pep_user *pu,
                        struct found *f, struct pep *p)
{
    char sig[2048];

    if (!f->id || strcmp(f->id, "current") != 0)
        return false;
    if (node == NODE_ACTIVITY) {
        activity_sig(f->payload, sig, sizeof sig);
        return !sig[0] || !strcmp(sig, "talking/on_the_phone|On the phone") ||
               !strcmp(sig, "talking/on_the_phone|On hold");
    }
    reach_sig(f->payload, sig, sizeof sig);
    if (!sig[0])
        return true;
    {
        struct pep_user all = *pu;
        all.reachable = true;
        return hash(sig) == want_hash(p, u, &all, NODE_REACH);
    }
}

static void read_found(xmpp_stanza_t *pubsub, struct found *f)
{
    xmpp_stanza_t *items = pubsub ? xmpp_stanza_get_child_by_name(pubsub, "items") : NULL;
    xmpp_stanza_t *item = items ? xmpp_stanza_get_child_by_name(items, "item") : NULL;

    memset(f, 0, sizeof *f);
    if (!item)
        return;
    f->payload = first_tag(item);
    if (!f->payload)
        return; /* an item without payload: nothing shown */
    f->id = xmpp_stanza_get_id(item);
    f->ours = f->id && strcmp(f->id, PEP_ITEM_ID) == 0;
    if (f->ours) {
        xmpp_stanza_t *prev = xmpp_stanza_get_child_by_name_and_ns(f->payload, "previous",
                                                                   NS_OFFHOOK_PREVIOUS);
        const char *pid = prev ? xmpp_stanza_get_id(prev) : NULL;
        /* A previous under offhook's own id would be taken for offhook's next time. */
        if (prev && first_tag(prev) && pid && *pid && strcmp(pid, PEP_ITEM_ID) != 0) {
            f->previous = first_tag(prev);
            f->previous_id = pid;
        }
    }
}

/* Offhook's "on the phone", carrying prev (the user's item, copied) if any. */
static xmpp_stanza_t *covering(struct pep *p, const struct cuser *u, struct pep_user *pu,
                               xmpp_stanza_t *prev, const char *prev_id)
{
    xmpp_stanza_t *act = build(p, u, pu, NODE_ACTIVITY);

    if (prev) {
        xmpp_stanza_t *keep = stanza_child(p->out->ctx, act, "previous", NS_OFFHOOK_PREVIOUS);
        xmpp_stanza_set_id(keep, prev_id);
        xmpp_stanza_add_child_ex(keep, xmpp_stanza_copy(prev), 0);
    }
    return act;
}

static size_t text_size(xmpp_stanza_t *st)
{
    char *text = NULL;
    size_t len = 0;

    if (xmpp_stanza_to_text(st, &text, &len) != XMPP_EOK)
        return (size_t)-1;
    xmpp_free(xmpp_stanza_get_context(st), text);
    return len;
}

static void decide_activity(struct pep *p, const struct cuser *u, struct pep_user *pu,
                            struct found *f)
{
    struct node_state *n = &pu->n[NODE_ACTIVITY];
    bool want_talking = pu->talking;

    if (!f->payload) {
        if (!want_talking) {
            n->done = n->want; /* nothing there, nothing to clear */
            n->covered = n->yielded = false;
            return;
        }
        write_item(p, pu, NODE_ACTIVITY, PEP_ITEM_ID, covering(p, u, pu, NULL, NULL), n->want,
                   true);
        return;
    }
    if (f->ours) {
        if (payload_hash(NODE_ACTIVITY, f->payload) == n->want) {
            n->done = n->want;
            n->covered = want_talking;
            return;
        }
        if (want_talking) {
            write_item(p, pu, NODE_ACTIVITY, PEP_ITEM_ID,
                       covering(p, u, pu, f->previous, f->previous_id), n->want, true);
        } else if (f->previous) {
            /* The call is over: the user's own activity goes back, under its own id. */
            write_item(p, pu, NODE_ACTIVITY, f->previous_id, xmpp_stanza_copy(f->previous),
                       n->want, false);
            log_info("pep", "event=activity_restored user=%s note=\"the user's own activity, "
                            "covered during the call\"",
                     log_q(pu->jid));
        } else {
            write_item(p, pu, NODE_ACTIVITY, PEP_ITEM_ID, build(p, u, pu, NODE_ACTIVITY),
                       n->want, false);
        }
        return;
    }
    /* The user's own item. */
    if (!want_talking) {
        n->done = n->want; /* nothing of offhook's there to clear */
        n->covered = n->yielded = false;
        return;
    }
    if (n->covered || n->yielded) {
        /* The user published during the call: theirs wins until the next one. */
        n->yielded = true;
        n->covered = false;
        n->done = n->want;
        skip(pu, NODE_ACTIVITY, "user_item",
             "decision=leave_it reason=\"the user published an activity during the call\"");
        return;
    }
    if (!f->id || !*f->id || text_size(f->payload) > PREVIOUS_MAX) {
        n->done = n->want;
        skip(pu, NODE_ACTIVITY, "user_item",
             "decision=leave_it reason=\"the user's activity is too large (or has no item id) "
             "to keep and put back\"");
        return;
    }
    write_item(p, pu, NODE_ACTIVITY, PEP_ITEM_ID, covering(p, u, pu, f->payload, f->id),
               n->want, true);
}

static void decide_reach(struct pep *p, const struct cuser *u, struct pep_user *pu,
                         struct found *f)
{
    struct node_state *n = &pu->n[NODE_REACH];

    if (f->payload && !f->ours) {
        n->done = n->want;
        skip(pu, NODE_REACH, "user_item",
             "decision=leave_it reason=\"the node holds reachability addresses the user "
             "published\"");
        return;
    }
    if (payload_hash(NODE_REACH, f->payload) == n->want ||
        (!f->payload && !pu->reachable)) {
        n->done = n->want; /* already there: contacts get no duplicate */
        return;
    }
    write_item(p, pu, NODE_REACH, PEP_ITEM_ID, build(p, u, pu, NODE_REACH), n->want, false);
}

/* A write was refused for the node's access model (XEP-0060 precondition-not-met): the
 * next narrower model, or, once none fits, the node is open and left alone. */
static void retry_model(struct pep *p, struct pep_user *pu, struct request *r)
{
    struct node_state *n = &pu->n[r->node];

    if (++r->tries >= NMODELS) {
        n->done = n->want;
        n->model = 0;
        skip(pu, r->node, "open_node",
             "decision=leave_it reason=\"the node's access model is wider than the user's "
             "presence subscribers (open): offhook shows phone state to no one the user did "
             "not accept\"");
        request_free(r);
        return;
    }
    n->model = (n->model + 1) % NMODELS;
    r->gen = ++n->gen;
    send_write(p, pu, r);
}

/* A write went through under the node's model: if that is not presence and it is new
 * for this node, the user narrowed it; counted and said once. */
static void model_written(struct pep_user *pu, enum node node)
{
    struct node_state *n = &pu->n[node];
    char line[160];

    if (n->model == 0 || n->model == n->adopted)
        return;
    n->adopted = n->model;
    metric_inc(m_model, models[n->model]);
    snprintf(line, sizeof line, "access_model=%s note=\"the user narrowed this node: offhook "
                                "writes under its model\"",
             models[n->model]);
    say(pu, node, "node_model", line);
}

static void on_answer(void *arg, const char *user, const struct priv_answer *a)
{
    struct request *r = arg;
    struct pep *p = r->p;
    struct pep_user *pu = strmap_get(&p->users, user);
    const struct cuser *u = users_by_jid(p->d, user);
    enum node node = r->node;
    struct node_state *n;
    struct found f;

    if (!pu || !u || pu->n[node].gen != r->gen) {
        request_free(r); /* forgotten, or superseded by a new stream */
        return;
    }
    n = &pu->n[r->node];
    n->busy = false;
    n->answer_ms = clock_wall_ms();
    n->read = r->kind == REQ_READ;
    n->result = a->result == PRIV_OK ? "ok" : a->result == PRIV_ERROR ? "refused"
              : a->result == PRIV_TIMEOUT ? "timeout" : "lost";
    str_copy_utf8(n->condition, sizeof n->condition,
                  a->result == PRIV_ERROR && a->condition ? a->condition : "");
    log_trace(&u->trace, "pep", "event=trace_pep_answer user=%s node=%s request=%s result=%s "
                                "condition=%s",
              u->jid, node_short[node], n->read ? "read" : "write", n->result,
              n->condition[0] ? log_q(n->condition) : "-");
    if (r->kind == REQ_WRITE)
        metric_inc(m_publish, a->result == PRIV_OK ? "ok" : "error");
    if (a->result == PRIV_ERROR && r->kind == REQ_WRITE && a->app_condition &&
        strcmp(a->app_condition, "precondition-not-met") == 0) {
        retry_model(p, pu, r);
        goto out;
    }
    if (a->result == PRIV_OK && r->kind == REQ_WRITE) {
        model_written(pu, node);
        n->done = r->sig;
        if (r->node == NODE_ACTIVITY) {
            n->covered = r->ours_talking;
            n->yielded = false;
        }
    } else if (r->kind == REQ_READ &&
               (a->result == PRIV_OK ||
                (a->result == PRIV_ERROR && !strcmp(a->condition, "item-not-found")))) {
        /* item-not-found: no such node yet, i.e. nothing there. */
        read_found(a->result == PRIV_OK ? a->payload : NULL, &f);
        if (f.payload && !f.ours)
            f.ours = legacy_ours(r->node, u, pu, &f, p);
        if (r->node == NODE_ACTIVITY)
            decide_activity(p, u, pu, &f);
        else
            decide_reach(p, u, pu, &f);
    } else if (a->result == PRIV_ERROR) {
        /* Publish again on the next change instead of believing it is out there. A
         * refusal of the account itself is privileged.c's to log, once per round for
         * all the users refused (at 10,000 users with 2,000 lacking an account, one line
         * per request was 4,000 lines at each start). */
        n->done = 0;
        LOG_AT(a->refused ? LOG_DEBUG : LOG_WARNING, "pep",
               "event=%s user=%s node=%s condition=%s",
               r->kind == REQ_READ ? "read_refused" : "publish_refused", log_q(user),
               node_short[r->node], log_q(a->condition));
    } else {
        n->done = 0; /* timeout, or the stream went down: unknown */
    }
    request_free(r);
out:
    if (!n->busy && n->again) {
        n->again = false;
        sync_node(p, u, pu, node);
    }
}

/* Reads the node if what the view wants differs from what it was last left with. */
static void sync_node(struct pep *p, const struct cuser *u, struct pep_user *pu, enum node node)
{
    struct node_state *n = &pu->n[node];

    if (n->busy) {
        n->again = true;
        return;
    }
    if (n->want == n->done)
        return;
    send_read(p, pu, node);
}

void pep_user(struct pep *p, const struct cuser *u, const struct user_view *v, bool force)
{
    struct pep_user *pu;
    struct jid j;

    if (!p || !p->d->cfg->publish_pep || !stanza_out_up(p->out) || jid_parse(u->jid, &j) < 0)
        return;
    if (!priv_may(p->priv, j.domain, PRIV_PUBSUB, PRIV_GET) ||
        !priv_may(p->priv, j.domain, PRIV_PUBSUB, PRIV_SET))
        return; /* said once per domain (pep_granted, pep_missing) */
    pu = strmap_get(&p->users, u->jid);
    if (!pu) {
        pu = xcalloc(1, sizeof *pu);
        pu->jid = xstrdup(u->jid);
        strmap_put(&p->users, pu->jid, pu);
    }
    pu->talking = v->talking;
    str_copy(pu->activity, sizeof pu->activity, v->activity);
    pu->reachable = v->reachable;
    for (int i = 0; i < NODE_MAX; i++) {
        struct node_state *n = &pu->n[i];
        n->want = want_hash(p, u, pu, i);
        if (force)
            n->done = 0;
        log_trace(&u->trace, "pep", "event=trace_pep_view user=%s node=%s talking=%s "
                                    "reachable=%s in_sync=%s busy=%s force=%s",
                  u->jid, node_short[i], v->talking ? "yes" : "no", v->reachable ? "yes" : "no",
                  n->want == n->done ? "yes" : "no", n->busy ? "yes" : "no",
                  force ? "yes" : "no");
        sync_node(p, u, pu, i);
    }
}

static void pep_user_free(struct pep_user *pu)
{
    free(pu->jid);
    free(pu);
}

void pep_forget(struct pep *p, const struct cuser *u)
{
    struct pep_user *pu = strmap_del(&p->users, u->jid);

    if (pu)
        pep_user_free(pu);
}

void pep_connected(struct pep *p)
{
    size_t pos = 0;
    const char *k;
    void *v;

    /* Answers of the old stream ended PRIV_LOST (privileged.c); nothing is known now. */
    while (strmap_next(&p->users, &pos, &k, &v)) {
        struct pep_user *pu = v;
        for (int i = 0; i < NODE_MAX; i++) {
            struct node_state *n = &pu->n[i];
            n->done = 0;
            n->busy = n->again = false;
            n->model = 0;
            n->gen++;
        }
    }
    strmap_clear_owned(&p->explained);
}

struct pep *pep_new(const struct users *d, const struct stanza_out *out,
                    struct privileged *priv)
{
    struct pep *p = xcalloc(1, sizeof *p);

    p->d = d;
    p->out = out;
    p->priv = priv;
    strmap_init(&p->users);
    strmap_init(&p->explained);
    return p;
}

void pep_free(struct pep *p)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!p)
        return;
    while (strmap_next(&p->users, &pos, &k, &v))
        pep_user_free(v);
    strmap_free(&p->users);
    strmap_clear_owned(&p->explained);
    strmap_free(&p->explained);
    free(p);
}

void pep_status(const struct pep *p, const struct cuser *u, struct pep_status *out)
{
    const struct pep_user *pu = strmap_get(&p->users, u->jid);
    struct jid j;

    memset(out, 0, sizeof *out);
    out->enabled = p->d->cfg->publish_pep;
    if (jid_parse(u->jid, &j) == 0) {
        out->advertised = priv_advertised(p->priv, j.domain);
        out->may_get = priv_may(p->priv, j.domain, PRIV_PUBSUB, PRIV_GET);
        out->may_set = priv_may(p->priv, j.domain, PRIV_PUBSUB, PRIV_SET);
    }
    for (int i = 0; i < NODE_MAX; i++) {
        struct pep_node_status *o = &out->node[i];
        const struct node_state *n = pu ? &pu->n[i] : NULL;
        o->node = node_short[i];
        o->result = "";
        o->condition = "";
        if (!n)
            continue;
        o->known = true;
        o->in_sync = n->done != 0 && n->want == n->done;
        o->busy = n->busy;
        o->decision = n->said;
        o->model = models[n->model];
        o->covered = n->covered;
        o->yielded = n->yielded;
        o->answer_ms = n->answer_ms;
        o->answer_to_read = n->read;
        o->result = n->result ? n->result : "";
        o->condition = n->condition;
    }
}
