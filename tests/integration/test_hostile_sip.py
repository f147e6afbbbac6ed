"""Issue 15, the SIP side of a hostile network: what one NOTIFY can do to a user's state
when whoever sends it knows (or guesses) the dialog. A source check on NOTIFYs does not
make these moot: over UDP the source address is one more header to forge, and a buggy PBX
sends the same things. So here the sipp PBX itself sends them, in the dialog it made:

- a "Subscription-State: terminated" with retry-after=3600 or reason=rejected: the phone
  shows unknown after [sip] stale_after and is back after [sip] max_backoff at most;
- version="4294967295": the next full state still counts; partial updates that stay stale
  bring a new subscription;
- a body about another user (entity), a PBX granting Expires: 1, a caller's name of 150 x
  "é" (cut on a character boundary, so Prosody keeps the component's stream);
- values from the wire in the log: quoted, so they cannot forge fields; a flood of bad
  bodies: a few lines, each saying how many were held back.

Each test fails on the code before the fix (see docs/reliability.md, section 4)."""

import re

import pytest

from calls import CONTACT, IDLE, ON_CALL, ON_HOLD, RINGING, UNKNOWN, body, notify
from harness import scenario_notify, step_answer_forever, step_respond, wait_until


def start(stack_factory, calls, extra_config="", users=None, watch=(CONTACT,)):
    """Component, watcher bob on the given phone contacts, the scripted PBX, sipbridge.
    Returns (stack, bob)."""
    kw = {"extra_config": extra_config}
    if users:
        kw["users"] = users
    s = stack_factory(**kw)
    s.start_component()
    bob = s.watcher("bob@localhost")
    for c in watch:
        bob.subscribe(c)
    wait_until(lambda: all(bob.views(c) == [UNKNOWN] for c in watch),
               what="initial presence")
    s.start_pbx_script(calls)
    s.start_sipbridge()
    return s, bob


def expect_views(s, bob, views, contact=CONTACT, timeout=20):
    try:
        wait_until(lambda: bob.views(contact) == views, timeout=timeout,
                   what="Bob to see %r" % (views,))
    except TimeoutError:
        raise AssertionError("Bob saw %r, expected %r\n%s" % (bob.views(contact), views,
                                                               s.logs()))


def lines(s, event):
    return [l for l in s.sipbridge.log().splitlines() if "event=%s " % event in l + " "]


# ---- item 2: terminated with a long retry-after, or rejected ------------------------------

def check_terminated_bounded(stack_factory, substate, logged):
    """A NOTIFY ends alice's subscription with substate while she is on the phone: she
    shows unknown once [sip] stale_after (1 s) has passed, not "On the phone" for as long
    as the notifier asked, and a new subscription comes after [sip] max_backoff (4 s) at
    most, which brings her real state back."""
    s, bob = start(stack_factory, [
        [step_respond(expires=3600, initial=True),
         notify("dialog-info/asterisk-inuse.xml", 0),
         notify("dialog-info/asterisk-inuse.xml", 1, pause_ms=300, substate=substate)],
        [step_respond(expires=3600, initial=True),
         notify("dialog-info/asterisk-idle.xml", 0),
         step_answer_forever()],
    ], extra_config="[sip]\nstale_after = 1\nmax_backoff = 4\n")
    expect_views(s, bob, [UNKNOWN, ON_CALL, UNKNOWN, IDLE])
    m = s.sipbridge.metrics()
    assert m["offhook_state_lost_total"] == 1
    assert m['offhook_resubscribes_total{cause="terminated"}'] == 1
    assert m['offhook_subscriptions{state="active"}'] == 1
    (line,) = lines(s, "subscription_terminated")
    assert logged in line and "wait_s=4 " in line, line
    return s


def test_retry_after_is_capped(stack_factory):
    check_terminated_bounded(stack_factory, "terminated;reason=probation;retry-after=3600",
                             "reason=probation retry_after_s=3600")


def test_rejected_waits_at_most_max_backoff(stack_factory):
    check_terminated_bounded(stack_factory, "terminated;reason=rejected",
                             "reason=rejected retry_after_s=-1")


# ---- item 3: versions ---------------------------------------------------------------------

def test_version_4294967295_does_not_freeze_the_phone(stack_factory):
    """After a document of version 4294967295 (valid per the schema), the PBX's own next
    full state (version 2) is applied: alice hangs up and shows available again."""
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-ringing.xml", 1),
        notify("dialog-info/asterisk-inuse.xml", 4294967295),
        notify("dialog-info/asterisk-idle.xml", 2, pause_ms=500),
        step_answer_forever(),
    ]])
    expect_views(s, bob, [UNKNOWN, RINGING, ON_CALL, IDLE])
    m = s.sipbridge.metrics()
    assert m['offhook_version_anomalies_total{kind="jumped"}'] == 1
    assert m['offhook_version_anomalies_total{kind="rewound"}'] == 1
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "idle"
    assert len(lines(s, "version_jumped")) == 1 and len(lines(s, "version_rewound")) == 1


def test_older_notify_in_dialog_is_refused_by_the_stack(stack_factory):
    """What makes "full state applies whatever its version" safe: in one dialog the SIP
    stack answers a NOTIFY whose CSeq is older than the last 500 (RFC 3261 12.2.2), so a
    retransmitted or reordered older full state never reaches the bridge."""
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-inuse.xml", 2, cseq=5),
        notify("dialog-info/asterisk-idle.xml", 1, cseq=4, answer=500),
        notify("dialog-info/asterisk-onhold.xml", 3, cseq=6),
        step_answer_forever(),
    ]])
    expect_views(s, bob, [UNKNOWN, ON_CALL, ON_HOLD])
    assert s.sipbridge.metrics()['offhook_notifies_total{package="dialog"}'] == 2


HANGUP = ('<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
          'version="0" state="partial" entity="sip:1001@pbx.example.com"><dialog id="1001">'
          '<state>terminated</state></dialog></dialog-info>')


def test_stale_partials_bring_a_new_subscription(stack_factory):
    """A PBX that sends only partial updates after a version the count cannot come back
    from: the first stale one is ignored, the second brings a new subscription, whose
    first (full) state is right."""
    s, bob = start(stack_factory, [
        [step_respond(expires=3600, initial=True),
         notify("dialog-info/asterisk-onhold.xml", 5),
         notify("dialog-info/asterisk-inuse.xml", 4294967295),
         scenario_notify(HANGUP, version=6, pause_ms=500),
         scenario_notify(HANGUP, version=7, pause_ms=300),
         step_answer_forever()],
        [step_respond(expires=3600, initial=True),
         notify("dialog-info/asterisk-idle.xml", 0),
         step_answer_forever()],
    ])
    expect_views(s, bob, [UNKNOWN, ON_HOLD, ON_CALL, IDLE])
    m = s.sipbridge.metrics()
    assert m["offhook_stale_notifies_total"] == 2
    assert m['offhook_resubscribes_total{cause="stale_versions"}'] == 1
    assert m["offhook_subscribe_sent_total"] == 2
    assert len(lines(s, "resubscribe_for_versions")) == 1


# ---- item 12: entity, and a floor on granted expiry ---------------------------------------

def test_body_about_another_user_is_refused(stack_factory):
    """A body in alice's dialog naming 1002 as its entity (a PBX bug, or a forger's) does
    not make alice's phone "On the phone"; her own next body (an entity at another host,
    as Asterisk writes it) is applied."""
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-inuse.xml", 0, ext="1002"),
        notify("dialog-info/asterisk-ringing.xml", 1, pause_ms=500),
        step_answer_forever(),
    ]])
    expect_views(s, bob, [UNKNOWN, RINGING])
    m = s.sipbridge.metrics()
    assert m['offhook_body_errors_total{reason="wrong_entity"}'] == 1
    (line,) = [l for l in lines(s, "body_rejected") if "wrong_entity" in l or "entity=" in l]
    assert "entity=sip:1002@pbx.example.com " in line and "user=alice@localhost" in line


def test_short_expiry_is_warned_once_per_notifier(stack_factory):
    """A PBX granting Expires: 1 to both users' subscriptions: counted for each, one
    warning line for the PBX, and both phones still right."""
    users = (("alice@localhost", "1001"), ("carol@localhost", "1003"))
    dialog = lambda ext: [  # noqa: E731
        step_respond(expires=1, initial=True),
        notify("dialog-info/asterisk-inuse.xml", 0, ext=ext, substate="active;expires=30"),
        step_answer_forever(expires=30)]
    s, bob = start(stack_factory, [dialog("1001"), dialog("1003")], users=users,
                   watch=(CONTACT, "carol@phone.localhost"))
    expect_views(s, bob, [UNKNOWN, ON_CALL])
    expect_views(s, bob, [UNKNOWN, ON_CALL], contact="carol@phone.localhost")
    assert s.sipbridge.metrics()["offhook_short_expiry_grants_total"] >= 2
    (line,) = lines(s, "short_expiry")
    assert "notifier=127.0.0.1:%d " % s.pbx_port in line and "granted_s=1 " in line, line


def subscribes_seen(pbx):
    """Every SUBSCRIBE the PBX has received: new, refresh, un-SUBSCRIBE, fetch, and those
    it answered 481 (a dialog it had ended)."""
    st = pbx.stats()
    return sum(int(st[k]) for k in ("subscribes", "refreshes", "unsubscribes", "fetches",
                                    "unknown_dialog"))


@pytest.mark.parametrize("expire", [True, False], ids=["pbx-ends-lapsed", "pbx-keeps-lapsed"])
def test_short_grants_are_paced_by_min_expires(stack_factory, expire):
    """pbxsim granting Expires: 1 to three users, with [sip] min_expires = 10. With expire,
    it ends each subscription not refreshed within that second (NOTIFY terminated;
    reason=timeout, as RFC 6665 4.2.2 has a notifier do); without, it keeps the dialog.
    Over 15 s each subscription sends at most two SUBSCRIBEs (one per 10 s: the code
    before sent one per second per user, or one per ~2 s re-subscribing after each
    timeout) and at least one (the floor paces, it does not stop); one short_expiry line
    for the PBX; every grant counted; and a call made while alice's grant has lapsed shows
    at most a floor later, with no "unknown" in between (stale_after is 60 s)."""
    import time
    from harness import PbxSim
    n, floor, window = 3, 10, 15.0
    users = tuple(("u%d@localhost" % i, str(3000 + i)) for i in range(n))
    s = stack_factory(users=users, extra_config="[sip]\nmin_expires = %d\n" % floor)
    pbx = s.add(PbxSim(s.dir, s.pbx_port, expires=1, expire=expire)).start()
    s.start_component()
    bob = s.watcher("bob@localhost")
    contacts = ["u%d@phone.localhost" % i for i in range(n)]
    for c in contacts:
        bob.subscribe(c)
    wait_until(lambda: all(bob.views(c) == [UNKNOWN] for c in contacts),
               what="initial presence")
    s.start_sipbridge()
    wait_until(lambda: all(bob.last(c) == IDLE for c in contacts), timeout=20,
               what="every phone idle")
    t0, before = time.monotonic(), subscribes_seen(pbx)
    # The window: the PBX's count is watched all along, never above the floor's worth.
    bound = n * (int(window // floor) + 1)
    if expire:
        # The call comes once alice's grant has ended at the PBX: only her next
        # SUBSCRIBE can bring it.
        wait_until(lambda: int(pbx.stats()["expired"]) >= n or
                   subscribes_seen(pbx) - before > bound, what="the grants to lapse")
    pbx.set("3000", "on_call")
    wait_until(lambda: subscribes_seen(pbx) - before > bound or
               time.monotonic() - t0 >= window, timeout=window + 5, what="the window")
    sent = subscribes_seen(pbx) - before
    assert n <= sent <= bound, (sent, pbx.stats(), s.sipbridge.log()[-3000:])
    wait_until(lambda: bob.last(contacts[0]) == ON_CALL, timeout=floor + 5,
               what="alice's call to show")
    assert bob.views(contacts[0]) == [UNKNOWN, IDLE, ON_CALL]
    assert all(bob.last(c) == IDLE for c in contacts[1:])
    m = s.sipbridge.metrics()
    assert m["offhook_short_expiry_grants_total"] >= 2 * n
    (line,) = lines(s, "short_expiry")
    assert ("notifier=127.0.0.1:%d package=dialog granted_s=1 floor_s=%d "
            % (s.pbx_port, floor)) in line, line
    log = s.sipbridge.log()
    assert "level=warning sub=sip event=subscription_terminated" not in log
    assert "event=subscription_silent" not in log


# ---- item 5: a caller's name cut on a character boundary ----------------------------------

def test_long_caller_name_keeps_the_component_online(stack_factory):
    """150 x "é" as the caller's name, with [privacy] show_remote_party on: Bob sees the
    name cut to 63 whole characters (126 bytes; "Name <uri>" would not fit, so the name
    alone), and the component's stream to Prosody is never closed."""
    name = "\u00e9" * 150
    ringing = body("dialog-info/asterisk-ringing.xml").replace('display="Bob Smith"',
                                                              'display="%s"' % name)
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        scenario_notify(ringing, version=1, pause_ms=300),
        notify("dialog-info/asterisk-idle.xml", 2, pause_ms=1500),
        step_answer_forever(),
    ]], extra_config="[privacy]\nshow_remote_party = yes\n")
    shown = ("available", "", "Ringing: call from " + "\u00e9" * 63)
    expect_views(s, bob, [UNKNOWN, shown, IDLE])
    cm = s.component.metrics()
    assert sum(v for k, v in cm.items() if k.startswith("offhook_xmpp_disconnects_total")) == 0
    assert s.redis.cli("XRANGE", "offhook:events", "-", "+").count("\u00e9" * 63 + "\n") == 1


# ---- item 9: values from the wire in the log, and floods of log lines ---------------------

def logfmt(line):
    """[(key, value)] of one key=value line, with logfmt's quoting rules."""
    return [(m.group(1), m.group(3) if m.group(3) is not None else m.group(2))
            for m in re.finditer(r'(\w+)=("((?:[^"\\]|\\.)*)"|\S*)', line)]


def test_reason_phrase_cannot_forge_log_fields(stack_factory):
    """A reason phrase with a quote and fields of its own stays one quoted value: a logfmt
    reader of sipbridge's line finds event=subscribe_error and the phrase, and no field
    the phrase tried to add."""
    forged = 'Nope" level=error event=fake_secret_dump x="'
    s, bob = start(stack_factory, [[step_respond("403 %s" % forged, initial=True)]])
    wait_until(lambda: lines(s, "subscribe_error"), what="the 403 logged")
    (line,) = lines(s, "subscribe_error")
    fields = logfmt(line)
    assert ("event", "subscribe_error") in fields and ("status", "403") in fields, line
    assert ("phrase", forged.replace('"', '\\"')) in fields, line
    assert not any(v == "fake_secret_dump" for k, v in fields), line
    assert [k for k, v in fields].count("level") == 1, line


def test_bad_body_flood_logs_a_few_lines(stack_factory):
    """40 rejected bodies alternating between two faults (once a minute per fault let each
    of them through before): at most the gate's burst of lines, every body counted, the
    count of the held-back lines in the next line, and the state right at the end."""
    bad = [body("hostile/billion-laughs.xml"), body("hostile/truncated.xml")]
    flood = [scenario_notify(bad[i % 2], version=i + 1, pause_ms=0) for i in range(40)]
    s, bob = start(stack_factory, [
        [step_respond(expires=3600, initial=True)] + flood +
        [notify("dialog-info/asterisk-inuse.xml", 41, pause_ms=100), step_answer_forever()],
    ], extra_config="[sip]\nnotify_rate = 1000\n")
    expect_views(s, bob, [UNKNOWN, ON_CALL])
    m = s.sipbridge.metrics()
    assert (m['offhook_body_errors_total{reason="dtd_not_allowed"}'] +
            m['offhook_body_errors_total{reason="not_well_formed"}']) == 40
    assert 1 <= len(lines(s, "body_rejected")) <= 6, lines(s, "body_rejected")
