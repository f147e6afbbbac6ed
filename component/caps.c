/* Disco identities/features and XEP-0115 verification strings. */
#include "caps.h"

#include <stdio.h>
#include <string.h>

#include <strophe.h>

/* Sorted byte-wise, as XEP-0115 5.1 requires for the verification string. urn:xmpp:reach:0:
 * the phone's addresses come in the contact's presence (XEP-0152). */
const char *const caps_contact_features[] = {NS_CAPS, NS_DISCO_INFO, NS_NICK, NS_VCARD4,
                                             NS_PING, NS_REACH, NS_VCARD, NULL};
const char *const caps_domain_features[] = {NS_DISCO_INFO, NS_DISCO_ITEMS, NS_GATEWAY,
                                            NS_VERSION, NS_PING, NULL};

/* The media form's fields, sorted by var, values sorted (XEP-0115 5.1 step 6). The phone
 * does audio over SIP; video only where its PIDF says so (RFC 5196). */
static void form_fields(bool video, const char *fields[][4])
{
    fields[0][0] = "media";
    fields[0][1] = "audio";
    fields[0][2] = video ? "video" : NULL;
    fields[0][3] = NULL;
    fields[1][0] = "protocol";
    fields[1][1] = "sip";
    fields[1][2] = NULL;
}

int caps_contact_string(bool video, char *out, size_t len)
{
    const char *fields[2][4];
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
    form_fields(video, fields);
    n = snprintf(out + used, len - used, "%s<", CAPS_FORM_TYPE);
    if (n < 0 || (size_t)n >= len - used)
        return -1;
    used += (size_t)n;
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 4 && fields[i][j]; j++) {
            n = snprintf(out + used, len - used, "%s<", fields[i][j]);
            if (n < 0 || (size_t)n >= len - used)
                return -1;
            used += (size_t)n;
        }
    }
    return (int)used;
}

void caps_contact_form(xmpp_ctx_t *ctx, xmpp_stanza_t *query, bool video)
{
    const char *fields[2][4];
    xmpp_stanza_t *x = stanza_child(ctx, query, "x", NS_DATA), *f;

    xmpp_stanza_set_type(x, "result");
    f = stanza_child(ctx, x, "field", NULL);
    xmpp_stanza_set_attribute(f, "var", "FORM_TYPE");
    xmpp_stanza_set_type(f, "hidden");
    stanza_text_child(ctx, f, "value", CAPS_FORM_TYPE);
    form_fields(video, fields);
    for (int i = 0; i < 2; i++) {
        f = stanza_child(ctx, x, "field", NULL);
        xmpp_stanza_set_attribute(f, "var", fields[i][0]);
        for (int j = 1; j < 4 && fields[i][j]; j++)
            stanza_text_child(ctx, f, "value", fields[i][j]);
    }
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

int caps_contact_ver(bool video, char *out, size_t len)
{
    char s[2048];
    int n = caps_contact_string(video, s, sizeof s);

    return n < 0 ? -1 : caps_hash(s, (size_t)n, out, len);
}
