/* RFC 4662 multipart/related + RLMI parser, pure. Accepts CRLF or bare LF line ends. */
#include "rlmi.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mime.h"
#include "strutil.h"
#include "xmlsafe.h"

#define MAX_BOUNDARY 70 /* RFC 2046 */

struct part {
    const char *ctype;
    size_t ctype_len;
    const char *cid;   /* Content-ID without <> */
    size_t cid_len;
    const char *body;
    size_t body_len;
};

/* Finds "--boundary" at the start of a line at or after from. */
static const char *find_delim(const char *buf, size_t len, size_t from, const char *delim,
                              size_t dlen)
{
    size_t pos = from;

    while (pos + dlen <= len) {
        const char *hit = memmem(buf + pos, len - pos, delim, dlen);
        if (!hit)
            return NULL;
        if (hit == buf || hit[-1] == '\n')
            return hit;
        pos = (size_t)(hit - buf) + 1;
    }
    return NULL;
}

static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));

    return nl ? nl : end;
}

/* Parses one part's headers; body is what follows the blank line. */
static int parse_part(const char *p, const char *end, struct part *out)
{
    memset(out, 0, sizeof *out);
    for (;;) {
        const char *le = line_end(p, end), *colon;
        size_t ll = (size_t)(le - p);

        if (ll && p[ll - 1] == '\r')
            ll--;
        if (ll == 0) {
            out->body = le < end ? le + 1 : end;
            out->body_len = (size_t)(end - out->body);
            return 0;
        }
        if (le == end)
            return -1; /* headers without a body separator */
        colon = memchr(p, ':', ll);
        if (!colon)
            return -1;
        {
            size_t nl = (size_t)(colon - p);
            const char *v = colon + 1;
            size_t vl = ll - nl - 1;
            while (vl && isspace((unsigned char)*v)) {
                v++;
                vl--;
            }
            while (vl && isspace((unsigned char)v[vl - 1]))
                vl--;
            if (nl == 12 && strncasecmp(p, "Content-Type", 12) == 0) {
                out->ctype = v;
                out->ctype_len = vl;
            } else if (nl == 10 && strncasecmp(p, "Content-ID", 10) == 0) {
                if (vl >= 2 && v[0] == '<' && v[vl - 1] == '>') {
                    v++;
                    vl -= 2;
                }
                out->cid = v;
                out->cid_len = vl;
            } else if (nl == 25 && strncasecmp(p, "Content-Transfer-Encoding", 25) == 0) {
                if (!((vl == 6 && strncasecmp(v, "binary", 6) == 0) ||
                      (vl == 4 && strncasecmp(v, "8bit", 4) == 0) ||
                      (vl == 4 && strncasecmp(v, "7bit", 4) == 0)))
                    return -1; /* SIP bodies are binary; base64 is not supported */
            }
        }
        p = le + 1;
    }
}

/* Splits the body into parts. Returns the count or -1. */
static long split_parts(const char *buf, size_t len, const char *boundary, struct part **out,
                        const char **reason)
{
    char delim[MAX_BOUNDARY + 3];
    size_t dlen = (size_t)snprintf(delim, sizeof delim, "--%s", boundary);
    const char *cur = find_delim(buf, len, 0, delim, dlen);
    struct part *parts = NULL;
    size_t n = 0, cap = 0;

    if (!cur) {
        *reason = "no multipart boundary found";
        return -1;
    }
    for (;;) {
        const char *after = cur + dlen, *start, *next, *end;

        if ((size_t)(after - buf) + 2 <= len && after[0] == '-' && after[1] == '-')
            break; /* close delimiter */
        start = line_end(after, buf + len);
        if (start == buf + len) {
            *reason = "multipart body truncated";
            goto fail;
        }
        start++;
        next = find_delim(buf, len, (size_t)(start - buf), delim, dlen);
        if (!next) {
            *reason = "multipart body truncated";
            goto fail;
        }
        /* The line break before a delimiter belongs to the delimiter. */
        end = next;
        if (end > start && end[-1] == '\n')
            end--;
        if (end > start && end[-1] == '\r')
            end--;
        if (n == RLMI_MAX_PARTS) {
            *reason = "too many parts";
            goto fail;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            parts = xrealloc(parts, cap * sizeof *parts);
        }
        if (parse_part(start, end, &parts[n]) < 0) {
            *reason = "malformed part headers";
            goto fail;
        }
        n++;
        cur = next;
    }
    *out = parts;
    return (long)n;
fail:
    free(parts);
    return -1;
}

/* The parts that have a Content-ID, sorted by it: a full state of 100,000 resources names
 * 100,000 parts, and a scan per instance was 5e9 comparisons (a minute of CPU). */
struct cid_index {
    const struct part **v; /* owned array of pointers into the parts */
    long n;
};

static int cid_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    if (al != bl)
        return al < bl ? -1 : 1;
    return memcmp(a, b, al);
}

static int cmp_parts(const void *a, const void *b)
{
    const struct part *x = *(const struct part *const *)a, *y = *(const struct part *const *)b;
    int c = cid_cmp(x->cid, x->cid_len, y->cid, y->cid_len);

    if (c)
        return c;
    return x < y ? -1 : x > y; /* the same id twice: the first part wins, as a scan had it */
}

static void cid_index_build(struct cid_index *ix, const struct part *parts, long n)
{
    ix->v = xmalloc((size_t)n * sizeof *ix->v);
    ix->n = 0;
    for (long i = 0; i < n; i++) {
        if (parts[i].cid)
            ix->v[ix->n++] = &parts[i];
    }
    qsort(ix->v, (size_t)ix->n, sizeof *ix->v, cmp_parts);
}

static const struct part *part_by_cid(const struct cid_index *ix, const char *cid)
{
    size_t cl = strlen(cid);
    long lo = 0, hi = ix->n;

    while (lo < hi) { /* the first entry not below cid */
        long mid = lo + (hi - lo) / 2;
        if (cid_cmp(ix->v[mid]->cid, ix->v[mid]->cid_len, cid, cl) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < ix->n && cid_cmp(ix->v[lo]->cid, ix->v[lo]->cid_len, cid, cl) == 0)
        return ix->v[lo];
    return NULL;
}

static int parse_state(const char *s, enum rlmi_state *out)
{
    if (s && strcmp(s, "active") == 0)
        *out = RLMI_ACTIVE;
    else if (s && strcmp(s, "pending") == 0)
        *out = RLMI_PENDING;
    else if (s && strcmp(s, "terminated") == 0)
        *out = RLMI_TERMINATED;
    else
        return -1;
    return 0;
}

static int parse_list(xmlNodePtr root, const struct cid_index *ix, struct rlmi_doc *out,
                      const char **reason)
{
    const char *v;
    size_t cap = 0;

    if (!xmlsafe_is(root, RLMI_NS, "list")) {
        *reason = "root part is not an RLMI list";
        return -1;
    }
    v = xmlsafe_attr(root, "uri");
    if (!v || str_copy(out->uri, sizeof out->uri, v) < 0) {
        *reason = "list without uri";
        return -1;
    }
    v = xmlsafe_attr(root, "version");
    if (!v || str_parse_u32(v, &out->version) < 0) {
        *reason = "missing or invalid list version";
        return -1;
    }
    v = xmlsafe_attr(root, "fullState");
    if (!v || (strcmp(v, "true") != 0 && strcmp(v, "false") != 0 && strcmp(v, "1") != 0 &&
               strcmp(v, "0") != 0)) {
        *reason = "missing or invalid fullState";
        return -1;
    }
    out->full = strcmp(v, "true") == 0 || strcmp(v, "1") == 0;
    for (xmlNodePtr r = root->children; r; r = r->next) {
        struct rlmi_resource *res;
        xmlNodePtr inst = NULL, name;
        const char *uri;

        if (!xmlsafe_is(r, RLMI_NS, "resource"))
            continue;
        uri = xmlsafe_attr(r, "uri");
        if (!uri || !*uri) {
            *reason = "resource without uri";
            return -1;
        }
        if (out->nres == RLMI_MAX_RESOURCES) {
            *reason = "too many resources";
            return -1;
        }
        if (out->nres == cap) {
            cap = cap ? cap * 2 : 16;
            out->res = xrealloc(out->res, cap * sizeof *out->res);
        }
        res = &out->res[out->nres++];
        memset(res, 0, sizeof *res);
        res->uri = xstrdup(uri);
        name = xmlsafe_child(r, RLMI_NS, "name");
        if (name) {
            char buf[128];
            xmlsafe_text(name, buf, sizeof buf);
            res->name = xstrdup(buf);
        }
        /* Several instances (one per back-end subscription): the first active wins. */
        for (xmlNodePtr i = r->children; i; i = i->next) {
            enum rlmi_state st;
            if (!xmlsafe_is(i, RLMI_NS, "instance"))
                continue;
            if (!xmlsafe_attr(i, "id") || parse_state(xmlsafe_attr(i, "state"), &st) < 0) {
                *reason = "instance without id or valid state";
                return -1;
            }
            if (!inst || (st == RLMI_ACTIVE && res->state != RLMI_ACTIVE)) {
                inst = i;
                res->state = st;
            }
        }
        if (!inst) {
            res->state = RLMI_PENDING; /* no instance: nothing known yet (RFC 4662 5.2) */
            continue;
        }
        v = xmlsafe_attr(inst, "reason");
        str_copy_utf8(res->reason, sizeof res->reason, v ? v : "");
        v = xmlsafe_attr(inst, "cid");
        if (v) {
            const struct part *p = part_by_cid(ix, v);
            if (!p) {
                *reason = "instance cid names no body part";
                return -1;
            }
            if (!p->ctype ||
                mime_media_type(p->ctype, p->ctype_len, res->ctype, sizeof res->ctype) < 0) {
                *reason = "body part without Content-Type";
                return -1;
            }
            res->body = p->body;
            res->body_len = p->body_len;
        }
    }
    return 0;
}

int rlmi_parse(const char *content_type, const char *body, size_t len, size_t max,
               struct rlmi_doc *out, const char **reason)
{
    char media[96], boundary[MAX_BOUNDARY + 1], start[256], rtype[96];
    struct part *parts = NULL;
    struct cid_index ix = {NULL, 0};
    const struct part *root = NULL;
    xmlDocPtr doc = NULL;
    long nparts;
    int rc = -1;

    memset(out, 0, sizeof *out);
    if (len > max) {
        *reason = "too large";
        return -1;
    }
    if (!content_type ||
        mime_media_type(content_type, strlen(content_type), media, sizeof media) < 0 ||
        strcmp(media, "multipart/related") != 0) {
        *reason = "not multipart/related";
        return -1;
    }
    if (mime_param(content_type, "boundary", boundary, sizeof boundary) < 0) {
        *reason = "missing or invalid boundary";
        return -1;
    }
    nparts = split_parts(body, len, boundary, &parts, reason);
    if (nparts < 0)
        return -1;
    if (nparts == 0) {
        *reason = "multipart body without parts";
        goto out;
    }
    cid_index_build(&ix, parts, nparts);
    if (mime_param(content_type, "start", start, sizeof start) == 0) {
        size_t sl = strlen(start);
        if (sl >= 2 && start[0] == '<' && start[sl - 1] == '>') {
            memmove(start, start + 1, sl - 2);
            start[sl - 2] = '\0';
        }
        root = part_by_cid(&ix, start);
    } else {
        root = &parts[0]; /* RFC 2387: without start, the first part is the root */
    }
    if (!root || !root->ctype ||
        mime_media_type(root->ctype, root->ctype_len, rtype, sizeof rtype) < 0 ||
        strcmp(rtype, "application/rlmi+xml") != 0) {
        *reason = "root part is not application/rlmi+xml";
        goto out;
    }
    doc = xmlsafe_parse(root->body, root->body_len, max, reason);
    if (!doc)
        goto out;
    rc = parse_list(xmlDocGetRootElement(doc), &ix, out, reason);
out:
    if (doc)
        xmlFreeDoc(doc);
    free(ix.v);
    free(parts);
    if (rc < 0)
        rlmi_doc_free(out);
    return rc;
}

void rlmi_doc_free(struct rlmi_doc *doc)
{
    for (size_t i = 0; i < doc->nres; i++) {
        free(doc->res[i].uri);
        free(doc->res[i].name);
    }
    free(doc->res);
    doc->res = NULL;
    doc->nres = 0;
}
