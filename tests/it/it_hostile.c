/* it_hostile.c - bad input, every one a clear answer: one table of hostile inputs to POST /orders
 * and to the two command topics, against the real gateway, order-svc and inventory-svc over the real
 * broker and PostgreSQL (databases inventory_hx, orders_hx).
 *
 * Each row is one input and the answer it must get: an HTTP status with the problem's reason and a
 * piece of its detail that names the problem, or a dead letter on the topic's .dlq with its
 * dlq-reason, a piece of its dlq-error, and the original key, bytes and headers. The invariant the
 * whole table proves: nothing hostile changes stock, places an order or sends a command on; each
 * Kafka row is dead-lettered exactly once; and the consumers keep going (a valid command produced
 * after the table is applied, and every group commits to the end of its topic). */
#include "harness.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define INV_DB "inventory_hx"
#define ORD_DB "orders_hx"
#define INV_ADDR "127.0.0.1:18381"
#define ORD_ADDR "127.0.0.1:18382"
#define GW_ADDR "127.0.0.1:18383"

/* Stock and holds of every product but the sentinel's, and the orders: what no row may change. */
#define SQL_STOCK_SNAPSHOT                                                                                    \
    "SELECT coalesce(string_agg(id || '=' || stock, ',' ORDER BY id), '') || ' holds=' ||"                   \
    " (SELECT count(*) FROM holds) FROM products WHERE id <> 'HX-S'"
#define SQL_ORDERS_SNAPSHOT "SELECT count(*) || ' orders' FROM orders"

static it_names run;

static void hx_init(void) { it_names_init(&run); }

TestSuite(hostile, .init = hx_init, .fini = it_test_fini);

/* ---- the table ------------------------------------------------------------------------------------ */

typedef enum { HTTP, INV, ORD } channel_t;

/* Bodies too large or too regular to write out, made at run time. */
typedef enum {
    GEN_NONE,
    GEN_OVER_CAP,     /* a valid order or command padded past 64 KiB */
    GEN_DEEP,         /* a member nested 1000 arrays deep */
    GEN_101_LINES,    /* 101 valid order lines */
    GEN_HUGE_ARRAY,   /* items: 20,000 numbers */
    GEN_UTF16,        /* a valid order or command in UTF-16LE */
} gen_t;

typedef struct {
    const char *name, *value;
} kv_t;

typedef struct row {
    const char *what; /* the hostile thing, for the failure message */
    channel_t ch;
    const char *body; /* the value; NULL with gen NONE: a Kafka tombstone */
    size_t len;       /* set by B(): literals may hold NUL bytes */
    gen_t gen;
    const char *http[4]; /* HTTP: header lines; NULL http[0]: Content-Type: application/json and a key;
                          * "X-Junk: (40000 bytes)" sends a header of that size */
    kv_t kh[3];          /* Kafka: headers (x-row is added to every row) */
    const char *key;     /* Kafka key; NULL: "hx-<row>" */
    size_t key_len;
    int status;          /* HTTP */
    const char *reason;  /* problem reason or dlq-reason, "a|b" for either; NULL: none expected */
    const char *detail;  /* a piece of the problem's detail or of dlq-error */
} row_t;

#define B(s) .body = (s), .len = sizeof(s) - 1
#define KEY(s) .key = (s), .key_len = sizeof(s) - 1
#define CT "Content-Type: application/json"

/* The valid inputs the rows are made from: each would change stock, or place an order, if accepted. */
#define ORDER(cust, pid, q) "{\"customer_id\":\"" cust "\",\"items\":[{\"product_id\":\"" pid "\",\"quantity\":" q "}]}"
#define OK_ORDER ORDER("hx", "HX-1", "1")
#define QTY(q) ORDER("hx", "HX-1", q)
#define RESTOCK(ikey, rest) "{\"type\":\"Restock\",\"idempotency_key\":\"" ikey "\",\"product_id\":\"HX-1\"" rest "}"
#define RESTOCK_Q(ikey, q) RESTOCK(ikey, ",\"quantity\":" q)
#define OK_RESTOCK RESTOCK_Q("hx-ok", "5")
#define RESERVE(ikey, items) "{\"type\":\"ReserveStock\",\"idempotency_key\":\"" ikey "\",\"order_id\":\"hx-o\",\"items\":" items "}"
#define PLACE(ikey, rest) "{\"type\":\"PlaceOrder\",\"idempotency_key\":\"" ikey "\"" rest "}"
#define LINES1 ",\"items\":[{\"product_id\":\"HX-1\",\"quantity\":1}]"
#define OK_PLACE PLACE("hx-po", ",\"customer_id\":\"c\"" LINES1)
#define C65 "ccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define K129 C65 C65 /* 130 characters */

static const row_t rows[] = {
    /* ---- POST /orders: headers -------------------------------------------------------------- */
    {"no Content-Type", HTTP, B(OK_ORDER), .http = {"Idempotency-Key: hx-h1"}, .status = 415,
     .detail = "Content-Type: application/json"},
    {"Content-Type text/plain", HTTP, B(OK_ORDER), .http = {"Content-Type: text/plain", "Idempotency-Key: hx-h2"},
     .status = 415, .detail = "Content-Type: application/json"},
    {"Content-Type application/jsonx", HTTP, B(OK_ORDER), .http = {"Content-Type: application/jsonx"}, .status = 415,
     .detail = "Content-Type: application/json"},
    {"charset=utf-16 with a UTF-16 body", HTTP, .gen = GEN_UTF16,
     .http = {"Content-Type: application/json; charset=utf-16", "Idempotency-Key: hx-h4"}, .status = 415,
     .detail = "charset=utf-16 is not accepted"},
    {"charset=latin1", HTTP, B(OK_ORDER), .http = {"Content-Type: application/json; charset=latin1"}, .status = 415,
     .detail = "charset=latin1 is not accepted"},
    {"Content-Type twice", HTTP, B(OK_ORDER), .http = {CT, "Content-Type: text/plain", "Idempotency-Key: hx-h6"},
     .status = 400, .detail = "the Content-Type header is given 2 times"},
    {"Idempotency-Key twice", HTTP, B(OK_ORDER), .http = {CT, "Idempotency-Key: hx-h7a", "Idempotency-Key: hx-h7b"},
     .status = 400, .detail = "the Idempotency-Key header is given 2 times"},
    {"Idempotency-Key empty", HTTP, B(OK_ORDER), .http = {CT, "Idempotency-Key:"}, .status = 400,
     .detail = "Idempotency-Key header must be 1 to 128 characters"},
    {"Idempotency-Key of 130 characters", HTTP, B(OK_ORDER), .http = {CT, "Idempotency-Key: " K129}, .status = 400,
     .detail = "Idempotency-Key header must be 1 to 128 characters"},
    {"Idempotency-Key with a control character", HTTP, B(OK_ORDER), .http = {CT, "Idempotency-Key: hx\x01h10"},
     .status = 400, .detail = "Idempotency-Key header must be UTF-8 text; it holds a control character"},
    {"Idempotency-Key of ill-formed UTF-8", HTTP, B(OK_ORDER), .http = {CT, "Idempotency-Key: hx\xff" "h11"},
     .status = 400, .detail = "Idempotency-Key header must be UTF-8 text; it holds ill-formed UTF-8"},
    /* the one answer libmicrohttpd gives itself, before any route: its head buffer is full */
    {"a 40,000-byte header", HTTP, B(OK_ORDER), .http = {CT, "Idempotency-Key: hx-h12", "X-Junk: (40000 bytes)"},
     .status = 431, .detail = "too big"},
    {"Request-Timeout not a number", HTTP, B(OK_ORDER), .http = {CT, "Request-Timeout: soon"}, .status = 400,
     .detail = "Request-Timeout header must be a positive number"},
    {"Request-Timeout 0", HTTP, B(OK_ORDER), .http = {CT, "Request-Timeout: 0"}, .status = 400,
     .detail = "Request-Timeout header must be a positive number"},
    /* ---- POST /orders: encodings and sizes ------------------------------------------------------ */
    {"empty body", HTTP, B(""), .status = 400, .reason = "not_json", .detail = "the message is empty"},
    {"body of blanks", HTTP, B(" \r\n\t "), .status = 400, .reason = "not_json", .detail = "the message is empty"},
    {"body over 64 KiB", HTTP, .gen = GEN_OVER_CAP, .status = 413, .detail = "larger than 65536 bytes"},
    {"ill-formed UTF-8", HTTP, B(ORDER("hx\xff", "HX-1", "1")), .status = 400, .reason = "not_json",
     .detail = "ill-formed UTF-8"},
    {"overlong UTF-8 '/'", HTTP, B(ORDER("hx\xc0\xaf", "HX-1", "1")), .status = 400, .reason = "not_json",
     .detail = "ill-formed UTF-8"},
    {"UTF-8 of a surrogate", HTTP, B(ORDER("hx\xed\xa0\x80", "HX-1", "1")), .status = 400, .reason = "not_json",
     .detail = "ill-formed UTF-8"},
    {"raw NUL byte in a string", HTTP, B(ORDER("hx\0", "HX-1", "1")), .status = 400, .reason = "not_json",
     .detail = "raw control character"},
    {"raw tab in a string", HTTP, B(ORDER("h\tx", "HX-1", "1")), .status = 400, .reason = "not_json",
     .detail = "raw control character"},
    {"escaped NUL in a string", HTTP, B(ORDER("hx\\u0000y", "HX-1", "1")), .status = 400, .reason = "invalid_value",
     .detail = "customer_id must not contain a NUL character"},
    {"lone surrogate escape", HTTP, B(ORDER("hx\\ud800", "HX-1", "1")), .status = 400, .reason = "not_json",
     .detail = "lone surrogate"},
    {"UTF-8 byte order mark", HTTP, B("\xef\xbb\xbf" OK_ORDER), .status = 400, .reason = "not_json",
     .detail = "a character JSON does not allow outside strings"},
    {"UTF-16LE body", HTTP, .gen = GEN_UTF16, .status = 400, .reason = "not_json",
     .detail = "a character JSON does not allow outside strings"},
    {"nested 1000 deep", HTTP, .gen = GEN_DEEP, .status = 400, .reason = "not_json", .detail = "nesting too deep"},
    {"101 order lines", HTTP, .gen = GEN_101_LINES, .status = 400, .reason = "invalid_value",
     .detail = "items must hold 1 to 100 lines"},
    {"items of 20,000 numbers", HTTP, .gen = GEN_HUGE_ARRAY, .status = 400, .reason = "invalid_value",
     .detail = "items must hold 1 to 100 lines"},
    /* ---- POST /orders: numbers --------------------------------------------------------------------- */
    {"quantity 1e400", HTTP, B(QTY("1e400")), .status = 400, .reason = "wrong_type|invalid_value",
     .detail = "items[0].quantity must be an integer"},
    {"quantity -0", HTTP, B(QTY("-0")), .status = 400, .reason = "invalid_value",
     .detail = "items[0].quantity must be an integer from 1 to 1000000"},
    {"quantity 1.5", HTTP, B(QTY("1.5")), .status = 400, .reason = "wrong_type",
     .detail = "items[0].quantity must be an integer"},
    {"quantity 2^63", HTTP, B(QTY("9223372036854775808")), .status = 400, .reason = "invalid_value",
     .detail = "items[0].quantity must be an integer from 1 to 1000000"},
    {"quantity -2^63-1", HTTP, B(QTY("-9223372036854775809")), .status = 400, .reason = "invalid_value",
     .detail = "items[0].quantity must be an integer from 1 to 1000000"},
    {"quantity with a leading zero", HTTP, B(QTY("01")), .status = 400, .reason = "not_json", .detail = "not JSON"},
    {"quantity NaN", HTTP, B(QTY("NaN")), .status = 400, .reason = "not_json", .detail = "a bare word"},
    {"quantity -Infinity", HTTP, B(QTY("-Infinity")), .status = 400, .reason = "not_json", .detail = "a bare word"},
    {"quantity in hex", HTTP, B(QTY("0x10")), .status = 400, .reason = "not_json", .detail = "a bare word"},
    {"quantity 1. (no digit after the point)", HTTP, B(QTY("1.")), .status = 400, .reason = "not_json",
     .detail = "a number JSON does not allow"},
    {"quantity +1", HTTP, B(QTY("+1")), .status = 400, .reason = "not_json", .detail = "not JSON"},
    {"quantity \"1\"", HTTP, B(QTY("\"1\"")), .status = 400, .reason = "wrong_type",
     .detail = "items[0].quantity must be an integer"},
    /* ---- POST /orders: members and types ------------------------------------------------------ */
    {"customer_id twice", HTTP, B("{\"customer_id\":\"hx\",\"customer_id\":\"other\",\"items\":[{\"product_id\":\"HX-1\",\"quantity\":1}]}"),
     .status = 400, .reason = "invalid_value", .detail = "customer_id appears twice"},
    {"quantity twice in a line", HTTP, B(QTY("1,\"quantity\":2")), .status = 400, .reason = "invalid_value",
     .detail = "items[0].quantity appears twice"},
    {"a member twice, once escaped", HTTP, B(QTY("1,\"quan\\u0074ity\":2")), .status = 400,
     .reason = "invalid_value", .detail = "items[0].quantity appears twice"},
    {"no customer_id", HTTP, B("{\"items\":[{\"product_id\":\"HX-1\",\"quantity\":1}]}"), .status = 400,
     .reason = "missing_field", .detail = "missing field customer_id"},
    {"items an object", HTTP, B("{\"customer_id\":\"hx\",\"items\":{\"product_id\":\"HX-1\",\"quantity\":1}}"),
     .status = 400, .reason = "wrong_type", .detail = "items must be an array"},
    {"a line a number", HTTP, B("{\"customer_id\":\"hx\",\"items\":[7]}"), .status = 400, .reason = "wrong_type",
     .detail = "items[0] must be an object"},
    {"customer_id of 65 characters", HTTP, B(ORDER(C65, "HX-1", "1")), .status = 400, .reason = "invalid_value",
     .detail = "customer_id must be a string of 1 to 64 characters"},
    {"product_id an array", HTTP, B("{\"customer_id\":\"hx\",\"items\":[{\"product_id\":[\"HX-1\"],\"quantity\":1}]}"),
     .status = 400, .reason = "wrong_type", .detail = "items[0].product_id must be a string"},
    {"a JSON array", HTTP, B("[" OK_ORDER "]"), .status = 400, .reason = "wrong_type",
     .detail = "the message must be a JSON object"},
    {"JSON null", HTTP, B("null"), .status = 400, .reason = "null_value", .detail = "JSON null"},
    {"bytes after the object", HTTP, B(OK_ORDER "x"), .status = 400, .reason = "not_json", .detail = "not JSON"},
    {"a comment", HTTP, B("{\"customer_id\":\"hx\" /* hi */,\"items\":[{\"product_id\":\"HX-1\",\"quantity\":1}]}"),
     .status = 400, .reason = "not_json", .detail = "not JSON"},

    /* ---- inventory.commands: encodings and sizes ---------------------------------------------- */
    {"truncated JSON", INV, B("{\"type\":\"Restock\",\"idempotency_key\":\"hx-i1\",\"product_id\":\"HX-1\",\"quantity\":5"),
     .reason = "not_json", .detail = "not JSON"},
    {"a tombstone", INV, .reason = "null_value", .detail = "tombstone"},
    {"an empty value", INV, B(""), .reason = "not_json", .detail = "the message is empty"},
    {"a value over 64 KiB", INV, .gen = GEN_OVER_CAP, .reason = "too_large", .detail = "the limit is 65536"},
    {"ill-formed UTF-8", INV, B(RESTOCK("hx-i5", ",\"quantity\":5,\"name\":\"x\xff\"")), .reason = "not_json",
     .detail = "ill-formed UTF-8"},
    {"overlong UTF-8", INV, B(RESTOCK("hx-i6", ",\"quantity\":5,\"name\":\"x\xc0\xaf\"")), .reason = "not_json",
     .detail = "ill-formed UTF-8"},
    {"a code point past U+10FFFF", INV, B(RESTOCK("hx-i7", ",\"quantity\":5,\"name\":\"\xf4\x90\x80\x80\"")),
     .reason = "not_json", .detail = "ill-formed UTF-8"},
    {"a truncated UTF-8 sequence", INV, B(RESTOCK("hx-i8", ",\"quantity\":5,\"name\":\"x\xe2\x82\"")),
     .reason = "not_json", .detail = "ill-formed UTF-8"},
    {"raw NUL byte", INV, B(RESTOCK("hx-i9", ",\"quantity\":5,\"name\":\"x\0y\"")), .reason = "not_json",
     .detail = "raw control character"},
    {"raw escape character", INV, B(RESTOCK("hx-i10", ",\"quantity\":5,\"name\":\"\x1b[31m\"")),
     .reason = "not_json", .detail = "raw control character"},
    {"escaped NUL in the key", INV, B(RESTOCK_Q("hx-i11\\u0000", "5")), .reason = "invalid_value",
     .detail = "idempotency_key must not contain a NUL character"},
    {"lone low surrogate escape", INV, B(RESTOCK("hx-i12", ",\"quantity\":5,\"name\":\"\\udc00\"")),
     .reason = "not_json", .detail = "lone surrogate"},
    {"UTF-8 byte order mark", INV, B("\xef\xbb\xbf" RESTOCK_Q("hx-i13", "5")), .reason = "not_json",
     .detail = "a character JSON does not allow outside strings"},
    {"UTF-16LE value", INV, .gen = GEN_UTF16, .reason = "not_json",
     .detail = "a character JSON does not allow outside strings"},
    {"nested 1000 deep", INV, .gen = GEN_DEEP, .reason = "not_json", .detail = "nesting too deep"},
    {"101 lines", INV, .gen = GEN_101_LINES, .reason = "invalid_value", .detail = "items must hold 1 to 100 lines"},
    {"items of 20,000 numbers", INV, .gen = GEN_HUGE_ARRAY, .reason = "invalid_value",
     .detail = "items must hold 1 to 100 lines"},
    /* ---- inventory.commands: numbers ---------------------------------------------------------- */
    {"quantity 1e400", INV, B(RESTOCK_Q("hx-i18", "1e400")), .reason = "wrong_type|invalid_value",
     .detail = "quantity must be an integer"},
    {"quantity -0", INV, B(RESTOCK_Q("hx-i19", "-0")), .reason = "invalid_value",
     .detail = "quantity must be an integer from 1 to 1000000"},
    {"quantity 1.5", INV, B(RESTOCK_Q("hx-i20", "1.5")), .reason = "wrong_type", .detail = "quantity must be an integer"},
    {"quantity 2^63", INV, B(RESTOCK_Q("hx-i21", "9223372036854775808")), .reason = "invalid_value",
     .detail = "quantity must be an integer from 1 to 1000000"},
    {"quantity 10^30", INV, B(RESTOCK_Q("hx-i22", "1000000000000000000000000000000")), .reason = "invalid_value",
     .detail = "quantity must be an integer from 1 to 1000000"},
    {"quantity 007", INV, B(RESTOCK_Q("hx-i23", "007")), .reason = "not_json", .detail = "not JSON"},
    {"quantity NaN", INV, B(RESTOCK_Q("hx-i24", "NaN")), .reason = "not_json", .detail = "a bare word"},
    {"quantity Infinity", INV, B(RESTOCK_Q("hx-i25", "Infinity")), .reason = "not_json", .detail = "a bare word"},
    {"quantity 0x10", INV, B(RESTOCK_Q("hx-i26", "0x10")), .reason = "not_json", .detail = "a bare word"},
    {"quantity 5.", INV, B(RESTOCK_Q("hx-i27", "5.")), .reason = "not_json",
     .detail = "a number JSON does not allow"},
    {"quantity \"5\"", INV, B(RESTOCK_Q("hx-i28", "\"5\"")), .reason = "wrong_type",
     .detail = "quantity must be an integer"},
    {"quantity true", INV, B(RESTOCK_Q("hx-i29", "true")), .reason = "wrong_type", .detail = "quantity must be an integer"},
    {"quantity 1000001", INV, B(RESTOCK_Q("hx-i30", "1000001")), .reason = "invalid_value",
     .detail = "quantity must be an integer from 1 to 1000000"},
    /* ---- inventory.commands: members, types and message types ---------------------------------- */
    {"quantity twice", INV, B(RESTOCK_Q("hx-i31", "5,\"quantity\":-5")), .reason = "invalid_value",
     .detail = "quantity appears twice"},
    {"type twice", INV, B(RESTOCK_Q("hx-i32", "5,\"type\":\"ReleaseStock\",\"order_id\":\"o\"")),
     .reason = "invalid_value", .detail = "type appears twice"},
    {"a member twice, once escaped", INV, B(RESTOCK_Q("hx-i33", "5,\"quan\\u0074ity\":6")), .reason = "invalid_value",
     .detail = "quantity appears twice"},
    {"no type", INV, B("{\"idempotency_key\":\"hx-i34\",\"product_id\":\"HX-1\",\"quantity\":5}"),
     .reason = "missing_field", .detail = "missing field type"},
    {"type a number", INV, B("{\"type\":7,\"idempotency_key\":\"hx-i35\",\"product_id\":\"HX-1\",\"quantity\":5}"),
     .reason = "wrong_type", .detail = "type must be a string"},
    {"unknown type (a version suffix)", INV,
     B("{\"type\":\"RestockV2\",\"idempotency_key\":\"hx-i36\",\"product_id\":\"HX-1\",\"quantity\":5}"),
     .reason = "unknown_type", .detail = "unknown type \"RestockV2\""},
    {"an orders type on inventory.commands", INV, B(PLACE("hx-i37", ",\"customer_id\":\"c\"" LINES1)),
     .reason = "unknown_type", .detail = "unknown type \"PlaceOrder\" on this topic"},
    {"type with an escaped NUL", INV,
     B("{\"type\":\"Restock\\u0000\",\"idempotency_key\":\"hx-i38\",\"product_id\":\"HX-1\",\"quantity\":5}"),
     .reason = "unknown_type", .detail = "NUL"},
    {"product_id of 65 characters", INV,
     B("{\"type\":\"Restock\",\"idempotency_key\":\"hx-i39\",\"product_id\":\"" C65 "\",\"quantity\":5}"),
     .reason = "invalid_value", .detail = "product_id must be a string of 1 to 64 characters"},
    {"product_id a number", INV, B("{\"type\":\"Restock\",\"idempotency_key\":\"hx-i40\",\"product_id\":42,\"quantity\":5}"),
     .reason = "wrong_type", .detail = "product_id must be a string"},
    {"ReserveStock without order_id", INV,
     B("{\"type\":\"ReserveStock\",\"idempotency_key\":\"hx-i41\",\"items\":[{\"product_id\":\"HX-1\",\"quantity\":1}]}"),
     .reason = "missing_field", .detail = "missing field order_id"},
    {"ReserveStock items an object", INV, B(RESERVE("hx-i42", "{\"product_id\":\"HX-1\",\"quantity\":1}")),
     .reason = "wrong_type", .detail = "items must be an array"},
    {"ReserveStock line a string", INV, B(RESERVE("hx-i43", "[\"HX-1\"]")), .reason = "wrong_type",
     .detail = "items[0] must be an object"},
    {"ReleaseStock order_id an array", INV, B("{\"type\":\"ReleaseStock\",\"idempotency_key\":\"hx-i44\",\"order_id\":[]}"),
     .reason = "wrong_type", .detail = "order_id must be a string"},
    {"idempotency_key of 130 characters", INV, B(RESTOCK_Q(K129, "5")), .reason = "invalid_value",
     .detail = "idempotency_key must be a string of 1 to 128 characters"},
    {"a JSON array", INV, B("[" OK_RESTOCK "]"), .reason = "wrong_type", .detail = "the message must be a JSON object"},
    {"JSON null", INV, B("null"), .reason = "null_value", .detail = "JSON null"},
    {"two JSON values", INV, B(RESTOCK_Q("hx-i48", "5") " {}"), .reason = "not_json", .detail = "not JSON"},
    {"single quotes", INV, B("{'type':'Restock','idempotency_key':'hx-i49','product_id':'HX-1','quantity':5}"),
     .reason = "not_json", .detail = "a character JSON does not allow outside strings"},
    {"a trailing comma", INV, B(RESTOCK_Q("hx-i50", "5,")), .reason = "not_json", .detail = "not JSON"},
    /* ---- inventory.commands: headers and keys (the bodies are valid: only the header is wrong) ---- */
    {"correlation-id of ill-formed UTF-8", INV, B(RESTOCK_Q("hx-i51", "5")), .kh = {{"correlation-id", "c\xff"}},
     .reason = "invalid_value", .detail = "the correlation-id header must be UTF-8 text; it holds ill-formed UTF-8"},
    {"correlation-id with a newline", INV, B(RESTOCK_Q("hx-i52", "5")), .kh = {{"correlation-id", "c\nInjected: 1"}},
     .reason = "invalid_value", .detail = "it holds a control character"},
    {"correlation-id of 200 bytes", INV, B(RESTOCK_Q("hx-i53", "5")), .kh = {{"correlation-id", C65 C65 C65 "ccccc"}},
     .reason = "invalid_value", .detail = "the correlation-id header must be 1 to 128 bytes, not 200"},
    {"correlation-id twice", INV, B(RESTOCK_Q("hx-i54", "5")),
     .kh = {{"correlation-id", "c-1"}, {"correlation-id", "c-2"}}, .reason = "invalid_value",
     .detail = "the correlation-id header is given 2 times"},
    {"correlation-id empty", INV, B(RESTOCK_Q("hx-i55", "5")), .kh = {{"correlation-id", ""}},
     .reason = "invalid_value", .detail = "the correlation-id header must be 1 to 128 bytes, not 0"},
    {"forged dlq-* headers on a bad value", INV, B("{not json"),
     .kh = {{"dlq-reason", "processing_error"}, {"dlq-source-topic", "orders.commands"}, {"dlq-x", "1"}},
     .reason = "not_json", .detail = "not JSON"},
    {"an empty key", INV, B("{not json"), KEY(""), .reason = "not_json", .detail = "not JSON"},
    {"a binary key", INV, B("{not json"), KEY("k\0\xff\x01|"), .reason = "not_json", .detail = "not JSON"},

    /* ---- orders.commands ---------------------------------------------------------------------- */
    {"PlaceOrder without customer_id", ORD, B(PLACE("hx-o1", LINES1)), .reason = "missing_field",
     .detail = "missing field customer_id"},
    {"PlaceOrder with no lines", ORD, B(PLACE("hx-o2", ",\"customer_id\":\"c\",\"items\":[]")),
     .reason = "invalid_value", .detail = "items must hold 1 to 100 lines"},
    {"PlaceOrder customer_id of 65 characters", ORD, B(PLACE("hx-o3", ",\"customer_id\":\"" C65 "\"" LINES1)),
     .reason = "invalid_value", .detail = "customer_id must be a string of 1 to 64 characters"},
    {"PlaceOrder quantity 0", ORD,
     B(PLACE("hx-o4", ",\"customer_id\":\"c\",\"items\":[{\"product_id\":\"HX-1\",\"quantity\":0}]")),
     .reason = "invalid_value", .detail = "items[0].quantity must be an integer from 1 to 1000000"},
    {"PlaceOrder product_id twice", ORD,
     B(PLACE("hx-o5", ",\"customer_id\":\"c\",\"items\":[{\"product_id\":\"HX-1\",\"product_id\":\"HX-2\",\"quantity\":1}]")),
     .reason = "invalid_value", .detail = "items[0].product_id appears twice"},
    {"PlaceOrder order_id a number", ORD, B(PLACE("hx-o6", ",\"order_id\":5,\"customer_id\":\"c\"" LINES1)),
     .reason = "wrong_type", .detail = "order_id must be a string"},
    {"CancelOrder without order_id", ORD, B("{\"type\":\"CancelOrder\",\"idempotency_key\":\"hx-o7\"}"),
     .reason = "missing_field", .detail = "missing field order_id"},
    {"an inventory type on orders.commands", ORD, B(RESERVE("hx-o8", "[{\"product_id\":\"HX-1\",\"quantity\":1}]")),
     .reason = "unknown_type", .detail = "unknown type \"ReserveStock\" on this topic"},
    {"PlaceOrder of ill-formed UTF-8", ORD, B(PLACE("hx-o9", ",\"customer_id\":\"c\xfe\"" LINES1)),
     .reason = "not_json", .detail = "ill-formed UTF-8"},
    {"PlaceOrder with a lone surrogate escape", ORD, B(PLACE("hx-o10", ",\"customer_id\":\"\\ud83d\"" LINES1)),
     .reason = "not_json", .detail = "lone surrogate"},
    {"a tombstone", ORD, .reason = "null_value", .detail = "tombstone"},
    {"a value over 64 KiB", ORD, .gen = GEN_OVER_CAP, .reason = "too_large", .detail = "the limit is 65536"},
    {"nested 1000 deep", ORD, .gen = GEN_DEEP, .reason = "not_json", .detail = "nesting too deep"},
    {"PlaceOrder quantity 1e400", ORD,
     B(PLACE("hx-o14", ",\"customer_id\":\"c\",\"items\":[{\"product_id\":\"HX-1\",\"quantity\":1e400}]")),
     .reason = "wrong_type|invalid_value", .detail = "items[0].quantity must be an integer"},
    {"a valid PlaceOrder with a bad correlation-id", ORD, B(OK_PLACE), .kh = {{"correlation-id", "\x01\x02"}},
     .reason = "invalid_value", .detail = "it holds a control character"},
};

#define NROWS (sizeof rows / sizeof rows[0])

/* ---- making a row's input ------------------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t n, cap;
} buf_t;

static void put(buf_t *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        cr_assert(b->s != NULL, "out of memory");
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void puts_(buf_t *b, const char *s) { put(b, s, strlen(s)); }

/* The valid input a generated row starts from, without its closing brace. */
static const char *open_base(channel_t ch) {
    return ch == HTTP  ? "{\"customer_id\":\"hx\",\"items\":[{\"product_id\":\"HX-1\",\"quantity\":1}]"
           : ch == INV ? "{\"type\":\"Restock\",\"idempotency_key\":\"hx-gen\",\"product_id\":\"HX-1\",\"quantity\":5"
                       : "{\"type\":\"PlaceOrder\",\"idempotency_key\":\"hx-gen\",\"customer_id\":\"c\","
                         "\"items\":[{\"product_id\":\"HX-1\",\"quantity\":1}]";
}

/* The row's value or body into *b (b->s NULL for a tombstone). */
static void make_input(const row_t *r, buf_t *b) {
    memset(b, 0, sizeof *b);
    switch (r->gen) {
    case GEN_NONE:
        if (r->body) put(b, r->body, r->len);
        return;
    case GEN_OVER_CAP:
        puts_(b, open_base(r->ch));
        puts_(b, ",\"pad\":\"");
        while (b->n < 70000) puts_(b, "pppppppppppppppppppppppppppppppppppppppp");
        puts_(b, "\"}");
        return;
    case GEN_DEEP:
        puts_(b, open_base(r->ch));
        puts_(b, ",\"deep\":");
        for (int i = 0; i < 1000; i++) puts_(b, "[");
        for (int i = 0; i < 1000; i++) puts_(b, "]");
        puts_(b, "}");
        return;
    case GEN_101_LINES:
        puts_(b, r->ch == HTTP ? "{\"customer_id\":\"hx\",\"items\":["
                               : "{\"type\":\"ReserveStock\",\"idempotency_key\":\"hx-gen\",\"order_id\":\"hx-o\",\"items\":[");
        for (int i = 0; i < 101; i++) puts_(b, i ? ",{\"product_id\":\"HX-1\",\"quantity\":1}" : "{\"product_id\":\"HX-1\",\"quantity\":1}");
        puts_(b, "]}");
        return;
    case GEN_HUGE_ARRAY:
        puts_(b, r->ch == HTTP ? "{\"customer_id\":\"hx\",\"items\":["
                               : "{\"type\":\"ReserveStock\",\"idempotency_key\":\"hx-gen\",\"order_id\":\"hx-o\",\"items\":[");
        for (int i = 0; i < 20000; i++) puts_(b, i ? ",1" : "1");
        puts_(b, "]}");
        return;
    case GEN_UTF16: {
        buf_t a = {0};
        puts_(&a, open_base(r->ch));
        puts_(&a, "}");
        put(b, "\xff\xfe", 2); /* its byte order mark */
        for (size_t i = 0; i < a.n; i++) put(b, (char[]){a.s[i], '\0'}, 2);
        free(a.s);
        return;
    }
    }
}

/* ---- checking the answers -------------------------------------------------------------------------- */

/* Whether got is one of the '|'-separated names in want. */
static bool one_of(const char *got, const char *want) {
    size_t n = strlen(got);
    for (const char *w = want; w && *w;) {
        size_t k = strcspn(w, "|");
        if (k == n && strncmp(w, got, n) == 0) return true;
        w += k + (w[k] == '|');
    }
    return false;
}

static const char *jstr(json_object *o, const char *k) {
    json_object *v;
    return o && json_object_object_get_ex(o, k, &v) && json_object_is_type(v, json_type_string)
               ? json_object_get_string(v) : NULL;
}

/* Sends one HTTP row; returns NULL when it got its answer, else what was wrong (static). */
static const char *http_row(size_t i, const row_t *r) {
    static char why[1024];
    char err[IT_ERR_SIZE], key[64], *junk = NULL;
    const char *hdrs[8] = {0}; /* two defaults or up to four of the row's, then NULL */
    size_t nh = 0;
    buf_t body;
    vt_http_resp resp;

    make_input(r, &body);
    snprintf(key, sizeof key, "Idempotency-Key: hx-h%zu", i);
    if (!r->http[0]) {
        hdrs[nh++] = CT;
        hdrs[nh++] = key;
    }
    for (size_t k = 0; k < 4 && r->http[k]; k++) {
        if (strncmp(r->http[k], "X-Junk: ", 8) == 0) {
            junk = malloc(40009);
            cr_assert(junk != NULL);
            memcpy(junk, "X-Junk: ", 8);
            memset(junk + 8, 'j', 40000);
            junk[40008] = '\0';
            hdrs[nh++] = junk;
        } else {
            hdrs[nh++] = r->http[k];
        }
    }
    vt_http_req req = {.method = "POST", .path = "/orders", .headers = hdrs, .body = body.s ? body.s : "",
                       .body_len = body.n, .parse_json = true};
    int rc = it_http(GW_ADDR, &req, &resp, err, sizeof err);
    free(body.s);
    free(junk);
    if (rc) return snprintf(why, sizeof why, "no answer: %s", err), why;

    const char *ct = vt_http_header(&resp, "Content-Type"), *detail = jstr(resp.json, "detail"),
               *reason = jstr(resp.json, "reason");
    why[0] = '\0';
    if (resp.status != r->status)
        snprintf(why, sizeof why, "status %d, want %d", resp.status, r->status);
    else if (r->status == 431) { /* libmicrohttpd's own answer: its HTML says what is too big */
        if (!strstr(resp.body, r->detail)) snprintf(why, sizeof why, "431 without \"%s\"", r->detail);
    } else if (!ct || strncasecmp(ct, "application/problem+json", 24) != 0)
        snprintf(why, sizeof why, "Content-Type %s, want application/problem+json", ct ? ct : "(none)");
    else if (!detail || !strstr(detail, r->detail))
        snprintf(why, sizeof why, "detail does not say \"%s\"", r->detail);
    else if (r->reason && !(reason && one_of(reason, r->reason)))
        snprintf(why, sizeof why, "reason %s, want %s", reason ? reason : "(none)", r->reason);
    else if (!r->reason && reason)
        snprintf(why, sizeof why, "reason %s, want none", reason);
    if (why[0]) {
        size_t n = strlen(why);
        snprintf(why + n, sizeof why - n, "; body %.300s", resp.body);
    }
    vt_http_resp_clear(&resp);
    return why[0] ? why : NULL;
}

static const char *topic_of(const row_t *r) { return r->ch == INV ? run.inventory_commands : run.orders_commands; }

/* The letters carrying x-row: i. */
static size_t letters_of(const it_collector_t *dlq, size_t i, const it_msg **first) {
    char want[16];
    size_t n = 0;
    snprintf(want, sizeof want, "%zu", i);
    *first = NULL;
    for (size_t k = 0; k < it_collector_count(dlq); k++) {
        const it_msg *m = it_collector_at(dlq, k);
        const char *x = it_msg_header_get(m, "x-row", NULL);
        if (x && strcmp(x, want) == 0 && n++ == 0) *first = m;
    }
    return n;
}

static size_t header_count(const it_msg *m, const char *name) {
    size_t n = 0;
    for (size_t k = 0; k < m->n_headers; k++) n += strcmp(m->headers[k].name, name) == 0;
    return n;
}

/* Checks the one dead letter of Kafka row i; returns NULL when it is right, else what is wrong. */
static const char *kafka_row(size_t i, const row_t *r, const it_collector_t *dlq) {
    static char why[1024];
    const it_msg *m;
    size_t n = letters_of(dlq, i, &m), want_key_len = r->key ? r->key_len : 0, hi = 0;
    char dflt_key[32];
    const char *want_key = r->key, *reason, *error, *src;
    buf_t value;

    if (n != 1) return snprintf(why, sizeof why, "%zu dead letters, want exactly 1", n), why;
    if (!want_key) {
        want_key_len = (size_t)snprintf(dflt_key, sizeof dflt_key, "hx-%zu", i);
        want_key = dflt_key;
    }
    make_input(r, &value);
    reason = it_msg_header_get(m, "dlq-reason", NULL);
    error = it_msg_header_get(m, "dlq-error", NULL);
    src = it_msg_header_get(m, "dlq-source-topic", NULL);
    why[0] = '\0';
    if (!reason || !one_of(reason, r->reason))
        snprintf(why, sizeof why, "dlq-reason %s, want %s", reason ? reason : "(none)", r->reason);
    else if (header_count(m, "dlq-reason") != 1 || header_count(m, "dlq-source-topic") != 1 || header_count(m, "dlq-x"))
        snprintf(why, sizeof why, "the letter carries dlq-* headers it did not write");
    else if (!error || !strstr(error, r->detail))
        snprintf(why, sizeof why, "dlq-error \"%s\" does not say \"%s\"", error ? error : "(none)", r->detail);
    else if (!src || strcmp(src, topic_of(r)) != 0)
        snprintf(why, sizeof why, "dlq-source-topic %s, want %s", src ? src : "(none)", topic_of(r));
    else if (!m->key || m->key_len != want_key_len || memcmp(m->key, want_key, want_key_len) != 0)
        snprintf(why, sizeof why, "the key is not the original's (%zu bytes, want %zu)", m->key_len, want_key_len);
    else if ((m->value == NULL) != (value.s == NULL) || m->value_len != value.n ||
             (value.n && memcmp(m->value, value.s, value.n) != 0))
        snprintf(why, sizeof why, "the value is not the original's bytes (%zu bytes, want %zu)", m->value_len, value.n);
    free(value.s);
    if (why[0]) return why;
    /* the original headers, in order, before the dlq-* ones the service added */
    for (size_t k = 0; k < 3 && r->kh[k].name; k++) {
        if (strncmp(r->kh[k].name, "dlq-", 4) == 0) continue;
        size_t len = strlen(r->kh[k].value);
        for (; hi < m->n_headers && strncmp(m->headers[hi].name, "dlq-", 4) == 0; hi++) {}
        if (hi == m->n_headers || strcmp(m->headers[hi].name, r->kh[k].name) != 0 || !m->headers[hi].value ||
            m->headers[hi].size != len || memcmp(m->headers[hi].value, r->kh[k].value, len) != 0)
            return snprintf(why, sizeof why, "header %s is not kept as sent", r->kh[k].name), why;
        hi++;
    }
    return NULL;
}

/* ---- the stack ------------------------------------------------------------------------------------- */

typedef struct {
    char s[16][512];
    const char *v[17];
    size_t n;
} env_t;

static void env(env_t *e, const char *name, const char *value) {
    cr_assert(e->n < 16);
    snprintf(e->s[e->n], sizeof e->s[e->n], "%s=%s", name, value);
    e->v[e->n] = e->s[e->n];
    e->v[++e->n] = NULL;
}

/* A service of this suite on the run's topics; waits until it answers /ready. */
static it_proc_t *spawn(const char *svc, const char *addr, const char *db_var, const char *db,
                        const char *addr_var) {
    char err[IT_ERR_SIZE], exe[64], url[256], log_name[128];
    env_t e = {0};
    it_proc_t *p = NULL;
    env(&e, "KAFKA_BOOTSTRAP_SERVERS", IT_KAFKA_BOOTSTRAP);
    env(&e, "KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "10000");
    env(&e, "ORDERS_COMMANDS_TOPIC", run.orders_commands);
    env(&e, "ORDERS_RESULTS_TOPIC", run.orders_results);
    env(&e, "ORDERS_DLQ_TOPIC", run.orders_dlq);
    env(&e, "INVENTORY_COMMANDS_TOPIC", run.inventory_commands);
    env(&e, "INVENTORY_EVENTS_TOPIC", run.inventory_events);
    env(&e, "INVENTORY_DLQ_TOPIC", run.inventory_dlq);
    env(&e, "INVENTORY_GROUP_ID", run.inventory_group);
    env(&e, "ORDERS_GROUP_ID", run.orders_group);
    env(&e, "VX_CRASH_POINTS", "");
    env(&e, "VX_GREMLIN_DELAY_MS", "0");
    env(&e, "ORDERS_URL", "http://" ORD_ADDR);
    env(&e, "INVENTORY_URL", "http://" INV_ADDR);
    env(&e, addr_var, addr);
    if (db_var) {
        it_pg_url(url, sizeof url, db);
        env(&e, db_var, url);
    }
    snprintf(exe, sizeof exe, "build/%s", svc);
    snprintf(log_name, sizeof log_name, "%s.%s", criterion_current_test->name, svc);
    cr_assert(!vt_http_port_in_use(addr), "%s is taken by another process", addr);
    IT_OK(it_proc_spawn(&p, log_name, exe, e.v, err, sizeof err), err);
    IT_OK(it_proc_wait_http(p, addr, "/ready", IT_WAIT_MS, err, sizeof err), err);
    return p;
}

static char *pg_text(const char *db, const char *sql) {
    char err[IT_ERR_SIZE];
    PGconn *c = NULL;
    IT_OK(it_pg_connect(&c, db, err, sizeof err), err);
    PGresult *res = PQexec(c, sql);
    cr_assert(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1, "%s: %s", sql, PQerrorMessage(c));
    char *s = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(c);
    return s;
}

static void produce(it_producer_t *p, const char *topic, const char *key, size_t key_len, const char *value,
                    size_t len, const it_header *h, size_t nh) {
    char err[IT_ERR_SIZE];
    IT_OK(it_produce(p, topic, key, key_len, value, len, h, nh, err, sizeof err), err);
}

static const it_msg *await(it_collector_t *c, const char *field, const char *value) {
    char err[IT_ERR_SIZE];
    IT_OK(it_collector_wait_str(c, field, value, 1, IT_WAIT_MS, err, sizeof err), err);
    return it_collector_find_str(c, field, value);
}

static void await_lag_zero(const char *group, const char *topic) {
    char err[IT_ERR_SIZE];
    int64_t lag = -1;
    for (int64_t end = vt_mono_ms() + IT_WAIT_MS; vt_mono_ms() < end; vt_sleep_ms(200))
        if (it_kafka_group_lag(group, topic, &lag, err, sizeof err) == 0 && lag == 0) return;
    cr_assert_fail("group %s still has %" PRId64 " messages of %s to commit: a stalled consumer?", group, lag, topic);
}

/* Messages of c that are none of the table's rows and not the sentinel (key `sentinel`). */
static size_t strangers(const it_collector_t *c, const char *sentinel) {
    size_t n = 0;
    for (size_t k = 0; k < it_collector_count(c); k++) {
        const it_msg *m = it_collector_at(c, k);
        if (it_msg_header_get(m, "x-row", NULL)) continue;
        if (sentinel && m->key && strcmp(m->key, sentinel) == 0) continue;
        if (sentinel && it_msg_str(m, "idempotency_key") && strcmp(it_msg_str(m, "idempotency_key"), sentinel) == 0)
            continue;
        fprintf(stderr, "hostile: unexpected message on %s: %.200s\n", it_collector_topic(c), m->value ? m->value : "(null)");
        n++;
    }
    return n;
}

/* ---- the test ------------------------------------------------------------------------------------------ */

Test(hostile, every_bad_input_gets_a_clear_answer_and_changes_nothing) {
    char err[IT_ERR_SIZE];
    size_t nhttp = 0, ninv = 0, nord = 0, failed = 0;
    it_test_begin();

    it_proc_t *inv = spawn("inventory-svc", INV_ADDR, "INVENTORY_DB", INV_DB, "INVENTORY_HTTP_ADDR");
    it_proc_t *ord = spawn("order-svc", ORD_ADDR, "ORDERS_DB", ORD_DB, "ORDERS_HTTP_ADDR");
    it_proc_t *gw = spawn("gateway", GW_ADDR, NULL, NULL, "GATEWAY_HTTP_ADDR");
    it_collector_t *events = it_collect(run.inventory_events, VT_FROM_END, NULL);
    it_collector_t *results = it_collect(run.orders_results, VT_FROM_END, NULL);
    it_producer_t *prod = NULL;
    IT_OK(it_producer_new(&prod, NULL, err, sizeof err), err);

    /* stock to protect, and one order through the whole path: every group has its partitions */
    static const char r1[] = "{\"type\":\"Restock\",\"idempotency_key\":\"hx-seed-1\",\"product_id\":\"HX-1\",\"quantity\":100}";
    static const char r2[] = "{\"type\":\"Restock\",\"idempotency_key\":\"hx-seed-2\",\"product_id\":\"HX-2\",\"quantity\":100}";
    produce(prod, run.inventory_commands, "hx-seed-1", 9, r1, sizeof r1 - 1, NULL, 0);
    produce(prod, run.inventory_commands, "hx-seed-2", 9, r2, sizeof r2 - 1, NULL, 0);
    IT_OK(it_producer_flush(prod, IT_WAIT_MS, err, sizeof err), err);
    await(events, "idempotency_key", "hx-seed-1");
    await(events, "idempotency_key", "hx-seed-2");
    {
        static const char *const h[] = {CT, "Idempotency-Key: hx-warm", NULL};
        static const char body[] = ORDER("hx", "HX-2", "3");
        vt_http_req req = {.method = "POST", .path = "/orders", .headers = h, .body = body,
                           .body_len = sizeof body - 1, .parse_json = true};
        vt_http_resp resp;
        IT_OK(it_http(GW_ADDR, &req, &resp, err, sizeof err), err);
        cr_assert_eq(resp.status, 201, "the warm-up order: %d %s", resp.status, resp.body);
        vt_http_resp_clear(&resp);
    }
    it_catch_up(events);
    it_catch_up(results);
    char *stock_before = pg_text(INV_DB, SQL_STOCK_SNAPSHOT), *orders_before = pg_text(ORD_DB, SQL_ORDERS_SNAPSHOT);
    cr_assert(strstr(stock_before, "HX-1=100,HX-2=97 holds=1"), "the seed: %s", stock_before);
    size_t events_seen = it_collector_count(events), results_seen = it_collector_count(results);
    it_collector_t *inv_cmds = it_collect(run.inventory_commands, VT_FROM_END, NULL);
    it_collector_t *ord_cmds = it_collect(run.orders_commands, VT_FROM_END, NULL);
    it_collector_t *inv_dlq = it_collect(run.inventory_dlq, VT_FROM_END, NULL);
    it_collector_t *ord_dlq = it_collect(run.orders_dlq, VT_FROM_END, NULL);

    /* POST /orders rows, one at a time */
    for (size_t i = 0; i < NROWS; i++) {
        if (rows[i].ch != HTTP) continue;
        nhttp++;
        const char *why = http_row(i, &rows[i]);
        if (why) {
            failed++;
            cr_expect_fail("row %zu, POST /orders with %s: %s", i, rows[i].what, why);
        }
    }

    /* Kafka rows, all at once, then one valid command on each topic behind them */
    for (size_t i = 0; i < NROWS; i++) {
        const row_t *r = &rows[i];
        it_header h[4];
        size_t nh = 0;
        char key[32], xrow[16];
        buf_t value;
        if (r->ch == HTTP) continue;
        *(r->ch == INV ? &ninv : &nord) += 1;
        for (; nh < 3 && r->kh[nh].name; nh++) h[nh] = (it_header){r->kh[nh].name, r->kh[nh].value, strlen(r->kh[nh].value)};
        snprintf(xrow, sizeof xrow, "%zu", i);
        h[nh++] = (it_header){"x-row", xrow, strlen(xrow)};
        snprintf(key, sizeof key, "hx-%zu", i);
        make_input(r, &value);
        produce(prod, topic_of(r), r->key ? r->key : key, r->key ? r->key_len : strlen(key), value.s, value.n, h, nh);
        free(value.s);
    }
    static const char sentinel_i[] = "{\"type\":\"Restock\",\"idempotency_key\":\"hx-sentinel\",\"product_id\":\"HX-S\",\"quantity\":7}";
    static const char sentinel_o[] = "{\"type\":\"CancelOrder\",\"idempotency_key\":\"hx-sentinel\",\"order_id\":\"hx-none\"}";
    produce(prod, run.inventory_commands, "hx-sentinel", 11, sentinel_i, sizeof sentinel_i - 1, NULL, 0);
    produce(prod, run.orders_commands, "hx-sentinel", 11, sentinel_o, sizeof sentinel_o - 1, NULL, 0);
    IT_OK(it_producer_flush(prod, IT_WAIT_MS, err, sizeof err), err);
    it_producer_free(prod);

    /* The sentinels applied and every group committed to the end of its topic: each row was taken,
     * and its letter is in the DLQ (a service flushes its letters before it stores offsets). */
    const it_msg *s = await(events, "idempotency_key", "hx-sentinel");
    cr_assert_str_eq(it_msg_str(s, "type"), "Restocked", "the sentinel Restock after the table: %s", s->value);
    s = await(results, "idempotency_key", "hx-sentinel");
    cr_assert_str_eq(it_msg_str(s, "reason"), "not_found", "the sentinel CancelOrder after the table: %s", s->value);
    await_lag_zero(run.inventory_group, run.inventory_commands);
    await_lag_zero(run.orders_group, run.orders_commands);
    it_catch_up(inv_dlq);
    it_catch_up(ord_dlq);
    it_catch_up(inv_cmds);
    it_catch_up(ord_cmds);
    it_catch_up(events);
    it_catch_up(results);

    for (size_t i = 0; i < NROWS; i++) {
        if (rows[i].ch == HTTP) continue;
        const char *why = kafka_row(i, &rows[i], rows[i].ch == INV ? inv_dlq : ord_dlq);
        if (why) {
            failed++;
            cr_expect_fail("row %zu, %s on %s: %s", i, rows[i].what, rows[i].ch == INV ? "inventory.commands" : "orders.commands",
                           why);
        }
    }
    cr_expect_eq(strangers(inv_dlq, NULL) + strangers(ord_dlq, NULL), 0, "dead letters no row asked for");

    /* nothing changed, nothing was sent on: no command from the gateway or order-svc, no event or
     * result but the sentinels' */
    char *stock_after = pg_text(INV_DB, SQL_STOCK_SNAPSHOT), *orders_after = pg_text(ORD_DB, SQL_ORDERS_SNAPSHOT);
    cr_expect_str_eq(stock_after, stock_before, "stock changed under the hostile table");
    cr_expect_str_eq(orders_after, orders_before, "orders placed by the hostile table");
    cr_expect_eq(it_stock(INV_DB, "HX-S"), 7, "the sentinel Restock");
    cr_expect_eq(strangers(ord_cmds, "hx-sentinel"), 0, "commands on orders.commands that no row sent (the gateway's?)");
    cr_expect_eq(strangers(inv_cmds, "hx-sentinel"), 0, "commands on inventory.commands that no row sent (order-svc's?)");
    cr_expect_eq(it_collector_count(events), events_seen + 1, "inventory events besides the sentinel's");
    cr_expect_eq(it_collector_count(results), results_seen + 1, "order results besides the sentinel's");
    cr_expect(it_proc_running(inv) && it_proc_running(ord) && it_proc_running(gw), "a service died under the table");
    fprintf(stderr, "hostile: %zu rows (%zu HTTP, %zu inventory.commands, %zu orders.commands), %zu wrong; stock %s\n",
            NROWS, nhttp, ninv, nord, failed, stock_after);
    cr_expect_geq(NROWS, 60, "the table must hold at least 60 rows");

    free(stock_before);
    free(stock_after);
    free(orders_before);
    free(orders_after);
    it_collector_free(inv_cmds);
    it_collector_free(ord_cmds);
    it_collector_free(inv_dlq);
    it_collector_free(ord_dlq);
    it_collector_free(events);
    it_collector_free(results);
    it_svc_stop(gw, "gateway");
    it_svc_stop(ord, "order-svc");
    it_svc_stop(inv, "inventory-svc");
}

int main(int argc, char **argv) {
    static const char *const databases[] = {INV_DB, ORD_DB, NULL};
    return it_main(argc, argv, databases);
}
