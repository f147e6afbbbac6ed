/* sipbridge's SIP user agent: a thin layer over Sofia-SIP's nua that sends SUBSCRIBEs
 * through the configured outbound proxy, answers digest challenges with the configured
 * credentials, and hands each NOTIFY and final response to its owner. No policy lives
 * here (retries, backoff, states): that is subscription.c, the only caller. */
#ifndef OFFHOOK_SIPUA_H
#define OFFHOOK_SIPUA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sofia-sip/su_wait.h>

struct offhook_config;
struct sipua;
struct sipua_handle;

/* One received NOTIFY; every pointer is valid only during the callback. */
struct sipua_notify {
    const char *content_type;  /* full header value with parameters, or NULL */
    const char *body;          /* NULL when the NOTIFY has no body */
    size_t len;
    const char *substate;      /* Subscription-State: active, pending, terminated */
    const char *reason;        /* its reason parameter, or NULL */
    long expires;              /* its expires parameter, or -1 */
    long retry_after;          /* its retry-after parameter, or -1 */
    int64_t received_us;       /* wall clock at arrival */
};

struct sipua_ops {
    /* A final response to a SUBSCRIBE (initial or refresh). status 2xx: expires is what
     * the notifier granted (-1 if not given); 423: the Min-Expires it wants. retry_after:
     * Retry-After header or -1. */
    void (*on_response)(void *owner, int status, const char *phrase, long expires,
                        long retry_after);
    void (*on_notify)(void *owner, const struct sipua_notify *n);
};

/* Creates the nua on root, bound to the configured listen URLs. kick(kick_arg) is called
 * after each request handed to nua, so the loop runs a Sofia step. NULL on failure. */
struct sipua *sipua_new(su_root_t *root, const struct offhook_config *cfg,
                        const struct sipua_ops *ops, void (*kick)(void *), void *kick_arg);
/* Applies reloadable settings (credentials). */
void sipua_update(struct sipua *ua, const struct offhook_config *cfg);
/* Sends SUBSCRIBE for event to aor (with Supported: eventlist for an RFC 4662 list). The
 * handle reports to owner until released. */
struct sipua_handle *sipua_subscribe(struct sipua *ua, const char *aor, const char *event,
                                     const char *accept, long expires, bool eventlist,
                                     void *owner);
/* Re-sends SUBSCRIBE on the existing dialog (asks for a fresh full-state NOTIFY). */
void sipua_refresh(struct sipua_handle *h, long expires);
/* Detaches the owner and destroys the handle; a live subscription is ended with one
 * SUBSCRIBE Expires: 0 (by nua, as the dialog usage shuts down). */
void sipua_release(struct sipua_handle *h);
/* Un-SUBSCRIBEs everything (nua_shutdown) and calls done once nua has finished. */
void sipua_shutdown(struct sipua *ua, void (*done)(void *arg), void *arg);
/* Frees the nua; only after the shutdown callback. */
void sipua_free(struct sipua *ua);
/* Whether SIP over TLS is configured (a tls: listen). */
bool sipua_tls(const struct sipua *ua);
/* Registers offhook_sip_* metrics owned by this layer. */
void sipua_register_metrics(void);

#endif
