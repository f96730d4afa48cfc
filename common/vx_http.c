/* vx_http: HTTP plumbing over libmicrohttpd. See vx_http.h.
 *
 * A request moves READING -> (handler) -> ANSWERED or SUSPENDED -> (resume) -> ANSWERED. A reply
 * only builds the response; the access callback queues it, in libmicrohttpd's own thread. */
#include "vx_http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#include "vx_chaos.h"
#include "vx_config.h"
#include "vx_log.h"
#include "vx_metrics.h"

#define MAX_RESP_HEADERS 8

enum req_state { READING, SUSPENDED, ANSWERED };

struct vx_http_s {
    struct MHD_Daemon *mhd;
    vx_http_opts_t opts;
    vx_metric_t *responses, *duration; /* per route (and code): the process's families */
};

struct vx_http_req_s {
    vx_http_t *srv;
    struct MHD_Connection *conn;
    const char *method, *path;
    char *body;
    size_t len, cap;
    int too_large;
    int parked; /* set by vx_http_suspend, only in the handler's thread */
    enum req_state state;
    struct MHD_Response *resp;
    int status;
    const char *route; /* for the metrics: set by the handler, "other" when it names none */
    long long started_us;
    char *hdr_name[MAX_RESP_HEADERS], *hdr_value[MAX_RESP_HEADERS];
    int nhdrs;
};

const char *vx_http_method(const vx_http_req_t *req) { return req->method; }
const char *vx_http_path(const vx_http_req_t *req) { return req->path; }
const char *vx_http_header(const vx_http_req_t *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}
typedef struct {
    const char *name;
    int n;
} header_count_t;

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    header_count_t *c = cls;
    (void)kind;
    (void)value;
    if (key && strcasecmp(key, c->name) == 0) c->n++;
    return MHD_YES;
}

int vx_http_header_count(const vx_http_req_t *req, const char *name) {
    header_count_t c = {name, 0};
    MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_header, &c);
    return c.n;
}

const char *vx_http_arg(const vx_http_req_t *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}
const char *vx_http_body(const vx_http_req_t *req, size_t *len) {
    *len = req->len;
    return req->body ? req->body : "";
}

int vx_http_segments(const vx_http_req_t *req, char *buf, size_t size, const char **seg, int max) {
    int n = 0;
    char *save = NULL, *tok;

    snprintf(buf, size, "%s", req->path);
    for (tok = strtok_r(buf, "/", &save); tok && n < max; tok = strtok_r(NULL, "/", &save)) seg[n++] = tok;
    return tok ? max + 1 : n; /* more segments than max: no route will match */
}

void vx_http_add_header(vx_http_req_t *req, const char *name, const char *value) {
    if (req->nhdrs == MAX_RESP_HEADERS) return;
    req->hdr_name[req->nhdrs] = strdup(name);
    req->hdr_value[req->nhdrs] = strdup(value);
    req->nhdrs++;
}

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void vx_http_route(vx_http_req_t *req, const char *route) { req->route = route; }

static void count(vx_http_req_t *req, int status, long long us) {
    char code[8];
    const char *route = req->route ? req->route : "other";
    snprintf(code, sizeof(code), "%d", status);
    vx_metric_add(req->srv->responses, VX_L(route, code), 1);
    vx_metric_observe(req->srv->duration, VX_L(route), (double)us / 1e6);
}

void vx_http_reply(vx_http_req_t *req, int status, const char *content_type, const char *body, size_t len) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    enum req_state prev = req->state;

    count(req, status, now_us() - req->started_us);
    if (content_type) MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (int i = 0; i < req->nhdrs; i++) MHD_add_response_header(r, req->hdr_name[i], req->hdr_value[i]);
    req->status = status;
    req->resp = r;
    req->state = ANSWERED;
    if (prev == SUSPENDED) MHD_resume_connection(req->conn);
}

void vx_http_reply_json(vx_http_req_t *req, int status, json_object *obj) {
    size_t len;
    const char *s = json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    vx_http_reply(req, status, "application/json", s, len);
}

void vx_http_problem(vx_http_req_t *req, int status, const char *title, const char *detail, json_object *extra) {
    json_object *p = json_object_new_object();
    char type[160];
    size_t i, j = 0;

    /* the type URI is derived from the title: "Invalid body" -> .../problems/invalid-body */
    j = (size_t)snprintf(type, sizeof(type), "https://valerix.dev/problems/");
    for (i = 0; title[i] && j + 1 < sizeof(type); i++)
        type[j++] = title[i] == ' ' ? '-' : (title[i] >= 'A' && title[i] <= 'Z') ? (char)(title[i] + 32) : title[i];
    type[j] = '\0';
    json_object_object_add(p, "type", json_object_new_string(type));
    json_object_object_add(p, "title", json_object_new_string(title));
    json_object_object_add(p, "status", json_object_new_int(status));
    if (detail) json_object_object_add(p, "detail", json_object_new_string(detail));
    json_object_object_add(p, "instance", json_object_new_string(req->path));
    if (extra) {
        json_object_object_foreach(extra, k, v) json_object_object_add(p, k, json_object_get(v));
        json_object_put(extra);
    }
    {
        size_t len;
        const char *s = json_object_to_json_string_length(p, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        vx_http_reply(req, status, "application/problem+json", s, len);
    }
    json_object_put(p);
}

void vx_http_not_found(vx_http_req_t *req) {
    vx_http_problem(req, 404, "Not found", "no such resource", NULL);
}

void vx_http_method_not_allowed(vx_http_req_t *req, const char *allow) {
    char detail[128];
    snprintf(detail, sizeof(detail), "%s is not allowed here; use %s", req->method, allow);
    vx_http_add_header(req, "Allow", allow);
    vx_http_problem(req, 405, "Method not allowed", detail, NULL);
}

void vx_http_suspend(vx_http_req_t *req) {
    req->parked = 1;
    req->state = SUSPENDED;
    MHD_suspend_connection(req->conn);
}

static enum MHD_Result queue(vx_http_req_t *req) {
    enum MHD_Result ret = MHD_queue_response(req->conn, (unsigned)req->status, req->resp);
    MHD_destroy_response(req->resp);
    req->resp = NULL;
    return ret;
}

static enum MHD_Result answer_too_large(vx_http_req_t *req) {
    char detail[96];
    snprintf(detail, sizeof(detail), "the body is larger than %zu bytes", req->srv->opts.body_cap);
    vx_http_problem(req, 413, "Payload too large", detail, NULL);
    return queue(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    vx_http_t *srv = cls;
    vx_http_req_t *req = *con_cls;
    (void)version;

    if (!req) { /* headers are in; the body (if any) comes in the next calls */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!(req = calloc(1, sizeof(*req)))) return MHD_NO;
        req->srv = srv;
        req->started_us = now_us();
        req->conn = conn;
        req->method = method;
        req->path = url;
        req->too_large = cl && strtoull(cl, NULL, 10) > srv->opts.body_cap;
        *con_cls = req;
        return MHD_YES; /* a body over the cap is drained and discarded: answering before it is read
                            can make the client's TCP stack drop our 413 with a reset */
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (srv->opts.body_timeout_ms && now_us() - req->started_us > (long long)srv->opts.body_timeout_ms * 1000) {
            vx_log(VX_LOG_WARN, "http_body_too_slow", "path", url, "detail",
                   "the body did not arrive within the body timeout; connection closed", NULL);
            return MHD_NO; /* a trickling client holds no slot for longer than this */
        }
        if (req->too_large) return MHD_YES; /* drain and discard */
        if (req->len + n > srv->opts.body_cap) {
            req->too_large = 1;
            free(req->body);
            req->body = NULL;
            req->len = 0;
            return MHD_YES;
        }
        if (req->len + n + 1 > req->cap) {
            size_t cap = req->cap ? req->cap : 1024;
            char *b;
            while (cap < req->len + n + 1) cap *= 2;
            if (!(b = realloc(req->body, cap))) return MHD_NO;
            req->body = b;
            req->cap = cap;
        }
        memcpy(req->body + req->len, upload_data, n);
        req->len += n;
        req->body[req->len] = '\0';
        return MHD_YES;
    }
    if (req->state == ANSWERED && req->resp) return queue(req); /* woken after vx_http_suspend */
    if (req->too_large) return answer_too_large(req);
    srv->opts.handler(req, srv->opts.opaque);
    if (req->parked) return MHD_YES; /* req belongs to another thread now, even if answered already */
    if (req->state == ANSWERED && req->resp) return queue(req);
    vx_http_problem(req, 500, "Internal error", "the handler gave no answer", NULL);
    return queue(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode t) {
    vx_http_req_t *req = *con_cls;
    (void)cls;
    (void)conn;
    (void)t;
    if (!req) return;
    if (req->resp) MHD_destroy_response(req->resp);
    for (int i = 0; i < req->nhdrs; i++) {
        free(req->hdr_name[i]);
        free(req->hdr_value[i]);
    }
    free(req->body);
    free(req);
    *con_cls = NULL;
}

/* Raises the soft open-files limit to the hard one and returns how many connections fit in it,
 * keeping 256 descriptors for everything else (Kafka, PostgreSQL, files, logs). */
static unsigned fit_fd_limit(unsigned want) {
    struct rlimit rl;
    char n[24], fit[24];
    unsigned room;

    if (getrlimit(RLIMIT_NOFILE, &rl)) return want;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t before = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl)) rl.rlim_cur = before;
    }
    room = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1u << 24 ? 1u << 24
           : rl.rlim_cur > 512                                   ? (unsigned)rl.rlim_cur - 256
                                                                 : (unsigned)rl.rlim_cur / 2;
    if (want <= room) return want;
    snprintf(n, sizeof(n), "%u", want);
    snprintf(fit, sizeof(fit), "%u", room);
    vx_log(VX_LOG_WARN, "http_connection_limit_lowered", "#wanted", n, "#limit", fit, "detail",
           "the open-files limit (ulimit -n, hard) leaves room for no more connections", NULL);
    return room;
}

vx_http_t *vx_http_start(const vx_http_opts_t *opts, char *errstr, size_t errstr_size) {
    struct sockaddr_in sa;
    char host[64];
    int port;
    unsigned max_conns;
    vx_http_t *srv;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;

    if (vx_cfg_addr(opts->addr, host, sizeof(host), &port, errstr, errstr_size)) return NULL;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        snprintf(errstr, errstr_size, "address \"%s\": host must be an IPv4 address", opts->addr);
        return NULL;
    }
    if (!(srv = calloc(1, sizeof(*srv)))) return NULL;
    srv->opts = *opts;
    srv->responses = vx_metric_new(VX_COUNTER, "valerix_http_responses_total", "HTTP answers by route and status code.",
                                   "route,code", NULL, 0);
    srv->duration = vx_metric_new(VX_HISTOGRAM, "valerix_http_request_duration_seconds",
                                  "Time from a request's first byte to its answer, by route.", "route",
                                  vx_metric_seconds, vx_metric_nseconds);
    max_conns = fit_fd_limit(opts->max_conns ? opts->max_conns : (unsigned)FD_SETSIZE - 4);
    srv->mhd = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, &sa,
                                MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_THREAD_POOL_SIZE,
                                (unsigned)(opts->threads > 1 ? opts->threads : 0), MHD_OPTION_CONNECTION_TIMEOUT,
                                opts->idle_timeout_s ? opts->idle_timeout_s : 60u, MHD_OPTION_CONNECTION_LIMIT,
                                max_conns, MHD_OPTION_PER_IP_CONNECTION_LIMIT, opts->per_ip_conns,
                                MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!srv->mhd) {
        snprintf(errstr, errstr_size, "cannot listen on %s (in use?)", opts->addr);
        free(srv);
        return NULL;
    }
    return srv;
}

struct vx_http_stream_s {
    struct MHD_Connection *conn;
    long (*read)(void *opaque, char *buf, size_t max);
    void (*done)(void *opaque);
    void *opaque;
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    vx_http_stream_t *s = cls;
    long n = s->read(s->opaque, buf, max);
    (void)pos;
    return n < 0 ? (ssize_t)MHD_CONTENT_READER_END_OF_STREAM : (ssize_t)n;
}

static void stream_free(void *cls) {
    vx_http_stream_t *s = cls;
    s->done(s->opaque);
    free(s);
}

vx_http_stream_t *vx_http_stream(vx_http_req_t *req, int status, const char *content_type,
                                 long (*read)(void *opaque, char *buf, size_t max), void (*done)(void *opaque),
                                 void *opaque) {
    vx_http_stream_t *s = calloc(1, sizeof(*s));
    struct MHD_Response *r;

    if (!s) {
        done(opaque);
        return NULL;
    }
    *s = (vx_http_stream_t){.conn = req->conn, .read = read, .done = done, .opaque = opaque};
    if (!(r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_read, s, stream_free))) {
        stream_free(s);
        return NULL;
    }
    count(req, status, now_us() - req->started_us);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    for (int i = 0; i < req->nhdrs; i++) MHD_add_response_header(r, req->hdr_name[i], req->hdr_value[i]);
    req->status = status;
    req->resp = r;
    req->state = ANSWERED;
    return s;
}

void vx_http_stream_park(vx_http_stream_t *s) { MHD_suspend_connection(s->conn); }
void vx_http_stream_wake(vx_http_stream_t *s) { MHD_resume_connection(s->conn); }

void vx_http_stop(vx_http_t *srv) {
    if (!srv) return;
    MHD_stop_daemon(srv->mhd);
    free(srv);
}

void vx_http_chaos_admin(vx_http_req_t *req) {
    const char *auth = vx_http_header(req, "Authorization"), *text;
    size_t len;
    char err[256];
    json_object *st;

    /* The route always exists, as schemas/openapi.yaml has it: whether chaos is switched on here is
     * told only to a caller with a bearer token (401 first for everyone else, on or off). */
    if (strcmp(vx_http_method(req), "POST") != 0) {
        vx_http_method_not_allowed(req, "POST");
        return;
    }
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || !auth[7]) {
        vx_http_add_header(req, "WWW-Authenticate", "Bearer realm=\"chaos\"");
        vx_http_problem(req, 401, "Unauthorized", "POST /admin/chaos needs Authorization: Bearer <VX_CHAOS_TOKEN>", NULL);
        return;
    }
    if (!vx_chaos_admin_enabled()) {
        vx_http_problem(req, 403, "Forbidden", "chaos is switched off here: the service was started without VX_CHAOS_TOKEN",
                        NULL);
        return;
    }
    if (!vx_chaos_token_ok(auth + 7)) {
        vx_http_problem(req, 403, "Forbidden", "the bearer token is not this service's VX_CHAOS_TOKEN", NULL);
        return;
    }
    text = vx_http_body(req, &len);
    if (vx_chaos_apply_json(text, len, err, sizeof(err))) {
        vx_http_problem(req, 400, "Bad chaos settings", err, NULL);
        return;
    }
    st = vx_chaos_state();
    vx_log(VX_LOG_WARN, "chaos_changed", "state", json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN), NULL);
    vx_http_reply_json(req, 200, st);
    json_object_put(st);
}

void vx_http_metrics(vx_http_req_t *req) {
    size_t len;
    char *text = vx_metrics_render(&len);
    if (!text) {
        vx_http_problem(req, 500, "Internal error", "out of memory", NULL);
        return;
    }
    vx_http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}
