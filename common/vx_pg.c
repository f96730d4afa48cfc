/* vx_pg: PostgreSQL helpers. See vx_pg.h. */
#define _DEFAULT_SOURCE
#include "vx_pg.h"

#include "vx_log.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIGRATION_LOCK_ID "7264001" /* any constant shared by the instances of one database */
#define MIGRATION_MAX_BYTES (1 << 20)

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Server notices (e.g. "relation already exists, skipping") as JSON log lines, not raw stderr. */
static void on_notice(void *arg, const char *message) {
    char line[512];
    (void)arg;
    snprintf(line, sizeof(line), "%s", message);
    line[strcspn(line, "\n")] = '\0';
    vx_log(VX_LOG_DEBUG, "postgres_notice", "detail", line, NULL);
}

/* libpq's message about a connection string it cannot parse quotes the part at fault ("invalid
 * percent-encoded token: \"...\"", "missing \"=\" after \"...\""), which may be the password: msg
 * into dst with every quoted part left out. */
static void unquoted(char *dst, size_t size, const char *msg) {
    size_t n = 0;
    int in = 0;
    for (; *msg && *msg != '\n' && n + 4 < size; msg++) {
        if (*msg == '"') {
            in = !in;
            if (in) {
                memcpy(dst + n, "\"...", 4);
                n += 4;
            } else {
                dst[n++] = '"';
            }
        } else if (!in) {
            dst[n++] = *msg;
        }
    }
    dst[n] = '\0';
}

/* A connection string libpq cannot parse never gets better: errstr says so, without its quoted parts. */
static int unparsable(const char *conninfo, char *errstr, size_t errstr_size) {
    char *perr = NULL, clean[256];
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &perr);
    if (parsed) {
        PQconninfoFree(parsed);
        return 0;
    }
    unquoted(clean, sizeof(clean), perr ? perr : "out of memory");
    snprintf(errstr, errstr_size,
             "PostgreSQL: the connection string does not parse (its quoted parts are not shown: they may hold the "
             "password): %s",
             clean);
    PQfreemem(perr);
    return 1;
}

/* conninfo with pgoptions added to its own options, as keyword and value arrays for
 * PQconnectdbParams. Returns the parsed options (free with PQconninfoFree) or NULL with errstr. */
static PQconninfoOption *with_options(const char *conninfo, const char *pgoptions, const char **kw, const char **val,
                                      char *opts, size_t opts_size, char *errstr, size_t errstr_size) {
    char *perr = NULL;
    PQconninfoOption *parsed = PQconninfoParse(conninfo, &perr);
    int n = 0, have = 0;

    if (!parsed) {
        PQfreemem(perr);
        unparsable(conninfo, errstr, errstr_size);
        return NULL;
    }
    for (PQconninfoOption *o = parsed; o->keyword && n < 62; o++) {
        if (strcmp(o->keyword, "options") == 0) {
            snprintf(opts, opts_size, "%s%s%s", o->val ? o->val : "", o->val ? " " : "", pgoptions);
            kw[n] = o->keyword;
            val[n++] = opts;
            have = 1;
        } else if (o->val) {
            kw[n] = o->keyword;
            val[n++] = o->val;
        }
    }
    if (!have) {
        snprintf(opts, opts_size, "%s", pgoptions);
        kw[n] = "options";
        val[n++] = opts;
    }
    kw[n] = val[n] = NULL;
    return parsed;
}

/* A connection failure that waiting does not mend: the server (or libpq) refused the credentials.
 * libpq gives no SQLSTATE before a connection exists, so its messages are matched (the server's in
 * English: lc_messages of the local stack is C). */
static int refused(const char *msg) {
    static const char *const signs[] = {"password authentication failed", "no password supplied",
                                        "authentication failed for user", "no pg_hba.conf entry", "pg_hba.conf rejects",
                                        "SCRAM authentication", NULL};
    for (const char *const *s = signs; *s; s++)
        if (strstr(msg, *s)) return 1;
    return 0;
}

PGconn *vx_pg_connect(const char *conninfo, const char *pgoptions, int wait_ms, char *errstr, size_t errstr_size) {
    long long deadline = now_ms() + wait_ms;
    const char *kw[64], *val[64];
    char opts[1024];
    PQconninfoOption *parsed = NULL;

    if (unparsable(conninfo, errstr, errstr_size)) return NULL;
    if (pgoptions && !(parsed = with_options(conninfo, pgoptions, kw, val, opts, sizeof(opts), errstr, errstr_size)))
        return NULL;
    for (;;) {
        PGconn *c = parsed ? PQconnectdbParams(kw, val, 0) : PQconnectdb(conninfo);
        if (PQstatus(c) == CONNECTION_OK) {
            PQsetNoticeProcessor(c, on_notice, NULL);
            PQconninfoFree(parsed);
            return c;
        }
        if (refused(PQerrorMessage(c)))
            snprintf(errstr, errstr_size,
                     VX_PG_AUTH_FAILED " of user \"%s\" on %s:%s database %s (the password, from the connection "
                     "string or PGPASSWORD, is not shown): %s",
                     PQuser(c), PQhost(c), PQport(c), PQdb(c), PQerrorMessage(c));
        else
            snprintf(errstr, errstr_size, "PostgreSQL: %s", PQerrorMessage(c));
        errstr[strcspn(errstr, "\n")] = '\0';
        PQfinish(c);
        if (now_ms() >= deadline || strncmp(errstr, VX_PG_AUTH_FAILED, strlen(VX_PG_AUTH_FAILED)) == 0) {
            PQconninfoFree(parsed);
            return NULL;
        }
        usleep(200 * 1000);
    }
}

int vx_pg_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size) {
    PGresult *r = PQexec(conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok) {
        snprintf(errstr, errstr_size, "%s", PQerrorMessage(conn));
        errstr[strcspn(errstr, "\n")] = '\0';
    }
    PQclear(r);
    return ok ? 0 : -1;
}

static int sqlstate_is(const PGresult *r, const char *st) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return s && strcmp(s, st) == 0;
}

PGresult *vx_pg_prepare(PGconn *conn, const char *name, const char *sql, int nparams) {
    PGresult *r = PQprepare(conn, name, sql, nparams, NULL);

    if (sqlstate_is(r, "42P05")) {
        char dealloc[128];
        PQclear(r);
        snprintf(dealloc, sizeof(dealloc), "DEALLOCATE %s", name);
        PQclear(PQexec(conn, dealloc));
        r = PQprepare(conn, name, sql, nparams, NULL);
    }
    if (PQresultStatus(r) != PGRES_COMMAND_OK) return r;
    PQclear(r);
    return NULL;
}

int vx_pg_unprepared(const PGresult *res) { return sqlstate_is(res, "26000") || sqlstate_is(res, "0A000"); }

vx_pg_fault_t vx_pg_fault(const char *st) {
    static const char *const entry_classes[] = {"21", "22", "23", "27", "2F", "39", "44", "54", "P0", NULL};

    if (!st || strlen(st) != 5) return VX_PG_RETRY;
    if (strcmp(st, "55P03") == 0) return VX_PG_LOCK;
    if (strcmp(st, "23505") == 0) return VX_PG_RETRY; /* a concurrent twin committed first: the retry finds it */
    for (const char *const *c = entry_classes; *c; c++)
        if (strncmp(st, *c, 2) == 0) return VX_PG_ENTRY;
    return VX_PG_RETRY;
}

vx_pg_fault_t vx_pg_fault_of(PGconn *conn, const PGresult *res) {
    if (PQstatus(conn) != CONNECTION_OK || !res) return VX_PG_RETRY;
    return vx_pg_fault(PQresultErrorField(res, PG_DIAG_SQLSTATE));
}

const char *const vx_pg_retry_reasons[] = {"connection", "serialization", "deadlock", "unique_violation", "read_only",
                                           "privileges", "resources", "schema", "other", NULL};

const char *vx_pg_retry_reason(PGconn *conn, const char *st) {
    if ((conn && PQstatus(conn) != CONNECTION_OK) || !st || strncmp(st, "08", 2) == 0 || strncmp(st, "57P", 3) == 0)
        return "connection";
    if (strcmp(st, "40001") == 0) return "serialization";
    if (strcmp(st, "40P01") == 0) return "deadlock";
    if (strcmp(st, "23505") == 0) return "unique_violation";
    if (strcmp(st, "25006") == 0) return "read_only";
    if (strcmp(st, "42501") == 0) return "privileges";
    if (strncmp(st, "53", 2) == 0) return "resources";
    if (strncmp(st, "42", 2) == 0) return "schema";
    return "other";
}

int vx_pg_ensure(PGconn *conn) {
    if (PQstatus(conn) == CONNECTION_OK) return 0;
    PQreset(conn);
    return PQstatus(conn) == CONNECTION_OK ? 0 : -1;
}

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }
static int is_sql(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return n > 4 && strcmp(d->d_name + n - 4, ".sql") == 0;
}

static char *read_file(const char *path, char *errstr, size_t errstr_size) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (!f) {
        snprintf(errstr, errstr_size, "cannot open %s", path);
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || n > MIGRATION_MAX_BYTES || fseek(f, 0, SEEK_SET)) {
        snprintf(errstr, errstr_size, "cannot read %s (or larger than %d bytes)", path, MIGRATION_MAX_BYTES);
        goto out;
    }
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        snprintf(errstr, errstr_size, "cannot read %s", path);
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[n] = '\0';
out:
    fclose(f);
    return buf;
}

/* Applies the files of one folder; see vx_pg_migrate. Returns the number applied or -1. */
static int migrate_dir(PGconn *conn, const char *dir, char *errstr, size_t errstr_size) {
    /* A versioned file is due when its name is not recorded; a repeatable one (R_*.sql) when its
       name is not recorded with the checksum of what the file says now. */
    static const char SQL_DUE[] = "SELECT NOT EXISTS (SELECT 1 FROM schema_migrations WHERE name = $1"
                                  " AND ($3 = 'v' OR checksum = md5($2)))";
    static const char SQL_RECORD[] = "INSERT INTO schema_migrations (name, checksum)"
                                     " VALUES ($1, CASE WHEN $3 = 'r' THEN md5($2) END)"
                                     " ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()";
    struct dirent **files = NULL;
    int nfiles, applied = 0, rc = -1;

    nfiles = scandir(dir, &files, is_sql, by_name);
    if (nfiles < 0) {
        snprintf(errstr, errstr_size, "migrations folder %s: cannot list it", dir);
        return -1;
    }
    for (int i = 0; i < nfiles; i++) {
        const char *name = files[i]->d_name;
        char path[4352], *sql; /* dir (< 4096) + "/" + name (< 256) */
        PGresult *r;
        int due, failed;

        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
            snprintf(errstr, errstr_size, "migration path too long in %s", dir);
            goto out;
        }
        if (!(sql = read_file(path, errstr, errstr_size))) goto out;
        const char *params[3] = {name, sql, strncmp(name, "R_", 2) == 0 ? "r" : "v"};
        r = PQexecParams(conn, SQL_DUE, 3, NULL, params, NULL, NULL, 0);
        failed = PQresultStatus(r) != PGRES_TUPLES_OK;
        due = !failed && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        PQclear(r);
        if (failed) {
            snprintf(errstr, errstr_size, "schema_migrations: %s", PQerrorMessage(conn));
            free(sql);
            goto out;
        }
        if (!due) {
            free(sql);
            continue;
        }
        if (vx_pg_exec(conn, "BEGIN", errstr, errstr_size)) {
            free(sql);
            goto out;
        }
        if (vx_pg_exec(conn, sql, errstr, errstr_size)) {
            char why[512];
            snprintf(why, sizeof(why), "%s", errstr);
            snprintf(errstr, errstr_size, "migration %s: %s", name, why);
            free(sql);
            PQclear(PQexec(conn, "ROLLBACK"));
            goto out;
        }
        r = PQexecParams(conn, SQL_RECORD, 3, NULL, params, NULL, NULL, 0);
        failed = PQresultStatus(r) != PGRES_COMMAND_OK;
        PQclear(r);
        free(sql);
        if (failed || vx_pg_exec(conn, "COMMIT", errstr, errstr_size)) {
            PQclear(PQexec(conn, "ROLLBACK"));
            snprintf(errstr, errstr_size, "migration %s: cannot record it", name);
            goto out;
        }
        applied++;
    }
    rc = applied;
out:
    for (int i = 0; i < nfiles; i++) free(files[i]);
    free(files);
    return rc;
}

int vx_pg_migrate(PGconn *conn, const char *dirs, char *errstr, size_t errstr_size) {
    static const char SQL_LOCK[] = "SELECT pg_advisory_lock(" MIGRATION_LOCK_ID ")";
    static const char SQL_UNLOCK[] = "SELECT pg_advisory_unlock(" MIGRATION_LOCK_ID ")";
    static const char SQL_TABLE[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                    " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());"
                                    " ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text";
    char dir[4096], ignore[64];
    int total = 0, rc = -1;

    if (vx_pg_exec(conn, SQL_LOCK, errstr, errstr_size)) return -1;
    if (vx_pg_exec(conn, SQL_TABLE, errstr, errstr_size)) goto out;
    for (const char *p = dirs; *p;) {
        size_t n = strcspn(p, ":");
        int applied;
        if (n >= sizeof(dir)) n = sizeof(dir) - 1;
        memcpy(dir, p, n);
        dir[n] = '\0';
        p += n + (p[n] == ':');
        if (!n) continue;
        if ((applied = migrate_dir(conn, dir, errstr, errstr_size)) < 0) goto out;
        total += applied;
    }
    rc = total;
out:
    vx_pg_exec(conn, SQL_UNLOCK, ignore, sizeof(ignore));
    return rc;
}
