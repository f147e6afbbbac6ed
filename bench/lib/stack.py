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


def nodelay_preload():
    """BUILD/nodelay_preload.so from bench/nodelay_preload.c (--component-nodelay)."""
    src = os.path.join(BENCH, "nodelay_preload.c")
    path = os.path.join(BUILD, "nodelay_preload.so")
    if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(src):
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", src, "-o", path,
                        "-ldl"], check=True)
    return path
