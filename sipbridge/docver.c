/* The one version rule for dialog, reg and list documents (see docver.h), pure. */
#include "docver.h"

#include <string.h>

enum docver_verdict docver_check(struct docver *v, uint32_t version, bool full,
                                 enum docver_anomaly *anomaly)
{
    enum docver_anomaly a = DOCVER_NORMAL;
    enum docver_verdict verdict = DOCVER_APPLY;

    if (v->have && version <= v->last && !full) {
        /* Stale. In one dialog the SIP stack delivers NOTIFYs in CSeq order (a request
         * older than the last is refused 500, RFC 3261 12.2.2), so this is no reordering:
         * the notifier counts from somewhere else than we do. */
        if (anomaly)
            *anomaly = DOCVER_NORMAL;
        return ++v->stale_run >= DOCVER_STALE_MAX ? DOCVER_RESYNC : DOCVER_STALE;
    }
    if (v->have && version < v->last)
        a = DOCVER_REWOUND; /* full state: authoritative whatever its version */
    else if (v->have && (uint64_t)version > (uint64_t)v->last + DOCVER_JUMP_MAX)
        a = DOCVER_JUMPED;
    if (!full && (!v->have || version != v->last + 1 || !v->seen_full))
        verdict = DOCVER_GAP;
    v->have = true;
    v->seen_full = v->seen_full || full;
    v->last = version;
    v->stale_run = 0;
    if (anomaly)
        *anomaly = a;
    return verdict;
}

void docver_restart(struct docver *v)
{
    memset(v, 0, sizeof *v);
}

const char *docver_anomaly_name(enum docver_anomaly a)
{
    switch (a) {
    case DOCVER_JUMPED:
        return "jumped";
    case DOCVER_REWOUND:
        return "rewound";
    case DOCVER_NORMAL:
        break;
    }
    return "normal";
}
