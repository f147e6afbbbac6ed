"""Issue 6: hostile stanzas. A real XMPP server never lets a client forge addresses, so
these are sent by a scripted XEP-0114 server that the real offhook-component connects to:
forged and malformed JIDs, stanzas for foreign domains, oversized and deeply nested
stanzas, privilege grants from a domain with no users, and finally broken XML. Each gets
the right answer (or none), a count in metrics, no state change, and the component stays
up and reconnects after the stream breaks."""

import hashlib
import re
import socket
import threading
import time

from calls import CONTACT as ALICE
from harness import free_port, wait_until

DOMAIN = "phone.localhost"
SECRET = "s3cret"


class ScriptedServer:
    """Accepts the component's XEP-0114 stream, checks its handshake, records what it
    sends, and sends what the test says."""

    def __init__(self):
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(4)
        self.conn = None
        self.data = ""
        self.streams = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = ""
        conn.settimeout(10)
        try:
            while "<stream:stream" not in buf or ">" not in buf.split("<stream:stream", 1)[1]:
                buf += conn.recv(4096).decode()
            sid = "id%d" % int(time.time() * 1000)
            conn.sendall(("<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx."
                          "jabber.org/streams' xmlns='jabber:component:accept' from='%s' "
                          "id='%s'>" % (DOMAIN, sid)).encode())
            while "</handshake>" not in buf:
                buf += conn.recv(4096).decode()
            digest = re.search(r"<handshake[^>]*>([0-9a-f]+)</handshake>", buf).group(1)
            if digest != hashlib.sha1((sid + SECRET).encode()).hexdigest():
                conn.sendall(b"<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:"
                             b"xmpp-streams'/></stream:error></stream:stream>")
                conn.close()
                return
            conn.sendall(b"<handshake/>")
        except (OSError, AttributeError) as e:
            print("scripted server: handshake failed: %r after %r" % (e, buf[-300:]))
            conn.close()
            return
        conn.settimeout(None)
        with self.lock:
            self.conn = conn
            self.streams += 1
        while True:
            try:
                chunk = conn.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            with self.lock:
                self.data += chunk.decode(errors="replace")
        conn.close()

    def send(self, xml):
        with self.lock:
            conn = self.conn
        conn.sendall(xml.encode())

    def received(self):
        with self.lock:
            return self.data

    def reply_to(self, sid, timeout=5.0):
        """The stanza the component sent back with id sid."""
        pat = re.compile(r"<(iq|message|presence)\b[^>]*\bid=['\"]%s['\"].*?(/>|</\1>)" %
                         re.escape(sid), re.S)
        return wait_until(lambda: (pat.search(self.received()) or [None])[0], timeout=timeout,
                          what="reply to %s" % sid)

    def close(self):
        self.closed = True
        self.sock.close()
        with self.lock:
            if self.conn:
                self.conn.close()


def silent_for(server, sid, seconds=1.0):
    time.sleep(seconds)
    return ("id='%s'" % sid) not in server.received() and ('id="%s"' % sid) not in server.received()


def test_hostile_stanzas_from_the_server(stack_factory):
    s = stack_factory(loglevel="info")
    server = ScriptedServer()
    try:
        s.prosody.comp = server.port        # the component connects to the script instead
        s.write_config(extra="[component]\nmax_stanza = 8192\n")
        s.start_component(wait_ready=False)
        wait_until(lambda: server.streams == 1, what="component stream")
        wait_until(lambda: s.component.metrics().get("offhook_xmpp_connected") == 1,
                   what="component up")

        def rejected(reason):
            return s.component.metrics().get(
                'offhook_stanzas_rejected_total{reason="%s"}' % reason, 0)

        # A well-formed IQ of an unknown namespace: service-unavailable, as a baseline.
        server.send("<iq type='get' id='ok1' from='bob@localhost/r' to='%s'><query "
                    "xmlns='urn:example:none'/></iq>" % ALICE)
        assert "service-unavailable" in server.reply_to("ok1")

        # Addresses that do not parse, or are missing: dropped, nobody to answer.
        for sid, frm in (("bad1", "bob@@localhost"), ("bad2", "@localhost"),
                         ("bad3", "x" * 1100 + "@localhost"), ("bad4", "bob@local host")):
            server.send("<iq type='get' id='%s' from='%s' to='%s'><ping xmlns='urn:xmpp:"
                        "ping'/></iq>" % (sid, frm, ALICE))
        server.send("<iq type='get' id='bad5' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>"
                    % ALICE)
        wait_until(lambda: rejected("bad_address") == 5, what="5 bad addresses counted")
        assert silent_for(server, "bad1", 0.5) and silent_for(server, "bad5", 0)

        # Addressed outside the component's domain: dropped, never relayed.
        server.send("<iq type='get' id='far1' from='bob@localhost/r' to='alice@other.example'>"
                    "<ping xmlns='urn:xmpp:ping'/></iq>")
        wait_until(lambda: rejected("foreign_to") == 1, what="foreign to counted")
        assert silent_for(server, "far1")

        # Bigger than max_stanza, or nested 100 deep: policy-violation.
        server.send("<iq type='set' id='big1' from='bob@localhost/r' to='%s'><query xmlns='urn:"
                    "example:none'>%s</query></iq>" % (ALICE, "A" * 20000))
        assert "policy-violation" in server.reply_to("big1")
        server.send("<iq type='get' id='deep1' from='bob@localhost/r' to='%s'>%s%s</iq>" % (
            ALICE, "<a xmlns='urn:example:deep'>" * 100, "</a>" * 100))
        assert "policy-violation" in server.reply_to("deep1")
        assert rejected("too_large") == 2

        # A watcher from a domain the policy does not allow: refused, never shown a state.
        server.send("<presence type='subscribe' id='sub1' from='eve@evil.example' to='%s'/>"
                    % ALICE)
        wait_until(lambda: s.component.metrics().get("offhook_watchers_refused_total") == 1,
                   what="refusal counted")
        time.sleep(0.5)
        to_eve = [m.group(0) for m in re.finditer(
            r"<presence\b[^>]*to=['\"]eve@evil\.example['\"][^>]*?(/>|>.*?</presence>)",
            server.received(), re.S)]
        assert to_eve and all("unsubscribed" in p for p in to_eve), to_eve
        assert s.redis.cli("SMEMBERS", "offhook:watchers:%s" % ALICE) == ""

        # XEP-0356 grants from a domain none of our users are on: ignored.
        server.send("<message from='evil.example' to='%s' id='priv1'><privilege xmlns='urn:"
                    "xmpp:privilege:2'><perm access='iq' type='set'/><perm access='presence' "
                    "type='roster'/></privilege></message>" % DOMAIN)
        assert silent_for(server, "priv1")
        assert 'domain="evil.example"' not in "".join(
            k for k in s.component.metrics() if k.startswith("offhook_pep"))

        # The stream itself broken: the component drops it, stays up, comes back.
        server.send("<iq type='get' id='x'><<<not xml")
        wait_until(lambda: server.streams == 2, timeout=20, what="reconnection")
        assert s.component.alive()
        server.send("<iq type='get' id='ok2' from='bob@localhost/r' to='%s'><ping xmlns='urn:"
                    "xmpp:ping'/></iq>" % ALICE)
        assert "type='result'" in server.reply_to("ok2").replace('"', "'")
    finally:
        server.close()


def test_forged_privileged_answers_are_ignored(stack_factory):
    """Issue 15 item 8: anyone can send the component an IQ result or error. Only an answer
    with the id of a request actually sent, from that request's user (or the user's
    server), is taken: one from someone else with the right id, or with an id nobody sent
    (the old code took any 'pep-' id), is counted and ignored, and the real answer still
    counts when it comes."""
    s = stack_factory(loglevel="debug")
    server = ScriptedServer()
    try:
        s.prosody.comp = server.port
        s.write_config()
        s.start_component(wait_ready=False)
        wait_until(lambda: server.streams == 1, what="component stream")
        wait_until(lambda: s.component.ready(), what="component ready")

        def m(name):
            return s.component.metrics().get(name, 0)

        server.send("<message from='localhost' to='%s'><privilege xmlns='urn:xmpp:privilege:2'>"
                    "<perm access='iq'><namespace ns='http://jabber.org/protocol/pubsub' "
                    "type='both'/></perm></privilege></message>" % DOMAIN)
        # The component reads alice's activity node before it would write it.
        read = wait_until(lambda: re.search(
            r"<iq id=\"([^\"]+)\" to=\"alice@localhost\" type=\"get\"[^>]*>.{0,200}"
            r"items node=\"http://jabber.org/protocol/activity\"", server.received(), re.S),
            what="the privileged read")
        rid = read.group(1)
        assert len(rid) > 16  # random per process: nothing to guess from outside
        errors = m('offhook_privilege_errors_total{condition="forbidden"}')

        # eve answers in alice's name, with the right id: ignored, the request still open.
        server.send("<iq type='error' id='%s' from='eve@localhost/x' to='%s'><error type='auth'>"
                    "<forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                    % (rid, DOMAIN))
        wait_until(lambda: m('offhook_privileged_answers_ignored_total{reason="wrong_sender"}')
                   == 1, what="the forged answer counted")
        # Ids nobody sent, in the old 'pep-' form among them, from alice's own JID: ignored.
        sids = ["pep-1", "pep-2", rid + "x"] + ["pep-%d" % i for i in range(3, 40)]
        for sid in sids:
            server.send("<iq type='error' id='%s' from='alice@localhost' to='%s'><error type="
                        "'auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
                        "</iq>" % (sid, DOMAIN))
        wait_until(lambda: m('offhook_privileged_answers_ignored_total{reason="unknown_id"}')
                   == len(sids), what="unknown ids counted")
        assert m('offhook_privilege_errors_total{condition="forbidden"}') == errors
        assert m('offhook_pep_publishes_total{result="error"}') == 0
        assert "event=publish_refused" not in s.component.log()
        assert "event=read_refused" not in s.component.log()
        # A few log lines for the 41, as for anything a peer can cause, not one each.
        assert s.component.log().count("event=answer_ignored") <= 6

        # The real answer, as mod_privilege forwards it: the node does not exist yet.
        ok = m('offhook_privileged_requests_total{result="ok"}')
        server.send("<iq type='result' id='%s' from='alice@localhost' to='%s'><privilege xmlns="
                    "'urn:xmpp:privilege:2'><forwarded xmlns='urn:xmpp:forward:0'><iq xmlns="
                    "'jabber:client' type='error' id='%s-in'><error type='cancel'><item-not-"
                    "found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                    "</forwarded></privilege></iq>" % (rid, DOMAIN, rid))
        wait_until(lambda: m('offhook_privileged_requests_total{result="ok"}') == ok + 1,
                   what="the real answer taken")
        # Sent again later, it is a stray: counted, ignored.
        server.send("<iq type='result' id='%s' from='alice@localhost' to='%s'/>" % (rid, DOMAIN))
        wait_until(lambda: m('offhook_privileged_answers_ignored_total{reason="unknown_id"}')
                   == len(sids) + 1, what="the replay counted")
        assert s.component.alive()
    finally:
        server.close()
