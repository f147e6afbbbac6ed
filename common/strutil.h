/* Small string and time helpers used by every module: bounded copies, trimming,
 * strict integer parsing, list splitting, UTF-8 checks and cuts, clocks. */
#ifndef OFFHOOK_STRUTIL_H
#define OFFHOOK_STRUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Copies src into dst (size bytes, always NUL-terminated). Returns -1 if truncated. */
int str_copy(char *dst, size_t size, const char *src);
/* Trims ASCII white space at both ends, in place; returns s. */
char *str_trim(char *s);
/* Parses a whole string as a base-10 integer within [min, max]. Returns 0/-1. */
int str_parse_long(const char *s, long min, long max, long *out)
    __attribute__((warn_unused_result));
/* Parses the whole string as an unsigned 32-bit decimal number. Returns 0/-1. */
int str_parse_u32(const char *s, uint32_t *out) __attribute__((warn_unused_result));
/* yes/no, true/false, on/off, 1/0. Returns 0/-1. */
int str_parse_bool(const char *s, bool *out) __attribute__((warn_unused_result));
/* Lower-cases ASCII letters in place. */
void str_lower(char *s);
/* Splits a comma-separated list into trimmed, non-empty items.
 * Returns the number of items (at most max) or -1 if there were more than max.
 * The items point into s, which is modified. */
int str_split_list(char *s, char **items, int max);
bool str_has_prefix(const char *s, const char *prefix);

/* UTF-8 (RFC 3629) for text that crosses from a peer to Redis, logs and stanzas: a
 * caller's name cut mid-character is invalid UTF-8, and an XMPP server closes the stream
 * of a component that sends it. Well-formed means: no stray continuation byte, no
 * truncated sequence, no overlong form, no surrogate (U+D800..U+DFFF), nothing above
 * U+10FFFF; a NUL byte counts as invalid too (no C string, XML or log line carries one).
 *
 * str_utf8_valid: whether the len bytes at s are all well-formed (0 bytes are). Used by
 * the parsers on what they keep and by the component on every stanza it sends. */
bool str_utf8_valid(const char *s, size_t len) __attribute__((warn_unused_result));
/* Where to cut the len bytes at s to keep at most max bytes without splitting a
 * character: the length of the longest such prefix (len if len <= max). A byte that is
 * not part of a well-formed sequence counts as one character of its own. */
size_t str_utf8_cut(const char *s, size_t len, size_t max);
/* str_copy() cutting on a character boundary (str_utf8_cut): dst (size bytes, always
 * NUL-terminated) never ends inside a character. Returns -1 if truncated. */
int str_copy_utf8(char *dst, size_t size, const char *src);
/* Replaces, in place, each byte of s that is not part of a well-formed sequence with '?'
 * (s stays as long and is then valid UTF-8). Returns how many bytes were replaced. */
size_t str_utf8_scrub(char *s);

/* Wall clock in microseconds / milliseconds since the epoch. */
int64_t clock_wall_us(void);
int64_t clock_wall_ms(void);
/* Monotonic clock in milliseconds. */
int64_t clock_mono_ms(void);

/* Allocation that aborts the process on failure: out of memory is not recoverable in
 * a daemon whose state is all in memory, and checking every strdup hides real bugs. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* The first n bytes of s (fewer if s is shorter), NUL-terminated. */
char *xstrndup(const char *s, size_t n);

#endif
