/* vx_worker: the consuming services' skeleton. See vx_worker.h.
 *
 * One thread runs the loop: poll a batch, hand each message to the applier, apply what is ready,
 * settle (dead letters acknowledged, offsets stored, partitions paused or resumed), then the relay's
 * upkeep (stamp delivered rows, sweep forgotten ones, prune old ones). The loop's connection waits
 * at most VX_LOCK_TIMEOUT_MS on a lock; migrations and HTTP reads run on the HTTP thread's
 * connection, which waits as long as it takes. libmicrohttpd's single polling thread answers HTTP. */
#include "vx_worker.h"

#include <malloc.h>
#include <pthread.h>
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
#include "vx_metrics.h"
#include "vx_outbox.h"
#include "vx_pg.h"

#define BATCH_CAP 5000
#define MARK_EVERY_MS 100 /* delivered rows are stamped together: one transaction per 100 ms, not per batch */
#define SWEEP_EVERY_MS 1000
#define PRUNE_EVERY_MS 60000
/* Fenced again within FENCE_WINDOW_MS of FENCE_MAX fences: another live process has this instance's id (they
 * take it from each other at every join); stop instead of fighting. A fence after a long broker
 * outage (librdkafka 2.0 fences its own static member then) happens once per outage. */
#define FENCE_MAX 5
#define FENCE_WINDOW_MS 60000

struct vx_worker_s {
    const vx_worker_opts_t *o;
    PGconn *db;      /* the loop's connection */
    PGconn *http_db; /* the HTTP thread's connection (one polling thread: never shared) */
    rd_kafka_t *producer, *consumer; /* consumer: replaced after a fence, under consumer_lock */
    pthread_mutex_t consumer_lock;    /* the loop's replacement against the HTTP thread's scrape */
    char instance[VX_INSTANCE_ID_MAX + 1]; /* group.instance.id; "" for dynamic membership */
    long long fenced_at[FENCE_MAX];   /* the last fences (ms), a ring */
    int nfenced;
    vx_outbox_t *outbox;
    vx_apply_t *apply;
    vx_http_t *http;
    long long next_mark, next_sweep, next_prune; /* next_mark: 0 while nothing waits to be stamped */
    long long last_turn;  /* when the loop last completed a turn (ms, monotonic); read by /health */
    int joined;           /* the group gave this instance an assignment (maybe empty) at least once */
    int assigned;         /* partitions assigned now */
    long long stop_deadline; /* once stopping: when the Kafka clients must be gone (ms, monotonic) */
    vx_metric_t *m_published, *m_swept, *m_pruned, *m_pending, *m_oldest, *m_lag, *m_queue, *m_held, *m_turn,
        *m_gremlin, *m_points;
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

static int remaining_ms(long long deadline) {
    long long left = deadline - now_ms();
    return left > 0 ? (int)left : 0;
}

int vx_worker_config(vx_worker_opts_t *o, const char *prefix, char *errstr, size_t errstr_size) {
    char name[64];
    snprintf(name, sizeof(name), "%s_BATCH_MAX", prefix);
    return vx_cfg_int(name, 1000, 1, BATCH_CAP, &o->batch_max, errstr, errstr_size) ||
           vx_cfg_int("VX_TOPIC_PARTITIONS", VX_TOPIC_PARTITIONS_DEFAULT, 1, 1000, &o->partitions, errstr, errstr_size) ||
           vx_cfg_int("VX_TOPIC_REPLICATION", VX_TOPIC_REPLICATION_DEFAULT, -1, 32, &o->replication, errstr,
                      errstr_size) ||
           vx_cfg_int("VX_TOPIC_RETENTION_MS", 7LL * 24 * 3600 * 1000, 60000, 1LL << 50, &o->topic_retention_ms,
                      errstr, errstr_size) ||
           vx_cfg_int("VX_OUTBOX_RETENTION_S", 7 * 24 * 3600, 60, 1LL << 40, &o->outbox_retention_s, errstr,
                      errstr_size) ||
           vx_cfg_int("VX_OUTBOX_SWEEP_GRACE_MS", 5000, 0, 3600000, &o->sweep_grace_ms, errstr, errstr_size) ||
           vx_cfg_int("VX_HOLD_MAX", 1000, 1, 1000000, &o->hold_max, errstr, errstr_size) ||
           vx_cfg_int("VX_LOCK_TIMEOUT_MS", 200, 1, 600000, &o->lock_timeout_ms, errstr, errstr_size) ||
           vx_cfg_int("VX_LIVENESS_MS", 30000, 1000, 3600000, &o->liveness_ms, errstr, errstr_size) ||
           (o->shutdown_ms = vx_kafka_shutdown_ms(errstr, errstr_size)) < 0;
}

/* Delivery reports: outbox rows are stamped later in one statement; dead letters are counted,
 * because their offsets may be stored only once they are safely in the DLQ topic. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    vx_worker_t *w = opaque;
    (void)rk;
    if (vx_outbox_on_delivery(w->outbox, m)) {
        if (m->err)
            vx_log(VX_LOG_WARN, "outbox_delivery_failed", "error", rd_kafka_err2str(m->err), NULL);
        else
            vx_metric_add(w->m_published, VX_NOLABELS, 1);
        return;
    }
    if (w->apply) vx_apply_on_dlq_delivery(w->apply, m->err); /* NULL: stopping, the applier is gone */
}

/* Before partitions go, the applier forgets what it holds of them (their offsets were never stored
 * past it, so their next owner applies it); then the assignment changes. */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    vx_worker_t *w = opaque;
    if (err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS && w->apply) vx_apply_revoke(w->apply, parts);
    vx_kafka_rebalance(rk, err, parts);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) __atomic_store_n(&w->joined, 1, __ATOMIC_RELEASE);
    rd_kafka_topic_partition_list_t *now = NULL;
    if (!rd_kafka_assignment(rk, &now)) {
        __atomic_store_n(&w->assigned, now->cnt, __ATOMIC_RELEASE);
        rd_kafka_topic_partition_list_destroy(now);
    }
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

/* ---- metrics read at scrape time (on the HTTP thread) ------------------------------------------- */

/* Rows waiting in the outbox: counted up to a bound, so a scrape never reads a huge backlog whole,
 * and the age of the oldest (the lowest id waits longest: ids grow with time). */
static const char SQL_PENDING[] =
    "SELECT (SELECT count(*) FROM (SELECT 1 FROM outbox_pending LIMIT 100000) p),"
    " coalesce(extract(epoch FROM now() - (SELECT o.created_at FROM outbox o"
    "   WHERE o.id = (SELECT min(id) FROM outbox_pending))), 0)";

static void worker_scrape(void *opaque) {
    vx_worker_t *w = opaque;
    rd_kafka_topic_partition_list_t *parts = NULL;
    long long delayed;
    int points;
    PGresult *r;

    if (vx_pg_ensure(w->http_db) == 0) {
        r = PQexec(w->http_db, SQL_PENDING);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            vx_metric_set(w->m_pending, VX_NOLABELS, atof(PQgetvalue(r, 0, 0)));
            vx_metric_set(w->m_oldest, VX_NOLABELS, atof(PQgetvalue(r, 0, 1)));
        }
        PQclear(r);
    }
    /* Lag: the end of each assigned partition (as the last fetch saw it) past the next offset this
     * instance reads: its position, or, before it has read anything there, the group's committed
     * offset (asked of the broker, briefly). */
    vx_metric_clear(w->m_lag);
    pthread_mutex_lock(&w->consumer_lock);
    if (!rd_kafka_assignment(w->consumer, &parts)) {
        rd_kafka_topic_partition_list_t *ask = rd_kafka_topic_partition_list_new(parts->cnt);
        rd_kafka_position(w->consumer, parts);
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].offset < 0)
                rd_kafka_topic_partition_list_add(ask, parts->elems[i].topic, parts->elems[i].partition);
        if (ask->cnt && !rd_kafka_committed(w->consumer, ask, 2000))
            for (int i = 0; i < ask->cnt; i++)
                rd_kafka_topic_partition_list_find(parts, ask->elems[i].topic, ask->elems[i].partition)->offset =
                    ask->elems[i].offset;
        rd_kafka_topic_partition_list_destroy(ask);
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *p = &parts->elems[i];
            int64_t lo, hi;
            char part[16];
            if (p->offset < 0 || rd_kafka_get_watermark_offsets(w->consumer, p->topic, p->partition, &lo, &hi) ||
                hi < 0)
                continue;
            snprintf(part, sizeof(part), "%d", p->partition);
            vx_metric_set(w->m_lag, VX_L(p->topic, part), (double)(hi > p->offset ? hi - p->offset : 0));
        }
        rd_kafka_topic_partition_list_destroy(parts);
    }
    pthread_mutex_unlock(&w->consumer_lock);
    vx_metric_set(w->m_queue, VX_NOLABELS, rd_kafka_outq_len(w->producer));
    vx_metric_set(w->m_held, VX_NOLABELS, (double)vx_apply_held(w->apply));
    vx_metric_set(w->m_turn, VX_NOLABELS, (double)(now_ms() - __atomic_load_n(&w->last_turn, __ATOMIC_ACQUIRE)) / 1000.0);
    vx_chaos_counts(&delayed, &points);
    vx_metric_set(w->m_gremlin, VX_NOLABELS, (double)delayed);
    vx_metric_set(w->m_points, VX_NOLABELS, points);
}

static void worker_metrics(vx_worker_t *w) {
    w->m_published = vx_metric_new(VX_COUNTER, "valerix_outbox_published_total",
                                   "Outbox rows the broker acknowledged (first sends and resends).", NULL, NULL, 0);
    w->m_swept = vx_metric_new(VX_COUNTER, "valerix_outbox_resent_total",
                               "Outbox rows the sweep sent again: left unpublished by a crash or a failed delivery.",
                               NULL, NULL, 0);
    w->m_pruned = vx_metric_new(VX_COUNTER, "valerix_outbox_pruned_total",
                                "Delivered outbox rows deleted after VX_OUTBOX_RETENTION_S.", NULL, NULL, 0);
    w->m_pending = vx_metric_new(VX_GAUGE, "valerix_outbox_pending_rows",
                                 "Outbox rows not yet known to be delivered (counted up to 100000).", NULL, NULL, 0);
    w->m_oldest = vx_metric_new(VX_GAUGE, "valerix_outbox_oldest_pending_age_seconds",
                                "Age of the oldest outbox row not yet known to be delivered (0 when none).", NULL, NULL,
                                0);
    w->m_lag = vx_metric_new(VX_GAUGE, "valerix_consumer_lag_messages",
                             "Messages in each assigned partition past what this instance has read.", "topic,partition",
                             NULL, 0);
    w->m_queue = vx_metric_new(VX_GAUGE, "valerix_producer_queue_messages",
                               "Messages in the producer's queue, not yet acknowledged by the broker.", NULL, NULL, 0);
    w->m_held = vx_metric_new(VX_GAUGE, "valerix_messages_held",
                              "Messages taken and not done: held aside by the gremlin or a lock, or waiting behind one.",
                              NULL, NULL, 0);
    w->m_turn = vx_metric_new(VX_GAUGE, "valerix_loop_last_turn_age_seconds",
                              "Time since the poll-apply-publish loop last completed a turn.", NULL, NULL, 0);
    w->m_gremlin = vx_metric_new(VX_COUNTER, "valerix_chaos_gremlin_delayed_total",
                                 "Commands the latency gremlin held back.", NULL, NULL, 0);
    w->m_points = vx_metric_new(VX_GAUGE, "valerix_chaos_crash_points_armed", "Crash points armed now.", NULL, NULL, 0);
    vx_metrics_on_scrape(worker_scrape, w);
}

/* ---- HTTP: /health, /ready, /metrics, then the service's routes --------------------------------- */

static int ready(vx_worker_t *w) {
    PGresult *r;
    int ok;
    if (!__atomic_load_n(&w->joined, __ATOMIC_ACQUIRE) || !vx_kafka_reachable(w->producer, 1000) ||
        vx_pg_ensure(w->http_db))
        return 0;
    r = PQexec(w->http_db, "SELECT 1");
    ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok;
}

/* Liveness: 200 while the loop completes turns; 503, saying since when, once it has not for
 * liveness_ms (a wedged loop: a call that never returns, a database that never answers). */
static void health(vx_worker_t *w, vx_http_req_t *req) {
    json_object *h = json_object_new_object(), *loop = json_object_new_object();
    long long since = now_ms() - __atomic_load_n(&w->last_turn, __ATOMIC_ACQUIRE);
    int wedged = since > w->o->liveness_ms;

    json_object_object_add(h, "status", json_object_new_string(wedged ? "wedged" : "up"));
    json_object_object_add(loop, "last_turn_ms_ago", json_object_new_int64(since));
    json_object_object_add(loop, "limit_ms", json_object_new_int64(w->o->liveness_ms));
    json_object_object_add(h, "loop", loop);
    if (wedged)
        json_object_object_add(h, "detail", json_object_new_string("the poll-apply-publish loop has not completed a turn "
                                                                   "within VX_LIVENESS_MS"));
    json_object_object_add(h, "held", json_object_new_int64(vx_apply_held(w->apply)));
    json_object_object_add(h, "partitions", json_object_new_int(__atomic_load_n(&w->assigned, __ATOMIC_ACQUIRE)));
    json_object_object_add(h, "chaos", vx_chaos_state());
    vx_http_reply_json(req, wedged ? 503 : 200, h);
    json_object_put(h);
}

static void on_http(vx_http_req_t *req, void *opaque) {
    vx_worker_t *w = opaque;
    char buf[512];
    const char *seg[3];
    int n = vx_http_segments(req, buf, sizeof(buf), seg, 2);
    int get = strcmp(vx_http_method(req), "GET") == 0 || strcmp(vx_http_method(req), "HEAD") == 0;

    if (n == 2 && strcmp(seg[0], "admin") == 0 && strcmp(seg[1], "chaos") == 0) {
        vx_http_route(req, "POST /admin/chaos");
        vx_http_chaos_admin(req);
    } else if (n == 1 && (strcmp(seg[0], "health") == 0 || strcmp(seg[0], "ready") == 0 ||
                          strcmp(seg[0], "metrics") == 0)) {
        if (!get) {
            vx_http_method_not_allowed(req, "GET, HEAD");
        } else if (seg[0][0] == 'h') {
            vx_http_route(req, "GET /health");
            health(w, req);
        } else if (seg[0][0] == 'm') {
            vx_http_route(req, "GET /metrics");
            vx_http_metrics(req);
        } else {
            char body[96];
            vx_http_route(req, "GET /ready");
            if (ready(w)) {
                snprintf(body, sizeof(body), "{\"status\":\"ready\",\"partitions\":%d}",
                         __atomic_load_n(&w->assigned, __ATOMIC_ACQUIRE));
                vx_http_reply(req, 200, "application/json", body, strlen(body));
            } else {
                vx_http_problem(req, 503, "Not ready",
                                __atomic_load_n(&w->joined, __ATOMIC_ACQUIRE)
                                    ? "the broker or the database is unreachable"
                                    : "the consumer group has not given this instance its partitions yet",
                                NULL);
            }
        }
    } else if (!w->o->http || !w->o->http(w, req, seg, n, w->o->opaque)) {
        vx_http_not_found(req);
    }
}

/* ---- the loop --------------------------------------------------------------------------------- */

/* The relay's upkeep: stamp what was delivered, sweep rows left unpublished, prune old ones. A
 * sweep with no grace takes every unpublished row at once. Delivered rows are stamped
 * MARK_EVERY_MS after the first of them was delivered (at once when stopping): under load that is
 * one statement for many batches. Until then a crash leaves them to the sweep, which sends them
 * again after its grace; duplicates are harmless. */
static void upkeep(vx_worker_t *w) {
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
        n = vx_outbox_sweep(w->outbox, w->db, (int)w->o->sweep_grace_ms, 1000, err, sizeof(err));
        if (n < 0) vx_log(VX_LOG_WARN, "sweep_failed", "error", err, NULL);
        if (n > 0) {
            char cnt[16];
            snprintf(cnt, sizeof(cnt), "%d", n);
            vx_log(VX_LOG_INFO, "outbox_swept", "#rows", cnt, NULL);
            vx_metric_add(w->m_swept, VX_NOLABELS, n);
        }
        w->next_sweep = t + SWEEP_EVERY_MS;
    }
    if (t >= w->next_prune && vx_pg_ensure(w->db) == 0) {
        if ((n = vx_outbox_prune(w->outbox, w->db, w->o->outbox_retention_s, err, sizeof(err))) < 0)
            vx_log(VX_LOG_WARN, "prune_failed", "error", err, NULL);
        else
            vx_metric_add(w->m_pruned, VX_NOLABELS, n);
        if (w->o->prune_sql) {
            char secs[32];
            const char *params[1] = {secs};
            PGresult *r;
            snprintf(secs, sizeof(secs), "%lld", w->o->outbox_retention_s);
            r = PQexecParams(w->db, w->o->prune_sql, 1, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                vx_log(VX_LOG_WARN, "prune_failed", "error", PQresultErrorMessage(r), NULL);
            PQclear(r);
        }
        w->next_prune = t + PRUNE_EVERY_MS;
    }
}

/* Rows a previous run left unpublished (a crash between commit and publish, a broker that was
 * away) all go first, in id order, before the loop takes a command: a result or event the fast path
 * sends for a new command must never overtake an older one of the same key (an order's CONFIRMED
 * published after its CANCELLED). A static member gets its partitions back at once, so the rows
 * cannot wait for the sweep's grace. Each sweep takes 1000 rows; rows claimed by this drain are not
 * taken again (the grace grows with the time it has run). Waits for the database, keeping /health
 * alive, until done or stopping. */
static void drain_left_rows(vx_worker_t *w) {
    long long t0 = now_ms(), total = 0;
    char err[256];

    while (!stopping) {
        int n = vx_pg_ensure(w->db) == 0
                    ? vx_outbox_sweep(w->outbox, w->db, (int)(now_ms() - t0), 1000, err, sizeof(err))
                    : (snprintf(err, sizeof(err), "no database"), -1);
        __atomic_store_n(&w->last_turn, now_ms(), __ATOMIC_RELEASE);
        rd_kafka_poll(w->producer, 0);
        if (n < 0) {
            vx_log(VX_LOG_WARN, "sweep_failed", "error", err, NULL);
            vx_log_flush();
            usleep(500 * 1000);
            continue;
        }
        total += n;
        if (n < 1000) break;
    }
    if (total > 0) {
        char cnt[24];
        snprintf(cnt, sizeof(cnt), "%lld", total);
        vx_log(VX_LOG_INFO, "outbox_swept", "#rows", cnt, "detail", "left by a previous run", NULL);
        vx_metric_add(w->m_swept, VX_NOLABELS, (double)total);
    }
    w->next_sweep = now_ms() + SWEEP_EVERY_MS;
}

/* The consumer had a fatal error: its static member was fenced (FENCED_INSTANCE_ID). Either another
 * process joined with this instance's id, or librdkafka 2.0 fenced itself: after a session timeout
 * (a broker away longer than session.timeout.ms) it rejoins under a new member id and then commits
 * under the old one. A fatal error is for good, so the consumer is replaced by a new one under the
 * same id, which takes the partitions back; what was taken of them and not done is forgotten and
 * comes again from the committed offsets. Returns 0, or -1 (logged) when the instance must stop:
 * fenced FENCE_MAX times within FENCE_WINDOW_MS, or no new consumer. */
static int renew_consumer(vx_worker_t *w, const char *why) {
    rd_kafka_topic_partition_list_t *parts = NULL;
    long long now = now_ms(), oldest = w->fenced_at[w->nfenced % FENCE_MAX];
    char err[512];
    rd_kafka_t *fresh;

    w->fenced_at[w->nfenced++ % FENCE_MAX] = now;
    if (w->nfenced >= FENCE_MAX && now - oldest < FENCE_WINDOW_MS) {
        vx_log(VX_LOG_ERROR, "consumer_fatal", "error", why, "detail",
               "fenced again and again: another running instance uses this group.instance.id (VX_INSTANCE_ID); "
               "stopping",
               NULL);
        return -1;
    }
    vx_log(VX_LOG_WARN, "consumer_fenced", "error", why, "detail", "joining the group again with a new consumer", NULL);
    if (!rd_kafka_assignment(w->consumer, &parts)) {
        vx_apply_revoke(w->apply, parts);
        rd_kafka_topic_partition_list_destroy(parts);
    }
    if (!(fresh = vx_kafka_consumer_new(w->o->group, w->instance, w->o->consume, w->o->nconsume, on_rebalance, w, err,
                                        sizeof(err)))) {
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        return -1;
    }
    pthread_mutex_lock(&w->consumer_lock);
    /* fenced: nothing to commit or leave; its stored offsets go with it (redelivered, absorbed) */
    rd_kafka_destroy_flags(w->consumer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    w->consumer = fresh;
    __atomic_store_n(&w->assigned, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&w->consumer_lock);
    return 0;
}

static int run(vx_worker_t *w) {
    char fatal[512];
    int rc = 0;
    drain_left_rows(w);
    __atomic_store_n(&w->last_turn, now_ms(), __ATOMIC_RELEASE);
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
        upkeep(w);
        __atomic_store_n(&w->last_turn, now_ms(), __ATOMIC_RELEASE);
        if (rd_kafka_fatal_error(w->consumer, fatal, sizeof(fatal)) && renew_consumer(w, fatal)) {
            rc = 1;
            break;
        }
        vx_log_flush();
    }
    /* Stopping: the call in hand is done; let the messages reach the broker, stamp them; the offsets
       are committed by the close (vx_worker_main), all of it within shutdown_ms. */
    w->stop_deadline = now_ms() + w->o->shutdown_ms;
    rd_kafka_flush(w->producer, (int)w->o->shutdown_ms);
    upkeep(w);
    return rc;
}

int vx_worker_main(const vx_worker_opts_t *o) {
    vx_worker_t w = {.o = o, .last_turn = now_ms(), .consumer_lock = PTHREAD_MUTEX_INITIALIZER};
    struct sigaction sa = {0};
    char err[512], pgopts[64];
    int rc = 1;

    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* No fastbins. Each message is a tree of small json-c allocations freed at once, and every
       PGresult asks for 2 KiB blocks: each such request made glibc consolidate every freed small chunk
       first (malloc_consolidate: 6 % of order-svc's CPU samples in make bench's stage C, the allocator
       32 %; without fastbins the allocator is 22 %). Two pairs of stage C runs, with and without:
       order-svc 44 -> 39 and 41 -> 36 us per order, inventory-svc 22 -> 20 and 22 -> 18. */
    mallopt(M_MXFAST, 0);

    snprintf(pgopts, sizeof(pgopts), "-c lock_timeout=%lld", o->lock_timeout_ms);
    if (!(w.db = vx_pg_connect(o->db, pgopts, 60000, err, sizeof(err))) ||
        !(w.http_db = vx_pg_connect(o->db, NULL, 60000, err, sizeof(err)))) {
        vx_log(VX_LOG_ERROR, strncmp(err, VX_PG_AUTH_FAILED, strlen(VX_PG_AUTH_FAILED)) ? "database_unreachable"
                                                                                     : "database_auth_failed",
               "error", err, NULL);
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
    /* Refused credentials stop the start at once, saying so, instead of a CreateTopics timing out. */
    switch (vx_kafka_check_broker(VX_KAFKA_PRODUCER, 30000, err, sizeof(err))) {
    case 0:
        break;
    case -1:
        vx_log(VX_LOG_ERROR, "kafka_auth_failed", "error", err, NULL);
        goto out;
    case 1:
        vx_log(VX_LOG_ERROR, "kafka_unreachable", "error", err, NULL);
        goto out;
    default:
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        goto out;
    }
    for (const char *const *r = o->routes; r && r[0] && r[1]; r += 2) {
        if (vx_outbox_route(w.outbox, r[0], r[1])) {
            vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", "too many outbox routes", NULL);
            goto out;
        }
    }
    if (vx_kafka_ensure_topics(w.producer, o->topics, o->ntopics, (int)o->partitions, (int)o->replication,
                               o->topic_retention_ms, 30000,
                               err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "topic_setup_failed", "error", err, NULL);
        goto out;
    }
    {
        vx_apply_opts_t ao = {.service = o->service,
                              .dlq = o->dlq,
                              .sql = o->apply_sql,
                              .log_fields = o->log_fields,
                              .duplicate_notes = o->duplicate_notes,
                              .rejected_notes = o->rejected_notes,
                              .outcome = o->outcome,
                              .batch_max = o->batch_max,
                              .hold_max = o->hold_max,
                              .decode = o->decode,
                              .opaque = o->opaque};
        if (!(w.apply = vx_apply_new(&ao, w.db, w.producer, w.outbox, &stopping, err, sizeof(err)))) {
            vx_log(VX_LOG_ERROR, "apply_setup_failed", "error", err, NULL);
            goto out;
        }
    }
    if (vx_kafka_instance_id(o->service, o->http_addr, w.instance, sizeof(w.instance), err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "config_error", "error", err, NULL);
        goto out;
    }
    if (!(w.consumer = vx_kafka_consumer_new(o->group, w.instance, o->consume, o->nconsume, on_rebalance, &w, err,
                                             sizeof(err)))) {
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
    worker_metrics(&w);
    vx_log(VX_LOG_INFO, "started", "http", o->http_addr, "consumes", o->consume[0], "group", o->group,
           "instance", w.instance[0] ? w.instance : "(dynamic)", NULL);
    vx_log_flush();
    rc = run(&w);
    vx_log(VX_LOG_INFO, "stopped", NULL);
out:
    vx_metrics_off_scrape(worker_scrape, &w);
    vx_http_stop(w.http);
    if (!w.stop_deadline) w.stop_deadline = now_ms() + o->shutdown_ms;
    /* The messages held go first (a consumer is destroyed with none outstanding; their offsets were
       never stored past them), then the consumer leaves its group (a static member on purpose, so
       that its partitions move at once, not after the session timeout; a fenced one is no member any
       more) and commits what was stored, then the producer: each waits only for what is left of the
       bound, so a broker that is gone costs shutdown_ms, not librdkafka's unbounded close. */
    vx_apply_destroy(w.apply);
    w.apply = NULL;
    if (w.consumer && w.instance[0] && !rd_kafka_fatal_error(w.consumer, err, sizeof(err)))
        vx_kafka_leave_group(w.consumer, remaining_ms(w.stop_deadline) / 2);
    vx_kafka_consumer_destroy(w.consumer, remaining_ms(w.stop_deadline));
    vx_kafka_producer_destroy(w.producer, remaining_ms(w.stop_deadline)); /* before the outbox its reports reach */
    vx_outbox_destroy(w.outbox);
    PQfinish(w.http_db);
    PQfinish(w.db);
    vx_log_flush();
    return rc;
}
