/* SIP messages as sipbridge receives and answers them on its UDP port, pure: one
 * datagram parsed into the fields a subscriber needs (request line or status, Via,
 * From/To tags, Call-ID, CSeq, Event, Subscription-State, Contact, Record-Route, the
 * body), and a stateless response built from a parsed request (RFC 3261 8.2.6, 18.2.2,
 * RFC 3581). Strict and bounded: folding, compact forms, several values per line and
 * quoted strings are understood; anything malformed, over a limit or ambiguous is an
 * error with a reason. No Sofia, libevent or socket type. Called by sipua.c for every
 * datagram of the fast path; unit-tested and fuzzed (fuzz_sip). */
#ifndef OFFHOOK_SIPMSG_H
#define OFFHOOK_SIPMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIPMSG_MAX_VIA 16        /* Via header lines kept (each may hold several) */
#define SIPMSG_MAX_ROUTE 8       /* Record-Route entries kept */
#define SIPMSG_MAX_HEADERS 128   /* header lines in one message */
#define SIPMSG_MAX_AUTH 4        /* challenges of each kind kept */

/* A slice of the message buffer (not NUL-terminated). */
struct sip_str {
    const char *p;
    size_t n;
};

enum sipmsg_method {
    SIP_M_OTHER, SIP_M_NOTIFY, SIP_M_OPTIONS, SIP_M_SUBSCRIBE, SIP_M_INVITE, SIP_M_ACK,
    SIP_M_BYE, SIP_M_CANCEL, SIP_M_MESSAGE, SIP_M_REFER, SIP_M_REGISTER, SIP_M_PUBLISH,
    SIP_M_INFO, SIP_M_UPDATE, SIP_M_PRACK, SIP_M__COUNT
};

struct sip_msg {
    bool request;                 /* else a response */
    enum sipmsg_method method;       /* requests */
    struct sip_str method_name;
    struct sip_str ruri;
    int status;                   /* responses */
    struct sip_str phrase;        /* their reason phrase */
    struct sip_str via[SIPMSG_MAX_VIA]; /* each Via header line's value, in order */
    int nvia;
    struct sip_str top_via;       /* the first via-parm of the first line */
    struct sip_str via_transport; /* of the top via: UDP, TCP, TLS... */
    struct sip_str via_host;
    long via_port;                /* -1 if not given */
    bool via_rport;               /* a bare rport parameter (RFC 3581) */
    struct sip_str via_branch;    /* its branch parameter */
    struct sip_str from, to;      /* whole values, as received */
    struct sip_str from_tag, to_tag; /* empty (p NULL) when absent */
    struct sip_str call_id;
    uint32_t cseq;
    struct sip_str cseq_method;
    struct sip_str cseq_value;    /* whole value, for the response */
    struct sip_str event;         /* package token, e.g. "dialog" */
    struct sip_str event_id;      /* its id parameter, if any */
    struct sip_str substate;      /* active, pending, terminated (or an extension) */
    struct sip_str reason;        /* Subscription-State reason parameter */
    long sub_expires;             /* its expires parameter, or -1 */
    long retry_after;             /* its retry-after parameter, or -1 */
    struct sip_str content_type;  /* whole value with parameters */
    struct sip_str contact;       /* URI of the first Contact, without <> */
    struct sip_str route[SIPMSG_MAX_ROUTE]; /* Record-Route entries, "<uri>;params" */
    int nroute;
    long expires;                 /* Expires header, or -1 */
    long min_expires;             /* Min-Expires header, or -1 */
    long retry_after_hdr;         /* Retry-After header (seconds), or -1 */
    struct sip_str www_auth[SIPMSG_MAX_AUTH];   /* WWW-Authenticate values */
    int nwww_auth;
    struct sip_str proxy_auth[SIPMSG_MAX_AUTH]; /* Proxy-Authenticate values */
    int nproxy_auth;
    struct sip_str body;          /* empty when the message has none; NUL-terminated when
                                   * from sipmsg_parse (body.p[body.n] == 0) */
};

/* Parses one datagram of len bytes. buf is modified in place (folded header lines are
 * unfolded, a NUL is written after the body: buf must have one writable byte past len)
 * and must stay valid while m is used: m points into it. Returns 0, or -1 with *err set
 * to a static reason. */
int sipmsg_parse(char *buf, size_t len, struct sip_msg *m, const char **err)
    __attribute__((warn_unused_result));

/* The response to request req, stateless: status and phrase, its Via lines (the top one
 * with received=/rport= filled from src_ip and src_port), From, To (with to_tag added
 * when the request's To has none and the status is not 100), Call-ID and CSeq, then
 * extra (complete header lines ending in CRLF, or NULL), Content-Length: 0. Returns the
 * length written to out, or 0 if it did not fit. */
size_t sipmsg_response(const struct sip_msg *req, int status, const char *phrase,
                       const char *to_tag, const char *src_ip, unsigned src_port,
                       const char *extra, char *out, size_t outlen);

/* Where a stateless response to req goes (RFC 3261 18.2.2 with RFC 3581): the source
 * address, at the source port when the top Via asks for rport, else at its sent-by port
 * (5060 when it has none). */
unsigned sipmsg_response_port(const struct sip_msg *req, unsigned src_port);

/* Whether s equals the NUL-terminated word w, ignoring ASCII case. */
bool sip_str_eq(struct sip_str s, const char *w);
/* s as a long in [0, max], or -1 if it is not one. */
long sip_str_long(struct sip_str s, long max);
const char *sipmsg_method_name(enum sipmsg_method m);

#endif
