#!/usr/bin/env python3
"""Checks a daemon's /metrics against the exporter conventions offhook keeps, beyond what
`promtool check metrics` looks at:

  - every counter family has a sample from the first scrape (labels declared up front,
    not created on first use: rate() and alerts need the zero);
  - label values hold no white space (they are identifiers: "not_well_formed", not
    "not well-formed");
  - numbers (bucket bounds included) carry no float noise (0.00025, not
    0.00025000000000000001).

Usage: check-exposition.py [--json] SOURCE...   SOURCE: http://HOST:PORT/metrics, a file,
or - for standard input. Exit status 0 if nothing was found, 1 otherwise, 2 on a usage
or fetch error. Run it against running daemons:

    scripts/check-exposition.py http://127.0.0.1:9464/metrics http://127.0.0.1:9465/metrics
"""

import json
import re
import sys
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: \d+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def read(source):
    if source == "-":
        return sys.stdin.read()
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=5) as r:
            return r.read().decode()
    with open(source) as f:
        return f.read()


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
            return name[:-len(suffix)]
    return name


def digits(text):
    """The significant digits of a decimal number's text."""
    mantissa = re.split(r"[eE]", text)[0].lstrip("+-").replace(".", "")
    return mantissa.strip("0")


def noisy(text):
    """True if text is a number written with more digits than it needs to read back as
    the same double (Python's repr is the shortest such text)."""
    try:
        v = float(text)
    except ValueError:
        return False
    if v != v or v in (float("inf"), float("-inf")):
        return False
    return len(digits(text)) > len(digits(repr(v)))


def check(text):
    """Returns a list of findings: dicts with kind, metric and detail."""
    types, samples, found = {}, {}, []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind
            samples.setdefault(name, 0)
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            found.append({"kind": "unparsable", "metric": "", "detail": line})
            continue
        name, labels, value = m.groups()
        fam = family_of(name, types)
        samples[fam] = samples.get(fam, 0) + 1
        for k, v in LABEL.findall(labels or ""):
            if re.search(r"\s", v):
                found.append({"kind": "label_with_space", "metric": fam,
                              "detail": '%s="%s"' % (k, v)})
            if k == "le" and noisy(v):
                found.append({"kind": "float_noise", "metric": fam, "detail": 'le="%s"' % v})
        if noisy(value):
            found.append({"kind": "float_noise", "metric": fam, "detail": value})
    for fam, kind in sorted(types.items()):
        if kind == "counter" and samples.get(fam, 0) == 0:
            found.append({"kind": "counter_without_samples", "metric": fam,
                          "detail": "no sample until first use"})
    return found


def main(argv):
    as_json = "--json" in argv
    sources = [a for a in argv if a != "--json"]
    if not sources or any(a in ("-h", "--help") for a in sources):
        print(__doc__.strip(), file=sys.stderr if not sources else sys.stdout)
        return 2 if not sources else 0
    report, bad = {}, False
    for src in sources:
        try:
            findings = check(read(src))
        except OSError as e:
            print("check-exposition: %s: %s" % (src, e), file=sys.stderr)
            return 2
        report[src] = findings
        bad = bad or bool(findings)
    if as_json:
        json.dump(report, sys.stdout, indent=1)
        print()
    else:
        for src, findings in report.items():
            for f in findings:
                print("%s: %s %s %s" % (src, f["kind"], f["metric"], f["detail"]))
            if not findings:
                print("%s: ok" % src)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
