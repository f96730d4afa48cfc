/* it_orders.c - the order path end to end over the real broker and PostgreSQL:
 * client -> gateway (POST /orders) -> order-svc -> inventory-svc -> order-svc -> gateway.
 *
 * Each test starts the services it needs on the run's topics and databases (inventory_it2,
 * orders_it2) and names its products and idempotency keys after a short tag of its own ("t3-"),
 * so tests never see each other's stock or orders. Suite `orders_zz` sorts after `orders`: it
 * records every result and inventory event of the run for the schema check. */
#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#define INV_DB "inventory_it2"
#define ORD_DB "orders_it2"
#define INV_EXE "build/inventory-svc"
#define ORD_EXE "build/order-svc"
#define GW_EXE "build/gateway"
#define INV_ADDR "127.0.0.1:18281"
#define ORD_ADDR "127.0.0.1:18282"
#define GW_ADDR "127.0.0.1:18283"
#define GW2_ADDR "127.0.0.1:18284"
#define RESULTS_LABEL "orders.results" /* topic names in messages.jsonl */
#define EVENTS_LABEL "inventory.events"
#define LOAD_WAIT_MS 300000 /* thousands of orders on two shared cores */

/* A consumer killed with SIGKILL holds its partitions until its session times out, and every test
 * here reuses the run's consumer groups: 10 s instead of librdkafka's 45 s keeps the next start
 * (and the restart in the crash test) from waiting for a dead member. */
#define SESSION_TIMEOUT_ENV "KAFKA_CONSUMER_SESSION_TIMEOUT_MS=10000"

static const char SQL_ORDER_BY_KEY[] = "SELECT id, status FROM orders WHERE idempotency_key = $1";
static const char SQL_COUNT_BY_KEY[] = "SELECT count(*) FROM orders WHERE idempotency_key = $1";
static const char SQL_COUNT_LIKE[] = "SELECT count(*) FROM orders WHERE idempotency_key LIKE $1";
static const char SQL_PENDING_LIKE[] =
    "SELECT count(*) FROM orders WHERE idempotency_key LIKE $1 AND status = 'PENDING'";
/* What order-svc sent, or will send, to inventory about an order: written in the transaction that
 * decided it, so once the decision's result is out the count is final. */
static const char SQL_INVENTORY_COMMANDS[] =
    "SELECT count(*) FROM outbox WHERE topic = 'inventory.commands' AND msg_key = $1";
static const char SQL_HISTORY_COUNT[] =
    "SELECT count(*) FROM orders o, ord_history(o) h WHERE o.id = $1 AND h.status = $2";
static const char SQL_LOAD_ORDERS[] =
    "SELECT o.idempotency_key, o.id, o.status,"
    " (SELECT count(*) FROM ord_history(o) h WHERE h.status = 'PENDING'),"
    " (SELECT count(*) FROM ord_history(o) h WHERE h.status <> 'PENDING')"
    " FROM orders o WHERE o.idempotency_key LIKE $1 ORDER BY o.idempotency_key";
static const char SQL_CONFIRMED_QTY[] =
    "SELECT l->>'product_id', sum((l->>'quantity')::bigint) FROM orders o"
    " CROSS JOIN LATERAL jsonb_array_elements(o.items) l"
    " WHERE o.status = 'CONFIRMED' AND o.idempotency_key LIKE $1 GROUP BY 1";

static it_names run; /* this run's topics and groups */

static void ord_init(void) {
    it_test_begin();
    it_names_init(&run);
}

TestSuite(orders, .init = ord_init, .fini = it_test_fini);
TestSuite(orders_zz, .init = ord_init, .fini = it_test_fini);

/* ---- JSON -------------------------------------------------------------------------------- */

static json_object *jget(json_object *o, const char *k) {
    json_object *v;
    return o && json_object_is_type(o, json_type_object) && json_object_object_get_ex(o, k, &v) ? v : NULL;
}

static const char *jstr(json_object *o, const char *k) {
    json_object *v = jget(o, k);
    return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static const char *jtext(json_object *o) { return o ? json_object_to_json_string(o) : "(no JSON)"; }

static json_object *items_json(size_t n, const char *const pids[], const int64_t qtys[]) {
    json_object *items = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *line = json_object_new_object();
        json_object_object_add(line, "product_id", json_object_new_string(pids[i]));
        json_object_object_add(line, "quantity", json_object_new_int64(qtys[i]));
        json_object_array_add(items, line);
    }
    return items;
}

/* The POST /orders body; caller owns it. */
static char *order_body(const char *customer, size_t n, const char *const pids[], const int64_t qtys[]) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "customer_id", json_object_new_string(customer));
    json_object_object_add(o, "items", items_json(n, pids, qtys));
    return it_json_take(o);
}

static char *order_body1(const char *customer, const char *pid, int64_t qty) {
    return order_body(customer, 1, &pid, &qty);
}

/* ---- HTTP: vt_http's client (tests/lib), every exchange recorded for the OpenAPI check ---- */

/* One request on a fresh connection (Connection: close). hdrs: "Name: value" lines, NULL-terminated,
 * borrowed, may be NULL. body NULL: no body and no Content-Length. The server may answer before it
 * has read the whole body (413): the answer is read anyway. On success the caller owns *r
 * (vt_http_resp_clear), whose json is the body parsed, NULL when it is not JSON. */
static int http_do(const char *addr, const char *method, const char *path, const char *const hdrs[],
                   const char *body, size_t body_len, vt_http_resp *r, char *err, size_t errsz) {
    const vt_http_req req = {.method = method, .path = path, .headers = hdrs, .body = body, .body_len = body_len,
                             .parse_json = true};
    return it_http(addr, &req, r, err, errsz);
}

static vt_http_resp http(const char *addr, const char *method, const char *path, const char *const hdrs[],
                      const char *body, size_t body_len) {
    char err[IT_ERR_SIZE];
    vt_http_resp r;
    IT_OK(http_do(addr, method, path, hdrs, body, body_len, &r, err, sizeof err), err);
    return r;
}

static void key_header(char *buf, size_t size, const char *key) {
    snprintf(buf, size, "Idempotency-Key: %s", key);
}

/* POST /orders as a client would send it; key NULL: no Idempotency-Key. */
static vt_http_resp post_order(const char *addr, const char *key, const char *body) {
    char khdr[512];
    const char *hdrs[] = {"Content-Type: application/json", key ? khdr : NULL, NULL};
    if (key) key_header(khdr, sizeof khdr, key);
    return http(addr, "POST", "/orders", hdrs, body, strlen(body));
}

/* GET with the status asserted; returns the JSON body (owned). */
static json_object *get_json(const char *addr, const char *path, int want_status) {
    vt_http_resp r = http(addr, "GET", path, NULL, NULL, 0);
    cr_assert_eq(r.status, want_status, "GET %s: status %d, want %d; body %s", path, r.status, want_status, r.body);
    cr_assert(r.json != NULL, "GET %s: body is not JSON: %s", path, r.body);
    json_object *j = json_object_get(r.json);
    vt_http_resp_clear(&r);
    return j;
}

static bool content_type_is(const vt_http_resp *r, const char *want) {
    const char *ct = vt_http_header(r, "Content-Type");
    return ct && strncasecmp(ct, want, strlen(want)) == 0;
}

/* The id an order answer names: body.id (201, 202) or body.order.id (409). */
static const char *answer_order_id(const vt_http_resp *r) {
    const char *id = jstr(r->json, "id");
    return id ? id : jstr(jget(r->json, "order"), "id");
}

/* Location: /orders/{id} and Idempotency-Key: key, on every order answer. */
static void assert_order_headers(const vt_http_resp *r, const char *id, const char *key) {
    char want[256];
    const char *loc = vt_http_header(r, "Location"), *k = vt_http_header(r, "Idempotency-Key");
    snprintf(want, sizeof want, "/orders/%s", id);
    cr_assert(loc && strcmp(loc, want) == 0, "Location %s, want %s (status %d, body %s)", loc ? loc : "(none)", want,
              r->status, r->body);
    cr_assert(k && strcmp(k, key) == 0, "Idempotency-Key header %s, want %s", k ? k : "(none)", key);
}

/* Concurrent POSTs, released together by a barrier. */
typedef struct post_job {
    const char *addr, *key, *body; /* borrowed */
    pthread_barrier_t *start;      /* NULL: no barrier */
    vt_http_resp resp;
    int rc;
    char err[512];
} post_job;

static void *post_job_run(void *arg) {
    post_job *j = arg;
    char khdr[512];
    const char *hdrs[] = {"Content-Type: application/json", khdr, NULL};
    key_header(khdr, sizeof khdr, j->key);
    if (j->start) pthread_barrier_wait(j->start);
    j->rc = http_do(j->addr, "POST", "/orders", hdrs, j->body, strlen(j->body), &j->resp, j->err, sizeof j->err);
    return NULL;
}

static void run_posts(post_job *jobs, size_t n) {
    pthread_t *threads = calloc(n, sizeof *threads);
    pthread_barrier_t start;
    cr_assert(threads != NULL);
    cr_assert_eq(pthread_barrier_init(&start, NULL, (unsigned)n), 0);
    for (size_t i = 0; i < n; i++) {
        jobs[i].start = &start;
        cr_assert_eq(pthread_create(&threads[i], NULL, post_job_run, &jobs[i]), 0);
    }
    for (size_t i = 0; i < n; i++) pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    free(threads);
    for (size_t i = 0; i < n; i++) cr_assert_eq(jobs[i].rc, 0, "POST with key %s: %s", jobs[i].key, jobs[i].err);
}

/* ---- the services ------------------------------------------------------------------------ */

typedef struct env_list {
    char s[40][512];
    const char *v[41];
    size_t n;
} env_list;

static void env_add(env_list *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void env_add(env_list *e, const char *fmt, ...) {
    va_list ap;
    cr_assert(e->n < 40, "too many environment entries");
    va_start(ap, fmt);
    vsnprintf(e->s[e->n], sizeof e->s[e->n], fmt, ap);
    va_end(ap);
    e->v[e->n] = e->s[e->n];
    e->v[++e->n] = NULL;
}

static void env_extra(env_list *e, const char *const extra[]) {
    for (size_t i = 0; extra && extra[i]; i++) env_add(e, "%s", extra[i]);
}

/* Every service of this suite: the run's topics, bootstrap and a short session timeout. */
static void env_common(env_list *e) {
    env_add(e, "KAFKA_BOOTSTRAP_SERVERS=%s", IT_KAFKA_BOOTSTRAP);
    env_add(e, "%s", SESSION_TIMEOUT_ENV);
    env_add(e, "ORDERS_COMMANDS_TOPIC=%s", run.orders_commands);
    env_add(e, "ORDERS_RESULTS_TOPIC=%s", run.orders_results);
    env_add(e, "ORDERS_DLQ_TOPIC=%s", run.orders_dlq);
    env_add(e, "INVENTORY_COMMANDS_TOPIC=%s", run.inventory_commands);
    env_add(e, "INVENTORY_EVENTS_TOPIC=%s", run.inventory_events);
    env_add(e, "INVENTORY_DLQ_TOPIC=%s", run.inventory_dlq);
}

/* Starts exe and waits until GET addr/ready answers 200. `instance` tells restarts apart in the
 * log name. */
static it_proc_t *spawn(const char *svc, const char *exe, const char *addr, const char *instance, env_list *e) {
    char err[IT_ERR_SIZE], log_name[512];
    it_proc_t *p = NULL;
    snprintf(log_name, sizeof log_name, "%s.%s.%s%s%s", criterion_current_test->name, svc, strrchr(addr, ':') + 1,
             instance ? "." : "", instance ? instance : "");
    IT_OK(it_proc_spawn(&p, log_name, exe, e->v, err, sizeof err), err);
    IT_OK(it_proc_wait_http(p, addr, "/ready", IT_WAIT_MS, err, sizeof err), err);
    return p;
}

static it_proc_t *inv_spawn(const char *instance) {
    char db[256];
    env_list e = {0};
    it_pg_url(db, sizeof db, INV_DB);
    env_common(&e);
    env_add(&e, "INVENTORY_DB=%s", db);
    env_add(&e, "INVENTORY_HTTP_ADDR=%s", INV_ADDR);
    env_add(&e, "INVENTORY_GROUP_ID=%s", run.inventory_group);
    return spawn("inventory-svc", INV_EXE, INV_ADDR, instance, &e);
}

/* extra: settings ("NAME=value", NULL-terminated, may be NULL) that go first: the first of a name wins. */
static it_proc_t *ord_spawn_with(const char *instance, const char *const extra[]) {
    char db[256];
    env_list e = {0};
    it_pg_url(db, sizeof db, ORD_DB);
    env_extra(&e, extra);
    env_common(&e);
    env_add(&e, "ORDERS_DB=%s", db);
    env_add(&e, "ORDERS_HTTP_ADDR=%s", ORD_ADDR);
    env_add(&e, "ORDERS_GROUP_ID=%s", run.orders_group);
    return spawn("order-svc", ORD_EXE, ORD_ADDR, instance, &e);
}

static it_proc_t *ord_spawn(const char *instance) { return ord_spawn_with(instance, NULL); }

/* extra: GATEWAY_* knobs ("NAME=value", NULL-terminated, may be NULL). */
static it_proc_t *gw_spawn(const char *addr, const char *const extra[]) {
    env_list e = {0};
    env_common(&e);
    env_add(&e, "GATEWAY_HTTP_ADDR=%s", addr);
    env_add(&e, "ORDERS_URL=http://%s", ORD_ADDR);
    env_add(&e, "INVENTORY_URL=http://%s", INV_ADDR);
    env_extra(&e, extra);
    return spawn("gateway", GW_EXE, addr, NULL, &e);
}

typedef struct stack {
    it_proc_t *inv, *ord, *gw;
    it_collector_t *events, *results; /* this test's traffic, from when the stack came up */
    const char *tag;
} stack;

static void restock(stack *s, const char *product, int64_t qty);
static void warm_up(stack *s);

/* inventory-svc, order-svc (which creates the order topics), then the gateway (it needs the
 * results topic) when gateway is true; then one order through Kafka, so every consumer group has
 * its partitions before the test's first request. */
static void stack_up(stack *s, const char *tag, bool gateway, const char *const gw_env[]) {
    memset(s, 0, sizeof *s);
    s->tag = tag;
    s->inv = inv_spawn(NULL);
    s->ord = ord_spawn(NULL);
    s->events = it_collect(run.inventory_events, VT_FROM_END, NULL);
    s->results = it_collect(run.orders_results, VT_FROM_END, NULL);
    if (gateway) s->gw = gw_spawn(GW_ADDR, gw_env);
    warm_up(s);
}

/* Stops gracefully, so the next test's services join the groups without waiting for a session
 * to time out. */
static void stack_down(stack *s) {
    it_svc_stop(s->gw, "gateway");
    it_svc_stop(s->ord, "order-svc");
    it_svc_stop(s->inv, "inventory-svc");
    it_collector_free(s->events);
    it_collector_free(s->results);
    memset(s, 0, sizeof *s);
}

/* ---- Kafka traffic ------------------------------------------------------------------------ */

static void produce(const char *topic, const char *key, char *json, const char *cid) {
    char err[IT_ERR_SIZE];
    it_header h = {"correlation-id", cid, cid ? strlen(cid) : 0};
    IT_OK(it_produce_one(topic, key, json, cid ? &h : NULL, cid ? 1 : 0, err, sizeof err), err);
    free(json);
}

static const it_msg *await_msg(it_collector_t *c, const char *field, const char *value, size_t n) {
    char err[IT_ERR_SIZE];
    IT_OK(it_collector_wait_str(c, field, value, n, IT_WAIT_MS, err, sizeof err), err);
    return it_collector_find_str(c, field, value);
}

/* The n-th (from 0) message of c whose `field` is `value`, or NULL. */
static const it_msg *nth_msg(const it_collector_t *c, const char *field, const char *value, size_t nth) {
    for (size_t i = 0; i < it_collector_count(c); i++) {
        const char *v = it_msg_str(it_collector_at(c, i), field);
        if (v && strcmp(v, value) == 0 && nth-- == 0) return it_collector_at(c, i);
    }
    return NULL;
}

static void restock(stack *s, const char *product, int64_t qty) {
    static int n;
    char ikey[160], name[160];
    json_object *o = json_object_new_object();
    snprintf(ikey, sizeof ikey, "%s-restock-%d", product, ++n);
    snprintf(name, sizeof name, "Product %s", product);
    json_object_object_add(o, "type", json_object_new_string("Restock"));
    json_object_object_add(o, "idempotency_key", json_object_new_string(ikey));
    json_object_object_add(o, "product_id", json_object_new_string(product));
    json_object_object_add(o, "quantity", json_object_new_int64(qty));
    json_object_object_add(o, "name", json_object_new_string(name));
    produce(run.inventory_commands, product, it_json_take(o), NULL);
    const it_msg *m = await_msg(s->events, "idempotency_key", ikey, 1);
    cr_assert_str_eq(it_msg_str(m, "type"), "Restocked", "restock of %s answered with %s", product, m->value);
}

static char *place_order_cmd(const char *key, const char *order_id, const char *customer, size_t n,
                             const char *const pids[], const int64_t qtys[]) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string("PlaceOrder"));
    json_object_object_add(o, "idempotency_key", json_object_new_string(key));
    if (order_id) json_object_object_add(o, "order_id", json_object_new_string(order_id));
    json_object_object_add(o, "customer_id", json_object_new_string(customer));
    json_object_object_add(o, "items", items_json(n, pids, qtys));
    return it_json_take(o);
}

static char *cancel_order_cmd(const char *key, const char *order_id) {
    return it_order_cmd("CancelOrder", key, order_id);
}

static void warm_up(stack *s) {
    char product[64], key[64];
    int64_t qty = 1;
    const char *pid = product;
    snprintf(product, sizeof product, "%s-warm", s->tag);
    snprintf(key, sizeof key, "%s-warm-1", s->tag);
    restock(s, product, 100);
    produce(run.orders_commands, key, place_order_cmd(key, NULL, "cust-warm", 1, &pid, &qty), NULL);
    const it_msg *m = await_msg(s->results, "idempotency_key", key, 1);
    cr_assert_str_eq(it_msg_str(m, "status"), "CONFIRMED", "warm-up order: %s", m->value);
}

/* Produces "key|json" through the real kcat with one header (-H name=value). */
static void kcat_produce_h(const char *topic, const char *key, const char *json, const char *hname,
                           const char *hvalue) {
    char err[IT_ERR_SIZE], hdr[256];
    snprintf(hdr, sizeof hdr, "%s=%s", hname, hvalue);
    IT_OK(it_kcat_produce(topic, key, json, hdr, err, sizeof err), err);
}

/* ---- PostgreSQL ----------------------------------------------------------------------------- */

/* The same figure as the gateway shows it (GET /products/{id}, relayed to inventory-svc). */
static void assert_api_stock(const char *product, int64_t want) {
    char path[256];
    json_object *v;
    snprintf(path, sizeof path, "/products/%s", product);
    json_object *p = get_json(GW_ADDR, path, 200);
    cr_assert(jstr(p, "id") && strcmp(jstr(p, "id"), product) == 0, "GET %s: %s", path, jtext(p));
    cr_assert((v = jget(p, "stock")) && json_object_is_type(v, json_type_int) && json_object_get_int64(v) == want,
              "GET %s: want stock %" PRId64 ": %s", path, want, jtext(p));
    json_object_put(p);
}

static int64_t pg_count(const char *sql, const char *p1, const char *p2) {
    char err[IT_ERR_SIZE];
    const char *params[] = {p1, p2};
    int64_t n;
    IT_OK(it_pg_int(ORD_DB, sql, params, p2 ? 2 : 1, &n, err, sizeof err), err);
    return n;
}

static PGresult *pg_query(PGconn **conn, const char *db, const char *sql, const char *const params[], int n) {
    char err[IT_ERR_SIZE];
    IT_OK(it_pg_connect(conn, db, err, sizeof err), err);
    PGresult *res = PQexecParams(*conn, sql, n, NULL, params, NULL, NULL, 0);
    cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(*conn));
    return res;
}

/* The order placed with idempotency key `key`: its id into id_buf, returns its status (static). */
static const char *db_order(const char *key, char *id_buf, size_t id_size) {
    static char status[32];
    PGconn *conn = NULL;
    const char *params[] = {key};
    PGresult *res = pg_query(&conn, ORD_DB, SQL_ORDER_BY_KEY, params, 1);
    cr_assert_eq(PQntuples(res), 1, "orders with idempotency key %s: %d, want 1", key, PQntuples(res));
    snprintf(id_buf, id_size, "%s", PQgetvalue(res, 0, 0));
    snprintf(status, sizeof status, "%s", PQgetvalue(res, 0, 1));
    PQclear(res);
    PQfinish(conn);
    return status;
}

/* GET /orders/{id} through the gateway: status and the statuses of its history, "A>B>C". */
static void api_order(const char *id, char *status, size_t status_size, char *history, size_t history_size) {
    char path[256];
    json_object *h;
    size_t pos = 0;
    snprintf(path, sizeof path, "/orders/%s", id);
    json_object *o = get_json(GW_ADDR, path, 200);
    cr_assert(jstr(o, "id") && strcmp(jstr(o, "id"), id) == 0, "GET %s: %s", path, jtext(o));
    snprintf(status, status_size, "%s", jstr(o, "status") ? jstr(o, "status") : "(none)");
    history[0] = '\0';
    cr_assert((h = jget(o, "history")) && json_object_is_type(h, json_type_array), "GET %s: no history: %s", path,
              jtext(o));
    for (size_t i = 0; i < json_object_array_length(h); i++) {
        const char *st = jstr(json_object_array_get_idx(h, i), "status");
        pos += (size_t)snprintf(history + pos, pos < history_size ? history_size - pos : 0, "%s%s", i ? ">" : "",
                                st ? st : "?");
    }
    json_object_put(o);
}

/* ---- tests ---------------------------------------------------------------------------------- */

Test(orders, post_confirmed_lowers_stock_by_its_quantity_and_records_pending_then_confirmed) {
    stack s;
    char id[128], status[32], history[256];
    stack_up(&s, "t1", true, NULL);
    restock(&s, "t1-p", 10);

    char *body = order_body1("cust-t1", "t1-p", 3);
    vt_http_resp r = post_order(GW_ADDR, "t1-key", body);
    cr_assert_eq(r.status, 201, "POST /orders %s: status %d, body %s", body, r.status, r.body);
    cr_assert(content_type_is(&r, "application/json"), "Content-Type %s", vt_http_header(&r, "Content-Type"));
    cr_assert_str_eq(jstr(r.json, "status") ? jstr(r.json, "status") : "(none)", "CONFIRMED", "%s", r.body);
    cr_assert(answer_order_id(&r) && *answer_order_id(&r), "201 without an id: %s", r.body);
    snprintf(id, sizeof id, "%s", answer_order_id(&r));
    cr_assert_str_eq(jstr(r.json, "customer_id") ? jstr(r.json, "customer_id") : "(none)", "cust-t1", "%s", r.body);
    cr_assert_str_eq(jstr(r.json, "idempotency_key") ? jstr(r.json, "idempotency_key") : "(none)", "t1-key", "%s",
                     r.body);
    json_object *want_items = items_json(1, (const char *const[]){"t1-p"}, (const int64_t[]){3});
    cr_assert(json_object_equal(jget(r.json, "items"), want_items), "items %s, want %s", jtext(jget(r.json, "items")),
              jtext(want_items));
    json_object_put(want_items);
    assert_order_headers(&r, id, "t1-key");
    vt_http_resp_clear(&r);

    char db_id[128];
    cr_assert_str_eq(db_order("t1-key", db_id, sizeof db_id), "CONFIRMED");
    cr_assert_str_eq(db_id, id, "the answer's id is not the order's id in the database");
    it_assert_stock(INV_DB, "t1-p", 7);
    assert_api_stock("t1-p", 7);

    api_order(id, status, sizeof status, history, sizeof history);
    cr_assert_str_eq(status, "CONFIRMED");
    cr_assert_str_eq(history, "PENDING>CONFIRMED", "history of %s", id);

    json_object *list = get_json(GW_ADDR, "/orders?limit=5", 200), *arr = jget(list, "orders");
    bool found = false;
    cr_assert(arr && json_object_is_type(arr, json_type_array), "GET /orders: %s", jtext(list));
    cr_assert_leq(json_object_array_length(arr), 5, "GET /orders?limit=5 gave more: %s", jtext(list));
    for (size_t i = 0; i < json_object_array_length(arr); i++)
        found |= jstr(json_object_array_get_idx(arr, i), "id") &&
                 strcmp(jstr(json_object_array_get_idx(arr, i), "id"), id) == 0;
    cr_assert(found, "GET /orders?limit=5 lacks the order just placed: %s", jtext(list));
    json_object_put(list);

    free(body);
    stack_down(&s);
}

/* POSTs body, expects 409 REJECTED for `reason` and `product`; returns the order id (static). */
static const char *expect_rejected(const char *key, const char *body, const char *reason, const char *product) {
    static char id[128];
    vt_http_resp r = post_order(GW_ADDR, key, body);
    cr_assert_eq(r.status, 409, "POST %s: status %d, want 409; body %s", body, r.status, r.body);
    cr_assert(content_type_is(&r, "application/problem+json"), "409 Content-Type %s",
              vt_http_header(&r, "Content-Type"));
    json_object *order = jget(r.json, "order");
    cr_assert(jstr(order, "status") && strcmp(jstr(order, "status"), "REJECTED") == 0, "order.status: %s", r.body);
    cr_assert(jstr(r.json, "reason") && strcmp(jstr(r.json, "reason"), reason) == 0, "reason (want %s): %s", reason,
              r.body);
    cr_assert(jstr(r.json, "product_id") && strcmp(jstr(r.json, "product_id"), product) == 0,
              "product_id (want %s): %s", product, r.body);
    cr_assert(answer_order_id(&r), "409 without order.id: %s", r.body);
    snprintf(id, sizeof id, "%s", answer_order_id(&r));
    assert_order_headers(&r, id, key);
    vt_http_resp_clear(&r);
    return id;
}

Test(orders, order_beyond_stock_is_rejected_409_and_nothing_is_reserved_on_any_line) {
    stack s;
    char status[32], history[256], db_id[128];
    stack_up(&s, "t2", true, NULL);
    restock(&s, "t2-p", 5);
    restock(&s, "t2-a", 10);
    restock(&s, "t2-b", 2);
    restock(&s, "t2-c", 10);

    char *body = order_body1("cust-t2", "t2-p", 6);
    const char *id = expect_rejected("t2-one", body, "insufficient_stock", "t2-p");
    free(body);
    it_assert_stock(INV_DB, "t2-p", 5);
    assert_api_stock("t2-p", 5);
    cr_assert_str_eq(db_order("t2-one", db_id, sizeof db_id), "REJECTED");
    cr_assert_str_eq(db_id, id);
    api_order(id, status, sizeof status, history, sizeof history);
    cr_assert_str_eq(status, "REJECTED");
    cr_assert_str_eq(history, "PENDING>REJECTED", "history of %s", id);

    /* One short line among three: the whole order is refused, no line holds anything. */
    body = order_body("cust-t2", 3, (const char *const[]){"t2-a", "t2-b", "t2-c"}, (const int64_t[]){4, 3, 1});
    expect_rejected("t2-multi", body, "insufficient_stock", "t2-b");
    free(body);
    it_assert_stock(INV_DB, "t2-a", 10);
    it_assert_stock(INV_DB, "t2-b", 2);
    it_assert_stock(INV_DB, "t2-c", 10);

    /* The same product on two lines counts as their sum (2 + 1 > 2). */
    body = order_body("cust-t2", 2, (const char *const[]){"t2-b", "t2-b"}, (const int64_t[]){2, 1});
    expect_rejected("t2-sum", body, "insufficient_stock", "t2-b");
    free(body);
    it_assert_stock(INV_DB, "t2-b", 2);

    body = order_body("cust-t2", 2, (const char *const[]){"t2-a", "t2-nosuch"}, (const int64_t[]){1, 1});
    expect_rejected("t2-unknown", body, "unknown_product", "t2-nosuch");
    free(body);
    it_assert_stock(INV_DB, "t2-a", 10);
    assert_api_stock("t2-a", 10);
    stack_down(&s);
}

#define SAME_KEY_POSTS 50

Test(orders, one_key_posted_50_times_at_once_makes_one_order_and_50_identical_answers) {
    stack s;
    post_job jobs[SAME_KEY_POSTS];
    char db_id[128];
    stack_up(&s, "t3", true, NULL);
    restock(&s, "t3-p", 100);

    char *body = order_body1("cust-t3", "t3-p", 7);
    memset(jobs, 0, sizeof jobs);
    for (size_t i = 0; i < SAME_KEY_POSTS; i++) jobs[i] = (post_job){.addr = GW_ADDR, .key = "t3-key", .body = body};
    run_posts(jobs, SAME_KEY_POSTS);

    const vt_http_resp *first = &jobs[0].resp;
    cr_assert_eq(first->status, 201, "first answer: %d %s", first->status, first->body);
    for (size_t i = 1; i < SAME_KEY_POSTS; i++) {
        const vt_http_resp *r = &jobs[i].resp;
        cr_assert_eq(r->status, first->status, "answer %zu: status %d, answer 0: %d (%s)", i, r->status,
                     first->status, r->body);
        cr_assert(r->body_len == first->body_len && memcmp(r->body, first->body, r->body_len) == 0,
                  "answer %zu differs:\n  %s\n  %s", i, first->body, r->body);
    }
    char id[128];
    snprintf(id, sizeof id, "%s", answer_order_id(first));
    for (size_t i = 0; i < SAME_KEY_POSTS; i++) assert_order_headers(&jobs[i].resp, id, "t3-key");
    cr_assert_eq(pg_count(SQL_COUNT_BY_KEY, "t3-key", NULL), 1, "orders for the key");
    cr_assert_str_eq(db_order("t3-key", db_id, sizeof db_id), "CONFIRMED");
    cr_assert_str_eq(db_id, id);
    cr_assert_eq(pg_count(SQL_HISTORY_COUNT, id, "CONFIRMED"), 1, "CONFIRMED rows in the order's history");
    it_assert_stock(INV_DB, "t3-p", 93);

    /* The key with another body: refused, and the order stays as it was. */
    char *other = order_body1("cust-t3", "t3-p", 8);
    vt_http_resp r = post_order(GW_ADDR, "t3-key", other);
    cr_assert_eq(r.status, 422, "same key, other body: status %d, body %s", r.status, r.body);
    cr_assert(content_type_is(&r, "application/problem+json"), "422 Content-Type %s", vt_http_header(&r, "Content-Type"));
    vt_http_resp_clear(&r);
    it_assert_stock(INV_DB, "t3-p", 93);
    cr_assert_eq(pg_count(SQL_COUNT_BY_KEY, "t3-key", NULL), 1, "orders for the key");

    /* The key with its own body once more: the first answer again, marked as a replay. */
    r = post_order(GW_ADDR, "t3-key", body);
    cr_assert_eq(r.status, first->status, "replay: status %d, body %s", r.status, r.body);
    cr_assert(r.body_len == first->body_len && memcmp(r.body, first->body, r.body_len) == 0,
              "replay differs:\n  %s\n  %s", first->body, r.body);
    const char *replayed = vt_http_header(&r, "Idempotent-Replayed");
    cr_assert(replayed && strcmp(replayed, "true") == 0, "Idempotent-Replayed: %s", replayed ? replayed : "(none)");
    assert_order_headers(&r, id, "t3-key");
    vt_http_resp_clear(&r);
    it_assert_stock(INV_DB, "t3-p", 93);
    cr_assert_eq(pg_count(SQL_COUNT_BY_KEY, "t3-key", NULL), 1, "orders for the key");

    for (size_t i = 0; i < SAME_KEY_POSTS; i++) vt_http_resp_clear(&jobs[i].resp);
    free(other);
    free(body);
    stack_down(&s);
}

/* A whole-body problem (not JSON, not an object) has no field of its own. */
#define WHOLE_BODY NULL

typedef struct bad_body {
    const char *what;
    char *body;
    const char *field; /* WHOLE_BODY: "(body)" or "(root)" */
    const char *reason;
} bad_body;

static char *repeat(char c, size_t n) {
    char *s = malloc(n + 1);
    cr_assert(s != NULL);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
    va_list ap;
    char *s = NULL;
    va_start(ap, f);
    int n = vasprintf(&s, f, ap);
    va_end(ap);
    cr_assert(n >= 0, "out of memory");
    return s;
}

static void expect_400(const char *what, const char *const hdrs[], const char *body, size_t len, const char *field,
                       const char *reason) {
    vt_http_resp r = http(GW_ADDR, "POST", "/orders", hdrs, body, len);
    cr_assert_eq(r.status, 400, "%s: status %d, want 400; body %s", what, r.status, r.body);
    cr_assert(content_type_is(&r, "application/problem+json"), "%s: Content-Type %s", what,
              vt_http_header(&r, "Content-Type"));
    const char *f = jstr(r.json, "field");
    if (field)
        cr_assert(f && strcmp(f, field) == 0, "%s: field %s, want %s (%s)", what, f ? f : "(none)", field, r.body);
    else
        cr_assert(f && (strcmp(f, "(body)") == 0 || strcmp(f, "(root)") == 0),
                  "%s: field %s, want the whole body (%s)", what, f ? f : "(none)", r.body);
    if (reason)
        cr_assert(jstr(r.json, "reason") && strcmp(jstr(r.json, "reason"), reason) == 0, "%s: reason (want %s): %s",
                  what, reason, r.body);
    vt_http_resp_clear(&r);
}

Test(orders, invalid_requests_get_400_naming_the_field_and_413_415_405_404) {
    stack s;
    stack_up(&s, "t4", true, NULL);
    restock(&s, "t4-p", 10);

    char *id65 = repeat('x', 65), *lines101;
    {
        size_t cap = 101 * 48 + 64, pos = 0;
        lines101 = malloc(cap);
        cr_assert(lines101 != NULL);
        pos += (size_t)snprintf(lines101, cap, "{\"customer_id\":\"c\",\"items\":[");
        for (int i = 0; i < 101; i++)
            pos += (size_t)snprintf(lines101 + pos, cap - pos, "%s{\"product_id\":\"t4-p\",\"quantity\":1}",
                                    i ? "," : "");
        snprintf(lines101 + pos, cap - pos, "]}");
    }
#define LINE "{\"product_id\":\"t4-p\",\"quantity\":1}"
    bad_body cases[] = {
        {"missing customer_id", fmt("{\"items\":[" LINE "]}"), "customer_id", "missing_field"},
        {"customer_id null", fmt("{\"customer_id\":null,\"items\":[" LINE "]}"), "customer_id", "wrong_type"},
        {"customer_id a number", fmt("{\"customer_id\":42,\"items\":[" LINE "]}"), "customer_id", "wrong_type"},
        {"customer_id empty", fmt("{\"customer_id\":\"\",\"items\":[" LINE "]}"), "customer_id", "invalid_value"},
        {"customer_id 65 chars", fmt("{\"customer_id\":\"%s\",\"items\":[" LINE "]}", id65), "customer_id",
         "invalid_value"},
        {"missing items", fmt("{\"customer_id\":\"c\"}"), "items", "missing_field"},
        {"items an object", fmt("{\"customer_id\":\"c\",\"items\":{}}"), "items", "wrong_type"},
        {"items a string", fmt("{\"customer_id\":\"c\",\"items\":\"t4-p\"}"), "items", "wrong_type"},
        {"items empty", fmt("{\"customer_id\":\"c\",\"items\":[]}"), "items", "invalid_value"},
        {"101 lines", strdup(lines101), "items", "invalid_value"},
        {"item not an object", fmt("{\"customer_id\":\"c\",\"items\":[1]}"), "items[0]", "wrong_type"},
        {"item null", fmt("{\"customer_id\":\"c\",\"items\":[null]}"), "items[0]", "wrong_type"},
        {"missing product_id", fmt("{\"customer_id\":\"c\",\"items\":[{\"quantity\":1}]}"), "items[0].product_id",
         "missing_field"},
        {"product_id empty", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"\",\"quantity\":1}]}"),
         "items[0].product_id", "invalid_value"},
        {"product_id 65 chars", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"%s\",\"quantity\":1}]}", id65),
         "items[0].product_id", "invalid_value"},
        {"product_id a number", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":7,\"quantity\":1}]}"),
         "items[0].product_id", "wrong_type"},
        {"missing quantity", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\"}]}"),
         "items[0].quantity", "missing_field"},
        {"quantity 0", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\",\"quantity\":0}]}"),
         "items[0].quantity", "invalid_value"},
        {"quantity -1", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\",\"quantity\":-1}]}"),
         "items[0].quantity", "invalid_value"},
        {"quantity 1000001",
         fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\",\"quantity\":1000001}]}"),
         "items[0].quantity", "invalid_value"},
        {"quantity \"2\"", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\",\"quantity\":\"2\"}]}"),
         "items[0].quantity", "wrong_type"},
        {"quantity 1.5", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\",\"quantity\":1.5}]}"),
         "items[0].quantity", "wrong_type"},
        {"quantity 2.5", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\",\"quantity\":2.5}]}"),
         "items[0].quantity", "wrong_type"},
        {"quantity 1e400", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\",\"quantity\":1e400}]}"),
         "items[0].quantity", "invalid_value"},
        {"quantity true", fmt("{\"customer_id\":\"c\",\"items\":[{\"product_id\":\"t4-p\",\"quantity\":true}]}"),
         "items[0].quantity", "wrong_type"},
        {"second line bad",
         fmt("{\"customer_id\":\"c\",\"items\":[" LINE ",{\"product_id\":\"t4-p\",\"quantity\":0}]}"),
         "items[1].quantity", "invalid_value"},
        {"not JSON", fmt("{\"customer_id\":"), WHOLE_BODY, "not_json"},
        {"JSON array", fmt("[{\"customer_id\":\"c\",\"items\":[" LINE "]}]"), WHOLE_BODY, "wrong_type"},
        {"JSON string", fmt("\"an order\""), WHOLE_BODY, "wrong_type"},
        {"trailing garbage", fmt("{\"customer_id\":\"c\",\"items\":[" LINE "]}x"), WHOLE_BODY, "not_json"},
        {"two objects", fmt("{\"customer_id\":\"c\",\"items\":[" LINE "]}{}"), WHOLE_BODY, "not_json"},
        {"empty body", fmt("%s", ""), WHOLE_BODY, "not_json"},
        {"invalid UTF-8", fmt("{\"customer_id\":\"c\xff\xfe\",\"items\":[" LINE "]}"), WHOLE_BODY, "not_json"},
    };
#undef LINE
    size_t n_cases = sizeof cases / sizeof cases[0];
    cr_assert_geq(n_cases, 15);
    for (size_t i = 0; i < n_cases; i++) {
        char khdr[128];
        const char *hdrs[] = {"Content-Type: application/json", khdr, NULL};
        snprintf(khdr, sizeof khdr, "Idempotency-Key: t4-bad-%zu", i);
        expect_400(cases[i].what, hdrs, cases[i].body, strlen(cases[i].body), cases[i].field, cases[i].reason);
    }

    /* The headers are checked like the body. */
    char *good = order_body1("cust-t4", "t4-p", 1), *key129 = repeat('k', 129), khdr[256];
    snprintf(khdr, sizeof khdr, "Idempotency-Key: %s", key129);
    expect_400("Idempotency-Key of 129 characters", (const char *const[]){"Content-Type: application/json", khdr, NULL},
               good, strlen(good), "Idempotency-Key", NULL);
    expect_400("Request-Timeout not a number",
               (const char *const[]){"Content-Type: application/json", "Idempotency-Key: t4-bad-rt",
                                     "Request-Timeout: soon", NULL},
               good, strlen(good), "Request-Timeout", NULL);
    cr_assert_eq(pg_count(SQL_COUNT_LIKE, "t4-bad-%", NULL), 0, "a refused request made an order");

    /* Size, media type, method, route. */
    size_t big_len = 2u << 20;
    char *big = repeat(' ', big_len);
    memcpy(big, good, strlen(good)); /* a valid order padded with blanks to 2 MiB */
    const char *json_hdrs[] = {"Content-Type: application/json", "Idempotency-Key: t4-big", NULL};
    vt_http_resp r = http(GW_ADDR, "POST", "/orders", json_hdrs, big, big_len);
    cr_assert_eq(r.status, 413, "2 MiB body: status %d, body %.300s", r.status, r.body);
    vt_http_resp_clear(&r);
    r = http(GW_ADDR, "POST", "/orders", json_hdrs, big, 65537);
    cr_assert_eq(r.status, 413, "65537-byte body: status %d, body %.300s", r.status, r.body);
    vt_http_resp_clear(&r);

    r = http(GW_ADDR, "POST", "/orders", (const char *const[]){"Content-Type: text/plain", NULL}, good, strlen(good));
    cr_assert_eq(r.status, 415, "text/plain: status %d, body %s", r.status, r.body);
    vt_http_resp_clear(&r);
    r = http(GW_ADDR, "POST", "/orders", NULL, good, strlen(good));
    cr_assert_eq(r.status, 415, "no Content-Type: status %d, body %s", r.status, r.body);
    vt_http_resp_clear(&r);

    r = http(GW_ADDR, "DELETE", "/orders", NULL, NULL, 0);
    cr_assert_eq(r.status, 405, "DELETE /orders: status %d, body %s", r.status, r.body);
    cr_assert(vt_http_header(&r, "Allow") && strstr(vt_http_header(&r, "Allow"), "POST"), "405 Allow: %s",
              vt_http_header(&r, "Allow") ? vt_http_header(&r, "Allow") : "(none)");
    vt_http_resp_clear(&r);
    r = http(GW_ADDR, "PUT", "/orders/t4-x", NULL, "{}", 2);
    cr_assert_eq(r.status, 405, "PUT /orders/t4-x: status %d, body %s", r.status, r.body);
    vt_http_resp_clear(&r);
    r = http(GW_ADDR, "GET", "/nope", NULL, NULL, 0);
    cr_assert_eq(r.status, 404, "GET /nope: status %d, body %s", r.status, r.body);
    vt_http_resp_clear(&r);
    json_object_put(get_json(GW_ADDR, "/orders/t4-no-such-order", 404));
    json_object_put(get_json(GW_ADDR, "/products/t4-no-such-product", 404));
    cr_assert_eq(pg_count(SQL_COUNT_LIKE, "t4-b%", NULL), 0, "a refused request made an order");

    /* What an operator reads. */
    json_object *h = get_json(GW_ADDR, "/health", 200);
    cr_assert(jstr(jget(h, "breaker"), "state") && strcmp(jstr(jget(h, "breaker"), "state"), "closed") == 0,
              "GET /health: %s", jtext(h));
    json_object_put(h);
    json_object_put(get_json(GW_ADDR, "/ready", 200));
    r = http(GW_ADDR, "GET", "/metrics", NULL, NULL, 0);
    cr_assert(r.status == 200 && content_type_is(&r, "text/plain"), "GET /metrics: %d %s", r.status,
              vt_http_header(&r, "Content-Type"));
    vt_http_resp_clear(&r);
    json_object *all = get_json(GW_ADDR, "/products", 200);
    cr_assert(strstr(jtext(all), "\"t4-p\""), "GET /products lacks t4-p: %.500s", jtext(all));
    json_object_put(all);

    for (size_t i = 0; i < n_cases; i++) free(cases[i].body);
    free(big);
    free(key129);
    free(good);
    free(lines101);
    free(id65);
    stack_down(&s);
}

/* breaker_state_changed lines the gateway logged in this run, as "from>to,from>to,...". */
static void breaker_transitions(const char *log_path, char *out, size_t size) {
    FILE *f = fopen(log_path, "r");
    char *line = NULL, marker[128];
    size_t cap = 0, pos = 0;
    cr_assert(f != NULL, "open %s: %s", log_path, strerror(errno));
    snprintf(marker, sizeof marker, "=== it run %s:", it_run_id());
    out[0] = '\0';
    while (getline(&line, &cap, f) > 0) {
        if (strncmp(line, marker, strlen(marker)) == 0) { /* this run's instance starts here */
            pos = 0;
            out[0] = '\0';
            continue;
        }
        if (!strstr(line, "breaker_state_changed")) continue;
        json_object *j = json_tokener_parse(line);
        const char *from = jstr(j, "from"), *to = jstr(j, "to");
        pos += (size_t)snprintf(out + pos, pos < size ? size - pos : 0, "%s%s>%s", pos ? "," : "",
                                from ? from : "?", to ? to : "?");
        json_object_put(j);
    }
    free(line);
    fclose(f);
}

static const char *breaker_state(const char *addr) {
    static char state[32];
    json_object *h = get_json(addr, "/health", 200);
    const char *st = jstr(jget(h, "breaker"), "state");
    cr_assert(st, "GET /health without breaker.state: %s", jtext(h));
    snprintf(state, sizeof state, "%s", st);
    json_object_put(h);
    return state;
}

#define OUTAGE_BATCH 8
#define OUTAGE_MAX_ORDERS 128

Test(orders, inventory_outage_answers_202_then_503_and_the_breaker_recloses_through_half_open) {
    static const char *const gw_env[] = {"GATEWAY_TIMEOUT_MS=1000",
                                         "GATEWAY_BREAKER_WINDOW_MS=2000",
                                         "GATEWAY_BREAKER_OPEN_MS=3000",
                                         "GATEWAY_BREAKER_MIN_CALLS=5",
                                         "GATEWAY_BREAKER_FAILURE_RATE=0.5",
                                         "GATEWAY_BREAKER_PROBES=3",
                                         NULL};
    stack s;
    char accepted[OUTAGE_MAX_ORDERS][64], keys[OUTAGE_BATCH][64];
    size_t n_accepted = 0, n_503 = 0;
    stack_up(&s, "t5", true, gw_env);
    restock(&s, "t5-p", 1000);
    char *body = order_body1("cust-t5", "t5-p", 1);

    vt_http_resp r = post_order(GW_ADDR, "t5-before", body);
    cr_assert_eq(r.status, 201, "with inventory-svc up: status %d, body %s", r.status, r.body);
    vt_http_resp_clear(&r);

    it_svc_stop(s.inv, "inventory-svc");
    s.inv = NULL;
    /* Concurrent batches, so that enough calls fail inside one breaker window. */
    for (int batch = 0; batch < 10 && n_503 == 0; batch++) {
        post_job jobs[OUTAGE_BATCH];
        memset(jobs, 0, sizeof jobs);
        for (int i = 0; i < OUTAGE_BATCH; i++) {
            snprintf(keys[i], sizeof keys[i], "t5-out-%d-%d", batch, i);
            jobs[i] = (post_job){.addr = GW_ADDR, .key = keys[i], .body = body};
        }
        run_posts(jobs, OUTAGE_BATCH);
        for (int i = 0; i < OUTAGE_BATCH; i++) {
            vt_http_resp *a = &jobs[i].resp;
            if (a->status == 202) {
                const char *id = answer_order_id(a);
                cr_assert(id && jstr(a->json, "status") && strcmp(jstr(a->json, "status"), "PENDING") == 0,
                          "202 body: %s", a->body);
                assert_order_headers(a, id, keys[i]);
                cr_assert_lt(n_accepted, OUTAGE_MAX_ORDERS);
                snprintf(accepted[n_accepted++], sizeof accepted[0], "%s", id);
            } else {
                cr_assert_eq(a->status, 503, "inventory-svc down, key %s: status %d, want 202 or 503; body %s",
                             keys[i], a->status, a->body);
                const char *ra = vt_http_header(a, "Retry-After");
                cr_assert(ra && atoi(ra) >= 1, "503 without a Retry-After of 1 s or more: %s", ra ? ra : "(none)");
                n_503++;
            }
            vt_http_resp_clear(a);
        }
    }
    cr_assert_gt(n_accepted, 0, "no POST was accepted (202) while inventory-svc was down");
    cr_assert_gt(n_503, 0, "the breaker never refused a POST (503) while inventory-svc was down");
    cr_assert_str_eq(breaker_state(GW_ADDR), "open", "GET /health right after the first 503");
    r = post_order(GW_ADDR, "t5-while-open", body);
    cr_assert_eq(r.status, 503, "POST while the breaker is open: status %d, body %s", r.status, r.body);
    cr_assert(vt_http_header(&r, "Retry-After"), "503 without Retry-After");
    vt_http_resp_clear(&r);
    cr_assert_eq(pg_count(SQL_COUNT_BY_KEY, "t5-while-open", NULL), 0, "a POST refused by the breaker made an order");

    /* Back up: every accepted order reaches a final state. */
    s.inv = inv_spawn("2");
    int64_t deadline = vt_mono_ms() + LOAD_WAIT_MS;
    for (size_t i = 0; i < n_accepted; i++) {
        char status[32], history[256];
        for (;;) {
            api_order(accepted[i], status, sizeof status, history, sizeof history);
            if (strcmp(status, "PENDING") != 0) break;
            cr_assert(vt_mono_ms() < deadline, "order %s still PENDING after inventory-svc came back", accepted[i]);
            vt_sleep_ms(200);
        }
        cr_assert_str_eq(status, "CONFIRMED", "order %s accepted during the outage", accepted[i]);
        cr_assert_str_eq(history, "PENDING>CONFIRMED", "history of %s", accepted[i]);
    }

    /* Traffic closes the breaker again, through half-open probes. */
    deadline = vt_mono_ms() + IT_WAIT_MS;
    for (int i = 0; strcmp(breaker_state(GW_ADDR), "closed") != 0; i++) {
        char key[64];
        cr_assert(vt_mono_ms() < deadline, "the breaker did not close within %d ms of inventory-svc's return",
                  IT_WAIT_MS);
        snprintf(key, sizeof key, "t5-after-%d", i);
        r = post_order(GW_ADDR, key, body);
        cr_assert(r.status == 201 || r.status == 202 || r.status == 503, "POST after the outage: %d %s", r.status,
                  r.body);
        if (r.status == 503) vt_sleep_ms(250);
        vt_http_resp_clear(&r);
    }
    r = post_order(GW_ADDR, "t5-closed", body);
    cr_assert_eq(r.status, 201, "POST with the breaker closed: %d %s", r.status, r.body);
    vt_http_resp_clear(&r);

    char transitions[1024];
    breaker_transitions(it_proc_log_path(s.gw), transitions, sizeof transitions);
    cr_assert(strstr(transitions, "closed>open") && strstr(transitions, "open>half_open") &&
                  strstr(transitions, "half_open>closed"),
              "breaker transitions in %s: %s", it_proc_log_path(s.gw), transitions);
    size_t tl = strlen(transitions), want = strlen("half_open>closed");
    cr_assert(tl >= want && strcmp(transitions + tl - want, "half_open>closed") == 0,
              "the last transition should be half_open>closed: %s", transitions);
    char padded[1040];
    snprintf(padded, sizeof padded, ",%s,", transitions);
    cr_assert(!strstr(padded, ",open>closed,"), "the breaker closed without going half-open: %s", transitions);
    free(body);
    stack_down(&s);
}

/* ---- kill -9 under load ------------------------------------------------------------------- */

#define LOAD_THREADS 8
#define LOAD_ORDERS 2000
#define LOAD_KILL_AFTER 500
#define LOAD_PRODUCTS 8
#define LOAD_STOCK 700

typedef struct load_order {
    char key[48];
    char id[64];
    int status;
} load_order;

typedef struct load_worker {
    int index, n;
    load_order *orders;        /* n of them, owned by the test */
    char (*products)[32];      /* LOAD_PRODUCTS, borrowed */
    atomic_int *answered;      /* shared */
    int failed, n_503;
    char err[1024];
} load_worker;

/* One client: its own keys, one order at a time; a 503 is retried with the same key after
 * Retry-After, as the API asks. */
static void *load_run(void *arg) {
    load_worker *w = arg;
    uint64_t seed = 0x9E3779B97F4A7C15ULL * (uint64_t)(w->index + 1);
    for (int i = 0; i < w->n && !w->failed; i++) {
        load_order *o = &w->orders[i];
        const char *pids[2];
        int64_t qtys[2];
        size_t lines = 1 + vt_rand64(&seed) % 2;
        for (size_t l = 0; l < lines; l++) {
            pids[l] = w->products[vt_rand64(&seed) % LOAD_PRODUCTS];
            qtys[l] = 1 + (int64_t)(vt_rand64(&seed) % 4);
        }
        char *body = order_body("cust-t6", lines, pids, qtys), khdr[96];
        const char *hdrs[] = {"Content-Type: application/json", khdr, NULL};
        snprintf(o->key, sizeof o->key, "t6-L%d-%04d", w->index, i);
        key_header(khdr, sizeof khdr, o->key);
        int64_t deadline = vt_mono_ms() + LOAD_WAIT_MS;
        for (;;) {
            vt_http_resp r;
            char err[512];
            if (http_do(GW_ADDR, "POST", "/orders", hdrs, body, strlen(body), &r, err, sizeof err) == -1) {
                snprintf(w->err, sizeof w->err, "POST %s: %s", o->key, err);
                w->failed = 1;
                break;
            }
            if (r.status == 201 || r.status == 202 || r.status == 409) {
                const char *id = answer_order_id(&r);
                o->status = r.status;
                snprintf(o->id, sizeof o->id, "%s", id ? id : "");
                if (!id) {
                    snprintf(w->err, sizeof w->err, "POST %s: %d without an order id: %.300s", o->key, r.status,
                             r.body);
                    w->failed = 1;
                }
                vt_http_resp_clear(&r);
                atomic_fetch_add(w->answered, 1);
                break;
            }
            if (r.status != 503 || vt_mono_ms() > deadline) {
                snprintf(w->err, sizeof w->err, "POST %s: status %d: %.300s", o->key, r.status, r.body);
                w->failed = 1;
                vt_http_resp_clear(&r);
                break;
            }
            const char *ra = vt_http_header(&r, "Retry-After");
            int wait_s = ra ? atoi(ra) : 1;
            w->n_503++;
            vt_http_resp_clear(&r);
            vt_sleep_ms(1000 * (wait_s < 1 ? 1 : wait_s > 3 ? 3 : wait_s));
        }
        free(body);
    }
    return NULL;
}

static int cmp_load_order(const void *a, const void *b) {
    return strcmp(((const load_order *)a)->key, ((const load_order *)b)->key);
}

Test(orders, kill_9_of_order_svc_under_load_leaves_one_final_state_per_order_and_conserves_stock) {
    static const char *const gw_env[] = {"GATEWAY_BREAKER_OPEN_MS=2000", NULL};
    char err[IT_ERR_SIZE], how[128];
    char products[LOAD_PRODUCTS][32];
    load_worker workers[LOAD_THREADS];
    pthread_t threads[LOAD_THREADS];
    atomic_int answered = 0;
    stack s;
    stack_up(&s, "t6", true, gw_env);
    for (int p = 0; p < LOAD_PRODUCTS; p++) {
        snprintf(products[p], sizeof products[p], "t6-p%d", p);
        restock(&s, products[p], LOAD_STOCK);
    }
    load_order *orders = calloc(LOAD_ORDERS, sizeof *orders);
    cr_assert(orders != NULL);
    memset(workers, 0, sizeof workers);
    for (int t = 0; t < LOAD_THREADS; t++) {
        workers[t] = (load_worker){.index = t,
                                   .n = LOAD_ORDERS / LOAD_THREADS,
                                   .orders = orders + t * (LOAD_ORDERS / LOAD_THREADS),
                                   .products = products,
                                   .answered = &answered};
        cr_assert_eq(pthread_create(&threads[t], NULL, load_run, &workers[t]), 0);
    }
    int64_t deadline = vt_mono_ms() + LOAD_WAIT_MS;
    while (atomic_load(&answered) < LOAD_KILL_AFTER && vt_mono_ms() < deadline) vt_sleep_ms(5);
    int at_kill = atomic_load(&answered), status;
    bool killed;
    IT_OK(it_proc_stop(s.ord, SIGKILL, 10000, &status, &killed, err, sizeof err), err);
    it_status_describe(status, how, sizeof how);
    cr_log_info("order-svc %s after %d answers", how, at_kill);
    it_proc_free(s.ord);
    s.ord = ord_spawn("2");
    for (int t = 0; t < LOAD_THREADS; t++) pthread_join(threads[t], NULL);
    int n_503 = 0;
    for (int t = 0; t < LOAD_THREADS; t++) {
        cr_assert(!workers[t].failed, "client %d: %s", t, workers[t].err);
        n_503 += workers[t].n_503;
    }
    cr_assert_geq(at_kill, LOAD_KILL_AFTER, "only %d answers before the kill", at_kill);
    cr_assert_lt(at_kill, LOAD_ORDERS, "every order was answered before the kill");

    /* Every order ends; none is left PENDING. */
    deadline = vt_mono_ms() + LOAD_WAIT_MS;
    for (;;) {
        int64_t pending = pg_count(SQL_PENDING_LIKE, "t6-L%", NULL);
        if (pending == 0) break;
        cr_assert(vt_mono_ms() < deadline, "%" PRId64 " orders still PENDING after %d ms", pending, LOAD_WAIT_MS);
        vt_sleep_ms(500);
    }

    /* Each accepted answer has its order, with the answer's id, one PENDING and one final state. */
    qsort(orders, LOAD_ORDERS, sizeof *orders, cmp_load_order);
    PGconn *conn = NULL;
    PGresult *res = pg_query(&conn, ORD_DB, SQL_LOAD_ORDERS, (const char *const[]){"t6-L%"}, 1);
    int rows = PQntuples(res), n_by_status[3] = {0};
    cr_assert_eq(rows, LOAD_ORDERS, "%d orders in the database for %d accepted requests", rows, LOAD_ORDERS);
    for (int i = 0; i < rows; i++) {
        const char *key = PQgetvalue(res, i, 0), *id = PQgetvalue(res, i, 1), *st = PQgetvalue(res, i, 2);
        load_order probe, *o;
        snprintf(probe.key, sizeof probe.key, "%s", key);
        o = bsearch(&probe, orders, LOAD_ORDERS, sizeof *orders, cmp_load_order);
        cr_assert(o != NULL, "order %s in the database was never requested", key);
        cr_assert_str_eq(id, o->id, "order %s: answer said id %s, database has %s", key, o->id, id);
        cr_assert(strcmp(st, "CONFIRMED") == 0 || strcmp(st, "REJECTED") == 0, "order %s is %s", key, st);
        if (o->status == 201) cr_assert_str_eq(st, "CONFIRMED", "order %s was answered 201", key);
        if (o->status == 409) cr_assert_str_eq(st, "REJECTED", "order %s was answered 409", key);
        cr_assert(strcmp(PQgetvalue(res, i, 3), "1") == 0 && strcmp(PQgetvalue(res, i, 4), "1") == 0,
                  "order %s: %s PENDING and %s final rows in its history, want 1 and 1", key, PQgetvalue(res, i, 3),
                  PQgetvalue(res, i, 4));
        n_by_status[o->status == 201 ? 0 : o->status == 202 ? 1 : 2]++;
    }
    PQclear(res);

    /* Stock is conserved: what is gone is exactly what confirmed orders hold. */
    int64_t confirmed[LOAD_PRODUCTS] = {0};
    res = PQexecParams(conn, SQL_CONFIRMED_QTY, 1, NULL, (const char *const[]){"t6-L%"}, NULL, NULL, 0);
    cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(conn));
    for (int i = 0; i < PQntuples(res); i++)
        for (int p = 0; p < LOAD_PRODUCTS; p++)
            if (strcmp(PQgetvalue(res, i, 0), products[p]) == 0) confirmed[p] = strtoll(PQgetvalue(res, i, 1), NULL, 10);
    PQclear(res);
    PQfinish(conn);
    for (int p = 0; p < LOAD_PRODUCTS; p++) {
        int64_t now = it_stock(INV_DB, products[p]);
        cr_assert_eq(LOAD_STOCK - confirmed[p], now,
                     "%s: %d at start - %" PRId64 " in confirmed orders = %" PRId64 ", but the stock is %" PRId64,
                     products[p], LOAD_STOCK, confirmed[p], LOAD_STOCK - confirmed[p], now);
    }
    cr_log_info("load: %d answers before the kill; 201 %d, 202 %d, 409 %d; %d retries after 503", at_kill,
                n_by_status[0], n_by_status[1], n_by_status[2], n_503);
    free(orders);
    stack_down(&s);
}

/* ---- Kafka only --------------------------------------------------------------------------- */

Test(orders, place_order_produced_with_kcat_gets_its_result_with_the_same_correlation_id) {
    stack s;
    char db_id[128];
    stack_up(&s, "t7", false, NULL);
    restock(&s, "t7-p", 10);

    char *cmd = place_order_cmd("t7-k1", NULL, "cust-t7", 1, (const char *const[]){"t7-p"}, (const int64_t[]){2});
    kcat_produce_h(run.orders_commands, "t7-k1", cmd, "correlation-id", "t7-cid-1");
    free(cmd);
    const it_msg *m = await_msg(s.results, "idempotency_key", "t7-k1", 1);
    const char *cid = it_msg_header_get(m, "correlation-id", NULL);
    cr_assert(cid && strcmp(cid, "t7-cid-1") == 0, "correlation-id header %s, want t7-cid-1: %s",
              cid ? cid : "(none)", m->value);
    cr_assert_str_eq(it_msg_str(m, "type"), "OrderResult", "%s", m->value);
    cr_assert_str_eq(it_msg_str(m, "status"), "CONFIRMED", "%s", m->value);
    cr_assert_str_eq(db_order("t7-k1", db_id, sizeof db_id), "CONFIRMED");
    cr_assert_str_eq(it_msg_str(m, "order_id"), db_id, "%s", m->value);
    cr_assert(m->key && strcmp(m->key, db_id) == 0, "result keyed %s, want the order id %s", m->key ? m->key : "(none)",
              db_id);
    it_assert_stock(INV_DB, "t7-p", 8);

    /* With an order id of the producer's choosing, and a rejection. */
    cmd = place_order_cmd("t7-k2", "t7-order-2", "cust-t7", 1, (const char *const[]){"t7-p"}, (const int64_t[]){20});
    kcat_produce_h(run.orders_commands, "t7-k2", cmd, "correlation-id", "t7-cid-2");
    free(cmd);
    m = await_msg(s.results, "idempotency_key", "t7-k2", 1);
    cid = it_msg_header_get(m, "correlation-id", NULL);
    cr_assert(cid && strcmp(cid, "t7-cid-2") == 0, "correlation-id header %s, want t7-cid-2: %s",
              cid ? cid : "(none)", m->value);
    cr_assert_str_eq(it_msg_str(m, "order_id"), "t7-order-2", "%s", m->value);
    cr_assert_str_eq(it_msg_str(m, "status"), "REJECTED", "%s", m->value);
    cr_assert_str_eq(it_msg_str(m, "reason"), "insufficient_stock", "%s", m->value);
    cr_assert_str_eq(it_msg_str(m, "product_id"), "t7-p", "%s", m->value);
    it_assert_stock(INV_DB, "t7-p", 8);
    stack_down(&s);
}

/* ---- two gateways ----------------------------------------------------------------------------- */

#define PER_GATEWAY 20

typedef struct gw_client {
    const char *addr, *prefix;
    char keys[PER_GATEWAY][48];
    vt_http_resp resp[PER_GATEWAY];
    int failed;
    char err[512];
} gw_client;

static void *gw_client_run(void *arg) {
    gw_client *c = arg;
    char *body = order_body1("cust-t8", "t8-p", 1);
    for (int i = 0; i < PER_GATEWAY && !c->failed; i++) {
        char khdr[96];
        const char *hdrs[] = {"Content-Type: application/json", khdr, NULL};
        snprintf(c->keys[i], sizeof c->keys[i], "%s-%02d", c->prefix, i);
        key_header(khdr, sizeof khdr, c->keys[i]);
        if (http_do(c->addr, "POST", "/orders", hdrs, body, strlen(body), &c->resp[i], c->err, sizeof c->err) == -1)
            c->failed = 1;
    }
    free(body);
    return NULL;
}

Test(orders, two_gateways_at_once_each_answer_their_own_requests) {
    stack s;
    gw_client clients[2] = {{.addr = GW_ADDR, .prefix = "t8-g1"}, {.addr = GW2_ADDR, .prefix = "t8-g2"}};
    pthread_t threads[2];
    stack_up(&s, "t8", true, NULL);
    it_proc_t *gw2 = gw_spawn(GW2_ADDR, NULL);
    restock(&s, "t8-p", 1000);

    for (int c = 0; c < 2; c++) cr_assert_eq(pthread_create(&threads[c], NULL, gw_client_run, &clients[c]), 0);
    for (int c = 0; c < 2; c++) pthread_join(threads[c], NULL);
    for (int c = 0; c < 2; c++) {
        cr_assert(!clients[c].failed, "client of %s: %s", clients[c].addr, clients[c].err);
        for (int i = 0; i < PER_GATEWAY; i++) {
            vt_http_resp *r = &clients[c].resp[i];
            char db_id[128];
            cr_assert_eq(r->status, 201, "%s, key %s: status %d, body %s", clients[c].addr, clients[c].keys[i],
                         r->status, r->body);
            cr_assert_str_eq(db_order(clients[c].keys[i], db_id, sizeof db_id), "CONFIRMED");
            cr_assert(answer_order_id(r) && strcmp(answer_order_id(r), db_id) == 0,
                      "%s answered key %s with order %s, the key's order is %s", clients[c].addr, clients[c].keys[i],
                      answer_order_id(r) ? answer_order_id(r) : "(none)", db_id);
            cr_assert_str_eq(jstr(r->json, "idempotency_key") ? jstr(r->json, "idempotency_key") : "(none)",
                             clients[c].keys[i]);
            assert_order_headers(r, db_id, clients[c].keys[i]);
            vt_http_resp_clear(r);
        }
    }
    it_assert_stock(INV_DB, "t8-p", 1000 - 2 * PER_GATEWAY);

    /* A key first used at one instance is known at the other: the same order, replayed. */
    char *body = order_body1("cust-t8", "t8-p", 1), db_id[128];
    vt_http_resp r = post_order(GW2_ADDR, "t8-g1-00", body);
    db_order("t8-g1-00", db_id, sizeof db_id);
    cr_assert_eq(r.status, 201, "key of gateway 1 at gateway 2: %d %s", r.status, r.body);
    cr_assert(answer_order_id(&r) && strcmp(answer_order_id(&r), db_id) == 0, "order %s, want %s",
              answer_order_id(&r) ? answer_order_id(&r) : "(none)", db_id);
    cr_assert(vt_http_header(&r, "Idempotent-Replayed"), "no Idempotent-Replayed on a replay at the other instance");
    vt_http_resp_clear(&r);
    it_assert_stock(INV_DB, "t8-p", 1000 - 2 * PER_GATEWAY);
    free(body);
    it_svc_stop(gw2, "second gateway");
    stack_down(&s);
}

/* ---- cancellation ------------------------------------------------------------------------------ */

static size_t count_type_for_order(const it_collector_t *c, const char *type, const char *order_id) {
    size_t n = 0;
    for (size_t i = 0; i < it_collector_count(c); i++) {
        const it_msg *m = it_collector_at(c, i);
        const char *t = it_msg_str(m, "type"), *o = it_msg_str(m, "order_id");
        n += t && o && strcmp(t, type) == 0 && strcmp(o, order_id) == 0;
    }
    return n;
}

Test(orders, cancel_of_a_confirmed_order_gives_its_stock_back_once) {
    stack s;
    char id[128], status[32], history[256], err[IT_ERR_SIZE];
    stack_up(&s, "t9", true, NULL);
    restock(&s, "t9-p", 10);
    char *body = order_body1("cust-t9", "t9-p", 4);
    vt_http_resp r = post_order(GW_ADDR, "t9-key", body);
    cr_assert_eq(r.status, 201, "POST: %d %s", r.status, r.body);
    snprintf(id, sizeof id, "%s", answer_order_id(&r));
    vt_http_resp_clear(&r);
    free(body);
    it_assert_stock(INV_DB, "t9-p", 6);

    produce(run.orders_commands, "t9-cancel-1", cancel_order_cmd("t9-cancel-1", id), "t9-cid-1");
    const it_msg *m = await_msg(s.results, "idempotency_key", "t9-cancel-1", 1);
    cr_assert_str_eq(it_msg_str(m, "order_id"), id, "%s", m->value);
    cr_assert_str_eq(it_msg_str(m, "status"), "CANCELLED", "%s", m->value);
    cr_assert_str_eq(it_msg_str(m, "reason"), "cancelled", "%s", m->value);
    const char *cid = it_msg_header_get(m, "correlation-id", NULL);
    cr_assert(cid && strcmp(cid, "t9-cid-1") == 0, "correlation-id %s, want t9-cid-1", cid ? cid : "(none)");

    /* The ReleaseStock goes to inventory through order-svc's outbox: the stock comes back. */
    int64_t deadline = vt_mono_ms() + IT_WAIT_MS;
    while (it_stock(INV_DB, "t9-p") != 10) {
        cr_assert(vt_mono_ms() < deadline, "stock of t9-p is %" PRId64 " after the cancel, want 10", it_stock(INV_DB, "t9-p"));
        vt_sleep_ms(100);
    }
    api_order(id, status, sizeof status, history, sizeof history);
    cr_assert_str_eq(status, "CANCELLED");
    cr_assert_str_eq(history, "PENDING>CONFIRMED>CANCELLED", "history of %s", id);
    assert_api_stock("t9-p", 10);

    /* The same CancelOrder again, and another one: answered, nothing changes. */
    size_t results_before = it_collector_count_str(s.results, "order_id", id);
    produce(run.orders_commands, "t9-cancel-1", cancel_order_cmd("t9-cancel-1", id), "t9-cid-1b");
    produce(run.orders_commands, "t9-cancel-2", cancel_order_cmd("t9-cancel-2", id), "t9-cid-2");
    await_msg(s.results, "order_id", id, results_before + 2);
    for (size_t i = results_before; i < results_before + 2; i++) {
        const it_msg *again = nth_msg(s.results, "order_id", id, i);
        cr_assert_str_eq(it_msg_str(again, "status"), "CANCELLED", "%s", again->value);
    }
    /* Both are decided (their results are out) and sent inventory nothing: one ReserveStock and
     * one ReleaseStock in all. */
    cr_assert_eq(pg_count(SQL_INVENTORY_COMMANDS, id, NULL), 2, "commands to inventory about %s", id);
    it_assert_stock(INV_DB, "t9-p", 10);
    cr_assert_eq(pg_count(SQL_HISTORY_COUNT, id, "CANCELLED"), 1, "CANCELLED rows in the history of %s", id);
    IT_OK(it_collector_catch_up(s.events, IT_WAIT_MS, err, sizeof err), err);
    cr_assert_eq(count_type_for_order(s.events, "StockReleased", id), 1, "StockReleased events for %s", id);

    /* An order that does not exist. */
    produce(run.orders_commands, "t9-cancel-3", cancel_order_cmd("t9-cancel-3", "t9-no-such-order"), NULL);
    m = await_msg(s.results, "idempotency_key", "t9-cancel-3", 1);
    cr_assert_str_eq(it_msg_str(m, "status"), "REJECTED", "%s", m->value);
    cr_assert_str_eq(it_msg_str(m, "reason"), "not_found", "%s", m->value);
    stack_down(&s);
}

typedef struct header_is {
    const char *name, *value;
} header_is;

static bool has_header(const it_collector_t *c, void *arg) {
    const header_is *h = arg;
    for (size_t i = 0; i < it_collector_count(c); i++) {
        const char *v = it_msg_header_get(it_collector_at(c, i), h->name, NULL);
        if (v && strcmp(v, h->value) == 0) return true;
    }
    return false;
}

static const it_msg *find_header(const it_collector_t *c, const char *name, const char *value) {
    for (size_t i = 0; i < it_collector_count(c); i++) {
        const char *v = it_msg_header_get(it_collector_at(c, i), name, NULL);
        if (v && strcmp(v, value) == 0) return it_collector_at(c, i);
    }
    return NULL;
}

/* OrderResult.schema.json: idempotency_key is that of the command the result answers. */
Test(orders, cancel_with_a_new_key_of_a_cancelled_order_is_answered_under_its_own_key) {
    stack s;
    char id[128], err[IT_ERR_SIZE];
    header_is want = {"correlation-id", "tc-cid-2"};
    stack_up(&s, "tc", true, NULL);
    restock(&s, "tc-p", 10);
    char *body = order_body1("cust-tc", "tc-p", 1);
    vt_http_resp r = post_order(GW_ADDR, "tc-key", body);
    cr_assert_eq(r.status, 201, "POST: %d %s", r.status, r.body);
    snprintf(id, sizeof id, "%s", answer_order_id(&r));
    vt_http_resp_clear(&r);
    free(body);
    produce(run.orders_commands, "tc-cancel-1", cancel_order_cmd("tc-cancel-1", id), "tc-cid-1");
    await_msg(s.results, "idempotency_key", "tc-cancel-1", 1);

    produce(run.orders_commands, "tc-cancel-2", cancel_order_cmd("tc-cancel-2", id), "tc-cid-2");
    IT_OK(it_collector_wait(s.results, has_header, &want, "a result with correlation-id tc-cid-2", IT_WAIT_MS, err,
                            sizeof err),
          err);
    const it_msg *m = find_header(s.results, "correlation-id", "tc-cid-2");
    char *value = strdup(m->value), order_id[128], status[32], key[160];
    snprintf(order_id, sizeof order_id, "%s", it_msg_str(m, "order_id") ? it_msg_str(m, "order_id") : "(none)");
    snprintf(status, sizeof status, "%s", it_msg_str(m, "status") ? it_msg_str(m, "status") : "(none)");
    snprintf(key, sizeof key, "%s", it_msg_str(m, "idempotency_key") ? it_msg_str(m, "idempotency_key") : "(none)");
    stack_down(&s); /* first: a failed check must not leave consumers for the next test to wait out */
    cr_assert_str_eq(order_id, id, "%s", value);
    cr_assert_str_eq(status, "CANCELLED", "%s", value);
    cr_assert_str_eq(key, "tc-cancel-2", "the answer to CancelOrder tc-cancel-2 names another command: %s", value);
    free(value);
}

/* ---- after every other test ---------------------------------------------------------------------- */

static void record_topic(const char *topic, const char *label, const char *const types[]) {
    it_collector_t *c = it_collect(topic, VT_FROM_BEGINNING, label);
    it_catch_up(c);
    cr_assert_gt(it_collector_count(c), 0, "nothing in %s: did the other tests run?", topic);
    for (size_t i = 0; i < it_collector_count(c); i++) {
        const it_msg *m = it_collector_at(c, i);
        const char *t = it_msg_str(m, "type");
        bool known = false;
        for (size_t k = 0; t && types[k]; k++) known |= strcmp(t, types[k]) == 0;
        cr_assert(known, "%s [%d] @%" PRId64 ": not a known message: %.300s", topic, (int)m->partition, m->offset,
                  m->value ? m->value : "(null)");
    }
    cr_log_info("%s: %zu messages recorded as %s", topic, it_collector_count(c), label);
    it_collector_free(c);
}

/* POST /admin/chaos at the gateway: 401 without the bearer token, 403 with a wrong one, 400 for a
 * bad body, 200 arming after_produce_before_reply, shown in /health. The armed gateway dies with 70
 * once the PlaceOrder is in Kafka and before it answers; the order goes on without it, and the
 * client's retry with the same key at a new gateway gets the same order, stock taken once. */
Test(orders, gateway_dying_after_produce_before_reply_loses_no_order) {
    stack s;
    char err[IT_ERR_SIZE], how[128], id[128];
    const char *const gw_env[] = {"VX_CHAOS_TOKEN=it-chaos-token", NULL};
    stack_up(&s, "gc", true, gw_env);
    restock(&s, "gc-p", 10);

    static const struct {
        const char *auth, *body;
        int want;
    } admin[] = {
        {NULL, "{\"crash_points\":\"after_produce_before_reply@1\"}", 401},
        {"Authorization: Bearer nope", "{\"crash_points\":\"after_produce_before_reply@1\"}", 403},
        {"Authorization: Bearer it-chaos-token", "{\"crash_points\":\"after_produce_before_reply@0\"}", 400},
        {"Authorization: Bearer it-chaos-token", "{\"crash_points\":\"after_produce_before_reply@1\"}", 200},
    };
    for (size_t i = 0; i < sizeof admin / sizeof admin[0]; i++) {
        const char *hdrs[] = {"Content-Type: application/json", admin[i].auth, NULL};
        vt_http_resp r = http(GW_ADDR, "POST", "/admin/chaos", hdrs, admin[i].body, strlen(admin[i].body));
        cr_assert_eq(r.status, admin[i].want, "POST /admin/chaos #%zu: %d, want %d; %s", i, r.status, admin[i].want,
                     r.body);
        if (admin[i].want == 401) cr_assert(vt_http_header(&r, "WWW-Authenticate"), "401 without WWW-Authenticate");
        vt_http_resp_clear(&r);
    }
    json_object *health = get_json(GW_ADDR, "/health", 200), *points = jget(jget(health, "chaos"), "crash_points");
    cr_assert(points && json_object_array_length(points) == 1 &&
                  strcmp(jstr(json_object_array_get_idx(points, 0), "point") ?: "", "after_produce_before_reply") == 0,
              "/health: %s", jtext(health));
    json_object_put(health);

    char *body = order_body1("cust-gc", "gc-p", 3);
    const char *hdrs[] = {"Content-Type: application/json", "Idempotency-Key: gc-key", NULL};
    vt_http_resp r;
    cr_assert(http_do(GW_ADDR, "POST", "/orders", hdrs, body, strlen(body), &r, err, sizeof err) != 0,
              "the armed gateway answered %d: %s", r.status, r.body);
    int status;
    IT_OK(it_proc_wait_exit(s.gw, IT_WAIT_MS, &status, err, sizeof err), err);
    it_status_describe(status, how, sizeof how);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 70, "gateway %s (log %s)", how, it_proc_log_path(s.gw));
    it_proc_free(s.gw);
    s.gw = NULL;

    /* the command was in Kafka: the order reaches its final state with no gateway up */
    int64_t deadline = vt_mono_ms() + IT_WAIT_MS;
    while (pg_count(SQL_COUNT_BY_KEY, "gc-key", NULL) == 0 || strcmp(db_order("gc-key", id, sizeof id), "PENDING") == 0) {
        cr_assert(vt_mono_ms() < deadline, "order gc-key not decided %d ms after the gateway died", IT_WAIT_MS);
        vt_sleep_ms(100);
    }
    cr_assert_str_eq(db_order("gc-key", id, sizeof id), "CONFIRMED");
    it_assert_stock(INV_DB, "gc-p", 7);

    s.gw = gw_spawn(GW_ADDR, NULL);
    r = post_order(GW_ADDR, "gc-key", body);
    cr_assert_eq(r.status, 201, "the retry: %d %s", r.status, r.body);
    cr_assert_str_eq(answer_order_id(&r) ?: "(none)", id, "the retry names another order: %s", r.body);
    cr_assert_str_eq(vt_http_header(&r, "Idempotent-Replayed") ?: "(none)", "true");
    vt_http_resp_clear(&r);
    it_assert_stock(INV_DB, "gc-p", 7);
    free(body);
    stack_down(&s);
}

/* Whether the gateway's /health says librdkafka sees every broker down. */
static bool gateway_says_kafka_down(void) {
    json_object *h = get_json(GW_ADDR, "/health", 200), *v;
    bool down = json_object_object_get_ex(h, "kafka_down", &v) && json_object_get_boolean(v);
    json_object_put(h);
    return down;
}

/* A client retrying with one key, as a real one would, after `what`: POSTs body until it is answered
 * 201, taking 503 and 202 meanwhile, for at most 2 x IT_WAIT_MS. */
static void post_until_decided(const char *key, const char *body, const char *what) {
    int64_t deadline = vt_mono_ms() + 2 * IT_WAIT_MS;
    for (;;) {
        vt_http_resp r = post_order(GW_ADDR, key, body);
        int st = r.status;
        vt_http_resp_clear(&r);
        if (st == 201) return;
        cr_assert(st == 503 || st == 202, "after %s: %d", what, st);
        cr_assert(vt_mono_ms() < deadline, "still %d %d ms after %s (kafka_down %d)", st, 2 * IT_WAIT_MS, what,
                  gateway_says_kafka_down());
        vt_sleep_ms(300);
    }
}

/* A broker restart with no order in flight: while the broker is away POST /orders answers 503 at
 * once with Retry-After, and once it is back the gateway finds out by itself (nothing it sends
 * could tell it: it sends nothing while Kafka is down) and answers 201 again. */
Test(orders, gateway_serves_again_after_a_broker_restart_with_nothing_in_flight) {
    stack s;
    char err[IT_ERR_SIZE];
    stack_up(&s, "kr", true, NULL);
    restock(&s, "kr-p", 10);
    char *body = order_body1("cust-kr", "kr-p", 1);
    vt_http_resp r = post_order(GW_ADDR, "kr-1", body);
    cr_assert_eq(r.status, 201, "before the restart: %d %s", r.status, r.body);
    vt_http_resp_clear(&r);

    IT_OK(it_stack("stop", "kafka", err, sizeof err), err);
    int64_t deadline = vt_mono_ms() + IT_WAIT_MS;
    while (!gateway_says_kafka_down()) {
        cr_assert(vt_mono_ms() < deadline, "the gateway did not notice the broker was gone");
        vt_sleep_ms(200);
    }
    r = post_order(GW_ADDR, "kr-2", body);
    cr_assert_eq(r.status, 503, "with the broker away: %d %s", r.status, r.body);
    cr_assert(vt_http_header(&r, "Retry-After"), "503 without Retry-After");
    vt_http_resp_clear(&r);

    IT_OK(it_stack("start", "kafka", err, sizeof err), err);
    IT_OK(it_kafka_wait_up(120000, err, sizeof err), err);
    post_until_decided("kr-3", body, "the broker came back");
    cr_assert(!gateway_says_kafka_down(), "201 while /health says kafka_down");
    it_assert_stock(INV_DB, "kr-p", 8);
    free(body);
    stack_down(&s);
}

/* The value of the series named `series` (labels included, as printed) on addr's /metrics; -1 when
 * it has none. */
static double metric_at(const char *addr, const char *series) {
    vt_http_resp r = http(addr, "GET", "/metrics", NULL, NULL, 0);
    double v = -1;
    size_t n = strlen(series);
    cr_assert_eq(r.status, 200, "GET %s/metrics: %d", addr, r.status);
    for (const char *l = r.body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, series, n) == 0 && l[n] == ' ') {
            v = strtod(l + n + 1, NULL);
            break;
        }
    vt_http_resp_clear(&r);
    return v;
}

/* Every connection of both services to their databases is cut (pg_terminate_backend, what a
 * failover or an operator does): each service connects again, prepares its call statement and its
 * place path's steps on the new backend (common/vx_apply.c, common/vx_fast.c) and decides the next
 * orders, placing them through that path; nothing is dead-lettered (the orders_zz check). */
Test(orders, services_whose_database_connections_are_cut_connect_again_and_decide_orders) {
    stack s;
    char err[IT_ERR_SIZE];
    int64_t cut;
    const char *const dbs[] = {ORD_DB, INV_DB};
    stack_up(&s, "dc", true, NULL);
    restock(&s, "dc-p", 10);
    char *body = order_body1("cust-dc", "dc-p", 1);
    vt_http_resp r = post_order(GW_ADDR, "dc-1", body);
    cr_assert_eq(r.status, 201, "before the cut: %d %s", r.status, r.body);
    vt_http_resp_clear(&r);
    double before = metric_at(ORD_ADDR, "valerix_apply_retries_total{reason=\"connection\"}");
    double placed = metric_at(ORD_ADDR, "valerix_apply_fast_calls_total{path=\"place\",outcome=\"applied\"}");
    cr_assert_geq(placed, 1, "order-svc placed the first order without its place path (common/vx_fast.h)");

    for (size_t i = 0; i < 2; i++) {
        IT_OK(it_pg_int(dbs[i],
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
                        NULL, 0, &cut, err, sizeof err),
              err);
        cr_assert_geq(cut, 2, "%s: %lld connections cut, want the service's two at least", dbs[i], (long long)cut);
    }
    post_until_decided("dc-2", body, "the cut");
    r = post_order(GW_ADDR, "dc-3", body);
    cr_assert_eq(r.status, 201, "the next order: %d %s", r.status, r.body);
    vt_http_resp_clear(&r);
    cr_assert_gt(metric_at(ORD_ADDR, "valerix_apply_retries_total{reason=\"connection\"}"), before,
                 "order-svc never met the cut connection: the test did not test the reconnection");
    cr_assert_gt(metric_at(ORD_ADDR, "valerix_apply_fast_calls_total{path=\"place\",outcome=\"applied\"}"), placed,
                 "after the cut, order-svc placed no order through its place path: its steps were not prepared again");
    it_assert_stock(INV_DB, "dc-p", 7);
    free(body);
    stack_down(&s);
}

/* The order id the system derives from an idempotency key: UUID v5 in Valerix's namespace. */
static void derived_order_id(const char *key, char out[37]) {
    uuid_t ns, u;
    cr_assert_eq(uuid_parse("2ad60cf7-7425-5be5-a9bc-29acaf8e7d71", ns), 0);
    uuid_generate_sha1(u, ns, key, strlen(key));
    uuid_unparse_lower(u, out);
}

/* A POST waits for its own order's outcome. Another command's answer about the same order id (here
 * the REJECTED not_found a CancelOrder gets when it overtakes the order, put on the results topic
 * while order-svc is down) must not answer it: the POST still gets 201 once order-svc is back. */
Test(orders, another_commands_answer_about_the_order_does_not_answer_a_waiting_post) {
    stack s;
    char oid[37], json[512];
    const char *const gw_env[] = {"GATEWAY_TIMEOUT_MS=60000", NULL};
    stack_up(&s, "ox", true, gw_env);
    restock(&s, "ox-p", 10);
    it_svc_stop(s.ord, "order-svc");
    s.ord = NULL;

    char *body = order_body1("cust-ox", "ox-p", 2);
    post_job job = {.addr = GW_ADDR, .key = "ox-key", .body = body};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, post_job_run, &job), 0);
    int64_t deadline = vt_mono_ms() + IT_WAIT_MS;
    for (;;) { /* until the POST is in flight at the gateway */
        json_object *h = get_json(GW_ADDR, "/health", 200), *v;
        bool waiting = json_object_object_get_ex(h, "inflight", &v) && json_object_get_int(v) >= 1;
        json_object_put(h);
        if (waiting) break;
        cr_assert(vt_mono_ms() < deadline, "the POST never became in flight");
        vt_sleep_ms(50);
    }
    derived_order_id("ox-key", oid);
    snprintf(json, sizeof json,
             "{\"type\":\"OrderResult\",\"order_id\":\"%s\",\"idempotency_key\":\"ox-cancel\",\"status\":\"REJECTED\","
             "\"reason\":\"not_found\",\"items\":[],\"event_id\":\"orders:cancel:ox-cancel\","
             "\"occurred_at\":\"2026-11-21T10:00:00.000000Z\"}",
             oid);
    produce(run.orders_results, oid, strdup(json), "ox-cancel-cid");
    vt_sleep_ms(1000); /* time enough for the gateway to (wrongly) take it */
    s.ord = ord_spawn("again");
    pthread_join(thread, NULL);
    cr_assert_eq(job.rc, 0, "POST: %s", job.err);
    cr_assert_eq(job.resp.status, 201, "the waiting POST was answered %d: %s", job.resp.status, job.resp.body);
    cr_assert_str_eq(answer_order_id(&job.resp) ?: "(none)", oid);
    vt_http_resp_clear(&job.resp);
    it_assert_stock(INV_DB, "ox-p", 8);
    free(body);
    stack_down(&s);
}

/* order-svc's gremlin holds back one PlaceOrder for 3 s (every 3rd command): the CancelOrder of
 * that order, produced right after it, waits behind it (the order ends CANCELLED, not "not_found"
 * then CONFIRMED), while a PlaceOrder of another order produced after both is decided before the
 * held-back order even exists. */
Test(orders, held_back_place_order_is_passed_by_other_orders_and_not_by_its_cancel) {
    const char *const extra[] = {"VX_GREMLIN_DELAY_MS=3000", "VX_GREMLIN_EVERY=3", NULL};
    const char *pid = "hb-p";
    int64_t qty = 1;
    char oid[37];
    stack s;
    stack_up(&s, "hb", false, NULL);
    restock(&s, "hb-p", 10);
    it_svc_stop(s.ord, "order-svc"); /* again, with the gremlin: its count starts here */
    s.ord = ord_spawn_with("gremlin", extra);
    produce(run.orders_commands, "hb-x", place_order_cmd("hb-x", NULL, "cust-hb", 1, &pid, &qty), NULL); /* 1st */
    produce(run.orders_commands, "hb-y", place_order_cmd("hb-y", NULL, "cust-hb", 1, &pid, &qty), NULL); /* 2nd */
    produce(run.orders_commands, "hb-a", place_order_cmd("hb-a", NULL, "cust-hb", 1, &pid, &qty), NULL); /* 3rd: held */
    derived_order_id("hb-a", oid);
    produce(run.orders_commands, "hb-a-cancel", cancel_order_cmd("hb-a-cancel", oid), NULL);             /* 4th */
    produce(run.orders_commands, "hb-z", place_order_cmd("hb-z", NULL, "cust-hb", 1, &pid, &qty), NULL); /* 5th */

    const it_msg *z = await_msg(s.results, "idempotency_key", "hb-z", 1);
    cr_assert_str_eq(it_msg_str(z, "status"), "CONFIRMED", "%s", z->value);
    const it_msg *a = await_msg(s.results, "idempotency_key", "hb-a-cancel", 1);
    cr_assert_str_eq(it_msg_str(a, "status"), "CANCELLED", "the cancel overtook its order: %s", a->value);
    PGconn *conn = NULL;
    PGresult *res = pg_query(&conn, ORD_DB, "SELECT ord_ts(created_at) FROM orders WHERE id = $1",
                             (const char *const[]){oid}, 1);
    cr_assert_eq(PQntuples(res), 1, "order %s is not in the database", oid);
    cr_assert(strcmp(it_msg_str(z, "occurred_at"), PQgetvalue(res, 0, 0)) < 0,
              "hb-z (produced after the held-back order) was decided at %s, not before that order was placed (%s)",
              it_msg_str(z, "occurred_at"), PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(conn);
    it_catch_up(s.results);
    cr_assert_eq(it_collector_count_str(s.results, "order_id", oid), 1, "order %s has more than one result", oid);
    char release[64];
    snprintf(release, sizeof release, "order:%s:release", oid);
    await_msg(s.events, "idempotency_key", release, 1);
    it_assert_stock(INV_DB, "hb-p", 10 - 3); /* hb-x, hb-y, hb-z; hb-a's reservation given back */
    stack_down(&s);
}

/* ---- event ids and cancels that come first ---------------------------------------------------- */

/* One statement as the superuser on the maintenance database. CREATE DATABASE ... TEMPLATE fails while
 * anyone, an autovacuum worker say, is connected to the template: tried again for a while. */
static void pg_admin(const char *sql) {
    char err[IT_ERR_SIZE];
    PGconn *c = NULL;
    int64_t deadline = vt_mono_ms() + IT_WAIT_MS;
    IT_OK(it_pg_connect(&c, "postgres", err, sizeof err), err);
    for (;;) {
        PGresult *r = PQexec(c, sql);
        bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        snprintf(err, sizeof err, "%s", PQresultErrorMessage(r));
        PQclear(r);
        if (ok) break;
        cr_assert(strstr(err, "is being accessed by other users") && vt_mono_ms() < deadline, "%s: %s", sql, err);
        vt_sleep_ms(200);
    }
    PQfinish(c);
}

static bool same_str(const char *a, const char *b) { return a == b || (a && b && strcmp(a, b) == 0); }

/* Every event_id among c's messages names one event: wherever it appears, the same type, command
 * key, order, status and reason. */
static void assert_one_event_per_id(const it_collector_t *c) {
    static const char *const fields[] = {"type",   "idempotency_key", "order_id",
                                         "status", "reason",          "product_id", NULL};
    size_t n = it_collector_count(c);
    for (size_t i = 0; i < n; i++) {
        const it_msg *a = it_collector_at(c, i);
        const char *id = it_msg_str(a, "event_id");
        cr_assert(id && *id, "%s: a message without event_id: %s", it_collector_topic(c), a->value);
        for (size_t j = i + 1; j < n; j++) {
            const it_msg *b = it_collector_at(c, j);
            if (!same_str(id, it_msg_str(b, "event_id"))) continue;
            for (size_t f = 0; fields[f]; f++)
                cr_assert(same_str(it_msg_str(a, fields[f]), it_msg_str(b, fields[f])),
                          "event_id %s names two events (%s differs):\n  %s\n  %s", id, fields[f], a->value, b->value);
        }
    }
}

/* The n-th (from 0) result answering command `key`, with status and event_id asserted. */
static const it_msg *await_result(stack *s, const char *key, size_t nth, const char *status, const char *event_id) {
    await_msg(s->results, "idempotency_key", key, nth + 1);
    const it_msg *m = nth_msg(s->results, "idempotency_key", key, nth);
    cr_assert_str_eq(it_msg_str(m, "status") ?: "(none)", status, "answer %zu to %s: %s", nth + 1, key, m->value);
    cr_assert_str_eq(it_msg_str(m, "event_id") ?: "(none)", event_id, "answer %zu to %s: %s", nth + 1, key, m->value);
    return m;
}

static int64_t ord_int(const char *sql, const char *p1) {
    char err[IT_ERR_SIZE];
    int64_t v;
    IT_OK(it_pg_int(ORD_DB, sql, (const char *const[]){p1}, p1 ? 1 : 0, &v, err, sizeof err), err);
    return v;
}

/* An event's id is what caused it, not its outbox row's id: a command redelivered gets the same
 * event_id, and so does one replayed into a database restored from a backup, whose outbox sequence
 * then hands out again ids that events after the backup had. Here the backup is a copy of the orders
 * database taken while order-svc is stopped; after it, order C (rejected), order B, the cancel of
 * order A, and order D with its cancel (keyed by its own key, as a producer may). The restore puts the
 * copy back and replays B, A's cancel, D's cancel and then D, not C: so the outbox ids go to other
 * events than the first time, and D's cancel comes before D (answered not_found, D then CANCELLED at
 * once under an event_id of its own). Every order ends as before the disaster (D CANCELLED, nothing
 * held), and no event_id comes to name two events. */
Test(orders, event_ids_are_the_same_at_every_replay_and_after_a_restore_never_name_two_events) {
    stack s;
    const char *pid = "ev-p", *none = "ev-none";
    int64_t qty = 1;
    char a[37], b[37], c[37], d[37], id_a[160], id_b[160], id_c[160], id_cancel[160], result_b[160], id_d[160],
        id_d_cancel[160], id_d_first[160];
    stack_up(&s, "ev", false, NULL);
    restock(&s, "ev-p", 10);
    derived_order_id("ev-a", a);
    derived_order_id("ev-b", b);
    derived_order_id("ev-c", c);
    derived_order_id("ev-d", d);
    snprintf(id_a, sizeof id_a, "orders:order:%s:result:CONFIRMED", a);
    snprintf(id_d, sizeof id_d, "orders:order:%s:result:CONFIRMED", d);
    snprintf(id_d_cancel, sizeof id_d_cancel, "orders:order:%s:result:CANCELLED", d);
    snprintf(id_d_first, sizeof id_d_first, "orders:order:%s:result:CANCELLED:cancel-first", d);
    snprintf(id_b, sizeof id_b, "orders:order:%s:result:CONFIRMED", b);
    snprintf(id_c, sizeof id_c, "orders:order:%s:result:REJECTED", c);
    snprintf(id_cancel, sizeof id_cancel, "orders:order:%s:result:CANCELLED", a);
    snprintf(result_b, sizeof result_b, "order:%s:result:CONFIRMED", b);

    produce(run.orders_commands, a, place_order_cmd("ev-a", NULL, "cust-ev", 1, &pid, &qty), NULL);
    await_result(&s, "ev-a", 0, "CONFIRMED", id_a);

    /* the backup */
    it_svc_stop(s.ord, "order-svc");
    s.ord = NULL;
    pg_admin("DROP DATABASE IF EXISTS " ORD_DB "_snap");
    pg_admin("CREATE DATABASE " ORD_DB "_snap TEMPLATE " ORD_DB);
    s.ord = ord_spawn("after-backup");

    /* after it: C, B, A's cancel; then B's PlaceOrder and A's cancel redelivered */
    produce(run.orders_commands, c, place_order_cmd("ev-c", NULL, "cust-ev", 1, &none, &qty), NULL);
    await_result(&s, "ev-c", 0, "REJECTED", id_c);
    produce(run.orders_commands, b, place_order_cmd("ev-b", NULL, "cust-ev", 1, &pid, &qty), NULL);
    await_result(&s, "ev-b", 0, "CONFIRMED", id_b);
    produce(run.orders_commands, a, cancel_order_cmd("ev-a-cancel", a), NULL);
    await_result(&s, "ev-a-cancel", 0, "CANCELLED", id_cancel);
    produce(run.orders_commands, b, place_order_cmd("ev-b", NULL, "cust-ev", 1, &pid, &qty), NULL);
    await_result(&s, "ev-b", 1, "CONFIRMED", id_b);
    produce(run.orders_commands, a, cancel_order_cmd("ev-a-cancel", a), NULL);
    await_result(&s, "ev-a-cancel", 1, "CANCELLED", id_cancel);
    produce(run.orders_commands, d, place_order_cmd("ev-d", NULL, "cust-ev", 1, &pid, &qty), NULL);
    await_result(&s, "ev-d", 0, "CONFIRMED", id_d);
    produce(run.orders_commands, "ev-d-cancel", cancel_order_cmd("ev-d-cancel", d), NULL);
    await_result(&s, "ev-d-cancel", 0, "CANCELLED", id_d_cancel);
    int64_t last_id = ord_int("SELECT max(id) FROM outbox", NULL);

    /* the disaster and the restore: the copy back, the commands after the backup replayed but C; D's
     * cancel before D */
    it_svc_stop(s.ord, "order-svc");
    s.ord = NULL;
    pg_admin("DROP DATABASE " ORD_DB " WITH (FORCE)");
    pg_admin("CREATE DATABASE " ORD_DB " TEMPLATE " ORD_DB "_snap");
    pg_admin("DROP DATABASE " ORD_DB "_snap");
    produce(run.orders_commands, b, place_order_cmd("ev-b", NULL, "cust-ev", 1, &pid, &qty), NULL);
    produce(run.orders_commands, a, cancel_order_cmd("ev-a-cancel", a), NULL);
    s.ord = ord_spawn("restored");
    await_result(&s, "ev-b", 2, "CONFIRMED", id_b);
    await_result(&s, "ev-a-cancel", 2, "CANCELLED", id_cancel);
    produce(run.orders_commands, "ev-d-cancel", cancel_order_cmd("ev-d-cancel", d), NULL);
    const it_msg *m = await_msg(s.results, "idempotency_key", "ev-d-cancel", 2);
    m = nth_msg(s.results, "idempotency_key", "ev-d-cancel", 1);
    cr_assert(same_str(it_msg_str(m, "reason"), "not_found"), "D's cancel, replayed before D: %s", m->value);
    produce(run.orders_commands, d, place_order_cmd("ev-d", NULL, "cust-ev", 1, &pid, &qty), NULL);
    await_result(&s, "ev-d", 1, "CANCELLED", id_d_first);
    cr_assert_str_eq(db_order("ev-d", d, sizeof d), "CANCELLED", "order D after the restore");
    /* (the proof bites: B's result sits in an outbox row whose id an event after the backup had) */
    cr_assert_leq(ord_int("SELECT id FROM outbox WHERE dedup_key = $1", result_b), last_id,
                  "the restored outbox sequence did not hand out an id again: the test proves nothing");

    it_catch_up(s.results);
    it_catch_up(s.events);
    assert_one_event_per_id(s.results);
    assert_one_event_per_id(s.events);
    it_assert_stock(INV_DB, "ev-p", 10 - 1); /* B's unit; A's and D's given back */
    stack_down(&s);
}

/* A CancelOrder that comes before its order's PlaceOrder (keyed by its own key, on another partition,
 * or replayed first after a restore) is answered not_found and remembered; the PlaceOrder that follows
 * ends the order CANCELLED at once, reserves nothing, and its result answers the PlaceOrder under an
 * event_id of its own (':cancel-first'). Each sent again gets its one answer again and changes
 * nothing. Through the gateway likewise (a POST whose order was cancelled first gets 409 cancelled),
 * which keys both commands by the order id. */
Test(orders, cancel_applied_before_its_place_order_leaves_the_order_cancelled_and_the_stock_untouched) {
    stack s;
    const char *pid = "cb-p";
    int64_t qty = 3;
    char oid[37], status[32], history[256], path[128], khdr[160], err[IT_ERR_SIZE];
    int64_t holds = -1;
    stack_up(&s, "cb", true, NULL);
    restock(&s, "cb-p", 10);
    it_collector_t *cmds = it_collect(run.orders_commands, VT_FROM_END, NULL);

    produce(run.orders_commands, "cb-cancel-1", cancel_order_cmd("cb-cancel-1", "cb-order-1"), "cb-cid-1");
    const it_msg *m = await_result(&s, "cb-cancel-1", 0, "REJECTED", "orders:cancel:cb-cancel-1");
    cr_assert_str_eq(it_msg_str(m, "reason") ?: "(none)", "not_found", "%s", m->value);
    produce(run.orders_commands, "cb-order-1", place_order_cmd("cb-place-1", "cb-order-1", "cust-cb", 1, &pid, &qty),
            "cb-cid-2");
    m = await_result(&s, "cb-place-1", 0, "CANCELLED", "orders:order:cb-order-1:result:CANCELLED:cancel-first");
    cr_assert_str_eq(it_msg_str(m, "reason") ?: "(none)", "cancelled", "%s", m->value);
    cr_assert_str_eq(it_msg_str(m, "order_id") ?: "(none)", "cb-order-1", "%s", m->value);
    const char *cid = it_msg_header_get(m, "correlation-id", NULL);
    cr_assert(cid && strcmp(cid, "cb-cid-2") == 0, "correlation-id %s, want the PlaceOrder's", cid ? cid : "(none)");
    api_order("cb-order-1", status, sizeof status, history, sizeof history);
    cr_assert_str_eq(status, "CANCELLED");
    cr_assert_str_eq(history, "PENDING>CANCELLED", "history of cb-order-1");

    /* both again, and another cancel: the same answers, each under its own key; nothing changes */
    produce(run.orders_commands, "cb-cancel-1", cancel_order_cmd("cb-cancel-1", "cb-order-1"), NULL);
    produce(run.orders_commands, "cb-order-1", place_order_cmd("cb-place-1", "cb-order-1", "cust-cb", 1, &pid, &qty),
            NULL);
    produce(run.orders_commands, "cb-order-1", cancel_order_cmd("cb-cancel-2", "cb-order-1"), NULL);
    await_result(&s, "cb-cancel-1", 1, "REJECTED", "orders:cancel:cb-cancel-1");
    await_result(&s, "cb-place-1", 1, "CANCELLED", "orders:order:cb-order-1:result:CANCELLED:cancel-first");
    await_result(&s, "cb-cancel-2", 0, "CANCELLED", "orders:cancel:cb-cancel-2");
    cr_assert_eq(pg_count(SQL_HISTORY_COUNT, "cb-order-1", "CANCELLED"), 1, "CANCELLED rows in the history");
    cr_assert_eq(pg_count(SQL_INVENTORY_COMMANDS, "cb-order-1", NULL), 0, "commands to inventory about cb-order-1");

    /* the gateway: the cancel route for the order a key gives, before that key is POSTed */
    derived_order_id("cb-key-2", oid);
    snprintf(path, sizeof path, "/orders/%s/cancel", oid);
    key_header(khdr, sizeof khdr, "cb-cancel-3");
    vt_http_resp r = http(GW_ADDR, "POST", path, (const char *const[]){khdr, NULL}, NULL, 0);
    cr_assert_eq(r.status, 202, "POST %s: %d %s", path, r.status, r.body);
    vt_http_resp_clear(&r);
    await_result(&s, "cb-cancel-3", 0, "REJECTED", "orders:cancel:cb-cancel-3");
    char *body = order_body1("cust-cb", "cb-p", 2);
    r = post_order(GW_ADDR, "cb-key-2", body);
    free(body);
    cr_assert_eq(r.status, 409, "POST /orders of an order cancelled first: %d %s", r.status, r.body);
    cr_assert(same_str(jstr(jget(r.json, "order"), "status"), "CANCELLED") &&
                  same_str(jstr(r.json, "reason"), "cancelled"),
              "409 body: %s", r.body);
    assert_order_headers(&r, oid, "cb-key-2");
    vt_http_resp_clear(&r);
    snprintf(path, sizeof path, "orders:order:%s:result:CANCELLED:cancel-first", oid);
    await_result(&s, "cb-key-2", 0, "CANCELLED", path);

    /* nothing reserved, nothing held, no event about either order */
    it_assert_stock(INV_DB, "cb-p", 10);
    assert_api_stock("cb-p", 10);
    IT_OK(it_pg_int(INV_DB, "SELECT count(*) FROM holds WHERE order_id = ANY ($1::text[])",
                    (const char *const[]){"{cb-order-1}"}, 1, &holds, err, sizeof err),
          err);
    cr_assert_eq(holds, 0, "cb-order-1 holds stock");
    it_catch_up(s.events);
    cr_assert_eq(it_collector_count_str(s.events, "order_id", "cb-order-1") +
                     it_collector_count_str(s.events, "order_id", oid),
                 0, "inventory events about orders cancelled before they came");

    /* the gateway keyed both of its commands by the order id: one partition, the cancel first */
    it_catch_up(cmds);
    const char *keys[] = {"cb-cancel-3", "cb-key-2"};
    for (size_t i = 0; i < 2; i++) {
        const it_msg *cm = it_collector_find_str(cmds, "idempotency_key", keys[i]);
        cr_assert(cm, "the gateway's command %s is not on %s", keys[i], run.orders_commands);
        cr_assert(cm->key && strcmp(cm->key, oid) == 0, "command %s keyed %s, want the order id %s", keys[i],
                  cm->key ? cm->key : "(none)", oid);
    }
    it_collector_free(cmds);
    stack_down(&s);
}

Test(orders_zz, every_result_and_inventory_event_of_the_run_is_recorded_for_the_schema_check) {
    record_topic(run.orders_results, RESULTS_LABEL, (const char *const[]){"OrderResult", NULL});
    record_topic(run.inventory_events, EVENTS_LABEL,
                 (const char *const[]){"StockReserved", "StockRejected", "StockReleased", "Restocked", NULL});
}

Test(orders_zz, no_command_of_the_run_was_dead_lettered) {
    const char *dlqs[] = {run.orders_dlq, run.inventory_dlq};
    for (size_t d = 0; d < 2; d++) {
        it_collector_t *c = it_collect(dlqs[d], VT_FROM_BEGINNING, NULL);
        it_catch_up(c);
        cr_assert_eq(it_collector_count(c), 0, "%s holds %zu messages, the first: %.300s", dlqs[d],
                     it_collector_count(c), it_collector_count(c) ? it_collector_at(c, 0)->value : "");
        it_collector_free(c);
    }
}

int main(int argc, char **argv) {
    static const char *const databases[] = {INV_DB, ORD_DB, NULL};
    return it_main(argc, argv, databases);
}
