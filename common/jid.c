/* JID parsing and validation, pure. Rejects what RFC 7622 forbids in each part that can be
 * checked without Unicode tables; case folding is ASCII only. */
#include "jid.h"

#include <stdio.h>
#include <string.h>

#include "strutil.h"

static bool local_ok(const char *s, size_t n)
{
    /* RFC 7622 3.3.1: these are disallowed in localparts. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || strchr("\"&'/:<>@", c))
            return false;
    }
    return true;
}

static bool domain_ok(const char *s, size_t n)
{
    if (n == 0 || s[0] == '.' || s[n - 1] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f || strchr("\"&'/:<>@[]\\", c)) {
            /* IPv6 literals are the one place brackets and colons belong. */
            if (s[0] == '[' && s[n - 1] == ']' && (c == ':' || c == '[' || c == ']'))
                continue;
            return false;
        }
    }
    return true;
}

static bool resource_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

int jid_parse(const char *s, struct jid *out)
{
    const char *slash, *at, *dom;
    size_t total, llen = 0, dlen, rlen = 0;

    if (!s)
        return -1;
    total = strlen(s);
    if (total == 0 || total > JID_MAX || !str_utf8_valid(s, total))
        return -1;
    slash = strchr(s, '/');
    at = memchr(s, '@', slash ? (size_t)(slash - s) : total);
    dom = at ? at + 1 : s;
    if (at) {
        llen = (size_t)(at - s);
        if (llen == 0 || llen > JID_PART_MAX || !local_ok(s, llen))
            return -1;
    }
    dlen = slash ? (size_t)(slash - dom) : total - (size_t)(dom - s);
    if (dlen > JID_PART_MAX || !domain_ok(dom, dlen))
        return -1;
    if (slash) {
        rlen = total - (size_t)(slash + 1 - s);
        if (rlen == 0 || rlen > JID_PART_MAX || !resource_ok(slash + 1, rlen))
            return -1;
    }
    memcpy(out->local, s, llen);
    out->local[llen] = '\0';
    memcpy(out->domain, dom, dlen);
    out->domain[dlen] = '\0';
    if (slash)
        memcpy(out->resource, slash + 1, rlen);
    out->resource[rlen] = '\0';
    str_lower(out->local);
    str_lower(out->domain);
    return 0;
}

int jid_format_bare(const struct jid *j, char *out, size_t outlen)
{
    int n;

    if (j->local[0])
        n = snprintf(out, outlen, "%s@%s", j->local, j->domain);
    else
        n = snprintf(out, outlen, "%s", j->domain);
    return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

int jid_to_bare(const char *s, char *out, size_t outlen)
{
    struct jid j;

    if (jid_parse(s, &j) < 0)
        return -1;
    return jid_format_bare(&j, out, outlen);
}
