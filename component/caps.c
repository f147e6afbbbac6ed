/* Disco identities/features and XEP-0115 verification strings. */
#include "caps.h"

#include <stdio.h>
#include <string.h>

#include <strophe.h>

/* Sorted byte-wise, as XEP-0115 5.1 requires for the verification string. */
const char *const caps_contact_features[] = {NS_CAPS, NS_DISCO_INFO, NS_NICK, NS_VCARD4,
                                             NS_PING, NS_VCARD, NULL};
const char *const caps_domain_features[] = {NS_DISCO_INFO, NS_DISCO_ITEMS, NS_GATEWAY,
                                            NS_VERSION, NS_PING, NULL};

int caps_contact_string(char *out, size_t len)
{
    size_t used = 0;
    int n = snprintf(out, len, "client/phone//<");

    if (n < 0 || (size_t)n >= len)
        return -1;
    used = (size_t)n;
    for (const char *const *f = caps_contact_features; *f; f++) {
        n = snprintf(out + used, len - used, "%s<", *f);
        if (n < 0 || (size_t)n >= len - used)
            return -1;
        used += (size_t)n;
    }
    return (int)used;
}

int caps_base64(const unsigned char *in, size_t n, char *out, size_t len)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;

    if (len < (n + 2) / 3 * 4 + 1)
        return -1;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return 0;
}

int caps_hash(const char *s, size_t n, char *out, size_t len)
{
    unsigned char digest[XMPP_SHA1_DIGEST_SIZE];

    xmpp_sha1_digest((const unsigned char *)s, n, digest);
    return caps_base64(digest, sizeof digest, out, len);
}

int caps_contact_ver(char *out, size_t len)
{
    char s[2048];
    int n = caps_contact_string(s, sizeof s);

    return n < 0 ? -1 : caps_hash(s, (size_t)n, out, len);
}
