/* The fixed set of causes under which a rejected NOTIFY body is counted
 * (offhook_body_errors_total{reason}): the parsers' own words go to the log, a short
 * stable name to the metric. Pure; called by bridge.c. */
#ifndef OFFHOOK_BODYERR_H
#define OFFHOOK_BODYERR_H

/* Every cause, NULL-terminated: the metric declares them all, so each series is exported
 * from zero and a PBX cannot mint label values. */
extern const char *const bodyerr_causes[];

/* The reason of a body about another user than the subscription's (bridge.c). */
#define BODYERR_WRONG_ENTITY "entity is not the subscribed user"

/* The cause of a parser's reason text (a static string, never NULL). */
const char *bodyerr_cause(const char *reason);

#endif
