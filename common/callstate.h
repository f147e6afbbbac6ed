/* The call-state model shared by both daemons: what a user's phone is doing, how the
 * states rank when several dialogs or devices disagree, and their wire names. Pure.
 * sipbridge computes it (merge.c), the store carries it, the component renders it. */
#ifndef OFFHOOK_CALLSTATE_H
#define OFFHOOK_CALLSTATE_H

#include <stdbool.h>

/* What the user's phones are doing, from dialog events. Ordered by significance:
 * when a user has several dialogs or devices, the highest one wins (merge.c). A held
 * call next to an active one is on_call; a ringing second line during a call is on_call. */
enum call_activity {
    ACT_IDLE = 0,   /* no dialog, or only terminated ones */
    ACT_DIALING,    /* outgoing call not yet answered (trying/proceeding/early) */
    ACT_RINGING,    /* incoming call ringing (early, recipient) */
    ACT_ON_HOLD,    /* confirmed call whose media the user's phone does not render */
    ACT_ON_CALL,    /* confirmed call */
    ACT__COUNT
};

/* Whether the phone can be reached at all, from PIDF basic status or reginfo. */
enum phone_reach {
    REACH_UNKNOWN = 0, /* no presence/reg source, or none heard yet */
    REACH_ONLINE,      /* registered / PIDF open */
    REACH_OFFLINE,     /* unregistered / PIDF closed */
};

enum call_dir { DIR_NONE = 0, DIR_INCOMING, DIR_OUTGOING };

/* The one state a chat user sees, derived from activity, reachability and DND. */
enum user_state {
    US_UNKNOWN = 0, /* sipbridge has not heard from the PBX for this user yet */
    US_OFFLINE,     /* phone not registered */
    US_IDLE,
    US_DND,         /* do-not-disturb set on the phone, no call */
    US_DIALING,
    US_RINGING,
    US_ON_HOLD,
    US_ON_CALL,
    US__COUNT
};

const char *call_activity_name(enum call_activity a);
const char *user_state_name(enum user_state s);
/* Returns 0 and sets *out, or -1 for an unknown name. */
int user_state_from_name(const char *name, enum user_state *out) __attribute__((warn_unused_result));
const char *call_dir_name(enum call_dir d);
int call_dir_from_name(const char *name, enum call_dir *out) __attribute__((warn_unused_result));
const char *phone_reach_name(enum phone_reach r);
int phone_reach_from_name(const char *name, enum phone_reach *out) __attribute__((warn_unused_result));

/* Derives the visible state. A call in progress always shows (a phone that is on a
 * call is reachable whatever a stale registration says); otherwise offline beats DND
 * beats idle. known=false means no source has reported yet. */
enum user_state user_state_derive(bool known, enum call_activity act, enum phone_reach reach,
                                  bool dnd);

#endif
