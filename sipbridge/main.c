/* offhook-sipbridge: subscribes to the PBX's dialog (and optionally presence and reg)
 * events for its share of the configured users and keeps each user's call state in Redis.
 * Several share the users through their leases in Redis (member.c). One libevent loop
 * drives Sofia-SIP (suloop.c), hiredis and the metrics endpoint.
 *
 *   member --ops--> main --> bridge (hold, moving, release, claim)
 *   store --fenced--> main --> member */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "bridge.h"
#include "config.h"
#include "console.h"
#include "ctlcommon.h"
#include "ctlsock.h"
#include "daemon.h"
#include "dialoginfo.h"
#include "directory.h"
#include "httpd.h"
#include "log.h"
#include "member.h"
#include "metrics.h"
#include "probe.h"
#include "redislink.h"
#include "rlsub.h"
#include "sbuf.h"
#include "sipua.h"
#include "store.h"
#include "strutil.h"
#include "subscription.h"
#include "suloop.h"
#include "timerq.h"
#include "version.h"
#include "xmlsafe.h"

#define SHUTDOWN_GRACE_S 5 /* time for un-SUBSCRIBEs to be answered */

#define STATUS_INTERVAL_S 10 /* systemd STATUS= refresh once ready */

struct app {
    const char *config_path;
    struct offhook_config *cfg;
    struct event_base *base;
    struct suloop *loop;
    struct timerq *tq;
    struct sipua *ua;
    struct store *store;
    struct bridge *bridge;
    struct member *member;
    struct httpd *http;
    struct directory *dir;
    struct ctlsock *ctl;
    struct event *status_timer;
    struct event *shutdown_timer;
    bool ready_sent;
    bool stopping;
};

static void kick_sofia(void *arg)
{
    suloop_kick(arg);
}

static bool is_ready(void *arg, struct sbuf *why)
{
    struct app *a = arg;
    struct subs_mgr *m = a->bridge ? bridge_subs(a->bridge) : NULL;
    bool ok = true;

    if (!directory_ready(a->dir, why))
        ok = false;
    if (!store_up(a->store)) {
        sbuf_puts(why, "redis: not connected\n");
        ok = false;
    }
    if (!a->member || !member_ready(a->member)) {
        sbuf_puts(why, "cluster: users not assigned yet (no lease in Redis, or its first "
                       "renewals)\n");
        ok = false;
    }
    /* Ready = the upstreams answer: Redis, and the PBX for at least one subscription.
     * Not "every subscription": 100,000 users at 50 SUBSCRIBEs/s take half an hour, and
     * systemd (Type=notify) would give up on the start long before. A member whose share
     * is no user at all (more members than users, a resource list held by another) has
     * nothing to ask of the PBX. */
    if (!m || (bridge_user_count(a->bridge) > 0 &&
               subs_mgr_count(m, SUB_ACTIVE) + subs_mgr_count(m, SUB_PENDING) == 0)) {
        sbuf_puts(why, "sip: no subscription established\n");
        ok = false;
    }
    /* A PBX that stopped answering: its users' phones are no longer followed. */
    if (m && subs_mgr_report_unreachable(m, why) > 0)
        ok = false;
    return ok;
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    struct subs_mgr *m = bridge_subs(a->bridge);
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
        log_notice("main", "event=ready users=%d instance=%s", bridge_user_count(a->bridge),
                   member_name(a->member));
        daemon_notify("READY=1");
    }
    daemon_notify("STATUS=users=%d subscriptions active=%d backoff=%d starting=%d redis=%s "
                  "pending_writes=%d owned=%d",
                  bridge_user_count(a->bridge), subs_mgr_count(m, SUB_ACTIVE),
                  subs_mgr_count(m, SUB_BACKOFF),
                  subs_mgr_count(m, SUB_QUEUED) + subs_mgr_count(m, SUB_SUBSCRIBING),
                  store_up(a->store) ? "up" : "down", store_pending(a->store),
                  member_users_owned(a->member));
}

/* The kernel dropped datagrams on the SIP port: the subscribe ramp slows down. */
static void on_sip_drops(void *arg, uint32_t n)
{
    struct app *a = arg;

    if (a->bridge)
        subs_mgr_datagrams_dropped(bridge_subs(a->bridge), n);
}

static void on_shutdown_done(void *arg)
{
    struct app *a = arg;

    event_base_loopexit(a->base, NULL);
}

static void on_shutdown_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;

    log_warn("main", "event=shutdown_timeout after_s=%d", SHUTDOWN_GRACE_S);
    event_base_loopexit(a->base, NULL);
}

/* The users are handed over (or there was nobody to hand them to): un-SUBSCRIBE the rest
 * and exit. */
static void shut_down(void *arg)
{
    struct app *a = arg;
    struct timeval tv = {.tv_sec = SHUTDOWN_GRACE_S};

    /* Every live dialog gets its Expires: 0, paced and bounded in time (sipua.c). */
    sipua_shutdown(a->ua, on_shutdown_done, a);
    a->shutdown_timer = evtimer_new(a->base, on_shutdown_timeout, a);
    evtimer_add(a->shutdown_timer, &tv);
}

static void on_stop(void *arg)
{
    struct app *a = arg;

    if (a->stopping) {
        event_base_loopexit(a->base, NULL);
        return;
    }
    a->stopping = true;
    daemon_notify("STOPPING=1");
    /* With other sipbridges running, they take this one's users first and it lets each go
     * once its new owner has written it: nobody is shown a gap. */
    if (!member_leave(a->member, shut_down, a)) {
        member_quit(a->member);
        shut_down(a);
    }
}

/* ---- news from the membership (member.c) and the store ---------------------------- */

static void on_acquire(void *arg, const char *jid, bool handover)
{
    struct app *a = arg;

    if (!a->stopping) /* a view answered while leaving gives nothing new */
        bridge_hold(a->bridge, jid, handover);
}

static void on_moving(void *arg, const char *jid, bool moving)
{
    struct app *a = arg;

    bridge_moving(a->bridge, jid, moving);
}

static void on_release(void *arg, const char *jid)
{
    struct app *a = arg;

    bridge_release(a->bridge, jid);
}

static void on_claim(void *arg, const char *jid)
{
    struct app *a = arg;

    bridge_claim(a->bridge, jid);
}

static const struct member_ops member_ops = {
    .on_acquire = on_acquire,
    .on_moving = on_moving,
    .on_release = on_release,
    .on_claim = on_claim,
};

static void on_fenced(void *arg, const char *jid, bool lease_lost)
{
    struct app *a = arg;

    member_fenced(a->member, jid, lease_lost);
}

/* "loglevel" on the control socket: Sofia's own log follows. */
static void on_log_level(void *arg)
{
    suloop_route_logs(log_level);
}

/* daemon_reload() checked and loaded the file: hand the new configuration over. */
static void on_reload(void *arg, struct offhook_config *next)
{
    struct app *a = arg;
    struct bridge_reload r;
    int added;

    suloop_route_logs(log_level);
    sipua_update(a->ua, next);
    bridge_apply_config(a->bridge, next, &r);
    added = member_set_users(a->member, next); /* acquires this member's new users now */
    log_notice("main", "event=reloaded users=%zu added=%d removed=%d resubscribed=%d "
                       "unchanged=%d held=%d",
               next->nusers, added, r.removed, r.resubscribed, r.unchanged,
               bridge_user_count(a->bridge));
}

/* The directory's users changed: they come into force the way a reload's do (not while
 * stopping: the un-SUBSCRIBEs are going out and nothing new is subscribed). */
static void on_directory_changed(void *arg)
{
    struct app *a = arg;

    if (!a->stopping)
        daemon_users_changed();
}

static long realtime_priority(const struct offhook_config *cfg)
{
    return cfg->sipbridge_realtime_priority;
}

int main(int argc, char **argv)
{
    struct daemon_args args;
    struct app a = {0};
    struct daemon_hooks hooks = {.cfg = &a.cfg,
                                 .apply = on_reload,
                                 .stop = on_stop,
                                 .arg = &a,
                                 .realtime_priority = realtime_priority};
    struct timeval status_tv = {.tv_sec = 1};
    int rc = 1;

    daemon_parse_args(argc, argv, "offhook-sipbridge",
                      "Subscribes to PBX call events and keeps each user's phone state in "
                      "Redis.",
                      &args);
    config_set_secret_use(CFG_SECRET_SIP | CFG_SECRET_REDIS | CFG_SECRET_LDAP);
    log_init("offhook-sipbridge");
    a.config_path = args.config_path;
    a.cfg = xcalloc(1, sizeof *a.cfg);
    if (daemon_load_config(args.config_path, a.cfg) < 0)
        goto out_cfg;
    if (args.check_config) {
        if (a.cfg->dir_ldap)
            printf("%s: OK (users from %s)\n", args.config_path, a.cfg->dir_ldap_url);
        else
            printf("%s: OK (%zu users)\n", args.config_path, a.cfg->nusers);
        rc = 0;
        goto out_cfg;
    }
    log_notice("main", "event=starting version=%s config=%s users=%zu", OFFHOOK_VERSION,
               log_q(args.config_path), a.cfg->nusers);
    xmlsafe_init();
    a.base = event_base_new();
    httpd_register_process_metrics();
    redislink_register_metrics();
    store_register_metrics();
    subs_register_metrics();
    probe_register_metrics();
    sipua_register_metrics();
    rlsub_register_metrics();
    bridge_register_metrics();
    directory_register_metrics();
    a.dir = directory_new(a.base, a.cfg, "sipbridge", on_directory_changed, &a);
    if (!a.dir)
        goto out;
    hooks.dir = a.dir;
    ctlsock_register_metrics();
    member_register_metrics();
    daemon_setup(a.base, &hooks);
    if (a.cfg->sipbridge_metrics[0]) {
        a.http = httpd_start(a.base, a.cfg->sipbridge_metrics, is_ready, &a);
        if (!a.http)
            goto out;
    }
    suloop_route_logs(log_level);
    a.loop = suloop_new(a.base);
    if (!a.loop)
        goto out;
    a.tq = timerq_new(a.base);
    a.ua = sipua_new(suloop_root(a.loop), a.base, a.tq, a.cfg, subs_ua_ops(), kick_sofia,
                     a.loop);
    if (!a.ua)
        goto out;
    a.store = store_new(a.base, a.cfg);
    a.bridge = bridge_new(a.base, a.tq, a.cfg, a.ua, a.store);
    a.member = member_new(a.base, a.cfg, a.store, &member_ops, &a);
    store_on_fenced(a.store, on_fenced, &a);
    sipua_set_drop_hook(a.ua, on_sip_drops, &a);
    if (a.cfg->sipbridge_control[0]) {
        char err[256];
        a.ctl = ctlsock_new(a.base, a.cfg->sipbridge_control, err, sizeof err);
        if (!a.ctl) {
            log_err("main", "event=control_socket_failed path=%s error=\"%s\" "
                            "hint=\"[sipbridge] control names it; empty for none\"",
                    a.cfg->sipbridge_control, err);
            goto out;
        }
        sipconsole_add(a.ctl, &(struct sipconsole_deps){.base = a.base, .bridge = a.bridge,
                                                         .store = a.store, .ready = is_ready,
                                                         .on_log_level = on_log_level,
                                                         .arg = &a});
    }
    a.status_timer = event_new(a.base, -1, EV_PERSIST, on_status, &a);
    event_add(a.status_timer, &status_tv);

    event_base_dispatch(a.base);
    rc = 0;
    log_notice("main", "event=stopped");
out:
    directory_free(a.dir); /* no directory news from here on */
    if (a.status_timer)
        event_free(a.status_timer);
    if (a.shutdown_timer)
        event_free(a.shutdown_timer);
    ctlsock_free(a.ctl);
    ctlcommon_free();
    /* Subscriptions release their dialogs; sipua_shutdown has sent the un-SUBSCRIBEs. */
    member_free(a.member);
    bridge_free(a.bridge);
    sipua_free(a.ua);
    timerq_free(a.tq);
    suloop_free(a.loop);
    store_free(a.store);
    httpd_free(a.http);
    daemon_teardown();
    if (a.base)
        event_base_free(a.base);
    metrics_reset();
    xmlsafe_cleanup();
out_cfg:
    config_free(a.cfg);
    free(a.cfg);
    return rc;
}
