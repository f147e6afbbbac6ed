/* offhook-component: an XEP-0114 external component that shows each user's desk-phone
 * state as the presence of a phone contact on its domain. One libevent loop drives
 * libstrophe (xmpplink.c), hiredis (feed.c, watchers.c) and the metrics endpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "component.h"
#include "config.h"
#include "pep.h"
#include "daemon.h"
#include "httpd.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "redislink.h"
#include "sbuf.h"
#include "strutil.h"
#include "version.h"
#include "xmpplink.h"

#define STATUS_INTERVAL_S 10 /* systemd STATUS= refresh once ready */

struct app {
    const char *config_path;
    struct offhook_config *cfg;
    struct component c;
    struct httpd *http;
    struct event *status_timer;
    bool ready_sent;
};

/* ---- users ------------------------------------------------------------------------- */

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
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&c->watcher_list, &pos, &k, &v))
        free(v);
    strmap_free(&c->watcher_list);
    strmap_init(&c->watcher_list);
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
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&c->user_domains, &pos, &k, &v))
        free(v);
    strmap_free(&c->user_domains);
    strmap_init(&c->user_domains);
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
static void apply_users(struct component *c, const struct offhook_config *cfg)
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
static void enforce_watcher_policy(struct component *c)
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

/* ---- readiness, status ------------------------------------------------------------- */

static bool is_ready(void *arg, struct sbuf *why)
{
    struct app *a = arg;
    bool ok = true;

    if (!xmpplink_up(a->c.xmpp)) {
        sbuf_puts(why, "xmpp: stream not up\n");
        ok = false;
    }
    if (!feed_synced(a->c.feed)) {
        sbuf_puts(why, "redis: state not loaded\n");
        ok = false;
    }
    if (!watchers_up(a->c.wstore)) {
        sbuf_puts(why, "redis: watchers not loaded\n");
        ok = false;
    }
    return ok;
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    struct sbuf why;
    bool ready;

    sbuf_init(&why);
    ready = is_ready(a, &why);
    sbuf_free(&why);
    if (ready && !a->ready_sent) {
        struct timeval slow = {.tv_sec = STATUS_INTERVAL_S};
        a->ready_sent = true;
        /* Checked every second until ready; then STATUS= only needs refreshing. */
        event_del(a->status_timer);
        event_add(a->status_timer, &slow);
        log_notice("main", "event=ready users=%zu", a->c.by_jid.count);
        daemon_notify("READY=1");
    }
    daemon_notify("STATUS=users=%zu xmpp=%s redis=%s stanzas_sent=%lu", a->c.by_jid.count,
                  xmpplink_up(a->c.xmpp) ? "up" : "down",
                  feed_synced(a->c.feed) ? "synced" : "down", xmpplink_sent(a->c.xmpp));
}

/* ---- link events ------------------------------------------------------------------- */

static void on_xmpp_up(void *arg)
{
    struct component *c = arg;

    pep_connected(c->pep);
    /* Before the feed has every user's state, it would publish "unknown" for all. */
    if (feed_synced(c->feed))
        pub_all(c);
}

static void on_xmpp_down(void *arg)
{
    struct component *c = arg;
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&c->by_jid, &pos, &k, &v))
        ((struct cuser *)v)->sent_valid = false;
}

static void on_xmpp_stanza(void *arg, xmpp_stanza_t *st)
{
    router_stanza(arg, st);
}

static const struct xmpplink_ops link_ops = {
    .on_up = on_xmpp_up,
    .on_down = on_xmpp_down,
    .on_stanza = on_xmpp_stanza,
};

/* ---- signals ----------------------------------------------------------------------- */

static void on_stop(void *arg)
{
    struct app *a = arg;

    daemon_notify("STOPPING=1");
    if (!a->cfg->component_keep_on_stop)
        pub_goodbye(&a->c);
    event_base_loopexit(a->c.base, NULL);
}

static void on_reload(void *arg)
{
    struct app *a = arg;
    struct offhook_config *next = xcalloc(1, sizeof *next);
    struct cfg_errors errs = {0};
    char diff[512];

    if (config_load(a->config_path, next, &errs) != 0) {
        for (size_t i = 0; i < errs.n; i++)
            log_err("main", "event=reload_rejected problem=\"%s\"", errs.msg[i]);
        log_err("main", "event=reload_rejected problems=%zu action=keeping_old_config", errs.n);
        cfg_errors_free(&errs);
        config_free(next);
        free(next);
        return;
    }
    cfg_errors_free(&errs);
    if (config_diff_restart_keys(a->cfg, next, diff, sizeof diff) > 0)
        log_warn("main", "event=reload_partial restart_needed_for=\"%s\"", diff);
    if (log_set_level_name(next->log_level) < 0)
        log_warn("main", "event=bad_log_level");
    apply_users(&a->c, next);
    config_free(a->cfg);
    free(a->cfg);
    a->cfg = next;
    enforce_watcher_policy(&a->c);
    feed_resync(a->c.feed);
    log_notice("main", "event=reloaded users=%zu", next->nusers);
}

int main(int argc, char **argv)
{
    struct daemon_args args;
    struct app a = {0};
    struct component *c = &a.c;
    struct daemon_hooks hooks = {.reload = on_reload, .stop = on_stop, .arg = &a};
    struct timeval status_tv = {.tv_sec = 1};
    int rc = 1;

    daemon_parse_args(argc, argv, "offhook-component",
                      "XEP-0114 component showing desk-phone state as XMPP presence.", &args);
    config_set_secret_use(CFG_SECRET_XMPP | CFG_SECRET_REDIS);
    log_init("offhook-component");
    a.config_path = args.config_path;
    a.cfg = xcalloc(1, sizeof *a.cfg);
    if (daemon_load_config(args.config_path, a.cfg) < 0)
        goto out_cfg;
    if (!a.cfg->xmpp_secret[0]) {
        /* Only the component needs it: sipbridge's user need not be able to read it. */
        fprintf(stderr, "%s: [xmpp] secret (or secret_file) is required by "
                        "offhook-component\n1 problem in %s\n",
                args.config_path, args.config_path);
        goto out_cfg;
    }
    if (args.check_config) {
        printf("%s: OK (%zu users)\n", args.config_path, a.cfg->nusers);
        rc = 0;
        goto out_cfg;
    }
    log_notice("main", "event=starting version=%s config=%s users=%zu domain=%s",
               OFFHOOK_VERSION, args.config_path, a.cfg->nusers, a.cfg->xmpp_domain);
    c->base = event_base_new();
    c->cfg = a.cfg;
    strmap_init(&c->by_jid);
    strmap_init(&c->by_contact);
    strmap_init(&c->user_domains);
    strmap_init(&c->gateway);
    strmap_init(&c->watcher_list);
    for (size_t i = 0; i < a.cfg->nusers; i++)
        user_new(c, &a.cfg->users[i]);
    index_domains(c);
    index_gateway(c);
    index_watcher_list(c);

    httpd_register_process_metrics();
    redislink_register_metrics();
    xmpplink_register_metrics();
    router_register_metrics();
    pub_register_metrics();
    feed_register_metrics();
    pep_register_metrics();
    health_register_metrics();
    daemon_setup(c->base, &hooks);
    if (a.cfg->component_metrics[0]) {
        a.http = httpd_start(c->base, a.cfg->component_metrics, is_ready, &a);
        if (!a.http)
            goto out;
    }
    c->pep = pep_new(c);
    c->feed = feed_new(c);
    c->health = health_new(c);
    c->wstore = watchers_new(c);
    c->xmpp = xmpplink_new(c->base, a.cfg, &link_ops, c);
    a.status_timer = event_new(c->base, -1, EV_PERSIST, on_status, &a);
    event_add(a.status_timer, &status_tv);

    event_base_dispatch(c->base);
    rc = 0;
    log_notice("main", "event=stopped");
out:
    if (a.status_timer)
        event_free(a.status_timer);
    xmpplink_free(c->xmpp);
    health_free(c->health);
    pep_free(c->pep);
    watchers_free(c->wstore);
    feed_free(c->feed);
    httpd_free(a.http);
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
    }
    strmap_free(&c->by_jid);
    strmap_free(&c->by_contact);
    domains_clear(c);
    gateway_clear(c);
    strmap_free(&c->gateway);
    watcher_list_clear(c);
    strmap_free(&c->watcher_list);
    daemon_teardown();
    if (c->base)
        event_base_free(c->base);
    metrics_reset();
out_cfg:
    config_free(a.cfg);
    free(a.cfg);
    return rc;
}
