/* What a watcher sees for each call state (issue 2's mapping). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "caps.h"
#include "presence.h"

static void expect(enum user_state st, const char *remote, int available, const char *show,
                   const char *status)
{
    struct user_record r = {.state = st};
    struct presence_view v;

    if (remote)
        strcpy(r.remote, remote);
    presence_for_record(&r, &v);
    assert_int_equal(v.available, available);
    if (show)
        assert_string_equal(v.show, show);
    else
        assert_null(v.show);
    assert_string_equal(v.status, status);
}

static void test_mapping(void **state)
{
    expect(US_ON_CALL, NULL, 1, "dnd", "On the phone");
    expect(US_ON_HOLD, NULL, 1, "dnd", "On hold");
    expect(US_RINGING, NULL, 1, NULL, "Ringing");
    expect(US_DIALING, NULL, 1, NULL, "Dialing");
    expect(US_IDLE, NULL, 1, NULL, "");
    expect(US_DND, NULL, 1, "dnd", "Do not disturb");
    expect(US_OFFLINE, NULL, 0, NULL, "Phone offline");
    expect(US_UNKNOWN, NULL, 0, NULL, "Phone status unknown");
}

static void test_remote_party_only_when_present(void **state)
{
    expect(US_ON_CALL, "Bob <sip:1002@pbx>", 1, "dnd", "On the phone with Bob <sip:1002@pbx>");
    expect(US_RINGING, "Bob", 1, NULL, "Ringing: call from Bob");
    expect(US_DIALING, "Bob", 1, NULL, "Dialing Bob");
    /* Idle never names anyone, even if a stale name is in the record. */
    expect(US_IDLE, "Bob", 1, NULL, "");
}

static void test_no_record(void **state)
{
    struct presence_view v;

    presence_for_record(NULL, &v);
    assert_false(v.available);
    assert_string_equal(v.status, "Phone status unknown");
}

/* XEP-0115 5.2's worked example, then our own string's shape. */
static void test_caps_hash(void **state)
{
    static const char ex[] = "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<"
                             "http://jabber.org/protocol/disco#info<"
                             "http://jabber.org/protocol/disco#items<"
                             "http://jabber.org/protocol/muc<";
    char out[64], s[512];
    unsigned char two[] = {0xff, 0x01};

    assert_int_equal(caps_hash(ex, sizeof ex - 1, out, sizeof out), 0);
    assert_string_equal(out, "QgayPKawpkPSDYmwT/WM94uAlu0=");
    assert_int_equal(caps_base64(two, 2, out, sizeof out), 0);
    assert_string_equal(out, "/wE=");
    assert_true(caps_contact_string(s, sizeof s) > 0);
    assert_string_equal(s, "client/phone//<http://jabber.org/protocol/caps<"
                           "http://jabber.org/protocol/disco#info<"
                           "http://jabber.org/protocol/nick<urn:xmpp:ping<vcard-temp<");
    for (int i = 1; caps_contact_features[i]; i++)
        assert_true(strcmp(caps_contact_features[i - 1], caps_contact_features[i]) < 0);
    for (int i = 1; caps_domain_features[i]; i++)
        assert_true(strcmp(caps_domain_features[i - 1], caps_domain_features[i]) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapping),
        cmocka_unit_test(test_remote_party_only_when_present),
        cmocka_unit_test(test_no_record),
        cmocka_unit_test(test_caps_hash),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
