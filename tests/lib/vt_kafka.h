/* vt_kafka: librdkafka clients the way the test programs use them: made from the caller's
 * configuration (each program has its own: the it harness a fixed broker and a log file, the soak
 * and vxbench the services' KAFKA_* settings), reading a topic by assignment from its beginning or
 * from its end, reading a topic up to its end, and a consumer group's lag.
 *
 * Invariant: nothing here joins a consumer group or commits an offset, and "the end" is the end a
 * topic has when the call asks for it: what is produced after that is read, nothing before it. */
#ifndef VT_KAFKA_H
#define VT_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stddef.h>
#include <stdint.h>

/* Where a reader starts in each partition. VT_FROM_END: only what is produced after the reader was
 * made (the high watermark of each partition, resolved before the call returns). */
typedef enum { VT_FROM_BEGINNING, VT_FROM_END } vt_from_t;

/* Sets the properties of `pairs` (name, value, name, value, ..., NULL; borrowed) on conf. */
int vt_kafka_conf_set(rd_kafka_conf_t *conf, const char *const *pairs, char *errstr, size_t errstr_size);

/* A client of `type` made from conf, which this takes in every case (the caller NULLs its
 * pointer); conf NULL fails without touching errstr, so that the call that failed to make the
 * configuration can be its argument and keep its message. A consumer has its main queue redirected to the consumer queue, so
 * rd_kafka_consumer_poll serves everything. On success the caller owns *out (rd_kafka_destroy). */
int vt_kafka_new(rd_kafka_t **out, rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errstr,
                 size_t errstr_size);

/* Every partition of topic, in partition order, each with .offset at RD_KAFKA_OFFSET_BEGINNING
 * (VT_FROM_BEGINNING) or at its end now (VT_FROM_END: the high watermark, a real offset). Waits up
 * to timeout_ms for the topic to exist with partitions and for each partition's end. rk may be any
 * client handle (a producer may create the topic if the broker allows it). On success the caller
 * owns *out (rd_kafka_topic_partition_list_destroy). */
int vt_kafka_partitions(rd_kafka_t *rk, const char *topic, vt_from_t from, int timeout_ms,
                        rd_kafka_topic_partition_list_t **out, char *errstr, size_t errstr_size);

/* A consumer made from conf (taken in every case; it needs a group.id, which is never joined)
 * assigned every partition of topic from `from`, as vt_kafka_partitions finds them within
 * timeout_ms. `assigned` non-NULL: gets the assignment (caller owns it). On success the caller owns
 * *out (rd_kafka_destroy). */
int vt_kafka_reader_new(rd_kafka_t **out, rd_kafka_conf_t *conf, const char *topic, vt_from_t from,
                        int timeout_ms, rd_kafka_topic_partition_list_t **assigned, char *errstr,
                        size_t errstr_size);

/* Calls fn(m, arg) once for every message of topic from its beginning up to the end it has when
 * called (m borrowed for the call), on a reader made from conf (taken in every case). Fails when
 * that end is not reached within timeout_ms; consumer errors on the way are ridden out. */
typedef void vt_kafka_msg_fn(const rd_kafka_message_t *m, void *arg);
int vt_kafka_read_to_end(rd_kafka_conf_t *conf, const char *topic, vt_kafka_msg_fn *fn, void *arg,
                         int timeout_ms, char *errstr, size_t errstr_size);

/* The lag of `group` on topic: the sum over partitions of the end minus the offset the group
 * committed (the partition's beginning when it committed none), asked of the group coordinator
 * through a consumer made from conf (taken in every case; group.id is set to group, auto commit
 * off; it never joins). The ends are read after the committed offsets, so 0 means the group had
 * committed everything the topic held at that moment. Each request waits up to timeout_ms. */
int vt_kafka_group_lag(rd_kafka_conf_t *conf, const char *group, const char *topic, int timeout_ms,
                       int64_t *lag, char *errstr, size_t errstr_size);

#endif
