/* vx_http: the HTTP server plumbing every service uses, over libmicrohttpd.
 *
 * A handler gets a whole request (the body is read up to a cap first; a larger one is answered
 * 413 without calling the handler) and answers it with one vx_http_reply* call, either before it
 * returns or later from any thread after vx_http_suspend, which parks the connection without a
 * thread of its own. Errors use RFC 9457 problem+json. */
#ifndef VX_HTTP_H
#define VX_HTTP_H

#include <json-c/json.h>
#include <stddef.h>

typedef struct vx_http_s vx_http_t;
typedef struct vx_http_req_s vx_http_req_t;
typedef void (*vx_http_fn)(vx_http_req_t *req, void *opaque);

typedef struct {
    const char *addr;       /* "host:port" */
    int threads;            /* polling threads; 1 makes handlers run one at a time */
    size_t body_cap;        /* largest accepted body, bytes */
    /* Bounds on what clients can hold (every one has a default at 0). At max_conns open connections a
     * new one is accepted and closed at once, unanswered (libmicrohttpd's behaviour; a client sees
     * its connection reset or closed); the limit is lowered to fit the open-files limit, whose soft
     * value is raised to the hard one at start. */
    unsigned max_conns;     /* open connections at most; 0: FD_SETSIZE - 4 */
    unsigned idle_timeout_s; /* a connection with nothing sent for this long is closed; 0: 60 */
    unsigned per_ip_conns;  /* connections from one address at most; 0: no limit */
    unsigned body_timeout_ms; /* a body still arriving this long after its headers: the connection is
                                 closed unanswered (a client trickling it); 0: no limit */
    vx_http_fn handler;
    void *opaque;
} vx_http_opts_t;

/* Starts listening. Returns the server or NULL with errstr. */
vx_http_t *vx_http_start(const vx_http_opts_t *opts, char *errstr, size_t errstr_size);
/* Stops accepting and waits for the polling threads. Suspended requests must be answered first. */
void vx_http_stop(vx_http_t *srv);

/* Request accessors; the strings are borrowed and live as long as the request. */
const char *vx_http_method(const vx_http_req_t *req);
const char *vx_http_path(const vx_http_req_t *req);
const char *vx_http_header(const vx_http_req_t *req, const char *name); /* the first of that name */
/* How many request headers are called name (any case): more than one makes vx_http_header's pick a guess. */
int vx_http_header_count(const vx_http_req_t *req, const char *name);
const char *vx_http_arg(const vx_http_req_t *req, const char *name);
const char *vx_http_body(const vx_http_req_t *req, size_t *len);
/* The path split on '/' into at most max segments (copied into buf); returns the segment count. */
int vx_http_segments(const vx_http_req_t *req, char *buf, size_t size, const char **seg, int max);

/* Adds a response header for the coming reply (copied). */
void vx_http_add_header(vx_http_req_t *req, const char *name, const char *value);
/* Answers the request; body is copied. Exactly one reply per request. */
void vx_http_reply(vx_http_req_t *req, int status, const char *content_type, const char *body, size_t len);
/* Answers with obj serialised (obj is borrowed). */
void vx_http_reply_json(vx_http_req_t *req, int status, json_object *obj);
/* Answers application/problem+json {type,title,status,detail,instance} plus the members of
 * extra (taken: the caller's reference is released; may be NULL). */
void vx_http_problem(vx_http_req_t *req, int status, const char *title, const char *detail, json_object *extra);
/* 404 and 405 (with Allow) answered the same way by every service. */
void vx_http_not_found(vx_http_req_t *req);
void vx_http_method_not_allowed(vx_http_req_t *req, const char *allow);

/* Names the request's route for the metrics (valerix_http_responses_total{route,code} and
 * valerix_http_request_duration_seconds{route}): a string literal such as "POST /orders", so that the
 * label stays bounded; a request whose handler names none counts as "other". */
void vx_http_route(vx_http_req_t *req, const char *route);

/* Answers GET /metrics with vx_metrics_render (text format 0.0.4). */
void vx_http_metrics(vx_http_req_t *req);

/* Answers POST /admin/chaos (vx_chaos.h): 404 without a configured VX_CHAOS_TOKEN, 405 for another
 * method, 401 without a bearer token, 403 with a wrong one, 400 for a bad body (nothing changes);
 * else applies the body and answers 200 with vx_chaos_state. */
void vx_http_chaos_admin(vx_http_req_t *req);

/* A response streamed for as long as the client stays (Server-Sent Events, say). read(opaque, buf,
 * max) fills buf and returns the bytes written; or returns 0 having called vx_http_stream_park (the
 * connection then waits, without a thread, until vx_http_stream_wake); or -1 to end the stream.
 * done(opaque) runs once, on libmicrohttpd's thread, when the connection ends for any reason: after it
 * returns the stream is freed, so whoever wakes streams must forget this one inside done, under the
 * same lock it wakes them with. Replaces the handler's answer (call it instead of vx_http_reply).
 * Returns the stream, or NULL (then done has run) when out of memory. */
typedef struct vx_http_stream_s vx_http_stream_t;
vx_http_stream_t *vx_http_stream(vx_http_req_t *req, int status, const char *content_type,
                                 long (*read)(void *opaque, char *buf, size_t max), void (*done)(void *opaque),
                                 void *opaque);
/* Only from inside read, before it returns 0. */
void vx_http_stream_park(vx_http_stream_t *s);
/* From any thread, for a stream parked and not woken since (the caller keeps track, under its lock). */
void vx_http_stream_wake(vx_http_stream_t *s);

/* Parks the request: call it in the handler BEFORE handing req to another thread, then return.
 * A later vx_http_reply* (from any thread) wakes the connection and sends the answer. */
void vx_http_suspend(vx_http_req_t *req);

#endif
