/* soak_check: quiescence, then the five invariants of issue 4, each printed with its count.
 *
 *   1  every accepted command has exactly one final outcome, and the orders database and
 *      orders.results agree on it (HTTP 201 -> CONFIRMED, or CANCELLED once cancelled; 409 -> REJECTED)
 *   2  per product: initial + restocked - reserved + released = stock, from the inventory database
 *      and from inventory.events alike, never negative; holds = the lines of the CONFIRMED orders
 *   3  no command applied twice: one order per key, one event_id per idempotency key, one
 *      reservation and one release per order
 *   4  the dead-letter topics hold exactly the malformed commands the soak sent, with dlq-* headers
 *   5  every HTTP client got the same answer each time, also when asked again at the end
 *
 * Invariant: a check that cannot run (a database or a topic that cannot be read) is a failure of
 * the soak, never a pass; only the databases, the topics and the ledger are evidence. */
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "soak.h"
#include "vx_kafka.h"

#define SHOW_MAX 25   /* violations printed per check; the count is always complete */
#define ITEMS_MAX 8   /* distinct products of one order kept for the per-order holds check */
#define QUIET_POLLS 3 /* consecutive quiet polls, one a second, before the system counts as quiet */
#define REASK_ATTEMPTS 30     /* a second apart at least: a settled system answers long before */
#define REASK_BUDGET_MS 90000 /* for all of them: a gateway that answers nobody must not hold the soak */

static const soak_opts_t *opts;
static soak_check_result_t *res;
static long shown[6];

static void violation(int check, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(int check, const char *fmt, ...) {
    va_list ap;
    res->violations[check]++;
    if (shown[check]++ >= SHOW_MAX) return;
    printf("  VIOLATION %d: ", check);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

/* ---- quiescence ------------------------------------------------------------------------------------ */

typedef struct {
    long long pending, unpub_orders, unpub_inventory;
    int64_t lag;
} quiet_t;

static int measure(PGconn *odb, PGconn *idb, quiet_t *q, char *err, size_t errsz) {
    const char *og = getenv("ORDERS_GROUP_ID"), *ig = getenv("INVENTORY_GROUP_ID");
    int64_t a = 0, b = 0, c = 0;

    og = og && *og ? og : "order-svc";
    ig = ig && *ig ? ig : "inventory-svc";
    if (soak_pg_long(odb, "SELECT count(*) FROM orders WHERE status = 'PENDING'", &q->pending, err, errsz) ||
        soak_pg_long(odb, "SELECT count(*) FROM outbox_pending", &q->unpub_orders, err, errsz) ||
        soak_pg_long(idb, "SELECT count(*) FROM outbox_pending", &q->unpub_inventory, err, errsz) ||
        soak_group_lag(og, "orders.commands", &a, err, errsz) || soak_group_lag(og, "inventory.events", &b, err, errsz) ||
        soak_group_lag(ig, "inventory.commands", &c, err, errsz))
        return -1;
    q->lag = a + b + c;
    return 0;
}

int soak_check_quiesce(const soak_opts_t *o, char *err, size_t errsz) {
    PGconn *odb = soak_pg(o->orders_db, err, errsz), *idb = odb ? soak_pg(o->inventory_db, err, errsz) : NULL;
    int64_t t0 = vt_mono_ms(), last_say = t0;
    quiet_t q = {0};
    int quiet = 0, rc = -1;

    while (idb && quiet < QUIET_POLLS) {
        if (soak_chaos_ensure_up(o, err, errsz)) break;
        if (measure(odb, idb, &q, err, errsz) == 0) {
            quiet = q.pending || q.unpub_orders || q.unpub_inventory || q.lag ? 0 : quiet + 1;
        } else {
            soak_say("quiescence: %s (retrying)", err);
            PQreset(odb);
            PQreset(idb);
        }
        if (vt_mono_ms() - last_say >= 10000) {
            soak_say("waiting for quiet: %lld orders PENDING, %lld + %lld outbox rows unpublished, consumer lag %lld",
                     q.pending, q.unpub_orders, q.unpub_inventory, (long long)q.lag);
            last_say = vt_mono_ms();
        }
        if (vt_mono_ms() - t0 > o->quiesce_s * 1000) {
            snprintf(err, errsz, "not quiet after %ld s: %lld orders PENDING, %lld + %lld outbox rows unpublished "
                     "(orders, inventory), consumer lag %lld", o->quiesce_s, q.pending, q.unpub_orders,
                     q.unpub_inventory, (long long)q.lag);
            break;
        }
        if (quiet < QUIET_POLLS) vt_sleep_ms(1000);
    }
    if (quiet >= QUIET_POLLS) {
        soak_say("quiet after %.1f s: nothing PENDING, every outbox row published, no consumer lag",
                 (double)(vt_mono_ms() - t0) / 1000.0);
        rc = 0;
    }
    PQfinish(odb);
    PQfinish(idb);
    return rc;
}

/* ---- what the databases say -------------------------------------------------------------------- */

enum { F_INITIAL, F_RESTOCKED, F_RESERVED, F_RELEASED };

typedef struct {
    char name[65];
    int in_db;
    long long stock, db[4], ev[4], sent[2], holds, confirmed;
} prod_t;

typedef struct {
    char *id, *key, *cancel_key, *reason;
    char status;        /* C R X P */
    int64_t updated_ms;
    int nitems, too_many;
    int pidx[ITEMS_MAX];
    long long qty[ITEMS_MAX], held[ITEMS_MAX];
    int held_other;     /* a hold on a product the order does not have */
    char last_own;      /* the latest result answering the order's own PlaceOrder or CancelOrder */
    int own_ok, own_rej;
} order_t;

static prod_t prods[SOAK_MAX_PRODUCTS];
static int nprods;
static order_t *orders;
static long norders;
static vt_map_t order_by_id, order_keys;

static int prod_index(const char *name) {
    for (int i = 0; i < nprods; i++)
        if (strcmp(prods[i].name, name) == 0) return i;
    if (nprods == SOAK_MAX_PRODUCTS) return SOAK_MAX_PRODUCTS - 1; /* never with the soak's catalog */
    snprintf(prods[nprods].name, sizeof(prods[0].name), "%s", name);
    return nprods++;
}

static char status_letter(const char *s) {
    return !s ? 0 : strcmp(s, "CONFIRMED") == 0 ? 'C' : strcmp(s, "REJECTED") == 0 ? 'R'
           : strcmp(s, "CANCELLED") == 0 ? 'X' : strcmp(s, "PENDING") == 0 ? 'P' : '?';
}

static const char *status_name(char s) {
    return s == 'C' ? "CONFIRMED" : s == 'R' ? "REJECTED" : s == 'X' ? "CANCELLED" : s == 'P' ? "PENDING" : "(none)";
}

static void order_items(order_t *o, const char *json) {
    json_object *a = json_tokener_parse(json), *l, *v;
    size_t n = a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;

    for (size_t i = 0; i < n; i++) {
        int p, k;
        l = json_object_array_get_idx(a, i);
        if (!json_object_object_get_ex(l, "product_id", &v)) continue;
        p = prod_index(json_object_get_string(v));
        for (k = 0; k < o->nitems && o->pidx[k] != p; k++) {}
        if (k == ITEMS_MAX) {
            o->too_many = 1;
            continue;
        }
        if (k == o->nitems) o->pidx[o->nitems++] = p;
        o->qty[k] += json_object_object_get_ex(l, "quantity", &v) ? json_object_get_int64(v) : 0;
    }
    json_object_put(a);
}

static int load_orders(PGconn *db, char *err, size_t errsz) {
    PGresult *r = PQexec(db, "SELECT id, idempotency_key, status, coalesce(reason, ''), coalesce(cancel_key, ''), "
                             "items::text, (extract(epoch FROM updated_at) * 1000)::bigint FROM orders");
    int added;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errsz, "reading orders: %s", PQerrorMessage(db));
        PQclear(r);
        return -1;
    }
    norders = PQntuples(r);
    orders = calloc((size_t)norders + 1, sizeof(*orders));
    for (long i = 0; orders && i < norders; i++) {
        order_t *o = &orders[i];
        o->id = strdup(PQgetvalue(r, (int)i, 0));
        o->key = strdup(PQgetvalue(r, (int)i, 1));
        o->status = status_letter(PQgetvalue(r, (int)i, 2));
        o->reason = strdup(PQgetvalue(r, (int)i, 3));
        o->cancel_key = strdup(PQgetvalue(r, (int)i, 4));
        o->updated_ms = strtoll(PQgetvalue(r, (int)i, 6), NULL, 10);
        order_items(o, PQgetvalue(r, (int)i, 5));
        vt_map_put(&order_by_id, o->id, i, &added);
        int64_t *n = vt_map_put(&order_keys, o->key, 0, &added);
        if (n) ++*n;
    }
    PQclear(r);
    return orders ? 0 : -1;
}

static int load_products(PGconn *db, char *err, size_t errsz) {
    PGresult *r = PQexec(db, "SELECT id, stock FROM products");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errsz, "reading products: %s", PQerrorMessage(db));
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        prod_t *p = &prods[prod_index(PQgetvalue(r, i, 0))];
        p->in_db = 1;
        p->stock = strtoll(PQgetvalue(r, i, 1), NULL, 10);
    }
    PQclear(r);
    return 0;
}

/* Adds a hold to its order's tally; a hold of an order that is not CONFIRMED is a violation. */
static void add_hold(const char *oid, int p, long long q) {
    int64_t *i = vt_map_get(&order_by_id, oid);
    order_t *o = i ? &orders[*i] : NULL;
    int k;

    prods[p].holds += q;
    if (!o) {
        violation(2, "holds has %lld of %s for order %s, which the orders database does not know", q, prods[p].name, oid);
        return;
    }
    if (o->status != 'C')
        violation(2, "order %s (key %s) is %s but holds %lld of %s", oid, o->key, status_name(o->status), q,
                  prods[p].name);
    for (k = 0; k < o->nitems && o->pidx[k] != p; k++) {}
    if (k < o->nitems)
        o->held[k] += q;
    else
        o->held_other = 1;
}

static int load_holds(PGconn *db, char *err, size_t errsz) {
    PGresult *r = PQexec(db, "SELECT order_id, product_id, quantity FROM holds");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errsz, "reading holds: %s", PQerrorMessage(db));
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++)
        add_hold(PQgetvalue(r, i, 0), prod_index(PQgetvalue(r, i, 1)), strtoll(PQgetvalue(r, i, 2), NULL, 10));
    PQclear(r);
    return 0;
}

/* Every event inventory-svc ever recorded is an outbox row (one per idempotency key): the stock
 * movements by type and product, the catalog's Restocks (keys <run>.sNN) apart. */
static const char *SQL_MOVES =
    "SELECT o.payload::jsonb->>'type', l->>'product_id', sum((l->>'quantity')::bigint), o.dedup_key LIKE $1 "
    "  FROM outbox o, jsonb_array_elements(o.payload::jsonb->'items') l "
    " WHERE o.topic = 'events' AND o.payload::jsonb->>'type' IN ('Restocked', 'StockReserved', 'StockReleased') "
    " GROUP BY 1, 2, 4";

static int load_moves(PGconn *db, char *err, size_t errsz) {
    char pattern[64];
    const char *params[1] = {pattern};
    PGresult *r;

    snprintf(pattern, sizeof(pattern), "%s.s%%", opts->run_id);
    r = PQexecParams(db, SQL_MOVES, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errsz, "reading the inventory outbox: %s", PQerrorMessage(db));
        PQclear(r);
        return -1;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *t = PQgetvalue(r, i, 0);
        prod_t *p = &prods[prod_index(PQgetvalue(r, i, 1))];
        int f = strcmp(t, "StockReserved") == 0   ? F_RESERVED
                : strcmp(t, "StockReleased") == 0 ? F_RELEASED
                : PQgetvalue(r, i, 3)[0] == 't'   ? F_INITIAL
                                                  : F_RESTOCKED;
        p->db[f] += strtoll(PQgetvalue(r, i, 2), NULL, 10);
    }
    PQclear(r);
    return 0;
}

static int load_databases(char *err, size_t errsz) {
    PGconn *odb = soak_pg(opts->orders_db, err, errsz), *idb = odb ? soak_pg(opts->inventory_db, err, errsz) : NULL;
    int rc = -1;

    for (int i = 0; i < opts->products; i++) prod_index(soak_load_product(i)); /* the catalog first, in order */
    if (idb && load_orders(odb, err, errsz) == 0 && load_products(idb, err, errsz) == 0 &&
        load_holds(idb, err, errsz) == 0 && load_moves(idb, err, errsz) == 0)
        rc = 0;
    PQfinish(odb);
    PQfinish(idb);
    return rc;
}

/* ---- what the topics say ---------------------------------------------------------------------------- */

static vt_map_t result_event_by_key; /* idempotency key -> hash of the event_id of its OrderResult */
static vt_map_t cancel_result;       /* cancel key -> status letter of its result ('N': not_found) */
static vt_map_t events_seen;         /* inventory event_id -> 1 */
static vt_map_t event_by_key;        /* idempotency key -> hash of its inventory event_id */
static vt_map_t reserved_by_order, released_by_order; /* order id -> hash of the event_id */
static vt_map_t restocked;           /* Restock key -> quantity * 1000 + events (distinct) */

static const char *jstr(json_object *o, const char *k) {
    json_object *v;
    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                          : NULL;
}

static long long jint(json_object *o, const char *k, long long dflt) {
    json_object *v;
    return json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_int) ? json_object_get_int64(v)
                                                                                       : dflt;
}

static void count_gremlin(const rd_kafka_message_t *m) {
    char v[32];
    if (vx_kafka_header(m, "chaos-delay-ms", v, sizeof(v))) res->gremlin_delayed++;
}

/* One idempotency key, one event: a second event_id for the same key is a command applied twice. */
static void one_event_per_key(vt_map_t *map, const char *topic, const char *key, const char *event_id) {
    int added;
    int64_t h = (int64_t)vt_hash(event_id), *slot = vt_map_put(map, key, h, &added);
    if (slot && !added && *slot != h)
        violation(3, "key %s has two different events on %s (one is %s)", key, topic, event_id);
}

static int is_cancel_key(const char *key) {
    size_t n = strlen(opts->run_id);
    return strncmp(key, opts->run_id, n) == 0 && key[n] == '.' && key[n + 1] == 'c';
}

static void on_result(const rd_kafka_message_t *m, void *arg) {
    json_object *o = m->payload ? json_tokener_parse(m->payload) : NULL;
    const char *oid = jstr(o, "order_id"), *key = jstr(o, "idempotency_key"), *eid = jstr(o, "event_id");
    const char *reason = jstr(o, "reason");
    char st = status_letter(jstr(o, "status"));
    int64_t *i;
    int added;
    (void)arg;

    res->results_read++;
    count_gremlin(m);
    if (!oid || !key || !eid || !st) {
        violation(1, "orders.results partition %d offset %lld is not an OrderResult", (int)m->partition,
                  (long long)m->offset);
        goto out;
    }
    one_event_per_key(&result_event_by_key, "orders.results", key, eid);
    if (is_cancel_key(key)) vt_map_put(&cancel_result, key, reason && strcmp(reason, "not_found") == 0 ? 'N' : st, &added);
    if ((i = vt_map_get(&order_by_id, oid))) {
        order_t *d = &orders[*i];
        if (strcmp(key, d->key) == 0 || (d->cancel_key[0] && strcmp(key, d->cancel_key) == 0)) {
            d->last_own = st; /* results of one order share a partition: read in order */
            d->own_ok |= st == 'C' || st == 'X';
            d->own_rej |= st == 'R';
        }
    } else if (!(reason && strcmp(reason, "not_found") == 0)) {
        violation(1, "orders.results has a %s result for order %s, which the orders database does not know",
                  status_name(st), oid);
    }
out:
    json_object_put(o);
}

/* Adds an event's lines to the product figures (field f), returns the units. */
static long long add_lines(json_object *o, int f) {
    json_object *items, *l;
    long long total = 0;
    if (!json_object_object_get_ex(o, "items", &items) || !json_object_is_type(items, json_type_array)) return 0;
    for (size_t i = 0; i < json_object_array_length(items); i++) {
        const char *p;
        l = json_object_array_get_idx(items, i);
        if (!(p = jstr(l, "product_id"))) continue;
        prods[prod_index(p)].ev[f] += jint(l, "quantity", 0);
        total += jint(l, "quantity", 0);
    }
    return total;
}

/* One reservation and at most one release that gave something back, per order. */
static void once_per_order(vt_map_t *map, const char *what, const char *oid, const char *eid) {
    int added;
    int64_t h = (int64_t)vt_hash(eid), *slot = vt_map_put(map, oid, h, &added);
    if (slot && !added && *slot != h) violation(3, "order %s was %s twice (events %s and an earlier one)", oid, what, eid);
}

static void on_event_first(json_object *o, const char *type, const char *key, const char *eid) {
    const char *oid = jstr(o, "order_id");
    size_t n = strlen(opts->run_id);
    int seed = strncmp(key, opts->run_id, n) == 0 && key[n] == '.' && key[n + 1] == 's', added;

    if (strcmp(type, "Restocked") == 0) {
        long long q = add_lines(o, seed ? F_INITIAL : F_RESTOCKED);
        int64_t *r = vt_map_put(&restocked, key, q * 1000, &added);
        if (r) ++*r;
        if (jint(o, "stock", 0) < 0) violation(2, "Restocked %s says the stock is %lld", eid, jint(o, "stock", 0));
    } else if (strcmp(type, "StockReserved") == 0) {
        add_lines(o, F_RESERVED);
        if (oid) once_per_order(&reserved_by_order, "reserved", oid, eid);
    } else if (strcmp(type, "StockReleased") == 0) {
        if (add_lines(o, F_RELEASED) > 0 && oid) once_per_order(&released_by_order, "released", oid, eid);
    } else if (strcmp(type, "StockRejected") == 0 && jint(o, "available", 0) < 0) {
        violation(2, "StockRejected %s says %lld are available", eid, jint(o, "available", 0));
    }
}

static void on_event(const rd_kafka_message_t *m, void *arg) {
    json_object *o = m->payload ? json_tokener_parse(m->payload) : NULL;
    const char *type = jstr(o, "type"), *key = jstr(o, "idempotency_key"), *eid = jstr(o, "event_id");
    int added;
    (void)arg;

    res->events_read++;
    count_gremlin(m);
    if (!type || !key || !eid) {
        violation(2, "inventory.events partition %d offset %lld is not an inventory event", (int)m->partition,
                  (long long)m->offset);
    } else {
        one_event_per_key(&event_by_key, "inventory.events", key, eid);
        vt_map_put(&events_seen, eid, 1, &added);
        if (added) on_event_first(o, type, key, eid); /* a replay re-publishes the same event_id */
    }
    json_object_put(o);
}

static vt_map_t bad_keys;   /* key of a malformed command -> ledger index */
static vt_map_t dlq_count;  /* key of a malformed command -> times dead-lettered */

static void on_dead_letter(const rd_kafka_message_t *m, void *arg) {
    const char *dlq = arg, *want_src = strcmp(dlq, "orders.dlq") == 0 ? "orders.commands" : "inventory.commands";
    static const char *const hdrs[] = {"dlq-error", "dlq-source-partition", "dlq-source-offset", "dlq-service"};
    char key[256] = "", reason[64] = "", src[64] = "", h[512];
    int64_t *i;
    int added;

    res->dlq_read++;
    if (m->key) snprintf(key, sizeof(key), "%.*s", (int)m->key_len, (const char *)m->key);
    vx_kafka_header(m, "dlq-reason", reason, sizeof(reason));
    vx_kafka_header(m, "dlq-source-topic", src, sizeof(src));
    if (!(i = vt_map_get(&bad_keys, key))) {
        violation(4, "%s offset %lld: key %s (dlq-reason %s, dlq-error %s) is not a malformed command of the soak",
                  dlq, (long long)m->offset, key, reason, vx_kafka_header(m, "dlq-error", h, sizeof(h)) ? h : "-");
        return;
    }
    soak_cmd_t *c = soak_ledger_at((size_t)*i);
    if (strcmp(reason, c->reason) != 0 || strcmp(src, c->topic) != 0 || strcmp(src, want_src) != 0)
        violation(4, "%s: %s has dlq-reason %s from %s, expected %s from %s", dlq, key, reason, src, c->reason, c->topic);
    for (size_t k = 0; k < sizeof(hdrs) / sizeof(hdrs[0]); k++)
        if (!vx_kafka_header(m, hdrs[k], h, sizeof(h)) || !h[0]) violation(4, "%s: %s has no header %s", dlq, key, hdrs[k]);
    int64_t *n = vt_map_put(&dlq_count, key, 0, &added);
    if (n) ++*n;
}

static int read_topics(char *err, size_t errsz) {
    for (size_t i = 0; i < soak_ledger_count(); i++) {
        int added;
        if (soak_ledger_at(i)->kind == SOAK_BAD) vt_map_put(&bad_keys, soak_ledger_at(i)->key, (int64_t)i, &added);
    }
    return soak_read_topic("orders.results", on_result, NULL, err, errsz) ||
                   soak_read_topic("inventory.events", on_event, NULL, err, errsz) ||
                   soak_read_topic("orders.dlq", on_dead_letter, "orders.dlq", err, errsz) ||
                   soak_read_topic("inventory.dlq", on_dead_letter, "inventory.dlq", err, errsz)
               ? -1
               : 0;
}

/* ---- check 1: one final outcome per accepted command --------------------------------------------- */

static order_t *order_of(const char *id) {
    int64_t *i = vt_map_get(&order_by_id, id);
    return i ? &orders[*i] : NULL;
}

static void check_order(const soak_cmd_t *c, const char *how) {
    order_t *o = order_of(c->order_id);

    if (!o) {
        violation(1, "key %s (%s) is not in the orders database (order %s)", c->key, how, c->order_id);
        return;
    }
    if (strcmp(o->key, c->key) != 0) violation(1, "order %s belongs to key %s, not %s", o->id, o->key, c->key);
    if (o->status == 'P') violation(1, "order %s (key %s, %s) is still PENDING", o->id, c->key, how);
    if (!o->last_own)
        violation(1, "order %s (key %s, %s, %s) has no result on orders.results", o->id, c->key, how, status_name(o->status));
    else if (o->last_own != o->status)
        violation(1, "order %s (key %s): the latest result says %s, the database %s", o->id, c->key,
                  status_name(o->last_own), status_name(o->status));
    if (o->own_ok && o->own_rej)
        violation(1, "order %s (key %s) has both a CONFIRMED/CANCELLED and a REJECTED result", o->id, c->key);
    if (o->status == 'X' && !c->cancel_sent)
        violation(1, "order %s (key %s) is CANCELLED but nobody cancelled it", o->id, c->key);
    if (c->final_code == 201 && !(o->status == 'C' || (o->status == 'X' && c->cancel_sent)))
        violation(1, "order %s (key %s) was answered 201 but is %s", o->id, c->key, status_name(o->status));
    if (c->final_code == 409 && o->status != 'R')
        violation(1, "order %s (key %s) was answered 409 but is %s", o->id, c->key, status_name(o->status));
}

static void check_cancel(const soak_cmd_t *c) {
    int64_t *r = vt_map_get(&cancel_result, c->key);
    order_t *o = order_of(c->order_id);

    if (!r) {
        violation(1, "CancelOrder %s of order %s has no result on orders.results", c->key, c->order_id);
        return;
    }
    if (o && strcmp(o->cancel_key, c->key) == 0 && o->status != 'X')
        violation(1, "CancelOrder %s cancelled order %s, which is %s", c->key, o->id, status_name(o->status));
    if (!o && *r != 'N')
        violation(1, "CancelOrder %s of unknown order %s was answered %s", c->key, c->order_id, status_name((char)*r));
}

static void check_restock(const soak_cmd_t *c) {
    int64_t *r = vt_map_get(&restocked, c->key);
    if (!r)
        violation(1, "Restock %s (%ld of %s) has no Restocked event", c->key, c->lines[0].qty, c->lines[0].product);
    else if (*r % 1000 > 1)
        violation(3, "Restock %s was applied %lld times", c->key, (long long)(*r % 1000));
    else if (*r / 1000 != c->lines[0].qty)
        violation(1, "Restock %s of %ld was recorded as %lld", c->key, c->lines[0].qty, (long long)(*r / 1000));
}

static long check_outcomes(void) {
    long n = 0;
    for (size_t i = 0; i < soak_ledger_count(); i++) {
        soak_cmd_t *c = soak_ledger_at(i);
        char how[32];
        if (c->kind == SOAK_HTTP && c->final_code) {
            snprintf(how, sizeof(how), "HTTP %d", c->final_code);
            check_order(c, how);
        } else if (c->kind == SOAK_PLACE && c->acked) {
            check_order(c, "acknowledged by the broker");
        } else if (c->kind == SOAK_CANCEL && c->acked) {
            check_cancel(c);
        } else if (c->kind == SOAK_RESTOCK && c->acked) {
            check_restock(c);
        } else {
            continue;
        }
        n++;
    }
    for (long i = 0; i < norders; i++)
        if (orders[i].status == 'P') violation(1, "order %s (key %s) is still PENDING", orders[i].id, orders[i].key);
    return n;
}

/* ---- check 2: stock ------------------------------------------------------------------------------ */

static void check_product(prod_t *p) {
    long long db = p->db[F_INITIAL] + p->db[F_RESTOCKED] - p->db[F_RESERVED] + p->db[F_RELEASED];
    long long ev = p->ev[F_INITIAL] + p->ev[F_RESTOCKED] - p->ev[F_RESERVED] + p->ev[F_RELEASED];

    if (p->in_db && db != p->stock)
        violation(2, "%s: database %lld + %lld - %lld + %lld = %lld, but the stock is %lld", p->name, p->db[F_INITIAL],
                  p->db[F_RESTOCKED], p->db[F_RESERVED], p->db[F_RELEASED], db, p->stock);
    if (p->in_db && ev != p->stock)
        violation(2, "%s: inventory.events %lld + %lld - %lld + %lld = %lld, but the stock is %lld", p->name,
                  p->ev[F_INITIAL], p->ev[F_RESTOCKED], p->ev[F_RESERVED], p->ev[F_RELEASED], ev, p->stock);
    for (int f = 0; f < 4; f++)
        if (p->db[f] != p->ev[f])
            violation(2, "%s: the database and inventory.events disagree on %s (%lld, %lld)", p->name,
                      (const char *[]){"initial", "restocked", "reserved", "released"}[f], p->db[f], p->ev[f]);
    if (p->sent[0] != p->ev[F_INITIAL] || p->sent[1] != p->ev[F_RESTOCKED])
        violation(2, "%s: the soak's acknowledged Restocks add %lld + %lld, the events %lld + %lld", p->name, p->sent[0],
                  p->sent[1], p->ev[F_INITIAL], p->ev[F_RESTOCKED]);
    if (p->stock < 0) violation(2, "%s: stock %lld", p->name, p->stock);
    if (p->holds != p->confirmed)
        violation(2, "%s: holds add up to %lld, the CONFIRMED orders to %lld", p->name, p->holds, p->confirmed);
    if (p->holds != p->ev[F_RESERVED] - p->ev[F_RELEASED])
        violation(2, "%s: holds add up to %lld, reserved - released to %lld", p->name, p->holds,
                  p->ev[F_RESERVED] - p->ev[F_RELEASED]);
}

static void check_order_holds(const order_t *o) {
    for (int k = 0; k < o->nitems; k++)
        if (o->status == 'C' && o->held[k] != o->qty[k])
            violation(2, "CONFIRMED order %s (key %s) holds %lld of %s, its lines say %lld", o->id, o->key, o->held[k],
                      prods[o->pidx[k]].name, o->qty[k]);
    if (o->held_other) violation(2, "order %s holds a product it did not order", o->id);
}

static long check_stock(void) {
    for (size_t i = 0; i < soak_ledger_count(); i++) {
        soak_cmd_t *c = soak_ledger_at(i);
        if (c->kind == SOAK_RESTOCK && c->acked) prods[prod_index(c->lines[0].product)].sent[c->seed ? 0 : 1] += c->lines[0].qty;
    }
    for (long i = 0; i < norders; i++) {
        if (orders[i].status != 'C') continue;
        for (int k = 0; k < orders[i].nitems; k++) prods[orders[i].pidx[k]].confirmed += orders[i].qty[k];
    }
    for (long i = 0; i < norders; i++) check_order_holds(&orders[i]);
    for (int i = 0; i < nprods; i++) check_product(&prods[i]);
    return nprods;
}

/* ---- check 3: nothing applied twice (the topic parts ran while reading) ----------------------------- */

static long check_once(void) {
    for (size_t i = 0; i < order_keys.cap; i++)
        if (order_keys.keys[i] && order_keys.vals[i] > 1)
            violation(3, "key %s has %lld orders", order_keys.keys[i], (long long)order_keys.vals[i]);
    return (long)(order_keys.n + event_by_key.n + result_event_by_key.n);
}

/* ---- check 4: dead letters ------------------------------------------------------------------------ */

static long check_dead_letters(void) {
    long n = 0;
    for (size_t i = 0; i < soak_ledger_count(); i++) {
        soak_cmd_t *c = soak_ledger_at(i);
        if (c->kind != SOAK_BAD || !c->acked) continue;
        n++;
        if (!vt_map_get(&dlq_count, c->key))
            violation(4, "malformed command %s (%s, %s) is not in the dead-letter topic", c->key, c->topic, c->reason);
    }
    return n;
}

/* ---- check 5: the same answer each time ------------------------------------------------------------- */

/* What an HTTP answer must be for an order in status s: 201 CONFIRMED, or 409 with s. */
static int answer_fits(const soak_answer_t *a, char s) {
    return s == 'C' ? a->code == 201 && a->status == 'C' : (s == 'R' || s == 'X') && a->code == 409 && a->status == s;
}

static void check_answers(const soak_cmd_t *c) {
    int finals = 0;
    for (int i = 0; i < c->nanswers; i++) {
        const soak_answer_t *a = &c->answers[i];
        if (a->id < 0) violation(5, "key %s: answer %d (HTTP %d) names another order than %s", c->key, i + 1, a->code, c->order_id);
        if (a->code == 201 || a->code == 409) finals++;
        if (a->code == 201 && a->status != 'C') violation(5, "key %s: HTTP 201 with status %c", c->key, a->status);
        if (a->code == 409 && a->status != 'R') violation(5, "key %s: HTTP 409 with status %s", c->key, status_name(a->status));
        if (a->code && a->code != 201 && a->code != 202 && a->code != 409 && a->code != 429 && a->code < 500)
            violation(5, "key %s: answer %d is HTTP %d", c->key, i + 1, a->code);
    }
    if (finals > 1) violation(5, "key %s: %d final answers", c->key, finals);
}

static struct {
    pthread_mutex_t lock;
    size_t next;
    soak_cmd_t **list;
    size_t n;
    int64_t end;     /* REASK_BUDGET_MS after the first */
    long unanswered;
} reask = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Asks again with the same key and body; the answer must be what the database says, and fit the first. */
static void reask_one(vt_http_conn_t *conn, soak_cmd_t *c) {
    order_t *o = order_of(c->order_id);
    soak_answer_t a = {0};
    soak_reply_t r;

    for (int i = 0; i < REASK_ATTEMPTS && vt_mono_ms() < reask.end; i++) {
        soak_http_post(conn, c, &a, &r);
        if (a.code && a.code != 429 && a.code < 500) break;
        vt_sleep_ms(r.retry_after_s > 1 ? r.retry_after_s * 1000 : 1000);
    }
    pthread_mutex_lock(&reask.lock);
    res->reasked++;
    if (!a.code || a.code == 429 || a.code >= 500) {
        reask.unanswered++;
        violation(5, "key %s asked again: no final answer, the last HTTP %d (order %s is %s)", c->key, a.code,
                  c->order_id, o ? status_name(o->status) : "not in the database");
    } else if (a.id < 0 || (o && !answer_fits(&a, o->status)))
        violation(5, "key %s asked again: HTTP %d %s for order %s, the database says %s", c->key, a.code,
                  status_name(a.status), c->order_id, o ? status_name(o->status) : "(no order)");
    else if ((c->final_code == 201 && !(a.code == 201 || (a.status == 'X' && c->cancel_sent))) ||
             (c->final_code == 409 && a.code != 409))
        violation(5, "key %s: first answered %d, asked again %d %s", c->key, c->final_code, a.code, status_name(a.status));
    pthread_mutex_unlock(&reask.lock);
}

static void *reask_worker(void *arg) {
    vt_http_conn_t *conn = NULL;
    char err[SOAK_ERR];
    (void)arg;
    if (vt_http_conn_new(&conn, opts->gateway, err, sizeof(err))) soak_say("reask: %s", err);
    for (;;) {
        soak_cmd_t *c = NULL;
        pthread_mutex_lock(&reask.lock);
        if (reask.next < reask.n && vt_mono_ms() < reask.end) c = reask.list[reask.next++];
        pthread_mutex_unlock(&reask.lock);
        if (!c || !conn) break;
        reask_one(conn, c);
    }
    vt_http_conn_free(conn);
    return NULL;
}

/* Every client that retried or got 202, then others at random, up to SOAK_REASK_MAX. */
static void pick_reasks(void) {
    size_t total = soak_ledger_count(), cap = (size_t)opts->reask_max;
    unsigned rng = opts->seed ^ 0x2EA5u;

    reask.list = calloc(cap ? cap : 1, sizeof(*reask.list));
    for (int pass = 0; pass < 2 && reask.list; pass++)
        for (size_t i = 0; i < total && reask.n < cap; i++) {
            soak_cmd_t *c = soak_ledger_at(i);
            int keen = c->nanswers > 1 || c->final_code == 202;
            if (c->kind != SOAK_HTTP || !c->final_code) continue;
            if (pass == 0 ? keen : !keen && soak_uniform(&rng) < 0.05) reask.list[reask.n++] = c;
        }
}

static long check_same_answers(void) {
    long n = 0;
    pthread_t th[16];
    int nth = 0;

    for (size_t i = 0; i < soak_ledger_count(); i++) {
        soak_cmd_t *c = soak_ledger_at(i);
        if (c->kind != SOAK_HTTP) continue;
        check_answers(c);
        n++;
    }
    pick_reasks();
    reask.end = vt_mono_ms() + REASK_BUDGET_MS;
    for (; nth < 16 && nth < opts->http_threads; nth++)
        if (pthread_create(&th[nth], NULL, reask_worker, NULL)) break;
    for (int i = 0; i < nth; i++) pthread_join(th[i], NULL);
    if (reask.next < reask.n)
        printf("  (%zu of %zu clients not asked again: the %d s for it ran out)\n", reask.n - reask.next, reask.n,
               REASK_BUDGET_MS / 1000);
    if (reask.unanswered) { /* a settled system that does not answer: what does the gateway say of itself? */
        char h[4096];
        printf("  gateway GET /health: HTTP %d %s\n", soak_http_get(opts->gateway, "/health", h, sizeof(h)), h);
    }
    free(reask.list);
    return n;
}

/* ---- 202 -> decided latency, by the outage it waited on ---------------------------------------------- */

const char *const soak_lat_class_names[SOAK_LAT_CLASSES] = {"service kill", "broker/db kill", "no kill"};

/* A component killed this long before an order's first attempt may still be down or recovering:
 * a restart of the broker takes 5-10 s, of a service a few seconds plus its group join. */
#define LAT_LOOKBACK_MS 5000

static int is_infra(int comp) { return comp == SOAK_POSTGRES || comp == SOAK_KAFKA; }

/* The outage an order waited on: the kills and exits from LAT_LOOKBACK_MS before its first attempt
 * until its decision. Any of the broker or the database among them: SOAK_LAT_INFRA (theirs is the
 * slower recovery, and everything waits on it); else any of a service (a kill, or a crash point's
 * exit): SOAK_LAT_SERVICE; else SOAK_LAT_NONE. */
static int lat_class(const soak_chaos_event_t *ev, size_t nev, int64_t from, int64_t to) {
    int cls = SOAK_LAT_NONE;
    for (size_t i = 0; i < nev; i++) {
        if (ev[i].at < from - LAT_LOOKBACK_MS || ev[i].at > to) continue;
        if (is_infra(ev[i].comp)) return SOAK_LAT_INFRA;
        cls = SOAK_LAT_SERVICE;
    }
    return cls;
}

static void lat_fill(soak_lat_t *l, double *v, long n) {
    l->n = n;
    if (!n) return;
    qsort(v, (size_t)n, sizeof(*v), vt_cmp_double);
    l->p50 = vt_percentile(v, n, 50);
    l->p90 = vt_percentile(v, n, 90);
    l->p99 = vt_percentile(v, n, 99);
    l->max = v[n - 1];
}

static void latency_202(void) {
    size_t total = soak_ledger_count(), nev = 0;
    soak_chaos_event_t *ev = soak_chaos_events(&nev);
    double *v = calloc(total + 1, sizeof(*v)), *cv[SOAK_LAT_CLASSES], *kv[SOAK_LAT_CLASSES];
    long n = 0, cn[SOAK_LAT_CLASSES] = {0}, kn[SOAK_LAT_CLASSES] = {0};
    int ok = v != NULL;

    for (int k = 0; k < SOAK_LAT_CLASSES; k++) {
        cv[k] = calloc(total + 1, sizeof(double));
        kv[k] = calloc(total + 1, sizeof(double));
        ok = ok && cv[k] && kv[k];
    }
    for (size_t i = 0; i < nev; i++) res->class_events[is_infra(ev[i].comp) ? SOAK_LAT_INFRA : SOAK_LAT_SERVICE]++;
    for (size_t i = 0; ok && i < total; i++) {
        soak_cmd_t *c = soak_ledger_at(i);
        order_t *o;
        int64_t at;
        int k;
        int http = c->kind == SOAK_HTTP && c->final_code == 202, kafka = c->kind == SOAK_PLACE && c->acked;
        if (!http && !kafka) continue;
        if (!(at = soak_load_decided_at(c->order_id)) && (o = order_of(c->order_id)) && o->status != 'P')
            at = o->updated_ms; /* seen only after the live reader stopped: the database's time */
        if (!at) continue;
        /* an HTTP order's outage window opens at its first attempt, a Kafka order's at its acknowledgement */
        k = lat_class(ev, nev, http ? c->t_first : c->t_final, at);
        if (http) {
            v[n++] = at > c->t_final ? (double)(at - c->t_final) : 0;
            cv[k][cn[k]++] = v[n - 1];
        } else {
            kv[k][kn[k]++] = at > c->t_final ? (double)(at - c->t_final) : 0;
        }
    }
    lat_fill(&res->lat, v, n);
    for (int k = 0; k < SOAK_LAT_CLASSES; k++) {
        lat_fill(&res->lat_class[k], cv[k], cn[k]);
        lat_fill(&res->kafka_class[k], kv[k], kn[k]);
        free(cv[k]);
        free(kv[k]);
    }
    free(v);
    free(ev);
}

/* ---- all of it ---------------------------------------------------------------------------------------- */

static void tally_statuses(void) {
    res->orders_db = norders;
    for (long i = 0; i < norders; i++) {
        char s = orders[i].status;
        res->confirmed += s == 'C';
        res->rejected += s == 'R';
        res->cancelled += s == 'X';
        res->pending += s == 'P';
    }
}

static void report_check(int k, const char *what, long checked) {
    if (shown[k] > SHOW_MAX) printf("  ... and %ld more\n", shown[k] - SHOW_MAX);
    printf("check %d %-62s %8ld checked, %ld violations%s\n", k, what, checked, res->violations[k],
           res->violations[k] ? "  <-- FAILED" : "");
    fflush(stdout);
}

int soak_check_run(const soak_opts_t *o, soak_check_result_t *r, char *err, size_t errsz) {
    long n;

    opts = o;
    res = r;
    if (load_databases(err, errsz) || read_topics(err, errsz)) return -1;
    tally_statuses();
    soak_say("read %ld orders, %ld results, %ld inventory events, %ld dead letters", norders, r->results_read,
             r->events_read, r->dlq_read);
    n = check_outcomes();
    report_check(1, "accepted commands have exactly one final outcome", n);
    n = check_stock();
    report_check(2, "stock adds up (database, events), never negative, holds", n);
    n = check_once();
    report_check(3, "no command applied twice", n);
    n = check_dead_letters();
    report_check(4, "dead letters are exactly the malformed commands", n);
    n = check_same_answers();
    report_check(5, "every client got the same answer each time", n);
    latency_202();
    return 0;
}
