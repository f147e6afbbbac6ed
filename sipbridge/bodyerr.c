/* Parser reason texts -> the metric's causes. */
#include "bodyerr.h"

#include <string.h>

const char *const bodyerr_causes[] = {"empty",           "too_large",      "out_of_memory",
                                      "dtd_not_allowed", "not_well_formed", "wrong_document",
                                      "content_type",    "bad_multipart",  "too_many",
                                      "bad_version",     "invalid_content", "wrong_entity",
                                      NULL};

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

const char *bodyerr_cause(const char *r)
{
    size_t n = r ? strlen(r) : 0;

    if (!r || !strcmp(r, "empty"))
        return "empty";
    if (!strcmp(r, BODYERR_WRONG_ENTITY))
        return "wrong_entity";
    if (!strcmp(r, "too large"))
        return "too_large";
    if (!strcmp(r, "out of memory"))
        return "out_of_memory";
    if (!strcmp(r, "DTD not allowed"))
        return "dtd_not_allowed";
    if (!strcmp(r, "not well-formed"))
        return "not_well_formed";
    if (starts(r, "too many "))
        return "too_many";
    if ((starts(r, "not a ") && n > 9 && !strcmp(r + n - 9, " document")) ||
        !strcmp(r, "wrong namespace") || starts(r, "root part is not"))
        return "wrong_document";
    if (!strcmp(r, "unexpected content type") || !strcmp(r, "not multipart/related"))
        return "content_type";
    if (strstr(r, "multipart") || strstr(r, "boundary") || strstr(r, "part headers") ||
        strstr(r, "body part"))
        return "bad_multipart";
    if (strstr(r, "version"))
        return "bad_version";
    return "invalid_content";
}
