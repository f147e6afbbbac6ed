/* sink: the watcher side of offhook's end-to-end benchmark. A cheap XMPP client
 * (libstrophe, client mode, TLS disabled) that logs in, sends initial presence and
 * records every presence stanza it receives, one line each:
 *
 *     t_us from show status
 *
 * t_us is the wall clock (CLOCK_REALTIME, as pbxsim's events log) when the stanza's handler
 * ran; show is the <show/> text, "available" when there is none, or the stanza's type
 * when it has one (unavailable, subscribe, error ...); status is the rest of the line
 * (empty when there is none). Lines are buffered and flushed every 200 ms and at exit.
 *
 * It does not subscribe to anything: the benchmark writes the watcher set into Redis
 * (offhook:watchers:<contact>) before the component starts, and Prosody delivers presence
 * sent to the bare JID to every available resource whatever the roster says.
 *
 *   sink --jid watcher@localhost --password pw --port 5222 --out FILE [--host 127.0.0.1]
 *        [--resource bench]
 *
 * Exits 0 on SIGTERM/SIGINT, 1 if the stream could not be set up or was lost. Prints
 * "sink: online" on stderr once its initial presence is sent, and a count at exit. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <strophe.h>

static volatile sig_atomic_t stop_requested;
static FILE *out;
static unsigned long long received;
static int failed;
static int online;

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Text of the first child element called name, or NULL; no copy is made. */
static const char *child_text(xmpp_stanza_t *st, const char *name)
{
    xmpp_stanza_t *c = xmpp_stanza_get_child_by_name(st, name), *t;

    if (!c || !(t = xmpp_stanza_get_children(c)))
        return NULL;
    return xmpp_stanza_is_text(t) ? xmpp_stanza_get_text_ptr(t) : NULL;
}

/* Writes s without characters that would break the one-line format. */
static void put_clean(const char *s)
{
    for (; *s; s++)
        putc(*s == '\n' || *s == '\r' ? ' ' : *s, out);
}

static int on_presence(xmpp_conn_t *conn, xmpp_stanza_t *st, void *ud)
{
    int64_t t = now_us();
    const char *from = xmpp_stanza_get_from(st);
    const char *type = xmpp_stanza_get_type(st);
    const char *show = type ? type : child_text(st, "show");
    const char *status = child_text(st, "status");

    (void)conn;
    (void)ud;
    fprintf(out, "%lld %s %s ", (long long)t, from ? from : "-", show ? show : "available");
    if (status)
        put_clean(status);
    putc('\n', out);
    received++;
    return 1;
}

static int flush_timer(xmpp_conn_t *conn, void *ud)
{
    (void)conn;
    (void)ud;
    fflush(out);
    return 1;
}

static void on_conn(xmpp_conn_t *conn, xmpp_conn_event_t status, int error,
                    xmpp_stream_error_t *stream_error, void *ud)
{
    xmpp_ctx_t *ctx = ud;

    (void)stream_error;
    if (status == XMPP_CONN_CONNECT) {
        xmpp_stanza_t *pres = xmpp_presence_new(ctx);

        xmpp_handler_add(conn, on_presence, NULL, "presence", NULL, NULL);
        xmpp_timed_handler_add(conn, flush_timer, 200, NULL);
        /* Initial presence: Prosody routes presence to a bare JID only to available
         * resources. Priority -1 keeps messages away from this resource. */
        xmpp_stanza_t *prio = xmpp_stanza_new(ctx), *txt = xmpp_stanza_new(ctx);
        xmpp_stanza_set_name(prio, "priority");
        xmpp_stanza_set_text(txt, "-1");
        xmpp_stanza_add_child_ex(prio, txt, 0);
        xmpp_stanza_add_child_ex(pres, prio, 0);
        xmpp_send(conn, pres);
        xmpp_stanza_release(pres);
        online = 1;
        fprintf(stderr, "sink: online\n");
        return;
    }
    fprintf(stderr, "sink: disconnected (error %d%s)\n", error,
            online ? ", after being online" : ", login failed");
    failed = 1;
    xmpp_stop(ctx);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"jid", required_argument, NULL, 'j'},      {"password", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, 'H'},     {"port", required_argument, NULL, 'P'},
        {"out", required_argument, NULL, 'o'},      {"resource", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    const char *jid = NULL, *password = NULL, *host = "127.0.0.1", *path = NULL,
               *resource = "bench";
    unsigned short port = 5222;
    char fulljid[512];
    xmpp_ctx_t *ctx;
    xmpp_conn_t *conn;
    struct sigaction sa;
    int c;

    while ((c = getopt_long(argc, argv, "j:p:H:P:o:r:", opts, NULL)) != -1) {
        switch (c) {
        case 'j': jid = optarg; break;
        case 'p': password = optarg; break;
        case 'H': host = optarg; break;
        case 'P': port = (unsigned short)atoi(optarg); break;
        case 'o': path = optarg; break;
        case 'r': resource = optarg; break;
        default:
            fprintf(stderr, "usage: %s --jid JID --password PW --out FILE [--host H] "
                            "[--port P] [--resource R]\n", argv[0]);
            return 2;
        }
    }
    if (!jid || !password || !path) {
        fprintf(stderr, "sink: --jid, --password and --out are required\n");
        return 2;
    }
    out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "sink: %s: %s\n", path, strerror(errno));
        return 1;
    }
    setvbuf(out, NULL, _IOFBF, 1 << 20);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    xmpp_initialize();
    ctx = xmpp_ctx_new(NULL, NULL); /* no logger: libstrophe then formats no traces */
    conn = xmpp_conn_new(ctx);
    snprintf(fulljid, sizeof fulljid, "%s/%s", jid, resource);
    xmpp_conn_set_jid(conn, fulljid);
    xmpp_conn_set_pass(conn, password);
    /* Loopback benchmark: no TLS (Prosody's harness config allows plaintext auth), and no
     * XEP-0198 acks to send per stanza. */
    xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_DISABLE_TLS | XMPP_CONN_FLAG_DISABLE_SM);
    if (xmpp_connect_client(conn, host, port, on_conn, ctx) != XMPP_EOK) {
        fprintf(stderr, "sink: cannot connect to %s:%u\n", host, port);
        return 1;
    }
    /* xmpp_run() would wake every millisecond (libstrophe's default loop timeout); the
     * flush timer bounds the wait instead. */
    while (!stop_requested && !failed)
        xmpp_run_once(ctx, 500);
    fflush(out);
    fclose(out);
    fprintf(stderr, "sink: received %llu presences\n", received);
    xmpp_conn_release(conn);
    xmpp_ctx_free(ctx);
    xmpp_shutdown();
    return failed ? 1 : 0;
}
