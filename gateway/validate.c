/* validate: the checks of POST /orders, pure functions of the request's strings. See validate.h. */
#include "validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int problem(gw_problem_t *p, int status, const char *title, const char *field, const char *detail) {
    p->status = status;
    p->title = title;
    p->reason = NULL;
    snprintf(p->field, sizeof(p->field), "%s", field);
    snprintf(p->detail, sizeof(p->detail), "%s", detail);
    return -1;
}

int gw_validate_key(const char *key, gw_problem_t *p) {
    size_t n;
    if (!key) return 0;
    /* The key travels in the PlaceOrder command, whose strings must be well-formed UTF-8: a key that
       is not would be accepted here and dead-lettered by order-svc. */
    n = vx_msg_utf8_chars(key, strlen(key));
    if (n >= 1 && n <= VX_MSG_MAX_KEY) return 0;
    return problem(p, 400, "Invalid request", "Idempotency-Key",
                   "the Idempotency-Key header must be 1 to 128 characters of UTF-8");
}

int gw_validate_order(const char *ctype, const char *key, const char *request_timeout, const char *body, size_t len,
                      long long *timeout_ms, vx_msg_t *m, gw_problem_t *p) {
    vx_msg_err_t e;

    if (!ctype || strncasecmp(ctype, "application/json", 16) != 0 || (ctype[16] && ctype[16] != ';' && ctype[16] != ' '))
        return problem(p, 415, "Unsupported media type", "", "send the order as Content-Type: application/json");
    if (gw_validate_key(key, p)) return -1;
    if (request_timeout) {
        char *end;
        long long t = strtoll(request_timeout, &end, 10);
        if (*end || end == request_timeout || t < 1)
            return problem(p, 400, "Invalid request", "Request-Timeout",
                           "the Request-Timeout header must be a positive number of milliseconds");
        if (t < *timeout_ms) *timeout_ms = t;
    }
    e = vx_msg_decode(m, body, len, VX_MSG_ORDER_BODY, p->detail, sizeof(p->detail));
    if (e) {
        p->status = 400;
        p->title = "Invalid request";
        snprintf(p->field, sizeof(p->field), "%s", m->field[0] ? m->field : "(body)");
        p->reason = vx_msg_err_name(e);
        return -1;
    }
    return 0;
}
