"""The servers of a bench run: harness.Stack (tests/integration) as the bench runs it.
Prosody logs warnings only; its one chat user is the sink's; the watcher set is written
straight into Redis before the component starts; the offhook users are written into the
config once the PBX (pbxsim or Kamailio) has its port; load generators are added to the
stack, so that stop() stops them with everything else."""

import os
import subprocess

from harness import BUILD, PROSODY_CFG, Stack, wait_until

from . import BENCH, DOMAIN, WATCHER
from .sink import Sink

# Prosody as the harness starts it, but logging warnings only: at debug it formats every
# stanza into its log file, which would be most of the CPU it is charged for here.
PROSODY_BENCH_CFG = PROSODY_CFG.replace("{loglevel}", "warn")


def start(wd, contacts, extra, prosody_nodelay=False):
    """Redis, Prosody and the sink watching contacts, in wd (a harness.Workdir); offhook's
    config with no users yet ([log] level = notice, extra appended). Returns (stack,
    sink); the sink is one of the stack's extras."""
    cfg = PROSODY_BENCH_CFG
    if prosody_nodelay:
        # TCP_NODELAY on Prosody's sockets (its default keeps Nagle's algorithm on).
        cfg = cfg.replace('VirtualHost "localhost"',
                          'network_settings = {{ nagle = false }}\nVirtualHost "localhost"')
    stack = Stack(wd.path, users=(), extra_config=extra, loglevel="notice",
                  chat_users=("watcher",), other_domain_users=(),
                  prosody_kwargs={"config_text": cfg, "domain": DOMAIN, "recipe_blocks": None,
                                  "vhost_extra": ""})
    try:
        preload_watchers(stack.redis, contacts)
        sink = stack.add(Sink(wd.path, stack.xmpp.c2s))
    except BaseException:
        stack.stop()
        raise
    return stack, sink


def preload_watchers(redis, contacts):
    """SADD offhook:watchers:<contact> watcher@localhost for each contact, in one pipe
    (what the component would have stored had the watcher subscribed)."""
    def resp(*args):
        return "*%d\r\n" % len(args) + "".join(
            "$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args)
    data = "".join(resp("SADD", "offhook:watchers:" + c, WATCHER) for c in contacts)
    out = subprocess.run(["redis-cli", "-p", str(redis.port), "--pipe"],
                         input=data.encode(), capture_output=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError("redis-cli --pipe: %s" % out.stdout.decode())


def start_component(stack, sink, contacts, nodelay=False):
    """offhook-component, ready, and every watched contact's first presence at the sink
    ("unknown": sipbridge is not running)."""
    env = {"LD_PRELOAD": nodelay_preload()} if nodelay else None
    stack.start_component(env=env, timeout=120)
    wait_until(lambda: sink.tail.poll().seen() >= contacts, timeout=60 + contacts / 500,
               interval=0.2, what="the sink to get every contact's initial presence")
    return stack.component


def start_sipbridge(stack, preload=None):
    """offhook-sipbridge (LD_PRELOAD=preload, e.g. another malloc), once /metrics answers."""
    sb = stack.start_sipbridge(env={"LD_PRELOAD": preload} if preload else None)
    wait_until(sb.metrics, timeout=120, what="sipbridge metrics")
    return sb


class Sipbridges:
    """The run's sipbridges seen as one (--sipbridges K): summed /metrics, summed RSS, each
    process's pid (named "sipbridge", "sipbridge_2", ...: pbxsim_run folds the others into
    the first's figures after each snapshot), their SIP ports, and each one's share."""

    def __init__(self, daemons, ports):
        self.members = daemons
        self.ports = ports
        self.p = daemons[0].p   # the first: --perf, --idle and --soak-sample sample it only

    def metrics(self):
        out = {}
        for d in self.members:
            for k, v in d.metrics().items():
                out[k] = out.get(k, 0.0) + v
        return out

    def pids(self):
        return {("sipbridge" if i == 0 else "sipbridge_%d" % (i + 1)): d.p.pid
                for i, d in enumerate(self.members)}

    def stop_all(self):
        """SIGTERM to every sipbridge at once, as an operator stopping them all: none waits
        to hand its users over to another that is stopping too. Returns the problems
        (bad exits)."""
        import signal
        for d in self.members:
            d.send_signal(signal.SIGTERM)
        problems = []
        for d in self.members:
            try:
                d.p.wait(30)   # a second SIGTERM (Proc.stop's) would cut its stop short
            except Exception:
                pass
            rc = d.stop(timeout=10)
            if rc != 0:
                problems.append("%s exited with %s" % (getattr(d, "label", d.name), rc))
        return problems

    def shares(self):
        return [int(d.metrics().get('offhook_cluster_users{state="owned"}', 0))
                for d in self.members]


def start_sipbridges(stack, k, preload=None):
    """K offhook-sipbridges sharing the users (issue 12): the first is the stack's own, the
    others run with a copy of its configuration giving each its SIP and metrics ports and
    an instance name, as on hosts of their own. Returns them as one (Sipbridges) once each
    serves /metrics."""
    from cluster import Member, member_config
    from harness import free_port
    first = start_sipbridge(stack, preload)
    daemons, ports = [first], [stack.sip_port]
    for i in range(2, k + 1):
        sip, port = free_port(), free_port()
        cfg = member_config(stack.config, os.path.join(stack.dir, "sb%d.conf" % i), [
            ("sip", "listen", "udp:127.0.0.1:%d" % sip),
            ("sipbridge", "metrics", "127.0.0.1:%d" % port),
            ("sipbridge", "instance", "sb%d" % i)])
        d = Member("sipbridge", "sb%d" % i, cfg, stack.dir, port, sip)
        stack.all_daemons.append(d)
        wait_until(d.metrics, timeout=120, what="sipbridge sb%d metrics" % i)
        daemons.append(d)
        ports.append(sip)
    return Sipbridges(daemons, ports)


def nodelay_preload():
    """BUILD/nodelay_preload.so from bench/nodelay_preload.c (--component-nodelay)."""
    src = os.path.join(BENCH, "nodelay_preload.c")
    path = os.path.join(BUILD, "nodelay_preload.so")
    if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(src):
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", src, "-o", path,
                        "-ldl"], check=True)
    return path
