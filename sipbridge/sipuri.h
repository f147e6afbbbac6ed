/* The parts of SIP URIs sipbridge compares, pure: whether the entity a NOTIFY body names
 * (dialog-info's entity=, PIDF's entity=) is the user the subscription was for. Called by
 * bridge.c before a body is applied; unit-tested in test_parsers.
 *
 * RFC 3261 19.1.4 compares the user part exactly (it is case-sensitive) after %XX
 * escapes are decoded, and the host case-insensitively. Real PBXes name the entity by
 * their own domain, not by the address they were subscribed at (Asterisk: entity
 * "sip:1001@pbx.example.com" for a SUBSCRIBE to sip:1001@127.0.0.1:5060; FreeSWITCH its
 * domain; Kamailio the presentity without the port), so the host cannot tell a forged
 * entity from a real one and is not compared: the user is. */
#ifndef OFFHOOK_SIPURI_H
#define OFFHOOK_SIPURI_H

#include <stdbool.h>
#include <stddef.h>

/* The user part of a sip:, sips:, pres: or im: URI (after the scheme, before '@'), its
 * ;parameters cut and %XX escapes decoded, into out (len bytes). -1 if uri has another
 * scheme, no user part, a bad escape, or one that does not fit. */
int sipuri_user(const char *uri, char *out, size_t len) __attribute__((warn_unused_result));
/* Whether entity names the same user as aor (the subscribed URI): both have a user part
 * and the two are equal. True when aor has no user part (nothing to compare). */
bool sipuri_same_user(const char *entity, const char *aor);

#endif
