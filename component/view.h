/* What a watcher is shown for one user, computed once per change and handed to every
 * writer: the record to show (none while nothing is known or sipbridge is not keeping it
 * true), the phone contact's presence (presence.c), the XEP-0108 activity and XEP-0152
 * reachability; and the parts every writer renders the same way (nickname, addresses).
 * No I/O. Called by publisher.c, the writers (presence_out.c, pep.c) and router.c. */
#ifndef OFFHOOK_VIEW_H
#define OFFHOOK_VIEW_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stddef.h>

#include <strophe.h>

#include "presence.h"
#include "storecodec.h"
#include "users.h"

struct user_view {
    /* The record shown, NULL for "unknown": &shown, a copy, or NULL. */
    const struct user_record *rec;
    struct user_record shown;
    struct presence_view presence; /* the phone contact's presence */
    bool talking;                  /* XEP-0108 talking/on_the_phone (a call or a held one) */
    char activity[64];             /* XEP-0108 <text/>: "On the phone", "On hold" or "" */
    bool reachable;                /* XEP-0152: the phone's addresses are published */
};

/* The record to show for u, copied into buf (returned): NULL while nothing is known or
 * sipbridge is not keeping it true (its heartbeat is missing). */
const struct user_record *view_record(const struct cuser *u, bool sipbridge_alive,
                                      struct user_record *buf);
/* What rec (NULL: unknown, or nothing at all, as on a clean stop) shows; rec is copied
 * into out->shown. */
void view_compute(const struct user_record *rec, struct user_view *out);
/* "<name> (phone)": what a roster or vCard calls u's phone contact. */
void view_nick(const struct cuser *u, char *out, size_t len);
/* A new <reach xmlns='urn:xmpp:reach:0'/> (XEP-0152), with an <addr/> per phone AOR and
 * the tel: number of u when addresses is true. The caller owns it (adds it to a parent
 * or releases it). */
xmpp_stanza_t *view_reach(xmpp_ctx_t *ctx, const struct cuser *u, bool addresses);

#endif
