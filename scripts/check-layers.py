#!/usr/bin/env python3
"""Checks that calls go one way: no module of component/ or sipbridge/ references a module
above it in the data flow, and neither daemon's code references the other's.

The call graph comes from the compiled objects (nm): module A depends on module B when A's
object has an undefined symbol that B's object defines. Taking a function's address counts
as a reference, so a callback must be wired where the layer rules allow it (main.c).

Usage: scripts/check-layers.py [BUILD_DIR]      (default: build)
Exit status 0 when every edge goes down, 1 with one line per offending edge otherwise."""

import glob
import os
import subprocess
import sys

# Each directory's modules from the top (main, which wires everything) to the bottom.
# A module may reference modules of later groups only; modules of one group never
# reference each other. common/ sits below both daemons; component/ and sipbridge/
# never reference each other.
LAYERS = {
    "component": [
        ["main"],                                   # builds and wires everything
        ["console"],                                # the control socket's answers
        ["router"],                                 # incoming stanzas, answered
        ["publisher"],                              # one view per change, to each writer
        ["presence_out", "pep", "vcard_out", "roster"],  # the writers
        ["privileged"],                             # XEP-0356: grants, requests, answers
        ["feed", "health", "watchers", "xmpplink",  # the links: news up through ops
         "rosterstore", "rosterapi"],
        ["view"],                                   # what a watcher is shown
        ["users"],                                  # the directory
        ["card", "caps"],                           # vCards, disco/caps (build stanzas)
        ["presence", "stanza", "sipaddr"],          # pure helpers
    ],
    "sipbridge": [
        ["main"],                                   # wires every callback
        ["console"],                                # the control socket's answers
        ["bridge"],                                 # users, sources: NOTIFY -> state -> store
        ["member"],                                 # which users are this sipbridge's
        ["rlsub"],                                  # the RFC 4662 list subscription
        ["subscription"],                           # each subscription's life
        ["probe"],                                  # whether notifiers still have them
        ["sipua", "suloop"],                        # the SIP wire (nta, dialogs), Sofia's loop
        ["sipudp"],                                 # the UDP port: batches in and out
        ["store"],                                  # the Redis writer
        ["combine"],                                # one user's sources -> one state
        ["merge"],                                  # one subscription's dialogs
        ["dialoginfo", "pidf", "reginfo", "rlmi"],  # body parsers
        ["bodyerr", "docver", "mime", "sipuri", "xmlsafe", "sipmsg"],  # what every parser
                                                    # uses; SIP messages
        ["expiry"],                                 # the expiry floor's arithmetic (pure)
    ],
}
DAEMON_DIRS = ("component", "sipbridge")


def nm(obj, *flags):
    out = subprocess.run(["nm", "-P", *flags, obj], capture_output=True, text=True,
                         check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def objects(build):
    """(dir, module) -> object path, for the sources of common/, component/, sipbridge/."""
    found = {}
    for obj in glob.glob(os.path.join(build, "CMakeFiles", "*.dir", "*", "*.c.o")):
        d = os.path.basename(os.path.dirname(obj))
        if d not in ("common",) + DAEMON_DIRS:
            continue
        found.setdefault((d, os.path.basename(obj)[:-len(".c.o")]), obj)
    return found


def rank(d, module):
    for i, group in enumerate(LAYERS.get(d, [])):
        if module in group:
            return i
    return None


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    objs = objects(build)
    if not objs:
        print("check-layers: no objects under %s (build first)" % build, file=sys.stderr)
        return 2
    owner = {}
    for key, obj in objs.items():
        for sym in nm(obj, "--defined-only", "-g"):
            owner.setdefault(sym, key)
    bad = []
    unknown = sorted("%s/%s.c" % k for k in objs if k[0] in DAEMON_DIRS
                     and rank(*k) is None)
    for m in unknown:
        bad.append("%s: not in LAYERS (give it a place in scripts/check-layers.py)" % m)
    edges = 0
    for (d, mod), obj in sorted(objs.items()):
        for sym in sorted(nm(obj, "-u")):
            target = owner.get(sym)
            if not target or target == (d, mod):
                continue
            td, tmod = target
            edges += 1
            where = "%s/%s.c -> %s/%s.c (%s)" % (d, mod, td, tmod, sym)
            if d == "common" and td != "common":
                bad.append("common calls up into a daemon: " + where)
            elif d in DAEMON_DIRS and td in DAEMON_DIRS and td != d:
                bad.append("one daemon calls the other: " + where)
            elif d == td and d in DAEMON_DIRS:
                r, tr = rank(d, mod), rank(td, tmod)
                if r is not None and tr is not None and tr <= r:
                    bad.append("calls %s: %s" % ("sideways" if tr == r else "up", where))
    for line in bad:
        print(line)
    print("check-layers: %d modules, %d cross-module references, %d against the flow"
          % (len(objs), edges, len(bad)), file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
