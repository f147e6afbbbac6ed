/* Per-user merge of dialog state, pure: keeps each subscription's dialogs (full state
 * replaces, partial updates apply on top, versions as docver.h rules: stale ones are
 * ignored, gaps and repeated staleness are reported)
 * and reduces all of a user's dialogs on all of their phones to one call activity.
 * Called by bridge.c (merge_apply, after dlginfo_parse) and combine.c (merge_view);
 * unit-tested on the fixtures. */
#ifndef OFFHOOK_MERGE_H
#define OFFHOOK_MERGE_H

#include <stdbool.h>
#include <stdint.h>

#include "callstate.h"
#include "dialoginfo.h"
#include "docver.h"

#define MERGE_MAX_DIALOGS 64 /* per subscription from partial updates; see MERGE_OVERFLOW */
#define MERGE_PARTY_MAX 127  /* bytes of a dialog's remote party: what a user record keeps */

struct merge_dialog {
    char *id;
    enum dlg_state state;
    enum call_dir dir;
    bool held;
    char *remote; /* "Name <uri>", the name alone if that is too long, or the uri; at
                   * most MERGE_PARTY_MAX bytes of valid UTF-8; NULL if unknown or
                   * anonymous */
};

/* The dialogs one dialog-event subscription reported. Zero-initialised = empty. */
struct merge_source {
    struct docver ver;          /* versions since the subscription began */
    enum docver_anomaly anomaly;/* what the last merge_apply saw of its version */
    struct merge_dialog *dialogs;
    int ndialogs;
};

enum merge_result {
    MERGE_APPLIED,   /* state updated */
    MERGE_STALE,     /* a partial update not newer than the last: ignored */
    MERGE_RESYNC,    /* stale again (DOCVER_STALE_MAX in a row): ignored, and the versions
                      * will not agree again in this subscription: start a new one */
    MERGE_GAP,       /* applied, but a partial update was missed: ask for full state */
    MERGE_OVERFLOW,  /* applied, but a partial update added dialogs past MERGE_MAX_DIALOGS
                      * and they were dropped: ask for full state, which replaces the set */
};

/* Applies doc if its version allows (docver.h: full state always does) and sets
 * src->anomaly. */
enum merge_result merge_apply(struct merge_source *src, const struct dlg_doc *doc);
/* A new subscription restarts the version count (RFC 4235 4.1); the dialogs are kept
 * until its first document replaces them, so a resubscribe does not flap the state. */
void merge_source_restart(struct merge_source *src);
void merge_source_clear(struct merge_source *src);
const char *merge_result_name(enum merge_result r);

struct merge_view {
    enum call_activity act;
    enum call_dir dir;          /* of the winning dialog */
    const char *remote;         /* of the winning dialog; points into a source */
    const struct merge_dialog *dialog; /* the winning dialog (NULL when idle): points into
                                        * a source, valid until it changes */
};

/* The most significant dialog across n sources (call_activity order; on ties the first
 * found). An idle result has dir DIR_NONE and remote NULL. */
void merge_view(const struct merge_source *const *srcs, int n, struct merge_view *out);

#endif
