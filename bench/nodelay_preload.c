/* nodelay_preload: an LD_PRELOAD shim for bench/run.py --component-nodelay. Every TCP
 * socket the process creates gets TCP_NODELAY, as if offhook-component's sockopt callback
 * set it on its XEP-0114 stream (it does not: libstrophe writes each stanza as one small
 * segment, which Nagle's algorithm may hold until the previous one is acknowledged).
 * A diagnostic for the benchmark only, so that the effect can be measured before the
 * component is changed:
 *
 *   cc -shared -fPIC -O2 bench/nodelay_preload.c -o nodelay_preload.so -ldl
 *   LD_PRELOAD=$PWD/nodelay_preload.so offhook-component -c offhook.conf */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int socket(int domain, int type, int protocol)
{
    static int (*real_socket)(int, int, int);
    int fd, on = 1;

    if (!real_socket)
        real_socket = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    fd = real_socket(domain, type, protocol);
    if (fd >= 0 && (domain == AF_INET || domain == AF_INET6) &&
        (type & 0xf) == SOCK_STREAM)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    return fd;
}
