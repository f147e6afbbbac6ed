/* Safe XML parsing for SIP event bodies. A SIP body never needs a DTD, so any document
 * type declaration stops the parser at once: no entity is ever defined, let alone
 * expanded, and nothing is fetched. */
#include "xmlsafe.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/xmlerror.h>

#include "strutil.h"

struct guard {
    bool saw_dtd;
};

/* A streaming parse builds no tree, but libxml2 decides which white space is ignorable
 * (XML_PARSE_NOBLANKS) by looking at ctxt->node, the element the DOM builder is
 * filling: whether it has children yet and whether its first and last child are text
 * (areBlanks() in parser.c). So a streaming parse pushes a stand-in node per open
 * element (nodePush, which also enforces libxml2's depth limit as the DOM builder's
 * push does) whose first and last child are only "text" or "not text"; the parser then
 * drops exactly the white space it drops from the DOM. libxml2 stops at depth 257
 * without XML_PARSE_HUGE, so STREAM_DEPTH stand-ins are enough. */
#define STREAM_DEPTH 260

struct stream {
    struct guard g; /* first: reject_dtd reads the context's _private as a guard */
    const struct xmlsafe_handler *h;
    void *ud;
    int depth;
};

static xmlNode stand_in[STREAM_DEPTH];
static xmlNode text_child = {.type = XML_TEXT_NODE};
static xmlNode other_child = {.type = XML_ELEMENT_NODE}; /* an element, comment or PI */
static xmlSAXHandler stream_sax;

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

/* Called once the XML declaration (and with it any change of encoding) is behind. The
 * whole body is then in the input buffer (xmlCtxtReadMemory copies it), and if it is
 * UTF-8 (no encoder) nothing is left to read: without a reader, libxml2's look-ahead
 * checks stop asking the no-op one for more, which on a body under 250 bytes is a buffer
 * grow and a call at nearly every token (a quarter of a small body's parse). libxml2
 * treats memory it need not copy the same way (xmlParserInputBufferCreateStatic). */
static void stream_doc(void *ctx)
{
    xmlParserCtxtPtr ctxt = ctx;

    if (ctxt->inputNr == 1 && ctxt->input->buf && !ctxt->input->buf->encoder)
        ctxt->input->buf->readcallback = NULL;
}

static void stream_start(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                         const xmlChar *uri, int nb_namespaces, const xmlChar **namespaces,
                         int nb_attributes, int nb_defaulted, const xmlChar **attributes)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct stream *s = ctxt->_private;
    xmlNodePtr parent = ctxt->node, n;
    struct xmlsafe_elem e;

    if (s->depth >= STREAM_DEPTH) { /* libxml2 stops long before */
        xmlStopParser(ctxt);
        ctxt->wellFormed = 0;
        return;
    }
    if (parent) {
        if (!parent->children)
            parent->children = &other_child;
        parent->last = &other_child;
    }
    n = &stand_in[s->depth];
    n->type = XML_ELEMENT_NODE;
    n->children = n->last = NULL;
    if (nodePush(ctxt, n) < 0)
        return; /* too deep: libxml2 has stopped the parser with an error */
    s->depth++;
    e.name = (const char *)localname;
    e.prefix = (const char *)prefix;
    e.ns = (const char *)uri;
    e.depth = s->depth;
    e.nattrs = nb_attributes;
    e.attrs = attributes;
    s->h->start(s->ud, &e);
}

static void stream_end(void *ctx, const xmlChar *localname, const xmlChar *prefix,
                       const xmlChar *uri)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct stream *s = ctxt->_private;

    s->h->end(s->ud, s->depth);
    nodePop(ctxt);
    s->depth--;
}

static void stream_text(void *ctx, const xmlChar *ch, int len)
{
    xmlParserCtxtPtr ctxt = ctx;
    struct stream *s = ctxt->_private;
    xmlNodePtr n = ctxt->node;
    bool new_node;

    if (!n || len <= 0)
        return; /* outside the root element the DOM keeps no text either */
    new_node = n->last != &text_child;
    if (!n->children)
        n->children = &text_child;
    n->last = &text_child;
    s->h->text(s->ud, s->depth, (const char *)ch, (size_t)len, new_node);
}

/* A comment or processing instruction: a child that is not text (it splits text nodes). */
static void stream_other(xmlParserCtxtPtr ctxt)
{
    xmlNodePtr n = ctxt->node;

    if (!n)
        return;
    if (!n->children)
        n->children = &other_child;
    n->last = &other_child;
}

static void stream_comment(void *ctx, const xmlChar *value)
{
    stream_other(ctx);
}

static void stream_pi(void *ctx, const xmlChar *target, const xmlChar *data)
{
    stream_other(ctx);
}

void xmlsafe_init(void)
{
    xmlInitParser();
    /* SAX2 with libxml2's own entity lookup (predefined entities only: there is never a
     * DTD) and no tree: no xmlDoc, no element or text nodes. */
    xmlSAXVersion(&stream_sax, 2);
    stream_sax.internalSubset = reject_dtd;
    stream_sax.externalSubset = NULL;
    stream_sax.resolveEntity = NULL;
    stream_sax.reference = NULL;
    stream_sax.startDocument = stream_doc;
    stream_sax.endDocument = NULL;
    stream_sax.setDocumentLocator = NULL;
    stream_sax.startElementNs = stream_start;
    stream_sax.endElementNs = stream_end;
    stream_sax.characters = stream_text;
    stream_sax.cdataBlock = NULL; /* XML_PARSE_NOCDATA: CDATA arrives as characters */
    stream_sax.comment = stream_comment;
    stream_sax.processingInstruction = stream_pi;
    stream_sax.warning = NULL;
    stream_sax.error = NULL;
    stream_sax.fatalError = NULL;
    stream_sax.serror = silent_structured;
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

int xmlsafe_stream(const char *buf, size_t len, size_t max, const struct xmlsafe_handler *h,
                   void *ud, const char **reason)
{
    const int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                        XML_PARSE_NOBLANKS | XML_PARSE_NOCDATA; /* as xmlsafe_parse */
    struct stream s = {.g = {false}, .h = h, .ud = ud, .depth = 0};
    xmlParserCtxtPtr ctxt;
    xmlSAXHandlerPtr dom_sax;
    xmlDocPtr doc;

    if (!buf || len == 0) {
        *reason = "empty";
        return -1;
    }
    if (len > max || len > (size_t)INT32_MAX) {
        *reason = "too large";
        return -1;
    }
    ctxt = context();
    if (!ctxt) {
        *reason = "out of memory";
        return -1;
    }
    /* The shared context serves both kinds of parse: its own handler table (freed with
     * the context) is put back after this one. */
    dom_sax = ctxt->sax;
    ctxt->sax = &stream_sax;
    ctxt->_private = &s;
    doc = xmlCtxtReadMemory(ctxt, buf, (int)len, NULL, NULL, options);
    ctxt->_private = NULL;
    ctxt->sax = dom_sax;
    if (doc) /* cannot happen: nothing creates a document */
        xmlFreeDoc(doc);
    if (s.g.saw_dtd) {
        *reason = "DTD not allowed";
        return -1;
    }
    if (!ctxt->wellFormed) {
        *reason = "not well-formed";
        return -1;
    }
    return 0;
}

bool xmlsafe_elem_is(const struct xmlsafe_elem *e, const char *ns, const char *name)
{
    return e->ns && strcmp(e->name, name) == 0 && strcmp(e->ns, ns) == 0;
}

bool xmlsafe_elem_named(const struct xmlsafe_elem *e, const char *name)
{
    /* The DOM names an element whose prefix is unbound "prefix:name" (SAX2.c). */
    return (!e->prefix || e->ns) && strcmp(e->name, name) == 0;
}

int xmlsafe_elem_attr(const struct xmlsafe_elem *e, const char *name, char *buf, size_t size,
                      char **out)
{
    *out = NULL;
    for (int i = 0; i < e->nattrs; i++) {
        const xmlChar *const *a = e->attrs + 5 * i; /* local, prefix, URI, value, end */
        const char *v = (const char *)a[3], *end = (const char *)a[4];
        size_t n = (size_t)(end - v), used = 0;
        char *dst;

        /* A prefixed attribute has a namespace in the DOM, or, its prefix unbound, the
         * name "prefix:name": either way it is not this one. */
        if (a[1] || strcmp((const char *)a[0], name) != 0)
            continue;
        dst = n < size ? buf : malloc(n + 1);
        if (!dst)
            return -1;
        /* Without NOENT libxml2 leaves an '&' (from &amp; or &#38;) as "&#38;" in the
         * value for the DOM builder to decode (xmlStringLenGetNodeList); nothing else
         * needs decoding, and a value without '&' is taken as it is. */
        for (size_t i2 = 0; i2 < n; i2++) {
            if (v[i2] == '&' && n - i2 >= 5 && memcmp(v + i2, "&#38;", 5) == 0) {
                dst[used++] = '&';
                i2 += 4;
            } else {
                dst[used++] = v[i2];
            }
        }
        dst[used] = '\0';
        *out = dst;
        return 1;
    }
    return 0;
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
