/* soak_util: what every part of the soak shares: the ledger (every command sent, every answer got),
 * a string map, the clock, and thin Kafka, PostgreSQL and HTTP helpers. See soak.h.
 *
 * Invariant: the ledger's records never move once made (blocks of fixed size), so a thread may keep
 * a pointer to one while others add more. */
#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
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

/* ---- string map ---------------------------------------------------------------------------------- */

uint64_t soak_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static size_t map_slot(char **keys, size_t cap, const char *k) {
    size_t i = soak_hash(k) & (cap - 1);
    while (keys[i] && strcmp(keys[i], k) != 0) i = (i + 1) & (cap - 1);
    return i;
}

static int map_grow(soak_map_t *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    char **keys = calloc(cap, sizeof(*keys));
    int64_t *vals = calloc(cap, sizeof(*vals));

    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -1;
    }
    for (size_t j = 0; j < m->cap; j++) {
        if (!m->keys[j]) continue;
        size_t i = map_slot(keys, cap, m->keys[j]);
        keys[i] = m->keys[j];
        vals[i] = m->vals[j];
    }
    free(m->keys);
    free(m->vals);
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

int64_t *soak_map_get(const soak_map_t *m, const char *k) {
    size_t i;
    if (!m->cap) return NULL;
    i = map_slot(m->keys, m->cap, k);
    return m->keys[i] ? &m->vals[i] : NULL;
}

int64_t *soak_map_put(soak_map_t *m, const char *k, int64_t v, int *added) {
    size_t i;
    *added = 0;
    if ((m->n + 1) * 2 > m->cap && map_grow(m)) return NULL;
    i = map_slot(m->keys, m->cap, k);
    if (!m->keys[i]) {
        if (!(m->keys[i] = strdup(k))) return NULL;
        m->vals[i] = v;
        m->n++;
        *added = 1;
    }
    return &m->vals[i];
}

void soak_map_free(soak_map_t *m) {
    for (size_t i = 0; i < m->cap; i++) free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof(*m));
}

/* ---- clock, randomness, output -------------------------------------------------------------------- */

static int64_t clock_ms(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t soak_wall_ms(void) { return clock_ms(CLOCK_REALTIME); }
int64_t soak_mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

void soak_sleep_ms(long ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (ms > 0 && nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
}

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

#define READ_MAX_PARTS 64       /* partitions of a topic the soak reads (Valerix makes 2, deployments 6) */
#define READ_TIMEOUT_MS 180000  /* to read a topic to its end */

rd_kafka_t *soak_producer(void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *), char *err, size_t errsz) {
    static const char *const defaults[] = {"client.id", "vxsoak", NULL};
    return vx_kafka_producer_new(dr_cb, NULL, defaults, err, errsz);
}

static rd_kafka_t *consumer(char *err, size_t errsz) {
    static const char *const defaults[] = {"group.id", "vxsoak-reader", "client.id", "vxsoak", "enable.auto.commit",
                                           "false", NULL};
    rd_kafka_conf_t *conf = vx_kafka_conf_new(VX_KAFKA_CONSUMER, defaults, err, errsz);
    rd_kafka_t *rk;

    if (!conf) return NULL;
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errsz))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* The partitions of topic, each at its beginning; ends[id] gets the end offset of partition id (ids
 * from 0 to max-1, as Kafka numbers them). */
static rd_kafka_topic_partition_list_t *partitions(rd_kafka_t *rk, const char *topic, int64_t *ends, int max,
                                                   char *err, size_t errsz) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, 15000);
    rd_kafka_topic_partition_list_t *l = NULL;

    if (e || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt > max) {
        e = e ? e : md->topic_cnt != 1 ? RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC : md->topics[0].err;
        snprintf(err, errsz, "metadata of %s: %s", topic, e ? rd_kafka_err2str(e) : "too many partitions");
        goto out;
    }
    l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int p = 0; p < md->topics[0].partition_cnt; p++) {
        int32_t id = md->topics[0].partitions[p].id;
        int64_t lo = 0, hi = 0;
        if (id < 0 || id >= max) {
            snprintf(err, errsz, "%s has partition %d", topic, (int)id);
            rd_kafka_topic_partition_list_destroy(l);
            l = NULL;
            goto out;
        }
        if (ends && (e = rd_kafka_query_watermark_offsets(rk, topic, id, &lo, &hi, 15000))) {
            snprintf(err, errsz, "offsets of %s [%d]: %s", topic, (int)id, rd_kafka_err2str(e));
            rd_kafka_topic_partition_list_destroy(l);
            l = NULL;
            goto out;
        }
        if (ends) ends[id] = hi;
        rd_kafka_topic_partition_list_add(l, topic, id)->offset = RD_KAFKA_OFFSET_BEGINNING;
    }
out:
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return l;
}

rd_kafka_t *soak_reader(const char *topic, char *err, size_t errsz) {
    rd_kafka_t *rk = consumer(err, errsz);
    rd_kafka_topic_partition_list_t *l = rk ? partitions(rk, topic, NULL, READ_MAX_PARTS, err, errsz) : NULL;

    if (l && rd_kafka_assign(rk, l) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_topic_partition_list_destroy(l);
        return rk;
    }
    if (l) {
        snprintf(err, errsz, "assign %s failed", topic);
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (rk) rd_kafka_destroy(rk);
    return NULL;
}


int soak_read_topic(const char *topic, soak_msg_fn *fn, void *arg, char *err, size_t errsz) {
    int64_t ends[READ_MAX_PARTS], next[READ_MAX_PARTS] = {0}, deadline = soak_mono_ms() + READ_TIMEOUT_MS;
    rd_kafka_t *rk = consumer(err, errsz);
    rd_kafka_topic_partition_list_t *l = rk ? partitions(rk, topic, ends, READ_MAX_PARTS, err, errsz) : NULL;
    int rc = -1, left = 0;

    if (!l) goto out;
    for (int i = 0; i < l->cnt; i++) left += ends[l->elems[i].partition] > 0;
    if (rd_kafka_assign(rk, l)) {
        snprintf(err, errsz, "assign %s failed", topic);
        goto out;
    }
    while (left > 0 && soak_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        if (!m->err && m->partition >= 0 && m->partition < READ_MAX_PARTS && m->offset >= next[m->partition]) {
            fn(m, arg);
            next[m->partition] = m->offset + 1;
            if (next[m->partition] == ends[m->partition]) left--;
        }
        rd_kafka_message_destroy(m);
    }
    if (left > 0)
        snprintf(err, errsz, "%s: %d partitions not read to their end within %d s", topic, left, READ_TIMEOUT_MS / 1000);
    else
        rc = 0;
out:
    if (l) rd_kafka_topic_partition_list_destroy(l);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}

int soak_group_lag(const char *group, const char *topic, int64_t *lag, char *err, size_t errsz) {
    const char *const defaults[] = {"group.id", group, "enable.auto.commit", "false", NULL};
    rd_kafka_conf_t *conf = vx_kafka_conf_new(VX_KAFKA_CONSUMER, defaults, err, errsz);
    int64_t ends[READ_MAX_PARTS];
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_resp_err_t e;
    int rc = -1;

    if (!conf) return -1;
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errsz))) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    if (!(l = partitions(rk, topic, ends, READ_MAX_PARTS, err, errsz))) goto out;
    if ((e = rd_kafka_committed(rk, l, 15000))) { /* asks the coordinator; never joins the group */
        snprintf(err, errsz, "committed offsets of %s in %s: %s", group, topic, rd_kafka_err2str(e));
        goto out;
    }
    *lag = 0;
    for (int i = 0; i < l->cnt; i++) {
        int64_t done = l->elems[i].offset >= 0 ? l->elems[i].offset : 0, end = ends[l->elems[i].partition];
        *lag += end > done ? end - done : 0;
    }
    rc = 0;
out:
    if (l) rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return rc;
}

const char *soak_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size) {
    return vx_kafka_header(m, name, buf, size);
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

#define HTTP_BODY_CAP 65536 /* an answer of the gateway is a few hundred bytes */

typedef struct {
    char *buf;
    size_t len, cap;
    long retry_after_s;
} http_buf_t;

static size_t on_body(char *p, size_t size, size_t n, void *opaque) {
    http_buf_t *b = opaque;
    size_t add = size * n, take = b->len + add < b->cap ? add : b->cap - b->len - 1;
    memcpy(b->buf + b->len, p, take);
    b->len += take;
    b->buf[b->len] = '\0';
    return add;
}

static size_t on_header(char *p, size_t size, size_t n, void *opaque) {
    http_buf_t *b = opaque;
    if (size * n > 12 && strncasecmp(p, "Retry-After:", 12) == 0) b->retry_after_s = strtol(p + 12, NULL, 10);
    return size * n;
}

static char status_letter(const char *s) {
    if (!s) return 0;
    if (strcmp(s, "CONFIRMED") == 0) return 'C';
    if (strcmp(s, "REJECTED") == 0) return 'R';
    if (strcmp(s, "CANCELLED") == 0) return 'X';
    if (strcmp(s, "PENDING") == 0) return 'P';
    return '?';
}

/* The order an answer names: the body itself (201, 202) or its member "order" (409). */
static void parse_reply(const char *body, const soak_cmd_t *c, soak_answer_t *a, soak_reply_t *r) {
    json_object *o = json_tokener_parse(body), *ord = NULL, *v;

    if (o && json_object_is_type(o, json_type_object)) {
        ord = json_object_object_get_ex(o, "order", &v) && json_object_is_type(v, json_type_object) ? v : o;
        if (json_object_object_get_ex(ord, "id", &v) && json_object_is_type(v, json_type_string)) {
            snprintf(r->id, sizeof(r->id), "%s", json_object_get_string(v));
            a->id = strcmp(r->id, c->order_id) == 0 ? 1 : -1;
        }
        if (json_object_object_get_ex(ord, "status", &v) && json_object_is_type(v, json_type_string))
            a->status = r->status = status_letter(json_object_get_string(v));
    }
    json_object_put(o);
}

void soak_http_post(CURL *curl, const soak_opts_t *o, const soak_cmd_t *c, soak_answer_t *a, soak_reply_t *r) {
    char url[128], keyh[SOAK_KEY_MAX + 32], body[HTTP_BODY_CAP];
    http_buf_t b = {.buf = body, .cap = sizeof(body)};
    struct curl_slist *h = NULL;
    long code = 0;

    body[0] = '\0';
    memset(a, 0, sizeof(*a));
    memset(r, 0, sizeof(*r));
    snprintf(url, sizeof(url), "http://%s/orders", o->gateway);
    snprintf(keyh, sizeof(keyh), "Idempotency-Key: %s", c->key);
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, keyh);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &b);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 2000L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L); /* the gateway's deadline is 5 s */
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    a->code = (short)code;
    r->retry_after_s = b.retry_after_s;
    if (code) parse_reply(body, c, a, r);
}

static int http_call(const char *url, const char *token, const char *body, char *resp, size_t respsz) {
    CURL *curl = curl_easy_init();
    http_buf_t b = {.buf = resp, .cap = respsz};
    struct curl_slist *h = NULL;
    char auth[320];
    long code = 0;

    if (!curl || respsz < 2) {
        if (curl) curl_easy_cleanup(curl);
        return 0;
    }
    resp[0] = '\0';
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (body) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token ? token : "");
        h = curl_slist_append(h, "Content-Type: application/json");
        h = curl_slist_append(h, auth);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
    }
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(curl) == CURLE_OK) curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(h);
    curl_easy_cleanup(curl);
    return (int)code;
}

int soak_http_admin(const char *url, const char *token, const char *body, char *resp, size_t respsz) {
    return http_call(url, token, body, resp, respsz);
}

int soak_http_get(const char *url, char *resp, size_t respsz) { return http_call(url, NULL, NULL, resp, respsz); }
