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

/* Value of the last header `name` copied NUL-terminated into buf (truncated to size-1), or NULL. */
const char *vx_kafka_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size);

/* Produces a copy of m (key, value bytes, headers) to dlq_topic with the headers dlq-reason,
 * dlq-error, dlq-source-topic, dlq-source-partition, dlq-source-offset and dlq-service added.
 * The delivery report arrives at the producer's dr_cb with a NULL msg opaque. Returns 0 or -1. */
int vx_kafka_dead_letter(rd_kafka_t *producer, const char *dlq_topic, const rd_kafka_message_t *m,
                         const char *reason, const char *detail, const char *service, char *errstr,
                         size_t errstr_size);

/* Produces, serving delivery reports while the local queue is full. Returns the produce error. */
rd_kafka_resp_err_t vx_kafka_produce(rd_kafka_t *producer, const char *topic, const char *key, size_t keylen,
                                     const char *value, size_t len, rd_kafka_headers_t *hdrs, void *opaque);

#endif
