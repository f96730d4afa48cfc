/* soak_load: the soak's load, while the chaos driver kills things.
 *
 *   HTTP clients     SOAK_HTTP_THREADS threads, each its own connection, POST /orders with a fresh
 *                    Idempotency-Key per order; a transport error, a timeout, 429 or 5xx is retried
 *                    with backoff (at least Retry-After) under the SAME key, until 201, 409 or 202.
 *   Kafka producer   PlaceOrder and CancelOrder on orders.commands, Restock on inventory.commands,
 *                    now and then a deliberate duplicate or a malformed message, as kcat -P would
 *                    send them (key = idempotency key, header correlation-id), but through
 *                    librdkafka's idempotent producer with acks=all and delivery reports, so that
 *                    "accepted" means exactly "the broker acknowledged it".
 *   live reader      reads orders.results while the soak runs, for the 202-to-decision latency.
 *
 * Invariant: every command and every answer is in the ledger before anyone may act on it (a cancel
 * names only an order whose PlaceOrder was accepted). */
#include <json-c/json.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "soak.h"
#include "vx_msg.h"

#define CANCEL_RING 65536
#define RECENT 1024          /* commands a duplicate is picked from */
#define BACKOFF_BASE_MS 100
#define BACKOFF_CAP_MS 2000
#define RETRY_AFTER_CAP_MS 5000
#define FLUSH_MS 300000      /* deliveries outstanding at the end: the broker is up by then */
#define UNKNOWN_PRODUCT "SOAK-NONE"

static const soak_opts_t *opts;
static volatile int stopping, reader_stopping;
static pthread_t *clients, producer_thread, reader_thread;
static int nclients, producer_started, reader_started;
static rd_kafka_t *producer;
static soak_load_stats_t stats;
static char products[SOAK_MAX_PRODUCTS][24];

#define COUNT(field) __atomic_add_fetch(&stats.field, 1, __ATOMIC_RELAXED)

const char *soak_load_product(int i) { return products[i]; }

void soak_load_stats(soak_load_stats_t *s) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    *s = stats;
}

/* ---- cancel candidates: orders whose PlaceOrder was accepted, cancelled a little later ------------ */

static struct {
    pthread_mutex_t lock;
    soak_cmd_t *target[CANCEL_RING];
    int64_t due[CANCEL_RING];
    size_t head, len;
} cancels = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void cancel_later(soak_cmd_t *target, unsigned *rng) {
    if (soak_uniform(rng) * 100 >= opts->cancel_pct) return;
    pthread_mutex_lock(&cancels.lock);
    if (cancels.len < CANCEL_RING) {
        size_t i = (cancels.head + cancels.len++) % CANCEL_RING;
        cancels.target[i] = target;
        cancels.due[i] = vt_mono_ms() + 500 + (int64_t)(soak_uniform(rng) * 2500);
    }
    pthread_mutex_unlock(&cancels.lock);
}

/* The oldest candidate that is due, or NULL. */
static soak_cmd_t *cancel_due(int64_t now) {
    soak_cmd_t *t = NULL;
    pthread_mutex_lock(&cancels.lock);
    if (cancels.len && cancels.due[cancels.head] <= now) {
        t = cancels.target[cancels.head];
        cancels.head = (cancels.head + 1) % CANCEL_RING;
        cancels.len--;
    }
    pthread_mutex_unlock(&cancels.lock);
    return t;
}

/* ---- orders ------------------------------------------------------------------------------------- */

/* 1-3 lines of 1-3 units over the catalog; now and then a product that does not exist. */
static void random_lines(soak_cmd_t *c, unsigned *rng) {
    c->nlines = 1 + (int)(soak_rand(rng) % SOAK_MAX_LINES);
    for (int i = 0; i < c->nlines; i++) {
        int unknown = soak_uniform(rng) < 0.01;
        snprintf(c->lines[i].product, sizeof(c->lines[i].product), "%s",
                 unknown ? UNKNOWN_PRODUCT : products[soak_rand(rng) % (unsigned)opts->products]);
        c->lines[i].qty = 1 + (long)(soak_rand(rng) % 3);
    }
}

/* {"customer_id":..,"items":[..]} with a prefix of other members ("" for the HTTP body). */
static char *order_json(const soak_cmd_t *c, const char *prefix, unsigned *rng) {
    char buf[1024];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "{%s\"customer_id\":\"cust-%03u\",\"items\":[", prefix,
                                soak_rand(rng) % 500);
    for (int i = 0; i < c->nlines; i++)
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s{\"product_id\":\"%s\",\"quantity\":%ld}", i ? "," : "",
                              c->lines[i].product, c->lines[i].qty);
    snprintf(buf + n, sizeof(buf) - n, "]}");
    return strdup(buf);
}

/* ---- HTTP clients --------------------------------------------------------------------------------- */

static int is_final(int code) { return code == 201 || code == 202 || code == 409; }

static long backoff_ms(int attempt, long retry_after_s, unsigned *rng) {
    long b = BACKOFF_BASE_MS << (attempt < 5 ? attempt : 5);
    if (b > BACKOFF_CAP_MS) b = BACKOFF_CAP_MS;
    b = b / 2 + (long)(soak_uniform(rng) * (double)b / 2);
    if (retry_after_s > 0) {
        long ra = retry_after_s * 1000 > RETRY_AFTER_CAP_MS ? RETRY_AFTER_CAP_MS : retry_after_s * 1000;
        if (ra > b) b = ra;
    }
    return b;
}

/* Counts an answer that is not final; returns 1 when it is worth a retry. */
static int retryable(int code) {
    if (code == 0) COUNT(http_transport_errors);
    else if (code == 429) COUNT(http_429);
    else if (code >= 500) COUNT(http_5xx);
    else {
        COUNT(http_4xx_unexpected); /* the soak sends only valid orders: a 4xx is wrong */
        return 0;
    }
    return 1;
}

/* One client's order, from the first attempt to its final answer (or giving up). */
static void run_order(vt_http_conn_t *conn, soak_cmd_t *c, unsigned *rng) {
    c->t_first = vt_real_ms();
    for (int attempt = 0; attempt < opts->http_attempts; attempt++) {
        soak_answer_t a;
        soak_reply_t r;
        soak_http_post(conn, c, &a, &r);
        COUNT(http_requests);
        soak_cmd_answer(c, a);
        if (is_final(a.code)) {
            c->final_code = a.code;
            c->t_final = vt_real_ms();
            break;
        }
        if (!retryable(a.code)) break;
        if (attempt + 1 == opts->http_attempts) {
            COUNT(http_gave_up);
            break;
        }
        vt_sleep_ms(backoff_ms(attempt, r.retry_after_s, rng));
    }
    if (c->nanswers > 1) {
        COUNT(http_retried_clients);
        __atomic_add_fetch(&stats.http_retries, c->nanswers - 1, __ATOMIC_RELAXED);
    }
    if (c->final_code == 201 || c->final_code == 202) cancel_later(c, rng);
}

static void *http_client(void *arg) {
    long id = (long)arg, n = 0;
    unsigned rng = opts->seed ^ (unsigned)(id * 7919 + 1);
    double interval = (double)opts->http_threads * 1000.0 / (double)opts->http_rate, next = (double)vt_mono_ms();
    vt_http_conn_t *conn = NULL;
    char err[SOAK_ERR];

    if (vt_http_conn_new(&conn, opts->gateway, err, sizeof(err))) soak_say("HTTP client %ld: %s", id, err);
    while (conn && !stopping) {
        soak_cmd_t *c;
        double now = (double)vt_mono_ms();
        if (next > now) vt_sleep_ms((long)(next - now));
        next = next + interval < now - 1000 ? now : next + interval; /* after a stall: no burst */
        if (!(c = soak_ledger_new(SOAK_HTTP))) break;
        snprintf(c->key, sizeof(c->key), "%s.h%ld-%ld", opts->run_id, id, n++);
        vx_msg_order_id(c->key, c->order_id);
        random_lines(c, &rng);
        if (!(c->body = order_json(c, "", &rng))) break;
        run_order(conn, c, &rng);
    }
    vt_http_conn_free(conn);
    return NULL;
}

/* ---- the Kafka producer --------------------------------------------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    soak_cmd_t *c = m->_private;
    static unsigned rng = 12345; /* the producer thread's: delivery reports are served there */
    (void)rk;
    (void)opaque;
    if (!c) return;
    if (m->err) {
        c->failed++;
        COUNT(delivery_failed);
        return;
    }
    if (++c->acked == 1 && c->kind == SOAK_PLACE) {
        c->t_final = vt_real_ms();
        cancel_later(c, &rng);
    }
}

static int produce(const char *topic, soak_cmd_t *c, const char *value) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    char cid[SOAK_KEY_MAX + 8];
    rd_kafka_resp_err_t e;

    snprintf(cid, sizeof(cid), "cid-%s", c->key);
    rd_kafka_header_add(h, "correlation-id", -1, cid, -1);
    e = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(c->key, strlen(c->key)),
                          RD_KAFKA_V_VALUE((void *)value, strlen(value)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(c), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(h); /* librdkafka takes the headers only on success */
        soak_say("produce to %s failed: %s", topic, rd_kafka_err2str(e));
        return -1;
    }
    c->sends++;
    return 0;
}

static soak_cmd_t *recent[RECENT];
static long nrecent;

static void send_place(long n, unsigned *rng) {
    soak_cmd_t *c = soak_ledger_new(SOAK_PLACE);
    char prefix[128];

    if (!c) return;
    snprintf(c->key, sizeof(c->key), "%s.k%ld", opts->run_id, n);
    vx_msg_order_id(c->key, c->order_id);
    random_lines(c, rng);
    snprintf(prefix, sizeof(prefix), "\"type\":\"PlaceOrder\",\"idempotency_key\":\"%s\",", c->key);
    if (!(c->body = order_json(c, prefix, rng))) return;
    if (produce("orders.commands", c, c->body) == 0) COUNT(kafka_places);
    recent[nrecent++ % RECENT] = c;
}

static void send_restock(long n, unsigned *rng) {
    soak_cmd_t *c = soak_ledger_new(SOAK_RESTOCK);
    char v[256];

    if (!c) return;
    snprintf(c->key, sizeof(c->key), "%s.r%ld", opts->run_id, n);
    c->nlines = 1;
    snprintf(c->lines[0].product, sizeof(c->lines[0].product), "%s", products[soak_rand(rng) % (unsigned)opts->products]);
    c->lines[0].qty = 10 + (long)(soak_rand(rng) % 51);
    snprintf(v, sizeof(v), "{\"type\":\"Restock\",\"idempotency_key\":\"%s\",\"product_id\":\"%s\",\"quantity\":%ld}",
             c->key, c->lines[0].product, c->lines[0].qty);
    if (!(c->body = strdup(v))) return;
    if (produce("inventory.commands", c, c->body) == 0) COUNT(kafka_restocks);
    recent[nrecent++ % RECENT] = c;
}

static void send_cancel(long n, soak_cmd_t *target) {
    soak_cmd_t *c = soak_ledger_new(SOAK_CANCEL);
    char v[256];

    if (!c) return;
    snprintf(c->key, sizeof(c->key), "%s.c%ld", opts->run_id, n);
    snprintf(c->order_id, sizeof(c->order_id), "%s", target->order_id);
    snprintf(v, sizeof(v), "{\"type\":\"CancelOrder\",\"idempotency_key\":\"%s\",\"order_id\":\"%s\"}", c->key,
             c->order_id);
    target->cancel_sent = 1;
    if (produce("orders.commands", c, v) == 0) COUNT(kafka_cancels);
}

/* A command sent before, sent again as is: it must change nothing. */
static void send_duplicate(unsigned *rng) {
    soak_cmd_t *c;
    if (!nrecent) return;
    c = recent[soak_rand(rng) % (unsigned)(nrecent < RECENT ? nrecent : RECENT)];
    if (c->acked && produce(c->kind == SOAK_PLACE ? "orders.commands" : "inventory.commands", c, c->body) == 0)
        COUNT(kafka_duplicates);
}

/* Malformed commands, each with the dlq-reason it must get (README: Dead letters). */
static const struct {
    const char *topic, *reason, *fmt; /* fmt takes the key once, where it has one */
} bad_kinds[] = {
    {"orders.commands", "not_json", "{\"type\":\"PlaceOrder\",\"idempotency_key\":\"%s\""},
    {"orders.commands", "invalid_value",
     "{\"type\":\"PlaceOrder\",\"idempotency_key\":\"%s\",\"customer_id\":\"c\",\"items\":[{\"product_id\":\"SOAK-P01\",\"quantity\":0}]}"},
    {"orders.commands", "missing_field",
     "{\"type\":\"PlaceOrder\",\"idempotency_key\":\"%s\",\"items\":[{\"product_id\":\"SOAK-P01\",\"quantity\":1}]}"},
    {"orders.commands", "unknown_type", "{\"type\":\"ShipOrder\",\"idempotency_key\":\"%s\"}"},
    {"inventory.commands", "wrong_type",
     "{\"type\":\"Restock\",\"idempotency_key\":\"%s\",\"product_id\":\"SOAK-P01\",\"quantity\":\"5\"}"},
    {"inventory.commands", "invalid_value",
     "{\"type\":\"ReserveStock\",\"idempotency_key\":\"%s\",\"order_id\":\"o-bad\",\"items\":[]}"},
    {"inventory.commands", "not_json", "[%s"},
};

static void send_bad(long n) {
    soak_cmd_t *c = soak_ledger_new(SOAK_BAD);
    size_t k = (size_t)n % (sizeof(bad_kinds) / sizeof(bad_kinds[0]));
    char v[512];

    if (!c) return;
    snprintf(c->key, sizeof(c->key), "%s.x%ld", opts->run_id, n);
    c->topic = bad_kinds[k].topic;
    c->reason = bad_kinds[k].reason;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(v, sizeof(v), bad_kinds[k].fmt, c->key);
#pragma GCC diagnostic pop
    if (produce(c->topic, c, v) == 0) COUNT(kafka_bad);
}

typedef struct {
    double next, every;
    long n;
} ticker_t;

/* 1 when the ticker is due at now (and moves it on); a long stall does not cause a burst. */
static int due(ticker_t *t, double now) {
    if (t->every <= 0 || now < t->next) return 0;
    t->next = t->next + t->every < now - 1000 ? now : t->next + t->every;
    t->n++;
    return 1;
}

static void *kafka_load(void *arg) {
    unsigned rng = opts->seed ^ 0xA5A5u;
    double now = (double)vt_mono_ms();
    ticker_t place = {now, 1000.0 / (double)opts->kafka_rate, 0};
    ticker_t restock = {now, opts->restock_rate > 0 ? 1000.0 / (double)opts->restock_rate : 0, 0};
    ticker_t bad = {now + 2000, opts->bad_every_s > 0 ? (double)opts->bad_every_s * 1000.0 : 0, 0};
    soak_cmd_t *t;
    long ncancel = 0;
    (void)arg;

    while (!stopping) {
        now = (double)vt_mono_ms();
        if (due(&place, now)) {
            send_place(place.n, &rng);
            if (soak_uniform(&rng) * 100 < opts->dup_pct) send_duplicate(&rng);
        }
        if (due(&restock, now)) send_restock(restock.n, &rng);
        if (due(&bad, now)) send_bad(bad.n);
        while ((t = cancel_due((int64_t)now))) send_cancel(ncancel++, t);
        rd_kafka_poll(producer, 1);
    }
    return NULL;
}

/* ---- the live reader of orders.results ------------------------------------------------------------ */

static vt_map_t decided; /* order id -> wall ms its decision was first seen; reader thread only */

static void note_result(const rd_kafka_message_t *m, json_tokener *tok) {
    json_object *o, *v;
    const char *oid = NULL, *reason = NULL;
    int added;

    if (!m->payload) return;
    json_tokener_reset(tok);
    if (!(o = json_tokener_parse_ex(tok, m->payload, (int)m->len))) return;
    if (json_object_object_get_ex(o, "order_id", &v) && json_object_is_type(v, json_type_string))
        oid = json_object_get_string(v);
    if (json_object_object_get_ex(o, "reason", &v) && json_object_is_type(v, json_type_string))
        reason = json_object_get_string(v);
    /* not_found answers a CancelOrder of an order unknown then: it decides nothing about the order */
    if (oid && !(reason && strcmp(reason, "not_found") == 0)) vt_map_put(&decided, oid, vt_real_ms(), &added);
    COUNT(results_live);
    json_object_put(o);
}

static void *live_reader(void *arg) {
    rd_kafka_t *rk = arg;
    json_tokener *tok = json_tokener_new();

    while (tok && !reader_stopping) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        if (!m->err) note_result(m, tok);
        rd_kafka_message_destroy(m);
    }
    if (tok) json_tokener_free(tok);
    rd_kafka_destroy(rk);
    return NULL;
}

int64_t soak_load_decided_at(const char *order_id) {
    int64_t *v = vt_map_get(&decided, order_id);
    return v ? *v : 0;
}

void soak_load_reader_stop(void) {
    if (!reader_started) return;
    reader_stopping = 1;
    pthread_join(reader_thread, NULL);
    reader_started = 0;
}

/* ---- seeding, start, stop ------------------------------------------------------------------------- */

static int wait_catalog(long long want_stock, char *err, size_t errsz) {
    PGconn *db = soak_pg(opts->inventory_db, err, errsz);
    int64_t deadline = vt_mono_ms() + 60000;
    long long n = -1, stock = -1;

    while (db && vt_mono_ms() < deadline) {
        if (soak_pg_long(db, "SELECT count(*) FROM products WHERE id LIKE 'SOAK-P%'", &n, err, errsz) == 0 &&
            soak_pg_long(db, "SELECT coalesce(sum(stock), 0) FROM products WHERE id LIKE 'SOAK-P%'", &stock, err,
                         errsz) == 0 &&
            n == opts->products && stock == want_stock) {
            PQfinish(db);
            return 0;
        }
        vt_sleep_ms(200);
    }
    if (db) {
        snprintf(err, errsz, "the catalog did not show up in the inventory database within 60 s (%lld of %ld products, "
                 "stock %lld of %lld)", n, opts->products, stock, want_stock);
        PQfinish(db);
    }
    return -1;
}

int soak_load_seed(const soak_opts_t *o, char *err, size_t errsz) {
    unsigned rng = o->seed ^ 0x5EEDu;
    long long total = 0;

    opts = o;
    for (int i = 0; i < o->products; i++) snprintf(products[i], sizeof(products[i]), "SOAK-P%02d", i + 1);
    if (!producer && !(producer = soak_producer(on_delivery, err, errsz))) return -1;
    for (int i = 0; i < o->products; i++) {
        soak_cmd_t *c = soak_ledger_new(SOAK_RESTOCK);
        char v[256];
        if (!c) break;
        snprintf(c->key, sizeof(c->key), "%s.s%02d", o->run_id, i + 1);
        c->seed = c->nlines = 1;
        snprintf(c->lines[0].product, sizeof(c->lines[0].product), "%s", products[i]);
        c->lines[0].qty = 30 + (long)(soak_rand(&rng) % 91); /* scarce: a few seconds of orders */
        total += c->lines[0].qty;
        snprintf(v, sizeof(v), "{\"type\":\"Restock\",\"idempotency_key\":\"%s\",\"product_id\":\"%s\",\"quantity\":%ld,"
                 "\"name\":\"Soak product %d\"}", c->key, products[i], c->lines[0].qty, i + 1);
        c->body = strdup(v);
        if (!c->body || produce("inventory.commands", c, v)) {
            snprintf(err, errsz, "could not produce the catalog");
            return -1;
        }
    }
    if (rd_kafka_flush(producer, 60000) || stats.delivery_failed) {
        snprintf(err, errsz, "the catalog was not acknowledged by the broker within 60 s");
        return -1;
    }
    return wait_catalog(total, err, errsz);
}

int soak_load_start(const soak_opts_t *o, char *err, size_t errsz) {
    rd_kafka_t *rk;

    opts = o;
    if (!(rk = soak_reader("orders.results", err, errsz))) return -1;
    if (pthread_create(&reader_thread, NULL, live_reader, rk)) {
        rd_kafka_destroy(rk);
        snprintf(err, errsz, "cannot start a thread");
        return -1;
    }
    reader_started = 1;
    if (pthread_create(&producer_thread, NULL, kafka_load, NULL)) {
        snprintf(err, errsz, "cannot start a thread");
        return -1;
    }
    producer_started = 1;
    clients = calloc((size_t)o->http_threads, sizeof(*clients));
    for (nclients = 0; clients && nclients < o->http_threads; nclients++)
        if (pthread_create(&clients[nclients], NULL, http_client, (void *)(long)nclients)) break;
    if (nclients < o->http_threads) {
        snprintf(err, errsz, "cannot start the HTTP client threads");
        return -1;
    }
    return 0;
}

void soak_load_stop(void) {
    stopping = 1;
    for (int i = 0; i < nclients; i++) pthread_join(clients[i], NULL);
    free(clients);
    clients = NULL;
    nclients = 0;
    if (producer_started) pthread_join(producer_thread, NULL);
    producer_started = 0;
    if (producer) {
        if (rd_kafka_flush(producer, FLUSH_MS)) soak_say("warning: %d messages not delivered", rd_kafka_outq_len(producer));
        rd_kafka_destroy(producer);
        producer = NULL;
    }
}
