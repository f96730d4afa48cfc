/* web: the server side of the gateway's web dashboard. It serves the page's files (gateway/web/,
 * read once at start: HTML, CSS and JavaScript, no build step) with a Content-Security-Policy that
 * forbids inline script, and the live stream the page reads (GET /events, Server-Sent Events): every
 * PlaceOrder and CancelOrder, OrderResult and inventory event as it passes through Kafka, read by a
 * consumer of its own from each topic's end (no group), so the page sees what others produce too;
 * while no stream is open it reads nothing (the first stream to open starts it again from the end).
 *
 * Invariant: memory stays bounded whatever the browsers do. Events sit in one ring shared by every
 * stream; a stream that falls a whole ring behind gets "event: gap" (the page reloads its lists) and
 * goes on from the newest; at most max_streams are open (more are refused 503). A stream waits without
 * a thread (its connection parked) and costs POST /orders nothing: the stream has its own consumer and
 * thread. */
#ifndef GW_WEB_H
#define GW_WEB_H

#include <json-c/json.h>
#include <stddef.h>

#include "vx_http.h"

typedef struct gw_web_s gw_web_t;

typedef struct {
    const char *dir;         /* the page's files */
    const char *topics[3];   /* read from their end: orders.commands, orders.results, inventory.events */
    int max_streams;         /* open streams at most */
    int heartbeat_ms;        /* a comment line this often on an idle stream: proxies keep it, dead peers show */
    int flush_ms;            /* streams are woken at most this often: a write per stream per interval */
    int shutdown_ms;         /* closing its consumer waits at most this long (<= 0: 10 s) */
} gw_web_opts_t;

/* Reads the page's files and starts the stream's consumer and thread. Returns NULL with errstr. */
gw_web_t *gw_web_start(const gw_web_opts_t *o, char *errstr, size_t errstr_size);
/* Ends every stream (they close once their connection is served again). Call before vx_http_stop. */
void gw_web_shutdown(gw_web_t *w);
/* Stops the thread and frees; after vx_http_stop (the streams' last callbacks use it). Accepts NULL. */
void gw_web_free(gw_web_t *w);

/* Answers GET/HEAD of a file of the page ("/" is index.html). Returns 0 when path is none of them. */
int gw_web_file(gw_web_t *w, vx_http_req_t *req, const char *path);
/* Answers GET /events: the stream (text/event-stream). */
void gw_web_events(gw_web_t *w, vx_http_req_t *req);
/* Adds "streams": open streams, to obj (borrowed). */
void gw_web_health(gw_web_t *w, json_object *obj);

#endif
