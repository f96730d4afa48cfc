/* resilience: circuit breaker and backoff. See resilience.h. */
#include "resilience.h"

#include <stdlib.h>
#include <string.h>

const char *gw_breaker_state_name(gw_breaker_state_t s) {
    return s == GW_BREAKER_CLOSED ? "closed" : s == GW_BREAKER_OPEN ? "open" : "half_open";
}

static void set_state(gw_breaker_t *b, gw_breaker_state_t to, long long now) {
    gw_breaker_state_t from = b->state;
    if (from == to) return;
    b->state = to;
    b->probes_out = b->probes_ok = 0;
    if (to == GW_BREAKER_HALF_OPEN) b->spell++;
    if (to == GW_BREAKER_OPEN) b->opened_at = now;
    if (to == GW_BREAKER_CLOSED) memset(b->bucket, 0, sizeof(b->bucket)); /* a fresh window */
    if (b->o.on_change) b->o.on_change(from, to, b->o.opaque);
}

void gw_breaker_init(gw_breaker_t *b, const gw_breaker_opts_t *o) {
    memset(b, 0, sizeof(*b));
    b->o = *o;
    b->spell = 0; /* spells count from 1, so a probe token is never 0 */
    if (b->o.window_ms < 1000) b->o.window_ms = 1000;
    if (b->o.window_ms > GW_BREAKER_BUCKETS * 1000) b->o.window_ms = GW_BREAKER_BUCKETS * 1000;
    if (b->o.probes < 1) b->o.probes = 1;
    if (b->o.min_calls < 1) b->o.min_calls = 1;
    if (b->o.call_ms > 0) {
        int fit = b->o.window_ms / b->o.call_ms; /* one client's calls that end in a window */
        if (fit < 2) fit = 2;
        if (fit < b->o.min_calls) b->o.min_calls = fit;
    }
    b->state = GW_BREAKER_CLOSED;
}

void gw_breaker_counts(const gw_breaker_t *b, long long now, int *calls, int *failures) {
    long long sec = now / 1000, span = b->o.window_ms / 1000;
    *calls = *failures = 0;
    for (int i = 0; i < GW_BREAKER_BUCKETS; i++) {
        if (b->bucket[i].second > sec - span && b->bucket[i].second <= sec) {
            *calls += b->bucket[i].calls;
            *failures += b->bucket[i].failures;
        }
    }
}

gw_breaker_state_t gw_breaker_state(gw_breaker_t *b, long long now) {
    if (b->state == GW_BREAKER_OPEN && now - b->opened_at >= b->o.open_ms) set_state(b, GW_BREAKER_HALF_OPEN, now);
    return b->state;
}

int gw_breaker_acquire(gw_breaker_t *b, long long now, unsigned *probe) {
    *probe = 0;
    switch (gw_breaker_state(b, now)) {
    case GW_BREAKER_CLOSED:
        return 1;
    case GW_BREAKER_OPEN:
        return 0;
    case GW_BREAKER_HALF_OPEN:
        if (b->probes_out >= b->o.probes) return 0;
        b->probes_out++;
        *probe = b->spell;
        return 1;
    }
    return 0;
}

void gw_breaker_record(gw_breaker_t *b, long long now, int ok, unsigned probe) {
    long long sec = now / 1000;
    int calls, failures, slot = (int)(sec % GW_BREAKER_BUCKETS);

    if (probe) {
        if (b->state != GW_BREAKER_HALF_OPEN || probe != b->spell) return; /* an earlier spell's */
        b->probes_out--;
        if (!ok) {
            set_state(b, GW_BREAKER_OPEN, now);
        } else if (++b->probes_ok >= b->o.probes) {
            set_state(b, GW_BREAKER_CLOSED, now);
        }
        return;
    }
    if (b->bucket[slot].second != sec) {
        b->bucket[slot].second = sec;
        b->bucket[slot].calls = b->bucket[slot].failures = 0;
    }
    b->bucket[slot].calls++;
    b->bucket[slot].failures += !ok;
    if (b->state != GW_BREAKER_CLOSED || ok) return;
    gw_breaker_counts(b, now, &calls, &failures);
    if (calls >= b->o.min_calls && (double)failures >= b->o.failure_rate * calls) set_state(b, GW_BREAKER_OPEN, now);
}

long long gw_breaker_retry_after_ms(gw_breaker_t *b, long long now) {
    if (gw_breaker_state(b, now) != GW_BREAKER_OPEN) return 0;
    return b->opened_at + b->o.open_ms - now;
}

long long gw_backoff_ms(int attempt, int base_ms, int cap_ms, unsigned *seed) {
    long long ceiling = base_ms;
    for (int i = 0; i < attempt && ceiling < cap_ms; i++) ceiling *= 2;
    if (ceiling > cap_ms) ceiling = cap_ms;
    return (long long)((double)rand_r(seed) / ((double)RAND_MAX + 1.0) * (double)(ceiling + 1));
}
