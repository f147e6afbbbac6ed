/* The component's shared state: one entry per configured user (its record from Redis,
 * its phone contact's watchers, what was last broadcast), and the prototypes the
 * component's modules call on each other: router.c (incoming stanzas), publisher.c
 * (outgoing presence), watchers.c (watcher persistence), feed.c (state from Redis). */
#ifndef OFFHOOK_COMPONENT_H
#define OFFHOOK_COMPONENT_H

#include <stdbool.h>

#include <strophe.h>

#include "config.h"
#include "presence.h"
#include "storecodec.h"
#include "strmap.h"

struct event_base;
struct feed;
struct health;
struct pep;
struct watchers;
struct xmpplink;

struct cuser {
    const struct cfg_user *cfg;  /* current configuration entry (replaced on reload) */
    char *jid;                   /* the chat user */
    char *contact;               /* their phone contact on the component domain */
    struct user_record rec;      /* latest state from sipbridge */
    bool have_rec;               /* rec holds something sipbridge wrote */
    struct strmap watchers;      /* bare JID -> non-NULL; keys owned by the map's user */
    struct presence_view sent;   /* what subscribers were last sent */
    bool sent_valid;
    char pep_sent[96];           /* what was last published into the user's PEP; "" = none */
    char caps_ver[32];           /* XEP-0115 ver of this contact's disco#info */
};

struct component {
    struct event_base *base;
    const struct offhook_config *cfg;
    struct xmpplink *xmpp;
    struct feed *feed;
    struct watchers *wstore;
    struct pep *pep;
    struct health *health;
    bool sipbridge_alive;        /* its heartbeat is fresh: records are being kept true */
    struct strmap by_jid;        /* user JID -> struct cuser* */
    struct strmap by_contact;    /* contact JID -> struct cuser* */
    struct strmap user_domains;  /* domains of configured users -> non-NULL (owned keys) */
    struct strmap gateway;       /* "ext:1001", "aor:1001@pbx", "tel:+1555..." -> cuser */
    struct strmap watcher_list;  /* [component] watchers entries (owned keys) */
};

/* publisher.c */
/* Sends u's current presence to every watcher if it changed (or always with force). */
void pub_user(struct component *c, struct cuser *u, bool force, int64_t event_us);
/* Sends u's current presence to one JID (probe answers, new subscribers). */
void pub_user_to(struct component *c, struct cuser *u, const char *to);
/* After (re)connecting: every user's presence to every watcher. */
void pub_all(struct component *c);
/* Every user whose view changed (e.g. sipbridge came or went), unforced. */
void pub_changed(struct component *c);
/* On a clean stop: every contact unavailable to its watchers, every PEP item cleared. */
void pub_goodbye(struct component *c);
/* Subscription management presence (subscribed, unsubscribed) from a bare JID. */
void pub_presence_type(struct component *c, const char *from, const char *to,
                       const char *type);
/* "unavailable" from u's phone resource (where its available presence came from). */
void pub_unavailable(struct component *c, const struct cuser *u, const char *to);
/* The answer to a subscription request: "subscribed", with a roster nickname. */
void pub_subscribed(struct component *c, struct cuser *u, const char *to);

/* Phone contacts' availability comes from this resource: clients track presence per
 * resource, and some will not query a bare JID (XEP-0092 version, for one). */
#define CONTACT_RESOURCE "phone"
void pub_register_metrics(void);
/* Adds <addr uri=.../> for each of u's phone AORs and its tel: number to reach. */
void reach_addresses(xmpp_ctx_t *ctx, xmpp_stanza_t *reach, const struct cuser *u);

/* router.c */
void router_stanza(struct component *c, xmpp_stanza_t *stanza);
void router_register_metrics(void);

/* watchers.c: persistence of each contact's watchers in Redis */
struct watchers *watchers_new(struct component *c);
void watchers_free(struct watchers *w);
/* Adds/removes a watcher in memory and in Redis (now or once Redis is up). */
void watchers_add(struct watchers *w, struct cuser *u, const char *bare);
void watchers_remove(struct watchers *w, struct cuser *u, const char *bare);
bool watchers_up(const struct watchers *w);
/* Drops u's in-memory set (user removed from the configuration). */
void cuser_watchers_clear(struct cuser *u);

/* feed.c: user records from Redis */
struct feed *feed_new(struct component *c);
void feed_free(struct feed *f);
bool feed_synced(const struct feed *f);
/* Takes a fresh snapshot (after a reload changed the users). */
void feed_resync(struct feed *f);
void feed_register_metrics(void);

/* health.c: heartbeats in Redis */
struct health *health_new(struct component *c);
void health_free(struct health *h);
void health_register_metrics(void);
/* A state event from sipbridge arrived: it is alive, whatever the last beat said. Returns
 * true if that is news (the caller then publishes what changed). */
bool health_seen_sipbridge(struct health *h);

/* The record to show for u: NULL while nothing is known or sipbridge is not keeping it
 * true (its heartbeat is missing). */
const struct user_record *cuser_record(const struct component *c, const struct cuser *u);

/* users.c: component users */
/* Builds the indexes for cfg's users (c->cfg = cfg); frees them all. */
void component_users_init(struct component *c, const struct offhook_config *cfg);
void component_users_free(struct component *c);
/* Reload: users whose contact changed are replaced, removed ones tell their watchers. */
void component_users_apply(struct component *c, const struct offhook_config *cfg);
/* After a reload tightened allow_watchers: unsubscribes whoever may no longer watch. */
void component_enforce_watcher_policy(struct component *c);
struct cuser *component_user_by_contact(struct component *c, const char *contact);
/* XEP-0100 lookup: an extension, SIP URI or phone number -> the user, or NULL. */
struct cuser *component_user_by_number(struct component *c, const char *query);
/* Whether bare may use the component at all (the watcher policy, not tied to a user). */
bool component_requester_allowed(const struct component *c, const char *bare);
/* Whether a watcher may see the phone state of u (the [component] watcher policy). */
bool component_watcher_allowed(const struct component *c, const struct cuser *u,
                               const char *bare);

#endif
