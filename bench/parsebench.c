/* parsebench: CPU per NOTIFY body for sipbridge's parsers, on the fixtures the tests use.
 *
 *   parsebench FILE [ITERATIONS]
 *
 * Parses FILE (dialog-info, PIDF, reginfo, by its root element) ITERATIONS times (default
 * 200000) and prints microseconds per parse: the parser's share of sipbridge's cost per
 * event, measured alone (docs/performance.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dialoginfo.h"
#include "pidf.h"
#include "reginfo.h"
#include "xmlsafe.h"

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    static char buf[1 << 20];
    long iterations = argc > 2 ? atol(argv[2]) : 200000;
    FILE *f;
    size_t len;
    const char *reason = NULL;
    int kind, rc = 0;
    double t0, t1;
    struct dlg_doc *dd = malloc(sizeof *dd);
    struct pidf_doc pd;
    struct reg_doc rd;

    if (argc < 2 || !(f = fopen(argv[1], "rb"))) {
        fprintf(stderr, "usage: parsebench FILE [ITERATIONS]\n");
        return 2;
    }
    len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    kind = strstr(buf, "<dialog-info") ? 0 : strstr(buf, "<presence") ? 1 : 2;
    xmlsafe_init();
    t0 = now_s();
    for (long i = 0; i < iterations && rc == 0; i++) {
        if (kind == 0)
            rc = dlginfo_parse(buf, len, sizeof buf, dd, &reason);
        else if (kind == 1)
            rc = pidf_parse(buf, len, sizeof buf, &pd, &reason);
        else
            rc = reginfo_parse(buf, len, sizeof buf, &rd, &reason);
    }
    t1 = now_s();
    free(dd);
    if (rc != 0) {
        fprintf(stderr, "parsebench: %s: %s\n", argv[1], reason ? reason : "failed");
        return 1;
    }
    printf("%s: %zu bytes, %ld parses, %.2f us CPU per parse\n", argv[1], len, iterations,
           (t1 - t0) * 1e6 / (double)iterations);
    return 0;
}
