/* The control-socket commands both daemons answer alike: status (its common part),
 * loglevel, config (the running values and where the file differs), reload (through
 * daemon.c's one reload path, with what it said) and trace (the list of traces, their
 * limits and ends; the daemon sets the flags). Registered by each daemon's console on
 * its ctlsock; the daemon's own part comes through struct ctlcommon_hooks. */
#ifndef OFFHOOK_CTLCOMMON_H
#define OFFHOOK_CTLCOMMON_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ctlsock;
struct ctl_call;
struct event_base;
struct log_trace;

#define CTL_TRACES_MAX 32          /* traces running at once */
#define CTL_TRACE_DEFAULT_S 600    /* trace --for, when not given */
#define CTL_TRACE_MAX_S 86400

struct ctlcommon_hooks {
    const char *daemon;  /* "sipbridge" or "component" (static) */
    struct event_base *base;
    /* "loglevel" changed log_level: route the libraries' logs to match (optional). */
    void (*on_log_level)(void *arg);
    /* "status": appends the daemon's own fields, in JSON as ,"name":value pairs of the
     * object being written, else as "name: value" lines (optional). */
    void (*status)(void *arg, struct ctl_call *c);
    /* "trace WHO": sets t (copied; until_ms 0 ends a trace) on what who names; returns
     * how many objects that was, 0 when who names nothing. */
    int (*trace)(void *arg, const char *who, const struct log_trace *t);
    const char *trace_who;  /* what WHO may be, for the usage: "JID|AOR" (static) */
    void *arg;
};

/* Adds status, loglevel, config, reload and trace to s. hooks is copied. */
void ctlcommon_add(struct ctlsock *s, const struct ctlcommon_hooks *hooks);
/* Stops the traces' timer (before the loop's base is freed). */
void ctlcommon_free(void);

/* Helpers for the daemons' own answers. "3 min ago", "in 40 s", "never" for 0: the
 * distance from now of a wall-clock time in milliseconds, into out. */
void ctlcommon_ago(int64_t wall_ms, char *out, size_t len);

#endif
