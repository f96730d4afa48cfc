/* vt_http: the test programs' one HTTP/1.1 client, on plain sockets to "host:port" (IPv4): a
 * request with a method, headers and a body; an answer with its status, headers and body.
 * vt_http_request makes one exchange on a fresh connection (Connection: close); a vt_http_conn_t
 * keeps its connection between exchanges (keep-alive), as a load generator's client would.
 *
 * Invariant: an answer is read within its deadline and its cap (head and body together) or not at
 * all, and a server that answers before it has read the whole body (413) still has its answer read. */
#ifndef VT_HTTP_H
#define VT_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#define VT_HTTP_MAX_HEADERS 64          /* answer headers kept; later ones are dropped */
#define VT_HTTP_MAX_RESPONSE (8u << 20) /* default cap on an answer, head and body: larger is an error */
#define VT_HTTP_TIMEOUT_MS 60000        /* default deadline of one exchange, connecting included */

typedef struct vt_http_req {
    const char *method;         /* "GET", "POST", ... */
    const char *path;           /* "/orders/42?x=1", sent as it is */
    const char *const *headers; /* "Name: value" lines up to the first NULL (may be NULL); borrowed */
    const char *body;           /* NULL: no body and no Content-Length; borrowed */
    size_t body_len;
    int timeout_ms;             /* the whole exchange; 0: VT_HTTP_TIMEOUT_MS */
    int connect_timeout_ms;     /* the connect alone, within timeout_ms; 0: no bound of its own */
    size_t max_response;        /* 0: VT_HTTP_MAX_RESPONSE */
    bool parse_json;            /* fill the answer's json */
} vt_http_req;

typedef struct vt_http_resp {
    int status;
    size_t n_headers;
    char *names[VT_HTTP_MAX_HEADERS], *values[VT_HTTP_MAX_HEADERS]; /* owned */
    char *body;                 /* NUL-terminated; owned */
    size_t body_len;
    json_object *json;          /* the body parsed (parse_json), NULL when it is not JSON; owned */
} vt_http_resp;

/* One exchange on a fresh connection to addr. On success the caller owns *resp
 * (vt_http_resp_clear); on failure *resp is empty. A connection closed by the server after the head
 * ends the body with what has arrived. */
int vt_http_request(const char *addr, const vt_http_req *req, vt_http_resp *resp, char *errstr,
                    size_t errstr_size);

/* A client that keeps one connection to addr open between exchanges; it connects on first use,
 * and again when the server closed the connection (an exchange that got nothing on a reused
 * connection is sent once more on a new one, as browsers and curl do). Not for two threads at
 * once. On success the caller owns *out (vt_http_conn_free, which accepts NULL). */
typedef struct vt_http_conn_s vt_http_conn_t;
int vt_http_conn_new(vt_http_conn_t **out, const char *addr, char *errstr, size_t errstr_size);
int vt_http_conn_request(vt_http_conn_t *c, const vt_http_req *req, vt_http_resp *resp, char *errstr,
                         size_t errstr_size);
void vt_http_conn_free(vt_http_conn_t *c);

/* The value of the first answer header called name (any case), or NULL. Borrowed from r. */
const char *vt_http_header(const vt_http_resp *r, const char *name);
void vt_http_resp_clear(vt_http_resp *r); /* frees what r owns and empties it; accepts NULL */

/* Splits "http://host:port/path" into addr ("host:port") and *path (borrowed from url; "/" when
 * the url has none). Only plain http. */
int vt_http_split_url(const char *url, char *addr, size_t addr_size, const char **path, char *errstr,
                      size_t errstr_size);

/* True when something accepts TCP connections at addr. */
bool vt_http_port_in_use(const char *addr);

#endif
