/* libFuzzer target: the control socket's protocol, both ends. What a client (anyone in
 * the socket's group, or a confused program) sends a daemon: each line of the input goes
 * through ctlproto_parse as the daemon reads it (at most CTL_LINE_MAX + 1 bytes, its LF
 * removed), then its words through ctlproto_duration and ctlproto_json_str (the JSON the
 * daemon writes must stay valid whatever the bytes). What a daemon (or something else on
 * the socket's path) sends offhookctl: the whole input through ctlclient_feed, in pieces.
 *
 * Input format: the bytes; the first one sets the piece size of the answer reader
 * (1 + byte % 64). */
#include <stdbool.h>
#include <stdint.h>

#include "ctlclient.h"
#include "ctlproto.h"
#include "sbuf.h"

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

/* Whether s (len bytes) is one JSON string as ctlproto_json_str must write it: quoted,
 * no raw control character, only the escapes it uses, valid UTF-8 in between. */
static bool json_string_ok(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 1;

    if (len < 2 || p[0] != '"' || p[len - 1] != '"')
        return false;
    while (i < len - 1) {
        unsigned char c = p[i];
        if (c < 0x20 || c == '"')
            return false;
        if (c == '\\') {
            if (i + 1 >= len - 1)
                return false;
            if (p[i + 1] == 'u') {
                if (i + 5 >= len - 1)
                    return false;
                i += 6;
            } else if (p[i + 1] == '"' || p[i + 1] == '\\') {
                i += 2;
            } else {
                return false;
            }
            continue;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        {
            size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
            if (!n || i + n > len - 1)
                return false;
            for (size_t k = 1; k < n; k++) {
                if ((p[i + k] & 0xc0) != 0x80)
                    return false;
            }
            i += n;
        }
    }
    return true;
}

static void fuzz_line(const char *line, size_t len)
{
    struct ctl_request req;
    const char *err = NULL;
    int rc = ctlproto_parse(line, len, &req, &err);

    FUZZ_CHECK(rc >= -1 && rc <= 1);
    if (rc < 0) {
        FUZZ_CHECK(err != NULL && req.argc == 0);
        return;
    }
    FUZZ_CHECK(rc == 1 ? req.argc == 0 : req.argc >= 1 && req.argc <= CTL_ARGS_MAX);
    for (int i = 0; i < req.argc; i++) {
        const char *w = req.argv[i];
        long secs;
        struct sbuf js;

        FUZZ_CHECK(w >= req.buf && w < req.buf + sizeof req.buf && *w);
        FUZZ_CHECK(!strchr(w, ' ') && !strchr(w, '\t'));
        for (const char *p = w; *p; p++)
            FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f);
        if (ctlproto_duration(w, 1, 86400, &secs) == 0)
            FUZZ_CHECK(secs >= 1 && secs <= 86400);
        sbuf_init(&js);
        ctlproto_json_str(&js, w);
        FUZZ_CHECK(json_string_ok(js.data, js.len));
        sbuf_free(&js);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t piece, pos = 0;
    struct ctlclient_parser p = {0};
    struct sbuf body, js;
    char *copy;

    if (size < 1)
        return 0;
    piece = 1 + (size_t)(data[0] % 64);
    data++;
    size--;

    /* The daemon's side: line by line, as ctlsock.c cuts them. */
    while (pos < size) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t n = nl ? (size_t)(nl - (data + pos)) : size - pos;
        if (n <= CTL_LINE_MAX + 1) {
            char *line = fuzz_dup_exact(data + pos, n);
            fuzz_line(line, n);
            free(line);
        }
        pos += n + 1;
    }

    /* Arbitrary bytes as a JSON string (they end at a NUL, as C strings do). */
    copy = fuzz_strndup_exact(data, size);
    sbuf_init(&js);
    ctlproto_json_str(&js, copy);
    FUZZ_CHECK(json_string_ok(js.data, js.len));
    sbuf_free(&js);
    free(copy);

    /* offhookctl's side: an answer, fed as reads would deliver it. */
    sbuf_init(&body);
    for (pos = 0; pos < size && !ctlclient_done(&p);) {
        size_t k = size - pos < piece ? size - pos : piece;
        char *buf = fuzz_dup_exact(data + pos, k);
        long used = ctlclient_feed(&p, buf, k, NULL, &body);
        free(buf);
        if (used < 0)
            break;
        FUZZ_CHECK((size_t)used <= k);
        FUZZ_CHECK(used > 0 || ctlclient_done(&p));
        pos += (size_t)used;
        FUZZ_CHECK(FUZZ_TERMINATED(p.status));
    }
    FUZZ_CHECK(body.len <= size);
    sbuf_free(&body);
    return 0;
}
