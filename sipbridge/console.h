/* sipbridge's answers on its control socket (ctlsock.c): "subscriptions" (each one's
 * state, last SIP answer, last NOTIFY, next try), "user JID" (the state and what decided
 * it, each source), "trace JID|AOR" (a user's SIP messages and decisions in the log), and
 * through ctlcommon.c status, loglevel, config, reload. Reads bridge.c, subscription.c
 * and store.c through their read-only looks; changes nothing but trace flags. Called by
 * sipbridge's main, which hands it what it reads. */
#ifndef OFFHOOK_SIPBRIDGE_CONSOLE_H
#define OFFHOOK_SIPBRIDGE_CONSOLE_H

/* Ownership: everything in struct sipconsole_deps is borrowed and must outlive the
 * socket. */

#include <stdbool.h>

struct bridge;
struct ctlsock;
struct event_base;
struct sbuf;
struct store;

struct sipconsole_deps {
    struct event_base *base;
    struct bridge *bridge;
    struct store *store;
    /* /readyz's verdict and reasons (main's). */
    bool (*ready)(void *arg, struct sbuf *why);
    /* The log level was changed: route Sofia's log to match (main's). */
    void (*on_log_level)(void *arg);
    void *arg;
};

/* Adds sipbridge's commands (and ctlcommon's) to s; deps is copied. */
void sipconsole_add(struct ctlsock *s, const struct sipconsole_deps *deps);

#endif
