"""Issue 5: operating offhook. Reload by SIGHUP (users added and removed, the others'
subscriptions untouched, a broken file refused with file:line), systemd's notify protocol
(READY only once upstreams are connected, STATUS, WATCHDOG, STOPPING), journald priority
prefixes, and offhookctl."""

import json
import os
import signal
import socket
import subprocess

import pytest

from calls import body, for_ext
from harness import (binary, scenario_notify, step_answer_forever, step_respond,
                     wait_until)

INUSE = body("dialog-info/asterisk-inuse.xml")
IDLE = body("dialog-info/asterisk-idle.xml")


def dialog(body, version, pause_ms=100, ext=None):
    """A dialog answered and notified once; ext: the extension it serves (sipbridge
    subscribes in [users] order, so the n-th dialog is the n-th user's)."""
    return [step_respond(expires=3600, initial=True),
            scenario_notify(for_ext(body, ext) if ext else body, version=version,
                            pause_ms=pause_ms),
            step_answer_forever()]


def subscribes_for(s, ext):
    """Initial SUBSCRIBEs (no To tag) sipp received for extension ext."""
    n = 0
    for msg in s.pbx.messages().split("-----------------------------------------------"):
        if "message received" not in msg:
            continue
        lines = msg.split("\n")
        req = [l for l in lines if l.startswith("SUBSCRIBE ")]
        to = [l for l in lines if l.startswith("To:")]
        if req and ("sip:%s@" % ext) in req[0] and to and "tag=" not in to[0]:
            n += 1
    return n


def unsubscribes_for(s, ext):
    n = 0
    for msg in s.pbx.messages().split("-----------------------------------------------"):
        if "message received" in msg and "Expires: 0" in msg and ("To: <sip:%s@" % ext) in msg:
            n += 1
    return n


def alice_on_the_phone(s, sipbridge_wrapper=()):
    """Component, a PBX with alice in a call, sipbridge (under sipbridge_wrapper); returns
    bob once he sees alice's phone contact on the phone."""
    s.start_component()
    s.start_pbx_script([dialog(INUSE, 0)])
    s.start_sipbridge(wrapper=sipbridge_wrapper)
    bob = s.watcher("bob@localhost")
    bob.subscribe("alice@phone.localhost")
    wait_until(lambda: bob.last("alice@phone.localhost") == ("available", "dnd", "On the phone"),
               what="bob watching alice's call")
    return bob


def test_reload_adds_and_removes_users(stack_factory):
    s = stack_factory(users=(("alice@localhost", "1001"), ("bob@localhost", "1002")))
    s.start_component()
    s.start_pbx_script([dialog(INUSE, 0), dialog(INUSE, 0, ext="1002"),
                        dialog(IDLE, 0, ext="1003")])
    s.start_sipbridge()
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:bob@localhost", "state") == "on_call"
               and s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "on_call",
               what="both users on the phone")
    bob = s.watcher("bob@localhost")
    bob.subscribe("bob@phone.localhost")
    wait_until(lambda: bob.last("bob@phone.localhost") == ("available", "dnd", "On the phone"),
               what="bob's phone contact")

    # A broken file: refused with file:line, nothing changes.
    with open(s.config) as f:
        good = f.read()
    with open(s.config, "a") as f:
        f.write("[sip]\nsubscribe_rate = fast\n")
    bad_line = len(good.splitlines()) + 2
    s.sipbridge.send_signal(signal.SIGHUP)
    wait_until(lambda: "event=reload_rejected" in s.sipbridge.log(), what="reload refused")
    assert "offhook.conf:%d: subscribe_rate must be a whole number" % bad_line in \
        s.sipbridge.log()
    assert unsubscribes_for(s, "1002") == 0

    # bob leaves, carol arrives, alice stays exactly as she was.
    s.write_config(users=(("alice@localhost", "1001"), ("carol@localhost", "1003")))
    s.sipbridge.send_signal(signal.SIGHUP)
    s.component.send_signal(signal.SIGHUP)
    wait_until(lambda: unsubscribes_for(s, "1002") == 1, what="bob un-SUBSCRIBEd")
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:carol@localhost", "state") == "idle",
               what="carol subscribed")
    assert s.redis.cli("EXISTS", "offhook:user:bob@localhost") == "0"
    assert "removed" in s.redis.cli("XREVRANGE", "offhook:events", "+", "-", "COUNT", "5")
    assert subscribes_for(s, "1001") == 1   # untouched: no new SUBSCRIBE for alice
    assert unsubscribes_for(s, "1001") == 0
    assert "event=reloaded users=2 added=1 removed=1 resubscribed=0 unchanged=1" in \
        s.sipbridge.log()
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "on_call"
    # The component dropped bob's contact: its watcher sees it go.
    wait_until(lambda: bob.last("bob@phone.localhost") == ("unavailable", "", ""),
               what="bob's contact gone")
    assert "event=users_changed added=1 removed=1" in s.component.log()


class NotifySocket:
    """A fake systemd: collects sd_notify datagrams."""

    def __init__(self, workdir, name):
        self.path = os.path.join(workdir, name + ".notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.msgs = []

    def poll(self):
        while True:
            try:
                self.msgs.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.msgs

    def has(self, prefix):
        return any(m.startswith(prefix) for m in self.poll())


def test_systemd_notify(stack_factory):
    s = stack_factory()
    comp = NotifySocket(s.dir, "component")
    s.start_component(env={"NOTIFY_SOCKET": comp.path, "WATCHDOG_USEC": "1000000"})
    wait_until(lambda: comp.has("READY=1"), what="component READY")
    assert any(m.startswith("STATUS=users=1 xmpp=up") for m in comp.poll())
    wait_until(lambda: len([m for m in comp.poll() if m == "WATCHDOG=1"]) >= 2,
               what="watchdog pings")

    sb = NotifySocket(s.dir, "sipbridge")
    s.start_sipbridge(env={"NOTIFY_SOCKET": sb.path})
    # No PBX yet: alive, reporting status, but not READY.
    wait_until(lambda: any(m.startswith("STATUS=") for m in sb.poll()), what="sipbridge STATUS")
    assert not sb.has("READY=1")
    s.start_pbx_script([dialog(IDLE, 0)])
    wait_until(lambda: sb.has("READY=1"), timeout=20, what="sipbridge READY after the PBX")
    s.sipbridge.stop()
    assert sb.has("STOPPING=1")


def test_journald_priorities(stack_factory):
    """Under systemd (JOURNAL_STREAM names stderr) each line starts with <priority>."""
    s = stack_factory()
    log = os.path.join(s.dir, "journal.out")
    with open(log, "w") as f:
        st = os.fstat(f.fileno())
        env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        p = subprocess.Popen([binary("offhook-component"), "-c", s.config], stderr=f, env=env)
        wait_until(lambda: "event=ready" in open(log).read(), what="component ready")
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    lines = [l for l in open(log).read().splitlines() if l]
    assert lines and all(l[0] == "<" and l[2] == ">" for l in lines), lines[:3]
    assert any(l.startswith("<5>level=notice sub=main event=starting") for l in lines)
    assert not any(l[:3] > "<7>" for l in lines)


def test_offhookctl(stack_factory):
    s = stack_factory(users=(("alice@localhost", "1001"), ("bob@localhost", "1002")))
    s.start_component()
    s.start_pbx_script([dialog(INUSE, 0), dialog(IDLE, 0, ext="1002")])
    s.start_sipbridge()
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:bob@localhost", "state") == "idle",
               what="states written")
    ctl = [binary("offhookctl"), "-c", s.config]

    def run(*args):
        r = subprocess.run(ctl + list(args), capture_output=True, text=True, timeout=10)
        assert r.returncode == 0, r.stderr
        return r.stdout

    users = run("users")
    assert "alice@localhost" in users and "on_call" in users and "idle" in users
    js = json.loads(run("--json", "users"))
    assert {u["jid"]: u["state"] for u in js} == {"alice@localhost": "on_call",
                                                  "bob@localhost": "idle"}
    st = json.loads(run("--json", "status", "alice@phone.localhost"))
    assert st["state"] == "on_call" and st["jid"] == "alice@localhost"
    assert st["subscriptions"] and st["subscriptions"][0]["state"] == "active"
    assert "dialog sip:1001@" in st["subscriptions"][0]["what"]
    summary = json.loads(run("--json", "status"))
    assert summary["states"]["on_call"] == 1 and summary["sipbridge_heartbeat_ms"] > 0
    human = run("status", "alice@localhost")
    assert "state:      on_call" in human and "active" in human
    # resync: the component sends everything again.
    bob = s.watcher("bob@localhost")
    bob.subscribe("alice@phone.localhost")
    wait_until(lambda: bob.last("alice@phone.localhost"), what="presence")
    before = len(bob.seen("alice@phone.localhost"))
    run("resync")
    wait_until(lambda: len(bob.seen("alice@phone.localhost")) > before, what="resent presence")
    assert "event=resync scope=all" in s.component.log()
    bad = subprocess.run(ctl + ["status", "nobody@localhost"], capture_output=True, text=True)
    assert bad.returncode == 1 and "not a configured user" in bad.stderr


def test_reload_tightened_policy_drops_watchers(stack_factory):
    """allow_watchers narrowed by SIGHUP: a watcher no longer allowed stops seeing the
    phone at once (unavailable + unsubscribed) and is forgotten in Redis."""
    s = stack_factory()
    bob = alice_on_the_phone(s)
    s.write_config(extra="[component]\nallow_watchers = list\nwatchers = carol@localhost\n")
    s.component.send_signal(signal.SIGHUP)
    wait_until(lambda: bob.last("alice@phone.localhost") == ("unavailable", "", ""),
               what="bob no longer sees the phone")
    assert any(p.type == "unsubscribed" for p in bob.seen("alice@phone.localhost"))
    wait_until(lambda: s.redis.cli("SMEMBERS", "offhook:watchers:alice@phone.localhost") == "",
               what="bob forgotten in Redis")
    assert "event=watchers_dropped count=1" in s.component.log()
    assert s.component.metrics().get('offhook_redis_errors_total{link="feed"}', 0) == 0


def test_reload_remembers_a_pending_restart(stack_factory):
    """Issue 13 item 6: a restart-only change is named at every reload until the daemon
    restarts or the file says the running value again, and the metrics say whether the
    last reload worked and whether a restart is owed."""
    s = stack_factory()
    s.start_component()

    def reload_and_count():
        before = s.component.log().count("event=signal signal=SIGHUP")
        s.component.send_signal(signal.SIGHUP)
        wait_until(lambda: s.component.log().count("event=signal signal=SIGHUP") > before
                   and (s.component.log().count("event=reloaded") > before
                        or "event=reload_rejected problems=" in s.component.log()),
                   what="the reload to finish")
        return s.component.log().count("event=reload_partial")

    with open(s.config) as f:
        good = f.read()
    assert "\npbx = " in good
    changed = "\n".join("pbx = sip:127.0.0.9:5999" if l.startswith("pbx = ") else l
                        for l in good.splitlines()) + "\n"
    with open(s.config, "w") as f:
        f.write(changed)
    assert reload_and_count() == 1
    assert 'restart_needed_for="[sip] pbx"' in s.component.log()
    m = s.component.metrics()
    assert m["offhook_config_restart_pending"] == 1
    assert m["offhook_config_last_reload_successful"] == 1
    # A second reload of the same file still owes the restart.
    assert reload_and_count() == 2
    # The old value back: nothing owed, nothing said.
    with open(s.config, "w") as f:
        f.write(good)
    assert reload_and_count() == 2
    assert s.component.metrics()["offhook_config_restart_pending"] == 0
    # A broken file: refused, and the metric says so until a reload works.
    with open(s.config, "a") as f:
        f.write("[sip]\nsubscribe_rate = fast\n")
    s.component.send_signal(signal.SIGHUP)
    wait_until(lambda: s.component.metrics()["offhook_config_last_reload_successful"] == 0,
               what="the refused reload counted")


def sched_of(pid):
    """(policy, rt_priority) of pid's main thread, from /proc/PID/stat (fields 41 and 40;
    policy 1 is SCHED_FIFO, 0 SCHED_OTHER)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): field n is fields[n - 3].
    return int(fields[41 - 3]), int(fields[40 - 3])


def test_realtime_priority(stack_factory):
    """Issue 14 target 4: [sipbridge]/[component] realtime_priority put each daemon's loop
    under SCHED_FIFO (its wakeups no longer wait behind other processes' time slices), a
    call still turns into presence, and a reload to 0 gives the normal scheduler back."""
    if os.environ.get("OFFHOOK_VALGRIND") == "1":
        pytest.skip("the scheduling call is the kernel's; a daemon under memcheck at "
                    "SCHED_FIFO would hold a core while it translates")
    s = stack_factory(extra_config="[sipbridge]\nrealtime_priority = 3\n"
                                   "[component]\nrealtime_priority = 4\n")
    alice_on_the_phone(s)
    assert sched_of(s.sipbridge.p.pid) == (1, 3)
    assert sched_of(s.component.p.pid) == (1, 4)
    assert s.sipbridge.metrics()["offhook_realtime_priority"] == 3
    assert s.component.metrics()["offhook_realtime_priority"] == 4
    assert "event=scheduling policy=fifo priority=3" in s.sipbridge.log()

    s.write_config(extra="[sipbridge]\nrealtime_priority = 0\n"
                         "[component]\nrealtime_priority = 4\n")
    s.sipbridge.send_signal(signal.SIGHUP)
    wait_until(lambda: sched_of(s.sipbridge.p.pid) == (0, 0), what="SCHED_OTHER again")
    assert s.sipbridge.metrics()["offhook_realtime_priority"] == 0
    assert "event=scheduling policy=other priority=0" in s.sipbridge.log()
    assert "realtime_refused" not in s.sipbridge.log() + s.component.log()


def test_realtime_priority_refused(stack_factory):
    """Without CAP_SYS_NICE (and RLIMIT_RTPRIO 0, the default) the kernel refuses
    SCHED_FIFO: said once with the reason and a hint, counted, and the daemon runs on
    under the normal scheduler and does its work."""
    s = stack_factory(extra_config="[sipbridge]\nrealtime_priority = 5\n")
    alice_on_the_phone(s, sipbridge_wrapper=["setpriv", "--bounding-set", "-sys_nice",
                                             "--inh-caps", "-sys_nice"])
    log = s.sipbridge.log()
    assert log.count("event=realtime_refused") == 1
    assert 'event=realtime_refused priority=5 in_force=0 error="Operation not permitted"' in log
    assert "LimitRTPRIO" in log
    assert sched_of(s.sipbridge.p.pid) == (0, 0)
    m = s.sipbridge.metrics()
    assert m["offhook_realtime_refused_total"] == 1
    assert m["offhook_realtime_priority"] == 0
