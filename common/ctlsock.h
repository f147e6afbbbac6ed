/* A daemon's control socket: a Unix stream socket (mode 0660, owned by the daemon's user)
 * served from the daemon's libevent loop, speaking ctlproto.h's line protocol, in the
 * manner of pgbouncer's admin console or Kamailio's ctl module. The daemon registers its
 * commands (main.c wires them: this module calls nothing but the callbacks it is given);
 * offhookctl is the usual client, socat works too.
 *
 * The loop is never held up by a client: a request line is at most CTL_LINE_MAX bytes,
 * each turn of a command writes about CTL_TURN_BYTES at most (a long answer is produced
 * turn by turn, as the client reads it), at most CTL_MAX_CLIENTS are served at once (one
 * more is told "busy" and closed), and a client that sends no request (or no whole
 * request line) for CTL_IDLE_TIMEOUT_S or reads nothing for CTL_WRITE_TIMEOUT_S is
 * dropped. */
#ifndef OFFHOOK_CTLSOCK_H
#define OFFHOOK_CTLSOCK_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise. */

#include <stdbool.h>
#include <stddef.h>

#include "sbuf.h"

#define CTL_MAX_CLIENTS 8
#define CTL_MAX_COMMANDS 24
#define CTL_IDLE_TIMEOUT_S 60
#define CTL_WRITE_TIMEOUT_S 30
#define CTL_TURN_BYTES 65536   /* a turn stops producing once this much waits unsent */
#define CTL_SOCKET_MODE 0660   /* the daemon's user and group (operators join the group) */

struct event_base;
struct ctlsock;
struct ctl_call;

enum ctl_result {
    CTL_DONE, /* the answer is complete */
    CTL_MORE, /* call run again once the client has read what is waiting */
};

struct ctl_command {
    const char *name;    /* static strings */
    const char *usage;   /* the arguments, e.g. "[--state STATE] [--aor AOR]" */
    const char *help;    /* one line */
    /* Answers call: writes the body with ctl_printf() and friends, or fails it with
     * ctl_fail() (first turn only). A long answer returns CTL_MORE whenever ctl_full(),
     * keeping where it stopped in ctl_state(): it is called again in a later loop turn.
     * Never called again after CTL_DONE, nor once the client is gone (the state's free
     * function is called instead). */
    enum ctl_result (*run)(void *arg, struct ctl_call *call);
    void *arg;
    bool changes;        /* it changes the daemon (loglevel, reload, trace): logged at
                          * notice with the peer's uid; the others at debug */
};

/* Binds path (an existing socket nobody answers on is replaced; anything else there, or
 * a socket another process serves, is an error), mode CTL_SOCKET_MODE, and serves it
 * from base. NULL with a reason in err on failure. */
struct ctlsock *ctlsock_new(struct event_base *base, const char *path, char *err,
                            size_t errlen);
/* Drops every client (their commands' state freed) and removes the socket file. NULL ok. */
void ctlsock_free(struct ctlsock *s);
/* Adds a command (the struct is copied; its strings and arg must outlive s). A "help"
 * command listing them all is built in. */
void ctlsock_add(struct ctlsock *s, const struct ctl_command *cmd);
void ctlsock_register_metrics(void);

/* ---- inside a command's run ----------------------------------------------------------- */

/* The request's words after the command name: ctl_arg(c, 0) is the first; NULL past the
 * end. Valid during the call (every turn). */
int ctl_argc(const struct ctl_call *c);
const char *ctl_arg(const struct ctl_call *c, int i);
bool ctl_json(const struct ctl_call *c);   /* --json was asked for */
bool ctl_first(const struct ctl_call *c);  /* the first turn of this call */
/* Appends to the body (dot-stuffing is done here). */
void ctl_printf(struct ctl_call *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ctl_puts(struct ctl_call *c, const char *s);
/* Appends s as a JSON string (ctlproto_json_str). */
void ctl_json_str(struct ctl_call *c, const char *s);
/* The answer is "ERR code text" (code: a CTL_ERR_*); a body written in this turn stays,
 * as detail (a refused reload's problems). Only in the first turn, which then ends the
 * call whatever run returns. */
void ctl_fail(struct ctl_call *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Enough waits for this turn: return CTL_MORE now. */
bool ctl_full(const struct ctl_call *c);
/* The command's own state between turns: set in the first turn; free_fn (may be NULL)
 * is called with it when the call ends, whether the command finished or the client left. */
void *ctl_state(const struct ctl_call *c);
void ctl_set_state(struct ctl_call *c, void *state, void (*free_fn)(void *state));

/* Parses the arguments: options named in opts (each "--name"; with has_value, the next
 * word is its value), then at most max_pos other words into pos. Repeated options: the
 * last wins. On anything else the call is failed with a usage error naming the command's
 * usage, and -1 is returned. */
struct ctl_opt {
    const char *name;     /* "--state" */
    bool has_value;
    const char *value;    /* out: the value, or NULL */
    bool given;           /* out */
};
int ctl_parse_args(struct ctl_call *c, struct ctl_opt *opts, int nopts, const char **pos,
                   int max_pos, int *npos) __attribute__((warn_unused_result));

#endif
