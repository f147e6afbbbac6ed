/* libFuzzer target: the INI configuration loader (config_load_buffer).
 *
 * config_load_buffer reads the files that [sip] password_file, [xmpp] secret_file and
 * [redis] password_file name. A fuzzer that names files could open a FIFO, /dev/stdin or
 * a huge device and hang, and results would depend on the machine, so an input with a
 * line that sets a key ending in "_file" (the line, trimmed, does not start with ';', '#'
 * or '[', and the text before its first '=', trimmed, ends in "_file") is skipped: the
 * target returns -1 and libFuzzer does not add it to the corpus. This is a superset of
 * the lines config.c would take as setting a *_file key; comments mentioning them are
 * still fuzzed. Everything else of the loader, secrets given inline included, runs. */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>

#include "config.h"

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

/* True if some line of the input may set a *_file key (see above). */
static bool sets_file_key(const uint8_t *d, size_t n)
{
    size_t pos = 0;

    while (pos < n) {
        const uint8_t *s = d + pos, *nl = memchr(s, '\n', n - pos), *eq;
        size_t ll = nl ? (size_t)(nl - s) : n - pos, i = 0;

        while (i < ll && isspace(s[i]))
            i++;
        if (i < ll && s[i] != ';' && s[i] != '#' && s[i] != '[' &&
            (eq = memchr(s + i, '=', ll - i)) != NULL) {
            size_t k = (size_t)(eq - s);
            while (k > i && isspace(s[k - 1]))
                k--;
            if (k - i >= 5 && memcmp(s + k - 5, "_file", 5) == 0)
                return true;
        }
        pos += ll + 1;
    }
    return false;
}

static void check_config(const struct offhook_config *cfg)
{
    char diff[512];

    FUZZ_CHECK(cfg->path && strcmp(cfg->path, "fuzz.conf") == 0);
    FUZZ_CHECK(cfg->sip_nlisten >= 0 && cfg->sip_nlisten <= CFG_MAX_LISTEN);
    for (int i = 0; i < cfg->sip_nlisten; i++)
        (void)strlen(cfg->sip_listen_urls[i]);
    for (size_t i = 0; i < cfg->nusers; i++) {
        const struct cfg_user *u = &cfg->users[i];

        FUZZ_CHECK(u->jid != NULL);
        FUZZ_CHECK(u->naors >= 0 && u->naors <= CFG_MAX_AORS);
        for (int a = 0; a < u->naors; a++)
            (void)strlen(u->aors[a]);
        FUZZ_CHECK(config_user_by_jid(cfg, u->jid) != NULL);
        if (u->contact)
            (void)config_user_by_contact(cfg, u->contact);
        (void)config_user_shows_remote(cfg, u);
    }
    /* Every string key holds a value (default or given), so a config equals itself. */
    FUZZ_CHECK(config_diff_restart_keys(cfg, cfg, diff, sizeof diff) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct offhook_config cfg;
    struct cfg_errors errs = {0};
    char *buf;
    size_t nerr;

    if (sets_file_key(data, size))
        return -1;
    memset(&cfg, 0, sizeof cfg);
    buf = fuzz_dup_exact(data, size);
    nerr = config_load_buffer("fuzz.conf", buf, size, &cfg, &errs);
    free(buf); /* the configuration must not point into the buffer */
    FUZZ_CHECK(nerr == errs.n);
    for (size_t i = 0; i < errs.n; i++)
        FUZZ_CHECK(errs.msg[i] && strncmp(errs.msg[i], "fuzz.conf", 9) == 0);
    check_config(&cfg);
    config_free(&cfg);
    cfg_errors_free(&errs);
    return 0;
}
