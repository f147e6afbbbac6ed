/* Body parsers on every fixture in tests/data, driven by tests/data/expect.txt, plus the
 * limits a hostile peer would probe. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdbool.h>

#include "bodyerr.h"
#include "dialoginfo.h"
#include "merge.h"
#include "mime.h"
#include "pidf.h"
#include "reginfo.h"
#include "rlmi.h"
#include "sbuf.h"
#include "sipuri.h"
#include "strutil.h"
#include "testutil.h"
#include "xmlsafe.h"

#define MAX 65536

struct expect {
    char kind[16];
    char file[256];
    char rest[512]; /* everything after the file name */
};

static struct expect expects[128];
static int nexpects;

static void load_expectations(void)
{
    char *buf = read_data("expect.txt", NULL);
    char *save = NULL;

    nexpects = 0;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        struct expect *e;
        int off = 0;
        if (line[0] == '#' || line[0] == '\0')
            continue;
        assert_true(nexpects < 128);
        e = &expects[nexpects];
        if (sscanf(line, "%15s %255s %n", e->kind, e->file, &off) < 2)
            continue;
        snprintf(e->rest, sizeof e->rest, "%s", line + off);
        nexpects++;
    }
    free(buf);
}

/* Applies one document to an empty source and reports what a user would see. */
static void check_dialog(const struct expect *e)
{
    char act[16], dir[16], full[16], remote[256] = "";
    unsigned version;
    int ndialogs, off = 0;
    size_t len;
    char *body = read_data(e->file, &len);
    struct dlg_doc *doc = malloc(sizeof *doc);
    struct merge_source src = {0};
    const struct merge_source *srcs[] = {&src};
    struct merge_view view;
    const char *reason = NULL;

    assert_int_equal(sscanf(e->rest, "ok %15s %15s %u %15s %d %n", act, dir, &version, full,
                            &ndialogs, &off),
                     5);
    snprintf(remote, sizeof remote, "%s", e->rest + off);
    if (dlginfo_parse(body, len, MAX, doc, &reason) != 0)
        fail_msg("%s: rejected: %s", e->file, reason);
    assert_int_equal(doc->version, version);
    assert_int_equal(doc->full, strcmp(full, "full") == 0);
    assert_int_equal(doc->ndialogs, ndialogs);
    merge_apply(&src, doc);
    merge_view(srcs, 1, &view);
    if (strcmp(call_activity_name(view.act), act) != 0)
        fail_msg("%s: activity %s, expected %s", e->file, call_activity_name(view.act), act);
    assert_string_equal(call_dir_name(view.dir), dir);
    if (strcmp(remote, "-") == 0)
        assert_null(view.remote);
    else
        assert_string_equal(view.remote ? view.remote : "(none)", remote);
    merge_source_clear(&src);
    free(doc);
    free(body);
}

static void check_pidf(const struct expect *e)
{
    char reach[16];
    int phone, dnd, video = 0;
    size_t len;
    char *body = read_data(e->file, &len);
    struct pidf_doc doc;
    const char *reason = NULL;

    assert_true(sscanf(e->rest, "ok %15s %d %d %d", reach, &phone, &dnd, &video) >= 3);
    if (pidf_parse(body, len, MAX, &doc, &reason) != 0)
        fail_msg("%s: rejected: %s", e->file, reason);
    assert_string_equal(phone_reach_name(doc.reach), reach);
    assert_int_equal(doc.on_the_phone, phone);
    assert_int_equal(doc.dnd, dnd);
    assert_int_equal(doc.video, video);
    assert_string_equal(doc.entity, "sip:1001@pbx.example.com");
    free(body);
}

static void check_reg(const struct expect *e)
{
    char state[16], full[16];
    unsigned version;
    size_t len;
    char *body = read_data(e->file, &len);
    struct reg_doc doc;
    const char *reason = NULL;

    assert_int_equal(sscanf(e->rest, "ok %15s %u %15s", state, &version, full), 3);
    if (reginfo_parse(body, len, MAX, &doc, &reason) != 0)
        fail_msg("%s: rejected: %s", e->file, reason);
    assert_int_equal(doc.version, version);
    assert_int_equal(doc.full, strcmp(full, "full") == 0);
    assert_int_equal(doc.nregs, 1);
    assert_non_null(strstr(doc.regs[0].aor, "sip:"));
    assert_int_equal(reg_entry_online(&doc.regs[0]), strcmp(state, "online") == 0);
    free(body);
}

static void check_rlmi(const struct expect *e)
{
    size_t len, ctlen;
    char *body = read_data(e->file, &len);
    char *ctype = read_data("rlmi/resource-list-full.content-type", &ctlen);
    struct rlmi_doc doc;
    const char *reason = NULL;
    struct dlg_doc *d = malloc(sizeof *d);

    ctype[strcspn(ctype, "\r\n")] = '\0';
    if (rlmi_parse(ctype, body, len, MAX, &doc, &reason) != 0)
        fail_msg("%s: rejected: %s", e->file, reason);
    assert_string_equal(doc.uri, "sip:phones@pbx.example.com");
    assert_int_equal(doc.version, 3);
    assert_true(doc.full);
    assert_int_equal(doc.nres, 3);

    /* 1001 on the phone */
    assert_string_equal(doc.res[0].uri, "sip:1001@pbx.example.com");
    assert_string_equal(doc.res[0].name, "Alice");
    assert_int_equal(doc.res[0].state, RLMI_ACTIVE);
    assert_string_equal(doc.res[0].ctype, "application/dialog-info+xml");
    assert_int_equal(dlginfo_parse(doc.res[0].body, doc.res[0].body_len, MAX, d, &reason), 0);
    assert_int_equal(d->ndialogs, 1);
    assert_int_equal(dlg_entry_activity(&d->dialogs[0]), ACT_ON_CALL);
    assert_int_equal(d->version, 8);

    /* 1002 idle */
    assert_string_equal(doc.res[1].uri, "sip:1002@pbx.example.com");
    assert_int_equal(doc.res[1].state, RLMI_ACTIVE);
    assert_int_equal(dlginfo_parse(doc.res[1].body, doc.res[1].body_len, MAX, d, &reason), 0);
    assert_int_equal(dlg_entry_activity(&d->dialogs[0]), ACT_IDLE);

    /* 1003 subscription rejected, no body */
    assert_string_equal(doc.res[2].uri, "sip:1003@pbx.example.com");
    assert_int_equal(doc.res[2].state, RLMI_TERMINATED);
    assert_string_equal(doc.res[2].reason, "rejected");
    assert_null(doc.res[2].body);

    rlmi_doc_free(&doc);
    free(d);
    free(ctype);
    free(body);
}

static void check_hostile(const struct expect *e)
{
    char want[128];
    size_t len;
    char *body = read_data(e->file, &len);
    struct dlg_doc *d = malloc(sizeof *d);
    struct pidf_doc p;
    struct reg_doc r;
    const char *reason = NULL;

    assert_int_equal(sscanf(e->rest, "reject %127[^\n]", want), 1);
    assert_int_equal(dlginfo_parse(body, len, MAX, d, &reason), -1);
    assert_string_equal(reason, want);
    /* The same body on the other parsers: rejected too, never accepted. */
    assert_int_equal(pidf_parse(body, len, MAX, &p, &reason), -1);
    assert_int_equal(reginfo_parse(body, len, MAX, &r, &reason), -1);
    free(d);
    free(body);
}

static void test_fixture_table(void **state)
{
    int checked = 0;

    load_expectations();
    for (int i = 0; i < nexpects; i++) {
        const struct expect *e = &expects[i];
        if (strcmp(e->kind, "dialog") == 0)
            check_dialog(e);
        else if (strcmp(e->kind, "pidf") == 0)
            check_pidf(e);
        else if (strcmp(e->kind, "reg") == 0)
            check_reg(e);
        else if (strcmp(e->kind, "rlmi") == 0)
            check_rlmi(e);
        else if (strcmp(e->kind, "hostile") == 0)
            check_hostile(e);
        else if (strcmp(e->kind, "skip") != 0)
            fail_msg("unknown kind %s in expect.txt", e->kind);
        checked++;
    }
    assert_true(checked >= 51);
}

/* Every fixture file must have an expectation: a new fixture cannot go untested. */
static void test_every_fixture_listed(void **state)
{
    static const char *const dirs[] = {"dialog-info", "pidf", "reginfo", "rlmi", "hostile",
                                       "freeswitch", "kamailio"};
    int files = 0;

    load_expectations();
    for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
        char path[512];
        DIR *dir;
        struct dirent *ent;

        snprintf(path, sizeof path, "%s/%s", OFFHOOK_TEST_DATA, dirs[d]);
        dir = opendir(path);
        assert_non_null(dir);
        while ((ent = readdir(dir))) {
            char rel[512];
            bool found = false;
            if (ent->d_name[0] == '.')
                continue;
            snprintf(rel, sizeof rel, "%s/%s", dirs[d], ent->d_name);
            for (int i = 0; i < nexpects && !found; i++)
                found = strcmp(expects[i].file, rel) == 0;
            if (!found)
                fail_msg("fixture %s has no line in expect.txt", rel);
            files++;
        }
        closedir(dir);
    }
    assert_int_equal(files, 51);
}

static void test_size_limit(void **state)
{
    size_t len;
    char *body = read_data("dialog-info/asterisk-inuse.xml", &len);
    struct dlg_doc *d = malloc(sizeof *d);
    const char *reason = NULL;

    assert_int_equal(dlginfo_parse(body, len, len - 1, d, &reason), -1);
    assert_string_equal(reason, "too large");
    assert_int_equal(dlginfo_parse(body, len, len, d, &reason), 0);
    assert_int_equal(dlginfo_parse(body, 0, len, d, &reason), -1);
    assert_string_equal(reason, "empty");
    free(d);
    free(body);
}

static void test_too_many_dialogs(void **state)
{
    struct sbuf b;
    struct dlg_doc *d = malloc(sizeof *d);
    const char *reason = NULL;

    sbuf_init(&b);
    sbuf_puts(&b, "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' "
                  "state='full' entity='sip:a@b'>");
    for (int i = 0; i <= DLG_MAX_DIALOGS; i++)
        sbuf_printf(&b, "<dialog id='d%d'><state>confirmed</state></dialog>", i);
    sbuf_puts(&b, "</dialog-info>");
    assert_int_equal(dlginfo_parse(b.data, b.len, 1 << 20, d, &reason), -1);
    assert_string_equal(reason, "too many dialogs");
    sbuf_free(&b);
    free(d);
}

/* A dialog nested in N elements: libxml2's depth limit (256 without XML_PARSE_HUGE) is
 * what bounds a body's nesting, whichever parser reads it. */
static void nested_body(struct sbuf *b, int depth)
{
    sbuf_init(b);
    sbuf_puts(b, "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' "
                 "state='full' entity='sip:a@b'><dialog id='d' direction='initiator'>"
                 "<state>confirmed</state>");
    for (int i = 0; i < depth; i++)
        sbuf_puts(b, "<x>");
    for (int i = 0; i < depth; i++)
        sbuf_puts(b, "</x>");
    sbuf_puts(b, "</dialog></dialog-info>");
}

static void test_depth_limit(void **state)
{
    struct sbuf b;
    struct dlg_doc *d = malloc(sizeof *d);
    const char *reason = NULL;

    /* 2 + 250 levels: within the limit, on both parsers. */
    nested_body(&b, 250);
    assert_int_equal(dlginfo_parse(b.data, b.len, 1 << 20, d, &reason), 0);
    assert_int_equal(d->ndialogs, 1);
    assert_int_equal(dlginfo_parse_dom(b.data, b.len, 1 << 20, d, &reason), 0);
    sbuf_free(&b);
    /* 2 + 300: over it; refused as not well-formed, not parsed to the end. */
    nested_body(&b, 300);
    assert_int_equal(dlginfo_parse(b.data, b.len, 1 << 20, d, &reason), -1);
    assert_string_equal(reason, "not well-formed");
    assert_int_equal(dlginfo_parse_dom(b.data, b.len, 1 << 20, d, &reason), -1);
    assert_string_equal(reason, "not well-formed");
    sbuf_free(&b);
    free(d);
}

static void test_invalid_documents(void **state)
{
    static const struct {
        const char *xml, *reason;
    } cases[] = {
        {"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' state='full' entity='e'/>",
         "missing or invalid version"},
        {"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='-1' state='full'/>",
         "missing or invalid version"},
        {"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' state='x'/>",
         "missing or invalid state attribute"},
        {"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' state='full'>"
         "<dialog><state>confirmed</state></dialog></dialog-info>",
         "dialog without id"},
        {"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' state='full'>"
         "<dialog id='a'/></dialog-info>",
         "dialog without state"},
        {"<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' state='full'>"
         "<dialog id='a' direction='sideways'><state>early</state></dialog></dialog-info>",
         "unknown dialog direction"},
        {"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='x'/>",
         "not a dialog-info document"},
        {"<!DOCTYPE x><dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' "
         "state='full'/>",
         "DTD not allowed"},
        {"\xff\xfe<garbage", "not well-formed"},
    };
    struct dlg_doc *d = malloc(sizeof *d);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *reason = NULL;
        assert_int_equal(dlginfo_parse(cases[i].xml, strlen(cases[i].xml), MAX, d, &reason), -1);
        assert_string_equal(reason, cases[i].reason);
    }
    free(d);
}

/* Unknown elements and attributes are extensions: ignored, not fatal. */
static void test_unknown_elements_ignored(void **state)
{
    static const char xml[] =
        "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' xmlns:x='urn:x' version='3' "
        "state='full' entity='sip:1@b' x:extra='1'><x:thing/>"
        "<dialog id='a' direction='recipient' x:y='2'><x:z>q</x:z><state code='180'>early</state>"
        "</dialog></dialog-info>";
    struct dlg_doc *d = malloc(sizeof *d);
    const char *reason = NULL;

    assert_int_equal(dlginfo_parse(xml, sizeof xml - 1, MAX, d, &reason), 0);
    assert_int_equal(d->ndialogs, 1);
    assert_int_equal(dlg_entry_activity(&d->dialogs[0]), ACT_RINGING);
    free(d);
}

/* Issue 15, item 5: a caller's name of 150 x "é" (300 bytes) is kept as whole characters
 * (63 of them in 126 bytes), and so is every other text a parser cuts to fit; bytes that
 * are not UTF-8 never come out of a parser, whatever the document claims. */
static void test_text_cut_on_characters(void **state)
{
    struct sbuf b;
    struct dlg_doc *d = malloc(sizeof *d);
    const char *reason = NULL;
    struct merge_source src = {0};
    const struct merge_source *one[] = {&src};
    struct merge_view view;

    sbuf_init(&b);
    sbuf_puts(&b, "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' "
                  "state='full' entity='sip:1001@pbx'><dialog id='a' direction='recipient'>"
                  "<state>early</state><remote><identity display='");
    for (int i = 0; i < 150; i++)
        sbuf_puts(&b, "\xc3\xa9");
    sbuf_puts(&b, "'>sip:");
    for (int i = 0; i < 100; i++)
        sbuf_puts(&b, "\xe2\x82\xac"); /* € x 100: a 304-byte URI */
    sbuf_puts(&b, "@pbx</identity></remote></dialog></dialog-info>");
    assert_int_equal(dlginfo_parse(b.data, b.len, MAX, d, &reason), 0);
    assert_int_equal(strlen(d->dialogs[0].remote_name), 126);
    assert_true(str_utf8_valid(d->dialogs[0].remote_name, 126));
    assert_int_equal(strlen(d->dialogs[0].remote_uri), 127); /* "sip:" + 41 x € */
    assert_true(str_utf8_valid(d->dialogs[0].remote_uri, strlen(d->dialogs[0].remote_uri)));
    /* Name and URI do not fit in a record together: the store gets the whole name. */
    assert_int_equal(merge_apply(&src, d), MERGE_APPLIED);
    merge_view(one, 1, &view);
    assert_string_equal(view.remote, d->dialogs[0].remote_name);
    merge_source_clear(&src);
    sbuf_free(&b);

    /* A document whose bytes are not the UTF-8 it claims (a cut character, 0xff, a
     * surrogate) is refused: libxml2 checks the encoding, and the parsers hand on only
     * what it decoded. */
    {
        static const char bad[] =
            "<?xml version='1.0' encoding='UTF-8'?><dialog-info xmlns='urn:ietf:params:xml:"
            "ns:dialog-info' version='1' state='full' entity='sip:1@b'><dialog id='a' "
            "direction='recipient'><state>early</state><remote><identity display='\xc3("
            "\xff'>sip:\xed\xa0\x80@b</identity></remote></dialog></dialog-info>";
        assert_int_equal(dlginfo_parse(bad, sizeof bad - 1, MAX, d, &reason), -1);
        assert_string_equal(reason, "not well-formed");
    }
    free(d);
}

/* Issue 15, item 12: the entity a body names against the AOR subscribed to. The AORs and
 * entities are what the fixtures and the Kamailio tests show real PBXes send. */
static void test_entity_matches_subscription(void **state)
{
    static const struct {
        const char *entity, *aor;
        bool same;
    } cases[] = {
        /* Asterisk names itself by its domain; we subscribed at its address. */
        {"sip:1001@pbx.example.com", "sip:1001@127.0.0.1:5060", true},
        /* Kamailio: the presentity, without the port. */
        {"sip:alice@127.0.0.1", "sip:alice@127.0.0.1:5060;transport=tcp", true},
        {"sips:1001@pbx", "sip:1001@pbx", true},
        {"pres:1001@pbx.example.com", "sip:1001@pbx", true},           /* PIDF */
        {"sip:%31001@pbx", "sip:1001@pbx", true},                       /* %31 = '1' */
        {"sip:+15550100;phone-context=pbx@pbx;user=phone", "sip:+15550100@pbx", true},
        {"SIP:1001@PBX", "sip:1001@pbx", true},                         /* scheme, host */
        /* Another user: refused. */
        {"sip:1002@pbx.example.com", "sip:1001@127.0.0.1:5060", false},
        {"sip:Alice@127.0.0.1", "sip:alice@127.0.0.1", false}, /* the user part is exact */
        {"sip:10011@pbx", "sip:1001@pbx", false},
        {"sip:pbx.example.com", "sip:1001@pbx", false},                 /* no user */
        {"tel:+15550100", "sip:+15550100@pbx", false},
        {"sip:%zz@pbx", "sip:1001@pbx", false},                          /* bad escape */
        {"sip:1001%00@pbx", "sip:1001@pbx", false},                      /* NUL */
        /* An AOR without a user part leaves nothing to compare. */
        {"sip:1002@pbx", "sip:pbx.example.com", true},
    };
    char user[8];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (sipuri_same_user(cases[i].entity, cases[i].aor) != cases[i].same)
            fail_msg("%s vs %s: expected %s", cases[i].entity, cases[i].aor,
                     cases[i].same ? "the same user" : "another user");
    }
    assert_int_equal(sipuri_user("sip:1234567@x", user, sizeof user), 0);
    assert_int_equal(sipuri_user("sip:12345678@x", user, sizeof user), -1); /* too long */
    assert_int_equal(sipuri_user("sip:u:secret@x", user, sizeof user), 0);
    assert_string_equal(user, "u");
    assert_int_equal(sipuri_user("sip:@x", user, sizeof user), -1);
}

static void test_pidf_invalid(void **state)
{
    static const char *const bad[] = {
        "<presence xmlns='urn:ietf:params:xml:ns:pidf'/>",
        "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='e'><tuple id='1'><status>"
        "<basic>maybe</basic></status></tuple></presence>",
        "<presence xmlns='urn:example' entity='e'/>",
    };
    struct pidf_doc p;

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *reason = NULL;
        assert_int_equal(pidf_parse(bad[i], strlen(bad[i]), MAX, &p, &reason), -1);
        assert_non_null(reason);
    }
}

static void test_rlmi_invalid(void **state)
{
    static const char body[] = "--b\r\nContent-Type: application/rlmi+xml\r\n\r\n"
                               "<list xmlns='urn:ietf:params:xml:ns:rlmi' uri='sip:l@x' "
                               "version='1' fullState='true'>"
                               "<resource uri='sip:1@x'><instance id='i' state='active' "
                               "cid='missing@x'/></resource></list>\r\n--b--\r\n";
    struct rlmi_doc doc;
    const char *reason = NULL;

    assert_int_equal(rlmi_parse("application/dialog-info+xml", body, sizeof body - 1, MAX, &doc,
                                &reason),
                     -1);
    assert_string_equal(reason, "not multipart/related");
    assert_int_equal(rlmi_parse("multipart/related", body, sizeof body - 1, MAX, &doc, &reason),
                     -1);
    assert_string_equal(reason, "missing or invalid boundary");
    assert_int_equal(rlmi_parse("multipart/related;boundary=b", body, sizeof body - 1, MAX, &doc,
                                &reason),
                     -1);
    assert_string_equal(reason, "instance cid names no body part");
    assert_int_equal(rlmi_parse("multipart/related;boundary=b", body, 40, MAX, &doc, &reason),
                     -1);
    assert_string_equal(reason, "multipart body truncated");
}

/* Body parts found by Content-ID whatever their order (the root named by start= last, the
 * resources' parts in reverse), the first of two parts with one id winning; ids of the
 * same length differing in one byte, and an id that is a prefix of another, kept apart. */
static void test_rlmi_cid_lookup(void **state)
{
    static const char body[] =
        "--b\r\nContent-Type: application/dialog-info+xml\r\nContent-ID: <p2@x>\r\n\r\n"
        "TWO\r\n"
        "--b\r\nContent-Type: application/dialog-info+xml\r\nContent-ID: <p1@x>\r\n\r\n"
        "ONE\r\n"
        "--b\r\nContent-Type: application/dialog-info+xml\r\nContent-ID: <p1@x>\r\n\r\n"
        "DUP\r\n"
        "--b\r\nContent-Type: application/dialog-info+xml\r\nContent-ID: <p1@xy>\r\n\r\n"
        "LONG\r\n"
        "--b\r\nContent-Type: application/rlmi+xml\r\nContent-ID: <root@x>\r\n\r\n"
        "<list xmlns='urn:ietf:params:xml:ns:rlmi' uri='sip:l@x' version='1' fullState='true'>"
        "<resource uri='sip:1@x'><instance id='a' state='active' cid='p1@x'/></resource>"
        "<resource uri='sip:2@x'><instance id='b' state='active' cid='p2@x'/></resource>"
        "<resource uri='sip:3@x'><instance id='c' state='active' cid='p1@xy'/></resource>"
        "</list>\r\n--b--\r\n";
    static const char *const want[] = {"ONE", "TWO", "LONG"};
    struct rlmi_doc doc;
    const char *reason = NULL;

    (void)state;
    assert_int_equal(rlmi_parse("multipart/related;type=\"application/rlmi+xml\";"
                                "start=\"<root@x>\";boundary=b",
                                body, sizeof body - 1, MAX, &doc, &reason),
                     0);
    assert_int_equal(doc.nres, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_non_null(doc.res[i].body);
        assert_int_equal(doc.res[i].body_len, strlen(want[i]));
        assert_memory_equal(doc.res[i].body, want[i], strlen(want[i]));
    }
    rlmi_doc_free(&doc);
}

/* Content-Type values as PBXes write them: case, spaces, quoted and unquoted parameters. */
static void test_mime(void **state)
{
    static const struct {
        const char *ctype, *media; /* media NULL: no media type */
    } types[] = {
        {"application/dialog-info+xml", "application/dialog-info+xml"},
        {"Application/Dialog-Info+XML; charset=UTF-8", "application/dialog-info+xml"},
        {"  multipart/related;type=\"application/rlmi+xml\"", "multipart/related"},
        {"text/plain ;x=1", "text/plain"},
        {"", NULL},
        {"   ", NULL},
        {";boundary=x", NULL},
    };
    static const struct {
        const char *ctype, *name, *value; /* value NULL: not found or invalid */
    } params[] = {
        {"multipart/related;boundary=b1;start=\"<r@x>\"", "boundary", "b1"},
        {"multipart/related;boundary=b1;start=\"<r@x>\"", "start", "<r@x>"},
        {"multipart/related; BOUNDARY = \"a b\" ", "boundary", "a b"},
        {"multipart/related;boundary=", "boundary", NULL},
        {"multipart/related;boundary=\"open", "boundary", NULL},
        {"multipart/related;type=x", "boundary", NULL},
        {"multipart/related", "boundary", NULL},
    };
    char out[96], small[4];

    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int rc = mime_media_type(types[i].ctype, strlen(types[i].ctype), out, sizeof out);
        if (!types[i].media) {
            assert_int_equal(rc, -1);
            assert_false(mime_is(types[i].ctype, strlen(types[i].ctype), ""));
            continue;
        }
        assert_int_equal(rc, 0);
        assert_string_equal(out, types[i].media);
        assert_true(mime_is(types[i].ctype, strlen(types[i].ctype), types[i].media));
        assert_false(mime_is(types[i].ctype, strlen(types[i].ctype), "application/pidf+xml"));
    }
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++) {
        int rc = mime_param(params[i].ctype, params[i].name, out, sizeof out);
        if (!params[i].value) {
            assert_int_equal(rc, -1);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_string_equal(out, params[i].value);
    }
    /* Too long for the caller's buffer: refused, never truncated. */
    assert_int_equal(mime_media_type("text/plain", 10, small, sizeof small), -1);
    assert_int_equal(mime_param("a/b;boundary=abcd", "boundary", small, sizeof small), -1);
    /* No Content-Type at all is no media type; the length bounds the value. */
    assert_false(mime_is(NULL, 0, "application/pidf+xml"));
    assert_true(mime_is("application/pidf+xmlGARBAGE", 20, "application/pidf+xml"));
}

/* Each parser checks its root element the one way (xmlsafe_root): another document type is
 * named as such, the right element in another namespace is "wrong namespace". */
static void test_root_check(void **state)
{
    static const struct {
        char parser; /* d: dialog-info, p: PIDF, r: reginfo */
        const char *xml, *reason;
    } cases[] = {
        {'d', "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='e'/>",
         "not a dialog-info document"},
        {'d', "<dialog-info xmlns='urn:x' version='1' state='full'/>", "wrong namespace"},
        {'d', "<dialog-info version='1' state='full'/>", "wrong namespace"},
        {'p', "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='1' "
              "state='full'/>",
         "not a presence document"},
        {'p', "<presence xmlns='urn:example' entity='e'/>", "wrong namespace"},
        {'p', "<p:presence xmlns:p='urn:ietf:params:xml:ns:pidf:rpid' entity='e'/>",
         "wrong namespace"},
        {'r', "<registration xmlns='urn:ietf:params:xml:ns:reginfo'/>",
         "not a reginfo document"},
        {'r', "<reginfo xmlns='urn:ietf:params:xml:ns:pidf' version='0' state='full'/>",
         "wrong namespace"},
    };
    struct dlg_doc *d = malloc(sizeof *d);
    struct pidf_doc p;
    struct reg_doc r;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *xml = cases[i].xml, *reason = NULL;
        int rc = cases[i].parser == 'd'   ? dlginfo_parse(xml, strlen(xml), MAX, d, &reason)
                 : cases[i].parser == 'p' ? pidf_parse(xml, strlen(xml), MAX, &p, &reason)
                                          : reginfo_parse(xml, strlen(xml), MAX, &r, &reason);
        assert_int_equal(rc, -1);
        assert_string_equal(reason, cases[i].reason);
    }
    /* A prefixed root in the right namespace is the document. */
    {
        static const char ok[] = "<r:reginfo xmlns:r='urn:ietf:params:xml:ns:reginfo' "
                                 "version='0' state='full'/>";
        const char *reason = NULL;
        assert_int_equal(reginfo_parse(ok, sizeof ok - 1, MAX, &r, &reason), 0);
    }
    free(d);
}

/* What a reginfo document says of its one AOR, given what was known before. */
static void test_reg_doc_reach(void **state)
{
    static const char head[] = "<reginfo xmlns='urn:ietf:params:xml:ns:reginfo' version='1' ";
    static const struct {
        const char *rest;          /* after head */
        enum phone_reach prev, want;
    } cases[] = {
        /* One registration: its state decides, whatever was known. */
        {"state='full'><registration aor='sip:a@x' id='1' state='active'/></reginfo>",
         REACH_OFFLINE, REACH_ONLINE},
        {"state='partial'><registration aor='sip:a@x' id='1' state='terminated'/></reginfo>",
         REACH_ONLINE, REACH_OFFLINE},
        {"state='full'><registration aor='sip:a@x' id='1' state='init'/></reginfo>",
         REACH_ONLINE, REACH_OFFLINE},
        /* Aliases listed with it: one online is enough. */
        {"state='full'><registration aor='sip:a@x' id='1' state='terminated'/>"
         "<registration aor='sip:alias@x' id='2' state='active'/></reginfo>",
         REACH_UNKNOWN, REACH_ONLINE},
        {"state='full'><registration aor='sip:a@x' id='1' state='terminated'/>"
         "<registration aor='sip:alias@x' id='2' state='init'/></reginfo>",
         REACH_ONLINE, REACH_OFFLINE},
        /* None listed: full state means nothing is bound; a partial one changes nothing. */
        {"state='full'/>", REACH_ONLINE, REACH_OFFLINE},
        {"state='partial'/>", REACH_ONLINE, REACH_ONLINE},
        {"state='partial'/>", REACH_UNKNOWN, REACH_UNKNOWN},
    };
    struct reg_doc r;
    char xml[512];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *reason = NULL;
        int n = snprintf(xml, sizeof xml, "%s%s", head, cases[i].rest);
        assert_int_equal(reginfo_parse(xml, (size_t)n, MAX, &r, &reason), 0);
        if (reg_doc_reach(&r, cases[i].prev) != cases[i].want)
            fail_msg("case %zu: %s, expected %s", i,
                     phone_reach_name(reg_doc_reach(&r, cases[i].prev)),
                     phone_reach_name(cases[i].want));
    }
}

/* Every reason a parser gives maps to one of the declared causes, and the causes are
 * label values (no spaces). */
static void test_bodyerr_causes(void **state)
{
    static const struct {
        const char *reason, *cause;
    } cases[] = {
        {"empty", "empty"},
        {"too large", "too_large"},
        {"DTD not allowed", "dtd_not_allowed"},
        {"not well-formed", "not_well_formed"},
        {"not a dialog-info document", "wrong_document"},
        {"wrong namespace", "wrong_document"},
        {"root part is not application/rlmi+xml", "wrong_document"},
        {"unexpected content type", "content_type"},
        {"not multipart/related", "content_type"},
        {"missing or invalid boundary", "bad_multipart"},
        {"body part without Content-Type", "bad_multipart"},
        {"malformed part headers", "bad_multipart"},
        {"too many parts", "too_many"},
        {"too many dialogs", "too_many"},
        {"missing or invalid list version", "bad_version"},
        {"unknown dialog state", "invalid_content"},
        {"dialog id too long", "invalid_content"},
        {BODYERR_WRONG_ENTITY, "wrong_entity"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(bodyerr_cause(cases[i].reason), cases[i].cause);
    for (const char *const *c = bodyerr_causes; *c; c++)
        assert_null(strchr(*c, ' '));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_table),
        cmocka_unit_test(test_every_fixture_listed),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_too_many_dialogs),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_invalid_documents),
        cmocka_unit_test(test_unknown_elements_ignored),
        cmocka_unit_test(test_text_cut_on_characters),
        cmocka_unit_test(test_entity_matches_subscription),
        cmocka_unit_test(test_pidf_invalid),
        cmocka_unit_test(test_rlmi_invalid),
        cmocka_unit_test(test_rlmi_cid_lookup),
        cmocka_unit_test(test_mime),
        cmocka_unit_test(test_bodyerr_causes),
        cmocka_unit_test(test_root_check),
        cmocka_unit_test(test_reg_doc_reach),
    };

    xmlsafe_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
