/* What a phone contact and the component domain say about themselves (XEP-0030 identity
 * and features) and the XEP-0115 capabilities hash of a contact, computed from the very
 * same lists so disco and caps cannot disagree. Used by router.c and presence_out.c. */
#ifndef OFFHOOK_CAPS_H
#define OFFHOOK_CAPS_H

#include <stddef.h>

#include "stanza.h" /* the namespaces */

#define CAPS_NODE "https://github.com/offhook/offhook"

extern const char *const caps_contact_features[]; /* NULL-terminated, sorted */
extern const char *const caps_domain_features[];  /* NULL-terminated, sorted */

/* The XEP-0115 verification string of a phone contact, whose identity is client/phone
 * with no name (pure): "client/phone//<feature<...". The same for every contact, so
 * clients resolve it once. Returns the length, or -1 if it does not fit in out. */
int caps_contact_string(char *out, size_t len);
/* base64(SHA-1(caps_contact_string)) into out (at least 29 bytes). Returns 0/-1. */
int caps_contact_ver(char *out, size_t len);
/* base64(SHA-1(s[0..n))) (XEP-0115 5.1 steps 7-8). Returns 0/-1. */
int caps_hash(const char *s, size_t n, char *out, size_t len);
int caps_base64(const unsigned char *in, size_t n, char *out, size_t len);

#endif
