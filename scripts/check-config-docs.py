#!/usr/bin/env python3
"""Checks that the documentation of every configuration key agrees with the key table of
common/config.c, as `offhook-sipbridge --print-defaults` prints it (the key, its default,
and "(restart to change)" for the keys a reload does not apply):

  - man/offhook.conf.5: an entry per key under its section, with the default, ending in
    "Restart needed." or "Reloadable." as the table says;
  - docs/operator-guide.md section 2.1: a row per key, with the default, and "no" in the
    SIGHUP column exactly for the restart-only keys.

(config/offhook.conf.example is checked by the unit test test_example_covers_every_key.)

Usage: scripts/check-config-docs.py [PATH/TO/offhook-sipbridge]    (default: build/)
Exit status 0 when all agree, 1 with one line per difference, 2 if the binary is missing."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table(binary):
    """[(section, key, default, restart_only)] in table order."""
    out = subprocess.run([binary, "--print-defaults"], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    keys, section = [], None
    for i, line in enumerate(out):
        if line.startswith("["):
            section = line.strip("[]")
        elif line.startswith(";") and not line.startswith("; ") and "=" in line:
            name, _, default = line[1:].partition(" = ")
            keys.append((section, name.strip(), default.strip(),
                         "(restart to change)" in out[i - 1]))
    return keys


def man_entries():
    """{(section, key): (default text, body)} from offhook.conf.5's KEYS."""
    text = open(os.path.join(ROOT, "man", "offhook.conf.5")).read()
    entries, section, cur, prev = {}, None, None, ""
    for line in text.split("\n"):
        m = re.match(r"\.SS \[(\w+)\]", line)
        if line.startswith((".SS", ".SH")):
            section, cur, prev = (m.group(1) if m else None), None, line
            continue
        if prev == ".TP" and section:
            m = re.match(r'\.BI? "?([a-z_]+) = "? ?(.*)$', line)
            cur = (section, m.group(1)) if m else None
            if cur:
                entries[cur] = [m.group(2).strip('"'), ""]
        elif cur and line != ".TP":
            entries[cur][1] += line + "\n"
        prev = line
    return entries


def guide_rows():
    """{(section, key): (default cell, SIGHUP cell)} from the guide's section 2.1 table."""
    text = open(os.path.join(ROOT, "docs", "operator-guide.md")).read()
    start = text.index("\n### 2.1 ")
    sec = text[start:text.index("\n## ", start + 1)]
    rows = {}
    for line in sec.split("\n"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.match(r"`\[(\w+)\] (\w+)`(.*)", cells[0]) if len(cells) >= 4 else None
        if not m:
            continue
        for name in [m.group(2)] + re.findall(r"`(\w+)`", m.group(3)):
            rows[(m.group(1), name)] = (cells[1], cells[2])
    return rows


def main(argv):
    binary = argv[0] if argv else os.path.join(ROOT, "build", "offhook-sipbridge")
    if not os.path.exists(binary):
        print("check-config-docs: %s not found (build first)" % binary, file=sys.stderr)
        return 2
    keys = table(binary)
    man, guide, out = man_entries(), guide_rows(), []
    for section, name, default, restart in keys:
        k = "[%s] %s" % (section, name)
        e = man.get((section, name))
        if not e:
            out.append("man/offhook.conf.5: %s is not documented" % k)
        else:
            if default and default != e[0].replace("\\-", "-"):
                out.append("man/offhook.conf.5: %s's default is %s, the page says %s" % (
                    k, default, e[0]))
            says_restart = "Restart needed" in e[1]
            says_reload = "Reloadable" in e[1]
            if says_restart == says_reload or says_restart != restart:
                out.append("man/offhook.conf.5: %s %s, the page says %s" % (
                    k, "needs a restart" if restart else "is reloadable",
                    "Restart needed" if says_restart else
                    "Reloadable" if says_reload else "neither"))
        row = guide.get((section, name))
        if not row:
            out.append("docs/operator-guide.md 2.1: %s has no row" % k)
            continue
        if default and "`%s`" % default not in row[0] and default not in row[0].split("`"):
            out.append("docs/operator-guide.md 2.1: %s's default %s is not in '%s'" % (
                k, default, row[0]))
        if (row[1] == "no") != restart:
            out.append("docs/operator-guide.md 2.1: %s %s, the SIGHUP column says '%s'" % (
                k, "needs a restart" if restart else "is reloadable", row[1]))
    for k in sorted(set(man) - {(s, n) for s, n, _, _ in keys}):
        out.append("man/offhook.conf.5: [%s] %s is not a key" % k)
    for k in sorted(set(guide) - {(s, n) for s, n, _, _ in keys}):
        out.append("docs/operator-guide.md 2.1: [%s] %s is not a key" % k)
    for line in out:
        print(line)
    print("check-config-docs: %d keys, %d difference%s" % (
        len(keys), len(out), "" if len(out) == 1 else "s"), file=sys.stderr)
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
