/* The arithmetic of subscription expiry under a floor ([sip] min_expires), pure: when to
 * refresh a grant, which grants are short, how long a new SUBSCRIBE must wait so that a
 * subscription sends at most one per floor. Called by sipua.c (the refresh schedule) and
 * subscription.c (short grants and their pace); unit-tested in test_expiry.
 *
 * RFC 6665 leaves the shortest expiry to the notifier (423 Min-Expires) and says nothing
 * of a subscriber's: a PBX granting Expires: 1 would have us refresh every half second per
 * user. A grant below the floor is short: it is not refreshed, it lapses, and the next
 * SUBSCRIBE (a new dialog, whose first NOTIFY brings the full state) waits for the floor. */
#ifndef OFFHOOK_EXPIRY_H
#define OFFHOOK_EXPIRY_H

#include <stdbool.h>
#include <stdint.h>

/* Seconds after a grant of delta seconds at which to refresh it, rnd any random number:
 * as nua did, 30-60 s before the end for grants of 91..299 s, else anywhere in the middle
 * half (so that subscriptions made together drift apart), but no sooner than floor where
 * that still leaves the window's margin (else the window's end). 0: do not refresh (delta
 * <= 0, or a short grant: below floor). */
long expiry_refresh_at(long delta, long floor, uint64_t rnd)
    __attribute__((warn_unused_result));

/* Whether a NOTIFY's expires= (the time left, seconds) arriving at now_ms shortens the
 * grant that was to end at grant_end_ms (0: unknown) below the floor: time left runs low
 * before every refresh, so only a cut of more than a second's transit counts. */
bool expiry_notify_shortens(long expires, long floor, int64_t now_ms, int64_t grant_end_ms)
    __attribute__((warn_unused_result));

/* Milliseconds a new SUBSCRIBE must wait at now_ms to keep to one per floor seconds after
 * the last one, sent at sent_ms (0: none yet). */
long expiry_floor_wait_ms(int64_t sent_ms, long floor, int64_t now_ms)
    __attribute__((warn_unused_result));

#endif
