/* Unit tests of the gateway's POST /orders checks (gateway/validate.c) and of what Valerix reads of
 * Kafka headers (vx_kafka_correlation_id, and vx_kafka_dlq_origin for a redrive): among them the
 * regressions of what the fuzz targets (tests/fuzz) found. Whatever the gateway accepts, order-svc
 * must accept too; a header is used only when it is well-formed; a dead letter's redrive-count must
 * never let it loop past VX_REDRIVE_MAX. */
#include <criterion/criterion.h>
#include <string.h>

#include "../../gateway/validate.h"
#include "vx_kafka.h"
#include "vx_msg.h"

#define BODY "{\"customer_id\":\"c1\",\"items\":[{\"product_id\":\"SKU-A\",\"quantity\":2}]}"

static gw_problem_t p;
static vx_msg_t m;

static int check(const char *ctype, const char *key, const char *rt, const char *body, long long *timeout) {
    memset(&p, 0, sizeof(p));
    return gw_validate_order(ctype, key, rt, body, strlen(body), timeout, &m, &p);
}

/* The PlaceOrder the gateway makes of m under key decodes as order-svc decodes it. */
static void assert_order_svc_accepts(const char *key) {
    json_object *o = vx_msg_place_order(&m, key);
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    vx_msg_t cmd;
    char err[256];
    cr_assert_eq(vx_msg_decode(&cmd, s, strlen(s), VX_MSG_ORDER_COMMANDS, err, sizeof(err)), VX_MSG_OK, "%s: %s", s, err);
    cr_assert_str_eq(cmd.idempotency_key, key);
    vx_msg_clear(&cmd);
    json_object_put(o);
}

Test(order_check, valid_order_passes_and_request_timeout_lowers_the_deadline) {
    long long timeout = 5000;
    cr_assert_eq(check("application/json; charset=utf-8", "k-1", "1200", BODY, &timeout), 0, "%s", p.detail);
    cr_assert_eq(timeout, 1200);
    cr_assert_eq(m.nlines, 1);
    assert_order_svc_accepts("k-1");
    vx_msg_clear(&m);
    timeout = 5000;
    cr_assert_eq(check("APPLICATION/JSON", NULL, "99999", BODY, &timeout), 0, "%s", p.detail);
    cr_assert_eq(timeout, 5000, "a longer Request-Timeout does not raise the deadline");
    vx_msg_clear(&m);
}

Test(order_check, wrong_media_type_is_415_without_a_field) {
    long long timeout = 5000;
    const char *bad[] = {"text/plain", "application/jsonx", "application/jso", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(check(bad[i], "k", NULL, BODY, &timeout), -1, "%s", bad[i]);
        cr_assert_eq(p.status, 415);
        cr_assert_str_eq(p.field, "");
    }
    cr_assert_eq(check(NULL, "k", NULL, BODY, &timeout), -1);
    cr_assert_eq(p.status, 415);
}

Test(order_check, bad_request_timeout_is_400_naming_the_header) {
    const char *bad[] = {"0", "-5", "", "12ms", "1.5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long long timeout = 5000;
        cr_assert_eq(check("application/json", "k", bad[i], BODY, &timeout), -1, "%s", bad[i]);
        cr_assert_eq(p.status, 400);
        cr_assert_str_eq(p.field, "Request-Timeout");
        cr_assert_eq(timeout, 5000);
    }
}

Test(order_check, bad_body_is_400_naming_its_field_and_reason) {
    long long timeout = 5000;
    cr_assert_eq(check("application/json", "k", NULL, "{\"customer_id\":\"c1\",\"items\":[{\"product_id\":\"A\",\"quantity\":0}]}",
                       &timeout),
                 -1);
    cr_assert_eq(p.status, 400);
    cr_assert_str_eq(p.field, "items[0].quantity");
    cr_assert_str_eq(p.reason, "invalid_value");
    cr_assert_eq(check("application/json", "k", NULL, "{", &timeout), -1);
    cr_assert_str_eq(p.field, "(body)");
    cr_assert_str_eq(p.reason, "not_json");
}

/* Found by the order_http fuzz target: the key \xc3\xc3\xc3\xc3\xc3k-1 counted as 4 characters and
 * passed, the PlaceOrder carrying it was ill-formed UTF-8, and order-svc dead-lettered the order
 * the gateway had accepted (the client got 202 for an order that never existed). */
Test(order_check, idempotency_key_that_is_not_utf8_is_refused_before_it_reaches_kafka) {
    long long timeout = 5000;
    const char *bad[] = {"\xc3\xc3\xc3\xc3\xc3k-1", "k\xff", "\xed\xa0\x80", "\xc0\xaf", "abc\xe2\x82"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(check("application/json", bad[i], NULL, BODY, &timeout), -1, "key %zu", i);
        cr_assert_eq(p.status, 400);
        cr_assert_str_eq(p.field, "Idempotency-Key");
        cr_assert_eq(gw_validate_key(bad[i], &p), -1, "the cancel route checks keys the same way");
    }
}

Test(order_check, idempotency_key_is_counted_in_characters) {
    char key[4 * 129 + 1] = "";
    long long timeout = 5000;
    for (int i = 0; i < 128; i++) strcat(key, "\xf0\x9f\x93\xa6"); /* U+1F4E6, four bytes */
    cr_assert_eq(check("application/json", key, NULL, BODY, &timeout), 0, "%s", p.detail);
    assert_order_svc_accepts(key);
    vx_msg_clear(&m);
    strcat(key, "x");
    cr_assert_eq(check("application/json", key, NULL, BODY, &timeout), -1);
    cr_assert_eq(check("application/json", "", NULL, BODY, &timeout), -1);
    cr_assert_eq(gw_validate_key(NULL, &p), 0, "an absent key is made by the gateway");
}

static rd_kafka_headers_t *hdrs(const char *count, const char *source) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    rd_kafka_header_add(h, "dlq-reason", -1, "not_json", -1);
    if (count) rd_kafka_header_add(h, "redrive-count", -1, count, -1);
    if (source) rd_kafka_header_add(h, "dlq-source-topic", -1, source, -1);
    return h;
}

Test(dlq_origin, source_and_count_are_read) {
    char src[256], err[128];
    long long n = -1;
    rd_kafka_headers_t *h = hdrs("3", "inventory.commands");
    cr_assert_eq(vx_kafka_dlq_origin(h, src, sizeof(src), &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_str_eq(src, "inventory.commands");
    cr_assert_eq(n, 3);
    rd_kafka_headers_destroy(h);
    h = hdrs(NULL, "orders.commands");
    cr_assert_eq(vx_kafka_dlq_origin(h, src, sizeof(src), &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 0, "never redriven");
    rd_kafka_headers_destroy(h);
}

/* redrive-count was read with atoll: "-1000" (or "x", read as 0) let a dead letter be redriven far
 * past VX_REDRIVE_MAX. */
Test(dlq_origin, negative_or_garbled_redrive_count_is_refused) {
    const char *bad[] = {"-1000", "x", "", "1e3", " 1", "99999999999", "1\n"};
    char src[256], err[128];
    long long n;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rd_kafka_headers_t *h = hdrs(bad[i], "inventory.commands");
        cr_assert_eq(vx_kafka_dlq_origin(h, src, sizeof(src), &n, err, sizeof(err)), -1, "count \"%s\"", bad[i]);
        cr_assert(strstr(err, "redrive-count"), "%s", err);
        rd_kafka_headers_destroy(h);
    }
}

Test(dlq_origin, missing_empty_or_oversized_source_is_refused) {
    char src[16], err[128];
    long long n;
    rd_kafka_headers_t *h = hdrs("1", NULL);
    cr_assert_eq(vx_kafka_dlq_origin(h, src, sizeof(src), &n, err, sizeof(err)), -1);
    cr_assert(strstr(err, "dlq-source-topic"), "%s", err);
    rd_kafka_headers_destroy(h);
    h = hdrs("1", "");
    cr_assert_eq(vx_kafka_dlq_origin(h, src, sizeof(src), &n, err, sizeof(err)), -1);
    rd_kafka_headers_destroy(h);
    h = hdrs("1", "a-topic-name-longer-than-16");
    cr_assert_eq(vx_kafka_dlq_origin(h, src, sizeof(src), &n, err, sizeof(err)), -1);
    rd_kafka_headers_destroy(h);
    cr_assert_eq(vx_kafka_dlq_origin(NULL, src, sizeof(src), &n, err, sizeof(err)), -1, "no headers at all");
}

static rd_kafka_headers_t *cid_header(const char *v, ssize_t len) {
    rd_kafka_headers_t *h = rd_kafka_headers_new(2);
    rd_kafka_header_add(h, "correlation-id", -1, v, len);
    return h;
}

Test(correlation_id, a_uuid_passes_and_the_last_header_wins) {
    char buf[129];
    rd_kafka_headers_t *h = cid_header("0d5a3c1e-7f0b-4a44-9a55-1f1b5b0e2c11", -1);
    rd_kafka_header_add(h, "correlation-id", -1, "second", -1);
    cr_assert_str_eq(vx_kafka_correlation_id(h, buf, sizeof(buf)), "second");
    rd_kafka_headers_destroy(h);
    h = cid_header("0d5a3c1e-7f0b-4a44-9a55-1f1b5b0e2c11", -1);
    cr_assert_str_eq(vx_kafka_correlation_id(h, buf, sizeof(buf)), "0d5a3c1e-7f0b-4a44-9a55-1f1b5b0e2c11");
    rd_kafka_headers_destroy(h);
    cr_assert_null(vx_kafka_correlation_id(NULL, buf, sizeof(buf)));
}

/* A correlation id went as it came into the SQL call's JSON: ill-formed UTF-8 there makes PostgreSQL
 * refuse the call, and the command it came with was dead-lettered for its header alone. */
Test(correlation_id, a_malformed_one_is_dropped_not_passed_on) {
    char buf[129], big[200];
    const char *bad[] = {"\xc3\xc3", "a b", "tab\there", "nl\n", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        rd_kafka_headers_t *h = cid_header(bad[i], -1);
        cr_assert_null(vx_kafka_correlation_id(h, buf, sizeof(buf)), "case %zu", i);
        rd_kafka_headers_destroy(h);
    }
    rd_kafka_headers_t *h = cid_header("ab\0cd", 5);
    cr_assert_null(vx_kafka_correlation_id(h, buf, sizeof(buf)), "an embedded NUL");
    rd_kafka_headers_destroy(h);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    h = cid_header(big, -1);
    cr_assert_null(vx_kafka_correlation_id(h, buf, sizeof(buf)), "longer than the buffer: dropped, not cut");
    rd_kafka_headers_destroy(h);
}
