/* validate: the checks of POST /orders (its Content-Type, Idempotency-Key and Request-Timeout
 * headers and its body) as pure functions of the request's strings, with no HTTP server behind them,
 * so that the gateway and the fuzzer (tests/fuzz) run the very same code.
 *
 * The invariant: a request either passes whole (the body decoded, the timeout settled) or is refused
 * with one problem that names its field; main.c alone turns the problem into an HTTP answer. */
#ifndef GW_VALIDATE_H
#define GW_VALIDATE_H

#include <stddef.h>

#include "vx_msg.h"

/* Why a request was refused: what the problem+json answer says. */
typedef struct {
    int status;        /* 400 or 415 */
    const char *title; /* static */
    char detail[256];
    char field[48];     /* the field or header at fault, "" for none */
    const char *reason; /* a body's vx_msg_err_name, else NULL */
} gw_problem_t;

/* An Idempotency-Key header (borrowed; NULL: absent, which is fine) is UTF-8 text (no control
 * characters) of 1 to VX_MSG_MAX_KEY characters. Returns 0, or -1 with *p filled. */
int gw_validate_key(const char *key, gw_problem_t *p);

/* POST /orders: ctype, key and request_timeout are the headers (borrowed; NULL when absent), body[len]
 * the body. On success returns 0, *m holds the decoded order body (the caller vx_msg_clears it) and
 * *timeout_ms is lowered to Request-Timeout when that is smaller. Otherwise returns -1 with *p
 * filled and nothing to free. */
int gw_validate_order(const char *ctype, const char *key, const char *request_timeout, const char *body, size_t len,
                      long long *timeout_ms, vx_msg_t *m, gw_problem_t *p);

#endif
