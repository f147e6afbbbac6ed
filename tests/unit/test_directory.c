/* Directory entries into users (common/dirbuild.c), driven by tests/data/directory.txt:
 * the checks, the aggregated report, the cleaning of values, and the last-known copy's
 * encoding; plus the configuration a directory change hands to the daemons
 * (config_copy_keys + config_set_users). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dirbuild.h"
#include "strutil.h"
#include "testutil.h"

static const char base_cfg[] = "[xmpp]\n"
                               "domain = phone.localhost\n"
                               "secret = s3cret\n"
                               "[directory]\n"
                               "source = ldap\n"
                               "base = ou=people,dc=example,dc=com\n"
                               "aor_template = sip:%s@pbx.example.com\n"
                               "[users]\n";

static void load_base(struct offhook_config *cfg)
{
    struct cfg_errors errs = {0};

    memset(cfg, 0, sizeof *cfg);
    if (config_load_buffer("t.conf", base_cfg, strlen(base_cfg), cfg, &errs) != 0) {
        cfg_errors_print(&errs, stderr);
        fail();
    }
    cfg_errors_free(&errs);
}

/* "\n", "\t", "\0", "\xHH" in a data-file value; returns the length. */
static size_t unescape(const char *in, char *out)
{
    size_t n = 0;

    for (const char *p = in; *p; p++) {
        if (*p == '\\' && p[1] == 'n') {
            out[n++] = '\n';
            p++;
        } else if (*p == '\\' && p[1] == 't') {
            out[n++] = '\t';
            p++;
        } else if (*p == '\\' && p[1] == '0') {
            out[n++] = '\0';
            p++;
        } else if (*p == '\\' && p[1] == 'x' && p[2] && p[3]) {
            char hex[3] = {p[2], p[3], '\0'};
            out[n++] = (char)strtol(hex, NULL, 16);
            p += 3;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return n;
}

struct tcase {
    char name[128];
    char template[256];
    bool template_set;
    struct dir_entry entries[16];
    int nentries;
    char users[16][512];
    int nusers;
    char skipped[256];
    bool have_skipped;
    char examples[4][256];
    int nexamples;
};

/* "user JID aors=... contact=... name=... tel=... groups=..." for u. */
static void describe(const struct cfg_user *u, char *out, size_t len)
{
    char aors[512] = "", groups[512] = "";

    for (int i = 0; i < u->naors; i++)
        snprintf(aors + strlen(aors), sizeof aors - strlen(aors), "%s%s", i ? "|" : "",
                 u->aors[i]);
    for (int i = 0; i < u->ngroups; i++)
        snprintf(groups + strlen(groups), sizeof groups - strlen(groups), "%s%s", i ? "|" : "",
                 u->groups[i]);
    snprintf(out, len, "%s aors=%s contact=%s name=%s tel=%s groups=%s", u->jid, aors,
             u->contact, u->name ? u->name : "-", u->tel ? u->tel : "-",
             groups[0] ? groups : "-");
}

static void run_case(struct tcase *t)
{
    struct offhook_config cfg;
    const struct dir_entry *ptrs[16];
    struct dir_report rep;
    struct cfg_user *users;
    size_t n;
    char line[2048], counts[256] = "";

    load_base(&cfg);
    if (t->template_set) {
        free(cfg.dir_aor_template);
        cfg.dir_aor_template = xstrdup(t->template);
    }
    for (int i = 0; i < t->nentries; i++)
        ptrs[i] = &t->entries[i];
    users = dirbuild_users(&cfg, ptrs, (size_t)t->nentries, 0, &n, &rep);
    if ((int)n != t->nusers)
        fail_msg("%s: %zu users, expected %d", t->name, n, t->nusers);
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        describe(&users[i], line, sizeof line);
        for (int k = 0; k < t->nusers; k++)
            found = found || strcmp(t->users[k], line) == 0;
        if (!found)
            fail_msg("%s: unexpected user '%s'", t->name, line);
    }
    for (int i = 0; i < DIR_SKIP__N; i++) {
        if (rep.skipped[i])
            snprintf(counts + strlen(counts), sizeof counts - strlen(counts), "%s%s=%zu",
                     counts[0] ? " " : "", dir_skip_names[i], rep.skipped[i]);
    }
    if (t->have_skipped && strcmp(counts, t->skipped) != 0)
        fail_msg("%s: skipped '%s', expected '%s'", t->name, counts, t->skipped);
    for (int i = 0; i < t->nexamples; i++) {
        bool found = false;
        for (int k = 0; k < rep.nexamples; k++)
            found = found || strstr(rep.examples[k], t->examples[i]);
        if (!found)
            fail_msg("%s: no report example with '%s' (first: '%s')", t->name, t->examples[i],
                     rep.nexamples ? rep.examples[0] : "");
    }
    /* The users round-trip through the last-known copy's encoding unchanged. */
    for (size_t i = 0; i < n; i++) {
        char *enc = dirbuild_encode(&users[i]), again[2048];
        struct dir_entry e = {0};
        const struct dir_entry *one = &e;
        struct cfg_user *back;
        size_t nback;
        struct dir_report r2;

        assert_int_equal(dirbuild_decode(enc, strlen(enc), "redis", &e), 0);
        back = dirbuild_users(&cfg, &one, 1, 0, &nback, &r2);
        assert_int_equal(nback, 1);
        describe(&users[i], line, sizeof line);
        describe(&back[0], again, sizeof again);
        assert_string_equal(line, again);
        config_user_free(&back[0]);
        free(back);
        dir_entry_free(&e);
        free(enc);
    }
    for (size_t i = 0; i < n; i++)
        config_user_free(&users[i]);
    free(users);
    config_free(&cfg);
}

static void test_data_file(void **state)
{
    char *data = read_data("directory.txt", NULL), *save = NULL;
    struct tcase *t = NULL;
    int cases = 0;

    for (char *line = strtok_r(data, "\n", &save);; line = strtok_r(NULL, "\n", &save)) {
        char val[1024];
        size_t vl;
        struct dir_entry *e;

        if (!line || strncmp(line, "case ", 5) == 0) {
            if (t) {
                run_case(t);
                for (int i = 0; i < t->nentries; i++)
                    dir_entry_free(&t->entries[i]);
                free(t);
                cases++;
            }
            if (!line)
                break;
            t = calloc(1, sizeof *t);
            snprintf(t->name, sizeof t->name, "%s", line + 5);
            continue;
        }
        if (line[0] == '#' || !t)
            continue;
        e = t->nentries ? &t->entries[t->nentries - 1] : NULL;
        if (strncmp(line, "template ", 9) == 0) {
            t->template_set = true;
            snprintf(t->template, sizeof t->template, "%s",
                     strcmp(line + 9, "-") == 0 ? "" : line + 9);
        } else if (strncmp(line, "entry ", 6) == 0) {
            t->entries[t->nentries++].id = xstrdup(line + 6);
        } else if (strncmp(line, "user ", 5) == 0) {
            snprintf(t->users[t->nusers++], sizeof t->users[0], "%s", line + 5);
        } else if (strncmp(line, "skipped", 7) == 0) {
            t->have_skipped = true;
            snprintf(t->skipped, sizeof t->skipped, "%s", line[7] ? line + 8 : "");
        } else if (strncmp(line, "example ", 8) == 0) {
            snprintf(t->examples[t->nexamples++], sizeof t->examples[0], "%s", line + 8);
        } else if (e && strncmp(line, "jid ", 4) == 0) {
            vl = unescape(line + 4, val);
            dir_entry_set_jid(e, val, vl);
        } else if (e && strncmp(line, "phone ", 6) == 0) {
            vl = unescape(line + 6, val);
            dir_entry_add_phone(e, val, vl);
        } else if (e && strncmp(line, "name ", 5) == 0) {
            vl = unescape(line + 5, val);
            dir_entry_set_name(e, val, vl);
        } else if (e && strncmp(line, "tel ", 4) == 0) {
            vl = unescape(line + 4, val);
            dir_entry_set_tel(e, val, vl);
        } else if (e && strncmp(line, "group ", 6) == 0) {
            vl = unescape(line + 6, val);
            dir_entry_add_group(e, val, vl);
        } else {
            fail_msg("directory.txt: cannot read '%s'", line);
        }
    }
    assert_true(cases >= 8);
    free(data);
}

/* Values over their limits: a JID or phone leaves the entry out, a name is cut on a
 * character boundary, a long group is dropped; the report counts it. */
static void test_limits(void **state)
{
    struct offhook_config cfg;
    struct dir_entry e1 = {.id = xstrdup("uid=big")}, e2 = {.id = xstrdup("uid=long")};
    const struct dir_entry *ptrs[] = {&e1, &e2};
    char big[DIR_MAX_JID + 10], name[DIR_MAX_NAME + 10];
    struct dir_report rep;
    struct cfg_user *u;
    size_t n;

    load_base(&cfg);
    memset(big, 'a', sizeof big);
    dir_entry_set_jid(&e1, big, sizeof big);
    dir_entry_add_phone(&e1, "1", 1);
    dir_entry_set_jid(&e2, "long@example.com", 16);
    dir_entry_add_phone(&e2, "2", 1);
    /* A 2-byte character straddling the limit is not cut in half. */
    memset(name, 'n', sizeof name);
    memcpy(name + DIR_MAX_NAME - 1, "\xc3\xa9", 2);
    dir_entry_set_name(&e2, name, sizeof name);
    dir_entry_add_group(&e2, big, DIR_MAX_GROUP + 1);
    u = dirbuild_users(&cfg, ptrs, 2, 5, &n, &rep);
    assert_int_equal(n, 1);
    assert_int_equal(strlen(u[0].name), DIR_MAX_NAME - 1);
    assert_int_equal(u[0].ngroups, 0);
    assert_int_equal(rep.skipped[DIR_SKIP_TOO_LARGE], 1);
    assert_int_equal(rep.skipped[DIR_SKIP_OVER_LIMIT], 5);
    assert_int_equal(rep.total, 6);
    config_user_free(&u[0]);
    free(u);
    dir_entry_free(&e1);
    dir_entry_free(&e2);
    config_free(&cfg);
}

/* The one log line: counts, and examples whose quotes cannot end the value early. */
static void test_report_line(void **state)
{
    struct dir_report rep = {.total = 2, .nexamples = 1};
    char line[128];

    rep.skipped[DIR_SKIP_BAD_JID] = 2;
    snprintf(rep.examples[0], sizeof rep.examples[0], "cn=a\"b\\: 'x' is not a bare JID");
    dir_report_format(&rep, line, sizeof line);
    assert_string_equal(line, "total=2 bad_jid=2 examples=\"cn=a\\\"b\\\\: 'x' is not a bare JID\"");
    /* Cut to fit, still closed. */
    dir_report_format(&rep, line, 30);
    assert_int_equal(line[strlen(line) - 1], '"');
    assert_true(strlen(line) < 30);
    assert_true(dir_report_same(&rep, &rep));
}

/* What the last-known copy refuses: another version, no JID. */
static void test_decode_refuses(void **state)
{
    struct dir_entry e = {0};

    assert_int_equal(dirbuild_decode("v2\njid a@b\n", 11, "x", &e), -1);
    dir_entry_free(&e);
    assert_int_equal(dirbuild_decode("v1\naor sip:1@x\n", 15, "x", &e), -1);
    dir_entry_free(&e);
    assert_int_equal(dirbuild_decode("v1\njid a@b\nfuture thing\naor sip:1@x", 35, "x", &e), 0);
    assert_string_equal(e.jid, "a@b");
    assert_int_equal(e.nphones, 1);
    dir_entry_free(&e);
}

/* A directory change: the running keys, new users; lookups work on the copy. */
static void test_copy_keys_and_set_users(void **state)
{
    struct offhook_config run, next = {0};
    struct cfg_user *users = xcalloc(1, sizeof *users);

    load_base(&run);
    config_copy_keys(&next, &run);
    assert_string_equal(next.xmpp_domain, "phone.localhost");
    assert_string_equal(next.xmpp_secret, "s3cret");
    assert_true(next.dir_ldap);
    assert_string_equal(next.redis.host, "127.0.0.1");
    assert_int_equal(next.sip_nlisten, run.sip_nlisten);
    assert_int_equal(config_diff_restart_keys(&run, &next, NULL, 0), 0);
    users[0].jid = xstrdup("a@example.com");
    users[0].contact = xstrdup("a@phone.localhost");
    config_user_add_aor(&users[0], "sip:1@x");
    users[0].show_remote_party = -1;
    config_set_users(&next, users, 1);
    assert_ptr_equal(config_user_by_jid(&next, "a@example.com"), &next.users[0]);
    assert_ptr_equal(config_user_by_contact(&next, "a@phone.localhost"), &next.users[0]);
    config_free(&next);
    config_free(&run);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_file),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_report_line),
        cmocka_unit_test(test_decode_refuses),
        cmocka_unit_test(test_copy_keys_and_set_users),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
