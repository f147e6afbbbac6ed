/* The ejabberd roster link: writes roster items through ejabberd's HTTP API
 * (mod_http_api: the add_rosteritem and delete_rosteritem commands) for the roster writer,
 * where XEP-0356 cannot ([component] roster_api: ejabberd 23.01 advertises the roster
 * permission but fails every privileged roster write; later releases ignore the
 * subscription asked for). HTTP/1.1 over libevent's client, a few keep-alive connections,
 * HTTP Basic with [component] roster_api_user. Each answer goes up through
 * rosterapi_ops. Calls nothing in the component. Created and wired by main.c. */
#ifndef OFFHOOK_ROSTERAPI_H
#define OFFHOOK_ROSTERAPI_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>

#include "config.h"
#include "rosterplan.h"

struct event_base;
struct rosterapi;

/* News for the owner (main.c). why is valid only during the call: NULL when ok, else a
 * short reason ("api: HTTP 401 ...", "api: no answer"). */
struct rosterapi_ops {
    void (*on_done)(void *arg, unsigned long cookie, bool ok, const char *why);
};

/* cfg's roster_api keys are copied; base is borrowed; ops is copied. NULL (said in the
 * log) when roster_api cannot be used. */
struct rosterapi *rosterapi_new(struct event_base *base, const struct offhook_config *cfg,
                                const struct rosterapi_ops *ops, void *arg);
/* Requests still out are dropped unanswered. */
void rosterapi_free(struct rosterapi *a);
/* Writes it (NULL: removes contact) into user's roster, subscription "to". Answered
 * through on_done, never during the call. Returns 0, or -1 when it could not be sent. */
int rosterapi_write(struct rosterapi *a, unsigned long cookie, const char *user,
                    const char *contact, const struct rosterplan_item *it)
    __attribute__((warn_unused_result));

#endif
