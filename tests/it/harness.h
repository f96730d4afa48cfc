/* harness.h - what an integration suite needs to drive real services over the
 * real Kafka broker and PostgreSQL on 127.0.0.1: a run context (fresh topics
 * and databases per test-binary run), spawned service processes, a producer,
 * kcat, an event collector, PostgreSQL helpers, recorded HTTP exchanges and
 * broker control. The HTTP client, the Kafka readers and the clocks are the
 * shared test library's (tests/lib: vt_http, vt_kafka, vt_util).
 *
 * Invariant: nothing a test starts outlives it. Every spawned process is in a
 * table and is killed by it_test_fini(), by atexit and, should the test process
 * itself be killed, by PR_SET_PDEATHSIG; a broker stopped by it_stack() is
 * started again by it_test_fini() or, at the latest, by it_main().
 *
 * Conventions: fallible functions return 0 on success, -1 on failure and then
 * fill `errstr` (IT_ERR_SIZE is a comfortable size). Free functions accept
 * NULL. Timeouts are in milliseconds and are generous: a suite asserts
 * correctness, never speed. */
#ifndef VX_IT_HARNESS_H
#define VX_IT_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-c/json.h>
#include <libpq-fe.h>

#include "vt_http.h"
#include "vt_kafka.h"
#include "vt_util.h"

#define IT_ERR_SIZE 2048

/* The only addresses a suite talks to: deploy/stack.sh's broker and PostgreSQL, on the ports it
 * was given (VX_BROKER_PORT [9092], VX_PG_PORT [55432]), so that a suite runs against any stack. */
const char *it_kafka_bootstrap(void); /* 127.0.0.1:$VX_BROKER_PORT */
const char *it_pg_port(void);         /* $VX_PG_PORT */
#define IT_KAFKA_BOOTSTRAP it_kafka_bootstrap()
#define IT_PG_HOST "127.0.0.1"
#define IT_PG_PORT it_pg_port()
#define IT_PG_USER "valerix"

/* Default deadline for "wait until something happens". */
#define IT_WAIT_MS 60000

/* Asserts that `call` returned 0; `err` is the errstr it was handed. */
#define IT_OK(call, err) cr_assert((call) == 0, "%s\n  -> %s", #call, (err))

/* ---- run context ------------------------------------------------------- */

/* A replacement for Criterion's main: parses Criterion's arguments, runs the
 * tests one at a time (jobs = 1), and before that sets up the run once:
 * waits for any other run of the same binary on this machine to finish
 * (${TMPDIR:-/tmp}/valerix-<binary>.lock: they would share databases and
 * ports), makes a run id, drops WITH (FORCE) and creates again every
 * database in `databases` (NULL-terminated, borrowed), checks Kafka answers.
 * Tests run in processes that do not share this one's memory, so the context
 * is handed down through the environment (VX_IT_RUN_ID, VX_IT_SETUP_ERROR).
 * A setup failure does not skip anything: every test then fails with it. */
int it_main(int argc, char **argv, const char *const databases[]);

/* Call first in every test body: asserts that the run setup succeeded, with
 * the setup's own message when it did not (in a suite's .init the same
 * failure would be reported as a crash). Also ignores SIGPIPE. */
void it_test_begin(void);

/* Call from every suite's .fini: stops all processes this test spawned and
 * starts the broker again if the test stopped it. */
void it_test_fini(void);

/* The run id, e.g. "1732179000-4242": unique per test-binary run. */
const char *it_run_id(void);

/* Writes "it.<runid>.<name>" into buf: a topic (or group) fresh for this run. */
void it_run_name(char *buf, size_t size, const char *name);

/* This run's names (it_run_name) for Valerix's topics and consumer groups:
 * what a suite hands the services it starts. */
typedef struct it_names {
    char orders_commands[256], orders_results[256], orders_dlq[256];
    char inventory_commands[256], inventory_events[256], inventory_dlq[256];
    char inventory_group[256], orders_group[256];
} it_names;
void it_names_init(it_names *n);

/* The repository root (VX_ROOT, else the parent of the folder holding this
 * binary when it has deploy/stack.sh, else the working directory), and
 * ${VX_DATA_DIR:-<root>/var}/it, created on first use. Static storage. */
const char *it_root(void);
const char *it_data_dir(void);

/* ---- processes ----------------------------------------------------------- */

typedef struct it_proc_s it_proc_t;

/* Starts `exe` (a path, relative ones against it_root()) with this process's
 * environment plus `env` ("NAME=value" entries, NULL-terminated, borrowed;
 * they replace variables of the same name), in its own process group, stdin
 * from /dev/null, stdout and stderr appended to it_data_dir()/<log_name>.log.
 * On success *out owns the process: release it with it_proc_free(). */
int it_proc_spawn(it_proc_t **out, const char *log_name, const char *exe,
                  const char *const env[], char *errstr, size_t errstr_size);

/* Polls GET `path` at `addr` ("127.0.0.1:port") until it answers 200. Fails
 * early, with the log's tail in errstr, when the process exits first. */
int it_proc_wait_http(it_proc_t *p, const char *addr, const char *path,
                      int timeout_ms, char *errstr, size_t errstr_size);

/* Waits until the process exits; *status is the raw wait status. */
int it_proc_wait_exit(it_proc_t *p, int timeout_ms, int *status,
                      char *errstr, size_t errstr_size);

/* Sends `sig` to the process group and waits up to timeout_ms; if it is still
 * running then, sends SIGKILL, waits, and *killed is set to true. *status is
 * the raw wait status. Stopping an already exited process returns its
 * status. */
int it_proc_stop(it_proc_t *p, int sig, int timeout_ms, int *status,
                 bool *killed, char *errstr, size_t errstr_size);

/* True when the process has not exited yet (reaps it when it has). */
bool it_proc_running(it_proc_t *p);
pid_t it_proc_pid(const it_proc_t *p);
const char *it_proc_log_path(const it_proc_t *p);

/* Writes a human description of a wait status ("exited with status 70",
 * "killed by signal 11 (Segmentation fault)") into buf. */
void it_status_describe(int status, char *buf, size_t size);

/* Kills (SIGKILL) and reaps the process if still running, then frees. */
void it_proc_free(it_proc_t *p);

/* Kills and reaps every process spawned by this test process. */
void it_proc_kill_all(void);

/* ---- HTTP ---------------------------------------------------------------- */

/* What the harness's own probe (it_proc_wait_http) allows one answer. */
#define IT_HTTP_PROBE_TIMEOUT_MS 10000
#define IT_HTTP_PROBE_MAX_RESPONSE (4u * 1024u * 1024u)

/* One exchange with vt_http_request (tests/lib/vt_http.h) to `addr`
 * ("127.0.0.1:port"), recorded with it_record_http when an answer came. On
 * success the caller owns *resp: release it with vt_http_resp_clear(). */
int it_http(const char *addr, const vt_http_req *req, vt_http_resp *resp,
            char *errstr, size_t errstr_size);

/* ---- Kafka: producing ---------------------------------------------------- */

/* Every Kafka client made here logs to it_data_dir()/rdkafka.<run id>.log,
 * not to stderr: a broker restart makes each of them complain. */

typedef struct it_header {
    const char *name;
    const void *value; /* NULL: a header with a null value */
    size_t size;
} it_header;

typedef struct it_producer_s it_producer_t;

/* A librdkafka producer to IT_KAFKA_BOOTSTRAP with acks=all, idempotence on
 * and message.timeout.ms of 5 minutes (it must ride out a broker restart).
 * `conf` ("name=value" entries, NULL-terminated, borrowed, may be NULL)
 * overrides librdkafka properties. */
int it_producer_new(it_producer_t **out, const char *const conf[],
                    char *errstr, size_t errstr_size);

/* Enqueues one message (all buffers are copied). key NULL: no key; value
 * NULL: a null value (tombstone). Safe to call from one thread while no other
 * thread uses the same producer. */
int it_produce(it_producer_t *p, const char *topic, const void *key,
               size_t key_len, const void *value, size_t value_len,
               const it_header *headers, size_t n_headers, char *errstr,
               size_t errstr_size);

/* Waits until every enqueued message is delivered; fails if any delivery
 * failed since the last flush. */
int it_producer_flush(it_producer_t *p, int timeout_ms, char *errstr,
                      size_t errstr_size);
void it_producer_free(it_producer_t *p);

/* One message with string key/value, produced and flushed. */
int it_produce_one(const char *topic, const char *key, const char *value,
                   const it_header *headers, size_t n_headers, char *errstr,
                   size_t errstr_size);

/* Produces "key|json" through the real kcat binary:
 * kcat -P -b 127.0.0.1:9092 -t <topic> -K'|' [-H <header>]. `json` must be
 * one line; `header` is "name=value", or NULL for none. */
int it_kcat_produce(const char *topic, const char *key, const char *json,
                    const char *header, char *errstr, size_t errstr_size);

/* ---- Kafka: collecting --------------------------------------------------- */

/* Caps on what one collector keeps in memory. */
#define IT_COLLECTOR_MAX_MSGS 1000000u
#define IT_COLLECTOR_MAX_BYTES (512u * 1024u * 1024u)

typedef struct it_msg_header {
    char *name;
    char *value; /* NUL-terminated copy, NULL for a null header */
    size_t size;
} it_msg_header;

/* One collected message. Every buffer is owned by the collector and stays
 * valid until it_collector_free(). key/value are NUL-terminated copies, or
 * NULL when the message had none. */
typedef struct it_msg {
    int32_t partition;
    int64_t offset;
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
    it_msg_header *headers;
    size_t n_headers;
    json_object *json; /* the value parsed as JSON, NULL if it is not JSON */
} it_msg;

typedef struct it_collector_s it_collector_t;

/* Reads every partition of `topic` (assign, no group commits) into memory,
 * from its beginning or, VT_FROM_END, from the end it has when this returns
 * (a test's own traffic). Waits up to timeout_ms for the topic to exist.
 * `jsonl_topic` non-NULL: every message read is also appended to
 * it_data_dir()/messages.jsonl as {"topic":<jsonl_topic>,"value":<value>},
 * for the schema check that runs after the suites. */
int it_collector_new(it_collector_t **out, const char *topic, vt_from_t from,
                     const char *jsonl_topic, int timeout_ms, char *errstr,
                     size_t errstr_size);
void it_collector_free(it_collector_t *c);

/* Reads what arrives within timeout_ms. */
int it_collector_poll(it_collector_t *c, int timeout_ms, char *errstr,
                      size_t errstr_size);

/* A condition over what has been collected so far. */
typedef bool it_pred_fn(const it_collector_t *c, void *arg);

/* Reads until pred(c, arg) holds or timeout_ms passes; `what` describes the
 * condition for the error message. */
int it_collector_wait(it_collector_t *c, it_pred_fn *pred, void *arg,
                      const char *what, int timeout_ms, char *errstr,
                      size_t errstr_size);

/* Reads until every partition is read up to the end it had when called: after
 * this, "no such message" means it was not in the topic at that time. */
int it_collector_catch_up(it_collector_t *c, int timeout_ms, char *errstr,
                          size_t errstr_size);

/* Reads until at least n messages have a string field `field` == value. */
int it_collector_wait_str(it_collector_t *c, const char *field,
                          const char *value, size_t n, int timeout_ms,
                          char *errstr, size_t errstr_size);

size_t it_collector_count(const it_collector_t *c);
const it_msg *it_collector_at(const it_collector_t *c, size_t i); /* borrowed */
const char *it_collector_topic(const it_collector_t *c);

/* Messages whose JSON value has string field `field` equal to `value`. */
size_t it_collector_count_str(const it_collector_t *c, const char *field,
                              const char *value);
/* The first such message, or NULL. */
const it_msg *it_collector_find_str(const it_collector_t *c, const char *field,
                                    const char *value);

/* The value of the last header called `name` (NULL if absent or null). */
const char *it_msg_header_get(const it_msg *m, const char *name, size_t *size);
/* A string field of the message's JSON object, or NULL. */
const char *it_msg_str(const it_msg *m, const char *field);
/* An integer field of the message's JSON object, or `dflt`. */
int64_t it_msg_int(const it_msg *m, const char *field, int64_t dflt);

/* Sum over partitions of (end offset - committed offset of `group`) for
 * `topic`: 0 once the group has committed everything in the topic. */
int it_kafka_group_lag(const char *group, const char *topic, int64_t *lag,
                       char *errstr, size_t errstr_size);

/* What the group coordinator says about `group`: its member count, how many
 * members hold at least one partition, and whether it is Stable (no
 * rebalance going on). A group nobody joined yet has 0 members. */
int it_kafka_group_describe(const char *group, int *members, int *assigned,
                            bool *stable, char *errstr, size_t errstr_size);

/* ---- PostgreSQL ---------------------------------------------------------- */

/* "postgresql://valerix@127.0.0.1:55432/<dbname>" into buf. */
void it_pg_url(char *buf, size_t size, const char *dbname);

/* A connection to `dbname` as the superuser; caller owns *out (PQfinish). */
int it_pg_connect(PGconn **out, const char *dbname, char *errstr,
                  size_t errstr_size);

/* Runs `sql` with text parameters and reads row 0, column 0 as an integer.
 * Zero rows or a NULL value is an error. */
int it_pg_int(const char *dbname, const char *sql, const char *const params[],
              int n_params, int64_t *out, char *errstr, size_t errstr_size);

/* products.stock of `product_id`, or -1 when there is no such row. */
int it_pg_stock(const char *dbname, const char *product_id, int64_t *stock,
                char *errstr, size_t errstr_size);

/* ---- the stack ------------------------------------------------------------- */

/* Runs `deploy/stack.sh <action> <component>` (e.g. "stop", "kafka") and
 * fails unless it exits 0. Stopping kafka leaves a marker so the broker is
 * started again at test end whatever happens. */
int it_stack(const char *action, const char *component, char *errstr,
             size_t errstr_size);

/* Waits until the broker answers a metadata request. */
int it_kafka_wait_up(int timeout_ms, char *errstr, size_t errstr_size);

/* Appends {"method","path","status"} to $VX_DATA_DIR/it/http.jsonl (query string dropped), one
 * line per HTTP exchange a test saw, so the OpenAPI check can prove every one is documented. */
void it_record_http(const char *method, const char *path, int status);

/* ---- assertions: helpers that fail the running test with the message --------------------- */

/* it_collector_new with up to IT_WAIT_MS for the topic; the caller owns the
 * collector (it_collector_free). */
it_collector_t *it_collect(const char *topic, vt_from_t from, const char *jsonl_topic);

/* it_collector_catch_up within IT_WAIT_MS. */
void it_catch_up(it_collector_t *c);

/* Stops p with SIGTERM and frees it: a clean exit (status 0, or SIGTERM's
 * default action) within 30 s is part of every service's contract. `what`
 * names the service in a failure. p NULL: nothing. */
void it_svc_stop(it_proc_t *p, const char *what);

/* products.stock of `product_id` in database `dbname` (it_pg_stock): -1 when
 * there is no such row; it_assert_stock: that it is `want`. */
int64_t it_stock(const char *dbname, const char *product_id);
void it_assert_stock(const char *dbname, const char *product_id, int64_t want);

/* Serializes obj (plain JSON) and releases it; the caller owns the string. */
char *it_json_take(json_object *obj);

/* A command that names one order and nothing else (ReleaseStock, CancelOrder):
 * {"type","idempotency_key","order_id"} as JSON; the caller owns the string. */
char *it_order_cmd(const char *type, const char *ikey, const char *order_id);

#endif
