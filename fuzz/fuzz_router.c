/* libFuzzer target: the component's stanza handling. Each input is one stanza's XML as
 * the XMPP server would deliver it; libstrophe parses it (xmpp_stanza_new_from_string)
 * and router_stanza() handles it with the daemon's own offhook_router library (router.c,
 * publisher.c, presence_out.c, pep.c, privileged.c over users.c and view.c), wired here
 * as main.c wires it, less the links: what the daemon would send leaves through the
 * stanza_out hook to out_send() below instead of xmpplink.c. Each stanza is serialised
 * and checked:
 *
 *   - every stanza sent has a to and a from, and the from is on the component's domain;
 *   - an available presence (one that carries phone state) goes only to a JID the watcher
 *     policy allows (same-domain: localhost), never to a stranger;
 *   - a privileged request goes only to a configured user's own JID;
 *   - a vCard (name, desk number, the person's address; vcard-temp, vCard4 or its PEP
 *     item) or a gateway answer goes only to a JID the policy allows;
 *   - a message (the pointer to the person behind a phone contact) comes from a contact
 *     and goes only to the sender of the stanza at hand, whom the policy allows;
 *   - an error reply goes back to the stanza's sender and never quotes a user's state;
 *   - every stanza is valid UTF-8 and XML character data as built, so the link's repair
 *     (stanza_scrub) never has anything to do: alice's record names the other party with
 *     bytes taken from the input (bit 7 flipped in every other byte, so they are no
 *     longer the UTF-8 the parser checked), decoded and checked as feed.c does with what
 *     Redis holds.
 *
 * The XMPP server's side of XEP-0356 is played here too: the server grants pubsub get
 * and set, and alice's activity and reach nodes are modelled (one item each, as
 * Prosody's PEP keeps). Every privileged request is answered as Prosody's mod_privilege
 * answers (from the user's bare JID, the wrapped answer forwarded), through the router
 * like any stanza; and each write is checked:
 *
 *   - no publish ever destroys an item the user published: it may replace it only by
 *     the same item, or by offhook's own whose <previous/> holds it (activity);
 *   - after alice's call ends, her node holds her own item again;
 *   - a vCard write (vcard-temp, or the vCard4 item, for half the inputs one or the
 *     other) keeps every element alice wrote, in order, and leaves the node's
 *     configuration alone (no publish-options).
 *
 * What alice had published comes from the input when the input carries a
 * <pubsub><items><item/> (so the fuzzer shapes it), else from a fixed item; the node's
 * access model and whether it exists follow a hash of the input.
 *
 * Redis is not there: a subscription the router reports (router_ops) is checked against
 * the policy and kept in the users' in-memory sets, as watchers.c would keep it, and the
 * feed counts as in sync, so state-carrying paths run. The component is rebuilt for
 * every input (users, watchers, PEP grants, nodes), so no input depends on another. */
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <strophe.h>

#include "config.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "pep.h"
#include "presence_out.h"
#include "privileged.h"
#include "publisher.h"
#include "router.h"
#include "stanza.h"
#include "storecodec.h"
#include "strmap.h"
#include "strutil.h"
#include "users.h"
#include "vcard_out.h"

#include "fuzz_util.h"

#define DOMAIN "phone.localhost"
#define ALICE "alice@localhost"
#define QUEUE_MAX 64   /* privileged requests waiting for the simulated server */
#define ROUNDS 16      /* answer rounds at most per step */

static const char config_text[] =
    "[sip]\n"
    "listen = udp:127.0.0.1:5070\n"
    "pbx = sip:127.0.0.1:5060\n"
    "[xmpp]\n"
    "host = 127.0.0.1\n"
    "port = 5347\n"
    "domain = " DOMAIN "\n"
    "secret = fuzz-secret\n"
    "[component]\n"
    "publish = contacts, pep, vcard\n"
    "[users]\n"
    "alice@localhost = sip:1001@127.0.0.1\n"
    "bob@localhost = sip:1002@127.0.0.1, sip:1002@desk.example\n"
    "carol@other.example = sip:2001@127.0.0.1\n"
    "[user alice@localhost]\n"
    "name = Alice Jones\n"
    "tel = +15550101001\n";

/* What Prosody's mod_privilege sends the component after the handshake: pubsub, and for
 * half the inputs vcard-temp too. */
static const char grant_xml[] =
    "<message from='localhost' to='" DOMAIN "'><privilege xmlns='urn:xmpp:privilege:2'>"
    "<perm access='iq'><namespace ns='http://jabber.org/protocol/pubsub' type='both'/>"
    "</perm></privilege></message>";
static const char grant_vcard_xml[] =
    "<message from='localhost' to='" DOMAIN "'><privilege xmlns='urn:xmpp:privilege:2'>"
    "<perm access='iq'><namespace ns='http://jabber.org/protocol/pubsub' type='both'/>"
    "<namespace ns='vcard-temp' type='both'/></perm></privilege></message>";

/* alice's own vCards, as she wrote them. */
static const char user_vcard4_xml[] =
    "<item id='current'><vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'><fn><text>Alice"
    "</text></fn><email><text>alice@example.com</text></email><tel><uri>tel:+15550199"
    "</uri></tel></vcard></item>";
static const char user_vcard_temp_xml[] =
    "<vCard xmlns='vcard-temp'><FN>Alice</FN><EMAIL><USERID>alice@example.com</USERID>"
    "</EMAIL><TEL><HOME/><NUMBER>+1 555 0199</NUMBER></TEL></vCard>";

/* What alice published herself, unless the input says otherwise. */
static const char user_item_xml[] =
    "<item id='user-1'><activity xmlns='http://jabber.org/protocol/activity'><relaxing>"
    "<reading/></relaxing><text>Lunch break</text></activity></item>";

static const char *const access_models[] = {"presence", "whitelist", "open"};

static struct offhook_config cfg;
static xmpp_ctx_t *ctx;
static struct event_base *base;

/* One of alice's PEP nodes, as the server holds it. */
struct node_model {
    const char *name;
    xmpp_stanza_t *item;   /* the one item (owned), NULL: no item */
    bool exists;           /* the node exists (a read of a missing one: item-not-found) */
    const char *model;     /* its pubsub#access_model */
};

/* One input's component, as main.c builds it (less the links), and its server. */
struct component {
    struct users users;
    struct stanza_out out;
    struct presence_out *presout;
    struct privileged *priv;
    struct pep *pep;
    struct vcard_out *vcard;
    struct publisher *pub;
    struct router *router;
    xmpp_stanza_t *in;                 /* the stanza at hand */
    xmpp_stanza_t *queue[QUEUE_MAX];   /* privileged requests to answer (owned copies) */
    int nqueue;
    struct node_model activity, reach, vcard4;
    xmpp_stanza_t *user_item;          /* what alice published herself (owned) */
    xmpp_stanza_t *vcard_temp;         /* alice's vcard-temp as the server keeps it (owned) */
    char remote[2 * STORE_REMOTE_MAX]; /* the other party in alice's record, from the input */
};

/* ---- comparing XML ----------------------------------------------------------------- */

static bool same_tree(xmpp_stanza_t *a, xmpp_stanza_t *b)
{
    const char *attrs[64];
    int n;

    if (!a || !b)
        return a == b;
    if (xmpp_stanza_is_text(a) || xmpp_stanza_is_text(b)) {
        const char *ta = xmpp_stanza_get_text_ptr(a), *tb = xmpp_stanza_get_text_ptr(b);
        return xmpp_stanza_is_text(a) && xmpp_stanza_is_text(b) && !strcmp(ta ? ta : "",
                                                                            tb ? tb : "");
    }
    if (strcmp(xmpp_stanza_get_name(a), xmpp_stanza_get_name(b)) != 0 ||
        xmpp_stanza_get_attribute_count(a) != xmpp_stanza_get_attribute_count(b))
        return false;
    n = xmpp_stanza_get_attributes(a, attrs, 64);
    for (int i = 0; i + 1 < n; i += 2) {
        const char *v = xmpp_stanza_get_attribute(b, attrs[i]);
        if (!v || strcmp(v, attrs[i + 1]) != 0)
            return false;
    }
    for (a = xmpp_stanza_get_children(a), b = xmpp_stanza_get_children(b); a || b;
         a = xmpp_stanza_get_next(a), b = xmpp_stanza_get_next(b)) {
        if (!same_tree(a, b))
            return false;
    }
    return true;
}

static xmpp_stanza_t *first_tag(xmpp_stanza_t *st)
{
    xmpp_stanza_t *c = st ? xmpp_stanza_get_children(st) : NULL;

    while (c && !xmpp_stanza_is_tag(c))
        c = xmpp_stanza_get_next(c);
    return c;
}

/* Whether the item is the user's own: not offhook's, and not of the pre-PEP_ITEM_ID
 * "current" kind offhook treats as its own (pep.c's legacy_ours). */
static bool users_own(xmpp_stanza_t *item)
{
    const char *id = item ? xmpp_stanza_get_id(item) : NULL;

    return item && first_tag(item) && (!id || (strcmp(id, PEP_ITEM_ID) != 0 &&
                                              strcmp(id, "current") != 0));
}

/* Whether item (an <item/>) is id with payload: the same id, the same payload (the item
 * element's own namespace declaration depends on where it was parsed). */
static bool same_item(xmpp_stanza_t *item, const char *id, xmpp_stanza_t *payload)
{
    const char *iid = xmpp_stanza_get_id(item);

    return id && iid && strcmp(id, iid) == 0 && same_tree(first_tag(item), payload);
}

/* Whether after holds before, the user's own item: the same item, or offhook's whose
 * <previous/> keeps it. */
static bool keeps(xmpp_stanza_t *before, xmpp_stanza_t *after)
{
    xmpp_stanza_t *prev;
    const char *id = xmpp_stanza_get_id(before);

    if (!after)
        return false;
    if (same_tree(before, after) || same_item(after, id, first_tag(before)))
        return true;
    prev = first_tag(after) ? xmpp_stanza_get_child_by_name_and_ns(first_tag(after), "previous",
                                                                   NS_OFFHOOK_PREVIOUS)
                            : NULL;
    return prev && xmpp_stanza_get_id(after) && !strcmp(xmpp_stanza_get_id(after), PEP_ITEM_ID) &&
           same_item(prev, id, first_tag(before));
}

/* Whether after's children start with every child of before, unchanged: a vCard offhook
 * added to, everything the user wrote kept. */
static bool extends(xmpp_stanza_t *before, xmpp_stanza_t *after)
{
    xmpp_stanza_t *a = xmpp_stanza_get_children(before), *b = xmpp_stanza_get_children(after);

    for (; a; a = xmpp_stanza_get_next(a), b = xmpp_stanza_get_next(b)) {
        if (!b || !same_tree(a, b))
            return false;
    }
    return true;
}

/* ---- where the component's stanzas and news go -------------------------------------- */

static bool out_up(void *arg)
{
    return true;
}

static bool has_child(xmpp_stanza_t *st, const char *name)
{
    return xmpp_stanza_get_child_by_name(st, name) != NULL;
}

/* The bare form of to is allowed to watch (the policy in the config: same-domain). */
static bool allowed_watcher(const struct component *c, const char *to)
{
    char bare[JID_MAX + 1];

    return jid_to_bare(to, bare, sizeof bare) == 0 && users_requester_allowed(&c->users, bare);
}

static int out_send(void *arg, xmpp_stanza_t *st, const char *kind)
{
    struct component *c = arg;
    const char *name = xmpp_stanza_get_name(st), *type = xmpp_stanza_get_type(st);
    const char *to = xmpp_stanza_get_to(st), *from = xmpp_stanza_get_from(st);
    struct jid fj, tj;
    char *text = NULL;
    size_t len = 0;

    FUZZ_CHECK(kind != NULL && name != NULL);
    FUZZ_CHECK(to != NULL && from != NULL);
    FUZZ_CHECK(jid_parse(from, &fj) == 0 && jid_parse(to, &tj) == 0);
    FUZZ_CHECK(strcmp(fj.domain, DOMAIN) == 0);
    FUZZ_CHECK(xmpp_stanza_to_text(st, &text, &len) == XMPP_EOK && text != NULL);
    FUZZ_CHECK(str_utf8_valid(text, len)); /* else the server closes the stream */
    FUZZ_CHECK(stanza_scrub(st, NULL) == 0);
    if (strcmp(name, "presence") == 0 && !type)
        FUZZ_CHECK(allowed_watcher(c, to)); /* phone state only to whom the policy allows */
    if (strcmp(name, "iq") == 0 && xmpp_stanza_get_child_by_name(st, "privileged_iq")) {
        /* A privileged request: only ever into a configured user's own account. */
        char bare[JID_MAX + 1];
        FUZZ_CHECK(jid_to_bare(to, bare, sizeof bare) == 0);
        FUZZ_CHECK(users_by_jid(&c->users, bare) != NULL);
        if (c->nqueue < QUEUE_MAX)
            c->queue[c->nqueue++] = xmpp_stanza_copy(st);
    }
    if (type && strcmp(type, "result") == 0 &&
        (xmpp_stanza_get_child_by_ns(st, NS_VCARD) || xmpp_stanza_get_child_by_ns(st, NS_VCARD4) ||
         xmpp_stanza_get_child_by_ns(st, NS_PUBSUB) ||
         xmpp_stanza_get_child_by_ns(st, NS_GATEWAY)))
        FUZZ_CHECK(allowed_watcher(c, to)); /* name, number, person: allowed requesters only */
    if (strcmp(name, "message") == 0 && (!type || strcmp(type, "error") != 0)) {
        /* A pointer to the person: only from a phone contact, to someone the policy allows,
         * in answer to the stanza at hand. */
        const char *in_from = xmpp_stanza_get_from(c->in);
        FUZZ_CHECK(fj.local[0] && users_by_contact(&c->users, from) != NULL);
        FUZZ_CHECK(allowed_watcher(c, to));
        FUZZ_CHECK(in_from != NULL && strcmp(to, in_from) == 0);
    }
    if (type && strcmp(type, "error") == 0) {
        /* Errors answer the stanza at hand, to its sender, and say nothing of state. */
        const char *in_from = xmpp_stanza_get_from(c->in);
        FUZZ_CHECK(in_from != NULL && strcmp(to, in_from) == 0);
        FUZZ_CHECK(!has_child(st, "show") && !has_child(st, "status"));
    }
    xmpp_free(ctx, text);
    return 0;
}

/* ---- the server's side of XEP-0356 ---------------------------------------------------- */

static struct node_model *node_of(struct component *c, const char *user, const char *node)
{
    if (!user || strcmp(user, ALICE) != 0 || !node)
        return NULL;
    if (strcmp(node, c->activity.name) == 0)
        return &c->activity;
    if (strcmp(node, c->reach.name) == 0)
        return &c->reach;
    if (strcmp(node, c->vcard4.name) == 0)
        return &c->vcard4;
    return NULL;
}

/* <iq type=result from=user><privilege><forwarded><iq type=...>payload</iq>: how
 * mod_privilege hands back the wrapped IQ's answer. Takes payload; error: a condition. */
static xmpp_stanza_t *answer(xmpp_stanza_t *req, xmpp_stanza_t *payload, const char *error,
                             const char *app_error)
{
    xmpp_stanza_t *r = stanza_reply(ctx, req, "result");
    xmpp_stanza_t *priv = stanza_child(ctx, r, "privilege", NS_PRIV2);
    xmpp_stanza_t *fwd = stanza_child(ctx, priv, "forwarded", NS_FORWARD);
    xmpp_stanza_t *inner = xmpp_iq_new(ctx, error ? "error" : "result", "inner");

    xmpp_stanza_set_ns(inner, NS_CLIENT);
    xmpp_stanza_add_child_ex(fwd, inner, 0);
    if (payload)
        xmpp_stanza_add_child_ex(inner, payload, 0);
    if (error) {
        xmpp_stanza_t *e = stanza_child(ctx, inner, "error", NULL);
        xmpp_stanza_set_type(e, "cancel");
        stanza_child(ctx, e, error, NS_STANZAS);
        if (app_error)
            stanza_child(ctx, e, app_error, "http://jabber.org/protocol/pubsub#errors");
    }
    return r;
}

static const char *form_value(xmpp_stanza_t *pubsub, const char *var)
{
    xmpp_stanza_t *opts = xmpp_stanza_get_child_by_name(pubsub, "publish-options");
    xmpp_stanza_t *x = opts ? xmpp_stanza_get_child_by_name(opts, "x") : NULL;

    for (xmpp_stanza_t *f = x ? xmpp_stanza_get_children(x) : NULL; f;
         f = xmpp_stanza_get_next(f)) {
        const char *v = xmpp_stanza_is_tag(f) ? xmpp_stanza_get_attribute(f, "var") : NULL;
        xmpp_stanza_t *value = v && !strcmp(v, var) ? xmpp_stanza_get_child_by_name(f, "value")
                                                    : NULL;
        if (value)
            return xmpp_stanza_get_text_ptr(first_tag(value) ? first_tag(value)
                                                             : xmpp_stanza_get_children(value));
    }
    return NULL;
}

/* The server's answer to one privileged request (the caller releases it). */
static xmpp_stanza_t *serve_one(struct component *c, xmpp_stanza_t *req)
{
    xmpp_stanza_t *priv = xmpp_stanza_get_child_by_name(req, "privileged_iq");
    xmpp_stanza_t *inner = priv ? first_tag(priv) : NULL;
    xmpp_stanza_t *pubsub = inner ? first_tag(inner) : NULL;
    xmpp_stanza_t *items, *publish;
    const char *user = xmpp_stanza_get_to(req);
    struct node_model *n;

    FUZZ_CHECK(inner != NULL && pubsub != NULL);
    FUZZ_CHECK(!strcmp(xmpp_stanza_get_type(inner), xmpp_stanza_get_type(req)));
    if (!strcmp(xmpp_stanza_get_name(pubsub), "vCard") && user && !strcmp(user, ALICE)) {
        if (!strcmp(xmpp_stanza_get_type(req), "get"))
            return answer(req, xmpp_stanza_copy(c->vcard_temp), NULL, NULL);
        /* vcard-temp replaces the whole vCard: all the user wrote must be there. */
        FUZZ_CHECK(extends(c->vcard_temp, pubsub));
        xmpp_stanza_release(c->vcard_temp);
        c->vcard_temp = xmpp_stanza_copy(pubsub);
        return answer(req, NULL, NULL, NULL);
    }
    if (strcmp(xmpp_stanza_get_name(pubsub), "pubsub") != 0)
        return answer(req, NULL, "service-unavailable", NULL);
    if ((items = xmpp_stanza_get_child_by_name(pubsub, "items"))) {
        xmpp_stanza_t *out, *its;
        n = node_of(c, user, xmpp_stanza_get_attribute(items, "node"));
        if (!n || !n->exists)
            return answer(req, NULL, "item-not-found", NULL);
        out = xmpp_stanza_new(ctx);
        xmpp_stanza_set_name(out, "pubsub");
        xmpp_stanza_set_ns(out, NS_PUBSUB);
        its = stanza_child(ctx, out, "items", NULL);
        xmpp_stanza_set_attribute(its, "node", n->name);
        if (n->item)
            xmpp_stanza_add_child_ex(its, xmpp_stanza_copy(n->item), 0);
        return answer(req, out, NULL, NULL);
    }
    publish = xmpp_stanza_get_child_by_name(pubsub, "publish");
    FUZZ_CHECK(publish != NULL);
    n = node_of(c, user, xmpp_stanza_get_attribute(publish, "node"));
    if (!n)
        return answer(req, NULL, NULL, NULL);
    {
        xmpp_stanza_t *item = xmpp_stanza_get_child_by_name(publish, "item");
        const char *model = form_value(pubsub, "pubsub#access_model");
        FUZZ_CHECK(item != NULL && first_tag(item) != NULL);
        /* XEP-0223 publish-options: a precondition, never a reconfiguration. */
        FUZZ_CHECK(n == &c->vcard4 || (model != NULL && strcmp(model, "open") != 0));
        if (n == &c->vcard4) {
            /* A vCard4 item: the node's configuration untouched, the user's entries kept. */
            FUZZ_CHECK(model == NULL);
            if (n->item)
                FUZZ_CHECK(same_tree(item, n->item) ||
                           (xmpp_stanza_get_id(item) && xmpp_stanza_get_id(n->item) &&
                            !strcmp(xmpp_stanza_get_id(item), xmpp_stanza_get_id(n->item)) &&
                            extends(first_tag(n->item), first_tag(item))));
            if (n->item)
                xmpp_stanza_release(n->item);
            n->item = xmpp_stanza_copy(item);
            n->exists = true;
            return answer(req, NULL, NULL, NULL);
        }
        if (n->exists && strcmp(model, n->model) != 0)
            return answer(req, NULL, "conflict", "precondition-not-met");
        /* The invariant: the user's own item never goes. */
        if (users_own(n->item))
            FUZZ_CHECK(keeps(n->item, item));
        if (n->item)
            xmpp_stanza_release(n->item);
        n->item = xmpp_stanza_copy(item);
        if (!n->exists) {
            static const char *const known[] = {"presence", "whitelist", "roster",
                                                "authorize"};
            n->exists = true;
            n->model = "presence";
            for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
                if (strcmp(model, known[i]) == 0)
                    n->model = known[i]; /* the request's text goes with it */
            }
        }
    }
    return answer(req, NULL, NULL, NULL);
}

/* Answers queued requests through the router, as the server would, for a few rounds. */
static void serve(struct component *c)
{
    for (int round = 0; round < ROUNDS && c->nqueue; round++) {
        xmpp_stanza_t *batch[QUEUE_MAX];
        int n = c->nqueue;
        memcpy(batch, c->queue, (size_t)n * sizeof batch[0]);
        c->nqueue = 0;
        for (int i = 0; i < n; i++) {
            xmpp_stanza_t *a = serve_one(c, batch[i]);
            xmpp_stanza_t *was = c->in;
            c->in = a;
            router_stanza(c->router, a);
            c->in = was;
            xmpp_stanza_release(a);
            xmpp_stanza_release(batch[i]);
        }
    }
}

/* ---- news from the router and the grants --------------------------------------------- */

/* What watchers.c does in memory; a watcher is only ever stored if the policy allows it. */
static void on_subscribe(void *arg, struct cuser *u, const char *bare)
{
    struct component *c = arg;

    FUZZ_CHECK(users_watcher_allowed(&c->users, u, bare));
    (void)users_watcher_add(u, bare);
}

static void on_unsubscribe(void *arg, struct cuser *u, const char *bare)
{
    (void)users_watcher_del(u, bare);
}

static const struct router_ops router_ops = {
    .on_subscribe = on_subscribe,
    .on_unsubscribe = on_unsubscribe,
};

/* As main.c with the feed in sync. */
static void on_granted(void *arg, const char *domain)
{
    struct component *c = arg;

    pep_granted(c->pep, domain);
    vcard_granted(c->vcard, domain);
    pub_pep_domain(c->pub, domain);
}

static void on_missing(void *arg, const char *domain)
{
    struct component *c = arg;

    pep_missing(c->pep, domain);
    vcard_missing(c->vcard, domain);
}

static const struct privileged_ops priv_ops = {.on_granted = on_granted, .on_missing = on_missing};

static void set_alice(struct component *c, const char *state)
{
    const char *const names[] = {"state", "dir", "reach", "dnd", "since", "ts", "remote"};
    const char *const values[] = {state, "incoming", "online", "0", "1763788800000",
                                  "1763788800123456", c->remote};
    struct cuser *u = users_by_jid(&c->users, ALICE);
    struct user_record rec;
    char err[128];

    FUZZ_CHECK(u != NULL);
    FUZZ_CHECK(storecodec_decode(names, values, c->remote[0] ? 7 : 6, &rec, err,
                                 sizeof err) == 0);
    (void)stanza_text_repair(rec.remote); /* what feed.c's check_record does */
    users_set_record(u, &rec);
}

/* The other party, as anyone able to write to Redis could have put it there: the input's
 * bytes with bit 7 flipped in every other one (NULs left out: Redis values here are C
 * strings). */
static void remote_from(struct component *c, const uint8_t *data, size_t size)
{
    size_t n = 0;

    for (size_t i = 0; i < size && n < sizeof c->remote - 1; i++) {
        if (data[i])
            c->remote[n++] = (char)(i % 2 ? data[i] ^ 0x80 : data[i]);
    }
    c->remote[n] = '\0';
}

static void route(struct component *c, xmpp_stanza_t *st)
{
    c->in = st;
    router_stanza(c->router, st);
    serve(c);
}

/* The input's <pubsub><items><item/> (what alice published, as the fuzzer shapes it), or
 * the fixed one. */
static xmpp_stanza_t *users_item(xmpp_stanza_t *in)
{
    xmpp_stanza_t *pubsub = xmpp_stanza_get_child_by_name(in, "pubsub");
    xmpp_stanza_t *items = pubsub ? xmpp_stanza_get_child_by_name(pubsub, "items") : NULL;
    xmpp_stanza_t *item = items ? xmpp_stanza_get_child_by_name(items, "item") : NULL;

    return item && first_tag(item) ? xmpp_stanza_copy(item)
                                   : xmpp_stanza_new_from_string(ctx, user_item_xml);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct cfg_errors errs = {0};

    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL); /* no logger: libstrophe stays quiet */
    base = event_base_new();
    if (!ctx || !base || config_load_buffer("fuzz.conf", config_text, sizeof config_text - 1,
                                            &cfg, &errs) != 0) {
        cfg_errors_print(&errs, stderr);
        abort();
    }
    cfg_errors_free(&errs);
    router_register_metrics();
    presout_register_metrics();
    pep_register_metrics();
    priv_register_metrics();
    vcard_register_metrics();
    /* The router logs every refusal: a line per input would swamp the run's log. With
     * FUZZ_ROUTER_LOG=1 every line is formatted and written, at debug level. */
    log_level = getenv("FUZZ_ROUTER_LOG") ? LOG_DEBUG : -1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct component c = {0};
    char *text = fuzz_strndup_exact(data, size);
    xmpp_stanza_t *st = xmpp_stanza_new_from_string(ctx, text), *grant;
    uint32_t h = 2166136261u;
    bool had_own;

    free(text);
    if (!st)
        return 0;
    for (size_t i = 0; i < size; i++)
        h = (h ^ data[i]) * 16777619u;
    users_init(&c.users, &cfg);
    remote_from(&c, data, size);
    c.out = (struct stanza_out){.ctx = ctx, .up = out_up, .send = out_send, .arg = &c};
    c.presout = presout_new(&c.users, &c.out);
    c.priv = priv_new(base, &c.users, &c.out, &priv_ops, &c);
    c.pep = pep_new(&c.users, &c.out, c.priv);
    c.vcard = vcard_new(&c.users, &c.out, c.priv);
    c.pub = pub_new(&c.users, c.presout, c.pep, c.vcard, &c.out);
    c.router = router_new(&c.users, c.pub, c.presout, c.priv, &c.out, &router_ops, &c);
    priv_connected(c.priv);
    pep_connected(c.pep);
    vcard_connected(c.vcard);
    /* alice's nodes: her own activity (or none), an access model, maybe no node yet. */
    c.user_item = users_item(st);
    c.activity = (struct node_model){.name = NS_ACTIVITY, .exists = h % 5 != 0,
                                     .model = access_models[(h >> 3) % 3]};
    if (c.activity.exists)
        c.activity.item = xmpp_stanza_copy(c.user_item);
    had_own = c.activity.exists && users_own(c.user_item);
    c.reach = (struct node_model){.name = NS_REACH, .exists = (h >> 5) % 2,
                                  .model = "presence"};
    c.vcard4 = (struct node_model){.name = NODE_VCARD4, .exists = (h >> 6) % 2,
                                   .model = "open"};
    if (c.vcard4.exists)
        c.vcard4.item = xmpp_stanza_new_from_string(ctx, user_vcard4_xml);
    c.vcard_temp = xmpp_stanza_new_from_string(ctx, user_vcard_temp_xml);
    grant = xmpp_stanza_new_from_string(ctx, (h >> 7) % 2 ? grant_vcard_xml : grant_xml);
    route(&c, grant);
    xmpp_stanza_release(grant);
    /* A call: offhook covers her activity. bob@localhost watches her phone. */
    set_alice(&c, "on_call");
    on_subscribe(&c, users_by_jid(&c.users, ALICE), "bob@localhost");
    pub_user(c.pub, users_by_jid(&c.users, ALICE), false, 0);
    serve(&c);
    route(&c, st);
    /* What a state change after this stanza would send: runs the publisher and both
     * writers with whatever the stanza changed (watchers, grants). */
    pub_user(c.pub, users_by_jid(&c.users, ALICE), true, 0);
    serve(&c);
    /* The call ends: her own activity is back. */
    set_alice(&c, "idle");
    pub_user(c.pub, users_by_jid(&c.users, ALICE), false, 0);
    serve(&c);
    if (had_own)
        FUZZ_CHECK(c.activity.item && keeps(c.user_item, c.activity.item));
    pub_goodbye(c.pub);
    serve(&c);
    xmpp_stanza_release(st);
    for (int i = 0; i < c.nqueue; i++)
        xmpp_stanza_release(c.queue[i]);
    router_free(c.router);
    pub_free(c.pub);
    pep_free(c.pep);
    vcard_free(c.vcard);
    priv_free(c.priv);
    presout_free(c.presout);
    users_free(&c.users);
    if (c.activity.item)
        xmpp_stanza_release(c.activity.item);
    if (c.reach.item)
        xmpp_stanza_release(c.reach.item);
    if (c.vcard4.item)
        xmpp_stanza_release(c.vcard4.item);
    xmpp_stanza_release(c.vcard_temp);
    xmpp_stanza_release(c.user_item);
    return 0;
}
