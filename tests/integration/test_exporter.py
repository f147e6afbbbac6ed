"""Issue 16: the HTTP endpoint follows Prometheus exporter conventions. Both daemons'
real /metrics pass `promtool check metrics`, carry offhook_build_info, render histogram
bounds without float noise; / is a page linking the endpoints; a method other than GET
or HEAD gets 405 with Allow (RFC 9110), not 501."""

import http.client
import json
import os
import re
import shutil
import subprocess

import pytest

from harness import (DATA, ROOT, binary, http_get, scenario_notify, step_answer_forever,
                     step_respond, wait_until)

INUSE = open(os.path.join(DATA, "dialog-info/asterisk-inuse.xml")).read()


def request(port, method, path, body=None):
    """(status, headers dict, body) of one HTTP request to 127.0.0.1:port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode()
    finally:
        conn.close()


def version():
    out = subprocess.run([binary("offhook-sipbridge"), "--version"], capture_output=True,
                         text=True, check=True).stdout
    return out.split()[-1]


@pytest.fixture
def running(stack_factory):
    """Both daemons up, with one call seen (so the latency histogram has samples)."""
    s = stack_factory()
    s.start_component()
    s.start_pbx_script([[step_respond(expires=3600, initial=True),
                         scenario_notify(INUSE, version=0, pause_ms=100),
                         step_answer_forever()]])
    s.start_sipbridge(wait_ready=True)
    wait_until(lambda: s.redis.cli("HGET", "offhook:user:alice@localhost", "state")
               == "on_call", what="alice on the phone")
    return s


def test_metrics_pass_promtool(running):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian package prometheus, scripts/setup.sh)")
    for name, port in (("sipbridge", running.metrics_sb), ("component", running.metrics_comp)):
        status, body = http_get(port, "/metrics")
        assert status == 200
        out = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                             text=True, timeout=20)
        # promtool prints lint problems and exits 3 (1 for a parse error) when there are any.
        assert out.returncode == 0, "%s: promtool check metrics:\n%s%s" % (
            name, out.stdout, out.stderr)


def test_build_info_and_clean_bucket_bounds(running):
    v = version()
    for port in (running.metrics_sb, running.metrics_comp):
        body = http_get(port, "/metrics")[1]
        m = re.search(r'^offhook_build_info\{([^}]*)\} 1$', body, re.M)
        assert m, body[:2000]
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        assert labels["version"] == v
        # A build from a git checkout names its commit; the label is absent otherwise.
        assert set(labels) <= {"version", "commit"}
        if "commit" in labels:
            assert re.fullmatch(r"[0-9a-f]{7,40}", labels["commit"]), labels
    body = http_get(running.metrics_comp, "/metrics")[1]
    les = re.findall(r'^offhook_event_latency_seconds_bucket\{le="([^"]+)"\}', body, re.M)
    assert "0.00025" in les and "2.5" in les and les[-1] == "+Inf", les
    for le in les[:-1]:
        # Each bound in its shortest exact form: what the code and the docs say.
        assert repr(float(le)) in (le, le + ".0"), "float noise in le=%r" % le


def test_index_page_and_methods(running):
    for name, port in (("offhook-sipbridge", running.metrics_sb),
                       ("offhook-component", running.metrics_comp)):
        status, headers, body = request(port, "GET", "/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert "<title>%s</title>" % name in body
        hrefs = re.findall(r'href="([^"]+)"', body)
        assert hrefs == ["metrics", "healthz", "readyz"]
        # The links work from the page's own URL.
        for h in hrefs:
            assert request(port, "GET", "/" + h)[0] == 200, h
        assert request(port, "HEAD", "/metrics")[0] == 200
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
            status, headers, _ = request(port, method, "/metrics", body="x")
            assert status == 405, (method, status)
            assert headers.get("allow") == "GET, HEAD", (method, headers)
        assert request(port, "GET", "/nope")[0] == 404


# Follow-ups in sipbridge/ and component/ (issue 16; the integrator applies them after the
# restructuring): until then these are the only findings, and each test says so exactly,
# so it fails both on a new violation and once a follow-up lands (then empty the set).
PENDING_NO_ZERO = set()
PENDING_SPACES = set()


def exposition_findings(port):
    out = subprocess.run([os.path.join(ROOT, "scripts", "check-exposition.py"), "--json",
                          "http://127.0.0.1:%d/metrics" % port],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode in (0, 1), out.stderr
    return [f for findings in json.loads(out.stdout).values() for f in findings]


def test_exposition_conventions(stack_factory):
    """Counters have a sample from the first scrape, label values have no spaces, numbers
    no float noise (scripts/check-exposition.py), on both daemons, after a NOTIFY body
    that is not well-formed has been counted."""
    s = stack_factory()
    s.start_component()
    s.start_pbx_script([[step_respond(expires=3600, initial=True),
                         scenario_notify("<dialog-info xmlns='urn:ietf:params:xml:ns:"
                                         "dialog-info' version='1' state='full'><dialog",
                                         pause_ms=100),
                         step_answer_forever()]])
    s.start_sipbridge()
    wait_until(lambda: s.sipbridge.metrics().get(
        'offhook_body_errors_total{reason="not_well_formed"}') == 1, what="the bad body counted")
    findings = exposition_findings(s.metrics_sb) + exposition_findings(s.metrics_comp)
    no_zero = {f["metric"] for f in findings if f["kind"] == "counter_without_samples"}
    spaces = {(f["metric"], f["detail"]) for f in findings if f["kind"] == "label_with_space"}
    other = [f for f in findings
             if f["kind"] not in ("counter_without_samples", "label_with_space")]
    assert not other, other
    assert no_zero == PENDING_NO_ZERO, no_zero
    assert spaces == PENDING_SPACES, spaces
    # The Redis links are exported from zero (common/redislink.c).
    m = s.component.metrics()
    for link in ("feed", "watchers", "health"):
        assert 'offhook_redis_errors_total{link="%s"}' % link in m, link
