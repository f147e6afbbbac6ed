/* A thin layer over nua: SUBSCRIBE, digest auth, NOTIFY delivery, shutdown. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct sipua;
struct sipua_handle;
#define NUA_MAGIC_T struct sipua
#define NUA_HMAGIC_T struct sipua_handle
#include <sofia-sip/msg_header.h>
#include <sofia-sip/nua.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/su_tag_io.h>
#include <sofia-sip/tport_tag.h>
#include <sofia-sip/nta_tag.h>

#include "sipua.h"

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "strutil.h"
#include "version.h"

#define SIP_UDP_RMEM (4 << 20) /* receive buffer asked for the UDP socket */
#define SIP_T1X64_MS 8000       /* transaction lifetime (Timers F and J), RFC default 32 s */
#define MAX_AUTH_TRIES 2 /* a second challenge for the same request means wrong credentials */

struct sipua_handle {
    struct sipua *ua;
    nua_handle_t *nh;
    void *owner;           /* NULL once released */
    char *aor;             /* for logs */
    int auth_tries;
};

struct sipua {
    su_root_t *root;
    nua_t *nua;
    struct sipua_ops ops;
    char *username;
    char *password;
    void (*shutdown_done)(void *arg);
    void *shutdown_arg;
    bool shutdown_started;
    bool shut_down;
    void (*kick)(void *arg);
    void *kick_arg;
    bool tls;                     /* a tls: listen: the PBX may be reached over TLS */
};

static void kick(struct sipua *ua)
{
    if (ua->kick)
        ua->kick(ua->kick_arg);
}

static struct metric *m_auth;

void sipua_register_metrics(void)
{
    m_auth = metric_new(METRIC_COUNTER, "offhook_sip_auth_challenges_total",
                        "Digest challenges (401/407) answered, by outcome.", "outcome",
                        (const char *const[]){"answered", "no_credentials", "rejected", NULL});
}

static void clear_credentials(struct sipua *ua)
{
    free(ua->username);
    if (ua->password) {
        explicit_bzero(ua->password, strlen(ua->password));
        free(ua->password);
    }
    ua->username = ua->password = NULL;
}

static void set_credentials(struct sipua *ua, const struct offhook_config *cfg)
{
    clear_credentials(ua);
    ua->username = cfg->sip_username[0] ? xstrdup(cfg->sip_username) : NULL;
    ua->password = cfg->sip_password[0] ? xstrdup(cfg->sip_password) : NULL;
}

void sipua_update(struct sipua *ua, const struct offhook_config *cfg)
{
    set_credentials(ua, cfg);
}

/* Answers a 401/407 with the configured credentials, once per request. Returns true if
 * the request was re-sent. */
static bool answer_challenge(struct sipua_handle *h, int status, const sip_t *sip)
{
    struct sipua *ua = h->ua;
    const msg_auth_t *au = status == 401 ? (const msg_auth_t *)sip->sip_www_authenticate
                                         : (const msg_auth_t *)sip->sip_proxy_authenticate;
    const char *realm;
    char auth[512];

    if (!ua->username || !ua->password) {
        metric_inc(m_auth, "no_credentials");
        log_err("sip", "event=auth_required aor=%s status=%d reason=\"no [sip] username/password "
                       "configured\"",
                log_q(h->aor), status);
        return false;
    }
    if (h->auth_tries >= MAX_AUTH_TRIES || !au || !au->au_scheme) {
        metric_inc(m_auth, "rejected");
        log_err("sip", "event=auth_rejected aor=%s status=%d user=%s reason=\"credentials not "
                       "accepted\"",
                log_q(h->aor), status, log_q(ua->username));
        return false;
    }
    realm = msg_params_find(au->au_params, "realm=");
    if (!realm)
        realm = "\"\"";
    /* nua wants scheme:"realm":user:password, the realm quoted. */
    snprintf(auth, sizeof auth, realm[0] == '"' ? "%s:%s:%s:%s" : "%s:\"%s\":%s:%s",
             au->au_scheme, realm, ua->username, ua->password);
    h->auth_tries++;
    metric_inc(m_auth, "answered");
    log_debug("sip", "event=auth_answer aor=%s status=%d user=%s", log_q(h->aor), status,
              log_q(ua->username));
    nua_authenticate(h->nh, NUTAG_AUTH(auth), TAG_END());
    explicit_bzero(auth, sizeof auth);
    kick(ua);
    return true;
}

static void handle_destroy(struct sipua_handle *h)
{
    nua_handle_bind(h->nh, NULL);
    nua_handle_destroy(h->nh);
    kick(h->ua);
    free(h->aor);
    free(h);
}

static long param_long(const char *const *params, const char *name)
{
    const char *v = params ? msg_params_find(params, name) : NULL;
    long n;

    return v && str_parse_long(v, 0, 1L << 30, &n) == 0 ? n : -1;
}

static void on_notify(struct sipua_handle *h, const sip_t *sip)
{
    struct sipua_notify n = {.expires = -1, .retry_after = -1};
    const sip_subscription_state_t *ss = sip ? sip->sip_subscription_state : NULL;
    char ctype[512];

    n.received_us = clock_wall_us();
    if (!sip)
        return;
    if (sip->sip_content_type && sip->sip_content_type->c_type) {
        /* c_type is "type/subtype"; parameters (boundary for RLMI) are in c_params. */
        size_t used = (size_t)snprintf(ctype, sizeof ctype, "%s", sip->sip_content_type->c_type);
        for (const char *const *p = sip->sip_content_type->c_params; p && *p; p++) {
            if (used < sizeof ctype)
                used += (size_t)snprintf(ctype + used, sizeof ctype - used, ";%s", *p);
        }
        n.content_type = ctype;
    }
    if (sip->sip_payload && sip->sip_payload->pl_len) {
        n.body = sip->sip_payload->pl_data;
        n.len = sip->sip_payload->pl_len;
    }
    if (ss) {
        n.substate = ss->ss_substate;
        n.reason = ss->ss_reason;
        if (ss->ss_expires && str_parse_long(ss->ss_expires, 0, 1L << 30, &n.expires) < 0)
            n.expires = -1;
        n.retry_after = param_long(ss->ss_params, "retry-after=");
    }
    h->ua->ops.on_notify(h->owner, &n);
}

static void on_event(nua_event_t event, int status, char const *phrase, nua_t *nua,
                     struct sipua *ua, nua_handle_t *nh, struct sipua_handle *h,
                     sip_t const *sip, tagi_t tags[])
{
    switch (event) {
    case nua_r_subscribe: {
        long expires = -1, retry_after = -1;
        if (!h || status < 200)
            return;
        if ((status == 401 || status == 407) && h->owner && answer_challenge(h, status, sip))
            return;
        if (status < 300)
            h->auth_tries = 0;
        if (!h->owner)
            return;
        if (sip && sip->sip_expires)
            expires = (long)sip->sip_expires->ex_delta;
        if (status == 423 && sip && sip->sip_min_expires)
            expires = (long)sip->sip_min_expires->me_delta;
        if (sip && sip->sip_retry_after)
            retry_after = (long)sip->sip_retry_after->af_delta;
        ua->ops.on_response(h->owner, status, phrase, expires, retry_after);
        return;
    }
    case nua_i_notify:
        if (!h) {
            /* A NOTIFY in no dialog of ours never gets here: nua answers it 481 itself
             * (nua_server.c), unseen by us. This is for a stack that passes one up. */
            log_warn("sip", "event=unknown_notify status=%d", status);
            if (nh)
                nua_handle_destroy(nh);
            return;
        }
        if (h->owner)
            on_notify(h, sip);
        return;
    case nua_r_shutdown:
        if (status >= 200 && !ua->shut_down) {
            ua->shut_down = true;
            log_info("sip", "event=shutdown_complete status=%d", status);
            if (ua->shutdown_done)
                ua->shutdown_done(ua->shutdown_arg);
        }
        return;
    case nua_i_error:
        log_warn("sip", "event=stack_error status=%d phrase=%s", status, log_q(phrase));
        return;
    default:
        if (status >= 400)
            log_debug("sip", "event=%s status=%d phrase=%s", nua_event_name(event), status,
                      log_q(phrase));
        return;
    }
}

/* "sip:offhook@<pbx host>" when [sip] from is empty. */
static void default_from(const struct offhook_config *cfg, char *out, size_t len)
{
    const char *host = strchr(cfg->sip_pbx, ':') + 1; /* validated sip: or sips: */
    size_t hl;

    if (strchr(host, '@'))
        host = strchr(host, '@') + 1;
    if (host[0] == '[') {
        const char *rb = strchr(host, ']');
        hl = rb ? (size_t)(rb - host) + 1 : strlen(host);
    } else {
        hl = strcspn(host, ":;?");
    }
    snprintf(out, len, "sip:%s@%.*s", cfg->sip_username[0] ? cfg->sip_username : "offhook",
             (int)hl, host);
}

/* Outgoing connections only: checking incoming ones would make the PBX present a client
 * certificate when it opens a connection to deliver a NOTIFY. */
static unsigned tls_policy(const struct offhook_config *cfg)
{
    if (strcmp(cfg->sip_tls_verify, "none") == 0)
        return TPTLS_VERIFY_NONE;
    if (strcmp(cfg->sip_tls_verify, "chain") == 0)
        return TPTLS_VERIFY_OUT;
    return TPTLS_VERIFY_SUBJECTS_OUT;
}

struct sipua *sipua_new(su_root_t *root, const struct offhook_config *cfg,
                        const struct sipua_ops *ops, void (*kick_fn)(void *), void *kick_arg)
{
    struct sipua *ua = xcalloc(1, sizeof *ua);
    char from[512], agent[64];
    const char *plain = NULL, *tls = NULL;

    for (int i = 0; i < cfg->sip_nlisten; i++) {
        if (strncmp(cfg->sip_listen_urls[i], "sips:", 5) == 0)
            tls = cfg->sip_listen_urls[i];
        else
            plain = cfg->sip_listen_urls[i];
    }
    if (cfg->sip_from[0])
        snprintf(from, sizeof from, "%s", cfg->sip_from);
    else
        default_from(cfg, from, sizeof from);
    snprintf(agent, sizeof agent, "offhook/%s", OFFHOOK_VERSION);
    ua->root = root;
    ua->ops = *ops;
    ua->kick = kick_fn;
    ua->kick_arg = kick_arg;
    set_credentials(ua, cfg);
    ua->tls = tls != NULL;
    if (tls)
        log_info("sip", "event=tls dir=%s verify=%s", log_q(cfg->sip_tls_dir), cfg->sip_tls_verify);
    ua->nua = nua_create(root, on_event, ua,
                         TAG_IF(plain, NUTAG_URL(plain)),
                         TAG_IF(tls, NUTAG_SIPS_URL(tls)),
                         /* Always our own directory: without it Sofia reads
                          * $HOME/.sip/auth, and with no files it checks nothing. */
                         TAG_IF(tls, NUTAG_CERTIFICATE_DIR(cfg->sip_tls_dir)),
                         TAG_IF(tls, TPTAG_TLS_VERIFY_POLICY(tls_policy(cfg))),
                         NUTAG_PROXY(cfg->sip_pbx),
                         SIPTAG_FROM_STR(from),
                         NUTAG_USER_AGENT(agent),
                         /* We only subscribe: no registration keepalives or outbound. */
                         NUTAG_OUTBOUND("no-options-keepalive no-validate no-natify"),
                         /* A PBX answering a mass re-SUBSCRIBE sends a burst of NOTIFYs:
                          * the default UDP buffer (208 KiB) drops some. Capped by
                          * net.core.rmem_max unless run with CAP_NET_ADMIN. */
                         TPTAG_UDP_RMEM(SIP_UDP_RMEM),
                         /* Every NOTIFY's server transaction stays (Timer J, 64*T1)
                          * with its messages, ~10 KB: 32 s of them was 375 MiB RSS at
                          * 1,000 NOTIFYs/s. 8 s still absorbs four retransmissions. */
                         NTATAG_SIP_T1X64(SIP_T1X64_MS),
                         TAG_END());
    if (!ua->nua) {
        log_err("sip", "event=bind_failed listen=%s reason=\"nua_create failed (address in use "
                       "or not local?)\"",
                log_q(cfg->sip_listen));
        clear_credentials(ua);
        free(ua);
        return NULL;
    }
    log_info("sip", "event=listening listen=%s proxy=%s from=%s", log_q(cfg->sip_listen),
             log_q(cfg->sip_pbx), log_q(from));
    return ua;
}

struct sipua_handle *sipua_subscribe(struct sipua *ua, const char *aor, const char *event,
                                     const char *accept, long expires, bool eventlist,
                                     void *owner)
{
    struct sipua_handle *h = xcalloc(1, sizeof *h);
    char exp[24];

    h->ua = ua;
    h->owner = owner;
    h->aor = xstrdup(aor);
    h->nh = nua_handle(ua->nua, h, SIPTAG_TO_STR(aor), TAG_END());
    if (!h->nh) {
        free(h->aor);
        free(h);
        return NULL;
    }
    snprintf(exp, sizeof exp, "%ld", expires);
    nua_subscribe(h->nh, NUTAG_URL(aor), SIPTAG_EVENT_STR(event), SIPTAG_ACCEPT_STR(accept),
                  SIPTAG_EXPIRES_STR(exp), TAG_IF(eventlist, SIPTAG_SUPPORTED_STR("eventlist")),
                  TAG_END());
    kick(ua);
    return h;
}

void sipua_refresh(struct sipua_handle *h, long expires)
{
    char exp[24];

    snprintf(exp, sizeof exp, "%ld", expires);
    h->auth_tries = 0;
    nua_subscribe(h->nh, SIPTAG_EXPIRES_STR(exp), TAG_END());
    kick(h->ua);
}

void sipua_release(struct sipua_handle *h)
{
    if (!h)
        return;
    h->owner = NULL;
    /* Destroying the handle shuts its subscriber usage down, which sends one
     * un-SUBSCRIBE (Expires: 0) while the dialog is alive; an explicit nua_unsubscribe()
     * first made two. A dialog the notifier already ended sends nothing. */
    handle_destroy(h);
}

void sipua_shutdown(struct sipua *ua, void (*done)(void *arg), void *arg)
{
    ua->shutdown_done = done;
    ua->shutdown_arg = arg;
    ua->shutdown_started = true;
    /* nua_shutdown un-SUBSCRIBEs every live subscription itself (Expires: 0). */
    nua_shutdown(ua->nua);
    kick(ua);
}

bool sipua_tls(const struct sipua *ua)
{
    return ua->tls;
}

void sipua_free(struct sipua *ua)
{
    int64_t deadline = clock_mono_ms() + 2000;

    if (!ua)
        return;
    /* nua_destroy() aborts unless nua_shutdown() has completed: finish it here if the
     * caller's loop did not (start-up failure, shutdown timeout). */
    if (!ua->shut_down) {
        if (!ua->shutdown_started)
            nua_shutdown(ua->nua);
        ua->shutdown_started = true;
        ua->shutdown_done = NULL;
        while (!ua->shut_down && clock_mono_ms() < deadline)
            su_root_step(ua->root, 100);
    }
    if (!ua->shut_down) {
        log_err("sip", "event=shutdown_incomplete action=exit_without_cleanup");
        clear_credentials(ua);
        return;
    }
    nua_destroy(ua->nua);
    clear_credentials(ua);
    free(ua);
}
