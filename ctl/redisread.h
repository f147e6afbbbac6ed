/* What offhookctl reads from Redis: the connection from the configuration (AUTH,
 * SELECT; the master the sentinels name with [redis] sentinels), the users of the
 * daemons' directory copy ([directory] source = ldap), a user's state record, the
 * daemons' heartbeats, a user's subscription states as sipbridge last wrote them.
 * Blocking, each call bounded by a 3 s timeout. Called by offhookctl.c (status, users,
 * resync) and console.c (what a daemon that is down cannot say). */
#ifndef OFFHOOK_REDISREAD_H
#define OFFHOOK_REDISREAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "config.h"
#include "storecodec.h"

/* Connects as the daemons do; server (slen bytes) names where ("host:port", the URL).
 * NULL with the reason in err (len bytes; no secret in it; err may be NULL). Through
 * sentinels, a failover in progress is waited out for a few seconds. */
redisContext *redisread_connect(const struct offhook_config *cfg, char *server, size_t slen,
                                char *err, size_t len);
/* [directory] source = ldap: the file lists nobody; cfg's users become those the daemons
 * last took from the directory, in their copy in Redis, checked as the daemons check them
 * (nothing changes without a directory). Returns 0, or -1 when Redis failed. */
int redisread_directory_users(redisContext *r, struct offhook_config *cfg);
/* One command; NULL when the connection failed (r->errstr says why). Caller frees. */
redisReply *redisread_cmd(redisContext *r, const char *fmt, ...);
/* The user's record; false if sipbridge wrote none (or Redis failed: *failed set). */
bool redisread_record(redisContext *r, const struct offhook_config *cfg, const char *jid,
                      struct user_record *rec, bool *failed);
/* A daemon's last heartbeat (unix ms), 0 when the key is gone: it expires
 * STORE_HEARTBEAT_TTL_MS after the last beat, so 0 means "none within that time",
 * never beaten and dead alike. -1 when Redis failed. */
int64_t redisread_heartbeat(redisContext *r, const struct offhook_config *cfg,
                            const char *daemon);
/* The user's subscriptions as sipbridge last wrote them ("<package> <aor>" -> "<state>
 * <unix ms>"): a reply to HGETALL, NULL when Redis failed. Caller frees. */
redisReply *redisread_subs(redisContext *r, const struct offhook_config *cfg, const char *jid);

#endif
