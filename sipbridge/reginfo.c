/* RFC 3680 reginfo parser, pure. */
#include "reginfo.h"

#include <string.h>

#include "strutil.h"
#include "xmlsafe.h"

#define MAX_CONTACTS 64

static int parse_state(const char *s, enum reg_state *out)
{
    if (!s)
        return -1;
    if (strcmp(s, "init") == 0)
        *out = REG_INIT;
    else if (strcmp(s, "active") == 0)
        *out = REG_ACTIVE;
    else if (strcmp(s, "terminated") == 0)
        *out = REG_TERMINATED;
    else
        return -1;
    return 0;
}

int reginfo_parse(const char *buf, size_t len, size_t max, struct reg_doc *out,
                  const char **reason)
{
    xmlDocPtr doc = xmlsafe_parse(buf, len, max, reason);
    xmlNodePtr root;
    const char *v;
    int rc = -1;

    if (!doc)
        return -1;
    memset(out, 0, sizeof *out);
    root = xmlsafe_root(doc, REGINFO_NS, "reginfo", "not a reginfo document", reason);
    if (!root)
        goto out;
    v = xmlsafe_attr(root, "version");
    if (!v || str_parse_u32(v, &out->version) < 0) {
        *reason = "missing or invalid version";
        goto out;
    }
    v = xmlsafe_attr(root, "state");
    if (v && (strcmp(v, "full") == 0 || strcmp(v, "partial") == 0))
        out->full = strcmp(v, "full") == 0;
    else {
        *reason = "missing or invalid state attribute";
        goto out;
    }
    for (xmlNodePtr r = root->children; r; r = r->next) {
        struct reg_entry *e;
        const char *aor, *id;
        int contacts = 0;

        if (!xmlsafe_is(r, REGINFO_NS, "registration"))
            continue;
        if (out->nregs == REG_MAX_REGS) {
            *reason = "too many registrations";
            goto out;
        }
        e = &out->regs[out->nregs];
        aor = xmlsafe_attr(r, "aor");
        id = xmlsafe_attr(r, "id");
        if (!aor || !*aor || !id || parse_state(xmlsafe_attr(r, "state"), &e->state) < 0) {
            *reason = "registration without aor, id or valid state";
            goto out;
        }
        str_copy_utf8(e->aor, sizeof e->aor, aor);
        str_copy_utf8(e->id, sizeof e->id, id);
        for (xmlNodePtr c = r->children; c; c = c->next) {
            const char *cs;
            if (!xmlsafe_is(c, REGINFO_NS, "contact"))
                continue;
            if (++contacts > MAX_CONTACTS) {
                *reason = "too many contacts";
                goto out;
            }
            cs = xmlsafe_attr(c, "state");
            if (!cs || (strcmp(cs, "active") != 0 && strcmp(cs, "terminated") != 0)) {
                *reason = "contact without valid state";
                goto out;
            }
            e->active_contacts += strcmp(cs, "active") == 0;
        }
        out->nregs++;
    }
    rc = 0;
out:
    xmlFreeDoc(doc);
    return rc;
}

bool reg_entry_online(const struct reg_entry *r)
{
    /* RFC 3680 5.2: "active" means one or more contacts are bound. A partial document
     * lists only the contacts that changed, so the registration state is what counts. */
    return r->state == REG_ACTIVE;
}

enum phone_reach reg_doc_reach(const struct reg_doc *doc, enum phone_reach prev)
{
    bool any_online = false;

    for (int i = 0; i < doc->nregs; i++)
        any_online |= reg_entry_online(&doc->regs[i]);
    if (doc->nregs)
        return any_online ? REACH_ONLINE : REACH_OFFLINE;
    return doc->full ? REACH_OFFLINE : prev;
}
