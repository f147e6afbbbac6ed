/* A string-keyed hash map (open addressing, linear probing), pure. Used for user,
 * contact and subscription lookups that must stay O(1) at 100,000 users.
 * Keys are not copied: the caller keeps them alive while they are in the map.
 * Memory: an empty map holds none (the slots go when its last entry is deleted); the
 * slots start at two and grow by half at 3/4 load (2, 4, 6, 9, 13, ...), 16 bytes each. */
#ifndef OFFHOOK_STRMAP_H
#define OFFHOOK_STRMAP_H

#include <stddef.h>

struct strmap_slot {
    const char *key; /* NULL = empty; TOMBSTONE = deleted */
    void *value;
};

struct strmap {
    struct strmap_slot *slots;
    size_t cap;   /* slots (any number: see strmap.c's home()) */
    size_t count; /* live entries */
    size_t used;  /* live + tombstones */
};

void strmap_init(struct strmap *m);
void strmap_free(struct strmap *m);
/* For a map whose values are malloc'd strings that are also its keys (a set of owned
 * strings): frees every value and leaves the map empty and usable. */
void strmap_clear_owned(struct strmap *m);
void *strmap_get(const struct strmap *m, const char *key);
/* Inserts or replaces; returns the previous value or NULL. */
void *strmap_put(struct strmap *m, const char *key, void *value);
/* Removes key; returns its value or NULL. */
void *strmap_del(struct strmap *m, const char *key);
/* Iterates live entries: start with *pos = 0; returns 0 when done. */
int strmap_next(const struct strmap *m, size_t *pos, const char **key, void **value);

#endif
