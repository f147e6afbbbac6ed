/* The call-state model: names and derivation of the visible user state. Pure. */
#include "callstate.h"

#include <string.h>

static const char *const activity_names[ACT__COUNT] = {
    [ACT_IDLE] = "idle",       [ACT_DIALING] = "dialing", [ACT_RINGING] = "ringing",
    [ACT_ON_HOLD] = "on_hold", [ACT_ON_CALL] = "on_call",
};

static const char *const state_names[US__COUNT] = {
    [US_UNKNOWN] = "unknown", [US_OFFLINE] = "offline", [US_IDLE] = "idle",
    [US_DND] = "dnd",         [US_DIALING] = "dialing", [US_RINGING] = "ringing",
    [US_ON_HOLD] = "on_hold", [US_ON_CALL] = "on_call",
};

static const char *const dir_names[] = {
    [DIR_NONE] = "none", [DIR_INCOMING] = "incoming", [DIR_OUTGOING] = "outgoing"};

static const char *const reach_names[] = {
    [REACH_UNKNOWN] = "unknown", [REACH_ONLINE] = "online", [REACH_OFFLINE] = "offline"};

static int lookup(const char *const *names, int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        if (names[i] && strcmp(names[i], name) == 0)
            return i;
    }
    return -1;
}

const char *call_activity_name(enum call_activity a)
{
    return (a >= 0 && a < ACT__COUNT) ? activity_names[a] : "invalid";
}

const char *user_state_name(enum user_state s)
{
    return (s >= 0 && s < US__COUNT) ? state_names[s] : "invalid";
}

int user_state_from_name(const char *name, enum user_state *out)
{
    int i = lookup(state_names, US__COUNT, name);

    if (i < 0)
        return -1;
    *out = (enum user_state)i;
    return 0;
}

const char *call_dir_name(enum call_dir d)
{
    return (d >= DIR_NONE && d <= DIR_OUTGOING) ? dir_names[d] : "invalid";
}

int call_dir_from_name(const char *name, enum call_dir *out)
{
    int i = lookup(dir_names, 3, name);

    if (i < 0)
        return -1;
    *out = (enum call_dir)i;
    return 0;
}

const char *phone_reach_name(enum phone_reach r)
{
    return (r >= REACH_UNKNOWN && r <= REACH_OFFLINE) ? reach_names[r] : "invalid";
}

int phone_reach_from_name(const char *name, enum phone_reach *out)
{
    int i = lookup(reach_names, 3, name);

    if (i < 0)
        return -1;
    *out = (enum phone_reach)i;
    return 0;
}

enum user_state user_state_derive(bool known, enum call_activity act, enum phone_reach reach,
                                  bool dnd)
{
    switch (act) {
    case ACT_ON_CALL:
        return US_ON_CALL;
    case ACT_ON_HOLD:
        return US_ON_HOLD;
    case ACT_RINGING:
        return US_RINGING;
    case ACT_DIALING:
        return US_DIALING;
    case ACT_IDLE:
    case ACT__COUNT:
        break;
    }
    if (!known)
        return US_UNKNOWN;
    if (reach == REACH_OFFLINE)
        return US_OFFLINE;
    if (dnd)
        return US_DND;
    return US_IDLE;
}
