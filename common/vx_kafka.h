/* vx_kafka: librdkafka set-up shared by every service: configuration from the environment,
 * topic creation, header access and the dead-letter path.
 *
 * Configuration: every environment variable KAFKA_<NAME> becomes librdkafka property <name>
 * (lower case, '_' -> '.'), e.g. KAFKA_BOOTSTRAP_SERVERS=host:9092 or KAFKA_SECURITY_PROTOCOL=SASL_SSL.
 * KAFKA_PRODUCER_<NAME> and KAFKA_CONSUMER_<NAME> apply to one kind of client only. A property
 * librdkafka does not know is an error at start-up, not a silent no-op. */
#ifndef VX_KAFKA_H
#define VX_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>

#define VX_KAFKA_DEFAULT_BOOTSTRAP "127.0.0.1:9092"
/* Partitions of the topics Valerix creates unless VX_TOPIC_PARTITIONS says otherwise. A partition is
 * the unit of scale-out (one member of a consumer group reads it) and also of batching: librdkafka
 * sends one ProduceRequest per partition, so the same load over more partitions makes more, smaller
 * requests. 2 suits the embedded default, one instance of each service on two cores (make bench at
 * 64 connections: 2,475 requests/s and 157 us of broker CPU per request, against 2,068 and 259 us with 6);
 * compose.yaml and deploy/k8s, which run replicas, set 6. */
#define VX_TOPIC_PARTITIONS_DEFAULT 2

typedef enum { VX_KAFKA_PRODUCER, VX_KAFKA_CONSUMER, VX_KAFKA_ADMIN } vx_kafka_role_t;

/* The topics of the contract (schemas/), in one place: each has an environment variable that names
 * it (INVENTORY_COMMANDS_TOPIC ...), a default (inventory.commands ...), and the logical name a
 * service's outbox rows carry for it in their topic column (vx_outbox routes logical names to real
 * ones; inventory-svc's SQL writes "events", order-svc's "inventory.commands" and "orders.results"). */
typedef enum {
    VX_TOPIC_INVENTORY_COMMANDS,
    VX_TOPIC_INVENTORY_EVENTS,
    VX_TOPIC_INVENTORY_DLQ,
    VX_TOPIC_ORDERS_COMMANDS,
    VX_TOPIC_ORDERS_RESULTS,
    VX_TOPIC_ORDERS_DLQ,
    VX_TOPIC_COUNT
} vx_topic_t;
const char *vx_topic(vx_topic_t t);         /* the real name: the variable's value, else the default */
const char *vx_topic_logical(vx_topic_t t); /* the name an outbox row carries */

/* Maps one environment variable name to the property it sets for `role`. Returns 1 and fills prop
 * when it applies, 0 when the variable is not for this role or not a KAFKA_ variable. */
int vx_kafka_prop_from_env(const char *env_name, vx_kafka_role_t role, char *prop, size_t prop_size);

/* A configuration with Valerix defaults for role, then the caller's defaults (a NULL-terminated
 * name, value, name, value... list, or NULL), then every matching KAFKA_* variable: the
 * environment always has the last word. Returns NULL with errstr filled on a bad property.
 * Caller owns the conf (or hands it to rd_kafka_new). */
rd_kafka_conf_t *vx_kafka_conf_new(vx_kafka_role_t role, const char *const *defaults, char *errstr,
                                   size_t errstr_size);

/* Counts one librdkafka statistics report of handle rk (JSON, len bytes; borrowed) into
 * valerix_kafka_requests_total{client,request}: each request type's growth since rk's previous report,
 * summed over its brokers. A smaller count than before is a new handle at a destroyed one's
 * address, counted from zero; the slots of handles silent for 30 s are reused for new ones. Every
 * handle from vx_kafka_conf_new reports once a second (statistics.interval.ms) from its own poll;
 * this is what its callback does. */
void vx_kafka_stats(const rd_kafka_t *rk, const char *json, size_t len);

/* An ordered producer (acks=all, one request in flight, retrying until delivered unless `defaults`
 * says otherwise; see vx_kafka_conf_new's defaults in vx_kafka.c for why not idempotent)
 * whose delivery reports go to dr_cb with `opaque`. defaults as for vx_kafka_conf_new. */
rd_kafka_t *vx_kafka_producer_new(void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *), void *opaque,
                                  const char *const *defaults, char *errstr, size_t errstr_size);

/* Group membership defaults of vx_kafka_consumer_new (KAFKA_CONSUMER_SESSION_TIMEOUT_MS and
 * KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS override them). A static member killed and started again takes its
 * partitions back at once; the session timeout is how long the partitions of one that does not come
 * back wait before the group gives them to the others (librdkafka's default: 45 s). */
#define VX_KAFKA_SESSION_TIMEOUT_MS "10000"
#define VX_KAFKA_HEARTBEAT_INTERVAL_MS "3000"
/* librdkafka waits up to reconnect.backoff.max.ms (its default: 10 s) between tries to reach a
 * broker that went away: after a broker restart every client would wait that long again. 1 s costs
 * one connection attempt a second while a broker is down. KAFKA_RECONNECT_BACKOFF_MAX_MS overrides. */
#define VX_KAFKA_RECONNECT_BACKOFF_MAX_MS "1000"

/* This instance's static group membership id (group.instance.id, KIP-345) into out: VX_INSTANCE_ID
 * when set ("none": no static membership, out is ""), else <service>.<hostname>.<http_addr>, with
 * every character Kafka does not take in an id (anything but letters, digits, '.', '_', '-')
 * made '-': unique per running instance (two instances on one host listen on two addresses) and the
 * same when the same instance starts again. Returns 0, or -1 with errstr (a VX_INSTANCE_ID Kafka
 * would refuse, or over 249 characters). */
#define VX_INSTANCE_ID_MAX 249
int vx_kafka_instance_id(const char *service, const char *http_addr, char *out, size_t size, char *errstr,
                         size_t errstr_size);

/* A consumer in group_id subscribed to topics[0..n-1], with offsets stored by the application
 * (enable.auto.offset.store=false) and committed in the background: store only what is done.
 * instance_id: its group.instance.id (static membership; NULL or "": dynamic). A static member
 * does not leave its group when it closes: see vx_kafka_leave_group.
 * rebalance_cb (may be NULL: librdkafka's own handling) gets `opaque` and must end by calling
 * vx_kafka_rebalance. */
rd_kafka_t *vx_kafka_consumer_new(const char *group_id, const char *instance_id, const char *const *topics, int n,
                                  void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                                                       rd_kafka_topic_partition_list_t *, void *),
                                  void *opaque, char *errstr, size_t errstr_size);

/* A static member's clean stop, before rd_kafka_consumer_close: librdkafka never sends LeaveGroup
 * for a static member (KIP-345), so its partitions would wait session.timeout.ms for it. This
 * unsubscribes (the rebalance callback sees the revocation, offsets stored so far are committed,
 * then the group is left) and serves the consumer for at most timeout_ms until nothing is assigned;
 * messages polled meanwhile are dropped unapplied (their offsets were never stored). */
void vx_kafka_leave_group(rd_kafka_t *rk, int timeout_ms);

/* What a rebalance callback must do after its own bookkeeping: take or give up the partitions, in
 * the eager or the cooperative protocol (whichever partition.assignment.strategy chose). Newly
 * assigned partitions start resumed, whatever a pause before the rebalance left behind; partitions
 * given up have their stored offsets committed by librdkafka (enable.auto.commit). */
void vx_kafka_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts);

/* Creates each missing topic with `partitions` partitions, `replication` replicas (-1: the broker's
 * default.replication.factor) and retention.ms (existing ones are left as they are) and returns once
 * the broker's metadata lists them all. Returns 0 or -1 with errstr. rk may be any client handle. */
#define VX_TOPIC_REPLICATION_DEFAULT -1
int vx_kafka_ensure_topics(rd_kafka_t *rk, const char *const *topics, int n, int partitions, int replication,
                           long long retention_ms, int timeout_ms, char *errstr, size_t errstr_size);

/* Assigns every partition of topics[0..n-1] to consumer rk at its current end, resolved now, so that
 * whatever is produced after this returns is read (no race with a lazily resolved "latest"); nothing
 * is committed. Returns 0, or -1 with errstr (a topic created a moment ago may have no leader yet:
 * callers retry). */
int vx_kafka_assign_end(rd_kafka_t *rk, const char *const *topics, int n, char *errstr, size_t errstr_size);

/* 1 when the cluster answers a metadata request within timeout_ms. */
int vx_kafka_reachable(rd_kafka_t *rk, int timeout_ms);

/* Start-up check of the connection settings of role (the KAFKA_* variables, as vx_kafka_conf_new
 * reads them), by a short-lived client of its own that asks for metadata for up to timeout_ms.
 * Returns 0 when a broker answered; -1 with errstr when a broker refused the credentials (SASL
 * authentication: errstr names the user and the variables, never the password), the caller's cue to
 * stop at once rather than retry a setting only an operator can correct; 1 with errstr when nothing
 * answered within timeout_ms; 2 with errstr when the settings make no client (a KAFKA_* variable
 * librdkafka refuses, named as by vx_kafka_conf_new). The clients the caller makes are not touched. */
int vx_kafka_check_broker(vx_kafka_role_t role, int timeout_ms, char *errstr, size_t errstr_size);

/* Value of the last header `name` copied NUL-terminated into buf (truncated to size-1), or NULL. */
const char *vx_kafka_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size);
/* The same over a header list (borrowed; NULL: none): what vx_kafka_header reads, callable without a message. */
const char *vx_kafka_headers_get(const rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t size);

/* The correlation-id header of hdrs (borrowed; NULL: none) copied into buf, or NULL when it is absent
 * or not 1 to size-1 visible ASCII characters. It travels on into SQL, logs and the headers of what
 * is produced, so a malformed one (ill-formed UTF-8 would make the database refuse the whole call)
 * is dropped instead of costing the command it came with a dead letter. */
const char *vx_kafka_correlation_id(const rd_kafka_headers_t *hdrs, char *buf, size_t size);

/* What a redrive (vxadmin dlq redrive) reads of a dead letter's headers (borrowed; NULL: none): the
 * topic it came from (dlq-source-topic, copied into source) and how often it was redriven already
 * (redrive-count, 0 when absent). Returns 0, or -1 with errstr when dlq-source-topic is absent, empty
 * or longer than source holds, or redrive-count is not a whole number from 0 to VX_REDRIVE_COUNT_MAX
 * (a negative or garbled count would let a message loop past VX_REDRIVE_MAX). */
#define VX_REDRIVE_COUNT_MAX 1000000000LL
int vx_kafka_dlq_origin(const rd_kafka_headers_t *hdrs, char *source, size_t source_size, long long *count,
                        char *errstr, size_t errstr_size);

/* Produces a copy of m (key, value bytes, headers) to dlq_topic with the headers dlq-reason,
 * dlq-error, dlq-source-topic, dlq-source-partition, dlq-source-offset and dlq-service added; dlq-*
 * headers the message came with are left out, so that a letter's are the ones this call wrote.
 * The delivery report arrives at the producer's dr_cb with a NULL msg opaque. Returns 0 or -1. */
int vx_kafka_dead_letter(rd_kafka_t *producer, const char *dlq_topic, const rd_kafka_message_t *m,
                         const char *reason, const char *detail, const char *service, char *errstr,
                         size_t errstr_size);

/* Stopping within a bound, also when the broker is gone (librdkafka's own close waits for the group
 * coordinator without a limit: more than 30 s). VX_SHUTDOWN_TIMEOUT_MS [10000] is the bound services
 * read (vx_kafka_shutdown_ms; 100 to 600000). */
#define VX_SHUTDOWN_TIMEOUT_DEFAULT_MS 10000
int vx_kafka_shutdown_ms(char *errstr, size_t errstr_size); /* the setting, or -1 with errstr */

/* Closes consumer rk (the partitions it holds are given up, the offsets stored are committed, it
 * leaves its group) and destroys it, in at most about timeout_ms. Past that the close is abandoned
 * and the handle is NOT destroyed (librdkafka's destroy would wait for the same coordinator, with or
 * without RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE): call it only on the way out of the process, whose
 * exit ends librdkafka's threads. Nothing is lost: what was not committed is delivered again, and
 * the outbox keys absorb it. The application's rebalance callback is not called. Takes ownership of
 * rk; accepts NULL. Returns 1 when the close finished, 0 when it was abandoned. */
int vx_kafka_consumer_destroy(rd_kafka_t *rk, int timeout_ms);

/* Waits at most timeout_ms for the producer's queue to reach the broker, then destroys it. Takes
 * ownership of rk; accepts NULL. Returns the messages left undelivered (0: all delivered). */
int vx_kafka_producer_destroy(rd_kafka_t *rk, int timeout_ms);

/* Produces, serving delivery reports while the local queue is full. Returns the produce error. */
rd_kafka_resp_err_t vx_kafka_produce(rd_kafka_t *producer, const char *topic, const char *key, size_t keylen,
                                     const char *value, size_t len, rd_kafka_headers_t *hdrs, void *opaque);

#endif
