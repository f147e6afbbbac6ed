/* The configuration: an INI reader, the one key table both daemons share, and the user
 * directory built from [users] and [user JID] sections. Pure apart from file reads. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jid.h"
#include "log.h"
#include "storecodec.h"
#include "strutil.h"

enum cfg_type { T_STR, T_SECRET, T_INT, T_BOOL };

struct loader;
typedef int (*cfg_validator)(struct offhook_config *cfg, const char *value, char *err,
                             size_t errlen);

struct cfg_key {
    const char *section;
    const char *name;
    enum cfg_type type;
    size_t offset;          /* of the char* / long / bool in struct offhook_config */
    const char *def;        /* default, parsed by the same path as file values */
    bool reloadable;        /* SIGHUP applies it; otherwise a change needs a restart */
    long min, max;          /* T_INT bounds */
    cfg_validator validate; /* optional; may fill derived fields */
    const char *help;       /* one line for the example file and --help-config */
};

#define OFF(f) offsetof(struct offhook_config, f)

static int v_log_level(struct offhook_config *, const char *, char *, size_t);
static int v_listen(struct offhook_config *, const char *, char *, size_t);
static int v_sip_uri(struct offhook_config *, const char *, char *, size_t);
static int v_sip_uri_opt(struct offhook_config *, const char *, char *, size_t);
static int v_domain(struct offhook_config *, const char *, char *, size_t);
static int v_redis_url(struct offhook_config *, const char *, char *, size_t);
static int v_sentinels(struct offhook_config *, const char *, char *, size_t);
static int v_master_name(struct offhook_config *, const char *, char *, size_t);
static int v_hostport_opt(struct offhook_config *, const char *, char *, size_t);
static int v_events(struct offhook_config *, const char *, char *, size_t);
static int v_sip_uri_opt_list(struct offhook_config *, const char *, char *, size_t);
static int v_allow_watchers(struct offhook_config *, const char *, char *, size_t);
static int v_watchers(struct offhook_config *, const char *, char *, size_t);
static int v_publish(struct offhook_config *, const char *, char *, size_t);
static int v_roster(struct offhook_config *, const char *, char *, size_t);
static int v_roster_group(struct offhook_config *, const char *, char *, size_t);
static int v_roster_api(struct offhook_config *, const char *, char *, size_t);
static int v_tls_verify(struct offhook_config *, const char *, char *, size_t);
static int v_dir_source(struct offhook_config *, const char *, char *, size_t);
static int v_ldap_urls(struct offhook_config *, const char *, char *, size_t);
static int v_ldap_scope(struct offhook_config *, const char *, char *, size_t);
static int v_ldap_filter(struct offhook_config *, const char *, char *, size_t);
static int v_ldap_attr(struct offhook_config *, const char *, char *, size_t);
static int v_ldap_attr_opt(struct offhook_config *, const char *, char *, size_t);
static int v_aor_template(struct offhook_config *, const char *, char *, size_t);
static int v_ldap_tls(struct offhook_config *, const char *, char *, size_t);
static int v_ldap_sync(struct offhook_config *, const char *, char *, size_t);
static int v_socket_path(struct offhook_config *, const char *, char *, size_t);
static int v_notifiers(struct offhook_config *, const char *, char *, size_t);
static int v_instance(struct offhook_config *, const char *, char *, size_t);

static const struct cfg_key keys[] = {
    {"log", "level", T_STR, OFF(log_level), "info", true, 0, 0, v_log_level,
     "error, warning, notice, info or debug"},

    {"sip", "listen", T_STR, OFF(sip_listen), "udp:127.0.0.1:5070", false, 0, 0, v_listen,
     "where sipbridge's SIP stack binds: udp:|tcp:HOST:PORT (both on one address allowed), tls:HOST:PORT"},
    {"sip", "pbx", T_STR, OFF(sip_pbx), "sip:127.0.0.1:5060", false, 0, 0, v_sip_uri,
     "outbound proxy every SUBSCRIBE is sent through (sip: or sips: URI, ;transport= allowed)"},
    {"sip", "from", T_STR, OFF(sip_from), "", false, 0, 0, v_sip_uri_opt,
     "From URI of SUBSCRIBEs; empty = sip:<username or offhook>@<pbx host>"},
    {"sip", "username", T_STR, OFF(sip_username), "", true, 0, 0, NULL,
     "digest user name for 401/407 challenges; empty = no authentication"},
    {"sip", "password", T_SECRET, OFF(sip_password), "", true, 0, 0, NULL,
     "digest password (secret: prefer password_file)"},
    {"sip", "password_file", T_STR, OFF(sip_password_file), "", true, 0, 0, NULL,
     "file whose first line is the digest password"},
    {"sip", "expires", T_INT, OFF(sip_expires), "3600", true, 60, 86400, NULL,
     "subscription duration asked for, in seconds"},
    {"sip", "max_body", T_INT, OFF(sip_max_body), "65536", true, 1024, 16L << 20, NULL,
     "largest NOTIFY body parsed, in bytes; larger ones are rejected and counted"},
    {"sip", "events", T_STR, OFF(sip_events), "dialog", true, 0, 0, v_events,
     "event packages subscribed per AOR: dialog, presence (PIDF) and/or reg (RFC 3680)"},
    {"sip", "subscribe_rate", T_INT, OFF(sip_subscribe_rate), "50", true, 1, 100000, NULL,
     "new SUBSCRIBEs per second at most (start-up, reload, mass resubscribe)"},
    {"sip", "resource_list", T_STR, OFF(sip_resource_list), "", false, 0, 0, v_sip_uri_opt_list,
     "RFC 4662 resource list URI for dialog events (one SUBSCRIBE for all users); empty = "
     "one subscription per AOR"},
    {"sip", "coalesce_ms", T_INT, OFF(sip_coalesce_ms), "0", true, 0, 60000, NULL,
     "states lasting less than this may be skipped (the final state is always written); 0 = "
     "write every change"},
    {"sip", "stale_after", T_INT, OFF(sip_stale_after), "60", true, 0, 86400, NULL,
     "seconds a user's subscriptions may stay down before their state shows as unknown; 0 = "
     "never"},
    {"sip", "max_backoff", T_INT, OFF(sip_max_backoff), "300", true, 1, 3600, NULL,
     "longest wait, in seconds, before a failed or ended subscription is tried again, "
     "whatever the PBX asks for (Retry-After, retry-after=, 60 s after rejected, noresource, "
     "403 or 404)"},
    {"sip", "min_expires", T_INT, OFF(sip_min_expires), "60", true, 10, 3600, NULL,
     "floor, in seconds, on the subscription expiry a PBX grants: a grant below it is "
     "warned about and let lapse, and each subscription sends at most one SUBSCRIBE per "
     "this many seconds whatever the PBX grants (at most [sip] expires)"},
    {"sip", "notify_rate", T_INT, OFF(sip_notify_rate), "20", true, 0, 100000, NULL,
     "NOTIFYs applied per subscription per second (bursts of twice that); in a flood only "
     "the latest is applied, late; resource lists exempt; 0 = no limit"},
    {"sip", "probe_interval", T_INT, OFF(sip_probe_interval), "5", true, 0, 3600, NULL,
     "seconds between refreshes of one subscription per notifier (not one it answered or "
     "notified in the last second), to notice a PBX that restarted and forgot them (481): "
     "all are then re-established; 0 = never"},
    {"sip", "notifiers", T_STR, OFF(sip_notifiers), "", true, 0, 0, v_notifiers,
     "numeric addresses (IP or IP:port, IPv6 in brackets) allowed to send NOTIFYs in any "
     "dialog, for a PBX cluster whose nodes notify for each other; empty = a NOTIFY must come "
     "from the transport and address its subscription was established with"},
    {"sip", "tls_dir", T_STR, OFF(sip_tls_dir), "/etc/offhook/tls", false, 0, 0, NULL,
     "with a tls: listen: directory holding cafile.pem (the CAs trusted for the PBX's "
     "certificate) and agent.pem (offhook's certificate and key, for NOTIFYs sent over a "
     "new TLS connection)"},
    {"sip", "tls_verify", T_STR, OFF(sip_tls_verify), "subject", false, 0, 0, v_tls_verify,
     "check of the PBX's TLS certificate: subject (chain to cafile.pem and a DNS name or CN "
     "equal to the pbx URI's host), chain (chain only) or none (testing only)"},

    {"xmpp", "host", T_STR, OFF(xmpp_host), "127.0.0.1", false, 0, 0, NULL,
     "XMPP server's component listener host"},
    {"xmpp", "port", T_INT, OFF(xmpp_port), "5347", false, 1, 65535, NULL,
     "XMPP server's component listener port (XEP-0114)"},
    {"xmpp", "domain", T_STR, OFF(xmpp_domain), "phone.localhost", false, 0, 0, v_domain,
     "the component's domain; phone contacts are <name>@<domain>"},
    {"xmpp", "secret", T_SECRET, OFF(xmpp_secret), "", false, 0, 0, NULL,
     "component secret shared with the XMPP server (secret: prefer secret_file)"},
    {"xmpp", "secret_file", T_STR, OFF(xmpp_secret_file), "", false, 0, 0, NULL,
     "file whose first line is the component secret"},

    {"redis", "url", T_STR, OFF(redis_url), "redis://127.0.0.1:6379/0", false, 0, 0,
     v_redis_url, "redis://HOST[:PORT][/DB] or unix:///PATH[?db=N] of a single Redis (not with "
     "sentinels)"},
    {"redis", "sentinels", T_STR, OFF(redis_sentinels), "", false, 0, 0, v_sentinels,
     "HOST:PORT of each Redis Sentinel, comma-separated, instead of url: the master is asked "
     "of them in turn, checked (ROLE) and followed through failovers; empty = url"},
    {"redis", "master_name", T_STR, OFF(redis_master_name), "offhook", false, 0, 0,
     v_master_name, "with sentinels: the name they monitor offhook's master under"},
    {"redis", "password", T_SECRET, OFF(redis_password), "", false, 0, 0, NULL,
     "Redis AUTH password (secret: prefer password_file)"},
    {"redis", "password_file", T_STR, OFF(redis_password_file), "", false, 0, 0, NULL,
     "file whose first line is the Redis password"},
    {"redis", "sentinel_password", T_SECRET, OFF(redis_sentinel_password), "", false, 0, 0,
     NULL, "with sentinels: the password they ask for (their requirepass), if any (secret: "
     "prefer sentinel_password_file)"},
    {"redis", "sentinel_password_file", T_STR, OFF(redis_sentinel_password_file), "", false, 0,
     0, NULL, "file whose first line is the sentinels' password"},
    {"redis", "prefix", T_STR, OFF(redis_prefix), "offhook:", false, 0, 0, NULL,
     "prefix of every key offhook writes"},

    {"sipbridge", "metrics", T_STR, OFF(sipbridge_metrics), "127.0.0.1:9464", false, 0, 0,
     v_hostport_opt, "HOST:PORT of sipbridge's /metrics, /healthz, /readyz; empty = off"},
    {"sipbridge", "control", T_STR, OFF(sipbridge_control), "/run/offhook/sipbridge.sock",
     false, 0, 0, v_socket_path,
     "sipbridge's control socket (offhookctl), mode 0660, in a directory that exists (the "
     "unit's RuntimeDirectory); empty = none"},
    {"sipbridge", "instance", T_STR, OFF(sipbridge_instance), "", false, 0, 0, v_instance,
     "this sipbridge's name among those sharing the users (its lease in Redis; users are "
     "spread over the names); empty = HOST:PID, which changes at each start"},
    {"sipbridge", "lease_ttl", T_INT, OFF(sipbridge_lease_ttl), "5", false, 2, 60, NULL,
     "seconds a sipbridge's lease lasts unrenewed (renewed every fifth of it): a sipbridge "
     "silent this long is taken for dead and its users are taken over"},
    {"sipbridge", "realtime_priority", T_INT, OFF(sipbridge_realtime_priority), "0", true, 0,
     99, NULL,
     "SCHED_FIFO priority (1-99) of sipbridge's event loop, so that a wakeup does not wait "
     "behind other processes for a core (the latency's tail on a busy host); 0 = the "
     "normal scheduler. Needs CAP_SYS_NICE or LimitRTPRIO=, and no RestrictRealtime= (see "
     "the operator guide)"},
    {"component", "metrics", T_STR, OFF(component_metrics), "127.0.0.1:9465", false, 0, 0,
     v_hostport_opt, "HOST:PORT of component's /metrics, /healthz, /readyz; empty = off"},
    {"component", "control", T_STR, OFF(component_control), "/run/offhook/component.sock",
     false, 0, 0, v_socket_path,
     "component's control socket (offhookctl), mode 0660, in a directory that exists (the "
     "unit's RuntimeDirectory); empty = none"},
    {"component", "instance", T_STR, OFF(component_instance), "", false, 0, 0, v_instance,
     "this component's name among the active one and its standbys (its lease in Redis); "
     "empty = HOST:PID"},
    {"component", "lease_ttl", T_INT, OFF(component_lease_ttl), "5", false, 2, 60, NULL,
     "seconds the active component's lease lasts unrenewed: a standby connects to the XMPP "
     "server this long (plus a fifth) after the active one was last heard"},
    {"component", "realtime_priority", T_INT, OFF(component_realtime_priority), "0", true, 0,
     99, NULL,
     "SCHED_FIFO priority (1-99) of component's event loop, so that a wakeup does not wait "
     "behind other processes for a core (the latency's tail on a busy host); 0 = the "
     "normal scheduler. Needs CAP_SYS_NICE or LimitRTPRIO=, and no RestrictRealtime= (see "
     "the operator guide)"},
    {"component", "allow_watchers", T_STR, OFF(component_allow_watchers), "same-domain", true,
     0, 0, v_allow_watchers,
     "who may see phone state: same-domain (users' own domains), any, or list"},
    {"component", "watchers", T_STR, OFF(component_watchers), "", true, 0, 0, v_watchers,
     "with allow_watchers = list: comma-separated JIDs and domains allowed"},
    {"component", "publish", T_STR, OFF(component_publish), "contacts, pep, vcard", true, 0, 0,
     v_publish,
     "contacts (phone-contact presence), pep (XEP-0108/0152 in users' own PEP) and/or vcard "
     "(the desk phone added to users' own vCards); pep and vcard where the server grants "
     "XEP-0356"},

    {"component", "keep_presence_on_stop", T_BOOL, OFF(component_keep_on_stop), "no", true, 0,
     0, NULL,
     "on a clean stop, leave phone contacts' presence and PEP items as they are (yes, for "
     "planned restarts) instead of marking them unavailable/cleared (no)"},
    {"component", "goodbye_timeout", T_INT, OFF(component_goodbye_timeout), "30", true, 1, 600,
     NULL,
     "on a clean stop (unless keep_presence_on_stop), the longest wait in seconds for the "
     "server to have handled every goodbye (presence first, then the emptied PEP "
     "activities) before the stream closes"},
    {"component", "max_stanza", T_INT, OFF(component_max_stanza), "65536", true, 1024,
     16L << 20, NULL,
     "largest incoming stanza handled, in bytes of names, attributes and text; larger ones "
     "get a policy-violation error"},
    {"component", "roster", T_STR, OFF(component_roster), "none", true, 0, 0, v_roster,
     "phone contacts the component puts in each user's roster (XEP-0356 roster permission, "
     "or roster_api): none, everyone (every other user of the same domain) or groups (the "
     "users sharing a group with them)"},
    {"component", "roster_group", T_STR, OFF(roster_group), "Desk phones", true, 0, 0,
     v_roster_group, "with roster = everyone: the roster group the phone contacts are in "
                     "(with groups: the users' own groups)"},
    {"component", "roster_max_items", T_INT, OFF(roster_max_items), "1000", true, 1, 100000,
     NULL,
     "phone contacts one user's roster may hold at most: a user whose roster would hold "
     "more is given no new ones (logged, counted); with roster = everyone, that is every user "
     "of a domain with more users than this"},
    {"component", "roster_rate", T_INT, OFF(roster_rate), "100", true, 1, 100000, NULL,
     "roster changes (item added, renamed, regrouped or removed) sent to the XMPP server per "
     "second at most"},
    {"component", "roster_api", T_STR, OFF(roster_api), "", false, 0, 0, v_roster_api,
     "ejabberd: http://HOST:PORT/PATH of its mod_http_api, through which rosters are written "
     "(add_rosteritem, delete_rosteritem) instead of XEP-0356; empty = XEP-0356 only"},
    {"component", "roster_api_user", T_STR, OFF(roster_api_user), "", false, 0, 0, NULL,
     "with roster_api: the account (user@host) it authenticates as (HTTP Basic); empty = "
     "none"},
    {"component", "roster_api_password", T_SECRET, OFF(roster_api_password), "", false, 0, 0,
     NULL, "password of roster_api_user (secret: prefer roster_api_password_file)"},
    {"component", "roster_api_password_file", T_STR, OFF(roster_api_password_file), "", false,
     0, 0, NULL, "file whose first line is the password of roster_api_user"},

    {"privacy", "show_remote_party", T_BOOL, OFF(show_remote_party), "no", true, 0, 0, NULL,
     "let the other party's name/number leave sipbridge (per user: [user JID])"},

    /* Restart-only: the directory's session runs in a thread of its own with a copy of
     * these, so a change means a new session (and a full sync) anyway. */
    {"directory", "source", T_STR, OFF(dir_source), "config", false, 0, 0, v_dir_source,
     "where the users come from: config ([users] and [user JID] sections of this file) or "
     "ldap (the keys below; then this file has no users)"},
    {"directory", "ldap_url", T_STR, OFF(dir_ldap_url), "ldap://127.0.0.1:389", false, 0, 0,
     v_ldap_urls,
     "the LDAP server: ldap://HOST[:PORT], ldaps://HOST[:PORT] or ldapi://; several, "
     "space-separated, are tried in turn"},
    {"directory", "bind_dn", T_STR, OFF(dir_bind_dn), "", false, 0, 0, NULL,
     "DN offhook binds as (simple bind); empty = anonymous"},
    {"directory", "bind_password", T_SECRET, OFF(dir_bind_password), "", false, 0, 0, NULL,
     "password of bind_dn (secret: prefer bind_password_file)"},
    {"directory", "bind_password_file", T_STR, OFF(dir_bind_password_file), "", false, 0, 0,
     NULL, "file whose first line is the password of bind_dn"},
    {"directory", "base", T_STR, OFF(dir_base), "", false, 0, 0, NULL,
     "search base of the users, e.g. ou=people,dc=example,dc=com (required with ldap)"},
    {"directory", "scope", T_STR, OFF(dir_scope), "sub", false, 0, 0, v_ldap_scope,
     "sub (the whole subtree under base) or one (its children only)"},
    {"directory", "filter", T_STR, OFF(dir_filter), "(objectClass=inetOrgPerson)", false, 0,
     0, v_ldap_filter, "LDAP filter selecting the users (RFC 4515)"},
    {"directory", "jid_attr", T_STR, OFF(dir_jid_attr), "mail", false, 0, 0, v_ldap_attr,
     "attribute holding the user's chat JID (mail, userPrincipalName)"},
    {"directory", "aor_attr", T_STR, OFF(dir_aor_attr), "telephoneNumber", false, 0, 0,
     v_ldap_attr,
     "attribute holding the desk phone: a sip: URI, or an extension or number put into "
     "aor_template; every value is one phone (at most 8)"},
    {"directory", "aor_template", T_STR, OFF(dir_aor_template), "", false, 0, 0,
     v_aor_template,
     "SIP URI with one %s, replaced by an aor_attr value that is not a URI (spaces, dashes, "
     "dots and brackets removed), e.g. sip:%s@pbx.example.com; empty = values must be URIs"},
    {"directory", "name_attr", T_STR, OFF(dir_name_attr), "cn", false, 0, 0, v_ldap_attr_opt,
     "attribute holding the display name (cn, displayName); empty = none"},
    {"directory", "group_attr", T_STR, OFF(dir_group_attr), "ou", false, 0, 0,
     v_ldap_attr_opt,
     "attribute holding the user's groups (ou, departmentNumber, memberOf: a DN value gives "
     "its first RDN's value); empty = none"},
    {"directory", "tel_attr", T_STR, OFF(dir_tel_attr), "", false, 0, 0, v_ldap_attr_opt,
     "attribute holding the number shown in vCards and tel: reach (telephoneNumber when "
     "aor_attr is ipPhone, say); empty = none"},
    {"directory", "tls", T_STR, OFF(dir_tls), "auto", false, 0, 0, v_ldap_tls,
     "auto (StartTLS for ldap:// to any host but loopback), starttls (always) or none; "
     "ldaps:// is always TLS"},
    {"directory", "ca_file", T_STR, OFF(dir_ca_file), "", false, 0, 0, NULL,
     "PEM file of the CAs trusted for the server's certificate; empty = libldap's default "
     "(TLS_CACERT in /etc/ldap/ldap.conf: on Debian, the system's CAs)"},
    {"directory", "tls_verify", T_BOOL, OFF(dir_tls_verify), "yes", false, 0, 0, NULL,
     "check the server's certificate chain and host name (no: testing only)"},
    {"directory", "sync", T_STR, OFF(dir_sync), "auto", false, 0, 0, v_ldap_sync,
     "auto (RFC 4533 refreshAndPersist where the server offers it, else poll), syncrepl or "
     "poll (a search for entries changed since the last one, by modifyTimestamp)"},
    {"directory", "poll_interval", T_INT, OFF(dir_poll_interval), "30", false, 5, 86400,
     NULL,
     "seconds between polls (sync = poll), or between checks that a persistent search's "
     "server still answers"},
    {"directory", "timeout", T_INT, OFF(dir_timeout), "10", false, 1, 300, NULL,
     "seconds allowed to connect, bind and answer a check or a search page"},
    {"directory", "max_users", T_INT, OFF(dir_max_users), "100000", false, 1, 1000000, NULL,
     "entries taken from the directory at most; the rest are left out (logged, counted)"},
};
#define NKEYS (sizeof keys / sizeof keys[0])

_Static_assert(CFG_MAX_AORS <= 255 && CFG_MAX_GROUPS <= 255, "cfg_user counts are bytes");

/* ---- loader state ------------------------------------------------------------------ */

struct loader {
    const char *file;
    struct offhook_config *cfg;
    struct cfg_errors *errs;
    bool set[NKEYS];           /* key given in the file */
    int set_line[NKEYS];
    size_t users_cap;
    bool in_users;             /* current section is [users] */
    long cur_user;             /* index of current [user JID] section, or -1 */
    bool skip_section;         /* unknown section: its keys are not reported again */
};

static void add_err(struct cfg_errors *errs, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_err(struct cfg_errors *errs, const char *file, int line, const char *fmt, ...)
{
    char msg[1024];
    char *full;
    va_list ap;
    int n;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    n = line > 0 ? snprintf(NULL, 0, "%s:%d: %s", file, line, msg)
                 : snprintf(NULL, 0, "%s: %s", file, msg);
    full = xmalloc((size_t)n + 1);
    if (line > 0)
        snprintf(full, (size_t)n + 1, "%s:%d: %s", file, line, msg);
    else
        snprintf(full, (size_t)n + 1, "%s: %s", file, msg);
    errs->msg = xrealloc(errs->msg, (errs->n + 1) * sizeof *errs->msg);
    errs->msg[errs->n++] = full;
}

void cfg_errors_print(const struct cfg_errors *errs, FILE *out)
{
    for (size_t i = 0; i < errs->n; i++)
        fprintf(out, "%s\n", errs->msg[i]);
}

void cfg_errors_free(struct cfg_errors *errs)
{
    for (size_t i = 0; i < errs->n; i++)
        free(errs->msg[i]);
    free(errs->msg);
    errs->msg = NULL;
    errs->n = 0;
}

/* ---- validators -------------------------------------------------------------------- */

static int v_log_level(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    static const char *const ok[] = {"error", "warning", "notice", "info", "debug"};

    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        if (strcmp(v, ok[i]) == 0)
            return 0;
    }
    snprintf(err, len, "unknown log level '%s' (error, warning, notice, info, debug)", v);
    return -1;
}

/* host:port with host a name, IPv4 or [IPv6]; port 1..65535. */
static int split_hostport(const char *v, char *host, size_t hostlen, long *port)
{
    const char *colon;
    size_t hl;

    if (v[0] == '[') {
        const char *rb = strchr(v, ']');
        if (!rb || rb[1] != ':')
            return -1;
        colon = rb + 1;
    } else {
        colon = strrchr(v, ':');
        if (!colon || memchr(v, ':', (size_t)(colon - v)))
            return -1;
    }
    hl = (size_t)(colon - v);
    if (hl == 0 || hl >= hostlen)
        return -1;
    memcpy(host, v, hl);
    host[hl] = '\0';
    for (const char *p = host; *p; p++) {
        if (isspace((unsigned char)*p))
            return -1;
    }
    return str_parse_long(colon + 1, 1, 65535, port);
}

/* A Unix socket's path: absolute (the daemons' working directory is not the operator's),
 * short enough for sockaddr_un, or empty. */
static int v_socket_path(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (!*v)
        return 0;
    if (v[0] != '/') {
        snprintf(err, len, "'%s' is not an absolute path", v);
        return -1;
    }
    if (strlen(v) > CFG_MAX_SOCKET_PATH) {
        snprintf(err, len, "'%s' is longer than the %d bytes a Unix socket path may have", v,
                 CFG_MAX_SOCKET_PATH);
        return -1;
    }
    return 0;
}

static int v_hostport_opt(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    char host[256];
    long port;

    if (!*v)
        return 0;
    if (split_hostport(v, host, sizeof host, &port) < 0) {
        snprintf(err, len, "'%s' is not HOST:PORT", v);
        return -1;
    }
    return 0;
}

/* Sofia binds one plain URL (UDP and/or TCP on one address) and one TLS URL, so the list
 * may name udp: and tcp: on the same HOST:PORT, plus one tls:. */
static int v_listen(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    char *copy = xstrdup(v);
    char *items[CFG_MAX_LISTEN];
    int n = str_split_list(copy, items, CFG_MAX_LISTEN);
    char plain_hp[300] = "", tls_url[320] = "";
    bool udp = false, tcp = false;
    int rc = -1;

    for (int i = 0; i < cfg->sip_nlisten; i++)
        free(cfg->sip_listen_urls[i]);
    cfg->sip_nlisten = 0;
    if (n <= 0) {
        snprintf(err, len, n < 0 ? "at most %d listen addresses" : "no listen address given",
                 CFG_MAX_LISTEN);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        const char *rest = strchr(items[i], ':');
        char host[256], hp[300];
        long port;

        if (!rest || split_hostport(rest + 1, host, sizeof host, &port) < 0) {
            snprintf(err, len, "'%s' is not udp:|tcp:|tls:HOST:PORT", items[i]);
            goto out;
        }
        snprintf(hp, sizeof hp, "%s:%ld", host, port);
        if (strncmp(items[i], "tls:", 4) == 0) {
            if (tls_url[0]) {
                snprintf(err, len, "at most one tls: listen address");
                goto out;
            }
            snprintf(tls_url, sizeof tls_url, "sips:%s;transport=tls", hp);
            continue;
        }
        if (strncmp(items[i], "udp:", 4) != 0 && strncmp(items[i], "tcp:", 4) != 0) {
            snprintf(err, len, "unknown transport in '%s' (udp, tcp or tls)", items[i]);
            goto out;
        }
        if (plain_hp[0] && strcmp(plain_hp, hp) != 0) {
            snprintf(err, len, "udp: and tcp: must share one HOST:PORT (%s vs %s)", plain_hp, hp);
            goto out;
        }
        snprintf(plain_hp, sizeof plain_hp, "%s", hp);
        if (items[i][0] == 'u')
            udp = true;
        else
            tcp = true;
    }
    if (plain_hp[0]) {
        char url[340];
        snprintf(url, sizeof url, "sip:%s%s", plain_hp,
                 udp && tcp ? "" : udp ? ";transport=udp" : ";transport=tcp");
        cfg->sip_listen_urls[cfg->sip_nlisten++] = xstrdup(url);
    }
    if (tls_url[0])
        cfg->sip_listen_urls[cfg->sip_nlisten++] = xstrdup(tls_url);
    rc = 0;
out:
    free(copy);
    return rc;
}

static int v_events(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    char *copy = xstrdup(v);
    char *items[4];
    int n = str_split_list(copy, items, 3);
    bool d = false, p = false, r = false;
    int rc = -1;

    if (n <= 0) {
        snprintf(err, len, "events: name one to three of dialog, presence, reg");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(items[i], "dialog") == 0)
            d = true;
        else if (strcmp(items[i], "presence") == 0)
            p = true;
        else if (strcmp(items[i], "reg") == 0)
            r = true;
        else {
            snprintf(err, len, "unknown event package '%s' (dialog, presence, reg)", items[i]);
            goto out;
        }
    }
    cfg->sip_event_dialog = d;
    cfg->sip_event_presence = p;
    cfg->sip_event_reg = r;
    rc = 0;
out:
    free(copy);
    return rc;
}

/* A SIP URI as offhook uses it: sip: or sips:, a host, no white space or angle brackets.
 * Sofia-SIP parses it fully at runtime; this catches typos at --check-config time. */
static int check_sip_uri(const char *v, bool need_user, char *err, size_t len)
{
    const char *rest, *host;

    if (strncasecmp(v, "sip:", 4) == 0)
        rest = v + 4;
    else if (strncasecmp(v, "sips:", 5) == 0)
        rest = v + 5;
    else {
        snprintf(err, len, "'%s' is not a sip: or sips: URI", v);
        return -1;
    }
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == '<' || *p == '>' || *p == '"') {
            snprintf(err, len, "'%s': white space, quotes or <> in a SIP URI", v);
            return -1;
        }
    }
    host = strchr(rest, '@');
    if (need_user && (!host || host == rest)) {
        snprintf(err, len, "'%s' has no user part (sip:USER@HOST)", v);
        return -1;
    }
    host = host ? host + 1 : rest;
    if (!*host || *host == ';' || *host == ':') {
        snprintf(err, len, "'%s' has no host", v);
        return -1;
    }
    return 0;
}

static int v_sip_uri(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    return check_sip_uri(v, false, err, len);
}

static int v_sip_uri_opt(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    return *v ? check_sip_uri(v, true, err, len) : 0;
}

static int v_allow_watchers(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (strcmp(v, "same-domain") == 0 || strcmp(v, "any") == 0 || strcmp(v, "list") == 0)
        return 0;
    snprintf(err, len, "allow_watchers must be same-domain, any or list, not '%s'", v);
    return -1;
}

static int v_roster(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (strcmp(v, "none") == 0)
        cfg->roster_mode = CFG_ROSTER_NONE;
    else if (strcmp(v, "everyone") == 0)
        cfg->roster_mode = CFG_ROSTER_EVERYONE;
    else if (strcmp(v, "groups") == 0)
        cfg->roster_mode = CFG_ROSTER_GROUPS;
    else {
        snprintf(err, len, "roster must be none, everyone or groups, not '%s'", v);
        return -1;
    }
    return 0;
}

/* A roster group name is shown to users and written into every roster: printable text. */
static int v_roster_group(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (!v[0] || strlen(v) > 200 || !str_utf8_valid(v, strlen(v))) {
        snprintf(err, len, "roster_group: 1 to 200 bytes of UTF-8 text");
        return -1;
    }
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == ';') {
            snprintf(err, len, "roster_group: no control characters and no ';' (ejabberd "
                               "reads it as a group separator)");
            return -1;
        }
    }
    return 0;
}

/* http://HOST[:PORT]/PATH: plain HTTP, for a listener on the same host or network. */
static int v_roster_api(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (!v[0])
        return 0;
    if (strncmp(v, "http://", 7) != 0 || !v[7] || v[7] == '/' || strchr(v, ' ') ||
        strchr(v, '@') || strlen(v) > 512) {
        snprintf(err, len, "roster_api: http://HOST[:PORT]/PATH (ejabberd's mod_http_api, e.g. "
                           "http://127.0.0.1:5281/api), not '%s'", v);
        return -1;
    }
    return 0;
}

static int v_tls_verify(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (!strcmp(v, "subject") || !strcmp(v, "chain") || !strcmp(v, "none"))
        return 0;
    snprintf(err, len, "tls_verify must be subject, chain or none, not '%s'", v);
    return -1;
}

static int v_dir_source(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (strcmp(v, "config") != 0 && strcmp(v, "ldap") != 0) {
        snprintf(err, len, "source must be config or ldap, not '%s'", v);
        return -1;
    }
    cfg->dir_ldap = strcmp(v, "ldap") == 0;
    return 0;
}

/* libldap takes a space-separated list and tries each in turn; each needs a scheme it
 * speaks and a host (or an ldapi:// socket). Base and filter have keys of their own. */
static int v_ldap_urls(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    static const char *const schemes[] = {"ldap://", "ldaps://", "ldapi://"};
    char *copy = xstrdup(v), *save = NULL;
    int n = 0, rc = 0;

    for (char *u = strtok_r(copy, " \t", &save); u && rc == 0; u = strtok_r(NULL, " \t", &save)) {
        size_t i;
        n++;
        for (i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
            if (strncasecmp(u, schemes[i], strlen(schemes[i])) == 0)
                break;
        }
        if (i == sizeof schemes / sizeof schemes[0]) {
            snprintf(err, len, "'%s' is not an ldap://, ldaps:// or ldapi:// URL", u);
            rc = -1;
        } else if (strpbrk(u + strlen(schemes[i]), "?\"<>")) {
            snprintf(err, len, "'%s': give base and filter in their own keys, not in the URL",
                     u);
            rc = -1;
        } else if (i < 2 && (!u[strlen(schemes[i])] || u[strlen(schemes[i])] == '/')) {
            snprintf(err, len, "'%s' has no host", u);
            rc = -1;
        }
    }
    if (rc == 0 && n == 0) {
        snprintf(err, len, "ldap_url is empty");
        rc = -1;
    }
    free(copy);
    return rc;
}

/* IP or IP:port, IPv6 as [addr] or [addr]:port; at most 16. */
static int v_notifiers(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    char *copy = xstrdup(v);
    char *items[17];
    int n = str_split_list(copy, items, 16), rc = 0;

    if (n < 0) {
        snprintf(err, len, "at most 16 notifiers");
        rc = -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        char host[128];
        const char *port = NULL, *s = items[i];
        unsigned char addr[16];
        long p;

        if (s[0] == '[') {
            const char *rb = strchr(s, ']');
            if (!rb || (size_t)(rb - s - 1) >= sizeof host || (rb[1] && rb[1] != ':')) {
                rc = -1;
                break;
            }
            snprintf(host, sizeof host, "%.*s", (int)(rb - s - 1), s + 1);
            port = rb[1] ? rb + 2 : NULL;
            if (inet_pton(AF_INET6, host, addr) != 1)
                rc = -1;
        } else {
            const char *colon = strchr(s, ':');
            snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - s) : (int)strlen(s), s);
            port = colon ? colon + 1 : NULL;
            if (inet_pton(AF_INET, host, addr) != 1)
                rc = -1;
        }
        if (rc == 0 && port && str_parse_long(port, 1, 65535, &p) < 0)
            rc = -1;
    }
    if (rc < 0 && n >= 0)
        snprintf(err, len, "notifiers: '%s' is not a numeric IP[:port] (IPv6 as [addr]:port)",
                 v);
    free(copy);
    return rc;
}

static int v_ldap_scope(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (strcmp(v, "sub") == 0 || strcmp(v, "one") == 0)
        return 0;
    snprintf(err, len, "scope must be sub or one, not '%s'", v);
    return -1;
}

/* The server parses the filter; this catches what a typo leaves: no parentheses around
 * it, or ones that do not pair up. */
static int v_ldap_filter(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    size_t n = strlen(v);
    int depth = 0;

    if (n < 3 || v[0] != '(' || v[n - 1] != ')') {
        snprintf(err, len, "filter '%s' must be one parenthesized LDAP filter", v);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '\\' && i + 1 < n) {
            i++;
            continue;
        }
        depth += v[i] == '(' ? 1 : v[i] == ')' ? -1 : 0;
        if (depth < 0 || (depth == 0 && i + 1 < n)) {
            snprintf(err, len, "filter '%s': parentheses do not pair up", v);
            return -1;
        }
    }
    if (depth != 0) {
        snprintf(err, len, "filter '%s': parentheses do not pair up", v);
        return -1;
    }
    return 0;
}

/* RFC 4512 1.4: a descriptor (letter, then letters, digits, hyphens) or a numeric OID. */
static bool ldap_attr_ok(const char *v)
{
    if (isalpha((unsigned char)v[0])) {
        for (const char *p = v; *p; p++) {
            if (!isalnum((unsigned char)*p) && *p != '-')
                return false;
        }
        return strlen(v) <= 128;
    }
    if (!isdigit((unsigned char)v[0]))
        return false;
    for (const char *p = v; *p; p++) {
        if (!isdigit((unsigned char)*p) && !(*p == '.' && p[1] && p[1] != '.'))
            return false;
    }
    return strlen(v) <= 128;
}

static int v_ldap_attr(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (ldap_attr_ok(v))
        return 0;
    snprintf(err, len, "'%s' is not an LDAP attribute name", v);
    return -1;
}

static int v_ldap_attr_opt(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    return *v ? v_ldap_attr(cfg, v, err, len) : 0;
}

static int v_aor_template(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    const char *at = strstr(v, "%s");
    char uri[512], why[256];

    if (!*v)
        return 0;
    if (!at || strchr(at + 2, '%') || memchr(v, '%', (size_t)(at - v))) {
        snprintf(err, len, "aor_template '%s' must hold %%s once and no other %%", v);
        return -1;
    }
    snprintf(uri, sizeof uri, "%.*s1000%s", (int)(at - v), v, at + 2);
    if (check_sip_uri(uri, true, why, sizeof why) < 0) {
        snprintf(err, len, "aor_template '%s' does not make a SIP URI: %s", v, why);
        return -1;
    }
    return 0;
}

static int v_ldap_tls(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (!strcmp(v, "auto") || !strcmp(v, "starttls") || !strcmp(v, "none"))
        return 0;
    snprintf(err, len, "tls must be auto, starttls or none, not '%s'", v);
    return -1;
}

static int v_ldap_sync(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (!strcmp(v, "auto") || !strcmp(v, "syncrepl") || !strcmp(v, "poll"))
        return 0;
    snprintf(err, len, "sync must be auto, syncrepl or poll, not '%s'", v);
    return -1;
}

static int v_watchers(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    char *copy = xstrdup(v);
    char *items[256];
    int n = str_split_list(copy, items, 256), rc = 0;

    if (n < 0) {
        snprintf(err, len, "at most 256 watchers entries (use domains)");
        rc = -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        struct jid j;
        if (jid_parse(items[i], &j) < 0 || j.resource[0]) {
            snprintf(err, len, "'%s' is not a bare JID or a domain", items[i]);
            rc = -1;
        }
    }
    free(copy);
    return rc;
}

static int v_publish(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    char *copy = xstrdup(v);
    char *items[4];
    int n = str_split_list(copy, items, 3), rc = 0;
    bool contacts = false, pep = false, vcard = false;

    if (n <= 0)
        rc = -1;
    for (int i = 0; i < n && rc == 0; i++) {
        if (strcmp(items[i], "contacts") == 0)
            contacts = true;
        else if (strcmp(items[i], "pep") == 0)
            pep = true;
        else if (strcmp(items[i], "vcard") == 0)
            vcard = true;
        else
            rc = -1;
    }
    free(copy);
    if (rc < 0) {
        snprintf(err, len, "publish: contacts, pep and/or vcard, not '%s'", v);
        return -1;
    }
    cfg->publish_contacts = contacts;
    cfg->publish_pep = pep;
    cfg->publish_vcard = vcard;
    return 0;
}

/* A list URI names a list, not a user: sip:phones@pbx has a user part, sip:pbx may not. */
static int v_sip_uri_opt_list(struct offhook_config *cfg, const char *v, char *err,
                              size_t len)
{
    return *v ? check_sip_uri(v, false, err, len) : 0;
}

static int v_domain(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    struct jid j;

    if (jid_parse(v, &j) < 0 || j.local[0] || j.resource[0]) {
        snprintf(err, len, "'%s' is not a domain name", v);
        return -1;
    }
    return 0;
}

static void redis_target_free(struct redis_target *t)
{
    free(t->host);
    free(t->unix_path);
    memset(t, 0, sizeof *t);
}

static int v_redis_url(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    struct redis_target t = {.port = 6379};
    long num;

    if (strncmp(v, "redis://", 8) == 0) {
        const char *hp = v + 8, *slash = strchr(hp, '/');
        char hostport[300], host[256];
        size_t hl = slash ? (size_t)(slash - hp) : strlen(hp);

        if (memchr(hp, '@', hl)) {
            snprintf(err, len, "put the Redis password in [redis] password_file, not the URL");
            return -1;
        }
        if (hl == 0 || hl >= sizeof hostport) {
            snprintf(err, len, "'%s' has no host", v);
            return -1;
        }
        memcpy(hostport, hp, hl);
        hostport[hl] = '\0';
        if (strchr(hostport, ':') && hostport[0] != '[') {
            if (split_hostport(hostport, host, sizeof host, &num) < 0) {
                snprintf(err, len, "'%s': bad host:port", v);
                return -1;
            }
            t.port = (int)num;
            t.host = xstrdup(host);
        } else if (hostport[0] == '[') {
            if (split_hostport(hostport, host, sizeof host, &num) < 0) {
                snprintf(err, len, "'%s': bad [host]:port", v);
                return -1;
            }
            t.port = (int)num;
            /* hiredis wants the address without brackets */
            host[strlen(host) - 1] = '\0';
            t.host = xstrdup(host + 1);
        } else {
            t.host = xstrdup(hostport);
        }
        if (slash && slash[1]) {
            if (str_parse_long(slash + 1, 0, 1000, &num) < 0) {
                free(t.host);
                snprintf(err, len, "'%s': database must be a number", v);
                return -1;
            }
            t.db = (int)num;
        }
    } else if (strncmp(v, "unix://", 7) == 0) {
        const char *path = v + 7, *q = strchr(path, '?');
        size_t pl = q ? (size_t)(q - path) : strlen(path);

        if (pl == 0 || path[0] != '/') {
            snprintf(err, len, "'%s': unix:// needs an absolute path", v);
            return -1;
        }
        t.unix_path = xmalloc(pl + 1);
        memcpy(t.unix_path, path, pl);
        t.unix_path[pl] = '\0';
        if (q) {
            if (strncmp(q, "?db=", 4) != 0 || str_parse_long(q + 4, 0, 1000, &num) < 0) {
                free(t.unix_path);
                snprintf(err, len, "'%s': only ?db=N is understood", v);
                return -1;
            }
            t.db = (int)num;
        }
    } else {
        snprintf(err, len, "'%s' is not redis://HOST[:PORT][/DB] or unix:///PATH", v);
        return -1;
    }
    redis_target_free(&cfg->redis);
    cfg->redis = t;
    return 0;
}

static void sentinels_free(struct offhook_config *cfg)
{
    for (int i = 0; i < cfg->redis_nsentinels; i++)
        free(cfg->redis_sentinel[i].host);
    memset(cfg->redis_sentinel, 0, sizeof cfg->redis_sentinel);
    cfg->redis_nsentinels = 0;
}

/* HOST:PORT, ... (IPv6 as [ADDR]:PORT); "" = none, the url is used. */
static int v_sentinels(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    char *copy = xstrdup(v);
    char *items[CFG_MAX_SENTINELS];
    int n = str_split_list(copy, items, CFG_MAX_SENTINELS);
    int rc = -1;

    sentinels_free(cfg);
    if (n < 0) {
        snprintf(err, len, "at most %d sentinels", CFG_MAX_SENTINELS);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        char host[256];
        long port;
        const char *h = host;

        if (split_hostport(items[i], host, sizeof host, &port) < 0) {
            snprintf(err, len, "sentinel '%s' is not HOST:PORT", items[i]);
            goto out;
        }
        if (host[0] == '[') {
            /* hiredis wants the address without brackets */
            host[strlen(host) - 1] = '\0';
            h = host + 1;
        }
        for (int j = 0; j < cfg->redis_nsentinels; j++) {
            const struct redis_addr *a = &cfg->redis_sentinel[j];
            if (a->port == port && strcmp(a->host, h) == 0) {
                snprintf(err, len, "sentinel '%s' is listed twice", items[i]);
                goto out;
            }
        }
        cfg->redis_sentinel[cfg->redis_nsentinels].host = xstrdup(h);
        cfg->redis_sentinel[cfg->redis_nsentinels].port = (int)port;
        cfg->redis_nsentinels++;
    }
    rc = 0;
out:
    if (rc < 0)
        sentinels_free(cfg);
    free(copy);
    return rc;
}

/* Sentinel takes the name as one word of its commands. */
static int v_master_name(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (!*v || strlen(v) > 128) {
        snprintf(err, len, "master_name must be 1 to 128 characters");
        return -1;
    }
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            snprintf(err, len, "master_name '%s' has white space or control characters", v);
            return -1;
        }
    }
    return 0;
}

/* The storecodec.h rule for member names, which Redis keeps in owner fields. */
static int v_instance(struct offhook_config *cfg, const char *v, char *err, size_t len)
{
    if (*v && !storecodec_member_name_ok(v)) {
        snprintf(err, len, "instance '%s' must be 1 to %d printable characters, no white "
                           "space, not starting with '@'",
                 v, STORECODEC_MEMBER_NAME_MAX);
        return -1;
    }
    return 0;
}

/* ---- generic key handling ---------------------------------------------------------- */

static const struct cfg_key *find_key(const char *section, const char *name, size_t *idx)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0) {
            *idx = i;
            return &keys[i];
        }
    }
    return NULL;
}

static bool section_known(const char *section)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].section, section) == 0)
            return true;
    }
    return false;
}

/* Parses value for key k into cfg. Returns 0/-1 with a message. */
static int set_key(struct offhook_config *cfg, const struct cfg_key *k, const char *value,
                   char *err, size_t len)
{
    char *base = (char *)cfg;

    switch (k->type) {
    case T_STR:
    case T_SECRET: {
        char **slot = (char **)(base + k->offset);
        if (k->validate && k->validate(cfg, value, err, len) < 0)
            return -1;
        free(*slot);
        *slot = xstrdup(value);
        return 0;
    }
    case T_INT: {
        long v;
        if (str_parse_long(value, k->min, k->max, &v) < 0) {
            snprintf(err, len, "%s must be a whole number from %ld to %ld, not '%s'", k->name,
                     k->min, k->max, value);
            return -1;
        }
        if (k->validate && k->validate(cfg, value, err, len) < 0)
            return -1;
        *(long *)(base + k->offset) = v;
        return 0;
    }
    case T_BOOL: {
        bool v;
        if (str_parse_bool(value, &v) < 0) {
            snprintf(err, len, "%s must be yes or no, not '%s'", k->name, value);
            return -1;
        }
        *(bool *)(base + k->offset) = v;
        return 0;
    }
    }
    return -1;
}

static void apply_defaults(struct offhook_config *cfg)
{
    char err[256];

    for (size_t i = 0; i < NKEYS; i++) {
        if (set_key(cfg, &keys[i], keys[i].def, err, sizeof err) < 0) {
            /* A default that fails its own validator is a bug in this table. */
            fprintf(stderr, "offhook: bad built-in default for [%s] %s: %s\n",
                    keys[i].section, keys[i].name, err);
            abort();
        }
    }
}

/* ---- the users' string pool ---------------------------------------------------------- */

/* Blocks of 64 KiB (a heap chunk of that size, under glibc's mmap threshold), the strings
 * taken from the bottom up and the pointer arrays (AORs, groups) from the top down, so
 * that neither pads the other: at 100,000 users a user's JID, contact and AOR took three
 * chunks of 32-48 B for ~75 B of text and pointers. Freed whole with the configuration. */
struct cfg_pool_block {
    struct cfg_pool_block *next;
    size_t lo, hi;             /* free space is data[lo, hi) */
    char *data;                /* just after the header, pointer-aligned */
};

#define POOL_BLOCK (64 * 1024 - 16) /* a 64 KiB chunk with malloc's header */

static void *pool_take(struct cfg_pool_block **pool, size_t n, bool ptrs)
{
    struct cfg_pool_block *b = *pool;
    size_t hdr = (sizeof *b + sizeof(char *) - 1) / sizeof(char *) * sizeof(char *);

    if (ptrs)
        n = (n + sizeof(char *) - 1) / sizeof(char *) * sizeof(char *);
    if (!b || b->hi - b->lo < n) {
        size_t size = hdr + n > POOL_BLOCK ? hdr + n : POOL_BLOCK;

        size = size / sizeof(char *) * sizeof(char *);
        b = xmalloc(size);
        b->next = *pool;
        b->data = (char *)b + hdr;
        b->lo = 0;
        b->hi = size - hdr;
        *pool = b;
    }
    if (ptrs) {
        b->hi -= n;
        return b->data + b->hi;
    }
    b->lo += n;
    return b->data + b->lo - n;
}

static char *pool_strdup(struct cfg_pool_block **pool, const char *s)
{
    size_t n = strlen(s) + 1;

    return memcpy(pool_take(pool, n, false), s, n);
}

static char *pool_dup_opt(struct cfg_pool_block **pool, const char *s)
{
    return s ? pool_strdup(pool, s) : NULL;
}

/* n strings' copies and the array pointing at them, or NULL when n is 0. */
static char **pool_strv(struct cfg_pool_block **pool, char *const *v, size_t n)
{
    char **out;

    if (!n)
        return NULL;
    out = pool_take(pool, n * sizeof *out, true);
    for (size_t i = 0; i < n; i++)
        out[i] = pool_strdup(pool, v[i]);
    return out;
}

static void pool_free(struct cfg_pool_block **pool)
{
    while (*pool) {
        struct cfg_pool_block *b = *pool;

        *pool = b->next;
        free(b);
    }
}

/* dst becomes src with every string in the pool. */
static void user_pack(struct cfg_pool_block **pool, struct cfg_user *dst, const struct cfg_user *src)
{
    *dst = *src;
    dst->jid = pool_dup_opt(pool, src->jid);
    dst->aors = pool_strv(pool, src->aors, src->naors);
    dst->contact = pool_dup_opt(pool, src->contact);
    dst->name = pool_dup_opt(pool, src->name);
    dst->tel = pool_dup_opt(pool, src->tel);
    dst->groups = pool_strv(pool, src->groups, src->ngroups);
}

/* ---- the users' indexes (struct cfg_index) ----------------------------------------------- */

static uint64_t index_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a, as strmap */

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

static const char *index_key(const struct cfg_user *u, bool contact)
{
    return contact ? u->contact : u->jid;
}

/* The slot holding key, or the empty slot where it would go. Needs cap > count. */
static size_t index_slot(const struct cfg_index *x, const struct cfg_user *users, bool contact,
                         const char *key)
{
    size_t i = (size_t)(((unsigned __int128)index_hash(key) * x->cap) >> 64);

    for (;; i = i + 1 == x->cap ? 0 : i + 1) {
        unsigned v = x->slots[i];

        if (!v || strcmp(index_key(&users[v - 1], contact), key) == 0)
            return i;
    }
}

/* The index of the user whose key is key, or -1. */
static long index_get(const struct cfg_index *x, const struct cfg_user *users, bool contact,
                      const char *key)
{
    unsigned v;

    if (!x->cap || !key)
        return -1;
    v = x->slots[index_slot(x, users, contact, key)];
    return v ? (long)v - 1 : -1;
}

/* Adds users[idx] under its key (not there yet). Grows by half at 3/4 load, as strmap. */
static void index_put(struct cfg_index *x, const struct cfg_user *users, bool contact, size_t idx)
{
    if ((x->count + 1) * 4 > x->cap * 3) {
        struct cfg_index old = *x;
        size_t cap = old.cap < 4 ? old.cap + 2 : old.cap + old.cap / 2;

        x->slots = xcalloc(cap, sizeof *x->slots);
        x->cap = cap;
        for (size_t i = 0; i < old.cap; i++) {
            if (old.slots[i])
                x->slots[index_slot(x, users, contact,
                                    index_key(&users[old.slots[i] - 1], contact))] = old.slots[i];
        }
        free(old.slots);
    }
    if (idx >= 0xffffffffu)
        abort(); /* 4 G users: a 64 MiB file cannot hold them */
    x->slots[index_slot(x, users, contact, index_key(&users[idx], contact))] = (unsigned)idx + 1;
    x->count++;
}

static void index_free(struct cfg_index *x)
{
    free(x->slots);
    memset(x, 0, sizeof *x);
}

/* ---- users ------------------------------------------------------------------------- */

static struct cfg_user *user_get(struct loader *ld, const char *jid, int line, bool *created)
{
    struct offhook_config *cfg = ld->cfg;
    long idx = index_get(&cfg->user_by_jid, cfg->users, false, jid);
    struct cfg_user *u;

    *created = false;
    if (idx >= 0)
        return &cfg->users[idx];
    if (cfg->nusers == ld->users_cap) {
        ld->users_cap = ld->users_cap ? ld->users_cap * 2 : 16;
        cfg->users = xrealloc(cfg->users, ld->users_cap * sizeof *cfg->users);
    }
    u = &cfg->users[cfg->nusers++];
    memset(u, 0, sizeof *u);
    u->jid = pool_strdup(&cfg->pool, jid);
    u->show_remote_party = -1;
    u->line = line;
    index_put(&cfg->user_by_jid, cfg->users, false, cfg->nusers - 1);
    *created = true;
    return u;
}

/* The user JID as written in a key or section header: a bare JID with a local part. */
static int user_jid(struct loader *ld, int line, const char *raw, char *out, size_t outlen)
{
    struct jid j;

    if (jid_parse(raw, &j) < 0 || !j.local[0] || j.resource[0]) {
        add_err(ld->errs, ld->file, line, "'%s' is not a bare user JID (user@domain)", raw);
        return -1;
    }
    return jid_format_bare(&j, out, outlen);
}

static void user_set_aors(struct loader *ld, int line, struct cfg_user *u, const char *value)
{
    char *copy = xstrdup(value);
    char *items[CFG_MAX_AORS + 1];
    int n = str_split_list(copy, items, CFG_MAX_AORS), ok = 0;
    char err[256];

    if (u->naors) {
        add_err(ld->errs, ld->file, line, "phones of %s are already given on line %d", u->jid,
                u->line);
        goto out;
    }
    if (n < 0) {
        add_err(ld->errs, ld->file, line, "%s: at most %d phone AORs per user", u->jid,
                CFG_MAX_AORS);
        goto out;
    }
    if (n == 0) {
        add_err(ld->errs, ld->file, line, "%s: no phone AOR given", u->jid);
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if (check_sip_uri(items[i], true, err, sizeof err) < 0) {
            add_err(ld->errs, ld->file, line, "%s", err);
            continue;
        }
        items[ok++] = items[i];
    }
    u->aors = pool_strv(&ld->cfg->pool, items, (size_t)ok);
    u->naors = (unsigned char)ok;
    u->line = line;
out:
    free(copy);
}

static void user_set_groups(struct loader *ld, int line, struct cfg_user *u, const char *value)
{
    char *copy = xstrdup(value);
    char *items[CFG_MAX_GROUPS + 1];
    int n = str_split_list(copy, items, CFG_MAX_GROUPS);

    if (u->ngroups)
        add_err(ld->errs, ld->file, line, "'groups' given twice for %s", u->jid);
    else if (n < 0)
        add_err(ld->errs, ld->file, line, "%s: at most %d groups per user", u->jid,
                CFG_MAX_GROUPS);
    else if (n > 0) {
        u->groups = pool_strv(&ld->cfg->pool, items, (size_t)n);
        u->ngroups = (unsigned char)n;
    }
    free(copy);
}

static void users_line(struct loader *ld, int line, const char *key, const char *value)
{
    char jid[JID_MAX + 1];
    bool created;
    struct cfg_user *u;

    if (user_jid(ld, line, key, jid, sizeof jid) < 0)
        return;
    u = user_get(ld, jid, line, &created);
    user_set_aors(ld, line, u, value);
}

static void user_section_line(struct loader *ld, int line, const char *key, const char *value)
{
    struct cfg_user *u = &ld->cfg->users[ld->cur_user];
    char **slot = NULL;

    if (strcmp(key, "aor") == 0) {
        user_set_aors(ld, line, u, value);
        return;
    }
    if (strcmp(key, "show_remote_party") == 0) {
        bool b;
        if (str_parse_bool(value, &b) < 0)
            add_err(ld->errs, ld->file, line, "show_remote_party must be yes or no");
        else
            u->show_remote_party = b;
        return;
    }
    if (strcmp(key, "groups") == 0) {
        user_set_groups(ld, line, u, value);
        return;
    }
    if (strcmp(key, "contact") == 0)
        slot = &u->contact;
    else if (strcmp(key, "name") == 0)
        slot = &u->name;
    else if (strcmp(key, "tel") == 0)
        slot = &u->tel;
    if (!slot) {
        add_err(ld->errs, ld->file, line,
                "unknown key '%s' in [user %s] (aor, contact, name, tel, groups, "
                "show_remote_party)",
                key, u->jid);
        return;
    }
    if (*slot) {
        add_err(ld->errs, ld->file, line, "'%s' given twice for %s", key, u->jid);
        return;
    }
    if (strcmp(key, "tel") == 0) {
        for (const char *p = value; *p; p++) {
            if (!isdigit((unsigned char)*p) && !strchr("+-.() ", *p)) {
                add_err(ld->errs, ld->file, line, "tel '%s' is not a phone number", value);
                return;
            }
        }
    }
    *slot = pool_strdup(&ld->cfg->pool, value);
}

/* The phone contact of jid: contact (a local part, or a bare JID on domain) when given,
 * else jid's local part on domain; normalized into out. Returns 0/-1 with a message. */
static int contact_of(const char *domain, const char *jid, const char *contact, char *out,
                      size_t outlen, char *err, size_t errlen)
{
    char buf[2 * JID_MAX + 2];
    struct jid j;

    if (contact && strchr(contact, '@')) {
        snprintf(buf, sizeof buf, "%s", contact);
    } else if (contact) {
        snprintf(buf, sizeof buf, "%s@%s", contact, domain);
    } else {
        if (jid_parse(jid, &j) < 0 || !j.local[0]) {
            snprintf(err, errlen, "'%s' is not a bare user JID (user@domain)", jid);
            return -1;
        }
        snprintf(buf, sizeof buf, "%s@%s", j.local, domain);
    }
    if (jid_parse(buf, &j) < 0 || !j.local[0] || j.resource[0] || strcmp(j.domain, domain) != 0 ||
        jid_format_bare(&j, out, outlen) < 0) {
        snprintf(err, errlen,
                 "phone contact '%.*s' of %.*s must be a bare JID on the component domain %s",
                 JID_PART_MAX, buf, JID_PART_MAX, jid, domain);
        return -1;
    }
    return 0;
}

/* Builds contact JIDs and the lookup maps once the file is read. */
static void users_finalize(struct loader *ld)
{
    struct offhook_config *cfg = ld->cfg;
    const char *domain = cfg->xmpp_domain;

    /* The array grew by doubling: at 100,000 users its slack was ~30 bytes per user in
     * each daemon. Nothing points into it yet (the maps below are the first). */
    if (cfg->nusers && cfg->nusers < ld->users_cap) {
        cfg->users = xrealloc(cfg->users, cfg->nusers * sizeof *cfg->users);
        ld->users_cap = cfg->nusers;
    }

    for (size_t i = 0; i < cfg->nusers; i++) {
        struct cfg_user *u = &cfg->users[i];
        char buf[JID_MAX + 1], err[JID_MAX + 256];
        struct cfg_user *other;
        long o;

        if (!u->naors) {
            add_err(ld->errs, ld->file, u->line, "%s has no phone: give aor = sip:...", u->jid);
            continue;
        }
        if (contact_of(domain, u->jid, u->contact, buf, sizeof buf, err, sizeof err) < 0) {
            add_err(ld->errs, ld->file, u->line, "%s", err);
            continue;
        }
        if (!u->contact || strcmp(u->contact, buf) != 0)
            u->contact = pool_strdup(&cfg->pool, buf);
        o = index_get(&cfg->user_by_contact, cfg->users, true, u->contact);
        if (o >= 0) {
            other = &cfg->users[o];
            add_err(ld->errs, ld->file, u->line,
                    "phone contact %s of %s collides with that of %s (line %d): set contact = "
                    "in a [user %s] section",
                    u->contact, u->jid, other->jid, other->line, u->jid);
            continue;
        }
        index_put(&cfg->user_by_contact, cfg->users, true, i);
    }
}

/* ---- secrets ----------------------------------------------------------------------- */

/* Reads the first line of a secret file. Returns 0/-1 with a message. */
static int read_secret_file(const char *path, char **out, char *err, size_t len)
{
    char buf[1024];
    FILE *f = fopen(path, "r");
    struct stat st;
    size_t n;

    if (!f) {
        snprintf(err, len, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH)) {
        fclose(f);
        snprintf(err, len, "%s is readable by other users: chmod o-r it", path);
        return -1;
    }
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (!buf[0]) {
        snprintf(err, len, "%s is empty", path);
        return -1;
    }
    free(*out);
    *out = xstrdup(buf);
    explicit_bzero(buf, sizeof buf);
    return 0;
}

static unsigned secret_use = CFG_SECRET_ALL;

void config_set_secret_use(unsigned flags)
{
    secret_use = flags;
}

static void resolve_secrets(struct loader *ld, bool world_readable)
{
    static const struct {
        const char *section, *secret, *file;
        size_t secret_off, file_off;
        unsigned flag;
    } pairs[] = {
        {"sip", "password", "password_file", OFF(sip_password), OFF(sip_password_file),
         CFG_SECRET_SIP},
        {"xmpp", "secret", "secret_file", OFF(xmpp_secret), OFF(xmpp_secret_file),
         CFG_SECRET_XMPP},
        {"redis", "password", "password_file", OFF(redis_password), OFF(redis_password_file),
         CFG_SECRET_REDIS},
        {"redis", "sentinel_password", "sentinel_password_file", OFF(redis_sentinel_password),
         OFF(redis_sentinel_password_file), CFG_SECRET_REDIS},
        {"directory", "bind_password", "bind_password_file", OFF(dir_bind_password),
         OFF(dir_bind_password_file), CFG_SECRET_LDAP},
        {"component", "roster_api_password", "roster_api_password_file",
         OFF(roster_api_password), OFF(roster_api_password_file), CFG_SECRET_XMPP},
    };
    char *base = (char *)ld->cfg;

    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        size_t si, fi;
        char **secret = (char **)(base + pairs[i].secret_off);
        char *file = *(char **)(base + pairs[i].file_off);
        char err[512];
        bool from_file = file[0] && !(*secret)[0];

        find_key(pairs[i].section, pairs[i].secret, &si);
        find_key(pairs[i].section, pairs[i].file, &fi);
        if (ld->set[si] && (*secret)[0] && world_readable) {
            add_err(ld->errs, ld->file, ld->set_line[si],
                    "[%s] %s is set but the file is readable by other users: chmod o-r it, "
                    "or use %s",
                    pairs[i].section, pairs[i].secret, pairs[i].file);
        }
        if (file[0]) {
            if ((*secret)[0]) {
                add_err(ld->errs, ld->file, ld->set_line[fi], "[%s] set %s or %s, not both",
                        pairs[i].section, pairs[i].secret, pairs[i].file);
            } else if (!(secret_use & pairs[i].flag)) {
                /* not this process's secret: leave the file unopened */
            } else if (read_secret_file(file, secret, err, sizeof err) < 0) {
                add_err(ld->errs, ld->file, ld->set_line[fi], "[%s] %s: %s", pairs[i].section,
                        pairs[i].file, err);
            }
        }
        /* The deploy/ recipes' placeholder: a server and an offhook both left at it would
         * work, with a secret everyone knows. */
        if ((secret_use & pairs[i].flag) && strcmp(*secret, CFG_PLACEHOLDER_SECRET) == 0) {
            add_err(ld->errs, ld->file, ld->set_line[from_file ? fi : si],
                    "[%s] %s is the recipes' placeholder '%s': choose a secret of your own "
                    "(and give the server the same one)",
                    pairs[i].section, from_file ? pairs[i].file : pairs[i].secret,
                    CFG_PLACEHOLDER_SECRET);
        }
    }
}

/* ---- the INI reader ---------------------------------------------------------------- */

/* SIP over TLS: a pbx reached over TLS needs a tls: listen (Sofia has no TLS transport
 * otherwise), and the files of tls_dir must be readable (Sofia would silently go on
 * without them, checking nothing). Only where the SIP side runs (sipbridge). */
static void check_tls(struct loader *ld)
{
    static const char *const files[] = {"cafile.pem", "agent.pem"};
    struct offhook_config *cfg = ld->cfg;
    bool tls_listen = false, tls_pbx;
    size_t dir_i, pbx_i;
    int line;

    if (!(secret_use & CFG_SECRET_SIP))
        return;
    for (int i = 0; i < cfg->sip_nlisten; i++)
        tls_listen = tls_listen || strncmp(cfg->sip_listen_urls[i], "sips:", 5) == 0;
    tls_pbx = strncasecmp(cfg->sip_pbx, "sips:", 5) == 0 ||
              strcasestr(cfg->sip_pbx, ";transport=tls") != NULL;
    find_key("sip", "pbx", &pbx_i);
    if (tls_pbx && !tls_listen)
        add_err(ld->errs, ld->file, ld->set_line[pbx_i],
                "pbx '%s' is reached over TLS: [sip] listen needs a tls:HOST:PORT entry",
                cfg->sip_pbx);
    if (!tls_listen)
        return;
    find_key("sip", "tls_dir", &dir_i);
    line = ld->set[dir_i] ? ld->set_line[dir_i] : 0;
    /* cafile.pem is only read when something is checked; agent.pem always. */
    for (int i = strcmp(cfg->sip_tls_verify, "none") == 0 ? 1 : 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", cfg->sip_tls_dir, files[i]);
        if (access(path, R_OK) != 0)
            add_err(ld->errs, ld->file, line, "[sip] tls_dir: cannot read %s (%s)", path,
                    strerror(errno));
    }
}

/* One way to find Redis: a url, or the sentinels (whose master has no url). */
static void check_redis(struct loader *ld)
{
    size_t url_i, sen_i;

    find_key("redis", "url", &url_i);
    find_key("redis", "sentinels", &sen_i);
    if (ld->set[url_i] && ld->set[sen_i] && ld->cfg->redis_nsentinels > 0)
        add_err(ld->errs, ld->file, ld->set_line[url_i] > ld->set_line[sen_i]
                                        ? ld->set_line[url_i] : ld->set_line[sen_i],
                "[redis] set url (line %d) or sentinels (line %d), not both",
                ld->set_line[url_i], ld->set_line[sen_i]);
}

/* [directory] source = ldap: the users are the directory's, and it needs a base. */
static void check_directory(struct loader *ld)
{
    struct offhook_config *cfg = ld->cfg;
    size_t src_i, pw_i, pwf_i;

    find_key("directory", "source", &src_i);
    find_key("directory", "bind_password", &pw_i);
    find_key("directory", "bind_password_file", &pwf_i);
    if (!cfg->dir_ldap)
        return;
    if (cfg->nusers)
        add_err(ld->errs, ld->file, cfg->users[0].line,
                "users come from LDAP ([directory] source = ldap on line %d): remove the "
                "[users] and [user JID] sections",
                ld->set_line[src_i]);
    if (!cfg->dir_base[0])
        add_err(ld->errs, ld->file, ld->set_line[src_i],
                "[directory] source = ldap needs a base (where the users are)");
    if (!cfg->dir_bind_dn[0] && (ld->set[pw_i] || ld->set[pwf_i]))
        add_err(ld->errs, ld->file, ld->set_line[ld->set[pw_i] ? pw_i : pwf_i],
                "[directory] a bind password without bind_dn: set bind_dn too");
}

/* Cuts a value at an inline comment (';' or '#' after white space) or unquotes it.
 * Returns the value or NULL with a message. */
static char *parse_value(char *v, char *err, size_t len)
{
    v = str_trim(v);
    if (*v == '"') {
        char *out = v, *p = v + 1;
        while (*p && *p != '"') {
            if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                p++;
            *out++ = *p++;
        }
        if (*p != '"') {
            snprintf(err, len, "unterminated quoted value");
            return NULL;
        }
        p = str_trim(p + 1);
        if (*p && *p != ';' && *p != '#') {
            snprintf(err, len, "text after a quoted value");
            return NULL;
        }
        *out = '\0';
        return v;
    }
    for (char *p = v; *p; p++) {
        if ((*p == ';' || *p == '#') && p > v && isspace((unsigned char)p[-1])) {
            *p = '\0';
            break;
        }
    }
    return str_trim(v);
}

static void handle_section(struct loader *ld, int line, char *name)
{
    ld->in_users = false;
    ld->cur_user = -1;
    ld->skip_section = false;
    name = str_trim(name);
    if (strncmp(name, "user ", 5) == 0) {
        char jid[JID_MAX + 1];
        bool created;
        struct cfg_user *u;

        if (user_jid(ld, line, str_trim(name + 5), jid, sizeof jid) < 0) {
            ld->skip_section = true;
            return;
        }
        u = user_get(ld, jid, line, &created);
        ld->cur_user = u - ld->cfg->users;
        return;
    }
    if (strcmp(name, "users") == 0) {
        ld->in_users = true;
        return;
    }
    if (!section_known(name)) {
        add_err(ld->errs, ld->file, line, "unknown section [%s]", name);
        ld->skip_section = true;
        return;
    }
}

static void handle_line(struct loader *ld, int line, char *s, char *section)
{
    char *eq, *key, *value;
    char err[512];

    s = str_trim(s);
    if (!*s || *s == ';' || *s == '#')
        return;
    if (*s == '[') {
        char *rb = strchr(s, ']');
        char *rest = rb ? str_trim(rb + 1) : NULL;
        if (!rb || (*rest && *rest != ';' && *rest != '#')) {
            add_err(ld->errs, ld->file, line, "malformed section header");
            ld->skip_section = true;
            return;
        }
        *rb = '\0';
        snprintf(section, 256, "%s", str_trim(s + 1));
        handle_section(ld, line, s + 1);
        return;
    }
    eq = strchr(s, '=');
    if (!eq) {
        add_err(ld->errs, ld->file, line, "expected key = value");
        return;
    }
    *eq = '\0';
    key = str_trim(s);
    value = parse_value(eq + 1, err, sizeof err);
    if (!value) {
        add_err(ld->errs, ld->file, line, "%s", err);
        return;
    }
    if (!*key) {
        add_err(ld->errs, ld->file, line, "empty key");
        return;
    }
    if (ld->skip_section)
        return;
    if (!section[0]) {
        add_err(ld->errs, ld->file, line, "'%s' is outside any [section]", key);
        return;
    }
    if (ld->in_users) {
        users_line(ld, line, key, value);
        return;
    }
    if (ld->cur_user >= 0) {
        user_section_line(ld, line, key, value);
        return;
    }
    {
        size_t idx;
        const struct cfg_key *k = find_key(section, key, &idx);

        if (!k) {
            add_err(ld->errs, ld->file, line, "unknown key '%s' in [%s]", key, section);
            return;
        }
        if (ld->set[idx]) {
            add_err(ld->errs, ld->file, line, "[%s] %s is already set on line %d", section,
                    key, ld->set_line[idx]);
            return;
        }
        if (set_key(ld->cfg, k, value, err, sizeof err) < 0) {
            add_err(ld->errs, ld->file, line, "%s", err);
            return;
        }
        ld->set[idx] = true;
        ld->set_line[idx] = line;
    }
}

/* Whether key k holds the same value in a and b. */
static bool key_same(const struct cfg_key *k, const struct offhook_config *a,
                     const struct offhook_config *b)
{
    const char *pa = (const char *)a, *pb = (const char *)b;

    switch (k->type) {
    case T_STR:
    case T_SECRET: {
        const char *va = *(char *const *)(pa + k->offset), *vb = *(char *const *)(pb + k->offset);
        return strcmp(va ? va : "", vb ? vb : "") == 0;
    }
    case T_INT:
        return *(const long *)(pa + k->offset) == *(const long *)(pb + k->offset);
    case T_BOOL:
        return *(const bool *)(pa + k->offset) == *(const bool *)(pb + k->offset);
    }
    return true;
}

static void pending_add(struct cfg_pending *p, const struct cfg_key *k)
{
    size_t used = strlen(p->keys);
    int w = snprintf(p->keys + used, sizeof p->keys - used, "%s[%s] %s", p->n ? ", " : "",
                     k->section, k->name);

    if (w < 0 || (size_t)w >= sizeof p->keys - used)
        p->keys[used] = '\0'; /* the count stays right; the list is cut at a whole key */
    p->n++;
}

/* A reload: every restart-only key keeps running's value (noted in pending when the file
 * says otherwise), before anything is derived from them (contacts from the domain,
 * secrets). secrets=true: the T_SECRET keys, resolved from their files by then. */
static void keep_running(struct offhook_config *cfg, const struct offhook_config *running,
                         struct cfg_pending *pending, bool secrets)
{
    const char *pr = (const char *)running;
    char *base = (char *)cfg;

    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &keys[i];
        char text[32], err[256];
        const char *v = text;

        if (k->reloadable || (k->type == T_SECRET) != secrets || key_same(k, cfg, running))
            continue;
        pending_add(pending, k);
        if (k->type == T_SECRET) {
            char **slot = (char **)(base + k->offset);
            const char *rv = *(char *const *)(pr + k->offset);
            if (*slot)
                explicit_bzero(*slot, strlen(*slot));
            free(*slot);
            *slot = xstrdup(rv ? rv : "");
            continue;
        }
        if (k->type == T_STR)
            v = *(char *const *)(pr + k->offset);
        else if (k->type == T_INT)
            snprintf(text, sizeof text, "%ld", *(const long *)(pr + k->offset));
        else
            snprintf(text, sizeof text, "%s", *(const bool *)(pr + k->offset) ? "yes" : "no");
        /* Running values passed these validators when they were loaded. */
        if (set_key(cfg, k, v, err, sizeof err) < 0)
            abort();
    }
}

static size_t load(const char *name, const char *buf, size_t len, bool world_readable,
                   struct offhook_config *cfg, struct cfg_errors *errs,
                   const struct offhook_config *running, struct cfg_pending *pending)
{
    struct loader ld = {.file = name, .cfg = cfg, .errs = errs, .cur_user = -1};
    char section[256] = "";
    size_t before = errs->n;
    size_t pos = 0;
    int line = 0;
    char *lbuf = xmalloc(CFG_MAX_LINE + 1);

    cfg->path = xstrdup(name);
    apply_defaults(cfg);

    while (pos < len) {
        const char *nl = memchr(buf + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (buf + pos)) : len - pos;

        line++;
        if (ll > CFG_MAX_LINE) {
            add_err(errs, name, line, "line longer than %d bytes", CFG_MAX_LINE);
        } else if (memchr(buf + pos, '\0', ll)) {
            add_err(errs, name, line, "NUL byte in line");
        } else {
            memcpy(lbuf, buf + pos, ll);
            lbuf[ll] = '\0';
            if (ll && lbuf[ll - 1] == '\r')
                lbuf[ll - 1] = '\0';
            handle_line(&ld, line, lbuf, section);
        }
        pos += ll + (nl ? 1 : 0);
    }
    free(lbuf);

    if (running)
        keep_running(cfg, running, pending, false);
    resolve_secrets(&ld, world_readable);
    if (running)
        keep_running(cfg, running, pending, true);
    check_tls(&ld);
    check_redis(&ld);
    check_directory(&ld);
    users_finalize(&ld);
    if (cfg->nusers == 0 && !cfg->dir_ldap)
        add_err(errs, name, 0, "no users: add a [users] section (chat JID = phone SIP URI), "
                               "or take them from LDAP ([directory] source = ldap)");
    return errs->n - before;
}

size_t config_load_buffer(const char *name, const char *buf, size_t len,
                          struct offhook_config *cfg, struct cfg_errors *errs)
{
    return load(name, buf, len, false, cfg, errs, NULL, NULL);
}

static size_t load_file(const char *path, struct offhook_config *cfg, struct cfg_errors *errs,
                        const struct offhook_config *running, struct cfg_pending *pending)
{
    struct stat st;
    char *buf = NULL;
    size_t n = 0, rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        add_err(errs, path, 0, "cannot open: %s", strerror(errno));
        return 1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        add_err(errs, path, 0, "not a regular file");
        close(fd);
        return 1;
    }
    if (st.st_size > CFG_MAX_FILE) {
        add_err(errs, path, 0, "larger than %ld bytes", CFG_MAX_FILE);
        close(fd);
        return 1;
    }
    buf = xmalloc((size_t)st.st_size + 1);
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    rc = load(path, buf, n, (st.st_mode & S_IROTH) != 0, cfg, errs, running, pending);
    explicit_bzero(buf, n);
    free(buf);
    return rc;
}

size_t config_load(const char *path, struct offhook_config *cfg, struct cfg_errors *errs)
{
    return load_file(path, cfg, errs, NULL, NULL);
}

size_t config_reload(const char *path, const struct offhook_config *running,
                     struct offhook_config *next, struct cfg_pending *pending,
                     struct cfg_errors *errs)
{
    memset(pending, 0, sizeof *pending);
    return load_file(path, next, errs, running, pending);
}

void config_free(struct offhook_config *cfg)
{
    char *base = (char *)cfg;

    for (size_t i = 0; i < NKEYS; i++) {
        if (keys[i].type == T_STR || keys[i].type == T_SECRET) {
            char **slot = (char **)(base + keys[i].offset);
            if (*slot && keys[i].type == T_SECRET)
                explicit_bzero(*slot, strlen(*slot));
            free(*slot);
        }
    }
    for (int i = 0; i < cfg->sip_nlisten; i++)
        free(cfg->sip_listen_urls[i]);
    redis_target_free(&cfg->redis);
    sentinels_free(cfg);
    free(cfg->users); /* their strings are in the pool */
    pool_free(&cfg->pool);
    index_free(&cfg->user_by_jid);
    index_free(&cfg->user_by_contact);
    free(cfg->path);
    memset(cfg, 0, sizeof *cfg);
}

int config_diff_restart_keys(const struct offhook_config *a, const struct offhook_config *b,
                             char *buf, size_t len)
{
    struct cfg_pending p = {0};

    for (size_t i = 0; i < NKEYS; i++) {
        if (!keys[i].reloadable && !key_same(&keys[i], a, b))
            pending_add(&p, &keys[i]);
    }
    if (len)
        snprintf(buf, len, "%s", p.keys);
    return p.n;
}

/* k's value in cfg as text: a string itself, numbers and booleans into buf; secrets are
 * never shown. */
static const char *value_text(const struct cfg_key *k, const struct offhook_config *cfg,
                              char *buf, size_t len)
{
    const char *base = (const char *)cfg;

    switch (k->type) {
    case T_STR: {
        const char *v = *(char *const *)(base + k->offset);
        return v ? v : "";
    }
    case T_SECRET: {
        const char *v = *(char *const *)(base + k->offset);
        return v && *v ? "(set)" : "";
    }
    case T_INT:
        snprintf(buf, len, "%ld", *(const long *)(base + k->offset));
        return buf;
    case T_BOOL:
        return *(const bool *)(base + k->offset) ? "yes" : "no";
    }
    return "";
}

void config_each_value(const struct offhook_config *running, const struct offhook_config *file,
                       void (*fn)(void *arg, const struct cfg_value *v), void *arg)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &keys[i];
        struct cfg_value v = {.section = k->section, .name = k->name,
                              .reloadable = k->reloadable, .secret = k->type == T_SECRET};

        v.value = value_text(k, running, v.buf, sizeof v.buf);
        v.is_default = strcmp(v.value, k->type == T_SECRET ? (k->def[0] ? "(set)" : "")
                                                           : k->def) == 0;
        if (file && !key_same(k, running, file)) {
            v.differs = true;
            v.file_value = value_text(k, file, v.file_buf, sizeof v.file_buf);
        }
        fn(arg, &v);
    }
}

void config_print_defaults(FILE *out)
{
    const char *section = "";

    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &keys[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(out, "; %s%s\n;%s = %s\n", k->help, k->reloadable ? "" : " (restart to change)",
                k->name, k->def);
    }
}

const struct cfg_user *config_user_by_jid(const struct offhook_config *cfg, const char *jid)
{
    long i = index_get(&cfg->user_by_jid, cfg->users, false, jid);

    return i >= 0 ? &cfg->users[i] : NULL;
}

const struct cfg_user *config_user_by_contact(const struct offhook_config *cfg,
                                              const char *contact)
{
    long i = index_get(&cfg->user_by_contact, cfg->users, true, contact);

    return i >= 0 ? &cfg->users[i] : NULL;
}

bool config_user_shows_remote(const struct offhook_config *cfg, const struct cfg_user *u)
{
    return u->show_remote_party >= 0 ? u->show_remote_party != 0 : cfg->show_remote_party;
}

/* ---- for directory sources ------------------------------------------------------------ */

int config_check_sip_uri(const char *v, bool need_user, char *err, size_t len)
{
    return check_sip_uri(v, need_user, err, len);
}

int config_contact_for(const struct offhook_config *cfg, const char *jid, char *out,
                       size_t outlen, char *err, size_t errlen)
{
    return contact_of(cfg->xmpp_domain, jid, NULL, out, outlen, err, errlen);
}

void config_copy_keys(struct offhook_config *dst, const struct offhook_config *src)
{
    const char *ps = (const char *)src;
    char *base = (char *)dst;

    dst->path = xstrdup(src->path);
    /* Through set_key, so that the validators fill the derived fields (listen URLs, Redis
     * target, flags) exactly as a load does. Secrets are taken as they are: their files
     * were read when src was loaded. */
    for (size_t i = 0; i < NKEYS; i++) {
        const struct cfg_key *k = &keys[i];
        char text[32], err[256];
        const char *v = text;

        if (k->type == T_SECRET) {
            const char *sv = *(char *const *)(ps + k->offset);
            *(char **)(base + k->offset) = xstrdup(sv ? sv : "");
            continue;
        }
        if (k->type == T_STR)
            v = *(char *const *)(ps + k->offset);
        else if (k->type == T_INT)
            snprintf(text, sizeof text, "%ld", *(const long *)(ps + k->offset));
        else
            snprintf(text, sizeof text, "%s", *(const bool *)(ps + k->offset) ? "yes" : "no");
        /* src's values passed these validators when it was loaded. */
        if (set_key(dst, k, v ? v : "", err, sizeof err) < 0)
            abort();
    }
}

void config_set_users(struct offhook_config *cfg, struct cfg_user *users, size_t n)
{
    cfg->users = users;
    cfg->nusers = n;
    for (size_t i = 0; i < n; i++) {
        struct cfg_user loose = users[i];

        user_pack(&cfg->pool, &users[i], &loose);
        config_user_free(&loose);
        index_put(&cfg->user_by_jid, cfg->users, false, i);
        index_put(&cfg->user_by_contact, cfg->users, true, i);
    }
}

void config_copy_users(struct offhook_config *cfg, const struct cfg_user *users, size_t n)
{
    cfg->users = xmalloc((n ? n : 1) * sizeof *cfg->users);
    cfg->nusers = n;
    for (size_t i = 0; i < n; i++) {
        user_pack(&cfg->pool, &cfg->users[i], &users[i]);
        index_put(&cfg->user_by_jid, cfg->users, false, i);
        index_put(&cfg->user_by_contact, cfg->users, true, i);
    }
}

static char *dup_opt(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

/* The AORs' pointers and strings in one block: a user has one or two, and a pointer array
 * plus a string each took three heap chunks. Rebuilt at each append (at most
 * CFG_MAX_AORS, while loading). */
void config_user_add_aor(struct cfg_user *u, const char *aor)
{
    size_t n = (size_t)u->naors + 1, bytes = n * sizeof(char *), off;
    char **block;

    for (size_t i = 0; i + 1 < n; i++)
        bytes += strlen(u->aors[i]) + 1;
    bytes += strlen(aor) + 1;
    block = xmalloc(bytes);
    off = n * sizeof(char *);
    for (size_t i = 0; i < n; i++) {
        const char *s = i + 1 < n ? u->aors[i] : aor;
        size_t len = strlen(s) + 1;

        block[i] = (char *)block + off;
        memcpy(block[i], s, len);
        off += len;
    }
    free(u->aors);
    u->aors = block;
    u->naors = (unsigned char)n;
}

void config_user_copy(struct cfg_user *dst, const struct cfg_user *src)
{
    *dst = *src;
    dst->jid = dup_opt(src->jid);
    dst->contact = dup_opt(src->contact);
    dst->name = dup_opt(src->name);
    dst->tel = dup_opt(src->tel);
    dst->aors = NULL;
    dst->naors = 0;
    for (int i = 0; i < src->naors; i++)
        config_user_add_aor(dst, src->aors[i]);
    dst->groups = src->ngroups ? xcalloc((size_t)src->ngroups, sizeof *dst->groups) : NULL;
    for (int i = 0; i < src->ngroups; i++)
        dst->groups[i] = xstrdup(src->groups[i]);
}

void config_user_free(struct cfg_user *u)
{
    free(u->jid);
    free(u->contact);
    free(u->name);
    free(u->tel);
    free(u->aors);
    for (int i = 0; i < u->ngroups; i++)
        free(u->groups[i]);
    free(u->groups);
    memset(u, 0, sizeof *u);
}
