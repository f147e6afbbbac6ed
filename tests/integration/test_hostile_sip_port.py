"""Issue 15, items 1 and 4: sipbridge's SIP port on a hostile network.

A forger who knows a dialog (its Call-ID and both tags, as anyone on the path does) sends
NOTIFYs from another address, another port and over TCP: each is refused (403), counted
and logged once, and the user's state never moves; the real PBX's NOTIFYs still apply.

Scanners and floods of every request method outside any dialog: each is answered
statelessly (or, past the per-source limit, dropped), the heap in use stays flat while
they last (offhook_heap_inuse_bytes, read during the flood, not only at exit), and a real
NOTIFY sent in the middle of the flood is answered and applied.

The PBX is bench/pbxsim; its control socket tells the test the dialog it holds."""

import os
import re
import socket
import time

from calls import IDLE, ON_CALL, ON_HOLD, UNKNOWN, body
from harness import PbxSim, wait_until

VALGRIND = os.environ.get("OFFHOOK_VALGRIND") == "1"

CONTACT = "alice@phone.localhost"
EXT = "1001"


def start(stack_factory, tcp=False):
    """Component, bob watching alice's phone, pbxsim and sipbridge (listening on UDP, and
    TCP on the same port if tcp); returns (stack, bob, pbx) once bob sees alice idle."""
    s = stack_factory()
    if tcp:
        conf = open(s.config).read().replace(
            "listen = udp:127.0.0.1:%d" % s.sip_port,
            "listen = udp:127.0.0.1:%d, tcp:127.0.0.1:%d" % (s.sip_port, s.sip_port))
        with open(s.config, "w") as f:
            f.write(conf)
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.subscribe(CONTACT)
    wait_until(lambda: bob.views(CONTACT) == [UNKNOWN], what="initial presence")
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.start_sipbridge()
    wait_until(lambda: bob.views(CONTACT) == [UNKNOWN, IDLE], timeout=20,
               what="alice idle, from the PBX")
    return s, bob, pbx


def dialog(pbx, ext=EXT):
    """What the PBX holds of ext's subscription dialog: call-id, notifier-tag, cseq,
    from (the NOTIFY's From, untagged) and to (its To, with sipbridge's tag)."""
    line = pbx.command("dialog %s" % ext).strip().splitlines()[0]
    return dict(re.findall(r"([a-z-]+)=(\S+)", line))


def forged(d, cseq, transport, host, port, sip_port):
    """A NOTIFY in dialog d saying alice is on the phone, with a version far ahead: were
    it accepted, it would be applied."""
    payload = re.sub(r'version="\d+"', 'version="100000"',
                     body("dialog-info/asterisk-inuse.xml"), count=1)
    return ("NOTIFY sip:offhook@127.0.0.1:%d SIP/2.0\r\n"
            "Via: SIP/2.0/%s %s:%d;branch=z9hG4bKforged%d\r\n"
            "Max-Forwards: 70\r\n"
            "From: %s;tag=%s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d NOTIFY\r\n"
            "Contact: <sip:%s:%d>\r\nEvent: dialog\r\n"
            "Subscription-State: active;expires=3600\r\n"
            "Content-Type: application/dialog-info+xml\r\nContent-Length: %d\r\n\r\n%s" % (
                sip_port, transport, host, port, cseq, d["from"], d["notifier-tag"], d["to"],
                d["call-id"], cseq, host, port, len(payload.encode()), payload))


def udp_exchange(text, sip_port, src=("127.0.0.1", 0)):
    """Sends text from src over UDP; returns the answer's status line."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(src)
    sock.settimeout(5)
    try:
        port = sock.getsockname()[1]
        sock.sendto(text(port).encode(), ("127.0.0.1", sip_port))
        return sock.recv(65536).decode(errors="replace").split("\r\n")[0]
    finally:
        sock.close()


def tcp_exchange(text, sip_port):
    sock = socket.create_connection(("127.0.0.1", sip_port), timeout=5)
    try:
        port = sock.getsockname()[1]
        sock.sendall(text(port).encode())
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.decode(errors="replace").split("\r\n")[0]
    finally:
        sock.close()


def test_forged_notifies_from_elsewhere_are_refused(stack_factory):
    """Issue 15.1: right Call-ID and tags, wrong source: 127.0.0.2, another port of the
    PBX's own address, TCP. Each gets 403 and alice stays idle; the PBX's own NOTIFY
    after them is applied. (On nua every one was answered 200 and alice went on_call.)"""
    s, bob, pbx = start(stack_factory, tcp=True)
    d = dialog(pbx)
    cseq = int(d["cseq"]) + 100
    answers = {
        "127.0.0.2": udp_exchange(lambda p: forged(d, cseq, "UDP", "127.0.0.2", p, s.sip_port),
                                  s.sip_port, src=("127.0.0.2", 0)),
        "another port": udp_exchange(
            lambda p: forged(d, cseq + 1, "UDP", "127.0.0.1", p, s.sip_port), s.sip_port),
        "tcp": tcp_exchange(lambda p: forged(d, cseq + 2, "TCP", "127.0.0.1", p, s.sip_port),
                            s.sip_port),
    }
    assert all(a.startswith("SIP/2.0 403") for a in answers.values()), answers
    m = s.sipbridge.metrics()
    assert m.get('offhook_sip_refused_total{reason="wrong_source"}') == 3, m
    assert m.get('offhook_notifies_total{package="dialog"}') == 1  # the PBX's first only
    log = s.sipbridge.log()
    # Logged once, with the first forger's address; the other two only counted.
    assert log.count("event=sip_refused reason=wrong_source") == 1, log
    assert "source=udp:127.0.0.2:" in log
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "idle"
    assert bob.views(CONTACT) == [UNKNOWN, IDLE]
    # The PBX's own NOTIFY, with the dialog's next CSeq, still goes through.
    pbx.set(EXT, "on_call")
    wait_until(lambda: bob.views(CONTACT) == [UNKNOWN, IDLE, ON_CALL], timeout=10,
               what="the PBX's call")
    assert s.sipbridge.alive()


METHODS = {
    # method: the answer sipbridge gives outside any dialog
    "OPTIONS": "200", "MESSAGE": "405", "REFER": "405", "INVITE": "405", "SUBSCRIBE": "405",
    "REGISTER": "405", "PUBLISH": "405", "INFO": "481", "UPDATE": "481", "BYE": "481",
    "CANCEL": "481", "PRACK": "481", "NOTIFY": "481", "ACK": None,
}


def request(method, i, port, sip_port, host="127.0.0.1"):
    extra = ""
    if method == "NOTIFY":
        extra = "Event: dialog\r\nSubscription-State: active;expires=60\r\n"
    if method == "REFER":
        extra = "Refer-To: <sip:9999@example.com>\r\n"
    payload = "hello %d" % i if method == "MESSAGE" else ""
    return ("%s sip:offhook@127.0.0.1:%d SIP/2.0\r\n"
            "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bKflood%s%d\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:scanner@%s>;tag=f%d\r\n"
            "To: <sip:offhook@127.0.0.1>%s\r\nCall-ID: flood-%s-%d\r\n"
            "CSeq: %d %s\r\nContact: <sip:scanner@%s:%d>\r\n%s"
            "Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
                method, sip_port, host, port, method, i, host, i,
                ";tag=gone" if method in ("INFO", "UPDATE", "BYE", "PRACK", "NOTIFY") else "",
                method, i, 1 + i % 1000, method, host, port, extra, len(payload), payload))


def heap(s):
    return s.sipbridge.metrics()["offhook_heap_inuse_bytes"]


def test_flood_of_every_method_keeps_no_memory(stack_factory):
    """Issue 15.4: ~30,000 requests of every method outside any dialog, in rounds over
    ~10 s, from the PBX's own address (exempt from the per-source limit: after a restart
    of ours it must get every 481) and from strangers. Every one is answered as METHODS
    says, or dropped past the per-source limit; the heap in use, read after every round,
    stays within 2 MiB of where it started (on nua each OPTIONS kept ~2.6 KB for good,
    each REFER ~7 KB, each unknown-dialog NOTIFY ~10 KB for ~10 s); and the PBX's NOTIFY
    sent in the middle of it is answered and applied."""
    s, bob, pbx = start(stack_factory)
    heap0 = heap(s)
    worst = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    port = sock.getsockname()[1]
    answers = {m: {} for m in METHODS}
    n_rounds, per_round = 10, 200

    def drain(until):
        while time.monotonic() < until:
            try:
                data = sock.recv(65536).decode(errors="replace")
            except BlockingIOError:
                time.sleep(0.002)
                continue
            status = data.split(" ", 2)[1]
            method = re.search(r"CSeq: \d+ (\w+)", data).group(1)
            answers[method][status] = answers[method].get(status, 0) + 1

    for r in range(n_rounds):
        for i in range(per_round):
            for method in METHODS:
                sock.sendto(request(method, r * per_round + i, port, s.sip_port).encode(),
                            ("127.0.0.1", s.sip_port))
            if i % 50 == 49:
                # Stay under the 5,000/s global bound; under memcheck, ten times slower:
                # sipbridge there cannot read 6,000 datagrams a second and the kernel
                # drops what overflows its socket (1,715 of 2,000 OPTIONS answered in CI).
                drain(time.monotonic() + (0.5 if VALGRIND else 0.05))
        if r == n_rounds // 2:
            pbx.set(EXT, "on_hold")              # the PBX's NOTIFY, inside the flood
        drain(time.monotonic() + 0.3)
        worst = max(worst, heap(s) - heap0)
    drain(time.monotonic() + 1.0)
    sock.close()
    assert worst < 2 << 20, "heap grew by %d bytes during the flood" % worst
    sent = n_rounds * per_round
    for method, want in METHODS.items():
        if want is None:
            assert not answers[method], (method, answers[method])   # ACK: no answer
        else:
            assert answers[method] == {want: sent}, (method, answers[method])
    wait_until(lambda: bob.last(CONTACT) == ON_HOLD, timeout=10,
               what="the PBX's NOTIFY sent during the flood")

    # Strangers: 127.0.0.2..5, 300 OPTIONS each at once. Each address gets its burst
    # answered and the rest dropped (and counted), and still nothing is kept.
    m0 = s.sipbridge.metrics().get('offhook_sip_refused_total{reason="rate_limited"}', 0)
    got = {}
    for host in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        st = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        st.bind((host, 0))
        st.settimeout(0.5)
        p = st.getsockname()[1]
        for i in range(300):
            st.sendto(request("OPTIONS", i, p, s.sip_port, host=host).encode(),
                      ("127.0.0.1", s.sip_port))
        got[host] = 0
        try:
            while True:
                st.recv(65536)
                got[host] += 1
        except socket.timeout:
            pass
        st.close()
    m = s.sipbridge.metrics()
    dropped = m.get('offhook_sip_refused_total{reason="rate_limited"}', 0) - m0
    assert all(0 < n < 100 for n in got.values()), got
    assert dropped == sum(300 - n for n in got.values()), (dropped, got)
    assert heap(s) - heap0 < 2 << 20
    log = s.sipbridge.log()
    assert log.count("event=sip_refused reason=rate_limited") <= 2
    assert s.sipbridge.alive()
    assert bob.last(CONTACT) == ON_HOLD
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "on_hold"
