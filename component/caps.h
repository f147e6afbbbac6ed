/* What a phone contact and the component domain say about themselves (XEP-0030 identity,
 * features and, for a contact, an XEP-0128 form saying what media its phone does) and the
 * XEP-0115 capabilities hash of a contact, computed from the very same lists so disco and
 * caps cannot disagree. Used by router.c and presence_out.c. */
#ifndef OFFHOOK_CAPS_H
#define OFFHOOK_CAPS_H

#include <stdbool.h>
#include <stddef.h>

#include <strophe.h>

#include "stanza.h" /* the namespaces */

#define CAPS_NODE "https://github.com/offhook/offhook"
/* The FORM_TYPE of the phone's media form (offhook's own, XEP-0068 style). */
#define CAPS_FORM_TYPE "https://github.com/offhook/offhook#phone"

extern const char *const caps_contact_features[]; /* NULL-terminated, sorted */
extern const char *const caps_domain_features[];  /* NULL-terminated, sorted */

/* The XEP-0115 verification string of a phone contact (pure): identity client/phone with
 * no name, the features, and the media form: "client/phone//<feature<...<FORM_TYPE<media<
 * audio<[video<]protocol<sip<". It depends only on whether the phone does video, so
 * there are two hashes in all and clients resolve each once, however many contacts:
 * per-contact facts (the addresses) are in each presence's <reach/> and in the vCard,
 * not here. Returns the length, or -1 if it does not fit in out. */
int caps_contact_string(bool video, char *out, size_t len);
/* base64(SHA-1(caps_contact_string)) into out (at least 29 bytes). Returns 0/-1. */
int caps_contact_ver(bool video, char *out, size_t len);
/* The media form for a disco#info answer (XEP-0128), added to query. */
void caps_contact_form(xmpp_ctx_t *ctx, xmpp_stanza_t *query, bool video);
/* base64(SHA-1(s[0..n))) (XEP-0115 5.1 steps 7-8). Returns 0/-1. */
int caps_hash(const char *s, size_t n, char *out, size_t len);
int caps_base64(const unsigned char *in, size_t n, char *out, size_t len);

#endif
