/* resilience: the gateway's circuit breaker and retry backoff, pure logic with the clock passed in
 * (milliseconds from any monotonic origin), so tests drive time by hand.
 *
 * Breaker: CLOSED counts call outcomes in a rolling window of one-second buckets; when at least
 * min_calls ended there (fewer when calls are long: call_ms) and the failure share reaches
 * failure_rate it goes OPEN and refuses calls
 * for open_ms; then HALF_OPEN admits at most `probes` calls at once. A probe's outcome always comes
 * (every call is bounded by the request timeout), so it cannot stick half-open: `probes` successes
 * close it, one failure opens it again. Not thread-safe: the caller holds its own lock. */
#ifndef GW_RESILIENCE_H
#define GW_RESILIENCE_H

#define GW_BREAKER_BUCKETS 60 /* window at most 60 s at one-second buckets */

typedef enum { GW_BREAKER_CLOSED, GW_BREAKER_OPEN, GW_BREAKER_HALF_OPEN } gw_breaker_state_t;

typedef struct {
    double failure_rate; /* 0..1: the share of failures that opens the breaker */
    int min_calls;       /* calls in the window before the rate counts */
    int window_ms;       /* rolling window, 1000..60000, whole seconds */
    int open_ms;         /* how long OPEN refuses calls */
    int probes;          /* calls admitted at once while HALF_OPEN */
    /* The longest a call can take (the request deadline; 0: not known). A lone client, whose calls
     * each take the whole deadline when the path is dead, ends at most window_ms / call_ms calls in
     * the window: the minimum follows, min(min_calls, max(2, window_ms / call_ms)), so that client
     * too sees the breaker open instead of waiting out every deadline. */
    int call_ms;
    /* called on every state change (may be NULL) */
    void (*on_change)(gw_breaker_state_t from, gw_breaker_state_t to, void *opaque);
    void *opaque;
} gw_breaker_opts_t;

typedef struct {
    gw_breaker_opts_t o;
    gw_breaker_state_t state;
    long long opened_at;
    int probes_out, probes_ok;
    unsigned spell; /* which half-open spell a probe belongs to; older probes are ignored */
    struct {
        long long second; /* which second the counts belong to */
        int calls, failures;
    } bucket[GW_BREAKER_BUCKETS];
} gw_breaker_t;

void gw_breaker_init(gw_breaker_t *b, const gw_breaker_opts_t *o);
/* The state at `now` (an OPEN breaker whose time is up becomes HALF_OPEN here). */
gw_breaker_state_t gw_breaker_state(gw_breaker_t *b, long long now);
/* May a call start now? Returns 1 when admitted, 0 when refused. *probe is 0 for an ordinary call,
 * else a token naming the half-open spell the probe belongs to. */
int gw_breaker_acquire(gw_breaker_t *b, long long now, unsigned *probe);
/* Records how an admitted call ended; probe as set by gw_breaker_acquire. A probe of an earlier
 * spell (the breaker opened and half-opened again meanwhile) is ignored. */
void gw_breaker_record(gw_breaker_t *b, long long now, int ok, unsigned probe);
/* Milliseconds until an OPEN breaker lets probes in (0 when not OPEN). */
long long gw_breaker_retry_after_ms(gw_breaker_t *b, long long now);
/* Calls and failures in the window now, for /health and /metrics. */
void gw_breaker_counts(const gw_breaker_t *b, long long now, int *calls, int *failures);
const char *gw_breaker_state_name(gw_breaker_state_t s);

/* Full-jitter exponential backoff: a uniform draw from [0, min(cap_ms, base_ms * 2^attempt)],
 * attempt counted from 0. *seed is the caller's rand_r state. */
long long gw_backoff_ms(int attempt, int base_ms, int cap_ms, unsigned *seed);

#endif
