"""Kamailio 5.6 as a real PBX-like proxy and presence server for offhook's integration
tests, and sipp "phones" that register with it and call each other through it.

Kamailio runs deploy/kamailio/kamailio.cfg in the foreground on 127.0.0.1 and a free UDP
port, with a fresh copy of Debian's db_text tables in its own directory; every NOTIFY and
PUBLISH it sends is logged (WITH_LOCAL_REQUEST_LOG) and can be read back with
Kamailio.local_requests(). Waits poll; nothing sleeps blindly.

Phones are sipp processes with scenarios written here (sipp's built-in uac ignores
Record-Route; these route ACK and BYE by the recorded route set):

    phone = SippPhone(workdir, kam, "alice")   # a phone for sip:alice@<kamailio>
    phone.answer(ring_ms=1500)                 # its UA: 100, 180, 200 after ring_ms, BYE
    phone.register()                           # REGISTER Contact: that UA, Expires 3600;
                                               # Kamailio keeps the binding, sipp exits
    call = SippCaller(workdir, kam, "carol").call("alice", talk_ms=2000)
    call.wait()                                # rang, answered, talked, hung up (BYE)
    phone.unregister()                         # REGISTER Expires: 0
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import uuid

from harness import ROOT, Proc, free_port, wait_until

CONFIG = os.path.join(ROOT, "deploy", "kamailio", "kamailio.cfg")
DBTEXT_TEMPLATE = "/usr/share/kamailio/dbtext/kamailio"


def options_ping(port, host="127.0.0.1", timeout=0.3):
    """Sends one OPTIONS to host:port over UDP; returns the status line of the answer, or
    None if nothing answered within timeout."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        lport = s.getsockname()[1]
        branch = "z9hG4bK-%s" % uuid.uuid4().hex
        msg = ("OPTIONS sip:%s:%d SIP/2.0\r\n"
               "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s;rport\r\n"
               "From: <sip:probe@127.0.0.1:%d>;tag=%s\r\n"
               "To: <sip:%s:%d>\r\n"
               "Call-ID: %s\r\n"
               "CSeq: 1 OPTIONS\r\n"
               "Max-Forwards: 70\r\n"
               "Content-Length: 0\r\n\r\n") % (host, port, lport, branch, lport,
                                              uuid.uuid4().hex[:8], host, port,
                                              uuid.uuid4().hex)
        s.sendto(msg.encode(), (host, port))
        data, _ = s.recvfrom(65535)
        return data.decode(errors="replace").split("\r\n", 1)[0]
    except OSError:
        return None
    finally:
        s.close()


class Kamailio:
    """Kamailio 5.6 with deploy/kamailio/kamailio.cfg, in the foreground."""

    def __init__(self, workdir, name="kamailio", port=None, debug=2, log_local=True,
                 tls_cert=None):
        """tls_cert: (certificate, key) paths: also listen for SIP over TLS on tls_port
        (WITH_TLS), presenting that certificate."""
        self.name = name
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.uri = "sip:%s:%d" % (self.host, self.port)
        self.db = os.path.join(self.dir, "db")
        self.debug = debug
        self.log_local = log_local
        self.proc = None
        self.log_at_stop = None  # length of the log when stop() sent SIGTERM
        self.tls_cert = tls_cert
        self.tls_port = free_port() if tls_cert else None

    def aor(self, user):
        """The AOR a phone registers and offhook subscribes to: sip:user@127.0.0.1:port.
        Kamailio keys presentities without the port (sip:user@127.0.0.1)."""
        return "sip:%s@%s:%d" % (user, self.host, self.port)

    def argv(self):
        defines = ["KAM_IP=%s" % self.host, "KAM_PORT=%d" % self.port,
                   'KAM_URI="%s"' % self.uri, 'KAM_DOMAIN="%s"' % self.host,
                   'KAM_DBURL="text://%s"' % self.db, 'KAM_RUNDIR="%s"' % self.dir,
                   "KAM_DEBUG=%d" % self.debug]
        if self.log_local:
            defines.append("WITH_LOCAL_REQUEST_LOG")
        if self.tls_cert:
            tls_cfg = os.path.join(self.dir, "tls.cfg")
            with open(tls_cfg, "w") as f:
                f.write("[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                        "require_certificate = no\ncertificate = %s\nprivate_key = %s\n\n"
                        "[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
                        "require_certificate = no\n" % self.tls_cert)
            defines += ["WITH_TLS", "KAM_TLS_PORT=%d" % self.tls_port,
                        'KAM_TLS_CFG="%s"' % tls_cfg]
        argv = ["kamailio", "-f", CONFIG, "-DD", "-E", "-m", "64", "-M", "8"]
        for d in defines:
            argv += ["-A", d]
        return argv

    def check_config(self):
        """kamailio -c with this instance's defines; returns (ok, output)."""
        out = subprocess.run(self.argv() + ["-c"], capture_output=True, text=True, timeout=30)
        return out.returncode == 0, out.stdout + out.stderr

    def start(self, timeout=15):
        # db_text writes its tables back at shutdown; such rows can break the next start.
        shutil.rmtree(self.db, ignore_errors=True)
        shutil.copytree(DBTEXT_TEMPLATE, self.db)
        self.proc = Proc(self.name, self.argv(), self.dir)
        self.log_at_stop = None
        try:
            wait_until(lambda: not self.proc.alive() or
                       (options_ping(self.port) or "").startswith("SIP/2.0 200"),
                       timeout=timeout, interval=0.1, what="kamailio OPTIONS 200")
        except TimeoutError:
            self.proc.stop()
            raise RuntimeError("kamailio did not answer:\n" + self.proc.log()[-3000:])
        if not self.proc.alive():
            raise RuntimeError("kamailio exited with %s:\n%s" % (
                self.proc.p.returncode, self.proc.log()[-3000:]))
        return self

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def log(self):
        return self.proc.log() if self.proc else ""

    def local_requests(self, method=None, event=None):
        """[(start line, headers dict (lower-case names), body)] of the requests Kamailio
        itself sent (NOTIFY, PUBLISH), oldest first, filtered by method and Event."""
        out = []
        for m in re.finditer(r"LOCAL-REQUEST-BEGIN [^\n]*\n(.*?)\nLOCAL-REQUEST-END",
                             self.log(), re.S):
            raw = m.group(1)
            head, _, body = raw.replace("\r\n", "\n").partition("\n\n")
            lines = head.split("\n")
            hdrs = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                hdrs.setdefault(name.strip().lower(), value.strip())
            if method and not lines[0].startswith(method + " "):
                continue
            if event and hdrs.get("event", "").split(";")[0].strip() != event:
                continue
            out.append((lines[0], hdrs, body))
        return out

    # ERRORs Kamailio 5.6.3 logs in normal operation with this config.
    KNOWN_ERRORS = (
        # each un-SUBSCRIBE with subs_db_mode 0; the final NOTIFY still goes out
        "delete_subs(): Failed to delete subscription from memory",
    )

    def problems(self):
        """Log lines at ERROR or worse, except KNOWN_ERRORS, logged before stop(). Once
        SIGTERM is sent, Kamailio's TCP main process may log "CRITICAL: receive_fd(): EOF"
        for each TCP worker that exited before it (seen here: the workers' "signal 15
        received" lines on either side of it); that is the order of shutdown, not a
        fault. The same line before stop() (a worker that died) is still reported."""
        text = self.log()
        if self.log_at_stop is not None:
            text = text[:self.log_at_stop]
        return [line for line in text.splitlines()
                if ("CRITICAL:" in line or "ALERT:" in line or " ERROR: " in line)
                and not any(k in line for k in self.KNOWN_ERRORS)]

    def stop(self):
        if self.proc:
            self.log_at_stop = len(self.log())
            return self.proc.stop(signal.SIGTERM)
        return None


# ---- sipp phones ---------------------------------------------------------------------

SDP = """v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000"""


def register_scenario(user, contact_port, expires, cseq, domain):
    """One REGISTER (To/From sip:user@domain, Contact at 127.0.0.1:contact_port) and its
    200: sipp's exit status says whether the registrar accepted it."""
    return """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="offhook test phone: REGISTER">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:{domain} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@{domain}>;tag=[pid]reg{cseq}
      To: <sip:{user}@{domain}>
      Call-ID: [call_id]
      CSeq: {cseq} REGISTER
      Contact: <sip:{user}@127.0.0.1:{contact_port}>
      Expires: {expires}
      Max-Forwards: 70
      User-Agent: offhook-test-phone
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
""".format(user=user, domain=domain, contact_port=contact_port, expires=expires,
           cseq=cseq)


HOLD_SDP = SDP + "\na=sendonly"      # RFC 3264 8.4: the caller puts the call on hold
HELD_SDP = SDP + "\na=recvonly"      # ... and the other side answers it


REINVITE_ANSWER = """
  <recv request="INVITE" crlf="true"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

{sdp}
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>"""


def callee_scenario(user, ring_ms, pre_ring_ms=0, held=False):
    """A phone's user agent: each INVITE gets 100 at once, rings (180) after pre_ring_ms,
    is answered (200) after ring_ms more, and the call lasts until the caller's BYE.
    Responses copy Record-Route. held: the caller puts the call on hold once (a re-INVITE
    with a=sendonly), answered a=recvonly."""
    return """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="offhook test phone: answer">
  <recv request="INVITE" crlf="true" rrs="true"/>
  <send>
    <![CDATA[
      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{pre_ring_ms}"/>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]{user}[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{ring_ms}"/>
  <send retrans="500">
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]{user}[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

{sdp}
    ]]>
  </send>
  <recv request="ACK" crlf="true"/>{reinvite}
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Content-Length: 0

    ]]>
  </send>
</scenario>
""".format(user=user, ring_ms=ring_ms, pre_ring_ms=pre_ring_ms, sdp=SDP,
           reinvite=REINVITE_ANSWER.format(user=user, sdp=HELD_SDP) if held else "")


HOLD_STEPS = """
  <send retrans="500">
    <![CDATA[
      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:{user}@{domain}>;tag=[pid]{user}[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

{sdp}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:{user}@{domain}>;tag=[pid]{user}[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{hold_ms}"/>"""


def caller_scenario(user, target, domain, talk_ms, hold_ms=None):
    """INVITE sip:target@domain through the proxy, wait for 180 and 200, ACK, talk for
    talk_ms, hang up with BYE. ACK and BYE go to the callee's Contact with Route headers
    from the Record-Route of the 200 (sipp sends every request to the proxy). hold_ms:
    after talking, put the call on hold (re-INVITE, a=sendonly) for that long, then hang
    up."""
    return """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="offhook test phone: call">
  <send retrans="500">
    <![CDATA[
      INVITE sip:{target}@{domain} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:{user}@{domain}>;tag=[pid]{user}[call_number]
      To: <sip:{target}@{domain}>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: offhook-test-phone
      Content-Type: application/sdp
      Content-Length: [len]

{sdp}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180"/>
  <recv response="200" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:{user}@{domain}>;tag=[pid]{user}[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{talk_ms}"/>{hold}
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: <sip:{user}@{domain}>;tag=[pid]{user}[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Contact: <sip:{user}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
""".format(user=user, target=target, domain=domain, talk_ms=talk_ms, sdp=SDP,
           hold=HOLD_STEPS.format(user=user, domain=domain, sdp=HOLD_SDP, hold_ms=hold_ms)
           if hold_ms is not None else "")


def _sipp_argv(scenario, port, remote, workdir, name, calls=1, extra=()):
    return ["sipp", "-sf", scenario, "-p", str(port), "-i", "127.0.0.1", "-t", "u1",
            "-m", str(calls), "-nostdin", "-timeout_error",
            "-trace_err", "-error_file", os.path.join(workdir, name + ".errors"),
            "-trace_msg", "-message_file", os.path.join(workdir, name + ".messages")
            ] + list(extra) + ([remote] if remote else [])


def _read(path):
    return open(path, errors="replace").read() if os.path.exists(path) else ""


class SippPhone:
    """A desk phone for sip:user@<kamailio>: a sipp UA on its own port (answer()) that
    Kamailio routes calls to once register() has bound it."""

    def __init__(self, workdir, kam, user):
        self.dir = workdir
        self.kam = kam
        self.user = user
        self.port = free_port()
        self.call_id = "reg-%s-%s" % (user, uuid.uuid4().hex[:12])
        self.cseq = 0
        self.ua = None
        self.ua_name = None
        self.runs = 0

    @property
    def domain(self):
        return "%s:%d" % (self.kam.host, self.kam.port)

    def register(self, expires=3600, timeout=10):
        """One REGISTER for this phone's Contact; returns when Kamailio answered 200
        (raises otherwise). Kamailio keeps the binding for `expires` seconds."""
        self.cseq += 1
        self.runs += 1
        name = "sipp-%s-reg%d" % (self.user, self.runs)
        path = os.path.join(self.dir, name + ".xml")
        with open(path, "w") as f:
            f.write(register_scenario(self.user, self.port, expires, self.cseq, self.domain))
        port = free_port()
        with open(os.path.join(self.dir, name + ".out"), "wb") as logf:
            rc = subprocess.run(_sipp_argv(path, port, self.domain, self.dir, name,
                                           extra=["-recv_timeout", str(timeout * 1000),
                                                  "-cid_str", self.call_id]),
                                stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir,
                                timeout=timeout + 10).returncode
        if rc != 0:
            raise AssertionError("REGISTER of %s (Expires %d) failed, sipp exit %d:\n%s" % (
                self.user, expires, rc, _read(os.path.join(self.dir, name + ".messages"))))
        return self

    def unregister(self, timeout=10):
        return self.register(expires=0, timeout=timeout)

    def answer(self, ring_ms=1500, pre_ring_ms=0, calls=1, held=False):
        """Starts this phone's UA: 100 Trying, 180 after pre_ring_ms, 200 after ring_ms
        more; `calls` calls, then exits. held: each call is put on hold once."""
        self.stop()
        self.runs += 1
        name = self.ua_name = "sipp-%s-ua%d" % (self.user, self.runs)
        path = os.path.join(self.dir, name + ".xml")
        with open(path, "w") as f:
            f.write(callee_scenario(self.user, ring_ms, pre_ring_ms, held))
        self.ua = Proc(name, _sipp_argv(path, self.port, None, self.dir, name, calls=calls),
                       self.dir)
        return self

    def ua_messages(self):
        """What the UA sent and received so far (sipp -trace_msg)."""
        return _read(os.path.join(self.dir, self.ua_name + ".messages")) if self.ua_name else ""

    def stop(self):
        if self.ua:
            self.ua.stop(signal.SIGUSR1)


class SippCall:
    def __init__(self, proc, name, workdir):
        self.proc = proc
        self.name = name
        self.dir = workdir

    def wait(self, timeout=30):
        """Waits for the call to end; raises unless it rang, was answered and hung up."""
        wait_until(lambda: not self.proc.alive(), timeout=timeout, what="sipp call to end")
        rc = self.proc.p.returncode
        if rc != 0:
            raise AssertionError("call failed, sipp exit %s:\n%s\n%s" % (
                rc, self.proc.log()[-2000:], self.messages()[-6000:]))
        return self

    def messages(self):
        return _read(os.path.join(self.dir, self.name + ".messages"))

    def stop(self):
        self.proc.stop(signal.SIGUSR1)


class SippCaller:
    """A phone that places calls through Kamailio as sip:user@<kamailio>."""

    def __init__(self, workdir, kam, user):
        self.dir = workdir
        self.kam = kam
        self.user = user
        self.calls = []

    def call(self, target, talk_ms=2000, timeout_s=30, hold_ms=None):
        """Starts one call to sip:target@<kamailio>; returns a SippCall (wait() on it).
        hold_ms: after talk_ms, the call is put on hold for that long before the BYE."""
        n = len(self.calls) + 1
        name = "sipp-%s-call%d" % (self.user, n)
        path = os.path.join(self.dir, name + ".xml")
        domain = "%s:%d" % (self.kam.host, self.kam.port)
        with open(path, "w") as f:
            f.write(caller_scenario(self.user, target, domain, talk_ms, hold_ms))
        port = free_port()
        proc = Proc(name, _sipp_argv(path, port, domain, self.dir, name,
                                     extra=["-timeout", "%ds" % timeout_s]), self.dir)
        c = SippCall(proc, name, self.dir)
        self.calls.append(c)
        return c

    def stop(self):
        for c in self.calls:
            c.stop()


# ---- a test PKI (openssl CLI) ----------------------------------------------------------

def make_pki(directory, server_cn="127.0.0.1"):
    """A CA, a server certificate for Kamailio (CN server_cn, SAN IP and DNS) and offhook's
    tls_dir (agent.pem: its own certificate and key; cafile.pem: the CA), plus a second,
    unrelated CA. Returns a dict of paths: ca, server_cert, server_key, tls_dir,
    other_ca."""
    os.makedirs(directory, exist_ok=True)

    def run(*argv):
        subprocess.run(["openssl"] + list(argv), cwd=directory, check=True,
                       capture_output=True, timeout=60)

    def ca(name):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=offhook test %s" % name, "-keyout", name + ".key", "-out", name + ".pem")

    def leaf(name, cn, san):
        with open(os.path.join(directory, name + ".ext"), "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                    "keyUsage=digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n" % san)
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % cn,
            "-keyout", name + ".key", "-out", name + ".csr")
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", name + ".ext", "-out", name + ".pem")

    ca("ca")
    ca("other-ca")
    # Sofia matches the proxy host against DNS names, URI SANs and the CN, not IP SANs.
    leaf("server", server_cn, "IP:%s,URI:sip:%s" % (server_cn, server_cn))
    leaf("agent", "offhook.test", "DNS:offhook.test")
    tls_dir = os.path.join(directory, "offhook-tls")
    os.makedirs(tls_dir, exist_ok=True)
    with open(os.path.join(tls_dir, "agent.pem"), "w") as f:
        f.write(open(os.path.join(directory, "agent.pem")).read() +
                open(os.path.join(directory, "agent.key")).read())
    os.chmod(os.path.join(tls_dir, "agent.pem"), 0o600)
    with open(os.path.join(tls_dir, "cafile.pem"), "w") as f:
        f.write(open(os.path.join(directory, "ca.pem")).read())
    return {"ca": os.path.join(directory, "ca.pem"),
            "other_ca": os.path.join(directory, "other-ca.pem"),
            "server_cert": os.path.join(directory, "server.pem"),
            "server_key": os.path.join(directory, "server.key"),
            "tls_dir": tls_dir}

