/* Unit tests of vx_pg_fault, the one place that says whose fault a failed statement is: the
 * database's (the batch applier retries the same call, dead-letters nothing, moves no offset) or the
 * entry's (the call is split down to the entry, which is dead-lettered). A valid command must never
 * be dead-lettered because the database was read-only, out of disk or refused the role. */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <string.h>

#include "vx_pg.h"

/* The database's failures: the same call is tried again, however long they last. */
Test(pg_fault, database_failures_are_retried_never_dead_lettered) {
    static const char *const codes[] = {
        "08000", "08003", "08006", "08001", /* the connection */
        "25006",                            /* read_only_sql_transaction: default_transaction_read_only, a standby */
        "42501",                            /* insufficient_privilege: revoked rights */
        "53100", "53200", "53300", "53400", /* disk full, out of memory, too many connections, limits */
        "57P01", "57P02", "57P03", "57014", /* admin or crash shutdown, cannot connect now, cancelled */
        "40001", "40P01",                   /* serialization failure, deadlock */
        "23505",                            /* a concurrent twin committed first: the retry finds it recorded */
        "42883", "42P01", "42703",          /* a function, table or column the code expects is gone */
        "58030", "XX000", "F0000", "55006", /* I/O error, internal error, config file, object in use */
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        cr_expect_eq(vx_pg_fault(codes[i]), VX_PG_RETRY, "%s must be retried", codes[i]);
    cr_expect_eq(vx_pg_fault(NULL), VX_PG_RETRY, "no SQLSTATE: the connection is gone");
    cr_expect_eq(vx_pg_fault(""), VX_PG_RETRY);
    cr_expect_eq(vx_pg_fault("5"), VX_PG_RETRY);
}

/* The entry's own faults: split down to it, dead-lettered with the database's reason. */
Test(pg_fault, entry_failures_are_split_down_to_the_entry) {
    static const char *const codes[] = {
        "22003", "22P02", "22001", "22023", /* data exceptions: out of range, invalid text, too long */
        "23502", "23503", "23514", "23P01", /* not null, foreign key, check, exclusion */
        "P0001", "P0002",                   /* RAISE EXCEPTION in the apply function or a trigger */
        "21000", "27000", "44000",          /* cardinality, triggered data change, with check option */
        "2F005", "39P01", "54000",          /* routine errors; a program limit (a call too large) */
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        cr_expect_eq(vx_pg_fault(codes[i]), VX_PG_ENTRY, "%s is the entry's fault", codes[i]);
}

Test(pg_fault, lock_timeout_sets_the_entry_aside) { cr_expect_eq(vx_pg_fault("55P03"), VX_PG_LOCK); }

/* A lost connection is the database's failure whatever the result says. */
Test(pg_fault, a_broken_connection_is_always_retried) {
    PGconn *conn = PQconnectdb("host=/nonexistent/valerix-unit-test port=1 connect_timeout=1");
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_FATAL_ERROR);

    cr_assert_eq(PQstatus(conn), CONNECTION_BAD);
    cr_expect_eq(vx_pg_fault_of(conn, r), VX_PG_RETRY);
    cr_expect_eq(vx_pg_fault_of(conn, NULL), VX_PG_RETRY);
    cr_expect_str_eq(vx_pg_retry_reason(conn, "22003"), "connection");
    PQclear(r);
    PQfinish(conn);
}

Test(pg_fault, retry_reasons_name_the_cause) {
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "25006"), "read_only");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "42501"), "privileges");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "53100"), "resources");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "57P01"), "connection");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "08006"), "connection");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, NULL), "connection");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "40001"), "serialization");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "40P01"), "deadlock");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "23505"), "unique_violation");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "42883"), "schema");
    cr_expect_str_eq(vx_pg_retry_reason(NULL, "XX000"), "other");
}

/* The metric's label set is announced from 0 with every word vx_pg_retry_reason may answer. */
Test(pg_fault, every_retry_reason_is_listed) {
    static const char *const codes[] = {"08006", "40001", "40P01", "23505", "25006", "42501",
                                        "53100", "42883", "XX000", NULL};
    for (const char *const *c = codes; *c; c++) {
        const char *r = vx_pg_retry_reason(NULL, *c);
        int found = 0;
        for (const char *const *l = vx_pg_retry_reasons; *l; l++) found |= strcmp(*l, r) == 0;
        cr_expect(found, "%s -> %s is not in vx_pg_retry_reasons", *c, r);
    }
}
