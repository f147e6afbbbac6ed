/* libFuzzer target: the component's stanza handling. Each input is one stanza's XML as
 * the XMPP server would deliver it; libstrophe parses it (xmpp_stanza_new_from_string)
 * and router_stanza() handles it with the daemon's own router.c, publisher.c, users.c and
 * pep.c. What the daemon would send back goes to the xmpplink_send() below instead of a
 * socket: it is serialised and checked:
 *
 *   - every stanza sent has a to and a from, and the from is on the component's domain;
 *   - an available presence (one that carries phone state) goes only to a JID the watcher
 *     policy allows (same-domain: localhost), never to a stranger;
 *   - a privileged PEP publish goes only to a configured user's own JID;
 *   - a vCard (name, desk number) goes only to a JID the policy allows;
 *   - an error reply goes back to the stanza's sender and never quotes a user's state.
 *
 * Redis is replaced by the in-memory part of watchers.c (watchers_add/remove) and
 * feed_synced() says the feed is in sync, so state-carrying paths run. The component is
 * rebuilt for every input (users, watchers, PEP grants), so no input depends on another. */
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <strophe.h>

#include "component.h"
#include "config.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "pep.h"
#include "storecodec.h"
#include "strmap.h"
#include "strutil.h"
#include "xmpplink.h"

#include "fuzz_util.h"

#define DOMAIN "phone.localhost"

static const char config_text[] =
    "[sip]\n"
    "listen = udp:127.0.0.1:5070\n"
    "pbx = sip:127.0.0.1:5060\n"
    "[xmpp]\n"
    "host = 127.0.0.1\n"
    "port = 5347\n"
    "domain = " DOMAIN "\n"
    "secret = fuzz-secret\n"
    "[component]\n"
    "publish = contacts, pep\n"
    "[users]\n"
    "alice@localhost = sip:1001@127.0.0.1\n"
    "bob@localhost = sip:1002@127.0.0.1, sip:1002@desk.example\n"
    "carol@other.example = sip:2001@127.0.0.1\n"
    "[user alice@localhost]\n"
    "name = Alice Jones\n"
    "tel = +15550101001\n";

static struct offhook_config cfg;
static xmpp_ctx_t *ctx;
static struct event_base *base;
static struct component *cur;
static const xmpp_stanza_t *cur_in;

/* ---- what the router calls instead of the daemon's I/O modules ---------------------- */

struct xmpplink {
    int unused;
};
static struct xmpplink link_stub;

bool xmpplink_up(const struct xmpplink *l)
{
    return true;
}

xmpp_ctx_t *xmpplink_ctx(const struct xmpplink *l)
{
    return ctx;
}

static bool has_child(xmpp_stanza_t *st, const char *name)
{
    return xmpp_stanza_get_child_by_name(st, name) != NULL;
}

/* The bare form of to is allowed to watch (the policy in the config: same-domain). */
static bool allowed_watcher(const char *to)
{
    char bare[JID_MAX + 1];

    return jid_to_bare(to, bare, sizeof bare) == 0 && component_requester_allowed(cur, bare);
}

int xmpplink_send(struct xmpplink *l, xmpp_stanza_t *st, const char *kind)
{
    const char *name = xmpp_stanza_get_name(st), *type = xmpp_stanza_get_type(st);
    const char *to = xmpp_stanza_get_to(st), *from = xmpp_stanza_get_from(st);
    struct jid fj, tj;
    char *text = NULL;
    size_t len = 0;

    FUZZ_CHECK(kind != NULL && name != NULL);
    FUZZ_CHECK(to != NULL && from != NULL);
    FUZZ_CHECK(jid_parse(from, &fj) == 0 && jid_parse(to, &tj) == 0);
    FUZZ_CHECK(strcmp(fj.domain, DOMAIN) == 0);
    FUZZ_CHECK(xmpp_stanza_to_text(st, &text, &len) == XMPP_EOK && text != NULL);
    if (strcmp(name, "presence") == 0 && !type)
        FUZZ_CHECK(allowed_watcher(to)); /* phone state only to whom the policy allows */
    if (strcmp(name, "iq") == 0 && xmpp_stanza_get_child_by_name(st, "privileged_iq")) {
        /* A privileged publish: only ever into a configured user's own account. */
        char bare[JID_MAX + 1];
        FUZZ_CHECK(jid_to_bare(to, bare, sizeof bare) == 0);
        FUZZ_CHECK(strmap_get(&cur->by_jid, bare) != NULL);
    }
    if (type && strcmp(type, "result") == 0 && xmpp_stanza_get_child_by_ns(st, "vcard-temp"))
        FUZZ_CHECK(allowed_watcher(to)); /* name and number only to allowed requesters */
    if (type && strcmp(type, "error") == 0) {
        /* Errors answer the stanza at hand, to its sender, and say nothing of state. */
        const char *in_from = xmpp_stanza_get_from((xmpp_stanza_t *)cur_in);
        FUZZ_CHECK(in_from != NULL && strcmp(to, in_from) == 0);
        FUZZ_CHECK(!has_child(st, "show") && !has_child(st, "status"));
    }
    xmpp_free(ctx, text);
    return 0;
}

bool feed_synced(const struct feed *f)
{
    return true;
}

void watchers_add(struct watchers *w, struct cuser *u, const char *bare)
{
    FUZZ_CHECK(component_watcher_allowed(cur, u, bare));
    if (!strmap_get(&u->watchers, bare)) {
        char *k = xstrdup(bare);
        strmap_put(&u->watchers, k, k);
    }
}

void watchers_remove(struct watchers *w, struct cuser *u, const char *bare)
{
    char *k = strmap_get(&u->watchers, bare);

    if (k) {
        strmap_del(&u->watchers, bare);
        free(k);
    }
}

void cuser_watchers_clear(struct cuser *u)
{
    strmap_clear_owned(&u->watchers);
}

/* ---- the target --------------------------------------------------------------------- */

static void give_alice_a_call(struct component *c)
{
    static const char *const names[] = {"state", "dir", "reach", "dnd", "since", "ts"};
    static const char *const values[] = {"on_call", "incoming", "online", "0",
                                         "1763788800000", "1763788800123456"};
    struct cuser *u = strmap_get(&c->by_jid, "alice@localhost");
    char err[128];

    FUZZ_CHECK(u != NULL);
    FUZZ_CHECK(storecodec_decode(names, values, 6, &u->rec, err, sizeof err) == 0);
    u->have_rec = true;
    /* bob@localhost already watches alice's phone: a state change reaches him. */
    watchers_add(NULL, u, "bob@localhost");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct cfg_errors errs = {0};

    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL); /* no logger: libstrophe stays quiet */
    base = event_base_new();
    if (!ctx || !base || config_load_buffer("fuzz.conf", config_text, sizeof config_text - 1,
                                            &cfg, &errs) != 0) {
        cfg_errors_print(&errs, stderr);
        abort();
    }
    cfg_errors_free(&errs);
    router_register_metrics();
    pub_register_metrics();
    pep_register_metrics();
    /* The router logs every refusal: a line per input would swamp the run's log. With
     * FUZZ_ROUTER_LOG=1 every line is formatted and written, at debug level. */
    log_level = getenv("FUZZ_ROUTER_LOG") ? LOG_DEBUG : -1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct component c = {0};
    char *text = fuzz_strndup_exact(data, size);
    xmpp_stanza_t *st = xmpp_stanza_new_from_string(ctx, text);

    free(text);
    if (!st)
        return 0;
    c.base = base;
    c.cfg = &cfg;
    c.xmpp = &link_stub;
    c.sipbridge_alive = true;
    component_users_init(&c, &cfg);
    c.pep = pep_new(&c);
    cur = &c;
    cur_in = st;
    give_alice_a_call(&c);
    router_stanza(&c, st);
    /* What a state change after this stanza would send: runs the publisher and PEP with
     * whatever the stanza changed (watchers, grants). */
    {
        struct cuser *u = strmap_get(&c.by_jid, "alice@localhost");
        pub_user(&c, u, true, 0);
        pep_user(c.pep, u, true);
    }
    xmpp_stanza_release(st);
    pep_free(c.pep);
    component_users_free(&c);
    cur = NULL;
    cur_in = NULL;
    return 0;
}
