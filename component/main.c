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
 *                                     router --ops--> main --> watchers, roster
 *                                     privileged --ops--> main --> pep, publisher, roster
 *   users: reload, directory --> main --> roster --ops--> main --> watchers, publisher
 *   roster --roster_io--> main --> rosterstore (Redis), rosterapi (ejabberd's HTTP API)
 *                                  --ops--> main --> roster
 *   pep, privileged, presence_out, router --stanza_out--> main --> xmpplink
 *
 * users.c (the directory) and view.c sit under all of them. See docs/architecture.md. */
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

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
#include "roster.h"
#include "rosterapi.h"
#include "rosterstore.h"
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
    struct roster *roster;
    struct rosterstore *rstore;
    struct rosterapi *rapi;       /* with [component] roster_api */
    struct roster_io rio;         /* how the roster writer reaches its store and the API */
    struct publisher *pub;
    struct router *router;
    struct httpd *http;
    struct directory *dir;
    struct ctlsock *ctl;
    struct event *status_timer;
    bool ready_sent;
    size_t trim_free;             /* free heap at trim_heap's last fruitless trim (0: none
                                     since it last gave something back) */
    /* A clean stop: a fresh view of the standbys decides (STOP_DECIDING); with none ready,
     * the goodbyes go out, then two barriers (xmpplink_barrier) say the server has handled
     * them, presence first; only then does the loop end. */
    enum { STOP_NO, STOP_DECIDING, STOP_PRESENCE, STOP_PEP, STOP_LAST, STOP_DONE } stop;
    int64_t stop_ms;              /* when the goodbyes began (monotonic) */
    long presence_ms;             /* the presence goodbyes took this long, -1 unknown */
    struct event *stop_timer;     /* [component] goodbye_timeout */
    bool sipbridge_checked;       /* health gave its first verdict */
    struct lease *lease;          /* the "component" group: its holder is the active one */
    char name[STORECODEC_MEMBER_NAME_MAX + 1];
    bool active;                  /* holds the lease: connected to the XMPP server */
    bool others_ready;            /* the last view had a standby ready to take over */
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
    if (!health_known(a->health)) {
        sbuf_puts(why, "redis: sipbridge's heartbeat not checked yet\n");
        ok = false;
    }
    return ok;
}

#define TRIM_MIN_FREE (8u << 20) /* free heap worth giving back, bytes */
#define TRIM_GAVE_MIN (1u << 20) /* a trim that gave back less is not repeated */

/* Resident bytes of the process, 0 if unknown. */
static size_t rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        return 0;
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        resident = 0;
    fclose(f);
    return resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Gives the heap's free pages back to the system after a burst. Loading every user's
 * state and watchers at start, and writing everyone's presence at once (start,
 * reconnect), allocate and free far more than is kept: glibc keeps the pages, scattered
 * between the users' long-lived records, and the RSS stays at the burst's peak (at
 * 100,000 users, 329 MiB for 223 MiB in use). Checked on the status timer (every 10 s
 * once ready): trims when at least TRIM_MIN_FREE and a quarter of what is in use lie
 * free. Only whole free pages can go back, and they come as neighbouring holes are
 * freed: trims repeat while each gives back TRIM_GAVE_MIN or more; after one that does
 * not, the next waits for TRIM_MIN_FREE more free heap than there was (holes between
 * live records would otherwise cost a trim every 10 s for good). The steady state costs
 * one mallinfo2. */
static void trim_heap(struct app *a)
{
    struct mallinfo2 mi = mallinfo2();
    size_t in_use = mi.uordblks + mi.hblkhd;
    size_t before, after;
    int64_t t0;

    if (mi.fordblks < a->trim_free)
        a->trim_free = mi.fordblks; /* reused meanwhile: a new burst counts from here */
    if (mi.fordblks < TRIM_MIN_FREE || mi.fordblks < in_use / 4 ||
        (a->trim_free && mi.fordblks < a->trim_free + TRIM_MIN_FREE))
        return;
    before = rss_bytes();
    t0 = clock_mono_ms();
    malloc_trim(0);
    after = rss_bytes();
    a->trim_free = before > after && before - after >= TRIM_GAVE_MIN ? 0 : mi.fordblks;
    log_notice("main",
               "event=heap_trimmed free_bytes=%zu in_use_bytes=%zu rss_before=%zu rss_after=%zu "
               "ms=%" PRId64,
               mi.fordblks, in_use, before, after, clock_mono_ms() - t0);
}

static void on_status(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    struct sbuf why;
    bool ready;

    sbuf_init(&why);
    ready = is_ready(a, &why);
    sbuf_free(&why);
    /* The roster writer tells its items from users' own by the watcher sets. */
    if (watchers_up(a->wstore))
        roster_ready(a->roster);
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
    if (ready)
        trim_heap(a);
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

/* Everyone's view, forced, once all it depends on is there: the stream, every user's
 * state (before, it would publish "unknown" for all) and whether sipbridge keeps them
 * true (before, it would publish either a frozen state or a flap through "unknown"). */
static bool showing(const struct app *a)
{
    return xmpplink_up(a->xmpp) && feed_synced(a->feed) && health_known(a->health);
}

static void publish_all_when_ready(struct app *a)
{
    if (showing(a))
        pub_all(a->pub);
}

static void on_xmpp_up(void *arg)
{
    struct app *a = arg;

    priv_connected(a->priv);
    pep_connected(a->pep);
    vcard_connected(a->vcard);
    roster_connected(a->roster);
    publish_all_when_ready(a);
}

static void on_xmpp_down(void *arg)
{
    struct app *a = arg;

    priv_link_down(a->priv);
    presout_link_down(a->presout);
    roster_link_down(a->roster);
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
    bool first = !health_known(a->health);
    bool revived = health_seen_sipbridge(a->health);

    if (revived)
        pub_sipbridge(a->pub, true);
    if (first) {
        a->sipbridge_checked = true;
        publish_all_when_ready(a); /* the first verdict: nothing was shown yet */
        return;
    }
    if (u)
        pub_user(a->pub, u, false, event_us);
    if (revived)
        pub_changed(a->pub);
}

static void on_feed_synced(void *arg)
{
    struct app *a = arg;

    lease_set_ready(a->lease, true); /* may take over now */
    publish_all_when_ready(a);
}

static void on_feed_resync(void *arg, struct cuser *u)
{
    struct app *a = arg;

    if (!u)
        roster_resync(a->roster); /* the rosters do not wait for sipbridge's verdict */
    if (!health_known(a->health))
        return; /* the first verdict publishes everyone */
    if (u)
        pub_user(a->pub, u, true, 0);
    else
        pub_all(a->pub);
}

/* A user a reload added: its state, to its watchers (those Redis remembers are learnt
 * apart, by the watcher store) and into its PEP. */
static void on_feed_loaded(void *arg, struct cuser *u)
{
    struct app *a = arg;

    if (showing(a))
        pub_user(a->pub, u, false, 0);
}

static const struct feed_ops feed_ops = {
    .on_event = on_feed_event,
    .on_synced = on_feed_synced,
    .on_resync = on_feed_resync,
    .on_loaded = on_feed_loaded,
};

/* The feed kept following the stream either way: only what watchers see changes. The
 * first verdict after start is what everything waited for. */
static void on_sipbridge(void *arg, bool alive)
{
    struct app *a = arg;
    bool first = !a->sipbridge_checked;

    a->sipbridge_checked = true;
    pub_sipbridge(a->pub, alive);
    if (first)
        publish_all_when_ready(a);
    else if (feed_synced(a->feed))
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
    struct cuser *self;

    watchers_add(a->wstore, u, bare);
    /* A user of ours probing or subscribing is online: its account exists, and requests
     * into it that were refused may be made again now. */
    if (priv_account_seen(a->priv, bare) && (self = users_by_jid(&a->users, bare)))
        pub_pep_user(a->pub, self);
}

static void on_unsubscribe(void *arg, struct cuser *u, const char *bare)
{
    struct app *a = arg;

    watchers_remove(a->wstore, u, bare);
    roster_unsubscribed(a->roster, u, bare);
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
    roster_granted(a->roster, domain);
    if (feed_synced(a->feed))
        pub_pep_domain(a->pub, domain);
}

static void on_grants_missing(void *arg, const char *domain)
{
    struct app *a = arg;

    pep_missing(a->pep, domain);
    vcard_missing(a->vcard, domain);
    roster_missing(a->roster, domain);
}

/* The time privileged.c left user alone after refusals is over: published again. */
static void on_priv_due(void *arg, const char *user)
{
    struct app *a = arg;
    struct cuser *u = users_by_jid(&a->users, user);

    if (u && feed_synced(a->feed))
        pub_pep_user(a->pub, u);
}

static const struct privileged_ops priv_ops = {
    .on_due = on_priv_due,
    .on_granted = on_granted,
    .on_missing = on_grants_missing,
};

/* The roster writer put v's phone contact into user's roster, subscription "to": the
 * component holds the other side, so user watches it, and sees it now. */
static void on_roster_added(void *arg, struct cuser *v, const char *user)
{
    struct app *a = arg;

    watchers_add(a->wstore, v, user);
    if (xmpplink_up(a->xmpp) && feed_synced(a->feed))
        pub_user_to(a->pub, v, user);
}

static void on_roster_removed(void *arg, struct cuser *v, const char *contact,
                              const char *user)
{
    struct app *a = arg;

    if (!v) {
        watchers_forget(a->wstore, contact, user);
        return;
    }
    watchers_remove(a->wstore, v, user);
    presout_unavailable(a->presout, v, user);
}

static const struct roster_ops roster_ops = {
    .on_added = on_roster_added,
    .on_removed = on_roster_removed,
};

/* ---- the roster writer's store --------------------------------------------------------- */

static int rio_load(void *arg, unsigned long cookie, const char *user,
                    const char *const *contacts, size_t n)
{
    struct app *a = arg;

    return rosterstore_load(a->rstore, cookie, user, contacts, n);
}

static int rio_save(void *arg, unsigned long cookie, const char *user, const char *contact,
                    const char *value)
{
    struct app *a = arg;

    return rosterstore_save(a->rstore, cookie, user, contact, value);
}

static int rio_list(void *arg)
{
    struct app *a = arg;

    return rosterstore_list(a->rstore);
}

static int rio_api_write(void *arg, unsigned long cookie, const char *user,
                         const char *contact, const struct rosterplan_item *it)
{
    struct app *a = arg;

    return rosterapi_write(a->rapi, cookie, user, contact, it);
}

static void on_rapi_done(void *arg, unsigned long cookie, bool ok, const char *why)
{
    struct app *a = arg;

    roster_api_done(a->roster, cookie, ok, why);
}

static const struct rosterapi_ops rapi_ops = {.on_done = on_rapi_done};

static void on_rstore_state(void *arg, bool up)
{
    struct app *a = arg;

    roster_store_state(a->roster, up);
}

static void on_rstore_loaded(void *arg, unsigned long cookie, bool ok,
                             const char *const *contacts, const char *const *values, size_t n)
{
    struct app *a = arg;

    roster_loaded(a->roster, cookie, ok, contacts, values, n);
}

static void on_rstore_saved(void *arg, unsigned long cookie, bool ok)
{
    struct app *a = arg;

    roster_saved(a->roster, cookie, ok);
}

static void on_rstore_known(void *arg, bool ok, const char *const *users, size_t n)
{
    struct app *a = arg;

    roster_known(a->roster, ok, users, n);
}

static const struct rosterstore_ops rstore_ops = {
    .on_state = on_rstore_state,
    .on_loaded = on_rstore_loaded,
    .on_saved = on_rstore_saved,
    .on_known = on_rstore_known,
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
    if (a->active || a->stop != STOP_NO)
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

/* The stop is over (delivered, handed over or not): the lease is given up, not left to
 * run out, so that a component started next need not wait for it; the loop ends once
 * Redis has it (at once if Redis cannot be reached), then the stream closes. */
static void stop_done(struct app *a)
{
    a->stop = STOP_DONE;
    if (a->left)
        return;
    a->left = true;
    lease_leave(a->lease, stop_now, a);
}

/* A server domain to ping: one of our users' (the server we are connected to hosts them). */
static const char *server_domain(const struct app *a)
{
    size_t pos = 0;
    const char *k;
    void *v;

    return strmap_next(&a->users.user_domains, &pos, &k, &v) ? k : NULL;
}

static void goodbye_step(struct app *a);

static void on_priv_idle(void *arg)
{
    goodbye_step(arg);
}

static void on_goodbye_barrier(void *arg, bool ok)
{
    struct app *a = arg;
    long ms = (long)(clock_mono_ms() - a->stop_ms);

    if (a->stop == STOP_DONE || a->stop == STOP_NO || a->stop == STOP_DECIDING)
        return;
    if (!ok) {
        log_warn("publish", "event=goodbye_incomplete after_ms=%ld reason=\"stream lost\"", ms);
        stop_done(a);
        return;
    }
    if (a->stop == STOP_PRESENCE) {
        a->presence_ms = ms;
        a->stop = STOP_PEP;
        /* Every privileged request answered (the PEP goodbyes and what was in flight). */
        priv_when_idle(a->priv, on_priv_idle, a);
        return;
    }
    log_notice("publish", "event=goodbye_delivered presence_ms=%ld total_ms=%ld", a->presence_ms,
               ms);
    stop_done(a);
}

/* After the presence barrier, once every privileged request has its answer: the last
 * barrier (it follows anything else sent meanwhile, answers to probes included). */
static void goodbye_step(struct app *a)
{
    const char *server = server_domain(a);

    if (a->stop != STOP_PEP)
        return;
    a->stop = STOP_LAST;
    if (!server || xmpplink_barrier(a->xmpp, server, on_goodbye_barrier, a) < 0)
        stop_done(a);
}

static void on_goodbye_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;

    log_warn("publish", "event=goodbye_incomplete after_s=%ld presence=%s pending_pep=%u "
                        "reason=\"[component] goodbye_timeout\"",
             a->cfg->component_goodbye_timeout, a->stop == STOP_PRESENCE ? "unconfirmed" : "done",
             priv_pending(a->priv));
    stop_done(a);
}

static void stop_decide(struct app *a);

static void on_view_timer(evutil_socket_t fd, short what, void *arg)
{
    stop_decide(arg);
}

/* A clean stop. With a standby ready, the active component hands over (stop_decide).
 * Otherwise, unless told to keep them, every watcher is told the phones are gone and the
 * "on the phone" activities are emptied, and the loop runs on until the server has
 * handled all of it (or [component] goodbye_timeout): closing the stream earlier dropped
 * the tens of thousands of IQs still queued at 10,000 users, and with them the presence.
 * Requests still waiting for their turn (a start's round) are dropped first. A second
 * signal ends it at once. */
static void on_stop(void *arg)
{
    struct app *a = arg;
    struct timeval tv = {.tv_sec = STOP_VIEW_WAIT_MS / 1000,
                         .tv_usec = (STOP_VIEW_WAIT_MS % 1000) * 1000};

    if (a->stop != STOP_NO) {
        log_notice("main", "event=stop_now reason=\"second signal\"");
        stop_done(a);
        return;
    }
    a->stop = STOP_DECIDING;
    daemon_notify("STOPPING=1");
    roster_stopping(a->roster);
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
    struct timeval tv = {.tv_sec = a->cfg->component_goodbye_timeout};
    const char *server = server_domain(a);

    if (a->stop != STOP_DECIDING || (!a->stop_on_view && a->view_timer))
        return; /* decided already */
    a->stop_on_view = false;
    if (a->active && a->others_ready && lease_held(a->lease)) {
        /* A standby is ready: it connects as soon as this one has closed its stream and
         * given the lease up (it waits on the wake list), and sends every watcher the
         * current presence; nobody is shown "unavailable". */
        log_notice("main", "event=handover instance=%s note=\"a standby takes over\"",
                   log_q(a->name));
        xmpplink_stop(a->xmpp);
        stop_done(a);
        return;
    }
    a->stop_ms = clock_mono_ms();
    a->presence_ms = -1;
    if (a->cfg->component_keep_on_stop || !xmpplink_up(a->xmpp) || !server) {
        stop_done(a);
        return;
    }
    priv_drop_waiting(a->priv);
    pub_goodbye(a->pub);
    a->stop = STOP_PRESENCE;
    if (xmpplink_barrier(a->xmpp, server, on_goodbye_barrier, a) < 0) {
        stop_done(a);
        return;
    }
    a->stop_timer = evtimer_new(a->base, on_goodbye_timeout, a);
    evtimer_add(a->stop_timer, &tv);
}

/* A reload kept u but changed what its phone contact shows (name, phones, number): its
 * watchers get the new <nick/> and reach addresses, its PEP the new reach. */
static void on_user_changed(void *arg, struct cuser *u)
{
    struct app *a = arg;

    if (showing(a))
        pub_user(a->pub, u, true, 0);
}

static const struct users_apply_ops apply_ops = {
    .on_removed = on_user_removed,
    .on_changed = on_user_changed,
};

/* daemon_reload() checked and loaded the file (or the directory's users changed): hand
 * the new configuration over. Only what changed is read and sent: the users added (their
 * records, their watchers), the users removed (unavailable to their watchers), the users
 * changed, the rosters the change touches. */
static void on_reload(void *arg, struct offhook_config *next)
{
    struct app *a = arg;

    roster_apply(a->roster, next);
    users_apply(&a->users, next, &apply_ops, a);
    watchers_load_new(a->wstore);
    watchers_enforce_policy(a->wstore);
    feed_users_added(a->feed);
    priv_users_changed(a->priv);
    log_notice("main", "event=reloaded users=%zu", next->nusers);
}

/* The directory's users changed: they come into force the way a reload's do. */
static void on_directory_changed(void *arg)
{
    daemon_users_changed();
}

static long realtime_priority(const struct offhook_config *cfg)
{
    return cfg->component_realtime_priority;
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
    roster_register_metrics();
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
    a.rio = (struct roster_io){.load = rio_load, .save = rio_save, .list = rio_list, .arg = &a};
    if (a.cfg->roster_api[0]) {
        a.rapi = rosterapi_new(a.base, a.cfg, &rapi_ops, &a);
        if (!a.rapi)
            goto out;
        a.rio.api_write = rio_api_write;
    }
    a.roster = roster_new(a.base, &a.users, &a.out, a.priv, &a.rio, &roster_ops, &a);
    a.rstore = rosterstore_new(a.base, &a.users, &rstore_ops, &a);
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
    a.stop = STOP_DONE; /* barriers failed by xmpplink_free report to nobody */
    if (a.view_timer)
        event_free(a.view_timer);
    /* The link first: closing the stream runs its last pass (stanzas, on_down), which
     * reaches the router and the writers. */
    xmpplink_free(a.xmpp);
    lease_free(a.lease);
    health_free(a.health);
    watchers_free(a.wstore);
    feed_free(a.feed);
    rosterstore_free(a.rstore); /* its last answers go to the writer, so before it */
    rosterapi_free(a.rapi);
    router_free(a.router);
    pub_free(a.pub);
    pep_free(a.pep);
    vcard_free(a.vcard);
    priv_free(a.priv);         /* drops roster writes still out, unanswered */
    roster_free(a.roster);
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
