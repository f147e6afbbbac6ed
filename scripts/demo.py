"""offhook demo: Alice's desk phone rings, she answers, holds, hangs up; Bob, chatting on
Prosody, watches her phone contact change. Everything real, on loopback, in a temp dir:
redis-server, Prosody, sipp replaying Asterisk's dialog-info NOTIFYs, offhook-sipbridge
and offhook-component, and Bob's XMPP client (slixmpp)."""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from calls import (ASTERISK_CALL, ASTERISK_CALL_VIEWS, CONTACT,  # noqa: E402
                   asterisk_call_notifies)
from harness import Stack, Workdir, wait_until  # noqa: E402
PHONE_EVENTS = ["phone idle", "phone rings (Bob Smith calling)", "Alice picks up",
                "Alice puts the call on hold", "Alice hangs up"]


def show(view):
    ptype, shw, status = view
    if ptype == "unavailable":
        return "offline   " + (status or "")
    return "%-9s %s" % (shw or "online", status or "(no status)")


def main():
    wd = Workdir("offhook-demo-")
    t0 = time.monotonic()
    stamp = lambda: "[%5.2fs]" % (time.monotonic() - t0)  # noqa: E731
    print("offhook demo: starting redis-server, Prosody, offhook-component ...", flush=True)
    # sipp plays the PBX from a script: between its NOTIFYs it cannot answer the in-dialog
    # refresh sipbridge sends every [sip] probe_interval (5 s) to check that the PBX still
    # holds the subscription, and this call takes longer than that. A real PBX answers it.
    s = Stack(wd.path, loglevel="info", extra_config="[sip]\nprobe_interval = 0\n")
    try:
        s.start_component()
        bob = s.watcher("bob@localhost")
        print("%s Bob logs in to Prosody and adds %s to his roster" % (stamp(), CONTACT))
        bob.subscribe(CONTACT)
        wait_until(lambda: bob.views(CONTACT), what="first presence")
        print("%s Bob's client shows %s: %s" % (stamp(), CONTACT, show(bob.views(CONTACT)[0])))
        print("%s the PBX (sipp replaying Asterisk) and offhook-sipbridge start" % stamp())
        s.start_pbx(asterisk_call_notifies(pause_ms=1200))
        s.start_sipbridge()
        shown = 1
        deadline = time.monotonic() + 30
        while shown < len(ASTERISK_CALL_VIEWS) and time.monotonic() < deadline:
            views = bob.views(CONTACT)
            while shown < len(views):
                print("%s PBX: %-58s -> Bob sees %s: %s" % (
                    stamp(), PHONE_EVENTS[shown - 1] + " (" + ASTERISK_CALL[shown - 1] + ")",
                    CONTACT, show(views[shown])), flush=True)
                shown += 1
            time.sleep(0.05)
        ok = bob.views(CONTACT) == ASTERISK_CALL_VIEWS
        print("%s Redis holds: %s" % (stamp(), s.redis.cli(
            "HGETALL", "offhook:user:alice@localhost").replace("\n", " ")))
        lat = s.component.metrics().get("offhook_event_latency_seconds_sum", 0)
        n = s.component.metrics().get("offhook_event_latency_seconds_count", 0)
        if n:
            print("%s mean NOTIFY-to-presence latency inside offhook: %.2f ms over %d events"
                  % (stamp(), 1000 * lat / n, n))
        print("demo %s" % ("OK: the call turned into presence" if ok else
                           "FAILED: Bob saw %r" % bob.views(CONTACT)))
        if not ok:
            print(s.logs())
        return 0 if ok else 1
    finally:
        s.stop()
        wd.cleanup()


if __name__ == "__main__":
    sys.exit(main())
