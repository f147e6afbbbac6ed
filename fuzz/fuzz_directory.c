/* libFuzzer target: what offhook reads from a directory or from its last known copy in
 * Redis. Each NUL-separated record is decoded as a copy's hash value (dirbuild_decode)
 * and, line by line, fed as raw attribute values to an entry (dir_entry_set_jid,
 * _add_phone, ... chosen by each line's first byte); then every entry goes through
 * dirbuild_users, whose users are checked, encoded, decoded and built again (the same
 * user must come back), and its report is formatted.
 *
 * Input format: records separated by NUL bytes; every record gets its own
 * exactly-sized heap block. */
#include <stdint.h>

#include "config.h"
#include "dirbuild.h"
#include "strutil.h"

#include "fuzz_util.h"

#define MAX_RECORDS 64

static struct offhook_config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char text[] = "[xmpp]\ndomain = phone.localhost\nsecret = s\n"
                               "[directory]\nsource = ldap\nbase = ou=people,dc=x\n"
                               "aor_template = sip:%s@pbx.example.com\n";
    struct cfg_errors errs = {0};

    if (config_load_buffer("fuzz.conf", text, sizeof text - 1, &cfg, &errs) != 0)
        abort();
    cfg_errors_free(&errs);
    return 0;
}

/* Line by line: 'j' JID, 'p' phone, 'n' name, 't' tel, 'g' group; the rest of the line
 * is the value (which may hold any byte but a newline). */
static void raw_entry(const char *rec, size_t len, struct dir_entry *e)
{
    size_t pos = 0;

    e->id = xstrdup("fuzz");
    while (pos < len) {
        const char *nl = memchr(rec + pos, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - (rec + pos)) : len - pos;
        char *v = fuzz_dup_exact(rec + pos + 1, ll ? ll - 1 : 0);

        if (ll > 0) {
            switch (rec[pos]) {
            case 'j': dir_entry_set_jid(e, v, ll - 1); break;
            case 'p': dir_entry_add_phone(e, v, ll - 1); break;
            case 'n': dir_entry_set_name(e, v, ll - 1); break;
            case 't': dir_entry_set_tel(e, v, ll - 1); break;
            case 'g': dir_entry_add_group(e, v, ll - 1); break;
            default: break;
            }
        }
        free(v);
        pos += ll + 1;
    }
}

static void check_user(const struct cfg_user *u)
{
    char err[256], *enc;
    struct dir_entry e = {0};
    const struct dir_entry *one = &e;
    struct dir_report rep;
    struct cfg_user *back;
    size_t n;

    FUZZ_CHECK(u->jid && u->contact && u->naors >= 1 && u->naors <= CFG_MAX_AORS);
    FUZZ_CHECK(u->ngroups >= 0 && u->ngroups <= CFG_MAX_GROUPS);
    for (int i = 0; i < u->naors; i++)
        FUZZ_CHECK(config_check_sip_uri(u->aors[i], true, err, sizeof err) == 0);
    FUZZ_CHECK(!u->name || (strlen(u->name) <= DIR_MAX_NAME && !strchr(u->name, '\n')));
    /* The copy in Redis gives the same user back. */
    enc = dirbuild_encode(u);
    FUZZ_CHECK(dirbuild_decode(enc, strlen(enc), "copy", &e) == 0);
    back = dirbuild_users(&cfg, &one, 1, 0, &n, &rep);
    FUZZ_CHECK(n == 1);
    FUZZ_CHECK(strcmp(back[0].jid, u->jid) == 0 && strcmp(back[0].contact, u->contact) == 0);
    FUZZ_CHECK(back[0].naors == u->naors && back[0].ngroups == u->ngroups);
    for (int i = 0; i < u->naors; i++)
        FUZZ_CHECK(strcmp(back[0].aors[i], u->aors[i]) == 0);
    for (int i = 0; i < u->ngroups; i++)
        FUZZ_CHECK(strcmp(back[0].groups[i], u->groups[i]) == 0);
    FUZZ_CHECK((!back[0].name && !u->name) ||
               (back[0].name && u->name && strcmp(back[0].name, u->name) == 0));
    config_user_free(&back[0]);
    free(back);
    dir_entry_free(&e);
    free(enc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dir_entry entries[2 * MAX_RECORDS];
    const struct dir_entry *ptrs[2 * MAX_RECORDS];
    struct dir_report rep;
    struct cfg_user *users;
    size_t n = 0, pos = 0, nusers;
    char line[512];

    memset(entries, 0, sizeof entries);
    while (pos < size && n + 2 <= 2 * MAX_RECORDS) {
        const uint8_t *nul = memchr(data + pos, 0, size - pos);
        size_t len = nul ? (size_t)(nul - (data + pos)) : size - pos;
        char *rec = fuzz_dup_exact(data + pos, len);

        if (dirbuild_decode(rec, len, "copy", &entries[n]) == 0)
            n++;
        else
            dir_entry_free(&entries[n]);
        raw_entry(rec, len, &entries[n++]);
        free(rec);
        pos += len + 1;
    }
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &entries[i];
    users = dirbuild_users(&cfg, ptrs, n, 0, &nusers, &rep);
    FUZZ_CHECK(nusers + rep.total == n);
    for (size_t i = 0; i < nusers; i++) {
        check_user(&users[i]);
        /* No two users share a JID, a contact or a phone. */
        for (size_t k = 0; k < i; k++) {
            FUZZ_CHECK(strcmp(users[i].jid, users[k].jid) != 0);
            FUZZ_CHECK(strcmp(users[i].contact, users[k].contact) != 0);
            for (int a = 0; a < users[i].naors; a++)
                for (int b = 0; b < users[k].naors; b++)
                    FUZZ_CHECK(strcasecmp(users[i].aors[a], users[k].aors[b]) != 0);
        }
    }
    for (int i = 0; i < rep.nexamples; i++)
        FUZZ_CHECK(FUZZ_TERMINATED(rep.examples[i]));
    dir_report_format(&rep, line, sizeof line);
    FUZZ_CHECK(strlen(line) < sizeof line && line[strlen(line) - 1] == '"');
    for (size_t i = 0; i < nusers; i++)
        config_user_free(&users[i]);
    free(users);
    for (size_t i = 0; i < n; i++)
        dir_entry_free(&entries[i]);
    return 0;
}
