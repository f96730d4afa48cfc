/* vx_pg: PostgreSQL helpers shared by the services: connecting with patience, applying a
 * service's migrations exactly once, and telling transient failures from real ones.
 *
 * Migrations are the files NNN_name.sql of a list of folders (the shared ones first, then the
 * service's), applied in name order within a folder, each in its own transaction and recorded by
 * file name in schema_migrations, so names are unique across the folders. A versioned file
 * (NNN_name.sql: tables, indexes, data) is applied once and never edited afterwards. A repeatable
 * file (R_name.sql: CREATE OR REPLACE of functions) sorts after them and is applied again whenever
 * its content changes (its md5 is recorded): a function is changed by editing it in place, never
 * by copying its body into a new file. An advisory lock makes concurrent starts of several
 * instances apply each file once. */
#ifndef VX_PG_H
#define VX_PG_H

#include <libpq-fe.h>
#include <stddef.h>

/* Connects, retrying for up to wait_ms while the server is not (yet) reachable. pgoptions (may be
 * NULL) are server settings for the session ("-c lock_timeout=200"), added to any the conninfo has;
 * they stay across PQreset. Returns the connection (caller owns; PQfinish) or NULL with errstr. The
 * conninfo is never logged. Refused credentials (a wrong or missing password, no pg_hba.conf entry)
 * are not retried: errstr then starts with VX_PG_AUTH_FAILED and names the user, host, port and
 * database, never the password. Nor is a connection string that does not parse (libpq's message
 * about it is given without the parts it quotes, which may be the password). wait_ms 0: one try. */
#define VX_PG_AUTH_FAILED "PostgreSQL refused the credentials"
PGconn *vx_pg_connect(const char *conninfo, const char *pgoptions, int wait_ms, char *errstr, size_t errstr_size);

/* Applies the migrations of the ':'-separated folders `dirs` that schema_migrations does not list.
 * Returns the number applied, or -1 with errstr (the failing file's transaction is rolled back). */
int vx_pg_migrate(PGconn *conn, const char *dirs, char *errstr, size_t errstr_size);

/* Runs one parameterless statement that returns no rows. Returns 0 or -1 with errstr. */
int vx_pg_exec(PGconn *conn, const char *sql, char *errstr, size_t errstr_size);

/* Prepares statement `name` on conn, replacing one of that name the session has already (42P05: a
 * stale one, or a backend pid the server used again). NULL when prepared, or the failed result
 * (caller clears). Never inside a transaction block: a PREPARE that fails there aborts the block, and
 * so would the DEALLOCATE that follows. */
PGresult *vx_pg_prepare(PGconn *conn, const char *name, const char *sql, int nparams);

/* Whether res says the server forgot a prepared statement (26000) or refuses its cached plan (0A000:
 * "cached plan must not change result type", after a migration changed what it returns): the caller
 * prepares it again before the next try. */
int vx_pg_unprepared(const PGresult *res);

/* Whose fault a failed statement is, from its SQLSTATE: the one place that decides it.
 *   VX_PG_RETRY  the database's, not the statement's: the connection is gone (08), the server shuts
 *                down or restarts (57P0x), is read-only (25006), refuses the role (42501), is out of
 *                disk, memory or connections (53), a serialization failure or deadlock (40), a
 *                schema the code does not match (42: a migration rolled back), a system or internal
 *                error (58, XX), and any class not listed below. The same call is tried again after a
 *                backoff; nothing is dead-lettered and no offset moves.
 *   VX_PG_ENTRY  the statement's data: a data exception (22), a constraint (23, but 23505, a
 *                concurrent twin's unique key, retries), a cardinality or trigger-made violation
 *                (21, 27, 44), a routine's own error (2F, 39, P0: RAISE EXCEPTION), a program limit
 *                (54: a call too large). A call of several entries is split to find the one at fault.
 *   VX_PG_LOCK   a lock wait longer than lock_timeout (55P03): the entry at fault is set aside.
 * A NULL sqlstate (no result, the connection lost) is VX_PG_RETRY. */
typedef enum { VX_PG_RETRY, VX_PG_ENTRY, VX_PG_LOCK } vx_pg_fault_t;
vx_pg_fault_t vx_pg_fault(const char *sqlstate);

/* The same, for a failed result on conn (res may be NULL): VX_PG_RETRY whenever the connection is
 * not OK, whatever the result says. */
vx_pg_fault_t vx_pg_fault_of(PGconn *conn, const PGresult *res);

/* One word for a VX_PG_RETRY's cause, the label of valerix_apply_retries_total{reason}: connection,
 * serialization, deadlock, unique_violation, read_only, privileges, resources, schema, other. */
const char *vx_pg_retry_reason(PGconn *conn, const char *sqlstate);
extern const char *const vx_pg_retry_reasons[]; /* every word it may answer, NULL-terminated */

/* Reconnects a broken connection in place (PQreset). Returns 0 when the connection is usable. */
int vx_pg_ensure(PGconn *conn);

#endif
