/* One user's change, published: its view computed once, then handed to each writer. */
#include "publisher.h"

#include <stdlib.h>
#include <string.h>

#include "jid.h"
#include "log.h"
#include "strutil.h"
#include "view.h"

struct publisher {
    const struct users *d;
    struct presence_out *po;
    struct pep *pep;
    struct vcard_out *vc;
    const struct stanza_out *out;
    bool sipbridge_alive;       /* its heartbeat is fresh: records are being kept true */
    bool stopped;               /* pub_goodbye ran: nothing more is published */
};

struct publisher *pub_new(const struct users *d, struct presence_out *po, struct pep *pep,
                          struct vcard_out *vc, const struct stanza_out *out)
{
    struct publisher *pub = xcalloc(1, sizeof *pub);

    pub->d = d;
    pub->po = po;
    pub->pep = pep;
    pub->vc = vc;
    pub->out = out;
    /* Until its heartbeat is seen: a phone shown before that shows "unknown", never what
     * Redis held when sipbridge went away. (main.c publishes nothing before the first
     * check, so a start with sipbridge up does not flap through unknown.) */
    pub->sipbridge_alive = false;
    return pub;
}

void pub_free(struct publisher *pub)
{
    free(pub);
}

void pub_sipbridge(struct publisher *pub, bool alive)
{
    pub->sipbridge_alive = alive;
}

bool pub_sipbridge_alive(const struct publisher *pub)
{
    return pub->sipbridge_alive;
}

static void current_view(const struct publisher *pub, const struct cuser *u,
                         struct user_view *v)
{
    struct user_record r;

    view_compute(view_record(u, pub->sipbridge_alive, &r), v);
}

/* Presence first: the privileged requests of the PEP writer are paced (privileged.c), and
 * a watcher's roster is what must not wait. */
void pub_user(struct publisher *pub, const struct cuser *u, bool force, int64_t event_us)
{
    struct user_view v;

    if (pub->stopped)
        return;
    current_view(pub, u, &v);
    presout_user(pub->po, u, &v, force, event_us);
    pep_user(pub->pep, u, &v, force);
    /* Only when its addresses changed (a reload) or it was never looked at. */
    vcard_user(pub->vc, u, false);
}

void pub_user_to(struct publisher *pub, const struct cuser *u, const char *to)
{
    struct user_view v;

    if (pub->stopped)
        return;
    current_view(pub, u, &v);
    presout_user_to(pub->po, u, &v, to);
}

void pub_pep_user(struct publisher *pub, const struct cuser *u)
{
    struct user_view v;

    if (pub->stopped)
        return;
    current_view(pub, u, &v);
    pep_user(pub->pep, u, &v, true);
    vcard_user(pub->vc, u, true);
}

/* Every user's presence (forced), then every user's PEP and vCard: 10,000 users' presence
 * reaches their watchers before the first of tens of thousands of privileged requests.
 * PEP only where it differs from what is known to be there: the server keeps the items
 * across our resyncs, and a new stream forgets what is known (pep_connected). */
void pub_all(struct publisher *pub)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int users = 0;

    if (pub->stopped)
        return;
    while (strmap_next(&pub->d->by_jid, &pos, &k, &v)) {
        struct user_view view;
        current_view(pub, v, &view);
        presout_user(pub->po, v, &view, true, 0);
        users++;
    }
    for (pos = 0; strmap_next(&pub->d->by_jid, &pos, &k, &v);) {
        struct user_view view;
        current_view(pub, v, &view);
        pep_user(pub->pep, v, &view, false);
        /* Only when its addresses changed (a reload) or it was never looked at. */
        vcard_user(pub->vc, v, false);
    }
    log_info("publish", "event=republished users=%d", users);
}

void pub_changed(struct publisher *pub)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(&pub->d->by_jid, &pos, &k, &v))
        pub_user(pub, v, false, 0);
}

void pub_pep_domain(struct publisher *pub, const char *domain)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;

    if (pub->stopped)
        return;
    while (strmap_next(&pub->d->by_jid, &pos, &k, &v)) {
        const struct cuser *u = v;
        struct user_view view;
        struct jid j;
        if (jid_parse(u->jid, &j) < 0 || strcmp(j.domain, domain) != 0)
            continue;
        current_view(pub, u, &view);
        pep_user(pub->pep, u, &view, true);
        vcard_user(pub->vc, u, true);
        n++;
    }
    /* The PEP writer's line: it names what the grant made it do. */
    if (n)
        log_info("pep", "event=republished domain=%s users=%d", log_q(domain), n);
}

void pub_goodbye(struct publisher *pub)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0, calls = 0;

    pub->stopped = true;
    if (!stanza_out_up(pub->out))
        return;
    /* Presence first, all of it: the PEP writer's requests are paced behind it. */
    while (strmap_next(&pub->d->by_jid, &pos, &k, &v)) {
        presout_goodbye(pub->po, v);
        n++;
    }
    /* PEP: offhook's "on the phone" emptied (or the user's own activity put back) for
     * those on the phone. The XEP-0152 addresses stay: they remain true while offhook is
     * down, and emptying them cost a read and a write per user (a stop at 10,000 users
     * waited on tens of thousands of requests, Prosody handling ~400 a second). */
    for (pos = 0; strmap_next(&pub->d->by_jid, &pos, &k, &v);) {
        struct user_view now, bye;
        current_view(pub, v, &now);
        if (!now.talking)
            continue;
        view_compute(NULL, &bye);
        bye.reachable = now.reachable;
        pep_user(pub->pep, v, &bye, false);
        calls++;
    }
    log_notice("publish", "event=goodbye users=%d on_the_phone=%d note=\"watchers see the "
                          "phones unavailable until offhook is back\"",
               n, calls);
}
