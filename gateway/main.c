/* gateway: the HTTP front door of Valerix.
 *
 *   POST /orders          validated (validate.c), then request-reply over Kafka (reqreply.c)
 *   GET  /orders[/{id}]   read from order-svc, which owns orders
 *   GET  /products[/{id}] read from inventory-svc, which owns stock
 *   GET  /health, /ready, /metrics
 *   POST /admin/chaos     crash point after_produce_before_reply at runtime (vx_chaos.h)
 *
 * The gateway keeps no state another instance would need: an order is found by its idempotency
 * key's derived id, and every instance reads all replies. Settings (see the README):
 * GATEWAY_HTTP_ADDR, GATEWAY_HTTP_THREADS, GATEWAY_MAX_CONNECTIONS, GATEWAY_IDLE_TIMEOUT_S,
 * GATEWAY_PER_IP_CONNECTIONS, GATEWAY_BODY_TIMEOUT_MS, VX_SHUTDOWN_TIMEOUT_MS, GATEWAY_MAX_INFLIGHT,
 * GATEWAY_TIMEOUT_MS, GATEWAY_ATTEMPT_TIMEOUT_MS, GATEWAY_BACKOFF_BASE_MS, GATEWAY_BACKOFF_CAP_MS,
 * GATEWAY_PRODUCE_TIMEOUT_MS, GATEWAY_BREAKER_{FAILURE_RATE,MIN_CALLS,WINDOW_MS,OPEN_MS,PROBES},
 * ORDERS_COMMANDS_TOPIC, ORDERS_RESULTS_TOPIC, ORDERS_URL, INVENTORY_URL, KAFKA_*, and VX_CRASH_POINTS,
 * VX_CHAOS_TOKEN (vx_chaos.h). */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "reqreply.h"
#include "validate.h"
#include "web.h"
#include "vx_chaos.h"
#include "vx_config.h"
#include "vx_http.h"
#include "vx_kafka.h"
#include "vx_log.h"
#include "vx_metrics.h"
#include "vx_msg.h"

#define SERVICE "gateway"
#define PROXY_BODY_CAP (4 << 20) /* the largest answer relayed from order-svc or inventory-svc */

typedef struct {
    const char *http_addr, *orders_url, *inventory_url;
    long long threads, max_conns, timeout_ms, idle_timeout_s, per_ip_conns, body_timeout_ms;
    gw_rr_opts_t rr;
    gw_web_opts_t web;
} config_t;

typedef struct {
    config_t cfg;
    gw_rr_t *rr;
    gw_web_t *web;
    vx_http_t *http;
} gw_t;

static volatile sig_atomic_t stopping;
static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static int load_config(config_t *c, char *errstr, size_t errstr_size) {
    long long v[13];
    double rate;

    c->http_addr = vx_cfg_str("GATEWAY_HTTP_ADDR", "127.0.0.1:8080");
    c->orders_url = vx_cfg_str("ORDERS_URL", "http://127.0.0.1:8081");
    c->inventory_url = vx_cfg_str("INVENTORY_URL", "http://127.0.0.1:8082");
    c->rr.commands_topic = vx_topic(VX_TOPIC_ORDERS_COMMANDS);
    c->rr.results_topic = vx_topic(VX_TOPIC_ORDERS_RESULTS);
    c->web.dir = vx_cfg_str("GATEWAY_WEB_DIR", VX_SRC_DIR "/gateway/web");
    c->web.topics[0] = c->rr.commands_topic;
    c->web.topics[1] = c->rr.results_topic;
    c->web.topics[2] = vx_topic(VX_TOPIC_INVENTORY_EVENTS);
    if (vx_cfg_int("GATEWAY_HTTP_THREADS", 2, 1, 64, &c->threads, errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_MAX_CONNECTIONS", 4096, 16, 1000000, &c->max_conns, errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_IDLE_TIMEOUT_S", 30, 1, 3600, &c->idle_timeout_s, errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_PER_IP_CONNECTIONS", 0, 0, 1000000, &c->per_ip_conns, errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_BODY_TIMEOUT_MS", 10000, 100, 3600000, &c->body_timeout_ms, errstr, errstr_size) ||
        (v[12] = vx_kafka_shutdown_ms(errstr, errstr_size)) < 0 ||
        vx_cfg_int("GATEWAY_TIMEOUT_MS", 5000, 1, 600000, &c->timeout_ms, errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_MAX_INFLIGHT", 10000, 1, 1000000, &v[0], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_ATTEMPT_TIMEOUT_MS", 1500, 10, 600000, &v[1], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_BACKOFF_BASE_MS", 50, 1, 60000, &v[2], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_BACKOFF_CAP_MS", 1000, 1, 600000, &v[3], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_PRODUCE_TIMEOUT_MS", 10000, 100, 3600000, &v[4], errstr, errstr_size) ||
        vx_cfg_double("GATEWAY_BREAKER_FAILURE_RATE", 0.5, 0.01, 1.0, &rate, errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_BREAKER_MIN_CALLS", 10, 1, 1000000, &v[5], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_BREAKER_WINDOW_MS", 10000, 1000, 60000, &v[6], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_BREAKER_OPEN_MS", 10000, 1, 3600000, &v[7], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_BREAKER_PROBES", 3, 1, 1000, &v[8], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_MAX_STREAMS", 256, 0, 100000, &v[9], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_STREAM_HEARTBEAT_MS", 15000, 100, 600000, &v[10], errstr, errstr_size) ||
        vx_cfg_int("GATEWAY_STREAM_FLUSH_MS", 100, 0, 5000, &v[11], errstr, errstr_size))
        return -1;
    c->web.max_streams = (int)v[9];
    c->web.heartbeat_ms = (int)v[10];
    c->web.flush_ms = (int)v[11];
    c->web.shutdown_ms = c->rr.shutdown_ms = (int)v[12];
    c->rr.max_inflight = (int)v[0];
    c->rr.attempt_timeout_ms = (int)v[1];
    c->rr.backoff_base_ms = (int)v[2];
    c->rr.backoff_cap_ms = (int)v[3];
    c->rr.produce_timeout_ms = (int)v[4];
    c->rr.breaker.failure_rate = rate;
    c->rr.breaker.min_calls = (int)v[5];
    c->rr.breaker.window_ms = (int)v[6];
    c->rr.breaker.open_ms = (int)v[7];
    c->rr.breaker.probes = (int)v[8];
    c->rr.breaker.call_ms = (int)c->timeout_ms;
    return 0;
}

/* ---- reads, relayed from the service that owns the data ---------------------------------------- */

typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static size_t on_body(char *p, size_t size, size_t n, void *opaque) {
    buf_t *b = opaque;
    size_t add = size * n;
    if (b->len + add + 1 > PROXY_BODY_CAP) return 0; /* abort: larger than we relay */
    if (b->len + add + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *d;
        while (cap < b->len + add + 1) cap *= 2;
        if (!(d = realloc(b->data, cap))) return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, add);
    b->len += add;
    return add;
}

/* One call to a service behind the gateway: method GET, or POST with body and the caller's
 * Authorization (borrowed; NULL for none). One libcurl handle per HTTP thread, kept so connections
 * to the services are reused. Fills *status and *ctype (libcurl's, valid until the next call on this
 * thread) and the caller's body (free body->data). Returns the libcurl result. */
static CURLcode fetch(const char *base, const char *path, const char *post_body, size_t post_len, const char *auth,
                      long timeout_ms, buf_t *body, long *status, char **ctype) {
    static __thread CURL *curl;
    struct curl_slist *hdrs = NULL;
    char url[1024], authz[600];
    CURLcode rc;

    *status = 0;
    *ctype = NULL;
    if (!curl && !(curl = curl_easy_init())) return CURLE_FAILED_INIT;
    snprintf(url, sizeof(url), "%s%s", base, path);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (post_body) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        if (auth && strlen(auth) < 512) {
            snprintf(authz, sizeof(authz), "Authorization: %s", auth);
            hdrs = curl_slist_append(hdrs, authz);
        }
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, post_body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)post_len);
    } else {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    }
    rc = curl_easy_perform(curl);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, status);
        curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, ctype);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    return rc;
}

/* Answers req with what the service answers (a problem 503 when it does not). */
static void relay_call(vx_http_req_t *req, const char *base, const char *path, const char *post_body, size_t post_len,
                       const char *auth) {
    buf_t body = {0};
    long status;
    char *ctype;
    CURLcode rc = fetch(base, path, post_body, post_len, auth, 3000, &body, &status, &ctype);

    if (rc == CURLE_OK) {
        vx_http_reply(req, (int)status, ctype ? ctype : "application/json", body.data ? body.data : "", body.len);
    } else {
        char detail[256];
        snprintf(detail, sizeof(detail), "the service behind this route did not answer: %s", curl_easy_strerror(rc));
        vx_http_add_header(req, "Retry-After", "1");
        vx_http_problem(req, 503, "Service unavailable", detail, NULL);
    }
    free(body.data);
}

static void relay(vx_http_req_t *req, const char *base, const char *path) {
    relay_call(req, base, path, NULL, 0, NULL);
}

/* GET /system: the gateway's own state and each service's /health and /ready, asked now (1 s each),
 * for the dashboard's System panel. A service that does not answer shows as such. */
static void system_state(gw_t *g, vx_http_req_t *req) {
    static const char *const names[2] = {"order-svc", "inventory-svc"};
    const char *bases[2] = {g->cfg.orders_url, g->cfg.inventory_url};
    json_object *o = json_object_new_object(), *gw = json_object_new_object(), *svcs = json_object_new_object();

    json_object_object_add(gw, "status", json_object_new_string("up"));
    gw_rr_health(g->rr, gw);
    gw_web_health(g->web, gw);
    json_object_object_add(gw, "chaos", vx_chaos_state());
    json_object_object_add(o, "gateway", gw);
    for (int i = 0; i < 2; i++) {
        json_object *sv = json_object_new_object();
        buf_t body = {0};
        long status;
        char *ctype;
        CURLcode rc = fetch(bases[i], "/health", NULL, 0, NULL, 1000, &body, &status, &ctype);
        json_object *h = rc == CURLE_OK && body.data ? json_tokener_parse(body.data) : NULL;
        json_object_object_add(sv, "health_status", json_object_new_int(rc == CURLE_OK ? (int)status : 0));
        json_object_object_add(sv, "health", h); /* null when it did not answer */
        free(body.data);
        body = (buf_t){0};
        rc = fetch(bases[i], "/ready", NULL, 0, NULL, 1000, &body, &status, &ctype);
        json_object_object_add(sv, "ready", json_object_new_boolean(rc == CURLE_OK && status == 200));
        free(body.data);
        json_object_object_add(svcs, names[i], sv);
    }
    json_object_object_add(o, "services", svcs);
    vx_http_reply_json(req, 200, o);
    json_object_put(o);
}

/* An id from the path is relayed only when it is made of safe characters. */
static int safe_id(const char *s) {
    size_t n = strlen(s);
    if (n < 1 || n > VX_MSG_MAX_ID) return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.'))
            return 0;
    return 1;
}

/* Answers a refused request with its problem (validate.h). */
static void refuse(vx_http_req_t *req, const gw_problem_t *p) {
    json_object *x = NULL;
    if (p->status == 415) vx_http_add_header(req, "Accept-Post", "application/json");
    if (p->field[0] || p->reason) {
        x = json_object_new_object();
        if (p->field[0]) json_object_object_add(x, "field", json_object_new_string(p->field));
        if (p->reason) json_object_object_add(x, "reason", json_object_new_string(p->reason));
    }
    vx_http_problem(req, p->status, p->title, p->detail, x);
}

/* ---- POST /orders: the engine's outcomes as HTTP ----------------------------------------------- */

/* The order as the API shows it, from its OrderResult. New object. */
static json_object *order_json(const vx_msg_t *r) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(r->order_id));
#define PUT(k, v)                                                                                             \
    if (v) json_object_object_add(o, k, json_object_new_string(v))
    PUT("customer_id", r->customer_id);
    PUT("status", r->status);
    PUT("reason", r->reason);
    PUT("product_id", r->product_id);
#undef PUT
    json_object_object_add(o, "items", vx_msg_lines_json(r));
    json_object_object_add(o, "idempotency_key", json_object_new_string(r->idempotency_key));
    return o;
}

static void retry_after(vx_http_req_t *req, long long ms) {
    char secs[24];
    snprintf(secs, sizeof(secs), "%lld", ms > 1000 ? (ms + 999) / 1000 : 1);
    vx_http_add_header(req, "Retry-After", secs);
}

/* Renders an outcome of the request-reply engine (reqreply.h): the only place its answers become
 * status codes. */
static void on_outcome(void *request, const gw_rr_outcome_t *o, void *opaque) {
    vx_http_req_t *req = request;
    json_object *body, *extra;
    char loc[64], detail[256];
    (void)opaque;

    if (o->order_id) {
        snprintf(loc, sizeof(loc), "/orders/%s", o->order_id);
        vx_http_add_header(req, "Location", loc);
        vx_http_add_header(req, "Idempotency-Key", o->key);
        if (o->replayed) vx_http_add_header(req, "Idempotent-Replayed", "true");
    }
    switch (o->kind) {
    case GW_RR_CONFIRMED:
        body = order_json(o->result);
        vx_http_reply_json(req, 201, body);
        json_object_put(body);
        break;
    case GW_RR_REJECTED:
        snprintf(detail, sizeof(detail), "order %s is %s: %s%s%s", o->order_id, o->result->status,
                 o->result->reason ? o->result->reason : "", o->result->product_id ? " " : "",
                 o->result->product_id ? o->result->product_id : "");
        extra = json_object_new_object();
        json_object_object_add(extra, "order", order_json(o->result));
        if (o->result->reason) json_object_object_add(extra, "reason", json_object_new_string(o->result->reason));
        if (o->result->product_id)
            json_object_object_add(extra, "product_id", json_object_new_string(o->result->product_id));
        vx_http_problem(req, 409, strcmp(o->result->status, "CANCELLED") == 0 ? "Order cancelled" : "Order rejected",
                        detail, extra);
        break;
    case GW_RR_ACCEPTED_LATE:
        body = json_object_new_object();
        json_object_object_add(body, "id", json_object_new_string(o->order_id));
        json_object_object_add(body, "status", json_object_new_string("PENDING"));
        json_object_object_add(body, "idempotency_key", json_object_new_string(o->key));
        vx_http_reply_json(req, 202, body);
        json_object_put(body);
        break;
    case GW_RR_UNAVAILABLE:
        retry_after(req, o->retry_after_ms);
        vx_http_problem(req, 503, "Service unavailable", o->detail, NULL);
        break;
    case GW_RR_KEY_REUSED:
        vx_http_problem(req, 422, "Idempotency key reused", o->detail, NULL);
        break;
    case GW_RR_BUSY:
        retry_after(req, o->retry_after_ms);
        vx_http_problem(req, 429, "Too many requests", "too many orders are in flight; retry shortly", NULL);
        break;
    case GW_RR_FAILED:
        vx_http_problem(req, 500, "Internal error", o->detail, NULL);
        break;
    }
}

static void on_park(void *request, void *opaque) {
    (void)opaque;
    vx_http_suspend(request);
}

/* ---- POST /orders ----------------------------------------------------------------------------- */

/* POST /orders's headers each at most once (two Idempotency-Keys would name two orders): a check
 * of the request's header list, which validate.c's pure functions do not see. Else answers 400 and
 * returns 0. */
static int order_headers_once(vx_http_req_t *req) {
    static const char *const once[] = {"Content-Type", "Idempotency-Key", "Request-Timeout"};
    char detail[200];

    for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++) {
        int n = vx_http_header_count(req, once[i]);
        if (n <= 1) continue;
        snprintf(detail, sizeof(detail), "the %s header is given %d times; send it once", once[i], n);
        json_object *x = json_object_new_object();
        json_object_object_add(x, "field", json_object_new_string(once[i]));
        vx_http_problem(req, 400, "Invalid request", detail, x);
        return 0;
    }
    return 1;
}

static void post_order(gw_t *g, vx_http_req_t *req) {
    const char *key = vx_http_header(req, "Idempotency-Key");
    char made_key[37];
    long long timeout = g->cfg.timeout_ms;
    size_t len;
    const char *body = vx_http_body(req, &len);
    gw_problem_t p;
    vx_msg_t m;

    if (gw_validate_order(vx_http_header(req, "Content-Type"), key, vx_http_header(req, "Request-Timeout"), body, len,
                          &timeout, &m, &p)) {
        refuse(req, &p);
        return;
    }
    if (!key) {
        uuid_t u;
        uuid_generate_random(u);
        uuid_unparse_lower(u, made_key);
        key = made_key;
    }
    gw_rr_submit(g->rr, req, &m, key, timeout, timeout == g->cfg.timeout_ms);
    vx_msg_clear(&m);
}

/* POST /orders/{id}/cancel: a CancelOrder to Kafka under the request's Idempotency-Key (one is made
 * when absent). Answered 202 at once: the cancellation's outcome is the order's next OrderResult,
 * seen by GET /orders/{id} (and on the dashboard's live stream). */
static void cancel_order(gw_t *g, vx_http_req_t *req, const char *id) {
    const char *key = vx_http_header(req, "Idempotency-Key");
    char made[37], err[256], loc[128];
    gw_problem_t p;
    json_object *o;

    if (gw_validate_key(key, &p)) {
        refuse(req, &p);
        return;
    }
    if (!key) {
        uuid_t u;
        uuid_generate_random(u);
        uuid_unparse_lower(u, made);
        key = made;
    }
    if (gw_rr_cancel(g->rr, id, key, err, sizeof(err))) {
        vx_http_add_header(req, "Retry-After", "1");
        vx_http_problem(req, 503, "Service unavailable", err, NULL);
        return;
    }
    snprintf(loc, sizeof(loc), "/orders/%s", id);
    vx_http_add_header(req, "Location", loc);
    vx_http_add_header(req, "Idempotency-Key", key);
    o = json_object_new_object();
    json_object_object_add(o, "order_id", json_object_new_string(id));
    json_object_object_add(o, "idempotency_key", json_object_new_string(key));
    json_object_object_add(o, "status", json_object_new_string("CANCEL_REQUESTED"));
    vx_http_reply_json(req, 202, o);
    json_object_put(o);
}

/* ---- routing ---------------------------------------------------------------------------------- */

static void on_http(vx_http_req_t *req, void *opaque) {
    gw_t *g = opaque;
    const char *method = vx_http_method(req);
    int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    char buf[512], path[256];
    const char *seg[4];
    int n = vx_http_segments(req, buf, sizeof(buf), seg, 3);

    if (n == 1 && strcmp(seg[0], "orders") == 0) {
        if (strcmp(method, "POST") == 0) {
            vx_http_route(req, "POST /orders");
            if (order_headers_once(req)) post_order(g, req);
        } else if (get) {
            vx_http_route(req, "GET /orders");
            const char *limit = vx_http_arg(req, "limit");
            char *end = NULL;
            long l = limit ? strtol(limit, &end, 10) : 20;
            if (limit && (*end || l < 1 || l > 1000)) {
                vx_http_problem(req, 400, "Invalid request", "limit must be an integer from 1 to 1000", NULL);
                return;
            }
            snprintf(path, sizeof(path), "/orders?limit=%ld", l);
            relay(req, g->cfg.orders_url, path);
        } else {
            vx_http_method_not_allowed(req, "GET, POST");
        }
    } else if (n == 2 && (strcmp(seg[0], "orders") == 0 || strcmp(seg[0], "products") == 0)) {
        vx_http_route(req, seg[0][0] == 'o' ? "GET /orders/{id}" : "GET /products/{id}");
        if (!get) {
            vx_http_method_not_allowed(req, "GET, HEAD");
        } else if (!safe_id(seg[1])) {
            vx_http_not_found(req);
        } else {
            snprintf(path, sizeof(path), "/%s/%s", seg[0], seg[1]);
            relay(req, seg[0][0] == 'o' ? g->cfg.orders_url : g->cfg.inventory_url, path);
        }
    } else if (n == 3 && strcmp(seg[0], "orders") == 0 && strcmp(seg[2], "cancel") == 0) {
        vx_http_route(req, "POST /orders/{id}/cancel");
        if (strcmp(method, "POST") != 0)
            vx_http_method_not_allowed(req, "POST");
        else if (!safe_id(seg[1]))
            vx_http_not_found(req);
        else
            cancel_order(g, req, seg[1]);
    } else if (n == 1 && strcmp(seg[0], "products") == 0) {
        vx_http_route(req, "GET /products");
        if (get)
            relay(req, g->cfg.inventory_url, "/products");
        else
            vx_http_method_not_allowed(req, "GET, HEAD");
    } else if (n == 2 && strcmp(seg[0], "admin") == 0 && strcmp(seg[1], "chaos") == 0) {
        vx_http_route(req, "POST /admin/chaos");
        vx_http_chaos_admin(req);
    } else if (n == 3 && strcmp(seg[0], "admin") == 0 && strcmp(seg[1], "chaos") == 0 &&
               (strcmp(seg[2], "order-svc") == 0 || strcmp(seg[2], "inventory-svc") == 0)) {
        /* the dashboard's chaos switches reach the services through the gateway: one origin */
        vx_http_route(req, "POST /admin/chaos/{service}");
        if (strcmp(method, "POST") != 0) {
            vx_http_method_not_allowed(req, "POST");
        } else {
            size_t len;
            const char *body = vx_http_body(req, &len);
            relay_call(req, seg[2][0] == 'o' ? g->cfg.orders_url : g->cfg.inventory_url, "/admin/chaos", body, len,
                       vx_http_header(req, "Authorization"));
        }
    } else if (n == 1 && strcmp(seg[0], "events") == 0) {
        gw_web_events(g->web, req);
    } else if (n == 1 && strcmp(seg[0], "system") == 0) {
        vx_http_route(req, "GET /system");
        if (get)
            system_state(g, req);
        else
            vx_http_method_not_allowed(req, "GET, HEAD");
    } else if (n == 1 && !get &&
               (strcmp(seg[0], "health") == 0 || strcmp(seg[0], "ready") == 0 || strcmp(seg[0], "metrics") == 0)) {
        vx_http_method_not_allowed(req, "GET, HEAD");
    } else if (n == 1 && strcmp(seg[0], "health") == 0) {
        vx_http_route(req, "GET /health");
        json_object *o = json_object_new_object();
        json_object_object_add(o, "status", json_object_new_string("up"));
        gw_rr_health(g->rr, o);
        gw_web_health(g->web, o);
        json_object_object_add(o, "chaos", vx_chaos_state());
        vx_http_reply_json(req, 200, o);
        json_object_put(o);
    } else if (n == 1 && strcmp(seg[0], "ready") == 0) {
        vx_http_route(req, "GET /ready");
        if (gw_rr_ready(g->rr))
            vx_http_reply(req, 200, "application/json", "{\"status\":\"ready\"}", 18);
        else
            vx_http_problem(req, 503, "Not ready", "the broker is unreachable", NULL);
    } else if (n == 1 && strcmp(seg[0], "metrics") == 0) {
        vx_http_route(req, "GET /metrics");
        vx_http_metrics(req);
    } else if (!gw_web_file(g->web, req, vx_http_path(req))) {
        vx_http_not_found(req);
    }
}

int main(void) {
    gw_t g = {0};
    char err[512];
    struct sigaction sa = {0};
    int rc = 1;

    vx_log_init(SERVICE);
    vx_metrics_service(SERVICE);
    if (load_config(&g.cfg, err, sizeof(err)) || vx_chaos_init(err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "bad_config", "error", err, NULL);
        return 2;
    }
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    g.cfg.rr.answer = on_outcome;
    g.cfg.rr.park = on_park;
    /* Credentials the broker refuses are the operator's to correct: stop at once, saying so. A broker
       that does not answer yet is waited for by gw_rr_start, as before. */
    switch (vx_kafka_check_broker(VX_KAFKA_PRODUCER, 10000, err, sizeof(err))) {
    case -1:
        vx_log(VX_LOG_ERROR, "kafka_auth_failed", "error", err, NULL);
        goto out;
    case 2:
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        goto out;
    }
    if (!(g.rr = gw_rr_start(&g.cfg.rr, err, sizeof(err)))) {
        vx_log(VX_LOG_ERROR, "kafka_setup_failed", "error", err, NULL);
        goto out;
    }
    if (!(g.web = gw_web_start(&g.cfg.web, err, sizeof(err)))) {
        vx_log(VX_LOG_ERROR, "web_setup_failed", "error", err, NULL);
        goto out;
    }
    {
        vx_http_opts_t o = {.addr = g.cfg.http_addr,
                            .threads = (int)g.cfg.threads,
                            .body_cap = VX_MSG_MAX_BYTES,
                            .max_conns = (unsigned)g.cfg.max_conns,
                            .idle_timeout_s = (unsigned)g.cfg.idle_timeout_s,
                            .per_ip_conns = (unsigned)g.cfg.per_ip_conns,
                            .body_timeout_ms = (unsigned)g.cfg.body_timeout_ms,
                            .handler = on_http,
                            .opaque = &g};
        if (!(g.http = vx_http_start(&o, err, sizeof(err)))) {
            vx_log(VX_LOG_ERROR, "http_failed", "error", err, NULL);
            goto out;
        }
    }
    vx_log(VX_LOG_INFO, "started", "http", g.cfg.http_addr, "commands", g.cfg.rr.commands_topic, "results",
           g.cfg.rr.results_topic, NULL);
    vx_log_flush();
    while (!stopping) pause();
    rc = 0;
    vx_log(VX_LOG_INFO, "stopping", NULL);
out:
    /* Parked requests are answered (202/503) by gw_rr_stop before the HTTP server goes. */
    gw_web_shutdown(g.web);
    gw_rr_stop(g.rr);
    vx_http_stop(g.http);
    gw_web_free(g.web);
    curl_global_cleanup();
    vx_log_flush();
    return rc;
}
