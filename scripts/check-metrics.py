#!/usr/bin/env python3
"""Checks that every metric family the daemons register is documented and watched, and
that nothing documents or watches a family that does not exist.

The families come from the sources (common/, sipbridge/, component/): each
metric_new(), metric_histogram() and metric_info() call, with its type, its label name and
the label values it declares up front. They are checked against:

  - docs/operator-guide.md, section 10: every family named there; in its tables, the
    type, the label name and every declared label value as the code has them;
  - the man pages, the guide, README.md and deploy/*/README.md: every offhook_* name
    and {label="value"} they quote exists;
  - deploy/grafana/offhook.json: every family is queried by some panel, and every name a
    query uses exists; no two panels share an id or a cell of the grid (branches that
    each add panels merge into exactly that);
  - deploy/prometheus/offhook.rules.yml: every name an alert uses exists.

Usage: scripts/check-metrics.py [--list]     (from anywhere; --list prints the families)
Exit status 0 when all agree, 1 with one line per difference otherwise."""

import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("common", "sipbridge", "component")

TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|\S')


def tokens(text):
    return TOKEN.findall(text)


def call_args(text, start):
    """Tokens of the argument list of the call whose '(' is at text[start], split at the
    top-level commas, adjacent string literals joined."""
    depth, i = 0, start
    while True:
        c = text[i]
        if c == '"':
            i = text.index('"', i + 1)
            while text[i - 1] == "\\":
                i = text.index('"', i + 1)
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
            if depth == 0:
                break
        i += 1
    args, cur, depth = [], [], 0
    for t in tokens(text[start + 1:i]):
        if t in "({[":
            depth += 1
        elif t in ")}]":
            depth -= 1
        if t == "," and depth == 0:
            args.append(cur)
            cur = []
            continue
        if t.startswith('"') and cur and cur[-1].startswith('"'):
            cur[-1] = cur[-1][:-1] + t[1:]
        else:
            cur.append(t)
    args.append(cur)
    return args


def string_list(arg, text, before, siblings=()):
    """The label values of a labels argument: NULL, a compound literal, or the name of an
    array defined earlier in the file or in another source of the same directory."""
    strs = [t[1:-1] for t in arg if t.startswith('"')]
    if strs or arg == ["NULL"]:
        return strs
    if len(arg) == 1:
        pattern = r"\b%s\s*\[\s*\w*\s*\]\s*=\s*\{([^}]*)\}" % re.escape(arg[0])
        defs = list(re.finditer(pattern, text[:before]))
        for other in siblings:
            defs = defs or list(re.finditer(pattern, open(other).read()))
        if defs:
            return [t[1:-1] for t in tokens(defs[-1].group(1)) if t.startswith('"')]
    raise ValueError("cannot read the label values %r" % " ".join(arg))


def code_families():
    """{name: {"type", "label", "values", "where"}} from the sources."""
    fams = {}
    for d in SOURCES:
        for fn in sorted(os.listdir(os.path.join(ROOT, d))):
            if not fn.endswith(".c") or fn == "metrics.c":
                continue
            path = os.path.join(d, fn)
            text = open(os.path.join(ROOT, path)).read()
            for m in re.finditer(r"\b(metric_new|metric_histogram|metric_info)\s*\(", text):
                args = call_args(text, m.end() - 1)
                where = "%s:%d" % (path, text.count("\n", 0, m.start()) + 1)
                if m.group(1) == "metric_new":
                    kind = {"METRIC_COUNTER": "counter", "METRIC_GAUGE": "gauge",
                            "METRIC_HISTOGRAM": "histogram"}[args[0][0]]
                    name = args[1][0][1:-1]
                    label = None if args[3] == ["NULL"] else args[3][0][1:-1]
                    values = string_list(args[4], text, m.start(), [
                        os.path.join(ROOT, d, f) for f in sorted(os.listdir(os.path.join(ROOT, d)))
                        if f.endswith(".c") and f != fn])
                elif m.group(1) == "metric_histogram":
                    kind, name, label, values = "histogram", args[0][0][1:-1], None, []
                else:
                    kind, name, label, values = "gauge", args[0][0][1:-1], None, []
                if name in fams and fams[name]["type"] != kind:
                    raise ValueError("%s: %s registered with two types" % (where, name))
                fams.setdefault(name, {"type": kind, "label": label, "values": set(),
                                       "where": where})["values"].update(values)
    return fams


def base_name(n, fams):
    for suffix in ("_bucket", "_sum", "_count"):
        if n.endswith(suffix) and fams.get(n[:-len(suffix)], {}).get("type") == "histogram":
            return n[:-len(suffix)]
    return n


# offhook_* identifiers in the docs that are not metrics.
# The ejabberd access rule and API account ACL of deploy/ejabberd.
NOT_METRICS = {"offhook_privileged", "offhook_api"}


def names_in(text):
    return set(re.findall(r"\b(?:offhook|process)_[a-z][a-z0-9_]*\b", text)) - NOT_METRICS


def check_guide(fams, out):
    text = open(os.path.join(ROOT, "docs", "operator-guide.md")).read()
    start = text.find("\n## 10 ")
    if start < 0:
        out.append("docs/operator-guide.md: no section 10 (the metrics reference)")
        return
    sec = text[start:]
    nxt = sec.find("\n## ", 1)
    sec = sec[:nxt] if nxt > 0 else sec
    where = "docs/operator-guide.md section 10"
    mentioned = names_in(sec)
    for n in sorted(set(fams) - mentioned):
        out.append("%s: %s (%s) is not documented" % (where, n, fams[n]["where"]))
    for n in sorted(mentioned - set(fams)):
        if base_name(n, fams) not in fams:
            out.append("%s: %s is documented but not registered by the code" % (where, n))
    rows = {}  # a family may have a row per daemon (offhook_redis_connected)
    for line in sec.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"`[a-z0-9_]+`", cells[0]):
            rows.setdefault(cells[0].strip("`"), []).append(cells)
    for n, row_list in sorted(rows.items()):
        f = fams.get(n)
        if not f:
            continue
        values, listed_any = set(), False
        for cells in row_list:
            if cells[1] != f["type"]:
                out.append("%s: %s is a %s, the table says %s" % (where, n, f["type"],
                                                                  cells[1]))
            m = re.match(r"`([a-z_]+)`", cells[2])
            label = m.group(1) if m else None
            if label != f["label"]:
                out.append("%s: %s's label is %s, the table says %s" % (
                    where, n, f["label"] or "(none)", label or "(none)"))
                continue
            listed = re.match(r"`[a-z_]+`: (.*)", cells[2])
            if listed:
                listed_any = True
                values |= {v.strip().strip("`") for v in listed.group(1).split(",")}
        if not listed_any:
            continue
        for v in sorted(f["values"] - values):
            out.append('%s: %s{%s="%s"} (declared at %s) is missing from the table' % (
                where, n, f["label"], v, f["where"]))
        if f["values"]:
            for v in sorted(values - f["values"]):
                out.append('%s: %s{%s="%s"} is in the table but not declared in %s' % (
                    where, n, f["label"], v, f["where"]))


def check_mentions(fams, out):
    """Every offhook_* name, and {label="value"}, that the man pages, the guide, README.md
    and the deploy/ READMEs quote exists in the code."""
    files = ["README.md", "docs/operator-guide.md"]
    files += ["man/" + f for f in sorted(os.listdir(os.path.join(ROOT, "man")))]
    for d in sorted(os.listdir(os.path.join(ROOT, "deploy"))):
        if os.path.exists(os.path.join(ROOT, "deploy", d, "README.md")):
            files.append("deploy/%s/README.md" % d)
    for fn in files:
        text = open(os.path.join(ROOT, fn)).read().replace("\\-", "-").replace("\\(dq", '"')
        for n in sorted(names_in(text)):
            if base_name(n, fams) not in fams and not n.endswith("_"):
                out.append("%s: %s is not registered by the code" % (fn, n))
        for n, label, value in sorted(set(re.findall(
                r'\b(offhook_[a-z0-9_]+)\{([a-z_]+)="([^"]*)"\}', text))):
            f = fams.get(n)
            if label in ("job", "instance"):
                continue  # Prometheus's target labels
            if f and (label != f["label"] or (f["values"] and value not in f["values"])):
                out.append('%s: %s{%s="%s"}: no such label value in %s' % (
                    fn, n, label, value, f["where"]))


def check_queries(fams, out, where, exprs, must_cover):
    used = set()
    for e in exprs:
        used |= names_in(e)
    for n in sorted(used):
        if base_name(n, fams) not in fams:
            out.append("%s: queries %s, which the code does not register" % (where, n))
    if must_cover:
        covered = {base_name(n, fams) for n in used}
        for n in sorted(set(fams) - covered):
            out.append("%s: no panel shows %s (%s)" % (where, n, fams[n]["where"]))


def dashboard_exprs():
    d = json.load(open(os.path.join(ROOT, "deploy", "grafana", "offhook.json")))
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t.get("expr", "") for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(d.get("panels", []))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        exprs.append(q.get("query", "") if isinstance(q, dict) else q or "")
    return exprs


def check_dashboard_layout(out):
    where = "deploy/grafana/offhook.json"
    d = json.load(open(os.path.join(ROOT, "deploy", "grafana", "offhook.json")))
    ids, cells = {}, {}
    for p in d.get("panels", []):
        title = p.get("title", "?")
        if p.get("id") in ids:
            out.append("%s: panels %r and %r share id %s" % (where, ids[p["id"]], title, p["id"]))
        ids.setdefault(p.get("id"), title)
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            out.append("%s: panel %r is wider than the grid" % (where, title))
        clash = set()
        for y in range(g.get("y", 0), g.get("y", 0) + g.get("h", 0)):
            for x in range(g.get("x", 0), g.get("x", 0) + g.get("w", 0)):
                other = cells.setdefault((x, y), title)
                if other != title:
                    clash.add(other)
        for other in sorted(clash):
            out.append("%s: panels %r and %r overlap" % (where, other, title))


def rules_exprs():
    path = os.path.join(ROOT, "deploy", "prometheus", "offhook.rules.yml")
    exprs, cur = [], None
    for line in open(path):
        m = re.match(r"\s*expr:\s*(>-|\|)?\s*(.*)$", line)
        if m:
            cur = m.group(2)
            exprs.append(cur)
            continue
        if cur is not None and re.match(r"\s{10,}\S", line) and not re.match(r"\s*\w+:", line):
            exprs[-1] += " " + line.strip()
        else:
            cur = None
    return exprs


def main(argv):
    fams = code_families()
    if "--list" in argv:
        for n, f in sorted(fams.items()):
            print("%-55s %-9s %-10s %s" % (n, f["type"], f["label"] or "",
                                           ",".join(sorted(f["values"]))))
        return 0
    out = []
    check_guide(fams, out)
    check_mentions(fams, out)
    check_queries(fams, out, "deploy/grafana/offhook.json", dashboard_exprs(), True)
    check_dashboard_layout(out)
    check_queries(fams, out, "deploy/prometheus/offhook.rules.yml", rules_exprs(), False)
    for line in out:
        print(line)
    print("check-metrics: %d families in the code, %d difference%s" % (
        len(fams), len(out), "" if len(out) == 1 else "s"), file=sys.stderr)
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
