/* Unit tests of vx_kafka_instance_id, the static group membership id of an instance: derived from
 * the service, the host and the HTTP address unless VX_INSTANCE_ID says otherwise, unique for two
 * instances on one host, the same for the same instance started again, only characters Kafka takes
 * in a group.instance.id, and a VX_INSTANCE_ID Kafka would refuse stops start-up. No broker needed. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vx_kafka.h"

static char id[VX_INSTANCE_ID_MAX + 1], err[256];

static int kafka_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
}

Test(instance_id, derived_from_service_host_and_address_in_kafka_characters) {
    char host[256] = "", want[512];
    unsetenv("VX_INSTANCE_ID");
    cr_assert_eq(gethostname(host, sizeof(host) - 1), 0);
    cr_assert_eq(vx_kafka_instance_id("order-svc", "127.0.0.1:8081", id, sizeof(id), err, sizeof(err)), 0, "%s", err);
    snprintf(want, sizeof(want), "order-svc.%s.127.0.0.1-8081", host);
    for (char *p = want; *p; p++)
        if (!kafka_char(*p)) *p = '-';
    cr_expect_str_eq(id, want);
    for (const char *p = id; *p; p++) cr_expect(kafka_char(*p), "'%c' in %s", *p, id);
}

Test(instance_id, two_instances_on_one_host_differ_and_a_restart_keeps_its_id) {
    char a[sizeof(id)], b[sizeof(id)], again[sizeof(id)];
    unsetenv("VX_INSTANCE_ID");
    cr_assert_eq(vx_kafka_instance_id("inventory-svc", "0.0.0.0:8082", a, sizeof(a), err, sizeof(err)), 0);
    cr_assert_eq(vx_kafka_instance_id("inventory-svc", "0.0.0.0:8092", b, sizeof(b), err, sizeof(err)), 0);
    cr_assert_eq(vx_kafka_instance_id("inventory-svc", "0.0.0.0:8082", again, sizeof(again), err, sizeof(err)), 0);
    cr_expect_str_neq(a, b);
    cr_expect_str_eq(a, again);
}

Test(instance_id, the_variable_wins_and_none_turns_static_membership_off) {
    setenv("VX_INSTANCE_ID", "order-svc-0", 1);
    cr_assert_eq(vx_kafka_instance_id("order-svc", "0.0.0.0:8081", id, sizeof(id), err, sizeof(err)), 0);
    cr_expect_str_eq(id, "order-svc-0");
    setenv("VX_INSTANCE_ID", "none", 1);
    cr_assert_eq(vx_kafka_instance_id("order-svc", "0.0.0.0:8081", id, sizeof(id), err, sizeof(err)), 0);
    cr_expect_str_eq(id, "");
    unsetenv("VX_INSTANCE_ID");
}

Test(instance_id, an_id_kafka_would_refuse_stops_start_up) {
    char longer[VX_INSTANCE_ID_MAX + 2];
    setenv("VX_INSTANCE_ID", "order svc/0", 1);
    cr_expect_eq(vx_kafka_instance_id("order-svc", "0.0.0.0:8081", id, sizeof(id), err, sizeof(err)), -1);
    cr_expect(strstr(err, "VX_INSTANCE_ID") != NULL, "%s", err);
    memset(longer, 'a', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    setenv("VX_INSTANCE_ID", longer, 1);
    cr_expect_eq(vx_kafka_instance_id("order-svc", "0.0.0.0:8081", id, sizeof(id), err, sizeof(err)), -1);
    cr_expect(strstr(err, "VX_INSTANCE_ID") != NULL, "%s", err);
    unsetenv("VX_INSTANCE_ID");
}

Test(instance_id, consumer_carries_it_and_the_membership_defaults) {
    const char *topics[] = {"t"};
    char val[256];
    size_t size = sizeof(val);
    rd_kafka_t *rk;
    const rd_kafka_conf_t *conf;

    /* the environment has the last word: none of it may leak in from the runner's */
    const char *vars[] = {"KAFKA_SESSION_TIMEOUT_MS", "KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "KAFKA_HEARTBEAT_INTERVAL_MS",
                          "KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS", "KAFKA_RECONNECT_BACKOFF_MAX_MS",
                          "KAFKA_CONSUMER_RECONNECT_BACKOFF_MAX_MS", "KAFKA_GROUP_INSTANCE_ID",
                          "KAFKA_CONSUMER_GROUP_INSTANCE_ID"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) unsetenv(vars[i]);
    setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", 1); /* nothing listens: no group is ever joined */
    rk = vx_kafka_consumer_new("g", "svc.host.addr", topics, 1, NULL, NULL, err, sizeof(err));
    cr_assert(rk, "%s", err);
    conf = rd_kafka_conf(rk);
    cr_assert_eq(rd_kafka_conf_get(conf, "group.instance.id", val, &size), RD_KAFKA_CONF_OK);
    cr_expect_str_eq(val, "svc.host.addr");
    size = sizeof(val);
    cr_assert_eq(rd_kafka_conf_get(conf, "session.timeout.ms", val, &size), RD_KAFKA_CONF_OK);
    cr_expect_str_eq(val, VX_KAFKA_SESSION_TIMEOUT_MS);
    size = sizeof(val);
    cr_assert_eq(rd_kafka_conf_get(conf, "heartbeat.interval.ms", val, &size), RD_KAFKA_CONF_OK);
    cr_expect_str_eq(val, VX_KAFKA_HEARTBEAT_INTERVAL_MS);
    size = sizeof(val);
    cr_assert_eq(rd_kafka_conf_get(conf, "reconnect.backoff.max.ms", val, &size), RD_KAFKA_CONF_OK);
    cr_expect_str_eq(val, VX_KAFKA_RECONNECT_BACKOFF_MAX_MS);
    rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    unsetenv("KAFKA_BOOTSTRAP_SERVERS");
}
