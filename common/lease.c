/* A daemon's lease in its group, renewed on its own Redis link (storecodec_lease_script);
 * each renewal's view of the group goes up through lease_ops. */
#include "lease.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "redislink.h"
#include "strutil.h"

#define MAX_MEMBERS 256 /* members reported in a view; more is a misconfiguration */
#define MAX_DEAD 16     /* members of this host found dead, pruned per renewal */

struct lease {
    struct event_base *base;
    struct redislink *link;
    struct lease_ops ops;
    void *arg;
    char *group;
    char name[STORECODEC_MEMBER_NAME_MAX + 1];
    char members_key[512], epoch_key[512], wake_key[512];
    long ttl_ms, renew_ms;
    uint64_t epoch;           /* 0: none */
    bool ready, want_holder, release_holder, leaving, gone;
    long count;
    bool holder;              /* held the role at the last renewal */
    bool in_flight;           /* a renewal or a wait on the wake list is outstanding */
    bool again;               /* renew as soon as the one in flight is answered */
    int64_t sent_mono;        /* when the renewal in flight was sent */
    int64_t ok_mono;          /* when the last renewal Redis answered was sent (0: none) */
    int64_t up_mono;          /* when the link last came up (0: down) */
    bool expired_said;        /* on_expired called for this spell */
    bool conflict_logged;
    char dead[MAX_DEAD][STORECODEC_MEMBER_NAME_MAX + 1]; /* pruned at the next renewal */
    int ndead;
    struct event *tick;
    void (*done)(void *arg);  /* lease_leave's */
    void *done_arg;
};

static struct metric *m_held, *m_holder, *m_members, *m_lost;

void lease_register_metrics(void)
{
    m_held = metric_new(METRIC_GAUGE, "offhook_lease_held",
                        "1 while this process holds its lease in its group in Redis.", NULL,
                        NULL);
    m_holder = metric_new(METRIC_GAUGE, "offhook_lease_holder",
                          "1 while this process holds its group's holder role (the active "
                          "component; the sipbridge holding the resource list).",
                          NULL, NULL);
    m_members = metric_new(METRIC_GAUGE, "offhook_lease_members",
                           "Members of this process's group (itself included) at the last "
                           "renewal of its lease.",
                           NULL, NULL);
    m_lost = metric_new(METRIC_COUNTER, "offhook_lease_lost_total",
                        "Leases lost: found pruned by another member at a renewal (this "
                        "process was taken for dead), or their name held by another "
                        "process.",
                        NULL, NULL);
}

static void renew(struct lease *l);

static bool may_prune(const struct lease *l)
{
    /* Every live member renews every renew_ms: one that has not renewed for a whole lease
     * while this link was up is dead, or cut off from Redis. Right after (re)connecting,
     * e.g. after a failover during which nobody could renew, everyone gets that time. */
    return l->up_mono && clock_mono_ms() - l->up_mono >= l->ttl_ms;
}

bool lease_held(const struct lease *l)
{
    return l->epoch && l->ok_mono && clock_mono_ms() - l->ok_mono < l->ttl_ms - l->renew_ms;
}

static void set_held_metrics(struct lease *l)
{
    metric_set(m_held, NULL, lease_held(l) ? 1 : 0);
    metric_set(m_holder, NULL, lease_held(l) && l->holder ? 1 : 0);
}

/* This host's short name, as default names begin with it. */
static void host_name(char *out, size_t len)
{
    char host[256] = "";

    if (gethostname(host, sizeof host) < 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    host[strcspn(host, ". \t")] = '\0';
    host[40] = '\0'; /* with ":<pid>", within a member name's 64 bytes */
    str_copy(out, len, host[0] ? host : "localhost");
}

void lease_default_name(char *out, size_t len)
{
    char host[64];

    host_name(host, sizeof host);
    snprintf(out, len, "%s:%d", host, (int)getpid());
}

/* A member with a default name of this host whose process no longer exists: a daemon
 * killed and restarted here (systemd's Restart=). Its lease would otherwise stand until
 * it ran out and then until this process had been connected for a whole lease: pruned at
 * once instead. A pid since reused by another process keeps it (the lease runs out). */
static bool dead_here(const char *name)
{
    char host[64], *end;
    size_t hl;
    long pid;

    host_name(host, sizeof host);
    hl = strlen(host);
    if (strncmp(name, host, hl) != 0 || name[hl] != ':' || name[hl + 1] < '1' ||
        name[hl + 1] > '9')
        return false;
    pid = strtol(name + hl + 1, &end, 10);
    if (*end || pid <= 0 || pid > 0x7fffffff || pid == (long)getpid())
        return false;
    return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct lease_member *)a)->name, ((const struct lease_member *)b)->name);
}

/* The view from the hash in reply r (flat name/value pairs), reported up. */
static void report(struct lease *l, const redisReply *hash, int64_t now_ms, bool joined)
{
    struct lease_member *mem = xcalloc(MAX_MEMBERS, sizeof *mem);
    struct lease_view v = {.now_ms = now_ms, .epoch = l->epoch, .joined = joined,
                           .members = mem};
    char holder[STORECODEC_MEMBER_NAME_MAX + 1] = "";
    uint64_t hepoch = 0;

    for (size_t i = 0; hash->type == REDIS_REPLY_ARRAY && i + 1 < hash->elements; i += 2) {
        const redisReply *k = hash->element[i], *val = hash->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING)
            continue;
        if (strcmp(k->str, STORECODEC_HOLDER_FIELD) == 0) {
            if (storecodec_owner_parse(val->str, &hepoch, holder, sizeof holder) < 0)
                holder[0] = '\0';
            continue;
        }
        if (v.n >= MAX_MEMBERS || !storecodec_member_name_ok(k->str) ||
            storecodec_member_parse(val->str, &mem[v.n].rec) < 0)
            continue;
        str_copy(mem[v.n].name, sizeof mem[v.n].name, k->str);
        if (l->ndead < MAX_DEAD && strcmp(k->str, l->name) != 0 && dead_here(k->str)) {
            log_notice("lease", "event=pruning_dead group=%s name=%s reason=\"its process "
                                "on this host is gone\"",
                       l->group, log_q(k->str));
            str_copy(l->dead[l->ndead++], sizeof l->dead[0], k->str);
            l->again = true; /* renew at once: the prune then shows in the next view */
            continue;
        }
        v.n++;
    }
    qsort(mem, v.n, sizeof *mem, by_name);
    for (size_t i = 0; holder[0] && i < v.n; i++) {
        if (strcmp(mem[i].name, holder) == 0 && mem[i].rec.epoch == hepoch &&
            !mem[i].rec.leaving) {
            v.holder = mem[i].name;
            v.holder_epoch = hepoch;
        }
    }
    l->holder = v.holder && strcmp(v.holder, l->name) == 0 && v.holder_epoch == l->epoch;
    metric_set(m_members, NULL, (double)v.n);
    set_held_metrics(l);
    l->ops.on_view(l->arg, &v);
    free(mem);
}

static void on_woken(struct redislink *link, redisReply *r, void *arg)
{
    struct lease *l = arg;

    l->in_flight = false;
    if (r && !l->gone)
        renew(l); /* woken by a release, or the wait ran out: renew (and perhaps take it) */
}

/* A member that wants the holder role and lacks it waits on the wake list between
 * renewals: the holder's release (a clean stop) wakes it at once. */
static void wait_for_wake(struct lease *l)
{
    char secs[32];

    snprintf(secs, sizeof secs, "%.3f", (double)l->renew_ms / 1000.0);
    if (redislink_command(l->link, on_woken, l, "BLPOP %s %s", l->wake_key, secs) == 0)
        l->in_flight = true;
}

static void on_renewed(struct redislink *link, redisReply *r, void *arg)
{
    struct lease *l = arg;
    const char *status;
    uint64_t epoch;
    int64_t now_ms;
    bool joined;

    l->in_flight = false;
    if (!r || l->gone)
        return; /* link lost: renewed again once it is back */
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
        r->element[2]->type != REDIS_REPLY_STRING) {
        /* An error reply is logged by redislink; anything else is not ours. */
        if (r->type != REDIS_REPLY_ERROR)
            log_err("lease", "event=unexpected_reply group=%s", l->group);
        return;
    }
    status = r->element[0]->str;
    epoch = strtoull(r->element[1]->str, NULL, 10);
    now_ms = strtoll(r->element[2]->str, NULL, 10);
    if (strcmp(status, "conflict") == 0) {
        if (!l->conflict_logged)
            log_err("lease", "event=name_in_use group=%s name=%s holder_epoch=%llu "
                             "action=\"waiting for it to run out\" note=\"two processes "
                             "have this instance name: give each its own\"",
                    l->group, log_q(l->name), (unsigned long long)epoch);
        l->conflict_logged = true;
        if (l->epoch) {
            metric_inc(m_lost, NULL);
            l->epoch = 0;
        }
        l->holder = false;
        set_held_metrics(l);
        if (!l->expired_said) {
            l->expired_said = true;
            l->ops.on_expired(l->arg);
        }
        return;
    }
    joined = strcmp(status, "joined") == 0;
    if (joined && l->epoch) {
        metric_inc(m_lost, NULL);
        log_warn("lease", "event=lease_lost group=%s name=%s old_epoch=%llu new_epoch=%llu "
                          "reason=\"not in Redis any more: pruned by another member (this "
                          "process was taken for dead), or Redis lost it (restarted empty, "
                          "failover)\"",
                 l->group, log_q(l->name), (unsigned long long)l->epoch, (unsigned long long)epoch);
    } else if (joined) {
        log_notice("lease", "event=joined group=%s name=%s epoch=%llu ttl_ms=%ld", l->group,
                   log_q(l->name), (unsigned long long)epoch, l->ttl_ms);
    }
    l->conflict_logged = false;
    l->epoch = epoch;
    l->ok_mono = l->sent_mono;
    l->expired_said = false;
    l->release_holder = false;
    report(l, r->element[3], now_ms, joined);
    if (l->gone || l->in_flight)
        return; /* the owner left, or renewed, from on_view */
    if (l->again) {
        renew(l);
        return;
    }
    if (l->want_holder && !l->holder && l->ready && !l->leaving)
        wait_for_wake(l);
}

static void renew(struct lease *l)
{
    char ttl[24], ready[2], count[24];
    const char *argv[3 + 3 + 8 + MAX_DEAD];
    int argc = 0;

    if (l->in_flight) {
        l->again = true;
        return;
    }
    l->again = false;
    if (!redislink_up(l->link) || l->gone)
        return;
    snprintf(ttl, sizeof ttl, "%ld", l->ttl_ms);
    snprintf(ready, sizeof ready, "%d", l->ready ? 1 : 0);
    snprintf(count, sizeof count, "%ld", l->count);
    {
        char epoch[24];
        snprintf(epoch, sizeof epoch, "%llu", (unsigned long long)l->epoch);
        argv[argc++] = "EVAL";
        argv[argc++] = storecodec_lease_script;
        argv[argc++] = "3";
        argv[argc++] = l->members_key;
        argv[argc++] = l->epoch_key;
        argv[argc++] = l->wake_key;
        argv[argc++] = l->name;
        argv[argc++] = epoch;
        argv[argc++] = ttl;
        argv[argc++] = l->leaving ? "leaving" : "active";
        argv[argc++] = ready;
        argv[argc++] = count;
        argv[argc++] = may_prune(l) ? "1" : "0";
        argv[argc++] = l->release_holder ? "release" : l->want_holder ? "want" : "none";
        for (int i = 0; i < l->ndead; i++)
            argv[argc++] = l->dead[i];
        l->sent_mono = clock_mono_ms();
        if (redislink_command_argv(l->link, on_renewed, l, argc, argv, NULL) == 0) {
            l->in_flight = true;
            l->ndead = 0;
        } else
            redislink_reset(l->link, "cannot queue a lease renewal");
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct lease *l = arg;

    if (l->gone)
        return;
    if (l->epoch && !lease_held(l) && !l->expired_said) {
        l->expired_said = true;
        log_warn("lease", "event=lease_expiring group=%s name=%s epoch=%llu silent_ms=%lld "
                          "reason=\"no renewal answered\"",
                 l->group, log_q(l->name), (unsigned long long)l->epoch,
                 (long long)(clock_mono_ms() - l->ok_mono));
        set_held_metrics(l);
        l->ops.on_expired(l->arg);
    }
    renew(l);
}

static void on_link(struct redislink *link, bool up, void *arg)
{
    struct lease *l = arg;

    l->in_flight = false;
    l->up_mono = up ? clock_mono_ms() : 0;
    if (up)
        renew(l);
}

struct lease *lease_new(struct event_base *base, const struct offhook_config *cfg,
                        const char *group, const char *name, long ttl_ms,
                        const struct lease_ops *ops, void *arg)
{
    struct lease *l = xcalloc(1, sizeof *l);
    struct timeval tv;

    l->base = base;
    l->ops = *ops;
    l->arg = arg;
    l->group = xstrdup(group);
    str_copy(l->name, sizeof l->name, name);
    l->ttl_ms = ttl_ms;
    l->renew_ms = ttl_ms / 5 > 200 ? ttl_ms / 5 : 200;
    storecodec_key_members(cfg->redis_prefix, group, l->members_key, sizeof l->members_key);
    storecodec_key_epoch(cfg->redis_prefix, l->epoch_key, sizeof l->epoch_key);
    storecodec_key_wake(cfg->redis_prefix, group, l->wake_key, sizeof l->wake_key);
    tv.tv_sec = l->renew_ms / 1000;
    tv.tv_usec = (l->renew_ms % 1000) * 1000;
    l->tick = event_new(base, -1, EV_PERSIST, on_tick, l);
    event_add(l->tick, &tv);
    metric_set(m_held, NULL, 0);
    metric_set(m_holder, NULL, 0);
    metric_add(m_lost, NULL, 0);
    /* A wait on the wake list blocks for up to renew_ms: not a stall. */
    l->link = redislink_new(base, cfg, "lease", (unsigned)l->renew_ms + 10000, on_link, l);
    return l;
}

void lease_free(struct lease *l)
{
    if (!l)
        return;
    event_free(l->tick);
    l->gone = true;
    l->done = NULL;
    redislink_free(l->link); /* in-flight callbacks run now, with NULL replies */
    free(l->group);
    free(l);
}

void lease_set_ready(struct lease *l, bool ready)
{
    if (l->ready == ready)
        return;
    l->ready = ready;
    renew(l);
}

void lease_set_count(struct lease *l, long count)
{
    l->count = count;
}

void lease_want_holder(struct lease *l, bool want)
{
    l->want_holder = want;
}

void lease_release_holder(struct lease *l)
{
    l->release_holder = true;
    renew(l);
}

void lease_set_leaving(struct lease *l)
{
    l->leaving = true;
    renew(l);
}

void lease_renew_now(struct lease *l)
{
    renew(l);
}

static void on_left(struct redislink *link, redisReply *r, void *arg)
{
    struct lease *l = arg;
    void (*done)(void *) = l->done;

    l->done = NULL;
    if (r && r->type == REDIS_REPLY_ARRAY)
        log_notice("lease", "event=left group=%s name=%s epoch=%llu", l->group, log_q(l->name),
                   (unsigned long long)l->epoch);
    l->epoch = 0;
    l->holder = false;
    set_held_metrics(l);
    if (done)
        done(l->done_arg);
}

void lease_leave(struct lease *l, void (*done)(void *arg), void *arg)
{
    char ttl[24], epoch[24];
    const char *argv[14];
    int argc = 0;

    l->gone = true;
    l->done = done;
    l->done_arg = arg;
    snprintf(ttl, sizeof ttl, "%ld", l->ttl_ms);
    snprintf(epoch, sizeof epoch, "%llu", (unsigned long long)l->epoch);
    argv[argc++] = "EVAL";
    argv[argc++] = storecodec_lease_script;
    argv[argc++] = "3";
    argv[argc++] = l->members_key;
    argv[argc++] = l->epoch_key;
    argv[argc++] = l->wake_key;
    argv[argc++] = l->name;
    argv[argc++] = epoch;
    argv[argc++] = ttl;
    argv[argc++] = "gone";
    argv[argc++] = "0";
    argv[argc++] = "0";
    argv[argc++] = "0";
    argv[argc++] = "release";
    if (!l->epoch || !redislink_up(l->link) ||
        redislink_command_argv(l->link, on_left, l, argc, argv, NULL) < 0)
        on_left(l->link, NULL, l);
}

uint64_t lease_epoch(const struct lease *l)
{
    return l->epoch;
}

const char *lease_name(const struct lease *l)
{
    return l->name;
}

bool lease_is_holder(const struct lease *l)
{
    return l->holder && lease_held(l);
}
