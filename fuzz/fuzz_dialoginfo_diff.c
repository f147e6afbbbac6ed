/* libFuzzer target: differential. The streaming dialog-info parser (dlginfo_parse, SAX2)
 * must conclude exactly what the DOM parser it replaced (dlginfo_parse_dom) concludes on
 * every input: the same verdict, the same reason when both reject, the same document
 * byte for byte when both accept. The DOM one is the reference: its behaviour is what
 * users relied on before the change (docs/performance.md, issue 14).
 *
 * Each input is parsed a third time by the streaming parser with a NUL right after the
 * body, so a parser that reads past the given length cannot go unnoticed either way. */
#include <stdbool.h>
#include <stdint.h>

#include "dialoginfo.h"
#include "xmlsafe.h"

#include "fuzz_util.h"

#define FUZZ_MAX_BODY 65536 /* [sip] max_body default */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    xmlsafe_init();
    return 0;
}

static void same_doc(const struct dlg_doc *a, const struct dlg_doc *b)
{
    FUZZ_CHECK(a->version == b->version && a->full == b->full);
    FUZZ_CHECK(strcmp(a->entity, b->entity) == 0);
    FUZZ_CHECK(a->ndialogs == b->ndialogs);
    for (int i = 0; i < a->ndialogs; i++) {
        const struct dlg_entry *x = &a->dialogs[i], *y = &b->dialogs[i];
        FUZZ_CHECK(strcmp(x->id, y->id) == 0);
        FUZZ_CHECK(x->state == y->state && x->dir == y->dir);
        FUZZ_CHECK(x->held == y->held && x->anonymous == y->anonymous);
        FUZZ_CHECK(strcmp(x->remote_uri, y->remote_uri) == 0);
        FUZZ_CHECK(strcmp(x->remote_name, y->remote_name) == 0);
    }
    /* Nothing else differs either (both start from zeroed structs). */
    FUZZ_CHECK(memcmp(a, b, sizeof *a) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dlg_doc dom, stream;
    const char *rd = NULL, *rs = NULL;
    char *buf = fuzz_dup_exact(data, size);
    char *zbuf = fuzz_strndup_exact(data, size);
    int cd, cs, cz;

    memset(&dom, 0, sizeof dom);
    memset(&stream, 0, sizeof stream);
    cd = dlginfo_parse_dom(buf, size, FUZZ_MAX_BODY, &dom, &rd);
    cs = dlginfo_parse(buf, size, FUZZ_MAX_BODY, &stream, &rs);
    if (cd != cs)
        fprintf(stderr, "dom %d (%s), stream %d (%s)\n", cd, cd ? rd : "-", cs, cs ? rs : "-");
    FUZZ_CHECK(cd == cs);
    if (cd < 0) {
        FUZZ_CHECK(rd && rs);
        if (strcmp(rd, rs) != 0)
            fprintf(stderr, "dom \"%s\", stream \"%s\"\n", rd, rs);
        FUZZ_CHECK(strcmp(rd, rs) == 0);
    } else {
        same_doc(&dom, &stream);
    }
    memset(&stream, 0, sizeof stream);
    cz = dlginfo_parse(zbuf, size, FUZZ_MAX_BODY, &stream, &rs);
    FUZZ_CHECK(cz == cd);
    if (cz == 0)
        same_doc(&dom, &stream);
    free(buf);
    free(zbuf);
    return 0;
}
