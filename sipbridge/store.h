/* sipbridge's writer of user state to Redis: each change replaces the user's hash and
 * appends a change event to the stream, atomically (one script). While Redis is down, the
 * latest record of each changed user is held (bounded by the number of users) and written
 * when the link returns, so the final state is never lost. Called by bridge.c. */
#ifndef OFFHOOK_STORE_H
#define OFFHOOK_STORE_H

#include <stdbool.h>

#include "storecodec.h"

struct event_base;
struct offhook_config;
struct store;

struct store *store_new(struct event_base *base, const struct offhook_config *cfg);
void store_free(struct store *st);
bool store_up(const struct store *st);
/* Records r as jid's current state and writes it (now, or once Redis is back). */
void store_put(struct store *st, const char *jid, const struct user_record *r);
/* Deletes jid's state (user removed from the configuration), with a "removed" event. */
void store_remove(struct store *st, const char *jid);
/* Records one subscription's state for offhookctl (best effort: lost while Redis is down,
 * rewritten through the resync hook when it is back). */
void store_sub_state(struct store *st, const char *jid, const char *package, const char *aor,
                     const char *state);
/* Forgets a removed user's subscription states. */
void store_sub_clear(struct store *st, const char *jid);
/* Called each time the link comes up, after pending states are flushed. */
void store_on_up(struct store *st, void (*fn)(void *arg), void *arg);
/* Users whose latest state is not yet in Redis. */
int store_pending(const struct store *st);
void store_register_metrics(void);

#endif
