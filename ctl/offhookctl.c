/* offhookctl: what offhook knows, read from Redis, for operators and scripts.
 *
 *   offhookctl [-c FILE] [--json] status [JID]   a user's phone state, subscriptions and
 *                                                watchers; without JID, a summary
 *   offhookctl [-c FILE] [--json] users          every configured user and their state
 *   offhookctl [-c FILE] resync [JID]            ask the component to send everything again
 *   offhookctl [-c FILE] [--json] check [redis|xmpp|pbx...]
 *                                                can offhook reach Redis, the XMPP server
 *                                                and the PBX (check.c, xmppcheck.c,
 *                                                sipcheck.c)
 *
 * It reads the same configuration as the daemons (Redis address, key prefix, users; with
 * [directory] source = ldap the users of the daemons' last known copy in Redis) and talks
 * only to Redis (check: to each upstream): it works whether or not the daemons run. */
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "check.h"
#include "config.h"
#include "dirbuild.h"
#include "jid.h"
#include "log.h"
#include "sipcheck.h"
#include "storecodec.h"
#include "strutil.h"
#include "version.h"
#include "xmppcheck.h"

static bool json;
static int timeout_ms = 3000; /* per check */

/* ---- output helpers ------------------------------------------------------------------ */

static void json_str(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* Text from Redis for a terminal: as it is when it is printable UTF-8, else quoted and
 * escaped (log_q), so that nobody who can write to Redis can send the operator's
 * terminal control sequences. */
static const char *term(const char *s)
{
    if (!s)
        return "";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return log_q(s);
    }
    return str_utf8_valid(s, strlen(s)) ? s : log_q(s);
}

static void ago(int64_t ms, char *out, size_t len)
{
    int64_t d = clock_wall_ms() - ms;

    if (ms <= 0)
        snprintf(out, len, "never");
    else if (d < 1000)
        snprintf(out, len, "just now");
    else if (d < 120000)
        snprintf(out, len, "%" PRId64 " s ago", d / 1000);
    else if (d < 7200000)
        snprintf(out, len, "%" PRId64 " min ago", d / 60000);
    else
        snprintf(out, len, "%" PRId64 " h ago", d / 3600000);
}

/* ---- Redis ----------------------------------------------------------------------------- */

#define SENTINEL_ROUNDS 5 /* ... a second apart: time for a failover in progress to end */

static char server[300]; /* where the Redis we talk to is, for messages and the summary */

/* Sends AUTH password on r; false if refused or lost. */
static bool auth(redisContext *r, const char *password)
{
    redisReply *rep = redisCommand(r, "AUTH %s", password);
    bool ok = rep && rep->type != REDIS_REPLY_ERROR;

    freeReplyObject(rep);
    return ok;
}

/* Whether r is a master (ROLE). */
static bool is_master(redisContext *r)
{
    redisReply *rep = redisCommand(r, "ROLE");
    bool ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
              rep->element[0]->type == REDIS_REPLY_STRING &&
              strcmp(rep->element[0]->str, "master") == 0;

    freeReplyObject(rep);
    return ok;
}

/* With [redis] sentinels: the master they name, checked with ROLE. During a failover the
 * sentinels may still name the old master for a moment (dead, or demoted), so a few
 * rounds are tried. */
static redisContext *connect_via_sentinels(const struct offhook_config *cfg)
{
    struct timeval tv = {.tv_sec = 3};
    char host[256], why[512];
    int port;

    for (int round = 0; round < SENTINEL_ROUNDS; round++) {
        redisContext *r;

        if (round)
            sleep(1);
        /* None answering is not a failover: the next round would say the same. */
        if (!check_ask_sentinels(cfg, 2000, false, host, sizeof host, &port, why, sizeof why))
            break;
        snprintf(server, sizeof server, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
        r = redisConnectWithTimeout(host, port, tv);
        if (!r || r->err) {
            snprintf(why, sizeof why, "master %s named by the sentinels: %s", server,
                     r ? r->errstr : "out of memory");
            redisFree(r);
            continue;
        }
        redisSetTimeout(r, tv);
        if (cfg->redis_password[0] && !auth(r, cfg->redis_password)) {
            fprintf(stderr, "offhookctl: Redis at %s refused AUTH\n", server);
            exit(3);
        }
        if (is_master(r))
            return r;
        snprintf(why, sizeof why, "%s, named master by the sentinels, is not a master", server);
        redisFree(r);
    }
    fprintf(stderr, "offhookctl: no Redis master found through the sentinels (master_name %s): "
                    "%s\n",
            cfg->redis_master_name, why);
    exit(3);
}

static redisContext *connect_redis(const struct offhook_config *cfg)
{
    struct timeval tv = {.tv_sec = 3};
    redisContext *r;
    redisReply *rep;

    if (cfg->redis_nsentinels > 0)
        return connect_via_sentinels(cfg);
    snprintf(server, sizeof server, "%s", cfg->redis_url);
    r = cfg->redis.unix_path ? redisConnectUnixWithTimeout(cfg->redis.unix_path, tv)
                             : redisConnectWithTimeout(cfg->redis.host, cfg->redis.port, tv);
    if (!r || r->err) {
        fprintf(stderr, "offhookctl: cannot reach Redis at %s: %s\n", cfg->redis_url,
                r ? r->errstr : "out of memory");
        exit(3);
    }
    redisSetTimeout(r, tv);
    if (cfg->redis_password[0] && !auth(r, cfg->redis_password)) {
        fprintf(stderr, "offhookctl: Redis refused AUTH\n");
        exit(3);
    }
    if (cfg->redis.db) {
        rep = redisCommand(r, "SELECT %d", cfg->redis.db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "offhookctl: Redis refused SELECT %d\n", cfg->redis.db);
            exit(3);
        }
        freeReplyObject(rep);
    }
    return r;
}

static redisReply *cmd(redisContext *r, const char *fmt, ...)
{
    va_list ap;
    redisReply *rep;

    va_start(ap, fmt);
    rep = redisvCommand(r, fmt, ap);
    va_end(ap);
    if (!rep) {
        fprintf(stderr, "offhookctl: Redis: %s\n", r->errstr);
        exit(3);
    }
    return rep;
}

/* The user's record; false if sipbridge has written none. */
static bool load_record(redisContext *r, const struct offhook_config *cfg, const char *jid,
                        struct user_record *rec)
{
    char key[4096], err[128];
    const char *names[16], *values[16];
    redisReply *rep;
    size_t n = 0;
    bool ok;

    if (storecodec_key_user(cfg->redis_prefix, jid, key, sizeof key) < 0)
        return false;
    rep = cmd(r, "HGETALL %s", key);
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements && n < 16; i += 2) {
        names[n] = rep->element[i]->str;
        values[n] = rep->element[i + 1]->str;
        n++;
    }
    ok = n > 0 && storecodec_decode(names, values, n, rec, err, sizeof err) == 0;
    freeReplyObject(rep);
    return ok;
}

/* [directory] source = ldap: the file lists nobody; the users are those the daemons last
 * took from the directory, in their copy in Redis, checked as the daemons check them. */
static void load_directory_users(redisContext *r, struct offhook_config *cfg)
{
    char key[512];
    redisReply *rep;
    struct dir_entry *entries;
    const struct dir_entry **ptrs;
    struct dir_report report;
    struct cfg_user *users;
    size_t n = 0, nusers;

    if (!cfg->dir_ldap || storecodec_key_directory(cfg->redis_prefix, key, sizeof key) < 0)
        return;
    rep = cmd(r, "HGETALL %s", key);
    if (rep->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(rep);
        return;
    }
    entries = xcalloc(rep->elements / 2 + 1, sizeof *entries);
    ptrs = xcalloc(rep->elements / 2 + 1, sizeof *ptrs);
    for (size_t i = 0; i + 1 < rep->elements; i += 2) {
        redisReply *v = rep->element[i + 1];
        if (v->type != REDIS_REPLY_STRING)
            continue;
        if (dirbuild_decode(v->str, (size_t)v->len, "copy", &entries[n]) < 0) {
            dir_entry_free(&entries[n]);
            continue;
        }
        ptrs[n] = &entries[n];
        n++;
    }
    users = dirbuild_users(cfg, ptrs, n, 0, &nusers, &report);
    config_set_users(cfg, users, nusers);
    for (size_t i = 0; i < n; i++)
        dir_entry_free(&entries[i]);
    free(entries);
    free(ptrs);
    freeReplyObject(rep);
}

static int64_t heartbeat(redisContext *r, const struct offhook_config *cfg, const char *daemon)
{
    char key[512];
    redisReply *rep;
    int64_t v = 0;

    storecodec_key_heartbeat(cfg->redis_prefix, daemon, key, sizeof key);
    rep = cmd(r, "GET %s", key);
    if (rep->type == REDIS_REPLY_STRING)
        v = strtoll(rep->str, NULL, 10);
    freeReplyObject(rep);
    return v;
}

/* ---- commands ------------------------------------------------------------------------ */

static int cmd_users(redisContext *r, const struct offhook_config *cfg)
{
    if (json)
        printf("[");
    for (size_t i = 0; i < cfg->nusers; i++) {
        const struct cfg_user *u = &cfg->users[i];
        struct user_record rec;
        bool have = load_record(r, cfg, u->jid, &rec);
        char since[32];

        ago(have ? rec.since_ms : 0, since, sizeof since);
        if (json) {
            printf("%s{\"jid\":", i ? "," : "");
            json_str(u->jid);
            printf(",\"contact\":");
            json_str(u->contact);
            printf(",\"state\":");
            json_str(have ? user_state_name(rec.state) : "unknown");
            printf(",\"since_ms\":%" PRId64 "}", have ? rec.since_ms : 0);
        } else {
            printf("%-32s %-32s %-8s %s\n", u->jid, u->contact,
                   have ? user_state_name(rec.state) : "unknown", have ? since : "");
        }
    }
    if (json)
        printf("]\n");
    return 0;
}

static int cmd_summary(redisContext *r, const struct offhook_config *cfg)
{
    int counts[US__COUNT] = {0};
    int64_t sb = heartbeat(r, cfg, "sipbridge"), comp = heartbeat(r, cfg, "component");
    char a[32], b[32], key[512];
    redisReply *rep;
    long long xlen = 0;

    for (size_t i = 0; i < cfg->nusers; i++) {
        struct user_record rec;
        counts[load_record(r, cfg, cfg->users[i].jid, &rec) ? rec.state : US_UNKNOWN]++;
    }
    storecodec_key_events(cfg->redis_prefix, key, sizeof key);
    rep = cmd(r, "XLEN %s", key);
    if (rep->type == REDIS_REPLY_INTEGER)
        xlen = rep->integer;
    freeReplyObject(rep);
    ago(sb, a, sizeof a);
    ago(comp, b, sizeof b);
    if (json) {
        printf("{\"users\":%zu,\"states\":{", cfg->nusers);
        for (int s = 0; s < US__COUNT; s++)
            printf("%s\"%s\":%d", s ? "," : "", user_state_name((enum user_state)s), counts[s]);
        printf("},\"sipbridge_heartbeat_ms\":%" PRId64 ",\"component_heartbeat_ms\":%" PRId64
               ",\"events\":%lld,\"redis\":",
               sb, comp, xlen);
        json_str(server);
        printf("}\n");
        return 0;
    }
    printf("redis:      %s%s\n", server,
           cfg->redis_nsentinels ? " (master named by the sentinels)" : "");
    printf("users:      %zu\n", cfg->nusers);
    for (int s = 0; s < US__COUNT; s++) {
        if (counts[s])
            printf("  %-9s %d\n", user_state_name((enum user_state)s), counts[s]);
    }
    printf("sipbridge:  %s (heartbeat %s)\n", sb ? "alive" : "not running", a);
    printf("component:  %s (heartbeat %s)\n", comp ? "alive" : "not running", b);
    printf("events:     %lld in the stream\n", xlen);
    return 0;
}

static int cmd_status(redisContext *r, const struct offhook_config *cfg, const char *arg)
{
    char bare[JID_MAX + 1], key[4096], since[32], last[32];
    const struct cfg_user *u;
    struct user_record rec;
    redisReply *subs, *watchers;
    bool have;

    if (jid_to_bare(arg, bare, sizeof bare) < 0 ||
        !((u = config_user_by_jid(cfg, bare)) || (u = config_user_by_contact(cfg, bare)))) {
        fprintf(stderr, "offhookctl: %s is not a configured user or phone contact\n", arg);
        return 1;
    }
    have = load_record(r, cfg, u->jid, &rec);
    storecodec_key_subs(cfg->redis_prefix, u->jid, key, sizeof key);
    subs = cmd(r, "HGETALL %s", key);
    storecodec_key_watchers(cfg->redis_prefix, u->contact, key, sizeof key);
    watchers = cmd(r, "SMEMBERS %s", key);
    ago(have ? rec.since_ms : 0, since, sizeof since);
    ago(have ? rec.event_us / 1000 : 0, last, sizeof last);
    if (json) {
        printf("{\"jid\":");
        json_str(u->jid);
        printf(",\"contact\":");
        json_str(u->contact);
        printf(",\"state\":");
        json_str(have ? user_state_name(rec.state) : "unknown");
        if (have) {
            printf(",\"direction\":");
            json_str(call_dir_name(rec.dir));
            printf(",\"reach\":");
            json_str(phone_reach_name(rec.reach));
            printf(",\"dnd\":%s,\"since_ms\":%" PRId64 ",\"last_event_ms\":%" PRId64,
                   rec.dnd ? "true" : "false", rec.since_ms, rec.event_us / 1000);
        }
        printf(",\"subscriptions\":[");
        for (size_t i = 0; subs->type == REDIS_REPLY_ARRAY && i + 1 < subs->elements; i += 2) {
            char state[64] = "";
            long long at = 0;
            sscanf(subs->element[i + 1]->str, "%63s %lld", state, &at);
            printf("%s{\"what\":", i ? "," : "");
            json_str(subs->element[i]->str);
            printf(",\"state\":");
            json_str(state);
            printf(",\"since_ms\":%lld}", at);
        }
        printf("],\"watchers\":[");
        for (size_t i = 0; watchers->type == REDIS_REPLY_ARRAY && i < watchers->elements; i++) {
            printf("%s", i ? "," : "");
            json_str(watchers->element[i]->str);
        }
        printf("]}\n");
    } else {
        printf("user:       %s\ncontact:    %s\n", u->jid, u->contact);
        printf("state:      %s", have ? user_state_name(rec.state) : "unknown");
        if (have)
            printf(" (since %s; %s call; phone %s%s)", since, call_dir_name(rec.dir),
                   phone_reach_name(rec.reach), rec.dnd ? "; DND" : "");
        printf("\nlast event: %s\nsubscriptions:\n", last);
        for (size_t i = 0; subs->type == REDIS_REPLY_ARRAY && i + 1 < subs->elements; i += 2) {
            char state[64] = "", when[32];
            long long at = 0;
            sscanf(subs->element[i + 1]->str, "%63s %lld", state, &at);
            ago(at, when, sizeof when);
            printf("  %-48s %-20s %s\n", term(subs->element[i]->str), term(state), when);
        }
        if (subs->type != REDIS_REPLY_ARRAY || subs->elements == 0)
            printf("  (none recorded: is sipbridge running?)\n");
        printf("watchers:   %zu\n", watchers->type == REDIS_REPLY_ARRAY ? watchers->elements : 0);
        for (size_t i = 0; watchers->type == REDIS_REPLY_ARRAY && i < watchers->elements; i++)
            printf("  %s\n", term(watchers->element[i]->str));
    }
    freeReplyObject(subs);
    freeReplyObject(watchers);
    return 0;
}

static int cmd_resync(redisContext *r, const struct offhook_config *cfg, const char *arg)
{
    char key[512], bare[JID_MAX + 1];
    const char *who = "*";
    const char *argv[STORECODEC_COMMAND_ARGC];
    int argc;
    redisReply *rep;

    if (arg) {
        const struct cfg_user *u;
        if (jid_to_bare(arg, bare, sizeof bare) < 0 ||
            !((u = config_user_by_jid(cfg, bare)) || (u = config_user_by_contact(cfg, bare)))) {
            fprintf(stderr, "offhookctl: %s is not a configured user or phone contact\n", arg);
            return 1;
        }
        who = u->jid;
    }
    storecodec_key_events(cfg->redis_prefix, key, sizeof key);
    argc = storecodec_command_argv(key, "resync", who, argv);
    rep = redisCommandArgv(r, argc, argv, NULL);
    if (!rep) {
        fprintf(stderr, "offhookctl: Redis: %s\n", r->errstr);
        return 3;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "offhookctl: Redis: %s\n", term(rep->str));
        freeReplyObject(rep);
        return 3;
    }
    freeReplyObject(rep);
    if (json)
        printf("{\"resync\":\"requested\",\"user\":\"%s\"}\n", who);
    else
        printf("resync requested for %s\n", strcmp(who, "*") ? who : "every user");
    if (!heartbeat(r, cfg, "component"))
        fprintf(stderr, "offhookctl: note: no component heartbeat; it will resync when it "
                        "starts\n");
    return 0;
}

/* ---- check ------------------------------------------------------------------------------ */

enum { CHECK_REDIS = 1, CHECK_XMPP = 2, CHECK_PBX = 4, CHECK_ALL = 7 };

/* The checks named on the command line (all without names); 0 on an unknown name. */
static unsigned check_selection(int argc, char **argv)
{
    unsigned which = 0;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "redis") == 0)
            which |= CHECK_REDIS;
        else if (strcmp(argv[i], "xmpp") == 0)
            which |= CHECK_XMPP;
        else if (strcmp(argv[i], "pbx") == 0)
            which |= CHECK_PBX;
        else
            return 0;
    }
    return which ? which : CHECK_ALL;
}

static int cmd_check(const struct offhook_config *cfg, unsigned which)
{
    struct check_result res[4];
    int n = 0, failed = 0;

    if (which & CHECK_REDIS)
        check_redis(cfg, timeout_ms, &res[n++]);
    if (which & CHECK_XMPP) {
        if (!cfg->xmpp_secret[0]) {
            check_begin(&res[n], "xmpp", "%s:%ld %s", cfg->xmpp_host, cfg->xmpp_port,
                        cfg->xmpp_domain);
            check_end(&res[n++], false, "no [xmpp] secret or secret_file set: nothing to "
                                        "hand the server");
        } else {
            check_xmpp(cfg, timeout_ms, &res[n++]);
        }
    }
    if (which & CHECK_PBX)
        n += check_pbx(cfg, timeout_ms, &res[n], (int)(sizeof res / sizeof res[0]) - n);
    if (json)
        printf("{\"checks\":[");
    for (int i = 0; i < n; i++) {
        failed += !res[i].ok;
        if (json) {
            printf("%s{\"check\":", i ? "," : "");
            json_str(res[i].name);
            printf(",\"ok\":%s,\"target\":", res[i].ok ? "true" : "false");
            json_str(res[i].target);
            printf(",\"detail\":");
            json_str(res[i].detail);
            printf(",\"ms\":%.1f}", res[i].ms);
        } else {
            printf("%s: %s: %s: %s (%.1f ms)\n", res[i].name, res[i].ok ? "ok" : "failed",
                   res[i].target, res[i].detail, res[i].ms);
        }
    }
    if (json)
        printf("],\"ok\":%s}\n", failed ? "false" : "true");
    return failed ? 4 : 0;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: offhookctl [-c FILE] [--json] COMMAND [ARG...]\n"
                 "Reads offhook's state from Redis; checks what offhook needs to reach.\n\n"
                 "  status [JID]   a user's phone state, subscriptions and watchers (JID: the\n"
                 "                 chat user or the phone contact); without JID, a summary\n"
                 "  users          every configured user, phone contact and state\n"
                 "  resync [JID]   ask the component to send every (or one) user's state again\n"
                 "  check [redis|xmpp|pbx...]\n"
                 "                 try Redis (AUTH, PING, role), the XMPP server (an XEP-0114\n"
                 "                 handshake with the configured secret) and the PBX (SIP\n"
                 "                 OPTIONS); one verdict each (default: all three)\n\n"
                 "  -c, --config FILE   configuration (default /etc/offhook/offhook.conf)\n"
                 "  -j, --json          machine-readable output\n"
                 "  -t, --timeout SECONDS  for each check (default 3)\n"
                 "  -h, --help, -V, --version\n\n"
                 "Exit status: 0 ok, 1 bad argument, 2 usage or configuration, 3 Redis\n"
                 "unreachable or failing, 4 a check failed.\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *path = "/etc/offhook/offhook.conf";
    struct offhook_config cfg = {0};
    struct cfg_errors errs = {0};
    redisContext *r;
    unsigned checks = 0;
    long secs;
    int c, rc;

    while ((c = getopt_long(argc, argv, "c:jt:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 't':
            if (str_parse_long(optarg, 1, 60, &secs) < 0) {
                fprintf(stderr, "offhookctl: --timeout takes 1 to 60 seconds\n");
                return 2;
            }
            timeout_ms = (int)secs * 1000;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("offhookctl %s\n", OFFHOOK_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc && strcmp(argv[optind], "check") == 0)
        checks = check_selection(argc - optind - 1, argv + optind + 1);
    if (optind >= argc ||
        !((strcmp(argv[optind], "users") == 0 && optind + 1 == argc) ||
          (strcmp(argv[optind], "status") == 0 && optind + 2 >= argc) ||
          (strcmp(argv[optind], "resync") == 0 && optind + 2 >= argc) || checks)) {
        usage(stderr);
        return 2; /* before touching the config or Redis */
    }
    /* Least privilege: only the secrets the command uses are read (check xmpp needs the
     * component's; nothing needs the SIP password: OPTIONS is not authenticated here). */
    config_set_secret_use((!checks || (checks & CHECK_REDIS) ? CFG_SECRET_REDIS : 0) |
                          (checks & CHECK_XMPP ? CFG_SECRET_XMPP : 0));
    if (config_load(path, &cfg, &errs) != 0) {
        cfg_errors_print(&errs, stderr);
        cfg_errors_free(&errs);
        config_free(&cfg);
        return 2;
    }
    cfg_errors_free(&errs);
    if (checks) {
        rc = cmd_check(&cfg, checks);
        config_free(&cfg);
        return rc;
    }
    r = connect_redis(&cfg);
    load_directory_users(r, &cfg);
    if (strcmp(argv[optind], "users") == 0 && optind + 1 == argc)
        rc = cmd_users(r, &cfg);
    else if (strcmp(argv[optind], "status") == 0 && optind + 1 == argc)
        rc = cmd_summary(r, &cfg);
    else if (strcmp(argv[optind], "status") == 0 && optind + 2 == argc)
        rc = cmd_status(r, &cfg, argv[optind + 1]);
    else if (strcmp(argv[optind], "resync") == 0 && optind + 2 >= argc)
        rc = cmd_resync(r, &cfg, optind + 1 < argc ? argv[optind + 1] : NULL);
    else {
        usage(stderr);
        rc = 2;
    }
    redisFree(r);
    config_free(&cfg);
    return rc;
}
