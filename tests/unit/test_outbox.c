/* Unit tests of vx_outbox's publish and delivery bookkeeping, without a database or a broker.
 *
 * Outbox rows are PGresults built in memory; the producer is a real one whose broker is
 * unreachable (127.0.0.1:1), so every message comes back in a delivery report with an error after
 * a short message timeout, carrying the topic, key, headers and opaque it was produced with. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vx_kafka.h"
#include "vx_outbox.h"

#define MAX_ID 8

static char errstr[512];

/* ---- outbox rows without a database ---------------------------------------------------------- */

/* A PGresult of text columns (id, topic, msg_key, payload, correlation_id[, headers]); a NULL cell
 * is SQL NULL. Caller PQclears it. */
static PGresult *outbox_rows(int ncols, int nrows, const char *const cells[][6]) {
    static char *names[] = {"id", "topic", "msg_key", "payload", "correlation_id", "headers"};
    PGresAttDesc cols[6];
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);

    cr_assert_not_null(r);
    for (int j = 0; j < ncols; j++)
        cols[j] = (PGresAttDesc){.name = names[j], .format = 0, .typid = 25 /* text */, .typlen = -1,
                                 .atttypmod = -1};
    cr_assert(PQsetResultAttrs(r, ncols, cols));
    for (int i = 0; i < nrows; i++)
        for (int j = 0; j < ncols; j++)
            cr_assert(PQsetvalue(r, i, j, (char *)cells[i][j], cells[i][j] ? (int)strlen(cells[i][j]) : -1));
    return r;
}

/* ---- a relay on a producer that cannot reach its broker -------------------------------------- */

struct delivery {
    int seen, ours;
    rd_kafka_resp_err_t err;
    char topic[64], key[64], payload[128];
    int has_key, nheaders;
    char corr[64], tenant[64], count[16]; /* "" when absent */
};

struct relay {
    rd_kafka_t *rk;
    vx_outbox_t *ob;
    struct delivery d[MAX_ID + 1]; /* by outbox id */
    int reports, foreign;
};

static void header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size) {
    if (!vx_kafka_header(m, name, buf, size)) buf[0] = '\0';
}

static void on_report(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    struct relay *r = opaque;
    long long id = (long long)(intptr_t)m->_private;
    rd_kafka_headers_t *hdrs;
    struct delivery *d;

    (void)rk;
    r->reports++;
    if (id < 1 || id > MAX_ID) {
        r->foreign++;
        cr_expect_eq(vx_outbox_on_delivery(r->ob, m), 0, "a message without an outbox id is not the relay's");
        return;
    }
    d = &r->d[id];
    d->seen++;
    d->err = m->err;
    snprintf(d->topic, sizeof(d->topic), "%s", rd_kafka_topic_name(m->rkt));
    d->has_key = m->key != NULL;
    snprintf(d->key, sizeof(d->key), "%.*s", (int)m->key_len, m->key ? (const char *)m->key : "");
    snprintf(d->payload, sizeof(d->payload), "%.*s", (int)m->len, (const char *)m->payload);
    d->nheaders = rd_kafka_message_headers(m, &hdrs) ? 0 : (int)rd_kafka_header_cnt(hdrs);
    header(m, "correlation-id", d->corr, sizeof(d->corr));
    header(m, "x-tenant", d->tenant, sizeof(d->tenant));
    header(m, "x-count", d->count, sizeof(d->count));
    d->ours = vx_outbox_on_delivery(r->ob, m);
}

static struct relay *relay_new(void) {
    static const char *const defaults[] = {"message.timeout.ms", "50", "linger.ms", "0",
                                           "log_level", "0" /* quiet about the refused connections */, NULL};
    struct relay *r = calloc(1, sizeof(*r));

    cr_assert_not_null(r);
    setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", 1);
    unsetenv("KAFKA_MESSAGE_TIMEOUT_MS"); /* the environment would beat the short timeout */
    unsetenv("KAFKA_PRODUCER_MESSAGE_TIMEOUT_MS");
    r->rk = vx_kafka_producer_new(on_report, r, defaults, errstr, sizeof(errstr));
    cr_assert_not_null(r->rk, "%s", errstr);
    r->ob = vx_outbox_new(r->rk);
    cr_assert_not_null(r->ob);
    cr_assert_eq(vx_outbox_route(r->ob, "inventory.events", "t.inventory.events"), 0);
    cr_assert_eq(vx_outbox_route(r->ob, "orders.results", "t.orders.results"), 0);
    return r;
}

/* Serves delivery reports until n have arrived (or 10 s have passed). */
static void await_reports(struct relay *r, int n) {
    time_t until = time(NULL) + 10;
    while (r->reports < n && time(NULL) < until) rd_kafka_poll(r->rk, 50);
    cr_assert_eq(r->reports, n, "%d delivery reports of %d", r->reports, n);
}

/* Serves delivery reports for a while, longer than the message timeout: none may come. */
static void expect_no_reports(struct relay *r) {
    for (int i = 0; i < 6; i++) rd_kafka_poll(r->rk, 50);
    cr_expect_eq(r->reports, 0, "nothing was produced, yet %d delivery reports came", r->reports);
}

static void relay_destroy(struct relay *r) {
    vx_outbox_destroy(r->ob);
    rd_kafka_destroy(r->rk);
    free(r);
}

Test(outbox_publish, routes_each_row_with_its_key_and_correlation_header) {
    static const char *const cells[][6] = {
        {"1", "inventory.events", "k1", "{\"n\":1}", "corr-1"},
        {"2", "orders.results", NULL, "{\"n\":2}", NULL},
        {"3", "inventory.events", "k3", "{\"n\":3}", NULL},
    };
    PGresult *rows = outbox_rows(5, 3, cells);
    struct relay *r = relay_new();

    cr_assert_eq(vx_outbox_publish(r->ob, rows, NULL, errstr, sizeof(errstr)), 3, "%s", errstr);
    await_reports(r, 3);

    cr_expect_str_eq(r->d[1].topic, "t.inventory.events");
    cr_expect(r->d[1].has_key);
    cr_expect_str_eq(r->d[1].key, "k1");
    cr_expect_str_eq(r->d[1].payload, "{\"n\":1}");
    cr_expect_str_eq(r->d[1].corr, "corr-1");
    cr_expect_eq(r->d[1].nheaders, 1);

    cr_expect_str_eq(r->d[2].topic, "t.orders.results");
    cr_expect_not(r->d[2].has_key, "a NULL msg_key is produced without a key");
    cr_expect_str_eq(r->d[2].payload, "{\"n\":2}");
    cr_expect_eq(r->d[2].nheaders, 0, "a NULL correlation_id adds no header");

    cr_expect_str_eq(r->d[3].topic, "t.inventory.events");
    cr_expect_str_eq(r->d[3].key, "k3");
    cr_expect_eq(r->d[3].nheaders, 0);

    for (int id = 1; id <= 3; id++) {
        cr_expect_eq(r->d[id].seen, 1, "row %d reported %d times", id, r->d[id].seen);
        cr_expect_neq(r->d[id].err, RD_KAFKA_RESP_ERR_NO_ERROR, "row %d cannot have been delivered", id);
        cr_expect_eq(r->d[id].ours, 1, "row %d is an outbox message", id);
    }
    cr_expect_eq(vx_outbox_unmarked(r->ob), 0, "failed deliveries are left for the sweep, not marked");
    PQclear(rows);
    relay_destroy(r);
}

Test(outbox_publish, headers_column_adds_its_members_as_headers) {
    static const char *const cells[][6] = {
        {"1", "inventory.events", "k1", "p1", "corr-1", "{\"x-tenant\":\"acme\",\"x-count\":5}"},
        {"2", "inventory.events", "k2", "p2", NULL, "{\"x-tenant\":\"globex\"}"},
        {"3", "inventory.events", "k3", "p3", NULL, NULL},
    };
    PGresult *rows = outbox_rows(6, 3, cells);
    struct relay *r = relay_new();

    cr_assert_eq(vx_outbox_publish(r->ob, rows, NULL, errstr, sizeof(errstr)), 3, "%s", errstr);
    await_reports(r, 3);
    cr_expect_eq(r->d[1].nheaders, 3);
    cr_expect_str_eq(r->d[1].corr, "corr-1");
    cr_expect_str_eq(r->d[1].tenant, "acme");
    cr_expect_str_eq(r->d[1].count, "5");
    cr_expect_eq(r->d[2].nheaders, 1);
    cr_expect_str_eq(r->d[2].corr, "");
    cr_expect_str_eq(r->d[2].tenant, "globex");
    cr_expect_eq(r->d[3].nheaders, 0);
    cr_expect_eq(vx_outbox_unmarked(r->ob), 0);
    PQclear(rows);
    relay_destroy(r);
}

Test(outbox_publish, unknown_logical_topic_is_an_error_naming_row_and_topic) {
    static const char *const cells[][6] = {{"7", "payments.events", "k", "p", "c"}};
    PGresult *rows = outbox_rows(5, 1, cells);
    struct relay *r = relay_new();

    cr_expect_eq(vx_outbox_publish(r->ob, rows, NULL, errstr, sizeof(errstr)), -1);
    cr_expect_not_null(strstr(errstr, "payments.events"), "%s", errstr);
    cr_expect_not_null(strstr(errstr, "7"), "%s", errstr);
    expect_no_reports(r);
    PQclear(rows);
    relay_destroy(r);
}

Test(outbox_publish, no_rows_publish_nothing) {
    PGresult *rows = outbox_rows(5, 0, NULL);
    struct relay *r = relay_new();

    cr_expect_eq(vx_outbox_publish(r->ob, rows, NULL, errstr, sizeof(errstr)), 0, "%s", errstr);
    expect_no_reports(r);
    PQclear(rows);
    relay_destroy(r);
}

Test(outbox_publish, message_without_outbox_id_is_not_the_relays) {
    struct relay *r = relay_new();

    cr_assert_eq(vx_kafka_produce(r->rk, "t.inventory.events", "k", 1, "v", 1, NULL, NULL), 0);
    await_reports(r, 1);
    cr_expect_eq(r->foreign, 1);
    cr_expect_eq(vx_outbox_unmarked(r->ob), 0);
    relay_destroy(r);
}

/* ---- delivery bookkeeping -------------------------------------------------------------------- */

static rd_kafka_message_t report(long long id, rd_kafka_resp_err_t err) {
    rd_kafka_message_t m;
    memset(&m, 0, sizeof(m));
    m.err = err;
    m._private = (void *)(intptr_t)id;
    return m;
}

Test(outbox_delivery, successful_delivery_waits_to_be_marked) {
    vx_outbox_t *ob = vx_outbox_new(NULL);
    rd_kafka_message_t m = report(42, RD_KAFKA_RESP_ERR_NO_ERROR);

    cr_expect_eq(vx_outbox_on_delivery(ob, &m), 1);
    cr_expect_eq(vx_outbox_unmarked(ob), 1);
    vx_outbox_destroy(ob);
}

Test(outbox_delivery, failed_delivery_is_ours_but_not_marked) {
    vx_outbox_t *ob = vx_outbox_new(NULL);
    rd_kafka_message_t m = report(42, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);

    cr_expect_eq(vx_outbox_on_delivery(ob, &m), 1);
    cr_expect_eq(vx_outbox_unmarked(ob), 0);
    vx_outbox_destroy(ob);
}

Test(outbox_delivery, null_opaque_is_not_ours) {
    vx_outbox_t *ob = vx_outbox_new(NULL);
    rd_kafka_message_t ok = report(0, RD_KAFKA_RESP_ERR_NO_ERROR), failed = report(0, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT);

    cr_expect_eq(vx_outbox_on_delivery(ob, &ok), 0);
    cr_expect_eq(vx_outbox_on_delivery(ob, &failed), 0);
    cr_expect_eq(vx_outbox_unmarked(ob), 0);
    vx_outbox_destroy(ob);
}

Test(outbox_delivery, thousands_of_deliveries_are_all_kept) {
    vx_outbox_t *ob = vx_outbox_new(NULL);

    for (long long id = 1; id <= 5000; id++) {
        rd_kafka_message_t m = report(id, RD_KAFKA_RESP_ERR_NO_ERROR);
        vx_outbox_on_delivery(ob, &m);
    }
    cr_expect_eq(vx_outbox_unmarked(ob), 5000);
    vx_outbox_destroy(ob);
}

Test(outbox_delivery, mark_with_nothing_delivered_needs_no_database) {
    vx_outbox_t *ob = vx_outbox_new(NULL);
    cr_expect_eq(vx_outbox_mark(ob, NULL, errstr, sizeof(errstr)), 0);
    vx_outbox_destroy(ob);
}

Test(outbox_delivery, failed_mark_keeps_the_ids_for_the_next_try) {
    vx_outbox_t *ob = vx_outbox_new(NULL);
    PGconn *conn = PQconnectdb("host=/nonexistent/valerix-unit-test port=1 connect_timeout=1");

    cr_assert_eq(PQstatus(conn), CONNECTION_BAD);
    for (long long id = 1; id <= 3; id++) {
        rd_kafka_message_t m = report(id, RD_KAFKA_RESP_ERR_NO_ERROR);
        vx_outbox_on_delivery(ob, &m);
    }
    cr_expect_eq(vx_outbox_mark(ob, conn, errstr, sizeof(errstr)), -1);
    cr_expect_not_null(strstr(errstr, "mark"), "%s", errstr);
    cr_expect_eq(vx_outbox_unmarked(ob), 3);
    PQfinish(conn);
    vx_outbox_destroy(ob);
}

Test(outbox_routes, at_most_eight) {
    vx_outbox_t *ob = vx_outbox_new(NULL);
    char logical[16];

    for (int i = 0; i < 8; i++) {
        snprintf(logical, sizeof(logical), "t%d", i);
        cr_expect_eq(vx_outbox_route(ob, logical, "real"), 0);
    }
    cr_expect_eq(vx_outbox_route(ob, "t8", "real"), -1);
    vx_outbox_destroy(ob);
    vx_outbox_destroy(NULL);
}
