/* Directory entries into users: value limits and clean-up, the per-entry and cross-entry
 * checks, the aggregated report, and the last-known copy's encoding. Pure. */
#include "dirbuild.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jid.h"
#include "sbuf.h"
#include "strmap.h"
#include "strutil.h"

const char *const dir_skip_names[] = {
    [DIR_SKIP_BAD_JID] = "bad_jid",       [DIR_SKIP_NO_PHONE] = "no_phone",
    [DIR_SKIP_BAD_PHONE] = "bad_phone",   [DIR_SKIP_DUP_JID] = "duplicate_jid",
    [DIR_SKIP_DUP_PHONE] = "duplicate_phone", [DIR_SKIP_CONTACT] = "contact_collision",
    [DIR_SKIP_TOO_LARGE] = "too_large",   [DIR_SKIP_OVER_LIMIT] = "over_limit",
    [DIR_SKIP__N] = NULL,
};

/* ---- values ------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (at most n bytes), or 0 if there is none
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* A value as it may be shown to chat users: well-formed UTF-8 (a bad byte becomes '?'),
 * control characters turned into spaces, trimmed, cut to at most max bytes on a character
 * boundary. NULL if nothing is left. */
static char *text_copy(const char *v, size_t len, size_t max)
{
    const unsigned char *s = (const unsigned char *)v;
    char *out = xmalloc(max + 1), *t;
    size_t o = 0;

    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq(s + i, len - i);
        if (n == 0) {
            if (o + 1 > max)
                break;
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + n > max)
            break;
        if (n == 1 && (s[i] < 0x20 || s[i] == 0x7f))
            out[o++] = ' ';
        else
            memcpy(out + o, s + i, n), o += n;
        i += n;
    }
    out[o] = '\0';
    t = str_trim(out);
    if (!*t) {
        free(out);
        return NULL;
    }
    if (t != out)
        memmove(out, t, strlen(t) + 1);
    return out;
}

/* A value kept as it is for a check later on: a NUL inside it becomes DEL, which every
 * check refuses, so that "1001\0junk" is not taken for "1001". */
static char *raw_copy(const char *v, size_t len)
{
    char *out = xmalloc(len + 1);

    for (size_t i = 0; i < len; i++)
        out[i] = v[i] ? v[i] : 0x7f;
    out[len] = '\0';
    return out;
}

void dir_entry_free(struct dir_entry *e)
{
    free(e->id);
    free(e->jid);
    for (int i = 0; i < e->nphones; i++)
        free(e->phones[i]);
    free(e->name);
    free(e->tel);
    for (int i = 0; i < e->ngroups; i++)
        free(e->groups[i]);
    memset(e, 0, sizeof *e);
}

void dir_entry_set_jid(struct dir_entry *e, const char *v, size_t len)
{
    if (e->jid)
        return; /* the first value is the user's */
    if (len > DIR_MAX_JID) {
        e->too_large = true;
        return;
    }
    e->jid = raw_copy(v, len);
}

void dir_entry_add_phone(struct dir_entry *e, const char *v, size_t len)
{
    if (len > DIR_MAX_PHONE) {
        e->too_large = true;
        return;
    }
    if (e->nphones < DIR_MAX_PHONES)
        e->phones[e->nphones++] = raw_copy(v, len);
}

void dir_entry_set_name(struct dir_entry *e, const char *v, size_t len)
{
    if (!e->name)
        e->name = text_copy(v, len, DIR_MAX_NAME);
}

void dir_entry_set_tel(struct dir_entry *e, const char *v, size_t len)
{
    char *t;

    if (e->tel || len > DIR_MAX_TEL)
        return;
    t = text_copy(v, len, DIR_MAX_TEL);
    for (const char *p = t; p && *p; p++) {
        if (!isdigit((unsigned char)*p) && !strchr("+-.() ", *p)) {
            free(t);
            return; /* not a number: the user is served without one */
        }
    }
    e->tel = t;
}

/* RFC 4514: the value of a DN's first RDN ("CN=Sales,OU=Groups,DC=example" -> "Sales"),
 * unescaped, into out. Returns -1 if v is not a DN of at least two RDNs. */
static int first_rdn_value(const char *v, size_t len, char *out, size_t outlen)
{
    size_t i = 0, o = 0;

    while (i < len && (isalnum((unsigned char)v[i]) || v[i] == '-' || v[i] == '.'))
        i++;
    if (i == 0 || i >= len || v[i] != '=')
        return -1;
    for (i++; i < len; i++) {
        char c = v[i];
        if (c == ',' || c == '+')
            break;
        if (c == '\\' && i + 1 < len) {
            if (i + 2 < len && isxdigit((unsigned char)v[i + 1]) &&
                isxdigit((unsigned char)v[i + 2])) {
                char hex[3] = {v[i + 1], v[i + 2], '\0'};
                c = (char)strtol(hex, NULL, 16);
                i += 2;
            } else {
                c = v[++i];
            }
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = c;
    }
    if (i >= len || o == 0)
        return -1; /* one RDN only: a plain value that happens to hold '=' */
    out[o] = '\0';
    return 0;
}

static void add_group(struct dir_entry *e, const char *v, size_t len, bool parse_dn)
{
    char rdn[DIR_MAX_GROUP + 1];
    char *g;

    if (len > 4 * DIR_MAX_GROUP || e->ngroups == CFG_MAX_GROUPS)
        return;
    if (parse_dn && first_rdn_value(v, len, rdn, sizeof rdn) == 0)
        g = text_copy(rdn, strlen(rdn), DIR_MAX_GROUP);
    else if (len <= DIR_MAX_GROUP)
        g = text_copy(v, len, DIR_MAX_GROUP);
    else
        return;
    if (!g)
        return;
    for (int i = 0; i < e->ngroups; i++) {
        if (strcmp(e->groups[i], g) == 0) {
            free(g);
            return;
        }
    }
    e->groups[e->ngroups++] = g;
}

void dir_entry_add_group(struct dir_entry *e, const char *v, size_t len)
{
    add_group(e, v, len, true);
}

/* ---- checks ------------------------------------------------------------------------- */

static bool ascii_uri_ok(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= 0x20 || *p >= 0x7f)
            return false;
    }
    return true;
}

int dirbuild_phone(const char *value, const char *template, char *out, size_t outlen,
                   char *why, size_t whylen)
{
    char buf[DIR_MAX_PHONE + 1], num[DIR_MAX_PHONE + 1], err[256];
    const char *at;
    char *v;
    size_t n = 0;

    snprintf(buf, sizeof buf, "%s", value);
    v = str_trim(buf);
    if (strncasecmp(v, "sip:", 4) == 0 || strncasecmp(v, "sips:", 5) == 0) {
        if (!ascii_uri_ok(v) || config_check_sip_uri(v, true, err, sizeof err) < 0 ||
            strlen(v) >= outlen) {
            snprintf(why, whylen, "'%.64s' is not a SIP URI of a user", v);
            return -1;
        }
        snprintf(out, outlen, "%s", v);
        return 0;
    }
    if (!template || !*template) {
        snprintf(why, whylen, "'%.64s' is not a SIP URI (an extension needs [directory] "
                              "aor_template)", v);
        return -1;
    }
    for (const char *p = v; *p; p++) {
        if (strchr(" -.()/", *p))
            continue;
        if (!(isalnum((unsigned char)*p) || *p == '*' || (*p == '+' && n == 0))) {
            snprintf(why, whylen, "'%.64s' is not an extension or phone number", v);
            return -1;
        }
        num[n++] = *p;
    }
    num[n] = '\0';
    at = strstr(template, "%s");
    if (n == 0 || !at ||
        (size_t)snprintf(out, outlen, "%.*s%s%s", (int)(at - template), template, num,
                         at + 2) >= outlen ||
        config_check_sip_uri(out, true, err, sizeof err) < 0) {
        snprintf(why, whylen, "'%.64s' makes no SIP URI with aor_template", v);
        return -1;
    }
    return 0;
}

struct cand {
    const struct dir_entry *e;
    int skip;                        /* enum dir_skip, or -1 */
    char why[256];
    struct cfg_user u;               /* built when skip < 0 at the first pass */
    char *keys[CFG_MAX_AORS];        /* the AORs lower-cased, to find one in two users */
};

static void report_add(struct dir_report *rep, struct cand *c, enum dir_skip why)
{
    const char *id = c->e->id ? c->e->id : c->e->jid ? c->e->jid : "?";

    c->skip = (int)why;
    rep->skipped[why]++;
    rep->total++;
    if (rep->nexamples < DIR_REPORT_EXAMPLES)
        snprintf(rep->examples[rep->nexamples++], sizeof rep->examples[0], "%.160s: %.150s", id,
                 c->why[0] ? c->why : dir_skip_names[why]);
}

/* The checks one entry passes on its own; fills c->u. */
static void check_entry(const struct offhook_config *cfg, struct cand *c,
                        struct dir_report *rep)
{
    const struct dir_entry *e = c->e;
    char jid[JID_MAX + 1], contact[JID_MAX + 1], aor[DIR_MAX_PHONE * 2];
    struct jid j;

    if (e->too_large) {
        snprintf(c->why, sizeof c->why, "a value over its size limit");
        report_add(rep, c, DIR_SKIP_TOO_LARGE);
        return;
    }
    if (!e->jid) {
        snprintf(c->why, sizeof c->why, "no %s", cfg->dir_jid_attr);
        report_add(rep, c, DIR_SKIP_BAD_JID);
        return;
    }
    if (jid_parse(e->jid, &j) < 0 || !j.local[0] ||
        j.resource[0] || jid_format_bare(&j, jid, sizeof jid) < 0) {
        snprintf(c->why, sizeof c->why, "'%.64s' is not a bare JID (user@domain)", e->jid);
        report_add(rep, c, DIR_SKIP_BAD_JID);
        return;
    }
    for (size_t i = 0, n = strlen(jid); i < n;) {
        size_t k = utf8_seq((const unsigned char *)jid + i, n - i);
        if (!k) {
            snprintf(c->why, sizeof c->why, "JID is not UTF-8");
            report_add(rep, c, DIR_SKIP_BAD_JID);
            return;
        }
        i += k;
    }
    if (e->nphones == 0) {
        snprintf(c->why, sizeof c->why, "no %s", cfg->dir_aor_attr);
        report_add(rep, c, DIR_SKIP_NO_PHONE);
        return;
    }
    if (e->nphones > CFG_MAX_AORS) {
        snprintf(c->why, sizeof c->why, "more than %d phones", CFG_MAX_AORS);
        report_add(rep, c, DIR_SKIP_BAD_PHONE);
        return;
    }
    if (config_contact_for(cfg, jid, contact, sizeof contact, c->why, sizeof c->why) < 0) {
        report_add(rep, c, DIR_SKIP_CONTACT);
        return;
    }
    memset(&c->u, 0, sizeof c->u);
    c->u.show_remote_party = -1;
    for (int i = 0; i < e->nphones; i++) {
        bool dup = false;
        char *key;

        if (dirbuild_phone(e->phones[i], cfg->dir_aor_template, aor, sizeof aor, c->why,
                           sizeof c->why) < 0) {
            config_user_free(&c->u);
            report_add(rep, c, DIR_SKIP_BAD_PHONE);
            return;
        }
        key = xstrdup(aor);
        str_lower(key);
        for (int k = 0; k < c->u.naors; k++)
            dup = dup || strcmp(c->keys[k], key) == 0;
        if (dup) {
            free(key); /* one phone listed twice (telephoneNumber and its URI form) */
            continue;
        }
        c->keys[c->u.naors] = key;
        config_user_add_aor(&c->u, aor);
    }
    c->u.jid = xstrdup(jid);
    c->u.contact = xstrdup(contact);
    c->u.name = e->name ? xstrdup(e->name) : NULL;
    c->u.tel = e->tel ? xstrdup(e->tel) : NULL;
    if (e->ngroups) {
        c->u.groups = xcalloc((size_t)e->ngroups, sizeof *c->u.groups);
        for (int i = 0; i < e->ngroups; i++)
            c->u.groups[c->u.ngroups++] = xstrdup(e->groups[i]);
    }
}

static size_t count_get(const struct strmap *m, const char *k)
{
    return (size_t)(uintptr_t)strmap_get(m, k);
}

static void count_inc(struct strmap *m, const char *k)
{
    strmap_put(m, k, (void *)(uintptr_t)(count_get(m, k) + 1));
}

struct cfg_user *dirbuild_users(const struct offhook_config *cfg,
                                const struct dir_entry *const *entries, size_t n,
                                size_t over_limit, size_t *nusers, struct dir_report *rep)
{
    struct cand *c = xcalloc(n ? n : 1, sizeof *c);
    struct cfg_user *out = xmalloc((n ? n : 1) * sizeof *out);
    struct strmap jids, aors, contacts;
    size_t nout = 0;

    memset(rep, 0, sizeof *rep);
    strmap_init(&jids);
    strmap_init(&aors);
    strmap_init(&contacts);
    for (size_t i = 0; i < n; i++) {
        c[i].e = entries[i];
        c[i].skip = -1;
        check_entry(cfg, &c[i], rep);
        if (c[i].skip >= 0)
            continue;
        count_inc(&jids, c[i].u.jid);
        count_inc(&contacts, c[i].u.contact);
        for (int k = 0; k < c[i].u.naors; k++)
            count_inc(&aors, c[i].keys[k]);
    }
    /* Two entries that claim one JID, phone or contact: offhook cannot tell which is
     * right, so neither is served until the directory says. */
    for (size_t i = 0; i < n; i++) {
        struct cand *x = &c[i];
        int dup_aor = -1;

        if (x->skip >= 0)
            continue;
        for (int k = 0; k < x->u.naors && dup_aor < 0; k++)
            dup_aor = count_get(&aors, x->keys[k]) > 1 ? k : -1;
        if (count_get(&jids, x->u.jid) > 1) {
            snprintf(x->why, sizeof x->why, "%.64s is another entry's JID too", x->u.jid);
            report_add(rep, x, DIR_SKIP_DUP_JID);
        } else if (dup_aor >= 0) {
            snprintf(x->why, sizeof x->why, "%.64s is another user's phone too",
                     x->u.aors[dup_aor]);
            report_add(rep, x, DIR_SKIP_DUP_PHONE);
        } else if (count_get(&contacts, x->u.contact) > 1) {
            snprintf(x->why, sizeof x->why, "phone contact %.64s is another user's too",
                     x->u.contact);
            report_add(rep, x, DIR_SKIP_CONTACT);
        } else {
            out[nout++] = x->u; /* moved: the strings are out's now */
            memset(&x->u, 0, sizeof x->u);
        }
    }
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < CFG_MAX_AORS; k++)
            free(c[i].keys[k]);
        config_user_free(&c[i].u);
    }
    rep->skipped[DIR_SKIP_OVER_LIMIT] += over_limit;
    rep->total += over_limit;
    strmap_free(&jids);
    strmap_free(&aors);
    strmap_free(&contacts);
    free(c);
    *nusers = nout;
    return out;
}

void dir_report_format(const struct dir_report *rep, char *out, size_t len)
{
    struct sbuf b;

    sbuf_init(&b);
    sbuf_printf(&b, "total=%zu", rep->total);
    for (int i = 0; i < DIR_SKIP__N; i++) {
        if (rep->skipped[i])
            sbuf_printf(&b, " %s=%zu", dir_skip_names[i], rep->skipped[i]);
    }
    sbuf_puts(&b, " examples=\"");
    for (int i = 0; i < rep->nexamples; i++) {
        sbuf_puts(&b, i ? "; " : "");
        /* Quotes and backslashes from the directory must not end the value early. */
        for (const char *p = rep->examples[i]; *p; p++) {
            if (*p == '"' || *p == '\\')
                sbuf_puts(&b, "\\");
            sbuf_append(&b, p, 1);
        }
    }
    if (len >= 2) {
        /* Cut to fit, the closing quote kept (never after a lone backslash). */
        size_t n = b.len < len - 2 ? b.len : len - 2;
        while (n > 0 && b.data[n - 1] == '\\')
            n--;
        snprintf(out, len, "%.*s\"", (int)n, b.data);
    }
    sbuf_free(&b);
}

bool dir_report_same(const struct dir_report *a, const struct dir_report *b)
{
    if (a->total != b->total || a->nexamples != b->nexamples ||
        memcmp(a->skipped, b->skipped, sizeof a->skipped) != 0)
        return false;
    for (int i = 0; i < a->nexamples; i++) {
        if (strcmp(a->examples[i], b->examples[i]) != 0)
            return false;
    }
    return true;
}

/* ---- the last-known copy ------------------------------------------------------------ */

#define CODEC_VERSION "v1"

static void put_line(char **buf, size_t *len, size_t *cap, const char *key, const char *v)
{
    size_t need = strlen(key) + 1 + strlen(v) + 1;

    while (*len + need + 1 > *cap) {
        *cap *= 2;
        *buf = xrealloc(*buf, *cap);
    }
    *len += (size_t)sprintf(*buf + *len, "%s %s\n", key, v);
    /* Users passed the checks, so no line break can be inside a value; keep it so. */
    for (char *p = *buf + *len - need; p < *buf + *len - 1; p++) {
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    }
}

char *dirbuild_encode(const struct cfg_user *u)
{
    size_t cap = 256, len = 0;
    char *buf = xmalloc(cap);

    len = (size_t)sprintf(buf, "%s\n", CODEC_VERSION);
    put_line(&buf, &len, &cap, "jid", u->jid);
    for (int i = 0; i < u->naors; i++)
        put_line(&buf, &len, &cap, "aor", u->aors[i]);
    if (u->name)
        put_line(&buf, &len, &cap, "name", u->name);
    if (u->tel)
        put_line(&buf, &len, &cap, "tel", u->tel);
    for (int i = 0; i < u->ngroups; i++)
        put_line(&buf, &len, &cap, "group", u->groups[i]);
    return buf;
}

int dirbuild_decode(const char *s, size_t len, const char *id, struct dir_entry *e)
{
    size_t pos = 0;
    bool first = true;

    e->id = xstrdup(id);
    while (pos < len) {
        const char *nl = memchr(s + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (s + pos)) : len - pos;
        const char *line = s + pos, *sp = memchr(line, ' ', ll);
        size_t kl = sp ? (size_t)(sp - line) : ll, vl = sp ? ll - kl - 1 : 0;
        const char *v = sp ? sp + 1 : "";

        pos += ll + 1;
        if (first) {
            if (ll != strlen(CODEC_VERSION) || memcmp(line, CODEC_VERSION, ll) != 0)
                return -1;
            first = false;
            continue;
        }
        if (kl == 3 && memcmp(line, "jid", 3) == 0)
            dir_entry_set_jid(e, v, vl);
        else if (kl == 3 && memcmp(line, "aor", 3) == 0)
            dir_entry_add_phone(e, v, vl);
        else if (kl == 4 && memcmp(line, "name", 4) == 0)
            dir_entry_set_name(e, v, vl);
        else if (kl == 3 && memcmp(line, "tel", 3) == 0)
            dir_entry_set_tel(e, v, vl);
        else if (kl == 5 && memcmp(line, "group", 5) == 0)
            add_group(e, v, vl, false);
    }
    return first || !e->jid ? -1 : 0;
}
