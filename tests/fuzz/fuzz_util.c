/*
 * fuzz_util.c - the scratch directory and file helpers of tests/fuzz/fuzz.h.
 * Owns: the process's scratch directory (removed at exit).
 */
#include "fuzz.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char fuzz_dir[256];

static void
fuzz_rm_tree(const char *dir, int self)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[512];
	struct stat st;

	if (d != NULL) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
				fuzz_rm_tree(path, 1);
			else
				unlink(path);
		}
		closedir(d);
	}
	if (self)
		rmdir(dir);
}

static void
fuzz_tmpdir_remove(void)
{
	if (fuzz_dir[0] != '\0')
		fuzz_rm_tree(fuzz_dir, 1);
}

const char *
fuzz_tmpdir(void)
{
	const char *base = getenv("FUZZ_TMPDIR");
	struct stat st;

	if (fuzz_dir[0] != '\0')
		return fuzz_dir;
	if (base == NULL && stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
	    access("/dev/shm", W_OK) == 0)
		base = "/dev/shm";
	if (base == NULL && (base = getenv("TMPDIR")) == NULL)
		base = "/tmp";
	snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/relayd-fuzz-XXXXXX", base);
	if (mkdtemp(fuzz_dir) == NULL) {
		perror(fuzz_dir);
		abort();
	}
	atexit(fuzz_tmpdir_remove);
	return fuzz_dir;
}

void
fuzz_write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	const char *p = data;
	ssize_t n;

	if (fd == -1) {
		perror(path);
		abort();
	}
	while (len > 0) {
		if ((n = write(fd, p, len)) <= 0) {
			perror(path);
			abort();
		}
		p += n;
		len -= (size_t)n;
	}
	close(fd);
}

void
fuzz_clear_dir(const char *dir)
{
	fuzz_rm_tree(dir, 0);
}
