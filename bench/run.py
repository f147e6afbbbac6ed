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
    python3 bench/run.py --users 1000 --find-max --rate 2000
                                                            # saturation: Prosody alone,
                                                            # then offhook alone (R steps
                                                            # up), and their ratio
    python3 bench/run.py --targets --rate 1000 --seconds 30 # issue 14's targets: every run
                                                            # they need, then a table
    python3 bench/run.py --users 1000 --find-max-e2e        # the whole chain, R stepped up
                                                            # to the largest rate with no
                                                            # growing backlog
    python3 bench/run.py --smoke                            # N=50, R=20, 5 s; CI (< 60 s),
                                                            # exit 1 if nothing arrives
    python3 bench/run.py --kamailio --phones 100 --call-rate 10 --seconds 30
                                                            # Kamailio generates the NOTIFYs
    python3 bench/run.py --users 1000 --rate 1000 --perf 15 --perf-out /tmp/prof
                                                            # + perf profiles of both daemons
    python3 bench/run.py --users 10000 --rate 100 --warmup 60 --seconds 600 --soak-sample 30
                                                            # the soak: RSS and fd drift
    python3 bench/run.py --users 10000 --rate 200 --sipbridges 3
                                                            # three sipbridges sharing the users

OFFHOOK_BUILD selects the build directory (default build/); OFFHOOK_KEEP=1 keeps the
temporary directory (logs, events, sink log).

This file is the command line; the run itself is in bench/lib/ (its __init__.py lists
the parts), on the integration tests' harness (tests/integration/harness.py).
"""

import argparse
import json
import signal
import sys

from lib import kamailio_run, pbxsim_run, saturate, targets
from lib.report import emit
from lib.sample import loadavg, machine


def on_term(sig, frame):
    raise SystemExit(128 + sig)  # unwinds through the finally blocks: everything stops


def saturation(a):
    """Issue 14, target 6: offhook passes >= 2x the event rate Prosody routes."""
    pro = saturate.prosody_max(a)
    print("prosody-max: %s stanzas/s routed (Prosody %s%% of a core, %s us per stanza)" % (
        pro["stanzas_per_s"], pro["prosody_cpu_pct"], pro["prosody_us_per_stanza"]),
        flush=True)
    off = saturate.offhook_max(a)
    ratio = (off["max_events_per_s"] / pro["stanzas_per_s"]
             if off["max_events_per_s"] and pro["stanzas_per_s"] else None)
    summary = {"mode": "find-max", "users": a.users, "prosody": pro, "offhook": off,
               "offhook_over_prosody_max": round(ratio, 2) if ratio else None}
    print("find-max N=%d: offhook %s events/s, Prosody %s stanzas/s: ratio %s (target >= 2)"
          % (a.users, off["max_events_per_s"], pro["stanzas_per_s"],
             summary["offhook_over_prosody_max"]), flush=True)
    return summary


def emit_json(res, log):
    print(json.dumps(res), flush=True)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(res) + "\n")


def main():
    # Started in the background by a shell, SIGINT arrives ignored; SIGTERM would kill
    # this script without stopping what it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, on_term)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1000, help="N: users, each subscribed")
    ap.add_argument("--rate", type=float, default=None,
                    help="R: call-state changes per second (default 200; 1,000 with "
                         "--targets)")
    ap.add_argument("--seconds", type=float, default=30, help="measurement window")
    ap.add_argument("--warmup", type=float, default=3, help="driving before the window")
    ap.add_argument("--active", type=int, default=0,
                    help="K: users that get events (pbxsim --active; 0 = all N)")
    ap.add_argument("--watch", type=int, default=0,
                    help="contacts the sink watches, u0..u<W-1> (0 = all N)")
    ap.add_argument("--subscribe-rate", type=int, default=2000, help="[sip] subscribe_rate")
    ap.add_argument("--sipbridges", type=int, default=1, metavar="K",
                    help="K sipbridges sharing the users (issue 12), each with its own SIP "
                         "and metrics ports and instance name; CPU and RSS are their sums "
                         "(per_sipbridge: each one's), --perf/--idle/--soak-sample sample "
                         "the first only")
    ap.add_argument("--idle", type=float, default=0,
                    help="after the events: seconds of sipbridge idle CPU/RSS sampling")
    ap.add_argument("--perf", type=float, default=0,
                    help="after the window: perf record -g both daemons this long")
    ap.add_argument("--perf-out", help="directory for perf data and reports")
    ap.add_argument("--find-max", action="store_true",
                    help="saturation (issue 14 target 6): Prosody's largest stanza rate "
                         "alone, offhook's largest event rate alone (to a fake XMPP "
                         "server; R from --rate, x --step), and their ratio")
    ap.add_argument("--find-max-e2e", action="store_true",
                    help="the whole chain: step R up (x --step) until the backlog grows; "
                         "report the largest")
    ap.add_argument("--targets", action="store_true",
                    help="issue 14's targets in one command: per-user runs at --sizes "
                         "(idle phase at the largest), resource-list runs at --list-sizes, "
                         "--find-max at --sat-users; a table of each target, met or not")
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--list-sizes", default="10000,100000")
    ap.add_argument("--sat-users", type=int, default=1000)
    ap.add_argument("--sat-rate", type=float, default=2000,
                    help="--targets: the saturation steps' first rate")
    ap.add_argument("--sat-seconds", type=float, default=10,
                    help="--find-max: each measurement window")
    ap.add_argument("--sat-warmup", type=float, default=3,
                    help="--find-max: driving before each window")
    ap.add_argument("--step", type=float, default=1.5)
    ap.add_argument("--max-rate", type=float, default=50000)
    ap.add_argument("--smoke", action="store_true", help="N=50, R=20, 5 s; exit 1 unless "
                                                         "events arrive end to end")
    ap.add_argument("--list", action="store_true",
                    help="resource-list mode: one RFC 4662 list subscription (over TCP) for "
                         "every user's dialog state instead of one subscription per user")
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
    ap.add_argument("--realtime", type=int, default=0, metavar="PRIO",
                    help="SCHED_FIFO priority for the chain: [sipbridge] and [component] "
                         "realtime_priority, and redis-server (issue 14 target 4); 0 = off")
    ap.add_argument("--sipbridge-preload", metavar="LIB",
                    help="LD_PRELOAD for sipbridge, e.g. /usr/lib/x86_64-linux-gnu/"
                         "libjemalloc.so.2 to compare allocators")
    ap.add_argument("--soak-sample", type=float, default=0, metavar="S",
                    help="sample RSS and open fds of both daemons every S seconds through "
                         "the window and report their drift (the soak: --seconds 600)")
    ap.add_argument("--log", help="append each JSON result to this file")
    a = ap.parse_args()
    if a.rate is None:
        a.rate = 1000 if a.targets else 200
    if a.smoke:
        a.users, a.rate, a.seconds, a.warmup = 50, 20, 5, 1
    if a.watch > a.users:
        ap.error("--watch must not exceed --users")
    if a.sipbridges < 1 or (a.sipbridges > 1 and (a.kamailio or a.list)):
        # With --list one sipbridge holds the list and every user: nothing is shared.
        ap.error("--sipbridges takes 1 or more, and runs with pbxsim without --list only")
    mach = machine()
    print("# %s, %d cores, %d MiB, kernel %s; load average %.2f" % (
        mach["cpu"], mach["cores"], mach["ram_mib"], mach["kernel"], loadavg()), flush=True)

    if a.kamailio:
        emit(kamailio_run.run(a), a.log)
        return 0
    if a.targets:
        if a.idle == 0:
            a.idle = 30
        return 0 if targets.run(a, saturation) else 1
    if a.find_max:
        emit_json(saturation(a), a.log)
        return 0
    if a.find_max_e2e:
        best, rate, results = None, a.rate, []
        while rate <= a.max_rate:
            r = pbxsim_run.run(a, rate)
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
    r = pbxsim_run.run(a, a.rate)
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
