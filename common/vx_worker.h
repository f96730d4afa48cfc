/* vx_worker: the skeleton of a service that consumes Kafka and owns a PostgreSQL database
 * (inventory-svc, order-svc): set-up, the poll-apply-publish loop, the outbox relay's upkeep,
 * dead letters, offsets, /health, /ready and /admin/chaos (vx_chaos.h), and a clean stop on SIGTERM/SIGINT.
 *
 * Invariant it keeps for every service: a polled batch's offsets are stored only after the service's
 * process callback says the batch is done (its effects committed with their outbox rows) and every
 * dead letter of the batch is acknowledged by the broker; a dead letter that cannot be delivered
 * stops the process without storing offsets, so the batch is redelivered and nothing is lost. */
#ifndef VX_WORKER_H
#define VX_WORKER_H

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "vx_http.h"

typedef struct vx_worker_s vx_worker_t;

typedef struct {
    const char *service;                  /* log name and dlq-service header */
    const char *db, *http_addr, *group, *dlq, *migrations;
    const char *const *consume;           /* topics consumed */
    int nconsume;
    const char *const *topics;            /* topics created at start when missing (consumed ones too) */
    int ntopics;
    const char *const *routes;            /* outbox routes: logical, real, logical, real, ..., NULL */
    long long batch_max, partitions, topic_retention_ms, outbox_retention_s, sweep_grace_ms;
    int retry_unique_violation; /* 1: a unique violation means a concurrent twin committed first, and
                                   a retry of the batch finds it recorded (both services) */

    /* The service's part of a polled batch (msgs borrowed for the call). Returns 0 when every
     * message is done, -1 when it gave up because the service is stopping (nothing is stored). */
    int (*process)(vx_worker_t *w, rd_kafka_message_t **msgs, int n, void *opaque);
    /* Routes of the service's own; return 0 when the path is not one of them (the answer is 404). */
    int (*http)(vx_worker_t *w, vx_http_req_t *req, const char *const *seg, int nseg, void *opaque);
    /* Extra pruning, once a minute on the worker's connection (may be NULL). */
    void (*prune)(vx_worker_t *w, PGconn *db, void *opaque);
    void *opaque;
} vx_worker_opts_t;

/* Reads the settings every worker shares: <prefix>_BATCH_MAX (1000), VX_TOPIC_PARTITIONS (6),
 * VX_TOPIC_RETENTION_MS (7 days), VX_OUTBOX_RETENTION_S (7 days), VX_OUTBOX_SWEEP_GRACE_MS (5000). */
int vx_worker_config(vx_worker_opts_t *o, const char *prefix, char *errstr, size_t errstr_size);

/* Sets everything up, runs until SIGTERM or SIGINT (finishing the batch in hand, flushing the
 * producer, committing the offsets) and tears down. o is borrowed for the run. Returns the exit
 * code: 0 after a clean stop, 1 when set-up failed. */
int vx_worker_main(const vx_worker_opts_t *o);

/* For process callbacks. Runs `sql` with the one parameter json until it succeeds: transient
 * failures (connection lost, server restarting, deadlock, and a unique violation when the options
 * say so) retry with backoff; once the service is stopping it gives up after 10 s and returns NULL with
 * *fatal = 0. Any other error returns NULL with *fatal = 1. The result is the caller's (PQclear). */
PGresult *vx_worker_apply(vx_worker_t *w, const char *sql, const char *json, int *fatal);
/* Produces the outbox rows (see vx_outbox_publish) right after their commit; rows borrowed. */
void vx_worker_publish(vx_worker_t *w, const PGresult *rows);
/* Sends m to the dead-letter topic with the reason; its offset waits for the acknowledgement.
 * idempotency_key and correlation_id are for the log line (may be NULL). */
void vx_worker_dead_letter(vx_worker_t *w, const rd_kafka_message_t *m, const char *reason, const char *detail,
                           const char *idempotency_key, const char *correlation_id);

/* For process callbacks that split a polled batch into SQL calls in which no key repeats: a set of
 * borrowed strings (they must outlive the set's next clear) with room for `max` of them. */
typedef struct {
    const char **slot;
    size_t cap; /* a power of two, at least twice max */
} vx_strset_t;
int vx_strset_init(vx_strset_t *set, size_t max); /* 0, or -1 when out of memory */
void vx_strset_free(vx_strset_t *set);
void vx_strset_clear(vx_strset_t *set);
const char *vx_strset_find(const vx_strset_t *set, const char *str); /* the equal string held, or NULL */
int vx_strset_add(vx_strset_t *set, const char *str);                /* 1 added, 0 one was there */

/* For process callbacks: the latency gremlin's delay of msgs[i] of the batch in hand, in ms (0:
 * not delayed). What the message produces should carry it as header VX_CHAOS_DELAY_HEADER. */
long vx_worker_delay(const vx_worker_t *w, int i);

/* For http callbacks: answers 200 with the first column of the one-row result of sql (JSON built
 * by the database), 404 "no <what> with this id" when no row, 503 when the database fails. Runs on
 * the HTTP thread's own connection. */
void vx_worker_reply_query(vx_worker_t *w, vx_http_req_t *req, const char *sql, int nparams,
                           const char *const *params, const char *what);

#endif
