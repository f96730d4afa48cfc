/* Unit tests of the gateway's circuit breaker and full-jitter backoff (gateway/resilience.h).
 * The clock is an argument, so every test drives time by hand and is deterministic; the backoff
 * draws from a fixed rand_r seed. Times start at T0 so no bucket sits at second 0 by accident. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../gateway/resilience.h"

#define T0 1000000LL /* ms; second 1000 of the monotonic clock */
#define MAX_CHANGES 16

/* Every on_change call, in order. */
typedef struct {
    int n;
    gw_breaker_state_t from[MAX_CHANGES], to[MAX_CHANGES];
} changes_t;

static void on_change(gw_breaker_state_t from, gw_breaker_state_t to, void *opaque) {
    changes_t *c = opaque;
    cr_assert_lt(c->n, MAX_CHANGES, "more state changes than the test expects");
    c->from[c->n] = from;
    c->to[c->n] = to;
    c->n++;
}

/* failure_rate 0.5, min_calls 10, a 10 s window, open for 5 s, 2 probes. */
static gw_breaker_opts_t opts(changes_t *c) {
    memset(c, 0, sizeof(*c));
    return (gw_breaker_opts_t){.failure_rate = 0.5,
                               .min_calls = 10,
                               .window_ms = 10000,
                               .open_ms = 5000,
                               .probes = 2,
                               .on_change = on_change,
                               .opaque = c};
}

/* An ordinary call that starts and ends at `now`; it must be admitted as a non-probe. */
static void call(gw_breaker_t *b, long long now, int ok) {
    unsigned probe = 99;
    cr_assert_eq(gw_breaker_acquire(b, now, &probe), 1, "a closed breaker refused a call at %lld", now);
    cr_assert_eq(probe, 0);
    gw_breaker_record(b, now, ok, probe);
}

static void calls(gw_breaker_t *b, long long now, int n, int ok) {
    for (int i = 0; i < n; i++) call(b, now, ok);
}

/* A breaker opened at `at` by min_calls failures. */
static void open_at(gw_breaker_t *b, changes_t *c, long long at) {
    gw_breaker_opts_t o = opts(c);
    gw_breaker_init(b, &o);
    calls(b, at, o.min_calls, 0);
    cr_assert_eq(gw_breaker_state(b, at), GW_BREAKER_OPEN);
}

static int acquire_probe(gw_breaker_t *b, long long now) {
    unsigned probe = 0;
    int ok = gw_breaker_acquire(b, now, &probe);
    cr_assert(!ok || probe != 0, "a half-open breaker admitted a call that is not a probe");
    return ok;
}

/* ---- closed ----------------------------------------------------------------------------------- */

Test(breaker, closed_stays_closed_below_min_calls_even_when_every_call_fails) {
    changes_t c;
    gw_breaker_opts_t o = opts(&c);
    gw_breaker_t b;
    int n, f;

    gw_breaker_init(&b, &o);
    cr_expect_eq(gw_breaker_state(&b, T0), GW_BREAKER_CLOSED);
    calls(&b, T0, o.min_calls - 1, 0);
    gw_breaker_counts(&b, T0, &n, &f);
    cr_expect_eq(n, 9);
    cr_expect_eq(f, 9);
    cr_expect_eq(gw_breaker_state(&b, T0), GW_BREAKER_CLOSED, "100%% failures, but only 9 of 10 calls");
    cr_expect_eq(c.n, 0);
    call(&b, T0, 0); /* the 10th */
    cr_expect_eq(gw_breaker_state(&b, T0), GW_BREAKER_OPEN);
}

Test(breaker, opens_when_the_failure_rate_reaches_the_threshold) {
    changes_t c;
    gw_breaker_opts_t o = opts(&c);
    gw_breaker_t b;

    gw_breaker_init(&b, &o);
    calls(&b, T0, 6, 1);
    calls(&b, T0 + 100, 4, 0); /* 4 of 10 */
    cr_expect_eq(gw_breaker_state(&b, T0 + 100), GW_BREAKER_CLOSED);
    call(&b, T0 + 200, 0); /* 5 of 11 */
    cr_expect_eq(gw_breaker_state(&b, T0 + 200), GW_BREAKER_CLOSED);
    call(&b, T0 + 300, 0); /* 6 of 12: exactly 0.5 */
    cr_expect_eq(gw_breaker_state(&b, T0 + 300), GW_BREAKER_OPEN);
    cr_expect_eq(c.n, 1);
}

Test(breaker, successes_alone_never_open_it) {
    changes_t c;
    gw_breaker_opts_t o = opts(&c);
    gw_breaker_t b;

    o.failure_rate = 0.01;
    gw_breaker_init(&b, &o);
    calls(&b, T0, 1000, 1);
    cr_expect_eq(gw_breaker_state(&b, T0), GW_BREAKER_CLOSED);
}

Test(breaker, failures_older_than_the_window_do_not_count) {
    changes_t c;
    gw_breaker_opts_t o = opts(&c);
    gw_breaker_t b;
    int n, f;

    gw_breaker_init(&b, &o);
    calls(&b, T0, 9, 0);
    gw_breaker_counts(&b, T0 + 11000, &n, &f); /* 11 s later, 10 s window */
    cr_expect_eq(n, 0);
    cr_expect_eq(f, 0);
    call(&b, T0 + 11000, 0); /* would be the 10th failure if the old ones still counted */
    cr_expect_eq(gw_breaker_state(&b, T0 + 11000), GW_BREAKER_CLOSED);
    gw_breaker_counts(&b, T0 + 11000, &n, &f);
    cr_expect_eq(n, 1);
    cr_expect_eq(f, 1);
}

Test(breaker, failures_inside_the_window_still_count) {
    changes_t c;
    gw_breaker_opts_t o = opts(&c);
    gw_breaker_t b;
    int n, f;

    gw_breaker_init(&b, &o);
    calls(&b, T0, 9, 0);
    gw_breaker_counts(&b, T0 + 9999, &n, &f); /* second 1009: seconds 1000..1009 are the window */
    cr_expect_eq(n, 9);
    gw_breaker_counts(&b, T0 + 10000, &n, &f); /* second 1010: 1001..1010, second 1000 has left */
    cr_expect_eq(n, 0);
    call(&b, T0 + 9000, 0);
    cr_expect_eq(gw_breaker_state(&b, T0 + 9000), GW_BREAKER_OPEN);
}

Test(breaker, a_bucket_reused_a_minute_later_starts_from_zero) {
    changes_t c;
    gw_breaker_opts_t o = opts(&c);
    gw_breaker_t b;
    int n, f;

    o.window_ms = 60000;
    gw_breaker_init(&b, &o);
    calls(&b, T0, 9, 0);
    call(&b, T0 + 60000, 0); /* the same one-second slot of the ring, 60 s later */
    gw_breaker_counts(&b, T0 + 60000, &n, &f);
    cr_expect_eq(n, 1);
    cr_expect_eq(f, 1);
    cr_expect_eq(gw_breaker_state(&b, T0 + 60000), GW_BREAKER_CLOSED);
}

/* ---- open ------------------------------------------------------------------------------------- */

Test(breaker, open_refuses_calls_and_retry_after_counts_down) {
    changes_t c;
    gw_breaker_t b;
    unsigned probe = 99;

    open_at(&b, &c, T0);
    cr_expect_eq(gw_breaker_acquire(&b, T0, &probe), 0);
    cr_expect_eq(probe, 0);
    cr_expect_eq(gw_breaker_retry_after_ms(&b, T0), 5000);
    cr_expect_eq(gw_breaker_retry_after_ms(&b, T0 + 1500), 3500);
    cr_expect_eq(gw_breaker_acquire(&b, T0 + 4999, &probe), 0);
    cr_expect_eq(gw_breaker_retry_after_ms(&b, T0 + 4999), 1);
    cr_expect_eq(gw_breaker_state(&b, T0 + 4999), GW_BREAKER_OPEN);
    cr_expect_eq(gw_breaker_state(&b, T0 + 5000), GW_BREAKER_HALF_OPEN);
    cr_expect_eq(gw_breaker_retry_after_ms(&b, T0 + 5000), 0, "0 once it is no longer open");
}

Test(breaker, retry_after_is_zero_while_closed) {
    changes_t c;
    gw_breaker_opts_t o = opts(&c);
    gw_breaker_t b;

    gw_breaker_init(&b, &o);
    cr_expect_eq(gw_breaker_retry_after_ms(&b, T0), 0);
}

/* ---- half-open -------------------------------------------------------------------------------- */

Test(breaker, half_open_admits_exactly_probes_calls_at_once) {
    changes_t c;
    gw_breaker_t b;

    open_at(&b, &c, T0);
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1);
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1);
    cr_expect_eq(acquire_probe(&b, T0 + 5001), 0, "a third probe while two are out");
    cr_expect_eq(acquire_probe(&b, T0 + 9000), 0, "still two out, however long it takes");
    gw_breaker_record(&b, T0 + 9000, 1, b.spell); /* one comes back fine: one place frees */
    cr_expect_eq(gw_breaker_state(&b, T0 + 9000), GW_BREAKER_HALF_OPEN);
    cr_expect_eq(acquire_probe(&b, T0 + 9000), 1);
    cr_expect_eq(acquire_probe(&b, T0 + 9000), 0);
}

Test(breaker, every_probe_succeeding_closes_it_with_a_fresh_window) {
    changes_t c;
    gw_breaker_t b;
    int n, f;

    open_at(&b, &c, T0); /* 10 failures in second 1000 */
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1);
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1);
    gw_breaker_record(&b, T0 + 5100, 1, b.spell);
    cr_expect_eq(gw_breaker_state(&b, T0 + 5100), GW_BREAKER_HALF_OPEN, "one success of two");
    gw_breaker_record(&b, T0 + 5200, 1, b.spell);
    cr_expect_eq(gw_breaker_state(&b, T0 + 5200), GW_BREAKER_CLOSED);
    gw_breaker_counts(&b, T0 + 5200, &n, &f);
    cr_expect_eq(n, 0, "the failures that opened it are forgotten");
    cr_expect_eq(f, 0);
    call(&b, T0 + 5300, 0); /* with the old 10 it would be 11 of 11 */
    cr_expect_eq(gw_breaker_state(&b, T0 + 5300), GW_BREAKER_CLOSED);
}

Test(breaker, one_probe_failing_opens_it_again_for_a_new_period) {
    changes_t c;
    gw_breaker_t b;
    long long t1 = T0 + 5000, t2 = t1 + 200;

    open_at(&b, &c, T0);
    cr_expect_eq(acquire_probe(&b, t1), 1);
    cr_expect_eq(acquire_probe(&b, t1), 1);
    gw_breaker_record(&b, t2, 0, b.spell);
    cr_expect_eq(gw_breaker_state(&b, t2), GW_BREAKER_OPEN);
    cr_expect_eq(gw_breaker_retry_after_ms(&b, t2), 5000, "a whole new open period from the failure");
    cr_expect_eq(gw_breaker_state(&b, t2 + 4999), GW_BREAKER_OPEN);
    cr_expect_eq(gw_breaker_state(&b, t2 + 5000), GW_BREAKER_HALF_OPEN);
    cr_expect_eq(acquire_probe(&b, t2 + 5000), 1, "the new half-open spell has all its probes");
    cr_expect_eq(acquire_probe(&b, t2 + 5000), 1);
    cr_expect_eq(acquire_probe(&b, t2 + 5000), 0);
}

Test(breaker, a_probe_ending_after_the_breaker_reopened_is_ignored) {
    changes_t c;
    gw_breaker_t b;
    int n0, f0, n, f;

    open_at(&b, &c, T0);
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1);
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1);
    gw_breaker_record(&b, T0 + 5100, 0, b.spell); /* the first fails: open again */
    gw_breaker_counts(&b, T0 + 5100, &n0, &f0);
    int changes = c.n;
    gw_breaker_record(&b, T0 + 5200, 1, b.spell); /* the second comes back fine, too late */
    cr_expect_eq(gw_breaker_state(&b, T0 + 5200), GW_BREAKER_OPEN);
    cr_expect_eq(gw_breaker_retry_after_ms(&b, T0 + 5200), 4900, "the open period is not moved");
    cr_expect_eq(c.n, changes, "no state change");
    gw_breaker_counts(&b, T0 + 5200, &n, &f);
    cr_expect_eq(n, n0, "a probe is not an ordinary call");
    cr_expect_eq(f, f0);
}

Test(breaker, a_probe_ending_after_the_breaker_closed_is_ignored) {
    changes_t c;
    gw_breaker_t b;
    int n, f;

    open_at(&b, &c, T0);
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1); /* A */
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1); /* B */
    gw_breaker_record(&b, T0 + 5100, 1, b.spell);        /* A fine */
    cr_expect_eq(acquire_probe(&b, T0 + 5100), 1); /* C takes A's place */
    gw_breaker_record(&b, T0 + 5200, 1, b.spell);        /* B fine: two successes close it */
    cr_expect_eq(gw_breaker_state(&b, T0 + 5200), GW_BREAKER_CLOSED);
    int changes = c.n;
    gw_breaker_record(&b, T0 + 5300, 0, b.spell); /* C fails, but the breaker is closed now */
    cr_expect_eq(gw_breaker_state(&b, T0 + 5300), GW_BREAKER_CLOSED);
    cr_expect_eq(c.n, changes);
    gw_breaker_counts(&b, T0 + 5300, &n, &f);
    cr_expect_eq(n, 0, "nor is it counted as an ordinary call");
    cr_expect_eq(f, 0);
}

Test(breaker, calls_admitted_before_it_opened_do_not_decide_while_half_open) {
    changes_t c;
    gw_breaker_t b;

    open_at(&b, &c, T0);
    cr_expect_eq(acquire_probe(&b, T0 + 5000), 1);
    for (int i = 0; i < 20; i++) gw_breaker_record(&b, T0 + 5100, 0, 0); /* late ordinary failures */
    cr_expect_eq(gw_breaker_state(&b, T0 + 5100), GW_BREAKER_HALF_OPEN, "only probes decide");
    for (int i = 0; i < 20; i++) gw_breaker_record(&b, T0 + 5100, 1, 0); /* late ordinary successes */
    cr_expect_eq(gw_breaker_state(&b, T0 + 5100), GW_BREAKER_HALF_OPEN);
}

/* A probe admitted in one half-open spell and ending in the next (possible when a request's
 * deadline is longer than GATEWAY_BREAKER_OPEN_MS) must not count in the new spell, or probes_out
 * would go to -1 and a third concurrent probe get in. */
Test(breaker, a_probe_from_an_earlier_half_open_spell_is_ignored) {
    changes_t c;
    gw_breaker_t b;
    long long t1 = T0 + 5000;

    open_at(&b, &c, T0);
    cr_expect_eq(acquire_probe(&b, t1), 1); /* A */
    cr_expect_eq(acquire_probe(&b, t1), 1); /* B */
    gw_breaker_record(&b, t1 + 100, 0, 1);  /* A fails: open until t1 + 5100 */
    cr_expect_eq(gw_breaker_state(&b, t1 + 5100), GW_BREAKER_HALF_OPEN);
    gw_breaker_record(&b, t1 + 5200, 1, 1); /* B, from the first spell, ends now */
    cr_expect_eq(acquire_probe(&b, t1 + 5200), 1);
    cr_expect_eq(acquire_probe(&b, t1 + 5200), 1);
    cr_expect_eq(acquire_probe(&b, t1 + 5200), 0, "only `probes` at once in the new spell");
}

/* ---- on_change -------------------------------------------------------------------------------- */

Test(breaker, on_change_reports_every_transition_with_from_and_to) {
    changes_t c;
    gw_breaker_t b;
    long long t = T0;
    static const gw_breaker_state_t want[][2] = {
        {GW_BREAKER_CLOSED, GW_BREAKER_OPEN},      {GW_BREAKER_OPEN, GW_BREAKER_HALF_OPEN},
        {GW_BREAKER_HALF_OPEN, GW_BREAKER_OPEN},   {GW_BREAKER_OPEN, GW_BREAKER_HALF_OPEN},
        {GW_BREAKER_HALF_OPEN, GW_BREAKER_CLOSED}, {GW_BREAKER_CLOSED, GW_BREAKER_OPEN},
    };

    open_at(&b, &c, t);                    /* closed -> open */
    cr_expect_eq(c.n, 1);
    gw_breaker_acquire(&b, t + 10, &(unsigned){0}); /* refused: no change */
    gw_breaker_state(&b, t + 20);
    cr_expect_eq(c.n, 1, "no call while nothing changes");
    t += 5000;
    cr_expect_eq(acquire_probe(&b, t), 1); /* open -> half_open, seen on acquire */
    gw_breaker_record(&b, t, 0, b.spell);        /* half_open -> open */
    t += 5000;
    cr_expect_eq(gw_breaker_state(&b, t), GW_BREAKER_HALF_OPEN); /* open -> half_open, seen on a query */
    cr_expect_eq(acquire_probe(&b, t), 1);
    cr_expect_eq(acquire_probe(&b, t), 1);
    gw_breaker_record(&b, t, 1, b.spell);
    gw_breaker_record(&b, t, 1, b.spell);        /* half_open -> closed */
    calls(&b, t + 1000, 10, 0);            /* closed -> open, once */
    cr_assert_eq(c.n, (int)(sizeof(want) / sizeof(want[0])));
    for (int i = 0; i < c.n; i++) {
        cr_expect_eq(c.from[i], want[i][0], "change %d from %s, want %s", i, gw_breaker_state_name(c.from[i]),
                     gw_breaker_state_name(want[i][0]));
        cr_expect_eq(c.to[i], want[i][1], "change %d to %s, want %s", i, gw_breaker_state_name(c.to[i]),
                     gw_breaker_state_name(want[i][1]));
    }
}

Test(breaker, state_names_are_the_ones_health_shows) {
    cr_expect_str_eq(gw_breaker_state_name(GW_BREAKER_CLOSED), "closed");
    cr_expect_str_eq(gw_breaker_state_name(GW_BREAKER_OPEN), "open");
    cr_expect_str_eq(gw_breaker_state_name(GW_BREAKER_HALF_OPEN), "half_open");
}

Test(breaker, out_of_range_options_are_clamped) {
    gw_breaker_opts_t o = {.failure_rate = 0.5, .min_calls = 0, .window_ms = 10, .open_ms = 1000, .probes = 0};
    gw_breaker_t b;
    int n, f;

    gw_breaker_init(&b, &o);
    call(&b, T0, 0); /* min_calls 0 behaves as 1 */
    cr_expect_eq(gw_breaker_state(&b, T0), GW_BREAKER_OPEN);
    cr_expect_eq(acquire_probe(&b, T0 + 1000), 1); /* probes 0 behaves as 1 */
    cr_expect_eq(acquire_probe(&b, T0 + 1000), 0);
    gw_breaker_record(&b, T0 + 1000, 1, 1);
    cr_expect_eq(gw_breaker_state(&b, T0 + 1000), GW_BREAKER_CLOSED);
    call(&b, T0 + 1000, 1);
    gw_breaker_counts(&b, T0 + 1999, &n, &f); /* window 10 ms behaves as one second */
    cr_expect_eq(n, 1);
    gw_breaker_counts(&b, T0 + 2000, &n, &f);
    cr_expect_eq(n, 0);
}

/* ---- backoff ---------------------------------------------------------------------------------- */

#define DRAWS 20000

static long long ceiling_of(int attempt, long long base, long long cap) {
    long long c = base;
    for (int i = 0; i < attempt && c < cap; i++) c *= 2;
    return c < cap ? c : cap;
}

Test(backoff, every_draw_is_within_zero_and_the_capped_exponential_ceiling) {
    unsigned seed = 42;
    for (int attempt = 0; attempt <= 40; attempt++) {
        long long ceiling = ceiling_of(attempt, 50, 1000);
        for (int i = 0; i < DRAWS / 10; i++) {
            long long d = gw_backoff_ms(attempt, 50, 1000, &seed);
            cr_assert(d >= 0 && d <= ceiling, "attempt %d drew %lld, outside [0, %lld]", attempt, d, ceiling);
        }
    }
}

Test(backoff, the_ceiling_doubles_with_each_attempt_until_the_cap) {
    unsigned seed = 7;
    double prev_mean = 0;

    for (int attempt = 0; attempt <= 8; attempt++) {
        long long ceiling = ceiling_of(attempt, 50, 1000), max = 0;
        double sum = 0;
        for (int i = 0; i < DRAWS; i++) {
            long long d = gw_backoff_ms(attempt, 50, 1000, &seed);
            sum += (double)d;
            if (d > max) max = d;
        }
        double mean = sum / DRAWS;
        cr_expect_leq(max, ceiling, "attempt %d", attempt);
        cr_expect_geq(max, ceiling * 95 / 100, "attempt %d: the largest draw %lld, ceiling %lld", attempt, max, ceiling);
        cr_expect(mean > ceiling * 0.45 && mean < ceiling * 0.55, "attempt %d: mean %.1f of ceiling %lld", attempt,
                  mean, ceiling);
        if (attempt >= 1 && attempt <= 4) /* 50, 100, 200, 400, 800: still below the cap */
            cr_expect(mean > prev_mean * 1.8, "attempt %d: mean %.1f after %.1f", attempt, mean, prev_mean);
        if (attempt >= 5) /* 1600 > 1000: capped */
            cr_expect_eq(ceiling, 1000);
        prev_mean = mean;
    }
}

Test(backoff, full_jitter_covers_the_whole_range) {
    unsigned seed = 12345;
    long long ceiling = 800; /* attempt 4 of base 50 */
    int low = 0, high = 0, bins[10] = {0};

    for (int i = 0; i < DRAWS; i++) {
        long long d = gw_backoff_ms(4, 50, 1000, &seed);
        low += d < ceiling / 4;
        high += d > ceiling * 3 / 4;
        bins[d * 10 / (ceiling + 1)]++;
    }
    cr_expect_gt(low, DRAWS / 5, "%d of %d draws below 25%% of the ceiling", low, DRAWS);
    cr_expect_gt(high, DRAWS / 5, "%d of %d draws above 75%% of the ceiling", high, DRAWS);
    for (int i = 0; i < 10; i++) /* uniform: about DRAWS / 10 in each tenth */
        cr_expect(bins[i] > DRAWS / 10 * 8 / 10 && bins[i] < DRAWS / 10 * 12 / 10, "tenth %d holds %d draws", i,
                  bins[i]);
}

Test(backoff, both_ends_of_the_range_can_be_drawn) {
    unsigned seed = 1;
    int seen[2] = {0, 0};
    for (int i = 0; i < 1000; i++) {
        long long d = gw_backoff_ms(0, 1, 1, &seed); /* ceiling 1: 0 or 1 */
        cr_assert(d == 0 || d == 1, "drew %lld", d);
        seen[d]++;
    }
    cr_expect_gt(seen[0], 0);
    cr_expect_gt(seen[1], 0);
}

Test(backoff, a_base_above_the_cap_is_capped) {
    unsigned seed = 3;
    for (int i = 0; i < 1000; i++) cr_assert_leq(gw_backoff_ms(0, 500, 100, &seed), 100);
}

Test(backoff, the_same_seed_gives_the_same_sequence) {
    unsigned a = 99, b = 99;
    for (int i = 0; i < 100; i++) cr_expect_eq(gw_backoff_ms(i % 8, 50, 1000, &a), gw_backoff_ms(i % 8, 50, 1000, &b));
}

/* A lone client facing a dead path: each call takes the whole 5 s deadline, so two end in a 10 s
 * window. With the minimum following the deadline, two failed calls open the breaker; without
 * call_ms the same two never reach min_calls (10). */
Test(breaker, minimum_follows_the_deadline_so_a_lone_client_opens_it) {
    changes_t c;
    gw_breaker_t b;
    gw_breaker_opts_t o = opts(&c);
    o.call_ms = 5000;
    gw_breaker_init(&b, &o);
    call(&b, T0 + 5000, 0);
    cr_expect_eq(gw_breaker_state(&b, T0 + 5000), GW_BREAKER_CLOSED, "one failure is not a rate");
    call(&b, T0 + 10000, 0);
    cr_expect_eq(gw_breaker_state(&b, T0 + 10000), GW_BREAKER_OPEN);

    o = opts(&c);
    gw_breaker_init(&b, &o);
    call(&b, T0 + 5000, 0);
    call(&b, T0 + 10000, 0);
    cr_expect_eq(gw_breaker_state(&b, T0 + 10000), GW_BREAKER_CLOSED);
}

/* A short deadline does not lower the minimum below what min_calls says, nor below 2. */
Test(breaker, minimum_follows_the_deadline_within_bounds) {
    changes_t c;
    gw_breaker_t b;
    gw_breaker_opts_t o = opts(&c);
    o.call_ms = 100; /* 100 calls fit in the window: min_calls (10) stays */
    gw_breaker_init(&b, &o);
    calls(&b, T0, 9, 0);
    cr_expect_eq(gw_breaker_state(&b, T0), GW_BREAKER_CLOSED);
    o = opts(&c);
    o.call_ms = 60000; /* longer than the window: still 2 calls, never 1 */
    gw_breaker_init(&b, &o);
    call(&b, T0, 0);
    cr_expect_eq(gw_breaker_state(&b, T0), GW_BREAKER_CLOSED);
    call(&b, T0, 0);
    cr_expect_eq(gw_breaker_state(&b, T0), GW_BREAKER_OPEN);
}
