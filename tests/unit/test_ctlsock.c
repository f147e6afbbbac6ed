/* The control socket (common/ctlsock.c) on a real libevent loop and real Unix sockets, in
 * one process: framing and dot-stuffing, long answers turn by turn while other clients
 * are served, what a bad client gets, the client limit, half-closed clients, the socket
 * file's mode and who may replace it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "ctlproto.h"
#include "ctlsock.h"
#include "metrics.h"
#include "sbuf.h"
#include "strutil.h"

struct fixture {
    char dir[64];
    char path[128];
    struct event_base *base;
    struct ctlsock *s;
};

static int turns, states_freed;

static enum ctl_result run_dots(void *arg, struct ctl_call *c)
{
    ctl_puts(c, ".hidden\nplain\n..two\n.\nlast line without LF");
    return CTL_DONE;
}

struct counter {
    long next, end;
};

static void free_counter(void *p)
{
    states_freed++;
    free(p);
}

/* "big N": N numbered lines of 100 bytes, as many turns as it takes. */
static enum ctl_result run_big(void *arg, struct ctl_call *c)
{
    struct counter *k = ctl_state(c);

    turns++;
    if (ctl_first(c)) {
        long n;
        if (ctl_argc(c) != 1 || str_parse_long(ctl_arg(c, 0), 1, 10000000, &n) < 0) {
            ctl_fail(c, CTL_ERR_USAGE, "big N");
            return CTL_DONE;
        }
        k = xcalloc(1, sizeof *k);
        k->end = n;
        ctl_set_state(c, k, free_counter);
    }
    while (k->next < k->end) {
        if (ctl_full(c))
            return CTL_MORE;
        ctl_printf(c, "%08ld %090d\n", k->next++, 0);
    }
    return CTL_DONE;
}

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof *f);
    char err[256];

    signal(SIGPIPE, SIG_IGN); /* as daemon_setup() does in the daemons */
    snprintf(f->dir, sizeof f->dir, "/tmp/offhook-ctlsock-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/ctl.sock", f->dir);
    f->base = event_base_new();
    ctlsock_register_metrics();
    f->s = ctlsock_new(f->base, f->path, err, sizeof err);
    assert_non_null(f->s);
    ctlsock_add(f->s, &(struct ctl_command){.name = "dots", .usage = "", .help = "dots",
                                            .run = run_dots});
    ctlsock_add(f->s, &(struct ctl_command){.name = "big", .usage = "N", .help = "lines",
                                            .run = run_big});
    turns = states_freed = 0;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;

    ctlsock_free(f->s);
    event_base_free(f->base);
    metrics_reset();
    rmdir(f->dir);
    free(f);
    return 0;
}

static int client(const struct fixture *f)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);

    strcpy(sa.sun_path, f->path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void say(int fd, const char *text)
{
    assert_int_equal(send(fd, text, strlen(text), MSG_NOSIGNAL), (ssize_t)strlen(text));
}

/* Runs the loop and reads fd until got holds `until` (NULL: until EOF) or ms pass.
 * Returns true on success; *eof tells whether the daemon closed. */
static bool pump(const struct fixture *f, int fd, struct sbuf *got, const char *until, int ms,
                 bool *eof)
{
    int64_t end = clock_mono_ms() + ms;

    if (eof)
        *eof = false;
    while (clock_mono_ms() < end) {
        char buf[65536];
        ssize_t n;

        event_base_loop(f->base, EVLOOP_NONBLOCK);
        n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0)
            sbuf_append(got, buf, (size_t)n);
        if (n == 0) {
            if (eof)
                *eof = true;
            return until == NULL || (got->data && strstr(got->data, until));
        }
        if (until && got->data && strstr(got->data, until))
            return true;
        if (n < 0)
            usleep(500);
    }
    return false;
}

static void test_socket_file(void **state)
{
    struct fixture *f = *state;
    struct stat st;

    assert_int_equal(lstat(f->path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 07777, CTL_SOCKET_MODE);
}

static void test_help_and_framing(void **state)
{
    struct fixture *f = *state;
    int fd = client(f);
    struct sbuf got;

    sbuf_init(&got);
    say(fd, "help\n");
    assert_true(pump(f, fd, &got, "\n.\n", 2000, NULL));
    assert_true(str_has_prefix(got.data, "OK\n"));
    assert_non_null(strstr(got.data, "\ndots "));
    assert_non_null(strstr(got.data, "\nbig N "));

    /* Body lines that begin with a dot get one more; a last line gets its LF. */
    sbuf_reset(&got);
    say(fd, "dots\n");
    assert_true(pump(f, fd, &got, "\n.\n", 2000, NULL));
    assert_string_equal(got.data, "OK\n..hidden\nplain\n...two\n..\nlast line without LF\n.\n");

    /* Unknown command and usage errors keep the connection. */
    sbuf_reset(&got);
    say(fd, "nosuch thing\n");
    assert_true(pump(f, fd, &got, "\n.\n", 2000, NULL));
    assert_string_equal(got.data, "ERR unknown no command 'nosuch' (try help)\n.\n");
    sbuf_reset(&got);
    say(fd, "big\n");
    assert_true(pump(f, fd, &got, "\n.\n", 2000, NULL));
    assert_string_equal(got.data, "ERR usage big N\n.\n");

    /* Requests sent together are answered in order; empty lines are skipped. */
    sbuf_reset(&got);
    say(fd, "\n\r\nbig 1\nbig 2\n");
    {
        char line0[128], line1[128], want[512];
        snprintf(line0, sizeof line0, "%08d %090d\n", 0, 0);
        snprintf(line1, sizeof line1, "%08d %090d\n", 1, 0);
        snprintf(want, sizeof want, "OK\n%s.\nOK\n%s%s.\n", line0, line0, line1);
        assert_true(pump(f, fd, &got, want, 2000, NULL));
        assert_string_equal(got.data, want);
    }
    close(fd);
    sbuf_free(&got);
}

/* A long answer goes out turn by turn, as it is read; meanwhile another client is served. */
static void test_long_answer_does_not_hold_the_loop(void **state)
{
    struct fixture *f = *state;
    const long lines = 50000; /* 5 MB: many turns */
    int a = client(f), b = client(f);
    struct sbuf got, other;
    long seen = 0;

    sbuf_init(&got);
    sbuf_init(&other);
    say(a, "big 50000\n");
    /* a reads nothing yet: its answer waits, b's does not. */
    for (int i = 0; i < 20; i++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    say(b, "help\n");
    assert_true(pump(f, b, &other, "\n.\n", 2000, NULL));
    assert_true(turns < 10); /* a's answer is not being produced past what waits */
    assert_true(pump(f, a, &got, "\n.\n", 20000, NULL));
    assert_true(turns > 10);
    /* Every line, in order, whole. */
    for (const char *p = got.data + 3; *p && *p != '.'; seen++) {
        char num[24];
        snprintf(num, sizeof num, "%08ld", seen);
        assert_memory_equal(p, num, 8);
        p = strchr(p, '\n') + 1;
    }
    assert_int_equal(seen, lines);
    assert_int_equal(states_freed, 1);
    close(a);
    close(b);
    sbuf_free(&got);
    sbuf_free(&other);
}

/* A client that leaves in the middle of an answer: the command's state is freed. */
static void test_client_leaves_mid_answer(void **state)
{
    struct fixture *f = *state;
    int a = client(f), b;
    struct sbuf got;
    char buf[4096];

    sbuf_init(&got);
    say(a, "big 100000\n");
    for (int i = 0; i < 50; i++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_true(recv(a, buf, sizeof buf, 0) > 0);
    close(a);
    for (int i = 0; i < 200 && !states_freed; i++) {
        event_base_loop(f->base, EVLOOP_NONBLOCK);
        usleep(500);
    }
    assert_int_equal(states_freed, 1);
    b = client(f);
    say(b, "dots\n");
    assert_true(pump(f, b, &got, "\n.\n", 2000, NULL));
    close(b);
    sbuf_free(&got);
}

static void expect_dropped(const struct fixture *f, const char *bytes, size_t n,
                           const char *reason)
{
    int fd = client(f);
    struct sbuf got;
    bool eof;

    sbuf_init(&got);
    assert_int_equal(send(fd, bytes, n, MSG_NOSIGNAL), (ssize_t)n);
    assert_true(pump(f, fd, &got, NULL, 3000, &eof));
    assert_true(eof);
    assert_non_null(got.data);
    assert_true(str_has_prefix(got.data, "ERR badrequest "));
    assert_non_null(strstr(got.data, reason));
    close(fd);
    sbuf_free(&got);
}

static void test_garbage_is_dropped(void **state)
{
    struct fixture *f = *state;
    char lots[4096];
    int fd;
    struct sbuf got;

    expect_dropped(f, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n", 12, "control character");
    expect_dropped(f, "user \xff\xfe\n", 8, "not UTF-8");
    memset(lots, 'a', sizeof lots);
    expect_dropped(f, lots, sizeof lots, "too long"); /* no LF at all */
    lots[2000] = '\n';
    expect_dropped(f, lots, 2001, "too long");
    /* The socket still serves. */
    fd = client(f);
    sbuf_init(&got);
    say(fd, "dots\n");
    assert_true(pump(f, fd, &got, "\n.\n", 2000, NULL));
    close(fd);
    sbuf_free(&got);
}

static void test_client_limit(void **state)
{
    struct fixture *f = *state;
    int fds[CTL_MAX_CLIENTS], extra;
    struct sbuf got;
    bool eof;

    sbuf_init(&got);
    for (int i = 0; i < CTL_MAX_CLIENTS; i++) {
        fds[i] = client(f);
        for (int k = 0; k < 5; k++)
            event_base_loop(f->base, EVLOOP_NONBLOCK);
    }
    extra = client(f);
    assert_true(pump(f, extra, &got, NULL, 2000, &eof));
    assert_true(eof);
    assert_true(str_has_prefix(got.data, "ERR busy "));
    close(extra);
    /* One leaves: the next one is served. */
    close(fds[0]);
    for (int k = 0; k < 20; k++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    extra = client(f);
    sbuf_reset(&got);
    say(extra, "dots\n");
    assert_true(pump(f, extra, &got, "\n.\n", 2000, NULL));
    assert_true(str_has_prefix(got.data, "OK\n"));
    close(extra);
    for (int i = 1; i < CTL_MAX_CLIENTS; i++)
        close(fds[i]);
    sbuf_free(&got);
}

/* echo help | socat - UNIX-CONNECT:...: the request, then EOF; the answer still comes. */
static void test_half_closed_client(void **state)
{
    struct fixture *f = *state;
    int fd = client(f);
    struct sbuf got;
    bool eof;

    sbuf_init(&got);
    say(fd, "dots\nbig 3\n");
    shutdown(fd, SHUT_WR);
    assert_true(pump(f, fd, &got, NULL, 3000, &eof));
    assert_true(eof);
    assert_true(str_has_prefix(got.data, "OK\n..hidden"));
    assert_non_null(strstr(got.data, ".\nOK\n00000000 "));
    assert_true(strstr(got.data, "00000002 ") != NULL);
    close(fd);
    sbuf_free(&got);
}

static void test_who_may_have_the_path(void **state)
{
    struct fixture *f = *state;
    char err[256], other[160];
    struct ctlsock *s2;
    int fd;

    /* The daemon running twice: the second does not take the socket. */
    s2 = ctlsock_new(f->base, f->path, err, sizeof err);
    assert_null(s2);
    assert_non_null(strstr(err, "another process serves it"));

    /* A file that is not a socket is never replaced. */
    snprintf(other, sizeof other, "%s/plain", f->dir);
    fd = open(other, O_CREAT | O_WRONLY, 0600);
    close(fd);
    assert_null(ctlsock_new(f->base, other, err, sizeof err));
    assert_non_null(strstr(err, "not a socket"));
    unlink(other);

    /* A socket nobody serves (a daemon killed with -9) is. */
    {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int dead = socket(AF_UNIX, SOCK_STREAM, 0);
        snprintf(other, sizeof other, "%s/stale.sock", f->dir);
        strcpy(sa.sun_path, other);
        assert_int_equal(bind(dead, (struct sockaddr *)&sa, sizeof sa), 0);
        close(dead); /* the file stays, nobody listens */
        s2 = ctlsock_new(f->base, other, err, sizeof err);
        assert_non_null(s2);
        ctlsock_free(s2);
        assert_int_equal(access(other, F_OK), -1); /* removed on free */
    }

    /* Longer than sockaddr_un holds. */
    memset(other, 'x', sizeof other - 1);
    other[0] = '/';
    other[sizeof other - 1] = '\0';
    assert_null(ctlsock_new(f->base, other, err, sizeof err));
    assert_non_null(strstr(err, "at most"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_socket_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_and_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_answer_does_not_hold_the_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_client_leaves_mid_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_is_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_half_closed_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_who_may_have_the_path, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
