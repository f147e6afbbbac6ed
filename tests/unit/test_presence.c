/* What a watcher sees for each call state (issue 2's mapping), in presence and in PEP
 * (view.c), and the users directory that view is computed for (users.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "caps.h"
#include "config.h"
#include "strutil.h"
#include "presence.h"
#include "stanza.h"
#include "users.h"
#include "view.h"

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
    assert_true(caps_contact_string(false, s, sizeof s) > 0);
    assert_string_equal(s, "client/phone//<http://jabber.org/protocol/caps<"
                           "http://jabber.org/protocol/disco#info<"
                           "http://jabber.org/protocol/nick<urn:ietf:params:xml:ns:vcard-4.0<"
                           "urn:xmpp:ping<urn:xmpp:reach:0<vcard-temp<"
                           "https://github.com/offhook/offhook#phone<media<audio<protocol<sip<");
    assert_true(caps_contact_string(true, s, sizeof s) > 0);
    assert_non_null(strstr(s, "#phone<media<audio<video<protocol<sip<"));
    assert_int_equal(caps_contact_ver(false, out, sizeof out), 0);
    assert_int_equal(caps_contact_ver(true, s, sizeof s), 0);
    assert_string_not_equal(out, s); /* two hashes: clients resolve each once */
    for (int i = 1; caps_contact_features[i]; i++)
        assert_true(strcmp(caps_contact_features[i - 1], caps_contact_features[i]) < 0);
    for (int i = 1; caps_domain_features[i]; i++)
        assert_true(strcmp(caps_domain_features[i - 1], caps_domain_features[i]) < 0);
}

/* The PEP half of a view: XEP-0108 activity and XEP-0152 reachability per state. */
static void expect_pep(enum user_state st, bool talking, const char *activity, bool reachable)
{
    struct user_record r = {.state = st};
    struct user_view v;

    view_compute(&r, &v);
    assert_ptr_equal(v.rec, &v.shown); /* a copy: the view outlives the record it was made of */
    assert_int_equal(v.shown.state, st);
    assert_int_equal(v.talking, talking);
    assert_string_equal(v.activity, activity);
    assert_int_equal(v.reachable, reachable);
}

static void test_view(void **state)
{
    struct user_view v;

    expect_pep(US_ON_CALL, true, "On the phone", true);
    expect_pep(US_ON_HOLD, true, "On hold", true);
    expect_pep(US_RINGING, false, "", true);
    expect_pep(US_DIALING, false, "", true);
    expect_pep(US_DND, false, "", true);
    expect_pep(US_IDLE, false, "", true);
    expect_pep(US_OFFLINE, false, "", false);
    expect_pep(US_UNKNOWN, false, "", false);
    /* No record (a clean stop): unknown in presence, nothing in PEP. */
    view_compute(NULL, &v);
    assert_null(v.rec);
    assert_false(v.presence.available);
    assert_false(v.talking);
    assert_string_equal(v.activity, "");
    assert_false(v.reachable);
}

static const char users_conf[] = "[sip]\nlisten = udp:127.0.0.1:5070\npbx = sip:127.0.0.1:5060\n"
                                 "[xmpp]\nhost = 127.0.0.1\nport = 5347\n"
                                 "domain = phone.localhost\nsecret = s\n"
                                 "[users]\nalice@localhost = sip:1001@127.0.0.1\n"
                                 "bob@localhost = sip:1002@127.0.0.1\n"
                                 "[user alice@localhost]\nname = Alice Jones\n"
                                 "tel = +1 555 0101-001\n";

static void load(struct offhook_config *cfg, const char *text)
{
    struct cfg_errors errs = {0};

    assert_int_equal(config_load_buffer("test.conf", text, strlen(text), cfg, &errs), 0);
    cfg_errors_free(&errs);
}

static int removed_count;
static char removed_jid[64], removed_watcher[64];

static void on_removed(void *arg, struct cuser *u)
{
    size_t pos = 0;
    const char *w;
    void *v;

    removed_count++;
    snprintf(removed_jid, sizeof removed_jid, "%s", u->jid);
    if (strmap_next(&u->watchers, &pos, &w, &v))
        snprintf(removed_watcher, sizeof removed_watcher, "%s", w);
}

/* The record shown only while sipbridge keeps it true; the nick and the reach addresses
 * from the configuration; a reload announces the users it removes, with their watchers. */
static void test_users_and_view(void **state)
{
    struct offhook_config cfg = {0}, next = {0};
    struct users d;
    struct cuser *alice, *bob;
    struct user_record rec, shown;
    char nick[64], *text = NULL;
    size_t len;
    xmpp_ctx_t *ctx;
    xmpp_stanza_t *reach;

    load(&cfg, users_conf);
    users_init(&d, &cfg);
    alice = users_by_jid(&d, "alice@localhost");
    bob = users_by_contact(&d, "bob@phone.localhost");
    assert_non_null(alice);
    assert_non_null(bob);
    assert_ptr_equal(users_by_number(&d, "1001"), alice);
    assert_ptr_equal(users_by_number(&d, "tel:+15550101001"), alice);

    assert_null(view_record(alice, true, &shown)); /* nothing written yet */
    memset(&rec, 0, sizeof rec);
    rec.state = US_ON_CALL;
    rec.since_ms = 42;
    users_set_record(alice, &rec);
    assert_true(alice->have_rec);
    assert_null(alice->rec.remote); /* no party shown: nothing on the heap */
    assert_ptr_equal(view_record(alice, true, &shown), &shown);
    assert_int_equal(shown.state, US_ON_CALL);
    assert_int_equal(shown.since_ms, 42);
    assert_string_equal(shown.remote, "");
    assert_null(view_record(alice, false, &shown)); /* sipbridge's heartbeat is missing */
    /* A party shown (the operator opted in) is kept, replaced, then dropped. */
    str_copy(rec.remote, sizeof rec.remote, "sip:1002@pbx");
    users_set_record(alice, &rec);
    assert_string_equal(view_record(alice, true, &shown)->remote, "sip:1002@pbx");
    str_copy(rec.remote, sizeof rec.remote, "sip:1003@pbx");
    users_set_record(alice, &rec);
    assert_string_equal(view_record(alice, true, &shown)->remote, "sip:1003@pbx");
    rec.remote[0] = 0;
    users_set_record(alice, &rec);
    assert_null(alice->rec.remote);
    assert_string_equal(view_record(alice, true, &shown)->remote, "");
    str_copy(rec.remote, sizeof rec.remote, "sip:1004@pbx");
    users_set_record(alice, &rec);
    users_set_record(alice, NULL); /* removed: the party goes with it */
    assert_false(alice->have_rec);
    assert_null(alice->rec.remote);
    assert_null(view_record(alice, true, &shown));
    users_set_record(alice, &rec); /* freed with the user (ASan) */

    view_nick(alice, nick, sizeof nick);
    assert_string_equal(nick, "Alice Jones (phone)");
    view_nick(bob, nick, sizeof nick);
    assert_string_equal(nick, "bob@localhost (phone)");

    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL);
    reach = view_reach(ctx, alice, true);
    assert_int_equal(xmpp_stanza_to_text(reach, &text, &len), 0);
    assert_string_equal(text, "<reach xmlns=\"urn:xmpp:reach:0\"><addr uri=\"sip:1001@127.0.0.1\"/>"
                              "<addr uri=\"tel:+15550101001\"/></reach>");
    xmpp_free(ctx, text);
    xmpp_stanza_release(reach);
    reach = view_reach(ctx, alice, false);
    assert_int_equal(xmpp_stanza_to_text(reach, &text, &len), 0);
    assert_string_equal(text, "<reach xmlns=\"urn:xmpp:reach:0\"/>");
    xmpp_free(ctx, text);
    xmpp_stanza_release(reach);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();

    assert_true(users_watcher_add(bob, "carol@localhost"));
    assert_false(users_watcher_add(bob, "carol@localhost"));
    /* bob leaves the configuration: announced once, his watcher still there to be told. */
    load(&next, "[sip]\nlisten = udp:127.0.0.1:5070\npbx = sip:127.0.0.1:5060\n"
                "[xmpp]\nhost = 127.0.0.1\nport = 5347\ndomain = phone.localhost\n"
                "secret = s\n[users]\nalice@localhost = sip:1001@127.0.0.1\n");
    users_apply(&d, &next, &(struct users_apply_ops){.on_removed = on_removed}, NULL);
    assert_int_equal(removed_count, 1);
    assert_string_equal(removed_jid, "bob@localhost");
    assert_string_equal(removed_watcher, "carol@localhost");
    assert_null(users_by_jid(&d, "bob@localhost"));
    assert_ptr_equal(users_by_jid(&d, "alice@localhost"), alice); /* kept, state and all */
    assert_true(alice->have_rec);
    users_free(&d);
    config_free(&next);
    config_free(&cfg);
}

/* The link's repair of what would make the server close the stream (xmpplink.c calls it
 * on every stanza it sends). */
static void test_stanza_scrub(void **state)
{
    xmpp_ctx_t *ctx;
    xmpp_stanza_t *p, *status;
    const char *where = "x";
    char *text, big[300];
    size_t len;

    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL);
    p = xmpp_presence_new(ctx);
    xmpp_stanza_set_from(p, "alice@phone.localhost/phone");
    xmpp_stanza_set_to(p, "bob@localhost");
    /* Clean text, letters of any script: untouched. */
    stanza_text_child(ctx, p, "status", "On the phone with J\xc3\xa9r\xc3\xb4me \xe6\x97\xa5\t\n");
    assert_int_equal(stanza_scrub(p, &where), 0);
    assert_null(where);
    xmpp_stanza_release(p);

    /* 63 x "é" cut at byte 127, mid-character, as sipbridge before issue 15 wrote it. */
    p = xmpp_presence_new(ctx);
    xmpp_stanza_set_from(p, "alice@phone.localhost/phone");
    xmpp_stanza_set_to(p, "bob@localhost");
    for (int i = 0; i < 63; i++)
        memcpy(big + 2 * i, "\xc3\xa9", 2);
    big[126] = '\xc3';
    big[127] = '\0';
    status = stanza_text_child(ctx, p, "status", big);
    assert_int_equal(stanza_scrub(p, &where), 1);
    assert_string_equal(where, "status");
    text = xmpp_stanza_get_text(status);
    assert_int_equal(strlen(text), 127);
    assert_int_equal(text[126], '?');
    assert_int_equal(memcmp(text, big, 126), 0);
    xmpp_free(ctx, text);
    assert_int_equal(stanza_scrub(p, &where), 0); /* repaired for good */
    xmpp_stanza_release(p);

    /* Control characters XML 1.0 cannot carry even escaped, U+FFFE, a stray byte in an
     * attribute, a surrogate: each becomes one '?'. */
    p = xmpp_presence_new(ctx);
    xmpp_stanza_set_from(p, "alice@phone.localhost/phone");
    xmpp_stanza_set_to(p, "bob@localhost");
    stanza_text_child(ctx, p, "status", "a\x01" "b\x1b[31mc\xef\xbf\xbe" "d\xed\xa0\x80" "e");
    xmpp_stanza_set_attribute(stanza_child(ctx, p, "nick", "http://jabber.org/protocol/nick"),
                              "label", "x\xffy");
    assert_int_equal(stanza_scrub(p, &where), 1 + 1 + 1 + 3 + 1);
    assert_string_equal(where, "status");
    assert_int_equal(xmpp_stanza_to_text(p, &text, &len), 0);
    if (!strstr(text, "<status>a?b?[31mc?d???e</status>"))
        fail_msg("%s", text);
    assert_non_null(strstr(text, "label=\"x?y\""));
    xmpp_free(ctx, text);
    xmpp_stanza_release(p);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mapping),
        cmocka_unit_test(test_remote_party_only_when_present),
        cmocka_unit_test(test_no_record),
        cmocka_unit_test(test_caps_hash),
        cmocka_unit_test(test_view),
        cmocka_unit_test(test_users_and_view),
        cmocka_unit_test(test_stanza_scrub),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
