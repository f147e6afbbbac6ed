/* What a watcher is shown for one user (see view.h). */
#include "view.h"

#include <stdio.h>

#include "card.h"
#include "stanza.h"

const struct user_record *view_record(const struct cuser *u, bool sipbridge_alive,
                                      struct user_record *buf)
{
    if (!u->have_rec || !sipbridge_alive)
        return NULL;
    users_get_record(u, buf);
    return buf;
}

void view_compute(const struct user_record *rec, struct user_view *out)
{
    enum user_state st = rec ? rec->state : US_UNKNOWN;

    if (rec && rec != &out->shown)
        out->shown = *rec;
    out->rec = rec ? &out->shown : NULL;
    presence_for_record(rec, &out->presence);
    /* XEP-0108: talking/on_the_phone during a call; an empty <activity/> otherwise. */
    out->talking = st == US_ON_CALL || st == US_ON_HOLD;
    snprintf(out->activity, sizeof out->activity, "%s",
             st == US_ON_HOLD ? "On hold" : st == US_ON_CALL ? "On the phone" : "");
    /* XEP-0152: the phone's addresses while it can be reached; empty when it cannot. */
    out->reachable = st != US_OFFLINE && st != US_UNKNOWN;
}

void view_nick(const struct cuser *u, char *out, size_t len)
{
    card_nick(u, out, len);
}

xmpp_stanza_t *view_reach(xmpp_ctx_t *ctx, const struct cuser *u, bool addresses)
{
    xmpp_stanza_t *reach = xmpp_stanza_new(ctx);
    const char *uris[CARD_URIS_MAX];
    char tel[64];
    int n;

    xmpp_stanza_set_name(reach, "reach");
    xmpp_stanza_set_ns(reach, NS_REACH);
    if (!addresses)
        return reach;
    /* The AORs, then the tel: URI (digits and a leading +, no visual separators). */
    n = card_phone_uris(u, tel, sizeof tel, uris);
    for (int i = tel[0] ? 1 : 0; i < n; i++)
        xmpp_stanza_set_attribute(stanza_child(ctx, reach, "addr", NULL), "uri", uris[i]);
    if (tel[0])
        xmpp_stanza_set_attribute(stanza_child(ctx, reach, "addr", NULL), "uri", tel);
    return reach;
}
