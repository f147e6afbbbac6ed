/* status, loglevel, config and reload on the control socket (see ctlcommon.h). */
#include "ctlcommon.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "ctlproto.h"
#include "ctlsock.h"
#include "daemon.h"
#include "log.h"
#include "sbuf.h"
#include "strutil.h"
#include "version.h"

#define USERS_NAMED_MAX 20 /* "config": users added/removed/changed named, then a count */

static struct ctlcommon_hooks hooks;
static int64_t started_mono_ms, started_wall_ms;

static int traces_running(void);

void ctlcommon_ago(int64_t wall_ms, char *out, size_t len)
{
    ctlproto_ago(wall_ms, clock_wall_ms(), out, len);
}

/* ---- status ------------------------------------------------------------------------ */

static enum ctl_result run_status(void *arg, struct ctl_call *c)
{
    const struct offhook_config *cfg = daemon_config();
    int64_t up_s = (clock_mono_ms() - started_mono_ms) / 1000;

    if (ctl_argc(c) != 0) {
        ctl_fail(c, CTL_ERR_USAGE, "status");
        return CTL_DONE;
    }
    if (ctl_json(c)) {
        ctl_puts(c, "{\"daemon\":");
        ctl_json_str(c, hooks.daemon);
        ctl_puts(c, ",\"version\":");
        ctl_json_str(c, OFFHOOK_VERSION);
        ctl_printf(c, ",\"pid\":%ld,\"started_ms\":%" PRId64 ",\"uptime_s\":%" PRId64
                      ",\"log_level\":",
                   (long)getpid(), started_wall_ms, up_s);
        ctl_json_str(c, log_level_name(log_level));
        ctl_puts(c, ",\"config\":");
        ctl_json_str(c, cfg ? cfg->path : NULL);
        ctl_printf(c, ",\"traces\":%d", traces_running());
        if (hooks.status)
            hooks.status(hooks.arg, c);
        ctl_puts(c, "}\n");
        return CTL_DONE;
    }
    ctl_printf(c, "daemon:      %s %s (pid %ld)\n", hooks.daemon, OFFHOOK_VERSION,
               (long)getpid());
    ctl_printf(c, "up:          %" PRId64 "d %02" PRId64 "h %02" PRId64 "m %02" PRId64 "s\n",
               up_s / 86400, up_s / 3600 % 24, up_s / 60 % 60, up_s % 60);
    if (cfg && strcmp(log_level_name(log_level), cfg->log_level) != 0)
        ctl_printf(c, "log level:   %s (set by loglevel; the configuration says %s)\n",
                   log_level_name(log_level), cfg->log_level);
    else
        ctl_printf(c, "log level:   %s\n", log_level_name(log_level));
    ctl_printf(c, "config:      %s\n", cfg ? cfg->path : "?");
    if (hooks.trace)
        ctl_printf(c, "traces:      %d running\n", traces_running());
    if (hooks.status)
        hooks.status(hooks.arg, c);
    return CTL_DONE;
}

/* ---- trace ---------------------------------------------------------------------------- */

struct trace_entry {
    char who[CFG_MAX_LINE]; /* a JID or AOR, as asked ("" = free slot) */
    int objects;            /* how many the daemon set it on */
    struct log_trace t;
};

static struct trace_entry traces[CTL_TRACES_MAX];
static struct event *trace_timer; /* fires at the earliest end, to say it ended */

static void trace_arm(void);

static void on_trace_end(evutil_socket_t fd, short what, void *arg)
{
    int64_t now = clock_mono_ms();

    for (int i = 0; i < CTL_TRACES_MAX; i++) {
        if (traces[i].who[0] && traces[i].t.until_ms <= now) {
            log_notice("control", "event=trace_ended who=%s reason=time", log_q(traces[i].who));
            traces[i].who[0] = '\0';
        }
    }
    trace_arm();
}

static void trace_arm(void)
{
    int64_t next = 0, now = clock_mono_ms();
    struct timeval tv;

    for (int i = 0; i < CTL_TRACES_MAX; i++) {
        if (traces[i].who[0] && (!next || traces[i].t.until_ms < next))
            next = traces[i].t.until_ms;
    }
    if (!trace_timer)
        trace_timer = evtimer_new(hooks.base, on_trace_end, NULL);
    if (!next) {
        evtimer_del(trace_timer);
        return;
    }
    next = next > now ? next - now : 0;
    tv.tv_sec = next / 1000;
    tv.tv_usec = (next % 1000) * 1000 + 1000; /* just past the end: the flags are off */
    evtimer_add(trace_timer, &tv);
}

static int traces_running(void)
{
    int n = 0;

    for (int i = 0; i < CTL_TRACES_MAX; i++)
        n += traces[i].who[0] && traces[i].t.until_ms > clock_mono_ms();
    return n;
}

static void trace_list(struct ctl_call *c)
{
    int64_t now = clock_mono_ms(), wall = clock_wall_ms();
    int n = 0;

    if (ctl_json(c))
        ctl_puts(c, "{\"traces\":[");
    for (int i = 0; i < CTL_TRACES_MAX; i++) {
        const struct trace_entry *e = &traces[i];
        if (!e->who[0] || e->t.until_ms <= now)
            continue;
        if (ctl_json(c)) {
            ctl_printf(c, "%s{\"who\":", n ? "," : "");
            ctl_json_str(c, e->who);
            ctl_printf(c, ",\"objects\":%d,\"until_ms\":%" PRId64 ",\"bodies\":%s}", e->objects,
                       wall + (e->t.until_ms - now), e->t.bodies ? "true" : "false");
        } else {
            ctl_printf(c, "%s for %" PRId64 " s more%s\n", e->who, (e->t.until_ms - now) / 1000,
                       e->t.bodies ? ", with NOTIFY bodies" : "");
        }
        n++;
    }
    if (ctl_json(c))
        ctl_puts(c, "]}\n");
    else if (!n)
        ctl_puts(c, "no trace running\n");
}

static enum ctl_result run_trace(void *arg, struct ctl_call *c)
{
    struct ctl_opt opts[] = {{.name = "--for", .has_value = true}, {.name = "--bodies"},
                             {.name = "--off"}};
    const char *who = NULL;
    struct trace_entry *e = NULL;
    struct log_trace t = {0};
    long secs = CTL_TRACE_DEFAULT_S;
    bool off;
    int npos, n;

    if (ctl_parse_args(c, opts, 3, &who, 1, &npos) < 0)
        return CTL_DONE;
    off = opts[2].given;
    if (!npos) {
        if (opts[0].given || opts[1].given || off) {
            ctl_fail(c, CTL_ERR_USAGE, "trace %s [--for DURATION] [--bodies] [--off]",
                     hooks.trace_who);
            return CTL_DONE;
        }
        trace_list(c);
        return CTL_DONE;
    }
    if (opts[0].given && ctlproto_duration(opts[0].value, 1, CTL_TRACE_MAX_S, &secs) < 0) {
        ctl_fail(c, CTL_ERR_USAGE, "--for takes a duration from 1s to 24h (90s, 10m, 2h)");
        return CTL_DONE;
    }
    if (strlen(who) >= sizeof traces[0].who) {
        ctl_fail(c, CTL_ERR_NOTFOUND, "nothing by that name");
        return CTL_DONE;
    }
    for (int i = 0; i < CTL_TRACES_MAX && !e; i++) {
        if (traces[i].who[0] && strcmp(traces[i].who, who) == 0)
            e = &traces[i];
    }
    if (!off) {
        t.until_ms = clock_mono_ms() + secs * 1000;
        t.bodies = opts[1].given;
        for (int i = 0; i < CTL_TRACES_MAX && !e; i++) {
            if (!traces[i].who[0] || traces[i].t.until_ms <= clock_mono_ms())
                e = &traces[i];
        }
        if (!e) {
            ctl_fail(c, CTL_ERR_FAILED, "%d traces run already: end one with --off",
                     CTL_TRACES_MAX);
            return CTL_DONE;
        }
    }
    n = hooks.trace(hooks.arg, who, &t);
    if (!n) {
        ctl_fail(c, CTL_ERR_NOTFOUND, "%s names nothing %s traces (%s)", who, hooks.daemon,
                 hooks.trace_who);
        return CTL_DONE;
    }
    if (off) {
        if (e)
            e->who[0] = '\0';
        log_notice("control", "event=trace_ended who=%s reason=off", log_q(who));
    } else {
        str_copy(e->who, sizeof e->who, who);
        e->t = t;
        e->objects = n;
        log_notice("control", "event=trace_started who=%s objects=%d for_s=%ld bodies=%s",
                   log_q(who),
                   n, secs, t.bodies ? "yes" : "no");
    }
    trace_arm();
    if (ctl_json(c)) {
        ctl_puts(c, "{\"who\":");
        ctl_json_str(c, who);
        ctl_printf(c, ",\"objects\":%d,\"tracing\":%s,\"until_ms\":%" PRId64 ",\"bodies\":%s}\n",
                   n, off ? "false" : "true", off ? 0 : clock_wall_ms() + secs * 1000,
                   t.bodies ? "true" : "false");
    } else if (off) {
        ctl_printf(c, "trace of %s ended\n", who);
    } else {
        ctl_printf(c, "tracing %s (%d object%s) for %ld s, at debug level in %s's log%s\n", who,
                   n, n == 1 ? "" : "s", secs, hooks.daemon,
                   t.bodies ? ", NOTIFY bodies included" : "");
    }
    return CTL_DONE;
}

void ctlcommon_free(void)
{
    if (trace_timer)
        event_free(trace_timer);
    trace_timer = NULL;
}

/* ---- loglevel ---------------------------------------------------------------------- */

static enum ctl_result run_loglevel(void *arg, struct ctl_call *c)
{
    const char *before = log_level_name(log_level);
    const char *level = ctl_arg(c, 0);

    if (ctl_argc(c) > 1) {
        ctl_fail(c, CTL_ERR_USAGE, "loglevel [error|warning|notice|info|debug]");
        return CTL_DONE;
    }
    if (level) {
        if (log_set_level_name(level) < 0) {
            ctl_fail(c, CTL_ERR_USAGE, "unknown level '%s': error, warning, notice, info or "
                                       "debug",
                     level);
            return CTL_DONE;
        }
        if (hooks.on_log_level)
            hooks.on_log_level(hooks.arg);
        /* Said at the level that is about to hold, so that the change is in the log. */
        log_write(LOG_NOTICE, "control", "event=log_level from=%s to=%s until=reload", before,
                  log_level_name(log_level));
    }
    if (ctl_json(c)) {
        ctl_puts(c, "{\"log_level\":");
        ctl_json_str(c, log_level_name(log_level));
        ctl_puts(c, ",\"was\":");
        ctl_json_str(c, before);
        ctl_puts(c, "}\n");
    } else if (level) {
        ctl_printf(c, "log level %s (was %s) until the next reload or restart\n",
                   log_level_name(log_level), before);
    } else {
        ctl_printf(c, "log level %s\n", log_level_name(log_level));
    }
    return CTL_DONE;
}

/* ---- config ------------------------------------------------------------------------ */

struct config_out {
    struct ctl_call *c;
    int n, pending_reload, pending_restart;
};

static void put_value(void *arg, const struct cfg_value *v)
{
    struct config_out *o = arg;
    struct ctl_call *c = o->c;
    const char *pending = !v->differs ? NULL : v->reloadable ? "reload" : "restart";
    /* [log] level: the level in force may have been set by "loglevel". */
    const char *value = strcmp(v->section, "log") == 0 && strcmp(v->name, "level") == 0
                            ? log_level_name(log_level)
                            : v->value;

    o->pending_reload += v->differs && v->reloadable;
    o->pending_restart += v->differs && !v->reloadable;
    if (ctl_json(c)) {
        ctl_printf(c, "%s{\"section\":", o->n++ ? "," : "");
        ctl_json_str(c, v->section);
        ctl_puts(c, ",\"key\":");
        ctl_json_str(c, v->name);
        ctl_puts(c, ",\"value\":");
        ctl_json_str(c, value);
        ctl_printf(c, ",\"default\":%s,\"reloadable\":%s,\"secret\":%s,\"file_value\":",
                   v->is_default ? "true" : "false", v->reloadable ? "true" : "false",
                   v->secret ? "true" : "false");
        ctl_json_str(c, v->differs ? v->file_value : NULL);
        ctl_puts(c, ",\"pending\":");
        ctl_json_str(c, pending);
        ctl_puts(c, "}");
        return;
    }
    ctl_printf(c, "[%s] %s = %s", v->section, v->name, value);
    if (value != v->value && strcmp(value, v->value) != 0)
        ctl_printf(c, "   (set by loglevel; loaded: %s)", v->value);
    if (v->differs)
        ctl_printf(c, "   <- the file says %s%s%s: %s to apply", v->secret ? "" : "'",
                   v->secret ? (v->file_value[0] ? "another secret" : "none") : v->file_value,
                   v->secret ? "" : "'", pending);
    ctl_puts(c, "\n");
}

/* Users the file adds, removes or changes against the running configuration. */
static void users_diff(struct ctl_call *c, const struct offhook_config *run,
                       const struct offhook_config *file)
{
    const char *kinds[] = {"added", "removed", "changed"};
    bool json = ctl_json(c);

    /* With a directory the file lists nobody: the users in force are the directory's. */
    if (run->dir_ldap) {
        if (json)
            ctl_printf(c, ",\"users\":{\"running\":%zu,\"from\":\"directory\"}",
                       run->nusers);
        else
            ctl_printf(c, "users: %zu in force, from the directory ([directory] source = "
                          "ldap)\n",
                       run->nusers);
        return;
    }

    if (json)
        ctl_printf(c, ",\"users\":{\"running\":%zu,\"file\":%zu", run->nusers, file->nusers);
    else
        ctl_printf(c, "users: %zu running, %zu in the file\n", run->nusers, file->nusers);
    for (int k = 0; k < 3; k++) {
        const struct offhook_config *a = k == 1 ? run : file, *b = k == 1 ? file : run;
        int n = 0;

        for (size_t i = 0; i < a->nusers; i++) {
            const struct cfg_user *ua = &a->users[i], *ub = config_user_by_jid(b, ua->jid);
            bool hit = false;
            if (k < 2)
                hit = ub == NULL;
            else if (ub) {
                hit = ua->naors != ub->naors || strcmp(ua->contact, ub->contact) != 0;
                for (int x = 0; !hit && x < ua->naors; x++)
                    hit = strcmp(ua->aors[x], ub->aors[x]) != 0;
            }
            if (!hit)
                continue;
            if (n < USERS_NAMED_MAX) {
                if (json) {
                    ctl_printf(c, "%s", n ? "," : ",\"");
                    if (!n)
                        ctl_printf(c, "%s\":[", kinds[k]);
                    ctl_json_str(c, ua->jid);
                } else {
                    ctl_printf(c, "%s %s\n", k == 0 ? "  +" : k == 1 ? "  -" : "  ~", ua->jid);
                }
            }
            n++;
        }
        if (json && n)
            ctl_printf(c, "],\"%s_count\":%d", kinds[k], n);
        else if (!json && n > USERS_NAMED_MAX)
            ctl_printf(c, "  ... and %d more %s\n", n - USERS_NAMED_MAX, kinds[k]);
    }
    if (json)
        ctl_puts(c, "}");
}

static enum ctl_result run_config(void *arg, struct ctl_call *c)
{
    const struct offhook_config *cfg = daemon_config();
    struct offhook_config file = {0};
    struct cfg_errors errs = {0};
    struct config_out o = {.c = c};
    size_t problems;

    if (ctl_argc(c) != 0) {
        ctl_fail(c, CTL_ERR_USAGE, "config");
        return CTL_DONE;
    }
    /* The file as it is now, read as a reload would (secrets included, never shown). */
    problems = config_load(cfg->path, &file, &errs);
    if (ctl_json(c)) {
        ctl_puts(c, "{\"path\":");
        ctl_json_str(c, cfg->path);
        ctl_puts(c, ",\"keys\":[");
    } else {
        ctl_printf(c, "# running configuration of %s, loaded from %s\n", hooks.daemon,
                   cfg->path);
    }
    config_each_value(cfg, problems ? NULL : &file, put_value, &o);
    if (ctl_json(c)) {
        ctl_puts(c, "],\"file_problems\":[");
        for (size_t i = 0; i < errs.n; i++) {
            ctl_puts(c, i ? "," : "");
            ctl_json_str(c, errs.msg[i]);
        }
        ctl_puts(c, "]");
        if (!problems)
            users_diff(c, cfg, &file);
        ctl_printf(c, ",\"pending_reload\":%d,\"pending_restart\":%d}\n", o.pending_reload,
                   o.pending_restart);
    } else {
        if (problems) {
            ctl_printf(c, "# the file has %zu problem%s now (a reload would be refused):\n",
                       problems, problems == 1 ? "" : "s");
            for (size_t i = 0; i < errs.n; i++)
                ctl_printf(c, "#   %s\n", errs.msg[i]);
        } else {
            users_diff(c, cfg, &file);
            if (o.pending_reload || o.pending_restart)
                ctl_printf(c, "# the file differs: %d key%s wait%s for a reload, %d for a "
                              "restart\n",
                           o.pending_reload, o.pending_reload == 1 ? "" : "s",
                           o.pending_reload == 1 ? "s" : "", o.pending_restart);
            else
                ctl_puts(c, "# the file holds these values\n");
        }
    }
    cfg_errors_free(&errs);
    config_free(&file);
    return CTL_DONE;
}

/* ---- reload ------------------------------------------------------------------------ */

static enum ctl_result run_reload(void *arg, struct ctl_call *c)
{
    struct sbuf said;
    int rc;

    if (ctl_argc(c) != 0) {
        ctl_fail(c, CTL_ERR_USAGE, "reload");
        return CTL_DONE;
    }
    log_notice("daemon", "event=reload_requested via=control_socket");
    sbuf_init(&said);
    rc = daemon_reload_report(&said);
    if (rc < 0) {
        ctl_fail(c, CTL_ERR_FAILED, "reload refused: the running configuration stays");
        ctl_puts(c, said.data ? said.data : ""); /* each problem as file:line: message */
    } else if (ctl_json(c)) {
        ctl_puts(c, "{\"reloaded\":true,\"said\":");
        ctl_json_str(c, said.data ? said.data : "");
        ctl_puts(c, "}\n");
    } else {
        ctl_puts(c, said.data ? said.data : "");
    }
    sbuf_free(&said);
    return CTL_DONE;
}

void ctlcommon_add(struct ctlsock *s, const struct ctlcommon_hooks *h)
{
    hooks = *h;
    started_mono_ms = clock_mono_ms();
    started_wall_ms = clock_wall_ms();
    ctlsock_add(s, &(struct ctl_command){.name = "status", .usage = "",
                                         .help = "version, uptime, readiness, counts",
                                         .run = run_status});
    ctlsock_add(s, &(struct ctl_command){.name = "loglevel",
                                         .usage = "[error|warning|notice|info|debug]",
                                         .help = "show or set the log level (until reload)",
                                         .run = run_loglevel, .changes = true});
    ctlsock_add(s, &(struct ctl_command){.name = "config", .usage = "",
                                         .help = "running values; where the file differs",
                                         .run = run_config});
    ctlsock_add(s, &(struct ctl_command){.name = "reload", .usage = "",
                                         .help = "reload the configuration file (as SIGHUP)",
                                         .run = run_reload, .changes = true});
    if (hooks.trace) {
        static char usage[96];
        snprintf(usage, sizeof usage, "[%s [--for DURATION] [--bodies] [--off]]",
                 hooks.trace_who);
        ctlsock_add(s, &(struct ctl_command){.name = "trace", .usage = usage,
                                             .help = "log one user's messages and decisions "
                                                     "at debug level; list traces",
                                             .run = run_trace, .changes = true});
    }
}
