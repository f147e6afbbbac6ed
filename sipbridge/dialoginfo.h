/* Parser for RFC 4235 dialog-info documents (application/dialog-info+xml), pure: bytes in,
 * struct out, no Sofia or Redis types. Called by bridge.c for each dialog NOTIFY body and
 * by the unit tests and fuzz target. */
#ifndef OFFHOOK_DIALOGINFO_H
#define OFFHOOK_DIALOGINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "callstate.h"

#define DLGINFO_NS "urn:ietf:params:xml:ns:dialog-info"
#define DLGINFO_TYPE "application/dialog-info+xml" /* its media type */
#define DLG_MAX_DIALOGS 32  /* more in one document is rejected as hostile */
#define DLG_ID_MAX 128
#define DLG_PARTY_MAX 128

enum dlg_state { DLGS_TRYING, DLGS_PROCEEDING, DLGS_EARLY, DLGS_CONFIRMED, DLGS_TERMINATED };

struct dlg_entry {
    char id[DLG_ID_MAX];
    enum dlg_state state;
    enum call_dir dir;              /* from direction="initiator|recipient" */
    bool held;                      /* local target +sip.rendering=no (pval or pvalue) */
    bool anonymous;                 /* the other party withheld their identity */
    /* Text from the PBX, cut to fit on a UTF-8 character boundary, always valid UTF-8. */
    char remote_uri[DLG_PARTY_MAX]; /* remote identity; "" if absent or anonymous */
    char remote_name[DLG_PARTY_MAX];/* its display name; "" if absent or anonymous */
};

struct dlg_doc {
    uint32_t version;
    bool full;                      /* state="full"; else partial */
    char entity[256];
    int ndialogs;
    struct dlg_entry dialogs[DLG_MAX_DIALOGS];
};

/* Parses buf (len bytes, at most max). Returns 0, or -1 with a short static reason
 * (e.g. "not well-formed", "unknown dialog state"); out is then unspecified. */
int dlginfo_parse(const char *buf, size_t len, size_t max, struct dlg_doc *out,
                  const char **reason) __attribute__((warn_unused_result));
/* The same on a libxml2 DOM: the parser dlginfo_parse replaced (a tree per body cost
 * ~2x the CPU), kept as the reference the differential fuzz target and parsebench compare
 * it with. Same contract. */
int dlginfo_parse_dom(const char *buf, size_t len, size_t max, struct dlg_doc *out,
                      const char **reason) __attribute__((warn_unused_result));
const char *dlg_state_name(enum dlg_state s);
/* What one dialog means for its user. */
enum call_activity dlg_entry_activity(const struct dlg_entry *d);

#endif
