"""offhook end to end: PBX -> sipbridge -> Redis -> component -> Prosody -> watcher.

Starts on loopback, in a temporary directory: redis-server, Prosody with the component
listener, offhook-component, offhook-sipbridge, pbxsim (bench/pbxsim.c) playing the PBX
for N users (each with a live dialog subscription) and xmppsink (bench/sink.c), one XMPP
client watching the phone contacts. The watcher set is written straight into Redis
(offhook:watchers:<contact>) before the component starts; Prosody delivers presence sent
to a bare JID to its available resources without a roster entry.

Once all N subscriptions are active and the sink has seen each contact leave "unknown",
pbxsim drives call-state changes at R events/s; after a warm-up, CPU, RSS and counters
are sampled over a window of --seconds. Latency is joined per user, in order, from
pbxsim's events log (NOTIFY sent) to the sink's log (presence received).

One human line and one JSON line per run:

    python3 bench/run.py --users 1000 --rate 200 --seconds 30
    python3 bench/run.py --users 1000 --find-max            # steps R up to the largest
                                                            # rate with no growing backlog
    python3 bench/run.py --smoke                            # N=50, R=20, 5 s; CI (< 60 s),
                                                            # exit 1 if nothing arrives
    python3 bench/run.py --kamailio --phones 100 --call-rate 10 --seconds 30
                                                            # Kamailio generates the NOTIFYs
    python3 bench/run.py --users 1000 --rate 1000 --perf 15 --perf-out /tmp/prof
                                                            # + perf profiles of both daemons
    python3 bench/run.py --users 10000 --rate 100 --warmup 60 --seconds 600 --soak-sample 30
                                                            # the soak: RSS and fd drift

OFFHOOK_BUILD selects the build directory (default build/); OFFHOOK_KEEP=1 keeps the
temporary directory (logs, events, sink log).
"""

import argparse
import bisect
import json
import os
import re
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import (BUILD, PROSODY_CFG, Daemon, Proc, Prosody, Redis,  # noqa: E402
                     Workdir, binary, free_port, offhook_config, wait_until)

EXT0 = 100000            # user i is u<i>@localhost with AOR sip:<EXT0+i>@pbxsim
DOMAIN = "phone.localhost"
WATCHER = "watcher@localhost"
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# What the sink sees for each state pbxsim drives: (show, status), see docs/architecture.md.
VIEW = {"idle": ("available", ""), "ringing": ("available", "Ringing"),
        "on_call": ("dnd", "On the phone")}
UNKNOWN_STATUS = "Phone status unknown"

# Prosody as the harness starts it, but logging warnings only: at debug it formats every
# stanza into its log file, which would be most of the CPU it is charged for here.
PROSODY_BENCH_CFG = PROSODY_CFG.replace("{loglevel}", "warn")


# ---- /proc --------------------------------------------------------------------------

def proc_stat(pid):
    """(cpu seconds, rss bytes) of pid."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK, int(fields[21]) * PAGE


def proc_cpu(pid):
    return proc_stat(pid)[0]


def tree_stat(root):
    """(cpu seconds, rss bytes) summed over root and all its descendants (Kamailio forks
    its workers; a live child's CPU is not in the parent's stat)."""
    parent, stat = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(d)] = int(fields[1])
        stat[int(d)] = ((int(fields[11]) + int(fields[12])) / CLK, int(fields[21]) * PAGE)
    keep = {root}
    changed = True
    while changed:
        changed = False
        for p, pp in parent.items():
            if pp in keep and p not in keep:
                keep.add(p)
                changed = True
    cpu = sum(stat[p][0] for p in keep if p in stat)
    rss = sum(stat[p][1] for p in keep if p in stat)
    return cpu, rss


def udp_drops(port):
    """Datagrams dropped by the kernel (receive buffer full) on the UDP socket bound to
    127.0.0.1:port, from /proc/net/udp's per-socket drops column."""
    want = "0100007F:%04X" % port
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            p = line.split()
            if p[1] == want:
                return int(p[12])
    return None


def machine_busy():
    """(busy seconds, total seconds, steal seconds) summed over all CPUs, from /proc/stat.
    Steal (time the hypervisor ran other guests while this one had work) is not busy."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle, steal = v[3] + v[4], v[7]
    return (sum(v[:8]) - idle - steal) / CLK, sum(v[:8]) / CLK, steal / CLK


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) // 1024
    return {"cpu": model, "cores": os.cpu_count(), "ram_mib": mem,
            "kernel": os.uname().release}


# ---- binaries -----------------------------------------------------------------------

def nodelay_preload():
    """BUILD/nodelay_preload.so from bench/nodelay_preload.c (--component-nodelay)."""
    src = os.path.join(HERE, "nodelay_preload.c")
    path = os.path.join(BUILD, "nodelay_preload.so")
    if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(src):
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", src, "-o", path,
                        "-ldl"], check=True)
    return path


def sink_binary():
    """BUILD/xmppsink, compiled by hand from bench/sink.c when CMake has not built it (see
    bench/CMakeLists-snippet.txt) or it is older than its source."""
    src = os.path.join(HERE, "sink.c")
    path = os.path.join(BUILD, "xmppsink")
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(src):
        return path
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libstrophe"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                    "-Wno-unused-parameter", src, "-o", path] + flags, check=True)
    return path


# ---- metrics ------------------------------------------------------------------------

def hist_quantiles(m0, m1, name, qs=(0.5, 0.99)):
    """Quantiles of a Prometheus histogram's increase between two scrapes, interpolated
    linearly inside buckets (as histogram_quantile does). None if nothing was observed."""
    buckets = []
    for k, v in m1.items():
        if k.startswith(name + "_bucket{le=\""):
            le = k[len(name) + 12:-2]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets.append((bound, v - m0.get(k, 0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return [None for _ in qs], 0
    total = buckets[-1][1]
    out = []
    for q in qs:
        rank = q * total
        lo, prev = 0.0, 0.0
        for bound, cum in buckets:
            if cum >= rank:
                if bound == float("inf"):
                    out.append(lo)
                else:
                    frac = (rank - prev) / (cum - prev) if cum > prev else 1.0
                    out.append(lo + (bound - lo) * frac)
                break
            lo, prev = bound, cum
    return out, int(total)


def metric(m, name, default=0.0):
    return m.get(name, default)


# ---- logs ---------------------------------------------------------------------------

class SinkTail:
    """Follows the sink's log while the run goes on: lines so far and, per contact,
    whether the last presence said "unknown"."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.rest = b""
        self.lines = 0
        self.unknown = {}

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self
        self.pos += len(data)
        parts = (self.rest + data).split(b"\n")
        self.rest = parts.pop()
        for line in parts:
            f = line.split(b" ", 3)
            if len(f) < 3:
                continue
            self.lines += 1
            bare = f[1].split(b"/", 1)[0]  # the component may send from a resource
            if bare.endswith(b"@" + DOMAIN.encode()):
                self.unknown[bare] = len(f) > 3 and f[3] == UNKNOWN_STATUS.encode()
        return self

    def seen(self):
        return len(self.unknown)

    def known(self):
        return sum(1 for v in self.unknown.values() if not v)


def read_events(path):
    """pbxsim's events log -> {user index: [(t_us, state)]} and all send times, sorted."""
    by_user, times = {}, []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) != 3:
                continue
            t = int(p[0])
            by_user.setdefault(int(p[1]) - EXT0, []).append((t, p[2]))
            times.append(t)
    times.sort()
    return by_user, times


def read_sink(path):
    """The sink's log -> {user index: [(t_us, (show, status))]} for phone contacts."""
    by_user = {}
    suffix = "@" + DOMAIN
    with open(path, errors="replace") as f:
        for line in f:
            p = line.rstrip("\n").split(" ", 3)
            if len(p) < 3 or not p[1].startswith("u"):
                continue
            bare = p[1].split("/", 1)[0]
            if not bare.endswith(suffix):
                continue
            try:
                i = int(bare[1:-len(suffix)])
            except ValueError:
                continue
            by_user.setdefault(i, []).append((int(p[0]), (p[2], p[3] if len(p) > 3 else "")))
    return by_user


def join(events, stanzas):
    """Pairs each user's events with the stanzas they caused, in order. Consecutive events
    of a user always change what the watcher sees (pbxsim cycles idle -> ringing -> on the
    phone), so where the next stanza does not show the event's view, either the event
    caused none (its NOTIFY was lost: the stanza is the next event's) or the stanza is not
    an event's (the ramp's "unknown" and "idle"). Send times are not used to skip:
    pbxsim reads its clock after sendto(), and on a busy machine it can be preempted
    there for longer than the whole chain takes (the stanza then "arrives" a few
    microseconds before the logged send time). Returns the pairs (t_sent, t_received),
    the events without a stanza, the stanzas before the first pair (ramp) and the other
    stanzas that paired with no event."""
    pairs, lost, ramp, extra = [], 0, 0, 0
    for u, evs in events.items():
        sts = stanzas.get(u, [])
        j = k = 0
        paired = False
        while k < len(evs):
            if j >= len(sts):
                lost += len(evs) - k
                break
            view = sts[j][1]
            if view == VIEW[evs[k][1]]:
                pairs.append((evs[k][0], sts[j][0]))
                paired = True
                j += 1
                k += 1
            elif k + 1 < len(evs) and view == VIEW[evs[k + 1][1]]:
                lost += 1
                k += 1
            else:
                if paired:
                    extra += 1
                else:
                    ramp += 1
                j += 1
        extra += len(sts) - j
    return pairs, lost, ramp, extra


def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def backlog(send_times, recv_times, t0, t1, points=11):
    """Events sent but not yet received, at `points` instants over [t0, t1], and its
    growth over the window from a least-squares line through them."""
    xs, ys = [], []
    for k in range(points):
        t = t0 + (t1 - t0) * k / (points - 1)
        xs.append((t - t0) / 1e6)
        ys.append(bisect.bisect_right(send_times, t) - bisect.bisect_right(recv_times, t))
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    return ys, slope * (xs[-1] - xs[0])


# ---- perf ---------------------------------------------------------------------------

def perf_start(pid, out):
    return subprocess.Popen(["perf", "record", "-g", "-F", "4999", "-p", str(pid), "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def nearest_symbols(lib):
    """Sorted (address, name) of lib's exported functions, to place addresses in a
    stripped library (Debian's libsofia-sip-ua has no symbols for its static functions)."""
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True)
    syms = []
    for line in out.stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "tTwW":
            syms.append((int(p[0], 16), p[2].split("@")[0]))
    return sorted(syms)


def place(addr, syms):
    i = bisect.bisect_right(syms, (addr, "~")) - 1
    return "%s+0x%x" % (syms[i][1], addr - syms[i][0]) if i >= 0 else "?"


def perf_stop(p, data, report, limit=0.5):
    """Ends perf record; writes the report: share per library, then per symbol
    (perf report --no-children --sort dso,sym), unresolved addresses in stripped
    libraries placed after the nearest exported symbol."""
    p.send_signal(signal.SIGINT)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()

    def rep(sort, lim):
        r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort,
                            "--stdio", "-g", "none", "--percent-limit", str(lim)],
                           capture_output=True, text=True, timeout=600)
        return [x for x in r.stdout.splitlines()
                if x.strip() and (not x.startswith("#") or "Samples" in x)]
    by_dso = rep("dso", 0.3)
    by_sym = rep("dso,sym", limit)
    libs = {}
    out = []
    for line in by_sym:
        m = re.match(r"\s*[0-9.]+%\s+(\S+)\s+\[\.\]\s+0x([0-9a-f]+)\s*$", line)
        if m:
            path = "/usr/lib/x86_64-linux-gnu/" + m.group(1)
            if os.path.exists(path):
                if path not in libs:
                    libs[path] = nearest_symbols(path)
                line += "   (%s)" % place(int(m.group(2), 16), libs[path])
        out.append(line)
    with open(report, "w") as f:
        f.write("## by library\n" + "\n".join(by_dso) + "\n## by symbol\n" +
                "\n".join(out) + "\n")
    return out


# ---- the stack ----------------------------------------------------------------------

class Stack:
    """Redis, Prosody, the sink, and offhook's config; daemons and load added by the run."""

    def __init__(self, wd, users, watch, extra="", prosody_nodelay=False):
        self.wd = wd
        self.procs = []
        self.redis = Redis(wd.path).start()
        self.procs.append(self.redis)
        cfg = PROSODY_BENCH_CFG
        if prosody_nodelay:
            # TCP_NODELAY on Prosody's sockets (its default keeps Nagle's algorithm on).
            cfg = cfg.replace('VirtualHost "localhost"',
                              'network_settings = {{ nagle = false }}\nVirtualHost "localhost"')
        self.prosody = Prosody(wd.path, config_text=cfg, domain=DOMAIN)
        self.prosody.register("watcher", "pw")
        self.prosody.start()
        self.procs.append(self.prosody)
        self.pbx_port = free_port()
        self.sip_port = free_port()
        self.msb, self.mcomp = free_port(), free_port()
        self.users = users
        self.config = offhook_config(
            os.path.join(wd.path, "offhook.conf"), self.redis.url(), self.prosody.comp,
            self.sip_port, self.pbx_port, self.msb, self.mcomp, users, domain=DOMAIN,
            secret=self.prosody.secret, loglevel="notice", extra=extra)
        self.preload_watchers(watch)
        self.sink_log = os.path.join(wd.path, "sink.log")
        self.sink = Proc("sink", [sink_binary(), "--jid", WATCHER, "--password", "pw",
                                  "--port", str(self.prosody.c2s), "--out", self.sink_log],
                         wd.path)
        self.procs.append(self.sink)
        wait_until(lambda: "sink: online" in self.sink.log() or not self.sink.alive(),
                   timeout=20, what="sink online")
        if not self.sink.alive():
            raise RuntimeError("sink failed: " + self.sink.log())
        self.tail = SinkTail(self.sink_log)
        self.component = self.sipbridge = None

    def preload_watchers(self, contacts):
        """SADD offhook:watchers:<contact> watcher@localhost for each contact, in one pipe
        (what the component would have stored had the watcher subscribed)."""
        def resp(*args):
            return "*%d\r\n" % len(args) + "".join(
                "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)
        data = "".join(resp("SADD", "offhook:watchers:" + c, WATCHER) for c in contacts)
        out = subprocess.run(["redis-cli", "-p", str(self.redis.port), "--pipe"],
                             input=data.encode(), capture_output=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError("redis-cli --pipe: %s" % out.stdout.decode())

    def start_component(self, contacts, nodelay=False):
        env = None
        if nodelay:
            env = dict(os.environ, LD_PRELOAD=nodelay_preload())
        self.component = Daemon("component", self.config, self.wd.path, self.mcomp, env=env)
        self.procs.append(self.component)
        wait_until(self.component.ready, timeout=120, what="component /readyz")
        # Every watched contact's first presence ("unknown": sipbridge is not running).
        wait_until(lambda: self.tail.poll().seen() >= contacts, timeout=60 + contacts / 500,
                   interval=0.2, what="the sink to get every contact's initial presence")

    def start_sipbridge(self, preload=None):
        env = dict(os.environ, LD_PRELOAD=preload) if preload else None
        self.sipbridge = Daemon("sipbridge", self.config, self.wd.path, self.msb, env=env)
        self.procs.append(self.sipbridge)
        wait_until(self.sipbridge.metrics, timeout=120, what="sipbridge metrics")

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def stop(self):
        problems = []
        for p in reversed(self.procs):
            try:
                if isinstance(p, Daemon):
                    problems += p.problems()
                    p.stop(timeout=5)
                elif isinstance(p, Proc):
                    p.stop(timeout=5)
                else:
                    p.stop()
            except Exception as e:  # keep stopping the others
                problems.append("%s: %r" % (getattr(p, "name", p), e))
        return problems


def snapshot(pids, trees=()):
    s = {"t": time.time(), "load": loadavg(), "machine": machine_busy(), "cpu": {}, "rss": {}}
    for name, pid in pids.items():
        s["cpu"][name], s["rss"][name] = (tree_stat(pid) if name in trees else proc_stat(pid))
    return s


def cpu_window(s0, s1):
    """CPU seconds per process over the window, and the CPU (in cores) used by everything
    else on the machine meanwhile (other people's jobs, this script, the kernel)."""
    d = {k: s1["cpu"][k] - s0["cpu"][k] for k in s1["cpu"]}
    wall = s1["t"] - s0["t"]
    busy = s1["machine"][0] - s0["machine"][0]
    others = max(0.0, busy - sum(d.values())) / wall
    return d, others


def steal_cores(s0, s1):
    """Cores' worth of CPU the hypervisor gave other guests over the window: on a VM, a
    run with steal had less machine than its figures suggest (slower, longer tails)."""
    return round((s1["machine"][2] - s0["machine"][2]) / (s1["t"] - s0["t"]), 2)


def r3(x, n=3):
    return None if x is None else round(x, n)


# ---- pbxsim run ---------------------------------------------------------------------

def run_pbxsim(a, rate):
    n = a.users
    watch = a.watch or n
    active = a.active or n
    wd = Workdir("offhook-bench-")
    res = {"mode": "pbxsim", "users": n, "rate": rate, "seconds": a.seconds, "active": active,
           "watched": watch, "subscribe_rate": a.subscribe_rate,
           "prosody_nodelay": a.prosody_nodelay, "component_nodelay": a.component_nodelay,
           "sipbridge_preload": a.sipbridge_preload}
    stack = None
    try:
        users = [("u%d@localhost" % i, "sip:%d@127.0.0.1:PBXPORT" % (EXT0 + i))
                 for i in range(n)]
        contacts = ["u%d@%s" % (i, DOMAIN) for i in range(watch)]
        extra = ("[sip]\nsubscribe_rate = %d\n[component]\npublish = contacts\n"
                 % a.subscribe_rate)
        t_setup = time.time()
        stack = Stack(wd, [], contacts, extra, prosody_nodelay=a.prosody_nodelay)
        users = [(j, aor.replace("PBXPORT", str(stack.pbx_port))) for j, aor in users]
        stack.config = offhook_config(
            stack.config, stack.redis.url(), stack.prosody.comp, stack.sip_port,
            stack.pbx_port, stack.msb, stack.mcomp, users, domain=DOMAIN,
            secret=stack.prosody.secret, loglevel="notice", extra=extra)
        t0 = time.time()
        stack.start_component(watch, nodelay=a.component_nodelay)
        res["initial_presence_s"] = round(time.time() - t0, 2)
        events_log = os.path.join(wd.path, "events.log")
        pbx = stack.add(Proc("pbxsim", [binary("pbxsim"), "--port", str(stack.pbx_port),
                                        "--rate", str(rate), "--active", str(active),
                                        "--start-after", str(n), "--events-log", events_log,
                                        "--stats-every", "1"], wd.path))
        stack.start_sipbridge(preload=a.sipbridge_preload)
        sb, comp = stack.sipbridge, stack.component
        _, rss_sb0 = proc_stat(sb.p.pid)
        _, rss_comp0 = proc_stat(comp.p.pid)
        # The ramp may have begun by the time /metrics answers: per-subscription RSS is
        # taken over the subscriptions made after this first sample.
        active0 = metric(sb.metrics(), 'offhook_subscriptions{state="active"}')
        t0 = time.time()
        # Scraped once a second at most at scale: each /metrics walks every user
        # (collect_users), which at 100k users and 10 scrapes/s was 13% of sipbridge's CPU.
        wait_until(lambda: metric(sb.metrics(), 'offhook_subscriptions{state="active"}') >= n,
                   timeout=n / a.subscribe_rate * 3 + 60, interval=min(1.0, max(0.1, n / 1e5)),
                   what="%d active subscriptions" % n)
        res["ramp_s"] = round(time.time() - t0, 2)
        res["ramp_ideal_s"] = round(n / a.subscribe_rate, 2)
        res["active_at_first_sample"] = int(active0)
        _, rss_sb1 = proc_stat(sb.p.pid)
        # The ramp's "idle" reached every watched contact (or stopped coming: a pbxsim
        # that does not retransmit never repeats a NOTIFY that sipbridge's socket dropped,
        # and that contact stays "unknown" until its first event); then the warm-up.
        progress = [-1, time.time()]

        def settled():
            k = stack.tail.poll().known()
            if k != progress[0]:
                progress[0], progress[1] = k, time.time()
            return k >= watch or time.time() - progress[1] > 5
        wait_until(settled, timeout=120 + watch / 200, interval=0.2,
                   what="every contact out of 'unknown'")
        res["unknown_after_ramp"] = watch - stack.tail.known()
        res["udp_drops_ramp"] = {"sipbridge": udp_drops(stack.sip_port),
                                 "pbxsim": udp_drops(stack.pbx_port)}
        time.sleep(a.warmup)
        pids = {"sipbridge": sb.p.pid, "component": comp.p.pid,
                "redis": stack.redis.proc.p.pid, "prosody": stack.prosody.proc.p.pid,
                "pbxsim": pbx.p.pid, "sink": stack.sink.p.pid}
        m_sb0, m_comp0 = sb.metrics(), comp.metrics()
        s0 = snapshot(pids)
        if a.soak_sample > 0:
            res["soak"] = soak_window(a.seconds, a.soak_sample,
                                      {"sipbridge": sb.p.pid, "component": comp.p.pid})
        else:
            time.sleep(a.seconds)  # the measurement window itself
        s1 = snapshot(pids)
        m_sb1, m_comp1 = sb.metrics(), comp.metrics()
        res["udp_drops_end"] = {"sipbridge": udp_drops(stack.sip_port),
                                "pbxsim": udp_drops(stack.pbx_port)}
        if a.perf:
            res["profiles"] = profile(a, wd, {"sipbridge": sb.p.pid, "component": comp.p.pid},
                                      "n%d-r%d" % (n, rate))
        pbx.stop()
        # Drain: the sink's log stops growing.
        last = [-1, time.time()]

        def drained():
            c = stack.tail.poll().lines
            if c != last[0]:
                last[0], last[1] = c, time.time()
            return time.time() - last[1] > 1.5
        try:
            wait_until(drained, timeout=60, interval=0.2, what="the sink to drain")
            res["drained"] = True
        except TimeoutError:
            res["drained"] = False
        s2 = snapshot({"sipbridge": sb.p.pid, "component": comp.p.pid})
        # Before the daemons stop: the component's goodbye ("unavailable" to every
        # watcher) is not part of the run.
        stack.sink.stop()
        if a.idle:
            res["idle"] = idle_phase(a.idle, sb.p.pid)
        res["redis_used_memory_mib"] = round(int(
            [x for x in stack.redis.cli("INFO", "memory").splitlines()
             if x.startswith("used_memory:")][0].split(":")[1]) / 2**20, 1)
        problems = stack.stop()
        stack = None

        # ---- analysis --------------------------------------------------------------
        ev, send_times = read_events(events_log)
        st = read_sink(os.path.join(wd.path, "sink.log"))
        watched_ev = {u: e for u, e in ev.items() if u < watch}
        res["events_unwatched"] = sum(len(e) for u, e in ev.items() if u >= watch)
        pairs, lost, ramp_st, extra_st = join(watched_ev, st)
        w0, w1 = s0["t"] * 1e6, s1["t"] * 1e6
        send_w = sorted(t for u, e in watched_ev.items() for t, _ in e)
        recv_sorted = sorted(r for _, r in pairs)
        sent_in = sum(1 for t in send_w if w0 <= t <= w1)
        recv_in = sum(1 for r in recv_sorted if w0 <= r <= w1)
        wall = s1["t"] - s0["t"]
        lats = sorted((r - t) / 1000.0 for t, r in pairs if w0 <= t <= w1)
        q, nobs = hist_quantiles(m_comp0, m_comp1, "offhook_event_latency_seconds")
        lag, growth = backlog(send_w, recv_sorted, w0, w1)
        quarter = [sorted((r - t) / 1000.0 for t, r in pairs
                          if w0 + k * (w1 - w0) / 4 <= t < w0 + (k + 1) * (w1 - w0) / 4)
                   for k in range(4)]
        dcpu, others = cpu_window(s0, s1)
        per = max(1, recv_in)
        notifies = (metric(m_sb1, 'offhook_notifies_total{package="dialog"}') -
                    metric(m_sb0, 'offhook_notifies_total{package="dialog"}'))
        updates = (metric(m_comp1, "offhook_presence_updates_total") -
                   metric(m_comp0, "offhook_presence_updates_total"))
        m = re.search(r"pbxsim: (\d+) subscriptions in ([0-9.]+) s", pbx.log())
        res["pbxsim_first_to_last_s"] = float(m.group(2)) if m else None
        offhook = dcpu["sipbridge"] + dcpu["component"]
        res.update({
            "offhook_us_per_event": round(offhook / per * 1e6, 1),
            "prosody_us_per_event": round(dcpu["prosody"] / per * 1e6, 1),
            "offhook_over_prosody": r3(offhook / dcpu["prosody"]) if dcpu["prosody"] else None,
            "sent_per_s": round(sent_in / wall, 1),
            "e2e_per_s": round(recv_in / wall, 1),
            "notifies_per_s": round(notifies / wall, 1),
            "presence_updates_per_s": round(updates / wall, 1),
            "events_total": len(send_w), "paired": len(pairs), "lost": lost,
            "ramp_stanzas": ramp_st, "extra_stanzas": extra_st,
            "backlog_start": lag[0], "backlog_end": lag[-1], "backlog_growth": round(growth, 1),
            "latency_ms": {"p50": r3(pct(lats, 0.5)), "p99": r3(pct(lats, 0.99)),
                           "max": r3(lats[-1] if lats else None), "n": len(lats)},
            "latency_p50_by_quarter_ms": [r3(pct(x, 0.5)) for x in quarter],
            "offhook_latency_ms": {"p50": r3(q[0] and q[0] * 1000),
                                   "p99": r3(q[1] and q[1] * 1000), "n": nobs},
            "cpu_s_per_1000_events": {k: round(v / per * 1000, 4) for k, v in dcpu.items()},
            "cpu_pct": {k: round(v / wall * 100, 1) for k, v in dcpu.items()},
            "other_load_cores": round(others, 2),
            "steal_cores": steal_cores(s0, s1),
            "loadavg": [s0["load"], s1["load"]],
            "rss_mib": {"sipbridge_start": round(rss_sb0 / 2**20, 1),
                        "sipbridge_subscribed": round(rss_sb1 / 2**20, 1),
                        "sipbridge_end": round(s1["rss"]["sipbridge"] / 2**20, 1),
                        "sipbridge_drained": round(s2["rss"]["sipbridge"] / 2**20, 1),
                        "component_start": round(rss_comp0 / 2**20, 1),
                        "component_end": round(s1["rss"]["component"] / 2**20, 1),
                        "prosody": round(s1["rss"]["prosody"] / 2**20, 1),
                        "redis": round(s1["rss"]["redis"] / 2**20, 1)},
            "rss_per_user_bytes": {
                "sipbridge_subscriptions": int((rss_sb1 - rss_sb0) / max(1, n - active0)),
                "sipbridge_total": int(s1["rss"]["sipbridge"] / n),
                "component_total": int(s1["rss"]["component"] / n)},
            "problems": problems,
        })
        ok_rate = recv_in >= 0.98 * sent_in and sent_in > 0
        res["growing_backlog"] = bool(growth > max(25.0, 0.1 * rate) or not ok_rate or lost > 0.01 * len(send_w))
        res["setup_s"] = round(time.time() - t_setup, 1)
    finally:
        if stack:
            stack.stop()
        wd.cleanup()
    return res


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def soak_window(seconds, every, pids):
    """The measurement window, sampling RSS and open fds of each daemon every `every`
    seconds; returns the series and the drift from first to last sample."""
    t0 = time.time()
    series = {"t_s": []}
    for name in pids:
        series[name + "_rss_mib"] = []
        series[name + "_fds"] = []
    while True:
        now = time.time()
        series["t_s"].append(round(now - t0))
        for name, pid in pids.items():
            series[name + "_rss_mib"].append(round(proc_stat(pid)[1] / 2**20, 2))
            series[name + "_fds"].append(fd_count(pid))
        if now - t0 >= seconds:
            break
        time.sleep(min(every, max(0.0, seconds - (time.time() - t0))))
    drift = {}
    for name in pids:
        rss, fds = series[name + "_rss_mib"], series[name + "_fds"]
        drift[name] = {"rss_start_mib": rss[0], "rss_end_mib": rss[-1],
                       "rss_drift_pct": round((rss[-1] - rss[0]) * 100.0 / rss[0], 2),
                       "rss_min_mib": min(rss), "rss_max_mib": max(rss),
                       "fds_start": fds[0], "fds_end": fds[-1]}
    return {"every_s": every, "series": series, "drift": drift}


def idle_phase(seconds, pid):
    """sipbridge with its subscriptions and no events: CPU per second (Sofia's timers) and
    RSS over time (NOTIFY server transactions linger 32 s, Timer J)."""
    c0, r0 = proc_stat(pid)
    t0 = time.time()
    rss = [(0, round(r0 / 2**20, 1))]
    while time.time() - t0 < seconds:
        time.sleep(min(5, seconds - (time.time() - t0)))
        rss.append((round(time.time() - t0), round(proc_stat(pid)[1] / 2**20, 1)))
    c1, _ = proc_stat(pid)
    return {"seconds": round(time.time() - t0, 1),
            "sipbridge_cpu_pct": round((c1 - c0) / (time.time() - t0) * 100, 2),
            "sipbridge_rss_mib": rss}


def profile(a, wd, pids, tag):
    """perf record -g on each daemon for a.perf seconds (after the window, so perf's own
    CPU does not count in it); the reports go to a.perf_out (default: the workdir)."""
    outdir = a.perf_out or wd.path
    os.makedirs(outdir, exist_ok=True)
    running = {n: perf_start(pid, os.path.join(outdir, "%s-%s.data" % (tag, n)))
               for n, pid in pids.items()}
    time.sleep(a.perf)
    out = {}
    for n, p in running.items():
        rep = os.path.join(outdir, "%s-%s.txt" % (tag, n))
        lines = perf_stop(p, os.path.join(outdir, "%s-%s.data" % (tag, n)), rep)
        out[n] = {"report": rep, "top": [" ".join(x.split()) for x in lines[:12]]}
    return out


def human(r):
    if r.get("mode") == "kamailio":
        k = r["cpu_s_per_1000_notifies"]
        return ("kamailio phones=%d calls=%.1f/s (%s ok, %s failed): %.1f NOTIFY/s consumed by "
                "sipbridge; CPU s per "
                "1000 NOTIFYs: kamailio %.3f (marginal over calls without watchers %s) "
                "sipbridge %.3f component %.3f; sink %.1f/s; offhook latency p50 %s p99 %s ms; "
                "load %.2f other %.2f steal %.2f cores" % (
                    r["phones"], r["call_rate"], r["calls_ok"], r["calls_failed"],
                    r["notifies_per_s"], k["kamailio"],
                    r.get("kamailio_marginal_cpu_s_per_1000_notifies"), k["sipbridge"],
                    k["component"], r["e2e_per_s"], r["offhook_latency_ms"]["p50"],
                    r["offhook_latency_ms"]["p99"], r["loadavg"][1], r["other_load_cores"],
                    r.get("steal_cores", 0)))
    c = r["cpu_s_per_1000_events"]
    ratio = (c["sipbridge"] + c["component"]) / c["prosody"] if c["prosody"] else float("nan")
    lat, ol = r["latency_ms"], r["offhook_latency_ms"]
    return ("N=%d R=%g: e2e %.1f/s (sent %.1f/s, backlog %s %+.0f), latency p50 %s p99 %s max %s "
            "ms (offhook p50 %s p99 %s ms); CPU s/1000 ev: sipbridge %.3f component %.3f "
            "redis %.3f prosody %.3f (offhook/prosody %.2f); RSS sipbridge %.1f MiB "
            "(%d B/sub) component %.1f MiB; ramp %.1f s; load %.2f, other %.2f, steal %.2f "
            "cores" % (
                r["users"], r["rate"], r["e2e_per_s"], r["sent_per_s"],
                "GROWING" if r["growing_backlog"] else "flat", r["backlog_growth"],
                lat["p50"], lat["p99"], lat["max"], ol["p50"], ol["p99"], c["sipbridge"],
                c["component"], c["redis"], c["prosody"], ratio,
                r["rss_mib"]["sipbridge_end"], r["rss_per_user_bytes"]["sipbridge_subscriptions"],
                r["rss_mib"]["component_end"], r["ramp_s"], r["loadavg"][1],
                r["other_load_cores"], r.get("steal_cores", 0))) + soak_line(r)


def soak_line(r):
    if "soak" not in r:
        return ""
    return "".join("; soak %s RSS %.1f -> %.1f MiB (%+.2f%%), fds %d -> %d" % (
        name, d["rss_start_mib"], d["rss_end_mib"], d["rss_drift_pct"], d["fds_start"],
        d["fds_end"]) for name, d in r["soak"]["drift"].items())


# ---- Kamailio run -------------------------------------------------------------------

def run_kamailio(a):
    """Kamailio 5.6 (deploy/kamailio/kamailio.cfg) as the NOTIFY source: sipp phones register
    with it and call each other through it; pua_dialoginfo publishes each call's
    dialog-info, presence NOTIFYs sipbridge. Two windows of the same call load: before
    sipbridge subscribes (Kamailio proxying and publishing with no watcher), then with
    every phone watched, so the NOTIFY generation cost is also read as a difference."""
    from kamailio import Kamailio, callee_scenario, caller_scenario, register_scenario

    phones = a.phones
    wd = Workdir("offhook-bench-kam-")
    res = {"mode": "kamailio", "phones": phones, "call_rate": a.call_rate,
           "seconds": a.seconds, "ring_ms": a.ring_ms, "talk_ms": a.talk_ms}
    stack = None
    try:
        contacts = ["u%d@%s" % (i, DOMAIN) for i in range(phones)]
        stack = Stack(wd, [], contacts, "", prosody_nodelay=a.prosody_nodelay)
        kam = Kamailio(wd.path, debug=1, log_local=False).start()
        stack.add(kam)
        users = [("u%d@localhost" % i, kam.aor("p%d" % i)) for i in range(phones)]
        stack.pbx_port = kam.port
        stack.config = offhook_config(
            stack.config, stack.redis.url(), stack.prosody.comp, stack.sip_port, kam.port,
            stack.msb, stack.mcomp, users, domain=DOMAIN, secret=stack.prosody.secret,
            loglevel="notice", extra="[sip]\nsubscribe_rate = %d\n[component]\n"
                                     "publish = contacts\n" % a.subscribe_rate)
        stack.start_component(phones)
        domain = "%s:%d" % (kam.host, kam.port)

        def sipp(name, scenario_xml, extra, remote=None):
            path = os.path.join(wd.path, name + ".xml")
            with open(path, "w") as f:
                f.write(scenario_xml)
            port = free_port()
            argv = ["sipp", "-sf", path, "-p", str(port), "-i", "127.0.0.1", "-t", "u1",
                    "-nostdin", "-trace_err", "-error_file",
                    os.path.join(wd.path, name + ".errors")] + extra
            return Proc(name, argv + ([remote] if remote else []), wd.path), port

        # One sipp answers for every phone: each registers its Contact on that port.
        uas, uas_port = sipp("sipp-phones", callee_scenario("phone", a.ring_ms), [])
        stack.add(uas)
        with open(os.path.join(wd.path, "phones.csv"), "w") as f:
            f.write("SEQUENTIAL\n" + "".join("p%d;\n" % i for i in range(phones)))
        reg, _ = sipp("sipp-register",
                      register_scenario("[field0]", uas_port, 3600, 1, domain),
                      ["-inf", os.path.join(wd.path, "phones.csv"), "-m", str(phones),
                       "-r", "200", "-timeout", "30s", "-timeout_error"], domain)
        wait_until(lambda: not reg.alive(), timeout=40, what="registrations")
        if reg.p.returncode != 0:
            raise RuntimeError("registrations failed: %s" % reg.log()[-2000:])
        # Calls p0->p1, p2->p3, ...: every phone is in a call now and then, as caller or
        # callee; sipp sends -r calls per second for as long as the run needs.
        with open(os.path.join(wd.path, "calls.csv"), "w") as f:
            f.write("SEQUENTIAL\n" + "".join("p%d;p%d;\n" % (i, (i + 1) % phones)
                                             for i in range(0, phones, 2)))
        caller, _ = sipp("sipp-calls", caller_scenario("[field0]", "[field1]", domain,
                                                     a.talk_ms),
                         ["-inf", os.path.join(wd.path, "calls.csv"), "-r",
                          str(a.call_rate), "-l", str(phones), "-timeout", "3600s"], domain)
        stack.add(caller)
        pids = {"kamailio": kam.proc.p.pid, "redis": stack.redis.proc.p.pid,
                "prosody": stack.prosody.proc.p.pid, "component": stack.component.p.pid}
        time.sleep(a.warmup + (a.ring_ms + a.talk_ms) / 1000.0)
        # Window A: calls, nobody subscribed.
        sA0 = snapshot(pids, trees=("kamailio",))
        time.sleep(a.seconds)
        sA1 = snapshot(pids, trees=("kamailio",))
        stack.start_sipbridge()
        sb = stack.sipbridge
        t0 = time.time()
        wait_until(lambda: metric(sb.metrics(), 'offhook_subscriptions{state="active"}')
                   >= phones, timeout=phones / a.subscribe_rate * 3 + 60, interval=0.1,
                   what="%d active subscriptions" % phones)
        res["ramp_s"] = round(time.time() - t0, 2)
        time.sleep(a.warmup)
        pids["sipbridge"] = sb.p.pid
        m_sb0, m_comp0 = sb.metrics(), stack.component.metrics()
        lines0 = stack.tail.poll().lines
        sB0 = snapshot(pids, trees=("kamailio",))
        time.sleep(a.seconds)
        sB1 = snapshot(pids, trees=("kamailio",))
        m_sb1, m_comp1 = sb.metrics(), stack.component.metrics()
        lines1 = stack.tail.poll().lines
        caller.stop(signal.SIGUSR1)
        wait_until(lambda: not caller.alive(), timeout=15, what="sipp to print its totals")
        with open(os.path.join(wd.path, "sipp-calls.out"), errors="replace") as f:
            screen = f.read()
        for key, name in (("Successful call", "calls_ok"), ("Failed call", "calls_failed")):
            hits = [x for x in screen.splitlines() if x.strip().startswith(key)]
            res[name] = int(hits[-1].split("|")[-1]) if hits else None
        errs = os.path.join(wd.path, "sipp-calls.errors")
        res["sipp_errors_bytes"] = os.path.getsize(errs) if os.path.exists(errs) else 0
        res["kamailio_problems"] = kam.problems()[:5]
        res["problems"] = stack.stop()
        stack = None

        wall = sB1["t"] - sB0["t"]
        notifies = (metric(m_sb1, 'offhook_notifies_total{package="dialog"}') -
                    metric(m_sb0, 'offhook_notifies_total{package="dialog"}'))
        dA, _ = cpu_window(sA0, sA1)
        dB, others = cpu_window(sB0, sB1)
        per = max(1, notifies)
        q, nobs = hist_quantiles(m_comp0, m_comp1, "offhook_event_latency_seconds")
        res.update({
            "notifies_per_s": round(notifies / wall, 1),
            "e2e_per_s": round((lines1 - lines0) / wall, 1),
            "cpu_s_per_1000_notifies": {k: round(v / per * 1000, 4) for k, v in dB.items()},
            "cpu_pct_with_watchers": {k: round(v / wall * 100, 1) for k, v in dB.items()},
            "cpu_pct_without_watchers": {k: round(v / (sA1["t"] - sA0["t"]) * 100, 1)
                                         for k, v in dA.items()},
            "kamailio_marginal_cpu_s_per_1000_notifies": round(
                (dB["kamailio"] / wall - dA["kamailio"] / (sA1["t"] - sA0["t"])) * wall
                / per * 1000, 4),
            "offhook_latency_ms": {"p50": r3(q[0] and q[0] * 1000),
                                   "p99": r3(q[1] and q[1] * 1000), "n": nobs},
            "other_load_cores": round(others, 2),
            "steal_cores": steal_cores(sB0, sB1),
            "loadavg": [sB0["load"], sB1["load"]],
            "kamailio_rss_mib": round(sB1["rss"]["kamailio"] / 2**20, 1),
        })
    finally:
        if stack:
            stack.stop()
        wd.cleanup()
    return res


# ---- main ---------------------------------------------------------------------------

def emit(res, log):
    print(human(res), flush=True)
    print(json.dumps(res), flush=True)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(res) + "\n")


def on_term(sig, frame):
    raise SystemExit(128 + sig)  # unwinds through the finally blocks: everything stops


def main():
    # Started in the background by a shell, SIGINT arrives ignored; SIGTERM would kill
    # this script without stopping what it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1000, help="N: users, each subscribed")
    ap.add_argument("--rate", type=float, default=200, help="R: call-state changes per second")
    ap.add_argument("--seconds", type=float, default=30, help="measurement window")
    ap.add_argument("--warmup", type=float, default=3, help="driving before the window")
    ap.add_argument("--active", type=int, default=0,
                    help="K: users that get events (pbxsim --active; 0 = all N)")
    ap.add_argument("--watch", type=int, default=0,
                    help="contacts the sink watches, u0..u<W-1> (0 = all N)")
    ap.add_argument("--subscribe-rate", type=int, default=2000, help="[sip] subscribe_rate")
    ap.add_argument("--idle", type=float, default=0,
                    help="after the events: seconds of sipbridge idle CPU/RSS sampling")
    ap.add_argument("--perf", type=float, default=0,
                    help="after the window: perf record -g both daemons this long")
    ap.add_argument("--perf-out", help="directory for perf data and reports")
    ap.add_argument("--find-max", action="store_true",
                    help="step R up (x --step) until the backlog grows; report the largest")
    ap.add_argument("--step", type=float, default=1.5)
    ap.add_argument("--max-rate", type=float, default=50000)
    ap.add_argument("--smoke", action="store_true", help="N=50, R=20, 5 s; exit 1 unless "
                                                         "events arrive end to end")
    ap.add_argument("--kamailio", action="store_true", help="Kamailio as the NOTIFY source")
    ap.add_argument("--phones", type=int, default=100)
    ap.add_argument("--call-rate", type=float, default=10, help="calls per second (sipp -r)")
    ap.add_argument("--ring-ms", type=int, default=500)
    ap.add_argument("--talk-ms", type=int, default=2000)
    ap.add_argument("--prosody-nodelay", action="store_true",
                    help="Prosody with network_settings = { nagle = false }")
    ap.add_argument("--component-nodelay", action="store_true",
                    help="TCP_NODELAY on the component's sockets (LD_PRELOAD shim, "
                         "bench/nodelay_preload.c): what setting it in xmpplink.c would give")
    ap.add_argument("--sipbridge-preload", metavar="LIB",
                    help="LD_PRELOAD for sipbridge, e.g. /usr/lib/x86_64-linux-gnu/"
                         "libjemalloc.so.2 to compare allocators")
    ap.add_argument("--soak-sample", type=float, default=0, metavar="S",
                    help="sample RSS and open fds of both daemons every S seconds through "
                         "the window and report their drift (the soak: --seconds 600)")
    ap.add_argument("--log", help="append each JSON result to this file")
    a = ap.parse_args()
    if a.smoke:
        a.users, a.rate, a.seconds, a.warmup = 50, 20, 5, 1
    if a.watch > a.users:
        ap.error("--watch must not exceed --users")
    mach = machine()
    print("# %s, %d cores, %d MiB, kernel %s; load average %.2f" % (
        mach["cpu"], mach["cores"], mach["ram_mib"], mach["kernel"], loadavg()), flush=True)

    if a.kamailio:
        emit(run_kamailio(a), a.log)
        return 0
    if a.find_max:
        best, rate, results = None, a.rate, []
        while rate <= a.max_rate:
            r = run_pbxsim(a, rate)
            emit(r, a.log)
            results.append(r)
            if r["growing_backlog"]:
                break
            best = r
            rate = round(rate * a.step)
        summary = {"mode": "find-max", "users": a.users, "max_rate_no_backlog":
                   best["rate"] if best else None,
                   "e2e_per_s_at_max": best["e2e_per_s"] if best else None,
                   "first_failing_rate": results[-1]["rate"]
                   if results and results[-1]["growing_backlog"] else None}
        print("find-max N=%d: largest rate with no growing backlog %s/s (e2e %s/s); "
              "first growing at %s/s" % (a.users, summary["max_rate_no_backlog"],
                                         summary["e2e_per_s_at_max"],
                                         summary["first_failing_rate"]), flush=True)
        print(json.dumps(summary), flush=True)
        return 0
    r = run_pbxsim(a, a.rate)
    emit(r, a.log)
    if r["paired"] == 0 or r["e2e_per_s"] <= 0:
        print("FAIL: no events arrived end to end", file=sys.stderr)
        return 1
    if r["problems"]:
        print("FAIL: %s" % "; ".join(r["problems"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
