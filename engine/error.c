/* error.c — error message formatting (see error.h). */
#include "error.h"

#include <stdarg.h>
#include <stdio.h>

void cn_error_set(cn_error *err, const char *fmt, ...) {
    if (!err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
}
