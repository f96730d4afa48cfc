/* vx_strset: a set of borrowed strings (open addressing, FNV-1a), for the batch applier's ordering
 * keys and for whoever else needs "have I seen this string" at the cost of a hash.
 *
 * Invariant: the table is at most half full, so every probe ends; it grows (doubling) as strings
 * are added. The set never copies a string: each must outlive the set's next clear or free. */
#ifndef VX_STRSET_H
#define VX_STRSET_H

#include <stddef.h>

typedef struct {
    const char **slot;
    size_t cap; /* a power of two, at least twice the strings held */
    size_t n;   /* strings held */
} vx_strset_t;

/* Room for `max` strings without growing. Returns 0, or -1 when out of memory. */
int vx_strset_init(vx_strset_t *set, size_t max);
void vx_strset_free(vx_strset_t *set); /* accepts a set never initialised (zeroed) */
void vx_strset_clear(vx_strset_t *set);
/* The equal string held (borrowed), or NULL. */
const char *vx_strset_find(const vx_strset_t *set, const char *str);
/* 1 added, 0 an equal one was there, -1 out of memory (nothing added). */
int vx_strset_add(vx_strset_t *set, const char *str);

#endif
