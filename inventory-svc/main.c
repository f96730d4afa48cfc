/* inventory-svc: owns stock. Consumes inventory.commands in a consumer group (vx_worker), applies
 * each batch of commands in one PostgreSQL transaction with their outbox rows (inv_apply_batch in
 * migrations/), and publishes the events from the outbox right after the commit.
 *
 * Invariant: a command is acknowledged (its offset stored, by vx_worker) only after its effects and
 * event are committed, so a crash redelivers at most, and redelivery is harmless: the outbox's
 * unique idempotency key turns a command seen before into a resend of its recorded event.
 *
 * Environment (default in brackets): INVENTORY_DB [postgresql://valerix@127.0.0.1:55432/inventory],
 * INVENTORY_HTTP_ADDR [127.0.0.1:8082], INVENTORY_GROUP_ID [inventory-svc],
 * INVENTORY_COMMANDS_TOPIC / _EVENTS_TOPIC / _DLQ_TOPIC [inventory.commands / .events / .dlq],
 * INVENTORY_MIGRATIONS [<src>/common/migrations:<src>/inventory-svc/migrations], INVENTORY_BATCH_MAX
 * and the VX_* settings of vx_worker.h; the chaos settings of vx_chaos.h (VX_CRASH_POINTS, VX_GREMLIN_*,
 * VX_CHAOS_TOKEN). */
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

#define SERVICE "inventory-svc"

/* The apply call and its result, named (vx_apply.h): inv_apply_batch in
 * migrations/R_inventory_functions.sql documents the entries and returns SETOF inv_out. */
static const char SQL_APPLY[] = "SELECT * FROM inv_apply_batch($1::jsonb)";
static const char *const LOG_FIELDS[] = {"idempotency_key", "out_ikey", "order_id",   "out_order",
                                         "reason",          "out_reason", "correlation_id", "out_cid",
                                         "outbox_id",       "out_id",   NULL};
/* Outcomes (out_note) for the metrics: a command seen before, and a reservation refused. */
static const char *const DUPLICATE_NOTES[] = {"command_duplicate", NULL};
static const char *const REJECTED_NOTES[] = {"stock_rejected", NULL};
static const char SQL_PRUNE_RELEASED[] =
    "DELETE FROM released_orders WHERE order_id IN (SELECT order_id FROM released_orders"
    " WHERE released_at < now() - make_interval(secs => $1::float8) LIMIT 10000)";
static const char SQL_PRODUCTS[] =
    "SELECT json_build_object('products', coalesce(json_agg(json_build_object('id', id, 'name', name,"
    " 'stock', stock, 'updated_at', updated_at) ORDER BY id), '[]'::json)) FROM products";
static const char SQL_PRODUCT[] =
    "SELECT json_build_object('id', id, 'name', name, 'stock', stock, 'updated_at', updated_at)"
    " FROM products WHERE id = $1";

static const char *member(json_object *o, const char *k) {
    json_object *v;
    return json_object_object_get_ex(o, k, &v) ? json_object_get_string(v) : NULL;
}

/* A command as inv_apply_batch's entry {"c": canonical command, "k": Kafka key}; its ordering keys
 * are its idempotency key and order id, the rows it locks its products. */
static vx_entry_verdict_t decode(const rd_kafka_message_t *m, vx_entry_t *e, char *errstr, size_t errstr_size,
                                 void *opaque) {
    vx_msg_t cmd;
    vx_msg_err_t err = vx_msg_decode(&cmd, m->payload, m->len, VX_MSG_INVENTORY_COMMANDS, errstr, errstr_size);
    json_object *c, *items;
    (void)opaque;

    if (err) {
        e->reason = vx_msg_err_name(err);
        return VX_ENTRY_REFUSE;
    }
    c = vx_msg_to_json(&cmd);
    e->type = vx_msg_type_name(cmd.type);
    vx_msg_clear(&cmd);
    e->json = json_object_new_object();
    json_object_object_add(e->json, "c", c);
    if (m->key) json_object_object_add(e->json, "k", json_object_new_string_len(m->key, (int)m->key_len));
    e->ikey = e->keys[0] = member(c, "idempotency_key");
    e->keys[1] = member(c, "order_id");
    if (json_object_object_get_ex(c, "items", &items))
        for (size_t i = 0; i < json_object_array_length(items); i++)
            e->rows[e->nrows++] = member(json_object_array_get_idx(items, i), "product_id");
    else if ((e->rows[0] = member(c, "product_id")))
        e->nrows = 1;
    e->delayable = 1;
    return VX_ENTRY_APPLY;
}

static int on_http(vx_worker_t *w, vx_http_req_t *req, const char *const *seg, int n, void *opaque) {
    (void)opaque;
    if (n < 1 || n > 2 || strcmp(seg[0], "products") != 0) return 0;
    vx_http_route(req, n == 1 ? "GET /products" : "GET /products/{id}");
    if (strcmp(vx_http_method(req), "GET") != 0 && strcmp(vx_http_method(req), "HEAD") != 0)
        vx_http_method_not_allowed(req, "GET, HEAD");
    else if (n == 1)
        vx_worker_reply_query(w, req, SQL_PRODUCTS, 0, NULL, "product");
    else
        vx_worker_reply_query(w, req, SQL_PRODUCT, 1, &seg[1], "product");
    return 1;
}

int main(void) {
    vx_worker_opts_t o = {0};
    const char *topics[3], *routes[3];
    char err[512];

    vx_log_init(SERVICE);
    vx_metrics_service(SERVICE);
    o.service = SERVICE;
    o.db = vx_cfg_str("INVENTORY_DB", "postgresql://valerix@127.0.0.1:55432/inventory");
    o.http_addr = vx_cfg_str("INVENTORY_HTTP_ADDR", "127.0.0.1:8082");
    o.group = vx_cfg_str("INVENTORY_GROUP_ID", SERVICE);
    o.migrations = vx_cfg_str("INVENTORY_MIGRATIONS",
                              VX_SRC_DIR "/common/migrations:" VX_SRC_DIR "/inventory-svc/migrations");
    topics[0] = vx_topic(VX_TOPIC_INVENTORY_COMMANDS);
    topics[1] = vx_topic(VX_TOPIC_INVENTORY_EVENTS);
    topics[2] = o.dlq = vx_topic(VX_TOPIC_INVENTORY_DLQ);
    routes[0] = vx_topic_logical(VX_TOPIC_INVENTORY_EVENTS);
    routes[1] = topics[1];
    routes[2] = NULL;
    o.consume = topics;
    o.nconsume = 1;
    o.topics = topics;
    o.ntopics = 3;
    o.routes = routes;
    o.apply_sql = SQL_APPLY;
    o.log_fields = LOG_FIELDS;
    o.duplicate_notes = DUPLICATE_NOTES;
    o.rejected_notes = REJECTED_NOTES;
    o.decode = decode;
    o.http = on_http;
    o.prune_sql = SQL_PRUNE_RELEASED; /* released orders, as long as the outbox remembers keys */
    if (vx_worker_config(&o, "INVENTORY", err, sizeof(err)) || vx_chaos_init(err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "bad_config", "error", err, NULL);
        return 2;
    }
    return vx_worker_main(&o);
}
