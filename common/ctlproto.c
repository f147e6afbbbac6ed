/* The control-socket protocol (see ctlproto.h): request parsing, status lines,
 * durations and JSON strings. Pure. */
#include "ctlproto.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "strutil.h"

/* Length of the well-formed UTF-8 character at p (at most n bytes there), 0 if there is
 * none: strutil's check, the one offhook has, decides. */
static size_t utf8_seq(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80 ? 1 : p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : p[0] >= 0xc0 ? 2 : 0;

    return len && len <= n && str_utf8_valid((const char *)p, len) ? len : 0;
}

int ctlproto_parse(const char *line, size_t len, struct ctl_request *out, const char **err)
{
    char *p, *end;

    out->argc = 0;
    out->json = false;
    if (len && line[len - 1] == '\r')
        len--;
    if (len > CTL_LINE_MAX) {
        *err = "request line too long";
        return -1;
    }
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)line[i];
        size_t n;
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *err = "control character in request";
            return -1;
        }
        n = utf8_seq((const unsigned char *)line + i, len - i);
        if (!n) {
            *err = "request is not UTF-8 text";
            return -1;
        }
        i += n;
    }
    memcpy(out->buf, line, len);
    out->buf[len] = '\0';
    p = out->buf;
    end = out->buf + len;
    while (p < end) {
        char *w;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p == end)
            break;
        w = p;
        while (p < end && *p != ' ' && *p != '\t')
            p++;
        *p++ = '\0';
        if (out->argc > 0 && strcmp(w, "--json") == 0) {
            out->json = true;
            continue;
        }
        if (out->argc == CTL_ARGS_MAX) {
            *err = "too many words in request";
            out->argc = 0;
            return -1;
        }
        out->argv[out->argc++] = w;
    }
    return out->argc ? 0 : 1;
}

int ctlproto_status(const char *line, char *codebuf, size_t codelen, const char **text)
{
    size_t n;

    if (strcmp(line, "OK") == 0)
        return 1;
    if (strncmp(line, "ERR ", 4) != 0)
        return -1;
    line += 4;
    n = strcspn(line, " ");
    if (n == 0 || n >= codelen)
        return -1;
    memcpy(codebuf, line, n);
    codebuf[n] = '\0';
    *text = line[n] ? line + n + 1 : line + n;
    return 0;
}

int ctlproto_duration(const char *s, long min_s, long max_s, long *out)
{
    char num[24];
    size_t n = strspn(s, "0123456789");
    long v, unit = 1;

    if (n == 0 || n >= sizeof num)
        return -1;
    memcpy(num, s, n);
    num[n] = '\0';
    if (s[n] == 's' || s[n] == '\0')
        unit = 1;
    else if (s[n] == 'm')
        unit = 60;
    else if (s[n] == 'h')
        unit = 3600;
    else if (s[n] == 'd')
        unit = 86400;
    else
        return -1;
    if (s[n] && s[n + 1])
        return -1;
    if (str_parse_long(num, 0, max_s, &v) < 0 || v > max_s / unit || v * unit < min_s)
        return -1;
    *out = v * unit;
    return 0;
}

void ctlproto_json_str(struct sbuf *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n;

    if (!s) {
        sbuf_puts(out, "null");
        return;
    }
    n = strlen(s);
    sbuf_append(out, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        size_t k;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sbuf_append(out, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            sbuf_append(out, esc, 6);
            i++;
        } else if ((k = utf8_seq(p + i, n - i)) != 0) {
            sbuf_append(out, s + i, k);
            i += k;
        } else {
            sbuf_puts(out, "\\ufffd");
            i++;
        }
    }
    sbuf_append(out, "\"", 1);
}

void ctlproto_ago(int64_t wall_ms, int64_t now_ms, char *out, size_t len)
{
    int64_t d = now_ms - wall_ms, n;
    const char *unit;

    if (wall_ms <= 0) {
        snprintf(out, len, "never");
        return;
    }
    if (d > -1000 && d < 1000) {
        snprintf(out, len, "%s", d >= 0 ? "just now" : "in 1 s");
        return;
    }
    n = d < 0 ? -d : d;
    if (n < 120000)
        n /= 1000, unit = "s";
    else if (n < 7200000)
        n /= 60000, unit = "min";
    else if (n < 172800000)
        n /= 3600000, unit = "h";
    else
        n /= 86400000, unit = "days";
    if (d >= 0)
        snprintf(out, len, "%" PRId64 " %s ago", n, unit);
    else
        snprintf(out, len, "in %" PRId64 " %s", n, unit);
}
