/* The publisher: for each change of a user, computes what watchers are shown (view.h)
 * once and hands that one view to each writer, the PEP writer (pep.c) and the presence
 * writer (presence_out.c), in that order; and the same for every user after a reconnect,
 * a resync, sipbridge coming or going, a grant, or on a clean stop. Holds whether
 * sipbridge is keeping the records true. Called by main.c (news from the feed, health,
 * the link and the watcher store) and router.c (answers to one JID). */
#ifndef OFFHOOK_PUBLISHER_H
#define OFFHOOK_PUBLISHER_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>
#include <stdint.h>

#include "pep.h"
#include "presence_out.h"
#include "vcard_out.h"
#include "stanza.h"
#include "users.h"

struct publisher;

/* Everything is borrowed and must outlive the publisher. */
struct publisher *pub_new(const struct users *d, struct presence_out *po, struct pep *pep,
                          struct vcard_out *vc, const struct stanza_out *out);
void pub_free(struct publisher *pub);

/* Whether sipbridge's heartbeat is fresh, i.e. the records are being kept true (false
 * until told otherwise). While it is not, every phone shows "unknown". Publishes nothing
 * itself: the caller follows with pub_changed() when it should show. */
void pub_sipbridge(struct publisher *pub, bool alive);
/* What pub_sipbridge was last told (for the control socket). */
bool pub_sipbridge_alive(const struct publisher *pub);

/* u's view to PEP and to every watcher, where it changed (or always with force).
 * event_us: when sipbridge received the change (0: none), for the latency histogram. */
void pub_user(struct publisher *pub, const struct cuser *u, bool force, int64_t event_us);
/* u's presence to one JID (a probe's answer, a new subscriber, directed presence). */
void pub_user_to(struct publisher *pub, const struct cuser *u, const char *to);
/* After (re)connecting or a resync: every user, forced. */
void pub_all(struct publisher *pub);
/* Every user whose view changed (e.g. sipbridge came or went), unforced. */
void pub_changed(struct publisher *pub);
/* A new grant from domain's server: every user there into PEP and their vCard, forced. */
void pub_pep_domain(struct publisher *pub, const char *domain);
/* A user's PEP and vCard again, forced: the time privileged.c left it alone after a
 * refusal is over, or the user came online. */
void pub_pep_user(struct publisher *pub, const struct cuser *u);
/* On a clean stop: every contact unavailable to its watchers (all of it queued first),
 * then offhook's "on the phone" emptied from the PEP activity of those on the phone (the
 * XEP-0152 addresses stay; the PEP writes are answered later: privileged.h's
 * priv_when_idle). Nothing is published after it. */
void pub_goodbye(struct publisher *pub);

#endif
