/* The PEP writer: the phone state published into each user's own PEP (XEP-0108 activity,
 * XEP-0152 reachability) through XEP-0356 privileged IQs, where the user's server granted
 * it; see pep.c. Called by publisher.c (views) and router.c (grants, answers). */
#ifndef OFFHOOK_PEP_H
#define OFFHOOK_PEP_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>

#include <strophe.h>

#include "stanza.h"
#include "users.h"
#include "view.h"

struct event_base;
struct pep;

/* News for the owner (main.c), wired at pep_new. */
struct pep_ops {
    /* The server of domain granted the pubsub permission (again): every user there should
     * be published, forced (pep_user with force). domain is valid only during the call. */
    void (*on_granted)(void *arg, const char *domain);
};

/* base, d and out are borrowed and must outlive the writer; ops is copied. */
struct pep *pep_new(struct event_base *base, const struct users *d,
                    const struct stanza_out *out, const struct pep_ops *ops, void *arg);
void pep_free(struct pep *p);
void pep_register_metrics(void);
/* A new component stream: forget grants, wait for the server's <privilege/>. */
void pep_connected(struct pep *p);
/* A <message/> from a server domain: returns true if it was a <privilege/> (consumed).
 * msg is only read. */
bool pep_on_message(struct pep *p, xmpp_stanza_t *msg, const char *from_domain);
/* An IQ result/error: returns true if it answered one of our publishes (consumed). */
bool pep_on_iq(struct pep *p, xmpp_stanza_t *iq);
/* Publishes v's activity and reachability into u's PEP if they differ from what was last
 * published there (or always with force), where u's server granted it. */
void pep_user(struct pep *p, const struct cuser *u, const struct user_view *v, bool force);
/* u is being removed: drops what the writer remembers of it. */
void pep_forget(struct pep *p, const struct cuser *u);

#endif
