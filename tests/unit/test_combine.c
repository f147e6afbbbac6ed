/* sipbridge/combine.c: the per-user combining rules, driven by tests/data/combine.txt (one
 * user's sources per line and the state they must combine to; the file says how to read
 * it). The dialogs go in through merge_apply, as bridge.c puts them there. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>

#include "combine.h"
#include "dialoginfo.h"
#include "merge.h"
#include "testutil.h"

#define MAX_SOURCES 32

struct want {
    char state[16], dir[16], reach[16], remote[256];
    int dnd;
};

/* Fills s's dialogs from "ACT[/DIR][=PARTY],..." as one full-state document. */
static void dialogs_from(struct combine_source *s, char *spec, int line)
{
    struct dlg_doc *doc = calloc(1, sizeof *doc);
    char *save = NULL;

    doc->version = 1;
    doc->full = true;
    for (char *item = strtok_r(spec, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        struct dlg_entry *e = &doc->dialogs[doc->ndialogs];
        char *party = strchr(item, '='), *dir = strchr(item, '/');
        enum call_activity want = ACT_IDLE;

        assert_true(doc->ndialogs < DLG_MAX_DIALOGS);
        snprintf(e->id, sizeof e->id, "d%d", doc->ndialogs);
        if (party) {
            *party++ = '\0';
            snprintf(e->remote_uri, sizeof e->remote_uri, "%s", party);
        }
        if (dir) {
            *dir++ = '\0';
            if (strcmp(dir, "in") == 0)
                e->dir = DIR_INCOMING;
            else if (strcmp(dir, "out") == 0)
                e->dir = DIR_OUTGOING;
            else
                fail_msg("combine.txt:%d: direction %s", line, dir);
        }
        if (strcmp(item, "on_call") == 0) {
            e->state = DLGS_CONFIRMED;
            want = ACT_ON_CALL;
        } else if (strcmp(item, "on_hold") == 0) {
            e->state = DLGS_CONFIRMED;
            e->held = true;
            want = ACT_ON_HOLD;
        } else if (strcmp(item, "ringing") == 0) {
            e->state = DLGS_EARLY;
            want = ACT_RINGING;
        } else if (strcmp(item, "dialing") == 0) {
            e->state = DLGS_TRYING;
            want = ACT_DIALING;
        } else {
            fail_msg("combine.txt:%d: dialog activity %s", line, item);
        }
        /* A direction that contradicts the activity is a mistake in the file. */
        if (dlg_entry_activity(e) != want)
            fail_msg("combine.txt:%d: %s with that direction is %s", line, item,
                     call_activity_name(dlg_entry_activity(e)));
        doc->ndialogs++;
    }
    assert_int_equal(merge_apply(&s->dlg, doc), MERGE_APPLIED);
    free(doc);
}

/* One "N:package:said" token into s. */
static void source_from(struct combine_source *s, char *tok, int line)
{
    char *pkg = strchr(tok, ':'), *said = NULL;
    int phone = atoi(tok);

    if (!pkg || !(said = strchr(pkg + 1, ':')) || phone < 1)
        fail_msg("combine.txt:%d: source %s is not PHONE:PACKAGE:SAID", line, tok);
    *pkg++ = '\0';
    *said++ = '\0';
    memset(s, 0, sizeof *s);
    s->phone = phone - 1;
    s->heard = strcmp(said, "-") != 0;
    if (strcmp(pkg, "dialog") == 0) {
        s->pkg = COMBINE_DIALOG;
        if (s->heard && strcmp(said, "idle") != 0)
            dialogs_from(s, said, line);
    } else if (strcmp(pkg, "presence") == 0) {
        char *save = NULL, *basic = strtok_r(said, "+", &save);
        s->pkg = COMBINE_PRESENCE;
        if (!s->heard)
            return;
        if (strcmp(basic, "open") == 0)
            s->reach = REACH_ONLINE;
        else if (strcmp(basic, "closed") == 0)
            s->reach = REACH_OFFLINE;
        else if (strcmp(basic, "none") != 0)
            fail_msg("combine.txt:%d: basic status %s", line, basic);
        for (char *f = strtok_r(NULL, "+", &save); f; f = strtok_r(NULL, "+", &save)) {
            if (strcmp(f, "dnd") == 0)
                s->dnd = true;
            else if (strcmp(f, "phone") == 0)
                s->on_phone = true;
            else
                fail_msg("combine.txt:%d: presence flag %s", line, f);
        }
    } else if (strcmp(pkg, "reg") == 0) {
        s->pkg = COMBINE_REG;
        if (!s->heard)
            return;
        if (strcmp(said, "online") == 0)
            s->reach = REACH_ONLINE;
        else if (strcmp(said, "offline") == 0)
            s->reach = REACH_OFFLINE;
        else
            fail_msg("combine.txt:%d: registration %s", line, said);
    } else {
        fail_msg("combine.txt:%d: package %s", line, pkg);
    }
}

static void check_line(char *text, int line)
{
    struct combine_source src[MAX_SOURCES];
    const struct combine_source *srcs[MAX_SOURCES];
    struct combine_view view;
    struct want w;
    bool show_remote = false;
    char *bar = strchr(text, '|'), *save = NULL;
    int n = 0;

    if (!bar)
        fail_msg("combine.txt:%d: no '|' between the state and the sources", line);
    *bar = '\0';
    if (sscanf(text, "%15s %15s %15s %d %255s", w.state, w.dir, w.reach, &w.dnd, w.remote) !=
        5)
        fail_msg("combine.txt:%d: expected STATE DIR REACH DND REMOTE", line);
    for (char *tok = strtok_r(bar + 1, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (strcmp(tok, "show_remote") == 0) {
            show_remote = true;
            continue;
        }
        assert_true(n < MAX_SOURCES);
        source_from(&src[n], tok, line);
        srcs[n] = &src[n];
        n++;
    }
    combine_user(srcs, n, show_remote, &view);
    if (strcmp(user_state_name(view.state), w.state) != 0 ||
        strcmp(call_dir_name(view.dir), w.dir) != 0 ||
        strcmp(phone_reach_name(view.reach), w.reach) != 0 || view.dnd != (w.dnd != 0) ||
        strcmp(view.remote ? view.remote : "-", w.remote) != 0)
        fail_msg("combine.txt:%d: got %s %s %s %d %s, expected %s %s %s %d %s", line,
                 user_state_name(view.state), call_dir_name(view.dir),
                 phone_reach_name(view.reach), view.dnd, view.remote ? view.remote : "-",
                 w.state, w.dir, w.reach, w.dnd, w.remote);
    for (int i = 0; i < n; i++)
        combine_forget(&src[i]);
}

static void test_combine_table(void **state)
{
    char *buf = read_data("combine.txt", NULL);
    int line = 0, cases = 0;

    /* strtok_r would skip empty lines and lose the count: walk line by line. */
    for (char *p = buf; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        line++;
        if (p[0] != '#' && p[strspn(p, " \t")] != '\0') {
            check_line(p, line);
            cases++;
        }
        p = nl ? nl + 1 : NULL;
    }
    /* Every rule of combine.h has lines; the file cannot silently empty out. */
    assert_true(cases >= 65);
    free(buf);
}

/* A lost source is back to nothing heard: it no longer makes the user known, nor shows
 * its call, reach or DND. */
static void test_combine_forget(void **state)
{
    char d[] = "on_call/in=sip:bob@pbx";
    struct combine_source dlg = {0}, pres = {0};
    const struct combine_source *srcs[] = {&dlg, &pres};
    struct combine_view view;

    dlg.pkg = COMBINE_DIALOG;
    dlg.heard = true;
    dialogs_from(&dlg, d, 0);
    pres.pkg = COMBINE_PRESENCE;
    pres.heard = true;
    pres.reach = REACH_ONLINE;
    pres.dnd = pres.on_phone = pres.video = true;
    combine_user(srcs, 2, true, &view);
    assert_int_equal(view.state, US_ON_CALL);
    assert_string_equal(view.remote, "sip:bob@pbx");
    assert_true(view.video); /* RFC 5196 servcaps: the phone contact advertises video */

    combine_forget(&pres);
    combine_user(srcs, 2, true, &view);
    assert_int_equal(view.state, US_ON_CALL);
    assert_int_equal(view.reach, REACH_UNKNOWN);
    assert_false(view.dnd);
    assert_false(view.video);

    combine_forget(&dlg);
    assert_int_equal(dlg.dlg.ndialogs, 0);
    assert_int_equal(dlg.pkg, COMBINE_DIALOG); /* still subscribed */
    combine_user(srcs, 2, true, &view);
    assert_int_equal(view.state, US_UNKNOWN);
    assert_null(view.remote);
}

/* What decided the state (offhookctl user's "why"): the source and dialog that won, the
 * one the rules pick, never another. */
static void test_combine_says_what_decided(void **state)
{
    char d1[] = "ringing/in,on_hold/out", d2[] = "on_call/in";
    struct combine_source a = {0}, b = {0}, pres = {0};
    const struct combine_source *srcs[] = {&a, &pres, &b};
    struct combine_view view;

    a.pkg = b.pkg = COMBINE_DIALOG;
    a.heard = b.heard = true;
    b.phone = 1;
    dialogs_from(&a, d1, 0);
    pres.pkg = COMBINE_PRESENCE;
    pres.heard = true;
    pres.reach = REACH_ONLINE;
    combine_user(srcs, 3, false, &view);
    /* The second phone's call beats the first phone's held call and ringing. */
    dialogs_from(&b, d2, 0);
    combine_user(srcs, 3, false, &view);
    assert_int_equal(view.state, US_ON_CALL);
    assert_int_equal(view.source, 2);
    assert_non_null(view.dialog);
    assert_string_equal(view.dialog->id, "d0");
    assert_ptr_equal(view.dialog, &b.dlg.dialogs[0]);
    /* Without it, the held call on the first phone decides. */
    combine_forget(&b);
    combine_user(srcs, 3, false, &view);
    assert_int_equal(view.state, US_ON_HOLD);
    assert_int_equal(view.source, 0);
    assert_string_equal(view.dialog->id, "d1");
    /* No call: nothing decided by a dialog. */
    combine_forget(&a);
    combine_user(srcs, 3, false, &view);
    assert_int_equal(view.state, US_IDLE);
    assert_int_equal(view.source, -1);
    assert_null(view.dialog);
    /* Without dialog events, PIDF's on-the-phone decides, with no dialog. */
    pres.on_phone = true;
    combine_user((const struct combine_source *const[]){&pres}, 1, false, &view);
    assert_int_equal(view.state, US_ON_CALL);
    assert_int_equal(view.source, 0);
    assert_null(view.dialog);
    combine_forget(&pres);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_combine_table),
        cmocka_unit_test(test_combine_forget),
        cmocka_unit_test(test_combine_says_what_decided),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
