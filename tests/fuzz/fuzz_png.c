/* fuzz_png.c — libFuzzer harness of the PNG reader (cn_png_read); built and run by `make fuzz`. */
#include "fuzz_memfd.h"
#include "fuzz_targets.h"

FUZZ_FILE_TARGET(fuzz_png)
