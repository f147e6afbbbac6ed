/* Command line, first config load, signals in the loop, and the systemd notify protocol. */
#include "daemon.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <stddef.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "config.h"
#include "directory.h"
#include "log.h"
#include "metrics.h"
#include "sbuf.h"
#include "strutil.h"
#include "version.h"

static struct daemon_hooks hooks;
static unsigned reloads_applied;
static struct event *ev_hup, *ev_term, *ev_int, *ev_watchdog;
static struct metric *m_reload_ok, *m_reload_time, *m_restart_pending;
static struct metric *m_rt_priority, *m_rt_refused;
static long rt_in_force; /* SCHED_FIFO priority of the loop's thread, 0 = SCHED_OTHER */

/* --check-config run by root checks as the user the daemon runs as (the systemd units'
 * User=), as prosodyctl does: a file that user cannot read fails the check here, not in
 * the unit's ExecStartPre= later. Drops to that user for good (the process only checks
 * and exits), or exits 1 saying why it cannot. */
static void check_as_user(const char *prog, const char *user, bool asked)
{
    struct passwd *pw;

    if (geteuid() != 0) {
        struct passwd *me = getpwuid(geteuid());
        if (asked && (!me || strcmp(me->pw_name, user) != 0)) {
            fprintf(stderr, "%s: --check-as %s: only root can check as another user\n", prog,
                    user);
            exit(1);
        }
        return; /* checks as itself: ExecStartPre= runs it as the daemon's user */
    }
    errno = 0;
    pw = getpwnam(user);
    if (!pw) {
        fprintf(stderr,
                "%s: cannot check as user '%s' (the systemd units run the daemon as %s): %s\n"
                "%s: create it (adduser --system --group --no-create-home --home /nonexistent "
                "%s), or name the daemon's user with --check-as USER (--check-as root checks "
                "as root, which says nothing about what the daemon can read)\n",
                prog, user, OFFHOOK_DAEMON_USER, errno ? strerror(errno) : "no such user", prog,
                user);
        exit(1);
    }
    if (pw->pw_uid == 0) {
        printf("%s: checking as %s, not as the daemon's user\n", prog, pw->pw_name);
        fflush(stdout);
        return;
    }
    /* Supplementary groups as systemd gives them to User= (the group database), then the
     * primary group, then the user: in that order, while we still may. */
    if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
        setuid(pw->pw_uid) != 0) {
        fprintf(stderr, "%s: cannot switch to user '%s' to check as it: %s\n", prog, user,
                strerror(errno));
        exit(1);
    }
    if (setuid(0) == 0) { /* must be impossible now */
        fprintf(stderr, "%s: still root after switching to '%s': not checking\n", prog, user);
        exit(1);
    }
    printf("%s: checking as user %s (uid %lu, gid %lu)%s\n", prog, pw->pw_name,
           (unsigned long)pw->pw_uid, (unsigned long)pw->pw_gid,
           asked ? "" : ", the user the systemd units run the daemon as");
    fflush(stdout);
}

void daemon_parse_args(int argc, char **argv, const char *prog, const char *summary,
                       struct daemon_args *out)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, 'C'},
        {"check-as", required_argument, NULL, 'U'},
        {"print-defaults", no_argument, NULL, 'D'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *check_as = NULL;
    int c;

    /* Before any secret is read: a core dump would hold the component secret and the
     * Redis and SIP passwords, so none is written, and the process's /proc files
     * (mem, environ, maps) belong to root, as for a setuid program. The units also say
     * LimitCORE=0. Failing is not fatal (a kernel without prctl cannot dump less). */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        fprintf(stderr, "%s: cannot turn core dumps off: %s\n", prog, strerror(errno));
    out->config_path = "/etc/offhook/offhook.conf";
    out->check_config = false;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            out->config_path = optarg;
            break;
        case 'C':
            out->check_config = true;
            break;
        case 'U':
            check_as = optarg;
            break;
        case 'D':
            config_print_defaults(stdout);
            exit(0);
        case 'h':
            printf("Usage: %s [-c FILE] [--check-config [--check-as USER]]\n"
                   "%s\n\n"
                   "  -c, --config FILE   configuration file (default %s)\n"
                   "      --check-config  validate the configuration, print each problem as\n"
                   "                      file:line: message, exit 0 if none, 1 otherwise;\n"
                   "                      run by root, it checks as user %s (what the\n"
                   "                      systemd units run the daemon as), or exits 1 if\n"
                   "                      there is no such user\n"
                   "      --check-as USER  with --check-config as root: check as USER instead\n"
                   "      --print-defaults  print every configuration key with its default\n"
                   "  -h, --help          this help\n"
                   "  -V, --version       print the version\n\n"
                   "Signals: SIGHUP reloads the configuration, SIGTERM stops cleanly.\n",
                   prog, summary, out->config_path, OFFHOOK_DAEMON_USER);
            exit(0);
        case 'V':
            printf("%s %s\n", prog, OFFHOOK_VERSION);
            exit(0);
        default:
            fprintf(stderr, "Try '%s --help'.\n", prog);
            exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", prog, argv[optind],
                prog);
        exit(2);
    }
    if (check_as && !out->check_config) {
        fprintf(stderr, "%s: --check-as goes with --check-config\nTry '%s --help'.\n", prog,
                prog);
        exit(2);
    }
    if (out->check_config)
        check_as_user(prog, check_as ? check_as : OFFHOOK_DAEMON_USER, check_as != NULL);
}

int daemon_load_config(const char *path, struct offhook_config *cfg)
{
    struct cfg_errors errs = {0};
    size_t n = config_load(path, cfg, &errs);

    if (n) {
        cfg_errors_print(&errs, stderr);
        fprintf(stderr, "%zu problem%s in %s\n", n, n == 1 ? "" : "s", path);
    }
    cfg_errors_free(&errs);
    if (!n && log_set_level_name(cfg->log_level) < 0)
        return -1;
    return n ? -1 : 0;
}

void daemon_notify(const char *fmt, ...)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char msg[512];
    va_list ap;
    size_t plen;
    socklen_t salen;
    int fd;

    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    plen = strlen(path);
    if (plen >= sizeof sa.sun_path)
        return;
    memcpy(sa.sun_path, path, plen);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen) < 0)
        log_debug("daemon", "event=notify_failed errno=%d", errno);
    close(fd);
}

static void register_metrics(void)
{
    m_reload_ok = metric_new(METRIC_GAUGE, "offhook_config_last_reload_successful",
                             "1 if the last configuration reload (SIGHUP) was applied, 0 if "
                             "it was refused; 1 at start.",
                             NULL, NULL);
    m_reload_time = metric_new(METRIC_GAUGE,
                               "offhook_config_last_reload_success_timestamp_seconds",
                               "When the configuration in force was loaded (start or last "
                               "applied reload), Unix time.",
                               NULL, NULL);
    m_restart_pending = metric_new(METRIC_GAUGE, "offhook_config_restart_pending",
                                   "Restart-only keys whose value in the file differs from "
                                   "the running one (0: the file is fully in force).",
                                   NULL, NULL);
    m_rt_priority = metric_new(METRIC_GAUGE, "offhook_realtime_priority",
                               "SCHED_FIFO priority the event loop runs at (realtime_priority "
                               "in force), 0 = the normal scheduler.",
                               NULL, NULL);
    m_rt_refused = metric_new(METRIC_COUNTER, "offhook_realtime_refused_total",
                              "Times the kernel refused the configured realtime_priority.",
                              NULL, NULL);
    metric_set(m_reload_ok, NULL, 1);
    metric_set(m_reload_time, NULL, (double)(clock_wall_us() / 1000000));
}

/* Why a realtime priority: an event crosses sipbridge, Redis and the component, and on a
 * host with more runnable processes than cores (Prosody, the PBX, Redis beside offhook)
 * each wakeup may wait behind another process's time slice; under SCHED_FIFO the loop
 * runs as soon as it is woken (docs/performance.md, target 4). SCHED_RESET_ON_FORK:
 * nothing the daemon starts inherits it. Should the loop ever spin, the kernel's RT
 * throttling (sched_rt_runtime_us) still leaves the core to others 5% of the time. */
static void apply_scheduling(const struct offhook_config *cfg)
{
    long want = hooks.realtime_priority ? hooks.realtime_priority(cfg) : 0;
    struct sched_param sp = {.sched_priority = (int)want};
    int err;

    if (want == rt_in_force)
        return;
    if (sched_setscheduler(0, want ? SCHED_FIFO | SCHED_RESET_ON_FORK : SCHED_OTHER, &sp) == 0) {
        log_info("main", "event=scheduling policy=%s priority=%ld", want ? "fifo" : "other",
                 want);
        rt_in_force = want;
        metric_set(m_rt_priority, NULL, (double)want);
        return;
    }
    err = errno;
    metric_inc(m_rt_refused, NULL);
    log_warn("main", "event=realtime_refused priority=%ld in_force=%ld error=%s hint=%s", want,
             rt_in_force, log_q(strerror(err)),
             log_q(err == EPERM ? "needs CAP_SYS_NICE or LimitRTPRIO= at least the priority, "
                                  "and no RestrictRealtime= or @resources filter in the unit"
                                : "see sched_setscheduler(2)"));
}

/* The one way a new configuration comes into force: the daemon's apply, then the swap. */
static void install(struct offhook_config *next)
{
    struct offhook_config *cur = *hooks.cfg;

    hooks.apply(hooks.arg, next);
    apply_scheduling(next);
    config_free(cur);
    free(cur);
    *hooks.cfg = next;
    reloads_applied++;
}

void daemon_users_changed(void)
{
    struct offhook_config *next = xcalloc(1, sizeof *next);

    config_copy_keys(next, *hooks.cfg);
    directory_fill(hooks.dir, next);
    log_info("main", "event=directory_users_apply users=%zu", next->nusers);
    install(next);
}

int daemon_reload_report(struct sbuf *said)
{
    struct offhook_config *cur = *hooks.cfg, *next = xcalloc(1, sizeof *next);
    struct cfg_errors errs = {0};
    struct cfg_pending pending;

    if (config_reload(cur->path, cur, next, &pending, &errs) != 0) {
        for (size_t i = 0; i < errs.n; i++) {
            log_err("main", "event=reload_rejected problem=%s", log_q(errs.msg[i]));
            if (said)
                sbuf_printf(said, "%s\n", errs.msg[i]);
        }
        log_err("main", "event=reload_rejected problems=%zu action=keeping_old_config", errs.n);
        if (said)
            sbuf_printf(said, "%zu problem%s: the running configuration stays\n", errs.n,
                        errs.n == 1 ? "" : "s");
        cfg_errors_free(&errs);
        config_free(next);
        free(next);
        metric_set(m_reload_ok, NULL, 0);
        return -1;
    }
    cfg_errors_free(&errs);
    /* Said at every reload while it holds: a restart is still owed, whatever was reloaded
     * in between, and putting the old value back clears it. */
    if (pending.n)
        log_warn("main", "event=reload_partial restart_needed_for=\"%s\"", pending.keys);
    if (log_set_level_name(next->log_level) < 0)
        log_warn("main", "event=bad_log_level");
    directory_fill(hooks.dir, next);
    install(next);
    metric_set(m_reload_ok, NULL, 1);
    metric_set(m_reload_time, NULL, (double)(clock_wall_us() / 1000000));
    metric_set(m_restart_pending, NULL, pending.n);
    if (said) {
        sbuf_printf(said, "reloaded %s: %zu users\n", next->path, next->nusers);
        if (pending.n)
            sbuf_printf(said, "restart needed for: %s\n", pending.keys);
    }
    return 0;
}

int daemon_reload(void)
{
    return daemon_reload_report(NULL);
}

const struct offhook_config *daemon_config(void)
{
    return hooks.cfg ? *hooks.cfg : NULL;
}

unsigned daemon_config_generation(void)
{
    return reloads_applied;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    if (sig == SIGHUP) {
        log_notice("daemon", "event=signal signal=SIGHUP action=reload");
        (void)daemon_reload();
    } else {
        log_notice("daemon", "event=signal signal=%s action=stop",
                   sig == SIGTERM ? "SIGTERM" : "SIGINT");
        if (hooks.stop)
            hooks.stop(hooks.arg);
    }
}

static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
    /* Pinged from the loop itself: a wedged loop stops the pings and systemd restarts us. */
    daemon_notify("WATCHDOG=1");
}

void daemon_setup(struct event_base *base, const struct daemon_hooks *h)
{
    const char *wd = getenv("WATCHDOG_USEC");
    long usec;

    hooks = *h;
    register_metrics();
    apply_scheduling(*hooks.cfg);
    signal(SIGPIPE, SIG_IGN);
    ev_hup = evsignal_new(base, SIGHUP, on_signal, NULL);
    ev_term = evsignal_new(base, SIGTERM, on_signal, NULL);
    ev_int = evsignal_new(base, SIGINT, on_signal, NULL);
    evsignal_add(ev_hup, NULL);
    evsignal_add(ev_term, NULL);
    evsignal_add(ev_int, NULL);
    if (wd && str_parse_long(wd, 1, 3600L * 1000000, &usec) == 0) {
        struct timeval tv = {.tv_sec = usec / 2 / 1000000, .tv_usec = usec / 2 % 1000000};
        ev_watchdog = event_new(base, -1, EV_PERSIST, on_watchdog, NULL);
        event_add(ev_watchdog, &tv);
    }
}

void daemon_teardown(void)
{
    struct event **evs[] = {&ev_hup, &ev_term, &ev_int, &ev_watchdog};

    for (size_t i = 0; i < sizeof evs / sizeof evs[0]; i++) {
        if (*evs[i]) {
            event_free(*evs[i]);
            *evs[i] = NULL;
        }
    }
}
