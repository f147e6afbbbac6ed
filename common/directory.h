/* Where the users come from, for both daemons: the config file ([directory] source =
 * config: the [users] sections config.c reads, changed by SIGHUP) or an LDAP directory
 * (source = ldap: dir_ldap.c keeps it in step; a change is news within seconds). For
 * LDAP it keeps the users in force, checked by dirbuild.c, keeps the last known ones in
 * Redis for a start while the directory is down, and says how it goes in metrics, the
 * log and /readyz. Called by each daemon's main and by daemon.c (reloads). */
#ifndef OFFHOOK_DIRECTORY_H
#define OFFHOOK_DIRECTORY_H

#include <stdbool.h>

#include "sbuf.h"

struct event_base;
struct offhook_config;
struct directory;

/* The users in force changed (news from LDAP, or the last known ones read from Redis):
 * the daemon should take them, through daemon_users_changed(). Called from the loop. */
typedef void (*directory_changed_fn)(void *arg);

/* A directory for cfg's [directory] settings (cfg is only read during the call; what is
 * needed is copied). daemon names the writer in the last-known copy ("sipbridge").
 * With source = config, nothing is started and changed is never called. Returns NULL
 * only if the LDAP session cannot be started (logged). */
struct directory *directory_new(struct event_base *base, const struct offhook_config *cfg,
                                const char *daemon, directory_changed_fn changed, void *arg);
void directory_free(struct directory *d);

/* Puts the users in force into next, which was loaded without users of its own (source
 * = ldap: a reload, or the copy daemon_users_changed makes). With source = config it
 * does nothing: the file's users are in next already. d may be NULL (the same). */
void directory_fill(const struct directory *d, struct offhook_config *next);

/* For /readyz: false until there are users to serve (from the directory or its last
 * known copy), with the reason in why. While serving the last known users of a directory
 * that does not answer it returns true and says so in why all the same. */
bool directory_ready(const struct directory *d, struct sbuf *why);

/* offhook_directory_* metrics. Called once at start by each daemon that has a directory
 * (both). */
void directory_register_metrics(void);

#endif
