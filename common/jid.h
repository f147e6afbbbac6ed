/* JID parsing and validation (RFC 7622, ASCII case folding only), pure. Used by the
 * config loader for user JIDs and by the component to check every stanza address. */
#ifndef OFFHOOK_JID_H
#define OFFHOOK_JID_H

#include <stdbool.h>
#include <stddef.h>

#define JID_PART_MAX 1023 /* RFC 7622: each part at most 1023 octets */
#define JID_MAX 3071

struct jid {
    char local[JID_PART_MAX + 1];    /* "" when absent */
    char domain[JID_PART_MAX + 1];   /* always present */
    char resource[JID_PART_MAX + 1]; /* "" when absent */
};

/* Splits and validates s (well-formed UTF-8, each part as RFC 7622 allows as far as it
 * can be told without Unicode tables); local and domain are case-folded (ASCII).
 * Returns 0/-1. */
int jid_parse(const char *s, struct jid *out) __attribute__((warn_unused_result));
/* Writes "local@domain" (or "domain") of j into out. Returns 0/-1 if it does not fit. */
int jid_format_bare(const struct jid *j, char *out, size_t outlen);
/* Parses s and writes its normalized bare form. Returns 0/-1. */
int jid_to_bare(const char *s, char *out, size_t outlen) __attribute__((warn_unused_result));

#endif
