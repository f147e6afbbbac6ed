/* libFuzzer target: RFC 3680 registration bodies (reginfo_parse). */
#include <stdint.h>

#include "reginfo.h"
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
    struct reg_doc doc;
    const char *reason = NULL;
    char *buf = fuzz_dup_exact(data, size);
    int rc = reginfo_parse(buf, size, FUZZ_MAX_BODY, &doc, &reason);

    free(buf);
    if (rc < 0) {
        FUZZ_CHECK(reason != NULL);
        (void)strlen(reason);
        return 0;
    }
    FUZZ_CHECK(doc.nregs >= 0 && doc.nregs <= REG_MAX_REGS);
    for (int i = 0; i < doc.nregs; i++) {
        const struct reg_entry *e = &doc.regs[i];
        FUZZ_CHECK(FUZZ_TERMINATED(e->aor) && e->aor[0] && FUZZ_TERMINATED(e->id));
        FUZZ_CHECK(FUZZ_UTF8(e->aor) && FUZZ_UTF8(e->id));
        FUZZ_CHECK((unsigned)e->state <= REG_TERMINATED);
        FUZZ_CHECK(e->active_contacts >= 0 && e->active_contacts <= 64);
        (void)reg_entry_online(e);
    }
    return 0;
}
