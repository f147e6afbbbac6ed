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

/* daemon_reload() checked and loaded the file: hand the new configuration over. */
static void on_reload(void *arg, struct offhook_config *next)
{
    struct app *a = arg;

    component_users_apply(&a->c, next);
    component_enforce_watcher_policy(&a->c);
    feed_resync(a->c.feed);
    log_notice("main", "event=reloaded users=%zu", next->nusers);
}

int main(int argc, char **argv)
{
    struct daemon_args args;
    struct app a = {0};
    struct component *c = &a.c;
    struct daemon_hooks hooks = {.cfg = &a.cfg, .apply = on_reload, .stop = on_stop, .arg = &a};
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
    component_users_init(c, a.cfg);

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
    component_users_free(c);
    daemon_teardown();
    if (c->base)
        event_base_free(c->base);
    metrics_reset();
out_cfg:
    config_free(a.cfg);
    free(a.cfg);
    return rc;
}
