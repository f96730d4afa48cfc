/* vt_util: the small things every test program (tests/it, tests/soak, tools/vxbench) needs: the
 * clocks, sleeping, a failing call's message, a seeded random stream, a string -> int64 map and
 * percentiles.
 *
 * Invariant: nothing here keeps state of its own; a vt_map_t owns copies of its keys until
 * vt_map_free, and everything else is the caller's. */
#ifndef VT_UTIL_H
#define VT_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* The monotonic clock (for deadlines and durations) and the real one (to compare with times other
 * processes wrote), in nanoseconds and in milliseconds. */
int64_t vt_mono_ns(void);
int64_t vt_mono_ms(void);
int64_t vt_real_ns(void);
int64_t vt_real_ms(void);

/* Sleeps ms milliseconds, through signals; nothing when ms <= 0. */
void vt_sleep_ms(long ms);

/* Writes printf(fmt, ...) into errstr (when it is not NULL) and returns -1, so a fallible function
 * can end with `return vt_err(errstr, errstr_size, "...", ...);`. */
int vt_err(char *errstr, size_t errstr_size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* xorshift64*: the same stream for the same seed (a seed of 0 stays 0: pick another). */
uint64_t vt_rand64(uint64_t *state);

/* ---- a string -> int64 map (open addressing; keys copied) ----------------------------------------- */

typedef struct {
    char **keys;
    int64_t *vals;
    size_t cap, n;
} vt_map_t; /* zero-initialised: empty */

uint64_t vt_hash(const char *s); /* FNV-1a */
/* The value slot of k, or NULL when absent. Borrowed: valid until the next vt_map_put. */
int64_t *vt_map_get(const vt_map_t *m, const char *k);
/* The value slot of k, added with value v when absent (*added says which). NULL out of memory. */
int64_t *vt_map_put(vt_map_t *m, const char *k, int64_t v, int *added);
void vt_map_free(vt_map_t *m); /* leaves m empty and usable */

/* ---- percentiles ----------------------------------------------------------------------------------- */

int vt_cmp_double(const void *a, const void *b); /* for qsort of doubles, ascending */
/* The nearest-rank percentile pct (0-100) of v[0..n-1], sorted ascending, n > 0. */
double vt_percentile(const double *v, long n, double pct);

#endif
