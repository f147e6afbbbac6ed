/* RFC 4235 dialog-info parser, pure. Accepts what real PBXes send: Asterisk's
 * pvalue= and dialog id = extension with no call-id, prefixed namespaces, identities
 * only while ringing. Rejects anything that is not a dialog-info document of the RFC's
 * namespace, or whose states are not the RFC's. */
#include "dialoginfo.h"

#include <stdlib.h>
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

int dlginfo_parse_dom(const char *buf, size_t len, size_t max, struct dlg_doc *out,
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

/* The streaming parser: what dlginfo_parse_dom concludes, read off SAX2 events with no
 * tree. The DOM version looks at the first <state>, <remote>, <local> of a dialog, the
 * first <identity> of that remote and the first <target> of that local; so does this
 * one, element by element as they open. It decides a dialog when it closes, in the DOM
 * version's order of checks, keeps the first error and reports it only once the whole
 * document proved well-formed (a later syntax error wins, as it does there). */

/* xmlsafe_text's result, built from pieces: each DOM text node is cut on its own. */
struct text_acc {
    char *buf;
    size_t len;  /* buf's size, NUL included */
    size_t used;
    bool cut;    /* the current text node was cut: nothing more of it fits */
};

static void acc_init(struct text_acc *a, char *buf, size_t len)
{
    a->buf = buf;
    a->len = len;
    a->used = 0;
    a->cut = false;
    buf[0] = '\0';
}

static void acc_add(struct text_acc *a, const char *s, size_t n, bool new_node)
{
    if (new_node)
        a->cut = false;
    if (a->cut)
        return;
    if (a->used + n >= a->len) {
        n = str_utf8_cut(s, n, a->len - 1 - a->used);
        a->cut = true;
    }
    memcpy(a->buf + a->used, s, n);
    a->used += n;
    a->buf[a->used] = '\0';
}

static void acc_trim(struct text_acc *a)
{
    char *t = str_trim(a->buf);

    if (t != a->buf)
        memmove(a->buf, t, strlen(t) + 1);
}

enum dlg_level { LV_NONE, LV_STATE, LV_REMOTE, LV_IDENTITY, LV_LOCAL, LV_TARGET };

struct dlg_stream {
    struct dlg_doc *out;
    const char *reason;     /* the first error found; NULL while none */
    bool in_dialog;         /* inside a <dialog> child of the root (depth 2) */
    struct dlg_entry *d;    /* that dialog's entry */
    const char *dialog_err; /* its id's fault, found at its start, reported at its end */
    int dir;                /* its direction: an enum call_dir, -1 for another value */
    bool seen_state, seen_remote, seen_local, seen_identity, seen_target;
    enum dlg_level at[6];   /* what the element open at depth 3..5 is to us (index = depth) */
    char state[32];
    struct text_acc state_text, uri_text;
    char display[DLG_PARTY_MAX * 4]; /* identity's display; cut to remote_name later */
    char *display_big;      /* ... when longer (allocated) */
    bool has_display;
};

static void fail(struct dlg_stream *s, const char *reason)
{
    if (!s->reason)
        s->reason = reason;
}

static const char *attr(struct dlg_stream *s, const struct xmlsafe_elem *e, const char *name,
                        char *buf, size_t size, char **big)
{
    char *v;
    int rc = xmlsafe_elem_attr(e, name, buf, size, &v);

    *big = NULL;
    if (rc < 0) {
        fail(s, "out of memory");
        return NULL;
    }
    if (rc > 0 && v != buf)
        *big = v;
    return v;
}

static void root_start(struct dlg_stream *s, const struct xmlsafe_elem *e)
{
    struct dlg_doc *out = s->out;
    char buf[256], *big;
    const char *v;

    if (!xmlsafe_elem_named(e, "dialog-info")) {
        fail(s, "not a dialog-info document");
        return;
    }
    if (!xmlsafe_elem_is(e, DLGINFO_NS, "dialog-info")) {
        fail(s, "wrong namespace");
        return;
    }
    v = attr(s, e, "version", buf, sizeof buf, &big);
    if (!v || str_parse_u32(v, &out->version) < 0)
        fail(s, "missing or invalid version");
    free(big);
    if (s->reason)
        return;
    v = attr(s, e, "state", buf, sizeof buf, &big);
    if (v && strcmp(v, "full") == 0)
        out->full = true;
    else if (v && strcmp(v, "partial") == 0)
        out->full = false;
    else
        fail(s, "missing or invalid state attribute");
    free(big);
    if (s->reason)
        return;
    v = attr(s, e, "entity", buf, sizeof buf, &big);
    str_copy_utf8(out->entity, sizeof out->entity, v ? v : "");
    str_utf8_scrub(out->entity);
    free(big);
}

static void dialog_start(struct dlg_stream *s, const struct xmlsafe_elem *e)
{
    char buf[DLG_ID_MAX], *big;
    const char *id, *dir;

    if (s->out->ndialogs == DLG_MAX_DIALOGS) {
        fail(s, "too many dialogs");
        return;
    }
    s->in_dialog = true;
    s->d = &s->out->dialogs[s->out->ndialogs];
    memset(s->d, 0, sizeof *s->d);
    s->dialog_err = NULL;
    s->seen_state = s->seen_remote = s->seen_local = false;
    s->seen_identity = s->seen_target = false;
    s->has_display = false;
    s->state[0] = '\0';
    acc_init(&s->state_text, s->state, sizeof s->state);
    acc_init(&s->uri_text, s->d->remote_uri, sizeof s->d->remote_uri);
    id = attr(s, e, "id", buf, sizeof buf, &big);
    if (!id || !*id)
        s->dialog_err = "dialog without id";
    else if (str_copy(s->d->id, sizeof s->d->id, id) < 0)
        s->dialog_err = "dialog id too long";
    free(big);
    dir = attr(s, e, "direction", buf, sizeof buf, &big);
    if (!dir)
        s->dir = DIR_NONE;
    else if (strcasecmp(dir, "initiator") == 0)
        s->dir = DIR_OUTGOING;
    else if (strcasecmp(dir, "recipient") == 0)
        s->dir = DIR_INCOMING;
    else
        s->dir = -1;
    free(big);
}

/* The <dialog> closes: parse_dialog's checks, in its order. */
static void dialog_end(struct dlg_stream *s)
{
    struct dlg_entry *d = s->d;
    size_t i;

    s->in_dialog = false;
    if (s->reason)
        return;
    if (s->dialog_err) {
        fail(s, s->dialog_err);
        return;
    }
    if (!s->seen_state) {
        fail(s, "dialog without state");
        return;
    }
    acc_trim(&s->state_text);
    for (i = 0; i < sizeof state_names / sizeof state_names[0]; i++) {
        if (strcasecmp(s->state, state_names[i]) == 0)
            break;
    }
    if (i == sizeof state_names / sizeof state_names[0]) {
        fail(s, "unknown dialog state");
        return;
    }
    d->state = (enum dlg_state)i;
    if (s->dir < 0) {
        fail(s, "unknown dialog direction");
        return;
    }
    d->dir = (enum call_dir)s->dir;
    if (s->seen_remote) {
        if (s->seen_identity) {
            const char *disp = s->display_big ? s->display_big : s->display;
            acc_trim(&s->uri_text);
            str_copy_utf8(d->remote_name, sizeof d->remote_name, s->has_display ? disp : "");
            str_utf8_scrub(d->remote_uri);
            str_utf8_scrub(d->remote_name);
        }
        if (is_anonymous(d->remote_uri, d->remote_name)) {
            d->anonymous = true;
            d->remote_uri[0] = d->remote_name[0] = '\0';
        }
    }
    s->out->ndialogs++;
}

static void param_start(struct dlg_stream *s, const struct xmlsafe_elem *e)
{
    char nbuf[32], vbuf[8], *nbig, *vbig;
    const char *name = attr(s, e, "pname", nbuf, sizeof nbuf, &nbig);
    const char *val = attr(s, e, "pval", vbuf, sizeof vbuf, &vbig);

    if (!val) {
        free(vbig);
        val = attr(s, e, "pvalue", vbuf, sizeof vbuf, &vbig); /* Asterisk */
    }
    if (name && val && strcasecmp(name, "+sip.rendering") == 0 && strcasecmp(val, "no") == 0)
        s->d->held = true;
    free(nbig);
    free(vbig);
}

static void on_start(void *ud, const struct xmlsafe_elem *e)
{
    struct dlg_stream *s = ud;
    enum dlg_level parent, lv = LV_NONE;

    if (e->depth == 1) {
        root_start(s, e);
        return;
    }
    if (s->reason)
        return; /* decided: only well-formedness is left to check */
    if (e->depth == 2) {
        if (xmlsafe_elem_is(e, DLGINFO_NS, "dialog"))
            dialog_start(s, e);
        return;
    }
    if (!s->in_dialog || e->depth > 5)
        return;
    parent = e->depth == 3 ? LV_NONE : s->at[e->depth - 1];
    if (e->depth == 3) {
        if (!s->seen_state && xmlsafe_elem_is(e, DLGINFO_NS, "state"))
            lv = LV_STATE, s->seen_state = true;
        else if (!s->seen_remote && xmlsafe_elem_is(e, DLGINFO_NS, "remote"))
            lv = LV_REMOTE, s->seen_remote = true;
        else if (!s->seen_local && xmlsafe_elem_is(e, DLGINFO_NS, "local"))
            lv = LV_LOCAL, s->seen_local = true;
    } else if (e->depth == 4 && parent == LV_REMOTE) {
        if (!s->seen_identity && xmlsafe_elem_is(e, DLGINFO_NS, "identity")) {
            char *big;
            const char *disp;
            lv = LV_IDENTITY;
            s->seen_identity = true;
            disp = attr(s, e, "display", s->display, sizeof s->display, &big);
            s->has_display = disp != NULL;
            s->display_big = big;
        }
    } else if (e->depth == 4 && parent == LV_LOCAL) {
        if (!s->seen_target && xmlsafe_elem_is(e, DLGINFO_NS, "target"))
            lv = LV_TARGET, s->seen_target = true;
    } else if (e->depth == 5 && parent == LV_TARGET) {
        if (xmlsafe_elem_is(e, DLGINFO_NS, "param"))
            param_start(s, e);
    }
    s->at[e->depth] = lv;
}

static void on_end(void *ud, int depth)
{
    struct dlg_stream *s = ud;

    if (depth == 2 && s->in_dialog) {
        dialog_end(s);
        free(s->display_big);
        s->display_big = NULL;
    } else if (depth >= 3 && depth <= 5) {
        s->at[depth] = LV_NONE;
    }
}

static void on_text(void *ud, int depth, const char *t, size_t len, bool new_node)
{
    struct dlg_stream *s = ud;

    if (!s->in_dialog || s->reason || depth < 3 || depth > 4)
        return;
    if (s->at[depth] == LV_STATE)
        acc_add(&s->state_text, t, len, new_node);
    else if (s->at[depth] == LV_IDENTITY)
        acc_add(&s->uri_text, t, len, new_node);
}

int dlginfo_parse(const char *buf, size_t len, size_t max, struct dlg_doc *out,
                  const char **reason)
{
    static const struct xmlsafe_handler h = {on_start, on_end, on_text};
    struct dlg_stream s = {.out = out};

    memset(out, 0, offsetof(struct dlg_doc, dialogs));
    if (xmlsafe_stream(buf, len, max, &h, &s, reason) < 0) {
        free(s.display_big);
        return -1;
    }
    free(s.display_big);
    if (s.reason) {
        *reason = s.reason;
        return -1;
    }
    return 0;
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
