"""The parts of bench/run.py, one job each, in the order a run uses them:

    stack.py         the servers: harness.Stack (tests/integration) as the bench runs it,
                     the watcher set preloaded into Redis, the sink online
    sink.py          the watching end: xmppsink (bench/sink.c) and what its log says
    sample.py        measurement: CPU, RSS, fds, UDP drops, machine load from /proc
    perf.py          perf profiles of the daemons after the window
    latency.py       pbxsim's events paired with the sink's stanzas: latency, backlog
    report.py        the human line and the JSON line
    pbxsim_run.py    a run with pbxsim as the PBX (load at a set rate), the default
    kamailio_run.py  a run with Kamailio and sipp phones as the PBX (--kamailio)

The naming both ends share: user i is u<i>@localhost, with the AOR sip:<EXT0+i>@pbxsim
and the phone contact u<i>@DOMAIN, watched by WATCHER.
"""

import os
import sys

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The integration tests' harness (servers, daemons, ports, waits) is the bench's too.
sys.path.insert(0, os.path.join(BENCH, "..", "tests", "integration"))

EXT0 = 100000
DOMAIN = "phone.localhost"
WATCHER = "watcher@localhost"
