/* web: the dashboard's files and live stream. See web.h.
 *
 * One thread polls the stream's consumer and appends each message to the ring as a ready-made SSE
 * frame, then wakes the parked streams; each stream copies frames from its cursor when libmicrohttpd
 * asks for more, and parks its connection when it has nothing to send. Everything shared is under
 * w->lock, which is also the lock streams are parked and woken under (vx_http_stream_* contract). */
#include "web.h"

#include <dirent.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "vx_kafka.h"
#include "vx_log.h"
#include "vx_metrics.h"

#define RING 4096                /* frames kept for streams that lag */
#define FRAME_DATA_CAP 16384     /* a message larger than this is announced, not copied */
#define MAX_FILES 16
#define FILE_CAP (1 << 20)       /* the largest file of the page */
#define CSP                                                                                                   \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "   \
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

static const char *const kinds[3] = {"command", "result", "stock"}; /* SSE event names, per topic */

typedef struct {
    char *text;
    size_t len;
} frame_t;

typedef struct {
    gw_web_t *w;
    vx_http_stream_t *s;
    uint64_t next;  /* the next frame to send */
    size_t off;     /* bytes of it sent already */
    int parked, started;
    long long last; /* when it last sent anything, ms */
} stream_t;

typedef struct {
    char name[64];
    const char *type;
    char *body;
    size_t len;
} file_t;

struct gw_web_s {
    gw_web_opts_t o;
    rd_kafka_t *consumer;
    pthread_t thread;
    int thread_started;
    volatile int stop;
    pthread_mutex_t lock;
    int stopping;           /* streams end */
    frame_t ring[RING];
    uint64_t seq;           /* frames appended so far; the ring holds the last min(seq, RING) */
    stream_t **streams;
    int nstreams;
    file_t files[MAX_FILES];
    int nfiles;
    vx_metric_t *m_streams, *m_events, *m_gaps, *m_refused;
};

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the page's files ---------------------------------------------------------------------------- */

static const char *type_of(const char *name) {
    static const struct {
        const char *ext, *type;
    } types[] = {{".html", "text/html; charset=utf-8"},       {".js", "text/javascript; charset=utf-8"},
                 {".css", "text/css; charset=utf-8"},         {".svg", "image/svg+xml"},
                 {".json", "application/json"},               {".txt", "text/plain; charset=utf-8"}};
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0) return types[i].type;
    return NULL;
}

static int load_files(gw_web_t *w, char *errstr, size_t errstr_size) {
    DIR *d = opendir(w->o.dir);
    struct dirent *e;
    int rc = -1;

    if (!d) {
        snprintf(errstr, errstr_size, "web: cannot open %s", w->o.dir);
        return -1;
    }
    while ((e = readdir(d))) {
        char path[4096];
        file_t *f;
        FILE *fp;
        long n;

        if (e->d_name[0] == '.' || !type_of(e->d_name) || strlen(e->d_name) >= sizeof(f->name) ||
            strspn(e->d_name, "abcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(e->d_name))
            continue;
        if (w->nfiles == MAX_FILES) {
            snprintf(errstr, errstr_size, "web: more than %d files in %s", MAX_FILES, w->o.dir);
            goto out;
        }
        f = &w->files[w->nfiles];
        snprintf(path, sizeof(path), "%s/%s", w->o.dir, e->d_name);
        if (!(fp = fopen(path, "rb"))) continue;
        fseek(fp, 0, SEEK_END);
        n = ftell(fp);
        rewind(fp);
        if (n < 0 || n > FILE_CAP || !(f->body = malloc((size_t)n + 1)) || fread(f->body, 1, (size_t)n, fp) != (size_t)n) {
            fclose(fp);
            free(f->body);
            f->body = NULL;
            snprintf(errstr, errstr_size, "web: cannot read %s (at most %d bytes)", path, FILE_CAP);
            goto out;
        }
        fclose(fp);
        f->len = (size_t)n;
        f->type = type_of(e->d_name);
        snprintf(f->name, sizeof(f->name), "%s", e->d_name);
        w->nfiles++;
    }
    for (int i = 0; i < w->nfiles && rc; i++)
        if (strcmp(w->files[i].name, "index.html") == 0) rc = 0;
    if (rc) snprintf(errstr, errstr_size, "web: %s has no index.html", w->o.dir);
out:
    closedir(d);
    return rc;
}

/* Headers every answer of the page carries. */
static void page_headers(vx_http_req_t *req) {
    vx_http_add_header(req, "Content-Security-Policy", CSP);
    vx_http_add_header(req, "X-Content-Type-Options", "nosniff");
    vx_http_add_header(req, "Referrer-Policy", "no-referrer");
    vx_http_add_header(req, "Cache-Control", "no-cache");
}

int gw_web_file(gw_web_t *w, vx_http_req_t *req, const char *path) {
    const char *name = strcmp(path, "/") == 0 ? "index.html" : path + 1;
    for (int i = 0; i < w->nfiles; i++) {
        if (strcmp(w->files[i].name, name) != 0) continue;
        vx_http_route(req, "GET /{page}");
        if (strcmp(vx_http_method(req), "GET") != 0 && strcmp(vx_http_method(req), "HEAD") != 0) {
            vx_http_method_not_allowed(req, "GET, HEAD");
            return 1;
        }
        page_headers(req);
        vx_http_reply(req, 200, w->files[i].type, w->files[i].body, w->files[i].len);
        return 1;
    }
    return 0;
}

/* ---- the stream ---------------------------------------------------------------------------------- */

/* Appends n bytes to buf[*len..max) when they fit whole. */
static int put(char *buf, size_t *len, size_t max, const char *s) {
    size_t n = strlen(s);
    if (*len + n > max) return 0;
    memcpy(buf + *len, s, n);
    *len += n;
    return 1;
}

static long stream_read(void *opaque, char *buf, size_t max) {
    stream_t *st = opaque;
    gw_web_t *w = st->w;
    size_t n = 0;
    long long now = now_ms();

    pthread_mutex_lock(&w->lock);
    if (w->stopping) {
        pthread_mutex_unlock(&w->lock);
        return -1;
    }
    if (!st->started) st->started = put(buf, &n, max, "retry: 3000\n\n");
    if (st->next + RING < w->seq) { /* a whole ring behind: the page reloads, the stream goes on from now */
        if (st->off) put(buf, &n, max, "\n\n");
        put(buf, &n, max, "event: gap\ndata: {}\n\n");
        st->next = w->seq;
        st->off = 0;
        vx_metric_add(w->m_gaps, VX_NOLABELS, 1);
    }
    while (st->next < w->seq && n < max) {
        frame_t *f = &w->ring[st->next % RING];
        size_t take = f->len - st->off < max - n ? f->len - st->off : max - n;
        memcpy(buf + n, f->text + st->off, take);
        n += take;
        if ((st->off += take) == f->len) {
            st->next++;
            st->off = 0;
        }
    }
    if (!n && now - st->last >= w->o.heartbeat_ms) put(buf, &n, max, ": keepalive\n\n");
    if (n) {
        st->last = now;
    } else {
        vx_http_stream_park(st->s);
        st->parked = 1;
    }
    pthread_mutex_unlock(&w->lock);
    return (long)n;
}

static void stream_done(void *opaque) {
    stream_t *st = opaque;
    gw_web_t *w = st->w;
    pthread_mutex_lock(&w->lock);
    for (int i = 0; i < w->nstreams; i++)
        if (w->streams[i] == st) {
            w->streams[i] = w->streams[--w->nstreams];
            break;
        }
    pthread_mutex_unlock(&w->lock);
    free(st);
}

void gw_web_events(gw_web_t *w, vx_http_req_t *req) {
    stream_t *st;

    vx_http_route(req, "GET /events");
    if (strcmp(vx_http_method(req), "GET") != 0) {
        vx_http_method_not_allowed(req, "GET");
        return;
    }
    pthread_mutex_lock(&w->lock);
    if (w->stopping || w->nstreams >= w->o.max_streams || !(st = calloc(1, sizeof(*st)))) {
        pthread_mutex_unlock(&w->lock);
        vx_metric_add(w->m_refused, VX_NOLABELS, 1);
        vx_http_add_header(req, "Retry-After", "5");
        vx_http_problem(req, 503, "Service unavailable", "too many live streams are open; retry shortly", NULL);
        return;
    }
    st->w = w;
    st->next = w->seq; /* from now on; the page reads the current state with GET /products and /orders */
    st->last = now_ms();
    w->streams[w->nstreams++] = st;
    pthread_mutex_unlock(&w->lock);
    page_headers(req);
    vx_http_add_header(req, "X-Accel-Buffering", "no");
    /* The thread wakes a stream only once it is parked, which takes a read, which libmicrohttpd makes
     * only after this handler returns: st->s is set by then. On failure st is gone (stream_done). */
    vx_http_stream_t *s = vx_http_stream(req, 200, "text/event-stream; charset=utf-8", stream_read, stream_done, st);
    if (s) {
        pthread_mutex_lock(&w->lock);
        st->s = s;
        pthread_mutex_unlock(&w->lock);
    }
}

/* Wakes every parked stream (lock held): new frames, a heartbeat due, or the end. */
static void wake_all(gw_web_t *w) {
    for (int i = 0; i < w->nstreams; i++)
        if (w->streams[i]->parked && w->streams[i]->s) {
            w->streams[i]->parked = 0;
            vx_http_stream_wake(w->streams[i]->s);
        }
}

/* One message as an SSE frame in the ring (lock held). The payload goes on one data line: JSON has no
 * raw line breaks inside strings, so breaks between tokens become spaces. */
static void append(gw_web_t *w, const rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt), *kind = NULL;
    frame_t *f = &w->ring[w->seq % RING];
    char head[96];
    size_t hlen, dlen;
    char *text;

    for (int i = 0; i < 3; i++)
        if (w->o.topics[i] && strcmp(topic, w->o.topics[i]) == 0) kind = kinds[i];
    if (!kind || !m->payload) return;
    hlen = (size_t)snprintf(head, sizeof(head), "id: %llu\nevent: %s\ndata: ", (unsigned long long)w->seq, kind);
    dlen = m->len <= FRAME_DATA_CAP ? m->len : 0;
    if (!(text = malloc(hlen + (dlen ? dlen : 24) + 3))) return;
    memcpy(text, head, hlen);
    if (dlen) {
        memcpy(text + hlen, m->payload, dlen);
        for (size_t i = hlen; i < hlen + dlen; i++)
            if (text[i] == '\n' || text[i] == '\r' || text[i] == '\0') text[i] = ' ';
    } else {
        dlen = (size_t)snprintf(text + hlen, 25, "{\"type\":\"(too large)\"}");
    }
    memcpy(text + hlen + dlen, "\n\n", 3);
    free(f->text);
    f->text = text;
    f->len = hlen + dlen + 2;
    w->seq++;
    vx_metric_add(w->m_events, VX_L(kind), 1);
}

/* Streams are woken at most every flush_ms, each then writing all it has in one go: with many pages
 * open under load that is a write per stream per interval, not one per message (make bench, stage E,
 * measures POST /orders with BENCH_STREAMS pages open). */
static void *stream_thread(void *arg) {
    gw_web_t *w = arg;
    long long next_beat = now_ms() + w->o.heartbeat_ms, last_wake = 0;
    int pending = 0; /* frames appended since the last wake */
    int reading = 1; /* assigned (gw_web_start assigned the topics at their end) */
    int ntopics = 0;

    while (ntopics < 3 && w->o.topics[ntopics]) ntopics++;
    while (!w->stop) {
        long long now = now_ms(), due = last_wake + w->o.flush_ms;
        int wait = pending ? (due > now ? (int)(due - now) : 0) : 200, want;
        rd_kafka_message_t *m;
        char err[256];

        /* Nobody watching: nothing is fetched (the stream would cost every order its messages' copy);
         * the first stream to open has the topics read from their end again, from then on. */
        pthread_mutex_lock(&w->lock);
        want = w->nstreams > 0;
        pthread_mutex_unlock(&w->lock);
        if (want != reading) {
            if (!want) {
                rd_kafka_assign(w->consumer, NULL);
                reading = 0;
            } else if (vx_kafka_assign_end(w->consumer, w->o.topics, ntopics, err, sizeof(err)) == 0) {
                reading = 1;
            } else {
                vx_log(VX_LOG_WARN, "stream_assign_failed", "error", err, NULL);
            }
        }
        if (!reading) wait = 50;
        m = rd_kafka_consumer_poll(w->consumer, wait);
        pthread_mutex_lock(&w->lock);
        for (int n = 0; m && n < 1000; n++) {
            if (!m->err) {
                append(w, m);
                pending = 1;
            }
            rd_kafka_message_destroy(m);
            m = n + 1 < 1000 ? rd_kafka_consumer_poll(w->consumer, 0) : NULL;
        }
        now = now_ms();
        if ((pending && now >= last_wake + w->o.flush_ms) || now >= next_beat) {
            wake_all(w);
            last_wake = now;
            pending = 0;
            next_beat = now + w->o.heartbeat_ms;
        }
        pthread_mutex_unlock(&w->lock);
        vx_log_flush();
    }
    return NULL;
}

static void web_scrape(void *opaque) {
    gw_web_t *w = opaque;
    pthread_mutex_lock(&w->lock);
    vx_metric_set(w->m_streams, VX_NOLABELS, w->nstreams);
    pthread_mutex_unlock(&w->lock);
}

gw_web_t *gw_web_start(const gw_web_opts_t *o, char *errstr, size_t errstr_size) {
    gw_web_t *w = calloc(1, sizeof(*w));
    const char *cdefaults[] = {"group.id", NULL, "enable.auto.commit", "false", NULL};
    char group[64];
    rd_kafka_conf_t *conf;
    uuid_t u;
    int n = 0;

    if (!w) return NULL;
    w->o = *o;
    pthread_mutex_init(&w->lock, NULL);
    if (!(w->streams = calloc((size_t)o->max_streams, sizeof(*w->streams)))) {
        snprintf(errstr, errstr_size, "web: out of memory");
        goto err;
    }
    if (load_files(w, errstr, errstr_size)) goto err;
    w->m_streams = vx_metric_new(VX_GAUGE, "valerix_gateway_streams", "Live streams (GET /events) open now.", NULL,
                                 NULL, 0);
    w->m_events = vx_metric_new(VX_COUNTER, "valerix_gateway_stream_events_total",
                                "Messages put on the live streams, by kind (command, result, stock).", "kind", NULL, 0);
    w->m_gaps = vx_metric_new(VX_COUNTER, "valerix_gateway_stream_gaps_total",
                              "Times a stream fell a whole ring behind and skipped to the newest.", NULL, NULL, 0);
    w->m_refused = vx_metric_new(VX_COUNTER, "valerix_gateway_streams_refused_total",
                                 "Streams refused because GATEWAY_MAX_STREAMS were open.", NULL, NULL, 0);

    /* A group id of its own, never committed: the stream reads every partition by assignment. */
    uuid_generate_random(u);
    memcpy(group, "gateway-web-", 12);
    uuid_unparse_lower(u, group + 12);
    cdefaults[1] = group;
    if (!(conf = vx_kafka_conf_new(VX_KAFKA_CONSUMER, cdefaults, errstr, errstr_size))) goto err;
    if (!(w->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size))) {
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    rd_kafka_poll_set_consumer(w->consumer);
    while (n < 3 && o->topics[n]) n++;
    for (int tries = 0; vx_kafka_assign_end(w->consumer, o->topics, n, errstr, errstr_size); tries++) {
        if (tries == 150) goto err;
        usleep(200 * 1000);
    }
    if (pthread_create(&w->thread, NULL, stream_thread, w)) {
        snprintf(errstr, errstr_size, "web: cannot start the stream thread");
        goto err;
    }
    w->thread_started = 1;
    vx_metrics_on_scrape(web_scrape, w);
    return w;
err:
    gw_web_free(w);
    return NULL;
}

void gw_web_shutdown(gw_web_t *w) {
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->stopping = 1;
    wake_all(w);
    pthread_mutex_unlock(&w->lock);
}

void gw_web_free(gw_web_t *w) {
    if (!w) return;
    vx_metrics_off_scrape(web_scrape, w);
    if (w->thread_started) {
        w->stop = 1;
        pthread_join(w->thread, NULL);
    }
    vx_kafka_consumer_destroy(w->consumer, w->o.shutdown_ms > 0 ? w->o.shutdown_ms : VX_SHUTDOWN_TIMEOUT_DEFAULT_MS);
    for (int i = 0; i < RING; i++) free(w->ring[i].text);
    for (int i = 0; i < w->nfiles; i++) free(w->files[i].body);
    free(w->streams);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

void gw_web_health(gw_web_t *w, json_object *obj) {
    pthread_mutex_lock(&w->lock);
    json_object_object_add(obj, "streams", json_object_new_int(w->nstreams));
    pthread_mutex_unlock(&w->lock);
}
