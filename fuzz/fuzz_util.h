/* Helpers shared by the libFuzzer targets in this directory (not part of offhook).
 *
 * Every parser gets its input in a heap block of exactly the input's size, so that
 * AddressSanitizer reports a read one byte before or after it. A failed invariant calls
 * FUZZ_CHECK, which prints what failed and aborts: libFuzzer then saves the input. */
#ifndef OFFHOOK_FUZZ_UTIL_H
#define OFFHOOK_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__,  \
                    #cond);                                                             \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* A copy of n bytes in its own block of exactly n bytes (1 when n is 0). */
static inline char *fuzz_dup_exact(const void *p, size_t n)
{
    char *q = malloc(n ? n : 1);

    if (!q)
        abort();
    if (n)
        memcpy(q, p, n);
    return q;
}

/* A NUL-terminated copy of n bytes in a block of exactly n + 1 bytes. An embedded NUL
 * simply ends the C string early, as it would for the daemons. */
static inline char *fuzz_strndup_exact(const void *p, size_t n)
{
    char *q = malloc(n + 1);

    if (!q)
        abort();
    if (n)
        memcpy(q, p, n);
    q[n] = '\0';
    return q;
}

/* True if the fixed-size char array a holds a NUL (the parser terminated it). */
#define FUZZ_TERMINATED(a) (memchr((a), '\0', sizeof(a)) != NULL)

/* A NUL-terminated field holds well-formed UTF-8 (what reaches Redis and stanzas). */
#define FUZZ_UTF8(field) str_utf8_valid((field), strlen(field))

#endif
