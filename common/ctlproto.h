/* The control-socket protocol both daemons speak (ctlsock.c) and offhookctl reads, pure:
 * the request line parser, the reply's status line, durations, JSON string escaping.
 * Called by ctlsock.c (server side), ctl/ (client side), the unit tests and the fuzzer.
 *
 * A request is one line of at most CTL_LINE_MAX bytes, LF-terminated (CRLF accepted):
 * a command name and its arguments, separated by spaces or tabs, at most CTL_ARGS_MAX
 * words, printable UTF-8 only (no quoting: nothing we name has spaces). The word --json
 * anywhere after the command asks for a JSON body. An empty line is ignored.
 *
 * The reply is a status line, a body and a line holding a single dot:
 *
 *     OK                                  ERR <code> <text>
 *     <body lines>                        .
 *     .
 *
 * A body line that begins with a dot is sent with one more dot in front (SMTP's
 * dot-stuffing, RFC 5321 4.5.2), so the terminator is unambiguous; the reader removes
 * it. <code> is one word (CTL_ERR_*). The connection stays open for the next request. */
#ifndef OFFHOOK_CTLPROTO_H
#define OFFHOOK_CTLPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

#define CTL_LINE_MAX 1024 /* bytes of a request line, LF excluded */
#define CTL_ARGS_MAX 16   /* words of a request, command included */

/* The error codes of a status line (ERR <code> <text>). */
#define CTL_ERR_USAGE "usage"         /* bad arguments: the text says what is expected */
#define CTL_ERR_UNKNOWN "unknown"     /* no such command */
#define CTL_ERR_NOTFOUND "notfound"   /* no such user, AOR, ... */
#define CTL_ERR_FAILED "failed"       /* the command ran and failed (a refused reload) */
#define CTL_ERR_BADREQ "badrequest"   /* not a request line: too long, binary, too many
                                       * words; the daemon closes the connection */
#define CTL_ERR_BUSY "busy"           /* too many clients; the daemon closes */

struct ctl_request {
    int argc;                   /* >= 1: argv[0] is the command */
    char *argv[CTL_ARGS_MAX];   /* point into buf; --json is not among them */
    bool json;                  /* --json was given */
    char buf[CTL_LINE_MAX + 1];
};

/* Parses one request line of len bytes (its LF already removed; a trailing CR is
 * dropped). Returns 0 with out filled, 1 for an empty line (nothing to answer), or -1
 * with a static reason in *err. */
int ctlproto_parse(const char *line, size_t len, struct ctl_request *out, const char **err)
    __attribute__((warn_unused_result));

/* A reply's status line (LF removed). Returns 1 for OK, 0 for ERR (code and text set:
 * code NUL-terminated in codebuf, *text points into line), -1 for anything else. */
int ctlproto_status(const char *line, char *codebuf, size_t codelen, const char **text)
    __attribute__((warn_unused_result));

/* "90", "90s", "10m", "2h", "1d": seconds in [min_s, max_s]. Returns 0/-1. */
int ctlproto_duration(const char *s, long min_s, long max_s, long *out)
    __attribute__((warn_unused_result));

/* "12 s ago", "3 min ago", "in 40 s", "just now", "never" (wall_ms 0): wall_ms seen from
 * now_ms (both wall-clock milliseconds), into out. */
void ctlproto_ago(int64_t wall_ms, int64_t now_ms, char *out, size_t len);

/* Appends s as a JSON string (quotes included): ", \ and control characters escaped,
 * bytes that are not valid UTF-8 replaced by U+FFFD, so the document stays valid
 * whatever a peer put into the text. NULL is written as null. */
void ctlproto_json_str(struct sbuf *out, const char *s);

#endif
