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

/* 1 when a failed statement is worth retrying on a fresh connection or a fresh transaction:
 * the connection is gone, the server is shutting down or refuses writes for now (read-only, out of
 * disk, memory or connections), or a serialization failure / deadlock. */
int vx_pg_transient(PGconn *conn, const PGresult *res);

/* Reconnects a broken connection in place (PQreset). Returns 0 when the connection is usable. */
int vx_pg_ensure(PGconn *conn);

#endif
