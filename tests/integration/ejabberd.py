"""ejabberd 23.01 for offhook's integration tests: the same interface as harness.Prosody
(attributes name, c2s, comp, domain, secret; register(), start(), stop(), log()), so that
a harness.Stack runs on it: Stack(workdir, xmpp="ejabberd") with one of its own, or
Stack(workdir, xmpp=<a running Ejabberd>) with one shared by several stacks.

The server runs from deploy/ejabberd/: ejabberd.yml with its define_macro values rewritten
(ports, component password, log level) and ejabberdctl.cfg, in a directory of its own:

    ejabberdctl --config-dir DIR --config DIR/ejabberd.yml --logs DIR/logs
                --spool DIR/spool --node ejabberd-<c2s port>@localhost start

Each instance has its own node name and Erlang distribution port (EJABBERD_DIST_PORT, read
by ejabberdctl.cfg), so no epmd is started or shared and concurrent runs do not collide; its
Erlang cookie lives in DIR (HOME=DIR). Debian's ejabberdctl runs only as root (it then
su's to ejabberd) or as the ejabberd user: as root the harness runs it as ejabberd
directly, with DIR owned by ejabberd.
"""

import os
import pwd
import re
import shutil
import signal
import subprocess
import time

from harness import ROOT, free_port, port_open, wait_until

DEPLOY = os.path.join(ROOT, "deploy", "ejabberd")
EJABBERDCTL = "/usr/sbin/ejabberdctl"
INETRC = "/etc/ejabberd/inetrc"
USER = "ejabberd"


def available():
    """None if the harness can run ejabberd here, else why not."""
    if not os.path.exists(EJABBERDCTL):
        return "ejabberd is not installed (apt-get install ejabberd)"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return "no %s user" % USER
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != USER:
        return "ejabberdctl runs only as root or as the %s user" % USER
    return None


def set_macros(text, values):
    """ejabberd.yml text with the given define_macro entries' values replaced; each must
    exist (a two-space-indented 'NAME: value' line) so a renamed macro fails loudly."""
    for name, value in values.items():
        text, n = re.subn(r"(?m)^(  %s:)[ \t].*$" % re.escape(name),
                          lambda m: "%s %s" % (m.group(1), value), text)
        if n != 1:
            raise ValueError("macro %s found %d times in ejabberd.yml" % (name, n))
    return text


def yaml_str(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


class Ejabberd:
    """ejabberd 23.01 started with ejabberdctl in a directory of its own."""

    name = "ejabberd"

    def __init__(self, workdir, domain="phone.localhost", secret="s3cret", loglevel="info",
                 config_text=None):
        self.dir = os.path.join(workdir, "ejabberd")
        self.logs_dir = os.path.join(self.dir, "logs")
        self.spool = os.path.join(self.dir, "spool")
        for d in (self.dir, self.logs_dir, self.spool):
            os.makedirs(d, exist_ok=True)
        self.c2s = free_port()
        self.comp = free_port()
        self.dist = free_port()
        self.api = free_port()     # mod_http_api, for offhook's roster writes
        self.domain = domain
        self.secret = secret
        self.node = "ejabberd-%d@localhost" % self.c2s
        self.cfg = os.path.join(self.dir, "ejabberd.yml")
        text = config_text or open(os.path.join(DEPLOY, "ejabberd.yml")).read()
        text = set_macros(text, {
            "C2S_IP": yaml_str("127.0.0.1"), "C2S_PORT": self.c2s,
            "SERVICE_IP": yaml_str("127.0.0.1"), "SERVICE_PORT": self.comp,
            "SERVICE_PASSWORD": yaml_str(secret), "C2S_STARTTLS_REQUIRED": "false",
            "LOGLEVEL": loglevel, "API_IP": yaml_str("127.0.0.1"), "API_PORT": self.api})
        if domain != "phone.localhost":
            text = text.replace("phone.localhost", domain)
        with open(self.cfg, "w") as f:
            f.write(text)
        os.chmod(self.cfg, 0o600)  # it holds the component password
        shutil.copy(os.path.join(DEPLOY, "ejabberdctl.cfg"), self.dir)
        shutil.copy(INETRC, self.dir)  # ejabberdctl sets ERL_INETRC=<config dir>/inetrc
        self.as_user = os.geteuid() == 0
        if self.as_user:
            pw = pwd.getpwnam(USER)
            for base, dirs, files in os.walk(self.dir):
                os.chown(base, pw.pw_uid, pw.pw_gid)
                for n in files:
                    os.chown(os.path.join(base, n), pw.pw_uid, pw.pw_gid)
            os.chmod(workdir, 0o755)
        self.pending = []     # registrations asked for before start()
        self.pid = None
        self.started = False

    # ---- ejabberdctl ------------------------------------------------------------------

    def env(self):
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": self.dir, "LANG": "C.UTF-8",
                "EJABBERD_DIST_PORT": str(self.dist)}

    def ctl(self, *args, check=True, timeout=60):
        """Runs ejabberdctl against this node; returns the CompletedProcess."""
        argv = [EJABBERDCTL, "--config-dir", self.dir, "--config", self.cfg,
                "--logs", self.logs_dir, "--spool", self.spool, "--node", self.node]
        argv += [str(a) for a in args]
        kw = {}
        if self.as_user:
            kw = {"user": USER, "group": USER, "extra_groups": []}
        r = subprocess.run(argv, env=self.env(), cwd=self.spool, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)
        if check and r.returncode != 0:
            raise RuntimeError("ejabberdctl %s failed (%d): %s%s\n%s" % (
                " ".join(map(str, args)), r.returncode, r.stdout[-2000:], r.stderr[-2000:],
                self.log()[-3000:]))
        return r

    def register(self, user, password, host="localhost"):
        if not self.started:
            self.pending.append((user, password, host))
            return
        self.ctl("register", user, host, password)

    def unregister(self, user, host="localhost"):
        self.ctl("unregister", user, host)

    # ---- life -------------------------------------------------------------------------

    def _beam_pids(self):
        """Pids of beam processes running this node (by its unique name)."""
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"-sname" in argv and self.node.encode() in argv and any(
                    a.endswith(b"beam.smp") for a in argv[:1]):
                out.append(int(p))
        return out

    def _read_pid(self):
        try:
            with open(os.path.join(self.spool, "ejabberd.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout=30):
        t0 = time.monotonic()
        self.ctl("start")   # -detached: returns at once, the node boots in the background
        self.started = True

        def up():
            if not self._beam_pids() and time.monotonic() - t0 > 2:
                raise RuntimeError("ejabberd exited while starting:\n" + self.log()[-4000:])
            return port_open(self.c2s) and port_open(self.comp) and port_open(self.api)
        try:
            wait_until(up, timeout=timeout, interval=0.1, what="ejabberd listeners")
        except (TimeoutError, RuntimeError) as e:
            self.stop()
            raise RuntimeError("%s\n%s" % (e, self.log()[-4000:]))
        # The listeners open once ejabberd has started; confirm it says so.
        self.ctl("status")
        self.pid = self._read_pid()
        self.start_seconds = time.monotonic() - t0
        for user, password, host in self.pending:
            self.register(user, password, host)
        self.pending = []
        return self

    def alive(self):
        return bool(self._beam_pids())

    def stop(self, timeout=20):
        """ejabberdctl stop, then waits for the node's beam to exit; kills it if it does
        not. Leaves no process behind (no epmd is started: see ejabberdctl.cfg)."""
        if not self.started:
            return
        self.started = False
        pids = set(self._beam_pids())
        if self.pid:
            pids.add(self.pid)
        if not pids:
            return
        try:
            self.ctl("stop", check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

        def gone():
            return not self._beam_pids()
        try:
            wait_until(gone, timeout=timeout, interval=0.05, what="ejabberd to stop")
        except TimeoutError:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in self._beam_pids():
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                try:
                    wait_until(gone, timeout=5, interval=0.05, what="ejabberd to die")
                    break
                except TimeoutError:
                    continue

    def log(self):
        out = []
        for name in ("ejabberd.log", "error.log", "crash.log"):
            p = os.path.join(self.logs_dir, name)
            if os.path.exists(p):
                text = open(p, errors="replace").read()
                if text or name == "ejabberd.log":
                    out.append(text if name == "ejabberd.log" else
                               "---- %s ----\n%s" % (name, text))
        return "\n".join(out)

    def errors(self):
        """ejabberd's error.log (errors and worse)."""
        p = os.path.join(self.logs_dir, "error.log")
        return open(p, errors="replace").read() if os.path.exists(p) else ""
