"""Issue 17: phone contacts in every roster, with no action of the users' own. The
component writes them ([component] roster = everyone | groups) through XEP-0356's roster
permission on Prosody (mod_privilege, the recipe's [roster] block), and keeps them in step
with the users: a hire, a rename, a move between groups, a leaver. Rosters are checked as
a client sees them: the roster pushes to an online session, a roster fetch, and the
presence of the phone contacts (the server probes them at login; the component holds the
other side of the subscription). Items the component did not write are never touched.

ejabberd's side (its HTTP API, since 23.01 fails privileged roster writes) and the
fallbacks (offhookctl roster) are in test_roster_ejabberd.py and test_roster_fallback.py.
bench/ldap_sync.py --roster-group-size measures the pacing at 10,000 users."""

import signal
import subprocess

from calls import IDLE, ON_CALL
from harness import PbxSim, binary, wait_until
from slapd import Slapd, user_ldif

ROSTER_GRANT = {"recipe_blocks": ("privilege", "roster")}
EVERYONE = "[component]\nroster = everyone\n"
GROUPS = "[component]\nroster = groups\n"
PHONE = "@phone.localhost"
MINUTE = 60
USERS3 = (("alice@localhost", "1001"), ("bob@localhost", "1002"), ("carol@localhost", "1003"))


def item(name, groups=("Desk phones",), subscription="to"):
    """A roster item as roster_view() shows it."""
    return (name, subscription, tuple(sorted(groups)))


def roster_view(w):
    """{phone contact: (name, subscription, groups)} of w's roster as the server has it
    (a roster fetch), phone contacts only."""
    return {j: it.view() for j, it in w.fetch_roster().items() if j.endswith(PHONE)}


def reload(s, users, extra, *daemons):
    s.write_config(users=users, extra=extra)
    for d in daemons or (s.component,):
        d.send_signal(signal.SIGHUP)


def start(stack_factory, users=USERS3, extra=EVERYONE, sipbridge=True, **kw):
    s = stack_factory(users=users, extra_config=extra, prosody_kwargs=ROSTER_GRANT, **kw)
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    return s, pbx


def test_everyone_on_prosody(stack_factory):
    """roster = everyone: every user gets every other user's phone contact, named, in the
    configured group, subscription "to"; an online user by roster pushes, an offline one
    at their next login, where the server's probes bring the phones' state. A hire, a
    rename and a leaver follow on reload; a hire re-sends nobody else's presence."""
    s, pbx = start(stack_factory)
    bob = s.watcher("bob@localhost")          # online before the component comes
    s.start_component()
    s.start_sipbridge(wait_ready=True)
    want = {"alice" + PHONE: item("alice@localhost (phone)"),
            "carol" + PHONE: item("carol@localhost (phone)")}
    wait_until(lambda: roster_view(bob) == want, what="bob's roster")
    pushed = {p.jid: p.view() for p in bob.roster_pushes()}
    assert pushed == want, pushed
    # The phone contacts' presence flows with nothing subscribed by hand.
    wait_until(lambda: bob.last("alice" + PHONE) == IDLE, what="alice's phone shown to bob")
    pbx.set("1001", "on_call")
    wait_until(lambda: bob.last("alice" + PHONE) == ON_CALL, what="alice's call shown to bob")

    # carol was offline: her roster is there at login, and the server probes her items.
    carol = s.watcher("carol@localhost")
    assert roster_view(carol) == {"alice" + PHONE: item("alice@localhost (phone)"),
                                  "bob" + PHONE: item("bob@localhost (phone)")}
    wait_until(lambda: carol.current().get("alice" + PHONE) == ON_CALL,
               what="alice's call shown to carol at login")
    m = s.component.metrics()
    assert m['offhook_roster_writes_total{change="add"}'] == 6
    assert m['offhook_roster_domains{via="xep0356"}'] == 1
    assert m["offhook_roster_pending"] == 0
    assert "event=roster_grant domain=localhost roster=on" in s.component.log()

    # A hire: in every colleague's roster, their desk phone's state with it. The reload
    # reads the hire alone: nobody else's presence is sent again.
    alice_seen = len(bob.seen("alice" + PHONE))
    s.xmpp.register("dave", "pw")
    users4 = USERS3 + (("dave@localhost", "1004"),)
    reload(s, users4, EVERYONE, s.component, s.sipbridge)
    wait_until(lambda: "dave" + PHONE in roster_view(bob), timeout=MINUTE,
               what="the hire in bob's roster")
    wait_until(lambda: any(p.jid == "dave" + PHONE for p in carol.roster_pushes()),
               what="the hire pushed to carol")
    pbx.set("1004", "on_call")
    wait_until(lambda: bob.last("dave" + PHONE) == ON_CALL, what="the hire's call shown")
    assert len(bob.seen("alice" + PHONE)) == alice_seen, bob.seen("alice" + PHONE)
    assert s.component.log().count("event=synced") == 1
    assert "event=users_read users=1" in s.component.log()

    # A new name: the item renamed in the rosters (and the presence's <nick/>).
    reload(s, users4, EVERYONE + "[user dave@localhost]\nname = Dave Smith\n")
    wait_until(lambda: roster_view(bob).get("dave" + PHONE) == item("Dave Smith (phone)"),
               what="the rename in bob's roster")
    assert [p.view() for p in bob.roster_pushes("dave" + PHONE)][-1] == \
        item("Dave Smith (phone)")

    # A leaver: out of every roster (a push to those online), and what offhook had written
    # into the leaver's own roster goes too.
    reload(s, (USERS3[0], USERS3[1], users4[3]), EVERYONE + "[user dave@localhost]\n"
           "name = Dave Smith\n", s.component, s.sipbridge)
    wait_until(lambda: "carol" + PHONE not in roster_view(bob), timeout=MINUTE,
               what="the leaver out of bob's roster")
    assert bob.roster_pushes("carol" + PHONE)[-1].subscription == "remove"
    wait_until(lambda: roster_view(carol) == {}, what="the leaver's own roster emptied")
    wait_until(lambda: bob.last("carol" + PHONE) == ("unavailable", "", ""),
               what="the leaver's phone gone")
    # The record goes once the removals are answered, which may be after the presence.
    wait_until(lambda: s.redis.cli("EXISTS", "offhook:roster:carol@localhost") == "0",
               what="the leaver's roster record gone from Redis")
    assert "carol@localhost" not in s.redis.cli("SMEMBERS", "offhook:rosters").split()


def test_users_own_items_are_left_alone(stack_factory):
    """Items offhook did not write are never touched: a phone contact a user had added
    themselves (named their way, in their group), a chat contact, and one of offhook's
    that the user took out of their roster (it is not put back)."""
    s, pbx = start(stack_factory, extra="")
    s.start_component()
    bob = s.watcher("bob@localhost")
    # bob's own: carol's phone, named and grouped his way, subscribed by him; a colleague.
    assert bob.set_roster_item("carol" + PHONE, "Carol's desk", ["Mine"]) == "result"
    bob.subscribe("carol" + PHONE)
    wait_until(lambda: roster_view(bob).get("carol" + PHONE) ==
               item("Carol's desk", ["Mine"]), what="bob's own item subscribed")
    assert bob.set_roster_item("alice@localhost", "Alice", ["Friends"]) == "result"
    own_pushes = len(bob.roster_pushes("carol" + PHONE))

    reload(s, USERS3, EVERYONE)
    wait_until(lambda: "alice" + PHONE in roster_view(bob), what="offhook's item for alice")
    wait_until(lambda: s.component.metrics().get("offhook_roster_pending") == 0,
               what="the pass done")
    assert roster_view(bob)["carol" + PHONE] == item("Carol's desk", ["Mine"])
    assert len(bob.roster_pushes("carol" + PHONE)) == own_pushes
    assert s.redis.cli("HGET", "offhook:roster:bob@localhost", "carol" + PHONE) == "-own"
    assert bob.fetch_roster()["alice@localhost"].view() == ("Alice", "none", ("Friends",))

    # bob takes offhook's item for alice out: it stays out, whatever offhook re-checks.
    assert bob.set_roster_item("alice" + PHONE, remove=True) == "result"
    wait_until(lambda: s.redis.cli("HGET", "offhook:roster:bob@localhost", "alice" + PHONE)
               == "-declined", what="the removal remembered")
    out = subprocess.run([binary("offhookctl"), "-c", s.config, "resync"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    wait_until(lambda: s.component.log().count("event=roster_pass") == 2, what="a second pass")
    wait_until(lambda: s.component.metrics().get("offhook_roster_pending") == 0,
               what="the second pass done")
    assert "alice" + PHONE not in roster_view(bob)

    # carol leaves: bob's own item for her phone stays as he made it.
    reload(s, USERS3[:2], EVERYONE)
    wait_until(lambda: "event=users_changed added=0 removed=1" in s.component.log(),
               what="carol gone")
    wait_until(lambda: s.component.metrics().get("offhook_roster_pending") == 0,
               what="the leaver's pass done")
    assert roster_view(bob) == {"carol" + PHONE: item("Carol's desk", ["Mine"])}
    assert bob.fetch_roster()["alice@localhost"].view() == ("Alice", "none", ("Friends",))


def test_over_the_limit_nothing_is_added(stack_factory):
    """roster = everyone on a domain with more users than roster_max_items: refused with
    one clear line, counted, and no roster is touched."""
    s, pbx = start(stack_factory, extra=EVERYONE + "roster_max_items = 1\n")
    s.start_component()
    bob = s.watcher("bob@localhost")
    wait_until(lambda: "event=roster_synced" in s.component.log(), what="the first pass")
    lines = [ln for ln in s.component.log().splitlines() if "event=roster_over_limit" in ln]
    assert len(lines) == 1 and "users=3" in lines[0] and "level=err" in lines[0], lines
    assert s.component.metrics()["offhook_roster_users_over_limit"] == 3
    assert roster_view(bob) == {}
    assert s.component.metrics().get('offhook_roster_writes_total{change="add"}') == 0


def test_groups_from_the_directory_on_prosody(stack_factory):
    """The issue's "Done when", on Prosody: source = ldap and roster = groups. A user added
    to the directory appears in the right colleagues' rosters (and not the others') and
    shows their desk phone's state within a minute, nothing edited by hand; a colleague
    offline meanwhile finds them at login. A move to another group and a leaver follow."""
    s = stack_factory(users=(), prosody_kwargs=ROSTER_GRANT,
                      chat_users=("alice", "bob", "carol", "dave"))
    slapd = s.add(Slapd(s.dir))
    slapd.load(user_ldif("alice", ext="1001", name="Alice Jones", groups=("Sales",)) + "\n" +
               user_ldif("bob", ext="1002", groups=("Sales", "Support")) + "\n" +
               user_ldif("carol", ext="1003", groups=("Support",)))
    slapd.start()
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.write_config(users=(), extra=GROUPS + slapd.offhook_config(s.pbx_port))
    s.start_component()
    s.start_sipbridge(wait_ready=True)
    bob = s.watcher("bob@localhost")
    wait_until(lambda: roster_view(bob) == {
        "alice" + PHONE: item("Alice Jones (phone)", ["Sales"]),
        "carol" + PHONE: item("Carol (phone)", ["Support"])}, what="bob's roster")
    carol = s.watcher("carol@localhost")
    assert roster_view(carol) == {"bob" + PHONE: item("Bob (phone)", ["Support"])}
    carol.close()

    # dave joins Sales in the directory: alice (offline) and bob get him, carol does not.
    slapd.add_user("dave", ext="1004", name="Dave Brown", groups=("Sales",))
    wait_until(lambda: roster_view(bob).get("dave" + PHONE) == item("Dave Brown (phone)",
                                                                     ["Sales"]),
               timeout=MINUTE, what="the hire in bob's roster")
    pbx.set("1004", "on_call")
    wait_until(lambda: bob.last("dave" + PHONE) == ON_CALL, timeout=MINUTE,
               what="the hire's desk phone shown to bob")
    alice = s.watcher("alice@localhost")
    assert roster_view(alice) == {"bob" + PHONE: item("Bob (phone)", ["Sales"]),
                                  "dave" + PHONE: item("Dave Brown (phone)", ["Sales"])}
    wait_until(lambda: alice.current().get("dave" + PHONE) == ON_CALL,
               what="the hire's state at alice's login")
    dave = s.watcher("dave@localhost")
    assert roster_view(dave) == {"alice" + PHONE: item("Alice Jones (phone)", ["Sales"]),
                                 "bob" + PHONE: item("Bob (phone)", ["Sales"])}
    carol = s.watcher("carol@localhost")
    assert "dave" + PHONE not in roster_view(carol)

    # dave moves to Support: out of alice's roster, into carol's, regrouped in bob's.
    slapd.modify("dave", [("replace", "ou", ["Support"])])
    wait_until(lambda: roster_view(carol).get("dave" + PHONE) ==
               item("Dave Brown (phone)", ["Support"]), timeout=MINUTE,
               what="the move in carol's roster")
    wait_until(lambda: "dave" + PHONE not in roster_view(alice), what="out of alice's roster")
    wait_until(lambda: roster_view(bob).get("dave" + PHONE) ==
               item("Dave Brown (phone)", ["Support"]), what="regrouped in bob's roster")
    wait_until(lambda: carol.current().get("dave" + PHONE) == ON_CALL,
               what="dave's state shown to carol")
    assert roster_view(dave) == {"bob" + PHONE: item("Bob (phone)", ["Support"]),
                                 "carol" + PHONE: item("Carol (phone)", ["Support"])}

    # dave leaves the directory: out of every roster.
    slapd.delete("dave")
    wait_until(lambda: all("dave" + PHONE not in roster_view(w) for w in (bob, carol)),
               timeout=MINUTE, what="the leaver out of the rosters")
    errors = {k: v for k, v in s.component.metrics().items()
              if k.startswith("offhook_roster_write_errors_total") and v}
    assert not errors, errors
