/* The component's answers on its control socket (ctlsock.c): "user JID" (the record it
 * holds and what watchers are shown, what each watcher was last sent and when, the
 * watchers the policy refused, PEP), "trace JID" (that user's stanzas and decisions in
 * the log), and through ctlcommon.c status, loglevel, config, reload. Reads the
 * directory, the publisher and the writers through their read-only looks; changes nothing
 * but trace flags. Called by the component's main, which hands it what it reads. */
#ifndef OFFHOOK_COMPONENT_CONSOLE_H
#define OFFHOOK_COMPONENT_CONSOLE_H

/* Ownership: everything in struct xmppconsole_deps is borrowed and must outlive the
 * socket. */

#include <stdbool.h>

struct ctlsock;
struct event_base;
struct feed;
struct pep;
struct presence_out;
struct publisher;
struct sbuf;
struct users;
struct watchers;
struct xmpplink;

struct xmppconsole_deps {
    struct event_base *base;
    struct users *users;
    struct publisher *pub;
    struct presence_out *presout;
    struct pep *pep;
    struct xmpplink *xmpp;
    struct feed *feed;
    struct watchers *wstore;
    /* /readyz's verdict and reasons (main's). */
    bool (*ready)(void *arg, struct sbuf *why);
    void *arg;
};

/* Adds the component's commands (and ctlcommon's) to s; deps is copied. */
void xmppconsole_add(struct ctlsock *s, const struct xmppconsole_deps *deps);

#endif
