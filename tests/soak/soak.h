/* soak.h: the kill-anything soak of issue 4 (tests/soak/README.md), in five files:
 *   vxsoak.c      settings, the phases of one run, the report
 *   soak_util.c   the ledger of everything sent and answered, randomness, output, the soak's Kafka, PostgreSQL
 *                 and HTTP settings over the shared test library (tests/lib: vt_http, vt_kafka, vt_util)
 *   soak_load.c   the load: HTTP clients, the Kafka producer, the live reader of orders.results
 *   soak_chaos.c  the chaos driver: kills, restarts, crash exits, crash points switched on and off
 *   soak_check.c  quiescence and the five invariant checks
 *
 * Invariant: the ledger holds only what the soak saw happen (an answer received, a delivery report
 * read); the checks compare it with what the databases and the topics hold, never with a guess. */
#ifndef VX_SOAK_H
#define VX_SOAK_H

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vt_http.h"
#include "vt_kafka.h"
#include "vt_util.h"

#define SOAK_ERR 512
#define SOAK_KEY_MAX 48
#define SOAK_MAX_LINES 3
#define SOAK_MAX_PRODUCTS 64

/* ---- settings (vxsoak.c reads them from the environment; see tests/soak/README.md) ------------- */

typedef struct {
    long duration_s, kill_every_s, min_kills, quiesce_s, down_max_ms;
    long http_threads, http_rate, kafka_rate, restock_rate, http_attempts, reask_max, bad_every_s, products;
    double cancel_pct, dup_pct, double_kill_pct;
    unsigned components; /* bit i: component i (soak_comp_names) may be killed */
    const char *crash_points, *gremlin_delay_ms, *gremlin_every, *gremlin_fraction, *chaos_token;
    const char *gateway, *orders_http, *inventory_http; /* host:port */
    const char *orders_db, *inventory_db;               /* libpq URLs */
    const char *repo, *data_dir, *run_id;
    unsigned seed;
} soak_opts_t;

/* ---- the ledger -------------------------------------------------------------------------------- */

typedef enum { SOAK_HTTP, SOAK_PLACE, SOAK_CANCEL, SOAK_RESTOCK, SOAK_BAD } soak_kind_t;

/* One HTTP answer: the code (0: transport error or timeout), the order status letter of the body
 * (C confirmed, R rejected, X cancelled, P pending, 0 none) and whether the order id it names is
 * the one derived from the key (1), another one (-1) or absent (0). */
typedef struct {
    short code;
    char status;
    signed char id;
} soak_answer_t;

typedef struct {
    char product[24];
    long qty;
} soak_line_t;

/* One command. Written by the thread that sends it until it is done, read by the checks after every
 * load thread has been joined. */
typedef struct {
    soak_kind_t kind;
    char key[SOAK_KEY_MAX];
    char order_id[40];   /* HTTP, PLACE: derived from the key; CANCEL: the order it cancels */
    int nlines;          /* HTTP, PLACE: the order's lines; RESTOCK: one line */
    soak_line_t lines[SOAK_MAX_LINES];
    int seed;            /* RESTOCK of the initial catalog */
    const char *topic;   /* BAD: where it went */
    const char *reason;  /* BAD: the dlq-reason it must get */
    char *body;          /* HTTP: the request body; PLACE, RESTOCK: the command (owned) */
    int sends, acked, failed; /* Kafka: produced (more than once: a deliberate duplicate), delivery reports */
    int final_code;      /* HTTP: 201, 202 or 409; 0 when the client gave up */
    int64_t t_first;     /* HTTP: wall clock (ms) of the first attempt */
    int64_t t_final;     /* HTTP: wall clock (ms) of the final answer; PLACE: of the first delivery report */
    int cancel_sent;     /* HTTP, PLACE: a CancelOrder for it was produced */
    int nanswers, answers_cap;
    soak_answer_t *answers; /* HTTP: every answer in order (owned) */
} soak_cmd_t;

/* A new zeroed record, kept until soak_ledger_free (the address never moves). Thread-safe. */
soak_cmd_t *soak_ledger_new(soak_kind_t kind);
size_t soak_ledger_count(void);
soak_cmd_t *soak_ledger_at(size_t i);
int soak_cmd_answer(soak_cmd_t *c, soak_answer_t a); /* appends; -1 out of memory */
void soak_ledger_free(void);

/* ---- small helpers (clocks, sleeping and the string map are vt_util's) ----------------------------- */

unsigned soak_rand(unsigned *state);        /* xorshift32 */
double soak_uniform(unsigned *state);       /* [0, 1) */
void soak_say(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* "soak: ...\n", flushed */

/* A Kafka client with the services' defaults (KAFKA_* from the environment, so the soak broker).
 * soak_producer: idempotent, acks=all, retries until delivered; dr_cb gets each delivery report. */
rd_kafka_t *soak_producer(void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *), char *err, size_t errsz);
/* A consumer outside any group (nothing committed) assigned every partition of topic from its start
 * (vt_kafka_reader_new). Caller owns it. */
rd_kafka_t *soak_reader(const char *topic, char *err, size_t errsz);
/* Calls fn for every message of topic from the beginning up to the end it has when called
 * (vt_kafka_read_to_end). */
int soak_read_topic(const char *topic, vt_kafka_msg_fn *fn, void *arg, char *err, size_t errsz);
/* Sum over the partitions of topic of end offset - committed offset of group (vt_kafka_group_lag). */
int soak_group_lag(const char *group, const char *topic, int64_t *lag, char *err, size_t errsz);

/* PostgreSQL: a connection, or NULL with err. soak_pg_long: row 0 column 0 of sql as an integer. */
PGconn *soak_pg(const char *url, char *err, size_t errsz);
int soak_pg_long(PGconn *db, const char *sql, long long *out, char *err, size_t errsz);

/* HTTP, with vt_http's client. An answer is capped at SOAK_HTTP_MAX_RESPONSE (the gateway's are a few
 * hundred bytes): a larger one counts as no answer. */
#define SOAK_HTTP_MAX_RESPONSE (1u << 20)

/* One POST /orders of c (its body and key) on conn, a client's connection to the gateway (opts->gateway),
 * kept between its orders. Fills *a and *r (the order the answer names, its status, Retry-After). */
typedef struct {
    char id[40];
    char status;
    long retry_after_s;
} soak_reply_t;
void soak_http_post(vt_http_conn_t *conn, const soak_cmd_t *c, soak_answer_t *a, soak_reply_t *r);
/* POST path at addr (host:port) with a JSON body and a bearer token; the answer's body goes into resp
 * (cut to respsz-1). Returns the HTTP status, 0 when none came. */
int soak_http_admin(const char *addr, const char *path, const char *token, const char *body, char *resp,
                    size_t respsz);
/* GET path at addr into resp (cut to respsz-1); returns the HTTP status, 0 when none came. */
int soak_http_get(const char *addr, const char *path, char *resp, size_t respsz);

/* ---- the load (soak_load.c) -------------------------------------------------------------------- */

/* The catalog: products SOAK-P01.. with scarce stock, restocked through inventory.commands; returns
 * once inventory-svc holds every product with its stock. */
int soak_load_seed(const soak_opts_t *o, char *err, size_t errsz);
int soak_load_start(const soak_opts_t *o, char *err, size_t errsz);
/* No new commands; waits for every client to finish its order and every delivery report. */
void soak_load_stop(void);
/* Stops the live reader of orders.results. */
void soak_load_reader_stop(void);
/* When the live reader first saw the decision of order_id (wall clock ms), 0 if never. Only after
 * soak_load_reader_stop. */
int64_t soak_load_decided_at(const char *order_id);
const char *soak_load_product(int i); /* the catalog's product i (0-based), static storage */

typedef struct {
    long http_requests, http_retried_clients, http_retries, http_gave_up, http_transport_errors;
    long http_429, http_5xx, http_4xx_unexpected;
    long kafka_places, kafka_cancels, kafka_restocks, kafka_bad, kafka_duplicates, delivery_failed;
    long results_live;
} soak_load_stats_t;
void soak_load_stats(soak_load_stats_t *s);

/* ---- the chaos driver (soak_chaos.c) ------------------------------------------------------------ */

enum { SOAK_POSTGRES, SOAK_KAFKA, SOAK_INVENTORY, SOAK_ORDERS, SOAK_GATEWAY, SOAK_NCOMP };
extern const char *const soak_comp_names[SOAK_NCOMP]; /* in start order */

/* Runs deploy/stack.sh action name (chaos_env 1: with the crash points and the gremlin in the
 * service's environment, 0: with them switched off). Its output goes to the soak's stack log. */
int soak_stack(const soak_opts_t *o, const char *action, const char *name, int chaos_env, char *err, size_t errsz);
/* Switches the crash points and the gremlin on (1) or off (0) in every running service, through
 * POST /admin/chaos; a service that does not take it is restarted with (or without) them. */
int soak_chaos_arm(const soak_opts_t *o, int on, char *err, size_t errsz);
int soak_chaos_start(const soak_opts_t *o, char *err, size_t errsz);
void soak_chaos_stop_kills(void); /* no new kills; crashed components are still restarted */
int soak_chaos_failed(void);      /* the driver gave up (a component that does not come back) */
int soak_chaos_stop(char *err, size_t errsz); /* joins; fails when the driver failed */
/* Starts whatever does not run, without chaos; counts what had exited. */
int soak_chaos_ensure_up(const soak_opts_t *o, char *err, size_t errsz);
int soak_chaos_alive(const soak_opts_t *o, int comp);
void soak_chaos_scan_logs(const soak_opts_t *o);

typedef struct {
    long kills[SOAK_NCOMP], crash_exits[SOAK_NCOMP], other_exits[SOAK_NCOMP], restarts[SOAK_NCOMP];
    long total_kills, double_kills;
    int npoints;
    char point[16][48];
    long point_hits[16];
} soak_chaos_stats_t;
void soak_chaos_stats(soak_chaos_stats_t *s);

/* Every kill and every exit of a component, in the order they happened (wall clock ms), for the
 * recovery figures: which outage an order waited on. */
typedef struct {
    int64_t at;
    int comp;
    int exit; /* 0: killed by the driver; 1: exited by itself (a crash point, or worse) */
} soak_chaos_event_t;
/* The events so far: *n of them, in a copy the caller frees (NULL when none or out of memory). */
soak_chaos_event_t *soak_chaos_events(size_t *n);

/* ---- quiescence and the checks (soak_check.c) ---------------------------------------------------- */

int soak_check_quiesce(const soak_opts_t *o, char *err, size_t errsz);

enum { SOAK_LAT_SERVICE, SOAK_LAT_INFRA, SOAK_LAT_NONE, SOAK_LAT_CLASSES };
extern const char *const soak_lat_class_names[SOAK_LAT_CLASSES];
typedef struct {
    long n;
    double p50, p90, p99, max;
} soak_lat_t;

typedef struct {
    long violations[6];            /* [1..5] per check */
    long orders_db, confirmed, rejected, cancelled, pending;
    long results_read, events_read, dlq_read, gremlin_delayed;
    long reasked;
    /* 202 -> decided, ms: all 202 answers, then by the outage they waited on (SOAK_LAT_*: see
     * soak_check.c's latency_202 for the attribution) */
    soak_lat_t lat, lat_class[SOAK_LAT_CLASSES];
    soak_lat_t kafka_class[SOAK_LAT_CLASSES]; /* PlaceOrder over Kafka: acknowledged -> decided, ms */
    long class_events[SOAK_LAT_CLASSES]; /* kills and exits of the class's components during the soak */
} soak_check_result_t;

/* Reads the databases and the topics and runs the five checks, printing each with its count. Returns
 * 0, or -1 with err when the checks could not run (a setup failure, not a violation). */
int soak_check_run(const soak_opts_t *o, soak_check_result_t *r, char *err, size_t errsz);

#endif
