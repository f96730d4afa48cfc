/* vx_apply: the batch applier. See vx_apply.h.
 *
 * Entries not done sit in one list in arrival order, and in their partition's list in offset order
 * (its head is the partition's lowest entry not done). A turn (vx_apply_run) walks the list once: an
 * entry is ready when it is due and shares no key with an earlier entry that is not ready, nor a row
 * with an entry waiting out a lock. Ready entries that met a lock before are probes, tried alone
 * first; the others go in calls. Whatever a call of this turn sets aside (a lock wait) is recorded,
 * so that later entries sharing its keys or rows stay for a later turn. */
#include "vx_apply.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vx_chaos.h"
#include "vx_fast.h"
#include "vx_kafka.h"
#include "vx_log.h"
#include "vx_metrics.h"
#include "vx_msg.h"
#include "vx_pg.h"
#include "vx_strset.h"

#define STOP_GRACE_MS 10000    /* how long a stopping service still retries a failing call */
#define LOCK_BACKOFF_MS 100    /* a lock-waiting entry is tried again after 100, 200, 400 ... ms */
#define LOCK_BACKOFF_CAP_MS 1000
#define KKEY_CAP (VX_MSG_MAX_KEY * 4) /* a longer Kafka key orders by its hash */
#define CHUNK 256                     /* entries allocated at once; never freed before the applier */
#define MAX_LOG_FIELDS 8
#define MAX_TOPICS 8 /* topics a service consumes */

typedef struct part part_t;

typedef struct entry {
    vx_entry_t e;
    rd_kafka_message_t *msg; /* owned */
    part_t *part;
    struct entry *prev, *next;   /* the pending list, arrival order (next: the free list too) */
    struct entry *pprev, *pnext; /* its partition's pending list, offset order */
    long long due;               /* held aside until then (ms, monotonic); 0: not held */
    int lock_waits;              /* times it met a lock; while > 0 its rows hold back entries touching them */
    int probe;                   /* this turn: tried alone */
    unsigned long long seq;      /* arrival order */
    char kkey[KKEY_CAP + 1];     /* the Kafka key as an ordering key, "" when none */
} entry_t;

struct part {
    char *topic;
    int topic_ix; /* which of the applier's topics: ordering keys are per topic */
    int32_t partition;
    int64_t next;   /* one past the last offset taken */
    int64_t stored; /* the offset last stored */
    long pending;   /* entries not done */
    int paused;
    entry_t *head, *tail;
};

enum { COL_ID, COL_TOPIC, COL_KEY, COL_PAYLOAD, COL_CID, COL_HEADERS, COL_NOTE, NCOLS };
static const char *const col_names[NCOLS] = {"out_id",  "out_topic",   "out_key", "out_payload",
                                             "out_cid", "out_headers", "out_note"};

typedef enum { EXEC_OK, EXEC_LOCK, EXEC_FATAL, EXEC_GAVE_UP } exec_t;

struct vx_apply_s {
    vx_apply_opts_t o;
    PGconn *db;
    rd_kafka_t *producer;
    vx_outbox_t *outbox;
    volatile sig_atomic_t *stopping;
    int col[NCOLS];
    vx_outbox_cols_t ocols;
    const char *log_name[MAX_LOG_FIELDS];
    int log_col[MAX_LOG_FIELDS], nlog;

    entry_t *head, *tail; /* the pending list */
    long held;            /* its length; read by other threads */
    long lockers;         /* pending entries that met a lock */
    entry_t *free;
    entry_t **chunks;
    size_t nchunks;
    part_t *parts;
    size_t nparts, cap_parts;
    entry_t **ready, **call;      /* this turn's ready entries; the call being built */
    size_t cap_ready, ncall;
    char *topics[MAX_TOPICS];     /* the topics seen, by index */
    int ntopics;
    vx_strset_t blocked[MAX_TOPICS]; /* the turn's walk: keys of entries not ready, per topic */
    vx_strset_t hot;              /* and rows of lock waiters (of any topic: rows are the database's) */
    vx_strset_t set_keys, set_rows; /* keys and rows of what this turn set aside */
    vx_strset_t call_keys;        /* the service keys of the call being built */
    long long dlq_pending, dlq_failed;
    unsigned long long seq;
    int prepared_pid; /* the backend on which the call statement is prepared (STMT); 0: none */
    vx_fast_t *fast;  /* the fast paths the database lists (vx_fast.h) */
    json_object **fast_entries; /* the call's entries (their JSON), for its fast path */
    vx_metric_t *m_fast;
    vx_metric_t *m_consumed, *m_dlq, *m_entries, *m_duration, *m_retries, *m_lock_waits;
};

static long long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- set-up ------------------------------------------------------------------------------------ */

/* The apply statement's columns, by name, from a description of it: a function that does not return
 * what this binary reads stops the service at start, naming the column. */
static int find_columns(vx_apply_t *a, char *errstr, size_t errstr_size) {
    PGresult *r = PQprepare(a->db, "vx_apply_describe", a->o.sql, 1, NULL);
    int rc = -1;

    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(errstr, errstr_size, "the apply statement does not prepare: %s", PQresultErrorMessage(r));
        errstr[strcspn(errstr, "\n")] = '\0';
        PQclear(r);
        return -1;
    }
    PQclear(r);
    r = PQdescribePrepared(a->db, "vx_apply_describe");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        snprintf(errstr, errstr_size, "the apply statement cannot be described: %s", PQresultErrorMessage(r));
        goto out;
    }
    for (int c = 0; c < NCOLS; c++)
        if ((a->col[c] = PQfnumber(r, col_names[c])) < 0) {
            snprintf(errstr, errstr_size, "the apply function returns no column %s (%s)", col_names[c], a->o.sql);
            goto out;
        }
    for (const char *const *f = a->o.log_fields; f && f[0] && f[1]; f += 2) {
        if (a->nlog == MAX_LOG_FIELDS) {
            snprintf(errstr, errstr_size, "more than %d log fields", MAX_LOG_FIELDS);
            goto out;
        }
        if ((a->log_col[a->nlog] = PQfnumber(r, f[1])) < 0) {
            snprintf(errstr, errstr_size, "the apply function returns no column %s (%s)", f[1], a->o.sql);
            goto out;
        }
        a->log_name[a->nlog++] = f[0];
    }
    a->ocols = (vx_outbox_cols_t){a->col[COL_ID],      a->col[COL_TOPIC], a->col[COL_KEY],
                                  a->col[COL_PAYLOAD], a->col[COL_CID],   a->col[COL_HEADERS]};
    if (!(a->fast = vx_fast_load(a->db, r, errstr, errstr_size))) goto out;
    rc = 0;
out:
    errstr[strcspn(errstr, "\n")] = '\0';
    PQclear(r);
    PQclear(PQexec(a->db, "DEALLOCATE vx_apply_describe"));
    return rc;
}

vx_apply_t *vx_apply_new(const vx_apply_opts_t *o, PGconn *db, rd_kafka_t *producer, vx_outbox_t *outbox,
                         volatile sig_atomic_t *stopping, char *errstr, size_t errstr_size) {
    vx_apply_t *a = calloc(1, sizeof(*a));

    if (!a) goto oom;
    a->o = *o;
    a->db = db;
    a->producer = producer;
    a->outbox = outbox;
    a->stopping = stopping;
    if (!(a->call = calloc((size_t)o->batch_max, sizeof(*a->call))) ||
        !(a->fast_entries = calloc((size_t)o->batch_max, sizeof(*a->fast_entries))))
        goto oom;
    static const double entries[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000};
    a->m_consumed = vx_metric_new(VX_COUNTER, "valerix_messages_consumed_total",
                                  "Messages consumed, by topic, message type and outcome (applied, duplicate, rejected,"
                                  " dead_lettered, skipped).",
                                  "topic,type,outcome", NULL, 0);
    a->m_dlq = vx_metric_new(VX_COUNTER, "valerix_dead_letters_total",
                             "Messages sent to the dead-letter topic, by the topic they came from and the reason.",
                             "topic,reason", NULL, 0);
    a->m_entries = vx_metric_new(VX_HISTOGRAM, "valerix_apply_batch_entries", "Entries per apply call (transaction).",
                                 NULL, entries, (int)(sizeof(entries) / sizeof(entries[0])));
    a->m_duration = vx_metric_new(VX_HISTOGRAM, "valerix_apply_duration_seconds",
                                  "Time of one apply call that committed, its retries included.", NULL,
                                  vx_metric_seconds, vx_metric_nseconds);
    a->m_retries = vx_metric_new(VX_COUNTER, "valerix_apply_retries_total",
                                 "Apply calls tried again after a transient failure, by reason.", "reason", NULL, 0);
    for (const char *const *r = vx_pg_retry_reasons; *r; r++)
        vx_metric_add(a->m_retries, VX_L(*r), 0); /* every reason there is, from 0 */
    a->m_fast = vx_metric_new(VX_COUNTER, "valerix_apply_fast_calls_total",
                              "Apply calls a fast path took, by path and outcome (applied; fallback: handed to the"
                              " apply function).",
                              "path,outcome", NULL, 0);
    a->m_lock_waits = vx_metric_new(VX_COUNTER, "valerix_lock_waits_total",
                                    "Messages set aside because their call waited on a lock past VX_LOCK_TIMEOUT_MS.",
                                    NULL, NULL, 0);
    if (find_columns(a, errstr, errstr_size)) goto err;
    return a;
oom:
    snprintf(errstr, errstr_size, "out of memory");
err:
    vx_apply_destroy(a);
    return NULL;
}

/* ---- entries and partitions --------------------------------------------------------------------- */

static entry_t *entry_new(vx_apply_t *a) {
    entry_t *x;
    if (!a->free) {
        entry_t *chunk = malloc(CHUNK * sizeof(*chunk)), **chunks;
        if (!chunk) return NULL;
        if (!(chunks = realloc(a->chunks, (a->nchunks + 1) * sizeof(*chunks)))) {
            free(chunk);
            return NULL;
        }
        a->chunks = chunks;
        a->chunks[a->nchunks++] = chunk;
        for (int i = 0; i < CHUNK; i++) {
            chunk[i].next = a->free;
            a->free = &chunk[i];
        }
    }
    x = a->free;
    a->free = x->next;
    memset(x, 0, sizeof(*x));
    return x;
}

/* Forgets an entry taken: from the lists, its message and its call entry. */
static void entry_done(vx_apply_t *a, entry_t *x) {
    part_t *p = x->part;

    *(x->prev ? &x->prev->next : &a->head) = x->next;
    *(x->next ? &x->next->prev : &a->tail) = x->prev;
    *(x->pprev ? &x->pprev->pnext : &p->head) = x->pnext;
    *(x->pnext ? &x->pnext->pprev : &p->tail) = x->pprev;
    p->pending--;
    __atomic_sub_fetch(&a->held, 1, __ATOMIC_RELAXED);
    if (x->lock_waits) a->lockers--;
    rd_kafka_message_destroy(x->msg);
    json_object_put(x->e.json);
    x->next = a->free;
    a->free = x;
}

static part_t *part_of(vx_apply_t *a, const rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    part_t *p;

    for (size_t i = 0; i < a->nparts; i++)
        if (a->parts[i].partition == m->partition && strcmp(a->parts[i].topic, topic) == 0) return &a->parts[i];
    if (a->nparts == a->cap_parts) {
        size_t cap = a->cap_parts ? a->cap_parts * 2 : 8;
        part_t *parts = realloc(a->parts, cap * sizeof(*parts));
        if (!parts) return NULL;
        /* entries point at their partition: move them along */
        for (entry_t *x = a->head; x; x = x->next) x->part = parts + (x->part - a->parts);
        a->parts = parts;
        a->cap_parts = cap;
    }
    p = &a->parts[a->nparts];
    memset(p, 0, sizeof(*p));
    if (!(p->topic = strdup(topic))) return NULL;
    for (p->topic_ix = 0; p->topic_ix < a->ntopics && strcmp(a->topics[p->topic_ix], topic) != 0; p->topic_ix++) {
    }
    if (p->topic_ix == a->ntopics) {
        if (a->ntopics == MAX_TOPICS || !(a->topics[a->ntopics] = strdup(topic))) return NULL;
        a->ntopics++;
    }
    p->partition = m->partition;
    p->next = p->stored = -1;
    a->nparts++;
    return p;
}

/* The Kafka key as an ordering key: a NUL-free key that fits is itself, any other its hash. */
static void set_kkey(entry_t *x) {
    const char *k = x->msg->key;
    size_t n = x->msg->key_len;

    if (!k || !n) return;
    if (n <= KKEY_CAP && !memchr(k, '\0', n)) {
        memcpy(x->kkey, k, n);
        x->kkey[n] = '\0';
    } else {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 0x100000001b3ULL;
        snprintf(x->kkey, sizeof(x->kkey), "\x01%016llx", (unsigned long long)h);
    }
}

/* The message's correlation id (vx_kafka_correlation_id), or NULL. */
static const char *correlation_id(const rd_kafka_message_t *m, char cid[129]) {
    rd_kafka_headers_t *h;
    return rd_kafka_message_headers(m, &h) ? NULL : vx_kafka_correlation_id(h, cid, 129);
}

static void dead_letter(vx_apply_t *a, const rd_kafka_message_t *m, const char *reason, const char *detail,
                        const char *ikey) {
    char err[256], cid[129];
    if (vx_kafka_dead_letter(a->producer, a->o.dlq, m, reason, detail, a->o.service, err, sizeof(err))) {
        vx_log(VX_LOG_ERROR, "dead_letter_failed", "error", err, NULL);
        a->dlq_failed++;
        return;
    }
    a->dlq_pending++;
    vx_metric_add(a->m_dlq, VX_L(rd_kafka_topic_name(m->rkt), reason), 1);
    vx_log(VX_LOG_WARN, "dead_lettered", "reason", reason, "error", detail, "topic", rd_kafka_topic_name(m->rkt),
           "idempotency_key", ikey, "correlation_id", correlation_id(m, cid), NULL);
}

/* A correlation-id header is copied onto what the command causes (its event or result, and the
 * database rows in between), so it must be one header of 1 to 128 bytes of UTF-8 text. Returns 0 when
 * it is that or absent (or null), else -1 with errstr. */
static int check_correlation_id(const rd_kafka_message_t *m, char *errstr, size_t errstr_size) {
    rd_kafka_headers_t *hdrs;
    const void *val;
    const char *why;
    size_t size, n = 0;

    if (rd_kafka_message_headers(m, &hdrs)) return 0;
    for (size_t i = 0; !rd_kafka_header_get(hdrs, i, "correlation-id", &val, &size); i++) n++;
    if (n > 1) {
        snprintf(errstr, errstr_size, "the correlation-id header is given %zu times; send it once", n);
        return -1;
    }
    if (rd_kafka_header_get_last(hdrs, "correlation-id", &val, &size) || !val) return 0;
    if (size < 1 || size > 128) {
        snprintf(errstr, errstr_size, "the correlation-id header must be 1 to 128 bytes, not %zu", size);
        return -1;
    }
    if ((why = vx_msg_text_check(val, size))) {
        snprintf(errstr, errstr_size, "the correlation-id header must be UTF-8 text; it holds %s", why);
        return -1;
    }
    return 0;
}

void vx_apply_add(vx_apply_t *a, rd_kafka_message_t *m) {
    char err[256], cid[129];
    entry_t *x;
    part_t *p;
    long delay = 0;

    if (m->err) {
        vx_log(VX_LOG_WARN, "consume_error", "error", rd_kafka_message_errstr(m), NULL);
        rd_kafka_message_destroy(m);
        return;
    }
    if (!(p = part_of(a, m)) || !(x = entry_new(a))) {
        /* Out of memory: the message is dropped unapplied, so its offset must never be stored. */
        vx_log(VX_LOG_ERROR, "out_of_memory", "detail", "exiting without storing offsets", NULL);
        vx_log_flush();
        exit(1);
    }
    if (m->offset + 1 > p->next) p->next = m->offset + 1;
    err[0] = '\0';
    if (check_correlation_id(m, err, sizeof(err))) x->e.reason = vx_msg_err_name(VX_MSG_INVALID_VALUE);
    switch (x->e.reason ? VX_ENTRY_REFUSE : a->o.decode(m, &x->e, err, sizeof(err), a->o.opaque)) {
    case VX_ENTRY_REFUSE:
        dead_letter(a, m, x->e.reason ? x->e.reason : "processing_error", err, NULL);
        vx_metric_add(a->m_consumed, VX_L(rd_kafka_topic_name(m->rkt), x->e.type ? x->e.type : "unknown", "dead_lettered"),
                      1);
        json_object_put(x->e.json);
        rd_kafka_message_destroy(m);
        x->next = a->free;
        a->free = x;
        return;
    case VX_ENTRY_SKIP:
        vx_metric_add(a->m_consumed, VX_L(rd_kafka_topic_name(m->rkt), x->e.type ? x->e.type : "unknown", "skipped"), 1);
        json_object_put(x->e.json);
        rd_kafka_message_destroy(m);
        x->next = a->free;
        a->free = x;
        return;
    case VX_ENTRY_APPLY:
        break;
    }
    x->msg = m;
    x->part = p;
    x->seq = a->seq++;
    set_kkey(x);
    if (correlation_id(m, cid))
        json_object_object_add(x->e.json, "cid", json_object_new_string(cid));
    if (x->e.delayable && (delay = vx_chaos_gremlin())) {
        char ms[24];
        x->due = now_ms() + delay;
        json_object_object_add(x->e.json, "h", vx_chaos_delay_headers(delay)); /* headers of what it produces */
        snprintf(ms, sizeof(ms), "%ld", delay);
        vx_log(VX_LOG_INFO, "gremlin_delay", "#delay_ms", ms, "idempotency_key", x->e.ikey, NULL);
    }
    x->prev = a->tail;
    *(a->tail ? &a->tail->next : &a->head) = x;
    a->tail = x;
    x->pprev = p->tail;
    *(p->tail ? &p->tail->pnext : &p->head) = x;
    p->tail = x;
    p->pending++;
    __atomic_add_fetch(&a->held, 1, __ATOMIC_RELAXED);
}

/* ---- applying ------------------------------------------------------------------------------------ */

/* The call statement, prepared once per connection: parsing, analysing and planning
 * "SELECT * FROM f($1::jsonb)" at every call was part of each call's fixed cost (make bench's stage D
 * prepares it too). A new connection (PQreset after a failure) has another backend, so the statement
 * is prepared again when the backend's pid changes. It is prepared again too after the server
 * forgets it (26000) or refuses its cached plan (0A000: "cached plan must not change result type",
 * when another instance's migration changed the function's result while this one runs): both are
 * the database's faults, so exec retries the call, which then prepares anew. */
#define STMT "vx_apply"

/* Prepares the call statement where it is not (vx_pg_prepare): NULL when it is, or the failed
 * step's result. */
static PGresult *prepare(vx_apply_t *a) {
    int pid = PQbackendPID(a->db);
    PGresult *r;

    if (a->prepared_pid == pid) return NULL;
    if ((r = vx_pg_prepare(a->db, STMT, a->o.sql, 1))) return r;
    a->prepared_pid = pid;
    return NULL;
}

/* A call: its entries, and the path that takes them (vx_fast.h), -1 when none. The general
 * statement's JSON array of them (arr, owned, and its text) is made when that statement first runs,
 * so a call its fast path takes never builds it. */
typedef struct {
    entry_t **v;
    size_t n;
    int path;
    json_object *arr;
    const char *json;
} call_t;

/* The call's statement, once prepared: the fast path's pipeline, or the prepared call statement. A
 * server that has forgotten a statement or refuses its plan has it prepared again at the next try. */
static PGresult *run(vx_apply_t *a, call_t *c, int fast) {
    PGresult *r;

    if (fast) return vx_fast_run(a->fast, a->db, c->path, a->fast_entries, c->n);
    if (!c->json) {
        c->arr = json_object_new_array_ext((int)c->n);
        for (size_t i = 0; i < c->n; i++) json_object_array_add(c->arr, json_object_get(c->v[i]->e.json));
        c->json = json_object_to_json_string_ext(c->arr, JSON_C_TO_STRING_PLAIN);
    }
    r = PQexecPrepared(a->db, STMT, 1, &c->json, NULL, NULL, 0);
    if (vx_pg_unprepared(r)) a->prepared_pid = 0;
    return r;
}

/* One transaction: the statement alone (its own transaction: one round trip), or, while crash point
 * before_commit is armed, BEGIN, the statement, the point, COMMIT. Returns the statement's rows, or
 * the first failed step's result (the transaction rolled back). */
static PGresult *exec_txn(vx_apply_t *a, call_t *call, int fast) {
    PGresult *r, *c;

    if ((r = fast ? vx_fast_prepare(a->fast, a->db) : prepare(a))) return r;
    if (!vx_chaos_armed("before_commit")) return run(a, call, fast);
    r = PQexec(a->db, "BEGIN");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return r;
    PQclear(r);
    r = run(a, call, fast);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(PQexec(a->db, "ROLLBACK"));
        return r;
    }
    vx_chaos_point("before_commit");
    c = PQexec(a->db, "COMMIT");
    if (PQresultStatus(c) != PGRES_COMMAND_OK) {
        PQclear(r);
        return c;
    }
    PQclear(c);
    return r;
}

/* The fast path, once: EXEC_OK with its rows, EXEC_LOCK, or EXEC_FATAL when the call is for the
 * apply statement (the path found it is not its kind, or failed otherwise: the apply statement then
 * meets the same database and decides, a lost connection counted and logged first). */
static exec_t exec_fast(vx_apply_t *a, call_t *c, PGresult **out) {
    const char *name = vx_fast_name(a->fast, c->path);
    PGresult *r;

    if (vx_pg_ensure(a->db)) return EXEC_FATAL;
    r = exec_txn(a, c, 1);
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
        vx_metric_add(a->m_fast, VX_L(name, "applied"), 1);
        *out = r;
        return EXEC_OK;
    }
    if (vx_pg_fault_of(a->db, r) == VX_PG_LOCK) {
        PQclear(r);
        return EXEC_LOCK;
    }
    if (PQstatus(a->db) != CONNECTION_OK) { /* lost: told as the apply statement's failures are; its loop connects again */
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        vx_metric_add(a->m_retries, VX_L(vx_pg_retry_reason(a->db, state)), 1);
        vx_log(VX_LOG_WARN, "batch_failed", "sqlstate", state, "error", PQresultErrorMessage(r), NULL);
        PQclear(r);
        return EXEC_FATAL;
    }
    vx_metric_add(a->m_fast, VX_L(name, "fallback"), 1);
    if (vx_log_enabled(VX_LOG_DEBUG))
        vx_log(VX_LOG_DEBUG, "fast_path_fallback", "path", name, "sqlstate",
               PQresultErrorField(r, PG_DIAG_SQLSTATE), "error", PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY), NULL);
    PQclear(r);
    return EXEC_FATAL;
}

/* Runs the call until it commits or fails for good: its fast path first, when it has one, then the
 * apply statement. Whose fault a failure of the apply statement is, vx_pg_fault says: the database's
 * (connection, read-only, privileges, out of disk, a concurrent twin ...) is retried, the same call,
 * with backoff, for as long as it lasts (nothing is dead-lettered for it, no offset moves); the
 * entries' is reported (EXEC_FATAL: the caller splits the call down to the entry at fault); a lock
 * wait longer than lock_timeout is reported at once. */
static exec_t exec(vx_apply_t *a, call_t *c, PGresult **out, char *detail, size_t detail_size) {
    int backoff_ms = 50;
    long long give_up = 0;

    if (c->path >= 0) {
        exec_t st = exec_fast(a, c, out);
        if (st != EXEC_FATAL) return st;
    }
    for (;;) {
        if (vx_pg_ensure(a->db) == 0) {
            PGresult *r = exec_txn(a, c, 0);
            const char *state;
            vx_pg_fault_t fault;
            int retry;

            if (PQresultStatus(r) == PGRES_TUPLES_OK) {
                *out = r;
                return EXEC_OK;
            }
            state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            fault = vx_pg_fault_of(a->db, r);
            if (fault == VX_PG_LOCK) {
                PQclear(r);
                return EXEC_LOCK;
            }
            retry = fault == VX_PG_RETRY;
            if (retry) vx_metric_add(a->m_retries, VX_L(vx_pg_retry_reason(a->db, state)), 1);
            vx_log(retry ? VX_LOG_WARN : VX_LOG_ERROR, "batch_failed", "sqlstate", state, "error",
                   PQresultErrorMessage(r), NULL);
            if (!retry) {
                snprintf(detail, detail_size, "the database refused it: %s %s", state ? state : "",
                         PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                                                                        : "");
                PQclear(r);
                return EXEC_FATAL;
            }
            PQclear(r);
        } else {
            vx_metric_add(a->m_retries, VX_L("connection"), 1);
            vx_log(VX_LOG_WARN, "database_unreachable", "error", PQerrorMessage(a->db), NULL);
        }
        if (*a->stopping && !give_up) give_up = now_ms() + STOP_GRACE_MS;
        if (give_up && now_ms() > give_up) return EXEC_GAVE_UP;
        vx_log_flush();
        usleep((useconds_t)backoff_ms * 1000);
        if (backoff_ms < 2000) backoff_ms *= 2;
    }
}

static int listed(const char *const *list, const char *note) {
    for (; list && *list; list++)
        if (strcmp(*list, note) == 0) return 1;
    return 0;
}

/* Counts the call's messages by outcome: each outcome row (its out_note) is matched to its entry by
 * idempotency key (rows come mostly in the call's order; a miss searches the call). An entry that
 * no row names counts as applied. */
static void count_outcomes(vx_apply_t *a, const PGresult *r, entry_t **v, size_t n) {
    size_t cur = 0;
    int ikey_col = PQfnumber(r, "out_ikey");
    char *seen = calloc(n, 1);

    for (int i = 0; seen && ikey_col >= 0 && i < PQntuples(r); i++) {
        const char *note, *ikey = PQgetvalue(r, i, ikey_col);
        size_t k = cur;
        if (PQgetisnull(r, i, a->col[COL_NOTE]) || PQgetisnull(r, i, ikey_col)) continue;
        note = PQgetvalue(r, i, a->col[COL_NOTE]);
        if (k >= n || seen[k] || !v[k]->e.ikey || strcmp(v[k]->e.ikey, ikey) != 0)
            for (k = 0; k < n && (seen[k] || !v[k]->e.ikey || strcmp(v[k]->e.ikey, ikey) != 0); k++) {
            }
        if (k == n) continue;
        seen[k] = 1;
        cur = k + 1;
        vx_metric_add(a->m_consumed,
                      VX_L(v[k]->part->topic, v[k]->e.type,
                           listed(a->o.duplicate_notes, note)  ? "duplicate"
                           : listed(a->o.rejected_notes, note) ? "rejected"
                                                               : "applied"),
                      1);
    }
    for (size_t k = 0; k < n; k++)
        if (!seen || !seen[k]) vx_metric_add(a->m_consumed, VX_L(v[k]->part->topic, v[k]->e.type, "applied"), 1);
    free(seen);
}

/* Publishes the outbox rows a call returned, right after its commit, and logs its outcomes. */
static void publish(vx_apply_t *a, const PGresult *r) {
    char err[256];
    const char *v[MAX_LOG_FIELDS];

    vx_chaos_point("after_commit_before_publish");
    if (vx_outbox_publish(a->outbox, r, &a->ocols, err, sizeof(err)) < 0)
        vx_log(VX_LOG_ERROR, "publish_failed", "error", err, NULL); /* the rows stay for the sweep */
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetisnull(r, i, a->col[COL_NOTE])) continue;
        if (a->o.outcome) a->o.outcome(r, i, a->o.opaque);
        if (!vx_log_enabled(VX_LOG_INFO)) continue;
        for (int f = 0; f < MAX_LOG_FIELDS; f++)
            v[f] = f < a->nlog && !PQgetisnull(r, i, a->log_col[f]) ? PQgetvalue(r, i, a->log_col[f]) : NULL;
        vx_log(VX_LOG_INFO, PQgetvalue(r, i, a->col[COL_NOTE]), a->log_name[0], v[0], a->log_name[1], v[1],
               a->log_name[2], v[2], a->log_name[3], v[3], a->log_name[4], v[4], a->log_name[5], v[5],
               a->log_name[6], v[6], a->log_name[7], v[7], NULL);
    }
}

static int add_keys(vx_strset_t *set, const entry_t *x) {
    int rc = 0;
    for (int k = 0; k < VX_ENTRY_KEYS; k++)
        if (x->e.keys[k] && vx_strset_add(set, x->e.keys[k]) < 0) rc = -1;
    if (x->kkey[0] && vx_strset_add(set, x->kkey) < 0) rc = -1;
    return rc;
}

static int has_key(const vx_strset_t *set, const entry_t *x) {
    if (!set->n) return 0;
    for (int k = 0; k < VX_ENTRY_KEYS; k++)
        if (x->e.keys[k] && vx_strset_find(set, x->e.keys[k])) return 1;
    return x->kkey[0] && vx_strset_find(set, x->kkey);
}

static int has_row(const vx_strset_t *set, const entry_t *x) {
    if (!set->n) return 0;
    for (int r = 0; r < x->e.nrows; r++)
        if (vx_strset_find(set, x->e.rows[r])) return 1;
    return 0;
}

static void add_rows(vx_strset_t *set, const entry_t *x) {
    for (int r = 0; r < x->e.nrows; r++) vx_strset_add(set, x->e.rows[r]);
}

/* Whether x must stay for a later turn: something this turn set aside shares a key or a row with it.
 * Then its own keys hold back its followers too. */
static int stays(vx_apply_t *a, const entry_t *x) {
    if (!has_key(&a->set_keys, x) && !has_row(&a->set_rows, x)) return 0;
    add_keys(&a->set_keys, x);
    return 1;
}

/* x waited on a lock longer than lock_timeout: it is tried again later, alone, and what shares its
 * keys or rows waits behind it. */
static void defer(vx_apply_t *a, entry_t *x) {
    char n[16];
    long long backoff = LOCK_BACKOFF_MS << (x->lock_waits < 4 ? x->lock_waits : 4);

    if (!x->lock_waits++) a->lockers++;
    vx_metric_add(a->m_lock_waits, VX_NOLABELS, 1);
    x->due = now_ms() + (backoff < LOCK_BACKOFF_CAP_MS ? backoff : LOCK_BACKOFF_CAP_MS);
    add_keys(&a->set_keys, x);
    add_rows(&a->set_rows, x);
    snprintf(n, sizeof(n), "%d", x->lock_waits);
    vx_log(VX_LOG_WARN, "lock_wait_set_aside", "type", x->e.type, "idempotency_key", x->e.ikey, "#lock_waits", n, NULL);
}

/* Applies v[0..n-1] in one call; when the database refuses it, in halves, down to the entry at fault.
 * Returns 0, or -1 when it gave up because the service is stopping. */
static int apply_call(vx_apply_t *a, entry_t **v, size_t n) {
    PGresult *r = NULL;
    char detail[512];
    size_t k = 0;
    long long t0;
    exec_t st;
    int rc;

    for (size_t i = 0; i < n; i++) /* a deferral earlier in this turn may hold some back now */
        if (!stays(a, v[i])) v[k++] = v[i];
    if (!(n = k)) return 0;
    for (size_t i = 0; i < n; i++) a->fast_entries[i] = v[i]->e.json;
    call_t call = {v, n, vx_fast_call_path(a->fast, a->fast_entries, n), NULL, NULL};
    t0 = now_us();
    st = exec(a, &call, &r, detail, sizeof(detail));
    json_object_put(call.arr);
    switch (st) {
    case EXEC_OK:
        vx_metric_observe(a->m_duration, VX_NOLABELS, (double)(now_us() - t0) / 1e6);
        vx_metric_observe(a->m_entries, VX_NOLABELS, (double)n);
        count_outcomes(a, r, v, n);
        publish(a, r);
        PQclear(r);
        for (size_t i = 0; i < n; i++) entry_done(a, v[i]);
        return 0;
    case EXEC_GAVE_UP:
        return -1;
    case EXEC_LOCK:
    case EXEC_FATAL:
        if (n > 1) {
            rc = apply_call(a, v, n / 2);
            return rc ? rc : apply_call(a, v + n / 2, n - n / 2);
        }
        if (st == EXEC_LOCK) {
            defer(a, v[0]);
        } else {
            dead_letter(a, v[0]->msg, "processing_error", detail, v[0]->e.ikey);
            vx_metric_add(a->m_consumed, VX_L(v[0]->part->topic, v[0]->e.type, "dead_lettered"), 1);
            entry_done(a, v[0]);
        }
        return 0;
    }
    return 0;
}

static int flush_call(vx_apply_t *a) {
    size_t n = a->ncall;
    a->ncall = 0;
    vx_strset_clear(&a->call_keys); /* before the call frees the entries whose keys it holds */
    return n ? apply_call(a, a->call, n) : 0;
}

/* Whether x shares a service key with the call being built (the SQL call needs each once). */
static int in_call(vx_apply_t *a, const entry_t *x) {
    for (int k = 0; k < VX_ENTRY_KEYS; k++)
        if (x->e.keys[k] && vx_strset_find(&a->call_keys, x->e.keys[k])) return 1;
    return 0;
}

/* The turn's order: probes first, then by kind, each in arrival order. */
static int by_turn(const void *pa, const void *pb) {
    const entry_t *x = *(entry_t *const *)pa, *y = *(entry_t *const *)pb;
    if (x->probe != y->probe) return y->probe - x->probe;
    if (x->e.kind != y->e.kind) return x->e.kind < y->e.kind ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The turn's walk: the entries that are ready, in the turn's order. */
static size_t walk(vx_apply_t *a, long long now) {
    size_t n = 0;
    int sort = 0;

    if ((size_t)a->held > a->cap_ready) {
        size_t cap = (size_t)a->held * 2;
        entry_t **ready = realloc(a->ready, cap * sizeof(*ready));
        if (!ready) return 0; /* nothing this turn; the entries stay */
        a->ready = ready;
        a->cap_ready = cap;
    }
    if (a->lockers) /* rows of lock waiters not due yet hold back whatever touches them */
        for (entry_t *x = a->head; x; x = x->next)
            if (x->lock_waits && x->due > now) add_rows(&a->hot, x);
    for (entry_t *x = a->head; x; x = x->next) {
        vx_strset_t *blocked = &a->blocked[x->part->topic_ix];
        if (x->due > now || has_key(blocked, x) || has_row(&a->hot, x)) {
            add_keys(blocked, x);
            continue;
        }
        x->probe = x->lock_waits > 0;
        if (n && (x->probe || x->e.kind < a->ready[n - 1]->e.kind)) sort = 1;
        a->ready[n++] = x;
    }
    for (int t = 0; t < a->ntopics; t++) vx_strset_clear(&a->blocked[t]);
    vx_strset_clear(&a->hot);
    if (sort) qsort(a->ready, n, sizeof(*a->ready), by_turn);
    return n;
}

int vx_apply_run(vx_apply_t *a) {
    size_t n;
    int rc = 0;

    if (!a->head) return 0;
    n = walk(a, now_ms());
    vx_strset_clear(&a->set_keys);
    vx_strset_clear(&a->set_rows);
    /* Each ready entry is looked at once, before any call could have finished it. */
    for (size_t i = 0; i < n && rc == 0; i++) {
        entry_t *x = a->ready[i];
        if (x->probe) { /* alone: a lock still held costs one wait, not a bisection */
            rc = apply_call(a, &a->ready[i], 1);
            continue;
        }
        if (stays(a, x)) continue;
        if (a->ncall && (a->call[0]->e.kind != x->e.kind || in_call(a, x) || a->ncall == (size_t)a->o.batch_max)) {
            if ((rc = flush_call(a)) || stays(a, x)) continue;
        }
        a->call[a->ncall++] = x;
        for (int k = 0; k < VX_ENTRY_KEYS; k++)
            if (x->e.keys[k]) vx_strset_add(&a->call_keys, x->e.keys[k]);
    }
    if (rc == 0) rc = flush_call(a);
    a->ncall = 0;
    vx_strset_clear(&a->call_keys);
    vx_strset_clear(&a->set_keys);
    vx_strset_clear(&a->set_rows);
    return rc;
}

int vx_apply_wait_ms(const vx_apply_t *a, int cap) {
    long long now = now_ms(), wait = cap;
    for (const entry_t *x = a->head; x; x = x->next)
        if (x->due > now && x->due - now < wait) wait = x->due - now;
    return (int)wait;
}

/* ---- offsets, flow, rebalances ------------------------------------------------------------------ */

void vx_apply_on_dlq_delivery(vx_apply_t *a, rd_kafka_resp_err_t err) {
    a->dlq_pending--;
    if (err) {
        a->dlq_failed++;
        vx_log(VX_LOG_ERROR, "dead_letter_delivery_failed", "error", rd_kafka_err2str(err), NULL);
    }
}

int vx_apply_settle(vx_apply_t *a, rd_kafka_t *consumer) {
    rd_kafka_topic_partition_list_t *store, *pause = NULL, *resume = NULL;
    rd_kafka_resp_err_t err;

    if (a->dlq_pending) rd_kafka_flush(a->producer, 30000); /* a dead letter must be durable first */
    if (a->dlq_failed || a->dlq_pending) return -1;
    store = rd_kafka_topic_partition_list_new((int)a->nparts);
    for (size_t i = 0; i < a->nparts; i++) {
        part_t *p = &a->parts[i];
        int64_t want = p->head ? p->head->msg->offset : p->next;
        if (want > p->stored) {
            rd_kafka_topic_partition_list_add(store, p->topic, p->partition)->offset = want;
            p->stored = want;
        }
        if (!p->paused && p->pending >= a->o.hold_max) {
            if (!pause) pause = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(pause, p->topic, p->partition);
            p->paused = 1;
        } else if (p->paused && p->pending <= a->o.hold_max / 2) {
            if (!resume) resume = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(resume, p->topic, p->partition);
            p->paused = 0;
        }
    }
    if (store->cnt) {
        vx_chaos_point("after_publish_before_offset_commit");
        if ((err = rd_kafka_offsets_store(consumer, store)))
            vx_log(VX_LOG_WARN, "offset_store_failed", "error", rd_kafka_err2str(err), NULL);
    }
    if (pause) {
        char n[24];
        snprintf(n, sizeof(n), "%ld", a->held);
        vx_log(VX_LOG_WARN, "partition_paused", "topic", pause->elems[0].topic, "#held", n, NULL);
        rd_kafka_pause_partitions(consumer, pause);
        rd_kafka_topic_partition_list_destroy(pause);
    }
    if (resume) {
        vx_log(VX_LOG_INFO, "partition_resumed", "topic", resume->elems[0].topic, NULL);
        rd_kafka_resume_partitions(consumer, resume);
        rd_kafka_topic_partition_list_destroy(resume);
    }
    rd_kafka_topic_partition_list_destroy(store);
    return 0;
}

void vx_apply_revoke(vx_apply_t *a, const rd_kafka_topic_partition_list_t *parts) {
    for (size_t i = 0; i < a->nparts;) {
        part_t *p = &a->parts[i];
        if (!rd_kafka_topic_partition_list_find(parts, p->topic, p->partition)) {
            i++;
            continue;
        }
        while (p->head) entry_done(a, p->head); /* the next owner gets them from the offset stored */
        free(p->topic);
        a->nparts--;
        if (i < a->nparts) { /* the last one takes its place; its entries follow it */
            *p = a->parts[a->nparts];
            for (entry_t *x = p->head; x; x = x->pnext) x->part = p;
        }
    }
}

long vx_apply_held(const vx_apply_t *a) { return __atomic_load_n(&a->held, __ATOMIC_RELAXED); }

void vx_apply_destroy(vx_apply_t *a) {
    if (!a) return;
    while (a->head) entry_done(a, a->head);
    for (size_t i = 0; i < a->nparts; i++) free(a->parts[i].topic);
    for (size_t i = 0; i < a->nchunks; i++) free(a->chunks[i]);
    free(a->chunks);
    free(a->parts);
    free(a->ready);
    free(a->call);
    free(a->fast_entries);
    vx_fast_destroy(a->fast);
    for (int t = 0; t < a->ntopics; t++) {
        vx_strset_free(&a->blocked[t]);
        free(a->topics[t]);
    }
    vx_strset_free(&a->hot);
    vx_strset_free(&a->set_keys);
    vx_strset_free(&a->set_rows);
    vx_strset_free(&a->call_keys);
    free(a);
}
