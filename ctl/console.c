/* The daemons' answers, for offhookctl (see console.h). */
#include "console.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctlproto.h"
#include "jid.h"
#include "redisread.h"
#include "sbuf.h"
#include "strutil.h"

#define SUBS_PIPELINE 512 /* HGETALLs in flight when reading every user's subscriptions */

static const char *const commands[] = {"subscriptions", "user", "trace", "loglevel",
                                       "config", "reload", NULL};

bool console_is_command(const char *cmd)
{
    for (int i = 0; commands[i]; i++) {
        if (strcmp(commands[i], cmd) == 0)
            return true;
    }
    return false;
}

int console_members(const struct offhook_config *cfg, struct console_member *out, int max)
{
    int n = 0;

    /* One member per role today. A cluster (issue 12) adds its members here. */
    if (n < max)
        out[n++] = (struct console_member){"sipbridge", CONSOLE_SIPBRIDGE,
                                           cfg->sipbridge_control};
    if (n < max)
        out[n++] = (struct console_member){"component", CONSOLE_COMPONENT,
                                           cfg->component_control};
    return n;
}

/* ---- asking --------------------------------------------------------------------------- */

/* Asks m; an empty socket path is "not configured" (CTLC_DOWN with its own words). */
static enum ctlclient_outcome ask(const struct console_member *m, const char *line,
                                  const struct console_opts *o, FILE *out,
                                  struct ctlclient_reply *r)
{
    if (!m->socket[0]) {
        memset(r, 0, sizeof *r);
        sbuf_init(&r->body);
        r->outcome = CTLC_DOWN;
        snprintf(r->text, sizeof r->text, "no control socket: [%s] control is empty", m->role);
        return r->outcome;
    }
    return ctlclient_ask(m->socket, line, o->timeout_ms, out, r);
}

static int exit_for(const struct ctlclient_reply *r)
{
    switch (r->outcome) {
    case CTLC_OK:
        return EXIT_OK;
    case CTLC_ERR:
        if (!strcmp(r->code, CTL_ERR_USAGE) || !strcmp(r->code, CTL_ERR_UNKNOWN))
            return EXIT_USAGE;
        if (!strcmp(r->code, CTL_ERR_NOTFOUND))
            return EXIT_BAD_ARG;
        if (!strcmp(r->code, CTL_ERR_BUSY))
            return EXIT_DAEMON;
        return EXIT_REFUSED;
    default:
        return EXIT_DAEMON;
    }
}

static int worst(int a, int b)
{
    return a > b ? a : b;
}

/* Why m could not be asked, in one line. */
static void unreachable_text(const struct console_member *m, const struct ctlclient_reply *r,
                             char *out, size_t len)
{
    if (r->outcome == CTLC_DOWN)
        snprintf(out, len, "%s is not running (%s)", m->role, r->text);
    else if (r->outcome == CTLC_DENIED)
        snprintf(out, len, "%s: may not use its control socket (%s): run as root or as a "
                           "member of the socket's group (offhook under the systemd units)",
                 m->role, r->text);
    else
        snprintf(out, len, "%s did not answer: %s", m->role, r->text);
}

static const char *outcome_name(enum ctlclient_outcome o)
{
    return o == CTLC_OK ? "ok" : o == CTLC_ERR ? "error" : o == CTLC_DOWN ? "down"
                                : o == CTLC_DENIED ? "denied" : "no_answer";
}

/* {"outcome":...,"error":...} for a daemon that did not answer OK (no closing brace). */
static void json_failure(struct sbuf *b, const struct console_member *m,
                         const struct ctlclient_reply *r)
{
    char why[1400];

    if (r->outcome == CTLC_ERR)
        snprintf(why, sizeof why, "%s", r->text);
    else
        unreachable_text(m, r, why, sizeof why);
    sbuf_printf(b, "{\"outcome\":\"%s\",\"code\":", outcome_name(r->outcome));
    ctlproto_json_str(b, r->outcome == CTLC_ERR ? r->code : NULL);
    sbuf_puts(b, ",\"error\":");
    ctlproto_json_str(b, why);
    if (r->outcome == CTLC_ERR && r->body.len) {
        sbuf_puts(b, ",\"detail\":");
        ctlproto_json_str(b, r->body.data);
    }
}

/* A daemon's JSON body, without its final newline, into b. */
static void json_body(struct sbuf *b, const struct ctlclient_reply *r)
{
    size_t n = r->body.len;

    while (n && (r->body.data[n - 1] == '\n' || r->body.data[n - 1] == '\r'))
        n--;
    if (n)
        sbuf_append(b, r->body.data, n);
    else
        sbuf_puts(b, "null");
}

/* Says on stderr what went wrong with m (an ERR's detail too). */
static void report_failure(const struct console_member *m, const struct ctlclient_reply *r)
{
    char why[1400];

    if (r->outcome == CTLC_ERR) {
        fprintf(stderr, "offhookctl: %s: %s\n", m->role, r->text);
        if (r->body.len)
            fprintf(stderr, "%s%s", r->body.data,
                    r->body.data[r->body.len - 1] == '\n' ? "" : "\n");
        return;
    }
    unreachable_text(m, r, why, sizeof why);
    fprintf(stderr, "offhookctl: %s\n", why);
}

/* Asks every member o->daemons names with line; prints each answer (JSON: one object by
 * role). Returns the worst exit status. */
static int ask_each(const struct offhook_config *cfg, const char *line,
                    const struct console_opts *o)
{
    struct console_member ms[8];
    int n = console_members(cfg, ms, 8), rc = EXIT_OK, shown = 0;
    struct sbuf js;
    char req[CTL_LINE_MAX + 1];

    snprintf(req, sizeof req, "%s%s", line, o->json ? " --json" : "");
    sbuf_init(&js);
    sbuf_puts(&js, "{");
    for (int i = 0; i < n; i++) {
        struct ctlclient_reply r;
        if (!(o->daemons & ms[i].flag))
            continue;
        ask(&ms[i], req, o, NULL, &r);
        rc = worst(rc, exit_for(&r));
        if (o->json) {
            sbuf_printf(&js, "%s\"%s\":", shown++ ? "," : "", ms[i].role);
            if (r.outcome == CTLC_OK) {
                json_body(&js, &r);
            } else {
                json_failure(&js, &ms[i], &r);
                sbuf_puts(&js, "}");
            }
        } else if (r.outcome == CTLC_OK) {
            printf("%s== %s ==\n%s", shown++ ? "\n" : "", ms[i].role,
                   r.body.data ? r.body.data : "");
        } else {
            report_failure(&ms[i], &r);
        }
        ctlclient_reply_free(&r);
    }
    if (o->json) {
        sbuf_puts(&js, "}\n");
        fputs(js.data, stdout);
    }
    sbuf_free(&js);
    return rc;
}

/* ---- Redis, for a daemon that cannot be asked -------------------------------------------- */

static void heartbeat_text(int64_t hb, char *out, size_t len)
{
    char ago[32];

    if (hb < 0) {
        snprintf(out, len, "unknown (Redis failed)");
        return;
    }
    if (hb == 0) {
        snprintf(out, len, "none in the last %d s (the key expires: never written, or its "
                           "writer stopped or lost Redis)",
                 STORE_HEARTBEAT_TTL_MS / 1000);
        return;
    }
    ctlproto_ago(hb, clock_wall_ms(), ago, sizeof ago);
    snprintf(out, len, "%s", ago);
}

/* "<state> <ms>" as sipbridge writes each subscription's state. */
static void parse_sub_value(const char *v, char *state, size_t len, long long *at)
{
    const char *sp = strchr(v, ' ');
    size_t n = sp ? (size_t)(sp - v) : strlen(v);

    if (n >= len)
        n = len - 1;
    memcpy(state, v, n);
    state[n] = '\0';
    *at = sp ? strtoll(sp + 1, NULL, 10) : 0;
}

static bool fallback_state_matches(const char *filter, const char *state)
{
    char base[32];
    size_t n = strcspn(state, "(");

    if (!filter)
        return true;
    snprintf(base, sizeof base, "%.*s", (int)(n < sizeof base ? n : sizeof base - 1), state);
    if (!strcmp(filter, "down") || !strcmp(filter, "failed"))
        return strcmp(base, "active") != 0 && strcmp(base, "pending") != 0;
    return strcmp(filter, base) == 0;
}

/* The subscriptions of one user as last written, printed or added to js. */
static int fallback_subs_rows(redisReply *rep, const char *jid, const struct console_opts *o,
                              struct sbuf *js, int *rows)
{
    for (size_t i = 0; rep && rep->type == REDIS_REPLY_ARRAY && i + 1 < rep->elements; i += 2) {
        const char *field = rep->element[i]->str, *sp = strchr(field, ' ');
        char state[64], package[16], ago[32];
        long long at;

        if (!sp || (size_t)(sp - field) >= sizeof package)
            continue;
        snprintf(package, sizeof package, "%.*s", (int)(sp - field), field);
        parse_sub_value(rep->element[i + 1]->str, state, sizeof state, &at);
        if (o->aor && strcasecmp(o->aor, sp + 1) != 0)
            continue;
        if (!fallback_state_matches(o->state, state))
            continue;
        if (js) {
            sbuf_printf(js, "%s{\"package\":", (*rows)++ ? "," : "");
            ctlproto_json_str(js, package);
            sbuf_puts(js, ",\"aor\":");
            ctlproto_json_str(js, sp + 1);
            sbuf_puts(js, ",\"user\":");
            ctlproto_json_str(js, jid);
            sbuf_puts(js, ",\"state\":");
            ctlproto_json_str(js, state);
            sbuf_printf(js, ",\"written_ms\":%lld}", at);
        } else {
            ctlproto_ago(at, clock_wall_ms(), ago, sizeof ago);
            printf("%-16s %-8s %-40s %-28s %s\n", state, package, sp + 1, jid, ago);
            (*rows)++;
        }
    }
    return 0;
}

/* subscriptions, sipbridge being down: every user's as written, pipelined. */
static int fallback_subscriptions(const struct offhook_config *cfg,
                                  const struct console_opts *o, const char *why)
{
    char err[1024], server[300];
    redisContext *r = redisread_connect(cfg, server, sizeof server, err, sizeof err);
    struct sbuf js;
    int rows = 0;
    size_t sent = 0, got = 0;

    fprintf(stderr, "offhookctl: %s\n", why);
    if (!r) {
        fprintf(stderr, "offhookctl: %s: nothing to show\n", err);
        if (o->json) {
            printf("{\"live\":false,\"error\":");
            sbuf_init(&js);
            ctlproto_json_str(&js, why);
            printf("%s,\"subscriptions\":null}\n", js.data);
            sbuf_free(&js);
        }
        return EXIT_DAEMON;
    }
    sbuf_init(&js);
    if (o->json) {
        sbuf_puts(&js, "{\"live\":false,\"error\":");
        ctlproto_json_str(&js, why);
        sbuf_puts(&js, ",\"subscriptions\":[");
    } else {
        fprintf(stderr, "offhookctl: the states it last wrote to Redis follow: not live, no "
                        "SIP status, no retry times\n");
        printf("%-16s %-8s %-40s %-28s %s\n", "STATE (WRITTEN)", "PACKAGE", "AOR", "USER",
               "WRITTEN");
    }
    /* Keys of users that match --user, in order, SUBS_PIPELINE commands ahead. */
    while (got < cfg->nusers) {
        while (sent < cfg->nusers && sent - got < SUBS_PIPELINE) {
            char key[4096];
            const struct cfg_user *u = &cfg->users[sent++];
            if (storecodec_key_subs(cfg->redis_prefix, u->jid, key, sizeof key) < 0)
                key[0] = '\0';
            redisAppendCommand(r, "HGETALL %s", key);
        }
        {
            redisReply *rep = NULL;
            const struct cfg_user *u = &cfg->users[got++];
            if (redisGetReply(r, (void **)&rep) != REDIS_OK) {
                fprintf(stderr, "offhookctl: Redis: %s\n", r->errstr);
                sbuf_free(&js);
                redisFree(r);
                return EXIT_DAEMON;
            }
            if (!o->user || strcmp(o->user, u->jid) == 0)
                fallback_subs_rows(rep, u->jid, o, o->json ? &js : NULL, &rows);
            freeReplyObject(rep);
        }
    }
    if (o->json) {
        sbuf_printf(&js, "],\"count\":%d}\n", rows);
        fputs(js.data, stdout);
    } else {
        printf("%d subscription%s as last written\n", rows, rows == 1 ? "" : "s");
    }
    sbuf_free(&js);
    redisFree(r);
    return EXIT_DAEMON;
}

/* ---- subscriptions ---------------------------------------------------------------------- */

static int cmd_subscriptions(const struct offhook_config *cfg, const struct console_opts *o)
{
    struct console_member ms[8];
    struct ctlclient_reply r;
    char line[CTL_LINE_MAX + 1], why[1400];
    int rc;

    console_members(cfg, ms, 8);
    if (o->state && strlen(o->state) + (o->aor ? strlen(o->aor) : 0) +
                            (o->user ? strlen(o->user) : 0) > CTL_LINE_MAX - 64) {
        fprintf(stderr, "offhookctl: arguments too long\n");
        return EXIT_USAGE;
    }
    snprintf(line, sizeof line, "subscriptions%s%s%s%s%s%s%s", o->state ? " --state " : "",
             o->state ? o->state : "", o->aor ? " --aor " : "", o->aor ? o->aor : "",
             o->user ? " --user " : "", o->user ? o->user : "", o->json ? " --json" : "");
    ask(&ms[0], line, o, stdout, &r);
    fflush(stdout);
    rc = exit_for(&r);
    if (r.outcome == CTLC_OK || r.outcome == CTLC_ERR) {
        if (r.outcome == CTLC_ERR)
            report_failure(&ms[0], &r);
        ctlclient_reply_free(&r);
        return rc;
    }
    /* Cut in the middle of an answer: what came is printed, the rest is not Redis's. */
    if (r.outcome == CTLC_BROKEN && strstr(r.text, "before the end")) {
        report_failure(&ms[0], &r);
        ctlclient_reply_free(&r);
        return rc;
    }
    unreachable_text(&ms[0], &r, why, sizeof why);
    ctlclient_reply_free(&r);
    return fallback_subscriptions(cfg, o, why);
}

/* ---- user --------------------------------------------------------------------------------- */

/* What Redis says of u while sipbridge cannot be asked: its heartbeat, the last state it
 * wrote and the subscriptions' states. */
static void sipbridge_fallback(const struct offhook_config *cfg, const struct cfg_user *u,
                               const char *why, bool json, struct sbuf *js)
{
    char err[1024], server[300], hbtext[160], ago[32];
    redisContext *r = redisread_connect(cfg, server, sizeof server, err, sizeof err);
    struct user_record rec;
    bool have = false, failed = false;
    int64_t hb = -1;
    redisReply *subs = NULL;
    int rows = 0;

    if (r) {
        hb = redisread_heartbeat(r, cfg, "sipbridge");
        have = redisread_record(r, cfg, u->jid, &rec, &failed);
        subs = redisread_subs(r, cfg, u->jid);
    }
    heartbeat_text(hb, hbtext, sizeof hbtext);
    if (json) {
        sbuf_printf(js, ",\"live\":false,\"redis\":");
        if (!r) {
            sbuf_puts(js, "{\"error\":");
            ctlproto_json_str(js, err);
            sbuf_puts(js, "}");
        } else {
            struct console_opts all = {0};
            sbuf_printf(js, "{\"heartbeat_ms\":%" PRId64 ",\"record\":", hb);
            if (have) {
                sbuf_printf(js, "{\"state\":\"%s\",\"since_ms\":%" PRId64 "}",
                            user_state_name(rec.state), rec.since_ms);
            } else {
                sbuf_puts(js, "null");
            }
            sbuf_puts(js, ",\"subscriptions\":[");
            fallback_subs_rows(subs, u->jid, &all, js, &rows);
            sbuf_puts(js, "]}");
        }
    } else {
        printf("%s\n", why);
        if (!r) {
            printf("Redis:    %s: nothing more to show\n", err);
        } else {
            printf("heartbeat: %s\n", hbtext);
            if (have) {
                ctlproto_ago(rec.since_ms, clock_wall_ms(), ago, sizeof ago);
                printf("last written: %s since %s -- not live: nobody keeps it true while "
                       "sipbridge is down%s\n",
                       user_state_name(rec.state), ago,
                       hb == 0 ? "; watchers are shown \"unknown\"" : "");
            } else {
                printf("last written: nothing (sipbridge never wrote a state for this "
                       "user)\n");
            }
            printf("subscriptions as last written:\n");
            {
                struct console_opts all = {0};
                fallback_subs_rows(subs, u->jid, &all, NULL, &rows);
            }
            if (!rows)
                printf("  (none)\n");
        }
    }
    if (subs)
        freeReplyObject(subs);
    if (r)
        redisFree(r);
}

/* What Redis says of u while the component cannot be asked: its heartbeat, the watchers. */
static void component_fallback(const struct offhook_config *cfg, const struct cfg_user *u,
                               const char *why, bool json, struct sbuf *js)
{
    char err[1024], server[300], hbtext[160], key[4096];
    redisContext *r = redisread_connect(cfg, server, sizeof server, err, sizeof err);
    redisReply *w = NULL;
    int64_t hb = -1;

    if (r) {
        hb = redisread_heartbeat(r, cfg, "component");
        if (storecodec_key_watchers(cfg->redis_prefix, u->contact, key, sizeof key) == 0)
            w = redisread_cmd(r, "SMEMBERS %s", key);
    }
    heartbeat_text(hb, hbtext, sizeof hbtext);
    if (json) {
        sbuf_puts(js, ",\"live\":false,\"redis\":");
        if (!r) {
            sbuf_puts(js, "{\"error\":");
            ctlproto_json_str(js, err);
            sbuf_puts(js, "}");
        } else {
            sbuf_printf(js, "{\"heartbeat_ms\":%" PRId64 ",\"watchers\":[", hb);
            for (size_t i = 0; w && w->type == REDIS_REPLY_ARRAY && i < w->elements; i++) {
                sbuf_puts(js, i ? "," : "");
                ctlproto_json_str(js, w->element[i]->str);
            }
            sbuf_puts(js, "]}");
        }
    } else {
        printf("%s\n", why);
        if (!r) {
            printf("Redis:    %s: nothing more to show\n", err);
        } else {
            printf("heartbeat: %s\n", hbtext);
            printf("watchers (as stored; nothing is sent to them while the component is "
                   "down): %zu\n",
                   w && w->type == REDIS_REPLY_ARRAY ? w->elements : 0);
            for (size_t i = 0; w && w->type == REDIS_REPLY_ARRAY && i < w->elements; i++)
                printf("  %s\n", w->element[i]->str);
        }
    }
    if (w)
        freeReplyObject(w);
    if (r)
        redisFree(r);
}

static const struct cfg_user *find_user(const struct offhook_config *cfg, const char *arg)
{
    char bare[JID_MAX + 1];
    const struct cfg_user *u;

    if (jid_to_bare(arg, bare, sizeof bare) < 0)
        return NULL;
    u = config_user_by_jid(cfg, bare);
    return u ? u : config_user_by_contact(cfg, bare);
}

static int cmd_user(const struct offhook_config *cfg, const char *arg,
                    const struct console_opts *o)
{
    const struct cfg_user *u = find_user(cfg, arg);
    struct console_member ms[8];
    int n, rc = EXIT_OK, shown = 0;
    char line[CTL_LINE_MAX + 1];
    struct sbuf js;

    if (!u) {
        fprintf(stderr, "offhookctl: %s is not a configured user or phone contact\n", arg);
        return EXIT_BAD_ARG;
    }
    n = console_members(cfg, ms, 8);
    snprintf(line, sizeof line, "user %s%s", u->jid, o->json ? " --json" : "");
    sbuf_init(&js);
    if (o->json) {
        sbuf_puts(&js, "{\"user\":");
        ctlproto_json_str(&js, u->jid);
        sbuf_puts(&js, ",\"contact\":");
        ctlproto_json_str(&js, u->contact);
    }
    for (int i = 0; i < n; i++) {
        struct ctlclient_reply r;
        char why[1400];
        if (!(o->daemons & ms[i].flag))
            continue;
        ask(&ms[i], line, o, NULL, &r);
        rc = worst(rc, exit_for(&r));
        if (r.outcome == CTLC_OK) {
            if (o->json) {
                sbuf_printf(&js, ",\"%s\":", ms[i].role);
                json_body(&js, &r);
            } else {
                printf("%s== %s ==\n%s", shown++ ? "\n" : "", ms[i].role,
                       r.body.data ? r.body.data : "");
            }
        } else if (r.outcome == CTLC_ERR) {
            report_failure(&ms[i], &r);
            if (o->json) {
                sbuf_printf(&js, ",\"%s\":", ms[i].role);
                json_failure(&js, &ms[i], &r);
                sbuf_puts(&js, "}");
            }
        } else {
            unreachable_text(&ms[i], &r, why, sizeof why);
            if (o->json) {
                sbuf_printf(&js, ",\"%s\":", ms[i].role);
                json_failure(&js, &ms[i], &r);
            } else {
                printf("%s== %s: NOT ANSWERING ==\n", shown++ ? "\n" : "", ms[i].role);
            }
            if (ms[i].flag == CONSOLE_SIPBRIDGE)
                sipbridge_fallback(cfg, u, why, o->json, &js);
            else
                component_fallback(cfg, u, why, o->json, &js);
            if (o->json)
                sbuf_puts(&js, "}");
        }
        ctlclient_reply_free(&r);
    }
    if (o->json) {
        sbuf_puts(&js, "}\n");
        fputs(js.data, stdout);
    }
    sbuf_free(&js);
    return rc;
}

/* ---- trace, loglevel, config, reload -------------------------------------------------------- */

static bool is_aor(const char *s)
{
    return str_has_prefix(s, "sip:") || str_has_prefix(s, "sips:") || str_has_prefix(s, "tel:");
}

static int cmd_trace(const struct offhook_config *cfg, const char *who,
                     const struct console_opts *o)
{
    struct console_opts mine = *o;
    char line[CTL_LINE_MAX + 1];
    const char *target = who;

    if (who && !is_aor(who)) {
        const struct cfg_user *u = find_user(cfg, who);
        if (!u) {
            fprintf(stderr, "offhookctl: %s is not a configured user, phone contact or AOR "
                            "(sip:...)\n",
                    who);
            return EXIT_BAD_ARG;
        }
        target = u->jid;
    } else if (who) {
        mine.daemons &= CONSOLE_SIPBRIDGE; /* only sipbridge knows AORs */
        if (!mine.daemons) {
            fprintf(stderr, "offhookctl: an AOR is traced in sipbridge only\n");
            return EXIT_USAGE;
        }
    }
    if (who && strlen(who) > CTL_LINE_MAX - 64) {
        fprintf(stderr, "offhookctl: %s: too long\n", who);
        return EXIT_USAGE;
    }
    snprintf(line, sizeof line, "trace%s%s%s%s%s%s", target ? " " : "", target ? target : "",
             o->duration ? " --for " : "", o->duration ? o->duration : "",
             o->bodies ? " --bodies" : "", o->off ? " --off" : "");
    return ask_each(cfg, line, &mine);
}

int console_run(const struct offhook_config *cfg, const char *cmd, int argc, char **argv,
                const struct console_opts *o)
{
    bool has_sub_opts = o->state || o->aor || o->user;
    bool has_trace_opts = o->duration || o->bodies || o->off;
    char line[CTL_LINE_MAX + 1];

    if (!strcmp(cmd, "subscriptions") && argc == 0 && !has_trace_opts)
        return cmd_subscriptions(cfg, o);
    if (has_sub_opts || (has_trace_opts && strcmp(cmd, "trace") != 0))
        goto usage;
    if (!strcmp(cmd, "user") && argc == 1)
        return cmd_user(cfg, argv[0], o);
    if (!strcmp(cmd, "trace") && argc <= 1 && (argc == 1 || !has_trace_opts))
        return cmd_trace(cfg, argc ? argv[0] : NULL, o);
    if (!strcmp(cmd, "loglevel") && argc <= 1) {
        if (argc && strlen(argv[0]) > 32)
            goto usage;
        snprintf(line, sizeof line, "loglevel%s%s", argc ? " " : "", argc ? argv[0] : "");
        return ask_each(cfg, line, o);
    }
    if ((!strcmp(cmd, "config") || !strcmp(cmd, "reload")) && argc == 0)
        return ask_each(cfg, cmd, o);
usage:
    fprintf(stderr, "offhookctl: %s: wrong arguments (see offhookctl --help)\n", cmd);
    return EXIT_USAGE;
}

/* ---- liveness ------------------------------------------------------------------------------- */

/* The text after "key": in a JSON document we wrote ourselves (flat keys, no nesting of
 * the same name), or NULL. */
static const char *json_after(const char *doc, const char *key)
{
    char pat[64];
    const char *p;

    snprintf(pat, sizeof pat, "\"%s\":", key);
    p = doc ? strstr(doc, pat) : NULL;
    return p ? p + strlen(pat) : NULL;
}

void console_liveness(const struct offhook_config *cfg, const char *role, int timeout_ms,
                      struct console_liveness *out)
{
    struct console_member ms[8];
    struct console_opts o = {.timeout_ms = timeout_ms};
    struct ctlclient_reply r;
    int n = console_members(cfg, ms, 8);
    const char *p;

    memset(out, 0, sizeof *out);
    for (int i = 0; i < n; i++) {
        if (strcmp(ms[i].role, role) != 0)
            continue;
        out->configured = ms[i].socket[0] != '\0';
        out->outcome = ask(&ms[i], "status --json", &o, NULL, &r);
        if (r.outcome != CTLC_OK) {
            if (r.outcome == CTLC_ERR)
                snprintf(out->error, sizeof out->error, "%s", r.text);
            else
                unreachable_text(&ms[i], &r, out->error, sizeof out->error);
        } else {
            out->ready = (p = json_after(r.body.data, "ready")) && !strncmp(p, "true", 4);
            out->pid = (p = json_after(r.body.data, "pid")) ? strtol(p, NULL, 10) : 0;
            out->uptime_s = (p = json_after(r.body.data, "uptime_s")) ? strtoll(p, NULL, 10)
                                                                       : 0;
            p = json_after(r.body.data, "not_ready_because");
            if (p && *p == '"') {
                size_t k = 0;
                for (p++; *p && *p != '"' && k + 1 < sizeof out->not_ready; p++) {
                    if (*p == '\\' && p[1] == 'u') {
                        out->not_ready[k++] = ';'; /* an escaped newline */
                        p += 5;
                        continue;
                    }
                    out->not_ready[k++] = *p;
                }
                while (k && out->not_ready[k - 1] == ';')
                    k--;
                out->not_ready[k] = '\0';
            }
        }
        ctlclient_reply_free(&r);
        return;
    }
}
