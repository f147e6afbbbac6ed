/* The roster writer (component/roster.c) as a state machine, without servers: its store
 * is a map here (answered after each call, never during it, as Redis is), its writes go
 * through the real privileged.c to a stanza_out that keeps them, and each is answered as
 * the user's server would (or with an error, or never). What it must never do: touch an
 * item it did not record, write one twice at once, forget an item whose answer was lost,
 * put back one the user removed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <strophe.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "privileged.h"
#include "roster.h"
#include "stanza.h"
#include "strmap.h"
#include "strutil.h"
#include "users.h"

#define MAXQ 4096

static const char base_cfg[] = "[xmpp]\ndomain = phone.localhost\nsecret = s3cret\n"
                               "[users]\n"
                               "alice@localhost = sip:1001@pbx\n"
                               "bob@localhost = sip:1002@pbx\n"
                               "carol@localhost = sip:1003@pbx\n"
                               "[user alice@localhost]\nname = Alice Jones\n";

/* One component's writer, its store and its server. */
struct world {
    struct offhook_config *cfg;
    struct event_base *base;
    xmpp_ctx_t *ctx;
    struct users d;
    struct stanza_out out;
    struct privileged *priv;
    struct roster *r;
    struct roster_io io;
    struct strmap *store;            /* "user\ncontact" -> value (owned), kept across */
    /* store calls not answered yet */
    struct call {
        int kind;                    /* 0 load, 1 save with cookie, 2 list */
        unsigned long cookie;
        char *user;
        char **contacts;
        size_t n;
    } calls[MAXQ];
    int ncalls;
    xmpp_stanza_t *sent[MAXQ];       /* roster IQs sent, not answered yet (owned copies) */
    int nsent;
    int writes;                      /* roster IQs sent in all */
    int api_writes;
    const char *answer_error;        /* NULL: answer result; else this condition */
    bool answer_none;                /* leave writes unanswered */
    int added, removed, removed_gone;
    bool api;
};

/* ---- the store ------------------------------------------------------------------------ */

static char *key_of(const char *user, const char *contact)
{
    size_t n = strlen(user) + strlen(contact) + 2;
    char *k = xmalloc(n);

    snprintf(k, n, "%s\n%s", user, contact);
    return k;
}

static const char *stored(struct world *w, const char *user, const char *contact)
{
    char *k = key_of(user, contact);
    const char *v = strmap_get(w->store, k);

    free(k);
    return v;
}

static void store_put(struct world *w, const char *user, const char *contact,
                      const char *value)
{
    char *k = key_of(user, contact);
    char *old = strmap_get(w->store, k);
    const char *kk = NULL;
    size_t pos = 0;
    const char *sk;
    void *sv;

    if (old) {
        /* The map keeps the key it was first given: find and free both. */
        while (strmap_next(w->store, &pos, &sk, &sv)) {
            if (strcmp(sk, k) == 0) {
                kk = sk;
                break;
            }
        }
        strmap_del(w->store, k);
        free(old);
        free((char *)kk);
    }
    if (value)
        strmap_put(w->store, k, xstrdup(value));
    else
        free(k);
}

static int f_load(void *arg, unsigned long cookie, const char *user, const char *const *contacts,
                  size_t n)
{
    struct world *w = arg;
    struct call *c = &w->calls[w->ncalls++];

    memset(c, 0, sizeof *c);
    c->kind = 0;
    c->cookie = cookie;
    c->user = xstrdup(user);
    if (contacts) {
        c->contacts = xcalloc(n + 1, sizeof *c->contacts);
        for (size_t i = 0; i < n; i++)
            c->contacts[i] = xstrdup(contacts[i]);
        c->n = n;
    }
    return 0;
}

static int f_save(void *arg, unsigned long cookie, const char *user, const char *contact,
                  const char *value)
{
    struct world *w = arg;

    store_put(w, user, contact, value);
    if (cookie) {
        struct call *c = &w->calls[w->ncalls++];
        memset(c, 0, sizeof *c);
        c->kind = 1;
        c->cookie = cookie;
    }
    return 0;
}

static int f_list(void *arg)
{
    struct world *w = arg;
    struct call *c = &w->calls[w->ncalls++];

    memset(c, 0, sizeof *c);
    c->kind = 2;
    return 0;
}

static void answer_call(struct world *w, struct call *c)
{
    if (c->kind == 1) {
        roster_saved(w->r, c->cookie, true);
    } else if (c->kind == 2) {
        /* Every user with a record. */
        const char *users[64];
        size_t n = 0, pos = 0;
        const char *k;
        void *v;
        while (strmap_next(w->store, &pos, &k, &v) && n < 64) {
            char user[256];
            bool dup = false;
            snprintf(user, sizeof user, "%.*s", (int)strcspn(k, "\n"), k);
            for (size_t i = 0; i < n; i++)
                dup |= strcmp(users[i], user) == 0;
            if (!dup)
                users[n++] = xstrdup(user);
        }
        roster_known(w->r, true, users, n);
        for (size_t i = 0; i < n; i++)
            free((char *)users[i]);
    } else {
        const char *contacts[256], *values[256];
        size_t n = 0, pos = 0;
        const char *k;
        void *v;
        if (c->contacts) {
            for (size_t i = 0; i < c->n; i++) {
                contacts[n] = c->contacts[i];
                values[n++] = stored(w, c->user, c->contacts[i]);
            }
        } else {
            size_t ul = strlen(c->user);
            while (strmap_next(w->store, &pos, &k, &v) && n < 256) {
                if (strncmp(k, c->user, ul) == 0 && k[ul] == '\n') {
                    contacts[n] = k + ul + 1;
                    values[n++] = v;
                }
            }
        }
        roster_loaded(w->r, c->cookie, true, contacts, values, n);
        for (size_t i = 0; i < c->n; i++)
            free(c->contacts[i]);
        free(c->contacts);
        free(c->user);
    }
}

/* ---- the server ----------------------------------------------------------------------- */

static bool out_up(void *arg)
{
    return true;
}

static int out_send(void *arg, xmpp_stanza_t *st, const char *kind)
{
    struct world *w = arg;

    assert_non_null(xmpp_stanza_get_child_by_ns(st, NS_ROSTER));
    assert_true(w->nsent < MAXQ);
    w->sent[w->nsent++] = xmpp_stanza_copy(st);
    w->writes++;
    return 0;
}

static void answer_writes(struct world *w)
{
    int n = w->nsent;
    xmpp_stanza_t *batch[MAXQ];

    if (w->answer_none)
        return;
    memcpy(batch, w->sent, (size_t)n * sizeof batch[0]);
    w->nsent = 0;
    for (int i = 0; i < n; i++) {
        xmpp_stanza_t *a = xmpp_iq_new(w->ctx, w->answer_error ? "error" : "result",
                                       xmpp_stanza_get_id(batch[i]));
        xmpp_stanza_set_from(a, xmpp_stanza_get_to(batch[i]));
        xmpp_stanza_set_to(a, "phone.localhost");
        if (w->answer_error) {
            xmpp_stanza_t *e = stanza_child(w->ctx, a, "error", NULL);
            xmpp_stanza_set_type(e, "cancel");
            stanza_child(w->ctx, e, w->answer_error, NS_STANZAS);
        }
        assert_true(priv_on_iq(w->priv, a));
        xmpp_stanza_release(a);
        xmpp_stanza_release(batch[i]);
    }
}

static int f_api(void *arg, unsigned long cookie, const char *user, const char *contact,
                 const struct rosterplan_item *it)
{
    struct world *w = arg;
    struct call *c = &w->calls[w->ncalls++];

    memset(c, 0, sizeof *c);
    c->kind = 3;
    c->cookie = cookie;
    w->api_writes++;
    store_put(w, "api", contact, user); /* only counted */
    return 0;
}

/* Everything the writer asked for, answered, until it asks for nothing more. */
static void pump(struct world *w)
{
    for (int round = 0; round < 200; round++) {
        struct call calls[MAXQ];
        int n;

        event_base_loop(w->base, EVLOOP_NONBLOCK);
        n = w->ncalls;
        memcpy(calls, w->calls, (size_t)n * sizeof calls[0]);
        w->ncalls = 0;
        for (int i = 0; i < n; i++) {
            if (calls[i].kind == 3)
                roster_api_done(w->r, calls[i].cookie, !w->answer_error, w->answer_error);
            else
                answer_call(w, &calls[i]);
        }
        answer_writes(w);
        if (!n && !w->nsent && !w->ncalls)
            break;
    }
}

/* pump(), and the loop's timers (retries) too, until nothing is pending or timeout_ms. */
static void pump_until_idle(struct world *w, long timeout_ms)
{
    int64_t end = clock_mono_ms() + timeout_ms;

    pump(w);
    while (roster_pending(w->r) && clock_mono_ms() < end) {
        event_base_loop(w->base, EVLOOP_ONCE);
        pump(w);
    }
}

/* ---- news ----------------------------------------------------------------------------- */

static void on_added(void *arg, struct cuser *v, const char *user)
{
    struct world *w = arg;

    w->added++;
    (void)users_watcher_add(v, user);
}

static void on_removed(void *arg, struct cuser *v, const char *contact, const char *user)
{
    struct world *w = arg;

    w->removed++;
    if (!v)
        w->removed_gone++;
    else
        (void)users_watcher_del(v, user);
}

static const struct roster_ops ops = {.on_added = on_added, .on_removed = on_removed};

static struct offhook_config *load_cfg(const char *extra)
{
    struct offhook_config *cfg = xcalloc(1, sizeof *cfg);
    struct cfg_errors errs = {0};
    char buf[4096];

    snprintf(buf, sizeof buf, "%s%s", base_cfg, extra);
    if (config_load_buffer("t.conf", buf, strlen(buf), cfg, &errs) != 0) {
        cfg_errors_print(&errs, stderr);
        fail();
    }
    cfg_errors_free(&errs);
    return cfg;
}

/* A component: users, privileged.c with the roster grant, the writer; store kept. Not
 * started: a test may add watchers or choose answers first. */
static void setup(struct world *w, struct strmap *store, const char *extra, bool api)
{
    static const char grant[] =
        "<message from='localhost' to='phone.localhost'><privilege "
        "xmlns='urn:xmpp:privilege:2'><perm access='roster' type='set'/></privilege></message>";
    xmpp_stanza_t *msg;

    memset(w, 0, sizeof *w);
    w->store = store;
    w->api = api;
    w->cfg = load_cfg(extra);
    w->base = event_base_new();
    w->ctx = xmpp_ctx_new(NULL, NULL);
    users_init(&w->d, w->cfg);
    w->out = (struct stanza_out){.ctx = w->ctx, .up = out_up, .send = out_send, .arg = w};
    w->priv = priv_new(w->base, &w->d, &w->out, &(struct privileged_ops){0}, NULL);
    priv_connected(w->priv);
    msg = xmpp_stanza_new_from_string(w->ctx, grant);
    assert_true(priv_on_message(w->priv, msg, "localhost"));
    xmpp_stanza_release(msg);
    w->io = (struct roster_io){.load = f_load, .save = f_save, .list = f_list,
                               .api_write = api ? f_api : NULL, .arg = w};
    w->r = roster_new(w->base, &w->d, &w->out, w->priv, &w->io, &ops, w);
}

/* The stream, the store and the watchers are there: the first pass, answered. */
static void go(struct world *w)
{
    roster_connected(w->r);
    roster_store_state(w->r, true);
    roster_ready(w->r);
    pump(w);
}

static void up(struct world *w, struct strmap *store, const char *extra, bool api)
{
    setup(w, store, extra, api);
    go(w);
}

static void down(struct world *w)
{
    for (int i = 0; i < w->nsent; i++)
        xmpp_stanza_release(w->sent[i]);
    priv_free(w->priv);
    roster_free(w->r);
    users_free(&w->d);
    xmpp_ctx_free(w->ctx);
    event_base_free(w->base);
    config_free(w->cfg);
    free(w->cfg);
}

static struct strmap *store_new(void)
{
    struct strmap *m = xcalloc(1, sizeof *m);

    strmap_init(m);
    return m;
}

static void store_free(struct strmap *m)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(m, &pos, &k, &v)) {
        free((char *)k);
        free(v);
    }
    strmap_free(m);
    free(m);
}

static int count_values(struct strmap *m, char first)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;

    while (strmap_next(m, &pos, &k, &v)) {
        if (strncmp(k, "api\n", 4) != 0 && ((char *)v)[0] == first)
            n++;
    }
    return n;
}

/* ---- the cases ------------------------------------------------------------------------ */

static const char everyone[] = "[component]\nroster = everyone\nroster_rate = 100000\n";

/* A first pass writes every item once, records each; a restart with the records writes
 * nothing. */
static void test_first_pass_and_restart(void **state)
{
    struct strmap *store = store_new();
    struct world w;

    up(&w, store, everyone, false);
    assert_int_equal(w.writes, 6);
    assert_int_equal(w.added, 6);
    assert_int_equal(count_values(store, '+'), 6);
    assert_string_equal(stored(&w, "bob@localhost", "alice@phone.localhost"),
                        "+Alice Jones (phone)\x1f" "Desk phones");
    assert_int_equal(roster_pending(w.r), 0);
    down(&w);

    up(&w, store, everyone, false);
    assert_int_equal(w.writes, 0);
    down(&w);
    store_free(store);
}

/* A write whose outcome was lost (its intent recorded, no answer: a crash) is written
 * again, and only that one. */
static void test_lost_answer_is_written_again(void **state)
{
    struct strmap *store = store_new();
    struct world w;

    up(&w, store, everyone, false);
    down(&w);
    store_put(&w, "bob@localhost", "alice@phone.localhost", "~Alice Jones (phone)\x1f" "Desk phones");
    store_put(&w, "carol@localhost", "bob@phone.localhost", "~-");
    up(&w, store, everyone, false);
    assert_int_equal(w.writes, 2);
    assert_int_equal(count_values(store, '+'), 6);
    assert_int_equal(count_values(store, '~'), 0);
    down(&w);
    store_free(store);
}

/* An item the user had (they watch that contact) is theirs: recorded as such, never
 * written; one of offhook's the user removes is not put back, whatever is checked again. */
static void test_users_own_and_declined(void **state)
{
    struct strmap *store = store_new();
    struct world w;
    struct cuser *alice;

    setup(&w, store, everyone, false);
    /* bob subscribed to carol's phone himself, before offhook wrote any roster. */
    assert_true(users_watcher_add(users_by_jid(&w.d, "carol@localhost"), "bob@localhost"));
    go(&w);
    assert_int_equal(w.writes, 5);
    assert_string_equal(stored(&w, "bob@localhost", "carol@phone.localhost"), "-own");

    /* bob takes offhook's item for alice's phone out: his server says unsubscribe. */
    alice = users_by_jid(&w.d, "alice@localhost");
    (void)users_watcher_del(alice, "bob@localhost");
    roster_unsubscribed(w.r, alice, "bob@localhost");
    pump(&w);
    assert_string_equal(stored(&w, "bob@localhost", "alice@phone.localhost"), "-declined");
    w.writes = 0;
    roster_resync(w.r);
    pump(&w);
    assert_int_equal(w.writes, 0);
    down(&w);
    store_free(store);
}

static void forget(void *arg, struct cuser *u)
{
}

/* A leaver: out of every roster (the contact is nobody's: on_removed with no user), and
 * what offhook wrote into the leaver's own roster is removed too; records forgotten. */
static void test_leaver(void **state)
{
    struct strmap *store = store_new();
    struct world w;
    struct offhook_config *next = xcalloc(1, sizeof *next);
    struct cfg_errors errs = {0};
    static const char two[] = "[xmpp]\ndomain = phone.localhost\nsecret = s3cret\n"
                              "[component]\nroster = everyone\nroster_rate = 100000\n"
                              "[users]\nalice@localhost = sip:1001@pbx\n"
                              "bob@localhost = sip:1002@pbx\n"
                              "[user alice@localhost]\nname = Alice Jones\n";

    up(&w, store, everyone, false);
    assert_int_equal(config_load_buffer("t2.conf", two, strlen(two), next, &errs), 0);
    w.writes = 0;
    roster_apply(w.r, next);
    users_apply(&w.d, next, &(struct users_apply_ops){.on_removed = forget}, NULL);
    pump(&w);
    /* alice's and bob's item for carol; carol's items for alice and bob. */
    assert_int_equal(w.writes, 4);
    assert_int_equal(w.removed, 4);
    assert_int_equal(w.removed_gone, 2);
    assert_null(stored(&w, "carol@localhost", "alice@phone.localhost"));
    assert_null(stored(&w, "alice@localhost", "carol@phone.localhost"));
    assert_int_equal(count_values(store, '+'), 2);
    down(&w);
    config_free(next);
    free(next);
    store_free(store);
}

/* A user whose server refuses (no account): retried later, the intent kept meanwhile,
 * nothing given up. A server that fails every write (ejabberd 23.01): given up after
 * three, for the stream. */
static void test_refusals(void **state)
{
    struct strmap *store = store_new();
    struct world w;

    setup(&w, store, everyone, false);
    roster_set_retry(w.r, 50);
    w.answer_error = "service-unavailable";
    go(&w);
    assert_int_equal(w.writes, 6);            /* the first window, each refused */
    assert_int_equal(count_values(store, '~'), 6);
    assert_true(roster_pending(w.r) > 0);     /* waiting for the retry */
    /* The accounts exist now: the retries go through, on the timer alone. */
    w.answer_error = NULL;
    pump_until_idle(&w, 5000);
    assert_int_equal(roster_pending(w.r), 0);
    assert_int_equal(w.writes, 12);
    assert_int_equal(count_values(store, '+'), 6);
    assert_int_equal(count_values(store, '~'), 0);
    down(&w);
    store_free(store);

    store = store_new();
    setup(&w, store, everyone, false);
    w.answer_error = "internal-server-error";
    go(&w);
    assert_int_equal(w.writes, 6);
    w.answer_error = NULL;
    roster_resync(w.r);
    pump(&w);
    assert_int_equal(w.writes, 6);            /* nothing more on that domain */
    down(&w);
    store_free(store);
}

/* roster_max_items: nothing added to a roster that would exceed it. */
static void test_over_limit(void **state)
{
    struct strmap *store = store_new();
    struct world w;

    up(&w, store, "[component]\nroster = everyone\nroster_rate = 100000\nroster_max_items = 1\n",
       false);
    assert_int_equal(w.writes, 0);
    assert_int_equal(roster_users_over_limit(w.r), 3);
    down(&w);
    store_free(store);
}

/* With roster_api the writes go through the API hook, answered through it. */
static void test_api(void **state)
{
    struct strmap *store = store_new();
    struct world w;

    up(&w, store, everyone, true);
    assert_int_equal(w.writes, 0);
    assert_int_equal(w.api_writes, 6);
    assert_int_equal(count_values(store, '+'), 6);
    down(&w);
    store_free(store);
}

static int granted_calls;
static char granted_domain[64];

static void on_granted_count(void *arg, const char *domain)
{
    granted_calls++;
    snprintf(granted_domain, sizeof granted_domain, "%s", domain);
}

static void no_user_change(void *arg, struct cuser *u)
{
}

/* With source = ldap and no copy in Redis, the server's <privilege/> comes before the
 * directory's users: it is kept, and announced once users of that domain arrive. */
static void test_grant_before_users(void **state)
{
    static const char grant[] =
        "<message from='localhost' to='phone.localhost'><privilege "
        "xmlns='urn:xmpp:privilege:2'><perm access='roster' type='set'/></privilege></message>";
    static const char elsewhere[] = "[xmpp]\ndomain = phone.localhost\nsecret = s3cret\n"
                                    "[users]\nzed@example.com = sip:1009@pbx\n";
    struct offhook_config *before = xcalloc(1, sizeof *before), *after = load_cfg("");
    struct privileged_ops pops = {.on_granted = on_granted_count};
    struct users_apply_ops aops = {.on_removed = no_user_change, .on_changed = no_user_change};
    struct cfg_errors errs = {0};
    struct event_base *base = event_base_new();
    xmpp_ctx_t *ctx = xmpp_ctx_new(NULL, NULL);
    struct stanza_out out = {.ctx = ctx, .up = out_up, .send = out_send, .arg = NULL};
    struct privileged *priv;
    struct users d;
    xmpp_stanza_t *msg;

    assert_int_equal(config_load_buffer("t.conf", elsewhere, strlen(elsewhere), before, &errs),
                     0);
    cfg_errors_free(&errs);
    users_init(&d, before);
    priv = priv_new(base, &d, &out, &pops, NULL);
    priv_connected(priv);
    granted_calls = 0;
    msg = xmpp_stanza_new_from_string(ctx, grant);
    assert_true(priv_on_message(priv, msg, "localhost"));
    xmpp_stanza_release(msg);
    assert_int_equal(granted_calls, 0);          /* nobody there yet */
    priv_users_changed(priv);
    assert_int_equal(granted_calls, 0);
    users_apply(&d, after, &aops, NULL);          /* the directory's users come */
    priv_users_changed(priv);
    assert_int_equal(granted_calls, 1);
    assert_string_equal(granted_domain, "localhost");
    assert_true(priv_may_roster(priv, "localhost", PRIV_SET));
    priv_users_changed(priv);                     /* once per stream */
    assert_int_equal(granted_calls, 1);
    priv_free(priv);
    users_free(&d);
    xmpp_ctx_free(ctx);
    event_base_free(base);
    config_free(before);
    config_free(after);
    free(before);
    free(after);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_pass_and_restart),
        cmocka_unit_test(test_lost_answer_is_written_again),
        cmocka_unit_test(test_users_own_and_declined),
        cmocka_unit_test(test_leaver),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_over_limit),
        cmocka_unit_test(test_api),
        cmocka_unit_test(test_grant_before_users),
    };

    log_level = -1;
    xmpp_initialize();
    roster_register_metrics();
    priv_register_metrics();
    return cmocka_run_group_tests(tests, NULL, NULL);
}
