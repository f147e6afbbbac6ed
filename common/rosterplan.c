/* The rosters [component] roster asks for, computed from the users (see rosterplan.h). */
#include "rosterplan.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"

static const char *domain_of(const char *jid)
{
    const char *at = strchr(jid, '@');

    return at ? at + 1 : jid;
}

static void list_add(struct strmap *m, const char *key, const struct cfg_user *u)
{
    struct rosterplan_list *l = strmap_get(m, key);

    if (!l) {
        l = xcalloc(1, sizeof *l);
        l->key = xstrdup(key);
        strmap_put(m, l->key, l);
    }
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->u = xrealloc(l->u, l->cap * sizeof *l->u);
    }
    l->u[l->n++] = u;
}

static void lists_free(struct strmap *m)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(m, &pos, &k, &v)) {
        struct rosterplan_list *l = v;
        free(l->u);
        free(l->key);
        free(l);
    }
    strmap_free(m);
}

void rosterplan_build(struct rosterplan *p, const struct offhook_config *cfg,
                      rosterplan_allowed_fn allowed, void *allowed_arg)
{
    memset(p, 0, sizeof *p);
    p->cfg = cfg;
    p->mode = cfg->roster_mode;
    p->allowed = allowed;
    p->allowed_arg = allowed_arg;
    strmap_init(&p->by_domain);
    strmap_init(&p->by_group);
    if (p->mode == CFG_ROSTER_NONE)
        return;
    for (size_t i = 0; i < cfg->nusers; i++) {
        const struct cfg_user *u = &cfg->users[i];
        if (p->mode == CFG_ROSTER_EVERYONE)
            list_add(&p->by_domain, domain_of(u->jid), u);
        else
            for (int g = 0; g < u->ngroups; g++)
                list_add(&p->by_group, u->groups[g], u);
    }
}

void rosterplan_free(struct rosterplan *p)
{
    lists_free(&p->by_domain);
    lists_free(&p->by_group);
}

void rosterplan_nick(const struct cfg_user *u, char *out, size_t len)
{
    snprintf(out, len, "%s (phone)", u->name ? u->name : u->jid);
}

static bool allowed(const struct rosterplan *p, const struct cfg_user *u)
{
    return !p->allowed || p->allowed(p->allowed_arg, u->jid);
}

static bool has_group(const struct cfg_user *u, const char *g)
{
    for (int i = 0; i < u->ngroups; i++) {
        if (strcmp(u->groups[i], g) == 0)
            return true;
    }
    return false;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

bool rosterplan_item(const struct rosterplan *p, const struct cfg_user *u,
                     const struct cfg_user *v, struct rosterplan_item *out)
{
    out->ngroups = 0;
    if (p->mode == CFG_ROSTER_NONE || u == v || strcmp(u->jid, v->jid) == 0 || !allowed(p, u))
        return false;
    if (p->mode == CFG_ROSTER_EVERYONE) {
        if (strcmp(domain_of(u->jid), domain_of(v->jid)) != 0)
            return false;
        out->groups[out->ngroups++] = p->cfg->roster_group;
    } else {
        for (int i = 0; i < u->ngroups; i++) {
            if (has_group(v, u->groups[i]))
                out->groups[out->ngroups++] = u->groups[i];
        }
        if (!out->ngroups)
            return false;
        /* The directory's order of a user's groups is not a change. */
        qsort(out->groups, (size_t)out->ngroups, sizeof out->groups[0], cmp_str);
    }
    out->contact = v->contact;
    rosterplan_nick(v, out->name, sizeof out->name);
    return true;
}

struct count_ctx {
    size_t n;
};

static bool count_one(void *arg, const struct rosterplan_item *it)
{
    ((struct count_ctx *)arg)->n++;
    return true;
}

size_t rosterplan_count(const struct rosterplan *p, const struct cfg_user *u)
{
    struct count_ctx c = {0};

    if (p->mode == CFG_ROSTER_NONE || !allowed(p, u))
        return 0;
    if (p->mode == CFG_ROSTER_EVERYONE) {
        const struct rosterplan_list *l = strmap_get(&p->by_domain, domain_of(u->jid));
        return l && l->n ? l->n - 1 : 0;
    }
    if (u->ngroups == 1) {
        const struct rosterplan_list *l = strmap_get(&p->by_group, u->groups[0]);
        return l && l->n ? l->n - 1 : 0;
    }
    rosterplan_each(p, u, count_one, &c);
    return c.n;
}

bool rosterplan_over_limit(const struct rosterplan *p, const struct cfg_user *u)
{
    return rosterplan_count(p, u) > (size_t)p->cfg->roster_max_items;
}

void rosterplan_each(const struct rosterplan *p, const struct cfg_user *u,
                     rosterplan_item_fn fn, void *arg)
{
    struct rosterplan_item it;
    struct strmap seen;

    if (p->mode == CFG_ROSTER_NONE || !allowed(p, u))
        return;
    if (p->mode == CFG_ROSTER_EVERYONE) {
        const struct rosterplan_list *l = strmap_get(&p->by_domain, domain_of(u->jid));
        for (size_t i = 0; l && i < l->n; i++) {
            if (rosterplan_item(p, u, l->u[i], &it) && !fn(arg, &it))
                return;
        }
        return;
    }
    /* A colleague met in two groups is one item, in both groups. */
    strmap_init(&seen);
    for (int g = 0; g < u->ngroups; g++) {
        const struct rosterplan_list *l = strmap_get(&p->by_group, u->groups[g]);
        for (size_t i = 0; l && i < l->n; i++) {
            const struct cfg_user *v = l->u[i];
            if (u->ngroups > 1) {
                if (strmap_get(&seen, v->jid))
                    continue;
                strmap_put(&seen, v->jid, (void *)v);
            }
            if (rosterplan_item(p, u, v, &it) && !fn(arg, &it))
                goto out;
        }
    }
out:
    strmap_free(&seen);
}

void rosterplan_sig(const struct rosterplan_item *it, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "+%s", it->name);

    /* Unit separators: neither a name nor a group holds a control character. */
    for (int i = 0; i < it->ngroups && n < len; i++)
        n += (size_t)snprintf(out + n, len - n, "\x1f%s", it->groups[i]);
}

/* ---- what a change of users changes --------------------------------------------------- */

static bool same_groups(const struct cfg_user *a, const struct cfg_user *b)
{
    if (a->ngroups != b->ngroups)
        return false;
    for (int i = 0; i < a->ngroups; i++) {
        if (!has_group(b, a->groups[i]))
            return false;
    }
    return true;
}

static bool same_name(const struct cfg_user *a, const struct cfg_user *b)
{
    if (!a->name || !b->name)
        return a->name == b->name;
    return strcmp(a->name, b->name) == 0;
}

static bool str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Everyone whose roster may list u's phone contact under plan p. */
static void each_lister(const struct rosterplan *p, const struct cfg_user *u,
                        void (*fn)(void *arg, const struct cfg_user *w), void *arg)
{
    if (p->mode == CFG_ROSTER_EVERYONE) {
        const struct rosterplan_list *l = strmap_get(&p->by_domain, domain_of(u->jid));
        for (size_t i = 0; l && i < l->n; i++)
            fn(arg, l->u[i]);
        return;
    }
    for (int g = 0; p->mode == CFG_ROSTER_GROUPS && g < u->ngroups; g++) {
        const struct rosterplan_list *l = strmap_get(&p->by_group, u->groups[g]);
        for (size_t i = 0; l && i < l->n; i++)
            fn(arg, l->u[i]);
    }
}

struct pair_ctx {
    rosterplan_work_fn fn;
    void *arg;
    const char *jid;       /* the changed user */
    const char *contact;   /* its phone contact, old or new */
};

static void emit_pair(void *arg, const struct cfg_user *w)
{
    struct pair_ctx *c = arg;

    if (strcmp(w->jid, c->jid) != 0)
        c->fn(c->arg, w->jid, c->contact);
}

/* One user as it was (o) and is (n), either NULL: the work its change makes. */
static void user_diff(const struct rosterplan *old, const struct rosterplan *cur,
                      const struct cfg_user *o, const struct cfg_user *n,
                      rosterplan_work_fn fn, void *arg)
{
    struct pair_ctx c = {.fn = fn, .arg = arg, .jid = o ? o->jid : n->jid};

    if (o && n && strcmp(o->contact, n->contact) == 0 && same_name(o, n) && same_groups(o, n))
        return;
    /* Its own roster: a user who comes, goes or changes groups. */
    if (!o || !n || !same_groups(o, n))
        fn(arg, c.jid, NULL);
    /* Its item in everyone else's, under the old contact and the new. */
    if (o) {
        c.contact = o->contact;
        each_lister(old, o, emit_pair, &c);
        if (n)
            each_lister(cur, n, emit_pair, &c);
    }
    if (n && (!o || strcmp(o->contact, n->contact) != 0)) {
        c.contact = n->contact;
        each_lister(cur, n, emit_pair, &c);
        if (o)
            each_lister(old, o, emit_pair, &c);
    }
}

static void all_full(const struct offhook_config *cfg, rosterplan_work_fn fn, void *arg)
{
    for (size_t i = 0; cfg && i < cfg->nusers; i++)
        fn(arg, cfg->users[i].jid, NULL);
}

void rosterplan_diff(const struct rosterplan *old, const struct rosterplan *cur,
                     rosterplan_work_fn fn, void *arg)
{
    const struct offhook_config *oc = old ? old->cfg : NULL, *nc = cur->cfg;

    if (!old || old->mode != cur->mode ||
        oc->roster_max_items != nc->roster_max_items ||
        (cur->mode == CFG_ROSTER_EVERYONE && !str_eq(oc->roster_group, nc->roster_group)) ||
        !str_eq(oc->component_allow_watchers, nc->component_allow_watchers) ||
        !str_eq(oc->component_watchers, nc->component_watchers)) {
        if ((old && old->mode != CFG_ROSTER_NONE) || cur->mode != CFG_ROSTER_NONE) {
            all_full(oc, fn, arg);
            all_full(nc, fn, arg);
        }
        return;
    }
    if (cur->mode == CFG_ROSTER_NONE)
        return;
    /* Every user of either configuration whose item or roster may differ. */
    for (size_t i = 0; i < oc->nusers; i++)
        user_diff(old, cur, &oc->users[i], config_user_by_jid(nc, oc->users[i].jid), fn, arg);
    for (size_t i = 0; i < nc->nusers; i++) {
        if (!config_user_by_jid(oc, nc->users[i].jid))
            user_diff(old, cur, NULL, &nc->users[i], fn, arg);
    }
}
