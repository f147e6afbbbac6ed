/* The per-user combining rules of combine.h, pure. */
#include "combine.h"

void combine_user(const struct combine_source *const *srcs, int n, bool show_remote,
                  struct combine_view *out)
{
    struct merge_view view = {ACT_IDLE, DIR_NONE, NULL, NULL};
    int winner = -1;
    bool known = false, dnd = false, pidf_phone = false, have_dialog_pkg = false;
    bool video = false;
    bool online = false, offline = false;
    enum phone_reach phone[COMBINE_MAX_PHONES] = {REACH_UNKNOWN};

    for (int i = 0; i < n; i++) {
        const struct combine_source *s = srcs[i];
        known |= s->heard;
        if (s->pkg == COMBINE_DIALOG) {
            const struct merge_source *one[] = {&s->dlg};
            struct merge_view v;
            /* Dialogs count heard or not: a resubscribe keeps them until its first
             * document (merge.h); a lost source has none. On ties the first wins. */
            have_dialog_pkg = true;
            merge_view(one, 1, &v);
            if (v.act > view.act) {
                view = v;
                winner = i;
            }
            continue;
        }
        if (!s->heard || s->phone < 0 || s->phone >= COMBINE_MAX_PHONES)
            continue;
        /* One phone is offline if its PIDF is closed or its registration ended, whatever
         * the other package says (Asterisk's PIDF stays open for an unregistered phone). */
        if (s->reach == REACH_OFFLINE)
            phone[s->phone] = REACH_OFFLINE;
        else if (s->reach == REACH_ONLINE && phone[s->phone] == REACH_UNKNOWN)
            phone[s->phone] = REACH_ONLINE;
        if (s->pkg == COMBINE_PRESENCE) {
            dnd |= s->dnd;
            pidf_phone |= s->on_phone;
            video |= s->video;
        }
    }
    for (int a = 0; a < COMBINE_MAX_PHONES; a++) {
        online |= phone[a] == REACH_ONLINE;
        offline |= phone[a] == REACH_OFFLINE;
    }
    /* PIDF's on-the-phone counts only without dialog events, which tell more (hold). */
    if (!have_dialog_pkg && pidf_phone && view.act < ACT_ON_CALL) {
        view.act = ACT_ON_CALL;
        view.dialog = NULL;
        for (int i = 0; i < n && winner < 0; i++) {
            if (srcs[i]->pkg == COMBINE_PRESENCE && srcs[i]->heard && srcs[i]->on_phone)
                winner = i;
        }
    }
    /* One reachable phone is enough for the user to be reachable. */
    out->reach = online ? REACH_ONLINE : offline ? REACH_OFFLINE : REACH_UNKNOWN;
    out->dnd = dnd;
    out->video = video;
    out->state = user_state_derive(known, view.act, out->reach, dnd);
    out->dir = view.act != ACT_IDLE ? view.dir : DIR_NONE;
    out->remote = show_remote && view.act != ACT_IDLE ? view.remote : NULL;
    out->source = view.act != ACT_IDLE ? winner : -1;
    out->dialog = view.dialog;
}

void combine_forget(struct combine_source *s)
{
    merge_source_clear(&s->dlg);
    s->heard = false;
    s->reach = REACH_UNKNOWN;
    s->dnd = s->on_phone = s->video = false;
}
