"""A phone call as the integration tests, the demo and the benchmarks play it: the bodies a
PBX sends (the fixtures under tests/data, as sipp NOTIFY steps) and what a chat user's
client then shows for the phone contact, as Watcher.views() records it:
(presence type, show, status).
"""

import os

from harness import DATA, scenario_notify

CONTACT = "alice@phone.localhost"   # alice@localhost's phone contact

# What a watcher's client shows for each call state (docs/architecture.md).
UNKNOWN = ("unavailable", "", "Phone status unknown")   # before sipbridge has said anything
OFFLINE = ("unavailable", "", "Phone offline")          # reg: no registered device
IDLE = ("available", "", "")
RINGING = ("available", "", "Ringing")
DIALING = ("available", "", "Dialing")
ON_CALL = ("available", "dnd", "On the phone")
ON_HOLD = ("available", "dnd", "On hold")
DND = ("available", "dnd", "Do not disturb")            # PIDF: the phone's own DND

# The view of each state a user's record in Redis holds (and pbxsim drives).
VIEW = {"idle": IDLE, "ringing": RINGING, "on_call": ON_CALL, "on_hold": ON_HOLD}

# Event package and content type of the bodies in each fixture folder; every other folder
# (dialog-info, freeswitch, kamailio, hostile) holds dialog-info bodies.
PACKAGES = {
    "pidf": ("presence", "application/pidf+xml"),
    "reginfo": ("reg", "application/reginfo+xml"),
}
DIALOG = ("dialog", "application/dialog-info+xml")


def body(rel, ext=None):
    """The fixture tests/data/<rel> (e.g. "dialog-info/asterisk-inuse.xml"); ext names
    another extension as the document's entity (the fixtures are alice's, 1001): sipbridge
    refuses a body about someone else than the subscription's user."""
    with open(os.path.join(DATA, rel)) as f:
        text = f.read()
    return for_ext(text, ext) if ext else text


def for_ext(text, ext):
    """text with its entity="sip:<user>@..." naming ext instead."""
    import re
    return re.sub(r'entity="(sips?|pres):[^@"]*@', lambda m: 'entity="%s:%s@' % (m.group(1), ext),
                  text, count=1)


def notify(rel, version=None, pause_ms=100, ext=None, **kw):
    """A NOTIFY step (harness.scenario_notify) carrying the fixture tests/data/<rel>, with
    the event package and content type of its folder (PACKAGES); version rewrites the
    document's version, ext its entity's user (see body())."""
    event, ctype = PACKAGES.get(rel.split("/", 1)[0], DIALOG)
    kw.setdefault("event", event)
    kw.setdefault("ctype", ctype)
    return scenario_notify(body(rel, ext), version=version, pause_ms=pause_ms, **kw)


# Alice's call as Asterisk reports it: idle, ringing (Bob Smith calling), answered, held,
# hung up.
ASTERISK_CALL = ["asterisk-idle.xml", "asterisk-ringing.xml", "asterisk-inuse.xml",
                 "asterisk-onhold.xml", "asterisk-idle.xml"]

# What a watcher's client shows for each of ASTERISK_CALL, after the initial "unknown".
ASTERISK_CALL_VIEWS = [UNKNOWN, IDLE, RINGING, ON_CALL, ON_HOLD, IDLE]


def asterisk_call_notifies(pause_ms=400):
    """The Asterisk fixtures in call order, versions counting up as Asterisk does."""
    return [notify("dialog-info/" + f, version=i, pause_ms=pause_ms)
            for i, f in enumerate(ASTERISK_CALL)]
