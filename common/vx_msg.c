/* vx_msg: the codec of every message Valerix reads. See vx_msg.h; the same limits are written in schemas/. */
#include "vx_msg.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <uuid/uuid.h>

static const struct {
    vx_msg_type_t type;
    const char *name;
} type_names[] = {
    {VX_MSG_RESERVE_STOCK, "ReserveStock"}, {VX_MSG_RELEASE_STOCK, "ReleaseStock"}, {VX_MSG_RESTOCK, "Restock"},
    {VX_MSG_PLACE_ORDER, "PlaceOrder"},     {VX_MSG_CANCEL_ORDER, "CancelOrder"},
    {VX_MSG_STOCK_RESERVED, "StockReserved"}, {VX_MSG_STOCK_REJECTED, "StockRejected"},
    {VX_MSG_STOCK_RELEASED, "StockReleased"}, {VX_MSG_RESTOCKED, "Restocked"},
    {VX_MSG_ORDER_RESULT, "OrderResult"},
};

const char *vx_msg_type_name(vx_msg_type_t t) {
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (type_names[i].type == t) return type_names[i].name;
    return "OrderBody";
}

const char *vx_msg_err_name(vx_msg_err_t e) {
    static const char *const names[] = {"ok",          "not_json",   "null_value",    "too_large",
                                        "missing_field", "wrong_type", "invalid_value", "unknown_type"};
    return (unsigned)e < sizeof(names) / sizeof(names[0]) ? names[e] : "unknown";
}

/* Characters, not bytes, as JSON Schema's maxLength counts them (json-c has checked the UTF-8). */
static size_t utf8_len(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) n++;
    return n;
}

/* JSON Schema 2020-12's integer is any number with a zero fractional part, however it is written:
 * 13, 13.0, 1.3e1, 1e400 (an integer, out of every range). Decides it exactly from the number's
 * text as the producer wrote it (json-c keeps it), never from a double's rounding: 1.0000000000000001
 * and 1e-400 are not integers. On 1, *out is the value, saturated to +-INT64_MAX past 18 digits. */
static int integral_number(const char *s, long long *out) {
    const char *ip, *fp;
    size_t il, fl, tz;
    long e = 0, mag;
    int neg = 0, eneg = 0;
    long long v = 0;

    if (*s == '-') neg = 1, s++;
    for (ip = s; *s >= '0' && *s <= '9'; s++) {}
    il = (size_t)(s - ip);
    fp = s, fl = 0;
    if (*s == '.') {
        for (fp = ++s; *s >= '0' && *s <= '9'; s++) {}
        fl = (size_t)(s - fp);
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') eneg = *s++ == '-';
        for (; *s >= '0' && *s <= '9'; s++)
            if (e < 1000000) e = e * 10 + (*s - '0');
        if (eneg) e = -e;
    }
    if (*s || il + fl == 0) return 0; /* not a number's text */
    while (il && *ip == '0') ip++, il--; /* 007 is 7 */
    while (fl && fp[fl - 1] == '0') fl--; /* 7.500 is 7.5 */
    /* The value is the digits ip[il] fp[fl] times 10^(e - fl); fp's last digit, if any, is not 0. */
    if (il == 0 && fl == 0) { /* zero, however written */
        *out = 0;
        return 1;
    }
    if (fl) {
        if (e < (long)fl) return 0; /* a fractional part that is not zero */
    } else if (e < 0) {
        for (tz = 0; tz < il && ip[il - 1 - tz] == '0'; tz++) {}
        if ((long)tz < -e) return 0;
    }
    if (il == 0) /* 0.0013e4: skip the fraction's leading zeros */
        while (*fp == '0') fp++, fl--, e--;
    mag = (long)(il + fl) + e - (long)fl; /* digits of the integer */
    if (mag > 18) {
        *out = neg ? -INT64_MAX : INT64_MAX;
        return 1;
    }
    for (long i = 0; i < mag; i++) {
        long k = i < (long)il ? -1 : i - (long)il; /* index into the fraction, -1 while in ip */
        int d = i < (long)il ? ip[i] - '0' : k < (long)fl ? fp[k] - '0' : 0;
        v = v * 10 + d;
    }
    *out = neg ? -v : v;
    return 1;
}

/* How many bytes of s a message shows: at most max, never splitting a UTF-8 sequence, so that the
 * message (a dlq-error header, a problem+json detail, a log line) stays well-formed UTF-8. s is
 * well-formed itself: json-c and lenient_json checked it. */
static int shown(const char *s, int max) {
    int n = (int)strnlen(s, (size_t)max + 1);
    if (n <= max) return n;
    for (n = max; n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80; n--) {}
    return n;
}

#define FAIL(code, ...)                                                                                       \
    do {                                                                                                      \
        snprintf(errstr, errstr_size, __VA_ARGS__);                                                           \
        return (code);                                                                                        \
    } while (0)
/* FAIL, naming `path` as the field at fault. The getters below write the field only when they fail:
 * formatting it for every field read was 5 % of order-svc's CPU (make bench, stage C). */
#define FAIL_AT(code, ...)                                                                                    \
    do {                                                                                                      \
        snprintf(field, 48, "%s", path);                                                                      \
        FAIL(code, __VA_ARGS__);                                                                              \
    } while (0)

/* Reads string field `key` of obj into *out. Absent and optional: *out = NULL and OK. */
static vx_msg_err_t get_string(json_object *obj, const char *key, const char *path, size_t maxlen, int required,
                               const char **out, char *field, char *errstr, size_t errstr_size) {
    json_object *v;
    size_t n;

    *out = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || (!required && json_object_is_type(v, json_type_null))) {
        if (!required) return VX_MSG_OK;
        FAIL_AT(VX_MSG_MISSING_FIELD, "missing field %s", path);
    }
    if (!json_object_is_type(v, json_type_string))
        FAIL_AT(VX_MSG_WRONG_TYPE, "%s must be a string%s", path, v ? "" : ", not null");
    *out = json_object_get_string(v);
    if (strlen(*out) != (size_t)json_object_get_string_len(v))
        FAIL_AT(VX_MSG_INVALID_VALUE, "%s must not contain a NUL character", path);
    n = utf8_len(*out);
    if (n < 1 || n > maxlen) FAIL_AT(VX_MSG_INVALID_VALUE, "%s must be a string of 1 to %zu characters", path, maxlen);
    return VX_MSG_OK;
}

/* Reads integer field `key` of obj from lo to hi into *out. Absent and optional: *out = -1 and OK. */
static vx_msg_err_t get_int(json_object *obj, const char *key, const char *path, long long lo, long long hi,
                            int required, long long *out, char *field, char *errstr, size_t errstr_size) {
    json_object *v;

    *out = -1;
    if (!json_object_object_get_ex(obj, key, &v) || (!required && json_object_is_type(v, json_type_null))) {
        if (!required) return VX_MSG_OK;
        FAIL_AT(VX_MSG_MISSING_FIELD, "missing field %s", path);
    }
    if (json_object_is_type(v, json_type_int))
        *out = json_object_get_int64(v); /* json-c saturates past 64 bits: still out of range */
    else if (!json_object_is_type(v, json_type_double) || !integral_number(json_object_to_json_string(v), out))
        FAIL_AT(VX_MSG_WRONG_TYPE, "%s must be an integer%s", path, v ? "" : ", not null");
    if (*out < lo || *out > hi) {
        if (hi == INT64_MAX) FAIL_AT(VX_MSG_INVALID_VALUE, "%s must be an integer of %lld or more", path, lo);
        FAIL_AT(VX_MSG_INVALID_VALUE, "%s must be an integer from %lld to %lld", path, lo, hi);
    }
    return VX_MSG_OK;
}

static vx_msg_err_t get_quantity(json_object *obj, const char *key, const char *path, long long *out, char *field,
                                 char *errstr, size_t errstr_size) {
    return get_int(obj, key, path, 1, VX_MSG_MAX_QTY, 1, out, field, errstr, errstr_size);
}

/* Reads string field `key`, which must be one of `allowed` (NULL-terminated). */
static vx_msg_err_t get_enum(json_object *obj, const char *key, int required, const char *const *allowed,
                             const char **out, char *field, char *errstr, size_t errstr_size) {
    vx_msg_err_t e = get_string(obj, key, key, VX_MSG_MAX_TOKEN, required, out, field, errstr, errstr_size);
    if (e || !*out) return e;
    for (; *allowed; allowed++)
        if (strcmp(*out, *allowed) == 0) return VX_MSG_OK;
    snprintf(field, 48, "%s", key);
    FAIL(VX_MSG_INVALID_VALUE, "%s \"%.*s\" is not one of the values the contract allows", key, shown(*out, 64), *out);
}

/* items: min_lines to VX_MSG_MAX_LINES lines of product_id and a quantity from 1 to max_qty. */
static vx_msg_err_t get_lines(vx_msg_t *m, int min_lines, long long max_qty, char *errstr, size_t errstr_size) {
    json_object *arr;
    char *field = m->field;
    const char *path = "items";
    size_t n;

    if (!json_object_object_get_ex(m->root, "items", &arr)) FAIL_AT(VX_MSG_MISSING_FIELD, "missing field items");
    if (!json_object_is_type(arr, json_type_array))
        FAIL_AT(VX_MSG_WRONG_TYPE, "items must be an array%s", arr ? "" : ", not null");
    n = json_object_array_length(arr);
    if (n < (size_t)min_lines || n > VX_MSG_MAX_LINES)
        FAIL_AT(VX_MSG_INVALID_VALUE, "items must hold %d to %d lines", min_lines, VX_MSG_MAX_LINES);
    for (size_t i = 0; i < n; i++) {
        json_object *line = json_object_array_get_idx(arr, i);
        char at[48];

        if (!json_object_is_type(line, json_type_object)) {
            snprintf(m->field, sizeof(m->field), "items[%zu]", i);
            FAIL(VX_MSG_WRONG_TYPE, "items[%zu] must be an object", i);
        }
        /* A line's path is formatted only for a line that fails: the check runs again, naming it. */
        if (get_string(line, "product_id", "", VX_MSG_MAX_ID, 1, &m->lines[i].product_id, field, errstr,
                       errstr_size)) {
            snprintf(at, sizeof(at), "items[%zu].product_id", i);
            return get_string(line, "product_id", at, VX_MSG_MAX_ID, 1, &m->lines[i].product_id, field, errstr,
                              errstr_size);
        }
        if (get_int(line, "quantity", "", 1, max_qty, 1, &m->lines[i].quantity, field, errstr, errstr_size)) {
            snprintf(at, sizeof(at), "items[%zu].quantity", i);
            return get_int(line, "quantity", at, 1, max_qty, 1, &m->lines[i].quantity, field, errstr, errstr_size);
        }
    }
    m->nlines = (int)n;
    return VX_MSG_OK;
}

static vx_msg_err_t validate(vx_msg_t *m, unsigned allowed, char *errstr, size_t errstr_size) {
    json_object *root = m->root, *t;
    const char *tname;
    vx_msg_err_t e = VX_MSG_OK;
    int need_key = 1;

    if (!json_object_is_type(root, json_type_object)) {
        snprintf(m->field, sizeof(m->field), "(root)");
        FAIL(VX_MSG_WRONG_TYPE, "the message must be a JSON object");
    }
    if (allowed == VX_MSG_ORDER_BODY) {
        m->type = VX_MSG_ORDER_BODY;
        need_key = 0;
    } else {
        snprintf(m->field, sizeof(m->field), "type");
        if (!json_object_object_get_ex(root, "type", &t)) FAIL(VX_MSG_MISSING_FIELD, "missing field type");
        if (!json_object_is_type(t, json_type_string))
            FAIL(VX_MSG_WRONG_TYPE, "type must be a string%s", t ? "" : ", not null");
        tname = json_object_get_string(t);
        m->type = 0;
        if (strlen(tname) != (size_t)json_object_get_string_len(t))
            FAIL(VX_MSG_UNKNOWN_TYPE, "unknown type: the type holds a NUL character");
        for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
            if ((allowed & type_names[i].type) && strcmp(tname, type_names[i].name) == 0) m->type = type_names[i].type;
        if (!m->type) FAIL(VX_MSG_UNKNOWN_TYPE, "unknown type \"%.*s\" on this topic", shown(tname, 64), tname);
    }

#define GET(member, key, max, req)                                                                            \
    if ((e = get_string(root, key, key, max, req, &m->member, m->field, errstr, errstr_size))) return e
#define GET_INT(member, key, lo, hi, req)                                                                     \
    if ((e = get_int(root, key, key, lo, hi, req, &m->member, m->field, errstr, errstr_size))) return e
#define LINES(min, max_qty) get_lines(m, min, max_qty, errstr, errstr_size)
    if (need_key) GET(idempotency_key, "idempotency_key", VX_MSG_MAX_KEY, 1);
    if (m->type & (VX_MSG_INVENTORY_EVENTS | VX_MSG_ORDER_RESULT)) {
        GET(event_id, "event_id", VX_MSG_MAX_TOKEN, 1);
        GET(occurred_at, "occurred_at", VX_MSG_MAX_TOKEN, 1);
    }
    switch (m->type) {
    case VX_MSG_RESERVE_STOCK:
        GET(order_id, "order_id", VX_MSG_MAX_ID, 1);
        return LINES(1, VX_MSG_MAX_QTY);
    case VX_MSG_RELEASE_STOCK:
    case VX_MSG_CANCEL_ORDER:
        GET(order_id, "order_id", VX_MSG_MAX_ID, 1);
        return VX_MSG_OK;
    case VX_MSG_RESTOCK:
        GET(product_id, "product_id", VX_MSG_MAX_ID, 1);
        if ((e = get_quantity(root, "quantity", "quantity", &m->quantity, m->field, errstr, errstr_size))) return e;
        GET(name, "name", VX_MSG_MAX_NAME, 0);
        return VX_MSG_OK;
    case VX_MSG_PLACE_ORDER:
        GET(order_id, "order_id", VX_MSG_MAX_ID, 0);
        /* fall through */
    case VX_MSG_ORDER_BODY:
        GET(customer_id, "customer_id", VX_MSG_MAX_ID, 1);
        return LINES(1, VX_MSG_MAX_QTY);
    case VX_MSG_STOCK_RESERVED:
        GET(order_id, "order_id", VX_MSG_MAX_ID, 1);
        return LINES(1, VX_MSG_MAX_QTY);
    case VX_MSG_STOCK_REJECTED: {
        static const char *const reasons[] = {"insufficient_stock", "unknown_product", "order_released", NULL};
        GET(order_id, "order_id", VX_MSG_MAX_ID, 1);
        if ((e = get_enum(root, "reason", 1, reasons, &m->reason, m->field, errstr, errstr_size))) return e;
        GET(product_id, "product_id", VX_MSG_MAX_ID, strcmp(m->reason, "order_released") != 0);
        GET_INT(requested, "requested", 0, INT64_MAX, 0);
        GET_INT(available, "available", 0, INT64_MAX, 0);
        return LINES(1, VX_MSG_MAX_QTY);
    }
    case VX_MSG_STOCK_RELEASED: /* what an order held, summed over its lines: may pass VX_MSG_MAX_QTY */
        GET(order_id, "order_id", VX_MSG_MAX_ID, 1);
        return LINES(0, INT64_MAX);
    case VX_MSG_RESTOCKED:
        GET(product_id, "product_id", VX_MSG_MAX_ID, 1);
        if ((e = get_quantity(root, "quantity", "quantity", &m->quantity, m->field, errstr, errstr_size))) return e;
        GET(name, "name", VX_MSG_MAX_NAME, 1);
        GET_INT(stock, "stock", 0, INT64_MAX, 1);
        return LINES(1, VX_MSG_MAX_QTY);
    case VX_MSG_ORDER_RESULT: {
        static const char *const statuses[] = {"CONFIRMED", "REJECTED", "CANCELLED", NULL};
        static const char *const reasons[] = {"insufficient_stock", "unknown_product", "cancelled", "not_found",
                                              "order_released", NULL};
        GET(order_id, "order_id", VX_MSG_MAX_ID, 1);
        GET(customer_id, "customer_id", VX_MSG_MAX_ID, 0);
        GET(product_id, "product_id", VX_MSG_MAX_ID, 0);
        GET(request_hash, "request_hash", VX_MSG_MAX_TOKEN, 0);
        if ((e = get_enum(root, "status", 1, statuses, &m->status, m->field, errstr, errstr_size)) ||
            (e = get_enum(root, "reason", 0, reasons, &m->reason, m->field, errstr, errstr_size)))
            return e;
        return LINES(0, VX_MSG_MAX_QTY);
    }
    }
#undef LINES
#undef GET_INT
#undef GET
    return e;
}

/* The length of the well-formed UTF-8 sequence at p (1 to 4 bytes; p < end), or 0 when it is
 * ill-formed: a stray continuation byte, an overlong form, a surrogate, a code point past U+10FFFF or
 * a sequence cut short. */
static int utf8_seq(const unsigned char *p, const unsigned char *end) {
    unsigned char c = *p;
    int n = c < 0x80 ? 0 : c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
    unsigned cp;

    if (n == 0) return 1;
    if (c < 0xC2 || c > 0xF4 || end - p <= n) return 0;
    cp = c & (0x3F >> n);
    for (int i = 1; i <= n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n + 1;
}

const char *vx_msg_text_check(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        int n = utf8_seq(p, end);
        if (!n) return "ill-formed UTF-8";
        if (*p < 0x20 || *p == 0x7F) return "a control character";
        p += n;
    }
    return NULL;
}

size_t vx_msg_utf8_chars(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    size_t chars = 0;
    for (int n; p < end; p += n, chars++)
        if (!(n = utf8_seq(p, end))) return (size_t)-1;
    return chars;
}

/* The code unit of a \uXXXX escape at p (pointing at the backslash), or -1 when there is none. */
static long hex4(const unsigned char *p, const unsigned char *end) {
    long v = 0;
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u') return -1;
    for (int i = 2; i < 6; i++) {
        int d = p[i] >= '0' && p[i] <= '9' ? p[i] - '0' : p[i] >= 'a' && p[i] <= 'f' ? p[i] - 'a' + 10
                : p[i] >= 'A' && p[i] <= 'F' ? p[i] - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v << 4 | d;
    }
    return v;
}

/* The end of the number that starts at p if it is one as RFC 8259 writes them,
 * -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, else NULL (json-c takes 00, 01.0, 1. and -.5). */
static const unsigned char *number_end(const unsigned char *p, const unsigned char *end) {
#define DIGIT(q) ((q) < end && *(q) >= '0' && *(q) <= '9')
    if (p < end && *p == '-') p++;
    if (!DIGIT(p)) return NULL;
    if (*p++ != '0')
        while (DIGIT(p)) p++;
    else if (DIGIT(p))
        return NULL;
    if (p < end && *p == '.') {
        p++;
        if (!DIGIT(p)) return NULL;
        while (DIGIT(p)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (!DIGIT(p)) return NULL;
        while (DIGIT(p)) p++;
    }
    return p;
#undef DIGIT
}

/* What json-c lets through but RFC 8259 (and I-JSON, RFC 7493) does not: outside strings only JSON's
 * punctuation, numbers as RFC 8259 writes them and the words true, false and null (no single quotes,
 * NaN, Infinity, 01 or 1.); inside strings no raw control characters, only well-formed UTF-8 (no
 * overlongs, surrogates or code points past U+10FFFF) and no lone surrogate escape (json-c would
 * quietly turn "\ud800" into U+FFFD). Returns NULL when buf is strict JSON as far as these go, else the
 * reason; *members counts the object members written (the colons outside strings). */
static const char *lenient_json(const char *buf, size_t len, size_t *members) {
    const unsigned char *p = (const unsigned char *)buf, *end = p + len;
    *members = 0;
    while (p < end) {
        unsigned char c = *p;
        if (c == '"') {
            int nul = 0; /* an escaped NUL: json-c cuts a member name there, so two names could be one */
            for (p++;; p++) {
                if (p >= end) return "unterminated string";
                c = *p;
                if (c == '"') break;
                if (c == '\\') {
                    long u = hex4(p, end);
                    nul |= u == 0;
                    if (u >= 0xDC00 && u <= 0xDFFF) return "a lone surrogate escape (\\udc00-\\udfff) is not a character";
                    if (u >= 0xD800 && u <= 0xDBFF) {
                        long lo = hex4(p + 6, end);
                        if (lo < 0xDC00 || lo > 0xDFFF) return "a lone surrogate escape (\\ud800-\\udbff) is not a character";
                        p += 11; /* both escapes; the loop steps past the last digit */
                        continue;
                    }
                    p++;
                    continue;
                }
                if (c < 0x20) return "raw control character in a string";
                if (c >= 0x80) {
                    int n = utf8_seq(p, end);
                    if (!n) return "ill-formed UTF-8";
                    p += n - 1;
                }
            }
            p++;
            if (nul) {
                const unsigned char *q = p;
                while (q < end && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n')) q++;
                if (q < end && *q == ':') return "a member name with \\u0000 (NUL) in it";
            }
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
            const unsigned char *w = p;
            while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) p++;
            if (!((p - w == 4 && (memcmp(w, "true", 4) == 0 || memcmp(w, "null", 4) == 0)) ||
                  (p - w == 5 && memcmp(w, "false", 5) == 0)))
                return "a bare word that is not true, false or null";
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            const unsigned char *q = number_end(p, end);
            if (!q && c == '-' && p + 1 < end && ((p[1] | 0x20) >= 'a' && (p[1] | 0x20) <= 'z'))
                return "a bare word that is not true, false or null"; /* -Infinity */
            if (!q) return "a number JSON does not allow (a leading zero, a bare point or exponent)";
            p = q;
        } else if (strchr("{}[],: \t\r\n", c) && c) {
            *members += c == ':';
            p++;
        } else {
            return "a character JSON does not allow outside strings";
        }
    }
    return NULL;
}

/* Members in the parsed tree. json-c keeps the last of two members with one name, so fewer here than
 * lenient_json counted means a duplicate. json-c's depth limit (32) bounds the recursion. */
static size_t tree_members(json_object *o) {
    size_t n = 0;
    if (json_object_is_type(o, json_type_object)) {
        json_object_object_foreach(o, k, v) {
            (void)k;
            n += 1 + tree_members(v);
        }
    } else if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0, len = json_object_array_length(o); i < len; i++)
            n += tree_members(json_object_array_get_idx(o, i));
    }
    return n;
}

/* ---- naming a duplicate member: only when tree_members found one --------------------------------- */

typedef struct {
    const char *p, *end;
} cursor_t;

static void skip_ws(cursor_t *c) {
    while (c->p < c->end && strchr(" \t\r\n", *c->p) && *c->p) c->p++;
}

/* The raw string at c->p (its quotes included), stepped over. */
static void skip_string(cursor_t *c) {
    for (c->p++; c->p < c->end && *c->p != '"'; c->p++)
        if (*c->p == '\\') c->p++;
    c->p++;
}

/* Cuts s (NUL-terminated) before a UTF-8 sequence that a truncating snprintf left unfinished. */
static void utf8_trim(char *s) {
    size_t n = strlen(s), i = n;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    if (i > 0 && (unsigned char)s[i - 1] >= 0xC0 && utf8_seq((const unsigned char *)s + i - 1,
                                                             (const unsigned char *)s + n) != (int)(n - i + 1))
        s[i - 1] = '\0';
}

/* A member name, decoded, for a path: at most 24 bytes of it, control characters as '?'. */
static void name_copy(char *dst, size_t size, const char *s) {
    size_t i = 0;
    for (; s[i] && i < 24 && i + 1 < size; i++) dst[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    dst[i] = '\0';
    utf8_trim(dst);
}

/* The member name whose raw string (quotes included) is k[n], decoded; NULL when json-c cannot. */
static json_object *decode_name(const char *k, size_t n) {
    json_tokener *t = json_tokener_new();
    json_object *o = t ? json_tokener_parse_ex(t, k, (int)n) : NULL;
    if (!o && t && json_tokener_get_error(t) == json_tokener_continue) o = json_tokener_parse_ex(t, "", 1);
    json_tokener_free(t);
    if (o && !json_object_is_type(o, json_type_string)) {
        json_object_put(o);
        o = NULL;
    }
    return o;
}

/* Walks one value of strict JSON (lenient_json and json-c have passed it) and writes the path of the
 * first member whose name its object already had into path. Returns 1 when found. Names are compared
 * decoded (json-c reads each), so "a" and "\u0061" are the same name, as they are to json-c. */
static int find_duplicate(cursor_t *c, const char *at, char *path, size_t size) {
    char sub[96], name[32];
    skip_ws(c);
    if (c->p >= c->end) return 0;
    if (*c->p == '{') {
        json_object *seen = json_object_new_object();
        int found = 0;
        for (c->p++; !found;) {
            const char *k;
            json_object *key;
            skip_ws(c);
            if (c->p >= c->end || *c->p == '}') break;
            if (*c->p == ',') {
                c->p++;
                continue;
            }
            k = c->p;
            skip_string(c);
            key = decode_name(k, (size_t)(c->p - k));
            name_copy(name, sizeof(name), key ? json_object_get_string(key) : "?");
            snprintf(sub, sizeof(sub), "%s%s%s", at, *at ? "." : "", name);
            utf8_trim(sub);
            if (key && json_object_object_get_ex(seen, json_object_get_string(key), NULL)) {
                size_t n = strlen(sub) < size ? strlen(sub) : size - 1;
                memcpy(path, sub, n);
                path[n] = '\0';
                utf8_trim(path);
                found = 1;
            } else if (key) {
                json_object_object_add(seen, json_object_get_string(key), NULL);
            }
            json_object_put(key);
            if (found) break;
            skip_ws(c);
            c->p++; /* the colon */
            found = find_duplicate(c, sub, path, size);
        }
        json_object_put(seen);
        if (!found && c->p < c->end) c->p++;
        return found;
    }
    if (*c->p == '[') {
        size_t i = 0;
        for (c->p++;;) {
            skip_ws(c);
            if (c->p >= c->end || *c->p == ']') break;
            if (*c->p == ',') {
                c->p++;
                continue;
            }
            snprintf(sub, sizeof(sub), "%s[%zu]", at, i++);
            if (find_duplicate(c, sub, path, size)) return 1;
        }
        if (c->p < c->end) c->p++;
        return 0;
    }
    if (*c->p == '"') {
        skip_string(c);
        return 0;
    }
    while (c->p < c->end && !strchr(",]} \t\r\n", *c->p)) c->p++;
    return 0;
}

static pthread_key_t tokener_key;
static void free_tokener(void *tok) { json_tokener_free(tok); }
static void make_key(void) { pthread_key_create(&tokener_key, free_tokener); }

vx_msg_err_t vx_msg_decode(vx_msg_t *m, const char *buf, size_t len, unsigned allowed, char *errstr,
                           size_t errstr_size) {
    static pthread_once_t once = PTHREAD_ONCE_INIT; /* one tokener per thread, freed when it ends */
    json_tokener *tok;
    enum json_tokener_error te;
    const char *why;
    vx_msg_err_t e;
    size_t end, members;

    memset(m, 0, offsetof(vx_msg_t, lines));
    m->requested = m->available = m->stock = -1;
    m->root = NULL;
    m->field[0] = '\0';
    if (!buf) FAIL(VX_MSG_NULL_VALUE, "the message has no value (a tombstone)");
    if (len > VX_MSG_MAX_BYTES) FAIL(VX_MSG_TOO_LARGE, "the message is %zu bytes; the limit is %d", len, VX_MSG_MAX_BYTES);
    for (end = 0; end < len && strchr(" \t\r\n", buf[end]) && buf[end]; end++) {} /* buf[len] need not be NUL */
    if (end == len) FAIL(VX_MSG_NOT_JSON, "not JSON: the message is empty");
    if ((why = lenient_json(buf, len, &members))) FAIL(VX_MSG_NOT_JSON, "not JSON: %s", why);
    pthread_once(&once, make_key);
    if (!(tok = pthread_getspecific(tokener_key))) {
        if (!(tok = json_tokener_new())) FAIL(VX_MSG_NOT_JSON, "out of memory");
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        pthread_setspecific(tokener_key, tok);
    }
    json_tokener_reset(tok);
    m->root = json_tokener_parse_ex(tok, buf, (int)len);
    te = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    if (te == json_tokener_continue && end == len) { /* a bare literal or number ends at the input's end */
        m->root = json_tokener_parse_ex(tok, "", 1);
        te = json_tokener_get_error(tok);
        end = len;
    }
    while (end < len && (buf[end] == ' ' || buf[end] == '\n' || buf[end] == '\r' || buf[end] == '\t')) end++;
    if (te != json_tokener_success || end != len) {
        json_object_put(m->root);
        m->root = NULL;
        if (te == json_tokener_success) FAIL(VX_MSG_NOT_JSON, "not JSON: unexpected bytes after the value");
        FAIL(VX_MSG_NOT_JSON, "not JSON: %s", te == json_tokener_continue ? "unexpected end of input"
                                                                          : json_tokener_error_desc(te));
    }
    if (!m->root) FAIL(VX_MSG_NULL_VALUE, "the message is JSON null");
    if (tree_members(m->root) != members) { /* which value counts is json-c's whim: refuse, naming it */
        cursor_t c = {buf, buf + len};
        json_object_put(m->root);
        m->root = NULL;
        if (!find_duplicate(&c, "", m->field, sizeof(m->field))) snprintf(m->field, sizeof(m->field), "(root)");
        FAIL(VX_MSG_INVALID_VALUE, "%s appears twice: a member may be named only once in its object (RFC 7493)",
             m->field);
    }
    e = validate(m, allowed, errstr, errstr_size);
    if (e) {
        json_object_put(m->root);
        m->root = NULL;
    }
    return e;
}

void vx_msg_clear(vx_msg_t *m) {
    json_object_put(m->root);
    m->root = NULL;
}

json_object *vx_msg_lines_json(const vx_msg_t *m) {
    json_object *arr = json_object_new_array_ext(m->nlines);
    for (int i = 0; i < m->nlines; i++) {
        json_object *l = json_object_new_object();
        json_object_object_add(l, "product_id", json_object_new_string(m->lines[i].product_id));
        json_object_object_add(l, "quantity", json_object_new_int64(m->lines[i].quantity));
        json_object_array_add(arr, l);
    }
    return arr;
}

json_object *vx_msg_to_json(const vx_msg_t *m) {
    json_object *o = json_object_new_object();
#define PUT(k, v)                                                                                             \
    if (v) json_object_object_add(o, k, json_object_new_string(v))
    if (m->type != VX_MSG_ORDER_BODY) PUT("type", vx_msg_type_name(m->type));
    PUT("idempotency_key", m->idempotency_key);
    PUT("order_id", m->order_id);
    PUT("customer_id", m->customer_id);
    PUT("product_id", m->product_id);
    PUT("name", m->name);
#undef PUT
    if (m->type == VX_MSG_RESTOCK) json_object_object_add(o, "quantity", json_object_new_int64(m->quantity));
    if (m->nlines) json_object_object_add(o, "items", vx_msg_lines_json(m));
    return o;
}

json_object *vx_msg_place_order(const vx_msg_t *body, const char *key) {
    json_object *o = vx_msg_to_json(body);
    json_object_object_add(o, "type", json_object_new_string("PlaceOrder"));
    json_object_object_add(o, "idempotency_key", json_object_new_string(key));
    return o;
}

void vx_msg_order_id(const char *idempotency_key, char out[37]) {
    /* Valerix's namespace for order ids: uuid5(NAMESPACE_URL, "https://valerix.dev/orders") */
    static const uuid_t ns = {0x2a, 0xd6, 0x0c, 0xf7, 0x74, 0x25, 0x5b, 0xe5,
                              0xa9, 0xbc, 0x29, 0xac, 0xaf, 0x8e, 0x7d, 0x71};
    uuid_t u;
    uuid_generate_sha1(u, ns, idempotency_key, strlen(idempotency_key));
    uuid_unparse_lower(u, out);
}

/* FNV-1a, 64 bits: a fingerprint against honest mistakes, not an adversary. */
static uint64_t fnv(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h;
}

void vx_msg_order_hash(const vx_msg_t *m, char out[17]) {
    uint64_t h = 0xcbf29ce484222325ULL;
    char q[24];
    h = fnv(h, m->customer_id ? m->customer_id : "", m->customer_id ? strlen(m->customer_id) + 1 : 1);
    for (int i = 0; i < m->nlines; i++) {
        int n = snprintf(q, sizeof(q), "%lld", m->lines[i].quantity);
        h = fnv(h, m->lines[i].product_id, strlen(m->lines[i].product_id) + 1);
        h = fnv(h, q, (size_t)n + 1);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}
