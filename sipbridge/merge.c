/* Dialog bookkeeping per subscription and the reduction to one activity per user, pure. */
#include "merge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"

static const char *const result_names[] = {"applied", "stale", "resync", "gap", "overflow"};

const char *merge_result_name(enum merge_result r)
{
    return result_names[r];
}

static void dialog_free(struct merge_dialog *d)
{
    free(d->id);
    free(d->remote);
}

void merge_source_clear(struct merge_source *src)
{
    for (int i = 0; i < src->ndialogs; i++)
        dialog_free(&src->dialogs[i]);
    free(src->dialogs);
    memset(src, 0, sizeof *src);
}

void merge_source_restart(struct merge_source *src)
{
    docver_restart(&src->ver);
}

static int find(const struct merge_source *src, const char *id)
{
    for (int i = 0; i < src->ndialogs; i++) {
        if (strcmp(src->dialogs[i].id, id) == 0)
            return i;
    }
    return -1;
}

static void remove_at(struct merge_source *src, int i)
{
    dialog_free(&src->dialogs[i]);
    src->dialogs[i] = src->dialogs[--src->ndialogs];
}

/* "Name <uri>", or the name alone when both would not fit in MERGE_PARTY_MAX bytes: a
 * whole name reads better than one with half a URI, and nothing is cut further on. */
static char *party(const struct dlg_entry *e)
{
    char buf[DLG_PARTY_MAX * 2 + 4];

    _Static_assert(DLG_PARTY_MAX - 1 <= MERGE_PARTY_MAX, "a name or URI alone must fit");
    if (e->anonymous || !e->remote_uri[0])
        return NULL;
    if (e->remote_name[0] &&
        strlen(e->remote_name) + strlen(e->remote_uri) + 3 <= MERGE_PARTY_MAX)
        snprintf(buf, sizeof buf, "%s <%s>", e->remote_name, e->remote_uri);
    else
        snprintf(buf, sizeof buf, "%s", e->remote_name[0] ? e->remote_name : e->remote_uri);
    return xstrdup(buf);
}

/* Inserts or updates one dialog. An update without identity keeps the known one:
 * Asterisk names the other party only while ringing. An anonymous update clears it. */
/* Adds or updates e; false if it is new and the set already holds max dialogs. */
static bool upsert(struct merge_source *src, const struct dlg_entry *e, int max)
{
    int i = find(src, e->id);
    struct merge_dialog *d;
    char *remote = party(e);

    if (i < 0) {
        if (src->ndialogs == max) {
            free(remote);
            return false;
        }
        d = &src->dialogs[src->ndialogs++];
        memset(d, 0, sizeof *d);
        d->id = xstrdup(e->id);
    } else {
        d = &src->dialogs[i];
    }
    d->state = e->state;
    d->dir = e->dir != DIR_NONE ? e->dir : d->dir;
    d->held = e->held;
    if (remote || e->anonymous) {
        free(d->remote);
        d->remote = remote;
    }
    return true;
}

enum merge_result merge_apply(struct merge_source *src, const struct dlg_doc *doc)
{
    enum merge_result res = MERGE_APPLIED;
    struct merge_source old = *src;
    int cap;

    switch (docver_check(&src->ver, doc->version, doc->full, &src->anomaly)) {
    case DOCVER_STALE:
        return MERGE_STALE;
    case DOCVER_RESYNC:
        return MERGE_RESYNC;
    case DOCVER_GAP:
        res = MERGE_GAP;
        break;
    case DOCVER_APPLY:
        break;
    }

    /* Room for every kept dialog plus every new one; bounded by DLG_MAX_DIALOGS each. */
    cap = (doc->full ? 0 : src->ndialogs) + doc->ndialogs;
    if (doc->full) {
        /* Full state replaces everything, but the direction and identity seen earlier
         * for the same dialog carry over (Asterisk sends them only while ringing). */
        src->dialogs = cap ? xcalloc((size_t)cap, sizeof *src->dialogs) : NULL;
        src->ndialogs = 0;
        for (int i = 0; i < doc->ndialogs; i++) {
            const struct dlg_entry *e = &doc->dialogs[i];
            int j;
            if (e->state == DLGS_TERMINATED)
                continue;
            upsert(src, e, cap);
            j = find(&old, e->id);
            if (j >= 0) {
                int k = find(src, e->id);
                if (k >= 0 && src->dialogs[k].dir == DIR_NONE)
                    src->dialogs[k].dir = old.dialogs[j].dir;
                if (k >= 0 && old.dialogs[j].remote && !e->anonymous && !src->dialogs[k].remote)
                    src->dialogs[k].remote = xstrdup(old.dialogs[j].remote);
            }
        }
        for (int i = 0; i < old.ndialogs; i++)
            dialog_free(&old.dialogs[i]);
        free(old.dialogs);
    } else {
        /* Partial updates may add dialogs forever if a PBX never ends them: cap the set. */
        if (cap > MERGE_MAX_DIALOGS)
            cap = src->ndialogs > MERGE_MAX_DIALOGS ? src->ndialogs : MERGE_MAX_DIALOGS;
        src->dialogs = xrealloc(src->dialogs, (size_t)(cap ? cap : 1) * sizeof *src->dialogs);
        for (int i = 0; i < doc->ndialogs; i++) {
            const struct dlg_entry *e = &doc->dialogs[i];
            if (e->state == DLGS_TERMINATED) {
                int j = find(src, e->id);
                if (j >= 0)
                    remove_at(src, j);
                continue;
            }
            if (!upsert(src, e, cap))
                res = MERGE_OVERFLOW;
        }
    }
    return res;
}

static enum call_activity dialog_activity(const struct merge_dialog *d)
{
    struct dlg_entry e = {.state = d->state, .dir = d->dir, .held = d->held};

    return dlg_entry_activity(&e);
}

void merge_view(const struct merge_source *const *srcs, int n, struct merge_view *out)
{
    out->act = ACT_IDLE;
    out->dir = DIR_NONE;
    out->remote = NULL;
    out->dialog = NULL;
    for (int s = 0; s < n; s++) {
        for (int i = 0; srcs[s] && i < srcs[s]->ndialogs; i++) {
            const struct merge_dialog *d = &srcs[s]->dialogs[i];
            enum call_activity a = dialog_activity(d);
            if (a > out->act) {
                out->act = a;
                out->dir = d->dir;
                out->remote = d->remote;
                out->dialog = d;
            }
        }
    }
}
