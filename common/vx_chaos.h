/* vx_chaos: fault injection built into the services, off unless configured. It exists so that a
 * soak can prove that failures cost latency, never correctness.
 *
 * Crash points are named places in the code (vx_chaos_point("before_commit")) where the process
 * dies abruptly, as a kill -9 would: _exit(70), after one log line {"event":"crash_point",...}.
 *   VX_CRASH_POINTS="name[@N|%P][~MS],..."   name@N: at the Nth hit of the point in this process's life
 *                                        (name alone: the first); name%P: with probability P percent
 *                                        at every hit (0 < P <= 100); ~MS: when due, the point stalls
 *                                        for MS milliseconds instead of exiting (a wedged loop).
 * The points: before_commit, after_commit_before_publish, mid_batch (half of a batch's outbox rows
 * produced), after_publish_before_offset_commit (inventory-svc, order-svc), and
 * after_produce_before_reply (gateway).
 *
 * The latency gremlin delays the processing of chosen commands (inventory-svc, order-svc):
 *   VX_GREMLIN_DELAY_MS  [0 = off]  how long
 *   VX_GREMLIN_EVERY     [0]        every Nth command (deterministic), or else
 *   VX_GREMLIN_FRACTION  [0]        a random fraction of them (0..1)
 * What a delayed command produces carries the Kafka header chaos-delay-ms.
 *
 * Both change at runtime through POST /admin/chaos, allowed only with "Authorization: Bearer
 * $VX_CHAOS_TOKEN"; without VX_CHAOS_TOKEN the route does not exist. The route is the HTTP layer's
 * (vx_http_chaos_admin): this module only holds the mechanism and its settings, and depends on
 * nothing above it. GET /health shows the state (vx_chaos_state).
 *
 * Thread safety: every function may be called from any thread. An unarmed point and an idle
 * gremlin cost one atomic load. */
#ifndef VX_CHAOS_H
#define VX_CHAOS_H

#include <json-c/json.h>
#include <stddef.h>


#define VX_CHAOS_EXIT_CODE 70
#define VX_CHAOS_DELAY_HEADER "chaos-delay-ms"

/* Reads VX_CRASH_POINTS, VX_GREMLIN_* and VX_CHAOS_TOKEN. Returns 0, or -1 with errstr on a
 * malformed value. */
int vx_chaos_init(char *errstr, size_t errstr_size);

/* Replaces every crash point with those of spec (VX_CRASH_POINTS syntax; "" disarms them all). On
 * a malformed spec returns -1 with errstr and changes nothing. */
int vx_chaos_set_points(const char *spec, char *errstr, size_t errstr_size);
/* Replaces the gremlin's settings (delay_ms 0 switches it off). Returns -1 with errstr when out of
 * range (delay_ms 0..600000, every >= 0, fraction 0..1). */
int vx_chaos_set_gremlin(long delay_ms, long every, double fraction, char *errstr, size_t errstr_size);

/* A crash point: returns unless armed and due. */
void vx_chaos_point(const char *name);
/* Whether point `name` is armed now (a caller may take a slower path that has room for it). */
int vx_chaos_armed(const char *name);

/* The gremlin's verdict on one more command: the delay in milliseconds, 0 when not delayed. */
long vx_chaos_gremlin(void);
/* {"chaos-delay-ms": "<delay_ms>"}: the headers of what a delayed command produces (a new object,
 * the caller's), or NULL when delay_ms is 0. */
json_object *vx_chaos_delay_headers(long delay_ms);

/* {"crash_points":[{"point","at"|"percent","hits"}...],"gremlin":{"delay_ms","every","fraction",
 * "delayed"},"admin":bool}: a new object, the caller's. */
json_object *vx_chaos_state(void);

/* For the metrics: commands the gremlin held back so far, and crash points armed now. */
void vx_chaos_counts(long long *delayed, int *points_armed);

/* Whether VX_CHAOS_TOKEN is set (the admin route exists), and whether bearer is it (compared in
 * constant time). */
int vx_chaos_admin_enabled(void);
int vx_chaos_token_ok(const char *bearer);
/* Applies settings {"crash_points": spec, "gremlin": {"delay_ms", "every", "fraction"}} (each member
 * optional, absent ones unchanged) from JSON text. Returns 0, or -1 with errstr and nothing changed. */
int vx_chaos_apply_json(const char *text, size_t len, char *errstr, size_t errstr_size);

#endif
