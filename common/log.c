/* Logging for both daemons: formats one key=value line per event and writes it to
 * stderr, with a journald priority prefix when stderr is connected to the journal. */
#include "log.h"

#include <stdbool.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "strutil.h"

int log_level = LOG_INFO;

static const char *log_program = "offhook";
static int log_journal;  /* stderr is the journal: print <N> prefixes, no timestamps */

static const char *const level_names[] = {
    [LOG_EMERG] = "emerg",   [LOG_ALERT] = "alert", [LOG_CRIT] = "crit",
    [LOG_ERR] = "error",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
    [LOG_INFO] = "info",     [LOG_DEBUG] = "debug",
};

const char *log_level_name(int level)
{
    if (level < 0 || level > LOG_DEBUG)
        return "unknown";
    return level_names[level];
}

int log_set_level_name(const char *name)
{
    for (int i = LOG_ERR; i <= LOG_DEBUG; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            log_level = i;
            return 0;
        }
    }
    if (strcasecmp(name, "warn") == 0) {
        log_level = LOG_WARNING;
        return 0;
    }
    return -1;
}

/* systemd sets JOURNAL_STREAM=dev:ino for the stream it connected to stderr. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
        return 0;
    if (fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_init(const char *program)
{
    log_program = program;
    log_journal = stderr_is_journal();
}

void log_vwrite(int prio, const char *subsys, const char *fmt, va_list ap)
{
    char msg[2048];
    char line[2300];
    int n;

    n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return;
    /* One event, one line: control characters from peers never split a record. */
    for (char *p = msg; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    }
    if (log_journal) {
        n = snprintf(line, sizeof line, "<%d>level=%s sub=%s %s\n", prio,
                     log_level_name(prio), subsys, msg);
    } else {
        struct timeval tv;
        struct tm tm;
        char ts[32];

        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
        n = snprintf(line, sizeof line, "%s.%03dZ %s level=%s sub=%s %s\n", ts,
                     (int)(tv.tv_usec / 1000), log_program, log_level_name(prio), subsys,
                     msg);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    /* A single write keeps lines whole when both daemons share a terminal. */
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to report it */
    }
}

void log_write(int prio, const char *subsys, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    log_vwrite(prio, subsys, fmt, ap);
    va_end(ap);
}

/* ---- values from peers ------------------------------------------------------------- */

#define LOG_Q_SLOT LOG_Q_SIZE(LOG_Q_MAX)

static bool bare_ok(const unsigned char *p, size_t len)
{
    if (len == 0 || !str_utf8_valid((const char *)p, len))
        return false;
    for (size_t i = 0; i < len; i++) {
        if (p[i] <= ' ' || p[i] == 0x7f || p[i] == '"' || p[i] == '=' || p[i] == '\\')
            return false;
    }
    return true;
}

/* The len bytes at s, quoted as log_q() says and cut at max bytes, into out (at least
 * LOG_Q_SIZE(max) bytes). */
static const char *quote(char *out, const char *s, size_t len, size_t max)
{
    char *o = out;
    const unsigned char *p = (const unsigned char *)s;
    size_t keep;

    if (!s)
        len = 0;
    keep = str_utf8_cut(s ? s : "", len, max);
    if (keep == len && bare_ok(p, len)) {
        memcpy(out, s, len);
        out[len] = '\0';
        return out;
    }
    *o++ = '"';
    for (size_t i = 0; i < keep;) {
        unsigned char c = p[i];
        size_t n = 1;
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            *o++ = '\\';
            *o++ = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20 || c == 0x7f) {
            o += sprintf(o, "\\x%02x", c);
        } else if (c < 0x80) {
            *o++ = (char)c;
        } else {
            /* A well-formed character goes as it is, a stray byte as \xNN. */
            n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
            if (i + n <= keep && str_utf8_valid((const char *)p + i, n)) {
                memcpy(o, p + i, n);
                o += n;
            } else {
                o += sprintf(o, "\\x%02x", c);
                n = 1;
            }
        }
        i += n;
    }
    if (keep < len) {
        memcpy(o, "...", 3);
        o += 3;
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

const char *log_qn(const char *s, size_t len)
{
    static char slots[LOG_Q_SLOTS][LOG_Q_SLOT];
    static unsigned next;

    return quote(slots[next++ % LOG_Q_SLOTS], s, len, LOG_Q_MAX);
}

const char *log_q_buf(char *out, const char *s, size_t max)
{
    return quote(out, s, s ? strlen(s) : 0, max);
}

const char *log_q(const char *s)
{
    return log_qn(s, s ? strlen(s) : 0);
}

bool log_traced(const struct log_trace *t)
{
    return t && t->until_ms && clock_mono_ms() < t->until_ms;
}
