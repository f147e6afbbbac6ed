"""The directory at scale: N users in a real slapd, read by both daemons ([directory]
source = ldap), then changes made while they run.

Measures, per daemon: how long the first sync takes (the LDAP read alone, as the daemon
reports it, and from the daemon's start until all N users are in force), sipbridge's time
to subscribe them all (pbxsim as the PBX), its RSS; then for each of a few changes (a hire,
a new extension, a leaver) how long until it reaches the subscription (pbxsim holds or
drops it) and until the component has read the new user's state (its feed reads the hire
alone, event=users_read), and the component's CPU per change. A
restart with slapd stopped measures the start from the copy in Redis.

Also the CPU the daemons and slapd use while nothing changes (idle_cpu_pct_*: polling
costs a search and a listing per interval; a persistent search costs nothing but a check
every poll_interval). Prints one JSON line and a short human summary.

    python3 bench/ldap_sync.py --users 10000 --changes 5
    python3 bench/ldap_sync.py --users 10000 --poll 10      # a server without syncprov
"""

import argparse
import json
import statistics
import time

from lib import EXT0  # first: it puts tests/integration (the harness) on the path
from lib.sample import proc_stat
from harness import PbxSim, Stack, Workdir, wait_until
from slapd import Slapd, user_ldif


def ldif(n):
    return "\n".join(user_ldif("u%d" % i, ext=str(EXT0 + i), name="User %d" % i,
                               groups=("Group %d" % (i % 20),)) for i in range(n))


def live(pbx, ext):
    return pbx.dialogs(ext)


def clock(cond, timeout, what):
    t0 = time.monotonic()
    wait_until(cond, timeout=timeout, interval=0.02, what=what)
    return time.monotonic() - t0


def log_count(d, text):
    return d.log().count(text)


def run(users, changes, poll, rate):
    wd = Workdir("offhook-bench-")
    out = {"users": users, "mode": "poll" if poll else "syncrepl", "subscribe_rate": rate}
    s = None
    try:
        s = Stack(wd.path, users=(), loglevel="notice", chat_users=(), other_domain_users=())
        slapd = s.add(Slapd(wd.path, syncprov=not poll))
        t = time.monotonic()
        slapd.load(ldif(users))
        out["slapadd_s"] = round(time.monotonic() - t, 2)
        slapd.start()
        pbx = s.add(PbxSim(wd.path, s.pbx_port, goodbye=False)).start()
        extra = "[sip]\nsubscribe_rate = %d\n" % rate
        s.write_config(users=(), extra=slapd.offhook_config(
            s.pbx_port, extra="poll_interval = %d\n" % poll if poll else "") + extra)

        # The first sync, each daemon on its own (the component first: it has no PBX).
        # Each starts with no copy in Redis, so that its users come from LDAP itself (the
        # copy is measured last, on a restart).
        for name, start in (("component", lambda: s.start_component(wait_ready=False)),
                            ("sipbridge", s.start_sipbridge)):
            s.redis.cli("DEL", "offhook:directory:users")
            t0 = time.monotonic()
            d = start()
            wait_until(lambda: d.metrics().get("offhook_directory_users") == users,
                       timeout=300, interval=0.05, what="%s: all users in force" % name)
            out["%s_start_to_users_s" % name] = round(time.monotonic() - t0, 2)
            wait_until(lambda: d.metrics().get(
                "offhook_directory_last_sync_timestamp_seconds", 0) > 0, timeout=60,
                what="%s: the sync" % name)
            out["%s_ldap_read_s" % name] = d.metrics()["offhook_directory_sync_seconds"]
        sb, comp = s.sipbridge, s.component
        out["sipbridge_subscribe_all_s"] = round(clock(
            lambda: sb.metrics().get('offhook_subscriptions{state="active"}', 0) >= users,
            users / rate * 3 + 120, "all subscriptions"), 2)
        out["sipbridge_rss_mib"] = round(proc_stat(sb.p.pid)[1] / 2**20, 1)
        out["component_rss_mib"] = round(proc_stat(comp.p.pid)[1] / 2**20, 1)
        # Its users came after its snapshot (from the directory): read as a reload's are.
        wait_until(lambda: "event=synced users=%d " % users in comp.log() or
                   "event=users_read users=%d " % users in comp.log(), timeout=120,
                   what="component has every user's state")

        # Changes while both run. Each is timed from the moment ldapmodify returns.
        lat = {"hire": [], "new_extension": [], "leaver": [], "component_apply": []}
        cpu_comp0 = proc_stat(comp.p.pid)[0]
        n = users
        timeout = (poll or 0) * 3 + 60
        for k in range(changes):
            ext = str(EXT0 + users + k)
            read = log_count(comp, "event=users_read users=1 ")
            slapd.add_user("new%d" % k, ext=ext)
            t0 = time.monotonic()
            wait_until(lambda: live(pbx, ext), timeout=timeout, interval=0.02, what="hire")
            lat["hire"].append(time.monotonic() - t0)
            wait_until(lambda: log_count(comp, "event=users_read users=1 ") > read,
                       timeout=timeout, interval=0.02, what="component has the hire")
            lat["component_apply"].append(time.monotonic() - t0)
            n += 1
            old, new = str(EXT0 + k), str(EXT0 + users + changes + k)
            slapd.modify("u%d" % k, [("replace", "telephoneNumber", [new])])
            lat["new_extension"].append(clock(lambda: live(pbx, new) and not live(pbx, old),
                                              timeout, "new extension"))
            slapd.delete("new%d" % k)
            lat["leaver"].append(clock(lambda: not live(pbx, ext), timeout, "leaver"))
            n -= 1
        out["component_cpu_s_per_change"] = round(
            (proc_stat(comp.p.pid)[0] - cpu_comp0) / max(1, 3 * changes), 3)
        for k, v in lat.items():
            if v:
                out["%s_median_s" % k] = round(statistics.median(v), 3)
                out["%s_max_s" % k] = round(max(v), 3)

        # Idle: what keeping in step costs when nothing changes (poll: a search for changes
        # and a listing of every name per interval; syncrepl: a check per poll_interval).
        window = max(10, 3 * poll)
        before = [proc_stat(p.p.pid)[0] for p in (sb, comp, slapd.proc)]
        time.sleep(window)  # the measurement window itself, not a wait for a condition
        after = [proc_stat(p.p.pid)[0] for p in (sb, comp, slapd.proc)]
        for name, b, a in zip(("sipbridge", "component", "slapd"), before, after):
            out["idle_cpu_pct_%s" % name] = round((a - b) / window * 100, 2)

        # A restart of sipbridge with slapd down: the users come from the copy in Redis.
        slapd.stop()
        wait_until(lambda: sb.metrics().get("offhook_directory_up") == 0, timeout=60,
                   what="directory down")
        sb.stop()
        t0 = time.monotonic()
        sb = s.start_sipbridge()
        wait_until(lambda: sb.metrics().get("offhook_directory_users") == users, timeout=300,
                   interval=0.05, what="users from the copy")
        out["restart_from_copy_to_users_s"] = round(time.monotonic() - t0, 2)
    finally:
        if s:
            problems = s.stop()
            if problems:
                out["problems"] = problems
        wd.cleanup()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--changes", type=int, default=5, help="hires (each also a new "
                    "extension and a leaver)")
    ap.add_argument("--poll", type=int, default=0,
                    help="slapd without syncprov; offhook polls every POLL seconds")
    ap.add_argument("--rate", type=int, default=1000, help="[sip] subscribe_rate")
    a = ap.parse_args()
    out = run(a.users, a.changes, a.poll, a.rate)
    print(json.dumps(out), flush=True)
    print("%(users)d users, %(mode)s: LDAP read %(sipbridge_ldap_read_s).2f s, in force "
          "%(sipbridge_start_to_users_s).2f s after start (component %(component_start_to_"
          "users_s).2f s); hire -> subscription median %(hire_median_s).2f s (max "
          "%(hire_max_s).2f s); leaver -> un-SUBSCRIBE %(leaver_median_s).2f s; restart from "
          "the Redis copy %(restart_from_copy_to_users_s).2f s" % out)


if __name__ == "__main__":
    main()
