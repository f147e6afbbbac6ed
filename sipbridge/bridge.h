/* sipbridge's users and their sources: for each configured user, one source per AOR and
 * event package, served by its own subscription (subscription.c) or, for dialog state in
 * resource-list mode, by the list (rlsub.c). Each NOTIFY body is parsed (dialoginfo.c,
 * pidf.c, reginfo.c) into what its source said, the user's sources are combined
 * (combine.c) into one visible state, and every change is written to Redis (store.c),
 * coalesced if configured. Applies configuration reloads user by user. Called by
 * sipbridge's main; news comes up to it only through the callbacks it gives
 * subscription.c, rlsub.c and store.c. */
#ifndef OFFHOOK_BRIDGE_H
#define OFFHOOK_BRIDGE_H

#include <stdbool.h>

struct bridge;
struct event_base;
struct offhook_config;
struct sipua;
struct store;
struct subs_mgr;

/* Subscribes every configured user (at the configured ramp). cfg must stay valid until
 * the next bridge_apply_config or bridge_free. */
struct bridge *bridge_new(struct event_base *base, const struct offhook_config *cfg,
                          struct sipua *ua, struct store *store);
/* The subscription manager (for readiness and status). */
struct subs_mgr *bridge_subs(const struct bridge *b);
/* Reload: adds and removes users, re-subscribes users whose phones or packages changed,
 * leaves every other subscription untouched. */
void bridge_apply_config(struct bridge *b, const struct offhook_config *cfg);
/* Frees every user; live subscriptions get Expires: 0 (none are left after
 * sipua_shutdown, which ends them all). */
void bridge_free(struct bridge *b);
int bridge_user_count(const struct bridge *b);
void bridge_register_metrics(void);

#endif
