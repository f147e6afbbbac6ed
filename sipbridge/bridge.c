/* Users and sources: NOTIFY body -> parser -> what the source said -> combine -> user
 * state -> store, per configured user; the reload diff, user by user. */
#include "bridge.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "bodyerr.h"
#include "config.h"
#include "combine.h"
#include "dialoginfo.h"
#include "docver.h"
#include "log.h"
#include "merge.h"
#include "metrics.h"
#include "mime.h"
#include "pidf.h"
#include "ratelimit.h"
#include "reginfo.h"
#include "rlsub.h"
#include "sipuri.h"
#include "store.h"
#include "strmap.h"
#include "strutil.h"
#include "subscription.h"
#include "timerq.h"

#define ERROR_LOG_QUIET_MS 60000 /* the same bad body from one source: logged once a minute */
#define COALESCE_MAX_FACTOR 4    /* a flapping phone still publishes every 4 windows */
#define LOST_BATCH_MS 1000       /* users lost within this share one warning line */
#define LOST_EXAMPLES 3
#define HANDOVER_SETTLE_MS 3000  /* a user handed over to us is first written once every
                                  * source has spoken, or this long after the first did */

static const struct {
    const char *event, *accept;
} pkgs[] = {
    [COMBINE_DIALOG] = {"dialog", DLGINFO_TYPE},
    [COMBINE_PRESENCE] = {"presence", PIDF_TYPE},
    [COMBINE_REG] = {"reg", REGINFO_TYPE},
};

_Static_assert(CFG_MAX_AORS <= COMBINE_MAX_PHONES, "combine.c must see every phone");
_Static_assert(MERGE_PARTY_MAX < sizeof((struct user_record *)0)->remote,
               "the record keeps a dialog's whole remote party");

struct buser;
struct bridge;

/* One AOR's contribution to its user's state for one event package: where it comes from
 * (its own subscription or the resource list), what it said, and the bookkeeping of its
 * bodies (versions, rejected-body log suppression). */
struct bsource {
    struct buser *u;
    const char *aor;            /* in its user's allocation (user_new) */
    struct subscription *sub;   /* NULL when the resource list serves it */
    struct combine_source said; /* its package, its phone, what it said */
    struct docver reg_ver;      /* COMBINE_REG: reginfo versions (dialogs: said.dlg.ver) */
    struct berr *err;           /* what its bodies' log lines were, from the first one on
                                 * (a source that never errs costs nothing here) */
    struct blm *lm;             /* in resource-list mode, the dialog source as the list
                                 * sees it (owned); NULL otherwise: 48 bytes that most
                                 * of 100,000 sources never use */
};

/* A dialog source's membership of the resource list, and the way back to the source. */
struct blm {
    struct rlsub_member m;
    struct bsource *s;
};

/* Log suppression for one source's bodies. */
struct berr {
    const char *last_err;       /* static reason last logged, for log suppression */
    int64_t last_err_ms;
    unsigned err_suppressed;
    struct ratelimit_gate log_gate; /* every line its bodies cause, whatever the reason */
};

/* Coalescing: the newest state of a user, held back until it has lasted a window. */
struct bpending {
    struct buser *u;
    struct store_rec rec;       /* owned */
    int64_t since;              /* mono ms of the first change held back */
    struct tq_timer t;
};

/* Kept small (it exists 100,000 times): the AORs and packages a reload compares are the
 * sources' own, the record is the compact one, a held-back change is allocated. One
 * allocation holds the user, its sources and their AORs (user_new): a reload that changes
 * a user's sources makes the user again. */
struct buser {
    struct bridge *b;
    const char *jid;            /* in its allocation (user_new): the map's key */
    struct bpending *pend;      /* a change held back (coalescing), or NULL */
    struct store_rec rec;       /* last state handed to the store (remote owned) */
    uint8_t nsrc;
    bool show_remote : 1;
    bool stored : 1;            /* rec was handed to the store at least once */
    bool moving : 1;            /* handed over to another sipbridge: writes do not claim */
    bool claim_wait : 1;        /* handed over to us: first write waits until settled */
    bool doomed : 1;            /* released: freed at the next release pass */
    bool put_before : 1;        /* rec is the state last handed to the store before a
                                 * reload re-made the user (stored false since): the
                                 * store's checks still use it (store_owner_ops.get) */
    unsigned lost_round;        /* the lost batch it was last counted in */
    int64_t acquired_ms;        /* mono ms it was handed over (claim_wait) */
    struct log_trace trace;     /* offhookctl trace: its decisions go to the log */
    /* nsrc sources follow in the same allocation (user_src), then the JID and the AORs:
     * the store and the membership keep no record of their own of a user in the common
     * case (store_owner_ops, member.c), so this is the user's one copy of its JID. */
};

/* u's sources: right after it in its allocation (no pointer kept: 8 bytes a user). */
static inline struct bsource *user_src(const struct buser *u)
{
    return (struct bsource *)(uintptr_t)(u + 1);
}

struct bridge {
    struct event_base *base;
    struct timerq *tq;
    const struct offhook_config *cfg;
    struct subs_mgr *subs;
    struct store *store;
    struct strmap users;        /* jid -> struct buser* */
    /* Users whose state went unknown within LOST_BATCH_MS: a notifier gone silent loses
     * them all at once, and gets one warning line for them, not one per user. */
    struct {
        unsigned round;         /* batch number; 0 = none yet */
        int users;
        long down_s;
        char examples[LOST_EXAMPLES * 64 + 8];
        struct event *flush;
    } lost;
    struct rlsub *list;         /* every user's dialog source in resource-list mode while
                                 * this sipbridge holds users, or NULL */
    struct event *release_ev;   /* frees the released users (and starts a new list) in
                                 * one pass after the loop turn */
    struct event *settle_ev;    /* every second while users wait for their first write */
    int nwaiting;               /* users with claim_wait */
    bool list_start;            /* the list was made this turn: subscribe it at the pass */
};

static struct metric *m_errors, *m_stale, *m_users, *m_changes, *m_lost, *m_anomalies;
static struct bridge *collect_bridge; /* the bridge whose users the gauge counts */

void bridge_register_metrics(void)
{
    static const char *const states[] = {"unknown", "offline", "idle",    "dnd",
                                         "dialing", "ringing", "on_hold", "on_call", NULL};

    m_errors = metric_new(METRIC_COUNTER, "offhook_body_errors_total",
                          "NOTIFY bodies rejected (state left as it was), by cause (the "
                          "parser's words are in the log line).",
                          "reason", bodyerr_causes);
    m_stale = metric_new(METRIC_COUNTER, "offhook_stale_notifies_total",
                         "NOTIFY bodies ignored because their version was not newer.", NULL,
                         NULL);
    m_users = metric_new(METRIC_GAUGE, "offhook_users", "Configured users by call state.",
                         "state", states);
    m_changes = metric_new(METRIC_COUNTER, "offhook_state_changes_total",
                           "Changes of users' visible state, by new state.", "state", states);
    m_anomalies = metric_new(METRIC_COUNTER, "offhook_version_anomalies_total",
                             "Event documents (dialog, reg, resource list) applied although "
                             "their version was odd: jumped implausibly far ahead, or a full "
                             "state older than the last (rewound).",
                             "kind", (const char *const[]){"jumped", "rewound", NULL});
    m_lost = metric_new(METRIC_COUNTER, "offhook_state_lost_total",
                        "Times a user's state was declared unknown because its subscription "
                        "stayed down longer than [sip] stale_after.",
                        NULL, NULL);
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

static void write_record(struct bridge *b, struct buser *u, const struct store_rec *r)
{
    struct store_rec rec = *r;

    if (u->stored && store_rec_same(&rec, &u->rec))
        return;
    rec.since_ms = u->stored && u->rec.state == rec.state ? u->rec.since_ms
                                                          : rec.event_us / 1000;
    if (!u->stored || u->rec.state != rec.state) {
        log_info("bridge", "event=state_change user=%s from=%s to=%s dir=%s", log_q(u->jid),
                 u->stored ? user_state_name((enum user_state)u->rec.state) : "none",
                 user_state_name((enum user_state)rec.state),
                 call_dir_name((enum call_dir)rec.dir));
        metric_inc(m_changes, user_state_name((enum user_state)rec.state));
    }
    store_rec_copy(&u->rec, &rec);
    u->stored = true;
    u->put_before = false;
    store_put(b->store, u->jid, &u->rec, !u->moving);
}

static void pending_free(struct bridge *b, struct buser *u)
{
    if (!u->pend)
        return;
    tq_cancel(b->tq, &u->pend->t);
    store_rec_clear(&u->pend->rec);
    free(u->pend);
    u->pend = NULL;
}

static void on_coalesce(struct tq_timer *t)
{
    struct bpending *p = (struct bpending *)((char *)t - offsetof(struct bpending, t));
    struct buser *u = p->u;
    struct store_rec rec = p->rec;

    p->rec.remote = NULL; /* moved into rec */
    pending_free(u->b, u);
    write_record(u->b, u, &rec);
    store_rec_clear(&rec);
}

/* "id:state:dir[:held]" of each dialog a source holds, for traces; never the other party. */
static void dialogs_text(const struct merge_source *m, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (int i = 0; i < m->ndialogs && used + 1 < len; i++) {
        const struct merge_dialog *d = &m->dialogs[i];
        int w = snprintf(out + used, len - used, "%s%.40s:%s:%s%s", i ? "," : "", d->id,
                         dlg_state_name(d->state), call_dir_name(d->dir), d->held ? ":held" : "");
        if (w < 0 || (size_t)w >= len - used) {
            out[used] = '\0';
            break;
        }
        used += (size_t)w;
    }
}

/* The combined view of a traced user and what decided it. */
static void trace_view(struct buser *u, const struct combine_view *v, bool coalescing)
{
    const struct bsource *win = v->source >= 0 ? &user_src(u)[v->source] : NULL;

    log_trace(&u->trace, "bridge", "event=trace_state user=%s state=%s dir=%s reach=%s dnd=%s "
                                   "decided_by=%s%s%s dialog=%s%s",
              u->jid, user_state_name(v->state), call_dir_name(v->dir),
              phone_reach_name(v->reach), v->dnd ? "yes" : "no",
              win ? pkgs[win->said.pkg].event : "-", win ? ":" : "", win ? log_q(win->aor) : "",
              v->dialog ? log_q(v->dialog->id) : "-", coalescing ? " coalescing=yes" : "");
}

/* Whether a user handed over to us knows enough to be written: every source has spoken,
 * or one has and HANDOVER_SETTLE_MS have passed (a source may never speak: a phone the
 * PBX refuses to report). */
static bool settled(const struct buser *u)
{
    int heard = 0;

    for (int i = 0; i < u->nsrc; i++)
        heard += user_src(u)[i].said.heard;
    return heard == u->nsrc ||
           (heard > 0 && clock_mono_ms() - u->acquired_ms >= HANDOVER_SETTLE_MS);
}

/* Derives the user's visible state from all their sources and writes it if it changed. */
static void recompute(struct bridge *b, struct buser *u, int64_t event_us)
{
    const struct combine_source *said[CFG_MAX_AORS * 3];
    struct combine_view view;
    struct store_rec rec = {0};
    char remote[STORE_REMOTE_MAX];
    long window = b->cfg->sip_coalesce_ms;

    if (u->claim_wait) {
        /* Its previous owner still writes it: this member's first write (which takes it
         * over) waits until it knows as much as that one (make-before-break). */
        if (!settled(u))
            return;
        u->claim_wait = false;
        b->nwaiting--;
    }
    for (int i = 0; i < u->nsrc; i++)
        said[i] = &user_src(u)[i].said;
    combine_user(said, u->nsrc, u->show_remote, &view);
    rec.state = (uint8_t)view.state;
    rec.dir = (uint8_t)view.dir;
    rec.reach = (uint8_t)view.reach;
    rec.dnd = view.dnd;
    rec.video = view.video;
    if (view.remote) {
        str_copy_utf8(remote, sizeof remote, view.remote); /* whole characters */
        rec.remote = remote; /* on the stack: copied by whoever keeps it */
    }
    rec.event_us = event_us;
    if (log_traced(&u->trace) || LOG_DEBUG <= log_level)
        trace_view(u, &view, window > 0);
    if (window <= 0) {
        write_record(b, u, &rec);
        return;
    }
    /* Coalescing: hold the change until it has lasted a window (or, if the phone keeps
     * changing, until COALESCE_MAX_FACTOR windows have passed); the latest always wins. */
    {
        int64_t now = clock_mono_ms(), due;

        if (!u->pend && u->stored && store_rec_same(&rec, &u->rec))
            return;
        if (!u->pend) {
            u->pend = xcalloc(1, sizeof *u->pend);
            u->pend->u = u;
            u->pend->since = now;
        }
        store_rec_copy(&u->pend->rec, &rec);
        due = now + window;
        if (due > u->pend->since + window * COALESCE_MAX_FACTOR)
            due = u->pend->since + window * COALESCE_MAX_FACTOR;
        tq_arm_at(b->tq, &u->pend->t, on_coalesce, due);
    }
}

/* ---- NOTIFY bodies ----------------------------------------------------------------- */

/* A line about s caused by its notifier's bodies may be logged now (the source's gate of
 * ratelimit_peer_log); *held gets how many were held back before it. */
static struct berr *err_of(struct bsource *s)
{
    if (!s->err)
        s->err = xcalloc(1, sizeof *s->err);
    return s->err;
}

static bool peer_log_ok(struct bsource *s, uint64_t *held)
{
    return ratelimit_gate_pass(&ratelimit_peer_log, &err_of(s)->log_gate, clock_mono_ms(),
                               held);
}

/* The same reason from one source is logged once a minute, and every reason together
 * through the source's gate: bodies alternating between two faults log no more. */
static void body_error(struct bsource *s, const char *reason)
{
    int64_t now = clock_mono_ms();
    uint64_t held = 0;

    metric_inc(m_errors, bodyerr_cause(reason));
    struct berr *e = err_of(s);

    if ((e->last_err == reason && now - e->last_err_ms < ERROR_LOG_QUIET_MS) ||
        !peer_log_ok(s, &held)) {
        e->err_suppressed++;
        return;
    }
    log_warn("bridge", "event=body_rejected user=%s aor=%s package=%s reason=%s "
                       "suppressed=%u action=state_unchanged",
             log_q(s->u->jid), log_q(s->aor), pkgs[s->said.pkg].event, log_q(reason),
             e->err_suppressed);
    e->last_err = reason;
    e->last_err_ms = now;
    e->err_suppressed = 0;
}

/* A body about another user than s subscribed to (a PBX bug or a forgery): refused,
 * counted as wrong_entity, logged with the entity it named through the source's gate. */
static bool entity_ok(struct bsource *s, const char *entity)
{
    uint64_t held = 0;

    if (!entity[0] || sipuri_same_user(entity, s->aor))
        return true; /* no entity (RFC 4235 requires one; old PBXes omit it): nothing to
                      * compare */
    metric_inc(m_errors, bodyerr_cause(BODYERR_WRONG_ENTITY));
    if (peer_log_ok(s, &held))
        log_warn("bridge", "event=body_rejected user=%s aor=%s package=%s reason=\"%s\" "
                           "entity=%s suppressed=%llu action=state_unchanged",
                 log_q(s->u->jid), log_q(s->aor), pkgs[s->said.pkg].event, BODYERR_WRONG_ENTITY,
                 log_q(entity), (unsigned long long)held);
    return false;
}

/* A document applied although its version was odd (docver.h): counted, and logged
 * through the source's gate. */
static void version_anomaly(struct bsource *s, enum docver_anomaly a, uint32_t version,
                            uint32_t last)
{
    uint64_t held = 0;

    if (a == DOCVER_NORMAL)
        return;
    metric_inc(m_anomalies, docver_anomaly_name(a));
    if (peer_log_ok(s, &held))
        log_warn("bridge", "event=version_%s user=%s aor=%s package=%s version=%u last=%u "
                           "action=applied suppressed=%llu",
                 docver_anomaly_name(a), log_q(s->u->jid), log_q(s->aor),
                 pkgs[s->said.pkg].event, version, last, (unsigned long long)held);
}

/* What a body asks of its subscription once applied (or not). */
enum need { NEED_NOTHING, NEED_FULL_STATE, NEED_RESYNC };

/* Counts and logs (at debug) a document ignored as not newer. */
static void stale(struct bsource *s, uint32_t version, uint32_t last)
{
    metric_inc(m_stale, NULL);
    log_debug("bridge", "event=stale_notify user=%s aor=%s package=%s version=%u last=%u",
              log_q(s->u->jid), log_q(s->aor), pkgs[s->said.pkg].event, version, last);
}

/* Applies a dialog-info body; says whether its subscription needs a fresh full state or,
 * its versions disagreeing with ours, a new dialog. */
static enum need apply_dialog(struct bridge *b, struct bsource *s, const char *body,
                              size_t len)
{
    /* 12 KiB, once per NOTIFY: kept, not allocated each time (one thread, no reentry). */
    static struct dlg_doc docbuf;
    struct dlg_doc *doc = &docbuf;
    const char *reason = NULL;
    uint32_t last = s->said.dlg.ver.last;
    enum need need = NEED_NOTHING;
    uint64_t held = 0;

    if (dlginfo_parse(body, len, (size_t)b->cfg->sip_max_body, doc, &reason) < 0) {
        body_error(s, reason);
        goto out;
    }
    if (!entity_ok(s, doc->entity))
        goto out;
    switch (merge_apply(&s->said.dlg, doc)) {
    case MERGE_STALE:
        stale(s, doc->version, last);
        goto out;
    case MERGE_RESYNC:
        stale(s, doc->version, last);
        need = NEED_RESYNC;
        goto out;
    case MERGE_GAP:
        need = NEED_FULL_STATE;
        break;
    case MERGE_OVERFLOW:
        /* Partial updates kept adding dialogs the PBX never ended: some were dropped.
         * Full state replaces the whole set (up to DLG_MAX_DIALOGS), so ask for it. */
        metric_inc(m_errors, bodyerr_cause("too many dialogs"));
        if (peer_log_ok(s, &held))
            log_warn("bridge", "event=dialogs_dropped user=%s aor=%s max=%d "
                               "action=request_full_state suppressed=%llu",
                     log_q(s->u->jid), log_q(s->aor), MERGE_MAX_DIALOGS, (unsigned long long)held);
        need = NEED_FULL_STATE;
        break;
    case MERGE_APPLIED:
        break;
    }
    version_anomaly(s, s->said.dlg.anomaly, doc->version, last);
    s->said.heard = true;
out:
    return need;
}

static void apply_presence(struct bridge *b, struct bsource *s, const char *body, size_t len)
{
    struct pidf_doc doc;
    const char *reason = NULL;

    if (pidf_parse(body, len, (size_t)b->cfg->sip_max_body, &doc, &reason) < 0) {
        body_error(s, reason);
        return;
    }
    if (!entity_ok(s, doc.entity))
        return;
    s->said.reach = doc.reach;
    s->said.dnd = doc.dnd;
    s->said.on_phone = doc.on_the_phone;
    s->said.video = doc.video;
    s->said.heard = true;
}

static enum need apply_reg(struct bridge *b, struct bsource *s, const char *body, size_t len)
{
    struct reg_doc doc;
    const char *reason = NULL;
    uint32_t last = s->reg_ver.last;
    enum docver_anomaly anomaly;
    enum need need = NEED_NOTHING;

    if (reginfo_parse(body, len, (size_t)b->cfg->sip_max_body, &doc, &reason) < 0) {
        body_error(s, reason);
        return NEED_NOTHING;
    }
    switch (docver_check(&s->reg_ver, doc.version, doc.full, &anomaly)) {
    case DOCVER_STALE:
        stale(s, doc.version, last);
        return NEED_NOTHING;
    case DOCVER_RESYNC:
        stale(s, doc.version, last);
        return NEED_RESYNC;
    case DOCVER_GAP: /* RFC 3680, as RFC 4235: partial documents missed, ask for full state */
        need = NEED_FULL_STATE;
        break;
    case DOCVER_APPLY:
        break;
    }
    version_anomaly(s, anomaly, doc.version, last);
    s->said.reach = reg_doc_reach(&doc, s->said.reach);
    s->said.heard = true;
    return need;
}

/* What a traced user's source says after a body. */
static void trace_source(const struct bsource *s)
{
    char dialogs[1024];

    if (!log_traced(&s->u->trace) && LOG_DEBUG > log_level)
        return;
    dialogs_text(&s->said.dlg, dialogs, sizeof dialogs);
    log_trace(&s->u->trace, "bridge", "event=trace_source user=%s aor=%s package=%s heard=%s "
                                      "version=%u reach=%s dnd=%s on_phone=%s dialogs=%s",
              s->u->jid, log_q(s->aor), pkgs[s->said.pkg].event, s->said.heard ? "yes" : "no",
              s->said.pkg == COMBINE_REG ? s->reg_ver.last : s->said.dlg.ver.last,
              phone_reach_name(s->said.reach), s->said.dnd ? "yes" : "no",
              s->said.on_phone ? "yes" : "no", log_q(dialogs));
}

/* ---- subscription callbacks -------------------------------------------------------- */

static void on_notify(void *owner, struct subscription *sub, const struct sipua_notify *n)
{
    struct bsource *s = owner;
    struct buser *u = s->u;
    struct bridge *b = u->b;
    enum need need = NEED_NOTHING;

    if (!n->body) {
        /* Kamailio's first NOTIFY carries no body: nothing known yet, nothing wrong. */
        log_debug("bridge", "event=empty_notify user=%s aor=%s", log_q(u->jid), log_q(s->aor));
        return;
    }
    if (!mime_is(n->content_type, n->content_type ? strlen(n->content_type) : 0,
                 pkgs[s->said.pkg].accept)) {
        body_error(s, "unexpected content type");
        return;
    }
    switch (s->said.pkg) {
    case COMBINE_DIALOG:
        need = apply_dialog(b, s, n->body, n->len);
        break;
    case COMBINE_PRESENCE:
        apply_presence(b, s, n->body, n->len);
        break;
    case COMBINE_REG:
        need = apply_reg(b, s, n->body, n->len);
        break;
    }
    trace_source(s);
    recompute(b, u, n->received_us);
    if (need == NEED_FULL_STATE)
        subs_request_full_state(sub, s->said.pkg == COMBINE_DIALOG
                                         ? "dialog-info version gap or too many dialogs"
                                         : "reginfo version gap");
    else if (need == NEED_RESYNC)
        subs_resync(sub, "document versions stale again: the notifier counts from elsewhere");
}

static void on_restart(void *owner, struct subscription *sub)
{
    struct bsource *s = owner;

    merge_source_restart(&s->said.dlg);
    docver_restart(&s->reg_ver);
}

static void on_state(void *owner, struct subscription *sub, enum sub_state st)
{
    struct bsource *s = owner;

    store_sub_state(s->u->b->store, s->u->jid, pkgs[s->said.pkg].event, s->aor,
                    sub_state_name(st));
}

static void on_lost_flush(evutil_socket_t fd, short what, void *arg)
{
    struct bridge *b = arg;

    log_warn("bridge", "event=state_lost users=%d down_s=%ld examples=%s "
                       "reason=\"subscriptions not re-established within [sip] stale_after\" "
                       "note=\"their phones show unknown until the PBX answers again\"",
             b->lost.users, b->lost.down_s, log_q(b->lost.examples));
    b->lost.users = 0;
    b->lost.examples[0] = '\0';
}

/* u's state went unknown: counted in the batch of warnings under way (one starts if none
 * is); each user once per batch, a few named. */
static void lost_note(struct bridge *b, struct buser *u, long down_s)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = LOST_BATCH_MS * 1000};

    if (!evtimer_pending(b->lost.flush, NULL)) {
        b->lost.round++;
        if (b->lost.round == 0)
            b->lost.round = 1;
        evtimer_add(b->lost.flush, &tv);
    }
    if (u->lost_round == b->lost.round)
        return;
    u->lost_round = b->lost.round;
    if (b->lost.users++ < LOST_EXAMPLES) {
        size_t used = strlen(b->lost.examples);
        snprintf(b->lost.examples + used, sizeof b->lost.examples - used, "%s%.63s",
                 used ? "," : "", u->jid);
    }
    b->lost.down_s = down_s;
}

static void on_stale(void *owner, struct subscription *sub, long down_s)
{
    struct bsource *s = owner;
    struct buser *u = s->u;

    if (!s->said.heard)
        return;
    metric_inc(m_lost, NULL);
    /* Per user at info: at 10,000 users one per user would be a flood at warning. */
    log_info("bridge", "event=state_lost user=%s aor=%s package=%s down_s=%ld "
                       "reason=\"subscription not re-established\"",
             log_q(u->jid), log_q(s->aor), pkgs[s->said.pkg].event, down_s);
    lost_note(u->b, u, down_s);
    combine_forget(&s->said);
    recompute(u->b, u, clock_wall_us());
}

static int source_users(void *owner, const void **key)
{
    *key = ((struct bsource *)owner)->u;
    return 1;
}

static const struct subs_owner_ops owner_ops = {
    .on_notify = on_notify,
    .on_restart = on_restart,
    .on_state = on_state,
    .on_stale = on_stale,
    .users = source_users,
};

/* ---- resource-list callbacks (rlsub.c) --------------------------------------------- */

#define OF_MEMBER(mem) (((struct blm *)((char *)(mem) - offsetof(struct blm, m)))->s)

static bool on_list_resource(void *arg, struct rlsub_member *m, bool terminated,
                             const char *body, size_t len, int64_t received_us)
{
    struct bridge *b = arg;
    struct bsource *s = OF_MEMBER(m);
    enum need need = NEED_NOTHING;

    if (terminated)
        combine_forget(&s->said);
    else if (body)
        need = apply_dialog(b, s, body, len);
    trace_source(s);
    recompute(b, s->u, received_us);
    /* Within a list, full state (which carries every resource's full state, applied
     * whatever its version) heals a resource's versions as well as a new dialog would. */
    return need == NEED_NOTHING;
}

static void on_list_rejected(void *arg, struct rlsub_member *m, const char *reason)
{
    if (m)
        body_error(OF_MEMBER(m), reason);
    else
        metric_inc(m_errors, bodyerr_cause(reason));
}

static void on_list_outdated(void *arg)
{
    metric_inc(m_stale, NULL);
}

static void on_list_version_anomaly(void *arg, enum docver_anomaly a)
{
    metric_inc(m_anomalies, docver_anomaly_name(a));
}

static void on_list_lost(void *arg, struct rlsub_member *m, bool stale, int64_t when_us)
{
    struct bsource *s = OF_MEMBER(m);

    if (!s->said.heard)
        return;
    if (stale)
        metric_inc(m_lost, NULL);
    combine_forget(&s->said);
    recompute(arg, s->u, when_us);
}

static void on_list_restart(void *arg, struct rlsub_member *m)
{
    merge_source_restart(&OF_MEMBER(m)->said.dlg);
}

static void on_list_state(void *arg, struct rlsub_member *m, const char *state)
{
    struct bridge *b = arg;
    struct bsource *s = OF_MEMBER(m);

    store_sub_state(b->store, s->u->jid, pkgs[COMBINE_DIALOG].event, s->aor, state);
}

static const struct rlsub_ops list_ops = {
    .on_resource = on_list_resource,
    .on_rejected = on_list_rejected,
    .on_outdated = on_list_outdated,
    .on_version_anomaly = on_list_version_anomaly,
    .on_lost = on_list_lost,
    .on_restart = on_list_restart,
    .on_state = on_list_state,
};

/* Redis is back: rewrite every subscription's state for offhookctl. */
static void on_store_up(void *arg)
{
    struct bridge *b = arg;
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&b->users, &pos, &k, &v)) {
        struct buser *u = v;
        for (int i = 0; i < u->nsrc; i++) {
            const struct bsource *s = &user_src(u)[i];
            if (s->sub)
                store_sub_state(b->store, u->jid, pkgs[s->said.pkg].event, s->aor,
                                sub_state_name(subs_state(s->sub)));
        }
    }
    if (b->list)
        rlsub_report_state(b->list);
}

/* The store's look at the users' records (store_owner_ops). */
static void owner_each(void *arg, void (*fn)(void *fn_arg, const char *jid), void *fn_arg)
{
    struct bridge *b = arg;
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&b->users, &pos, &k, &v))
        fn(fn_arg, k);
}

static bool owner_get(void *arg, const char *jid, const struct store_rec **rec, bool *claim)
{
    struct bridge *b = arg;
    struct buser *u = strmap_get(&b->users, jid);

    if (!u || !(u->stored || u->put_before))
        return false;
    *rec = &u->rec;
    *claim = !u->moving;
    return true;
}

static const struct store_owner_ops store_owner = {.each = owner_each, .get = owner_get};

/* ---- users ------------------------------------------------------------------------- */

/* A list NOTIFY carries every user's document: it may be 64 times one body's limit. */
static size_t list_max_body(const struct offhook_config *cfg)
{
    return (size_t)cfg->sip_max_body * 64;
}

static void wanted_packages(const struct offhook_config *cfg, bool want[3])
{
    want[COMBINE_DIALOG] = cfg->sip_event_dialog;
    want[COMBINE_PRESENCE] = cfg->sip_event_presence;
    want[COMBINE_REG] = cfg->sip_event_reg;
}

/* Whether cu under cfg has the sources u has, in the same order: its AORs, each with the
 * packages cfg subscribes (a reload re-subscribes the user otherwise). */
static bool same_sources(const struct offhook_config *cfg, const struct cfg_user *cu,
                         const struct buser *u)
{
    bool want[3];
    int k = 0;

    wanted_packages(cfg, want);
    for (int a = 0; a < cu->naors; a++) {
        for (int p = 0; p < 3; p++) {
            if (!want[p])
                continue;
            if (k >= u->nsrc || user_src(u)[k].said.pkg != (enum combine_pkg)p ||
                user_src(u)[k].said.phone != a || strcmp(user_src(u)[k].aor, cu->aors[a]) != 0)
                return false;
            k++;
        }
    }
    return k == u->nsrc;
}

static struct buser *user_new(struct bridge *b, const struct cfg_user *cu)
{
    const struct offhook_config *cfg = b->cfg;
    struct buser *u;
    bool want[3];
    int npkg;
    size_t nsrc, size, aors = 0, jid_len = strlen(cu->jid) + 1;
    char *at;

    wanted_packages(cfg, want);
    npkg = want[0] + want[1] + want[2];
    nsrc = (size_t)(cu->naors * npkg);
    for (int a = 0; a < cu->naors; a++)
        aors += strlen(cu->aors[a]) + 1;
    _Static_assert(sizeof(struct buser) % _Alignof(struct bsource) == 0,
                   "the sources follow the user in its allocation");
    size = sizeof *u + nsrc * sizeof(struct bsource);
    u = xcalloc(1, size + jid_len + aors);
    at = (char *)u + size;
    u->b = b;
    memcpy(at, cu->jid, jid_len);
    u->jid = at;
    at += jid_len;
    u->show_remote = config_user_shows_remote(cfg, cu);
    strmap_put(&b->users, u->jid, u);
    for (int a = 0; a < cu->naors; a++) {
        for (int p = 0; p < 3; p++) {
            struct bsource *s;
            if (!want[p])
                continue;
            s = &user_src(u)[u->nsrc++];
            s->u = u;
            s->said.pkg = (enum combine_pkg)p;
            s->said.phone = a;
            if (!s->aor) {
                /* One copy per AOR, shared by its packages' sources (they are adjacent). */
                size_t n = strlen(cu->aors[a]) + 1;
                memcpy(at, cu->aors[a], n);
                for (int q = 0; q < npkg; q++)
                    s[q].aor = at;
                at += n;
            }
            if (p == COMBINE_DIALOG && b->list) {
                s->lm = xcalloc(1, sizeof *s->lm);
                s->lm->s = s;
                s->lm->m.user = u->jid;
                s->lm->m.aor = s->aor;
                rlsub_index_add(b->list, &s->lm->m);
            } else
                s->sub = subs_new(b->subs, s->aor, pkgs[p].event, pkgs[p].accept, false,
                                  &owner_ops, s);
        }
    }
    return u;
}

static void user_free(struct bridge *b, struct buser *u)
{
    strmap_del(&b->users, u->jid);
    for (int i = 0; i < u->nsrc; i++) {
        struct bsource *s = &user_src(u)[i];
        subs_free(s->sub);
        combine_forget(&s->said);
        free(s->err);
        free(s->lm);
    }
    pending_free(b, u);
    store_rec_clear(&u->rec);
    free(u); /* and its sources and their AORs */
}

/* Rebuilds the list index after users came or went (sources move in memory). */
static void list_reindex(struct bridge *b)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!b->list)
        return;
    rlsub_index_clear(b->list);
    while (strmap_next(&b->users, &pos, &k, &v)) {
        struct buser *u = v;
        for (int i = 0; i < u->nsrc; i++) {
            if (user_src(u)[i].said.pkg == COMBINE_DIALOG && user_src(u)[i].lm)
                rlsub_index_add(b->list, &user_src(u)[i].lm->m);
        }
    }
}

static void release_pass(evutil_socket_t fd, short what, void *arg);
static void settle_tick(evutil_socket_t fd, short what, void *arg);

struct bridge *bridge_new(struct event_base *base, struct timerq *tq,
                          const struct offhook_config *cfg, struct sipua *ua,
                          struct store *store)
{
    struct bridge *b = xcalloc(1, sizeof *b);

    b->base = base;
    b->tq = tq;
    b->cfg = cfg;
    b->store = store;
    b->subs = subs_mgr_new(base, tq, ua, cfg->sip_expires, (double)cfg->sip_subscribe_rate);
    subs_mgr_set_probe(b->subs, cfg->sip_probe_interval);
    subs_mgr_set_notify_rate(b->subs, (double)cfg->sip_notify_rate);
    subs_mgr_set_stale_after(b->subs, cfg->sip_stale_after);
    subs_mgr_set_max_backoff(b->subs, cfg->sip_max_backoff);
    subs_mgr_set_min_expires(b->subs, cfg->sip_min_expires < cfg->sip_expires
                                          ? cfg->sip_min_expires
                                          : cfg->sip_expires);
    strmap_init(&b->users);
    b->lost.flush = evtimer_new(base, on_lost_flush, b);
    collect_bridge = b;
    metrics_add_collector(collect_users, NULL);
    b->release_ev = event_new(base, -1, 0, release_pass, b);
    b->settle_ev = event_new(base, -1, EV_PERSIST, settle_tick, b);
    {
        struct timeval tv = {.tv_sec = 1};
        event_add(b->settle_ev, &tv);
    }
    store_on_up(store, on_store_up, b);
    store_set_owner(store, &store_owner, b);
    log_info("bridge", "event=started configured_users=%zu subscribe_rate=%ld%s%s",
             cfg->nusers, cfg->sip_subscribe_rate,
             cfg->sip_resource_list[0] ? " resource_list=" : "",
             cfg->sip_resource_list[0] ? log_q(cfg->sip_resource_list) : "");
    return b;
}

/* ---- users taken and let go (member.c's decisions, through main.c) ----------------- */

static bool list_mode(const struct offhook_config *cfg)
{
    return cfg->sip_resource_list[0] && cfg->sip_event_dialog;
}

/* After the loop turn in which users were released or a list made: frees the released
 * users in one go (the list's index is rebuilt once, not once per user), drops the list
 * when no user is left, subscribes a new one after the users' own subscriptions. */
static void release_pass(evutil_socket_t fd, short what, void *arg)
{
    struct bridge *b = arg;
    size_t pos = 0;
    const char *k;
    void *v;
    int freed = 0;

    if (b->list)
        rlsub_index_clear(b->list);
    /* strmap_del inside iteration only tombstones slots: iteration stays valid. */
    while (strmap_next(&b->users, &pos, &k, &v)) {
        struct buser *u = v;
        if (!u->doomed)
            continue;
        store_release(b->store, u->jid);
        user_free(b, u);
        freed++;
    }
    if (b->list && b->users.count == 0) {
        rlsub_free(b->list);
        b->list = NULL;
        b->list_start = false;
        log_notice("bridge", "event=list_released uri=%s", log_q(b->cfg->sip_resource_list));
    }
    list_reindex(b);
    if (b->list && b->list_start) {
        b->list_start = false;
        rlsub_start(b->list);
    }
    if (freed)
        log_info("bridge", "event=users_released count=%d held=%zu", freed, b->users.count);
}

static void schedule_pass(struct bridge *b)
{
    event_active(b->release_ev, EV_TIMEOUT, 1);
}

static void settle_tick(evutil_socket_t fd, short what, void *arg)
{
    struct bridge *b = arg;
    size_t pos = 0;
    const char *k;
    void *v;

    if (b->nwaiting == 0)
        return;
    while (strmap_next(&b->users, &pos, &k, &v)) {
        struct buser *u = v;
        if (u->claim_wait && settled(u))
            recompute(b, u, clock_wall_us());
    }
}

void bridge_hold(struct bridge *b, const char *jid, bool handover)
{
    const struct cfg_user *cu = config_user_by_jid(b->cfg, jid);
    struct buser *u = strmap_get(&b->users, jid);

    if (u && u->doomed) {
        /* Released and taken back in one turn: it never left. */
        u->doomed = false;
        bridge_moving(b, jid, false);
        return;
    }
    if (u || !cu)
        return;
    if (list_mode(b->cfg) && !b->list) {
        b->list = rlsub_new(b->subs, b->cfg->sip_resource_list, list_max_body(b->cfg),
                            &list_ops, b);
        b->list_start = true; /* at the pass: after the users' own subscriptions */
        schedule_pass(b);
        log_notice("bridge", "event=list_taken uri=%s", log_q(b->cfg->sip_resource_list));
    }
    store_set_claim(b->store, jid, true); /* writes of it still in flight */
    u = user_new(b, cu);
    if (handover) {
        u->claim_wait = true;
        u->acquired_ms = clock_mono_ms();
        b->nwaiting++;
    }
}

void bridge_moving(struct bridge *b, const char *jid, bool moving)
{
    struct buser *u = strmap_get(&b->users, jid);

    if (!u)
        return;
    u->moving = moving;
    store_set_claim(b->store, jid, !moving);
    if (!moving && u->stored)
        store_claim(b->store, jid, &u->rec); /* it stays: make sure Redis names us */
}

void bridge_release(struct bridge *b, const char *jid)
{
    struct buser *u = strmap_get(&b->users, jid);

    if (!u || u->doomed)
        return;
    u->doomed = true;
    if (u->claim_wait) {
        u->claim_wait = false;
        b->nwaiting--;
    }
    schedule_pass(b);
}

void bridge_claim(struct bridge *b, const char *jid)
{
    struct buser *u = strmap_get(&b->users, jid);

    if (u && !u->doomed && !u->moving && !u->claim_wait && u->stored)
        store_claim(b->store, jid, &u->rec);
}

void bridge_apply_config(struct bridge *b, const struct offhook_config *cfg,
                         struct bridge_reload *out)
{
    struct buser **old = xmalloc((b->users.count + 1) * sizeof *old);
    char **again = xmalloc((b->users.count + 1) * sizeof *again);
    bool *again_moving = xmalloc((b->users.count + 1) * sizeof *again_moving);
    bool *again_put = xmalloc((b->users.count + 1) * sizeof *again_put);
    struct store_rec *again_rec = xmalloc((b->users.count + 1) * sizeof *again_rec);
    size_t nold = 0, nagain = 0, pos = 0;
    int removed = 0, resubscribed = 0, kept = 0;
    const char *k;
    void *v;

    subs_mgr_set_expires(b->subs, cfg->sip_expires);
    subs_mgr_set_rate(b->subs, (double)cfg->sip_subscribe_rate);
    subs_mgr_set_probe(b->subs, cfg->sip_probe_interval);
    subs_mgr_set_notify_rate(b->subs, (double)cfg->sip_notify_rate);
    subs_mgr_set_stale_after(b->subs, cfg->sip_stale_after);
    subs_mgr_set_max_backoff(b->subs, cfg->sip_max_backoff);
    subs_mgr_set_min_expires(b->subs, cfg->sip_min_expires < cfg->sip_expires
                                          ? cfg->sip_min_expires
                                          : cfg->sip_expires);
    while (strmap_next(&b->users, &pos, &k, &v))
        old[nold++] = v;
    if (b->list) {
        rlsub_set_max_body(b->list, list_max_body(cfg));
        rlsub_index_clear(b->list); /* rebuilt below, after sources are freed and made */
    }
    /* Only the users this sipbridge holds: the others are not its own. Users the reload
     * adds are acquired by member.c (member_set_users), if they are this member's. */
    for (size_t i = 0; i < nold; i++) {
        struct buser *u = old[i];
        const struct cfg_user *cu = config_user_by_jid(cfg, u->jid);

        if (!cu) {
            log_info("bridge", "event=user_removed user=%s", log_q(u->jid));
            if (!u->doomed) {
                store_remove(b->store, u->jid, !u->moving);
                store_sub_clear(b->store, u->jid);
            } else {
                store_release(b->store, u->jid);
            }
            if (u->claim_wait)
                b->nwaiting--;
            user_free(b, u);
            removed++;
        } else if (!same_sources(cfg, cu, u) && !u->doomed) {
            log_info("bridge", "event=user_changed user=%s action=resubscribe", log_q(u->jid));
            again_moving[nagain] = u->moving;
            /* What it last handed to the store, still the store's to check again after a
             * reconnect (it kept a record of every user before). */
            again_put[nagain] = u->stored || u->put_before;
            again_rec[nagain] = u->rec;
            u->rec.remote = NULL; /* moved */
            again[nagain++] = xstrdup(u->jid);
            if (u->claim_wait)
                b->nwaiting--;
            user_free(b, u);
            resubscribed++;
        } else {
            bool show = config_user_shows_remote(cfg, cu);
            kept++;
            if (show != u->show_remote) {
                u->show_remote = show;
                recompute(b, u, clock_wall_us());
            }
        }
    }
    free(old);
    b->cfg = cfg;
    for (size_t i = 0; i < nagain; i++) {
        struct buser *u = user_new(b, config_user_by_jid(cfg, again[i]));
        u->moving = again_moving[i];
        u->put_before = again_put[i];
        u->rec = again_rec[i];
        free(again[i]);
    }
    free(again);
    free(again_moving);
    free(again_put);
    free(again_rec);
    list_reindex(b);
    out->removed = removed;
    out->resubscribed = resubscribed;
    out->unchanged = kept;
}

void bridge_free(struct bridge *b)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!b)
        return;
    store_set_owner(b->store, NULL, NULL);
    store_on_up(b->store, NULL, NULL);
    rlsub_free(b->list);
    b->list = NULL;
    event_free(b->release_ev);
    event_free(b->settle_ev);
    /* strmap_del inside iteration only tombstones slots: iteration stays valid. */
    while (strmap_next(&b->users, &pos, &k, &v))
        user_free(b, v);
    strmap_free(&b->users);
    subs_mgr_free(b->subs);
    event_free(b->lost.flush);
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

/* ---- for the control socket --------------------------------------------------------- */

bool bridge_user_view(const struct bridge *b, const char *jid, struct bridge_user_view *out)
{
    struct buser *u = strmap_get(&b->users, jid);
    const struct combine_source *said[CFG_MAX_AORS * 3];
    int64_t mono = clock_mono_ms(), wall = clock_wall_ms();

    if (!u)
        return false;
    memset(out, 0, sizeof *out);
    out->jid = u->jid;
    out->stored = u->stored;
    store_rec_expand(&u->rec, &out->rec);
    out->has_pending = u->pend != NULL;
    if (u->pend)
        store_rec_expand(&u->pend->rec, &out->pending);
    out->trace = u->trace;
    out->nsrc = u->nsrc;
    for (int i = 0; i < u->nsrc; i++) {
        const struct bsource *s = &user_src(u)[i];
        struct bridge_source_view *v = &out->src[i];
        said[i] = &s->said;
        v->aor = s->aor;
        v->package = pkgs[s->said.pkg].event;
        v->sub = s->sub ? s->sub : rlsub_subscription(b->list);
        v->via_list = s->sub == NULL;
        v->said = &s->said;
        v->list_problem = s->sub || !s->lm ? NULL : s->lm->m.problem;
        v->body_error = s->err ? s->err->last_err : NULL;
        v->body_error_ms = s->err && s->err->last_err ? wall - (mono - s->err->last_err_ms) : 0;
    }
    combine_user(said, u->nsrc, u->show_remote, &out->now);
    return true;
}

const struct subscription *bridge_list(const struct bridge *b)
{
    return rlsub_subscription(b->list);
}

const char *bridge_list_uri(const struct bridge *b)
{
    return b->list ? b->cfg->sip_resource_list : NULL;
}

static void trace_user(struct buser *u, const struct log_trace *t, const char *aor, int *n)
{
    u->trace = *t;
    for (int i = 0; i < u->nsrc; i++) {
        struct bsource *s = &user_src(u)[i];
        if (aor && strcasecmp(s->aor, aor) != 0)
            continue;
        if (s->sub)
            subs_set_trace(s->sub, t);
        else if (s->lm)
            s->lm->m.trace = *t;
        (*n)++;
    }
}

int bridge_trace(struct bridge *b, const char *who, const struct log_trace *t)
{
    struct buser *u = strmap_get(&b->users, who);
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;

    if (u) {
        trace_user(u, t, NULL, &n);
        return n;
    }
    /* An AOR: its sources, wherever configured, and the decisions of their users. */
    while (strmap_next(&b->users, &pos, &k, &v)) {
        struct buser *x = v;
        for (int i = 0; i < x->nsrc; i++) {
            if (strcasecmp(user_src(x)[i].aor, who) == 0) {
                trace_user(x, t, who, &n);
                break;
            }
        }
    }
    return n;
}
