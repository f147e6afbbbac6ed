/* String-keyed hash map with open addressing (FNV-1a, linear probing), pure. */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "strutil.h"

static const char tombstone_key[] = "";
#define TOMBSTONE tombstone_key

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

void strmap_init(struct strmap *m)
{
    memset(m, 0, sizeof *m);
}

void strmap_free(struct strmap *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* The home slot of hash h in cap slots: the high bits of h * cap (a multiply, not a
 * modulo), so that cap need not be a power of two (see grow). FNV-1a mixes its low bits
 * upwards, so the high ones are the well mixed ones. */
static size_t home(uint64_t h, size_t cap)
{
    return (size_t)(((unsigned __int128)h * cap) >> 64);
}

static size_t next_slot(size_t i, size_t cap)
{
    return i + 1 == cap ? 0 : i + 1;
}

static struct strmap_slot *find(const struct strmap *m, const char *key)
{
    size_t i;

    if (!m->cap)
        return NULL;
    for (i = home(hash(key), m->cap);; i = next_slot(i, m->cap)) {
        struct strmap_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->key != TOMBSTONE && strcmp(s->key, key) == 0)
            return s;
    }
}

void *strmap_get(const struct strmap *m, const char *key)
{
    struct strmap_slot *s = find(m, key);

    return s ? s->value : NULL;
}

static void grow(struct strmap *m)
{
    struct strmap_slot *old = m->slots;
    size_t oldcap = m->cap;
    /* Most maps of the component are per user and hold one entry or two (a user's
     * watchers, what one watcher was sent): they start at two slots, not sixteen, which
     * at 100,000 users is most of the component's memory. Large maps (the users by JID
     * and by contact, in both daemons and the configuration) grow by half, not double:
     * their load stays between 1/2 and 3/4 instead of 3/8 and 3/4, which at 100,000
     * users saved ~80 bytes per user, with the same probe lengths (the bound is still 3/4). */
    size_t cap = oldcap < 4 ? oldcap + 2 : oldcap + oldcap / 2;

    /* Rehash in place of growing when most of the load is tombstones. */
    if (oldcap && m->count * 4 < oldcap)
        cap = oldcap;
    m->slots = xcalloc(cap, sizeof *m->slots);
    m->cap = cap;
    m->count = m->used = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].key && old[i].key != TOMBSTONE)
            strmap_put(m, old[i].key, old[i].value);
    }
    free(old);
}

void *strmap_put(struct strmap *m, const char *key, void *value)
{
    struct strmap_slot *s = find(m, key);
    size_t i;

    if (s) {
        void *prev = s->value;
        s->value = value;
        s->key = key;
        return prev;
    }
    if ((m->used + 1) * 4 > m->cap * 3)
        grow(m);
    for (i = home(hash(key), m->cap); m->slots[i].key && m->slots[i].key != TOMBSTONE;
         i = next_slot(i, m->cap))
        ;
    if (!m->slots[i].key)
        m->used++;
    m->slots[i].key = key;
    m->slots[i].value = value;
    m->count++;
    return NULL;
}

void *strmap_del(struct strmap *m, const char *key)
{
    struct strmap_slot *s = find(m, key);
    void *v;

    if (!s)
        return NULL;
    v = s->value;
    s->key = TOMBSTONE;
    s->value = NULL;
    /* Emptied: give the slots back (a user's last watcher, say). An iteration in progress
     * simply ends, since nothing is left to visit. */
    if (--m->count == 0)
        strmap_free(m);
    return v;
}

int strmap_next(const struct strmap *m, size_t *pos, const char **key, void **value)
{
    for (; *pos < m->cap; (*pos)++) {
        struct strmap_slot *s = &m->slots[*pos];
        if (s->key && s->key != TOMBSTONE) {
            *key = s->key;
            *value = s->value;
            (*pos)++;
            return 1;
        }
    }
    return 0;
}

void strmap_clear_owned(struct strmap *m)
{
    size_t pos = 0;
    const char *k;
    void *v;

    while (strmap_next(m, &pos, &k, &v))
        free(v);
    strmap_free(m);
    strmap_init(m);
}
