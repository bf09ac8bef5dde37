/*
 * queue_dir.c - the names of a directory, sorted (msg/ at open and in the
 * start-up scan, incoming/ at open), kept in anonymous memory of their own:
 * one mapping for the entries, one for the names, both unmapped whole when
 * the list is freed, and sorted without malloc; a walk in order can give
 * back the pages it has passed (queue_dir_release()).  A million names as a
 * million malloc'd strings (and their array, and qsort's buffer) left holes
 * in the scan thread's malloc arena below the messages it loaded, mapped
 * until a trim, and raised malloc's mmap threshold (tests/bench/README.md
 * "The start-up scan's holes").  Any thread; owns nothing but the list.
 */
#include "queue/queue_int.h"
#include "common/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define QUEUE_DIR_MAP0 (64u << 10)      /* each mapping's first size; doubled as needed */

/* In front of the entries, in their mapping: what queue_free_dir() unmaps. */
struct queue_dirmap {
	char *names;
	size_t names_size;
	size_t size;                    /* of this mapping */
	size_t names_gone, gone;        /* queue_dir_release(): given back below these offsets */
	size_t pad;                     /* the entries 16-byte aligned */
};

static void *
queue_dir_map(void *p, size_t old, size_t want)
{
	void *n;

	if (p == NULL)
		n = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	else
		n = mremap(p, old, want, MREMAP_MAYMOVE);
	if (n == MAP_FAILED)
		fatalx("%s: out of memory (%zu bytes)", __func__, want);
	return n;
}

/* Grow a mapping of *size bytes until it holds need bytes. */
static void *
queue_dir_fit(void *p, size_t *size, size_t need)
{
	size_t want = *size;

	if (need <= want)
		return p;
	while (want < need)
		want *= 2;
	p = queue_dir_map(p, *size, want);
	*size = want;
	return p;
}

/* Sort v[0..n) by name, merging runs through tmp (n entries): no malloc. */
static void
queue_dir_sort(struct queue_dirent *v, struct queue_dirent *tmp, size_t n)
{
	struct queue_dirent *src = v, *dst = tmp, *t;
	size_t w, lo, mid, hi, i, j, k;

	for (w = 1; w < n; w *= 2) {
		for (lo = 0; lo < n; lo += 2 * w) {
			mid = lo + w < n ? lo + w : n;
			hi = lo + 2 * w < n ? lo + 2 * w : n;
			for (i = lo, j = mid, k = lo; k < hi; k++)
				dst[k] = i < mid && (j == hi || strcmp(src[i].name, src[j].name) <= 0) ?
				    src[i++] : src[j++];
		}
		t = src;
		src = dst;
		dst = t;
	}
	if (src != v)
		memcpy(v, src, n * sizeof(*v));
}

/* The whole pages of [*from, to) of the mapping at base given back; *from moves on. */
static void
queue_dir_give(char *base, size_t *from, size_t to)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	to = to / pg * pg;
	if (to > *from) {
		(void)madvise(base + *from, to - *from, MADV_DONTNEED);
		*from = to;
	}
}

void
queue_dir_release(struct queue_dirent *v, size_t n, size_t done)
{
	struct queue_dirmap *h = (struct queue_dirmap *)v - 1;
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	if (done >= n)
		return;                 /* the list's end: queue_free_dir() gives back all */
	if (h->gone == 0)
		h->gone = pg;           /* the first page holds the header */
	queue_dir_give((char *)h, &h->gone, (size_t)((char *)(v + done) - (char *)h));
	queue_dir_give(h->names, &h->names_gone, (size_t)(v[done].name - h->names));
}

void
queue_free_dir(struct queue_dirent *v, size_t n)
{
	struct queue_dirmap *h;

	(void)n;
	if (v == NULL)
		return;
	h = (struct queue_dirmap *)v - 1;
	if (h->names != NULL)
		munmap(h->names, h->names_size);
	munmap(h, h->size);
}

/*
 * Entries of dirfd other than "." and "..", sorted by name (ids sort by
 * time); NULL with errno if the directory cannot be opened or read to its
 * end.
 */
struct queue_dirent *
queue_read_dir(int dirfd, size_t *count)
{
	DIR *d;
	struct dirent *de;
	struct queue_dirmap *h;
	struct queue_dirent *v;
	char *names = NULL, *sorted, *p;
	size_t n = 0, i, len, used = 0, names_size = QUEUE_DIR_MAP0, size = QUEUE_DIR_MAP0;
	int fd, e;

	*count = 0;
	if ((fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return NULL;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return NULL;
	}
	h = queue_dir_map(NULL, 0, size);
	for (;;) {
		errno = 0;
		if ((de = readdir(d)) == NULL)
			break;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		len = strlen(de->d_name) + 1;
		if (names == NULL)
			names = queue_dir_map(NULL, 0, names_size);
		names = queue_dir_fit(names, &names_size, used + len);
		memcpy(names + used, de->d_name, len);
		used += len;
		/* room for the entries twice: the second half is the sort's */
		h = queue_dir_fit(h, &size, sizeof(*h) + 2 * (n + 1) * sizeof(*v));
		v = (struct queue_dirent *)(h + 1);
		v[n].name = NULL;       /* set below: the names mapping may still move */
		v[n++].ino = de->d_ino;
	}
	if (errno != 0) {
		/* the listing cut short (a block the disk cannot read): no list,
		 * never a part of it that looks whole (messages left out) */
		e = errno;
		closedir(d);
		if (names != NULL)
			munmap(names, names_size);
		munmap(h, size);
		errno = e;
		return NULL;
	}
	closedir(d);
	v = (struct queue_dirent *)(h + 1);
	for (i = 0, p = names; i < n; i++, p += strlen(p) + 1)
		v[i].name = p;          /* in readdir order, as the names were appended */
	queue_dir_sort(v, v + n, n);
	/* the sort's half back to the system now: the scan keeps the list for
	 * as long as it walks it */
	len = (sizeof(*h) + n * sizeof(*v) + QUEUE_DIR_MAP0 - 1) / QUEUE_DIR_MAP0 * QUEUE_DIR_MAP0;
	if (len < size) {
		h = queue_dir_map(h, size, len);        /* shrinks in place */
		size = len;
		v = (struct queue_dirent *)(h + 1);
	}
	/* the names again in sorted order: a walk can give back what it passed */
	if (names != NULL) {
		sorted = queue_dir_map(NULL, 0, names_size);
		for (i = 0, p = sorted; i < n; i++, p += len) {
			len = strlen(v[i].name) + 1;
			memcpy(p, v[i].name, len);
			v[i].name = p;
		}
		munmap(names, names_size);
		names = sorted;
	}
	h->names = names;
	h->names_size = names_size;
	h->size = size;
	h->names_gone = h->gone = 0;
	*count = n;
	return v;
}
