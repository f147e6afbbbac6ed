/* What a watcher is shown for one user (see view.h). */
#include "view.h"

#include <stdio.h>

#include "stanza.h"

const struct user_record *view_record(const struct cuser *u, bool sipbridge_alive)
{
    return u->have_rec && sipbridge_alive ? &u->rec : NULL;
}

void view_compute(const struct user_record *rec, struct user_view *out)
{
    enum user_state st = rec ? rec->state : US_UNKNOWN;

    out->rec = rec;
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
    snprintf(out, len, "%s (phone)", u->cfg->name ? u->cfg->name : u->jid);
}

xmpp_stanza_t *view_reach(xmpp_ctx_t *ctx, const struct cuser *u, bool addresses)
{
    xmpp_stanza_t *reach = xmpp_stanza_new(ctx);

    xmpp_stanza_set_name(reach, "reach");
    xmpp_stanza_set_ns(reach, NS_REACH);
    if (!addresses)
        return reach;
    for (int i = 0; i < u->cfg->naors; i++) {
        xmpp_stanza_t *addr = stanza_child(ctx, reach, "addr", NULL);
        xmpp_stanza_set_attribute(addr, "uri", u->cfg->aors[i]);
    }
    if (u->cfg->tel) {
        char uri[128];
        xmpp_stanza_t *addr = stanza_child(ctx, reach, "addr", NULL);
        size_t n = 0;
        /* tel: URIs carry digits and a leading +, no visual separators. */
        n = (size_t)snprintf(uri, sizeof uri, "tel:");
        for (const char *p = u->cfg->tel; *p && n < sizeof uri - 1; p++) {
            if ((*p >= '0' && *p <= '9') || (*p == '+' && n == 4))
                uri[n++] = *p;
        }
        uri[n] = '\0';
        xmpp_stanza_set_attribute(addr, "uri", uri);
    }
    return reach;
}
