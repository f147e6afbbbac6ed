"""The --kamailio run: Kamailio and sipp phones in place of pbxsim (see run())."""

import os
import signal
import time

from harness import Proc, Workdir, free_port, wait_until

from . import DOMAIN
from . import stack as bench_stack
from .latency import hist_quantiles
from .report import r3
from .sample import cpu_window, metric, snapshot, steal_cores


def run(a):
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
        stack, sink = bench_stack.start(wd, contacts, "", prosody_nodelay=a.prosody_nodelay)
        kam = stack.add(Kamailio(wd.path, debug=1, log_local=False)).start()
        stack.pbx_port = kam.port
        stack.write_config(
            users=[("u%d@localhost" % i, kam.aor("p%d" % i)) for i in range(phones)],
            extra="[sip]\nsubscribe_rate = %d\n[component]\npublish = contacts\n"
                  % a.subscribe_rate)
        bench_stack.start_component(stack, sink, phones)
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
        stack.add(reg)
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
                "prosody": stack.xmpp.proc.p.pid, "component": stack.component.p.pid}
        time.sleep(a.warmup + (a.ring_ms + a.talk_ms) / 1000.0)
        # Window A: calls, nobody subscribed.
        sA0 = snapshot(pids, trees=("kamailio",))
        time.sleep(a.seconds)
        sA1 = snapshot(pids, trees=("kamailio",))
        sb = bench_stack.start_sipbridge(stack)
        t0 = time.time()
        wait_until(lambda: metric(sb.metrics(), 'offhook_subscriptions{state="active"}')
                   >= phones, timeout=phones / a.subscribe_rate * 3 + 60, interval=0.1,
                   what="%d active subscriptions" % phones)
        res["ramp_s"] = round(time.time() - t0, 2)
        time.sleep(a.warmup)
        pids["sipbridge"] = sb.p.pid
        m_sb0, m_comp0 = sb.metrics(), stack.component.metrics()
        lines0 = sink.tail.poll().lines
        sB0 = snapshot(pids, trees=("kamailio",))
        time.sleep(a.seconds)
        sB1 = snapshot(pids, trees=("kamailio",))
        m_sb1, m_comp1 = sb.metrics(), stack.component.metrics()
        lines1 = sink.tail.poll().lines
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
