/* Mapping from call state to XMPP presence, pure.
 *
 *   on_call  -> dnd  "On the phone"      ringing -> available "Ringing"
 *   on_hold  -> dnd  "On hold"           dialing -> available "Dialing"
 *   dnd      -> dnd  "Do not disturb"    idle    -> available, no status
 *   offline  -> unavailable "Phone offline"
 *   unknown  -> unavailable "Phone status unknown"
 *
 * Ringing and dialing stay available: the person can still be reached by chat, and the
 * state lasts seconds. The other party is named only if sipbridge put it in the record,
 * which it does only when the operator opted in. */
#include "presence.h"

#include <stdio.h>
#include <string.h>

void presence_for_record(const struct user_record *rec, struct presence_view *out)
{
    enum user_state st = rec ? rec->state : US_UNKNOWN;
    const char *text = "";
    const char *party_prefix = NULL; /* text before the other party's name, if known */

    out->available = true;
    out->show = NULL;
    out->video = rec && rec->video;
    switch (st) {
    case US_ON_CALL:
        out->show = "dnd";
        text = "On the phone";
        party_prefix = "On the phone with ";
        break;
    case US_ON_HOLD:
        out->show = "dnd";
        text = "On hold";
        party_prefix = "On hold with ";
        break;
    case US_RINGING:
        text = "Ringing";
        party_prefix = "Ringing: call from ";
        break;
    case US_DIALING:
        text = "Dialing";
        party_prefix = "Dialing ";
        break;
    case US_DND:
        out->show = "dnd";
        text = "Do not disturb";
        break;
    case US_IDLE:
        break;
    case US_OFFLINE:
        out->available = false;
        text = "Phone offline";
        break;
    case US_UNKNOWN:
    case US__COUNT:
        out->available = false;
        text = "Phone status unknown";
        break;
    }
    if (party_prefix && rec && rec->remote[0])
        snprintf(out->status, sizeof out->status, "%s%s", party_prefix, rec->remote);
    else
        snprintf(out->status, sizeof out->status, "%s", text);
}
