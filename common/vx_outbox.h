/* vx_outbox: the relay that moves outbox rows (common/migrations/000_outbox.sql) to Kafka.
 *
 * Fast path: right after a service commits, it hands the rows it wrote to vx_outbox_publish; the
 * producer's delivery reports collect their ids and vx_outbox_mark deletes their outbox_pending rows
 * in one statement. Safety net: vx_outbox_sweep finds rows left unpublished (a crash between commit
 * and publish, a delivery that failed) by their outbox_pending row, claims them with SKIP LOCKED so
 * concurrent instances do not take the same rows, and publishes them in id order. Delivery is at
 * least once; consumers deduplicate by idempotency key. Not thread-safe: one relay per thread. */
#ifndef VX_OUTBOX_H
#define VX_OUTBOX_H

#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <stddef.h>

typedef struct vx_outbox_s vx_outbox_t;

/* The producer is borrowed and must outlive the relay; its delivery report callback must call
 * vx_outbox_on_delivery for every message. */
vx_outbox_t *vx_outbox_new(rd_kafka_t *producer);
void vx_outbox_destroy(vx_outbox_t *ob);

/* Rows whose topic column is `logical` go to Kafka topic `real` (both copied). Returns 0 or -1. */
int vx_outbox_route(vx_outbox_t *ob, const char *logical, const char *real);

/* Where an outbox row's columns are in a result: id, topic, msg_key, payload, correlation_id and
 * headers (a JSON object of extra Kafka headers, {"name": "value"}; -1 when the result has none). */
typedef struct {
    int id, topic, key, payload, cid, headers;
} vx_outbox_cols_t;

/* Produces each row of `rows` whose id is not NULL (a row with a NULL id carries something else,
 * such as an outcome for a log). cols says where the columns are; NULL: (id, topic, msg_key,
 * payload, correlation_id) and optionally a sixth, headers. rows and cols are borrowed. Returns the
 * number produced or -1 with errstr (unknown topic, produce error). */
int vx_outbox_publish(vx_outbox_t *ob, const PGresult *rows, const vx_outbox_cols_t *cols, char *errstr,
                      size_t errstr_size);

/* For the producer's delivery report callback: records an outbox message's outcome. Returns 1 when
 * the message was an outbox row, 0 otherwise (a message with a NULL opaque is not ours). */
int vx_outbox_on_delivery(vx_outbox_t *ob, const rd_kafka_message_t *m);

/* Ids delivered but not yet stamped. */
size_t vx_outbox_unmarked(const vx_outbox_t *ob);

/* Stamps every delivered row published, in one statement, committed without waiting for the flush
 * (a lost mark is a resend; the connection's own synchronous_commit is left as it was). Returns 0 or
 * -1 with errstr (the ids are kept for the next try). */
int vx_outbox_mark(vx_outbox_t *ob, PGconn *conn, char *errstr, size_t errstr_size);

/* Publishes up to `limit` rows unpublished for more than grace_ms (and not claimed in that time).
 * Returns the number published or -1 with errstr. */
int vx_outbox_sweep(vx_outbox_t *ob, PGconn *conn, int grace_ms, int limit, char *errstr, size_t errstr_size);

/* Deletes published rows older than retention_s, a bounded number per call. Returns rows deleted. */
int vx_outbox_prune(vx_outbox_t *ob, PGconn *conn, long long retention_s, char *errstr, size_t errstr_size);

#endif
