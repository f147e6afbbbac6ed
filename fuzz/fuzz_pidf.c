/* libFuzzer target: PIDF/RPID presence bodies (pidf_parse). */
#include <stdint.h>

#include "pidf.h"
#include "xmlsafe.h"

#include "fuzz_util.h"

#define FUZZ_MAX_BODY 65536 /* [sip] max_body default */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xmlsafe_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pidf_doc doc;
    const char *reason = NULL;
    char *buf = fuzz_dup_exact(data, size);
    int rc = pidf_parse(buf, size, FUZZ_MAX_BODY, &doc, &reason);

    free(buf);
    if (rc < 0) {
        FUZZ_CHECK(reason != NULL);
        (void)strlen(reason);
        return 0;
    }
    FUZZ_CHECK((unsigned)doc.reach <= REACH_OFFLINE);
    FUZZ_CHECK(FUZZ_TERMINATED(doc.note) && FUZZ_TERMINATED(doc.entity));
    FUZZ_CHECK(FUZZ_UTF8(doc.note) && FUZZ_UTF8(doc.entity));
    FUZZ_CHECK(doc.entity[0] != '\0');
    return 0;
}
