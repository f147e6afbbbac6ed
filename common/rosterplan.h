/* Which phone contacts each user's roster should hold under [component] roster (everyone:
 * every other user of the same domain; groups: every user sharing a group), named and
 * grouped, and which (user, contact) pairs a change of the users can have changed. Pure:
 * configuration in, items out. The one owner of what a provisioned roster item is (its
 * name, its groups, the signature recorded for it). Used by the component's roster writer
 * (component/roster.c) and by offhookctl, which turns the same plan into a Prosody
 * mod_groups file or ejabberdctl commands. */
#ifndef OFFHOOK_ROSTERPLAN_H
#define OFFHOOK_ROSTERPLAN_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "strmap.h"

#define ROSTER_NAME_MAX 320          /* "<name> (phone)": a name is at most 256 bytes */
#define ROSTER_SIG_MAX 4096          /* an item's signature (name and groups) */

/* Whether user (a bare JID) may watch phone contacts at all (the component passes its
 * watcher policy); NULL: everyone may. */
typedef bool (*rosterplan_allowed_fn)(void *arg, const char *user);

/* The plan for one configuration: its users indexed by domain and by group. */
struct rosterplan {
    const struct offhook_config *cfg; /* borrowed: must outlive the plan */
    int mode;                    /* enum cfg_roster_mode */
    struct strmap by_domain;     /* domain -> struct rosterplan_list* (owned) */
    struct strmap by_group;      /* group -> struct rosterplan_list* (owned) */
    rosterplan_allowed_fn allowed;
    void *allowed_arg;
};

struct rosterplan_list {
    const struct cfg_user **u;   /* borrowed from the configuration */
    size_t n, cap;
    char *key;                   /* the domain or group (owned; the map's key) */
};

/* One item of a user's roster: a phone contact, its name and its roster groups. */
struct rosterplan_item {
    const char *contact;         /* borrowed from the configuration */
    char name[ROSTER_NAME_MAX];
    const char *groups[CFG_MAX_GROUPS]; /* borrowed from the configuration */
    int ngroups;
};

/* Builds the plan of cfg (borrowed: it must outlive p). allowed may be NULL. */
void rosterplan_build(struct rosterplan *p, const struct offhook_config *cfg,
                      rosterplan_allowed_fn allowed, void *allowed_arg);
void rosterplan_free(struct rosterplan *p);

/* "<name> (phone)", or "<jid> (phone)" without a name: what a roster, a vCard and a
 * presence <nick/> call u's phone contact. */
void rosterplan_nick(const struct cfg_user *u, char *out, size_t len);

/* Whether u's roster holds v's phone contact; if so, *out describes the item. u and v are
 * users of p's configuration. */
bool rosterplan_item(const struct rosterplan *p, const struct cfg_user *u,
                     const struct cfg_user *v, struct rosterplan_item *out)
    __attribute__((warn_unused_result));
/* How many items u's roster holds (0 with roster = none). */
size_t rosterplan_count(const struct rosterplan *p, const struct cfg_user *u);
/* Whether u's roster would hold more than [component] roster_max_items: the writer then
 * adds nothing to it (renames, regroupings and removals still go through). */
bool rosterplan_over_limit(const struct rosterplan *p, const struct cfg_user *u);
/* Calls fn for each item of u's roster (it is valid only during the call); stops early
 * when fn returns false. */
typedef bool (*rosterplan_item_fn)(void *arg, const struct rosterplan_item *it);
void rosterplan_each(const struct rosterplan *p, const struct cfg_user *u,
                     rosterplan_item_fn fn, void *arg);

/* The signature recorded for an item, to tell later whether it must be rewritten: its
 * name and groups, in a form with no ambiguity. Starts with '+'. */
void rosterplan_sig(const struct rosterplan_item *it, char *out, size_t len);

/* Between the plans of two configurations (old may be NULL: nothing before), the work a
 * change of users or of the roster keys makes: fn(user, contact) for every (user, phone
 * contact) pair whose item may differ, and fn(user, NULL) for every user whose whole
 * roster may differ (a user added, removed or regrouped, the mode changed). user and
 * contact are valid only during the call; a pair may come more than once. */
typedef void (*rosterplan_work_fn)(void *arg, const char *user, const char *contact);
void rosterplan_diff(const struct rosterplan *old, const struct rosterplan *cur,
                     rosterplan_work_fn fn, void *arg);

#endif
