/* error.h — error reporting for the cunet engine.
 *
 * Fallible engine functions take a `cn_error *err` as their last argument. On failure they return
 * NULL (or a non-zero status) and write a human-readable message into err->msg; err may be NULL
 * when the caller does not care. The engine never aborts on user input.
 */
#ifndef CN_ERROR_H
#define CN_ERROR_H

#define CN_ERROR_LEN 512

typedef struct cn_error {
    char msg[CN_ERROR_LEN];
} cn_error;

/* Writes a printf-style message into err (no-op when err is NULL). */
void cn_error_set(cn_error *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#endif
