/* UDP in batches: recvmmsg per wakeup, sendmmsg per batch (see sipudp.h). */
#include "sipudp.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "strutil.h"

#define BATCH 32           /* datagrams read per recvmmsg */
#define MAX_DGRAM 65535
#define OUT_SLOTS 64       /* answers queued per batch before an early flush */
#define OUT_MAX 4096       /* largest answer queued (ours are a few hundred bytes) */
#define ROUNDS 4           /* full batches read per wakeup before yielding to the loop */

struct out_slot {
    struct sockaddr_storage to;
    socklen_t tolen;
    size_t len;
    char buf[OUT_MAX];
};

struct sipudp {
    int fd;
    struct event *ev;
    const struct sipudp_ops *ops;
    void *arg;
    char hostport[300];
    bool in_batch;                 /* sends are queued, flushed at the batch's end */
    uint32_t last_ovfl;            /* SO_RXQ_OVFL as last seen */
    bool have_ovfl;
    uint64_t drops;
    /* receive */
    char *bufs;                    /* BATCH x (MAX_DGRAM + 1) */
    struct mmsghdr in[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_storage from[BATCH];
    char ctl[BATCH][CMSG_SPACE(sizeof(uint32_t))];
    /* send */
    struct out_slot *out;          /* OUT_SLOTS */
    int nout;
};

static void flush(struct sipudp *u)
{
    struct mmsghdr msgs[OUT_SLOTS];
    struct iovec iov[OUT_SLOTS];
    int done = 0;

    for (int i = 0; i < u->nout; i++) {
        iov[i] = (struct iovec){u->out[i].buf, u->out[i].len};
        memset(&msgs[i], 0, sizeof msgs[i]);
        msgs[i].msg_hdr.msg_name = &u->out[i].to;
        msgs[i].msg_hdr.msg_namelen = u->out[i].tolen;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    while (done < u->nout) {
        int n = sendmmsg(u->fd, msgs + done, (unsigned)(u->nout - done), MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* A full send buffer or an unreachable peer loses this answer, as a lost
             * datagram would: the notifier retransmits its request. Skip it. */
            log_debug("sip", "event=udp_send_failed error=\"%s\"", strerror(errno));
            done++;
            continue;
        }
        done += n;
    }
    u->nout = 0;
}

int sipudp_send(struct sipudp *u, const void *buf, size_t len, const struct sockaddr *to,
                socklen_t tolen)
{
    struct out_slot *s;

    if (len > OUT_MAX || tolen > sizeof s->to)
        return -1;
    if (u->nout == OUT_SLOTS)
        flush(u);
    s = &u->out[u->nout++];
    memcpy(s->buf, buf, len);
    s->len = len;
    memcpy(&s->to, to, tolen);
    s->tolen = tolen;
    if (!u->in_batch)
        flush(u);
    return 0;
}

/* The drop counter the kernel attaches to each datagram: the total so far. */
static void note_drops(struct sipudp *u, struct msghdr *mh)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        uint32_t v;

        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SO_RXQ_OVFL)
            continue;
        memcpy(&v, CMSG_DATA(c), sizeof v);
        if (u->have_ovfl && v != u->last_ovfl) {
            uint32_t n = v - u->last_ovfl;
            u->drops += n;
            if (u->ops->on_drops)
                u->ops->on_drops(u->arg, n);
        }
        u->last_ovfl = v;
        u->have_ovfl = true;
    }
}

/* ICMP errors queued by IP_RECVERR: each names the destination of what failed. */
static void drain_errors(struct sipudp *u)
{
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage dst;
        char data[64], ctl[512];
        struct iovec iov = {data, sizeof data};
        struct msghdr mh = {.msg_name = &dst, .msg_namelen = sizeof dst, .msg_iov = &iov,
                            .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};

        if (recvmsg(u->fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
            return;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
            struct sock_extended_err ee;

            if (!((c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_RECVERR) ||
                  (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_RECVERR)))
                continue;
            memcpy(&ee, CMSG_DATA(c), sizeof ee);
            if ((ee.ee_origin == SO_EE_ORIGIN_ICMP || ee.ee_origin == SO_EE_ORIGIN_ICMP6) &&
                u->ops->on_unreachable)
                u->ops->on_unreachable(u->arg, (struct sockaddr *)&dst, mh.msg_namelen,
                                       (int)ee.ee_errno);
        }
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct sipudp *u = arg;

    u->in_batch = true;
    for (int round = 0; round < ROUNDS; round++) {
        int n;

        for (int i = 0; i < BATCH; i++) {
            u->iov[i].iov_base = u->bufs + (size_t)i * (MAX_DGRAM + 1);
            u->iov[i].iov_len = MAX_DGRAM;
            memset(&u->in[i].msg_hdr, 0, sizeof u->in[i].msg_hdr);
            u->in[i].msg_hdr.msg_name = &u->from[i];
            u->in[i].msg_hdr.msg_namelen = sizeof u->from[i];
            u->in[i].msg_hdr.msg_iov = &u->iov[i];
            u->in[i].msg_hdr.msg_iovlen = 1;
            u->in[i].msg_hdr.msg_control = u->ctl[i];
            u->in[i].msg_hdr.msg_controllen = sizeof u->ctl[i];
        }
        n = recvmmsg(u->fd, u->in, BATCH, MSG_DONTWAIT, NULL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            /* A pending ICMP error is reported by the next read: its details are in
             * the error queue; then the datagrams behind it are read as usual. */
            drain_errors(u);
            continue;
        }
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            char *buf = u->iov[i].iov_base;
            size_t len = u->in[i].msg_len;

            note_drops(u, &u->in[i].msg_hdr);
            if (u->in[i].msg_hdr.msg_flags & MSG_TRUNC)
                continue; /* larger than any datagram: cannot be a whole message */
            buf[len] = '\0';
            u->ops->on_datagram(u->arg, buf, len, (struct sockaddr *)&u->from[i],
                                u->in[i].msg_hdr.msg_namelen);
        }
        if (n < BATCH)
            break; /* drained: no need for a call that would say EAGAIN */
    }
    flush(u);
    u->in_batch = false;
}

struct sipudp *sipudp_new(struct event_base *base, const char *host, int port, int rcvbuf,
                          const struct sipudp_ops *ops, void *arg)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM,
                             .ai_flags = AI_NUMERICHOST | AI_PASSIVE};
    struct addrinfo *ai = NULL;
    struct sipudp *u = NULL;
    char portstr[16];
    int one = 1, fd = -1, rc;

    snprintf(portstr, sizeof portstr, "%d", port);
    rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        char where[300];
        snprintf(where, sizeof where, "udp:%s:%d", host, port);
        log_err("sip", "event=bind_failed listen=%s reason=\"%s (a numeric address is "
                       "needed)\"",
                log_q(where), gai_strerror(rc));
        return NULL;
    }
    fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        char where[300];
        snprintf(where, sizeof where, "udp:%s:%d", host, port);
        log_err("sip", "event=bind_failed listen=%s reason=\"%s\"", log_q(where),
                strerror(errno));
        goto fail;
    }
    /* A PBX answering a mass re-SUBSCRIBE sends a burst of NOTIFYs: the default buffer
     * (208 KiB) drops some. Capped by net.core.rmem_max unless run with CAP_NET_ADMIN. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    (void)setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        (void)setsockopt(fd, IPPROTO_IPV6, IPV6_RECVERR, &one, sizeof one);
    (void)setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof one);
    u = xcalloc(1, sizeof *u);
    u->fd = fd;
    u->ops = ops;
    u->arg = arg;
    u->bufs = xmalloc((size_t)BATCH * (MAX_DGRAM + 1));
    u->out = xmalloc(OUT_SLOTS * sizeof *u->out);
    if (ai->ai_family == AF_INET6)
        snprintf(u->hostport, sizeof u->hostport, "[%s]:%d", host, port);
    else
        snprintf(u->hostport, sizeof u->hostport, "%s:%d", host, port);
    u->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, u);
    event_add(u->ev, NULL);
    freeaddrinfo(ai);
    return u;
fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return NULL;
}

void sipudp_free(struct sipudp *u)
{
    if (!u)
        return;
    event_free(u->ev);
    close(u->fd);
    free(u->bufs);
    free(u->out);
    free(u);
}

const char *sipudp_hostport(const struct sipudp *u)
{
    return u->hostport;
}

uint64_t sipudp_drops(const struct sipudp *u)
{
    return u->drops;
}
