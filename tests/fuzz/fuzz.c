/* fuzz: the libFuzzer targets of every decoder Valerix feeds from outside, one source built once per
 * target (-DVX_FUZZ_TARGET=name, see the Makefile's fuzz section and tests/fuzz/fuzz.sh):
 *
 *   command     Kafka commands as inventory-svc and order-svc decode them (vx_msg_decode)
 *   event       inventory's events as order-svc decodes them
 *   result      OrderResults as the gateway decodes them
 *   order_http  POST /orders: its Content-Type, Idempotency-Key and Request-Timeout headers and its
 *               body, through the gateway's own checks (gateway/validate.c)
 *   headers     Kafka headers: correlation-id, idempotent-replayed, chaos-delay-ms and the dlq-* ones
 *               (vx_kafka_headers_get, vx_kafka_correlation_id, vx_kafka_dlq_origin)
 *   config      environment settings (vx_cfg_*) and KAFKA_* variables (vx_kafka_prop_from_env)
 *   chaos       VX_CRASH_POINTS specs and POST /admin/chaos bodies (vx_chaos)
 *
 * Each target calls the code the services run, never a copy, and besides the sanitizers checks what
 * must hold of every accepted input (VX_FUZZ_CHECK aborts, so libFuzzer keeps the input): a decoded
 * command re-encodes to a message that decodes to the same, an accepted order body makes a
 * PlaceOrder that order-svc accepts, a parsed setting lies in its range, a copied header fits its
 * buffer. Input formats are in the comment above each target. */
#include <json-c/json.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../gateway/validate.h"
#include "vx_chaos.h"
#include "vx_config.h"
#include "vx_kafka.h"
#include "vx_msg.h"

#define VX_FUZZ_CHECK(cond)                                                                                   \
    do {                                                                                                      \
        if (!(cond)) {                                                                                        \
            fprintf(stderr, "fuzz: %s:%d: %s does not hold\n", __FILE__, __LINE__, #cond);                    \
            abort();                                                                                          \
        }                                                                                                     \
    } while (0)

#define STR_(x) #x
#define STR(x) STR_(x)
#define TARGET_IS(name) (strcmp(STR(VX_FUZZ_TARGET), #name) == 0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A NUL-terminated copy of data[size] (stops at the first NUL, as a C string from outside would). */
static char *cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* Whether s is well-formed UTF-8: what an error detail must be, as it goes into problem+json bodies,
 * dlq-error headers and JSON log lines. */
static int text_ok(const char *s) { return vx_msg_utf8_chars(s, strlen(s)) != (size_t)-1; }

/* The canonical JSON of a decoded message, plain (no spaces): a new string, the caller's. */
static char *canonical(const vx_msg_t *m) {
    json_object *o = vx_msg_to_json(m);
    char *s = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return s;
}

/* Decodes data as one of `allowed`; when accepted, checks that its canonical form decodes again to
 * the same canonical form, and runs the helpers the services call on a decoded message. */
static void decode_round_trip(const uint8_t *data, size_t size, unsigned allowed) {
    vx_msg_t m, again;
    char err[256], hash[17], id[37], *first, *second;

    if (vx_msg_decode(&m, (const char *)data, size, allowed, err, sizeof(err))) {
        VX_FUZZ_CHECK(err[0] && !m.root);
        VX_FUZZ_CHECK(text_ok(err)); /* it becomes a dlq-error header and a log line */
        return;
    }
    VX_FUZZ_CHECK(m.type & allowed);
    VX_FUZZ_CHECK(m.nlines >= 0 && m.nlines <= VX_MSG_MAX_LINES);
    for (int i = 0; i < m.nlines; i++) VX_FUZZ_CHECK(m.lines[i].product_id && m.lines[i].quantity >= 0);
    vx_msg_order_hash(&m, hash);
    VX_FUZZ_CHECK(strlen(hash) == 16);
    if (m.idempotency_key) {
        vx_msg_order_id(m.idempotency_key, id);
        VX_FUZZ_CHECK(strlen(id) == 36);
    }
    if (m.type & (VX_MSG_INVENTORY_COMMANDS | VX_MSG_ORDER_COMMANDS)) {
        first = canonical(&m);
        VX_FUZZ_CHECK(vx_msg_decode(&again, first, strlen(first), allowed, err, sizeof(err)) == VX_MSG_OK);
        second = canonical(&again);
        VX_FUZZ_CHECK(strcmp(first, second) == 0);
        vx_msg_clear(&again);
        free(first);
        free(second);
    } else {
        json_object_put(vx_msg_lines_json(&m)); /* what the gateway shows of an OrderResult's lines */
    }
    vx_msg_clear(&m);
}

/* order_http: one byte whose bits 0, 1 and 2 say whether Content-Type, Idempotency-Key and
 * Request-Timeout are present, then those three values each ended by '\n', then the body. */
static void order_http(const uint8_t *data, size_t size) {
    const char *p, *end, *hv[3] = {NULL, NULL, NULL};
    char *copy, *line;
    long long timeout = 5000;
    gw_problem_t prob;
    vx_msg_t m, cmd;
    unsigned mask;
    char err[256];

    if (size < 1) return;
    mask = data[0];
    copy = malloc(size);
    memcpy(copy, data + 1, size - 1);
    p = copy;
    end = copy + size - 1;
    for (int i = 0; i < 3; i++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        line = (char *)p;
        if (nl < end) *(char *)nl = '\0';
        if (mask & (1u << i)) hv[i] = nl < end ? line : NULL; /* a header value is a C string */
        p = nl < end ? nl + 1 : end;
    }
    if (gw_validate_order(hv[0], hv[1], hv[2], p, (size_t)(end - p), &timeout, &m, &prob)) {
        VX_FUZZ_CHECK(prob.status == 400 || prob.status == 415);
        VX_FUZZ_CHECK(prob.title && prob.detail[0] && text_ok(prob.detail) && text_ok(prob.field));
        VX_FUZZ_CHECK(prob.status == 415 || prob.field[0]);
    } else {
        /* What the gateway sends on: order-svc must accept it (reqreply.c sends vx_msg_place_order). */
        json_object *o = vx_msg_place_order(&m, hv[1] ? hv[1] : "generated-key");
        const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
        VX_FUZZ_CHECK(timeout >= 1 && timeout <= 5000);
        VX_FUZZ_CHECK(m.type == VX_MSG_ORDER_BODY && m.customer_id && m.nlines >= 1);
        VX_FUZZ_CHECK(vx_msg_decode(&cmd, s, strlen(s), VX_MSG_ORDER_COMMANDS, err, sizeof(err)) == VX_MSG_OK);
        VX_FUZZ_CHECK(cmd.type == VX_MSG_PLACE_ORDER && cmd.nlines == m.nlines);
        vx_msg_clear(&cmd);
        json_object_put(o);
        vx_msg_clear(&m);
    }
    free(copy);
}

/* headers: records separated by '\n', each a header name, then '=' and its value (bytes, NULs
 * included); a record without '=' is a header with no value. */
static void headers(const uint8_t *data, size_t size) {
    static const struct {
        const char *name;
        size_t size; /* the buffers the services read them into */
    } reads[] = {{"correlation-id", 129}, {"idempotent-replayed", 8}, {VX_CHAOS_DELAY_HEADER, 24},
                 {"dlq-reason", 64},      {"dlq-source-topic", 256},  {"redrive-count", 24},
                 {"correlation-id", 1}};
    rd_kafka_headers_t *h = rd_kafka_headers_new(8);
    const uint8_t *p = data, *end = data + size;
    char buf[256], source[256], err[256];
    long long count;

    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p)), *eq;
        char name[128];
        if (!nl) nl = end;
        eq = memchr(p, '=', (size_t)(nl - p));
        snprintf(name, sizeof(name), "%.*s", (int)((eq ? eq : nl) - p), (const char *)p);
        if (eq)
            rd_kafka_header_add(h, name, -1, eq + 1, (ssize_t)(nl - eq - 1));
        else
            rd_kafka_header_add(h, name, -1, NULL, 0);
        p = nl < end ? nl + 1 : end;
    }
    for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
        const char *v = vx_kafka_headers_get(h, reads[i].name, buf, reads[i].size);
        VX_FUZZ_CHECK(!v || (v == buf && strlen(buf) < reads[i].size));
    }
    if (vx_kafka_correlation_id(h, buf, 129)) {
        VX_FUZZ_CHECK(buf[0] && strlen(buf) < 129);
        for (const char *c = buf; *c; c++) VX_FUZZ_CHECK(*c > 0x20 && *c < 0x7f);
    }
    if (vx_kafka_dlq_origin(h, source, sizeof(source), &count, err, sizeof(err)) == 0) {
        VX_FUZZ_CHECK(count >= 0 && source[0] && strlen(source) < sizeof(source));
    } else {
        VX_FUZZ_CHECK(err[0]);
    }
    rd_kafka_headers_destroy(h);
}

/* config: a KAFKA_* environment entry up to the first '\n', then the value of a setting. */
static void config(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    size_t n = nl ? (size_t)(nl - data) : size;
    /* The setting lives in one putenv'd buffer rewritten in place: setenv would keep every value it
       ever held (glibc never frees them), and a long run would grow without bound. */
    static char env[sizeof("VX_FUZZ_SETTING=") + 8192] = "VX_FUZZ_SETTING=";
    size_t vlen = nl ? size - n - 1 : 0;
    char *entry = cstr(data, n), *value = env + sizeof("VX_FUZZ_SETTING=") - 1;
    char prop[256], small[8], host[64], err[256];
    long long i;
    double d;
    int port;

    if (vx_kafka_prop_from_env(entry, VX_KAFKA_PRODUCER, prop, sizeof(prop))) VX_FUZZ_CHECK(prop[0] && strlen(prop) < sizeof(prop));
    if (vx_kafka_prop_from_env(entry, VX_KAFKA_CONSUMER, small, sizeof(small))) VX_FUZZ_CHECK(small[0] && strlen(small) < sizeof(small));
    if (vlen > 8192) vlen = 8192;
    memcpy(value, nl ? nl + 1 : data, vlen);
    value[vlen] = '\0';
    if (!getenv("VX_FUZZ_SETTING")) putenv(env);
    if (vx_cfg_int("VX_FUZZ_SETTING", 7, -5, 1000000, &i, err, sizeof(err)) == 0)
        VX_FUZZ_CHECK(i >= -5 && i <= 1000000);
    else
        VX_FUZZ_CHECK(err[0]);
    if (vx_cfg_double("VX_FUZZ_SETTING", 0.5, 0.01, 1.0, &d, err, sizeof(err)) == 0)
        VX_FUZZ_CHECK(d >= 0.01 && d <= 1.0);
    else
        VX_FUZZ_CHECK(err[0]);
    VX_FUZZ_CHECK(vx_cfg_str("VX_FUZZ_SETTING", "def") != NULL);
    if (vx_cfg_addr(value, host, sizeof(host), &port, err, sizeof(err)) == 0)
        VX_FUZZ_CHECK(port >= 0 && port <= 65535 && strlen(host) < sizeof(host));
    if (vx_cfg_addr(value, small, sizeof(small), &port, err, sizeof(err)) == 0) VX_FUZZ_CHECK(strlen(small) < sizeof(small));
    free(entry);
}

/* chaos: the input as a VX_CRASH_POINTS spec (up to a NUL), as a POST /admin/chaos body, and as a
 * bearer token. Each run starts from chaos switched off. */
static void chaos(const uint8_t *data, size_t size) {
    char *s = cstr(data, size), err[256];
    long long delayed;
    int armed;

    if (vx_chaos_set_points(s, err, sizeof(err)) == 0) {
        vx_chaos_counts(&delayed, &armed);
        VX_FUZZ_CHECK(armed >= 0 && armed <= 16 && (armed > 0 || !vx_chaos_armed("before_commit")));
    }
    if (vx_chaos_apply_json((const char *)data, size, err, sizeof(err)) == 0) {
        long d = vx_chaos_gremlin();
        VX_FUZZ_CHECK(d >= 0 && d <= 600000);
    } else {
        VX_FUZZ_CHECK(err[0] && text_ok(err)); /* the detail of a problem+json answer */
    }
    json_object_put(vx_chaos_state());
    VX_FUZZ_CHECK(!vx_chaos_token_ok(s) || strcmp(s, "fuzz-token") == 0);
    VX_FUZZ_CHECK(vx_chaos_set_points("", err, sizeof(err)) == 0 && vx_chaos_set_gremlin(0, 0, 0, err, sizeof(err)) == 0);
    free(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char err[256];
    (void)argc;
    (void)argv;
    if (TARGET_IS(chaos)) {
        setenv("VX_CHAOS_TOKEN", "fuzz-token", 1);
        unsetenv("VX_CRASH_POINTS");
        if (vx_chaos_init(err, sizeof(err))) {
            fprintf(stderr, "fuzz: vx_chaos_init: %s\n", err);
            abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (TARGET_IS(command)) {
        decode_round_trip(data, size, VX_MSG_INVENTORY_COMMANDS); /* inventory-svc */
        decode_round_trip(data, size, VX_MSG_ORDER_COMMANDS);     /* order-svc */
    } else if (TARGET_IS(event)) {
        decode_round_trip(data, size, VX_MSG_INVENTORY_EVENTS); /* order-svc */
    } else if (TARGET_IS(result)) {
        decode_round_trip(data, size, VX_MSG_ORDER_RESULT); /* the gateway */
    } else if (TARGET_IS(order_http)) {
        order_http(data, size);
    } else if (TARGET_IS(headers)) {
        headers(data, size);
    } else if (TARGET_IS(config)) {
        config(data, size);
    } else if (TARGET_IS(chaos)) {
        chaos(data, size);
    } else {
        fprintf(stderr, "fuzz: unknown target %s\n", STR(VX_FUZZ_TARGET));
        abort();
    }
    return 0;
}
