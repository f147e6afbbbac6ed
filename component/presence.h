/* What a watcher's client shows for a user's phone, pure: maps a user record to the
 * presence of their phone contact (available or not, <show>, <status>). Called by
 * view.c for every user's view and by the unit tests. */
#ifndef OFFHOOK_PRESENCE_H
#define OFFHOOK_PRESENCE_H

#include <stdbool.h>

#include "storecodec.h"

struct presence_view {
    bool available;    /* false: type="unavailable" */
    const char *show;  /* NULL (plain available), "dnd", "away", ... */
    bool video;        /* the phone can do video too (its PIDF says so): the caps differ */
    char status[STORE_REMOTE_MAX + 64]; /* "" = no <status> */
};

/* rec may be NULL when sipbridge has written nothing for the user yet. */
void presence_for_record(const struct user_record *rec, struct presence_view *out);

#endif
