/* The pure parts of offhookctl check: the XMPP tag scanner and handshake digest, the PBX
 * URI and SIP response parsers. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sipcheck.h"
#include "xmppcheck.h"

/* Feeds text to the scanner in pieces of n bytes, as reads would deliver it. */
static struct xmpp_scan scan_in_pieces(const char *text, size_t n)
{
    struct xmpp_scan st = {0};
    char buf[4096];
    size_t len = 0, pos = 0, total = strlen(text);

    while (len < total) {
        size_t k = total - len < n ? total - len : n;
        memcpy(buf + len, text + len, k);
        len += k;
        buf[len] = '\0';
        assert_int_equal(xmppcheck_scan(&st, buf, len, &pos), 0);
    }
    return st;
}

static void test_xmpp_accepted(void **state)
{
    /* Prosody's answers, byte by byte and whole: the same result. */
    const char *text = "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/"
                       "streams' xml:lang='en' id='0c4a5f3e-9d1b' from='phone.localhost' "
                       "xmlns='jabber:component:accept'><handshake/>";
    for (size_t n = 1; n <= strlen(text); n += strlen(text) - 1) {
        struct xmpp_scan st = scan_in_pieces(text, n);
        assert_true(st.header);
        assert_string_equal(st.id, "0c4a5f3e-9d1b");
        assert_true(st.handshake);
        assert_false(st.error);
        assert_int_equal(st.depth, 1);
    }
    /* ejabberd's double quotes, an empty handshake element with an end tag. */
    {
        struct xmpp_scan st = scan_in_pieces(
            "<stream:stream xmlns=\"jabber:component:accept\" id=\"12345\" "
            "from=\"phone.localhost\"><handshake></handshake>", 7);
        assert_string_equal(st.id, "12345");
        assert_true(st.handshake);
    }
    /* An id attribute is only the attribute named id, not xml:id or a suffix. */
    {
        struct xmpp_scan st = scan_in_pieces("<stream:stream xmlid='no' sid='no' id='yes'>", 3);
        assert_string_equal(st.id, "yes");
    }
}

static void test_xmpp_errors(void **state)
{
    struct xmpp_scan st = scan_in_pieces(
        "<stream:stream id='x1'><stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:"
        "xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Mismatching "
        "\x01handshake</text></stream:error></stream:stream>",
        5);
    char buf[64] = "<stream:stream id='a'><hand";
    size_t pos = 0;

    assert_true(st.error);
    assert_false(st.handshake);
    assert_string_equal(st.condition, "not-authorized");
    assert_string_equal(st.text, "Mismatching ?handshake");
    assert_true(st.closed);

    /* host-unknown right after the header, no text. */
    st = scan_in_pieces("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                        "id='b'><stream:error><host-unknown "
                        "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                        1);
    assert_string_equal(st.condition, "host-unknown");
    assert_string_equal(st.text, "");

    /* Not a stream at all (an HTTP server): no header. */
    st = scan_in_pieces("<html><body>hello</body></html>", 4);
    assert_false(st.header);

    /* An incomplete tag stays unconsumed. */
    memset(&st, 0, sizeof st);
    assert_int_equal(xmppcheck_scan(&st, buf, strlen(buf), &pos), 0);
    assert_true(st.header);
    assert_false(st.handshake);
    assert_int_equal(pos, strlen("<stream:stream id='a'>"));
    /* Garbage where a tag name belongs. */
    memset(&st, 0, sizeof st);
    pos = 0;
    assert_int_equal(xmppcheck_scan(&st, "< >", 3, &pos), -1);
}

static void test_xmpp_handshake_hex(void **state)
{
    char hex[41];

    /* SHA-1("abc"), FIPS 180-2's example: id "a" followed by secret "bc". */
    xmppcheck_handshake_hex("a", "bc", hex);
    assert_string_equal(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    xmppcheck_handshake_hex("", "", hex);
    assert_string_equal(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

static void test_sip_target(void **state)
{
    struct sip_target t;
    char err[256];

    assert_int_equal(sipcheck_parse_target("sip:pbx.example.com", &t, err, sizeof err), 0);
    assert_string_equal(t.host, "pbx.example.com");
    assert_int_equal(t.port, 5060);
    assert_string_equal(t.transport, "udp");
    assert_false(t.transport_set);

    assert_int_equal(sipcheck_parse_target("sips:pbx.example.com", &t, err, sizeof err), 0);
    assert_int_equal(t.port, 5061);
    assert_string_equal(t.transport, "tls");
    assert_true(t.transport_set);

    assert_int_equal(sipcheck_parse_target("SIP:offhook@[2001:db8::1]:5070;lr;Transport=TCP",
                                           &t, err, sizeof err),
                     0);
    assert_string_equal(t.host, "2001:db8::1");
    assert_true(t.ipv6);
    assert_int_equal(t.port, 5070);
    assert_string_equal(t.transport, "tcp");

    assert_int_equal(sipcheck_parse_target("sip:10.0.0.1;transport=tls", &t, err, sizeof err), 0);
    assert_int_equal(t.port, 5061);

    assert_int_equal(sipcheck_parse_target("http://x", &t, err, sizeof err), -1);
    assert_int_equal(sipcheck_parse_target("sip:", &t, err, sizeof err), -1);
    assert_int_equal(sipcheck_parse_target("sip:host:99999", &t, err, sizeof err), -1);
    assert_int_equal(sipcheck_parse_target("sip:[::1", &t, err, sizeof err), -1);
    assert_int_equal(sipcheck_parse_target("sip:h;transport=sctp", &t, err, sizeof err), -1);
    assert_non_null(strstr(err, "sctp"));
}

static void test_sip_response(void **state)
{
    const char *ok = "SIP/2.0 200 Keepalive\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n"
                     "i: abc@offhookctl\r\nServer : kamailio (5.6.3)\r\nContent-Length: 0\r\n\r\n";
    char phrase[64], server[64];
    int status = 0;

    assert_int_equal(sipcheck_parse_response(ok, strlen(ok), "abc@offhookctl", &status, phrase,
                                             sizeof phrase, server, sizeof server),
                     1);
    assert_int_equal(status, 200);
    assert_string_equal(phrase, "Keepalive");
    assert_string_equal(server, "kamailio (5.6.3)");
    /* Another transaction's answer, an incomplete one, a request. */
    assert_int_equal(sipcheck_parse_response(ok, strlen(ok), "other@x", &status, phrase,
                                             sizeof phrase, server, sizeof server),
                     -1);
    assert_int_equal(sipcheck_parse_response(ok, 40, "abc@offhookctl", &status, phrase,
                                             sizeof phrase, server, sizeof server),
                     0);
    assert_int_equal(sipcheck_parse_response("OPTIONS sip:x SIP/2.0\r\n\r\n", 25, "a", &status,
                                             phrase, sizeof phrase, server, sizeof server),
                     -1);
    /* A status line that is not one. */
    assert_int_equal(sipcheck_parse_response("SIP/2.0 2x0 OK\r\nCall-ID: a\r\n\r\n", 30, "a",
                                             &status, phrase, sizeof phrase, server,
                                             sizeof server),
                     -1);
    /* No Server: the User-Agent names it. */
    {
        const char *r = "SIP/2.0 407 Proxy Authentication Required\r\nCall-ID: a\r\n"
                        "User-Agent: Asterisk PBX 20.5.0\r\n\r\n";
        assert_int_equal(sipcheck_parse_response(r, strlen(r), "a", &status, phrase,
                                                 sizeof phrase, server, sizeof server),
                         1);
        assert_int_equal(status, 407);
        assert_string_equal(server, "Asterisk PBX 20.5.0");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_xmpp_accepted),     cmocka_unit_test(test_xmpp_errors),
        cmocka_unit_test(test_xmpp_handshake_hex), cmocka_unit_test(test_sip_target),
        cmocka_unit_test(test_sip_response),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
