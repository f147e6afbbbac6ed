/* RFC 4235 dialog-info parser, pure. Accepts what real PBXes send: Asterisk's
 * pvalue= and dialog id = extension with no call-id, prefixed namespaces, identities
 * only while ringing. Rejects anything that is not a dialog-info document of the RFC's
 * namespace, or whose states are not the RFC's. */
#include "dialoginfo.h"

#include <string.h>
#include <strings.h>

#include "strutil.h"
#include "xmlsafe.h"

static const char *const state_names[] = {"trying", "proceeding", "early", "confirmed",
                                          "terminated"};

const char *dlg_state_name(enum dlg_state s)
{
    return (unsigned)s < sizeof state_names / sizeof state_names[0] ? state_names[s] : "?";
}

/* RFC 3261 anonymity (sip:anonymous@anonymous.invalid) and what PBXes write instead. */
static bool is_anonymous(const char *uri, const char *name)
{
    const char *user = strchr(uri, ':');

    if (strcasestr(uri, "anonymous.invalid") || strcasecmp(name, "anonymous") == 0 ||
        strcasecmp(name, "restricted") == 0 || strcasecmp(name, "unavailable") == 0)
        return true;
    return user && strncasecmp(user + 1, "anonymous@", 10) == 0;
}

/* <local><target><param pname="+sip.rendering" pval|pvalue="no"/></target></local> */
static bool local_held(const xmlNode *dialog)
{
    xmlNodePtr local = xmlsafe_child(dialog, DLGINFO_NS, "local");
    xmlNodePtr target = xmlsafe_child(local, DLGINFO_NS, "target");

    for (xmlNodePtr p = target ? target->children : NULL; p; p = p->next) {
        const char *name, *val;
        if (!xmlsafe_is(p, DLGINFO_NS, "param"))
            continue;
        name = xmlsafe_attr(p, "pname");
        val = xmlsafe_attr(p, "pval");
        if (!val)
            val = xmlsafe_attr(p, "pvalue"); /* Asterisk */
        if (name && val && strcasecmp(name, "+sip.rendering") == 0 &&
            strcasecmp(val, "no") == 0)
            return true;
    }
    return false;
}

static int parse_dialog(const xmlNode *n, struct dlg_entry *d, const char **reason)
{
    const char *id = xmlsafe_attr(n, "id"), *dir = xmlsafe_attr(n, "direction");
    xmlNodePtr st = xmlsafe_child(n, DLGINFO_NS, "state");
    xmlNodePtr remote = xmlsafe_child(n, DLGINFO_NS, "remote");
    char text[32];
    size_t i;

    memset(d, 0, sizeof *d);
    if (!id || !*id) {
        *reason = "dialog without id";
        return -1;
    }
    if (str_copy(d->id, sizeof d->id, id) < 0) {
        *reason = "dialog id too long";
        return -1;
    }
    if (!st) {
        *reason = "dialog without state";
        return -1;
    }
    xmlsafe_text(st, text, sizeof text);
    /* RFC 4235 spells states in lower case; Kamailio 5.6 writes "Trying". */
    for (i = 0; i < sizeof state_names / sizeof state_names[0]; i++) {
        if (strcasecmp(text, state_names[i]) == 0)
            break;
    }
    if (i == sizeof state_names / sizeof state_names[0]) {
        *reason = "unknown dialog state";
        return -1;
    }
    d->state = (enum dlg_state)i;
    if (dir && strcasecmp(dir, "initiator") == 0)
        d->dir = DIR_OUTGOING;
    else if (dir && strcasecmp(dir, "recipient") == 0)
        d->dir = DIR_INCOMING;
    else if (dir) {
        *reason = "unknown dialog direction";
        return -1;
    }
    d->held = local_held(n);
    if (remote) {
        xmlNodePtr ident = xmlsafe_child(remote, DLGINFO_NS, "identity");
        const char *disp = ident ? xmlsafe_attr(ident, "display") : NULL;
        if (ident) {
            xmlsafe_text(ident, d->remote_uri, sizeof d->remote_uri);
            /* Cut on a character boundary: these end up in a <status> the XMPP server
             * checks, and libxml2 has already made them UTF-8; the scrub is for a
             * parser that would not. */
            str_copy_utf8(d->remote_name, sizeof d->remote_name, disp ? disp : "");
            str_utf8_scrub(d->remote_uri);
            str_utf8_scrub(d->remote_name);
        }
        if (is_anonymous(d->remote_uri, d->remote_name)) {
            d->anonymous = true;
            d->remote_uri[0] = d->remote_name[0] = '\0';
        }
    }
    return 0;
}

int dlginfo_parse(const char *buf, size_t len, size_t max, struct dlg_doc *out,
                  const char **reason)
{
    xmlDocPtr doc = xmlsafe_parse(buf, len, max, reason);
    xmlNodePtr root;
    const char *v;
    int rc = -1;

    if (!doc)
        return -1;
    memset(out, 0, offsetof(struct dlg_doc, dialogs));
    root = xmlsafe_root(doc, DLGINFO_NS, "dialog-info", "not a dialog-info document", reason);
    if (!root)
        goto out;
    v = xmlsafe_attr(root, "version");
    if (!v || str_parse_u32(v, &out->version) < 0) {
        *reason = "missing or invalid version";
        goto out;
    }
    v = xmlsafe_attr(root, "state");
    if (v && strcmp(v, "full") == 0)
        out->full = true;
    else if (v && strcmp(v, "partial") == 0)
        out->full = false;
    else {
        *reason = "missing or invalid state attribute";
        goto out;
    }
    v = xmlsafe_attr(root, "entity");
    str_copy_utf8(out->entity, sizeof out->entity, v ? v : "");
    str_utf8_scrub(out->entity);
    for (xmlNodePtr n = root->children; n; n = n->next) {
        if (!xmlsafe_is(n, DLGINFO_NS, "dialog"))
            continue; /* unknown elements and extensions are ignored */
        if (out->ndialogs == DLG_MAX_DIALOGS) {
            *reason = "too many dialogs";
            goto out;
        }
        if (parse_dialog(n, &out->dialogs[out->ndialogs], reason) < 0)
            goto out;
        out->ndialogs++;
    }
    rc = 0;
out:
    xmlFreeDoc(doc);
    return rc;
}

enum call_activity dlg_entry_activity(const struct dlg_entry *d)
{
    /* A local target that does not render media is a held call: Asterisk says so on a
     * confirmed dialog, FreeSWITCH (default pres-hold-state) on an early one. */
    if (d->held && (d->state == DLGS_CONFIRMED || d->state == DLGS_EARLY))
        return ACT_ON_HOLD;
    switch (d->state) {
    case DLGS_CONFIRMED:
        return ACT_ON_CALL;
    case DLGS_EARLY:
        /* Asterisk omits direction on its ringing hint: an early dialog with no direction
         * is the phone ringing. */
        return d->dir == DIR_OUTGOING ? ACT_DIALING : ACT_RINGING;
    case DLGS_TRYING:
    case DLGS_PROCEEDING:
        return d->dir == DIR_INCOMING ? ACT_RINGING : ACT_DIALING;
    case DLGS_TERMINATED:
        break;
    }
    return ACT_IDLE;
}
