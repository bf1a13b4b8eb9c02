/* test_fuzz_replay.c — the fuzzing regression suite, in plain C (no clang needed): every seed of
 * tests/fuzz/corpus/<loader>/ and every past crash input of tests/fuzz/crashes/<loader>/ goes
 * through the engine's reader, each in its own child process, which must exit normally with the
 * input either loaded or refused with a message naming it (tests/fuzz/fuzz_targets.h), and with
 * bounded memory: the child's peak resident memory may grow by at most MAX_GROWTH, and (outside
 * AddressSanitizer, which reserves terabytes of shadow) its address space is capped too, so a
 * runaway allocation fails (and a refusal for lack of memory counts as a failure) instead of
 * swapping. The valid seeds must load, the crash inputs must be refused (those named ok_*, valid
 * files that once broke a reader, must load). Regenerate the files with tests/tools/make_fuzz_inputs.py. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../fuzz/fuzz_targets.h"
#include "ctest.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define MAX_GROWTH ((long)256 << 20) /* bytes of peak RSS one input may add */
#define AS_HEADROOM ((size_t)3 << 30) /* room to see a blow-up in the peak RSS, not only fail it */

typedef fuzz_outcome (*reader_fn)(const char *path, char *why, size_t cap);

static char root[512];

/* Bytes of address space in use now (first field of /proc/self/statm, in pages). */
static size_t address_space_now(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long pages = 0;
    if (f) {
        if (fscanf(f, "%lu", &pages) != 1) pages = 0;
        fclose(f);
    }
    return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}

static long peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

/* Exit codes of the child: 0 loaded, 1 refused, 2 a bug in the outcome, 3 memory above the bound. */
static int replay_one(reader_fn read, const char *path, char *why, size_t cap) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, cap, "fork failed");
        return -1;
    }
    if (pid == 0) {
        if (!UNDER_ASAN) {
            struct rlimit lim = {address_space_now() + AS_HEADROOM, RLIM_INFINITY};
            setrlimit(RLIMIT_AS, &lim);
        }
        long before = peak_rss_bytes();
        char child_why[256] = "";
        fuzz_outcome r = read(path, child_why, sizeof child_why);
        long grown = peak_rss_bytes() - before;
        if (r == FUZZ_BUG) {
            fprintf(stderr, "  %s: %s\n", path, child_why);
            _exit(2);
        }
        /* under the address-space cap, a reader that tried to allocate beyond it fails for lack of
         * memory: that is a blow-up too, however politely reported */
        if (r == FUZZ_REFUSED && (strcasestr(child_why, "out of memory") || strcasestr(child_why, "insufficient memory"))) {
            fprintf(stderr, "  %s: refused for lack of memory: %s\n", path, child_why);
            _exit(3);
        }
        if (grown > MAX_GROWTH) {
            fprintf(stderr, "  %s: peak memory grew by %ld MiB\n", path, grown >> 20);
            _exit(3);
        }
        _exit(r == FUZZ_LOADED ? 0 : 1);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {}
    if (WIFSIGNALED(status)) {
        snprintf(why, cap, "killed by signal %d", WTERMSIG(status));
        return -1;
    }
    return WEXITSTATUS(status);
}

/* Replays every file of tests/fuzz/<kind>/<loader>; want: 0 all must load, 1 all must be refused
 * except files named ok_* (valid files that once broke a reader), which must load. Returns the
 * number of files. */
static int replay_dir(const char *kind, const char *loader, reader_fn read, int want) {
    char dir[768];
    snprintf(dir, sizeof dir, "%s/tests/fuzz/%s/%s", root, kind, loader);
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024], why[256] = "";
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        int code = replay_one(read, path, why, sizeof why);
        int ok = code == (strncmp(e->d_name, "ok_", 3) == 0 ? 0 : want);
        if (!ok) fprintf(stderr, "  FAIL replay %s: exit %d %s\n", path, code, why);
        CHECK(ok);
        n++;
    }
    closedir(d);
    return n;
}

static void test_replay_safetensors(void) {
    CHECK(replay_dir("corpus", "safetensors", fuzz_safetensors, 0) >= 3);
    CHECK(replay_dir("crashes", "safetensors", fuzz_safetensors, 1) >= 3);
}

static void test_replay_png(void) {
    CHECK(replay_dir("corpus", "png", fuzz_png, 0) >= 3);
    CHECK(replay_dir("crashes", "png", fuzz_png, 1) >= 4);
}

static void test_replay_jpeg(void) {
    CHECK(replay_dir("corpus", "jpeg", fuzz_jpeg, 0) >= 3);
    CHECK(replay_dir("crashes", "jpeg", fuzz_jpeg, 1) >= 5);
}

static void test_replay_idx(void) {
    CHECK(replay_dir("corpus", "idx", fuzz_idx, 0) >= 3);
    CHECK(replay_dir("crashes", "idx", fuzz_idx, 1) >= 3);
}

/* The bound itself must bite: with the PNG cap raised, the 8200 x 8200 bomb loads, and its
 * 269 MB tensor pushes the child past MAX_GROWTH (or its address-space cap). */
static void test_memory_bound_is_measured(void) {
    char path[768], why[256] = "";
    snprintf(path, sizeof path, "%s/tests/fuzz/crashes/png/bomb_8200x8200_grey.png", root);
    setenv("CUNET_PNG_MAX_SAMPLES", "100000000", 1);
    int code = replay_one(fuzz_png, path, why, sizeof why);
    unsetenv("CUNET_PNG_MAX_SAMPLES");
    CHECK(code == 3); /* over the bound */
    code = replay_one(fuzz_png, path, why, sizeof why);
    CHECK(code == 1);
}

int main(void) {
    const char *r = getenv("CUNET_ROOT");
    snprintf(root, sizeof root, "%s", r && *r ? r : ".");
    RUN(test_replay_safetensors);
    RUN(test_replay_png);
    RUN(test_replay_jpeg);
    RUN(test_replay_idx);
    RUN(test_memory_bound_is_measured);
    return CTEST_SUMMARY("fuzz_replay");
}
