/* The presence writer: the phone contacts' presence to their watchers, built from a
 * user's view (view.h) and sent only when what they see changes, and the presence that
 * answers subscriptions. Remembers per user what its watchers were last sent.
 * Called by publisher.c (changes) and router.c (answers); main.c tells it of the link. */
#ifndef OFFHOOK_PRESENCE_OUT_H
#define OFFHOOK_PRESENCE_OUT_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stdint.h>

#include "stanza.h"
#include "users.h"
#include "view.h"

/* Phone contacts' availability comes from this resource: clients track presence per
 * resource, and some will not query a bare JID (XEP-0092 version, for one). */
#define CONTACT_RESOURCE "phone"

struct presence_out;

/* d and out are borrowed: both must outlive the writer. */
struct presence_out *presout_new(const struct users *d, const struct stanza_out *out);
void presout_free(struct presence_out *po);
void presout_register_metrics(void);

/* Sends v to every watcher of u if it differs from what they were last sent (or always
 * with force). event_us: when sipbridge received the change (0: none), for the latency
 * histogram. Does nothing while [component] publish has no contacts. */
void presout_user(struct presence_out *po, const struct cuser *u, const struct user_view *v,
                  bool force, int64_t event_us);
/* Sends v to one JID (a probe's answer, a new subscriber), or "unavailable" while
 * [component] publish has no contacts. */
void presout_user_to(struct presence_out *po, const struct cuser *u,
                     const struct user_view *v, const char *to);
/* Presence of the given type (subscribed, unsubscribed, ...) from a bare JID of ours. */
void presout_type(struct presence_out *po, const char *from, const char *to, const char *type);
/* "unavailable" from u's phone resource (where its available presence came from). */
void presout_unavailable(struct presence_out *po, const struct cuser *u, const char *to);
/* The answer to a subscription request: "subscribed", with a roster nickname. */
void presout_subscribed(struct presence_out *po, const struct cuser *u, const char *to);

/* A clean stop: every watcher of u sees the contact unavailable (while [component]
 * publish has contacts). */
void presout_goodbye(struct presence_out *po, const struct cuser *u);

/* The stream went down: what watchers were sent is no longer known, so the next change
 * (or the republish after reconnecting) sends everything. */
void presout_link_down(struct presence_out *po);
/* u is being removed: drops what the writer remembers of it. */
void presout_forget(struct presence_out *po, const struct cuser *u);

/* For the control socket: what the writer remembers having sent. */
struct presout_sent {
    int64_t at_ms;               /* wall clock; 0: nothing sent yet */
    struct presence_view view;
    const char *how;             /* "change" (to every watcher), "answer" (to its probe,
                                  * subscription or directed presence), "unavailable" */
    bool owed;                   /* the stream went down since: it is sent again on the
                                  * next change or reconnect */
};
/* What watcher (a bare JID of u's watchers) was last sent of u's contact. */
void presout_last_sent(const struct presence_out *po, const struct cuser *u,
                       const char *watcher, struct presout_sent *out);
/* The last change sent to every watcher of u, and to how many. */
void presout_last_change(const struct presence_out *po, const struct cuser *u,
                         struct presout_sent *out, int *watchers);

#endif
