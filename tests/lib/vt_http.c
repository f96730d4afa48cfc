/* vt_http: one HTTP/1.1 client for the test programs, on non-blocking sockets and poll (see
 * vt_http.h).
 *
 * Invariant: a connection is kept for the next exchange only when the last answer ended exactly
 * where its Content-Length said and the server did not ask to close; anything else closes it, so a
 * kept connection never holds bytes of an earlier answer. */
#include "vt_http.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vt_util.h"

struct vt_http_conn_s {
    char addr[256];
    struct sockaddr_in sa;
    int fd;    /* -1: not connected */
    bool keep; /* keep the connection between exchanges */
};

/* ---- answers ------------------------------------------------------------------------------------- */

void vt_http_resp_clear(vt_http_resp *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->names[i]);
        free(r->values[i]);
    }
    free(r->body);
    json_object_put(r->json);
    memset(r, 0, sizeof *r);
}

const char *vt_http_header(const vt_http_resp *r, const char *name) {
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->names[i], name) == 0) return r->values[i];
    return NULL;
}

/* Splits the head [buf, end) (status line first) into r. */
static int parse_head(vt_http_resp *r, const char *buf, const char *end, int *minor, char *errstr,
                      size_t errstr_size) {
    int major;
    if (sscanf(buf, "HTTP/%d.%d %d", &major, minor, &r->status) != 3)
        return vt_err(errstr, errstr_size, "bad status line: %.80s", buf);
    const char *line = memchr(buf, '\n', (size_t)(end - buf));
    for (line = line ? line + 1 : end; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        const char *colon;
        if (!eol) eol = end;
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon && r->n_headers < VT_HTTP_MAX_HEADERS) {
            const char *v = colon + 1, *e = eol;
            while (v < e && (*v == ' ' || *v == '\t')) v++;
            while (e > v && (e[-1] == '\r' || e[-1] == ' ')) e--;
            r->names[r->n_headers] = strndup(line, (size_t)(colon - line));
            r->values[r->n_headers] = strndup(v, (size_t)(e - v));
            if (!r->names[r->n_headers] || !r->values[r->n_headers]) {
                r->n_headers++; /* so that clearing frees the half */
                return vt_err(errstr, errstr_size, "out of memory");
            }
            r->n_headers++;
        }
        line = eol + 1;
    }
    return 0;
}

/* ---- addresses and connections ------------------------------------------------------------------ */

/* "host:port" (host a name or an IPv4 address) into sa. */
static int resolve(const char *addr, struct sockaddr_in *sa) {
    char host[256];
    const char *colon = strrchr(addr, ':');
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *ai;
    if (!colon || colon == addr || (size_t)(colon - addr) >= sizeof host || !colon[1]) return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) return -1;
    memcpy(sa, ai->ai_addr, sizeof *sa);
    freeaddrinfo(ai);
    return 0;
}

bool vt_http_port_in_use(const char *addr) {
    struct sockaddr_in sa;
    if (resolve(addr, &sa) == -1) return false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd == -1) return false;
    bool used = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return used;
}

int vt_http_split_url(const char *url, char *addr, size_t addr_size, const char **path, char *errstr,
                      size_t errstr_size) {
    static const char scheme[] = "http://";
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return vt_err(errstr, errstr_size, "%s: only http://host:port/path URLs", url);
    const char *host = url + sizeof scheme - 1, *slash = strchr(host, '/');
    size_t len = slash ? (size_t)(slash - host) : strlen(host);
    if (!len || len >= addr_size) return vt_err(errstr, errstr_size, "%s: no host:port, or a long one", url);
    memcpy(addr, host, len);
    addr[len] = '\0';
    *path = slash ? slash : "/";
    return 0;
}

int vt_http_conn_new(vt_http_conn_t **out, const char *addr, char *errstr, size_t errstr_size) {
    vt_http_conn_t *c;
    *out = NULL;
    if (strlen(addr) >= sizeof c->addr) return vt_err(errstr, errstr_size, "address %.64s... too long", addr);
    if (!(c = calloc(1, sizeof *c))) return vt_err(errstr, errstr_size, "out of memory");
    snprintf(c->addr, sizeof c->addr, "%s", addr);
    c->fd = -1;
    c->keep = true;
    if (resolve(addr, &c->sa) == -1) {
        free(c);
        return vt_err(errstr, errstr_size, "bad address %s (want host:port)", addr);
    }
    *out = c;
    return 0;
}

static void conn_close(vt_http_conn_t *c) {
    if (c->fd != -1) close(c->fd);
    c->fd = -1;
}

void vt_http_conn_free(vt_http_conn_t *c) {
    if (!c) return;
    conn_close(c);
    free(c);
}

/* Waits until fd is ready for `events` or the deadline passes: 1 ready, 0 timed out. */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        int64_t left = deadline - vt_mono_ms();
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > 0 ? (int)(left > INT32_MAX ? INT32_MAX : left) : 0);
        if (n > 0) return 1;
        if (n == 0 || errno != EINTR) return 0;
    }
}

static int conn_open(vt_http_conn_t *c, int64_t deadline, char *errstr, size_t errstr_size) {
    int one = 1, so_error = 0;
    socklen_t len = sizeof so_error;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (c->fd == -1) return vt_err(errstr, errstr_size, "socket: %s", strerror(errno));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* the body must not wait for an ACK */
    if (connect(c->fd, (struct sockaddr *)&c->sa, sizeof c->sa) == 0) return 0;
    if (errno != EINPROGRESS) {
        vt_err(errstr, errstr_size, "connect %s: %s", c->addr, strerror(errno));
    } else if (!wait_fd(c->fd, POLLOUT, deadline)) {
        vt_err(errstr, errstr_size, "connect %s: timed out", c->addr);
    } else if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &so_error, &len) == -1 || so_error) {
        vt_err(errstr, errstr_size, "connect %s: %s", c->addr, strerror(so_error ? so_error : errno));
    } else {
        return 0;
    }
    conn_close(c);
    return -1;
}

/* True when a kept connection can take a request: the server has neither closed it nor sent
 * anything unasked. */
static bool conn_usable(const vt_http_conn_t *c) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return poll(&p, 1, 0) == 0;
}

/* 0, or the errno of the failed send. */
static int send_all(int fd, const char *p, size_t n, int64_t deadline) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_fd(fd, POLLOUT, deadline)) return ETIMEDOUT;
            continue;
        }
        if (w <= 0) return w < 0 ? errno : EPIPE;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- one exchange ------------------------------------------------------------------------------ */

/* How an exchange ended, beyond its return value. */
typedef struct {
    size_t received; /* bytes of answer read */
    bool reusable;   /* the connection may take the next request */
} outcome_t;

/* The body's length from the head: -1 up to the end of the connection. */
static int body_length(const vt_http_req *req, const vt_http_resp *r, long *length, char *errstr,
                       size_t errstr_size) {
    const char *cl = vt_http_header(r, "Content-Length");
    if (strcmp(req->method, "HEAD") == 0 || r->status / 100 == 1 || r->status == 204 || r->status == 304)
        *length = 0;
    else if (vt_http_header(r, "Transfer-Encoding"))
        return vt_err(errstr, errstr_size, "%s %s: a chunked answer (not supported)", req->method, req->path);
    else
        *length = cl ? strtol(cl, NULL, 10) : -1;
    return 0;
}

static int exchange(vt_http_conn_t *c, const vt_http_req *req, int64_t deadline, vt_http_resp *r,
                    outcome_t *oc, char *errstr, size_t errstr_size) {
    size_t max = req->max_response ? req->max_response : VT_HTTP_MAX_RESPONSE;
    size_t head_len = 0, len = 0, cap = 0, hdr_len = 0; /* hdr_len: bytes up to the body, 0 until in */
    char *head = NULL, *buf = NULL;
    long content_length = -1;
    int rc = -1, se, minor = 1;
    bool eof = false;
    FILE *hf;

    memset(r, 0, sizeof *r);
    memset(oc, 0, sizeof *oc);
    if (!(hf = open_memstream(&head, &head_len)))
        return vt_err(errstr, errstr_size, "open_memstream: %s", strerror(errno));
    fprintf(hf, "%s %s HTTP/1.1\r\nHost: %s\r\n%s", req->method, req->path, c->addr,
            c->keep ? "" : "Connection: close\r\n");
    for (size_t i = 0; req->headers && req->headers[i]; i++) fprintf(hf, "%s\r\n", req->headers[i]);
    if (req->body) fprintf(hf, "Content-Length: %zu\r\n", req->body_len);
    fputs("\r\n", hf);
    if (fclose(hf) != 0 || !head) {
        free(head);
        return vt_err(errstr, errstr_size, "out of memory");
    }

    /* The server may answer before it has read the whole body (413) and close: a failed send is
     * then no error, the answer is read anyway. */
    se = send_all(c->fd, head, head_len, deadline);
    if (!se && req->body) se = send_all(c->fd, req->body, req->body_len, deadline);
    if (se && se != EPIPE && se != ECONNRESET) {
        vt_err(errstr, errstr_size, "send %s %s to %s: %s", req->method, req->path, c->addr, strerror(se));
        goto out;
    }

    for (;;) { /* to the end of the connection, or of the body */
        ssize_t n;
        if (cap - len < 4096 && cap < max + 1) {
            size_t ncap = cap ? cap * 2 : 16384;
            char *nbuf;
            if (ncap > max + 1) ncap = max + 1;
            if (!(nbuf = realloc(buf, ncap))) {
                vt_err(errstr, errstr_size, "out of memory");
                goto out;
            }
            buf = nbuf;
            cap = ncap;
        }
        if (len == max) {
            vt_err(errstr, errstr_size, "answer to %s %s over %zu bytes", req->method, req->path, max);
            goto out;
        }
        if (!wait_fd(c->fd, POLLIN, deadline)) {
            vt_err(errstr, errstr_size, "%s %s at %s: no whole answer within the deadline (%zu bytes)",
                   req->method, req->path, c->addr, len);
            goto out;
        }
        n = recv(c->fd, buf + len, cap - len - 1, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        if (n < 0 && errno == ECONNRESET && hdr_len) n = 0;
        if (n < 0) {
            vt_err(errstr, errstr_size, "recv (%s %s at %s): %s", req->method, req->path, c->addr, strerror(errno));
            goto out;
        }
        if (n == 0) {
            eof = true;
            break;
        }
        len += (size_t)n;
        oc->received = len;
        buf[len] = '\0';
        if (!hdr_len) {
            char *h = strstr(buf, "\r\n\r\n");
            if (h) {
                hdr_len = (size_t)(h - buf) + 4;
                if (parse_head(r, buf, h, &minor, errstr, errstr_size) == -1 ||
                    body_length(req, r, &content_length, errstr, errstr_size) == -1)
                    goto out;
            }
        }
        if (hdr_len && content_length >= 0 && len - hdr_len >= (size_t)content_length) break;
    }
    if (!hdr_len) {
        vt_err(errstr, errstr_size, "%s %s at %s: connection closed after %zu bytes, no complete header",
               req->method, req->path, c->addr, len);
        goto out;
    }
    r->body_len = len - hdr_len;
    if (content_length >= 0 && (size_t)content_length < r->body_len) r->body_len = (size_t)content_length;
    if (!(r->body = malloc(r->body_len + 1))) {
        vt_err(errstr, errstr_size, "out of memory");
        goto out;
    }
    memcpy(r->body, buf + hdr_len, r->body_len);
    r->body[r->body_len] = '\0';
    if (req->parse_json) r->json = r->body_len ? json_tokener_parse(r->body) : NULL;
    {
        const char *conn = vt_http_header(r, "Connection");
        oc->reusable = !eof && content_length >= 0 && len == hdr_len + (size_t)content_length && minor >= 1 &&
                       !(conn && strcasecmp(conn, "close") == 0);
    }
    rc = 0;
out:
    if (rc == -1) vt_http_resp_clear(r);
    free(buf);
    free(head);
    return rc;
}

static int conn_request(vt_http_conn_t *c, const vt_http_req *req, vt_http_resp *resp, char *errstr,
                        size_t errstr_size) {
    int timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : VT_HTTP_TIMEOUT_MS;
    int64_t deadline = vt_mono_ms() + timeout_ms;

    memset(resp, 0, sizeof *resp);
    if (c->fd != -1 && !conn_usable(c)) conn_close(c);
    for (int attempt = 0;; attempt++) {
        bool reused = c->fd != -1;
        outcome_t oc;
        if (!reused) {
            int64_t until = req->connect_timeout_ms > 0 ? vt_mono_ms() + req->connect_timeout_ms : deadline;
            if (conn_open(c, until < deadline ? until : deadline, errstr, errstr_size)) return -1;
        }
        int rc = exchange(c, req, deadline, resp, &oc, errstr, errstr_size);
        if (rc == 0 && c->keep && oc.reusable) return 0;
        conn_close(c);
        /* A kept connection the server had closed: nothing came back, so nothing was done twice. */
        if (rc == 0 || !reused || oc.received || attempt > 0 || vt_mono_ms() >= deadline) return rc;
    }
}

int vt_http_conn_request(vt_http_conn_t *c, const vt_http_req *req, vt_http_resp *resp, char *errstr,
                         size_t errstr_size) {
    return conn_request(c, req, resp, errstr, errstr_size);
}

int vt_http_request(const char *addr, const vt_http_req *req, vt_http_resp *resp, char *errstr,
                    size_t errstr_size) {
    vt_http_conn_t *c = NULL;
    memset(resp, 0, sizeof *resp);
    if (vt_http_conn_new(&c, addr, errstr, errstr_size)) return -1;
    c->keep = false;
    int rc = conn_request(c, req, resp, errstr, errstr_size);
    vt_http_conn_free(c);
    return rc;
}
