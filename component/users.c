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

/* Keys of the gateway index: extension (AOR user part), "user@host" of the AOR, and the
 * tel number with only digits and a leading +. */
static void number_key(const char *kind, const char *v, char *out, size_t len)
{
    size_t n = (size_t)snprintf(out, len, "%s:", kind);

    for (; *v && n + 1 < len; v++) {
        if (strcmp(kind, "tel") == 0 && !((*v >= '0' && *v <= '9') || (*v == '+' && n == 4)))
            continue;
        out[n++] = strcmp(kind, "aor") == 0 && *v >= 'A' && *v <= 'Z' ? (char)(*v + 32) : *v;
    }
    out[n] = '\0';
}

static void aor_parts(const char *aor, char *user, size_t ulen, char *key, size_t klen)
{
    const char *p = strchr(aor, ':'), *at;
    size_t n;

    user[0] = key[0] = '\0';
    if (!p || !(at = strchr(p + 1, '@')))
        return;
    n = (size_t)(at - p - 1);
    snprintf(user, ulen, "%.*s", (int)n, p + 1);
    snprintf(key, klen, "%.*s", (int)(n + 1 + strcspn(at + 1, ":;?>")), p + 1);
}

static void gateway_put(struct users *d, char *key, struct cuser *u)
{
    struct cuser *prev = strmap_get(&d->gateway, key);

    if (prev && prev != u) {
        /* Two users share the number: answer neither rather than guess. */
        log_warn("main", "event=gateway_ambiguous key=%s users=%s,%s", key, prev->jid, u->jid);
        strmap_put(&d->gateway, key, NULL);
        free(key);
        return;
    }
    if (prev) {
        free(key);
        return;
    }
    strmap_put(&d->gateway, key, u);
}

static void gateway_clear(struct users *d)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&d->gateway, &pos, &k, &v))
        free((char *)k);
    strmap_free(&d->gateway);
    strmap_init(&d->gateway);
}

static void index_gateway(struct users *d)
{
    size_t pos = 0;
    const char *k;
    void *v;

    gateway_clear(d);
    while (strmap_next(&d->by_jid, &pos, &k, &v)) {
        struct cuser *u = v;
        char key[600], user[256], ua[512];
        for (int i = 0; i < u->cfg->naors; i++) {
            aor_parts(u->cfg->aors[i], user, sizeof user, ua, sizeof ua);
            number_key("ext", user, key, sizeof key);
            gateway_put(d, xstrdup(key), u);
            number_key("aor", ua, key, sizeof key);
            gateway_put(d, xstrdup(key), u);
        }
        if (u->cfg->tel) {
            number_key("tel", u->cfg->tel, key, sizeof key);
            gateway_put(d, xstrdup(key), u);
        }
    }
}

struct cuser *users_by_number(const struct users *d, const char *q)
{
    char key[600], user[256], ua[512];

    if (strncasecmp(q, "sip:", 4) == 0 || strncasecmp(q, "sips:", 5) == 0) {
        aor_parts(q, user, sizeof user, ua, sizeof ua);
        number_key("aor", ua, key, sizeof key);
        if (strmap_get(&d->gateway, key))
            return strmap_get(&d->gateway, key);
        number_key("ext", user, key, sizeof key);
        return strmap_get(&d->gateway, key);
    }
    if (strncasecmp(q, "tel:", 4) == 0)
        q += 4;
    number_key("ext", q, key, sizeof key);
    if (strmap_get(&d->gateway, key))
        return strmap_get(&d->gateway, key);
    number_key("tel", q, key, sizeof key);
    return strlen(key) > 4 ? strmap_get(&d->gateway, key) : NULL;
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

static void user_free(struct users *d, struct cuser *u)
{
    strmap_del(&d->by_jid, u->jid);
    strmap_del(&d->by_contact, u->contact);
    strmap_clear_owned(&u->watchers);
    strmap_free(&u->watchers);
    free(u->jid);
    free(u->contact);
    free(u);
}

/* Reload: users whose contact changed are replaced, removed users are announced (their
 * watchers must see the contact go), everyone else keeps their watchers and state. */
void users_apply(struct users *d, const struct offhook_config *cfg,
                 users_removed_fn on_removed, void *arg)
{
    struct cuser **all = xmalloc((d->by_jid.count + 1) * sizeof *all);
    size_t n = 0, pos = 0;
    const char *k;
    void *v;
    int added = 0, removed = 0;

    while (strmap_next(&d->by_jid, &pos, &k, &v))
        all[n++] = v;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_user *cu = config_user_by_jid(cfg, all[i]->jid);
        if (cu && strcmp(cu->contact, all[i]->contact) == 0) {
            all[i]->cfg = cu;
            continue;
        }
        /* Gone (or renamed): the caller tells its watchers it went offline. */
        on_removed(arg, all[i]);
        user_free(d, all[i]);
        removed++;
    }
    free(all);
    d->cfg = cfg;
    for (size_t i = 0; i < cfg->nusers; i++) {
        if (!strmap_get(&d->by_jid, cfg->users[i].jid)) {
            user_new(d, &cfg->users[i]);
            added++;
        }
    }
    index_domains(d);
    index_gateway(d);
    index_watcher_list(d);
    if (added || removed)
        log_notice("main", "event=users_changed added=%d removed=%d", added, removed);
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
