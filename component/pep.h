/* Publishing the phone state into each user's own PEP (XEP-0108 activity, XEP-0152
 * reachability) through XEP-0356 privileged IQs; see pep.c. */
#ifndef OFFHOOK_PEP_H
#define OFFHOOK_PEP_H

#include <stdbool.h>

#include "component.h"

struct pep *pep_new(struct component *c);
void pep_free(struct pep *p);
/* A new component stream: forget grants, wait for the server's <privilege/>. */
void pep_connected(struct pep *p);
/* A <message/> from a server domain: returns true if it was a <privilege/> (consumed). */
bool pep_on_message(struct pep *p, xmpp_stanza_t *msg, const char *from_domain);
/* An IQ result/error: returns true if it answered one of our publishes (consumed). */
bool pep_on_iq(struct pep *p, xmpp_stanza_t *iq);
/* Publishes u's activity and reachability if they changed (or always with force). */
void pep_user(struct pep *p, struct cuser *u, bool force);
/* Publishes empty activity and reach for u (a clean stop: nothing stale stays behind). */
void pep_clear(struct pep *p, struct cuser *u);
/* Every user whose server granted the privilege, forced. */
void pep_all(struct pep *p);
void pep_register_metrics(void);

#endif
