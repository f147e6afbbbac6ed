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

With --roster-group-size G, [component] roster = groups on a Prosody that grants the
roster permission (the deploy recipe's [roster] block; every user has an account): users
in directory groups of G, so every roster gets G-1 phone contacts. Then also: the first
roster pass (every user's items written from nothing: N x (G-1)), its items per second
against [component] roster_rate (the pace, sampled every second), Prosody's and the
component's CPU meanwhile; and for each hire, with a colleague in its group logged in with
a real client (slixmpp), how long until the colleague gets the roster push, until it
shows the hire's desk phone (presence), and until every roster is written
(event=roster_synced); for each leaver, until the colleague's roster push removes it.
Whether the component re-read every user (event=synced) or only the hire
(event=users_read users=1) is counted too.

    python3 bench/ldap_sync.py --users 10000 --changes 5
    python3 bench/ldap_sync.py --users 10000 --poll 10      # a server without syncprov
    python3 bench/ldap_sync.py --users 10000 --changes 5 --roster-group-size 10 \
        --roster-rate 1000
"""

import argparse
import json
import statistics
import time

import os
import pwd

from lib import EXT0  # first: it puts tests/integration (the harness) on the path
from lib.perf import perf_start, perf_stop
from lib.sample import proc_stat
from harness import PROSODY_CFG, PbxSim, Stack, Workdir, wait_until
from slapd import Slapd, user_ldif
from watcher import Watcher

# Prosody at warn: at debug it would spend most of its CPU formatting stanzas for its log.
PROSODY_BENCH_CFG = PROSODY_CFG.replace("{loglevel}", "warn")
PHONE = "@phone.localhost"


def group(i, group_size):
    """User i's directory group: 20 groups of N/20 without rosters, else groups of G."""
    return "Group %d" % (i // group_size if group_size else i % 20)


def ldif(n, group_size):
    return "\n".join(user_ldif("u%d" % i, ext=str(EXT0 + i), name="User %d" % i,
                               groups=(group(i, group_size),)) for i in range(n))


def write_accounts(prosody, names):
    """Prosody's internal storage: data/localhost/accounts/<user>.dat, owned by prosody,
    as prosodyctl register would write them (10,000 in well under a second)."""
    d = os.path.join(prosody.dir, "data", "localhost", "accounts")
    os.makedirs(d, exist_ok=True)
    for name in names:
        with open(os.path.join(d, name + ".dat"), "w") as f:
            f.write('return {\n\t["password"] = "pw";\n};\n')
    if os.geteuid() == 0:
        pw = pwd.getpwnam("prosody")
        for base, dirs, files in os.walk(os.path.join(prosody.dir, "data")):
            os.chown(base, pw.pw_uid, pw.pw_gid)
            for f in files:
                os.chown(os.path.join(base, f), pw.pw_uid, pw.pw_gid)


def roster_adds(d):
    return d.metrics().get('offhook_roster_writes_total{change="add"}', 0)


def first_roster_pass(out, comp, prosody, items, rate):
    """Waits for the component's first roster pass, sampling its writes every second."""
    p0, c0, t0 = proc_stat(prosody.p.pid)[0], proc_stat(comp.p.pid)[0], time.monotonic()
    per_s, last, last_t = [], roster_adds(comp), t0
    deadline = t0 + items / min(rate, 100) + 600
    while "event=roster_synced" not in comp.log():
        if time.monotonic() > deadline:
            raise TimeoutError("the first roster pass")
        time.sleep(1.0)  # the sampling period of the pace, not a wait for a condition
        now, n = time.monotonic(), roster_adds(comp)
        per_s.append((n - last) / (now - last_t))
        last, last_t = n, now
    took = time.monotonic() - t0
    written = roster_adds(comp)
    out["roster_first_pass_items"] = int(written)
    out["roster_first_pass_s"] = round(took, 1)
    out["roster_items_per_s_mean"] = round(written / took, 1)
    # The busiest second: at most roster_rate (plus the bucket's burst) if it is paced.
    out["roster_items_per_s_max"] = round(max(per_s or [0]), 1)
    out["roster_first_pass_prosody_cpu_pct"] = round(
        (proc_stat(prosody.p.pid)[0] - p0) / took * 100, 1)
    out["roster_first_pass_component_cpu_pct"] = round(
        (proc_stat(comp.p.pid)[0] - c0) / took * 100, 1)
    out["roster_write_errors"] = int(sum(v for k, v in comp.metrics().items()
                                         if k.startswith("offhook_roster_write_errors")))


def live(pbx, ext):
    return pbx.dialogs(ext)


def clock(cond, timeout, what):
    t0 = time.monotonic()
    wait_until(cond, timeout=timeout, interval=0.02, what=what)
    return time.monotonic() - t0


def log_count(d, text):
    return d.log().count(text)


def run(users, changes, poll, rate, group_size, roster_rate, perf_out=None):
    wd = Workdir("offhook-bench-")
    out = {"users": users, "mode": "poll" if poll else "syncrepl", "subscribe_rate": rate}
    s = None
    try:
        kw = {}
        if group_size:
            out.update(roster_group_size=group_size, roster_rate=roster_rate)
            kw["prosody_kwargs"] = {"config_text": PROSODY_BENCH_CFG, "vhost_extra": "",
                                    "recipe_blocks": ("privilege", "roster")}
        s = Stack(wd.path, users=(), loglevel="notice", chat_users=(), other_domain_users=(),
                  **kw)
        if group_size:
            write_accounts(s.xmpp, ["u%d" % i for i in range(users)] +
                           ["new%d" % k for k in range(changes)])
        slapd = s.add(Slapd(wd.path, syncprov=not poll))
        t = time.monotonic()
        slapd.load(ldif(users, group_size))
        out["slapadd_s"] = round(time.monotonic() - t, 2)
        slapd.start()
        pbx = s.add(PbxSim(wd.path, s.pbx_port, goodbye=False)).start()
        extra = "[sip]\nsubscribe_rate = %d\n" % rate
        if group_size:
            # Contacts only: the PEP and vCard writers would read 20,000 nodes at start, a
            # burst of their own; here the rosters alone.
            extra += ("[component]\npublish = contacts\nroster = groups\nroster_rate = %d\n"
                      % roster_rate)
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

        colleague = None
        if group_size:
            first_roster_pass(out, comp, s.xmpp.proc, users * (group_size - 1), roster_rate)
            out["redis_used_mib"] = redis_used_mib(s)
            # A colleague of every hire (all join Group 0), online with a real client.
            colleague = Watcher("u1@localhost", "pw", s.xmpp.c2s)
            s.watchers.append(colleague)
            wait_until(lambda: len(colleague.current()) >= group_size - 1, timeout=60,
                       what="the colleague sees the group's phones")
        snapshots = log_count(comp, "event=synced ")

        # Changes while both run. Each is timed from the moment ldapmodify returns.
        lat = {"hire": [], "new_extension": [], "leaver": [], "component_apply": []}
        if group_size:
            lat.update(hire_roster_push=[], hire_phone_shown=[], hire_all_rosters=[],
                       leaver_roster_push=[])
        cpu_comp0 = proc_stat(comp.p.pid)[0]
        prof = None
        if perf_out:
            os.makedirs(perf_out, exist_ok=True)
            prof = perf_start(comp.p.pid, os.path.join(perf_out, "component.data"))
        n = users
        timeout = (poll or 0) * 3 + 60
        for k in range(changes):
            ext = str(EXT0 + users + k)
            contact = "new%d%s" % (k, PHONE)
            read = log_count(comp, "event=users_read users=1 ")
            synced = log_count(comp, "event=roster_synced")
            slapd.add_user("new%d" % k, ext=ext, groups=(group(0, group_size),))
            t0 = time.monotonic()
            wait_until(lambda: live(pbx, ext), timeout=timeout, interval=0.02, what="hire")
            lat["hire"].append(time.monotonic() - t0)
            wait_until(lambda: log_count(comp, "event=users_read users=1 ") > read,
                       timeout=timeout, interval=0.02, what="component has the hire")
            lat["component_apply"].append(time.monotonic() - t0)
            if colleague:
                wait_until(lambda: colleague.roster_pushes(contact), timeout=timeout,
                           interval=0.02, what="the hire pushed to the colleague")
                lat["hire_roster_push"].append(time.monotonic() - t0)
                wait_until(lambda: (colleague.last(contact) or ("",))[0] == "available",
                           timeout=timeout, interval=0.02, what="the hire's phone shown")
                lat["hire_phone_shown"].append(time.monotonic() - t0)
                wait_until(lambda: log_count(comp, "event=roster_synced") > synced,
                           timeout=timeout, interval=0.02, what="every roster written")
                lat["hire_all_rosters"].append(time.monotonic() - t0)
            n += 1
            old, new = str(EXT0 + k), str(EXT0 + users + changes + k)
            slapd.modify("u%d" % k, [("replace", "telephoneNumber", [new])])
            lat["new_extension"].append(clock(lambda: live(pbx, new) and not live(pbx, old),
                                              timeout, "new extension"))
            slapd.delete("new%d" % k)
            t0 = time.monotonic()
            wait_until(lambda: not live(pbx, ext), timeout=timeout, interval=0.02,
                       what="leaver")
            lat["leaver"].append(time.monotonic() - t0)
            if colleague:
                wait_until(lambda: colleague.roster_pushes(contact)[-1].subscription ==
                           "remove", timeout=timeout, interval=0.02,
                           what="the leaver out of the colleague's roster")
                lat["leaver_roster_push"].append(time.monotonic() - t0)
            n -= 1
        if prof:
            perf_stop(prof, os.path.join(perf_out, "component.data"),
                      os.path.join(perf_out, "component.txt"))
        out["component_cpu_s_per_change"] = round(
            (proc_stat(comp.p.pid)[0] - cpu_comp0) / max(1, 3 * changes), 3)
        # Each change read only what it added: no new snapshot of every user.
        out["component_snapshots_during_changes"] = log_count(comp, "event=synced ") - snapshots
        out["component_reads_of_one_hire"] = log_count(comp, "event=users_read users=1 ")
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


def redis_used_mib(s):
    for line in s.redis.cli("INFO", "memory").splitlines():
        if line.startswith("used_memory:"):
            return round(int(line.split(":")[1]) / 2**20, 1)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=10000)
    ap.add_argument("--changes", type=int, default=5, help="hires (each also a new "
                    "extension and a leaver)")
    ap.add_argument("--poll", type=int, default=0,
                    help="slapd without syncprov; offhook polls every POLL seconds")
    ap.add_argument("--rate", type=int, default=1000, help="[sip] subscribe_rate")
    ap.add_argument("--roster-group-size", type=int, default=0,
                    help="[component] roster = groups, users in directory groups of this size")
    ap.add_argument("--roster-rate", type=int, default=1000, help="[component] roster_rate")
    ap.add_argument("--perf-out", help="perf record the component during the changes: "
                    "DIR/component.data and the report DIR/component.txt")
    a = ap.parse_args()
    out = run(a.users, a.changes, a.poll, a.rate, a.roster_group_size, a.roster_rate,
              a.perf_out)
    print(json.dumps(out), flush=True)
    print("%(users)d users, %(mode)s: LDAP read %(sipbridge_ldap_read_s).2f s, in force "
          "%(sipbridge_start_to_users_s).2f s after start (component %(component_start_to_"
          "users_s).2f s); hire -> subscription median %(hire_median_s).2f s (max "
          "%(hire_max_s).2f s); leaver -> un-SUBSCRIBE %(leaver_median_s).2f s; restart from "
          "the Redis copy %(restart_from_copy_to_users_s).2f s" % out)
    if a.roster_group_size:
        print("rosters (groups of %(roster_group_size)d, roster_rate %(roster_rate)d): first "
              "pass %(roster_first_pass_items)d items in %(roster_first_pass_s).1f s "
              "(%(roster_items_per_s_mean).0f/s, busiest second %(roster_items_per_s_max).0f, "
              "Prosody %(roster_first_pass_prosody_cpu_pct).0f %% CPU); hire -> colleague's "
              "roster push median %(hire_roster_push_median_s).2f s, its phone shown "
              "%(hire_phone_shown_median_s).2f s, every roster %(hire_all_rosters_median_s).2f s"
              % out)


if __name__ == "__main__":
    main()
