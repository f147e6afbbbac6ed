/* XEP-0356 for the component's writers: which privileges each users' server granted it
 * (learned from the server's <privilege/> message, again in each stream), and privileged
 * IQs sent into a user's own account (wrapped for the IQ permission, plain roster IQs for
 * the roster permission), each answer matched to the request actually sent, by its id
 * (random per process) and its sender (the user's bare JID or the user's server); any
 * other IQ answer is counted and ignored. Called by router.c (<privilege/> messages, IQ
 * answers), the writers pep.c, vcard_out.c and roster.c (requests) and main.c (the
 * stream's ups and downs). */
#ifndef OFFHOOK_PRIVILEGED_H
#define OFFHOOK_PRIVILEGED_H

/* Ownership: pointers given to a function are only read during the call (strings are
 * copied if kept), unless its comment says otherwise; "borrowed" means the caller keeps
 * the object alive for as long as stated. */

#include <stdbool.h>

#include <strophe.h>

#include "stanza.h"
#include "users.h"

struct event_base;
struct privileged;

/* The namespaces whose IQ permission offhook uses (XEP-0356 v2 <namespace/>). */
enum priv_ns {
    PRIV_PUBSUB, /* http://jabber.org/protocol/pubsub: the user's PEP nodes */
    PRIV_VCARD,  /* vcard-temp: the user's own vCard */
    PRIV_NS_MAX
};
enum priv_type { PRIV_GET, PRIV_SET };

/* News for the owner (main.c), wired at priv_new; domain is valid only during the call. */
struct privileged_ops {
    /* domain's server advertised its grants (a <privilege/>, once or again): every user
     * there should be brought up to date. */
    void (*on_granted)(void *arg, const char *domain);
    /* domain's server sent no <privilege/> within a few seconds of the stream's start. */
    void (*on_missing)(void *arg, const char *domain);
    /* user (a bare JID) was left alone after its server refused to act in its account,
     * and that time is over: it should be published again, forced (optional). */
    void (*on_due)(void *arg, const char *user);
};

/* What became of a request. */
enum priv_result {
    PRIV_OK,      /* the wrapped IQ got a result */
    PRIV_ERROR,   /* the wrapped IQ, or the privileged one, got an error */
    PRIV_TIMEOUT, /* no answer in time */
    PRIV_LOST     /* the stream went down before the answer */
};

struct priv_answer {
    enum priv_result result;
    const char *condition;      /* PRIV_ERROR: the RFC 6120 condition element's name */
    const char *app_condition;  /* PRIV_ERROR: an application condition's name (XEP-0060's
                                   precondition-not-met...) or NULL */
    xmpp_stanza_t *payload;     /* PRIV_OK: the result's first child element (<pubsub/>,
                                   <vCard/>), or NULL; only read, valid during the callback */
    bool refused;               /* PRIV_ERROR: the server refused the privileged IQ itself
                                   (no such account, most often): the user is left alone a
                                   while and the round's refusals are logged in one line
                                   here, so the caller need not log it */
};

/* Called once per request sent; user (its bare JID) and a are valid only during the call,
 * which may send new requests. */
typedef void (*priv_done_fn)(void *arg, const char *user, const struct priv_answer *a);

/* base, d and out are borrowed and must outlive it; ops is copied. */
struct privileged *priv_new(struct event_base *base, const struct users *d,
                            const struct stanza_out *out, const struct privileged_ops *ops,
                            void *arg);
/* Pending requests are dropped without their callbacks. */
void priv_free(struct privileged *p);
void priv_register_metrics(void);

/* A new component stream: grants are forgotten until the server advertises them again. */
void priv_connected(struct privileged *p);
/* The stream went down: every pending request ends PRIV_LOST. */
void priv_link_down(struct privileged *p);
/* The users changed (a reload, the directory): a grant advertised before its domain had
 * users is announced now (on_granted); a new domain without one is said (on_missing) if
 * the wait after connecting is over. */
void priv_users_changed(struct privileged *p);

/* A <message/> from a server domain: true if it was a <privilege/> (consumed). */
bool priv_on_message(struct privileged *p, xmpp_stanza_t *msg, const char *from_domain);
/* An IQ result or error: true if it answered a request of ours; false if it answered
 * nothing we sent, or came from someone else than the request's user or server (counted
 * in offhook_privileged_answers_ignored_total). */
bool priv_on_iq(struct privileged *p, xmpp_stanza_t *iq);

/* Whether domain's server advertised a <privilege/> in this stream. */
bool priv_advertised(const struct privileged *p, const char *domain);
/* Whether domain's server granted the IQ permission of type for ns in this stream. */
bool priv_may(const struct privileged *p, const char *domain, enum priv_ns ns,
              enum priv_type type);
/* Whether domain's server granted the roster permission of type (get, set; "both" is
 * both) in this stream. */
bool priv_may_roster(const struct privileged *p, const char *domain, enum priv_type type);

/* Sends <iq type=get|set to=user><privileged_iq><iq xmlns=jabber:client>payload</iq>...
 * into user's account (a configured user's bare JID). Takes ownership of payload (its
 * element's namespace names the permission used). Returns 0 once sent: done(arg, ...)
 * is then called exactly once, unless p is freed first (the request may wait for its
 * turn first: see priv_pending). Returns -1 without sending (and without calling done)
 * when the stream is down, the permission is not granted, too many requests are pending,
 * or user's server refused to act in the account lately (left alone a while). */
int priv_request(struct privileged *p, const char *user, enum priv_type type,
                 xmpp_stanza_t *payload, priv_done_fn done, void *arg);
/* The roster permission's request (XEP-0356 4.2): <iq type=get|set to=user> with payload
 * (a jabber:iq:roster <query/>, taken) as its child, not wrapped. Returns, waits its turn
 * and answers as priv_request; -1 also when the roster permission of type is not granted. */
int priv_roster_request(struct privileged *p, const char *user, enum priv_type type,
                        xmpp_stanza_t *payload, priv_done_fn done, void *arg);
/* Requests not yet answered: sent, or waiting for their turn (at most 32 are in flight;
 * writes go before reads). */
unsigned priv_pending(const struct privileged *p);
/* Every request still waiting for its turn ends PRIV_LOST (a clean stop: what was still
 * to be said is moot; the goodbye follows). Those in flight keep their answers coming. */
void priv_drop_waiting(struct privileged *p);
/* bare (a user's bare JID) showed its account exists: it probed or subscribed to a phone
 * contact. Returns true if requests into it had been refused: the caller publishes it
 * again. */
bool priv_account_seen(struct privileged *p, const char *bare);
/* Calls fn(arg) once no request is pending: at once if none is, else after the last
 * answer (or its timeout, or the stream's end). One waiter at a time; a later call
 * replaces it. For a clean stop that lets the last writes be answered. */
void priv_when_idle(struct privileged *p, void (*fn)(void *arg), void *arg);

#endif
