/* libFuzzer target: the component's stanza handling. Each input is one stanza's XML as
 * the XMPP server would deliver it; libstrophe parses it (xmpp_stanza_new_from_string)
 * and router_stanza() handles it with the daemon's own offhook_router library (router.c,
 * publisher.c, presence_out.c, pep.c over users.c and view.c), wired here as main.c
 * wires it, less the links: what the daemon would send leaves through the stanza_out
 * hook to out_send() below instead of xmpplink.c. Each stanza is serialised and checked:
 *
 *   - every stanza sent has a to and a from, and the from is on the component's domain;
 *   - an available presence (one that carries phone state) goes only to a JID the watcher
 *     policy allows (same-domain: localhost), never to a stranger;
 *   - a privileged PEP publish goes only to a configured user's own JID;
 *   - a vCard (name, desk number) goes only to a JID the policy allows;
 *   - an error reply goes back to the stanza's sender and never quotes a user's state.
 *
 * Redis is not there: a subscription the router reports (router_ops) is checked against
 * the policy and kept in the users' in-memory sets, as watchers.c would keep it, and the
 * feed counts as in sync, so state-carrying paths run (a PEP grant republishes). The
 * component is rebuilt for every input (users, watchers, PEP grants), so no input depends
 * on another. */
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <strophe.h>

#include "config.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "pep.h"
#include "presence_out.h"
#include "publisher.h"
#include "router.h"
#include "stanza.h"
#include "storecodec.h"
#include "strmap.h"
#include "strutil.h"
#include "users.h"

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

/* One input's component, as main.c builds it (less the links). */
struct component {
    struct users users;
    struct stanza_out out;
    struct presence_out *presout;
    struct pep *pep;
    struct publisher *pub;
    struct router *router;
    xmpp_stanza_t *in; /* the stanza at hand */
};

/* ---- where the component's stanzas and news go -------------------------------------- */

static bool out_up(void *arg)
{
    return true;
}

static bool has_child(xmpp_stanza_t *st, const char *name)
{
    return xmpp_stanza_get_child_by_name(st, name) != NULL;
}

/* The bare form of to is allowed to watch (the policy in the config: same-domain). */
static bool allowed_watcher(const struct component *c, const char *to)
{
    char bare[JID_MAX + 1];

    return jid_to_bare(to, bare, sizeof bare) == 0 && users_requester_allowed(&c->users, bare);
}

static int out_send(void *arg, xmpp_stanza_t *st, const char *kind)
{
    const struct component *c = arg;
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
        FUZZ_CHECK(allowed_watcher(c, to)); /* phone state only to whom the policy allows */
    if (strcmp(name, "iq") == 0 && xmpp_stanza_get_child_by_name(st, "privileged_iq")) {
        /* A privileged publish: only ever into a configured user's own account. */
        char bare[JID_MAX + 1];
        FUZZ_CHECK(jid_to_bare(to, bare, sizeof bare) == 0);
        FUZZ_CHECK(users_by_jid(&c->users, bare) != NULL);
    }
    if (type && strcmp(type, "result") == 0 && xmpp_stanza_get_child_by_ns(st, "vcard-temp"))
        FUZZ_CHECK(allowed_watcher(c, to)); /* name and number only to allowed requesters */
    if (type && strcmp(type, "error") == 0) {
        /* Errors answer the stanza at hand, to its sender, and say nothing of state. */
        const char *in_from = xmpp_stanza_get_from(c->in);
        FUZZ_CHECK(in_from != NULL && strcmp(to, in_from) == 0);
        FUZZ_CHECK(!has_child(st, "show") && !has_child(st, "status"));
    }
    xmpp_free(ctx, text);
    return 0;
}

/* What watchers.c does in memory; a watcher is only ever stored if the policy allows it. */
static void on_subscribe(void *arg, struct cuser *u, const char *bare)
{
    struct component *c = arg;

    FUZZ_CHECK(users_watcher_allowed(&c->users, u, bare));
    (void)users_watcher_add(u, bare);
}

static void on_unsubscribe(void *arg, struct cuser *u, const char *bare)
{
    (void)users_watcher_del(u, bare);
}

static const struct router_ops router_ops = {
    .on_subscribe = on_subscribe,
    .on_unsubscribe = on_unsubscribe,
};

/* As main.c with the feed in sync. */
static void on_pep_granted(void *arg, const char *domain)
{
    struct component *c = arg;

    pub_pep_domain(c->pub, domain);
}

static const struct pep_ops pep_ops = {.on_granted = on_pep_granted};

static void give_alice_a_call(struct component *c)
{
    static const char *const names[] = {"state", "dir", "reach", "dnd", "since", "ts"};
    static const char *const values[] = {"on_call", "incoming", "online", "0",
                                         "1763788800000", "1763788800123456"};
    struct cuser *u = users_by_jid(&c->users, "alice@localhost");
    char err[128];

    FUZZ_CHECK(u != NULL);
    FUZZ_CHECK(storecodec_decode(names, values, 6, &u->rec, err, sizeof err) == 0);
    u->have_rec = true;
    /* bob@localhost already watches alice's phone: a state change reaches him. */
    on_subscribe(c, u, "bob@localhost");
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
    presout_register_metrics();
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
    c.in = st;
    users_init(&c.users, &cfg);
    c.out = (struct stanza_out){.ctx = ctx, .up = out_up, .send = out_send, .arg = &c};
    c.presout = presout_new(&c.users, &c.out);
    c.pep = pep_new(base, &c.users, &c.out, &pep_ops, &c);
    c.pub = pub_new(&c.users, c.presout, c.pep, &c.out);
    c.router = router_new(&c.users, c.pub, c.presout, c.pep, &c.out, &router_ops, &c);
    give_alice_a_call(&c);
    router_stanza(c.router, st);
    /* What a state change after this stanza would send: runs the publisher and both
     * writers with whatever the stanza changed (watchers, grants). */
    pub_user(c.pub, users_by_jid(&c.users, "alice@localhost"), true, 0);
    xmpp_stanza_release(st);
    router_free(c.router);
    pub_free(c.pub);
    pep_free(c.pep);
    presout_free(c.presout);
    users_free(&c.users);
    return 0;
}
