/* The one way sipbridge parses XML from the network: libxml2 with a size limit, no
 * network access and no DTD at all (so no entity expansion and no external entities),
 * errors captured as a short reason instead of printed; as a DOM (xmlsafe_parse: PIDF,
 * reginfo, RLMI) or streamed (xmlsafe_stream: dialog-info). Used by every body parser. */
#ifndef OFFHOOK_XMLSAFE_H
#define OFFHOOK_XMLSAFE_H

#include <stdbool.h>
#include <stddef.h>

#include <libxml/tree.h>

/* Returns the document (caller frees with xmlFreeDoc) or NULL with a static reason:
 * "empty", "too large", "DTD not allowed", "not well-formed". */
xmlDocPtr xmlsafe_parse(const char *buf, size_t len, size_t max, const char **reason)
    __attribute__((warn_unused_result));
/* The root element of doc if it is name in namespace ns (borrowed from doc). Else NULL
 * and *reason: not_it (a static string the caller names its document type with, e.g.
 * "not a reginfo document") when the root has another name, "wrong namespace" when it
 * has this name in another namespace. */
xmlNodePtr xmlsafe_root(xmlDocPtr doc, const char *ns, const char *name, const char *not_it,
                        const char **reason) __attribute__((warn_unused_result));
/* True if n is an element with this local name in namespace ns. */
bool xmlsafe_is(const xmlNode *n, const char *ns, const char *name);
/* First child element of n with this name in ns, or NULL. */
xmlNodePtr xmlsafe_child(const xmlNode *n, const char *ns, const char *name);
/* Attribute value without namespace, or NULL. Valid while the document lives. The value
 * is the attribute's own text: entity references are never expanded (no DTD exists). */
const char *xmlsafe_attr(const xmlNode *n, const char *name);
/* Text content of n's direct text children, trimmed, into buf (len bytes, NUL
 * included); longer text is cut on a UTF-8 character boundary. */
void xmlsafe_text(const xmlNode *n, char *buf, size_t len);
/* One element start as a streaming parse reports it. Valid only during the callback. */
struct xmlsafe_elem {
    const char *name;           /* local name */
    const char *prefix;         /* NULL if none */
    const char *ns;             /* namespace URI; NULL if none or the prefix is unbound */
    int depth;                  /* the root is 1 */
    int nattrs;
    const unsigned char **attrs;/* libxml2's SAX2 array: 5 pointers per attribute */
};
/* What a streaming parse reports, in document order; ud is xmlsafe_stream's. */
struct xmlsafe_handler {
    void (*start)(void *ud, const struct xmlsafe_elem *e);
    void (*end)(void *ud, int depth);
    /* Text directly inside the element at depth, in pieces (never cut inside a UTF-8
     * character). new_node: the DOM would start a new text node here (the element's
     * previous child is not text), so xmlsafe_text's cut can be reproduced exactly. */
    void (*text)(void *ud, int depth, const char *s, size_t len, bool new_node);
};
/* The same parse as xmlsafe_parse (same options, limits and reasons: "empty", "too
 * large", "DTD not allowed", "not well-formed", "out of memory") but no tree is built:
 * h's callbacks see the document as it is read, and the white space XML_PARSE_NOBLANKS
 * drops from the DOM is dropped here too. Returns 0 if the whole document is
 * well-formed, else -1 and *reason; the callbacks may have run before the error was
 * found, so a caller decides only once this returns. Not reentrant (one shared context). */
int xmlsafe_stream(const char *buf, size_t len, size_t max, const struct xmlsafe_handler *h,
                   void *ud, const char **reason) __attribute__((warn_unused_result));
/* True if e is name in namespace ns (xmlsafe_is for a streamed element). */
bool xmlsafe_elem_is(const struct xmlsafe_elem *e, const char *ns, const char *name);
/* True if e's name (as the DOM spells it: "p:name" when prefix p is unbound) is name. */
bool xmlsafe_elem_named(const struct xmlsafe_elem *e, const char *name);
/* The attribute name without namespace, as xmlsafe_attr gives it on the DOM. Returns 0 if
 * absent (*out NULL), 1 with *out NUL-terminated: buf (size bytes) when it fits, else
 * allocated (the caller frees it when *out != buf); -1 out of memory. */
int xmlsafe_elem_attr(const struct xmlsafe_elem *e, const char *name, char *buf, size_t size,
                      char **out) __attribute__((warn_unused_result));
/* Once per process: silences libxml2's own stderr output. */
void xmlsafe_init(void);
/* Frees the parser context kept between parses (at exit, for leak checkers). */
void xmlsafe_cleanup(void);

#endif
