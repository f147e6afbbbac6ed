/* libFuzzer target: RFC 4662 resource-list NOTIFY bodies (rlmi_parse).
 *
 * Input format: the first line is the NOTIFY's Content-Type value (a trailing CR is
 * dropped), the rest is the body. Content-Type and body each get their own exactly-sized
 * heap block. Every resource body found is copied into its own exactly-sized block and
 * given to dlginfo_parse, and to pidf_parse or reginfo_parse when its part says so. */
#include <stdint.h>

#include "dialoginfo.h"
#include "pidf.h"
#include "reginfo.h"
#include "rlmi.h"
#include "xmlsafe.h"

#include "fuzz_util.h"

#define FUZZ_MAX_BODY 65536                 /* [sip] max_body default */
#define FUZZ_MAX_LIST (FUZZ_MAX_BODY * 64)  /* what bridge.c allows a resource list */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xmlsafe_init();
    return 0;
}

static void parse_resource_body(const struct rlmi_resource *res)
{
    char *body = fuzz_dup_exact(res->body, res->body_len);
    const char *reason = NULL;

    {
        struct dlg_doc doc;
        if (dlginfo_parse(body, res->body_len, FUZZ_MAX_BODY, &doc, &reason) < 0)
            FUZZ_CHECK(reason != NULL);
        else
            FUZZ_CHECK(doc.ndialogs >= 0 && doc.ndialogs <= DLG_MAX_DIALOGS);
    }
    if (strcmp(res->ctype, "application/pidf+xml") == 0) {
        struct pidf_doc doc;
        if (pidf_parse(body, res->body_len, FUZZ_MAX_BODY, &doc, &reason) < 0)
            FUZZ_CHECK(reason != NULL);
    } else if (strcmp(res->ctype, "application/reginfo+xml") == 0) {
        struct reg_doc doc;
        if (reginfo_parse(body, res->body_len, FUZZ_MAX_BODY, &doc, &reason) < 0)
            FUZZ_CHECK(reason != NULL);
    }
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ctlen = nl ? (size_t)(nl - data) : size;
    size_t blen = nl ? size - ctlen - 1 : 0;
    char *ctype, *body;
    struct rlmi_doc doc;
    const char *reason = NULL;

    if (ctlen && data[ctlen - 1] == '\r')
        ctype = fuzz_strndup_exact(data, ctlen - 1);
    else
        ctype = fuzz_strndup_exact(data, ctlen);
    body = fuzz_dup_exact(nl ? nl + 1 : data + size, blen);

    if (rlmi_parse(ctype, body, blen, FUZZ_MAX_LIST, &doc, &reason) < 0) {
        FUZZ_CHECK(reason != NULL);
        (void)strlen(reason);
        FUZZ_CHECK(doc.res == NULL && doc.nres == 0);
        goto out;
    }
    FUZZ_CHECK(FUZZ_TERMINATED(doc.uri));
    FUZZ_CHECK(doc.nres <= RLMI_MAX_RESOURCES);
    for (size_t i = 0; i < doc.nres; i++) {
        const struct rlmi_resource *res = &doc.res[i];

        FUZZ_CHECK(res->uri != NULL && res->uri[0]);
        if (res->name)
            (void)strlen(res->name);
        FUZZ_CHECK((unsigned)res->state <= RLMI_TERMINATED);
        FUZZ_CHECK(FUZZ_TERMINATED(res->reason) && FUZZ_TERMINATED(res->ctype));
        FUZZ_CHECK(FUZZ_UTF8(res->reason) && (!res->name || FUZZ_UTF8(res->name)));
        if (!res->body)
            continue;
        /* A resource body is a slice of the NOTIFY body. */
        FUZZ_CHECK(res->body >= body && res->body <= body + blen);
        FUZZ_CHECK(res->body_len <= (size_t)(body + blen - res->body));
        parse_resource_body(res);
    }
    rlmi_doc_free(&doc);
    FUZZ_CHECK(doc.res == NULL && doc.nres == 0);
out:
    free(body);
    free(ctype);
    return 0;
}
