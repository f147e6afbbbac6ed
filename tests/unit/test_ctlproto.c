/* The control-socket protocol, pure parts: the request parser, status lines, durations,
 * JSON strings, relative times (common/ctlproto.c), and offhookctl's reader of answers
 * (ctl/ctlclient.c's ctlclient_feed). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctlclient.h"
#include "ctlproto.h"
#include "sbuf.h"

static int parse(const char *line, struct ctl_request *req, const char **err)
{
    *err = NULL;
    return ctlproto_parse(line, strlen(line), req, err);
}

static void test_parse_words(void **state)
{
    struct ctl_request req;
    const char *err;

    assert_int_equal(parse("status", &req, &err), 0);
    assert_int_equal(req.argc, 1);
    assert_string_equal(req.argv[0], "status");
    assert_false(req.json);

    /* Spaces and tabs separate; leading and trailing ones do not make words. */
    assert_int_equal(parse("  subscriptions \t --state\tbackoff  ", &req, &err), 0);
    assert_int_equal(req.argc, 3);
    assert_string_equal(req.argv[0], "subscriptions");
    assert_string_equal(req.argv[1], "--state");
    assert_string_equal(req.argv[2], "backoff");

    /* --json anywhere after the command is the format, not an argument. */
    assert_int_equal(parse("user --json alice@example.com", &req, &err), 0);
    assert_true(req.json);
    assert_int_equal(req.argc, 2);
    assert_string_equal(req.argv[1], "alice@example.com");
    /* ... but as the command it is just an unknown command name. */
    assert_int_equal(parse("--json status", &req, &err), 0);
    assert_string_equal(req.argv[0], "--json");
    assert_false(req.json);

    /* A CR before the LF (telnet, socat with crlf) is dropped. */
    assert_int_equal(parse("reload\r", &req, &err), 0);
    assert_string_equal(req.argv[0], "reload");

    /* UTF-8 JIDs pass. */
    assert_int_equal(parse("user j\xc3\xbcrgen@example.com", &req, &err), 0);
    assert_string_equal(req.argv[1], "j\xc3\xbcrgen@example.com");
}

static void test_parse_empty(void **state)
{
    struct ctl_request req;
    const char *err;

    assert_int_equal(parse("", &req, &err), 1);
    assert_int_equal(parse(" \t ", &req, &err), 1);
    assert_int_equal(parse("\r", &req, &err), 1);
    assert_int_equal(req.argc, 0);
}

static void test_parse_refused(void **state)
{
    static const char *const bad[] = {
        "status\x01",           /* control character */
        "user a\x7f",           /* DEL */
        "user \xff",            /* not UTF-8 */
        "user \xc0\xaf",        /* overlong '/' */
        "user \xed\xa0\x80",    /* a surrogate */
        "user \xf4\x90\x80\x80", /* past U+10FFFF */
        "user \xe2\x82",        /* truncated sequence */
        NULL,
    };
    struct ctl_request req;
    const char *err;

    for (int i = 0; bad[i]; i++) {
        assert_int_equal(parse(bad[i], &req, &err), -1);
        assert_non_null(err);
        assert_int_equal(req.argc, 0);
    }
    /* An embedded NUL is a control character, not the end of the line. */
    assert_int_equal(ctlproto_parse("ok\0x", 4, &req, &err), -1);
}

static void test_parse_limits(void **state)
{
    char line[CTL_LINE_MAX + 2];
    struct ctl_request req;
    const char *err;
    size_t n = 0;

    /* CTL_ARGS_MAX words pass, one more does not. */
    for (int i = 0; i < CTL_ARGS_MAX; i++)
        n += (size_t)sprintf(line + n, "%sw%d", i ? " " : "", i);
    assert_int_equal(parse(line, &req, &err), 0);
    assert_int_equal(req.argc, CTL_ARGS_MAX);
    strcat(line, " one-more");
    assert_int_equal(parse(line, &req, &err), -1);
    assert_string_equal(err, "too many words in request");
    /* --json does not count as a word. */
    line[n] = '\0';
    strcat(line, " --json");
    assert_int_equal(parse(line, &req, &err), 0);
    assert_true(req.json);

    /* CTL_LINE_MAX bytes pass (a CR beyond them is not counted), one more does not. */
    memset(line, 'a', CTL_LINE_MAX);
    line[CTL_LINE_MAX] = '\r';
    assert_int_equal(ctlproto_parse(line, CTL_LINE_MAX + 1, &req, &err), 0);
    assert_int_equal(strlen(req.argv[0]), CTL_LINE_MAX);
    line[CTL_LINE_MAX] = 'a';
    assert_int_equal(ctlproto_parse(line, CTL_LINE_MAX + 1, &req, &err), -1);
    assert_string_equal(err, "request line too long");
}

static void test_status_line(void **state)
{
    char code[16];
    const char *text = NULL;

    assert_int_equal(ctlproto_status("OK", code, sizeof code, &text), 1);
    assert_int_equal(ctlproto_status("ERR notfound bob is not a configured user", code,
                                     sizeof code, &text),
                     0);
    assert_string_equal(code, "notfound");
    assert_string_equal(text, "bob is not a configured user");
    assert_int_equal(ctlproto_status("ERR busy", code, sizeof code, &text), 0);
    assert_string_equal(code, "busy");
    assert_string_equal(text, "");
    assert_int_equal(ctlproto_status("ERR", code, sizeof code, &text), -1);
    assert_int_equal(ctlproto_status("ERR  text", code, sizeof code, &text), -1);
    assert_int_equal(ctlproto_status("ERR averyveryverylongcode x", code, sizeof code, &text),
                     -1);
    assert_int_equal(ctlproto_status("HTTP/1.1 200 OK", code, sizeof code, &text), -1);
    assert_int_equal(ctlproto_status("OK ", code, sizeof code, &text), -1);
}

static void test_duration(void **state)
{
    long s;

    assert_int_equal(ctlproto_duration("90", 1, 86400, &s), 0);
    assert_int_equal(s, 90);
    assert_int_equal(ctlproto_duration("90s", 1, 86400, &s), 0);
    assert_int_equal(s, 90);
    assert_int_equal(ctlproto_duration("10m", 1, 86400, &s), 0);
    assert_int_equal(s, 600);
    assert_int_equal(ctlproto_duration("2h", 1, 86400, &s), 0);
    assert_int_equal(s, 7200);
    assert_int_equal(ctlproto_duration("1d", 1, 86400, &s), 0);
    assert_int_equal(s, 86400);
    static const char *const bad[] = {"0", "25h", "2d", "10x", "m", "", "10mm", "-5", "1.5h",
                                      "99999999999999999999", "9223372036854775807d", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(ctlproto_duration(bad[i], 1, 86400, &s), -1);
}

static void test_json_str(void **state)
{
    struct sbuf b;

    sbuf_init(&b);
    ctlproto_json_str(&b, "a\"b\\c\nd\x01");
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\u000ad\\u0001\"");
    sbuf_reset(&b);
    /* Valid UTF-8 stays, broken bytes become U+FFFD: the document stays valid. */
    ctlproto_json_str(&b, "j\xc3\xbcrgen \xff\xc3");
    assert_string_equal(b.data, "\"j\xc3\xbcrgen \\ufffd\\ufffd\"");
    sbuf_reset(&b);
    ctlproto_json_str(&b, NULL);
    assert_string_equal(b.data, "null");
    sbuf_free(&b);
}

static void test_ago(void **state)
{
    const int64_t now = 1700000000000LL;
    char out[32];

    ctlproto_ago(0, now, out, sizeof out);
    assert_string_equal(out, "never");
    ctlproto_ago(now - 300, now, out, sizeof out);
    assert_string_equal(out, "just now");
    ctlproto_ago(now - 5000, now, out, sizeof out);
    assert_string_equal(out, "5 s ago");
    ctlproto_ago(now + 40000, now, out, sizeof out);
    assert_string_equal(out, "in 40 s");
    ctlproto_ago(now - 180000, now, out, sizeof out);
    assert_string_equal(out, "3 min ago");
    ctlproto_ago(now - 3 * 3600000LL, now, out, sizeof out);
    assert_string_equal(out, "3 h ago");
    ctlproto_ago(now - 3 * 86400000LL, now, out, sizeof out);
    assert_string_equal(out, "3 days ago");
}

/* ---- the client's reader ---------------------------------------------------------------- */

/* Feeds text in pieces of n bytes; returns the bytes consumed in all. */
static size_t feed_pieces(struct ctlclient_parser *p, const char *text, size_t len, size_t n,
                          struct sbuf *body)
{
    size_t used = 0;

    while (used < len && !ctlclient_done(p)) {
        size_t k = len - used < n ? len - used : n;
        long r = ctlclient_feed(p, text + used, k, NULL, body);
        assert_true(r >= 0);
        used += (size_t)r;
        if ((size_t)r < k && !ctlclient_done(p) && p->stage != 1)
            fail_msg("stopped early at %zu", used);
    }
    return used;
}

static void test_client_reads_answers(void **state)
{
    /* Dot-stuffed lines, a JSON line, a terminator, and the next answer behind it. */
    static const char answer[] = "OK\nline one\n..starts with a dot\n...two dots\n{\"a\":1}\n"
                                 ".\nOK\n.\n";
    const size_t first = sizeof answer - 1 - strlen("OK\n.\n");

    for (size_t n = 1; n <= sizeof answer; n++) {
        struct ctlclient_parser p = {0};
        struct sbuf body;
        size_t used;

        sbuf_init(&body);
        used = feed_pieces(&p, answer, sizeof answer - 1, n, &body);
        assert_true(ctlclient_done(&p));
        assert_int_equal(used, first);
        assert_string_equal(p.status, "OK");
        assert_string_equal(body.data,
                            "line one\n.starts with a dot\n..two dots\n{\"a\":1}\n");
        sbuf_free(&body);
    }
}

static void test_client_reads_errors(void **state)
{
    struct ctlclient_parser p = {0};
    struct sbuf body;
    static const char answer[] = "ERR failed reload refused: the running configuration stays\n"
                                 "/etc/offhook/offhook.conf:12: unknown key\n.\n";

    sbuf_init(&body);
    assert_int_equal(feed_pieces(&p, answer, sizeof answer - 1, 7, &body), sizeof answer - 1);
    assert_true(ctlclient_done(&p));
    assert_string_equal(p.status, "ERR failed reload refused: the running configuration stays");
    assert_string_equal(body.data, "/etc/offhook/offhook.conf:12: unknown key\n");
    sbuf_free(&body);

    /* An empty body. */
    memset(&p, 0, sizeof p);
    sbuf_init(&body);
    feed_pieces(&p, "OK\r\n.\n", 6, 1, &body);
    assert_true(ctlclient_done(&p));
    assert_string_equal(p.status, "OK");
    assert_int_equal(body.len, 0);
    sbuf_free(&body);
}

static void test_client_refuses_other_protocols(void **state)
{
    struct ctlclient_parser p = {0};
    char big[2048];

    assert_int_equal(ctlclient_feed(&p, "HTTP/1.0 400 Bad Request\r\n", 26, NULL, NULL), -1);
    memset(&p, 0, sizeof p);
    memset(big, 'x', sizeof big);
    assert_int_equal(ctlclient_feed(&p, big, sizeof big, NULL, NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_words),
        cmocka_unit_test(test_parse_empty),
        cmocka_unit_test(test_parse_refused),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_status_line),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_json_str),
        cmocka_unit_test(test_ago),
        cmocka_unit_test(test_client_reads_answers),
        cmocka_unit_test(test_client_reads_errors),
        cmocka_unit_test(test_client_refuses_other_protocols),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
