/* The roster writer: puts the phone contacts [component] roster asks for (rosterplan.h)
 * into the users' rosters, named and grouped, with subscription "to" (so the user's
 * server probes the contact at each login), and keeps them in step with the users: adds,
 * renames, regroups and removes, paced ([component] roster_rate) and at most a window of
 * changes in flight. Writes through XEP-0356's roster permission (an <iq type='set'> to
 * the user, sent and answered through privileged.c) where the user's server grants it,
 * or through ejabberd's HTTP API with [component] roster_api (roster_io.api_write). Touches only the items it
 * created: every item it writes is recorded first (an intent, then the item) in the
 * roster store (Redis, through roster_io); an item a user had already (they watch that
 * contact) is marked theirs and left alone, and an item the user removes (unsubscribe)
 * is not put back. Called by main.c (users, grants, link, store and API news). */
#ifndef OFFHOOK_ROSTER_H
#define OFFHOOK_ROSTER_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stddef.h>

#include <strophe.h>

#include "config.h"
#include "privileged.h"
#include "rosterplan.h"
#include "stanza.h"
#include "users.h"

struct event_base;
struct roster;

/* What the writer asks of the outside, in the shape of stanza_out: main.c points these at
 * the roster store (rosterstore.c) and the ejabberd API link (rosterapi.c). Each answer
 * comes back through the roster_* function named, later, never during the call. */
struct roster_io {
    /* Reads user's records: the values of the n contacts given, or every one (contacts
     * NULL). Answer: roster_loaded(cookie). Returns 0, or -1 when the store is down (no
     * answer will come). */
    int (*load)(void *arg, unsigned long cookie, const char *user, const char *const *contacts,
                size_t n);
    /* Records value for contact in user's record (NULL: forgets it). With a cookie (not
     * 0), answer: roster_saved(cookie). Returns 0, or -1 when the store is down. */
    int (*save)(void *arg, unsigned long cookie, const char *user, const char *contact,
                const char *value);
    /* Every user with a record. Answer: roster_known(). Returns 0 or -1 as load. */
    int (*list)(void *arg);
    /* With [component] roster_api (else NULL): writes it (NULL: removes contact) into
     * user's roster through the server's API. Answer: roster_api_done(cookie). Returns 0,
     * or -1 when the request could not be queued. */
    int (*api_write)(void *arg, unsigned long cookie, const char *user, const char *contact,
                     const struct rosterplan_item *it);
    void *arg;
};

/* News for the owner (main.c), wired at roster_new. v and user are valid only during the
 * call. */
struct roster_ops {
    /* The writer put v's phone contact into user's roster (subscription "to"): user
     * watches it from now on, and should be sent its presence. */
    void (*on_added)(void *arg, struct cuser *v, const char *user);
    /* The writer took contact out of user's roster; v is its user, or NULL when the
     * contact is no longer anyone's. */
    void (*on_removed)(void *arg, struct cuser *v, const char *contact, const char *user);
};

/* base, d, out, priv and io are borrowed and must outlive the writer; ops is copied. */
struct roster *roster_new(struct event_base *base, struct users *d,
                          const struct stanza_out *out, struct privileged *priv,
                          const struct roster_io *io, const struct roster_ops *ops, void *arg);
void roster_free(struct roster *r);
void roster_register_metrics(void);

/* ---- told by main.c -------------------------------------------------------------------- */

/* The watcher sets are loaded (ownership is told from them) and the users are d's: the
 * writer may begin. Its first pass covers every user, and everyone with a record. */
void roster_ready(struct roster *r);
/* Before users_apply() installs next (d's configuration is still the one in force): the
 * rosters the change of users or keys changes are queued. next must outlive its use, i.e.
 * stay in force until the next roster_apply. */
void roster_apply(struct roster *r, const struct offhook_config *next);
/* A new component stream: what each server can do is learnt again. */
void roster_connected(struct roster *r);
/* The stream went down: what was in flight is written again later. */
void roster_link_down(struct roster *r);
/* domain's server advertised its XEP-0356 grants (privileged.h): with the roster set
 * permission its rosters are written; without it, why not is said once. */
void roster_granted(struct roster *r, const char *domain);
/* domain's server sent no <privilege/> at all. */
void roster_missing(struct roster *r, const char *domain);
/* A clean stop: writes out are let finish, no new one starts. */
void roster_stopping(struct roster *r);
/* user unsubscribed from v's phone contact (took it out of their roster): if the writer
 * had put it there, it is not put back. */
void roster_unsubscribed(struct roster *r, struct cuser *v, const char *user);
/* offhookctl resync: every roster checked again against its record. */
void roster_resync(struct roster *r);

/* ---- the store's and the API's answers (main.c) ---------------------------------------- */

/* The store came up or went down. */
void roster_store_state(struct roster *r, bool up);
/* The answer to io.load: contacts[i] holds values[i] (n pairs); n = 0 and ok = false when
 * the read failed. */
void roster_loaded(struct roster *r, unsigned long cookie, bool ok, const char *const *contacts,
                   const char *const *values, size_t n);
void roster_saved(struct roster *r, unsigned long cookie, bool ok);
void roster_known(struct roster *r, bool ok, const char *const *users, size_t n);
/* The answer to io.api_write: ok, or why not (a short reason for logs and metrics). */
void roster_api_done(struct roster *r, unsigned long cookie, bool ok, const char *why);

/* Users whose roster would exceed [component] roster_max_items (offhook_roster_*). */
size_t roster_users_over_limit(const struct roster *r);
/* The first wait of a user whose write failed (10 s, doubling up to an hour): for tests. */
void roster_set_retry(struct roster *r, long first_ms);
/* Changes queued or in flight (0: every roster is as its record says). */
size_t roster_pending(const struct roster *r);

#endif
