"""Issue 13, item 5: a clean stop with 10,000 subscriptions. On SIGTERM sipbridge
un-SUBSCRIBEs every dialog (at a bounded pace, for a bounded time), exits 0, and writes
nothing worse than notice after `event=stopped`; the PBX (bench/pbxsim) counts one
un-SUBSCRIBE per subscription. How long it takes is not asserted here (the machine is
shared): docs/performance.md has the figures at 10k and 100k."""

import os
import time

from harness import PbxSim, wait_until

# Under valgrind (scripts/valgrind.sh) sipbridge runs some 30 times slower: at 10,000 the
# ramp outruns it (answers come after their transactions gave up, and the dialogs they made
# are ended at once: 1,595 un-SUBSCRIBEs before the stop in one run), so memcheck gets the
# same stop at 1,000; the ASan pass keeps 10,000.
N = 1000 if os.environ.get("OFFHOOK_VALGRIND") == "1" else 10000
EXT0 = 30000


def test_clean_stop_unsubscribes_everyone(stack_factory):
    users = [("u%d@localhost" % i, str(EXT0 + i)) for i in range(N)]
    s = stack_factory(users=users, chat_users=(), other_domain_users=(), loglevel="info",
                      extra_config="[sip]\nsubscribe_rate = 5000\n")
    pbx = s.add(PbxSim(s.dir, s.pbx_port, goodbye=False)).start()
    sb = s.start_sipbridge()
    wait_until(lambda: sb.metrics().get('offhook_subscriptions{state="active"}', 0) >= N,
               timeout=120, interval=0.5, what="%d active subscriptions" % N)
    assert int(pbx.stats()["unsubscribes"]) == 0
    t0 = time.monotonic()
    rc = sb.stop(timeout=60)
    took = time.monotonic() - t0
    assert rc == 0, "sipbridge exited with %s" % rc
    log = sb.log()
    assert "event=stopped" in log
    after = log.split("event=stopped", 1)[1]
    bad = [line for line in after.splitlines()
           if "level=error" in line or "level=warning" in line]
    assert not bad, bad
    assert "shutdown_incomplete" not in log and "shutdown_timeout" not in log
    unsub = [line for line in log.splitlines() if "event=unsubscribed" in line]
    assert unsub and "sent=%d " % N in unsub[0] and "not_sent=0 " in unsub[0], unsub
    wait_until(lambda: int(pbx.stats()["unsubscribes"]) == N, timeout=10,
               what="the PBX to count %d un-SUBSCRIBEs" % N)
    print("stop with %d subscriptions: %.2f s; %s" % (N, took, unsub[0]))
