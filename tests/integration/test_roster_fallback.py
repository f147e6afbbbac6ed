"""Issue 17's fallback where the server grants no roster writes: offhookctl roster writes
the same rosters as the server's own shared roster. For Prosody, a mod_groups file (the
recipe loads mod_groups with it): each user gets the phone contacts the component would
have written, named and grouped alike, subscription "both"; mod_groups cannot leave out
a user's own phone contact, and a group's members also get each other's chat accounts.
The server probes the contacts at login and the phones' state shows. (ejabberd's
commands: test_roster_ejabberd.py.)"""

import os
import subprocess

from harness import binary, offhook_config, wait_until
from test_roster import PHONE, item, roster_view

GROUPED = ("[user alice@localhost]\nname = Alice Jones\ngroups = Sales\n"
           "[user bob@localhost]\ngroups = Sales, Support\n"
           "[user carol@localhost]\ngroups = Support\n")
USERS = (("alice@localhost", "sip:1001@127.0.0.1"), ("bob@localhost", "sip:1002@127.0.0.1"),
         ("carol@localhost", "sip:1003@127.0.0.1"))


def generated(workdir, kind, roster="groups", users=USERS, extra=GROUPED):
    """What offhookctl roster KIND prints for these users: no daemon, no Redis needed."""
    path = os.path.join(workdir, "fallback.conf")
    offhook_config(path, "redis://127.0.0.1:1/0", 5347, 5070, 5060, 9464, 9465, users,
                   extra="[component]\nroster = %s\n%s" % (roster, extra))
    out = subprocess.run([binary("offhookctl"), "-c", path, "roster", kind],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_prosody_groups_file(stack_factory, workdir):
    """roster = groups as a mod_groups file: bob gets alice's phone in Sales and carol's
    in Support, as the component would write them (and his own, which mod_groups
    cannot leave out), and sees their state."""
    text = generated(workdir, "prosody")
    assert text.startswith("[Sales]\nalice@localhost=Alice Jones\n"), text
    s = stack_factory(users=(("alice@localhost", "1001"), ("bob@localhost", "1002"),
                             ("carol@localhost", "1003")),
                      extra_config=GROUPED, prosody_kwargs={"groups": text})
    s.start_component()
    bob = s.watcher("bob@localhost")
    view = roster_view(bob)
    assert view == {"alice" + PHONE: item("Alice Jones (phone)", ["Sales"], "both"),
                    "carol" + PHONE: item("carol@localhost (phone)", ["Support"], "both"),
                    "bob" + PHONE: item("bob@localhost (phone)", ["Sales", "Support"],
                                        "both")}, view
    # The server probes its shared roster's contacts: the component answers.
    wait_until(lambda: set(bob.current()) >= {"alice" + PHONE, "carol" + PHONE},
               what="the phone contacts' presence")
    assert bob.current()["alice" + PHONE] == ("unavailable", "", "Phone status unknown")


def test_prosody_everyone_file(stack_factory, workdir):
    """roster = everyone as one public group of the host's phone contacts: every user
    of the host gets them, and no chat account of anyone."""
    text = generated(workdir, "prosody", roster="everyone", extra="")
    assert text.startswith("[+Desk phones]\n"), text
    s = stack_factory(users=(("alice@localhost", "1001"), ("bob@localhost", "1002"),
                             ("carol@localhost", "1003")),
                      prosody_kwargs={"groups": text})
    s.start_component()
    carol = s.watcher("carol@localhost")
    assert {j: v for j, v in roster_view(carol).items()} == {
        "alice" + PHONE: item("alice@localhost (phone)", subscription="both"),
        "bob" + PHONE: item("bob@localhost (phone)", subscription="both"),
        "carol" + PHONE: item("carol@localhost (phone)", subscription="both")}
    assert not [j for j in carol.fetch_roster() if not j.endswith(PHONE)]
    wait_until(lambda: len(carol.current()) == 3, what="the phone contacts' presence")
