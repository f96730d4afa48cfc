/* order-svc: owns orders. One consumer reads orders.commands (PlaceOrder, CancelOrder) and
 * inventory.events (the answers to the ReserveStock it sends); each polled batch is applied in one
 * PostgreSQL transaction with its outbox rows (ord_apply_batch in migrations/), the rows are
 * published (ReserveStock/ReleaseStock to inventory, OrderResult to orders.results), and only then
 * are the Kafka offsets stored.
 *
 * Invariant: an offset is stored only after its message's effects and outbox rows are committed in
 * the database (or the message is in the dead-letter topic), so a crash anywhere redelivers at most,
 * and redelivery is harmless: an order is found by its id or key and never placed twice, and an
 * inventory answer counts only while its order is PENDING.
 *
 * Environment (default in brackets):
 *   ORDERS_DB                  [postgresql://valerix@127.0.0.1:55432/orders]  libpq conninfo, never logged
 *   ORDERS_HTTP_ADDR           [127.0.0.1:8081]      GET /orders, /orders/{id}, /health, /ready
 *   ORDERS_GROUP_ID            [order-svc]           consumer group of both topics
 *   ORDERS_COMMANDS_TOPIC      [orders.commands]     PlaceOrder, CancelOrder
 *   ORDERS_RESULTS_TOPIC       [orders.results]      OrderResult, keyed by order id
 *   ORDERS_DLQ_TOPIC           [orders.dlq]          commands that cannot be processed
 *   INVENTORY_COMMANDS_TOPIC   [inventory.commands]  ReserveStock, ReleaseStock, keyed by order id
 *   INVENTORY_EVENTS_TOPIC     [inventory.events]    StockReserved, StockRejected (the rest is skipped)
 *   ORDERS_MIGRATIONS          [<src>/common/migrations:<src>/order-svc/migrations]
 *   ORDERS_BATCH_MAX           [1000]   messages per transaction, 1..5000
 *   VX_TOPIC_PARTITIONS        [6]      partitions of the topics this service creates
 *   VX_TOPIC_RETENTION_MS      [7 days] retention.ms of the topics this service creates
 *   VX_OUTBOX_RETENTION_S      [7 days] published outbox rows are deleted after this
 *   VX_OUTBOX_SWEEP_GRACE_MS   [5000]   an unpublished outbox row is swept after this
 *   VX_CRASH_POINTS            []       see vx_chaos.h; point: after_commit_before_publish
 *   VX_LOG_LEVEL, KAFKA_*               see vx_log.h, vx_kafka.h */
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

#define SERVICE "order-svc"
#define BATCH_CAP 5000
#define LIST_DEFAULT 20
#define LIST_MAX 1000

/* ord_apply_batch's columns: the outbox row (what vx_outbox_publish reads), then the outcome. */
enum { COL_ID, COL_TOPIC, COL_KEY, COL_PAYLOAD, COL_CID, COL_HEADERS, COL_NOTE, COL_ORDER, COL_IKEY, COL_STATUS };

static const char SQL_APPLY[] = "SELECT * FROM ord_apply_batch($1::jsonb)";
#define ORDER_FIELDS                                                                                          \
    "'id', o.id, 'idempotency_key', o.idempotency_key, 'customer_id', o.customer_id, 'status', o.status,"     \
    " 'reason', o.reason, 'product_id', o.product_id, 'items', o.items, 'request_hash', o.request_hash,"      \
    " 'created_at', ord_ts(o.created_at), 'updated_at', ord_ts(o.updated_at)"
static const char SQL_ORDER[] =
    "SELECT json_build_object(" ORDER_FIELDS ", 'history', (SELECT coalesce(json_agg(json_build_object("
    "'status', h.status, 'reason', h.reason, 'at', ord_ts(h.at)) ORDER BY h.id), '[]'::json)"
    " FROM order_history h WHERE h.order_id = o.id)) FROM orders o WHERE o.id = $1";
static const char SQL_ORDERS[] =
    "SELECT json_build_object('orders', coalesce(json_agg(json_build_object(" ORDER_FIELDS ")"
    " ORDER BY o.created_at DESC, o.id DESC), '[]'::json))"
    " FROM (SELECT * FROM orders ORDER BY created_at DESC, id DESC LIMIT $1::int) o";

typedef struct {
    const char *db, *http_addr, *group, *commands, *results, *dlq, *inv_commands, *inv_events, *migrations;
    long long batch_max, partitions, topic_retention_ms, outbox_retention_s, sweep_grace_ms;
} config_t;

typedef struct {
    config_t cfg;
    PGconn *db;      /* the consumer loop's connection */
    PGconn *http_db; /* the HTTP thread's connection (one polling thread: never shared) */
    rd_kafka_t *producer, *consumer;
    vx_outbox_t *outbox;
    vx_http_t *http;
    json_tokener *tok;                 /* parses inventory events, consumer thread only */
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
    c->db = vx_cfg_str("ORDERS_DB", "postgresql://valerix@127.0.0.1:55432/orders");
    c->http_addr = vx_cfg_str("ORDERS_HTTP_ADDR", "127.0.0.1:8081");
    c->group = vx_cfg_str("ORDERS_GROUP_ID", SERVICE);
    c->commands = vx_cfg_str("ORDERS_COMMANDS_TOPIC", "orders.commands");
    c->results = vx_cfg_str("ORDERS_RESULTS_TOPIC", "orders.results");
    c->dlq = vx_cfg_str("ORDERS_DLQ_TOPIC", "orders.dlq");
    c->inv_commands = vx_cfg_str("INVENTORY_COMMANDS_TOPIC", "inventory.commands");
    c->inv_events = vx_cfg_str("INVENTORY_EVENTS_TOPIC", "inventory.events");
    c->migrations =
        vx_cfg_str("ORDERS_MIGRATIONS", VX_SRC_DIR "/common/migrations:" VX_SRC_DIR "/order-svc/migrations");
    return vx_cfg_int("ORDERS_BATCH_MAX", 1000, 1, BATCH_CAP, &c->batch_max, errstr, errstr_size) ||
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
        if (m->err) vx_log(VX_LOG_WARN, "outbox_delivery_failed", "error", rd_kafka_err2str(m->err), NULL);
        return;
    }
    s->dlq_pending--;
    if (m->err) {
        s->dlq_failed++;
        vx_log(VX_LOG_ERROR, "dead_letter_delivery_failed", "error", rd_kafka_err2str(m->err), NULL);
    }
}

/* ---- HTTP: orders, health, readiness ---------------------------------------------------------- */

static void reply_query(svc_t *s, vx_http_req_t *req, const char *sql, int nparams, const char *const *params) {
    PGresult *r;

    if (vx_pg_ensure(s->http_db)) {
        vx_http_problem(req, 503, "Database unavailable", "cannot reach the orders database", NULL);
        return;
    }
    r = PQexecParams(s->http_db, sql, nparams, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        vx_http_problem(req, 503, "Database unavailable", "the orders query failed", NULL);
    else if (PQntuples(r) == 0)
        vx_http_problem(req, 404, "Not found", "no order with this id", NULL);
    else
        vx_http_reply(req, 200, "application/json", PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0));
    PQclear(r);
}

/* GET /orders?limit=N: N from 1 to LIST_MAX, LIST_DEFAULT when absent. */
static void list_orders(svc_t *s, vx_http_req_t *req) {
    const char *arg = vx_http_arg(req, "limit");
    char limit[16];
    const char *params[1] = {limit};
    long n = LIST_DEFAULT;

    if (arg) {
        size_t len = strlen(arg);
        n = len >= 1 && len <= 4 && strspn(arg, "0123456789") == len ? strtol(arg, NULL, 10) : -1;
        if (n < 1 || n > LIST_MAX) {
            vx_http_problem(req, 400, "Invalid query", "limit must be an integer from 1 to 1000", NULL);
            return;
        }
    }
    snprintf(limit, sizeof(limit), "%ld", n);
    reply_query(s, req, SQL_ORDERS, 1, params);
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
    } else if (n >= 1 && n <= 2 && strcmp(seg[0], "orders") == 0) {
        if (!get)
            vx_http_method_not_allowed(req, "GET");
        else if (n == 1)
            list_orders(s, req);
        else
            reply_query(s, req, SQL_ORDER, 1, &seg[1]);
    } else {
        vx_http_not_found(req);
    }
}

/* ---- the consumer loop ------------------------------------------------------------------------ */

/* Runs the batch until it commits. Transient failures (connection lost, database restarting, a
 * deadlock with another instance) retry with backoff; once the service is told to stop it gives up
 * after STOP_GRACE_MS and returns NULL with *fatal = 0 (the batch will be redelivered). Any other
 * error returns NULL with *fatal = 1 so the caller can isolate the message at fault. */
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
                int retry = vx_pg_transient(s->db, r);
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

typedef enum { ITEM_SKIP, ITEM_COMMAND, ITEM_EVENT } item_kind_t;

typedef struct {
    rd_kafka_message_t *msg;
    item_kind_t kind;
    vx_msg_t cmd;       /* ITEM_COMMAND */
    json_object *entry; /* the batch entry (ITEM_COMMAND, ITEM_EVENT), owned */
    char cid[129];
} item_t;

static void add_str(json_object *o, const char *k, const char *v) {
    if (v) json_object_object_add(o, k, json_object_new_string(v));
}

/* {"c": canonical command, "oid": order id, "cid": ..., "hash": ...}: the order id and the
 * request hash of a PlaceOrder are computed here, once, for ord_apply_batch. */
static json_object *command_entry(item_t *it) {
    json_object *e = json_object_new_object();
    char oid[37], hash[17];

    json_object_object_add(e, "c", vx_msg_to_json(&it->cmd));
    if (it->cmd.type == VX_MSG_PLACE_ORDER) {
        if (!it->cmd.order_id) vx_msg_order_id(it->cmd.idempotency_key, oid);
        vx_msg_order_hash(&it->cmd, hash);
        add_str(e, "oid", it->cmd.order_id ? it->cmd.order_id : oid);
        add_str(e, "hash", hash);
    } else {
        add_str(e, "oid", it->cmd.order_id);
    }
    if (it->cid[0]) add_str(e, "cid", it->cid);
    return e;
}

/* The string member k of o, or NULL when absent or not a string. */
static const char *get_str(json_object *o, const char *k) {
    json_object *v;
    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                            : NULL;
}

/* An inventory event as ord_apply_batch wants it, or NULL when it is not one order-svc acts on.
 * Events come from our own inventory-svc, so a malformed one is a bug to log, not a command to
 * dead-letter. Only StockReserved and StockRejected matter; the other kinds are skipped quietly. */
static json_object *event_entry(svc_t *s, item_t *it) {
    rd_kafka_message_t *m = it->msg;
    json_object *root, *c, *e = NULL, *items;
    const char *type = NULL, *oid = NULL, *why = NULL;

    if (!m->payload || m->len > VX_MSG_MAX_BYTES) {
        vx_log(VX_LOG_WARN, "event_skipped", "error", m->payload ? "larger than 65536 bytes" : "no value", NULL);
        return NULL;
    }
    json_tokener_reset(s->tok);
    root = json_tokener_parse_ex(s->tok, m->payload, (int)m->len);
    if (json_tokener_get_error(s->tok) != json_tokener_success || !json_object_is_type(root, json_type_object))
        why = "not a JSON object";
    else if (!(type = get_str(root, "type")))
        why = "no type";
    else if (strcmp(type, "StockReserved") != 0 && strcmp(type, "StockRejected") != 0)
        goto out; /* StockReleased, Restocked: nothing for orders */
    else if (!(oid = get_str(root, "order_id")))
        why = "no order_id";
    else if (strlen(oid) > VX_MSG_MAX_ID)
        why = "order_id longer than 64 bytes";
    if (why) {
        vx_log(VX_LOG_WARN, "event_skipped", "error", why, "topic", rd_kafka_topic_name(m->rkt), "correlation_id",
               it->cid[0] ? it->cid : NULL, NULL);
        goto out;
    }
    c = json_object_new_object();
    add_str(c, "type", type);
    add_str(c, "order_id", oid);
    add_str(c, "idempotency_key", get_str(root, "idempotency_key"));
    add_str(c, "reason", get_str(root, "reason"));
    add_str(c, "product_id", get_str(root, "product_id"));
    if (json_object_object_get_ex(root, "items", &items) && json_object_is_type(items, json_type_array))
        json_object_object_add(c, "items", json_object_get(items));
    e = json_object_new_object();
    json_object_object_add(e, "c", c);
    add_str(e, "oid", oid);
    if (it->cid[0]) add_str(e, "cid", it->cid);
out:
    json_object_put(root);
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
           "idempotency_key", it->kind == ITEM_COMMAND ? it->cmd.idempotency_key : NULL, "correlation_id",
           it->cid[0] ? it->cid : NULL, NULL);
}

static const char *col(const PGresult *r, int row, int c) { return PQgetisnull(r, row, c) ? NULL : PQgetvalue(r, row, c); }

/* Logs one line per outcome, then publishes the outbox rows. Rows that only carry an outcome (no
 * outbox id) are left out of what vx_outbox_publish sees. */
static void publish(svc_t *s, PGresult *rows) {
    char err[256];
    PGresult *out = rows;
    int n = PQntuples(rows), nout = 0;

    for (int i = 0; i < n; i++) {
        if (!PQgetisnull(rows, i, COL_ID)) nout++;
        if (col(rows, i, COL_NOTE))
            vx_log(VX_LOG_INFO, col(rows, i, COL_NOTE), "order_id", col(rows, i, COL_ORDER), "idempotency_key",
                   col(rows, i, COL_IKEY), "status", col(rows, i, COL_STATUS), "correlation_id", col(rows, i, COL_CID),
                   "outbox_id", col(rows, i, COL_ID), NULL);
    }
    if (nout == 0) return;
    if (nout < n) {
        if (!(out = PQcopyResult(rows, PG_COPYRES_ATTRS))) {
            vx_log(VX_LOG_ERROR, "publish_failed", "error", "out of memory", NULL); /* rows stay for the sweep */
            return;
        }
        for (int i = 0, k = 0; i < n; i++) {
            if (PQgetisnull(rows, i, COL_ID)) continue;
            for (int c = COL_ID; c <= COL_HEADERS; c++)
                PQsetvalue(out, k, c, PQgetisnull(rows, i, c) ? NULL : PQgetvalue(rows, i, c), PQgetlength(rows, i, c));
            k++;
        }
    }
    if (vx_outbox_publish(s->outbox, out, err, sizeof(err)) < 0)
        vx_log(VX_LOG_ERROR, "publish_failed", "error", err, NULL); /* rows stay for the sweep */
    if (out != rows) PQclear(out);
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

/* Sorts one polled message into a command, an event or nothing (dead-lettered or skipped). */
static void classify(svc_t *s, item_t *it) {
    rd_kafka_message_t *m = it->msg;
    char err[256];
    vx_msg_err_t e;

    it->kind = ITEM_SKIP;
    it->entry = NULL;
    it->cid[0] = '\0';
    if (m->err) {
        vx_log(VX_LOG_WARN, "consume_error", "error", rd_kafka_message_errstr(m), NULL);
        return;
    }
    vx_kafka_header(m, "correlation-id", it->cid, sizeof(it->cid));
    if (strcmp(rd_kafka_topic_name(m->rkt), s->cfg.inv_events) == 0) {
        if ((it->entry = event_entry(s, it))) it->kind = ITEM_EVENT;
        return;
    }
    e = vx_msg_decode(&it->cmd, m->payload, m->len, VX_MSG_ORDER_COMMANDS, err, sizeof(err));
    if (e) {
        dead_letter(s, it, vx_msg_err_name(e), err);
        return;
    }
    it->kind = ITEM_COMMAND;
    it->entry = command_entry(it);
}

/* One batch: classify, dead-letter the poison, apply the rest in one transaction (or one by one if
 * the database refuses the batch), publish, then store offsets. */
static void process(svc_t *s, item_t *items, int n) {
    json_object *batch = json_object_new_array_ext(n);
    int valid = 0, fatal = 0, abandoned = 0;

    for (int i = 0; i < n; i++) {
        classify(s, &items[i]);
        if (items[i].entry) {
            json_object_array_add(batch, json_object_get(items[i].entry));
            valid++;
        }
    }

    if (valid) {
        PGresult *r = apply(s, json_object_to_json_string_ext(batch, JSON_C_TO_STRING_PLAIN), &fatal);
        if (r) {
            vx_chaos_point("after_commit_before_publish");
            publish(s, r);
            PQclear(r);
        } else if (!fatal) {
            abandoned = 1;
        } else {
            /* Something in the batch breaks a database rule: apply one at a time so that only the
             * message at fault is set aside and its neighbours keep their outcome. */
            for (int i = 0; i < n; i++) {
                json_object *one;
                if (!items[i].entry) continue;
                one = json_object_new_array_ext(1);
                json_object_array_add(one, json_object_get(items[i].entry));
                r = apply(s, json_object_to_json_string_ext(one, JSON_C_TO_STRING_PLAIN), &fatal);
                json_object_put(one);
                if (r) {
                    publish(s, r);
                    PQclear(r);
                } else if (!fatal) {
                    abandoned = 1;
                    break;
                } else if (items[i].kind == ITEM_COMMAND) {
                    dead_letter(s, &items[i], "processing_error", "the database refused this command");
                } else {
                    vx_log(VX_LOG_ERROR, "event_skipped", "error", "the database refused this event", "correlation_id",
                           items[i].cid[0] ? items[i].cid : NULL, NULL);
                }
            }
        }
    }
    json_object_put(batch);
    for (int i = 0; i < n; i++) {
        json_object_put(items[i].entry);
        if (items[i].kind == ITEM_COMMAND) vx_msg_clear(&items[i].cmd);
    }

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
        int n = vx_pg_ensure(s->db) ? 0 : vx_outbox_prune(s->outbox, s->db, s->cfg.outbox_retention_s, err, sizeof(err));
        if (n < 0) vx_log(VX_LOG_WARN, "prune_failed", "error", err, NULL);
        *next_prune = t + 60000;
    }
}

/* Waits until the broker's metadata lists each topic with its partitions. A consumer that subscribes
 * to a topic created a moment ago, before the broker has it, only looks again at its next metadata
 * refresh (topic.metadata.refresh.interval.ms, 5 minutes by default). */
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
    /* Stopping: the batch in hand is done; let the messages reach the broker, stamp them, commit. */
    rd_kafka_flush(s->producer, 10000);
    housekeeping(s, &next_sweep, &next_prune, 0);
    free(items);
    return 0;
}

int main(void) {
    svc_t s = {0};
    char err[512];
    const char *topics[5];
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

    if (!(s.tok = json_tokener_new())) goto out;
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
        !(s.outbox = vx_outbox_new(s.producer)) || vx_outbox_route(s.outbox, "inventory.commands", s.cfg.inv_commands) ||
        vx_outbox_route(s.outbox, "orders.results", s.cfg.results)) {
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        goto out;
    }
    topics[0] = s.cfg.commands; /* the first two are the ones consumed */
    topics[1] = s.cfg.inv_events;
    topics[2] = s.cfg.results;
    topics[3] = s.cfg.dlq;
    topics[4] = s.cfg.inv_commands;
    if (vx_kafka_ensure_topics(s.producer, topics, 5, (int)s.cfg.partitions, s.cfg.topic_retention_ms, 30000, err,
                               sizeof(err))) {
        vx_log(VX_LOG_ERROR, "topic_setup_failed", "error", err, NULL);
        goto out;
    }
    if (!(s.consumer = vx_kafka_consumer_new(s.cfg.group, topics, 2, err, sizeof(err)))) {
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
    vx_log(VX_LOG_INFO, "started", "http", s.cfg.http_addr, "commands", s.cfg.commands, "events", s.cfg.inv_events,
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
    if (s.tok) json_tokener_free(s.tok);
    vx_log_flush();
    return rc;
}
