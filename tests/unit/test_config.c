/* Unit tests of vx_config: environment settings fall back to their default when unset or empty,
 * and a malformed or out-of-range value is refused with a message naming the variable.
 * Each test uses its own variable names; Criterion runs every test in its own process. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "vx_config.h"

static char errstr[256];

Test(config_str, unset_or_empty_gives_the_default) {
    unsetenv("VX_T_STR");
    cr_expect_str_eq(vx_cfg_str("VX_T_STR", "dflt"), "dflt");
    setenv("VX_T_STR", "", 1);
    cr_expect_str_eq(vx_cfg_str("VX_T_STR", "dflt"), "dflt");
    setenv("VX_T_STR", "set", 1);
    cr_expect_str_eq(vx_cfg_str("VX_T_STR", "dflt"), "set");
}

/* vx_cfg_int of VX_T_INT in [min, max] with default 7; *out is -999 unless written. */
static int cfg_int(const char *value, long long min, long long max, long long *out) {
    if (value)
        setenv("VX_T_INT", value, 1);
    else
        unsetenv("VX_T_INT");
    *out = -999;
    errstr[0] = '\0';
    return vx_cfg_int("VX_T_INT", 7, min, max, out, errstr, sizeof(errstr));
}

Test(config_int, unset_or_empty_gives_the_default) {
    long long v;
    cr_expect_eq(cfg_int(NULL, 0, 100, &v), 0);
    cr_expect_eq(v, 7);
    cr_expect_eq(cfg_int("", 0, 100, &v), 0);
    cr_expect_eq(v, 7);
}

Test(config_int, valid_values_inside_the_range_are_read) {
    long long v;
    cr_expect_eq(cfg_int("42", 0, 100, &v), 0, "%s", errstr);
    cr_expect_eq(v, 42);
    cr_expect_eq(cfg_int("-5", -10, 10, &v), 0, "%s", errstr);
    cr_expect_eq(v, -5);
    cr_expect_eq(cfg_int("0", 0, 100, &v), 0, "the minimum is inclusive: %s", errstr);
    cr_expect_eq(v, 0);
    cr_expect_eq(cfg_int("100", 0, 100, &v), 0, "the maximum is inclusive: %s", errstr);
    cr_expect_eq(v, 100);
    cr_expect_eq(cfg_int("9223372036854775807", 0, 9223372036854775807LL, &v), 0, "%s", errstr);
    cr_expect_eq(v, 9223372036854775807LL);
}

Test(config_int, non_integers_are_refused_naming_the_variable) {
    static const char *const bad[] = {"abc", "12abc", "5 ", "1.5", "0x10", "-", "99999999999999999999"};
    long long v;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(cfg_int(bad[i], -1000, 1000, &v), -1, "\"%s\" accepted as %lld", bad[i], v);
        cr_expect_not_null(strstr(errstr, "VX_T_INT"), "\"%s\": %s", bad[i], errstr);
        cr_expect_not_null(strstr(errstr, "not an integer"), "\"%s\": %s", bad[i], errstr);
    }
}

Test(config_int, values_outside_the_range_are_refused_with_the_range) {
    long long v;
    cr_expect_eq(cfg_int("101", 0, 100, &v), -1);
    cr_expect_not_null(strstr(errstr, "VX_T_INT"), "%s", errstr);
    cr_expect_not_null(strstr(errstr, "0..100"), "%s", errstr);
    cr_expect_eq(cfg_int("-1", 0, 100, &v), -1);
    cr_expect_not_null(strstr(errstr, "0..100"), "%s", errstr);
}

/* vx_cfg_double of VX_T_DBL in [min, max] with default 0.5; *out is -999 unless written. */
static int cfg_double(const char *value, double min, double max, double *out) {
    if (value)
        setenv("VX_T_DBL", value, 1);
    else
        unsetenv("VX_T_DBL");
    *out = -999;
    errstr[0] = '\0';
    return vx_cfg_double("VX_T_DBL", 0.5, min, max, out, errstr, sizeof(errstr));
}

Test(config_double, unset_gives_the_default_and_fractions_are_read) {
    double d;
    cr_expect_eq(cfg_double(NULL, 0, 1, &d), 0);
    cr_expect_float_eq(d, 0.5, 1e-12);
    cr_expect_eq(cfg_double("", 0, 1, &d), 0);
    cr_expect_float_eq(d, 0.5, 1e-12);
    cr_expect_eq(cfg_double("0.25", 0, 1, &d), 0, "%s", errstr);
    cr_expect_float_eq(d, 0.25, 1e-12);
    cr_expect_eq(cfg_double("1e-1", 0, 1, &d), 0, "%s", errstr);
    cr_expect_float_eq(d, 0.1, 1e-12);
    cr_expect_eq(cfg_double("1", 0, 1, &d), 0, "the maximum is inclusive: %s", errstr);
    cr_expect_float_eq(d, 1.0, 1e-12);
    cr_expect_eq(cfg_double("3", 0, 10, &d), 0, "an integer is a number too: %s", errstr);
    cr_expect_float_eq(d, 3.0, 1e-12);
}

Test(config_double, malformed_or_out_of_range_is_refused_naming_the_variable) {
    static const char *const bad[] = {"abc", "0.5x", "1.5", "-0.1", ".", "1e999"};
    double d;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(cfg_double(bad[i], 0, 1, &d), -1, "\"%s\" accepted as %g", bad[i], d);
        cr_expect_not_null(strstr(errstr, "VX_T_DBL"), "\"%s\": %s", bad[i], errstr);
    }
}

/* Bug: NaN compares false with both bounds, so strtod's "nan" passes the range check. */
Test(config_double, nan_is_refused) {
    double d;
    cr_expect_eq(cfg_double("nan", 0, 1, &d), -1, "\"nan\" accepted as %g", d);
}

Test(config_addr, host_and_port_are_split) {
    char host[64];
    int port = -1;

    cr_expect_eq(vx_cfg_addr("127.0.0.1:8080", host, sizeof(host), &port, errstr, sizeof(errstr)), 0, "%s", errstr);
    cr_expect_str_eq(host, "127.0.0.1");
    cr_expect_eq(port, 8080);
    cr_expect_eq(vx_cfg_addr("db.internal:65535", host, sizeof(host), &port, errstr, sizeof(errstr)), 0, "%s", errstr);
    cr_expect_str_eq(host, "db.internal");
    cr_expect_eq(port, 65535);
}

Test(config_addr, malformed_addresses_are_refused) {
    static const char *const bad[] = {"localhost", ":8080", "host:", "host:http", "host:8080x",
                                      "host:65536", "host:-1", ""};
    char host[64];
    int port;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        cr_expect_eq(vx_cfg_addr(bad[i], host, sizeof(host), &port, errstr, sizeof(errstr)), -1, "\"%s\" accepted",
                     bad[i]);
        cr_expect_not_null(strstr(errstr, bad[i]), "\"%s\": the message quotes the address: %s", bad[i], errstr);
    }
}

Test(config_addr, host_longer_than_the_buffer_is_refused) {
    char host[8];
    int port;
    cr_expect_eq(vx_cfg_addr("12345678:80", host, sizeof(host), &port, errstr, sizeof(errstr)), -1);
    cr_expect_eq(vx_cfg_addr("1234567:80", host, sizeof(host), &port, errstr, sizeof(errstr)), 0, "%s", errstr);
    cr_expect_str_eq(host, "1234567");
}
