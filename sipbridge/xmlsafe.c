/* Safe XML parsing for SIP event bodies. A SIP body never needs a DTD, so any document
 * type declaration stops the parser at once: no entity is ever defined, let alone
 * expanded, and nothing is fetched. */
#include "xmlsafe.h"

#include <ctype.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xmlerror.h>

#include "strutil.h"

struct guard {
    bool saw_dtd;
};

/* One parser context serves every parse (a new one per NOTIFY was a third of the
 * parsing cost: context, SAX table and dictionary). It is replaced after RENEW_AFTER
 * parses or once its dictionary of names holds DICT_MAX entries, so hostile bodies
 * full of unique element names cannot grow it without bound. sipbridge is
 * single-threaded. */
#define RENEW_AFTER 100000
#define DICT_MAX 20000

static xmlParserCtxtPtr shared;
static unsigned long shared_uses;

static void reject_dtd(void *ctx, const xmlChar *name, const xmlChar *ext, const xmlChar *sys)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct guard *g = ctxt->_private;

    g->saw_dtd = true;
    xmlStopParser(ctxt);
}

static void silent(void *ctx, const char *msg, ...)
{
}

static void silent_structured(void *ctx, xmlErrorPtr err)
{
}

void xmlsafe_init(void)
{
    xmlInitParser();
    xmlSetGenericErrorFunc(NULL, silent);
    xmlSetStructuredErrorFunc(NULL, silent_structured);
}

static xmlParserCtxtPtr context(void)
{
    if (shared && (shared_uses >= RENEW_AFTER || xmlDictSize(shared->dict) >= DICT_MAX)) {
        xmlFreeParserCtxt(shared);
        shared = NULL;
    }
    if (!shared) {
        shared = xmlNewParserCtxt();
        if (!shared)
            return NULL;
        shared_uses = 0;
        shared->sax->internalSubset = reject_dtd;
        shared->sax->externalSubset = NULL;
        shared->sax->resolveEntity = NULL;
        shared->sax->warning = NULL;
        shared->sax->error = NULL;
        shared->sax->serror = silent_structured;
        shared->vctxt.error = NULL;
        shared->vctxt.warning = NULL;
    }
    shared_uses++;
    return shared;
}

void xmlsafe_cleanup(void)
{
    if (shared)
        xmlFreeParserCtxt(shared);
    shared = NULL;
}

xmlDocPtr xmlsafe_parse(const char *buf, size_t len, size_t max, const char **reason)
{
    /* No NOENT (entities stay unexpanded), no DTDLOAD/DTDATTR/XINCLUDE, no network,
     * no HUGE (keeps libxml2's own depth and length limits). */
    const int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                        XML_PARSE_NOBLANKS | XML_PARSE_NOCDATA;
    struct guard g = {false};
    xmlParserCtxtPtr ctxt;
    xmlDocPtr doc;

    if (!buf || len == 0) {
        *reason = "empty";
        return NULL;
    }
    if (len > max || len > (size_t)INT32_MAX) {
        *reason = "too large";
        return NULL;
    }
    ctxt = context();
    if (!ctxt) {
        *reason = "out of memory";
        return NULL;
    }
    ctxt->_private = &g;
    /* xmlCtxtReadMemory resets the context (state, errors, a stopped parser) first. */
    doc = xmlCtxtReadMemory(ctxt, buf, (int)len, NULL, NULL, options);
    ctxt->_private = NULL;
    if (g.saw_dtd || (doc && (doc->intSubset || doc->extSubset))) {
        if (doc)
            xmlFreeDoc(doc);
        *reason = "DTD not allowed";
        return NULL;
    }
    if (!doc || !ctxt->wellFormed) {
        if (doc)
            xmlFreeDoc(doc);
        *reason = "not well-formed";
        return NULL;
    }
    return doc;
}

xmlNodePtr xmlsafe_root(xmlDocPtr doc, const char *ns, const char *name, const char *not_it,
                        const char **reason)
{
    xmlNodePtr root = xmlDocGetRootElement(doc);

    if (!root || strcmp((const char *)root->name, name) != 0) {
        *reason = not_it;
        return NULL;
    }
    if (!xmlsafe_is(root, ns, name)) {
        *reason = "wrong namespace";
        return NULL;
    }
    return root;
}

bool xmlsafe_is(const xmlNode *n, const char *ns, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0 &&
           n->ns && n->ns->href && strcmp((const char *)n->ns->href, ns) == 0;
}

xmlNodePtr xmlsafe_child(const xmlNode *n, const char *ns, const char *name)
{
    for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next) {
        if (xmlsafe_is(c, ns, name))
            return c;
    }
    return NULL;
}

const char *xmlsafe_attr(const xmlNode *n, const char *name)
{
    for (xmlAttrPtr a = n->properties; a; a = a->next) {
        if (a->ns || strcmp((const char *)a->name, name) != 0)
            continue;
        /* Only plain text counts: with no DTD an entity reference cannot resolve. */
        if (a->children && a->children->type == XML_TEXT_NODE && !a->children->next)
            return (const char *)a->children->content;
        return a->children ? NULL : "";
    }
    return NULL;
}

void xmlsafe_text(const xmlNode *n, char *buf, size_t len)
{
    size_t used = 0;
    char *t;

    if (len == 0)
        return;
    buf[0] = '\0';
    for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next) {
        size_t cl;
        if (c->type != XML_TEXT_NODE || !c->content)
            continue;
        cl = strlen((const char *)c->content);
        if (used + cl >= len) /* full: cut, but never inside a character */
            cl = str_utf8_cut((const char *)c->content, cl, len - 1 - used);
        memcpy(buf + used, c->content, cl);
        used += cl;
        buf[used] = '\0';
    }
    t = str_trim(buf);
    if (t != buf)
        memmove(buf, t, strlen(t) + 1);
}
