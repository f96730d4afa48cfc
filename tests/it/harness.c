/* harness.c - the integration-test harness (see harness.h for the contract).
 *
 * Criterion runs each test in a fresh process that does not share the
 * runner's memory, so whatever the runner sets up is handed down through the
 * environment, and every table here (spawned processes) is per test process. */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>

extern char **environ;

#define ENV_RUN_ID "VX_IT_RUN_ID"
#define ENV_SETUP_ERROR "VX_IT_SETUP_ERROR"

/* Identifiers cannot be bound as parameters; the name is quoted with
 * PQescapeIdentifier before it is put in. */
#define SQL_DROP_DATABASE "DROP DATABASE IF EXISTS %s WITH (FORCE)"
#define SQL_CREATE_DATABASE "CREATE DATABASE %s"
#define SQL_PRODUCT_STOCK "SELECT stock FROM products WHERE id = $1"

/* ---- run context ------------------------------------------------------- */

static int mkdir_p(const char *path) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s", path) >= (int)sizeof tmp) return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) == -1 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) == -1 && errno != EEXIST) return -1;
    return 0;
}

static bool has_stack_script(const char *dir) {
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/deploy/stack.sh", dir) >= (int)sizeof path)
        return false;
    return access(path, R_OK) == 0;
}

const char *it_root(void) {
    static char root[PATH_MAX];
    if (root[0]) return root;
    const char *env = getenv("VX_ROOT");
    if (env && *env) {
        snprintf(root, sizeof root, "%s", env);
        return root;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        for (int up = 0; up < 2; up++) { /* <root>/build/<binary> */
            char *slash = strrchr(exe, '/');
            if (!slash || slash == exe) break;
            *slash = '\0';
        }
        if (has_stack_script(exe)) {
            snprintf(root, sizeof root, "%s", exe);
            return root;
        }
    }
    if (!getcwd(root, sizeof root)) snprintf(root, sizeof root, ".");
    return root;
}

const char *it_data_dir(void) {
    static char dir[PATH_MAX];
    if (dir[0]) return dir;
    const char *env = getenv("VX_DATA_DIR");
    if (env && *env)
        snprintf(dir, sizeof dir, "%s/it", env);
    else
        snprintf(dir, sizeof dir, "%s/var/it", it_root());
    mkdir_p(dir);
    return dir;
}

/* Writes it_data_dir()/<printf(fmt, ...)> into buf; -1 when it does not fit. */
static int data_path(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int data_path(char *buf, size_t size, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    buf[0] = '\0';
    if (n < 0 || (size_t)n >= sizeof name) return -1;
    n = snprintf(buf, size, "%s/%s", it_data_dir(), name);
    return n >= 0 && (size_t)n < size ? 0 : -1;
}

const char *it_run_id(void) {
    const char *id = getenv(ENV_RUN_ID);
    return id && *id ? id : "norun";
}

void it_run_name(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "it.%s.%s", it_run_id(), name);
}

void it_names_init(it_names *n) {
    it_run_name(n->orders_commands, sizeof n->orders_commands, "orders.commands");
    it_run_name(n->orders_results, sizeof n->orders_results, "orders.results");
    it_run_name(n->orders_dlq, sizeof n->orders_dlq, "orders.dlq");
    it_run_name(n->inventory_commands, sizeof n->inventory_commands, "inventory.commands");
    it_run_name(n->inventory_events, sizeof n->inventory_events, "inventory.events");
    it_run_name(n->inventory_dlq, sizeof n->inventory_dlq, "inventory.dlq");
    it_run_name(n->inventory_group, sizeof n->inventory_group, "inventory-svc");
    it_run_name(n->orders_group, sizeof n->orders_group, "order-svc");
}

static void kafka_marker_path(char *buf, size_t size) {
    data_path(buf, size, "%s.kafka-stopped", it_run_id());
}

static int recreate_database(PGconn *conn, const char *dbname, char *errstr,
                             size_t errstr_size) {
    int rc = -1;
    char sql[512];
    char *ident = PQescapeIdentifier(conn, dbname, strlen(dbname));
    PGresult *res = NULL;
    if (!ident) {
        vt_err(errstr, errstr_size, "quoting %s: %s", dbname, PQerrorMessage(conn));
        goto out;
    }
    snprintf(sql, sizeof sql, SQL_DROP_DATABASE, ident);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        vt_err(errstr, errstr_size, "%s: %s", sql, PQerrorMessage(conn));
        goto out;
    }
    PQclear(res);
    snprintf(sql, sizeof sql, SQL_CREATE_DATABASE, ident);
    res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        vt_err(errstr, errstr_size, "%s: %s", sql, PQerrorMessage(conn));
        goto out;
    }
    rc = 0;
out:
    PQclear(res);
    PQfreemem(ident);
    return rc;
}

static int run_setup(const char *const databases[], char *errstr,
                     size_t errstr_size) {
    char run_id[64];
    snprintf(run_id, sizeof run_id, "%lld-%d", (long long)time(NULL),
             (int)getpid());
    setenv(ENV_RUN_ID, run_id, 1);
    unsetenv(ENV_SETUP_ERROR);
    if (mkdir_p(it_data_dir()) == -1)
        return vt_err(errstr, errstr_size, "cannot create %s: %s", it_data_dir(),
                      strerror(errno));

    char err[IT_ERR_SIZE];
    if (databases && databases[0]) {
        PGconn *conn = NULL;
        if (it_pg_connect(&conn, "postgres", err, sizeof err) == -1)
            return vt_err(errstr, errstr_size,
                          "PostgreSQL unreachable (deploy/stack.sh up postgres?): %s", err);
        for (size_t i = 0; databases[i]; i++) {
            if (recreate_database(conn, databases[i], err, sizeof err) == -1) {
                PQfinish(conn);
                return vt_err(errstr, errstr_size, "PostgreSQL: %s", err);
            }
        }
        PQfinish(conn);
    }
    if (it_kafka_wait_up(15000, err, sizeof err) == -1)
        return vt_err(errstr, errstr_size,
                      "Kafka unreachable (deploy/stack.sh up kafka?): %s", err);
    return 0;
}

/* Starts the broker again if a test stopped it and could not restart it. */
static void restore_broker(void) {
    char marker[PATH_MAX], err[IT_ERR_SIZE];
    kafka_marker_path(marker, sizeof marker);
    if (access(marker, F_OK) != 0) return;
    fprintf(stderr, "it: a test left kafka stopped; starting it again\n");
    if (it_stack("start", "kafka", err, sizeof err) == -1 ||
        it_kafka_wait_up(120000, err, sizeof err) == -1)
        fprintf(stderr, "it: could not restart kafka: %s\n", err);
}

/* Two runs of one suite, even from two checkouts, would drop each other's
 * database and fight over ports on this machine: a run holds
 * ${TMPDIR:-/tmp}/valerix-<binary>.lock and a second one waits for it.
 * Returns the open lock (close-on-exec, so no service inherits it) or -1. */
static int run_lock(const char *argv0, char *errstr, size_t errstr_size) {
    char path[PATH_MAX];
    const char *base = strrchr(argv0, '/'), *tmp = getenv("TMPDIR");
    snprintf(path, sizeof path, "%s/valerix-%s.lock", tmp && *tmp ? tmp : "/tmp",
             base ? base + 1 : argv0);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd == -1) return vt_err(errstr, errstr_size, "open %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
    fprintf(stderr, "it: another run of %s holds %s; waiting for it\n", argv0, path);
    for (int64_t deadline = vt_mono_ms() + 30 * 60000; vt_mono_ms() < deadline;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) return fd;
        vt_sleep_ms(1000);
    }
    close(fd);
    return vt_err(errstr, errstr_size, "another run of %s held %s for 30 minutes", argv0, path);
}

int it_main(int argc, char **argv, const char *const databases[]) {
    struct criterion_test_set *tests = criterion_initialize();
    int rc = 0, lock_fd = -1;
    if (!criterion_handle_args(argc, argv, true)) goto out;
    /* The tests share one broker, one database and the stack scripts. */
    criterion_options.jobs = 1;

    char err[IT_ERR_SIZE];
    if ((lock_fd = run_lock(argv[0], err, sizeof err)) == -1 ||
        run_setup(databases, err, sizeof err) == -1) {
        fprintf(stderr, "it: run setup failed, every test will fail: %s\n", err);
        setenv(ENV_SETUP_ERROR, err, 1);
    } else {
        fprintf(stderr, "it: run %s, data in %s\n", it_run_id(), it_data_dir());
    }
    rc = criterion_run_all_tests(tests) ? 0 : 1;
    restore_broker();
out:
    if (lock_fd != -1) close(lock_fd);
    criterion_finalize(tests);
    return rc;
}

void it_test_begin(void) {
    const char *setup_error = getenv(ENV_SETUP_ERROR);
    cr_assert(setup_error == NULL, "run setup failed: %s", setup_error);
    cr_assert(getenv(ENV_RUN_ID) != NULL,
              "no run context: this suite must be started through it_main()");
    /* A peer that closes a pipe or socket must give EPIPE, not kill us. */
    signal(SIGPIPE, SIG_IGN);
}

void it_test_fini(void) {
    it_proc_kill_all();
    restore_broker();
}

/* ---- processes ----------------------------------------------------------- */

#define MAX_PROCS 64

struct it_proc_s {
    pid_t pid;
    bool exited;
    int status;
    char log_path[PATH_MAX];
};

static it_proc_t *procs[MAX_PROCS];

static void procs_atexit(void) { it_proc_kill_all(); }

static int procs_register(it_proc_t *p) {
    static bool atexit_done;
    if (!atexit_done) {
        atexit(procs_atexit);
        atexit_done = true;
    }
    for (size_t i = 0; i < MAX_PROCS; i++) {
        if (!procs[i]) {
            procs[i] = p;
            return 0;
        }
    }
    return -1;
}

static void procs_unregister(it_proc_t *p) {
    for (size_t i = 0; i < MAX_PROCS; i++)
        if (procs[i] == p) procs[i] = NULL;
}

pid_t it_proc_pid(const it_proc_t *p) { return p->pid; }
const char *it_proc_log_path(const it_proc_t *p) { return p->log_path; }

static bool env_overridden(const char *entry, const char *const env[]) {
    size_t len = strcspn(entry, "=");
    for (size_t i = 0; env && env[i]; i++)
        if (strncmp(env[i], entry, len) == 0 && env[i][len] == '=') return true;
    return false;
}

int it_proc_spawn(it_proc_t **out, const char *log_name, const char *exe,
                  const char *const env[], char *errstr, size_t errstr_size) {
    int rc = -1, log_fd = -1, null_fd = -1;
    char **envp = NULL;
    char exe_path[PATH_MAX];
    it_proc_t *p = calloc(1, sizeof *p);
    *out = NULL;
    if (!p) return vt_err(errstr, errstr_size, "out of memory");

    if (exe[0] == '/')
        snprintf(exe_path, sizeof exe_path, "%s", exe);
    else
        snprintf(exe_path, sizeof exe_path, "%s/%s", it_root(), exe);
    if (access(exe_path, X_OK) != 0) {
        vt_err(errstr, errstr_size, "%s is not an executable (built?): %s", exe_path,
               strerror(errno));
        goto out;
    }
    data_path(p->log_path, sizeof p->log_path, "%s.log", log_name);
    log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (log_fd == -1 || null_fd == -1) {
        vt_err(errstr, errstr_size, "open %s: %s", p->log_path, strerror(errno));
        goto out;
    }

    /* Everything the child needs is built before fork: the test process has
     * librdkafka threads, so the child may only make async-signal-safe calls. */
    size_t n_environ = 0, n_env = 0;
    while (environ[n_environ]) n_environ++;
    while (env && env[n_env]) n_env++;
    envp = calloc(n_environ + n_env + 1, sizeof *envp);
    if (!envp) {
        vt_err(errstr, errstr_size, "out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < n_environ; i++)
        if (!env_overridden(environ[i], env)) envp[k++] = environ[i];
    for (size_t i = 0; i < n_env; i++) envp[k++] = (char *)env[i];
    char *argv[] = {exe_path, NULL};

    dprintf(log_fd, "=== it run %s: spawning %s\n", it_run_id(), exe_path);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == -1) {
        vt_err(errstr, errstr_size, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        sigset_t none;
        setpgid(0, 0);
        /* Should the test process die without cleaning up, so does this. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int sig = 1; sig < NSIG; sig++)
            if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
        dup2(null_fd, 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        execve(exe_path, argv, envp);
        dprintf(2, "it: execve %s failed: %s\n", exe_path, strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here: no race with the child's own call */
    p->pid = pid;
    if (procs_register(p) == -1) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        vt_err(errstr, errstr_size, "more than %d processes in one test", MAX_PROCS);
        goto out;
    }
    *out = p;
    p = NULL;
    rc = 0;
out:
    free(envp);
    if (log_fd != -1) close(log_fd);
    if (null_fd != -1) close(null_fd);
    free(p);
    return rc;
}

bool it_proc_running(it_proc_t *p) {
    if (p->exited) return false;
    int status;
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid || (r == -1 && errno == ECHILD)) {
        p->exited = true;
        p->status = r == p->pid ? status : 0;
        return false;
    }
    return true;
}

void it_status_describe(int status, char *buf, size_t size) {
    if (WIFEXITED(status))
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, size, "wait status 0x%x", status);
}

/* The last bytes of a log file, for error messages. */
static void log_tail(const char *path, char *buf, size_t size) {
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) return;
    off_t end = lseek(fd, 0, SEEK_END);
    off_t start = end > (off_t)(size - 1) ? end - (off_t)(size - 1) : 0;
    ssize_t n = pread(fd, buf, size - 1, start);
    buf[n > 0 ? n : 0] = '\0';
    close(fd);
}

int it_proc_wait_http(it_proc_t *p, const char *addr, const char *path,
                      int timeout_ms, char *errstr, size_t errstr_size) {
    int64_t deadline = vt_mono_ms() + timeout_ms;
    char last[512] = "no answer yet";
    for (;;) {
        if (!it_proc_running(p)) {
            char how[128], tail[1024];
            it_status_describe(p->status, how, sizeof how);
            log_tail(p->log_path, tail, sizeof tail);
            return vt_err(errstr, errstr_size,
                          "pid %d %s before GET %s%s answered 200; log %s ends with:\n%s",
                          (int)p->pid, how, addr, path, p->log_path, tail);
        }
        const vt_http_req req = {.method = "GET", .path = path,
                                 .timeout_ms = IT_HTTP_PROBE_TIMEOUT_MS,
                                 .max_response = IT_HTTP_PROBE_MAX_RESPONSE};
        vt_http_resp resp;
        char err[512];
        if (it_http(addr, &req, &resp, err, sizeof err) == 0) {
            int status = resp.status;
            snprintf(last, sizeof last, "last answer %d: %.200s", status, resp.body);
            vt_http_resp_clear(&resp);
            if (status == 200) return 0;
        } else {
            snprintf(last, sizeof last, "%s", err);
        }
        if (vt_mono_ms() >= deadline)
            return vt_err(errstr, errstr_size, "GET %s%s not 200 within %d ms (%s); log %s",
                          addr, path, timeout_ms, last, p->log_path);
        vt_sleep_ms(100);
    }
}

int it_proc_wait_exit(it_proc_t *p, int timeout_ms, int *status, char *errstr,
                      size_t errstr_size) {
    int64_t deadline = vt_mono_ms() + timeout_ms;
    while (it_proc_running(p)) {
        if (vt_mono_ms() >= deadline)
            return vt_err(errstr, errstr_size, "pid %d still running after %d ms",
                          (int)p->pid, timeout_ms);
        vt_sleep_ms(20);
    }
    *status = p->status;
    return 0;
}

int it_proc_stop(it_proc_t *p, int sig, int timeout_ms, int *status,
                 bool *killed, char *errstr, size_t errstr_size) {
    char err[256];
    *killed = false;
    if (it_proc_running(p)) {
        kill(-p->pid, sig);
        if (it_proc_wait_exit(p, timeout_ms, status, err, sizeof err) == -1) {
            *killed = true;
            kill(-p->pid, SIGKILL);
            if (it_proc_wait_exit(p, 30000, status, err, sizeof err) == -1)
                return vt_err(errstr, errstr_size, "pid %d survives SIGKILL: %s",
                              (int)p->pid, err);
        }
    }
    kill(-p->pid, SIGKILL); /* whatever else the process group still holds */
    *status = p->status;
    return 0;
}

void it_proc_free(it_proc_t *p) {
    if (!p) return;
    if (it_proc_running(p)) {
        kill(-p->pid, SIGKILL);
        int status;
        if (waitpid(p->pid, &status, 0) == p->pid) p->exited = true;
    }
    procs_unregister(p);
    free(p);
}

void it_proc_kill_all(void) {
    for (size_t i = 0; i < MAX_PROCS; i++)
        if (procs[i]) it_proc_free(procs[i]);
}

/* ---- HTTP ---------------------------------------------------------------- */

int it_http(const char *addr, const vt_http_req *req, vt_http_resp *resp,
            char *errstr, size_t errstr_size) {
    if (vt_http_request(addr, req, resp, errstr, errstr_size) == -1) return -1;
    it_record_http(req->method, req->path, resp->status);
    return 0;
}

/* ---- Kafka: common ------------------------------------------------------- */

/* librdkafka's own log lines go to it_data_dir()/rdkafka.<run>.log: a broker
 * restart makes every client complain, and test output should stay readable. */
static void kafka_log_to_file(const rd_kafka_t *rk, int level, const char *fac,
                              const char *buf) {
    static int fd = -1; /* opened once per process; write(2) appends atomically */
    if (fd == -1) {
        char path[PATH_MAX];
        if (data_path(path, sizeof path, "rdkafka.%s.log", it_run_id()) == -1) return;
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd == -1) return;
    }
    dprintf(fd, "%d %d %s %s: %s\n", (int)getpid(), level, rd_kafka_name(rk), fac, buf);
}

const char *it_kafka_bootstrap(void) {
    static char addr[64];
    if (!addr[0]) {
        const char *port = getenv("VX_BROKER_PORT");
        snprintf(addr, sizeof addr, "127.0.0.1:%s", port && *port ? port : "9092");
    }
    return addr;
}

const char *it_pg_port(void) {
    const char *port = getenv("VX_PG_PORT");
    return port && *port ? port : "55432";
}

/* A configuration for a harness client: IT_KAFKA_BOOTSTRAP, librdkafka's log
 * to a file, then `pairs` (name, value, ..., NULL; may be NULL). NULL with
 * errstr on a bad property; else the caller owns it (or hands it over). */
static rd_kafka_conf_t *kafka_conf_new(const char *const *pairs, char *errstr,
                                       size_t errstr_size) {
    const char *const base[] = {"bootstrap.servers", IT_KAFKA_BOOTSTRAP, NULL};
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka_log_to_file);
    if (vt_kafka_conf_set(conf, base, errstr, errstr_size) ||
        vt_kafka_conf_set(conf, pairs, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

/* Applies "name=value" entries. */
static int conf_apply(rd_kafka_conf_t *conf, const char *const entries[],
                      char *errstr, size_t errstr_size) {
    for (size_t i = 0; entries && entries[i]; i++) {
        char name[256];
        const char *eq = strchr(entries[i], '=');
        if (!eq || (size_t)(eq - entries[i]) >= sizeof name)
            return vt_err(errstr, errstr_size, "bad conf entry %s", entries[i]);
        memcpy(name, entries[i], (size_t)(eq - entries[i]));
        name[eq - entries[i]] = '\0';
        const char *const pair[] = {name, eq + 1, NULL};
        if (vt_kafka_conf_set(conf, pair, errstr, errstr_size) == -1) return -1;
    }
    return 0;
}

int it_kafka_wait_up(int timeout_ms, char *errstr, size_t errstr_size) {
    static const char *const quiet[] = {"log_level", "0", NULL}; /* refusals are expected */
    rd_kafka_t *rk = NULL;
    if (vt_kafka_new(&rk, RD_KAFKA_PRODUCER, kafka_conf_new(quiet, errstr, errstr_size),
                     errstr, errstr_size) == -1)
        return -1;
    int64_t deadline = vt_mono_ms() + timeout_ms;
    int rc = -1;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, NULL, &md, 2000);
        if (!e && md->broker_cnt > 0) {
            rd_kafka_metadata_destroy(md);
            rc = 0;
            break;
        }
        if (md) rd_kafka_metadata_destroy(md);
        if (vt_mono_ms() >= deadline) {
            vt_err(errstr, errstr_size, "no metadata from %s within %d ms: %s",
                   IT_KAFKA_BOOTSTRAP, timeout_ms, rd_kafka_err2str(e));
            break;
        }
        vt_sleep_ms(250);
    }
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- Kafka: producing ---------------------------------------------------- */

struct it_producer_s {
    rd_kafka_t *rk;
    int failed;            /* deliveries failed since the last flush */
    char first_error[512]; /* the first of those failures */
};

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    it_producer_t *p = opaque;
    if (!m->err) return;
    if (p->failed++ == 0)
        snprintf(p->first_error, sizeof p->first_error, "%s [%d]: %s",
                 rd_kafka_topic_name(m->rkt), (int)m->partition,
                 rd_kafka_err2str(m->err));
}

int it_producer_new(it_producer_t **out, const char *const conf_entries[],
                    char *errstr, size_t errstr_size) {
    static const char *const settings[] = {
        "acks", "all", "enable.idempotence", "true", "message.timeout.ms", "300000",
        "linger.ms", "5", "client.id", "vx-it-producer", NULL};
    it_producer_t *p = calloc(1, sizeof *p);
    rd_kafka_conf_t *conf = NULL;
    *out = NULL;
    if (!p) return vt_err(errstr, errstr_size, "out of memory");
    if (!(conf = kafka_conf_new(settings, errstr, errstr_size))) goto err;
    if (conf_apply(conf, conf_entries, errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        goto err;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, p);
    if (vt_kafka_new(&p->rk, RD_KAFKA_PRODUCER, conf, errstr, errstr_size)) goto err;
    *out = p;
    return 0;
err:
    free(p);
    return -1;
}

int it_produce(it_producer_t *p, const char *topic, const void *key,
               size_t key_len, const void *value, size_t value_len,
               const it_header *headers, size_t n_headers, char *errstr,
               size_t errstr_size) {
    for (;;) {
        rd_kafka_headers_t *hdrs = NULL;
        rd_kafka_vu_t vu[5];
        size_t n = 0;
        vu[n].vtype = RD_KAFKA_VTYPE_TOPIC;
        vu[n++].u.cstr = topic;
        vu[n].vtype = RD_KAFKA_VTYPE_KEY;
        vu[n].u.mem.ptr = (void *)key;
        vu[n++].u.mem.size = key ? key_len : 0;
        vu[n].vtype = RD_KAFKA_VTYPE_VALUE;
        vu[n].u.mem.ptr = (void *)value;
        vu[n++].u.mem.size = value ? value_len : 0;
        vu[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
        vu[n++].u.i = RD_KAFKA_MSG_F_COPY;
        if (n_headers) {
            hdrs = rd_kafka_headers_new(n_headers);
            for (size_t i = 0; i < n_headers; i++)
                rd_kafka_header_add(hdrs, headers[i].name, -1, headers[i].value,
                                    headers[i].value ? (ssize_t)headers[i].size : 0);
            vu[n].vtype = RD_KAFKA_VTYPE_HEADERS;
            vu[n++].u.headers = hdrs; /* produceva takes them on success */
        }
        rd_kafka_error_t *error = rd_kafka_produceva(p->rk, vu, n);
        if (!error) break;
        rd_kafka_resp_err_t code = rd_kafka_error_code(error);
        int rc = 0;
        if (code != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rc = vt_err(errstr, errstr_size, "produce to %s: %s", topic,
                        rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rd_kafka_headers_destroy(hdrs);
        if (rc) return rc;
        rd_kafka_poll(p->rk, 100); /* queue full: let deliveries drain it */
    }
    rd_kafka_poll(p->rk, 0);
    return 0;
}

int it_producer_flush(it_producer_t *p, int timeout_ms, char *errstr,
                      size_t errstr_size) {
    rd_kafka_resp_err_t err = rd_kafka_flush(p->rk, timeout_ms);
    if (err)
        return vt_err(errstr, errstr_size, "flush: %d messages not delivered in %d ms: %s",
                      rd_kafka_outq_len(p->rk), timeout_ms, rd_kafka_err2str(err));
    if (p->failed) {
        int failed = p->failed;
        p->failed = 0;
        return vt_err(errstr, errstr_size, "%d deliveries failed, first: %s", failed,
                      p->first_error);
    }
    return 0;
}

void it_producer_free(it_producer_t *p) {
    if (!p) return;
    rd_kafka_flush(p->rk, 10000);
    rd_kafka_destroy(p->rk);
    free(p);
}

int it_produce_one(const char *topic, const char *key, const char *value,
                   const it_header *headers, size_t n_headers, char *errstr,
                   size_t errstr_size) {
    it_producer_t *p = NULL;
    int rc = -1;
    if (it_producer_new(&p, NULL, errstr, errstr_size) == -1) return -1;
    if (it_produce(p, topic, key, key ? strlen(key) : 0, value,
                   value ? strlen(value) : 0, headers, n_headers, errstr,
                   errstr_size) == -1)
        goto out;
    rc = it_producer_flush(p, 60000, errstr, errstr_size);
out:
    it_producer_free(p);
    return rc;
}

/* Waits up to timeout_ms (looking every poll_ms) for child `pid` to exit and
 * fills *status; -1 when it had to be killed at the end of that time. */
static int reap_within(pid_t pid, int timeout_ms, int poll_ms, int *status) {
    int64_t deadline = vt_mono_ms() + timeout_ms;
    pid_t r;
    *status = 0;
    while ((r = waitpid(pid, status, WNOHANG)) == 0 && vt_mono_ms() < deadline)
        vt_sleep_ms(poll_ms);
    if (r != 0) return 0;
    kill(pid, SIGKILL);
    waitpid(pid, status, 0);
    return -1;
}

int it_kcat_produce(const char *topic, const char *key, const char *json,
                    const char *header, char *errstr, size_t errstr_size) {
    int rc = -1, pipefd[2] = {-1, -1}, log_fd = -1;
    char log_path[PATH_MAX];
    if (strchr(json, '\n') || strchr(key, '|') || strchr(key, '\n'))
        return vt_err(errstr, errstr_size, "kcat line needs a one-line json and a key without '|'");
    data_path(log_path, sizeof log_path, "kcat.%s.log", it_run_id());
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd == -1 || pipe2(pipefd, O_CLOEXEC) == -1) {
        vt_err(errstr, errstr_size, "kcat setup: %s", strerror(errno));
        goto out;
    }
    char *argv[] = {"kcat", "-P", "-b", (char *)IT_KAFKA_BOOTSTRAP, "-t", (char *)topic,
                    "-K|", header ? "-H" : NULL, (char *)header, NULL};
    pid_t pid = fork();
    if (pid == -1) {
        vt_err(errstr, errstr_size, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[0], 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        execvp("kcat", argv);
        dprintf(2, "it: exec kcat failed: %s\n", strerror(errno));
        _exit(127);
    }
    close(pipefd[0]);
    pipefd[0] = -1;
    char line_end = '\n';
    signal(SIGPIPE, SIG_IGN);
    bool written = write(pipefd[1], key, strlen(key)) == (ssize_t)strlen(key) &&
                   write(pipefd[1], "|", 1) == 1 &&
                   write(pipefd[1], json, strlen(json)) == (ssize_t)strlen(json) &&
                   write(pipefd[1], &line_end, 1) == 1;
    close(pipefd[1]);
    pipefd[1] = -1;
    int status;
    if (reap_within(pid, 120000, 20, &status) == -1) {
        vt_err(errstr, errstr_size, "kcat did not finish within 120 s; see %s", log_path);
        goto out;
    }
    if (!written || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[128], tail[800];
        it_status_describe(status, how, sizeof how);
        log_tail(log_path, tail, sizeof tail);
        vt_err(errstr, errstr_size, "kcat %s (input %s); %s ends with:\n%s", how,
               written ? "written" : "NOT written", log_path, tail);
        goto out;
    }
    rc = 0;
out:
    if (pipefd[0] != -1) close(pipefd[0]);
    if (pipefd[1] != -1) close(pipefd[1]);
    if (log_fd != -1) close(log_fd);
    return rc;
}

/* ---- Kafka: collecting --------------------------------------------------- */

struct it_collector_s {
    rd_kafka_t *rk;
    char *topic;
    int32_t n_parts;
    int64_t *next; /* per partition: last offset read + 1 */
    int64_t *eof;  /* per partition: offset of the last end reached, or -1 */
    it_msg *msgs;
    size_t n, cap, bytes;
    int jsonl_fd;
    char *jsonl_topic;
    char last_error[512];
};

size_t it_collector_count(const it_collector_t *c) { return c->n; }
const it_msg *it_collector_at(const it_collector_t *c, size_t i) { return &c->msgs[i]; }
const char *it_collector_topic(const it_collector_t *c) { return c->topic; }

static char *dup_bytes(const void *p, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, p, n);
    d[n] = '\0';
    return d;
}

static void msg_clear(it_msg *m) {
    free(m->key);
    free(m->value);
    for (size_t i = 0; i < m->n_headers; i++) {
        free(m->headers[i].name);
        free(m->headers[i].value);
    }
    free(m->headers);
    json_object_put(m->json);
}

/* Parses a whole buffer as JSON; NULL if it is not (or is JSON null). */
static json_object *parse_json(const char *s, size_t len) {
    if (!s || len > INT_MAX) return NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok) return NULL;
    json_object *obj = json_tokener_parse_ex(tok, s, (int)len);
    if (json_tokener_get_error(tok) != json_tokener_success) {
        json_object_put(obj);
        obj = NULL;
    } else {
        for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
            if (s[i] != ' ' && s[i] != '\n' && s[i] != '\r' && s[i] != '\t') {
                json_object_put(obj);
                obj = NULL;
                break;
            }
        }
    }
    json_tokener_free(tok);
    return obj;
}

/* One line of messages.jsonl, with the value's own bytes when they are one
 * line of JSON; a value that is not JSON is written as a JSON string so that
 * the schema check flags it. */
static void jsonl_append(it_collector_t *c, const it_msg *m) {
    json_object *label = json_object_new_string(c->jsonl_topic), *value = NULL;
    const char *raw = NULL;
    size_t raw_len = 0;
    if (m->json && !memchr(m->value, '\n', m->value_len) &&
        !memchr(m->value, '\r', m->value_len)) {
        raw = m->value;
        raw_len = m->value_len;
    } else {
        value = m->value ? json_object_new_string_len(m->value, (int)m->value_len) : NULL;
        raw = value ? json_object_to_json_string_ext(value, JSON_C_TO_STRING_PLAIN) : "null";
        raw_len = strlen(raw);
    }
    const char *l = json_object_to_json_string_ext(label, JSON_C_TO_STRING_PLAIN);
    size_t len = strlen("{\"topic\":") + strlen(l) + strlen(",\"value\":") + raw_len + 2;
    char *line = malloc(len + 1);
    if (line) {
        int n = snprintf(line, len + 1, "{\"topic\":%s,\"value\":", l);
        memcpy(line + n, raw, raw_len);
        memcpy(line + n + raw_len, "}\n", 2);
        if (write(c->jsonl_fd, line, len) != (ssize_t)len)
            snprintf(c->last_error, sizeof c->last_error, "short write to messages.jsonl");
        free(line);
    }
    json_object_put(value);
    json_object_put(label);
}

static int collector_store(it_collector_t *c, const rd_kafka_message_t *rkm,
                           char *errstr, size_t errstr_size) {
    if (c->n == IT_COLLECTOR_MAX_MSGS || c->bytes + rkm->len + rkm->key_len >
                                             IT_COLLECTOR_MAX_BYTES)
        return vt_err(errstr, errstr_size, "collector of %s is full (%zu messages, %zu bytes)",
                      c->topic, c->n, c->bytes);
    if (c->n == c->cap) {
        size_t ncap = c->cap ? c->cap * 2 : 1024;
        it_msg *nm = realloc(c->msgs, ncap * sizeof *nm);
        if (!nm) return vt_err(errstr, errstr_size, "out of memory");
        c->msgs = nm;
        c->cap = ncap;
    }
    it_msg *m = &c->msgs[c->n];
    memset(m, 0, sizeof *m);
    m->partition = rkm->partition;
    m->offset = rkm->offset;
    if (rkm->key) {
        m->key = dup_bytes(rkm->key, rkm->key_len);
        m->key_len = rkm->key_len;
    }
    if (rkm->payload) {
        m->value = dup_bytes(rkm->payload, rkm->len);
        m->value_len = rkm->len;
    }
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(rkm, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        size_t cnt = rd_kafka_header_cnt(hdrs);
        m->headers = calloc(cnt ? cnt : 1, sizeof *m->headers);
        for (size_t i = 0; m->headers && i < cnt; i++) {
            const char *name;
            const void *val;
            size_t size;
            if (rd_kafka_header_get_all(hdrs, i, &name, &val, &size)) break;
            m->headers[i].name = strdup(name);
            m->headers[i].value = val ? dup_bytes(val, size) : NULL;
            m->headers[i].size = val ? size : 0;
            m->n_headers++;
        }
    }
    m->json = parse_json(m->value, m->value_len);
    c->n++;
    c->bytes += rkm->len + rkm->key_len;
    if (rkm->partition >= 0 && rkm->partition < c->n_parts)
        c->next[rkm->partition] = rkm->offset + 1;
    if (c->jsonl_fd != -1) jsonl_append(c, m);
    return 0;
}

/* Handles one polled event: a message, an end of partition or an error. */
static int collector_handle(it_collector_t *c, rd_kafka_message_t *rkm,
                            char *errstr, size_t errstr_size) {
    int rc = 0;
    if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
        if (rkm->partition >= 0 && rkm->partition < c->n_parts)
            c->eof[rkm->partition] = rkm->offset;
    } else if (rkm->err) {
        char fatal[512];
        /* Broker gone for a while is expected in some tests: note and go on. */
        snprintf(c->last_error, sizeof c->last_error, "%s",
                 rd_kafka_message_errstr(rkm));
        if (rd_kafka_fatal_error(c->rk, fatal, sizeof fatal))
            rc = vt_err(errstr, errstr_size, "consumer of %s: fatal: %s", c->topic, fatal);
    } else {
        rc = collector_store(c, rkm, errstr, errstr_size);
    }
    rd_kafka_message_destroy(rkm);
    return rc;
}

int it_collector_poll(it_collector_t *c, int timeout_ms, char *errstr,
                      size_t errstr_size) {
    int64_t deadline = vt_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = deadline - vt_mono_ms();
        rd_kafka_message_t *rkm =
            rd_kafka_consumer_poll(c->rk, left > 0 ? (int)left : 0);
        if (rkm && collector_handle(c, rkm, errstr, errstr_size) == -1) return -1;
        if (!rkm && left <= 0) return 0;
    }
}

/* Reads a batch: waits up to wait_ms for the first event, then takes
 * whatever is already there (bounded, so predicates get evaluated). */
static int collector_batch(it_collector_t *c, int wait_ms, char *errstr,
                           size_t errstr_size) {
    rd_kafka_message_t *rkm = rd_kafka_consumer_poll(c->rk, wait_ms);
    for (int i = 0; rkm && i < 5000; i++) {
        if (collector_handle(c, rkm, errstr, errstr_size) == -1) return -1;
        rkm = rd_kafka_consumer_poll(c->rk, 0);
    }
    if (rkm && collector_handle(c, rkm, errstr, errstr_size) == -1) return -1;
    return 0;
}

int it_collector_wait(it_collector_t *c, it_pred_fn *pred, void *arg,
                      const char *what, int timeout_ms, char *errstr,
                      size_t errstr_size) {
    int64_t deadline = vt_mono_ms() + timeout_ms;
    for (;;) {
        if (pred(c, arg)) return 0;
        if (vt_mono_ms() >= deadline)
            return vt_err(errstr, errstr_size,
                          "timed out after %d ms waiting on %s for %s (%zu messages "
                          "collected; last consumer error: %s)",
                          timeout_ms, c->topic, what, c->n,
                          c->last_error[0] ? c->last_error : "none");
        if (collector_batch(c, 100, errstr, errstr_size) == -1) return -1;
    }
}

/* The end offset of every partition, in one ListOffsets request per leader:
 * one query per partition would each wait behind the consumer's long poll. */
static int collector_ends(it_collector_t *c, int64_t deadline, int64_t *high,
                          char *errstr, size_t errstr_size) {
    for (;;) {
        rd_kafka_topic_partition_list_t *q = rd_kafka_topic_partition_list_new(c->n_parts);
        for (int32_t p = 0; p < c->n_parts; p++)
            rd_kafka_topic_partition_list_add(q, c->topic, p)->offset = RD_KAFKA_OFFSET_END;
        rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(c->rk, q, 5000);
        for (int i = 0; !err && i < q->cnt; i++) {
            err = q->elems[i].err;
            if (!err && q->elems[i].offset < 0) err = RD_KAFKA_RESP_ERR__BAD_MSG;
            if (!err && q->elems[i].partition < c->n_parts)
                high[q->elems[i].partition] = q->elems[i].offset;
        }
        rd_kafka_topic_partition_list_destroy(q);
        if (!err) break;
        if (vt_mono_ms() >= deadline)
            return vt_err(errstr, errstr_size, "end offsets of %s: %s", c->topic,
                          rd_kafka_err2str(err));
        /* The broker may be restarting: keep reading meanwhile. */
        if (collector_batch(c, 200, errstr, errstr_size) == -1) return -1;
    }
    return 0;
}

int it_collector_catch_up(it_collector_t *c, int timeout_ms, char *errstr,
                          size_t errstr_size) {
    int64_t deadline = vt_mono_ms() + timeout_ms;
    int64_t *high = calloc((size_t)c->n_parts, sizeof *high);
    int rc = -1;
    if (!high) {
        vt_err(errstr, errstr_size, "out of memory");
        goto out;
    }
    if (collector_ends(c, deadline, high, errstr, errstr_size) == -1) goto out;
    for (;;) {
        int32_t behind = -1;
        /* Behind: a message before the end not read yet, and the end of the
         * partition not reached (the end may follow records never delivered). */
        for (int32_t p = 0; p < c->n_parts && behind < 0; p++)
            if (c->next[p] < high[p] && c->eof[p] < high[p]) behind = p;
        if (behind < 0) break;
        if (vt_mono_ms() >= deadline) {
            vt_err(errstr, errstr_size,
                   "%s [%d] not read up to offset %lld within %d ms (at %lld; last "
                   "consumer error: %s)",
                   c->topic, (int)behind, (long long)high[behind], timeout_ms,
                   (long long)c->next[behind], c->last_error[0] ? c->last_error : "none");
            goto out;
        }
        if (collector_batch(c, 100, errstr, errstr_size) == -1) goto out;
    }
    rc = 0;
out:
    free(high);
    return rc;
}

int it_collector_new(it_collector_t **out, const char *topic, vt_from_t from,
                     const char *jsonl_topic, int timeout_ms, char *errstr,
                     size_t errstr_size) {
    char group[256], path[PATH_MAX];
    it_collector_t *c = calloc(1, sizeof *c);
    rd_kafka_topic_partition_list_t *parts = NULL;
    *out = NULL;
    if (!c) return vt_err(errstr, errstr_size, "out of memory");
    c->jsonl_fd = -1;
    c->topic = strdup(topic);
    /* assign() only: the group id is required but never joined or committed. */
    snprintf(group, sizeof group, "it.%s.collector", it_run_id());
    const char *const settings[] = {
        "group.id", group, "enable.auto.commit", "false", "enable.auto.offset.store", "false",
        "enable.partition.eof", "true", "auto.offset.reset", "earliest",
        "isolation.level", "read_committed", "fetch.wait.max.ms", "100",
        "client.id", "vx-it-collector", NULL};
    if (vt_kafka_reader_new(&c->rk, kafka_conf_new(settings, errstr, errstr_size), topic, from,
                            timeout_ms, &parts, errstr, errstr_size))
        goto err;
    c->n_parts = parts->cnt;
    c->next = calloc((size_t)c->n_parts, sizeof *c->next);
    c->eof = calloc((size_t)c->n_parts, sizeof *c->eof);
    if (!c->next || !c->eof || !c->topic) {
        vt_err(errstr, errstr_size, "out of memory");
        goto err;
    }
    for (int i = 0; i < parts->cnt; i++) {
        int32_t p = parts->elems[i].partition;
        if (p < 0 || p >= c->n_parts) {
            vt_err(errstr, errstr_size, "%s has partition %d of %d", topic, (int)p, (int)c->n_parts);
            goto err;
        }
        c->eof[p] = -1;
        if (from == VT_FROM_END) c->next[p] = parts->elems[i].offset; /* its end when assigned */
    }
    if (jsonl_topic) {
        data_path(path, sizeof path, "messages.jsonl");
        c->jsonl_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        c->jsonl_topic = strdup(jsonl_topic);
        if (c->jsonl_fd == -1 || !c->jsonl_topic) {
            vt_err(errstr, errstr_size, "open %s: %s", path, strerror(errno));
            goto err;
        }
    }
    rd_kafka_topic_partition_list_destroy(parts);
    *out = c;
    return 0;
err:
    if (parts) rd_kafka_topic_partition_list_destroy(parts);
    it_collector_free(c);
    return -1;
}

void it_collector_free(it_collector_t *c) {
    if (!c) return;
    if (c->rk) {
        rd_kafka_assign(c->rk, NULL);
        rd_kafka_destroy(c->rk);
    }
    for (size_t i = 0; i < c->n; i++) msg_clear(&c->msgs[i]);
    free(c->msgs);
    free(c->next);
    free(c->eof);
    free(c->topic);
    free(c->jsonl_topic);
    if (c->jsonl_fd != -1) close(c->jsonl_fd);
    free(c);
}

const char *it_msg_header_get(const it_msg *m, const char *name, size_t *size) {
    for (size_t i = m->n_headers; i-- > 0;) {
        if (strcmp(m->headers[i].name, name) == 0) {
            if (size) *size = m->headers[i].size;
            return m->headers[i].value;
        }
    }
    return NULL;
}

const char *it_msg_str(const it_msg *m, const char *field) {
    json_object *v;
    if (!m->json || !json_object_is_type(m->json, json_type_object) ||
        !json_object_object_get_ex(m->json, field, &v) ||
        !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

int64_t it_msg_int(const it_msg *m, const char *field, int64_t dflt) {
    json_object *v;
    if (!m->json || !json_object_is_type(m->json, json_type_object) ||
        !json_object_object_get_ex(m->json, field, &v) ||
        !json_object_is_type(v, json_type_int))
        return dflt;
    return json_object_get_int64(v);
}

size_t it_collector_count_str(const it_collector_t *c, const char *field,
                              const char *value) {
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) {
        const char *s = it_msg_str(&c->msgs[i], field);
        if (s && strcmp(s, value) == 0) n++;
    }
    return n;
}

const it_msg *it_collector_find_str(const it_collector_t *c, const char *field,
                                    const char *value) {
    for (size_t i = 0; i < c->n; i++) {
        const char *s = it_msg_str(&c->msgs[i], field);
        if (s && strcmp(s, value) == 0) return &c->msgs[i];
    }
    return NULL;
}

struct str_count {
    const char *field, *value;
    size_t n;
};

static bool has_str_count(const it_collector_t *c, void *arg) {
    const struct str_count *q = arg;
    return it_collector_count_str(c, q->field, q->value) >= q->n;
}

int it_collector_wait_str(it_collector_t *c, const char *field,
                          const char *value, size_t n, int timeout_ms,
                          char *errstr, size_t errstr_size) {
    struct str_count q = {field, value, n};
    char what[512];
    snprintf(what, sizeof what, "%zu message(s) with %s == \"%s\"", n, field, value);
    return it_collector_wait(c, has_str_count, &q, what, timeout_ms, errstr,
                             errstr_size);
}

int it_kafka_group_lag(const char *group, const char *topic, int64_t *lag,
                       char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = kafka_conf_new(NULL, errstr, errstr_size);
    if (!conf) return -1;
    return vt_kafka_group_lag(conf, group, topic, 10000, lag, errstr, errstr_size);
}

int it_kafka_group_describe(const char *group, int *members, int *assigned,
                            bool *stable, char *errstr, size_t errstr_size) {
    int rc = -1;
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    if (vt_kafka_new(&rk, RD_KAFKA_PRODUCER, kafka_conf_new(NULL, errstr, errstr_size), errstr,
                     errstr_size))
        return -1;
    q = rd_kafka_queue_new(rk);
    rd_kafka_DescribeConsumerGroups(rk, &group, 1, NULL, q);
    ev = rd_kafka_queue_poll(q, 30000);
    if (!ev || rd_kafka_event_error(ev)) {
        vt_err(errstr, errstr_size, "describe group %s: %s", group,
               ev ? rd_kafka_event_error_string(ev) : "no answer in 30 s");
        goto out;
    }
    size_t n_groups = 0;
    const rd_kafka_ConsumerGroupDescription_t **groups =
        rd_kafka_DescribeConsumerGroups_result_groups(
            rd_kafka_event_DescribeConsumerGroups_result(ev), &n_groups);
    if (n_groups != 1 || rd_kafka_ConsumerGroupDescription_error(groups[0])) {
        vt_err(errstr, errstr_size, "describe group %s: %s", group,
               n_groups != 1 ? "no description"
                           : rd_kafka_error_string(
                                 rd_kafka_ConsumerGroupDescription_error(groups[0])));
        goto out;
    }
    *stable = rd_kafka_ConsumerGroupDescription_state(groups[0]) ==
              RD_KAFKA_CONSUMER_GROUP_STATE_STABLE;
    *members = (int)rd_kafka_ConsumerGroupDescription_member_count(groups[0]);
    *assigned = 0;
    for (int i = 0; i < *members; i++) {
        const rd_kafka_MemberDescription_t *m =
            rd_kafka_ConsumerGroupDescription_member(groups[0], (size_t)i);
        const rd_kafka_topic_partition_list_t *parts =
            rd_kafka_MemberAssignment_partitions(rd_kafka_MemberDescription_assignment(m));
        if (parts && parts->cnt > 0) ++*assigned;
    }
    rc = 0;
out:
    if (ev) rd_kafka_event_destroy(ev);
    if (q) rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- PostgreSQL ---------------------------------------------------------- */

void it_pg_url(char *buf, size_t size, const char *dbname) {
    snprintf(buf, size, "postgresql://%s@%s:%s/%s", IT_PG_USER, IT_PG_HOST,
             IT_PG_PORT, dbname);
}

static void ignore_notice(void *arg, const char *message) {
    (void)arg;
    (void)message;
}

int it_pg_connect(PGconn **out, const char *dbname, char *errstr,
                  size_t errstr_size) {
    const char *keys[] = {"host", "port", "user", "dbname", "connect_timeout",
                          "application_name", NULL};
    const char *vals[] = {IT_PG_HOST, IT_PG_PORT, IT_PG_USER, dbname, "10",
                          "vx-it", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 0);
    *out = NULL;
    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        vt_err(errstr, errstr_size, "connect to %s:%s/%s: %s", IT_PG_HOST, IT_PG_PORT,
               dbname, conn ? PQerrorMessage(conn) : "out of memory");
        PQfinish(conn);
        return -1;
    }
    PQsetNoticeProcessor(conn, ignore_notice, NULL); /* "does not exist, skipping" */
    *out = conn;
    return 0;
}

/* Row 0 column 0 as an integer; *found false on zero rows. */
static int pg_first_int(const char *dbname, const char *sql,
                        const char *const params[], int n_params, int64_t *out,
                        bool *found, char *errstr, size_t errstr_size) {
    PGconn *conn = NULL;
    PGresult *res = NULL;
    int rc = -1;
    if (it_pg_connect(&conn, dbname, errstr, errstr_size) == -1) return -1;
    res = PQexecParams(conn, sql, n_params, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        vt_err(errstr, errstr_size, "%s: %s", sql, PQerrorMessage(conn));
        goto out;
    }
    *found = PQntuples(res) > 0;
    if (*found) {
        if (PQgetisnull(res, 0, 0)) {
            vt_err(errstr, errstr_size, "%s: NULL", sql);
            goto out;
        }
        *out = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    }
    rc = 0;
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}

int it_pg_int(const char *dbname, const char *sql, const char *const params[],
              int n_params, int64_t *out, char *errstr, size_t errstr_size) {
    bool found;
    if (pg_first_int(dbname, sql, params, n_params, out, &found, errstr,
                     errstr_size) == -1)
        return -1;
    if (!found) return vt_err(errstr, errstr_size, "%s: no row", sql);
    return 0;
}

int it_pg_stock(const char *dbname, const char *product_id, int64_t *stock,
                char *errstr, size_t errstr_size) {
    bool found;
    const char *params[] = {product_id};
    if (pg_first_int(dbname, SQL_PRODUCT_STOCK, params, 1, stock, &found, errstr,
                     errstr_size) == -1)
        return -1;
    if (!found) *stock = -1;
    return 0;
}

/* ---- the stack ------------------------------------------------------------- */

int it_stack(const char *action, const char *component, char *errstr,
             size_t errstr_size) {
    char script[PATH_MAX], log_path[PATH_MAX], marker[PATH_MAX];
    snprintf(script, sizeof script, "%s/deploy/stack.sh", it_root());
    data_path(log_path, sizeof log_path, "stack.%s.log", it_run_id());
    kafka_marker_path(marker, sizeof marker);
    if (access(script, R_OK) != 0)
        return vt_err(errstr, errstr_size, "%s: %s", script, strerror(errno));
    bool is_kafka = strcmp(component, "kafka") == 0;
    if (is_kafka && strcmp(action, "stop") == 0) {
        /* Before the stop: even a half-done stop gets a restart. */
        int fd = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        if (fd != -1) close(fd);
    }
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd == -1)
        return vt_err(errstr, errstr_size, "open %s: %s", log_path, strerror(errno));
    dprintf(log_fd, "=== it: %s %s %s\n", script, action, component);
    char *argv[] = {"bash", script, (char *)action, (char *)component, NULL};
    pid_t pid = fork();
    if (pid == -1) {
        close(log_fd);
        return vt_err(errstr, errstr_size, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd != -1) dup2(null_fd, 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        execvp("bash", argv);
        _exit(127);
    }
    close(log_fd);
    int status;
    if (reap_within(pid, 300000, 50, &status) == -1)
        return vt_err(errstr, errstr_size, "deploy/stack.sh %s %s ran over 300 s; see %s",
                      action, component, log_path);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[128], tail[800];
        it_status_describe(status, how, sizeof how);
        log_tail(log_path, tail, sizeof tail);
        return vt_err(errstr, errstr_size, "deploy/stack.sh %s %s %s; %s ends with:\n%s",
                      action, component, how, log_path, tail);
    }
    if (is_kafka && strcmp(action, "start") == 0) unlink(marker);
    return 0;
}

/* ---- HTTP exchanges, for the OpenAPI coverage check -------------------------------------------- */

void it_record_http(const char *method, const char *path, int status) {
    char file[4096], line[1024];
    size_t plen;
    int fd, n;

    if (!method || !path) return;
    plen = strcspn(path, "?"); /* the query string is not part of the route */
    if (plen > 512) plen = 512;
    data_path(file, sizeof file, "http.jsonl");
    n = snprintf(line, sizeof line, "{\"method\":\"%s\",\"path\":\"%.*s\",\"status\":%d}\n", method, (int)plen, path,
                 status);
    if (n <= 0 || (size_t)n >= sizeof line || strpbrk(path, "\"\\")) return; /* no JSON escaping needed */
    fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    if (write(fd, line, (size_t)n) != n) { /* one short append: the coverage check reads what is there */
    }
    close(fd);
}

/* ---- assertions ------------------------------------------------------------------------------------ */

it_collector_t *it_collect(const char *topic, vt_from_t from, const char *jsonl_topic) {
    char err[IT_ERR_SIZE];
    it_collector_t *c = NULL;
    IT_OK(it_collector_new(&c, topic, from, jsonl_topic, IT_WAIT_MS, err, sizeof err), err);
    return c;
}

void it_catch_up(it_collector_t *c) {
    char err[IT_ERR_SIZE];
    IT_OK(it_collector_catch_up(c, IT_WAIT_MS, err, sizeof err), err);
}

void it_svc_stop(it_proc_t *p, const char *what) {
    char err[IT_ERR_SIZE], how[128];
    int status;
    bool killed;
    if (!p) return;
    IT_OK(it_proc_stop(p, SIGTERM, 30000, &status, &killed, err, sizeof err), err);
    it_status_describe(status, how, sizeof how);
    cr_assert(!killed, "%s ignored SIGTERM for 30 s (log %s)", what, it_proc_log_path(p));
    cr_assert((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                  (WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM),
              "%s %s on SIGTERM (log %s)", what, how, it_proc_log_path(p));
    it_proc_free(p);
}

int64_t it_stock(const char *dbname, const char *product_id) {
    char err[IT_ERR_SIZE];
    int64_t stock;
    IT_OK(it_pg_stock(dbname, product_id, &stock, err, sizeof err), err);
    return stock;
}

void it_assert_stock(const char *dbname, const char *product_id, int64_t want) {
    int64_t got = it_stock(dbname, product_id);
    cr_assert_eq(got, want, "stock of %s: want %" PRId64 ", database %s has %" PRId64, product_id,
                 want, dbname, got);
}

char *it_json_take(json_object *obj) {
    char *s = strdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
    json_object_put(obj);
    cr_assert(s != NULL, "out of memory");
    return s;
}

char *it_order_cmd(const char *type, const char *ikey, const char *order_id) {
    json_object *o = json_object_new_object();
    json_object_object_add(o, "type", json_object_new_string(type));
    json_object_object_add(o, "idempotency_key", json_object_new_string(ikey));
    json_object_object_add(o, "order_id", json_object_new_string(order_id));
    return it_json_take(o);
}
