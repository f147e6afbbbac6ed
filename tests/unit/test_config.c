/* The config loader: the issue's example, every kind of mistake reported as file:line,
 * user directory rules, secrets, and the shipped example covering every key. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

static const char base_cfg[] =
    "[sip]\n"
    "listen = udp:127.0.0.1:5070        ; where sipbridge's SIP stack binds\n"
    "pbx = sip:127.0.0.1:5060           ; where SUBSCRIBEs are sent (outbound proxy)\n"
    "username = offhook                 ; digest credentials, optional\n"
    "password = secret\n"
    "expires = 3600\n"
    "[xmpp]\n"
    "host = 127.0.0.1\n"
    "port = 5347\n"
    "domain = phone.localhost           ; the component's domain\n"
    "secret = s3cret\n"
    "[redis]\n"
    "url = redis://127.0.0.1:6379/0\n"
    "[sipbridge]\n"
    "metrics = 127.0.0.1:9464\n"
    "[component]\n"
    "metrics = 127.0.0.1:9465\n"
    "[users]\n"
    "alice@localhost = sip:1001@127.0.0.1    ; chat user = desk phone AOR\n";

static char tmpdir[] = "/tmp/offhook-test-XXXXXX";

static char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static size_t load_text(const char *text, struct offhook_config *cfg, struct cfg_errors *errs)
{
    memset(cfg, 0, sizeof *cfg);
    memset(errs, 0, sizeof *errs);
    return config_load(write_file("t.conf", text, 0600), cfg, errs);
}

/* True if some error message contains both needles. */
static int has_err(const struct cfg_errors *errs, const char *a, const char *b)
{
    for (size_t i = 0; i < errs->n; i++) {
        if (strstr(errs->msg[i], a) && (!b || strstr(errs->msg[i], b)))
            return 1;
    }
    return 0;
}

static void print_errs(const struct cfg_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        fprintf(stderr, "  %s\n", errs->msg[i]);
}

static void test_issue_example(void **state)
{
    struct offhook_config cfg;
    struct cfg_errors errs;
    const struct cfg_user *u;

    if (load_text(base_cfg, &cfg, &errs) != 0) {
        print_errs(&errs);
        fail();
    }
    assert_string_equal(cfg.sip_listen_urls[0], "sip:127.0.0.1:5070;transport=udp");
    assert_int_equal(cfg.sip_nlisten, 1);
    assert_string_equal(cfg.sip_pbx, "sip:127.0.0.1:5060");
    assert_string_equal(cfg.sip_username, "offhook");
    assert_string_equal(cfg.sip_password, "secret");
    assert_int_equal(cfg.sip_expires, 3600);
    assert_int_equal(cfg.xmpp_port, 5347);
    assert_string_equal(cfg.xmpp_domain, "phone.localhost");
    assert_string_equal(cfg.xmpp_secret, "s3cret");
    assert_string_equal(cfg.redis.host, "127.0.0.1");
    assert_int_equal(cfg.redis.port, 6379);
    assert_int_equal(cfg.redis.db, 0);
    assert_string_equal(cfg.redis_prefix, "offhook:");
    assert_int_equal(cfg.nusers, 1);
    u = config_user_by_jid(&cfg, "alice@localhost");
    assert_non_null(u);
    assert_string_equal(u->contact, "alice@phone.localhost");
    assert_int_equal(u->naors, 1);
    assert_string_equal(u->aors[0], "sip:1001@127.0.0.1");
    assert_ptr_equal(config_user_by_contact(&cfg, "alice@phone.localhost"), u);
    assert_false(config_user_shows_remote(&cfg, u)); /* privacy by default */
    config_free(&cfg);
    cfg_errors_free(&errs);
}

static void test_errors_have_file_and_line(void **state)
{
    static const char text[] =
        "[sip]\n"                              /* 1 */
        "expires = soon\n"                     /* 2 */
        "bogus = 1\n"                          /* 3 */
        "listen = udp:1.2.3.4:5, tcp:1.2.3.4:6\n" /* 4 */
        "pbx = http://pbx\n"                   /* 5 */
        "expires = 60\n"                       /* 6 */
        "expires = 61\n"                       /* 7 */
        "[nonsense]\n"                         /* 8 */
        "x = y\n"                              /* 9 */
        "[xmpp\n"                              /* 10 */
        "[xmpp]\n"                             /* 11 */
        "secret = s\n"                         /* 12 */
        "no equals sign\n"                     /* 13 */
        "domain = a b\n"                       /* 14 */
        "[privacy]\n"                          /* 15 */
        "show_remote_party = perhaps\n"        /* 16 */
        "[redis]\n"                            /* 17 */
        "url = redis://:pw@host/0\n"           /* 18 */
        "[users]\n"                            /* 19 */
        "not a jid = sip:1@x\n"                /* 20 */
        "bob@localhost = http://1001\n"        /* 21 */
        "carol@localhost = sip:@x\n";          /* 22 */
    struct offhook_config cfg;
    struct cfg_errors errs;
    size_t n = load_text(text, &cfg, &errs);

    assert_true(has_err(&errs, "t.conf:2:", "whole number from 60 to 86400"));
    assert_true(has_err(&errs, "t.conf:3:", "unknown key 'bogus' in [sip]"));
    assert_true(has_err(&errs, "t.conf:4:", "must share one HOST:PORT"));
    assert_true(has_err(&errs, "t.conf:5:", "not a sip: or sips: URI"));
    assert_true(has_err(&errs, "t.conf:7:", "already set on line 6"));
    assert_true(has_err(&errs, "t.conf:8:", "unknown section [nonsense]"));
    assert_false(has_err(&errs, "t.conf:9:", NULL)); /* reported once, at the section */
    assert_true(has_err(&errs, "t.conf:10:", "malformed section header"));
    assert_true(has_err(&errs, "t.conf:13:", "expected key = value"));
    assert_true(has_err(&errs, "t.conf:14:", "not a domain name"));
    assert_true(has_err(&errs, "t.conf:16:", "yes or no"));
    assert_true(has_err(&errs, "t.conf:18:", "password_file"));
    assert_true(has_err(&errs, "t.conf:20:", "not a bare user JID"));
    assert_true(has_err(&errs, "t.conf:21:", "not a sip: or sips: URI"));
    assert_true(has_err(&errs, "t.conf:22:", "no user part"));
    assert_int_equal(n, errs.n);
    assert_true(n >= 15);
    config_free(&cfg);
    cfg_errors_free(&errs);
}

static void test_required(void **state)
{
    struct offhook_config cfg;
    struct cfg_errors errs;

    load_text("[sip] ; a comment after a header is fine\n", &cfg, &errs);
    /* The XMPP secret is the component's business (checked there), not sipbridge's. */
    assert_false(has_err(&errs, "[xmpp] secret", NULL));
    assert_true(has_err(&errs, "no users", NULL));
    assert_int_equal(errs.n, 1);
    config_free(&cfg);
    cfg_errors_free(&errs);
}

static void test_contact_collision(void **state)
{
    char text[2048];
    struct offhook_config cfg;
    struct cfg_errors errs;

    snprintf(text, sizeof text, "%salice@example.com = sip:2001@127.0.0.1\n", base_cfg);
    assert_int_equal(load_text(text, &cfg, &errs), 1);
    assert_true(has_err(&errs, "collides with that of alice@localhost", "contact ="));
    config_free(&cfg);
    cfg_errors_free(&errs);

    /* The fix the message suggests works. */
    snprintf(text, sizeof text,
             "%salice@example.com = sip:2001@127.0.0.1\n"
             "[user alice@example.com]\ncontact = alice.example\nname = Alice Example\n"
             "tel = +1 555 0100\nshow_remote_party = yes\n",
             base_cfg);
    if (load_text(text, &cfg, &errs) != 0) {
        print_errs(&errs);
        fail();
    }
    {
        const struct cfg_user *u = config_user_by_jid(&cfg, "alice@example.com");
        assert_string_equal(u->contact, "alice.example@phone.localhost");
        assert_string_equal(u->name, "Alice Example");
        assert_true(config_user_shows_remote(&cfg, u));
    }
    config_free(&cfg);
    cfg_errors_free(&errs);
}

static void test_user_sections(void **state)
{
    char text[2048];
    struct offhook_config cfg;
    struct cfg_errors errs;
    const struct cfg_user *u;

    snprintf(text, sizeof text,
             "%s[user Bob@LOCALHOST]\naor = sip:1002@127.0.0.1, sips:1002-soft@127.0.0.1;transport=tls\n"
             "contact = bob-desk@phone.localhost\n"
             "[user carol@localhost]\ncontact = carol@elsewhere.example\naor = sip:3@x\n"
             "[user dave@localhost]\nname = Dave\n",
             base_cfg);
    load_text(text, &cfg, &errs);
    u = config_user_by_jid(&cfg, "bob@localhost");
    assert_non_null(u);
    assert_int_equal(u->naors, 2);
    assert_string_equal(u->aors[1], "sips:1002-soft@127.0.0.1;transport=tls");
    assert_string_equal(u->contact, "bob-desk@phone.localhost");
    assert_true(has_err(&errs, "must be a bare JID on the component domain", "carol"));
    assert_true(has_err(&errs, "dave@localhost has no phone", NULL));
    assert_int_equal(errs.n, 2);
    config_free(&cfg);
    cfg_errors_free(&errs);
}

static void test_secret_rules(void **state)
{
    struct offhook_config cfg;
    struct cfg_errors errs;
    char text[2048], *secret_path;

    /* Inline secrets in a world-readable file are refused. */
    memset(&cfg, 0, sizeof cfg);
    memset(&errs, 0, sizeof errs);
    assert_int_equal(config_load(write_file("open.conf", base_cfg, 0644), &cfg, &errs), 2);
    assert_true(has_err(&errs, "open.conf:5:", "readable by other users"));
    assert_true(has_err(&errs, "open.conf:11:", "readable by other users"));
    config_free(&cfg);
    cfg_errors_free(&errs);

    /* Secrets from files are fine in a world-readable config. */
    secret_path = strdup(write_file("xmpp.secret", "from-file\n", 0600));
    snprintf(text, sizeof text,
             "[xmpp]\nsecret_file = %s\n[users]\nalice@localhost = sip:1001@127.0.0.1\n",
             secret_path);
    memset(&cfg, 0, sizeof cfg);
    memset(&errs, 0, sizeof errs);
    assert_int_equal(config_load(write_file("files.conf", text, 0644), &cfg, &errs), 0);
    assert_string_equal(cfg.xmpp_secret, "from-file");
    config_free(&cfg);
    cfg_errors_free(&errs);

    /* A secret file others can read is refused like an inline secret would be. */
    snprintf(text, sizeof text, "[xmpp]\nsecret_file = %s\n[users]\nalice@localhost = sip:1@x\n",
             write_file("open.secret", "leaky\n", 0644));
    load_text(text, &cfg, &errs);
    assert_true(has_err(&errs, "open.secret is readable by other users", NULL));
    config_free(&cfg);
    cfg_errors_free(&errs);

    /* Both at once, or a missing file, are errors. */
    snprintf(text, sizeof text,
             "[xmpp]\nsecret = x\nsecret_file = %s\n[sip]\npassword_file = /nonexistent\n"
             "[users]\nalice@localhost = sip:1001@127.0.0.1\n",
             secret_path);
    load_text(text, &cfg, &errs);
    assert_true(has_err(&errs, "set secret or secret_file, not both", NULL));
    assert_true(has_err(&errs, "cannot read /nonexistent", NULL));
    config_free(&cfg);
    cfg_errors_free(&errs);

    /* A process that does not use a secret does not open its file (sipbridge and the
     * component secret), but both-at-once stays an error for every process. */
    config_set_secret_use(CFG_SECRET_SIP | CFG_SECRET_REDIS);
    load_text("[xmpp]\nsecret_file = /nonexistent\n[users]\nalice@localhost = sip:1@x\n", &cfg,
              &errs);
    assert_int_equal(errs.n, 0);
    assert_string_equal(cfg.xmpp_secret, "");
    config_free(&cfg);
    cfg_errors_free(&errs);
    config_set_secret_use(CFG_SECRET_ALL);
    free(secret_path);
}

/* The recipes' placeholder secret is refused, inline or from a file, with the line that
 * set it; a process that does not use the secret does not care. */
static void test_placeholder_secret(void **state)
{
    struct offhook_config cfg = {0};
    struct cfg_errors errs = {0};
    char text[1024];

    load_text("[users]\nalice@localhost = sip:1@x\n[xmpp]\nsecret = change-me\n", &cfg, &errs);
    assert_int_equal(errs.n, 1);
    assert_true(has_err(&errs, "t.conf:4: [xmpp] secret is the recipes' placeholder 'change-me'",
                        "choose a secret of your own"));
    config_free(&cfg);
    cfg_errors_free(&errs);

    snprintf(text, sizeof text, "[redis]\npassword_file = %s\n[users]\nalice@localhost = sip:1@x\n",
             write_file("redis.secret", "change-me\n", 0600));
    load_text(text, &cfg, &errs);
    assert_true(has_err(&errs, "t.conf:2: [redis] password_file is the recipes' placeholder", NULL));
    config_free(&cfg);
    cfg_errors_free(&errs);

    config_set_secret_use(CFG_SECRET_SIP | CFG_SECRET_REDIS); /* sipbridge */
    load_text("[users]\nalice@localhost = sip:1@x\n[xmpp]\nsecret = change-me\n", &cfg, &errs);
    assert_int_equal(errs.n, 0);
    config_free(&cfg);
    cfg_errors_free(&errs);
    config_set_secret_use(CFG_SECRET_ALL);

    /* Only the whole value: a secret that merely contains it is someone's choice. */
    load_text("[users]\nalice@localhost = sip:1@x\n[xmpp]\nsecret = change-me-2024\n", &cfg,
              &errs);
    assert_int_equal(errs.n, 0);
    config_free(&cfg);
    cfg_errors_free(&errs);
}

static void test_values(void **state)
{
    char text[2048];
    struct offhook_config cfg;
    struct cfg_errors errs;

    snprintf(text, sizeof text,
             "%s[sip]\n", base_cfg); /* section reopened: keys still must be unique */
    assert_int_equal(load_text(text, &cfg, &errs), 0);
    config_free(&cfg);
    cfg_errors_free(&errs);

    write_file("cafile.pem", "", 0644);
    write_file("agent.pem", "", 0600);
    snprintf(text, sizeof text,
             "[xmpp]\nsecret = \"a ; b # c\" ; comment\n[sip]\n"
             "listen = udp:[::1]:5070, tcp:[::1]:5070, tls:127.0.0.1:5071\n"
             "tls_dir = %s\n", tmpdir);
    assert_int_equal(
        load_text(strcat(text,
                  "from = sip:bridge@pbx.example.com;tag=x\n"
                  "[redis]\nurl = unix:///run/redis.sock?db=3\n"
                  "[users]\nalice@localhost = sip:1001@127.0.0.1;transport=tcp\n"),
                  &cfg, &errs),
        0);
    assert_string_equal(cfg.xmpp_secret, "a ; b # c");
    assert_int_equal(cfg.sip_nlisten, 2);
    assert_string_equal(cfg.sip_listen_urls[0], "sip:[::1]:5070"); /* UDP and TCP */
    assert_string_equal(cfg.sip_listen_urls[1], "sips:127.0.0.1:5071;transport=tls");
    assert_string_equal(cfg.redis.unix_path, "/run/redis.sock");
    assert_int_equal(cfg.redis.db, 3);
    assert_string_equal(config_user_by_jid(&cfg, "alice@localhost")->aors[0],
                        "sip:1001@127.0.0.1;transport=tcp");
    config_free(&cfg);
    cfg_errors_free(&errs);
}

/* [redis] sentinels instead of url: the issue's names, both at once refused with the line,
 * every entry checked, the sentinels' own password like the other secrets. */
static void test_sentinels(void **state)
{
    char text[2048];
    struct offhook_config cfg, other;
    struct cfg_errors errs;
    char diff[256], *pw_path;
    const char *users = "[users]\nalice@localhost = sip:1001@127.0.0.1\n";

    snprintf(text, sizeof text,
             "[xmpp]\nsecret = s\n"                                              /* 1-2 */
             "[redis]\n"                                                          /* 3 */
             "sentinels = 127.0.0.1:26379, 127.0.0.1:26380, [::1]:26381 ; three\n" /* 4 */
             "master_name = offhook\n"                                            /* 5 */
             "sentinel_password_file = %s\n%s",
             pw_path = strdup(write_file("sentinel.secret", "sentinel-pw\n", 0600)), users);
    if (load_text(text, &cfg, &errs) != 0)
        print_errs(&errs);
    assert_int_equal(errs.n, 0);
    assert_int_equal(cfg.redis_nsentinels, 3);
    assert_string_equal(cfg.redis_sentinel[0].host, "127.0.0.1");
    assert_int_equal(cfg.redis_sentinel[0].port, 26379);
    assert_int_equal(cfg.redis_sentinel[1].port, 26380);
    assert_string_equal(cfg.redis_sentinel[2].host, "::1"); /* as hiredis wants it */
    assert_int_equal(cfg.redis_sentinel[2].port, 26381);
    assert_string_equal(cfg.redis_master_name, "offhook");
    assert_string_equal(cfg.redis_sentinel_password, "sentinel-pw");
    assert_string_equal(cfg.redis_password, "");

    /* A restart-only key: another list is a pending change, not applied by a reload. */
    snprintf(text, sizeof text, "[xmpp]\nsecret = s\n[redis]\nsentinels = 127.0.0.1:26379\n"
             "sentinel_password_file = %s\n%s", pw_path, users);
    load_text(text, &other, &errs);
    free(pw_path);
    assert_int_equal(errs.n, 0);
    assert_int_equal(config_diff_restart_keys(&cfg, &other, diff, sizeof diff), 1);
    assert_string_equal(diff, "[redis] sentinels");
    config_free(&other);
    config_free(&cfg);
    cfg_errors_free(&errs);

    /* The default: no sentinels, the url, master_name "offhook". */
    load_text(base_cfg, &cfg, &errs);
    assert_int_equal(cfg.redis_nsentinels, 0);
    assert_string_equal(cfg.redis_master_name, "offhook");
    config_free(&cfg);
    cfg_errors_free(&errs);

    /* url and sentinels both: one error, at the later of the two lines. */
    snprintf(text, sizeof text, "[xmpp]\nsecret = s\n[redis]\nurl = redis://10.0.0.1\n"
             "prefix = x:\nsentinels = 10.0.0.2:26379\n%s", users);
    assert_int_equal(load_text(text, &cfg, &errs), 1);
    assert_true(has_err(&errs, "t.conf:6:", "set url (line 4) or sentinels (line 6), not both"));
    config_free(&cfg);
    cfg_errors_free(&errs);

    /* Each bad entry named with its line. */
    static const struct {
        const char *line, *err;
    } bad[] = {
        {"sentinels = 127.0.0.1", "sentinel '127.0.0.1' is not HOST:PORT"},
        {"sentinels = 127.0.0.1:26379, h:0", "sentinel 'h:0' is not HOST:PORT"},
        {"sentinels = a:1, b:1, a:1", "sentinel 'a:1' is listed twice"},
        {"sentinels = a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9,a:10,a:11,a:12,a:13,a:14,a:15,a:16,"
         "a:17", "at most 16 sentinels"},
        {"master_name = two words", "master_name 'two words' has white space"},
        {"master_name = \"\"", "master_name must be 1 to 128 characters"},
        {"sentinel_password = x\nsentinel_password_file = /nonexistent",
         "set sentinel_password or sentinel_password_file, not both"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(text, sizeof text, "[xmpp]\nsecret = s\n[redis]\n%s\n%s", bad[i].line, users);
        load_text(text, &cfg, &errs);
        if (!has_err(&errs, "t.conf:", bad[i].err)) {
            print_errs(&errs);
            fail_msg("'%s' should give '%s'", bad[i].line, bad[i].err);
        }
        config_free(&cfg);
        cfg_errors_free(&errs);
    }
}

/* SIP over TLS: a pbx reached over TLS needs a tls: listen, and the certificate files
 * must be readable, else Sofia would go on checking nothing. */
static void test_tls_settings(void **state)
{
    struct offhook_config cfg;
    struct cfg_errors errs;

    assert_int_equal(load_text("[sip]\npbx = sip:127.0.0.1:5061;transport=tls\n"
                               "[users]\nalice@localhost = sip:1001@127.0.0.1\n",
                               &cfg, &errs),
                     1);
    assert_true(has_err(&errs, "t.conf:2:", "needs a tls:HOST:PORT entry"));
    config_free(&cfg);
    cfg_errors_free(&errs);

    assert_int_equal(load_text("[sip]\nlisten = udp:127.0.0.1:5070, tls:127.0.0.1:5071\n"
                               "pbx = sips:pbx.example.com\ntls_dir = /nonexistent/tls\n"
                               "[users]\nalice@localhost = sip:1001@127.0.0.1\n",
                               &cfg, &errs),
                     2);
    assert_true(has_err(&errs, "t.conf:4:", "cannot read /nonexistent/tls/cafile.pem"));
    assert_true(has_err(&errs, "t.conf:4:", "cannot read /nonexistent/tls/agent.pem"));
    config_free(&cfg);
    cfg_errors_free(&errs);

    assert_int_equal(load_text("[sip]\ntls_verify = maybe\n"
                               "[users]\nalice@localhost = sip:1001@127.0.0.1\n",
                               &cfg, &errs),
                     1);
    assert_true(has_err(&errs, "t.conf:2:", "subject, chain or none"));
    config_free(&cfg);
    cfg_errors_free(&errs);
}

static void test_restart_keys(void **state)
{
    char text[2048];
    struct offhook_config a, b;
    struct cfg_errors errs;
    char diff[256];

    load_text(base_cfg, &a, &errs);
    cfg_errors_free(&errs);
    snprintf(text, sizeof text, "%s[log]\nlevel = debug\n", base_cfg);
    load_text(text, &b, &errs);
    cfg_errors_free(&errs);
    assert_int_equal(config_diff_restart_keys(&a, &b, diff, sizeof diff), 0);
    config_free(&b);

    load_text("[xmpp]\nsecret = s3cret\nport = 5348\n[sip]\npbx = sip:10.0.0.1\n"
              "listen = udp:127.0.0.1:5080\n[users]\n"
              "alice@localhost = sip:1001@127.0.0.1\n",
              &b, &errs);
    cfg_errors_free(&errs);
    assert_int_equal(config_diff_restart_keys(&a, &b, diff, sizeof diff), 3);
    assert_non_null(strstr(diff, "[sip] pbx"));
    assert_non_null(strstr(diff, "[xmpp] port"));
    assert_non_null(strstr(diff, "[sip] listen"));
    config_free(&a);
    config_free(&b);
}

/* A reload keeps the running value of every restart-only key and names it for as long as
 * the file says otherwise: a second reload still owes the restart, and putting the old
 * value back clears it. What is derived from such a key (contacts from the domain) follows
 * the running value too. */
static void test_reload_keeps_restart_keys(void **state)
{
    char text[2048];
    struct offhook_config run, next, again;
    struct cfg_errors errs;
    struct cfg_pending pending;
    const char *path;

    load_text(base_cfg, &run, &errs);
    cfg_errors_free(&errs);
    /* base_cfg with pbx and domain changed, and a reloadable key. */
    snprintf(text, sizeof text, "%s", base_cfg);
    memcpy(strstr(text, "pbx = sip:127.0.0.1:5060"), "pbx = sip:127.0.0.9:5060", 24);
    memcpy(strstr(text, "domain = phone.localhost"), "domain = ph0ne.localhost", 24);
    strncat(text, "[log]\nlevel = debug\n", sizeof text - strlen(text) - 1);
    path = write_file("reload.conf", text, 0600);
    memset(&next, 0, sizeof next);
    memset(&errs, 0, sizeof errs);
    assert_int_equal(config_reload(path, &run, &next, &pending, &errs), 0);
    assert_int_equal(pending.n, 2);
    assert_non_null(strstr(pending.keys, "[sip] pbx"));
    assert_non_null(strstr(pending.keys, "[xmpp] domain"));
    assert_string_equal(next.log_level, "debug");          /* reloadable: applied */
    assert_string_equal(next.sip_pbx, run.sip_pbx);        /* restart-only: kept */
    assert_string_equal(next.xmpp_domain, run.xmpp_domain);
    assert_string_equal(next.users[0].contact, run.users[0].contact);

    /* The second reload of the same file still says so. */
    memset(&again, 0, sizeof again);
    assert_int_equal(config_reload(path, &next, &again, &pending, &errs), 0);
    assert_int_equal(pending.n, 2);
    config_free(&again);

    /* Back to the running values: nothing owed. */
    path = write_file("reload.conf", base_cfg, 0600);
    memset(&again, 0, sizeof again);
    assert_int_equal(config_reload(path, &next, &again, &pending, &errs), 0);
    assert_int_equal(pending.n, 0);
    assert_string_equal(pending.keys, "");
    config_free(&again);
    config_free(&next);
    config_free(&run);
    cfg_errors_free(&errs);
}

/* [directory]: with source = ldap the file has no users (and needs none), a base is
 * required, and each key's typos are caught with file:line. The bind password file is
 * read like the other secrets. groups in [user JID] sections. */
static void test_directory_keys(void **state)
{
    char text[4096];
    struct offhook_config cfg;
    struct cfg_errors errs;
    const char *head = "[xmpp]\nsecret = s3cret\n[directory]\nsource = ldap\n";

    snprintf(text, sizeof text, "%sbase = ou=people,dc=example,dc=com\n"
                                "bind_dn = cn=offhook,dc=example,dc=com\n"
                                "bind_password_file = %s\n"
                                "aor_template = sip:%%s@pbx.example.com\n"
                                "group_attr = memberOf\nurl_unused_check = 1\n",
             head, write_file("ldap.secret", "hunter2\n", 0600));
    load_text(text, &cfg, &errs);
    assert_int_equal(errs.n, 1); /* only the unknown key: no "no users" */
    assert_true(has_err(&errs, "unknown key 'url_unused_check' in [directory]", NULL));
    assert_true(cfg.dir_ldap);
    assert_string_equal(cfg.dir_bind_password, "hunter2");
    assert_int_equal(cfg.nusers, 0);
    config_free(&cfg);
    cfg_errors_free(&errs);

    snprintf(text, sizeof text,
             "%sldap_url = ldap://a.example ldaps://b.example:636 http://c\nscope = base\n"
             "filter = (&(objectClass=person)\njid_attr = e mail\naor_template = %%s\n"
             "tls = always\nsync = push\npoll_interval = 1\nbind_password = x\n"
             "[users]\nalice@localhost = sip:1@x\n",
             head);
    load_text(text, &cfg, &errs);
    assert_true(has_err(&errs, "t.conf:5:", "'http://c' is not an ldap://"));
    assert_true(has_err(&errs, "t.conf:6:", "scope must be sub or one"));
    assert_true(has_err(&errs, "t.conf:7:", "parentheses do not pair up"));
    assert_true(has_err(&errs, "t.conf:8:", "'e mail' is not an LDAP attribute name"));
    assert_true(has_err(&errs, "t.conf:9:", "does not make a SIP URI"));
    assert_true(has_err(&errs, "t.conf:10:", "tls must be auto, starttls or none"));
    assert_true(has_err(&errs, "t.conf:11:", "sync must be auto, syncrepl or poll"));
    assert_true(has_err(&errs, "t.conf:12:", "from 5 to 86400"));
    assert_true(has_err(&errs, "t.conf:15:", "users come from LDAP"));
    assert_true(has_err(&errs, "needs a base", NULL));
    assert_true(has_err(&errs, "t.conf:13:", "without bind_dn"));
    config_free(&cfg);
    cfg_errors_free(&errs);

    snprintf(text, sizeof text, "%s[user alice@localhost]\ngroups = Sales, Support\n",
             base_cfg);
    if (load_text(text, &cfg, &errs) != 0) {
        print_errs(&errs);
        fail();
    }
    {
        const struct cfg_user *u = config_user_by_jid(&cfg, "alice@localhost");
        assert_int_equal(u->ngroups, 2);
        assert_string_equal(u->groups[1], "Support");
    }
    config_free(&cfg);
    cfg_errors_free(&errs);
}

/* The shipped example names every key of the table with its default value, and loads. */
static void test_example_covers_every_key(void **state)
{
    char path[512], *example, *defaults = NULL, *save = NULL, section[64] = "";
    size_t dlen = 0;
    FILE *f, *mem;
    long n;

    snprintf(path, sizeof path, "%s/config/offhook.conf.example", OFFHOOK_SOURCE_DIR);
    f = fopen(path, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    example = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(example, 1, (size_t)n, f), (size_t)n);
    fclose(f);

    mem = open_memstream(&defaults, &dlen);
    config_print_defaults(mem);
    fclose(mem);
    for (char *line = strtok_r(defaults, "\n", &save), *help = NULL; line;
         help = line, line = strtok_r(NULL, "\n", &save)) {
        char want_section[80], want[1024];
        if (line[0] == '[') {
            snprintf(section, sizeof section, "%s", line);
            snprintf(want_section, sizeof want_section, "\n%s\n", section);
            if (!strstr(example, want_section))
                fail_msg("example lacks section %s", section);
            continue;
        }
        if (line[0] != ';' || !strchr(line, '=') || line[1] == ' ')
            continue;
        /* "; help\n;key = default" must appear between its section header and the next
         * one: the help line as the table has it, so that "(restart to change)" marks
         * exactly the keys a reload does not apply. */
        snprintf(want, sizeof want, "\n%s\n%s\n", help ? help : "", line);
        {
            char *sec = strstr(example, section), *hit, *next;
            assert_non_null(sec);
            hit = strstr(sec, want);
            next = strstr(sec + 1, "\n[");
            if (!hit || (next && hit > next))
                fail_msg("example lacks '%s' (after '%s') under %s", line, help, section);
        }
    }
    {
        struct offhook_config cfg = {0};
        struct cfg_errors errs = {0};
        if (config_load_buffer("offhook.conf.example", example, (size_t)n, &cfg, &errs) != 0) {
            print_errs(&errs);
            fail_msg("the example does not load");
        }
        config_free(&cfg);
        cfg_errors_free(&errs);
    }
    free(defaults);
    free(example);
}

static int setup(void **state)
{
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[600];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* A user's AORs are one block (pointers, then strings): appending keeps the earlier ones,
 * a copy owns its own block (a reload's users outlive the configuration they came from),
 * and the record stays 56 bytes, one per user in both daemons. */
static void test_user_aors_block(void **state)
{
    struct cfg_user u = {0}, copy;
    char aor[64];

    assert_int_equal(sizeof(struct cfg_user), 56);
    for (int i = 0; i < CFG_MAX_AORS; i++) {
        snprintf(aor, sizeof aor, "sip:%d@pbx.example.com;transport=tcp", 1000 + i);
        config_user_add_aor(&u, aor);
        assert_int_equal(u.naors, i + 1);
        for (int k = 0; k <= i; k++) {
            snprintf(aor, sizeof aor, "sip:%d@pbx.example.com;transport=tcp", 1000 + k);
            assert_string_equal(u.aors[k], aor);
        }
    }
    u.jid = strdup("a@example.com");
    u.contact = strdup("a@phone.example.com");
    config_user_copy(&copy, &u);
    assert_true(copy.aors != u.aors);
    config_user_free(&u);
    assert_null(u.aors);
    assert_int_equal(copy.naors, CFG_MAX_AORS);
    assert_string_equal(copy.aors[0], "sip:1000@pbx.example.com;transport=tcp");
    assert_string_equal(copy.aors[7], "sip:1007@pbx.example.com;transport=tcp");
    config_user_free(&copy);
}

/* The file of test_many_users: n users, every fourth with a [user] section giving a
 * contact, a name, a tel, groups and two AORs; gen changes every value. */
static char *many_users_text(int n, int gen)
{
    size_t cap = (size_t)n * 256 + sizeof base_cfg, len;
    char *t = malloc(cap);

    assert_non_null(t);
    snprintf(t, cap, "%s", base_cfg);
    len = (size_t)(strstr(t, "[users]") - t); /* base_cfg's own user left out */
    len += (size_t)snprintf(t + len, cap - len, "[users]\n");
    for (int i = 0; i < n; i++) {
        if (i % 4)
            len += (size_t)snprintf(t + len, cap - len, "u%d@localhost = sip:%d@127.0.0.1\n", i,
                                    100000 + gen * 1000000 + i);
    }
    for (int i = 0; i < n; i += 4)
        len += (size_t)snprintf(t + len, cap - len,
                                "[user u%d@localhost]\naor = sip:%d@pbx, sip:%d@soft\n"
                                "contact = c%d-%d\nname = User %d gen %d\ntel = +1 %d\n"
                                "groups = g%d, all%d, gen%d\nshow_remote_party = %s\n",
                                i, i, i + gen, i, gen, i, gen, i, i % 7, gen, gen,
                                i % 8 ? "yes" : "no");
    return t;
}

/* Every field of user i as many_users_text(gen) wrote it, read back, and both lookups. */
static void check_many_user(const struct offhook_config *cfg, int i, int gen)
{
    char jid[64], v[64];
    const struct cfg_user *u;

    snprintf(jid, sizeof jid, "u%d@localhost", i);
    u = config_user_by_jid(cfg, jid);
    assert_non_null(u);
    assert_string_equal(u->jid, jid);
    if (i % 4) {
        snprintf(v, sizeof v, "u%d@phone.localhost", i);
        assert_string_equal(u->contact, v);
        assert_int_equal(u->naors, 1);
        snprintf(v, sizeof v, "sip:%d@127.0.0.1", 100000 + gen * 1000000 + i);
        assert_string_equal(u->aors[0], v);
        assert_null(u->name);
        assert_null(u->tel);
        assert_int_equal(u->ngroups, 0);
        assert_int_equal(u->show_remote_party, -1);
    } else {
        snprintf(v, sizeof v, "c%d-%d@phone.localhost", i, gen);
        assert_string_equal(u->contact, v);
        assert_int_equal(u->naors, 2);
        snprintf(v, sizeof v, "sip:%d@pbx", i);
        assert_string_equal(u->aors[0], v);
        snprintf(v, sizeof v, "sip:%d@soft", i + gen);
        assert_string_equal(u->aors[1], v);
        snprintf(v, sizeof v, "User %d gen %d", i, gen);
        assert_string_equal(u->name, v);
        snprintf(v, sizeof v, "+1 %d", i);
        assert_string_equal(u->tel, v);
        assert_int_equal(u->ngroups, 3);
        snprintf(v, sizeof v, "g%d", i % 7);
        assert_string_equal(u->groups[0], v);
        snprintf(v, sizeof v, "all%d", gen);
        assert_string_equal(u->groups[1], v);
        snprintf(v, sizeof v, "gen%d", gen);
        assert_string_equal(u->groups[2], v);
        assert_int_equal(u->show_remote_party, i % 8 ? 1 : 0);
    }
    assert_ptr_equal(config_user_by_contact(cfg, u->contact), u);
}

/* The users' strings live in the configuration's pool and the lookups are indexes into
 * its array: many users (several pool blocks, many index growths), every field read back
 * through both lookups, absent keys not found, a reload that changes every value (the old
 * configuration intact until freed), and a collision's line number at the far end. */
static void test_many_users(void **state)
{
    const int n = 20000;
    struct offhook_config run, next;
    struct cfg_errors errs = {0};
    struct cfg_pending pending;
    char *text = many_users_text(n, 0), *bad;
    const char *path = write_file("many.conf", text, 0600);
    char line[128];

    memset(&run, 0, sizeof run);
    assert_int_equal(config_load(path, &run, &errs), 0);
    assert_int_equal(run.nusers, (size_t)n);
    for (int i = 0; i < n; i++)
        check_many_user(&run, i, 0);
    assert_null(config_user_by_jid(&run, "nobody@localhost"));
    assert_null(config_user_by_jid(&run, "u20000@localhost"));
    assert_null(config_user_by_contact(&run, "u0@phone.localhost")); /* c0-0 instead */
    assert_null(config_user_by_contact(&run, "u1@localhost"));
    free(text);

    text = many_users_text(n, 1);
    path = write_file("many.conf", text, 0600);
    memset(&next, 0, sizeof next);
    assert_int_equal(config_reload(path, &run, &next, &pending, &errs), 0);
    assert_int_equal(pending.n, 0);
    for (int i = 0; i < n; i++) {
        check_many_user(&next, i, 1);
        check_many_user(&run, i, 0);
    }
    config_free(&run);
    for (int i = 0; i < n; i++)
        check_many_user(&next, i, 1);

    /* The last user's contact taken by a new one: the error names both lines. */
    bad = malloc(strlen(text) + 128);
    assert_non_null(bad);
    sprintf(bad, "%s[user late@localhost]\naor = sip:late@pbx\ncontact = c%d-1\n", text,
            n - 4);
    path = write_file("many.conf", bad, 0600);
    memset(&run, 0, sizeof run);
    assert_int_equal(config_reload(path, &next, &run, &pending, &errs), 1);
    snprintf(line, sizeof line, "phone contact c%d-1@phone.localhost of late@localhost collides",
             n - 4);
    assert_non_null(strstr(errs.msg[0], line));
    {
        int lines = 0;
        char at[64];

        for (const char *p = text; *p; p++)
            lines += *p == '\n';
        /* the [user late@localhost] header is line lines + 1, its aor the next */
        snprintf(at, sizeof at, "many.conf:%d: ", lines + 2);
        assert_non_null(strstr(errs.msg[0], at));
    }
    config_free(&run);
    cfg_errors_free(&errs);
    config_free(&next);
    free(bad);
    free(text);
}

/* config_set_users (takes loose users) and config_copy_users (copies) give a
 * configuration whose users live in its pool and are found by JID and contact. */
static void test_set_and_copy_users(void **state)
{
    struct cfg_user loose[300];
    struct cfg_user *owned = calloc(300, sizeof *owned);
    struct offhook_config a = {0}, b = {0};
    char s[64];

    assert_non_null(owned);
    for (int i = 0; i < 300; i++) {
        memset(&loose[i], 0, sizeof loose[i]);
        snprintf(s, sizeof s, "x%d@example.com", i);
        loose[i].jid = strdup(s);
        snprintf(s, sizeof s, "x%d@phone.localhost", i);
        loose[i].contact = strdup(s);
        snprintf(s, sizeof s, "sip:%d@pbx", i);
        config_user_add_aor(&loose[i], s);
        loose[i].name = i % 2 ? strdup("Name") : NULL;
        loose[i].show_remote_party = -1;
        config_user_copy(&owned[i], &loose[i]);
    }
    config_copy_users(&a, loose, 300);
    config_set_users(&b, owned, 300);
    for (int i = 0; i < 300; i++) {
        const struct cfg_user *ua, *ub;

        snprintf(s, sizeof s, "x%d@example.com", i);
        ua = config_user_by_jid(&a, s);
        ub = config_user_by_jid(&b, s);
        assert_ptr_equal(ua, &a.users[i]);
        assert_ptr_equal(ub, &b.users[i]);
        assert_ptr_equal(config_user_by_contact(&a, loose[i].contact), ua);
        assert_ptr_equal(config_user_by_contact(&b, loose[i].contact), ub);
        assert_true(ua->jid != loose[i].jid);
        assert_string_equal(ub->aors[0], loose[i].aors[0]);
        assert_int_equal(ub->naors, 1);
        if (i % 2)
            assert_string_equal(ua->name, "Name");
        else
            assert_null(ub->name);
        config_user_free(&loose[i]);
    }
    config_free(&a);
    config_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_example),
        cmocka_unit_test(test_errors_have_file_and_line),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_contact_collision),
        cmocka_unit_test(test_user_sections),
        cmocka_unit_test(test_secret_rules),
        cmocka_unit_test(test_placeholder_secret),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_sentinels),
        cmocka_unit_test(test_tls_settings),
        cmocka_unit_test(test_restart_keys),
        cmocka_unit_test(test_reload_keeps_restart_keys),
        cmocka_unit_test(test_directory_keys),
        cmocka_unit_test(test_example_covers_every_key),
        cmocka_unit_test(test_user_aors_block),
        cmocka_unit_test(test_many_users),
        cmocka_unit_test(test_set_and_copy_users),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
