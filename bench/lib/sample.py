"""Measurement: what the processes under test and the machine used, read from /proc
(CPU seconds, RSS, open fds, UDP drops, machine busy and steal time), and one daemon's
metric; snapshots at the edges of a window and the CPU each process spent inside it;
the soak's and the idle phase's series."""

import os
import time

CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


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


def metric(m, name, default=0.0):
    """A sample from a daemon's /metrics (harness.Daemon.metrics()), default if absent."""
    return m.get(name, default)


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
