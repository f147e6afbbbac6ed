"""A real terminal XMPP client end to end: profanity, in a detached tmux session, logged
in as Bob, subscribes to alice@phone.localhost and shows that phone contact going from
offline (the phone's state unknown) to do-not-disturb "On the phone" when sipp (playing
Asterisk) reports a call that stays up. The screen profanity draws is what is asserted on.

profanity keeps everything under $HOME, $XDG_CONFIG_HOME and $XDG_DATA_HOME, which point
into the test's work directory; tmux runs its own server on a socket there too."""

import os
import shutil
import subprocess

import pytest

from calls import CONTACT, body
from harness import scenario_notify, step_answer_forever, step_respond, wait_until
COLS, ROWS = 200, 50

pytestmark = pytest.mark.skipif(not (shutil.which("profanity") and shutil.which("tmux")),
                                reason="profanity and tmux are not installed")


class Tmux:
    """One detached tmux session on a private server (socket in the work directory)."""

    def __init__(self, workdir, name="prof"):
        self.sock = os.path.join(workdir, "tmux.sock")
        self.name = name
        self.env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8")
        self.env.pop("TMUX", None)
        self.pid = None

    def tmux(self, *args, check=True):
        return subprocess.run(["tmux", "-S", self.sock] + list(args), env=self.env,
                              capture_output=True, text=True, timeout=10, check=check)

    def start(self, argv, env):
        cmd = ["env"] + ["%s=%s" % kv for kv in sorted(env.items())] + list(argv)
        # Not the user's ~/.tmux.conf: keep the pane if the client dies, so its last words
        # stay on the screen. A detached session keeps the fixed size it is created with.
        conf = self.sock + ".conf"
        with open(conf, "w") as f:
            f.write("set-option -g remain-on-exit on\n")
        self.tmux("-f", conf, "new-session", "-d", "-s", self.name,
                  "-x", str(COLS), "-y", str(ROWS), *cmd)
        self.pid = int(self.tmux("display-message", "-p", "-t", self.name,
                                 "#{pane_pid}").stdout)

    def keys(self, text):
        """Types text literally, then Enter."""
        self.tmux("send-keys", "-t", self.name, "-l", text)
        self.tmux("send-keys", "-t", self.name, "Enter")

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", self.name).stdout

    def kill(self):
        """Ends the tmux server (its client gets SIGHUP) and waits for the client to go."""
        if os.path.exists(self.sock):
            self.tmux("kill-server", check=False)
        if self.pid:
            wait_until(lambda: not _running(self.pid), timeout=5, what="profanity to exit")


def _running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def roster_panel(screen):
    """The roster panel's lines (the right-hand column of profanity's console window), cut
    at the column where its group headers start; [] while it is not drawn."""
    lines = screen.splitlines()
    cols = [line.find("Do not disturb (") for line in lines if "Do not disturb (" in line]
    if not cols:
        return []
    return [line[cols[0]:].rstrip() for line in lines]


def contact_in_group(screen, group, status=None):
    """True when the roster panel lists CONTACT under the group header (profanity's
    roster by presence), with its status message on the next line if status is given."""
    panel = roster_panel(screen) + [""]
    for i, line in enumerate(panel[:-2]):
        if line.startswith(group + " (") and panel[i + 1].strip() == CONTACT:
            if status is None or panel[i + 2].strip() == '"%s"' % status:
                return True
    return False


def test_profanity_shows_alice_on_the_phone(stack_factory, workdir):
    s = stack_factory()
    s.start_component()

    home = os.path.join(workdir, "profanity-home")
    for d in ("config", "data"):
        os.makedirs(os.path.join(home, d), exist_ok=True)
    env = {"HOME": home, "XDG_CONFIG_HOME": os.path.join(home, "config"),
           "XDG_DATA_HOME": os.path.join(home, "data"), "TERM": "tmux-256color",
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    log = os.path.join(home, "data", "profanity", "logs", "profanity.log")
    t = Tmux(workdir)
    screen = ""
    try:
        t.start(["profanity", "-l", "DEBUG"], env)
        wait_until(lambda: "Type '/help' to show complete help." in t.screen(), timeout=10,
                   what="profanity's welcome screen")
        t.keys("/connect bob@localhost server 127.0.0.1 port %d tls disable" % s.prosody.c2s)
        wait_until(lambda: "Enter password:" in t.screen(), timeout=10,
                   what="profanity's password prompt")
        t.keys("pw")
        wait_until(lambda: "bob@localhost/" in t.screen() and
                   "logged in successfully" in t.screen(), timeout=10, what="Bob logged in")
        # The welcome banner off the console; status messages shown in the roster panel.
        t.keys("/clear")
        t.keys("/roster show status")
        wait_until(lambda: "Roster status enabled" in t.screen(), timeout=10,
                   what="roster status shown")
        t.keys("/sub request %s" % CONTACT)

        # The component accepts, and before sipbridge has said anything the phone is
        # unknown: it sends unavailable with the status "Phone status unknown", which
        # profanity does not show for a contact with no resource online: the contact is
        # just listed under Offline.
        wait_until(lambda: "Subscription received from %s" % CONTACT in t.screen() and
                   contact_in_group(t.screen(), "Offline"), timeout=10,
                   what="alice's phone contact subscribed, listed offline")

        # Now a call that stays up: Asterisk's "in use", and the PBX then only answers
        # refreshes.
        inuse = body("dialog-info/asterisk-inuse.xml")
        s.start_pbx_script([[step_respond(expires=3600, initial=True),
                             scenario_notify(inuse, version=1, pause_ms=100),
                             step_answer_forever()]])
        s.start_sipbridge()
        wait_until(lambda: contact_in_group(t.screen(), "Do not disturb", "On the phone"),
                   timeout=15, what="alice's phone contact in Do not disturb, On the phone")
        # The same in the console: profanity's presence line and /who.
        t.keys("/who")
        wait_until(lambda: "All contacts:" in t.screen(), timeout=10, what="/who")
        screen = t.screen()
    except (TimeoutError, subprocess.SubprocessError) as e:
        try:
            screen = t.screen()
        except subprocess.SubprocessError:
            pass
        tail = open(log, errors="replace").read()[-4000:] if os.path.exists(log) else ""
        raise AssertionError("%s\n---- screen ----\n%s\n---- profanity.log ----\n%s\n%s"
                             % (e, screen, tail, s.logs()))
    finally:
        t.kill()
        if screen:
            with open(os.path.join(workdir, "profanity-screen.txt"), "w") as f:
                f.write(screen)

    print("\n---- profanity (tmux %dx%d) ----\n%s" % (COLS, ROWS, screen.rstrip()))
    assert contact_in_group(screen, "Do not disturb", "On the phone")
    assert '++ %s (phone) is dnd, "On the phone"' % CONTACT in screen
    assert '%s is dnd, "On the phone"' % CONTACT in screen.split("All contacts:")[1]
    assert s.redis.cli("HGET", "offhook:user:alice@localhost", "state") == "on_call"
