/* libFuzzer target: what offhookctl check reads from servers it may not trust: the XMPP
 * tag scanner (xmppcheck_scan, fed in pieces as reads would deliver them), the SIP
 * response parser (sipcheck_parse_response) and the PBX URI parser
 * (sipcheck_parse_target, on the first line).
 *
 * Input format: the bytes a server sends. The first byte sets the read size for the
 * scanner (1 + byte % 64); the rest is both the XMPP stream and the SIP response. */
#include <stdint.h>

#include "sipcheck.h"
#include "xmppcheck.h"

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

static void fuzz_scan(const char *data, size_t size, size_t piece)
{
    struct xmpp_scan st = {0};
    size_t pos = 0;

    for (size_t len = 0; len < size;) {
        char *buf;
        int rc;
        len = len + piece < size ? len + piece : size;
        /* As check_xmpp holds it: the bytes so far, NUL-terminated, in a buffer of
         * exactly that size. */
        buf = fuzz_strndup_exact(data, len);
        rc = xmppcheck_scan(&st, buf, len, &pos);
        free(buf);
        FUZZ_CHECK(pos <= len);
        FUZZ_CHECK(FUZZ_TERMINATED(st.id) && FUZZ_TERMINATED(st.condition) &&
                   FUZZ_TERMINATED(st.text));
        for (const char *p = st.text; *p; p++)
            FUZZ_CHECK(*p >= 0x20 && *p < 0x7f);
        if (rc < 0)
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char phrase[128], server[96], err[320];
    struct sip_target t;
    int status = -1;
    char *buf, *line;
    size_t n, piece;

    if (size < 1)
        return 0;
    /* At most about 256 reads, so that a long input stays cheap. */
    piece = 1 + (size_t)(data[0] % 64);
    fuzz_scan((const char *)data + 1, size - 1, piece > size / 256 ? piece : size / 256);

    buf = fuzz_dup_exact(data + 1, size - 1);
    if (sipcheck_parse_response(buf, size - 1, "cid@offhookctl", &status, phrase, sizeof phrase,
                                server, sizeof server) == 1) {
        FUZZ_CHECK(status >= 100 && status <= 699);
        FUZZ_CHECK(FUZZ_TERMINATED(phrase) && FUZZ_TERMINATED(server));
    }
    free(buf);

    n = 0;
    while (n < size - 1 && data[1 + n] != '\n')
        n++;
    line = fuzz_strndup_exact(data + 1, n);
    if (sipcheck_parse_target(line, &t, err, sizeof err) == 0) {
        FUZZ_CHECK(t.host[0] && FUZZ_TERMINATED(t.host));
        FUZZ_CHECK(t.port >= 1 && t.port <= 65535);
        FUZZ_CHECK(!strcmp(t.transport, "udp") || !strcmp(t.transport, "tcp") ||
                   !strcmp(t.transport, "tls"));
    } else {
        FUZZ_CHECK(FUZZ_TERMINATED(err) && err[0]);
    }
    free(line);
    return 0;
}
