/* The one set of stanza-building helpers (see stanza.h). */
#include "stanza.h"

#include <stdlib.h>
#include <string.h>

#include "strutil.h"

xmpp_stanza_t *stanza_child(xmpp_ctx_t *ctx, xmpp_stanza_t *parent, const char *name,
                            const char *ns)
{
    xmpp_stanza_t *c = xmpp_stanza_new(ctx);

    xmpp_stanza_set_name(c, name);
    if (ns)
        xmpp_stanza_set_ns(c, ns);
    xmpp_stanza_add_child_ex(parent, c, 0);
    return c;
}

xmpp_stanza_t *stanza_text_child(xmpp_ctx_t *ctx, xmpp_stanza_t *parent, const char *name,
                                 const char *text)
{
    xmpp_stanza_t *c = stanza_child(ctx, parent, name, NULL);
    xmpp_stanza_t *t = xmpp_stanza_new(ctx);

    xmpp_stanza_set_text(t, text);
    xmpp_stanza_add_child_ex(c, t, 0);
    return c;
}

xmpp_stanza_t *stanza_reply(xmpp_ctx_t *ctx, xmpp_stanza_t *in, const char *type)
{
    xmpp_stanza_t *r = xmpp_stanza_new(ctx);

    xmpp_stanza_set_name(r, xmpp_stanza_get_name(in));
    xmpp_stanza_set_type(r, type);
    if (xmpp_stanza_get_id(in))
        xmpp_stanza_set_id(r, xmpp_stanza_get_id(in));
    xmpp_stanza_set_from(r, xmpp_stanza_get_to(in));
    xmpp_stanza_set_to(r, xmpp_stanza_get_from(in));
    return r;
}

bool stanza_text_ok(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    bool ascii = true;
    size_t i;

    /* One pass: control characters, and whether anything is not ASCII (most text is). */
    for (i = 0; p[i]; i++) {
        if (p[i] < 0x20 && p[i] != '\t' && p[i] != '\n' && p[i] != '\r')
            return false;
        if (p[i] >= 0x80) {
            ascii = false;
            /* U+FFFE and U+FFFF: EF BF BE / EF BF BF (0xEF never continues a character). */
            if (p[i] == 0xef && p[i + 1] == 0xbf && p[i + 2] >= 0xbe)
                return false;
        }
    }
    return ascii || str_utf8_valid(s, i);
}

size_t stanza_text_repair(char *s)
{
    size_t n = str_utf8_scrub(s); /* now well-formed: what follows reads whole characters */
    unsigned char *p = (unsigned char *)s, *o = p;

    while (*p) {
        if (*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') {
            *o++ = '?';
            p++;
            n++;
        } else if (p[0] == 0xef && p[1] == 0xbf && p[2] >= 0xbe) {
            *o++ = '?';
            p += 3;
            n++;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return n;
}

static size_t scrub_node(xmpp_stanza_t *st, xmpp_stanza_t *element, const char **where)
{
    size_t fixed = 0;

    if (xmpp_stanza_is_text(st)) {
        const char *t = xmpp_stanza_get_text_ptr(st);
        char *copy;

        if (!t || stanza_text_ok(t))
            return 0;
        copy = xstrdup(t);
        fixed = stanza_text_repair(copy);
        xmpp_stanza_set_text(st, copy);
        free(copy);
        if (where && !*where)
            *where = element ? xmpp_stanza_get_name(element) : "";
        return fixed;
    }
    {
        int n = xmpp_stanza_get_attribute_count(st);
        const char *few[32], **attrs = few;

        /* Every stanza sent passes here: the heap only for an element with over 16. */
        if (n > 16)
            attrs = xcalloc((size_t)n * 2, sizeof *attrs);
        n = n > 0 ? xmpp_stanza_get_attributes(st, attrs, n * 2) : 0;
        for (int i = 0; i + 1 < n; i += 2) {
            char *copy;
            if (!attrs[i + 1] || stanza_text_ok(attrs[i + 1]))
                continue;
            copy = xstrdup(attrs[i + 1]);
            fixed += stanza_text_repair(copy);
            /* Replaces the value only; the name (attrs[i]) stays where it is. */
            xmpp_stanza_set_attribute(st, attrs[i], copy);
            free(copy);
            if (where && !*where)
                *where = xmpp_stanza_get_name(st);
        }
        if (attrs != few)
            free(attrs);
    }
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(st); c; c = xmpp_stanza_get_next(c))
        fixed += scrub_node(c, st, where);
    return fixed;
}

size_t stanza_scrub(xmpp_stanza_t *st, const char **where)
{
    if (where)
        *where = NULL;
    return scrub_node(st, NULL, where);
}
