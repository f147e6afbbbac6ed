/* NOTIFY body -> parser -> merge -> user state -> store, per configured user. */
#include "bridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "dialoginfo.h"
#include "log.h"
#include "merge.h"
#include "metrics.h"
#include "pidf.h"
#include "reginfo.h"
#include "rlmi.h"
#include "store.h"
#include "strmap.h"
#include "strutil.h"
#include "subscription.h"

#define ERROR_LOG_QUIET_MS 60000 /* the same bad body from one source: logged once a minute */

enum pkg { PKG_DIALOG, PKG_PRESENCE, PKG_REG };

static const struct {
    const char *event, *accept;
} pkgs[] = {
    [PKG_DIALOG] = {"dialog", "application/dialog-info+xml"},
    [PKG_PRESENCE] = {"presence", "application/pidf+xml"},
    [PKG_REG] = {"reg", "application/reginfo+xml"},
};

struct buser;

/* One subscription's contribution to its user's state. */
struct bsource {
    struct buser *u;
    enum pkg pkg;
    struct subscription *sub;
    bool heard;                 /* a valid document arrived on this subscription */
    struct merge_source dlg;    /* PKG_DIALOG */
    enum phone_reach reach;     /* PKG_PRESENCE, PKG_REG */
    bool dnd, on_phone;         /* PKG_PRESENCE */
    bool reg_have_version;      /* PKG_REG */
    uint32_t reg_version;
    const char *last_err;       /* static reason last logged, for log suppression */
    int64_t last_err_ms;
    unsigned err_suppressed;
};

struct buser {
    struct bridge *b;
    char *jid;
    char *signature;            /* AORs and packages: a reload re-subscribes if it changes */
    bool show_remote;
    struct bsource *src;
    int nsrc;
    struct user_record rec;     /* last state handed to the store */
    bool stored;                /* rec was handed to the store at least once */
};

struct bridge {
    const struct offhook_config *cfg;
    struct subs_mgr *subs;
    struct store *store;
    struct strmap users;        /* jid -> struct buser* */
};

static struct metric *m_notifies, *m_errors, *m_stale, *m_users, *m_changes;
static struct bridge *collect_bridge; /* the bridge whose users the gauge counts */

void bridge_register_metrics(void)
{
    static const char *const packages[] = {"dialog", "presence", "reg", NULL};
    static const char *const states[] = {"unknown", "offline", "idle",    "dnd",
                                         "dialing", "ringing", "on_hold", "on_call", NULL};

    m_notifies = metric_new(METRIC_COUNTER, "offhook_notifies_total",
                            "NOTIFY requests received, by event package.", "package", packages);
    m_errors = metric_new(METRIC_COUNTER, "offhook_body_errors_total",
                          "NOTIFY bodies rejected (state left as it was), by reason.", "reason",
                          NULL);
    m_stale = metric_new(METRIC_COUNTER, "offhook_stale_notifies_total",
                         "NOTIFY bodies ignored because their version was not newer.", NULL,
                         NULL);
    m_users = metric_new(METRIC_GAUGE, "offhook_users", "Configured users by call state.",
                         "state", states);
    m_changes = metric_new(METRIC_COUNTER, "offhook_state_changes_total",
                           "Changes of users' visible state, by new state.", "state", states);
}

static void collect_users(void *arg)
{
    int counts[US__COUNT] = {0};
    size_t pos = 0;
    const char *k;
    void *v;

    if (!collect_bridge)
        return;
    while (strmap_next(&collect_bridge->users, &pos, &k, &v))
        counts[((struct buser *)v)->rec.state]++;
    for (int s = 0; s < US__COUNT; s++)
        metric_set(m_users, user_state_name((enum user_state)s), counts[s]);
}

/* ---- state ------------------------------------------------------------------------- */

static bool record_differs(const struct user_record *a, const struct user_record *b)
{
    return a->state != b->state || a->dir != b->dir || a->reach != b->reach ||
           a->dnd != b->dnd || strcmp(a->remote, b->remote) != 0;
}

static void recompute(struct bridge *b, struct buser *u, int64_t event_us)
{
    const struct merge_source *dsrc[CFG_MAX_AORS] = {0};
    int nd = 0;
    struct merge_view view;
    bool known = false, dnd = false, pidf_phone = false, have_dialog_pkg = false;
    bool online = false, offline = false;
    struct user_record rec = {0};

    for (int i = 0; i < u->nsrc; i++) {
        struct bsource *s = &u->src[i];
        known |= s->heard;
        if (s->pkg == PKG_DIALOG) {
            have_dialog_pkg = true;
            dsrc[nd++] = &s->dlg;
            continue;
        }
        if (!s->heard)
            continue;
        online |= s->reach == REACH_ONLINE;
        offline |= s->reach == REACH_OFFLINE;
        if (s->pkg == PKG_PRESENCE) {
            dnd |= s->dnd;
            pidf_phone |= s->on_phone;
        }
    }
    merge_view(dsrc, nd, &view);
    /* PIDF's on-the-phone counts only without dialog events, which tell more (hold). */
    if (!have_dialog_pkg && pidf_phone && view.act < ACT_ON_CALL)
        view.act = ACT_ON_CALL;
    /* One registered phone is enough for the user to be reachable. */
    rec.reach = online ? REACH_ONLINE : offline ? REACH_OFFLINE : REACH_UNKNOWN;
    rec.dnd = dnd;
    rec.state = user_state_derive(known, view.act, rec.reach, dnd);
    rec.dir = view.act != ACT_IDLE ? view.dir : DIR_NONE;
    if (u->show_remote && view.act != ACT_IDLE && view.remote)
        str_copy(rec.remote, sizeof rec.remote, view.remote);
    if (u->stored && !record_differs(&rec, &u->rec))
        return;
    rec.since_ms = u->stored && u->rec.state == rec.state ? u->rec.since_ms : event_us / 1000;
    rec.event_us = event_us;
    if (!u->stored || u->rec.state != rec.state) {
        log_info("bridge", "event=state_change user=%s from=%s to=%s dir=%s", u->jid,
                 u->stored ? user_state_name(u->rec.state) : "none",
                 user_state_name(rec.state), call_dir_name(rec.dir));
        metric_inc(m_changes, user_state_name(rec.state));
    }
    u->rec = rec;
    u->stored = true;
    store_put(b->store, u->jid, &rec);
}

/* ---- NOTIFY bodies ----------------------------------------------------------------- */

static void body_error(struct bsource *s, const char *reason)
{
    int64_t now = clock_mono_ms();

    metric_inc(m_errors, reason);
    if (s->last_err == reason && now - s->last_err_ms < ERROR_LOG_QUIET_MS) {
        s->err_suppressed++;
        return;
    }
    log_warn("bridge", "event=body_rejected user=%s aor=%s package=%s reason=\"%s\" "
                       "suppressed=%u action=state_unchanged",
             s->u->jid, subs_aor(s->sub), pkgs[s->pkg].event, reason, s->err_suppressed);
    s->last_err = reason;
    s->last_err_ms = now;
    s->err_suppressed = 0;
}

static bool content_type_is(const char *ctype, const char *want)
{
    char media[96];

    return ctype && mime_media_type(ctype, strlen(ctype), media, sizeof media) == 0 &&
           strcmp(media, want) == 0;
}

static void apply_dialog(struct bridge *b, struct bsource *s, const struct sipua_notify *n)
{
    struct dlg_doc *doc = xmalloc(sizeof *doc);
    const char *reason = NULL;

    if (dlginfo_parse(n->body, n->len, (size_t)b->cfg->sip_max_body, doc, &reason) < 0) {
        body_error(s, reason);
        goto out;
    }
    switch (merge_apply(&s->dlg, doc)) {
    case MERGE_STALE:
        metric_inc(m_stale, NULL);
        log_debug("bridge", "event=stale_notify user=%s aor=%s version=%u last=%u", s->u->jid,
                  subs_aor(s->sub), doc->version, s->dlg.version);
        goto out;
    case MERGE_GAP:
        subs_request_full_state(s->sub, "dialog-info version gap");
        break;
    case MERGE_APPLIED:
        break;
    }
    s->heard = true;
out:
    free(doc);
}

static void apply_presence(struct bridge *b, struct bsource *s, const struct sipua_notify *n)
{
    struct pidf_doc doc;
    const char *reason = NULL;

    if (pidf_parse(n->body, n->len, (size_t)b->cfg->sip_max_body, &doc, &reason) < 0) {
        body_error(s, reason);
        return;
    }
    s->reach = doc.reach;
    s->dnd = doc.dnd;
    s->on_phone = doc.on_the_phone;
    s->heard = true;
}

static void apply_reg(struct bridge *b, struct bsource *s, const struct sipua_notify *n)
{
    struct reg_doc doc;
    const char *reason = NULL;
    bool any_online = false, any = false;

    if (reginfo_parse(n->body, n->len, (size_t)b->cfg->sip_max_body, &doc, &reason) < 0) {
        body_error(s, reason);
        return;
    }
    if (s->reg_have_version && doc.version <= s->reg_version) {
        metric_inc(m_stale, NULL);
        return;
    }
    s->reg_have_version = true;
    s->reg_version = doc.version;
    /* A reg subscription is for one AOR; a notifier may still list others (aliases). */
    for (int i = 0; i < doc.nregs; i++) {
        any = true;
        any_online |= reg_entry_online(&doc.regs[i]);
    }
    if (any)
        s->reach = any_online ? REACH_ONLINE : REACH_OFFLINE;
    else if (doc.full)
        s->reach = REACH_OFFLINE; /* full state with no registration: nothing bound */
    s->heard = true;
}

static void on_notify(void *owner, struct subscription *sub, const struct sipua_notify *n)
{
    struct bsource *s = owner;
    struct buser *u = s->u;
    struct bridge *b = u->b;

    metric_inc(m_notifies, pkgs[s->pkg].event);
    if (!n->body) {
        /* Kamailio's first NOTIFY carries no body: nothing known yet, nothing wrong. */
        log_debug("bridge", "event=empty_notify user=%s aor=%s", u->jid, subs_aor(sub));
        return;
    }
    if (!content_type_is(n->content_type, pkgs[s->pkg].accept)) {
        body_error(s, "unexpected content type");
        return;
    }
    switch (s->pkg) {
    case PKG_DIALOG:
        apply_dialog(b, s, n);
        break;
    case PKG_PRESENCE:
        apply_presence(b, s, n);
        break;
    case PKG_REG:
        apply_reg(b, s, n);
        break;
    }
    recompute(b, u, n->received_us);
}

static void on_restart(void *owner, struct subscription *sub)
{
    struct bsource *s = owner;

    merge_source_restart(&s->dlg);
    s->reg_have_version = false;
}

static const struct subs_owner_ops owner_ops = {
    .on_notify = on_notify,
    .on_restart = on_restart,
};

/* ---- users ------------------------------------------------------------------------- */

static char *signature(const struct offhook_config *cfg, const struct cfg_user *cu)
{
    size_t len = 64;
    char *sig;

    for (int i = 0; i < cu->naors; i++)
        len += strlen(cu->aors[i]) + 1;
    sig = xmalloc(len);
    snprintf(sig, len, "%d%d%d", cfg->sip_event_dialog, cfg->sip_event_presence,
             cfg->sip_event_reg);
    for (int i = 0; i < cu->naors; i++) {
        strcat(sig, " ");
        strcat(sig, cu->aors[i]);
    }
    return sig;
}

static struct buser *user_new(struct bridge *b, const struct cfg_user *cu)
{
    const struct offhook_config *cfg = b->cfg;
    struct buser *u = xcalloc(1, sizeof *u);
    bool want[3] = {cfg->sip_event_dialog, cfg->sip_event_presence, cfg->sip_event_reg};
    int npkg = want[0] + want[1] + want[2];

    u->b = b;
    u->jid = xstrdup(cu->jid);
    u->signature = signature(cfg, cu);
    u->show_remote = config_user_shows_remote(cfg, cu);
    u->src = xcalloc((size_t)(cu->naors * npkg), sizeof *u->src);
    for (int a = 0; a < cu->naors; a++) {
        for (int p = 0; p < 3; p++) {
            struct bsource *s;
            if (!want[p])
                continue;
            s = &u->src[u->nsrc++];
            s->u = u;
            s->pkg = (enum pkg)p;
            s->sub = subs_new(b->subs, cu->aors[a], pkgs[p].event, pkgs[p].accept, s);
        }
    }
    strmap_put(&b->users, u->jid, u);
    return u;
}

static void user_free(struct bridge *b, struct buser *u, bool unsubscribe)
{
    strmap_del(&b->users, u->jid);
    for (int i = 0; i < u->nsrc; i++) {
        subs_free(u->src[i].sub, unsubscribe);
        merge_source_clear(&u->src[i].dlg);
    }
    free(u->src);
    free(u->signature);
    free(u->jid);
    free(u);
}

struct bridge *bridge_new(struct event_base *base, const struct offhook_config *cfg,
                          struct sipua *ua, struct store *store)
{
    struct bridge *b = xcalloc(1, sizeof *b);

    b->cfg = cfg;
    b->store = store;
    b->subs = subs_mgr_new(base, ua, cfg->sip_expires, (double)cfg->sip_subscribe_rate,
                           &owner_ops);
    strmap_init(&b->users);
    collect_bridge = b;
    metrics_add_collector(collect_users, NULL);
    for (size_t i = 0; i < cfg->nusers; i++)
        user_new(b, &cfg->users[i]);
    log_info("bridge", "event=started users=%zu subscriptions=%d subscribe_rate=%ld", cfg->nusers,
             subs_mgr_total(b->subs), cfg->sip_subscribe_rate);
    return b;
}

void bridge_apply_config(struct bridge *b, const struct offhook_config *cfg)
{
    struct buser **old = xmalloc((b->users.count + 1) * sizeof *old);
    size_t nold = 0, pos = 0;
    int added = 0, removed = 0, resubscribed = 0, kept = 0;
    const char *k;
    void *v;

    subs_mgr_set_expires(b->subs, cfg->sip_expires);
    subs_mgr_set_rate(b->subs, (double)cfg->sip_subscribe_rate);
    while (strmap_next(&b->users, &pos, &k, &v))
        old[nold++] = v;
    for (size_t i = 0; i < nold; i++) {
        struct buser *u = old[i];
        const struct cfg_user *cu = config_user_by_jid(cfg, u->jid);
        char *sig = cu ? signature(cfg, cu) : NULL;

        if (!cu) {
            log_info("bridge", "event=user_removed user=%s", u->jid);
            store_remove(b->store, u->jid);
            user_free(b, u, true);
            removed++;
        } else if (strcmp(sig, u->signature) != 0) {
            log_info("bridge", "event=user_changed user=%s action=resubscribe", u->jid);
            user_free(b, u, true);
            resubscribed++;
        } else {
            bool show = config_user_shows_remote(cfg, cu);
            kept++;
            if (show != u->show_remote) {
                u->show_remote = show;
                recompute(b, u, clock_wall_us());
            }
        }
        free(sig);
    }
    free(old);
    b->cfg = cfg;
    for (size_t i = 0; i < cfg->nusers; i++) {
        struct buser *u;
        if (strmap_get(&b->users, cfg->users[i].jid))
            continue;
        u = user_new(b, &cfg->users[i]);
        added++; /* new, or re-created after a change (subtracted below) */
        log_debug("bridge", "event=user_subscribing user=%s subscriptions=%d", u->jid, u->nsrc);
    }
    added -= resubscribed;
    log_notice("bridge", "event=reloaded users=%zu added=%d removed=%d resubscribed=%d "
                         "unchanged=%d",
               cfg->nusers, added, removed, resubscribed, kept);
}

void bridge_free(struct bridge *b, bool unsubscribe)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!b)
        return;
    /* strmap_del inside iteration only tombstones slots: iteration stays valid. */
    while (strmap_next(&b->users, &pos, &k, &v))
        user_free(b, v, unsubscribe);
    strmap_free(&b->users);
    subs_mgr_free(b->subs);
    if (collect_bridge == b)
        collect_bridge = NULL;
    free(b);
}

struct subs_mgr *bridge_subs(const struct bridge *b)
{
    return b->subs;
}

int bridge_user_count(const struct bridge *b)
{
    return (int)b->users.count;
}
