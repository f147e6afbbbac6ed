/* Directory entries into offhook's users, pure: the checks every entry a directory hands
 * over must pass (a bad one is left out and summed up in a report, never fatal), and the
 * encoding of one user in the last-known copy kept in Redis. Called by directory.c (and
 * by dir_ldap.c to read attribute values into entries); unit-tested from a data file. */
#ifndef OFFHOOK_DIRBUILD_H
#define OFFHOOK_DIRBUILD_H

/* Ownership: strings in a struct dir_entry are owned by it (dir_entry_free); functions
 * only read the pointers they are given unless their comment says otherwise. */

#include <stdbool.h>
#include <stddef.h>

#include "config.h"

/* Size limits on what is taken from a directory, in bytes. A JID or phone over its limit
 * leaves the entry out (it cannot be right); a name is cut, a group or tel dropped. */
#define DIR_MAX_JID 1024
#define DIR_MAX_PHONE 256
#define DIR_MAX_NAME 256
#define DIR_MAX_TEL 64
#define DIR_MAX_GROUP 128
#define DIR_MAX_PHONES (CFG_MAX_AORS + 1) /* one more than allowed, to notice too many */

/* One user as the directory has it, before any check. */
struct dir_entry {
    char *id;                        /* where it came from, for messages (a DN) */
    char *jid;                       /* NULL: the attribute is missing */
    char *phones[DIR_MAX_PHONES];    /* SIP URIs, or extensions/numbers for the template */
    int nphones;
    char *name;                      /* NULL: none */
    char *tel;                       /* NULL: none */
    char *groups[CFG_MAX_GROUPS];
    int ngroups;
    bool too_large;                  /* a JID or phone value was over its limit */
};

/* Why an entry was left out. */
enum dir_skip {
    DIR_SKIP_BAD_JID,        /* missing, or not a bare JID (user@domain) */
    DIR_SKIP_NO_PHONE,       /* no phone value */
    DIR_SKIP_BAD_PHONE,      /* a value that makes no SIP URI, or more than CFG_MAX_AORS */
    DIR_SKIP_DUP_JID,        /* its JID is another entry's too: both are left out */
    DIR_SKIP_DUP_PHONE,      /* one of its phones is another user's too: both left out */
    DIR_SKIP_CONTACT,        /* its phone contact is another user's (alice@a, alice@b) */
    DIR_SKIP_TOO_LARGE,      /* a value over its size limit */
    DIR_SKIP_OVER_LIMIT,     /* beyond [directory] max_users */
    DIR_SKIP__N
};
/* "bad_jid", "no_phone", ... (metric labels and log keys), DIR_SKIP__N of them and a
 * NULL after them (metric_new's label list). */
extern const char *const dir_skip_names[];

#define DIR_REPORT_EXAMPLES 3

struct dir_report {
    size_t skipped[DIR_SKIP__N];
    size_t total;                    /* entries left out */
    int nexamples;                   /* the first few, as "ID: why" */
    char examples[DIR_REPORT_EXAMPLES][320];
};

void dir_entry_free(struct dir_entry *e);

/* Sets a value of e, copying at most len bytes of v (LDAP values need not be
 * NUL-terminated), applying the size limits above. Returns nothing: a value that breaks
 * a limit marks or trims the entry as documented there. */
void dir_entry_set_jid(struct dir_entry *e, const char *v, size_t len);
void dir_entry_add_phone(struct dir_entry *e, const char *v, size_t len);
void dir_entry_set_name(struct dir_entry *e, const char *v, size_t len);
void dir_entry_set_tel(struct dir_entry *e, const char *v, size_t len);
void dir_entry_add_group(struct dir_entry *e, const char *v, size_t len);

/* Turns entries[0..n) into users for cfg (its [xmpp] domain makes the phone contacts,
 * its [directory] aor_template the AORs): every entry that passes the checks, in a new
 * xmalloc'd array (*nusers of them; the caller owns it and its strings: config_set_users
 * or config_user_free each) and the ones left out summed up in rep (overwritten).
 * over_limit: entries the source already left out for max_users, added to the report. */
struct cfg_user *dirbuild_users(const struct offhook_config *cfg,
                                const struct dir_entry *const *entries, size_t n,
                                size_t over_limit, size_t *nusers, struct dir_report *rep);

/* The AOR of one phone value: a SIP URI as it is, else the value (spaces, dashes, dots,
 * brackets and slashes removed) put into template. Returns 0, or -1 with why. */
int dirbuild_phone(const char *value, const char *template, char *out, size_t outlen,
                   char *why, size_t whylen) __attribute__((warn_unused_result));

/* One line summing rep up as key=value pairs ("total=3 bad_jid=1 dup_phone=2
 * examples=\"...\""), for the log. */
void dir_report_format(const struct dir_report *rep, char *out, size_t len);
/* Whether two reports say the same (so that an unchanged one is not logged again). */
bool dir_report_same(const struct dir_report *a, const struct dir_report *b);

/* ---- the last-known copy in Redis: one hash field per user --------------------------
 * A version line, then one "KEY VALUE" line per item: jid, aor (repeated), name, tel,
 * group (repeated). Unknown keys are skipped, so a newer writer may add some. */

/* Encodes u into a new string (caller frees). */
char *dirbuild_encode(const struct cfg_user *u);
/* Decodes len bytes of s into e (zeroed by the caller; dir_entry_free it either way),
 * whose id becomes id. Returns 0, or -1 if s is not an encoded user. */
int dirbuild_decode(const char *s, size_t len, const char *id, struct dir_entry *e)
    __attribute__((warn_unused_result));

#endif
