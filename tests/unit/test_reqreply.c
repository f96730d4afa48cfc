/* Unit tests of the gateway's request-reply engine (gateway/reqreply.h) without a broker and without
 * HTTP: the engine runs against librdkafka's in-process mock cluster (rd_kafka_mock), and the test
 * plays order-svc, reading the commands and producing the OrderResults. Outcomes arrive through the
 * engine's callback, as gateway/main.c receives them. */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../gateway/reqreply.h"
#include "vx_log.h"
#include "vx_metrics.h"
#include "vx_msg.h"

#define WAIT_MS 20000

/* One request as the test sees it: filled by the engine's callback. */
typedef struct {
    int done, parked;
    gw_rr_outcome_kind_t kind;
    char order_id[64], status[16];
    int replayed;
    long long retry_after_ms;
} req_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static rd_kafka_t *owner, *svc_in, *svc_out;
static rd_kafka_mock_cluster_t *mc;
static gw_rr_t *rr;

static void on_answer(void *request, const gw_rr_outcome_t *o, void *opaque) {
    req_t *r = request;
    (void)opaque;
    pthread_mutex_lock(&mu);
    cr_assert_eq(r->done, 0, "a request was answered twice");
    r->kind = o->kind;
    r->replayed = o->replayed;
    r->retry_after_ms = o->retry_after_ms;
    snprintf(r->order_id, sizeof(r->order_id), "%s", o->order_id ? o->order_id : "");
    snprintf(r->status, sizeof(r->status), "%s", o->result ? o->result->status : "");
    r->done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static void on_park(void *request, void *opaque) {
    (void)opaque;
    ((req_t *)request)->parked = 1;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void await_answer(req_t *r) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&mu);
    while (!r->done)
        if (pthread_cond_timedwait(&cv, &mu, &until)) break;
    pthread_mutex_unlock(&mu);
    cr_assert(r->done, "no answer within %d ms", WAIT_MS);
}

/* The engine against a fresh mock cluster; opts' timings as given. */
static void start(int timeout_ms, int attempt_ms, int max_inflight, int min_calls) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_topic_partition_list_t *l;
    const char *boot;

    setenv("VX_LOG_LEVEL", "error", 1); /* the broker-down test makes librdkafka complain */
    vx_log_init("test_reqreply");
    rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
    cr_assert_not_null(owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)), "%s", err);
    cr_assert_not_null(mc = rd_kafka_mock_cluster_new(owner, 1));
    boot = rd_kafka_mock_cluster_bootstraps(mc);
    rd_kafka_mock_topic_create(mc, "orders.commands", 1, 1);
    rd_kafka_mock_topic_create(mc, "orders.results", 1, 1);
    setenv("KAFKA_BOOTSTRAP_SERVERS", boot, 1);

    gw_rr_opts_t o = {.commands_topic = "orders.commands",
                      .results_topic = "orders.results",
                      .max_inflight = max_inflight,
                      .attempt_timeout_ms = attempt_ms,
                      .backoff_base_ms = 10,
                      .backoff_cap_ms = 50,
                      .produce_timeout_ms = 1000,
                      .breaker = {.failure_rate = 0.5, .min_calls = min_calls, .window_ms = 10000, .open_ms = 10000,
                                  .probes = 1, .call_ms = timeout_ms},
                      .answer = on_answer,
                      .park = on_park};
    cr_assert_not_null(rr = gw_rr_start(&o, err, sizeof(err)), "%s", err);

    /* order-svc's side: a consumer of the commands from the start, a producer of results */
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", boot, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "test-svc", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
    cr_assert_not_null(svc_in = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)), "%s", err);
    l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "orders.commands", 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(svc_in, l);
    rd_kafka_topic_partition_list_destroy(l);
    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", boot, NULL, 0);
    rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
    cr_assert_not_null(svc_out = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)), "%s", err);
}

static void stop(void) {
    gw_rr_stop(rr);
    rd_kafka_consumer_close(svc_in);
    rd_kafka_destroy(svc_in);
    rd_kafka_flush(svc_out, 5000);
    rd_kafka_destroy(svc_out);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(owner);
}

static void body_of(vx_msg_t *m, const char *customer) {
    char json[256], err[256];
    snprintf(json, sizeof(json), "{\"customer_id\":\"%s\",\"items\":[{\"product_id\":\"P-1\",\"quantity\":2}]}",
             customer);
    cr_assert_eq(vx_msg_decode(m, json, strlen(json), VX_MSG_ORDER_BODY, err, sizeof(err)), VX_MSG_OK, "%s", err);
}

static void submit(req_t *r, const char *key, const char *customer, long long timeout_ms) {
    vx_msg_t m;
    memset(r, 0, sizeof(*r));
    body_of(&m, customer);
    gw_rr_submit(rr, r, &m, key, timeout_ms, 1);
    vx_msg_clear(&m);
}

/* The next command the engine produced, decoded (clear it); fails after WAIT_MS. */
static void await_command(vx_msg_t *cmd) {
    char err[256];
    long long until = now_ms() + WAIT_MS;
    while (now_ms() < until) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(svc_in, 100);
        if (!m) continue;
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        cr_assert_eq(vx_msg_decode(cmd, m->payload, m->len, VX_MSG_PLACE_ORDER, err, sizeof(err)), VX_MSG_OK,
                     "the engine produced a command that is no PlaceOrder: %s", err);
        char oid[37];
        vx_msg_order_id(cmd->idempotency_key, oid);
        cr_assert(m->key && m->key_len == strlen(oid) && memcmp(m->key, oid, m->key_len) == 0,
                  "a command not keyed by its order id %s (the one its idempotency key gives)", oid);
        rd_kafka_message_destroy(m);
        return;
    }
    cr_assert_fail("no command within %d ms", WAIT_MS);
}

/* Produces the OrderResult of the order of `key`, as order-svc would. */
static void reply(const char *key, const char *status, const char *customer) {
    char oid[37], hash[17], json[1024];
    vx_msg_t body;
    body_of(&body, customer);
    vx_msg_order_id(key, oid);
    vx_msg_order_hash(&body, hash);
    vx_msg_clear(&body);
    snprintf(json, sizeof(json),
             "{\"type\":\"OrderResult\",\"order_id\":\"%s\",\"idempotency_key\":\"%s\",\"customer_id\":\"%s\","
             "\"status\":\"%s\",\"reason\":%s,\"items\":[{\"product_id\":\"P-1\",\"quantity\":2}],"
             "\"request_hash\":\"%s\",\"event_id\":\"orders:order:%s:result:%s\","
             "\"occurred_at\":\"2026-12-05T10:00:00.000000Z\"}",
             oid, key, customer, status, strcmp(status, "CONFIRMED") == 0 ? "null" : "\"insufficient_stock\"", hash,
             oid, status);
    cr_assert_eq(rd_kafka_producev(svc_out, RD_KAFKA_V_TOPIC("orders.results"), RD_KAFKA_V_KEY(oid, strlen(oid)),
                                   RD_KAFKA_V_VALUE(json, strlen(json)), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                   RD_KAFKA_V_END),
                 RD_KAFKA_RESP_ERR_NO_ERROR);
    cr_assert_eq(rd_kafka_flush(svc_out, WAIT_MS), RD_KAFKA_RESP_ERR_NO_ERROR);
}

/* A counter of the process's metrics text (the engine's families are in it). */
static long long counter(const char *name) {
    double v = vx_metrics_value(name, -1);
    cr_assert_neq(v, -1, "no %s in the metrics", name);
    return (long long)v;
}

Test(reqreply, a_confirmed_result_answers_its_request) {
    req_t r;
    vx_msg_t cmd;
    char oid[37];
    start(5000, 2000, 16, 10);
    submit(&r, "k-1", "c1", 5000);
    cr_expect(r.parked, "the request was not parked");
    await_command(&cmd);
    cr_expect_str_eq(cmd.idempotency_key, "k-1");
    cr_expect_str_eq(cmd.customer_id, "c1");
    vx_msg_clear(&cmd);
    reply("k-1", "CONFIRMED", "c1");
    await_answer(&r);
    vx_msg_order_id("k-1", oid);
    cr_expect_eq(r.kind, GW_RR_CONFIRMED);
    cr_expect_str_eq(r.order_id, oid);
    cr_expect_str_eq(r.status, "CONFIRMED");
    cr_expect_eq(r.replayed, 0);
    stop();
}

Test(reqreply, a_rejection_is_reported_as_rejected) {
    req_t r;
    vx_msg_t cmd;
    start(5000, 2000, 16, 10);
    submit(&r, "k-rej", "c1", 5000);
    await_command(&cmd);
    vx_msg_clear(&cmd);
    reply("k-rej", "REJECTED", "c1");
    await_answer(&r);
    cr_expect_eq(r.kind, GW_RR_REJECTED);
    cr_expect_str_eq(r.status, "REJECTED");
    stop();
}

/* A result that comes before its request is registered matches nothing (it is counted, not lost in
 * a wrong answer); the request, once made, is answered by its own exchange. */
Test(reqreply, a_reply_before_its_request_is_registered_answers_nothing_and_the_request_still_gets_its_own) {
    req_t r;
    vx_msg_t cmd;
    long long until;
    start(5000, 2000, 16, 10);
    reply("k-early", "CONFIRMED", "c1");
    for (until = now_ms() + WAIT_MS; counter("valerix_gateway_unmatched_replies_total") < 1 && now_ms() < until;)
        usleep(20000);
    cr_assert_eq(counter("valerix_gateway_unmatched_replies_total"), 1, "the early reply was not seen");
    submit(&r, "k-early", "c1", 5000);
    cr_expect_eq(r.done, 0, "answered by a reply that came before the request");
    await_command(&cmd);
    vx_msg_clear(&cmd);
    reply("k-early", "CONFIRMED", "c1");
    await_answer(&r);
    cr_expect_eq(r.kind, GW_RR_CONFIRMED);
    stop();
}

/* The first attempt's reply is lost: after the attempt timeout the same command is sent again (same
 * key, same bytes), and its reply answers the request. */
Test(reqreply, a_lost_reply_is_recovered_by_a_resend) {
    req_t r;
    vx_msg_t first, again;
    start(10000, 200, 16, 10);
    submit(&r, "k-lost", "c1", 10000);
    await_command(&first);
    await_command(&again);
    cr_expect_str_eq(again.idempotency_key, first.idempotency_key);
    cr_expect_str_eq(again.customer_id, first.customer_id);
    vx_msg_clear(&first);
    vx_msg_clear(&again);
    cr_expect_geq(counter("valerix_gateway_commands_resent_total"), 1);
    cr_expect_eq(r.done, 0);
    reply("k-lost", "CONFIRMED", "c1");
    await_answer(&r);
    cr_expect_eq(r.kind, GW_RR_CONFIRMED);
    stop();
}

Test(reqreply, a_deadline_after_the_broker_took_the_command_is_accepted_late) {
    req_t r;
    vx_msg_t cmd;
    start(1500, 5000, 16, 10);
    submit(&r, "k-late", "c1", 1500);
    await_command(&cmd);
    vx_msg_clear(&cmd);
    await_answer(&r);
    cr_expect_eq(r.kind, GW_RR_ACCEPTED_LATE);
    stop();
}

/* Two requests with one key and one body share one command and one answer; the second is a replay.
 * The same key with another body is refused at once. */
Test(reqreply, one_key_shares_one_command_and_another_body_is_refused) {
    req_t a, b, c;
    vx_msg_t cmd;
    /* one attempt for the whole deadline: on a loaded machine a resend would count a second command */
    start(20000, 20000, 16, 10);
    submit(&a, "k-same", "c1", 20000);
    submit(&b, "k-same", "c1", 20000);
    submit(&c, "k-same", "c2", 20000);
    cr_expect(c.done, "another body under the same key was not refused at once");
    cr_expect_eq(c.kind, GW_RR_KEY_REUSED);
    await_command(&cmd);
    vx_msg_clear(&cmd);
    reply("k-same", "CONFIRMED", "c1");
    await_answer(&a);
    await_answer(&b);
    cr_expect_eq(a.kind, GW_RR_CONFIRMED);
    cr_expect_eq(b.kind, GW_RR_CONFIRMED);
    cr_expect_eq(a.replayed + b.replayed, 1, "exactly the joined request is a replay");
    cr_expect_eq(counter("valerix_gateway_commands_sent_total"), 1, "one command for one key");
    stop();
}

Test(reqreply, a_full_table_is_busy) {
    req_t a, b;
    start(5000, 2000, 1, 10);
    submit(&a, "k-full-1", "c1", 5000);
    submit(&b, "k-full-2", "c1", 5000);
    cr_expect(b.done);
    cr_expect_eq(b.kind, GW_RR_BUSY);
    cr_expect_gt(b.retry_after_ms, 0);
    stop();
}

/* Requests that wait out their deadline open the breaker: the next one is refused at once, with the
 * time until it half-opens. */
Test(reqreply, timeouts_open_the_breaker_and_it_fails_fast) {
    req_t a, b, c;
    start(200, 2000, 16, 2);
    submit(&a, "k-to-1", "c1", 200);
    await_answer(&a);
    submit(&b, "k-to-2", "c1", 200);
    await_answer(&b);
    submit(&c, "k-to-3", "c1", 200);
    cr_expect(c.done, "the breaker did not refuse at once");
    cr_expect_eq(c.kind, GW_RR_UNAVAILABLE);
    cr_expect_gt(c.retry_after_ms, 0);
    stop();
}

/* With the broker down no command is accepted: the deadline ends it as unavailable, never as
 * accepted late. */
Test(reqreply, a_broker_that_never_takes_the_command_makes_it_unavailable) {
    req_t r;
    start(500, 2000, 16, 10);
    rd_kafka_mock_broker_set_down(mc, 1);
    submit(&r, "k-down", "c1", 500);
    await_answer(&r);
    cr_expect_eq(r.kind, GW_RR_UNAVAILABLE);
    rd_kafka_mock_broker_set_up(mc, 1);
    stop();
}
