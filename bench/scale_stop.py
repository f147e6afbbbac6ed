"""A clean stop of offhook-component at scale: N users (10,000 or 100,000), every phone
contact watched by the sink (bench/sink.c, one cheap XMPP client; the watcher set written
into Redis as an earlier run would have left it), Prosody granting XEP-0356 with an
account for every user, and C of them on the phone (pbxsim). Once the sink shows every
phone, SIGTERM: how long the stop takes, what the component's log says it delivered
(presence, then the emptied activities, each confirmed by the server), and how long the
last "unavailable" took to reach the sink. One JSON line per run.

    python3 bench/scale_stop.py --users 10000 --calls 500
    python3 bench/scale_stop.py --users 100000 --calls 5000 --goodbye-timeout 120

The start is measured on the way: the component's log lines at notice and the time from
its "ready" to the sink's first and last presence.
"""

import argparse
import datetime
import json
import os
import pwd
import re
import time

from lib import DOMAIN, EXT0, WATCHER  # first: it puts tests/integration on the path
from lib.sink import Sink
from lib.stack import preload_watchers
from harness import PROSODY_CFG, PbxSim, Stack, Workdir, wait_until


def log_wall(log, pattern):
    m = re.search(r"^(\S+) offhook-\S+ level=\S+ .*" + pattern, log, re.M)
    return (datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
            .replace(tzinfo=datetime.timezone.utc).timestamp()) if m else None


def sink_lines(path):
    """[(t_s, contact, status)] of the sink's log, phone contacts only."""
    out = []
    with open(path, errors="replace") as f:
        for line in f:
            p = line.rstrip("\n").split(" ", 3)
            if len(p) >= 3 and p[1].split("/")[0].endswith("@" + DOMAIN):
                out.append((int(p[0]) / 1e6, p[1].split("/")[0], p[2]))
    return out


def run(a):
    n = a.users
    wd = Workdir("offhook-bench-")
    out = {"users": n, "calls": a.calls}
    stack = None
    try:
        stack = Stack(wd.path, users=(), loglevel="notice", chat_users=("watcher",),
                      other_domain_users=(), privilege=True,
                      extra_config=("[sip]\nsubscribe_rate = %d\n[component]\n"
                                    "goodbye_timeout = %d\n" % (a.subscribe_rate,
                                                                a.goodbye_timeout)),
                      prosody_kwargs={"config_text": PROSODY_CFG.replace("{loglevel}", "warn"),
                                      "domain": DOMAIN, "vhost_extra": ""})
        accounts = os.path.join(stack.prosody.dir, "data", "localhost", "accounts")
        os.makedirs(accounts, exist_ok=True)
        pw = pwd.getpwnam("prosody")
        for i in range(n):
            path = os.path.join(accounts, "u%d.dat" % i)
            with open(path, "w") as f:
                f.write('return {\n\t["password"] = "pw";\n};\n')
            os.chown(path, pw.pw_uid, pw.pw_gid)
        preload_watchers(stack.redis, ["u%d@%s" % (i, DOMAIN) for i in range(n)])
        sink = stack.add(Sink(wd.path, stack.xmpp.c2s))
        stack.write_config(users=[("u%d@localhost" % i, str(EXT0 + i)) for i in range(n)])
        pbx = stack.add(PbxSim(wd.path, stack.pbx_port)).start()
        sb = stack.start_sipbridge()
        wait_until(lambda: sb.metrics().get('offhook_subscriptions{state="active"}', 0) >= n,
                   timeout=n / a.subscribe_rate * 3 + 120, interval=1, what="all subscribed")
        for i in range(a.calls):
            pbx.set(EXT0 + i, "on_call")
        comp = stack.start_component(timeout=300)
        wait_until(lambda: sink.tail.poll().known() >= n, timeout=120 + n / 500, interval=1,
                   what="the sink showing every phone")
        log = comp.log()
        ready = log_wall(log, "event=ready ")
        lines = sink_lines(sink.log_path)
        out["start_log_lines"] = log.count("\n")
        out["first_presence_after_ready_s"] = round(lines[0][0] - ready, 2)
        out["all_presence_after_ready_s"] = round(lines[-1][0] - ready, 2)
        if a.wait_pep:
            def pep_idle():
                m = comp.metrics()
                return sum(m.get('offhook_privileged_requests_total{result="%s"}' % r, 0)
                           for r in ("ok", "error", "timeout", "lost")) >= \
                    m.get('offhook_privileged_requests_total{result="sent"}', 1)
            t0 = time.monotonic()
            wait_until(pep_idle, timeout=3600, interval=2, what="the start's PEP round")
            out["pep_round_s"] = round(time.monotonic() - t0, 1)
        seen = len(lines)
        t0 = time.monotonic()
        stopped_at = time.time()
        rc = comp.stop(timeout=a.goodbye_timeout + 30)
        out["stop_s"] = round(time.monotonic() - t0, 2)
        out["exit"] = rc
        log = comp.log()
        m = re.search(r"event=goodbye_delivered presence_ms=(\d+) total_ms=(\d+)", log)
        out["goodbye_delivered"] = bool(m)
        if m:
            out["presence_ms"], out["drain_ms"] = int(m.group(1)), int(m.group(2))
        m = re.search(r"event=goodbye_incomplete .*", log)
        if m:
            out["goodbye_incomplete"] = m.group(0)
        wait_until(lambda: len(sink_lines(sink.log_path)) >= seen + n, timeout=300,
                   interval=1, what="every goodbye at the sink")
        bye = sink_lines(sink.log_path)[seen:]
        out["goodbyes_at_sink"] = sum(1 for t, c, st in bye if st == "unavailable")
        out["last_goodbye_at_sink_s"] = round(max(t for t, c, st in bye) - stopped_at, 2)
    finally:
        if stack:
            stack.stop()
        wd.cleanup()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--calls", type=int, default=500, help="users on the phone at the stop")
    ap.add_argument("--subscribe-rate", type=int, default=2000)
    ap.add_argument("--goodbye-timeout", type=int, default=30)
    ap.add_argument("--wait-pep", action="store_true",
                    help="let the start's PEP round finish before the stop")
    a = ap.parse_args()
    print(json.dumps(run(a)), flush=True)


if __name__ == "__main__":
    main()
