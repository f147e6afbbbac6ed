/* The configuration both daemons read: one INI file, keys defined by one table (name,
 * type, default, reloadable, validator) in config.c. Pure: no I/O but reading the file(s).
 * Called by each daemon's main at start and on SIGHUP, and by the unit tests. */
#ifndef OFFHOOK_CONFIG_H
#define OFFHOOK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "strmap.h"

#define CFG_MAX_AORS 8      /* AORs (desk phone, softphone, ...) per user */
#define CFG_MAX_LISTEN 4    /* SIP listen addresses */
#define CFG_MAX_SENTINELS 16 /* [redis] sentinels */
#define CFG_MAX_FILE (64L << 20)
#define CFG_MAX_LINE 4096
#define CFG_MAX_SOCKET_PATH 107 /* sizeof sockaddr_un.sun_path - 1 on Linux */

/* One user, 56 bytes: both daemons hold one per user (100,000 of them). A user of a
 * configuration (cfg->users) points into the configuration's string pool: its strings
 * and pointer arrays are not heap chunks of their own (a 16 B-rounded chunk each wasted
 * ~35 B per user) and go when the configuration is freed. A "loose" user (dirbuild,
 * directory, config_user_copy) owns each of its strings and is freed by config_user_free. */
struct cfg_user {
    char *jid;               /* normalized bare JID of the chat user */
    char *contact;           /* bare JID of the user's phone contact on [xmpp] domain */
    char **aors;             /* naors AORs; loose: one block (owned), the pointers then the
                                strings, written only by config_user_add_aor; NULL when
                                naors is 0 */
    char *name;              /* display name for vCard and roster nick; may be NULL */
    char *tel;               /* phone number for tel: URIs; may be NULL */
    char **groups;           /* the user's groups (roster groups), ngroups of them */
    int line;                /* line that defined the user, for messages; 0 = not the file */
    unsigned char naors;     /* <= CFG_MAX_AORS */
    unsigned char ngroups;   /* <= CFG_MAX_GROUPS */
    signed char show_remote_party; /* -1 = inherit [privacy], else 0/1 */
};

#define CFG_MAX_GROUPS 32   /* groups per user */

/* [component] roster: which phone contacts the component puts in each user's roster. */
enum cfg_roster_mode {
    CFG_ROSTER_NONE,         /* none: rosters are left to the users (and the server) */
    CFG_ROSTER_EVERYONE,     /* every other user of the same domain */
    CFG_ROSTER_GROUPS,       /* every user sharing at least one group */
};

/* A map from a user's JID (or contact) to its index in the configuration's users: open
 * addressing of 4 B slots (index + 1, 0 = empty), the key read from the user itself. A
 * strmap took 16 B a slot and held the key pointer the user already holds. */
struct cfg_index {
    unsigned *slots;
    size_t cap, count;
};
struct cfg_pool_block;

struct redis_target {
    char *host;     /* NULL when unix socket */
    int port;
    char *unix_path;
    int db;
};

struct redis_addr {
    char *host;     /* name or address, IPv6 without brackets */
    int port;
};

struct offhook_config {
    char *path;

    /* [log] */
    char *log_level;

    /* [sip] */
    char *sip_listen;          /* raw text; parsed into sip_listen_urls */
    char *sip_listen_urls[CFG_MAX_LISTEN]; /* Sofia URLs: sip:h:p;transport=udp */
    int sip_nlisten;
    char *sip_pbx;
    char *sip_from;
    char *sip_username;
    char *sip_password;        /* secret */
    char *sip_password_file;
    long sip_expires;
    long sip_max_body;
    char *sip_events;          /* raw list; parsed into the flags below */
    bool sip_event_dialog, sip_event_presence, sip_event_reg;
    long sip_subscribe_rate;   /* SUBSCRIBEs per second at most */
    char *sip_resource_list;   /* RFC 4662 list URI for dialog events, "" = per AOR */
    long sip_coalesce_ms;      /* states shorter than this may be skipped; 0 = off */
    long sip_notify_rate;      /* NOTIFYs per subscription per second, 0 = no limit */
    long sip_probe_interval;   /* seconds between notifier probes, 0 = none */
    long sip_stale_after;      /* seconds without a live subscription before "unknown" */
    long sip_max_backoff;      /* seconds a subscription waits at most before a retry */
    long sip_min_expires;      /* shortest grant kept alive: the SUBSCRIBE pace floor */
    char *sip_notifiers;       /* addresses allowed to NOTIFY in any dialog (clusters) */
    char *sip_tls_dir;         /* agent.pem + cafile.pem for SIP over TLS */
    char *sip_tls_verify;      /* subject | chain | none */

    /* [xmpp] */
    char *xmpp_host;
    long xmpp_port;
    char *xmpp_domain;
    char *xmpp_secret;         /* secret */
    char *xmpp_secret_file;

    /* [redis] */
    char *redis_url;
    struct redis_target redis;
    char *redis_password;      /* secret */
    char *redis_password_file;
    char *redis_prefix;
    char *redis_sentinels;     /* raw list; parsed into redis_sentinel; "" = use url */
    struct redis_addr redis_sentinel[CFG_MAX_SENTINELS];
    int redis_nsentinels;      /* > 0: the master is asked of these, url is unused */
    char *redis_master_name;   /* the name the sentinels monitor the master under */
    char *redis_sentinel_password;      /* secret; "" = the sentinels ask for none */
    char *redis_sentinel_password_file;

    /* [sipbridge] / [component] */
    char *sipbridge_metrics;   /* host:port, or "" to disable */
    char *sipbridge_control;   /* path of its control socket, or "" for none */
    char *sipbridge_instance;  /* name of its lease among the sipbridges; "" = host:pid */
    long sipbridge_lease_ttl;  /* seconds */
    long sipbridge_realtime_priority; /* SCHED_FIFO priority, 0 = the normal scheduler */
    char *component_metrics;
    char *component_control;
    char *component_instance;  /* name of its lease among the components; "" = host:pid */
    long component_lease_ttl;  /* seconds */
    long component_realtime_priority; /* SCHED_FIFO priority, 0 = the normal scheduler */
    char *component_allow_watchers; /* same-domain | any | list */
    char *component_watchers;  /* JIDs and domains allowed when allow_watchers = list */
    char *component_publish;   /* raw list; parsed into the flags below */
    bool publish_contacts, publish_pep, publish_vcard;
    long component_max_stanza;   /* incoming stanzas larger than this are refused */
    bool component_keep_on_stop; /* leave presence and PEP as they are on a clean stop */
    char *component_roster;      /* none | everyone | groups; parsed into roster_mode */
    int roster_mode;             /* enum cfg_roster_mode */
    char *roster_group;          /* the roster group of roster = everyone */
    long roster_max_items;       /* phone contacts one roster may be given, at most */
    long roster_rate;            /* roster changes sent per second, at most */
    char *roster_api;            /* ejabberd mod_http_api URL, "" = XEP-0356 only */
    char *roster_api_user;       /* its HTTP Basic user (a JID), "" = none */
    char *roster_api_password;   /* secret */
    char *roster_api_password_file;
    long component_goodbye_timeout; /* seconds a clean stop waits for its goodbyes */

    /* [privacy] */
    bool show_remote_party;

    /* [directory]: where the users come from (directory.h) */
    char *dir_source;          /* config | ldap */
    bool dir_ldap;             /* source = ldap: no [users] in the file */
    char *dir_ldap_url;        /* one or more ldap://, ldaps://, ldapi:// URLs */
    char *dir_bind_dn;         /* "" = anonymous */
    char *dir_bind_password;   /* secret */
    char *dir_bind_password_file;
    char *dir_base;
    char *dir_scope;           /* sub | one */
    char *dir_filter;
    char *dir_jid_attr;
    char *dir_aor_attr;
    char *dir_aor_template;    /* "" or a SIP URI with one %s */
    char *dir_name_attr;       /* "" = none */
    char *dir_group_attr;      /* "" = none */
    char *dir_tel_attr;        /* "" = none */
    char *dir_tls;             /* auto | starttls | none (ldaps:// is always TLS) */
    char *dir_ca_file;         /* "" = the system's CAs */
    bool dir_tls_verify;
    char *dir_sync;            /* auto | syncrepl | poll */
    long dir_poll_interval;    /* seconds */
    long dir_timeout;          /* seconds, network and operations */
    long dir_max_users;

    /* [users] and [user JID] sections */
    struct cfg_user *users;
    size_t nusers;
    struct cfg_index user_by_jid;     /* jid -> index in users */
    struct cfg_index user_by_contact; /* contact -> index in users */
    struct cfg_pool_block *pool;      /* the users' strings (config.c); owned */
};

/* Problems found while loading, each as "file:line: message". */
struct cfg_errors {
    char **msg;
    size_t n;
};

/* Loads path into cfg (zeroed by the caller or freshly declared). Every problem is
 * appended to errs; returns the number of problems (0 = cfg is usable). On error cfg
 * holds partial data and must still be freed with config_free. */
size_t config_load(const char *path, struct offhook_config *cfg, struct cfg_errors *errs)
    __attribute__((warn_unused_result));
/* Same, from a memory buffer; name is used in messages. Secret files are still read. */
size_t config_load_buffer(const char *name, const char *buf, size_t len,
                          struct offhook_config *cfg, struct cfg_errors *errs)
    __attribute__((warn_unused_result));
void config_free(struct offhook_config *cfg);

/* Secret files a process has no use for are not opened (least privilege: the sipbridge
 * user need not be able to read the component secret). Flags, set once at start. */
enum {
    CFG_SECRET_SIP = 1,
    CFG_SECRET_XMPP = 2,
    CFG_SECRET_REDIS = 4,
    CFG_SECRET_LDAP = 8,
    CFG_SECRET_ALL = 15
};
/* The placeholder secret of the deploy/ recipes (Prosody, ejabberd): refused as a secret
 * (inline or from a *_file) by every process that uses that secret. */
#define CFG_PLACEHOLDER_SECRET "change-me"
void config_set_secret_use(unsigned flags);
void cfg_errors_print(const struct cfg_errors *errs, FILE *out);
void cfg_errors_free(struct cfg_errors *errs);

/* Restart-only keys whose value in the file differs from the running one. */
struct cfg_pending {
    int n;
    char keys[512];            /* "[sip] pbx, [xmpp] port", cut at a whole key if long */
};

/* A reload (SIGHUP): loads path into next (zeroed by the caller) like config_load, except
 * that every restart-only key keeps running's value, whatever the file says, so next is
 * the configuration actually in force; the keys whose file value differs are listed in
 * pending (overwritten). running is only read. Returns the number of problems. */
size_t config_reload(const char *path, const struct offhook_config *running,
                     struct offhook_config *next, struct cfg_pending *pending,
                     struct cfg_errors *errs) __attribute__((warn_unused_result));

/* Names of non-reloadable keys whose values differ between a and b, comma-separated, in
 * buf; returns the number of such keys. */
int config_diff_restart_keys(const struct offhook_config *a, const struct offhook_config *b,
                             char *buf, size_t len);

/* One key's value, as the control socket's "config" shows it. Pointers are valid during
 * the callback only. */
struct cfg_value {
    const char *section, *name;
    const char *value;       /* running value as text; a secret is "(set)" or "" */
    bool reloadable;         /* a reload applies it (else a restart) */
    bool secret;
    bool is_default;         /* the running value is the built-in default */
    bool differs;            /* the file (when given) holds another value */
    const char *file_value;  /* then: the file's, as text (a secret: "(set)" or "") */
    char buf[32], file_buf[32];
};
/* Calls fn for every key of the table in order, with its value in running and, when file
 * is not NULL (the file as it is now, loaded apart), whether the file says otherwise. */
void config_each_value(const struct offhook_config *running, const struct offhook_config *file,
                       void (*fn)(void *arg, const struct cfg_value *v), void *arg);

/* Writes every key of the table with its default and help, as an example file would. */
void config_print_defaults(FILE *out);

const struct cfg_user *config_user_by_jid(const struct offhook_config *cfg, const char *jid);
const struct cfg_user *config_user_by_contact(const struct offhook_config *cfg,
                                              const char *contact);
/* Effective privacy setting for u. */
bool config_user_shows_remote(const struct offhook_config *cfg, const struct cfg_user *u);

/* ---- for directory sources (directory.h): users that do not come from the file ------ */

/* Whether v is a SIP URI as offhook uses it (sip: or sips:, a host, need_user: a user
 * part). Returns 0, or -1 with a message in err. */
int config_check_sip_uri(const char *v, bool need_user, char *err, size_t len)
    __attribute__((warn_unused_result));
/* The phone contact of a user with bare JID jid on cfg's [xmpp] domain, normalized, into
 * out. Returns 0, or -1 with a message in err. */
int config_contact_for(const struct offhook_config *cfg, const char *jid, char *out,
                       size_t outlen, char *err, size_t errlen)
    __attribute__((warn_unused_result));
/* dst (zeroed by the caller) gets a copy of every key of src, no users: the configuration
 * a reload of an unchanged file would give, before its users are filled in. */
void config_copy_keys(struct offhook_config *dst, const struct offhook_config *src);
/* cfg (which has no users) takes ownership of users[0..n) (an xmalloc'd array of loose
 * users), moves their strings into its pool (freeing the loose ones) and indexes them.
 * Their JIDs and contacts must be unique: the caller has checked. */
void config_set_users(struct offhook_config *cfg, struct cfg_user *users, size_t n);
/* Same, but cfg gets a copy of users[0..n) (any users; they stay the caller's). */
void config_copy_users(struct offhook_config *cfg, const struct cfg_user *users, size_t n);
/* Appends a copy of aor to u's AORs (at most CFG_MAX_AORS: the caller checks). u is a
 * loose user, never one of a configuration's. */
void config_user_add_aor(struct cfg_user *u, const char *aor);
/* dst (uninitialized) becomes a deep copy of src, loose. */
void config_user_copy(struct cfg_user *dst, const struct cfg_user *src);
/* Frees what a loose u points to (not u itself); never a configuration's user. */
void config_user_free(struct cfg_user *u);

#endif
