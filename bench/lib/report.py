"""Reporting: one human line and one JSON line per run (the figures docs/performance.md
quotes), the JSON also appended to --log."""

import json


def r3(x, n=3):
    """x rounded to n places; None (nothing measured) stays None."""
    return None if x is None else round(x, n)


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


def emit(res, log):
    print(human(res), flush=True)
    print(json.dumps(res), flush=True)
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(res) + "\n")
