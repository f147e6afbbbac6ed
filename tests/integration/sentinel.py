"""Redis with Sentinel for the integration tests: a master, a replica and three
redis-sentinel processes on loopback, free ports, each in its own directory under the
test's work directory, with short timings so a failover takes seconds. Their
configuration files are deploy/redis's recipe with the addresses, passwords and timings
replaced, so the recipe operators follow is the one tested.

    rs = SentinelRedis(workdir).start()
    rs.config_lines()          # the [redis] keys offhook needs to use them
    rs.master()                # the node the sentinels name now
    old = rs.kill_master()     # kill -9; then rs.wait_failover(old)
"""

import os
import random
import signal
import socket
import subprocess
import threading
import time

from calls import VIEW
from harness import (ROOT, Daemon, PbxSim, Proc, Prosody, free_port, offhook_config,
                     wait_until)

RECIPE = os.path.join(ROOT, "deploy", "redis")

MASTER_NAME = "offhook"
DOWN_AFTER_MS = 1000      # a master silent this long is subjectively down
FAILOVER_TIMEOUT_MS = 3000  # a stalled failover is retried after twice this


def recipe(name, replace):
    """deploy/redis/<name> with each (old, new) line replaced; a replacement that matches
    no line is an error, so the recipe and the tests cannot drift apart unnoticed."""
    lines = open(os.path.join(RECIPE, name)).read().split("\n")
    for old, new in replace:
        hits = [i for i, line in enumerate(lines) if line == old]
        if len(hits) != 1:
            raise RuntimeError("deploy/redis/%s: %d lines %r" % (name, len(hits), old))
        lines[hits[0]] = new
    return "\n".join(lines)


class RedisNode:
    """One redis-server from deploy/redis/redis.conf, without persistence; replicaof
    makes it a replica."""

    def __init__(self, workdir, name, password=None):
        self.name = name
        self.port = free_port()
        self.password = password
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None

    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self, replicaof=None):
        conf = os.path.join(self.dir, "redis.conf")
        pw = self.password
        with open(conf, "w") as f:
            f.write(recipe("redis.conf", [
                ("bind 192.0.2.11 127.0.0.1 -::1", "bind 127.0.0.1"),
                ("port 6379", "port %d" % self.port),
                ("requirepass CHANGE-ME", "requirepass %s" % pw if pw else ""),
                ("masterauth CHANGE-ME", "masterauth %s" % pw if pw else "")]))
        # Without persistence: a restarted node comes back empty, as a replica resyncs.
        argv = ["redis-server", conf, "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no"]
        if replicaof:
            argv += ["--replicaof", "127.0.0.1", str(replicaof.port)]
        self.proc = Proc(self.name, argv, self.dir)
        wait_until(lambda: self.cli("PING") == "PONG", what="redis-server %s" % self.name)
        return self

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def cli(self, *args):
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + auth + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def role(self):
        out = self.cli("ROLE").splitlines()
        return out[0] if out else ""

    def stop(self):
        if self.proc and self.proc.alive():
            self.proc.stop()


class Sentinel:
    """One redis-sentinel from deploy/redis/sentinel.conf (which it rewrites as it
    learns)."""

    def __init__(self, workdir, index, master, password=None, redis_password=None):
        self.name = "sentinel%d" % index
        self.port = free_port()
        self.password = password
        self.dir = os.path.join(workdir, self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "sentinel.conf")
        pw, rpw = password, redis_password
        text = recipe("sentinel.conf", [
            ("port 26379", "port %d" % self.port),
            ("bind 192.0.2.11 127.0.0.1", "bind 127.0.0.1"),
            ("sentinel monitor offhook 192.0.2.11 6379 2",
             "sentinel monitor %s 127.0.0.1 %d 2" % (MASTER_NAME, master.port)),
            ("sentinel auth-pass offhook CHANGE-ME",
             "sentinel auth-pass %s %s" % (MASTER_NAME, rpw) if rpw else ""),
            ("sentinel down-after-milliseconds offhook 5000",
             "sentinel down-after-milliseconds %s %d" % (MASTER_NAME, DOWN_AFTER_MS)),
            ("sentinel failover-timeout offhook 60000",
             "sentinel failover-timeout %s %d" % (MASTER_NAME, FAILOVER_TIMEOUT_MS)),
            ("# requirepass SENTINEL-CHANGE-ME", "requirepass %s" % pw if pw else ""),
            ("# sentinel sentinel-pass SENTINEL-CHANGE-ME",
             "sentinel sentinel-pass %s" % pw if pw else "")])
        with open(self.conf, "w") as f:
            f.write(text + '\ndir %s\nlogfile ""\ndaemonize no\n' % self.dir)
        self.proc = None

    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        self.proc = Proc(self.name, ["redis-sentinel", self.conf], self.dir)
        wait_until(lambda: self.cli("PING") == "PONG", what=self.name)
        return self

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def cli(self, *args):
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + auth + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def master_port(self):
        """The port of the master this sentinel names now, or None."""
        out = self.cli("SENTINEL", "get-master-addr-by-name", MASTER_NAME).splitlines()
        return int(out[1]) if len(out) == 2 and out[1].isdigit() else None

    def log(self):
        return self.proc.log() if self.proc else ""

    def stop(self):
        if self.proc and self.proc.alive():
            self.proc.stop()


class SentinelRedis:
    """A Redis master and one replica watched by three sentinels (quorum 2)."""

    def __init__(self, workdir, password=None, sentinel_password=None):
        self.dir = workdir
        self.password = password
        self.sentinel_password = sentinel_password
        self.nodes = [RedisNode(workdir, "redis-a", password),
                      RedisNode(workdir, "redis-b", password)]
        self.sentinels = []

    def start(self):
        a, b = self.nodes
        a.start()
        b.start(replicaof=a)
        wait_until(lambda: "master_link_status:up" in b.cli("INFO", "replication"),
                   what="replica in sync")
        self.sentinels = [Sentinel(self.dir, i, a, self.sentinel_password, self.password)
                          for i in range(3)]
        for s in self.sentinels:
            s.start()
        # Each sentinel must know the replica and the two other sentinels before a
        # failover can be agreed and carried out.
        wait_until(lambda: all(self._ready(s) for s in self.sentinels), timeout=30,
                   what="sentinels aware of the replica and of each other")
        return self

    def _ready(self, s):
        info = s.cli("SENTINEL", "master", MASTER_NAME).splitlines()
        fields = dict(zip(info[0::2], info[1::2]))
        return fields.get("num-slaves") == "1" and fields.get("num-other-sentinels") == "2"

    def wait_replica_ok(self, timeout=30):
        """Until every live sentinel sees the replica up and in sync with the master, so
        that it can be promoted."""
        def ok(s):
            out = s.cli("SENTINEL", "replicas", MASTER_NAME).splitlines()
            fields = dict(zip(out[0::2], out[1::2]))
            return (fields.get("flags") == "slave" and
                    fields.get("master-link-status") == "ok")
        wait_until(lambda: all(ok(s) for s in self.sentinels if s.alive()), timeout=timeout,
                   what="the replica up and in sync for every sentinel")

    def config_lines(self):
        """The [redis] keys of an offhook.conf that uses these sentinels."""
        lines = ["sentinels = %s" % ", ".join(s.addr() for s in self.sentinels),
                 "master_name = %s" % MASTER_NAME]
        if self.password:
            lines.append("password = %s" % self.password)
        if self.sentinel_password:
            lines.append("sentinel_password = %s" % self.sentinel_password)
        return lines

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def master(self):
        """The node the (live) sentinels agree is the master now."""
        ports = {s.master_port() for s in self.sentinels if s.alive()}
        if len(ports) != 1 or None in ports:
            raise RuntimeError("sentinels disagree on the master: %r" % ports)
        return self.node(ports.pop())

    def replica(self):
        m = self.master()
        return next(n for n in self.nodes if n is not m)

    def kill_master(self):
        """kill -9 of the master; returns it."""
        m = self.master()
        m.proc.kill9()
        return m

    def wait_failover(self, old, timeout=30):
        """Waits until every live sentinel names another master than old, and that one
        says it is a master; returns it."""
        def done():
            ports = {s.master_port() for s in self.sentinels if s.alive()}
            if len(ports) != 1 or old.port in ports or None in ports:
                return None
            new = self.node(ports.pop())
            return new if new.role() == "master" else None
        return wait_until(done, timeout=timeout, interval=0.05, what="a failover")

    def lag_replica(self):
        """Cuts replication and freezes the replica, so that what the master takes from
        now on is not replicated: what a master killed with writes not yet sent to its
        replica loses (asynchronous replication). resume_replica() thaws it."""
        m, r = self.master(), self.replica()
        r.proc.p.send_signal(signal.SIGSTOP)
        m.cli("CLIENT", "KILL", "TYPE", "replica")
        return r

    def resume_replica(self, r):
        r.proc.p.send_signal(signal.SIGCONT)

    def sentinel_log(self):
        return "\n".join("==== %s ====\n%s" % (s.name, s.log()[-3000:]) for s in self.sentinels)

    def stop(self):
        for s in self.sentinels:
            s.stop()
        for n in self.nodes:
            if n.proc:
                try:
                    n.proc.p.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
            n.stop()


STATES = tuple(VIEW)   # the call states pbxsim plays
EXT0 = 3000


class Calls:
    """The PBX (bench/pbxsim) and what it holds: each user's call state, and every state
    it went through, in order, for checking what a client was shown."""

    def __init__(self, pbx, n, seed=12):
        self.pbx = pbx
        self.n = n
        self.truth = {i: "idle" for i in range(n)}
        self.history = {i: [("idle", 0.0)] for i in range(n)}
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.changes = 0
        self._thread = None
        self._stop = threading.Event()

    def set(self, i, state):
        with self.lock:
            self._pbx_set(EXT0 + i, state)
            self.truth[i] = state
            self.history[i].append((state, time.monotonic()))
            self.changes += 1

    def _pbx_set(self, ext, state, patience_s=30.0):
        """pbx.set, sent again until the PBX answers: a PBX slow to answer (a loaded
        machine, a test that freezes it) still applies the first datagram once it reads
        it, so giving up would leave truth behind the PBX (a phone's final state taken
        for lost). The same set twice is harmless: one more NOTIFY of the same state."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                return self.pbx.set(ext, state)
            except socket.timeout:
                if time.monotonic() > deadline:
                    raise

    def shuffle(self, count=None, users=None):
        """count of users (all by default; taken from users if given) move to another call
        state."""
        users = list(users if users is not None else range(self.n))
        for i in self.rng.sample(users, count or len(users)):
            self.set(i, self.rng.choice([st for st in STATES if st != self.truth[i]]))

    def start_background(self, count=5, every_s=0.2, users=None):
        """Calls keep changing, count users (of users) every every_s seconds, until
        stop_background."""
        self._stop.clear()

        def run():
            try:
                while not self._stop.is_set():
                    self.shuffle(count, users)
                    self._stop.wait(every_s)
            except BaseException as e:   # reported by stop_background, not lost
                self._error = e
        self._error = None
        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def stop_background(self, check=True):
        """Stops the changes; with check, raises what ended the thread early (else truth
        would silently stop following the calls)."""
        self._stop.set()
        if self._thread:
            self._thread.join(40)
            self._thread = None
        err, self._error = getattr(self, "_error", None), None
        if check and err:
            raise RuntimeError("the background calls stopped early: %r" % (err,)) from err

    def state_at(self, i, t):
        """Index in history[i] of the state the PBX held at monotonic time t."""
        k = 0
        for j, (_, at) in enumerate(self.history[i]):
            if at <= t:
                k = j
        return k


def contact(i):
    return "u%02d@phone.localhost" % i


def converge(stack, timeout=30.0, t0=None):
    """Seconds (from t0, default now) until stack's client shows every phone as the PBX
    holds it (stack.wrong() empty); an AssertionError with examples and the logs if not
    within timeout."""
    t0 = t0 or time.monotonic()
    try:
        wait_until(lambda: not stack.wrong(), timeout=timeout, interval=0.05,
                   what="every phone shown as the PBX holds it")
    except TimeoutError:
        w = stack.wrong()
        raise AssertionError("%d phones wrong after %.0fs, e.g. %r\n%s" % (
            len(w), timeout, sorted(w.items())[:5], stack.logs()))
    return time.monotonic() - t0


def shown_out_of_order(w, calls, n, since):
    """Contacts (of the first n) whose presences w received after since are not a
    subsequence of the states calls says their phone went through from then on: a state
    shown again after a newer one (applied twice) or one that never was."""
    bad = {}
    for i in range(n):
        views = []
        for p in w.seen(contact(i)):
            if p.at < since or p.type not in ("available", "unavailable"):
                continue
            if not views or views[-1] != p.view():
                views.append(p.view())
        hist = calls.history[i][calls.state_at(i, since):]
        k = 0
        for v in views:
            while k < len(hist) and VIEW[hist[k][0]] != v:
                k += 1
            if k == len(hist):
                bad[contact(i)] = (views, [h[0] for h in hist])
                break
    return bad


class SentinelStack:
    """Redis with Sentinel, Prosody, pbxsim, sipbridge, the component and one chat user
    (boss) watching every phone contact; offhook configured with sentinels, not a url."""

    def __init__(self, workdir, n_users=40, loglevel="info"):
        self.dir = workdir
        self.n = n_users
        self.rs = SentinelRedis(workdir, password="redis-pw", sentinel_password="sentinel-pw")
        self.prosody = None
        self.pbx = None
        self.sipbridge = self.component = None
        self.daemons = []
        self.w = None
        try:
            self.rs.start()
            self.prosody = Prosody(workdir)
            self.prosody.register("boss", "pw")
            self.prosody.start()
            self.pbx_port = free_port()
            self.pbx = PbxSim(workdir, self.pbx_port).start()
            self.metrics_sb, self.metrics_comp = free_port(), free_port()
            users = [("u%02d@localhost" % i, "sip:%d@127.0.0.1:%d" % (EXT0 + i, self.pbx_port))
                     for i in range(n_users)]
            self.config = use_sentinels(offhook_config(
                os.path.join(workdir, "offhook.conf"), "redis://unused", self.prosody.comp,
                free_port(), self.pbx_port, self.metrics_sb, self.metrics_comp, users,
                secret=self.prosody.secret, loglevel=loglevel), self.rs)
            self.calls = Calls(self.pbx, n_users)
        except BaseException:
            self.stop()
            raise

    def start_daemons(self):
        """Both daemons and the watcher; returns seconds until the client shows every
        phone (all idle at first)."""
        t0 = time.monotonic()
        self.component = self.start("component", self.metrics_comp)
        self.sipbridge = self.start("sipbridge", self.metrics_sb)
        if self.w is None:
            from watcher import Watcher
            self.w = Watcher("boss@localhost", "pw", self.prosody.c2s, reconnect=True)
            for i in range(self.n):
                self.w.subscribe(contact(i))
        return self.converge(t0=t0)

    def start(self, name, port):
        d = Daemon(name, self.config, self.dir, port)
        self.daemons.append(d)
        wait_until(d.ready, timeout=30, what="%s /readyz" % name)
        return d

    def wrong(self):
        cur = self.w.current()
        return {contact(i): (cur.get(contact(i)), VIEW[self.calls.truth[i]])
                for i in range(self.n) if cur.get(contact(i)) != VIEW[self.calls.truth[i]]}

    def wrong_in_redis(self, node=None):
        """Users whose hash in Redis (the master by default) differs from the PBX."""
        node = node or self.rs.master()
        out = {}
        for i in range(self.n):
            st = node.cli("HGET", "offhook:user:u%02d@localhost" % i, "state")
            if st != self.calls.truth[i]:
                out["u%02d" % i] = (st, self.calls.truth[i])
        return out

    def converge(self, timeout=30.0, t0=None):
        """Seconds (from t0, default now) until the client shows every phone as the PBX
        holds it."""
        return converge(self, timeout, t0)

    def shown_out_of_order(self, since):
        """Contacts whose presences received after since are not a subsequence of the
        states their phone went through from then on: a state shown again after a newer
        one (applied twice) or one that never was."""
        return shown_out_of_order(self.w, self.calls, self.n, since)

    def logs(self):
        out = []
        for d in self.daemons[-2:]:
            out.append("==== %s ====\n%s" % (d.name, d.log()[-6000:]))
        out.append(self.rs.sentinel_log())
        return "\n".join(out)

    def stop(self):
        """Stops everything; returns the problems seen (bad exits, sanitizer reports)."""
        problems = []
        if self.w:
            try:
                self.w.close()
            except Exception:
                pass
        for d in self.daemons:
            was_alive = d.alive()
            rc = d.stop()
            if was_alive and rc != 0:
                problems.append("%s exited with %s" % (d.name, rc))
            problems += d.problems()
        if self.pbx and self.pbx.proc:
            self.pbx.proc.stop()
        if self.prosody:
            self.prosody.stop()
        self.rs.stop()
        return problems


def use_sentinels(config_path, rs):
    """Rewrites an offhook.conf written by harness.offhook_config: the url line becomes
    the sentinels' keys."""
    with open(config_path) as f:
        lines = f.read().split("\n")
    out = []
    for line in lines:
        if line.startswith("url = "):
            out += rs.config_lines()
        else:
            out.append(line)
    with open(config_path, "w") as f:
        f.write("\n".join(out))
    os.chmod(config_path, 0o600)
    return config_path


def elapsed(t0):
    return round(time.monotonic() - t0, 2)
