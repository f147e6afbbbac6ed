/* sipbridge's SIP user agent, on Sofia-SIP's transaction layer (nta) without nua: one
 * compact dialog record per subscription (Call-ID, tags, CSeq, route set, remote target,
 * the peer it lives with, its refresh timer: ~200 bytes), SUBSCRIBEs and their refreshes
 * as nta client transactions through the configured outbound proxy (UDP, TCP or TLS),
 * digest challenges (401 and 407) answered with the configured credentials, and every
 * incoming request answered statelessly: NOTIFYs over UDP come through sipudp.c in
 * batches, parsed by sipmsg.c; over TCP and TLS through nta's stateless hook. A NOTIFY is
 * accepted only in a dialog of ours, from the transport and address that dialog was
 * established with (or a listed notifier), in CSeq order; everything else is refused,
 * counted and logged at a bounded rate, and nothing is kept for it. No policy lives here
 * (retries, backoff, states): that is subscription.c, the only caller, told of responses
 * and NOTIFYs through struct sipua_ops. */
#ifndef OFFHOOK_SIPUA_H
#define OFFHOOK_SIPUA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <sofia-sip/su_wait.h>

struct event_base;
struct offhook_config;
struct sipua;
struct sipua_handle;
struct timerq;

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
     * Retry-After header or -1. The owner may release the handle from here. */
    void (*on_response)(void *owner, int status, const char *phrase, long expires,
                        long retry_after);
    /* A NOTIFY in the handle's dialog (already answered 200). The owner may release the
     * handle from here. */
    void (*on_notify)(void *owner, const struct sipua_notify *n);
    /* The AOR, event package and Accept the owner gave sipua_subscribe (the handle keeps
     * no pointer to them: 24 B per subscription). Required. */
    void (*names)(void *owner, const char **aor, const char **event, const char **accept);
};

/* Creates the transaction agent on root (TCP, TLS and the SUBSCRIBEs' UDP transport)
 * and the UDP listen socket on base, bound to the configured listen URLs. Timers run on
 * tq. kick(kick_arg) is called after each request handed to Sofia, so the loop runs a
 * Sofia step. NULL (logged) on failure. cfg is read here and in sipua_update only. */
struct sipua *sipua_new(su_root_t *root, struct event_base *base, struct timerq *tq,
                        const struct offhook_config *cfg, const struct sipua_ops *ops,
                        void (*kick)(void *), void *kick_arg);
/* Applies reloadable settings (credentials, listed notifiers, subscribe rate). */
void sipua_update(struct sipua *ua, const struct offhook_config *cfg);
/* Reports datagrams the kernel dropped on the UDP listen port (receive buffer full) to
 * fn(arg, n): whatever sends bursts that cause them (the subscribe ramp) slows down. */
void sipua_set_drop_hook(struct sipua *ua, void (*fn)(void *arg, uint32_t n), void *arg);
/* Sends SUBSCRIBE for event to aor (with Supported: eventlist for an RFC 4662 list) and
 * keeps the dialog refreshed until released. aor, event and accept are the owner's
 * strings, read through ops.names while it owns the handle (which must give these):
 * they must stay valid until sipua_release. The handle reports to owner. */
struct sipua_handle *sipua_subscribe(struct sipua *ua, const char *aor, const char *event,
                                     const char *accept, long expires, bool eventlist,
                                     void *owner);
/* Re-sends SUBSCRIBE in the dialog now (asks for a fresh full-state NOTIFY); nothing if
 * the dialog is not established or a SUBSCRIBE is already in flight (its answer counts). */
void sipua_refresh(struct sipua_handle *h, long expires);
/* Detaches the owner: a live dialog is ended with one SUBSCRIBE Expires: 0 (answered
 * challenges included), after which the record is freed; a dead one is freed now. The
 * owner's strings are not used after this returns. */
void sipua_release(struct sipua_handle *h);
/* Un-SUBSCRIBEs every live dialog at a bounded pace (ten times [sip] subscribe_rate, at
 * least 1,000/s) for at most a few seconds, then calls done(arg) from the loop. Owners
 * hear of nothing meanwhile; NOTIFYs are still answered. */
void sipua_shutdown(struct sipua *ua, void (*done)(void *arg), void *arg);
/* Frees everything; any time after sipua_new (pending transactions are dropped). */
void sipua_free(struct sipua *ua);
/* Whether SIP over TLS is configured (a tls: listen). */
bool sipua_tls(const struct sipua *ua);
/* One datagram received on the UDP listen port from `from`: what sipudp.c hands up,
 * public for the fuzz target. buf is parsed in place. */
void sipua_input(struct sipua *ua, char *buf, size_t len, const struct sockaddr *from,
                 socklen_t fromlen);
/* Registers offhook_sip_* metrics owned by this layer. */
void sipua_register_metrics(void);

#endif
