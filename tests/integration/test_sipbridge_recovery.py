"""Issue 3: subscriptions never silently die. sipp plays a PBX that challenges, forgets a
dialog (481), answers 408, deactivates a subscription, skips versions, or stops notifying;
each time sipbridge must recover and Bob's client must end on the phone's real state."""

import os

from calls import CONTACT, IDLE, ON_CALL, ON_HOLD, RINGING, UNKNOWN, body, notify
from harness import step_answer_forever, step_recv, step_respond, wait_until


def start(stack_factory, calls, extra_config="", npbx=None):
    """Component + watcher bob subscribed to alice's contact, then the scripted PBX and
    sipbridge. Returns (stack, bob)."""
    s = stack_factory(extra_config=extra_config)
    s.start_component()
    bob = s.watcher("bob@localhost")
    bob.subscribe(CONTACT)
    wait_until(lambda: bob.views(CONTACT) == [UNKNOWN], what="initial presence")
    from harness import SippPbx, sipp_pbx_script
    s.pbx = SippPbx(s.dir, sipp_pbx_script(calls, s.dir), port=s.pbx_port)
    s.pbx.start(calls=npbx or len(calls))
    s.start_sipbridge()
    return s, bob


def expect_views(s, bob, views, timeout=20):
    try:
        wait_until(lambda: bob.views(CONTACT) == views, timeout=timeout,
                   what="Bob to see %r" % (views,))
    except TimeoutError:
        raise AssertionError("Bob saw %r, expected %r\n%s" % (bob.views(CONTACT), views,
                                                               s.logs()))


def test_digest_challenge(stack_factory):
    s, bob = start(stack_factory, [[
        step_respond("401 Unauthorized", initial=True, headers=(
            'WWW-Authenticate: Digest realm="pbx.example.com", nonce="[pid]n[call_number]", '
            'algorithm=MD5',)),
        step_recv(auth=("offhook", "secret")),
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-inuse.xml", 1),
        step_answer_forever(),
    ]], extra_config="[sip]\nusername = offhook\npassword = secret\n")
    expect_views(s, bob, [UNKNOWN, ON_CALL])
    m = s.sipbridge.metrics()
    assert m['offhook_sip_auth_challenges_total{outcome="answered"}'] == 1
    # The password never reaches the log, whatever the level (debug here).
    assert "secret" not in s.sipbridge.log()


def test_wrong_password_is_reported(stack_factory):
    s, bob = start(stack_factory, [[
        step_respond("401 Unauthorized", initial=True, headers=(
            'WWW-Authenticate: Digest realm="pbx.example.com", nonce="abc", algorithm=MD5',)),
        step_recv(auth=("offhook", "secret")),
    ]], extra_config="[sip]\nusername = offhook\npassword = not-the-secret\n")
    wait_until(lambda: s.sipbridge.metrics().get(
        'offhook_resubscribes_total{cause="error_response"}', 0) == 1, what="403 counted")
    assert "event=subscribe_error" in s.sipbridge.log() and "status=403" in s.sipbridge.log()
    assert s.sipbridge.metrics()['offhook_subscriptions{state="backoff"}'] == 1
    assert bob.views(CONTACT) == [UNKNOWN]


# The first dialog's grant: short enough to be refreshed soon (at 8 s), not below
# [sip] min_expires, set to its lowest (10) here: a shorter grant is let lapse, never
# refreshed (test_hostile_sip.py, test_short_grants_are_paced_by_min_expires). No
# notifier probes: one (an in-dialog refresh too) would come first, at 5 s, and meet the
# failure meant for the stack's own refresh.
GRANT = 10


def recovery(stack_factory, first_call_tail, cause):
    """A first dialog that shows ringing and then fails as first_call_tail says; the
    second dialog must bring the user on the phone."""
    s, bob = start(stack_factory, [
        [step_respond(expires=GRANT, initial=True),
         notify("dialog-info/asterisk-ringing.xml", 0, substate="active;expires=%d" % GRANT)]
        + first_call_tail,
        [step_respond(expires=3600, initial=True), notify("dialog-info/asterisk-inuse.xml", 0),
         step_answer_forever()],
    ], extra_config="[sip]\nmin_expires = %d\nprobe_interval = 0\n" % GRANT)
    # Silence is noticed 15 s after the grant (its half again past it).
    expect_views(s, bob, [UNKNOWN, RINGING, ON_CALL], timeout=30)
    m = s.sipbridge.metrics()
    assert m['offhook_resubscribes_total{cause="%s"}' % cause] == 1
    assert m['offhook_subscriptions{state="active"}'] == 1
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "on_call"
    return s


def test_481_on_refresh(stack_factory):
    """The PBX forgot the dialog (it restarted): every subscription to it is redone."""
    s = recovery(stack_factory, [step_recv(), step_respond("481 Subscription does not exist")],
                 "notifier_lost")
    assert "event=notifier_lost notifier=127.0.0.1:%d" % s.pbx_port in s.sipbridge.log()
    assert s.sipbridge.metrics()["offhook_notifier_lost_total"] == 1


def test_408_on_refresh(stack_factory):
    s = recovery(stack_factory, [step_recv(), step_respond("408 Request Timeout")], "timeout")
    assert "status=408" in s.sipbridge.log()


def test_probe_spares_a_dialog_just_heard_from(stack_factory):
    """The notifier probe skips a subscription the PBX answered or notified within the
    last second. Here the probe runs every second and the scripted PBX notifies every
    ~0.5 s for 2.5 s, answering nothing else: a probe in that time would make sipp abort
    the dialog (and did: CI, test_408_on_refresh, a probe 11 ms after the 200). Once the
    PBX goes quiet, the dialog is probed."""
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-idle.xml", 0, pause_ms=100),
        notify("dialog-info/asterisk-ringing.xml", 1, pause_ms=500),
        notify("dialog-info/asterisk-inuse.xml", 2, pause_ms=500),
        notify("dialog-info/asterisk-onhold.xml", 3, pause_ms=500),
        notify("dialog-info/asterisk-inuse.xml", 4, pause_ms=500),
        notify("dialog-info/asterisk-idle.xml", 5, pause_ms=500),
        step_answer_forever(),
    ]], extra_config="[sip]\nprobe_interval = 1\n")
    expect_views(s, bob, [UNKNOWN, IDLE, RINGING, ON_CALL, ON_HOLD, ON_CALL, IDLE])
    assert "Aborting call" not in s.pbx.proc.log()
    wait_until(lambda: s.sipbridge.metrics().get(
        'offhook_notifier_probes_total{result="ok"}', 0) >= 1, what="a probe of the quiet dialog")
    assert s.sipbridge.metrics()['offhook_subscriptions{state="active"}'] == 1


def test_503_on_refresh(stack_factory):
    """An overloaded PBX (503, no Retry-After) on refresh: the subscription is made
    again. (With Retry-After, Sofia's nua retries the refresh by itself.)"""
    s = recovery(stack_factory, [step_recv(), step_respond("503 Service Unavailable")],
                 "error_response")
    assert "status=503" in s.sipbridge.log()


def test_proxy_auth_challenge(stack_factory):
    """407 from an outbound proxy: answered with Proxy-Authorization, like a 401. (sipp's
    verifyauth reads only Authorization, so the digest is checked here, from sipp's
    message trace.)"""
    import glob
    import hashlib
    import re
    s, bob = start(stack_factory, [[
        step_respond("407 Proxy Authentication Required", initial=True, headers=(
            'Proxy-Authenticate: Digest realm="pbx.example.com", nonce="[pid]p[call_number]", '
            'algorithm=MD5',)),
        step_recv(),
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-inuse.xml", 1),
        step_answer_forever(),
    ]], extra_config="[sip]\nusername = offhook\npassword = secret\n")
    expect_views(s, bob, [UNKNOWN, ON_CALL])
    assert s.sipbridge.metrics()['offhook_sip_auth_challenges_total{outcome="answered"}'] == 1
    assert "secret" not in s.sipbridge.log()
    trace = open(glob.glob(os.path.join(s.dir, "*.messages"))[0]).read()
    auth = re.search(r"Proxy-Authorization: Digest (.*)", trace).group(1)
    f = dict(re.findall(r'(\w+)="([^"]*)"', auth))
    md5 = lambda x: hashlib.md5(x.encode()).hexdigest()  # noqa: E731
    want = md5("%s:%s:%s" % (md5("offhook:%s:secret" % f["realm"]), f["nonce"],
                             md5("SUBSCRIBE:%s" % f["uri"])))
    assert f["username"] == "offhook" and f["response"] == want, auth


def test_terminated_deactivated(stack_factory):
    s = recovery(stack_factory, [
        notify("dialog-info/asterisk-ringing.xml", 1,
               substate="terminated;reason=deactivated"),
        step_answer_forever()], "terminated")
    assert "reason=deactivated" in s.sipbridge.log()


def test_notifier_goes_silent(stack_factory):
    """Answers refreshes but sends no NOTIFY after the first (Asterisk's stale
    subscriptions): the watchdog rebuilds the subscription."""
    s = recovery(stack_factory, [step_answer_forever(expires=GRANT)], "silence")
    assert "event=subscription_silent" in s.sipbridge.log()


def test_version_gap_asks_for_full_state(stack_factory):
    """A partial update that skips versions: sipbridge re-SUBSCRIBEs in the dialog and the
    full state that follows is applied."""
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        notify("dialog-info/two-dialogs-one-held.xml", 10),
        notify("dialog-info/partial-terminated.xml", 13),   # 11 and 12 went missing
        step_recv(),                                         # the refresh it asks for
        step_respond(expires=3600),
        notify("dialog-info/asterisk-onhold.xml", 14),
        step_answer_forever(),
    ]])
    expect_views(s, bob, [UNKNOWN, ON_CALL, ON_HOLD])
    assert s.sipbridge.metrics()['offhook_resubscribes_total{cause="version_gap"}'] == 1


def test_too_many_dialogs_asks_for_full_state(stack_factory):
    """A PBX that only ever adds dialogs in partial updates (and never ends them): past
    MERGE_MAX_DIALOGS (64) the next one is dropped, counted and logged, and sipbridge asks
    for full state, which replaces the whole set."""
    from harness import scenario_notify
    partial = ('<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
               'version="1" state="partial" entity="sip:1001@pbx.example.com"><dialog '
               'id="x%d" direction="recipient"><state>confirmed</state></dialog></dialog-info>')
    steps = [step_respond(expires=3600, initial=True),
             notify("dialog-info/asterisk-idle.xml", 1)]
    steps += [scenario_notify(partial % i, version=2 + i, pause_ms=20) for i in range(65)]
    steps += [step_recv(),                               # the refresh it asks for
              step_respond(expires=3600),
              notify("dialog-info/asterisk-onhold.xml", 67),
              step_answer_forever()]
    s, bob = start(stack_factory, [steps], extra_config="[sip]\nnotify_rate = 1000\n")
    wait_until(lambda: bob.last(CONTACT) == ON_HOLD, timeout=30, what="the full state applied")
    m = s.sipbridge.metrics()
    assert m['offhook_body_errors_total{reason="too_many"}'] == 1
    assert m['offhook_resubscribes_total{cause="version_gap"}'] == 1
    assert s.sipbridge.log().count("event=dialogs_dropped user=alice@localhost") == 1
    assert ON_CALL in bob.views(CONTACT)


STALE_HANGUP = ('<?xml version="1.0"?>\n<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" '
                'version="4" state="partial" entity="sip:1001@pbx.example.com"><dialog '
                'id="1001"><state>terminated</state></dialog></dialog-info>')


def test_stale_and_bad_bodies_change_nothing(stack_factory):
    """A partial update older than the last document is ignored (a full state is applied
    whatever its version: test_hostile_sip), and so is every hostile body."""
    from harness import scenario_notify
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-inuse.xml", 5),
        scenario_notify(STALE_HANGUP, version=4, pause_ms=100),  # stale: older version
        notify("hostile/billion-laughs.xml", 6),
        notify("hostile/xxe-file.xml", 7),
        notify("hostile/truncated.xml", 8),
        notify("hostile/unknown-state.xml", 9),
        notify("hostile/wrong-namespace.xml", 10),
        notify("dialog-info/asterisk-onhold.xml", 11),
        step_answer_forever(),
    ]])
    expect_views(s, bob, [UNKNOWN, ON_CALL, ON_HOLD])
    m = s.sipbridge.metrics()
    assert m["offhook_stale_notifies_total"] == 1
    assert m['offhook_body_errors_total{reason="wrong_document"}'] == 1
    assert m['offhook_body_errors_total{reason="dtd_not_allowed"}'] == 2
    assert m['offhook_body_errors_total{reason="not_well_formed"}'] == 1
    assert m['offhook_body_errors_total{reason="invalid_content"}'] == 1
    log = s.sipbridge.log()
    assert "event=body_rejected user=alice@localhost" in log
    assert "root:" not in log  # /etc/passwd never read, never logged


def test_freeswitch_call(stack_factory):
    calls = ["freeswitch-idle.xml", "freeswitch-ringing.xml", "freeswitch-answered.xml",
             "freeswitch-held.xml", "freeswitch-answered.xml", "freeswitch-hangup.xml"]
    s, bob = start(stack_factory, [
        [step_respond(expires=3600, initial=True)]
        + [notify("freeswitch/" + f, i) for i, f in enumerate(calls)]
        + [step_answer_forever()]])
    expect_views(s, bob, [UNKNOWN, IDLE, RINGING, ON_CALL, ON_HOLD, ON_CALL, IDLE])


def padded(rel, size):
    """A fixture grown past size bytes with white space (still valid XML)."""
    text = body(rel)
    return text.replace("</dialog-info>", " " * size + "</dialog-info>")


def test_body_over_size_limit(stack_factory):
    """[sip] max_body: a larger body is refused before parsing, counted, state kept."""
    from harness import scenario_notify
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-inuse.xml", 1),
        scenario_notify(padded("dialog-info/asterisk-idle.xml", 2000), version=2,
                        pause_ms=100),
        notify("dialog-info/asterisk-onhold.xml", 3),
        step_answer_forever(),
    ]], extra_config="[sip]\nmax_body = 1024\n")
    expect_views(s, bob, [UNKNOWN, ON_CALL, ON_HOLD])
    assert s.sipbridge.metrics()['offhook_body_errors_total{reason="too_large"}'] == 1


def test_notify_flood_is_throttled(stack_factory):
    """One dialog floods 100 NOTIFYs back to back (sipp reads scenarios up to 64 KiB): sipbridge applies at most notify_rate
    per second (bursts of twice that), keeps only the newest of the rest, stays up, and
    ends on the last state sent."""
    from harness import scenario_notify
    inuse, ringing = body("dialog-info/asterisk-inuse.xml"), body("dialog-info/asterisk-ringing.xml")
    flood = [scenario_notify(ringing if i % 2 else inuse, version=i, pause_ms=0)
             for i in range(1, 100)]
    s, bob = start(stack_factory, [[step_respond(expires=3600, initial=True)] + flood + [
        notify("dialog-info/asterisk-onhold.xml", 100, pause_ms=0),
        step_answer_forever(),
    ]], extra_config="[sip]\nnotify_rate = 10\n")
    wait_until(lambda: bob.last(CONTACT) == ON_HOLD, timeout=20, what="the last state")
    m = s.sipbridge.metrics()
    assert m['offhook_notifies_total{package="dialog"}'] == 100
    deferred = m.get('offhook_notifies_throttled_total{outcome="deferred"}', 0)
    superseded = m.get('offhook_notifies_throttled_total{outcome="superseded"}', 0)
    assert deferred >= 1 and superseded >= 40, m
    # Applied = received - superseded: bounded by the bucket, not by the flood.
    assert 100 - superseded <= 50
    assert "event=notify_flood aor=" in s.sipbridge.log()
    assert s.sipbridge.alive()
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "on_hold"


def forged_notify(s, to_tag, call_id):
    """Sends sipbridge a NOTIFY of no subscription of its own; returns the answer's
    status line."""
    import socket
    payload = body("dialog-info/asterisk-idle.xml")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    msg = ("NOTIFY sip:offhook@127.0.0.1:%d SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s\r\n"
           "Max-Forwards: 70\r\nFrom: <sip:1001@127.0.0.1>;tag=forged\r\n"
           "To: <sip:offhook@127.0.0.1>%s\r\nCall-ID: %s\r\n"
           "CSeq: 1 NOTIFY\r\nEvent: dialog\r\nSubscription-State: active;expires=60\r\n"
           "Contact: <sip:127.0.0.1>\r\nContent-Type: application/dialog-info+xml\r\n"
           "Content-Length: %d\r\n\r\n%s" % (
               s.sip_port, sock.getsockname()[1], call_id, ";tag=" + to_tag if to_tag else "",
               call_id, len(payload), payload))
    try:
        sock.sendto(msg.encode(), ("127.0.0.1", s.sip_port))
        return sock.recv(65536).decode(errors="replace").split("\r\n")[0]
    finally:
        sock.close()


def test_notify_for_unknown_subscription(stack_factory):
    """NOTIFYs in no subscription of ours (forged, or from before a restart) get 481 and
    change nothing. The SIP stack answers them before offhook sees them, so they are
    not parsed, not counted as NOTIFYs, and cannot touch any state."""
    s, bob = start(stack_factory, [[
        step_respond(expires=3600, initial=True),
        notify("dialog-info/asterisk-inuse.xml", 1),
        step_answer_forever(),
    ]])
    expect_views(s, bob, [UNKNOWN, ON_CALL])
    assert forged_notify(s, None, "forged-1").startswith("SIP/2.0 481")
    assert forged_notify(s, "nosuchdialog", "forged-2").startswith("SIP/2.0 481")
    assert s.sipbridge.metrics()['offhook_notifies_total{package="dialog"}'] == 1
    assert bob.views(CONTACT) == [UNKNOWN, ON_CALL]
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "on_call"
    assert s.sipbridge.alive()


# ---- a PBX that stops answering (issue 13, item 1) -------------------------------------

def pbxsim_watched(stack_factory, n=3, extra=""):
    """n users on pbxsim, probes every second, state void after 3 s down; bob watches
    every phone contact, all shown idle. Returns (stack, pbx, bob, contacts)."""
    from harness import PbxSim
    users = tuple(("u%d@localhost" % i, str(3000 + i)) for i in range(n))
    s = stack_factory(users=users, extra_config="[sip]\nprobe_interval = 1\nstale_after = 3\n"
                                                + extra)
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    s.start_component()
    bob = s.watcher("bob@localhost")
    contacts = ["u%d@phone.localhost" % i for i in range(n)]
    for c in contacts:
        bob.subscribe(c)
    s.start_sipbridge()
    wait_until(lambda: all(bob.last(c) == IDLE for c in contacts), timeout=20,
               what="every phone idle")
    return s, pbx, bob, contacts


def unreachable_then_back(s, pbx, bob, contacts, stop, resume, status, bound_s):
    import time
    t0 = time.monotonic()
    stop()
    wait_until(lambda: "event=notifier_unreachable" in s.sipbridge.log(), timeout=bound_s,
               what="the notifier found unreachable")
    log = s.sipbridge.log()
    assert ("event=notifier_unreachable notifier=127.0.0.1:%d users=%d subscriptions=%d "
            "status=%d" % (s.pbx_port, len(contacts), len(contacts), status)) in log, log
    from harness import http_get
    code, why = http_get(s.metrics_sb, "/readyz")
    assert code == 503 and "notifier 127.0.0.1:%d unreachable" % s.pbx_port in why, why
    assert s.sipbridge.metrics()['offhook_notifiers{state="unreachable"}'] == 1
    wait_until(lambda: all(bob.last(c) == UNKNOWN for c in contacts), timeout=bound_s,
               what="every phone unknown")
    # Parked: no subscription retries on its own; the failure that showed it is logged
    # (its status), the others are not, one line speaks for them.
    assert s.sipbridge.log().count("level=warning sub=sip event=subscribe_error") == 1
    resume()
    wait_until(lambda: all(bob.last(c) == IDLE for c in contacts), timeout=20,
               what="every phone back")
    assert s.sipbridge.metrics()['offhook_notifiers{state="reachable"}'] == 1
    assert "event=notifier_reachable notifier=127.0.0.1:%d" % s.pbx_port in s.sipbridge.log()
    assert s.sipbridge.ready()
    return time.monotonic() - t0


def test_pbx_killed_is_unreachable(stack_factory):
    """kill -9 of the PBX: nothing listens on its port any more (ICMP: 503 from the
    stack) and the next probe says so; every phone goes unknown stale_after after that
    probe, and comes back when the PBX does."""
    s, pbx, bob, contacts = pbxsim_watched(stack_factory)
    unreachable_then_back(s, pbx, bob, contacts, pbx.proc.kill9, pbx.start, 503,
                          bound_s=1 + 3 + 5)


def test_pbx_hung_is_unreachable(stack_factory):
    """A PBX that hangs (SIGSTOP: its socket takes datagrams, nothing answers): the probe
    times out (408 after the 8 s transaction timeout) and every phone goes unknown;
    SIGCONT brings it back."""
    import signal
    s, pbx, bob, contacts = pbxsim_watched(stack_factory)
    unreachable_then_back(s, pbx, bob, contacts,
                          lambda: pbx.proc.send_signal(signal.SIGSTOP),
                          lambda: pbx.proc.send_signal(signal.SIGCONT), 408,
                          bound_s=1 + 8 + 5)


def test_pbx_down_at_start(stack_factory):
    """No PBX when sipbridge starts: the first failures make the notifier unreachable,
    one line instead of a warning per subscription and retry, /readyz names it; the PBX
    starting, every subscription is made within a probe interval or two."""
    from harness import PbxSim, http_get
    users = tuple(("u%02d@localhost" % i, str(3000 + i)) for i in range(20))
    s = stack_factory(users=users, extra_config="[sip]\nprobe_interval = 1\n")
    s.start_sipbridge()
    wait_until(lambda: "event=notifier_unreachable" in s.sipbridge.log(), timeout=15,
               what="the notifier found unreachable")
    wait_until(lambda: "notifier 127.0.0.1:%d unreachable" % s.pbx_port in
               http_get(s.metrics_sb, "/readyz")[1], what="/readyz naming it")
    import time
    time.sleep(3)  # three probe intervals: a retry per interval, no more, no warnings
    log = s.sipbridge.log()
    assert log.count("level=warning") <= 2, log
    pbx = s.add(PbxSim(s.dir, s.pbx_port)).start()
    wait_until(lambda: s.sipbridge.metrics().get('offhook_subscriptions{state="active"}', 0)
               == 20, timeout=15, what="every subscription up")
    assert int(pbx.stats()["subscribes"]) <= 20 + 3
