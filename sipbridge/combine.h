/* One user's visible state from everything their phones' subscriptions said, pure: each
 * phone's dialogs (merge.c), PIDF reachability, DND and on-the-phone, and registration.
 * Called by bridge.c whenever one of a user's sources changes; table-tested from
 * tests/data/combine.txt. No libevent, Sofia or hiredis types.
 *
 * The rules (docs/architecture.md, "State model"): nothing heard from any source is
 * unknown; a call shows whatever else is known, the most significant one of all phones
 * winning (on_call > on_hold > ringing > dialing > idle; on ties the first source); one
 * phone is offline when its PIDF is closed or its registration ended, and the user is
 * reachable when any phone is; DND comes from any phone's PIDF (RPID busy or a DND note);
 * PIDF's on-the-phone counts as a call only when no dialog package is subscribed (dialog
 * events tell more: hold); without a call, offline beats DND beats idle. */
#ifndef OFFHOOK_COMBINE_H
#define OFFHOOK_COMBINE_H

#include <stdbool.h>

#include "callstate.h"
#include "merge.h"

#define COMBINE_MAX_PHONES 8 /* phones per user; a source of a later phone says no reach */

enum combine_pkg { COMBINE_DIALOG, COMBINE_PRESENCE, COMBINE_REG };

/* What one subscription (one phone, one event package) has said. Zeroed, then pkg and
 * phone set: subscribed, nothing heard. */
struct combine_source {
    enum combine_pkg pkg;
    int phone;                /* which of the user's phones: 0 .. COMBINE_MAX_PHONES-1 */
    bool heard;               /* a valid document arrived since the state was last lost */
    struct merge_source dlg;  /* COMBINE_DIALOG: its dialogs (owned; see combine_forget) */
    enum phone_reach reach;   /* COMBINE_PRESENCE (basic status), COMBINE_REG */
    bool dnd;                 /* COMBINE_PRESENCE: RPID busy or a DND note */
    bool on_phone;            /* COMBINE_PRESENCE: RPID on-the-phone */
    bool video;               /* COMBINE_PRESENCE: an open tuple says it can do video */
};

/* The one state a watcher is shown. */
struct combine_view {
    enum user_state state;
    enum call_dir dir;        /* of the winning dialog; DIR_NONE without a call */
    enum phone_reach reach;   /* of the user: any phone online, else any offline */
    bool dnd;
    bool video;               /* a phone whose PIDF says it is open and can do video */
    const char *remote;       /* the other party of the winning dialog, or NULL (not
                               * shown, none, anonymous); points into that source's
                               * dialogs: valid until the source changes */
    /* Why, for the control socket: the index in srcs of the source whose call won (its
     * dialog, or PIDF on-the-phone), -1 without a call; and the winning dialog, NULL
     * for none or PIDF (points into that source, valid until it changes). */
    int source;
    const struct merge_dialog *dialog;
};

/* Combines the n sources of one user. show_remote: the user lets the other party be
 * shown ([privacy]); otherwise remote is always NULL. */
void combine_user(const struct combine_source *const *srcs, int n, bool show_remote,
                  struct combine_view *out);
/* What s said is void (its subscription stayed down, the resource list dropped it): back
 * to subscribed-nothing-heard, its dialogs freed. Also frees them for good. */
void combine_forget(struct combine_source *s);

#endif
