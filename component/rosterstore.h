/* The roster store: the roster writer's records in Redis, a hash per user (phone contact
 * -> what the writer wrote there: see roster.c) and the set of users that have one, read
 * and written for the writer, each answer handed up through rosterstore_ops. Calls
 * nothing in the component. Created and wired by main.c. */
#ifndef OFFHOOK_ROSTERSTORE_H
#define OFFHOOK_ROSTERSTORE_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stddef.h>

#include "users.h"

struct event_base;
struct rosterstore;

/* News for the owner (main.c), wired at rosterstore_new. Arrays and strings are valid
 * only during the call. Every request that was queued is answered, with ok false when the
 * connection went away first. */
struct rosterstore_ops {
    /* The connection came up or went down. */
    void (*on_state)(void *arg, bool up);
    /* contacts[i] holds values[i] (NULL: nothing recorded) in the user's record. */
    void (*on_loaded)(void *arg, unsigned long cookie, bool ok, const char *const *contacts,
                      const char *const *values, size_t n);
    void (*on_saved)(void *arg, unsigned long cookie, bool ok);
    void (*on_known)(void *arg, bool ok, const char *const *users, size_t n);
};

/* d and base are borrowed and must outlive the store (d->cfg is read at each request);
 * ops is copied. Connects to Redis from base's loop. */
struct rosterstore *rosterstore_new(struct event_base *base, struct users *d,
                                    const struct rosterstore_ops *ops, void *arg);
void rosterstore_free(struct rosterstore *s);
bool rosterstore_up(const struct rosterstore *s);
/* The values of the n contacts in user's record, or all of them (contacts NULL). Returns
 * 0, or -1 when the link is down (no answer will come). */
int rosterstore_load(struct rosterstore *s, unsigned long cookie, const char *user,
                     const char *const *contacts, size_t n) __attribute__((warn_unused_result));
/* Records value (NULL: forgets) for contact in user's record; answered (on_saved) when
 * cookie is not 0. Returns 0, or -1 when the link is down. */
int rosterstore_save(struct rosterstore *s, unsigned long cookie, const char *user,
                     const char *contact, const char *value) __attribute__((warn_unused_result));
/* Every user with a record. Returns 0 or -1 as rosterstore_load. */
int rosterstore_list(struct rosterstore *s) __attribute__((warn_unused_result));

#endif
