"""Latency and throughput from the two ends' logs: pbxsim's events (NOTIFY sent) paired,
per user and in order, with the stanzas the sink received; percentiles, the backlog over
the window, and the quantiles of offhook's own latency histogram."""

import bisect

from . import EXT0
from .sink import VIEW


def read_events(path):
    """pbxsim's events log -> {user index: [(t_us, state)]} and all send times, sorted."""
    by_user, times = {}, []
    with open(path) as f:
        for line in f:
            p = line.split()
            # A pbxsim that had to be killed (it did not stop within the harness's 10 s,
            # as in list mode at 100k users, mid-way through a full state) leaves its
            # stdio buffer cut anywhere: a last line with no newline is not an event.
            if len(p) != 3 or not line.endswith("\n"):
                continue
            t = int(p[0])
            by_user.setdefault(int(p[1]) - EXT0, []).append((t, p[2]))
            times.append(t)
    times.sort()
    return by_user, times


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
