/* Pure helpers of common/: state model, backoff, Redis record codec, JIDs, hash map,
 * metrics rendering, UTF-8 checks and cuts, log value quoting. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "callstate.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "sbuf.h"
#include "storecodec.h"
#include "strmap.h"
#include "strutil.h"

static void test_derive(void **state)
{
    /* A call shows whatever else is known. */
    assert_int_equal(user_state_derive(true, ACT_ON_CALL, REACH_OFFLINE, true), US_ON_CALL);
    assert_int_equal(user_state_derive(false, ACT_RINGING, REACH_UNKNOWN, false), US_RINGING);
    /* No call: offline beats DND beats idle; nothing heard yet is unknown. */
    assert_int_equal(user_state_derive(true, ACT_IDLE, REACH_OFFLINE, true), US_OFFLINE);
    assert_int_equal(user_state_derive(true, ACT_IDLE, REACH_ONLINE, true), US_DND);
    assert_int_equal(user_state_derive(true, ACT_IDLE, REACH_UNKNOWN, false), US_IDLE);
    assert_int_equal(user_state_derive(false, ACT_IDLE, REACH_UNKNOWN, false), US_UNKNOWN);
    /* Significance order used by merge. */
    assert_true(ACT_ON_CALL > ACT_ON_HOLD && ACT_ON_HOLD > ACT_RINGING &&
                ACT_RINGING > ACT_DIALING && ACT_DIALING > ACT_IDLE);
}

static void test_state_names_roundtrip(void **state)
{
    for (int s = 0; s < US__COUNT; s++) {
        enum user_state back;
        assert_int_equal(user_state_from_name(user_state_name((enum user_state)s), &back), 0);
        assert_int_equal(back, s);
    }
    {
        enum user_state back;
        assert_int_equal(user_state_from_name("exploded", &back), -1);
    }
}

static void test_backoff_bounds(void **state)
{
    struct backoff b;
    uint32_t prev_bound = 100;

    backoff_init(&b, 100, 5000, 42);
    for (int i = 0; i < 20; i++) {
        uint32_t bound = 100u << (i < 6 ? i : 6);
        uint32_t d = backoff_next(&b);
        if (bound > 5000)
            bound = 5000;
        assert_true(d >= bound / 2);
        assert_true(d <= bound);
        prev_bound = bound;
    }
    assert_int_equal(prev_bound, 5000);
    backoff_reset(&b);
    assert_true(backoff_next(&b) <= 100);
}

static void test_backoff_jitter_spreads(void **state)
{
    struct backoff a, b;
    int same = 0;

    backoff_init(&a, 1000, 60000, 1);
    backoff_init(&b, 1000, 60000, 2);
    for (int i = 0; i < 10; i++)
        same += backoff_next(&a) == backoff_next(&b);
    assert_true(same < 3);
}

static void test_storecodec_roundtrip(void **state)
{
    struct user_record in = {.state = US_ON_HOLD,
                             .dir = DIR_OUTGOING,
                             .reach = REACH_ONLINE,
                             .dnd = true,
                             .since_ms = 1700000000123,
                             .event_us = 1700000000123456};
    struct user_record out;
    struct store_fields f;
    const char *names[STORE_FIELDS_MAX], *values[STORE_FIELDS_MAX];
    char err[128];

    strcpy(in.remote, "Bob <sip:1002@pbx>");
    storecodec_encode(&in, &f);
    assert_int_equal(f.n, 7);
    for (int i = 0; i < f.n; i++) {
        names[i] = f.name[i];
        values[i] = f.value[i];
    }
    assert_int_equal(storecodec_decode(names, values, (size_t)f.n, &out, err, sizeof err), 0);
    assert_int_equal(out.state, US_ON_HOLD);
    assert_int_equal(out.dir, DIR_OUTGOING);
    assert_int_equal(out.reach, REACH_ONLINE);
    assert_true(out.dnd);
    assert_true(out.since_ms == in.since_ms);
    assert_true(out.event_us == in.event_us);
    assert_string_equal(out.remote, in.remote);
    assert_false(out.video);

    /* No remote party: the field is not written at all; video only when true. */
    in.remote[0] = '\0';
    storecodec_encode(&in, &f);
    for (int i = 0; i < f.n; i++) {
        assert_string_not_equal(f.name[i], "remote");
        assert_string_not_equal(f.name[i], "video");
    }
    in.video = true;
    storecodec_encode(&in, &f);
    for (int i = 0; i < f.n; i++) {
        names[i] = f.name[i];
        values[i] = f.value[i];
    }
    assert_int_equal(storecodec_decode(names, values, (size_t)f.n, &out, err, sizeof err), 0);
    assert_true(out.video);
}

static void test_storecodec_rejects(void **state)
{
    const char *n1[] = {"dir"}, *v1[] = {"incoming"};
    const char *n2[] = {"state"}, *v2[] = {"exploded"};
    const char *n3[] = {"state", "ts", "future"}, *v3[] = {"idle", "12x", "1"};
    const char *n4[] = {"state", "future"}, *v4[] = {"idle", "whatever"};
    struct user_record r;
    char err[128];

    assert_int_equal(storecodec_decode(n1, v1, 1, &r, err, sizeof err), -1);
    assert_string_equal(err, "record has no state field");
    assert_int_equal(storecodec_decode(n2, v2, 1, &r, err, sizeof err), -1);
    assert_int_equal(storecodec_decode(n3, v3, 3, &r, err, sizeof err), -1);
    assert_string_equal(err, "invalid value for field ts");
    assert_int_equal(storecodec_decode(n4, v4, 2, &r, err, sizeof err), 0); /* forward compat */
}

/* The stream's three kinds of entry, as store.c's script and offhookctl write them. */
static void test_storecodec_stream_entries(void **state)
{
    const char *n1[] = {"user", "state", "dir", "ts"}, *v1[] = {"a@x", "on_call", "incoming", "5"};
    const char *n2[] = {"user", "state"}, *v2[] = {"a@x", "removed"};
    const char *argv[STORECODEC_COMMAND_ARGC];
    const char *n4[] = {"state"}, *v4[] = {"idle"};
    struct stream_entry e;
    char err[128];
    int argc;

    assert_int_equal(storecodec_decode_entry(n1, v1, 4, &e, err, sizeof err), 0);
    assert_int_equal(e.kind, STREAM_STATE);
    assert_string_equal(e.user, "a@x");
    assert_int_equal(e.rec.state, US_ON_CALL);
    assert_int_equal(e.rec.event_us, 5);
    assert_int_equal(storecodec_decode_entry(n2, v2, 2, &e, err, sizeof err), 0);
    assert_int_equal(e.kind, STREAM_REMOVED);
    /* offhookctl's command, decoded as the component reads it. */
    argc = storecodec_command_argv("p:events", "resync", "*", argv);
    assert_int_equal(argc, 10);
    assert_string_equal(argv[0], "XADD");
    assert_string_equal(argv[1], "p:events");
    assert_string_equal(argv[4], STORECODEC_STREAM_MAXLEN_STR);
    assert_int_equal(storecodec_decode_entry(argv + 6, argv + 7, 0, &e, err, sizeof err), -1);
    {
        const char *names[] = {argv[6], argv[8]}, *values[] = {argv[7], argv[9]};
        assert_int_equal(storecodec_decode_entry(names, values, 2, &e, err, sizeof err), 0);
        assert_int_equal(e.kind, STREAM_COMMAND);
        assert_string_equal(e.cmd, "resync");
        assert_string_equal(e.user, "*");
    }
    /* No user: refused with a reason. */
    assert_int_equal(storecodec_decode_entry(n4, v4, 1, &e, err, sizeof err), -1);
    assert_non_null(strstr(err, "user"));
}

/* The leases' records, as lease.lua writes them (storecodec.h, "Leases"). */
static void test_member_records(void **state)
{
    struct member_rec m;
    char name[STORECODEC_MEMBER_NAME_MAX + 1];
    uint64_t epoch;

    assert_int_equal(storecodec_member_parse("12 1700000005000 active 1 40 1700000000000", &m), 0);
    assert_true(m.epoch == 12 && m.expires_ms == 1700000005000LL && !m.leaving && m.ready);
    assert_int_equal(m.count, 40);
    assert_true(m.since_ms == 1700000000000LL);
    assert_int_equal(storecodec_member_parse("3 5 leaving 0 0 1", &m), 0);
    assert_true(m.leaving && !m.ready);
    /* Anything else is no member: a member nobody can parse is not counted. */
    const char *bad[] = {"", "12", "12 5 active 1 40", "12 5 gone 1 40 1", "0 5 active 1 0 1",
                         "12 5 active 2 40 1", "12 5 active 1 -1 1", "x 5 active 1 4 1",
                         "12 5 active 1 40 1 ", "12  5 active 1 40 1", NULL};
    for (int i = 0; bad[i]; i++)
        assert_int_equal(storecodec_member_parse(bad[i], &m), -1);
    assert_int_equal(storecodec_owner_parse("7 sb1", &epoch, name, sizeof name), 0);
    assert_true(epoch == 7);
    assert_string_equal(name, "sb1");
    assert_int_equal(storecodec_owner_parse("7 host:123", &epoch, NULL, 0), 0);
    assert_int_equal(storecodec_owner_parse("7", &epoch, name, sizeof name), -1);
    assert_int_equal(storecodec_owner_parse("0 sb1", &epoch, name, sizeof name), -1);
    assert_int_equal(storecodec_owner_parse("7 two words", &epoch, name, sizeof name), -1);
    assert_true(storecodec_member_name_ok("sb-1.host:42"));
    assert_false(storecodec_member_name_ok(""));
    assert_false(storecodec_member_name_ok("@holder"));
    assert_false(storecodec_member_name_ok("a b"));
    assert_false(storecodec_member_name_ok("caf\xc3\xa9"));
    assert_false(storecodec_member_name_ok(
        "0123456789012345678901234567890123456789012345678901234567890123456789"));
    /* The Lua text keeps the stream's length as the C side says. */
    assert_non_null(strstr(storecodec_write_script, "'" STORECODEC_STREAM_MAXLEN_STR "'"));
    assert_non_null(strstr(storecodec_write_script, STORECODEC_FENCED_LEASE));
    assert_non_null(strstr(storecodec_write_script, STORECODEC_FENCED_OWNER));
    assert_non_null(strstr(storecodec_lease_script, STORECODEC_HOLDER_FIELD));
}

static const char *owner_of(const char *const *members, int n, const char *key)
{
    const char *best = NULL;
    uint64_t best_w = 0;

    for (int i = 0; i < n; i++) {
        uint64_t w = storecodec_rendezvous(members[i], key);
        if (!best || w > best_w) {
            best = members[i];
            best_w = w;
        }
    }
    return best;
}

/* Rendezvous hashing spreads users evenly, and a member that joins takes users only for
 * itself: nobody else's users move. */
static void test_rendezvous(void **state)
{
    const char *members[] = {"sb1", "sb2", "sb3", "sb4"};
    int share[4] = {0}, moved = 0, to_new = 0;
    char key[64];

    for (int i = 0; i < 3000; i++) {
        const char *a, *b;
        snprintf(key, sizeof key, "user%d@example.com", i);
        a = owner_of(members, 3, key);
        b = owner_of(members, 4, key);
        share[a[2] - '1']++;
        if (strcmp(a, b) != 0) {
            moved++;
            to_new += strcmp(b, "sb4") == 0;
        }
    }
    for (int i = 0; i < 3; i++)
        assert_true(share[i] > 850 && share[i] < 1150);
    assert_int_equal(moved, to_new);
    assert_true(moved > 600 && moved < 900); /* about a quarter */
    assert_true(storecodec_rendezvous("sb1", "a") != storecodec_rendezvous("sb2", "a"));
    assert_true(storecodec_rendezvous("sb1", "a") == storecodec_rendezvous("sb1", "a"));
}

/* A metric nobody registered is a no-op, not a crash: callers need no guard. */
static void test_metrics_null(void **state)
{
    metric_inc(NULL, NULL);
    metric_add(NULL, "x", 2);
    metric_set(NULL, NULL, 3);
    metric_observe(NULL, 0.5);
    assert_true(metric_get(NULL, NULL) == 0);
}

static void test_keys(void **state)
{
    char buf[64];

    assert_int_equal(storecodec_key_user("offhook:", "alice@localhost", buf, sizeof buf), 0);
    assert_string_equal(buf, "offhook:user:alice@localhost");
    assert_int_equal(storecodec_key_events("x:", buf, sizeof buf), 0);
    assert_string_equal(buf, "x:events");
    assert_int_equal(storecodec_key_watchers("offhook:", "alice@phone.localhost", buf, 10), -1);
}

static void test_jid(void **state)
{
    struct jid j;
    char bare[JID_MAX + 1];

    assert_int_equal(jid_parse("Alice@LocalHost/Phone", &j), 0);
    assert_string_equal(j.local, "alice");
    assert_string_equal(j.domain, "localhost");
    assert_string_equal(j.resource, "Phone"); /* resources keep their case */
    assert_int_equal(jid_to_bare("Bob@Example.COM/x", bare, sizeof bare), 0);
    assert_string_equal(bare, "bob@example.com");
    assert_int_equal(jid_parse("phone.localhost", &j), 0);
    assert_string_equal(j.local, "");
    assert_int_equal(jid_parse("j\xc3\xa9r\xc3\xb4me@localhost/t\xc3\xa9l", &j), 0);

    static const char *const bad[] = {"", "@x", "a@", "a@/r", "a b@x", "a@x/", "a<b@x",
                                      "a@b c", "a@.x", "a\"@x", "x@y@z", "a@x\n",
                                      /* RFC 7622: UTF-8, all of it (a JID read back from
                                       * Redis becomes a stanza's to) */
                                      "b\xc3@localhost", "bob@local\xffhost",
                                      "bob@localhost/r\xed\xa0\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (jid_parse(bad[i], &j) == 0)
            fail_msg("accepted bad JID '%s'", bad[i]);
    }
    {
        char long_local[1100];
        memset(long_local, 'a', 1024);
        strcpy(long_local + 1024, "@x");
        assert_int_equal(jid_parse(long_local, &j), -1);
    }
}

static void test_strmap(void **state)
{
    struct strmap m;
    char keys[5000][16];
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;

    strmap_init(&m);
    for (int i = 0; i < 5000; i++) {
        snprintf(keys[i], sizeof keys[i], "user%d", i);
        assert_null(strmap_put(&m, keys[i], (void *)(intptr_t)(i + 1)));
    }
    for (int i = 0; i < 5000; i += 2)
        assert_int_equal((intptr_t)strmap_del(&m, keys[i]), i + 1);
    for (int i = 0; i < 5000; i++)
        assert_int_equal((intptr_t)strmap_get(&m, keys[i]), i % 2 ? i + 1 : 0);
    while (strmap_next(&m, &pos, &k, &v))
        n++;
    assert_int_equal(n, 2500);
    assert_int_equal(m.count, 2500);
    /* Re-adding after deletes reuses tombstones. */
    for (int i = 0; i < 5000; i += 2)
        strmap_put(&m, keys[i], (void *)1);
    assert_int_equal(m.count, 5000);
    strmap_free(&m);
}

/* Large maps grow by half, so their capacity is no power of two: the load stays between
 * 1/2 and 3/4 at every size, every key is found across the wrap-around at the end of the
 * slots, and deleting and re-adding (tombstones, a rehash in place) keeps that true. */
static void test_strmap_growth(void **state)
{
    enum { N = 20000 };
    static char keys[N][24];
    struct strmap m;

    strmap_init(&m);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "u%d@localhost", i);
        assert_null(strmap_put(&m, keys[i], keys[i]));
        assert_true(m.used * 4 <= m.cap * 3);
        if (m.cap > 16)
            assert_true(m.count * 2 + 2 >= m.cap);
    }
    assert_true(m.cap >= N * 4 / 3 && m.cap <= N * 2 + 2);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(strmap_get(&m, keys[i]), keys[i]);
    assert_null(strmap_get(&m, "u20000@localhost"));
    /* Churn: delete a third, re-add it, many times; the tombstones must not fill the map
     * (a lookup of a missing key would not end) nor lose a key. */
    for (int round = 0; round < 5; round++) {
        for (int i = round; i < N; i += 3)
            assert_ptr_equal(strmap_del(&m, keys[i]), keys[i]);
        for (int i = 0; i < N; i++)
            assert_ptr_equal(strmap_get(&m, keys[i]), (i - round) % 3 == 0 && i >= round
                                                          ? NULL : keys[i]);
        for (int i = round; i < N; i += 3)
            assert_null(strmap_put(&m, keys[i], keys[i]));
        assert_int_equal(m.count, N);
        assert_true(m.used * 4 <= m.cap * 3);
    }
    for (int i = N - 1; i >= 0; i--)
        assert_ptr_equal(strmap_del(&m, keys[i]), keys[i]);
    assert_null(m.slots);
    strmap_free(&m);
}

/* The per-user maps hold one entry or two: they take two slots, not sixteen, and an
 * emptied map holds no memory, even when emptied while being walked. */
static void test_strmap_small(void **state)
{
    struct strmap m;
    char keys[3][16] = {"w0@localhost", "w1@localhost", "w2@localhost"};
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;

    strmap_init(&m);
    strmap_put(&m, keys[0], keys[0]);
    assert_int_equal(m.cap, 2);
    strmap_put(&m, keys[1], keys[1]);
    strmap_put(&m, keys[2], keys[2]);
    assert_int_equal(m.cap, 4);
    for (int i = 0; i < 3; i++)
        assert_ptr_equal(strmap_get(&m, keys[i]), keys[i]);
    while (strmap_next(&m, &pos, &k, &v)) {
        assert_ptr_equal(strmap_del(&m, k), v);
        n++;
    }
    assert_int_equal(n, 3);
    assert_null(m.slots);
    assert_int_equal(m.cap, 0);
    assert_null(strmap_get(&m, keys[0]));
    assert_null(strmap_del(&m, keys[0]));
    strmap_put(&m, keys[2], keys[2]);
    assert_ptr_equal(strmap_get(&m, keys[2]), keys[2]);
    strmap_free(&m);
}

/* A set of owned strings: cleared (every value freed, LeakSanitizer/valgrind check that)
 * and usable again afterwards. */
static void test_strmap_clear_owned(void **state)
{
    struct strmap m;
    char name[16];

    strmap_init(&m);
    for (int i = 0; i < 100; i++) {
        char *d;
        snprintf(name, sizeof name, "w%d@localhost", i);
        d = strdup(name);
        strmap_put(&m, d, d);
    }
    assert_int_equal(m.count, 100);
    strmap_clear_owned(&m);
    assert_int_equal(m.count, 0);
    assert_null(strmap_get(&m, "w1@localhost"));
    {
        char *d = strdup("again@localhost");
        strmap_put(&m, d, d);
    }
    assert_string_equal(strmap_get(&m, "again@localhost"), "again@localhost");
    strmap_clear_owned(&m);
    strmap_free(&m);
}

static void test_metrics_render(void **state)
{
    static const char *const states[] = {"idle", "on_call", NULL};
    struct metric *c = metric_new(METRIC_COUNTER, "offhook_test_total", "A \\ test\nhelp.",
                                  "reason", NULL);
    struct metric *g = metric_new(METRIC_GAUGE, "offhook_users", "Users.", "state", states);
    struct metric *h = metric_histogram("offhook_latency_seconds", "Latency.",
                                        (const double[]){0.001, 0.01}, 2);
    struct sbuf b;

    metric_inc(c, "bad \"xml\"");
    metric_inc(c, "bad \"xml\"");
    metric_set(g, "on_call", 3);
    metric_observe(h, 0.0005);
    metric_observe(h, 0.005);
    metric_observe(h, 5);
    sbuf_init(&b);
    metrics_render(&b);
    assert_non_null(strstr(b.data, "# HELP offhook_test_total A \\\\ test\\nhelp.\n"));
    assert_non_null(strstr(b.data, "# TYPE offhook_test_total counter\n"));
    assert_non_null(strstr(b.data, "offhook_test_total{reason=\"bad \\\"xml\\\"\"} 2\n"));
    /* Declared labels are exported before first use. */
    assert_non_null(strstr(b.data, "offhook_users{state=\"idle\"} 0\n"));
    assert_non_null(strstr(b.data, "offhook_users{state=\"on_call\"} 3\n"));
    assert_non_null(strstr(b.data, "offhook_latency_seconds_bucket{le=\"0.001\"} 1\n"));
    assert_non_null(strstr(b.data, "offhook_latency_seconds_bucket{le=\"0.01\"} 2\n"));
    assert_non_null(strstr(b.data, "offhook_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(b.data, "offhook_latency_seconds_count 3\n"));
    sbuf_free(&b);
    metrics_reset();
}

/* Bucket bounds and values in their shortest exact form: the le values a scraper sees
 * are the ones written in the code (0.00025, not 0.00025000000000000001). */
static void test_metrics_numbers_shortest(void **state)
{
    static const char *const want[] = {"0.0001", "0.00025", "0.0005", "0.00075", "0.001",
                                       "0.0015", "0.002",  "0.0025",  "0.003",  "0.005",
                                       "0.0075", "0.01",   "0.025",   "0.05",   "0.1",
                                       "0.25",   "0.5",    "1",       "2.5",    "5",
                                       "10"};
    struct metric *h = metric_histogram("lat_seconds", "l", metrics_latency_buckets,
                                        metrics_latency_nbuckets);
    struct metric *g = metric_new(METRIC_GAUGE, "g", "g", "k", NULL);
    char line[128];
    struct sbuf b;

    assert_int_equal(metrics_latency_nbuckets, sizeof want / sizeof want[0]);
    metric_observe(h, 0.1);
    metric_observe(h, 0.2);
    metric_set(g, "third", 1.0 / 3);
    metric_set(g, "big", 1e20);
    metric_set(g, "neg", -2.5);
    sbuf_init(&b);
    metrics_render(&b);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(line, sizeof line, "lat_seconds_bucket{le=\"%s\"} ", want[i]);
        if (!strstr(b.data, line))
            fail_msg("no '%s' in:\n%s", line, b.data);
    }
    /* Exact still wins over short: 0.1 + 0.2 is not 0.3. */
    assert_non_null(strstr(b.data, "lat_seconds_sum 0.30000000000000004\n"));
    assert_non_null(strstr(b.data, "g{k=\"third\"} 0.3333333333333333\n"));
    assert_non_null(strstr(b.data, "g{k=\"big\"} 1e+20\n"));
    assert_non_null(strstr(b.data, "g{k=\"neg\"} -2.5\n"));
    sbuf_free(&b);
    metrics_reset();
}

static void test_metrics_info(void **state)
{
    struct sbuf b;

    metric_info("offhook_build_info", "Build.",
                (const char *const[]){"version", "1.2.3", "commit", "", "odd", "a\"b", NULL});
    sbuf_init(&b);
    metrics_render(&b);
    /* An empty value is left out; values are escaped like any label value. */
    assert_non_null(strstr(b.data, "# TYPE offhook_build_info gauge\n"
                                   "offhook_build_info{version=\"1.2.3\",odd=\"a\\\"b\"} 1\n"));
    sbuf_free(&b);
    metrics_reset();
}

static void test_metrics_label_cap(void **state)
{
    struct metric *c = metric_new(METRIC_COUNTER, "x_total", "x", "l", NULL);
    char label[16];

    for (int i = 0; i < 200; i++) {
        snprintf(label, sizeof label, "v%d", i);
        metric_inc(c, label);
    }
    /* A peer choosing label values cannot grow memory: the rest lands in "other". */
    assert_true(metric_get(c, "other") >= 150);
    metrics_reset();
}

static void test_strutil(void **state)
{
    long v;
    uint32_t u;
    bool b;
    char buf[8];
    char list[] = " a, ,b ,c ";
    char *items[4];

    assert_int_equal(str_parse_long("42", 0, 100, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(str_parse_long("101", 0, 100, &v), -1);
    assert_int_equal(str_parse_long("4x", 0, 100, &v), -1);
    assert_int_equal(str_parse_long(" 4", 0, 100, &v), -1);
    assert_int_equal(str_parse_u32("4294967295", &u), 0);
    assert_int_equal(str_parse_u32("4294967296", &u), -1);
    assert_int_equal(str_parse_u32("-1", &u), -1);
    assert_int_equal(str_parse_bool("Yes", &b), 0);
    assert_true(b);
    assert_int_equal(str_parse_bool("maybe", &b), -1);
    assert_int_equal(str_copy(buf, sizeof buf, "12345678"), -1);
    assert_string_equal(buf, "1234567");
    assert_int_equal(str_split_list(list, items, 4), 3);
    assert_string_equal(items[2], "c");
}

/* RFC 3629's own examples and the edges of every range: what is well-formed UTF-8. */
static void test_utf8_valid(void **state)
{
    static const struct {
        const char *bytes;
        size_t len;
        bool valid;
    } cases[] = {
        {"", 0, true},
        {"plain ascii", 11, true},
        {"\x41\xe2\x89\xa2\xce\x91\x2e", 7, true},     /* RFC 3629 7: A<NOT IDENTICAL>.. */
        {"\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4", 9, true}, /* Korean */
        {"\xef\xbb\xbf\xe6\x97\xa5", 6, true},          /* BOM, then a CJK char */
        {"\xf0\xa3\x8e\xb4", 4, true},                    /* U+233B4 */
        {"\xc3\xa9", 2, true},                              /* é */
        {"\xc3", 1, false},                                  /* é cut after its lead */
        {"\xe2\x89", 2, false},                             /* a 3-byte char cut */
        {"\xa9", 1, false},                                  /* a stray continuation */
        {"\xc0\xaf", 2, false},                             /* overlong '/' */
        {"\xe0\x80\xaf", 3, false},                        /* overlong, 3 bytes */
        {"\xf0\x80\x80\xaf", 4, false},                   /* overlong, 4 bytes */
        {"\xed\xa0\x80", 3, false},                        /* U+D800, a surrogate */
        {"\xed\x9f\xbf", 3, true},                         /* U+D7FF */
        {"\xf4\x8f\xbf\xbf", 4, true},                    /* U+10FFFF */
        {"\xf4\x90\x80\x80", 4, false},                   /* U+110000 */
        {"\xf5\x80\x80\x80", 4, false},
        {"\xff", 1, false},
        {"a\0b", 3, false},                                   /* NUL */
        {"\xc3\xa9\xc3", 3, false},                        /* valid, then cut */
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (str_utf8_valid(cases[i].bytes, cases[i].len) != cases[i].valid)
            fail_msg("case %zu: expected %s", i, cases[i].valid ? "valid" : "invalid");
    }
}

/* 150 x "é" (the issue's caller name) cut anywhere stays valid; the cut never splits. */
static void test_utf8_cut(void **state)
{
    char name[301], buf[128], small[4];
    const char *mixed = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x93\x9e"; /* a é € 📞: 1+2+3+4 */

    for (int i = 0; i < 150; i++)
        memcpy(name + 2 * i, "\xc3\xa9", 2);
    name[300] = '\0';
    assert_int_equal(str_copy_utf8(buf, sizeof buf, name), -1);
    assert_int_equal(strlen(buf), 126); /* 63 characters: byte 127 would split the 64th */
    assert_true(str_utf8_valid(buf, strlen(buf)));
    /* Plain str_copy would have cut at 127 bytes, mid-character (the bug). */
    assert_int_equal(str_copy(buf, sizeof buf, name), -1);
    assert_false(str_utf8_valid(buf, strlen(buf)));

    for (size_t max = 0; max <= 10; max++) {
        static const size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10};
        size_t n = str_utf8_cut(mixed, 10, max);
        if (n != want[max])
            fail_msg("cut at %zu: %zu bytes, expected %zu", max, n, want[max]);
        assert_true(str_utf8_valid(mixed, n));
    }
    assert_int_equal(str_copy_utf8(small, sizeof small, "ab"), 0);
    assert_string_equal(small, "ab");
    assert_int_equal(str_copy_utf8(small, sizeof small, mixed), -1);
    assert_string_equal(small, "a\xc3\xa9");
    assert_int_equal(str_copy_utf8(small, 0, "x"), -1);
    /* A stray byte is a character of its own: the cut does not swallow what follows. */
    assert_int_equal(str_utf8_cut("\xa9\xa9\xa9", 3, 2), 2);
}

static void test_utf8_scrub(void **state)
{
    char s[] = "ok\xc3 \xed\xa0\x80 \xc3\xa9 \xff";

    assert_int_equal(str_utf8_scrub(s), 5);
    assert_string_equal(s, "ok? ??? \xc3\xa9 ?");
    assert_true(str_utf8_valid(s, strlen(s)));
    assert_int_equal(str_utf8_scrub(s), 0);
}

/* log_q: a value from a peer can never end its field early or forge another one. */
static void test_log_q(void **state)
{
    char longv[LOG_Q_MAX + 50];
    const char *q;

    assert_string_equal(log_q("deactivated"), "deactivated");
    assert_string_equal(log_q("sip:1001@pbx.example.com;transport=tcp"),
                        "\"sip:1001@pbx.example.com;transport=tcp\"");
    assert_string_equal(log_q("Caf\xc3\xa9"), "Caf\xc3\xa9"); /* letters stay letters */
    assert_string_equal(log_q(NULL), "\"\"");
    assert_string_equal(log_q(""), "\"\"");
    assert_string_equal(log_q("a b"), "\"a b\"");
    /* The issue's resource: forged fields stay inside one quoted value. */
    assert_string_equal(log_q("x level=error event=fake_secret_dump"),
                        "\"x level=error event=fake_secret_dump\"");
    assert_string_equal(log_q("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
    assert_string_equal(log_q("two\nlines\r\t"), "\"two\\nlines\\r\\t\"");
    assert_string_equal(log_q("bell\a del\x7f"), "\"bell\\x07 del\\x7f\"");
    assert_string_equal(log_q("cut\xc3 \xff"), "\"cut\\xc3 \\xff\"");
    assert_string_equal(log_qn("a\0b", 3), "\"a\\x00b\"");
    assert_string_equal(log_qn("abcdef", 3), "abc");
    /* Long values are cut (on a character boundary) and say so. */
    memset(longv, 'x', sizeof longv - 1);
    longv[sizeof longv - 1] = '\0';
    q = log_q(longv);
    assert_int_equal(strlen(q), LOG_Q_MAX + 5);
    assert_memory_equal(q + LOG_Q_MAX + 1, "...\"", 4);
    /* Each of LOG_Q_SLOTS results of one line stays as it was. */
    {
        const char *r[LOG_Q_SLOTS];
        char v[LOG_Q_SLOTS][8];
        for (int i = 0; i < LOG_Q_SLOTS; i++) {
            snprintf(v[i], sizeof v[i], "v%d", i);
            r[i] = log_q(v[i]);
        }
        for (int i = 0; i < LOG_Q_SLOTS; i++)
            assert_string_equal(r[i], v[i]);
    }
    /* Into the caller's buffer, with its own bound (a protocol trace at debug). */
    {
        char trace[] = "SENT: <presence to=\"bob@localhost\"><status>a\\b</status>";
        char out[LOG_Q_SIZE(sizeof trace)], small[LOG_Q_SIZE(9)];
        assert_ptr_equal(log_q_buf(out, trace, sizeof trace), out);
        assert_string_equal(out, "\"SENT: <presence to=\\\"bob@localhost\\\">"
                                 "<status>a\\\\b</status>\"");
        assert_string_equal(log_q_buf(small, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", 9),
                            "\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9...\"");
        assert_string_equal(log_q_buf(small, "ok", 9), "ok");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_derive),
        cmocka_unit_test(test_state_names_roundtrip),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_jitter_spreads),
        cmocka_unit_test(test_storecodec_roundtrip),
        cmocka_unit_test(test_storecodec_rejects),
        cmocka_unit_test(test_storecodec_stream_entries),
        cmocka_unit_test(test_member_records),
        cmocka_unit_test(test_rendezvous),
        cmocka_unit_test(test_metrics_null),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_jid),
        cmocka_unit_test(test_strmap),
        cmocka_unit_test(test_strmap_small),
        cmocka_unit_test(test_strmap_growth),
        cmocka_unit_test(test_strmap_clear_owned),
        cmocka_unit_test(test_metrics_render),
        cmocka_unit_test(test_metrics_label_cap),
        cmocka_unit_test(test_metrics_numbers_shortest),
        cmocka_unit_test(test_metrics_info),
        cmocka_unit_test(test_strutil),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_cut),
        cmocka_unit_test(test_utf8_scrub),
        cmocka_unit_test(test_log_q),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
