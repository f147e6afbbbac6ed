/* offhookctl's commands that the running daemons answer on their control sockets
 * (subscriptions, user, trace, loglevel, config, reload) and the daemons' liveness for
 * "status"; when a daemon cannot be asked, it says so and shows what Redis holds, marked
 * as not live. Called by offhookctl.c; talks through ctlclient.c and redisread.c.
 *
 * The daemons it asks are listed by console_members(): one sipbridge and one component,
 * from the configuration. Several members of each (issue 12) are one more entry each
 * there, with their own socket; "offhookctl cluster" belongs with them. */
#ifndef OFFHOOK_CONSOLE_H
#define OFFHOOK_CONSOLE_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "ctlclient.h"

/* Exit statuses (offhookctl(8)). */
enum {
    EXIT_OK = 0,
    EXIT_BAD_ARG = 1,   /* not a configured user, AOR; a daemon said notfound */
    EXIT_USAGE = 2,     /* usage or configuration */
    EXIT_REDIS = 3,     /* Redis unreachable or failing */
    EXIT_CHECK = 4,     /* offhookctl check: a check failed */
    EXIT_DAEMON = 5,    /* a daemon could not be asked (not running, no permission, no
                         * answer); what Redis holds was shown where it helps, not live */
    EXIT_REFUSED = 6,   /* a daemon refused or failed the request (a refused reload) */
};

enum { CONSOLE_SIPBRIDGE = 1, CONSOLE_COMPONENT = 2, CONSOLE_BOTH = 3 };

struct console_opts {
    bool json;
    int timeout_ms;        /* the longest a daemon may stay silent */
    unsigned daemons;      /* which to ask (-d) */
    /* Command options, forwarded: NULL / false when not given. */
    const char *state, *aor, *user, *duration;
    bool bodies, off;
};

/* One daemon offhookctl can ask. */
struct console_member {
    const char *role;      /* "sipbridge", "component" */
    unsigned flag;         /* CONSOLE_SIPBRIDGE, ... */
    const char *socket;    /* its control socket; "" when the configuration has none */
};
/* The members of this deployment, from cfg: fills out (at most max), returns how many. */
int console_members(const struct offhook_config *cfg, struct console_member *out, int max);

bool console_is_command(const char *cmd);
/* Runs cmd (one console_is_command() accepts) with its positional arguments; returns
 * the exit status. */
int console_run(const struct offhook_config *cfg, const char *cmd, int argc, char **argv,
                const struct console_opts *o);

/* A daemon's liveness as its socket tells it, for "status". */
struct console_liveness {
    bool configured;       /* it has a control socket */
    enum ctlclient_outcome outcome;
    char error[1100];      /* when not OK */
    bool ready;
    long pid;
    long long uptime_s;
    char not_ready[512];   /* why not ready, one line */
};
void console_liveness(const struct offhook_config *cfg, const char *role, int timeout_ms,
                      struct console_liveness *out);

#endif
