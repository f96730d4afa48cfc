/* reqreply: the gateway's request-reply over Kafka for POST /orders.
 *
 * A request becomes a PlaceOrder on orders.commands, keyed by its idempotency key; its answer is
 * the OrderResult for its order id on orders.results. The order id is derived from the key
 * (vx_msg_order_id), so requests with one key share one in-flight entry and one command, and every
 * waiter gets the same answer. Each gateway instance reads every partition of orders.results from
 * the end it saw at start-up (no consumer group), so every instance sees the replies to its own
 * requests and ignores the rest; positions are fixed before the gateway reports ready.
 *
 * Around the exchange: a deadline per request (accepted late when it passes after the broker took
 * the command, unavailable when it never did), resends of the same command with full-jitter backoff
 * when an attempt gets no reply, and a circuit breaker (resilience.h) that fails fast while the path
 * is broken. The in-flight table is fixed-size, so memory stays bounded under any load.
 *
 * The engine knows nothing of HTTP: it reports each request's outcome through a callback, the way
 * librdkafka reports deliveries, and the caller decides what it means (gateway/main.c renders it).
 * tests/unit/test_reqreply.c runs it against librdkafka's mock cluster. */
#ifndef GW_REQREPLY_H
#define GW_REQREPLY_H

#include <json-c/json.h>
#include <stddef.h>

#include "resilience.h"
#include "vx_msg.h"

typedef struct gw_rr_s gw_rr_t;

/* How a request ended: the engine reports it, the caller renders it (gateway/main.c: HTTP). */
typedef enum {
    GW_RR_CONFIRMED,     /* the order is CONFIRMED (result) */
    GW_RR_REJECTED,      /* the order is REJECTED or CANCELLED (result) */
    GW_RR_ACCEPTED_LATE, /* the deadline passed after the broker took the command: it will finish */
    GW_RR_UNAVAILABLE,   /* nothing accepted: breaker open, Kafka unreachable or too slow (retry_after_ms) */
    GW_RR_KEY_REUSED,    /* the idempotency key is in use, or was used, with another body */
    GW_RR_BUSY,          /* too many requests in flight (retry_after_ms) */
    GW_RR_FAILED,        /* out of memory */
} gw_rr_outcome_kind_t;

typedef struct {
    gw_rr_outcome_kind_t kind;
    const char *order_id, *key; /* the order and its idempotency key (NULL only for BUSY, UNAVAILABLE
                                   and FAILED before a request had an entry) */
    int replayed;               /* the answer repeats an earlier one (a joined request, a replayed result) */
    const vx_msg_t *result;     /* CONFIRMED, REJECTED: the OrderResult, decoded */
    long long retry_after_ms;   /* UNAVAILABLE, BUSY */
    const char *detail;         /* UNAVAILABLE, KEY_REUSED, FAILED: why, in words */
} gw_rr_outcome_t;

typedef struct {
    const char *commands_topic, *results_topic;
    int max_inflight;       /* requests waiting at once; more are refused (BUSY) */
    int attempt_timeout_ms; /* resend when an attempt has no reply after this long */
    int backoff_base_ms, backoff_cap_ms;
    int produce_timeout_ms; /* librdkafka's message.timeout.ms for commands */
    int shutdown_ms;        /* gw_rr_stop waits at most this long for the broker (<= 0: 10 s) */
    gw_breaker_opts_t breaker;
    /* Called, with the engine's lock held, exactly once per submitted request: from gw_rr_submit
     * itself when it answers at once, else later from the reply thread. Everything in o is
     * borrowed for the call. It must not call the engine. */
    void (*answer)(void *request, const gw_rr_outcome_t *o, void *opaque);
    /* Called, with the lock held, when a request is parked to wait for its answer (may be NULL):
     * the HTTP face suspends its connection here, before the reply thread can answer it. */
    void (*park)(void *request, void *opaque);
    void *opaque;
} gw_rr_opts_t;

/* Creates the producer and the reply consumer, fixes the reply positions and starts the reply
 * thread. Returns NULL with errstr. */
gw_rr_t *gw_rr_start(const gw_rr_opts_t *o, char *errstr, size_t errstr_size);
/* Answers every waiting request (ACCEPTED_LATE or UNAVAILABLE), stops the thread, closes the reply
 * consumer and flushes the producer, these two within shutdown_ms even when the broker is gone. */
void gw_rr_stop(gw_rr_t *rr);

/* Takes an order body (validated, borrowed for the call) under idempotency key `key` for the opaque
 * `request`: either reports its outcome at once (breaker open, table full, Kafka down, key reused
 * with another body while in flight) or parks it until its result or deadline. full_deadline:
 * timeout_ms is the server's own (not shortened by the client), so its expiry counts against the
 * breaker. */
void gw_rr_submit(gw_rr_t *rr, void *request, const vx_msg_t *body, const char *key, long long timeout_ms,
                  int full_deadline);

/* Produces a CancelOrder for order_id under idempotency key `key` (both borrowed, validated by the
 * caller), keyed by the order id as the order's PlaceOrder is: on the same partition, behind it, so
 * a replay applies the two in the order they were sent. Its answer comes on the results topic like
 * any other. Returns 0 once it is queued for the broker, or -1 with errstr (Kafka known to be
 * unreachable, or the produce refused). */
int gw_rr_cancel(gw_rr_t *rr, const char *order_id, const char *key, char *errstr, size_t errstr_size);

/* 1 when the broker answers and the reply consumer is in place. */
int gw_rr_ready(gw_rr_t *rr);
/* Adds "breaker" and "inflight" members to obj (borrowed). */
void gw_rr_health(gw_rr_t *rr, json_object *obj);
/* Its metrics (valerix_gateway_*: in flight, breaker state, commands sent and resent, answers by
 * kind, the round trip) are in the process's registry (vx_metrics.h) from gw_rr_start on. */

#endif
