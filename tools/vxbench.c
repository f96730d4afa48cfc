/* vxbench: the measuring half of `make bench`; tests/bench/bench.sh drives it.
 *
 *   vxbench seed PREFIX PRODUCTS QTY               Restock lines, one per product, for kcat -K'|'
 *   vxbench inventory PREFIX N PRODUCTS            N inventory commands (the mix below), for kcat -K'|'
 *   vxbench orders PREFIX N PRODUCTS               N PlaceOrder commands, for kcat -K'|'
 *   vxbench count TOPIC PREFIX EXPECT TIMEOUT_S [READY_FILE]
 *                                                  reads TOPIC from the beginning until EXPECT distinct
 *                                                  idempotency keys starting with PREFIX were seen
 *   vxbench paced COMMANDS EVENTS PREFIX RATE SECS PRODUCTS DRAIN_S
 *                                                  produces the mix at RATE/s for SECS, reads the
 *                                                  events, prints produced->consumed latency
 *                                                  (VXBENCH_LATENCIES=FILE: also each one, in ms;
 *                                                  VXBENCH_PACED_MIX=orders: PlaceOrder, not the mix)
 *   vxbench forward GROUP SECS IN=OUT:TYPE...      the null pipeline's stand-in for a service: reads
 *                                                  each IN, answers on its OUT with a message of TYPE
 *                                                  (same key, idempotency_key and size), stores the
 *                                                  offset after delivery; no database (stage N);
 *                                                  SIGUSR1: prints its Kafka requests so far
 *   vxbench group-to-end GROUP TOPIC               commits TOPIC's end offsets for consumer GROUP
 *   vxbench wait-topics TIMEOUT_S TOPIC...         waits until every partition has a leader
 *   vxbench drop-topics TOPIC...                   deletes topics
 *   vxbench migrate CONNINFO DIRS                  applies a service's migrations (vx_pg_migrate) to a
 *                                                  scratch database, for stage D
 *   vxbench http-load URL CONNS SECS PREFIX PRODUCTS SLOW_MS [MARKED_PRODUCT]
 *                                                  closed-loop clients: CONNS connections, each POSTing
 *                                                  an order (a fresh Idempotency-Key) as soon as its
 *                                                  last one was answered, for SECS; prints answers by
 *                                                  status, accepted (201) per second and latency
 *                                                  percentiles, overall and of the answers faster than
 *                                                  SLOW_MS (the undelayed), and of the orders that do
 *                                                  not / do touch MARKED_PRODUCT
 *   vxbench streams URL N SECS                     holds N Server-Sent Event streams open for SECS,
 *                                                  reading them; prints how many were answered 200
 *                                                  and the events they received
 *
 * Invariant: every figure printed comes from messages seen on the broker; a run that does not see
 * every answer it waits for says so and exits 1, so bench.sh never reports a guess. Output of count
 * and paced is "name value" lines for the script to read. Kafka settings come from KAFKA_* (vx_kafka). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <json-c/json.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "vx_kafka.h"
#include "vx_log.h"
#include "vx_metrics.h"
#include "vx_msg.h"
#include "vx_pg.h"
#include "vt_http.h"
#include "vt_kafka.h"
#include "vt_util.h"

#define LINE_CAP 2048   /* one generated command; 3 lines of short ids never come near it */
#define LABEL_MAX 32    /* distinct outcome labels tallied by count */
#define RELEASE_RING 4096
#define RELEASE_AGE 256 /* reserved orders held before the oldest is released */
#define META_MS 10000   /* to find a topic's partitions and their ends */

/* ---- small helpers ------------------------------------------------------------------------------ */

/* Times a client lost the broker (all brokers down, a connection dropped): a figure measured
 * across such a gap says more about the outage than about Valerix, so it is reported with it. */
static long broker_errors;

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    (void)reason;
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || err == RD_KAFKA_RESP_ERR__TRANSPORT)
        __atomic_add_fetch(&broker_errors, 1, __ATOMIC_RELAXED);
}

static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    long v;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "vxbench: \"%s\" is not an integer from %ld to %ld\n", s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- generators: one command as Kafka key and JSON value ----------------------------------------- */

typedef struct {
    const char *prefix;
    long products;
    uint64_t rng;
    long ring[RELEASE_RING]; /* reserved orders not yet released, oldest first */
    int ring_head, ring_len;
} gen_t;

static void gen_init(gen_t *g, const char *prefix, long products, uint64_t seed) {
    memset(g, 0, sizeof(*g));
    g->prefix = prefix;
    g->products = products;
    g->rng = seed ? seed : 0x9E3779B97F4A7C15ULL; /* a fixed seed makes every run send the same mix */
}

/* Appends 1 to 3 lines of 1 to 3 units over the products; returns the new length. */
static size_t gen_items(gen_t *g, char *buf, size_t len, size_t size) {
    int n = 1 + (int)(vt_rand64(&g->rng) % 3);
    len += (size_t)snprintf(buf + len, size - len, "\"items\":[");
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s{\"product_id\":\"SKU-BENCH-%03ld\",\"quantity\":%d}",
                                i ? "," : "", 1 + (long)(vt_rand64(&g->rng) % (uint64_t)g->products),
                                1 + (int)(vt_rand64(&g->rng) % 3));
    return len + (size_t)snprintf(buf + len, size - len, "]");
}

/* The inventory mix, command i (idempotency key PREFIX-i): 80% ReserveStock of 1-3 lines, 15%
 * ReleaseStock of the oldest order still held (once RELEASE_AGE are held, so it was reserved hundreds
 * to thousands of commands earlier), 5% Restock of 1000 units. Reserve and release are keyed by
 * order id, as order-svc sends them, so a release never overtakes its reservation; a Restock is
 * keyed by its idempotency key. */
static void gen_inventory(gen_t *g, long i, char *key, size_t key_size, char *val, size_t val_size) {
    unsigned r = (unsigned)(vt_rand64(&g->rng) % 100);
    size_t len;

    if (r < 5) {
        snprintf(key, key_size, "%s%ld", g->prefix, i);
        snprintf(val, val_size,
                 "{\"type\":\"Restock\",\"idempotency_key\":\"%s%ld\",\"product_id\":\"SKU-BENCH-%03ld\",\"quantity\":1000}",
                 g->prefix, i, 1 + (long)(vt_rand64(&g->rng) % (uint64_t)g->products));
    } else if (r < 20 && g->ring_len >= RELEASE_AGE) {
        long o = g->ring[g->ring_head];
        g->ring_head = (g->ring_head + 1) % RELEASE_RING;
        g->ring_len--;
        snprintf(key, key_size, "%so%ld", g->prefix, o);
        snprintf(val, val_size, "{\"type\":\"ReleaseStock\",\"idempotency_key\":\"%s%ld\",\"order_id\":\"%so%ld\"}",
                 g->prefix, i, g->prefix, o);
    } else {
        if (g->ring_len == RELEASE_RING) { /* full: the oldest is never released */
            g->ring_head = (g->ring_head + 1) % RELEASE_RING;
            g->ring_len--;
        }
        g->ring[(g->ring_head + g->ring_len++) % RELEASE_RING] = i;
        snprintf(key, key_size, "%so%ld", g->prefix, i);
        len = (size_t)snprintf(val, val_size,
                               "{\"type\":\"ReserveStock\",\"idempotency_key\":\"%s%ld\",\"order_id\":\"%so%ld\",",
                               g->prefix, i, g->prefix, i);
        len = gen_items(g, val, len, val_size);
        snprintf(val + len, val_size - len, "}");
    }
}

static void gen_order(gen_t *g, long i, char *key, size_t key_size, char *val, size_t val_size) {
    size_t len;
    snprintf(key, key_size, "%s%ld", g->prefix, i);
    len = (size_t)snprintf(val, val_size, "{\"type\":\"PlaceOrder\",\"idempotency_key\":\"%s%ld\",\"customer_id\":\"cust-%03d\",",
                           g->prefix, i, (int)(vt_rand64(&g->rng) % 1000));
    len = gen_items(g, val, len, val_size);
    snprintf(val + len, val_size - len, "}");
}

static int cmd_generate(const char *what, const char *prefix, const char *n_arg, const char *products_arg) {
    char key[256], val[LINE_CAP];
    long n, products;
    gen_t g;

    if (parse_long(n_arg, 1, 100000000, &n) || parse_long(products_arg, 1, 999, &products)) return 2;
    gen_init(&g, prefix, products, strcmp(what, "orders") == 0 ? 7 : 3);
    for (long i = 0; i < n; i++) {
        if (strcmp(what, "orders") == 0)
            gen_order(&g, i, key, sizeof(key), val, sizeof(val));
        else
            gen_inventory(&g, i, key, sizeof(key), val, sizeof(val));
        printf("%s|%s\n", key, val);
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_seed(const char *prefix, const char *products_arg, const char *qty_arg) {
    long products, qty;
    if (parse_long(products_arg, 1, 999, &products) || parse_long(qty_arg, 1, VX_MSG_MAX_QTY, &qty)) return 2;
    for (long p = 1; p <= products; p++)
        printf("%s%ld|{\"type\":\"Restock\",\"idempotency_key\":\"%s%ld\",\"product_id\":\"SKU-BENCH-%03ld\","
               "\"quantity\":%ld,\"name\":\"Bench product %ld\"}\n",
               prefix, p, prefix, p, p, qty, p);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- reading answers ---------------------------------------------------------------------------- */

/* The idempotency key and an outcome label ("type[:status][:reason]") of one answer, parsed with a
 * reused tokener. Returns 0, or -1 when the value is not a JSON object with a string key. */
static int answer_fields(json_tokener *tok, const rd_kafka_message_t *m, char *key, size_t key_size, char *label,
                         size_t label_size) {
    json_object *o, *v;
    const char *parts[3] = {"type", "status", "reason"};
    size_t len = 0;
    int rc = -1;

    if (!m->payload || m->len > VX_MSG_MAX_BYTES) return -1;
    json_tokener_reset(tok);
    o = json_tokener_parse_ex(tok, m->payload, (int)m->len);
    if (!o || !json_object_is_type(o, json_type_object)) goto out;
    if (!json_object_object_get_ex(o, "idempotency_key", &v) || !json_object_is_type(v, json_type_string)) goto out;
    snprintf(key, key_size, "%s", json_object_get_string(v));
    label[0] = '\0';
    for (int i = 0; i < 3; i++)
        if (json_object_object_get_ex(o, parts[i], &v) && json_object_is_type(v, json_type_string) && len < label_size)
            len += (size_t)snprintf(label + len, label_size - len, "%s%s", len ? ":" : "", json_object_get_string(v));
    rc = 0;
out:
    json_object_put(o);
    return rc;
}

/* A consumer configuration (KAFKA_* from the environment) in `group` (NULL: a private name; nothing
 * is ever committed automatically) that counts lost brokers. NULL with errstr on a bad setting. */
static rd_kafka_conf_t *bench_conf(const char *group, char *errstr, size_t errstr_size) {
    const char *defaults[] = {"group.id", group ? group : "vxbench", "enable.auto.commit", "false", NULL};
    rd_kafka_conf_t *conf = vx_kafka_conf_new(VX_KAFKA_CONSUMER, defaults, errstr, errstr_size);
    if (conf) rd_kafka_conf_set_error_cb(conf, on_error);
    return conf;
}

typedef struct {
    char name[96];
    long count;
} label_t;

/* Counts one answer under name; once LABEL_MAX names are taken, the last one counts the rest too. */
static void tally(label_t *labels, int *n, const char *name) {
    int i;
    for (i = 0; i < *n && strcmp(labels[i].name, name) != 0; i++) {}
    if (i == LABEL_MAX) {
        i = LABEL_MAX - 1;
        snprintf(labels[i].name, sizeof(labels[i].name), "(other)");
    } else if (i == *n) {
        snprintf(labels[i].name, sizeof(labels[i].name), "%s", name);
        labels[i].count = 0;
        (*n)++;
    }
    labels[i].count++;
}

static int cmd_count(const char *topic, const char *prefix, const char *expect_arg, const char *timeout_arg,
                     const char *ready_file) {
    char err[512], key[VX_MSG_MAX_KEY * 4 + 1], label[96];
    label_t labels[LABEL_MAX];
    int nlabels = 0, rc = 1;
    long expect, timeout_s, dupes = 0, other = 0, bad = 0;
    size_t plen = strlen(prefix);
    double first_ms = 0, last_ms = 0;
    int64_t deadline;
    vt_map_t seen = {0};
    json_tokener *tok = json_tokener_new();
    rd_kafka_t *rk = NULL;

    if (parse_long(expect_arg, 1, 100000000, &expect) || parse_long(timeout_arg, 1, 86400, &timeout_s)) {
        rc = 2;
        goto out;
    }
    if (!tok || vt_kafka_reader_new(&rk, bench_conf(NULL, err, sizeof(err)), topic, VT_FROM_BEGINNING, META_MS,
                                    NULL, err, sizeof(err))) {
        fprintf(stderr, "vxbench count: %s\n", tok ? err : "out of memory");
        goto out;
    }
    if (ready_file) {
        FILE *f = fopen(ready_file, "w");
        if (!f || fclose(f)) {
            fprintf(stderr, "vxbench count: cannot write %s\n", ready_file);
            goto out;
        }
    }
    deadline = vt_mono_ns() + (int64_t)timeout_s * 1000000000;
    while ((long)seen.n < expect && vt_mono_ns() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        int added;
        if (!m) continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                fprintf(stderr, "vxbench count: %s\n", rd_kafka_message_errstr(m));
        } else if (answer_fields(tok, m, key, sizeof(key), label, sizeof(label))) {
            bad++;
        } else if (strncmp(key, prefix, plen) != 0) {
            other++;
        } else if (!vt_map_put(&seen, key, 0, &added)) {
            fprintf(stderr, "vxbench count: out of memory\n");
            rd_kafka_message_destroy(m);
            goto out;
        } else if (added == 0) {
            dupes++;
        } else {
            last_ms = ((double)vt_real_ns() / 1e6);
            if (seen.n == 1) first_ms = last_ms;
            tally(labels, &nlabels, label);
        }
        rd_kafka_message_destroy(m);
    }
    printf("expected %ld\nseen %zu\nfirst_ms %.3f\nlast_ms %.3f\nduplicates %ld\nother %ld\nunreadable %ld\n"
           "broker_errors %ld\n",
           expect, seen.n, first_ms, last_ms, dupes, other, bad, broker_errors);
    for (int i = 0; i < nlabels; i++) printf("outcome %s %ld\n", labels[i].name, labels[i].count);
    if ((long)seen.n < expect)
        fprintf(stderr, "vxbench count: only %zu of %ld answers on %s within %ld s\n", seen.n, expect, topic, timeout_s);
    else
        rc = 0;
out:
    if (rk) rd_kafka_destroy(rk);
    if (tok) json_tokener_free(tok);
    vt_map_free(&seen);
    return rc;
}

/* ---- paced latency ------------------------------------------------------------------------------ */

typedef struct {
    rd_kafka_t *reader;
    const char *prefix;
    long total;
    int64_t *sent_ns, *got_ns; /* per command; 0 until stamped (read and written with __atomic) */
    long received, dupes;
    int stop;
} paced_t;

static void *paced_reader(void *opaque) {
    paced_t *p = opaque;
    json_tokener *tok = json_tokener_new();
    char key[VX_MSG_MAX_KEY * 4 + 1], label[96];
    size_t plen = strlen(p->prefix);

    while (tok && !__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(p->reader, 100);
        int64_t now = vt_mono_ns();
        char *end;
        long seq;
        if (!m) continue;
        if (!m->err && answer_fields(tok, m, key, sizeof(key), label, sizeof(label)) == 0 &&
            strncmp(key, p->prefix, plen) == 0 && (seq = strtol(key + plen, &end, 10)) >= 0 && !*end &&
            seq < p->total && __atomic_load_n(&p->sent_ns[seq], __ATOMIC_ACQUIRE)) {
            if (p->got_ns[seq]) {
                p->dupes++;
            } else {
                p->got_ns[seq] = now;
                __atomic_add_fetch(&p->received, 1, __ATOMIC_RELEASE);
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (tok) json_tokener_free(tok);
    return NULL;
}

static void paced_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    long *failed = opaque;
    (void)rk;
    if (m->err) {
        (*failed)++;
        fprintf(stderr, "vxbench paced: delivery failed: %s\n", rd_kafka_err2str(m->err));
    }
}

static int cmd_paced(char **argv) {
    const char *commands = argv[0], *events = argv[1];
    char err[512], key[256], val[LINE_CAP];
    long rate, secs, products, drain_s, failed = 0, n = 0;
    paced_t p = {0};
    pthread_t th;
    int started = 0, rc = 1;
    rd_kafka_t *producer = NULL;
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *parts;
    double *lat = NULL, sum = 0;
    const char *dump_path;
    FILE *dump = NULL;
    int64_t t0, last_sent = 0, deadline;
    gen_t g;
    const char *mix = getenv("VXBENCH_PACED_MIX");
    int orders_mix = mix && strcmp(mix, "orders") == 0;

    p.prefix = argv[2];
    if (parse_long(argv[3], 1, 1000000, &rate) || parse_long(argv[4], 1, 86400, &secs) ||
        parse_long(argv[5], 1, 999, &products) || parse_long(argv[6], 1, 86400, &drain_s))
        return 2;
    p.total = rate * secs;
    p.sent_ns = calloc((size_t)p.total, sizeof(*p.sent_ns));
    p.got_ns = calloc((size_t)p.total, sizeof(*p.got_ns));
    lat = calloc((size_t)p.total, sizeof(*lat));
    if (!p.sent_ns || !p.got_ns || !lat) {
        fprintf(stderr, "vxbench paced: out of memory\n");
        goto out;
    }
    if (vt_kafka_reader_new(&p.reader, bench_conf(NULL, err, sizeof(err)), events, VT_FROM_END, META_MS, NULL, err,
                            sizeof(err)) ||
        !(conf = vx_kafka_conf_new(VX_KAFKA_PRODUCER, NULL, err, sizeof(err)))) {
        fprintf(stderr, "vxbench paced: %s\n", err);
        goto out;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, paced_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, &failed);
    if (!(producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) {
        fprintf(stderr, "vxbench paced: %s\n", err);
        goto out;
    }
    conf = NULL; /* the producer has it */
    if (pthread_create(&th, NULL, paced_reader, &p)) {
        fprintf(stderr, "vxbench paced: cannot start the reader thread\n");
        goto out;
    }
    started = 1;
    /* Connect the producer and learn the topic before the clock starts: the first command must not pay. */
    if (vt_kafka_partitions(producer, commands, VT_FROM_BEGINNING, META_MS, &parts, err, sizeof(err))) {
        fprintf(stderr, "vxbench paced: %s\n", err);
        goto out;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    gen_init(&g, p.prefix, products, 11);
    t0 = vt_mono_ns() + 100000000;
    for (long i = 0; i < p.total; i++) {
        int64_t at = t0 + (int64_t)((double)i * 1e9 / (double)rate);
        struct timespec ts = {.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000};
        rd_kafka_resp_err_t e;

        if (orders_mix)
            gen_order(&g, i, key, sizeof(key), val, sizeof(val));
        else
            gen_inventory(&g, i, key, sizeof(key), val, sizeof(val));
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
        last_sent = vt_mono_ns();
        __atomic_store_n(&p.sent_ns[i], last_sent, __ATOMIC_RELEASE);
        e = vx_kafka_produce(producer, commands, key, strlen(key), val, strlen(val), NULL, NULL);
        if (e) {
            fprintf(stderr, "vxbench paced: produce: %s\n", rd_kafka_err2str(e));
            goto out;
        }
        rd_kafka_poll(producer, 0);
    }
    rd_kafka_flush(producer, 30000);
    deadline = last_sent + (int64_t)drain_s * 1000000000;
    while (__atomic_load_n(&p.received, __ATOMIC_ACQUIRE) < p.total && vt_mono_ns() < deadline) usleep(10000);
    __atomic_store_n(&p.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    started = 0;

    if ((dump_path = getenv("VXBENCH_LATENCIES")) && !(dump = fopen(dump_path, "w")))
        fprintf(stderr, "vxbench paced: cannot write %s\n", dump_path);
    for (long i = 0; i < p.total; i++)
        if (p.got_ns[i]) {
            lat[n] = (double)(p.got_ns[i] - p.sent_ns[i]) / 1e6;
            if (dump) fprintf(dump, "%ld %.3f %.3f\n", i, (double)(p.sent_ns[i] - p.sent_ns[0]) / 1e6, lat[n]);
            sum += lat[n++];
        }
    if (dump && fclose(dump)) fprintf(stderr, "vxbench paced: cannot write %s\n", dump_path);
    printf("sent %ld\nreceived %ld\nduplicates %ld\ndelivery_failed %ld\nsend_secs %.3f\nbroker_errors %ld\n", p.total,
           n, p.dupes, failed, (double)(last_sent - p.sent_ns[0]) / 1e9, broker_errors);
    if (n) {
        qsort(lat, (size_t)n, sizeof(*lat), vt_cmp_double);
        printf("p50_ms %.3f\np90_ms %.3f\np99_ms %.3f\np99.9_ms %.3f\nmax_ms %.3f\nmean_ms %.3f\n",
               vt_percentile(lat, n, 50), vt_percentile(lat, n, 90), vt_percentile(lat, n, 99), vt_percentile(lat, n, 99.9),
               lat[n - 1], sum / (double)n);
    }
    if (n < p.total || failed)
        fprintf(stderr, "vxbench paced: %ld of %ld answers arrived within %ld s after the last command\n", n, p.total,
                drain_s);
    else
        rc = 0;
out:
    if (started) {
        __atomic_store_n(&p.stop, 1, __ATOMIC_RELEASE);
        pthread_join(th, NULL);
    }
    if (conf) rd_kafka_conf_destroy(conf);
    if (producer) rd_kafka_destroy(producer);
    if (p.reader) rd_kafka_destroy(p.reader);
    free(p.sent_ns);
    free(p.got_ns);
    free(lat);
    return rc;
}

/* ---- topic and group chores --------------------------------------------------------------------- */

/* Commits every partition's current end for group: a consumer that starts in it later skips what
 * the topic holds now (order-svc must not chew through the inventory stage's events first). */
static int cmd_group_to_end(const char *group, const char *topic) {
    char err[512];
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_resp_err_t e;
    int rc = 1;

    if (vt_kafka_new(&rk, RD_KAFKA_CONSUMER, bench_conf(group, err, sizeof(err)), err, sizeof(err)) ||
        vt_kafka_partitions(rk, topic, VT_FROM_END, META_MS, &l, err, sizeof(err)))
        goto out;
    if ((e = rd_kafka_commit(rk, l, 0))) {
        snprintf(err, sizeof(err), "commit: %s", rd_kafka_err2str(e));
        goto out;
    }
    printf("group %s starts at the end of %s (%d partitions)\n", group, topic, l->cnt);
    rc = 0;
out:
    if (rc) fprintf(stderr, "vxbench group-to-end: %s\n", err);
    if (l) rd_kafka_topic_partition_list_destroy(l);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}

/* Waits until every partition of every topic answers a watermark query: a topic created a moment
 * ago may have no leader yet, and a client starting then fails ("Not leader for partition"). */
static int cmd_wait_topics(const char *timeout_arg, char **names, int n) {
    char err[512] = "";
    long timeout_s;
    int64_t deadline;
    rd_kafka_t *rk = NULL;
    int i = 0;

    if (parse_long(timeout_arg, 1, 3600, &timeout_s)) return 2;
    if (vt_kafka_new(&rk, RD_KAFKA_CONSUMER, bench_conf(NULL, err, sizeof(err)), err, sizeof(err))) {
        fprintf(stderr, "vxbench wait-topics: %s\n", err);
        return 1;
    }
    deadline = vt_mono_ns() + (int64_t)timeout_s * 1000000000;
    while (i < n && vt_mono_ns() < deadline) {
        int64_t left_ms = (deadline - vt_mono_ns()) / 1000000;
        rd_kafka_topic_partition_list_t *l = NULL;
        if (vt_kafka_partitions(rk, names[i], VT_FROM_END, left_ms < META_MS ? (int)left_ms + 1 : META_MS, &l, err,
                                sizeof(err)) == 0) {
            rd_kafka_topic_partition_list_destroy(l);
            i++;
        } else {
            usleep(100000);
        }
    }
    rd_kafka_destroy(rk);
    if (i < n) fprintf(stderr, "vxbench wait-topics: %s not ready within %ld s: %s\n", names[i], timeout_s, err);
    return i < n;
}

static int cmd_drop_topics(char **names, int n) {
    char err[512];
    rd_kafka_conf_t *conf = vx_kafka_conf_new(VX_KAFKA_ADMIN, NULL, err, sizeof(err));
    rd_kafka_DeleteTopic_t *del[16];
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    rd_kafka_t *rk = NULL;
    int rc = 1, made = 0;

    if (n > 16) {
        snprintf(err, sizeof(err), "at most 16 topics at once");
        goto out;
    }
    if (!conf || !(rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)))) goto out;
    conf = NULL;
    q = rd_kafka_queue_new(rk);
    for (; made < n; made++) del[made] = rd_kafka_DeleteTopic_new(names[made]);
    rd_kafka_DeleteTopics(rk, del, (size_t)n, NULL, q);
    if (!(ev = rd_kafka_queue_poll(q, 30000))) {
        snprintf(err, sizeof(err), "no answer to DeleteTopics within 30 s");
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        snprintf(err, sizeof(err), "%s", rd_kafka_event_error_string(ev));
        goto out;
    }
    {
        size_t cnt;
        const rd_kafka_topic_result_t **res = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &cnt);
        rc = 0;
        for (size_t i = 0; i < cnt; i++) /* a topic never created is as good as deleted */
            if (rd_kafka_topic_result_error(res[i]) &&
                rd_kafka_topic_result_error(res[i]) != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
                fprintf(stderr, "vxbench drop-topics: %s: %s\n", rd_kafka_topic_result_name(res[i]),
                        rd_kafka_topic_result_error_string(res[i]));
                rc = 1;
            }
        err[0] = '\0';
    }
out:
    if (rc && err[0]) fprintf(stderr, "vxbench drop-topics: %s\n", err);
    if (ev) rd_kafka_event_destroy(ev);
    for (int i = 0; i < made; i++) rd_kafka_DeleteTopic_destroy(del[i]);
    if (q) rd_kafka_queue_destroy(q);
    if (conf) rd_kafka_conf_destroy(conf);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}

/* migrate: the services' own migration code, so stage D measures the functions they run. */
static int cmd_migrate(const char *conninfo, const char *dirs) {
    char err[512];
    PGconn *c = vx_pg_connect(conninfo, NULL, 10000, err, sizeof(err));
    int rc = c && vx_pg_migrate(c, dirs, err, sizeof(err)) >= 0 ? 0 : 1;

    if (rc) fprintf(stderr, "vxbench migrate: %s\n", err);
    PQfinish(c);
    return rc;
}

/* ---- http-load: closed-loop clients over HTTP --------------------------------------------------- */

typedef struct {
    const char *addr, *path, *prefix, *marked;
    long products, id;
    int64_t until_ns;
    double *lat;    /* ms, one per answer */
    char *marks;    /* 1: the order touched the marked product */
    int *status;    /* the HTTP status, 0 when the request failed */
    size_t n, cap;
} load_client_t;

/* One client: one connection (kept alive), one order at a time. */
static void *load_run(void *arg) {
    load_client_t *c = arg;
    vt_http_conn_t *conn = NULL;
    char key[160], keyhdr[200], body[LINE_CAP], err[512];
    const char *const hdrs[] = {"Content-Type: application/json", keyhdr, NULL};
    uint64_t rng = 0x9E3779B97F4A7C15ULL ^ (uint64_t)(c->id + 1) * 0x100000001b3ULL;
    gen_t g;

    if (vt_http_conn_new(&conn, c->addr, err, sizeof(err))) {
        fprintf(stderr, "vxbench http-load: %s\n", err);
        return NULL;
    }
    gen_init(&g, c->prefix, c->products, rng);
    for (long i = 0; vt_mono_ns() < c->until_ns; i++) {
        size_t len = (size_t)snprintf(body, sizeof(body), "{\"customer_id\":\"cust-%03ld\",", (long)(i % 1000));
        vt_http_req req = {.method = "POST", .path = c->path, .headers = hdrs, .body = body, .timeout_ms = 60000};
        vt_http_resp r;
        int64_t t0;
        int status = 0;

        len = gen_items(&g, body, len, sizeof(body));
        snprintf(body + len, sizeof(body) - len, "}");
        req.body_len = strlen(body);
        snprintf(key, sizeof(key), "%s-c%ld-%ld", c->prefix, c->id, i);
        snprintf(keyhdr, sizeof(keyhdr), "Idempotency-Key: %s", key);
        t0 = vt_mono_ns();
        if (vt_http_conn_request(conn, &req, &r, err, sizeof(err)) == 0) {
            status = r.status;
            vt_http_resp_clear(&r);
        }
        if (c->n == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 4096;
            double *lat = realloc(c->lat, cap * sizeof(*lat));
            char *marks = lat ? realloc(c->marks, cap) : NULL;
            int *st = marks ? realloc(c->status, cap * sizeof(*st)) : NULL;
            if (lat) c->lat = lat;
            if (marks) c->marks = marks;
            if (!st) break;
            c->status = st;
            c->cap = cap;
        }
        c->lat[c->n] = (double)(vt_mono_ns() - t0) / 1e6;
        c->marks[c->n] = c->marked && strstr(body, c->marked) != NULL;
        c->status[c->n++] = status;
        if (!status) usleep(100 * 1000); /* a refused connection: do not spin */
    }
    vt_http_conn_free(conn);
    return NULL;
}

/* Percentile pct of the latencies of answers that pass keep (sorted copy); -1 when there are none. */
static double load_pct(const load_client_t *cl, long conns, double pct, int (*keep)(const load_client_t *, size_t, double),
                       double arg, long *count) {
    size_t total = 0, k = 0;
    double *v, r;
    for (long i = 0; i < conns; i++) total += cl[i].n;
    if (!(v = malloc((total ? total : 1) * sizeof(*v)))) return -1;
    for (long i = 0; i < conns; i++)
        for (size_t j = 0; j < cl[i].n; j++)
            if (keep(&cl[i], j, arg)) v[k++] = cl[i].lat[j];
    if (count) *count = (long)k;
    qsort(v, k, sizeof(*v), vt_cmp_double);
    r = k ? vt_percentile(v, (long)k, pct) : -1;
    free(v);
    return r;
}
static int keep_answered(const load_client_t *c, size_t j, double arg) { (void)arg; return c->status[j] != 0; }
static int keep_fast(const load_client_t *c, size_t j, double slow) { return c->status[j] == 201 && c->lat[j] < slow; }
static int keep_slow(const load_client_t *c, size_t j, double slow) { return c->status[j] && c->lat[j] >= slow; }
static int keep_marked(const load_client_t *c, size_t j, double want) { return c->status[j] == 201 && c->marks[j] == (char)want; }

static int cmd_http_load(char **argv, const char *marked) {
    long conns, secs, products, slow;
    load_client_t *cl;
    pthread_t *th;
    int64_t t0;
    double dur;
    long by[6] = {0}; /* 201, 202, 409, 429, 503, other */
    long failed = 0, total = 0, n;
    char addr[256], err[512];
    const char *path;

    if (parse_long(argv[1], 1, 4096, &conns) || parse_long(argv[2], 1, 86400, &secs) ||
        parse_long(argv[4], 1, 999, &products) || parse_long(argv[5], 1, 3600000, &slow))
        return 2;
    if (vt_http_split_url(argv[0], addr, sizeof(addr), &path, err, sizeof(err))) {
        fprintf(stderr, "vxbench http-load: %s\n", err);
        return 2;
    }
    cl = calloc((size_t)conns, sizeof(*cl));
    th = calloc((size_t)conns, sizeof(*th));
    if (!cl || !th) return 1;
    t0 = vt_mono_ns();
    for (long i = 0; i < conns; i++) {
        cl[i] = (load_client_t){.addr = addr, .path = path, .prefix = argv[3], .marked = marked, .products = products, .id = i,
                                .until_ns = t0 + (int64_t)secs * 1000000000};
        if (pthread_create(&th[i], NULL, load_run, &cl[i])) return 1;
    }
    for (long i = 0; i < conns; i++) pthread_join(th[i], NULL);
    dur = (double)(vt_mono_ns() - t0) / 1e9;
    for (long i = 0; i < conns; i++)
        for (size_t j = 0; j < cl[i].n; j++) {
            int st = cl[i].status[j];
            total++;
            if (!st) failed++;
            else by[st == 201 ? 0 : st == 202 ? 1 : st == 409 ? 2 : st == 429 ? 3 : st == 503 ? 4 : 5]++;
        }
    printf("requests %ld\nfailed %ld\ns201 %ld\ns202 %ld\ns409 %ld\ns429 %ld\ns503 %ld\nsother %ld\n", total, failed,
           by[0], by[1], by[2], by[3], by[4], by[5]);
    printf("duration_s %.2f\naccepted_per_s %.1f\n", dur, (double)by[0] / dur);
    printf("p50_ms %.2f\np99_ms %.2f\n", load_pct(cl, conns, 50, keep_answered, 0, NULL),
           load_pct(cl, conns, 99, keep_answered, 0, NULL));
    printf("fast_p50_ms %.2f\n", load_pct(cl, conns, 50, keep_fast, (double)slow, &n));
    printf("fast %ld\n", n);
    load_pct(cl, conns, 50, keep_slow, (double)slow, &n);
    printf("slow %ld\n", n);
    if (marked) {
        printf("other_p50_ms %.2f\n", load_pct(cl, conns, 50, keep_marked, 0, &n));
        printf("other %ld\n", n);
        printf("marked_p50_ms %.2f\n", load_pct(cl, conns, 50, keep_marked, 1, &n));
        printf("marked %ld\n", n);
    }
    for (long i = 0; i < conns; i++) {
        free(cl[i].lat);
        free(cl[i].marks);
        free(cl[i].status);
    }
    free(cl);
    free(th);
    return failed == total ? 1 : 0;
}

/* ---- streams: open Server-Sent Event streams, read and counted ---------------------------------- */

/* Opens n streams of GET path at addr, reads them for secs and prints how many were answered 200
 * and the "data:" lines each received, so that a measurement made meanwhile is known to have had
 * n live streams open, not n refused ones. */
static int cmd_streams(char **argv) {
    long n, secs, ok = 0, min_events = -1, total = 0;
    char addr[256], host[256], err[512], req[512];
    const char *path, *colon;
    struct pollfd *pf;
    long *events;
    char (*tail)[8];
    int64_t until;

    if (parse_long(argv[1], 1, 4096, &n) || parse_long(argv[2], 1, 86400, &secs)) return 2;
    if (vt_http_split_url(argv[0], addr, sizeof(addr), &path, err, sizeof(err))) {
        fprintf(stderr, "vxbench streams: %s\n", err);
        return 2;
    }
    colon = strrchr(addr, ':');
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr);
    pf = calloc((size_t)n, sizeof(*pf));
    events = calloc((size_t)n, sizeof(*events));
    tail = calloc((size_t)n, sizeof(*tail));
    if (!pf || !events || !tail) return 1;
    for (long i = 0; i < n; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pf[i] = (struct pollfd){.fd = -1, .events = POLLIN};
        memset(tail[i], ' ', sizeof(tail[i]));
        if (fd < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) ||
            write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
            fprintf(stderr, "vxbench streams: stream %ld: %s\n", i, strerror(errno));
            if (fd >= 0) close(fd);
            continue;
        }
        pf[i].fd = fd;
        events[i] = -1; /* no head yet */
    }
    until = vt_mono_ns() + (int64_t)secs * 1000000000;
    while (vt_mono_ns() < until) {
        if (poll(pf, (nfds_t)n, 200) <= 0) continue;
        for (long i = 0; i < n; i++) {
            char buf[16384 + 8];
            ssize_t got;
            if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            memcpy(buf, tail[i], 7);
            if ((got = read(pf[i].fd, buf + 7, sizeof(buf) - 8)) <= 0) {
                close(pf[i].fd); /* closed by the gateway: counted as it stands */
                pf[i].fd = -1;
                continue;
            }
            buf[7 + got] = '\0';
            if (events[i] < 0) {
                if (strncmp(buf + 7, "HTTP/1.1 200", 12) != 0) {
                    close(pf[i].fd);
                    pf[i].fd = -1;
                    continue;
                }
                events[i] = 0;
                ok++;
            }
            for (const char *p = buf; (p = strstr(p, "\ndata:")) != NULL; p++)
                if (p >= buf + 2) events[i]++; /* one wholly in the carried tail was counted last time */
            memcpy(tail[i], buf + 7 + got - 7, 7);
        }
    }
    for (long i = 0; i < n; i++) {
        if (pf[i].fd >= 0) close(pf[i].fd);
        if (events[i] < 0) continue;
        total += events[i];
        if (min_events < 0 || events[i] < min_events) min_events = events[i];
    }
    printf("streams %ld\nanswered_200 %ld\nevents_total %ld\nevents_min %ld\n", n, ok, total, min_events);
    free(pf);
    free(events);
    free(tail);
    return ok == n ? 0 : 1;
}

static int usage(void);
/* ---- null pipeline: a forwarder standing in for a service ---------------------------------------- */

/* vxbench forward GROUP SECS IN=OUT:TYPE...: one consumer (vx_kafka_consumer_new, the services' group
 * settings, offsets stored by hand) and one producer (vx_kafka_producer_new, the services' ordered
 * producer) with no database between them: each message read on IN is parsed (json-c, as a service
 * parses it) and answered on OUT by a message of TYPE with the same key, the same idempotency_key
 * and the same size; its offset is stored only once it and every message before it on its partition
 * were delivered. Runs SECS seconds or until SIGTERM/SIGINT, then prints what it forwarded; on
 * SIGUSR1 it prints the requests its clients have sent so far (fwd_print_requests). */
#define FWD_ROUTES 4
#define FWD_PARTS 64
#define FWD_RING (1u << 18) /* messages in flight per input partition */

typedef struct {
    int64_t *off;
    unsigned char *done;
    size_t head, len;
    int64_t store; /* next offset to store; -1: nothing new */
} fwd_part_t;

typedef struct {
    const char *in, *out, *type;
    fwd_part_t *parts[FWD_PARTS];
} fwd_route_t;

typedef struct {
    fwd_route_t routes[FWD_ROUTES];
    int nroutes;
    long delivered, failed;
} fwd_t;

static volatile sig_atomic_t fwd_stop, fwd_report;
static void fwd_on_signal(int sig) { (void)sig; fwd_stop = 1; }
static void fwd_on_usr1(int sig) { (void)sig; fwd_report = 1; }

/* On SIGUSR1: "kafka_requests PRODUCE FETCH", the requests the forwarder's clients have sent so far
   (valerix_kafka_requests_total, as the services count theirs: librdkafka's statistics, a report a
   second), a line on standard output for make bench's requests per order. */
static void fwd_print_requests(void) {
    printf("kafka_requests %.0f %.0f\n",
           vx_metrics_value("valerix_kafka_requests_total{client=\"producer\",request=\"Produce\"}", 0),
           vx_metrics_value("valerix_kafka_requests_total{client=\"consumer\",request=\"Fetch\"}", 0));
    fflush(stdout);
}

static void fwd_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    fwd_t *f = opaque;
    uintptr_t tag = (uintptr_t)m->_private;
    fwd_part_t *p = f->routes[tag >> 40].parts[(tag >> 32) & 0xff];
    (void)rk;
    if (m->err) { /* the producer retries until delivered: an error here is final */
        f->failed++;
        fprintf(stderr, "vxbench forward: delivery failed: %s\n", rd_kafka_err2str(m->err));
        return;
    }
    f->delivered++;
    p->done[tag & 0xffffffffu] = 1;
    while (p->len && p->done[p->head]) {
        p->store = p->off[p->head] + 1;
        p->done[p->head] = 0;
        p->head = (p->head + 1) % FWD_RING;
        p->len--;
    }
}

/* Stores every partition's delivered prefix in one call, as a service stores a batch's offsets. */
static void fwd_store(rd_kafka_t *consumer, fwd_t *f) {
    rd_kafka_topic_partition_list_t *l = NULL;
    for (int r = 0; r < f->nroutes; r++)
        for (int i = 0; i < FWD_PARTS; i++) {
            fwd_part_t *p = f->routes[r].parts[i];
            if (!p || p->store < 0) continue;
            if (!l) l = rd_kafka_topic_partition_list_new(8);
            rd_kafka_topic_partition_list_add(l, f->routes[r].in, i)->offset = p->store;
            p->store = -1;
        }
    if (!l) return;
    rd_kafka_resp_err_t e = rd_kafka_offsets_store(consumer, l);
    if (e && e != RD_KAFKA_RESP_ERR__STATE) fprintf(stderr, "vxbench forward: offsets_store: %s\n", rd_kafka_err2str(e));
    rd_kafka_topic_partition_list_destroy(l);
}

static int cmd_forward(const char *group, const char *secs_arg, char **specs, int n) {
    char err[512], key[VX_MSG_MAX_KEY * 4 + 1], label[96], out[VX_MSG_MAX_BYTES + 1];
    const char *topics[FWD_ROUTES];
    fwd_t f = {0};
    long secs, forwarded = 0, unreadable = 0;
    int rc = 1;
    int64_t deadline;
    rd_kafka_t *producer = NULL, *consumer = NULL;
    json_tokener *tok = json_tokener_new();

    if (parse_long(secs_arg, 1, 86400, &secs) || n > FWD_ROUTES || !tok) return 2;
    for (int i = 0; i < n; i++) {
        char *eq = strchr(specs[i], '='), *colon = eq ? strchr(eq, ':') : NULL;
        if (!eq || !colon) return usage();
        *eq = *colon = '\0';
        f.routes[i] = (fwd_route_t){.in = specs[i], .out = eq + 1, .type = colon + 1};
        topics[i] = specs[i];
    }
    f.nroutes = n;
    signal(SIGTERM, fwd_on_signal);
    signal(SIGINT, fwd_on_signal);
    signal(SIGUSR1, fwd_on_usr1);
    if (!(producer = vx_kafka_producer_new(fwd_delivery, &f, NULL, err, sizeof(err)))) {
        fprintf(stderr, "vxbench forward: %s\n", err);
        goto out;
    }
    /* The topics as the services create theirs: VX_TOPIC_PARTITIONS partitions, VX_TOPIC_RETENTION_MS. */
    const char *all[2 * FWD_ROUTES];
    for (int i = 0; i < n; i++) all[2 * i] = f.routes[i].in, all[2 * i + 1] = f.routes[i].out;
    const char *pv = getenv("VX_TOPIC_PARTITIONS"), *rv = getenv("VX_TOPIC_RETENTION_MS");
    if (vx_kafka_ensure_topics(producer, all, 2 * n, pv && *pv ? atoi(pv) : VX_TOPIC_PARTITIONS_DEFAULT,
                               VX_TOPIC_REPLICATION_DEFAULT, rv && *rv ? atoll(rv) : 21600000LL, 30000, err,
                               sizeof(err)) ||
        !(consumer = vx_kafka_consumer_new(group, NULL, topics, n, NULL, NULL, err, sizeof(err)))) {
        fprintf(stderr, "vxbench forward: %s\n", err);
        goto out;
    }
    deadline = vt_mono_ns() + (int64_t)secs * 1000000000;
    while (!fwd_stop && vt_mono_ns() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
        rd_kafka_poll(producer, 0);
        fwd_store(consumer, &f);
        if (fwd_report) {
            fwd_report = 0;
            fwd_print_requests();
        }
        if (!m) continue;
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) fprintf(stderr, "vxbench forward: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        int r;
        const char *tn = rd_kafka_topic_name(m->rkt);
        for (r = 0; r < n && strcmp(f.routes[r].in, tn) != 0; r++) {}
        fwd_part_t *p = NULL;
        if (r < n && m->partition >= 0 && m->partition < FWD_PARTS && !(p = f.routes[r].parts[m->partition])) {
            if ((p = calloc(1, sizeof(*p)))) {
                p->off = malloc(FWD_RING * sizeof(*p->off));
                p->done = calloc(FWD_RING, 1);
                p->store = -1;
                if (!p->off || !p->done) {
                    free(p->off);
                    free(p->done);
                    free(p);
                    p = NULL;
                }
            }
            if (!p) {
                fprintf(stderr, "vxbench forward: out of memory\n");
                rd_kafka_message_destroy(m);
                goto out;
            }
            f.routes[r].parts[m->partition] = p;
        }
        if (!p) {
            fprintf(stderr, "vxbench forward: message on %s [%d] has no route\n", tn, (int)m->partition);
            rd_kafka_message_destroy(m);
            continue;
        }
        while (p->len == FWD_RING && !fwd_stop) rd_kafka_poll(producer, 10);
        size_t slot = (p->head + p->len) % FWD_RING;
        p->off[slot] = m->offset;
        p->done[slot] = 0;
        p->len++;
        size_t len;
        if (answer_fields(tok, m, key, sizeof(key), label, sizeof(label))) {
            unreadable++;
            len = (size_t)snprintf(out, sizeof(out), "{\"type\":\"%s\",\"idempotency_key\":\"\"}", f.routes[r].type);
        } else {
            len = (size_t)snprintf(out, sizeof(out), "{\"type\":\"%s\",\"idempotency_key\":\"%s\",\"pad\":\"",
                                   f.routes[r].type, key);
        }
        while (len + 2 < m->len && len + 2 < sizeof(out)) out[len++] = 'x';
        len += (size_t)snprintf(out + len, sizeof(out) - len, "\"}");
        rd_kafka_resp_err_t e = rd_kafka_producev(
            producer, RD_KAFKA_V_TOPIC(f.routes[r].out), RD_KAFKA_V_KEY(m->key, m->key_len),
            RD_KAFKA_V_VALUE(out, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE((void *)(((uintptr_t)r << 40) | ((uintptr_t)m->partition << 32) | slot)), RD_KAFKA_V_END);
        while (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(producer, 10);
            e = rd_kafka_producev(
                producer, RD_KAFKA_V_TOPIC(f.routes[r].out), RD_KAFKA_V_KEY(m->key, m->key_len),
                RD_KAFKA_V_VALUE(out, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_OPAQUE((void *)(((uintptr_t)r << 40) | ((uintptr_t)m->partition << 32) | slot)), RD_KAFKA_V_END);
        }
        rd_kafka_message_destroy(m);
        if (e) {
            fprintf(stderr, "vxbench forward: produce: %s\n", rd_kafka_err2str(e));
            goto out;
        }
        forwarded++;
    }
    rd_kafka_flush(producer, 10000);
    fwd_store(consumer, &f);
    rc = f.failed ? 1 : 0;
out:
    printf("forwarded %ld\ndelivered %ld\ndelivery_failed %ld\nunreadable %ld\n", forwarded, f.delivered, f.failed,
           unreadable);
    if (consumer) vx_kafka_consumer_destroy(consumer, 10000);
    if (producer) vx_kafka_producer_destroy(producer, 10000);
    for (int r = 0; r < f.nroutes; r++)
        for (int i = 0; i < FWD_PARTS; i++)
            if (f.routes[r].parts[i]) {
                free(f.routes[r].parts[i]->off);
                free(f.routes[r].parts[i]->done);
                free(f.routes[r].parts[i]);
            }
    json_tokener_free(tok);
    return rc;
}

static int usage(void) {
    fprintf(stderr, "usage: vxbench seed PREFIX PRODUCTS QTY\n"
                    "       vxbench inventory|orders PREFIX N PRODUCTS\n"
                    "       vxbench count TOPIC PREFIX EXPECT TIMEOUT_S [READY_FILE]\n"
                    "       vxbench paced COMMANDS_TOPIC EVENTS_TOPIC PREFIX RATE SECS PRODUCTS DRAIN_S\n"
                    "       vxbench group-to-end GROUP TOPIC\n"
                    "       vxbench wait-topics TIMEOUT_S TOPIC...\n"
                    "       vxbench drop-topics TOPIC...\n"
                    "       vxbench migrate CONNINFO DIRS\n"
                    "       vxbench http-load URL CONNS SECS PREFIX PRODUCTS SLOW_MS [MARKED_PRODUCT]\n"
                    "       vxbench streams URL N SECS\n"
                    "       vxbench forward GROUP SECS IN_TOPIC=OUT_TOPIC:TYPE...\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "";

    vx_log_init("vxbench");
    if (strcmp(cmd, "seed") == 0 && argc == 5) return cmd_seed(argv[2], argv[3], argv[4]);
    if ((strcmp(cmd, "inventory") == 0 || strcmp(cmd, "orders") == 0) && argc == 5)
        return cmd_generate(cmd, argv[2], argv[3], argv[4]);
    if (strcmp(cmd, "count") == 0 && (argc == 6 || argc == 7))
        return cmd_count(argv[2], argv[3], argv[4], argv[5], argc == 7 ? argv[6] : NULL);
    if (strcmp(cmd, "paced") == 0 && argc == 9) return cmd_paced(argv + 2);
    if (strcmp(cmd, "group-to-end") == 0 && argc == 4) return cmd_group_to_end(argv[2], argv[3]);
    if (strcmp(cmd, "wait-topics") == 0 && argc >= 4) return cmd_wait_topics(argv[2], argv + 3, argc - 3);
    if (strcmp(cmd, "drop-topics") == 0 && argc >= 3) return cmd_drop_topics(argv + 2, argc - 2);
    if (strcmp(cmd, "migrate") == 0 && argc == 4) return cmd_migrate(argv[2], argv[3]);
    if (strcmp(cmd, "http-load") == 0 && (argc == 8 || argc == 9)) return cmd_http_load(argv + 2, argc == 9 ? argv[8] : NULL);
    if (strcmp(cmd, "streams") == 0 && argc == 5) return cmd_streams(argv + 2);
    if (strcmp(cmd, "forward") == 0 && argc >= 5 && argc <= 4 + FWD_ROUTES) return cmd_forward(argv[2], argv[3], argv + 4, argc - 4);
    return usage();
}
