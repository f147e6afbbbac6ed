/* The vCard writer: each user's desk number and SIP addresses added to the user's own
 * vCard (CUSAX: a contact's vCard says how to call them), through XEP-0356 privileged IQs
 * (privileged.h), leaving everything else the user wrote as it is; see vcard_out.c.
 * Called by publisher.c (users) and main.c (the stream, the grants). */
#ifndef OFFHOOK_VCARD_OUT_H
#define OFFHOOK_VCARD_OUT_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>

#include "privileged.h"
#include "stanza.h"
#include "users.h"

struct vcard_out;

/* d, out and priv are borrowed and must outlive the writer. */
struct vcard_out *vcard_new(const struct users *d, const struct stanza_out *out,
                            struct privileged *priv);
void vcard_free(struct vcard_out *v);
void vcard_register_metrics(void);
/* A new component stream: every user's vCard is looked at again once granted. */
void vcard_connected(struct vcard_out *v);
/* domain's server advertised its grants: says once which vCard offhook writes there, or
 * why none. */
void vcard_granted(struct vcard_out *v, const char *domain);
/* domain's server sent no <privilege/>: says once that vCards are not written there. */
void vcard_missing(struct vcard_out *v, const char *domain);
/* Makes sure u's own vCard holds u's phone addresses: read, and written only if one is
 * missing. Does nothing if that was done in this stream for the same addresses, unless
 * force. */
void vcard_user(struct vcard_out *v, const struct cuser *u, bool force);
/* u is being removed: drops what the writer remembers of it. */
void vcard_forget(struct vcard_out *v, const struct cuser *u);

#endif
