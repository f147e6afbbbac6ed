"""Issue 16: the operator's console. Each daemon's control socket and every offhookctl
command that asks the running daemons (subscriptions, user, trace, loglevel, config,
reload, status), against real daemons, Redis, Prosody and a PBX on loopback; and the
three answers to "why does alice show offline?", each from one offhookctl command:
sipbridge is dead, the PBX refuses the subscription, the watcher was refused."""

import json
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time

import pytest

from calls import CONTACT, IDLE, ON_CALL, RINGING, UNKNOWN
from harness import (PbxSim, SippPbx, binary, control_socket, sipp_pbx_script, step_respond,
                     wait_until)


def as_user(name):
    """subprocess.run's arguments to run as name with its own groups only (user= alone
    would keep root's group)."""
    pw = pwd.getpwnam(name)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def ctl(s, *args, user=None, config=None, timeout=30):
    """offhookctl on s's configuration (as user, a name, if given): (exit status, stdout,
    stderr)."""
    r = subprocess.run([binary("offhookctl"), "-c", config or s.config] + list(args),
                       capture_output=True, text=True, timeout=timeout,
                       **(as_user(user) if user else {}))
    return r.returncode, r.stdout, r.stderr


def ctl_json(s, *args, expect=0):
    rc, out, err = ctl(s, "--json", *args)
    assert rc == expect, (rc, out, err)
    return json.loads(out)


def raw(path, data, want_close=False, timeout=5.0):
    """Sends bytes to a control socket; returns what came back until the answer's dot line
    (or, with want_close, until the daemon closed)."""
    with socket.socket(socket.AF_UNIX) as c:
        c.settimeout(timeout)
        c.connect(path)
        try:
            c.sendall(data)
        except BrokenPipeError:
            pass  # the daemon hung up at once (busy): what it said is there to read
        got = b""
        while True:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                # The daemon hung up on bytes it did not read: what it said came first.
                chunk = b""
            if not chunk:
                return got.decode(errors="replace")
            got += chunk
            if not want_close and (got.endswith(b"\n.\n") or got == b".\n"):
                return got.decode(errors="replace")


def log_lines(daemon, marker, since=0):
    """The lines of daemon's output holding marker, from byte since on."""
    return [line for line in daemon.log()[since:].splitlines() if marker in line]


# ---- one stack for the read-only questions ---------------------------------------------

class Live:
    """alice (1001), bob (1002), carol (1003) on pbxsim; bob watches alice's phone; eve
    (another domain) tried to and was refused; alice is on the phone. Logs at info, so any
    debug line comes from a trace."""

    def __init__(self, make):
        self.s = make(users=(("alice@localhost", "1001"), ("bob@localhost", "1002"),
                             ("carol@localhost", "1003")), loglevel="info")
        self.pbx = self.s.add(PbxSim(self.s.dir, self.s.pbx_port)).start()
        self.s.start_component()
        self.s.start_sipbridge(wait_ready=True)
        self.bob = self.s.watcher("bob@localhost")
        self.bob.subscribe(CONTACT)
        self.eve = self.s.watcher("eve@other.localhost")
        self.eve.subscribe(CONTACT)
        wait_until(lambda: self.bob.last(CONTACT) == IDLE, what="bob sees alice idle")
        wait_until(lambda: self.s.component.metrics().get("offhook_watchers_refused_total", 0)
                   >= 1, what="eve refused")
        self.pbx.set(1001, "on_call")
        wait_until(lambda: self.bob.last(CONTACT) == ON_CALL, what="bob sees alice on the phone")
        wait_until(lambda: self.s.redis.cli("HGET", "offhook:user:carol@localhost", "state")
                   == "idle", what="every state written")


@pytest.fixture(scope="module")
def live(module_stack_factory):
    return Live(module_stack_factory)


def test_control_sockets_are_the_daemons_and_theirs_only(live):
    """Each daemon's socket: a socket, mode 0660, its own user's; another user may not
    connect, and offhookctl run by one says why (exit 5) instead of anything stale."""
    s = live.s
    for daemon in ("sipbridge", "component"):
        path = control_socket(s.config, daemon)
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_uid == os.geteuid() and st.st_gid == os.getegid()
    probe = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
         "try:\n s.connect(sys.argv[1])\nexcept PermissionError:\n sys.exit(13)\n"
         "sys.exit(0)", control_socket(s.config, "sipbridge")], timeout=10, **as_user("nobody"))
    assert probe.returncode == 13
    # offhookctl as that user, with a copy of the configuration it may read (no secret).
    copy = os.path.join(s.dir, "nobody.conf")
    with open(s.config) as src, open(copy, "w") as dst:
        dst.write("".join(l for l in src if not l.startswith("secret")))
    os.chmod(copy, 0o644)
    rc, out, err = ctl(s, "user", "alice@localhost", user="nobody", config=copy)
    assert rc == 5, (out, err)
    assert "may not use its control socket" in out + err
    assert "offhook under the systemd units" in out + err


def test_subscriptions(live):
    s = live.s
    rc, out, err = ctl(s, "subscriptions")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["STATE", "PACKAGE", "AOR"]
    for ext, jid in (("1001", "alice"), ("1002", "bob"), ("1003", "carol")):
        row = [l for l in lines if "sip:%s@" % ext in l]
        assert len(row) == 1, out
        assert row[0].split()[0] == "active" and "%s@localhost" % jid in row[0]
        assert " 200 " in row[0]
    assert lines[-1] == "3 subscriptions"

    js = ctl_json(s, "subscriptions")
    assert js["live"] is True and js["count"] == 3 and js["cut_short"] is False
    by_user = {x["user"]: x for x in js["subscriptions"]}
    alice = by_user["alice@localhost"]
    assert alice["state"] == "active" and alice["package"] == "dialog"
    assert alice["last_status"] == 200 and alice["aor"] == s.aor("1001")
    assert alice["last_notify_ms"] > 0 and alice["granted_s"] > 0 and alice["next_try_ms"] == 0

    # Filters, by AOR, user and state; a state nothing is in lists nothing.
    js = ctl_json(s, "subscriptions", "--aor", s.aor("1002"))
    assert [x["user"] for x in js["subscriptions"]] == ["bob@localhost"]
    js = ctl_json(s, "subscriptions", "--user", "carol@localhost")
    assert [x["aor"] for x in js["subscriptions"]] == [s.aor("1003")]
    for state in ("backoff", "failed", "down"):
        assert ctl_json(s, "subscriptions", "--state", state)["count"] == 0
    assert ctl_json(s, "subscriptions", "--state", "active")["count"] == 3
    rc, out, err = ctl(s, "subscriptions", "--state", "sleepy")
    assert rc == 2 and "--state is one of" in err


def test_user_says_why(live):
    """offhookctl user: the state and the dialog behind it, each subscription, what each
    watcher was last sent and when, who was refused, PEP."""
    s = live.s
    rc, out, err = ctl(s, "user", "alice@phone.localhost")  # the contact works too
    assert rc == 0, err
    sb, comp = out.split("== component ==")
    assert sb.startswith("== sipbridge ==")
    assert "state:    on_call" in sb
    assert "why:      dialog " in sb and "is confirmed" in sb and s.aor("1001") in sb
    assert "<- decides the state" in sb and "subscription: active" in sb
    assert "last answer 200" in sb
    assert "shown:    dnd \"On the phone\" (sipbridge's record)" in comp
    assert "watchers: 1" in comp and "bob@localhost" in comp
    assert "eve@other.localhost" in comp and "subscribe" in comp

    js = ctl_json(s, "user", "alice@localhost")
    sj, cj = js["sipbridge"], js["component"]
    assert js["user"] == "alice@localhost" and js["contact"] == CONTACT
    assert sj["state"] == "on_call" and sj["why"]["kind"] == "call"
    src = sj["sources"][sj["why"]["source"]]
    assert src["aor"] == s.aor("1001") and src["package"] == "dialog"
    assert sj["why"]["dialog"] in [d["id"] for d in src["dialogs"]]
    assert [d["state"] for d in src["dialogs"] if d["id"] == sj["why"]["dialog"]] == ["confirmed"]
    assert src["subscription"]["state"] == "active"
    assert cj["record"]["state"] == "on_call" and cj["sipbridge_alive"] is True
    assert cj["shown"] == {"available": True, "show": "dnd", "status": "On the phone"}
    (bob,) = cj["watchers"]
    assert bob["jid"] == "bob@localhost"
    assert bob["last_sent"]["presence"]["status"] == "On the phone"
    assert bob["last_sent"]["how"] == "change"
    assert time.time() * 1000 - bob["last_sent"]["at_ms"] < 120000
    assert cj["pep"]["enabled"] is True and cj["pep"]["may_set"] is False
    assert cj["pep"]["nodes"] == []  # no grant: nothing read or written

    rc, out, err = ctl(s, "user", "mallory@localhost")
    assert rc == 1 and "not a configured user" in err


def test_why_offline_watcher_refused(live):
    """Case 3: alice shows offline to eve because the watcher policy refused eve: one
    command names eve, the request and the policy."""
    s = live.s
    rc, out, err = ctl(s, "-d", "component", "user", "alice@localhost")
    assert rc == 0, err
    assert "== sipbridge ==" not in out
    assert "refused:  " in out and "(allow_watchers = same-domain)" in out
    line = [l for l in out.splitlines() if "eve@other.localhost" in l]
    assert line and "subscribe" in line[0]
    cj = ctl_json(s, "-d", "component", "user", "alice@localhost")["component"]
    assert cj["policy"] == "same-domain" and cj["refused_total"] >= 1
    assert [r["jid"] for r in cj["refused"]] == ["eve@other.localhost"]
    assert cj["refused"][0]["request"] == "subscribe"
    assert "eve@other.localhost" not in [w["jid"] for w in cj["watchers"]]


def test_status_says_whether_the_daemons_run(live):
    s = live.s
    rc, out, err = ctl(s, "status")
    assert rc == 0, err
    sb = [l for l in out.splitlines() if l.startswith("sipbridge:")][0]
    assert "running, ready (pid %d" % s.sipbridge.p.pid in sb and "heartbeat" in sb
    js = ctl_json(s, "status")
    assert js["sipbridge"]["running"] is True and js["sipbridge"]["pid"] == s.sipbridge.p.pid
    assert js["component"]["running"] is True and js["component"]["ready"] is True
    st = ctl_json(s, "status", "alice@localhost")
    assert st["live"] is True and st["sipbridge_running"] is True and st["state"] == "on_call"
    # The daemons' own status, straight from the socket.
    got = raw(control_socket(s.config, "sipbridge"), b"status\n")
    assert got.startswith("OK\n") and "ready:       yes" in got
    assert "subscriptions: queued=0 subscribing=0 pending=0 active=3 backoff=0" in got


def test_trace_one_user(live):
    """trace alice: her SIP messages and decisions, and the component's stanzas for her,
    at debug level in the logs (which are at info), and nobody else's; it ends by itself
    or with --off."""
    s, pbx = live.s, live.pbx
    # Only what is written from now on: another test may have set the level to debug.
    ctl(s, "loglevel", "info")
    mark_sb, mark_comp = len(s.sipbridge.log()), len(s.component.log())
    rc, out, err = ctl(s, "trace", "alice@localhost", "--for", "2m", "--bodies")
    assert rc == 0, err
    assert "tracing alice@localhost (1 object) for 120 s" in out  # sipbridge: one source
    listing = ctl_json(s, "trace")
    assert [t["who"] for t in listing["sipbridge"]["traces"]] == ["alice@localhost"]
    assert listing["component"]["traces"][0]["bodies"] is True
    pbx.set(1001, "ringing")
    pbx.set(1002, "ringing")
    wait_until(lambda: live.bob.last(CONTACT) == RINGING, what="alice ringing")
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:bob@localhost", "state") == "ringing",
               what="bob ringing")
    aor_a, aor_b = s.aor("1001"), s.aor("1002")
    wait_until(lambda: log_lines(s.sipbridge, "event=trace_state user=alice@localhost",
                                 mark_sb), what="alice's combining traced")
    debug = log_lines(s.sipbridge, "level=debug", mark_sb)
    assert any("event=trace_notify aor=%s" % aor_a in l for l in debug)
    assert any("event=trace_notify_body aor=%s" % aor_a in l and "dialog-info" in l
               for l in debug)
    assert any("event=trace_source user=alice@localhost" in l for l in debug)
    assert not [l for l in debug if aor_b in l or "bob@localhost" in l or "carol" in l]
    wait_until(lambda: log_lines(s.component, "event=trace_stanza user=alice@localhost",
                                 mark_comp), what="the component's stanza for alice traced")
    cdebug = log_lines(s.component, "level=debug", mark_comp)
    assert all("alice@" in l or "sub=control" in l for l in cdebug), cdebug

    # --off ends it in both; an AOR is traced in sipbridge only.
    rc, out, err = ctl(s, "trace", "alice@localhost", "--off")
    assert rc == 0 and out.count("trace of alice@localhost ended") == 2, (out, err)
    before = len(log_lines(s.sipbridge, "event=trace_notify "))
    pbx.set(1001, "idle")
    wait_until(lambda: live.bob.last(CONTACT) == IDLE, what="alice idle")
    assert len(log_lines(s.sipbridge, "event=trace_notify ")) == before
    rc, out, err = ctl(s, "trace", aor_b, "--for", "30s")
    assert rc == 0 and "== component ==" not in out and "tracing %s" % aor_b in out
    assert ctl_json(s, "-d", "sipbridge", "trace")["sipbridge"]["traces"][0]["who"] == aor_b
    assert ctl(s, "trace", aor_b, "--off")[0] == 0
    rc, out, err = ctl(s, "trace", "sip:9999@nowhere")
    assert rc == 1 and "names nothing" in err
    assert ctl(s, "trace", "--for", "1m")[0] == 2  # no WHO


def test_loglevel(live):
    s = live.s
    js = ctl_json(s, "loglevel")
    assert js["sipbridge"]["log_level"] == "info" and js["component"]["log_level"] == "info"
    rc, out, err = ctl(s, "-d", "sipbridge", "loglevel", "debug")
    assert rc == 0 and "log level debug (was info)" in out and "component" not in out
    assert ctl_json(s, "status")["sipbridge"]["running"] is True
    got = raw(control_socket(s.config, "sipbridge"), b"status --json\n")
    assert json.loads(got[3:-2])["log_level"] == "debug"
    wait_until(lambda: log_lines(s.sipbridge, "event=log_level from=info to=debug"),
               what="the change logged")
    cfg = ctl_json(s, "-d", "sipbridge", "config")["sipbridge"]
    level = [k for k in cfg["keys"] if k["section"] == "log" and k["key"] == "level"][0]
    assert level["value"] == "debug" and level["pending"] is None
    assert ctl(s, "loglevel", "chatty")[0] == 2
    assert ctl(s, "loglevel", "info")[0] == 0
    assert ctl_json(s, "loglevel")["sipbridge"]["log_level"] == "info"


def test_bad_clients_do_not_disturb_the_daemon(live):
    """Clients that connect and say nothing, send garbage or half a line, or crowd the
    socket: they get an error or wait, and the daemon goes on with its work and with
    everyone else."""
    s, pbx = live.s, live.pbx
    path = control_socket(s.config, "sipbridge")
    before = s.sipbridge.metrics()
    # Garbage: an error, then the daemon closes.
    got = raw(path, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\n", want_close=True)
    assert got.startswith("ERR badrequest ")
    got = raw(path, b"x" * 5000, want_close=True)
    assert got.startswith("ERR badrequest request line too long")
    # Silent and half-line clients hold a slot each, as do clients between requests: 8 in
    # all. Connections are accepted in order, so once the last four have had their
    # answers, the first four hold their slots too.
    held = []
    for i in range(4):
        c = socket.socket(socket.AF_UNIX)
        c.connect(path)
        if i % 2:
            c.sendall(b"subscrip")
        held.append(c)
    for i in range(4):
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(10)
        c.connect(path)
        c.sendall(b"help\n")
        got = b""
        while not got.endswith(b"\n.\n"):
            got += c.recv(65536)
        assert got.startswith(b"OK\n")
        held.append(c)
    got = raw(path, b"help\n", want_close=True)  # the 9th
    assert got.startswith("ERR busy "), got
    rc, out, err = ctl(s, "-d", "sipbridge", "loglevel")
    assert rc == 5 and "too many control clients" in err
    # Meanwhile the daemon works: a call goes through to bob.
    pbx.set(1001, "on_call")
    wait_until(lambda: live.bob.last(CONTACT) == ON_CALL, what="alice's call shown")
    for c in held:
        c.close()
    wait_until(lambda: ctl(s, "-d", "sipbridge", "loglevel")[0] == 0, what="room again")
    after = s.sipbridge.metrics()
    key = 'offhook_control_requests_total{outcome="%s"}'
    assert after[key % "bad_request"] - before[key % "bad_request"] == 2
    assert after[key % "busy"] - before[key % "busy"] >= 2
    assert s.sipbridge.alive() and s.sipbridge.ready()


# ---- the configuration ---------------------------------------------------------------------

def test_config_and_reload(stack_factory):
    """config shows the running values and where the file differs; reload applies it and
    says what still needs a restart; a broken file is refused with each problem (exit 6)
    and the daemons keep what they run."""
    s = stack_factory(loglevel="info")
    s.start_component()
    s.start_pbx_script([[step_respond(expires=3600, initial=True)]])
    s.start_sipbridge()
    wait_until(lambda: os.path.exists(control_socket(s.config, "sipbridge")),
               what="sipbridge's control socket")
    rc, out, err = ctl(s, "config")
    assert rc == 0, err
    assert "[sip] subscribe_rate = 50" in out and "[xmpp] secret = (set)" in out
    assert "s3cret" not in out
    assert out.count("# the file holds these values") == 2
    with open(s.config) as f:
        text = f.read()
    text = text.replace("[sip]\n", "[sip]\nsubscribe_rate = 7\n", 1)
    text = text.replace("expires = 3600", "expires = 3600\nprobe_interval = 9", 1)
    text = text.replace("host = 127.0.0.1", "host = localhost", 1)
    text += "[user dave@localhost]\naor = %s\n" % s.aor("1004")
    with open(s.config, "w") as f:
        f.write(text)
    js = ctl_json(s, "config")
    for daemon in ("sipbridge", "component"):
        keys = {(k["section"], k["key"]): k for k in js[daemon]["keys"]}
        assert keys[("sip", "subscribe_rate")]["value"] == "50"
        assert keys[("sip", "subscribe_rate")]["file_value"] == "7"
        assert keys[("sip", "subscribe_rate")]["pending"] == "reload"
        assert keys[("xmpp", "host")]["pending"] == "restart"
        assert keys[("xmpp", "secret")]["value"] == "(set)"
        assert js[daemon]["users"]["added"] == ["dave@localhost"]
        assert js[daemon]["pending_reload"] == 2 and js[daemon]["pending_restart"] == 1
    rc, out, err = ctl(s, "config")
    assert "[sip] subscribe_rate = 50   <- the file says '7': reload to apply" in out

    rc, out, err = ctl(s, "reload")
    assert rc == 0, err
    assert out.count("restart needed for: [xmpp] host") == 2
    assert "reloaded %s: 2 users" % s.config in out
    js = ctl_json(s, "-d", "sipbridge", "config")["sipbridge"]
    keys = {(k["section"], k["key"]): k for k in js["keys"]}
    assert keys[("sip", "subscribe_rate")]["value"] == "7"
    assert keys[("sip", "subscribe_rate")]["pending"] is None
    assert keys[("xmpp", "host")]["value"] == "127.0.0.1"
    assert js["pending_restart"] == 1 and "added" not in js["users"]
    wait_until(lambda: ctl_json(s, "subscriptions", "--user", "dave@localhost")["count"] == 1,
               what="dave subscribed after the reload")

    with open(s.config, "a") as f:
        f.write("[sip]\nsubscribe_rate = many\n")
    bad_line = len(open(s.config).read().splitlines())
    rc, out, err = ctl(s, "reload")
    assert rc == 6, (out, err)
    # offhookctl reads the file too: it says so, and asks the daemons all the same.
    assert "has problems (a reload would be refused); asking the daemons anyway" in err
    assert err.count("reload refused: the running configuration stays") == 2
    assert err.count("%s:%d: [sip] subscribe_rate is already set on line" % (s.config,
                                                                          bad_line)) == 3
    js = ctl_json(s, "reload", expect=6)
    assert js["sipbridge"]["outcome"] == "error" and js["sipbridge"]["code"] == "failed"
    assert "subscribe_rate is already set" in js["component"]["detail"]
    for d in (s.sipbridge, s.component):
        assert d.metrics()["offhook_config_last_reload_successful"] == 0
    js = ctl_json(s, "-d", "component", "config")["component"]
    assert js["file_problems"] and "users" not in js
    assert s.sipbridge.alive() and s.component.alive()


# ---- why does alice show offline? ------------------------------------------------------------

def test_why_offline_sipbridge_dead(stack_factory):
    """Case 1: sipbridge died. offhookctl says so (exit 5) instead of printing the last
    state as if live, and shows what Redis still holds, marked not live; once the
    heartbeat is gone the component's part says that is why watchers see "unknown"."""
    s = stack_factory(loglevel="info")
    s.start_component()
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.start_sipbridge(wait_ready=True)
    bob = s.watcher("bob@localhost")
    bob.subscribe(CONTACT)
    wait_until(lambda: bob.last(CONTACT) == IDLE, what="bob sees alice idle")
    assert pbx.get()["1001"][0] == "idle"
    s.sipbridge.kill9()
    sock = control_socket(s.config, "sipbridge")
    assert os.path.exists(sock)  # left behind by the killed daemon: nobody answers on it

    rc, out, err = ctl(s, "user", "alice@localhost")
    assert rc == 5, (out, err)
    assert "== sipbridge: NOT ANSWERING ==" in out
    assert "sipbridge is not running (%s: Connection refused)" % sock in out
    assert "last written: idle since" in out and "not live" in out
    assert "subscriptions as last written:" in out and s.aor("1001") in out
    js = json.loads(ctl(s, "--json", "user", "alice@localhost")[1])
    assert js["sipbridge"]["outcome"] == "down" and js["sipbridge"]["live"] is False
    assert js["sipbridge"]["redis"]["record"]["state"] == "idle"
    assert js["sipbridge"]["redis"]["subscriptions"][0]["state"] == "active"
    assert js["component"]["user"] == "alice@localhost"

    rc, out, err = ctl(s, "subscriptions")
    assert rc == 5 and "sipbridge is not running" in err and "not live" in err
    assert "active" in out and s.aor("1001") in out
    js = json.loads(ctl(s, "--json", "subscriptions")[1])
    assert js["live"] is False and js["subscriptions"][0]["user"] == "alice@localhost"

    # The heartbeat expires 30 s after the last beat; deleting it is that expiry now.
    s.redis.cli("DEL", "offhook:heartbeat:sipbridge")
    wait_until(lambda: bob.last(CONTACT) == UNKNOWN, what="bob sees unknown")
    rc, out, err = ctl(s, "user", "alice@localhost")
    comp = out.split("== component ==")[1]
    assert "shown:    unavailable \"Phone status unknown\" (sipbridge's heartbeat in Redis is " \
           "missing" in comp
    assert "heartbeat: none in the last 30 s" in out
    rc, out, err = ctl(s, "status", "alice@localhost")
    assert rc == 0 and "live:       NO: sipbridge's heartbeat is missing" in out
    assert "sipbridge is not running" in out
    rc, out, err = ctl(s, "status")
    line = [l for l in out.splitlines() if l.startswith("sipbridge:")][0]
    assert line.startswith("sipbridge:  not running (%s: Connection refused)" % sock), line
    assert "heartbeat none in the last 30 s" in line

    # A new sipbridge takes the socket the killed one left.
    s.start_sipbridge(wait_ready=True)
    wait_until(lambda: ctl(s, "-d", "sipbridge", "loglevel")[0] == 0, what="socket again")


def test_why_offline_pbx_refusing(stack_factory):
    """Case 2: the PBX refuses the subscriptions (403, 404): one command shows the status,
    its reason phrase and when the next attempt is. The 404's phrase is not one of the
    common words subscription.c points at (it keeps its own copy of that one)."""
    s = stack_factory(users=(("alice@localhost", "1001"), ("bob@localhost", "1002")),
                      loglevel="info")
    s.start_component()
    s.pbx = SippPbx(s.dir, sipp_pbx_script([[step_respond("403 Forbidden", initial=True)],
                                            [step_respond("404 No Such Extension Here",
                                                          initial=True)]],
                                           s.dir), port=s.pbx_port)
    s.pbx.start(calls=2)
    s.start_sipbridge()
    wait_until(lambda: os.path.exists(control_socket(s.config, "sipbridge")),
               what="sipbridge's control socket")
    wait_until(lambda: ctl_json(s, "subscriptions", "--state", "failed")["count"] == 2,
               what="both subscriptions refused")
    js = ctl_json(s, "subscriptions", "--state", "failed")
    got = {x["user"]: x for x in js["subscriptions"]}
    assert {x["last_status"] for x in got.values()} == {403, 404}
    now = time.time() * 1000
    for x in got.values():
        assert x["state"] == "backoff" and x["down_cause"] == "error_response"
        assert x["last_phrase"] == {403: "Forbidden",
                                    404: "No Such Extension Here"}[x["last_status"]]
        # 403/404: no sooner than a minute.
        assert now + 50000 < x["next_try_ms"] < now + 400000
    alice = got["alice@localhost"]
    rc, out, err = ctl(s, "user", "alice@localhost")
    assert rc == 0, err
    assert "subscription: backoff" in out
    assert "last answer %d %s" % (alice["last_status"], alice["last_phrase"]) in out
    assert "down because: error_response; next try in " in out
    assert "why:      nothing heard from any source yet" in out
    assert "record:   none from sipbridge" in out
    rc, out, err = ctl(s, "subscriptions", "--state", "backoff")
    assert rc == 0 and "403 Forbidden" in out and "404 No Such Extension Here" in out


def test_user_shows_pep(stack_factory):
    """Where the server grants XEP-0356, user says what became of alice's PEP nodes: in
    step with her call, and the server's last answer."""
    s = stack_factory(privilege=True, loglevel="info")
    s.start_component()
    wait_until(lambda: "event=grant domain=localhost" in s.component.log()
               or "pep=on" in s.component.log(), what="the server's <privilege/>")
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.start_sipbridge(wait_ready=True)
    pbx.set(1001, "on_call")

    def nodes():
        cj = ctl_json(s, "-d", "component", "user", "alice@localhost")["component"]
        return cj["pep"], {n["node"]: n for n in cj["pep"]["nodes"]}
    wait_until(lambda: nodes()[1].get("activity", {}).get("in_sync")
               and nodes()[1]["activity"]["answer_to"] == "write", what="activity written")
    pep, by = nodes()
    assert pep["advertised"] and pep["may_get"] and pep["may_set"]
    assert by["activity"]["result"] == "ok" and by["activity"]["model"] == "presence"
    assert by["activity"]["answer_ms"] > 0 and not by["activity"]["busy"]
    rc, out, err = ctl(s, "-d", "component", "user", "alice@localhost")
    assert rc == 0, err
    assert "pep:      on (pubsub get and set granted)" in out
    line = [l for l in out.splitlines() if l.strip().startswith("activity")][0]
    assert "as the view wants" in line and "last write answered" in line and " ok" in line


def test_control_socket_belongs_to_the_daemons_user(stack_factory):
    """Run as an ordinary user (nobody here, offhook under the units), the daemon's socket
    is that user's and group's, mode 0660; root still asks it."""
    if os.geteuid() != 0:
        pytest.skip("running a daemon as another user needs root")
    nobody = pwd.getpwnam("nobody")
    s = stack_factory(loglevel="info")
    os.chown(s.config, nobody.pw_uid, nobody.pw_gid)  # 0600, as /etc/offhook for offhook
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.start_sipbridge(wait_ready=True, wrapper=[
        "setpriv", "--reuid=%d" % nobody.pw_uid, "--regid=%d" % nobody.pw_gid,
        "--clear-groups"])
    path = control_socket(s.config, "sipbridge")
    st = os.lstat(path)
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(st.st_mode) == 0o660
    js = ctl_json(s, "-d", "sipbridge", "user", "alice@localhost")["sipbridge"]
    assert js["sources"][0]["subscription"]["state"] == "active"
    assert pbx.get()["1001"][1] == 1
