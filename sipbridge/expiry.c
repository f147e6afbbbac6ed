/* Expiry arithmetic under [sip] min_expires (see expiry.h). */
#include "expiry.h"

#define SHORTEN_SLACK_MS 1000 /* transit of a NOTIFY: a smaller cut is the same grant */

long expiry_refresh_at(long delta, long floor, uint64_t rnd)
{
    long min, max;

    if (delta <= 0 || delta < floor)
        return 0;
    if (delta > 90 && delta < 300) {
        min = delta - 60;
        max = delta - 30;
    } else {
        min = (delta + 2) / 4;
        max = min + (delta + 1) / 2;
        if (min == 0)
            min = 1;
    }
    if (min < floor)
        min = floor < max ? floor : max;
    return min + (long)(rnd % (uint64_t)(max - min + 1));
}

bool expiry_notify_shortens(long expires, long floor, int64_t now_ms, int64_t grant_end_ms)
{
    return expires > 0 && expires < floor && grant_end_ms > 0 &&
           now_ms + (int64_t)expires * 1000 + SHORTEN_SLACK_MS < grant_end_ms;
}

long expiry_floor_wait_ms(int64_t sent_ms, long floor, int64_t now_ms)
{
    int64_t at = sent_ms + (int64_t)floor * 1000;

    return sent_ms > 0 && at > now_ms ? (long)(at - now_ms) : 0;
}
