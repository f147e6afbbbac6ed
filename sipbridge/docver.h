/* The version rule of every versioned event document sipbridge reads, pure: RFC 4235
 * dialog-info, RFC 3680 reginfo and the RFC 4662 RLMI list. Called by merge.c (dialog
 * documents), bridge.c (reginfo) and rlsub.c (the list), each keeping one struct docver
 * per subscription; unit-tested in test_merge.
 *
 * Versions count documents within one subscription (RFC 4235 4.1; RFC 3680 and RFC 4662
 * say the same of theirs): a new subscription starts a new count (docver_restart). A
 * partial document must be the next version; one that skips versions is applied but
 * calls for full state (a gap); one that is not newer is stale and ignored. A full-state
 * document is the notifier's whole truth and is applied whatever its version: a version
 * the notifier never sent (4294967295 from a forger or a buggy PBX) would otherwise make
 * every later document stale and freeze the state. Stale documents in a row mean the
 * notifier's count and ours disagree: after DOCVER_STALE_MAX of them the owner starts a
 * new subscription, which starts both counts afresh. A jump of more than DOCVER_JUMP_MAX
 * versions is applied (a full state after it heals anything) but reported, to be
 * counted. */
#ifndef OFFHOOK_DOCVER_H
#define OFFHOOK_DOCVER_H

#include <stdbool.h>
#include <stdint.h>

#define DOCVER_STALE_MAX 2      /* stale documents in a row before a new subscription */
#define DOCVER_JUMP_MAX 65536   /* more versions skipped at once is implausible */

struct docver {
    bool have;           /* a document of this subscription was applied */
    bool seen_full;      /* ... and one of them was full state */
    uint32_t last;       /* the version of the last one applied */
    unsigned stale_run;  /* documents ignored as stale since the last one applied */
};

enum docver_verdict {
    DOCVER_APPLY,   /* apply it */
    DOCVER_GAP,     /* apply it; partial updates were missed, so ask for full state */
    DOCVER_STALE,   /* not newer: ignore it */
    DOCVER_RESYNC,  /* not newer, and DOCVER_STALE_MAX in a row: ignore it and start a
                     * new subscription */
};

/* Anything odd about a document, beyond the verdict: for a metric and a log line. */
enum docver_anomaly {
    DOCVER_NORMAL,
    DOCVER_JUMPED,  /* more than DOCVER_JUMP_MAX versions ahead of the last one */
    DOCVER_REWOUND, /* full state older than the last one: applied, the count starts
                     * again from it */
};

/* The verdict on a document of this version (full: state="full"/fullState="true"), and
 * v updated as if the caller applies it when told to. anomaly may be NULL. */
enum docver_verdict docver_check(struct docver *v, uint32_t version, bool full,
                                 enum docver_anomaly *anomaly);
/* A new subscription: its first document starts the count. */
void docver_restart(struct docver *v);
const char *docver_anomaly_name(enum docver_anomaly a);

#endif
