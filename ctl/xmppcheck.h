/* offhookctl check's XMPP side: a real XEP-0114 handshake with [xmpp] domain and secret
 * (stream header, the server's stream id, <handshake>SHA-1(id + secret)</handshake>),
 * read with a small tag scanner that needs no XML library. Called by offhookctl.c. */
#ifndef OFFHOOK_CTL_XMPPCHECK_H
#define OFFHOOK_CTL_XMPPCHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "check.h"

struct offhook_config;

/* Connects to [xmpp] host:port, opens a jabber:component:accept stream to [xmpp]
 * domain, answers with the handshake and reads the verdict; closes the stream. A server
 * that answers "conflict" has accepted the secret (another connection, offhook-component
 * itself, holds the domain): that counts as ok. */
void check_xmpp(const struct offhook_config *cfg, int timeout_ms, struct check_result *r);

/* What the server said so far, as the scanner found it. Pure; exposed for tests. */
struct xmpp_scan {
    bool header;          /* the server's stream header arrived */
    char id[128];         /* its id attribute ("" if none) */
    bool handshake;       /* <handshake/>: the secret was accepted */
    bool error;           /* <stream:error> arrived */
    char condition[48];   /* its condition element's name (not-authorized, conflict...) */
    char text[160];       /* its <text>, printable ASCII */
    bool closed;          /* </stream:stream> */
    int depth;            /* element nesting: 1 inside the stream */
    bool in_text;         /* inside the error's <text> */
};

/* Scans buf from *pos to len, consuming complete tags and text only (*pos is left at
 * the first byte of an incomplete tag). Returns 0, or -1 for input that is not XML a
 * server would send (st->condition then says why). */
int xmppcheck_scan(struct xmpp_scan *st, const char *buf, size_t len, size_t *pos);

/* The handshake's content: lower-case hex SHA-1 of id followed by secret (XEP-0114). */
void xmppcheck_handshake_hex(const char *id, const char *secret, char hex[41]);

#endif
