"""Issue 6: secrets never reach a log. A full run with every secret in use (a component
secret, a SIP digest password, a Redis password from a password_file), at debug level,
through a call, a Redis restart (AUTH again), a Prosody restart (handshake again), a
reload (secrets read again), offhookctl and the metrics: none of the three secrets
appears in anything offhook wrote."""

import os
import signal
import subprocess

from calls import ON_CALL, asterisk_call_notifies
from harness import binary, http_get, step_answer_forever, step_recv, step_respond, wait_until

COMPONENT_SECRET = "Cmp-s3cret-7Qx9"
SIP_PASSWORD = "Sip-s3cret-4Kd2"
REDIS_PASSWORD = "Rds-s3cret-8Hn5"
SECRETS = (COMPONENT_SECRET, SIP_PASSWORD, REDIS_PASSWORD)


def test_secrets_never_logged(stack_factory, workdir):
    s = stack_factory(redis_password=REDIS_PASSWORD,
                      prosody_kwargs={"secret": COMPONENT_SECRET})
    pw_file = os.path.join(workdir, "redis.password")
    with open(pw_file, "w") as f:
        f.write(REDIS_PASSWORD + "\n")
    os.chmod(pw_file, 0o600)
    s.write_config(extra="[sip]\nusername = offhook\npassword = %s\n[redis]\npassword_file = "
                         "%s\n" % (SIP_PASSWORD, pw_file))
    s.start_component()
    bob = s.watcher("bob@localhost", reconnect=True)
    bob.subscribe("alice@phone.localhost")
    s.start_pbx_script([
        [step_respond("401 Unauthorized", initial=True, headers=(
            'WWW-Authenticate: Digest realm="pbx.example.com", nonce="[pid]n[call_number]", '
            'algorithm=MD5',)),
         step_recv(auth=("offhook", SIP_PASSWORD)),
         step_respond(expires=3600, initial=True)]
        + asterisk_call_notifies(pause_ms=200)[:3] + [step_answer_forever()]])
    s.start_sipbridge()
    wait_until(lambda: bob.last("alice@phone.localhost") == ON_CALL, timeout=20,
               what="the call through every authenticated link")
    # Every secret was used: a wrong one would have stopped the call above.
    assert s.sipbridge.metrics()['offhook_sip_auth_challenges_total{outcome="answered"}'] == 1

    # Reconnects authenticate again; a reload reads the secrets again.
    s.redis.proc.stop()
    s.redis.start()
    s.prosody.proc.stop()
    s.prosody.start()
    wait_until(lambda: s.component.metrics().get("offhook_xmpp_connected") == 1 and
               s.component.metrics().get('offhook_redis_connected{link="feed"}') == 1 and
               s.sipbridge.metrics().get('offhook_redis_connected{link="store"}') == 1,
               timeout=30, what="both daemons back on Redis and XMPP")
    s.sipbridge.send_signal(signal.SIGHUP)
    s.component.send_signal(signal.SIGHUP)
    wait_until(lambda: "event=reloaded" in s.sipbridge.log() and
               "event=reloaded" in s.component.log(), what="reloads")

    # The strings searched for are the ones in use.
    config = open(s.config).read()
    assert COMPONENT_SECRET in config and SIP_PASSWORD in config
    assert open(pw_file).read().strip() == REDIS_PASSWORD
    outputs = {"sipbridge log": s.sipbridge.log(), "component log": s.component.log(),
               "sipbridge metrics": http_get(s.metrics_sb, "/metrics")[1],
               "component metrics": http_get(s.metrics_comp, "/metrics")[1],
               "sipbridge readyz": http_get(s.metrics_sb, "/readyz")[1]}
    for name, argv in (
            ("offhookctl status", [binary("offhookctl"), "-c", s.config, "status"]),
            ("offhookctl json", [binary("offhookctl"), "-c", s.config, "--json", "status",
                                 "alice@localhost"]),
            ("check-config", [binary("offhook-component"), "-c", s.config, "--check-config"]),
            ("print-defaults", [binary("offhook-sipbridge"), "--print-defaults"])):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        outputs[name] = out.stdout + out.stderr
    assert "on_call" in outputs["offhookctl status"], outputs["offhookctl status"]
    for log in ("sipbridge log", "component log"):   # at debug, where a leak would be
        assert "level=debug" in outputs[log] and "event=auth_answer" in outputs["sipbridge log"]
    for name, text in outputs.items():
        for secret in SECRETS:
            assert secret not in text, "%s appears in %s" % (secret, name)
