"""Issue 16: the checks an operator runs before starting offhook.

- `--check-config` run by root checks as the daemon's user (as prosodyctl does), so a
  secret file that user cannot read fails the check instead of the unit's ExecStartPre=.
- `offhookctl check` tries Redis (AUTH, PING, role), the XMPP server (a real XEP-0114
  handshake, against Prosody) and the PBX (SIP OPTIONS, against Kamailio over UDP and TLS
  and sipp over TCP), with one verdict each, --json and exit status 4 on a failure."""

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

import pytest

from harness import Prosody, Proc, Redis, SippPbx, binary, free_port, wait_until
from kamailio import Kamailio, make_pki

NOBODY = pwd.getpwnam("nobody")


def run(argv, user=None, timeout=20):
    """Runs argv (as user, by name, when given: this process must be root)."""
    def drop():
        pw = pwd.getpwnam(user)
        os.initgroups(pw.pw_name, pw.pw_gid)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=drop if user else None)


@pytest.fixture
def confdir():
    """A directory everyone may enter (like /etc/offhook for group offhook), removed after."""
    d = tempfile.mkdtemp(prefix="offhook-check-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write(path, text, mode):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)
    return path


def config_with_secret_file(confdir, secret_mode, secret_owner=0):
    secret = write(os.path.join(confdir, "xmpp.secret"), "s3cret-for-check\n", secret_mode)
    os.chown(secret, secret_owner, -1)
    # No inline secret: the file itself may be world-readable.
    return write(os.path.join(confdir, "offhook.conf"),
                 "[xmpp]\nsecret_file = %s\n[users]\nalice@localhost = sip:1001@127.0.0.1\n"
                 % secret, 0o644), secret


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
def test_check_config_reads_as_the_daemons_user(confdir):
    conf, secret = config_with_secret_file(confdir, 0o600)
    component = binary("offhook-component")

    # Root could read the secret; the user the daemon runs as cannot: the check says so.
    out = run([component, "-c", conf, "--check-config", "--check-as", "nobody"])
    assert out.returncode == 1, out
    assert "checking as user nobody (uid %d" % NOBODY.pw_uid in out.stdout
    assert "%s:2: [xmpp] secret_file: cannot read %s" % (conf, secret) in out.stderr, out.stderr
    assert "Permission denied" in out.stderr
    assert "s3cret" not in out.stdout + out.stderr

    # Checking as root proves nothing about the daemon, but is possible when asked for.
    out = run([component, "-c", conf, "--check-config", "--check-as", "root"])
    assert out.returncode == 0, out
    assert "checking as root, not as the daemon's user" in out.stdout
    assert "%s: OK (1 users)" % conf in out.stdout

    # Once the daemon's user can read it, the check passes as that user.
    os.chown(secret, NOBODY.pw_uid, -1)
    out = run([component, "-c", conf, "--check-config", "--check-as", "nobody"])
    assert out.returncode == 0, out
    assert "%s: OK (1 users)" % conf in out.stdout


@needs_root
def test_check_config_without_the_daemons_user(confdir):
    """Root, no --check-as, and no user offhook (a source install before adduser): the
    check refuses to pretend, and says what to do."""
    try:
        pwd.getpwnam("offhook")
        pytest.skip("user offhook exists here (the package is installed)")
    except KeyError:
        pass
    conf, _ = config_with_secret_file(confdir, 0o600)
    for prog in ("offhook-sipbridge", "offhook-component"):
        out = run([binary(prog), "-c", conf, "--check-config"])
        assert out.returncode == 1, out
        assert "OK" not in out.stdout
        assert "cannot check as user 'offhook'" in out.stderr, out.stderr
        assert "--check-as USER" in out.stderr


@needs_root
def test_check_config_as_a_plain_user(confdir):
    """Not root: the check runs as whoever runs it (ExecStartPre= runs it as the daemon's
    user); asking for another user is refused, asking for oneself is fine."""
    conf, secret = config_with_secret_file(confdir, 0o600, secret_owner=NOBODY.pw_uid)
    sipbridge = binary("offhook-sipbridge")
    out = run([sipbridge, "-c", conf, "--check-config"], user="nobody")
    assert out.returncode == 0, out
    assert "checking as" not in out.stdout
    out = run([sipbridge, "-c", conf, "--check-config", "--check-as", "root"], user="nobody")
    assert out.returncode == 1
    assert "only root can check as another user" in out.stderr
    out = run([sipbridge, "-c", conf, "--check-config", "--check-as", "nobody"], user="nobody")
    assert out.returncode == 0, out
    # --check-as without --check-config is a usage error.
    out = run([sipbridge, "-c", conf, "--check-as", "nobody"])
    assert out.returncode == 2 and "--check-as goes with --check-config" in out.stderr


# ---- offhookctl check --------------------------------------------------------------------

REDIS_PASSWORD = "Rds-check-9Qz"
XMPP_SECRET = "Cmp-check-4Tw"


def ctl_config(path, redis_port, xmpp_port, pbx, redis_password=REDIS_PASSWORD,
               xmpp_secret=XMPP_SECRET, domain="phone.localhost", extra=""):
    return write(path, "[sip]\npbx = %s\n[xmpp]\nport = %d\ndomain = %s\nsecret = %s\n"
                       "[redis]\nurl = redis://127.0.0.1:%d/0\npassword = %s\n%s"
                       "[users]\nalice@localhost = sip:1001@127.0.0.1\n"
                 % (pbx, xmpp_port, domain, xmpp_secret, redis_port, redis_password, extra),
                 0o600)


def ctl_check(conf, *args):
    """offhookctl check: (exit status, {name: [verdict lines]}, output)."""
    out = run([binary("offhookctl"), "-c", conf, "-t", "2", "check"] + list(args))
    lines = {}
    for line in out.stdout.splitlines():
        lines.setdefault(line.split(":", 1)[0], []).append(line)
    return out.returncode, lines, out.stdout + out.stderr


@pytest.fixture
def upstreams(workdir):
    """Redis with a password, Prosody with the component, Kamailio: all reachable."""
    redis = Redis(workdir, password=REDIS_PASSWORD).start()
    prosody = Prosody(workdir, secret=XMPP_SECRET).start()
    kam = Kamailio(workdir, log_local=False).start()
    yield redis, prosody, kam
    kam.stop()
    prosody.stop()
    redis.stop()


def test_check_all_reachable(workdir, upstreams):
    redis, prosody, kam = upstreams
    conf = ctl_config(os.path.join(workdir, "ok.conf"), redis.port, prosody.comp, kam.uri)
    rc, lines, text = ctl_check(conf)
    assert rc == 0, text
    assert lines["redis"][0].startswith("redis: ok: 127.0.0.1:%d db 0: Redis " % redis.port)
    assert "master, PING answered" in lines["redis"][0]
    assert lines["xmpp"] == [lines["xmpp"][0]] and lines["xmpp"][0].startswith(
        "xmpp: ok: 127.0.0.1:%d phone.localhost: handshake accepted for phone.localhost"
        % prosody.comp), text
    assert lines["pbx"][0].startswith("pbx: ok: udp 127.0.0.1:%d: answered OPTIONS with 200 "
                                      "Keepalive (offhook-kamailio)" % kam.port), text
    # Prosody saw a component authenticate (and go away again).
    wait_until(lambda: "phone.localhost" in prosody.log() and
               "authenticated" in prosody.log().lower(), what="prosody's log of the handshake")
    # The same as JSON, and no secret anywhere.
    out = run([binary("offhookctl"), "-c", conf, "--json", "check"])
    doc = json.loads(out.stdout)
    assert out.returncode == 0 and doc["ok"] is True
    assert [c["check"] for c in doc["checks"]] == ["redis", "xmpp", "pbx"]
    assert all(c["ok"] and c["ms"] >= 0 and c["target"] for c in doc["checks"])
    for secret in (REDIS_PASSWORD, XMPP_SECRET):
        assert secret not in text + out.stdout + out.stderr
    # One check alone.
    rc, lines, _ = ctl_check(conf, "xmpp")
    assert rc == 0 and list(lines) == ["xmpp"]


def test_check_says_what_is_wrong(workdir, upstreams):
    """Each upstream wrongly configured: each verdict names the cause; exit status 4."""
    redis, prosody, kam = upstreams
    # A PBX address where a socket is bound but nothing answers (a firewall's drop).
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        conf = ctl_config(os.path.join(workdir, "bad.conf"), redis.port, prosody.comp,
                          "sip:127.0.0.1:%d" % silent.getsockname()[1],
                          redis_password="wrong-pw", xmpp_secret="wrong-secret")
        rc, lines, text = ctl_check(conf)
    finally:
        silent.close()
    assert rc == 4, text
    assert lines["redis"][0].startswith("redis: failed: ") and "AUTH refused: WRONGPASS" in \
        lines["redis"][0], text
    assert "the server refused the secret for phone.localhost" in lines["xmpp"][0], text
    assert "no answer within 2000 ms" in lines["pbx"][0], text
    out = run([binary("offhookctl"), "-c", conf, "--json", "-t", "1", "check", "redis"])
    assert out.returncode == 4 and json.loads(out.stdout)["ok"] is False
    assert "wrong-pw" not in text and "wrong-secret" not in text

    # A domain the server has no component for; a PBX port nothing listens on.
    dead = free_port()
    conf = ctl_config(os.path.join(workdir, "bad2.conf"), redis.port, prosody.comp,
                      "sip:127.0.0.1:%d" % dead, domain="nope.localhost")
    rc, lines, text = ctl_check(conf, "xmpp", "pbx")
    assert rc == 4
    assert "the server has no component nope.localhost" in lines["xmpp"][0], text
    assert lines["pbx"][0].startswith("pbx: failed: udp 127.0.0.1:%d: connection refused: "
                                      "nothing listens" % dead), text

    # [xmpp] port pointing at the client port is not a component port.
    conf = ctl_config(os.path.join(workdir, "bad3.conf"), redis.port, prosody.c2s, kam.uri)
    rc, lines, text = ctl_check(conf, "xmpp")
    assert rc == 4 and lines["xmpp"][0].startswith("xmpp: failed: "), text


def test_check_redis_replica(workdir):
    """A read-only replica would refuse sipbridge's writes: the check says so."""
    master = Redis(workdir).start()
    port = free_port()
    d = os.path.join(workdir, "replica")
    os.makedirs(d)
    replica = Proc("redis-replica", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--dir", d,
                                     "--replicaof", "127.0.0.1", str(master.port)], d)
    try:
        wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "PING"],
                                          capture_output=True, text=True).stdout.strip() == "PONG",
                   what="the replica")
        conf = write(os.path.join(workdir, "r.conf"),
                     "[redis]\nurl = redis://127.0.0.1:%d/3\n[users]\na@localhost = sip:1@x\n"
                     % port, 0o600)
        rc, lines, text = ctl_check(conf, "redis")
        assert rc == 4, text
        assert lines["redis"][0].startswith("redis: failed: 127.0.0.1:%d db 3: Redis " % port)
        assert "a read-only replica: sipbridge's writes would be refused" in text
    finally:
        replica.stop()
        master.stop()


def test_check_xmpp_while_the_component_runs(stack_factory):
    """Prosody refuses a second connection for the domain with "conflict", after checking
    the secret: the verdict is ok, and the running component stays connected."""
    s = stack_factory()
    s.start_component()
    rc, lines, text = ctl_check(s.config, "xmpp")
    assert rc == 0, text
    assert "secret accepted; phone.localhost is already connected" in lines["xmpp"][0], text
    assert s.component.metrics()["offhook_xmpp_connected"] == 1
    assert "event=disconnected" not in s.component.log()


def test_check_pbx_over_tls(workdir):
    """sips: goes over TLS, with [sip] tls_dir's certificates and tls_verify, as sipbridge's
    own connection would: Kamailio's certificate chains to cafile.pem and names the host;
    against another CA the check fails, with tls_verify = none it passes."""
    pki = make_pki(os.path.join(workdir, "pki"))
    kam = Kamailio(workdir, log_local=False,
                   tls_cert=(pki["server_cert"], pki["server_key"])).start()
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", kam.tls_port), 1).close()
                   is None, what="kamailio's TLS port")
        pbx = "sips:127.0.0.1:%d" % kam.tls_port
        listen = "[sip]\nlisten = udp:127.0.0.1:5070, tls:127.0.0.1:5071\ntls_dir = %s\n"
        conf = ctl_config(os.path.join(workdir, "tls.conf"), 1, 1, pbx,
                          extra=listen % pki["tls_dir"])
        rc, lines, text = ctl_check(conf, "pbx")
        assert rc == 0, text
        assert lines["pbx"] == [lines["pbx"][0]]
        assert lines["pbx"][0].startswith("pbx: ok: tls 127.0.0.1:%d: answered OPTIONS with 200"
                                          % kam.tls_port), text
        assert "certificate CN=127.0.0.1, checked: subject" in text

        # The PBX's certificate from a CA offhook does not trust.
        other = os.path.join(workdir, "other-tls")
        os.makedirs(other)
        shutil.copy(pki["other_ca"], os.path.join(other, "cafile.pem"))
        shutil.copy(os.path.join(pki["tls_dir"], "agent.pem"), other)
        conf = ctl_config(os.path.join(workdir, "tls2.conf"), 1, 1, pbx,
                          extra=listen % other)
        rc, lines, text = ctl_check(conf, "pbx")
        assert rc == 4
        assert "does not chain to %s/cafile.pem" % other in lines["pbx"][0], text
        conf = ctl_config(os.path.join(workdir, "tls3.conf"), 1, 1, pbx,
                          extra=(listen % other) + "tls_verify = none\n")
        rc, lines, text = ctl_check(conf, "pbx")
        assert rc == 0 and "checked: none" in text, text
    finally:
        kam.stop()


OPTIONS_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="options answered">
  <recv request="OPTIONS"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]opt
      [last_Call-ID:]
      [last_CSeq:]
      Server: sipp options test
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def test_check_pbx_over_tcp(workdir):
    """;transport=tcp is checked over TCP (sipp answering one OPTIONS)."""
    sipp = SippPbx(workdir, OPTIONS_UAS, name="sipp-options", transport="t1").start()
    try:
        conf = ctl_config(os.path.join(workdir, "tcp.conf"), 1, 1,
                          "sip:127.0.0.1:%d;transport=tcp" % sipp.port)
        rc, lines, text = ctl_check(conf, "pbx")
        assert rc == 0, text
        assert lines["pbx"][0].startswith("pbx: ok: tcp 127.0.0.1:%d: answered OPTIONS with "
                                          "200 OK (sipp options test) (" % sipp.port), text
        assert "OPTIONS sip:127.0.0.1:%d;transport=tcp SIP/2.0" % sipp.port in sipp.messages()
    finally:
        sipp.stop()
