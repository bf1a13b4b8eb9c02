/* ctest.h — a minimal unit-test harness for the engine's C tests.
 *
 * Each test is a `static void test_name(void)` registered in main with RUN(test_name). CHECK
 * records a failure and continues; the summary line "NAME: N passed, N failed" is read by
 * tests/run_all.sh, and the exit status is non-zero on any failure.
 */
#ifndef CN_CTEST_H
#define CN_CTEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int ctest_passed, ctest_failed, ctest_current_failed;
static const char *ctest_current;

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "  FAIL %s (%s:%d): %s\n", ctest_current, __FILE__, __LINE__,     \
                    #cond);                                                                   \
            ctest_current_failed = 1;                                                         \
        }                                                                                     \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, rtol, atol)                                                         \
    do {                                                                                      \
        double ca_ = (double)(a), cb_ = (double)(b);                                          \
        if (!(fabs(ca_ - cb_) <= (atol) + (rtol) * fabs(cb_))) {                              \
            fprintf(stderr, "  FAIL %s (%s:%d): %s = %.9g, expected %.9g\n", ctest_current,    \
                    __FILE__, __LINE__, #a, ca_, cb_);                                        \
            ctest_current_failed = 1;                                                         \
        }                                                                                     \
    } while (0)

#define RUN(fn)                                                                               \
    do {                                                                                      \
        ctest_current = #fn;                                                                  \
        ctest_current_failed = 0;                                                             \
        fn();                                                                                 \
        if (ctest_current_failed) ctest_failed++; else ctest_passed++;                        \
    } while (0)

#define CTEST_SUMMARY(suite)                                                                  \
    (printf("%s: %d passed, %d failed\n", (suite), ctest_passed, ctest_failed),               \
     ctest_failed ? 1 : 0)

#endif
