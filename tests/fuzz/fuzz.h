/*
 * fuzz.h - what the fuzz targets of tests/fuzz/ share: the libFuzzer entry
 * points, and a scratch directory on tmpfs (queue directories, config and log
 * files written per input: fsync is free there).
 */
#ifndef RELAY_FUZZ_H
#define RELAY_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/*
 * A fresh directory for this process, made once (under $FUZZ_TMPDIR, else
 * /dev/shm when it exists, else $TMPDIR or /tmp) and removed at exit; the
 * returned path stays valid.
 */
const char *fuzz_tmpdir(void);
/* Write data to path (created or truncated); aborts on failure. */
void fuzz_write_file(const char *path, const void *data, size_t len);
/* Remove everything under dir, but not dir itself. */
void fuzz_clear_dir(const char *dir);

#endif
