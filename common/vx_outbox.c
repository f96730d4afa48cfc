/* vx_outbox: the outbox relay. See vx_outbox.h. */
#include "vx_outbox.h"

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vx_chaos.h"
#include "vx_kafka.h"

#define MAX_ROUTES 8

/* Delivery state is outbox_pending (common/migrations/001_outbox_pending.sql): a row per outbox row not
   yet known to be delivered, written by triggers in the transaction that writes the outbox row. */
/* The mark commits without waiting for its WAL to reach the disk (synchronous_commit off for its own
   transaction: set_config(..., true) ends with it; the apply calls on the same connection stay
   durable). A mark a crash loses is only a resend by the sweep, which every consumer absorbs, and a
   later durable commit flushes it anyway; waiting for the flush cost each loop turn a disk write.
   One simple query, two statements, one implicit transaction: the ids are numbers formatted here. */
static const char SQL_MARK_HEAD[] = "SELECT set_config('synchronous_commit', 'off', true);"
                                    " DELETE FROM outbox_pending WHERE id = ANY('";
static const char SQL_MARK_TAIL[] = "'::bigint[])";
/* Pending rows last handed to Kafka longer than the grace ago, claimed in id order (each key's events
   keep theirs); the outbox is reached by the claimed ids alone (common/migrations/003: a join of
   every pending row to the outbox read the whole outbox at every sweep). */
static const char SQL_SWEEP[] =
    "WITH claimed AS ("
    " UPDATE outbox_pending p SET claimed_at = now() FROM ("
    "  SELECT q.id FROM outbox_pending q"
    "   WHERE q.claimed_at < now() - make_interval(secs => $1::float8 / 1000)"
    "  ORDER BY q.id LIMIT $2 FOR UPDATE SKIP LOCKED) s"
    " WHERE p.id = s.id RETURNING p.id) "
    "SELECT o.id, o.topic, o.msg_key, o.payload, o.correlation_id, o.headers"
    "  FROM outbox o WHERE o.id = ANY (ARRAY(SELECT c.id FROM claimed c)) ORDER BY o.id";
/* Old rows that are delivered; and pending rows whose outbox row is gone (none are made, but a
   pending row that names nothing would otherwise stay for ever). The oldest delivered rows are read
   by id, which grows with time, so no index on created_at is needed (common/migrations/002): those
   past the retention among them go. A row a little older than a neighbour with a lower id goes at a
   later prune. Both reads are bounded, so both are index probes: an unbounded anti-join of
   outbox_pending, planned on stale statistics, hashed the whole outbox (74 ms at 220,000 rows). */
static const char SQL_PRUNE[] =
    "WITH orphans AS (DELETE FROM outbox_pending WHERE id IN (SELECT p.id FROM"
    "  (SELECT id FROM outbox_pending ORDER BY id LIMIT 1000) p"
    "  WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = p.id))) "
    "DELETE FROM outbox WHERE id IN (SELECT o.id FROM (SELECT o.id, o.created_at FROM outbox o"
    "    WHERE NOT EXISTS (SELECT 1 FROM outbox_pending p WHERE p.id = o.id) ORDER BY o.id LIMIT 10000) o"
    "  WHERE o.created_at < now() - make_interval(secs => $1::float8))";

struct vx_outbox_s {
    rd_kafka_t *producer; /* borrowed */
    struct {
        char *logical, *real;
    } routes[MAX_ROUTES];
    int nroutes;
    long long *acked; /* delivered ids waiting for vx_outbox_mark */
    size_t nacked, cap;
    char *idbuf; /* the mark statement with its "{1,2,3}" array literal, reused */
    size_t idbuf_cap;
};

vx_outbox_t *vx_outbox_new(rd_kafka_t *producer) {
    vx_outbox_t *ob = calloc(1, sizeof(*ob));
    if (ob) ob->producer = producer;
    return ob;
}

void vx_outbox_destroy(vx_outbox_t *ob) {
    if (!ob) return;
    for (int i = 0; i < ob->nroutes; i++) {
        free(ob->routes[i].logical);
        free(ob->routes[i].real);
    }
    free(ob->acked);
    free(ob->idbuf);
    free(ob);
}

int vx_outbox_route(vx_outbox_t *ob, const char *logical, const char *real) {
    if (ob->nroutes == MAX_ROUTES) return -1;
    ob->routes[ob->nroutes].logical = strdup(logical);
    ob->routes[ob->nroutes].real = strdup(real);
    if (!ob->routes[ob->nroutes].logical || !ob->routes[ob->nroutes].real) return -1;
    ob->nroutes++;
    return 0;
}

static const char *route(const vx_outbox_t *ob, const char *logical) {
    for (int i = 0; i < ob->nroutes; i++)
        if (strcmp(ob->routes[i].logical, logical) == 0) return ob->routes[i].real;
    return NULL;
}

/* Adds the members of a JSON object {"name": "value"} as headers. */
static void add_headers(rd_kafka_headers_t **hdrs, const char *json) {
    json_object *o = json_tokener_parse(json);
    if (o && json_object_is_type(o, json_type_object)) {
        if (!*hdrs) *hdrs = rd_kafka_headers_new(2);
        json_object_object_foreach(o, k, v) rd_kafka_header_add(*hdrs, k, -1, json_object_get_string(v), -1);
    }
    json_object_put(o);
}

int vx_outbox_publish(vx_outbox_t *ob, const PGresult *rows, const vx_outbox_cols_t *cols, char *errstr,
                      size_t errstr_size) {
    vx_outbox_cols_t c = {0, 1, 2, 3, 4, PQnfields(rows) > 5 ? 5 : -1};
    int n = PQntuples(rows), sent = 0;

    if (cols) c = *cols;
    for (int i = 0; i < n; i++) {
        long long id;
        const char *topic, *key;
        rd_kafka_headers_t *hdrs = NULL;
        rd_kafka_resp_err_t err;

        if (n > 1 && i == n / 2) vx_chaos_point("mid_batch"); /* half of them on their way */
        if (PQgetisnull(rows, i, c.id)) continue;
        id = strtoll(PQgetvalue(rows, i, c.id), NULL, 10);
        topic = route(ob, PQgetvalue(rows, i, c.topic));
        key = PQgetisnull(rows, i, c.key) ? NULL : PQgetvalue(rows, i, c.key);
        if (!topic) {
            snprintf(errstr, errstr_size, "outbox row %lld names unknown topic \"%s\"", id, PQgetvalue(rows, i, c.topic));
            return -1;
        }
        if (!PQgetisnull(rows, i, c.cid)) {
            hdrs = rd_kafka_headers_new(2);
            rd_kafka_header_add(hdrs, "correlation-id", -1, PQgetvalue(rows, i, c.cid), PQgetlength(rows, i, c.cid));
        }
        if (c.headers >= 0 && !PQgetisnull(rows, i, c.headers)) add_headers(&hdrs, PQgetvalue(rows, i, c.headers));
        err = vx_kafka_produce(ob->producer, topic, key, key ? (size_t)PQgetlength(rows, i, c.key) : 0,
                               PQgetvalue(rows, i, c.payload), (size_t)PQgetlength(rows, i, c.payload), hdrs,
                               (void *)(intptr_t)id);
        if (err) {
            if (hdrs) rd_kafka_headers_destroy(hdrs);
            snprintf(errstr, errstr_size, "produce outbox row %lld: %s", id, rd_kafka_err2str(err));
            return -1;
        }
        sent++;
    }
    return sent;
}

int vx_outbox_on_delivery(vx_outbox_t *ob, const rd_kafka_message_t *m) {
    long long id = (long long)(intptr_t)m->_private;
    if (!id) return 0;
    if (m->err) return 1; /* stays unpublished; the sweep sends it again */
    if (ob->nacked == ob->cap) {
        size_t cap = ob->cap ? ob->cap * 2 : 1024;
        long long *a = realloc(ob->acked, cap * sizeof(*a));
        if (!a) return 1; /* not stamped now: the sweep republishes it later, which is allowed */
        ob->acked = a;
        ob->cap = cap;
    }
    ob->acked[ob->nacked++] = id;
    return 1;
}

size_t vx_outbox_unmarked(const vx_outbox_t *ob) { return ob->nacked; }

int vx_outbox_mark(vx_outbox_t *ob, PGconn *conn, char *errstr, size_t errstr_size) {
    size_t need = sizeof(SQL_MARK_HEAD) + ob->nacked * 21 + 2 + sizeof(SQL_MARK_TAIL), pos;
    PGresult *r;
    int ok;

    if (!ob->nacked) return 0;
    if (need > ob->idbuf_cap) {
        char *b = realloc(ob->idbuf, need);
        if (!b) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
        ob->idbuf = b;
        ob->idbuf_cap = need;
    }
    memcpy(ob->idbuf, SQL_MARK_HEAD, sizeof(SQL_MARK_HEAD) - 1);
    pos = sizeof(SQL_MARK_HEAD) - 1;
    ob->idbuf[pos++] = '{';
    for (size_t i = 0; i < ob->nacked; i++)
        pos += (size_t)snprintf(ob->idbuf + pos, need - pos, i ? ",%lld" : "%lld", ob->acked[i]);
    ob->idbuf[pos++] = '}';
    memcpy(ob->idbuf + pos, SQL_MARK_TAIL, sizeof(SQL_MARK_TAIL)); /* with its NUL */
    r = PQexec(conn, ob->idbuf); /* the last statement's result: the DELETE's */
    ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (ok)
        ob->nacked = 0;
    else
        snprintf(errstr, errstr_size, "mark published: %s", PQerrorMessage(conn));
    PQclear(r);
    return ok ? 0 : -1;
}

int vx_outbox_sweep(vx_outbox_t *ob, PGconn *conn, int grace_ms, int limit, char *errstr, size_t errstr_size) {
    char grace[32], lim[32];
    const char *params[2] = {grace, lim};
    PGresult *r;
    int n;

    snprintf(grace, sizeof(grace), "%d", grace_ms);
    snprintf(lim, sizeof(lim), "%d", limit);
    r = PQexecParams(conn, SQL_SWEEP, 2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(errstr, errstr_size, "sweep: %s", PQerrorMessage(conn));
        PQclear(r);
        return -1;
    }
    n = PQntuples(r) ? vx_outbox_publish(ob, r, NULL, errstr, errstr_size) : 0;
    PQclear(r);
    return n;
}

int vx_outbox_prune(vx_outbox_t *ob, PGconn *conn, long long retention_s, char *errstr, size_t errstr_size) {
    char secs[32];
    const char *params[1] = {secs};
    PGresult *r;
    int n = -1;

    (void)ob;
    snprintf(secs, sizeof(secs), "%lld", retention_s);
    r = PQexecParams(conn, SQL_PRUNE, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
        n = atoi(PQcmdTuples(r));
    else
        snprintf(errstr, errstr_size, "prune: %s", PQerrorMessage(conn));
    PQclear(r);
    return n;
}
