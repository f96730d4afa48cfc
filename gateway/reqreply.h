/* reqreply: the gateway's request-reply over Kafka for POST /orders.
 *
 * A request becomes a PlaceOrder on orders.commands, keyed by its idempotency key; its answer is
 * the OrderResult for its order id on orders.results. The order id is derived from the key
 * (vx_msg_order_id), so requests with one key share one in-flight entry and one command, and every
 * waiter gets the same answer. Each gateway instance reads every partition of orders.results from
 * the end it saw at start-up (no consumer group), so every instance sees the replies to its own
 * requests and ignores the rest; positions are fixed before the gateway reports ready.
 *
 * Around the exchange: a deadline per request (202 when it passes after the broker accepted the
 * command, 503 when it never did), resends of the same command with full-jitter backoff when an
 * attempt gets no reply, and a circuit breaker (resilience.h) that fails fast while the path is
 * broken. The in-flight table is fixed-size, so memory stays bounded under any load. */
#ifndef GW_REQREPLY_H
#define GW_REQREPLY_H

#include <json-c/json.h>
#include <stddef.h>

#include "resilience.h"
#include "vx_http.h"
#include "vx_msg.h"

typedef struct gw_rr_s gw_rr_t;

typedef struct {
    const char *commands_topic, *results_topic;
    int max_inflight;       /* requests waiting at once; more are refused with 429 */
    int attempt_timeout_ms; /* resend when an attempt has no reply after this long */
    int backoff_base_ms, backoff_cap_ms;
    int produce_timeout_ms; /* librdkafka's message.timeout.ms for commands */
    gw_breaker_opts_t breaker;
} gw_rr_opts_t;

/* Creates the producer and the reply consumer, fixes the reply positions and starts the reply
 * thread. Returns NULL with errstr. */
gw_rr_t *gw_rr_start(const gw_rr_opts_t *o, char *errstr, size_t errstr_size);
/* Answers every waiting request 503, stops the thread, flushes the producer. */
void gw_rr_stop(gw_rr_t *rr);

/* Takes POST /orders with its validated body: either answers req at once (breaker open, table
 * full, Kafka down, key reused with another body while in flight) or parks it until its result or
 * deadline. full_deadline: timeout_ms is the server's own (not shortened by the client), so its
 * expiry counts against the breaker. body and key are borrowed for the call. */
void gw_rr_submit(gw_rr_t *rr, vx_http_req_t *req, const vx_msg_t *body, const char *key, long long timeout_ms,
                  int full_deadline);

/* 1 when the broker answers and the reply consumer is in place. */
int gw_rr_ready(gw_rr_t *rr);
/* Adds "breaker" and "inflight" members to obj (borrowed). */
void gw_rr_health(gw_rr_t *rr, json_object *obj);
/* Appends Prometheus text lines to buf; returns the new length. */
size_t gw_rr_metrics(gw_rr_t *rr, char *buf, size_t len, size_t size);

#endif
