/* Unit tests of vx_strset, the set the batch applier keeps ordering keys in (a key seen already in
 * the SQL call being built starts the next call; a key of an entry held aside holds back its followers). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "vx_strset.h"

Test(strset, add_find_and_clear) {
    vx_strset_t set;
    char other[] = "key-1"; /* equal, not the same pointer */

    cr_assert_eq(vx_strset_init(&set, 4), 0);
    cr_expect_null(vx_strset_find(&set, "key-1"));
    cr_expect_eq(vx_strset_add(&set, "key-1"), 1);
    cr_expect_eq(vx_strset_add(&set, other), 0, "an equal string is already there");
    cr_expect_str_eq(vx_strset_find(&set, other), "key-1");
    cr_expect_neq(vx_strset_find(&set, other), other, "find answers the string the set holds");
    cr_expect_null(vx_strset_find(&set, "key-2"));
    vx_strset_clear(&set);
    cr_expect_null(vx_strset_find(&set, "key-1"));
    cr_expect_eq(vx_strset_add(&set, "key-1"), 1);
    vx_strset_free(&set);
}

/* Filled to its stated room, every string is found and nothing else is. */
Test(strset, holds_max_strings) {
    enum { MAX = 5000 };
    static char keys[MAX][16];
    vx_strset_t set;

    cr_assert_eq(vx_strset_init(&set, MAX), 0);
    cr_expect_geq(set.cap, 2 * MAX);
    for (int i = 0; i < MAX; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        cr_assert_eq(vx_strset_add(&set, keys[i]), 1, "%s", keys[i]);
    }
    for (int i = 0; i < MAX; i++) cr_assert_eq(vx_strset_find(&set, keys[i]), keys[i], "%s", keys[i]);
    cr_expect_null(vx_strset_find(&set, "k5000"));
    cr_expect_null(vx_strset_find(&set, ""));
    vx_strset_free(&set);
    cr_expect_null(set.slot);
}

/* Past its stated room the set grows: nothing is lost and the table stays at most half full. */
Test(strset, grows_past_its_room) {
    enum { N = 3000 };
    static char keys[N][16];
    vx_strset_t set;

    cr_assert_eq(vx_strset_init(&set, 4), 0);
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof(keys[i]), "g%d", i);
        cr_assert_eq(vx_strset_add(&set, keys[i]), 1, "%s", keys[i]);
    }
    cr_expect_eq(set.n, (size_t)N);
    cr_expect_geq(set.cap, 2 * (size_t)N);
    for (int i = 0; i < N; i++) cr_assert_eq(vx_strset_find(&set, keys[i]), keys[i], "%s", keys[i]);
    vx_strset_clear(&set);
    cr_expect_eq(set.n, 0);
    cr_expect_null(vx_strset_find(&set, "g1"));
    vx_strset_free(&set);
}

/* A set never initialised (zeroed) adds and frees like any other. */
Test(strset, zeroed_set_is_usable) {
    vx_strset_t set = {0};
    cr_expect_null(vx_strset_find(&set, "a"));
    cr_expect_eq(vx_strset_add(&set, "a"), 1);
    cr_expect_str_eq(vx_strset_find(&set, "a"), "a");
    vx_strset_free(&set);
    vx_strset_free(&set);
}
