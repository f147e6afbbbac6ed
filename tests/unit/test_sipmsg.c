/* sipbridge/sipmsg.c: NOTIFYs as PBXs send them (Asterisk, Kamailio with Record-Route,
 * compact and folded headers), the errors a hostile datagram must get, and the stateless
 * responses built from them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sipmsg.h"

static int parse(const char *text, struct sip_msg *m, const char **err, char **copy)
{
    size_t n = strlen(text);

    *copy = malloc(n + 1);
    memcpy(*copy, text, n + 1);
    return sipmsg_parse(*copy, n, m, err);
}

static void assert_str(struct sip_str s, const char *want)
{
    char buf[512];

    assert_non_null(s.p);
    assert_true(s.n < sizeof buf);
    memcpy(buf, s.p, s.n);
    buf[s.n] = '\0';
    assert_string_equal(buf, want);
}

#define BODY "<dialog-info/>\n"

static const char asterisk_notify[] =
    "NOTIFY sip:offhook@10.0.0.5:5070 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKPj1\r\n"
    "From: <sip:1001@pbx.example.com>;tag=8d6e-as\r\n"
    "To: \"offhook; bridge\" <sip:offhook@pbx.example.com;transport=udp>;tag=0123456789abcdef\r\n"
    "Contact: <sip:10.0.0.1:5060>\r\n"
    "Call-ID: 0011223344556677\r\n"
    "CSeq: 7 NOTIFY\r\n"
    "Event: dialog;id=x1\r\n"
    "Subscription-State: active;expires=3599\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: application/dialog-info+xml\r\n"
    "Content-Length: 15\r\n"
    "\r\n" BODY;

static void asterisk(void **state)
{
    struct sip_msg m;
    const char *err;
    char *buf;
    char out[2048];
    size_t n;

    assert_int_equal(parse(asterisk_notify, &m, &err, &buf), 0);
    assert_true(m.request);
    assert_int_equal(m.method, SIP_M_NOTIFY);
    assert_str(m.ruri, "sip:offhook@10.0.0.5:5070");
    assert_str(m.from_tag, "8d6e-as");
    assert_str(m.to_tag, "0123456789abcdef");
    assert_str(m.call_id, "0011223344556677");
    assert_int_equal(m.cseq, 7);
    assert_str(m.event, "dialog");
    assert_str(m.event_id, "x1");
    assert_str(m.substate, "active");
    assert_int_equal(m.sub_expires, 3599);
    assert_int_equal(m.retry_after, -1);
    assert_null(m.reason.p);
    assert_str(m.contact, "sip:10.0.0.1:5060");
    assert_str(m.content_type, "application/dialog-info+xml");
    assert_str(m.body, BODY);
    assert_str(m.via_transport, "UDP");
    assert_str(m.via_host, "10.0.0.1");
    assert_int_equal(m.via_port, 5060);
    assert_true(m.via_rport);
    assert_int_equal(sipmsg_response_port(&m, 40000), 40000);

    n = sipmsg_response(&m, 200, "OK", "zz", "10.0.0.1", 40000, NULL, out, sizeof out);
    assert_true(n > 0);
    out[n] = '\0';
    assert_string_equal(out,
        "SIP/2.0 200 OK\r\n"
        "Via: SIP/2.0/UDP 10.0.0.1:5060;rport=40000;branch=z9hG4bKPj1;received=10.0.0.1\r\n"
        "From: <sip:1001@pbx.example.com>;tag=8d6e-as\r\n"
        "To: \"offhook; bridge\" <sip:offhook@pbx.example.com;transport=udp>;tag=0123456789abcdef\r\n"
        "Call-ID: 0011223344556677\r\n"
        "CSeq: 7 NOTIFY\r\n"
        "Content-Length: 0\r\n\r\n");
    /* Too small a buffer: nothing, not a cut response. */
    assert_int_equal(sipmsg_response(&m, 200, "OK", NULL, "10.0.0.1", 1, NULL, out, 40), 0);
    free(buf);
}

static void kamailio_compact_folded(void **state)
{
    struct sip_msg m;
    const char *err;
    char *buf;
    char out[2048];
    size_t n;
    /* Compact names, a folded header, two vias on one line and one on another, a
     * Record-Route list over two lines, terminated with a reason, no Content-Length. */
    static const char text[] =
        "NOTIFY sip:offhook@127.0.0.1:5070;transport=udp SIP/2.0\r\n"
        "v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKb\r\n"
        "Via: SIP/2.0/TCP 10.2.2.2:5080;branch=z9hG4bKc\r\n"
        "Record-Route: <sip:127.0.0.1;lr;ftag=abc>,\r\n"
        "   <sip:10.9.9.9;lr>\r\n"
        "Record-Route: <sip:10.8.8.8;lr>\r\n"
        "f: sip:1001@127.0.0.1;tag=k1\r\n"
        "t: <sip:offhook@127.0.0.1>;tag=t2\r\n"
        "i: cid-1\r\n"
        "CSeq: 12 NOTIFY\r\n"
        "o: presence\r\n"
        "Subscription-State: terminated;reason=noresource;retry-after=30\r\n"
        "m: \"Kam\" <sip:127.0.0.1:5060>;expires=10, <sip:other@x>\r\n"
        "c: application/pidf+xml\r\n"
        "\r\n"
        "<presence/>";

    assert_int_equal(parse(text, &m, &err, &buf), 0);
    assert_int_equal(m.nvia, 2);
    assert_str(m.top_via, "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa");
    assert_false(m.via_rport);
    assert_int_equal(m.nroute, 3);
    assert_str(m.route[0], "<sip:127.0.0.1;lr;ftag=abc>");
    assert_str(m.route[1], "<sip:10.9.9.9;lr>");
    assert_str(m.route[2], "<sip:10.8.8.8;lr>");
    assert_str(m.from_tag, "k1");
    assert_str(m.to_tag, "t2");
    assert_str(m.event, "presence");
    assert_null(m.event_id.p);
    assert_str(m.substate, "terminated");
    assert_str(m.reason, "noresource");
    assert_int_equal(m.retry_after, 30);
    assert_str(m.contact, "sip:127.0.0.1:5060");
    assert_str(m.body, "<presence/>");
    assert_int_equal(sipmsg_response_port(&m, 9999), 5060);
    n = sipmsg_response(&m, 481, "Subscription Does Not Exist", NULL, "127.0.0.1", 5060, NULL,
                        out, sizeof out);
    out[n] = '\0';
    assert_non_null(strstr(out, "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/UDP "
                                "10.1.1.1;branch=z9hG4bKb\r\nVia: SIP/2.0/TCP 10.2.2.2:5080;"
                                "branch=z9hG4bKc\r\n"));
    assert_null(strstr(out, "received=")); /* the sent-by host is the source */
    free(buf);
}

static void options_gets_a_to_tag(void **state)
{
    struct sip_msg m;
    const char *err;
    char *buf;
    char out[1024];
    size_t n;
    static const char text[] =
        "OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.9:5062;branch=z9hG4bKs\r\n"
        "From: <sip:scanner@192.0.2.9>;tag=s\r\n"
        "To: <sip:probe@127.0.0.1>\r\n"
        "Call-ID: scan\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n";

    assert_int_equal(parse(text, &m, &err, &buf), 0);
    assert_int_equal(m.method, SIP_M_OPTIONS);
    assert_null(m.to_tag.p);
    assert_null(m.body.p);
    n = sipmsg_response(&m, 200, "OK", "ourtag", "198.51.100.1", 5062,
                        "Allow: NOTIFY, OPTIONS\r\n", out, sizeof out);
    out[n] = '\0';
    assert_non_null(strstr(out, "To: <sip:probe@127.0.0.1>;tag=ourtag\r\n"));
    assert_non_null(strstr(out, ";branch=z9hG4bKs;received=198.51.100.1\r\n"));
    assert_non_null(strstr(out, "Allow: NOTIFY, OPTIONS\r\nContent-Length: 0\r\n\r\n"));
    free(buf);
}

static void response_line(void **state)
{
    struct sip_msg m;
    const char *err;
    char *buf;
    static const char text[] =
        "SIP/2.0 202 Accepted\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
        "From: <sip:offhook@x>;tag=a\r\nTo: <sip:1001@x>;tag=b\r\nCall-ID: c\r\n"
        "CSeq: 2 SUBSCRIBE\r\nExpires: 600\r\n\r\n";

    assert_int_equal(parse(text, &m, &err, &buf), 0);
    assert_false(m.request);
    assert_int_equal(m.status, 202);
    assert_int_equal(m.expires, 600);
    free(buf);
}

static void rejected(void **state)
{
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"", "empty"},
        {"\r\n\r\n", "empty"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\n", "no end of headers"},
        {"NOTIFY sip:a SIP/2.0\r\nFrom: <sip:a>;tag=1\r\nTo: <sip:b>\r\nCall-ID: x\r\n"
         "CSeq: 1 NOTIFY\r\n\r\n", "a mandatory header (Via, From, To, Call-ID, CSeq) is missing"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCall-ID: y\r\nCSeq: 1 NOTIFY\r\n\r\n",
         "a header that must appear once appears twice"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
         "CSeq method differs from the request's"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContent-Length: 99\r\n\r\nabc",
         "body shorter than Content-Length"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1;tag=2\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\n\r\n", "malformed From"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: \"a <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\n\r\n", "malformed From"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 99999999999 NOTIFY\r\n\r\n", "malformed CSeq"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: garbage\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\n\r\n", "malformed Via"},
        {"NOTIFY sip:a SIP/3.0\r\nVia: SIP/2.0/UDP h\r\n\r\n",
         "malformed request line or not SIP/2.0"},
        {"NOTIFY sip:a SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n", "header line without a colon"},
        {"SIP/2.0 2000 OK\r\n\r\n", "malformed status line"},
        /* A remote target is sent verbatim in the request line of every refresh: the
         * fuzzer's "part headers.1:5060>" once became "SUBSCRIBE part headers.1:5060> ..." */
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContact: part headers.1:5060>\r\n\r\n",
         "malformed Contact"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContact: <tel:+15550100>\r\n\r\n",
         "malformed Contact"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nContact: <sip:a b@h>\r\n\r\n",
         "malformed Contact"},
        {"NOTIFY sip:a SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=1\r\nFrom: <sip:a>;tag=1\r\n"
         "To: <sip:b>\r\nCall-ID: x\r\nCSeq: 1 NOTIFY\r\nRecord-Route: <sip:p\"x>\r\n\r\n",
         "malformed or too many Record-Route"},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct sip_msg m;
        const char *err = NULL;
        char *buf;

        if (parse(bad[i].text, &m, &err, &buf) == 0)
            fail_msg("case %zu parsed", i);
        if (!err || strcmp(err, bad[i].why) != 0)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err ? err : "(null)", bad[i].why);
        free(buf);
    }
}

static void too_many_vias(void **state)
{
    char text[4096];
    size_t n = 0;
    struct sip_msg m;
    const char *err;

    n += (size_t)snprintf(text + n, sizeof text - n, "NOTIFY sip:a SIP/2.0\r\n");
    for (int i = 0; i <= SIPMSG_MAX_VIA; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "Via: SIP/2.0/UDP h%d;branch=%d\r\n",
                              i, i);
    n += (size_t)snprintf(text + n, sizeof text - n, "From: <sip:a>;tag=1\r\nTo: <sip:b>\r\n"
                                                     "Call-ID: x\r\nCSeq: 1 NOTIFY\r\n\r\n");
    assert_int_equal(sipmsg_parse(text, n, &m, &err), -1);
    assert_string_equal(err, "too many Via headers");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(asterisk),
        cmocka_unit_test(kamailio_compact_folded),
        cmocka_unit_test(options_gets_a_to_tag),
        cmocka_unit_test(response_line),
        cmocka_unit_test(rejected),
        cmocka_unit_test(too_many_vias),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
