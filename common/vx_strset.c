/* vx_strset: a set of borrowed strings. See vx_strset.h. */
#include "vx_strset.h"

#include <stdlib.h>
#include <string.h>

int vx_strset_init(vx_strset_t *set, size_t max) {
    for (set->cap = 16; set->cap < max * 2; set->cap <<= 1) {
    }
    set->n = 0;
    set->slot = calloc(set->cap, sizeof(*set->slot));
    return set->slot ? 0 : -1;
}

void vx_strset_free(vx_strset_t *set) {
    free(set->slot);
    set->slot = NULL;
    set->cap = set->n = 0;
}

void vx_strset_clear(vx_strset_t *set) {
    if (set->n) memset(set->slot, 0, set->cap * sizeof(*set->slot));
    set->n = 0;
}

static size_t hash(const char *str) {
    size_t h = 14695981039346656037ULL;
    for (const char *p = str; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    return h;
}

/* The slot that holds str, or the empty one where it would go. */
static const char **slot_of(const char **slot, size_t cap, const char *str) {
    for (size_t i = hash(str) & (cap - 1);; i = (i + 1) & (cap - 1))
        if (!slot[i] || strcmp(slot[i], str) == 0) return &slot[i];
}

const char *vx_strset_find(const vx_strset_t *set, const char *str) {
    return set->n ? *slot_of(set->slot, set->cap, str) : NULL;
}

static int grow(vx_strset_t *set) {
    size_t cap = set->cap * 2;
    const char **slot = calloc(cap, sizeof(*slot));
    if (!slot) return -1;
    for (size_t i = 0; i < set->cap; i++)
        if (set->slot[i]) *slot_of(slot, cap, set->slot[i]) = set->slot[i];
    free(set->slot);
    set->slot = slot;
    set->cap = cap;
    return 0;
}

int vx_strset_add(vx_strset_t *set, const char *str) {
    const char **p;
    if (!set->slot && vx_strset_init(set, 8)) return -1;
    p = slot_of(set->slot, set->cap, str);
    if (*p) return 0;
    if ((set->n + 1) * 2 > set->cap) {
        if (grow(set)) return -1;
        p = slot_of(set->slot, set->cap, str);
    }
    *p = str;
    set->n++;
    return 1;
}
