"""Real servers for offhook's integration tests, the demo and the benchmarks.

Everything runs on 127.0.0.1, on free ports, in a temporary directory, started and
stopped by the test itself: redis-server, Prosody (as a plain process) or ejabberd
(ejabberd.py), sipp or pbxsim playing a PBX, and offhook's two daemons, wired together
by a Stack. Waits poll a condition; nothing sleeps blindly. What the PBX sends and what
a chat client then shows are in calls.py.
"""

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
BUILD = os.environ.get("OFFHOOK_BUILD", os.path.join(ROOT, "build"))


_HANDED_OUT = set()


def _ephemeral_low():
    """The first port of the kernel's ephemeral range (32768 on Debian by default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port, kind):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port():
    """A port free on 127.0.0.1 for both TCP and UDP, taken below the kernel's ephemeral
    range. A port the kernel handed out for an ephemeral bind (port 0) could be handed
    out again to any other socket (a DNS query, a client) before the server we start
    binds it. Ports below the range are never assigned implicitly, and none is handed
    out twice in one process. (The two CI runs that failed on sipp's "errno = 98" were
    most likely SippPbx's own probe bind, since replaced: see SippPbx.listening().)"""
    low = min(_ephemeral_low(), 65536)
    lo, hi = 20000, low - 1
    if hi - lo < 2000:  # a system whose ephemeral range starts low: the old way
        lo, hi = 1024, 65535
    for _ in range(2000):
        port = random.randint(lo, hi)
        if port in _HANDED_OUT:
            continue
        if _bindable(port, socket.SOCK_STREAM) and _bindable(port, socket.SOCK_DGRAM):
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port")


def port_bound(port, proto="udp"):
    """True if a socket on this host is bound to port (TCP: listening), as the kernel
    lists in /proc/net/{tcp,udp}{,6}. Looks without binding, so it cannot race the
    server it waits for."""
    for suffix in ("", "6"):
        try:
            with open("/proc/net/%s%s" % (proto, suffix)) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if int(local.rsplit(":", 1)[1], 16) != port:
                        continue
                    if proto == "udp" or state == "0A":  # 0A = TCP_LISTEN
                        return True
        except OSError:
            continue
    return False


def wait_until(cond, timeout=15.0, interval=0.05, what="condition"):
    """Polls cond() until it returns a true value; returns it or raises TimeoutError."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # a server still starting refuses connections
            last_exc = e
        time.sleep(interval)
    raise TimeoutError("timed out after %.1fs waiting for %s%s" % (
        timeout, what, " (last error: %r)" % last_exc if last_exc else ""))


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def http_get(port, path, timeout=2.0):
    """(status, body) of GET http://127.0.0.1:port/path; status 0 if unreachable."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def parse_metrics(text):
    """{'name{labels}': value} from Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


class Proc:
    """A child process with its output in a log file."""

    def __init__(self, name, argv, workdir, env=None, user=None):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(workdir, name + ".out")
        self.logf = open(self.log_path, "ab")
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                  env=env, cwd=workdir, start_new_session=True, user=user)

    def alive(self):
        return self.p.poll() is None

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def send_signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.alive():
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.logf.close()
        return self.p.returncode

    def kill9(self):
        if self.alive():
            self.p.kill()
            self.p.wait()
        self.logf.close()


class Redis:
    def __init__(self, workdir, port=None, password=None):
        self.port = port or free_port()
        self.password = password
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None

    def start(self):
        self.proc = Proc("redis", ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", self.dir,
                                   "--daemonize", "no", "--protected-mode", "yes"]
                         + (["--requirepass", self.password] if self.password else []),
                         self.dir)
        wait_until(lambda: self.cli("PING") == "PONG", what="redis-server")
        return self

    def cli(self, *args):
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        out = subprocess.run(["redis-cli", "-p", str(self.port), "--raw"] + auth + list(args),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def stop(self):
        if self.proc:
            self.proc.stop()


PROSODY_CFG = """
-- Written by offhook's test harness: a throwaway Prosody on loopback.
data_path = "{dir}/data"
plugin_paths = {{ "/usr/lib/prosody/modules" }}
log = {{ {{ levels = {{ min = "{loglevel}" }}, to = "file", filename = "{dir}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
component_ports = {{ {comp} }}
component_interfaces = {{ "127.0.0.1" }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "pep"; "private"; "vcard_legacy";
                    "version" {extra_modules} }}
modules_disabled = {{ "s2s"; "tls" }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
storage = "internal"
allow_registration = false
VirtualHost "localhost"
{vhost_extra}
{component_section}
"""

DEPLOY_PROSODY = os.path.join(ROOT, "deploy", "prosody", "offhook.cfg.lua")


RECIPE_GRANT = 'iq = { ["http://jabber.org/protocol/pubsub"] = "both" };'


def prosody_recipe(dirpath, domain, secret, port, users_domain="localhost",
                   blocks=("privilege",), groups="", grants=None):
    """deploy/prosody/offhook.cfg.lua as the tests use it: the operator's three values
    replaced, optional [block] begin/end sections kept only if named ("privilege": the
    XEP-0356 grants; "roster", inside it: the roster permission), the groups file written
    to dirpath. grants ({namespace: "get"|"set"|"both"}) replaces the recipe's IQ
    permission, for a test of a server that grants otherwise. Returns the path of the
    copy."""
    import re
    text = open(DEPLOY_PROSODY).read()
    if grants is not None:
        if RECIPE_GRANT not in text:
            raise ValueError("the recipe's IQ grant changed: update harness.RECIPE_GRANT")
        text = text.replace(RECIPE_GRANT, "iq = { %s };" % "; ".join(
            '["%s"] = "%s"' % kv for kv in sorted(grants.items())))
    for block in ("roster", "privilege"):
        if block not in blocks:
            text = re.sub(r" *-- \[%s\] begin.*?-- \[%s\] end\n" % (block, block), "", text,
                          flags=re.S)
    groups_path = os.path.join(dirpath, "offhook-groups.txt")
    with open(groups_path, "w") as f:
        f.write(groups)
    text = (text.replace("phone.example.com", domain).replace("example.com", users_domain)
            .replace('"change-me"', '"%s"' % secret)
            .replace("component_ports = { 5347 }", "component_ports = { %d }" % port)
            .replace("/etc/prosody/offhook-groups.txt", groups_path))
    path = os.path.join(dirpath, "offhook.cfg.lua")
    with open(path, "w") as f:
        f.write(text)
    return path


class Prosody:
    """Prosody 0.12 as a plain foreground process with a component listener."""

    name = "prosody"

    def __init__(self, workdir, domain="phone.localhost", secret="s3cret",
                 extra_modules=(), vhost_extra="", component_extra="", config_text=None,
                 recipe_blocks=None, groups="", grants=None):
        self.dir = os.path.join(workdir, "prosody")
        os.makedirs(os.path.join(self.dir, "data"), exist_ok=True)
        self.c2s = free_port()
        self.comp = free_port()
        self.domain = domain
        self.secret = secret
        self.cfg = os.path.join(self.dir, "prosody.cfg.lua")
        text = config_text or PROSODY_CFG
        if recipe_blocks is not None:
            # The component (and its listener) come from the deploy recipe itself.
            recipe = prosody_recipe(self.dir, domain, secret, self.comp, blocks=recipe_blocks,
                                    groups=groups, grants=grants)
            component_section = 'Include "%s"' % recipe
            text = text.replace("component_ports = {{ {comp} }}\n", "")
        else:
            component_section = 'Component "%s"\n    component_secret = "%s"\n%s' % (
                domain, secret, component_extra)
        with open(self.cfg, "w") as f:
            f.write(text.format(dir=self.dir, c2s=self.c2s, comp=self.comp, domain=domain,
                                secret=secret, loglevel="debug",
                                extra_modules="".join('; "%s"' % m for m in extra_modules),
                                vhost_extra=vhost_extra, component_section=component_section))
        # Started as root, Prosody drops to the prosody user: it must own its files.
        if os.geteuid() == 0:
            pw = pwd.getpwnam("prosody")
            for base, dirs, files in os.walk(self.dir):
                os.chown(base, pw.pw_uid, pw.pw_gid)
                for n in files:
                    os.chown(os.path.join(base, n), pw.pw_uid, pw.pw_gid)
            os.chmod(workdir, 0o755)
        self.proc = None

    def register(self, user, password, host="localhost"):
        subprocess.run(["prosodyctl", "--config", self.cfg, "register", user, host, password],
                       check=True, capture_output=True, timeout=30)

    def start(self):
        # prosody (unlike prosodyctl) does not leave root itself: start it as its user.
        user = "prosody" if os.geteuid() == 0 else None
        self.proc = Proc("prosody", ["prosody", "--config", self.cfg, "-F"], self.dir,
                         user=user)
        wait_until(lambda: port_open(self.c2s) and port_open(self.comp), timeout=20,
                   what="prosody ports")
        return self

    def log(self):
        p = os.path.join(self.dir, "prosody.log")
        return open(p, errors="replace").read() if os.path.exists(p) else ""

    def stop(self):
        if self.proc:
            self.proc.stop()


_RESPONSE = """
  <send%(next)s>
    <![CDATA[
      SIP/2.0 %(code)s
      [last_Via:]
      [last_From:]
      [last_To:]%(totag)s
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
%(headers)s      Content-Length: 0

    ]]>
  </send>"""


def step_respond(code="200 OK", expires=None, headers=(), initial=False, goto=None):
    """Answers the request received last (initial=True adds the dialog's To tag); goto
    jumps to a label once sent."""
    h = "".join("      %s\n" % x for x in headers)
    if expires is not None:
        h += "      Expires: %d\n" % expires
    return {"kind": "respond", "code": code, "headers": h, "initial": initial, "goto": goto}


def step_recv(method="SUBSCRIBE", timeout_ms=None, auth=None):
    """Waits for an in-dialog request; auth=(user, password) verifies its digest."""
    return {"kind": "recv", "method": method, "timeout": timeout_ms, "auth": auth}


def step_answer_forever(expires=None):
    """From here on, answers every in-dialog SUBSCRIBE (refreshes, un-SUBSCRIBE) with 200
    and sends nothing else: a notifier that has silently stopped notifying."""
    return {"kind": "loop", "expires": expires}


def step_pause(ms):
    return {"kind": "pause", "ms": ms}


def scenario_notify(body, version=None, event="dialog",
                    ctype="application/dialog-info+xml", substate="active;expires=3600",
                    pause_ms=400, cseq=None, answer=200):
    """One NOTIFY step of a sipp PBX scenario; version rewrites the document's version, as
    a PBX increments it for each NOTIFY of one subscription. cseq: its CSeq number (by
    default the NOTIFY's rank in its dialog); answer: the status sipbridge must send."""
    if version is not None:
        import re
        body = re.sub(r'version="\d+"', 'version="%d"' % version, body, count=1)
    return {"kind": "notify", "body": body.strip(), "event": event, "ctype": ctype,
            "substate": substate, "pause_ms": pause_ms, "cseq": cseq, "answer": answer}


def _render_step(st, n, call, bodydir=None):
    if st["kind"] == "respond":
        return _RESPONSE % {"code": st["code"], "headers": st["headers"],
                            "totag": ";tag=pbx[call_number]" if st["initial"] else "",
                            "next": ' next="%s"' % st["goto"] if st.get("goto") else ""}
    if st["kind"] == "pause":
        return '\n  <pause milliseconds="%d"/>' % st["ms"]
    if st["kind"] == "loop":
        # The jump sits on the <send>: sipp lingers on a bare <nop next=...> and takes the
        # next request for an unexpected message.
        return ('\n  <label id="c%dloop"/>\n  <recv request="SUBSCRIBE" timeout="600000"/>' % call
                + _render_step(step_respond(expires=st["expires"], goto="c%dloop" % call), n,
                               call, bodydir))
    if st["kind"] == "recv":
        attrs = ' timeout="%d"' % st["timeout"] if st["timeout"] else ""
        if st["auth"]:
            label = "authfail"
            return ("""
  <recv request="%s"%s>
    <action><verifyauth assign_to="authok" username="%s" password="%s"/></action>
  </recv>
  <nop next="c%dauthok" test="authok"/>""" % (st["method"], attrs, st["auth"][0], st["auth"][1],
                                             call) + _RESPONSE % {
                "code": "403 Forbidden", "headers": "", "totag": ";tag=pbx[call_number]",
                "next": ""} +
                """
  <nop next="end"/>
  <label id="c%dauthok"/>""" % call)
        return '\n  <recv request="%s"%s/>' % (st["method"], attrs)
    # notify: the body goes in a file, since sipp reads "[" in a message as a keyword
    body_path = os.path.join(bodydir, "body-c%d-n%d.txt" % (call, n))
    with open(body_path, "w") as f:
        f.write(st["body"])
    return """
  <pause milliseconds="%d"/>
  <send>
    <![CDATA[
      NOTIFY [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$sub_to];tag=pbx[call_number]
      To: [$sub_from]
      [last_Call-ID:]
      CSeq: %d NOTIFY
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Event: %s
      Subscription-State: %s
      Content-Type: %s
      Content-Length: [len]

[file name="%s"]
    ]]>
  </send>
  <recv response="%d"/>""" % (st["pause_ms"], st.get("cseq") or n, st["event"], st["substate"],
                              st["ctype"], body_path, st.get("answer", 200))


def sipp_pbx_script(calls, bodydir):
    """A sipp UAS scenario playing a PBX. calls[i] is the list of steps for the i-th
    subscription dialog (SUBSCRIBE with a new Call-ID) it receives; each begins after that
    initial SUBSCRIBE has been received. sipp counts dialogs as calls: run it with
    -m len(calls). NOTIFY bodies are written to files in bodydir."""
    # sipp rejects a scenario that assigns a variable it never uses.
    any_notify = any(st["kind"] == "notify" for steps in calls for st in steps)
    captures = """
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="sub_from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="sub_to"/>"""
    out = ['<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="offhook test PBX">',
           """
  <recv request="SUBSCRIBE" crlf="true" rrs="true">
    <action>%s
      <assignstr assign_to="cn" value="[call_number]"/>
      <todouble assign_to="cnum" variable="cn"/>
    </action>
  </recv>""" % (captures if any_notify else "")]
    for i in range(len(calls)):
        out.append('\n  <nop><action><test assign_to="is%d" variable="cnum" compare="equal" '
                   'value="%d"/></action></nop>\n  <nop next="c%d" test="is%d"/>'
                   % (i + 1, i + 1, i + 1, i + 1))
    out.append('\n  <nop next="end"/>')
    for i, steps in enumerate(calls):
        out.append('\n  <label id="c%d"/>' % (i + 1))
        n = 0
        for st in steps:
            if st["kind"] == "notify":
                n += 1
            out.append(_render_step(st, n, i + 1, bodydir))
        out.append('\n  <nop next="end"/>')
    out.append('\n  <label id="end"/>\n</scenario>\n')
    return "".join(out)


def sipp_pbx_scenario(notifies, bodydir, expires=3600, final_unsubscribe=True):
    """A PBX that answers one SUBSCRIBE with 200 and sends the given NOTIFYs in its dialog,
    each after a pause, waiting for each 200. With final_unsubscribe it then answers the
    un-SUBSCRIBE a clean shutdown sends."""
    steps = [step_respond(expires=expires, initial=True)] + list(notifies)
    if final_unsubscribe:
        steps += [step_recv(timeout_ms=600000), step_respond(expires=0)]
    return sipp_pbx_script([steps], bodydir)


class SippPbx:
    """sipp as the PBX: answers sipbridge's SUBSCRIBE and plays NOTIFYs."""

    def __init__(self, workdir, scenario_xml, name="sipp-pbx", port=None, transport="u1"):
        self.dir = workdir
        self.port = port or free_port()
        self.name = name
        self.path = os.path.join(workdir, name + ".xml")
        with open(self.path, "w") as f:
            f.write(scenario_xml)
        self.transport = transport
        self.proc = None

    def listening(self):
        """True once sipp holds its port. Read from /proc/net, never by binding the port
        ourselves: a probe bind that lands at the instant sipp binds makes sipp fail with
        "errno = 98" (CI, test_notify_for_unknown_subscription)."""
        return port_bound(self.port, "tcp" if self.transport.startswith("t") else "udp")

    def start(self, calls=1):
        self.proc = Proc(self.name, [
            "sipp", "-sf", self.path, "-p", str(self.port), "-i", "127.0.0.1",
            "-t", self.transport, "-m", str(calls), "-nostdin",
            "-trace_err", "-error_file", os.path.join(self.dir, self.name + ".errors"),
            "-trace_msg", "-message_file", os.path.join(self.dir, self.name + ".messages"),
            "-timeout_error", "-max_recv_loops", "100"], self.dir)
        wait_until(lambda: self.listening() or not self.proc.alive(), what="sipp to listen")
        if not self.proc.alive():
            raise RuntimeError("sipp exited: %s" % self.proc.log()[-2000:])
        return self

    def messages(self):
        p = os.path.join(self.dir, self.name + ".messages")
        return open(p, errors="replace").read() if os.path.exists(p) else ""

    def finished(self):
        return not self.proc.alive()

    def stop(self):
        if self.proc:
            self.proc.stop(signal.SIGINT, timeout=1)  # then SIGKILL: sipp keeps no state


class PbxSim:
    """bench/pbxsim playing the PBX, driven call by call through its control socket:
    the test sets each extension's call state and reads back what the PBX holds."""

    def __init__(self, workdir, port, goodbye=True, expires=3600, expire=False):
        self.dir = workdir
        self.port = port
        self.ctl_port = free_port()
        self.goodbye = goodbye
        self.expire = expire  # end unrefreshed subscriptions (terminated;reason=timeout)
        self.expires = expires
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        argv = [binary("pbxsim"), "--port", str(self.port), "--control", str(self.ctl_port),
                "--expires", str(self.expires), "--stats-every", "3600"]
        if self.goodbye:
            argv.append("--goodbye")
        if self.expire:
            argv.append("--expire")
        if os.environ.get("OFFHOOK_PBXSIM_TRACE") == "1":
            argv += ["--trace", os.path.join(self.dir, "pbxsim.trace")]
        self.proc = Proc("pbxsim", argv, self.dir)
        wait_until(lambda: self.command("stats", timeout=0.2).startswith("subscribes="),
                   what="pbxsim control socket")
        return self

    def command(self, text, timeout=2.0):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        try:
            s.sendto(text.encode(), ("127.0.0.1", self.ctl_port))
            return s.recv(65536).decode()
        finally:
            s.close()

    def set(self, ext, state):
        """ext's call state becomes state; returns how many subscriptions were told."""
        out = self.command("set %s %s" % (ext, state))
        if not out.startswith("ok "):
            raise RuntimeError("pbxsim: %s" % out)
        return int(out.split()[1])

    def get(self):
        """{ext: (state, live subscriptions)} for every extension the PBX knows."""
        out = {}
        for line in self.command("get").splitlines():
            ext, state, n = line.split()
            out[ext] = (state, int(n))
        return out

    def dialogs(self, ext):
        """Live subscriptions the PBX holds for extension ext (one query, however many
        extensions it knows)."""
        return int(self.command("get %s" % ext).split()[2])

    def stats(self):
        return dict(kv.split("=") for kv in self.command("stats").split())

    def stop(self):
        if self.proc:
            self.proc.stop()


def control_socket(config_path, daemon):
    """Where a daemon run on config_path has its control socket: in run/ beside the file
    (the default, /run/offhook/, is the systemd unit's RuntimeDirectory)."""
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), "run", daemon + ".sock")


def control_dir(config_path):
    """run/ beside config_path, made writable by whichever user a test runs the daemons as
    (mode 1777, as /tmp: each may remove only its own socket)."""
    d = os.path.dirname(control_socket(config_path, "x"))
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o1777)
    return d


def offhook_config(path, redis_url, xmpp_port, sip_listen_port, pbx_port, metrics_sb,
                   metrics_comp, users, domain="phone.localhost", secret="s3cret",
                   extra="", loglevel="debug"):
    """Writes an offhook.conf (mode 0600: it holds secrets) and returns its path. Each
    daemon's control socket is beside it (control_socket())."""
    lines = [
        "[log]", "level = %s" % loglevel,
        "[sip]", "listen = udp:127.0.0.1:%d" % sip_listen_port,
        "pbx = sip:127.0.0.1:%d" % pbx_port,
        "expires = 3600",
        "[xmpp]", "host = 127.0.0.1", "port = %d" % xmpp_port,
        "domain = %s" % domain, "secret = %s" % secret,
        "[redis]", "url = %s" % redis_url,
        "[sipbridge]", "metrics = 127.0.0.1:%d" % metrics_sb,
        "control = %s" % control_socket(path, "sipbridge"),
        "[component]", "metrics = 127.0.0.1:%d" % metrics_comp,
        "control = %s" % control_socket(path, "component"),
        "[users]",
    ]
    for jid, aor in users:
        lines.append("%s = %s" % (jid, aor))
    text = "\n".join(lines) + "\n" + extra
    control_dir(path)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def binary(name):
    p = os.path.join(BUILD, name)
    if not os.path.exists(p):
        raise RuntimeError("%s not built (run cmake --build %s)" % (p, BUILD))
    return p


class Daemon(Proc):
    """offhook-sipbridge or offhook-component with a config file."""

    # What memcheck reports that is a defect (its output has nothing else with --quiet).
    VALGRIND_MARKERS = ("Invalid read", "Invalid write", "Invalid free", "Mismatched free",
                        "uninitialised", "Conditional jump", "Syscall param",
                        "definitely lost in", "overlap", "Process terminating")

    def __init__(self, name, config, workdir, metrics_port, env=None, wrapper=()):
        self.valgrind_logs = None
        if not wrapper and os.environ.get("OFFHOOK_VALGRIND") == "1":
            # scripts/valgrind.sh: every daemon under memcheck; reports fail the test.
            self.valgrind_logs = os.path.join(workdir, "%s.valgrind" % name)
            wrapper = ["valgrind", "--quiet", "--tool=memcheck", "--leak-check=full",
                       "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                       "--track-origins=yes", "--num-callers=30",
                       "--suppressions=%s" % os.path.join(ROOT, "tests", "valgrind.supp"),
                       "--log-file=%s.%%p" % self.valgrind_logs]
        argv = list(wrapper) + [binary("offhook-" + name), "-c", config]
        env = dict(os.environ, **(env or {}))
        # ASan builds: library-internal leaks at exit that are not offhook's (each
        # explained in the file).
        env.setdefault("LSAN_OPTIONS", "suppressions=%s:print_suppressions=0"
                       % os.path.join(ROOT, "tests", "lsan.supp"))
        super().__init__(name, argv, workdir, env=env)
        self.metrics_port = metrics_port

    def problems(self):
        """Sanitizer reports and crashes in this daemon's output."""
        text = self.log()
        out = []
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "Assertion", "Segmentation fault"):
            if marker in text:
                i = text.index(marker)
                out.append("%s: %s" % (self.name, text[max(0, i - 200):i + 3000]))
        if self.valgrind_logs:
            import glob
            for path in glob.glob(self.valgrind_logs + ".*"):
                report = open(path, errors="replace").read()
                if any(m in report for m in self.VALGRIND_MARKERS):
                    out.append("%s: valgrind %s:\n%s" % (self.name, path, report[:6000]))
        return out

    def metrics(self):
        status, body = http_get(self.metrics_port, "/metrics")
        return parse_metrics(body) if status == 200 else {}

    def ready(self):
        return http_get(self.metrics_port, "/readyz")[0] == 200


class Workdir:
    """A temporary directory kept on failure when OFFHOOK_KEEP=1."""

    def __init__(self, prefix="offhook-it-"):
        self.path = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.path, 0o755)

    def cleanup(self):
        if os.environ.get("OFFHOOK_KEEP") != "1":
            shutil.rmtree(self.path, ignore_errors=True)


class Stack:
    """Redis and an XMPP server (+ component, sipbridge, a PBX) wired together by one
    config: what every integration test, the demo and the benchmarks run on.

    xmpp is the XMPP server: "prosody" or "ejabberd" for one of the stack's own (started
    here with the chat users registered, stopped with the stack), or a running server
    object that several stacks share in turn (test_ejabberd's one ejabberd per module):
    its accounts were registered by its owner, and the ones a test logged in with are
    re-created at stop, so that the next stack finds empty rosters. prosody_kwargs and
    privilege configure a Prosody of the stack's own; anything else refuses them."""

    def __init__(self, workdir, users=(("alice@localhost", "1001"),), extra_config="",
                 xmpp="prosody", prosody_kwargs=None, chat_users=("alice", "bob", "carol"),
                 other_domain_users=("eve",), loglevel="debug", privilege=False,
                 redis_password=None):
        self.dir = workdir
        self.owns_xmpp = isinstance(xmpp, str)
        if xmpp != "prosody" and (prosody_kwargs or privilege):
            raise ValueError("prosody_kwargs and privilege are for a Prosody of the stack's "
                             "own, not %r" % (xmpp,))
        self.redis = Redis(workdir, password=redis_password).start()
        self.xmpp = None
        self.extras = []
        try:
            self.xmpp = self._start_xmpp(xmpp, prosody_kwargs, privilege, chat_users,
                                         other_domain_users) if self.owns_xmpp else xmpp
        except BaseException:
            self.redis.stop()   # nobody else holds this stack yet: nothing else stops it
            raise
        # ejabberd's error.log holds only errors and worse, and no test provokes one: any
        # new line is a problem. Prosody logs the errors tests provoke on purpose (a wrong
        # component secret, hostile stanzas) like any other, so its log is not checked.
        self.xmpp_errors_at_start = (len(self.xmpp.errors()) if self.xmpp.name == "ejabberd"
                                     else None)
        self.pbx_port = free_port()
        self.sip_port = free_port()
        self.metrics_sb = free_port()
        self.metrics_comp = free_port()
        self.users = users
        self.extra_config = extra_config
        self.loglevel = loglevel
        self.config = None
        self.write_config()
        self.component = None
        self.sipbridge = None
        self.pbx = None
        self.watchers = []
        self.all_daemons = []

    def _start_xmpp(self, kind, prosody_kwargs, privilege, chat_users, other_domain_users):
        if kind == "prosody":
            kw = dict(prosody_kwargs or {})
            # Prosody gets offhook's deploy recipe (deploy/prosody/offhook.cfg.lua); its
            # XEP-0356 block only when the test wants the server to grant privileges (a
            # dict: {namespace: type} instead of the recipe's IQ grant).
            kw.setdefault("recipe_blocks", ("privilege",) if privilege else ())
            if isinstance(privilege, dict):
                kw.setdefault("grants", privilege)
            kw.setdefault("vhost_extra", 'VirtualHost "other.localhost"\n')
            server = Prosody(self.dir, **kw)
        elif kind == "ejabberd":
            from ejabberd import Ejabberd   # it imports this module
            server = Ejabberd(self.dir)
        else:
            raise ValueError("unknown XMPP server %r (prosody or ejabberd)" % kind)
        for u in chat_users:
            server.register(u, "pw")
        for u in other_domain_users:
            server.register(u, "pw", host="other.localhost")
        return server.start()

    @property
    def prosody(self):
        """The stack's XMPP server, for a test that relies on its being Prosody."""
        if self.xmpp.name != "prosody":
            raise AttributeError("this stack runs %s, not Prosody" % self.xmpp.name)
        return self.xmpp

    @property
    def ejabberd(self):
        """The stack's XMPP server, for a test that relies on its being ejabberd."""
        if self.xmpp.name != "ejabberd":
            raise AttributeError("this stack runs %s, not ejabberd" % self.xmpp.name)
        return self.xmpp

    def aor(self, ext):
        """An extension on the sipp PBX, or ext itself when it is already a SIP URI; several
        comma-separated are several phones of one user."""
        if "," in ext:
            return ", ".join(self.aor(e.strip()) for e in ext.split(","))
        if ext.startswith("sip:") or ext.startswith("sips:"):
            return ext
        return "sip:%s@127.0.0.1:%d" % (ext, self.pbx_port)

    def write_config(self, users=None, extra=None):
        if users is not None:
            self.users = users
        if extra is not None:
            self.extra_config = extra
        self.config = offhook_config(
            os.path.join(self.dir, "offhook.conf"), self.redis.url(), self.xmpp.comp,
            self.sip_port, self.pbx_port, self.metrics_sb, self.metrics_comp,
            [(jid, self.aor(ext)) for jid, ext in self.users], extra=self.extra_config,
            loglevel=self.loglevel, domain=self.xmpp.domain, secret=self.xmpp.secret)
        return self.config

    def start_component(self, wait_ready=True, wrapper=(), env=None, timeout=30):
        self.component = Daemon("component", self.config, self.dir, self.metrics_comp,
                                wrapper=wrapper, env=env)
        self.all_daemons.append(self.component)
        if wait_ready:
            wait_until(self.component.ready, timeout=timeout, what="component /readyz")
        return self.component

    def start_pbx(self, notifies, **kw):
        self.pbx = SippPbx(self.dir, sipp_pbx_scenario(notifies, self.dir, **kw),
                           port=self.pbx_port)
        self.pbx.start()
        return self.pbx

    def start_pbx_script(self, calls, transport="u1"):
        """sipp playing a PBX from per-dialog step lists (see sipp_pbx_script)."""
        self.pbx = SippPbx(self.dir, sipp_pbx_script(calls, self.dir), port=self.pbx_port,
                           transport=transport)
        self.pbx.start(calls=len(calls))
        return self.pbx

    def start_sipbridge(self, wait_ready=False, wrapper=(), env=None):
        self.sipbridge = Daemon("sipbridge", self.config, self.dir, self.metrics_sb,
                                wrapper=wrapper, env=env)
        self.all_daemons.append(self.sipbridge)
        if wait_ready:
            wait_until(self.sipbridge.ready, timeout=30, what="sipbridge /readyz")
        return self.sipbridge

    def add(self, thing):
        """Something else the stack stops after the daemons (a PbxSim, a Kamailio, a load
        generator's Proc): anything with stop(). Returns it."""
        self.extras.append(thing)
        return thing

    def watcher(self, jid, password="pw", pep_nodes=(), reconnect=False):
        from watcher import Watcher
        w = Watcher(jid, password, self.xmpp.c2s, pep_nodes=pep_nodes, reconnect=reconnect)
        self.watchers.append(w)
        return w

    def logs(self):
        out = []
        for p in (self.sipbridge, self.component, self.pbx and self.pbx.proc):
            if p:
                out.append("==== %s ====\n%s" % (p.name, p.log()[-6000:]))
        out.append("==== %s ====\n%s" % (self.xmpp.name, self.xmpp.log()[-3000:]))
        return "\n".join(out)

    def stop(self):
        """Stops everything, each part whatever the others did; returns the problems seen
        (bad exits, sanitizer reports, new ejabberd errors, parts that would not stop)."""
        problems = []

        def attempt(what, fn):
            try:
                return fn()
            except Exception as e:  # keep stopping the others
                problems.append("%s: %r" % (what, e))
        for w in self.watchers:
            try:
                w.close()
            except Exception:
                pass
        if not self.owns_xmpp:
            # Done while the component is still connected: removing an account sends
            # unsubscribe/unsubscribed to its contacts, which ejabberd would otherwise try
            # to deliver over s2s.
            for jid, password in sorted({(w.jid, w.password) for w in self.watchers}):
                user, host = jid.split("@", 1)
                attempt("could not reset %s" % jid, lambda: (
                    self.xmpp.unregister(user, host), self.xmpp.register(user, password, host)))
        for d in self.daemons():
            was_alive = d.alive()
            rc = attempt(d.name, d.stop)
            if was_alive and rc != 0:
                problems.append("%s exited with %s" % (d.name, rc))
            # Reading its output can fail too (a log gone): the rest must still stop.
            problems += attempt("%s's output" % d.name, d.problems) or []
        for p in [self.pbx] + self.extras[::-1]:
            if p:
                attempt(getattr(p, "name", type(p).__name__), p.stop)
        if self.xmpp_errors_at_start is not None:
            new_errors = self.xmpp.errors()[self.xmpp_errors_at_start:]
            if new_errors.strip():
                problems.append("ejabberd error.log:\n" + new_errors[-4000:])
        if self.owns_xmpp:
            attempt(self.xmpp.name, self.xmpp.stop)
        attempt("redis", self.redis.stop)
        return problems

    def daemons(self):
        """Every daemon process started by this stack (restarts included)."""
        return [d for d in self.all_daemons if d]
