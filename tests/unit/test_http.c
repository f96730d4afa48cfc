/* Unit tests of vx_http over a real socket on 127.0.0.1: a handler's answer reaches the client, a
 * body above the cap is answered 413 problem+json without calling the handler, and a suspended
 * request is answered later from another thread without holding up other requests; vx_chaos's
 * POST /admin/chaos asks for the bearer token and changes nothing on a bad request.
 * Criterion runs tests in parallel processes, so every test listens on a port of its own. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "vx_chaos.h"
#include "vx_http.h"
#include "vx_metrics.h"

static char errstr[256];

/* ---- the server under test ------------------------------------------------------------------- */

struct server {
    vx_http_t *srv;
    int port;
    int calls; /* handler calls, atomically counted */
    int later_ms;  /* how long /later stays suspended */
    pthread_t later;
    int later_started, later_answered;
    vx_http_req_t *parked;
};

static void *answer_later(void *arg) {
    struct server *s = arg;
    usleep((useconds_t)s->later_ms * 1000);
    __atomic_store_n(&s->later_answered, 1, __ATOMIC_SEQ_CST);
    vx_http_reply(s->parked, 202, "text/plain", "later", 5);
    return NULL;
}

static void handler(vx_http_req_t *req, void *opaque) {
    struct server *s = opaque;
    const char *path = vx_http_path(req);

    __atomic_add_fetch(&s->calls, 1, __ATOMIC_SEQ_CST);
    if (strcmp(path, "/hello") == 0) {
        vx_http_route(req, "GET /hello");
        vx_http_reply(req, 200, "text/plain", "hello", 5);
    } else if (strcmp(path, "/echo") == 0) {
        size_t n;
        const char *body = vx_http_body(req, &n);
        vx_http_add_header(req, "X-Method", vx_http_method(req));
        vx_http_reply(req, 200, "application/octet-stream", body, n);
    } else if (strcmp(path, "/later") == 0) {
        vx_http_suspend(req); /* before another thread may touch req */
        s->parked = req;
        cr_assert_eq(pthread_create(&s->later, NULL, answer_later, s), 0);
        s->later_started = 1;
    } else if (strcmp(path, "/silent") == 0) {
        /* no answer */
    } else if (strcmp(path, "/admin/chaos") == 0) {
        vx_http_chaos_admin(req);
    } else if (strcmp(path, "/only-get") == 0) {
        vx_http_method_not_allowed(req, "GET");
    } else if (strcmp(path, "/arg") == 0) {
        char out[256];
        const char *q = vx_http_arg(req, "q"), *h = vx_http_header(req, "X-Test");
        int n = snprintf(out, sizeof(out), "q=%s h=%s", q ? q : "(none)", h ? h : "(none)");
        vx_http_reply(req, 200, "text/plain", out, (size_t)n);
    } else if (strncmp(path, "/segs/", 6) == 0) {
        char buf[256], out[256];
        const char *seg[3];
        int n = vx_http_segments(req, buf, sizeof(buf), seg, 3), len;
        len = snprintf(out, sizeof(out), "%d", n);
        for (int i = 0; i < n && i < 3; i++) len += snprintf(out + len, sizeof(out) - (size_t)len, " %s", seg[i]);
        vx_http_reply(req, 200, "text/plain", out, (size_t)len);
    } else {
        vx_http_not_found(req);
    }
}

static struct server *server_start(int port, int threads, size_t body_cap) {
    struct server *s = calloc(1, sizeof(*s));
    char addr[32];
    vx_http_opts_t o = {.addr = addr, .threads = threads, .body_cap = body_cap, .handler = handler};

    cr_assert_not_null(s);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    o.opaque = s;
    s->port = port;
    s->later_ms = 300;
    s->srv = vx_http_start(&o, errstr, sizeof(errstr));
    cr_assert_not_null(s->srv, "%s", errstr);
    return s;
}

static void server_stop(struct server *s) {
    if (s->later_started) pthread_join(s->later, NULL);
    vx_http_stop(s->srv);
    free(s);
}

/* ---- a raw HTTP/1.1 client ------------------------------------------------------------------- */

struct response {
    int status;
    char head[2048];
    char body[8192];
    size_t body_len;
};

static int connect_to(int port) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct timeval tv = {.tv_sec = 5};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert_geq(fd, 0);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect to port %d", port);
    return fd;
}

static void send_all(int fd, const char *buf, size_t len) {
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "send");
        buf += n;
        len -= (size_t)n;
    }
}

/* Reads until the server closes (requests say Connection: close) and splits the answer. */
static void read_response(int fd, struct response *r) {
    static char raw[16384];
    size_t len = 0;
    ssize_t n;
    char *sep;

    while (len < sizeof(raw) - 1 && (n = recv(fd, raw + len, sizeof(raw) - 1 - len, 0)) > 0) len += (size_t)n;
    raw[len] = '\0';
    close(fd);
    memset(r, 0, sizeof(*r));
    cr_assert_eq(sscanf(raw, "HTTP/1.1 %d", &r->status), 1, "not an HTTP answer: \"%s\"", raw);
    sep = strstr(raw, "\r\n\r\n");
    cr_assert_not_null(sep, "no end of headers: \"%s\"", raw);
    snprintf(r->head, sizeof(r->head), "%.*s", (int)(sep - raw), raw);
    r->body_len = len - (size_t)(sep + 4 - raw);
    memcpy(r->body, sep + 4, r->body_len);
    r->body[r->body_len] = '\0';
}

static void request(int port, const char *raw, struct response *r) {
    int fd = connect_to(port);
    send_all(fd, raw, strlen(raw));
    read_response(fd, r);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The member `name` of a JSON object text, as a string (static buffer), or NULL. */
static const char *json_member(const char *text, const char *name) {
    static char out[256];
    json_object *o = json_tokener_parse(text), *v;
    const char *s = NULL;

    if (o && json_object_object_get_ex(o, name, &v)) {
        snprintf(out, sizeof(out), "%s", json_object_get_string(v));
        s = out;
    }
    json_object_put(o);
    return s;
}

/* ---- tests ----------------------------------------------------------------------------------- */

Test(http, handler_answer_reaches_the_client) {
    struct server *s = server_start(18991, 1, 1024);
    struct response r;

    request(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "hello");
    cr_expect_not_null(strcasestr(r.head, "Content-Type: text/plain"), "%s", r.head);
    server_stop(s);
}

Test(http, body_within_the_cap_reaches_the_handler_whole) {
    struct server *s = server_start(18992, 1, 16);
    struct response r;

    request(s->port,
            "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 16\r\n\r\n0123456789abcdef", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_str_eq(r.body, "0123456789abcdef");
    cr_expect_not_null(strcasestr(r.head, "X-Method: POST"), "%s", r.head);
    server_stop(s);
}

Test(http, content_length_above_the_cap_is_413_problem_without_the_handler) {
    struct server *s = server_start(18993, 1, 16);
    struct response r;
    char req[256];

    snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 17\r\n\r\n%s",
             "0123456789abcdefg");
    request(s->port, req, &r);
    cr_expect_eq(r.status, 413);
    cr_expect_not_null(strcasestr(r.head, "Content-Type: application/problem+json"), "%s", r.head);
    cr_expect_str_eq(json_member(r.body, "status"), "413", "%s", r.body);
    cr_expect_str_eq(json_member(r.body, "instance"), "/echo", "%s", r.body);
    cr_expect_str_eq(json_member(r.body, "type"), "https://valerix.dev/problems/payload-too-large", "%s", r.body);
    cr_expect_not_null(strstr(r.body, "16"), "the detail gives the cap: %s", r.body);
    cr_expect_eq(__atomic_load_n(&s->calls, __ATOMIC_SEQ_CST), 0, "the handler was called");
    server_stop(s);
}

Test(http, chunked_body_growing_past_the_cap_is_413) {
    struct server *s = server_start(18994, 1, 16);
    struct response r;

    request(s->port,
            "POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            "a\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n",
            &r);
    cr_expect_eq(r.status, 413);
    cr_expect_eq(__atomic_load_n(&s->calls, __ATOMIC_SEQ_CST), 0, "the handler was called");
    server_stop(s);
}

Test(http, suspended_request_is_answered_later_from_another_thread) {
    struct server *s = server_start(18995, 1, 1024);
    struct response r;
    double t0 = now_s(), took;

    request(s->port, "GET /later HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    took = now_s() - t0;
    cr_expect_eq(r.status, 202);
    cr_expect_str_eq(r.body, "later");
    cr_expect_geq(took, 0.25, "answered after %.3f s, before the other thread replied", took);
    server_stop(s);
}

Test(http, suspended_request_does_not_hold_up_others) {
    static const char later[] = "GET /later HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    struct server *s = server_start(18996, 1, 1024); /* one polling thread */
    struct response r;
    int parked;

    s->later_ms = 1500;
    parked = connect_to(s->port);
    send_all(parked, later, strlen(later));
    while (!__atomic_load_n(&s->calls, __ATOMIC_SEQ_CST)) usleep(1000); /* /later is parked */
    request(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_eq(r.status, 200);
    cr_expect_eq(__atomic_load_n(&s->later_answered, __ATOMIC_SEQ_CST), 0,
                 "the second request was answered only after the suspended one");
    read_response(parked, &r);
    cr_expect_eq(r.status, 202);
    server_stop(s);
}

Test(http, handler_without_an_answer_gives_500_problem) {
    struct server *s = server_start(18997, 1, 1024);
    struct response r;

    request(s->port, "GET /silent HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_eq(r.status, 500);
    cr_expect_str_eq(json_member(r.body, "status"), "500", "%s", r.body);
    server_stop(s);
}

Test(http, not_found_and_method_not_allowed_are_problems) {
    struct server *s = server_start(18998, 1, 1024);
    struct response r;

    request(s->port, "GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_eq(r.status, 404);
    cr_expect_str_eq(json_member(r.body, "instance"), "/nowhere", "%s", r.body);
    cr_expect_str_eq(json_member(r.body, "type"), "https://valerix.dev/problems/not-found", "%s", r.body);

    request(s->port, "DELETE /only-get HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_eq(r.status, 405);
    cr_expect_not_null(strcasestr(r.head, "Allow: GET"), "%s", r.head);
    cr_expect_not_null(strstr(json_member(r.body, "detail"), "DELETE"), "%s", r.body);
    server_stop(s);
}

Test(http, request_accessors_see_arguments_headers_and_segments) {
    struct server *s = server_start(18999, 1, 1024);
    struct response r;

    request(s->port, "GET /arg?q=abc HTTP/1.1\r\nHost: t\r\nX-Test: yes\r\nConnection: close\r\n\r\n", &r);
    cr_expect_str_eq(r.body, "q=abc h=yes");
    request(s->port, "GET /segs/orders/42 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_str_eq(r.body, "3 segs orders 42");
    request(s->port, "GET /segs/a/b/c HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_str_eq(r.body, "4 segs a b", "more segments than max: max + 1");
    server_stop(s);
}

Test(http, metrics_count_answers_by_route_and_status) {
    struct server *s = server_start(18990, 1, 16);
    struct response r;
    char *buf;
    size_t len;

    request(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    request(s->port, "GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    request(s->port, "GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    buf = vx_metrics_render(&len);
    cr_assert_not_null(buf);
    cr_expect_not_null(strstr(buf, "# HELP valerix_http_responses_total "), "%s", buf);
    cr_expect_not_null(strstr(buf, "valerix_http_responses_total{route=\"GET /hello\",code=\"200\"} 2\n"), "%s", buf);
    cr_expect_not_null(strstr(buf, "valerix_http_responses_total{route=\"other\",code=\"404\"} 1\n"), "%s", buf);
    cr_expect_not_null(strstr(buf, "valerix_http_request_duration_seconds_bucket{route=\"GET /hello\",le=\"+Inf\"} 2\n"),
                       "%s", buf);
    cr_expect_not_null(strstr(buf, "valerix_http_request_duration_seconds_count{route=\"other\"} 1\n"), "%s", buf);
    free(buf);
    server_stop(s);
}

Test(http, bad_listen_addresses_are_refused) {
    vx_http_opts_t o = {.threads = 1, .body_cap = 16, .handler = handler};

    o.addr = "127.0.0.1";
    cr_expect_null(vx_http_start(&o, errstr, sizeof(errstr)));
    o.addr = "localhost:18989";
    cr_expect_null(vx_http_start(&o, errstr, sizeof(errstr)));
    cr_expect_not_null(strstr(errstr, "IPv4"), "%s", errstr);
}

/* Bug: MHD_OPTION_LISTENING_ADDRESS_REUSE=1 sets SO_REUSEPORT, so a second process (or server)
 * on a port already in use starts without error and the kernel splits the connections between
 * them; the "cannot listen on ... (in use?)" error can never happen. */
Test(http, port_already_in_use_is_refused) {
    struct server *s = server_start(18988, 1, 16);
    vx_http_opts_t o = {.addr = "127.0.0.1:18988", .threads = 1, .body_cap = 16, .handler = handler};
    vx_http_t *second = vx_http_start(&o, errstr, sizeof(errstr));

    cr_expect_null(second, "a second server listens on a port in use");
    vx_http_stop(second);
    server_stop(s);
}

/* ---- POST /admin/chaos (vx_http_chaos_admin) ------------------------------------------------------- */

static void chaos_env(const char *token) {
    if (token)
        setenv("VX_CHAOS_TOKEN", token, 1);
    else
        unsetenv("VX_CHAOS_TOKEN");
    unsetenv("VX_CRASH_POINTS");
    unsetenv("VX_GREMLIN_DELAY_MS");
    cr_assert_eq(vx_chaos_init(errstr, sizeof(errstr)), 0, "%s", errstr);
}

/* Whether vx_chaos_state's JSON text holds needle. */
static int chaos_state_has(const char *needle) {
    json_object *st = vx_chaos_state();
    int has = strstr(json_object_to_json_string_ext(st, JSON_C_TO_STRING_PLAIN), needle) != NULL;
    json_object_put(st);
    return has;
}

static void chaos_post(int port, const char *auth, const char *body, struct response *r) {
    char raw[2048];
    snprintf(raw, sizeof(raw),
             "POST /admin/chaos HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%s%s%sContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             auth ? "Authorization: " : "", auth ? auth : "", auth ? "\r\n" : "", strlen(body), body);
    request(port, raw, r);
}

/* Without VX_CHAOS_TOKEN the route answers as schemas/openapi.yaml says: 401 without a bearer token
 * (as when it is on: an anonymous caller is not told whether chaos is on), 403 with any token, 405
 * for another method; nothing is ever armed. */
Test(http, chaos_admin_refuses_every_token_without_one_configured) {
    struct server *s = server_start(18987, 1, 4096);
    struct response r;

    chaos_env(NULL);
    chaos_post(s->port, "Bearer x", "{\"crash_points\":\"a\"}", &r);
    cr_expect_eq(r.status, 403);
    cr_expect_not_null(strstr(r.body, "without VX_CHAOS_TOKEN"), "%s", r.body);
    chaos_post(s->port, NULL, "{\"crash_points\":\"a\"}", &r);
    cr_expect_eq(r.status, 401);
    cr_expect_not_null(strcasestr(r.head, "WWW-Authenticate: Bearer"), "%s", r.head);
    chaos_env("");
    chaos_post(s->port, "Bearer ", "{}", &r);
    cr_expect_eq(r.status, 401);
    request(s->port, "GET /admin/chaos HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_eq(r.status, 405);
    cr_expect(chaos_state_has("\"crash_points\":[]"));
    server_stop(s);
}

Test(http, chaos_admin_wants_the_bearer_token) {
    struct server *s = server_start(18986, 1, 4096);
    struct response r;

    chaos_env("s3cret");
    chaos_post(s->port, NULL, "{\"crash_points\":\"a\"}", &r);
    cr_expect_eq(r.status, 401);
    cr_expect_not_null(strcasestr(r.head, "WWW-Authenticate: Bearer"), "%s", r.head);
    cr_expect_not_null(strcasestr(r.head, "application/problem+json"), "%s", r.head);
    chaos_post(s->port, "Basic czNjcmV0", "{\"crash_points\":\"a\"}", &r);
    cr_expect_eq(r.status, 401);
    chaos_post(s->port, "Bearer s3cre", "{\"crash_points\":\"a\"}", &r);
    cr_expect_eq(r.status, 403);
    chaos_post(s->port, "Bearer s3cret!", "{\"crash_points\":\"a\"}", &r);
    cr_expect_eq(r.status, 403);
    request(s->port, "GET /admin/chaos HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", &r);
    cr_expect_eq(r.status, 405);
    /* nothing was armed by the refused requests */
    cr_expect(chaos_state_has("\"crash_points\":[]"));
    server_stop(s);
}

Test(http, chaos_admin_applies_a_good_body_and_answers_the_state) {
    struct server *s = server_start(18985, 1, 4096);
    struct response r;
    json_object *st, *g, *v;

    chaos_env("s3cret");
    chaos_post(s->port, "Bearer s3cret",
               "{\"crash_points\":\"before_commit@3,mid_batch%2.5\",\"gremlin\":{\"delay_ms\":150,\"every\":4}}", &r);
    cr_assert_eq(r.status, 200, "%s", r.body);
    st = json_tokener_parse(r.body);
    cr_assert_not_null(st, "%s", r.body);
    cr_expect_eq(json_object_array_length(json_object_object_get(st, "crash_points")), 2, "%s", r.body);
    g = json_object_object_get(st, "gremlin");
    cr_expect_eq(json_object_get_int(json_object_object_get(g, "delay_ms")), 150);
    cr_expect_eq(json_object_get_int(json_object_object_get(g, "every")), 4);
    cr_expect(json_object_object_get_ex(st, "admin", &v) && json_object_get_boolean(v));
    json_object_put(st);
    for (int i = 1; i <= 8; i++) cr_expect_eq(vx_chaos_gremlin(), i % 4 ? 0 : 150, "command %d", i);
    /* "" disarms every point; the gremlin, absent from the body, stays as it is */
    chaos_post(s->port, "bearer s3cret", "{\"crash_points\":\"\"}", &r);
    cr_expect_eq(r.status, 200, "%s", r.body);
    cr_expect_not_null(strstr(r.body, "\"crash_points\":[]"), "%s", r.body);
    cr_expect_not_null(strstr(r.body, "\"delay_ms\":150"), "%s", r.body);
    server_stop(s);
}

Test(http, chaos_admin_refuses_a_bad_body_and_changes_nothing) {
    static const char *const bad[] = {
        "", "[]", "{\"crash_points\":3}", "{\"crash_points\":\"a@0\"}", "{\"crash_points\":\"a%200\"}",
        "{\"gremlin\":{\"delay_ms\":-1}}", "{\"gremlin\":{\"fraction\":2}}", "{\"gremlin\":{\"every\":1.5}}",
        "{\"gremlin\":5}", "{\"crash\":\"a\"}", "{\"crash_points\":\"a\"} x",
        "{\"crash_points\":\"a\",\"gremlin\":{\"delay_ms\":999999999}}",
    };
    struct server *s = server_start(18984, 1, 4096);
    struct response r;

    chaos_env("s3cret");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        chaos_post(s->port, "Bearer s3cret", bad[i], &r);
        cr_expect_eq(r.status, 400, "%s -> %d %s", bad[i], r.status, r.body);
        cr_expect_not_null(json_member(r.body, "detail"), "%s: %s", bad[i], r.body);
    }
    cr_expect(chaos_state_has("\"crash_points\":[]"));
    cr_expect_eq(vx_chaos_gremlin(), 0);
    server_stop(s);
}

/* A client that trickles its body is cut once GATEWAY_BODY_TIMEOUT_MS (body_timeout_ms) has passed
 * since its headers, without an answer and without the handler: it holds no connection slot longer. */
Test(http, trickled_body_is_cut_after_the_body_timeout) {
    struct server *s = calloc(1, sizeof(*s));
    vx_http_opts_t o = {.addr = "127.0.0.1:18983", .threads = 1, .body_cap = 4096, .body_timeout_ms = 300,
                        .handler = handler, .opaque = s};
    static const char head[] = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n";
    char buf[256];
    ssize_t n = 1;
    int fd, cut = 0;

    cr_assert_not_null(s);
    s->srv = vx_http_start(&o, errstr, sizeof(errstr));
    cr_assert_not_null(s->srv, "%s", errstr);
    fd = connect_to(18983);
    send_all(fd, head, sizeof(head) - 1);
    for (int i = 0; i < 20 && !cut; i++) { /* a byte every 100 ms: 2 s, far past the 300 ms bound */
        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1) cut = 1;
        usleep(100 * 1000);
    }
    if (!cut) { /* the close may show on the read side first */
        n = recv(fd, buf, sizeof(buf), 0);
        cut = n <= 0;
    }
    cr_expect(cut, "a body trickled for 2 s was not cut (read %zd bytes)", n);
    cr_expect_eq(__atomic_load_n(&s->calls, __ATOMIC_SEQ_CST), 0, "the handler saw the trickled request");
    close(fd);
    fd = connect_to(18983); /* and the server answers the next client */
    {
        static const char get[] = "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        send_all(fd, get, sizeof(get) - 1);
    }
    {
        struct response r;
        read_response(fd, &r);
        cr_expect_eq(r.status, 200);
    }
    close(fd);
    server_stop(s);
}
