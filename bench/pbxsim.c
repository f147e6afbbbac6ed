/* pbxsim: a cheap PBX for offhook's benchmarks. It answers every SUBSCRIBE (Event: dialog)
 * over UDP with 200, keeps each subscription dialog, sends the initial full-state NOTIFY,
 * answers refreshes and un-SUBSCRIBEs, and drives call-state changes at a fixed rate
 * (idle -> ringing -> on the phone -> idle, Asterisk's body shapes), logging each change
 * with its send time so latency to the XMPP side can be joined afterwards.
 *
 * One process, one socket, one libevent loop: it costs far less per NOTIFY than sipp,
 * which matters when the figure being measured is offhook's own cost per event.
 *
 * Call state belongs to the extension, so every subscription to one extension (a
 * subscriber that restarted and subscribed again, before its old dialog was dropped)
 * gets the same NOTIFYs. Each NOTIFY is retransmitted until answered (RFC 3261 timers
 * E and F; only the latest of a dialog, which carries the full state). It behaves as a
 * notifier must when things go wrong: an
 * in-dialog SUBSCRIBE for a dialog it does not know (it restarted) gets 481, a 481
 * answer to one of its NOTIFYs drops that dialog, OPTIONS gets 200. The fault-injection
 * tests drive it through a control socket (--control PORT, UDP on 127.0.0.1, one
 * command per datagram, answered in one datagram):
 *
 *   set EXT STATE     STATE: idle, ringing, on_call, on_hold -> "ok N" (N dialogs notified)
 *   get               -> "EXT STATE DIALOGS" per line, every extension seen (as many
 *                        as fit in one datagram)
 *   get EXT           -> "EXT STATE DIALOGS" for that one ("none 0" if never seen)
 *   dialog EXT        -> the live dialogs of EXT, one per line: "call-id=... notifier-tag=...
 *                        cseq=N from=<NOTIFY From without tag> to=<NOTIFY To, tagged>"
 *                        (what a forger on the path would learn; the hostile tests use it)
 *   rate R            -> "ok": drive R changes/s from now on (the saturation steps)
 *   peers             -> "EXT PORT..." per line: the source port of each of its dialogs'
 *                        subscribers (which sipbridge holds it, when several share users)
 *   stats             -> the counters line
 *
 * With --expire, a subscription not refreshed within the Expires it was granted ends as
 * RFC 6665 4.2.2 has a notifier end it: NOTIFY terminated;reason=timeout, dialog dropped
 * (with --expires 1, the PBX that grants one second and means it).
 *
 * With --goodbye, SIGTERM ends every live subscription with Subscription-State:
 * terminated;reason=deactivated (RFC 6665: "subscribe again") before exiting.
 *
 * With --tcp it also listens on TCP at the same port (messages framed by Content-Length;
 * answers and NOTIFYs go back on the connection the SUBSCRIBE came on). With --list NAME
 * --list-size N --list-ext0 E it serves an RFC 4662 resource list: a SUBSCRIBE to
 * sip:NAME@... gets a full-state list NOTIFY (multipart/related: the RLMI document and
 * one dialog-info body per resource, extensions E..E+N-1) and every refresh another; each
 * change of a resource goes out as a partial list NOTIFY naming it alone. Driving then
 * picks among the list's resources. A full state of 100,000 resources is ~40 MB: use TCP.
 *
 *   pbxsim --port P [--rate R] [--active K] [--start-after N] [--duration S]
 *          [--expires E] [--events-log FILE] [--stats-every S] [--control PORT]
 *          [--goodbye] [--expire] [--trace FILE] [--tcp] [--list NAME --list-size N --list-ext0 E]
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <poll.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "sbuf.h"
#include "strmap.h"
#include "strutil.h"

#define MAX_MSG 65536

/* The drive cycles through the first CS_CYCLE states; on_hold only by command. */
enum cstate { CS_IDLE, CS_RINGING, CS_ONCALL, CS_CYCLE, CS_ONHOLD = CS_CYCLE, CS__N };
static const char *const cstate_name[] = {"idle", "ringing", "on_call", "on_hold"};

struct dlg;

/* Where a message goes back: a UDP address, or a TCP connection (fd >= 0). */
struct peer {
    struct sockaddr_in addr;
    int fd;
};

struct ext {
    char name[64];
    enum cstate st;
    struct dlg **dlgs;   /* live subscriptions to this extension */
    size_t ndlgs, cap;
    bool in_list;        /* a resource of the --list */
    unsigned version;    /* its dialog-info version in list NOTIFYs */
};

struct dlg {
    char *callid;
    char *remote;        /* From of the SUBSCRIBE (with its tag): our To */
    char *local;         /* To of the SUBSCRIBE: our From (plus tag) */
    char *contact;       /* where NOTIFYs go (request URI) */
    struct ext *ext;     /* the extension (user part of the AOR) */
    char tag[24];
    struct peer peer;
    unsigned cseq;
    unsigned version;    /* of its dialog-info documents, or of its RLMI list */
    bool list;           /* a resource-list subscription (--list) */
    bool active;         /* live: gets NOTIFYs, may be driven */
    bool keep;           /* a subscription (not a fetch): its NOTIFYs are retransmitted */
    int64_t expire_us;   /* --expire: when its grant runs out unless refreshed */
    /* The latest NOTIFY until it is answered (RFC 3261 17.1.2 over UDP: Timer E doubles
     * from T1 to T2, Timer F gives up after 64*T1). A newer NOTIFY replaces it. */
    char *pending;
    size_t pending_len;
    unsigned pending_cseq;
    int64_t next_us, giveup_us, interval_us;
    struct dlg *pnext, *pprev;
};

static struct {
    int fd;
    int port;
    struct event_base *base;
    struct strmap dialogs;   /* call-id -> struct dlg* */
    struct strmap exts;      /* extension -> struct ext* */
    struct dlg *pending;     /* dialogs with an unanswered NOTIFY */
    int ctl_fd;
    bool goodbye;
    bool expire;             /* --expire: end subscriptions whose grant ran out */
    struct dlg **list;       /* in arrival order, for picking */
    size_t nlist, cap;
    double rate;
    size_t active_max;       /* drive only the first K dialogs (0 = all) */
    size_t start_after;      /* start driving once this many dialogs exist */
    double duration;
    long expires;
    FILE *events_log;
    FILE *trace;             /* --trace: one line per message in and out */
    bool driving;
    double credit;
    int64_t drive_started_us, last_tick_us;
    uint64_t rng;
    /* counters */
    uint64_t subscribes, refreshes, unsubscribes, notifies, changes, ok200, other_rsp, bad;
    uint64_t unknown_dialog, dropped, options, fetches, retransmits, timeouts, expired;
    int64_t first_sub_us, nth_sub_us;
    double stats_every;
    bool tcp;                /* --tcp: a TCP listener on the same port */
    const char *list_name;   /* --list: the list URI's user part */
    size_t list_size;
    long list_ext0;
    struct dlg **lists;      /* live list subscriptions */
    size_t nlists, lists_cap;
} S = {.rate = 0, .expires = 3600, .stats_every = 5, .ctl_fd = -1};

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t rnd(void)
{
    uint64_t x = S.rng;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return S.rng = x;
}

/* Value of header name (or its compact form) in msg, trimmed, into out. */
static int header(const char *msg, const char *name, char compact, char *out, size_t len)
{
    size_t nl = strlen(name);
    const char *p = strstr(msg, "\r\n");

    while (p && p[2] != '\r') {
        const char *line = p + 2, *end = strstr(line, "\r\n"), *v;
        size_t vl;

        if (!end)
            return -1;
        if ((strncasecmp(line, name, nl) == 0 && (line[nl] == ':' || line[nl] == ' ')) ||
            (compact && tolower((unsigned char)line[0]) == compact &&
             (line[1] == ':' || line[1] == ' '))) {
            v = strchr(line, ':');
            if (!v || v > end)
                return -1;
            v++;
            while (*v == ' ' || *v == '\t')
                v++;
            vl = (size_t)(end - v);
            if (vl >= len)
                return -1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return 0;
        }
        p = end;
    }
    return -1;
}

static void trace(const char *dir, const char *msg)
{
    char callid[256] = "";

    if (!S.trace)
        return;
    header(msg, "Call-ID", 'i', callid, sizeof callid);
    fprintf(S.trace, "%lld %s %.*s call-id=%s\n", (long long)now_us(), dir,
            (int)strcspn(msg, "\r\n"), msg, callid);
}

/* Writes all of buf to a TCP connection, waiting while it is full (a bench tool: the
 * other end reads promptly; a 40 MB full-state list takes a moment). */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 1000);
            continue;
        }
        if (n <= 0) {
            S.bad++;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

static void send_to(const struct peer *to, const char *buf, size_t len)
{
    trace("out", buf);
    if (to->fd >= 0) {
        write_all(to->fd, buf, len);
        return;
    }
    if (sendto(S.fd, buf, len, 0, (const struct sockaddr *)&to->addr, sizeof to->addr) < 0)
        S.bad++;
}

static const char *ext_body(const struct ext *x, unsigned version, char *buf, size_t len)
{
    static const char *const dialog_attrs[] = {
        [CS_IDLE] = "", [CS_RINGING] = " direction=\"recipient\"", [CS_ONCALL] = "",
        [CS_ONHOLD] = ""};
    static const char *const dialog_state[] = {[CS_IDLE] = "terminated",
                                               [CS_RINGING] = "early",
                                               [CS_ONCALL] = "confirmed",
                                               [CS_ONHOLD] = "confirmed"};
    enum cstate st = x->st;
    int n = snprintf(buf, len,
                     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dialog-info xmlns=\"urn:ietf:"
                     "params:xml:ns:dialog-info\" version=\"%u\" state=\"full\" entity=\"sip:%s"
                     "@pbxsim\">\n",
                     version, x->name);

    n += snprintf(buf + n, len - (size_t)n, " <dialog id=\"%s\"%s>\n  <state>%s</state>\n",
                  x->name, dialog_attrs[st], dialog_state[st]);
    if (st != CS_IDLE)
        /* The other party, as Asterisk names it: offhook must not show it by default. */
        n += snprintf(buf + n, len - (size_t)n,
                      "  <remote><identity display=\"Caller %s\">sip:555%s@pbxsim</identity>"
                      "</remote>\n",
                      x->name, x->name);
    if (st == CS_ONHOLD)
        n += snprintf(buf + n, len - (size_t)n,
                      "  <local><target uri=\"sip:%s@pbxsim\"><param pname=\"+sip.rendering\" "
                      "pvalue=\"no\"/></target></local>\n",
                      x->name);
    snprintf(buf + n, len - (size_t)n, " </dialog>\n</dialog-info>\n");
    return buf;
}

static const char *body_for(const struct dlg *d, char *buf, size_t len)
{
    return ext_body(d->ext, d->version, buf, len);
}

#define T1_US 500000
#define T2_US 4000000

static void pending_clear(struct dlg *d)
{
    if (!d->pending)
        return;
    free(d->pending);
    d->pending = NULL;
    if (d->pprev)
        d->pprev->pnext = d->pnext;
    else
        S.pending = d->pnext;
    if (d->pnext)
        d->pnext->pprev = d->pprev;
    d->pnext = d->pprev = NULL;
}

static void pending_set(struct dlg *d, const char *msg, size_t len)
{
    int64_t now = now_us();

    pending_clear(d);
    d->pending = xmalloc(len);
    memcpy(d->pending, msg, len);
    d->pending_len = len;
    d->pending_cseq = d->cseq;
    d->interval_us = T1_US;
    d->next_us = now + T1_US;
    d->giveup_us = now + 64 * (int64_t)T1_US;
    d->pprev = NULL;
    d->pnext = S.pending;
    if (S.pending)
        S.pending->pprev = d;
    S.pending = d;
}

static void retransmit(evutil_socket_t fd, short what, void *arg)
{
    int64_t now = now_us();

    for (struct dlg *d = S.pending, *next; d; d = next) {
        next = d->pnext;
        if (now >= d->giveup_us) {
            S.timeouts++;
            pending_clear(d);
        } else if (now >= d->next_us) {
            S.retransmits++;
            send_to(&d->peer, d->pending, d->pending_len);
            d->interval_us = d->interval_us * 2 > T2_US ? T2_US : d->interval_us * 2;
            d->next_us = now + d->interval_us;
        }
    }
}

/* A list NOTIFY (RFC 4662) on list dialog d: multipart/related, the RLMI document
 * first, then one dialog-info body per resource named: every resource of the list (full
 * state), or only `one` (a partial update after its change). */
static void send_list_notify(struct dlg *d, const char *substate, const struct ext *one)
{
    struct sbuf body, msg;
    char part[2048];

    sbuf_init(&body);
    sbuf_init(&msg);
    d->version++;
    sbuf_printf(&body, "--b\r\nContent-Type: application/rlmi+xml\r\n"
                       "Content-ID: <root@pbxsim>\r\n\r\n"
                       "<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"sip:%s@pbxsim\" "
                       "version=\"%u\" fullState=\"%s\">",
                S.list_name, d->version, one ? "false" : "true");
    for (size_t i = 0; i < S.list_size; i++) {
        char name[32];
        struct ext *x;
        if (one) {
            if (i > 0)
                break;
            x = (struct ext *)one;
        } else {
            snprintf(name, sizeof name, "%ld", S.list_ext0 + (long)i);
            x = strmap_get(&S.exts, name);
        }
        sbuf_printf(&body, "<resource uri=\"sip:%s@pbxsim\"><instance id=\"i%s\" "
                           "state=\"active\" cid=\"%s@pbxsim\"/></resource>",
                    x->name, x->name, x->name);
    }
    sbuf_puts(&body, "</list>\r\n");
    for (size_t i = 0; i < S.list_size; i++) {
        char name[32];
        const struct ext *x = one;
        if (one) {
            if (i > 0)
                break;
        } else {
            snprintf(name, sizeof name, "%ld", S.list_ext0 + (long)i);
            x = strmap_get(&S.exts, name);
        }
        ext_body(x, x->version, part, sizeof part);
        sbuf_printf(&body, "--b\r\nContent-Type: application/dialog-info+xml\r\n"
                           "Content-ID: <%s@pbxsim>\r\n\r\n%s\r\n",
                    x->name, part);
    }
    sbuf_puts(&body, "--b--\r\n");
    sbuf_printf(&msg,
                "NOTIFY %s SIP/2.0\r\n"
                "Via: SIP/2.0/%s 127.0.0.1:%d;branch=z9hG4bK%016llx\r\n"
                "Max-Forwards: 70\r\n"
                "From: %s;tag=%s\r\n"
                "To: %s\r\n"
                "Call-ID: %s\r\n"
                "CSeq: %u NOTIFY\r\n"
                "Contact: <sip:127.0.0.1:%d>\r\n"
                "Event: dialog\r\n"
                "Require: eventlist\r\n"
                "Subscription-State: %s\r\n"
                "Content-Type: multipart/related;type=\"application/rlmi+xml\";"
                "start=\"<root@pbxsim>\";boundary=\"b\"\r\n"
                "Content-Length: %zu\r\n\r\n",
                d->contact, d->peer.fd >= 0 ? "TCP" : "UDP", S.port,
                (unsigned long long)rnd(), d->local, d->tag, d->remote, d->callid, ++d->cseq,
                S.port, substate, body.len);
    sbuf_append(&msg, body.data, body.len);
    send_to(&d->peer, msg.data, msg.len);
    if (d->keep && d->peer.fd < 0)
        pending_set(d, msg.data, msg.len);
    S.notifies++;
    sbuf_free(&body);
    sbuf_free(&msg);
}

static void send_notify(struct dlg *d, const char *substate)
{
    char body[2048], msg[4096];
    int n;

    if (d->list) {
        send_list_notify(d, substate, NULL);
        return;
    }
    body_for(d, body, sizeof body);
    n = snprintf(msg, sizeof msg,
                 "NOTIFY %s SIP/2.0\r\n"
                 "Via: SIP/2.0/%s 127.0.0.1:%d;branch=z9hG4bK%016llx\r\n"
                 "Max-Forwards: 70\r\n"
                 "From: %s;tag=%s\r\n"
                 "To: %s\r\n"
                 "Call-ID: %s\r\n"
                 "CSeq: %u NOTIFY\r\n"
                 "Contact: <sip:127.0.0.1:%d>\r\n"
                 "Event: dialog\r\n"
                 "Subscription-State: %s\r\n"
                 "Content-Type: application/dialog-info+xml\r\n"
                 "Content-Length: %zu\r\n\r\n%s",
                 d->contact, d->peer.fd >= 0 ? "TCP" : "UDP", S.port,
                 (unsigned long long)rnd(), d->local, d->tag, d->remote, d->callid, ++d->cseq,
                 S.port, substate, strlen(body), body);
    d->version++;
    send_to(&d->peer, msg, (size_t)n);
    if (d->keep && d->peer.fd < 0)
        pending_set(d, msg, (size_t)n);
    S.notifies++;
}

static void respond(const char *req, const struct peer *to, const char *status,
                    const char *totag, long expires)
{
    char via[1024], from[1024], tohdr[1024], callid[512], cseq[128], msg[4096];
    int n;

    if (header(req, "Via", 'v', via, sizeof via) < 0 ||
        header(req, "From", 'f', from, sizeof from) < 0 ||
        header(req, "To", 't', tohdr, sizeof tohdr) < 0 ||
        header(req, "Call-ID", 'i', callid, sizeof callid) < 0 ||
        header(req, "CSeq", 0, cseq, sizeof cseq) < 0) {
        S.bad++;
        return;
    }
    n = snprintf(msg, sizeof msg,
                 "SIP/2.0 %s\r\nVia: %s\r\nFrom: %s\r\nTo: %s%s%s\r\nCall-ID: %s\r\n"
                 "CSeq: %s\r\nContact: <sip:127.0.0.1:%d>\r\nExpires: %ld\r\n"
                 "Content-Length: 0\r\n\r\n",
                 status, via, from, tohdr, totag ? ";tag=" : "", totag ? totag : "", callid,
                 cseq, S.port, expires);
    send_to(to, msg, (size_t)n);
}

/* <sip:...> or a bare URI in a header value, without parameters after '>'. */
static void uri_of(const char *v, char *out, size_t len)
{
    const char *lt = strchr(v, '<'), *gt;

    if (lt && (gt = strchr(lt, '>'))) {
        size_t n = (size_t)(gt - lt - 1);
        if (n >= len)
            n = len - 1;
        memcpy(out, lt + 1, n);
        out[n] = '\0';
        return;
    }
    snprintf(out, len, "%.*s", (int)strcspn(v, ";"), v);
}

static struct ext *ext_get(const char *name)
{
    struct ext *x = strmap_get(&S.exts, name);

    if (!x) {
        x = xcalloc(1, sizeof *x);
        snprintf(x->name, sizeof x->name, "%s", name);
        strmap_put(&S.exts, x->name, x);
    }
    return x;
}

static void ext_attach(struct ext *x, struct dlg *d)
{
    if (x->ndlgs == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 2;
        x->dlgs = xrealloc(x->dlgs, x->cap * sizeof *x->dlgs);
    }
    x->dlgs[x->ndlgs++] = d;
    d->ext = x;
}

/* The dialog ends: no more NOTIFYs (it stays in the maps so late requests find it). */
static void dlg_end(struct dlg *d)
{
    struct ext *x = d->ext;

    if (!d->active)
        return;
    d->active = false;
    if (d->list) {
        for (size_t i = 0; i < S.nlists; i++) {
            if (S.lists[i] == d) {
                S.lists[i] = S.lists[--S.nlists];
                break;
            }
        }
        return;
    }
    for (size_t i = 0; i < x->ndlgs; i++) {
        if (x->dlgs[i] == d) {
            x->dlgs[i] = x->dlgs[--x->ndlgs];
            break;
        }
    }
}

static void active_substate(char *buf, size_t len)
{
    snprintf(buf, len, "active;expires=%ld", S.expires);
}

/* ext's state changes: every live subscription to it hears of it. */
static size_t ext_set(struct ext *x, enum cstate st)
{
    char sub[64];
    size_t n = x->ndlgs;

    x->st = st;
    active_substate(sub, sizeof sub);
    for (size_t i = 0; i < x->ndlgs; i++)
        send_notify(x->dlgs[i], sub);
    if (x->in_list) {
        x->version++;
        for (size_t i = 0; i < S.nlists; i++)
            send_list_notify(S.lists[i], sub, x);
        n += S.nlists;
    }
    S.changes++;
    if (S.events_log)
        fprintf(S.events_log, "%lld %s %s\n", (long long)now_us(), x->name, cstate_name[st]);
    return n;
}

static void on_subscribe(const char *msg, const struct peer *from)
{
    char callid[512], fromh[1024], toh[1024], contact[1024], ruri[1024], exp[32], name[64];
    struct dlg *d;
    long expires = S.expires;
    const char *sp;

    if (header(msg, "Call-ID", 'i', callid, sizeof callid) < 0 ||
        header(msg, "From", 'f', fromh, sizeof fromh) < 0 ||
        header(msg, "To", 't', toh, sizeof toh) < 0) {
        S.bad++;
        return;
    }
    if (header(msg, "Expires", 0, exp, sizeof exp) == 0)
        expires = strtol(exp, NULL, 10) == 0 ? 0 : S.expires;
    d = strmap_get(&S.dialogs, callid);
    if (d && d->active) {
        /* In-dialog: refresh or un-SUBSCRIBE. Every refresh gets a NOTIFY (RFC 6665). */
        respond(msg, from, "200 OK", NULL, expires);
        if (expires == 0) {
            S.unsubscribes++;
            send_notify(d, "terminated;reason=timeout");
            dlg_end(d);
        } else {
            char sub[64];
            S.refreshes++;
            d->expire_us = now_us() + (int64_t)S.expires * 1000000;
            active_substate(sub, sizeof sub);
            send_notify(d, sub);
        }
        return;
    }
    if (d || strcasestr(toh, "tag=")) {
        /* A dialog this notifier does not know (ended, or from before a restart). */
        S.unknown_dialog++;
        respond(msg, from, "481 Call/Transaction Does Not Exist", NULL, 0);
        return;
    }
    if (header(msg, "Contact", 'm', contact, sizeof contact) < 0) {
        S.bad++;
        return;
    }
    if (expires == 0) {
        /* A fetch (RFC 6665 4.4.3), or an un-SUBSCRIBE sent outside its dialog: one
         * NOTIFY with the state, and no subscription. */
        struct dlg f = {.callid = callid, .remote = fromh, .local = toh, .contact = ruri,
                        .peer = *from};

        uri_of(contact, ruri, sizeof ruri);
        snprintf(f.tag, sizeof f.tag, "sim%llx", (unsigned long long)(rnd() & 0xffffffffff));
        sp = strstr(msg, "sip:");
        name[0] = '\0';
        if (sp) {
            const char *at = strchr(sp, '@');
            size_t n = at ? (size_t)(at - sp - 4) : 0;
            snprintf(name, sizeof name, "%.*s", (int)(n < sizeof name ? n : sizeof name - 1),
                     sp + 4);
        }
        f.ext = ext_get(name);
        S.fetches++;
        respond(msg, from, "200 OK", f.tag, 0);
        send_notify(&f, "terminated;reason=timeout");
        return;
    }
    d = xcalloc(1, sizeof *d);
    d->callid = xstrdup(callid);
    d->remote = xstrdup(fromh);
    /* Our side of the dialog: the To of the SUBSCRIBE, plus our tag. */
    d->local = xstrdup(toh);
    uri_of(contact, ruri, sizeof ruri);
    d->contact = xstrdup(ruri);
    snprintf(d->tag, sizeof d->tag, "sim%llx", (unsigned long long)(rnd() & 0xffffffffff));
    d->peer = *from;
    d->active = true;
    d->keep = true;
    d->expire_us = now_us() + (int64_t)S.expires * 1000000;
    name[0] = '\0';
    sp = strstr(msg, "sip:");
    if (sp) {
        const char *at = strchr(sp, '@');
        size_t n = at ? (size_t)(at - sp - 4) : 0;
        if (n >= sizeof name)
            n = sizeof name - 1;
        memcpy(name, sp + 4, n);
        name[n] = '\0';
    }
    strmap_put(&S.dialogs, d->callid, d);
    if (S.list_name && strcmp(name, S.list_name) == 0 && strcasestr(msg, "eventlist")) {
        /* The resource list: full state now and on every refresh, partial updates. */
        d->list = true;
        if (S.nlists == S.lists_cap) {
            S.lists_cap = S.lists_cap ? S.lists_cap * 2 : 4;
            S.lists = xrealloc(S.lists, S.lists_cap * sizeof *S.lists);
        }
        S.lists[S.nlists++] = d;
    } else {
        ext_attach(ext_get(name), d);
        if (S.nlist == S.cap) {
            S.cap = S.cap ? S.cap * 2 : 1024;
            S.list = xrealloc(S.list, S.cap * sizeof *S.list);
        }
        S.list[S.nlist++] = d;
    }
    S.subscribes++;
    if (!S.first_sub_us)
        S.first_sub_us = now_us();
    respond(msg, from, "200 OK", d->tag, S.expires);
    {
        char sub[64];
        active_substate(sub, sizeof sub);
        send_notify(d, sub);
    }
    if (S.start_after && S.nlist == S.start_after) {
        S.nth_sub_us = now_us();
        fprintf(stderr, "pbxsim: %zu subscriptions in %.3f s (first to last)\n", S.nlist,
                (double)(S.nth_sub_us - S.first_sub_us) / 1e6);
    }
}

/* A response to one of our NOTIFYs: it ends the retransmissions; 481 means the
 * subscriber forgot the dialog. */
static void on_response(const char *msg)
{
    char callid[512], cseq[64];
    struct dlg *d;
    bool ok = strncmp(msg, "SIP/2.0 200", 11) == 0;

    if (ok)
        S.ok200++;
    else
        S.other_rsp++;
    if (strncmp(msg, "SIP/2.0 1", 9) == 0 ||
        header(msg, "Call-ID", 'i', callid, sizeof callid) < 0 ||
        !(d = strmap_get(&S.dialogs, callid)))
        return;
    if (d->pending && header(msg, "CSeq", 0, cseq, sizeof cseq) == 0 &&
        strtoul(cseq, NULL, 10) == d->pending_cseq)
        pending_clear(d);
    if (strncmp(msg, "SIP/2.0 481", 11) == 0 && d->active) {
        S.dropped++;
        dlg_end(d);
    }
}

/* One message from `from` (a datagram, or one framed off a TCP connection). */
static void handle(const char *buf, const struct peer *from)
{
    trace("in", buf);
    if (strncmp(buf, "SUBSCRIBE ", 10) == 0) {
        on_subscribe(buf, from);
    } else if (strncmp(buf, "OPTIONS ", 8) == 0) {
        S.options++;
        respond(buf, from, "200 OK", NULL, 0);
    } else if (strncmp(buf, "SIP/2.0 ", 8) == 0) {
        on_response(buf);
    } else if (strncmp(buf, "ACK ", 4) != 0 && isupper((unsigned char)buf[0])) {
        respond(buf, from, "501 Not Implemented", NULL, 0);
    } else {
        S.bad++;
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    static char buf[MAX_MSG + 1];

    for (int i = 0; i < 256; i++) {
        struct peer from = {.fd = -1};
        socklen_t fl = sizeof from.addr;
        ssize_t n = recvfrom(fd, buf, MAX_MSG, MSG_DONTWAIT, (struct sockaddr *)&from.addr, &fl);

        if (n < 0)
            return;
        buf[n] = '\0';
        handle(buf, &from);
    }
}

/* ---- TCP (--tcp) ------------------------------------------------------------------- */

struct conn {
    int fd;
    struct sockaddr_in addr;
    struct event *ev;
    char *buf;
    size_t len, cap;
};

static void conn_close(struct conn *c)
{
    event_free(c->ev);
    close(c->fd);
    free(c->buf);
    free(c);
}

/* Reads what the connection has; hands up each complete message (Content-Length). */
static void on_conn(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    ssize_t n;

    if (c->cap - c->len < 65536 + 1) {
        c->cap = c->cap ? c->cap * 2 : 262144;
        c->buf = xrealloc(c->buf, c->cap);
    }
    n = recv(fd, c->buf + c->len, c->cap - c->len - 1, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_close(c);
        return;
    }
    if (n < 0)
        return;
    c->len += (size_t)n;
    for (;;) {
        char *he, v[32], save;
        size_t hl, total;
        long cl = 0;

        c->buf[c->len] = '\0';
        he = strstr(c->buf, "\r\n\r\n");
        if (!he)
            break;
        hl = (size_t)(he + 4 - c->buf);
        save = he[2];
        he[2] = '\0';
        if (header(c->buf, "Content-Length", 'l', v, sizeof v) == 0)
            cl = atol(v);
        he[2] = save;
        total = hl + (size_t)(cl > 0 ? cl : 0);
        if (c->len < total)
            break;
        save = c->buf[total];
        c->buf[total] = '\0';
        {
            struct peer p = {.addr = c->addr, .fd = c->fd};
            handle(c->buf, &p);
        }
        c->buf[total] = save;
        memmove(c->buf, c->buf + total, c->len - total);
        c->len -= total;
    }
}

static void on_accept(evutil_socket_t fd, short what, void *arg)
{
    struct sockaddr_in a;
    socklen_t al = sizeof a;
    int cfd = accept4(fd, (struct sockaddr *)&a, &al, SOCK_NONBLOCK | SOCK_CLOEXEC);
    struct conn *c;

    if (cfd < 0)
        return;
    c = xcalloc(1, sizeof *c);
    c->fd = cfd;
    c->addr = a;
    c->ev = event_new(S.base, cfd, EV_READ | EV_PERSIST, on_conn, c);
    event_add(c->ev, NULL);
}

static void drive(evutil_socket_t fd, short what, void *arg)
{
    int64_t now = now_us();
    size_t pool = S.list_name ? S.list_size
                              : S.active_max && S.active_max < S.nlist ? S.active_max : S.nlist;

    if (!S.driving) {
        if (S.rate <= 0 || pool == 0 ||
            (S.list_name ? S.nlists == 0 : S.start_after && S.nlist < S.start_after))
            return;
        S.driving = true;
        S.drive_started_us = S.last_tick_us = now;
        fprintf(stderr, "pbxsim: driving %.0f events/s over %zu users\n", S.rate, pool);
        return;
    }
    if (S.duration > 0 && now - S.drive_started_us > (int64_t)(S.duration * 1e6)) {
        event_base_loopexit(S.base, NULL);
        return;
    }
    S.credit += S.rate * (double)(now - S.last_tick_us) / 1e6;
    S.last_tick_us = now;
    while (S.credit >= 1.0) {
        struct ext *x;

        S.credit -= 1.0;
        if (S.list_name) {
            char name[32];
            snprintf(name, sizeof name, "%ld", S.list_ext0 + (long)(rnd() % pool));
            x = ext_get(name);
        } else {
            struct dlg *d = S.list[rnd() % pool];
            x = d->ext;
            /* A dialog ended (its subscriber let the extension go, e.g. a sipbridge that
             * handed the user to another): the extension changes all the same while
             * anyone else subscribes it, so the rate stays R over the same K users. */
            if (!d->active && x->ndlgs == 0)
                continue;
        }
        ext_set(x, (enum cstate)((x->st + 1) % CS_CYCLE));
    }
}

/* ---- control socket ---------------------------------------------------------------- */

/* The counters as "name=value ..." (subscribes first): the control socket's answer to
 * "stats" and the periodic stderr line. */
static size_t stats_line(char *out, size_t len)
{
    int n = snprintf(
        out, len,
        "subscribes=%llu refreshes=%llu unsubscribes=%llu notifies=%llu changes=%llu ok=%llu "
        "other=%llu bad=%llu unknown_dialog=%llu dropped=%llu options=%llu fetches=%llu "
        "retransmits=%llu timeouts=%llu dialogs=%zu expired=%llu",
        (unsigned long long)S.subscribes, (unsigned long long)S.refreshes,
        (unsigned long long)S.unsubscribes, (unsigned long long)S.notifies,
        (unsigned long long)S.changes, (unsigned long long)S.ok200,
        (unsigned long long)S.other_rsp, (unsigned long long)S.bad,
        (unsigned long long)S.unknown_dialog, (unsigned long long)S.dropped,
        (unsigned long long)S.options, (unsigned long long)S.fetches,
        (unsigned long long)S.retransmits, (unsigned long long)S.timeouts, S.nlist,
        (unsigned long long)S.expired);

    return n < 0 ? 0 : (size_t)n < len ? (size_t)n : len - 1;
}

static void on_control(evutil_socket_t fd, short what, void *arg)
{
    char cmd[512], out[MAX_MSG];
    struct sockaddr_in from;
    socklen_t fl = sizeof from;
    ssize_t n = recvfrom(fd, cmd, sizeof cmd - 1, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
    size_t len = 0;

    if (n < 0)
        return;
    cmd[n] = '\0';
    cmd[strcspn(cmd, "\r\n")] = '\0';
    if (strncmp(cmd, "set ", 4) == 0) {
        char name[64], state[32];
        int st = -1;

        if (sscanf(cmd + 4, "%63s %31s", name, state) == 2) {
            for (int i = 0; i < CS__N; i++)
                if (strcmp(state, cstate_name[i]) == 0)
                    st = i;
        }
        if (st < 0)
            len = (size_t)snprintf(out, sizeof out, "error: set EXT idle|ringing|on_call|on_hold");
        else
            len = (size_t)snprintf(out, sizeof out, "ok %zu",
                                   ext_set(ext_get(name), (enum cstate)st));
    } else if (strcmp(cmd, "get") == 0) {
        size_t pos = 0;
        const char *k;
        void *v;

        while (strmap_next(&S.exts, &pos, &k, &v) && len + 128 < sizeof out) {
            const struct ext *x = v;
            len += (size_t)snprintf(out + len, sizeof out - len, "%s %s %zu\n", x->name,
                                    cstate_name[x->st], x->ndlgs);
        }
    } else if (strncmp(cmd, "get ", 4) == 0) {
        /* One extension: "get" alone no longer fits a datagram at 10,000 of them. */
        const struct ext *x = strmap_get(&S.exts, cmd + 4);
        len = (size_t)snprintf(out, sizeof out, "%s %s %zu\n", cmd + 4,
                               x ? cstate_name[x->st] : "none", x ? x->ndlgs : 0);
    } else if (strncmp(cmd, "rate ", 5) == 0) {
        S.rate = atof(cmd + 5);
        S.credit = 0;
        len = (size_t)snprintf(out, sizeof out, "ok");
    } else if (strncmp(cmd, "dialog ", 7) == 0) {
        struct ext *x = strmap_get(&S.exts, cmd + 7);

        for (size_t i = 0; x && i < x->ndlgs && len + 2048 < sizeof out; i++) {
            const struct dlg *d = x->dlgs[i];
            len += (size_t)snprintf(out + len, sizeof out - len,
                                    "call-id=%s notifier-tag=%s cseq=%u from=%s to=%s\n",
                                    d->callid, d->tag, d->cseq, d->local, d->remote);
        }
    } else if (strcmp(cmd, "peers") == 0) {
        size_t pos = 0;
        const char *k;
        void *v;

        while (strmap_next(&S.exts, &pos, &k, &v) && len + 512 < sizeof out) {
            const struct ext *x = v;
            len += (size_t)snprintf(out + len, sizeof out - len, "%s", x->name);
            for (size_t i = 0; i < x->ndlgs && len + 16 < sizeof out; i++)
                len += (size_t)snprintf(out + len, sizeof out - len, " %u",
                                        (unsigned)ntohs(x->dlgs[i]->peer.addr.sin_port));
            out[len++] = '\n';
        }
    } else if (strcmp(cmd, "stats") == 0) {
        len = stats_line(out, sizeof out);
    } else {
        len = (size_t)snprintf(out, sizeof out, "error: unknown command");
    }
    sendto(fd, out, len, 0, (struct sockaddr *)&from, fl);
}

static void stats(evutil_socket_t fd, short what, void *arg)
{
    char line[512];

    stats_line(line, sizeof line);
    fprintf(stderr, "pbxsim: %s\n", line);
    if (S.events_log)
        fflush(S.events_log);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    if (S.goodbye && sig == SIGTERM) {
        /* A clean shutdown tells each subscriber to subscribe again (RFC 6665 4.1.3). */
        for (size_t i = 0; i < S.nlist; i++) {
            if (S.list[i]->active) {
                send_notify(S.list[i], "terminated;reason=deactivated");
                dlg_end(S.list[i]);
            }
        }
        while (S.nlists) {
            struct dlg *d = S.lists[0];
            send_notify(d, "terminated;reason=deactivated");
            dlg_end(d);
        }
    }
    event_base_loopexit(S.base, NULL);
}

/* --expire, every 100 ms: subscriptions whose grant ran out unrefreshed end. */
static void expire_sweep(evutil_socket_t fd, short what, void *arg)
{
    int64_t now = now_us();

    for (size_t i = 0; i < S.nlist; i++) {
        struct dlg *d = S.list[i];

        if (!d->active || !d->keep || now < d->expire_us)
            continue;
        send_notify(d, "terminated;reason=timeout");
        dlg_end(d);
        S.expired++;
    }
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},     {"rate", required_argument, NULL, 'r'},
        {"active", required_argument, NULL, 'a'},   {"start-after", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'}, {"expires", required_argument, NULL, 'e'},
        {"events-log", required_argument, NULL, 'l'},
        {"stats-every", required_argument, NULL, 'S'},
        {"control", required_argument, NULL, 'c'}, {"goodbye", no_argument, NULL, 'g'},
        {"expire", no_argument, NULL, 'x'},
        {"trace", required_argument, NULL, 't'},   {"tcp", no_argument, NULL, 'T'},
        {"list", required_argument, NULL, 'L'},    {"list-size", required_argument, NULL, 'N'},
        {"list-ext0", required_argument, NULL, 'E'},
        {NULL, 0, NULL, 0}};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timeval tick = {0, 2000};
    struct timeval st;
    int c, bufsz = 8 << 20, ctl_port = 0;

    while ((c = getopt_long(argc, argv, "p:r:a:s:d:e:l:S:c:gxt:TL:N:E:", opts, NULL)) != -1) {
        switch (c) {
        case 'p': S.port = atoi(optarg); break;
        case 'r': S.rate = atof(optarg); break;
        case 'a': S.active_max = (size_t)atol(optarg); break;
        case 's': S.start_after = (size_t)atol(optarg); break;
        case 'd': S.duration = atof(optarg); break;
        case 'e': S.expires = atol(optarg); break;
        case 'l': S.events_log = fopen(optarg, "w"); break;
        case 'S': S.stats_every = atof(optarg); break;
        case 'c': ctl_port = atoi(optarg); break;
        case 'g': S.goodbye = true; break;
        case 'x': S.expire = true; break;
        case 'T': S.tcp = true; break;
        case 'L': S.list_name = optarg; break;
        case 'N': S.list_size = (size_t)atol(optarg); break;
        case 'E': S.list_ext0 = atol(optarg); break;
        case 't':
            S.trace = fopen(optarg, "a");
            if (S.trace)
                setvbuf(S.trace, NULL, _IOLBF, 0);
            break;
        default:
            fprintf(stderr, "usage: %s --port P [--rate R] [--active K] [--start-after N] "
                            "[--duration S] [--expires E] [--events-log FILE] [--stats-every S] "
                            "[--control PORT] [--goodbye] [--expire] [--trace FILE] [--tcp] "
                            "[--list NAME --list-size N --list-ext0 E]\n", argv[0]);
            return 2;
        }
    }
    if (!S.port) {
        fprintf(stderr, "pbxsim: --port is required\n");
        return 2;
    }
    S.rng = (uint64_t)now_us() | 1;
    strmap_init(&S.dialogs);
    strmap_init(&S.exts);
    S.fd = socket(AF_INET, SOCK_DGRAM, 0);
    setsockopt(S.fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof bufsz);
    setsockopt(S.fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof bufsz);
    sa.sin_port = htons((uint16_t)S.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(S.fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("pbxsim: bind");
        return 1;
    }
    S.base = event_base_new();
    for (size_t i = 0; S.list_name && i < S.list_size; i++) {
        char name[32];
        snprintf(name, sizeof name, "%ld", S.list_ext0 + (long)i);
        ext_get(name)->in_list = true;
    }
    if (S.tcp) {
        int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 64) < 0) {
            perror("pbxsim: tcp");
            return 1;
        }
        event_add(event_new(S.base, lfd, EV_READ | EV_PERSIST, on_accept, NULL), NULL);
    }
    if (ctl_port) {
        struct sockaddr_in ca = {.sin_family = AF_INET};

        S.ctl_fd = socket(AF_INET, SOCK_DGRAM, 0);
        ca.sin_port = htons((uint16_t)ctl_port);
        ca.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(S.ctl_fd, (struct sockaddr *)&ca, sizeof ca) < 0) {
            perror("pbxsim: bind control");
            return 1;
        }
        event_add(event_new(S.base, S.ctl_fd, EV_READ | EV_PERSIST, on_control, NULL), NULL);
    }
    event_add(event_new(S.base, S.fd, EV_READ | EV_PERSIST, on_read, NULL), NULL);
    event_add(event_new(S.base, -1, EV_PERSIST, drive, NULL), &tick);
    if (S.expire) {
        struct timeval ex = {0, 100000};
        event_add(event_new(S.base, -1, EV_PERSIST, expire_sweep, NULL), &ex);
    }
    {
        struct timeval rt = {0, 50000};
        event_add(event_new(S.base, -1, EV_PERSIST, retransmit, NULL), &rt);
    }
    st.tv_sec = (long)S.stats_every;
    st.tv_usec = (long)((S.stats_every - (double)st.tv_sec) * 1e6);
    event_add(event_new(S.base, -1, EV_PERSIST, stats, NULL), &st);
    event_add(evsignal_new(S.base, SIGTERM, on_signal, NULL), NULL);
    event_add(evsignal_new(S.base, SIGINT, on_signal, NULL), NULL);
    fprintf(stderr, "pbxsim: listening on 127.0.0.1:%d\n", S.port);
    event_base_dispatch(S.base);
    stats(-1, 0, NULL);
    if (S.events_log)
        fclose(S.events_log);
    return 0;
}
