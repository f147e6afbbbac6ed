"""Issue 16: the checks an operator runs before starting offhook. `--check-config` run by
root checks as the daemon's user (as prosodyctl does), so a secret file that user cannot
read fails the check instead of the unit's ExecStartPre=."""

import os
import pwd
import shutil
import subprocess
import tempfile

import pytest

from harness import binary

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
