/* The desk phone on the user's own vCard (see vcard_out.h).
 *
 * Which vCard: where the server grants the IQ permission for vcard-temp get and set
 * (XEP-0054: the user's vCard as servers such as ejabberd keep it), that one; else, where
 * it grants pubsub get and set, the XEP-0292 vCard4 item in the user's PEP (node
 * urn:xmpp:vcard4: what Prosody keeps, its vcard-temp being a view of it). Neither: said
 * once per domain.
 *
 * How: the vCard is read, the phone entries it lacks are appended (card.c; every other
 * element goes back exactly as it came), and it is written only if something was added.
 * A vCard4 item keeps its item id and the node its configuration (no publish-options);
 * a user with no vCard gets one with their name and desk phone, under the server's
 * defaults. offhook never removes or changes an entry: it cannot tell one it added from
 * one the user typed. */
#include "vcard_out.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "card.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "strutil.h"

struct vuser {
    char *jid;                /* the key in vcard_out.users (owned) */
    uint64_t want;            /* the phone addresses (hashed) */
    uint64_t done;            /* the vCard was last seen or left holding these (0: unknown) */
    bool busy, again;
    unsigned gen;             /* requests issued: an answer for an older one is stale */
};

enum way { WAY_NONE, WAY_TEMP, WAY_V4 };

struct request {
    struct vcard_out *v;
    enum way way;
    bool write;
    unsigned gen;
    uint64_t want;
};

struct vcard_out {
    const struct users *d;
    const struct stanza_out *out;
    struct privileged *priv;
    struct strmap users;      /* user JID -> struct vuser* (owned) */
    struct strmap explained;  /* domains told about in this stream (owned keys) */
};

static struct metric *m_vcards;

void vcard_register_metrics(void)
{
    m_vcards = metric_new(METRIC_COUNTER, "offhook_user_vcards_total",
                          "Users' own vCards looked at for the desk phone, by outcome: "
                          "entries added (written), nothing missing (unchanged), read or "
                          "write refused (error).",
                          "outcome", (const char *const[]){"written", "unchanged", "error",
                                                           NULL});
}

static enum way way_for(const struct vcard_out *v, const char *domain)
{
    if (priv_may(v->priv, domain, PRIV_VCARD, PRIV_GET) &&
        priv_may(v->priv, domain, PRIV_VCARD, PRIV_SET))
        return WAY_TEMP;
    if (priv_may(v->priv, domain, PRIV_PUBSUB, PRIV_GET) &&
        priv_may(v->priv, domain, PRIV_PUBSUB, PRIV_SET))
        return WAY_V4;
    return WAY_NONE;
}

static void explain(struct vcard_out *v, const char *domain, const char *level_why, bool warn)
{
    char *k;

    if (!v->d->cfg->publish_vcard || strmap_get(&v->explained, domain))
        return;
    k = xstrdup(domain);
    strmap_put(&v->explained, k, k);
    if (warn)
        log_warn("vcard", "event=vcard_off domain=%s reason=\"%s\"", log_q(domain), level_why);
    else
        log_notice("vcard", "event=vcard_on domain=%s vcard=\"%s\"", log_q(domain), level_why);
}

void vcard_granted(struct vcard_out *v, const char *domain)
{
    switch (way_for(v, domain)) {
    case WAY_TEMP:
        explain(v, domain, "vcard-temp (XEP-0054)", false);
        break;
    case WAY_V4:
        explain(v, domain, "vCard4 in PEP (XEP-0292, node urn:xmpp:vcard4)", false);
        break;
    default:
        explain(v, domain, "no IQ permission to read and write the user's vCard: grant "
                           "vcard-temp both, or pubsub both (vCard4); the phone contact's "
                           "vCard still names the desk phone",
                true);
    }
}

void vcard_missing(struct vcard_out *v, const char *domain)
{
    explain(v, domain, "the server sent no XEP-0356 <privilege/> for this domain; the phone "
                       "contact's vCard still names the desk phone",
            true);
}

static uint64_t addresses_hash(const struct cuser *u)
{
    const char *uris[CARD_URIS_MAX];
    char tel[64];
    uint64_t h = 1469598103934665603ULL;
    int n = card_phone_uris(u, tel, sizeof tel, uris);

    for (int i = 0; i < n; i++) {
        for (const char *p = uris[i]; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
        h = (h ^ ' ') * 1099511628211ULL;
    }
    return h ? h : 1;
}

static void on_answer(void *arg, const char *user, const struct priv_answer *a);

static int request(struct vcard_out *v, struct vuser *vu, enum way way, bool write,
                xmpp_stanza_t *payload)
{
    struct request *r = xcalloc(1, sizeof *r);

    r->v = v;
    r->way = way;
    r->write = write;
    r->gen = ++vu->gen;
    r->want = vu->want;
    vu->busy = true;
    if (priv_request(v->priv, vu->jid, write ? PRIV_SET : PRIV_GET, payload, on_answer, r) < 0) {
        vu->busy = false;
        free(r);
        return -1;
    }
    return 0;
}

static xmpp_stanza_t *element(xmpp_ctx_t *ctx, const char *name, const char *ns)
{
    xmpp_stanza_t *e = xmpp_stanza_new(ctx);

    xmpp_stanza_set_name(e, name);
    xmpp_stanza_set_ns(e, ns);
    return e;
}

static void send_read(struct vcard_out *v, struct vuser *vu, enum way way)
{
    xmpp_ctx_t *ctx = v->out->ctx;
    xmpp_stanza_t *q;

    if (way == WAY_TEMP) {
        q = element(ctx, "vCard", NS_VCARD);
    } else {
        xmpp_stanza_t *items;
        q = element(ctx, "pubsub", NS_PUBSUB);
        items = stanza_child(ctx, q, "items", NULL);
        xmpp_stanza_set_attribute(items, "node", NODE_VCARD4);
        xmpp_stanza_set_attribute(items, "max_items", "1");
    }
    (void)request(v, vu, way, false, q);
}

static xmpp_stanza_t *first_tag(xmpp_stanza_t *st)
{
    xmpp_stanza_t *c = st ? xmpp_stanza_get_children(st) : NULL;

    while (c && !xmpp_stanza_is_tag(c))
        c = xmpp_stanza_get_next(c);
    return c;
}

/* The vCard a read found (borrowed from payload) and, for vCard4, its item id. */
static xmpp_stanza_t *found_vcard(enum way way, xmpp_stanza_t *payload, const char **item_id)
{
    xmpp_stanza_t *items, *item;

    *item_id = NULL;
    if (way == WAY_TEMP) {
        const char *name = payload ? xmpp_stanza_get_name(payload) : NULL;
        return name && strcmp(name, "vCard") == 0 ? payload : NULL;
    }
    items = payload ? xmpp_stanza_get_child_by_name(payload, "items") : NULL;
    item = items ? xmpp_stanza_get_child_by_name(items, "item") : NULL;
    if (!item || !first_tag(item) || strcmp(xmpp_stanza_get_name(first_tag(item)), "vcard"))
        return NULL;
    *item_id = xmpp_stanza_get_id(item);
    return first_tag(item);
}

/* The read came back: add what is missing, write only if anything was. */
static void decide(struct vcard_out *v, struct vuser *vu, const struct cuser *u, enum way way,
                   xmpp_stanza_t *payload)
{
    xmpp_ctx_t *ctx = v->out->ctx;
    const char *item_id;
    xmpp_stanza_t *have = found_vcard(way, payload, &item_id), *card, *q;
    int added;

    card = have ? xmpp_stanza_copy(have) : element(ctx, way == WAY_TEMP ? "vCard" : "vcard",
                                                   way == WAY_TEMP ? NS_VCARD : NS_VCARD4);
    if (way == WAY_TEMP)
        added = card_add_phone_temp(ctx, card, u);
    else
        added = card_add_phone_v4(ctx, card, u,
                                  have ? NULL : (u->cfg->name ? u->cfg->name : u->jid));
    if (!added) {
        xmpp_stanza_release(card);
        vu->done = vu->want;
        metric_inc(m_vcards, "unchanged");
        return;
    }
    if (way == WAY_TEMP) {
        q = card;
    } else {
        xmpp_stanza_t *publish, *item;
        q = element(ctx, "pubsub", NS_PUBSUB);
        publish = stanza_child(ctx, q, "publish", NULL);
        xmpp_stanza_set_attribute(publish, "node", NODE_VCARD4);
        item = stanza_child(ctx, publish, "item", NULL);
        xmpp_stanza_set_id(item, item_id && *item_id ? item_id : "current");
        xmpp_stanza_add_child_ex(item, card, 0);
    }
    log_info("vcard", "event=adding user=%s entries=%d vcard=%s", log_q(vu->jid), added,
             way == WAY_TEMP ? "vcard-temp" : "vcard4");
    (void)request(v, vu, way, true, q);
}

static void sync_user(struct vcard_out *v, struct vuser *vu, const struct cuser *u);

static void on_answer(void *arg, const char *user, const struct priv_answer *a)
{
    struct request *r = arg;
    struct vcard_out *v = r->v;
    struct vuser *vu = strmap_get(&v->users, user);
    const struct cuser *u = users_by_jid(v->d, user);

    if (!vu || !u || vu->gen != r->gen)
        goto out; /* forgotten, or superseded by a new stream */
    vu->busy = false;
    if (a->result == PRIV_OK && r->write) {
        vu->done = r->want;
        metric_inc(m_vcards, "written");
    } else if (a->result == PRIV_OK ||
               (a->result == PRIV_ERROR && !r->write && !strcmp(a->condition, "item-not-found"))) {
        /* item-not-found: no vCard4 node yet, i.e. no vCard. */
        decide(v, vu, u, r->way, a->result == PRIV_OK ? a->payload : NULL);
    } else if (a->result == PRIV_ERROR) {
        metric_inc(m_vcards, "error");
        /* A refusal of the account itself: privileged.c's one line per round says it. */
        LOG_AT(a->refused ? LOG_DEBUG : LOG_WARNING, "vcard", "event=%s user=%s condition=%s",
               r->write ? "write_refused" : "read_refused", log_q(user), log_q(a->condition));
        vu->done = r->want; /* not again before the next stream or a change */
    }
    if (!vu->busy && vu->again) {
        vu->again = false;
        sync_user(v, vu, u);
    }
out:
    free(r);
}

static void sync_user(struct vcard_out *v, struct vuser *vu, const struct cuser *u)
{
    struct jid j;
    enum way way;

    if (vu->busy) {
        vu->again = true;
        return;
    }
    if (vu->want == vu->done || jid_parse(u->jid, &j) < 0 ||
        (way = way_for(v, j.domain)) == WAY_NONE)
        return;
    send_read(v, vu, way);
}

void vcard_user(struct vcard_out *v, const struct cuser *u, bool force)
{
    struct vuser *vu;

    if (!v || !v->d->cfg->publish_vcard || !stanza_out_up(v->out))
        return;
    vu = strmap_get(&v->users, u->jid);
    if (!vu) {
        vu = xcalloc(1, sizeof *vu);
        vu->jid = xstrdup(u->jid);
        strmap_put(&v->users, vu->jid, vu);
    }
    vu->want = addresses_hash(u);
    if (force)
        vu->done = 0;
    sync_user(v, vu, u);
}

static void vuser_free(struct vuser *vu)
{
    free(vu->jid);
    free(vu);
}

void vcard_forget(struct vcard_out *v, const struct cuser *u)
{
    struct vuser *vu = strmap_del(&v->users, u->jid);

    if (vu)
        vuser_free(vu);
}

void vcard_connected(struct vcard_out *v)
{
    size_t pos = 0;
    const char *k;
    void *val;

    while (strmap_next(&v->users, &pos, &k, &val)) {
        struct vuser *vu = val;
        vu->done = 0;
        vu->busy = vu->again = false;
        vu->gen++;
    }
    strmap_clear_owned(&v->explained);
}

struct vcard_out *vcard_new(const struct users *d, const struct stanza_out *out,
                            struct privileged *priv)
{
    struct vcard_out *v = xcalloc(1, sizeof *v);

    v->d = d;
    v->out = out;
    v->priv = priv;
    strmap_init(&v->users);
    strmap_init(&v->explained);
    return v;
}

void vcard_free(struct vcard_out *v)
{
    size_t pos = 0;
    const char *k;
    void *val;

    if (!v)
        return;
    while (strmap_next(&v->users, &pos, &k, &val))
        vuser_free(val);
    strmap_free(&v->users);
    strmap_clear_owned(&v->explained);
    strmap_free(&v->explained);
    free(v);
}
