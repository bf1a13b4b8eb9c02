/* io_file.c — atomic file replacement and the checked open of a file to read (see io_file.h). */
#include "io_file.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ==== atomic file replacement ============================================================== */

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    if (slash == path) return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* True when name is base + ".tmp." + the 6 characters mkstemp puts in place of XXXXXX. */
static bool is_temp_of(const char *name, const char *base) {
    size_t n = strlen(base);
    if (strncmp(name, base, n) != 0 || strncmp(name + n, ".tmp.", 5) != 0) return false;
    const char *x = name + n + 5;
    for (int i = 0; i < 6; i++)
        if (!isalnum((unsigned char)x[i])) return false;
    return x[6] == '\0';
}

/* Removes the temp files of path that killed writers left behind (a checkpoint each, every kill).
 * A temp file is stale when no process holds the flock its writer takes for the file's whole life
 * (a killed process's locks vanish with it) and it was not modified in the last
 * CN_ATOMIC_STALE_SECONDS (covering the instants between mkstemp and flock, and between close and
 * rename). Only exact path.tmp.XXXXXX names are touched; errors are ignored (best effort). */
static void remove_stale_temps(const char *path, const char *own_temp) {
    char *dir = dir_of(path);
    DIR *d = dir ? opendir(dir) : NULL;
    free(dir);
    if (!d) return;
    const char *slash = strrchr(path, '/'), *base = slash ? slash + 1 : path;
    const char *own_slash = strrchr(own_temp, '/'), *own = own_slash ? own_slash + 1 : own_temp;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_temp_of(e->d_name, base) || strcmp(e->d_name, own) == 0) continue;
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0) continue;
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_mtime + CN_ATOMIC_STALE_SECONDS < now &&
            flock(fd, LOCK_EX | LOCK_NB) == 0)
            (void)unlinkat(dirfd(d), e->d_name, 0);
        close(fd); /* drops the lock taken above */
    }
    closedir(d);
}

int cn_atomic_begin(cn_atomic_file *af, const char *path, cn_error *err) {
    af->fd = -1;
    af->tmp_path = NULL;
    af->path = path;
    size_t len = strlen(path);
    if (len == 0) {
        cn_error_set(err, "cannot write '': empty path");
        return -1;
    }
    static const char suffix[] = ".tmp.XXXXXX";
    af->tmp_path = malloc(len + sizeof suffix);
    if (!af->tmp_path) {
        cn_error_set(err, "cannot write '" CN_PATH_FMT "': out of memory", path);
        return -1;
    }
    memcpy(af->tmp_path, path, len);
    memcpy(af->tmp_path + len, suffix, sizeof suffix);
    int fd = mkostemp(af->tmp_path, O_CLOEXEC);
    if (fd < 0) {
        cn_error_set(err, "cannot write '" CN_PATH_FMT "': %s", path, strerror(errno));
        free(af->tmp_path);
        af->tmp_path = NULL;
        return -1;
    }
    /* mkstemp makes the file 0600; give it the mode a plain fopen would (or the replaced file's).
     * Reading the umask means setting it: harmless unless another thread creates files now. */
    struct stat st;
    mode_t mode;
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
        mode = st.st_mode & 07777;
    } else {
        mode_t mask = umask(077);
        umask(mask);
        mode = 0666 & ~mask;
    }
    (void)fchmod(fd, mode);
    (void)flock(fd, LOCK_EX); /* "in use" for remove_stale_temps, until close or death */
    af->fd = fd;
    remove_stale_temps(path, af->tmp_path);
    return 0;
}

int cn_atomic_write(cn_atomic_file *af, const void *buf, size_t n, cn_error *err) {
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(af->fd, p, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            cn_error_set(err, "cannot write '" CN_PATH_FMT "': %s", af->path, strerror(errno));
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

void cn_atomic_abort(cn_atomic_file *af) {
    if (af->fd >= 0) close(af->fd);
    af->fd = -1;
    if (af->tmp_path) {
        unlink(af->tmp_path);
        free(af->tmp_path);
        af->tmp_path = NULL;
    }
}

int cn_atomic_commit(cn_atomic_file *af, cn_error *err) {
    if (fsync(af->fd) != 0) {
        cn_error_set(err, "cannot write '" CN_PATH_FMT "': %s (fsync)", af->path, strerror(errno));
        cn_atomic_abort(af);
        return -1;
    }
    int fd = af->fd;
    af->fd = -1;
    if (close(fd) != 0) {
        cn_error_set(err, "cannot write '" CN_PATH_FMT "': %s (close)", af->path, strerror(errno));
        cn_atomic_abort(af);
        return -1;
    }
    if (rename(af->tmp_path, af->path) != 0) {
        cn_error_set(err, "cannot replace '" CN_PATH_FMT "': %s", af->path, strerror(errno));
        cn_atomic_abort(af);
        return -1;
    }
    free(af->tmp_path);
    af->tmp_path = NULL;
    /* Make the rename itself durable. Best effort: the new file is in place either way. */
    char *dir = dir_of(af->path);
    if (dir) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            (void)fsync(dfd);
            close(dfd);
        }
        free(dir);
    }
    return 0;
}

/* ==== opening a file to read =============================================================== */

int cn_file_open_regular(const char *path, size_t *size, cn_error *err) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        cn_error_set(err, "cannot open '" CN_PATH_FMT "': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    const char *why = fstat(fd, &st) != 0 ? strerror(errno)
                      : S_ISDIR(st.st_mode) ? strerror(EISDIR)
                      : !S_ISREG(st.st_mode) ? "not a regular file"
                      : st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)SIZE_MAX - 1 ? "file too large"
                                                                                       : NULL;
    if (why) {
        cn_error_set(err, "cannot read '" CN_PATH_FMT "': %s", path, why);
        close(fd);
        return -1;
    }
    *size = (size_t)st.st_size;
    return fd;
}
