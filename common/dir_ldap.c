/* The LDAP session thread: connect, StartTLS, bind; then RFC 4533 refreshAndPersist (or
 * polling), entries kept in a map, complete sets handed to the loop. */
#include "dir_ldap.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <lber.h>
#include <ldap.h>

#include "backoff.h"
#include "config.h"
#include "log.h"
#include "strmap.h"
#include "strutil.h"

#define PDU_MAX (8L << 20)       /* largest LDAP message read; bounds memory per entry */
#define PAGE_SIZE 500            /* RFC 2696 page (Active Directory serves 1000 at most) */
#define QUIET_MS 300             /* persist: a change is handed over once changes pause */
#define HOLD_MAX_MS 2000         /* ... or after this long in a steady stream of them */
#define RETRY_MIN_MS 1000
#define RETRY_MAX_MS 60000
#define STOP_WAIT_S 3            /* dir_ldap_free waits this long for the thread */
#define MAX_GROUP_VALUES 256     /* group values looked at per entry (memberOf can be long) */

enum sync_mode { SYNC_AUTO, SYNC_REPL, SYNC_POLL };

/* Outcome of a session. */
enum { SESSION_FAILED = -1, SESSION_STOP = 0, SESSION_RESTART = 1 };

struct settings {
    char *urls, *bind_dn, *password, *base, *filter;
    int scope;
    char *jid_attr, *aor_attr, *name_attr, *group_attr, *tel_attr;
    char *attrs[8];              /* the above, distinct, NULL-terminated (not owned) */
    char *poll_attrs[9];         /* attrs + modifyTimestamp */
    bool starttls;
    char *ca_file;
    bool verify;
    enum sync_mode sync;
    int poll_s, timeout_s;
    size_t max_users;
};

struct slot {
    char *key;                   /* entryUUID in hex (syncrepl) or the DN lower-cased */
    struct dir_entry e;
};

struct dir_ldap {
    /* The loop's side. */
    struct event_base *base;
    struct event *ev_news;
    struct event *ev_start;      /* starts the thread once the loop runs */
    dir_ldap_news_fn fn;
    void *arg;
    int news_pipe[2];            /* thread -> loop: the mailbox has something */
    int stop_pipe[2];            /* loop -> thread: stop */
    pthread_t thread;
    bool started;

    /* The mailbox, under mu: the latest of what the thread has to say. */
    pthread_mutex_t mu;
    struct dir_ldap_news box;    /* box.entries owned while here */

    /* The thread's side: nothing below is touched by the loop once the thread runs. */
    struct settings s;
    LDAP *ld;
    struct strmap entries;       /* key -> struct slot*, the server's current entries */
    size_t over_limit;
    bool forced_poll;            /* sync = auto, and the server refused a sync search */
    const char *mode;
    struct backoff retry;
    char err[256];
};

/* ---- settings --------------------------------------------------------------------------- */

static bool loopback_host(const char *url)
{
    const char *h = strstr(url, "://");
    char host[256];
    size_t n;

    if (!h)
        return false;
    h += 3;
    if (*h == '[') {
        n = strcspn(h, "]");
        snprintf(host, sizeof host, "%.*s", (int)(n > 0 ? n - 1 : 0), h + 1);
    } else {
        n = strcspn(h, ":/");
        snprintf(host, sizeof host, "%.*s", (int)n, h);
    }
    return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0;
}

/* auto: StartTLS for ldap:// to anything but loopback; ldaps:// and ldapi:// never
 * (they are TLS, or local, already). */
static bool want_starttls(const struct offhook_config *cfg)
{
    char *copy, *save = NULL;
    bool plain_remote = false, other = false;

    if (strcmp(cfg->dir_tls, "none") == 0)
        return false;
    copy = xstrdup(cfg->dir_ldap_url);
    for (char *u = strtok_r(copy, " \t", &save); u; u = strtok_r(NULL, " \t", &save)) {
        if (strncasecmp(u, "ldap://", 7) != 0)
            other = true;
        else if (!loopback_host(u))
            plain_remote = true;
    }
    free(copy);
    if (strcmp(cfg->dir_tls, "starttls") == 0)
        return true;
    return plain_remote && !other;
}

static void add_attr(char **attrs, char *a)
{
    int i = 0;

    if (!a || !*a)
        return;
    for (; attrs[i]; i++) {
        if (strcasecmp(attrs[i], a) == 0)
            return;
    }
    attrs[i] = a;
}

static void settings_init(struct settings *s, const struct offhook_config *cfg)
{
    s->urls = xstrdup(cfg->dir_ldap_url);
    s->bind_dn = xstrdup(cfg->dir_bind_dn);
    s->password = xstrdup(cfg->dir_bind_password ? cfg->dir_bind_password : "");
    s->base = xstrdup(cfg->dir_base);
    s->filter = xstrdup(cfg->dir_filter);
    s->scope = strcmp(cfg->dir_scope, "one") == 0 ? LDAP_SCOPE_ONELEVEL : LDAP_SCOPE_SUBTREE;
    s->jid_attr = xstrdup(cfg->dir_jid_attr);
    s->aor_attr = xstrdup(cfg->dir_aor_attr);
    s->name_attr = xstrdup(cfg->dir_name_attr);
    s->group_attr = xstrdup(cfg->dir_group_attr);
    s->tel_attr = xstrdup(cfg->dir_tel_attr);
    add_attr(s->attrs, s->jid_attr);
    add_attr(s->attrs, s->aor_attr);
    add_attr(s->attrs, s->name_attr);
    add_attr(s->attrs, s->group_attr);
    add_attr(s->attrs, s->tel_attr);
    memcpy(s->poll_attrs, s->attrs, sizeof s->attrs);
    add_attr(s->poll_attrs, "modifyTimestamp");
    s->starttls = want_starttls(cfg);
    s->ca_file = xstrdup(cfg->dir_ca_file);
    s->verify = cfg->dir_tls_verify;
    s->sync = strcmp(cfg->dir_sync, "syncrepl") == 0 ? SYNC_REPL
              : strcmp(cfg->dir_sync, "poll") == 0   ? SYNC_POLL
                                                     : SYNC_AUTO;
    s->poll_s = (int)cfg->dir_poll_interval;
    s->timeout_s = (int)cfg->dir_timeout;
    s->max_users = (size_t)cfg->dir_max_users;
}

static void settings_free(struct settings *s)
{
    explicit_bzero(s->password, strlen(s->password));
    free(s->urls);
    free(s->bind_dn);
    free(s->password);
    free(s->base);
    free(s->filter);
    free(s->jid_attr);
    free(s->aor_attr);
    free(s->name_attr);
    free(s->group_attr);
    free(s->tel_attr);
    free(s->ca_file);
}

/* ---- entries ---------------------------------------------------------------------------- */

static void map_clear(struct strmap *m)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(m, &pos, &k, &v)) {
        struct slot *sl = v;
        dir_entry_free(&sl->e);
        free(sl->key);
        free(sl);
    }
    strmap_free(m);
    strmap_init(m);
}

static void map_del(struct strmap *m, const char *key)
{
    struct slot *sl = strmap_del(m, key);

    if (sl) {
        dir_entry_free(&sl->e);
        free(sl->key);
        free(sl);
    }
}

/* Puts e (taken) under key; false if the map is full (e is then freed). */
static bool map_put(struct dir_ldap *l, struct strmap *m, const char *key, struct dir_entry *e)
{
    struct slot *sl = strmap_get(m, key);

    if (!sl) {
        if (m->count >= l->s.max_users) {
            l->over_limit++;
            dir_entry_free(e);
            return false;
        }
        sl = xcalloc(1, sizeof *sl);
        sl->key = xstrdup(key);
        strmap_put(m, sl->key, sl);
    } else {
        dir_entry_free(&sl->e);
    }
    sl->e = *e;
    memset(e, 0, sizeof *e);
    return true;
}

typedef void (*value_fn)(struct dir_entry *e, const char *v, size_t len);

static void take_values(LDAP *ld, LDAPMessage *msg, const char *attr, struct dir_entry *e,
                        value_fn fn, int max)
{
    struct berval **vals;

    if (!attr || !*attr)
        return;
    vals = ldap_get_values_len(ld, msg, attr);
    for (int i = 0; vals && vals[i] && i < max; i++)
        fn(e, vals[i]->bv_val, vals[i]->bv_len);
    ldap_value_free_len(vals);
}

static void read_entry(struct dir_ldap *l, LDAPMessage *msg, struct dir_entry *e)
{
    char *dn = ldap_get_dn(l->ld, msg);

    e->id = xstrndup(dn ? dn : "?", 512);
    ldap_memfree(dn);
    take_values(l->ld, msg, l->s.jid_attr, e, dir_entry_set_jid, 1);
    take_values(l->ld, msg, l->s.aor_attr, e, dir_entry_add_phone, DIR_MAX_PHONES);
    take_values(l->ld, msg, l->s.name_attr, e, dir_entry_set_name, 1);
    take_values(l->ld, msg, l->s.tel_attr, e, dir_entry_set_tel, 1);
    take_values(l->ld, msg, l->s.group_attr, e, dir_entry_add_group, MAX_GROUP_VALUES);
}

static char *dn_key(LDAP *ld, LDAPMessage *msg)
{
    char *dn = ldap_get_dn(ld, msg), *k;

    if (!dn)
        return NULL;
    k = xstrdup(dn);
    ldap_memfree(dn);
    str_lower(k);
    return k;
}

/* ---- the mailbox -------------------------------------------------------------------- */

static void wake_loop(struct dir_ldap *l)
{
    char c = 1;

    /* Full pipe: the loop has a wake-up pending already. */
    if (write(l->news_pipe[1], &c, 1) < 0 && errno != EAGAIN)
        log_debug("directory", "event=wake_failed errno=%d", errno);
}

static void post_state(struct dir_ldap *l, bool up, const char *error)
{
    pthread_mutex_lock(&l->mu);
    l->box.up = up;
    l->box.mode = l->mode;
    snprintf(l->box.error, sizeof l->box.error, "%s", up ? "" : error);
    pthread_mutex_unlock(&l->mu);
    wake_loop(l);
}

/* Hands a copy of every entry to the loop (replacing one it has not taken yet). */
static void post_set(struct dir_ldap *l, bool full, long sync_ms)
{
    size_t n = 0, pos = 0;
    struct dir_entry *v = xcalloc(l->entries.count ? l->entries.count : 1, sizeof *v);
    const char *k;
    void *val;

    while (strmap_next(&l->entries, &pos, &k, &val)) {
        const struct dir_entry *e = &((struct slot *)val)->e;
        struct dir_entry *c = &v[n++];

        c->id = e->id ? xstrdup(e->id) : NULL;
        c->jid = e->jid ? xstrdup(e->jid) : NULL;
        for (int i = 0; i < e->nphones; i++)
            c->phones[i] = xstrdup(e->phones[i]);
        c->nphones = e->nphones;
        c->name = e->name ? xstrdup(e->name) : NULL;
        c->tel = e->tel ? xstrdup(e->tel) : NULL;
        for (int i = 0; i < e->ngroups; i++)
            c->groups[i] = xstrdup(e->groups[i]);
        c->ngroups = e->ngroups;
        c->too_large = e->too_large;
    }
    pthread_mutex_lock(&l->mu);
    if (l->box.entries) {
        for (size_t i = 0; i < l->box.n; i++)
            dir_entry_free(&l->box.entries[i]);
        free(l->box.entries);
    } else if (!l->box.have_set) {
        l->box.full = false;
    }
    l->box.entries = v;
    l->box.n = n;
    l->box.have_set = true;
    l->box.over_limit = l->over_limit;
    l->box.full = l->box.full || full; /* a full read not yet taken stays one */
    if (full)
        l->box.sync_ms = sync_ms;
    l->box.up = true;
    l->box.mode = l->mode;
    l->box.error[0] = '\0';
    pthread_mutex_unlock(&l->mu);
    wake_loop(l);
}

static void on_news(evutil_socket_t fd, short what, void *arg)
{
    struct dir_ldap *l = arg;
    struct dir_ldap_news news;
    char buf[64];

    while (read(fd, buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&l->mu);
    news = l->box;
    l->box.entries = NULL;
    l->box.n = 0;
    l->box.have_set = false;
    l->box.full = false;
    pthread_mutex_unlock(&l->mu);
    if (!news.mode)
        news.mode = "";
    l->fn(l->arg, &news);
    if (news.entries) {
        for (size_t i = 0; i < news.n; i++)
            dir_entry_free(&news.entries[i]);
        free(news.entries);
    }
}

/* ---- the thread: waiting, failing ------------------------------------------------------ */

/* Waits up to ms for a stop; true if one came. */
static bool wait_stop(struct dir_ldap *l, int ms)
{
    struct pollfd p = {.fd = l->stop_pipe[0], .events = POLLIN};

    return poll(&p, 1, ms) > 0;
}

static int fail(struct dir_ldap *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct dir_ldap *l, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(l->err, sizeof l->err, fmt, ap);
    va_end(ap);
    return SESSION_FAILED;
}

/* rc's text, and the server's own words when it gave some. */
static void ldap_why(LDAP *ld, int rc, char *out, size_t len)
{
    char *diag = NULL;

    if (ld)
        ldap_get_option(ld, LDAP_OPT_DIAGNOSTIC_MESSAGE, &diag);
    snprintf(out, len, "%s%s%s", ldap_err2string(rc), diag && *diag ? ": " : "",
             diag && *diag ? diag : "");
    ldap_memfree(diag);
    for (char *p = out; *p; p++) {
        if (*p == '"' || (unsigned char)*p < 0x20)
            *p = '\'';
    }
}

/* ---- the thread: connecting ------------------------------------------------------------ */

static int set_options(struct dir_ldap *l)
{
    struct timeval net = {.tv_sec = l->s.timeout_s}, op = {.tv_sec = l->s.timeout_s};
    int v3 = LDAP_VERSION3, req = l->s.verify ? LDAP_OPT_X_TLS_DEMAND : LDAP_OPT_X_TLS_NEVER;
    int idle = 60, probes = 3, interval = 10, zero = 0, rc;
    Sockbuf *sb = NULL;
    ber_len_t max = PDU_MAX;

    ldap_set_option(l->ld, LDAP_OPT_PROTOCOL_VERSION, &v3);
    ldap_set_option(l->ld, LDAP_OPT_NETWORK_TIMEOUT, &net);
    ldap_set_option(l->ld, LDAP_OPT_TIMEOUT, &op);
    ldap_set_option(l->ld, LDAP_OPT_REFERRALS, LDAP_OPT_OFF);
    ldap_set_option(l->ld, LDAP_OPT_RESTART, LDAP_OPT_ON);
    /* A server that vanishes without a FIN is noticed by the probe; these help the
     * kernel notice sooner on an idle persistent search. */
    ldap_set_option(l->ld, LDAP_OPT_X_KEEPALIVE_IDLE, &idle);
    ldap_set_option(l->ld, LDAP_OPT_X_KEEPALIVE_PROBES, &probes);
    ldap_set_option(l->ld, LDAP_OPT_X_KEEPALIVE_INTERVAL, &interval);
    ldap_set_option(l->ld, LDAP_OPT_X_TLS_REQUIRE_CERT, &req);
    if (l->s.ca_file[0])
        ldap_set_option(l->ld, LDAP_OPT_X_TLS_CACERTFILE, l->s.ca_file);
    rc = ldap_set_option(l->ld, LDAP_OPT_X_TLS_NEWCTX, &zero);
    if (rc != LDAP_OPT_SUCCESS && (l->s.starttls || strstr(l->s.urls, "ldaps://"))) {
        char why[200];
        ldap_why(l->ld, rc, why, sizeof why);
        return fail(l, "TLS set-up (ca_file %s): %s", l->s.ca_file, why);
    }
    if (ldap_get_option(l->ld, LDAP_OPT_SOCKBUF, &sb) == LDAP_OPT_SUCCESS && sb)
        ber_sockbuf_ctrl(sb, LBER_SB_OPT_SET_MAX_INCOMING, &max);
    return 0;
}

/* What the server's root DSE says it supports: sync (RFC 4533). -1 = it did not say. */
static int server_has_sync(struct dir_ldap *l)
{
    char *attrs[] = {"supportedControl", NULL};
    struct timeval tv = {.tv_sec = l->s.timeout_s};
    LDAPMessage *res = NULL, *e;
    struct berval **vals;
    int rc, found = -1;

    rc = ldap_search_ext_s(l->ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", attrs, 0, NULL, NULL,
                           &tv, 1, &res);
    if (rc == LDAP_SUCCESS && (e = ldap_first_entry(l->ld, res)) &&
        (vals = ldap_get_values_len(l->ld, e, "supportedControl"))) {
        found = 0;
        for (int i = 0; vals[i]; i++) {
            if (vals[i]->bv_len == strlen(LDAP_CONTROL_SYNC) &&
                memcmp(vals[i]->bv_val, LDAP_CONTROL_SYNC, vals[i]->bv_len) == 0)
                found = 1;
        }
        ldap_value_free_len(vals);
    }
    ldap_msgfree(res);
    return found;
}

static int connect_and_bind(struct dir_ldap *l)
{
    struct berval cred = {.bv_len = strlen(l->s.password), .bv_val = l->s.password};
    char why[200];
    int rc = ldap_initialize(&l->ld, l->s.urls);

    if (rc != LDAP_SUCCESS)
        return fail(l, "ldap_initialize: %s", ldap_err2string(rc));
    if (set_options(l) < 0)
        return SESSION_FAILED;
    if (l->s.starttls) {
        rc = ldap_start_tls_s(l->ld, NULL, NULL);
        if (rc != LDAP_SUCCESS) {
            ldap_why(l->ld, rc, why, sizeof why);
            return fail(l, "StartTLS: %s", why);
        }
    }
    rc = ldap_sasl_bind_s(l->ld, l->s.bind_dn[0] ? l->s.bind_dn : NULL, LDAP_SASL_SIMPLE,
                          &cred, NULL, NULL, NULL);
    if (rc != LDAP_SUCCESS) {
        ldap_why(l->ld, rc, why, sizeof why);
        return fail(l, "bind as '%.100s': %s", l->s.bind_dn[0] ? l->s.bind_dn : "(anonymous)",
                    why);
    }
    return 0;
}

/* ---- the thread: RFC 4533 refreshAndPersist --------------------------------------------- */

struct syncrun {
    int msgid;                   /* the sync search */
    bool refreshing;             /* before refreshDone: entries go to staging */
    struct strmap staging;
    int64_t started_ms;
    bool dirty;                  /* entries changed since the last set handed over */
    int64_t dirty_since_ms, last_change_ms;
    int probe_msgid;             /* -1: none outstanding */
    int64_t probe_sent_ms, probe_next_ms;
};

static void hex_key(const struct berval *uuid, char *out, size_t len)
{
    size_t o = 0;

    for (ber_len_t i = 0; i < uuid->bv_len && o + 3 <= len; i++)
        o += (size_t)snprintf(out + o, len - o, "%02x", (unsigned char)uuid->bv_val[i]);
    out[o] = '\0';
}

static void changed(struct syncrun *r)
{
    int64_t now = clock_mono_ms();

    if (!r->dirty)
        r->dirty_since_ms = now;
    r->dirty = true;
    r->last_change_ms = now;
}

static void finish_refresh(struct dir_ldap *l, struct syncrun *r)
{
    if (!r->refreshing)
        return;
    map_clear(&l->entries);
    l->entries = r->staging;
    strmap_init(&r->staging);
    r->refreshing = false;
    r->dirty = false;
    backoff_reset(&l->retry);
    post_set(l, true, (long)(clock_mono_ms() - r->started_ms));
}

static void sync_entry(struct dir_ldap *l, struct syncrun *r, LDAPMessage *msg)
{
    LDAPControl **ctrls = NULL, *c;
    BerElement *ber = NULL;
    struct berval uuid = {0};
    ber_int_t state = -1;
    char key[80];

    if (ldap_get_entry_controls(l->ld, msg, &ctrls) != LDAP_SUCCESS || !ctrls ||
        !(c = ldap_control_find(LDAP_CONTROL_SYNC_STATE, ctrls, NULL)) ||
        !(ber = ber_init(&c->ldctl_value)) ||
        ber_scanf(ber, "{em", &state, &uuid) == LBER_ERROR || uuid.bv_len == 0 ||
        uuid.bv_len > 32) {
        log_debug("directory", "event=entry_without_sync_state");
        goto out;
    }
    hex_key(&uuid, key, sizeof key);
    switch (state) {
    case LDAP_SYNC_ADD:
    case LDAP_SYNC_MODIFY: {
        struct dir_entry e = {0};
        read_entry(l, msg, &e);
        map_put(l, r->refreshing ? &r->staging : &l->entries, key, &e);
        if (!r->refreshing)
            changed(r);
        break;
    }
    case LDAP_SYNC_DELETE:
        map_del(&r->staging, key);
        if (strmap_get(&l->entries, key)) {
            map_del(&l->entries, key);
            changed(r);
        }
        break;
    default:
        break; /* present: only for a refresh from a cookie, which is never sent */
    }
out:
    if (ber)
        ber_free(ber, 1);
    ldap_controls_free(ctrls);
}

static void sync_intermediate(struct dir_ldap *l, struct syncrun *r, LDAPMessage *msg)
{
    char *oid = NULL;
    struct berval *data = NULL, cookie;
    BerElement *ber = NULL;
    ber_len_t len;
    ber_tag_t tag;

    if (ldap_parse_intermediate(l->ld, msg, &oid, &data, NULL, 0) != LDAP_SUCCESS || !oid ||
        strcmp(oid, LDAP_SYNC_INFO) != 0 || !data || !(ber = ber_init(data)))
        goto out;
    tag = ber_peek_tag(ber, &len);
    if (tag == LDAP_TAG_SYNC_REFRESH_DELETE || tag == LDAP_TAG_SYNC_REFRESH_PRESENT) {
        ber_int_t done = 1; /* refreshDone DEFAULT TRUE */
        if (ber_scanf(ber, "{") == LBER_ERROR)
            goto out;
        if (ber_peek_tag(ber, &len) == LDAP_TAG_SYNC_COOKIE)
            (void)ber_scanf(ber, "m", &cookie);
        if (ber_peek_tag(ber, &len) == LDAP_TAG_REFRESHDONE)
            (void)ber_scanf(ber, "b", &done);
        if (done)
            finish_refresh(l, r);
    } else if (tag == LDAP_TAG_SYNC_ID_SET) {
        ber_int_t deletes = 0;
        BerVarray uuids = NULL;
        if (ber_scanf(ber, "{") == LBER_ERROR)
            goto out;
        if (ber_peek_tag(ber, &len) == LDAP_TAG_SYNC_COOKIE)
            (void)ber_scanf(ber, "m", &cookie);
        if (ber_peek_tag(ber, &len) == LDAP_TAG_REFRESHDELETES)
            (void)ber_scanf(ber, "b", &deletes);
        if (ber_scanf(ber, "[W]}", &uuids) != LBER_ERROR && uuids && deletes) {
            for (int i = 0; uuids[i].bv_val; i++) {
                char key[80];
                hex_key(&uuids[i], key, sizeof key);
                map_del(&r->staging, key);
                if (strmap_get(&l->entries, key)) {
                    map_del(&l->entries, key);
                    changed(r);
                }
            }
        }
        ber_bvarray_free(uuids);
    }
    /* newcookie: the cookie is not kept; a new session refreshes in full. */
out:
    if (ber)
        ber_free(ber, 1);
    ldap_memfree(oid);
    ber_bvfree(data);
}

/* The sync search ended (it should not, in refreshAndPersist). */
static int sync_result(struct dir_ldap *l, struct syncrun *r, LDAPMessage *msg)
{
    int err = LDAP_OTHER;
    char *diag = NULL, why[200];

    if (ldap_parse_result(l->ld, msg, &err, NULL, &diag, NULL, NULL, 0) != LDAP_SUCCESS)
        err = LDAP_OTHER;
    snprintf(why, sizeof why, "%s%s%s", ldap_err2string(err), diag && *diag ? ": " : "",
             diag && *diag ? diag : "");
    ldap_memfree(diag);
    if (err == LDAP_SYNC_REFRESH_REQUIRED)
        return SESSION_RESTART;
    if (err == LDAP_SUCCESS) {
        finish_refresh(l, r);
        return fail(l, "the server ended the persistent search");
    }
    if (l->s.sync == SYNC_AUTO && (err == LDAP_UNAVAILABLE_CRITICAL_EXTENSION ||
                                   err == LDAP_UNWILLING_TO_PERFORM || err == LDAP_PROTOCOL_ERROR)) {
        log_notice("directory", "event=syncrepl_refused reason=%s action=poll", log_q(why));
        l->forced_poll = true;
        return SESSION_RESTART;
    }
    return fail(l, "sync search: %s", why);
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int run_syncrepl(struct dir_ldap *l)
{
    struct syncrun r = {.refreshing = true, .probe_msgid = -1};
    struct timeval zero = {0};
    BerElement *ber = ber_alloc_t(LBER_USE_DER);
    struct berval bv = {0};
    LDAPControl ctrl = {.ldctl_oid = LDAP_CONTROL_SYNC, .ldctl_iscritical = 1}, *ctrls[2];
    ber_socket_t fd = -1;
    int rc, out = SESSION_FAILED;

    l->mode = "syncrepl";
    strmap_init(&r.staging);
    l->over_limit = 0;
    /* No cookie: every session reads everything (a few seconds at 10,000 users), so no
     * state needs keeping between sessions, and nothing can be missed across one. */
    if (!ber || ber_printf(ber, "{e}", (ber_int_t)LDAP_SYNC_REFRESH_AND_PERSIST) < 0 ||
        ber_flatten2(ber, &bv, 0) < 0) {
        out = fail(l, "cannot encode the sync request");
        goto done;
    }
    ctrl.ldctl_value = bv;
    ctrls[0] = &ctrl;
    ctrls[1] = NULL;
    r.started_ms = clock_mono_ms();
    rc = ldap_search_ext(l->ld, l->s.base, l->s.scope, l->s.filter, l->s.attrs, 0, ctrls, NULL,
                         NULL, 0, &r.msgid);
    if (rc != LDAP_SUCCESS) {
        char why[200];
        ldap_why(l->ld, rc, why, sizeof why);
        out = fail(l, "sync search: %s", why);
        goto done;
    }
    ldap_get_option(l->ld, LDAP_OPT_DESC, &fd);
    r.probe_next_ms = r.started_ms + (int64_t)l->s.poll_s * 1000;
    for (;;) {
        struct pollfd p[2] = {{.fd = l->stop_pipe[0], .events = POLLIN},
                              {.fd = fd, .events = POLLIN}};
        int64_t now = clock_mono_ms(), due = r.probe_next_ms;
        Sockbuf *sb = NULL;
        LDAPMessage *msg;

        if (r.probe_msgid >= 0)
            due = r.probe_sent_ms + (int64_t)l->s.timeout_s * 1000;
        if (r.dirty)
            due = min64(due, min64(r.last_change_ms + QUIET_MS, r.dirty_since_ms + HOLD_MAX_MS));
        /* TLS may hold a message it already read from the socket. */
        if (ldap_get_option(l->ld, LDAP_OPT_SOCKBUF, &sb) == LDAP_OPT_SUCCESS && sb &&
            ber_sockbuf_ctrl(sb, LBER_SB_OPT_DATA_READY, NULL) > 0)
            due = now;
        if (poll(p, 2, (int)(due > now ? due - now : 0)) < 0 && errno != EINTR) {
            out = fail(l, "poll: %s", strerror(errno));
            goto done;
        }
        if (p[0].revents) {
            out = SESSION_STOP;
            goto done;
        }
        while ((rc = ldap_result(l->ld, LDAP_RES_ANY, LDAP_MSG_ONE, &zero, &msg)) > 0) {
            int id = ldap_msgid(msg), type = ldap_msgtype(msg);
            int res = 0;

            if (id == r.probe_msgid) {
                if (type == LDAP_RES_SEARCH_RESULT) {
                    r.probe_msgid = -1;
                    r.probe_next_ms = clock_mono_ms() + (int64_t)l->s.poll_s * 1000;
                }
            } else if (id == r.msgid && type == LDAP_RES_SEARCH_ENTRY) {
                sync_entry(l, &r, msg);
            } else if (id == r.msgid && type == LDAP_RES_INTERMEDIATE) {
                sync_intermediate(l, &r, msg);
            } else if (id == r.msgid && type == LDAP_RES_SEARCH_RESULT) {
                res = sync_result(l, &r, msg); /* never SESSION_STOP (0) */
            }
            ldap_msgfree(msg);
            if (res) {
                out = res;
                goto done;
            }
        }
        if (rc < 0) {
            char why[200];
            int err = LDAP_SERVER_DOWN;
            ldap_get_option(l->ld, LDAP_OPT_RESULT_CODE, &err);
            ldap_why(l->ld, err, why, sizeof why);
            out = fail(l, "connection lost: %s", why);
            goto done;
        }
        now = clock_mono_ms();
        if (r.probe_msgid >= 0 && now >= r.probe_sent_ms + (int64_t)l->s.timeout_s * 1000) {
            out = fail(l, "no answer to a check in %d s", l->s.timeout_s);
            goto done;
        }
        if (r.probe_msgid < 0 && now >= r.probe_next_ms) {
            char *none[] = {LDAP_NO_ATTRS, NULL};
            /* The persistent search is silent while nothing changes: ask something small
             * to tell a quiet server from a dead one. */
            if (ldap_search_ext(l->ld, "", LDAP_SCOPE_BASE, "(objectClass=*)", none, 0, NULL,
                                NULL, NULL, 1, &r.probe_msgid) != LDAP_SUCCESS) {
                out = fail(l, "connection lost (check not sent)");
                goto done;
            }
            r.probe_sent_ms = now;
        }
        if (r.dirty && !r.refreshing &&
            (now >= r.last_change_ms + QUIET_MS || now >= r.dirty_since_ms + HOLD_MAX_MS)) {
            r.dirty = false;
            post_set(l, false, 0);
        }
    }
done:
    map_clear(&r.staging);
    strmap_free(&r.staging);
    if (ber)
        ber_free(ber, 1);
    return out;
}

/* ---- the thread: polling ---------------------------------------------------------------- */

typedef void (*entry_fn)(struct dir_ldap *l, LDAPMessage *msg, void *arg);

/* A paged search (RFC 2696; a server without paging ignores the non-critical control):
 * fn for every entry. Returns 0, or SESSION_FAILED. */
static int search_all(struct dir_ldap *l, const char *filter, char **attrs, entry_fn fn,
                      void *arg)
{
    struct berval cookie = {0};
    struct timeval tv = {.tv_sec = l->s.timeout_s};
    int rc = 0;

    do {
        LDAPControl *page = NULL, *ctrls[2] = {NULL, NULL}, **rctrls = NULL, *pr;
        LDAPMessage *res = NULL;
        int err = LDAP_OTHER;
        char *diag = NULL;

        if (ldap_create_page_control(l->ld, PAGE_SIZE, cookie.bv_val ? &cookie : NULL, 0,
                                     &page) != LDAP_SUCCESS) {
            rc = fail(l, "cannot encode the paged search");
            break;
        }
        ctrls[0] = page;
        err = ldap_search_ext_s(l->ld, l->s.base, l->s.scope, filter, attrs, 0, ctrls, NULL, &tv,
                                0, &res);
        ldap_control_free(page);
        if (err != LDAP_SUCCESS && err != LDAP_SIZELIMIT_EXCEEDED && !res) {
            char why[200];
            ldap_why(l->ld, err, why, sizeof why);
            rc = fail(l, "search: %s", why);
            break;
        }
        for (LDAPMessage *e = ldap_first_entry(l->ld, res); e; e = ldap_next_entry(l->ld, e))
            fn(l, e, arg);
        ber_memfree(cookie.bv_val);
        cookie.bv_val = NULL;
        cookie.bv_len = 0;
        if (ldap_parse_result(l->ld, res, &err, NULL, &diag, NULL, &rctrls, 0) != LDAP_SUCCESS ||
            (err != LDAP_SUCCESS && err != LDAP_SIZELIMIT_EXCEEDED)) {
            rc = fail(l, "search: %s%s%.120s", ldap_err2string(err), diag && *diag ? ": " : "",
                      diag ? diag : "");
        } else if (err == LDAP_SIZELIMIT_EXCEEDED) {
            /* The server's own limit (slapd's sizelimit, AD's MaxPageSize without paging):
             * what came is all there is; said once per read. */
            log_warn("directory", "event=server_size_limit action=\"raise the limit for "
                                  "bind_dn on the server\"");
        } else if ((pr = ldap_control_find(LDAP_CONTROL_PAGEDRESULTS, rctrls, NULL))) {
            ber_int_t count;
            if (ldap_parse_pageresponse_control(l->ld, pr, &count, &cookie) != LDAP_SUCCESS) {
                cookie.bv_val = NULL;
                cookie.bv_len = 0;
            }
        }
        ldap_memfree(diag);
        ldap_controls_free(rctrls);
        ldap_msgfree(res);
    } while (rc == 0 && cookie.bv_len > 0);
    ber_memfree(cookie.bv_val);
    return rc;
}

struct pollrun {
    struct strmap *into;         /* full read: the new entries */
    char maxts[64];              /* latest modifyTimestamp seen ("" = none) */
    struct strmap seen;          /* listing: keys present */
    bool unknown;                /* listing: a key not in the entries */
    bool any;                    /* changes: something was read */
};

static void note_ts(struct dir_ldap *l, LDAPMessage *msg, struct pollrun *p)
{
    struct berval **v = ldap_get_values_len(l->ld, msg, "modifyTimestamp");

    if (v && v[0] && v[0]->bv_len < sizeof p->maxts) {
        char ts[64];
        snprintf(ts, sizeof ts, "%.*s", (int)v[0]->bv_len, v[0]->bv_val);
        /* GeneralizedTime of one server compares as text. */
        if (strcmp(ts, p->maxts) > 0 && !strpbrk(ts, "()*\\"))
            snprintf(p->maxts, sizeof p->maxts, "%s", ts);
    }
    ldap_value_free_len(v);
}

static void on_full_entry(struct dir_ldap *l, LDAPMessage *msg, void *arg)
{
    struct pollrun *p = arg;
    char *key = dn_key(l->ld, msg);
    struct dir_entry e = {0};

    if (!key)
        return;
    note_ts(l, msg, p);
    read_entry(l, msg, &e);
    map_put(l, p->into, key, &e);
    p->any = true;
    free(key);
}

static void on_listed(struct dir_ldap *l, LDAPMessage *msg, void *arg)
{
    struct pollrun *p = arg;
    char *key = dn_key(l->ld, msg);

    if (!key)
        return;
    if (!strmap_get(&l->entries, key))
        p->unknown = true;
    if (!strmap_get(&p->seen, key))
        strmap_put(&p->seen, key, key);
    else
        free(key);
}

static int poll_full(struct dir_ldap *l, struct pollrun *p)
{
    struct strmap fresh;
    int64_t t0 = clock_mono_ms();
    int rc;

    strmap_init(&fresh);
    p->into = &fresh;
    p->maxts[0] = '\0';
    l->over_limit = 0;
    rc = search_all(l, l->s.filter, l->s.poll_attrs, on_full_entry, p);
    if (rc == 0) {
        map_clear(&l->entries);
        l->entries = fresh;
        backoff_reset(&l->retry);
        post_set(l, true, (long)(clock_mono_ms() - t0));
    } else {
        map_clear(&fresh);
        strmap_free(&fresh);
    }
    return rc;
}

/* One poll: entries changed since the latest modifyTimestamp, then the list of entries
 * (names only) for the ones that left. */
static int poll_once(struct dir_ldap *l, struct pollrun *p)
{
    size_t flen = strlen(l->s.filter) + sizeof p->maxts + 40, pos = 0;
    char *filter = xmalloc(flen), *none[] = {LDAP_NO_ATTRS, NULL};
    bool removed = false;
    const char *k;
    void *v;
    int rc;

    if (!p->maxts[0]) {
        free(filter);
        return poll_full(l, p); /* no timestamps from this server: read it all */
    }
    snprintf(filter, flen, "(&%s(modifyTimestamp>=%s))", l->s.filter, p->maxts);
    p->into = &l->entries;
    p->any = false;
    rc = search_all(l, filter, l->s.poll_attrs, on_full_entry, p);
    free(filter);
    if (rc < 0)
        return rc;
    strmap_init(&p->seen);
    p->unknown = false;
    rc = search_all(l, l->s.filter, none, on_listed, p);
    if (rc == 0) {
        char **gone = xmalloc((l->entries.count + 1) * sizeof *gone);
        size_t ngone = 0;
        while (strmap_next(&l->entries, &pos, &k, &v)) {
            if (!strmap_get(&p->seen, k))
                gone[ngone++] = xstrdup(k);
        }
        for (size_t i = 0; i < ngone; i++) {
            map_del(&l->entries, gone[i]);
            free(gone[i]);
        }
        free(gone);
        removed = ngone > 0;
    }
    strmap_clear_owned(&p->seen);
    strmap_free(&p->seen);
    if (rc < 0)
        return rc;
    /* A name not read by either search (moved into the filter without a new timestamp,
     * or beyond the entries kept): read everything again. */
    if (p->unknown && l->entries.count < l->s.max_users)
        return poll_full(l, p);
    /* modifyTimestamp>= also returns the entries of the last second again; the loop sees
     * they are the same and changes nothing. */
    if (p->any || removed)
        post_set(l, false, 0);
    return 0;
}

static int run_poll(struct dir_ldap *l)
{
    struct pollrun p = {0};
    int rc;

    l->mode = "poll";
    rc = poll_full(l, &p);
    while (rc == 0) {
        if (wait_stop(l, l->s.poll_s * 1000))
            return SESSION_STOP;
        rc = poll_once(l, &p);
    }
    return rc;
}

/* ---- the thread ------------------------------------------------------------------------ */

static int session(struct dir_ldap *l)
{
    int has_sync;

    if (connect_and_bind(l) < 0)
        return SESSION_FAILED;
    if (l->s.sync == SYNC_POLL || l->forced_poll)
        return run_poll(l);
    has_sync = l->s.sync == SYNC_AUTO ? server_has_sync(l) : 1;
    if (has_sync == 0) {
        log_notice("directory", "event=syncrepl_unavailable reason=\"not in the server's "
                                "supportedControl\" action=poll");
        l->forced_poll = true;
        return run_poll(l);
    }
    return run_syncrepl(l);
}

static void *run(void *arg)
{
    struct dir_ldap *l = arg;

    for (;;) {
        int rc = session(l);

        if (l->ld) {
            ldap_unbind_ext(l->ld, NULL, NULL);
            l->ld = NULL;
        }
        if (rc == SESSION_STOP)
            break;
        if (rc == SESSION_RESTART)
            continue;
        post_state(l, false, l->err);
        if (wait_stop(l, (int)backoff_next(&l->retry)))
            break;
    }
    return NULL;
}

/* ---- the loop's side -------------------------------------------------------------------- */

static void on_start(evutil_socket_t fd, short what, void *arg)
{
    struct dir_ldap *l = arg;
    sigset_t all, old;
    int rc;

    /* Signals are the loop's business (evsignal): the thread takes none. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&l->thread, NULL, run, l);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        /* Said like a session that failed: the last known users are served. */
        log_err("directory", "event=start_failed reason=\"pthread_create: %s\"", strerror(rc));
        pthread_mutex_lock(&l->mu);
        snprintf(l->box.error, sizeof l->box.error, "cannot start the LDAP thread: %s",
                 strerror(rc));
        pthread_mutex_unlock(&l->mu);
        wake_loop(l);
        return;
    }
    l->started = true;
}

struct dir_ldap *dir_ldap_new(struct event_base *base, const struct offhook_config *cfg,
                              dir_ldap_news_fn fn, void *arg)
{
    struct dir_ldap *l = xcalloc(1, sizeof *l);

    l->base = base;
    l->fn = fn;
    l->arg = arg;
    l->news_pipe[0] = l->news_pipe[1] = l->stop_pipe[0] = l->stop_pipe[1] = -1;
    pthread_mutex_init(&l->mu, NULL);
    settings_init(&l->s, cfg);
    strmap_init(&l->entries);
    backoff_init(&l->retry, RETRY_MIN_MS, RETRY_MAX_MS, (uint64_t)clock_wall_us() ^ (uintptr_t)l);
    l->mode = NULL; /* not known before the first session has asked the server */
    if (pipe2(l->news_pipe, O_CLOEXEC | O_NONBLOCK) < 0 ||
        pipe2(l->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        log_err("directory", "event=start_failed reason=\"pipe: %s\"", strerror(errno));
        goto fail;
    }
    l->ev_news = event_new(base, l->news_pipe[0], EV_READ | EV_PERSIST, on_news, l);
    event_add(l->ev_news, NULL);
    /* The thread opens and closes sockets: started from the loop, once the daemon's own
     * start-up is over, it cannot race anything that looks at the process's descriptors
     * (sipbridge's suloop finds Sofia's epoll descriptor that way). */
    l->ev_start = evtimer_new(base, on_start, l);
    event_active(l->ev_start, EV_TIMEOUT, 1);
    return l;
fail:
    dir_ldap_free(l);
    return NULL;
}

void dir_ldap_free(struct dir_ldap *l)
{
    if (!l)
        return;
    if (l->started) {
        struct timespec until;
        char c = 1;

        if (write(l->stop_pipe[1], &c, 1) < 0)
            log_warn("directory", "event=stop_failed errno=%d", errno);
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += STOP_WAIT_S;
        if (pthread_timedjoin_np(l->thread, NULL, &until) != 0) {
            /* Stuck in a connect or search to a server that does not answer: the process
             * is stopping anyway; leave the thread (and what it holds) behind. */
            log_warn("directory", "event=stop_slow action=detached wait_s=%d", STOP_WAIT_S);
            pthread_detach(l->thread);
            if (l->ev_news)
                event_free(l->ev_news);
            event_free(l->ev_start);
            return;
        }
    }
    if (l->ev_news)
        event_free(l->ev_news);
    if (l->ev_start)
        event_free(l->ev_start);
    for (int i = 0; i < 2; i++) {
        if (l->news_pipe[i] >= 0)
            close(l->news_pipe[i]);
        if (l->stop_pipe[i] >= 0)
            close(l->stop_pipe[i]);
    }
    if (l->box.entries) {
        for (size_t i = 0; i < l->box.n; i++)
            dir_entry_free(&l->box.entries[i]);
        free(l->box.entries);
    }
    map_clear(&l->entries);
    strmap_free(&l->entries);
    settings_free(&l->s);
    pthread_mutex_destroy(&l->mu);
    free(l);
}
