/* Helpers shared by the unit tests: reading fixture files. */
#ifndef OFFHOOK_TESTUTIL_H
#define OFFHOOK_TESTUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reads OFFHOOK_TEST_DATA/rel into a NUL-terminated heap buffer; aborts if missing. */
static inline char *read_data(const char *rel, size_t *len)
{
    char path[1024];
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof path, "%s/%s", OFFHOOK_TEST_DATA, rel);
    f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        abort();
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        abort();
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

#endif
