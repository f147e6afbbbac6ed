/* Incoming stanzas: every address is validated, presence subscriptions follow RFC 6121
 * under the watcher policy, IQs get answers or the right stanza error. Nothing here can
 * send from outside the component's domain (xmpplink.c refuses it) or show a phone's
 * state to a JID the policy does not allow. */
#include "router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caps.h"
#include "card.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "strutil.h"
#include "version.h"
#include "view.h"

#define GATEWAY_QUERY_MAX 256 /* longest number, extension or SIP URI looked up */
#define STANZA_DEPTH_MAX 32   /* deeper nesting is refused like an oversized stanza */
#define POINTERS_SLOTS 256    /* senders a message pointer was sent to lately (hashed) */
#define POINTER_INTERVAL_MS 60000 /* one pointer per sender and contact per minute */

/* A message pointer recently sent: to whom, from which contact (hashed), and when. */
struct pointer_sent {
    uint64_t key;
    int64_t at_ms;
};

struct router {
    const struct users *d;
    struct publisher *pub;
    struct presence_out *po;
    struct privileged *priv;
    const struct stanza_out *out;
    struct router_ops ops;
    void *arg;
    struct pointer_sent pointers[POINTERS_SLOTS];
    /* Each line a stranger's stanzas cause: a flood of them writes a few lines, each
     * saying how many were held back (the metrics count every one). */
    struct ratelimit_gate refused_log, dropped_log, too_large_log;
};

/* A burst of 5 lines, then one per 10 s, per kind of line. */
static const struct ratelimit refusal_log_rate = {.rate = 1.0 / 10, .burst = 5};

/* Whether a line of this kind may be written now; *held gets how many were held back. */
static bool log_gate(struct ratelimit_gate *g, uint64_t *held)
{
    return ratelimit_gate_pass(&refusal_log_rate, g, clock_mono_ms(), held);
}

static struct metric *m_in, *m_rejected, *m_refused_watchers, *m_messages;

void router_register_metrics(void)
{
    m_in = metric_new(METRIC_COUNTER, "offhook_stanzas_received_total",
                      "Stanzas received from the XMPP server, by kind.", "kind",
                      (const char *const[]){"presence", "iq", "message", "other", NULL});
    m_rejected = metric_new(METRIC_COUNTER, "offhook_stanzas_rejected_total",
                            "Incoming stanzas refused or answered with an error, by reason.",
                            "reason",
                            (const char *const[]){"bad_address", "foreign_to", "unknown_contact",
                                                  "service_unavailable", "bad_request",
                                                  "forbidden", "item_not_found", "too_large",
                                                  NULL});
    m_refused_watchers = metric_new(METRIC_COUNTER, "offhook_watchers_refused_total",
                                    "Presence subscriptions or probes refused by the watcher "
                                    "policy.",
                                    NULL, NULL);
    m_messages = metric_new(METRIC_COUNTER, "offhook_contact_messages_total",
                            "Messages to phone contacts, by what came of them: answered with a "
                            "pointer to the person (pointed), not again within a minute "
                            "(throttled), not for this sender (refused), without a body or of "
                            "a type not answered (ignored).",
                            "outcome",
                            (const char *const[]){"pointed", "throttled", "refused", "ignored",
                                                  NULL});
}

/* ---- helpers ----------------------------------------------------------------------- */

/* RFC 6120 8.3: <error type='...'><condition xmlns='...stanzas'/></error>. */
static void send_error(struct router *rt, xmpp_stanza_t *in, const char *etype,
                       const char *condition, const char *reason)
{
    xmpp_ctx_t *ctx = rt->out->ctx;
    const char *type = xmpp_stanza_get_type(in);
    xmpp_stanza_t *e, *err;

    /* Never answer an error with an error (RFC 6120 8.3.1), nor an IQ result (8.2.3: a
     * result gets nothing back): a too large answer to one of our requests is dropped. */
    if (type && strcmp(type, "error") == 0)
        return;
    if (type && strcmp(type, "result") == 0 && strcmp(xmpp_stanza_get_name(in), "iq") == 0) {
        metric_inc(m_rejected, reason);
        return;
    }
    metric_inc(m_rejected, reason);
    e = stanza_reply(ctx, in, "error");
    err = stanza_child(ctx, e, "error", NULL);
    xmpp_stanza_set_attribute(err, "type", etype);
    stanza_child(ctx, err, condition, NS_STANZAS);
    (void)stanza_send(rt->out, e, strcmp(xmpp_stanza_get_name(in), "iq") == 0 ? "iq_error"
                                                                             : "message");
    xmpp_stanza_release(e);
}

static void send_result(struct router *rt, xmpp_stanza_t *r)
{
    (void)stanza_send(rt->out, r, "iq_result");
    xmpp_stanza_release(r);
}

/* ---- presence ---------------------------------------------------------------------- */

static void handle_presence(struct router *rt, xmpp_stanza_t *st, const struct jid *from,
                            const char *from_raw, const char *to_bare)
{
    const char *type = xmpp_stanza_get_type(st);
    char bare[JID_MAX + 1];
    struct cuser *u = users_by_contact(rt->d, to_bare);
    bool allowed;

    if (jid_format_bare(from, bare, sizeof bare) < 0)
        return;
    if (!u) {
        /* Not a phone contact of ours: refuse subscriptions, reveal nothing. */
        if (type && (!strcmp(type, "subscribe") || !strcmp(type, "probe"))) {
            metric_inc(m_rejected, "unknown_contact");
            presout_type(rt->po, to_bare, bare, "unsubscribed");
        }
        return;
    }
    allowed = users_watcher_allowed(rt->d, u, bare);
    log_trace(&u->trace, "router", "event=trace_presence_in user=%s contact=%s from=%s "
                                   "type=%s allowed=%s",
              u->jid, u->contact, bare, type ? log_q(type) : "available", allowed ? "yes" : "no");
    if (!type || strcmp(type, "unavailable") == 0) {
        /* Directed presence: an available one gets ours back, if allowed. */
        if (!type && allowed)
            pub_user_to(rt->pub, u, from_raw);
        return;
    }
    if (strcmp(type, "subscribe") == 0 || strcmp(type, "probe") == 0) {
        if (!allowed) {
            uint64_t held = 0;
            metric_inc(m_refused_watchers, NULL);
            if (log_gate(&rt->refused_log, &held))
                log_notice("router", "event=watcher_refused contact=%s watcher=%s request=%s "
                                     "suppressed=%llu",
                           log_q(u->contact), log_q(bare), type, (unsigned long long)held);
            users_note_refused(u, bare, type);
            presout_type(rt->po, u->contact, bare, "unsubscribed");
            return;
        }
        /* The server probes only for rosters that hold the subscription: it is the
         * authority, so a probe also restores a watcher Redis may have lost. */
        rt->ops.on_subscribe(rt->arg, u, bare);
        if (strcmp(type, "subscribe") == 0)
            presout_subscribed(rt->po, u, bare);
        pub_user_to(rt->pub, u, bare);
        return;
    }
    if (strcmp(type, "unsubscribe") == 0) {
        rt->ops.on_unsubscribe(rt->arg, u, bare);
        presout_type(rt->po, u->contact, bare, "unsubscribed");
        presout_unavailable(rt->po, u, bare);
        return;
    }
    /* subscribed / unsubscribed concern our subscription to them: we hold none.
     * error: the server could not deliver something; nothing to retry. */
    log_debug("router", "event=presence_ignored type=%s from=%s to=%s", log_q(type), log_q(bare),
              log_q(to_bare));
}

/* ---- iq ------------------------------------------------------------------------------ */

static void disco_info(struct router *rt, xmpp_stanza_t *st, xmpp_stanza_t *query,
                       struct cuser *u)
{
    xmpp_ctx_t *ctx = rt->out->ctx;
    xmpp_stanza_t *r = stanza_reply(ctx, st, "result");
    xmpp_stanza_t *q = stanza_child(ctx, r, "query", NS_DISCO_INFO);
    xmpp_stanza_t *id = stanza_child(ctx, q, "identity", NULL);
    const char *const *f = u ? caps_contact_features : caps_domain_features;
    const char *node = xmpp_stanza_get_attribute(query, "node");
    bool video = u && u->have_rec && u->rec.video;

    /* A client resolving our XEP-0115 hash asks for node#ver: it must be echoed, and the
     * answer must be what that hash was computed from, whatever the phone does now. */
    if (node) {
        char ver[32];
        const char *hash = strchr(node, '#');
        xmpp_stanza_set_attribute(q, "node", node);
        if (u && hash && caps_contact_ver(!video, ver, sizeof ver) == 0 &&
            strcmp(hash + 1, ver) == 0)
            video = !video;
    }
    if (u) {
        /* No per-contact name: every phone contact then shares one XEP-0115 hash (two: with
         * or without video), and a client asks disco#info once, not once per contact.
         * Names: vCard and <nick/>; addresses: <reach/> in presence, vCard. */
        xmpp_stanza_set_attribute(id, "category", "client");
        xmpp_stanza_set_attribute(id, "type", "phone");
    } else {
        xmpp_stanza_set_attribute(id, "category", "gateway");
        xmpp_stanza_set_attribute(id, "type", "sip");
        xmpp_stanza_set_attribute(id, "name", "offhook desk-phone presence");
    }
    for (; *f; f++)
        xmpp_stanza_set_attribute(stanza_child(ctx, q, "feature", NULL), "var", *f);
    if (u)
        caps_contact_form(ctx, q, video);
    send_result(rt, r);
}

/* XEP-0054: the phone contact's vcard-temp (card.h): its name, the person's chat address
 * (JABBERID), the desk number and SIP addresses. */
static void vcard(struct router *rt, xmpp_stanza_t *st, struct cuser *u)
{
    xmpp_stanza_t *r = stanza_reply(rt->out->ctx, st, "result");

    xmpp_stanza_add_child_ex(r, card_contact_temp(rt->out->ctx, u), 0);
    send_result(rt, r);
}

/* XEP-0292: the same as vCard4, asked for directly (<vcard/>) or, as XEP-0292 clients do,
 * as the item of the urn:xmpp:vcard4 node (<pubsub><items/>). */
static void vcard4(struct router *rt, xmpp_stanza_t *st, struct cuser *u, bool as_item)
{
    xmpp_ctx_t *ctx = rt->out->ctx;
    xmpp_stanza_t *r = stanza_reply(ctx, st, "result"), *parent = r;

    if (as_item) {
        xmpp_stanza_t *items = stanza_child(ctx, stanza_child(ctx, r, "pubsub", NS_PUBSUB),
                                            "items", NULL);
        xmpp_stanza_set_attribute(items, "node", NODE_VCARD4);
        parent = stanza_child(ctx, items, "item", NULL);
        xmpp_stanza_set_id(parent, "current");
    }
    xmpp_stanza_add_child_ex(parent, card_contact_v4(ctx, u), 0);
    send_result(rt, r);
}

/* A pubsub request to a phone contact: only the vCard4 node's items exist. */
static void contact_pubsub(struct router *rt, xmpp_stanza_t *st, xmpp_stanza_t *pubsub,
                           struct cuser *u, bool get)
{
    xmpp_stanza_t *items = xmpp_stanza_get_child_by_name(pubsub, "items");
    const char *node = items ? xmpp_stanza_get_attribute(items, "node") : NULL;

    if (!get || !items)
        send_error(rt, st, "cancel", "feature-not-implemented", "service_unavailable");
    else if (!node || strcmp(node, NODE_VCARD4) != 0)
        send_error(rt, st, "cancel", "item-not-found", "item_not_found");
    else
        vcard4(rt, st, u, true);
}

/* XEP-0100 jabber:iq:gateway: a number, extension or SIP URI -> the phone contact's JID.
 * Answers only requesters the watcher policy allows; the answer names a contact, never a
 * state (the state still needs a subscription, which the policy also guards). */
static void gateway(struct router *rt, xmpp_stanza_t *st, xmpp_stanza_t *query, bool get)
{
    xmpp_ctx_t *ctx = rt->out->ctx;
    char bare[JID_MAX + 1];
    xmpp_stanza_t *r, *q, *prompt;
    char *value;
    struct cuser *u;

    if (jid_to_bare(xmpp_stanza_get_from(st), bare, sizeof bare) < 0 ||
        !users_requester_allowed(rt->d, bare)) {
        send_error(rt, st, "auth", "forbidden", "forbidden");
        return;
    }
    r = stanza_reply(ctx, st, "result");
    q = stanza_child(ctx, r, "query", NS_GATEWAY);
    if (get) {
        stanza_text_child(ctx, q, "desc", "Enter the extension, phone number or SIP address "
                                          "of a colleague's desk phone.");
        stanza_text_child(ctx, q, "prompt", "Phone number");
        send_result(rt, r);
        return;
    }
    prompt = xmpp_stanza_get_child_by_name(query, "prompt");
    value = prompt ? xmpp_stanza_get_text(prompt) : NULL;
    if (!value || !*value || strlen(value) > GATEWAY_QUERY_MAX) {
        xmpp_stanza_release(r);
        if (value)
            xmpp_free(ctx, value);
        send_error(rt, st, "modify", "bad-request", "bad_request");
        return;
    }
    u = users_by_number(rt->d, str_trim(value));
    xmpp_free(ctx, value);
    if (!u) {
        xmpp_stanza_release(r);
        send_error(rt, st, "cancel", "item-not-found", "item_not_found");
        return;
    }
    stanza_text_child(ctx, q, "jid", u->contact);
    /* The phone contact shows the phone; the person behind it is who one writes to (the
     * same as the contact's vCard JABBERID). */
    {
        xmpp_stanza_t *who = stanza_child(ctx, q, "person", NS_OFFHOOK_PERSON);
        xmpp_stanza_set_attribute(who, "jid", u->jid);
        if (u->cfg->name)
            xmpp_stanza_set_attribute(who, "name", u->cfg->name);
    }
    send_result(rt, r);
}

static void handle_iq(struct router *rt, xmpp_stanza_t *st, const char *to_bare,
                      const struct jid *to)
{
    const char *type = xmpp_stanza_get_type(st);
    xmpp_stanza_t *payload = xmpp_stanza_get_children(st);
    const char *ns;
    struct cuser *u = NULL;
    bool is_get;

    if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)) {
        /* result/error: answers to our privileged requests; nothing else is asked. */
        (void)priv_on_iq(rt->priv, st);
        return;
    }
    if (!xmpp_stanza_get_id(st)) {
        send_error(rt, st, "modify", "bad-request", "bad_request");
        return;
    }
    while (payload && !xmpp_stanza_is_tag(payload))
        payload = xmpp_stanza_get_next(payload);
    if (!payload) {
        send_error(rt, st, "modify", "bad-request", "bad_request");
        return;
    }
    if (to->local[0]) {
        u = users_by_contact(rt->d, to_bare);
        if (!u) {
            send_error(rt, st, "cancel", "item-not-found", "unknown_contact");
            return;
        }
    }
    ns = xmpp_stanza_get_ns(payload);
    is_get = strcmp(type, "get") == 0;
    if (is_get && ns && strcmp(ns, NS_PING) == 0) {
        send_result(rt, stanza_reply(rt->out->ctx, st, "result"));
    } else if (is_get && ns && strcmp(ns, NS_DISCO_INFO) == 0) {
        disco_info(rt, st, payload, u);
    } else if (ns && strcmp(ns, NS_GATEWAY) == 0 && !u) {
        gateway(rt, st, payload, is_get);
    } else if (is_get && ns && strcmp(ns, NS_DISCO_ITEMS) == 0 && !u) {
        xmpp_stanza_t *r = stanza_reply(rt->out->ctx, st, "result");
        stanza_child(rt->out->ctx, r, "query", NS_DISCO_ITEMS);
        send_result(rt, r);
    } else if (is_get && ns && strcmp(ns, NS_VERSION) == 0 && !u) {
        xmpp_ctx_t *ctx = rt->out->ctx;
        xmpp_stanza_t *r = stanza_reply(ctx, st, "result");
        xmpp_stanza_t *q = stanza_child(ctx, r, "query", NS_VERSION);
        stanza_text_child(ctx, q, "name", "offhook");
        stanza_text_child(ctx, q, "version", OFFHOOK_VERSION);
        send_result(rt, r);
    } else if (u && ns && (!strcmp(ns, NS_VCARD) || !strcmp(ns, NS_VCARD4) ||
                           !strcmp(ns, NS_PUBSUB))) {
        /* Name, desk number, the person's address are directory data: only for whom the
         * policy allows. */
        char bare[JID_MAX + 1];
        if (jid_to_bare(xmpp_stanza_get_from(st), bare, sizeof bare) < 0 ||
            !users_requester_allowed(rt->d, bare))
            send_error(rt, st, "auth", "forbidden", "forbidden");
        else if (!strcmp(ns, NS_PUBSUB))
            contact_pubsub(rt, st, payload, u, is_get);
        else if (!is_get)
            send_error(rt, st, "auth", "forbidden", "forbidden"); /* nobody edits it */
        else if (!strcmp(ns, NS_VCARD))
            vcard(rt, st, u);
        else
            vcard4(rt, st, u, false);
    } else {
        send_error(rt, st, "cancel", "service-unavailable", "service_unavailable");
    }
}

/* ---- message --------------------------------------------------------------------------- */

/* Whether a pointer went from contact to bare less than a minute ago; records it now if
 * not. A fixed table (hash slots): memory does not grow with senders, and a collision
 * only lets one more pointer through or holds one back. */
static bool pointed_lately(struct router *rt, const char *bare, const char *contact)
{
    uint64_t key = 1469598103934665603ULL;
    int64_t now = clock_mono_ms();
    struct pointer_sent *slot;

    for (const char *p = bare; *p; p++)
        key = (key ^ (unsigned char)*p) * 1099511628211ULL;
    key = (key ^ '|') * 1099511628211ULL;
    for (const char *p = contact; *p; p++)
        key = (key ^ (unsigned char)*p) * 1099511628211ULL;
    slot = &rt->pointers[key % POINTERS_SLOTS];
    if (slot->key == key && slot->at_ms && now - slot->at_ms < POINTER_INTERVAL_MS)
        return true;
    slot->key = key;
    slot->at_ms = now;
    return false;
}

/* A chat message to a phone contact: the phone cannot chat, so whoever may see it is told
 * where the person is (the same as the contact's vCard JABBERID). Nobody else learns
 * anything: they get service-unavailable, as for any address that does not chat. */
static void handle_message(struct router *rt, xmpp_stanza_t *st, const struct jid *from,
                           const char *to_bare)
{
    xmpp_ctx_t *ctx = rt->out->ctx;
    const char *type = xmpp_stanza_get_type(st);
    struct cuser *u = users_by_contact(rt->d, to_bare);
    char bare[JID_MAX + 1], text[3 * JID_MAX + 256];
    const char *name;
    xmpp_stanza_t *r, *thread;

    if (type && strcmp(type, "error") == 0)
        return; /* never answer an error */
    if (!u || jid_format_bare(from, bare, sizeof bare) < 0 ||
        !users_watcher_allowed(rt->d, u, bare)) {
        metric_inc(m_messages, "refused");
        send_error(rt, st, "cancel", "service-unavailable", "service_unavailable");
        return;
    }
    /* Headlines and groupchat get no answer (RFC 6121 5.2.2); chat states and receipts
     * without a body are not a question. */
    if ((type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0) ||
        !xmpp_stanza_get_child_by_name(st, "body")) {
        metric_inc(m_messages, "ignored");
        return;
    }
    /* Another automaton answering ours must not start a loop. */
    if (pointed_lately(rt, bare, u->contact)) {
        metric_inc(m_messages, "throttled");
        return;
    }
    name = u->cfg->name ? u->cfg->name : u->jid;
    snprintf(text, sizeof text, "This is %s's desk phone: it shows when %s is on the phone "
                                "and cannot chat. Write to %s at xmpp:%s",
             name, name, name, u->jid);
    r = xmpp_message_new(ctx, type ? type : "chat", xmpp_stanza_get_from(st), NULL);
    xmpp_stanza_set_from(r, u->contact);
    xmpp_message_set_body(r, text);
    thread = xmpp_stanza_get_child_by_name(st, "thread");
    if (thread) {
        char *t = xmpp_stanza_get_text(thread);
        if (t && *t && strlen(t) <= 256)
            stanza_text_child(ctx, r, "thread", t);
        if (t)
            xmpp_free(ctx, t);
    }
    {
        xmpp_stanza_t *who = stanza_child(ctx, r, "person", NS_OFFHOOK_PERSON);
        xmpp_stanza_set_attribute(who, "jid", u->jid);
    }
    metric_inc(m_messages, "pointed");
    (void)stanza_send(rt->out, r, "message");
    xmpp_stanza_release(r);
}

/* ---- entry ------------------------------------------------------------------------- */

/* Adds st's size (names, attributes, text) to *size; false once over limit or nested
 * deeper than STANZA_DEPTH_MAX (it stops walking there). */
static bool stanza_fits(xmpp_stanza_t *st, size_t limit, size_t *size, int depth)
{
    if (depth > STANZA_DEPTH_MAX)
        return false;
    if (xmpp_stanza_is_text(st)) {
        const char *t = xmpp_stanza_get_text_ptr(st);
        *size += t ? strlen(t) : 0;
        return *size <= limit;
    }
    {
        const char *name = xmpp_stanza_get_name(st);
        int n = xmpp_stanza_get_attribute_count(st);
        const char *attrs[64];

        *size += name ? strlen(name) : 0;
        if (n > (int)(sizeof attrs / sizeof attrs[0]) / 2)
            return false; /* 32 attributes on one element: nobody legitimate */
        n = xmpp_stanza_get_attributes(st, attrs, (int)(sizeof attrs / sizeof attrs[0]));
        for (int i = 0; i < n; i++)
            *size += attrs[i] ? strlen(attrs[i]) : 0;
    }
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(st); c; c = xmpp_stanza_get_next(c)) {
        if (*size > limit || !stanza_fits(c, limit, size, depth + 1))
            return false;
    }
    return *size <= limit;
}

void router_stanza(struct router *rt, xmpp_stanza_t *st)
{
    const char *name = xmpp_stanza_get_name(st);
    const char *from = xmpp_stanza_get_from(st), *to = xmpp_stanza_get_to(st);
    const char *kind = "other";
    struct jid fj, tj;
    char to_bare[JID_MAX + 1];

    if (name && (!strcmp(name, "presence") || !strcmp(name, "iq") || !strcmp(name, "message")))
        kind = name;
    metric_inc(m_in, kind);
    if (!strcmp(kind, "other"))
        return;
    /* Without valid addresses there is nobody to answer: drop. */
    if (!from || !to || jid_parse(from, &fj) < 0 || jid_parse(to, &tj) < 0) {
        uint64_t held = 0;
        metric_inc(m_rejected, "bad_address");
        if (log_gate(&rt->dropped_log, &held))
            log_warn("router", "event=stanza_dropped kind=%s reason=\"missing or invalid "
                               "address\" suppressed=%llu",
                     kind, (unsigned long long)held);
        return;
    }
    if (strcmp(tj.domain, rt->d->cfg->xmpp_domain) != 0) {
        uint64_t held = 0;
        metric_inc(m_rejected, "foreign_to");
        if (log_gate(&rt->dropped_log, &held))
            log_warn("router", "event=stanza_dropped kind=%s reason=\"addressed outside "
                               "our domain\" to=%s suppressed=%llu",
                     kind, log_q(to), (unsigned long long)held);
        return;
    }
    if (jid_format_bare(&tj, to_bare, sizeof to_bare) < 0)
        return;
    {
        size_t size = 0;
        if (!stanza_fits(st, (size_t)rt->d->cfg->component_max_stanza, &size, 0)) {
            uint64_t held = 0;
            if (log_gate(&rt->too_large_log, &held))
                log_warn("router", "event=stanza_refused kind=%s from=%s reason=\"larger than "
                                   "[component] max_stanza (%ld bytes) or nested deeper than "
                                   "%d\" suppressed=%llu",
                         kind, log_q(from), rt->d->cfg->component_max_stanza,
                         STANZA_DEPTH_MAX, (unsigned long long)held);
            if (fj.local[0])
                send_error(rt, st, "modify", "policy-violation", "too_large");
            else
                metric_inc(m_rejected, "too_large"); /* a server gets no error back */
            return;
        }
    }
    if (!strcmp(kind, "presence")) {
        if (tj.local[0])
            handle_presence(rt, st, &fj, from, to_bare);
        return;
    }
    if (!strcmp(kind, "iq")) {
        handle_iq(rt, st, to_bare, &tj);
        return;
    }
    /* A message from a server (no local part): XEP-0356 grants, or server notices. A
     * server never gets an error back from us. */
    if (!fj.local[0]) {
        if (!priv_on_message(rt->priv, st, fj.domain))
            log_debug("router", "event=server_message_ignored from=%s", log_q(fj.domain));
        return;
    }
    handle_message(rt, st, &fj, to_bare);
}

struct router *router_new(const struct users *d, struct publisher *pub,
                          struct presence_out *po, struct privileged *priv,
                          const struct stanza_out *out, const struct router_ops *ops,
                          void *arg)
{
    struct router *rt = xcalloc(1, sizeof *rt);

    rt->d = d;
    rt->pub = pub;
    rt->po = po;
    rt->priv = priv;
    rt->out = out;
    rt->ops = *ops;
    rt->arg = arg;
    return rt;
}

void router_free(struct router *rt)
{
    free(rt);
}
