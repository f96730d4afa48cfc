/* reqreply: request-reply over Kafka with deadline, retry and circuit breaker. See reqreply.h.
 *
 * Threads: HTTP threads call gw_rr_submit; one reply thread consumes results, serves the
 * producer's delivery reports and fires timers (deadlines, resends). Everything in the table is
 * guarded by rr->lock; a request is parked (o.park) before the lock is released, so the
 * reply thread can never answer a request that is not parked yet. */
#include "reqreply.h"

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "vx_chaos.h"
#include "vx_kafka.h"
#include "vx_log.h"
#include "vx_metrics.h"

#define SCAN_EVERY_MS 5
#define PROBE_EVERY_MS 500 /* how often a broker said to be down is asked again */
#define MAX_PARTITIONS 256

typedef struct waiter {
    void *req; /* the caller's request, answered through o.answer */
    long long deadline;
    int replay; /* joined a request already in flight */
    char hash[17];
    struct waiter *next;
} waiter_t;

typedef struct {
    int used;
    unsigned gen;             /* bumped on reuse: stale delivery reports are ignored */
    int hnext;                /* next slot in the hash bucket, -1 at the end */
    char order_id[37];
    char key[VX_MSG_MAX_KEY * 4 + 1];
    char cid[37];             /* correlation id of the command */
    char *command;            /* the PlaceOrder JSON, resent as is */
    size_t command_len;
    int attempts;
    long long attempt_deadline; /* no reply by then: schedule a resend */
    long long next_send;        /* 0: none scheduled */
    int acked;                  /* the broker has the command: the order will be processed */
    unsigned probe;             /* the half-open spell it probes, 0 for an ordinary call */
    int full_deadline;          /* some waiter has the server's own deadline, not a shorter one */
    long long started;
    waiter_t *waiters;
} entry_t;

struct gw_rr_s {
    gw_rr_opts_t o;
    rd_kafka_t *producer, *consumer;
    pthread_t thread;
    int thread_started;
    volatile int stop;
    int kafka_down; /* librdkafka says every broker is down; cleared by a delivery or, with nothing
                       in flight to deliver, by the reply thread's probe of the broker */
    pthread_mutex_t lock;
    gw_breaker_t breaker;
    entry_t *slots;
    int *free_slots, nfree;
    int *buckets;
    unsigned nbuckets; /* a power of two */
    int nwaiters;
    unsigned seed;
    /* counters for /metrics, copied into their families at scrape time (rr_scrape) */
    long long sent, resent, replies, timeouts_202, rejected_503, unmatched;
    vx_metric_t *m_inflight, *m_breaker, *m_window, *m_sent, *m_resent, *m_replies, *m_late, *m_unavailable,
        *m_unmatched, *m_round_trip, *m_transitions;
};

static void rr_scrape(void *opaque);
static void rr_metrics(gw_rr_t *rr);

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned hash_id(const char *s) {
    unsigned h = 2166136261u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static int find(gw_rr_t *rr, const char *order_id) {
    for (int i = rr->buckets[hash_id(order_id) & (rr->nbuckets - 1)]; i >= 0; i = rr->slots[i].hnext)
        if (strcmp(rr->slots[i].order_id, order_id) == 0) return i;
    return -1;
}

static int take_slot(gw_rr_t *rr, const char *order_id) {
    unsigned b = hash_id(order_id) & (rr->nbuckets - 1);
    int i;
    if (!rr->nfree) return -1;
    i = rr->free_slots[--rr->nfree];
    entry_t *e = &rr->slots[i];
    unsigned gen = e->gen + 1;
    memset(e, 0, sizeof(*e));
    e->gen = gen;
    e->used = 1;
    snprintf(e->order_id, sizeof(e->order_id), "%s", order_id);
    e->hnext = rr->buckets[b];
    rr->buckets[b] = i;
    return i;
}

static void release_slot(gw_rr_t *rr, int i) {
    entry_t *e = &rr->slots[i];
    int *p = &rr->buckets[hash_id(e->order_id) & (rr->nbuckets - 1)];
    while (*p != i) p = &rr->slots[*p].hnext;
    *p = e->hnext;
    free(e->command);
    e->command = NULL;
    e->used = 0;
    rr->free_slots[rr->nfree++] = i;
}

static void on_breaker_change(gw_breaker_state_t from, gw_breaker_state_t to, void *opaque) {
    gw_rr_t *rr = opaque;
    vx_log(VX_LOG_WARN, "breaker_state_changed", "from", gw_breaker_state_name(from), "to", gw_breaker_state_name(to),
           NULL);
    vx_metric_add(rr->m_transitions, VX_L(gw_breaker_state_name(to)), 1);
}

/* ---- answers: outcomes reported through o.answer, lock held ------------------------------------ */

static void report(gw_rr_t *rr, void *req, gw_rr_outcome_t o) { rr->o.answer(req, &o, rr->o.opaque); }

/* e: the request's entry, whose order and key the answer names; NULL when it names none. */
static void report_unavailable(gw_rr_t *rr, void *req, const entry_t *e, long long retry_after_ms,
                               const char *detail) {
    report(rr, req,
           (gw_rr_outcome_t){.kind = GW_RR_UNAVAILABLE, .order_id = e ? e->order_id : NULL, .key = e ? e->key : NULL,
                             .retry_after_ms = retry_after_ms, .detail = detail});
    rr->rejected_503++;
}

static void report_result(gw_rr_t *rr, entry_t *e, waiter_t *w, const vx_msg_t *result, int replayed) {
    int mismatch = result->request_hash && strcmp(result->request_hash, w->hash) != 0;
    gw_rr_outcome_t o = {.order_id = e->order_id, .key = e->key, .result = result};

    if (mismatch) {
        o.kind = GW_RR_KEY_REUSED;
        o.detail = "this Idempotency-Key was first used with another request body";
    } else {
        o.kind = strcmp(result->status, "CONFIRMED") == 0 ? GW_RR_CONFIRMED : GW_RR_REJECTED;
        o.replayed = w->replay || replayed;
    }
    report(rr, w->req, o);
}

/* A waiter whose deadline passed: accepted late if the broker has the command (the order goes on),
 * else unavailable. */
static void report_timeout(gw_rr_t *rr, entry_t *e, waiter_t *w) {
    if (e->acked) {
        report(rr, w->req,
               (gw_rr_outcome_t){.kind = GW_RR_ACCEPTED_LATE, .order_id = e->order_id, .key = e->key, .replayed = w->replay});
        rr->timeouts_202++;
    } else {
        report_unavailable(rr, w->req, NULL, 1000, "Kafka did not accept the order in time; retry with the same Idempotency-Key");
    }
}

/* ---- sending ---------------------------------------------------------------------------------- */

/* Produces the entry's command, keyed by its order id (so a CancelOrder of the order, keyed likewise,
 * lands on its partition, behind it); failures are retried by the timer. Lock held. */
static void send_command(gw_rr_t *rr, int i, long long now) {
    entry_t *e = &rr->slots[i];
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    uintptr_t opaque = ((uintptr_t)i << 32 | e->gen) + 1;
    rd_kafka_resp_err_t err;

    rd_kafka_header_add(h, "correlation-id", -1, e->cid, -1);
    err = rd_kafka_producev(rr->producer, RD_KAFKA_V_TOPIC(rr->o.commands_topic),
                            RD_KAFKA_V_KEY(e->order_id, strlen(e->order_id)),
                            RD_KAFKA_V_VALUE(e->command, e->command_len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE((void *)opaque), RD_KAFKA_V_END);
    e->attempts++;
    e->attempt_deadline = now + rr->o.attempt_timeout_ms;
    e->next_send = 0;
    if (e->attempts > 1) rr->resent++;
    rr->sent++;
    if (err) {
        rd_kafka_headers_destroy(h);
        e->next_send = now + gw_backoff_ms(e->attempts - 1, rr->o.backoff_base_ms, rr->o.backoff_cap_ms, &rr->seed);
        vx_log(VX_LOG_WARN, "produce_failed", "order_id", e->order_id, "error", rd_kafka_err2str(err), NULL);
    }
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    gw_rr_t *rr = opaque;
    uintptr_t v = (uintptr_t)m->_private - 1;
    int i = (int)(v >> 32), acked = 0;
    unsigned gen = (unsigned)(v & 0xffffffffu);
    (void)rk;

    pthread_mutex_lock(&rr->lock);
    if (!m->err) rr->kafka_down = 0;
    if (i >= 0 && i < rr->o.max_inflight && rr->slots[i].used && rr->slots[i].gen == gen) {
        entry_t *e = &rr->slots[i];
        if (!m->err) {
            e->acked = acked = 1;
        } else if (!e->next_send) {
            e->next_send = now_ms() + gw_backoff_ms(e->attempts - 1, rr->o.backoff_base_ms, rr->o.backoff_cap_ms, &rr->seed);
            vx_log(VX_LOG_WARN, "delivery_failed", "order_id", e->order_id, "error", rd_kafka_err2str(m->err), NULL);
        }
    }
    pthread_mutex_unlock(&rr->lock);
    if (acked) vx_chaos_point("after_produce_before_reply"); /* the command is in Kafka, the client waits */
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    gw_rr_t *rr = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        pthread_mutex_lock(&rr->lock);
        rr->kafka_down = 1;
        pthread_mutex_unlock(&rr->lock);
    }
    vx_log(VX_LOG_WARN, "kafka_error", "error", reason, NULL);
}

void gw_rr_submit(gw_rr_t *rr, void *req, const vx_msg_t *body, const char *key, long long timeout_ms,
                  int full_deadline) {
    char order_id[37], hash[17];
    long long now = now_ms();
    waiter_t *w;
    unsigned probe;
    int i;

    vx_msg_order_id(key, order_id);
    vx_msg_order_hash(body, hash);
    pthread_mutex_lock(&rr->lock);
    if (rr->kafka_down) {
        report_unavailable(rr, req, NULL, 1000, "Kafka is unreachable; retry with the same Idempotency-Key");
        goto out;
    }
    if (gw_breaker_state(&rr->breaker, now) == GW_BREAKER_OPEN) {
        report_unavailable(rr, req, NULL, gw_breaker_retry_after_ms(&rr->breaker, now),
                           "the order path is failing; the circuit breaker is open");
        goto out;
    }
    i = find(rr, order_id);
    if (i >= 0) {
        entry_t *e = &rr->slots[i];
        if (strcmp(e->waiters ? e->waiters->hash : hash, hash) != 0) {
            report(rr, req,
                   (gw_rr_outcome_t){.kind = GW_RR_KEY_REUSED, .order_id = e->order_id, .key = e->key,
                                     .detail = "this Idempotency-Key is in use with another request body"});
            goto out;
        }
    } else {
        json_object *cmd;
        size_t len;
        const char *s;
        uuid_t u;

        if (rr->nwaiters >= rr->o.max_inflight || !rr->nfree) {
            report(rr, req, (gw_rr_outcome_t){.kind = GW_RR_BUSY, .retry_after_ms = 1000});
            goto out;
        }
        if (!gw_breaker_acquire(&rr->breaker, now, &probe)) {
            report_unavailable(rr, req, NULL, 1000, "the circuit breaker is half-open and its probes are taken");
            goto out;
        }
        i = take_slot(rr, order_id);
        entry_t *e = &rr->slots[i];
        e->probe = probe;
        e->started = now;
        snprintf(e->key, sizeof(e->key), "%s", key);
        uuid_generate_random(u);
        uuid_unparse_lower(u, e->cid);
        cmd = vx_msg_place_order(body, key);
        s = json_object_to_json_string_length(cmd, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        e->command = malloc(len);
        if (e->command) memcpy(e->command, s, len);
        e->command_len = len;
        json_object_put(cmd);
        if (!e->command) {
            gw_breaker_record(&rr->breaker, now, 0, probe); /* a probe must always report */
            release_slot(rr, i);
            report(rr, req, (gw_rr_outcome_t){.kind = GW_RR_FAILED, .detail = "out of memory"});
            goto out;
        }
        send_command(rr, i, now);
    }
    if (!(w = calloc(1, sizeof(*w)))) {
        report(rr, req, (gw_rr_outcome_t){.kind = GW_RR_FAILED, .detail = "out of memory"});
        if (!rr->slots[i].waiters) { /* a fresh entry nobody waits for */
            gw_breaker_record(&rr->breaker, now, 0, rr->slots[i].probe);
            release_slot(rr, i);
        }
        goto out;
    }
    w->req = req;
    w->deadline = now + timeout_ms;
    rr->slots[i].full_deadline |= full_deadline;
    w->replay = rr->slots[i].waiters != NULL;
    memcpy(w->hash, hash, sizeof(w->hash));
    w->next = rr->slots[i].waiters;
    rr->slots[i].waiters = w;
    rr->nwaiters++;
    if (rr->o.park) rr->o.park(req, rr->o.opaque); /* before the lock goes: only then may the reply thread answer it */
out:
    pthread_mutex_unlock(&rr->lock);
}

/* ---- the reply thread ------------------------------------------------------------------------- */

/* Whether an OrderResult is the outcome a POST with idempotency key `key` waits for: its own
 * answer (same key), or its order's cancellation. Not another CancelOrder's answer about the same
 * order id, such as REJECTED not_found for a cancel that overtook the order. */
static int answers_place(const vx_msg_t *res, const char *key) {
    return strcmp(res->idempotency_key, key) == 0 || strcmp(res->status, "CANCELLED") == 0;
}

static void on_result(gw_rr_t *rr, const rd_kafka_message_t *m) {
    vx_msg_t res;
    char replay_hdr[8], err[256];
    int i, replayed;

    if (m->err) return;
    if (vx_msg_decode(&res, m->payload, m->len, VX_MSG_ORDER_RESULT, err, sizeof(err))) {
        pthread_mutex_lock(&rr->lock);
        rr->unmatched++;
        pthread_mutex_unlock(&rr->lock);
        vx_log(VX_LOG_WARN, "result_skipped", "error", err, NULL);
        return;
    }
    replayed = vx_kafka_header(m, "idempotent-replayed", replay_hdr, sizeof(replay_hdr)) != NULL;
    pthread_mutex_lock(&rr->lock);
    i = find(rr, res.order_id);
    if (i >= 0 && !answers_place(&res, rr->slots[i].key)) i = -1;
    if (i < 0) {
        rr->unmatched++;
    } else {
        entry_t *e = &rr->slots[i];
        long long now = now_ms();
        rr->replies++;
        vx_metric_observe(rr->m_round_trip, VX_NOLABELS, (double)(now - e->started) / 1000.0);
        gw_breaker_record(&rr->breaker, now, 1, e->probe);
        while (e->waiters) {
            waiter_t *w = e->waiters;
            e->waiters = w->next;
            report_result(rr, e, w, &res, replayed);
            free(w);
            rr->nwaiters--;
        }
        release_slot(rr, i);
    }
    pthread_mutex_unlock(&rr->lock);
    vx_msg_clear(&res);
}

/* Deadlines and resends. Lock held. A full scan of a fixed table every few milliseconds: cheap at
 * the table's size and free of the bookkeeping a timer heap would need. */
static void scan(gw_rr_t *rr, long long now) {
    for (int i = 0; i < rr->o.max_inflight; i++) {
        entry_t *e = &rr->slots[i];
        waiter_t **p;
        long long last = 0;

        if (!e->used) continue;
        for (p = &e->waiters; *p;) {
            waiter_t *w = *p;
            if (now >= w->deadline) {
                *p = w->next;
                report_timeout(rr, e, w);
                free(w);
                rr->nwaiters--;
            } else {
                if (w->deadline > last) last = w->deadline;
                p = &w->next;
            }
        }
        if (!e->waiters) { /* nobody waits: the call failed (its order, if accepted, goes on) */
            /* A client that asked for a shorter deadline than the server's must not be able to
             * open the breaker for everyone; a probe always reports, so half-open cannot stick. */
            if (e->full_deadline || e->probe) gw_breaker_record(&rr->breaker, now, 0, e->probe);
            release_slot(rr, i);
            continue;
        }
        if (!e->next_send && now >= e->attempt_deadline)
            e->next_send = now + gw_backoff_ms(e->attempts - 1, rr->o.backoff_base_ms, rr->o.backoff_cap_ms, &rr->seed);
        if (e->next_send && now >= e->next_send && e->next_send < last) send_command(rr, i, now);
    }
}

/* While every broker is said to be down, POST /orders fails fast and produces nothing, so no
 * delivery would ever clear the flag: ask the broker for its metadata now and then instead. */
static void probe_kafka(gw_rr_t *rr, long long now, long long *next_probe) {
    int down;

    pthread_mutex_lock(&rr->lock);
    down = rr->kafka_down;
    pthread_mutex_unlock(&rr->lock);
    if (!down || now < *next_probe) return;
    *next_probe = now + PROBE_EVERY_MS;
    if (!vx_kafka_reachable(rr->producer, PROBE_EVERY_MS)) return;
    pthread_mutex_lock(&rr->lock);
    rr->kafka_down = 0;
    pthread_mutex_unlock(&rr->lock);
    vx_log(VX_LOG_INFO, "kafka_reachable", NULL);
}

static void *reply_thread(void *arg) {
    gw_rr_t *rr = arg;
    long long next_scan = 0, next_probe = 0;

    while (!rr->stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rr->consumer, SCAN_EVERY_MS);
        /* delivery reports before answers: a command is known to be acknowledged (and crash point
           after_produce_before_reply passed) before the answer it caused is handled */
        rd_kafka_poll(rr->producer, 0);
        for (int n = 0; m && n < 1000; n++) {
            on_result(rr, m);
            rd_kafka_message_destroy(m);
            m = rd_kafka_consumer_poll(rr->consumer, 0);
        }
        if (m) rd_kafka_message_destroy(m); /* not reached unless 1000 came at once; it is consumed */
        long long now = now_ms();
        if (now >= next_scan) {
            pthread_mutex_lock(&rr->lock);
            scan(rr, now);
            pthread_mutex_unlock(&rr->lock);
            next_scan = now + SCAN_EVERY_MS;
        }
        probe_kafka(rr, now, &next_probe);
        vx_log_flush();
    }
    return NULL;
}

gw_rr_t *gw_rr_start(const gw_rr_opts_t *o, char *errstr, size_t errstr_size) {
    gw_rr_t *rr = calloc(1, sizeof(*rr));
    rd_kafka_conf_t *conf = NULL;
    char timeout[24], group[64];
    const char *pdefaults[] = {"message.timeout.ms", timeout, NULL}; /* linger.ms 0, as every producer */
    const char *cdefaults[] = {"group.id", group, "enable.auto.commit", "false", NULL};
    uuid_t u;

    if (!rr) return NULL;
    rr->o = *o;
    pthread_mutex_init(&rr->lock, NULL);
    uuid_generate_random(u); /* not time ^ pid: in containers every pid is 1 */
    memcpy(&rr->seed, u, sizeof(rr->seed));
    for (rr->nbuckets = 1; rr->nbuckets < (unsigned)o->max_inflight * 2; rr->nbuckets <<= 1) {
    }
    rr->slots = calloc((size_t)o->max_inflight, sizeof(*rr->slots));
    rr->free_slots = malloc((size_t)o->max_inflight * sizeof(int));
    rr->buckets = malloc(rr->nbuckets * sizeof(int));
    if (!rr->slots || !rr->free_slots || !rr->buckets) {
        snprintf(errstr, errstr_size, "out of memory for %d in-flight requests", o->max_inflight);
        goto err;
    }
    for (int i = 0; i < o->max_inflight; i++) rr->free_slots[rr->nfree++] = o->max_inflight - 1 - i;
    memset(rr->buckets, 0xff, rr->nbuckets * sizeof(int));
    rr->o.breaker.on_change = on_breaker_change;
    rr->o.breaker.opaque = rr;
    gw_breaker_init(&rr->breaker, &rr->o.breaker);
    rr_metrics(rr);

    snprintf(timeout, sizeof(timeout), "%d", o->produce_timeout_ms);
    if (!(conf = vx_kafka_conf_new(VX_KAFKA_PRODUCER, pdefaults, errstr, errstr_size))) goto err;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, rr);
    if (!(rr->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size))) goto err;
    conf = NULL;

    /* A group id of its own, never committed: this instance reads every reply by assignment. */
    uuid_generate_random(u);
    memcpy(group, "gateway-", 8);
    uuid_unparse_lower(u, group + 8);
    if (!(conf = vx_kafka_conf_new(VX_KAFKA_CONSUMER, cdefaults, errstr, errstr_size))) goto err;
    if (!(rr->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size))) goto err;
    conf = NULL;
    rd_kafka_poll_set_consumer(rr->consumer);
    /* A results topic created a moment ago may not have a leader yet: retry for a while. */
    for (int tries = 0; vx_kafka_assign_end(rr->consumer, &rr->o.results_topic, 1, errstr, errstr_size); tries++) {
        if (tries == 150) goto err;
        usleep(200 * 1000);
    }
    if (pthread_create(&rr->thread, NULL, reply_thread, rr)) {
        snprintf(errstr, errstr_size, "cannot start the reply thread");
        goto err;
    }
    rr->thread_started = 1;
    return rr;
err:
    if (conf) rd_kafka_conf_destroy(conf);
    gw_rr_stop(rr);
    return NULL;
}

void gw_rr_stop(gw_rr_t *rr) {
    if (!rr) return;
    vx_metrics_off_scrape(rr_scrape, rr);
    if (rr->thread_started) {
        rr->stop = 1;
        pthread_join(rr->thread, NULL);
    }
    if (rr->slots) {
        pthread_mutex_lock(&rr->lock);
        for (int i = 0; i < rr->o.max_inflight; i++) {
            entry_t *e = &rr->slots[i];
            if (!e->used) continue;
            while (e->waiters) {
                waiter_t *w = e->waiters;
                e->waiters = w->next;
                report_timeout(rr, e, w);
                free(w);
            }
            free(e->command);
        }
        pthread_mutex_unlock(&rr->lock);
    }
    {
        int budget = rr->o.shutdown_ms > 0 ? rr->o.shutdown_ms : VX_SHUTDOWN_TIMEOUT_DEFAULT_MS;
        long long deadline = now_ms() + budget, left;
        vx_kafka_consumer_destroy(rr->consumer, budget);
        left = deadline - now_ms();
        vx_kafka_producer_destroy(rr->producer, left > 0 ? (int)left : 0);
    }
    free(rr->slots);
    free(rr->free_slots);
    free(rr->buckets);
    pthread_mutex_destroy(&rr->lock);
    free(rr);
}

int gw_rr_cancel(gw_rr_t *rr, const char *order_id, const char *key, char *errstr, size_t errstr_size) {
    json_object *cmd = json_object_new_object();
    rd_kafka_headers_t *h = rd_kafka_headers_new(1);
    char cid[37];
    uuid_t u;
    size_t len;
    const char *s;
    int down;
    rd_kafka_resp_err_t err;

    pthread_mutex_lock(&rr->lock);
    down = rr->kafka_down;
    pthread_mutex_unlock(&rr->lock);
    if (down) {
        rd_kafka_headers_destroy(h);
        json_object_put(cmd);
        snprintf(errstr, errstr_size, "Kafka is unreachable; retry with the same Idempotency-Key");
        return -1;
    }
    json_object_object_add(cmd, "type", json_object_new_string("CancelOrder"));
    json_object_object_add(cmd, "idempotency_key", json_object_new_string(key));
    json_object_object_add(cmd, "order_id", json_object_new_string(order_id));
    s = json_object_to_json_string_length(cmd, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    uuid_generate_random(u);
    uuid_unparse_lower(u, cid);
    rd_kafka_header_add(h, "correlation-id", -1, cid, -1);
    err = rd_kafka_producev(rr->producer, RD_KAFKA_V_TOPIC(rr->o.commands_topic),
                            RD_KAFKA_V_KEY(order_id, strlen(order_id)),
                            RD_KAFKA_V_VALUE((void *)s, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                            RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(NULL), RD_KAFKA_V_END);
    json_object_put(cmd);
    if (err) {
        rd_kafka_headers_destroy(h);
        snprintf(errstr, errstr_size, "the command could not be queued: %s", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

int gw_rr_ready(gw_rr_t *rr) { return vx_kafka_reachable(rr->producer, 1000); }

void gw_rr_health(gw_rr_t *rr, json_object *obj) {
    json_object *b = json_object_new_object();
    int calls, failures;
    long long now = now_ms();

    pthread_mutex_lock(&rr->lock);
    gw_breaker_counts(&rr->breaker, now, &calls, &failures);
    json_object_object_add(b, "state", json_object_new_string(gw_breaker_state_name(gw_breaker_state(&rr->breaker, now))));
    json_object_object_add(b, "calls", json_object_new_int(calls));
    json_object_object_add(b, "failures", json_object_new_int(failures));
    json_object_object_add(obj, "inflight", json_object_new_int(rr->nwaiters));
    json_object_object_add(obj, "kafka_down", json_object_new_boolean(rr->kafka_down));
    pthread_mutex_unlock(&rr->lock);
    json_object_object_add(obj, "breaker", b);
}

/* Copies the engine's counts and states into their families (vx_metrics_on_scrape). */
static void rr_scrape(void *opaque) {
    gw_rr_t *rr = opaque;
    long long now = now_ms();
    gw_breaker_state_t st;
    int calls, failures;

    pthread_mutex_lock(&rr->lock);
    st = gw_breaker_state(&rr->breaker, now);
    gw_breaker_counts(&rr->breaker, now, &calls, &failures);
    vx_metric_set(rr->m_inflight, VX_NOLABELS, rr->nwaiters);
    for (gw_breaker_state_t s = GW_BREAKER_CLOSED; s <= GW_BREAKER_HALF_OPEN; s++)
        vx_metric_set(rr->m_breaker, VX_L(gw_breaker_state_name(s)), s == st);
    vx_metric_set(rr->m_window, VX_L("call"), calls);
    vx_metric_set(rr->m_window, VX_L("failure"), failures);
    vx_metric_set(rr->m_sent, VX_NOLABELS, (double)rr->sent);
    vx_metric_set(rr->m_resent, VX_NOLABELS, (double)rr->resent);
    vx_metric_set(rr->m_replies, VX_NOLABELS, (double)rr->replies);
    vx_metric_set(rr->m_late, VX_NOLABELS, (double)rr->timeouts_202);
    vx_metric_set(rr->m_unavailable, VX_NOLABELS, (double)rr->rejected_503);
    vx_metric_set(rr->m_unmatched, VX_NOLABELS, (double)rr->unmatched);
    pthread_mutex_unlock(&rr->lock);
}

static void rr_metrics(gw_rr_t *rr) {
    rr->m_inflight = vx_metric_new(VX_GAUGE, "valerix_gateway_inflight", "Requests waiting for their order's answer.",
                                   NULL, NULL, 0);
    rr->m_breaker = vx_metric_new(VX_GAUGE, "valerix_gateway_breaker_state",
                                  "The circuit breaker's state: 1 for the state it is in, 0 for the others.", "state",
                                  NULL, 0);
    rr->m_window = vx_metric_new(VX_GAUGE, "valerix_gateway_breaker_window_calls",
                                 "Calls and failures the breaker counts in its rolling window.", "kind", NULL, 0);
    rr->m_transitions = vx_metric_new(VX_COUNTER, "valerix_gateway_breaker_transitions_total",
                                      "Changes of the breaker's state, by the state entered.", "to", NULL, 0);
    rr->m_sent = vx_metric_new(VX_COUNTER, "valerix_gateway_commands_sent_total",
                               "PlaceOrder commands produced, resends included.", NULL, NULL, 0);
    rr->m_resent = vx_metric_new(VX_COUNTER, "valerix_gateway_commands_resent_total",
                                 "PlaceOrder commands produced again after an attempt got no reply.", NULL, NULL, 0);
    rr->m_replies = vx_metric_new(VX_COUNTER, "valerix_gateway_replies_total",
                                  "OrderResults that answered waiting requests.", NULL, NULL, 0);
    rr->m_late = vx_metric_new(VX_COUNTER, "valerix_gateway_accepted_late_total",
                               "Requests answered 202: the deadline passed after the broker took the order.", NULL,
                               NULL, 0);
    rr->m_unavailable = vx_metric_new(VX_COUNTER, "valerix_gateway_unavailable_total",
                                      "Requests answered 503: breaker open, or Kafka unreachable or too slow.", NULL,
                                      NULL, 0);
    rr->m_unmatched = vx_metric_new(VX_COUNTER, "valerix_gateway_unmatched_replies_total",
                                    "OrderResults that answered no waiting request (another instance's, a late one).",
                                    NULL, NULL, 0);
    rr->m_round_trip = vx_metric_new(VX_HISTOGRAM, "valerix_gateway_round_trip_seconds",
                                     "From the command's first send to the OrderResult that answers it.", NULL,
                                     vx_metric_seconds, vx_metric_nseconds);
    vx_metrics_on_scrape(rr_scrape, rr);
}
