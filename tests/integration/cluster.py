"""offhook on several hosts, played on loopback for the integration tests (issue 12): a
Redis master and replica with three sentinels (sentinel.py), Prosody, bench/pbxsim as the
PBX, several offhook-sipbridge sharing the users and two offhook-component (one active,
one standby), each daemon with a configuration of its own that differs from the others
only where two hosts would (its SIP and metrics ports, [sipbridge] / [component]
instance), and boss, a chat user watching every phone contact.

    cs = ClusterStack(workdir, n_users=40)
    cs.start_component("c1"); cs.start_sipbridge("sb1")
    cs.subscribers()       # {user index: [member names holding its subscription]}
    cs.converge()          # until the client shows every phone as the PBX holds it
"""

import os
import subprocess
import time

from calls import UNKNOWN, VIEW
from harness import (Daemon, PbxSim, Prosody, binary, control_dir, free_port, offhook_config,
                     wait_until)
from sentinel import (EXT0, Calls, SentinelRedis, contact, converge, shown_out_of_order,
                      use_sentinels)


class Member(Daemon):
    """One offhook daemon of the cluster, its log and valgrind reports in a directory of
    its own (workdir/<label>)."""

    def __init__(self, kind, label, config, workdir, metrics_port, sip_port=None):
        d = os.path.join(workdir, label)
        os.makedirs(d, exist_ok=True)
        super().__init__(kind, config, d, metrics_port)
        self.kind = kind
        self.label = label
        self.sip_port = sip_port

    def owned(self):
        return int(self.metrics().get('offhook_cluster_users{state="owned"}', -1))

    def moving(self):
        return int(self.metrics().get('offhook_cluster_users{state="moving"}', -1))

    def active(self):
        return self.metrics().get("offhook_component_active") == 1


def member_config(base, path, section_values, replace=()):
    """A copy of the config file base at path: each (section, key, value) of
    section_values set (replaced where the key is there, added to the section otherwise),
    and each (old line, new line) of replace applied."""
    lines = open(base).read().split("\n")
    for old, new in replace:
        lines = [new if line == old else line for line in lines]
    # Each daemon its own control socket (a second one on the same path refuses to start),
    # named after the file, unless given.
    given = {(sec, key) for sec, key, _ in section_values}
    label = os.path.splitext(os.path.basename(path))[0]
    section = None
    for i, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
        elif line.startswith("control = ") and section in ("sipbridge", "component") and \
                (section, "control") not in given:
            lines[i] = "control = %s" % os.path.join(control_dir(path), "%s.%s.sock" % (
                label, section))
    for section, key, value in section_values:
        start = lines.index("[%s]" % section)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")),
                   len(lines))
        hit = [i for i in range(start + 1, end) if lines[i].startswith(key + " = ")]
        if hit:
            lines[hit[0]] = "%s = %s" % (key, value)
        else:
            lines.insert(start + 1, "%s = %s" % (key, value))
    with open(path, "w") as f:
        f.write("\n".join(lines))
    os.chmod(path, 0o600)
    return path


class ClusterStack:
    """Redis with Sentinel, Prosody, pbxsim and the chat user; the daemons are started by
    the test, by label, any number of each."""

    def __init__(self, workdir, n_users=40, loglevel="info", extra=""):
        self.dir = workdir
        self.n = n_users
        self.rs = SentinelRedis(workdir, password="redis-pw", sentinel_password="sentinel-pw")
        self.prosody = self.pbx = self.w = None
        self.members = {}          # label -> the Member running now (or last)
        self.all = []              # every Member started, for stop()
        try:
            self.rs.start()
            self.prosody = Prosody(workdir)
            self.prosody.register("boss", "pw")
            self.prosody.start()
            self.pbx_port = free_port()
            self.pbx = PbxSim(workdir, self.pbx_port).start()
            users = [("u%02d@localhost" % i, "sip:%d@127.0.0.1:%d" % (EXT0 + i, self.pbx_port))
                     for i in range(n_users)]
            self.base = use_sentinels(offhook_config(
                os.path.join(workdir, "offhook.conf"), "redis://unused", self.prosody.comp,
                free_port(), self.pbx_port, free_port(), free_port(), users,
                secret=self.prosody.secret, loglevel=loglevel, extra=extra), self.rs)
            self.calls = Calls(self.pbx, n_users)
            self.ports = {}        # label -> (sip port, metrics port), kept across restarts
        except BaseException:
            self.stop()
            raise

    # ---- the daemons -------------------------------------------------------------------
    def _start(self, kind, label, wait_ready):
        if label not in self.ports:
            self.ports[label] = (free_port(), free_port())
        sip, metrics = self.ports[label]
        cfg = member_config(self.base, os.path.join(self.dir, label + ".conf"), [
            ("sip", "listen", "udp:127.0.0.1:%d" % sip),
            (kind, "metrics", "127.0.0.1:%d" % metrics),
            (kind, "instance", label)])
        d = Member(kind, label, cfg, self.dir, metrics, sip)
        self.members[label] = d
        self.all.append(d)
        if wait_ready:
            wait_until(d.ready, timeout=30, what="%s %s /readyz" % (kind, label))
        return d

    def start_sipbridge(self, label, wait_ready=True):
        return self._start("sipbridge", label, wait_ready)

    def start_component(self, label, wait_ready=True):
        return self._start("component", label, wait_ready)

    def sipbridges(self):
        return [d for d in self.members.values() if d.kind == "sipbridge" and d.alive()]

    def components(self):
        return [d for d in self.members.values() if d.kind == "component" and d.alive()]

    def active_component(self):
        act = [d for d in self.components() if d.active()]
        return act[0] if len(act) == 1 else None

    def watch(self):
        """boss logs in and subscribes to every phone contact (once a component is up)."""
        from watcher import Watcher
        self.w = Watcher("boss@localhost", "pw", self.prosody.c2s, reconnect=True)
        for i in range(self.n):
            self.w.subscribe(contact(i))
        return self.w

    # ---- what the PBX and Redis hold -----------------------------------------------------
    def subscribers(self):
        """{user index: [label of each live sipbridge holding a subscription to it]}, read
        from the PBX (a dead member's dialogs stay there until it is told otherwise)."""
        by_port = {d.sip_port: d.label for d in self.sipbridges()}
        out = {i: [] for i in range(self.n)}
        for line in self.pbx.command("peers").splitlines():
            f = line.split()
            if not f or not f[0].isdigit() or not 0 <= int(f[0]) - EXT0 < self.n:
                continue
            out[int(f[0]) - EXT0] = sorted(by_port[int(p)] for p in f[1:] if int(p) in by_port)
        return out

    def duplicates(self):
        """Users subscribed by more than one live sipbridge."""
        return sum(1 for v in self.subscribers().values() if len(v) > 1)

    def each_once(self):
        """Every user subscribed by exactly one live sipbridge."""
        return all(len(v) == 1 for v in self.subscribers().values())

    def redis(self, *args):
        return self.rs.master().cli(*args)

    def members_hash(self, group="sipbridge"):
        """{name: (epoch, expires ms)} of a group's leases, and the holder under '@holder'."""
        out = {}
        flat = self.redis("HGETALL", "offhook:members:" + group).splitlines()
        for k, v in zip(flat[0::2], flat[1::2]):
            f = v.split()
            out[k] = v if k.startswith("@") else (int(f[0]), int(f[1]))
        return out

    def redis_now_ms(self):
        sec, usec = self.redis("TIME").splitlines()
        return int(sec) * 1000 + int(usec) // 1000

    def lease_expires_in(self, label, group="sipbridge"):
        """Seconds until label's lease runs out, by the Redis server's clock."""
        return (self.members_hash(group)[label][1] - self.redis_now_ms()) / 1000.0

    def hget_all(self, field):
        """{user index: the field of its hash} on the master, in one round of redis-cli."""
        m = self.rs.master()
        cmds = "".join("HGET offhook:user:u%02d@localhost %s\n" % (i, field)
                       for i in range(self.n))
        out = subprocess.run(["redis-cli", "-p", str(m.port), "--raw", "--no-auth-warning",
                              "-a", m.password], input=cmds, capture_output=True, text=True,
                             timeout=10).stdout.split("\n")
        return {i: out[i] if i < len(out) else "" for i in range(self.n)}

    def owners(self):
        """{user index: owner label} from each user's hash in Redis."""
        return {i: o.split(" ", 1)[1] if " " in o else None
                for i, o in self.hget_all("owner").items()}

    # ---- what the client shows -----------------------------------------------------------
    def wrong(self):
        cur = self.w.current()
        return {contact(i): (cur.get(contact(i)), VIEW[self.calls.truth[i]])
                for i in range(self.n) if cur.get(contact(i)) != VIEW[self.calls.truth[i]]}

    def wrong_in_redis(self):
        states = self.hget_all("state")
        return {"u%02d" % i: (states[i], self.calls.truth[i]) for i in range(self.n)
                if states[i] != self.calls.truth[i]}

    def converge(self, timeout=30.0, t0=None):
        """Seconds (from t0, default now) until the client shows every phone as the PBX
        holds it."""
        return converge(self, timeout, t0)

    def shown_since(self, since, views):
        """{contact: [views]} of presences received after since that are one of views."""
        out = {}
        for p in self.w.seen():
            if p.at >= since and p.type in ("available", "unavailable") and p.view() in views:
                out.setdefault(p.frm, []).append(p.view())
        return out

    def unknown_since(self, since):
        return self.shown_since(since, (UNKNOWN,))

    def unavailable_since(self, since):
        """Presences of type unavailable (unknown, offline, a goodbye) after since."""
        out = {}
        for p in self.w.seen():
            if p.at >= since and p.type == "unavailable":
                out.setdefault(p.frm, []).append(p.view())
        return out

    def shown_out_of_order(self, since):
        """As SentinelStack's: contacts shown a state applied twice or never held."""
        return shown_out_of_order(self.w, self.calls, self.n, since)

    def ctl(self, *args, rc=0):
        r = subprocess.run([binary("offhookctl"), "-c", self.base] + list(args),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == rc, (r.returncode, r.stdout, r.stderr)
        return r.stdout

    def logs(self, last=6000):
        out = []
        for d in self.members.values():
            out.append("==== %s %s ====\n%s" % (d.kind, d.label, d.log()[-last:]))
        out.append(self.rs.sentinel_log())
        return "\n".join(out)

    def stop(self):
        """Stops everything; returns the problems seen (bad exits, sanitizer reports)."""
        problems = []
        self.calls_stop()
        if self.w:
            try:
                self.w.close()
            except Exception:
                pass
        for d in self.all:
            was_alive = d.alive()
            rc = d.stop(timeout=40)
            if was_alive and rc != 0:
                problems.append("%s %s exited with %s" % (d.kind, d.label, rc))
            problems += d.problems()
        if self.pbx and self.pbx.proc:
            self.pbx.proc.stop()
        if self.prosody:
            self.prosody.stop()
        self.rs.stop()
        return problems

    def calls_stop(self):
        if getattr(self, "calls", None):
            self.calls.stop_background(check=False)
