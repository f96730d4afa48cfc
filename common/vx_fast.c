/* vx_fast: a service's fast paths, run as one pipeline of prepared statements. See vx_fast.h.
 *
 * Invariant: a call's steps are sent together and end with one sync, so they commit or roll back
 * together; the connection is out of pipeline mode whenever vx_fast_run returns with it usable. */
#include "vx_fast.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vx_pg.h"

#define NAME_MAX_LEN 64
#define MAX_STEPS 8 /* steps of a path */
#define MAX_ARGS 16  /* parameters of a step */

typedef struct {
    char name[NAME_MAX_LEN]; /* the prepared statement's name */
    char *sql;
    char **args; /* each a path into an entry, "c.items" */
    int nargs;
} step_t;

typedef struct {
    char *name;
    char **types;
    int ntypes;
    step_t *steps;
    int nsteps;
} path_t;

typedef struct {
    char *s;
    size_t len, cap;
} buf_t;

struct vx_fast_s {
    path_t *paths;
    int npaths;
    int prepared_pid;                 /* the backend on which every step is prepared; 0: none */
    buf_t bufs[MAX_STEPS][MAX_ARGS]; /* a run's array literals, step by step, reused from run to run */
};

/* Splits a comma-separated list into *out (owned, NULL-terminated copy); returns its length or -1. */
static int split(const char *s, char ***out) {
    int n = *s ? 1 : 0;
    char *copy, **v;

    for (const char *p = s; *p; p++) n += *p == ',';
    if (!(v = calloc((size_t)n + 1, sizeof(*v))) || !(copy = strdup(s))) {
        free(v);
        return -1;
    }
    for (int i = 0; i < n; i++) { /* v[0] owns the copy */
        v[i] = copy;
        copy += strcspn(copy, ",");
        if (*copy) *copy++ = '\0';
    }
    if (!n) free(copy);
    *out = v;
    return n;
}

static void strv_free(char **v) {
    if (v) free(v[0]);
    free(v);
}

void vx_fast_destroy(vx_fast_t *f) {
    if (!f) return;
    for (int p = 0; p < f->npaths; p++) {
        path_t *x = &f->paths[p];
        for (int s = 0; s < x->nsteps; s++) {
            free(x->steps[s].sql);
            strv_free(x->steps[s].args);
        }
        free(x->steps);
        free(x->name);
        strv_free(x->types);
    }
    free(f->paths);
    for (int s = 0; s < MAX_STEPS; s++)
        for (int a = 0; a < MAX_ARGS; a++) free(f->bufs[s][a].s);
    free(f);
}

/* A result of status PGRES_FATAL_ERROR with the connection's error message (PQmakeEmptyPGresult). */
static PGresult *failed(PGconn *db) { return PQmakeEmptyPGresult(db, PGRES_FATAL_ERROR); }

/* After the server forgot a statement (26000) or refused its cached plan (0A000), vx_fast_run has
 * every step prepared anew. */
PGresult *vx_fast_prepare(vx_fast_t *f, PGconn *db) {
    int pid = PQbackendPID(db);

    if (f->prepared_pid == pid) return NULL;
    for (int p = 0; p < f->npaths; p++)
        for (int s = 0; s < f->paths[p].nsteps; s++) {
            const step_t *st = &f->paths[p].steps[s];
            PGresult *r = vx_pg_prepare(db, st->name, st->sql, 0);
            if (r) return r;
        }
    f->prepared_pid = pid;
    return NULL;
}

/* Whether the last step of path p returns shape's columns, in order; names the first that differs. */
static int check_shape(const vx_fast_t *f, PGconn *db, int p, const PGresult *shape, char *errstr,
                       size_t errstr_size) {
    const path_t *x = &f->paths[p];
    PGresult *d = PQdescribePrepared(db, x->steps[x->nsteps - 1].name);
    int rc = -1;

    if (PQresultStatus(d) != PGRES_COMMAND_OK) {
        snprintf(errstr, errstr_size, "fast path %s: its last step cannot be described: %s", x->name,
                 PQresultErrorMessage(d));
    } else if (PQnfields(d) != PQnfields(shape)) {
        snprintf(errstr, errstr_size, "fast path %s returns %d columns where the apply statement returns %d", x->name,
                 PQnfields(d), PQnfields(shape));
    } else {
        rc = 0;
        for (int c = 0; c < PQnfields(d) && rc == 0; c++)
            if (strcmp(PQfname(d, c), PQfname(shape, c)) != 0) {
                snprintf(errstr, errstr_size, "fast path %s returns column %s where the apply statement returns %s",
                         x->name, PQfname(d, c), PQfname(shape, c));
                rc = -1;
            }
    }
    PQclear(d);
    return rc;
}

vx_fast_t *vx_fast_load(PGconn *db, const PGresult *shape, char *errstr, size_t errstr_size) {
    vx_fast_t *f = calloc(1, sizeof(*f));
    PGresult *r = NULL;
    int n;

    if (!f) goto oom;
    r = PQexec(db, "SELECT path, array_to_string(types, ','), array_to_string(args, ','), sql"
                   " FROM vx_fast_step ORDER BY path, step");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(errstr, errstr_size, "the fast paths cannot be read: %s", PQresultErrorMessage(r));
        goto err;
    }
    n = PQntuples(r);
    if (n && !(f->paths = calloc((size_t)n, sizeof(*f->paths)))) goto oom;
    for (int i = 0; i < n; i++) {
        path_t *x = f->npaths ? &f->paths[f->npaths - 1] : NULL;
        step_t *st;
        if (!x || strcmp(x->name, PQgetvalue(r, i, 0)) != 0) { /* a path's first step */
            x = &f->paths[f->npaths++];
            if (!(x->name = strdup(PQgetvalue(r, i, 0))) || !(x->steps = calloc((size_t)n, sizeof(*x->steps))) ||
                (x->ntypes = split(PQgetvalue(r, i, 1), &x->types)) < 0)
                goto oom;
        }
        if (x->nsteps == MAX_STEPS) {
            snprintf(errstr, errstr_size, "fast path %s has more than %d steps", x->name, MAX_STEPS);
            goto err;
        }
        st = &x->steps[x->nsteps];
        snprintf(st->name, sizeof(st->name), "vx_fast_%d_%d", f->npaths - 1, x->nsteps);
        x->nsteps++;
        if (!(st->sql = strdup(PQgetvalue(r, i, 3))) || (st->nargs = split(PQgetvalue(r, i, 2), &st->args)) < 0)
            goto oom;
        if (st->nargs > MAX_ARGS) {
            snprintf(errstr, errstr_size, "fast path %s: a step has more than %d parameters", x->name, MAX_ARGS);
            goto err;
        }
    }
    PQclear(r);
    if ((r = vx_fast_prepare(f, db))) {
        snprintf(errstr, errstr_size, "a fast path's step does not prepare: %s", PQresultErrorMessage(r));
        goto err;
    }
    for (int p = 0; p < f->npaths; p++)
        if (check_shape(f, db, p, shape, errstr, errstr_size)) goto err;
    return f;
oom:
    snprintf(errstr, errstr_size, "out of memory");
err:
    errstr[strcspn(errstr, "\n")] = '\0';
    PQclear(r);
    vx_fast_destroy(f);
    return NULL;
}

/* The path that takes entries of message type `type`, or -1. */
static int path_of(const vx_fast_t *f, const char *type) {
    for (int p = 0; f && type && p < f->npaths; p++)
        for (int t = 0; t < f->paths[p].ntypes; t++)
            if (strcmp(f->paths[p].types[t], type) == 0) return p;
    return -1;
}

const char *vx_fast_name(const vx_fast_t *f, int p) { return f->paths[p].name; }

/* ---- a run ----------------------------------------------------------------------------------------- */

static int put(buf_t *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *p;
        while (cap < b->len + n + 1) cap *= 2;
        if (!(p = realloc(b->s, cap))) return -1;
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
    return 0;
}

/* The value at `path` ("c.items") in entry e: borrowed, NULL when missing or JSON null. */
static json_object *at(json_object *e, const char *path) {
    char seg[64];

    while (e && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof(seg)) return NULL;
        memcpy(seg, path, n);
        seg[n] = '\0';
        if (!json_object_object_get_ex(e, seg, &e)) return NULL;
        path += n + (path[n] == '.');
    }
    return e;
}

int vx_fast_call_path(const vx_fast_t *f, json_object *const *entries, size_t n) {
    int path = n ? path_of(f, json_object_get_string(at(entries[0], "c.type"))) : -1;

    for (size_t i = 1; i < n && path >= 0; i++)
        if (path_of(f, json_object_get_string(at(entries[i], "c.type"))) != path) path = -1;
    return path;
}

/* A PostgreSQL array literal of each entry's value at path: {"v1",NULL,...}, with '"' and '\' escaped. */
static int array_of(buf_t *b, json_object *const *entries, size_t n, const char *path) {
    b->len = 0;
    if (put(b, "{", 1)) return -1;
    for (size_t i = 0; i < n; i++) {
        json_object *v = at(entries[i], path);
        const char *s;
        if (i && put(b, ",", 1)) return -1;
        if (!v) {
            if (put(b, "NULL", 4)) return -1;
            continue;
        }
        s = json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                      : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);
        if (put(b, "\"", 1)) return -1;
        for (size_t k; *s; s += k) {
            k = strcspn(s, "\"\\");
            if (put(b, s, k)) return -1;
            if (s[k] && (put(b, "\\", 1) || put(b, s + k, 1))) return -1;
            k += s[k] != '\0';
        }
        if (put(b, "\"", 1)) return -1;
    }
    return put(b, "}", 1);
}

/* Builds every step's arrays into bufs (their memory kept for the next run): 0, or -1 when out of
 * memory. */
static int arrays(const path_t *x, json_object *const *entries, size_t n, buf_t bufs[][MAX_ARGS]) {
    for (int s = 0; s < x->nsteps; s++)
        for (int a = 0; a < x->steps[s].nargs; a++)
            if (array_of(&bufs[s][a], entries, n, x->steps[s].args[a])) return -1;
    return 0;
}

PGresult *vx_fast_run(vx_fast_t *f, PGconn *db, int p, json_object *const *entries, size_t n) {
    const path_t *x = &f->paths[p];
    PGresult *r, *out = NULL;
    int sent = 0;

    if ((r = vx_fast_prepare(f, db))) return r;
    if (arrays(x, entries, n, f->bufs)) return failed(db);
    if (PQenterPipelineMode(db) != 1) return failed(db);
    for (; sent < x->nsteps; sent++) {
        const char *values[MAX_ARGS];
        const step_t *st = &x->steps[sent];
        for (int a = 0; a < st->nargs; a++) values[a] = f->bufs[sent][a].s;
        if (!PQsendQueryPrepared(db, st->name, st->nargs, values, NULL, NULL, 0)) break;
    }
    if (sent < x->nsteps || PQpipelineSync(db) != 1) {
        /* Never a sync after only some steps: it would commit them. Dropping the connection rolls
         * back whatever reached the server. */
        out = failed(db);
        PQreset(db);
        return out;
    }
    /* Each step gives one result and then NULL: its rows or its error, or PGRES_PIPELINE_ABORTED after
     * an earlier step failed; then the sync gives PGRES_PIPELINE_SYNC. A lost connection gives an error
     * and then NULLs. */
    for (int s = 0; s < sent; s++) {
        if (!(r = PQgetResult(db))) break;
        if (!out && (PQresultStatus(r) == PGRES_FATAL_ERROR ||
                     (s == x->nsteps - 1 && PQresultStatus(r) == PGRES_TUPLES_OK)))
            out = r;
        else
            PQclear(r);
        while ((r = PQgetResult(db))) PQclear(r);
    }
    if ((r = PQgetResult(db))) PQclear(r); /* the sync */
    if (PQexitPipelineMode(db) != 1 && PQstatus(db) == CONNECTION_OK) {
        PQclear(out); /* results left uncollected: the connection's state is unknown, start a new one */
        out = failed(db);
        PQreset(db);
    }
    if (!out) out = failed(db);
    if (vx_pg_unprepared(out)) f->prepared_pid = 0;
    return out;
}
