"""The two Redis scripts behind the cluster (common/lua/lease.lua and write.lua, compiled
into storecodec.c as they are), run on a real redis-server: each rule of the leases and of
the fenced write, one case at a time, with the state Redis holds afterwards."""

import os
import subprocess
import time

import pytest

from harness import ROOT, Redis

LUA = os.path.join(ROOT, "common", "lua")
MEMBERS, EPOCH, WAKE = "offhook:members:sipbridge", "offhook:members:epoch", \
    "offhook:members:sipbridge:wake"
USER, EVENTS = "offhook:user:u@x", "offhook:events"


@pytest.fixture
def redis(workdir):
    r = Redis(workdir).start()
    yield r
    r.stop()


def script(name):
    with open(os.path.join(LUA, name)) as f:
        return f.read()


def evalsha(r, name, keys, args):
    """EVAL of common/lua/<name>; the reply as redis-cli --raw prints it, one line per
    element (errors: the message)."""
    out = subprocess.run(["redis-cli", "-p", str(r.port), "--raw", "EVAL", script(name),
                          str(len(keys))] + list(keys) + [str(a) for a in args],
                         capture_output=True, text=True, timeout=10)
    return (out.stdout + out.stderr).strip()


def lease(r, name, epoch=0, ttl=5000, phase="active", ready=1, count=0, prune=0,
          holder="none", dead=()):
    lines = evalsha(r, "lease.lua", [MEMBERS, EPOCH, WAKE],
                    [name, epoch, ttl, phase, ready, count, prune, holder] + list(dead))
    lines = lines.splitlines()
    return lines[0], int(lines[1]), lines[3:]


def write(r, name, epoch, fields=("state", "idle", "since", "1000"), mode="write", claim=1):
    return evalsha(r, "write.lua", [USER, EVENTS, MEMBERS],
                   ["u@x", name, epoch, mode, claim] + list(fields))


def xlen(r):
    return int(r.cli("XLEN", EVENTS))


def test_lease_join_renew_conflict_leave(redis):
    r = redis
    st, e1, _ = lease(r, "sb1")
    assert st == "joined" and e1 == 1
    st, e, _ = lease(r, "sb1", e1, count=7)
    assert (st, e) == ("renewed", e1)
    assert r.cli("HGET", MEMBERS, "sb1").split()[4] == "7"
    # Another process with the same name, while the lease runs: refused, nothing written.
    st, e, _ = lease(r, "sb1", 0)
    assert (st, e) == ("conflict", e1)
    st, e2, _ = lease(r, "sb2")
    assert st == "joined" and e2 == 2
    st, _, _ = lease(r, "sb2", e2, phase="gone")
    assert st == "left" and r.cli("HEXISTS", MEMBERS, "sb2") == "0"
    # A lease that ran out may be taken by a new process of that name: a new epoch.
    lease(r, "sb1", e1, ttl=1)
    time.sleep(0.01)
    st, e3, _ = lease(r, "sb1", 0)
    assert st == "joined" and e3 == 3


def test_lease_prune_only_when_asked(redis):
    r = redis
    _, e1, _ = lease(r, "sb1", ttl=1)
    _, e2, _ = lease(r, "sb2")
    time.sleep(0.01)
    lease(r, "sb2", e2, prune=0)
    assert r.cli("HEXISTS", MEMBERS, "sb1") == "1"   # ran out, but not pruned
    lease(r, "sb2", e2, prune=1)
    assert r.cli("HEXISTS", MEMBERS, "sb1") == "0"
    # sb1 renews: its lease was lost, it gets a new epoch.
    st, e, _ = lease(r, "sb1", e1)
    assert st == "joined" and e > e2
    # A member named dead is pruned at once, whatever its lease says.
    lease(r, "sb2", e2, dead=["sb1"])
    assert r.cli("HEXISTS", MEMBERS, "sb1") == "0"


def test_lease_holder(redis):
    r = redis
    _, e1, _ = lease(r, "c1", holder="want", ready=0)
    assert r.cli("HGET", MEMBERS, "@holder") == ""      # not ready: not taken
    lease(r, "c1", e1, holder="want")
    assert r.cli("HGET", MEMBERS, "@holder") == "%d c1" % e1
    _, e2, _ = lease(r, "c2", holder="want")
    assert r.cli("HGET", MEMBERS, "@holder") == "%d c1" % e1  # a valid holder stays
    # A leaving holder is no holder: the next member that wants it takes it.
    lease(r, "c1", e1, phase="leaving", holder="none")
    lease(r, "c2", e2, holder="want")
    assert r.cli("HGET", MEMBERS, "@holder") == "%d c2" % e2
    # Released (a clean stop): gone, and a waiting member is woken.
    lease(r, "c2", e2, phase="gone", holder="release")
    assert r.cli("HGET", MEMBERS, "@holder") == ""
    assert r.cli("LPOP", WAKE) == "c2"
    # A holder whose lease was pruned is no holder either.
    lease(r, "c3", holder="want")
    holder = r.cli("HGET", MEMBERS, "@holder")
    assert holder.endswith(" c3")
    r.cli("HDEL", MEMBERS, "c3")
    _, e4, _ = lease(r, "c4", holder="want")
    assert r.cli("HGET", MEMBERS, "@holder") == "%d c4" % e4


def test_write_fenced(redis):
    r = redis
    _, e1, _ = lease(r, "sb1")
    _, e2, _ = lease(r, "sb2")
    # Not a member (or an old epoch): refused, nothing written.
    assert write(r, "sb3", 9).startswith("FENCED lease")
    assert write(r, "sb1", e1 + 100).startswith("FENCED lease")
    assert r.cli("EXISTS", USER) == "0" and xlen(r) == 0
    assert write(r, "sb1", e1) == "1"
    assert r.cli("HGET", USER, "owner") == "%d sb1" % e1 and xlen(r) == 1
    # sb2 hands-over writes (no claim) are refused while sb1, alive, owns the user.
    assert write(r, "sb2", e2, claim=0).startswith("FENCED owner %d sb1" % e1)
    # A claim wins; then sb1's writes without claim are refused.
    assert write(r, "sb2", e2, ("state", "ringing", "since", "2000")) == "1"
    assert r.cli("HGET", USER, "owner") == "%d sb2" % e2
    assert write(r, "sb1", e1, ("state", "idle", "since", "3000"), claim=0).startswith(
        "FENCED owner")
    assert r.cli("HGET", USER, "state") == "ringing"
    # Once sb2's lease is gone, a write without claim is taken again.
    r.cli("HDEL", MEMBERS, "sb2")
    assert write(r, "sb1", e1, ("state", "idle", "since", "3000"), claim=0) == "1"
    assert r.cli("HGET", USER, "owner") == "%d sb1" % e1


def test_write_check_and_since(redis):
    r = redis
    _, e1, _ = lease(r, "sb1")
    _, e2, _ = lease(r, "sb2")
    assert write(r, "sb1", e1, ("state", "on_call", "since", "1000", "dir", "in")) == "1"
    # Same state from another writer: the since Redis holds is kept.
    assert write(r, "sb2", e2, ("state", "on_call", "since", "5000", "dir", "out")) == "1"
    assert r.cli("HGET", USER, "since") == "1000"
    last = r.cli("XREVRANGE", EVENTS, "+", "-", "COUNT", "1").splitlines()
    assert "1000" in last and "5000" not in last
    # check: the same fields change nothing (no event); another owner is named anyway.
    n = xlen(r)
    assert write(r, "sb1", e1, ("state", "on_call", "since", "7000", "dir", "out"),
                 mode="check") == "0"
    assert xlen(r) == n and r.cli("HGET", USER, "owner") == "%d sb1" % e1
    # check with something else: written, with an event.
    assert write(r, "sb1", e1, ("state", "idle", "since", "8000"), mode="check") == "1"
    assert xlen(r) == n + 1 and r.cli("HGET", USER, "since") == "8000"
    # A removal.
    assert write(r, "sb1", e1, ()) == "1"
    assert r.cli("EXISTS", USER) == "0"
    assert "removed" in r.cli("XREVRANGE", EVENTS, "+", "-", "COUNT", "1")


def test_scripts_at_maxmemory(redis):
    """Redis full (maxmemory, noeviction): a lease is still joined, renewed, taken as the
    holder and left, and a check that only re-owns a user still does, as the other scripts
    (storecodec.h). Before, Redis refused the lease's first write (INCR, HSET) with OOM: a
    component started then never became active, a sipbridge never held users."""
    r = redis
    st, e1, _ = lease(r, "sb1")
    fields = ("state", "idle", "since", "1000")
    assert write(r, "sb1", e1, fields) == "1"
    r.cli("CONFIG", "SET", "maxmemory", "1")
    assert r.cli("SET", "probe", "x").startswith("OOM")
    st, e2, _ = lease(r, "sb2", holder="want")
    assert st == "joined" and e2 == e1 + 1, st
    assert r.cli("HGET", MEMBERS, "@holder") == "%d sb2" % e2
    st, e, _ = lease(r, "sb1", e1, count=3)
    assert (st, e) == ("renewed", e1), st
    # sb2 claims the user with the state Redis holds: only the owner changes.
    assert write(r, "sb2", e2, fields, mode="check") == "0"
    assert r.cli("HGET", USER, "owner") == "%d sb2" % e2
    st, _, _ = lease(r, "sb2", e2, phase="gone")
    assert st == "left" and r.cli("HEXISTS", MEMBERS, "sb2") == "0"


def rec(state, ts, since=1000):
    return ("state", state, "since", str(since), "ts", str(ts))


def test_write_claim_keeps_close_state_of_live_owner(redis):
    """Handover order (write.lua): the new owner's claim carries a state whose ts is
    within the bound (2 s) of the one its live old owner wrote, older or newer (two
    hosts' receipt times cannot order changes that close): the ownership moves, the held
    state stays, no entry (the client would see ringing -> idle -> ringing), reply 2.
    Before, the claim overwrote it."""
    r = redis
    _, e1, _ = lease(r, "sb1")
    _, e2, _ = lease(r, "sb2")
    t = 1_700_000_000_000_000
    assert write(r, "sb1", e1, rec("ringing", t + 2_000)) == "1"
    n = xlen(r)
    assert write(r, "sb2", e2, rec("idle", t)) == "2"
    assert r.cli("HGET", USER, "owner") == "%d sb2" % e2
    assert r.cli("HGET", USER, "state") == "ringing"
    assert r.cli("HGET", USER, "ts") == str(t + 2_000)
    assert xlen(r) == n
    # The old owner is fenced from then on; the new one's next write (not a claim over
    # another owner any more) is written whatever its ts: its latest state wins.
    assert write(r, "sb1", e1, rec("on_call", t + 3_000), claim=0).startswith("FENCED owner")
    assert write(r, "sb2", e2, rec("ringing", t + 1_000, since=5000)) == "1"
    assert r.cli("HGET", USER, "ts") == str(t + 1_000) and xlen(r) == n + 1
    assert r.cli("HGET", USER, "since") == "1000"   # the same state: its since kept
    # A newer ts within the bound: kept too. A check that claims is ruled the same way.
    _, e3, _ = lease(r, "sb3")
    assert write(r, "sb3", e3, rec("idle", t + 1_001_000), mode="check") == "2"
    assert r.cli("HGET", USER, "owner") == "%d sb3" % e3
    assert r.cli("HGET", USER, "state") == "ringing" and xlen(r) == n + 1
    # Exactly at the bound, either way: still kept.
    assert write(r, "sb1", e1, rec("idle", t + 1_000 - 2_000_000)) == "2"
    assert write(r, "sb3", e3, rec("idle", t + 1_000 + 2_000_000)) == "2"
    assert r.cli("HGET", USER, "state") == "ringing" and xlen(r) == n + 1


def test_write_claim_overwrites_beyond_bound_dead_owner_or_none(redis):
    """Where the rule does not apply, a claim wins as before: its ts more than the bound
    (2 s) older (clock skew or stale data) or newer than the held one, an old owner that
    is dead (pruned, or an epoch it no longer holds), no owner, a removal."""
    r = redis
    _, e1, _ = lease(r, "sb1")
    _, e2, _ = lease(r, "sb2")
    t = 1_700_000_000_000_000
    # Older by more than the bound.
    assert write(r, "sb1", e1, rec("ringing", t + 2_000_001)) == "1"
    n = xlen(r)
    assert write(r, "sb2", e2, rec("idle", t)) == "1"
    assert r.cli("HGET", USER, "state") == "idle" and xlen(r) == n + 1
    assert r.cli("HGET", USER, "owner") == "%d sb2" % e2
    # Newer by more than the bound.
    assert write(r, "sb1", e1, rec("on_call", t + 2_000_001)) == "1"
    assert r.cli("HGET", USER, "state") == "on_call" and xlen(r) == n + 2
    assert r.cli("HGET", USER, "owner") == "%d sb1" % e1
    # The owner (sb1) is dead: its lease pruned. A close claim overwrites.
    r.cli("HDEL", MEMBERS, "sb1")
    assert write(r, "sb2", e2, rec("idle", t + 2_000_000)) == "1"
    assert r.cli("HGET", USER, "state") == "idle" and xlen(r) == n + 3
    assert r.cli("HGET", USER, "owner") == "%d sb2" % e2
    # An owner of an epoch no longer held (it rejoined): as dead.
    _, e1b, _ = lease(r, "sb1")
    r.cli("HSET", USER, "owner", "%d sb1" % e1, "ts", str(t))
    assert write(r, "sb2", e2, rec("ringing", t)) == "1"
    assert r.cli("HGET", USER, "state") == "ringing"
    # No owner (none written yet): overwritten.
    r.cli("HDEL", USER, "owner")
    assert write(r, "sb1", e1b, rec("idle", t)) == "1"
    assert r.cli("HGET", USER, "state") == "idle"
    # A removal claimed over a live owner is never compared.
    assert write(r, "sb2", e2, ()) == "1"
    assert r.cli("EXISTS", USER) == "0"
