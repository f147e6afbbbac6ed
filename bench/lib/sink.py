"""The watching end: xmppsink (bench/sink.c), one XMPP client logged in as WATCHER that
writes one line per presence received ("<t_us> <from> <show> <status>"), built here when
CMake has not; and what its log says, while the run goes on (SinkTail) and after it
(read_sink)."""

import os
import subprocess

from calls import UNKNOWN, VIEW as CLIENT_VIEW
from harness import BUILD, Proc, wait_until

from . import BENCH, DOMAIN, WATCHER

# What the sink writes for each call state: (show, status), its show being the presence
# type where the stanza has no <show/>; the views are calls.py's, as a client shows them.
VIEW = {state: (show or ptype, status) for state, (ptype, show, status) in CLIENT_VIEW.items()}
UNKNOWN_STATUS = UNKNOWN[2]


def sink_binary():
    """BUILD/xmppsink, compiled by hand from bench/sink.c when CMake has not built it (see
    bench/CMakeLists-snippet.txt) or it is older than its source."""
    src = os.path.join(BENCH, "sink.c")
    path = os.path.join(BUILD, "xmppsink")
    if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(src):
        return path
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "libstrophe"],
                           capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["cc", "-O2", "-g", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
                    "-Wno-unused-parameter", src, "-o", path] + flags, check=True)
    return path


class Sink:
    """xmppsink logged in to the XMPP server's c2s port as WATCHER, online (its initial
    presence sent), its log followed by a SinkTail."""

    name = "sink"

    def __init__(self, workdir, c2s_port):
        self.log_path = os.path.join(workdir, "sink.log")
        self.proc = Proc("sink", [sink_binary(), "--jid", WATCHER, "--password", "pw",
                                  "--port", str(c2s_port), "--out", self.log_path], workdir)
        try:
            wait_until(lambda: "sink: online" in self.proc.log() or not self.proc.alive(),
                       timeout=20, what="sink online")
            if not self.proc.alive():
                raise RuntimeError("sink failed: " + self.proc.log())
        except BaseException:
            self.proc.stop()
            raise
        self.tail = SinkTail(self.log_path)

    def stop(self):
        return self.proc.stop()


class SinkTail:
    """Follows the sink's log while the run goes on: lines so far and, per contact,
    whether the last presence said "unknown"."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.rest = b""
        self.lines = 0
        self.unknown = {}

    def poll(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self
        self.pos += len(data)
        parts = (self.rest + data).split(b"\n")
        self.rest = parts.pop()
        for line in parts:
            f = line.split(b" ", 3)
            if len(f) < 3:
                continue
            self.lines += 1
            bare = f[1].split(b"/", 1)[0]  # the component may send from a resource
            if bare.endswith(b"@" + DOMAIN.encode()):
                self.unknown[bare] = len(f) > 3 and f[3] == UNKNOWN_STATUS.encode()
        return self

    def seen(self):
        return len(self.unknown)

    def known(self):
        return sum(1 for v in self.unknown.values() if not v)


def read_sink(path):
    """The sink's log -> {user index: [(t_us, (show, status))]} for phone contacts."""
    by_user = {}
    suffix = "@" + DOMAIN
    with open(path, errors="replace") as f:
        for line in f:
            p = line.rstrip("\n").split(" ", 3)
            if len(p) < 3 or not p[1].startswith("u"):
                continue
            bare = p[1].split("/", 1)[0]
            if not bare.endswith(suffix):
                continue
            try:
                i = int(bare[1:-len(suffix)])
            except ValueError:
                continue
            by_user.setdefault(i, []).append((int(p[0]), (p[2], p[3] if len(p) > 3 else "")))
    return by_user
