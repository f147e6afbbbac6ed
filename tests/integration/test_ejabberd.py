"""offhook-component against a real ejabberd 23.01 (deploy/ejabberd/), end to end: the same
call as test_walking_skeleton, a foreign-domain watcher refused, disco on the component,
and the roster recipes of deploy/ejabberd/README.md.

ejabberd starts once for the module (a few seconds to start and to stop); each test gets
its own Redis, component, sipbridge and sipp, and the accounts it logged in with are
re-created afterwards."""

import os
import time

import pytest

from calls import ASTERISK_CALL_VIEWS, CONTACT, asterisk_call_notifies
from ejabberd import Ejabberd, available
from harness import Workdir, wait_until

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture(scope="module")
def ejabberd_server():
    wd = Workdir(prefix="offhook-ejd-")
    server = Ejabberd(wd.path)
    for u in ("alice", "bob", "carol"):
        server.register(u, "pw")
    server.register("eve", "pw", host="other.localhost")
    try:
        server.start()
    except Exception:
        wd.cleanup()
        raise
    yield server
    server.stop()
    left = server.alive()
    wd.cleanup()
    assert not left, "ejabberd node %s still running after stop()" % server.node


@pytest.fixture
def xmpp(ejabberd_server):
    """stack_factory's stacks run on the module's ejabberd (see conftest.xmpp)."""
    return ejabberd_server


def test_call_turns_into_presence(stack_factory):
    s = stack_factory()
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.subscribe(CONTACT)
    # Before sipbridge has said anything, Bob's client shows the phone as unknown.
    try:
        wait_until(lambda: bob.views(CONTACT) == ASTERISK_CALL_VIEWS[:1],
                   what="initial presence")
    except TimeoutError:
        raise AssertionError("Bob saw %r\n%s" % (bob.seen(CONTACT), s.logs()))
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

    # ejabberd keeps the subscription in Bob's roster (the component answered 'subscribed').
    roster = s.ejabberd.ctl("get_roster", "bob", "localhost").stdout
    assert CONTACT in roster and "to" in roster.split(CONTACT, 1)[1].splitlines()[0]

    comp = s.component.metrics()
    assert comp["offhook_presence_updates_total"] == 5
    assert comp["offhook_xmpp_connected"] == 1
    assert s.redis.cli("SMEMBERS", "offhook:watchers:" + CONTACT) == "bob@localhost"

    assert s.sipbridge.stop() == 0
    wait_until(s.pbx.finished, what="sipp to see the un-SUBSCRIBE")


def test_foreign_domain_watcher_refused(stack_factory):
    s = stack_factory()
    s.start_component()
    eve = s.watcher("eve@other.localhost")
    eve.subscribe(CONTACT)
    try:
        wait_until(lambda: any(p.type == "unsubscribed" for p in eve.seen(CONTACT)),
                   what="refusal")
    except TimeoutError:
        raise AssertionError("Eve saw %r\n%s" % (eve.seen(CONTACT), s.logs()))
    # Eve never sees the phone's state, not even "unknown".
    assert eve.views(CONTACT) == []
    assert s.component.metrics()["offhook_watchers_refused_total"] == 1
    assert s.redis.cli("SMEMBERS", "offhook:watchers:" + CONTACT) == ""


def test_disco_info_on_component(stack_factory):
    s = stack_factory()
    s.start_component()
    bob = s.watcher("bob@localhost")
    res = bob.run(lambda: bob.client.plugin["xep_0030"].get_info(
        jid="phone.localhost", timeout=10))
    identities = res["disco_info"]["identities"]
    assert ("gateway", "sip", None, "offhook desk-phone presence") in identities
    assert s.component.alive()
    assert s.component.metrics()['offhook_stanzas_sent_total{kind="iq_result"}'] >= 1


def test_provisioned_roster_item_is_probed(stack_factory):
    """deploy/ejabberd/README.md's way to give users the phone contact without a
    subscription request: add_rosteritem with subscription 'to'. At login ejabberd probes
    the contact; the component answers and keeps Bob as a watcher, so the call reaches him."""
    s = stack_factory()
    s.ejabberd.ctl("add_rosteritem", "bob", "localhost", "alice", "phone.localhost",
                   "Alice (phone)", "Desk phones", "to")
    s.start_component()
    bob = s.watcher("bob@localhost")
    try:
        wait_until(lambda: bob.views(CONTACT) == ASTERISK_CALL_VIEWS[:1],
                   what="presence answering ejabberd's probe")
    except TimeoutError:
        raise AssertionError("Bob saw %r\n%s" % (bob.seen(CONTACT), s.logs()))
    assert not any(p.type == "subscribed" for p in bob.seen(CONTACT))
    assert s.redis.cli("SMEMBERS", "offhook:watchers:" + CONTACT) == "bob@localhost"
    s.start_pbx(asterisk_call_notifies(pause_ms=200))
    s.start_sipbridge()
    try:
        wait_until(lambda: bob.views(CONTACT) == ASTERISK_CALL_VIEWS, timeout=20,
                   what="Bob seeing the whole call")
    except TimeoutError:
        raise AssertionError("Bob saw %r\n%s" % (bob.views(CONTACT), s.logs()))


def test_shared_roster_refuses_component_contacts(ejabberd_server):
    """Pins a claim of deploy/ejabberd/README.md: ejabberd 23.01's mod_shared_roster does
    not take members outside its virtual hosts, so srg_user_add of alice@phone.localhost
    reports success but adds nobody. If this fails, ejabberd changed: update the README."""
    srv = ejabberd_server
    try:
        srv.ctl("srg_create", "phones", "localhost", "Desk phones", "Phone contacts", "")
        r = srv.ctl("srg_user_add", "alice", "phone.localhost", "phones", "localhost",
                    check=False)
        assert r.returncode == 0
        assert srv.ctl("srg_get_members", "phones", "localhost").stdout.strip() == ""
        assert "Attempted adding to shared roster user of inexistent vhost phone.localhost" \
            in srv.log()
        # A member on a virtual host is taken: the group itself works.
        srv.ctl("srg_user_add", "carol", "localhost", "phones", "localhost")
        assert srv.ctl("srg_get_members", "phones", "localhost").stdout.split() == \
            ["carol@localhost"]
    finally:
        srv.ctl("srg_delete", "phones", "localhost", check=False)


def test_server_runs_without_epmd(ejabberd_server):
    """ejabberdctl.cfg gives each node its own distribution port: no epmd is started (or
    left behind), and concurrent test runs cannot collide on node names in a shared one."""
    assert ejabberd_server.alive()
    assert os.path.exists(os.path.join(ejabberd_server.spool, "ejabberd.pid"))
    cmdline = open("/proc/%d/cmdline" % ejabberd_server.pid, "rb").read().split(b"\0")
    assert b"-start_epmd" in cmdline and b"false" in cmdline


# ---- issue 18 on ejabberd 23.01 ---------------------------------------------------------

def test_recipe_grants_nothing_offhook_does_not_use(stack_factory):
    """deploy/ejabberd/ejabberd.yml grants no XEP-0356 privilege on 23.01: offhook uses
    none that 23.01 has. The old recipe's presence managed_entity streamed every user's
    presence to the component; now bob logging in sends it nothing, and offhook says once
    why it does not write into users' accounts."""
    s = stack_factory()
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.iq("<iq xmlns='jabber:client' type='get' to='phone.localhost'><ping xmlns='urn:xmpp:"
           "ping'/></iq>")
    assert s.component.metrics()['offhook_stanzas_received_total{kind="presence"}'] == 0
    assert "<privilege" not in s.component.log()
    wait_until(lambda: "event=pep_off domain=localhost" in s.component.log(), timeout=15,
               what="PEP off, said")
    log = s.component.log()
    assert "sent no XEP-0356 <privilege/>" in log and log.count("event=pep_off") == 1
    assert log.count("event=vcard_off domain=localhost") == 1


def test_sip_address_leads_to_the_person_on_ejabberd(stack_factory):
    from test_user_accounts import escape, lookup, sip_forms, tel_numbers, vcard_temp_of
    s = stack_factory(users=(("alice@localhost", "1001"),),
                      extra_config="[user alice@localhost]\nname = Alice Jones\n"
                                   "tel = +1 555 0100\n")
    s.start_component()
    carol = s.watcher("carol@localhost")
    for form in sip_forms(s.aor("1001")):
        r = lookup(carol, escape(form))
        assert r.findtext("{jabber:iq:gateway}query/{jabber:iq:gateway}jid") == CONTACT, form
        person = r.find("{jabber:iq:gateway}query/{https://github.com/offhook/offhook#person}"
                        "person")
        assert person.get("jid") == "alice@localhost", form
    assert lookup(carol, escape("sip:1001@elsewhere.example.net")).get("type") == "error"
    v = vcard_temp_of(carol, CONTACT)
    assert v.findtext("{vcard-temp}JABBERID") == "alice@localhost"
    assert tel_numbers(v) == sorted(["+1 555 0100", s.aor("1001")])
    carol.send_raw("<message xmlns='jabber:client' to='%s' type='chat'><body>Hi?</body>"
                   "</message>" % CONTACT)
    wait_until(lambda: carol.got_messages(CONTACT), what="the pointer to the person")
    assert "xmpp:alice@localhost" in carol.got_messages(CONTACT)[0].findtext(
        "{jabber:client}body")
    eve = s.watcher("eve@other.localhost")
    assert lookup(eve, escape(s.aor("1001"))).get("type") == "error"


def test_own_activity_untouched_on_ejabberd(stack_factory):
    """No IQ permission on 23.01: whatever happens on the phone, alice's own activity in
    ejabberd's PEP is hers alone (bob, her contact, sees only what she published)."""
    from harness import PbxSim
    from test_user_accounts import (ACTIVITY, LUNCH, activity_of, mutual, publish_activity,
                                    read_node, seen_activities)
    s = stack_factory(users=(("alice@localhost", "1001"),))
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.start_component()
    alice = s.watcher("alice@localhost")
    bob = s.watcher("bob@localhost", pep_nodes=(ACTIVITY,))
    mutual(alice, bob)
    publish_activity(alice, "<relaxing><reading/></relaxing><text>Lunch break</text>")
    wait_until(lambda: seen_activities(bob) == [LUNCH], what="bob sees her lunch break")
    bob.subscribe(CONTACT)
    s.start_sipbridge()
    for state, view in (("on_call", ("available", "dnd", "On the phone")),
                        ("idle", ("available", "", ""))):
        pbx.set("1001", state)
        wait_until(lambda: bob.last(CONTACT) == view, timeout=20, what="bob sees " + state)
    bob.sync()
    assert seen_activities(bob) == [LUNCH]
    assert (read_node(alice)[0], activity_of(read_node(alice)[1])) == ("current", LUNCH)


# ---- two connections for one component domain (issue 12) ------------------------------

class RawComponent:
    """A bare XEP-0114 connection: the handshake, then every stanza the server routes to
    it, counted by its 'to'."""

    def __init__(self, port, domain, secret):
        import hashlib
        import re
        import socket
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall((
            "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='%s'>" % domain).encode())
        head = self._read_until(lambda b: re.search(rb"<stream:stream[^>]*>", b))
        sid = re.search(rb"id=['\"]([^'\"]+)['\"]", head).group(1).decode()
        self.sock.sendall(("<handshake>%s</handshake>" % hashlib.sha1(
            (sid + secret).encode()).hexdigest()).encode())
        self.buf = self._read_until(lambda b: b"<handshake" in b or b"stream:error" in b or
                                    b"</stream:stream>" in b)
        self.accepted = b"<handshake" in self.buf and b"stream:error" not in self.buf

    def _read_until(self, cond, timeout=5):
        import time as _t
        data, deadline = b"", _t.monotonic() + timeout
        while not cond(data) and _t.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        return data

    def drain(self, timeout=0.5):
        """Everything received until the line has been quiet for timeout."""
        self.sock.settimeout(timeout)
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            self.buf += chunk
        return self.buf

    def close(self):
        try:
            self.sock.sendall(b"</stream:stream>")
        except OSError:
            pass
        self.sock.close()


def test_two_connections_for_one_component_domain(ejabberd_server):
    """What ejabberd 23.01 does with a second XEP-0114 connection for a domain already
    connected (docs/operator-guide.md, "Running on two hosts"): unlike Prosody (which
    refuses it with <conflict/>) it accepts both, keeps both, and spreads the stanzas for
    the domain over them (route balancing), so two active offhook components would each
    see part of the subscriptions and probes. Hence the lease: one connects, the other
    waits."""
    srv = ejabberd_server
    a = RawComponent(srv.comp, srv.domain, srv.secret)
    b = RawComponent(srv.comp, srv.domain, srv.secret)
    try:
        assert a.accepted, a.buf
        assert b.accepted, b.buf
        from watcher import Watcher
        bob = Watcher("bob@localhost", "pw", srv.c2s)
        try:
            for i in range(40):
                bob.send_raw("<presence to='u%d@%s' type='probe'/>" % (i, srv.domain))
            time.sleep(1.0)
        finally:
            bob.close()
        got_a = a.drain().count(b"type=\"probe\"") + a.buf.count(b"type='probe'")
        got_b = b.drain().count(b"type=\"probe\"") + b.buf.count(b"type='probe'")
        print("EJABBERD two connections: first got %d probes, second %d" % (got_a, got_b))
        assert got_a + got_b >= 40
        assert got_a > 0 and got_b > 0, (got_a, got_b)
    finally:
        a.close()
        b.close()


def test_standby_component_on_ejabberd(stack_factory, ejabberd_server):
    """Two offhook components with one configuration on ejabberd: one connects, the other
    waits on its lease; killed, the active one is replaced by the standby, and stopped
    cleanly it hands over with no "unavailable" shown."""
    from cluster import Member, member_config
    from harness import free_port
    s = stack_factory()
    s.start_pbx(asterisk_call_notifies(pause_ms=100))
    comps = {}

    def start(label):
        port = free_port()
        cfg = member_config(s.config, os.path.join(s.dir, label + ".conf"),
                            [("component", "metrics", "127.0.0.1:%d" % port),
                             ("component", "instance", label)])
        d = Member("component", label, cfg, s.dir, port)
        s.all_daemons.append(d)
        comps[label] = d
        wait_until(d.ready, timeout=30, what="component %s ready" % label)
        return d

    c1 = start("c1")
    wait_until(lambda: c1.metrics().get("offhook_xmpp_connected") == 1, what="c1 connected")
    c2 = start("c2")
    assert c2.metrics().get("offhook_xmpp_connected") == 0
    bob = s.watcher("bob@localhost", reconnect=True)
    bob.subscribe(CONTACT)
    s.start_sipbridge()
    wait_until(lambda: bob.last(CONTACT) == ASTERISK_CALL_VIEWS[-1], timeout=20,
               what="the call shown")
    t0 = time.monotonic()
    c1.kill9()
    wait_until(lambda: c2.metrics().get("offhook_xmpp_connected") == 1, timeout=15,
               what="the standby connected")
    took = time.monotonic() - t0
    # Nobody was connected between the kill and the standby: a presence since is its.
    wait_until(lambda: any(p.at > t0 for p in bob.seen(CONTACT)), timeout=10,
               what="the presence sent again")
    assert bob.last(CONTACT) == ASTERISK_CALL_VIEWS[-1]
    c3 = start("c3")
    t1 = time.monotonic()
    assert c2.stop() == 0
    wait_until(lambda: c3.metrics().get("offhook_xmpp_connected") == 1, timeout=10,
               what="c3 connected after the handover")
    handover = time.monotonic() - t1
    time.sleep(0.5)
    assert not [p for p in bob.seen(CONTACT) if p.at > t1 and p.type == "unavailable"]
    assert bob.last(CONTACT) == ASTERISK_CALL_VIEWS[-1]
    print("EJABBERD standby: connected %.2f s after the kill, %.2f s after the clean stop"
          % (took, handover))
