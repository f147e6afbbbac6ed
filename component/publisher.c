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
    view_compute(view_record(u, pub->sipbridge_alive), v);
}

void pub_user(struct publisher *pub, const struct cuser *u, bool force, int64_t event_us)
{
    struct user_view v;

    if (pub->stopped)
        return;
    current_view(pub, u, &v);
    pep_user(pub->pep, u, &v, force);
    presout_user(pub->po, u, &v, force, event_us);
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

void pub_all(struct publisher *pub)
{
    size_t pos = 0;
    const char *k;
    void *v;
    int users = 0;

    if (pub->stopped)
        return;
    while (strmap_next(&pub->d->by_jid, &pos, &k, &v)) {
        pub_user(pub, v, true, 0);
        users++;
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
    struct user_view none;
    size_t pos = 0;
    const char *k;
    void *v;
    int n = 0;

    pub->stopped = true;
    if (!stanza_out_up(pub->out))
        return;
    view_compute(NULL, &none); /* nothing at all: an empty activity, no addresses */
    while (strmap_next(&pub->d->by_jid, &pos, &k, &v)) {
        const struct cuser *u = v;
        presout_goodbye(pub->po, u);
        pep_user(pub->pep, u, &none, false);
        n++;
    }
    log_notice("publish", "event=goodbye users=%d note=\"watchers see the phones unavailable "
                          "until offhook is back\"", n);
}
