/* Process plumbing shared by both daemons: command line, first config load, signals
 * handled inside the libevent loop, and systemd's notify protocol (READY, STATUS,
 * WATCHDOG) spoken directly over $NOTIFY_SOCKET. Called by each daemon's main. */
#ifndef OFFHOOK_DAEMON_H
#define OFFHOOK_DAEMON_H

#include <stdbool.h>

struct event_base;
struct offhook_config;
struct directory;
struct sbuf;

struct daemon_args {
    const char *config_path;
    bool check_config;
};

/* Marks the process non-dumpable first (PR_SET_DUMPABLE=0: no core dump holds a secret,
 * its /proc files belong to root), then parses argv; prints --help/--version itself and
 * exits 0, or exits 2 on a usage error.
 * With --check-config, run by root: switches for good to the daemon's user
 * (OFFHOOK_DAEMON_USER, or --check-as USER) so that the check reads the files as the
 * daemon will, or exits 1 saying why it cannot. */
void daemon_parse_args(int argc, char **argv, const char *prog, const char *summary,
                       struct daemon_args *out);
/* Loads the config for the first time, printing every problem as file:line: message.
 * Returns 0/-1. */
int daemon_load_config(const char *path, struct offhook_config *cfg);

struct daemon_hooks {
    /* The configuration in force: replaced by each applied reload (the old one is freed
     * after apply returns). Owned by the daemon's main; read by everyone. */
    struct offhook_config **cfg;
    /* A reload passed every check: hand next to the modules (they keep pointers into it
     * from then on). Its restart-only keys already hold the running values. */
    void (*apply)(void *arg, struct offhook_config *next);
    void (*stop)(void *arg);   /* SIGTERM, SIGINT */
    void *arg;
    /* Where the users come from when the file does not list them ([directory] source =
     * ldap): each configuration handed to apply gets its users from there. NULL, or a
     * source = config directory: the file's own. Owned by the daemon's main. */
    struct directory *dir;
    /* The daemon's [<daemon>] realtime_priority in cfg (0 = the normal scheduler). NULL:
     * the scheduling is left as the process was started with. */
    long (*realtime_priority)(const struct offhook_config *cfg);
};
/* Installs signal events on base (SIGHUP: daemon_reload), registers the offhook_config_*
 * and offhook_realtime_* metrics, puts the loop's thread under the configured scheduling
 * (again after each applied reload; a refusal is logged and counted, and the daemon runs
 * on as it was) and starts the watchdog pinger if systemd asked for it. */
void daemon_setup(struct event_base *base, const struct daemon_hooks *hooks);
/* The one reload path of both daemons: reloads the file of *hooks.cfg. Any problem: each
 * is logged (reload_rejected) and the running configuration stays. Else restart-only keys
 * keep their running values and are named (reload_partial) for as long as the file and
 * the running value differ, the log level follows the file, hooks.apply hands the new
 * configuration to the daemon, and it replaces *hooks.cfg. Counted in
 * offhook_config_last_reload_successful and offhook_config_restart_pending. Returns 0 when
 * the new configuration is in force, -1 when it was refused. */
int daemon_reload(void);
/* The directory's users changed (directory.h's changed callback): the configuration in
 * force, with the users the directory now holds, goes through hooks.apply and replaces
 * *hooks.cfg, exactly as a reload of an unchanged file would (the file is not read
 * again: a half-edited file must not ride in on a directory change). */
void daemon_users_changed(void);
/* The same reload, and what it said, in lines, appended to said (not NULL): each problem
 * as file:line: message and the verdict, or what was loaded and the restart-only keys
 * still owed a restart. For the control socket's "reload". */
int daemon_reload_report(struct sbuf *said);
/* The configuration in force (after daemon_setup; NULL before). Valid until the next
 * reload: read it within one loop turn. */
const struct offhook_config *daemon_config(void);
/* Counts applied reloads: a walk over daemon_config() spread over several loop turns
 * knows the configuration it walks is gone when this changed. */
unsigned daemon_config_generation(void);
void daemon_teardown(void);

/* sd_notify(3) without libsystemd. No-ops when not run by systemd. */
void daemon_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
