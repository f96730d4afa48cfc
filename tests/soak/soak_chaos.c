/* soak_chaos: the chaos driver. At random intervals around KILL_EVERY it kills -9 a component
 * (deploy/stack.sh kill), keeps it down a moment and starts it again (deploy/stack.sh start, which
 * waits until it is ready). Victims are dealt from a shuffled deck of the five components, so every
 * one gets its share; now and then two go down together. Between kills it watches every component:
 * one that exited by itself (a crash point's _exit(70), or worse) is counted and started again.
 *
 * Invariant: only this driver (and, once it is stopped, the main thread) starts or kills anything,
 * one stack.sh at a time (stack.sh serialises on a lock anyway), so a pid that vanished was not ours
 * to vanish: it is an exit, counted as a crash-point hit when the service's log says so. */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "soak.h"

extern char **environ;

const char *const soak_comp_names[SOAK_NCOMP] = {"postgres", "kafka", "inventory-svc", "order-svc", "gateway"};

#define START_ATTEMPTS 5
#define LAST_LINES 3

static const soak_opts_t *opts;
static pthread_t driver_thread;
static int driver_started, driver_failed;
static volatile int stop_kills, stop_all;
static int armed; /* components are started with the chaos settings in their environment */
static char driver_err[SOAK_ERR];
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;
static soak_chaos_stats_t st;
static long log_offset[SOAK_NCOMP];
static soak_chaos_event_t *events; /* under stats_lock */
static size_t nevents, events_cap;

void soak_chaos_stats(soak_chaos_stats_t *s) {
    pthread_mutex_lock(&stats_lock);
    *s = st;
    pthread_mutex_unlock(&stats_lock);
}

static void count(long *field, long n) {
    pthread_mutex_lock(&stats_lock);
    *field += n;
    pthread_mutex_unlock(&stats_lock);
}

static int is_service(int comp) { return comp >= SOAK_INVENTORY; }

/* Notes a kill or an exit now (an exit when it is noticed: within the driver's 200 ms turn). */
static void note_event(int comp, int exit) {
    pthread_mutex_lock(&stats_lock);
    if (nevents == events_cap) {
        size_t cap = events_cap ? events_cap * 2 : 256;
        soak_chaos_event_t *e = realloc(events, cap * sizeof(*e));
        if (e) events = e, events_cap = cap;
    }
    if (nevents < events_cap) events[nevents++] = (soak_chaos_event_t){.at = vt_real_ms(), .comp = comp, .exit = exit};
    pthread_mutex_unlock(&stats_lock);
}

soak_chaos_event_t *soak_chaos_events(size_t *n) {
    soak_chaos_event_t *copy = NULL;
    pthread_mutex_lock(&stats_lock);
    *n = 0;
    if (nevents && (copy = malloc(nevents * sizeof(*copy)))) {
        memcpy(copy, events, nevents * sizeof(*copy));
        *n = nevents;
    }
    pthread_mutex_unlock(&stats_lock);
    return copy;
}

/* ---- deploy/stack.sh ------------------------------------------------------------------------------- */

/* environ plus the chaos settings (or their "off" values) for the services stack.sh starts. */
static char **stack_env(int chaos_env, char *extra[4]) {
    size_t n = 0, k = 0;
    char **env;

    while (environ[n]) n++;
    if (!(env = calloc(n + 5, sizeof(*env)))) return NULL;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "VX_CRASH_POINTS=", 16) != 0 && strncmp(environ[i], "VX_GREMLIN_", 11) != 0)
            env[k++] = environ[i];
    if (asprintf(&extra[0], "VX_CRASH_POINTS=%s", chaos_env ? opts->crash_points : "") < 0) extra[0] = NULL;
    if (asprintf(&extra[1], "VX_GREMLIN_DELAY_MS=%s", chaos_env ? opts->gremlin_delay_ms : "0") < 0) extra[1] = NULL;
    if (asprintf(&extra[2], "VX_GREMLIN_EVERY=%s", chaos_env ? opts->gremlin_every : "0") < 0) extra[2] = NULL;
    if (asprintf(&extra[3], "VX_GREMLIN_FRACTION=%s", chaos_env ? opts->gremlin_fraction : "0") < 0) extra[3] = NULL;
    for (int i = 0; i < 4; i++)
        if (extra[i]) env[k++] = extra[i];
    env[k] = NULL;
    return env;
}

int soak_stack(const soak_opts_t *o, const char *action, const char *name, int chaos_env, char *err, size_t errsz) {
    char script[1024], logpath[1024], *extra[4] = {0}, **env;
    char *argv[] = {script, (char *)action, (char *)name, NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status = 0, rc;

    opts = o;
    snprintf(script, sizeof(script), "%s/deploy/stack.sh", o->repo);
    snprintf(logpath, sizeof(logpath), "%s/soak-stack.log", o->data_dir);
    if (!(env = stack_env(chaos_env, extra))) {
        snprintf(err, errsz, "out of memory");
        return -1;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3); /* our sockets must not live on in the services */
    rc = posix_spawn(&pid, script, &fa, NULL, argv, env);
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 4; i++) free(extra[i]);
    free(env);
    if (rc) {
        snprintf(err, errsz, "cannot run %s: %s", script, strerror(rc));
        return -1;
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return 0;
    snprintf(err, errsz, "deploy/stack.sh %s %s failed (exit %d); see %s", action, name,
             WIFEXITED(status) ? WEXITSTATUS(status) : -1, logpath);
    return -1;
}

/* ---- is it running? -------------------------------------------------------------------------------- */

/* The pid in the first line of path, if that process runs (not a zombie) and its command line has
 * pattern (a recycled pid is not ours). */
static int pid_alive(const char *path, const char *pattern) {
    char buf[4096], proc[64];
    FILE *f = fopen(path, "r");
    long pid = 0;
    size_t n;
    int ok = 0;

    if (!f) return 0;
    if (fscanf(f, "%ld", &pid) != 1) pid = 0;
    fclose(f);
    if (pid <= 0) return 0;
    snprintf(proc, sizeof(proc), "/proc/%ld/stat", pid);
    if ((f = fopen(proc, "r"))) {
        ok = fgets(buf, sizeof(buf), f) && strrchr(buf, ')') && strrchr(buf, ')')[2] != 'Z';
        fclose(f);
    }
    snprintf(proc, sizeof(proc), "/proc/%ld/cmdline", pid);
    if (ok && (f = fopen(proc, "r"))) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        for (size_t i = 0; i < n; i++)
            if (!buf[i]) buf[i] = ' ';
        buf[n] = '\0';
        ok = strstr(buf, pattern) != NULL;
    }
    return ok;
}

int soak_chaos_alive(const soak_opts_t *o, int comp) {
    char path[1024], pattern[1024];

    if (comp == SOAK_POSTGRES) {
        snprintf(path, sizeof(path), "%s/pg/data/postmaster.pid", o->data_dir);
        snprintf(pattern, sizeof(pattern), "%s/pg/data", o->data_dir);
    } else {
        snprintf(path, sizeof(path), "%s/run/%s.pid", o->data_dir, comp == SOAK_KAFKA ? "kafka" : soak_comp_names[comp]);
        snprintf(pattern, sizeof(pattern), "%s", comp == SOAK_KAFKA ? "kafka.Kafka" : soak_comp_names[comp]);
    }
    return pid_alive(path, pattern);
}

/* ---- crash points, from the services' logs --------------------------------------------------------- */

static void count_point(const char *line) {
    const char *p = strstr(line, "\"point\":\"");
    char name[48];
    size_t n;
    int i;

    if (!p) return;
    p += 9;
    n = strcspn(p, "\"");
    snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) - 1 ? n : sizeof(name) - 1), p);
    pthread_mutex_lock(&stats_lock);
    for (i = 0; i < st.npoints && strcmp(st.point[i], name) != 0; i++) {}
    if (i < 16) {
        if (i == st.npoints) snprintf(st.point[st.npoints++], sizeof(st.point[0]), "%s", name);
        st.point_hits[i]++;
    }
    pthread_mutex_unlock(&stats_lock);
}

/* Reads what the service logged since the last scan; returns the crash-point lines found. A log
 * smaller than before was rotated by stack.sh at a start (always after a scan): read it whole. */
static int scan_log(int comp) {
    char path[1024], *line = NULL;
    size_t cap = 0;
    ssize_t n;
    struct stat sb;
    int found = 0;
    FILE *f;

    snprintf(path, sizeof(path), "%s/log/%s.log", opts->data_dir, soak_comp_names[comp]);
    if (!is_service(comp) || stat(path, &sb) || !(f = fopen(path, "r"))) return 0;
    if (sb.st_size < log_offset[comp]) log_offset[comp] = 0;
    fseek(f, log_offset[comp], SEEK_SET);
    while ((n = getline(&line, &cap, f)) > 0 && line[n - 1] == '\n') { /* a line still being written waits */
        log_offset[comp] += n;
        if (strstr(line, "\"crash_point\"") && (strstr(line, "\"msg\":\"crash_point\"") || strstr(line, "\"event\":\"crash_point\""))) {
            count_point(line);
            found++;
        }
    }
    free(line);
    fclose(f);
    return found;
}

void soak_chaos_scan_logs(const soak_opts_t *o) {
    opts = o;
    for (int c = SOAK_INVENTORY; c < SOAK_NCOMP; c++) scan_log(c);
}

/* The last lines of a component's log, for an exit nobody asked for. */
static void show_tail(int comp) {
    char path[1024], ring[LAST_LINES][320], line[4096];
    FILE *f;
    int n = 0;

    snprintf(path, sizeof(path), "%s/log/%s.log", opts->data_dir, soak_comp_names[comp]);
    if (!(f = fopen(path, "r"))) return;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        snprintf(ring[n++ % LAST_LINES], sizeof(ring[0]), "%.300s", line);
    }
    fclose(f);
    for (int i = n > LAST_LINES ? n - LAST_LINES : 0; i < n; i++) printf("    %s\n", ring[i % LAST_LINES]);
}

/* ---- kill, start, notice ------------------------------------------------------------------------- */

/* Starts comp (it is down), with attempts: a crash point may fire while it starts. */
static int start(int comp, char *err, size_t errsz) {
    for (int attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
        int crashed;
        scan_log(comp); /* before stack.sh may rotate the log */
        if (soak_stack(opts, "start", soak_comp_names[comp], armed, err, errsz) == 0) {
            count(&st.restarts[comp], 1);
            return 0;
        }
        crashed = scan_log(comp);
        if (crashed) count(&st.crash_exits[comp], crashed);
        note_event(comp, 1);
        soak_say("%s did not start (attempt %d of %d%s): %s", soak_comp_names[comp], attempt, START_ATTEMPTS,
                 crashed ? ", a crash point fired" : "", err);
        show_tail(comp); /* what CI prints is all one sees of a failed run: say why here */
        vt_sleep_ms(1000);
    }
    return -1;
}

/* A component found down that nobody killed: counted, reported, started again. */
static int exited(int comp, char *err, size_t errsz) {
    int crashed = scan_log(comp);
    note_event(comp, 1);
    if (crashed) {
        count(&st.crash_exits[comp], 1);
    } else {
        count(&st.other_exits[comp], 1);
        soak_say("%s exited and its log names no crash point; its last lines:", soak_comp_names[comp]);
        show_tail(comp);
    }
    return start(comp, err, errsz);
}

static int restart_exited(char *err, size_t errsz) {
    for (int c = 0; c < SOAK_NCOMP; c++)
        if (!soak_chaos_alive(opts, c) && exited(c, err, errsz)) return -1;
    return 0;
}

static int deck[SOAK_NCOMP], deck_left;

/* The next victim from a shuffled deck of the components that may be killed. */
static int deal(unsigned *rng) {
    if (!deck_left) {
        for (int i = 0; i < SOAK_NCOMP; i++)
            if (opts->components >> i & 1) deck[deck_left++] = i;
        for (int i = deck_left - 1; i > 0; i--) {
            int j = (int)(soak_rand(rng) % (unsigned)(i + 1)), t = deck[i];
            deck[i] = deck[j];
            deck[j] = t;
        }
    }
    return deck[--deck_left];
}

/* Kills one component, or two at once now and then, keeps them down a moment, starts them again in
 * dependency order. */
static int kill_round(unsigned *rng, char *err, size_t errsz) {
    int v[2], n = 1;

    v[0] = deal(rng);
    if (soak_uniform(rng) * 100 < opts->double_kill_pct) {
        v[1] = deal(rng);
        if (v[1] != v[0])
            n = 2;
        else
            deck[deck_left++] = v[1]; /* a fresh deck dealt the same one: it keeps its turn */
    }
    if (n == 2 && v[1] < v[0]) {
        int t = v[0];
        v[0] = v[1];
        v[1] = t;
    }
    /* A victim that exited by itself is started again before anything is killed: started while the
       other victim (PostgreSQL, say) is down, it would wait for it in vain. */
    for (int i = 0; i < n; i++)
        if (!soak_chaos_alive(opts, v[i]) && exited(v[i], err, errsz)) return -1;
    for (int i = 0; i < n; i++) {
        if (soak_stack(opts, "kill", soak_comp_names[v[i]], armed, err, errsz)) return -1;
        note_event(v[i], 0);
        count(&st.kills[v[i]], 1);
        count(&st.total_kills, 1);
    }
    if (n == 2) count(&st.double_kills, 1);
    soak_say("killed %s%s%s", soak_comp_names[v[0]], n == 2 ? " and " : "", n == 2 ? soak_comp_names[v[1]] : "");
    vt_sleep_ms((long)(soak_uniform(rng) * (double)opts->down_max_ms));
    for (int i = 0; i < n; i++)
        if (start(v[i], err, errsz)) return -1;
    return 0;
}

static int64_t next_kill_at(int64_t from, unsigned *rng) {
    return from + (int64_t)((0.5 + soak_uniform(rng)) * (double)opts->kill_every_s * 1000.0);
}

static void *driver(void *arg) {
    unsigned rng = opts->seed ^ 0xC4A05u;
    int64_t next = next_kill_at(vt_mono_ms(), &rng);
    (void)arg;

    while (!stop_all) {
        if (restart_exited(driver_err, sizeof(driver_err))) goto fail;
        if (!stop_kills && vt_mono_ms() >= next) {
            int64_t t0 = vt_mono_ms();
            if (kill_round(&rng, driver_err, sizeof(driver_err))) goto fail;
            next = next_kill_at(t0, &rng);
        }
        vt_sleep_ms(200);
    }
    return NULL;
fail:
    __atomic_store_n(&driver_failed, 1, __ATOMIC_RELEASE);
    soak_say("chaos driver: %s", driver_err);
    return NULL;
}

int soak_chaos_start(const soak_opts_t *o, char *err, size_t errsz) {
    opts = o;
    for (int c = SOAK_INVENTORY; c < SOAK_NCOMP; c++) scan_log(c); /* what happened before the soak is not ours */
    pthread_mutex_lock(&stats_lock);
    memset(&st, 0, sizeof(st));
    nevents = 0;
    pthread_mutex_unlock(&stats_lock);
    if (!o->components) return 0; /* SOAK_COMPONENTS=none: whoever runs the soak brings the faults */
    if (pthread_create(&driver_thread, NULL, driver, NULL)) {
        snprintf(err, errsz, "cannot start the chaos driver thread");
        return -1;
    }
    driver_started = 1;
    return 0;
}

void soak_chaos_stop_kills(void) { stop_kills = 1; }

int soak_chaos_failed(void) { return __atomic_load_n(&driver_failed, __ATOMIC_ACQUIRE); }

int soak_chaos_stop(char *err, size_t errsz) {
    stop_kills = stop_all = 1;
    if (driver_started) pthread_join(driver_thread, NULL);
    driver_started = 0;
    if (driver_failed) {
        snprintf(err, errsz, "the chaos driver failed: %s", driver_err);
        return -1;
    }
    return 0;
}

int soak_chaos_ensure_up(const soak_opts_t *o, char *err, size_t errsz) {
    opts = o;
    return restart_exited(err, errsz);
}

/* ---- switching the crash points and the gremlin on and off ---------------------------------------- */

static const char *service_addr(int comp) {
    return comp == SOAK_INVENTORY ? opts->inventory_http : comp == SOAK_ORDERS ? opts->orders_http : opts->gateway;
}

/* The number of crash points /health says are armed, or -1 when it does not say. */
static int health_points(int comp) {
    char resp[8192];
    json_object *h, *c, *p;
    int n = -1;

    if (soak_http_get(service_addr(comp), "/health", resp, sizeof(resp)) != 200 || !(h = json_tokener_parse(resp))) return -1;
    if (json_object_object_get_ex(h, "chaos", &c) && json_object_object_get_ex(c, "crash_points", &p) &&
        json_object_is_type(p, json_type_array))
        n = (int)json_object_array_length(p);
    json_object_put(h);
    return n;
}

static int arm_service(int comp, int on, char *err, size_t errsz) {
    char body[1024], resp[4096];
    int code, want = on && opts->crash_points[0];

    snprintf(body, sizeof(body), "{\"crash_points\":\"%s\",\"gremlin\":{\"delay_ms\":%s,\"every\":%s,\"fraction\":%s}}",
             on ? opts->crash_points : "", on ? opts->gremlin_delay_ms : "0", on ? opts->gremlin_every : "0",
             on ? opts->gremlin_fraction : "0");
    code = opts->chaos_token[0] ? soak_http_admin(service_addr(comp), "/admin/chaos", opts->chaos_token, body, resp, sizeof(resp)) : 0;
    if (code != 200) { /* no admin route: a restart with (or without) the settings in the environment */
        soak_say("%s: POST /admin/chaos answered %d; restarting it %s chaos", soak_comp_names[comp], code,
                 on ? "with" : "without");
        if (soak_stack(opts, "stop", soak_comp_names[comp], on, err, errsz) || start(comp, err, errsz)) return -1;
    }
    if ((health_points(comp) > 0) != (want != 0)) {
        snprintf(err, errsz, "%s: GET /health does not show the crash points %s (built without vx_chaos?)",
                 soak_comp_names[comp], on ? "armed" : "disarmed");
        return -1;
    }
    return 0;
}

int soak_chaos_arm(const soak_opts_t *o, int on, char *err, size_t errsz) {
    opts = o;
    armed = on;
    if (!o->crash_points[0] && strcmp(o->gremlin_delay_ms, "0") == 0) return 0; /* chaos was never asked for */
    for (int c = SOAK_INVENTORY; c < SOAK_NCOMP; c++)
        if (arm_service(c, on, err, errsz)) return -1;
    return 0;
}
