"""sipbridge at scale: N users, each with a live dialog subscription to pbxsim (a C PBX
simulator), a subscribe ramp, then call-state changes at a steady rate.

Prints one JSON line per run with: time to establish N subscriptions, sipbridge RSS before
subscribing and after, RSS per subscription, CPU seconds during the ramp, CPU seconds per
1,000 NOTIFYs during the event phase, events applied (Redis stream length). With
--console K, then K back-to-back `offhookctl subscriptions` listings of all N during the
same event load: seconds and bytes per listing, sipbridge's CPU seconds per listing
(beyond the event load's), and the NOTIFYs applied per second meanwhile (the listing is
written turn by turn from the daemon's loop: they should not drop).

    python3 bench/scale_sipbridge.py --users 1000 --rate 1000 --events 500 --seconds 20
    python3 bench/scale_sipbridge.py --users 10000 --rate 2000 --events 200 --console 5
"""

import argparse
import json
import os
import subprocess
import time

from lib import EXT0  # first: it puts tests/integration (the harness) on the path
from lib.sample import proc_stat
from harness import (Daemon, Proc, Redis, Workdir, binary, free_port, offhook_config,
                     wait_until)


def listings(cfg, k):
    """k `offhookctl subscriptions` in a row: (seconds, bytes of the last, lines of it)."""
    t0 = time.monotonic()
    for _ in range(k):
        r = subprocess.run([binary("offhookctl"), "-c", cfg, "subscriptions"],
                           capture_output=True, check=True)
    return time.monotonic() - t0, len(r.stdout), r.stdout.count(b"\n")


def run(users, rate, events, seconds, active, console=0):
    wd = Workdir("offhook-bench-")
    out = {"users": users, "subscribe_rate": rate, "event_rate": events}
    procs = []   # stopped in reverse order, whatever happens
    try:
        redis = Redis(wd.path).start()
        procs.append(redis)
        pbx_port, sip_port, mport = free_port(), free_port(), free_port()
        # No component runs: its [xmpp] and [component] values are never used.
        cfg = offhook_config(
            os.path.join(wd.path, "offhook.conf"), redis.url(), free_port(), sip_port, pbx_port,
            mport, free_port(),
            [("u%d@localhost" % i, "sip:%d@127.0.0.1:%d" % (EXT0 + i, pbx_port))
             for i in range(users)],
            secret="bench", loglevel="notice", extra="[sip]\nsubscribe_rate = %d\n" % rate)
        pbx = Proc("pbxsim", [binary("pbxsim"), "--port", str(pbx_port),
                              "--rate", str(events), "--active", str(active or users),
                              "--start-after", str(users), "--stats-every", "5"], wd.path)
        procs.append(pbx)
        sb = Daemon("sipbridge", cfg, wd.path, mport)
        procs.append(sb)
        wait_until(sb.metrics, what="sipbridge metrics", timeout=120)
        cpu0, rss0 = proc_stat(sb.p.pid)
        t0 = time.monotonic()
        wait_until(lambda: sb.metrics().get('offhook_subscriptions{state="active"}', 0) >= users,
                   timeout=users / rate * 3 + 60, interval=0.2, what="all subscriptions")
        out["ramp_s"] = round(time.monotonic() - t0, 2)
        cpu1, rss1 = proc_stat(sb.p.pid)
        out["rss_start_mib"] = round(rss0 / 2**20, 1)
        out["rss_subscribed_mib"] = round(rss1 / 2**20, 1)
        out["rss_per_sub_bytes"] = int((rss1 - rss0) / users)
        out["ramp_cpu_s"] = round(cpu1 - cpu0, 2)
        # Event phase: pbxsim starts driving once all N are subscribed.
        n0 = sb.metrics().get('offhook_notifies_total{package="dialog"}', 0)
        time.sleep(seconds)  # the measurement window itself, not a wait for a condition
        cpu2, rss2 = proc_stat(sb.p.pid)
        n1 = sb.metrics().get('offhook_notifies_total{package="dialog"}', 0)
        out["notifies"] = int(n1 - n0)
        out["notifies_per_s"] = round((n1 - n0) / seconds, 1)
        out["cpu_s_per_1000_notifies"] = round((cpu2 - cpu1) / max(1, n1 - n0) * 1000, 4)
        out["rss_after_events_mib"] = round(rss2 / 2**20, 1)
        out["stream_len"] = int(redis.cli("XLEN", "offhook:events") or 0)
        if console:
            base_cpu_per_s = (cpu2 - cpu1) / seconds
            n2 = sb.metrics().get('offhook_notifies_total{package="dialog"}', 0)
            took, size, lines = listings(cfg, console)
            cpu3, _ = proc_stat(sb.p.pid)
            n3 = sb.metrics().get('offhook_notifies_total{package="dialog"}', 0)
            out["console_listings"] = console
            out["console_s_per_listing"] = round(took / console, 3)
            out["console_bytes_per_listing"] = size
            out["console_lines_per_listing"] = lines
            out["console_cpu_s_per_listing"] = round(
                max(0.0, (cpu3 - cpu2) - base_cpu_per_s * took) / console, 3)
            out["notifies_per_s_while_listing"] = round((n3 - n2) / took, 1)
    finally:
        for p in reversed(procs):
            p.stop()
        wd.cleanup()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=500, help="[sip] subscribe_rate")
    ap.add_argument("--events", type=float, default=200, help="call-state changes per second")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--active", type=int, default=0, help="users that get events (0 = all)")
    ap.add_argument("--console", type=int, default=0,
                    help="then this many offhookctl subscriptions listings")
    a = ap.parse_args()
    print(json.dumps(run(a.users, a.rate, a.events, a.seconds, a.active, a.console)),
          flush=True)


if __name__ == "__main__":
    main()
