/* The feed: the users' records from Redis, an atomic snapshot then the event stream, kept
 * in each user (struct cuser rec/have_rec/rec_id); news goes up through feed_ops. Users a
 * reload adds are read on a second connection. Calls nothing in the component but the
 * directory (users.h). Created and told of reloads by main.c. */
#ifndef OFFHOOK_FEED_H
#define OFFHOOK_FEED_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stdint.h>

#include "users.h"

struct event_base;
struct feed;

/* News for the owner (main.c), wired at feed_new. u is valid only during the call. */
struct feed_ops {
    /* An entry of sipbridge's event stream was applied, which proves sipbridge alive. u:
     * the user whose record it changed (u->rec, u->have_rec), or NULL when it changed
     * none here (a user not configured here, a record that does not decode). event_us:
     * when sipbridge received the change (0: not known). */
    void (*on_event)(void *arg, struct cuser *u, int64_t event_us);
    /* The snapshot is in: every user's record is as Redis holds it (after every
     * (re)connect and reload). */
    void (*on_synced)(void *arg);
    /* offhookctl resync: send u's state again, forced (NULL: everyone's). */
    void (*on_resync)(void *arg, struct cuser *u);
    /* A user a reload added has its record read (u->rec, u->have_rec: none yet, if
     * sipbridge has written none). */
    void (*on_loaded)(void *arg, struct cuser *u);
};

/* d and base are borrowed and must outlive the feed (d->cfg is read at every snapshot);
 * ops is copied. Connects to Redis from base's loop. */
struct feed *feed_new(struct event_base *base, struct users *d, const struct feed_ops *ops,
                      void *arg);
void feed_free(struct feed *f);
void feed_register_metrics(void);
/* Whether every user's record has been loaded since the link last came up. */
bool feed_synced(const struct feed *f);
/* After a reload added users: reads their records (on_loaded for each), on a connection
 * of its own, while the stream keeps being followed on the other; everyone else's stays
 * as it is. */
void feed_users_added(struct feed *f);

#endif
