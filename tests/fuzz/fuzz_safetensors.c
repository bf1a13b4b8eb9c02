/* fuzz_safetensors.c — libFuzzer harness of the safetensors reader: the input is opened from
 * memory (cn_safetensors_open_memory; cn_safetensors_open reads a file into memory and shares
 * everything after that), then every tensor and metadata entry is read. Built and run by `make fuzz`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char why[256];
    cn_error err = {{0}};
    cn_safetensors_file *f = cn_safetensors_open_memory(data, size, "fuzz", &err);
    fuzz_outcome r = f ? fuzz_safetensors_file(f, "fuzz", why, sizeof why) : fuzz_refused(&err, "fuzz", why, sizeof why);
    cn_safetensors_close(f);
    if (r == FUZZ_BUG) {
        fprintf(stderr, "fuzz_safetensors: %s\n", why);
        abort();
    }
    return 0;
}
