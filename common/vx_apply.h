/* vx_apply: the batch applier both consuming services run (inventory-svc, order-svc). It owns every
 * polled message from vx_apply_add until the message is done: turned into an entry of the service's
 * SQL call (the service's decode callback), applied in a call of its service's apply function with
 * its outbox rows in one transaction, and the rows that call returns published right after its
 * commit; or dead-lettered with its reason; or skipped as nothing to do.
 *
 * Ordering. Kafka keeps a partition in order, correctness needs order only per key. Entries of one
 * topic that share an ordering key (the service's keys, such as the idempotency key and the order
 * id, and the Kafka key) are applied in arrival order; any other entry may pass them (two topics
 * have no order between them to keep). An entry is held aside, and every entry of its topic sharing
 * a key with it waits behind it, while
 *   - the latency gremlin holds it back (vx_chaos.h): it is applied once its delay has passed, and
 *     what it produces carries the chaos-delay-ms header; or
 *   - it waited on a lock longer than the connection's lock_timeout: it is tried again alone with
 *     backoff (100 ms doubling to 1 s), and entries touching the same rows (the service's rows, such
 *     as product ids) wait behind it too.
 * The rest of the batch, and the batches after it, go on.
 *
 * Calls. Ready entries go in as few calls as the service's keys allow (no key twice in one call, at
 * most batch_max entries), lower kinds first. A call the database refuses for good is split in halves
 * until the entry at fault is alone; that entry is dead-lettered (processing_error) and the others are
 * applied. Only an entry's own fault is split down that way (vx_pg_fault: data, constraints, RAISE);
 * a failure of the database (connection, serialization, deadlock, a concurrent twin's unique key,
 * read-only, revoked privileges, out of disk, a schema the code does not match) retries the same call
 * with backoff for as long as it lasts, dead-letters nothing; once the service is stopping, for 10 s.
 *
 * Offsets. Per partition the offset stored is that of the lowest entry not done, or one past the
 * last message taken when none waits, so a crash redelivers from the lowest incomplete entry and the
 * outbox keys absorb what was applied already. A partition with hold_max entries not done is paused
 * (nothing more is fetched from it) until it is down to half of that: memory stays bounded.
 *
 * Metrics (vx_metrics.h): messages consumed per topic, type and outcome (applied, duplicate,
 * rejected, dead_lettered, skipped), dead letters per topic and reason, entries per call and call
 * duration (histograms), retries per reason, lock waits, messages held.
 *
 * Threads: everything runs on the worker's loop thread; vx_apply_held may be read from any thread. */
#ifndef VX_APPLY_H
#define VX_APPLY_H

#include <json-c/json.h>
#include <librdkafka/rdkafka.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stddef.h>

#include "vx_msg.h"
#include "vx_outbox.h"

#define VX_ENTRY_KEYS 2 /* the service's ordering keys per entry */

typedef enum { VX_ENTRY_APPLY, VX_ENTRY_SKIP, VX_ENTRY_REFUSE } vx_entry_verdict_t;

/* What a service's decode callback fills for one message. Strings are borrowed from json (or static). */
typedef struct {
    json_object *json;                    /* the call entry; the applier owns it once decode returns */
    const char *keys[VX_ENTRY_KEYS];      /* ordering keys that the SQL call also needs unique; NULL: none */
    const char *rows[VX_MSG_MAX_LINES];   /* the rows it locks (e.g. product ids), for lock waits */
    int nrows;
    int kind;      /* a call holds entries of one kind; in a turn, lower kinds are applied first */
    int delayable; /* the latency gremlin may hold it back: a command, not an event */
    const char *type, *ikey; /* for log lines */
    const char *reason;      /* VX_ENTRY_REFUSE: the dlq-reason (with the detail in errstr) */
} vx_entry_t;

typedef struct {
    const char *service; /* logs and the dlq-service header */
    const char *dlq;     /* dead-letter topic */
    /* The apply statement: its one parameter is the JSON array of entries. Its result must have the
     * outbox row's columns out_id, out_topic, out_key, out_payload, out_cid, out_headers (out_id NULL:
     * no row) and out_note (the log message of an outcome; NULL: no log line). */
    const char *sql;
    /* Further result columns that become fields of the outcome's log line: field name, column name,
     * ..., NULL. */
    const char *const *log_fields;
    /* Outcome notes (out_note) that mean the message changed nothing because it was seen before, and
     * those that mean it was refused for a business reason (NULL-terminated; any other note means
     * applied): valerix_messages_consumed_total{topic,type,outcome} counts by them. */
    const char *const *duplicate_notes, *const *rejected_notes;
    /* The service's own reading of each outcome row (its metrics); may be NULL. Row borrowed. */
    void (*outcome)(const PGresult *r, int row, void *opaque);
    long long batch_max; /* entries per call at most */
    long long hold_max;  /* entries not done per partition before it is paused */
    /* Turns m (borrowed) into e (zeroed): VX_ENTRY_APPLY with e->json set, VX_ENTRY_SKIP when there
     * is nothing to do, VX_ENTRY_REFUSE with e->reason and the detail in errstr. */
    vx_entry_verdict_t (*decode)(const rd_kafka_message_t *m, vx_entry_t *e, char *errstr, size_t errstr_size,
                                 void *opaque);
    void *opaque;
} vx_apply_opts_t;

typedef struct vx_apply_s vx_apply_t;

/* Finds the statement's columns by name on db, refusing (NULL with errstr naming the column) when the
 * database's function does not return what this binary expects. o, db, producer and outbox are
 * borrowed and must outlive the applier; *stopping is read to give up retrying. */
vx_apply_t *vx_apply_new(const vx_apply_opts_t *o, PGconn *db, rd_kafka_t *producer, vx_outbox_t *outbox,
                         volatile sig_atomic_t *stopping, char *errstr, size_t errstr_size);
/* Destroys every message still held (their offsets were never stored past them). Accepts NULL. */
void vx_apply_destroy(vx_apply_t *a);

/* Takes ownership of m: decodes it, dead-letters or skips it, or queues its entry (held aside when
 * the gremlin says so). */
void vx_apply_add(vx_apply_t *a, rd_kafka_message_t *m);
/* Applies every entry that is ready. Returns 0, or -1 when it gave up because the service is stopping
 * (what was not applied stays, its offsets unstored). */
int vx_apply_run(vx_apply_t *a);
/* Milliseconds until a held entry is due, at most cap (cap when none is held). */
int vx_apply_wait_ms(const vx_apply_t *a, int cap);
/* After a run: waits until the broker has every dead letter, stores each partition's offset up to
 * its lowest entry not done, pauses and resumes partitions. Returns -1 when a dead letter was lost:
 * the caller must exit without storing anything more (the messages are redelivered). */
int vx_apply_settle(vx_apply_t *a, rd_kafka_t *consumer);

/* For the producer's delivery report callback: a dead letter's outcome. */
void vx_apply_on_dlq_delivery(vx_apply_t *a, rd_kafka_resp_err_t err);
/* For the rebalance callback, before partitions go: forgets (destroys) what it holds of them. */
void vx_apply_revoke(vx_apply_t *a, const rd_kafka_topic_partition_list_t *parts);
/* Entries taken and not done yet (held aside or waiting behind one). Any thread. */
long vx_apply_held(const vx_apply_t *a);

#endif
