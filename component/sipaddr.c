/* SIP URIs and phone numbers for lookups (see sipaddr.h). */
#include "sipaddr.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Copies s[0..n) into out, %HH escapes decoded (RFC 3261 19.1.4: escaped and unescaped
 * characters compare equal in the user part). -1 if it does not fit or holds a NUL. */
static int unescape(const char *s, size_t n, char *out, size_t len)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        }
        if (c == '\0' || o + 1 >= len)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* The URI inside a name-addr: the text between < and > when there is a < outside a
 * quoted display name, else s itself (trimmed). Returns 0 with [*start, *end), or -1. */
static int uri_span(const char *s, const char **start, const char **end)
{
    bool quoted = false;

    for (const char *p = s; *p; p++) {
        if (quoted) {
            if (*p == '\\' && p[1])
                p++;
            else if (*p == '"')
                quoted = false;
            continue;
        }
        if (*p == '"') {
            quoted = true;
        } else if (*p == '<') {
            const char *gt = strchr(p + 1, '>');
            if (!gt)
                return -1;
            *start = p + 1;
            *end = gt;
            return 0;
        }
    }
    if (quoted)
        return -1;
    while (isspace((unsigned char)*s))
        s++;
    *start = s;
    *end = s + strlen(s);
    while (*end > *start && isspace((unsigned char)(*end)[-1]))
        (*end)--;
    return 0;
}

/* The ;user=phone parameter among ";a=b;c" (RFC 3261 19.1.1; names and values compared
 * case-insensitively). */
static bool has_user_phone(const char *p, const char *end)
{
    while (p < end) {
        const char *next = memchr(p, ';', (size_t)(end - p));
        size_t n = (size_t)((next ? next : end) - p);
        if (n == 10 && strncasecmp(p, "user=phone", 10) == 0)
            return true;
        if (!next)
            break;
        p = next + 1;
    }
    return false;
}

int sipaddr_parse(const char *s, struct sipaddr *out)
{
    const char *start, *end, *p, *at, *hostend, *host;
    size_t n;

    memset(out, 0, sizeof *out);
    if (uri_span(s, &start, &end) < 0)
        return -1;
    if ((size_t)(end - start) > 4 && strncasecmp(start, "sip:", 4) == 0) {
        p = start + 4;
    } else if ((size_t)(end - start) > 5 && strncasecmp(start, "sips:", 5) == 0) {
        p = start + 5;
        out->secure = true;
    } else {
        return -1;
    }
    /* userinfo ends at the '@' (a user part cannot hold one unescaped); drop a password. */
    at = memchr(p, '@', (size_t)(end - p));
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (unescape(p, (size_t)((colon ? colon : at) - p), out->user, sizeof out->user) < 0)
            return -1;
        p = at + 1;
    }
    host = p;
    if (*host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (!rb)
            return -1;
        hostend = rb + 1;
    } else {
        hostend = host;
        while (hostend < end && *hostend != ':' && *hostend != ';' && *hostend != '?')
            hostend++;
    }
    n = (size_t)(hostend - host);
    if (n == 0 || n >= sizeof out->host)
        return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)host[i];
        if (isspace(c) || c == '@' || c == '<' || c == '>' || c == '"')
            return -1;
        out->host[i] = (char)tolower(c);
    }
    out->host[n] = '\0';
    p = hostend;
    if (p < end && *p == ':') {
        long port = 0;
        p++;
        if (p >= end || !isdigit((unsigned char)*p))
            return -1;
        while (p < end && isdigit((unsigned char)*p)) {
            port = port * 10 + (*p++ - '0');
            if (port > 65535)
                return -1;
        }
        if (port == 0)
            return -1;
        out->port = (int)port;
    }
    if (p < end && *p != ';' && *p != '?')
        return -1;
    if (p < end && *p == ';') {
        const char *q = memchr(p, '?', (size_t)(end - p));
        out->user_phone = has_user_phone(p + 1, q ? q : end);
    }
    if (out->user_phone) {
        /* telephone-subscriber: the number, then its own ;isub= / ;phone-context=. */
        char *semi = strchr(out->user, ';');
        if (semi)
            *semi = '\0';
    }
    return 0;
}

int sipaddr_number(const char *s, char *out, size_t len)
{
    size_t o = 0, digits = 0;
    const char *end;

    while (isspace((unsigned char)*s))
        s++;
    if (strncasecmp(s, "tel:", 4) == 0)
        s += 4;
    /* RFC 3966: parameters (;ext=, ;phone-context=) follow the number. */
    end = s + strcspn(s, ";");
    if (len < 2)
        return -1;
    for (const char *p = s; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (isdigit(c)) {
            if (o + 1 >= len || ++digits > SIPADDR_NUMBER_MAX - 2)
                return -1;
            out[o++] = (char)c;
        } else if (c == '+') {
            if (o != 0)
                return -1;
            out[o++] = '+';
        } else if (!strchr("-.() ", c)) {
            return -1;
        }
    }
    out[o] = '\0';
    if (digits == 0)
        return -1;
    /* 00 is the ITU international prefix: "0044 20..." is +44 20... */
    if (out[0] == '0' && out[1] == '0' && digits > 2) {
        out[0] = '+';
        memmove(out + 1, out + 2, o - 1);
    }
    return 0;
}

bool sipaddr_national_matches(const char *national, const char *intl)
{
    size_t n, m;

    if (national[0] == '+' || intl[0] != '+')
        return false;
    if (national[0] == '0')
        national++; /* the trunk prefix of most numbering plans */
    n = strlen(national);
    m = strlen(intl + 1);
    return n >= SIPADDR_SUFFIX_MIN && n <= m && strcmp(intl + 1 + (m - n), national) == 0;
}
