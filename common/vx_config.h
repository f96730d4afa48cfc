/* vx_config: settings from environment variables, each with a default and a checked range.
 *
 * Every knob of every service is read through here at start-up, so a bad value stops the process
 * with a message naming the variable instead of running with a surprise. Kafka client properties
 * have their own pass-through in vx_kafka (KAFKA_*). */
#ifndef VX_CONFIG_H
#define VX_CONFIG_H

#include <stddef.h>

/* The variable's value, or def when unset or empty. Borrowed from the environment. */
const char *vx_cfg_str(const char *name, const char *def);

/* Parses an integer variable into *out (def when unset). Returns 0, or -1 with errstr filled when
 * the value is not an integer or lies outside [min, max]. */
int vx_cfg_int(const char *name, long long def, long long min, long long max, long long *out, char *errstr,
               size_t errstr_size);

/* Parses a number with an optional fraction (a probability, a ratio). */
int vx_cfg_double(const char *name, double def, double min, double max, double *out, char *errstr,
                  size_t errstr_size);

/* Splits "host:port" into host (copied into host[host_size]) and *port. Returns 0 or -1. */
int vx_cfg_addr(const char *addr, char *host, size_t host_size, int *port, char *errstr, size_t errstr_size);

#endif
