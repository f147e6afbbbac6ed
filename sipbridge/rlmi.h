/* Parser for RFC 4662 resource-list NOTIFY bodies, pure: a multipart/related body whose
 * root part is application/rlmi+xml, followed by one part per resource instance. Gives
 * each resource's URI, subscription state and its body (pointing into the caller's
 * buffer). Called by rlsub.c in resource-list mode; the per-resource bodies then go to
 * the dialog-info parser (bridge.c). */
#ifndef OFFHOOK_RLMI_H
#define OFFHOOK_RLMI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RLMI_NS "urn:ietf:params:xml:ns:rlmi"
#define RLMI_MAX_RESOURCES 200000
#define RLMI_MAX_PARTS (RLMI_MAX_RESOURCES + 1)

enum rlmi_state { RLMI_ACTIVE, RLMI_PENDING, RLMI_TERMINATED };

struct rlmi_resource {
    char *uri;
    char *name;               /* <name>, or NULL */
    enum rlmi_state state;    /* of its first instance */
    char reason[32];          /* for terminated instances, e.g. "rejected" */
    char ctype[96];           /* media type of the body part, lower case, no params */
    const char *body;         /* NULL when the instance carries no body */
    size_t body_len;
};

struct rlmi_doc {
    char uri[256];
    uint32_t version;
    bool full;
    size_t nres;
    struct rlmi_resource *res;
};

/* content_type: the NOTIFY's full Content-Type value (with its parameters). body must
 * outlive the returned document. Returns 0, or -1 with a short static reason. */
int rlmi_parse(const char *content_type, const char *body, size_t len, size_t max,
               struct rlmi_doc *out, const char **reason) __attribute__((warn_unused_result));
void rlmi_doc_free(struct rlmi_doc *doc);

#endif
