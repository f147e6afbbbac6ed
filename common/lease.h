/* A daemon's lease in its group's members hash in Redis (storecodec.h, "Leases"): joined,
 * renewed every fifth of its length on a Redis link of its own, given up on a clean
 * stop; members whose lease ran out are pruned (by a member that has been connected long
 * enough to know they did not renew), and the group's one holder role is taken by a ready
 * member when nobody valid holds it. Every renewal's view of the group goes up through
 * lease_ops. Called by sipbridge's member.c and the component's main.c. */
#ifndef OFFHOOK_LEASE_H
#define OFFHOOK_LEASE_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storecodec.h"

struct event_base;
struct lease;
struct offhook_config;

struct lease_member {
    char name[STORECODEC_MEMBER_NAME_MAX + 1];
    struct member_rec rec;
};

/* The group as one renewal saw it; valid only during on_view. */
struct lease_view {
    int64_t now_ms;                     /* the Redis server's clock at the renewal */
    uint64_t epoch;                     /* this process's lease */
    bool joined;                        /* the epoch is new at this renewal */
    const struct lease_member *members; /* every member present, this one included,
                                         * sorted by name */
    size_t n;
    const char *holder;                 /* the holder's name, NULL when nobody valid holds
                                         * the role (absent, gone, or leaving) */
    uint64_t holder_epoch;
};

/* News for the owner, wired at lease_new. */
struct lease_ops {
    /* After every renewal Redis answered. */
    void (*on_view)(void *arg, const struct lease_view *v);
    /* The lease can no longer be counted on: no renewal succeeded for the lease's length
     * less one renewal period (Redis unreachable: others may prune it at any moment), or
     * another live process holds the name. Called once per such spell; a later view
     * means it is held again (lease_held). */
    void (*on_expired)(void *arg);
};

/* Joins group under name (copied; storecodec_member_name_ok) with leases of ttl_ms, on a
 * Redis link of its own (cfg is read here only). base must outlive the lease; ops is
 * copied. */
struct lease *lease_new(struct event_base *base, const struct offhook_config *cfg,
                        const char *group, const char *name, long ttl_ms,
                        const struct lease_ops *ops, void *arg);
void lease_free(struct lease *l);
/* What the next renewals report: ready for the holder role, the count (users owned). */
void lease_set_ready(struct lease *l, bool ready);
void lease_set_count(struct lease *l, long count);
/* Whether this member wants the group's holder role (taken when nobody valid holds it
 * and this member is ready). A member that wants it and does not hold it waits for the
 * holder's release on the group's wake list between renewals, so a handover is at once. */
void lease_want_holder(struct lease *l, bool want);
/* Gives the holder role up at the next renewal (now), waking a waiting member. */
void lease_release_holder(struct lease *l);
/* Phase "leaving": still a member, handing its work over; renews now. */
void lease_set_leaving(struct lease *l);
/* Renews now (after news that the view may have changed). */
void lease_renew_now(struct lease *l);
/* Leaves the group now (the holder role too, waking a waiting member); done(arg) once
 * Redis has it, or at once if Redis is not reachable (the lease then runs out). No view
 * is reported after this. */
void lease_leave(struct lease *l, void (*done)(void *arg), void *arg);
/* Whether the lease is held: renewed within its length less one renewal period. */
bool lease_held(const struct lease *l);
uint64_t lease_epoch(const struct lease *l);
const char *lease_name(const struct lease *l);
bool lease_is_holder(const struct lease *l);
/* The default name of this process: "<short host name>:<pid>". A restarted process gets
 * another; the one before, if its name has this form, is pruned as soon as it is seen
 * dead on this host. */
void lease_default_name(char *out, size_t len);
/* Registers offhook_lease_held, offhook_lease_holder, offhook_lease_members and
 * offhook_lease_lost_total. */
void lease_register_metrics(void);

#endif
