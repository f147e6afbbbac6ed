"""Issue 18 on a real Prosody 0.12 with mod_privilege: what offhook writes into users' own
accounts, and how a SIP address leads to the person.

- alice's client publishes her own XEP-0108 activity: a call covers it and puts it back,
  a restart leaves it alone, an activity she publishes during a call wins;
- her node set to whitelist is written under whitelist, set to open is left alone;
- a server that grants pubsub set only gets no PEP writes at all (blind writes would
  trample her);
- XEP-0152 reach goes out once, not at every call;
- PEP follows her roster, not [component] allow_watchers (docs/operator-guide.md 3.3);
- her own vCard gets the desk phone added, nothing else touched (vCard4, vcard-temp);
- a SIP URI in every common form finds the phone contact and the person: the gateway
  answer, the contact's vCards, a message to the contact;
- the contact's caps say what the phone does (audio; video from its PIDF).

The same on ejabberd 23.01 (no privileged IQ there) is in test_ejabberd.py."""

import base64
import hashlib
from xml.etree import ElementTree as ET

from calls import CONTACT as ALICE_PHONE
from calls import IDLE, notify
from harness import PbxSim, step_answer_forever, step_respond, wait_until
from test_component import caps_forms

ACTIVITY = "http://jabber.org/protocol/activity"
REACH = "urn:xmpp:reach:0"
PUBSUB = "{http://jabber.org/protocol/pubsub}"
VCARD4 = "{urn:ietf:params:xml:ns:vcard-4.0}"
GRANT_BOTH = {"http://jabber.org/protocol/pubsub": "both"}


# ---- alice's client ----------------------------------------------------------------------

def publish_activity(w, inner, item_id="current"):
    """alice's client publishes her own activity (XEP-0108), as Gajim or Conversations do."""
    r = w.iq("<iq xmlns='jabber:client' type='set'><pubsub xmlns='http://jabber.org/protocol/"
             "pubsub'><publish node='%s'><item id='%s'><activity xmlns='%s'>%s</activity>"
             "</item></publish></pubsub></iq>" % (ACTIVITY, item_id, ACTIVITY, inner))
    assert r.get("type") == "result", ET.tostring(r)


def read_node(w, node=ACTIVITY):
    """(item id, payload element) of the user's own node's last item, or (None, None)."""
    r = w.iq("<iq xmlns='jabber:client' type='get'><pubsub xmlns='http://jabber.org/protocol/"
             "pubsub'><items node='%s' max_items='1'/></pubsub></iq>" % node)
    item = r.find(".//%sitem" % PUBSUB)
    if item is None:
        return None, None
    return item.get("id"), (list(item)[0] if len(item) else None)


def activity_of(payload):
    """'general/specific|text' of an <activity/>, '' for an empty one (what a client shows)."""
    if payload is None:
        return None
    general = specific = ""
    for c in payload:
        tag = c.tag.split("}")[1]
        if c.tag.startswith("{%s}" % ACTIVITY) and tag != "text" and not general:
            general = tag
            specific = list(c)[0].tag.split("}")[1] if len(c) else ""
    t = payload.find("{%s}text" % ACTIVITY)
    text = t.text if t is not None and t.text else ""
    return "%s/%s|%s" % (general, specific, text) if general or text else ""


def configure(w, node, access_model):
    r = w.iq("<iq xmlns='jabber:client' type='set'><pubsub xmlns='http://jabber.org/protocol/"
             "pubsub#owner'><configure node='%s'><x xmlns='jabber:x:data' type='submit'>"
             "<field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/"
             "pubsub#node_config</value></field><field var='pubsub#access_model'><value>%s"
             "</value></field></x></configure></pubsub></iq>" % (node, access_model))
    assert r.get("type") == "result", ET.tostring(r)


def seen_activities(w, frm="alice@localhost"):
    """What w's client showed for frm's activity, in order (repeats folded)."""
    out = []
    for e in w.pep_events(frm=frm, node=ACTIVITY):
        item = ET.fromstring(e.xml)
        a = activity_of(list(item)[0] if len(item) else None)
        if not out or out[-1] != a:
            out.append(a)
    return out


LUNCH = "relaxing/reading|Lunch break"
PHONE = "talking/on_the_phone|On the phone"
HOLD = "talking/on_the_phone|On hold"
DEADLINE = "working/coding|Deadline"


def mutual(a, b):
    """a and b subscribe to each other, each accepting the other (a real roster both)."""
    b.subscribe(a.jid)
    wait_until(lambda: any(p.type == "subscribe" for p in a.seen(b.jid)),
               what="subscription request")
    a.authorize(b.jid)
    wait_until(lambda: any(p.type == "subscribe" for p in b.seen(a.jid)),
               what="subscription back")
    b.authorize(a.jid)


def metric(s, name):
    return s.component.metrics().get(name, 0)


def privileged_ok(s):
    return metric(s, 'offhook_privileged_requests_total{result="ok"}')


def settled(s, before):
    """Waits until the component's privileged requests since before are answered and no
    other is in flight (each change is a read, maybe a write)."""
    def quiet():
        m = s.component.metrics()
        done = sum(m.get('offhook_privileged_requests_total{result="%s"}' % r, 0)
                   for r in ("ok", "error", "timeout", "lost"))
        return done > before and done == m.get('offhook_privileged_requests_total{result="sent"}')
    wait_until(quiet, what="the component's PEP requests answered")


def requests_done(s):
    m = s.component.metrics()
    return sum(m.get('offhook_privileged_requests_total{result="%s"}' % r, 0)
               for r in ("ok", "error", "timeout", "lost"))


def call(s, pbx, state, what):
    """The PBX puts alice's phone in state; waits until the component has read (and maybe
    written) her nodes for it."""
    before = requests_done(s)
    pbx.set("1001", state)
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == state,
               what="alice %s in Redis" % state)
    settled(s, before)


def pep_stack(stack_factory, **kw):
    kw.setdefault("privilege", True)
    s = stack_factory(**kw)
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.start_component()
    wait_until(lambda: "event=grant domain=localhost" in s.component.log(),
               what="the server's grants")
    return s, pbx


# ---- XEP-0108: never trample what the user published ---------------------------------------

def test_own_activity_covered_for_a_call_and_put_back(stack_factory):
    s, pbx = pep_stack(stack_factory)
    alice = s.watcher("alice@localhost")
    bob = s.watcher("bob@localhost", pep_nodes=(ACTIVITY, REACH))
    mutual(alice, bob)
    publish_activity(alice, "<relaxing><reading/></relaxing><text>Lunch break</text>")
    wait_until(lambda: seen_activities(bob) == [LUNCH], what="bob sees alice's lunch break")
    before = requests_done(s)
    s.start_sipbridge()
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "idle",
               what="alice idle")
    settled(s, before)
    assert activity_of(read_node(alice)[1]) == LUNCH  # idle: nothing of offhook's to clear

    call(s, pbx, "on_call", "a call")
    item_id, payload = read_node(alice)
    assert item_id == "offhook" and activity_of(payload) == PHONE
    # Her own item rides inside offhook's, so it survives even a crash of the component.
    prev = payload.find("{https://github.com/offhook/offhook#previous-activity}previous")
    assert prev is not None and prev.get("id") == "current"
    assert activity_of(list(prev)[0]) == LUNCH
    call(s, pbx, "on_hold", "hold")
    call(s, pbx, "idle", "hang up")
    item_id, payload = read_node(alice)
    assert (item_id, activity_of(payload)) == ("current", LUNCH)
    bob.sync()
    assert seen_activities(bob) == [LUNCH, PHONE, HOLD, LUNCH]
    # Reachability went out once, when the phone was first known: not at each change.
    reach = bob.pep_events(frm="alice@localhost", node=REACH)
    assert len(reach) == 1 and s.aor("1001") in reach[0].xml, reach

    # A clean stop, a start: her activity is left as it is (no publish at all).
    before_events = len(bob.pep_events(frm="alice@localhost", node=ACTIVITY))
    assert s.component.stop() == 0
    assert (read_node(alice)[0], activity_of(read_node(alice)[1])) == ("current", LUNCH)
    s.start_component()
    wait_until(lambda: 'offhook_privileged_requests_total{result="ok"}' in
               s.component.metrics() and privileged_ok(s) >= 2, what="the nodes read again")
    settled(s, 0)
    bob.sync()
    assert read_node(alice)[0] == "current"
    assert len(bob.pep_events(frm="alice@localhost", node=ACTIVITY)) == before_events


def test_activity_published_during_a_call_wins(stack_factory):
    s, pbx = pep_stack(stack_factory)
    alice = s.watcher("alice@localhost")
    bob = s.watcher("bob@localhost", pep_nodes=(ACTIVITY,))
    mutual(alice, bob)
    s.start_sipbridge()
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "idle",
               what="alice idle")
    call(s, pbx, "on_call", "a call")
    assert activity_of(read_node(alice)[1]) == PHONE
    # Mid-call, her client publishes what she is doing: that is what she wants shown.
    publish_activity(alice, "<working><coding/></working><text>Deadline</text>", "w1")
    call(s, pbx, "on_hold", "hold")
    assert (read_node(alice)[0], activity_of(read_node(alice)[1])) == ("w1", DEADLINE)
    call(s, pbx, "idle", "hang up")
    assert (read_node(alice)[0], activity_of(read_node(alice)[1])) == ("w1", DEADLINE)
    bob.sync()
    assert seen_activities(bob)[-1] == DEADLINE
    log = s.component.log()
    assert log.count("event=user_item user=alice@localhost node=activity") == 1, log
    assert metric(s, 'offhook_pep_skipped_total{reason="user_item"}') >= 1
    # The next call covers it again, and gives it back.
    call(s, pbx, "on_call", "the next call")
    assert activity_of(read_node(alice)[1]) == PHONE
    call(s, pbx, "idle", "hang up")
    assert (read_node(alice)[0], activity_of(read_node(alice)[1])) == ("w1", DEADLINE)


def test_node_access_models(stack_factory):
    """XEP-0223 publish-options: a node alice narrowed (whitelist) is written under its
    model; one she opened is left alone (phone state would go to anyone). Neither is
    reconfigured, each decision counted and logged once."""
    s, pbx = pep_stack(stack_factory)
    alice = s.watcher("alice@localhost")
    bob = s.watcher("bob@localhost", pep_nodes=(ACTIVITY,))
    mutual(alice, bob)
    publish_activity(alice, "<relaxing><reading/></relaxing><text>Lunch break</text>")
    configure(alice, ACTIVITY, "whitelist")
    s.start_sipbridge()
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "idle",
               what="alice idle")
    call(s, pbx, "on_call", "a call")
    assert activity_of(read_node(alice)[1]) == PHONE
    bob.sync()
    assert PHONE not in seen_activities(bob)  # bob is not on her whitelist
    call(s, pbx, "idle", "hang up")
    assert activity_of(read_node(alice)[1]) == LUNCH
    assert metric(s, 'offhook_pep_model_adopted_total{model="whitelist"}') == 1
    assert s.component.log().count("event=node_model user=alice@localhost node=activity "
                                   "access_model=whitelist") == 1

    configure(alice, ACTIVITY, "open")
    for _ in range(2):
        call(s, pbx, "on_call", "a call")
        assert (read_node(alice)[0], activity_of(read_node(alice)[1])) == ("current", LUNCH)
        call(s, pbx, "idle", "hang up")
    assert metric(s, 'offhook_pep_skipped_total{reason="open_node"}') == 2
    assert s.component.log().count("event=open_node user=alice@localhost node=activity") == 1
    # Each refusal was the server's precondition-not-met (a conflict), counted as such.
    assert metric(s, 'offhook_privilege_errors_total{condition="conflict"}') >= 2 * 4


def test_set_only_grant_writes_nothing(stack_factory):
    """A server granting pubsub set without get: offhook cannot see what alice published,
    so it writes nothing, and says why once."""
    s, pbx = pep_stack(stack_factory, privilege={"http://jabber.org/protocol/pubsub": "set"})
    alice = s.watcher("alice@localhost")
    publish_activity(alice, "<relaxing><reading/></relaxing><text>Lunch break</text>")
    s.start_sipbridge()
    wait_until(lambda: "event=pep_off domain=localhost" in s.component.log(),
               what="the explanation")
    pbx.set("1001", "on_call")
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state") ==
               "on_call", what="the call")
    pbx.set("1001", "idle")
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "idle",
               what="hang up")
    log = s.component.log()
    assert log.count("event=pep_off") == 1
    assert "grants pubsub set but not get" in log
    assert s.component.metrics()['offhook_privileged_requests_total{result="sent"}'] == 0
    assert s.component.metrics()['offhook_pep_domains{granted="no"}'] == 1
    assert (read_node(alice)[0], activity_of(read_node(alice)[1])) == ("current", LUNCH)


def test_pep_follows_the_users_roster(stack_factory):
    """Issue 15 item 10, decided and documented (operator guide 3.3): [component]
    allow_watchers governs the phone contact, which anyone may ask for; PEP is alice's own
    account, shown to the presence subscribers she accepted. eve@other.localhost is
    refused the contact but, once alice accepted her, sees alice's 'on the phone' like
    her presence."""
    s, pbx = pep_stack(stack_factory)
    alice = s.watcher("alice@localhost")
    eve = s.watcher("eve@other.localhost", pep_nodes=(ACTIVITY,))
    eve.subscribe(ALICE_PHONE)
    wait_until(lambda: any(p.type == "unsubscribed" for p in eve.seen(ALICE_PHONE)),
               what="eve refused the phone contact")
    mutual(alice, eve)
    s.start_sipbridge()
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "idle",
               what="alice idle")
    call(s, pbx, "on_call", "a call")
    wait_until(lambda: PHONE in seen_activities(eve), what="eve sees alice's PEP")
    assert eve.views(ALICE_PHONE) == []  # never the phone contact's presence


# ---- the person's own vCard ---------------------------------------------------------------

VCARD_TEMP = ("<vCard xmlns='vcard-temp'><FN>Alice Jones</FN><EMAIL><INTERNET/><USERID>"
              "alice@example.com</USERID></EMAIL><TEL><HOME/><NUMBER>+1 555 0199</NUMBER>"
              "</TEL><ORG><ORGNAME>Example</ORGNAME></ORG></vCard>")


def vcard_temp_of(w, jid=None):
    r = w.iq("<iq xmlns='jabber:client' type='get'%s>%s</iq>" % (
        " to='%s'" % jid if jid else "", "<vCard xmlns='vcard-temp'/>"))
    return r.find("{vcard-temp}vCard")


def tel_numbers(vcard):
    return sorted(t.findtext("{vcard-temp}NUMBER") for t in vcard.findall("{vcard-temp}TEL"))


def test_own_vcard_gets_the_desk_phone(stack_factory):
    s = stack_factory(privilege=True, extra_config="[user alice@localhost]\n"
                                                   "tel = +1 (555) 0100\n")
    alice = s.watcher("alice@localhost")
    bob = s.watcher("bob@localhost")
    r = alice.iq("<iq xmlns='jabber:client' type='set'>%s</iq>" % VCARD_TEMP)
    assert r.get("type") == "result"
    s.start_component()
    wait_until(lambda: metric(s, 'offhook_user_vcards_total{outcome="written"}') == 1,
               what="alice's vCard written")
    mine = vcard_temp_of(alice)
    # Everything alice wrote is still there; the desk number and the SIP address added.
    assert mine.findtext("{vcard-temp}FN") == "Alice Jones"
    assert mine.find("{vcard-temp}EMAIL").findtext("{vcard-temp}USERID") == "alice@example.com"
    assert mine.find("{vcard-temp}ORG").findtext("{vcard-temp}ORGNAME") == "Example"
    assert tel_numbers(mine) == sorted(["+1 555 0199", "+15550100", s.aor("1001")])
    # Her colleagues see it too (Prosody keeps it as vCard4, vcard-temp is a view of it).
    assert tel_numbers(vcard_temp_of(bob, "alice@localhost")) == tel_numbers(mine)
    item_id, v4 = read_node(alice, "urn:xmpp:vcard4")
    assert item_id == "current"
    assert "tel:+15550100" in [t.findtext(VCARD4 + "uri") for t in v4.findall(VCARD4 + "tel")]
    # A restart looks again and writes nothing: it is all there.
    assert s.component.stop() == 0
    s.start_component()
    wait_until(lambda: metric(s, 'offhook_user_vcards_total{outcome="unchanged"}') >= 1,
               what="alice's vCard looked at again")
    assert metric(s, 'offhook_user_vcards_total{outcome="written"}') == 0
    assert "event=vcard_on domain=localhost" in s.component.log()


def test_own_vcard_through_vcard_temp(stack_factory):
    """Granted vcard-temp (the vCard of servers such as ejabberd): that one is used."""
    grants = dict(GRANT_BOTH, **{"vcard-temp": "both"})
    s = stack_factory(privilege=grants, users=(("alice@localhost", "1001"),))
    alice = s.watcher("alice@localhost")
    assert alice.iq("<iq xmlns='jabber:client' type='set'>%s</iq>" % VCARD_TEMP).get(
        "type") == "result"
    s.start_component()
    wait_until(lambda: metric(s, 'offhook_user_vcards_total{outcome="written"}') == 1,
               what="alice's vCard written")
    assert 'vcard="vcard-temp (XEP-0054)"' in s.component.log()
    mine = vcard_temp_of(alice)
    assert mine.findtext("{vcard-temp}FN") == "Alice Jones"
    assert tel_numbers(mine) == sorted(["+1 555 0199", s.aor("1001")])


# ---- from a SIP address to the person ------------------------------------------------------

def lookup(w, value):
    return w.iq("<iq xmlns='jabber:client' type='set' to='phone.localhost'><query "
                "xmlns='jabber:iq:gateway'><prompt>%s</prompt></query></iq>" % value)


def escape(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
        '"', "&quot;")


def sip_forms(aor):
    """The ways a person or a PBX writes alice's SIP address."""
    return [aor, "<%s>" % aor, '"Alice Jones" <%s>' % aor, "Alice <%s;transport=udp>" % aor,
            aor.replace("sip:", "SIP:", 1), aor + ";transport=tcp", aor + "?Subject=hi",
            "sips:" + aor[4:], "sip:+1-555-0100@gw.example.net;user=phone",
            "<sip:+15550100@gw.example.net;user=phone>", "tel:+1-555-0100", "+1 (555) 0100",
            "555 0100", "1001"]


def test_sip_address_leads_to_the_person(stack_factory):
    s = stack_factory(users=(("alice@localhost", "1001"), ("bob@localhost", "1002")),
                      extra_config="[user alice@localhost]\nname = Alice Jones\n"
                                   "tel = +1 555 0100\n")
    s.start_component()
    carol = s.watcher("carol@localhost")
    aor = s.aor("1001")
    for form in sip_forms(aor):
        r = lookup(carol, escape(form))
        assert r.findtext("{jabber:iq:gateway}query/{jabber:iq:gateway}jid") == ALICE_PHONE, \
            (form, ET.tostring(r))
        person = r.find("{jabber:iq:gateway}query/{https://github.com/offhook/offhook#person}"
                        "person")
        assert person is not None and person.get("jid") == "alice@localhost", form
        assert person.get("name") == "Alice Jones"
    # The host counts, and a number names nobody unless it is someone's.
    for nobody in ("sip:1001@elsewhere.example.net", "sip:1001@127.0.0.1:1",
                   "sip:+15550199@gw.example.net;user=phone", "<mailto:alice@localhost>"):
        r = lookup(carol, escape(nobody))
        assert r.get("type") == "error" and r.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}"
                                                    "item-not-found") is not None, nobody

    # The phone contact's vCards name the person and the phone.
    v = vcard_temp_of(carol, ALICE_PHONE)
    assert v.findtext("{vcard-temp}JABBERID") == "alice@localhost"
    assert tel_numbers(v) == sorted(["+1 555 0100", aor])
    r = carol.iq("<iq xmlns='jabber:client' type='get' to='%s'><vcard xmlns='urn:ietf:params:"
                 "xml:ns:vcard-4.0'/></iq>" % ALICE_PHONE)
    v4 = r.find(VCARD4 + "vcard")
    assert v4.find(VCARD4 + "impp").findtext(VCARD4 + "uri") == "xmpp:alice@localhost"
    r = carol.iq("<iq xmlns='jabber:client' type='get' to='%s'><pubsub xmlns='http://jabber.org"
                 "/protocol/pubsub'><items node='urn:xmpp:vcard4'/></pubsub></iq>" % ALICE_PHONE)
    assert r.find(".//%sitem/%svcard" % (PUBSUB, VCARD4)) is not None

    # A message to the phone contact is answered with where to write instead.
    carol.send_raw("<message xmlns='jabber:client' to='%s' type='chat'><body>Are you there?"
                   "</body></message>" % ALICE_PHONE)
    wait_until(lambda: carol.got_messages(ALICE_PHONE), what="the pointer")
    body = carol.got_messages(ALICE_PHONE)[0].findtext("{jabber:client}body")
    assert "xmpp:alice@localhost" in body and "Alice Jones" in body
    # Once a minute per sender: a chatty robot does not start a loop.
    carol.send_raw("<message xmlns='jabber:client' to='%s' type='chat'><body>Hello?</body>"
                   "</message>" % ALICE_PHONE)
    wait_until(lambda: metric(s, 'offhook_contact_messages_total{outcome="throttled"}') == 1,
               what="the second message held back")
    carol.sync()
    assert len(carol.got_messages(ALICE_PHONE)) == 1

    # Someone the watcher policy refuses learns nothing: no person, no number, no pointer.
    eve = s.watcher("eve@other.localhost")
    r = lookup(eve, escape(aor))
    assert r.get("type") == "error" and b"alice" not in ET.tostring(r)
    for q in ("<vCard xmlns='vcard-temp'/>", "<vcard xmlns='urn:ietf:params:xml:ns:vcard-4.0'/>"):
        r = eve.iq("<iq xmlns='jabber:client' type='get' to='%s'>%s</iq>" % (ALICE_PHONE, q))
        assert r.get("type") == "error" and b"555" not in ET.tostring(r)
    eve.send_raw("<message xmlns='jabber:client' to='%s' type='chat' id='e1'><body>hi</body>"
                 "</message>" % ALICE_PHONE)
    wait_until(lambda: eve.got_messages(ALICE_PHONE), what="eve's answer")
    m = eve.got_messages(ALICE_PHONE)[0]
    assert m.get("type") == "error" and "alice@localhost" not in ET.tostring(m).decode()


# ---- what the phone does -------------------------------------------------------------------

def caps_ver(s):
    raw = [x.replace('\\"', '"') for x in s.component.log().splitlines()
           if "stanza=\"<presence" in x and "caps" in x]  # the trace is quoted: \" for "
    return raw[-1].split('ver="')[1].split('"')[0] if raw else None


def disco(w, ver):
    r = w.iq("<iq xmlns='jabber:client' type='get' to='%s'><query xmlns='http://jabber.org/"
             "protocol/disco#info' node='https://github.com/offhook/offhook#%s'/></iq>"
             % (ALICE_PHONE, ver))
    return r.find("{http://jabber.org/protocol/disco#info}query")


def verification(q):
    ns = "{http://jabber.org/protocol/disco#info}"
    idents = sorted("%s/%s//%s<" % (i.get("category"), i.get("type"), i.get("name") or "")
                    for i in q.findall(ns + "identity"))
    feats = sorted(f.get("var") + "<" for f in q.findall(ns + "feature"))
    return base64.b64encode(hashlib.sha1("".join(idents + feats + caps_forms(q)).encode())
                            .digest()).decode()


def test_caps_say_video_when_the_pidf_does(stack_factory):
    """A phone whose PIDF has an open tuple with RFC 5196 <servcaps><video>true: its
    contact's caps (and disco#info) add video to audio; one without: audio only. Two hashes
    in all, each matching its disco#info."""
    s = stack_factory(users=(("alice@localhost", "1001"),),
                      extra_config="[sip]\nevents = presence\n")
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.subscribe(ALICE_PHONE)
    s.start_pbx_script([[step_respond(expires=3600, initial=True),
                         notify("pidf/asterisk-ready.xml", pause_ms=1500),
                         notify("pidf/servcaps-video.xml", pause_ms=300),
                         step_answer_forever()]])
    s.start_sipbridge()
    wait_until(lambda: bob.last(ALICE_PHONE) == IDLE, what="the phone reachable")
    audio = caps_ver(s)
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "video") == "1",
               timeout=20, what="video in the record")
    wait_until(lambda: caps_ver(s) != audio, what="the contact's caps changed")
    video = caps_ver(s)
    for ver, media in ((audio, ["audio<"]), (video, ["audio<", "video<"])):
        q = disco(bob, ver)
        assert verification(q) == ver
        forms = caps_forms(q)
        assert forms[forms.index("media<") + 1:forms.index("protocol<")] == media, forms
