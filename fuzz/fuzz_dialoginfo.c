/* libFuzzer target: RFC 4235 dialog-info bodies (dlginfo_parse), the entity check
 * (sipuri), then merge.
 *
 * The body is parsed twice in a row and both results must agree: xmlsafe may keep one
 * libxml2 parser context from one parse to the next, and what a parse concludes must not
 * depend on what the context parsed before. Apart from that context (which sipbridge
 * keeps across NOTIFYs too), each input is independent. A document that parses is
 * applied to a fresh merge_source
 * twice (the second time applies again if it is full state, else it is stale), viewed, applied once more as the next version
 * with full/partial flipped (so carry-over, partial update and removal run too), viewed
 * again, and the source is cleared. */
#include <stdbool.h>
#include <stdint.h>

#include "dialoginfo.h"
#include "merge.h"
#include "sipuri.h"
#include "xmlsafe.h"

#include "fuzz_util.h"

#define FUZZ_MAX_BODY 65536 /* [sip] max_body default */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xmlsafe_init();
    return 0;
}

static void check_doc(const struct dlg_doc *doc)
{
    FUZZ_CHECK(doc->ndialogs >= 0 && doc->ndialogs <= DLG_MAX_DIALOGS);
    FUZZ_CHECK(FUZZ_TERMINATED(doc->entity) && FUZZ_UTF8(doc->entity));
    for (int i = 0; i < doc->ndialogs; i++) {
        const struct dlg_entry *d = &doc->dialogs[i];
        enum call_activity a;

        FUZZ_CHECK(FUZZ_TERMINATED(d->id) && d->id[0]);
        FUZZ_CHECK(FUZZ_TERMINATED(d->remote_uri) && FUZZ_TERMINATED(d->remote_name));
        FUZZ_CHECK(FUZZ_UTF8(d->remote_uri) && FUZZ_UTF8(d->remote_name));
        FUZZ_CHECK((unsigned)d->state <= DLGS_TERMINATED);
        FUZZ_CHECK((unsigned)d->dir <= DIR_OUTGOING);
        FUZZ_CHECK(!d->anonymous || (!d->remote_uri[0] && !d->remote_name[0]));
        a = dlg_entry_activity(d);
        FUZZ_CHECK((unsigned)a < ACT__COUNT);
        (void)dlg_state_name(d->state);
    }
}

static void check_view(const struct merge_source *src)
{
    const struct merge_source *srcs[2] = {src, NULL};
    struct merge_view view;

    FUZZ_CHECK(src->ndialogs >= 0 && src->ndialogs <= MERGE_MAX_DIALOGS);
    for (int i = 0; i < src->ndialogs; i++) {
        FUZZ_CHECK(src->dialogs[i].id != NULL);
        (void)strlen(src->dialogs[i].id);
        if (src->dialogs[i].remote)
            (void)strlen(src->dialogs[i].remote);
    }
    merge_view(srcs, 2, &view);
    FUZZ_CHECK((unsigned)view.act < ACT__COUNT);
    FUZZ_CHECK(view.act != ACT_IDLE || (view.dir == DIR_NONE && view.remote == NULL));
    if (view.remote)
        (void)strlen(view.remote);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dlg_doc doc2;
    struct dlg_doc doc;
    struct merge_source src = {0};
    const char *reason = NULL, *reason2 = NULL;
    char *buf = fuzz_dup_exact(data, size);
    enum merge_result r;
    int rc, rc2;

    memset(&doc, 0, sizeof doc);
    memset(&doc2, 0, sizeof doc2);
    rc = dlginfo_parse(buf, size, FUZZ_MAX_BODY, &doc, &reason);
    rc2 = dlginfo_parse(buf, size, FUZZ_MAX_BODY, &doc2, &reason2);
    free(buf); /* the document must not point into the body */
    FUZZ_CHECK(rc == rc2);
    if (rc < 0) {
        FUZZ_CHECK(reason != NULL && reason2 != NULL);
        FUZZ_CHECK(strcmp(reason, reason2) == 0);
        return 0;
    }
    FUZZ_CHECK(memcmp(&doc, &doc2, sizeof doc) == 0);
    check_doc(&doc);
    /* The entity check bridge.c makes, on whatever entity the input names: a URI is
     * always the same user as itself, and one without a user part never matches one. */
    {
        char user[256];
        bool has_user = sipuri_user(doc.entity, user, sizeof user) == 0;
        FUZZ_CHECK(!has_user || sipuri_same_user(doc.entity, doc.entity));
        FUZZ_CHECK(has_user || !sipuri_same_user(doc.entity, "sip:1001@pbx"));
        FUZZ_CHECK(sipuri_same_user(doc.entity, "sip:pbx.example.com"));
    }

    r = merge_apply(&src, &doc);
    FUZZ_CHECK(r == MERGE_APPLIED || r == MERGE_GAP || r == MERGE_OVERFLOW);
    (void)merge_result_name(r);
    check_view(&src);
    r = merge_apply(&src, &doc);
    FUZZ_CHECK(doc.full ? r == MERGE_APPLIED : r == MERGE_STALE);
    FUZZ_CHECK(src.anomaly == DOCVER_NORMAL);
    check_view(&src);
    if (doc.version < UINT32_MAX) {
        doc.version++;
        doc.full = !doc.full;
        r = merge_apply(&src, &doc);
        FUZZ_CHECK(r == MERGE_APPLIED || r == MERGE_GAP || r == MERGE_OVERFLOW);
        (void)merge_result_name(r);
        check_view(&src);
    }
    merge_source_restart(&src);
    merge_source_clear(&src);
    FUZZ_CHECK(src.dialogs == NULL && src.ndialogs == 0);
    return 0;
}
