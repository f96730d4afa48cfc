/* vx_msg: decoding and validation of every message Valerix reads, from Kafka or from HTTP: the
 * commands, the body of POST /orders, inventory's events (order-svc reads them) and the OrderResult
 * (the gateway reads it).
 *
 * One decoder holds the whole contract of schemas/ (field names, types and limits), so the
 * gateway, order-svc and inventory-svc reject exactly the same inputs for exactly the same
 * reasons. A decoded message points into its parsed JSON tree and owns it; vx_msg_clear frees it.
 * Every input is capped at VX_MSG_MAX_BYTES; fields not in the contract are ignored; a member named
 * twice in one object is refused (which of the two json-c keeps is not the producer's intent). */
#ifndef VX_MSG_H
#define VX_MSG_H

#include <json-c/json.h>
#include <stddef.h>

#define VX_MSG_MAX_BYTES 65536 /* the largest message or HTTP body accepted */
#define VX_MSG_MAX_LINES 100   /* order lines per command */
#define VX_MSG_MAX_QTY 1000000 /* units per line or restock */
#define VX_MSG_MAX_KEY 128     /* idempotency key, characters */
#define VX_MSG_MAX_ID 64       /* order, product and customer ids, characters */
#define VX_MSG_MAX_NAME 200    /* product name, characters */
#define VX_MSG_MAX_TOKEN 256   /* event_id, occurred_at, reason, status, request_hash, characters */

/* Why a message was refused; the names are the dlq-reason header values. */
typedef enum {
    VX_MSG_OK = 0,
    VX_MSG_NOT_JSON,
    VX_MSG_NULL_VALUE,
    VX_MSG_TOO_LARGE,
    VX_MSG_MISSING_FIELD,
    VX_MSG_WRONG_TYPE,
    VX_MSG_INVALID_VALUE,
    VX_MSG_UNKNOWN_TYPE,
} vx_msg_err_t;

/* Message kinds, usable as a bit mask of what a consumer accepts. */
typedef enum {
    VX_MSG_RESERVE_STOCK = 1 << 0,
    VX_MSG_RELEASE_STOCK = 1 << 1,
    VX_MSG_RESTOCK = 1 << 2,
    VX_MSG_PLACE_ORDER = 1 << 3,
    VX_MSG_CANCEL_ORDER = 1 << 4,
    VX_MSG_ORDER_BODY = 1 << 5, /* the HTTP body of POST /orders: no type, no key */
    VX_MSG_STOCK_RESERVED = 1 << 6,
    VX_MSG_STOCK_REJECTED = 1 << 7,
    VX_MSG_STOCK_RELEASED = 1 << 8,
    VX_MSG_RESTOCKED = 1 << 9,
    VX_MSG_ORDER_RESULT = 1 << 10,
} vx_msg_type_t;

#define VX_MSG_INVENTORY_COMMANDS (VX_MSG_RESERVE_STOCK | VX_MSG_RELEASE_STOCK | VX_MSG_RESTOCK)
#define VX_MSG_ORDER_COMMANDS (VX_MSG_PLACE_ORDER | VX_MSG_CANCEL_ORDER)
#define VX_MSG_INVENTORY_EVENTS (VX_MSG_STOCK_RESERVED | VX_MSG_STOCK_REJECTED | VX_MSG_STOCK_RELEASED | VX_MSG_RESTOCKED)

typedef struct {
    const char *product_id;
    long long quantity;
} vx_msg_line_t;

typedef struct {
    vx_msg_type_t type;
    const char *idempotency_key, *order_id, *product_id, *name, *customer_id; /* NULL when absent */
    long long quantity;                                  /* Restock, Restocked */
    const char *reason, *status, *request_hash;          /* events and results; NULL when absent */
    const char *event_id, *occurred_at;                  /* events and results */
    long long requested, available, stock;               /* StockRejected, Restocked; -1 when absent */
    int nlines;
    vx_msg_line_t lines[VX_MSG_MAX_LINES];
    char field[48];    /* on error: the offending field, e.g. "items[2].quantity" */
    json_object *root; /* owns every string above */
} vx_msg_t;

/* Decodes and validates buf[len] (NULL buf: a Kafka tombstone) as one of the kinds in `allowed`.
 * On VX_MSG_OK, *m holds the message (call vx_msg_clear when done). Otherwise errstr says what is
 * wrong in words a producer can act on, m->field names the field, and nothing needs freeing. */
vx_msg_err_t vx_msg_decode(vx_msg_t *m, const char *buf, size_t len, unsigned allowed, char *errstr,
                           size_t errstr_size);
void vx_msg_clear(vx_msg_t *m);

/* The canonical form of a command or order body: only the contract's fields, lines in their given
 * order. New object, caller owns. */
json_object *vx_msg_to_json(const vx_msg_t *m);
json_object *vx_msg_lines_json(const vx_msg_t *m);

/* The order id of an idempotency key when none is given: a UUID v5 (SHA-1, RFC 9562) of the key in
 * Valerix's namespace, so every retry of one key names one order, whichever instance handles it. */
void vx_msg_order_id(const char *idempotency_key, char out[37]);
/* A fingerprint of an order's content (customer and lines, in order), 16 hex digits: the same key
 * sent with another body is told apart by it. */
void vx_msg_order_hash(const vx_msg_t *m, char out[17]);

/* The PlaceOrder command for an order body (m, VX_MSG_ORDER_BODY) under idempotency key `key`:
 * one line of compact JSON. New object, caller owns. */
json_object *vx_msg_place_order(const vx_msg_t *body, const char *key);

/* NULL when s[len] is text a header may carry into a message: well-formed UTF-8 without control
 * characters (the check the codec makes of every JSON string's bytes), else what is wrong with it. */
const char *vx_msg_text_check(const char *s, size_t len);

/* The characters of s[len] when it is well-formed UTF-8 (what a message's strings must be), else
 * (size_t)-1. */
size_t vx_msg_utf8_chars(const char *s, size_t len);

const char *vx_msg_err_name(vx_msg_err_t e);
const char *vx_msg_type_name(vx_msg_type_t t);

#endif
