"""A chat user's client for the tests: logs in over c2s with slixmpp, subscribes to phone
contacts and records every presence it receives, as a client would show it.

slixmpp runs its asyncio loop in a thread of its own; the test polls the recorded list.
"""

import asyncio
import threading
import time

import slixmpp


class Presence:
    def __init__(self, frm, ptype, show, status, reach):
        self.frm = frm          # bare JID of the contact
        self.type = ptype       # 'available', 'unavailable', 'subscribed', ...
        self.show = show        # '' when none
        self.status = status    # '' when none
        self.reach = reach      # list of URIs in <reach xmlns='urn:xmpp:reach:0'>
        self.at = time.monotonic()

    def view(self):
        """(type, show, status) as a roster shows it."""
        return (self.type, self.show, self.status)

    def __repr__(self):
        return "Presence(%s %s show=%r status=%r)" % (self.frm, self.type, self.show,
                                                      self.status)


class Watcher:
    def __init__(self, jid, password, port, host="127.0.0.1"):
        self.jid = jid
        self.presences = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.failed = None
        self.loop = asyncio.new_event_loop()
        self.client = None
        self.host = host
        self.port = port
        self.password = password
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.connected.wait(20):
            raise RuntimeError("watcher %s could not log in: %s" % (jid, self.failed))

    def _run(self):
        asyncio.set_event_loop(self.loop)
        c = slixmpp.ClientXMPP(self.jid, self.password)
        self.client = c
        c.register_plugin("xep_0030")
        c.register_plugin("xep_0199")
        c.add_event_handler("session_start", self._start)
        c.add_event_handler("failed_auth", lambda e: self._fail("auth"))
        c.add_event_handler("presence", self._presence)
        # Accept nothing automatically: the test decides.
        c.auto_authorize = False
        c.auto_subscribe = False
        c.add_event_handler("disconnected", lambda e: self.disconnected.set())
        c.connect((self.host, self.port), disable_starttls=True, force_starttls=False)
        self.loop.run_forever()
        # Let slixmpp's tasks finish cancelling, so nothing is left pending at exit.
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def _fail(self, why):
        self.failed = why
        self.connected.set()

    async def _start(self, event):
        self.client.send_presence()
        await self.client.get_roster()
        self.connected.set()

    def _presence(self, p):
        frm = p["from"].bare
        if frm == self.client.boundjid.bare:
            return
        ptype = p["type"]
        if ptype in ("available", "chat", "away", "dnd", "xa"):
            ptype = "available"
        reach = [a.get("uri") for a in p.xml.iter("{urn:xmpp:reach:0}addr")]
        with self.lock:
            self.presences.append(Presence(frm, ptype, p["show"] if ptype == "available" else "",
                                           p["status"], reach))

    def call(self, fn):
        """Runs fn() in the client's loop thread."""
        done = threading.Event()
        out = {}

        def run():
            try:
                out["v"] = fn()
            finally:
                done.set()
        self.loop.call_soon_threadsafe(run)
        done.wait(10)
        return out.get("v")

    def run(self, make_coro, timeout=15):
        """Runs the coroutine make_coro() in the client's loop; returns its result."""
        fut = asyncio.run_coroutine_threadsafe(make_coro(), self.loop)
        return fut.result(timeout)

    def subscribe(self, contact):
        self.call(lambda: self.client.send_presence(pto=contact, ptype="subscribe"))

    def unsubscribe(self, contact):
        self.call(lambda: self.client.send_presence(pto=contact, ptype="unsubscribe"))

    def send_raw(self, xml):
        self.call(lambda: self.client.send_raw(xml))

    def seen(self, contact=None):
        with self.lock:
            return [p for p in self.presences if contact is None or p.frm == contact]

    def views(self, contact):
        """The distinct (type, show, status) a client showed for contact, in order, with
        immediate repeats folded (servers may deliver one presence to several resources)."""
        out = []
        for p in self.seen(contact):
            if p.type not in ("available", "unavailable"):
                continue
            if not out or out[-1] != p.view():
                out.append(p.view())
        return out

    def last(self, contact):
        v = self.views(contact)
        return v[-1] if v else None

    def close(self):
        if self.client and not self.disconnected.is_set():
            self.call(lambda: self.client.disconnect())
            self.disconnected.wait(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
