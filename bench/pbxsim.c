/* pbxsim: a cheap PBX for offhook's benchmarks. It answers every SUBSCRIBE (Event: dialog)
 * over UDP with 200, keeps each subscription dialog, sends the initial full-state NOTIFY,
 * answers refreshes and un-SUBSCRIBEs, and drives call-state changes at a fixed rate
 * (idle -> ringing -> on the phone -> idle, Asterisk's body shapes), logging each change
 * with its send time so latency to the XMPP side can be joined afterwards.
 *
 * One process, one socket, one libevent loop: it costs far less per NOTIFY than sipp,
 * which matters when the figure being measured is offhook's own cost per event.
 *
 *   pbxsim --port P [--rate R] [--active K] [--start-after N] [--duration S]
 *          [--expires E] [--events-log FILE] [--stats-every S]
 */
#include <arpa/inet.h>
#include <ctype.h>
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

#include "strmap.h"
#include "strutil.h"

#define MAX_MSG 65536

enum cstate { CS_IDLE, CS_RINGING, CS_ONCALL, CS__N };
static const char *const cstate_name[] = {"idle", "ringing", "on_call"};

struct dlg {
    char *callid;
    char *remote;        /* From of the SUBSCRIBE (with its tag): our To */
    char *local;         /* To of the SUBSCRIBE: our From (plus tag) */
    char *contact;       /* where NOTIFYs go (request URI) */
    char ext[64];        /* user part of the AOR */
    char tag[24];
    struct sockaddr_in peer;
    unsigned cseq;
    unsigned version;
    enum cstate st;
    bool active;         /* may be driven */
};

static struct {
    int fd;
    int port;
    struct event_base *base;
    struct strmap dialogs;   /* call-id -> struct dlg* */
    struct dlg **list;       /* in arrival order, for picking */
    size_t nlist, cap;
    double rate;
    size_t active_max;       /* drive only the first K dialogs (0 = all) */
    size_t start_after;      /* start driving once this many dialogs exist */
    double duration;
    long expires;
    FILE *events_log;
    bool driving;
    double credit;
    int64_t drive_started_us, last_tick_us;
    uint64_t rng;
    /* counters */
    uint64_t subscribes, refreshes, unsubscribes, notifies, changes, ok200, other_rsp, bad;
    int64_t first_sub_us, nth_sub_us;
    double stats_every;
} S = {.rate = 0, .expires = 3600, .stats_every = 5};

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

static void send_to(const struct sockaddr_in *to, const char *buf, size_t len)
{
    if (sendto(S.fd, buf, len, 0, (const struct sockaddr *)to, sizeof *to) < 0)
        S.bad++;
}

static const char *body_for(const struct dlg *d, char *buf, size_t len)
{
    static const char *const dialog_attrs[] = {[CS_IDLE] = "", [CS_RINGING] =
                                               " direction=\"recipient\"", [CS_ONCALL] = ""};
    static const char *const dialog_state[] = {
        [CS_IDLE] = "terminated", [CS_RINGING] = "early", [CS_ONCALL] = "confirmed"};
    int n = snprintf(buf, len,
                     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<dialog-info xmlns=\"urn:ietf:"
                     "params:xml:ns:dialog-info\" version=\"%u\" state=\"full\" entity=\"sip:%s"
                     "@pbxsim\">\n",
                     d->version, d->ext);
    n += snprintf(buf + n, len - (size_t)n,
                  " <dialog id=\"%s\"%s>\n  <state>%s</state>\n </dialog>\n", d->ext,
                  dialog_attrs[d->st], dialog_state[d->st]);
    snprintf(buf + n, len - (size_t)n, "</dialog-info>\n");
    return buf;
}

static void send_notify(struct dlg *d, const char *substate)
{
    char body[1024], msg[4096];
    int n;

    body_for(d, body, sizeof body);
    n = snprintf(msg, sizeof msg,
                 "NOTIFY %s SIP/2.0\r\n"
                 "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%016llx\r\n"
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
                 d->contact, S.port, (unsigned long long)rnd(), d->local, d->tag, d->remote,
                 d->callid, ++d->cseq, S.port, substate, strlen(body), body);
    d->version++;
    send_to(&d->peer, msg, (size_t)n);
    S.notifies++;
}

static void respond(const char *req, const struct sockaddr_in *to, const char *status,
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

static void on_subscribe(const char *msg, const struct sockaddr_in *from)
{
    char callid[512], fromh[1024], toh[1024], contact[1024], ruri[1024], exp[32];
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
    if (d) {
        /* In-dialog: refresh or un-SUBSCRIBE. Every refresh gets a NOTIFY (RFC 6665). */
        respond(msg, from, "200 OK", NULL, expires);
        if (expires == 0) {
            S.unsubscribes++;
            send_notify(d, "terminated;reason=timeout");
            d->active = false;
        } else {
            char sub[64];
            S.refreshes++;
            snprintf(sub, sizeof sub, "active;expires=%ld", S.expires);
            send_notify(d, sub);
        }
        return;
    }
    if (header(msg, "Contact", 'm', contact, sizeof contact) < 0) {
        S.bad++;
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
    sp = strstr(msg, "sip:");
    if (sp) {
        const char *at = strchr(sp, '@');
        size_t n = at ? (size_t)(at - sp - 4) : 0;
        if (n >= sizeof d->ext)
            n = sizeof d->ext - 1;
        memcpy(d->ext, sp + 4, n);
    }
    strmap_put(&S.dialogs, d->callid, d);
    if (S.nlist == S.cap) {
        S.cap = S.cap ? S.cap * 2 : 1024;
        S.list = xrealloc(S.list, S.cap * sizeof *S.list);
    }
    S.list[S.nlist++] = d;
    S.subscribes++;
    if (!S.first_sub_us)
        S.first_sub_us = now_us();
    respond(msg, from, "200 OK", d->tag, S.expires);
    {
        char sub[64];
        snprintf(sub, sizeof sub, "active;expires=%ld", S.expires);
        send_notify(d, sub);
    }
    if (S.start_after && S.nlist == S.start_after) {
        S.nth_sub_us = now_us();
        fprintf(stderr, "pbxsim: %zu subscriptions in %.3f s (first to last)\n", S.nlist,
                (double)(S.nth_sub_us - S.first_sub_us) / 1e6);
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    static char buf[MAX_MSG + 1];

    for (int i = 0; i < 256; i++) {
        struct sockaddr_in from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(fd, buf, MAX_MSG, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);

        if (n < 0)
            return;
        buf[n] = '\0';
        if (strncmp(buf, "SUBSCRIBE ", 10) == 0)
            on_subscribe(buf, &from);
        else if (strncmp(buf, "SIP/2.0 200", 11) == 0)
            S.ok200++;
        else if (strncmp(buf, "SIP/2.0 ", 8) == 0)
            S.other_rsp++;
        else
            S.bad++;
    }
}

static void drive(evutil_socket_t fd, short what, void *arg)
{
    int64_t now = now_us();
    size_t pool = S.active_max && S.active_max < S.nlist ? S.active_max : S.nlist;

    if (!S.driving) {
        if (S.rate <= 0 || pool == 0 || (S.start_after && S.nlist < S.start_after))
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
        struct dlg *d = S.list[rnd() % pool];
        char sub[64];

        S.credit -= 1.0;
        if (!d->active)
            continue;
        d->st = (enum cstate)((d->st + 1) % CS__N);
        snprintf(sub, sizeof sub, "active;expires=%ld", S.expires);
        send_notify(d, sub);
        S.changes++;
        if (S.events_log)
            fprintf(S.events_log, "%lld %s %s\n", (long long)now_us(), d->ext,
                    cstate_name[d->st]);
    }
}

static void stats(evutil_socket_t fd, short what, void *arg)
{
    fprintf(stderr,
            "pbxsim: dialogs=%zu subscribes=%llu refreshes=%llu unsubscribes=%llu "
            "notifies=%llu changes=%llu ok=%llu other=%llu bad=%llu\n",
            S.nlist, (unsigned long long)S.subscribes, (unsigned long long)S.refreshes,
            (unsigned long long)S.unsubscribes, (unsigned long long)S.notifies,
            (unsigned long long)S.changes, (unsigned long long)S.ok200,
            (unsigned long long)S.other_rsp, (unsigned long long)S.bad);
    if (S.events_log)
        fflush(S.events_log);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopexit(S.base, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},     {"rate", required_argument, NULL, 'r'},
        {"active", required_argument, NULL, 'a'},   {"start-after", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'}, {"expires", required_argument, NULL, 'e'},
        {"events-log", required_argument, NULL, 'l'},
        {"stats-every", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0}};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    struct timeval tick = {0, 2000};
    struct timeval st;
    int c, bufsz = 8 << 20;

    while ((c = getopt_long(argc, argv, "p:r:a:s:d:e:l:S:", opts, NULL)) != -1) {
        switch (c) {
        case 'p': S.port = atoi(optarg); break;
        case 'r': S.rate = atof(optarg); break;
        case 'a': S.active_max = (size_t)atol(optarg); break;
        case 's': S.start_after = (size_t)atol(optarg); break;
        case 'd': S.duration = atof(optarg); break;
        case 'e': S.expires = atol(optarg); break;
        case 'l': S.events_log = fopen(optarg, "w"); break;
        case 'S': S.stats_every = atof(optarg); break;
        default:
            fprintf(stderr, "usage: %s --port P [--rate R] [--active K] [--start-after N] "
                            "[--duration S] [--expires E] [--events-log FILE]\n", argv[0]);
            return 2;
        }
    }
    if (!S.port) {
        fprintf(stderr, "pbxsim: --port is required\n");
        return 2;
    }
    S.rng = (uint64_t)now_us() | 1;
    strmap_init(&S.dialogs);
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
    event_add(event_new(S.base, S.fd, EV_READ | EV_PERSIST, on_read, NULL), NULL);
    event_add(event_new(S.base, -1, EV_PERSIST, drive, NULL), &tick);
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
