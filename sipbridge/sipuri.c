/* SIP URI user parts, compared the RFC 3261 way (see sipuri.h), pure. */
#include "sipuri.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int sipuri_user(const char *uri, char *out, size_t len)
{
    static const char *const schemes[] = {"sip:", "sips:", "pres:", "im:"};
    const char *p = NULL, *at, *end;
    size_t n = 0;

    for (size_t i = 0; i < sizeof schemes / sizeof schemes[0] && !p; i++) {
        if (strncasecmp(uri, schemes[i], strlen(schemes[i])) == 0)
            p = uri + strlen(schemes[i]);
    }
    if (!p)
        return -1;
    at = strchr(p, '@');
    if (!at || at == p)
        return -1;
    /* userinfo = user [":" password] "@"; telephone-subscriber users carry ;params */
    end = p + strcspn(p, ";:@");
    if (end > at)
        end = at;
    for (; p < end; p++) {
        int c = (unsigned char)*p;
        if (c == '%') {
            int hi = hexval((unsigned char)p[1]), lo = hi < 0 ? -1 : hexval((unsigned char)p[2]);
            if (lo < 0)
                return -1;
            c = hi * 16 + lo;
            p += 2;
        }
        if (c == 0 || n + 1 >= len)
            return -1;
        out[n++] = (char)c;
    }
    if (n == 0)
        return -1;
    out[n] = '\0';
    return 0;
}

bool sipuri_same_user(const char *entity, const char *aor)
{
    char want[256], got[256];

    if (sipuri_user(aor, want, sizeof want) < 0)
        return true;
    return sipuri_user(entity, got, sizeof got) == 0 && strcmp(want, got) == 0;
}
