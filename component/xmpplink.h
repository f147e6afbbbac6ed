/* The component's XEP-0114 connection to the XMPP server: libstrophe driven from the
 * component's libevent loop (no polling: its socket is watched, passes run on events),
 * handshake with the shared secret, reconnect with backoff and jitter, and the one gate
 * every outgoing stanza passes, which refuses any 'from' outside the component's domain
 * and repairs text that is not XML character data (invalid UTF-8).
 * Calls nothing in the component: what it receives goes up through xmpplink_ops.
 * Called by main.c only, which points the other modules' stanza_out here. */
#ifndef OFFHOOK_XMPPLINK_H
#define OFFHOOK_XMPPLINK_H

#include <stdbool.h>

#include <strophe.h>

struct event_base;
struct offhook_config;
struct xmpplink;

/* News for the owner, wired at xmpplink_new. */
struct xmpplink_ops {
    void (*on_up)(void *arg);   /* handshake accepted: the stream is usable */
    void (*on_down)(void *arg); /* stream lost; a reconnect is scheduled */
    /* Every incoming stanza; valid only during the call. */
    void (*on_stanza)(void *arg, xmpp_stanza_t *stanza);
};

/* cfg is read only here (domain, server, secret: copied); base must outlive the link; ops
 * is copied. Connects once started. */
struct xmpplink *xmpplink_new(struct event_base *base, const struct offhook_config *cfg,
                              const struct xmpplink_ops *ops, void *arg);
/* Connects (from base's loop), and reconnects after every loss, until stopped: while this
 * component is the active one (it holds the lease). */
void xmpplink_start(struct xmpplink *l);
/* Closes the stream (</stream:stream>, on_down) and stays disconnected: a standby. No
 * presence is sent: watchers keep what they were last shown. */
void xmpplink_stop(struct xmpplink *l);
/* Closes the stream (</stream:stream>) and frees everything. */
void xmpplink_free(struct xmpplink *l);
bool xmpplink_up(const struct xmpplink *l);
/* The link's libstrophe context, owned by the link (valid until xmpplink_free). */
xmpp_ctx_t *xmpplink_ctx(const struct xmpplink *l);
/* Sends a stanza (not taking ownership: it is serialised during the call, and written with
 * the other stanzas of this loop turn in one piece). kind names it in
 * offhook_stanzas_sent_total.
 * Text XML cannot carry is replaced first, in the caller's stanza (stanza_scrub: counted
 * in offhook_stanzas_repaired_total, logged at most once a minute). Returns 0, or -1
 * when the link is down or the stanza's from is not ours. */
int xmpplink_send(struct xmpplink *l, xmpp_stanza_t *stanza, const char *kind);
/* A barrier: an XEP-0199 ping to server (a domain of the server we are connected to),
 * queued behind everything sent so far. done(arg, true) when its answer comes (result or
 * error alike: the server handles a stream's stanzas in order, so it has handled every
 * one sent before), done(arg, false) if the stream goes down first or the link is freed.
 * Returns 0, or -1 (link down: done is not called). Stanzas still waiting in the send
 * queue: xmpplink_queued. */
int xmpplink_barrier(struct xmpplink *l, const char *server, void (*done)(void *arg, bool ok),
                     void *arg);
/* Stanzas sent in this stream, for tests and status lines. */
unsigned long xmpplink_sent(const struct xmpplink *l);
void xmpplink_register_metrics(void);

#endif
