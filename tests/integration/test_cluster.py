"""Issue 12, beyond one machine: several sipbridges sharing the users and a standby
component, on real servers (cluster.py): a Redis master and replica with three
sentinels, Prosody, bench/pbxsim as the PBX with 40 users, two or three sipbridges and two
components, each with a configuration of its own as on its own host, and boss watching
every phone. Calls keep changing through every fault; after each, every phone must be right
in Redis and in the client (no final state lost), none shown a state out of order, and
every user subscribed by exactly one live sipbridge again. Each case prints its times as a
JSON line (CLUSTER {...}); OFFHOOK_CLUSTER_REPORT=FILE appends them there
(docs/reliability.md).

The cases share one stack and run in order; the module runs in the ASan pass
(marker "multihost", left out under valgrind: there five daemons miss the timings being
measured)."""

import json
import os
import signal
import time

import pytest

from calls import VIEW
from cluster import ClusterStack
from harness import Workdir, wait_until
from sentinel import contact

pytestmark = pytest.mark.multihost

N_USERS = 40
LEASE_TTL_S = 5      # the default [sipbridge] / [component] lease_ttl
BOUND_S = 10.0       # issue 12: every phone right again within 10 s of a failure


def report(case, **row):
    row = dict(case=case, users=N_USERS, **row)
    print("CLUSTER %s" % json.dumps(row))
    out = os.environ.get("OFFHOOK_CLUSTER_REPORT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def cs():
    wd = Workdir()
    c = ClusterStack(wd.path, N_USERS)
    try:
        c.start_component("c1")
        wait_until(lambda: c.members["c1"].active(), what="c1 active")
        c.start_component("c2")
        c.start_sipbridge("sb1")
        c.start_sipbridge("sb2")
        c.watch()
        c.converge(timeout=60)
    except BaseException:
        print(c.logs())
        c.stop()
        wd.cleanup()
        raise
    yield c
    problems = c.stop()
    wd.cleanup()
    assert not problems, "daemon problems:\n" + "\n".join(problems)


def settle(c, timeout=30, what="every user subscribed by exactly one live sipbridge"):
    """Until every user has exactly one live subscriber and no sipbridge is still handing
    one over; returns the seconds it took."""
    t0 = time.monotonic()
    try:
        wait_until(lambda: c.each_once() and all(d.moving() == 0 for d in c.sipbridges()),
                   timeout=timeout, interval=0.1, what=what)
    except TimeoutError:
        raise AssertionError("%s: %r\n%s" % (what, {i: v for i, v in c.subscribers().items()
                                                    if len(v) != 1}, c.logs()))
    return time.monotonic() - t0


def check_owners(c):
    """Redis names, for every user, the live sipbridge that holds its subscription."""
    subs, owners = c.subscribers(), c.owners()
    assert all(owners[i] == subs[i][0] for i in range(c.n)), (owners, subs)


def test_users_shared_by_two_sipbridges(cs):
    """Two sipbridges with the same users and no partition in their configuration: each
    user is subscribed by exactly one of them, both take a share, Redis names the right
    owner; one component is connected to the XMPP server, the other waits."""
    c = cs
    settle(c)
    shares = {d.label: d.owned() for d in c.sipbridges()}
    assert sum(shares.values()) == N_USERS and all(v > 0 for v in shares.values()), shares
    c.calls.shuffle()
    took = c.converge()
    check_owners(c)
    assert not c.wrong_in_redis()
    roles = {d.label: d.active() for d in c.components()}
    assert sorted(roles.values()) == [False, True], roles
    assert c.members_hash("component")["@holder"].split()[1] == c.active_component().label
    standby = next(d for d in c.components() if not d.active())
    assert standby.metrics().get("offhook_xmpp_connected") == 0
    assert standby.ready()   # a standby ready to take over is ready
    report("two_sipbridges", shares=shares, first_changes_s=round(took, 2))


def test_offhookctl_cluster(cs):
    """offhookctl cluster reads the leases from Redis: every sipbridge with its lease's age
    and the users it owns, each component active or standby; with a JID, the owner Redis
    names and the member the membership assigns."""
    c = cs

    def read():
        return json.loads(c.ctl("--json", "cluster"))

    # Each lease reports the users owned at its renewal (every second): the same as the
    # daemons' metrics once each has renewed since its share last changed.
    doc = wait_until(lambda: (lambda d: d if {m["name"]: m["users_owned"] for m in
                                              d["sipbridges"]} ==
                              {x.label: x.owned() for x in c.sipbridges()} else None)(read()),
                     timeout=5, what="offhookctl cluster's counts as the daemons'")
    sbs = {m["name"]: m for m in doc["sipbridges"]}
    assert set(sbs) == {d.label for d in c.sipbridges()}, doc
    assert all(0 <= m["lease_age_ms"] < LEASE_TTL_S * 1000 and m["role"] == "member"
               for m in sbs.values()), doc
    roles = {m["name"]: m["role"] for m in doc["components"]}
    assert roles == {d.label: "active" if d.active() else "standby" for d in c.components()}
    assert all(m["ready"] for m in doc["components"])
    subs = c.subscribers()
    for i in (0, 5, 17):
        one = json.loads(c.ctl("--json", "cluster", "u%02d@localhost" % i))
        assert one["owner"] == one["assigned"] == subs[i][0] and one["owner_alive"], one
    text = c.ctl("cluster", contact(5))
    assert "owner:      %s" % subs[5][0] in text and "assigned:   %s" % subs[5][0] in text
    text = c.ctl("cluster")
    assert "sipbridges:  2" in text and " active " in text and " standby " in text, text


def test_third_sipbridge_takes_its_share(cs):
    """A third sipbridge started while calls go on takes about a third of the users from
    the two others without any restart: each user moves make-before-break (the new owner
    subscribes and writes before the old one lets go), so no phone is shown "unknown" or
    a state out of order; while they move, a user may be subscribed twice, never more
    than the users moving."""
    c = cs
    # Run alone (-k), this is the module's first case: the two sipbridges may still be
    # sharing the users out, and a move of theirs would be taken for one of sb3's.
    settle(c)
    c.calls.shuffle()
    c.converge()
    t0 = time.monotonic()
    c.calls.start_background()
    max_dup = 0
    try:
        sb3 = c.start_sipbridge("sb3", wait_ready=False)

        def moved():
            nonlocal max_dup
            max_dup = max(max_dup, c.duplicates())
            return (sb3.owned() > 0 and c.each_once() and
                    all(d.moving() == 0 for d in c.sipbridges()))
        wait_until(moved, timeout=30, interval=0.1, what="the third sipbridge's share moved")
        moved_s = time.monotonic() - t0
        time.sleep(1.0)  # calls go on with three
    finally:
        c.calls.stop_background()
    took = c.converge()
    share = sb3.owned()
    assert 0 < share < N_USERS, share
    assert sb3.metrics().get('offhook_cluster_moves_total{direction="in"}') == share
    assert max_dup <= share, (max_dup, share)
    assert not c.unknown_since(t0), c.unknown_since(t0)
    bad = c.shown_out_of_order(t0)
    assert not bad, "phones shown out of order: %r" % sorted(bad.items())[:3]
    check_owners(c)
    assert not c.wrong_in_redis()
    report("sipbridge_joins", moved_users=share, moved_s=round(moved_s, 2),
           max_duplicate_subscriptions=max_dup, converged_after_calls_s=round(took, 2),
           changes=c.calls.changes)


def test_kill9_one_of_three_sipbridges(cs):
    """kill -9 of one of three sipbridges while calls go on: once its lease runs out
    (lease_ttl, 5 s) the two others take its users over (within 5 s of that, issue 12),
    and every phone is right again, none lost."""
    c = cs
    c.calls.shuffle()
    c.converge()
    victim = c.members["sb2"]
    gone = set(i for i, v in c.subscribers().items() if v == ["sb2"])
    assert gone
    c.calls.start_background()
    try:
        time.sleep(0.5)
        expires_in = c.lease_expires_in("sb2")
        t0 = time.monotonic()
        victim.kill9()
        wait_until(lambda: c.each_once(), timeout=30, interval=0.1,
                   what="the dead sipbridge's users taken over")
        taken = time.monotonic() - t0
        wait_until(lambda: "sb2" not in c.owners().values(), timeout=20,
                   what="Redis naming the new owners")
        owned_s = time.monotonic() - t0
        time.sleep(1.0)
    finally:
        c.calls.stop_background()
    stopped = time.monotonic()
    took = c.converge()
    assert not c.wrong_in_redis()
    check_owners(c)
    assert "sb2" not in c.members_hash()
    # offhookctl works with a daemon dead: the pruned one is gone from its list.
    assert "sb2" not in {m["name"] for m in json.loads(c.ctl("--json", "cluster"))["sipbridges"]}
    after_expiry = taken - expires_in
    row = dict(users_taken_over=len(gone), lease_expired_after_s=round(expires_in, 2),
               subscribed_again_s=round(taken, 2), owners_in_redis_s=round(owned_s, 2),
               takeover_after_expiry_s=round(after_expiry, 2),
               converged_s=round(stopped - t0 + took, 2))
    report("sipbridge_kill9", **row)
    assert after_expiry <= 5.0, row
    assert stopped - t0 + took <= LEASE_TTL_S + BOUND_S, row


def test_sipbridge_stopped_cleanly(cs):
    """SIGTERM of a sipbridge while another runs: it hands its users over and exits only
    once each has been written by its new owner (or MEMBER_LEAVE_MAX_S): no phone shown
    "unknown". Then the one killed before comes back and takes its share again."""
    c = cs
    c.calls.shuffle()
    c.converge()
    leaving = c.members["sb3"]
    share = leaving.owned()
    t0 = time.monotonic()
    c.calls.start_background()
    try:
        rc = leaving.stop(timeout=40)
        left_s = time.monotonic() - t0
        assert rc == 0, leaving.log()[-3000:]
        settle(c)
        time.sleep(0.5)
    finally:
        c.calls.stop_background()
    took = c.converge()
    assert not c.unknown_since(t0), c.unknown_since(t0)
    assert not c.shown_out_of_order(t0)
    assert "event=left" in leaving.log() and "leave_cut_short" not in leaving.log()
    assert "sb3" not in c.members_hash()
    check_owners(c)
    report("sipbridge_leaves", moved_users=share, exited_s=round(left_s, 2),
           converged_after_calls_s=round(took, 2))
    # The killed one back: two sipbridges for the next cases.
    t1 = time.monotonic()
    c.start_sipbridge("sb2")
    settle(c)
    assert c.members["sb2"].owned() > 0
    report("sipbridge_rejoins", settled_s=round(time.monotonic() - t1, 2))


def test_sipbridge_stopped_cleanly_pbx_frozen(cs):
    """The same clean stop, with the PBX frozen (SIGSTOP) 3.5 s right after the SIGTERM:
    the survivor's new subscriptions and the leaving one's old ones then get their
    NOTIFYs in one burst, so a new owner's first write (its claim) may reach Redis after a
    newer state the leaving one wrote. A claim over a live owner with an older state does
    not overwrite it (common/lua/write.lua): no phone is shown a state out of order.
    Before that rule, the client saw e.g. ringing -> idle -> ringing."""
    c = cs
    leaving = c.members["sb2"]

    def shared():
        subs = c.subscribers()
        mine = sum(1 for v in subs.values() if v == ["sb2"])
        return (leaving.owned() > 0 and mine == leaving.owned() and c.each_once() and
                all(d.moving() == 0 for d in c.sipbridges()) and
                list(c.owners().values()).count("sb2") == mine)
    wait_until(shared, timeout=30, interval=0.1, what="sb2 holding its share")
    c.calls.shuffle()
    c.converge()
    share = leaving.owned()
    kept0 = c.members["sb1"].metrics().get("offhook_store_claims_kept_total", 0)
    t0 = time.monotonic()
    # Faster than the other cases: more changes land in the handover's few milliseconds.
    c.calls.start_background(count=10, every_s=0.05)
    try:
        leaving.send_signal(signal.SIGTERM)
        c.pbx.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(3.5)  # the fault's length, not a wait for a condition
        finally:
            c.pbx.proc.send_signal(signal.SIGCONT)
        # No second SIGTERM (it would stop it at once): it exits once its users moved.
        wait_until(lambda: not leaving.alive(), timeout=40, what="sb2 handing over, exiting")
        rc = leaving.stop()
        assert rc == 0, leaving.log()[-3000:]
        settle(c)
        time.sleep(0.5)
    finally:
        c.calls.stop_background()
    c.converge()
    assert not c.unknown_since(t0), c.unknown_since(t0)
    bad = c.shown_out_of_order(t0)
    assert not bad, "phones shown out of order: %r" % sorted(bad.items())[:3]
    assert "event=left" in leaving.log(), leaving.log()[-3000:]
    check_owners(c)
    assert not c.wrong_in_redis()
    kept = c.members["sb1"].metrics().get("offhook_store_claims_kept_total", 0) - kept0
    report("sipbridge_leaves_pbx_frozen", moved_users=share, claims_kept=int(kept))
    # Back: two sipbridges for the next cases.
    c.start_sipbridge("sb2")
    settle(c)
    wait_until(lambda: c.members["sb2"].owned() > 0, timeout=30, what="sb2 taking its share")


def links_on(d, node):
    return d.metrics().get('offhook_redis_master{master="%s"}' % node.addr(), 0)


NLINKS = {"sipbridge": 2, "component": 6}  # + lease: store; feed, feed_read, watchers, health, roster


def test_kill9_redis_master_during_calls(cs):
    """kill -9 of the Redis master, its last writes not yet on the replica, while calls
    change, with two sipbridges and two components: every daemon follows the sentinels to
    the new master, the sipbridges write again what it lacks (each for its own users),
    leases hold (nobody is taken for dead, nothing moves), and every phone is right."""
    c = cs
    c.calls.shuffle()
    c.converge()
    old = c.rs.master()
    owners_before = c.owners()
    epochs = {k: v[0] for k, v in c.members_hash().items() if not k.startswith("@")}
    lagged = list(range(8))
    c.calls.start_background(users=[i for i in range(N_USERS) if i not in lagged])
    try:
        time.sleep(0.5)
        replica = c.rs.lag_replica()
        c.calls.shuffle(users=lagged)
        wait_until(lambda: all(old.cli("HGET", "offhook:user:u%02d@localhost" % i, "state") ==
                               c.calls.truth[i] for i in lagged),
                   what="the old master has the lagged users' changes")
        t0 = time.monotonic()
        old.proc.kill9()
        c.rs.resume_replica(replica)
        new = c.rs.wait_failover(old)
        elected = time.monotonic() - t0
        wait_until(lambda: all(links_on(d, new) == NLINKS[d.kind]
                               for d in c.sipbridges() + c.components()),
                   timeout=20, what="every link on the new master")
        moved = time.monotonic() - t0
        time.sleep(1.0)
    finally:
        c.calls.stop_background()
    stopped = time.monotonic()
    took = c.converge()
    assert not c.wrong_in_redis()
    bad = c.shown_out_of_order(t0)
    assert not bad, "phones shown out of order: %r" % sorted(bad.items())[:3]
    # Nobody was taken for dead across the failover: same leases, same owners.
    assert {k: v[0] for k, v in c.members_hash().items() if not k.startswith("@")} == epochs
    assert c.owners() == owners_before
    assert c.each_once()
    repairs = sum(d.metrics().get("offhook_store_repairs_total", 0) for d in c.sipbridges())
    assert repairs >= len(lagged), repairs
    row = dict(elected_s=round(elected, 2), links_moved_s=round(moved, 2),
               converged_s=round(stopped - t0 + took, 2), users_repaired=int(repairs))
    report("redis_master_kill9", **row)
    assert stopped - t0 + took <= BOUND_S + 2.0, row
    old.start(replicaof=new)
    c.rs.wait_replica_ok()


def test_kill9_active_component(cs):
    """kill -9 of the active component while calls go on: the standby connects once the
    lease runs out, within 10 s of the active one's last renewal (its heartbeat in
    Redis), reads every watcher from Redis and sends each the current presence."""
    c = cs
    c.calls.shuffle()
    c.converge()
    active = c.active_component()
    standby = next(d for d in c.components() if d is not active)
    mark = N_USERS - 1
    c.calls.start_background(users=range(N_USERS - 1))
    try:
        time.sleep(0.5)
        since_renewal = LEASE_TTL_S - c.lease_expires_in(active.label, "component")
        t0 = time.monotonic()
        active.kill9()
        c.calls.set(mark, next(s for s in VIEW if s != c.calls.truth[mark]))
        wait_until(lambda: standby.metrics().get("offhook_xmpp_connected") == 1,
                   timeout=20, interval=0.05, what="the standby connected")
        connected = time.monotonic() - t0
        wait_until(lambda: c.w.current().get(contact(mark)) == VIEW[c.calls.truth[mark]],
                   timeout=10, interval=0.05, what="a change made after the kill shown")
        shown = time.monotonic() - t0
        time.sleep(1.0)
    finally:
        c.calls.stop_background()
    took = c.converge()
    # Nobody was connected between the kill and the standby: every presence since is the
    # standby's, and every contact's current one came again.
    resent = {p.frm for p in c.w.seen() if p.at >= t0}
    assert resent >= {contact(i) for i in range(N_USERS)}, "watchers not sent the presence"
    assert standby.active()
    assert not c.shown_out_of_order(t0)
    after_heartbeat = since_renewal + connected
    row = dict(last_renewal_before_kill_s=round(since_renewal, 2),
               standby_connected_s=round(connected, 2),
               connected_after_last_heartbeat_s=round(after_heartbeat, 2),
               change_shown_s=round(shown, 2), converged_after_calls_s=round(took, 2))
    report("component_kill9", **row)
    assert after_heartbeat <= 10.0, row
    # Back, as the standby now.
    c.start_component(active.label)
    assert not c.members[active.label].active()


def test_active_component_stopped_cleanly(cs):
    """SIGTERM of the active component with a standby ready: it closes its stream without
    the goodbye and gives the lease up, the standby connects at once and sends every
    watcher the current presence; nobody is shown the phones unavailable."""
    c = cs
    c.calls.shuffle()
    c.converge()
    active = c.active_component()
    standby = next(d for d in c.components() if d is not active)
    assert standby.ready()
    t0 = time.monotonic()
    rc = active.stop()
    stopped = time.monotonic() - t0
    assert rc == 0
    wait_until(lambda: standby.metrics().get("offhook_xmpp_connected") == 1, timeout=10,
               interval=0.02, what="the standby connected")
    connected = time.monotonic() - t0
    c.calls.shuffle()
    took = c.converge()
    assert not c.unavailable_since(t0), c.unavailable_since(t0)
    assert "event=handover" in active.log()
    row = dict(stopped_s=round(stopped, 3), standby_connected_s=round(connected, 3),
               next_changes_s=round(took, 2))
    report("component_handover", **row)
    assert connected <= 2.0, row
    c.start_component(active.label)


# ---- the resource list, held by one sipbridge (plain Redis, a scripted PBX) -------------

LIST_CT = 'multipart/related;type="application/rlmi+xml";boundary="b"'


def rlmi_full(states):
    """A full-state RFC 4662 list NOTIFY body: {extension: dialog state}."""
    out = ['--b\r\nContent-Type: application/rlmi+xml\r\nContent-ID: <root@pbx>\r\n\r\n'
           '<list xmlns="urn:ietf:params:xml:ns:rlmi" uri="sip:phones@pbx.example.com" '
           'version="0" fullState="true">' +
           "".join('<resource uri="sip:%s@pbx.example.com"><instance id="i%s" state="active" '
                   'cid="%s@pbx"/></resource>' % (e, e, e) for e in states) + '</list>\r\n']
    for e, st in states.items():
        out.append('--b\r\nContent-Type: application/dialog-info+xml\r\nContent-ID: <%s@pbx>'
                   '\r\n\r\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
                   'version="0" state="full" entity="sip:%s@pbx.example.com"><dialog id="%s">'
                   '<state>%s</state></dialog></dialog-info>\r\n' % (e, e, e, st))
    return "".join(out) + "--b--\r\n"


def test_resource_list_held_by_one_with_takeover(stack_factory):
    """[sip] resource_list with two sipbridges: one holds the list (and so every user), the
    other subscribes nothing; killed, the holder's list is taken over by the other once
    its lease has run out: one new list SUBSCRIBE, whose full state every phone shows."""
    from calls import IDLE, ON_CALL
    from cluster import Member, member_config
    from harness import free_port, scenario_notify, step_answer_forever, step_respond
    users = (("alice@localhost", "sip:1001@pbx.example.com"),
             ("bob@localhost", "sip:1002@pbx.example.com"))
    s = stack_factory(users=users, loglevel="info")
    s.write_config(extra="[sip]\nresource_list = sip:phones@127.0.0.1:%d\n" % s.pbx_port)
    s.start_component()
    w = s.watcher("bob@localhost")
    for u in ("alice", "bob"):
        w.subscribe("%s@phone.localhost" % u)
    s.start_pbx_script([
        [step_respond(expires=3600, initial=True),
         scenario_notify(rlmi_full({"1001": "confirmed", "1002": "terminated"}),
                         ctype=LIST_CT, pause_ms=100),
         step_answer_forever()],
        [step_respond(expires=3600, initial=True),
         scenario_notify(rlmi_full({"1001": "terminated", "1002": "confirmed"}),
                         ctype=LIST_CT, pause_ms=100),
         step_answer_forever()]])

    def start(label):
        sip, port = free_port(), free_port()
        cfg = member_config(s.config, os.path.join(s.dir, label + ".conf"), [
            ("sip", "listen", "udp:127.0.0.1:%d" % sip),
            ("sipbridge", "metrics", "127.0.0.1:%d" % port),
            ("sipbridge", "instance", label)])
        d = Member("sipbridge", label, cfg, s.dir, port, sip)
        s.all_daemons.append(d)
        wait_until(d.ready, timeout=30, what="sipbridge %s ready" % label)
        return d

    a = start("sb-a")
    wait_until(lambda: w.last("alice@phone.localhost") == ON_CALL and
               w.last("bob@phone.localhost") == IDLE, timeout=20, what="the first list shown")
    b = start("sb-b")
    time.sleep(2.0)  # two renewals: b has seen the holder and kept away
    assert a.metrics()["offhook_lease_holder"] == 1 and a.owned() == 2
    assert b.metrics()["offhook_lease_holder"] == 0 and b.owned() == 0
    assert b.metrics().get('offhook_subscriptions{state="active"}', 0) == 0
    t0 = time.monotonic()
    a.kill9()
    wait_until(lambda: w.last("alice@phone.localhost") == IDLE and
               w.last("bob@phone.localhost") == ON_CALL, timeout=20,
               what="the list taken over and its full state shown")
    took = time.monotonic() - t0
    assert b.metrics()["offhook_lease_holder"] == 1 and b.owned() == 2
    assert s.redis.cli("HGET", "offhook:members:sipbridge", "@holder").endswith(" sb-b")
    subs = [m for m in s.pbx.messages().split("\n\n") if m.startswith("SUBSCRIBE sip:phones")]
    assert len([m for m in subs if "Expires: 0" not in m]) >= 2
    report("resource_list_takeover", list_users=2, shown_s=round(took, 2))
    assert took <= LEASE_TTL_S + 5.0
