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

/* Appends s as a JSON string body (without quotes), escaped, only whole characters, stopping
 * before `cap`. Returns the new position. */
static size_t put_escaped(char *out, size_t pos, size_t cap, const char *s) {
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\' || c == '\n') {
            if (pos + 2 > cap) break;
            out[pos++] = '\\';
            out[pos++] = c == '\n' ? 'n' : (char)c;
        } else if (c < 0x20) {
            if (pos + 6 > cap) break;
            memcpy(out + pos, "\\u00", 4);
            out[pos + 4] = hex[c >> 4];
            out[pos + 5] = hex[c & 15];
            pos += 6;
        } else {
            size_t n = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2; /* a whole character or none */
            if (pos + n > cap || strnlen(s, n) < n) break;
            memcpy(out + pos, s, n);
            pos += n;
            s += n - 1;
        }
    }
    return pos;
}

void vx_log(int level, const char *msg, ...) {
    char line[VX_LOG_LINE_MAX];
    /* every field is written whole or cut inside its value; 3 bytes stay for "}\n */
    size_t pos, cap = sizeof(line) - 3;
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (level < log_level) return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    pos = (size_t)snprintf(line, 64, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"svc\":\"",
                           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                           ts.tv_nsec / 1000000, level_names[level]);
    pos = put_escaped(line, pos, 160, log_service);
    memcpy(line + pos, "\",\"msg\":\"", 9);
    pos = put_escaped(line, pos + 9, 512, msg);
    line[pos++] = '"';

    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *), *v;
        if (!k) break;
        v = va_arg(ap, const char *);
        if (!v) continue; /* an absent optional field is simply left out */
        if (pos + 16 > cap) break; /* no room for another field: the line ends here */
        line[pos++] = ',';
        line[pos++] = '"';
        pos = put_escaped(line, pos, cap - 8, k + (*k == '#'));
        line[pos++] = '"';
        line[pos++] = ':';
        if (*k == '#') {
            size_t n = strspn(v, "0123456789.-+eEtruefalsn"); /* a number or a boolean, nothing else */
            if (n == 0 || v[n] || pos + n > cap) {
                memcpy(line + pos, "null", 4);
                pos += 4;
            } else {
                memcpy(line + pos, v, n);
                pos += n;
            }
        } else {
            line[pos++] = '"';
            pos = put_escaped(line, pos, cap - 1, v);
            line[pos++] = '"';
        }
    }
    va_end(ap);
    line[pos++] = '}';
    line[pos++] = '\n';
    fwrite(line, 1, pos, stderr);
    if (level >= VX_LOG_WARN) fflush(stderr);
}

void vx_log_flush(void) { fflush(stderr); }
