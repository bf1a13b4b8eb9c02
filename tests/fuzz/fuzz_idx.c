/* fuzz_idx.c — libFuzzer harness of the IDX reader (cn_idx_load); built and run by `make fuzz`. */
#include "fuzz_memfd.h"
#include "fuzz_targets.h"

FUZZ_FILE_TARGET(fuzz_idx)
