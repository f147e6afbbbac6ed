/* Parser for PIDF presence documents (RFC 3863) with RPID (RFC 4480) and the data model
 * (RFC 4479), pure. Gives what a phone's presence says about reachability, an ongoing
 * call and do-not-disturb. Called by bridge.c for Event: presence bodies. */
#ifndef OFFHOOK_PIDF_H
#define OFFHOOK_PIDF_H

#include <stdbool.h>
#include <stddef.h>

#include "callstate.h"

#define PIDF_NS "urn:ietf:params:xml:ns:pidf"
#define PIDF_TYPE "application/pidf+xml" /* its media type */
#define PIDF_DM_NS "urn:ietf:params:xml:ns:pidf:data-model"
#define PIDF_RPID_NS "urn:ietf:params:xml:ns:pidf:rpid"
#define PIDF_CAPS_NS "urn:ietf:params:xml:ns:pidf:caps" /* RFC 5196 service capabilities */

struct pidf_doc {
    enum phone_reach reach; /* any tuple open: online; tuples all closed: offline */
    bool on_the_phone;      /* rpid on-the-phone activity */
    bool dnd;               /* rpid busy activity, or a note saying DND / do not disturb */
    bool video;             /* an open tuple's RFC 5196 <servcaps> says <video>true</video> */
    char note[128];         /* first note found, for logs */
    char entity[256];
};

int pidf_parse(const char *buf, size_t len, size_t max, struct pidf_doc *out,
               const char **reason) __attribute__((warn_unused_result));

#endif
