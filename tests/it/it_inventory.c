/* it_inventory.c - inventory-svc against the real broker and PostgreSQL.
 *
 * Each test spawns its own inventory-svc on the run's topics and database
 * and uses products, orders and idempotency keys named after a short tag of
 * its own, so tests never see each other's stock. Suite `inventory_replay`
 * sorts after `inventory`: it replays every command the other tests sent. */
#include "harness.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define INV_DB "inventory_it"
#define INV_EXE "build/inventory-svc"
#define INV_ADDR "127.0.0.1:18082"
#define INV_ADDR2 "127.0.0.1:18083"
#define INV_EVENTS_LABEL "inventory.events" /* topic name in messages.jsonl */
#define LOAD_WAIT_MS 600000                 /* thousands of commands */

#define SQL_NEGATIVE_STOCK "SELECT count(*) FROM products WHERE stock < 0"
#define SQL_ALL_STOCK "SELECT id, stock FROM products ORDER BY id"

static it_names run; /* this run's topics and group */

static void inv_init(void) { it_names_init(&run); }

TestSuite(inventory, .init = inv_init, .fini = it_test_fini);
TestSuite(inventory_replay, .init = inv_init, .fini = it_test_fini);

/* ---- the service -------------------------------------------------------- */

/* Starts inventory-svc on the run's topics, group and database with
 * VX_CRASH_POINTS=crash_points (NULL: none) and the extra "NAME=value"
 * settings of `extra` (NULL-terminated, may be NULL), and, when `ready`,
 * waits until /ready answers 200 (a crash point may end it before that). */
static it_proc_t *inv_spawn_with(const char *addr, const char *crash_points,
                                 const char *const *extra, bool ready) {
    it_test_begin(); /* here, not in .init: a broken setup is a failure, not a crash */
    char err[IT_ERR_SIZE], db[256], log_name[256];
    char e_bootstrap[300], e_db[300], e_http[300], e_group[300], e_cmd[300],
        e_ev[300], e_dlq[300], e_crash[300];
    it_pg_url(db, sizeof db, INV_DB);
    snprintf(e_bootstrap, sizeof e_bootstrap, "KAFKA_BOOTSTRAP_SERVERS=%s",
             IT_KAFKA_BOOTSTRAP);
    snprintf(e_db, sizeof e_db, "INVENTORY_DB=%s", db);
    snprintf(e_http, sizeof e_http, "INVENTORY_HTTP_ADDR=%s", addr);
    snprintf(e_group, sizeof e_group, "INVENTORY_GROUP_ID=%s", run.inventory_group);
    snprintf(e_cmd, sizeof e_cmd, "INVENTORY_COMMANDS_TOPIC=%s", run.inventory_commands);
    snprintf(e_ev, sizeof e_ev, "INVENTORY_EVENTS_TOPIC=%s", run.inventory_events);
    snprintf(e_dlq, sizeof e_dlq, "INVENTORY_DLQ_TOPIC=%s", run.inventory_dlq);
    snprintf(e_crash, sizeof e_crash, "VX_CRASH_POINTS=%s",
             crash_points ? crash_points : "");
    /* VX_CRASH_POINTS and the gremlin are always set, so none leaks in from
     * the caller's shell; `extra` goes first, and the first of a name wins. A
     * crashing instance leaves the group without saying so: a short session
     * lets the coordinator forget it before the next instance has to wait. */
    const char *base[] = {e_bootstrap, e_db, e_http, e_group, e_cmd, e_ev, e_dlq, e_crash,
                          "VX_GREMLIN_DELAY_MS=0", "KAFKA_CONSUMER_SESSION_TIMEOUT_MS=6000"};
    const char *env[32];
    size_t n = 0;
    for (; extra && *extra; extra++) {
        cr_assert(n < 16, "too many settings");
        env[n++] = *extra;
    }
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) env[n++] = base[i];
    env[n] = NULL;
    snprintf(log_name, sizeof log_name, "%s.inventory-svc.%s",
             criterion_current_test->name, strrchr(addr, ':') + 1);
    it_proc_t *p = NULL;
    int64_t deadline = vt_mono_ms() + IT_WAIT_MS; /* a previous instance may be closing */
    while (vt_http_port_in_use(addr) && vt_mono_ms() < deadline) usleep(100000);
    cr_assert(!vt_http_port_in_use(addr), "%s is taken by another process: is a second run of "
              "this suite going on?", addr);
    IT_OK(it_proc_spawn(&p, log_name, INV_EXE, env, err, sizeof err), err);
    if (ready) IT_OK(it_proc_wait_http(p, addr, "/ready", IT_WAIT_MS, err, sizeof err), err);
    return p;
}

static it_proc_t *inv_spawn(const char *addr, const char *crash_points) {
    return inv_spawn_with(addr, crash_points, NULL, true);
}

static it_collector_t *collect_events(vt_from_t from) {
    return it_collect(run.inventory_events, from, INV_EVENTS_LABEL);
}

/* ---- commands ------------------------------------------------------------ */

static char *cmd_restock(const char *ikey, const char *product, int64_t qty,
                         const char *name) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string("Restock"));
    json_object_object_add(o, "idempotency_key", json_object_new_string(ikey));
    json_object_object_add(o, "product_id", json_object_new_string(product));
    json_object_object_add(o, "quantity", json_object_new_int64(qty));
    json_object_object_add(o, "name", json_object_new_string(name));
    return it_json_take(o);
}

static char *cmd_reserve(const char *ikey, const char *order, size_t n,
                         const char *const products[], const int64_t qtys[]) {
    json_object *o = json_object_new_object(), *items = json_object_new_array();
    json_object_object_add(o, "type", json_object_new_string("ReserveStock"));
    json_object_object_add(o, "idempotency_key", json_object_new_string(ikey));
    json_object_object_add(o, "order_id", json_object_new_string(order));
    for (size_t i = 0; i < n; i++) {
        json_object *line = json_object_new_object();
        json_object_object_add(line, "product_id", json_object_new_string(products[i]));
        json_object_object_add(line, "quantity", json_object_new_int64(qtys[i]));
        json_object_array_add(items, line);
    }
    json_object_object_add(o, "items", items);
    return it_json_take(o);
}

static char *cmd_reserve1(const char *ikey, const char *order, const char *product,
                          int64_t qty) {
    return cmd_reserve(ikey, order, 1, &product, &qty);
}

static char *cmd_release(const char *ikey, const char *order) {
    return it_order_cmd("ReleaseStock", ikey, order);
}

/* Produces one command (key NULL: none) and frees `json`. */
static void send_cmd(const char *key, char *json) {
    char err[IT_ERR_SIZE];
    IT_OK(it_produce_one(run.inventory_commands, key, json, NULL, 0, err, sizeof err), err);
    free(json);
}

/* A string field of an event, "(absent)" when it has none: safe to compare. */
static const char *field(const it_msg *m, const char *name) {
    const char *s = it_msg_str(m, name);
    return s ? s : "(absent)";
}

/* Waits for the event answering idempotency key `ikey`; borrowed result. */
static const it_msg *await_event(it_collector_t *ev, const char *ikey) {
    char err[IT_ERR_SIZE];
    IT_OK(it_collector_wait_str(ev, "idempotency_key", ikey, 1, IT_WAIT_MS, err,
                                sizeof err),
          err);
    return it_collector_find_str(ev, "idempotency_key", ikey);
}

static void restock_and_wait(it_collector_t *ev, const char *ikey,
                             const char *product, int64_t qty) {
    char name[128];
    snprintf(name, sizeof name, "Product %s", product);
    send_cmd(product, cmd_restock(ikey, product, qty, name));
    const it_msg *m = await_event(ev, ikey);
    cr_assert_str_eq(field(m, "type"), "Restocked", "restock %s answered with %s",
                     ikey, m->value);
}

/* Sum of the quantities of an event's item lines for `product`. */
static int64_t items_qty(const it_msg *m, const char *product) {
    json_object *items, *v;
    int64_t sum = 0;
    if (!m->json || !json_object_object_get_ex(m->json, "items", &items) ||
        !json_object_is_type(items, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(items); i++) {
        json_object *line = json_object_array_get_idx(items, i);
        if (json_object_object_get_ex(line, "product_id", &v) &&
            strcmp(json_object_get_string(v), product) == 0 &&
            json_object_object_get_ex(line, "quantity", &v))
            sum += json_object_get_int64(v);
    }
    return sum;
}

static size_t items_len(const it_msg *m) {
    json_object *items;
    cr_assert(m->json && json_object_object_get_ex(m->json, "items", &items) &&
                  json_object_is_type(items, json_type_array),
              "event without an items array: %s", m->value);
    return json_object_array_length(items);
}

/* Fields every event carries. The event_id is "inventory:" and the key of the command answered:
 * the same at every replay, whatever the outbox row's id (a restored database reuses those). */
static void assert_envelope(const it_msg *m, const char *type, const char *ikey) {
    char want_id[256];
    cr_assert(m->json != NULL, "event is not JSON: %s", m->value ? m->value : "(null)");
    cr_assert_str_eq(field(m, "type"), type,
                     "event type: %s", m->value);
    cr_assert_str_eq(field(m, "idempotency_key"), ikey, "%s", m->value);
    snprintf(want_id, sizeof want_id, "inventory:%s", ikey);
    cr_assert(it_msg_str(m, "event_id") && strcmp(it_msg_str(m, "event_id"), want_id) == 0,
              "event_id is not %s: %s", want_id, m->value);
    cr_assert(it_msg_str(m, "occurred_at") && *it_msg_str(m, "occurred_at"),
              "no occurred_at: %s", m->value);
    items_len(m);
}

static void assert_key(const it_msg *m, const char *key) {
    cr_assert(m->key != NULL, "event %s has no Kafka key, want %s", m->value, key);
    cr_assert_str_eq(m->key, key, "Kafka key of event %s", m->value);
}

/* Every event for `ikey` has the same bytes; returns how many there are. */
static size_t assert_identical_events(const it_collector_t *ev, const char *ikey) {
    const it_msg *first = NULL;
    size_t n = 0;
    for (size_t i = 0; i < it_collector_count(ev); i++) {
        const it_msg *m = it_collector_at(ev, i);
        const char *k = it_msg_str(m, "idempotency_key");
        if (!k || strcmp(k, ikey) != 0) continue;
        n++;
        if (!first) {
            first = m;
            continue;
        }
        cr_assert(m->value_len == first->value_len &&
                      memcmp(m->value, first->value, m->value_len) == 0,
                  "events for %s differ:\n  %s\n  %s", ikey, first->value, m->value);
        cr_assert(m->key_len == first->key_len &&
                      (!m->key || memcmp(m->key, first->key, m->key_len) == 0),
                  "events for %s have different keys", ikey);
    }
    return n;
}

/* ---- random command streams (load and broker restart) ---------------------- */

typedef struct gen_cmd {
    char key[96];
    char ikey[96];
    char *json;
} gen_cmd;

typedef struct gen {
    gen_cmd *cmds;
    size_t n;
    char **products;
    size_t n_products;
} gen;

static uint64_t rng_below(uint64_t *s, uint64_t n) { return vt_rand64(s) % n; }

/* n_products products <tag>-pNN seeded by one Restock each (the first
 * n_products commands), then n random commands: reserves big enough to be
 * rejected at times, releases of earlier orders (some twice, some of orders
 * that never were), restocks. Reserves and releases are keyed by order. */
static void gen_make(gen *g, const char *tag, size_t n_products, size_t n,
                     int64_t seed_stock, uint64_t seed) {
    uint64_t s = seed;
    char name[128];
    size_t n_orders = 0;
    g->n_products = n_products;
    g->products = calloc(n_products, sizeof *g->products);
    g->cmds = calloc(n_products + n, sizeof *g->cmds);
    char **orders = calloc(n, sizeof *orders);
    cr_assert(g->products && g->cmds && orders, "out of memory");
    for (size_t i = 0; i < n_products; i++) {
        gen_cmd *c = &g->cmds[g->n++];
        cr_assert(asprintf(&g->products[i], "%s-p%02zu", tag, i) > 0);
        snprintf(c->key, sizeof c->key, "%s", g->products[i]);
        snprintf(c->ikey, sizeof c->ikey, "%s-seed%02zu", tag, i);
        snprintf(name, sizeof name, "Seeded %s", g->products[i]);
        c->json = cmd_restock(c->ikey, g->products[i], seed_stock, name);
    }
    for (size_t i = 0; i < n; i++) {
        gen_cmd *c = &g->cmds[g->n++];
        snprintf(c->ikey, sizeof c->ikey, "%s-c%05zu", tag, i);
        uint64_t r = rng_below(&s, 100);
        if (r < 55 || n_orders == 0) {
            size_t lines = 1 + rng_below(&s, 3);
            const char *pids[3];
            int64_t qtys[3];
            for (size_t l = 0; l < lines; l++) {
                pids[l] = g->products[rng_below(&s, n_products)];
                qtys[l] = 1 + (int64_t)rng_below(&s, 25);
            }
            snprintf(c->key, sizeof c->key, "%s-o%05zu", tag, i);
            orders[n_orders++] = strdup(c->key);
            c->json = cmd_reserve(c->ikey, c->key, lines, pids, qtys);
        } else if (r < 80) {
            if (rng_below(&s, 10) == 0)
                snprintf(c->key, sizeof c->key, "%s-ghost%05zu", tag, i);
            else /* random earlier orders: some get released twice or more */
                snprintf(c->key, sizeof c->key, "%s", orders[rng_below(&s, n_orders)]);
            c->json = cmd_release(c->ikey, c->key);
        } else {
            size_t p = rng_below(&s, n_products);
            snprintf(c->key, sizeof c->key, "%s", g->products[p]);
            snprintf(name, sizeof name, "Seeded %s", g->products[p]);
            c->json = cmd_restock(c->ikey, g->products[p], 1 + (int64_t)rng_below(&s, 20),
                                  name);
        }
    }
    for (size_t i = 0; i < n_orders; i++) free(orders[i]);
    free(orders);
}

static void gen_free(gen *g) {
    for (size_t i = 0; i < g->n; i++) free(g->cmds[i].json);
    for (size_t i = 0; i < g->n_products; i++) free(g->products[i]);
    free(g->cmds);
    free(g->products);
}

/* Waits until every key in a sorted list has an event (incremental scan). */
typedef struct key_wait {
    char **keys; /* sorted */
    bool *seen;
    size_t n, n_seen, cursor;
} key_wait;

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool all_keys_seen(const it_collector_t *c, void *arg) {
    key_wait *w = arg;
    for (; w->cursor < it_collector_count(c); w->cursor++) {
        const char *k = it_msg_str(it_collector_at(c, w->cursor), "idempotency_key");
        if (!k) continue;
        char **hit = bsearch(&k, w->keys, w->n, sizeof *w->keys, cmp_str);
        if (hit && !w->seen[hit - w->keys]) {
            w->seen[hit - w->keys] = true;
            w->n_seen++;
        }
    }
    return w->n_seen == w->n;
}

static void await_all(it_collector_t *ev, const gen *g, size_t from, size_t to) {
    char err[IT_ERR_SIZE], what[128];
    key_wait w = {calloc(to - from, sizeof(char *)), calloc(to - from, sizeof(bool)),
                  to - from, 0, 0};
    cr_assert(w.keys && w.seen, "out of memory");
    for (size_t i = from; i < to; i++) w.keys[i - from] = (char *)g->cmds[i].ikey;
    qsort(w.keys, w.n, sizeof *w.keys, cmp_str);
    snprintf(what, sizeof what, "events for all %zu commands", w.n);
    int rc = it_collector_wait(ev, all_keys_seen, &w, what, LOAD_WAIT_MS, err, sizeof err);
    size_t seen = w.n_seen;
    free(w.keys);
    free(w.seen);
    cr_assert(rc == 0, "%s (%zu of %zu seen)", err, seen, to - from);
}

static int cmp_msg_ikey(const void *a, const void *b) {
    const it_msg *ma = *(const it_msg *const *)a, *mb = *(const it_msg *const *)b;
    return strcmp(it_msg_str(ma, "idempotency_key"), it_msg_str(mb, "idempotency_key"));
}

/* For every product of g: database stock == Σ Restocked − Σ StockReserved +
 * Σ StockReleased over one event per idempotency key, where every key of the
 * stream answered with exactly one distinct payload; and no stock anywhere is
 * negative. Returns how many reserves were rejected. */
static size_t assert_stock_math(const it_collector_t *ev, const gen *g) {
    char err[IT_ERR_SIZE];
    size_t n_ev = it_collector_count(ev), n_keyed = 0, rejected = 0;
    const it_msg **byk = calloc(n_ev ? n_ev : 1, sizeof *byk);
    int64_t *expect = calloc(g->n_products, sizeof *expect);
    cr_assert(byk && expect, "out of memory");
    for (size_t i = 0; i < n_ev; i++) {
        const it_msg *m = it_collector_at(ev, i);
        cr_assert(m->json != NULL, "event is not JSON: %s", m->value ? m->value : "(null)");
        cr_assert(it_msg_str(m, "idempotency_key"), "event without key: %s", m->value);
        byk[n_keyed++] = m;
    }
    qsort(byk, n_keyed, sizeof *byk, cmp_msg_ikey);
    for (size_t i = 0; i < n_keyed; i++) {
        const it_msg *m = byk[i];
        if (i > 0 && cmp_msg_ikey(&byk[i - 1], &byk[i]) == 0) {
            cr_assert(m->value_len == byk[i - 1]->value_len &&
                          memcmp(m->value, byk[i - 1]->value, m->value_len) == 0,
                      "one idempotency key, two payloads:\n  %s\n  %s",
                      byk[i - 1]->value, m->value);
            continue; /* a redelivery: counted once */
        }
        const char *type = it_msg_str(m, "type");
        cr_assert(type, "event without type: %s", m->value);
        int sign = strcmp(type, "Restocked") == 0       ? 1
                   : strcmp(type, "StockReserved") == 0 ? -1
                   : strcmp(type, "StockReleased") == 0 ? 1
                                                        : 0;
        if (strcmp(type, "StockRejected") == 0) rejected++;
        for (size_t p = 0; sign && p < g->n_products; p++)
            expect[p] += sign * items_qty(m, g->products[p]);
    }
    for (size_t p = 0; p < g->n_products; p++)
        it_assert_stock(INV_DB, g->products[p], expect[p]);
    int64_t negative;
    IT_OK(it_pg_int(INV_DB, SQL_NEGATIVE_STOCK, NULL, 0, &negative, err, sizeof err),
          err);
    cr_assert_eq(negative, 0, "%" PRId64 " products have negative stock", negative);
    free(byk);
    free(expect);
    return rejected;
}

static void produce_all(const gen *g, size_t from, size_t to) {
    char err[IT_ERR_SIZE];
    it_producer_t *p = NULL;
    IT_OK(it_producer_new(&p, NULL, err, sizeof err), err);
    for (size_t i = from; i < to; i++) {
        const gen_cmd *c = &g->cmds[i];
        IT_OK(it_produce(p, run.inventory_commands, c->key, strlen(c->key), c->json,
                         strlen(c->json), NULL, 0, err, sizeof err),
              err);
    }
    IT_OK(it_producer_flush(p, 300000, err, sizeof err), err);
    it_producer_free(p);
}

/* ---- tests ----------------------------------------------------------------- */

Test(inventory, reserve_produced_with_kcat_lowers_stock_and_emits_event) {
    char err[IT_ERR_SIZE];
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);

    send_cmd("kcat-p1", cmd_restock("kcat-restock-1", "kcat-p1", 10, "Kcat widget"));
    const it_msg *m = await_event(ev, "kcat-restock-1");
    assert_envelope(m, "Restocked", "kcat-restock-1");
    assert_key(m, "kcat-p1");
    cr_assert_str_eq(field(m, "product_id"), "kcat-p1");
    cr_assert_str_eq(field(m, "name"), "Kcat widget");
    cr_assert_eq(it_msg_int(m, "quantity", -1), 10, "%s", m->value);
    cr_assert_eq(it_msg_int(m, "stock", -1), 10, "%s", m->value);
    cr_assert_eq(items_len(m), 1, "%s", m->value);
    cr_assert_eq(items_qty(m, "kcat-p1"), 10, "%s", m->value);
    it_assert_stock(INV_DB, "kcat-p1", 10);

    char *cmd = cmd_reserve1("kcat-reserve-1", "kcat-o1", "kcat-p1", 3);
    IT_OK(it_kcat_produce(run.inventory_commands, "kcat-o1", cmd, NULL, err, sizeof err), err);
    free(cmd);
    m = await_event(ev, "kcat-reserve-1");
    assert_envelope(m, "StockReserved", "kcat-reserve-1");
    assert_key(m, "kcat-o1");
    cr_assert_str_eq(field(m, "order_id"), "kcat-o1");
    cr_assert_eq(items_len(m), 1, "%s", m->value);
    cr_assert_eq(items_qty(m, "kcat-p1"), 3, "%s", m->value);
    it_assert_stock(INV_DB, "kcat-p1", 7);

    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

Test(inventory, event_carries_correlation_id_header_and_command_key) {
    char err[IT_ERR_SIZE], corr[128];
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "corr-restock-1", "corr-p1", 5);

    snprintf(corr, sizeof corr, "corr-%s-1", it_run_id());
    it_header h[] = {{"correlation-id", corr, strlen(corr)}};
    char *cmd = cmd_reserve1("corr-reserve-1", "corr-o1", "corr-p1", 1);
    IT_OK(it_produce_one(run.inventory_commands, "corr-o1", cmd, h, 1, err, sizeof err), err);
    free(cmd);
    const it_msg *m = await_event(ev, "corr-reserve-1");
    assert_envelope(m, "StockReserved", "corr-reserve-1");
    assert_key(m, "corr-o1");
    size_t size;
    const char *got = it_msg_header_get(m, "correlation-id", &size);
    cr_assert(got != NULL, "event for corr-reserve-1 has no correlation-id header");
    cr_assert(size == strlen(corr) && memcmp(got, corr, size) == 0,
              "correlation-id: sent %s, event has %.*s", corr, (int)size, got);

    /* No Kafka key on the command: the event is keyed by its idempotency key. */
    cmd = cmd_reserve1("corr-reserve-2", "corr-o2", "corr-p1", 1);
    IT_OK(it_produce_one(run.inventory_commands, NULL, cmd, NULL, 0, err, sizeof err), err);
    free(cmd);
    m = await_event(ev, "corr-reserve-2");
    assert_envelope(m, "StockReserved", "corr-reserve-2");
    assert_key(m, "corr-reserve-2");
    it_assert_stock(INV_DB, "corr-p1", 3);

    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

Test(inventory, same_command_produced_ten_times_applies_once_with_identical_events) {
    char err[IT_ERR_SIZE];
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "dup-restock-1", "dup-p1", 100);

    char *cmd = cmd_reserve1("dup-reserve-1", "dup-o1", "dup-p1", 7);
    it_producer_t *p = NULL;
    IT_OK(it_producer_new(&p, NULL, err, sizeof err), err);
    for (int i = 0; i < 10; i++)
        IT_OK(it_produce(p, run.inventory_commands, "dup-o1", 6, cmd, strlen(cmd), NULL, 0, err,
                         sizeof err),
              err);
    IT_OK(it_producer_flush(p, 60000, err, sizeof err), err);
    it_producer_free(p);
    free(cmd);

    IT_OK(it_collector_wait_str(ev, "idempotency_key", "dup-reserve-1", 10, IT_WAIT_MS,
                                err, sizeof err),
          err);
    it_catch_up(ev);
    size_t n = assert_identical_events(ev, "dup-reserve-1");
    cr_assert_geq(n, 10, "%zu events for 10 deliveries", n);
    assert_envelope(it_collector_find_str(ev, "idempotency_key", "dup-reserve-1"),
                    "StockReserved", "dup-reserve-1");
    it_assert_stock(INV_DB, "dup-p1", 93);

    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

Test(inventory, reserve_beyond_stock_is_rejected_and_reserves_no_line) {
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "short-restock-1", "short-p1", 5);
    restock_and_wait(ev, "short-restock-2", "short-p2", 50);

    send_cmd("short-o1", cmd_reserve1("short-reserve-1", "short-o1", "short-p1", 6));
    const it_msg *m = await_event(ev, "short-reserve-1");
    assert_envelope(m, "StockRejected", "short-reserve-1");
    assert_key(m, "short-o1");
    cr_assert_str_eq(field(m, "order_id"), "short-o1");
    cr_assert_str_eq(field(m, "reason"), "insufficient_stock", "%s", m->value);
    cr_assert_str_eq(field(m, "product_id"), "short-p1", "%s", m->value);
    cr_assert_eq(it_msg_int(m, "requested", -1), 6, "%s", m->value);
    cr_assert_eq(it_msg_int(m, "available", -1), 5, "%s", m->value);
    it_assert_stock(INV_DB, "short-p1", 5);

    /* The short line second, then first: either way no line is reserved. */
    const char *lines_a[] = {"short-p2", "short-p1"};
    const int64_t qty_a[] = {10, 6};
    send_cmd("short-o2", cmd_reserve("short-reserve-2", "short-o2", 2, lines_a, qty_a));
    m = await_event(ev, "short-reserve-2");
    assert_envelope(m, "StockRejected", "short-reserve-2");
    cr_assert_str_eq(field(m, "reason"), "insufficient_stock", "%s", m->value);
    cr_assert_str_eq(field(m, "product_id"), "short-p1", "%s", m->value);

    const char *lines_b[] = {"short-p1", "short-p2"};
    const int64_t qty_b[] = {2, 51};
    send_cmd("short-o3", cmd_reserve("short-reserve-3", "short-o3", 2, lines_b, qty_b));
    m = await_event(ev, "short-reserve-3");
    assert_envelope(m, "StockRejected", "short-reserve-3");
    cr_assert_str_eq(field(m, "reason"), "insufficient_stock", "%s", m->value);
    cr_assert_str_eq(field(m, "product_id"), "short-p2", "%s", m->value);
    cr_assert_eq(it_msg_int(m, "requested", -1), 51, "%s", m->value);
    cr_assert_eq(it_msg_int(m, "available", -1), 50, "%s", m->value);

    it_assert_stock(INV_DB, "short-p1", 5);
    it_assert_stock(INV_DB, "short-p2", 50);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

Test(inventory, reserve_of_unknown_product_is_rejected) {
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "unk-restock-1", "unk-p1", 8);

    send_cmd("unk-o1", cmd_reserve1("unk-reserve-1", "unk-o1", "unk-nosuch", 1));
    const it_msg *m = await_event(ev, "unk-reserve-1");
    assert_envelope(m, "StockRejected", "unk-reserve-1");
    cr_assert_str_eq(field(m, "reason"), "unknown_product", "%s", m->value);
    cr_assert_str_eq(field(m, "product_id"), "unk-nosuch", "%s", m->value);
    cr_assert_str_eq(field(m, "order_id"), "unk-o1", "%s", m->value);

    const char *lines[] = {"unk-p1", "unk-nosuch"};
    const int64_t qtys[] = {3, 1};
    send_cmd("unk-o2", cmd_reserve("unk-reserve-2", "unk-o2", 2, lines, qtys));
    m = await_event(ev, "unk-reserve-2");
    assert_envelope(m, "StockRejected", "unk-reserve-2");
    cr_assert_str_eq(field(m, "reason"), "unknown_product", "%s", m->value);
    cr_assert_str_eq(field(m, "product_id"), "unk-nosuch", "%s", m->value);

    it_assert_stock(INV_DB, "unk-p1", 8);
    it_assert_stock(INV_DB, "unk-nosuch", -1);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

Test(inventory, release_gives_back_the_reservation_once) {
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "rel-restock-1", "rel-p1", 20);
    restock_and_wait(ev, "rel-restock-2", "rel-p2", 10);

    const char *lines[] = {"rel-p1", "rel-p2"};
    const int64_t qtys[] = {5, 3};
    send_cmd("rel-o1", cmd_reserve("rel-reserve-1", "rel-o1", 2, lines, qtys));
    assert_envelope(await_event(ev, "rel-reserve-1"), "StockReserved", "rel-reserve-1");
    it_assert_stock(INV_DB, "rel-p1", 15);
    it_assert_stock(INV_DB, "rel-p2", 7);

    send_cmd("rel-o1", cmd_release("rel-release-1", "rel-o1"));
    const it_msg *m = await_event(ev, "rel-release-1");
    assert_envelope(m, "StockReleased", "rel-release-1");
    assert_key(m, "rel-o1");
    cr_assert_str_eq(field(m, "order_id"), "rel-o1");
    cr_assert_eq(items_qty(m, "rel-p1"), 5, "%s", m->value);
    cr_assert_eq(items_qty(m, "rel-p2"), 3, "%s", m->value);
    it_assert_stock(INV_DB, "rel-p1", 20);
    it_assert_stock(INV_DB, "rel-p2", 10);

    /* Released already: a new release command gives back nothing. */
    send_cmd("rel-o1", cmd_release("rel-release-2", "rel-o1"));
    m = await_event(ev, "rel-release-2");
    assert_envelope(m, "StockReleased", "rel-release-2");
    cr_assert_eq(items_len(m), 0, "second release gave back: %s", m->value);

    /* Never reserved, and rejected (so nothing reserved): nothing to give. */
    send_cmd("rel-o9", cmd_release("rel-release-3", "rel-o9"));
    m = await_event(ev, "rel-release-3");
    assert_envelope(m, "StockReleased", "rel-release-3");
    cr_assert_eq(items_len(m), 0, "release of unknown order gave back: %s", m->value);

    send_cmd("rel-o2", cmd_reserve1("rel-reserve-2", "rel-o2", "rel-p2", 11));
    assert_envelope(await_event(ev, "rel-reserve-2"), "StockRejected", "rel-reserve-2");
    send_cmd("rel-o2", cmd_release("rel-release-4", "rel-o2"));
    m = await_event(ev, "rel-release-4");
    assert_envelope(m, "StockReleased", "rel-release-4");
    cr_assert_eq(items_len(m), 0, "release of a rejected order gave back: %s", m->value);

    it_assert_stock(INV_DB, "rel-p1", 20);
    it_assert_stock(INV_DB, "rel-p2", 10);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

Test(inventory, product_listed_twice_reserves_the_sum) {
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "twice-restock-1", "twice-p1", 10);

    const char *lines[] = {"twice-p1", "twice-p1"};
    const int64_t qtys[] = {2, 3};
    send_cmd("twice-o1", cmd_reserve("twice-reserve-1", "twice-o1", 2, lines, qtys));
    const it_msg *m = await_event(ev, "twice-reserve-1");
    assert_envelope(m, "StockReserved", "twice-reserve-1");
    cr_assert_eq(items_qty(m, "twice-p1"), 5, "%s", m->value);
    it_assert_stock(INV_DB, "twice-p1", 5);

    /* Each line fits the 5 left, their sum does not. */
    const int64_t big[] = {3, 3};
    send_cmd("twice-o2", cmd_reserve("twice-reserve-2", "twice-o2", 2, lines, big));
    m = await_event(ev, "twice-reserve-2");
    assert_envelope(m, "StockRejected", "twice-reserve-2");
    cr_assert_str_eq(field(m, "reason"), "insufficient_stock", "%s", m->value);
    it_assert_stock(INV_DB, "twice-p1", 5);

    send_cmd("twice-o1", cmd_release("twice-release-1", "twice-o1"));
    m = await_event(ev, "twice-release-1");
    assert_envelope(m, "StockReleased", "twice-release-1");
    cr_assert_eq(items_qty(m, "twice-p1"), 5, "%s", m->value);
    it_assert_stock(INV_DB, "twice-p1", 10);

    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

/* Waits until the service's group is Stable with n members that all hold
 * partitions: only then does each instance get a share of what follows. */
static void await_group_shared_by(int n) {
    char err[IT_ERR_SIZE];
    int members = 0, assigned = 0;
    bool stable = false;
    int64_t deadline = vt_mono_ms() + IT_WAIT_MS;
    for (;;) {
        /* Errors such as "not coordinator" pass while the broker settles. */
        bool ok = it_kafka_group_describe(run.inventory_group, &members, &assigned, &stable, err,
                                          sizeof err) == 0;
        if (ok && stable && members == n && assigned == n) return;
        cr_assert(vt_mono_ms() < deadline,
                  "group %s: %d members, %d with partitions, %s after %d ms; want %d (%s)",
                  run.inventory_group, members, assigned, stable ? "stable" : "rebalancing",
                  IT_WAIT_MS, n, ok ? "no error" : err);
        usleep(250000);
    }
}

Test(inventory, two_instances_in_one_group_keep_stock_consistent_over_5000_commands) {
    gen g = {0};
    gen_make(&g, "load", 50, 5000, 100, 20251121);
    it_proc_t *a = inv_spawn(INV_ADDR, NULL);
    it_proc_t *b = inv_spawn(INV_ADDR2, NULL);
    await_group_shared_by(2);
    it_collector_t *ev = collect_events(VT_FROM_END);

    produce_all(&g, 0, g.n_products);
    await_all(ev, &g, 0, g.n_products);
    produce_all(&g, g.n_products, g.n);
    await_all(ev, &g, 0, g.n);
    it_catch_up(ev);

    size_t rejected = assert_stock_math(ev, &g);
    cr_assert_gt(rejected, 0, "the stream was meant to cause some rejections");
    cr_assert(it_proc_running(a) && it_proc_running(b), "an instance died (logs %s, %s)",
              it_proc_log_path(a), it_proc_log_path(b));
    cr_log_info("load: %zu commands, %zu events, %zu rejected", g.n,
                it_collector_count(ev), rejected);
    it_collector_free(ev);
    it_svc_stop(a, "inventory-svc");
    it_svc_stop(b, "inventory-svc");
    gen_free(&g);
}

typedef struct poison {
    const char *key;
    const char *value; /* NULL: tombstone */
    size_t len;
    const char *reason;
    const char *ikey; /* NULL when the message has none */
} poison;

Test(inventory, malformed_commands_go_to_dlq_with_original_bytes_and_the_consumer_moves_on) {
    char err[IT_ERR_SIZE];
    size_t big_len = 70000;
    char *big = malloc(big_len + 1);
    cr_assert(big != NULL);
    int head = snprintf(big, big_len + 1,
                        "{\"type\":\"Restock\",\"idempotency_key\":\"dlq-big\","
                        "\"product_id\":\"dlq-p1\",\"quantity\":1,\"name\":\"Big\",\"pad\":\"");
    memset(big + head, 'x', big_len - (size_t)head - 2);
    memcpy(big + big_len - 2, "\"}", 3);

    const poison cases[] = {
        {"dlq-k1", "{\"type\":\"ReserveStock\",", 0, "not_json", NULL},
        {"dlq-k2", "null", 0, "null_value", NULL},
        {"dlq-k3", NULL, 0, "null_value", NULL},
        {"dlq-k4", big, big_len, "too_large", "dlq-big"},
        {"dlq-k5",
         "{\"type\":\"ReserveStock\",\"idempotency_key\":\"dlq-missing\","
         "\"items\":[{\"product_id\":\"dlq-p1\",\"quantity\":1}]}",
         0, "missing_field", "dlq-missing"},
        {"dlq-k6",
         "{\"type\":\"ReserveStock\",\"idempotency_key\":\"dlq-wrongtype\",\"order_id\":"
         "\"dlq-o6\",\"items\":[{\"product_id\":\"dlq-p1\",\"quantity\":\"1\"}]}",
         0, "wrong_type", "dlq-wrongtype"},
        {"dlq-k7",
         "{\"type\":\"ReserveStock\",\"idempotency_key\":\"dlq-zero\",\"order_id\":"
         "\"dlq-o7\",\"items\":[{\"product_id\":\"dlq-p1\",\"quantity\":0}]}",
         0, "invalid_value", "dlq-zero"},
        {"dlq-k8",
         "{\"type\":\"Restock\",\"idempotency_key\":\"dlq-huge\",\"product_id\":"
         "\"dlq-p1\",\"quantity\":1000000000,\"name\":\"Huge\"}",
         0, "invalid_value", "dlq-huge"},
        {"dlq-k9",
         "{\"type\":\"TeleportStock\",\"idempotency_key\":\"dlq-unknown\","
         "\"order_id\":\"dlq-o9\"}",
         0, "unknown_type", "dlq-unknown"},
    };
    const size_t n_cases = sizeof cases / sizeof cases[0];

    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    it_collector_t *dlq = it_collect(run.inventory_dlq, VT_FROM_END, NULL);
    it_collector_t *cmds = it_collect(run.inventory_commands, VT_FROM_END, NULL);

    it_producer_t *p = NULL;
    IT_OK(it_producer_new(&p, NULL, err, sizeof err), err);
    for (size_t i = 0; i < n_cases; i++) {
        char corr[64];
        snprintf(corr, sizeof corr, "corr-%s", cases[i].key);
        it_header h[] = {{"correlation-id", corr, strlen(corr)}, {"x-it", "dlq", 3}};
        size_t len = cases[i].len ? cases[i].len : cases[i].value ? strlen(cases[i].value) : 0;
        IT_OK(it_produce(p, run.inventory_commands, cases[i].key, strlen(cases[i].key),
                         cases[i].value, len, h, 2, err, sizeof err),
              err);
    }
    IT_OK(it_producer_flush(p, 60000, err, sizeof err), err);
    it_producer_free(p);
    /* The next good command after them all, on the same key as the last. */
    send_cmd("dlq-k9", cmd_restock("dlq-restock-1", "dlq-p1", 3, "After poison"));

    const it_msg *m = await_event(ev, "dlq-restock-1");
    assert_envelope(m, "Restocked", "dlq-restock-1");
    it_assert_stock(INV_DB, "dlq-p1", 3);

    for (size_t i = 0; i < n_cases; i++) {
        const poison *c = &cases[i];
        size_t len = c->len ? c->len : c->value ? strlen(c->value) : 0;
        const it_msg *d = NULL;
        int64_t deadline = vt_mono_ms() + IT_WAIT_MS;
        while (!d) {
            for (size_t j = 0; j < it_collector_count(dlq) && !d; j++) {
                const it_msg *x = it_collector_at(dlq, j);
                if (x->key && strcmp(x->key, c->key) == 0) d = x;
            }
            if (d) break;
            cr_assert(vt_mono_ms() < deadline, "no DLQ entry for %s (%s) within %d ms",
                      c->key, c->reason, IT_WAIT_MS);
            IT_OK(it_collector_poll(dlq, 200, err, sizeof err), err);
        }
        const char *reason = it_msg_header_get(d, "dlq-reason", NULL);
        cr_assert(reason != NULL, "DLQ entry for %s has no dlq-reason", c->key);
        cr_assert_str_eq(reason, c->reason, "dlq-reason of %s", c->key);
        const char *error = it_msg_header_get(d, "dlq-error", NULL);
        cr_assert(error && *error, "DLQ entry for %s has no dlq-error", c->key);
        const char *service = it_msg_header_get(d, "dlq-service", NULL);
        cr_assert(service && *service, "DLQ entry for %s has no dlq-service", c->key);
        const char *src = it_msg_header_get(d, "dlq-source-topic", NULL);
        cr_assert(src && strcmp(src, run.inventory_commands) == 0,
                  "dlq-source-topic of %s: %s", c->key, src ? src : "(none)");
        if (c->value) {
            cr_assert(d->value && d->value_len == len && memcmp(d->value, c->value, len) == 0,
                      "DLQ value of %s differs from the original (%zu bytes, want %zu)",
                      c->key, d->value_len, len);
        } else {
            cr_assert(d->value == NULL, "DLQ value of tombstone %s is not null", c->key);
        }
        char corr[64];
        snprintf(corr, sizeof corr, "corr-%s", c->key);
        const char *h = it_msg_header_get(d, "correlation-id", NULL);
        cr_assert(h && strcmp(h, corr) == 0, "correlation-id of %s lost in DLQ", c->key);
        h = it_msg_header_get(d, "x-it", NULL);
        cr_assert(h && strcmp(h, "dlq") == 0, "header x-it of %s lost in DLQ", c->key);

        /* Partition and offset point at the original command. */
        it_catch_up(cmds);
        const it_msg *orig = NULL;
        for (size_t j = 0; j < it_collector_count(cmds) && !orig; j++) {
            const it_msg *x = it_collector_at(cmds, j);
            if (x->key && strcmp(x->key, c->key) == 0) orig = x;
        }
        cr_assert(orig != NULL, "original of %s not in %s", c->key, run.inventory_commands);
        char want[32];
        snprintf(want, sizeof want, "%d", (int)orig->partition);
        h = it_msg_header_get(d, "dlq-source-partition", NULL);
        cr_assert(h && strcmp(h, want) == 0, "dlq-source-partition of %s: %s, want %s",
                  c->key, h ? h : "(none)", want);
        snprintf(want, sizeof want, "%" PRId64, orig->offset);
        h = it_msg_header_get(d, "dlq-source-offset", NULL);
        cr_assert(h && strcmp(h, want) == 0, "dlq-source-offset of %s: %s, want %s",
                  c->key, h ? h : "(none)", want);
    }
    /* No poison message was answered with an event. */
    it_catch_up(ev);
    for (size_t i = 0; i < n_cases; i++)
        if (cases[i].ikey)
            cr_assert_eq(it_collector_count_str(ev, "idempotency_key", cases[i].ikey), 0,
                         "poison %s got an event", cases[i].key);

    it_collector_free(cmds);
    it_collector_free(dlq);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
    free(big);
}

/* Waits until the service's group has committed everything in the commands
 * topic, so the next instance starts with no command left to redo. */
static void await_group_committed(void) {
    char err[IT_ERR_SIZE];
    int64_t lag = -1, deadline = vt_mono_ms() + IT_WAIT_MS;
    for (;;) {
        /* Errors such as "not coordinator" pass while the broker settles. */
        bool ok = it_kafka_group_lag(run.inventory_group, run.inventory_commands, &lag, err, sizeof err) == 0;
        if (ok && lag == 0) return;
        cr_assert(vt_mono_ms() < deadline, "group %s after %d ms: %s", run.inventory_group, IT_WAIT_MS,
                  ok ? "still behind" : err);
        usleep(250000);
    }
}

Test(inventory, crash_after_commit_before_publish_publishes_on_restart_without_reapplying) {
    char err[IT_ERR_SIZE], how[128];
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "crash-restock-1", "crash-p1", 10);
    await_group_committed();
    it_svc_stop(svc, "inventory-svc");

    svc = inv_spawn(INV_ADDR, "after_commit_before_publish");
    send_cmd("crash-o1", cmd_reserve1("crash-reserve-1", "crash-o1", "crash-p1", 4));
    int status;
    IT_OK(it_proc_wait_exit(svc, IT_WAIT_MS, &status, err, sizeof err), err);
    it_status_describe(status, how, sizeof how);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 70,
              "the crash point should exit with 70; inventory-svc %s (log %s)", how,
              it_proc_log_path(svc));
    it_proc_free(svc);
    it_assert_stock(INV_DB, "crash-p1", 6); /* committed before the crash */
    it_catch_up(ev);
    cr_assert_eq(it_collector_count_str(ev, "idempotency_key", "crash-reserve-1"), 0,
                 "an event was published although the process died before publishing");

    svc = inv_spawn(INV_ADDR, NULL);
    const it_msg *m = await_event(ev, "crash-reserve-1");
    assert_envelope(m, "StockReserved", "crash-reserve-1");
    assert_key(m, "crash-o1");
    cr_assert_eq(items_qty(m, "crash-p1"), 4, "%s", m->value);
    it_catch_up(ev);
    assert_identical_events(ev, "crash-reserve-1");
    it_assert_stock(INV_DB, "crash-p1", 6); /* applied once, not again on redelivery */

    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

static json_object *http_json(const char *method, const char *path, int want_status,
                              const char *want_type);

/* The latency gremlin, switched on by environment: every second command is
 * held back, and exactly the events of held-back commands say so in a
 * chaos-delay-ms header; GET /health shows the gremlin and its count. */
Test(inventory, gremlin_delays_every_second_command_and_marks_its_events) {
    const char *const extra[] = {"VX_GREMLIN_DELAY_MS=25", "VX_GREMLIN_EVERY=2", NULL};
    char ikey[64], product[64];
    await_group_committed(); /* no command of another test left to count */
    it_proc_t *svc = inv_spawn_with(INV_ADDR, NULL, extra, true);
    it_collector_t *ev = collect_events(VT_FROM_END);
    for (int i = 0; i < 10; i++) {
        snprintf(ikey, sizeof ikey, "gremlin-restock-%d", i);
        snprintf(product, sizeof product, "gremlin-p%d", i);
        restock_and_wait(ev, ikey, product, 5); /* one at a time: one command per batch */
    }
    it_catch_up(ev);
    size_t marked = 0;
    for (size_t i = 0; i < it_collector_count(ev); i++) {
        size_t size;
        const char *h = it_msg_header_get(it_collector_at(ev, i), "chaos-delay-ms", &size);
        if (!h) continue;
        cr_assert_str_eq(h, "25", "chaos-delay-ms of %s", it_collector_at(ev, i)->value);
        marked++;
    }
    cr_assert_eq(marked, 5, "%zu of 10 events say they were delayed, want every second one", marked);

    json_object *health = http_json("GET", "/health", 200, "application/json"), *g, *v;
    cr_assert(json_object_object_get_ex(health, "chaos", &v) &&
                  json_object_object_get_ex(v, "gremlin", &g),
              "no chaos.gremlin in /health: %s", json_object_to_json_string(health));
    cr_assert(json_object_object_get_ex(g, "delayed", &v) && json_object_get_int(v) == 5 &&
                  json_object_object_get_ex(g, "every", &v) && json_object_get_int(v) == 2 &&
                  json_object_object_get_ex(g, "delay_ms", &v) && json_object_get_int(v) == 25,
              "/health's gremlin: %s", json_object_to_json_string(g));
    json_object_put(health);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

/* The event of `ikey`, which must be there already; borrowed. */
static const it_msg *event_of(const it_collector_t *ev, const char *ikey) {
    const it_msg *m = it_collector_find_str(ev, "idempotency_key", ikey);
    cr_assert(m != NULL, "no event for %s", ikey);
    return m;
}

/* One command held back (the gremlin: 3 s on every 5th) delays only what shares its order. In one
 * partition, reservations of other orders produced after it are committed before it, and its
 * order's release waits behind it: it gives back what the reservation took, not nothing. */
Test(inventory, held_back_command_is_passed_by_other_orders_and_not_by_its_release) {
    char err[IT_ERR_SIZE], topic[256], e_topic[300];
    it_run_name(topic, sizeof topic, "slow.commands");
    snprintf(e_topic, sizeof e_topic, "INVENTORY_COMMANDS_TOPIC=%s", topic);
    const char *const extra[] = {e_topic, "VX_TOPIC_PARTITIONS=1", "VX_GREMLIN_DELAY_MS=3000",
                                 "VX_GREMLIN_EVERY=5", NULL};
    it_proc_t *svc = inv_spawn_with(INV_ADDR, NULL, extra, true);
    it_collector_t *ev = collect_events(VT_FROM_END);
    char *restock = cmd_restock("slow-restock", "slow-p", 100, "Slow");
    IT_OK(it_produce_one(topic, "slow-p", restock, NULL, 0, err, sizeof err), err); /* the 1st command */
    free(restock);
    await_event(ev, "slow-restock");

    /* 2nd to 4th: other orders; 5th: held back; 6th: its release; 7th, 8th: other orders */
    static const struct { const char *ikey, *order; int release; int64_t qty; } cmds[] = {
        {"slow-r1", "slow-o1", 0, 1}, {"slow-r2", "slow-o2", 0, 1}, {"slow-r3", "slow-o3", 0, 1},
        {"slow-ra", "slow-oa", 0, 2}, {"slow-rel-a", "slow-oa", 1, 0}, {"slow-r4", "slow-o4", 0, 1},
        {"slow-r5", "slow-o5", 0, 1},
    };
    it_producer_t *prod = NULL;
    IT_OK(it_producer_new(&prod, NULL, err, sizeof err), err);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        char *json = cmds[i].release ? cmd_release(cmds[i].ikey, cmds[i].order)
                                     : cmd_reserve1(cmds[i].ikey, cmds[i].order, "slow-p", cmds[i].qty);
        IT_OK(it_produce(prod, topic, cmds[i].order, strlen(cmds[i].order), json, strlen(json), NULL, 0, err,
                         sizeof err),
              err);
        free(json);
    }
    IT_OK(it_producer_flush(prod, IT_WAIT_MS, err, sizeof err), err);
    it_producer_free(prod);
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) await_event(ev, cmds[i].ikey);

    const it_msg *held = event_of(ev, "slow-ra"), *rel = event_of(ev, "slow-rel-a");
    size_t size;
    assert_envelope(held, "StockReserved", "slow-ra");
    const char *delay = it_msg_header_get(held, "chaos-delay-ms", &size);
    cr_assert(delay && strcmp(delay, "3000") == 0, "the held-back command's event says chaos-delay-ms %s",
              delay ? delay : "(none)");
    for (size_t i = 0; i < 3; i++) /* the other orders' events carry no delay mark */
        cr_assert_null(it_msg_header_get(event_of(ev, cmds[i].ikey), "chaos-delay-ms", &size));
    for (const char *const *k = (const char *const[]){"slow-r4", "slow-r5", NULL}; *k; k++) {
        const it_msg *m = event_of(ev, *k);
        assert_envelope(m, "StockReserved", *k);
        cr_assert(strcmp(field(m, "occurred_at"), field(held, "occurred_at")) < 0,
                  "%s (produced after the held-back command) was committed at %s, not before it (%s)", *k,
                  field(m, "occurred_at"), field(held, "occurred_at"));
    }
    assert_envelope(rel, "StockReleased", "slow-rel-a");
    cr_assert_eq(items_qty(rel, "slow-p"), 2, "the release overtook its reservation: %s", rel->value);
    cr_assert(strcmp(field(rel, "occurred_at"), field(held, "occurred_at")) >= 0,
              "the release (%s) was committed before its reservation (%s)", field(rel, "occurred_at"),
              field(held, "occurred_at"));
    it_assert_stock(INV_DB, "slow-p", 100 - 5);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

/* A row lock held on one product from another connection holds back only the reservations of that
 * product: the others are applied while it is held; when it goes, the held ones are applied once. */
Test(inventory, row_lock_on_one_product_delays_only_the_orders_of_that_product) {
    char err[IT_ERR_SIZE], ikey[64], order[64];
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "lock-restock-l", "lock-pl", 100);
    restock_and_wait(ev, "lock-restock-f", "lock-pf", 100);

    PGconn *locker = NULL;
    IT_OK(it_pg_connect(&locker, INV_DB, err, sizeof err), err);
    PQclear(PQexec(locker, "BEGIN"));
    PGresult *r = PQexec(locker, "SELECT stock FROM products WHERE id = 'lock-pl' FOR UPDATE");
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s", PQerrorMessage(locker));
    PQclear(r);
    for (int i = 0; i < 10; i++) { /* interleaved: locked, free, locked, free ... */
        snprintf(ikey, sizeof ikey, "lock-%d", i);
        snprintf(order, sizeof order, "lock-o-%d", i);
        send_cmd(order, cmd_reserve1(ikey, order, i % 2 ? "lock-pf" : "lock-pl", 1));
    }
    for (int i = 1; i < 10; i += 2) { /* the free product's, while the lock is held */
        snprintf(ikey, sizeof ikey, "lock-%d", i);
        assert_envelope(await_event(ev, ikey), "StockReserved", ikey);
    }
    it_catch_up(ev);
    for (int i = 0; i < 10; i += 2) {
        snprintf(ikey, sizeof ikey, "lock-%d", i);
        cr_assert_eq(it_collector_count_str(ev, "idempotency_key", ikey), 0,
                     "%s was answered while its product was locked", ikey);
    }
    it_assert_stock(INV_DB, "lock-pf", 95);
    r = PQexec(locker, "COMMIT");
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQerrorMessage(locker));
    PQclear(r);
    PQfinish(locker);
    for (int i = 0; i < 10; i += 2) {
        snprintf(ikey, sizeof ikey, "lock-%d", i);
        assert_envelope(await_event(ev, ikey), "StockReserved", ikey);
    }
    await_group_committed();
    it_catch_up(ev);
    for (int i = 0; i < 10; i++) {
        snprintf(ikey, sizeof ikey, "lock-%d", i);
        cr_assert_eq(assert_identical_events(ev, ikey), 1, "%s answered more than once", ikey);
    }
    it_assert_stock(INV_DB, "lock-pl", 95);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

/* kill -9 while commands are held aside (the gremlin holds every 3rd for a minute): the next
 * instance applies them, from the lowest offset not done, and nothing is applied twice. */
Test(inventory, kill_while_commands_are_held_aside_loses_and_doubles_nothing) {
    const char *const extra[] = {"VX_GREMLIN_DELAY_MS=60000", "VX_GREMLIN_EVERY=3", NULL};
    char err[IT_ERR_SIZE], ikey[64], order[64];
    int status;
    bool killed;
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL); /* no command of another test left to count */
    await_group_committed();
    it_svc_stop(svc, "inventory-svc");
    svc = inv_spawn_with(INV_ADDR, NULL, extra, true);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "held-restock", "held-p", 1000); /* the 1st command */
    int64_t stock = 1000;
    for (int i = 0; i < 30; i++) { /* the 2nd to the 31st: every 3rd is held */
        snprintf(ikey, sizeof ikey, "held-%d", i);
        snprintf(order, sizeof order, "held-o-%d", i);
        send_cmd(order, cmd_reserve1(ikey, order, "held-p", 1 + i % 3));
        stock -= 1 + i % 3;
    }
    for (int i = 0; i < 30; i++) {
        if ((i + 2) % 3 == 0) continue;
        snprintf(ikey, sizeof ikey, "held-%d", i);
        await_event(ev, ikey);
    }
    it_catch_up(ev);
    for (int i = 1; i < 30; i += 3) {
        snprintf(ikey, sizeof ikey, "held-%d", i);
        cr_assert_eq(it_collector_count_str(ev, "idempotency_key", ikey), 0, "%s was not held back", ikey);
    }
    usleep(1500 * 1000); /* an auto-commit of the offsets stored so far */
    IT_OK(it_proc_stop(svc, SIGKILL, 10000, &status, &killed, err, sizeof err), err);
    it_proc_free(svc);

    svc = inv_spawn(INV_ADDR, NULL);
    for (int i = 0; i < 30; i++) {
        snprintf(ikey, sizeof ikey, "held-%d", i);
        assert_envelope(await_event(ev, ikey), "StockReserved", ikey);
    }
    await_group_committed();
    it_catch_up(ev);
    for (int i = 0; i < 30; i++) {
        snprintf(ikey, sizeof ikey, "held-%d", i);
        assert_identical_events(ev, ikey);
    }
    it_assert_stock(INV_DB, "held-p", stock);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

/* A crash at each point inside the batch: the instance dies with 70 at the
 * point, the next one finishes the work, and every command has applied once
 * (stock) and answered with identical bytes however often it was published. */
Test(inventory, crash_at_each_point_of_the_batch_loses_and_repeats_nothing) {
    static const char *const points[] = {"before_commit", "mid_batch",
                                         "after_publish_before_offset_commit"};
    char err[IT_ERR_SIZE], how[128], spec[64], ikey[64], order[64];
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    restock_and_wait(ev, "points-restock", "points-p1", 1000);
    await_group_committed();
    it_svc_stop(svc, "inventory-svc");

    int64_t stock = 1000;
    for (size_t k = 0; k < sizeof points / sizeof points[0]; k++) {
        /* 20 commands waiting before the instance starts: its first batch holds several */
        for (int i = 0; i < 20; i++) {
            snprintf(ikey, sizeof ikey, "points-%zu-%d", k, i);
            snprintf(order, sizeof order, "points-o-%zu-%d", k, i);
            send_cmd(order, cmd_reserve1(ikey, order, "points-p1", 1 + i % 3));
            stock -= 1 + i % 3;
        }
        snprintf(spec, sizeof spec, "%s@1", points[k]);
        svc = inv_spawn_with(INV_ADDR, spec, NULL, false);
        int status;
        IT_OK(it_proc_wait_exit(svc, IT_WAIT_MS, &status, err, sizeof err), err);
        it_status_describe(status, how, sizeof how);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 70,
                  "crash point %s: inventory-svc %s (log %s)", points[k], how, it_proc_log_path(svc));
        it_proc_free(svc);

        svc = inv_spawn(INV_ADDR, NULL);
        for (int i = 0; i < 20; i++) {
            snprintf(ikey, sizeof ikey, "points-%zu-%d", k, i);
            const it_msg *m = await_event(ev, ikey);
            assert_envelope(m, "StockReserved", ikey);
        }
        await_group_committed();
        it_svc_stop(svc, "inventory-svc");
        it_catch_up(ev);
        for (int i = 0; i < 20; i++) {
            snprintf(ikey, sizeof ikey, "points-%zu-%d", k, i);
            assert_identical_events(ev, ikey);
        }
        it_assert_stock(INV_DB, "points-p1", stock);
    }
    it_collector_free(ev);
}

typedef struct bounce_producer {
    const gen *g;
    atomic_size_t produced;
    int rc;
    char err[IT_ERR_SIZE];
} bounce_producer;

/* Produces the stream paced over ~10 s so the broker goes away mid-way. */
static void *bounce_produce(void *arg) {
    bounce_producer *bp = arg;
    it_producer_t *p = NULL;
    bp->rc = it_producer_new(&p, (const char *const[]){"message.timeout.ms=600000", NULL},
                             bp->err, sizeof bp->err);
    for (size_t i = bp->g->n_products; bp->rc == 0 && i < bp->g->n; i++) {
        const gen_cmd *c = &bp->g->cmds[i];
        bp->rc = it_produce(p, run.inventory_commands, c->key, strlen(c->key), c->json,
                            strlen(c->json), NULL, 0, bp->err, sizeof bp->err);
        atomic_fetch_add(&bp->produced, 1);
        usleep(20000);
    }
    if (bp->rc == 0) bp->rc = it_producer_flush(p, 600000, bp->err, sizeof bp->err);
    it_producer_free(p);
    return NULL;
}

Test(inventory, broker_restart_while_commands_flow_loses_and_repeats_nothing) {
    char err[IT_ERR_SIZE];
    gen g = {0};
    gen_make(&g, "bounce", 10, 500, 60, 7);
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    produce_all(&g, 0, g.n_products);
    await_all(ev, &g, 0, g.n_products);

    bounce_producer bp = {.g = &g};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, bounce_produce, &bp), 0);
    while (atomic_load(&bp.produced) < 120 && bp.rc == 0) usleep(10000);
    int stop_rc = it_stack("stop", "kafka", err, sizeof err);
    if (stop_rc == 0) {
        sleep(3);
        stop_rc = it_stack("start", "kafka", err, sizeof err);
    }
    pthread_join(thread, NULL);
    cr_assert_eq(stop_rc, 0, "broker restart: %s", err);
    cr_assert_eq(bp.rc, 0, "producer across the restart: %s", bp.err);
    IT_OK(it_kafka_wait_up(120000, err, sizeof err), err);

    await_all(ev, &g, 0, g.n);
    it_catch_up(ev);
    assert_stock_math(ev, &g);
    cr_assert(it_proc_running(svc), "inventory-svc died during the broker restart (log %s)",
              it_proc_log_path(svc));
    IT_OK(it_proc_wait_http(svc, INV_ADDR, "/ready", IT_WAIT_MS, err, sizeof err), err);
    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
    gen_free(&g);
}

static json_object *http_json(const char *method, const char *path, int want_status,
                              const char *want_type) {
    char err[IT_ERR_SIZE];
    const vt_http_req req = {.method = method, .path = path, .timeout_ms = IT_HTTP_PROBE_TIMEOUT_MS,
                             .max_response = IT_HTTP_PROBE_MAX_RESPONSE, .parse_json = want_type != NULL};
    vt_http_resp r;
    IT_OK(it_http(INV_ADDR, &req, &r, err, sizeof err), err);
    cr_assert_eq(r.status, want_status, "%s %s: status %d, want %d; body %s", method, path,
                 r.status, want_status, r.body);
    const char *type = vt_http_header(&r, "Content-Type");
    if (want_type)
        cr_assert(type && strncmp(type, want_type, strlen(want_type)) == 0,
                  "%s %s: Content-Type %s, want %s", method, path, type ? type : "(none)", want_type);
    json_object *j = json_object_get(r.json);
    cr_assert(!want_type || j, "%s %s: body is not JSON: %s", method, path, r.body);
    vt_http_resp_clear(&r);
    return j;
}

static void assert_product_json(json_object *p, const char *id, const char *name,
                                int64_t stock) {
    json_object *v;
    const char *s = json_object_to_json_string(p);
    cr_assert(json_object_object_get_ex(p, "id", &v) &&
                  strcmp(json_object_get_string(v), id) == 0,
              "id: %s", s);
    cr_assert(json_object_object_get_ex(p, "name", &v) &&
                  strcmp(json_object_get_string(v), name) == 0,
              "name (want %s): %s", name, s);
    cr_assert(json_object_object_get_ex(p, "stock", &v) &&
                  json_object_is_type(v, json_type_int) && json_object_get_int64(v) == stock,
              "stock (want %" PRId64 "): %s", stock, s);
}

Test(inventory, http_api_serves_products_health_and_errors) {
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    it_collector_t *ev = collect_events(VT_FROM_END);
    send_cmd("http-p1", cmd_restock("http-restock-1", "http-p1", 12, "HTTP widget"));
    send_cmd("http-p2", cmd_restock("http-restock-2", "http-p2", 3, "HTTP gadget"));
    await_event(ev, "http-restock-1");
    await_event(ev, "http-restock-2");
    send_cmd("http-o1", cmd_reserve1("http-reserve-1", "http-o1", "http-p1", 2));
    await_event(ev, "http-reserve-1");

    json_object *all = http_json("GET", "/products", 200, "application/json");
    json_object *list;
    cr_assert(json_object_object_get_ex(all, "products", &list) &&
                  json_object_is_type(list, json_type_array),
              "GET /products: no products array: %s", json_object_to_json_string(all));
    int found = 0;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *p = json_object_array_get_idx(list, i), *id;
        if (!json_object_object_get_ex(p, "id", &id)) continue;
        if (strcmp(json_object_get_string(id), "http-p1") == 0) {
            assert_product_json(p, "http-p1", "HTTP widget", 10);
            found |= 1;
        } else if (strcmp(json_object_get_string(id), "http-p2") == 0) {
            assert_product_json(p, "http-p2", "HTTP gadget", 3);
            found |= 2;
        }
    }
    cr_assert_eq(found, 3, "GET /products lacks a product of this test: %s",
                 json_object_to_json_string(all));
    json_object_put(all);

    json_object *one = http_json("GET", "/products/http-p1", 200, "application/json");
    assert_product_json(one, "http-p1", "HTTP widget", 10);
    json_object_put(one);
    json_object_put(http_json("GET", "/products/http-nosuch", 404, "application/problem+json"));
    http_json("GET", "/no-such-route", 404, NULL);
    http_json("POST", "/products", 405, NULL);
    http_json("GET", "/health", 200, NULL);
    http_json("GET", "/ready", 200, NULL);

    it_collector_free(ev);
    it_svc_stop(svc, "inventory-svc");
}

/* ---- replay: runs after every other test ------------------------------------ */

typedef struct replay_key {
    const char *ikey;
    size_t need; /* events wanted in total: before + replayed */
    size_t have;
} replay_key;

typedef struct replay_wait {
    replay_key *keys; /* sorted by ikey */
    size_t n, n_done, cursor;
} replay_wait;

static int cmp_replay_key(const void *a, const void *b) {
    return strcmp(((const replay_key *)a)->ikey, ((const replay_key *)b)->ikey);
}

static bool replay_done(const it_collector_t *c, void *arg) {
    replay_wait *w = arg;
    for (; w->cursor < it_collector_count(c); w->cursor++) {
        replay_key probe = {it_msg_str(it_collector_at(c, w->cursor), "idempotency_key"), 0, 0};
        if (!probe.ikey) continue;
        replay_key *k = bsearch(&probe, w->keys, w->n, sizeof *w->keys, cmp_replay_key);
        if (k && ++k->have == k->need) w->n_done++;
    }
    return w->n_done == w->n;
}

typedef struct stock_row {
    char *id;
    int64_t stock;
} stock_row;

static size_t stock_snapshot(stock_row **out) {
    char err[IT_ERR_SIZE];
    PGconn *conn = NULL;
    IT_OK(it_pg_connect(&conn, INV_DB, err, sizeof err), err);
    PGresult *res = PQexecParams(conn, SQL_ALL_STOCK, 0, NULL, NULL, NULL, NULL, 0);
    cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", SQL_ALL_STOCK,
              PQerrorMessage(conn));
    size_t n = (size_t)PQntuples(res);
    stock_row *rows = calloc(n ? n : 1, sizeof *rows);
    cr_assert(rows != NULL);
    for (size_t i = 0; i < n; i++) {
        rows[i].id = strdup(PQgetvalue(res, (int)i, 0));
        rows[i].stock = strtoll(PQgetvalue(res, (int)i, 1), NULL, 10);
    }
    PQclear(res);
    PQfinish(conn);
    *out = rows;
    return n;
}

static bool is_poison(const it_collector_t *dlq, const it_msg *m) {
    char part[32], off[32];
    snprintf(part, sizeof part, "%d", (int)m->partition);
    snprintf(off, sizeof off, "%" PRId64, m->offset);
    for (size_t i = 0; i < it_collector_count(dlq); i++) {
        const it_msg *d = it_collector_at(dlq, i);
        const char *t = it_msg_header_get(d, "dlq-source-topic", NULL);
        const char *p = it_msg_header_get(d, "dlq-source-partition", NULL);
        const char *o = it_msg_header_get(d, "dlq-source-offset", NULL);
        if (t && p && o && strcmp(t, run.inventory_commands) == 0 && strcmp(p, part) == 0 &&
            strcmp(o, off) == 0)
            return true;
    }
    return false;
}

Test(inventory_replay, replaying_every_command_of_the_run_changes_no_stock) {
    char err[IT_ERR_SIZE];
    it_proc_t *svc = inv_spawn(INV_ADDR, NULL);
    await_group_committed(); /* everything sent so far is handled */
    it_collector_t *cmds = it_collect(run.inventory_commands, VT_FROM_BEGINNING, NULL);
    it_collector_t *dlq = it_collect(run.inventory_dlq, VT_FROM_BEGINNING, NULL);
    it_collector_t *ev = it_collect(run.inventory_events, VT_FROM_BEGINNING, NULL);
    it_catch_up(cmds);
    it_catch_up(dlq);
    it_catch_up(ev);
    size_t n_cmds = it_collector_count(cmds), n_dlq_before = it_collector_count(dlq);
    cr_assert_gt(n_cmds, 0, "the other tests sent no command to %s", run.inventory_commands);

    stock_row *before = NULL;
    size_t n_before = stock_snapshot(&before);

    /* One entry per idempotency key of the good commands. */
    replay_key *keys = calloc(n_cmds, sizeof *keys);
    size_t n_keys = 0, n_poison = 0;
    cr_assert(keys != NULL);
    for (size_t i = 0; i < n_cmds; i++) {
        const it_msg *m = it_collector_at(cmds, i);
        if (is_poison(dlq, m)) {
            n_poison++;
            continue;
        }
        const char *ikey = it_msg_str(m, "idempotency_key");
        cr_assert(ikey, "command at %d/%" PRId64 " is neither in the DLQ nor keyed: %.200s",
                  (int)m->partition, m->offset, m->value ? m->value : "(null)");
        keys[n_keys++] = (replay_key){ikey, 1, 0};
    }
    qsort(keys, n_keys, sizeof *keys, cmp_replay_key);
    size_t n_unique = 0;
    for (size_t i = 0; i < n_keys; i++) {
        if (n_unique && strcmp(keys[n_unique - 1].ikey, keys[i].ikey) == 0)
            keys[n_unique - 1].need++;
        else
            keys[n_unique++] = keys[i];
    }
    for (size_t i = 0; i < n_unique; i++)
        keys[i].need += it_collector_count_str(ev, "idempotency_key", keys[i].ikey);

    it_producer_t *p = NULL;
    IT_OK(it_producer_new(&p, NULL, err, sizeof err), err);
    for (size_t i = 0; i < n_cmds; i++) {
        const it_msg *m = it_collector_at(cmds, i);
        it_header h[16];
        cr_assert(m->n_headers <= 16, "too many headers to replay");
        for (size_t j = 0; j < m->n_headers; j++)
            h[j] = (it_header){m->headers[j].name, m->headers[j].value, m->headers[j].size};
        IT_OK(it_produce(p, run.inventory_commands, m->key, m->key_len, m->value, m->value_len, h,
                         m->n_headers, err, sizeof err),
              err);
    }
    IT_OK(it_producer_flush(p, 300000, err, sizeof err), err);
    it_producer_free(p);

    replay_wait w = {keys, n_unique, 0, 0};
    char what[128];
    snprintf(what, sizeof what, "one more event for each of %zu replayed commands",
             n_cmds - n_poison);
    IT_OK(it_collector_wait(ev, replay_done, &w, what, LOAD_WAIT_MS, err, sizeof err), err);
    int64_t deadline = vt_mono_ms() + IT_WAIT_MS;
    while (it_collector_count(dlq) < n_dlq_before + n_poison) {
        cr_assert(vt_mono_ms() < deadline, "DLQ has %zu entries, want %zu after the replay",
                  it_collector_count(dlq), n_dlq_before + n_poison);
        IT_OK(it_collector_poll(dlq, 200, err, sizeof err), err);
    }
    it_catch_up(ev);
    for (size_t i = 0; i < n_unique; i++) assert_identical_events(ev, keys[i].ikey);

    stock_row *after = NULL;
    size_t n_after = stock_snapshot(&after);
    cr_assert_eq(n_after, n_before, "%zu products before the replay, %zu after", n_before,
                 n_after);
    for (size_t i = 0; i < n_before; i++) {
        cr_assert_str_eq(after[i].id, before[i].id);
        cr_assert_eq(after[i].stock, before[i].stock,
                     "replay changed stock of %s: %" PRId64 " -> %" PRId64, before[i].id,
                     before[i].stock, after[i].stock);
    }
    cr_log_info("replay: %zu commands (%zu poison), %zu products unchanged", n_cmds,
                n_poison, n_before);
    for (size_t i = 0; i < n_before; i++) free(before[i].id);
    for (size_t i = 0; i < n_after; i++) free(after[i].id);
    free(before);
    free(after);
    free(keys);
    it_collector_free(ev);
    it_collector_free(dlq);
    it_collector_free(cmds);
    it_svc_stop(svc, "inventory-svc");
}

int main(int argc, char **argv) {
    static const char *const databases[] = {INV_DB, NULL};
    return it_main(argc, argv, databases);
}
