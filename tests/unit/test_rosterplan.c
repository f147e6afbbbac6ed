/* The rosters [component] roster asks for (common/rosterplan.c), driven by
 * tests/data/rosterplan.txt: each user's items (names, groups), the roster_max_items
 * limit, and the work a change of users makes (which pairs and whole rosters). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "rosterplan.h"
#include "sbuf.h"
#include "strutil.h"
#include "testutil.h"

static const char base_cfg[] = "[xmpp]\ndomain = phone.localhost\nsecret = s3cret\n";

static const char *S(const struct sbuf *b)
{
    return b->data ? b->data : "";
}

static struct offhook_config *load(const char *title, const char *text)
{
    struct offhook_config *cfg = xcalloc(1, sizeof *cfg);
    struct cfg_errors errs = {0};
    size_t n = strlen(base_cfg) + strlen(text) + 1;
    char *buf = xmalloc(n);

    snprintf(buf, n, "%s%s", base_cfg, text);
    if (config_load_buffer(title, buf, strlen(buf), cfg, &errs) != 0) {
        cfg_errors_print(&errs, stderr);
        fail_msg("case '%s': configuration refused", title);
    }
    cfg_errors_free(&errs);
    free(buf);
    return cfg;
}

static void unload(struct offhook_config *cfg)
{
    if (cfg) {
        config_free(cfg);
        free(cfg);
    }
}

/* ---- a user's roster as one line ------------------------------------------------------ */

struct line {
    char **items;
    size_t n;
};

static bool collect(void *arg, const struct rosterplan_item *it)
{
    struct line *l = arg;
    char buf[1024];
    size_t n = (size_t)snprintf(buf, sizeof buf, "%s|%s|", it->contact, it->name);

    for (int i = 0; i < it->ngroups; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", i ? "," : "", it->groups[i]);
    l->items = xrealloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n++] = xstrdup(buf);
    return true;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void roster_line(const struct rosterplan *p, const struct cfg_user *u, char *out,
                        size_t len)
{
    struct line l = {0};
    size_t n = 0;

    rosterplan_each(p, u, collect, &l);
    if (l.n) /* qsort of NULL, 0 is undefined (UBSan) */
        qsort(l.items, l.n, sizeof *l.items, cmp_str);
    out[0] = '\0';
    for (size_t i = 0; i < l.n; i++) {
        n += (size_t)snprintf(out + n, len - n, "%s%s", i ? " ; " : "", l.items[i]);
        free(l.items[i]);
    }
    if (!l.n)
        snprintf(out, len, "-");
    free(l.items);
    /* rosterplan_item agrees with the walk, and the count with both. */
    assert_int_equal(rosterplan_count(p, u), l.n);
}

/* ---- the work between two plans, deduplicated and sorted ------------------------------ */

static void add_work(void *arg, const char *user, const char *contact)
{
    struct line *l = arg;
    char buf[1024];

    snprintf(buf, sizeof buf, "%s %s", user, contact ? contact : "*");
    for (size_t i = 0; i < l->n; i++) {
        if (strcmp(l->items[i], buf) == 0)
            return;
    }
    l->items = xrealloc(l->items, (l->n + 1) * sizeof *l->items);
    l->items[l->n++] = xstrdup(buf);
}

/* ---- the data file -------------------------------------------------------------------- */

struct tcase {
    char title[256];
    struct sbuf cfg, rosters, counts, after, work;
    bool has_after;
};

static void run_case(struct tcase *c)
{
    struct offhook_config *cfg = load(c->title, S(&c->cfg));
    struct rosterplan p;
    char *lines, *save = NULL;

    rosterplan_build(&p, cfg, NULL, NULL);
    lines = xstrdup(S(&c->rosters));
    for (char *ln = strtok_r(lines, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        char *colon = strstr(ln, ": ");
        const struct cfg_user *u;
        char got[8192];

        assert_non_null(colon);
        *colon = '\0';
        u = config_user_by_jid(cfg, ln);
        if (!u)
            fail_msg("case '%s': no user %s", c->title, ln);
        roster_line(&p, u, got, sizeof got);
        if (strcmp(got, colon + 2) != 0)
            fail_msg("case '%s', %s:\n  want %s\n  got  %s", c->title, ln, colon + 2, got);
    }
    free(lines);
    lines = xstrdup(S(&c->counts));
    for (char *ln = strtok_r(lines, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        char jid[256];
        unsigned long count;
        int over;
        const struct cfg_user *u;

        assert_int_equal(sscanf(ln, "%255s %lu %d", jid, &count, &over), 3);
        u = config_user_by_jid(cfg, jid);
        assert_non_null(u);
        if (rosterplan_count(&p, u) != count || rosterplan_over_limit(&p, u) != (over != 0))
            fail_msg("case '%s', %s: count %zu over %d, want %lu %d", c->title, jid,
                     rosterplan_count(&p, u), rosterplan_over_limit(&p, u), count, over);
    }
    free(lines);
    if (c->has_after) {
        struct offhook_config *next = load(c->title, S(&c->after));
        struct rosterplan q;
        struct line work = {0};
        struct sbuf got;

        rosterplan_build(&q, next, NULL, NULL);
        rosterplan_diff(&p, &q, add_work, &work);
        if (work.n)
            qsort(work.items, work.n, sizeof *work.items, cmp_str);
        sbuf_init(&got);
        for (size_t i = 0; i < work.n; i++) {
            sbuf_printf(&got, "%s\n", work.items[i]);
            free(work.items[i]);
        }
        free(work.items);
        if (strcmp(S(&got), S(&c->work)) != 0)
            fail_msg("case '%s': work\n--- want\n%s--- got\n%s", c->title,
                     S(&c->work), S(&got));
        sbuf_free(&got);
        rosterplan_free(&q);
        unload(next);
    }
    rosterplan_free(&p);
    unload(cfg);
}

static void case_reset(struct tcase *c)
{
    sbuf_free(&c->cfg);
    sbuf_free(&c->rosters);
    sbuf_free(&c->counts);
    sbuf_free(&c->after);
    sbuf_free(&c->work);
    memset(c, 0, sizeof *c);
    sbuf_init(&c->cfg);
    sbuf_init(&c->rosters);
    sbuf_init(&c->counts);
    sbuf_init(&c->after);
    sbuf_init(&c->work);
}

static void test_data_file(void **state)
{
    char *data = read_data("rosterplan.txt", NULL), *save = NULL;
    struct tcase c;
    struct sbuf *into = NULL;
    int cases = 0;

    memset(&c, 0, sizeof c);
    case_reset(&c);
    for (char *ln = strtok_r(data, "\n", &save);; ln = strtok_r(NULL, "\n", &save)) {
        if (!ln || strncmp(ln, "=== ", 4) == 0) {
            if (c.title[0]) {
                run_case(&c);
                cases++;
            }
            if (!ln)
                break;
            case_reset(&c);
            str_copy(c.title, sizeof c.title, ln + 4);
            into = &c.cfg;
            continue;
        }
        if (!into || ln[0] == '#')
            continue;
        if (strcmp(ln, "--- rosters") == 0)
            into = &c.rosters;
        else if (strcmp(ln, "--- counts") == 0)
            into = &c.counts;
        else if (strcmp(ln, "--- after") == 0)
            into = &c.after, c.has_after = true;
        else if (strcmp(ln, "--- work") == 0)
            into = &c.work;
        else
            sbuf_printf(into, "%s\n", ln);
    }
    case_reset(&c);
    sbuf_free(&c.cfg);
    sbuf_free(&c.rosters);
    sbuf_free(&c.counts);
    sbuf_free(&c.after);
    sbuf_free(&c.work);
    free(data);
    assert_true(cases >= 10);
}

/* The signature changes with the name and the groups, not with the groups' order. */
static void test_sig(void **state)
{
    struct rosterplan_item a = {.contact = "bob@phone.localhost", .name = "Bob (phone)",
                                .groups = {"Sales", "Support"}, .ngroups = 2};
    struct rosterplan_item b = a;
    char sa[ROSTER_SIG_MAX], sb[ROSTER_SIG_MAX];

    rosterplan_sig(&a, sa, sizeof sa);
    assert_int_equal(sa[0], '+');
    str_copy(b.name, sizeof b.name, "Robert (phone)");
    rosterplan_sig(&b, sb, sizeof sb);
    assert_string_not_equal(sa, sb);
    b = a;
    b.ngroups = 1;
    rosterplan_sig(&b, sb, sizeof sb);
    assert_string_not_equal(sa, sb);
}

/* The watcher policy the component passes: a user it refuses gets no phone contacts. */
static bool only_bob(void *arg, const char *user)
{
    return strcmp(user, "bob@localhost") == 0;
}

static void test_policy(void **state)
{
    struct offhook_config *cfg = load("policy", "[component]\nroster = everyone\n[users]\n"
                                                "alice@localhost = sip:1001@pbx\n"
                                                "bob@localhost = sip:1002@pbx\n");
    struct rosterplan p;
    char got[1024];

    rosterplan_build(&p, cfg, only_bob, NULL);
    roster_line(&p, config_user_by_jid(cfg, "alice@localhost"), got, sizeof got);
    assert_string_equal(got, "-");
    roster_line(&p, config_user_by_jid(cfg, "bob@localhost"), got, sizeof got);
    assert_string_equal(got, "alice@phone.localhost|alice@localhost (phone)|Desk phones");
    rosterplan_free(&p);
    unload(cfg);
}

static void test_config_keys(void **state)
{
    static const char *const bad[] = {
        "[component]\nroster = all\n",
        "[component]\nroster_group = a;b\n",
        "[component]\nroster_group = \n",
        "[component]\nroster_api = https://127.0.0.1/api\n",
        "[component]\nroster_api = http://user@127.0.0.1/api\n",
        "[component]\nroster_max_items = 0\n",
        NULL};

    for (const char *const *b = bad; *b; b++) {
        struct offhook_config cfg = {0};
        struct cfg_errors errs = {0};
        char buf[512];

        snprintf(buf, sizeof buf, "%s%s[users]\nalice@localhost = sip:1001@pbx\n", base_cfg,
                 *b);
        if (config_load_buffer("bad.conf", buf, strlen(buf), &cfg, &errs) == 0)
            fail_msg("accepted: %s", *b);
        cfg_errors_free(&errs);
        config_free(&cfg);
    }
    {
        struct offhook_config *cfg =
            load("defaults", "[users]\nalice@localhost = sip:1001@pbx\n");
        assert_int_equal(cfg->roster_mode, CFG_ROSTER_NONE);
        assert_string_equal(cfg->roster_group, "Desk phones");
        assert_int_equal(cfg->roster_max_items, 1000);
        unload(cfg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_data_file),
        cmocka_unit_test(test_sig),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_config_keys),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
