/* io_file.h — the file plumbing the engine's readers and writers share (io_safetensors.c,
 * io_idx.c, io_png.c): atomic replacement of a file, and opening a regular file for reading.
 *
 *     cn_atomic_file af;
 *     if (cn_atomic_begin(&af, path, err)) return -1;
 *     if (cn_atomic_write(&af, buf, n, err)) { cn_atomic_abort(&af); return -1; }
 *     return cn_atomic_commit(&af, err);
 *
 * begin creates path.tmp.XXXXXX (mkstemp, same directory, so rename is atomic) with the mode of
 * the file it replaces, or 0666 less the umask; commit fsyncs and closes it, renames it over
 * path and fsyncs the directory (best effort: some file systems refuse directory fsync). On a
 * failed commit, and on abort, the temp file is removed and path is left as it was.
 * A writer killed before commit leaves its path.tmp.XXXXXX behind; begin removes those of the same
 * path that are stale: no live writer holds them (each holds an flock on its temp file) and they
 * were not modified in the last CN_ATOMIC_STALE_SECONDS. Other names are never touched.
 */
#ifndef CN_IO_FILE_H
#define CN_IO_FILE_H

#include <stddef.h>

#include "error.h"

/* Paths in messages are cut to this many bytes, so a hostile path cannot swamp the message. */
#define CN_PATH_FMT "%.200s"

#define CN_ATOMIC_STALE_SECONDS 60
typedef struct cn_atomic_file {
    int fd;          /* the temp file, open for writing */
    char *tmp_path;  /* malloc'd */
    const char *path;
} cn_atomic_file;

/* Creates the temp file of path (see above); 0, or -1 with err filled ("cannot write 'p': ..."). */
int cn_atomic_begin(cn_atomic_file *af, const char *path, cn_error *err);
/* Appends n bytes of buf to the temp file; 0, or -1 with err filled (then call cn_atomic_abort). */
int cn_atomic_write(cn_atomic_file *af, const void *buf, size_t n, cn_error *err);
/* fsync, close, rename over path; 0, or -1 with err filled and the temp file removed. */
int cn_atomic_commit(cn_atomic_file *af, cn_error *err);
/* Closes and removes the temp file; path stays as it was. */
void cn_atomic_abort(cn_atomic_file *af);

/* Opens path read-only (close-on-exec) and checks that it is a regular file; returns the
 * descriptor (the caller closes it) with the file's size in *size, or -1 with err filled:
 * "cannot open 'p': No such file or directory", "cannot read 'p': Is a directory" (or "not a
 * regular file", "file too large"). */
int cn_file_open_regular(const char *path, size_t *size, cn_error *err);

#endif
