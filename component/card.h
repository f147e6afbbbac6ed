/* What a vCard says about a user's desk phone, in both vCard formats XMPP uses (XEP-0054
 * vcard-temp, XEP-0292 vCard4): the phone contact's whole vCard (name, the person's chat
 * address, the desk number and SIP addresses), and the phone entries added to the
 * user's own vCard, leaving every other element as the user wrote it. Pure: builds and
 * edits libstrophe stanzas. Called by router.c (the contact's vCards) and vcard_out.c
 * (the user's own), and by the unit tests. */
#ifndef OFFHOOK_CARD_H
#define OFFHOOK_CARD_H

/* Ownership: pointers given to a function are only read during the call, unless its
 * comment says otherwise. */

#include <stddef.h>

#include <strophe.h>

#include "users.h"

#define CARD_URIS_MAX 9 /* the tel: URI and up to 8 AORs */

/* u's phone addresses, as URIs: the tel: URI of its number first (digits and a leading
 * +, RFC 3966), then each AOR. uris[i] point into tel (for the first) or u's
 * configuration. Returns how many. */
int card_phone_uris(const struct cuser *u, char *tel, size_t tel_len,
                    const char *uris[CARD_URIS_MAX]);

/* "<name> (phone)": what a roster or vCard calls u's phone contact. */
void card_nick(const struct cuser *u, char *out, size_t len);

/* The phone contact's vcard-temp <vCard/>: FN, NICKNAME "<name> (phone)", JABBERID (the
 * person's chat address), a work voice TEL per number and SIP address. The caller owns
 * it. */
xmpp_stanza_t *card_contact_temp(xmpp_ctx_t *ctx, const struct cuser *u);
/* The same as a vCard4 <vcard/> (RFC 6351): fn, nickname, impp xmpp: of the person, a
 * work voice tel per address. The caller owns it. */
xmpp_stanza_t *card_contact_v4(xmpp_ctx_t *ctx, const struct cuser *u);

/* Adds to the user's own vcard-temp <vCard/> (vcard, changed in place) a work voice TEL
 * for each of u's phone addresses it does not hold yet (numbers compared as numbers,
 * SIP URIs as written). Nothing else is touched. Returns how many were added. */
int card_add_phone_temp(xmpp_ctx_t *ctx, xmpp_stanza_t *vcard, const struct cuser *u);
/* The same for a vCard4 <vcard/>. A new vCard (the user had none) gets an fn too, as
 * RFC 6350 requires one: give fn_if_new the name (NULL: the vCard existed). */
int card_add_phone_v4(xmpp_ctx_t *ctx, xmpp_stanza_t *vcard, const struct cuser *u,
                      const char *fn_if_new);

#endif
