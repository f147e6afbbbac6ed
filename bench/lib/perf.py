"""perf profiles of the daemons after the window: perf record -g on each pid, then a
report per library and per symbol, addresses in stripped libraries placed after the
nearest exported symbol."""

import bisect
import os
import re
import signal
import subprocess
import time


def perf_start(pid, out):
    return subprocess.Popen(["perf", "record", "-g", "-F", "4999", "-p", str(pid), "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def nearest_symbols(lib):
    """Sorted (address, name) of lib's exported functions, to place addresses in a
    stripped library (Debian's libsofia-sip-ua has no symbols for its static functions)."""
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True)
    syms = []
    for line in out.stdout.splitlines():
        p = line.split()
        if len(p) == 3 and p[1] in "tTwW":
            syms.append((int(p[0], 16), p[2].split("@")[0]))
    return sorted(syms)


def place(addr, syms):
    i = bisect.bisect_right(syms, (addr, "~")) - 1
    return "%s+0x%x" % (syms[i][1], addr - syms[i][0]) if i >= 0 else "?"


def perf_stop(p, data, report, limit=0.5):
    """Ends perf record; writes the report: share per library, then per symbol
    (perf report --no-children --sort dso,sym), unresolved addresses in stripped
    libraries placed after the nearest exported symbol."""
    p.send_signal(signal.SIGINT)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()

    def rep(sort, lim):
        r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", sort,
                            "--stdio", "-g", "none", "--percent-limit", str(lim)],
                           capture_output=True, text=True, timeout=600)
        return [x for x in r.stdout.splitlines()
                if x.strip() and (not x.startswith("#") or "Samples" in x)]
    by_dso = rep("dso", 0.3)
    by_sym = rep("dso,sym", limit)
    libs = {}
    out = []
    for line in by_sym:
        m = re.match(r"\s*[0-9.]+%\s+(\S+)\s+\[\.\]\s+0x([0-9a-f]+)\s*$", line)
        if m:
            path = "/usr/lib/x86_64-linux-gnu/" + m.group(1)
            if os.path.exists(path):
                if path not in libs:
                    libs[path] = nearest_symbols(path)
                line += "   (%s)" % place(int(m.group(2), 16), libs[path])
        out.append(line)
    with open(report, "w") as f:
        f.write("## by library\n" + "\n".join(by_dso) + "\n## by symbol\n" +
                "\n".join(out) + "\n")
    return out


def profile(a, wd, pids, tag):
    """perf record -g on each daemon for a.perf seconds (after the window, so perf's own
    CPU does not count in it); the reports go to a.perf_out (default: the workdir)."""
    outdir = a.perf_out or wd.path
    os.makedirs(outdir, exist_ok=True)
    running = {n: perf_start(pid, os.path.join(outdir, "%s-%s.data" % (tag, n)))
               for n, pid in pids.items()}
    time.sleep(a.perf)
    out = {}
    for n, p in running.items():
        rep = os.path.join(outdir, "%s-%s.txt" % (tag, n))
        lines = perf_stop(p, os.path.join(outdir, "%s-%s.data" % (tag, n)), rep)
        out[n] = {"report": rep, "top": [" ".join(x.split()) for x in lines[:12]]}
    return out
