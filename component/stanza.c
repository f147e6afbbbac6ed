/* The one set of stanza-building helpers (see stanza.h). */
#include "stanza.h"

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
