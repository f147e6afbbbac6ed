/* Process plumbing shared by both daemons: command line, first config load, signals
 * handled inside the libevent loop, and systemd's notify protocol (READY, STATUS,
 * WATCHDOG) spoken directly over $NOTIFY_SOCKET. Called by each daemon's main. */
#ifndef OFFHOOK_DAEMON_H
#define OFFHOOK_DAEMON_H

#include <stdbool.h>

struct event_base;
struct offhook_config;

struct daemon_args {
    const char *config_path;
    bool check_config;
};

/* Parses argv; prints --help/--version itself and exits 0, or exits 2 on a usage error. */
void daemon_parse_args(int argc, char **argv, const char *prog, const char *summary,
                       struct daemon_args *out);
/* Loads the config for the first time, printing every problem as file:line: message.
 * Returns 0/-1. */
int daemon_load_config(const char *path, struct offhook_config *cfg);

struct daemon_hooks {
    void (*reload)(void *arg); /* SIGHUP */
    void (*stop)(void *arg);   /* SIGTERM, SIGINT */
    void *arg;
};
/* Installs signal events on base and starts the watchdog pinger if systemd asked for it. */
void daemon_setup(struct event_base *base, const struct daemon_hooks *hooks);
void daemon_teardown(void);

/* sd_notify(3) without libsystemd. No-ops when not run by systemd. */
void daemon_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
