/* offhookctl check's SIP side: an OPTIONS to [sip] pbx over the transport sipbridge would
 * use (UDP, TCP, or TLS checked as [sip] tls_dir and tls_verify say), with the parsers it
 * needs. Called by offhookctl.c. */
#ifndef OFFHOOK_CTL_SIPCHECK_H
#define OFFHOOK_CTL_SIPCHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "check.h"

struct offhook_config;

/* Sends an OPTIONS to [sip] pbx and waits for a final answer. Any answer counts as
 * reachable (a PBX that challenges or refuses OPTIONS is up; the status is in the
 * detail); no answer, a refused connection or a TLS certificate that sipbridge would not
 * accept fails. One result per transport tried: the one the pbx URI names (UDP without
 * one), plus TCP when the URI names none and [sip] listen has TCP. Returns how many
 * results were written to r (at most max). */
int check_pbx(const struct offhook_config *cfg, int timeout_ms, struct check_result *r,
              int max);

/* ---- pure parts, exposed for tests ------------------------------------------------ */

struct sip_target {
    bool sips;           /* sips: URI */
    char host[256];      /* without brackets */
    bool ipv6;           /* host is an IPv6 literal */
    int port;            /* the URI's, or 5060 (5061 for TLS) */
    char transport[4];   /* "udp", "tcp" or "tls" */
    bool transport_set;  /* named by the URI (sips: or ;transport=) */
};

/* Reads a sip:/sips: URI as sipbridge's outbound proxy. Returns 0, or -1 with err. */
int sipcheck_parse_target(const char *uri, struct sip_target *t, char *err, size_t errlen);

/* Looks at one SIP message in buf[0..len). Returns 1 for a complete response with
 * Call-ID callid (status, phrase and the Server or User-Agent header filled, printable),
 * 0 if more bytes are needed, -1 for anything else (not SIP, another call, a request). */
int sipcheck_parse_response(const char *buf, size_t len, const char *callid, int *status,
                            char *phrase, size_t phraselen, char *server, size_t serverlen);

#endif
