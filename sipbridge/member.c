/* The users of one sipbridge among several: rendezvous assignment over the lease
 * group's view, make-before-break handovers checked against the owner Redis names. */
#include "member.h"

#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/types.h>

#include <event2/event.h>

#include "config.h"
#include "lease.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "strmap.h"
#include "strutil.h"

#define AUDIT_BATCH 1000       /* owners read per round trip */
#define MOVE_MAX_MS 60000      /* a user handed over to a member that never writes it is
                                * let go anyway after this */
#define OWNER_MAX (24 + STORECODEC_MEMBER_NAME_MAX + 2)

enum mu_state { MU_NONE, MU_HELD, MU_MOVING };

/* Each configured user's state is one byte (struct member.ust, by its index in
 * cfg->users): at 100,000 users a record and a map entry each were ~100 bytes a user,
 * for what is in the common case (owned and settled, or another's) two bits. */
#define MU_STATE 0x03          /* enum mu_state */
#define MU_AUDIT 0x04          /* MU_HELD: check Redis names this member as its owner */
#define MU_CHECKED 0x08        /* checked in the current view: once per view at most */

/* A user's times while it is MU_MOVING or audited (only then: muser_tidy). */
struct muser {
    int64_t moving_since;      /* mono ms, MU_MOVING */
    int64_t audit_until;       /* mono ms: then stop checking (a user never heard from) */
    size_t idx;                /* its index in cfg->users (and ust) */
    char jid[];                /* the key in member.users */
};

/* The part of a view assignment depends on: who takes work, who is present. */
struct roster {
    char **takers;             /* names of the members assigned work, sorted */
    size_t ntakers;
    char **present;            /* "<epoch> <name>" of every member present (owners) */
    size_t npresent;
    char holder[STORECODEC_MEMBER_NAME_MAX + 1]; /* resource-list mode: "" = none valid */
};

struct member {
    struct event_base *base;
    const struct offhook_config *cfg;
    struct store *store;
    struct lease *lease;
    struct member_ops ops;
    void *arg;
    char name[STORECODEC_MEMBER_NAME_MAX + 1];
    char me[OWNER_MAX];        /* "<epoch> <name>": the owner field this member writes */
    uint64_t epoch;
    bool list_mode;            /* [sip] resource_list: every user to the list's holder */
    uint8_t *ust;              /* MU_* of each of cfg->users, by index */
    struct strmap users;       /* jid -> struct muser*: the users moving or audited */
    struct roster r;           /* the view assignment was last made on */
    bool have_view;
    bool waited_alone;         /* its first view showed it alone: it waited one more */
    bool reassign;             /* the users changed: assign again at the next view */
    int held, moving, audits;  /* users MU_HELD, MU_MOVING, MU_HELD with audit */
    bool auditing;             /* an owner read is in flight */
    uint64_t view_gen;         /* views applied */
    bool leaving;
    int64_t leave_deadline;    /* mono ms */
    void (*left)(void *arg);
    void *left_arg;
    struct event *leave_ev;    /* the leave's deadline */
    bool finishing;            /* lease_leave sent */
};

static struct metric *m_users, *m_moves, *m_takeovers;

void member_register_metrics(void)
{
    m_users = metric_new(METRIC_GAUGE, "offhook_cluster_users",
                         "Users this sipbridge holds: owned, or moving (handed over, still "
                         "subscribed until the new owner has written them: duplicate "
                         "subscriptions).",
                         "state", (const char *const[]){"owned", "moving", NULL});
    m_moves = metric_new(METRIC_COUNTER, "offhook_cluster_moves_total",
                         "Users handed over between live sipbridges (a member joined or "
                         "left): in, acquired from one; out, let go to one.",
                         "direction", (const char *const[]){"in", "out", NULL});
    m_takeovers = metric_new(METRIC_COUNTER, "offhook_cluster_takeovers_total",
                             "Users acquired from a sipbridge whose lease ran out (or at "
                             "start, from nobody).",
                             NULL, NULL);
    lease_register_metrics();
}

static void update_metrics(struct member *m)
{
    metric_set(m_users, "owned", m->held);
    metric_set(m_users, "moving", m->moving);
    if (m->lease)
        lease_set_count(m->lease, m->held);
}

/* ---- the roster -------------------------------------------------------------------- */

static void roster_free(struct roster *r)
{
    for (size_t i = 0; i < r->ntakers; i++)
        free(r->takers[i]);
    for (size_t i = 0; i < r->npresent; i++)
        free(r->present[i]);
    free(r->takers);
    free(r->present);
    memset(r, 0, sizeof *r);
}

static bool roster_same(const struct roster *a, const struct roster *b)
{
    if (a->ntakers != b->ntakers || a->npresent != b->npresent ||
        strcmp(a->holder, b->holder) != 0)
        return false;
    for (size_t i = 0; i < a->ntakers; i++) {
        if (strcmp(a->takers[i], b->takers[i]) != 0)
            return false;
    }
    for (size_t i = 0; i < a->npresent; i++) {
        if (strcmp(a->present[i], b->present[i]) != 0)
            return false;
    }
    return true;
}

static bool is_present(const struct roster *r, const char *owner)
{
    for (size_t i = 0; i < r->npresent; i++) {
        if (strcmp(r->present[i], owner) == 0)
            return true;
    }
    return false;
}

/* Whether a member of that name is present (taking work or leaving). */
static bool present_name(const struct roster *r, const char *name)
{
    for (size_t i = 0; i < r->npresent; i++) {
        const char *sp = strchr(r->present[i], ' ');
        if (sp && strcmp(sp + 1, name) == 0)
            return true;
    }
    return false;
}

/* Who owns jid by roster r (skipping the member named skip): NULL when nobody takes work. */
static const char *assignee(const struct member *m, const struct roster *r, const char *jid,
                            const char *skip)
{
    const char *best = NULL;
    uint64_t best_w = 0;

    if (m->list_mode)
        return r->holder[0] && !(skip && strcmp(skip, r->holder) == 0) ? r->holder : NULL;
    for (size_t i = 0; i < r->ntakers; i++) {
        uint64_t w;
        if (skip && strcmp(skip, r->takers[i]) == 0)
            continue;
        w = storecodec_rendezvous(r->takers[i], jid);
        if (!best || w > best_w) {
            best = r->takers[i];
            best_w = w;
        }
    }
    return best;
}

/* ---- assignment -------------------------------------------------------------------- */

/* u (held) is checked until Redis names this member as its owner, claiming it again
 * while it does not: a handover's old owner may write once more after the new owner's
 * first write (before it has seen the new roster), and it lets go only once Redis names
 * another member. */
static enum mu_state st_of(const struct member *m, size_t i)
{
    return (enum mu_state)(m->ust[i] & MU_STATE);
}

static void set_st(struct member *m, size_t i, enum mu_state st)
{
    m->ust[i] = (uint8_t)((m->ust[i] & ~MU_STATE) | st);
}

/* The index of jid in cfg->users, or -1 if it is not configured (the first of the same
 * JID: the one config_user_by_jid gives). */
static ssize_t user_index(const struct member *m, const char *jid)
{
    const struct cfg_user *cu = config_user_by_jid(m->cfg, jid);

    return cu ? cu - m->cfg->users : -1;
}

/* User i's times, made if it has none. */
static struct muser *muser_get(struct member *m, size_t i)
{
    const char *jid = m->cfg->users[i].jid;
    struct muser *u = strmap_get(&m->users, jid);

    if (!u) {
        size_t len = strlen(jid);
        u = xcalloc(1, offsetof(struct muser, jid) + len + 1);
        memcpy(u->jid, jid, len + 1);
        u->idx = i;
        strmap_put(&m->users, u->jid, u);
    }
    return u;
}

/* Frees user i's times once it is neither moving nor audited. */
static void muser_tidy(struct member *m, size_t i)
{
    struct muser *u;

    if (st_of(m, i) == MU_MOVING || (m->ust[i] & MU_AUDIT))
        return;
    u = strmap_del(&m->users, m->cfg->users[i].jid);
    free(u);
}

static void audit_on(struct member *m, size_t i)
{
    if (!(m->ust[i] & MU_AUDIT))
        m->audits++;
    m->ust[i] |= MU_AUDIT;
    muser_get(m, i)->audit_until = clock_mono_ms() + MOVE_MAX_MS;
}

static void audit_off(struct member *m, size_t i)
{
    if (m->ust[i] & MU_AUDIT)
        m->audits--;
    m->ust[i] &= (uint8_t)~MU_AUDIT;
    muser_tidy(m, i);
}

static void release(struct member *m, size_t i, const char *why)
{
    const char *jid = m->cfg->users[i].jid;

    set_st(m, i, MU_NONE);
    muser_tidy(m, i);
    m->moving--;
    metric_inc(m_moves, "out");
    log_debug("member", "event=released user=%s reason=%s", log_q(jid), why);
    m->ops.on_release(m->arg, jid);
}

/* Applies roster now (the old one: before, NULL at the first view) to every user. */
static void assign(struct member *m, const struct roster *before)
{
    int acquired = 0, handed = 0, moving = 0, kept = 0;

    /* In the configuration's order: subscriptions start in that order, as with one
     * sipbridge (the ramp, and a PBX that serves them in turn). */
    for (size_t i = 0; i < m->cfg->nusers; i++) {
        const char *jid = m->cfg->users[i].jid;
        const char *a;
        bool mine;

        if (user_index(m, jid) != (ssize_t)i)
            continue; /* the JID's other entry has it */
        a = assignee(m, &m->r, jid, NULL);
        if (!a)
            continue; /* nobody takes work: everything stays as it is */
        mine = strcmp(a, m->name) == 0;
        switch (st_of(m, i)) {
        case MU_NONE: {
            const char *prev;
            bool handover;
            if (!mine)
                break;
            /* Its owner until now: by the roster before, or at the first view the one it
             * would have without this member. Alive: it keeps the user until this member
             * has written it. */
            prev = before ? assignee(m, before, jid, NULL)
                          : assignee(m, &m->r, jid, m->name);
            handover = prev && strcmp(prev, m->name) != 0 && present_name(&m->r, prev);
            set_st(m, i, MU_HELD);
            m->ust[i] &= (uint8_t)~MU_AUDIT;
            m->held++;
            if (handover)
                audit_on(m, i);
            if (handover) {
                metric_inc(m_moves, "in");
                handed++;
            } else {
                metric_inc(m_takeovers, NULL);
            }
            acquired++;
            m->ops.on_acquire(m->arg, jid, handover);
            break;
        }
        case MU_HELD:
            if (mine)
                break;
            set_st(m, i, MU_MOVING);
            audit_off(m, i);
            muser_get(m, i)->moving_since = clock_mono_ms();
            m->held--;
            m->moving++;
            moving++;
            m->ops.on_moving(m->arg, jid, true);
            break;
        case MU_MOVING:
            if (!mine)
                break;
            set_st(m, i, MU_HELD);
            muser_tidy(m, i);
            m->moving--;
            m->held++;
            kept++;
            m->ops.on_moving(m->arg, jid, false);
            break;
        }
    }
    if (acquired || moving || kept || !before)
        log_notice("member", "event=assigned name=%s members=%zu takers=%zu owned=%d "
                             "acquired=%d handed_over_to_us=%d moving_away=%d kept=%d%s%s",
                   log_q(m->name), m->r.npresent, m->r.ntakers, m->held, acquired, handed, moving,
                   kept, m->list_mode ? " list_holder=" : "",
                   m->list_mode ? (m->r.holder[0] ? log_q(m->r.holder) : "none") : "");
    update_metrics(m);
}

/* ---- owner checks ------------------------------------------------------------------- */

static void audit(struct member *m);

struct audit_req {
    struct member *m;
    char **jids;
    size_t n;
    uint64_t gen;              /* the view it was made in */
};

static void on_audit(void *arg, const char *const *owners, size_t n, bool ok)
{
    struct audit_req *req = arg;
    struct member *m = req->m;
    int64_t now = clock_mono_ms();

    for (size_t j = 0; j < n; j++) {
        ssize_t i = user_index(m, req->jids[j]);
        const char *owner = owners[j];
        struct muser *u;

        if (i < 0 || (!ok && !owner))
            continue; /* gone meanwhile, or not read */
        if (req->gen == m->view_gen)
            m->ust[i] |= MU_CHECKED;
        else
            m->ust[i] &= (uint8_t)~MU_CHECKED; /* made in an earlier view */
        u = strmap_get(&m->users, req->jids[j]); /* there while moving or audited */
        if (st_of(m, (size_t)i) == MU_HELD && (m->ust[i] & MU_AUDIT)) {
            if (owner && strcmp(owner, m->me) == 0)
                audit_off(m, (size_t)i);
            else if (now > u->audit_until)
                audit_off(m, (size_t)i); /* never heard from: its first write claims it */
            else
                m->ops.on_claim(m->arg, req->jids[j]);
        } else if (st_of(m, (size_t)i) == MU_MOVING) {
            if (owner && strcmp(owner, m->me) == 0) {
                /* Still ours in Redis: its new owner has not written it yet. */
                if (now - u->moving_since > MOVE_MAX_MS)
                    release(m, (size_t)i, "new_owner_silent");
            } else if (!owner || is_present(&m->r, owner)) {
                release(m, (size_t)i, "new_owner_wrote");
            } else if (now - u->moving_since > MOVE_MAX_MS) {
                release(m, (size_t)i, "new_owner_silent"); /* named a member that is gone */
            }
        }
    }
    for (size_t i = 0; i < req->n; i++)
        free(req->jids[i]);
    free(req->jids);
    free(req);
    m->auditing = false;
    update_metrics(m);
    audit(m); /* the next batch of this view, or the end of a leave */
}

static void finish_leave(struct member *m);

/* Reads the owner Redis names for the users being handed over and those to check, each
 * once per view (a renewal, every fifth of the lease), in batches. */
static void audit(struct member *m)
{
    struct audit_req *req;
    size_t pos = 0;
    const char *k;
    void *v;

    if (m->leaving && !m->finishing && m->held == 0 && m->moving == 0) {
        finish_leave(m);
        return;
    }
    if (m->auditing || (m->moving == 0 && m->audits == 0))
        return;
    req = xcalloc(1, sizeof *req);
    req->m = m;
    req->gen = m->view_gen;
    req->jids = xcalloc(AUDIT_BATCH, sizeof *req->jids);
    while (req->n < AUDIT_BATCH && strmap_next(&m->users, &pos, &k, &v)) {
        struct muser *u = v;
        uint8_t us = m->ust[u->idx];
        if (((us & MU_STATE) == MU_MOVING || ((us & MU_STATE) == MU_HELD && (us & MU_AUDIT))) &&
            !(us & MU_CHECKED))
            req->jids[req->n++] = xstrdup(u->jid);
    }
    if (req->n && store_read_owners(m->store, (const char *const *)req->jids, req->n, on_audit,
                                    req) == 0) {
        m->auditing = true;
        return;
    }
    for (size_t i = 0; i < req->n; i++)
        free(req->jids[i]);
    free(req->jids);
    free(req);
}

/* ---- the lease ----------------------------------------------------------------------- */

static void give_up_leave(struct member *m, const char *why);

static void on_view(void *arg, const struct lease_view *v)
{
    struct member *m = arg;
    struct roster now = {0};
    bool first = !m->have_view;

    if (v->epoch != m->epoch || v->joined) {
        m->epoch = v->epoch;
        snprintf(m->me, sizeof m->me, "%llu %s", (unsigned long long)v->epoch, m->name);
        store_set_lease(m->store, m->name, v->epoch);
        /* Whatever Redis names as the owner of this member's users, it is not this epoch:
         * each is checked, and claimed where it has state. */
        for (size_t i = 0; i < m->cfg->nusers; i++) {
            if (st_of(m, i) == MU_HELD)
                audit_on(m, i);
        }
    }
    now.takers = xcalloc(v->n + 1, sizeof *now.takers);
    now.present = xcalloc(v->n + 1, sizeof *now.present);
    for (size_t i = 0; i < v->n; i++) {
        const struct lease_member *lm = &v->members[i];
        char owner[OWNER_MAX];
        if (!lm->rec.leaving)
            now.takers[now.ntakers++] = xstrdup(lm->name);
        snprintf(owner, sizeof owner, "%llu %s", (unsigned long long)lm->rec.epoch, lm->name);
        now.present[now.npresent++] = xstrdup(owner);
    }
    if (v->holder)
        str_copy(now.holder, sizeof now.holder, v->holder);
    if (first && now.ntakers <= 1 && !m->waited_alone) {
        /* Alone in its first view: members started at the same moment (a whole site coming
         * up) may have joined just after it. Each would take every user at once, and the
         * PBX would see each user subscribed by every member. The next renewal (a fifth
         * of the lease later) shows them: assign then. */
        m->waited_alone = true;
        roster_free(&now);
        return;
    }
    m->have_view = true;
    m->view_gen++;
    for (size_t i = 0; i < m->cfg->nusers; i++)
        m->ust[i] &= (uint8_t)~MU_CHECKED; /* a new view: each may be checked once again */
    if (first || m->reassign || !roster_same(&now, &m->r)) {
        struct roster before = m->r;
        m->r = now;
        m->reassign = false;
        assign(m, first ? NULL : &before);
        roster_free(&before);
    } else {
        roster_free(&now);
    }
    if (m->leaving && !m->finishing && m->r.ntakers == 0) {
        give_up_leave(m, "nobody_left_to_take_them"); /* every sipbridge stops at once */
        return;
    }
    audit(m);
}

static void on_expired(void *arg)
{
    struct member *m = arg;

    if (m->leaving && !m->finishing) {
        give_up_leave(m, "redis_unreachable");
        return;
    }
    /* Nothing moves while Redis cannot be reached: users stay with whoever holds them
     * and writes are held by the store. Others may take this member's users once its
     * lease runs out there; its writes are then fenced and the next renewal rejoins. */
    log_warn("member", "event=lease_unconfirmed name=%s owned=%d moving=%d "
                       "action=\"keeping every user until Redis answers\"",
             log_q(m->name), m->held, m->moving);
}

static const struct lease_ops lease_ops = {.on_view = on_view, .on_expired = on_expired};

/* Carries each user's state over to cfg's indexes (m->cfg, the configuration until now,
 * is still valid: the daemon frees it after the reload's apply); forgets the users cfg no
 * longer has. */
static void set_users(struct member *m, const struct offhook_config *cfg)
{
    const struct offhook_config *old = m->cfg;
    uint8_t *ust = xcalloc(cfg->nusers + 1, sizeof *ust);
    size_t pos = 0;
    const char *k;
    void *v;

    for (size_t i = 0; old && i < old->nusers; i++) {
        const struct cfg_user *cu = config_user_by_jid(cfg, old->users[i].jid);
        uint8_t us = m->ust[i];

        if (user_index(m, old->users[i].jid) != (ssize_t)i)
            continue;
        if (cu) {
            ust[cu - cfg->users] = us;
            continue;
        }
        if ((us & MU_STATE) == MU_HELD)
            m->held--;
        if ((us & MU_STATE) == MU_HELD && (us & MU_AUDIT))
            m->audits--;
        if ((us & MU_STATE) == MU_MOVING)
            m->moving--;
    }
    /* strmap_del inside iteration only tombstones slots: iteration stays valid. */
    while (strmap_next(&m->users, &pos, &k, &v)) {
        struct muser *u = v;
        const struct cfg_user *cu = config_user_by_jid(cfg, u->jid);
        if (cu) {
            u->idx = (size_t)(cu - cfg->users);
            continue;
        }
        strmap_del(&m->users, u->jid);
        free(u);
    }
    free(m->ust);
    m->ust = ust;
    m->cfg = cfg;
    m->list_mode = cfg->sip_resource_list[0] && cfg->sip_event_dialog;
    m->reassign = true;
}

struct member *member_new(struct event_base *base, const struct offhook_config *cfg,
                          struct store *store, const struct member_ops *ops, void *arg)
{
    struct member *m = xcalloc(1, sizeof *m);

    m->base = base;
    m->store = store;
    m->ops = *ops;
    m->arg = arg;
    if (cfg->sipbridge_instance[0])
        str_copy(m->name, sizeof m->name, cfg->sipbridge_instance);
    else
        lease_default_name(m->name, sizeof m->name);
    strmap_init(&m->users);
    set_users(m, cfg);
    update_metrics(m);
    m->lease = lease_new(base, cfg, "sipbridge", m->name, cfg->sipbridge_lease_ttl * 1000,
                         &lease_ops, m);
    lease_set_ready(m->lease, true);
    lease_want_holder(m->lease, m->list_mode);
    log_info("member", "event=started name=%s users=%zu lease_ttl_s=%ld%s", log_q(m->name),
             cfg->nusers, cfg->sipbridge_lease_ttl,
             m->list_mode ? " mode=resource_list_holder" : " mode=rendezvous");
    return m;
}

void member_free(struct member *m)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!m)
        return;
    lease_free(m->lease);
    if (m->leave_ev)
        event_free(m->leave_ev);
    while (strmap_next(&m->users, &pos, &k, &v)) {
        struct muser *u = v;
        free(u);
    }
    strmap_free(&m->users);
    free(m->ust);
    roster_free(&m->r);
    free(m);
}

int member_set_users(struct member *m, const struct offhook_config *cfg)
{
    bool was_list = m->list_mode;
    int before;

    set_users(m, cfg);
    if (was_list != m->list_mode) {
        lease_want_holder(m->lease, m->list_mode && !m->leaving);
        lease_renew_now(m->lease); /* the holder role changes hands: assigned then */
        return 0;
    }
    if (!m->have_view)
        return 0; /* assigned at the first view */
    /* The roster has not changed: the users are assigned on it now. */
    m->reassign = false;
    before = m->held + m->moving;
    assign(m, &m->r);
    return m->held + m->moving - before;
}

void member_fenced(struct member *m, const char *jid, bool lease_lost)
{
    ssize_t i;

    if (lease_lost) {
        lease_renew_now(m->lease); /* rejoins: a new epoch, then everything is checked */
        return;
    }
    i = user_index(m, jid);
    if (i < 0)
        return;
    if (st_of(m, (size_t)i) == MU_MOVING) {
        release(m, (size_t)i, "new_owner_wrote");
        update_metrics(m);
    } else if (st_of(m, (size_t)i) == MU_HELD) {
        audit_on(m, (size_t)i);
    }
}

static void on_left(void *arg)
{
    struct member *m = arg;
    void (*done)(void *) = m->left;

    m->left = NULL;
    if (done)
        done(m->left_arg);
}

static void finish_leave(struct member *m)
{
    m->finishing = true;
    if (m->leave_ev)
        event_del(m->leave_ev);
    log_notice("member", "event=left name=%s still_held=%d still_moving=%d", log_q(m->name),
               m->held, m->moving);
    lease_leave(m->lease, on_left, m);
}

/* The handover cannot finish: the rest of the users are let go now (taken over by
 * others once this lease is gone, if any run). */
static void give_up_leave(struct member *m, const char *why)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (m->finishing)
        return;
    log_warn("member", "event=leave_cut_short name=%s reason=%s moving=%d held=%d "
                       "action=\"letting the rest go: taken over once the lease is gone\"",
             log_q(m->name), why, m->moving, m->held);
    /* strmap_del inside iteration only tombstones slots: iteration stays valid. */
    while (strmap_next(&m->users, &pos, &k, &v)) {
        struct muser *u = v;
        if (st_of(m, u->idx) == MU_MOVING)
            release(m, u->idx, why); /* frees u */
    }
    update_metrics(m);
    finish_leave(m);
}

static void on_leave_deadline(evutil_socket_t fd, short what, void *arg)
{
    give_up_leave(arg, "leave_timeout");
}

bool member_leave(struct member *m, void (*done)(void *arg), void *arg)
{
    struct timeval tv = {.tv_sec = MEMBER_LEAVE_MAX_S};
    bool others = false;

    for (size_t i = 0; i < m->r.ntakers; i++)
        others |= strcmp(m->r.takers[i], m->name) != 0;
    if (!m->have_view || !lease_held(m->lease) || !others || m->leaving)
        return false;
    m->leaving = true;
    m->left = done;
    m->left_arg = arg;
    log_notice("member", "event=leaving name=%s owned=%d members=%zu", log_q(m->name), m->held,
               m->r.npresent);
    m->leave_ev = evtimer_new(m->base, on_leave_deadline, m);
    evtimer_add(m->leave_ev, &tv);
    lease_want_holder(m->lease, false);
    lease_set_leaving(m->lease); /* the others take this member's users at their renewal */
    return true;
}

void member_quit(struct member *m)
{
    if (!m->finishing) {
        m->finishing = true;
        lease_leave(m->lease, NULL, NULL);
    }
}

bool member_ready(const struct member *m)
{
    return m->have_view && lease_held(m->lease);
}

int member_users_owned(const struct member *m)
{
    return m->held;
}

const char *member_name(const struct member *m)
{
    return m->name;
}
