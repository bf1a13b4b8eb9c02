/* fuzz_jpeg.c — libFuzzer harness of the JPEG reader (cn_jpeg_read); built and run by `make fuzz`. */
#include "fuzz_memfd.h"
#include "fuzz_targets.h"

FUZZ_FILE_TARGET(fuzz_jpeg)
