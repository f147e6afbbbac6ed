/* The LDAP side of the directory: one session with the server at a time, which reads the
 * entries [directory] selects, keeps them in step with the server (RFC 4533
 * refreshAndPersist where it offers it, else polling by modifyTimestamp) and hands each
 * complete, changed set of entries to the event loop. Created and freed by directory.c.
 *
 * The session runs in a thread of its own, the one thread offhook starts: libldap's
 * connect, name lookup and TLS handshake block (even with LDAP_OPT_CONNECT_ASYNC, 2.5's
 * ldap_int_tls_start polls the socket inside the call for up to the network timeout), so
 * run from the loop they would stall SIP and XMPP for seconds each time an unreachable
 * server is retried. The thread touches nothing of the daemon's: it works on its own copy
 * of the settings and its own entries, and passes finished results to the loop through a
 * mailbox and a pipe the loop watches; metrics, logging of results and every change of
 * state happen in the loop. */
#ifndef OFFHOOK_DIR_LDAP_H
#define OFFHOOK_DIR_LDAP_H

#include <stdbool.h>
#include <stddef.h>

#include "dirbuild.h"

struct event_base;
struct offhook_config;
struct dir_ldap;

/* What the session has to say, taken by the loop in one piece. */
struct dir_ldap_news {
    bool have_set;               /* entries holds a complete, new set */
    struct dir_entry *entries;   /* n of them; the callee may take the array (set it
                                    to NULL), else it is freed after the callback */
    size_t n;
    size_t over_limit;           /* entries left out for [directory] max_users */
    bool full;                   /* the set comes from a full read (start, reconnect,
                                    poll's full pass), not from changes */
    long sync_ms;                /* full: how long the full read took */
    bool up;                     /* the session works (after this news) */
    const char *mode;            /* "syncrepl" or "poll" (static) */
    char error[256];             /* !up: why, for the log and /readyz */
};

/* Called in the loop; news is valid only during the call. */
typedef void (*dir_ldap_news_fn)(void *arg, struct dir_ldap_news *news);

/* Prepares the session with a copy of cfg's [directory] settings (cfg is only read
 * during the call); its thread starts when base's loop runs, after the daemon's own
 * start-up. Returns NULL (and logs why) if the pipes cannot be made; a thread that cannot
 * start is news like a failed session. */
struct dir_ldap *dir_ldap_new(struct event_base *base, const struct offhook_config *cfg,
                              dir_ldap_news_fn fn, void *arg);
/* Stops the session (an unbind if connected) and frees everything. Waits at most a few
 * seconds for a connect or search in progress to give up. Not from inside fn. */
void dir_ldap_free(struct dir_ldap *l);

#endif
