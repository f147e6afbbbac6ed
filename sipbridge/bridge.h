/* sipbridge's users and their sources: for each user this sipbridge holds, one source
 * per AOR and event package, served by its own subscription (subscription.c) or, for
 * dialog state in resource-list mode, by the list (rlsub.c). Each NOTIFY body is parsed
 * (dialoginfo.c, pidf.c, reginfo.c) into what its source said, the user's sources are
 * combined (combine.c) into one visible state, and every change is written to Redis
 * (store.c), coalesced if configured. Which users it holds is member.c's decision,
 * passed on by main.c (bridge_hold, bridge_moving, bridge_release, bridge_claim). Applies
 * configuration reloads user by user. Called by sipbridge's main; news comes up to it
 * only through the callbacks it gives subscription.c, rlsub.c and store.c. Its users'
 * records are the store's too (store_owner_ops): the store keeps one of its own only
 * while a write is under way, and reads these for its checks. */
#ifndef OFFHOOK_BRIDGE_H
#define OFFHOOK_BRIDGE_H

#include <stdbool.h>
#include <stdint.h>

#include "combine.h"
#include "config.h"
#include "log.h"
#include "storecodec.h"

struct bridge;
struct event_base;
struct offhook_config;
struct sipua;
struct store;
struct subs_mgr;
struct timerq;

/* Holds no user until bridge_hold. cfg must stay valid until the next
 * bridge_apply_config or bridge_free. */
struct bridge *bridge_new(struct event_base *base, struct timerq *tq,
                          const struct offhook_config *cfg, struct sipua *ua,
                          struct store *store);
/* jid (a configured user) is this sipbridge's: subscribe it (at the configured ramp; in
 * resource-list mode the list is subscribed with the first user). handover: its previous
 * owner still writes it, so the first write waits until the user's sources have spoken
 * (HANDOVER_SETTLE_MS at most after the first did). */
void bridge_hold(struct bridge *b, const char *jid, bool handover);
/* jid is being handed over (true: still subscribed, writes no longer claim it) or stays
 * (false: its state is claimed again). */
void bridge_moving(struct bridge *b, const char *jid, bool moving);
/* jid is let go: un-SUBSCRIBEd and freed after this loop turn, nothing more written. */
void bridge_release(struct bridge *b, const char *jid);
/* Redis names another owner of jid: its state is written again as a claim (if known). */
void bridge_claim(struct bridge *b, const char *jid);
/* The subscription manager (for readiness and status). */
struct subs_mgr *bridge_subs(const struct bridge *b);
/* Reload: of the users held, removes those no longer configured and re-subscribes those
 * whose phones or packages changed, leaving every other subscription untouched (users
 * the reload adds are member.c's to give). */
struct bridge_reload {
    int removed, resubscribed, unchanged; /* users held before the reload */
};
void bridge_apply_config(struct bridge *b, const struct offhook_config *cfg,
                         struct bridge_reload *out);
/* Frees every user; live subscriptions get Expires: 0 (none are left after
 * sipua_shutdown, which ends them all). */
void bridge_free(struct bridge *b);
/* Users held (owned or being handed over). */
int bridge_user_count(const struct bridge *b);
void bridge_register_metrics(void);

/* ---- read-only looks for the control socket: every pointer is valid until the loop
 * runs again (read them in the same turn) ---------------------------------------------- */

struct subscription;

/* One of a user's sources: one AOR, one event package. */
struct bridge_source_view {
    const char *aor;
    const char *package;              /* "dialog", "presence" or "reg" */
    const struct subscription *sub;   /* its own, or the resource list's (via_list); NULL
                                       * while the list has not started */
    bool via_list;                    /* [sip] resource_list serves it */
    const struct combine_source *said;/* what it has said */
    const char *list_problem;         /* via the list: "terminated", "missing" or NULL */
    const char *body_error;           /* the last body of it rejected (static), or NULL */
    int64_t body_error_ms;            /* wall ms of that */
};

struct bridge_user_view {
    const char *jid;
    bool stored;                      /* a state has been handed to the store */
    struct user_record rec;           /* the last one */
    bool has_pending;                 /* coalescing holds a newer one back: */
    struct user_record pending;
    struct combine_view now;          /* the sources combined now, with what decided it
                                       * (now.source indexes src) */
    int nsrc;
    struct bridge_source_view src[CFG_MAX_AORS * 3];
    struct log_trace trace;
};
/* false if jid is not a configured user. */
bool bridge_user_view(const struct bridge *b, const char *jid, struct bridge_user_view *out);
/* The resource-list subscription and its URI, or NULL without [sip] resource_list. */
const struct subscription *bridge_list(const struct bridge *b);
const char *bridge_list_uri(const struct bridge *b);
/* Traces who (a user's JID: the user and all its sources; else an AOR: its sources and
 * their users' decisions) as t says (copied; until_ms 0 ends a trace). Returns the number
 * of sources traced, 0 if who names nothing. */
int bridge_trace(struct bridge *b, const char *who, const struct log_trace *t);

#endif
