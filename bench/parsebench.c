/* parsebench: CPU per NOTIFY body for sipbridge's parsers, on the fixtures the tests use.
 *
 *   parsebench FILE [ITERATIONS]
 *   parsebench --compare [--reps R] [--iterations N] FILE...
 *
 * The first form parses FILE (dialog-info, PIDF, reginfo, by its root element)
 * ITERATIONS times (default 200000) and prints microseconds per parse: the parser's share
 * of sipbridge's cost per event, measured alone (docs/performance.md).
 *
 * --compare times, for each dialog-info FILE, the streaming parser (dlginfo_parse, SAX2)
 * against the DOM one it replaced (dlginfo_parse_dom), and libxml2's xmlTextReader merely
 * walking the document with the same options (a floor for a reader-based parser: no
 * result is built). The three are run in turn, N parses each (default 20000), R rounds
 * (default 5), so machine load falls on all of them alike; it prints the median us per
 * parse of each and the DOM/stream ratio, and fails if the two parsers disagree. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libxml/xmlreader.h>

#include "dialoginfo.h"
#include "pidf.h"
#include "reginfo.h"
#include "xmlsafe.h"

#define MAX_BODY (1 << 20)

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Reads every node, as a reader-based parser would before looking at any of them. */
static int reader_walk(xmlTextReaderPtr *r, const char *buf, size_t len)
{
    const int options = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                        XML_PARSE_NOBLANKS | XML_PARSE_NOCDATA;
    int rc;

    if (!*r)
        *r = xmlReaderForMemory(buf, (int)len, NULL, NULL, options);
    else if (xmlReaderNewMemory(*r, buf, (int)len, NULL, NULL, options) < 0)
        return -1;
    if (!*r)
        return -1;
    while ((rc = xmlTextReaderRead(*r)) == 1)
        (void)xmlTextReaderNodeType(*r);
    return rc == 0 ? 0 : -1;
}

static char *read_file(const char *path, size_t *len)
{
    char *buf = malloc(MAX_BODY);
    FILE *f = fopen(path, "rb");

    if (!buf || !f) {
        free(buf);
        if (f)
            fclose(f);
        return NULL;
    }
    *len = fread(buf, 1, MAX_BODY, f);
    fclose(f);
    return buf;
}

static int compare(int argc, char **argv)
{
    long iterations = 20000;
    int reps = 5, i = 0, rc = 0;
    struct dlg_doc *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    xmlTextReaderPtr reader = NULL;

    while (i < argc && argv[i][0] == '-') {
        if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (strcmp(argv[i], "--iterations") == 0 && i + 1 < argc)
            iterations = atol(argv[++i]);
        else
            return 2;
        i++;
    }
    if (reps < 1 || reps > 100 || iterations < 1)
        return 2;
    printf("%-48s %7s %9s %9s %9s %10s\n", "file", "bytes", "dom_us", "stream_us",
           "reader_us", "dom/stream");
    for (; i < argc; i++) {
        double dom[100], stream[100], walk[100];
        const char *ra = NULL, *rb = NULL;
        size_t len;
        char *buf = read_file(argv[i], &len);
        int ca, cb;

        if (!buf) {
            fprintf(stderr, "parsebench: %s: cannot read\n", argv[i]);
            rc = 1;
            continue;
        }
        memset(a, 0, sizeof *a);
        memset(b, 0, sizeof *b);
        ca = dlginfo_parse_dom(buf, len, MAX_BODY, a, &ra);
        cb = dlginfo_parse(buf, len, MAX_BODY, b, &rb);
        if (ca != cb || (ca == 0 && memcmp(a, b, sizeof *a) != 0) ||
            (ca != 0 && strcmp(ra, rb) != 0)) {
            fprintf(stderr, "parsebench: %s: the parsers disagree\n", argv[i]);
            rc = 1;
        }
        for (int r = 0; r < reps; r++) {
            double t0 = now_s(), t1, t2, t3;
            for (long n = 0; n < iterations; n++)
                (void)!dlginfo_parse_dom(buf, len, MAX_BODY, a, &ra);
            t1 = now_s();
            for (long n = 0; n < iterations; n++)
                (void)!dlginfo_parse(buf, len, MAX_BODY, b, &rb);
            t2 = now_s();
            for (long n = 0; n < iterations; n++)
                (void)reader_walk(&reader, buf, len);
            t3 = now_s();
            dom[r] = (t1 - t0) * 1e6 / (double)iterations;
            stream[r] = (t2 - t1) * 1e6 / (double)iterations;
            walk[r] = (t3 - t2) * 1e6 / (double)iterations;
        }
        {
            double md = median(dom, reps), ms = median(stream, reps), mw = median(walk, reps);
            const char *name = strrchr(argv[i], '/');
            printf("%-48s %7zu %9.2f %9.2f %9.2f %10.2f%s\n", name ? name + 1 : argv[i], len,
                   md, ms, mw, md / ms, ca == 0 ? "" : "  (rejected)");
        }
        free(buf);
    }
    if (reader)
        xmlFreeTextReader(reader);
    free(a);
    free(b);
    return rc;
}

int main(int argc, char **argv)
{
    static char buf[MAX_BODY];
    long iterations = argc > 2 ? atol(argv[2]) : 200000;
    FILE *f;
    size_t len;
    const char *reason = NULL;
    int kind, rc = 0;
    double t0, t1;
    struct dlg_doc *dd;
    struct pidf_doc pd;
    struct reg_doc rd;

    xmlsafe_init();
    if (argc > 1 && strcmp(argv[1], "--compare") == 0) {
        rc = compare(argc - 2, argv + 2);
        if (rc == 2)
            fprintf(stderr, "usage: parsebench --compare [--reps R] [--iterations N] FILE...\n");
        xmlsafe_cleanup();
        return rc;
    }
    if (argc < 2 || !(f = fopen(argv[1], "rb"))) {
        fprintf(stderr, "usage: parsebench FILE [ITERATIONS]\n"
                        "       parsebench --compare [--reps R] [--iterations N] FILE...\n");
        return 2;
    }
    len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    kind = strstr(buf, "<dialog-info") ? 0 : strstr(buf, "<presence") ? 1 : 2;
    dd = malloc(sizeof *dd);
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
