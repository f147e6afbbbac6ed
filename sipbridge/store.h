/* sipbridge's writer of user state to Redis: each change replaces the user's hash and
 * appends a change event to the stream, atomically (one script), under this member's
 * lease (fencing). While Redis is down, the latest record of each changed user is held
 * (bounded by the number of users) and written when the link returns, so the final state
 * is never lost. Called by bridge.c (states) and member.c (lease, owners). */
#ifndef OFFHOOK_STORE_H
#define OFFHOOK_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "storecodec.h"

/* Ownership: pointers given to a function are only read during the call (strings and
 * records are copied if kept), unless its comment says otherwise. */

struct event_base;
struct offhook_config;
struct store;

/* A user's state as sipbridge holds it (bridge.c's last written, store.c's to write):
 * storecodec's struct user_record less its 128-byte remote buffer, which is allocated
 * only while a call's other party is shown. At 100,000 users two full records each were
 * 320 of the ~2,000 bytes a user cost. */
struct store_rec {
    uint8_t state;       /* enum user_state */
    uint8_t dir;         /* enum call_dir */
    uint8_t reach;       /* enum phone_reach */
    bool dnd;
    bool video;
    int64_t since_ms;    /* as in struct user_record */
    int64_t event_us;
    char *remote;        /* NULL, or a string owned by the struct's holder */
};

/* Whether a and b show the same state (times not compared). */
bool store_rec_same(const struct store_rec *a, const struct store_rec *b);
/* dst becomes a copy of src (remote duplicated; dst's old one freed). */
void store_rec_copy(struct store_rec *dst, const struct store_rec *src);
/* Frees r's remote. */
void store_rec_clear(struct store_rec *r);
/* r as the full record storecodec encodes (remote copied, cut on a character). */
void store_rec_expand(const struct store_rec *r, struct user_record *out);

struct store *store_new(struct event_base *base, const struct offhook_config *cfg);
void store_free(struct store *st);
bool store_up(const struct store *st);
/* The owner's records (bridge.c), wired at the owner's start: the store keeps a user's
 * record only while it carries something the owner's does not (a write pending or in
 * flight, a removal, a claim's resend): at 100,000 users a copy of every written state
 * and its map were ~150 bytes per user. The check of every written user after a
 * reconnect or a new lease reads the others' through these. */
struct store_owner_ops {
    /* Calls fn with the JID of each user the owner holds (valid during the call). */
    void (*each)(void *arg, void (*fn)(void *fn_arg, const char *jid), void *fn_arg);
    /* The state last handed to store_put for jid since the owner took it, and whether its
     * writes claim the user: false if the owner does not hold jid or has handed none over.
     * *rec is valid during the call (the store copies it). */
    bool (*get)(void *arg, const char *jid, const struct store_rec **rec, bool *claim);
};
/* ops is copied; arg must outlive the store or a later store_set_owner(st, NULL, NULL). */
void store_set_owner(struct store *st, const struct store_owner_ops *ops, void *arg);
/* Records r (copied) as jid's current state and writes it (now, or once Redis is
 * back); claim: whether the write claims the user (see store_set_claim). */
void store_put(struct store *st, const char *jid, const struct store_rec *r, bool claim);
/* Deletes jid's state (user removed from the configuration), with a "removed" event. */
void store_remove(struct store *st, const char *jid, bool claim);
/* Records one subscription's state for offhookctl (best effort: lost while Redis is down,
 * rewritten through the resync hook when it is back). */
void store_sub_state(struct store *st, const char *jid, const char *package, const char *aor,
                     const char *state);
/* Forgets a removed user's subscription states. */
void store_sub_clear(struct store *st, const char *jid);
/* This member's lease (member.c): every write carries it, and Redis refuses a write from
 * a lease that was lost (storecodec_write_script). epoch 0: none (writes are held). */
void store_set_lease(struct store *st, const char *name, uint64_t epoch);
/* Whether jid's writes claim the user (true: it is this member's by the membership) or
 * not (it is being handed over: refused once its new owner has written): for the writes
 * of jid still held or in flight (later ones carry store_put's). */
void store_set_claim(struct store *st, const char *jid, bool claim);
/* Makes sure Redis names this member as jid's owner: its latest state (r, the last one
 * given to store_put, unless the store holds a later word of its own) is written again,
 * as a claim, if Redis names another (with an event only if the state differs). */
void store_claim(struct store *st, const char *jid, const struct store_rec *r);
/* jid is handed over: nothing of it is written any more (until the next store_put). */
void store_release(struct store *st, const char *jid);
/* News of fenced writes: jid's write was refused because this member's lease was lost
 * (lease_lost: everything is held until store_set_lease gives another), or because jid
 * is owned by another member (its write is dropped). */
void store_on_fenced(struct store *st, void (*fn)(void *arg, const char *jid, bool lease_lost),
                     void *arg);
/* Reads the owner field ("<epoch> <name>", or NULL) of each of jids; fn gets them (valid
 * during the call) with ok false if some could not be read (NULL then means unknown).
 * Returns -1 (fn not called) when Redis is not up. */
int store_read_owners(struct store *st, const char *const *jids, size_t n,
                      void (*fn)(void *arg, const char *const *owners, size_t n, bool ok),
                      void *arg);
/* Called each time the link comes up, after pending states are flushed. */
void store_on_up(struct store *st, void (*fn)(void *arg), void *arg);
/* Users whose latest state is not yet in Redis. */
int store_pending(const struct store *st);
void store_register_metrics(void);

#endif
