/* su_root on libevent. Sofia 1.12 exposes no descriptor for its loop, but on Linux its
 * default port is one epoll instance, created by su_root_create(): we find that
 * descriptor (the one new epoll fd), prove it is Sofia's by registering a pipe with the
 * root and seeing the epoll fd turn readable, and then watch it. An epoll fd is readable
 * while any descriptor registered in it is ready, so one libevent event covers every
 * socket Sofia opens later. Timers: su_root_step() returns the delay to the next one.
 * Work queued from this thread (every nta_*() call) does not wake the port: callers kick. */
#include "suloop.h"

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <event2/event.h>
#include <sofia-sip/su_log.h>

#include "log.h"
#include "strutil.h"

struct suloop {
    su_root_t *root;
    struct event *ev_io;
    struct event *ev_timer;
    struct event *ev_kick;  /* one step soon: work was queued from this thread */
    int epfd;
    bool stepping; /* a step is running: callbacks from inside must not recurse */
};

#define MAX_FDS 4096

static int list_fds(int *fds, int max)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)) && n < max) {
        long fd;
        if (str_parse_long(e->d_name, 0, 1 << 30, &fd) == 0 && fd != dirfd(d))
            fds[n++] = (int)fd;
    }
    closedir(d);
    return n;
}

static int probe_cb(su_root_magic_t *magic, su_wait_t *w, su_wakeup_arg_t *arg)
{
    return 0;
}

/* True if Sofia's root signals readiness through epfd; p is a pipe (read, write). */
static bool root_uses(su_root_t *root, int epfd, const int p[2])
{
    su_wait_t w[1] = {SU_WAIT_INIT};
    struct pollfd pfd = {.fd = epfd, .events = POLLIN};
    char drain[8];
    int idx;
    bool ok = false;

    if (su_wait_create(w, p[0], SU_WAIT_IN) != 0)
        return false;
    idx = su_root_register(root, w, probe_cb, NULL, 0);
    if (idx <= 0) {
        su_wait_destroy(w);
        return false;
    }
    if (write(p[1], "x", 1) == 1) {
        ok = poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
        if (read(p[0], drain, sizeof drain) < 0)
            ok = false;
    }
    su_root_deregister(root, idx);
    return ok;
}

static int find_root_fd(su_root_t *root, const int *before, int nbefore)
{
    int after[MAX_FDS];
    int nafter = list_fds(after, MAX_FDS);
    int p[2], found = -1;

    if (pipe(p) < 0)
        return -1;
    for (int i = 0; i < nafter && found < 0; i++) {
        struct epoll_event ev = {0};
        bool old = after[i] == p[0] || after[i] == p[1];

        for (int j = 0; j < nbefore && !old; j++)
            old = before[j] == after[i];
        if (old)
            continue;
        /* An epoll instance answers ENOENT for a pipe it does not hold; any other kind
         * of descriptor answers EINVAL. */
        if (epoll_ctl(after[i], EPOLL_CTL_DEL, p[0], &ev) < 0 && errno == ENOENT &&
            root_uses(root, after[i], p))
            found = after[i];
    }
    close(p[0]);
    close(p[1]);
    return found;
}

static void step(struct suloop *l)
{
    su_duration_t next;

    if (l->stepping)
        return;
    l->stepping = true;
    next = su_root_step(l->root, 0);
    l->stepping = false;
    if (next < 0) {
        evtimer_del(l->ev_timer);
    } else {
        /* Sofia rounds the delay down to whole milliseconds: a timer due in 0.4 ms reads
         * as 0, and stepping again at once would spin until it is really due (10,000
         * lingering transactions expiring made 600,000 empty steps in 5 s). One
         * millisecond is within Sofia's own timer precision; work queued by nta calls
         * gets its step at once through suloop_kick(). */
        struct timeval tv = {.tv_sec = next / 1000, .tv_usec = (next % 1000) * 1000};
        if (next == 0)
            tv.tv_usec = 1000;
        evtimer_add(l->ev_timer, &tv);
    }
}

static void on_event(evutil_socket_t fd, short what, void *arg)
{
    step(arg);
}

struct suloop *suloop_new(struct event_base *base)
{
    struct suloop *l;
    int before[MAX_FDS];
    int nbefore;

    if (su_init() != 0) {
        log_err("sip", "event=init_failed reason=\"su_init failed\"");
        return NULL;
    }
    /* Sofia's default on Linux is epoll; asking for it keeps the adapter's premise true. */
    su_port_prefer(su_epoll_port_create, NULL);
    nbefore = list_fds(before, MAX_FDS);
    l = xcalloc(1, sizeof *l);
    l->root = su_root_create(NULL);
    if (!l->root || nbefore < 0) {
        log_err("sip", "event=init_failed reason=\"su_root_create failed\"");
        goto fail;
    }
    /* One thread: nta runs on this root, called from the loop's own thread. */
    su_root_threading(l->root, 0);
    l->epfd = find_root_fd(l->root, before, nbefore);
    if (l->epfd < 0) {
        log_err("sip", "event=init_failed reason=\"cannot find the su_root epoll descriptor\"");
        goto fail;
    }
    l->ev_io = event_new(base, l->epfd, EV_READ | EV_PERSIST, on_event, l);
    l->ev_timer = evtimer_new(base, on_event, l);
    l->ev_kick = event_new(base, -1, 0, on_event, l);
    event_add(l->ev_io, NULL);
    log_debug("sip", "event=loop_attached epfd=%d", l->epfd);
    return l;
fail:
    if (l->root)
        su_root_destroy(l->root);
    free(l);
    su_deinit();
    return NULL;
}

su_root_t *suloop_root(const struct suloop *l)
{
    return l->root;
}

void suloop_kick(struct suloop *l)
{
    /* Sofia's port wakes itself (mailbox socket) only for messages from other threads;
     * an nta call made here (a new transaction's timers) is seen only at the next
     * step, so ask for one. */
    event_active(l->ev_kick, EV_TIMEOUT, 1);
}

void suloop_free(struct suloop *l)
{
    if (!l)
        return;
    event_free(l->ev_io);
    event_free(l->ev_timer);
    event_free(l->ev_kick);
    su_root_destroy(l->root);
    free(l);
    su_deinit();
}

/* Sofia writes a record in several calls; lines are assembled before logging. */
static char sofia_line[1024];
static size_t sofia_len;

__attribute__((format(printf, 2, 0)))
static void sofia_logger(void *stream, char const *fmt, va_list ap)
{
    char buf[1024];
    int n = vsnprintf(buf, sizeof buf, fmt, ap);

    if (n < 0)
        return;
    for (const char *p = buf; *p; p++) {
        if (*p == '\n' || sofia_len == sizeof sofia_line - 1) {
            sofia_line[sofia_len] = '\0';
            if (sofia_len && LOG_DEBUG <= log_level) {
                /* Sofia's traces hold SIP messages: a peer's text stays inside msg. */
                char q[LOG_Q_SIZE(sizeof sofia_line)];
                log_debug("sofia", "msg=%s", log_q_buf(q, sofia_line, sizeof sofia_line));
            }
            sofia_len = 0;
            if (*p == '\n')
                continue;
        }
        sofia_line[sofia_len++] = *p;
    }
}

void suloop_route_logs(int offhook_level)
{
    su_log_redirect(NULL, sofia_logger, NULL);
    /* Sofia's levels: 0 fatal .. 9 everything. Its messages are diagnostics for us:
     * with offhook at debug, Sofia's errors and protocol notes (3) are shown. */
    su_log_set_level(NULL, offhook_level >= LOG_DEBUG ? 3 : 0);
}
