/*
 * fuzz_main.c - the standalone driver of the fuzz targets: in a build
 * without libFuzzer (the normal gcc and ASan builds), each fuzz_<name>
 * target is linked with this main, which runs LLVMFuzzerTestOneInput once
 * on every file named on the command line, or on every file in a named
 * directory (tests/fuzz/regress/<name>/, tests/fuzz/corpus/<name>/).  That
 * is how ctest replays the seeds and every crash found so far.  Arguments
 * that start with '-' (libFuzzer's options, such as -runs=0) are ignored,
 * so ctest gives both kinds of build the same command line.
 *
 * Owns: nothing beyond one input at a time.  Never fuzzes: it only replays.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int
fuzz_main_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	size_t len = 0, cap = 0, n;

	if (f == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	for (;;) {
		if (len == cap) {
			cap = cap == 0 ? 4096 : cap * 2;
			if ((data = realloc(data, cap)) == NULL)
				abort();
		}
		if ((n = fread(data + len, 1, cap - len, f)) == 0)
			break;
		len += n;
	}
	fclose(f);
	/* an exact-size copy, so that ASan sees a read past the input's end */
	uint8_t *exact = malloc(len > 0 ? len : 1);
	if (exact == NULL)
		abort();
	memcpy(exact, data, len);
	free(data);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	return 0;
}

static int
fuzz_main_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir, in name order (the same order on every run). */
static int
fuzz_main_dir(const char *dir, size_t *count)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL, path[4096];
	size_t n = 0, cap = 0, i;
	struct stat st;
	int rc = 0;

	if (d == NULL) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			if ((names = realloc(names, cap * sizeof(*names))) == NULL)
				abort();
		}
		if ((names[n++] = strdup(e->d_name)) == NULL)
			abort();
	}
	closedir(d);
	qsort(names, n, sizeof(*names), fuzz_main_cmp);
	for (i = 0; i < n; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			if (fuzz_main_file(path) != 0)
				rc = -1;
			(*count)++;
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int
main(int argc, char **argv)
{
	struct stat st;
	size_t count = 0;
	int i, rc = 0;

	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	for (i = 1; i < argc; i++) {
		if (argv[i][0] == '-')
			continue;
		if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			if (fuzz_main_dir(argv[i], &count) != 0)
				rc = 1;
		} else if (fuzz_main_file(argv[i]) != 0)
			rc = 1;
		else
			count++;
	}
	fprintf(stderr, "%s: %zu inputs run\n", argv[0], count);
	return rc;
}
