/* sipbridge's UDP listen socket, driven by the libevent loop: datagrams are read in
 * batches (recvmmsg) and handed up one by one; the answers queued meanwhile leave in one
 * sendmmsg at the end of the batch. The kernel's count of datagrams dropped for want of
 * buffer (SO_RXQ_OVFL) is read with every batch and reported. This is the path every
 * NOTIFY over UDP takes: a wakeup, one read and one write per batch, no allocation.
 * ICMP errors for what was sent (IP_RECVERR) are read from the error queue and reported,
 * so that a request to a port nobody listens on fails at once, not after its timeout.
 * Called by sipua.c, which gets each datagram through struct sipudp_ops. */
#ifndef OFFHOOK_SIPUDP_H
#define OFFHOOK_SIPUDP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct sipudp;

struct sipudp_ops {
    /* One datagram of len bytes from `from`. buf (writable, NUL-terminated past len) and
     * from are valid during the call only. */
    void (*on_datagram)(void *arg, char *buf, size_t len, const struct sockaddr *from,
                        socklen_t fromlen);
    /* The kernel dropped n more datagrams on this socket (receive buffer full). */
    void (*on_drops)(void *arg, uint32_t n);
    /* An ICMP error came back for a datagram sent to `to` (port unreachable: nothing
     * listens there); err is its errno (ECONNREFUSED, EHOSTUNREACH...). */
    void (*on_unreachable)(void *arg, const struct sockaddr *to, socklen_t tolen, int err);
};

/* Binds host:port (numeric address) and starts reading. rcvbuf: receive buffer asked
 * for (capped by net.core.rmem_max). ops (static) report to arg. NULL (logged) on
 * failure. */
struct sipudp *sipudp_new(struct event_base *base, const char *host, int port, int rcvbuf,
                          const struct sipudp_ops *ops, void *arg);
void sipudp_free(struct sipudp *u);
/* Queues a datagram to `to` (copied); sent with the batch being handled, or at once when
 * called outside one. Returns 0, or -1 if it could not be queued or sent. */
int sipudp_send(struct sipudp *u, const void *buf, size_t len, const struct sockaddr *to,
                socklen_t tolen);
/* The socket's local port and address text (for Contact), "host:port". */
const char *sipudp_hostport(const struct sipudp *u);
/* Datagrams the kernel dropped on this socket since it was opened. */
uint64_t sipudp_drops(const struct sipudp *u);

#endif
