"""Issue 14's targets in one command (bench/run.py --targets): the runs they need, one
after the other, and a table of each target with the figure measured and whether it is
met. Every figure is from the runs of this command; a ratio to Prosody is always of two
processes measured in the same run (the machine is shared, absolute figures drift).

Runs: per-user mode at each of --sizes (default 1,000, 10,000, 100,000) at R = --rate
(default 1,000/s) for --seconds, the largest size with an idle phase (--idle, default
30 s); resource-list mode at each size of --list-sizes (default 10,000 and 100,000); and
the saturation comparison (--find-max) at --sat-users users."""

import copy
import json

from . import pbxsim_run
from .report import emit


def _run(a, users, rate, listmode=False, idle=0):
    b = copy.copy(a)
    b.users, b.list, b.idle = users, listmode, idle
    b.watch = 0
    b.active = 0
    r = pbxsim_run.run(b, rate)
    emit(r, a.log)
    return r


def _offhook_us(r):
    c = r["cpu_s_per_1000_events"]
    return (c["sipbridge"] + c["component"]) * 1000


def run(a, saturation):
    sizes = [int(x) for x in a.sizes.split(",") if x]
    list_sizes = [int(x) for x in a.list_sizes.split(",") if x]
    rate = a.rate
    runs = {}
    for n in sizes:
        runs[n] = _run(a, n, rate, idle=a.idle if n == max(sizes) else 0)
    lists = {n: _run(a, n, rate, listmode=True) for n in list_sizes}
    b = copy.copy(a)
    b.users = a.sat_users
    b.rate = a.sat_rate
    sat = saturation(b)
    if a.log:  # its steps (CPU of each process per step) and Prosody's side, for the record
        with open(a.log, "a") as f:
            f.write(json.dumps(sat) + "\n")

    big, small = runs[max(sizes)], runs[min(sizes)]
    rows = []

    def row(target, figure, limit, ok, note=""):
        rows.append({"target": target, "measured": figure, "limit": limit,
                     "met": ok, "note": note})

    for n in sizes:
        r = runs[n]
        row("1. offhook/Prosody CPU per event, N=%d" % n, r["offhook_over_prosody"], "<= 0.5",
            r["offhook_over_prosody"] is not None and r["offhook_over_prosody"] <= 0.5,
            "sipbridge %.1f + component %.1f us vs Prosody %.1f us per event" % (
                r["cpu_s_per_1000_events"]["sipbridge"] * 1000,
                r["cpu_s_per_1000_events"]["component"] * 1000,
                r["cpu_s_per_1000_events"]["prosody"] * 1000))
    for n in list_sizes:
        r = lists[n]
        row("1. (resource list) offhook/Prosody, N=%d" % n, r["offhook_over_prosody"],
            "<= 0.5", r["offhook_over_prosody"] is not None and r["offhook_over_prosody"] <= 0.5,
            "sipbridge %.1f us per event" % (r["cpu_s_per_1000_events"]["sipbridge"] * 1000))
    raw = _offhook_us(big) / _offhook_us(small)
    norm = big["offhook_over_prosody"] / small["offhook_over_prosody"]
    row("2. cost per event N=%d / N=%d" % (max(sizes), min(sizes)), round(raw, 2), "<= 1.2",
        raw <= 1.2, "%.1f vs %.1f us (two runs); normalised by each run's Prosody: %.2f" % (
            _offhook_us(big), _offhook_us(small), norm))
    mem = (big["rss_mib"]["sipbridge_end"] + big["rss_mib"]["component_end"]) * 2**20 / \
        big["users"]
    row("3. offhook memory per user, N=%d" % big["users"], int(mem), "<= 2048 B",
        mem <= 2048, "sipbridge %d + component %d B (RSS during the events / users)" % (
            big["rss_mib"]["sipbridge_end"] * 2**20 / big["users"],
            big["rss_mib"]["component_end"] * 2**20 / big["users"]))
    p99 = big["offhook_latency_ms"]["p99"]
    row("4. offhook p99, N=%d, R=%g" % (big["users"], rate), p99, "<= 2 ms",
        p99 is not None and p99 <= 2.0, "p50 %s ms" % big["offhook_latency_ms"]["p50"])
    idle = big.get("idle", {}).get("sipbridge_cpu_pct")
    row("5. sipbridge idle CPU, N=%d" % big["users"], idle, "< 1% of a core",
        idle is not None and idle < 1.0, "over %s s after the events" % big.get(
            "idle", {}).get("seconds"))
    ratio = sat.get("offhook_over_prosody_max")
    row("6. saturation offhook / Prosody (N=%d)" % a.sat_users, ratio, ">= 2",
        ratio is not None and ratio >= 2, "offhook %s events/s, Prosody %s stanzas/s" % (
            sat["offhook"]["max_events_per_s"], sat["prosody"]["stanzas_per_s"]))
    drops = (big["udp_drops_ramp"]["sipbridge"] or 0) + (big["udp_drops_ramp"]["pbxsim"] or 0)
    pace = big["ramp_s"] / big["ramp_ideal_s"] if big["ramp_ideal_s"] else None
    row("7. N=%d ramp at subscribe_rate %d: UDP drops" % (big["users"], a.subscribe_rate),
        drops, "0", drops == 0 and pace is not None and pace <= 1.1,
        "ramp %.1f s against %.1f s ideal (x%.2f)" % (big["ramp_s"], big["ramp_ideal_s"],
                                                        pace or 0))
    print("\nIssue 14 targets (one command, this machine, %s):" % a.sizes)
    for r in rows:
        print("  %-52s %-10s %-15s %-4s %s" % (r["target"], r["measured"], r["limit"],
                                               "MET" if r["met"] else "no", r["note"]))
    out = {"mode": "targets", "rows": rows}
    print(json.dumps(out), flush=True)
    if a.log:
        with open(a.log, "a") as f:
            f.write(json.dumps(out) + "\n")
    return all(r["met"] for r in rows)
