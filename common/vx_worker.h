/* vx_worker: the skeleton of a service that consumes Kafka and owns a PostgreSQL database
 * (inventory-svc, order-svc): set-up, the poll-apply-publish loop around the batch applier
 * (vx_apply.h), the outbox relay's upkeep, rebalances, /health (liveness: the loop turns), /ready (the
 * group gave it its partitions, the broker and the database answer), /metrics and /admin/chaos,
 * and a clean stop on SIGTERM/SIGINT. A service supplies only what is its own: how a message becomes
 * an entry of its SQL call, the call itself, and its read routes.
 *
 * Invariant it keeps for every service: an offset is stored only up to the lowest message not done
 * (its effects committed with their outbox rows, or its dead letter acknowledged by the broker); a
 * dead letter that cannot be delivered stops the process without storing offsets, so the message is
 * redelivered and nothing is lost. */
#ifndef VX_WORKER_H
#define VX_WORKER_H

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <stddef.h>

#include "vx_apply.h"
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
    long long batch_max, partitions, replication, topic_retention_ms, outbox_retention_s, sweep_grace_ms;
    long long hold_max, lock_timeout_ms, liveness_ms;
    long long shutdown_ms; /* VX_SHUTDOWN_TIMEOUT_MS: the Kafka part of a stop (flush, close) at most */

    /* The service's part of the batch applier (vx_apply.h): its apply statement, the result columns
     * its log lines carry, how a message becomes an entry. */
    const char *apply_sql;
    const char *const *log_fields;
    const char *const *duplicate_notes, *const *rejected_notes; /* outcome notes, for the metrics */
    void (*outcome)(const PGresult *r, int row, void *opaque); /* the service's own metrics; may be NULL */
    vx_entry_verdict_t (*decode)(const rd_kafka_message_t *m, vx_entry_t *e, char *errstr, size_t errstr_size,
                                 void *opaque);
    /* Routes of the service's own; return 0 when the path is not one of them (the answer is 404). */
    int (*http)(vx_worker_t *w, vx_http_req_t *req, const char *const *seg, int nseg, void *opaque);
    /* Extra pruning, once a minute on the worker's connection (may be NULL): a statement whose $1 is
     * VX_OUTBOX_RETENTION_S, for what the service remembers as long as the outbox remembers keys. */
    const char *prune_sql;
    void *opaque;
} vx_worker_opts_t;

/* Reads the settings every worker shares: <prefix>_BATCH_MAX (1000), VX_TOPIC_PARTITIONS (2),
 * VX_TOPIC_RETENTION_MS (7 days), VX_OUTBOX_RETENTION_S (7 days), VX_OUTBOX_SWEEP_GRACE_MS (5000),
 * VX_HOLD_MAX (1000: entries not done per partition before it pauses), VX_LOCK_TIMEOUT_MS (200: how
 * long a call waits on a lock before the entry at fault is set aside), VX_LIVENESS_MS (30000: /health
 * answers 503 once the loop has not completed a turn for this long), VX_SHUTDOWN_TIMEOUT_MS (10000: how
 * long a stop may wait for the broker, see vx_kafka_consumer_destroy). */
int vx_worker_config(vx_worker_opts_t *o, const char *prefix, char *errstr, size_t errstr_size);

/* Sets everything up, runs until SIGTERM or SIGINT (finishing the call in hand, flushing the
 * producer, committing the offsets, leaving the consumer group, together within shutdown_ms even
 * when the broker is gone) and tears down. The consumer is a
 * static member of o->group (vx_kafka_instance_id: VX_INSTANCE_ID, else service, host and
 * o->http_addr), so that a killed instance started again takes its partitions back at once. o is
 * borrowed for the run. A fenced consumer (another process joined with the same id, or librdkafka
 * fenced itself after a broker outage longer than the session) is replaced by a new one under the
 * same id. Returns the exit code: 0 after a clean stop, 1 when set-up failed or when fenced a sixth
 * time within a minute of five fences (another running instance has the same id). */
int vx_worker_main(const vx_worker_opts_t *o);

/* For http callbacks: answers 200 with the first column of the one-row result of sql (JSON built
 * by the database), 404 "no <what> with this id" when no row, 503 when the database fails. Runs on
 * the HTTP thread's own connection. */
void vx_worker_reply_query(vx_worker_t *w, vx_http_req_t *req, const char *sql, int nparams,
                           const char *const *params, const char *what);

#endif
