/* sipbridge's control-socket commands (see console.h). */
#include "console.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "bridge.h"
#include "config.h"
#include "ctlcommon.h"
#include "ctlproto.h"
#include "ctlsock.h"
#include "daemon.h"
#include "dialoginfo.h"
#include "log.h"
#include "sbuf.h"
#include "store.h"
#include "strutil.h"
#include "subscription.h"

#define USERS_PER_TURN 2048 /* "subscriptions" looks at this many users per loop turn */

static struct sipconsole_deps deps;

/* ---- one subscription, as text or JSON ----------------------------------------------- */

/* "403 Forbidden", "200", or "-". */
static void answer_text(const struct subs_info *si, char *out, size_t len)
{
    if (!si->last_status)
        snprintf(out, len, "-");
    else
        snprintf(out, len, "%d%s%.40s", si->last_status, si->last_phrase[0] ? " " : "",
                 si->last_phrase);
}

static void json_sub_fields(struct ctl_call *c, const struct subs_info *si)
{
    ctl_puts(c, "\"state\":");
    ctl_json_str(c, sub_state_name(si->state));
    ctl_printf(c, ",\"since_ms\":%" PRId64 ",\"last_status\":%d,\"last_phrase\":", si->since_ms,
               si->last_status);
    ctl_json_str(c, si->last_phrase);
    ctl_printf(c, ",\"last_answer_ms\":%" PRId64 ",\"last_notify_ms\":%" PRId64
                  ",\"terminated_reason\":",
               si->last_answer_ms, si->last_notify_ms);
    ctl_json_str(c, si->end_reason[0] ? si->end_reason : NULL);
    ctl_puts(c, ",\"down_cause\":");
    ctl_json_str(c, si->down_cause[0] ? si->down_cause : NULL);
    ctl_printf(c, ",\"next_try_ms\":%" PRId64 ",\"granted_s\":%ld,\"failures\":%u", si->next_try_ms,
               si->granted_s, si->failures);
}

/* One row of "subscriptions". */
static void put_row(struct ctl_call *c, bool *first, const char *package, const char *aor,
                    const char *user, const struct subs_info *si, bool via_list,
                    const char *problem)
{
    if (ctl_json(c)) {
        ctl_puts(c, *first ? "{\"package\":" : ",{\"package\":");
        ctl_json_str(c, package);
        ctl_puts(c, ",\"aor\":");
        ctl_json_str(c, aor);
        ctl_puts(c, ",\"user\":");
        ctl_json_str(c, user);
        ctl_printf(c, ",\"via_list\":%s,\"list_problem\":", via_list ? "true" : "false");
        ctl_json_str(c, problem);
        ctl_puts(c, ",");
        if (si)
            json_sub_fields(c, si);
        else
            ctl_puts(c, "\"state\":\"none\"");
        ctl_puts(c, "}");
    } else {
        char answer[64], since[32], heard[32], next[32], state[32];
        snprintf(state, sizeof state, "%s%s", si ? sub_state_name(si->state) : "none",
                 via_list ? "(list)" : "");
        answer_text(si ? si : &(struct subs_info){0}, answer, sizeof answer);
        ctlcommon_ago(si ? si->since_ms : 0, since, sizeof since);
        ctlcommon_ago(si ? si->last_notify_ms : 0, heard, sizeof heard);
        if (si && si->next_try_ms)
            ctlcommon_ago(si->next_try_ms, next, sizeof next);
        else
            snprintf(next, sizeof next, "-");
        ctl_printf(c, "%-16s %-8s %-40s %-28s %-24s %-12s %-12s %s%s%s\n", state, package, aor,
                   user, answer, since, heard, next, problem ? "  list says: " : "",
                   problem ? problem : "");
    }
    *first = false;
}

/* ---- subscriptions -------------------------------------------------------------------- */

struct subs_cursor {
    unsigned generation;              /* of the configuration being walked */
    size_t next_user;
    bool list_done, first, cut;
    int rows;
    char state[16];                   /* filter, "" for all */
    char aor[CFG_MAX_LINE];           /* filter */
    char user[CFG_MAX_LINE];          /* filter */
};

static const char *const state_filters[] = {"queued", "subscribing", "pending", "active",
                                            "backoff", "down", "failed", NULL};

static bool state_matches(const struct subs_cursor *k, const struct subs_info *si)
{
    bool up = si->state == SUB_ACTIVE || si->state == SUB_PENDING;

    if (!k->state[0])
        return true;
    if (strcmp(k->state, "down") == 0)
        return !up;
    if (strcmp(k->state, "failed") == 0)
        return !up && (!strcmp(si->down_cause, "error_response") ||
                       !strcmp(si->down_cause, "timeout"));
    return strcmp(k->state, sub_state_name(si->state)) == 0;
}

static enum ctl_result run_subscriptions(void *arg, struct ctl_call *c)
{
    struct subs_cursor *k = ctl_state(c);
    const struct offhook_config *cfg = daemon_config();
    int examined = 0;

    if (ctl_first(c)) {
        struct ctl_opt opts[] = {{.name = "--state", .has_value = true},
                                 {.name = "--aor", .has_value = true},
                                 {.name = "--user", .has_value = true}};
        if (ctl_parse_args(c, opts, 3, NULL, 0, NULL) < 0)
            return CTL_DONE;
        if (opts[0].given) {
            int i;
            for (i = 0; state_filters[i] && strcmp(state_filters[i], opts[0].value); i++)
                ;
            if (!state_filters[i]) {
                ctl_fail(c, CTL_ERR_USAGE, "--state is one of queued, subscribing, pending, "
                                           "active, backoff, down (not active or pending), "
                                           "failed (down after an error or a timeout)");
                return CTL_DONE;
            }
        }
        k = xcalloc(1, sizeof *k);
        ctl_set_state(c, k, free);
        k->generation = daemon_config_generation();
        k->first = true;
        str_copy(k->state, sizeof k->state, opts[0].value ? opts[0].value : "");
        str_copy(k->aor, sizeof k->aor, opts[1].value ? opts[1].value : "");
        str_copy(k->user, sizeof k->user, opts[2].value ? opts[2].value : "");
        if (ctl_json(c))
            ctl_puts(c, "{\"live\":true,\"subscriptions\":[");
        else
            ctl_printf(c, "%-16s %-8s %-40s %-28s %-24s %-12s %-12s %s\n", "STATE", "PACKAGE",
                       "AOR", "USER", "LAST ANSWER", "SINCE", "LAST NOTIFY", "NEXT TRY");
    }
    if (!k->list_done) {
        const struct subscription *ls = bridge_list(deps.bridge);
        k->list_done = true;
        if (ls && !k->user[0]) {
            struct subs_info si;
            subs_get_info(ls, &si);
            if (state_matches(k, &si) && (!k->aor[0] || !strcasecmp(k->aor, si.aor))) {
                put_row(c, &k->first, "dialog", si.aor, "(resource list)", &si, false, NULL);
                k->rows++;
            }
        }
    }
    /* A reload replaced the users: what is left to walk is another list. */
    if (k->generation != daemon_config_generation()) {
        k->cut = true;
        k->next_user = cfg->nusers;
    }
    while (k->next_user < cfg->nusers && examined < USERS_PER_TURN && !ctl_full(c)) {
        const struct cfg_user *cu = &cfg->users[k->next_user++];
        struct bridge_user_view v;
        examined++;
        if (k->user[0] && strcmp(k->user, cu->jid) != 0)
            continue;
        if (!bridge_user_view(deps.bridge, cu->jid, &v))
            continue;
        for (int i = 0; i < v.nsrc; i++) {
            const struct bridge_source_view *sv = &v.src[i];
            struct subs_info si;
            if (k->aor[0] && strcasecmp(k->aor, sv->aor) != 0)
                continue;
            if (sv->sub)
                subs_get_info(sv->sub, &si);
            if (sv->sub ? !state_matches(k, &si) : k->state[0] != '\0')
                continue;
            put_row(c, &k->first, sv->package, sv->aor, cu->jid, sv->sub ? &si : NULL,
                    sv->via_list, sv->list_problem);
            k->rows++;
        }
    }
    if (k->next_user < cfg->nusers)
        return CTL_MORE;
    if (ctl_json(c))
        ctl_printf(c, "],\"count\":%d,\"cut_short\":%s}\n", k->rows, k->cut ? "true" : "false");
    else
        ctl_printf(c, "%d subscription%s%s\n", k->rows, k->rows == 1 ? "" : "s",
                   k->cut ? "; cut short: the configuration was reloaded meanwhile" : "");
    return CTL_DONE;
}

/* ---- user ------------------------------------------------------------------------------ */

/* " incoming", " outgoing" or "" (a PBX that does not say: pbxsim, some Kamailios). */
static const char *dir_word(enum call_dir d)
{
    return d == DIR_INCOMING ? " incoming" : d == DIR_OUTGOING ? " outgoing" : "";
}

/* Why the user shows what combine.c made of their sources, in words (and its kind). */
static const char *why_text(const struct bridge_user_view *v, char *out, size_t len)
{
    const struct combine_view *now = &v->now;
    size_t used = 0;

    out[0] = '\0';
    if (now->source >= 0) {
        const struct bridge_source_view *s = &v->src[now->source];
        if (now->dialog)
            snprintf(out, len, "dialog %.64s is %s%s%s, on %s's dialog events",
                     now->dialog->id, dlg_state_name(now->dialog->state),
                     dir_word(now->dialog->dir), now->dialog->held ? ", held" : "", s->aor);
        else
            snprintf(out, len, "%s's PIDF says on-the-phone (no dialog events subscribed)",
                     s->aor);
        return "call";
    }
    switch (now->state) {
    case US_UNKNOWN:
        snprintf(out, len, "nothing heard from any source yet (or what they said was void: "
                           "subscriptions down longer than [sip] stale_after)");
        return "unknown";
    case US_OFFLINE:
    case US_DND:
        for (int i = 0; i < v->nsrc && used + 1 < len; i++) {
            const struct combine_source *s = v->src[i].said;
            int w = 0;
            if (!s->heard || v->src[i].said->pkg == COMBINE_DIALOG)
                continue;
            if (now->state == US_OFFLINE && s->reach == REACH_OFFLINE)
                w = snprintf(out + used, len - used, "%s%s %s", used ? "; " : "",
                             s->pkg == COMBINE_REG ? "registration ended:" : "PIDF closed:",
                             v->src[i].aor);
            else if (now->state == US_DND && s->dnd)
                w = snprintf(out + used, len - used, "%sdo not disturb in PIDF: %s",
                             used ? "; " : "", v->src[i].aor);
            if (w < 0 || (size_t)w >= len - used)
                break;
            used += (size_t)w;
        }
        if (now->state == US_OFFLINE) {
            char tail[64];
            snprintf(tail, sizeof tail, "; no call, no phone reachable");
            if (used + strlen(tail) < len)
                strcat(out, tail);
        }
        return now->state == US_OFFLINE ? "offline" : "dnd";
    default:
        snprintf(out, len, "no call%s", now->reach == REACH_ONLINE ? "; a phone is reachable"
                                        : now->reach == REACH_UNKNOWN
                                            ? "; reachability unknown (no presence or reg "
                                              "subscribed, or nothing heard)"
                                            : "");
        return "idle";
    }
}

static void dialogs_json(struct ctl_call *c, const struct merge_source *m)
{
    ctl_puts(c, "[");
    for (int i = 0; i < m->ndialogs; i++) {
        const struct merge_dialog *d = &m->dialogs[i];
        ctl_puts(c, i ? ",{\"id\":" : "{\"id\":");
        ctl_json_str(c, d->id);
        ctl_printf(c, ",\"state\":\"%s\",\"direction\":\"%s\",\"held\":%s}",
                   dlg_state_name(d->state), call_dir_name(d->dir), d->held ? "true" : "false");
    }
    ctl_puts(c, "]");
}

static void said_text(const struct bridge_source_view *sv, char *out, size_t len)
{
    const struct combine_source *s = sv->said;
    size_t used;

    if (!s->heard && !s->dlg.ndialogs) {
        snprintf(out, len, "nothing yet");
        return;
    }
    if (s->pkg == COMBINE_DIALOG) {
        used = (size_t)snprintf(out, len, "%d dialog%s", s->dlg.ndialogs,
                                s->dlg.ndialogs == 1 ? "" : "s");
        for (int i = 0; i < s->dlg.ndialogs && used + 1 < len; i++) {
            const struct merge_dialog *d = &s->dlg.dialogs[i];
            int w = snprintf(out + used, len - used, "%s%.40s %s%s%s", i ? ", " : ": ", d->id,
                             dlg_state_name(d->state), dir_word(d->dir), d->held ? " held" : "");
            if (w < 0 || (size_t)w >= len - used)
                break;
            used += (size_t)w;
        }
        if (s->dlg.ver.have)
            snprintf(out + strlen(out), len - strlen(out), " (version %u)", s->dlg.ver.last);
    } else if (s->pkg == COMBINE_PRESENCE) {
        snprintf(out, len, "%s%s%s", s->reach == REACH_ONLINE ? "open" : s->reach == REACH_OFFLINE
                                                                   ? "closed"
                                                                   : "no basic status",
                 s->dnd ? ", do not disturb" : "", s->on_phone ? ", on the phone" : "");
    } else {
        snprintf(out, len, "%s", s->reach == REACH_ONLINE ? "registered"
                                 : s->reach == REACH_OFFLINE ? "not registered"
                                                             : "no contact");
    }
}

static void user_text(struct ctl_call *c, const struct bridge_user_view *v)
{
    char why[1024], t1[32], t2[32];
    const char *kind = why_text(v, why, sizeof why);

    (void)kind;
    ctl_printf(c, "user:     %s\n", v->jid);
    if (v->stored) {
        ctlcommon_ago(v->rec.since_ms, t1, sizeof t1);
        ctl_printf(c, "state:    %s (since %s%s%s; phone %s%s)\n",
                   user_state_name(v->rec.state), t1, v->rec.dir != DIR_NONE ? ";" : "",
                   dir_word(v->rec.dir), phone_reach_name(v->rec.reach),
                   v->rec.dnd ? "; DND" : "");
    } else {
        ctl_printf(c, "state:    none written yet (unknown to watchers)\n");
    }
    if (v->has_pending)
        ctl_printf(c, "          %s waits to be written ([sip] coalesce_ms)\n",
                   user_state_name(v->pending.state));
    ctl_printf(c, "why:      %s\n", why);
    ctl_printf(c, "sources:  %d\n", v->nsrc);
    for (int i = 0; i < v->nsrc; i++) {
        const struct bridge_source_view *sv = &v->src[i];
        char answer[64], said[512];
        struct subs_info si;

        said_text(sv, said, sizeof said);
        ctl_printf(c, "  %-8s %s%s%s\n", sv->package, sv->aor,
                   sv->via_list ? " (via the resource list)" : "",
                   v->now.source == i ? "   <- decides the state" : "");
        if (!sv->sub) {
            ctl_puts(c, "           subscription: none yet\n");
        } else {
            subs_get_info(sv->sub, &si);
            answer_text(&si, answer, sizeof answer);
            ctlcommon_ago(si.since_ms, t1, sizeof t1);
            ctl_printf(c, "           subscription: %s since %s; last answer %s",
                       sub_state_name(si.state), t1, answer);
            if (si.last_answer_ms) {
                ctlcommon_ago(si.last_answer_ms, t2, sizeof t2);
                ctl_printf(c, " (%s)", t2);
            }
            ctl_puts(c, "\n");
            ctlcommon_ago(si.last_notify_ms, t1, sizeof t1);
            ctl_printf(c, "           last NOTIFY: %s", t1);
            if (si.end_reason[0])
                ctl_printf(c, "; last ended by the notifier: %s", si.end_reason);
            if (si.state != SUB_ACTIVE && si.state != SUB_PENDING && si.down_cause[0])
                ctl_printf(c, "; down because: %s", si.down_cause);
            if (si.next_try_ms) {
                ctlcommon_ago(si.next_try_ms, t2, sizeof t2);
                ctl_printf(c, "; next try %s (%u failure%s)", t2, si.failures,
                           si.failures == 1 ? "" : "s");
            }
            ctl_puts(c, "\n");
        }
        if (sv->list_problem)
            ctl_printf(c, "           the resource list says: %s\n", sv->list_problem);
        if (sv->body_error) {
            ctlcommon_ago(sv->body_error_ms, t1, sizeof t1);
            ctl_printf(c, "           last body rejected %s: %s\n", t1, sv->body_error);
        }
        ctl_printf(c, "           said: %s\n", said);
    }
    if (log_traced(&v->trace))
        ctl_printf(c, "trace:    on for %" PRId64 " s more\n",
                   (v->trace.until_ms - clock_mono_ms()) / 1000);
}

static void user_json(struct ctl_call *c, const struct bridge_user_view *v)
{
    char why[1024];
    const char *kind = why_text(v, why, sizeof why);

    ctl_puts(c, "{\"user\":");
    ctl_json_str(c, v->jid);
    ctl_puts(c, ",\"state\":");
    ctl_json_str(c, v->stored ? user_state_name(v->rec.state) : NULL);
    if (v->stored) {
        ctl_printf(c, ",\"direction\":\"%s\",\"reach\":\"%s\",\"dnd\":%s,\"since_ms\":%" PRId64,
                   call_dir_name(v->rec.dir), phone_reach_name(v->rec.reach),
                   v->rec.dnd ? "true" : "false", v->rec.since_ms);
    }
    ctl_puts(c, ",\"pending_state\":");
    ctl_json_str(c, v->has_pending ? user_state_name(v->pending.state) : NULL);
    ctl_puts(c, ",\"combined_now\":");
    ctl_json_str(c, user_state_name(v->now.state));
    ctl_printf(c, ",\"why\":{\"kind\":\"%s\",\"text\":", kind);
    ctl_json_str(c, why);
    ctl_printf(c, ",\"source\":%d,\"dialog\":", v->now.source);
    ctl_json_str(c, v->now.dialog ? v->now.dialog->id : NULL);
    ctl_puts(c, "},\"sources\":[");
    for (int i = 0; i < v->nsrc; i++) {
        const struct bridge_source_view *sv = &v->src[i];
        const struct combine_source *s = sv->said;
        struct subs_info si;

        ctl_puts(c, i ? ",{\"package\":" : "{\"package\":");
        ctl_json_str(c, sv->package);
        ctl_puts(c, ",\"aor\":");
        ctl_json_str(c, sv->aor);
        ctl_printf(c, ",\"via_list\":%s,\"list_problem\":", sv->via_list ? "true" : "false");
        ctl_json_str(c, sv->list_problem);
        ctl_puts(c, ",\"subscription\":");
        if (sv->sub) {
            subs_get_info(sv->sub, &si);
            ctl_puts(c, "{");
            json_sub_fields(c, &si);
            ctl_puts(c, "}");
        } else {
            ctl_puts(c, "null");
        }
        ctl_printf(c, ",\"heard\":%s,\"reach\":\"%s\",\"dnd\":%s,\"on_phone\":%s,\"dialogs\":",
                   s->heard ? "true" : "false", phone_reach_name(s->reach),
                   s->dnd ? "true" : "false", s->on_phone ? "true" : "false");
        dialogs_json(c, &s->dlg);
        ctl_puts(c, ",\"body_error\":");
        ctl_json_str(c, sv->body_error);
        ctl_printf(c, ",\"body_error_ms\":%" PRId64 "}", sv->body_error_ms);
    }
    ctl_printf(c, "],\"traced\":%s}\n", log_traced(&v->trace) ? "true" : "false");
}

static enum ctl_result run_user(void *arg, struct ctl_call *c)
{
    struct bridge_user_view *v;
    const char *jid = NULL;
    bool held;
    int npos;

    if (ctl_parse_args(c, NULL, 0, &jid, 1, &npos) < 0)
        return CTL_DONE;
    if (!npos) {
        ctl_fail(c, CTL_ERR_USAGE, "user JID");
        return CTL_DONE;
    }
    v = xmalloc(sizeof *v);
    held = bridge_user_view(deps.bridge, jid, v);
    if (!held && config_user_by_jid(daemon_config(), jid))
        /* Several sipbridges share the users: this one holds only its share. */
        ctl_fail(c, CTL_ERR_NOTFOUND, "%s is another sipbridge's ('offhookctl cluster %s' "
                                      "names it)", jid, jid);
    else if (!held)
        ctl_fail(c, CTL_ERR_NOTFOUND, "%s is not a configured user", jid);
    else if (ctl_json(c))
        user_json(c, v);
    else
        user_text(c, v);
    free(v);
    return CTL_DONE;
}

/* ---- status (sipbridge's part) --------------------------------------------------------- */

static void status(void *arg, struct ctl_call *c)
{
    struct subs_mgr *m = bridge_subs(deps.bridge);
    struct sbuf why;
    bool ready;
    sbuf_init(&why);
    ready = deps.ready(deps.arg, &why);
    if (ctl_json(c)) {
        ctl_printf(c, ",\"ready\":%s,\"not_ready_because\":", ready ? "true" : "false");
        ctl_json_str(c, ready ? NULL : why.data);
        ctl_printf(c, ",\"users\":%d,\"subscriptions\":{", bridge_user_count(deps.bridge));
        for (int s = 0; s < SUB__COUNT; s++)
            ctl_printf(c, "%s\"%s\":%d", s ? "," : "", sub_state_name((enum sub_state)s),
                       subs_mgr_count(m, (enum sub_state)s));
        ctl_printf(c, "},\"redis\":\"%s\",\"pending_writes\":%d,\"resource_list\":",
                   store_up(deps.store) ? "up" : "down", store_pending(deps.store));
        ctl_json_str(c, bridge_list_uri(deps.bridge));
    } else {
        for (char *p = why.data; p && *p; p++) {
            if (*p == '\n')
                *p = p[1] ? ';' : '\0';
        }
        ctl_printf(c, "ready:       %s%s%s\n", ready ? "yes" : "no (", ready ? "" : why.data,
                   ready ? "" : ")");
        ctl_printf(c, "users:       %d\n", bridge_user_count(deps.bridge));
        ctl_puts(c, "subscriptions:");
        for (int s = 0; s < SUB__COUNT; s++)
            ctl_printf(c, " %s=%d", sub_state_name((enum sub_state)s),
                       subs_mgr_count(m, (enum sub_state)s));
        ctl_printf(c, "\nredis:       %s (%d users' state waiting to be written)\n",
                   store_up(deps.store) ? "up" : "down", store_pending(deps.store));
        if (bridge_list_uri(deps.bridge))
            ctl_printf(c, "list:        %s\n", bridge_list_uri(deps.bridge));
    }
    sbuf_free(&why);
}

static int trace(void *arg, const char *who, const struct log_trace *t)
{
    return bridge_trace(deps.bridge, who, t);
}

void sipconsole_add(struct ctlsock *s, const struct sipconsole_deps *d)
{
    deps = *d;
    ctlcommon_add(s, &(struct ctlcommon_hooks){.daemon = "sipbridge",
                                               .base = d->base,
                                               .on_log_level = d->on_log_level,
                                               .status = status,
                                               .trace = trace,
                                               .trace_who = "JID|AOR",
                                               .arg = d->arg});
    ctlsock_add(s, &(struct ctl_command){
                       .name = "subscriptions",
                       .usage = "[--state STATE] [--aor AOR] [--user JID]",
                       .help = "each subscription: state, last answer, last NOTIFY, next try",
                       .run = run_subscriptions});
    ctlsock_add(s, &(struct ctl_command){.name = "user", .usage = "JID",
                                         .help = "a user's state, what decided it, each source",
                                         .run = run_user});
}
