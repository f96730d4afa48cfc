/* order-svc: owns orders. One consumer reads orders.commands (PlaceOrder, CancelOrder) and
 * inventory.events (the answers to the ReserveStock it sends). What is its own is here: how a message
 * becomes an entry of ord_apply_batch's call (migrations/R_orders_functions.sql) and the read
 * routes. The batch applier (vx_apply: calls, ordering per order, held-back commands, dead letters,
 * offsets), the loop, the relay's upkeep and /health, /ready are common/'s. The order's state
 * machine is written down in order-svc/STATES.md.
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
 *   VX_TOPIC_PARTITIONS        [2]      partitions of the topics this service creates
 *   VX_TOPIC_RETENTION_MS      [7 days] retention.ms of the topics this service creates
 *   VX_OUTBOX_RETENTION_S      [7 days] published outbox rows are deleted after this
 *   VX_OUTBOX_SWEEP_GRACE_MS   [5000]   an unpublished outbox row is swept after this
 *   VX_CRASH_POINTS, VX_GREMLIN_*, VX_CHAOS_TOKEN   see vx_chaos.h
 *   VX_LOG_LEVEL, KAFKA_*               see vx_log.h, vx_kafka.h */
#include <json-c/json.h>
#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vx_chaos.h"
#include "vx_config.h"
#include "vx_http.h"
#include "vx_kafka.h"
#include "vx_log.h"
#include "vx_metrics.h"
#include "vx_msg.h"
#include "vx_worker.h"

#define SERVICE "order-svc"
#define LIST_DEFAULT 20
#define LIST_MAX 1000

/* The apply call and its result, named (vx_apply.h): ord_apply_batch in
 * migrations/R_orders_functions.sql documents the entries and returns SETOF ord_out. */
static const char SQL_APPLY[] = "SELECT * FROM ord_apply_batch($1::jsonb)";
static const char *const LOG_FIELDS[] = {"order_id", "out_order", "idempotency_key", "out_ikey", "status", "out_status",
                                         "correlation_id", "out_cid", "outbox_id", "out_id", NULL};
#define ORDER_FIELDS                                                                                          \
    "'id', o.id, 'idempotency_key', o.idempotency_key, 'customer_id', o.customer_id, 'status', o.status,"     \
    " 'reason', o.reason, 'product_id', o.product_id, 'items', o.items, 'request_hash', o.request_hash,"      \
    " 'created_at', ord_ts(o.created_at), 'updated_at', ord_ts(o.updated_at)"
static const char SQL_ORDER[] =
    "SELECT json_build_object(" ORDER_FIELDS ", 'history', (SELECT coalesce(json_agg(json_build_object("
    "'status', h.status, 'reason', h.reason, 'at', ord_ts(h.at)) ORDER BY h.n), '[]'::json)"
    " FROM ord_history(o) h)) FROM orders o WHERE o.id = $1";
static const char SQL_ORDERS[] =
    "SELECT json_build_object('orders', coalesce(json_agg(json_build_object(" ORDER_FIELDS ")"
    " ORDER BY o.created_at DESC, o.id DESC), '[]'::json))"
    " FROM (SELECT * FROM orders ORDER BY created_at DESC, id DESC LIMIT $1::int) o";

/* Outcomes (out_note) for the metrics: what changed nothing because it was seen before, and what was
 * refused for a business reason; every other note is an applied message. */
static const char *const DUPLICATE_NOTES[] = {"order_duplicate", "cancel_duplicate", "event_ignored", NULL};
static const char *const REJECTED_NOTES[] = {"cancel_not_found", NULL};
/* CancelOrders that came before their order (early_cancels) are remembered as long as the outbox
 * remembers keys: a PlaceOrder later than that is a new order. */
static const char SQL_PRUNE_EARLY_CANCELS[] =
    "DELETE FROM early_cancels WHERE order_id IN (SELECT order_id FROM early_cancels"
    " WHERE cancelled_at < now() - make_interval(secs => $1::float8) LIMIT 10000)";

static vx_metric_t *m_final, *m_decision;

/* Orders reaching a final status, and the time from placement to it (out_age). */
static void on_outcome(const PGresult *r, int row, void *opaque) {
    static int c_note = -1, c_status, c_age;
    const char *note;
    (void)opaque;
    if (c_note < 0) {
        c_note = PQfnumber(r, "out_note");
        c_status = PQfnumber(r, "out_status");
        c_age = PQfnumber(r, "out_age");
    }
    if (c_age < 0 || PQgetisnull(r, row, c_age)) return;
    note = PQgetvalue(r, row, c_note);
    if (strcmp(note, "order_confirmed") && strcmp(note, "order_rejected") && strcmp(note, "order_cancelled")) return;
    vx_metric_add(m_final, VX_L(PQgetvalue(r, row, c_status)), 1);
    vx_metric_observe(m_decision, VX_L(PQgetvalue(r, row, c_status)), atof(PQgetvalue(r, row, c_age)));
}

/* Kinds of entries: inventory's answers are applied before commands of the same turn (they finish
 * orders that wait; the two topics have no order between them), and a call holds one kind, so that
 * ord_apply_batch's fast paths take it. */
enum { KIND_EVENT, KIND_COMMAND };

typedef struct {
    const char *inv_events; /* the topic whose messages are inventory's answers */
} ord_t;

static void add_str(json_object *o, const char *k, const char *v) {
    if (v) json_object_object_add(o, k, json_object_new_string(v));
}

static const char *member(json_object *o, const char *k) {
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

/* {"c": canonical command, "oid": order id, "hash": request hash}: the order id and the request
 * hash of a PlaceOrder are computed here, once, for ord_apply_batch. */
static json_object *command_entry(const vx_msg_t *cmd) {
    json_object *e = json_object_new_object();
    char oid[37], hash[17];

    json_object_object_add(e, "c", vx_msg_to_json(cmd));
    if (cmd->type == VX_MSG_PLACE_ORDER) {
        if (!cmd->order_id) vx_msg_order_id(cmd->idempotency_key, oid);
        vx_msg_order_hash(cmd, hash);
        add_str(e, "oid", cmd->order_id ? cmd->order_id : oid);
        add_str(e, "hash", hash);
    } else {
        add_str(e, "oid", cmd->order_id);
    }
    return e;
}

/* {"c": {type, order_id, idempotency_key, reason, product_id}, "oid": order id}. Not the event's
 * lines: the order keeps its own, and ord_apply_batch reads nothing else of an answer. */
static json_object *event_entry(const vx_msg_t *ev) {
    json_object *e = json_object_new_object(), *c = json_object_new_object();
    add_str(c, "type", vx_msg_type_name(ev->type));
    add_str(c, "order_id", ev->order_id);
    add_str(c, "idempotency_key", ev->idempotency_key);
    add_str(c, "reason", ev->reason);
    add_str(c, "product_id", ev->product_id);
    json_object_object_add(e, "c", c);
    add_str(e, "oid", ev->order_id);
    return e;
}

/* A command or an inventory event as ord_apply_batch's entry. Events are inventory's answers: only
 * StockReserved and StockRejected matter; StockReleased and Restocked are skipped. A message that
 * breaks the contract is dead-lettered, whichever topic it came from. */
static vx_entry_verdict_t decode(const rd_kafka_message_t *m, vx_entry_t *e, char *errstr, size_t errstr_size,
                                 void *opaque) {
    ord_t *s = opaque;
    int event = strcmp(rd_kafka_topic_name(m->rkt), s->inv_events) == 0;
    vx_msg_t msg;
    vx_msg_err_t err = vx_msg_decode(&msg, m->payload, m->len, event ? VX_MSG_INVENTORY_EVENTS : VX_MSG_ORDER_COMMANDS,
                                     errstr, errstr_size);

    if (err) {
        e->reason = vx_msg_err_name(err);
        return VX_ENTRY_REFUSE;
    }
    if (event && msg.type != VX_MSG_STOCK_RESERVED && msg.type != VX_MSG_STOCK_REJECTED) {
        vx_msg_clear(&msg);
        return VX_ENTRY_SKIP;
    }
    e->json = event ? event_entry(&msg) : command_entry(&msg);
    e->type = vx_msg_type_name(msg.type);
    vx_msg_clear(&msg);
    e->kind = event ? KIND_EVENT : KIND_COMMAND;
    e->delayable = !event;
    e->keys[0] = member(e->json, "oid");
    if (!event) e->keys[1] = member(json_object_object_get(e->json, "c"), "idempotency_key");
    e->ikey = member(json_object_object_get(e->json, "c"), "idempotency_key");
    return VX_ENTRY_APPLY;
}

/* GET /orders?limit=N: N from 1 to LIST_MAX, LIST_DEFAULT when absent. */
static void list_orders(vx_worker_t *w, vx_http_req_t *req) {
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
    vx_worker_reply_query(w, req, SQL_ORDERS, 1, params, "order");
}

static int on_http(vx_worker_t *w, vx_http_req_t *req, const char *const *seg, int n, void *opaque) {
    (void)opaque;
    if (n < 1 || n > 2 || strcmp(seg[0], "orders") != 0) return 0;
    vx_http_route(req, n == 1 ? "GET /orders" : "GET /orders/{id}");
    if (strcmp(vx_http_method(req), "GET") != 0 && strcmp(vx_http_method(req), "HEAD") != 0)
        vx_http_method_not_allowed(req, "GET, HEAD");
    else if (n == 1)
        list_orders(w, req);
    else
        vx_worker_reply_query(w, req, SQL_ORDER, 1, &seg[1], "order");
    return 1;
}

int main(void) {
    vx_worker_opts_t o = {0};
    ord_t s = {0};
    const char *topics[5], *routes[5];
    char err[512];

    vx_log_init(SERVICE);
    vx_metrics_service(SERVICE);
    m_final = vx_metric_new(VX_COUNTER, "valerix_orders_final_total", "Orders reaching a final status, by status.",
                            "status", NULL, 0);
    m_decision = vx_metric_new(VX_HISTOGRAM, "valerix_order_decision_seconds",
                               "Time from an order's placement to its final status, by status.", "status",
                               vx_metric_seconds, vx_metric_nseconds);
    o.service = SERVICE;
    o.db = vx_cfg_str("ORDERS_DB", "postgresql://valerix@127.0.0.1:55432/orders");
    o.http_addr = vx_cfg_str("ORDERS_HTTP_ADDR", "127.0.0.1:8081");
    o.group = vx_cfg_str("ORDERS_GROUP_ID", SERVICE);
    o.migrations =
        vx_cfg_str("ORDERS_MIGRATIONS", VX_SRC_DIR "/common/migrations:" VX_SRC_DIR "/order-svc/migrations");
    topics[0] = vx_topic(VX_TOPIC_ORDERS_COMMANDS); /* the first two are consumed */
    topics[1] = s.inv_events = vx_topic(VX_TOPIC_INVENTORY_EVENTS);
    topics[2] = vx_topic(VX_TOPIC_ORDERS_RESULTS);
    topics[3] = o.dlq = vx_topic(VX_TOPIC_ORDERS_DLQ);
    topics[4] = vx_topic(VX_TOPIC_INVENTORY_COMMANDS);
    routes[0] = vx_topic_logical(VX_TOPIC_INVENTORY_COMMANDS);
    routes[1] = topics[4];
    routes[2] = vx_topic_logical(VX_TOPIC_ORDERS_RESULTS);
    routes[3] = topics[2];
    routes[4] = NULL;
    o.consume = topics;
    o.nconsume = 2;
    o.topics = topics;
    o.ntopics = 5;
    o.routes = routes;
    o.apply_sql = SQL_APPLY;
    o.log_fields = LOG_FIELDS;
    o.duplicate_notes = DUPLICATE_NOTES;
    o.rejected_notes = REJECTED_NOTES;
    o.outcome = on_outcome;
    o.decode = decode;
    o.http = on_http;
    o.prune_sql = SQL_PRUNE_EARLY_CANCELS;
    o.opaque = &s;
    if (vx_worker_config(&o, "ORDERS", err, sizeof(err)) || vx_chaos_init(err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "bad_config", "error", err, NULL);
        return 2;
    }
    return vx_worker_main(&o);
}
