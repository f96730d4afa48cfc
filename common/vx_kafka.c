/* vx_kafka: librdkafka set-up. See vx_kafka.h. */
#include "vx_kafka.h"

#include "vx_config.h"
#include "vx_log.h"
#include "vx_metrics.h"

#include <ctype.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static const struct {
    const char *env, *name, *logical;
} topics[VX_TOPIC_COUNT] = {
    [VX_TOPIC_INVENTORY_COMMANDS] = {"INVENTORY_COMMANDS_TOPIC", "inventory.commands", "inventory.commands"},
    [VX_TOPIC_INVENTORY_EVENTS] = {"INVENTORY_EVENTS_TOPIC", "inventory.events", "events"},
    [VX_TOPIC_INVENTORY_DLQ] = {"INVENTORY_DLQ_TOPIC", "inventory.dlq", "inventory.dlq"},
    [VX_TOPIC_ORDERS_COMMANDS] = {"ORDERS_COMMANDS_TOPIC", "orders.commands", "orders.commands"},
    [VX_TOPIC_ORDERS_RESULTS] = {"ORDERS_RESULTS_TOPIC", "orders.results", "orders.results"},
    [VX_TOPIC_ORDERS_DLQ] = {"ORDERS_DLQ_TOPIC", "orders.dlq", "orders.dlq"},
};

const char *vx_topic(vx_topic_t t) { return vx_cfg_str(topics[t].env, topics[t].name); }
const char *vx_topic_logical(vx_topic_t t) { return topics[t].logical; }

int vx_kafka_prop_from_env(const char *env_name, vx_kafka_role_t role, char *prop, size_t prop_size) {
    const char *eq = strchr(env_name, '='), *p;
    size_t n, i;

    if (strncmp(env_name, "KAFKA_", 6) != 0) return 0;
    p = env_name + 6;
    if (strncmp(p, "PRODUCER_", 9) == 0) {
        if (role != VX_KAFKA_PRODUCER) return 0;
        p += 9;
    } else if (strncmp(p, "CONSUMER_", 9) == 0) {
        if (role != VX_KAFKA_CONSUMER) return 0;
        p += 9;
    }
    n = eq ? (size_t)(eq - p) : strlen(p);
    if (n == 0 || n >= prop_size) return 0;
    for (i = 0; i < n; i++) prop[i] = p[i] == '_' ? '.' : (char)tolower((unsigned char)p[i]);
    prop[n] = '\0';
    return 1;
}

/* librdkafka's own log lines, as JSON lines like everything else (syslog levels: 3 error, 4 warning). */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    (void)rk;
    vx_log(level <= 3 ? VX_LOG_ERROR : level == 4 ? VX_LOG_WARN : level <= 6 ? VX_LOG_INFO : VX_LOG_DEBUG, "librdkafka",
           "facility", fac, "detail", buf, NULL);
}

/* Requests each client sent, by type, from librdkafka's statistics (statistics.interval.ms): what
 * batching costs the broker, one Produce request per partition and batch, one Fetch per broker and
 * poll cycle. The statistics count per handle from its creation; the metric adds each handle's growth
 * since its previous report, so handles of one kind (the gateway's two consumers, a client made
 * again) add up in one series per kind and request type. */
#define STATS_MAX 64       /* (handle, request type) pairs remembered */
#define STATS_STALE_MS 30000 /* a pair not reported for this long is a destroyed handle's: its slot is free */
static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const rd_kafka_t *rk;
    char req[32];
    int64_t last;    /* the count of the previous report */
    long long at_ms; /* when it came */
} stats_seen[STATS_MAX];
static int stats_n;

static long long stats_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* How much rk's count of req grew since its previous report (under stats_mu). A smaller count than
   before is a handle made at a destroyed one's address: it counts from zero. (A stale pair stays
   rk's until its slot is needed: a loop that did not poll for a while gets its reports late, not
   counted twice.) */
static int64_t stats_growth(const rd_kafka_t *rk, const char *req, int64_t now, long long t) {
    int i, free_slot = -1;
    if (strlen(req) >= sizeof(stats_seen[0].req)) return 0;
    for (i = 0; i < stats_n; i++) {
        if (stats_seen[i].rk == rk && !strcmp(stats_seen[i].req, req)) break;
        if (free_slot < 0 && t - stats_seen[i].at_ms > STATS_STALE_MS) free_slot = i;
    }
    if (i == stats_n) {
        if (stats_n < STATS_MAX)
            i = stats_n++;
        else if ((i = free_slot) < 0)
            return 0; /* 64 live pairs: no Valerix process has that many */
        stats_seen[i].rk = rk;
        snprintf(stats_seen[i].req, sizeof(stats_seen[0].req), "%s", req);
        stats_seen[i].last = 0;
    }
    int64_t d = now >= stats_seen[i].last ? now - stats_seen[i].last : now;
    stats_seen[i].last = now;
    stats_seen[i].at_ms = t;
    return d;
}

static vx_metric_t *stats_metric;
static pthread_once_t stats_once = PTHREAD_ONCE_INIT;
static void stats_init(void) {
    stats_metric = vx_metric_new(VX_COUNTER, "valerix_kafka_requests_total",
                                 "Requests the process's Kafka clients sent to the brokers, by client kind and "
                                 "request type (librdkafka statistics, every statistics.interval.ms)",
                                 "client,request", NULL, 0);
}

void vx_kafka_stats(const rd_kafka_t *rk, const char *json, size_t len) {
    vx_metric_t *m;
    pthread_once(&stats_once, stats_init);
    m = stats_metric;
    struct json_tokener *tok = json_tokener_new();
    struct json_object *root = tok ? json_tokener_parse_ex(tok, json, (int)len) : NULL, *brokers;
    if (tok) json_tokener_free(tok);
    if (!m || !root || !json_object_object_get_ex(root, "brokers", &brokers)) goto out;
    /* this report's totals per request type, over the handle's brokers */
    struct {
        const char *name;
        int64_t n;
    } tot[48];
    int ntot = 0;
    json_object_object_foreach(brokers, bname, broker) {
        struct json_object *req;
        (void)bname;
        if (!json_object_object_get_ex(broker, "req", &req)) continue;
        json_object_object_foreach(req, rname, rv) {
            int64_t v = json_object_get_int64(rv);
            int i;
            if (v <= 0) continue;
            for (i = 0; i < ntot && strcmp(tot[i].name, rname); i++)
                ;
            if (i == ntot) {
                if (ntot == (int)(sizeof(tot) / sizeof(tot[0]))) continue;
                tot[ntot].name = rname;
                tot[ntot++].n = 0;
            }
            tot[i].n += v;
        }
    }
    const char *kind = rd_kafka_type(rk) == RD_KAFKA_PRODUCER ? "producer" : "consumer";
    long long t = stats_now_ms();
    pthread_mutex_lock(&stats_mu);
    for (int i = 0; i < ntot; i++) {
        int64_t d = stats_growth(rk, tot[i].name, tot[i].n, t);
        if (d > 0) vx_metric_add(m, VX_L(kind, tot[i].name), (double)d);
    }
    pthread_mutex_unlock(&stats_mu);
out:
    if (root) json_object_put(root);
}

/* Called from the handle's poll with the statistics JSON (librdkafka frees it: return 0). */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    (void)opaque;
    vx_kafka_stats(rk, json, len);
    return 0;
}

static int conf_set(rd_kafka_conf_t *conf, const char *k, const char *v, char *errstr, size_t errstr_size) {
    return rd_kafka_conf_set(conf, k, v, errstr, errstr_size) == RD_KAFKA_CONF_OK ? 0 : -1;
}

rd_kafka_conf_t *vx_kafka_conf_new(vx_kafka_role_t role, const char *const *defaults, char *errstr,
                                   size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char prop[256];

    rd_kafka_conf_set_log_cb(conf, log_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);

    if (conf_set(conf, "bootstrap.servers", VX_KAFKA_DEFAULT_BOOTSTRAP, errstr, errstr_size) ||
        /* valerix_kafka_requests_total: a report a second, served by the handle's own poll */
        conf_set(conf, "statistics.interval.ms", "1000", errstr, errstr_size) ||
        conf_set(conf, "client.id", "valerix", errstr, errstr_size) ||
        conf_set(conf, "socket.nagle.disable", "true", errstr, errstr_size) || /* small messages, low latency */
        conf_set(conf, "reconnect.backoff.max.ms", VX_KAFKA_RECONNECT_BACKOFF_MAX_MS, errstr, errstr_size))
        goto err;
    if (role == VX_KAFKA_PRODUCER &&
        /* Ordered rather than idempotent. librdkafka 2.0's idempotent producer polls its socket with
           a zero timeout while requests are in flight: 26,000 polls/s in the gateway at 64
           connections, 60 us of CPU per message. One request in flight per connection keeps each
           partition in order across retries (librdkafka puts a failed request's messages back ahead
           of the rest); a retry after a lost answer may write a message twice, which every consumer
           here absorbs as it absorbs the outbox sweep's resends (commands and events by idempotency
           key, replies by correlation id). And while a request is in flight the next messages
           queue, so under load each request carries many: batching that follows the load. */
        (conf_set(conf, "enable.idempotence", "false", errstr, errstr_size) ||
         conf_set(conf, "max.in.flight.requests.per.connection", "1", errstr, errstr_size) ||
         conf_set(conf, "acks", "all", errstr, errstr_size) ||
         /* no linger: a lone message goes at once (one-client p50 13 -> 6.5 ms in make bench); under
            load librdkafka still batches what queues while requests are in flight */
         conf_set(conf, "linger.ms", "0", errstr, errstr_size) ||
         conf_set(conf, "message.timeout.ms", "0", errstr, errstr_size) || /* retry until delivered */
         conf_set(conf, "queue.buffering.max.messages", "1000000", errstr, errstr_size) ||
         /* at most 16 MiB waiting for the broker: beyond it produce waits (vx_kafka_produce) */
         conf_set(conf, "queue.buffering.max.kbytes", "16384", errstr, errstr_size)))
        goto err;
    if (role == VX_KAFKA_CONSUMER &&
        (conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) ||
         conf_set(conf, "enable.auto.commit", "true", errstr, errstr_size) ||
         conf_set(conf, "auto.commit.interval.ms", "1000", errstr, errstr_size) ||
         conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) ||
         conf_set(conf, "enable.partition.eof", "false", errstr, errstr_size) ||
         /* the broker answers a fetch as soon as a message arrives; the wait bounds only an idle
            fetch, so a long one costs no latency and spares the broker 100 fetches/s per idle consumer */
         conf_set(conf, "fetch.wait.max.ms", "500", errstr, errstr_size) ||
         /* prefetch at most 4 MiB per partition (librdkafka counts it per partition here): memory stays small */
         conf_set(conf, "queued.max.messages.kbytes", "4096", errstr, errstr_size)))
        goto err;
    for (; defaults && defaults[0] && defaults[1]; defaults += 2)
        if (conf_set(conf, defaults[0], defaults[1], errstr, errstr_size)) goto err;

    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !vx_kafka_prop_from_env(*e, role, prop, sizeof(prop))) continue;
        if (conf_set(conf, prop, eq + 1, errstr, errstr_size)) {
            char why[256];
            snprintf(why, sizeof(why), "%s", errstr);
            snprintf(errstr, errstr_size, "%.*s: %s", (int)(eq - *e), *e, why);
            goto err;
        }
    }
    return conf;
err:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_t *vx_kafka_producer_new(void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *), void *opaque,
                                  const char *const *defaults, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = vx_kafka_conf_new(VX_KAFKA_PRODUCER, defaults, errstr, errstr_size);
    rd_kafka_t *rk;

    if (!conf) return NULL;
    if (dr_cb) rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_conf_set_opaque(conf, opaque);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!rk) rd_kafka_conf_destroy(conf); /* rd_kafka_new takes the conf only on success */
    return rk;
}

void vx_kafka_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts) {
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t r = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (coop)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            r = rd_kafka_assign(rk, parts);
        rd_kafka_resume_partitions(rk, parts);
    } else if (coop) {
        e = rd_kafka_incremental_unassign(rk, parts);
    } else {
        r = rd_kafka_assign(rk, NULL);
    }
    if (e) {
        vx_log(VX_LOG_ERROR, "rebalance_failed", "error", rd_kafka_error_string(e), NULL);
        rd_kafka_error_destroy(e);
    } else if (r) {
        vx_log(VX_LOG_ERROR, "rebalance_failed", "error", rd_kafka_err2str(r), NULL);
    }
}

static int id_char(int c) { return isalnum(c) || c == '.' || c == '_' || c == '-'; }

int vx_kafka_instance_id(const char *service, const char *http_addr, char *out, size_t size, char *errstr,
                         size_t errstr_size) {
    const char *set = vx_cfg_str("VX_INSTANCE_ID", NULL);
    char host[256] = "localhost";
    size_t n;

    if (set && strcmp(set, "none") == 0) {
        out[0] = '\0';
        return 0;
    }
    if (set) {
        n = strlen(set);
        for (size_t i = 0; i < n; i++)
            if (!id_char((unsigned char)set[i])) {
                snprintf(errstr, errstr_size, "VX_INSTANCE_ID: only letters, digits, '.', '_' and '-' (Kafka's rule)");
                return -1;
            }
        if (n > VX_INSTANCE_ID_MAX || n >= size) {
            snprintf(errstr, errstr_size, "VX_INSTANCE_ID: at most %d characters", VX_INSTANCE_ID_MAX);
            return -1;
        }
        memcpy(out, set, n + 1);
        return 0;
    }
    if (gethostname(host, sizeof(host) - 1)) snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    n = (size_t)snprintf(out, size, "%s.%s.%s", service, host, http_addr);
    if (n > VX_INSTANCE_ID_MAX || n >= size) {
        snprintf(errstr, errstr_size, "the instance id %s.%s.%s is over %d characters: set VX_INSTANCE_ID", service,
                 host, http_addr, VX_INSTANCE_ID_MAX);
        return -1;
    }
    for (char *p = out; *p; p++)
        if (!id_char((unsigned char)*p)) *p = '-';
    return 0;
}

void vx_kafka_leave_group(rd_kafka_t *rk, int timeout_ms) {
    rd_kafka_topic_partition_list_t *now = NULL;
    int left = 0;

    if (rd_kafka_unsubscribe(rk)) return;
    for (int waited = 0; waited < timeout_ms && !left; waited += 100) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (m) rd_kafka_message_destroy(m);
        if (!rd_kafka_assignment(rk, &now)) {
            left = now->cnt == 0;
            rd_kafka_topic_partition_list_destroy(now);
        }
    }
}

rd_kafka_t *vx_kafka_consumer_new(const char *group_id, const char *instance_id, const char *const *topics, int n,
                                  void (*rebalance_cb)(rd_kafka_t *, rd_kafka_resp_err_t,
                                                       rd_kafka_topic_partition_list_t *, void *),
                                  void *opaque, char *errstr, size_t errstr_size) {
    /* KAFKA_* in the environment still has the last word over these (vx_kafka_conf_new) */
    const char *defaults[] = {"session.timeout.ms", VX_KAFKA_SESSION_TIMEOUT_MS,
                              "heartbeat.interval.ms", VX_KAFKA_HEARTBEAT_INTERVAL_MS,
                              instance_id && instance_id[0] ? "group.instance.id" : NULL, instance_id, NULL};
    rd_kafka_conf_t *conf = vx_kafka_conf_new(VX_KAFKA_CONSUMER, defaults, errstr, errstr_size);
    rd_kafka_topic_partition_list_t *subs = NULL;
    rd_kafka_resp_err_t err;
    rd_kafka_t *rk;

    if (!conf) return NULL;
    if (conf_set(conf, "group.id", group_id, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    if (rebalance_cb) {
        rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
        rd_kafka_conf_set_opaque(conf, opaque);
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    subs = rd_kafka_topic_partition_list_new(n);
    for (int i = 0; i < n; i++) rd_kafka_topic_partition_list_add(subs, topics[i], RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe: %s", rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

int vx_kafka_ensure_topics(rd_kafka_t *rk, const char *const *topics, int n, int partitions, int replication,
                           long long retention_ms, int timeout_ms, char *errstr, size_t errstr_size) {
    rd_kafka_NewTopic_t *nt[16];
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_event_t *ev = NULL;
    char retention[32];
    int rc = -1, made = 0;

    if (n > 16) {
        snprintf(errstr, errstr_size, "at most 16 topics at once");
        goto out;
    }
    snprintf(retention, sizeof(retention), "%lld", retention_ms);
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, NULL, 0);
    rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, NULL, 0);
    for (; made < n; made++) {
        nt[made] = rd_kafka_NewTopic_new(topics[made], partitions, replication, errstr, errstr_size);
        if (!nt[made]) goto out;
        rd_kafka_NewTopic_set_config(nt[made], "retention.ms", retention);
    }
    rd_kafka_CreateTopics(rk, nt, (size_t)n, opts, q);
    ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    if (!ev) {
        snprintf(errstr, errstr_size, "no answer from the broker to CreateTopics");
        goto out;
    }
    if (rd_kafka_event_error(ev)) {
        snprintf(errstr, errstr_size, "CreateTopics: %s", rd_kafka_event_error_string(ev));
        goto out;
    }
    {
        size_t cnt;
        const rd_kafka_topic_result_t **res = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &cnt);
        for (size_t i = 0; i < cnt; i++) {
            rd_kafka_resp_err_t e = rd_kafka_topic_result_error(res[i]);
            if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                snprintf(errstr, errstr_size, "topic %s: %s", rd_kafka_topic_result_name(res[i]),
                         rd_kafka_topic_result_error_string(res[i]));
                goto out;
            }
        }
    }
    /* Created is not yet visible: a consumer that subscribes before the metadata lists the topic
     * would sit idle until its next metadata refresh (minutes). Wait until every one is listed. */
    for (long long waited = 0;; waited += 200) {
        const struct rd_kafka_metadata *md = NULL;
        int found = 0;
        if (rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR)
            for (int i = 0; i < n; i++)
                for (int t = 0; t < md->topic_cnt; t++)
                    found += strcmp(md->topics[t].topic, topics[i]) == 0 && !md->topics[t].err &&
                             md->topics[t].partition_cnt > 0;
        if (md) rd_kafka_metadata_destroy(md);
        if (found == n) break;
        if (waited > timeout_ms) {
            snprintf(errstr, errstr_size, "the topics are not in the broker's metadata after %d ms", timeout_ms);
            goto out;
        }
        usleep(200 * 1000);
    }
    rc = 0;
out:
    if (ev) rd_kafka_event_destroy(ev);
    for (int i = 0; i < made; i++) rd_kafka_NewTopic_destroy(nt[i]);
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    return rc;
}

int vx_kafka_reachable(rd_kafka_t *rk, int timeout_ms) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, timeout_ms);
    int ok = err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0;
    if (md) rd_kafka_metadata_destroy(md);
    return ok;
}

/* vx_kafka_check_broker's client reports errors here (called from its rd_kafka_poll, in the caller's
 * thread); librdkafka tells of refused credentials only this way, a request just times out. */
static void check_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    char *auth = opaque;
    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__AUTHENTICATION && !auth[0]) snprintf(auth, 512, "%s", reason);
}

int vx_kafka_check_broker(vx_kafka_role_t role, int timeout_ms, char *errstr, size_t errstr_size) {
    /* quiet: what failed is said once, by errstr */
    const char *defaults[] = {"log_level", "2", NULL};
    char auth[512] = "", user[128] = "", servers[256] = "";
    size_t n;
    struct timespec ts;
    long long deadline;
    rd_kafka_conf_t *conf = vx_kafka_conf_new(role == VX_KAFKA_PRODUCER ? VX_KAFKA_PRODUCER : VX_KAFKA_CONSUMER,
                                              defaults, errstr, errstr_size);
    rd_kafka_t *rk;
    int rc = 1;

    if (!conf) return 2;
    rd_kafka_conf_set_error_cb(conf, check_error_cb);
    rd_kafka_conf_set_opaque(conf, auth);
    n = sizeof(user);
    rd_kafka_conf_get(conf, "sasl.username", user, &n);
    n = sizeof(servers);
    rd_kafka_conf_get(conf, "bootstrap.servers", servers, &n);
    if (!(rk = rd_kafka_new(role == VX_KAFKA_PRODUCER ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER, conf, errstr,
                            errstr_size))) {
        rd_kafka_conf_destroy(conf);
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    deadline = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + timeout_ms;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, 250);
        int ok = err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0;
        if (md) rd_kafka_metadata_destroy(md);
        if (ok) {
            rc = 0;
            break;
        }
        rd_kafka_poll(rk, 50); /* serves check_error_cb */
        if (auth[0]) {
            snprintf(errstr, errstr_size,
                     "Kafka refused the credentials of user \"%s\" (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, "
                     "KAFKA_SASL_MECHANISMS; the password is not shown): %s",
                     user, auth);
            rc = -1;
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if ((long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 >= deadline) {
            snprintf(errstr, errstr_size, "no Kafka broker at %s (KAFKA_BOOTSTRAP_SERVERS) answered within %d ms",
                     servers, timeout_ms);
            break;
        }
    }
    rd_kafka_destroy(rk);
    return rc;
}

const char *vx_kafka_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size) {
    rd_kafka_headers_t *hdrs;
    if (rd_kafka_message_headers(m, &hdrs)) return NULL;
    return vx_kafka_headers_get(hdrs, name, buf, size);
}

const char *vx_kafka_headers_get(const rd_kafka_headers_t *hdrs, const char *name, char *buf, size_t size) {
    const void *val;
    size_t len;

    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &val, &len) || !val) return NULL;
    if (len >= size) len = size - 1;
    memcpy(buf, val, len);
    buf[len] = '\0';
    return buf;
}

const char *vx_kafka_correlation_id(const rd_kafka_headers_t *hdrs, char *buf, size_t size) {
    const void *val;
    size_t len;

    if (!hdrs || rd_kafka_header_get_last(hdrs, "correlation-id", &val, &len) || !val || len < 1 || len >= size)
        return NULL;
    for (size_t i = 0; i < len; i++)
        if (((const unsigned char *)val)[i] < 0x21 || ((const unsigned char *)val)[i] > 0x7e) return NULL;
    memcpy(buf, val, len);
    buf[len] = '\0';
    return buf;
}

int vx_kafka_dlq_origin(const rd_kafka_headers_t *hdrs, char *source, size_t source_size, long long *count,
                        char *errstr, size_t errstr_size) {
    const void *val;
    size_t len;

    *count = 0;
    source[0] = '\0';
    if (hdrs && !rd_kafka_header_get_last(hdrs, "redrive-count", &val, &len) && val) {
        const char *c = val;
        if (len < 1 || len > 10) goto bad_count;
        for (size_t i = 0; i < len; i++) {
            if (c[i] < '0' || c[i] > '9') goto bad_count;
            *count = *count * 10 + (c[i] - '0');
        }
        if (*count > VX_REDRIVE_COUNT_MAX) goto bad_count;
    }
    if (!hdrs || rd_kafka_header_get_last(hdrs, "dlq-source-topic", &val, &len) || !val || !len) {
        snprintf(errstr, errstr_size, "no dlq-source-topic header");
        return -1;
    }
    if (len >= source_size || memchr(val, '\0', len)) {
        snprintf(errstr, errstr_size, "dlq-source-topic is not a topic name (%zu bytes)", len);
        return -1;
    }
    memcpy(source, val, len);
    source[len] = '\0';
    return 0;
bad_count:
    *count = 0;
    snprintf(errstr, errstr_size, "redrive-count is not a whole number from 0 to %lld", VX_REDRIVE_COUNT_MAX);
    return -1;
}

rd_kafka_resp_err_t vx_kafka_produce(rd_kafka_t *producer, const char *topic, const char *key, size_t keylen,
                                     const char *value, size_t len, rd_kafka_headers_t *hdrs, void *opaque) {
    rd_kafka_resp_err_t err;
    for (;;) {
        err = rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, keylen),
                                RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return err;
        rd_kafka_poll(producer, 10); /* the queue drains as deliveries are acknowledged */
    }
}

int vx_kafka_dead_letter(rd_kafka_t *producer, const char *dlq_topic, const rd_kafka_message_t *m,
                         const char *reason, const char *detail, const char *service, char *errstr,
                         size_t errstr_size) {
    rd_kafka_headers_t *orig = NULL, *hdrs;
    char num[32];
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_resp_err_t err;

    hdrs = rd_kafka_headers_new(8);
    if (rd_kafka_message_headers(m, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t size;
        /* dlq-* headers that came with the message are not ours to vouch for: a letter carries one set */
        for (size_t i = 0; !rd_kafka_header_get_all(orig, i, &name, &val, &size); i++)
            if (strncmp(name, "dlq-", 4) != 0) rd_kafka_header_add(hdrs, name, -1, val, val ? (ssize_t)size : 0);
    }
    rd_kafka_header_add(hdrs, "dlq-reason", -1, reason, -1);
    rd_kafka_header_add(hdrs, "dlq-error", -1, detail, -1);
    rd_kafka_header_add(hdrs, "dlq-source-topic", -1, topic, -1);
    snprintf(num, sizeof(num), "%d", (int)m->partition);
    rd_kafka_header_add(hdrs, "dlq-source-partition", -1, num, -1);
    snprintf(num, sizeof(num), "%lld", (long long)m->offset);
    rd_kafka_header_add(hdrs, "dlq-source-offset", -1, num, -1);
    rd_kafka_header_add(hdrs, "dlq-service", -1, service, -1);
    err = vx_kafka_produce(producer, dlq_topic, m->key, m->key_len, m->payload, m->len, hdrs, NULL);
    if (err) {
        rd_kafka_headers_destroy(hdrs); /* producev takes the headers only on success */
        snprintf(errstr, errstr_size, "dead-letter produce: %s", rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

int vx_kafka_assign_end(rd_kafka_t *rk, const char *const *topics, int n, char *errstr, size_t errstr_size) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(8);
    rd_kafka_resp_err_t err;
    int rc = -1;

    for (int i = 0; i < n; i++) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topics[i], NULL);
        err = rd_kafka_metadata(rk, 0, t, &md, 10000);
        if (err || md->topic_cnt != 1 || md->topics[0].err) {
            snprintf(errstr, errstr_size, "topic %s: %s", topics[i],
                     rd_kafka_err2str(err ? err : md->topic_cnt ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
            if (md) rd_kafka_metadata_destroy(md);
            rd_kafka_topic_destroy(t);
            goto out;
        }
        for (int p = 0; p < md->topics[0].partition_cnt; p++) {
            int64_t lo, hi;
            int32_t id = md->topics[0].partitions[p].id;
            if ((err = rd_kafka_query_watermark_offsets(rk, topics[i], id, &lo, &hi, 10000))) {
                snprintf(errstr, errstr_size, "topic %s offsets: %s", topics[i], rd_kafka_err2str(err));
                rd_kafka_metadata_destroy(md);
                rd_kafka_topic_destroy(t);
                goto out;
            }
            rd_kafka_topic_partition_list_add(l, topics[i], id)->offset = hi;
        }
        rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(t);
    }
    if ((err = rd_kafka_assign(rk, l))) {
        snprintf(errstr, errstr_size, "assign: %s", rd_kafka_err2str(err));
        goto out;
    }
    rc = 0;
out:
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

int vx_kafka_shutdown_ms(char *errstr, size_t errstr_size) {
    long long v;
    if (vx_cfg_int("VX_SHUTDOWN_TIMEOUT_MS", VX_SHUTDOWN_TIMEOUT_DEFAULT_MS, 100, 600000, &v, errstr, errstr_size))
        return -1;
    return (int)v;
}

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vx_kafka_consumer_destroy(rd_kafka_t *rk, int timeout_ms) {
    long long deadline = mono_ms() + timeout_ms;
    rd_kafka_queue_t *q;
    rd_kafka_error_t *e;
    int closed = 0;

    if (!rk) return 1;
    /* The close runs in librdkafka's background; its rebalance events come to q, where polling serves
       them through the rebalance callback, as rd_kafka_consumer_close would, but with a deadline. */
    q = rd_kafka_queue_new(rk);
    if ((e = rd_kafka_consumer_close_queue(rk, q))) { /* no close to wait for: nothing else to do */
        vx_log(VX_LOG_WARN, "consumer_close_failed", "error", rd_kafka_error_string(e), NULL);
        rd_kafka_error_destroy(e);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        return 0;
    } else {
        while (!(closed = rd_kafka_consumer_closed(rk)) && mono_ms() < deadline) {
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 50);
            if (!ev) continue;
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE) {
                /* The application's own callback is not called for events polled this way: give
                   the partitions up as it would (revoke is all a close brings). */
                rd_kafka_topic_partition_list_t *parts = rd_kafka_event_topic_partition_list(ev);
                if (strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0) {
                    rd_kafka_error_t *ue = rd_kafka_incremental_unassign(rk, parts);
                    if (ue) rd_kafka_error_destroy(ue);
                } else {
                    rd_kafka_assign(rk, NULL);
                }
            }
            rd_kafka_event_destroy(ev);
        }
    }
    if (!closed) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%d", timeout_ms);
        vx_log(VX_LOG_WARN, "consumer_close_abandoned", "#timeout_ms", ms, "detail",
               "the group coordinator did not answer in time (broker gone?): the consumer is left to the "
               "process's exit; offsets not committed since the last auto-commit are delivered again",
               NULL);
    }
    rd_kafka_queue_destroy(q);
    /* A close that did not finish leaves the handle to the process's exit: destroying it would wait
       for the same coordinator (35 s more with the broker gone, measured), flag or not. */
    if (closed) rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return closed;
}

int vx_kafka_producer_destroy(rd_kafka_t *rk, int timeout_ms) {
    int left;
    if (!rk) return 0;
    rd_kafka_flush(rk, timeout_ms);
    if ((left = rd_kafka_outq_len(rk)) > 0) {
        char n[16];
        snprintf(n, sizeof(n), "%d", left);
        vx_log(VX_LOG_WARN, "producer_not_flushed", "#messages", n, "detail",
               "the broker did not take them in time; outbox rows stay for the next start's sweep", NULL);
    }
    rd_kafka_destroy(rk);
    return left;
}
