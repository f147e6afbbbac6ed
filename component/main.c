/* offhook-component: an XEP-0114 external component that shows each user's desk-phone
 * state as the presence of a phone contact on its domain. One libevent loop drives
 * libstrophe (xmpplink.c), hiredis (feed.c, health.c, watchers.c) and the metrics
 * endpoint.
 *
 * This file builds the modules and wires them; it is the only one that knows them all.
 * Calls go down the data flow; news comes up through each module's ops, to here:
 *
 *   Redis: feed, health, watchers --ops--> main --> publisher --view--> pep, presence_out
 *   Redis: lease (active or standby) --ops--> main --> xmpplink, watchers
 *   XMPP:  xmpplink --ops--> main --> router --> publisher, privileged, presence_out
 *                                     router --ops--> main --> watchers
 *                                     privileged --ops--> main --> pep, publisher
 *   pep, privileged, presence_out, router --stanza_out--> main --> xmpplink
 *
 * users.c (the directory) and view.c sit under all of them. See docs/architecture.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "config.h"
#include "console.h"
#include "ctlcommon.h"
#include "ctlsock.h"
#include "daemon.h"
#include "directory.h"
#include "feed.h"
#include "health.h"
#include "httpd.h"
#include "lease.h"
#include "log.h"
#include "metrics.h"
#include "pep.h"
#include "presence_out.h"
#include "privileged.h"
#include "publisher.h"
#include "redislink.h"
#include "router.h"
#include "sbuf.h"
#include "stanza.h"
#include "strutil.h"
#include "users.h"
#include "vcard_out.h"
#include "version.h"
#include "watchers.h"
#include "xmpplink.h"

#define STATUS_INTERVAL_S 10 /* systemd STATUS= refresh once ready */
#define STOP_WAIT_S 3        /* a clean stop waits this long at most for PEP answers */

struct app {
    const char *config_path;
    struct offhook_config *cfg;
    struct event_base *base;
    struct users users;           /* the directory every module reads */
    struct stanza_out out;        /* how the modules' stanzas reach xmpplink */
    struct xmpplink *xmpp;
    struct feed *feed;
    struct health *health;
    struct watchers *wstore;
    struct presence_out *presout;
    struct privileged *priv;
    struct pep *pep;
    struct vcard_out *vcard;
    struct publisher *pub;
    struct router *router;
    struct httpd *http;
    struct directory *dir;
    struct ctlsock *ctl;
    struct event *status_timer;
    struct event *stop_timer;     /* STOP_WAIT_S after a clean stop began */
    bool ready_sent;
    struct lease *lease;          /* the "component" group: its holder is the active one */
    char name[STORECODEC_MEMBER_NAME_MAX + 1];
    bool active;                  /* holds the lease: connected to the XMPP server */
    bool others_ready;            /* the last view had a standby ready to take over */
    bool stopping;
    bool left;                    /* lease_leave called: the loop exits once done */
    bool stop_on_view;            /* SIGTERM: decide with the next view (a fresh one) */
    struct event *view_timer;     /* ... or after STOP_VIEW_WAIT_MS without one */
};

#define STOP_VIEW_WAIT_MS 1500 /* a fresh view of the standbys before a clean stop */

static struct metric *m_active, *m_takeovers;

/* ---- readiness, status ------------------------------------------------------------- */

static bool is_ready(void *arg, struct sbuf *why)
{
    struct app *a = arg;
    bool ok = true;

    if (!directory_ready(a->dir, why))
        ok = false;
    if (!a->active) {
        /* A standby is ready once it could take over: state loaded, lease held. */
        if (!feed_synced(a->feed)) {
            sbuf_puts(why, "redis: state not loaded\n");
            ok = false;
        }
        if (!lease_held(a->lease)) {
            sbuf_puts(why, "cluster: no lease in Redis yet\n");
            ok = false;
        }
        return ok;
    }
    if (!xmpplink_up(a->xmpp)) {
        sbuf_puts(why, "xmpp: stream not up\n");
        ok = false;
    }
    if (!feed_synced(a->feed)) {
        sbuf_puts(why, "redis: state not loaded\n");
        ok = false;
    }
    if (!watchers_up(a->wstore)) {
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
        log_notice("main", "event=ready users=%zu role=%s instance=%s", a->users.by_jid.count,
                   a->active ? "active" : "standby", log_q(a->name));
        daemon_notify("READY=1");
    }
    daemon_notify("STATUS=users=%zu xmpp=%s redis=%s stanzas_sent=%lu role=%s",
                  a->users.by_jid.count, xmpplink_up(a->xmpp) ? "up" : "down",
                  feed_synced(a->feed) ? "synced" : "down", xmpplink_sent(a->xmpp),
                  a->active ? "active" : "standby");
}

/* ---- the XMPP link ------------------------------------------------------------------ */

static bool out_up(void *arg)
{
    struct app *a = arg;

    return xmpplink_up(a->xmpp);
}

static int out_send(void *arg, xmpp_stanza_t *st, const char *kind)
{
    struct app *a = arg;

    return xmpplink_send(a->xmpp, st, kind);
}

static void on_xmpp_up(void *arg)
{
    struct app *a = arg;

    priv_connected(a->priv);
    pep_connected(a->pep);
    vcard_connected(a->vcard);
    /* Before the feed has every user's state, it would publish "unknown" for all. */
    if (feed_synced(a->feed))
        pub_all(a->pub);
}

static void on_xmpp_down(void *arg)
{
    struct app *a = arg;

    priv_link_down(a->priv);
    presout_link_down(a->presout);
}

static void on_xmpp_stanza(void *arg, xmpp_stanza_t *st)
{
    struct app *a = arg;

    router_stanza(a->router, st);
}

static const struct xmpplink_ops link_ops = {
    .on_up = on_xmpp_up,
    .on_down = on_xmpp_down,
    .on_stanza = on_xmpp_stanza,
};

/* ---- news from Redis ---------------------------------------------------------------- */

static void on_feed_event(void *arg, struct cuser *u, int64_t event_us)
{
    struct app *a = arg;
    /* An event proves sipbridge alive: this user's change is published as it comes
     * (counted, with its latency), then everyone else's view. */
    bool revived = health_seen_sipbridge(a->health);

    if (revived)
        pub_sipbridge(a->pub, true);
    if (u)
        pub_user(a->pub, u, false, event_us);
    if (revived)
        pub_changed(a->pub);
}

static void on_feed_synced(void *arg)
{
    struct app *a = arg;

    lease_set_ready(a->lease, true); /* may take over now */
    if (xmpplink_up(a->xmpp))
        pub_all(a->pub);
}

static void on_feed_resync(void *arg, struct cuser *u)
{
    struct app *a = arg;

    if (u)
        pub_user(a->pub, u, true, 0);
    else
        pub_all(a->pub);
}

static const struct feed_ops feed_ops = {
    .on_event = on_feed_event,
    .on_synced = on_feed_synced,
    .on_resync = on_feed_resync,
};

/* The feed kept following the stream either way: only what watchers see changes. */
static void on_sipbridge(void *arg, bool alive)
{
    struct app *a = arg;

    pub_sipbridge(a->pub, alive);
    if (feed_synced(a->feed))
        pub_changed(a->pub);
}

static const struct health_ops health_ops = {.on_sipbridge = on_sipbridge};

static void on_watcher_learned(void *arg, struct cuser *u, const char *bare)
{
    struct app *a = arg;

    if (xmpplink_up(a->xmpp) && feed_synced(a->feed))
        pub_user_to(a->pub, u, bare);
}

static void on_watcher_dropped(void *arg, struct cuser *u, const char *bare)
{
    struct app *a = arg;

    presout_unavailable(a->presout, u, bare);
    presout_type(a->presout, u->contact, bare, "unsubscribed");
}

static const struct watchers_ops watchers_ops = {
    .on_learned = on_watcher_learned,
    .on_dropped = on_watcher_dropped,
};

/* ---- news from the router, the PEP writer and the directory ------------------------ */

static void on_subscribe(void *arg, struct cuser *u, const char *bare)
{
    struct app *a = arg;

    watchers_add(a->wstore, u, bare);
}

static void on_unsubscribe(void *arg, struct cuser *u, const char *bare)
{
    struct app *a = arg;

    watchers_remove(a->wstore, u, bare);
}

static const struct router_ops router_ops = {
    .on_subscribe = on_subscribe,
    .on_unsubscribe = on_unsubscribe,
};

static void on_granted(void *arg, const char *domain)
{
    struct app *a = arg;

    pep_granted(a->pep, domain);
    vcard_granted(a->vcard, domain);
    if (feed_synced(a->feed))
        pub_pep_domain(a->pub, domain);
}

static void on_grants_missing(void *arg, const char *domain)
{
    struct app *a = arg;

    pep_missing(a->pep, domain);
    vcard_missing(a->vcard, domain);
}

static const struct privileged_ops priv_ops = {
    .on_granted = on_granted,
    .on_missing = on_grants_missing,
};

/* A reload removed u (or renamed its contact): its watchers see it go offline, and the
 * writers forget it. */
static void on_user_removed(void *arg, struct cuser *u)
{
    struct app *a = arg;
    size_t pos = 0;
    const char *w;
    void *v;

    while (strmap_next(&u->watchers, &pos, &w, &v))
        presout_unavailable(a->presout, u, w);
    presout_forget(a->presout, u);
    pep_forget(a->pep, u);
    vcard_forget(a->vcard, u);
}

/* ---- active or standby (the lease) -------------------------------------------------- */

/* The XMPP server takes one connection per component domain: only the lease's holder
 * connects. It reads every watcher from Redis, and on connecting sends every watcher
 * the current presence (on_xmpp_up: pub_all); PEP items are published again as a new
 * stream always does (the grants come again from the server). */
static void become_active(struct app *a)
{
    if (a->active || a->stopping)
        return;
    a->active = true;
    metric_set(m_active, NULL, 1);
    metric_inc(m_takeovers, NULL);
    log_notice("main", "event=active instance=%s epoch=%llu action=connecting",
               log_q(a->name),
               (unsigned long long)lease_epoch(a->lease));
    watchers_set_active(a->wstore, true);
    xmpplink_start(a->xmpp);
}

/* Closes the stream without a goodbye: watchers keep what they were shown until the
 * new active component sends it again. */
static void become_standby(struct app *a, const char *why)
{
    if (!a->active)
        return;
    a->active = false;
    metric_set(m_active, NULL, 0);
    log_notice("main", "event=standby instance=%s reason=\"%s\"", log_q(a->name),
               why);
    xmpplink_stop(a->xmpp);
    watchers_set_active(a->wstore, false);
}

static void stop_decide(struct app *a);

static void on_lease_view(void *arg, const struct lease_view *v)
{
    struct app *a = arg;
    bool holder = v->holder && strcmp(v->holder, a->name) == 0 && v->holder_epoch == v->epoch;

    a->others_ready = false;
    for (size_t i = 0; i < v->n; i++) {
        if (strcmp(v->members[i].name, a->name) != 0 && v->members[i].rec.ready &&
            !v->members[i].rec.leaving)
            a->others_ready = true;
    }
    /* What the next renewal reports: whether this one could take over (the active one
     * can always take the role back, e.g. from a Redis that restarted empty, while it
     * reloads the state). */
    lease_set_ready(a->lease, feed_synced(a->feed) || a->active);
    if (a->stop_on_view) {
        stop_decide(a);
        return;
    }
    if (holder)
        become_active(a);
    else if (a->active && v->holder)
        become_standby(a, "another component holds the lease");
}

static void on_lease_expired(void *arg)
{
    struct app *a = arg;

    /* Redis cannot be reached to renew: a standby that can may take over once the lease
     * runs out there, and the XMPP server takes one connection. Alone, keep serving. */
    if (a->active && a->others_ready)
        become_standby(a, "lease not renewed: a standby may take over");
}

static const struct lease_ops lease_ops = {.on_view = on_lease_view,
                                           .on_expired = on_lease_expired};

/* ---- signals ----------------------------------------------------------------------- */

static void stop_now(void *arg)
{
    struct app *a = arg;

    event_base_loopexit(a->base, NULL);
}

/* The lease given up, not left to run out: a component started next need not wait for it.
 * The loop exits once Redis has it (at once if Redis cannot be reached). */
static void leave_then_stop(void *arg)
{
    struct app *a = arg;

    if (a->left)
        return;
    a->left = true;
    lease_leave(a->lease, stop_now, a);
}

static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;

    log_warn("main", "event=stop_timeout pending_pep=%u after_s=%d", priv_pending(a->priv),
             STOP_WAIT_S);
    leave_then_stop(a);
}

static void on_view_timer(evutil_socket_t fd, short what, void *arg)
{
    stop_decide(arg);
}

static void on_stop(void *arg)
{
    struct app *a = arg;
    struct timeval tv = {.tv_sec = STOP_VIEW_WAIT_MS / 1000,
                         .tv_usec = (STOP_VIEW_WAIT_MS % 1000) * 1000};

    if (a->stopping)
        return;
    a->stopping = true;
    daemon_notify("STOPPING=1");
    if (!a->active || !lease_held(a->lease)) {
        stop_decide(a);
        return;
    }
    /* Whether a standby is ready is decided on a view taken now, not the last one (up to
     * a renewal period old: a standby that just became ready would be missed). */
    a->stop_on_view = true;
    a->view_timer = evtimer_new(a->base, on_view_timer, a);
    evtimer_add(a->view_timer, &tv);
    lease_renew_now(a->lease);
}

/* The clean stop itself: hand over to a ready standby, or say goodbye. */
static void stop_decide(struct app *a)
{
    struct timeval tv = {.tv_sec = STOP_WAIT_S};

    if (!a->stop_on_view && a->view_timer)
        return; /* decided already */
    a->stop_on_view = false;
    if (a->active && a->others_ready && lease_held(a->lease)) {
        /* A standby is ready: it connects as soon as this one has closed its stream and
         * given the lease up (it waits on the wake list), and sends every watcher the
         * current presence; nobody is shown "unavailable". */
        log_notice("main", "event=handover instance=%s note=\"a standby takes over\"",
                   log_q(a->name));
        xmpplink_stop(a->xmpp);
        leave_then_stop(a);
        return;
    }
    if (a->cfg->component_keep_on_stop) {
        leave_then_stop(a);
        return;
    }
    pub_goodbye(a->pub);
    /* PEP is read before it is written: let those answers come, a few seconds at most. */
    a->stop_timer = evtimer_new(a->base, on_stop_timeout, a);
    evtimer_add(a->stop_timer, &tv);
    priv_when_idle(a->priv, leave_then_stop, a);
}

/* daemon_reload() checked and loaded the file: hand the new configuration over. */
static void on_reload(void *arg, struct offhook_config *next)
{
    struct app *a = arg;

    users_apply(&a->users, next, on_user_removed, a);
    watchers_load_new(a->wstore);
    watchers_enforce_policy(a->wstore);
    feed_resync(a->feed);
    log_notice("main", "event=reloaded users=%zu", next->nusers);
}

/* The directory's users changed: they come into force the way a reload's do. */
static void on_directory_changed(void *arg)
{
    daemon_users_changed();
}

int main(int argc, char **argv)
{
    struct daemon_args args;
    struct app a = {0};
    struct daemon_hooks hooks = {.cfg = &a.cfg, .apply = on_reload, .stop = on_stop, .arg = &a};
    struct timeval status_tv = {.tv_sec = 1};
    int rc = 1;

    daemon_parse_args(argc, argv, "offhook-component",
                      "XEP-0114 component showing desk-phone state as XMPP presence.", &args);
    config_set_secret_use(CFG_SECRET_XMPP | CFG_SECRET_REDIS | CFG_SECRET_LDAP);
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
        if (a.cfg->dir_ldap)
            printf("%s: OK (users from %s)\n", args.config_path, a.cfg->dir_ldap_url);
        else
            printf("%s: OK (%zu users)\n", args.config_path, a.cfg->nusers);
        rc = 0;
        goto out_cfg;
    }
    log_notice("main", "event=starting version=%s config=%s users=%zu domain=%s",
               OFFHOOK_VERSION, log_q(args.config_path), a.cfg->nusers,
               log_q(a.cfg->xmpp_domain));
    a.base = event_base_new();
    users_init(&a.users, a.cfg);

    httpd_register_process_metrics();
    redislink_register_metrics();
    xmpplink_register_metrics();
    router_register_metrics();
    presout_register_metrics();
    feed_register_metrics();
    pep_register_metrics();
    priv_register_metrics();
    vcard_register_metrics();
    health_register_metrics();
    watchers_register_metrics();
    directory_register_metrics();
    a.dir = directory_new(a.base, a.cfg, "component", on_directory_changed, &a);
    if (!a.dir)
        goto out;
    hooks.dir = a.dir;
    ctlsock_register_metrics();
    lease_register_metrics();
    m_active = metric_new(METRIC_GAUGE, "offhook_component_active",
                          "1 while this component is the active one (holds the lease, "
                          "connects to the XMPP server); 0 while it is a standby.",
                          NULL, NULL);
    m_takeovers = metric_new(METRIC_COUNTER, "offhook_component_takeovers_total",
                             "Times this component became the active one.", NULL, NULL);
    metric_set(m_active, NULL, 0);
    daemon_setup(a.base, &hooks);
    if (a.cfg->component_metrics[0]) {
        a.http = httpd_start(a.base, a.cfg->component_metrics, is_ready, &a);
        if (!a.http)
            goto out;
    }
    /* The writers and the router send through a.out, to the link; nothing is sent
     * before the loop runs (the links connect from it), by when out.ctx is set. */
    a.out = (struct stanza_out){.up = out_up, .send = out_send, .arg = &a};
    a.presout = presout_new(&a.users, &a.out);
    a.priv = priv_new(a.base, &a.users, &a.out, &priv_ops, &a);
    a.pep = pep_new(&a.users, &a.out, a.priv);
    a.vcard = vcard_new(&a.users, &a.out, a.priv);
    a.pub = pub_new(&a.users, a.presout, a.pep, a.vcard, &a.out);
    a.router = router_new(&a.users, a.pub, a.presout, a.priv, &a.out, &router_ops, &a);
    a.feed = feed_new(a.base, &a.users, &feed_ops, &a);
    a.health = health_new(a.base, a.cfg, &health_ops, &a);
    a.wstore = watchers_new(a.base, &a.users, &watchers_ops, &a);
    a.xmpp = xmpplink_new(a.base, a.cfg, &link_ops, &a);
    a.out.ctx = xmpplink_ctx(a.xmpp);
    if (a.cfg->component_control[0]) {
        char err[256];
        a.ctl = ctlsock_new(a.base, a.cfg->component_control, err, sizeof err);
        if (!a.ctl) {
            log_err("main", "event=control_socket_failed path=%s error=\"%s\" "
                            "hint=\"[component] control names it; empty for none\"",
                    a.cfg->component_control, err);
            goto out;
        }
        xmppconsole_add(a.ctl, &(struct xmppconsole_deps){
                                   .base = a.base, .users = &a.users, .pub = a.pub,
                                   .presout = a.presout, .pep = a.pep, .xmpp = a.xmpp,
                                   .feed = a.feed, .wstore = a.wstore, .ready = is_ready,
                                   .arg = &a});
    }
    if (a.cfg->component_instance[0])
        str_copy(a.name, sizeof a.name, a.cfg->component_instance);
    else
        lease_default_name(a.name, sizeof a.name);
    /* Connects to the XMPP server once it holds the lease (become_active). */
    a.lease = lease_new(a.base, a.cfg, "component", a.name, a.cfg->component_lease_ttl * 1000,
                        &lease_ops, &a);
    lease_want_holder(a.lease, true);
    a.status_timer = event_new(a.base, -1, EV_PERSIST, on_status, &a);
    event_add(a.status_timer, &status_tv);

    event_base_dispatch(a.base);
    rc = 0;
    log_notice("main", "event=stopped");
out:
    directory_free(a.dir); /* no directory news from here on */
    if (a.status_timer)
        event_free(a.status_timer);
    if (a.stop_timer)
        event_free(a.stop_timer);
    ctlsock_free(a.ctl);
    ctlcommon_free();
    if (a.view_timer)
        event_free(a.view_timer);
    /* The link first: closing the stream runs its last pass (stanzas, on_down), which
     * reaches the router and the writers. */
    xmpplink_free(a.xmpp);
    lease_free(a.lease);
    health_free(a.health);
    watchers_free(a.wstore);
    feed_free(a.feed);
    router_free(a.router);
    pub_free(a.pub);
    pep_free(a.pep);
    vcard_free(a.vcard);
    priv_free(a.priv);
    presout_free(a.presout);
    httpd_free(a.http);
    users_free(&a.users);
    daemon_teardown();
    if (a.base)
        event_base_free(a.base);
    metrics_reset();
out_cfg:
    config_free(a.cfg);
    free(a.cfg);
    return rc;
}
