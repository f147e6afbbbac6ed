/* The PEP writer: the phone state published into each user's own PEP (XEP-0108 activity,
 * XEP-0152 reachability) through XEP-0356 privileged IQs (privileged.h), where the user's
 * server granted it, without ever destroying what the user published there; see pep.c.
 * Called by publisher.c (views) and main.c (the stream, the grants). */
#ifndef OFFHOOK_PEP_H
#define OFFHOOK_PEP_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stdint.h>

#include "privileged.h"
#include "stanza.h"
#include "users.h"
#include "view.h"

/* The item id offhook publishes under: how it tells its own items from the user's. */
#define PEP_ITEM_ID "offhook"

struct pep;

/* d, out and priv are borrowed and must outlive the writer. */
struct pep *pep_new(const struct users *d, const struct stanza_out *out,
                    struct privileged *priv);
void pep_free(struct pep *p);
void pep_register_metrics(void);
/* A new component stream: nothing is known of any node until it is read again. */
void pep_connected(struct pep *p);
/* domain's server advertised its grants: says once why PEP is off there, if it is. */
void pep_granted(struct pep *p, const char *domain);
/* domain's server sent no <privilege/>: says once that PEP is off there. */
void pep_missing(struct pep *p, const char *domain);
/* Brings u's activity and reachability nodes to v: each node whose wanted content
 * changed (or every node, with force) is read, then written only where it holds
 * offhook's own item or nothing, never over what the user published (pep.c). */
void pep_user(struct pep *p, const struct cuser *u, const struct user_view *v, bool force);
/* u is being removed: drops what the writer remembers of it (answers still on their way
 * are then ignored). */
void pep_forget(struct pep *p, const struct cuser *u);

/* For the control socket: PEP for one user, node by node. Strings are static or point
 * into the writer: valid until the loop runs again. */
struct pep_node_status {
    const char *node;        /* "activity", "reach" */
    bool known;              /* the writer has dealt with this user's node */
    bool in_sync;            /* the node was left as the current view wants */
    bool busy;               /* a read or write is on its way */
    const char *decision;    /* the last thing said of it (user_item, open_node,
                              * node_model, ...), or NULL */
    const char *model;       /* the access model it is written under */
    bool covered, yielded;   /* activity: offhook covered the user's item for this call;
                              * the user published over it during the call */
    int64_t answer_ms;       /* the last answer (wall clock ms), 0: none */
    bool answer_to_read;     /* ... to a read, else to a write */
    const char *result;      /* "ok", "refused", "timeout", "lost", "" */
    const char *condition;   /* a refusal's condition, "" */
};
struct pep_status {
    bool enabled;            /* [component] publish has pep */
    bool advertised;         /* u's server sent <privilege/> in this stream */
    bool may_get, may_set;   /* ... granting pubsub get / set (both needed) */
    struct pep_node_status node[2];
};
void pep_status(const struct pep *p, const struct cuser *u, struct pep_status *out);

#endif
