/* unit_metrics.h: one series of this process's metrics (vx_metrics_render), for the unit tests that
 * check what a module counts. */
#ifndef UNIT_METRICS_H
#define UNIT_METRICS_H

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "vx_metrics.h"

/* The value of `series` (its name and labels, as rendered) in the process's metrics text, or `absent`
 * when the text has no such series. */
static inline double unit_metric(const char *series, double absent) {
    size_t len, n = strlen(series);
    char *text = vx_metrics_render(&len), *p;
    double v = absent;
    cr_assert_not_null(text);
    for (p = text; (p = strstr(p, series)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == ' ') {
            v = atof(p + n + 1);
            break;
        }
    free(text);
    return v;
}

#endif
