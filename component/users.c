/* The component's users: lookups by JID, contact and number (XEP-0100), the watcher
 * policy, each contact's watchers in memory, and building / rebuilding the indexes from
 * the configuration. No I/O: see users.h. */
#include "users.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "jid.h"
#include "log.h"
#include "sipaddr.h"
#include "strutil.h"

/* ---- lookups ------------------------------------------------------------------------- */

struct cuser *users_by_jid(const struct users *d, const char *jid)
{
    return strmap_get(&d->by_jid, jid);
}

struct cuser *users_by_contact(const struct users *d, const char *contact)
{
    return strmap_get(&d->by_contact, contact);
}

bool users_requester_allowed(const struct users *d, const char *bare)
{
    struct jid j;
    const char *policy = d->cfg->component_allow_watchers;

    if (jid_parse(bare, &j) < 0 || !j.local[0])
        return false; /* servers and components do not watch phones */
    if (strcmp(policy, "any") == 0)
        return true;
    if (strcmp(policy, "list") == 0)
        return strmap_get(&d->watcher_list, bare) || strmap_get(&d->watcher_list, j.domain);
    /* same-domain: users of the directory's own domains. */
    return strmap_get(&d->user_domains, j.domain) != NULL;
}

bool users_watcher_allowed(const struct users *d, const struct cuser *u, const char *bare)
{
    return users_requester_allowed(d, bare);
}

bool users_watcher_add(struct cuser *u, const char *bare)
{
    char *key;

    if (strmap_get(&u->watchers, bare))
        return false;
    key = xstrdup(bare);
    strmap_put(&u->watchers, key, key);
    return true;
}

bool users_watcher_del(struct cuser *u, const char *bare)
{
    char *key = strmap_del(&u->watchers, bare);

    free(key);
    return key != NULL;
}

void users_set_record(struct cuser *u, const struct user_record *rec)
{
    u->have_rec = rec != NULL;
    if (!rec) {
        free(u->rec.remote);
        u->rec.remote = NULL;
        return;
    }
    u->rec.state = rec->state;
    u->rec.dir = rec->dir;
    u->rec.reach = rec->reach;
    u->rec.dnd = rec->dnd;
    u->rec.video = rec->video;
    u->rec.since_ms = rec->since_ms;
    u->rec.event_us = rec->event_us;
    /* Most records of a party shown repeat it (ringing, then the call): keep the copy. */
    if (!rec->remote[0]) {
        free(u->rec.remote);
        u->rec.remote = NULL;
    } else if (!u->rec.remote || strcmp(u->rec.remote, rec->remote) != 0) {
        free(u->rec.remote);
        u->rec.remote = xstrdup(rec->remote);
    }
}

void users_get_record(const struct cuser *u, struct user_record *out)
{
    memset(out, 0, sizeof *out);
    out->state = u->rec.state;
    out->dir = u->rec.dir;
    out->reach = u->rec.reach;
    out->dnd = u->rec.dnd;
    out->video = u->rec.video;
    out->since_ms = u->rec.since_ms;
    out->event_us = u->rec.event_us;
    if (u->rec.remote)
        str_copy(out->remote, sizeof out->remote, u->rec.remote);
}

/* The gateway index (XEP-0100 lookups), one key per way a configured address can be
 * asked for (sipaddr.h has the matching rules):
 *   ext:<user part>          an AOR's user part as typed ("1001", "alice")
 *   sip:<user>@<host>        an AOR, whatever its port
 *   sipp:<user>@<host>:<p>   an AOR that gives port p
 *   sipnp:<user>@<host>      an AOR that gives no port (it answers a query for any port)
 *   num:<+digits|digits>     the tel number, normalised
 * A key two users share maps to NULL: neither is answered rather than a guess. */
static void gateway_key(char *out, size_t len, const char *kind, const char *a, const char *b,
                        int port)
{
    if (port)
        snprintf(out, len, "%s:%s@%s:%d", kind, a, b, port);
    else if (b)
        snprintf(out, len, "%s:%s@%s", kind, a, b);
    else
        snprintf(out, len, "%s:%s", kind, a);
}

/* One key of the index, in one allocation with its key (the map's key points at it):
 * three or four per user. */
struct gw_entry {
    struct cuser *u; /* NULL: two users share the address */
    char key[];
};

static void gateway_put(struct users *d, const char *key, struct cuser *u)
{
    struct gw_entry *e = strmap_get(&d->gateway, key);

    if (!e) {
        size_t len = strlen(key) + 1;
        e = xmalloc(sizeof *e + len);
        memcpy(e->key, key, len);
        e->u = u;
        strmap_put(&d->gateway, e->key, e);
        return;
    }
    if (e->u && e->u != u) {
        /* Two users share the address: answer neither rather than guess. */
        log_warn("main", "event=gateway_ambiguous key=%s users=%s,%s", log_q(key),
                 log_q(e->u->jid), log_q(u->jid));
        e->u = NULL;
    }
}

static void gateway_clear(struct users *d)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&d->gateway, &pos, &k, &v)) {
        free(v);
    }
    strmap_free(&d->gateway);
    strmap_init(&d->gateway);
}

/* Puts (add) or takes out (!add) the keys of cu's addresses for u. Taking out a key two
 * users share cannot tell who keeps it: returns false then (the index must be rebuilt). */
static bool gateway_user(struct users *d, const struct cfg_user *cu, struct cuser *u, bool add)
{
    char keys[4 * CFG_MAX_AORS + 1][2 * SIPADDR_PART_MAX + 32];
    char num[SIPADDR_NUMBER_MAX];
    int n = 0;
    bool ok = true;

    for (int i = 0; i < cu->naors && i < CFG_MAX_AORS; i++) {
        struct sipaddr a;
        if (sipaddr_parse(cu->aors[i], &a) < 0 || !a.user[0])
            continue;
        gateway_key(keys[n++], sizeof keys[0], "ext", a.user, NULL, 0);
        gateway_key(keys[n++], sizeof keys[0], "sip", a.user, a.host, 0);
        gateway_key(keys[n++], sizeof keys[0], a.port ? "sipp" : "sipnp", a.user, a.host,
                    a.port);
    }
    if (cu->tel && sipaddr_number(cu->tel, num, sizeof num) == 0)
        gateway_key(keys[n++], sizeof keys[0], "num", num, NULL, 0);
    for (int i = 0; i < n; i++) {
        struct gw_entry *e;
        if (add) {
            gateway_put(d, keys[i], u);
            continue;
        }
        e = strmap_get(&d->gateway, keys[i]);
        if (!e)
            continue;
        if (!e->u) {
            ok = false; /* shared: whoever else has it gets it back on a rebuild */
            continue;
        }
        if (e->u != u)
            continue;
        strmap_del(&d->gateway, keys[i]);
        free(e);
    }
    return ok;
}

static void index_gateway(struct users *d)
{
    size_t pos = 0;
    const char *k;
    void *v;

    gateway_clear(d);
    while (strmap_next(&d->by_jid, &pos, &k, &v)) {
        struct cuser *u = v;
        (void)gateway_user(d, u->cfg, u, true);
    }
}

/* The user a key names, or NULL (none, or shared). */
static struct cuser *gateway_get(const struct users *d, const char *kind, const char *a,
                                 const char *b, int port)
{
    char key[2 * SIPADDR_PART_MAX + 32];

    struct gw_entry *e;

    gateway_key(key, sizeof key, kind, a, b, port);
    e = strmap_get(&d->gateway, key);
    return e ? e->u : NULL;
}

/* A normalised number: an extension, then the tel numbers; a national number (no country
 * code) also by its last digits, when exactly one user's international number ends so. */
static struct cuser *by_number(const struct users *d, const char *num)
{
    struct cuser *u, *found = NULL;
    size_t pos = 0;
    const char *k;
    void *v;

    if ((u = gateway_get(d, "ext", num, NULL, 0)) || (u = gateway_get(d, "num", num, NULL, 0)))
        return u;
    if (num[0] == '+')
        return NULL;
    while (strmap_next(&d->by_jid, &pos, &k, &v)) {
        char tel[SIPADDR_NUMBER_MAX];
        u = v;
        if (!u->cfg->tel || sipaddr_number(u->cfg->tel, tel, sizeof tel) < 0 ||
            !sipaddr_national_matches(num, tel))
            continue;
        if (found && found != u)
            return NULL; /* two countries' numbers end alike: no guess */
        found = u;
    }
    return found;
}

struct cuser *users_by_number(const struct users *d, const char *q)
{
    struct sipaddr a;
    char num[SIPADDR_NUMBER_MAX];

    if (sipaddr_parse(q, &a) == 0) {
        struct cuser *u;
        if (!a.user[0])
            return NULL;
        /* A telephone-subscriber (;user=phone, or a global number a PBX wrote without
         * it) is a number whatever the host: the gateway that routes it. */
        if ((a.user_phone || a.user[0] == '+') && sipaddr_number(a.user, num, sizeof num) == 0)
            return by_number(d, num);
        if (!a.port)
            return gateway_get(d, "sip", a.user, a.host, 0);
        if ((u = gateway_get(d, "sipp", a.user, a.host, a.port)))
            return u;
        return gateway_get(d, "sipnp", a.user, a.host, 0);
    }
    if (strncasecmp(q, "sip:", 4) == 0 || strncasecmp(q, "sips:", 5) == 0 || strchr(q, '<'))
        return NULL; /* a SIP address that does not parse names nobody */
    if (sipaddr_number(q, num, sizeof num) == 0)
        return by_number(d, num);
    return gateway_get(d, "ext", q, NULL, 0);
}

static void watcher_list_clear(struct users *d)
{
    strmap_clear_owned(&d->watcher_list);
}

static void index_watcher_list(struct users *d)
{
    char *copy = xstrdup(d->cfg->component_watchers);
    char *items[256];
    int n = str_split_list(copy, items, 256);

    watcher_list_clear(d);
    for (int i = 0; i < n; i++) {
        char bare[JID_MAX + 1];
        if (jid_to_bare(items[i], bare, sizeof bare) == 0 && !strmap_get(&d->watcher_list, bare)) {
            char *w = xstrdup(bare);
            strmap_put(&d->watcher_list, w, w);
        }
    }
    free(copy);
}

static void domains_clear(struct users *d)
{
    strmap_clear_owned(&d->user_domains);
}

static void index_domains(struct users *d)
{
    domains_clear(d);
    for (size_t i = 0; i < d->cfg->nusers; i++) {
        struct jid j;
        if (jid_parse(d->cfg->users[i].jid, &j) == 0 && !strmap_get(&d->user_domains, j.domain)) {
            char *dom = xstrdup(j.domain);
            strmap_put(&d->user_domains, dom, dom);
        }
    }
}

static struct cuser *user_new(struct users *d, const struct cfg_user *cu)
{
    struct cuser *u = xcalloc(1, sizeof *u);

    u->cfg = cu;
    u->jid = xstrdup(cu->jid);
    u->contact = xstrdup(cu->contact);
    strmap_init(&u->watchers);
    strmap_put(&d->by_jid, u->jid, u);
    strmap_put(&d->by_contact, u->contact, u);
    return u;
}

void users_note_refused(struct cuser *u, const char *bare, const char *request)
{
    struct users_refusal *slot = NULL;

    if (!u->refused)
        u->refused = xcalloc(USERS_REFUSED_MAX, sizeof *u->refused);
    for (int i = 0; i < USERS_REFUSED_MAX && !slot; i++) {
        if (u->refused[i].watcher && strcmp(u->refused[i].watcher, bare) == 0)
            slot = &u->refused[i];
    }
    if (!slot) {
        /* An empty slot, else the one refused longest ago. */
        slot = &u->refused[0];
        for (int i = 0; i < USERS_REFUSED_MAX; i++) {
            if (!u->refused[i].watcher) {
                slot = &u->refused[i];
                break;
            }
            if (u->refused[i].at_ms < slot->at_ms)
                slot = &u->refused[i];
        }
        free(slot->watcher);
        slot->watcher = xstrdup(bare);
        slot->times = 0;
    }
    str_copy(slot->request, sizeof slot->request, request);
    slot->at_ms = clock_wall_ms();
    slot->times++;
    u->nrefused++;
}

static void user_free(struct users *d, struct cuser *u)
{
    for (int i = 0; u->refused && i < USERS_REFUSED_MAX; i++)
        free(u->refused[i].watcher);
    free(u->refused);
    strmap_del(&d->by_jid, u->jid);
    strmap_del(&d->by_contact, u->contact);
    strmap_clear_owned(&u->watchers);
    strmap_free(&u->watchers);
    free(u->rec.remote);
    free(u->jid);
    free(u->contact);
    free(u);
}

/* Reload: users whose contact changed are replaced, removed users are announced (their
 * watchers must see the contact go), everyone else keeps their watchers and state. */
static bool same_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

/* Whether a and b show the same phone contact: name, phones, number. */
static bool same_shown(const struct cfg_user *a, const struct cfg_user *b)
{
    if (!same_str(a->name, b->name) || !same_str(a->tel, b->tel) || a->naors != b->naors)
        return false;
    for (int i = 0; i < a->naors; i++) {
        if (strcmp(a->aors[i], b->aors[i]) != 0)
            return false;
    }
    return true;
}

void users_apply(struct users *d, const struct offhook_config *cfg,
                 const struct users_apply_ops *ops, void *arg)
{
    struct cuser **all = xmalloc((d->by_jid.count + 1) * sizeof *all);
    size_t n = 0, pos = 0;
    const char *k;
    void *v;
    int added = 0, removed = 0, changed = 0;

    /* The gateway index follows the users one by one (a directory change of one user
     * must not rebuild 10,000 users' keys), unless a shared address is at stake. */
    bool rebuild = false;

    while (strmap_next(&d->by_jid, &pos, &k, &v))
        all[n++] = v;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_user *cu = config_user_by_jid(cfg, all[i]->jid);
        if (cu && strcmp(cu->contact, all[i]->contact) == 0) {
            bool same = same_shown(all[i]->cfg, cu);
            if (!same && !gateway_user(d, all[i]->cfg, all[i], false))
                rebuild = true;
            all[i]->cfg = cu;
            if (!same) {
                if (!rebuild)
                    (void)gateway_user(d, cu, all[i], true);
                changed++;
                if (ops->on_changed)
                    ops->on_changed(arg, all[i]);
            }
            continue;
        }
        /* Gone (or renamed): the caller tells its watchers it went offline. */
        if (!gateway_user(d, all[i]->cfg, all[i], false))
            rebuild = true;
        ops->on_removed(arg, all[i]);
        user_free(d, all[i]);
        removed++;
    }
    free(all);
    d->cfg = cfg;
    for (size_t i = 0; i < cfg->nusers; i++) {
        if (!strmap_get(&d->by_jid, cfg->users[i].jid)) {
            struct cuser *u = user_new(d, &cfg->users[i]);
            if (!rebuild)
                (void)gateway_user(d, u->cfg, u, true);
            added++;
        }
    }
    index_domains(d);
    if (rebuild)
        index_gateway(d);
    index_watcher_list(d);
    if (added || removed || changed)
        log_notice("main", "event=users_changed added=%d removed=%d changed=%d", added, removed,
                   changed);
}

void users_init(struct users *d, const struct offhook_config *cfg)
{
    d->cfg = cfg;
    strmap_init(&d->by_jid);
    strmap_init(&d->by_contact);
    strmap_init(&d->user_domains);
    strmap_init(&d->gateway);
    strmap_init(&d->watcher_list);
    for (size_t i = 0; i < cfg->nusers; i++)
        user_new(d, &cfg->users[i]);
    index_domains(d);
    index_gateway(d);
    index_watcher_list(d);
}

void users_free(struct users *d)
{
    struct cuser **all = xmalloc((d->by_jid.count + 1) * sizeof *all);
    size_t n = 0, pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&d->by_jid, &pos, &k, &v))
        all[n++] = v;
    for (size_t i = 0; i < n; i++)
        user_free(d, all[i]);
    free(all);
    strmap_free(&d->by_jid);
    strmap_free(&d->by_contact);
    domains_clear(d);
    gateway_clear(d);
    strmap_free(&d->gateway);
    watcher_list_clear(d);
    strmap_free(&d->watcher_list);
}
