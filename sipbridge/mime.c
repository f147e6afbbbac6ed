/* Content-Type values, pure: RFC 2045 media type and parameters, as SIP bodies use them. */
#include "mime.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

int mime_media_type(const char *ctype, size_t len, char *out, size_t outlen)
{
    size_t n = 0;

    while (len && isspace((unsigned char)*ctype)) {
        ctype++;
        len--;
    }
    while (n < len && ctype[n] != ';' && !isspace((unsigned char)ctype[n]))
        n++;
    if (n == 0 || n >= outlen)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)ctype[i]);
    out[n] = '\0';
    return 0;
}

int mime_param(const char *ctype, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = strchr(ctype, ';');

    while (p) {
        const char *v;
        size_t n = 0;

        p++;
        while (isspace((unsigned char)*p))
            p++;
        if (strncasecmp(p, name, nl) == 0) {
            v = p + nl;
            while (isspace((unsigned char)*v))
                v++;
            if (*v == '=') {
                v++;
                while (isspace((unsigned char)*v))
                    v++;
                if (*v == '"') {
                    const char *end = strchr(++v, '"');
                    if (!end)
                        return -1;
                    n = (size_t)(end - v);
                } else {
                    while (v[n] && v[n] != ';' && !isspace((unsigned char)v[n]))
                        n++;
                }
                if (n == 0 || n >= outlen)
                    return -1;
                memcpy(out, v, n);
                out[n] = '\0';
                return 0;
            }
        }
        p = strchr(p, ';');
    }
    return -1;
}

bool mime_is(const char *ctype, size_t len, const char *want)
{
    char media[96];

    return ctype && mime_media_type(ctype, len, media, sizeof media) == 0 &&
           strcmp(media, want) == 0;
}
