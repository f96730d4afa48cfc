/* Unit tests of vx_kafka's configuration: KAFKA_* variables map to librdkafka properties for the
 * right kind of client only, the environment has the last word over every default, and a property
 * librdkafka does not know stops start-up with a message naming the variable. The dead-letter
 * copy is checked on a producer whose broker is unreachable; the start-up check against librdkafka's
 * mock cluster and an address where nothing listens. No broker needed. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <time.h>

#include "vx_kafka.h"
#include "vx_metrics.h"

#include <librdkafka/rdkafka_mock.h> /* after rdkafka.h, which vx_kafka.h includes */

static char errstr[512];

struct mapping {
    const char *env;
    vx_kafka_role_t role;
    const char *prop; /* NULL: the variable does not apply */
};

static const struct mapping mappings[] = {
    {"KAFKA_BOOTSTRAP_SERVERS=broker:9092", VX_KAFKA_PRODUCER, "bootstrap.servers"},
    {"KAFKA_BOOTSTRAP_SERVERS=broker:9092", VX_KAFKA_CONSUMER, "bootstrap.servers"},
    {"KAFKA_BOOTSTRAP_SERVERS=broker:9092", VX_KAFKA_ADMIN, "bootstrap.servers"},
    {"KAFKA_BOOTSTRAP_SERVERS", VX_KAFKA_PRODUCER, "bootstrap.servers"}, /* a bare name works too */
    {"KAFKA_SECURITY_PROTOCOL=SASL_SSL", VX_KAFKA_CONSUMER, "security.protocol"},
    {"KAFKA_SASL_MECHANISM=PLAIN", VX_KAFKA_ADMIN, "sasl.mechanism"},
    {"KAFKA_PRODUCER_LINGER_MS=5", VX_KAFKA_PRODUCER, "linger.ms"},
    {"KAFKA_PRODUCER_LINGER_MS=5", VX_KAFKA_CONSUMER, NULL},
    {"KAFKA_PRODUCER_LINGER_MS=5", VX_KAFKA_ADMIN, NULL},
    {"KAFKA_CONSUMER_SESSION_TIMEOUT_MS=6000", VX_KAFKA_CONSUMER, "session.timeout.ms"},
    {"KAFKA_CONSUMER_SESSION_TIMEOUT_MS=6000", VX_KAFKA_PRODUCER, NULL},
    {"KAFKA_CONSUMER_SESSION_TIMEOUT_MS=6000", VX_KAFKA_ADMIN, NULL},
    {"PATH=/usr/bin", VX_KAFKA_PRODUCER, NULL},
    {"VX_KAFKA_LIBS=/opt/kafka", VX_KAFKA_PRODUCER, NULL},
    {"kafka_bootstrap_servers=x", VX_KAFKA_PRODUCER, NULL},
    {"KAFKA=x", VX_KAFKA_PRODUCER, NULL},
    {"KAFKA_=x", VX_KAFKA_PRODUCER, NULL},
    {"KAFKA_PRODUCER_=x", VX_KAFKA_PRODUCER, NULL},
};

Test(kafka_env, variables_map_to_properties_for_their_role_only) {
    for (size_t i = 0; i < sizeof(mappings) / sizeof(mappings[0]); i++) {
        const struct mapping *c = &mappings[i];
        char prop[64] = "untouched";
        int got = vx_kafka_prop_from_env(c->env, c->role, prop, sizeof(prop));

        if (c->prop) {
            cr_expect_eq(got, 1, "%s (role %d) does not apply", c->env, c->role);
            cr_expect_str_eq(prop, c->prop, "%s (role %d)", c->env, c->role);
        } else {
            cr_expect_eq(got, 0, "%s (role %d) applies as %s", c->env, c->role, prop);
        }
    }
}

Test(kafka_env, name_too_long_for_the_buffer_does_not_apply) {
    char prop[8];
    cr_expect_eq(vx_kafka_prop_from_env("KAFKA_CLIENT_ID=x", VX_KAFKA_PRODUCER, prop, sizeof(prop)), 0);
    cr_expect_eq(vx_kafka_prop_from_env("KAFKA_ACKS=x", VX_KAFKA_PRODUCER, prop, sizeof(prop)), 1);
    cr_expect_str_eq(prop, "acks");
}

/* The value of property `name` in conf (into a static buffer). */
static const char *get(rd_kafka_conf_t *conf, const char *name) {
    static char val[512];
    size_t size = sizeof(val);
    cr_assert_eq(rd_kafka_conf_get(conf, name, val, &size), RD_KAFKA_CONF_OK, "no property %s", name);
    return val;
}

/* Removes every KAFKA_* variable the test runner may have inherited. */
static void clear_kafka_env(void) {
    extern char **environ;
    char name[256];
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++) {
            const char *eq = strchr(*e, '=');
            if (strncmp(*e, "KAFKA_", 6) != 0 || !eq || (size_t)(eq - *e) >= sizeof(name)) continue;
            memcpy(name, *e, (size_t)(eq - *e));
            name[eq - *e] = '\0';
            unsetenv(name);
            again = 1;
            break;
        }
    }
}

Test(kafka_conf, valerix_defaults_per_role) {
    rd_kafka_conf_t *p, *c;

    clear_kafka_env();
    p = vx_kafka_conf_new(VX_KAFKA_PRODUCER, NULL, errstr, sizeof(errstr));
    c = vx_kafka_conf_new(VX_KAFKA_CONSUMER, NULL, errstr, sizeof(errstr));
    cr_assert_not_null(p, "%s", errstr);
    cr_assert_not_null(c, "%s", errstr);
    cr_expect_str_eq(get(p, "bootstrap.servers"), VX_KAFKA_DEFAULT_BOOTSTRAP);
    cr_expect_str_eq(get(p, "enable.idempotence"), "false", "ordered, not idempotent: see vx_kafka.c");
    cr_expect_str_eq(get(p, "max.in.flight.requests.per.connection"), "1", "what keeps a partition in order");
    cr_expect_str_eq(get(p, "acks"), "-1", "acks=all");
    cr_expect_str_eq(get(c, "bootstrap.servers"), VX_KAFKA_DEFAULT_BOOTSTRAP);
    cr_expect_str_eq(get(c, "enable.auto.offset.store"), "false");
    cr_expect_str_eq(get(c, "enable.idempotence"), "false", "idempotence is a producer setting");
    rd_kafka_conf_destroy(p);
    rd_kafka_conf_destroy(c);
}

Test(kafka_conf, environment_applies_to_its_role_and_overrides_defaults) {
    static const char *const defaults[] = {"linger.ms", "11", "client.id", "from-defaults", NULL};
    rd_kafka_conf_t *p, *c;

    clear_kafka_env();
    setenv("KAFKA_BOOTSTRAP_SERVERS", "10.0.0.1:9093", 1);
    setenv("KAFKA_CLIENT_ID", "from-env", 1);
    setenv("KAFKA_PRODUCER_LINGER_MS", "7", 1);
    setenv("KAFKA_CONSUMER_FETCH_WAIT_MAX_MS", "55", 1);
    p = vx_kafka_conf_new(VX_KAFKA_PRODUCER, defaults, errstr, sizeof(errstr));
    c = vx_kafka_conf_new(VX_KAFKA_CONSUMER, NULL, errstr, sizeof(errstr));
    cr_assert_not_null(p, "%s", errstr);
    cr_assert_not_null(c, "%s", errstr);
    cr_expect_str_eq(get(p, "bootstrap.servers"), "10.0.0.1:9093");
    cr_expect_str_eq(get(c, "bootstrap.servers"), "10.0.0.1:9093");
    cr_expect_str_eq(get(p, "client.id"), "from-env", "the environment beats the caller's defaults");
    cr_expect_str_eq(get(p, "linger.ms"), "7", "the environment beats the caller's defaults");
    cr_expect_str_eq(get(p, "fetch.wait.max.ms"), "500", "a consumer variable leaves the producer alone");
    cr_expect_str_eq(get(c, "fetch.wait.max.ms"), "55");
    cr_expect_str_neq(get(c, "linger.ms"), "7", "a producer variable leaves the consumer alone");
    rd_kafka_conf_destroy(p);
    rd_kafka_conf_destroy(c);
}

Test(kafka_conf, caller_defaults_override_valerix_defaults) {
    static const char *const defaults[] = {"message.timeout.ms", "30000", NULL};
    rd_kafka_conf_t *p;

    clear_kafka_env();
    p = vx_kafka_conf_new(VX_KAFKA_PRODUCER, defaults, errstr, sizeof(errstr));
    cr_assert_not_null(p, "%s", errstr);
    cr_expect_str_eq(get(p, "message.timeout.ms"), "30000");
    rd_kafka_conf_destroy(p);
}

Test(kafka_conf, unknown_property_fails_naming_the_variable) {
    clear_kafka_env();
    setenv("KAFKA_NO_SUCH_THING", "1", 1);
    cr_expect_null(vx_kafka_conf_new(VX_KAFKA_PRODUCER, NULL, errstr, sizeof(errstr)));
    cr_expect_not_null(strstr(errstr, "KAFKA_NO_SUCH_THING"), "%s", errstr);
    cr_expect_null(vx_kafka_conf_new(VX_KAFKA_ADMIN, NULL, errstr, sizeof(errstr)));
    cr_expect_not_null(strstr(errstr, "KAFKA_NO_SUCH_THING"), "%s", errstr);
}

Test(kafka_conf, bad_value_fails_naming_the_variable) {
    clear_kafka_env();
    setenv("KAFKA_CONSUMER_FETCH_WAIT_MAX_MS", "soon", 1);
    cr_expect_null(vx_kafka_conf_new(VX_KAFKA_CONSUMER, NULL, errstr, sizeof(errstr)));
    cr_expect_not_null(strstr(errstr, "KAFKA_CONSUMER_FETCH_WAIT_MAX_MS"), "%s", errstr);
}

Test(kafka_conf, bad_variable_for_another_role_does_not_matter) {
    rd_kafka_conf_t *p;

    clear_kafka_env();
    setenv("KAFKA_CONSUMER_NO_SUCH_THING", "1", 1);
    p = vx_kafka_conf_new(VX_KAFKA_PRODUCER, NULL, errstr, sizeof(errstr));
    cr_expect_not_null(p, "%s", errstr);
    rd_kafka_conf_destroy(p);
}

Test(kafka_conf, bad_caller_default_fails) {
    static const char *const defaults[] = {"no.such.default", "1", NULL};
    clear_kafka_env();
    cr_expect_null(vx_kafka_conf_new(VX_KAFKA_PRODUCER, defaults, errstr, sizeof(errstr)));
    cr_expect_not_null(strstr(errstr, "no.such.default"), "%s", errstr);
}

Test(kafka_producer, unknown_property_fails_before_any_client_exists) {
    clear_kafka_env();
    setenv("KAFKA_NO_SUCH_THING", "1", 1);
    cr_expect_null(vx_kafka_producer_new(NULL, NULL, NULL, errstr, sizeof(errstr)));
    cr_expect_not_null(strstr(errstr, "KAFKA_NO_SUCH_THING"), "%s", errstr);
}

/* ---- the dead-letter copy, on a producer whose broker is unreachable -------------------------- */

/* The source message is produced to an unreachable broker; its delivery report is a real
 * rd_kafka_message_t with topic, key, value and headers, which is then dead-lettered. The copy's
 * own delivery report (NULL opaque) shows what was produced to the DLQ. */
struct dlq_run {
    int source_reports, copy_reports, dead_letter_rc;
    char source_partition[16], source_offset[16];
    char topic[64], key[64], value[64];
    int has_opaque, nheaders;
    char hdr[8][128]; /* correlation-id, then the dlq-* headers in dlq_headers order */
};

static const char *const dlq_headers[] = {"correlation-id",       "dlq-reason",        "dlq-error", "dlq-source-topic",
                                          "dlq-source-partition", "dlq-source-offset", "dlq-service"};

static void on_dlq_report(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    struct dlq_run *r = opaque;
    rd_kafka_headers_t *hdrs;

    if (m->_private) { /* the source message */
        r->source_reports++;
        snprintf(r->source_partition, sizeof(r->source_partition), "%d", (int)m->partition);
        snprintf(r->source_offset, sizeof(r->source_offset), "%lld", (long long)m->offset);
        r->dead_letter_rc = vx_kafka_dead_letter(rk, "t.dlq", m, "wrong_type", "items[0].quantity must be an integer",
                                                 "unit-test", errstr, sizeof(errstr));
        return;
    }
    r->copy_reports++;
    snprintf(r->topic, sizeof(r->topic), "%s", rd_kafka_topic_name(m->rkt));
    snprintf(r->key, sizeof(r->key), "%.*s", (int)m->key_len, (const char *)m->key);
    snprintf(r->value, sizeof(r->value), "%.*s", (int)m->len, (const char *)m->payload);
    r->nheaders = rd_kafka_message_headers(m, &hdrs) ? 0 : (int)rd_kafka_header_cnt(hdrs);
    for (size_t i = 0; i < sizeof(dlq_headers) / sizeof(dlq_headers[0]); i++)
        if (!vx_kafka_header(m, dlq_headers[i], r->hdr[i], sizeof(r->hdr[i]))) snprintf(r->hdr[i], 128, "(absent)");
}

Test(kafka_dead_letter, copy_keeps_key_value_headers_and_adds_the_dlq_headers_in_place_of_any_it_came_with) {
    static const char *const defaults[] = {"message.timeout.ms", "50", "linger.ms", "0", "log_level", "0", NULL};
    struct dlq_run r;
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(1);
    rd_kafka_t *rk;
    time_t until;

    memset(&r, 0, sizeof(r));
    r.dead_letter_rc = 99;
    clear_kafka_env();
    setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", 1);
    rk = vx_kafka_producer_new(on_dlq_report, &r, defaults, errstr, sizeof(errstr));
    cr_assert_not_null(rk, "%s", errstr);
    rd_kafka_header_add(hdrs, "correlation-id", -1, "corr-9", -1);
    rd_kafka_header_add(hdrs, "dlq-reason", -1, "forged", -1); /* not the service's: left out of the letter */
    cr_assert_eq(vx_kafka_produce(rk, "t.commands", "key-1", 5, "{\"bad\":1}", 9, hdrs, (void *)1), 0);
    until = time(NULL) + 10;
    while (r.copy_reports < 1 && time(NULL) < until) rd_kafka_poll(rk, 50);

    cr_assert_eq(r.source_reports, 1);
    cr_assert_eq(r.dead_letter_rc, 0, "%s", errstr);
    cr_assert_eq(r.copy_reports, 1);
    cr_expect_str_eq(r.topic, "t.dlq");
    cr_expect_str_eq(r.key, "key-1");
    cr_expect_str_eq(r.value, "{\"bad\":1}");
    cr_expect_eq(r.nheaders, 7, "the original header and six dlq-* headers");
    cr_expect_str_eq(r.hdr[0], "corr-9");
    cr_expect_str_eq(r.hdr[1], "wrong_type");
    cr_expect_str_eq(r.hdr[2], "items[0].quantity must be an integer");
    cr_expect_str_eq(r.hdr[3], "t.commands");
    cr_expect_str_eq(r.hdr[4], r.source_partition);
    cr_expect_str_eq(r.hdr[5], r.source_offset);
    cr_expect_str_eq(r.hdr[6], "unit-test");
    rd_kafka_destroy(rk);
}

/* The topics of the contract: a variable names each, else its default; outbox rows carry logical names. */
Test(kafka_topics, names_come_from_the_environment_else_the_contract_defaults) {
    unsetenv("ORDERS_RESULTS_TOPIC");
    cr_expect_str_eq(vx_topic(VX_TOPIC_ORDERS_RESULTS), "orders.results");
    setenv("ORDERS_RESULTS_TOPIC", "t.results", 1);
    cr_expect_str_eq(vx_topic(VX_TOPIC_ORDERS_RESULTS), "t.results");
    unsetenv("ORDERS_RESULTS_TOPIC");
    cr_expect_str_eq(vx_topic(VX_TOPIC_INVENTORY_DLQ), "inventory.dlq");
    cr_expect_str_eq(vx_topic_logical(VX_TOPIC_INVENTORY_EVENTS), "events");
    cr_expect_str_eq(vx_topic_logical(VX_TOPIC_ORDERS_RESULTS), "orders.results");
}

/* vx_kafka_check_broker: a broker that answers, one that refuses SASL, none at all, and settings that
 * make no client. A real broker refusing a wrong password: tests/auth/auth.sh (make auth). */
Test(kafka_check_broker, a_broker_that_answers_is_0) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *owner;
    rd_kafka_mock_cluster_t *mc;

    clear_kafka_env();
    rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
    cr_assert_not_null(owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)), "%s", err);
    cr_assert_not_null(mc = rd_kafka_mock_cluster_new(owner, 1));
    setenv("KAFKA_BOOTSTRAP_SERVERS", rd_kafka_mock_cluster_bootstraps(mc), 1);
    cr_expect_eq(vx_kafka_check_broker(VX_KAFKA_PRODUCER, 5000, errstr, sizeof(errstr)), 0, "%s", errstr);
    cr_expect_eq(vx_kafka_check_broker(VX_KAFKA_CONSUMER, 5000, errstr, sizeof(errstr)), 0, "%s", errstr);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(owner);
    unsetenv("KAFKA_BOOTSTRAP_SERVERS");
}

/* The mock cluster knows no SASL: librdkafka reports its handshake refused as an authentication
 * failure, which is what a wrong password makes a real broker report. */
Test(kafka_check_broker, refused_credentials_are_minus_1_naming_the_user_never_the_password) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *owner;
    rd_kafka_mock_cluster_t *mc;

    clear_kafka_env();
    rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
    cr_assert_not_null(owner = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err)), "%s", err);
    cr_assert_not_null(mc = rd_kafka_mock_cluster_new(owner, 1));
    setenv("KAFKA_BOOTSTRAP_SERVERS", rd_kafka_mock_cluster_bootstraps(mc), 1);
    setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT", 1);
    setenv("KAFKA_SASL_MECHANISMS", "PLAIN", 1);
    setenv("KAFKA_SASL_USERNAME", "shop-user", 1);
    setenv("KAFKA_SASL_PASSWORD", "s3cret-never-shown", 1);
    cr_assert_eq(vx_kafka_check_broker(VX_KAFKA_CONSUMER, 5000, errstr, sizeof(errstr)), -1, "%s", errstr);
    cr_expect(strstr(errstr, "Kafka refused the credentials of user \"shop-user\"") != NULL, "%s", errstr);
    cr_expect(strstr(errstr, "SASL") != NULL, "%s", errstr);
    cr_expect(strstr(errstr, "s3cret") == NULL, "%s", errstr);
    clear_kafka_env();
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(owner);
}

Test(kafka_check_broker, no_broker_is_1_naming_the_address) {
    clear_kafka_env();
    setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", 1);
    cr_assert_eq(vx_kafka_check_broker(VX_KAFKA_PRODUCER, 600, errstr, sizeof(errstr)), 1);
    cr_expect(strstr(errstr, "no Kafka broker at 127.0.0.1:1 (KAFKA_BOOTSTRAP_SERVERS) answered within 600 ms") != NULL,
              "%s", errstr);
    unsetenv("KAFKA_BOOTSTRAP_SERVERS");
}

Test(kafka_check_broker, settings_that_make_no_client_are_2_naming_the_variable) {
    clear_kafka_env();
    setenv("KAFKA_NO_SUCH_THING", "1", 1);
    cr_assert_eq(vx_kafka_check_broker(VX_KAFKA_PRODUCER, 600, errstr, sizeof(errstr)), 2);
    cr_expect(strstr(errstr, "KAFKA_NO_SUCH_THING") != NULL, "%s", errstr);
    unsetenv("KAFKA_NO_SUCH_THING");
}

/* The value of a series of the process's metrics; 0 when absent. */
static double metric(const char *series) { return vx_metrics_value(series, 0); }

static void report(const rd_kafka_t *rk, long produce_b1, long produce_b2, long fetch) {
    char json[512];
    snprintf(json, sizeof(json),
             "{\"name\":\"t\",\"brokers\":{\"127.0.0.1:9092/1\":{\"req\":{\"Produce\":%ld,\"Fetch\":%ld,\"Metadata\":0}},"
             "\"127.0.0.1:9093/2\":{\"req\":{\"Produce\":%ld}},\"GroupCoordinator\":{\"state\":\"UP\"}}}",
             produce_b1, fetch, produce_b2);
    vx_kafka_stats(rk, json, strlen(json));
}

Test(kafka_stats, requests_add_each_handles_growth_over_its_brokers) {
    rd_kafka_conf_t *pc, *cc;
    rd_kafka_t *p, *c;
    const char *prod = "valerix_kafka_requests_total{client=\"producer\",request=\"Produce\"}";
    const char *fetch = "valerix_kafka_requests_total{client=\"consumer\",request=\"Fetch\"}";

    clear_kafka_env();
    cr_assert_not_null(pc = vx_kafka_conf_new(VX_KAFKA_PRODUCER, NULL, errstr, sizeof(errstr)), "%s", errstr);
    cr_assert_not_null(cc = vx_kafka_conf_new(VX_KAFKA_CONSUMER, NULL, errstr, sizeof(errstr)), "%s", errstr);
    cr_expect_str_eq(get(pc, "statistics.interval.ms"), "1000");
    /* handles that reach no broker: the reports here are the test's own */
    cr_assert_eq(rd_kafka_conf_set(pc, "bootstrap.servers", "127.0.0.1:1", errstr, sizeof(errstr)), RD_KAFKA_CONF_OK);
    cr_assert_eq(rd_kafka_conf_set(cc, "bootstrap.servers", "127.0.0.1:1", errstr, sizeof(errstr)), RD_KAFKA_CONF_OK);
    cr_assert_not_null(p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof(errstr)), "%s", errstr);
    cr_assert_not_null(c = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof(errstr)), "%s", errstr);
    double p0 = metric(prod), f0 = metric(fetch);

    report(p, 3, 2, 0); /* 5 Produce requests so far, over two brokers */
    cr_expect_eq(metric(prod) - p0, 5);
    report(p, 10, 4, 0); /* 14: 9 more */
    cr_expect_eq(metric(prod) - p0, 14);
    report(p, 10, 4, 0); /* nothing new */
    cr_expect_eq(metric(prod) - p0, 14);
    report(p, 1, 0, 0);  /* fewer: a new handle where the old one was, counting from zero */
    cr_expect_eq(metric(prod) - p0, 15);
    report(c, 0, 0, 7);  /* another handle, another kind: a series of its own */
    cr_expect_eq(metric(fetch) - f0, 7);
    cr_expect_eq(metric(prod) - p0, 15);
    vx_kafka_stats(c, "{\"brokers\":", 11); /* a report cut short counts nothing */
    cr_expect_eq(metric(fetch) - f0, 7);
    rd_kafka_destroy(p);
    rd_kafka_destroy(c);
}
