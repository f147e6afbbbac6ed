/* The one way sipbridge parses XML from the network: libxml2 with a size limit, no
 * network access and no DTD at all (so no entity expansion and no external entities),
 * errors captured as a short reason instead of printed. Used by every body parser. */
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
/* Once per process: silences libxml2's own stderr output. */
void xmlsafe_init(void);
/* Frees the parser context kept between parses (at exit, for leak checkers). */
void xmlsafe_cleanup(void);

#endif
