"""Issue 4: what chat users see, on a real Prosody. Phone contacts complete (RFC 6121,
caps, vCard, ping, version, gateway lookup, watcher policy, stanza errors), and the
users' own status published into their PEP through XEP-0356 (Prosody's mod_privilege
from Debian's prosody-modules), surviving a kill -9 of the component."""

import base64
import hashlib
import signal
import time

import pytest

from calls import CONTACT as ALICE
from calls import IDLE, ON_CALL, UNKNOWN, notify
from harness import PbxSim, step_answer_forever, step_respond, wait_until

ACTIVITY = "http://jabber.org/protocol/activity"
REACH = "urn:xmpp:reach:0"


def iq(w, xml, timeout=10):
    """Sends a raw <iq type=get|set> from watcher w and returns the answer's XML string."""
    from xml.etree import ElementTree as ET

    async def go():
        stanza = w.client.Iq(xml=ET.fromstring(xml))
        stanza["from"] = w.client.boundjid
        try:
            r = await stanza.send(timeout=timeout)
        except Exception as e:  # IqError carries the error stanza
            r = getattr(e, "iq", None)
            if r is None:
                raise
        return str(r)
    return w.run(go)


def caps_forms(query):
    """XEP-0115 5.1 step 6: each XEP-0128 form of a disco#info query, by FORM_TYPE: the
    FORM_TYPE, then each field's var and sorted values, fields sorted by var."""
    out = []
    xd = "{jabber:x:data}"
    forms = []
    for x in query.findall(xd + "x"):
        fields = {f.get("var"): sorted(v.text or "" for v in f.findall(xd + "value"))
                  for f in x.findall(xd + "field")}
        forms.append((fields.pop("FORM_TYPE")[0], fields))
    for form_type, fields in sorted(forms):
        out.append(form_type + "<")
        for var in sorted(fields):
            out += [var + "<"] + [v + "<" for v in fields[var]]
    return out


def call_pbx(s, steps):
    s.start_pbx_script([[step_respond(expires=3600, initial=True)] + steps +
                        [step_answer_forever()]])


# ---- phone contacts -------------------------------------------------------------------

def test_disco_caps_vcard_ping_version(stack_factory):
    s = stack_factory(extra_config="[user alice@localhost]\nname = Alice Jones\n"
                                   "tel = +1 555 0100\n")
    s.start_component()
    call_pbx(s, [notify("dialog-info/asterisk-idle.xml", 0, pause_ms=300)])
    s.start_sipbridge()
    bob = s.watcher("bob@localhost")
    bob.subscribe(ALICE)
    wait_until(lambda: bob.last(ALICE) == IDLE, what="idle presence")

    # XEP-0115: the hash in presence is the hash of what disco#info answers for it.
    pres = [p for p in bob.seen(ALICE) if p.type == "available"][-1]
    raw = [x.replace('\\"', '"') for x in s.component.log().splitlines()
           if "stanza=\"<presence" in x and "caps" in x][-1]  # the trace is quoted: \" for "
    ver = raw.split('ver="')[1].split('"')[0]
    info = iq(bob, "<iq xmlns='jabber:client' type='get' to='%s'><query "
                   "xmlns='http://jabber.org/protocol/disco#info' node='%s#%s'/></iq>"
                   % (ALICE, "https://github.com/offhook/offhook", ver))
    assert "node=" in info and ver in info
    from xml.etree import ElementTree as ET
    q = ET.fromstring(info).find("{http://jabber.org/protocol/disco#info}query")
    idents = sorted("%s/%s//%s<" % (i.get("category"), i.get("type"), i.get("name") or "")
                    for i in q.findall("{http://jabber.org/protocol/disco#info}identity"))
    feats = sorted(f.get("var") + "<" for f in
                   q.findall("{http://jabber.org/protocol/disco#info}feature"))
    forms = caps_forms(q)
    computed = base64.b64encode(hashlib.sha1("".join(idents + feats + forms).encode()).digest())
    assert computed.decode() == ver
    # What the phone does: audio over SIP (no video in Asterisk's PIDF-less fixtures).
    assert forms == ["https://github.com/offhook/offhook#phone<", "media<", "audio<",
                     "protocol<", "sip<"], forms
    assert "urn:xmpp:reach:0<" in feats and "urn:ietf:params:xml:ns:vcard-4.0<" in feats
    assert idents == ["client/phone//<"]  # no name: one hash for every phone contact
    assert any("Alice Jones (phone)" in x for x in s.component.log().splitlines()
               if "stanza=\"<presence" in x and "nick" in x)
    assert pres.reach == [s.aor("1001"), "tel:+15550100"]

    vcard = iq(bob, "<iq xmlns='jabber:client' type='get' to='%s'><vCard "
                    "xmlns='vcard-temp'/></iq>" % ALICE)
    assert "<FN>Alice Jones</FN>" in vcard and "<NUMBER>+1 555 0100</NUMBER>" in vcard
    assert "NICKNAME>Alice Jones (phone)<" in vcard
    # Name and desk number are not for someone the watcher policy does not allow.
    eve = s.watcher("eve@other.localhost")
    refused = iq(eve, "<iq xmlns='jabber:client' type='get' to='%s'><vCard "
                      "xmlns='vcard-temp'/></iq>" % ALICE)
    assert "forbidden" in refused and "555" not in refused and "Alice" not in refused
    assert s.component.metrics()['offhook_stanzas_rejected_total{reason="forbidden"}'] >= 1
    assert 'type="result"' in iq(bob, "<iq xmlns='jabber:client' type='get' to='%s'>"
                                      "<ping xmlns='urn:xmpp:ping'/></iq>" % ALICE)
    version = iq(bob, "<iq xmlns='jabber:client' type='get' to='phone.localhost'><query "
                      "xmlns='jabber:iq:version'/></iq>")
    assert "<name>offhook</name>" in version


def test_stanza_errors(stack_factory):
    s = stack_factory()
    s.start_component()
    bob = s.watcher("bob@localhost")
    unknown_ns = iq(bob, "<iq xmlns='jabber:client' type='get' to='%s'><query "
                         "xmlns='urn:example:nothing'/></iq>" % ALICE)
    assert "service-unavailable" in unknown_ns
    nobody = iq(bob, "<iq xmlns='jabber:client' type='get' to='nobody@phone.localhost'>"
                     "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert "item-not-found" in nobody
    empty = iq(bob, "<iq xmlns='jabber:client' type='get' to='%s'/>" % ALICE)
    assert "bad-request" in empty
    # A chat message to a phone contact: it does not chat, it says where the person is.
    bob.send_raw("<message xmlns='jabber:client' to='%s' type='chat' id='m1'><body>hi</body>"
                 "</message>" % ALICE)
    wait_until(lambda: bob.got_messages(ALICE), what="the pointer to the person")
    body = bob.got_messages(ALICE)[0].find("{jabber:client}body").text
    assert "xmpp:alice@localhost" in body, body
    # A message to an address that is no contact: nobody there.
    bob.send_raw("<message xmlns='jabber:client' to='nobody@phone.localhost' type='chat' "
                 "id='m2'><body>hi</body></message>")
    wait_until(lambda: s.component.metrics().get(
        'offhook_stanzas_rejected_total{reason="service_unavailable"}', 0) >= 2,
        what="message refused")
    m = s.component.metrics()
    assert m['offhook_stanzas_rejected_total{reason="unknown_contact"}'] == 1
    # (The childless IQ never reaches us: Prosody answers bad-request itself.)
    assert s.component.alive()


def test_unsubscribe_and_probe(stack_factory):
    s = stack_factory()
    s.start_component()
    call_pbx(s, [notify("dialog-info/asterisk-inuse.xml", 0, pause_ms=300)])
    s.start_sipbridge()
    bob = s.watcher("bob@localhost")
    bob.subscribe(ALICE)
    wait_until(lambda: bob.last(ALICE) == ON_CALL, what="on the phone")
    members = s.redis.cli("SMEMBERS", "offhook:watchers:alice@phone.localhost")
    assert members == "bob@localhost"
    bob.unsubscribe(ALICE)
    wait_until(lambda: bob.last(ALICE) == ("unavailable", "", ""), what="contact goes away")
    # Availability came from the phone's resource, and so did its end.
    assert any(p.frm == ALICE for p in bob.seen(ALICE))
    assert "from=\\\"alice@phone.localhost/phone\\\"" in s.component.log()
    wait_until(lambda: s.redis.cli("SMEMBERS", "offhook:watchers:alice@phone.localhost") == "",
               what="watcher forgotten")
    # A probe from a JID the server no longer has subscribed is still answered only if
    # policy allows; Prosody itself stops probing after unsubscribe.
    assert s.component.alive()


def test_watcher_policies(stack_factory):
    s = stack_factory(extra_config="[component]\nallow_watchers = list\n"
                                   "watchers = other.localhost\n")
    s.start_component()
    eve = s.watcher("eve@other.localhost")
    eve.subscribe(ALICE)
    wait_until(lambda: eve.views(ALICE) == [UNKNOWN], what="eve allowed by domain")
    carol = s.watcher("carol@localhost")
    carol.subscribe(ALICE)
    wait_until(lambda: any(p.type == "unsubscribed" for p in carol.seen(ALICE)),
               what="carol refused: not in the list")
    assert carol.views(ALICE) == []


def test_any_policy(stack_factory):
    """allow_watchers = any: a user of another domain may subscribe."""
    s = stack_factory(extra_config="[component]\nallow_watchers = any\n")
    s.start_component()
    eve = s.watcher("eve@other.localhost")
    eve.subscribe(ALICE)
    wait_until(lambda: eve.views(ALICE) == [UNKNOWN], what="eve allowed by 'any'")


def test_directed_presence(stack_factory):
    """Directed presence (RFC 6121 4.6) without a subscription, default policy: an allowed
    sender gets the contact's presence back, one the policy refuses never gets a presence
    that shows state."""
    s = stack_factory()
    s.start_component()
    carol = s.watcher("carol@localhost")
    carol.send_raw("<presence xmlns='jabber:client' to='%s'/>" % ALICE)
    wait_until(lambda: carol.views(ALICE) == [UNKNOWN], what="presence back to carol")
    eve = s.watcher("eve@other.localhost")
    eve.send_raw("<presence xmlns='jabber:client' to='%s'/>" % ALICE)
    carol.send_raw("<presence xmlns='jabber:client' to='%s'/>" % ALICE)
    wait_until(lambda: len(carol.seen(ALICE)) >= 2, what="the second directed answer")
    # eve's directed presence went first on the same component stream: no answer came.
    assert eve.seen(ALICE) == [] and s.component.alive()


def test_gateway_lookup(stack_factory):
    s = stack_factory(users=(("alice@localhost", "1001"), ("bob@localhost", "1002")),
                      extra_config="[user alice@localhost]\ntel = +1 (555) 0100\n")
    s.start_component()
    carol = s.watcher("carol@localhost")
    get = iq(carol, "<iq xmlns='jabber:client' type='get' to='phone.localhost'><query "
                    "xmlns='jabber:iq:gateway'/></iq>")
    assert "<prompt>" in get and "<desc>" in get

    def lookup(w, value):
        return iq(w, "<iq xmlns='jabber:client' type='set' to='phone.localhost'><query "
                     "xmlns='jabber:iq:gateway'><prompt>%s</prompt></query></iq>" % value)
    for q in ("1001", "sip:1001@127.0.0.1:%d" % s.pbx_port, "+15550100", "tel:+1-555-0100"):
        assert "<jid>alice@phone.localhost</jid>" in lookup(carol, q), q
    assert "<jid>bob@phone.localhost</jid>" in lookup(carol, "1002")
    assert "item-not-found" in lookup(carol, "9999")
    assert "bad-request" in lookup(carol, "x" * 300)
    # Someone the watcher policy does not allow learns nothing, not even the JID.
    eve = s.watcher("eve@other.localhost")
    refused = lookup(eve, "1001")
    assert "forbidden" in refused and "alice" not in refused


# ---- the user's own status through XEP-0356 ---------------------------------------------

def pep_items(w, node):
    return [e.xml for e in w.pep_events(frm="alice@localhost", node=node)]


def mutual(alice, bob):
    bob.subscribe("alice@localhost")
    wait_until(lambda: any(p.type == "subscribe" for p in alice.seen("bob@localhost")),
               what="subscription request")
    alice.authorize("bob@localhost")
    wait_until(lambda: any(p.type == "subscribe" for p in bob.seen("alice@localhost")),
               what="subscription back")
    bob.authorize("alice@localhost")


def test_privileged_pep(stack_factory):
    s = stack_factory(privilege=True)
    s.start_component()
    alice = s.watcher("alice@localhost")
    bob = s.watcher("bob@localhost", pep_nodes=(ACTIVITY, REACH))
    mutual(alice, bob)
    wait_until(lambda: "event=privileges domain=localhost" in s.component.log(),
               what="the server's <privilege/>")
    assert "pep=on" in s.component.log()
    call_pbx(s, [notify("dialog-info/asterisk-idle.xml", 0, pause_ms=500),
                 notify("dialog-info/asterisk-inuse.xml", 1, pause_ms=800),
                 notify("dialog-info/asterisk-idle.xml", 2, pause_ms=800)])
    s.start_sipbridge()
    wait_until(lambda: any("on_the_phone" in x for x in pep_items(bob, ACTIVITY)),
               timeout=20, what="activity: on the phone")
    wait_until(lambda: pep_items(bob, ACTIVITY)[-1].count("<") <= 3 and
               "on_the_phone" not in pep_items(bob, ACTIVITY)[-1],
               timeout=20, what="activity cleared after the call")
    acts = pep_items(bob, ACTIVITY)
    talking = [x for x in acts if "on_the_phone" in x][0]
    assert "talking" in talking and "On the phone" in talking
    reach = pep_items(bob, REACH)
    assert any(s.aor("1001") in x for x in reach)
    m = s.component.metrics()
    # Reachability once (it did not change during the call), activity on and off.
    assert m['offhook_pep_publishes_total{result="ok"}'] == 3, m
    assert len(reach) == 1, reach
    assert m['offhook_pep_publishes_total{result="error"}'] == 0
    assert m['offhook_pep_domains{granted="yes"}'] == 1
    # The item lives in alice's own PEP, with the presence access model.
    cfg = iq(alice, "<iq xmlns='jabber:client' type='get'><pubsub "
                    "xmlns='http://jabber.org/protocol/pubsub#owner'><configure node='%s'/>"
                    "</pubsub></iq>" % ACTIVITY)
    assert access_model(cfg) == "presence", cfg


def access_model(configure_result):
    """The value of the pubsub#access_model field in a node configuration form."""
    from xml.etree import ElementTree as ET
    for field in ET.fromstring(configure_result).iter("{jabber:x:data}field"):
        if field.get("var") == "pubsub#access_model":
            value = field.find("{jabber:x:data}value")
            return value.text if value is not None else None
    return None


def test_component_kill9_leaves_no_stale_state(stack_factory):
    """On the phone when the component dies; the call ends while it is down; after the
    restart both the contact's presence and alice's PEP activity say the call is over."""
    s = stack_factory(privilege=True)
    s.start_component()
    alice = s.watcher("alice@localhost")
    bob = s.watcher("bob@localhost", pep_nodes=(ACTIVITY,))
    mutual(alice, bob)
    bob.subscribe(ALICE)
    s.start_pbx_script([[step_respond(expires=3600, initial=True),
                         notify("dialog-info/asterisk-inuse.xml", 0, pause_ms=500),
                         step_answer_forever()]])
    s.start_sipbridge()
    wait_until(lambda: bob.last(ALICE) == ON_CALL, timeout=20, what="on the phone")
    wait_until(lambda: any("on_the_phone" in x for x in pep_items(bob, ACTIVITY)),
               what="PEP on the phone")
    old = s.component
    old.kill9()
    # The call ends while no component runs: only Redis learns it.
    s.redis.cli("HSET", "offhook:user:alice@localhost", "state", "idle", "ts", "1")
    s.redis.cli("XADD", "offhook:events", "*", "user", "alice@localhost", "state", "idle",
                "ts", "1")
    s.start_component()
    wait_until(lambda: bob.last(ALICE) == IDLE, timeout=20, what="presence after restart")
    wait_until(lambda: "on_the_phone" not in pep_items(bob, ACTIVITY)[-1], timeout=20,
               what="PEP cleared after restart")


def test_no_privileges_logged_once(stack_factory):
    s = stack_factory()  # Prosody without mod_privilege
    s.start_component()
    wait_until(lambda: "event=pep_off domain=localhost" in s.component.log(), timeout=15,
               what="the explanation")
    assert s.component.log().count("event=pep_off") == 1
    assert s.component.metrics()['offhook_pep_domains{granted="no"}'] == 1


def test_shared_roster_groups(stack_factory):
    """deploy/prosody's mod_groups: with bob and alice's phone contact in one group, bob
    sees the phone without ever subscribing (the server probes the contact for him)."""
    groups = "[Desk phones]\nbob@localhost=Bob\nalice@phone.localhost=Alice (phone)\n"
    s = stack_factory(prosody_kwargs={"groups": groups})
    s.start_component()
    call_pbx(s, [notify("dialog-info/asterisk-inuse.xml", 0, pause_ms=300)])
    s.start_sipbridge()
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "on_call",
               what="the call")
    bob = s.watcher("bob@localhost")
    wait_until(lambda: bob.last(ALICE) == ON_CALL, what="presence through the shared roster")
    roster = bob.call(lambda: dict(bob.client.client_roster))
    assert ALICE in roster


def test_wrong_secret_is_reported_once(stack_factory):
    """A component secret the server refuses: one clear error line however often it
    retries, each refusal counted, the secret itself never logged, the daemon stays up."""
    s = stack_factory()
    real = s.prosody.secret
    s.prosody.secret = "not-the-secret-42"
    s.write_config()
    s.prosody.secret = real
    s.start_component(wait_ready=False)
    wait_until(lambda: s.component.metrics().get(
        'offhook_xmpp_disconnects_total{cause="not_authorized"}', 0) >= 3, timeout=30,
        what="three refused handshakes")
    log = s.component.log()
    assert log.count("event=handshake_rejected") == 1, log
    assert "[xmpp] secret" in log
    assert "not-the-secret-42" not in log
    assert s.component.alive()
    assert s.component.metrics()["offhook_xmpp_connected"] == 0
    assert not s.component.ready()


def alice_on_the_phone(s):
    """Both daemons up, alice on a call, bob watching her phone contact: returns bob."""
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.subscribe(ALICE)
    call_pbx(s, [notify("dialog-info/asterisk-inuse.xml", 0, pause_ms=500)])
    s.start_sipbridge()
    wait_until(lambda: bob.last(ALICE) == ON_CALL, timeout=20, what="on the phone")
    return bob


def test_keep_presence_on_stop(stack_factory):
    """[component] keep_presence_on_stop = yes (planned restarts): a clean stop leaves the
    phone contact's presence as it was, and the restarted component carries on."""
    s = stack_factory(extra_config="[component]\nkeep_presence_on_stop = yes\n")
    bob = alice_on_the_phone(s)
    seen = len(bob.views(ALICE))
    assert s.component.stop() == 0
    assert "event=stopped" in s.component.log()
    # Anything the stop sent went out before the process exited; give it time to arrive.
    time.sleep(1.5)
    assert bob.views(ALICE)[seen:] == [], bob.views(ALICE)
    s.start_component()
    time.sleep(1.0)
    assert ("unavailable", "", "") not in bob.views(ALICE)
    assert UNKNOWN not in bob.views(ALICE)[seen:] and bob.last(ALICE) == ON_CALL


def test_stop_without_keep_marks_contacts_unavailable(stack_factory):
    """The default (keep_presence_on_stop = no): a clean stop tells watchers the phone
    contact is gone, so nobody keeps seeing a call the component no longer tracks."""
    s = stack_factory()
    bob = alice_on_the_phone(s)
    assert s.component.stop() == 0
    wait_until(lambda: bob.last(ALICE)[0] == "unavailable", timeout=10,
               what="the contact unavailable after the stop")


@pytest.mark.parametrize("beat", ["missing", "old"])
def test_start_without_sipbridge_shows_unknown(stack_factory, beat):
    """Issue 13, item 7: a component started while sipbridge is down shows every phone
    "unknown" from its first presence, never what Redis last held, whether sipbridge's
    heartbeat key is gone or still there but old (written 18 s ago: sipbridge died
    less than its 30 s TTL before). Once sipbridge is back, the phone shows again."""
    s = stack_factory(users=(("alice@localhost", "2001"),))
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.subscribe(ALICE)
    s.start_sipbridge()
    pbx.set(2001, "on_call")
    wait_until(lambda: bob.last(ALICE) == ON_CALL, timeout=20, what="on the phone")
    assert s.sipbridge.stop() == 0
    assert s.component.stop() == 0
    # The stop's goodbye is the server's to deliver: counted before the next start.
    wait_until(lambda: bob.last(ALICE) == ("unavailable", "", ""), timeout=10,
               what="the stop's goodbye")
    key = "offhook:heartbeat:sipbridge"
    if beat == "missing":
        s.redis.cli("DEL", key)
    else:
        s.redis.cli("SET", key, "1", "PX", "12000")
    seen = len(bob.seen(ALICE))
    s.start_component()
    wait_until(lambda: [p for p in bob.seen(ALICE)[seen:] if p.type == "unavailable" and
                        p.status], timeout=15, what="the phone's first presence after the start")
    after = [p.view() for p in bob.seen(ALICE)[seen:]]
    assert after[0] == UNKNOWN and ON_CALL not in after, after
    assert s.component.metrics()["offhook_sipbridge_alive"] == 0
    s.start_sipbridge()
    wait_until(lambda: bob.last(ALICE) == ON_CALL, timeout=20, what="the phone back")


def test_clean_stop_empties_activity_before_exit(stack_factory):
    """Issue 13, item 2, small: with PEP on, a clean stop sends the phone contact's
    goodbye and empties alice's "on the phone" activity, and exits only once the server
    has handled both (goodbye_delivered, logged before stopped)."""
    s = stack_factory(privilege=True)
    s.start_component()
    alice = s.watcher("alice@localhost")
    bob = s.watcher("bob@localhost", pep_nodes=(ACTIVITY,))
    mutual(alice, bob)
    bob.subscribe(ALICE)
    s.start_pbx_script([[step_respond(expires=3600, initial=True),
                         notify("dialog-info/asterisk-inuse.xml", 0, pause_ms=500),
                         step_answer_forever()]])
    s.start_sipbridge()
    wait_until(lambda: bob.last(ALICE) == ON_CALL, timeout=20, what="on the phone")
    wait_until(lambda: any("on_the_phone" in x for x in pep_items(bob, ACTIVITY)),
               what="PEP on the phone")
    assert s.component.stop() == 0
    log = s.component.log()
    assert "event=goodbye_delivered" in log, log[-2000:]
    assert log.index("event=goodbye_delivered") < log.index("event=stopped")
    wait_until(lambda: bob.last(ALICE) == ("unavailable", "", ""), what="the goodbye")
    wait_until(lambda: "on_the_phone" not in pep_items(bob, ACTIVITY)[-1],
               what="the activity emptied")


def test_refused_publishes_remembered_and_logged_once(stack_factory):
    """Issue 13, item 3, small: users without an account on the server. Their refusals
    make one log line (with the count and examples) per round, a reload asks them
    nothing again, and one of them coming online (the server probes its phone contacts)
    ends its hold: its account is asked again, and now acted in."""
    ghosts = ["ghost%d" % i for i in range(5)]
    users = [("alice@localhost", "1001")] + [("%s@localhost" % g, str(2000 + i))
                                             for i, g in enumerate(ghosts)]
    groups = "[Phones]\nghost0@localhost=Ghost\nalice@phone.localhost=Alice (phone)\n"
    s = stack_factory(users=users, privilege=True, prosody_kwargs={"groups": groups})
    s.start_component()
    wait_until(lambda: "event=publish_refused users=5" in s.component.log(), timeout=30,
               what="the one line for the refusals")
    log = s.component.log()
    assert log.count("event=publish_refused users=") == 1, log
    m = s.component.metrics()
    # Each ghost's PEP nodes (and vCard) were read, and the server refused every request.
    errors = m['offhook_privileged_requests_total{result="error"}']
    assert errors >= 10 and m['offhook_privilege_errors_total{condition="forbidden"}'] == errors
    # A reload republishes everyone it should: the ghosts are left alone.
    s.component.send_signal(signal.SIGHUP)
    wait_until(lambda: "event=reloaded" in s.component.log(), what="the reload")
    time.sleep(1)  # what the reload would send goes out at once; nothing must
    assert s.component.metrics()['offhook_privileged_requests_total{result="error"}'] == errors
    assert s.component.log().count("event=publish_refused users=") == 1
    # ghost0 gets an account and logs in: its server probes the phone contact in its
    # roster, which tells the component the account exists.
    s.xmpp.register("ghost0", "pw")
    ok = s.component.metrics()['offhook_privileged_requests_total{result="ok"}']
    s.watcher("ghost0@localhost")
    wait_until(lambda: "event=refusal_over user=ghost0@localhost" in s.component.log(),
               what="ghost0 seen online")
    # Its nodes read (and written where the view asks): the server acts in the account.
    wait_until(lambda: s.component.metrics()['offhook_privileged_requests_total{result="ok"}']
               > ok, what="ghost0's account acted in")
    assert s.component.metrics()['offhook_privileged_requests_total{result="error"}'] == errors
