/* The component's users: lookups by JID, contact and number (XEP-0100), the watcher
 * policy, each contact's watchers in memory, and building / rebuilding the indexes from
 * the configuration. No I/O: see users.h. */
#include "users.h"

#include <stdint.h>
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

/* The gateway index (XEP-0100 lookups). One entry per user and user part of its AORs
 * ("1001", "alice": what an extension is typed as), in `gateway`, and one per user and
 * tel number, normalised, in `gateway_tel`: the one form each address is found by. A
 * query is normalised into that form (sipaddr.h has the rules) and a SIP URI's host and
 * port are checked against the AORs of the users holding its user part (most often one
 * user, one AOR or two). An entry is one allocation with its key; users sharing a key
 * are chained from the entry the map holds. At 100,000 users this is one entry a user
 * instead of one per way an address can be asked for (its user part, user@host,
 * user@host:port), ~140 bytes a user less.
 *
 * The rules, as the keys of the earlier index had them: an address two users share
 * answers neither rather than a guess, whatever else is configured.
 *   extension q         the users with an AOR whose user part is q
 *   sip:user@host       ... with that user part and host, whatever their port
 *   sip:user@host:port  ... and that port; if that is not one user, an AOR with that
 *                       user part and host and no port (it answers any port)
 *   a number            an extension, then the users whose tel is that number */
struct gw_entry {
    struct gw_entry *next;       /* another user with the same key (owned by the chain) */
    struct cuser *u;
    char key[];                  /* the map's key while this entry heads the chain */
};

/* What a user's AOR must share with the query to hold it (see above). */
enum gw_form { GW_EXT, GW_SIP, GW_SIP_PORT, GW_SIP_NO_PORT };

/* The key of an address in the form of the earlier index, for the ambiguity log only
 * (operators grep for it). */
static void gw_key_text(char *out, size_t len, enum gw_form form, const struct sipaddr *a)
{
    switch (form) {
    case GW_EXT:
        snprintf(out, len, "ext:%s", a->user);
        break;
    case GW_SIP:
        snprintf(out, len, "sip:%s@%s", a->user, a->host);
        break;
    case GW_SIP_PORT:
        snprintf(out, len, "sipp:%s@%s:%d", a->user, a->host, a->port);
        break;
    case GW_SIP_NO_PORT:
        snprintf(out, len, "sipnp:%s@%s", a->user, a->host);
        break;
    }
}

/* Whether AOR a answers the query q in form. */
static bool gw_form_matches(enum gw_form form, const struct sipaddr *a, const struct sipaddr *q)
{
    if (strcmp(a->user, q->user) != 0)
        return false;
    if (form == GW_EXT)
        return true;
    if (strcmp(a->host, q->host) != 0)
        return false;
    return form == GW_SIP || (form == GW_SIP_PORT && a->port == q->port) ||
           (form == GW_SIP_NO_PORT && !a->port);
}

/* Whether one of u's AORs answers q in form. */
static bool gw_user_matches(const struct cuser *u, enum gw_form form, const struct sipaddr *q)
{
    for (int i = 0; i < u->cfg->naors && i < CFG_MAX_AORS; i++) {
        struct sipaddr a;
        if (sipaddr_parse(u->cfg->aors[i], &a) == 0 && gw_form_matches(form, &a, q))
            return true;
    }
    return false;
}

/* How many users other than skip answer q in form: 0, 1 (*first is that user) or 2 (two
 * or more); -1 if the first max_walk entries of the chain did not tell. */
static int gw_holders(const struct users *d, enum gw_form form, const struct sipaddr *q,
                      const struct cuser *skip, struct cuser **first, size_t max_walk)
{
    int n = 0;
    size_t walked = 0;
    struct gw_entry *e;

    *first = NULL;
    for (e = strmap_get(&d->gateway, q->user); e && n < 2; e = e->next) {
        if (walked++ == max_walk)
            return -1;
        if (e->u == skip || !gw_user_matches(e->u, form, q))
            continue;
        if (!n++)
            *first = e->u;
    }
    return n;
}

/* The one user answering q in form, or NULL (nobody, or shared). */
static struct cuser *gw_get(const struct users *d, enum gw_form form, const struct sipaddr *q)
{
    struct cuser *u;

    return gw_holders(d, form, q, NULL, &u, SIZE_MAX) == 1 ? u : NULL;
}

/* The one user whose tel is num (normalised), or NULL (nobody, or shared). */
static struct cuser *gw_get_tel(const struct users *d, const char *num)
{
    struct gw_entry *e = strmap_get(&d->gateway_tel, num);

    return e && !e->next ? e->u : NULL;
}

static void gw_put(struct strmap *m, const char *key, struct cuser *u)
{
    struct gw_entry *head = strmap_get(m, key), *e;
    size_t len = strlen(key) + 1;

    /* Two AORs of u with one user part: one entry. u's entries under one key are put in
     * one gateway_user call, each right after the head, so an earlier one is the head or
     * the entry after it: no walk of the chain (its length is the number of users sharing
     * the key). */
    if (head && (head->u == u || (head->next && head->next->u == u)))
        return;
    e = xmalloc(sizeof *e + len);
    memcpy(e->key, key, len);
    e->u = u;
    e->next = NULL;
    if (!head) {
        strmap_put(m, e->key, e);
        return;
    }
    e->next = head->next;
    head->next = e;
}

static void gw_del(struct strmap *m, const char *key, const struct cuser *u)
{
    struct gw_entry *head = strmap_get(m, key), *prev = NULL, *e;

    for (e = head; e && e->u != u; e = e->next)
        prev = e;
    if (!e)
        return;
    if (prev) {
        prev->next = e->next;
    } else {
        /* The map's key is the head's own: the next entry, if any, takes its place. */
        strmap_del(m, key);
        if (e->next)
            strmap_put(m, e->next->key, e->next);
    }
    free(e);
}

static void gw_clear_map(struct strmap *m)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(m, &pos, &k, &v)) {
        struct gw_entry *e = v;
        while (e) {
            struct gw_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    strmap_free(m);
    strmap_init(m);
}

static void gateway_clear(struct users *d)
{
    gw_clear_map(&d->gateway);
    gw_clear_map(&d->gateway_tel);
}

/* The ambiguity note looks this far down a user part's chain, no further: users added one
 * by one must not cost the length of the chain each (20,000 users sharing one user part on
 * different hosts took 50 s to load when it walked them all). A note a longer chain would
 * have given is not written; lookups still walk the whole chain. */
#define GW_NOTE_WALK 64

/* Logs each address u now shares with exactly one other user (who answered it alone
 * until now: neither does from now on), as the earlier index did key by key. */
static void gw_note_shared(const struct users *d, const struct cfg_user *cu,
                           const struct cuser *u, const char *num)
{
    struct sipaddr a[CFG_MAX_AORS];
    bool ok[CFG_MAX_AORS] = {false};
    char key[2 * SIPADDR_PART_MAX + 32];
    struct cuser *other;

    for (int i = 0; i < cu->naors && i < CFG_MAX_AORS; i++) {
        enum gw_form forms[3] = {GW_EXT, GW_SIP, GW_SIP_NO_PORT};
        if (sipaddr_parse(cu->aors[i], &a[i]) < 0 || !a[i].user[0])
            continue;
        ok[i] = true;
        if (a[i].port)
            forms[2] = GW_SIP_PORT;
        for (int f = 0; f < 3; f++) {
            bool again = false;
            /* An address an earlier AOR of u gave already was noted then. */
            for (int j = 0; j < i && !again; j++)
                again = ok[j] && gw_form_matches(forms[f], &a[j], &a[i]);
            if (again || gw_holders(d, forms[f], &a[i], u, &other, GW_NOTE_WALK) != 1)
                continue;
            gw_key_text(key, sizeof key, forms[f], &a[i]);
            log_warn("main", "event=gateway_ambiguous key=%s users=%s,%s", log_q(key),
                     log_q(other->jid), log_q(u->jid));
        }
    }
    if (num) {
        struct gw_entry *e = strmap_get(&d->gateway_tel, num);
        if (e && !e->next && e->u != u) {
            snprintf(key, sizeof key, "num:%s", num);
            log_warn("main", "event=gateway_ambiguous key=%s users=%s,%s", log_q(key),
                     log_q(e->u->jid), log_q(u->jid));
        }
    }
}

/* Puts (add) or takes out (!add) the entries of cu's addresses for u. */
static void gateway_user(struct users *d, const struct cfg_user *cu, struct cuser *u, bool add)
{
    char num[SIPADDR_NUMBER_MAX];
    bool have_num = cu->tel && sipaddr_number(cu->tel, num, sizeof num) == 0;

    if (add)
        gw_note_shared(d, cu, u, have_num ? num : NULL);
    for (int i = 0; i < cu->naors && i < CFG_MAX_AORS; i++) {
        struct sipaddr a;
        if (sipaddr_parse(cu->aors[i], &a) < 0 || !a.user[0])
            continue;
        if (add)
            gw_put(&d->gateway, a.user, u);
        else
            gw_del(&d->gateway, a.user, u);
    }
    if (have_num) {
        if (add)
            gw_put(&d->gateway_tel, num, u);
        else
            gw_del(&d->gateway_tel, num, u);
    }
}

static void index_gateway(struct users *d)
{
    size_t pos = 0;
    const char *k;
    void *v;

    gateway_clear(d);
    while (strmap_next(&d->by_jid, &pos, &k, &v)) {
        struct cuser *u = v;
        gateway_user(d, u->cfg, u, true);
    }
}

/* A normalised number: an extension, then the tel numbers; a national number (no country
 * code) also by its last digits, when exactly one user's international number ends so. */
static struct cuser *by_number(const struct users *d, const char *num)
{
    struct cuser *u, *found = NULL;
    struct sipaddr q = {0};
    size_t pos = 0;
    const char *k;
    void *v;

    str_copy(q.user, sizeof q.user, num);
    if ((u = gw_get(d, GW_EXT, &q)) || (u = gw_get_tel(d, num)))
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
            return gw_get(d, GW_SIP, &a);
        if ((u = gw_get(d, GW_SIP_PORT, &a)))
            return u;
        return gw_get(d, GW_SIP_NO_PORT, &a);
    }
    if (strncasecmp(q, "sip:", 4) == 0 || strncasecmp(q, "sips:", 5) == 0 || strchr(q, '<'))
        return NULL; /* a SIP address that does not parse names nobody */
    if (sipaddr_number(q, num, sizeof num) == 0)
        return by_number(d, num);
    {
        struct sipaddr ext = {0};
        /* Longer than any user part an AOR can have: nobody's. */
        if (strlen(q) >= sizeof ext.user)
            return NULL;
        str_copy(ext.user, sizeof ext.user, q);
        return gw_get(d, GW_EXT, &ext);
    }
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
    size_t jlen = strlen(cu->jid) + 1, clen = strlen(cu->contact) + 1;
    /* The JID and contact in the user's own allocation: a copy (the configuration's go
     * at the next reload, and maps here and in presence_out.c are keyed by these), and
     * one chunk, not three: 32 bytes a user less at 100,000 users. */
    struct cuser *u = xcalloc(1, sizeof *u + jlen + clen);

    u->cfg = cu;
    u->jid = (char *)(u + 1);
    memcpy(u->jid, cu->jid, jlen);
    u->contact = u->jid + jlen;
    memcpy(u->contact, cu->contact, clen);
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

    /* The gateway index follows the users one by one: a directory change of one user
     * must not rebuild 10,000 users' entries, and each entry names its user, so taking
     * out a shared address leaves the others' (see gateway_user). */
    while (strmap_next(&d->by_jid, &pos, &k, &v))
        all[n++] = v;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_user *cu = config_user_by_jid(cfg, all[i]->jid);
        if (cu && strcmp(cu->contact, all[i]->contact) == 0) {
            bool same = same_shown(all[i]->cfg, cu);
            if (!same)
                gateway_user(d, all[i]->cfg, all[i], false);
            all[i]->cfg = cu;
            if (!same) {
                gateway_user(d, cu, all[i], true);
                changed++;
                if (ops->on_changed)
                    ops->on_changed(arg, all[i]);
            }
            continue;
        }
        /* Gone (or renamed): the caller tells its watchers it went offline. */
        gateway_user(d, all[i]->cfg, all[i], false);
        ops->on_removed(arg, all[i]);
        user_free(d, all[i]);
        removed++;
    }
    free(all);
    d->cfg = cfg;
    for (size_t i = 0; i < cfg->nusers; i++) {
        if (!strmap_get(&d->by_jid, cfg->users[i].jid)) {
            struct cuser *u = user_new(d, &cfg->users[i]);
            gateway_user(d, u->cfg, u, true);
            added++;
        }
    }
    index_domains(d);
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
    strmap_init(&d->gateway_tel);
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
    watcher_list_clear(d);
    strmap_free(&d->watcher_list);
}
