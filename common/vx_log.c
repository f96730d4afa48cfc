/* vx_log: JSON-lines logging. See vx_log.h. */
#include "vx_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define VX_LOG_LINE_MAX 4096

static const char *log_service = "valerix";
static int log_level = VX_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void vx_log_init(const char *service) {
    static char buf[1 << 16];
    const char *lvl = getenv("VX_LOG_LEVEL");
    log_service = service;
    if (lvl) {
        for (int i = 0; i < 4; i++)
            if (strcasecmp(lvl, level_names[i]) == 0) log_level = i;
    }
    setvbuf(stderr, buf, _IOFBF, sizeof(buf));
}

int vx_log_enabled(int level) { return level >= log_level; }

/* Appends s as a JSON string body (without quotes), escaped; stops at the buffer's end. */
static size_t put_escaped(char *out, size_t pos, size_t cap, const char *s) {
    static const char hex[] = "0123456789abcdef";
    for (; *s && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)c;
        } else if (c == '\n') {
            out[pos++] = '\\';
            out[pos++] = 'n';
        } else if (c < 0x20) {
            memcpy(out + pos, "\\u00", 4);
            out[pos + 4] = hex[c >> 4];
            out[pos + 5] = hex[c & 15];
            pos += 6;
        } else {
            out[pos++] = (char)c;
        }
    }
    return pos;
}

static size_t put_raw(char *out, size_t pos, size_t cap, const char *s) {
    size_t n = strlen(s);
    if (pos + n + 4 > cap) n = cap > pos + 4 ? cap - pos - 4 : 0;
    memcpy(out + pos, s, n);
    return pos + n;
}

void vx_log(int level, const char *msg, ...) {
    char line[VX_LOG_LINE_MAX];
    size_t pos = 0, cap = sizeof(line) - 2;
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (level < log_level) return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    pos += (size_t)snprintf(line, cap, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"svc\":\"",
                            tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                            ts.tv_nsec / 1000000, level_names[level]);
    pos = put_escaped(line, pos, cap, log_service);
    pos = put_raw(line, pos, cap, "\",\"msg\":\"");
    pos = put_escaped(line, pos, cap, msg);
    pos = put_raw(line, pos, cap, "\"");

    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *), *v;
        if (!k) break;
        v = va_arg(ap, const char *);
        if (!v) continue; /* an absent optional field is simply left out */
        pos = put_raw(line, pos, cap, ",\"");
        if (*k == '#') {
            pos = put_escaped(line, pos, cap, k + 1);
            pos = put_raw(line, pos, cap, "\":");
            pos = put_raw(line, pos, cap, v);
        } else {
            pos = put_escaped(line, pos, cap, k);
            pos = put_raw(line, pos, cap, "\":\"");
            pos = put_escaped(line, pos, cap, v);
            pos = put_raw(line, pos, cap, "\"");
        }
    }
    va_end(ap);
    line[pos++] = '}';
    line[pos++] = '\n';
    fwrite(line, 1, pos, stderr);
    if (level >= VX_LOG_WARN) fflush(stderr);
}

void vx_log_flush(void) { fflush(stderr); }
