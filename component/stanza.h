/* The XML the component speaks: every namespace it uses, named once, the helpers that
 * build its stanzas, and the hook they leave through (struct stanza_out). No I/O of its
 * own; used by every module that builds a stanza. */
#ifndef OFFHOOK_STANZA_H
#define OFFHOOK_STANZA_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>

#include <strophe.h>

#define NS_CLIENT "jabber:client"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"       /* RFC 6120 8.3 errors */
#define NS_CAPS "http://jabber.org/protocol/caps"               /* XEP-0115 */
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"   /* XEP-0030 */
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items" /* XEP-0030 */
#define NS_PING "urn:xmpp:ping"                                 /* XEP-0199 */
#define NS_VERSION "jabber:iq:version"                          /* XEP-0092 */
#define NS_VCARD "vcard-temp"                                   /* XEP-0054 */
#define NS_VCARD4 "urn:ietf:params:xml:ns:vcard-4.0"            /* XEP-0292, RFC 6351 */
#define NODE_VCARD4 "urn:xmpp:vcard4"                           /* XEP-0292's PEP node */
#define NS_GATEWAY "jabber:iq:gateway"                          /* XEP-0100 */
#define NS_NICK "http://jabber.org/protocol/nick"               /* XEP-0172 */
#define NS_ACTIVITY "http://jabber.org/protocol/activity"       /* XEP-0108 */
#define NS_REACH "urn:xmpp:reach:0"                             /* XEP-0152 */
#define NS_PUBSUB "http://jabber.org/protocol/pubsub"           /* XEP-0060 */
#define NS_DATA "jabber:x:data"                                 /* XEP-0004 */
#define NS_FORWARD "urn:xmpp:forward:0"                         /* XEP-0297 */
#define NS_PRIV1 "urn:xmpp:privilege:1"                         /* XEP-0356 v1 */
#define NS_PRIV2 "urn:xmpp:privilege:2"                         /* XEP-0356 v2 */
/* offhook's own: the person behind a phone contact (XEP-0100 answers, message pointers). */
#define NS_OFFHOOK_PERSON "https://github.com/offhook/offhook#person"
/* offhook's own: the user's activity kept inside offhook's "on the phone" item (pep.c). */
#define NS_OFFHOOK_PREVIOUS "https://github.com/offhook/offhook#previous-activity"
#define NS_ROSTER "jabber:iq:roster"                            /* RFC 6121 */

/* Adds <name/> (in namespace ns; NULL: the parent's) as parent's last child. The parent
 * owns the element; the pointer returned is borrowed, valid as long as the parent. */
xmpp_stanza_t *stanza_child(xmpp_ctx_t *ctx, xmpp_stanza_t *parent, const char *name,
                            const char *ns);
/* Adds <name>text</name> (text is copied) as parent's last child; owned by the parent. */
xmpp_stanza_t *stanza_text_child(xmpp_ctx_t *ctx, xmpp_stanza_t *parent, const char *name,
                                 const char *text);
/* A new stanza of in's kind (its element name) and id, of the given type, addressed back
 * to in's sender from in's recipient: the skeleton of a result or an error. The caller
 * releases it; in is only read. */
xmpp_stanza_t *stanza_reply(xmpp_ctx_t *ctx, xmpp_stanza_t *in, const char *type);

/* Makes st fit for the wire: every attribute value and text in st's tree must be XML 1.0
 * character data, and an XMPP server closes the stream of a component that sends
 * anything else (Prosody does, at once, and the component would reconnect and send the
 * same again). Replaces, in place, each byte that is not part of well-formed UTF-8 and
 * each character XML forbids (C0 controls other than tab, LF and CR; U+FFFE, U+FFFF)
 * with '?'. Element and attribute names are not looked at: they are the component's
 * own, or were parsed from the server's XML. Returns how many were replaced (0: st is
 * untouched); *where (if not NULL) then names the element of the first, borrowed from
 * st. The link calls it on every stanza it sends. */
size_t stanza_scrub(xmpp_stanza_t *st, const char **where);
/* The test and the repair stanza_scrub applies to each text, for text kept before it
 * goes into a stanza (feed.c: what Redis holds). stanza_text_ok: whether s is XML 1.0
 * character data in well-formed UTF-8. stanza_text_repair: replaces, in place, what is
 * not with '?' (s never gets longer); returns how many were replaced. */
bool stanza_text_ok(const char *s) __attribute__((warn_unused_result));
size_t stanza_text_repair(char *s);

/* Where the component's stanzas go, in the shape of hiredis's adapter hooks: the modules
 * that build stanzas hold a pointer to one and never name the XMPP link. main.c points it
 * at xmpplink.c; the fuzz target at its checker. The owner (main, the fuzz target) keeps
 * it alive as long as every module given it. */
struct stanza_out {
    xmpp_ctx_t *ctx; /* the libstrophe context stanzas are built in */
    /* Whether the stream is up (what is sent while it is down is refused and lost). */
    bool (*up)(void *arg);
    /* Sends st, not taking ownership (the caller releases it). kind names it in
     * offhook_stanzas_sent_total. Returns 0, or -1 when the stream is down or st's from
     * is not on the component's domain. */
    int (*send)(void *arg, xmpp_stanza_t *st, const char *kind);
    void *arg;
};

static inline bool stanza_out_up(const struct stanza_out *o)
{
    return o->up(o->arg);
}

/* Sends st through o; the caller still releases st. Returns as stanza_out.send. */
static inline int stanza_send(const struct stanza_out *o, xmpp_stanza_t *st, const char *kind)
{
    return o->send(o->arg, st, kind);
}

#endif
