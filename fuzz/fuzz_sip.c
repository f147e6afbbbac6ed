/* libFuzzer target: sipbridge's SIP side as a whole. Each input is a sequence of UDP
 * datagrams (separated by a line "#--") delivered to sipbridge's SIP port as the daemon
 * receives them (sipua_input: sipmsg.c's parser, the dialog table, the checks on who may
 * notify, stateless answers), and from there through subscription.c, the body parsers,
 * bridge.c's merge and combine, to store.c (whose Redis is down: it holds the latest
 * state). The object graph is the daemon's own (the offhook_sipbridge library), wired as
 * main.c wires it; the only stand-in is the PBX: a UDP socket of this harness that
 * answers every SUBSCRIBE sipbridge sends with 200 and a tag of its own.
 *
 * Before each input the users' six subscriptions (alice and bob; dialog, presence, reg)
 * are made afresh, so inputs do not depend on one another. In a datagram, %C0..%C5 stand
 * for a subscription's Call-ID, %F0..%F5 for sipbridge's tag in it, %T0..%T5 for the
 * PBX's tag, %S0..%S5 for the PBX's next CSeq in it, %E0..%E5 for its event package,
 * %U0..%U5 for its AOR and %P for sipbridge's port, so the fuzzer reaches the paths that
 * need a live dialog. A datagram starting "@2 " comes from 127.0.0.2 (not the PBX). After
 * each datagram:
 *
 *   - whatever sipbridge sent parses as SIP, and every response it sent has a status it
 *     may give (200, 403, 405, 481, 489, 500);
 *   - a datagram from 127.0.0.2 never counts as a NOTIFY (is never applied);
 *   - the subscriptions' state counts add up to their total;
 *
 * and after the input, once the users are gone and their un-SUBSCRIBEs answered, no SIP
 * dialog record is left. ASan and UBSan watch everything else. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "bridge.h"
#include "config.h"
#include "log.h"
#include "metrics.h"
#include "probe.h"
#include "redislink.h"
#include "rlsub.h"
#include "sbuf.h"
#include "sipmsg.h"
#include "sipua.h"
#include "store.h"
#include "strutil.h"
#include "subscription.h"
#include "suloop.h"
#include "timerq.h"
#include "xmlsafe.h"

#include "fuzz_util.h"

#define NSUB 6
#define MAX_DGRAM 65536

static struct offhook_config cfg;
static struct event_base *base;
static struct suloop *loop;
static struct timerq *tq;
static struct sipua *ua;
static struct store *store;
static int pbx_fd, sip_port;
static struct sockaddr_in pbx_addr, stranger_addr;

/* What the harness, as the PBX, knows of each subscription sipbridge made. */
static struct dlg {
    char callid[64], ftag[64], event[16], aor[128];
    unsigned cseq;
} dlgs[NSUB];
static int ndlgs;

static void kick(void *arg)
{
    suloop_kick(arg);
}

/* The value of header name in a parsed message, as a C string (empty if absent). */
static void copy_str(char *out, size_t len, struct sip_str s)
{
    snprintf(out, len, "%.*s", s.p ? (int)s.n : 0, s.p ? s.p : "");
}

/* Answers a SUBSCRIBE of sipbridge's with 200 (a new one is recorded as dialog i). */
static void answer_subscribe(const struct sip_msg *m)
{
    char resp[4096], to[512], callid[64], tag[16];
    int n, i = -1;

    copy_str(callid, sizeof callid, m->call_id);
    for (int k = 0; k < ndlgs; k++) {
        if (strcmp(dlgs[k].callid, callid) == 0)
            i = k;
    }
    if (i < 0 && !m->to_tag.p && ndlgs < NSUB) {
        i = ndlgs++;
        snprintf(dlgs[i].callid, sizeof dlgs[i].callid, "%s", callid);
        copy_str(dlgs[i].ftag, sizeof dlgs[i].ftag, m->from_tag);
        copy_str(dlgs[i].event, sizeof dlgs[i].event, m->event);
        copy_str(dlgs[i].aor, sizeof dlgs[i].aor, m->ruri);
        dlgs[i].cseq = 1000;
    }
    snprintf(tag, sizeof tag, "pbx%d", i < 0 ? 9 : i);
    copy_str(to, sizeof to, m->to);
    n = snprintf(resp, sizeof resp,
                 "SIP/2.0 200 OK\r\nVia: %.*s\r\nFrom: %.*s\r\nTo: %s%s%s\r\nCall-ID: %s\r\n"
                 "CSeq: %.*s\r\nContact: <sip:127.0.0.1:%d>\r\nExpires: %ld\r\n"
                 "Content-Length: 0\r\n\r\n",
                 (int)m->via[0].n, m->via[0].p, (int)m->from.n, m->from.p, to,
                 m->to_tag.p ? "" : ";tag=", m->to_tag.p ? "" : tag, callid,
                 (int)m->cseq_value.n, m->cseq_value.p, ntohs(pbx_addr.sin_port),
                 m->expires >= 0 ? m->expires : 3600L);
    FUZZ_CHECK(n > 0 && (size_t)n < sizeof resp);
    sipua_input(ua, resp, (size_t)n, (struct sockaddr *)&pbx_addr, sizeof pbx_addr);
}

/* Runs the loop a little (wait: blocking until something happens, at most 50 ms) and
 * plays the PBX for what sipbridge sent meanwhile. */
static void pump_wait(int rounds, bool wait)
{
    static char buf[MAX_DGRAM + 1], sent[MAX_DGRAM + 1];

    for (int r = 0; r < rounds; r++) {
        if (wait) {
            struct timeval tv = {0, 50000};
            event_base_loopexit(base, &tv);
            event_base_loop(base, EVLOOP_ONCE);
        } else {
            event_base_loop(base, EVLOOP_NONBLOCK);
        }
        for (;;) {
            ssize_t n = recv(pbx_fd, buf, MAX_DGRAM, MSG_DONTWAIT);
            struct sip_msg m;
            const char *err;

            if (n < 0)
                break;
            buf[n] = '\0';
            memcpy(sent, buf, (size_t)n + 1); /* the parser writes into buf */
            if (sipmsg_parse(buf, (size_t)n, &m, &err) < 0) {
                fprintf(stderr, "sipbridge sent what does not parse (%s):\n%s\n", err, sent);
                FUZZ_CHECK(!"sipbridge sends only what parses as SIP");
            }
            if (m.request) {
                FUZZ_CHECK(m.method == SIP_M_SUBSCRIBE); /* all sipbridge ever sends */
                answer_subscribe(&m);
            } else {
                FUZZ_CHECK(m.status == 200 || m.status == 403 || m.status == 405 ||
                           m.status == 481 || m.status == 489 || m.status == 500);
            }
        }
    }
}

static void pump(int rounds)
{
    pump_wait(rounds, false);
}

/* A counter or gauge from the metrics text (0 if absent). */
static double metric_value(const char *series)
{
    struct sbuf out;
    const char *p;
    double v = 0;

    sbuf_init(&out);
    metrics_render(&out);
    p = out.data ? strstr(out.data, series) : NULL;
    while (p && p[strlen(series)] != ' ')
        p = strstr(p + 1, series);
    if (p)
        v = strtod(p + strlen(series) + 1, NULL);
    sbuf_free(&out);
    return v;
}

static size_t substitute(const char *in, size_t len, char *out, size_t outlen)
{
    size_t o = 0;

    for (size_t i = 0; i < len && o + 256 < outlen; i++) {
        char k = i + 1 < len ? in[i + 1] : 0;
        int d = i + 2 < len ? in[i + 2] - '0' : -1;
        const struct dlg *g = d >= 0 && d < ndlgs ? &dlgs[d] : NULL;

        if (in[i] == '%' && k == 'P') {
            o += (size_t)snprintf(out + o, outlen - o, "%d", sip_port);
            i += 1;
        } else if (in[i] == '%' && g && strchr("CFTSEU", k)) {
            switch (k) {
            case 'C': o += (size_t)snprintf(out + o, outlen - o, "%s", g->callid); break;
            case 'F': o += (size_t)snprintf(out + o, outlen - o, "%s", g->ftag); break;
            case 'T': o += (size_t)snprintf(out + o, outlen - o, "pbx%d", d); break;
            case 'S': o += (size_t)snprintf(out + o, outlen - o, "%u", dlgs[d].cseq++); break;
            case 'E': o += (size_t)snprintf(out + o, outlen - o, "%s", g->event); break;
            case 'U': o += (size_t)snprintf(out + o, outlen - o, "%s", g->aor); break;
            }
            i += 2;
        } else {
            out[o++] = in[i];
        }
    }
    return o;
}

static void check_subscriptions(struct bridge *b)
{
    struct subs_mgr *m = bridge_subs(b);
    int sum = 0;

    for (int st = 0; st < SUB__COUNT; st++) {
        FUZZ_CHECK(subs_mgr_count(m, (enum sub_state)st) >= 0);
        sum += subs_mgr_count(m, (enum sub_state)st);
    }
    FUZZ_CHECK(sum == subs_mgr_total(m));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    struct cfg_errors errs = {0};
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t al = sizeof a;
    char text[2048];
    int probe;

    log_level = getenv("FUZZ_SIP_LOG") ? LOG_DEBUG : -1;
    /* The PBX's socket, and a free port for sipbridge's. */
    pbx_fd = socket(AF_INET, SOCK_DGRAM, 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    FUZZ_CHECK(bind(pbx_fd, (struct sockaddr *)&a, sizeof a) == 0);
    FUZZ_CHECK(getsockname(pbx_fd, (struct sockaddr *)&pbx_addr, &al) == 0);
    probe = socket(AF_INET, SOCK_DGRAM, 0);
    a.sin_port = 0;
    FUZZ_CHECK(bind(probe, (struct sockaddr *)&a, sizeof a) == 0);
    al = sizeof a;
    FUZZ_CHECK(getsockname(probe, (struct sockaddr *)&a, &al) == 0);
    sip_port = ntohs(a.sin_port);
    close(probe);
    stranger_addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(5060)};
    stranger_addr.sin_addr.s_addr = htonl(0x7f000002);
    snprintf(text, sizeof text,
             "[sip]\nlisten = udp:127.0.0.1:%d\npbx = sip:127.0.0.1:%d\n"
             "events = dialog, presence, reg\nsubscribe_rate = 100000\nnotify_rate = 5\n"
             "[redis]\nurl = redis://127.0.0.1:1/0\n"
             "[users]\nalice@localhost = sip:1001@127.0.0.1:%d\n"
             "bob@localhost = sip:1002@127.0.0.1:%d\n"
             "[user bob@localhost]\nshow_remote_party = yes\n",
             sip_port, ntohs(pbx_addr.sin_port), ntohs(pbx_addr.sin_port),
             ntohs(pbx_addr.sin_port));
    if (config_load_buffer("fuzz.conf", text, strlen(text), &cfg, &errs) != 0) {
        cfg_errors_print(&errs, stderr);
        abort();
    }
    cfg_errors_free(&errs);
    xmlsafe_init();
    base = event_base_new();
    redislink_register_metrics();
    store_register_metrics();
    subs_register_metrics();
    probe_register_metrics();
    sipua_register_metrics();
    rlsub_register_metrics();
    bridge_register_metrics();
    loop = suloop_new(base);
    FUZZ_CHECK(loop != NULL);
    tq = timerq_new(base);
    ua = sipua_new(suloop_root(loop), base, tq, &cfg, subs_ua_ops(), kick, loop);
    FUZZ_CHECK(ua != NULL);
    store = store_new(base, &cfg);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char out[MAX_DGRAM + 1024];
    const char *p = (const char *)data, *end = p + size;
    struct bridge *b;

    ndlgs = 0;
    memset(dlgs, 0, sizeof dlgs);
    b = bridge_new(base, tq, &cfg, ua, store);
    /* Alone, a sipbridge holds every user (member.c's decision, main.c's call). */
    for (size_t i = 0; i < cfg.nusers; i++)
        bridge_hold(b, cfg.users[i].jid, false);
    /* The ramp sends the first SUBSCRIBE at once and the rest a millisecond later. */
    for (int i = 0; i < 50 && ndlgs < NSUB; i++)
        pump_wait(1, ndlgs > 0);
    FUZZ_CHECK(ndlgs == NSUB);
    pump(2);
    while (p < end) {
        const char *sep = memmem(p, (size_t)(end - p), "\n#--\n", 5);
        const char *stop = sep ? sep : end;
        const struct sockaddr_in *from = &pbx_addr;
        double before = metric_value("offhook_notifies_total{package=\"dialog\"}") +
                        metric_value("offhook_notifies_total{package=\"presence\"}") +
                        metric_value("offhook_notifies_total{package=\"reg\"}");
        size_t n;

        if (stop - p >= 3 && memcmp(p, "@2 ", 3) == 0) {
            from = &stranger_addr;
            p += 3;
        }
        n = substitute(p, (size_t)(stop - p), out, MAX_DGRAM);
        out[n] = '\0';
        sipua_input(ua, out, n, (const struct sockaddr *)from, sizeof *from);
        pump(2);
        if (from == &stranger_addr)
            FUZZ_CHECK(metric_value("offhook_notifies_total{package=\"dialog\"}") +
                           metric_value("offhook_notifies_total{package=\"presence\"}") +
                           metric_value("offhook_notifies_total{package=\"reg\"}") ==
                       before);
        check_subscriptions(b);
        p = sep ? sep + 5 : end;
    }
    bridge_free(b);
    for (int i = 0; i < 20 && metric_value("offhook_sip_dialogs") > 0; i++)
        pump(1);
    FUZZ_CHECK(metric_value("offhook_sip_dialogs") == 0);
    return 0;
}
