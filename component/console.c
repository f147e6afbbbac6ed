/* The component's control-socket commands (see console.h). */
#include "console.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ctlcommon.h"
#include "ctlproto.h"
#include "ctlsock.h"
#include "feed.h"
#include "jid.h"
#include "log.h"
#include "pep.h"
#include "presence_out.h"
#include "publisher.h"
#include "sbuf.h"
#include "strutil.h"
#include "users.h"
#include "view.h"
#include "watchers.h"
#include "xmpplink.h"

static struct xmppconsole_deps deps;

/* The user a JID names: the chat user or their phone contact (a resource is ignored). */
static struct cuser *find_user(const char *who)
{
    char bare[JID_MAX + 1];
    struct cuser *u;

    if (jid_to_bare(who, bare, sizeof bare) < 0)
        return NULL;
    u = users_by_jid(deps.users, bare);
    return u ? u : users_by_contact(deps.users, bare);
}

/* "dnd \"On the phone\"", "available", "unavailable \"Phone offline\"". */
static void view_text(const struct presence_view *v, char *out, size_t len)
{
    snprintf(out, len, "%s%s%s%s", v->available ? (v->show ? v->show : "available")
                                                : "unavailable",
             v->status[0] ? " \"" : "", v->status, v->status[0] ? "\"" : "");
}

static void view_json(struct ctl_call *c, const struct presence_view *v)
{
    ctl_printf(c, "{\"available\":%s,\"show\":", v->available ? "true" : "false");
    ctl_json_str(c, v->show);
    ctl_puts(c, ",\"status\":");
    ctl_json_str(c, v->status);
    ctl_puts(c, "}");
}

/* Why watchers see what they see, in words. */
static const char *shown_why(const struct cuser *u, bool alive)
{
    if (!alive)
        return "sipbridge's heartbeat in Redis is missing: every phone shows unknown until "
               "it is back";
    if (!u->have_rec)
        return "sipbridge has written no state for this user";
    return "sipbridge's record";
}

static const char *policy_text(void)
{
    const struct offhook_config *cfg = deps.users->cfg;

    return strcmp(cfg->component_allow_watchers, "list") == 0 ? "list ([component] watchers)"
                                                               : cfg->component_allow_watchers;
}

static void user_text(struct ctl_call *c, const struct cuser *u)
{
    bool alive = pub_sipbridge_alive(deps.pub);
    struct user_view v;
    struct user_record rec;
    struct presout_sent last;
    struct pep_status ps;
    char t1[32], t2[32], shown[256];
    size_t pos = 0;
    const char *w;
    void *val;
    int n;

    view_compute(view_record(u, alive, &rec), &v);
    ctl_printf(c, "user:     %s\ncontact:  %s\n", u->jid, u->contact);
    if (u->have_rec) {
        ctlcommon_ago(u->rec.since_ms, t1, sizeof t1);
        ctlcommon_ago(u->rec_at_ms, t2, sizeof t2);
        ctl_printf(c, "record:   %s (since %s; read from Redis %s)\n",
                   user_state_name(u->rec.state), t1, t2);
    } else {
        ctl_puts(c, "record:   none from sipbridge\n");
    }
    view_text(&v.presence, shown, sizeof shown);
    ctl_printf(c, "shown:    %s (%s)\n", shown, shown_why(u, alive));
    presout_last_change(deps.presout, u, &last, &n);
    if (last.at_ms) {
        view_text(&last.view, shown, sizeof shown);
        ctlcommon_ago(last.at_ms, t1, sizeof t1);
        ctl_printf(c, "last change sent: %s to %d watcher%s %s%s\n", shown, n, n == 1 ? "" : "s",
                   t1, last.owed ? " (the stream went down since: owed again)" : "");
    }
    if (!deps.users->cfg->publish_contacts)
        ctl_puts(c, "          ([component] publish has no contacts: watchers get "
                    "unavailable)\n");
    ctl_printf(c, "watchers: %zu\n", u->watchers.count);
    while (strmap_next(&u->watchers, &pos, &w, &val)) {
        presout_last_sent(deps.presout, u, w, &last);
        if (!last.at_ms) {
            ctl_printf(c, "  %-32s nothing sent yet\n", w);
            continue;
        }
        view_text(&last.view, shown, sizeof shown);
        ctlcommon_ago(last.at_ms, t1, sizeof t1);
        ctl_printf(c, "  %-32s %s, %s (%s)%s\n", w, shown, t1, last.how,
                   last.owed ? ", owed again" : "");
    }
    ctl_printf(c, "refused:  %u (allow_watchers = %s)\n", u->nrefused, policy_text());
    for (int i = 0; u->refused && i < USERS_REFUSED_MAX; i++) {
        const struct users_refusal *r = &u->refused[i];
        if (!r->watcher)
            continue;
        ctlcommon_ago(r->at_ms, t1, sizeof t1);
        ctl_printf(c, "  %-32s %s, %s%s\n", r->watcher, r->request, t1,
                   r->times > 1 ? " (and before)" : "");
    }
    pep_status(deps.pep, u, &ps);
    if (!ps.enabled)
        ctl_puts(c, "pep:      off ([component] publish has no pep)\n");
    else if (!ps.may_get || !ps.may_set)
        ctl_printf(c, "pep:      not published: %s\n",
                   !ps.advertised ? "the user's server sent no XEP-0356 <privilege/> on this "
                                    "stream"
                   : ps.may_set   ? "the user's server grants pubsub set but not get: offhook "
                                    "does not write blind over what the user published"
                                  : "the user's server grants no pubsub IQ permission "
                                    "(XEP-0356)");
    else
        ctl_puts(c, "pep:      on (pubsub get and set granted)\n");
    for (int i = 0; ps.enabled && i < 2; i++) {
        const struct pep_node_status *ns = &ps.node[i];
        if (!ns->known)
            continue;
        ctl_printf(c, "  %-8s %s%s", ns->node, ns->busy ? "request on its way"
                                       : ns->in_sync ? "as the view wants"
                                                     : "not as the view wants",
                   ns->decision ? "; said: " : "");
        if (ns->decision)
            ctl_puts(c, ns->decision);
        if (ns->covered)
            ctl_puts(c, "; covering the user's own activity for this call");
        if (ns->yielded)
            ctl_puts(c, "; the user published over it during this call");
        if (ns->answer_ms) {
            ctlcommon_ago(ns->answer_ms, t1, sizeof t1);
            ctl_printf(c, "; last %s answered %s %s%s%s", ns->answer_to_read ? "read" : "write",
                       t1, ns->result, ns->condition[0] ? ": " : "", ns->condition);
        }
        ctl_puts(c, "\n");
    }
    if (log_traced(&u->trace))
        ctl_printf(c, "trace:    on for %" PRId64 " s more\n",
                   (u->trace.until_ms - clock_mono_ms()) / 1000);
}

static void user_json(struct ctl_call *c, const struct cuser *u)
{
    bool alive = pub_sipbridge_alive(deps.pub);
    struct user_view v;
    struct user_record rec;
    struct presout_sent last;
    struct pep_status ps;
    size_t pos = 0;
    const char *w;
    void *val;
    int n, k = 0;

    view_compute(view_record(u, alive, &rec), &v);
    ctl_puts(c, "{\"user\":");
    ctl_json_str(c, u->jid);
    ctl_puts(c, ",\"contact\":");
    ctl_json_str(c, u->contact);
    ctl_puts(c, ",\"record\":");
    if (u->have_rec) {
        ctl_printf(c, "{\"state\":\"%s\",\"since_ms\":%" PRId64 ",\"read_ms\":%" PRId64 "}",
                   user_state_name(u->rec.state), u->rec.since_ms, u->rec_at_ms);
    } else {
        ctl_puts(c, "null");
    }
    ctl_printf(c, ",\"sipbridge_alive\":%s,\"shown\":", alive ? "true" : "false");
    view_json(c, &v.presence);
    ctl_puts(c, ",\"shown_why\":");
    ctl_json_str(c, shown_why(u, alive));
    ctl_printf(c, ",\"publish_contacts\":%s,\"last_change\":",
               deps.users->cfg->publish_contacts ? "true" : "false");
    presout_last_change(deps.presout, u, &last, &n);
    if (last.at_ms) {
        ctl_printf(c, "{\"at_ms\":%" PRId64 ",\"watchers\":%d,\"owed\":%s,\"presence\":",
                   last.at_ms, n, last.owed ? "true" : "false");
        view_json(c, &last.view);
        ctl_puts(c, "}");
    } else {
        ctl_puts(c, "null");
    }
    ctl_puts(c, ",\"watchers\":[");
    while (strmap_next(&u->watchers, &pos, &w, &val)) {
        presout_last_sent(deps.presout, u, w, &last);
        ctl_puts(c, k++ ? ",{\"jid\":" : "{\"jid\":");
        ctl_json_str(c, w);
        ctl_puts(c, ",\"last_sent\":");
        if (last.at_ms) {
            ctl_printf(c, "{\"at_ms\":%" PRId64 ",\"how\":\"%s\",\"owed\":%s,\"presence\":",
                       last.at_ms, last.how, last.owed ? "true" : "false");
            view_json(c, &last.view);
            ctl_puts(c, "}");
        } else {
            ctl_puts(c, "null");
        }
        ctl_puts(c, "}");
    }
    ctl_printf(c, "],\"refused_total\":%u,\"policy\":", u->nrefused);
    ctl_json_str(c, deps.users->cfg->component_allow_watchers);
    ctl_puts(c, ",\"refused\":[");
    k = 0;
    for (int i = 0; u->refused && i < USERS_REFUSED_MAX; i++) {
        const struct users_refusal *r = &u->refused[i];
        if (!r->watcher)
            continue;
        ctl_puts(c, k++ ? ",{\"jid\":" : "{\"jid\":");
        ctl_json_str(c, r->watcher);
        ctl_puts(c, ",\"request\":");
        ctl_json_str(c, r->request);
        ctl_printf(c, ",\"at_ms\":%" PRId64 ",\"times\":%u}", r->at_ms, r->times);
    }
    pep_status(deps.pep, u, &ps);
    ctl_printf(c, "],\"pep\":{\"enabled\":%s,\"advertised\":%s,\"may_get\":%s,"
                  "\"may_set\":%s,\"nodes\":[",
               ps.enabled ? "true" : "false", ps.advertised ? "true" : "false",
               ps.may_get ? "true" : "false", ps.may_set ? "true" : "false");
    k = 0;
    for (int i = 0; i < 2; i++) {
        const struct pep_node_status *ns = &ps.node[i];
        if (!ns->known)
            continue;
        ctl_printf(c, "%s{\"node\":\"%s\",\"in_sync\":%s,\"busy\":%s,\"decision\":",
                   k++ ? "," : "", ns->node, ns->in_sync ? "true" : "false",
                   ns->busy ? "true" : "false");
        ctl_json_str(c, ns->decision);
        ctl_puts(c, ",\"model\":");
        ctl_json_str(c, ns->model);
        ctl_printf(c, ",\"covered\":%s,\"yielded\":%s,\"answer_ms\":%" PRId64
                      ",\"answer_to\":\"%s\",\"result\":",
                   ns->covered ? "true" : "false", ns->yielded ? "true" : "false",
                   ns->answer_ms, ns->answer_to_read ? "read" : "write");
        ctl_json_str(c, ns->result[0] ? ns->result : NULL);
        ctl_puts(c, ",\"condition\":");
        ctl_json_str(c, ns->condition[0] ? ns->condition : NULL);
        ctl_puts(c, "}");
    }
    ctl_printf(c, "]},\"traced\":%s}\n", log_traced(&u->trace) ? "true" : "false");
}

static enum ctl_result run_user(void *arg, struct ctl_call *c)
{
    const char *jid = NULL;
    struct cuser *u;
    int npos;

    if (ctl_parse_args(c, NULL, 0, &jid, 1, &npos) < 0)
        return CTL_DONE;
    if (!npos) {
        ctl_fail(c, CTL_ERR_USAGE, "user JID");
        return CTL_DONE;
    }
    u = find_user(jid);
    if (!u)
        ctl_fail(c, CTL_ERR_NOTFOUND, "%s is not a configured user or phone contact", jid);
    else if (ctl_json(c))
        user_json(c, u);
    else
        user_text(c, u);
    return CTL_DONE;
}

static int trace(void *arg, const char *who, const struct log_trace *t)
{
    struct cuser *u = find_user(who);

    if (!u)
        return 0;
    u->trace = *t;
    return 1;
}

static void status(void *arg, struct ctl_call *c)
{
    struct sbuf why;
    bool ready;

    sbuf_init(&why);
    ready = deps.ready(deps.arg, &why);
    if (ctl_json(c)) {
        ctl_printf(c, ",\"ready\":%s,\"not_ready_because\":", ready ? "true" : "false");
        ctl_json_str(c, ready ? NULL : why.data);
        ctl_printf(c, ",\"users\":%zu,\"xmpp\":\"%s\",\"state_loaded\":%s,"
                      "\"watchers_loaded\":%s,\"sipbridge_alive\":%s,\"stanzas_sent\":%lu",
                   deps.users->by_jid.count, xmpplink_up(deps.xmpp) ? "up" : "down",
                   feed_synced(deps.feed) ? "true" : "false",
                   watchers_up(deps.wstore) ? "true" : "false",
                   pub_sipbridge_alive(deps.pub) ? "true" : "false", xmpplink_sent(deps.xmpp));
    } else {
        for (char *p = why.data; p && *p; p++) {
            if (*p == '\n')
                *p = p[1] ? ';' : '\0';
        }
        ctl_printf(c, "ready:       %s%s%s\n", ready ? "yes" : "no (", ready ? "" : why.data,
                   ready ? "" : ")");
        ctl_printf(c, "users:       %zu\n", deps.users->by_jid.count);
        ctl_printf(c, "xmpp:        %s (%lu stanzas sent)\n",
                   xmpplink_up(deps.xmpp) ? "up" : "down", xmpplink_sent(deps.xmpp));
        ctl_printf(c, "redis:       state %s, watchers %s\n",
                   feed_synced(deps.feed) ? "loaded" : "not loaded",
                   watchers_up(deps.wstore) ? "loaded" : "not loaded");
        ctl_printf(c, "sipbridge:   %s\n", pub_sipbridge_alive(deps.pub)
                                               ? "alive (its heartbeat or events are fresh)"
                                               : "heartbeat missing: phones show unknown");
    }
    sbuf_free(&why);
}

void xmppconsole_add(struct ctlsock *s, const struct xmppconsole_deps *d)
{
    deps = *d;
    ctlcommon_add(s, &(struct ctlcommon_hooks){.daemon = "component",
                                               .base = d->base,
                                               .status = status,
                                               .trace = trace,
                                               .trace_who = "JID",
                                               .arg = d->arg});
    ctlsock_add(s, &(struct ctl_command){
                       .name = "user", .usage = "JID",
                       .help = "what a user's watchers are shown and were sent; refusals; PEP",
                       .run = run_user});
}
