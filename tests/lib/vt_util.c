/* vt_util: clocks, sleeping, error messages, random numbers, a string map and percentiles for the
 * test programs (see vt_util.h).
 *
 * Invariant: the map's capacity is a power of two at most half full, so a probe always ends. */
#include "vt_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t vt_mono_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
int64_t vt_mono_ms(void) { return clock_ns(CLOCK_MONOTONIC) / 1000000; }
int64_t vt_real_ns(void) { return clock_ns(CLOCK_REALTIME); }
int64_t vt_real_ms(void) { return clock_ns(CLOCK_REALTIME) / 1000000; }

void vt_sleep_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (ms > 0 && nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

int vt_err(char *errstr, size_t errstr_size, const char *fmt, ...) {
    va_list ap;
    if (errstr && errstr_size) {
        va_start(ap, fmt);
        vsnprintf(errstr, errstr_size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

uint64_t vt_rand64(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* ---- the map --------------------------------------------------------------------------------------- */

uint64_t vt_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static size_t map_slot(char **keys, size_t cap, const char *k) {
    size_t i = vt_hash(k) & (cap - 1);
    while (keys[i] && strcmp(keys[i], k) != 0) i = (i + 1) & (cap - 1);
    return i;
}

static int map_grow(vt_map_t *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    char **keys = calloc(cap, sizeof(*keys));
    int64_t *vals = calloc(cap, sizeof(*vals));

    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -1;
    }
    for (size_t j = 0; j < m->cap; j++) {
        if (!m->keys[j]) continue;
        size_t i = map_slot(keys, cap, m->keys[j]);
        keys[i] = m->keys[j];
        vals[i] = m->vals[j];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

int64_t *vt_map_get(const vt_map_t *m, const char *k) {
    size_t i;
    if (!m->cap) return NULL;
    i = map_slot(m->keys, m->cap, k);
    return m->keys[i] ? &m->vals[i] : NULL;
}

int64_t *vt_map_put(vt_map_t *m, const char *k, int64_t v, int *added) {
    size_t i;
    *added = 0;
    if ((m->n + 1) * 2 > m->cap && map_grow(m)) return NULL;
    i = map_slot(m->keys, m->cap, k);
    if (!m->keys[i]) {
        if (!(m->keys[i] = strdup(k))) return NULL;
        m->vals[i] = v;
        m->n++;
        *added = 1;
    }
    return &m->vals[i];
}

void vt_map_free(vt_map_t *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* ---- percentiles ----------------------------------------------------------------------------------- */

int vt_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double vt_percentile(const double *v, long n, double pct) {
    long rank = (long)(pct / 100.0 * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}
