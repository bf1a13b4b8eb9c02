/* fuzz_memfd.h — the input as a file: the PNG and IDX readers take a path, so each fuzz input is
 * written to one anonymous in-memory file (memfd) and read back through /proc/self/fd/N, the same
 * code path as a file on disk, without touching the disk. */
#ifndef CN_FUZZ_MEMFD_H
#define CN_FUZZ_MEMFD_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Writes data into the fuzzer's memfd and returns its path (valid until the next call). */
static const char *fuzz_as_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("cunet_fuzz", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || (size > 0 && pwrite(fd, data, size, 0) != (ssize_t)size)) {
        perror("memfd write");
        abort();
    }
    return path;
}

/* The libFuzzer entry point for a reader of files: each input goes through read (fuzz_targets.h)
 * as a file; a FUZZ_BUG outcome aborts with its reason, so libFuzzer keeps the input. */
#define FUZZ_FILE_TARGET(read)                                                      \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);                   \
    int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {                  \
        char why[256];                                                              \
        if (read(fuzz_as_file(data, size), why, sizeof why) == FUZZ_BUG) {          \
            fprintf(stderr, #read ": %s\n", why);                                   \
            abort();                                                                \
        }                                                                           \
        return 0;                                                                   \
    }

#endif
