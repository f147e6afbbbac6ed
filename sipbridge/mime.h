/* MIME header values as SIP carries them (Content-Type with its parameters), pure: the
 * media type, one parameter, and whether a value names a given type. Called by every
 * body parser and by whoever checks a NOTIFY's Content-Type before parsing it. */
#ifndef OFFHOOK_MIME_H
#define OFFHOOK_MIME_H

#include <stdbool.h>
#include <stddef.h>

/* Media type of a Content-Type value (len bytes, need not be NUL-terminated): lower case,
 * parameters cut, into out (outlen bytes). Returns 0, or -1 if it is empty or too long. */
int mime_media_type(const char *ctype, size_t len, char *out, size_t outlen)
    __attribute__((warn_unused_result));
/* Value of parameter name (case-insensitive) of a NUL-terminated Content-Type value,
 * quotes removed, into out. Returns 0, or -1 if absent, empty, unterminated or too long. */
int mime_param(const char *ctype, const char *name, char *out, size_t outlen)
    __attribute__((warn_unused_result));
/* True if ctype (len bytes; NULL is no Content-Type at all) has media type want (lower
 * case, no parameters), whatever its parameters and case. */
bool mime_is(const char *ctype, size_t len, const char *want);

#endif
