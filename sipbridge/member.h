/* sipbridge's membership: its lease in the "sipbridge" group (lease.c) and which of the
 * configured users are its own: each user goes to the member with the highest rendezvous
 * weight among the members taking work (storecodec_rendezvous), or, in resource-list
 * mode, every user to the member holding the list (the group's holder). Decides when a
 * user is acquired, handed over (still subscribed, its writes no longer claim it) and let
 * go: only once Redis names its new owner, who has subscribed and written its state
 * (make-before-break), or the old owner is gone. Also the clean leave. Every decision
 * goes up through member_ops. Called by sipbridge's main.c; reads owners and sets the
 * fencing lease through store.c. */
#ifndef OFFHOOK_MEMBER_H
#define OFFHOOK_MEMBER_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise. */

#include <stdbool.h>

struct event_base;
struct member;
struct offhook_config;
struct store;

/* News for the owner (main.c), wired at member_new. jid is valid only during the call. */
struct member_ops {
    /* jid is this member's now: subscribe it. handover: its previous owner is alive (a
     * member joined, or is leaving) and keeps it until this one has written it, so the
     * first write should wait until the user's subscriptions have spoken. */
    void (*on_acquire)(void *arg, const char *jid, bool handover);
    /* jid goes to another member (moving true: keep it subscribed, but its writes no
     * longer claim it), or stays here after all (false). */
    void (*on_moving)(void *arg, const char *jid, bool moving);
    /* jid's new owner has it: let it go (un-SUBSCRIBE; nothing more is written). */
    void (*on_release)(void *arg, const char *jid);
    /* Redis names another owner for a user this member holds (it regained its lease, or
     * lost a race to claim): write its state again as a claim. */
    void (*on_claim)(void *arg, const char *jid);
};

/* Joins the group (name: [sipbridge] instance, or host:pid) from base's loop; cfg must
 * stay valid until the next member_set_users has returned (it carries each user's state
 * over from the old configuration to the new one, by JID) or member_free; store and
 * base must outlive
 * the member; ops is copied. No user is acquired before the first lease renewal. */
struct member *member_new(struct event_base *base, const struct offhook_config *cfg,
                          struct store *store, const struct member_ops *ops, void *arg);
/* Leaves nothing behind in Redis that matters: the lease runs out (or was given up by
 * member_leave). */
void member_free(struct member *m);
/* A reload (or directory change) replaced the configuration: users are assigned again,
 * now (on_acquire for the new ones that are this member's); those no longer configured
 * are forgotten without on_release (the owner already freed them). Returns how many
 * users were acquired. cfg must stay valid as for member_new, and the configuration
 * given before must still be valid during the call. */
int member_set_users(struct member *m, const struct offhook_config *cfg);
/* A write of jid was fenced (store_on_fenced): the lease was lost (renewed now), or
 * another member owns jid (a user being handed over is let go at once). */
void member_fenced(struct member *m, const char *jid, bool lease_lost);
/* The clean stop: hands every user over to the other members and waits until they have
 * them (at most MEMBER_LEAVE_MAX_S), then leaves the group and calls done(arg). Returns
 * false, and does nothing, when no other member takes work. */
bool member_leave(struct member *m, void (*done)(void *arg), void *arg);
#define MEMBER_LEAVE_MAX_S 20
/* A stop with nobody to hand over to: gives the lease up now (a restarted sipbridge then
 * need not wait for it to run out). */
void member_quit(struct member *m);
/* The lease is held and the first view has been applied. */
bool member_ready(const struct member *m);
/* Users this member owns (held, not being handed over). */
int member_users_owned(const struct member *m);
const char *member_name(const struct member *m);
void member_register_metrics(void);

#endif
