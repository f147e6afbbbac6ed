/* The component's users: lookups by contact JID and by number (XEP-0100), the watcher
 * policy, and building / rebuilding the indexes from the configuration. No I/O of its own:
 * what it must tell watchers goes through publisher.c and watchers.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "component.h"
#include "config.h"
#include "jid.h"
#include "log.h"
#include "strutil.h"

/* ---- lookups ------------------------------------------------------------------------- */

const struct user_record *cuser_record(const struct component *c, const struct cuser *u)
{
    return u->have_rec && c->sipbridge_alive ? &u->rec : NULL;
}

struct cuser *component_user_by_contact(struct component *c, const char *contact)
{
    return strmap_get(&c->by_contact, contact);
}

bool component_requester_allowed(const struct component *c, const char *bare)
{
    struct jid j;
    const char *policy = c->cfg->component_allow_watchers;

    if (jid_parse(bare, &j) < 0 || !j.local[0])
        return false; /* servers and components do not watch phones */
    if (strcmp(policy, "any") == 0)
        return true;
    if (strcmp(policy, "list") == 0)
        return strmap_get(&c->watcher_list, bare) || strmap_get(&c->watcher_list, j.domain);
    /* same-domain: users of the directory's own domains. */
    return strmap_get(&c->user_domains, j.domain) != NULL;
}

bool component_watcher_allowed(const struct component *c, const struct cuser *u,
                               const char *bare)
{
    return component_requester_allowed(c, bare);
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

static void gateway_put(struct component *c, char *key, struct cuser *u)
{
    struct cuser *prev = strmap_get(&c->gateway, key);

    if (prev && prev != u) {
        /* Two users share the number: answer neither rather than guess. */
        log_warn("main", "event=gateway_ambiguous key=%s users=%s,%s", key, prev->jid, u->jid);
        strmap_put(&c->gateway, key, NULL);
        free(key);
        return;
    }
    if (prev) {
        free(key);
        return;
    }
    strmap_put(&c->gateway, key, u);
}

static void gateway_clear(struct component *c)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&c->gateway, &pos, &k, &v))
        free((char *)k);
    strmap_free(&c->gateway);
    strmap_init(&c->gateway);
}

static void index_gateway(struct component *c)
{
    size_t pos = 0;
    const char *k;
    void *v;

    gateway_clear(c);
    while (strmap_next(&c->by_jid, &pos, &k, &v)) {
        struct cuser *u = v;
        char key[600], user[256], ua[512];
        for (int i = 0; i < u->cfg->naors; i++) {
            aor_parts(u->cfg->aors[i], user, sizeof user, ua, sizeof ua);
            number_key("ext", user, key, sizeof key);
            gateway_put(c, xstrdup(key), u);
            number_key("aor", ua, key, sizeof key);
            gateway_put(c, xstrdup(key), u);
        }
        if (u->cfg->tel) {
            number_key("tel", u->cfg->tel, key, sizeof key);
            gateway_put(c, xstrdup(key), u);
        }
    }
}

struct cuser *component_user_by_number(struct component *c, const char *q)
{
    char key[600], user[256], ua[512];

    if (strncasecmp(q, "sip:", 4) == 0 || strncasecmp(q, "sips:", 5) == 0) {
        aor_parts(q, user, sizeof user, ua, sizeof ua);
        number_key("aor", ua, key, sizeof key);
        if (strmap_get(&c->gateway, key))
            return strmap_get(&c->gateway, key);
        number_key("ext", user, key, sizeof key);
        return strmap_get(&c->gateway, key);
    }
    if (strncasecmp(q, "tel:", 4) == 0)
        q += 4;
    number_key("ext", q, key, sizeof key);
    if (strmap_get(&c->gateway, key))
        return strmap_get(&c->gateway, key);
    number_key("tel", q, key, sizeof key);
    return strlen(key) > 4 ? strmap_get(&c->gateway, key) : NULL;
}

static void watcher_list_clear(struct component *c)
{
    strmap_clear_owned(&c->watcher_list);
}

static void index_watcher_list(struct component *c)
{
    char *copy = xstrdup(c->cfg->component_watchers);
    char *items[256];
    int n = str_split_list(copy, items, 256);

    watcher_list_clear(c);
    for (int i = 0; i < n; i++) {
        char bare[JID_MAX + 1];
        if (jid_to_bare(items[i], bare, sizeof bare) == 0 && !strmap_get(&c->watcher_list, bare)) {
            char *d = xstrdup(bare);
            strmap_put(&c->watcher_list, d, d);
        }
    }
    free(copy);
}

static void domains_clear(struct component *c)
{
    strmap_clear_owned(&c->user_domains);
}

static void index_domains(struct component *c)
{
    domains_clear(c);
    for (size_t i = 0; i < c->cfg->nusers; i++) {
        struct jid j;
        if (jid_parse(c->cfg->users[i].jid, &j) == 0 && !strmap_get(&c->user_domains, j.domain)) {
            char *d = xstrdup(j.domain);
            strmap_put(&c->user_domains, d, d);
        }
    }
}

static struct cuser *user_new(struct component *c, const struct cfg_user *cu)
{
    struct cuser *u = xcalloc(1, sizeof *u);

    u->cfg = cu;
    u->jid = xstrdup(cu->jid);
    u->contact = xstrdup(cu->contact);
    strmap_init(&u->watchers);
    strmap_put(&c->by_jid, u->jid, u);
    strmap_put(&c->by_contact, u->contact, u);
    return u;
}

static void user_free(struct component *c, struct cuser *u)
{
    strmap_del(&c->by_jid, u->jid);
    strmap_del(&c->by_contact, u->contact);
    cuser_watchers_clear(u);
    strmap_free(&u->watchers);
    free(u->jid);
    free(u->contact);
    free(u);
}

/* Reload: users whose contact changed are replaced, removed users tell their watchers
 * the contact is gone, everyone else keeps their watchers and state. */
void component_users_apply(struct component *c, const struct offhook_config *cfg)
{
    struct cuser **all = xmalloc((c->by_jid.count + 1) * sizeof *all);
    size_t n = 0, pos = 0;
    const char *k;
    void *v;
    int added = 0, removed = 0;

    while (strmap_next(&c->by_jid, &pos, &k, &v))
        all[n++] = v;
    for (size_t i = 0; i < n; i++) {
        const struct cfg_user *cu = config_user_by_jid(cfg, all[i]->jid);
        if (cu && strcmp(cu->contact, all[i]->contact) == 0) {
            all[i]->cfg = cu;
            continue;
        }
        /* Gone (or renamed): its watchers see it go offline. */
        pos = 0;
        while (strmap_next(&all[i]->watchers, &pos, &k, &v))
            pub_unavailable(c, all[i], k);
        user_free(c, all[i]);
        removed++;
    }
    free(all);
    c->cfg = cfg;
    for (size_t i = 0; i < cfg->nusers; i++) {
        if (!strmap_get(&c->by_jid, cfg->users[i].jid)) {
            user_new(c, &cfg->users[i]);
            added++;
        }
    }
    index_domains(c);
    index_gateway(c);
    index_watcher_list(c);
    if (added || removed)
        log_notice("main", "event=users_changed added=%d removed=%d", added, removed);
}

/* After a reload tightened [component] allow_watchers: whoever may no longer watch is
 * unsubscribed (and told), in memory and in Redis. */
void component_enforce_watcher_policy(struct component *c)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int dropped = 0;

    while (strmap_next(&c->by_jid, &pos, &k, &v)) {
        struct cuser *u = v;
        char **gone = NULL;
        size_t ngone = 0, wpos = 0;
        const char *w;
        void *val;

        while (strmap_next(&u->watchers, &wpos, &w, &val)) {
            if (!component_watcher_allowed(c, u, w)) {
                gone = xrealloc(gone, (ngone + 1) * sizeof *gone);
                gone[ngone++] = xstrdup(w);
            }
        }
        for (size_t i = 0; i < ngone; i++) {
            pub_unavailable(c, u, gone[i]);
            pub_presence_type(c, u->contact, gone[i], "unsubscribed");
            watchers_remove(c->wstore, u, gone[i]);
            free(gone[i]);
            dropped++;
        }
        free(gone);
    }
    if (dropped)
        log_notice("main", "event=watchers_dropped count=%d reason=\"no longer allowed by "
                           "[component] allow_watchers\"",
                   dropped);
}

void component_users_init(struct component *c, const struct offhook_config *cfg)
{
    c->cfg = cfg;
    strmap_init(&c->by_jid);
    strmap_init(&c->by_contact);
    strmap_init(&c->user_domains);
    strmap_init(&c->gateway);
    strmap_init(&c->watcher_list);
    for (size_t i = 0; i < cfg->nusers; i++)
        user_new(c, &cfg->users[i]);
    index_domains(c);
    index_gateway(c);
    index_watcher_list(c);
}

void component_users_free(struct component *c)
{
    struct cuser **all = xmalloc((c->by_jid.count + 1) * sizeof *all);
    size_t n = 0, pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&c->by_jid, &pos, &k, &v))
        all[n++] = v;
    for (size_t i = 0; i < n; i++)
        user_free(c, all[i]);
    free(all);
    strmap_free(&c->by_jid);
    strmap_free(&c->by_contact);
    domains_clear(c);
    gateway_clear(c);
    strmap_free(&c->gateway);
    watcher_list_clear(c);
    strmap_free(&c->watcher_list);
}
