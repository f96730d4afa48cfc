/* it_sql.c - the services' SQL functions (ord_apply_batch, inv_apply_batch) on the real PostgreSQL,
 * with no broker and no service process: a call reaches its rows by key, whatever the tables held
 * when its statements were planned.
 *
 * Each service plans the statements of these functions once per connection (plan_cache_mode), on
 * the table statistics of that moment. A service that starts on empty tables keeps the plans it made
 * then while the tables grow; a plan that read a whole table into a hash (cheap at 200 rows) then
 * reads 10^5 rows at every call. The tests below make the plans on empty tables, with autovacuum off
 * so that no ANALYZE replans them, grow the tables to GROW rows, and count the rows each kind of call
 * reads (pg_stat_xact_user_tables, before and after the call in one transaction). A call of one or
 * two entries must read a handful of rows, not the table. */
#include "harness.h"
#include "vx_pg.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ORD_DB "orders_itsql"
#define INV_DB "inventory_itsql"
#define GROW 20000     /* rows the tables grow by after the plans are made */
#define BATCH 1000     /* entries per growing call */
#define MAX_READ 40    /* rows a call of one or two entries may read from the watched tables */

static void sql_fini(void) { it_test_fini(); }
TestSuite(sql, .fini = sql_fini);

/* A connection to `db` with the service's migrations applied and autovacuum off on `tables`
 * (comma-separated), so that the plans made next are never replanned by an ANALYZE. */
static PGconn *db_open(const char *db, const char *service, const char *tables) {
    it_test_begin();
    char err[IT_ERR_SIZE], dirs[2 * 4096 + 64], sql[512];
    PGconn *c = NULL;
    IT_OK(it_pg_connect(&c, db, err, sizeof err), err);
    snprintf(dirs, sizeof dirs, "%s/common/migrations:%s/%s/migrations", it_root(), it_root(), service);
    cr_assert(vx_pg_migrate(c, dirs, err, sizeof err) >= 0, "migrating %s: %s", db, err);
    for (const char *p = tables; *p;) {
        size_t n = strcspn(p, ",");
        snprintf(sql, sizeof sql, "ALTER TABLE %.*s SET (autovacuum_enabled = off)", (int)n, p);
        IT_OK(vx_pg_exec(c, sql, err, sizeof err), err);
        p += n + (p[n] == ',');
    }
    return c;
}

/* Runs `sql` (one parameter, $1) and returns row 0, column 0 as an integer. */
static int64_t sql_int(PGconn *c, const char *sql, const char *param) {
    PGresult *r = PQexecParams(c, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
    cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0),
              "%s\n  -> %s", sql, PQresultErrorMessage(r));
    int64_t v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

/* Rows read from `tables` so far in this transaction, by sequential and by index scans. */
static int64_t rows_read(PGconn *c, const char *tables) {
    return sql_int(c,
                   "SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)"
                   "  FROM pg_stat_xact_user_tables WHERE relname = ANY (string_to_array($1, ','))",
                   tables);
}

/* Calls `fn` (ord_apply_batch or inv_apply_batch) on the jsonb array `call` in a transaction of its
 * own; returns the rows it returned, and in *read the rows it read from `tables`. */
static int64_t apply(PGconn *c, const char *fn, const char *call, const char *tables, int64_t *read) {
    char err[IT_ERR_SIZE], sql[128];
    IT_OK(vx_pg_exec(c, "BEGIN", err, sizeof err), err);
    int64_t before = read ? rows_read(c, tables) : 0;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s($1::jsonb)", fn);
    int64_t rows = sql_int(c, sql, call);
    if (read) *read = rows_read(c, tables) - before;
    IT_OK(vx_pg_exec(c, "COMMIT", err, sizeof err), err);
    return rows;
}

/* Calls `fn` GROW / BATCH times, on the entries `entry` makes of i (an SQL expression over the
 * integer i), i from `from` on. */
static void grow(PGconn *c, const char *fn, const char *entry, int from) {
    char sql[2048], lo[32];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM %s((SELECT jsonb_agg(%s ORDER BY i)"
             " FROM generate_series($1::int, $1::int + %d) AS i))",
             fn, entry, BATCH - 1);
    for (int at = from; at < from + GROW; at += BATCH) {
        snprintf(lo, sizeof lo, "%d", at);
        cr_assert_eq(sql_int(c, sql, lo), BATCH, "growing call at %d", at);
    }
}

/* ---- order-svc ------------------------------------------------------------------------------- */

#define ORD_TABLES "orders,order_history,outbox"
#define ITEMS "[{\"product_id\":\"P-1\",\"quantity\":1}]"
#define PLACE(k) "{\"c\":{\"type\":\"PlaceOrder\",\"idempotency_key\":\"" k "\",\"customer_id\":\"c\"," \
                 "\"items\":" ITEMS "},\"oid\":\"" k "\",\"cid\":\"cid-" k "\",\"hash\":\"h\"}"
#define RESERVED(k) "{\"c\":{\"type\":\"StockReserved\",\"idempotency_key\":\"order:" k ":reserve\"," \
                    "\"order_id\":\"" k "\",\"items\":" ITEMS "},\"oid\":\"" k "\",\"cid\":\"e\"}"
#define CANCEL(k) "{\"c\":{\"type\":\"CancelOrder\",\"idempotency_key\":\"cancel-" k "\",\"order_id\":\"" k \
                  "\"},\"oid\":\"" k "\",\"cid\":\"c\"}"

/* The kinds of call order-svc makes: new orders and answers (the fast paths), a mix of commands
 * and a replayed PlaceOrder of a decided order (the general path), with the rows each returns. */
static void ord_calls(PGconn *c, const char *const calls[4], int64_t read[4]) {
    static const int64_t want_rows[4] = {1, 1, 3, 1}; /* the CancelOrder: ReleaseStock and OrderResult */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(apply(c, "ord_apply_batch", calls[i], ORD_TABLES, read ? &read[i] : NULL), want_rows[i],
                     "rows returned by %s", calls[i]);
}

Test(sql, orders_calls_read_by_key_after_the_tables_grow) {
    PGconn *c = db_open(ORD_DB, "order-svc", ORD_TABLES);
    static const char *const warm[4] = {"[" PLACE("w1") "]", "[" RESERVED("w1") "]",
                                        "[" PLACE("w2") "," CANCEL("w1") "]", "[" PLACE("w1") "]"};
    static const char *const calls[4] = {"[" PLACE("m1") "]", "[" RESERVED("m1") "]",
                                         "[" PLACE("m2") "," CANCEL("m1") "]", "[" PLACE("m1") "]"};
    static const char *const what[4] = {"a new PlaceOrder", "its StockReserved",
                                        "a PlaceOrder with a CancelOrder", "a replayed PlaceOrder"};
    int64_t read[4];

    ord_calls(c, warm, NULL); /* plans made on (nearly) empty tables */
    grow(c, "ord_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'PlaceOrder', 'idempotency_key', 'g' || i,"
         " 'customer_id', 'c', 'items', '" ITEMS "'::jsonb), 'oid', 'g' || i, 'cid', 'x', 'hash', 'h')",
         0);
    grow(c, "ord_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'StockReserved', 'idempotency_key',"
         " 'order:g' || i || ':reserve', 'order_id', 'g' || i, 'items', '" ITEMS "'::jsonb), 'oid', 'g' || i)",
         0);
    cr_assert_geq(sql_int(c, "SELECT count(*) FROM orders", NULL), GROW);

    ord_calls(c, calls, read);
    for (int i = 0; i < 4; i++) {
        cr_log_info("%s read %" PRId64 " rows of " ORD_TABLES, what[i], read[i]);
        cr_expect_leq(read[i], MAX_READ, "%s read %" PRId64 " rows of " ORD_TABLES " (%d orders): a table scan",
                      what[i], read[i], GROW);
    }
    PQfinish(c);
}

/* ---- inventory-svc --------------------------------------------------------------------------- */

#define INV_TABLES "holds,released_orders,outbox"
#define RESERVE(k, q) "{\"c\":{\"type\":\"ReserveStock\",\"idempotency_key\":\"" k "\",\"order_id\":\"o-" k "\"," \
                      "\"items\":[{\"product_id\":\"P-1\",\"quantity\":" #q "}]},\"cid\":\"c\"}"
#define RELEASE(k) "{\"c\":{\"type\":\"ReleaseStock\",\"idempotency_key\":\"rel-" k "\",\"order_id\":\"o-" k "\"}}"

Test(sql, inventory_calls_read_by_key_after_the_tables_grow) {
    PGconn *c = db_open(INV_DB, "inventory-svc", INV_TABLES);
    static const char *const warm[4] = {"[" RESERVE("w1", 1) "]", "[" RELEASE("w1") "]", "[" RESERVE("w1", 1) "]",
                                        "[" RESERVE("w2", 5000000) "]"};
    static const char *const calls[4] = {"[" RESERVE("m1", 1) "]", "[" RELEASE("m1") "]", "[" RESERVE("m1", 1) "]",
                                         "[" RESERVE("m2", 5000000) "]"};
    static const char *const what[4] = {"a ReserveStock that fits", "a ReleaseStock", "a replayed ReserveStock",
                                        "a ReserveStock that does not fit"};
    int64_t read[4];

    cr_assert_eq(apply(c, "inv_apply_batch",
                       "[{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"seed\",\"product_id\":\"P-1\","
                       "\"quantity\":1000000}}]",
                       INV_TABLES, NULL),
                 1);
    for (int i = 0; i < 4; i++) /* plans made on (nearly) empty tables */
        cr_assert_eq(apply(c, "inv_apply_batch", warm[i], INV_TABLES, NULL), 1, "%s", warm[i]);
    grow(c, "inv_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'ReserveStock', 'idempotency_key', 'g' || i,"
         " 'order_id', 'o-g' || i, 'items', '" ITEMS "'::jsonb))",
         0);
    grow(c, "inv_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'ReleaseStock', 'idempotency_key', 'rel-g' || i,"
         " 'order_id', 'o-g' || i))",
         0);
    cr_assert_geq(sql_int(c, "SELECT count(*) FROM released_orders", NULL), GROW);

    for (int i = 0; i < 4; i++) {
        cr_assert_eq(apply(c, "inv_apply_batch", calls[i], INV_TABLES, &read[i]), 1, "%s", calls[i]);
        cr_log_info("%s read %" PRId64 " rows of " INV_TABLES, what[i], read[i]);
        cr_expect_leq(read[i], MAX_READ, "%s read %" PRId64 " rows of " INV_TABLES " (%d orders): a table scan",
                      what[i], read[i], GROW);
    }
    PQfinish(c);
}

int main(int argc, char **argv) {
    static const char *const databases[] = {ORD_DB, INV_DB, NULL};
    return it_main(argc, argv, databases);
}
