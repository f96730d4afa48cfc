/* order-svc: owns orders. One consumer reads orders.commands (PlaceOrder, CancelOrder) and
 * inventory.events (the answers to the ReserveStock it sends); each polled batch is applied in as few
 * PostgreSQL transactions as its repeats allow (ord_apply_batch in migrations/: no order and no
 * idempotency key twice in one), each with its outbox rows, which are published (ReserveStock/
 * ReleaseStock to inventory, OrderResult to orders.results) right after its commit; only then are
 * the Kafka offsets stored.
 *
 * The loop, the relay's upkeep, dead letters, offsets and /health, /ready are vx_worker's.
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
#include "vx_msg.h"
#include "vx_worker.h"

#define SERVICE "order-svc"
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

typedef enum { ITEM_SKIP, ITEM_COMMAND, ITEM_EVENT } item_kind_t;

typedef struct {
    rd_kafka_message_t *msg; /* borrowed from the worker */
    item_kind_t kind;
    vx_msg_t cmd;       /* ITEM_COMMAND */
    json_object *entry; /* the batch entry (ITEM_COMMAND, ITEM_EVENT), owned */
    const char *oid;    /* the order it counts under, borrowed from entry */
    char cid[129];
} item_t;

typedef struct {
    const char *inv_events; /* the topic whose messages are inventory's answers */
    json_tokener *tok;      /* parses inventory events, consumer thread only */
    item_t *items;          /* one per polled message, batch_max of them */
    vx_strset_t keys, orders; /* what the SQL call being built holds: ord_apply_batch needs every order
                                 id and command key at most once, so a repeat starts a new call */
    json_object *arr;       /* the SQL call being built */
    int *call;              /* the items whose entries arr holds, in order */
    int count;              /* how many */
} ord_t;

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
static json_object *event_entry(ord_t *s, item_t *it) {
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

static const char *col(const PGresult *r, int row, int c) { return PQgetisnull(r, row, c) ? NULL : PQgetvalue(r, row, c); }

/* Logs one line per outcome, then publishes the outbox rows. Rows that only carry an outcome (no
 * outbox id) are left out of what vx_outbox_publish sees. */
static void publish(vx_worker_t *w, PGresult *rows) {
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
    vx_worker_publish(w, out);
    if (out != rows) PQclear(out);
}

/* Sorts one polled message into a command, an event or nothing (dead-lettered or skipped). */
static void classify(vx_worker_t *w, ord_t *s, item_t *it) {
    rd_kafka_message_t *m = it->msg;
    char err[256];
    vx_msg_err_t e;

    it->kind = ITEM_SKIP;
    it->entry = NULL;
    it->oid = NULL;
    it->cid[0] = '\0';
    if (m->err) {
        vx_log(VX_LOG_WARN, "consume_error", "error", rd_kafka_message_errstr(m), NULL);
        return;
    }
    vx_kafka_header(m, "correlation-id", it->cid, sizeof(it->cid));
    if (strcmp(rd_kafka_topic_name(m->rkt), s->inv_events) == 0) {
        if ((it->entry = event_entry(s, it))) {
            it->kind = ITEM_EVENT;
            it->oid = get_str(it->entry, "oid");
        }
        return;
    }
    e = vx_msg_decode(&it->cmd, m->payload, m->len, VX_MSG_ORDER_COMMANDS, err, sizeof(err));
    if (e) {
        vx_worker_dead_letter(w, m, vx_msg_err_name(e), err, NULL, it->cid[0] ? it->cid : NULL);
        return;
    }
    it->kind = ITEM_COMMAND;
    it->entry = command_entry(it);
    it->oid = get_str(it->entry, "oid");
}

/* Applies the SQL call being built: one transaction, or one entry at a time if the database refuses
 * the whole (then only the command at fault is dead-lettered, an event at fault is logged and
 * skipped). Returns 0, or -1 when it gave up because the service is stopping. */
static int flush_call(vx_worker_t *w, ord_t *s) {
    int fatal = 0, rc = 0;
    PGresult *r;

    if (!s->count) goto reset;
    r = vx_worker_apply(w, SQL_APPLY, json_object_to_json_string_ext(s->arr, JSON_C_TO_STRING_PLAIN), &fatal);
    if (r) {
        publish(w, r);
        PQclear(r);
    } else if (!fatal) {
        rc = -1;
    } else {
        for (int i = 0; i < s->count && rc == 0; i++) {
            item_t *it = &s->items[s->call[i]];
            json_object *one = json_object_new_array_ext(1);
            json_object_array_add(one, json_object_get(it->entry));
            r = vx_worker_apply(w, SQL_APPLY, json_object_to_json_string_ext(one, JSON_C_TO_STRING_PLAIN), &fatal);
            json_object_put(one);
            if (r) {
                publish(w, r);
                PQclear(r);
            } else if (!fatal) {
                rc = -1;
            } else if (it->kind == ITEM_COMMAND) {
                vx_worker_dead_letter(w, it->msg, "processing_error", "the database refused this command",
                                      it->cmd.idempotency_key, it->cid[0] ? it->cid : NULL);
            } else {
                vx_log(VX_LOG_ERROR, "event_skipped", "error", "the database refused this event", "correlation_id",
                       it->cid[0] ? it->cid : NULL, NULL);
            }
        }
    }
reset:
    json_object_put(s->arr);
    s->arr = json_object_new_array_ext(64);
    s->count = 0;
    vx_strset_clear(&s->keys);
    vx_strset_clear(&s->orders);
    return rc;
}

/* One polled batch: classify, dead-letter the poison, then apply the inventory events, then the
 * commands, each kind in as few transactions as the repeats allow (an order id or a command's key
 * seen already in the call being built starts the next one; an event counts under its order id),
 * publishing each right after its commit. Calls of one kind take ord_apply_batch's fast paths.
 * Events go first: they finish orders that wait, and the two topics have no order between them, so
 * an event and a command about one order may be applied either way round. An event whose order a
 * command of the same poll creates finds no order and is ignored: it cannot be that order's answer. */
static int process(vx_worker_t *w, rd_kafka_message_t **msgs, int n, void *opaque) {
    ord_t *s = opaque;
    item_t *items = s->items;
    int rc = 0;

    s->arr = json_object_new_array_ext(n);
    s->count = 0;
    for (int i = 0; i < n; i++) {
        items[i].msg = msgs[i];
        classify(w, s, &items[i]);
    }
    for (int pass = 0; pass < 2 && rc == 0; pass++) {
        item_kind_t kind = pass == 0 ? ITEM_EVENT : ITEM_COMMAND;
        for (int i = 0; i < n && rc == 0; i++) {
            item_t *it = &items[i];
            const char *key = it->kind == ITEM_COMMAND ? it->cmd.idempotency_key : NULL;

            if (!it->entry || it->kind != kind) continue;
            if ((key && vx_strset_find(&s->keys, key)) || (it->oid && vx_strset_find(&s->orders, it->oid)))
                rc = flush_call(w, s);
            if (key) vx_strset_add(&s->keys, key);
            if (it->oid) vx_strset_add(&s->orders, it->oid);
            if (vx_worker_delay(w, i)) /* "h": headers of what it produces */
                json_object_object_add(it->entry, "h", vx_chaos_delay_headers(vx_worker_delay(w, i)));
            json_object_array_add(s->arr, json_object_get(it->entry));
            s->call[s->count++] = i;
        }
        if (rc == 0) rc = flush_call(w, s);
    }
    json_object_put(s->arr);
    s->arr = NULL;
    for (int i = 0; i < n; i++) {
        json_object_put(items[i].entry);
        if (items[i].kind == ITEM_COMMAND) vx_msg_clear(&items[i].cmd);
    }
    return rc;
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
    int rc;

    vx_log_init(SERVICE);
    o.service = SERVICE;
    o.db = vx_cfg_str("ORDERS_DB", "postgresql://valerix@127.0.0.1:55432/orders");
    o.http_addr = vx_cfg_str("ORDERS_HTTP_ADDR", "127.0.0.1:8081");
    o.group = vx_cfg_str("ORDERS_GROUP_ID", SERVICE);
    o.migrations =
        vx_cfg_str("ORDERS_MIGRATIONS", VX_SRC_DIR "/common/migrations:" VX_SRC_DIR "/order-svc/migrations");
    topics[0] = vx_cfg_str("ORDERS_COMMANDS_TOPIC", "orders.commands"); /* the first two are consumed */
    topics[1] = s.inv_events = vx_cfg_str("INVENTORY_EVENTS_TOPIC", "inventory.events");
    topics[2] = vx_cfg_str("ORDERS_RESULTS_TOPIC", "orders.results");
    topics[3] = o.dlq = vx_cfg_str("ORDERS_DLQ_TOPIC", "orders.dlq");
    topics[4] = vx_cfg_str("INVENTORY_COMMANDS_TOPIC", "inventory.commands");
    routes[0] = "inventory.commands";
    routes[1] = topics[4];
    routes[2] = "orders.results";
    routes[3] = topics[2];
    routes[4] = NULL;
    o.consume = topics;
    o.nconsume = 2;
    o.topics = topics;
    o.ntopics = 5;
    o.routes = routes;
    o.retry_unique_violation = 1; /* ord_apply_batch's fast paths insert plainly (R_orders_functions.sql) */
    o.process = process;
    o.http = on_http;
    o.opaque = &s;
    if (vx_worker_config(&o, "ORDERS", err, sizeof(err)) || vx_chaos_init(err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "bad_config", "error", err, NULL);
        return 2;
    }
    s.items = calloc((size_t)o.batch_max, sizeof(*s.items));
    s.call = calloc((size_t)o.batch_max, sizeof(*s.call));
    s.tok = json_tokener_new();
    if (!s.items || !s.call || !s.tok || vx_strset_init(&s.keys, (size_t)o.batch_max) ||
        vx_strset_init(&s.orders, (size_t)o.batch_max)) {
        vx_log(VX_LOG_ERROR, "out_of_memory", NULL);
        return 1;
    }
    rc = vx_worker_main(&o);
    json_tokener_free(s.tok);
    vx_strset_free(&s.keys);
    vx_strset_free(&s.orders);
    free(s.call);
    free(s.items);
    return rc;
}
