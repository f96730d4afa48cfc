/* soak_util: what every part of the soak shares: the ledger (every command sent, every answer got),
 * randomness, output, and the soak's settings for Kafka, PostgreSQL and HTTP over the shared test
 * library (tests/lib). See soak.h.
 *
 * Invariant: the ledger's records never move once made (blocks of fixed size), so a thread may keep
 * a pointer to one while others add more. */
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "soak.h"
#include "vx_kafka.h"

/* ---- the ledger ---------------------------------------------------------------------------------- */

#define BLOCK 4096
#define MAX_BLOCKS 4096 /* 16 M records: far beyond a day of soak */

static pthread_mutex_t ledger_lock = PTHREAD_MUTEX_INITIALIZER;
static soak_cmd_t *blocks[MAX_BLOCKS];
static size_t ledger_n;

soak_cmd_t *soak_ledger_new(soak_kind_t kind) {
    soak_cmd_t *c = NULL;
    size_t b;

    pthread_mutex_lock(&ledger_lock);
    b = ledger_n / BLOCK;
    if (b < MAX_BLOCKS && (blocks[b] || (blocks[b] = calloc(BLOCK, sizeof(soak_cmd_t))))) {
        c = &blocks[b][ledger_n % BLOCK];
        c->kind = kind;
        ledger_n++;
    }
    pthread_mutex_unlock(&ledger_lock);
    return c;
}

size_t soak_ledger_count(void) {
    size_t n;
    pthread_mutex_lock(&ledger_lock);
    n = ledger_n;
    pthread_mutex_unlock(&ledger_lock);
    return n;
}

soak_cmd_t *soak_ledger_at(size_t i) { return &blocks[i / BLOCK][i % BLOCK]; }

int soak_cmd_answer(soak_cmd_t *c, soak_answer_t a) {
    if (c->nanswers == c->answers_cap) {
        int cap = c->answers_cap ? c->answers_cap * 2 : 2;
        soak_answer_t *p = realloc(c->answers, (size_t)cap * sizeof(*p));
        if (!p) return -1;
        c->answers = p;
        c->answers_cap = cap;
    }
    c->answers[c->nanswers++] = a;
    return 0;
}

void soak_ledger_free(void) {
    for (size_t i = 0; i < ledger_n; i++) {
        free(soak_ledger_at(i)->body);
        free(soak_ledger_at(i)->answers);
    }
    for (size_t b = 0; b < MAX_BLOCKS && blocks[b]; b++) {
        free(blocks[b]);
        blocks[b] = NULL;
    }
    ledger_n = 0;
}

/* ---- randomness, output -------------------------------------------------------------------- */

unsigned soak_rand(unsigned *s) {
    unsigned x = *s ? *s : 2463534242u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

double soak_uniform(unsigned *s) { return (double)soak_rand(s) / 4294967296.0; }

void soak_say(const char *fmt, ...) {
    static pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;
    va_list ap;
    time_t t = time(NULL);
    struct tm tm;
    char ts[16];

    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%H:%M:%S", &tm);
    pthread_mutex_lock(&out);
    printf("soak %s ", ts);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    pthread_mutex_unlock(&out);
}

/* ---- Kafka --------------------------------------------------------------------------------------- */

#define READ_TIMEOUT_MS 180000 /* to read a topic to its end */
#define META_TIMEOUT_MS 15000  /* to find a topic's partitions, offsets and a group's */

rd_kafka_t *soak_producer(void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *), char *err, size_t errsz) {
    static const char *const defaults[] = {"client.id", "vxsoak", NULL};
    return vx_kafka_producer_new(dr_cb, NULL, defaults, err, errsz);
}

/* The services' consumer settings (KAFKA_* of the soak's broker) for a reader that never joins. */
static rd_kafka_conf_t *reader_conf(char *err, size_t errsz) {
    static const char *const defaults[] = {"group.id", "vxsoak-reader", "client.id", "vxsoak", "enable.auto.commit",
                                           "false", NULL};
    return vx_kafka_conf_new(VX_KAFKA_CONSUMER, defaults, err, errsz);
}

rd_kafka_t *soak_reader(const char *topic, char *err, size_t errsz) {
    rd_kafka_t *rk = NULL;
    vt_kafka_reader_new(&rk, reader_conf(err, errsz), topic, VT_FROM_BEGINNING, META_TIMEOUT_MS, NULL, err, errsz);
    return rk;
}

int soak_read_topic(const char *topic, vt_kafka_msg_fn *fn, void *arg, char *err, size_t errsz) {
    rd_kafka_conf_t *conf = reader_conf(err, errsz);
    return conf ? vt_kafka_read_to_end(conf, topic, fn, arg, READ_TIMEOUT_MS, err, errsz) : -1;
}

int soak_group_lag(const char *group, const char *topic, int64_t *lag, char *err, size_t errsz) {
    rd_kafka_conf_t *conf = vx_kafka_conf_new(VX_KAFKA_CONSUMER, NULL, err, errsz);
    return conf ? vt_kafka_group_lag(conf, group, topic, META_TIMEOUT_MS, lag, err, errsz) : -1;
}

/* ---- PostgreSQL ---------------------------------------------------------------------------------- */

PGconn *soak_pg(const char *url, char *err, size_t errsz) {
    PGconn *db = PQconnectdb(url);
    if (PQstatus(db) != CONNECTION_OK) {
        snprintf(err, errsz, "%s: %s", url, PQerrorMessage(db));
        PQfinish(db);
        return NULL;
    }
    PQclear(PQexec(db, "SET client_min_messages = warning"));
    return db;
}

int soak_pg_long(PGconn *db, const char *sql, long long *out, char *err, size_t errsz) {
    PGresult *r = PQexec(db, sql);
    int rc = -1;

    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQgetisnull(r, 0, 0))
        snprintf(err, errsz, "%s: %s", sql, PQresultStatus(r) == PGRES_TUPLES_OK ? "no value" : PQerrorMessage(db));
    else {
        *out = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        rc = 0;
    }
    PQclear(r);
    return rc;
}


/* ---- HTTP ---------------------------------------------------------------------------------------- */

static char status_letter(const char *s) {
    if (!s) return 0;
    if (strcmp(s, "CONFIRMED") == 0) return 'C';
    if (strcmp(s, "REJECTED") == 0) return 'R';
    if (strcmp(s, "CANCELLED") == 0) return 'X';
    if (strcmp(s, "PENDING") == 0) return 'P';
    return '?';
}

/* The order an answer names: the body itself (201, 202) or its member "order" (409). */
static void parse_reply(json_object *o, const soak_cmd_t *c, soak_answer_t *a, soak_reply_t *r) {
    json_object *ord = NULL, *v;

    if (o && json_object_is_type(o, json_type_object)) {
        ord = json_object_object_get_ex(o, "order", &v) && json_object_is_type(v, json_type_object) ? v : o;
        if (json_object_object_get_ex(ord, "id", &v) && json_object_is_type(v, json_type_string)) {
            snprintf(r->id, sizeof(r->id), "%s", json_object_get_string(v));
            a->id = strcmp(r->id, c->order_id) == 0 ? 1 : -1;
        }
        if (json_object_object_get_ex(ord, "status", &v) && json_object_is_type(v, json_type_string))
            a->status = r->status = status_letter(json_object_get_string(v));
    }
}

void soak_http_post(vt_http_conn_t *conn, const soak_cmd_t *c, soak_answer_t *a, soak_reply_t *r) {
    char keyh[SOAK_KEY_MAX + 32], err[SOAK_ERR];
    const char *const headers[] = {"Content-Type: application/json", keyh, NULL};
    const vt_http_req req = {.method = "POST", .path = "/orders", .headers = headers, .body = c->body,
                             .body_len = strlen(c->body), .timeout_ms = 10000, /* the gateway's deadline is 5 s */
                             .connect_timeout_ms = 2000, .max_response = SOAK_HTTP_MAX_RESPONSE,
                             .parse_json = true};
    vt_http_resp resp;

    memset(a, 0, sizeof(*a));
    memset(r, 0, sizeof(*r));
    snprintf(keyh, sizeof(keyh), "Idempotency-Key: %s", c->key);
    if (vt_http_conn_request(conn, &req, &resp, err, sizeof(err))) return; /* a->code 0: no answer */
    const char *ra = vt_http_header(&resp, "Retry-After");
    a->code = (short)resp.status;
    r->retry_after_s = ra ? strtol(ra, NULL, 10) : 0;
    if (resp.status) parse_reply(resp.json, c, a, r);
    vt_http_resp_clear(&resp);
}

/* One exchange on a fresh connection; the body into resp, cut to respsz-1. */
static int http_call(const char *addr, const char *path, const char *token, const char *body, char *resp,
                     size_t respsz) {
    char auth[320], err[SOAK_ERR];
    const char *const headers[] = {"Content-Type: application/json", auth, NULL};
    const vt_http_req req = {.method = body ? "POST" : "GET", .path = path, .headers = body ? headers : NULL,
                             .body = body, .body_len = body ? strlen(body) : 0, .timeout_ms = 5000,
                             .max_response = SOAK_HTTP_MAX_RESPONSE};
    vt_http_resp r;
    int code;

    if (respsz < 2) return 0;
    resp[0] = '\0';
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
    if (vt_http_request(addr, &req, &r, err, sizeof(err))) return 0;
    snprintf(resp, respsz, "%.*s", (int)(r.body_len < respsz ? r.body_len : respsz - 1), r.body);
    code = r.status;
    vt_http_resp_clear(&r);
    return code;
}

int soak_http_admin(const char *addr, const char *path, const char *token, const char *body, char *resp,
                    size_t respsz) {
    return http_call(addr, path, token, body, resp, respsz);
}

int soak_http_get(const char *addr, const char *path, char *resp, size_t respsz) {
    return http_call(addr, path, NULL, NULL, resp, respsz);
}
