"""A run with pbxsim (bench/pbxsim.c) as the PBX, the default: N users each subscribed,
the sink watching W of them; once all are subscribed and shown, pbxsim drives R
call-state changes/s; CPU, RSS and counters are sampled over the window; pbxsim then
stops, the sink drains, everything stops, and the logs of both ends are analysed."""

import os
import re
import time

from harness import Proc, Workdir, binary, wait_until

from . import DOMAIN, EXT0
from . import stack as bench_stack
from .latency import backlog, hist_quantiles, join, pct, read_events
from .perf import profile
from .report import r3
from .sample import (cpu_window, idle_phase, metric, proc_stat, snapshot, soak_window,
                     steal_cores, udp_drops)
from .sink import read_sink


def run(a, rate):
    """One run at rate R with run.py's options a; returns the result (report.human's
    input, the JSON line)."""
    n = a.users
    watch = a.watch or n
    active = a.active or n
    wd = Workdir("offhook-bench-")
    listmode = getattr(a, "list", False)
    res = {"mode": "pbxsim-list" if listmode else "pbxsim", "users": n, "rate": rate,
           "seconds": a.seconds, "active": active,
           "watched": watch, "subscribe_rate": a.subscribe_rate,
           "prosody_nodelay": a.prosody_nodelay, "component_nodelay": a.component_nodelay,
           "sipbridge_preload": a.sipbridge_preload, "sipbridges": a.sipbridges,
           "realtime": a.realtime}
    stack = None
    try:
        contacts = ["u%d@%s" % (i, DOMAIN) for i in range(watch)]
        extra = ("[sip]\nsubscribe_rate = %d\n[component]\npublish = contacts\n"
                 % a.subscribe_rate)
        if a.realtime:  # only then: a build from before the key still runs without it
            extra += ("[component]\nrealtime_priority = %d\n[sipbridge]\n"
                      "realtime_priority = %d\n" % (a.realtime, a.realtime))
        t_setup = time.time()
        stack, sink = bench_stack.start(wd, contacts, extra, prosody_nodelay=a.prosody_nodelay)
        if a.realtime:
            # Redis is the chain's middle hop: its wakeups count as much as offhook's.
            os.sched_setscheduler(stack.redis.proc.p.pid,
                                  os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                                  os.sched_param(a.realtime))
        stack.write_config(users=[("u%d@localhost" % i, str(EXT0 + i)) for i in range(n)])
        if listmode:
            list_config(stack, n)
        t0 = time.time()
        comp = bench_stack.start_component(stack, sink, watch, nodelay=a.component_nodelay)
        res["initial_presence_s"] = round(time.time() - t0, 2)
        events_log = os.path.join(wd.path, "events.log")
        pbx_args = [binary("pbxsim"), "--port", str(stack.pbx_port), "--rate", str(rate),
                    "--active", str(active), "--start-after", str(n),
                    "--events-log", events_log, "--stats-every", "1"]
        if listmode:
            pbx_args += ["--tcp", "--list", "phones", "--list-size", str(n),
                         "--list-ext0", str(EXT0)]
        pbx = stack.add(Proc("pbxsim", pbx_args, wd.path))
        sb = bench_stack.start_sipbridges(stack, a.sipbridges, preload=a.sipbridge_preload)
        rss_sb0 = sum(proc_stat(pid)[1] for pid in sb.pids().values())
        _, rss_comp0 = proc_stat(comp.p.pid)
        # The ramp may have begun by the time /metrics answers: per-subscription RSS is
        # taken over the subscriptions made after this first sample.
        active0 = metric(sb.metrics(), 'offhook_subscriptions{state="active"}')
        t0 = time.time()
        # Scraped once a second at most at scale: each /metrics walks every user
        # (collect_users), which at 100k users and 10 scrapes/s was 13% of sipbridge's CPU.
        # One subscription per user (the list: one in all); with several sipbridges, each
        # user owned by exactly one, none still being handed over.
        nsubs = 1 if listmode else n
        wait_until(lambda: subscribed(sb.metrics(), nsubs, n, a.sipbridges),
                   timeout=n / a.subscribe_rate * 3 + 60, interval=min(1.0, max(0.1, n / 1e5)),
                   what="%d active subscriptions" % nsubs)
        res["ramp_s"] = round(time.time() - t0, 2)
        res["ramp_ideal_s"] = round(n / a.subscribe_rate, 2)
        res["active_at_first_sample"] = int(active0)
        rss_sb1 = sum(proc_stat(pid)[1] for pid in sb.pids().values())
        res["owned_per_sipbridge"] = sb.shares()
        # The ramp's "idle" reached every watched contact (or stopped coming: a pbxsim
        # that does not retransmit never repeats a NOTIFY that sipbridge's socket dropped,
        # and that contact stays "unknown" until its first event); then the warm-up.
        wait_until(until_still(lambda: sink.tail.poll().known(), 5, lambda k: k >= watch),
                   timeout=120 + watch / 200, interval=0.2,
                   what="every contact out of 'unknown'")
        res["unknown_after_ramp"] = watch - sink.tail.known()
        res["udp_drops_ramp"] = {"sipbridge": drops(sb.ports),
                                 "pbxsim": udp_drops(stack.pbx_port)}
        time.sleep(a.warmup)
        pids = {**sb.pids(), "component": comp.p.pid,
                "redis": stack.redis.proc.p.pid, "prosody": stack.xmpp.proc.p.pid,
                "pbxsim": pbx.p.pid, "sink": sink.proc.p.pid}
        m0 = {"sipbridge": sb.metrics(), "component": comp.metrics()}
        s0 = fold(snapshot(pids))
        if a.soak_sample > 0:
            res["soak"] = soak_window(a.seconds, a.soak_sample,
                                      {"sipbridge": sb.p.pid, "component": comp.p.pid})
        else:
            time.sleep(a.seconds)  # the measurement window itself
        s1 = fold(snapshot(pids))
        m1 = {"sipbridge": sb.metrics(), "component": comp.metrics()}
        # RSS keeps what glibc took at the peak (the ramp, a handover's duplicates): the
        # heap in use says what each sipbridge holds now.
        res["heap_inuse_mib_per_sipbridge"] = [
            round(d.metrics().get("offhook_heap_inuse_bytes", 0) / 2**20, 1)
            for d in sb.members]
        res["heap_inuse_mib_component"] = round(
            m1["component"].get("offhook_heap_inuse_bytes", 0) / 2**20, 2)
        res["udp_drops_end"] = {"sipbridge": drops(sb.ports),
                                "pbxsim": udp_drops(stack.pbx_port)}
        if a.perf:
            res["profiles"] = profile(a, wd, {"sipbridge": sb.p.pid, "component": comp.p.pid},
                                      "n%d-r%d" % (n, rate))
        pbx.stop()
        # Drain: the sink's log stops growing.
        try:
            wait_until(until_still(lambda: sink.tail.poll().lines, 1.5), timeout=60,
                       interval=0.2, what="the sink to drain")
            res["drained"] = True
        except TimeoutError:
            res["drained"] = False
        s2 = fold(snapshot({**sb.pids(), "component": comp.p.pid}))
        # Before the daemons stop: the component's goodbye ("unavailable" to every
        # watcher) is not part of the run.
        sink.stop()
        if a.idle:
            res["idle"] = idle_phase(a.idle, sb.p.pid)
        res["redis_used_memory_mib"] = round(int(
            [x for x in stack.redis.cli("INFO", "memory").splitlines()
             if x.startswith("used_memory:")][0].split(":")[1]) / 2**20, 1)
        # Up to 30 s each: at 100k users sipbridge's shutdown (un-SUBSCRIBEs unanswered
        # once pbxsim is gone, then 100k handles freed) outlasts Proc.stop's 10 s.
        problems = sb.stop_all()
        problems += stack.stop()
        stack = None
        analyse(res, rate, n, watch, events_log, sink.log_path, pbx.log(), (s0, s1, s2),
                (m0, m1), (rss_sb0, rss_sb1, rss_comp0, active0), problems)
        res["setup_s"] = round(time.time() - t_setup, 1)
    finally:
        if stack:
            stack.stop()
        wd.cleanup()
    return res


def list_config(stack, n):
    """Resource-list mode: one SUBSCRIBE for every user's dialog state, over TCP (a full
    state of n resources is ~400 bytes each: 40 MB at 100,000), with [sip] max_body large
    enough that 64 times it holds that."""
    conf = open(stack.config).read()
    listen = "listen = udp:127.0.0.1:%d" % stack.sip_port
    pbx = "pbx = sip:127.0.0.1:%d" % stack.pbx_port
    assert listen in conf and pbx in conf
    max_body = max(65536, (n * 512) // 64 + 65536)
    conf = conf.replace(listen, "%s, tcp:127.0.0.1:%d" % (listen, stack.sip_port))
    conf = conf.replace(pbx, "%s;transport=tcp\nresource_list = sip:phones@127.0.0.1:%d\n"
                             "max_body = %d" % (pbx, stack.pbx_port, max_body))
    with open(stack.config, "w") as f:
        f.write(conf)


def subscribed(m, nsubs, n, k):
    """nsubs subscriptions active, and (k > 1 sipbridges) each of the n users owned by
    exactly one."""
    if metric(m, 'offhook_subscriptions{state="active"}') < nsubs:
        return False
    return k == 1 or (metric(m, 'offhook_cluster_users{state="owned"}') == n and
                      metric(m, 'offhook_cluster_users{state="moving"}') == 0)


def fold(s):
    """A snapshot with the sipbridges after the first folded into "sipbridge" (CPU and RSS
    summed), each one's kept under "members"."""
    s["members"] = {k: (s["cpu"][k], s["rss"][k]) for k in s["cpu"] if k.startswith("sipbridge")}
    for k in list(s["cpu"]):
        if k.startswith("sipbridge_"):
            s["cpu"]["sipbridge"] += s["cpu"].pop(k)
            s["rss"]["sipbridge"] += s["rss"].pop(k)
    return s


def drops(ports):
    """UDP receive-queue drops summed over the sipbridges' SIP ports (None if unknown)."""
    vals = [udp_drops(p) for p in ports]
    return None if any(v is None for v in vals) else sum(vals)


def until_still(count, seconds, enough=lambda c: False):
    """A condition for wait_until: true once enough(count()) or once count() has not
    changed for `seconds`."""
    last = [None, time.time()]

    def cond():
        c = count()
        if c != last[0]:
            last[0], last[1] = c, time.time()
        return enough(c) or time.time() - last[1] > seconds
    return cond


def analyse(res, rate, n, watch, events_log, sink_log, pbx_log, snaps, metrics, ramp,
            problems):
    """The figures of a run, into res: events paired with the stanzas they caused over
    the window (s0..s1 of snaps), latency and backlog, CPU per event, RSS, whether the
    backlog grew."""
    s0, s1, s2 = snaps                  # window start, end, after the drain
    m0, m1 = metrics                    # both daemons' /metrics at start and end
    m_sb0, m_comp0 = m0["sipbridge"], m0["component"]
    m_sb1, m_comp1 = m1["sipbridge"], m1["component"]
    rss_sb0, rss_sb1, rss_comp0, active0 = ramp   # before and after the subscribe ramp
    ev, send_times = read_events(events_log)
    st = read_sink(sink_log)
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
    m = re.search(r"pbxsim: (\d+) subscriptions in ([0-9.]+) s", pbx_log)
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
    if len(s1["members"]) > 1:
        res["per_sipbridge"] = {
            k: {"cpu_s_per_1000_events": round((s1["members"][k][0] - s0["members"][k][0]) /
                                               per * 1000, 4),
                "rss_mib_end": round(s1["members"][k][1] / 2**20, 1)}
            for k in sorted(s1["members"])}
    ok_rate = recv_in >= 0.98 * sent_in and sent_in > 0
    res["growing_backlog"] = bool(growth > max(25.0, 0.1 * rate) or not ok_rate
                                  or lost > 0.01 * len(send_w))
