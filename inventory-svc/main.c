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
#include "vx_msg.h"
#include "vx_worker.h"

#define SERVICE "inventory-svc"

/* inv_apply_batch's columns: the outbox row (what vx_outbox_publish reads), then the outcome. */
enum { COL_ID, COL_TOPIC, COL_KEY, COL_PAYLOAD, COL_CID, COL_HEADERS, COL_TYPE, COL_IKEY, COL_REASON };

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
    rd_kafka_message_t *msg; /* borrowed from the worker */
    vx_msg_t cmd;
    int valid;
    long delay; /* the latency gremlin's, ms */
    char cid[129];
} item_t;

typedef struct {
    long long outbox_retention_s;
    item_t *items;            /* one per polled message, batch_max of them */
    vx_strset_t keys, orders; /* what the SQL batch being built holds: inv_apply_batch needs every
                                 idempotency key and order id at most once, so a repeat starts a new call */
    json_object *arr;         /* the SQL batch being built */
    int first, count;         /* items[first..] are in arr (valid ones only), count of them */
} inv_t;


static json_object *batch_entry(item_t *it) {
    json_object *e = json_object_new_object();
    json_object_object_add(e, "c", vx_msg_to_json(&it->cmd));
    if (it->msg->key)
        json_object_object_add(e, "k", json_object_new_string_len(it->msg->key, (int)it->msg->key_len));
    if (it->cid[0]) json_object_object_add(e, "cid", json_object_new_string(it->cid));
    if (it->delay) json_object_object_add(e, "h", vx_chaos_delay_headers(it->delay)); /* headers of its event */
    return e;
}

static const char *col(const PGresult *r, int row, int c) { return PQgetisnull(r, row, c) ? NULL : PQgetvalue(r, row, c); }

/* Publishes the outbox rows the batch wrote and logs one line per command outcome. */
static void publish(vx_worker_t *w, PGresult *rows) {
    vx_worker_publish(w, rows);
    for (int i = 0; vx_log_enabled(VX_LOG_INFO) && i < PQntuples(rows); i++)
        vx_log(VX_LOG_INFO, "event", "type", col(rows, i, COL_TYPE), "idempotency_key", col(rows, i, COL_IKEY), "reason",
               col(rows, i, COL_REASON), "correlation_id", col(rows, i, COL_CID), "event_id", col(rows, i, COL_ID), NULL);
}

/* Applies the SQL batch being built: one transaction, or one command at a time if the database
 * refuses the whole (then only the command at fault is dead-lettered). Returns 0, or -1 when it
 * gave up because the service is stopping. */
static int flush_batch(vx_worker_t *w, inv_t *v, int upto) {
    int fatal = 0, rc = 0;
    PGresult *r;

    if (!v->count) goto reset;
    r = vx_worker_apply(w, SQL_APPLY, json_object_to_json_string_ext(v->arr, JSON_C_TO_STRING_PLAIN), &fatal);
    if (r) {
        publish(w, r);
        PQclear(r);
    } else if (!fatal) {
        rc = -1;
    } else {
        for (int i = v->first; i < upto && rc == 0; i++) {
            item_t *it = &v->items[i];
            json_object *one;
            if (!it->valid) continue;
            one = json_object_new_array_ext(1);
            json_object_array_add(one, batch_entry(it));
            r = vx_worker_apply(w, SQL_APPLY, json_object_to_json_string_ext(one, JSON_C_TO_STRING_PLAIN), &fatal);
            json_object_put(one);
            if (r) {
                publish(w, r);
                PQclear(r);
            } else if (fatal) {
                vx_worker_dead_letter(w, it->msg, "processing_error", "the database refused this command",
                                      it->cmd.idempotency_key, it->cid[0] ? it->cid : NULL);
            } else {
                rc = -1;
            }
        }
    }
reset:
    json_object_put(v->arr);
    v->arr = json_object_new_array_ext(64);
    v->first = upto;
    v->count = 0;
    vx_strset_clear(&v->keys);
    vx_strset_clear(&v->orders);
    return rc;
}

/* One polled batch: decode, dead-letter the poison, apply the rest in as few transactions as the
 * repeats allow, publishing each right after its commit. */
static int process(vx_worker_t *w, rd_kafka_message_t **msgs, int n, void *opaque) {
    inv_t *v = opaque;
    int rc = 0;
    char err[256];

    v->arr = json_object_new_array_ext(n);
    v->first = v->count = 0;
    for (int i = 0; i < n; i++) {
        v->items[i].msg = msgs[i];
        v->items[i].valid = 0;
        v->items[i].delay = vx_worker_delay(w, i);
    }
    for (int i = 0; i < n && rc == 0; i++) {
        item_t *it = &v->items[i];
        vx_msg_err_t e;

        it->cid[0] = '\0';
        if (it->msg->err) {
            vx_log(VX_LOG_WARN, "consume_error", "error", rd_kafka_message_errstr(it->msg), NULL);
            continue;
        }
        vx_kafka_header(it->msg, "correlation-id", it->cid, sizeof(it->cid));
        e = vx_msg_decode(&it->cmd, it->msg->payload, it->msg->len, VX_MSG_INVENTORY_COMMANDS, err, sizeof(err));
        if (e) {
            vx_worker_dead_letter(w, it->msg, vx_msg_err_name(e), err, NULL, it->cid[0] ? it->cid : NULL);
            continue;
        }
        it->valid = 1;
        if (!vx_strset_add(&v->keys, it->cmd.idempotency_key) ||
            (it->cmd.order_id && !vx_strset_add(&v->orders, it->cmd.order_id))) {
            rc = flush_batch(w, v, i);
            vx_strset_add(&v->keys, it->cmd.idempotency_key);
            if (it->cmd.order_id) vx_strset_add(&v->orders, it->cmd.order_id);
        }
        json_object_array_add(v->arr, batch_entry(it));
        v->count++;
    }
    if (rc == 0) rc = flush_batch(w, v, n);
    json_object_put(v->arr);
    v->arr = NULL;
    for (int i = 0; i < n; i++)
        if (v->items[i].valid) vx_msg_clear(&v->items[i].cmd);
    return rc;
}

static int on_http(vx_worker_t *w, vx_http_req_t *req, const char *const *seg, int n, void *opaque) {
    (void)opaque;
    if (n < 1 || n > 2 || strcmp(seg[0], "products") != 0) return 0;
    if (strcmp(vx_http_method(req), "GET") != 0 && strcmp(vx_http_method(req), "HEAD") != 0)
        vx_http_method_not_allowed(req, "GET, HEAD");
    else if (n == 1)
        vx_worker_reply_query(w, req, SQL_PRODUCTS, 0, NULL, "product");
    else
        vx_worker_reply_query(w, req, SQL_PRODUCT, 1, &seg[1], "product");
    return 1;
}

/* Released orders are remembered as long as the outbox remembers keys. */
static void prune(vx_worker_t *w, PGconn *db, void *opaque) {
    inv_t *v = opaque;
    char secs[32];
    const char *params[1] = {secs};
    (void)w;
    snprintf(secs, sizeof(secs), "%lld", v->outbox_retention_s);
    PQclear(PQexecParams(db, SQL_PRUNE_RELEASED, 1, NULL, params, NULL, NULL, 0));
}

int main(void) {
    vx_worker_opts_t o = {0};
    inv_t v = {0};
    const char *topics[3], *routes[3];
    char err[512];
    int rc;

    vx_log_init(SERVICE);
    o.service = SERVICE;
    o.db = vx_cfg_str("INVENTORY_DB", "postgresql://valerix@127.0.0.1:55432/inventory");
    o.http_addr = vx_cfg_str("INVENTORY_HTTP_ADDR", "127.0.0.1:8082");
    o.group = vx_cfg_str("INVENTORY_GROUP_ID", SERVICE);
    o.migrations = vx_cfg_str("INVENTORY_MIGRATIONS",
                              VX_SRC_DIR "/common/migrations:" VX_SRC_DIR "/inventory-svc/migrations");
    topics[0] = vx_cfg_str("INVENTORY_COMMANDS_TOPIC", "inventory.commands");
    topics[1] = vx_cfg_str("INVENTORY_EVENTS_TOPIC", "inventory.events");
    topics[2] = o.dlq = vx_cfg_str("INVENTORY_DLQ_TOPIC", "inventory.dlq");
    routes[0] = "events";
    routes[1] = topics[1];
    routes[2] = NULL;
    o.consume = topics;
    o.nconsume = 1;
    o.topics = topics;
    o.ntopics = 3;
    o.routes = routes;
    o.retry_unique_violation = 1;
    o.process = process;
    o.http = on_http;
    o.prune = prune;
    o.opaque = &v;
    if (vx_worker_config(&o, "INVENTORY", err, sizeof(err)) || vx_chaos_init(err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "bad_config", "error", err, NULL);
        return 2;
    }
    v.outbox_retention_s = o.outbox_retention_s;
    v.items = calloc((size_t)o.batch_max, sizeof(*v.items));
    if (!v.items || vx_strset_init(&v.keys, (size_t)o.batch_max) ||
        vx_strset_init(&v.orders, (size_t)o.batch_max)) {
        vx_log(VX_LOG_ERROR, "out_of_memory", NULL);
        return 1;
    }
    rc = vx_worker_main(&o);
    free(v.items);
    vx_strset_free(&v.keys);
    vx_strset_free(&v.orders);
    return rc;
}
