/* vxsoak: the kill-anything soak (issue 4). tests/soak/soak.sh sets up a stack of its own and runs
 * `vxsoak run`; the README next to this file lists every setting.
 *
 *   1. seed a catalog with scarce stock          4. stop the load and the chaos, switch crash points off
 *   2. switch the crash points and gremlin on    5. wait until quiet
 *   3. load + chaos for DURATION seconds         6. the five checks, then the report
 *
 * Invariant: exit 0 only when every check ran and found nothing; 1 when a check found a violation;
 * 2 when the soak itself could not do its job (a component that would not start, a topic that could
 * not be read, too few kills): never a silent pass. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "soak.h"
#include "vx_log.h"

#define PROGRESS_MS 10000

static long env_long(const char *name, long dflt, long lo, long hi, int *bad) {
    const char *s = getenv(name);
    char *end;
    long v;

    if (!s || !*s) return dflt;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) {
        fprintf(stderr, "vxsoak: %s=%s is not an integer from %ld to %ld\n", name, s, lo, hi);
        *bad = 1;
    }
    return v;
}

static double env_pct(const char *name, double dflt, int *bad) {
    const char *s = getenv(name);
    char *end;
    double v;

    if (!s || !*s) return dflt;
    v = strtod(s, &end);
    if (*end || !(v >= 0 && v <= 100)) {
        fprintf(stderr, "vxsoak: %s=%s is not a percentage from 0 to 100\n", name, s);
        *bad = 1;
    }
    return v;
}

static const char *env_str(const char *name, const char *dflt) {
    const char *s = getenv(name);
    return s ? s : dflt;
}

/* A comma-separated list of component names as a bit set (bit i: soak_comp_names[i]); "none": 0, no
 * chaos driver at all (tests/faults/faults.sh brings its own faults and keeps the soak's load and checks). */
static unsigned env_components(const char *name, int *bad) {
    char buf[256], *save = NULL;
    unsigned set = 0;
    int i;

    snprintf(buf, sizeof(buf), "%s", env_str(name, "postgres,kafka,inventory-svc,order-svc,gateway"));
    if (strcmp(buf, "none") == 0) return 0;
    for (char *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        for (i = 0; i < SOAK_NCOMP && strcmp(t, soak_comp_names[i]) != 0; i++) {}
        if (i == SOAK_NCOMP) {
            fprintf(stderr, "vxsoak: %s: unknown component \"%s\"\n", name, t);
            *bad = 1;
        } else {
            set |= 1u << i;
        }
    }
    if (!set) *bad = 1;
    return set;
}

/* Default crash points: rare enough that the services make progress between crashes. */
#define DEFAULT_CRASH_POINTS                                                                                 \
    "before_commit%0.2,after_commit_before_publish%0.2,mid_batch%0.2,after_publish_before_offset_commit%0.2," \
    "after_produce_before_reply%0.2"

static int read_opts(soak_opts_t *o) {
    static char run_id[24];
    int bad = 0;

    o->duration_s = env_long("DURATION", 600, 10, 7 * 86400, &bad);
    o->kill_every_s = env_long("KILL_EVERY", 10, 1, 86400, &bad);
    o->min_kills = env_long("MIN_KILLS", 0, 0, 1000000, &bad);
    o->quiesce_s = env_long("SOAK_QUIESCE_SECS", 300, 10, 86400, &bad);
    o->down_max_ms = env_long("SOAK_DOWN_MAX_MS", 2000, 0, 600000, &bad);
    o->http_threads = env_long("SOAK_HTTP_THREADS", 32, 1, 64, &bad);
    o->http_rate = env_long("SOAK_HTTP_RATE", 60, 1, 100000, &bad);
    o->kafka_rate = env_long("SOAK_KAFKA_RATE", 60, 1, 100000, &bad);
    o->restock_rate = env_long("SOAK_RESTOCK_RATE", 6, 0, 100000, &bad);
    o->http_attempts = env_long("SOAK_HTTP_ATTEMPTS", 25, 1, 1000, &bad);
    o->reask_max = env_long("SOAK_REASK_MAX", 1000, 0, 10000000, &bad);
    o->bad_every_s = env_long("SOAK_BAD_EVERY", 10, 0, 86400, &bad);
    o->products = env_long("SOAK_PRODUCTS", 10, 1, SOAK_MAX_PRODUCTS - 2, &bad);
    o->cancel_pct = env_pct("SOAK_CANCEL_PCT", 10, &bad);
    o->dup_pct = env_pct("SOAK_DUP_PCT", 3, &bad);
    o->double_kill_pct = env_pct("SOAK_DOUBLE_KILL_PCT", 25, &bad);
    o->components = env_components("SOAK_COMPONENTS", &bad);
    o->crash_points = env_str("SOAK_CRASH_POINTS", DEFAULT_CRASH_POINTS);
    o->gremlin_delay_ms = env_str("SOAK_GREMLIN_DELAY_MS", "200");
    o->gremlin_every = env_str("SOAK_GREMLIN_EVERY", "0");
    o->gremlin_fraction = env_str("SOAK_GREMLIN_FRACTION", "0.005");
    o->chaos_token = env_str("VX_CHAOS_TOKEN", "");
    o->gateway = env_str("GATEWAY_HTTP_ADDR", "127.0.0.1:18480");
    o->orders_http = env_str("ORDERS_HTTP_ADDR", "127.0.0.1:18481");
    o->inventory_http = env_str("INVENTORY_HTTP_ADDR", "127.0.0.1:18482");
    o->orders_db = env_str("ORDERS_DB", "postgresql://valerix@127.0.0.1:25442/orders");
    o->inventory_db = env_str("INVENTORY_DB", "postgresql://valerix@127.0.0.1:25442/inventory");
    o->repo = env_str("SOAK_REPO", ".");
    o->data_dir = env_str("VX_DATA_DIR", "");
    o->seed = (unsigned)env_long("SOAK_SEED", (long)(time(NULL) & 0x7fffffff), 0, 0x7fffffff, &bad);
    snprintf(run_id, sizeof(run_id), "s%08x", (unsigned)time(NULL));
    o->run_id = run_id;
    if (o->data_dir[0] != '/') {
        fprintf(stderr, "vxsoak: VX_DATA_DIR must be the soak stack's data folder, an absolute path\n");
        bad = 1;
    }
    return bad ? -1 : 0;
}

static void print_opts(const soak_opts_t *o) {
    soak_say("run %s seed %u: DURATION=%ld KILL_EVERY=%ld MIN_KILLS=%ld; load: %ld HTTP orders/s over %ld connections, "
             "%ld Kafka orders/s, %ld restocks/s, %.1f%% cancelled, %.1f%% duplicated; %ld products",
             o->run_id, o->seed, o->duration_s, o->kill_every_s, o->min_kills, o->http_rate, o->http_threads,
             o->kafka_rate, o->restock_rate, o->cancel_pct, o->dup_pct, o->products);
    soak_say("crash points: %s; gremlin: %s ms, every %s, fraction %s", o->crash_points[0] ? o->crash_points : "(off)",
             o->gremlin_delay_ms, o->gremlin_every, o->gremlin_fraction);
}

/* ---- the run ----------------------------------------------------------------------------------------- */

static void progress(int64_t t0) {
    soak_load_stats_t l;
    soak_chaos_stats_t c;
    long exits = 0;

    soak_load_stats(&l);
    soak_chaos_stats(&c);
    for (int i = 0; i < SOAK_NCOMP; i++) exits += c.crash_exits[i] + c.other_exits[i];
    soak_say("%4lds: %ld HTTP requests (%ld clients retried), %ld Kafka orders, %ld cancels, %ld kills, %ld exits",
             (long)((vt_mono_ms() - t0) / 1000), l.http_requests, l.http_retried_clients, l.kafka_places,
             l.kafka_cancels, c.total_kills, exits);
}

/* Load and chaos until DURATION is over and MIN_KILLS are done (at most twice DURATION). */
static int chaos_phase(const soak_opts_t *o, int64_t *chaos_ms, char *err, size_t errsz) {
    int64_t t0 = vt_mono_ms(), last = t0, end = t0 + o->duration_s * 1000, hard_end = t0 + 2 * o->duration_s * 1000;
    soak_chaos_stats_t c;

    if (soak_load_start(o, err, errsz) || soak_chaos_start(o, err, errsz)) return -1;
    for (;;) {
        vt_sleep_ms(200);
        soak_chaos_stats(&c);
        if (vt_mono_ms() >= hard_end || (vt_mono_ms() >= end && c.total_kills >= o->min_kills) ||
            soak_chaos_failed())
            break;
        if (vt_mono_ms() - last >= PROGRESS_MS) {
            progress(t0);
            last = vt_mono_ms();
        }
    }
    soak_say("stopping the load and the kills (components that exit are still restarted until the load is done)");
    soak_chaos_stop_kills();
    soak_load_stop();
    *chaos_ms = vt_mono_ms() - t0;
    return soak_chaos_stop(err, errsz);
}

static int settle(const soak_opts_t *o, int64_t *quiet_ms, char *err, size_t errsz) {
    int64_t t0 = vt_mono_ms();
    int rc;

    soak_say("making sure every component runs; switching the crash points and the gremlin off");
    if (soak_chaos_ensure_up(o, err, errsz) || soak_chaos_arm(o, 0, err, errsz) || soak_chaos_ensure_up(o, err, errsz))
        return -1;
    rc = soak_check_quiesce(o, err, errsz);
    soak_load_reader_stop();
    soak_chaos_scan_logs(o);
    *quiet_ms = vt_mono_ms() - t0;
    return rc;
}

/* ---- the report ------------------------------------------------------------------------------------------ */

typedef struct {
    long http, http_final[3], http_gave_up, places, places_acked, cancels, cancels_acked, restocks, restocks_acked,
        seeds, bad, bad_acked;
} tally_t;

static void tally_ledger(tally_t *t) {
    memset(t, 0, sizeof(*t));
    for (size_t i = 0; i < soak_ledger_count(); i++) {
        soak_cmd_t *c = soak_ledger_at(i);
        switch (c->kind) {
        case SOAK_HTTP:
            t->http++;
            t->http_final[0] += c->final_code == 201;
            t->http_final[1] += c->final_code == 409;
            t->http_final[2] += c->final_code == 202;
            t->http_gave_up += !c->final_code;
            break;
        case SOAK_PLACE: t->places++; t->places_acked += c->acked > 0; break;
        case SOAK_CANCEL: t->cancels++; t->cancels_acked += c->acked > 0; break;
        case SOAK_RESTOCK: t->restocks++; t->restocks_acked += c->acked > 0; t->seeds += c->seed; break;
        case SOAK_BAD: t->bad++; t->bad_acked += c->acked > 0; break;
        }
    }
}

static void report_chaos(const soak_chaos_stats_t *c) {
    printf("kills                %ld (%ld of them two components at once):", c->total_kills, c->double_kills);
    for (int i = 0; i < SOAK_NCOMP; i++) printf(" %s %ld", soak_comp_names[i], c->kills[i]);
    printf("\nexits at a crash point");
    for (int i = SOAK_INVENTORY; i < SOAK_NCOMP; i++) printf(" %s %ld", soak_comp_names[i], c->crash_exits[i]);
    printf("; other exits");
    for (int i = 0; i < SOAK_NCOMP; i++) printf(" %s %ld", soak_comp_names[i], c->other_exits[i]);
    printf("\ncrash-point hits    ");
    if (!c->npoints) printf(" none");
    for (int i = 0; i < c->npoints; i++) printf(" %s %ld", c->point[i], c->point_hits[i]);
    printf("\n");
}

static long report(const soak_check_result_t *r, int64_t chaos_ms, int64_t quiet_ms, int64_t total_ms) {
    soak_load_stats_t l;
    soak_chaos_stats_t c;
    tally_t t;
    long v = 0;

    soak_load_stats(&l);
    soak_chaos_stats(&c);
    tally_ledger(&t);
    for (int k = 1; k <= 5; k++) v += r->violations[k];
    printf("\n======== soak report ========\n");
    printf("duration             %.1f s of load and chaos, %.1f s to settle, %.1f s in all\n", (double)chaos_ms / 1000,
           (double)quiet_ms / 1000, (double)total_ms / 1000);
    printf("orders over HTTP     %ld: accepted %ld (201 %ld, 409 %ld, 202 %ld), gave up %ld\n", t.http,
           t.http_final[0] + t.http_final[1] + t.http_final[2], t.http_final[0], t.http_final[1], t.http_final[2],
           t.http_gave_up);
    printf("orders over Kafka    %ld: acknowledged by the broker %ld; deliberate duplicates %ld\n", t.places,
           t.places_acked, l.kafka_duplicates);
    printf("other commands       CancelOrder %ld (acknowledged %ld), Restock %ld (acknowledged %ld, %ld of them the "
           "catalog), malformed %ld (acknowledged %ld)\n",
           t.cancels, t.cancels_acked, t.restocks, t.restocks_acked, t.seeds, t.bad, t.bad_acked);
    printf("final statuses       CONFIRMED %ld, REJECTED %ld, CANCELLED %ld, PENDING %ld (orders database: %ld)\n",
           r->confirmed, r->rejected, r->cancelled, r->pending, r->orders_db);
    report_chaos(&c);
    printf("client retries       %ld clients retried, %ld retries (transport errors %ld, 429 %ld, 5xx %ld); "
           "unexpected 4xx %ld\n",
           l.http_retried_clients, l.http_retries, l.http_transport_errors, l.http_429, l.http_5xx,
           l.http_4xx_unexpected);
    printf("gremlin              %ld results and events carry chaos-delay-ms\n", r->gremlin_delayed);
    printf("asked again          %ld clients at the end\n", r->reasked);
    if (r->lat.n)
        printf("202 -> decided       %ld orders: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms\n", r->lat.n,
               r->lat.p50, r->lat.p90, r->lat.p99, r->lat.max);
    else
        printf("202 -> decided       no 202 answers\n");
    /* by the outage the order waited on (soak_check.c, latency_202): figures, never a verdict */
    for (int k = 0; k < SOAK_LAT_CLASSES; k++) {
        const soak_lat_t *l = &r->lat_class[k];
        char kills[64] = "";
        if (k != SOAK_LAT_NONE) snprintf(kills, sizeof(kills), " (%ld kills and exits)", r->class_events[k]);
        if (l->n)
            printf("  after %-14s%s: %ld orders: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms\n",
                   soak_lat_class_names[k], kills, l->n, l->p50, l->p90, l->p99, l->max);
        else
            printf("  after %-14s%s: no orders\n", soak_lat_class_names[k], kills);
    }
    printf("Kafka order -> decided (acknowledged by the broker until its decision appeared)\n");
    for (int k = 0; k < SOAK_LAT_CLASSES; k++) {
        const soak_lat_t *l = &r->kafka_class[k];
        if (l->n)
            printf("  after %-14s: %ld orders: p50 %.0f ms, p90 %.0f ms, p99 %.0f ms, max %.0f ms\n",
                   soak_lat_class_names[k], l->n, l->p50, l->p90, l->p99, l->max);
        else
            printf("  after %-14s: no orders\n", soak_lat_class_names[k]);
    }
    printf("violations           1: %ld  2: %ld  3: %ld  4: %ld  5: %ld  (total %ld)\n", r->violations[1],
           r->violations[2], r->violations[3], r->violations[4], r->violations[5], v);
    return v;
}

/* The soak proves nothing about a component it never killed. */
static int coverage(const soak_opts_t *o, char *err, size_t errsz) {
    soak_chaos_stats_t c;
    soak_chaos_stats(&c);
    if (c.total_kills < o->min_kills) {
        snprintf(err, errsz, "only %ld kills, MIN_KILLS is %ld", c.total_kills, o->min_kills);
        return -1;
    }
    for (int i = 0; o->min_kills >= SOAK_NCOMP && i < SOAK_NCOMP; i++)
        if ((o->components >> i & 1) && !c.kills[i]) {
            snprintf(err, errsz, "%s was never killed", soak_comp_names[i]);
            return -1;
        }
    return 0;
}

static int run(const soak_opts_t *o) {
    char err[SOAK_ERR] = "";
    soak_check_result_t r = {0};
    int64_t t0 = vt_mono_ms(), chaos_ms = 0, quiet_ms = 0;
    long v;

    print_opts(o);
    soak_say("seeding the catalog (%ld products)", o->products);
    if (soak_load_seed(o, err, sizeof(err)) || soak_chaos_arm(o, 1, err, sizeof(err))) goto setup_failed;
    soak_say("load and chaos for %ld s", o->duration_s);
    if (chaos_phase(o, &chaos_ms, err, sizeof(err)) || settle(o, &quiet_ms, err, sizeof(err))) goto setup_failed;
    soak_say("checking");
    if (soak_check_run(o, &r, err, sizeof(err))) goto setup_failed;
    v = report(&r, chaos_ms, quiet_ms, vt_mono_ms() - t0);
    if (coverage(o, err, sizeof(err))) goto setup_failed;
    printf("RESULT               %s\n", v ? "FAIL: violations found" : "PASS: zero violations");
    return v ? 1 : 0;
setup_failed: {
    char ignored[SOAK_ERR];
    soak_load_stop();
    soak_chaos_stop(ignored, sizeof(ignored));
}
    printf("RESULT               FAIL: the soak could not do its job: %s\n", err);
    return 2;
}

int main(int argc, char **argv) {
    soak_opts_t o = {0};
    int rc;

    if (argc != 2 || strcmp(argv[1], "run") != 0) {
        fprintf(stderr, "usage: vxsoak run   (tests/soak/soak.sh sets up the stack and the settings)\n");
        return 2;
    }
    vx_log_init("vxsoak");
    if (read_opts(&o)) return 2;
    rc = run(&o);
    soak_ledger_free();
    return rc;
}
