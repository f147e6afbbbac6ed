/* The per-user merge and docver.h's version rule: versions, partial updates, several
 * dialogs and several phones. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "dialoginfo.h"
#include "docver.h"
#include "merge.h"
#include "testutil.h"
#include "xmlsafe.h"

static struct dlg_doc *parse_file(const char *rel)
{
    size_t len;
    char *body = read_data(rel, &len);
    struct dlg_doc *d = malloc(sizeof *d);
    const char *reason = NULL;

    if (dlginfo_parse(body, len, 65536, d, &reason) != 0)
        fail_msg("%s: %s", rel, reason);
    free(body);
    return d;
}

static struct dlg_doc *parse_str(const char *xml)
{
    struct dlg_doc *d = malloc(sizeof *d);
    const char *reason = NULL;

    if (dlginfo_parse(xml, strlen(xml), 65536, d, &reason) != 0)
        fail_msg("%s", reason);
    return d;
}

static enum call_activity view1(const struct merge_source *s)
{
    const struct merge_source *srcs[] = {s};
    struct merge_view v;

    merge_view(srcs, 1, &v);
    return v.act;
}

/* A version rewritten, as a PBX increments it per NOTIFY of one subscription. */
static struct dlg_doc *with_version(struct dlg_doc *d, uint32_t v)
{
    d->version = v;
    return d;
}

static void apply_free(struct merge_source *s, struct dlg_doc *d, enum merge_result want)
{
    assert_int_equal(merge_apply(s, d), want);
    free(d);
}

/* The scenario: a held call and an active call; the first one ends (partial
 * update, version 13 after 12): the user is still on the phone. */
static void test_partial_end_of_one_call_keeps_other(void **state)
{
    struct merge_source s = {0};

    apply_free(&s, parse_file("dialog-info/two-dialogs-one-held.xml"), MERGE_APPLIED);
    assert_int_equal(view1(&s), ACT_ON_CALL); /* held + active = on_call */
    assert_int_equal(s.ndialogs, 2);
    apply_free(&s, parse_file("dialog-info/partial-terminated.xml"), MERGE_APPLIED);
    assert_int_equal(s.ndialogs, 1);
    assert_string_equal(s.dialogs[0].id, "d2");
    assert_int_equal(view1(&s), ACT_ON_CALL);
    merge_source_clear(&s);
}

/* The other order: the active call ends, the held one remains: on hold, not idle. */
static void test_active_ends_held_remains(void **state)
{
    struct merge_source s = {0};

    apply_free(&s, parse_file("dialog-info/two-dialogs-one-held.xml"), MERGE_APPLIED);
    apply_free(&s,
               parse_str("<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='13' "
                         "state='partial' entity='sip:1001@pbx.example.com'><dialog id='d2'>"
                         "<state>terminated</state></dialog></dialog-info>"),
               MERGE_APPLIED);
    assert_int_equal(view1(&s), ACT_ON_HOLD);
    merge_source_clear(&s);
}

static void test_asterisk_call_sequence(void **state)
{
    static const struct {
        const char *file;
        enum call_activity act;
    } seq[] = {
        {"dialog-info/asterisk-idle.xml", ACT_IDLE},
        {"dialog-info/asterisk-ringing.xml", ACT_RINGING},
        {"dialog-info/asterisk-inuse.xml", ACT_ON_CALL},
        {"dialog-info/asterisk-onhold.xml", ACT_ON_HOLD},
        {"dialog-info/asterisk-idle.xml", ACT_IDLE},
    };
    struct merge_source s = {0};

    for (uint32_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        apply_free(&s, with_version(parse_file(seq[i].file), i), MERGE_APPLIED);
        assert_int_equal(view1(&s), seq[i].act);
    }
    merge_source_clear(&s);
}

/* Asterisk names the caller only while ringing; after answering the same dialog id keeps
 * the name. An anonymous caller is never named. */
static void test_identity_carries_over(void **state)
{
    struct merge_source s = {0};
    const struct merge_source *srcs[] = {&s};
    struct merge_view v;

    apply_free(&s, parse_file("dialog-info/asterisk-ringing.xml"), MERGE_APPLIED);
    apply_free(&s, parse_file("dialog-info/asterisk-inuse.xml"), MERGE_APPLIED);
    merge_view(srcs, 1, &v);
    assert_int_equal(v.act, ACT_ON_CALL);
    assert_int_equal(v.dir, DIR_INCOMING);
    assert_string_equal(v.remote, "Bob Smith <sip:1002@pbx.example.com>");
    merge_source_clear(&s);

    apply_free(&s, parse_file("dialog-info/asterisk-anonymous-caller.xml"), MERGE_APPLIED);
    merge_view(srcs, 1, &v);
    assert_int_equal(v.act, ACT_RINGING);
    assert_null(v.remote);
    merge_source_clear(&s);
}

/* Issue 15, item 3: full state is the notifier's whole truth whatever its version, so a
 * version 4294967295 (a forger's, or a buggy PBX's) cannot make every later document
 * stale; partial updates that are not newer are ignored, and again means a new
 * subscription. */
static void test_versions(void **state)
{
    struct merge_source s = {0};

    apply_free(&s, parse_file("dialog-info/asterisk-onhold.xml"), MERGE_APPLIED); /* v3 */
    assert_int_equal(s.anomaly, DOCVER_NORMAL);
    apply_free(&s, parse_file("dialog-info/asterisk-onhold.xml"), MERGE_APPLIED); /* v3 again */
    assert_int_equal(s.anomaly, DOCVER_NORMAL); /* a repeat, not a rewind */
    apply_free(&s, with_version(parse_file("dialog-info/asterisk-inuse.xml"), 4294967295u),
               MERGE_APPLIED);
    assert_int_equal(s.anomaly, DOCVER_JUMPED);
    assert_int_equal(view1(&s), ACT_ON_CALL);
    /* The phone hangs up: the PBX's next document, version 4, still counts. */
    apply_free(&s, with_version(parse_file("dialog-info/asterisk-idle.xml"), 4), MERGE_APPLIED);
    assert_int_equal(s.anomaly, DOCVER_REWOUND);
    assert_int_equal(view1(&s), ACT_IDLE);
    assert_int_equal(s.ver.last, 4);
    merge_source_clear(&s);

    /* Partial updates: the stale one is ignored, the second in a row asks for a new
     * subscription, and a good one in between starts the count again. */
    apply_free(&s, parse_file("dialog-info/two-dialogs-one-held.xml"), MERGE_APPLIED); /* 12 */
    apply_free(&s, with_version(parse_file("dialog-info/partial-terminated.xml"), 12),
               MERGE_STALE);
    apply_free(&s, with_version(parse_file("dialog-info/partial-terminated.xml"), 13),
               MERGE_APPLIED);
    apply_free(&s, with_version(parse_file("dialog-info/partial-terminated.xml"), 11),
               MERGE_STALE);
    apply_free(&s, with_version(parse_file("dialog-info/partial-terminated.xml"), 13),
               MERGE_RESYNC);
    assert_int_equal(s.ver.last, 13);
    /* A new subscription starts counting again: version 0 is accepted. */
    {
        enum call_activity before = view1(&s);
        merge_source_restart(&s);
        assert_int_equal(view1(&s), before); /* no flap before the first document */
    }
    apply_free(&s, parse_file("dialog-info/asterisk-idle.xml"), MERGE_APPLIED);
    assert_int_equal(view1(&s), ACT_IDLE);
    merge_source_clear(&s);
}

/* docver.h's rule as a table: (version, full) in, (verdict, anomaly) out, in order. */
static void test_docver_table(void **state)
{
    static const struct {
        const char *what;
        struct {
            uint32_t version;
            bool full;
            enum docver_verdict verdict;
            enum docver_anomaly anomaly;
        } steps[8];
        int n;
    } cases[] = {
        {"in sequence",
         {{0, true, DOCVER_APPLY, DOCVER_NORMAL}, {1, false, DOCVER_APPLY, DOCVER_NORMAL},
          {2, false, DOCVER_APPLY, DOCVER_NORMAL}, {3, true, DOCVER_APPLY, DOCVER_NORMAL}},
         4},
        {"a partial first, or after a gap, asks for full state",
         {{5, false, DOCVER_GAP, DOCVER_NORMAL}, {6, false, DOCVER_GAP, DOCVER_NORMAL},
          {7, true, DOCVER_APPLY, DOCVER_NORMAL}, {9, false, DOCVER_GAP, DOCVER_NORMAL},
          {10, false, DOCVER_APPLY, DOCVER_NORMAL}},
         5},
        {"the issue's version: full state after it still applies",
         {{1, true, DOCVER_APPLY, DOCVER_NORMAL},
          {4294967295u, true, DOCVER_APPLY, DOCVER_JUMPED},
          {2, false, DOCVER_STALE, DOCVER_NORMAL}, {3, false, DOCVER_RESYNC, DOCVER_NORMAL},
          {4, true, DOCVER_APPLY, DOCVER_REWOUND}, {5, false, DOCVER_APPLY, DOCVER_NORMAL}},
         6},
        {"a jump of exactly DOCVER_JUMP_MAX is plausible, one more is not",
         {{0, true, DOCVER_APPLY, DOCVER_NORMAL},
          {DOCVER_JUMP_MAX, true, DOCVER_APPLY, DOCVER_NORMAL},
          {2 * DOCVER_JUMP_MAX + 1, false, DOCVER_GAP, DOCVER_JUMPED}},
         3},
        {"Kamailio's default dlginfo_increase_version 0: full state, version 0 each time",
         {{0, true, DOCVER_APPLY, DOCVER_NORMAL}, {0, true, DOCVER_APPLY, DOCVER_NORMAL},
          {0, true, DOCVER_APPLY, DOCVER_NORMAL}},
         3},
        {"stale, then a good one, then stale again: the run starts over",
         {{3, true, DOCVER_APPLY, DOCVER_NORMAL}, {3, false, DOCVER_STALE, DOCVER_NORMAL},
          {4, false, DOCVER_APPLY, DOCVER_NORMAL}, {2, false, DOCVER_STALE, DOCVER_NORMAL},
          {1, false, DOCVER_RESYNC, DOCVER_NORMAL}, {0, false, DOCVER_RESYNC, DOCVER_NORMAL}},
         6},
    };

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct docver v = {0};
        for (int i = 0; i < cases[c].n; i++) {
            enum docver_anomaly a = DOCVER_REWOUND;
            enum docver_verdict got =
                docver_check(&v, cases[c].steps[i].version, cases[c].steps[i].full, &a);
            if (got != cases[c].steps[i].verdict || a != cases[c].steps[i].anomaly)
                fail_msg("%s: step %d: verdict %d anomaly %s, expected %d %s", cases[c].what,
                         i, got, docver_anomaly_name(a), cases[c].steps[i].verdict,
                         docver_anomaly_name(cases[c].steps[i].anomaly));
        }
        docver_restart(&v);
        assert_int_equal(docver_check(&v, 0, true, NULL), DOCVER_APPLY);
    }
}

static void test_partial_gap_reported(void **state)
{
    struct merge_source s = {0};

    /* A partial without a full state before it cannot be trusted alone. */
    apply_free(&s, parse_file("dialog-info/partial-terminated.xml"), MERGE_GAP);
    merge_source_clear(&s);
    apply_free(&s, with_version(parse_file("dialog-info/two-dialogs-one-held.xml"), 10),
               MERGE_APPLIED);
    /* 13 after 10: two updates were missed. Applied, but full state is asked for. */
    apply_free(&s, parse_file("dialog-info/partial-terminated.xml"), MERGE_GAP);
    assert_int_equal(view1(&s), ACT_ON_CALL);
    merge_source_clear(&s);
}

/* Two phones: the desk phone's call ending never clears the softphone's. */
static void test_several_phones(void **state)
{
    struct merge_source desk = {0}, soft = {0};
    const struct merge_source *srcs[] = {&desk, &soft};
    struct merge_view v;

    apply_free(&desk, parse_file("dialog-info/asterisk-inuse.xml"), MERGE_APPLIED);
    apply_free(&soft, parse_file("dialog-info/asterisk-ringing.xml"), MERGE_APPLIED);
    merge_view(srcs, 2, &v);
    assert_int_equal(v.act, ACT_ON_CALL);
    apply_free(&desk, with_version(parse_file("dialog-info/asterisk-idle.xml"), 5),
               MERGE_APPLIED);
    merge_view(srcs, 2, &v);
    assert_int_equal(v.act, ACT_RINGING);
    assert_int_equal(v.dir, DIR_INCOMING);
    apply_free(&soft, with_version(parse_file("dialog-info/asterisk-inuse.xml"), 6),
               MERGE_APPLIED);
    merge_view(srcs, 2, &v);
    assert_int_equal(v.act, ACT_ON_CALL);
    merge_source_clear(&desk);
    merge_source_clear(&soft);
}

/* A PBX that only ever sends partial additions cannot grow a source without bound; the
 * update that would is reported (the bridge then asks for full state), and full state
 * replaces the set. */
static void test_partial_growth_capped(void **state)
{
    struct merge_source s = {0};
    char xml[512];

    apply_free(&s, parse_file("dialog-info/empty-full.xml"), MERGE_APPLIED); /* v1 */
    for (int i = 0; i < MERGE_MAX_DIALOGS + 10; i++) {
        snprintf(xml, sizeof xml,
                 "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='%d' "
                 "state='partial' entity='e'><dialog id='x%d'><state>confirmed</state>"
                 "</dialog></dialog-info>",
                 i + 2, i);
        apply_free(&s, parse_str(xml), i < MERGE_MAX_DIALOGS ? MERGE_APPLIED : MERGE_OVERFLOW);
    }
    assert_int_equal(s.ndialogs, MERGE_MAX_DIALOGS);
    /* An update to a dialog already held still applies at the cap. */
    snprintf(xml, sizeof xml,
             "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='%d' "
             "state='partial' entity='e'><dialog id='x0'><state>terminated</state>"
             "</dialog></dialog-info>",
             MERGE_MAX_DIALOGS + 12);
    apply_free(&s, parse_str(xml), MERGE_APPLIED);
    assert_int_equal(s.ndialogs, MERGE_MAX_DIALOGS - 1);
    /* The full state asked for replaces everything. */
    snprintf(xml, sizeof xml,
             "<dialog-info xmlns='urn:ietf:params:xml:ns:dialog-info' version='%d' "
             "state='full' entity='e'><dialog id='y'><state>confirmed</state>"
             "</dialog></dialog-info>",
             MERGE_MAX_DIALOGS + 13);
    apply_free(&s, parse_str(xml), MERGE_APPLIED);
    assert_int_equal(s.ndialogs, 1);
    merge_source_clear(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_partial_end_of_one_call_keeps_other),
        cmocka_unit_test(test_active_ends_held_remains),
        cmocka_unit_test(test_asterisk_call_sequence),
        cmocka_unit_test(test_identity_carries_over),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_docver_table),
        cmocka_unit_test(test_partial_gap_reported),
        cmocka_unit_test(test_several_phones),
        cmocka_unit_test(test_partial_growth_capped),
    };

    xmlsafe_init();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
