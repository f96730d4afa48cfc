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
 * two entries must read a handful of rows, not the table. Each runs twice: on tables never analyzed,
 * as a new database has them, and on tables ANALYZEd while empty (a vacuumdb --analyze of a new
 * database, an autoanalyze of a tiny table), whose statistics promise the planner no rows at all.
 *
 * The fast paths (order-svc's place path, a pipeline of prepared statements that vx_fast runs as
 * the service does; ord_apply_batch, inv_apply_batch) must also do exactly what the general code
 * (ord_apply_general, inv_apply_general) does: hundreds of random calls are each applied both ways
 * from the same state, and the rows returned and every table must come out the same.
 *
 * Calls of 1,000 entries must do work linear in their size at every plan node (no quadratic join),
 * and vx_pg_migrate must apply a numbered file once and a repeatable one (R_*.sql, where the
 * functions live) again whenever it changes. The outbox's delivery state (outbox_pending) and its
 * prune are checked here too. */
#include "harness.h"
#include "vx_fast.h"
#include "vx_outbox.h"
#include "vx_pg.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ORD_DB "orders_itsql"
#define INV_DB "inventory_itsql"
#define GROW 20000     /* rows the tables grow by after the plans are made */
#define BATCH 1000     /* entries per growing call */
#define MIG_DB "migrate_itsql"
#define MAX_READ 40    /* rows a call of one or two entries may read from the watched tables */

static void sql_fini(void) { it_test_fini(); }
TestSuite(sql, .fini = sql_fini);

/* A connection to `db` with the service's migrations applied and autovacuum off on `tables`
 * (comma-separated), so that the plans made next are never replanned by an ANALYZE; with `analyzed`,
 * the empty tables are ANALYZEd first. */
static PGconn *db_open(const char *db, const char *service, const char *tables, int analyzed) {
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
        if (analyzed) {
            snprintf(sql, sizeof sql, "VACUUM ANALYZE %.*s", (int)n, p);
            IT_OK(vx_pg_exec(c, sql, err, sizeof err), err);
        }
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

static void exec_ok(PGconn *c, const char *sql) {
    char err[IT_ERR_SIZE];
    IT_OK(vx_pg_exec(c, sql, err, sizeof err), err);
}

/* Rows read from `tables` by sequential and by index scans, as this backend counts them: this
 * transaction's and those it has not reported yet. Callers take the difference across a call. */
static int64_t rows_read(PGconn *c, const char *tables) {
    return sql_int(c,
                   "SELECT coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)"
                   "  FROM pg_stat_xact_user_tables WHERE relname = ANY (string_to_array($1, ','))",
                   tables);
}

/* Applies `call` as the service does, in the transaction open on c: through a fast path's pipeline
 * when one of `paths` (may be NULL) takes every entry (*piped then 1), else, or after the pipeline
 * failed, through function fn. Its result (the caller clears). */
static PGresult *service_call(PGconn *c, vx_fast_t *paths, const char *fn, const char *call, int *piped) {
    char sql[128];
    PGresult *r;

    *piped = 0;
    if (paths) {
        json_object *arr = json_tokener_parse(call), *e[8];
        size_t n = json_object_array_length(arr);
        cr_assert(n <= 8);
        for (size_t i = 0; i < n; i++) e[i] = json_object_array_get_idx(arr, i);
        int path = vx_fast_call_path(paths, e, n);
        if (path >= 0) {
            char err[IT_ERR_SIZE];
            IT_OK(vx_pg_exec(c, "SAVEPOINT piped", err, sizeof err), err);
            r = vx_fast_run(paths, c, path, e, n);
            *piped = PQresultStatus(r) == PGRES_TUPLES_OK;
            json_object_put(arr);
            if (*piped) return r;
            PQclear(r);
            IT_OK(vx_pg_exec(c, "ROLLBACK TO piped", err, sizeof err), err);
        } else {
            json_object_put(arr);
        }
    }
    snprintf(sql, sizeof sql, "SELECT * FROM %s($1::jsonb)", fn);
    return PQexecParams(c, sql, 1, NULL, &call, NULL, NULL, 0);
}

/* The fast paths of the database c is on, checked against the shape of `fn`'s rows as the service
 * checks them. */
static vx_fast_t *paths_load(PGconn *c, const char *fn) {
    char sql[128], err[256];
    PGresult *r;
    vx_fast_t *f;

    snprintf(sql, sizeof sql, "SELECT * FROM %s($1::jsonb)", fn);
    r = PQprepare(c, "it_shape", sql, 1, NULL);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    r = PQdescribePrepared(c, "it_shape");
    f = vx_fast_load(c, r, err, sizeof err);
    PQclear(r);
    PQclear(PQexec(c, "DEALLOCATE it_shape"));
    cr_assert_not_null(f, "%s", err);
    return f;
}

/* Applies the jsonb array `call` as the service does (service_call; paths may be NULL) in a
 * transaction of its own; returns the rows it returned, and in *read the rows it read from `tables`. */
static int64_t apply(PGconn *c, vx_fast_t *paths, const char *fn, const char *call, const char *tables, int64_t *read) {
    char err[IT_ERR_SIZE];
    int piped;
    IT_OK(vx_pg_exec(c, "BEGIN", err, sizeof err), err);
    int64_t before = read ? rows_read(c, tables) : 0;
    PGresult *r = service_call(c, paths, fn, call, &piped);
    cr_assert_eq(PQresultStatus(r), PGRES_TUPLES_OK, "%s: %s", call, PQresultErrorMessage(r));
    int64_t rows = PQntuples(r);
    PQclear(r);
    if (read) *read = rows_read(c, tables) - before;
    IT_OK(vx_pg_exec(c, "COMMIT", err, sizeof err), err);
    return rows;
}

/* Calls `fn` GROW / BATCH times, on the entries `entry` makes of i (an SQL expression over the
 * integer i), i from 0 to GROW - 1. */
static void grow(PGconn *c, const char *fn, const char *entry) {
    char sql[2048], lo[32];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM %s((SELECT jsonb_agg(%s ORDER BY i)"
             " FROM generate_series($1::int, $1::int + %d) AS i))",
             fn, entry, BATCH - 1);
    for (int at = 0; at < GROW; at += BATCH) {
        snprintf(lo, sizeof lo, "%d", at);
        cr_assert_eq(sql_int(c, sql, lo), BATCH, "growing call at %d", at);
    }
}

/* ---- order-svc ------------------------------------------------------------------------------- */

#define ORD_TABLES "orders,order_history,outbox,early_cancels"
#define ITEMS "[{\"product_id\":\"P-1\",\"quantity\":1}]"
#define PLACE(k) "{\"c\":{\"type\":\"PlaceOrder\",\"idempotency_key\":\"" k "\",\"customer_id\":\"c\"," \
                 "\"items\":" ITEMS "},\"oid\":\"" k "\",\"cid\":\"cid-" k "\",\"hash\":\"h\"}"
#define RESERVED(k) "{\"c\":{\"type\":\"StockReserved\",\"idempotency_key\":\"order:" k ":reserve\"," \
                    "\"order_id\":\"" k "\",\"items\":" ITEMS "},\"oid\":\"" k "\",\"cid\":\"e\"}"
#define CANCEL(k) "{\"c\":{\"type\":\"CancelOrder\",\"idempotency_key\":\"cancel-" k "\",\"order_id\":\"" k \
                  "\"},\"oid\":\"" k "\",\"cid\":\"c\"}"

/* The kinds of call order-svc makes, as it makes them (service_call): new orders (the place path's
 * pipeline) and answers (ord_apply_batch's fast path), a mix of commands and a replayed PlaceOrder of
 * a decided order (the general path), with the rows each returns. */
static void ord_calls(PGconn *c, vx_fast_t *paths, const char *const calls[4], int64_t read[4]) {
    static const int64_t want_rows[4] = {1, 1, 3, 1}; /* the CancelOrder: ReleaseStock and OrderResult */
    for (int i = 0; i < 4; i++)
        cr_assert_eq(apply(c, paths, "ord_apply_batch", calls[i], ORD_TABLES, read ? &read[i] : NULL), want_rows[i],
                     "rows returned by %s", calls[i]);
}

static void orders_grow_then_read(const char *db, int analyzed) {
    PGconn *c = db_open(db, "order-svc", ORD_TABLES, analyzed);
    static const char *const warm[4] = {"[" PLACE("w1") "]", "[" RESERVED("w1") "]",
                                        "[" PLACE("w2") "," CANCEL("w1") "]", "[" PLACE("w1") "]"};
    static const char *const calls[4] = {"[" PLACE("m1") "]", "[" RESERVED("m1") "]",
                                         "[" PLACE("m2") "," CANCEL("m1") "]", "[" PLACE("m1") "]"};
    static const char *const what[4] = {"a new PlaceOrder", "its StockReserved",
                                        "a PlaceOrder with a CancelOrder", "a replayed PlaceOrder"};
    vx_fast_t *paths = paths_load(c, "ord_apply_batch"); /* its steps prepared on empty tables */
    int64_t read[4];

    ord_calls(c, paths, warm, NULL); /* plans made on (nearly) empty tables */
    grow(c, "ord_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'PlaceOrder', 'idempotency_key', 'g' || i,"
         " 'customer_id', 'c', 'items', '" ITEMS "'::jsonb), 'oid', 'g' || i, 'cid', 'x', 'hash', 'h')");
    grow(c, "ord_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'StockReserved', 'idempotency_key',"
         " 'order:g' || i || ':reserve', 'order_id', 'g' || i, 'items', '" ITEMS "'::jsonb), 'oid', 'g' || i)");
    cr_assert_geq(sql_int(c, "SELECT count(*) FROM orders", NULL), GROW);
    cr_assert_eq(sql_int(c, /* CancelOrders of orders not placed: early_cancels grows too */
                         "SELECT count(*) FROM ord_apply_batch((SELECT jsonb_agg(jsonb_build_object('c', jsonb_build_object("
                         "'type', 'CancelOrder', 'idempotency_key', 'cancel-u' || i, 'order_id', 'u' || i), 'oid', 'u' || i,"
                         " 'cid', 'c') ORDER BY i) FROM generate_series(1, $1::int) AS i))",
                         "1000"),
                 1000);

    ord_calls(c, paths, calls, read);
    for (int i = 0; i < 4; i++) {
        cr_log_info("%s read %" PRId64 " rows of " ORD_TABLES, what[i], read[i]);
        cr_expect_leq(read[i], MAX_READ, "%s read %" PRId64 " rows of " ORD_TABLES " (%d orders): a table scan",
                      what[i], read[i], GROW);
    }
    vx_fast_destroy(paths);
    PQfinish(c);
}

Test(sql, orders_calls_read_by_key_after_the_tables_grow) { orders_grow_then_read(ORD_DB, 0); }
Test(sql, orders_calls_read_by_key_after_tables_analyzed_empty_grow) { orders_grow_then_read(ORD_DB "_an", 1); }

/* ---- inventory-svc --------------------------------------------------------------------------- */

#define INV_TABLES "holds,released_orders,outbox"
#define RESERVE(k, q) "{\"c\":{\"type\":\"ReserveStock\",\"idempotency_key\":\"" k "\",\"order_id\":\"o-" k "\"," \
                      "\"items\":[{\"product_id\":\"P-1\",\"quantity\":" #q "}]},\"cid\":\"c\"}"
#define RELEASE(k) "{\"c\":{\"type\":\"ReleaseStock\",\"idempotency_key\":\"rel-" k "\",\"order_id\":\"o-" k "\"}}"

static void inventory_grow_then_read(const char *db, int analyzed) {
    PGconn *c = db_open(db, "inventory-svc", INV_TABLES, analyzed);
    static const char *const warm[4] = {"[" RESERVE("w1", 1) "]", "[" RELEASE("w1") "]", "[" RESERVE("w1", 1) "]",
                                        "[" RESERVE("w2", 5000000) "]"};
    static const char *const calls[4] = {"[" RESERVE("m1", 1) "]", "[" RELEASE("m1") "]", "[" RESERVE("m1", 1) "]",
                                         "[" RESERVE("m2", 5000000) "]"};
    static const char *const what[4] = {"a ReserveStock that fits", "a ReleaseStock", "a replayed ReserveStock",
                                        "a ReserveStock that does not fit"};
    int64_t read[4];

    cr_assert_eq(apply(c, NULL, "inv_apply_batch",
                       "[{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"seed\",\"product_id\":\"P-1\","
                       "\"quantity\":1000000}}]",
                       INV_TABLES, NULL),
                 1);
    for (int i = 0; i < 4; i++) /* plans made on (nearly) empty tables */
        cr_assert_eq(apply(c, NULL, "inv_apply_batch", warm[i], INV_TABLES, NULL), 1, "%s", warm[i]);
    grow(c, "inv_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'ReserveStock', 'idempotency_key', 'g' || i,"
         " 'order_id', 'o-g' || i, 'items', '" ITEMS "'::jsonb))");
    grow(c, "inv_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'ReleaseStock', 'idempotency_key', 'rel-g' || i,"
         " 'order_id', 'o-g' || i))");
    cr_assert_geq(sql_int(c, "SELECT count(*) FROM released_orders", NULL), GROW);

    for (int i = 0; i < 4; i++) {
        cr_assert_eq(apply(c, NULL, "inv_apply_batch", calls[i], INV_TABLES, &read[i]), 1, "%s", calls[i]);
        cr_log_info("%s read %" PRId64 " rows of " INV_TABLES, what[i], read[i]);
        cr_expect_leq(read[i], MAX_READ, "%s read %" PRId64 " rows of " INV_TABLES " (%d orders): a table scan",
                      what[i], read[i], GROW);
    }
    PQfinish(c);
}

Test(sql, inventory_calls_read_by_key_after_the_tables_grow) { inventory_grow_then_read(INV_DB, 0); }
Test(sql, inventory_calls_read_by_key_after_tables_analyzed_empty_grow) { inventory_grow_then_read(INV_DB "_an", 1); }

/* ---- migrations: numbered files once, repeatable files whenever they change ---------------------- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

Test(sql, a_repeatable_migration_is_applied_again_when_it_changes_and_only_then) {
    it_test_begin();
    char err[IT_ERR_SIZE], dir[] = "/tmp/vx-it-migrations-XXXXXX", v[64], r[64];
    PGconn *c = NULL;
    IT_OK(it_pg_connect(&c, MIG_DB, err, sizeof err), err);
    cr_assert_not_null(mkdtemp(dir));
    snprintf(v, sizeof v, "%s/001_t.sql", dir);
    snprintf(r, sizeof r, "%s/R_f.sql", dir);
    write_text(v, "CREATE TABLE t (x int);");
    write_text(r, "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';");

    cr_expect_eq(vx_pg_migrate(c, dir, err, sizeof err), 2, "first run: both files (%s)", err);
    cr_expect_eq(vx_pg_migrate(c, dir, err, sizeof err), 0, "nothing changed: nothing applied (%s)", err);
    write_text(r, "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 2';");
    write_text(v, "CREATE TABLE t (x int); -- a numbered file is never applied twice, edited or not");
    cr_expect_eq(vx_pg_migrate(c, dir, err, sizeof err), 1, "the repeatable file changed: it alone (%s)", err);
    cr_expect_eq(sql_int(c, "SELECT f()", NULL), 2, "the function as the file says now");
    cr_expect_eq(vx_pg_migrate(c, dir, err, sizeof err), 0, "recorded with its new checksum (%s)", err);
    write_text(r, "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT nope';");
    cr_expect_eq(vx_pg_migrate(c, dir, err, sizeof err), -1, "a broken repeatable file fails the migration");
    cr_expect(strstr(err, "R_f.sql") != NULL, "the error names the file: %s", err);
    cr_expect_eq(sql_int(c, "SELECT f()", NULL), 2, "and changes nothing");
    remove(v);
    remove(r);
    rmdir(dir);
    PQfinish(c);
}

/* ---- outbox delivery state ---------------------------------------------------------------------- */

/* Every outbox row a call writes waits in outbox_pending until the relay marks it (vx_outbox_mark
 * deletes the pending row); a replay of its command puts it back, so that the sweep sends it again
 * if the service dies before it does. */
Test(sql, outbox_rows_wait_in_outbox_pending_until_marked_and_a_replay_puts_them_back) {
    PGconn *c = db_open(INV_DB "_pending", "inventory-svc", "", 0);
    static const char PENDING[] = "SELECT count(*) FROM outbox_pending p JOIN outbox o ON o.id = p.id";
    cr_assert_eq(apply(c, NULL, "inv_apply_batch",
                       "[{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"seed\",\"product_id\":\"P-1\","
                       "\"quantity\":10}}]",
                       INV_TABLES, NULL),
                 1);
    cr_assert_eq(apply(c, NULL, "inv_apply_batch", "[" RESERVE("p1", 1) "," RESERVE("p2", 1) "]", INV_TABLES, NULL), 2);
    cr_expect_eq(sql_int(c, PENDING, NULL), 3, "the Restock's and both reservations' rows wait");
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox_pending", NULL), sql_int(c, "SELECT count(*) FROM outbox", NULL));
    /* Kafka acknowledges them: the relay marks them, committed without waiting for the flush, and
       the connection's apply calls stay durable. */
    vx_outbox_t *ob = vx_outbox_new(NULL);
    PGresult *ids = PQexec(c, "SELECT id FROM outbox ORDER BY id");
    cr_assert_eq(PQntuples(ids), 3);
    for (int i = 0; i < PQntuples(ids); i++) {
        rd_kafka_message_t m;
        memset(&m, 0, sizeof(m));
        m._private = (void *)(intptr_t)atoll(PQgetvalue(ids, i, 0));
        cr_assert_eq(vx_outbox_on_delivery(ob, &m), 1);
    }
    PQclear(ids);
    char errstr[256];
    cr_assert_eq(vx_outbox_mark(ob, c, errstr, sizeof(errstr)), 0, "%s", errstr);
    cr_expect_eq(vx_outbox_unmarked(ob), 0);
    vx_outbox_destroy(ob);
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox_pending", NULL), 0, "every delivered row marked");
    cr_expect_eq(sql_int(c, "SELECT (current_setting('synchronous_commit') = 'on')::int", NULL), 1,
                 "the mark's synchronous_commit = off ended with its transaction");
    cr_assert_eq(apply(c, NULL, "inv_apply_batch", "[" RESERVE("p1", 1) "]", INV_TABLES, NULL), 1, "the replay");
    cr_expect_eq(sql_int(c, PENDING, NULL), 1, "the replayed row waits again");
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox_pending p JOIN outbox o ON o.id = p.id"
                            " WHERE o.dedup_key = 'p1'", NULL), 1, "and it is p1's");
    PQfinish(c);
}

/* The prune (vx_outbox_prune) deletes the rows past the retention that are delivered, and pending
 * rows whose outbox row is gone; it keeps what waits for delivery and what is recent. It reads the
 * oldest rows by id, so an old row behind a recent one goes too. */
/* The sweep runs every second in every service: it must read the rows that wait, not the outbox,
 * which keeps days of delivered rows. 20,000 rows, analyzed while they all wait (as autovacuum may
 * find them in a burst), then delivered, then three rows that wait and are not due yet. */
Test(sql, the_sweep_reads_what_waits_not_the_outbox) {
    PGconn *c = db_open(INV_DB "_sweep", "inventory-svc", "", 0);
    vx_outbox_t *ob = vx_outbox_new(NULL); /* nothing is due, so nothing is published */
    char err[256];
    cr_assert_not_null(ob);
    cr_assert_eq(apply(c, NULL, "inv_apply_batch",
                       "[{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"seed\",\"product_id\":\"P-1\","
                       "\"quantity\":1000000}}]",
                       INV_TABLES, NULL),
                 1);
    grow(c, "inv_apply_batch",
         "jsonb_build_object('c', jsonb_build_object('type', 'ReserveStock', 'idempotency_key', 'g' || i,"
         " 'order_id', 'o-g' || i, 'items', '" ITEMS "'::jsonb))");
    exec_ok(c, "ANALYZE outbox");
    exec_ok(c, "ANALYZE outbox_pending");
    exec_ok(c, "DELETE FROM outbox_pending"); /* delivered */
    cr_assert_eq(apply(c, NULL, "inv_apply_batch", "[" RESERVE("s1", 1) "," RESERVE("s2", 1) "," RESERVE("s3", 1) "]",
                       INV_TABLES, NULL),
                 3);

    exec_ok(c, "BEGIN");
    int64_t before = rows_read(c, "outbox,outbox_pending");
    cr_assert_eq(vx_outbox_sweep(ob, c, 3600 * 1000, 1000, err, sizeof err), 0, "nothing is due: %s", err);
    int64_t read = rows_read(c, "outbox,outbox_pending") - before;
    exec_ok(c, "COMMIT");
    cr_log_info("a sweep with 3 rows waiting read %" PRId64 " rows of outbox,outbox_pending", read);
    cr_expect_leq(read, MAX_READ, "a sweep with 3 rows waiting read %" PRId64 " rows (%d in the outbox)", read, GROW);
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox_pending WHERE claimed_at > now() - interval '1 hour'", NULL),
                 3, "the rows that wait are there, not due, with the time of their commit");
    vx_outbox_destroy(ob);
    PQfinish(c);
}

Test(sql, the_prune_deletes_old_delivered_rows_and_orphans_only) {
    PGconn *c = db_open(INV_DB "_prune", "inventory-svc", "", 0);
    vx_outbox_t *ob = vx_outbox_new(NULL);
    char err[256];
    cr_assert_not_null(ob);
    cr_assert_eq(apply(c, NULL, "inv_apply_batch",
                       "[{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"seed\",\"product_id\":\"P-1\","
                       "\"quantity\":10}}]",
                       INV_TABLES, NULL),
                 1);
    cr_assert_eq(apply(c, NULL, "inv_apply_batch", "[" RESERVE("p1", 1) "," RESERVE("p2", 1) "," RESERVE("p3", 1) "]",
                       INV_TABLES, NULL),
                 3);
    /* seed and p2 are old, p1 and p3 recent; all but seed are delivered. p2 comes after recent p1 in id
       order. */
    exec_ok(c, "UPDATE outbox SET created_at = now() - interval '2 days' WHERE dedup_key IN ('seed', 'p2')");
    exec_ok(c, "DELETE FROM outbox_pending WHERE id IN (SELECT id FROM outbox WHERE dedup_key <> 'seed')");
    exec_ok(c, "INSERT INTO outbox_pending (id) VALUES (999999)"); /* an orphan */
    cr_assert_eq(vx_outbox_prune(ob, c, 24 * 3600, err, sizeof err), 1, "%s", err);
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox WHERE dedup_key = 'p2'", NULL), 0, "old and delivered: gone");
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox WHERE dedup_key IN ('seed', 'p1', 'p3')", NULL), 3,
                 "pending or recent: kept");
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox_pending WHERE id = 999999", NULL), 0, "the orphan: gone");
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox_pending p JOIN outbox o USING (id) WHERE o.dedup_key = 'seed'",
                         NULL),
                 1, "seed still waits");
    exec_ok(c, "UPDATE outbox SET created_at = now() - interval '2 days' WHERE dedup_key = 'p3'");
    exec_ok(c, "DELETE FROM outbox_pending WHERE id IN (SELECT id FROM outbox WHERE dedup_key <> 'seed')");
    cr_assert_eq(vx_outbox_prune(ob, c, 24 * 3600, err, sizeof err), 1, "%s", err);
    cr_expect_eq(sql_int(c, "SELECT count(*) FROM outbox WHERE dedup_key = 'p3'", NULL), 0, "p3, once old: gone");
    vx_outbox_destroy(ob);
    PQfinish(c);
}

/* ---- work linear in the call's size ----------------------------------------------------------- */

/* The joins inside these functions are between sets of the call's size (its entries, the rows just
 * written), which the planner guesses at 1 to 100 rows; a nested loop chosen on such a guess is
 * quadratic in the call's size. Each call below runs with auto_explain on every statement it runs,
 * nested ones included, and the busiest plan node of all of them must handle at most LINEAR rows per
 * entry: its rows over all its loops plus the rows its filters removed. And none may be compiled by
 * JIT, which a plan whose cost counts a disabled node (10^10) would be at every call. */
#define LINEAR 8

typedef struct {
    double worst;      /* the busiest node's rows */
    char what[160];    /* its type and the start of its statement */
    int plans, jit;    /* plans seen; of them, compiled by JIT (milliseconds at each call) */
} work_t;

/* Walks one plan node and its children. */
static void work_node(work_t *w, json_object *node, const char *query) {
    json_object *v;
    double loops = json_object_object_get_ex(node, "Actual Loops", &v) ? json_object_get_double(v) : 1, rows = 0;
    static const char *const per_loop[] = {"Actual Rows", "Rows Removed by Filter", "Rows Removed by Join Filter"};
    for (size_t i = 0; i < sizeof per_loop / sizeof *per_loop; i++)
        if (json_object_object_get_ex(node, per_loop[i], &v)) rows += json_object_get_double(v) * loops;
    if (rows > w->worst) {
        size_t at = (size_t)snprintf(w->what, sizeof w->what, "%s in: ",
                                     json_object_object_get_ex(node, "Node Type", &v) ? json_object_get_string(v) : "?");
        for (const char *q = query; *q && at < sizeof w->what - 1; q++) /* the statement on one line */
            if (!isspace((unsigned char)*q) || (at && w->what[at - 1] != ' ')) w->what[at++] = isspace((unsigned char)*q) ? ' ' : *q;
        w->what[at] = '\0';
        w->worst = rows;
    }
    if (json_object_object_get_ex(node, "Plans", &v))
        for (size_t i = 0; i < json_object_array_length(v); i++) work_node(w, json_object_array_get_idx(v, i), query);
}

/* libpq's notice processor: "NOTICE:  duration: ... plan:\n{...}" from auto_explain. */
static void work_notice(void *arg, const char *message) {
    work_t *w = arg;
    const char *at = strchr(message, '{');
    json_object *doc = at ? json_tokener_parse(at) : NULL, *plan, *query;
    if (!doc) return;
    if (json_object_object_get_ex(doc, "Plan", &plan)) {
        w->plans++;
        w->jit += json_object_object_get_ex(doc, "JIT", NULL);
        work_node(w, plan, json_object_object_get_ex(doc, "Query Text", &query) ? json_object_get_string(query) : "?");
    }
    json_object_put(doc);
}

/* Runs `fn` on BATCH entries, `entry` made of i (an SQL expression over i from 0 to BATCH - 1), with
 * every statement explained; expects `rows` rows back and work linear in BATCH at every plan node. */
static void linear(PGconn *c, const char *fn, const char *entry, int64_t rows, const char *what) {
    char sql[2048];
    work_t w = {0};
    exec_ok(c, "LOAD 'auto_explain'");
    exec_ok(c, "SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;"
               " SET auto_explain.log_timing = off; SET auto_explain.log_nested_statements = on;"
               " SET auto_explain.log_format = json; SET auto_explain.log_level = notice");
    exec_ok(c, "ANALYZE"); /* the statistics autovacuum keeps: a plan's guesses are then the service's */
    PQnoticeProcessor old = PQsetNoticeProcessor(c, work_notice, &w);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM %s((SELECT jsonb_agg(%s ORDER BY i) FROM generate_series(0, %d) AS i))", fn,
             entry, BATCH - 1);
    cr_assert_eq(sql_int(c, sql, NULL), rows, "rows returned by %s", what);
    PQsetNoticeProcessor(c, old, NULL);
    exec_ok(c, "SET auto_explain.log_min_duration = -1");
    cr_assert_gt(w.plans, 3, "%s: auto_explain reported %d plans", what, w.plans);
    cr_log_info("%s: %d plans, the busiest node handled %.0f rows (%s)", what, w.plans, w.worst, w.what);
    cr_expect_eq(w.jit, 0, "%s: %d statements compiled by JIT at each call", what, w.jit);
    cr_expect_leq(w.worst, (double)LINEAR * BATCH, "%s: a plan node handled %.0f rows for %d entries: %s", what,
                  w.worst, BATCH, w.what);
}

#define G_PLACE_OF(p)                                                                                     \
    "jsonb_build_object('c', jsonb_build_object('type', 'PlaceOrder', 'idempotency_key', '" p "' || i,"     \
    " 'customer_id', 'c', 'items', '" ITEMS "'::jsonb), 'oid', '" p "' || i, 'cid', 'x', 'hash', 'h')"
#define G_PLACE G_PLACE_OF("g")

Test(sql, orders_calls_do_work_linear_in_their_size) {
    PGconn *c = db_open(ORD_DB "_lin", "order-svc", "", 0);
    linear(c, "ord_apply_batch", G_PLACE, BATCH, "1,000 new PlaceOrders");
    linear(c, "ord_apply_batch",
           "jsonb_build_object('c', jsonb_build_object('type', CASE WHEN i % 2 = 0 THEN 'StockReserved'"
           " ELSE 'StockRejected' END, 'idempotency_key', 'order:g' || i || ':reserve', 'order_id', 'g' || i,"
           " 'reason', 'insufficient_stock', 'items', '" ITEMS "'::jsonb), 'oid', 'g' || i)",
           BATCH, "their 1,000 answers");
    linear(c, "ord_apply_batch",
           "jsonb_build_object('c', jsonb_build_object('type', 'CancelOrder', 'idempotency_key', 'cancel-g' || i,"
           " 'order_id', 'g' || i), 'oid', 'g' || i, 'cid', 'c')",
           BATCH + BATCH / 2, "1,000 CancelOrders"); /* a confirmed order's: ReleaseStock and OrderResult */
    linear(c, "ord_apply_batch", G_PLACE, BATCH, "the 1,000 PlaceOrders again");
    linear(c, "ord_apply_batch",
           "jsonb_build_object('c', jsonb_build_object('type', 'CancelOrder', 'idempotency_key', 'cancel-e' || i,"
           " 'order_id', 'e' || i), 'oid', 'e' || i, 'cid', 'c')",
           BATCH, "1,000 CancelOrders of orders not placed yet"); /* not_found, and remembered */
    linear(c, "ord_apply_batch", G_PLACE_OF("e"), BATCH, "then their 1,000 PlaceOrders"); /* CANCELLED at once */
    cr_assert_eq(sql_int(c, "SELECT count(*) FROM orders WHERE id LIKE 'e%' AND status = 'CANCELLED'", NULL), BATCH);
    PQfinish(c);
}

Test(sql, inventory_calls_do_work_linear_in_their_size) {
    PGconn *c = db_open(INV_DB "_lin", "inventory-svc", "", 0);
    cr_assert_eq(apply(c, NULL, "inv_apply_batch",
                       "[{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"seed\",\"product_id\":\"P-1\","
                       "\"quantity\":1000000}}]",
                       INV_TABLES, NULL),
                 1);
#define G_RESERVE "jsonb_build_object('c', jsonb_build_object('type', 'ReserveStock', 'idempotency_key', 'g' || i," \
                  " 'order_id', 'o-g' || i, 'items', '" ITEMS "'::jsonb))"
    linear(c, "inv_apply_batch", G_RESERVE, BATCH, "1,000 ReserveStocks");
    linear(c, "inv_apply_batch", G_RESERVE, BATCH, "the 1,000 ReserveStocks again");
    linear(c, "inv_apply_batch",
           "jsonb_build_object('c', jsonb_build_object('type', 'ReleaseStock', 'idempotency_key', 'rel-g' || i,"
           " 'order_id', 'o-g' || i))",
           BATCH, "1,000 ReleaseStocks");
    linear(c, "inv_apply_batch",
           "CASE WHEN i % 2 = 0 THEN jsonb_build_object('c', jsonb_build_object('type', 'Restock',"
           " 'idempotency_key', 'r' || i, 'product_id', 'P-1', 'quantity', 1)) ELSE " G_RESERVE " END",
           BATCH, "500 Restocks and 500 ReserveStocks");
    PQfinish(c);
}

/* ---- fast paths against the general code ----------------------------------------------------- */

#define CALLS 400 /* random calls per service */

/* A call being written: a jsonb array of entries. */
typedef struct {
    char s[16384];
    size_t len;
    int n; /* entries */
} call_t;

static void call_add(call_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void call_add(call_t *c, const char *fmt, ...) {
    va_list ap;
    if (!c->len) c->s[c->len++] = '[';
    if (c->n++) c->s[c->len++] = ',';
    va_start(ap, fmt);
    int k = vsnprintf(c->s + c->len, sizeof c->s - c->len, fmt, ap);
    va_end(ap);
    cr_assert(k > 0 && (size_t)k < sizeof c->s - c->len - 2, "call too long");
    c->len += (size_t)k;
    c->s[c->len] = ']';
    c->s[c->len + 1] = '\0';
}

/* A seeded generator, so that a failure is the same at every run. */
static uint64_t rnd_state = 42;
static unsigned rnd(unsigned n) {
    rnd_state = rnd_state * 6364136223846793005ull + 1442695040888963407ull;
    return (unsigned)(rnd_state >> 33) % n;
}
static int chance(unsigned percent) { return rnd(100) < percent; }
static int entries(void) {
    static const int n[] = {1, 1, 2, 3, 5, 8};
    return n[rnd(6)];
}

/* Runs one statement; its text result (row 0, column 0), or "ERROR: <message>" when it fails; the
 * caller frees. */
static char *text_or_error(PGconn *c, const char *sql, const char *param) {
    PGresult *r = PQexecParams(c, sql, param ? 1 : 0, NULL, param ? &param : NULL, NULL, NULL, 0);
    char *out;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
        out = strdup(PQgetisnull(r, 0, 0) ? "" : PQgetvalue(r, 0, 0));
    else if (asprintf(&out, "ERROR: %s", PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)) < 0)
        out = NULL;
    PQclear(r);
    cr_assert_not_null(out);
    return out;
}

typedef struct {
    const char *fast, *general; /* the two functions */
    int sorted;                 /* rows compared as a set (1) or in input order (0) */
    const char *tables;         /* a query giving every table as text */
    int fast_taken, calls, piped;
    vx_fast_t *paths;           /* the database's fast paths (vx_fast.h), tried before `fast` as the service does */
} paths_t;

/* Calls of function $1 as this backend counts them (what it has not reported yet included). */
#define SQL_CALLS "SELECT coalesce(sum(calls), 0) FROM pg_stat_xact_user_functions WHERE funcname = $1"

static int by_line(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* r's rows as text, a line each, values tab-separated (NULL: \N), in r's order or sorted; or
 * "ERROR: <message>" when r failed. The caller frees. */
static char *dump(const PGresult *r, int sorted) {
    int n = PQntuples(r);
    char **lines, *out;
    size_t len = 1;

    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        cr_assert(asprintf(&out, "ERROR: %s", PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)) >= 0);
        return out;
    }
    lines = calloc((size_t)n + 1, sizeof(*lines));
    cr_assert_not_null(lines);
    for (int i = 0; i < n; i++) {
        size_t cap = 1;
        for (int f = 0; f < PQnfields(r); f++) cap += (size_t)PQgetlength(r, i, f) + 3;
        cr_assert_not_null(lines[i] = calloc(cap, 1));
        for (int f = 0; f < PQnfields(r); f++) {
            if (f) strcat(lines[i], "\t");
            strcat(lines[i], PQgetisnull(r, i, f) ? "\\N" : PQgetvalue(r, i, f));
        }
        len += strlen(lines[i]) + 1;
    }
    if (sorted) qsort(lines, (size_t)n, sizeof(*lines), by_line);
    cr_assert_not_null(out = calloc(len, 1));
    for (int i = 0; i < n; i++) {
        strcat(strcat(out, lines[i]), "\n");
        free(lines[i]);
    }
    free(lines);
    return out;
}

/* Applies `call` as the service does (service_call); its rows (dump). */
static char *apply_way(PGconn *c, const paths_t *p, const char *fn, const char *call, int *piped) {
    PGresult *r = service_call(c, p->paths, fn, call, piped);
    char *out = dump(r, p->sorted);
    PQclear(r);
    return out;
}

/* Applies `call` through the fast path and, from the same state (sequences too), through the general
 * code; expects the same rows and tables, and keeps the general code's state. */
static void same_both_ways(PGconn *c, paths_t *p, const char *call) {
    char *seqs, *rows[2], *tables[2];
    const char *fn[2] = {p->fast, p->general};
    int64_t general_calls;
    int piped;

    exec_ok(c, "BEGIN");
    seqs = text_or_error(c,
                         "SELECT coalesce(string_agg(format('SELECT setval(%L, %s, %s)', sequencename,"
                         " coalesce(last_value, 1), CASE WHEN last_value IS NULL THEN 'false' ELSE 'true' END), '; '), 'SELECT 1')"
                         " FROM pg_sequences WHERE schemaname = 'public'",
                         NULL);
    general_calls = sql_int(c, SQL_CALLS, p->general);
    for (int i = 0; i < 2; i++) {
        exec_ok(c, "SAVEPOINT both_ways");
        rows[i] = i == 0 ? apply_way(c, p, fn[0], call, &piped) : apply_way(c, &(paths_t){.sorted = p->sorted}, fn[1], call, &piped);
        if (strncmp(rows[i], "ERROR: ", 7) == 0) exec_ok(c, "ROLLBACK TO both_ways");
        tables[i] = text_or_error(c, p->tables, NULL);
        if (i == 0) {
            p->fast_taken += strncmp(rows[0], "ERROR: ", 7) != 0 && sql_int(c, SQL_CALLS, p->general) == general_calls;
            p->piped += piped;
            exec_ok(c, "ROLLBACK TO both_ways");
            exec_ok(c, seqs);
        }
    }
    exec_ok(c, "COMMIT");
    cr_expect_str_eq(rows[0], rows[1], "call %d, %s\n  rows of %s differ from %s's:\n%s\n  against\n%s", p->calls, call,
                     p->fast, p->general, rows[0], rows[1]);
    cr_expect_str_eq(tables[0], tables[1], "call %d, %s\n  tables after %s differ from %s's:\n%s\n  against\n%s",
                     p->calls, call, p->fast, p->general, tables[0], tables[1]);
    p->calls++;
    free(seqs);
    for (int i = 0; i < 2; i++) free(rows[i]), free(tables[i]);
}

/* Both ways took at least a fifth of the calls: the comparison covered each. */
static void both_taken(const paths_t *p) {
    cr_log_info("%s: %d of %d calls on the fast path", p->fast, p->fast_taken, p->calls);
    cr_expect_geq(p->fast_taken * 5, p->calls, "%s took only %d of %d calls", p->fast, p->fast_taken, p->calls);
    cr_expect_geq((p->calls - p->fast_taken) * 5, p->calls, "%s left only %d of %d calls to %s", p->fast,
                  p->calls - p->fast_taken, p->calls, p->general);
}

Test(sql, orders_fast_paths_do_what_the_general_code_does) {
    PGconn *c = db_open(ORD_DB "_eq", "order-svc", "", 0);
    paths_t p = {"ord_apply_batch", "ord_apply_general", 0,
                 "SELECT concat_ws(E'\\n', (SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM orders t),"
                 " (SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM order_history t),"
                 " (SELECT string_agg(t::text, E'\\n' ORDER BY t.order_id) FROM early_cancels t),"
                 " (SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM outbox t),"
                 " (SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM outbox_pending t))",
                 0, 0, 0, NULL};
    enum { KEYS = 2 * CALLS * 8 };
    static int waiting[KEYS]; /* keys placed and not answered yet, oldest first */
    int next_key = 0, w_head = 0, w_tail = 0;

    exec_ok(c, "SET track_functions = 'pl'");
    p.paths = paths_load(c, "ord_apply_batch");
    rnd_state = 1;
    while (p.calls < CALLS) {
        call_t call = {.len = 0};
        int kind = (int)rnd(100), n = entries(), used[8], nused = 0;
        for (int i = 0; i < n; i++) {
            int k, seen = 0;
            if (kind < 45 && (!next_key || chance(85))) /* mostly a new order, else one asked again */
                waiting[w_tail++] = k = next_key++;
            else if (kind < 90 && w_head < w_tail && chance(85)) /* mostly the answer an order waits for */
                k = waiting[w_head++];
            else if (chance(25)) /* an order not placed yet: a CancelOrder that overtook its PlaceOrder */
                k = next_key + (int)rnd(4);
            else
                k = next_key ? (int)rnd((unsigned)next_key) : 0;
            for (int j = 0; j < nused; j++) seen |= used[j] == k;
            if (seen && !chance(10)) continue; /* now and then a repeat: refused both ways */
            used[nused++] = k;
            char oid[32], hdr[48] = "", extra[96] = "";
            snprintf(oid, sizeof oid, chance(10) ? "x-k%d" : "o-k%d", k); /* x-: not the id the key gives */
            if (chance(15)) snprintf(hdr, sizeof hdr, ",\"h\":{\"chaos-delay-ms\":\"5\"}");
            if (kind < 45) {
                if (oid[0] == 'x') snprintf(extra, sizeof extra, ",\"order_id\":\"%s\"", oid);
                /* now and then a customer whose name JSON must escape: the fast paths print their
                   messages piece by piece (vx_js), the general code through jsonb */
                call_add(&call,
                         "{\"c\":{\"type\":\"PlaceOrder\",\"idempotency_key\":\"k%d\",\"customer_id\":\"%s\","
                         "\"items\":[{\"product_id\":\"P-1\",\"quantity\":%u}]%s},\"oid\":\"%s\",\"hash\":\"h%d\","
                         "\"cid\":\"cid%d\"%s}",
                         k, chance(20) ? "c \\\"q\\\" \\\\ \\u00e9\\n\\u0001" : "c", 1 + rnd(3), extra, oid, k, p.calls, hdr);
            } else if (kind < 90) {
                unsigned r = rnd(100); /* mostly the answer to the order's ReserveStock */
                if (r < 90) snprintf(extra, sizeof extra, ",\"idempotency_key\":\"order:%s:reserve\"", oid);
                else if (r < 95) snprintf(extra, sizeof extra, ",\"idempotency_key\":\"other:%s\"", oid);
                int ok = chance(70);
                call_add(&call,
                         "{\"c\":{\"type\":\"%s\",\"order_id\":\"%s\"%s,\"items\":[{\"product_id\":\"P-1\","
                         "\"quantity\":1}]%s},\"oid\":\"%s\",\"cid\":\"e%d\"%s}",
                         ok ? "StockReserved" : "StockRejected", oid, extra,
                         ok ? "" : ",\"reason\":\"insufficient_stock\",\"product_id\":\"P-1\"", oid, p.calls, hdr);
            } else {
                call_add(&call,
                         "{\"c\":{\"type\":\"CancelOrder\",\"idempotency_key\":\"cancel-%u\",\"order_id\":\"%s\"},"
                         "\"oid\":\"%s\",\"cid\":\"c%d\"}",
                         rnd(20), oid, oid, p.calls);
            }
        }
        if (call.n) same_both_ways(c, &p, call.s);
    }
    both_taken(&p);
    int64_t early = sql_int(c, "SELECT count(*) FROM orders o JOIN early_cancels e ON e.order_id = o.id"
                               " WHERE o.status = 'CANCELLED'", NULL);
    cr_log_info("%" PRId64 " orders placed after a CancelOrder of theirs", early);
    cr_expect_gt(early, 0, "no call placed an order whose CancelOrder came first");
    cr_log_info("%d of %d calls through a fast path's pipeline", p.piped, p.calls);
    cr_expect_geq(p.piped * 10, p.calls, "the place path took only %d of %d calls", p.piped, p.calls);
    vx_fast_destroy(p.paths);
    PQfinish(c);
}

Test(sql, inventory_fast_path_does_what_the_general_code_does) {
    PGconn *c = db_open(INV_DB "_eq", "inventory-svc", "", 0);
    /* the replays' rows come back in no set order, from either */
    paths_t p = {"inv_apply_batch", "inv_apply_general", 1,
                 "SELECT concat_ws(E'\\n', (SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM products t),"
                 " (SELECT string_agg(t::text, E'\\n' ORDER BY t.order_id, t.product_id) FROM holds t),"
                 " (SELECT string_agg(t::text, E'\\n' ORDER BY t.order_id) FROM released_orders t),"
                 " (SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM outbox t),"
                 " (SELECT string_agg(t::text, E'\\n' ORDER BY t.id) FROM outbox_pending t))",
                 0, 0, 0, NULL};
    int orders = 0;

    exec_ok(c, "SET track_functions = 'pl'");
    rnd_state = 2;
    same_both_ways(c, &p, /* five products of 400 (they run short halfway), a sixth unknown */
                   "[{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"s0\",\"product_id\":\"P0\",\"quantity\":400}},"
                   "{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"s1\",\"product_id\":\"P1\",\"quantity\":400}},"
                   "{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"s2\",\"product_id\":\"P2\",\"quantity\":400}},"
                   "{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"s3\",\"product_id\":\"P3\",\"quantity\":400}},"
                   "{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"s4\",\"product_id\":\"P4\",\"quantity\":400}}]");
    while (p.calls < CALLS) {
        call_t call = {.len = 0};
        int kind = (int)rnd(100), n = entries();
        for (int i = 0; i < n; i++) {
            char hdr[48] = "", key[40] = "", items[256] = "";
            int o = kind < 75 && (!orders || !chance(10)) ? ++orders : orders ? 1 + (int)rnd((unsigned)orders) : 1;
            if (chance(15)) snprintf(hdr, sizeof hdr, ",\"h\":{\"chaos-delay-ms\":\"3\"}");
            if (chance(30)) snprintf(key, sizeof key, ",\"k\":\"o%d\"", o);
            if (kind < 75) {
                size_t at = 0;
                for (unsigned l = 0, nl = 1 + rnd(3); l < nl; l++)
                    at += (size_t)snprintf(items + at, sizeof items - at, "%s{\"product_id\":\"P%u\",\"quantity\":%u}",
                                           l ? "," : "", chance(97) ? rnd(5) : 5, 1 + rnd(4));
                call_add(&call,
                         "{\"c\":{\"type\":\"ReserveStock\",\"idempotency_key\":\"%s:o%d:reserve\",\"order_id\":\"o%d\","
                         "\"items\":[%s]},\"cid\":\"cid%d\"%s%s}",
                         chance(97) ? "order" : "other", o, o, items, p.calls, key, hdr);
            } else if (kind < 90) {
                call_add(&call,
                         "{\"c\":{\"type\":\"ReleaseStock\",\"idempotency_key\":\"order:o%d:release\",\"order_id\":\"o%d\"},"
                         "\"cid\":\"cid%d\"%s%s}",
                         o, o, p.calls, key, hdr);
            } else {
                call_add(&call,
                         "{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"restock-%d-%u\",\"product_id\":\"P%u\","
                         "\"quantity\":%u},\"cid\":\"cid%d\"%s}",
                         p.calls, rnd(4), rnd(6), 1 + rnd(20), p.calls, hdr);
            }
        }
        same_both_ways(c, &p, call.s);
    }
    both_taken(&p);
    PQfinish(c);
}

/* A twin of a reservation (the same key, taken by another instance from another partition) commits
 * while inventory's fast path is under way: the fast path's outbox insert meets the key, its block
 * is undone, and the call returns the general code's rows only, the twin's answered as a duplicate.
 * (The fast path returns its rows only after every outbox row is written.) */
Test(sql, inventory_fast_path_meeting_a_twin_returns_the_general_codes_rows_only) {
    PGconn *c = db_open(INV_DB "_twin", "inventory-svc", "", 0), *twin = NULL, *watch = NULL;
    char err[IT_ERR_SIZE], pid[16];
    const char *call = "[{\"c\":{\"type\":\"ReserveStock\",\"idempotency_key\":\"order:o1:reserve\",\"order_id\":\"o1\","
                       "\"items\":[{\"product_id\":\"P0\",\"quantity\":3}]},\"cid\":\"c1\"},"
                       "{\"c\":{\"type\":\"ReserveStock\",\"idempotency_key\":\"order:o2:reserve\",\"order_id\":\"o2\","
                       "\"items\":[{\"product_id\":\"P0\",\"quantity\":5}]},\"cid\":\"c2\"}]";
    PGresult *r;

    IT_OK(it_pg_connect(&twin, INV_DB "_twin", err, sizeof err), err);
    IT_OK(it_pg_connect(&watch, INV_DB "_twin", err, sizeof err), err);
    exec_ok(c, "SET lock_timeout = '30s'");
    r = PQexec(c, "SELECT * FROM inv_apply_batch('[{\"c\":{\"type\":\"Restock\",\"idempotency_key\":\"s0\","
                  "\"product_id\":\"P0\",\"quantity\":100}}]')");
    cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    exec_ok(twin, "BEGIN");
    exec_ok(twin, "INSERT INTO outbox (dedup_key, topic, msg_key, payload) VALUES ('order:o2:reserve', 'events', 'o2',"
                  " '{\"type\": \"StockReserved\", \"order_id\": \"o2\", \"idempotency_key\": \"order:o2:reserve\"}')");

    /* The call takes the fast path (the twin's key is not committed yet) and waits on the key. */
    cr_assert(PQsendQueryParams(c, "SELECT * FROM inv_apply_batch($1::jsonb)", 1, NULL, &call, NULL, NULL, 0),
              "%s", PQerrorMessage(c));
    snprintf(pid, sizeof pid, "%d", PQbackendPID(c));
    int waited = 0;
    for (int i = 0; i < 300 && !waited; i++) {
        waited = sql_int(watch, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int AND wait_event_type = 'Lock'",
                         pid) == 1;
        if (!waited) usleep(100 * 1000);
    }
    cr_assert(waited, "the call never waited on the twin's key");
    exec_ok(twin, "COMMIT");

    r = PQgetResult(c);
    cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    char *rows = dump(r, 1);
    int n = PQntuples(r);
    PQclear(r);
    cr_assert_null(PQgetResult(c));
    cr_assert(n == 2 && strstr(rows, "command_duplicate") && strstr(rows, "stock_reserved"),
              "one row per command expected, o1 reserved and o2 a duplicate:\n%s", rows);
    free(rows);
    cr_assert_eq(sql_int(c, "SELECT stock FROM products WHERE id = 'P0'", NULL), 97);
    cr_assert_eq(sql_int(c, "SELECT count(*) FROM holds", NULL), 1);
    PQfinish(watch);
    PQfinish(twin);
    PQfinish(c);
}

int main(int argc, char **argv) {
    static const char *const databases[] = {ORD_DB,        INV_DB,        ORD_DB "_an",  INV_DB "_an", ORD_DB "_eq",
                                             INV_DB "_eq", ORD_DB "_lin", INV_DB "_lin", MIG_DB,
                                             INV_DB "_pending", INV_DB "_prune", INV_DB "_sweep", INV_DB "_twin", NULL};
    return it_main(argc, argv, databases);
}
