"""Saturation (issue 14, target 6): the largest event rate offhook passes, against the
largest stanza rate Prosody routes, on the same machine, one after the other.

- Prosody alone: a blaster (an XEP-0114 component written here) writes presence stanzas
  from phone contacts to the sink's user as fast as Prosody takes them; what reaches the
  sink per second, after a warm-up, is what Prosody routes.
- offhook alone: pbxsim -> sipbridge -> Redis -> offhook-component -> a fake XMPP server
  (here) that completes the component handshake and counts the presence stanzas it
  receives, nothing else. The event rate steps up (x step) while every event sent in the
  window arrives (>= 98%) and the component's output does not fall behind; the last rate
  that passed is offhook's.

Both figures are stanzas (= call-state events) per second; the ratio is what the target
compares (>= 2)."""

import hashlib
import os
import re
import socket
import threading
import time

from harness import Daemon, Proc, Redis, Workdir, binary, free_port, offhook_config, wait_until

from . import DOMAIN, EXT0, WATCHER
from . import stack as bench_stack
from .sample import proc_cpu

STANZA = ("<presence from='u%d@" + DOMAIN + "/phone' to='" + WATCHER + "'><show>dnd</show>"
          "<status>On the phone</status></presence>")


def _recv_until(sock, buf, pattern, timeout=10):
    sock.settimeout(timeout)
    while not re.search(pattern, buf):
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed waiting for %r" % pattern)
        buf += chunk
    return buf


def prosody_max(a):
    """Stanzas/s Prosody routes from a component to one c2s client, at saturation."""
    wd = Workdir("offhook-bench-")
    stack = None
    res = {"mode": "prosody-max"}
    try:
        stack, sink = bench_stack.start(wd, [], "[component]\npublish = contacts\n")
        sock = socket.create_connection(("127.0.0.1", stack.xmpp.comp))
        sock.sendall(("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' "
                      "xmlns:stream='http://etherx.jabber.org/streams' to='%s'>"
                      % DOMAIN).encode())
        head = _recv_until(sock, b"", rb"<stream:stream[^>]*>")
        sid = re.search(rb"id=['\"]([^'\"]+)", head).group(1).decode()
        sock.sendall(("<handshake>%s</handshake>" % hashlib.sha1(
            (sid + stack.xmpp.secret).encode()).hexdigest()).encode())
        _recv_until(sock, head, rb"<handshake\s*/>")
        sock.settimeout(None)
        stop = threading.Event()
        sent = [0]

        # One buffer of 2,000 stanzas (2,000 contacts) written again and again: the
        # blaster must not be what limits the rate.
        batch = 2000
        data = "".join(STANZA % k for k in range(batch)).encode()

        def blast():
            i = 0
            while not stop.is_set():
                try:
                    sock.sendall(data)
                except OSError:
                    return
                i += batch
                sent[0] = i
        t = threading.Thread(target=blast, daemon=True)
        t.start()
        time.sleep(a.sat_warmup)
        n0, c0, t0 = sink.tail.poll().lines, proc_cpu(stack.xmpp.proc.p.pid), time.time()
        k0, b0 = proc_cpu(sink.proc.p.pid), sent[0]
        time.sleep(a.sat_seconds)
        n1, c1, t1 = sink.tail.poll().lines, proc_cpu(stack.xmpp.proc.p.pid), time.time()
        k1, b1 = proc_cpu(sink.proc.p.pid), sent[0]
        res["sink_cpu_pct"] = round((k1 - k0) / (t1 - t0) * 100, 1)
        res["blasted_per_s"] = round((b1 - b0) / (t1 - t0), 1)
        stop.set()
        sock.close()
        t.join(5)
        res["stanzas_per_s"] = round((n1 - n0) / (t1 - t0), 1)
        res["prosody_cpu_pct"] = round((c1 - c0) / (t1 - t0) * 100, 1)
        res["prosody_us_per_stanza"] = round((c1 - c0) / max(1, n1 - n0) * 1e6, 1)
    finally:
        if stack:
            stack.stop()
        wd.cleanup()
    return res


class FakeXmpp:
    """A component listener that accepts any handshake and counts presence stanzas."""

    def __init__(self):
        self.port = free_port()
        self.count = 0
        self.lock = threading.Lock()
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", self.port))
        self.srv.listen(4)
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        try:
            buf = _recv_until(conn, b"", rb"<stream:stream[^>]*>", timeout=30)
            conn.sendall(("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept'"
                          " xmlns:stream='http://etherx.jabber.org/streams' from='%s' "
                          "id='fake1'>" % DOMAIN).encode())
            buf = _recv_until(conn, buf, rb"</handshake>", timeout=30)
            conn.sendall(b"<handshake/>")
            conn.settimeout(None)
            tail = b""
            while True:
                data = conn.recv(1 << 20)
                if not data:
                    return
                data = tail + data
                n = data.count(b"<presence ")
                # A tag cut between two reads is counted with the next one.
                tail = data[-16:] if b"<presence " not in data[-16:] else b""
                with self.lock:
                    self.count += n
        except OSError:
            return

    def stop(self):
        self.stopped = True
        self.srv.close()


def offhook_max(a):
    """Events/s offhook passes end to end (to a fake XMPP server) at saturation: one set-up
    (n users subscribed), then the rate steps up by a.step from a.rate (pbxsim's 'rate'
    command) while >= 98% of what is sent in a window arrives."""
    n = a.users
    res = {"mode": "offhook-max", "users": n, "steps": []}
    wd = Workdir("offhook-bench-")
    procs = []
    fake = FakeXmpp()
    try:
        redis = Redis(wd.path).start()
        procs.append(redis)
        bench_stack.preload_watchers(redis, ["u%d@%s" % (i, DOMAIN) for i in range(n)])
        pbx_port, sip_port, m_sb, m_comp = free_port(), free_port(), free_port(), free_port()
        cfg = offhook_config(
            os.path.join(wd.path, "offhook.conf"), redis.url(), fake.port, sip_port, pbx_port,
            m_sb, m_comp,
            [("u%d@localhost" % i, "sip:%d@127.0.0.1:%d" % (EXT0 + i, pbx_port))
             for i in range(n)],
            domain=DOMAIN, secret="bench", loglevel="notice",
            extra="[sip]\nsubscribe_rate = %d\n[component]\npublish = contacts\n"
                  % a.subscribe_rate)
        ctl = free_port()
        pbx = Proc("pbxsim", [binary("pbxsim"), "--port", str(pbx_port), "--rate", "1",
                              "--start-after", str(n), "--control", str(ctl),
                              "--stats-every", "3600"], wd.path)
        procs.append(pbx)
        comp = Daemon("component", cfg, wd.path, m_comp)
        procs.append(comp)
        wait_until(comp.ready, timeout=120, what="component /readyz")
        sb = Daemon("sipbridge", cfg, wd.path, m_sb)
        procs.append(sb)
        wait_until(lambda: sb.metrics().get('offhook_subscriptions{state="active"}', 0) >= n,
                   timeout=n / a.subscribe_rate * 3 + 60, interval=0.5,
                   what="%d active subscriptions" % n)

        def command(text):
            c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            c.settimeout(2)
            try:
                c.sendto(text.encode(), ("127.0.0.1", ctl))
                return c.recv(4096).decode()
            finally:
                c.close()

        def sent():
            return int(re.search(r"changes=(\d+)", command("stats")).group(1))

        pids = {"sipbridge": sb.p.pid, "component": comp.p.pid, "redis": redis.proc.p.pid,
                "pbxsim": pbx.p.pid}
        best, rate = None, a.rate
        while rate <= a.max_rate:
            command("rate %g" % rate)
            time.sleep(a.sat_warmup)
            s0, r0, t0 = sent(), fake.count, time.time()
            c0 = {k: proc_cpu(p) for k, p in pids.items()}
            time.sleep(a.sat_seconds)
            s1, r1, t1 = sent(), fake.count, time.time()
            c1 = {k: proc_cpu(p) for k, p in pids.items()}
            wall = t1 - t0
            step = {"rate": rate, "sent_per_s": round((s1 - s0) / wall, 1),
                    "received_per_s": round((r1 - r0) / wall, 1),
                    "cpu_pct": {k: round((c1[k] - c0[k]) / wall * 100, 1) for k in c0}}
            step["passed"] = (step["received_per_s"] >= 0.98 * step["sent_per_s"] and
                              step["sent_per_s"] >= 0.9 * rate)
            res["steps"].append(step)
            print("offhook-max N=%d R=%g: sent %.1f/s, received %.1f/s, CPU %% %s -> %s" % (
                n, rate, step["sent_per_s"], step["received_per_s"], step["cpu_pct"],
                "ok" if step["passed"] else "saturated"), flush=True)
            if not step["passed"]:
                break
            best = step
            rate = round(rate * a.step)
        command("rate 0")
        res["max_events_per_s"] = best["received_per_s"] if best else None
    finally:
        for p in reversed(procs):
            p.stop()
        fake.stop()
        wd.cleanup()
    return res
