"""Issue 2's acceptance: a desk-phone call shows up as XMPP presence, end to end, on real
servers: sipp playing an Asterisk PBX -> offhook-sipbridge -> Redis -> offhook-component
-> Prosody -> Bob's client."""

from calls import ASTERISK_CALL_VIEWS, CONTACT, asterisk_call_notifies
from harness import http_get, wait_until


def test_call_turns_into_presence(stack_factory):
    s = stack_factory()
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.subscribe(CONTACT)
    # Before sipbridge has said anything, Bob's client shows the phone as unknown.
    wait_until(lambda: bob.views(CONTACT) == ASTERISK_CALL_VIEWS[:1], what="initial presence")
    assert any(p.type == "subscribed" for p in bob.seen(CONTACT))

    s.start_pbx(asterisk_call_notifies())
    s.start_sipbridge()
    try:
        wait_until(lambda: bob.views(CONTACT) == ASTERISK_CALL_VIEWS, timeout=20,
                   what="Bob seeing the whole call")
    except TimeoutError:
        raise AssertionError("Bob saw %r\n%s" % (bob.views(CONTACT), s.logs()))

    # XEP-0152 reach addresses accompany available presence: the phone's SIP URI.
    last = [p for p in bob.seen(CONTACT) if p.type == "available"][-1]
    assert last.reach == [s.aor("1001")]

    # Redis holds the final state and one change event per state.
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "idle"
    events = s.redis.cli("XRANGE", "offhook:events", "-", "+")
    assert events.count("alice@localhost") == 5
    for state in ("ringing", "on_call", "on_hold"):
        assert state in events
    # Default privacy: the caller (Bob Smith, sip:1002) never leaves sipbridge.
    assert "1002" not in events and "Bob Smith" not in events

    # Counters moved as the call did.
    sb = s.sipbridge.metrics()
    assert sb['offhook_notifies_total{package="dialog"}'] == 5
    assert sb['offhook_state_changes_total{state="on_call"}'] == 1
    assert sb['offhook_subscriptions{state="active"}'] == 1
    comp = s.component.metrics()
    assert comp["offhook_presence_updates_total"] == 5
    assert comp["offhook_event_latency_seconds_count"] == 5
    assert comp["offhook_xmpp_connected"] == 1

    # A clean stop un-SUBSCRIBEs: the PBX scenario ends by answering Expires: 0.
    assert s.sipbridge.stop() == 0
    wait_until(s.pbx.finished, what="sipp to see the un-SUBSCRIBE")
    assert "Expires: 0" in s.pbx.messages()


def test_component_stanza_roundtrip(stack_factory):
    """Sends and receives stanzas over the component connection after the handshake:
    libstrophe 0.12.2 crashes exactly here unless its stream-management state is primed
    (xmpplink.c), so this fails loudly if a library upgrade brings the crash back."""
    s = stack_factory()
    s.start_component()
    bob = s.watcher("bob@localhost")
    for target in ("phone.localhost", CONTACT):
        res = bob.run(lambda t=target: bob.client.plugin["xep_0030"].get_info(
            jid=t, timeout=10))
        identities = res["disco_info"]["identities"]
        if target == "phone.localhost":
            assert ("gateway", "sip", None, "offhook desk-phone presence") in identities
        else:
            assert any(i[0] == "client" and i[1] == "phone" for i in identities)
    assert s.component.alive()
    assert s.component.metrics()['offhook_stanzas_sent_total{kind="iq_result"}'] >= 2


def test_foreign_domain_watcher_refused(stack_factory):
    s = stack_factory()
    s.start_component()
    eve = s.watcher("eve@other.localhost")
    eve.subscribe(CONTACT)
    wait_until(lambda: any(p.type == "unsubscribed" for p in eve.seen(CONTACT)),
               what="refusal")
    # Eve never sees the phone's state, not even "unknown".
    assert eve.views(CONTACT) == []
    assert s.component.metrics()["offhook_watchers_refused_total"] == 1


def test_health_endpoints(stack_factory):
    s = stack_factory()
    s.start_component()
    assert http_get(s.metrics_comp, "/healthz") == (200, "ok\n")
    assert http_get(s.metrics_comp, "/readyz")[0] == 200
    assert http_get(s.metrics_comp, "/nope")[0] == 404
    # sipbridge against a PBX that never answers: alive, but not ready, and says why.
    s.start_sipbridge()
    wait_until(lambda: http_get(s.metrics_sb, "/healthz")[0] == 200, what="sipbridge up")
    # (After its first renewals: alone, a sipbridge waits one before taking the users.)
    status, body = wait_until(lambda: (lambda r: r if "sip:" in r[1] else None)(
        http_get(s.metrics_sb, "/readyz")), what="sipbridge saying the PBX is silent")
    assert status == 503 and "sip:" in body
