"""How fast bench/sink.c (xmppsink) takes presence stanzas, without Prosody in the way.

A fake c2s server on loopback does just enough XMPP for libstrophe (stream, SASL PLAIN
success, resource bind), waits for the sink's initial presence, then writes --count
presence stanzas shaped like offhook's (show, status, XEP-0152 reach, XEP-0115 caps) as
fast as the socket takes them. Prints one JSON line: stanzas/s the sink kept up with (last
line written vs first byte sent), and the sink's CPU seconds per 1,000 stanzas.

    python3 bench/sink_bench.py [--count 200000]
    python3 bench/sink_bench.py --slixmpp [--count 50000]   # the same with a slixmpp client
                                                           # (the alternative not chosen)
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from lib.sample import proc_cpu
from lib.sink import sink_binary

STANZA = ("<presence from='u{i}@phone.localhost' to='watcher@localhost'>"
          "<show>dnd</show><status>On the phone</status>"
          "<reach xmlns='urn:xmpp:reach:0'><addr uri='sip:{i}@127.0.0.1:5060'/></reach>"
          "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' "
          "node='https://offhook.example/caps' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>"
          "</presence>")

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='http://etherx.jabber.org/streams' id='s{n}' from='localhost' "
          "version='1.0' xml:lang='en'>")


def recv_until(conn, buf, pattern):
    while not re.search(pattern, buf):
        data = conn.recv(65536)
        if not data:
            raise RuntimeError("sink closed the connection; got %r" % buf[-500:])
        buf += data.decode(errors="replace")
    return buf


def serve(lsock, count):
    conn, _ = lsock.accept()
    conn.settimeout(20)
    buf = recv_until(conn, "", r"<stream:stream[^>]*>")
    conn.sendall((HEADER.format(n=1) +
                  "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                  "<mechanism>PLAIN</mechanism></mechanisms></stream:features>").encode())
    buf = recv_until(conn, "", r"</auth>")
    conn.sendall(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    buf = recv_until(conn, "", r"<stream:stream[^>]*>")
    conn.sendall((HEADER.format(n=2) +
                  "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                  "</stream:features>").encode())
    buf = recv_until(conn, "", r"</iq>")
    iq_id = re.search(r"id=['\"]([^'\"]+)['\"]", buf).group(1)
    conn.sendall(("<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<jid>watcher@localhost/bench</jid></bind></iq>" % iq_id).encode())
    recv_until(conn, buf, r"<presence")
    # Pre-built in chunks so that Python's cost stays out of the sink's way.
    chunk = 1000
    blobs = ["".join(STANZA.format(i=i) for i in range(j, min(count, j + chunk))).encode()
             for j in range(0, count, chunk)]
    t0 = time.time()
    for b in blobs:
        conn.sendall(b)
    t_sent = time.time()
    return conn, t0, t_sent


SLIX_SINK = r"""
import sys, time, slixmpp
port, out = int(sys.argv[1]), open(sys.argv[2], "w", buffering=1 << 20)
x = slixmpp.ClientXMPP("watcher@localhost/bench", "pw")
x["feature_mechanisms"].unencrypted_plain = True
def on_presence(p):
    st = p["status"]
    out.write("%d %s %s %s\n" % (time.time_ns() // 1000, p["from"], p["show"] or "available", st))
def on_start(ev):
    x.send_presence()
def flush():
    out.flush()
    x.loop.call_later(0.2, flush)
x.add_event_handler("presence", on_presence)
x.add_event_handler("session_start", on_start)
x.connect(("127.0.0.1", port), disable_starttls=True, use_ssl=False, force_starttls=False)
x.loop.call_later(0.2, flush)
x.loop.run_forever()
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=200000)
    ap.add_argument("--slixmpp", action="store_true", help="a slixmpp client instead")
    a = ap.parse_args()
    d = tempfile.mkdtemp(prefix="offhook-sinkbench-")
    out = os.path.join(d, "sink.log")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    if a.slixmpp:
        # Debian's python3-slixmpp: for the system interpreter, whichever runs this.
        argv = ["/usr/bin/python3", "-c", SLIX_SINK, str(port), out]
    else:
        argv = [sink_binary(), "--jid", "watcher@localhost", "--password", "pw",
                "--port", str(port), "--out", out]
    sink = subprocess.Popen(argv, stderr=subprocess.PIPE)
    cpu0 = proc_cpu(sink.pid)  # login included: negligible next to the stanzas
    conn, t0, t_sent = serve(lsock, a.count)
    # Wait for the last line: the sink flushes every 200 ms.
    deadline = time.time() + 120
    n = 0
    while time.time() < deadline:
        with open(out, "rb") as f:
            n = f.read().count(b"\n")
        if n >= a.count:
            break
        time.sleep(0.05)
    cpu1 = proc_cpu(sink.pid)
    sink.terminate()
    sink.wait(10)
    conn.close()
    with open(out) as f:
        lines = f.read().splitlines()
    last = int(lines[-1].split(" ", 1)[0]) / 1e6 if lines else t0
    first = int(lines[0].split(" ", 1)[0]) / 1e6 if lines else t0
    res = {"client": "slixmpp" if a.slixmpp else "xmppsink (libstrophe)", "stanzas": a.count, "received": len(lines),
           "stanza_bytes": len(STANZA.format(i=12345)),
           "wall_s": round(last - t0, 3),
           "stanzas_per_s": round(len(lines) / max(1e-6, last - t0)),
           "handler_span_s": round(last - first, 3),
           "sink_cpu_s": round(cpu1 - cpu0, 3),
           "sink_cpu_s_per_1000": round((cpu1 - cpu0) / max(1, len(lines)) * 1000, 5),
           "example_line": lines[-1] if lines else None}
    print(json.dumps(res))
    os.unlink(out)
    os.rmdir(d)
    return 0 if len(lines) == a.count else 1


if __name__ == "__main__":
    sys.exit(main())
