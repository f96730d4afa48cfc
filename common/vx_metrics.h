/* vx_metrics: the process's Prometheus metrics (text exposition format 0.0.4): counters, gauges and
 * histograms in families with fixed label names, plus the process_* metrics and valerix_build_info
 * that every Valerix process serves on GET /metrics.
 *
 * Invariant: memory is bounded. A family holds at most VX_METRIC_MAX_SERIES label combinations;
 * an update that would make one more is dropped and counted in valerix_metrics_dropped_total, so a
 * label fed from outside can never grow a process. Names follow Prometheus conventions: base units,
 * _total for counters, a label per state. Thread-safe: every function may be called from any thread. */
#ifndef VX_METRICS_H
#define VX_METRICS_H

#include <stddef.h>

#define VX_METRIC_MAX_SERIES 256
#define VX_METRIC_MAX_LABELS 4

typedef enum { VX_COUNTER, VX_GAUGE, VX_HISTOGRAM } vx_metric_type_t;
typedef struct vx_metric_s vx_metric_t;

/* Label values for an update, as many as the family has label names: VX_L("a", "b"). */
#define VX_L(...) ((const char *const[]){__VA_ARGS__})
#define VX_NOLABELS ((const char *const *)0)

/* Buckets for durations in seconds, from 0.5 ms to 10 s. */
extern const double vx_metric_seconds[];
extern const int vx_metric_nseconds;

/* Registers a family; it lives as long as the process. labels: comma-separated label names, or NULL
 * for none. buckets (histograms only, copied): ascending upper bounds, +Inf is implied. Registering a
 * name again returns the family registered first. Returns NULL only when out of memory. */
vx_metric_t *vx_metric_new(vx_metric_type_t type, const char *name, const char *help, const char *labels,
                           const double *buckets, int nbuckets);

/* Updates the series of `values` (borrowed; NULL when the family has no labels; a NULL value reads
 * as ""). A counter only grows: vx_metric_add with v >= 0, or vx_metric_set from a count that only
 * grows, kept elsewhere and copied at scrape time. */
void vx_metric_add(vx_metric_t *m, const char *const *values, double v);
void vx_metric_set(vx_metric_t *m, const char *const *values, double v);     /* gauges, copied counts */
void vx_metric_observe(vx_metric_t *m, const char *const *values, double v); /* histograms */
/* Forgets every series of a gauge family (before it is set anew, e.g. per-partition lag). */
void vx_metric_clear(vx_metric_t *m);

/* Runs fn(opaque) at the start of every render: the place to read what is measured at scrape time
 * (a queue's depth, rows waiting in a table). At most 8 per process. Returns 0 or -1. */
int vx_metrics_on_scrape(void (*fn)(void *opaque), void *opaque);
/* Stops calling fn(opaque); after it returns, no render is inside fn(opaque). */
void vx_metrics_off_scrape(void (*fn)(void *opaque), void *opaque);

/* Every family, then process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds,
 * process_start_time_seconds and valerix_build_info{service,version,commit}. Returns a new string
 * (the caller frees it) with its length in *len, or NULL when out of memory. */
char *vx_metrics_render(size_t *len);

/* The value of one series of the process's metrics, `series` as rendered (name and labels:
 * valerix_x_total{a="b"}), or `absent` when there is none (or no memory to render). For tools and
 * tests that read what the process counts; not for a hot path: it renders every family. */
double vx_metrics_value(const char *series, double absent);

/* The service name of valerix_build_info (a string literal; vx_log_init's is the same). */
void vx_metrics_service(const char *service);

#endif
