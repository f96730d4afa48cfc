/* vx_config: environment settings with defaults and ranges. See vx_config.h. */
#include "vx_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *vx_cfg_str(const char *name, const char *def) {
    const char *v = getenv(name);
    return (v && *v) ? v : def;
}

int vx_cfg_int(const char *name, long long def, long long min, long long max, long long *out, char *errstr,
               size_t errstr_size) {
    const char *v = getenv(name);
    char *end;
    long long n;

    if (!v || !*v) {
        *out = def;
        return 0;
    }
    errno = 0;
    n = strtoll(v, &end, 10);
    if (errno || end == v || *end) {
        snprintf(errstr, errstr_size, "%s=\"%s\" is not an integer", name, v);
        return -1;
    }
    if (n < min || n > max) {
        snprintf(errstr, errstr_size, "%s=%lld is outside %lld..%lld", name, n, min, max);
        return -1;
    }
    *out = n;
    return 0;
}

int vx_cfg_double(const char *name, double def, double min, double max, double *out, char *errstr,
                  size_t errstr_size) {
    const char *v = getenv(name);
    char *end;
    double d;

    if (!v || !*v) {
        *out = def;
        return 0;
    }
    errno = 0;
    d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= min && d <= max)) { /* NaN fails both */
        snprintf(errstr, errstr_size, "%s=\"%s\" is not a number from %g to %g", name, v, min, max);
        return -1;
    }
    *out = d;
    return 0;
}

int vx_cfg_addr(const char *addr, char *host, size_t host_size, int *port, char *errstr, size_t errstr_size) {
    const char *colon = strrchr(addr, ':');
    char *end;
    long p;

    if (!colon || colon == addr || (size_t)(colon - addr) >= host_size) {
        snprintf(errstr, errstr_size, "address \"%s\" is not host:port", addr);
        return -1;
    }
    p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535) {
        snprintf(errstr, errstr_size, "address \"%s\" has no valid port", addr);
        return -1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (int)p;
    return 0;
}
