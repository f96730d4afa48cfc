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
    const char *why;
    size_t n;
    char detail[128];
    if (!key) return 0;
    /* The key travels in the PlaceOrder command, whose strings must be well-formed UTF-8 text: a key
       that is not would be accepted here and dead-lettered by order-svc. */
    if ((why = vx_msg_text_check(key, strlen(key)))) {
        snprintf(detail, sizeof(detail), "the Idempotency-Key header must be UTF-8 text; it holds %s", why);
        return problem(p, 400, "Invalid request", "Idempotency-Key", detail);
    }
    n = vx_msg_utf8_chars(key, strlen(key));
    if (n >= 1 && n <= VX_MSG_MAX_KEY) return 0;
    return problem(p, 400, "Invalid request", "Idempotency-Key",
                   "the Idempotency-Key header must be 1 to 128 characters of UTF-8");
}

int gw_validate_order(const char *ctype, const char *key, const char *request_timeout, const char *body, size_t len,
                      long long *timeout_ms, vx_msg_t *m, gw_problem_t *p) {
    const char *cs;
    vx_msg_err_t e;

    if (!ctype || strncasecmp(ctype, "application/json", 16) != 0 || (ctype[16] && ctype[16] != ';' && ctype[16] != ' '))
        return problem(p, 415, "Unsupported media type", "", "send the order as Content-Type: application/json");
    if ((cs = strcasestr(ctype, "charset="))) { /* JSON is UTF-8 (RFC 8259): no other charset */
        size_t n;
        char detail[128];
        cs += 8;
        if (*cs == '"') cs++;
        n = strcspn(cs, "\"; ");
        if (!((n == 5 && strncasecmp(cs, "utf-8", 5) == 0) || (n == 4 && strncasecmp(cs, "utf8", 4) == 0))) {
            snprintf(detail, sizeof(detail), "JSON is UTF-8 (RFC 8259); charset=%.*s is not accepted", (int)(n < 32 ? n : 32), cs);
            if (vx_msg_text_check(detail, strlen(detail)))
                snprintf(detail, sizeof(detail), "JSON is UTF-8 (RFC 8259); send charset=utf-8 or none");
            return problem(p, 415, "Unsupported media type", "", detail);
        }
    }
    if (gw_validate_key(key, p)) return -1;
    if (request_timeout) {
        char *end;
        long long t = strtoll(request_timeout, &end, 10);
        if (*end || end == request_timeout || t < 1 ||
            strspn(request_timeout, "0123456789") != strlen(request_timeout)) /* digits only: no +, -, space */
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
