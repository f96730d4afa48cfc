/* inventory-svc: owns stock. Consumes inventory.commands in a consumer group, applies each batch
 * of commands in one PostgreSQL transaction with their outbox rows (inv_apply_batch in
 * migrations/), publishes the events from the outbox, and only then stores the Kafka offsets.
 *
 * Invariant: an offset is stored only after its command's effects and event are committed in the
 * database (or the message is in the dead-letter topic), so a crash anywhere redelivers at most,
 * and redelivery is harmless because the outbox's unique idempotency key turns it into a resend. */
#include <json-c/json.h>
#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vx_chaos.h"
#include "vx_config.h"
#include "vx_http.h"
#include "vx_kafka.h"
#include "vx_log.h"
#include "vx_msg.h"
#include "vx_outbox.h"
#include "vx_pg.h"

#define SERVICE "inventory-svc"
#define BATCH_CAP 5000

static const char SQL_APPLY[] = "SELECT * FROM inv_apply_batch($1::jsonb)";
static const char SQL_PRUNE_RELEASED[] =
    "DELETE FROM released_orders WHERE order_id IN (SELECT order_id FROM released_orders"
    " WHERE released_at < now() - make_interval(secs => $1::float8) LIMIT 10000)";
static const char SQL_PRODUCTS[] =
    "SELECT json_build_object('products', coalesce(json_agg(json_build_object('id', id, 'name', name,"
    " 'stock', stock, 'updated_at', updated_at) ORDER BY id), '[]'::json)) FROM products";
static const char SQL_PRODUCT[] =
    "SELECT json_build_object('id', id, 'name', name, 'stock', stock, 'updated_at', updated_at)"
    " FROM products WHERE id = $1";

typedef struct {
    const char *db, *http_addr, *group, *commands, *events, *dlq, *migrations;
    long long batch_max, partitions, topic_retention_ms, outbox_retention_s, sweep_grace_ms;
} config_t;

typedef struct {
    config_t cfg;
    PGconn *db;      /* the consumer loop's connection */
    PGconn *http_db; /* the HTTP thread's connection (one polling thread: never shared) */
    rd_kafka_t *producer, *consumer;
    vx_outbox_t *outbox;
    vx_http_t *http;
    long long dlq_pending, dlq_failed; /* dead letters produced, not yet acknowledged / failed */
} svc_t;

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

static int load_config(config_t *c, char *errstr, size_t errstr_size) {
    c->db = vx_cfg_str("INVENTORY_DB", "postgresql://valerix@127.0.0.1:55432/inventory");
    c->http_addr = vx_cfg_str("INVENTORY_HTTP_ADDR", "127.0.0.1:8082");
    c->group = vx_cfg_str("INVENTORY_GROUP_ID", SERVICE);
    c->commands = vx_cfg_str("INVENTORY_COMMANDS_TOPIC", "inventory.commands");
    c->events = vx_cfg_str("INVENTORY_EVENTS_TOPIC", "inventory.events");
    c->dlq = vx_cfg_str("INVENTORY_DLQ_TOPIC", "inventory.dlq");
    c->migrations = vx_cfg_str("INVENTORY_MIGRATIONS", VX_SRC_DIR "/common/migrations:" VX_SRC_DIR
                                                       "/inventory-svc/migrations");
    return vx_cfg_int("INVENTORY_BATCH_MAX", 1000, 1, BATCH_CAP, &c->batch_max, errstr, errstr_size) ||
           vx_cfg_int("VX_TOPIC_PARTITIONS", 6, 1, 1000, &c->partitions, errstr, errstr_size) ||
           vx_cfg_int("VX_TOPIC_RETENTION_MS", 7LL * 24 * 3600 * 1000, 60000, 1LL << 50, &c->topic_retention_ms,
                      errstr, errstr_size) ||
           vx_cfg_int("VX_OUTBOX_RETENTION_S", 7 * 24 * 3600, 60, 1LL << 40, &c->outbox_retention_s, errstr,
                      errstr_size) ||
           vx_cfg_int("VX_OUTBOX_SWEEP_GRACE_MS", 5000, 0, 3600000, &c->sweep_grace_ms, errstr, errstr_size);
}

/* Delivery reports: outbox rows are stamped later in one statement; dead letters are counted,
 * because their offsets may be stored only once they are safely in the DLQ topic. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    svc_t *s = opaque;
    (void)rk;
    if (vx_outbox_on_delivery(s->outbox, m)) {
        if (m->err)
            vx_log(VX_LOG_WARN, "event_delivery_failed", "error", rd_kafka_err2str(m->err), NULL);
        return;
    }
    s->dlq_pending--;
    if (m->err) {
        s->dlq_failed++;
        vx_log(VX_LOG_ERROR, "dead_letter_delivery_failed", "error", rd_kafka_err2str(m->err), NULL);
    }
}

/* ---- HTTP: products, health, readiness -------------------------------------------------------- */

static void reply_query(svc_t *s, vx_http_req_t *req, const char *sql, int nparams, const char *const *params) {
    PGresult *r;

    if (vx_pg_ensure(s->http_db)) {
        vx_http_problem(req, 503, "Database unavailable", "cannot reach the inventory database", NULL);
        return;
    }
    r = PQexecParams(s->http_db, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        vx_http_problem(req, 503, "Database unavailable", "the inventory query failed", NULL);
    else if (PQntuples(r) == 0)
        vx_http_problem(req, 404, "Not found", "no product with this id", NULL);
    else
        vx_http_reply(req, 200, "application/json", PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
    PQclear(r);
}

static void on_http(vx_http_req_t *req, void *opaque) {
    svc_t *s = opaque;
    char buf[512];
    const char *seg[3];
    int n = vx_http_segments(req, buf, sizeof(buf), seg, 2);
    int get = strcmp(vx_http_method(req), "GET") == 0 || strcmp(vx_http_method(req), "HEAD") == 0;

    if (n == 1 && (strcmp(seg[0], "health") == 0 || strcmp(seg[0], "ready") == 0)) {
        int ready;
        if (!get) {
            vx_http_method_not_allowed(req, "GET");
            return;
        }
        if (seg[0][0] == 'h') {
            vx_http_reply(req, 200, "application/json", "{\"status\":\"up\"}", 15);
            return;
        }
        ready = vx_kafka_reachable(s->producer, 1000) &&
                (vx_pg_ensure(s->http_db) == 0 && PQstatus(s->http_db) == CONNECTION_OK);
        if (ready) {
            PGresult *r = PQexec(s->http_db, "SELECT 1");
            ready = PQresultStatus(r) == PGRES_TUPLES_OK;
            PQclear(r);
        }
        if (ready)
            vx_http_reply(req, 200, "application/json", "{\"status\":\"ready\"}", 18);
        else
            vx_http_problem(req, 503, "Not ready", "the broker or the database is unreachable", NULL);
    } else if (n >= 1 && n <= 2 && strcmp(seg[0], "products") == 0) {
        if (!get)
            vx_http_method_not_allowed(req, "GET");
        else if (n == 1)
            reply_query(s, req, SQL_PRODUCTS, 0, NULL);
        else
            reply_query(s, req, SQL_PRODUCT, 1, &seg[1]);
    } else {
        vx_http_not_found(req);
    }
}

/* ---- the consumer loop ------------------------------------------------------------------------ */

/* Runs the batch until it commits. Transient failures (connection lost, database restarting, a
 * concurrent twin of a command) retry with backoff; once the service is told to stop it gives up
 * after STOP_GRACE_MS and returns NULL with *fatal = 0 (the batch will be redelivered). Any other
 * error returns NULL with *fatal = 1 so the caller can isolate the command at fault. */
#define STOP_GRACE_MS 10000
static PGresult *apply(svc_t *s, const char *batch_json, int *fatal) {
    const char *params[1] = {batch_json};
    int backoff_ms = 50;
    long long give_up = 0;

    *fatal = 0;
    for (;;) {
        PGresult *r;
        if (vx_pg_ensure(s->db) == 0) {
            r = PQexecParams(s->db, SQL_APPLY, 1, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(r) == PGRES_TUPLES_OK) return r;
            {
                const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                int retry = vx_pg_transient(s->db, r) || (state && strcmp(state, "23505") == 0);
                vx_log(retry ? VX_LOG_WARN : VX_LOG_ERROR, "batch_failed", "sqlstate", state, "error",
                       PQresultErrorMessage(r), NULL);
                PQclear(r);
                if (!retry) {
                    *fatal = 1;
                    return NULL;
                }
            }
        } else {
            vx_log(VX_LOG_WARN, "database_unreachable", "error", PQerrorMessage(s->db), NULL);
        }
        if (stopping && !give_up) give_up = now_ms() + STOP_GRACE_MS;
        if (give_up && now_ms() > give_up) return NULL;
        usleep((useconds_t)backoff_ms * 1000);
        if (backoff_ms < 2000) backoff_ms *= 2;
    }
}

typedef struct {
    rd_kafka_message_t *msg;
    vx_msg_t cmd;
    int valid;
    char cid[129];
} item_t;

static json_object *batch_entry(item_t *it) {
    json_object *e = json_object_new_object();
    json_object_object_add(e, "c", vx_msg_to_json(&it->cmd));
    if (it->msg->key)
        json_object_object_add(e, "k", json_object_new_string_len(it->msg->key, (int)it->msg->key_len));
    if (it->cid[0]) json_object_object_add(e, "cid", json_object_new_string(it->cid));
    return e;
}

static void dead_letter(svc_t *s, item_t *it, const char *reason, const char *detail) {
    char err[256];
    if (vx_kafka_dead_letter(s->producer, s->cfg.dlq, it->msg, reason, detail, SERVICE, err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "dead_letter_failed", "error", err, NULL);
        s->dlq_failed++;
        return;
    }
    s->dlq_pending++;
    vx_log(VX_LOG_WARN, "dead_lettered", "reason", reason, "error", detail, "topic", rd_kafka_topic_name(it->msg->rkt),
           "correlation_id", it->cid[0] ? it->cid : NULL, NULL);
}

/* Publishes the outbox rows the batch wrote and logs one line per command outcome. */
static void publish(svc_t *s, PGresult *rows) {
    char err[256];
    if (vx_outbox_publish(s->outbox, rows, err, sizeof(err)) < 0)
        vx_log(VX_LOG_ERROR, "publish_failed", "error", err, NULL); /* rows stay for the sweep */
    if (!vx_log_enabled(VX_LOG_INFO)) return;
    for (int i = 0; i < PQntuples(rows); i++) {
        json_object *ev = json_tokener_parse(PQgetvalue(rows, i, 3)), *v;
        const char *type = ev && json_object_object_get_ex(ev, "type", &v) ? json_object_get_string(v) : "?";
        const char *key = ev && json_object_object_get_ex(ev, "idempotency_key", &v) ? json_object_get_string(v) : NULL;
        const char *reason = ev && json_object_object_get_ex(ev, "reason", &v) ? json_object_get_string(v) : NULL;
        vx_log(VX_LOG_INFO, "event", "type", type, "idempotency_key", key, "reason", reason, "correlation_id",
               PQgetisnull(rows, i, 4) ? NULL : PQgetvalue(rows, i, 4), "event_id", PQgetvalue(rows, i, 0), NULL);
        json_object_put(ev);
    }
}

/* Stores offset+1 of the last message of each partition in the batch: everything up to it is done. */
static void store_offsets(svc_t *s, item_t *items, int n) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(n);
    rd_kafka_resp_err_t err;

    for (int i = 0; i < n; i++) {
        rd_kafka_message_t *m = items[i].msg;
        rd_kafka_topic_partition_t *p;
        if (m->err) continue;
        p = rd_kafka_topic_partition_list_find(l, rd_kafka_topic_name(m->rkt), m->partition);
        if (!p) p = rd_kafka_topic_partition_list_add(l, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->offset + 1 > p->offset) p->offset = m->offset + 1;
    }
    if (l->cnt && (err = rd_kafka_offsets_store(s->consumer, l)))
        vx_log(VX_LOG_WARN, "offset_store_failed", "error", rd_kafka_err2str(err), NULL);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Open-addressing set of borrowed strings, cleared per SQL batch: inv_apply_batch needs every
 * idempotency key and order id at most once per call, so a repeat starts a new call. */
typedef struct {
    const char **slot;
    size_t cap; /* a power of two, at least twice the batch size */
} strset_t;

static int strset_add(strset_t *set, const char *str) { /* 0 when already there */
    size_t h = 14695981039346656037ULL;
    for (const char *p = str; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (size_t i = h & (set->cap - 1);; i = (i + 1) & (set->cap - 1)) {
        if (!set->slot[i]) {
            set->slot[i] = str;
            return 1;
        }
        if (strcmp(set->slot[i], str) == 0) return 0;
    }
}

typedef struct {
    json_object *arr;
    int first, count; /* items[first..] that are in arr (valid ones only) */
    strset_t keys, orders;
} sqlbatch_t;

/* Applies the SQL batch: one transaction, or one command at a time if the database refuses the
 * whole (then only the command at fault is dead-lettered). Returns 0, or -1 when it gave up on
 * stopping (nothing may be acknowledged then). */
static int flush_batch(svc_t *s, sqlbatch_t *b, item_t *items, int upto) {
    int fatal = 0, rc = 0;
    PGresult *r;

    if (!b->count) goto reset;
    r = apply(s, json_object_to_json_string_ext(b->arr, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), &fatal);
    if (r) {
        vx_chaos_point("after_commit_before_publish");
        publish(s, r);
        PQclear(r);
    } else if (!fatal) {
        rc = -1;
    } else {
        for (int i = b->first; i < upto && rc == 0; i++) {
            json_object *one;
            if (!items[i].valid) continue;
            one = json_object_new_array_ext(1);
            json_object_array_add(one, batch_entry(&items[i]));
            r = apply(s, json_object_to_json_string_ext(one, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), &fatal);
            json_object_put(one);
            if (r) {
                publish(s, r);
                PQclear(r);
            } else if (fatal) {
                dead_letter(s, &items[i], "processing_error", "the database refused this command");
            } else {
                rc = -1;
            }
        }
    }
reset:
    json_object_put(b->arr);
    b->arr = json_object_new_array_ext(64);
    b->first = upto;
    b->count = 0;
    memset(b->keys.slot, 0, b->keys.cap * sizeof(char *));
    memset(b->orders.slot, 0, b->orders.cap * sizeof(char *));
    return rc;
}

/* One Kafka batch: decode, dead-letter the poison, apply the rest in as few transactions as the
 * repeats allow, publish, then store the offsets. */
static void process(svc_t *s, item_t *items, int n) {
    static const char **slots;
    static size_t cap;
    sqlbatch_t b = {0};
    int abandoned = 0;
    char err[256];

    if (!slots) { /* sized once for the largest batch; never freed: lives as long as the process */
        for (cap = 1; cap < (size_t)s->cfg.batch_max * 2; cap <<= 1) {
        }
        if (!(slots = calloc(cap * 2, sizeof(char *)))) {
            vx_log(VX_LOG_ERROR, "out_of_memory", NULL);
            exit(1);
        }
    }
    b.keys = (strset_t){slots, cap};
    b.orders = (strset_t){slots + cap, cap};
    b.arr = json_object_new_array_ext(n);
    for (int i = 0; i < n; i++) items[i].valid = 0;

    for (int i = 0; i < n && !abandoned; i++) {
        item_t *it = &items[i];
        rd_kafka_message_t *m = it->msg;
        vx_msg_err_t e;

        it->cid[0] = '\0';
        if (m->err) {
            vx_log(VX_LOG_WARN, "consume_error", "error", rd_kafka_message_errstr(m), NULL);
            continue;
        }
        vx_kafka_header(m, "correlation-id", it->cid, sizeof(it->cid));
        e = vx_msg_decode(&it->cmd, m->payload, m->len, VX_MSG_INVENTORY_COMMANDS, err, sizeof(err));
        if (e) {
            dead_letter(s, it, vx_msg_err_name(e), err);
            continue;
        }
        it->valid = 1;
        if (!strset_add(&b.keys, it->cmd.idempotency_key) ||
            (it->cmd.order_id && !strset_add(&b.orders, it->cmd.order_id))) {
            abandoned = flush_batch(s, &b, items, i) != 0;
            strset_add(&b.keys, it->cmd.idempotency_key);
            if (it->cmd.order_id) strset_add(&b.orders, it->cmd.order_id);
        }
        json_object_array_add(b.arr, batch_entry(it));
        b.count++;
    }
    if (!abandoned) abandoned = flush_batch(s, &b, items, n) != 0;
    json_object_put(b.arr);
    for (int i = 0; i < n; i++)
        if (items[i].valid) vx_msg_clear(&items[i].cmd);

    if (s->dlq_pending) rd_kafka_flush(s->producer, 30000); /* a dead letter must be durable first */
    if (s->dlq_failed) {
        vx_log(VX_LOG_ERROR, "dead_letter_lost", "detail", "exiting without storing offsets", NULL);
        vx_log_flush();
        exit(1); /* the batch is redelivered to the next instance: nothing is lost */
    }
    if (!abandoned) store_offsets(s, items, n);
}

static void housekeeping(svc_t *s, long long *next_sweep, long long *next_prune, int startup) {
    char err[256];
    long long t = now_ms();

    rd_kafka_poll(s->producer, 0);
    if (vx_outbox_unmarked(s->outbox) && vx_pg_ensure(s->db) == 0 && vx_outbox_mark(s->outbox, s->db, err, sizeof(err)))
        vx_log(VX_LOG_WARN, "mark_failed", "error", err, NULL);
    if (t >= *next_sweep) {
        int n = vx_pg_ensure(s->db) ? 0
                                    : vx_outbox_sweep(s->outbox, s->db, startup ? 0 : (int)s->cfg.sweep_grace_ms, 1000,
                                                      err, sizeof(err));
        if (n < 0) vx_log(VX_LOG_WARN, "sweep_failed", "error", err, NULL);
        if (n > 0) {
            char cnt[16];
            snprintf(cnt, sizeof(cnt), "%d", n);
            vx_log(VX_LOG_INFO, "outbox_swept", "#rows", cnt, NULL);
        }
        *next_sweep = t + 1000;
    }
    if (t >= *next_prune) {
        char secs[32];
        const char *params[1] = {secs};
        int n = vx_outbox_prune(s->outbox, s->db, s->cfg.outbox_retention_s, err, sizeof(err));
        if (n < 0) vx_log(VX_LOG_WARN, "prune_failed", "error", err, NULL);
        snprintf(secs, sizeof(secs), "%lld", s->cfg.outbox_retention_s);
        PQclear(PQexecParams(s->db, SQL_PRUNE_RELEASED, 1, NULL, params, NULL, NULL, 0));
        *next_prune = t + 60000;
    }
}

static int run(svc_t *s) {
    item_t *items = calloc(BATCH_CAP, sizeof(*items));
    long long next_sweep = 0, next_prune = 0;

    if (!items) return 1;
    /* Rows a previous run left unpublished go first, at once, before this run's fast path sends
     * rows of its own (which a sweep with no grace would send a second time). */
    housekeeping(s, &next_sweep, &next_prune, 1);
    while (!stopping) {
        int n = 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(s->consumer, 100);
        if (m) {
            items[n++].msg = m;
            while (n < s->cfg.batch_max && (m = rd_kafka_consumer_poll(s->consumer, 0))) items[n++].msg = m;
            process(s, items, n);
            for (int i = 0; i < n; i++) rd_kafka_message_destroy(items[i].msg);
        }
        housekeeping(s, &next_sweep, &next_prune, 0);
        vx_log_flush();
    }
    /* Stopping: the batch in hand is done; let the events reach the broker, stamp them, commit. */
    rd_kafka_flush(s->producer, 10000);
    housekeeping(s, &next_sweep, &next_prune, 0);
    free(items);
    return 0;
}

int main(void) {
    svc_t s = {0};
    char err[512];
    const char *topics[3];
    int rc = 1;
    struct sigaction sa = {0};

    vx_log_init(SERVICE);
    if (load_config(&s.cfg, err, sizeof(err)) || vx_chaos_init(err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "bad_config", "error", err, NULL);
        return 2;
    }
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!(s.db = vx_pg_connect(s.cfg.db, 60000, err, sizeof(err))) ||
        !(s.http_db = vx_pg_connect(s.cfg.db, 60000, err, sizeof(err)))) {
        vx_log(VX_LOG_ERROR, "database_unreachable", "error", err, NULL);
        goto out;
    }
    if (vx_pg_migrate(s.db, s.cfg.migrations, err, sizeof(err)) < 0) {
        vx_log(VX_LOG_ERROR, "migration_failed", "error", err, NULL);
        goto out;
    }
    if (!(s.producer = vx_kafka_producer_new(on_delivery, &s, NULL, err, sizeof(err))) ||
        !(s.outbox = vx_outbox_new(s.producer)) || vx_outbox_route(s.outbox, "events", s.cfg.events)) {
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        goto out;
    }
    topics[0] = s.cfg.commands;
    topics[1] = s.cfg.events;
    topics[2] = s.cfg.dlq;
    if (vx_kafka_ensure_topics(s.producer, topics, 3, (int)s.cfg.partitions, s.cfg.topic_retention_ms, 30000, err,
                               sizeof(err))) {
        vx_log(VX_LOG_ERROR, "topic_setup_failed", "error", err, NULL);
        goto out;
    }
    if (!(s.consumer = vx_kafka_consumer_new(s.cfg.group, topics, 1, err, sizeof(err)))) {
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        goto out;
    }
    {
        vx_http_opts_t o = {.addr = s.cfg.http_addr, .threads = 1, .body_cap = 4096, .handler = on_http, .opaque = &s};
        if (!(s.http = vx_http_start(&o, err, sizeof(err)))) {
            vx_log(VX_LOG_ERROR, "http_failed", "error", err, NULL);
            goto out;
        }
    }
    vx_log(VX_LOG_INFO, "started", "http", s.cfg.http_addr, "commands", s.cfg.commands, "events", s.cfg.events,
           "group", s.cfg.group, NULL);
    vx_log_flush();
    rc = run(&s);
    vx_log(VX_LOG_INFO, "stopped", NULL);
out:
    vx_http_stop(s.http);
    if (s.consumer) {
        rd_kafka_consumer_close(s.consumer); /* commits the stored offsets */
        rd_kafka_destroy(s.consumer);
    }
    vx_outbox_destroy(s.outbox);
    if (s.producer) rd_kafka_destroy(s.producer);
    PQfinish(s.http_db);
    PQfinish(s.db);
    vx_log_flush();
    return rc;
}
