/* The component's users, as configured: who they are, their phone contacts, the numbers
 * they are found by (XEP-0100), the watcher policy, and each contact's watchers in memory.
 * Pure data: no I/O, and no calls into any other module of the component (a user that a
 * reload removes is announced through the callback users_apply is given). Read by every
 * module of the component; changed by main.c (reload), feed.c (records), watchers.c. */
#ifndef OFFHOOK_USERS_H
#define OFFHOOK_USERS_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "log.h"
#include "storecodec.h"
#include "strmap.h"

#define USERS_REFUSED_MAX 8 /* refused watchers remembered per user (the latest) */

/* A watcher the policy refused, for the control socket ("why can't bob see alice?"). */
struct users_refusal {
    char *watcher;               /* bare JID (owned); NULL: empty slot */
    char request[12];            /* "subscribe", "probe" */
    int64_t at_ms;               /* wall clock of the latest refusal */
    unsigned times;              /* refusals of this watcher while remembered */
};

/* A user's latest record: struct user_record (storecodec.h) with the other party on the
 * heap, since it is "" unless the operator opts in to show it ([privacy]): 128 bytes
 * inline in every user were most of struct cuser. Written only by users_set_record. */
struct cuser_rec {
    enum user_state state;
    enum call_dir dir;
    enum phone_reach reach;
    bool dnd;
    bool video;
    int64_t since_ms;
    int64_t event_us;
    char *remote;                /* the other party (owned), NULL for "" */
};

struct cuser {
    const struct cfg_user *cfg;  /* current configuration entry (replaced on reload) */
    char *jid;                   /* the chat user (in u's own allocation, after it: lives
                                    as long as u) */
    char *contact;               /* their phone contact on the component domain (the same) */
    struct cuser_rec rec;        /* latest state from sipbridge (written by feed.c, through
                                    users_set_record) */
    struct strmap watchers;      /* bare JID -> the same string, owned by the map (written
                                    through users_watcher_add/del, by watchers.c) */
    int64_t rec_at_ms;           /* wall clock when feed.c stored rec (0: never) */
    struct users_refusal *refused; /* USERS_REFUSED_MAX slots through users_note_refused
                                    * (owned), allocated at the first refusal: NULL for
                                    * the many users nobody was refused */
    struct log_trace trace;      /* offhookctl trace: this user's stanzas and decisions
                                    go to the log while it runs */
    unsigned nrefused;           /* refusals since start (the slots hold the latest) */
    /* The flags together after nrefused, where they fill its padding (one per user). */
    bool have_rec;               /* rec holds something sipbridge wrote */
    bool watchers_read;          /* watchers.c asked Redis for its set (a user a reload
                                    or the directory adds has not been asked yet) */
    bool rec_read;               /* feed.c read its record from Redis (a snapshot, or the
                                    read of a user a reload added) */
    bool rec_id_set;             /* rec_id holds a stream id (false: none yet) */
    uint64_t rec_id[2];          /* the event stream id rec reflects, "ms-seq" as its two
                                    numbers (written by feed.c), so that feed.c applies no
                                    event twice: 16 bytes, not the id's text */
};

/* The directory. Other modules read its fields (iterating by_jid, say) but change them
 * only through the functions below. */
struct users {
    const struct offhook_config *cfg; /* the configuration in force (not owned; replaced
                                         by users_apply) */
    struct strmap by_jid;        /* user JID -> struct cuser* (the users are owned) */
    struct strmap by_contact;    /* contact JID -> struct cuser* */
    struct strmap user_domains;  /* domains of configured users -> non-NULL (owned keys) */
    struct strmap gateway;       /* XEP-0100 index: an AOR's user part ("1001", "alice") ->
                                    the users that have it (users.c's struct gw_entry,
                                    owned) */
    struct strmap gateway_tel;   /* the same for tel numbers, normalised ("+15550100") */
    struct strmap watcher_list;  /* [component] watchers entries (owned keys) */
};

/* Builds the users and indexes of cfg, which must outlive d (or the next users_apply). */
void users_init(struct users *d, const struct offhook_config *cfg);
/* Frees every user and index; cfg is not freed. */
void users_free(struct users *d);

/* What users_apply tells its caller; u is valid only during the call. */
struct users_apply_ops {
    /* u is removed (or its contact renamed: it comes back as a new user), before it is
     * freed, its watchers still in u->watchers. */
    void (*on_removed)(void *arg, struct cuser *u);
    /* u stays, but what its phone contact shows changed: its name, phones or number (u->cfg
     * is the new entry by then). May be NULL. */
    void (*on_changed)(void *arg, struct cuser *u);
};
/* Reload: users whose contact changed are replaced, removed ones are announced and freed,
 * everyone else keeps their watchers and state (their cfg now points into cfg, which must
 * outlive d). Added users have rec_read and watchers_read false. */
void users_apply(struct users *d, const struct offhook_config *cfg,
                 const struct users_apply_ops *ops, void *arg);

/* Lookups: the user, owned by d (valid until it is removed by users_apply), or NULL. */
struct cuser *users_by_jid(const struct users *d, const char *jid);
struct cuser *users_by_contact(const struct users *d, const char *contact);
/* XEP-0100: an extension, SIP URI (any form sipaddr_parse takes) or phone number -> the
 * user, or NULL. SIP URIs match an AOR by user, host and port (a port only when both
 * give one); a ;user=phone or +number user part, a tel: URI and a typed number match the
 * tel numbers (national numbers by their last digits, see sipaddr.h) and extensions. */
struct cuser *users_by_number(const struct users *d, const char *query);

/* Whether bare may use the component at all (the watcher policy, not tied to a user). */
bool users_requester_allowed(const struct users *d, const char *bare);
/* Whether a watcher may see the phone state of u (the [component] watcher policy). */
bool users_watcher_allowed(const struct users *d, const struct cuser *u, const char *bare);

/* The watcher policy refused bare's request (copied) for u: remembered, bounded (one slot
 * per watcher, the oldest watcher forgotten first). */
void users_note_refused(struct cuser *u, const char *bare, const char *request);

/* Keeps rec (read during the call) as u's record, NULL: none (sipbridge removed it). */
void users_set_record(struct cuser *u, const struct user_record *rec);
/* u's record as a struct user_record into out (u must have one: u->have_rec). */
void users_get_record(const struct cuser *u, struct user_record *out);

/* u's watchers in memory (bare is copied). Return true if that changed the set. */
bool users_watcher_add(struct cuser *u, const char *bare);
bool users_watcher_del(struct cuser *u, const char *bare);

#endif
