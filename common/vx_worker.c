/* vx_worker: the consuming services' skeleton. See vx_worker.h.
 *
 * One thread runs the loop: poll a batch, hand each message to the applier, apply what is ready,
 * settle (dead letters acknowledged, offsets stored, partitions paused or resumed), then the relay's
 * upkeep (stamp delivered rows, sweep forgotten ones, prune old ones). The loop's connection waits
 * at most VX_LOCK_TIMEOUT_MS on a lock; migrations and HTTP reads run on the HTTP thread's
 * connection, which waits as long as it takes. libmicrohttpd's single polling thread answers HTTP. */
#include "vx_worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vx_chaos.h"
#include "vx_config.h"
#include "vx_kafka.h"
#include "vx_log.h"
#include "vx_outbox.h"
#include "vx_pg.h"

#define BATCH_CAP 5000
#define MARK_EVERY_MS 100 /* delivered rows are stamped together: one transaction per 100 ms, not per batch */
#define SWEEP_EVERY_MS 1000
#define PRUNE_EVERY_MS 60000

struct vx_worker_s {
    const vx_worker_opts_t *o;
    PGconn *db;      /* the loop's connection */
    PGconn *http_db; /* the HTTP thread's connection (one polling thread: never shared) */
    rd_kafka_t *producer, *consumer;
    vx_outbox_t *outbox;
    vx_apply_t *apply;
    vx_http_t *http;
    long long next_mark, next_sweep, next_prune; /* next_mark: 0 while nothing waits to be stamped */
};

static volatile sig_atomic_t stopping;
static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vx_worker_config(vx_worker_opts_t *o, const char *prefix, char *errstr, size_t errstr_size) {
    char name[64];
    snprintf(name, sizeof(name), "%s_BATCH_MAX", prefix);
    return vx_cfg_int(name, 1000, 1, BATCH_CAP, &o->batch_max, errstr, errstr_size) ||
           vx_cfg_int("VX_TOPIC_PARTITIONS", VX_TOPIC_PARTITIONS_DEFAULT, 1, 1000, &o->partitions, errstr, errstr_size) ||
           vx_cfg_int("VX_TOPIC_RETENTION_MS", 7LL * 24 * 3600 * 1000, 60000, 1LL << 50, &o->topic_retention_ms,
                      errstr, errstr_size) ||
           vx_cfg_int("VX_OUTBOX_RETENTION_S", 7 * 24 * 3600, 60, 1LL << 40, &o->outbox_retention_s, errstr,
                      errstr_size) ||
           vx_cfg_int("VX_OUTBOX_SWEEP_GRACE_MS", 5000, 0, 3600000, &o->sweep_grace_ms, errstr, errstr_size) ||
           vx_cfg_int("VX_HOLD_MAX", 1000, 1, 1000000, &o->hold_max, errstr, errstr_size) ||
           vx_cfg_int("VX_LOCK_TIMEOUT_MS", 200, 1, 600000, &o->lock_timeout_ms, errstr, errstr_size);
}

/* Delivery reports: outbox rows are stamped later in one statement; dead letters are counted,
 * because their offsets may be stored only once they are safely in the DLQ topic. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    vx_worker_t *w = opaque;
    (void)rk;
    if (vx_outbox_on_delivery(w->outbox, m)) {
        if (m->err) vx_log(VX_LOG_WARN, "outbox_delivery_failed", "error", rd_kafka_err2str(m->err), NULL);
        return;
    }
    vx_apply_on_dlq_delivery(w->apply, m->err);
}

/* Before partitions go, the applier forgets what it holds of them (their offsets were never stored
 * past it, so their next owner applies it); then the assignment changes. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    vx_worker_t *w = opaque;
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && w->apply) vx_apply_revoke(w->apply, parts);
    vx_kafka_rebalance(rk, err, parts);
}

/* ---- for the services' callbacks -------------------------------------------------------------- */

void vx_worker_reply_query(vx_worker_t *w, vx_http_req_t *req, const char *sql, int nparams,
                           const char *const *params, const char *what) {
    char detail[96];
    PGresult *r;

    if (vx_pg_ensure(w->http_db)) {
        vx_http_problem(req, 503, "Database unavailable", "cannot reach the database", NULL);
        return;
    }
    r = PQexecParams(w->http_db, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        vx_http_problem(req, 503, "Database unavailable", "the query failed", NULL);
    } else if (PQntuples(r) == 0) {
        snprintf(detail, sizeof(detail), "no %s with this id", what);
        vx_http_problem(req, 404, "Not found", detail, NULL);
    } else {
        vx_http_reply(req, 200, "application/json", PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
    }
    PQclear(r);
}

/* ---- HTTP: /health, /ready, then the service's routes ------------------------------------------ */

static int ready(vx_worker_t *w) {
    PGresult *r;
    int ok;
    if (!vx_kafka_reachable(w->producer, 1000) || vx_pg_ensure(w->http_db)) return 0;
    r = PQexec(w->http_db, "SELECT 1");
    ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

static void on_http(vx_http_req_t *req, void *opaque) {
    vx_worker_t *w = opaque;
    char buf[512];
    const char *seg[3];
    int n = vx_http_segments(req, buf, sizeof(buf), seg, 2);
    int get = strcmp(vx_http_method(req), "GET") == 0 || strcmp(vx_http_method(req), "HEAD") == 0;

    if (n == 2 && strcmp(seg[0], "admin") == 0 && strcmp(seg[1], "chaos") == 0) {
        vx_http_chaos_admin(req);
    } else if (n == 1 && (strcmp(seg[0], "health") == 0 || strcmp(seg[0], "ready") == 0)) {
        if (!get) {
            vx_http_method_not_allowed(req, "GET, HEAD");
        } else if (seg[0][0] == 'h') {
            json_object *h = json_object_new_object();
            json_object_object_add(h, "status", json_object_new_string("up"));
            json_object_object_add(h, "chaos", vx_chaos_state());
            vx_http_reply_json(req, 200, h);
            json_object_put(h);
        } else if (ready(w)) {
            vx_http_reply(req, 200, "application/json", "{\"status\":\"ready\"}", 18);
        } else {
            vx_http_problem(req, 503, "Not ready", "the broker or the database is unreachable", NULL);
        }
    } else if (!w->o->http || !w->o->http(w, req, seg, n, w->o->opaque)) {
        vx_http_not_found(req);
    }
}

/* ---- the loop --------------------------------------------------------------------------------- */

/* The relay's upkeep: stamp what was delivered, sweep rows left unpublished, prune old ones. A
 * sweep with no grace (at start) takes every unpublished row at once. Delivered rows are stamped
 * MARK_EVERY_MS after the first of them was delivered (at once when stopping): under load that is
 * one statement for many batches. Until then a crash leaves them to the sweep, which sends them
 * again after its grace; duplicates are harmless. */
static void upkeep(vx_worker_t *w, int startup) {
    char err[256];
    long long t = now_ms();
    int n;

    rd_kafka_poll(w->producer, 0);
    if (!vx_outbox_unmarked(w->outbox)) {
        w->next_mark = 0;
    } else if (!w->next_mark) {
        w->next_mark = t + MARK_EVERY_MS;
    }
    if (w->next_mark && (t >= w->next_mark || stopping) && vx_pg_ensure(w->db) == 0) {
        if (vx_outbox_mark(w->outbox, w->db, err, sizeof(err)) == 0)
            w->next_mark = 0;
        else
            vx_log(VX_LOG_WARN, "mark_failed", "error", err, NULL); /* the ids stay for the next try */
    }
    if (t >= w->next_sweep && vx_pg_ensure(w->db) == 0) {
        n = vx_outbox_sweep(w->outbox, w->db, startup ? 0 : (int)w->o->sweep_grace_ms, 1000, err, sizeof(err));
        if (n < 0) vx_log(VX_LOG_WARN, "sweep_failed", "error", err, NULL);
        if (n > 0) {
            char cnt[16];
            snprintf(cnt, sizeof(cnt), "%d", n);
            vx_log(VX_LOG_INFO, "outbox_swept", "#rows", cnt, NULL);
        }
        w->next_sweep = t + SWEEP_EVERY_MS;
    }
    if (t >= w->next_prune && vx_pg_ensure(w->db) == 0) {
        if (vx_outbox_prune(w->outbox, w->db, w->o->outbox_retention_s, err, sizeof(err)) < 0)
            vx_log(VX_LOG_WARN, "prune_failed", "error", err, NULL);
        if (w->o->prune) w->o->prune(w, w->db, w->o->opaque);
        w->next_prune = t + PRUNE_EVERY_MS;
    }
}

static int run(vx_worker_t *w) {
    /* Rows a previous run left unpublished go first, at once, before this run's fast path sends
     * rows of its own (which a sweep with no grace would send a second time). */
    upkeep(w, 1);
    while (!stopping) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(w->consumer, vx_apply_wait_ms(w->apply, 100));
        if (m) {
            int n = 1;
            vx_apply_add(w->apply, m);
            while (n < w->o->batch_max && (m = rd_kafka_consumer_poll(w->consumer, 0))) {
                vx_apply_add(w->apply, m);
                n++;
            }
        }
        vx_apply_run(w->apply);
        if (vx_apply_settle(w->apply, w->consumer)) {
            vx_log(VX_LOG_ERROR, "dead_letter_lost", "detail", "exiting without storing offsets", NULL);
            vx_log_flush();
            exit(1); /* the messages are redelivered to the next instance: nothing is lost */
        }
        upkeep(w, 0);
        vx_log_flush();
    }
    /* Stopping: the call in hand is done; let the messages reach the broker, stamp them, commit. */
    rd_kafka_flush(w->producer, 10000);
    upkeep(w, 0);
    return 0;
}

int vx_worker_main(const vx_worker_opts_t *o) {
    vx_worker_t w = {.o = o};
    struct sigaction sa = {0};
    char err[512], pgopts[64];
    int rc = 1;

    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    snprintf(pgopts, sizeof(pgopts), "-c lock_timeout=%lld", o->lock_timeout_ms);
    if (!(w.db = vx_pg_connect(o->db, pgopts, 60000, err, sizeof(err))) ||
        !(w.http_db = vx_pg_connect(o->db, NULL, 60000, err, sizeof(err)))) {
        vx_log(VX_LOG_ERROR, "database_unreachable", "error", err, NULL);
        goto out;
    }
    if (vx_pg_migrate(w.http_db, o->migrations, err, sizeof(err)) < 0) {
        vx_log(VX_LOG_ERROR, "migration_failed", "error", err, NULL);
        goto out;
    }
    if (!(w.producer = vx_kafka_producer_new(on_delivery, &w, NULL, err, sizeof(err))) ||
        !(w.outbox = vx_outbox_new(w.producer))) {
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        goto out;
    }
    for (const char *const *r = o->routes; r && r[0] && r[1]; r += 2) {
        if (vx_outbox_route(w.outbox, r[0], r[1])) {
            vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", "too many outbox routes", NULL);
            goto out;
        }
    }
    if (vx_kafka_ensure_topics(w.producer, o->topics, o->ntopics, (int)o->partitions, o->topic_retention_ms, 30000,
                               err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "topic_setup_failed", "error", err, NULL);
        goto out;
    }
    {
        vx_apply_opts_t ao = {.service = o->service,
                              .dlq = o->dlq,
                              .sql = o->apply_sql,
                              .log_fields = o->log_fields,
                              .batch_max = o->batch_max,
                              .hold_max = o->hold_max,
                              .decode = o->decode,
                              .opaque = o->opaque};
        if (!(w.apply = vx_apply_new(&ao, w.db, w.producer, w.outbox, &stopping, err, sizeof(err)))) {
            vx_log(VX_LOG_ERROR, "apply_setup_failed", "error", err, NULL);
            goto out;
        }
    }
    if (!(w.consumer = vx_kafka_consumer_new(o->group, o->consume, o->nconsume, on_rebalance, &w, err, sizeof(err)))) {
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        goto out;
    }
    {
        vx_http_opts_t h = {.addr = o->http_addr, .threads = 1, .body_cap = 4096, .handler = on_http, .opaque = &w};
        if (!(w.http = vx_http_start(&h, err, sizeof(err)))) {
            vx_log(VX_LOG_ERROR, "http_failed", "error", err, NULL);
            goto out;
        }
    }
    vx_log(VX_LOG_INFO, "started", "http", o->http_addr, "consumes", o->consume[0], "group", o->group, NULL);
    vx_log_flush();
    rc = run(&w);
    vx_log(VX_LOG_INFO, "stopped", NULL);
out:
    vx_http_stop(w.http);
    if (w.consumer) {
        rd_kafka_consumer_close(w.consumer); /* commits the stored offsets */
        rd_kafka_destroy(w.consumer);
    }
    vx_apply_destroy(w.apply);
    vx_outbox_destroy(w.outbox);
    if (w.producer) rd_kafka_destroy(w.producer);
    PQfinish(w.http_db);
    PQfinish(w.db);
    vx_log_flush();
    return rc;
}
