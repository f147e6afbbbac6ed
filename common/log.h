/* Logging for both daemons: one line per event, key=value fields, journald priority
 * prefixes when stderr is the journal. Called from everywhere; libstrophe and Sofia-SIP
 * log output is routed here by their adapters. Never pass secrets to it. */
#ifndef OFFHOOK_LOG_H
#define OFFHOOK_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

extern int log_level; /* messages above this syslog priority are dropped */

/* Sets the level from a name (error, warning, notice, info, debug). Returns 0/-1. */
int log_set_level_name(const char *name) __attribute__((warn_unused_result));
const char *log_level_name(int level);
/* Where to write; defaults to stderr. Journald prefixes are auto-detected on init. */
void log_init(const char *program);

void log_write(int prio, const char *subsys, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void log_vwrite(int prio, const char *subsys, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#define LOG_AT(prio, subsys, ...)                                                        \
    do {                                                                                 \
        if ((prio) <= log_level)                                                         \
            log_write((prio), (subsys), __VA_ARGS__);                                    \
    } while (0)
#define log_err(subsys, ...) LOG_AT(LOG_ERR, subsys, __VA_ARGS__)
#define log_warn(subsys, ...) LOG_AT(LOG_WARNING, subsys, __VA_ARGS__)
#define log_notice(subsys, ...) LOG_AT(LOG_NOTICE, subsys, __VA_ARGS__)
#define log_info(subsys, ...) LOG_AT(LOG_INFO, subsys, __VA_ARGS__)
#define log_debug(subsys, ...) LOG_AT(LOG_DEBUG, subsys, __VA_ARGS__)

/* A value from a peer (a SIP reason phrase, a URI from a body, a JID resource), made safe
 * for one key=value field, logfmt style: "key=%s" with log_q(value) can never end the
 * field early or forge another one.
 *
 * Returned as it is when every byte is printable and not a space, '"', '=' or '\'
 * (letters of any script in valid UTF-8 included); else in double quotes, with '"' and
 * '\' backslash-escaped, newline, CR and tab as \n \r \t, and every other control
 * byte, DEL and byte that is not well-formed UTF-8 as \xNN. NULL and "" give "". Values
 * longer than LOG_Q_MAX bytes are cut on a character boundary and end in ... inside
 * the quotes.
 *
 * The result is in one of LOG_Q_SLOTS static buffers used in turn: it stays valid for
 * the next LOG_Q_SLOTS - 1 calls, so one log line may quote up to LOG_Q_SLOTS values.
 * Not thread-safe (each daemon logs from its one loop thread). */
#define LOG_Q_MAX 256
#define LOG_Q_SLOTS 8
const char *log_q(const char *s);
/* log_q() of the len bytes at s (not NUL-terminated; a NUL byte among them is \x00). */
const char *log_qn(const char *s, size_t len);
/* log_q() of s cut at max bytes instead of LOG_Q_MAX, written into out, which holds
 * LOG_Q_SIZE(max) bytes (every byte may become 4, "\xNN"; quotes, "..." and the NUL):
 * for long values logged at debug, such as protocol traces. Returns out. */
#define LOG_Q_SIZE(max) ((max) * 4 + 8)
const char *log_q_buf(char *out, const char *s, size_t max);

/* A trace of one user or AOR (offhookctl trace): the object on that user's paths (a
 * subscription, a user) holds one, and its debug lines are written whatever the level
 * while the trace runs. It ends by itself at until_ms. Zeroed: off. */
struct log_trace {
    int64_t until_ms;   /* clock_mono_ms() deadline; 0: off */
    bool bodies;        /* NOTIFY bodies too (they name the other party of a call): the
                         * operator asked for them */
};
bool log_traced(const struct log_trace *t); /* t may be NULL */
/* log_debug, and also while t traces. */
#define log_trace(t, subsys, ...)                                                        \
    do {                                                                                 \
        if (LOG_DEBUG <= log_level || log_traced(t))                                     \
            log_write(LOG_DEBUG, (subsys), __VA_ARGS__);                                 \
    } while (0)

#endif
