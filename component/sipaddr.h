/* SIP URIs and phone numbers as people write them, parsed and normalised so that a
 * lookup (XEP-0100) finds the person an address names: RFC 3261 section 19.1 for SIP URIs
 * (scheme, user, host and port compared; display names, <>, parameters and headers
 * understood; ;user=phone means the user part is a number), RFC 3966 visual separators
 * and E.164 for numbers. Pure. Called by users.c to index the configured addresses and to
 * answer each lookup, and by the unit tests. */
#ifndef OFFHOOK_SIPADDR_H
#define OFFHOOK_SIPADDR_H

#include <stdbool.h>
#include <stddef.h>

#define SIPADDR_PART_MAX 256     /* longest user part or host kept */
#define SIPADDR_NUMBER_MAX 32    /* "+" and at most 30 digits */
#define SIPADDR_SUFFIX_MIN 6     /* fewest digits a national number matches by */

struct sipaddr {
    bool secure;                     /* sips: (the same user as sip:, over TLS) */
    char user[SIPADDR_PART_MAX];     /* %-unescaped, case kept (RFC 3261: case-sensitive);
                                        "" when the URI has none */
    char host[SIPADDR_PART_MAX];     /* lower-cased; an IPv6 reference keeps its [] */
    int port;                        /* 0 when the URI gives none */
    bool user_phone;                 /* ;user=phone: user is a telephone-subscriber */
};

/* Parses a SIP or SIPS URI in any of the forms a person or a PBX writes it: a bare URI
 * (sip:alice@pbx.example.com:5060;transport=tcp?Subject=x), in angle brackets, or as a
 * name-addr with a display name ("Alice Jones" <sip:alice@...>;tag=...). Returns 0, or -1
 * when s is not a SIP URI (another scheme, no host, unbalanced brackets or quotes, a part
 * too long). */
int sipaddr_parse(const char *s, struct sipaddr *out) __attribute__((warn_unused_result));

/* Normalises a phone number: a tel: URI (parameters dropped) or a number with RFC 3966
 * visual separators (- . ( ) and spaces). out gets "+" and the digits of an international
 * number (a leading + or 00), or the bare digits of a national one. Returns 0, or -1 when
 * s holds anything else (a letter, a + in the middle, no digit, too many digits). */
int sipaddr_number(const char *s, char *out, size_t len) __attribute__((warn_unused_result));

/* Whether a national number (digits, no +) names the international number intl ("+" and
 * digits): its digits, less one leading trunk-prefix 0, are the last digits of intl, and
 * there are at least SIPADDR_SUFFIX_MIN of them. "020 7946 0000" names +442079460000,
 * "555 0100" names +15550100. */
bool sipaddr_national_matches(const char *national, const char *intl);

#endif
