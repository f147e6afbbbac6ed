"""sipbridge at scale: N users, each with a live dialog subscription to pbxsim (a C PBX
simulator), a subscribe ramp, then call-state changes at a steady rate.

Prints one JSON line per run with: time to establish N subscriptions, sipbridge RSS before
subscribing and after, RSS per subscription, CPU seconds during the ramp, CPU seconds per
1,000 NOTIFYs during the event phase, events applied (Redis stream length).

    python3 bench/scale_sipbridge.py --users 1000 --rate 1000 --events 500 --seconds 20
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import (BUILD, Daemon, Proc, Redis, Workdir, free_port,  # noqa: E402
                     wait_until)


def proc_stat(pid):
    """(cpu seconds, rss bytes) of pid, from /proc."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


def write_config(path, n, redis_url, sip_port, pbx_port, metrics_port, rate):
    with open(path, "w") as f:
        f.write("[log]\nlevel = notice\n[sip]\nlisten = udp:127.0.0.1:%d\n"
                "pbx = sip:127.0.0.1:%d\nexpires = 3600\nsubscribe_rate = %d\n"
                "[xmpp]\nsecret = bench\n[redis]\nurl = %s\n"
                "[sipbridge]\nmetrics = 127.0.0.1:%d\n[component]\nmetrics = \n[users]\n"
                % (sip_port, pbx_port, rate, redis_url, metrics_port))
        for i in range(n):
            f.write("u%d@localhost = sip:%d@127.0.0.1:%d\n" % (i, 100000 + i, pbx_port))
    os.chmod(path, 0o600)


def run(users, rate, events, seconds, active):
    wd = Workdir("offhook-bench-")
    out = {"users": users, "subscribe_rate": rate, "event_rate": events}
    try:
        redis = Redis(wd.path).start()
        pbx_port, sip_port, mport = free_port(), free_port(), free_port()
        cfg = os.path.join(wd.path, "offhook.conf")
        write_config(cfg, users, redis.url(), sip_port, pbx_port, mport, rate)
        pbx = Proc("pbxsim", [os.path.join(BUILD, "pbxsim"), "--port", str(pbx_port),
                              "--rate", str(events), "--active", str(active or users),
                              "--start-after", str(users), "--stats-every", "5"], wd.path)
        sb = Daemon("sipbridge", cfg, wd.path, mport)
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
        sb.stop()
        pbx.stop()
        redis.stop()
    finally:
        wd.cleanup()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=500, help="[sip] subscribe_rate")
    ap.add_argument("--events", type=float, default=200, help="call-state changes per second")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--active", type=int, default=0, help="users that get events (0 = all)")
    a = ap.parse_args()
    print(json.dumps(run(a.users, a.rate, a.events, a.seconds, a.active)), flush=True)


if __name__ == "__main__":
    main()
