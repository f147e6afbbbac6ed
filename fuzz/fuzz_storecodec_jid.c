/* libFuzzer target: the Redis record codec (storecodec_decode and a round trip through
 * storecodec_encode), its key builders, the component's presence mapping of a decoded
 * record, JID parsing (jid_parse, jid_format_bare, jid_to_bare), and the lease records
 * Redis holds for the cluster (storecodec_member_parse, storecodec_owner_parse,
 * storecodec_member_name_ok: one line each).
 *
 * Input format: NUL-separated strings, taken in pairs as the record's field names and
 * values (an odd last string is ignored). For the JID functions, every line of the input
 * (split at '\n' and at NUL) is one JID candidate. Every string gets its own
 * exactly-sized heap block. */
#include <stdint.h>

#include "jid.h"
#include "presence.h"
#include "storecodec.h"

#include "fuzz_util.h"

#define MAX_PAIRS 64

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

static void fuzz_record(char **tok, size_t ntok)
{
    const char *names[MAX_PAIRS], *values[MAX_PAIRS];
    size_t n = ntok / 2;
    struct user_record r, back;
    struct store_fields f;
    struct presence_view pv;
    char err[128], key[48];

    for (size_t i = 0; i < n; i++) {
        names[i] = tok[2 * i];
        values[i] = tok[2 * i + 1];
    }
    if (storecodec_decode(names, values, n, &r, err, sizeof err) < 0) {
        FUZZ_CHECK(FUZZ_TERMINATED(err) && err[0]);
        return;
    }
    FUZZ_CHECK((unsigned)r.state < US__COUNT);
    FUZZ_CHECK((unsigned)r.dir <= DIR_OUTGOING);
    FUZZ_CHECK((unsigned)r.reach <= REACH_OFFLINE);
    FUZZ_CHECK(FUZZ_TERMINATED(r.remote));

    /* What sipbridge writes, the component must read back unchanged. */
    storecodec_encode(&r, &f);
    FUZZ_CHECK(f.n >= 1 && f.n <= STORE_FIELDS_MAX);
    {
        const char *vals[STORE_FIELDS_MAX];
        for (int i = 0; i < f.n; i++)
            vals[i] = f.value[i];
        FUZZ_CHECK(storecodec_decode(f.name, vals, (size_t)f.n, &back, err, sizeof err) == 0);
    }
    FUZZ_CHECK(back.state == r.state && back.dir == r.dir && back.reach == r.reach &&
               back.dnd == r.dnd && back.since_ms == r.since_ms &&
               back.event_us == r.event_us && strcmp(back.remote, r.remote) == 0);

    presence_for_record(&r, &pv);
    FUZZ_CHECK(FUZZ_TERMINATED(pv.status));
    FUZZ_CHECK(pv.available || pv.show == NULL);

    /* Key builders with the record's own strings, into a small buffer. */
    if (n) {
        (void)storecodec_key_user(names[0], values[0], key, sizeof key);
        (void)storecodec_key_watchers(values[0], names[0], key, sizeof key);
        (void)storecodec_key_events(names[0], key, sizeof key);
        (void)storecodec_key_subs(names[0], values[0], key, sizeof key);
        (void)storecodec_key_heartbeat(values[0], names[0], key, sizeof key);
    }
}

/* A member's value, or an owner's, as another process (or an attacker with access to
 * Redis) may have written it: parsed in bounds, or refused. */
static void fuzz_lease(const char *s)
{
    struct member_rec m;
    char name[STORECODEC_MEMBER_NAME_MAX + 1], small[4];
    uint64_t epoch;

    if (storecodec_member_parse(s, &m) == 0)
        FUZZ_CHECK(m.epoch > 0 && m.count >= 0);
    if (storecodec_owner_parse(s, &epoch, name, sizeof name) == 0) {
        FUZZ_CHECK(epoch > 0 && FUZZ_TERMINATED(name) && storecodec_member_name_ok(name));
        FUZZ_CHECK(storecodec_owner_parse(s, &epoch, small, sizeof small) == 0 ||
                   strlen(name) >= sizeof small);
    }
    (void)storecodec_rendezvous(s, s);
}

static void fuzz_jid(const char *s)
{
    struct jid j, j2;
    char bare[JID_MAX + 1], small[16], again[JID_MAX + 1];

    if (jid_parse(s, &j) < 0) {
        FUZZ_CHECK(jid_to_bare(s, bare, sizeof bare) < 0);
        return;
    }
    FUZZ_CHECK(FUZZ_TERMINATED(j.local) && FUZZ_TERMINATED(j.domain) &&
               FUZZ_TERMINATED(j.resource));
    FUZZ_CHECK(j.domain[0] != '\0');
    FUZZ_CHECK(jid_format_bare(&j, bare, sizeof bare) == 0);
    (void)jid_format_bare(&j, small, sizeof small);
    FUZZ_CHECK(jid_to_bare(s, again, sizeof again) == 0 && strcmp(again, bare) == 0);
    /* A bare JID is a valid JID with the same local part and domain, no resource. */
    FUZZ_CHECK(jid_parse(bare, &j2) == 0);
    FUZZ_CHECK(strcmp(j2.local, j.local) == 0 && strcmp(j2.domain, j.domain) == 0 &&
               j2.resource[0] == '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tok[2 * MAX_PAIRS];
    size_t ntok = 0, start = 0;

    /* Record fields: NUL-separated strings. */
    for (size_t i = 0; i <= size && ntok < 2 * MAX_PAIRS; i++) {
        if (i == size || data[i] == '\0') {
            if (i == size && i == start && ntok)
                break; /* a trailing NUL ends the last string; no empty one after it */
            tok[ntok++] = fuzz_strndup_exact(data + start, i - start);
            start = i + 1;
        }
    }
    fuzz_record(tok, ntok);
    for (size_t i = 0; i < ntok; i++)
        free(tok[i]);

    /* JIDs: one per line. */
    start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\0' || data[i] == '\n') {
            char *line = fuzz_strndup_exact(data + start, i - start);
            fuzz_jid(line);
            fuzz_lease(line);
            free(line);
            start = i + 1;
        }
    }
    presence_for_record(NULL, &(struct presence_view){0});
    return 0;
}
