/* The desk phone in vCards (see card.h). */
#include "card.h"

#include <stdio.h>
#include <string.h>

#include "jid.h"
#include "sipaddr.h"
#include "stanza.h"

int card_phone_uris(const struct cuser *u, char *tel, size_t tel_len,
                    const char *uris[CARD_URIS_MAX])
{
    int n = 0;
    char num[SIPADDR_NUMBER_MAX];

    tel[0] = '\0';
    if (u->cfg->tel && sipaddr_number(u->cfg->tel, num, sizeof num) == 0 &&
        (size_t)snprintf(tel, tel_len, "tel:%s", num) < tel_len)
        uris[n++] = tel;
    for (int i = 0; i < u->cfg->naors && n < CARD_URIS_MAX; i++)
        uris[n++] = u->cfg->aors[i];
    return n;
}

/* Whether two addresses name the same phone: numbers as numbers (a vcard-temp NUMBER is
 * free text: "+1 (555) 0100" is tel:+15550100), anything else as written. */
static bool same_address(const char *have, const char *uri)
{
    char a[SIPADDR_NUMBER_MAX], b[SIPADDR_NUMBER_MAX];

    if (strncmp(uri, "tel:", 4) == 0)
        return sipaddr_number(have, a, sizeof a) == 0 && sipaddr_number(uri, b, sizeof b) == 0 &&
               strcmp(a, b) == 0;
    return strcmp(have, uri) == 0;
}

/* The text of parent's child name, or NULL; the caller frees it with xmpp_free. */
static char *child_text(xmpp_stanza_t *parent, const char *name)
{
    xmpp_stanza_t *c = xmpp_stanza_get_child_by_name(parent, name);

    return c ? xmpp_stanza_get_text(c) : NULL;
}

/* What a vcard-temp TEL shows: its NUMBER; a vCard4 tel: its uri (or text). */
static bool holds(xmpp_ctx_t *ctx, xmpp_stanza_t *vcard, const char *prop, const char *value,
                  const char *uri)
{
    for (xmpp_stanza_t *c = xmpp_stanza_get_children(vcard); c; c = xmpp_stanza_get_next(c)) {
        char *have;
        bool same;
        if (!xmpp_stanza_is_tag(c) || strcmp(xmpp_stanza_get_name(c), prop) != 0)
            continue;
        have = child_text(c, value);
        if (!have && strcmp(value, "uri") == 0)
            have = child_text(c, "text");
        same = have && same_address(have, uri);
        if (have)
            xmpp_free(ctx, have);
        if (same)
            return true;
    }
    return false;
}

/* <TEL><VOICE/><WORK/><NUMBER>number</NUMBER></TEL> */
static void temp_tel(xmpp_ctx_t *ctx, xmpp_stanza_t *vcard, const char *number)
{
    xmpp_stanza_t *tel = stanza_child(ctx, vcard, "TEL", NULL);

    stanza_child(ctx, tel, "VOICE", NULL);
    stanza_child(ctx, tel, "WORK", NULL);
    stanza_text_child(ctx, tel, "NUMBER", number);
}

/* <tel><parameters><type><text>work</text><text>voice</text></type></parameters>
 * <uri>uri</uri></tel> (RFC 6351) */
static void v4_tel(xmpp_ctx_t *ctx, xmpp_stanza_t *vcard, const char *uri)
{
    xmpp_stanza_t *tel = stanza_child(ctx, vcard, "tel", NULL);
    xmpp_stanza_t *type = stanza_child(ctx, stanza_child(ctx, tel, "parameters", NULL), "type",
                                       NULL);

    stanza_text_child(ctx, type, "text", "work");
    stanza_text_child(ctx, type, "text", "voice");
    stanza_text_child(ctx, tel, "uri", uri);
}

static void v4_text(xmpp_ctx_t *ctx, xmpp_stanza_t *vcard, const char *prop, const char *text)
{
    stanza_text_child(ctx, stanza_child(ctx, vcard, prop, NULL), "text", text);
}

void card_nick(const struct cuser *u, char *out, size_t len)
{
    snprintf(out, len, "%s (phone)", u->cfg->name ? u->cfg->name : u->jid);
}

xmpp_stanza_t *card_contact_temp(xmpp_ctx_t *ctx, const struct cuser *u)
{
    xmpp_stanza_t *v = xmpp_stanza_new(ctx);
    const char *uris[CARD_URIS_MAX];
    char tel[SIPADDR_NUMBER_MAX + 8], nk[JID_MAX + 16];
    int n = card_phone_uris(u, tel, sizeof tel, uris);

    xmpp_stanza_set_name(v, "vCard");
    xmpp_stanza_set_ns(v, NS_VCARD);
    stanza_text_child(ctx, v, "FN", u->cfg->name ? u->cfg->name : u->jid);
    card_nick(u, nk, sizeof nk);
    stanza_text_child(ctx, v, "NICKNAME", nk);
    /* Who the phone belongs to: where a message to this contact should go. */
    stanza_text_child(ctx, v, "JABBERID", u->jid);
    for (int i = 0; i < n; i++)
        temp_tel(ctx, v, i == 0 && tel[0] ? u->cfg->tel : uris[i]);
    return v;
}

xmpp_stanza_t *card_contact_v4(xmpp_ctx_t *ctx, const struct cuser *u)
{
    xmpp_stanza_t *v = xmpp_stanza_new(ctx);
    const char *uris[CARD_URIS_MAX];
    char tel[SIPADDR_NUMBER_MAX + 8], nk[JID_MAX + 16], xmpp[JID_MAX + 8];
    int n = card_phone_uris(u, tel, sizeof tel, uris);

    xmpp_stanza_set_name(v, "vcard");
    xmpp_stanza_set_ns(v, NS_VCARD4);
    v4_text(ctx, v, "fn", u->cfg->name ? u->cfg->name : u->jid);
    card_nick(u, nk, sizeof nk);
    v4_text(ctx, v, "nickname", nk);
    snprintf(xmpp, sizeof xmpp, "xmpp:%s", u->jid);
    stanza_text_child(ctx, stanza_child(ctx, v, "impp", NULL), "uri", xmpp);
    for (int i = 0; i < n; i++)
        v4_tel(ctx, v, uris[i]);
    return v;
}

int card_add_phone_temp(xmpp_ctx_t *ctx, xmpp_stanza_t *vcard, const struct cuser *u)
{
    const char *uris[CARD_URIS_MAX];
    char tel[SIPADDR_NUMBER_MAX + 8];
    int n = card_phone_uris(u, tel, sizeof tel, uris), added = 0;

    for (int i = 0; i < n; i++) {
        if (holds(ctx, vcard, "TEL", "NUMBER", uris[i]))
            continue;
        temp_tel(ctx, vcard, i == 0 && tel[0] ? u->cfg->tel : uris[i]);
        added++;
    }
    return added;
}

int card_add_phone_v4(xmpp_ctx_t *ctx, xmpp_stanza_t *vcard, const struct cuser *u,
                      const char *fn_if_new)
{
    const char *uris[CARD_URIS_MAX];
    char tel[SIPADDR_NUMBER_MAX + 8];
    int n = card_phone_uris(u, tel, sizeof tel, uris), added = 0;

    if (fn_if_new && !xmpp_stanza_get_child_by_name(vcard, "fn"))
        v4_text(ctx, vcard, "fn", fn_if_new);
    for (int i = 0; i < n; i++) {
        if (holds(ctx, vcard, "tel", "uri", uris[i]))
            continue;
        v4_tel(ctx, vcard, uris[i]);
        added++;
    }
    return added;
}
