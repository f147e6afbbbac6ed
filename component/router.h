/* The router: every incoming stanza, validated and answered. Presence subscriptions
 * follow RFC 6121 under the watcher policy (a change of who watches goes up through
 * router_ops); IQs get answers or the right stanza error; XEP-0356 grants and answers go
 * to privileged.c. Calls the publisher and the presence writer for its answers, never
 * the link: every stanza leaves through the stanza_out it is given. Called by main.c for
 * each stanza xmpplink.c receives. */
#ifndef OFFHOOK_ROUTER_H
#define OFFHOOK_ROUTER_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <strophe.h>

#include "presence_out.h"
#include "privileged.h"
#include "publisher.h"
#include "stanza.h"
#include "users.h"

struct router;

/* News for the owner (main.c), wired at router_new. u and bare are valid only during
 * the call. */
struct router_ops {
    /* bare, whom the watcher policy allows, subscribed to u's contact or probed it (the
     * server probes only for rosters that hold the subscription): it watches from now
     * on. Called before the answers are sent. */
    void (*on_subscribe)(void *arg, struct cuser *u, const char *bare);
    /* bare unsubscribed from u's contact: it no longer watches. */
    void (*on_unsubscribe)(void *arg, struct cuser *u, const char *bare);
};

/* Everything is borrowed and must outlive the router; ops is copied. */
struct router *router_new(const struct users *d, struct publisher *pub,
                          struct presence_out *po, struct privileged *priv,
                          const struct stanza_out *out, const struct router_ops *ops,
                          void *arg);
void router_free(struct router *r);
void router_register_metrics(void);
/* Handles one stanza from the server; st is only read, and not kept past the call. */
void router_stanza(struct router *r, xmpp_stanza_t *st);

#endif
