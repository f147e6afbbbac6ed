/* The RFC 4662 resource-list subscription: one SUBSCRIBE to [sip] resource_list serves
 * the dialog state of every phone the PBX's list names. Matches each resource of a NOTIFY
 * to its member phone (by user@host, else by the user part alone when only one member has
 * it), keeps the list's version by docver.h's rule (a gap asks for full state, staleness
 * again a new subscription), logs and counts resource trouble once per kind, and hands
 * each member's news to its owner through struct rlsub_ops. Called by bridge.c, which embeds a struct rlsub_member in each dialog source
 * the list serves; uses subscription.c for the subscription and rlmi.c for the body. */
#ifndef OFFHOOK_RLSUB_H
#define OFFHOOK_RLSUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "docver.h"
#include "log.h"

struct rlsub;
struct subs_mgr;
struct subscription;

/* One phone the list may name. Embedded in the owner's source, zeroed. */
struct rlsub_member {
    const char *user;         /* for logs: the owner's strings, which must live while the */
    const char *aor;          /* member is indexed (until rlsub_index_clear or rlsub_free) */
    const char *problem;      /* resource-list trouble last logged for it (static) */
    bool seen;                /* named in the NOTIFY being applied */
    struct log_trace trace;   /* set by the owner: this member's part of each list NOTIFY
                               * goes to the log while it runs (offhookctl trace) */
};

/* News for the owner (arg). Called from the loop; no callback may free the rlsub. */
struct rlsub_ops {
    /* The list named m in a NOTIFY received at received_us. terminated: the PBX ended m's
     * back-end subscription, so what m said before is void. Else body (len bytes, valid
     * during the call, media type checked) is m's dialog-info document, or NULL when this
     * instance carries none. The owner updates m's user either way. Returns false when
     * the body shows a version gap or too many dialogs: the list is asked for full state. */
    bool (*on_resource)(void *arg, struct rlsub_member *m, bool terminated, const char *body,
                        size_t len, int64_t received_us);
    /* A body was rejected before parsing (reason static): m's, or the whole list NOTIFY's
     * when m is NULL (rlsub has logged that one). */
    void (*on_rejected)(void *arg, struct rlsub_member *m, const char *reason);
    /* A list NOTIFY was ignored: its version was not newer than the last. */
    void (*on_outdated)(void *arg);
    /* A list NOTIFY was applied although its version was odd (rlsub has logged it). */
    void (*on_version_anomaly)(void *arg, enum docver_anomaly a);
    /* What m said is void: a full-state list left it out (stale false, at received_us), or
     * the list subscription stayed down for stale_after (stale true, now). */
    void (*on_lost)(void *arg, struct rlsub_member *m, bool stale, int64_t when_us);
    /* A new list subscription dialog starts: m's dialog versions start afresh. */
    void (*on_restart)(void *arg, struct rlsub_member *m);
    /* The list subscription is in state (e.g. "active(list)"; valid during the call),
     * which is m's dialog subscription state too. */
    void (*on_state)(void *arg, struct rlsub_member *m, const char *state);
};

/* A list for uri (copied) with no member and no subscription yet. ops (static) is kept.
 * max_body: the largest list NOTIFY body accepted, bytes. */
struct rlsub *rlsub_new(struct subs_mgr *subs, const char *uri, size_t max_body,
                        const struct rlsub_ops *ops, void *arg);
/* Subscribes (through the manager's ramp, after what is already queued). */
void rlsub_start(struct rlsub *l);
/* Ends the subscription (Expires: 0 if live) and frees the list; members stay the
 * owner's. Not from a callback. */
void rlsub_free(struct rlsub *l);
void rlsub_set_max_body(struct rlsub *l, size_t max_body);
/* Adds m (m->user and m->aor set) to the index a NOTIFY's resources are matched with. An
 * AOR that is not a user@host URI is never matched. */
void rlsub_index_add(struct rlsub *l, struct rlsub_member *m);
/* Empties the index (before the owner frees or moves members, then adds them again). */
void rlsub_index_clear(struct rlsub *l);
/* Reports the subscription's state to every member again (on_state): Redis is back. */
void rlsub_report_state(struct rlsub *l);
void rlsub_register_metrics(void);
/* The list's subscription (for the control socket), NULL before rlsub_start. */
const struct subscription *rlsub_subscription(const struct rlsub *l);

#endif
