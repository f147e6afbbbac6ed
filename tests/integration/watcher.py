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


class PepEvent:
    def __init__(self, frm, node, item_xml):
        self.frm = frm           # bare JID of the publisher (the user, not the component)
        self.node = node
        self.xml = item_xml      # the <item/> as a string
        self.at = time.monotonic()

    def __repr__(self):
        return "PepEvent(%s %s %s)" % (self.frm, self.node, self.xml)


class RosterItem:
    def __init__(self, jid, name, subscription, groups):
        self.jid = jid
        self.name = name                  # '' when none
        self.subscription = subscription  # 'none', 'to', 'from', 'both', 'remove' (a push)
        self.groups = tuple(sorted(groups))
        self.at = time.monotonic()

    def view(self):
        """(name, subscription, groups) as a roster shows the item."""
        return (self.name, self.subscription, self.groups)

    def __repr__(self):
        return "RosterItem(%s %r %s %s)" % (self.jid, self.name, self.subscription, self.groups)


def roster_items(query_xml):
    """The <item/>s of a jabber:iq:roster <query/> element (an ElementTree element)."""
    out = []
    for it in query_xml.findall("{jabber:iq:roster}item"):
        out.append(RosterItem(it.get("jid"), it.get("name") or "", it.get("subscription") or
                              "none", [g.text or "" for g in it.findall("{jabber:iq:roster}group")]))
    return out


class Watcher:
    def __init__(self, jid, password, port, host="127.0.0.1", pep_nodes=(), reconnect=False):
        self.jid = jid
        # reconnect: log in again after the server goes away, as clients do; the roster's
        # view (current()) starts empty again in each session.
        self.reconnect = reconnect
        self.closing = False
        self.sessions = 0
        self.current_views = {}
        self.pep_nodes = list(pep_nodes)
        self.pep = []
        self.presences = []
        self.messages = []
        self.pushes = []         # RosterItem per roster push received, in order
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
        if self.pep_nodes:
            # +notify for these nodes through entity capabilities (XEP-0163).
            for plugin in ("xep_0060", "xep_0115", "xep_0163"):
                c.register_plugin(plugin)
            c.add_event_handler("pubsub_publish", self._pubsub)
        c.add_event_handler("session_start", self._start)
        c.add_event_handler("failed_auth", lambda e: self._fail("auth"))
        c.add_event_handler("presence", self._presence)
        c.add_event_handler("message", self._message)
        c.add_event_handler("message_error", self._message)
        # Roster pushes (RFC 6121 2.1.6), as the server sends them to this session.
        from slixmpp.xmlstream.handler import Callback
        from slixmpp.xmlstream.matcher import StanzaPath
        c.register_handler(Callback("offhook roster push", StanzaPath("iq@type=set/roster"),
                                    self._roster_push))
        # Decide nothing automatically: the test does. (slixmpp: False would auto-REJECT
        # subscription requests; None leaves them to us.)
        c.auto_authorize = None
        c.auto_subscribe = False
        c.add_event_handler("disconnected", self._disconnected)
        self._connect()
        self.loop.run_forever()
        # Let slixmpp's tasks finish cancelling, so nothing is left pending at exit.
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()

    def _connect(self):
        self.client.connect((self.host, self.port), disable_starttls=True,
                            force_starttls=False)

    def _disconnected(self, event):
        self.disconnected.set()
        if self.reconnect and not self.closing:
            self.loop.call_later(0.5, self._connect)

    def _fail(self, why):
        self.failed = why
        self.connected.set()

    async def _start(self, event):
        if self.pep_nodes:
            # +notify features, and a caps hash covering them, before the first presence:
            # the server learns interests from the caps in that presence.
            for node in self.pep_nodes:
                self.client.plugin["xep_0163"].add_interest(node)
            await self.client.plugin["xep_0115"].update_caps()
        with self.lock:
            self.sessions += 1
            self.current_views = {}
        self.disconnected.clear()
        self.client.send_presence()
        await self.client.get_roster()
        self.connected.set()

    def _pubsub(self, msg):
        # slixmpp 1.8: read the one item; iterating the items loops forever.
        item = msg["pubsub_event"]["items"]["item"]
        from xml.etree import ElementTree as ET
        with self.lock:
            self.pep.append(PepEvent(msg["from"].bare, msg["pubsub_event"]["items"]["node"],
                                     ET.tostring(item.xml, encoding="unicode")))

    def _roster_push(self, iq):
        q = iq.xml.find("{jabber:iq:roster}query")
        with self.lock:
            self.pushes += roster_items(q) if q is not None else []

    def roster_pushes(self, jid=None):
        with self.lock:
            return [p for p in self.pushes if jid is None or p.jid == jid]

    def fetch_roster(self):
        """{jid: RosterItem} as the server has the roster now: a roster get without a
        version, so that the answer holds every item (RFC 6121 2.1.3)."""
        from slixmpp.xmlstream import ET

        async def go():
            iq = self.client.Iq()
            iq["type"] = "get"
            iq.append(ET.Element("{jabber:iq:roster}query"))
            r = await iq.send(timeout=10)
            return {it.jid: it for it in roster_items(r.xml.find("{jabber:iq:roster}query"))}
        return self.run(go)

    def set_roster_item(self, jid, name="", groups=(), remove=False):
        """What a user does in their client: adds or changes (or removes) jid in their own
        roster (RFC 6121 2.3, 2.5). Returns the server's answer type."""
        from slixmpp.xmlstream import ET

        async def go():
            iq = self.client.Iq()
            iq["type"] = "set"
            q = ET.Element("{jabber:iq:roster}query")
            item = ET.SubElement(q, "{jabber:iq:roster}item", jid=jid)
            if remove:
                item.set("subscription", "remove")
            else:
                if name:
                    item.set("name", name)
                for g in groups:
                    ET.SubElement(item, "{jabber:iq:roster}group").text = g
            iq.append(q)
            r = await iq.send(timeout=10)
            return r["type"]
        return self.run(go)

    def pep_events(self, frm=None, node=None):
        """PEP items received, in order, with the bare and full JID copies Prosody sends
        folded into one."""
        with self.lock:
            evs = [e for e in self.pep if (frm is None or e.frm == frm) and
                   (node is None or e.node == node)]
        out = []
        for e in evs:
            if not out or (out[-1].xml, out[-1].node) != (e.xml, e.node) or e.at - out[-1].at > 0.2:
                out.append(e)
        return out

    def _message(self, m):
        with self.lock:
            self.messages.append(m.xml)

    def got_messages(self, frm=None):
        """The <message/> elements received (ElementTree), in order; from a bare JID."""
        with self.lock:
            return [m for m in self.messages
                    if frm is None or m.get("from", "").split("/")[0] == frm]

    def authorize(self, jid):
        """Accepts jid's presence subscription and subscribes back (mutual)."""
        self.call(lambda: self.client.send_presence(pto=jid, ptype="subscribed"))
        self.call(lambda: self.client.send_presence(pto=jid, ptype="subscribe"))

    def _presence(self, p):
        frm = p["from"].bare
        if frm == self.client.boundjid.bare:
            return
        ptype = p["type"]
        if ptype in ("available", "chat", "away", "dnd", "xa"):
            ptype = "available"
        reach = [a.get("uri") for a in p.xml.iter("{urn:xmpp:reach:0}addr")]
        pr = Presence(frm, ptype, p["show"] if ptype == "available" else "", p["status"], reach)
        with self.lock:
            self.presences.append(pr)
            if ptype in ("available", "unavailable"):
                self.current_views[frm] = pr.view()

    def current(self):
        """{contact: (type, show, status)} as the client shows it now: the latest presence
        of each contact received in this session."""
        with self.lock:
            return dict(self.current_views)

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

    def iq(self, xml, timeout=10):
        """Sends a raw <iq type=get|set/> and returns the answer (result or error) as an
        ElementTree element."""
        from xml.etree import ElementTree as ET

        async def go():
            stanza = self.client.Iq(xml=ET.fromstring(xml))
            stanza["from"] = self.client.boundjid
            try:
                r = await stanza.send(timeout=timeout)
            except Exception as e:  # IqError carries the error stanza
                r = getattr(e, "iq", None)
                if r is None:
                    raise
            return ET.fromstring(str(r))
        return self.run(go)

    def sync(self):
        """A ping to the user's own server, answered: whatever the server routed to this
        client before it (a PEP notification, a presence) has been received by now."""
        host = self.jid.split("@", 1)[1]
        self.iq("<iq xmlns='jabber:client' type='get' to='%s'><ping xmlns='urn:xmpp:ping'/>"
                "</iq>" % host)

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
        self.closing = True
        if self.client and not self.disconnected.is_set():
            self.call(lambda: self.client.disconnect())
            self.disconnected.wait(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
