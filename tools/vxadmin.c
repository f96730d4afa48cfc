/* vxadmin: the operator's commands for a Valerix cluster (run `vxadmin --help`).
 *
 *   topics                  create the system's topics that do not exist yet
 *   lag [GROUP...]          per group and partition: committed offset, end offset, lag; members
 *   offsets GROUP           the group's committed offsets (what make backup records)
 *   offsets reset GROUP     move a stopped group's offsets (--to ... | --from-file FILE)
 *   replay TOPIC            re-produce a range of a topic; says what the replay changed
 *   dlq list TOPIC          dead letters counted per reason, with samples
 *   dlq redrive TOPIC       dead letters back to their source topic, resumable, counted
 *   outbox SERVICE          a service's outbox: rows waiting, the oldest's age, rows re-sent
 *
 * Invariants: nothing is changed without saying what; a command that changes something refuses
 * when the change is unsafe (a live group) and has --dry-run; a redrive never sends a letter twice
 * on a clean stop (its progress is committed after each batch is delivered, in a group of its own)
 * and never more than VX_REDRIVE_MAX times in all (the redrive-count header travels with it).
 * It reads the services' environment (KAFKA_*, the topic variables, INVENTORY_DB, ORDERS_DB).
 * Exit status: 0 done, 1 failed or refused, 2 usage. */
#include <ctype.h>
#include <errno.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "vx_config.h"
#include "vx_kafka.h"
#include "vx_pg.h"

#define TIMEOUT_MS 15000
#define REDRIVE_BATCH 100
#define SAMPLE_BYTES 200

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

/* ---- messages and exits ------------------------------------------------------------------------ */

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("vxadmin: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

static int usage(const char *text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int usage(const char *text, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("vxadmin: ", stderr);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", text);
    va_end(ap);
    return 2;
}

static const char HELP[] =
    "usage: vxadmin COMMAND [ARGS]   (vxadmin COMMAND --help for each)\n"
    "  topics                     create the system's topics that do not exist yet\n"
    "  lag [GROUP...]             committed offset, end offset and lag per group and partition\n"
    "  offsets GROUP              a group's committed offsets: TOPIC<TAB>PARTITION<TAB>OFFSET\n"
    "  offsets reset GROUP ...    move a stopped group's offsets (--to, --from-file)\n"
    "  replay TOPIC --from X      re-produce a range of a topic and report what it changed\n"
    "  dlq list TOPIC             dead letters per reason, with samples\n"
    "  dlq redrive TOPIC          dead letters back to their source topic (resumable)\n"
    "  outbox SERVICE             inventory-svc's or order-svc's outbox\n"
    "Environment: KAFKA_BOOTSTRAP_SERVERS and any KAFKA_* librdkafka property, the topic variables\n"
    "(INVENTORY_COMMANDS_TOPIC ...), INVENTORY_DB, ORDERS_DB, INVENTORY_GROUP_ID, ORDERS_GROUP_ID,\n"
    "VX_REDRIVE_MAX [3]. TIME: 2026-12-06T10:00:00Z (UTC) or @EPOCH_MS. A group's coordinator that is\n"
    "moving (a broker restarting) is asked again once a second for up to 30 s.\n"
    "Exit status: 0 done, 1 failed or refused, 2 usage.\n";

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return 1;
    return 0;
}

/* Options: "--name VALUE" pairs and "--flag"s after the positional arguments. */
typedef struct {
    const char *name;
    int flag;          /* takes no value */
    const char *value; /* NULL when absent; "" for a flag given */
} opt_t;

static int parse_opts(int argc, char **argv, opt_t *opts, int nopts, const char *help) {
    for (int i = 0; i < argc; i++) {
        int found = 0;
        for (int j = 0; j < nopts && !found; j++) {
            if (strcmp(argv[i], opts[j].name) != 0) continue;
            found = 1;
            if (opts[j].flag) {
                opts[j].value = "";
            } else if (i + 1 >= argc) {
                return usage(help, "%s needs a value", argv[i]);
            } else {
                opts[j].value = argv[++i];
            }
        }
        if (!found) return usage(help, "unexpected argument \"%s\"", argv[i]);
    }
    return 0;
}

/* ---- values: offsets, times ------------------------------------------------------------------------ */

static int parse_ll(const char *s, long long min, long long *out) {
    char *end;
    long long v;
    if (!s || !*s || !(isdigit((unsigned char)*s) || *s == '-')) return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < min) return -1;
    *out = v;
    return 0;
}

/* A time: ISO-8601 UTC (2026-12-06T10:00:00Z, seconds and fraction optional) or @EPOCH_MS. */
static int parse_time_ms(const char *s, long long *ms) {
    struct tm tm = {0};
    const char *p;
    long long frac = 0, scale = 1000;

    if (s[0] == '@') return parse_ll(s + 1, 0, ms);
    if (!(p = strptime(s, "%Y-%m-%dT%H:%M", &tm))) return -1;
    if (*p == ':') {
        if (!(p = strptime(p, ":%S", &tm))) return -1;
        if (*p == '.')
            for (p++; isdigit((unsigned char)*p); p++)
                if (scale > 1) frac = frac * 10 + (*p - '0'), scale /= 10;
    }
    if (strcmp(p, "Z") != 0) return -1;
    *ms = (long long)timegm(&tm) * 1000 + frac * scale;
    return 0;
}

/* Where a range starts or ends: earliest, latest, an offset or a time. */
typedef struct {
    enum { POS_EARLIEST, POS_LATEST, POS_OFFSET, POS_TIME } kind;
    long long v;
} pos_t;

static int parse_pos(const char *s, pos_t *p) {
    if (strcmp(s, "earliest") == 0) return p->kind = POS_EARLIEST, 0;
    if (strcmp(s, "latest") == 0) return p->kind = POS_LATEST, 0;
    if (parse_ll(s, 0, &p->v) == 0) return p->kind = POS_OFFSET, 0;
    if (parse_time_ms(s, &p->v) == 0) return p->kind = POS_TIME, 0;
    return -1;
}

/* ---- Kafka ---------------------------------------------------------------------------------------- */

/* A consumer handle without a subscription: metadata, watermarks, admin requests, reading by
 * assignment. group may be NULL (nothing is ever committed then). Caller destroys it. */
static rd_kafka_t *kafka_client(const char *group) {
    /* librdkafka's own lines (a broker that is down: one per retry) stay quiet unless KAFKA_LOG_LEVEL
     * asks: what failed is said once, by the command. */
    const char *defaults[] = {"group.id", group ? group : "vxadmin", "enable.auto.commit", "false", "log_level", "2",
                              NULL};
    char err[512];
    rd_kafka_conf_t *conf;
    rd_kafka_t *rk;

    /* refused credentials, or no broker: said at once, not as the first request's timeout */
    if (vx_kafka_check_broker(VX_KAFKA_CONSUMER, TIMEOUT_MS, err, sizeof(err))) return fail("%s", err), NULL;
    if (!(conf = vx_kafka_conf_new(VX_KAFKA_CONSUMER, defaults, err, sizeof(err)))) return fail("%s", err), NULL;
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err)))) {
        rd_kafka_conf_destroy(conf);
        return fail("%s", err), NULL;
    }
    return rk;
}

/* The number of partitions of topic, or -1 (said why) when it does not exist. */
static int partitions_of(rd_kafka_t *rk, const char *topic) {
    const rd_kafka_metadata_t *md;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, t, &md, TIMEOUT_MS);
    int n = -1;

    rd_kafka_topic_destroy(t);
    if (e) return fail("metadata of %s: %s", topic, rd_kafka_err2str(e)), -1;
    if (md->topic_cnt == 1 && !md->topics[0].err)
        n = md->topics[0].partition_cnt;
    else
        fail("topic %s: %s", topic,
             md->topic_cnt ? rd_kafka_err2str(md->topics[0].err) : "not in the broker's metadata");
    rd_kafka_metadata_destroy(md);
    return n;
}

static int watermarks(rd_kafka_t *rk, const char *topic, int p, int64_t *lo, int64_t *hi) {
    rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, p, lo, hi, TIMEOUT_MS);
    return e ? fail("offsets of %s [%d]: %s", topic, p, rd_kafka_err2str(e)) : 0;
}

/* One admin request's result event, waited for on a queue of its own; NULL (said why) on failure. */
static rd_kafka_event_t *admin_wait(rd_kafka_queue_t *q, const char *what) {
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, TIMEOUT_MS + 5000);
    if (!ev) return fail("%s: no answer from the broker", what), NULL;
    if (rd_kafka_event_error(ev)) {
        fail("%s: %s%s", what, rd_kafka_event_error_string(ev),
             rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR__TIMED_OUT
                 ? " (is the broker at KAFKA_BOOTSTRAP_SERVERS up and reachable?)"
                 : "");
        rd_kafka_event_destroy(ev);
        return NULL;
    }
    return ev;
}

static rd_kafka_AdminOptions_t *admin_opts(rd_kafka_t *rk, rd_kafka_admin_op_t op) {
    char err[256];
    rd_kafka_AdminOptions_t *o = rd_kafka_AdminOptions_new(rk, op);
    rd_kafka_AdminOptions_set_request_timeout(o, TIMEOUT_MS, err, sizeof(err));
    return o;
}

/* The group's coordinator is moving (a broker restarting, a new leader for its offsets partition):
 * worth asking again for a while rather than failing an operator's command. */
#define COORDINATOR_RETRIES 30 /* one a second */
static int coordinator_moving(rd_kafka_resp_err_t e) {
    return e == RD_KAFKA_RESP_ERR_NOT_COORDINATOR || e == RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE ||
           e == RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS || e == RD_KAFKA_RESP_ERR__TRANSPORT;
}

/* The number of members of group (0 for a group that is empty or unknown), or -1. */
static int group_members(rd_kafka_t *rk, const char *group) {
    int n = -1, again = 1;

    for (int attempt = 0; again; attempt++) {
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *o = admin_opts(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
        const char *groups[] = {group};
        rd_kafka_event_t *ev;

        again = 0;
        rd_kafka_DescribeConsumerGroups(rk, groups, 1, o, q);
        if ((ev = admin_wait(q, "describe group"))) {
            size_t cnt;
            const rd_kafka_DescribeConsumerGroups_result_t *res = rd_kafka_event_DescribeConsumerGroups_result(ev);
            const rd_kafka_ConsumerGroupDescription_t **d = rd_kafka_DescribeConsumerGroups_result_groups(res, &cnt);
            const rd_kafka_error_t *ge = cnt ? rd_kafka_ConsumerGroupDescription_error(d[0]) : NULL;
            rd_kafka_resp_err_t e = ge ? rd_kafka_error_code(ge) : RD_KAFKA_RESP_ERR_NO_ERROR;
            if (!cnt)
                fail("describe group %s: no answer", group);
            else if (coordinator_moving(e) && attempt < COORDINATOR_RETRIES)
                again = 1;
            else if (ge && e != RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND)
                fail("describe group %s: %s", group, rd_kafka_error_string(ge));
            else
                n = ge ? 0 : (int)rd_kafka_ConsumerGroupDescription_member_count(d[0]);
            rd_kafka_event_destroy(ev);
        }
        rd_kafka_AdminOptions_destroy(o);
        rd_kafka_queue_destroy(q);
        if (again) sleep(1);
    }
    return n;
}

/* The group's committed offsets (every partition it committed on), or NULL. Caller destroys. */
static rd_kafka_topic_partition_list_t *group_committed(rd_kafka_t *rk, const char *group) {
    rd_kafka_topic_partition_list_t *out = NULL;
    int again = 1;

    for (int attempt = 0; again; attempt++) {
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *o = admin_opts(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPOFFSETS);
        rd_kafka_ListConsumerGroupOffsets_t *req = rd_kafka_ListConsumerGroupOffsets_new(group, NULL);
        rd_kafka_event_t *ev;

        again = 0;
        rd_kafka_ListConsumerGroupOffsets(rk, &req, 1, o, q);
        if ((ev = admin_wait(q, "committed offsets"))) {
            size_t cnt;
            const rd_kafka_group_result_t **gr = rd_kafka_ListConsumerGroupOffsets_result_groups(
                rd_kafka_event_ListConsumerGroupOffsets_result(ev), &cnt);
            const rd_kafka_error_t *ge = cnt ? rd_kafka_group_result_error(gr[0]) : NULL;
            if (ge && coordinator_moving(rd_kafka_error_code(ge)) && attempt < COORDINATOR_RETRIES)
                again = 1;
            else if (ge)
                fail("committed offsets of %s: %s", group, rd_kafka_error_string(ge));
            else if (cnt)
                out = rd_kafka_topic_partition_list_copy(rd_kafka_group_result_partitions(gr[0]));
            else
                fail("committed offsets of %s: no answer", group);
            rd_kafka_event_destroy(ev);
        }
        rd_kafka_ListConsumerGroupOffsets_destroy(req);
        rd_kafka_AdminOptions_destroy(o);
        rd_kafka_queue_destroy(q);
        if (again) sleep(1);
    }
    if (out) { /* drop the entries without an offset, and sort */
        rd_kafka_topic_partition_list_t *kept = rd_kafka_topic_partition_list_new(out->cnt);
        for (int i = 0; i < out->cnt; i++)
            if (out->elems[i].offset >= 0)
                rd_kafka_topic_partition_list_add(kept, out->elems[i].topic, out->elems[i].partition)->offset =
                    out->elems[i].offset;
        rd_kafka_topic_partition_list_destroy(out);
        rd_kafka_topic_partition_list_sort(kept, NULL, NULL);
        out = kept;
    }
    return out;
}

static int64_t committed_of(const rd_kafka_topic_partition_list_t *c, const char *topic, int p) {
    const rd_kafka_topic_partition_t *e = rd_kafka_topic_partition_list_find(c, topic, p);
    return e ? e->offset : -1;
}

/* The distinct topics of a partition list (sorted), written into names[0..max-1]. */
static int topics_of(const rd_kafka_topic_partition_list_t *c, const char **names, int max) {
    int n = 0;
    for (int i = 0; i < c->cnt; i++)
        if (n < max && (n == 0 || strcmp(names[n - 1], c->elems[i].topic) != 0)) names[n++] = c->elems[i].topic;
    return n;
}

/* ---- topics ------------------------------------------------------------------------------------------ */

static int cmd_topics(int argc, char **argv) {
    static const char help[] = "usage: vxadmin topics\n"
                               "Creates each topic of the system that does not exist yet, with VX_TOPIC_PARTITIONS\n"
                               "partitions (default 2), VX_TOPIC_REPLICATION replicas (default -1: the broker's\n"
                               "default.replication.factor) and VX_TOPIC_RETENTION_MS retention (default 7 days).\n";
    const char *names[VX_TOPIC_COUNT];
    char err[512];
    long long partitions, replication, retention;
    rd_kafka_t *rk;
    int rc;

    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    if (argc) return usage(help, "topics takes no arguments");
    for (int t = 0; t < VX_TOPIC_COUNT; t++) names[t] = vx_topic((vx_topic_t)t);
    if (vx_cfg_int("VX_TOPIC_PARTITIONS", VX_TOPIC_PARTITIONS_DEFAULT, 1, 1000, &partitions, err, sizeof(err)) ||
        vx_cfg_int("VX_TOPIC_REPLICATION", VX_TOPIC_REPLICATION_DEFAULT, -1, 32, &replication, err, sizeof(err)) ||
        vx_cfg_int("VX_TOPIC_RETENTION_MS", 7LL * 24 * 3600 * 1000, 60000, 1LL << 50, &retention, err, sizeof(err)))
        return fail("%s", err) + 1;
    if (!(rk = kafka_client(NULL))) return 1;
    rc = vx_kafka_ensure_topics(rk, names, VX_TOPIC_COUNT, (int)partitions, (int)replication, retention, 30000, err,
                                sizeof(err));
    if (rc)
        fail("%s", err);
    else
        for (int t = 0; t < VX_TOPIC_COUNT; t++) printf("topic %s ready\n", names[t]);
    rd_kafka_destroy(rk);
    return rc ? 1 : 0;
}

/* ---- lag, offsets ---------------------------------------------------------------------------------- */

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Every consumer group of the cluster, sorted; NULL-terminated, caller frees each and the array. */
static char **list_groups(rd_kafka_t *rk) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *o = admin_opts(rk, RD_KAFKA_ADMIN_OP_LISTCONSUMERGROUPS);
    rd_kafka_event_t *ev;
    char **names = NULL;

    rd_kafka_ListConsumerGroups(rk, o, q);
    if ((ev = admin_wait(q, "list groups"))) {
        size_t cnt;
        const rd_kafka_ConsumerGroupListing_t **g =
            rd_kafka_ListConsumerGroups_result_valid(rd_kafka_event_ListConsumerGroups_result(ev), &cnt);
        names = calloc(cnt + 1, sizeof(*names));
        for (size_t i = 0; names && i < cnt; i++) names[i] = strdup(rd_kafka_ConsumerGroupListing_group_id(g[i]));
        if (names) qsort(names, cnt, sizeof(*names), by_name);
        rd_kafka_event_destroy(ev);
    }
    rd_kafka_AdminOptions_destroy(o);
    rd_kafka_queue_destroy(q);
    return names;
}

/* Prints one group's rows, as lag (table) or offsets (TSV) wants them. */
static int show_group(rd_kafka_t *rk, const char *group, int as_lag) {
    rd_kafka_topic_partition_list_t *c = group_committed(rk, group);
    const char *topics[64];
    int ntopics, members = as_lag ? group_members(rk, group) : 0, rc = 0;

    if (!c || members < 0) {
        if (c) rd_kafka_topic_partition_list_destroy(c);
        return 1;
    }
    ntopics = topics_of(c, topics, 64);
    for (int t = 0; t < ntopics && !rc; t++) {
        int np = partitions_of(rk, topics[t]);
        if (np < 0) rc = 1;
        for (int p = 0; p < np; p++) {
            int64_t lo, hi, off = committed_of(c, topics[t], p);
            if (!as_lag) {
                if (off >= 0)
                    printf("%s\t%d\t%lld\n", topics[t], p, (long long)off);
                else
                    printf("%s\t%d\t-\n", topics[t], p);
                continue;
            }
            if (watermarks(rk, topics[t], p, &lo, &hi)) {
                rc = 1;
                break;
            }
            if (off >= 0)
                printf("%s %s %d %lld %lld %lld\n", group, topics[t], p, (long long)off, (long long)hi,
                       (long long)(hi > off ? hi - off : 0));
            else
                printf("%s %s %d - %lld %lld\n", group, topics[t], p, (long long)hi, (long long)(hi - lo));
        }
    }
    if (as_lag && !rc) printf("%s members %d\n", group, members);
    rd_kafka_topic_partition_list_destroy(c);
    return rc;
}

static int cmd_lag(int argc, char **argv) {
    static const char help[] =
        "usage: vxadmin lag [GROUP...]\n"
        "For each consumer group (every group of the cluster when none is named) and each partition of\n"
        "the topics it has committed on: the committed offset (- when none), the end offset and the lag,\n"
        "then a line \"GROUP members N\" (N = 0: no consumer is running in it).\n"
        "Example: vxadmin lag inventory-svc order-svc\n";
    rd_kafka_t *rk;
    char **all = NULL;
    int rc = 0;

    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    for (int i = 0; i < argc; i++)
        if (argv[i][0] == '-') return usage(help, "unknown option %s", argv[i]);
    if (!(rk = kafka_client(NULL))) return 1;
    if (!argc && !(all = list_groups(rk))) {
        rd_kafka_destroy(rk);
        return 1;
    }
    printf("GROUP TOPIC PARTITION COMMITTED END LAG\n");
    if (all) {
        for (int i = 0; all[i]; i++) rc |= show_group(rk, all[i], 1), free(all[i]);
        free(all);
    } else {
        for (int i = 0; i < argc; i++) rc |= show_group(rk, argv[i], 1);
    }
    rd_kafka_destroy(rk);
    return rc;
}

/* The offset pos stands for on one partition (POS_TIME: the first message at or after it, else the
 * end), or -1 (said why). */
static int64_t resolve(rd_kafka_t *rk, const char *topic, int p, const pos_t *pos) {
    int64_t lo, hi;
    if (watermarks(rk, topic, p, &lo, &hi)) return -1;
    switch (pos->kind) {
    case POS_EARLIEST: return lo;
    case POS_LATEST: return hi;
    case POS_OFFSET:
        if (pos->v < lo || pos->v > hi)
            return fail("offset %lld is outside %s [%d]'s %lld..%lld", pos->v, topic, p, (long long)lo, (long long)hi),
                   -1;
        return pos->v;
    case POS_TIME: {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_resp_err_t e;
        int64_t off;
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = pos->v;
        e = rd_kafka_offsets_for_times(rk, l, TIMEOUT_MS);
        off = e ? -1 : l->elems[0].err ? -1 : l->elems[0].offset < 0 ? hi : l->elems[0].offset;
        if (off < 0) fail("offset of a time on %s [%d]: %s", topic, p, rd_kafka_err2str(e ? e : l->elems[0].err));
        rd_kafka_topic_partition_list_destroy(l);
        return off;
    }
    }
    return -1;
}

/* Reads TOPIC<TAB>PARTITION<TAB>OFFSET lines (offsets GROUP's output) into list; "-" lines skipped. */
static int read_offsets_file(const char *path, rd_kafka_topic_partition_list_t *list) {
    FILE *f = fopen(path, "r");
    char line[1024];
    int n = 0;

    if (!f) return fail("%s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        char *topic = strtok(line, "\t\n"), *part = strtok(NULL, "\t\n"), *off = strtok(NULL, "\t\n");
        long long p, o;
        n++;
        if (!topic) continue;
        if (!part || !off || strtok(NULL, "\t\n") || parse_ll(part, 0, &p) ||
            (strcmp(off, "-") != 0 && parse_ll(off, 0, &o))) {
            fclose(f);
            return fail("%s line %d: not TOPIC<TAB>PARTITION<TAB>OFFSET", path, n);
        }
        if (strcmp(off, "-") != 0) rd_kafka_topic_partition_list_add(list, topic, (int32_t)p)->offset = o;
    }
    fclose(f);
    return 0;
}

static int alter_offsets(rd_kafka_t *rk, const char *group, const rd_kafka_topic_partition_list_t *list) {
    int rc = 1, again = 1;

    for (int attempt = 0; again; attempt++) {
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *o = admin_opts(rk, RD_KAFKA_ADMIN_OP_ALTERCONSUMERGROUPOFFSETS);
        rd_kafka_AlterConsumerGroupOffsets_t *req = rd_kafka_AlterConsumerGroupOffsets_new(group, list);
        rd_kafka_event_t *ev;

        again = 0;
        rd_kafka_AlterConsumerGroupOffsets(rk, &req, 1, o, q);
        if ((ev = admin_wait(q, "reset offsets"))) {
            size_t cnt;
            const rd_kafka_group_result_t **gr = rd_kafka_AlterConsumerGroupOffsets_result_groups(
                rd_kafka_event_AlterConsumerGroupOffsets_result(ev), &cnt);
            const rd_kafka_error_t *ge = cnt ? rd_kafka_group_result_error(gr[0]) : NULL;
            const rd_kafka_topic_partition_list_t *r = cnt && !ge ? rd_kafka_group_result_partitions(gr[0]) : NULL;
            rd_kafka_resp_err_t first = ge ? rd_kafka_error_code(ge) : RD_KAFKA_RESP_ERR_NO_ERROR;
            for (int i = 0; r && i < r->cnt && !first; i++) first = r->elems[i].err;
            if (!cnt) {
                fail("reset offsets of %s: no answer", group);
            } else if (coordinator_moving(first) && attempt < COORDINATOR_RETRIES) {
                again = 1; /* the whole request again: setting an offset twice sets it once */
            } else if (ge) {
                fail("reset offsets of %s: %s", group, rd_kafka_error_string(ge));
            } else {
                rc = 0;
                for (int i = 0; r && i < r->cnt; i++)
                    if (r->elems[i].err)
                        rc = fail("reset %s [%d]: %s", r->elems[i].topic, r->elems[i].partition,
                                  rd_kafka_err2str(r->elems[i].err));
            }
            rd_kafka_event_destroy(ev);
        }
        rd_kafka_AlterConsumerGroupOffsets_destroy(req);
        rd_kafka_AdminOptions_destroy(o);
        rd_kafka_queue_destroy(q);
        if (again) sleep(1);
    }
    return rc;
}

static int cmd_offsets_reset(int argc, char **argv) {
    static const char help[] =
        "usage: vxadmin offsets reset GROUP --to earliest|latest|OFFSET|TIME [--topic T [--partition N]] [--dry-run]\n"
        "       vxadmin offsets reset GROUP --from-file FILE [--dry-run]\n"
        "Moves the committed offsets of a group whose consumers are all stopped (refused while it has\n"
        "members). Without --topic: every topic the group has committed on. FILE: the lines\n"
        "`vxadmin offsets GROUP` prints. Prints each partition's old and new offset.\n"
        "Example: vxadmin offsets reset inventory-svc --to 2026-12-06T09:00:00Z --dry-run\n";
    opt_t o[] = {{"--to", 0, NULL}, {"--topic", 0, NULL}, {"--partition", 0, NULL},
                 {"--from-file", 0, NULL}, {"--dry-run", 1, NULL}};
    const char *group;
    rd_kafka_topic_partition_list_t *now = NULL, *want = NULL;
    rd_kafka_t *rk = NULL;
    long long part = -1;
    pos_t to;
    int rc = 1, members;

    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    if (argc < 1 || argv[0][0] == '-') return usage(help, "offsets reset needs a GROUP");
    group = argv[0];
    if ((rc = parse_opts(argc - 1, argv + 1, o, 5, help))) return rc;
    if (!o[0].value == !o[3].value) return usage(help, "give one of --to and --from-file");
    if (o[0].value && parse_pos(o[0].value, &to)) return usage(help, "--to %s: not earliest, latest, an offset or a time", o[0].value);
    if (o[2].value && (!o[1].value || parse_ll(o[2].value, 0, &part)))
        return usage(help, "--partition needs --topic and a partition number");
    if (o[3].value && (o[1].value || o[2].value)) return usage(help, "--from-file takes no --topic or --partition");

    rc = 1;
    if (!(rk = kafka_client(NULL)) || (members = group_members(rk, group)) < 0) goto out;
    if (members > 0) {
        fail("group %s has %d member%s: stop its consumers first (vxadmin lag %s shows them)", group, members,
             members == 1 ? "" : "s", group);
        goto out;
    }
    if (!(now = group_committed(rk, group))) goto out;
    want = rd_kafka_topic_partition_list_new(8);
    if (o[3].value) {
        if (read_offsets_file(o[3].value, want)) goto out;
    } else {
        const char *topics[64];
        int nt = o[1].value ? (topics[0] = o[1].value, 1) : topics_of(now, topics, 64);
        if (!nt) {
            fail("group %s has no committed offsets: name the topic (--topic)", group);
            goto out;
        }
        for (int t = 0; t < nt; t++) {
            int np = partitions_of(rk, topics[t]);
            if (np < 0) goto out;
            if (part >= np) {
                fail("%s has no partition %lld", topics[t], part);
                goto out;
            }
            for (int p = 0; p < np; p++) {
                int64_t off;
                if (part >= 0 && p != part) continue;
                if ((off = resolve(rk, topics[t], p, &to)) < 0) goto out;
                rd_kafka_topic_partition_list_add(want, topics[t], p)->offset = off;
            }
        }
    }
    for (int i = 0; i < want->cnt; i++) {
        int64_t old = committed_of(now, want->elems[i].topic, want->elems[i].partition);
        if (old >= 0)
            printf("%s %d %lld -> %lld\n", want->elems[i].topic, want->elems[i].partition, (long long)old,
                   (long long)want->elems[i].offset);
        else
            printf("%s %d - -> %lld\n", want->elems[i].topic, want->elems[i].partition,
                   (long long)want->elems[i].offset);
    }
    if (o[4].value) {
        printf("dry run: would reset %d partitions of %s\n", want->cnt, group);
        rc = 0;
    } else if (want->cnt == 0) {
        printf("nothing to reset\n");
        rc = 0;
    } else if (alter_offsets(rk, group, want) == 0) {
        printf("reset %d partitions of %s\n", want->cnt, group);
        rc = 0;
    }
out:
    if (want) rd_kafka_topic_partition_list_destroy(want);
    if (now) rd_kafka_topic_partition_list_destroy(now);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}

static int cmd_offsets(int argc, char **argv) {
    static const char help[] =
        "usage: vxadmin offsets GROUP\n"
        "       vxadmin offsets reset GROUP ... (vxadmin offsets reset --help)\n"
        "Prints the group's committed offsets, TOPIC<TAB>PARTITION<TAB>OFFSET, one line per partition of\n"
        "each topic it has committed on (- for a partition without one). make backup records this.\n";
    rd_kafka_t *rk;
    int rc;

    if (argc >= 1 && strcmp(argv[0], "reset") == 0) return cmd_offsets_reset(argc - 1, argv + 1);
    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    if (argc != 1 || argv[0][0] == '-') return usage(help, "offsets needs exactly one GROUP");
    if (!(rk = kafka_client(NULL))) return 1;
    rc = show_group(rk, argv[0], 0);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- reading a range, producing copies ------------------------------------------------------------ */

/* Reads [from[p], to[p]) of every partition p of topic with from[p] < to[p], calling fn for each
 * message in offset order per partition; stops early when fn returns non-zero or on a signal.
 * Returns 0, fn's value, or 1 (said why). */
typedef int (*read_fn)(const rd_kafka_message_t *m, void *opaque);

static int read_range(rd_kafka_t *rk, const char *topic, int np, const int64_t *from, const int64_t *to, read_fn fn,
                      void *opaque) {
    rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(np);
    int left = 0, rc = 0;
    int64_t *next = calloc((size_t)np, sizeof(*next));

    for (int p = 0; p < np; p++) {
        next[p] = from[p];
        if (from[p] < to[p]) rd_kafka_topic_partition_list_add(a, topic, p)->offset = from[p], left++;
    }
    if (left && rd_kafka_assign(rk, a)) rc = fail("cannot read %s", topic);
    while (left && !rc && !interrupted) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (!m) { /* the range may end in offsets that hold no message (control records) */
            rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_copy(a);
            if (!rd_kafka_position(rk, pos))
                for (int i = 0; i < pos->cnt; i++) {
                    int p = pos->elems[i].partition;
                    if (next[p] < to[p] && pos->elems[i].offset >= to[p]) next[p] = to[p], left--;
                }
            rd_kafka_topic_partition_list_destroy(pos);
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                rc = fail("reading %s: %s", topic, rd_kafka_message_errstr(m));
        } else if (m->partition >= 0 && m->partition < np && m->offset >= next[m->partition] &&
                   m->offset < to[m->partition]) {
            next[m->partition] = m->offset + 1;
            rc = fn(m, opaque);
            if (next[m->partition] >= to[m->partition]) left--;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(rk, NULL);
    rd_kafka_topic_partition_list_destroy(a);
    free(next);
    return rc;
}

typedef struct {
    int failed;        /* deliveries that failed */
    long long done;    /* deliveries that succeeded */
    int64_t *last;     /* per partition of the target topic: the highest offset delivered */
    int nlast;
    char err[256];
} delivery_t;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    delivery_t *d = opaque;
    (void)rk;
    if (m->err) {
        if (!d->failed++) snprintf(d->err, sizeof(d->err), "%s", rd_kafka_err2str(m->err));
        return;
    }
    d->done++;
    if (d->last && m->partition >= 0 && m->partition < d->nlast && m->offset > d->last[m->partition])
        d->last[m->partition] = m->offset;
}

static rd_kafka_t *producer(delivery_t *d) {
    const char *defaults[] = {"message.timeout.ms", "30000", "log_level", "2", NULL};
    char err[512];
    rd_kafka_t *rk = vx_kafka_producer_new(on_delivery, d, defaults, err, sizeof(err));
    if (!rk) fail("%s", err);
    return rk;
}

/* A copy of m's headers without those for which drop(name) is true (NULL: keep all). */
static rd_kafka_headers_t *headers_copy(const rd_kafka_message_t *m, int (*drop)(const char *)) {
    rd_kafka_headers_t *src = NULL, *h;
    const char *name;
    const void *val;
    size_t size;

    if (rd_kafka_message_headers(m, &src) || !src) return rd_kafka_headers_new(2);
    h = rd_kafka_headers_new(rd_kafka_header_cnt(src) + 2);
    for (size_t i = 0; !rd_kafka_header_get_all(src, i, &name, &val, &size); i++)
        if (!drop || !drop(name)) rd_kafka_header_add(h, name, -1, val, (ssize_t)size);
    return h;
}

/* ---- the services' records of commands (replay's report) ----------------------------------------------- */

/* Which service owns a command topic, with its database and the SQL that counts how many of the
 * keys ($1, a text[]) it has recorded: inventory-svc answers every command through an outbox row
 * keyed by its idempotency key; order-svc records a PlaceOrder in orders.idempotency_key and
 * answers a CancelOrder through an outbox row keyed "cancel:" and its key. */
typedef struct {
    const char *service, *db, *group, *sql;
} owner_t;

static int owner_of(const char *topic, owner_t *o) {
    if (strcmp(topic, vx_topic(VX_TOPIC_INVENTORY_COMMANDS)) == 0) {
        *o = (owner_t){"inventory-svc", vx_cfg_str("INVENTORY_DB", "postgresql://valerix@127.0.0.1:55432/inventory"),
                       vx_cfg_str("INVENTORY_GROUP_ID", "inventory-svc"),
                       "SELECT count(*) FROM outbox WHERE dedup_key = ANY ($1::text[])"};
        return 1;
    }
    if (strcmp(topic, vx_topic(VX_TOPIC_ORDERS_COMMANDS)) == 0) {
        *o = (owner_t){"order-svc", vx_cfg_str("ORDERS_DB", "postgresql://valerix@127.0.0.1:55432/orders"),
                       vx_cfg_str("ORDERS_GROUP_ID", "order-svc"),
                       "SELECT (SELECT count(*) FROM orders WHERE idempotency_key = ANY ($1::text[]))"
                       " + (SELECT count(*) FROM outbox WHERE dedup_key = ANY (ARRAY("
                       "    SELECT 'cancel:' || k FROM unnest($1::text[]) AS k)))"};
        return 1;
    }
    return 0;
}

typedef struct {
    char **keys;
    size_t n, cap;
} keys_t;

/* The idempotency key of a command (its JSON's "idempotency_key"), kept in k; messages without one
 * (not JSON, or not a command) are not counted. */
static void keys_add(keys_t *k, const rd_kafka_message_t *m) {
    json_tokener *tok = json_tokener_new();
    json_object *j = m->payload ? json_tokener_parse_ex(tok, m->payload, (int)m->len) : NULL, *v;

    if (j && json_object_object_get_ex(j, "idempotency_key", &v) && json_object_is_type(v, json_type_string)) {
        if (k->n == k->cap) {
            size_t cap = k->cap ? k->cap * 2 : 256;
            char **nk = realloc(k->keys, cap * sizeof(*nk));
            if (nk) k->keys = nk, k->cap = cap;
        }
        if (k->n < k->cap) k->keys[k->n++] = strdup(json_object_get_string(v));
    }
    json_object_put(j);
    json_tokener_free(tok);
}

/* Sorts k and drops repeated keys (a range may hold a command and its redelivered copies). */
static void keys_unique(keys_t *k) {
    size_t n = 0;
    qsort(k->keys, k->n, sizeof(*k->keys), by_name);
    for (size_t i = 0; i < k->n; i++)
        if (n && strcmp(k->keys[n - 1], k->keys[i]) == 0)
            free(k->keys[i]);
        else
            k->keys[n++] = k->keys[i];
    k->n = n;
}

/* keys as a PostgreSQL array literal; caller frees. */
static char *pg_array(const keys_t *k) {
    size_t cap = 3;
    char *s, *p;
    for (size_t i = 0; i < k->n; i++) cap += 2 * strlen(k->keys[i]) + 3;
    if (!(s = malloc(cap))) return NULL;
    p = s;
    *p++ = '{';
    for (size_t i = 0; i < k->n; i++) {
        if (i) *p++ = ',';
        *p++ = '"';
        for (const char *c = k->keys[i]; *c; c++) {
            if (*c == '"' || *c == '\\') *p++ = '\\';
            *p++ = *c;
        }
        *p++ = '"';
    }
    *p++ = '}';
    *p = '\0';
    return s;
}

/* How many of keys the owner has recorded, or -1 (said why). */
static long long recorded(const owner_t *o, const keys_t *k) {
    char msg[512];
    PGconn *db = vx_pg_connect(o->db, NULL, 0, msg, sizeof(msg)); /* its errors never show the password */
    char *arr = pg_array(k);
    const char *params[1] = {arr};
    long long n = -1;

    if (!db) {
        fail("%s's database: %s", o->service, msg);
    } else if (arr) {
        PGresult *r = PQexecParams(db, o->sql, 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            n = atoll(PQgetvalue(r, 0, 0));
        else
            fail("%s's database: %s", o->service, PQerrorMessage(db));
        PQclear(r);
    }
    free(arr);
    PQfinish(db);
    return n;
}

/* ---- replay -------------------------------------------------------------------------------------------- */

typedef struct {
    rd_kafka_t *prod;
    const char *topic;
    int dry;
    int keys_only; /* the first pass: collect the commands' keys, produce nothing */
    long long seen, total;
    long long last_progress;
    keys_t keys;
} replay_t;

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int replay_one(const rd_kafka_message_t *m, void *opaque) {
    replay_t *r = opaque;
    char from[512];

    if (r->keys_only) {
        keys_add(&r->keys, m);
        return 0;
    }
    r->seen++;
    {
        rd_kafka_headers_t *h = headers_copy(m, NULL);
        rd_kafka_resp_err_t e;
        snprintf(from, sizeof(from), "%s/%d/%lld", r->topic, m->partition, (long long)m->offset);
        rd_kafka_header_add(h, "replayed-from", -1, from, -1);
        while ((e = rd_kafka_producev(r->prod, RD_KAFKA_V_TOPIC(r->topic), RD_KAFKA_V_PARTITION(m->partition),
                                      RD_KAFKA_V_KEY(m->key, m->key_len), RD_KAFKA_V_VALUE(m->payload, m->len),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                                      RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(r->prod, 100);
        if (e) {
            rd_kafka_headers_destroy(h);
            return fail("produce to %s: %s", r->topic, rd_kafka_err2str(e));
        }
        rd_kafka_poll(r->prod, 0);
    }
    if (mono_ms() - r->last_progress >= 1000 || r->seen == r->total) {
        fprintf(stderr, "replay: %lld/%lld\n", r->seen, r->total);
        r->last_progress = mono_ms();
    }
    return 0;
}

/* Waits until group has committed past last[p] on every partition of topic (-1: nothing there). */
static int wait_consumed(rd_kafka_t *rk, const char *group, const char *topic, const int64_t *last, int np,
                         int wait_s) {
    long long deadline = mono_ms() + wait_s * 1000LL;
    do {
        rd_kafka_topic_partition_list_t *c = group_committed(rk, group);
        int done = c != NULL;
        for (int p = 0; c && p < np; p++)
            if (last[p] >= 0 && committed_of(c, topic, p) <= last[p]) done = 0;
        if (c) rd_kafka_topic_partition_list_destroy(c);
        if (done) return 0;
        usleep(500 * 1000);
    } while (mono_ms() < deadline && !interrupted);
    return -1;
}

static int cmd_replay(int argc, char **argv) {
    static const char help[] =
        "usage: vxadmin replay TOPIC --from OFFSET|TIME|earliest [--to OFFSET|TIME|latest] [--partition N]\n"
        "                      [--dry-run] [--wait SECS]\n"
        "Produces the messages [from, to) of TOPIC again, each to its partition with its key, value and\n"
        "headers and a header replayed-from: TOPIC/PARTITION/OFFSET (to: the end as of now). Progress on\n"
        "stderr. For inventory.commands and orders.commands it then says what the replay changed: how\n"
        "many of the commands the owning service had recorded before, and how many it recorded after\n"
        "its group consumed them (waiting up to --wait SECS, default 60). Commands are idempotent: a\n"
        "range already applied changes nothing.\n"
        "Example: vxadmin replay inventory.commands --from 2026-12-06T09:00:00Z --dry-run\n";
    opt_t o[] = {{"--from", 0, NULL}, {"--to", 0, NULL}, {"--partition", 0, NULL}, {"--dry-run", 1, NULL},
                 {"--wait", 0, NULL}};
    replay_t r = {0};
    delivery_t d = {0};
    owner_t own;
    pos_t from, to = {.kind = POS_LATEST};
    rd_kafka_t *rk = NULL;
    int64_t *f = NULL, *t = NULL;
    long long part = -1, wait_s = 60, before = -1, after;
    int np, rc, owned;

    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    if (argc < 1 || argv[0][0] == '-') return usage(help, "replay needs a TOPIC");
    r.topic = argv[0];
    if ((rc = parse_opts(argc - 1, argv + 1, o, 5, help))) return rc;
    if (!o[0].value || parse_pos(o[0].value, &from) || from.kind == POS_LATEST)
        return usage(help, "--from: an offset, a time or earliest");
    if (o[1].value && (parse_pos(o[1].value, &to) || to.kind == POS_EARLIEST))
        return usage(help, "--to: an offset, a time or latest");
    if (o[2].value && parse_ll(o[2].value, 0, &part)) return usage(help, "--partition: a partition number");
    if (o[4].value && parse_ll(o[4].value, 0, &wait_s)) return usage(help, "--wait: seconds");
    r.dry = o[3].value != NULL;
    owned = owner_of(r.topic, &own);

    rc = 1;
    if (!(rk = kafka_client(NULL)) || (np = partitions_of(rk, r.topic)) < 0) goto out;
    if (part >= np) {
        fail("%s has no partition %lld", r.topic, part);
        goto out;
    }
    f = calloc((size_t)np, sizeof(*f));
    t = calloc((size_t)np, sizeof(*t));
    d.last = calloc((size_t)np, sizeof(*d.last));
    d.nlast = np;
    for (int p = 0; p < np; p++) {
        d.last[p] = -1;
        if (part >= 0 && p != part) continue;
        if ((f[p] = resolve(rk, r.topic, p, &from)) < 0 || (t[p] = resolve(rk, r.topic, p, &to)) < 0) goto out;
        if (t[p] > f[p]) r.total += t[p] - f[p];
    }
    fprintf(stderr, "replay: %lld messages of %s%s\n", r.total, r.topic, r.dry ? " (dry run: nothing is produced)" : "");
    /* First what the owner has recorded of these commands, read before anything is produced. */
    if (owned) {
        r.keys_only = 1;
        if (read_range(rk, r.topic, np, f, t, replay_one, &r)) goto out;
        keys_unique(&r.keys);
        if (r.keys.n && (before = recorded(&own, &r.keys)) < 0) goto out;
        r.keys_only = 0;
        r.seen = 0;
    }
    if (!r.dry) {
        if (!(r.prod = producer(&d))) goto out;
        r.last_progress = mono_ms();
        if (read_range(rk, r.topic, np, f, t, replay_one, &r)) goto out;
        if (interrupted) {
            fail("interrupted after %lld of %lld messages", r.seen, r.total);
            goto out;
        }
        rd_kafka_flush(r.prod, 60000);
        if (d.failed || d.done != r.seen) {
            fail("%lld of %lld copies were not delivered%s%s", r.seen - d.done, r.seen, d.failed ? ": " : "", d.err);
            goto out;
        }
    }
    printf("replay: %lld messages of %s %s\n", r.total, r.topic, r.dry ? "would be re-produced" : "re-produced");
    if (!owned || r.keys.n == 0) {
        printf("replay: %s holds no commands of the system: no report of what the replay changed\n", r.topic);
        rc = 0;
        goto out;
    }
    printf("replay: %lld of the %zu distinct commands had been applied by %s before the replay, %lld had not\n", before,
           r.keys.n, own.service, (long long)r.keys.n - before);
    if (r.dry || wait_s == 0) {
        rc = 0;
        goto out;
    }
    if (wait_consumed(rk, own.group, r.topic, d.last, np, (int)wait_s)) {
        fail("group %s has not consumed the replayed messages within %llds (vxadmin lag %s)", own.group, wait_s,
             own.group);
        goto out;
    }
    if ((after = recorded(&own, &r.keys)) < 0) goto out;
    if (after == before)
        printf("replay: applied by the replay: 0; the replay changed nothing\n");
    else
        printf("replay: applied by the replay: %lld (commands %s had not applied before)\n", after - before,
               own.service);
    rc = 0;
out:
    if (r.prod) rd_kafka_destroy(r.prod);
    if (rk) rd_kafka_destroy(rk);
    for (size_t i = 0; i < r.keys.n; i++) free(r.keys.keys[i]);
    free(r.keys.keys);
    free(f);
    free(t);
    free(d.last);
    return rc;
}

/* ---- dead letters --------------------------------------------------------------------------------- */

typedef struct {
    const char *reason;     /* --reason, or NULL */
    long long since;        /* --since in ms, or -1 */
    long long samples;      /* dlq list: how many to show */
    char reasons[32][64];   /* dlq list: counts per reason */
    long long counts[32];
    int nreasons;
    long long matched, shown;
    FILE *out;              /* dlq list: the samples, printed after the counts */
} dlq_filter_t;

static int dlq_matches(const dlq_filter_t *f, const rd_kafka_message_t *m, char *reason, size_t size) {
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    if (!vx_kafka_header(m, "dlq-reason", reason, size)) snprintf(reason, size, "(none)");
    if (f->reason && strcmp(f->reason, reason) != 0) return 0;
    if (f->since >= 0 && ts < f->since) return 0;
    return 1;
}

static void print_escaped(FILE *out, const void *data, size_t len, size_t max) {
    const unsigned char *p = data;
    for (size_t i = 0; i < len && i < max; i++)
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            fputc(p[i], out);
        else
            fprintf(out, "\\x%02x", p[i]);
    if (len > max) fprintf(out, "... (%zu bytes)", len);
}

static int dlq_list_one(const rd_kafka_message_t *m, void *opaque) {
    dlq_filter_t *f = opaque;
    char reason[64];
    int i;

    if (!dlq_matches(f, m, reason, sizeof(reason))) return 0;
    f->matched++;
    for (i = 0; i < f->nreasons && strcmp(f->reasons[i], reason) != 0; i++) {}
    if (i == f->nreasons && i < 32) snprintf(f->reasons[f->nreasons++], sizeof(f->reasons[0]), "%s", reason);
    if (i < 32) f->counts[i]++;
    if (f->shown < f->samples) {
        rd_kafka_headers_t *h = NULL;
        const char *name;
        const void *val;
        size_t size;
        f->shown++;
        fprintf(f->out, "--- sample: partition %d offset %lld key ", m->partition, (long long)m->offset);
        print_escaped(f->out, m->key ? m->key : "", m->key_len, 120);
        fputc('\n', f->out);
        if (!rd_kafka_message_headers(m, &h) && h)
            for (size_t j = 0; !rd_kafka_header_get_all(h, j, &name, &val, &size); j++) {
                fprintf(f->out, "  %s: ", name);
                print_escaped(f->out, val ? val : "", size, 300);
                fputc('\n', f->out);
            }
        fprintf(f->out, "  value: ");
        print_escaped(f->out, m->payload ? m->payload : "", m->len, SAMPLE_BYTES);
        fputc('\n', f->out);
    }
    return 0;
}

/* The whole of topic as of now: from[p] = start, to[p] = end. Returns the partition count or -1. */
static int whole_topic(rd_kafka_t *rk, const char *topic, int64_t **from, int64_t **to) {
    int np = partitions_of(rk, topic);
    if (np < 0) return -1;
    *from = calloc((size_t)np, sizeof(**from));
    *to = calloc((size_t)np, sizeof(**to));
    for (int p = 0; p < np; p++)
        if (watermarks(rk, topic, p, &(*from)[p], &(*to)[p])) return -1;
    return np;
}

static int dlq_opts(int argc, char **argv, opt_t *o, int n, const char *help, dlq_filter_t *f) {
    int rc = parse_opts(argc, argv, o, n, help);
    if (rc) return rc;
    f->reason = o[0].value;
    f->since = -1;
    if (o[1].value && parse_time_ms(o[1].value, &f->since)) return usage(help, "--since: a TIME");
    return 0;
}

static int cmd_dlq_list(int argc, char **argv) {
    static const char help[] =
        "usage: vxadmin dlq list DLQ_TOPIC [--reason R] [--since TIME] [--samples N]\n"
        "Counts the dead letters of DLQ_TOPIC (inventory.dlq, orders.dlq) per dlq-reason, then shows up\n"
        "to N (default 3) of them with every header (dlq-reason, dlq-error, dlq-source-topic,\n"
        "dlq-source-partition, dlq-source-offset, dlq-service ...) and the first bytes of the value.\n"
        "Example: vxadmin dlq list inventory.dlq --reason not_json --samples 1\n";
    opt_t o[] = {{"--reason", 0, NULL}, {"--since", 0, NULL}, {"--samples", 0, NULL}};
    dlq_filter_t f = {.samples = 3};
    rd_kafka_t *rk;
    int64_t *from = NULL, *to = NULL;
    char *samples = NULL;
    size_t samples_len = 0;
    int np, rc;

    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    if (argc < 1 || argv[0][0] == '-') return usage(help, "dlq list needs a DLQ_TOPIC");
    if ((rc = dlq_opts(argc - 1, argv + 1, o, 3, help, &f))) return rc;
    if (o[2].value && parse_ll(o[2].value, 0, &f.samples)) return usage(help, "--samples: a number");
    if (!(rk = kafka_client(NULL))) return 1;
    if (!(f.out = open_memstream(&samples, &samples_len))) {
        rd_kafka_destroy(rk);
        return fail("out of memory");
    }
    rc = (np = whole_topic(rk, argv[0], &from, &to)) < 0 || read_range(rk, argv[0], np, from, to, dlq_list_one, &f);
    fclose(f.out);
    if (!rc) {
        printf("REASON COUNT\n");
        for (int i = 0; i < f.nreasons; i++) printf("%s %lld\n", f.reasons[i], f.counts[i]);
        fputs(samples, stdout);
        printf("--- %lld dead letter%s%s\n", f.matched, f.matched == 1 ? "" : "s",
               f.reason || f.since >= 0 ? " matching the filter" : "");
    }
    free(samples);
    free(from);
    free(to);
    rd_kafka_destroy(rk);
    return rc ? 1 : 0;
}

static int is_dlq_header(const char *name) {
    return strncmp(name, "dlq-", 4) == 0 || strcmp(name, "redrive-count") == 0;
}

/* What an earlier redrive of the same DLQ covered: its filter and, per partition, where it stopped.
 * Its group's name says its filter: vxadmin-redrive.DLQ[.reason=R][.since=MS]. */
typedef struct {
    char reason[64]; /* "" for any */
    long long since; /* -1 for any */
    int64_t *next;   /* per partition: the letters before it were handled by that run */
} prior_t;

typedef struct {
    dlq_filter_t f;
    rd_kafka_t *prod, *rk;
    prior_t *prior;
    int nprior, np;
    long long before; /* letters an earlier run with another filter redrove */
    delivery_t *d;
    const char *dlq;
    int dry;
    long long max, redriven, filtered, at_max, pending;
    rd_kafka_topic_partition_list_t *progress; /* the next offset to read, per partition */
} redrive_t;

/* Commits the progress once every copy so far is delivered: a stop loses nothing and redrives nothing
 * twice. */
static int redrive_checkpoint(redrive_t *r) {
    rd_kafka_resp_err_t e;
    if (r->dry || !r->progress->cnt) return 0;
    if (r->prod) rd_kafka_flush(r->prod, 60000);
    if (r->d->failed || r->d->done != r->redriven)
        return fail("%lld of %lld redriven letters were not delivered: %s; progress kept at the last delivered batch",
                    r->redriven - r->d->done, r->redriven, r->d->err);
    for (int attempt = 0; coordinator_moving(e = rd_kafka_commit(r->rk, r->progress, 0)) && attempt < COORDINATOR_RETRIES;
         attempt++)
        sleep(1);
    if (e) return fail("cannot record the redrive's progress: %s", rd_kafka_err2str(e));
    r->pending = 0;
    return 0;
}

static int redriven_before(const redrive_t *r, const rd_kafka_message_t *m, const char *reason) {
    rd_kafka_timestamp_type_t tt;
    int64_t ts = rd_kafka_message_timestamp(m, &tt);
    for (int i = 0; i < r->nprior; i++) {
        const prior_t *g = &r->prior[i];
        if ((!g->reason[0] || strcmp(g->reason, reason) == 0) && (g->since < 0 || ts >= g->since) &&
            m->partition >= 0 && m->partition < r->np && m->offset < g->next[m->partition])
            return 1;
    }
    return 0;
}

/* The progress of every other redrive of dlq (other filters), so that a letter one of them sent back
 * is not sent again. Returns 0 or 1 (said why). */
static int load_prior(redrive_t *r, const char *base, const char *own) {
    char **all = list_groups(r->rk);
    size_t n = strlen(base);
    int rc = 0;

    if (!all) return 1;
    for (int i = 0; all[i]; i++) {
        const char *rest = all[i] + n, *sp;
        prior_t g = {.since = -1};
        rd_kafka_topic_partition_list_t *c;
        if (rc || strncmp(all[i], base, n) != 0 || strcmp(all[i], own) == 0 || (*rest && *rest != '.')) goto next;
        if (strncmp(rest, ".reason=", 8) == 0) {
            size_t len = (sp = strstr(rest, ".since=")) ? (size_t)(sp - rest - 8) : strlen(rest + 8);
            snprintf(g.reason, sizeof(g.reason), "%.*s", (int)len, rest + 8);
            rest += 8 + len;
        }
        if (strncmp(rest, ".since=", 7) == 0 && parse_ll(rest + 7, 0, &g.since)) goto next;
        if (*rest && strncmp(rest, ".since=", 7) != 0) goto next; /* not one of ours */
        if (!(c = group_committed(r->rk, all[i]))) {
            rc = 1;
            goto next;
        }
        g.next = calloc((size_t)r->np, sizeof(*g.next));
        for (int p = 0; p < r->np; p++) g.next[p] = committed_of(c, r->dlq, p);
        rd_kafka_topic_partition_list_destroy(c);
        {
            prior_t *np = realloc(r->prior, (size_t)(r->nprior + 1) * sizeof(*np));
            if (np) r->prior = np, r->prior[r->nprior++] = g;
            else free(g.next);
        }
    next:
        free(all[i]);
    }
    free(all);
    return rc;
}

static int redrive_one(const rd_kafka_message_t *m, void *opaque) {
    redrive_t *r = opaque;
    char reason[64], source[256], count[24], why[128];
    rd_kafka_headers_t *hdrs = NULL;
    long long n = 0;
    int bad;

    if (rd_kafka_message_headers(m, &hdrs)) hdrs = NULL;
    bad = vx_kafka_dlq_origin(hdrs, source, sizeof(source), &n, why, sizeof(why));
    rd_kafka_topic_partition_list_add(r->progress, r->dlq, m->partition)->offset = m->offset + 1;
    if (!dlq_matches(&r->f, m, reason, sizeof(reason))) {
        r->filtered++;
    } else if (redriven_before(r, m, reason)) {
        r->before++;
    } else if (!bad && n >= r->max) {
        r->at_max++;
        printf("skipped: partition %d offset %lld (%s) was redriven %lld times already (VX_REDRIVE_MAX %lld)\n",
               m->partition, (long long)m->offset, reason, n, r->max);
    } else if (bad) {
        r->filtered++;
        printf("skipped: partition %d offset %lld: %s\n", m->partition, (long long)m->offset, why);
    } else if (r->dry) {
        r->redriven++;
        printf("would redrive: partition %d offset %lld (%s) to %s\n", m->partition, (long long)m->offset, reason,
               source);
    } else {
        rd_kafka_headers_t *h = headers_copy(m, is_dlq_header);
        rd_kafka_resp_err_t e;
        snprintf(count, sizeof(count), "%lld", n + 1);
        rd_kafka_header_add(h, "redrive-count", -1, count, -1);
        while ((e = rd_kafka_producev(r->prod, RD_KAFKA_V_TOPIC(source), RD_KAFKA_V_KEY(m->key, m->key_len),
                                      RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(r->prod, 100);
        if (e) {
            rd_kafka_headers_destroy(h);
            return fail("produce to %s: %s", source, rd_kafka_err2str(e));
        }
        r->redriven++;
        r->pending++;
    }
    if (r->pending >= REDRIVE_BATCH) return redrive_checkpoint(r);
    return 0;
}

static int cmd_dlq_redrive(int argc, char **argv) {
    static const char help[] =
        "usage: vxadmin dlq redrive DLQ_TOPIC [--reason R] [--since TIME] [--dry-run]\n"
        "Sends each dead letter (matching --reason, no older than --since) back to its dlq-source-topic\n"
        "with its original key, bytes and headers, less the dlq-* ones, plus redrive-count: N+1. A\n"
        "letter already redriven VX_REDRIVE_MAX times (3) is skipped and named. Resumable: progress is\n"
        "committed after each delivered batch in the group vxadmin-redrive.DLQ_TOPIC[.reason=R][.since=MS]\n"
        "(one per filter), so a run stopped with Ctrl-C and started again goes on after the last letter\n"
        "it redrove (after a kill -9, up to one batch of 100 may go twice: commands are idempotent), and\n"
        "a letter that a run with another filter redrove is not sent again. A letter that fails again\n"
        "comes back to the DLQ with its count and is redriven by the next run.\n"
        "Example: vxadmin dlq redrive inventory.dlq --reason unknown_product --dry-run\n";
    opt_t o[] = {{"--reason", 0, NULL}, {"--since", 0, NULL}, {"--dry-run", 1, NULL}};
    redrive_t r = {0};
    delivery_t d = {0};
    char base[320], group[512], err[256];
    int64_t *from = NULL, *to = NULL;
    int np, rc;

    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    if (argc < 1 || argv[0][0] == '-') return usage(help, "dlq redrive needs a DLQ_TOPIC");
    if ((rc = dlq_opts(argc - 1, argv + 1, o, 3, help, &r.f))) return rc;
    if (vx_cfg_int("VX_REDRIVE_MAX", 3, 1, 1000, &r.max, err, sizeof(err))) return fail("%s", err) + 1;
    r.dlq = argv[0];
    r.dry = o[2].value != NULL;
    r.d = &d;
    snprintf(base, sizeof(base), "vxadmin-redrive.%s", r.dlq);
    snprintf(group, sizeof(group), "%s%s%s", base, r.f.reason ? ".reason=" : "", r.f.reason ? r.f.reason : "");
    if (r.f.since >= 0) snprintf(group + strlen(group), sizeof(group) - strlen(group), ".since=%lld", r.f.since);
    rc = 1;
    if (!(r.rk = kafka_client(group)) || (np = whole_topic(r.rk, r.dlq, &from, &to)) < 0) goto out;
    r.np = np;
    if (load_prior(&r, base, group)) goto out;
    { /* start after what an earlier run redrove */
        rd_kafka_topic_partition_list_t *c = rd_kafka_topic_partition_list_new(np);
        for (int p = 0; p < np; p++) rd_kafka_topic_partition_list_add(c, r.dlq, p);
        rd_kafka_resp_err_t e;
        for (int attempt = 0; coordinator_moving(e = rd_kafka_committed(r.rk, c, TIMEOUT_MS)) &&
                              attempt < COORDINATOR_RETRIES;
             attempt++)
            sleep(1);
        if (e) {
            rd_kafka_topic_partition_list_destroy(c);
            fail("cannot read the progress of %s: %s", group, rd_kafka_err2str(e));
            goto out;
        }
        for (int p = 0; p < np; p++)
            if (c->elems[p].offset > from[p]) from[p] = c->elems[p].offset;
        rd_kafka_topic_partition_list_destroy(c);
    }
    if (!r.dry && !(r.prod = producer(&d))) goto out;
    r.progress = rd_kafka_topic_partition_list_new(np);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (read_range(r.rk, r.dlq, np, from, to, redrive_one, &r) || redrive_checkpoint(&r)) goto out;
    printf("%s %lld, skipped %lld (filter), %lld (redrive-count at max), %lld (redriven by an earlier run)\n",
           r.dry ? "would redrive" : "redriven", r.redriven, r.filtered, r.at_max, r.before);
    if (interrupted) {
        fail("stopped: run the same command again to go on after the last letter redriven");
        goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < r.nprior; i++) free(r.prior[i].next);
    free(r.prior);
    if (r.progress) rd_kafka_topic_partition_list_destroy(r.progress);
    if (r.prod) rd_kafka_destroy(r.prod);
    if (r.rk) rd_kafka_destroy(r.rk);
    free(from);
    free(to);
    return rc;
}

static int cmd_dlq(int argc, char **argv) {
    static const char help[] = "usage: vxadmin dlq list DLQ_TOPIC ...   (vxadmin dlq list --help)\n"
                               "       vxadmin dlq redrive DLQ_TOPIC ...  (vxadmin dlq redrive --help)\n";
    if (argc >= 1 && strcmp(argv[0], "list") == 0) return cmd_dlq_list(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "redrive") == 0) return cmd_dlq_redrive(argc - 1, argv + 1);
    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    return usage(help, "dlq needs list or redrive");
}

/* ---- outbox ----------------------------------------------------------------------------------------- */

static int cmd_outbox(int argc, char **argv) {
    static const char help[] =
        "usage: vxadmin outbox inventory-svc|order-svc\n"
        "The service's outbox, read from its database (INVENTORY_DB, ORDERS_DB): rows waiting to be\n"
        "published, the oldest's age, how many of those the sweep has already sent again (a broker\n"
        "that does not confirm them), and rows kept in all (published rows are pruned after\n"
        "VX_OUTBOX_RETENTION_S). The services count every row the sweep re-sent in\n"
        "valerix_outbox_resent_total.\n";
    static const char sql[] =
        "SELECT count(*), coalesce(extract(epoch FROM now() - min(o.created_at)), 0)::numeric(12,3),"
        "       count(*) FILTER (WHERE p.claimed_at > o.created_at),"
        "       (SELECT count(*) FROM outbox)"
        "  FROM outbox_pending p JOIN outbox o ON o.id = p.id";
    const char *db;
    PGconn *c;
    PGresult *r;
    int rc = 1;

    if (wants_help(argc, argv)) return fputs(help, stdout), 0;
    if (argc != 1) return usage(help, "outbox needs a service");
    if (strcmp(argv[0], "inventory-svc") == 0)
        db = vx_cfg_str("INVENTORY_DB", "postgresql://valerix@127.0.0.1:55432/inventory");
    else if (strcmp(argv[0], "order-svc") == 0)
        db = vx_cfg_str("ORDERS_DB", "postgresql://valerix@127.0.0.1:55432/orders");
    else
        return usage(help, "unknown service \"%s\" (inventory-svc, order-svc)", argv[0]);
    {
        char msg[512];
        if (!(c = vx_pg_connect(db, NULL, 0, msg, sizeof(msg)))) /* its errors never show the password */
            return fail("%s's database: %s", argv[0], msg);
    }
    r = PQexec(c, sql);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        printf("service %s\nwaiting %s\noldest_age_seconds %s\nwaiting_resent_by_sweep %s\nrows %s\n", argv[0],
               PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1), PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3));
        rc = 0;
    } else {
        fail("%s's database: %s", argv[0], PQerrorMessage(c));
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {{"topics", cmd_topics}, {"lag", cmd_lag},   {"offsets", cmd_offsets},
                {"replay", cmd_replay}, {"dlq", cmd_dlq},   {"outbox", cmd_outbox}};

    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) return fputs(HELP, stderr), 2;
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0)
        return fputs(HELP, stdout), 0;
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(argv[1], cmds[i].name) == 0) return cmds[i].fn(argc - 2, argv + 2);
    return usage(HELP, "unknown command \"%s\"", argv[1]);
}
