/* vt_kafka: test readers over librdkafka by assignment, a topic's partitions and ends, a group's
 * lag (see vt_kafka.h).
 *
 * Invariant: every function that takes a configuration owns it from the call on, whatever happens:
 * it is handed to rd_kafka_new or destroyed, never both, never neither. */
#include "vt_kafka.h"

#include <stdlib.h>
#include <string.h>

#include "vt_util.h"

#define ATTEMPT_MS 5000 /* one metadata or offsets request; a longer wait is made of several */
#define RETRY_MS 200    /* between two of them: a topic just created, a broker restarting */

int vt_kafka_conf_set(rd_kafka_conf_t *conf, const char *const *pairs, char *errstr, size_t errstr_size) {
    char err[512];
    for (size_t i = 0; pairs && pairs[i]; i += 2) {
        if (!pairs[i + 1]) return vt_err(errstr, errstr_size, "property %s has no value", pairs[i]);
        if (rd_kafka_conf_set(conf, pairs[i], pairs[i + 1], err, sizeof err) != RD_KAFKA_CONF_OK)
            return vt_err(errstr, errstr_size, "%s=%s: %s", pairs[i], pairs[i + 1], err);
    }
    return 0;
}

int vt_kafka_new(rd_kafka_t **out, rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errstr,
                 size_t errstr_size) {
    char err[512];
    *out = NULL;
    if (!conf) return -1; /* whatever failed to make it has said why */
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);
    if (!rk) {
        rd_kafka_conf_destroy(conf); /* rd_kafka_new takes it only when it succeeds */
        return vt_err(errstr, errstr_size, "rd_kafka_new: %s", err);
    }
    if (type == RD_KAFKA_CONSUMER) rd_kafka_poll_set_consumer(rk);
    *out = rk;
    return 0;
}

/* What is left of the time to deadline for one request: at most ATTEMPT_MS, at least 1. */
static int attempt_ms(int64_t deadline) {
    int64_t left = deadline - vt_mono_ms();
    return left > ATTEMPT_MS ? ATTEMPT_MS : left > 0 ? (int)left : 1;
}

/* The partition list of topic with every offset at the beginning, once the metadata shows it. */
static int topic_list(rd_kafka_t *rk, const char *topic, int timeout_ms, int64_t deadline,
                      rd_kafka_topic_partition_list_t **out, char *errstr, size_t errstr_size) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt)
        return vt_err(errstr, errstr_size, "topic %s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, attempt_ms(deadline));
        if (!err && md->topic_cnt == 1 && !md->topics[0].err && md->topics[0].partition_cnt > 0) {
            rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
            for (int p = 0; p < md->topics[0].partition_cnt; p++)
                rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[p].id)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
            rd_kafka_topic_partition_list_sort(l, NULL, NULL);
            rd_kafka_metadata_destroy(md);
            rd_kafka_topic_destroy(rkt);
            *out = l;
            return 0;
        }
        if (!err) err = md->topic_cnt == 1 && md->topics[0].err ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
        if (md) rd_kafka_metadata_destroy(md);
        if (vt_mono_ms() >= deadline) {
            rd_kafka_topic_destroy(rkt);
            return vt_err(errstr, errstr_size, "topic %s not available within %d ms: %s", topic, timeout_ms,
                          rd_kafka_err2str(err));
        }
        vt_sleep_ms(RETRY_MS);
    }
}

int vt_kafka_partitions(rd_kafka_t *rk, const char *topic, vt_from_t from, int timeout_ms,
                        rd_kafka_topic_partition_list_t **out, char *errstr, size_t errstr_size) {
    int64_t deadline = vt_mono_ms() + timeout_ms;
    rd_kafka_topic_partition_list_t *l = NULL;

    *out = NULL;
    if (topic_list(rk, topic, timeout_ms, deadline, &l, errstr, errstr_size)) return -1;
    for (int i = 0; from == VT_FROM_END && i < l->cnt; i++) {
        int64_t lo, hi;
        rd_kafka_resp_err_t err;
        /* The end as of now: everything produced later is at or past it. */
        while ((err = rd_kafka_query_watermark_offsets(rk, topic, l->elems[i].partition, &lo, &hi,
                                                       attempt_ms(deadline)))) {
            if (vt_mono_ms() >= deadline) {
                vt_err(errstr, errstr_size, "end offset of %s [%d]: %s", topic, (int)l->elems[i].partition,
                       rd_kafka_err2str(err));
                rd_kafka_topic_partition_list_destroy(l);
                return -1;
            }
            vt_sleep_ms(RETRY_MS);
        }
        l->elems[i].offset = hi;
    }
    *out = l;
    return 0;
}

int vt_kafka_reader_new(rd_kafka_t **out, rd_kafka_conf_t *conf, const char *topic, vt_from_t from,
                        int timeout_ms, rd_kafka_topic_partition_list_t **assigned, char *errstr,
                        size_t errstr_size) {
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_resp_err_t err;
    int rc = -1;

    *out = NULL;
    if (assigned) *assigned = NULL;
    if (vt_kafka_new(&rk, RD_KAFKA_CONSUMER, conf, errstr, errstr_size)) return -1;
    if (vt_kafka_partitions(rk, topic, from, timeout_ms, &l, errstr, errstr_size)) goto out;
    if ((err = rd_kafka_assign(rk, l))) {
        vt_err(errstr, errstr_size, "assign %s: %s", topic, rd_kafka_err2str(err));
        goto out;
    }
    *out = rk; /* the caller's now */
    rk = NULL;
    if (assigned) {
        *assigned = l;
        l = NULL;
    }
    rc = 0;
out:
    if (l) rd_kafka_topic_partition_list_destroy(l);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}

int vt_kafka_read_to_end(rd_kafka_conf_t *conf, const char *topic, vt_kafka_msg_fn *fn, void *arg,
                         int timeout_ms, char *errstr, size_t errstr_size) {
    int64_t deadline = vt_mono_ms() + timeout_ms, *end = NULL, *next = NULL;
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_resp_err_t err;
    int rc = -1, left = 0;
    int32_t n = 0; /* partition ids are 0 .. n-1 */

    if (vt_kafka_new(&rk, RD_KAFKA_CONSUMER, conf, errstr, errstr_size)) return -1;
    if (vt_kafka_partitions(rk, topic, VT_FROM_END, timeout_ms, &l, errstr, errstr_size)) goto out;
    for (int i = 0; i < l->cnt; i++)
        if (l->elems[i].partition >= n) n = l->elems[i].partition + 1;
    end = calloc((size_t)n, sizeof(*end));
    next = calloc((size_t)n, sizeof(*next));
    if (!end || !next) {
        vt_err(errstr, errstr_size, "out of memory");
        goto out;
    }
    for (int i = 0; i < l->cnt; i++) {
        end[l->elems[i].partition] = l->elems[i].offset;
        left += l->elems[i].offset > 0;
        l->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
    }
    if ((err = rd_kafka_assign(rk, l))) {
        vt_err(errstr, errstr_size, "assign %s: %s", topic, rd_kafka_err2str(err));
        goto out;
    }
    while (left > 0 && vt_mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        /* Past next only: a partition read again after an error is not reported twice. */
        if (!m->err && m->partition >= 0 && m->partition < n && m->offset >= next[m->partition] &&
            next[m->partition] < end[m->partition]) {
            fn(m, arg);
            next[m->partition] = m->offset + 1;
            if (next[m->partition] >= end[m->partition]) left--;
        }
        rd_kafka_message_destroy(m);
    }
    if (left > 0)
        vt_err(errstr, errstr_size, "%s: %d partitions not read to their end within %d s", topic, left,
               timeout_ms / 1000);
    else
        rc = 0;
out:
    free(end);
    free(next);
    if (l) rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return rc;
}

int vt_kafka_group_lag(rd_kafka_conf_t *conf, const char *group, const char *topic, int timeout_ms,
                       int64_t *lag, char *errstr, size_t errstr_size) {
    const char *const settings[] = {"group.id", group, "enable.auto.commit", "false", NULL};
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_resp_err_t err;
    int rc = -1;

    if (conf && vt_kafka_conf_set(conf, settings, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    /* Only OffsetFetch: this handle never subscribes, so it never joins. */
    if (vt_kafka_new(&rk, RD_KAFKA_CONSUMER, conf, errstr, errstr_size)) return -1;
    if (vt_kafka_partitions(rk, topic, VT_FROM_BEGINNING, timeout_ms, &l, errstr, errstr_size)) goto out;
    if ((err = rd_kafka_committed(rk, l, timeout_ms))) {
        vt_err(errstr, errstr_size, "committed offsets of %s on %s: %s", group, topic, rd_kafka_err2str(err));
        goto out;
    }
    *lag = 0;
    for (int i = 0; i < l->cnt; i++) {
        int64_t lo, hi, done;
        if ((err = rd_kafka_query_watermark_offsets(rk, topic, l->elems[i].partition, &lo, &hi, timeout_ms))) {
            vt_err(errstr, errstr_size, "offsets of %s [%d]: %s", topic, (int)l->elems[i].partition,
                   rd_kafka_err2str(err));
            goto out;
        }
        done = l->elems[i].offset >= 0 ? l->elems[i].offset : lo;
        *lag += hi > done ? hi - done : 0;
    }
    rc = 0;
out:
    if (l) rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    return rc;
}
