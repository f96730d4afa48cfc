/* vx_fast: a service's fast paths, as its database lists them in table vx_fast_step
 * (common/migrations/005_fast_steps.sql; each service's repeatable migration writes its own paths
 * next to its functions, so that the two change together).
 *
 * A path takes a call whose entries are all of the types it lists. Its steps are prepared statements
 * run in order in one libpq pipeline: one round trip, one transaction (the implicit one that ends at
 * the pipeline's sync, or the caller's transaction block). A step's parameters are text arrays of one
 * element per entry, in call order: the value at a path into the entry ("oid", "c.items"; a string as
 * it is, any other JSON value as JSON text, a missing one NULL). The last step returns the call's rows
 * with the columns of the service's apply statement, in its order.
 *
 * A path checks nothing its statements cannot: a step that finds the call is not its kind fails (a
 * unique violation, or RAISE SQLSTATE 'VX001' through vx_fail), the transaction rolls back as a
 * whole, and the caller applies the call with the general statement instead. Why: a PL/pgSQL function
 * pays an executor's start-up per statement, a subtransaction to fall back, and walks its one jsonb
 * argument in each statement; typed arrays in prepared statements pay for none of it (README,
 * "Second round").
 *
 * Threads: an instance is used by one thread at a time, with its one connection at a time. */
#ifndef VX_FAST_H
#define VX_FAST_H

#include <json-c/json.h>
#include <libpq-fe.h>
#include <stddef.h>

typedef struct vx_fast_s vx_fast_t;

/* Reads db's vx_fast_step and prepares every step on db, so a step that does not parse stops the
 * service at start. `shape` (borrowed) describes the service's apply statement: each path's last step
 * must return its columns, by name and in order. NULL with errstr on failure; a database without
 * paths gives an instance without paths. */
vx_fast_t *vx_fast_load(PGconn *db, const PGresult *shape, char *errstr, size_t errstr_size);
/* Accepts NULL. */
void vx_fast_destroy(vx_fast_t *f);

/* The path that takes a call of entries[0..n-1] (borrowed): the one whose types list the type of every
 * entry ("c.type"), or -1 when the entries' types are not all one path's. f may be NULL (no path). */
int vx_fast_call_path(const vx_fast_t *f, json_object *const *entries, size_t n);
/* Path p's name, for logs and metrics. */
const char *vx_fast_name(const vx_fast_t *f, int p);

/* Prepares every step on db where it is not prepared yet (vx_fast_run does it too; this is for a
 * caller that opens a transaction block next: a failed Parse there would abort the block). NULL, or
 * the failed step's result (caller clears). */
PGresult *vx_fast_prepare(vx_fast_t *f, PGconn *db);

/* Runs path p on db for entries[0..n-1] (borrowed), preparing its steps first on a backend that has
 * not seen them. Returns the last step's result (PGRES_TUPLES_OK), or the first failed step's, or one
 * naming what failed before any step ran; the caller clears it. On return db is out of pipeline mode,
 * or its connection is bad (PQreset clears it). */
PGresult *vx_fast_run(vx_fast_t *f, PGconn *db, int p, json_object *const *entries, size_t n);

#endif
