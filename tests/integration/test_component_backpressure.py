"""The component's writes when the XMPP server cannot keep up, on a real Prosody and Redis.

The component hands libstrophe the stanzas of one loop turn as one piece (one write per
turn, docs/performance.md). A piece the socket takes only in part must keep the
component waiting for room to write, not for its next event: otherwise the end of a
burst stays in the component while nothing new happens, and watchers see an old state."""

import signal
import subprocess
import time

from harness import wait_until

ALICE = "alice@phone.localhost"
BEAT_KEY = "offhook:heartbeat:sipbridge"
BURST = 16000
NAME = "Caller " + "x" * 100


def total(m, name):
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def q(s):
    return '"%s"' % s


def burst(s, n):
    """n changes of alice's call in one redis-cli session (one process, not n), each a
    distinct caller, the last one to "Last caller": what a busy phone system writes."""
    base = ["dir", "incoming", "reach", "online", "dnd", "0", "since", "1763788800000"]
    lines = []
    for i in range(n):
        remote = "Last caller" if i == n - 1 else "%s %d" % (NAME, i)
        state = "ringing" if i % 2 else "on_call"
        fields = ["state", state] + base + ["ts", str(int(time.time() * 1e6) + i),
                                            "remote", remote]
        if i == n - 1:
            lines.append("HSET offhook:user:alice@localhost " + " ".join(map(q, fields)))
        lines.append("XADD offhook:events * user alice@localhost " + " ".join(map(q, fields)))
    subprocess.run(["redis-cli", "-p", str(s.redis.port)], input="\n".join(lines) + "\n",
                   capture_output=True, text=True, timeout=60, check=True)


def test_burst_behind_a_stopped_server_arrives_whole(stack_factory):
    """Prosody stopped (SIGSTOP) while alice's phone changes 6,000 times, more than the
    socket buffers between the two hold; Prosody resumed, nothing else happens: bob sees
    the last change. Fails when the batch is handed to libstrophe without the empty entry
    behind it (libstrophe then reports an empty queue while a batch is half written, the
    component stops watching for room, and the rest waits for an event that never comes)."""
    s = stack_factory(extra_config="[privacy]\nshow_remote_party = yes\n", loglevel="info")
    s.redis.cli("SET", BEAT_KEY, str(int(time.time() * 1000)), "PX", "600000")
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.subscribe(ALICE)
    wait_until(lambda: bob.last(ALICE) is not None, what="alice's phone shown")
    sent0 = s.component.metrics().get('offhook_stanzas_sent_total{kind="presence"}', 0)

    s.xmpp.proc.send_signal(signal.SIGSTOP)
    try:
        burst(s, BURST)
        # Until the component has read it all and is blocked on the full socket.
        # Read, and so written as far as the socket takes it: a turn's stanzas are written
        # in the turn that read them, before /metrics is answered.
        wait_until(lambda: total(s.component.metrics(), "offhook_feed_events_total") >= BURST,
                   timeout=60, what="the burst read by the component")
    finally:
        s.xmpp.proc.send_signal(signal.SIGCONT)
    want = ("available", "", "Ringing: call from Last caller")
    wait_until(lambda: bob.last(ALICE) == want, timeout=60,
               what="the burst's last change shown (last seen %r)" % (bob.last(ALICE),))
    m = s.component.metrics()
    assert m.get('offhook_stanzas_sent_total{kind="presence"}', 0) - sent0 >= BURST // 2
    assert total(m, "offhook_xmpp_disconnects_total") == 0
