/* offhookctl check: can offhook reach what it needs, with the credentials it has? One
 * verdict per upstream: Redis (check.c), the XMPP server (xmppcheck.c), the PBX
 * (sipcheck.c). Called by offhookctl.c; blocking, each bounded by a timeout. */
#ifndef OFFHOOK_CTL_CHECK_H
#define OFFHOOK_CTL_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct offhook_config;

struct check_result {
    char name[16];     /* "redis", "xmpp", "pbx" */
    char target[192];  /* what was tried: "127.0.0.1:6379 db 0", "udp 192.0.2.10:5060" */
    bool ok;
    char detail[384];  /* why, in words an operator acts on; never a secret */
    double ms;         /* how long the check took */
    int64_t t0_us;     /* set by check_begin */
};

/* Connects, AUTHs with [redis] password, SELECTs the database, PINGs and asks ROLE: a
 * replica (read-only: sipbridge's writes would be refused) or a Sentinel fails. With
 * [redis] sentinels, every sentinel is asked for the master first: none answering fails,
 * some failing or disagreeing is said in the detail; then the master named is checked. */
void check_redis(const struct offhook_config *cfg, int timeout_ms, struct check_result *r);

/* With [redis] sentinels: asks them in turn (each within timeout_ms, with [redis]
 * sentinel_password) where the master of master_name is; stops at the first answer, or
 * with all asks every one. Returns true with host and port filled; note (may be NULL)
 * then says which sentinels failed or named another master, or, on false, why none
 * answered. */
bool check_ask_sentinels(const struct offhook_config *cfg, int timeout_ms, bool all,
                         char *host, size_t hostlen, int *port, char *note, size_t notelen);

/* ---- helpers shared by the checks ------------------------------------------------- */

/* Fills r's name and target and starts its clock. */
void check_begin(struct check_result *r, const char *name, const char *target_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets the verdict and the time taken; returns r->ok. */
bool check_end(struct check_result *r, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A TCP connection to host:port (a name, IPv4 or IPv6 literal) within timeout_ms, trying
 * each address; the socket is left blocking. Returns the fd, or -1 with why in err. */
int check_tcp_connect(const char *host, int port, int timeout_ms, char *err, size_t errlen);
/* Milliseconds left until deadline (clock_mono_ms() based), at least 0. */
int check_left_ms(int64_t deadline);
/* Copies at most len bytes of s into out as printable ASCII (others become '?'), for
 * quoting what a server said. */
void check_printable(char *out, size_t outlen, const char *s, size_t len);

#endif
