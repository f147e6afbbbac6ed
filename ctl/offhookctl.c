/* offhookctl: what offhook knows, for operators and scripts.
 *
 *   offhookctl [-c FILE] [--json] status [JID]   a user's phone state, subscriptions and
 *                                                watchers from Redis, and whether the
 *                                                daemons run; without JID, a summary
 *   offhookctl [-c FILE] [--json] users          every configured user and their state
 *   offhookctl [-c FILE] resync [JID]            ask the component to send everything again
 *   offhookctl [-c FILE] [--json] cluster [JID]  the sipbridges and components sharing the
 *                                                work (their leases), and who owns a user
 *   offhookctl [-c FILE] [--json] check [redis|xmpp|pbx...]
 *                                                can offhook reach Redis, the XMPP server
 *                                                and the PBX (check.c, xmppcheck.c,
 *                                                sipcheck.c)
 *   offhookctl [-c FILE] [--json] [-d DAEMON] subscriptions|user|trace|loglevel|config|reload
 *                                                asked of the running daemons on their
 *                                                control sockets (console.c)
 *   offhookctl [-c FILE] roster prosody|ejabberd [DOMAIN]
 *                                                the rosters [component] roster asks for,
 *                                                as the server's own shared roster: a
 *                                                Prosody mod_groups file, or ejabberdctl
 *                                                commands (rosterplan.h)
 *
 * It reads the same configuration as the daemons (Redis address, key prefix, users, with
 * [directory] source = ldap the users of the daemons' last known copy in Redis; the
 * daemons' control sockets). status, users and resync talk to Redis (redisread.c) and work
 * whether or not the daemons run; the daemons' commands say when one cannot be asked and
 * show what Redis holds instead, marked as not live. */
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

#include "check.h"
#include "config.h"
#include "console.h"
#include "ctlproto.h"
#include "redisread.h"
#include "jid.h"
#include "log.h"
#include "rosterplan.h"
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

/* ---- Redis: status, users and resync need it, and stop with exit 3 without it ---- */

static char server[300]; /* where the Redis we talk to is, for messages and the summary */

static redisContext *connect_redis(const struct offhook_config *cfg)
{
    char err[1024];
    redisContext *r = redisread_connect(cfg, server, sizeof server, err, sizeof err);

    if (!r) {
        fprintf(stderr, "offhookctl: %s\n", err);
        exit(EXIT_REDIS);
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
        exit(EXIT_REDIS);
    }
    return rep;
}

/* The user's record; false if sipbridge has written none. */
static bool load_record(redisContext *r, const struct offhook_config *cfg, const char *jid,
                        struct user_record *rec)
{
    bool failed = false, have = redisread_record(r, cfg, jid, rec, &failed);

    if (failed) {
        fprintf(stderr, "offhookctl: Redis: %s\n", r->errstr);
        exit(EXIT_REDIS);
    }
    return have;
}

/* [directory] source = ldap: the users the daemons last took from the directory. */
static void load_directory_users(redisContext *r, struct offhook_config *cfg)
{
    if (redisread_directory_users(r, cfg) < 0) {
        fprintf(stderr, "offhookctl: Redis: %s\n", r->errstr);
        exit(EXIT_REDIS);
    }
}

static int64_t heartbeat(redisContext *r, const struct offhook_config *cfg, const char *daemon)
{
    int64_t v = redisread_heartbeat(r, cfg, daemon);

    if (v < 0) {
        fprintf(stderr, "offhookctl: Redis: %s\n", r->errstr);
        exit(EXIT_REDIS);
    }
    return v;
}

/* A daemon's heartbeat, in words: the key expires, so "none" covers never and stopped. */
static void beat_text(int64_t ms, char *out, size_t len)
{
    char a[32];

    if (!ms) {
        snprintf(out, len, "none in the last %d s", STORE_HEARTBEAT_TTL_MS / 1000);
        return;
    }
    ago(ms, a, sizeof a);
    snprintf(out, len, "%s", a);
}

/* "sipbridge is not running (...)" after "sipbridge:" reads "not running (...)". */
static const char *error_without(const char *error, const char *label)
{
    size_t n = strcspn(label, ":");

    if (strncmp(error, label, n) != 0 || error[n] != ' ')
        return error;
    error += n + 1;
    return strncmp(error, "is ", 3) == 0 ? error + 3 : error;
}

/* One line on a daemon: what its control socket says (or why it cannot), its heartbeat. */
static void daemon_line(const char *role, const struct console_liveness *l, int64_t beat)
{
    char b[64];

    beat_text(beat, b, sizeof b);
    printf("%-11s ", role);
    if (!l->configured)
        printf("no control socket; ");
    else if (l->outcome == CTLC_OK)
        printf("running, %s%s%s (pid %ld, up %lld s); ", l->ready ? "ready" : "not ready: ",
               l->ready ? "" : l->not_ready, "", l->pid, l->uptime_s);
    else
        printf("%s; ", error_without(l->error, role));
    printf("heartbeat %s\n", b);
}

static void daemon_json(const char *role, const struct console_liveness *l)
{
    struct sbuf b;

    sbuf_init(&b);
    sbuf_printf(&b, ",\"%s\":{\"running\":", role);
    if (!l->configured || (l->outcome != CTLC_OK && l->outcome != CTLC_DOWN))
        sbuf_puts(&b, "null");
    else
        sbuf_puts(&b, l->outcome == CTLC_OK ? "true" : "false");
    sbuf_printf(&b, ",\"ready\":%s,\"pid\":%ld,\"uptime_s\":%lld,\"error\":",
                l->outcome == CTLC_OK && l->ready ? "true" : "false", l->pid, l->uptime_s);
    ctlproto_json_str(&b, l->outcome == CTLC_OK ? NULL : l->error);
    sbuf_puts(&b, "}");
    fputs(b.data, stdout);
    sbuf_free(&b);
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
    struct console_liveness live_sb, live_comp;
    char key[512];
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
    console_liveness(cfg, "sipbridge", timeout_ms, &live_sb);
    console_liveness(cfg, "component", timeout_ms, &live_comp);
    if (json) {
        printf("{\"users\":%zu,\"states\":{", cfg->nusers);
        for (int s = 0; s < US__COUNT; s++)
            printf("%s\"%s\":%d", s ? "," : "", user_state_name((enum user_state)s), counts[s]);
        printf("},\"sipbridge_heartbeat_ms\":%" PRId64 ",\"component_heartbeat_ms\":%" PRId64
               ",\"events\":%lld,\"redis\":",
               sb, comp, xlen);
        json_str(server);
        daemon_json("sipbridge", &live_sb);
        daemon_json("component", &live_comp);
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
    daemon_line("sipbridge:", &live_sb, sb);
    daemon_line("component:", &live_comp, comp);
    printf("events:     %lld in the stream\n", xlen);
    if (!sb)
        printf("note:       without sipbridge's heartbeat the component shows every phone as "
               "unknown\n");
    return 0;
}

static int cmd_status(redisContext *r, const struct offhook_config *cfg, const char *arg)
{
    char bare[JID_MAX + 1], key[4096], since[32], last[32];
    const struct cfg_user *u;
    struct user_record rec;
    redisReply *subs, *watchers;
    struct console_liveness live;
    int64_t beat;
    bool have, is_live;

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
    /* What Redis holds is true only while sipbridge keeps it: its heartbeat says so. */
    beat = heartbeat(r, cfg, "sipbridge");
    console_liveness(cfg, "sipbridge", timeout_ms, &live);
    is_live = beat != 0;
    if (json) {
        printf("{\"live\":%s,\"sipbridge_heartbeat_ms\":%" PRId64 ",\"sipbridge_running\":%s,",
               is_live ? "true" : "false", beat,
               !live.configured || (live.outcome != CTLC_OK && live.outcome != CTLC_DOWN)
                   ? "null"
                   : live.outcome == CTLC_OK ? "true" : "false");
        printf("\"jid\":");
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
        printf("\nlast event: %s\n", last);
        if (is_live) {
            char b[64];
            beat_text(beat, b, sizeof b);
            printf("live:       yes (sipbridge's heartbeat %s)\n", b);
        } else {
            printf("live:       NO: sipbridge's heartbeat is missing (none in the last %d s)%s%s; "
                   "this is the last state it wrote, and watchers are shown \"unknown\" "
                   "(offhookctl user %s tells more)\n",
                   STORE_HEARTBEAT_TTL_MS / 1000,
                   live.configured && live.outcome != CTLC_OK ? "; " : "",
                   live.configured && live.outcome != CTLC_OK ? live.error : "", u->jid);
        }
        printf("subscriptions:\n");
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

/* ---- cluster ---------------------------------------------------------------------------- */

#define MAX_MEMBERS 256

struct ctl_member {
    char name[STORECODEC_MEMBER_NAME_MAX + 1];
    struct member_rec rec;
};

struct group {
    struct ctl_member m[MAX_MEMBERS];
    size_t n;
    char holder[STORECODEC_MEMBER_NAME_MAX + 1]; /* "" = none valid */
    uint64_t holder_epoch;
};

static int by_member_name(const void *a, const void *b)
{
    return strcmp(((const struct ctl_member *)a)->name, ((const struct ctl_member *)b)->name);
}

/* Reads a group's members hash (storecodec.h, "Leases"). */
static void load_group(redisContext *r, const struct offhook_config *cfg, const char *name,
                       struct group *g)
{
    char key[512], holder[STORECODEC_MEMBER_NAME_MAX + 1] = "";
    uint64_t hepoch = 0;
    redisReply *rep;

    memset(g, 0, sizeof *g);
    storecodec_key_members(cfg->redis_prefix, name, key, sizeof key);
    rep = cmd(r, "HGETALL %s", key);
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
        const char *k = rep->element[i]->str, *v = rep->element[i + 1]->str;
        if (!k || !v)
            continue;
        if (strcmp(k, STORECODEC_HOLDER_FIELD) == 0) {
            if (storecodec_owner_parse(v, &hepoch, holder, sizeof holder) < 0)
                holder[0] = '\0';
        } else if (g->n < MAX_MEMBERS && storecodec_member_name_ok(k) &&
                   storecodec_member_parse(v, &g->m[g->n].rec) == 0) {
            snprintf(g->m[g->n].name, sizeof g->m[g->n].name, "%s", k);
            g->n++;
        }
    }
    freeReplyObject(rep);
    qsort(g->m, g->n, sizeof g->m[0], by_member_name);
    for (size_t i = 0; holder[0] && i < g->n; i++) {
        if (strcmp(g->m[i].name, holder) == 0 && g->m[i].rec.epoch == hepoch &&
            !g->m[i].rec.leaving) {
            snprintf(g->holder, sizeof g->holder, "%s", holder);
            g->holder_epoch = hepoch;
        }
    }
}

/* The Redis server's clock, ms: leases are on it, not on this host's. */
static int64_t server_now_ms(redisContext *r)
{
    redisReply *rep = cmd(r, "TIME");
    int64_t now = clock_wall_ms();

    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && rep->element[0]->str &&
        rep->element[1]->str)
        now = strtoll(rep->element[0]->str, NULL, 10) * 1000 +
              strtoll(rep->element[1]->str, NULL, 10) / 1000;
    freeReplyObject(rep);
    return now;
}

static bool list_mode(const struct offhook_config *cfg)
{
    return cfg->sip_resource_list[0] && cfg->sip_event_dialog;
}

/* The member a user goes to by the membership (member.c's rule): rendezvous hashing over
 * the sipbridges not leaving, or the resource list's holder. NULL: nobody takes work. */
static const char *assigned(const struct offhook_config *cfg, const struct group *g,
                            const char *jid)
{
    const char *best = NULL;
    uint64_t best_w = 0;

    if (list_mode(cfg))
        return g->holder[0] ? g->holder : NULL;
    for (size_t i = 0; i < g->n; i++) {
        uint64_t w;
        if (g->m[i].rec.leaving)
            continue;
        w = storecodec_rendezvous(g->m[i].name, jid);
        if (!best || w > best_w) {
            best = g->m[i].name;
            best_w = w;
        }
    }
    return best;
}

static void print_member(const struct ctl_member *m, int64_t now, long ttl_s, const char *role,
                         bool sipbridge, bool first)
{
    int64_t renewed = m->rec.expires_ms - ttl_s * 1000;
    char age[32];

    if (json) {
        printf("%s{\"name\":", first ? "" : ",");
        json_str(m->name);
        printf(",\"epoch\":%llu,\"role\":", (unsigned long long)m->rec.epoch);
        json_str(role);
        printf(",\"lease_age_ms\":%lld,\"expires_in_ms\":%lld,\"since_ms\":%lld",
               (long long)(now - renewed), (long long)(m->rec.expires_ms - now),
               (long long)m->rec.since_ms);
        if (sipbridge)
            printf(",\"users_owned\":%ld", m->rec.count);
        else
            printf(",\"ready\":%s", m->rec.ready ? "true" : "false");
        printf("}");
        return;
    }
    snprintf(age, sizeof age, "%.1f s ago", (double)(now - renewed) / 1000.0);
    if (sipbridge)
        printf("  %-28s %-8s epoch %-6llu renewed %-11s %6ld user%s%s\n", m->name, role,
               (unsigned long long)m->rec.epoch, age, m->rec.count, m->rec.count == 1 ? "" : "s",
               m->rec.expires_ms < now ? "  (lease run out: taken for dead soon)" : "");
    else
        printf("  %-28s %-8s epoch %-6llu renewed %-11s%s%s\n", m->name, role,
               (unsigned long long)m->rec.epoch, age,
               !strcmp(role, "standby") && !m->rec.ready ? "  (not ready: loading state)" : "",
               m->rec.expires_ms < now ? "  (lease run out)" : "");
}

static int cmd_cluster(redisContext *r, const struct offhook_config *cfg, const char *arg)
{
    static struct group sb, comp;
    int64_t now;

    load_group(r, cfg, "sipbridge", &sb);
    load_group(r, cfg, "component", &comp);
    now = server_now_ms(r);
    if (arg) {
        char bare[JID_MAX + 1], key[4096], oname[STORECODEC_MEMBER_NAME_MAX + 1] = "";
        const struct cfg_user *u;
        const char *want;
        uint64_t oepoch = 0;
        bool alive = false;
        redisReply *rep;

        if (jid_to_bare(arg, bare, sizeof bare) < 0 ||
            !((u = config_user_by_jid(cfg, bare)) || (u = config_user_by_contact(cfg, bare)))) {
            fprintf(stderr, "offhookctl: %s is not a configured user or phone contact\n", arg);
            return 1;
        }
        storecodec_key_user(cfg->redis_prefix, u->jid, key, sizeof key);
        rep = cmd(r, "HGET %s owner", key);
        if (rep->type == REDIS_REPLY_STRING &&
            storecodec_owner_parse(rep->str, &oepoch, oname, sizeof oname) < 0)
            oname[0] = '\0';
        freeReplyObject(rep);
        for (size_t i = 0; oname[0] && i < sb.n; i++)
            alive |= strcmp(sb.m[i].name, oname) == 0 && sb.m[i].rec.epoch == oepoch;
        want = assigned(cfg, &sb, u->jid);
        if (json) {
            printf("{\"jid\":");
            json_str(u->jid);
            printf(",\"contact\":");
            json_str(u->contact);
            printf(",\"owner\":");
            if (oname[0])
                json_str(oname);
            else
                printf("null");
            printf(",\"owner_epoch\":%llu,\"owner_alive\":%s,\"assigned\":",
                   (unsigned long long)oepoch, alive ? "true" : "false");
            if (want)
                json_str(want);
            else
                printf("null");
            printf("}\n");
            return 0;
        }
        printf("user:       %s\ncontact:    %s\n", u->jid, u->contact);
        if (oname[0])
            printf("owner:      %s (epoch %llu%s): its state in Redis was written by it\n", oname,
                   (unsigned long long)oepoch, alive ? "" : ", lease gone");
        else
            printf("owner:      none (no state written yet)\n");
        printf("assigned:   %s%s\n", want ? want : "nobody (no sipbridge running)",
               want && oname[0] && alive && strcmp(want, oname) != 0
                   ? " (moving there: the owner keeps it until it has been written)"
                   : "");
        return 0;
    }
    if (json) {
        printf("{\"redis\":");
        json_str(server);
        printf(",\"sipbridges\":[");
        for (size_t i = 0; i < sb.n; i++)
            print_member(&sb.m[i], now, cfg->sipbridge_lease_ttl,
                         sb.m[i].rec.leaving ? "leaving"
                         : list_mode(cfg) && !strcmp(sb.holder, sb.m[i].name) ? "list"
                                                                              : "member",
                         true, i == 0);
        printf("],\"resource_list_holder\":");
        if (list_mode(cfg) && sb.holder[0])
            json_str(sb.holder);
        else
            printf("null");
        printf(",\"components\":[");
        for (size_t i = 0; i < comp.n; i++)
            print_member(&comp.m[i], now, cfg->component_lease_ttl,
                         !strcmp(comp.holder, comp.m[i].name) ? "active"
                         : comp.m[i].rec.leaving             ? "leaving"
                                                             : "standby",
                         false, i == 0);
        printf("]}\n");
        return 0;
    }
    printf("redis:       %s%s\n", server,
           cfg->redis_nsentinels ? " (master named by the sentinels)" : "");
    printf("sipbridges:  %zu%s\n", sb.n, sb.n ? "" : " (none running)");
    for (size_t i = 0; i < sb.n; i++)
        print_member(&sb.m[i], now, cfg->sipbridge_lease_ttl,
                     sb.m[i].rec.leaving ? "leaving"
                     : list_mode(cfg) && !strcmp(sb.holder, sb.m[i].name) ? "list"
                                                                          : "member",
                     true, i == 0);
    if (list_mode(cfg))
        printf("  resource list held by %s\n", sb.holder[0] ? sb.holder : "nobody");
    printf("components:  %zu%s\n", comp.n, comp.n ? "" : " (none running)");
    for (size_t i = 0; i < comp.n; i++)
        print_member(&comp.m[i], now, cfg->component_lease_ttl,
                     !strcmp(comp.holder, comp.m[i].name) ? "active"
                     : comp.m[i].rec.leaving             ? "leaving"
                                                         : "standby",
                     false, i == 0);
    if (comp.n && !comp.holder[0])
        printf("  no component is connected to the XMPP server\n");
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
    return failed ? EXIT_CHECK : EXIT_OK;
}

/* ---- roster: the server's own shared roster, for servers that grant nothing ---------- */

static const char *domain_of(const char *jid)
{
    const char *at = strchr(jid, '@');

    return at ? at + 1 : jid;
}

/* A word for sh: in single quotes, each ' as '\''. */
static void sh_word(const char *s)
{
    putchar('\'');
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", stdout);
        else
            putchar(*s);
    }
    putchar('\'');
}

struct ejd_ctx {
    const struct cfg_user *u;
    size_t items;
};

/* One item: ejabberdctl add_rosteritem LOCALUSER LOCALHOST USER HOST NICK GROUPS SUBS */
static bool ejd_item(void *arg, const struct rosterplan_item *it)
{
    struct ejd_ctx *c = arg;
    const char *uat = strchr(c->u->jid, '@'), *cat = strchr(it->contact, '@');
    char groups[2048] = "", ulocal[1024], clocal[1024];
    size_t n = 0;

    if (!uat || !cat)
        return true;
    /* ejabberd splits groups on ';': one inside a group's name becomes ','. */
    for (int i = 0; i < it->ngroups && n + 1 < sizeof groups; i++) {
        if (i)
            groups[n++] = ';';
        for (const char *p = it->groups[i]; *p && n + 1 < sizeof groups; p++)
            groups[n++] = *p == ';' ? ',' : *p;
    }
    groups[n] = '\0';
    snprintf(ulocal, sizeof ulocal, "%.*s", (int)(uat - c->u->jid), c->u->jid);
    snprintf(clocal, sizeof clocal, "%.*s", (int)(cat - it->contact), it->contact);
    fputs("ejabberdctl add_rosteritem ", stdout);
    sh_word(ulocal);
    putchar(' ');
    sh_word(uat + 1);
    putchar(' ');
    sh_word(clocal);
    putchar(' ');
    sh_word(cat + 1);
    putchar(' ');
    sh_word(it->name);
    putchar(' ');
    sh_word(groups);
    fputs(" to\n", stdout);
    c->items++;
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Prosody's mod_groups file: members of a group get every other member, subscription
 * both; a group whose name starts with + goes to every user of the host. */
static int roster_prosody(const struct rosterplan *p, const struct offhook_config *cfg,
                          const char *domain)
{
    size_t pos = 0, groups = 0;
    const char *k;
    void *v;
    char nick[ROSTER_NAME_MAX];

    if (cfg->roster_mode == CFG_ROSTER_EVERYONE) {
        /* A public group of the host's phone contacts: every user gets them (and their
         * own, which a group cannot leave out). */
        printf("[+%s]\n", cfg->roster_group);
        for (size_t i = 0; i < cfg->nusers; i++) {
            const struct cfg_user *u = &cfg->users[i];
            if (strcmp(domain_of(u->jid), domain) != 0)
                continue;
            rosterplan_nick(u, nick, sizeof nick);
            printf("%s=%s\n", u->contact, nick);
        }
        fprintf(stderr, "offhookctl: one public group for %s\n", domain);
        return 0;
    }
    /* One group per directory group with a member on the host: its members and their
     * phone contacts (members then also get each other's chat accounts). */
    const char **names = xcalloc(p->by_group.count + 1, sizeof *names);
    size_t n = 0;

    /* In order, so that a file written again differs only where the users do. */
    while (strmap_next(&p->by_group, &pos, &k, &v))
        names[n++] = k;
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t g = 0; g < n; g++) {
        const struct rosterplan_list *l = strmap_get(&p->by_group, names[g]);
        bool here = false;
        for (size_t i = 0; i < l->n && !here; i++)
            here = !domain || strcmp(domain_of(l->u[i]->jid), domain) == 0;
        if (!here)
            continue;
        printf("[%s]\n", names[g]);
        for (size_t i = 0; i < l->n; i++) {
            rosterplan_nick(l->u[i], nick, sizeof nick);
            printf("%s=%s\n", l->u[i]->jid, l->u[i]->name ? l->u[i]->name : "");
            printf("%s=%s\n", l->u[i]->contact, nick);
        }
        groups++;
    }
    free(names);
    fprintf(stderr, "offhookctl: %zu groups\n", groups);
    return 0;
}

static int cmd_roster(const struct offhook_config *cfg, const char *server_kind,
                      const char *domain)
{
    struct rosterplan p;
    size_t items = 0, pos = 0;
    struct strmap domains;
    const char *k;
    void *v;

    if (cfg->roster_mode == CFG_ROSTER_NONE) {
        fprintf(stderr, "offhookctl: [component] roster is none: set everyone or groups, the "
                        "rosters to write\n");
        return EXIT_USAGE;
    }
    strmap_init(&domains);
    for (size_t i = 0; i < cfg->nusers; i++)
        strmap_put(&domains, domain_of(cfg->users[i].jid), (void *)cfg->users[i].jid);
    if (domain && !strmap_get(&domains, domain)) {
        fprintf(stderr, "offhookctl: no user on %s\n", domain);
        strmap_free(&domains);
        return EXIT_BAD_ARG;
    }
    if (!domain && strcmp(server_kind, "prosody") == 0 &&
        cfg->roster_mode == CFG_ROSTER_EVERYONE) {
        if (domains.count != 1) {
            fprintf(stderr, "offhookctl: users on %zu domains: give the DOMAIN of the "
                            "VirtualHost the file is for\n", domains.count);
            strmap_free(&domains);
            return EXIT_BAD_ARG;
        }
        strmap_next(&domains, &pos, &k, &v);
        domain = k;
    }
    rosterplan_build(&p, cfg, NULL, NULL);
    if (strcmp(server_kind, "prosody") == 0) {
        (void)roster_prosody(&p, cfg, domain);
    } else {
        printf("#!/bin/sh\n# The phone contacts [component] roster = %s asks for, as "
               "ejabberd roster items\n# (subscription to). Written by offhookctl %s.\n"
               "set -e\n", cfg->component_roster, OFFHOOK_VERSION);
        for (size_t i = 0; i < cfg->nusers; i++) {
            struct ejd_ctx c = {.u = &cfg->users[i]};
            if (domain && strcmp(domain_of(c.u->jid), domain) != 0)
                continue;
            if (rosterplan_over_limit(&p, c.u)) {
                fprintf(stderr, "offhookctl: %s: over roster_max_items, left out\n", c.u->jid);
                continue;
            }
            rosterplan_each(&p, c.u, ejd_item, &c);
            items += c.items;
        }
        fprintf(stderr, "offhookctl: %zu roster items\n", items);
    }
    rosterplan_free(&p);
    strmap_free(&domains);
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: offhookctl [-c FILE] [--json] [-t SECONDS] [-d DAEMON] COMMAND [ARG...]\n"
                 "What offhook knows: from Redis, from the running daemons, and whether it\n"
                 "reaches its upstreams.\n\n"
                 "From Redis (whether or not the daemons run):\n"
                 "  status [JID]   a user's phone state, subscriptions and watchers (JID: the\n"
                 "                 chat user or the phone contact), and whether that state is\n"
                 "                 live; without JID, a summary with each daemon's liveness\n"
                 "  users          every configured user, phone contact and state\n"
                 "  resync [JID]   ask the component to send every (or one) user's state again\n"
                 "  cluster [JID]  the sipbridges (lease age, users owned) and components\n"
                 "                 (active, standby) sharing the work; with JID, which\n"
                 "                 sipbridge owns that user\n"
                 "From the running daemons (their control sockets):\n"
                 "  subscriptions [--state STATE] [--aor AOR] [--user JID]\n"
                 "                 sipbridge's subscriptions: state, last SIP answer, last\n"
                 "                 NOTIFY, next try (STATE: queued, subscribing, pending,\n"
                 "                 active, backoff, down, failed)\n"
                 "  user JID       why a user shows what it shows: the state and the source\n"
                 "                 and dialog behind it, each subscription, what each watcher\n"
                 "                 was sent and when, refused watchers, PEP\n"
                 "  trace [JID|AOR [--for DURATION] [--bodies] [--off]]\n"
                 "                 that user's SIP messages and decisions at debug level in\n"
                 "                 the daemons' logs, for DURATION (default 10m); no argument:\n"
                 "                 the traces running\n"
                 "  loglevel [LEVEL]  show or set the log level (until the next reload)\n"
                 "  config         the running values, and where the file differs\n"
                 "  reload         reload the configuration, with the result\n"
                 "Checks:\n"
                 "  check [redis|xmpp|pbx...]\n"
                 "                 try Redis (AUTH, PING, role), the XMPP server (an XEP-0114\n"
                 "                 handshake with the configured secret) and the PBX (SIP\n"
                 "                 OPTIONS); one verdict each (default: all three)\n"
                 "  roster prosody|ejabberd [DOMAIN]\n"
                 "                 the rosters [component] roster asks for, as the server's\n"
                 "                 shared roster: a Prosody mod_groups file, or ejabberdctl\n"
                 "                 add_rosteritem commands (for servers that grant offhook\n"
                 "                 no roster writes)\n\n"
                 "  -c, --config FILE   configuration (default /etc/offhook/offhook.conf)\n"
                 "  -j, --json          machine-readable output\n"
                 "  -t, --timeout SECONDS  for each check (default 3), or the longest a\n"
                 "                      daemon may stay silent (default 10)\n"
                 "  -d, --daemon sipbridge|component  ask only that one (loglevel, config,\n"
                 "                      reload, trace, user)\n"
                 "  -h, --help, -V, --version\n\n"
                 "Exit status: 0 ok, 1 bad argument, 2 usage or configuration, 3 Redis\n"
                 "unreachable or failing, 4 a check failed, 5 a daemon could not be asked\n"
                 "(not running, no permission, no answer), 6 a daemon refused or failed the\n"
                 "request.\n");
}

int main(int argc, char **argv)
{
    enum { OPT_STATE = 256, OPT_AOR, OPT_USER, OPT_FOR, OPT_BODIES, OPT_OFF };
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"json", no_argument, NULL, 'j'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"daemon", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         /* the daemons' commands' own options */
                                         {"state", required_argument, NULL, OPT_STATE},
                                         {"aor", required_argument, NULL, OPT_AOR},
                                         {"user", required_argument, NULL, OPT_USER},
                                         {"for", required_argument, NULL, OPT_FOR},
                                         {"bodies", no_argument, NULL, OPT_BODIES},
                                         {"off", no_argument, NULL, OPT_OFF},
                                         {NULL, 0, NULL, 0}};
    const char *path = "/etc/offhook/offhook.conf";
    struct console_opts copts = {.daemons = CONSOLE_BOTH};
    struct offhook_config cfg = {0};
    struct cfg_errors errs = {0};
    bool timeout_given = false, console = false, cmd_opts = false;
    redisContext *r;
    unsigned checks = 0;
    long secs;
    int c, rc;

    while ((c = getopt_long(argc, argv, "c:jt:d:hV", opts, NULL)) != -1) {
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
                return EXIT_USAGE;
            }
            timeout_ms = (int)secs * 1000;
            timeout_given = true;
            break;
        case 'd':
            if (strcmp(optarg, "sipbridge") == 0)
                copts.daemons = CONSOLE_SIPBRIDGE;
            else if (strcmp(optarg, "component") == 0)
                copts.daemons = CONSOLE_COMPONENT;
            else {
                fprintf(stderr, "offhookctl: --daemon is sipbridge or component\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_STATE:
            copts.state = optarg;
            cmd_opts = true;
            break;
        case OPT_AOR:
            copts.aor = optarg;
            cmd_opts = true;
            break;
        case OPT_USER:
            copts.user = optarg;
            cmd_opts = true;
            break;
        case OPT_FOR:
            if (ctlproto_duration(optarg, 1, 86400, &secs) < 0) {
                fprintf(stderr, "offhookctl: --for takes a duration from 1s to 24h (90s, 10m, "
                                "2h)\n");
                return EXIT_USAGE;
            }
            copts.duration = optarg;
            cmd_opts = true;
            break;
        case OPT_BODIES:
            copts.bodies = true;
            cmd_opts = true;
            break;
        case OPT_OFF:
            copts.off = true;
            cmd_opts = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case 'V':
            printf("offhookctl %s\n", OFFHOOK_VERSION);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc && strcmp(argv[optind], "check") == 0)
        checks = check_selection(argc - optind - 1, argv + optind + 1);
    console = optind < argc && console_is_command(argv[optind]);
    if (optind >= argc ||
        !((strcmp(argv[optind], "users") == 0 && optind + 1 == argc) ||
          (strcmp(argv[optind], "status") == 0 && optind + 2 >= argc) ||
          (strcmp(argv[optind], "resync") == 0 && optind + 2 >= argc) ||
          (strcmp(argv[optind], "roster") == 0 && optind + 2 <= argc && optind + 3 >= argc &&
           (strcmp(argv[optind + 1], "prosody") == 0 ||
            strcmp(argv[optind + 1], "ejabberd") == 0)) ||
          (strcmp(argv[optind], "cluster") == 0 && optind + 2 >= argc) || checks || console) ||
        (cmd_opts && !console)) {
        usage(stderr);
        return EXIT_USAGE; /* before touching the config or Redis */
    }
    /* Least privilege: only the secrets the command uses are read (check xmpp needs the
     * component's; nothing needs the SIP password: OPTIONS is not authenticated here). */
    config_set_secret_use((!checks || (checks & CHECK_REDIS) ? CFG_SECRET_REDIS : 0) |
                          (checks & CHECK_XMPP ? CFG_SECRET_XMPP : 0));
    if (config_load(path, &cfg, &errs) != 0) {
        cfg_errors_print(&errs, stderr);
        cfg_errors_free(&errs);
        if (!console) {
            config_free(&cfg);
            return EXIT_USAGE;
        }
        /* The daemons run on what they loaded before: they can still be asked (where
         * their sockets are is taken from the file as far as it reads, else the
         * defaults), and "reload" then gets their own verdict on the file. */
        fprintf(stderr, "offhookctl: %s has problems (a reload would be refused); asking the "
                        "daemons anyway\n",
                path);
    }
    cfg_errors_free(&errs);
    if (checks) {
        rc = cmd_check(&cfg, checks);
        config_free(&cfg);
        return rc;
    }
    if (console) {
        copts.json = json;
        copts.timeout_ms = timeout_given ? timeout_ms : 10000;
        /* With a directory, who the users are is in Redis: read it if Redis answers (the
         * daemons are asked either way). */
        if (cfg.dir_ldap && (r = redisread_connect(&cfg, server, sizeof server, NULL, 0))) {
            (void)redisread_directory_users(r, &cfg);
            redisFree(r);
        }
        rc = console_run(&cfg, argv[optind], argc - optind - 1, argv + optind + 1, &copts);
        config_free(&cfg);
        return rc;
    }
    if (strcmp(argv[optind], "roster") == 0 && !cfg.dir_ldap) {
        /* The file's users: Redis has nothing to add. */
        rc = cmd_roster(&cfg, argv[optind + 1], optind + 2 < argc ? argv[optind + 2] : NULL);
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
    else if (strcmp(argv[optind], "roster") == 0)
        rc = cmd_roster(&cfg, argv[optind + 1], optind + 2 < argc ? argv[optind + 2] : NULL);
    else if (strcmp(argv[optind], "cluster") == 0 && optind + 2 >= argc)
        rc = cmd_cluster(r, &cfg, optind + 1 < argc ? argv[optind + 1] : NULL);
    else {
        usage(stderr);
        rc = EXIT_USAGE;
    }
    redisFree(r);
    config_free(&cfg);
    return rc;
}
