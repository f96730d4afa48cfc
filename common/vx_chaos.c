/* vx_chaos: crash points. See vx_chaos.h. */
#include "vx_chaos.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vx_log.h"

#define MAX_POINTS 16

static struct {
    char name[64];
    long nth;  /* crash at this hit */
    long hits; /* atomically counted */
} points[MAX_POINTS];
static int npoints;

int vx_chaos_init(char *errstr, unsigned long errstr_size) {
    const char *spec = getenv("VX_CRASH_POINTS");
    char buf[1024], *save = NULL;

    npoints = 0;
    if (!spec || !*spec) return 0;
    if ((size_t)snprintf(buf, sizeof(buf), "%s", spec) >= sizeof(buf)) {
        snprintf(errstr, errstr_size, "VX_CRASH_POINTS: longer than %zu bytes", sizeof(buf) - 1);
        return -1;
    }
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *at = strchr(tok, '@'), *end = NULL;
        long nth = 1;
        if (npoints == MAX_POINTS) {
            snprintf(errstr, errstr_size, "VX_CRASH_POINTS: at most %d points", MAX_POINTS);
            return -1;
        }
        if (at) {
            *at = '\0';
            nth = strtol(at + 1, &end, 10);
            if (*end || nth < 1) {
                snprintf(errstr, errstr_size, "VX_CRASH_POINTS: \"%s@%s\" needs a count of 1 or more", tok, at + 1);
                return -1;
            }
        }
        if (!*tok || strlen(tok) >= sizeof(points[0].name)) {
            snprintf(errstr, errstr_size, "VX_CRASH_POINTS: bad point name \"%s\"", tok);
            return -1;
        }
        snprintf(points[npoints].name, sizeof(points[0].name), "%s", tok);
        points[npoints].nth = nth;
        points[npoints].hits = 0;
        npoints++;
    }
    return 0;
}

void vx_chaos_point(const char *name) {
    for (int i = 0; i < npoints; i++) {
        if (strcmp(points[i].name, name) != 0) continue;
        if (__atomic_add_fetch(&points[i].hits, 1, __ATOMIC_RELAXED) == points[i].nth) {
            vx_log(VX_LOG_ERROR, "crash_point", "point", name, NULL);
            vx_log_flush();
            _exit(VX_CHAOS_EXIT_CODE);
        }
    }
}
