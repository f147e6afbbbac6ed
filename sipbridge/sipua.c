/* The subscriber's side of RFC 6665 on nta: dialog records, SUBSCRIBE transactions,
 * stateless answers to every incoming request (see sipua.h). */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

struct sipua;
struct sipua_handle;
#define NTA_AGENT_MAGIC_T struct sipua
#define NTA_OUTGOING_MAGIC_T struct sipua_handle
#include <sofia-sip/auth_client.h>
#include <sofia-sip/msg_addr.h>
#include <sofia-sip/msg_buffer.h>
#include <sofia-sip/msg_header.h>
#include <sofia-sip/nta.h>
#include <sofia-sip/nta_stateless.h>
#include <sofia-sip/nta_tport.h>
#include <sofia-sip/sip_header.h>
#include <sofia-sip/sip_status.h>
#include <sofia-sip/tport.h>
#include <sofia-sip/tport_tag.h>
#include <sofia-sip/url.h>

#include "sipua.h"

#include "config.h"
#include "expiry.h"
#include "log.h"
#include "metrics.h"
#include "ratelimit.h"
#include "sipmsg.h"
#include "sipudp.h"
#include "strmap.h"
#include "strutil.h"
#include "timerq.h"
#include "version.h"

#define SIP_UDP_RMEM (8 << 20)   /* receive buffer asked for each UDP socket */
#define SIP_T1X64_MS 8000        /* transaction lifetime (Timer F), RFC default 32 s */
#define MAX_AUTH_TRIES 2         /* a second challenge for one request: wrong credentials */
#define MAX_REQUEST 8192         /* a SUBSCRIBE as we write it */
#define UNSUB_BOUND_MS 3500      /* a clean stop un-SUBSCRIBEs for at most this long */
#define UNSUB_TICK_MS 10
#define UNSUB_MIN_RATE 1000      /* un-SUBSCRIBEs per second at a stop, at least ... */
#define UNSUB_MAX_RATE 50000     /* ... and at most */
#define REFUSE_LOG_MS 10000      /* one refusal line per reason per 10 s, with a count */
#define SRC_SLOTS 1024           /* sources tracked for out-of-dialog traffic */
#define MAX_NOTIFIERS 16         /* [sip] notifiers entries */
#define PBX_ADDRS 8              /* addresses [sip] pbx resolves to, kept */
#define SIP_T1_MS 500            /* RFC 3261 T1 and T2 (UDP retransmissions) */
#define SIP_T2_MS 4000

/* Out-of-dialog requests (scanners, forged NOTIFYs for dialogs we do not have): at most
 * this many answered per source address and in all; the rest are dropped unanswered. */
static const struct ratelimit src_limit = {.rate = 20, .burst = 40};
static const struct ratelimit all_limit = {.rate = 5000, .burst = 5000};
#define KNOWN_PEERS 16           /* notifier addresses learned from dialogs */

enum tp { TP_UDP, TP_TCP, TP_TLS };
static const char *const tp_names[] = {"udp", "tcp", "tls"};

/* Where a message came from, or where a dialog lives: transport and address. */
struct peer {
    uint8_t tp;          /* enum tp */
    uint8_t family;      /* AF_INET, AF_INET6; 0 = none */
    uint16_t port;       /* host order; 0 = any (listed notifiers) */
    uint8_t addr[16];
};

/* An interned string (remote targets and route sets: the same few for every dialog). */
struct istr {
    uint32_t refs;
    char s[];
};

struct sipua_handle {
    struct sipua *ua;
    /* One or the other (`released` says which; h_owner reads it): 8 B per subscription. */
    union {
        void *owner_;            /* until released */
        char *owned;             /* once released: aor, event and accept, each ending in a
                                  * NUL (before, they are the owner's: h_name); NULL: none */
    };
    struct sipua_handle *hnext;  /* in ua->buckets */
    uint64_t callid, ltag;       /* ours: Call-ID and From tag, as 16 hex digits */
    char *rtag;                  /* the notifier's tag, NULL until learned */
    struct istr *target;         /* remote target URI, NULL: the AOR */
    struct istr *route;          /* route set as a Route value, NULL: none */
    struct peer peer;            /* where the dialog was established (family 0: not yet) */
    uint32_t lcseq, rcseq;       /* our last CSeq; the notifier's last NOTIFY CSeq */
    nta_outgoing_t *orq;         /* the SUBSCRIBE in flight over TCP or TLS, if any */
    struct utx *utx;             /* the SUBSCRIBE in flight over UDP, if any */
    struct tq_timer timer;       /* refresh, or the report of a failure at send time */
    int64_t expires_at;          /* mono ms the subscription runs out; 0 = unknown */
    uint32_t asked;              /* Expires of the last SUBSCRIBE */
    /* Packed (a handle exists per subscription, 100,000 of them): 152 B, a 160 B chunk. */
    int16_t sync_status;         /* a final status nta gave while the request was sent */
    uint8_t auth_tries;
    bool established : 1;        /* a 2xx or a NOTIFY created the dialog */
    bool terminated : 1;         /* the notifier ended it */
    bool eventlist : 1;
    bool have_rcseq : 1;
    bool in_send : 1;            /* inside nta_outgoing_mcreate */
    bool unsubscribed : 1;       /* an Expires: 0 went out */
    bool refresh_now : 1;        /* sipua_refresh asked: the timer sends it */
    bool released : 1;           /* the owner let go (sipua_release, sipua_free) */
};

_Static_assert(sizeof(struct sipua_handle) <= 152, "struct sipua_handle grew a chunk");

/* A SUBSCRIBE in flight over UDP: the client transaction of RFC 3261 17.1.2, ours
 * because the UDP port is ours (the NOTIFYs' fast path). Retransmitted from T1 doubling
 * to T2 (T2 once a provisional answer came), given up after SIP_T1X64_MS. */
struct utx {
    struct sipua_handle *h;
    struct utx *prev, *next;     /* in ua->utx_head: what an ICMP error may concern */
    uint64_t branch;
    struct tq_timer t;
    int64_t giveup_at;
    int interval_ms;
    bool provisional;
    size_t len;
    char req[];
};

/* A final answer to one of our SUBSCRIBEs, from either transport. Pointers are valid
 * during response_in only. */
struct resp {
    int status;
    const char *phrase;
    struct peer src;                 /* where it came from (family 0: the stack's own) */
    struct sip_str to_tag, contact;
    struct sip_str route[SIPMSG_MAX_ROUTE]; /* Record-Route entries, in received order */
    int nroute;
    long expires, min_expires, retry_after; /* -1: absent */
    msg_auth_t const *auth;          /* nta: the challenges, parsed */
    const struct sip_str *auth_raw;  /* UDP: their header values */
    int nauth_raw;
};

struct src_slot {
    struct peer key;
    struct ratelimit_bucket b;
};

struct refusal_log {
    int64_t last_ms;
    unsigned suppressed;
};

enum refusal {
    R_MALFORMED, R_UNKNOWN_DIALOG, R_WRONG_SOURCE, R_BAD_EVENT, R_OUT_OF_ORDER,
    R_NOT_ALLOWED, R_RATE_LIMITED, R_STRAY_RESPONSE, R__COUNT
};
static const char *const refusal_names[] = {
    "malformed", "unknown_dialog", "wrong_source", "bad_event", "out_of_order",
    "not_allowed", "rate_limited", "stray_response", NULL};
_Static_assert(sizeof refusal_names / sizeof refusal_names[0] == R__COUNT + 1,
               "one name per refusal");

struct sipua {
    su_root_t *root;
    struct timerq *tq;
    nta_agent_t *nta;
    struct sipudp *udp;          /* the UDP listen port (NOTIFYs, SUBSCRIBEs), or NULL */
    char via_udp[300];           /* "SIP/2.0/UDP host:port" of that port */
    struct sockaddr_storage dest; /* where SUBSCRIBEs over UDP go: [sip] pbx */
    socklen_t destlen;           /* 0: not resolved */
    int64_t resolve_after;       /* mono ms: when to try resolving [sip] pbx again */
    char *pbx_host, *pbx_port;
    struct utx *utx_head;
    struct sipua_ops ops;
    char *username;
    char *password;
    char *from_uri;              /* From of every SUBSCRIBE, without tag */
    char *contact;               /* Contact of every SUBSCRIBE */
    char user_agent[64];
    enum tp sub_tp;              /* transport of the SUBSCRIBEs ([sip] pbx) */
    bool tls;
    void (*kick)(void *arg);
    void *kick_arg;
    void (*drop_fn)(void *arg, uint32_t n);
    void *drop_arg;
    long subscribe_rate;
    long min_expires;            /* [sip] min_expires: no refresh sooner; a shorter grant
                                  * lapses (subscription.c subscribes again at that pace) */
    /* dialogs */
    struct sipua_handle **buckets;
    uint32_t nbuckets, count;
    struct strmap interned;      /* string -> struct istr (the key is its s) */
    char stateless_tag[20];      /* To tag of our out-of-dialog answers */
    /* who may notify */
    struct peer pbx[PBX_ADDRS];  /* what [sip] pbx resolved to (port 0: any) */
    int npbx;
    struct peer notifiers[MAX_NOTIFIERS];
    int nnotifiers;
    struct peer known[KNOWN_PEERS]; /* peers our dialogs were established with */
    int nknown, known_next;
    /* out-of-dialog traffic */
    struct src_slot *src;
    struct ratelimit_bucket all;
    struct refusal_log refused[R__COUNT];
    /* a clean stop */
    bool stopping;
    void (*shutdown_done)(void *arg);
    void *shutdown_arg;
    struct tq_timer stop_timer;
    uint32_t stop_bucket;        /* next bucket to un-SUBSCRIBE from */
    int64_t stop_started, stop_deadline;
    double stop_credit;
    unsigned unsub_sent, unsub_outstanding, unsub_answered;
    bool stop_all_sent, stop_reported;
};

/* The AOR (0), event package (1) or Accept (2) of h: its owner's while it has one (not
 * copied per handle: 24 B per user and package), then its own copy ("" without one:
 * released while its un-SUBSCRIBE was in flight at shutdown). */
static const char *h_name(const struct sipua_handle *h, int which)
{
    const char *v[3];
    const char *p;

    if (!h->released) {
        h->ua->ops.names(h->owner_, &v[0], &v[1], &v[2]);
        return v[which];
    }
    p = h->owned;
    if (!p)
        return "";
    for (; which > 0; which--)
        p += strlen(p) + 1;
    return p;
}

#define h_aor(h) h_name((h), 0)
#define h_event(h) h_name((h), 1)
#define h_accept(h) h_name((h), 2)

/* Who h reports to; NULL once released. */
static void *h_owner(const struct sipua_handle *h)
{
    return h->released ? NULL : h->owner_;
}

static struct metric *m_auth, *m_refused, *m_drops, *m_dialogs;

void sipua_register_metrics(void)
{
    m_auth = metric_new(METRIC_COUNTER, "offhook_sip_auth_challenges_total",
                        "Digest challenges (401/407) answered, by outcome.", "outcome",
                        (const char *const[]){"answered", "no_credentials", "rejected", NULL});
    m_refused = metric_new(METRIC_COUNTER, "offhook_sip_refused_total",
                           "Incoming SIP messages refused (answered with an error, or dropped "
                           "unanswered when rate_limited), by reason.",
                           "reason", refusal_names);
    m_drops = metric_new(METRIC_COUNTER, "offhook_sip_udp_drops_total",
                         "Datagrams the kernel dropped on sipbridge's UDP port because its "
                         "receive buffer was full.",
                         NULL, NULL);
    m_dialogs = metric_new(METRIC_GAUGE, "offhook_sip_dialogs",
                           "SIP dialog records held (one per live subscription, plus those "
                           "being ended).",
                           NULL, NULL);
}

static void kick(struct sipua *ua)
{
    if (ua->kick)
        ua->kick(ua->kick_arg);
}

/* ---- small helpers ------------------------------------------------------------------ */

static void hex16(char out[17], uint64_t v)
{
    static const char digits[] = "0123456789abcdef";

    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = digits[v & 15];
    out[16] = '\0';
}

/* Our Call-IDs and tags are exactly 16 lower-case hex digits. */
static bool parse_hex16(struct sip_str s, uint64_t *v)
{
    uint64_t r = 0;

    if (!s.p || s.n != 16)
        return false;
    for (size_t i = 0; i < 16; i++) {
        char c = s.p[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        r = r << 4 | (uint64_t)d;
    }
    *v = r;
    return true;
}

/* Unpredictable identifiers: a forger who saw one dialog must not guess the next. */
static uint64_t random64(void)
{
    uint64_t v;

    if (getrandom(&v, sizeof v, 0) != sizeof v)
        v = (uint64_t)clock_wall_us() * 6364136223846793005ULL ^ (uint64_t)(uintptr_t)&v;
    return v;
}

static struct istr *intern(struct sipua *ua, const char *s, size_t n)
{
    char key[1024];
    struct istr *is;

    if (n >= sizeof key)
        n = sizeof key - 1;
    memcpy(key, s, n);
    key[n] = '\0';
    is = strmap_get(&ua->interned, key);
    if (!is) {
        is = xmalloc(sizeof *is + n + 1);
        is->refs = 0;
        memcpy(is->s, key, n + 1);
        strmap_put(&ua->interned, is->s, is);
    }
    is->refs++;
    return is;
}

static void unintern(struct sipua *ua, struct istr *is)
{
    if (!is || --is->refs)
        return;
    strmap_del(&ua->interned, is->s);
    free(is);
}

static void peer_from_sockaddr(struct peer *p, enum tp tp, const struct sockaddr *sa)
{
    memset(p, 0, sizeof *p);
    p->tp = (uint8_t)tp;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        p->family = AF_INET;
        p->port = ntohs(in->sin_port);
        memcpy(p->addr, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        p->family = AF_INET6;
        p->port = ntohs(in6->sin6_port);
        memcpy(p->addr, &in6->sin6_addr, 16);
    }
}

static const char *peer_ip(const struct peer *p, char *buf, size_t len)
{
    if (!p->family || !inet_ntop(p->family, p->addr, buf, (socklen_t)len))
        snprintf(buf, len, "?");
    return buf;
}

static const char *peer_str(const struct peer *p, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN];

    peer_ip(p, ip, sizeof ip);
    snprintf(buf, len, p->family == AF_INET6 ? "%s:[%s]:%u" : "%s:%s:%u", tp_names[p->tp], ip,
             p->port);
    return buf;
}

static bool same_addr(const struct peer *a, const struct peer *b)
{
    return a->family && a->family == b->family &&
           memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

/* The same place a dialog lives: transport and address; the port too over UDP (a PBX
 * opening a new TCP or TLS connection to deliver a NOTIFY does so from any port). */
static bool same_peer(const struct peer *dialog, const struct peer *src)
{
    return dialog->tp == src->tp && same_addr(dialog, src) &&
           (src->tp != TP_UDP || dialog->port == 0 || dialog->port == src->port);
}

/* ---- the dialog table --------------------------------------------------------------- */

static uint32_t bucket_of(const struct sipua *ua, uint64_t callid)
{
    return (uint32_t)((callid * 0x9E3779B97F4A7C15ULL) >> 32) & (ua->nbuckets - 1);
}

static void table_grow(struct sipua *ua)
{
    uint32_t n = ua->nbuckets ? ua->nbuckets * 2 : 1024;
    struct sipua_handle **b = xcalloc(n, sizeof *b), **old = ua->buckets;
    uint32_t oldn = ua->nbuckets;

    ua->buckets = b;
    ua->nbuckets = n;
    for (uint32_t i = 0; i < oldn; i++) {
        for (struct sipua_handle *h = old[i], *next; h; h = next) {
            uint32_t k = bucket_of(ua, h->callid);
            next = h->hnext;
            h->hnext = b[k];
            b[k] = h;
        }
    }
    free(old);
}

static void table_add(struct sipua *ua, struct sipua_handle *h)
{
    uint32_t k;

    if (ua->count >= ua->nbuckets)
        table_grow(ua);
    k = bucket_of(ua, h->callid);
    h->hnext = ua->buckets[k];
    ua->buckets[k] = h;
    ua->count++;
    metric_set(m_dialogs, NULL, ua->count);
}

static void table_del(struct sipua *ua, struct sipua_handle *h)
{
    struct sipua_handle **pp = &ua->buckets[bucket_of(ua, h->callid)];

    while (*pp && *pp != h)
        pp = &(*pp)->hnext;
    if (*pp) {
        *pp = h->hnext;
        ua->count--;
        metric_set(m_dialogs, NULL, ua->count);
    }
}

static struct sipua_handle *table_find(const struct sipua *ua, uint64_t callid)
{
    if (!ua->nbuckets)
        return NULL;
    for (struct sipua_handle *h = ua->buckets[bucket_of(ua, callid)]; h; h = h->hnext) {
        if (h->callid == callid)
            return h;
    }
    return NULL;
}

static void stop_request(struct sipua_handle *h);

static void handle_free(struct sipua_handle *h)
{
    struct sipua *ua = h->ua;

    table_del(ua, h);
    tq_cancel(ua->tq, &h->timer);
    stop_request(h);
    unintern(ua, h->target);
    unintern(ua, h->route);
    free(h->rtag);
    if (h->released)
        free(h->owned);
    free(h);
}

/* ---- refusals ----------------------------------------------------------------------- */

/* Counted every time; logged once per reason per REFUSE_LOG_MS with what was skipped. */
static void refuse(struct sipua *ua, enum refusal r, const char *method, const struct peer *src,
                   const char *detail)
{
    struct refusal_log *l = &ua->refused[r];
    int64_t now = clock_mono_ms();
    char who[96];

    metric_inc(m_refused, refusal_names[r]);
    if (l->last_ms && now - l->last_ms < REFUSE_LOG_MS) {
        l->suppressed++;
        return;
    }
    log_notice("sip", "event=sip_refused reason=%s method=%s source=%s detail=%s "
                      "suppressed=%u",
               refusal_names[r], log_q(method), src ? peer_str(src, who, sizeof who) : "none",
               log_q(detail ? detail : ""), l->suppressed);
    l->last_ms = now;
    l->suppressed = 0;
}

/* A notifier we have dialogs with, or one configured: after a restart of ours it sends
 * NOTIFYs for every dialog we had, and each must get its 481 for the notifier to drop
 * it; the per-source limit is for everyone else. */
static bool known_notifier(const struct sipua *ua, const struct peer *src)
{
    for (int i = 0; i < ua->npbx; i++) {
        if (same_addr(&ua->pbx[i], src))
            return true;
    }
    for (int i = 0; i < ua->nnotifiers; i++) {
        if (same_addr(&ua->notifiers[i], src))
            return true;
    }
    for (int i = 0; i < ua->nknown; i++) {
        if (same_addr(&ua->known[i], src))
            return true;
    }
    return false;
}

static void learn_peer(struct sipua *ua, const struct peer *p)
{
    for (int i = 0; i < ua->nknown; i++) {
        if (same_addr(&ua->known[i], p))
            return;
    }
    ua->known[ua->known_next] = *p;
    ua->known_next = (ua->known_next + 1) % KNOWN_PEERS;
    if (ua->nknown < KNOWN_PEERS)
        ua->nknown++;
}

/* Whether an out-of-dialog request from src may be answered: per source (known
 * notifiers excepted) and in all. The table is fixed: a source that collides with
 * another takes its slot over. */
static bool src_allowed(struct sipua *ua, const struct peer *src)
{
    int64_t now = clock_mono_ms();
    uint32_t h = 2166136261u;
    struct src_slot *s;

    if (known_notifier(ua, src))
        return ratelimit_take(&all_limit, &ua->all, now);

    for (int i = 0; i < 16; i++)
        h = (h ^ src->addr[i]) * 16777619u;
    s = &ua->src[h % SRC_SLOTS];
    if (!same_addr(&s->key, src)) {
        s->key = *src;
        ratelimit_bucket_init(&s->b, src_limit.burst, now);
    }
    return ratelimit_take(&src_limit, &s->b, now) && ratelimit_take(&all_limit, &ua->all, now);
}

/* ---- requests we send --------------------------------------------------------------- */

static int on_orq(struct sipua_handle *h, nta_outgoing_t *orq, sip_t const *sip);
static void response_in(struct sipua_handle *h, const struct resp *r);

/* The Authorization headers answering the challenges of r (status 401 or 407) for a
 * SUBSCRIBE to ruri, as header lines; 0 or -1 (no credentials, rejected, logged). */
static int answer_challenge(struct sipua_handle *h, const struct resp *r, const char *ruri,
                            char *out, size_t len)
{
    struct sipua *ua = h->ua;
    bool www = r->status == 401;
    su_home_t *home = NULL;
    auth_client_t *auc = NULL;
    msg_header_t *hdrs = NULL;
    msg_auth_t const *au = r->auth;
    url_t *url;
    int rc = -1, nchal = 0;
    size_t used = 0;

    if (!ua->username || !ua->password) {
        metric_inc(m_auth, "no_credentials");
        log_err("sip", "event=auth_required aor=%s status=%d reason=\"no [sip] username/password "
                       "configured\"",
                log_q(h_aor(h)), r->status);
        return -1;
    }
    if (h->auth_tries >= MAX_AUTH_TRIES || (!au && !r->nauth_raw)) {
        metric_inc(m_auth, "rejected");
        log_err("sip", "event=auth_rejected aor=%s status=%d user=%s reason=\"credentials not "
                       "accepted\"",
                log_q(h_aor(h)), r->status, log_q(ua->username));
        return -1;
    }
    home = su_home_new(sizeof *home);
    url = home ? url_make(home, ruri) : NULL;
    if (!url)
        goto refused;
    if (au) {
        nchal = auc_challenge(&auc, home, au, www ? sip_authorization_class
                                                  : sip_proxy_authorization_class) >= 0;
    } else {
        /* Over UDP the challenge arrives as text: Sofia's parser reads each value. */
        for (int i = 0; i < r->nauth_raw; i++) {
            char v[1024];
            msg_header_t *hdr;

            if (r->auth_raw[i].n >= sizeof v)
                continue;
            memcpy(v, r->auth_raw[i].p, r->auth_raw[i].n);
            v[r->auth_raw[i].n] = '\0';
            hdr = msg_header_make(home, www ? sip_www_authenticate_class
                                            : sip_proxy_authenticate_class, v);
            if (hdr && auc_challenge(&auc, home, (msg_auth_t const *)hdr,
                                     www ? sip_authorization_class
                                         : sip_proxy_authorization_class) >= 0)
                nchal++;
        }
    }
    if (!nchal || auc_all_credentials(&auc, NULL, NULL, ua->username, ua->password) <= 0 ||
        auc_authorization_headers(&auc, home, "SUBSCRIBE", url, NULL, &hdrs) < 0 || !hdrs)
        goto refused;
    for (msg_header_t *x = hdrs; x; x = x->sh_next) {
        issize_t n = msg_header_e(out + used, (isize_t)(len - used), x, 0);
        if (n < 0 || (size_t)n >= len - used)
            goto refused;
        used += (size_t)n;
    }
    h->auth_tries++;
    metric_inc(m_auth, "answered");
    log_debug("sip", "event=auth_answer aor=%s status=%d user=%s", log_q(h_aor(h)), r->status,
              log_q(ua->username));
    rc = 0;
    goto out;
refused:
    metric_inc(m_auth, "rejected");
    log_err("sip", "event=auth_rejected aor=%s status=%d user=%s reason=\"cannot answer "
                   "the challenge (scheme or algorithm not supported?)\"",
            log_q(h_aor(h)), r->status, log_q(ua->username));
out:
    if (home)
        su_home_unref(home);
    if (rc < 0 && used)
        explicit_bzero(out, used);
    return rc;
}

static void utx_free(struct sipua *ua, struct utx *x)
{
    if (!x)
        return;
    tq_cancel(ua->tq, &x->t);
    if (x->prev)
        x->prev->next = x->next;
    else
        ua->utx_head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    if (x->h && x->h->utx == x)
        x->h->utx = NULL;
    explicit_bzero(x->req, x->len); /* it may carry an Authorization */
    free(x);
}

/* [sip] pbx as a socket address. A name is looked up with the system resolver when
 * first needed and again at most every 30 s while it does not resolve (the lookup
 * blocks the loop: give an address, or a name the local resolver knows). */
static bool have_dest(struct sipua *ua)
{
    struct addrinfo hints = {.ai_socktype = SOCK_DGRAM}, *ai = NULL;
    int64_t now = clock_mono_ms();

    if (ua->destlen)
        return true;
    if (now < ua->resolve_after || !ua->pbx_host)
        return false;
    ua->resolve_after = now + 30000;
    if (getaddrinfo(ua->pbx_host, ua->pbx_port, &hints, &ai) != 0 || !ai) {
        log_err("sip", "event=pbx_unresolved host=%s reason=\"no address for [sip] pbx; "
                       "retrying every 30 s\"",
                log_q(ua->pbx_host));
        return false;
    }
    memcpy(&ua->dest, ai->ai_addr, ai->ai_addrlen);
    ua->destlen = (socklen_t)ai->ai_addrlen;
    freeaddrinfo(ai);
    return true;
}

static void on_utx_timer(struct tq_timer *t)
{
    struct utx *x = (struct utx *)((char *)t - offsetof(struct utx, t));
    struct sipua_handle *h = x->h;
    struct sipua *ua = h->ua;
    int64_t now = clock_mono_ms();

    if (now >= x->giveup_at) {
        /* Timer F: no final answer. Reported as the stack's own 408. */
        struct resp r = {.status = 408, .phrase = "Request Timeout", .expires = -1,
                         .min_expires = -1, .retry_after = -1};
        utx_free(ua, x);
        response_in(h, &r);
        return;
    }
    (void)sipudp_send(ua->udp, x->req, x->len, (struct sockaddr *)&ua->dest, ua->destlen);
    if (!x->provisional)
        x->interval_ms = x->interval_ms * 2 > SIP_T2_MS ? SIP_T2_MS : x->interval_ms * 2;
    tq_arm(ua->tq, &x->t, on_utx_timer,
           now + x->interval_ms > x->giveup_at ? x->giveup_at - now : x->interval_ms);
}

/* The request text of buf (n bytes, no Via yet) sent over UDP with a Via of ours. */
static int send_udp(struct sipua_handle *h, const char *buf, size_t n)
{
    struct sipua *ua = h->ua;
    char via[400], bh[17];
    const char *eol = memchr(buf, '\n', n);
    size_t vl, first;
    struct utx *x;

    if (!eol || !ua->udp || !have_dest(ua))
        return -1;
    first = (size_t)(eol - buf) + 1;
    x = xmalloc(sizeof *x + n + sizeof via);
    memset(x, 0, sizeof *x);
    x->h = h;
    x->branch = random64();
    hex16(bh, x->branch);
    vl = (size_t)snprintf(via, sizeof via, "Via: %s;rport;branch=z9hG4bK%s\r\n", ua->via_udp, bh);
    memcpy(x->req, buf, first);
    memcpy(x->req + first, via, vl);
    memcpy(x->req + first + vl, buf + first, n - first);
    x->len = n + vl;
    x->interval_ms = SIP_T1_MS;
    x->giveup_at = clock_mono_ms() + SIP_T1X64_MS;
    x->next = ua->utx_head;
    if (x->next)
        x->next->prev = x;
    ua->utx_head = x;
    h->utx = x;
    (void)sipudp_send(ua->udp, x->req, x->len, (struct sockaddr *)&ua->dest, ua->destlen);
    tq_arm(ua->tq, &x->t, on_utx_timer, x->interval_ms);
    return 0;
}

/* The request text of buf handed to nta (TCP, TLS): it adds the Via and picks the
 * connection. */
static int send_nta(struct sipua_handle *h, const char *buf, size_t n)
{
    struct sipua *ua = h->ua;
    msg_t *msg = nta_msg_create(ua->nta, 0);
    void *b;

    if (!msg)
        return -1;
    b = msg_buf_alloc(msg, (usize_t)n + 1);
    if (!b)
        goto fail;
    memcpy(b, buf, n);
    msg_buf_commit(msg, (usize_t)n, 1);
    if (msg_extract(msg) < 0 || !sip_object(msg) || !sip_object(msg)->sip_request)
        goto fail;
    h->in_send = true;
    h->sync_status = 0;
    h->orq = nta_outgoing_mcreate(ua->nta, on_orq, h, NULL, msg, TAG_END());
    h->in_send = false;
    if (!h->orq && !h->sync_status)
        goto fail;
    kick(ua);
    return 0;
fail:
    msg_destroy(msg);
    return -1;
}

/* Sends SUBSCRIBE in h's dialog (or the initial one) asking for `expires`, with auth
 * (header lines) if not NULL. Returns 0, or -1 if nothing could be sent (logged). */
static int send_subscribe(struct sipua_handle *h, uint32_t expires, const char *auth)
{
    struct sipua *ua = h->ua;
    char buf[MAX_REQUEST], callid[17], ltag[17];
    const char *ruri = h->target ? h->target->s : h_aor(h);
    int n, rc = -1;

    hex16(callid, h->callid);
    hex16(ltag, h->ltag);
    n = snprintf(buf, sizeof buf,
                 "SUBSCRIBE %s SIP/2.0\r\n"
                 "Max-Forwards: 70\r\n"
                 "From: <%s>;tag=%s\r\n"
                 "To: <%s>%s%s\r\n"
                 "Call-ID: %s\r\n"
                 "CSeq: %u SUBSCRIBE\r\n"
                 "%s%s%s"
                 "Contact: %s\r\n"
                 "Event: %s\r\n"
                 "Accept: %s\r\n"
                 "Expires: %u\r\n"
                 "%s"
                 "User-Agent: %s\r\n"
                 "%s"
                 "Content-Length: 0\r\n\r\n",
                 ruri, ua->from_uri, ltag, h_aor(h), h->rtag ? ";tag=" : "",
                 h->rtag ? h->rtag : "", callid, ++h->lcseq,
                 h->route ? "Route: " : "", h->route ? h->route->s : "", h->route ? "\r\n" : "",
                 ua->contact, h_event(h), h_accept(h), expires,
                 h->eventlist ? "Supported: eventlist\r\n" : "", ua->user_agent,
                 auth ? auth : "");
    if (n > 0 && (size_t)n < sizeof buf) {
        h->asked = expires;
        rc = ua->sub_tp == TP_UDP ? send_udp(h, buf, (size_t)n) : send_nta(h, buf, (size_t)n);
    }
    if (auth)
        explicit_bzero(buf, sizeof buf);
    if (rc < 0)
        log_err("sip", "event=subscribe_not_sent aor=%s package=%s reason=\"%s\"",
                log_q(h_aor(h)), h_event(h), ua->sub_tp == TP_UDP && !ua->destlen
                              ? "the [sip] pbx host has no address"
                              : "cannot build or hand the request to the stack");
    return rc;
}

/* Its grant ran out unrefreshed (one below [sip] min_expires): the notifier has ended
 * it, so an un-SUBSCRIBE would be one more request for nothing (and a 481). */
static bool lapsed(const struct sipua_handle *h)
{
    return h->expires_at && clock_mono_ms() >= h->expires_at;
}

static bool in_flight(const struct sipua_handle *h)
{
    return h->orq || h->utx;
}

static void stop_request(struct sipua_handle *h)
{
    if (h->orq) {
        nta_outgoing_destroy(h->orq);
        h->orq = NULL;
    }
    utx_free(h->ua, h->utx);
}

/* ---- refresh ------------------------------------------------------------------------ */

static void on_timer(struct tq_timer *t);

/* Schedules the refresh of a subscription granted for delta seconds (expiry.h). A grant
 * below [sip] min_expires is not refreshed at all: refreshing it in time would take a
 * SUBSCRIBE every delta/2 seconds per user (every second at Expires: 1), so it lapses and
 * the owner subscribes again at min_expires' pace (see subscription.c). */
static void set_refresh(struct sipua_handle *h, long delta)
{
    long at;

    if (delta <= 0) {
        tq_cancel(h->ua->tq, &h->timer);
        h->expires_at = 0;
        return;
    }
    h->expires_at = clock_mono_ms() + (int64_t)delta * 1000;
    at = expiry_refresh_at(delta, h->ua->min_expires, random64());
    if (!at) {
        tq_cancel(h->ua->tq, &h->timer);
        return;
    }
    tq_arm(h->ua->tq, &h->timer, on_timer, (int64_t)at * 1000);
}

static void report_response(struct sipua_handle *h, int status, const char *phrase,
                            long expires, long retry_after)
{
    struct sipua *ua = h->ua;

    if (h_owner(h) && !ua->stopping)
        ua->ops.on_response(h_owner(h), status, phrase, expires, retry_after);
}

static void on_timer(struct tq_timer *t)
{
    struct sipua_handle *h = (struct sipua_handle *)((char *)t - offsetof(struct sipua_handle,
                                                                            timer));

    if (h->sync_status) {
        /* The stack failed the request while it was being sent (no transport, a bad
         * URI): reported now, from the loop, as any other final answer. */
        struct resp r = {.status = h->sync_status, .phrase = "Not sent", .expires = -1,
                         .min_expires = -1, .retry_after = -1};
        h->sync_status = 0;
        response_in(h, &r);
        return;
    }
    if (!h_owner(h) || !h->established || h->terminated || h->ua->stopping)
        return;
    if (in_flight(h)) {
        /* One in flight: its answer counts for an asked refresh, and a scheduled one is
         * tried again after it (its 2xx reschedules anyway). */
        if (!h->refresh_now)
            tq_arm(h->ua->tq, &h->timer, on_timer, 1000);
        h->refresh_now = false;
        return;
    }
    h->refresh_now = false;
    h->auth_tries = 0;
    if (send_subscribe(h, h->asked, NULL) < 0)
        report_response(h, 500, "Refresh not sent", -1, -1);
}

/* ---- answers to our SUBSCRIBEs ------------------------------------------------------ */

static void set_route(struct sipua_handle *h, const struct sip_str *rr, int n, bool reverse)
{
    char buf[1024];
    size_t used = 0;

    if (!n)
        return;
    for (int i = 0; i < n; i++) {
        struct sip_str r = rr[reverse ? n - 1 - i : i];

        if (used + r.n + 3 >= sizeof buf)
            return; /* a route set this long is not one we can follow */
        if (used) {
            memcpy(buf + used, ", ", 2);
            used += 2;
        }
        memcpy(buf + used, r.p, r.n);
        used += r.n;
    }
    unintern(h->ua, h->route);
    h->route = intern(h->ua, buf, used);
}

static void set_target(struct sipua_handle *h, const char *uri, size_t n)
{
    struct istr *old = h->target;

    if (!n || n >= 1024 || (n == 1 && uri[0] == '*') ||
        (old && strlen(old->s) == n && memcmp(old->s, uri, n) == 0))
        return;
    h->target = intern(h->ua, uri, n);
    unintern(h->ua, old);
}

/* A final answer to h's SUBSCRIBE, from either transport. The dialog as a 2xx sets it
 * up (RFC 3261 12.1.2): the notifier's tag, the route set (Record-Route reversed), the
 * remote target, the peer it answered from; then the refresh is scheduled. */
static void response_in(struct sipua_handle *h, const struct resp *r)
{
    struct sipua *ua = h->ua;
    long expires = -1;

    if (ua->stopping && h->unsubscribed) {
        ua->unsub_answered++;
        if (ua->unsub_outstanding)
            ua->unsub_outstanding--;
        if (!h_owner(h))
            handle_free(h);
        return;
    }
    if ((r->status == 401 || r->status == 407) && !ua->stopping &&
        (h_owner(h) || h->unsubscribed)) {
        char auth[2048];
        const char *ruri = h->target ? h->target->s : h_aor(h);

        if (answer_challenge(h, r, ruri, auth, sizeof auth) == 0) {
            /* The same request again, challenge answered (a new CSeq). */
            int rc = send_subscribe(h, h->asked, auth);
            explicit_bzero(auth, sizeof auth);
            if (rc == 0)
                return;
        }
    }
    if (!h_owner(h)) {
        /* An un-SUBSCRIBE answered, or the answer to a request of an owner who left. */
        handle_free(h);
        return;
    }
    if (r->status < 300) {
        h->auth_tries = 0;
        if (!h->established && r->to_tag.p && r->to_tag.n) {
            free(h->rtag);
            h->rtag = xstrndup(r->to_tag.p, r->to_tag.n);
            set_route(h, r->route, r->nroute, true);
            h->peer = r->src;
            h->established = true;
            if (r->src.family)
                learn_peer(ua, &r->src);
        } else if (!h->peer.family && r->src.family) {
            h->peer = r->src;
        }
        if (r->contact.p)
            set_target(h, r->contact.p, r->contact.n);
        expires = r->expires;
        if (h->established && !h->terminated)
            set_refresh(h, expires >= 0 ? expires : (long)h->asked);
        if (expires == 0)
            h->terminated = true;
    } else {
        if (r->status == 423)
            expires = r->min_expires;
        tq_cancel(ua->tq, &h->timer); /* a failed refresh: the owner decides what follows */
    }
    report_response(h, r->status, r->phrase, expires, r->retry_after); /* may free h */
}

/* The transport and address a response or request came in by (NULL msg: none). */
static void peer_of_msg(struct sipua *ua, msg_t *msg, struct peer *p)
{
    su_sockaddr_t *sa = msg ? msg_addr(msg) : NULL;
    tport_t *tp = msg ? nta_incoming_transport(ua->nta, NULL, msg) : NULL;
    enum tp t = TP_UDP;

    memset(p, 0, sizeof *p);
    if (!sa || !tp) {
        if (tp)
            tport_unref(tp);
        return;
    }
    if (tport_has_tls(tp))
        t = TP_TLS;
    else if (tport_is_tcp(tp))
        t = TP_TCP;
    peer_from_sockaddr(p, t, &sa->su_sa);
    tport_unref(tp);
}

static struct sip_str cstr(const char *s)
{
    return (struct sip_str){s, s ? strlen(s) : 0};
}

/* The value of an encoded header line "Name: value\r\n" in buf. */
static struct sip_str header_value(char *buf)
{
    char *colon = strchr(buf, ':');

    if (!colon)
        return (struct sip_str){NULL, 0};
    colon++;
    while (*colon == ' ')
        colon++;
    return (struct sip_str){colon, strcspn(colon, "\r\n")};
}

/* nta's final answer to a SUBSCRIBE over TCP or TLS, turned into struct resp. */
static int on_orq(struct sipua_handle *h, nta_outgoing_t *orq, sip_t const *sip)
{
    struct sipua *ua = h->ua;
    int status = nta_outgoing_status(orq);
    struct resp r = {.status = status, .expires = -1, .min_expires = -1, .retry_after = -1};
    char contact[1024], routes[SIPMSG_MAX_ROUTE][512], phrase[128];
    msg_t *resp;

    if (status < 200)
        return 0;
    if (h->orq == orq)
        h->orq = NULL;
    if (h->in_send) {
        /* Failed inside nta_outgoing_mcreate: the caller is still in the middle of
         * sending; the answer is reported from the loop. */
        h->sync_status = status;
        tq_arm(ua->tq, &h->timer, on_timer, 0);
        nta_outgoing_destroy(orq);
        return 0;
    }
    snprintf(phrase, sizeof phrase, "%s", sip && sip->sip_status ? sip->sip_status->st_phrase : "");
    r.phrase = phrase;
    resp = nta_outgoing_getresponse(orq);
    peer_of_msg(ua, resp, &r.src);
    if (resp)
        msg_destroy(resp);
    if (sip) {
        if (sip->sip_to && sip->sip_to->a_tag)
            r.to_tag = cstr(sip->sip_to->a_tag);
        if (sip->sip_contact && (sip->sip_contact->m_url->url_type == url_sip ||
                                 sip->sip_contact->m_url->url_type == url_sips) &&
            url_e(contact, sizeof contact, sip->sip_contact->m_url) > 0)
            r.contact = cstr(contact);
        for (sip_record_route_t const *rr = sip->sip_record_route;
             rr && r.nroute < SIPMSG_MAX_ROUTE; rr = rr->r_next) {
            if (sip_header_e(routes[r.nroute], sizeof routes[0], (sip_header_t const *)rr, 0) <= 0)
                break;
            r.route[r.nroute] = header_value(routes[r.nroute]);
            r.nroute++;
        }
        r.expires = sip->sip_expires ? (long)sip->sip_expires->ex_delta : -1;
        r.min_expires = sip->sip_min_expires ? (long)sip->sip_min_expires->me_delta : -1;
        r.retry_after = sip->sip_retry_after ? (long)sip->sip_retry_after->af_delta : -1;
        r.auth = status == 401 ? (msg_auth_t const *)sip->sip_www_authenticate
                               : (msg_auth_t const *)sip->sip_proxy_authenticate;
    }
    /* The response belongs to the transaction: everything above is copied or used
     * before it goes. */
    response_in(h, &r); /* may free h */
    nta_outgoing_destroy(orq);
    return 0;
}

/* A response on the UDP port: matched to the SUBSCRIBE in flight by Call-ID, branch
 * and CSeq; a retransmitted final answer finds none and is ignored. */
static void response_udp(struct sipua *ua, const struct sip_msg *m, const struct peer *src)
{
    struct sipua_handle *h;
    uint64_t callid, branch;
    struct utx *x;
    struct resp r = {.status = m->status, .expires = -1, .min_expires = -1, .retry_after = -1};
    char phrase[128];

    if (!parse_hex16(m->call_id, &callid) || !(h = table_find(ua, callid))) {
        refuse(ua, R_STRAY_RESPONSE, "response", src, "no request of ours");
        return;
    }
    x = h->utx;
    if (!x || m->via_branch.n != 23 || strncmp(m->via_branch.p, "z9hG4bK", 7) != 0 ||
        !parse_hex16((struct sip_str){m->via_branch.p + 7, 16}, &branch) || branch != x->branch ||
        m->cseq != h->lcseq || !sip_str_eq(m->cseq_method, "SUBSCRIBE"))
        return; /* an answer retransmitted after its transaction ended */
    if (m->status < 200) {
        /* Timer E continues at T2 (RFC 3261 17.1.2.2). */
        x->provisional = true;
        x->interval_ms = SIP_T2_MS;
        return;
    }
    utx_free(ua, x);
    snprintf(phrase, sizeof phrase, "%.*s", (int)m->phrase.n, m->phrase.p ? m->phrase.p : "");
    r.phrase = phrase;
    r.src = *src;
    r.to_tag = m->to_tag;
    r.contact = m->contact;
    r.nroute = m->nroute;
    memcpy(r.route, m->route, sizeof m->route[0] * (size_t)m->nroute);
    r.expires = m->expires;
    r.min_expires = m->min_expires;
    r.retry_after = m->retry_after_hdr;
    if (m->status == 401) {
        r.auth_raw = m->www_auth;
        r.nauth_raw = m->nwww_auth;
    } else if (m->status == 407) {
        r.auth_raw = m->proxy_auth;
        r.nauth_raw = m->nproxy_auth;
    }
    response_in(h, &r); /* may free h */
}

/* An ICMP error for a datagram sent to `to`: every SUBSCRIBE in flight there fails now
 * (503, as nta reports a refused connection) instead of at its timeout. */
static void on_udp_unreachable(void *arg, const struct sockaddr *to, socklen_t tolen, int err)
{
    struct sipua *ua = arg;
    char phrase[96];
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0;

    if (tolen != ua->destlen || memcmp(to, &ua->dest, tolen) != 0)
        return;
    snprintf(phrase, sizeof phrase, "Destination unreachable (%s)", strerror(err));
    /* What is in flight now, by Call-ID: answering one may free or start others. */
    for (struct utx *x = ua->utx_head; x; x = x->next) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            ids = xrealloc(ids, cap * sizeof *ids);
        }
        ids[n++] = x->h->callid;
    }
    for (size_t i = 0; i < n; i++) {
        struct sipua_handle *h = table_find(ua, ids[i]);
        struct resp r = {.status = 503, .phrase = phrase, .expires = -1, .min_expires = -1,
                         .retry_after = -1};

        if (!h || !h->utx)
            continue;
        utx_free(ua, h->utx);
        response_in(h, &r); /* may free h */
    }
    free(ids);
}

/* ---- requests we receive ------------------------------------------------------------ */

/* Who may send a NOTIFY in h's dialog: its own peer; before the dialog has one, the
 * address [sip] pbx resolves to; and the listed notifiers. */
static bool may_notify(const struct sipua *ua, const struct sipua_handle *h,
                       const struct peer *src)
{
    if (h->peer.family) {
        if (same_peer(&h->peer, src))
            return true;
    } else {
        for (int i = 0; i < ua->npbx; i++) {
            if (same_peer(&ua->pbx[i], src))
                return true;
        }
    }
    for (int i = 0; i < ua->nnotifiers; i++) {
        if (same_addr(&ua->notifiers[i], src) &&
            (!ua->notifiers[i].port || ua->notifiers[i].port == src->port))
            return true;
    }
    return false;
}

static char *str_dup(struct sip_str s)
{
    return xstrndup(s.p ? s.p : "", s.n);
}

/* A NOTIFY: matched to a dialog, checked, applied. Returns the status to answer. */
static int notify_in(struct sipua *ua, const struct sip_msg *m, const struct peer *src,
                     bool body_copy, int64_t received_us, const char **phrase)
{
    struct sipua_handle *h;
    uint64_t callid, ltag;
    struct sipua_notify n = {.expires = -1, .retry_after = -1};
    char ctype[512], substate[64], reason[64], *body = NULL;
    char who[96];

    *phrase = "OK";
    if (!parse_hex16(m->call_id, &callid) || !(h = table_find(ua, callid)) ||
        !parse_hex16(m->to_tag, &ltag) || ltag != h->ltag ||
        (h->rtag && (!m->from_tag.p || strlen(h->rtag) != m->from_tag.n ||
                     memcmp(h->rtag, m->from_tag.p, m->from_tag.n) != 0))) {
        if (!src_allowed(ua, src)) {
            refuse(ua, R_RATE_LIMITED, "NOTIFY", src, "out-of-dialog requests over the limit");
            return 0;
        }
        refuse(ua, R_UNKNOWN_DIALOG, "NOTIFY", src, "no subscription of ours");
        *phrase = "Subscription Does Not Exist";
        return 481;
    }
    if (!sip_str_eq(m->event, h_event(h))) {
        refuse(ua, R_BAD_EVENT, "NOTIFY", src, "event package differs from the subscription's");
        *phrase = "Bad Event";
        return 489;
    }
    if (!may_notify(ua, h, src)) {
        char detail[256];
        snprintf(detail, sizeof detail, "aor %s, dialog established with %s", h_aor(h),
                 h->peer.family ? peer_str(&h->peer, who, sizeof who) : "the pbx");
        refuse(ua, R_WRONG_SOURCE, "NOTIFY", src, detail);
        *phrase = "Forbidden";
        return 403;
    }
    if (h->have_rcseq) {
        if (m->cseq == h->rcseq)
            return 200; /* a retransmission: answered again, applied once */
        if (m->cseq < h->rcseq) {
            refuse(ua, R_OUT_OF_ORDER, "NOTIFY", src, "CSeq lower than the last");
            *phrase = "Server Internal Error";
            return 500; /* RFC 3261 12.2.2 */
        }
    }
    h->rcseq = m->cseq;
    h->have_rcseq = true;
    if (!h->rtag && m->from_tag.p) {
        /* The NOTIFY came before the 2xx: it creates the dialog (RFC 6665 4.1.2.4), its
         * Record-Route in order is the route set. */
        h->rtag = str_dup(m->from_tag);
        set_route(h, m->route, m->nroute, false);
        h->peer = *src;
        h->established = true;
    }
    if (m->contact.p)
        set_target(h, m->contact.p, m->contact.n);
    n.received_us = received_us;
    if (m->content_type.p) {
        snprintf(ctype, sizeof ctype, "%.*s", (int)m->content_type.n, m->content_type.p);
        n.content_type = ctype;
    }
    if (m->body.p) {
        /* Parsers want a NUL after the body: sipmsg_parse wrote one; a body that came
         * through nta (TCP, TLS) is copied. The copy is of len bytes, NULs included. */
        if (body_copy) {
            body = xmalloc(m->body.n + 1);
            memcpy(body, m->body.p, m->body.n);
            body[m->body.n] = '\0';
            n.body = body;
        } else {
            n.body = m->body.p;
        }
        n.len = m->body.n;
    }
    if (m->substate.p) {
        snprintf(substate, sizeof substate, "%.*s", (int)m->substate.n, m->substate.p);
        str_lower(substate);
        n.substate = substate;
    }
    if (m->reason.p) {
        snprintf(reason, sizeof reason, "%.*s", (int)m->reason.n, m->reason.p);
        str_lower(reason);
        n.reason = reason;
    }
    n.expires = m->sub_expires;
    n.retry_after = m->retry_after;
    if (n.substate && strcmp(n.substate, "terminated") == 0) {
        h->terminated = true;
        tq_cancel(ua->tq, &h->timer);
    } else if (n.expires > 0 && h->expires_at &&
               clock_mono_ms() + n.expires * 1000 < h->expires_at) {
        /* The notifier shortened it. Below [sip] min_expires only a real cut counts (a
         * short grant, let lapse, as subscription.c sees it too): the time left runs a
         * transit's worth behind ours in every NOTIFY, and a grant near the floor must
         * not lose its refresh to that. */
        if (n.expires >= ua->min_expires ||
            expiry_notify_shortens(n.expires, ua->min_expires, clock_mono_ms(), h->expires_at))
            set_refresh(h, n.expires);
    } else if (n.expires > 0 && !h->expires_at) {
        set_refresh(h, n.expires);
    }
    if (h_owner(h) && !ua->stopping)
        ua->ops.on_notify(h_owner(h), &n); /* may free h */
    free(body);
    return 200;
}

/* Any incoming request: the status to answer (0: none), phrase and extra headers. */
static int request_in(struct sipua *ua, const struct sip_msg *m, const struct peer *src,
                      bool body_copy, const char **phrase, const char **extra)
{
    static const char allow[] = "Allow: NOTIFY, OPTIONS\r\n";
    const char *method = sipmsg_method_name(m->method);

    *extra = NULL;
    if (m->method == SIP_M_NOTIFY)
        return notify_in(ua, m, src, body_copy, clock_wall_us(), phrase);
    if (m->method == SIP_M_ACK)
        return 0;
    if (!src_allowed(ua, src)) {
        refuse(ua, R_RATE_LIMITED, method[0] ? method : "other", src,
               "out-of-dialog requests over the limit");
        return 0;
    }
    switch (m->method) {
    case SIP_M_OPTIONS:
        *phrase = "OK";
        *extra = "Allow: NOTIFY, OPTIONS\r\n"
                 "Accept: application/dialog-info+xml, application/pidf+xml, "
                 "application/reginfo+xml, multipart/related, application/rlmi+xml\r\n";
        return 200;
    case SIP_M_CANCEL:
    case SIP_M_BYE:
    case SIP_M_INFO:
    case SIP_M_UPDATE:
    case SIP_M_PRACK:
        refuse(ua, R_UNKNOWN_DIALOG, method, src, "no such dialog or transaction");
        *phrase = "Call/Transaction Does Not Exist";
        return 481;
    default:
        refuse(ua, R_NOT_ALLOWED, method[0] ? method : "other", src,
               "sipbridge serves NOTIFY and OPTIONS only");
        *phrase = "Method Not Allowed";
        *extra = allow;
        return 405;
    }
}

void sipua_input(struct sipua *ua, char *buf, size_t len, const struct sockaddr *from,
                 socklen_t fromlen)
{
    struct sip_msg m;
    struct peer src;
    const char *err, *phrase = "OK", *extra = NULL;
    char out[4096], ip[INET6_ADDRSTRLEN];
    int status;
    size_t n;
    struct sockaddr_storage to;

    peer_from_sockaddr(&src, TP_UDP, from);
    if (!src.family)
        return;
    if (sipmsg_parse(buf, len, &m, &err) < 0) {
        if (strcmp(err, "empty") != 0) /* keepalives are only that */
            refuse(ua, R_MALFORMED, "?", &src, err);
        return;
    }
    if (!m.request) {
        response_udp(ua, &m, &src);
        return;
    }
    status = request_in(ua, &m, &src, false, &phrase, &extra);
    if (!status)
        return;
    peer_ip(&src, ip, sizeof ip);
    n = sipmsg_response(&m, status, phrase, ua->stateless_tag, ip, src.port, extra, out,
                        sizeof out);
    if (!n || fromlen > sizeof to)
        return;
    memcpy(&to, from, fromlen);
    if (to.ss_family == AF_INET)
        ((struct sockaddr_in *)&to)->sin_port = htons((uint16_t)sipmsg_response_port(&m, src.port));
    else
        ((struct sockaddr_in6 *)&to)->sin6_port =
            htons((uint16_t)sipmsg_response_port(&m, src.port));
    (void)sipudp_send(ua->udp, out, n, (struct sockaddr *)&to, fromlen);
}


/* A request nta parsed (TCP, TLS, or the SUBSCRIBEs' UDP port): the same handling as
 * the fast path, answered through nta without a transaction. */
static int on_stateless(struct sipua *ua, nta_agent_t *agent, msg_t *msg, sip_t *sip)
{
    struct sip_msg m;
    struct peer src;
    const char *phrase = "OK", *extra = NULL;
    char ctype[512], contact[1024], routes[SIPMSG_MAX_ROUTE][512];
    int status;

    memset(&m, 0, sizeof m);
    peer_of_msg(ua, msg, &src);
    if (!sip || !sip->sip_request || !sip->sip_call_id || !sip->sip_cseq || !sip->sip_from ||
        !sip->sip_to) {
        refuse(ua, R_MALFORMED, "?", &src, "incomplete request");
        msg_destroy(msg);
        return 0;
    }
    m.request = true;
    m.method_name = cstr(sip->sip_request->rq_method_name);
    for (int i = 1; i < SIP_M__COUNT; i++) {
        if (strcmp(sipmsg_method_name((enum sipmsg_method)i), sip->sip_request->rq_method_name) == 0)
            m.method = (enum sipmsg_method)i;
    }
    m.call_id = cstr(sip->sip_call_id->i_id);
    m.from_tag = cstr(sip->sip_from->a_tag);
    m.to_tag = cstr(sip->sip_to->a_tag);
    m.cseq = sip->sip_cseq->cs_seq;
    if (sip->sip_event)
        m.event = cstr(sip->sip_event->o_type);
    m.sub_expires = m.retry_after = -1;
    if (sip->sip_subscription_state) {
        sip_subscription_state_t const *ss = sip->sip_subscription_state;
        const char *ra = ss->ss_params ? msg_params_find(ss->ss_params, "retry-after=") : NULL;
        m.substate = cstr(ss->ss_substate);
        m.reason = cstr(ss->ss_reason);
        m.sub_expires = ss->ss_expires ? sip_str_long(cstr(ss->ss_expires), 1L << 30) : -1;
        m.retry_after = ra ? sip_str_long(cstr(ra), 1L << 30) : -1;
    }
    if (sip->sip_content_type && sip->sip_content_type->c_type) {
        size_t used = (size_t)snprintf(ctype, sizeof ctype, "%s", sip->sip_content_type->c_type);
        for (const char *const *p = sip->sip_content_type->c_params; p && *p; p++) {
            if (used < sizeof ctype)
                used += (size_t)snprintf(ctype + used, sizeof ctype - used, ";%s", *p);
        }
        m.content_type = cstr(ctype);
    }
    if (sip->sip_contact && (sip->sip_contact->m_url->url_type == url_sip ||
                             sip->sip_contact->m_url->url_type == url_sips) &&
        url_e(contact, sizeof contact, sip->sip_contact->m_url) > 0)
        m.contact = cstr(contact);
    for (sip_record_route_t const *r = sip->sip_record_route; r && m.nroute < SIPMSG_MAX_ROUTE;
         r = r->r_next) {
        if (sip_header_e(routes[m.nroute], sizeof routes[0], (sip_header_t const *)r, 0) <= 0)
            break;
        m.route[m.nroute] = header_value(routes[m.nroute]);
        m.nroute++;
    }
    if (sip->sip_payload && sip->sip_payload->pl_len)
        m.body = (struct sip_str){sip->sip_payload->pl_data, sip->sip_payload->pl_len};
    status = request_in(ua, &m, &src, true, &phrase, &extra);
    if (!status) {
        msg_destroy(msg);
        return 0;
    }
    nta_msg_treply(agent, msg, status, phrase,
                   TAG_IF(extra && status == 405, SIPTAG_ALLOW_STR("NOTIFY, OPTIONS")),
                   TAG_IF(extra && status == 200, SIPTAG_ALLOW_STR("NOTIFY, OPTIONS")),
                   TAG_END());
    return 0;
}

/* ---- set-up ------------------------------------------------------------------------- */

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

/* A numeric "host[:port]" (IPv6 in brackets) into p (port 0: any). */
static int parse_addr(const char *s, enum tp tp, struct peer *p)
{
    char host[128];
    const char *port = NULL;
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST}, *ai = NULL;
    long pv = 0;

    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || (size_t)(rb - s - 1) >= sizeof host)
            return -1;
        memcpy(host, s + 1, (size_t)(rb - s - 1));
        host[rb - s - 1] = '\0';
        if (rb[1] == ':')
            port = rb + 2;
        else if (rb[1])
            return -1;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':'))
            colon = NULL; /* a bare IPv6 address */
        snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - s) : (int)strlen(s), s);
        if (colon)
            port = colon + 1;
    }
    if (port && str_parse_long(port, 1, 65535, &pv) < 0)
        return -1;
    if (getaddrinfo(host, NULL, &hints, &ai) != 0)
        return -1;
    peer_from_sockaddr(p, tp, ai->ai_addr);
    p->port = (uint16_t)pv;
    freeaddrinfo(ai);
    return 0;
}

static void set_notifiers(struct sipua *ua, const char *list)
{
    char *copy = xstrdup(list ? list : ""), *items[MAX_NOTIFIERS];
    int n = str_split_list(copy, items, MAX_NOTIFIERS);

    ua->nnotifiers = 0;
    for (int i = 0; i < n; i++) {
        if (parse_addr(items[i], TP_UDP, &ua->notifiers[ua->nnotifiers]) == 0)
            ua->nnotifiers++;
        else
            log_warn("sip", "event=notifier_ignored value=%s reason=\"not a numeric "
                            "address[:port]\"",
                     log_q(items[i]));
    }
    free(copy);
}

/* Where SUBSCRIBEs go ([sip] pbx): its transport, host and port; and the addresses the
 * host has now, for NOTIFYs that arrive before a dialog's 2xx and, over UDP, as the
 * destination (have_dest() tries again later if the lookup fails now). */
static void resolve_pbx(struct sipua *ua, const char *pbx)
{
    su_home_t home[1] = {SU_HOME_INIT(home)};
    url_t *url = url_make(home, pbx);
    char transport[16] = "";
    struct addrinfo hints = {0}, *ai = NULL;

    ua->sub_tp = TP_UDP;
    ua->npbx = 0;
    if (!url || !url->url_host)
        goto out;
    if (url->url_params && url_param(url->url_params, "transport", transport, sizeof transport)) {
        if (strcasecmp(transport, "tcp") == 0)
            ua->sub_tp = TP_TCP;
        else if (strcasecmp(transport, "tls") == 0)
            ua->sub_tp = TP_TLS;
    }
    if (url->url_type == url_sips)
        ua->sub_tp = TP_TLS;
    ua->pbx_host = xstrdup(url->url_host);
    ua->pbx_port = xstrdup(url->url_port ? url->url_port : ua->sub_tp == TP_TLS ? "5061"
                                                                              : "5060");
    hints.ai_socktype = ua->sub_tp == TP_UDP ? SOCK_DGRAM : SOCK_STREAM;
    if (getaddrinfo(ua->pbx_host, ua->pbx_port, &hints, &ai) != 0 || !ai)
        goto out;
    for (struct addrinfo *a = ai; a && ua->npbx < PBX_ADDRS; a = a->ai_next)
        peer_from_sockaddr(&ua->pbx[ua->npbx++], ua->sub_tp, a->ai_addr);
    if (ua->sub_tp == TP_UDP && ai->ai_addrlen <= sizeof ua->dest) {
        memcpy(&ua->dest, ai->ai_addr, ai->ai_addrlen);
        ua->destlen = (socklen_t)ai->ai_addrlen;
    }
    freeaddrinfo(ai);
out:
    su_home_deinit(home);
}

/* The address this host sends from toward dest: what Contact and Via must say when
 * the listen address is a wildcard (0.0.0.0, ::). No packet is sent. */
static bool local_toward(const struct sockaddr_storage *dest, socklen_t len, char *out,
                         size_t outlen)
{
    struct sockaddr_storage me;
    socklen_t ml = sizeof me;
    int fd;
    bool ok = false;

    if (!len)
        return false;
    fd = socket(dest->ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    if (connect(fd, (const struct sockaddr *)dest, len) == 0 &&
        getsockname(fd, (struct sockaddr *)&me, &ml) == 0)
        ok = inet_ntop(me.ss_family,
                       me.ss_family == AF_INET ? (void *)&((struct sockaddr_in *)&me)->sin_addr
                                               : (void *)&((struct sockaddr_in6 *)&me)->sin6_addr,
                       out, (socklen_t)outlen) != NULL;
    close(fd);
    return ok;
}

/* "sip:H:P;transport=udp" style listen URLs into host and port. */
static int url_hostport(const char *u, char *host, size_t hl, int *port)
{
    su_home_t home[1] = {SU_HOME_INIT(home)};
    url_t *url = url_make(home, u);
    int rc = -1;

    if (url && url->url_host && url->url_port) {
        snprintf(host, hl, "%s", url->url_host);
        *port = atoi(url->url_port);
        rc = 0;
    }
    su_home_deinit(home);
    return rc;
}

static void on_udp_datagram(void *arg, char *buf, size_t len, const struct sockaddr *from,
                            socklen_t fromlen)
{
    sipua_input(arg, buf, len, from, fromlen);
}

static void on_udp_drops(void *arg, uint32_t n)
{
    struct sipua *ua = arg;

    metric_add(m_drops, NULL, n);
    log_warn("sip", "event=udp_drops count=%u total=%llu reason=\"receive buffer full: the "
                    "loop fell behind a burst\"",
             n, (unsigned long long)sipudp_drops(ua->udp));
    if (ua->drop_fn)
        ua->drop_fn(ua->drop_arg, n);
}

static const struct sipudp_ops udp_ops = {
    .on_datagram = on_udp_datagram,
    .on_drops = on_udp_drops,
    .on_unreachable = on_udp_unreachable,
};

void sipua_set_drop_hook(struct sipua *ua, void (*fn)(void *arg, uint32_t n), void *arg)
{
    ua->drop_fn = fn;
    ua->drop_arg = arg;
}

/* The largest message nta takes over TCP or TLS: a resource list's NOTIFY may be 64
 * times [sip] max_body (bridge.c), and nta's own default (2 MB) refused larger ones with
 * 413 before offhook could say so. Over UDP a datagram bounds it anyway. */
static usize_t stream_max(const struct offhook_config *cfg)
{
    return (usize_t)cfg->sip_max_body * 64 + 65536;
}

void sipua_update(struct sipua *ua, const struct offhook_config *cfg)
{
    if (ua->nta)
        nta_agent_set_params(ua->nta, NTATAG_MAXSIZE(stream_max(cfg)), TAG_END());
    set_credentials(ua, cfg);
    set_notifiers(ua, cfg->sip_notifiers);
    ua->subscribe_rate = cfg->sip_subscribe_rate;
    /* Never above what we ask for: a floor over [sip] expires would let every grant lapse. */
    ua->min_expires = cfg->sip_min_expires < cfg->sip_expires ? cfg->sip_min_expires
                                                              : cfg->sip_expires;
}

struct sipua *sipua_new(su_root_t *root, struct event_base *base, struct timerq *tq,
                        const struct offhook_config *cfg, const struct sipua_ops *ops,
                        void (*kick_fn)(void *), void *kick_arg)
{
    struct sipua *ua = xcalloc(1, sizeof *ua);
    char from[512], contact[400] = "", host[256];
    int port = 0;

    ua->root = root;
    ua->tq = tq;
    ua->ops = *ops;
    ua->kick = kick_fn;
    ua->kick_arg = kick_arg;
    strmap_init(&ua->interned);
    ua->src = xcalloc(SRC_SLOTS, sizeof *ua->src);
    ratelimit_bucket_init(&ua->all, all_limit.burst, clock_mono_ms());
    hex16(ua->stateless_tag, random64());
    ua->stateless_tag[8] = '\0';
    snprintf(ua->user_agent, sizeof ua->user_agent, "offhook/%s", OFFHOOK_VERSION);
    sipua_update(ua, cfg);
    if (cfg->sip_from[0])
        snprintf(from, sizeof from, "%s", cfg->sip_from);
    else
        default_from(cfg, from, sizeof from);
    ua->from_uri = xstrdup(from);
    resolve_pbx(ua, cfg->sip_pbx);
    /* (void *)-1: Sofia's NONE, no transport yet (they are added below). */
    ua->nta = nta_agent_create(root, (url_string_t const *)(intptr_t)-1, on_stateless, ua,
                               NTATAG_DEFAULT_PROXY(cfg->sip_pbx),
                               NTATAG_UA(1),
                               NTATAG_CLIENT_RPORT(1),
                               /* Every client transaction stays (Timer F) with its
                                * messages; 8 s still absorbs four retransmissions. */
                               NTATAG_SIP_T1X64(SIP_T1X64_MS),
                               NTATAG_MAXSIZE(stream_max(cfg)),
                               TAG_END());
    if (!ua->nta)
        goto fail;
    for (int i = 0; i < cfg->sip_nlisten; i++) {
        const char *u = cfg->sip_listen_urls[i];
        bool tls = strncmp(u, "sips:", 5) == 0;
        char shown[256];

        if (url_hostport(u, host, sizeof host, &port) < 0)
            goto fail;
        /* Contact and Via name the address the PBX reaches us at, never a wildcard. */
        snprintf(shown, sizeof shown, "%s", host);
        if ((!strcmp(host, "0.0.0.0") || !strcmp(host, "::")) &&
            !local_toward(&ua->dest, ua->destlen, shown, sizeof shown))
            log_warn("sip", "event=wildcard_listen listen=%s reason=\"no address toward the "
                            "pbx known: Contact names the wildcard\"", log_q(u));
        if (tls) {
            ua->tls = true;
            log_info("sip", "event=tls dir=%s verify=%s", log_q(cfg->sip_tls_dir),
                     cfg->sip_tls_verify);
            if (nta_agent_add_tport(ua->nta, URL_STRING_MAKE(u), TPTAG_IDENT("sips"),
                                    /* Always our own directory: without it Sofia reads
                                     * $HOME/.sip/auth, and with no files checks nothing. */
                                    TPTAG_CERTIFICATE(cfg->sip_tls_dir),
                                    TPTAG_TLS_VERIFY_POLICY(tls_policy(cfg)), TAG_END()) < 0)
                goto fail;
            if (ua->sub_tp == TP_TLS)
                snprintf(contact, sizeof contact, strchr(shown, ':') ? "<sips:[%s]:%d>"
                                                                     : "<sips:%s:%d>",
                         shown, port);
            continue;
        }
        if (!strstr(u, "transport=udp")) {
            char url[320];
            snprintf(url, sizeof url, strchr(host, ':') ? "sip:[%s]:%d;transport=tcp"
                                                        : "sip:%s:%d;transport=tcp",
                     host, port);
            if (nta_agent_add_tport(ua->nta, URL_STRING_MAKE(url), TPTAG_IDENT("sip"),
                                    TAG_END()) < 0)
                goto fail;
            if (ua->sub_tp == TP_TCP)
                snprintf(contact, sizeof contact, strchr(shown, ':')
                                                      ? "<sip:[%s]:%d;transport=tcp>"
                                                      : "<sip:%s:%d;transport=tcp>",
                         shown, port);
        }
        if (!strstr(u, "transport=tcp")) {
            /* The UDP port is ours (sipudp.c): NOTIFYs in, SUBSCRIBEs out, their answers
             * in, all through one socket and one batch loop; nta never sees UDP. */
            ua->udp = sipudp_new(base, host, port, SIP_UDP_RMEM, &udp_ops, ua);
            if (!ua->udp)
                goto fail;
            snprintf(ua->via_udp, sizeof ua->via_udp,
                     strchr(shown, ':') ? "SIP/2.0/UDP [%s]:%d" : "SIP/2.0/UDP %s:%d", shown,
                     port);
            if (ua->sub_tp == TP_UDP)
                snprintf(contact, sizeof contact, strchr(shown, ':') ? "<sip:[%s]:%d>"
                                                                     : "<sip:%s:%d>",
                         shown, port);
        }
    }
    if (!contact[0] && cfg->sip_nlisten)
        goto fail;
    ua->contact = xstrdup(contact);
    log_info("sip", "event=listening listen=%s proxy=%s from=%s contact=%s",
             log_q(cfg->sip_listen), log_q(cfg->sip_pbx), log_q(from), log_q(ua->contact));
    return ua;
fail:
    log_err("sip", "event=bind_failed listen=%s reason=\"cannot open the SIP transports "
                   "(address in use, not local, or no listen address for the pbx's transport?)\"",
            log_q(cfg->sip_listen));
    sipua_free(ua);
    return NULL;
}

/* ---- subscriptions ------------------------------------------------------------------ */

struct sipua_handle *sipua_subscribe(struct sipua *ua, const char *aor, const char *event,
                                     const char *accept, long expires, bool eventlist,
                                     void *owner)
{
    struct sipua_handle *h = xcalloc(1, sizeof *h);

    h->ua = ua;
    h->owner_ = owner;
    (void)aor; /* the owner's, read through ops.names (h_aor) */
    (void)event;
    (void)accept;
    h->eventlist = eventlist;
    do {
        h->callid = random64();
    } while (table_find(ua, h->callid));
    h->ltag = random64();
    h->lcseq = (uint32_t)(random64() & 0xffff); /* RFC 3261 8.1.1.5: below 2^31 */
    table_add(ua, h);
    if (ua->stopping)
        return h; /* stopping: nothing new goes out; the record goes with its owner */
    h->auth_tries = 0;
    if (send_subscribe(h, (uint32_t)(expires > 0 ? expires : 0), NULL) < 0) {
        handle_free(h);
        return NULL;
    }
    return h;
}

void sipua_refresh(struct sipua_handle *h, long expires)
{
    if (!h || !h->established || h->terminated || in_flight(h) || h->ua->stopping)
        return;
    /* Sent from the timer, not from here: asked from inside a NOTIFY's callback, it
     * must not leave before that NOTIFY's 200 (a notifier in the middle of a
     * transaction refuses a new request; sipp aborts the dialog). */
    h->asked = (uint32_t)(expires > 0 ? expires : 0);
    h->refresh_now = true;
    tq_arm(h->ua->tq, &h->timer, on_timer, 0);
}

void sipua_release(struct sipua_handle *h)
{
    struct sipua *ua;
    size_t la, le, lc;
    const char *aor, *event, *accept;

    if (!h)
        return;
    ua = h->ua;
    aor = h_aor(h);
    event = h_event(h);
    accept = h_accept(h);
    h->released = true;
    h->owned = NULL;
    tq_cancel(ua->tq, &h->timer);
    if (!h->established || h->terminated || h->unsubscribed || ua->stopping || lapsed(h)) {
        if (!(h->unsubscribed && in_flight(h) && ua->stopping))
            handle_free(h); /* else freed when its un-SUBSCRIBE is answered; names "" */
        return;
    }
    /* A live dialog: one SUBSCRIBE Expires: 0 (RFC 6665 4.1.2.3), challenges answered;
     * the record goes when it is answered. The owner's strings are copied for it. */
    la = strlen(aor) + 1;
    le = strlen(event) + 1;
    lc = strlen(accept) + 1;
    h->owned = xmalloc(la + le + lc);
    memcpy(h->owned, aor, la);
    memcpy(h->owned + la, event, le);
    memcpy(h->owned + la + le, accept, lc);
    stop_request(h);
    h->unsubscribed = true;
    h->auth_tries = 0;
    if (send_subscribe(h, 0, NULL) < 0)
        handle_free(h);
}

/* ---- a clean stop ------------------------------------------------------------------- */

static void stop_finish(struct sipua *ua)
{
    if (ua->stop_reported)
        return;
    ua->stop_reported = true;
    log_notice("sip", "event=unsubscribed sent=%u answered=%u not_sent=%u took_ms=%lld",
               ua->unsub_sent, ua->unsub_answered,
               ua->stop_all_sent ? 0 : (unsigned)ua->count, /* what is left unsent */
               (long long)(clock_mono_ms() - ua->stop_started));
    if (ua->shutdown_done)
        ua->shutdown_done(ua->shutdown_arg);
}

/* Sends the un-SUBSCRIBEs this tick allows, walking the dialog table; then waits for
 * their answers, never past the bound. */
static void on_stop_tick(struct tq_timer *t)
{
    struct sipua *ua = (struct sipua *)((char *)t - offsetof(struct sipua, stop_timer));
    int64_t now = clock_mono_ms();
    double rate = (double)ua->subscribe_rate * 10;

    if (rate < UNSUB_MIN_RATE)
        rate = UNSUB_MIN_RATE;
    if (rate > UNSUB_MAX_RATE)
        rate = UNSUB_MAX_RATE;
    ua->stop_credit += rate * UNSUB_TICK_MS / 1000.0;
    while (!ua->stop_all_sent && ua->stop_credit >= 1) {
        if (ua->stop_bucket >= ua->nbuckets) {
            ua->stop_all_sent = true;
            break;
        }
        for (struct sipua_handle *h = ua->buckets[ua->stop_bucket]; h; h = h->hnext) {
            if (!h->established || h->terminated || h->unsubscribed || lapsed(h))
                continue;
            stop_request(h);
            h->unsubscribed = true;
            tq_cancel(ua->tq, &h->timer);
            if (send_subscribe(h, 0, NULL) == 0) {
                /* Its answer is only counted (response_in, stopping). */
                ua->unsub_sent++;
                ua->unsub_outstanding += in_flight(h);
            }
            ua->stop_credit -= 1;
        }
        ua->stop_bucket++;
    }
    if (now >= ua->stop_deadline || (ua->stop_all_sent && ua->unsub_outstanding == 0)) {
        stop_finish(ua);
        return;
    }
    tq_arm(ua->tq, &ua->stop_timer, on_stop_tick, UNSUB_TICK_MS);
}

void sipua_shutdown(struct sipua *ua, void (*done)(void *arg), void *arg)
{
    if (ua->stopping)
        return;
    ua->stopping = true;
    ua->shutdown_done = done;
    ua->shutdown_arg = arg;
    ua->stop_started = clock_mono_ms();
    ua->stop_deadline = ua->stop_started + UNSUB_BOUND_MS;
    tq_arm(ua->tq, &ua->stop_timer, on_stop_tick, 0);
}

bool sipua_tls(const struct sipua *ua)
{
    return ua->tls;
}

void sipua_free(struct sipua *ua)
{
    size_t pos = 0;
    const char *k;
    void *v;

    if (!ua)
        return;
    tq_cancel(ua->tq, &ua->stop_timer);
    for (uint32_t i = 0; i < ua->nbuckets; i++) {
        for (struct sipua_handle *h = ua->buckets[i], *next; h; h = next) {
            next = h->hnext;
            if (!h->released) {
                h->released = true;
                h->owned = NULL;
            }
            handle_free(h);
        }
    }
    if (ua->nta)
        nta_agent_destroy(ua->nta);
    sipudp_free(ua->udp);
    while (strmap_next(&ua->interned, &pos, &k, &v))
        free(v);
    strmap_free(&ua->interned);
    free(ua->buckets);
    free(ua->src);
    free(ua->from_uri);
    free(ua->contact);
    free(ua->pbx_host);
    free(ua->pbx_port);
    for (struct utx *x = ua->utx_head; x; x = ua->utx_head)
        utx_free(ua, x);
    clear_credentials(ua);
    free(ua);
}
