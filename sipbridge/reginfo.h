/* Parser for RFC 3680 registration documents (application/reginfo+xml), pure. Tells
 * whether each AOR has a live registration. Called by bridge.c for Event: reg bodies. */
#ifndef OFFHOOK_REGINFO_H
#define OFFHOOK_REGINFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "callstate.h"

#define REGINFO_NS "urn:ietf:params:xml:ns:reginfo"
#define REGINFO_TYPE "application/reginfo+xml" /* its media type */
#define REG_MAX_REGS 16

enum reg_state { REG_INIT, REG_ACTIVE, REG_TERMINATED };

struct reg_entry {
    char aor[256];
    char id[64];
    enum reg_state state;
    int active_contacts;   /* active contacts listed (a partial document lists changes only) */
};

struct reg_doc {
    uint32_t version;
    bool full;
    int nregs;
    struct reg_entry regs[REG_MAX_REGS];
};

int reginfo_parse(const char *buf, size_t len, size_t max, struct reg_doc *out,
                  const char **reason) __attribute__((warn_unused_result));
/* A registration counts as reachable while its state is active. */
bool reg_entry_online(const struct reg_entry *r);
/* What a document says of its subscription's one AOR, given what was known (prev): online
 * if any registration listed is online (a notifier may list aliases with it), offline if
 * all listed are not, or if a full state lists none (nothing bound); a partial document
 * listing none changes nothing. */
enum phone_reach reg_doc_reach(const struct reg_doc *doc, enum phone_reach prev);

#endif
