/* XEP-0100 lookups: every line of tests/data/lookup.txt (an address as someone wrote it,
 * and the user it must find) against the users below, through users_by_number() and so
 * through sipaddr.c's parsing and normalisation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "sipaddr.h"
#include "strutil.h"
#include "users.h"

static const char conf[] =
    "[sip]\nlisten = udp:127.0.0.1:5070\npbx = sip:127.0.0.1:5060\n"
    "[xmpp]\nhost = 127.0.0.1\nport = 5347\ndomain = phone.localhost\nsecret = s\n"
    "[users]\n"
    "alice@localhost = sip:1001@pbx.example.com, sip:alice@pbx.example.com\n"
    "bob@localhost = sip:1002@127.0.0.1:5060\n"
    "carol@localhost = sip:Carol@pbx.example.com, sips:2001@[2001:db8::1]:5061\n"
    "dave@localhost = sip:1004@pbx.example.com\n"
    "erin@localhost = sip:1005@pbx.example.com\n"
    "frank@localhost = sip:1006@pbx.example.com\n"
    "[user alice@localhost]\ntel = +1 (555) 0100\n"
    "[user bob@localhost]\ntel = +44 20 7946 0000\n"
    "[user carol@localhost]\ntel = 555 0199\n"
    "[user dave@localhost]\ntel = +1 555 0100\n"
    "[user erin@localhost]\ntel = +61 2 9876 5432\n"
    "[user frank@localhost]\ntel = +1 212 555 0000\n";

static void test_lookup_file(void **state)
{
    struct offhook_config cfg = {0};
    struct cfg_errors errs = {0};
    struct users d;
    char line[1024];
    int n = 0, bad = 0, lineno = 0;
    FILE *f = fopen(OFFHOOK_TEST_DATA "/lookup.txt", "r");

    assert_non_null(f);
    if (config_load_buffer("test.conf", conf, sizeof conf - 1, &cfg, &errs) != 0)
        cfg_errors_print(&errs, stderr);
    assert_int_equal(errs.n, 0);
    cfg_errors_free(&errs);
    users_init(&d, &cfg);
    while (fgets(line, sizeof line, f)) {
        char *arrow = strstr(line, "=>"), *want;
        const struct cuser *u;
        lineno++;
        if (line[0] == '#' || !arrow)
            continue;
        *arrow = '\0';
        want = str_trim(arrow + 2);
        /* The query keeps its leading spaces: people paste them. */
        for (size_t i = strlen(line); i > 0 && line[i - 1] == ' '; i--)
            line[i - 1] = '\0';
        u = users_by_number(&d, line);
        if (strcmp(u ? u->jid : "-", want) != 0) {
            fprintf(stderr, "lookup.txt:%d: '%s' found %s, want %s\n", lineno, line,
                    u ? u->jid : "-", want);
            bad++;
        }
        n++;
    }
    fclose(f);
    users_free(&d);
    config_free(&cfg);
    assert_true(n > 50);
    assert_int_equal(bad, 0);
}

/* The two helpers on their own, for what the file cannot show. */
static void test_sipaddr(void **state)
{
    struct sipaddr a;
    char num[SIPADDR_NUMBER_MAX];

    assert_int_equal(sipaddr_parse("\"A \\\"q\\\" B\" <sips:Bob%20B@Example.COM:5061;"
                                   "user=phone>;tag=1", &a), 0);
    assert_true(a.secure);
    assert_string_equal(a.user, "Bob B");
    assert_string_equal(a.host, "example.com");
    assert_int_equal(a.port, 5061);
    assert_true(a.user_phone);
    assert_int_equal(sipaddr_parse("sip:alice@host:0", &a), -1);
    assert_int_equal(sipaddr_parse("sip:alice@host:65536", &a), -1);
    assert_int_equal(sipaddr_parse("sip:alice@host:50x", &a), -1);
    assert_int_equal(sipaddr_parse("sip:alice@[::1", &a), -1);
    assert_int_equal(sipaddr_parse("tel:+15550100", &a), -1);
    assert_int_equal(sipaddr_number("tel:+1-555-0100;phone-context=example.com", num,
                                    sizeof num), 0);
    assert_string_equal(num, "+15550100");
    assert_int_equal(sipaddr_number("1234567890123456789012345678901", num, sizeof num), -1);
    assert_int_equal(sipaddr_number(" - ", num, sizeof num), -1);
    assert_int_equal(sipaddr_number("+", num, sizeof num), -1);
    assert_true(sipaddr_national_matches("5550100", "+15550100"));
    assert_false(sipaddr_national_matches("15550100", "+5550100"));
    assert_false(sipaddr_national_matches("50100", "+15550100"));
    assert_false(sipaddr_national_matches("+15550100", "+15550100"));
}

static void no_op(void *arg, struct cuser *u)
{
}

static void load(const char *text, struct offhook_config *cfg)
{
    struct cfg_errors errs = {0};

    if (config_load_buffer("test.conf", text, strlen(text), cfg, &errs) != 0)
        cfg_errors_print(&errs, stderr);
    assert_int_equal(errs.n, 0);
    cfg_errors_free(&errs);
}

static const char *who(const struct users *d, const char *q)
{
    const struct cuser *u = users_by_number(d, q);

    return u ? u->jid : "-";
}

/* A reload (or a directory change) updates the index user by user: a leaver's and a
 * changed user's old addresses go, new ones answer, and an address two users shared
 * answers the one who stays. */
static void test_lookup_after_changes(void **state)
{
    static const char head[] =
        "[xmpp]\nhost = 127.0.0.1\nport = 5347\ndomain = phone.localhost\nsecret = s\n"
        "[users]\n";
    struct offhook_config c1 = {0}, c2 = {0}, c3 = {0};
    struct users_apply_ops ops = {.on_removed = no_op, .on_changed = no_op};
    struct users d;
    char text[1024];

    snprintf(text, sizeof text, "%s%s", head,
             "alice@localhost = sip:1001@pbx\nbob@localhost = sip:1002@pbx\n"
             "carol@localhost = sip:1003@pbx\ndave@localhost = sip:1003@pbx\n");
    load(text, &c1);
    users_init(&d, &c1);
    assert_string_equal(who(&d, "1001"), "alice@localhost");
    assert_string_equal(who(&d, "1003"), "-");            /* shared: nobody */

    /* bob moves to 1012, erin comes with 1005, dave leaves: carol has 1003 alone. */
    snprintf(text, sizeof text, "%s%s", head,
             "alice@localhost = sip:1001@pbx\nbob@localhost = sip:1012@pbx\n"
             "carol@localhost = sip:1003@pbx\nerin@localhost = sip:1005@pbx\n");
    load(text, &c2);
    users_apply(&d, &c2, &ops, NULL);
    assert_string_equal(who(&d, "1002"), "-");
    assert_string_equal(who(&d, "1012"), "bob@localhost");
    assert_string_equal(who(&d, "1005"), "erin@localhost");
    assert_string_equal(who(&d, "1003"), "carol@localhost");
    assert_string_equal(who(&d, "sip:1001@pbx"), "alice@localhost");

    /* erin leaves, alice takes bob's old number too: no rebuild needed, still right. */
    snprintf(text, sizeof text, "%s%s", head,
             "alice@localhost = sip:1001@pbx, sip:1002@pbx\nbob@localhost = sip:1012@pbx\n"
             "carol@localhost = sip:1003@pbx\n");
    load(text, &c3);
    users_apply(&d, &c3, &ops, NULL);
    assert_string_equal(who(&d, "1005"), "-");
    assert_string_equal(who(&d, "1002"), "alice@localhost");
    assert_string_equal(who(&d, "1001"), "alice@localhost");
    assert_string_equal(who(&d, "1012"), "bob@localhost");
    users_free(&d);
    config_free(&c1);
    config_free(&c2);
    config_free(&c3);
}

/* Three users share an extension; they leave one by one, in both orders (whichever of
 * them the index holds first): the last one left answers, the others no longer do. */
static void test_lookup_sharers_leave(void **state)
{
    static const char head[] =
        "[xmpp]\nhost = 127.0.0.1\nport = 5347\ndomain = phone.localhost\nsecret = s\n"
        "[users]\n";
    static const char *const order[2][3] = {{"x", "y", "z"}, {"z", "y", "x"}};
    struct users_apply_ops ops = {.on_removed = no_op, .on_changed = no_op};

    for (int o = 0; o < 2; o++) {
        struct offhook_config c[3] = {{0}};
        struct users d;
        char text[1024];
        char want[32];

        snprintf(text, sizeof text, "%sx@localhost = sip:8001@pbx\ny@localhost = sip:8001@pbx\n"
                 "z@localhost = sip:8001@pbx:5060\n", head);
        load(text, &c[0]);
        users_init(&d, &c[0]);
        assert_string_equal(who(&d, "8001"), "-");
        for (int i = 1; i < 3; i++) {
            /* The users but order[o][0..i). */
            size_t len = (size_t)snprintf(text, sizeof text, "%s", head);
            for (int j = i; j < 3; j++)
                len += (size_t)snprintf(text + len, sizeof text - len,
                                        "%s@localhost = sip:8001@pbx%s\n", order[o][j],
                                        strcmp(order[o][j], "z") == 0 ? ":5060" : "");
            load(text, &c[i]);
            users_apply(&d, &c[i], &ops, NULL);
        }
        snprintf(want, sizeof want, "%s@localhost", order[o][2]);
        assert_string_equal(who(&d, "8001"), want);
        assert_string_equal(who(&d, "sip:8001@pbx:5060"), want);
        assert_string_equal(who(&d, "sip:8001@pbx"), want);
        users_free(&d);
        for (int i = 0; i < 3; i++)
            config_free(&c[i]);
    }
}

/* Addresses two users share, form by form: each answers neither, while the forms that
 * still tell them apart answer (the same answers as the index of one key per form had). */
static void test_lookup_shared_forms(void **state)
{
    static const char text[] =
        "[xmpp]\nhost = 127.0.0.1\nport = 5347\ndomain = phone.localhost\nsecret = s\n"
        "[users]\n"
        /* 1001 on two PBXes: the extension is shared, user@host is not. */
        "a@localhost = sip:1001@pbx1\nb@localhost = sip:1001@pbx2\n"
        /* 2001 on one host, two ports: user@host shared, each port not. */
        "c@localhost = sip:2001@pbx:5060\nd@localhost = sip:2001@pbx:5070\n"
        /* 3001 with a port and without: the one without answers other ports. */
        "e@localhost = sip:3001@pbx:5060\nf@localhost = sip:3001@pbx\n"
        /* 4001 at one port twice, and without a port: the port shared, so the portless. */
        "g@localhost = sip:4001@pbx:5060\nh@localhost = sip:4001@pbx:5060\n"
        "i@localhost = sip:4001@pbx\n"
        /* one user with two AORs of one user part: still one user. */
        "j@localhost = sip:5001@pbx1, sip:5001@pbx2:5080\n"
        /* an extension that is also someone's number: the extension first. */
        "k@localhost = sip:6001@pbx\nl@localhost = sip:l@pbx\n"
        /* a shared extension that is one user's number: that user. */
        "m@localhost = sip:7001@pbx1\nn@localhost = sip:7001@pbx2\no@localhost = sip:o@pbx\n"
        "[user l@localhost]\ntel = 6001\n"
        "[user o@localhost]\ntel = 7001\n";
    static const char *const cases[][2] = {
        {"1001", "-"},
        {"sip:1001@pbx1", "a@localhost"},
        {"sip:1001@pbx2:5060", "b@localhost"},
        {"sip:1001@pbx3", "-"},
        {"2001", "-"},
        {"sip:2001@pbx", "-"},
        {"sip:2001@pbx:5060", "c@localhost"},
        {"sip:2001@pbx:5070", "d@localhost"},
        {"sip:2001@pbx:5080", "-"},
        {"3001", "-"},
        {"sip:3001@pbx", "-"},
        {"sip:3001@pbx:5060", "e@localhost"},
        {"sip:3001@pbx:5070", "f@localhost"},
        {"sip:4001@pbx:5060", "i@localhost"},
        {"sip:4001@pbx:5070", "i@localhost"},
        {"sip:4001@pbx", "-"},
        {"5001", "j@localhost"},
        {"sip:5001@pbx1", "j@localhost"},
        {"sip:5001@pbx1:9999", "j@localhost"},
        {"sip:5001@pbx2", "j@localhost"},
        {"sip:5001@pbx2:5080", "j@localhost"},
        {"sip:5001@pbx2:5081", "-"},
        {"6001", "k@localhost"},
        {"tel:6001", "k@localhost"},
        {"sip:6001@gw;user=phone", "k@localhost"},
        {"l", "l@localhost"},
        {"7001", "o@localhost"},
        {"sip:7001@pbx1", "m@localhost"},
        {"", "-"},
    };
    struct offhook_config cfg = {0};
    struct users d;

    load(text, &cfg);
    users_init(&d, &cfg);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strcmp(who(&d, cases[i][0]), cases[i][1]) != 0)
            fail_msg("'%s' found %s, want %s", cases[i][0], who(&d, cases[i][0]), cases[i][1]);
    }
    users_free(&d);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup_file),
        cmocka_unit_test(test_lookup_after_changes),
        cmocka_unit_test(test_lookup_shared_forms),
        cmocka_unit_test(test_lookup_sharers_leave),
        cmocka_unit_test(test_sipaddr),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
