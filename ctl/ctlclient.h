/* offhookctl's side of a daemon's control socket (common/ctlproto.h): connects, sends one
 * request line, reads the status line and the body (dot-stuffing undone) with a limit on
 * how long the daemon may stay silent. Blocking, one connection per request. Called by
 * console.c; the body parser is pure and fed by the tests and the fuzzer too. */
#ifndef OFFHOOK_CTLCLIENT_H
#define OFFHOOK_CTLCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "sbuf.h"

enum ctlclient_outcome {
    CTLC_OK,       /* "OK": the body follows */
    CTLC_ERR,      /* "ERR code text": the daemon refused or failed it (code, text, body) */
    CTLC_DOWN,     /* nothing listens: no socket file or connection refused (not running) */
    CTLC_DENIED,   /* the socket exists but we may not connect (not root, not in its group) */
    CTLC_BROKEN,   /* silent past the timeout, connection lost, or not the protocol */
};

struct ctlclient_reply {
    enum ctlclient_outcome outcome;
    char code[16];          /* ERR's code (CTL_ERR_*) */
    char text[1100];        /* ERR's text, or what went wrong for DOWN, DENIED, BROKEN */
    struct sbuf body;       /* the body, unless it was written to a stream */
};

/* Sends line (no LF; at most CTL_LINE_MAX bytes) to the socket at path and reads the
 * answer into r (zeroed here; free it with ctlclient_reply_free). With out, the body is
 * written there as it arrives instead of kept. timeout_ms: the longest the daemon may
 * stay silent. Returns r->outcome. */
enum ctlclient_outcome ctlclient_ask(const char *path, const char *line, int timeout_ms,
                                     FILE *out, struct ctlclient_reply *r);
void ctlclient_reply_free(struct ctlclient_reply *r);

/* The reader of an answer, fed the bytes as they come. */
struct ctlclient_parser {
    int stage;              /* 0 status line, 1 line start, 2 after a dot, 3 mid line, 4 done */
    char status[1100];
    size_t status_len;
    bool bad;               /* not the protocol */
};
/* Feeds n bytes: the body's bytes go to out (or body, or nowhere with neither). Returns
 * the bytes consumed: it stops right after the status line (p->status then tells where
 * the body should go) and after the terminating dot line (what follows is not this
 * answer's); -1 when the input is not an answer (a status line too long or without
 * OK/ERR). */
long ctlclient_feed(struct ctlclient_parser *p, const char *buf, size_t n, FILE *out,
                    struct sbuf *body);
bool ctlclient_done(const struct ctlclient_parser *p);

#endif
