/* vx_log: structured logging for every Valerix process, one JSON object per line on stderr.
 *
 * Fields come as key/value string pairs ended by NULL. A key that starts with '#' carries a raw
 * JSON value (a number or a boolean) and is written without quotes or the '#'. Lines are built in
 * a fixed buffer and written with one fwrite, so concurrent threads never interleave a line.
 * Never pass a secret: nothing here can tell one from any other string. */
#ifndef VX_LOG_H
#define VX_LOG_H

enum { VX_LOG_DEBUG = 0, VX_LOG_INFO, VX_LOG_WARN, VX_LOG_ERROR };

/* Sets the service name written on every line and reads VX_LOG_LEVEL (debug|info|warn|error).
 * `service` is borrowed and must outlive logging (a string literal). */
void vx_log_init(const char *service);
int vx_log_enabled(int level);
void vx_log(int level, const char *msg, ...) __attribute__((sentinel));
/* stderr is block-buffered for speed; loops flush once per batch, warnings flush at once. */
void vx_log_flush(void);

#endif
