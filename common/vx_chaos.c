/* vx_chaos: crash points, the latency gremlin and their admin route. See vx_chaos.h.
 *
 * The settings live behind one mutex; `armed` and `gremlin_on` mirror "is there anything to do"
 * so that the hot paths (a point hit per batch, a gremlin verdict per command) take the lock only
 * when chaos is switched on. */
#include "vx_chaos.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vx_config.h"
#include "vx_log.h"

#define MAX_POINTS 16
#define MAX_DELAY_MS 600000
#define MAX_TOKEN 256

typedef struct {
    char name[64];
    long at;        /* crash at this hit, or 0 */
    double percent; /* else crash with this probability at every hit */
    long stall_ms;  /* > 0: when due, stall this long instead of exiting */
    long hits;
} point_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static point_t points[MAX_POINTS];
static int npoints;
static struct {
    long delay_ms, every, seen, delayed;
    double fraction;
} grem;
static int armed, gremlin_on; /* atomic mirrors of npoints > 0 and grem.delay_ms > 0 */
static char token[MAX_TOKEN + 1];
static unsigned rng; /* rand_r state, under mu */

static double uniform(void) { return (double)rand_r(&rng) / ((double)RAND_MAX + 1.0); }

/* s as an error message shows it: at most 64 bytes, anything but printable ASCII as '?' (the
 * message is a problem+json detail and a log line, and s came from outside). Returns buf. */
static const char *shown(const char *s, char buf[68]) {
    size_t i;
    for (i = 0; s[i] && i < 64; i++) buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    snprintf(buf + i, 68 - i, "%s", s[i] ? "..." : "");
    return buf;
}

/* Parses spec into out[]; returns the count, or -1 with errstr. */
static int parse_points(const char *spec, point_t *out, char *errstr, size_t errstr_size) {
    char buf[1024], *save = NULL;
    int n = 0;

    if (!spec || !*spec) return 0;
    if ((size_t)snprintf(buf, sizeof(buf), "%s", spec) >= sizeof(buf)) {
        snprintf(errstr, errstr_size, "crash points: longer than %zu bytes", sizeof(buf) - 1);
        return -1;
    }
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *mark, *end = NULL, *stall = strchr(tok, '~'), a[68], b[68];
        point_t p = {.at = 1};
        if (n == MAX_POINTS) {
            snprintf(errstr, errstr_size, "crash points: at most %d", MAX_POINTS);
            return -1;
        }
        if (stall) {
            *stall = '\0';
            errno = 0;
            p.stall_ms = strtol(stall + 1, &end, 10);
            if (errno || end == stall + 1 || *end || p.stall_ms < 1 || p.stall_ms > MAX_DELAY_MS) {
                snprintf(errstr, errstr_size, "crash point \"%s~%s\" needs a stall of 1 to %d ms", shown(tok, a),
                         shown(stall + 1, b), MAX_DELAY_MS);
                return -1;
            }
        }
        mark = strpbrk(tok, "@%");
        if (mark && *mark == '@') {
            *mark = '\0';
            errno = 0;
            p.at = strtol(mark + 1, &end, 10);
            if (errno || end == mark + 1 || *end || p.at < 1) {
                snprintf(errstr, errstr_size, "crash point \"%s@%s\" needs a count of 1 or more", shown(tok, a),
                         shown(mark + 1, b));
                return -1;
            }
        } else if (mark) {
            *mark = '\0';
            errno = 0;
            p.at = 0;
            p.percent = strtod(mark + 1, &end);
            if (errno || end == mark + 1 || *end || !(p.percent > 0 && p.percent <= 100)) {
                snprintf(errstr, errstr_size, "crash point \"%s%%%s\" needs a percentage in (0, 100]", shown(tok, a),
                         shown(mark + 1, b));
                return -1;
            }
        }
        if (!*tok || strlen(tok) >= sizeof(p.name) || strspn(tok, "abcdefghijklmnopqrstuvwxyz0123456789_") != strlen(tok)) {
            snprintf(errstr, errstr_size, "crash point: bad name \"%s\" (a-z, 0-9, _)", shown(tok, a));
            return -1;
        }
        snprintf(p.name, sizeof(p.name), "%s", tok);
        out[n++] = p;
    }
    return n;
}

int vx_chaos_set_points(const char *spec, char *errstr, size_t errstr_size) {
    point_t parsed[MAX_POINTS];
    int n = parse_points(spec, parsed, errstr, errstr_size);

    if (n < 0) return -1;
    pthread_mutex_lock(&mu);
    memcpy(points, parsed, (size_t)n * sizeof(*points));
    npoints = n;
    __atomic_store_n(&armed, n > 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&mu);
    return 0;
}

int vx_chaos_set_gremlin(long delay_ms, long every, double fraction, char *errstr, size_t errstr_size) {
    if (delay_ms < 0 || delay_ms > MAX_DELAY_MS || every < 0 || !(fraction >= 0 && fraction <= 1)) {
        snprintf(errstr, errstr_size, "gremlin: delay_ms 0..%d, every >= 0 and fraction 0..1", MAX_DELAY_MS);
        return -1;
    }
    pthread_mutex_lock(&mu);
    grem.delay_ms = delay_ms;
    grem.every = every;
    grem.fraction = fraction;
    grem.seen = 0;
    __atomic_store_n(&gremlin_on, delay_ms > 0 && (every > 0 || fraction > 0), __ATOMIC_RELEASE);
    pthread_mutex_unlock(&mu);
    return 0;
}

int vx_chaos_init(char *errstr, size_t errstr_size) {
    long long delay, every;
    double fraction;
    const char *tok = getenv("VX_CHAOS_TOKEN");

    rng = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    if (tok && strlen(tok) > MAX_TOKEN) {
        snprintf(errstr, errstr_size, "VX_CHAOS_TOKEN: longer than %d bytes", MAX_TOKEN);
        return -1;
    }
    snprintf(token, sizeof(token), "%s", tok ? tok : "");
    if (vx_chaos_set_points(getenv("VX_CRASH_POINTS"), errstr, errstr_size)) {
        char why[256];
        snprintf(why, sizeof(why), "%s", errstr);
        snprintf(errstr, errstr_size, "VX_CRASH_POINTS: %s", why);
        return -1;
    }
    if (vx_cfg_int("VX_GREMLIN_DELAY_MS", 0, 0, MAX_DELAY_MS, &delay, errstr, errstr_size) ||
        vx_cfg_int("VX_GREMLIN_EVERY", 0, 0, 1LL << 40, &every, errstr, errstr_size) ||
        vx_cfg_double("VX_GREMLIN_FRACTION", 0, 0, 1, &fraction, errstr, errstr_size))
        return -1;
    return vx_chaos_set_gremlin((long)delay, (long)every, fraction, errstr, errstr_size);
}

void vx_chaos_point(const char *name) {
    int die = 0;
    long stall = 0;

    if (!__atomic_load_n(&armed, __ATOMIC_ACQUIRE)) return;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < npoints && !die; i++) {
        if (strcmp(points[i].name, name) != 0) continue;
        points[i].hits++;
        die = points[i].at ? points[i].hits == points[i].at : uniform() * 100 < points[i].percent;
        stall = points[i].stall_ms;
    }
    pthread_mutex_unlock(&mu);
    if (die && stall) {
        char ms[24];
        snprintf(ms, sizeof(ms), "%ld", stall);
        vx_log(VX_LOG_WARN, "stall_point", "point", name, "#stall_ms", ms, NULL);
        vx_log_flush();
        usleep((useconds_t)stall * 1000); /* a wedged loop, as a lock or a hung call would make it */
        return;
    }
    if (die) {
        vx_log(VX_LOG_ERROR, "crash_point", "point", name, NULL);
        vx_log_flush();
        _exit(VX_CHAOS_EXIT_CODE);
    }
}

int vx_chaos_armed(const char *name) {
    int found = 0;

    if (!__atomic_load_n(&armed, __ATOMIC_ACQUIRE)) return 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < npoints && !found; i++) found = strcmp(points[i].name, name) == 0;
    pthread_mutex_unlock(&mu);
    return found;
}

long vx_chaos_gremlin(void) {
    long d = 0;

    if (!__atomic_load_n(&gremlin_on, __ATOMIC_ACQUIRE)) return 0;
    pthread_mutex_lock(&mu);
    grem.seen++;
    if (grem.every ? grem.seen % grem.every == 0 : uniform() < grem.fraction) {
        d = grem.delay_ms;
        grem.delayed++;
    }
    pthread_mutex_unlock(&mu);
    return d;
}

json_object *vx_chaos_delay_headers(long delay_ms) {
    json_object *h;
    char ms[24];

    if (!delay_ms) return NULL;
    h = json_object_new_object();
    snprintf(ms, sizeof(ms), "%ld", delay_ms);
    json_object_object_add(h, VX_CHAOS_DELAY_HEADER, json_object_new_string(ms));
    return h;
}

json_object *vx_chaos_state(void) {
    json_object *st = json_object_new_object(), *pts = json_object_new_array(), *g = json_object_new_object();

    pthread_mutex_lock(&mu);
    for (int i = 0; i < npoints; i++) {
        json_object *p = json_object_new_object();
        json_object_object_add(p, "point", json_object_new_string(points[i].name));
        if (points[i].at)
            json_object_object_add(p, "at", json_object_new_int64(points[i].at));
        else
            json_object_object_add(p, "percent", json_object_new_double(points[i].percent));
        if (points[i].stall_ms) json_object_object_add(p, "stall_ms", json_object_new_int64(points[i].stall_ms));
        json_object_object_add(p, "hits", json_object_new_int64(points[i].hits));
        json_object_array_add(pts, p);
    }
    json_object_object_add(g, "delay_ms", json_object_new_int64(grem.delay_ms));
    json_object_object_add(g, "every", json_object_new_int64(grem.every));
    json_object_object_add(g, "fraction", json_object_new_double(grem.fraction));
    json_object_object_add(g, "delayed", json_object_new_int64(grem.delayed));
    pthread_mutex_unlock(&mu);
    json_object_object_add(st, "crash_points", pts);
    json_object_object_add(st, "gremlin", g);
    json_object_object_add(st, "admin", json_object_new_boolean(token[0] != '\0'));
    return st;
}

void vx_chaos_counts(long long *delayed, int *points_armed) {
    pthread_mutex_lock(&mu);
    *delayed = grem.delayed;
    *points_armed = npoints;
    pthread_mutex_unlock(&mu);
}

/* ---- the admin route's part (vx_http_chaos_admin answers it) ----------------------------------- */

int vx_chaos_admin_enabled(void) { return token[0] != '\0'; }

/* Compares in time independent of where the strings differ (the token is a secret). */
int vx_chaos_token_ok(const char *bearer) {
    const char *b = token;
    size_t la = strlen(bearer), lb = strlen(b);
    unsigned char d = (unsigned char)(la != lb || !lb);
    for (size_t i = 0; i < la; i++) d |= (unsigned char)(bearer[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0;
}

/* Reads a member that must be a number (an integer when whole): 1 when present, 0 when absent,
 * -1 when of another type. */
static int get_num(json_object *o, const char *k, int whole, double *v) {
    json_object *x;
    if (!json_object_object_get_ex(o, k, &x)) return 0;
    if (!json_object_is_type(x, json_type_int) && !(!whole && json_object_is_type(x, json_type_double))) return -1;
    *v = json_object_get_double(x);
    return 1;
}

/* Applies the body; returns NULL, or what is wrong with it (in err). */
static const char *apply(json_object *body, char *err, size_t err_size) {
    json_object *cp = NULL, *g = NULL;
    double delay = 0, every = 0, fraction = 0;

    if (!json_object_is_type(body, json_type_object)) return "the body must be a JSON object";
    json_object_object_foreach(body, key, val) {
        (void)val;
        if (strcmp(key, "crash_points") != 0 && strcmp(key, "gremlin") != 0) {
            char a[68];
            snprintf(err, err_size, "unknown member \"%s\" (crash_points, gremlin)", shown(key, a));
            return err;
        }
    }
    if (json_object_object_get_ex(body, "crash_points", &cp) && !json_object_is_type(cp, json_type_string))
        return "crash_points must be a string such as \"before_commit@3,mid_batch%1\"";
    if (json_object_object_get_ex(body, "gremlin", &g)) {
        if (!json_object_is_type(g, json_type_object)) return "gremlin must be an object";
        pthread_mutex_lock(&mu);
        delay = (double)grem.delay_ms;
        every = (double)grem.every;
        fraction = grem.fraction;
        pthread_mutex_unlock(&mu);
        if (get_num(g, "delay_ms", 1, &delay) < 0 || get_num(g, "every", 1, &every) < 0 ||
            get_num(g, "fraction", 0, &fraction) < 0)
            return "gremlin: delay_ms and every must be integers, fraction a number";
        if (delay < 0 || delay > MAX_DELAY_MS || every < 0 || every > 1e12) {
            snprintf(err, err_size, "gremlin: delay_ms 0..%d, every >= 0 and fraction 0..1", MAX_DELAY_MS);
            return err;
        }
    }
    /* Both are checked before either changes: a bad request changes nothing. */
    if (cp) {
        point_t probe[MAX_POINTS];
        if (parse_points(json_object_get_string(cp), probe, err, err_size) < 0) return err;
    }
    if (g && vx_chaos_set_gremlin((long)delay, (long)every, fraction, err, err_size)) return err;
    if (cp && vx_chaos_set_points(json_object_get_string(cp), err, err_size)) return err;
    return NULL;
}

int vx_chaos_apply_json(const char *text, size_t len, char *errstr, size_t errstr_size) {
    json_tokener *tok = json_tokener_new();
    json_object *body = tok ? json_tokener_parse_ex(tok, text ? text : "", (int)len) : NULL;
    const char *bad;

    if (!tok || json_tokener_get_error(tok) != json_tokener_success || json_tokener_get_parse_end(tok) != len)
        bad = "the body is not one JSON object";
    else
        bad = apply(body, errstr, errstr_size);
    if (bad && bad != errstr) snprintf(errstr, errstr_size, "%s", bad);
    json_tokener_free(tok);
    json_object_put(body);
    return bad ? -1 : 0;
}
