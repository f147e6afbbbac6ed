/* PIDF + RPID parser, pure. Notes and activities may sit under <presence>, under a
 * <tuple>'s <status> or under <dm:person>; all are read. */
#include "pidf.h"

#include <string.h>
#include <strings.h>

#include "strutil.h"
#include "xmlsafe.h"

#define MAX_TUPLES 64

static bool note_means_dnd(const char *note)
{
    return strcasestr(note, "dnd") || strcasestr(note, "do not disturb") ||
           strcasestr(note, "do-not-disturb");
}

static void read_note(const xmlNode *n, struct pidf_doc *out)
{
    char text[128];

    xmlsafe_text(n, text, sizeof text);
    if (!out->note[0])
        str_copy_utf8(out->note, sizeof out->note, text);
    if (note_means_dnd(text))
        out->dnd = true;
}

/* <rpid:activities> holds one element per activity. */
static void read_activities(const xmlNode *acts, struct pidf_doc *out)
{
    for (xmlNodePtr a = acts->children; a; a = a->next) {
        if (xmlsafe_is(a, PIDF_RPID_NS, "on-the-phone"))
            out->on_the_phone = true;
        else if (xmlsafe_is(a, PIDF_RPID_NS, "busy"))
            out->dnd = true;
    }
}

/* Notes and activities anywhere in a person, tuple or status element. */
static void scan(const xmlNode *n, struct pidf_doc *out, int depth)
{
    if (depth > 4)
        return;
    for (xmlNodePtr c = n->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        if (xmlsafe_is(c, PIDF_NS, "note") || xmlsafe_is(c, PIDF_DM_NS, "note"))
            read_note(c, out);
        else if (xmlsafe_is(c, PIDF_RPID_NS, "activities"))
            read_activities(c, out);
        else if (xmlsafe_is(c, PIDF_DM_NS, "person") || xmlsafe_is(c, PIDF_NS, "status") ||
                 xmlsafe_is(c, PIDF_NS, "tuple"))
            scan(c, out, depth + 1);
    }
}

int pidf_parse(const char *buf, size_t len, size_t max, struct pidf_doc *out,
               const char **reason)
{
    xmlDocPtr doc = xmlsafe_parse(buf, len, max, reason);
    xmlNodePtr root;
    const char *entity;
    int tuples = 0, open = 0, rc = -1;

    if (!doc)
        return -1;
    memset(out, 0, sizeof *out);
    root = xmlsafe_root(doc, PIDF_NS, "presence", "not a presence document", reason);
    if (!root)
        goto out;
    entity = xmlsafe_attr(root, "entity");
    if (!entity || !*entity) {
        *reason = "presence without entity";
        goto out;
    }
    str_copy_utf8(out->entity, sizeof out->entity, entity);
    for (xmlNodePtr t = root->children; t; t = t->next) {
        xmlNodePtr status, basic;
        char text[16];

        if (!xmlsafe_is(t, PIDF_NS, "tuple"))
            continue;
        if (++tuples > MAX_TUPLES) {
            *reason = "too many tuples";
            goto out;
        }
        if (!xmlsafe_attr(t, "id")) {
            *reason = "tuple without id";
            goto out;
        }
        status = xmlsafe_child(t, PIDF_NS, "status");
        basic = xmlsafe_child(status, PIDF_NS, "basic");
        if (!basic)
            continue; /* a status may carry only extensions */
        xmlsafe_text(basic, text, sizeof text);
        if (strcmp(text, "open") == 0) {
            /* RFC 5196: what the device of this tuple can do. Only audio is assumed. */
            xmlNodePtr caps = xmlsafe_child(t, PIDF_CAPS_NS, "servcaps");
            xmlNodePtr video = xmlsafe_child(caps, PIDF_CAPS_NS, "video");
            if (video) {
                char v[8];
                xmlsafe_text(video, v, sizeof v);
                out->video |= strcmp(v, "true") == 0 || strcmp(v, "1") == 0;
            }
            open++;
        }
        else if (strcmp(text, "closed") != 0) {
            *reason = "basic status neither open nor closed";
            goto out;
        }
    }
    out->reach = open ? REACH_ONLINE : tuples ? REACH_OFFLINE : REACH_UNKNOWN;
    scan(root, out, 0);
    rc = 0;
out:
    xmlFreeDoc(doc);
    return rc;
}
