/*
 * relayctl_audit_files.c - which log files `relayctl audit` reads and how:
 * finds the rotated copies of a log (FILE.1, FILE.2.gz, FILE-20261122, ...),
 * orders them oldest first, expands --log glob patterns, and streams each
 * file line by line, plain or compressed.  Compressed files are recognised by
 * their magic bytes and read through the system's decompressor (gzip -dc,
 * ...) spawned with the file on its stdin: no compression library.  Owns the
 * path list, the open FILE and the decompressor child it spawns (reaped in
 * ctl_audit_reader_close).  Must never load a whole file in memory, nor hand
 * a path to a shell.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "ctl/relayctl_audit.h"

extern char **environ;

/* Compressed formats by magic bytes, and the program that reads them. */
static const struct {
	const char *ext;
	const char *magic;
	size_t magiclen;
	const char *prog;
} files_codecs[] = {
	{ ".gz",  "\x1f\x8b", 2, "gzip" },
	{ ".bz2", "BZh", 3, "bzip2" },
	{ ".xz",  "\xfd" "7zXZ\0", 6, "xz" },
	{ ".zst", "\x28\xb5\x2f\xfd", 4, "zstd" },
};

void
ctl_audit_files_free(struct ctl_audit_files *fl)
{
	size_t i;

	for (i = 0; i < fl->n; i++)
		free(fl->paths[i]);
	free(fl->paths);
	memset(fl, 0, sizeof(*fl));
}

static void
files_push(struct ctl_audit_files *fl, const char *path)
{
	if (fl->n == fl->cap) {
		fl->cap = fl->cap ? fl->cap * 2 : 8;
		fl->paths = xrealloc(fl->paths, fl->cap * sizeof(*fl->paths));
	}
	fl->paths[fl->n++] = xstrdup(path);
}

/* Length of name without a compression extension. */
static size_t
files_strip_codec(const char *name, size_t len)
{
	size_t i, el;

	for (i = 0; i < RELAY_ARRAY_LEN(files_codecs); i++) {
		el = strlen(files_codecs[i].ext);
		if (len > el && memcmp(name + len - el, files_codecs[i].ext, el) == 0)
			return len - el;
	}
	return len;
}

/* Is t[0..len) a rotation tail: a separator (. - _), then digits and separators, a digit among them? */
static int
files_is_tail(const char *t, size_t len)
{
	size_t i;
	int digit = 0;

	if (len < 2 || strchr("._-", t[0]) == NULL)
		return 0;
	for (i = 1; i < len; i++) {
		if (t[i] >= '0' && t[i] <= '9')
			digit = 1;
		else if (t[i] == '\0' || strchr("._-", t[i]) == NULL)
			return 0;
	}
	return digit;
}

/*
 * Where the rotation tail of a file name starts when its base name is not
 * known (glob matches): after dropping a compression extension, the longest
 * suffix that is a rotation tail (".1", "-20261122", ".2026-11-22").  Sets
 * *tail_len (0 = no tail: a live log) and returns the stem length.
 */
static size_t
files_guess_stem(const char *name, size_t *tail_len)
{
	size_t len = files_strip_codec(name, strlen(name)), start = len;

	while (start > 0 && strchr("0123456789._-", name[start - 1]) != NULL && name[start - 1] != '\0')
		start--;
	while (start < len && !files_is_tail(name + start, len - start))
		start++;
	*tail_len = len - start;
	return start;
}

/* The sort key of a rotation tail: class (0 dated, 1 numbered, 2 live) and value. */
struct files_key {
	int class;
	unsigned long number;       /* numbered: larger is older */
	char digits[64];            /* dated: the digits, earlier is older */
};

static void
files_key(const char *t, size_t tl, struct files_key *k)
{
	size_t i, nd = 0, groups = 0;
	int in_digits = 0;

	memset(k, 0, sizeof(*k));
	if (tl == 0) {
		k->class = 2;
		return;
	}
	for (i = 0; i < tl; i++) {
		if (t[i] >= '0' && t[i] <= '9') {
			if (!in_digits)
				groups++;
			in_digits = 1;
			if (nd + 1 < sizeof(k->digits))
				k->digits[nd++] = t[i];
		} else
			in_digits = 0;
	}
	if (groups == 1 && nd <= 6) {
		k->class = 1;
		k->number = strtoul(k->digits, NULL, 10);
	} else
		k->class = 0;
}

static int
files_key_cmp(const struct files_key *ka, const struct files_key *kb)
{
	size_t da, db;

	if (ka->class != kb->class)
		return ka->class < kb->class ? -1 : 1;
	if (ka->class == 1 && ka->number != kb->number)
		return ka->number > kb->number ? -1 : 1;
	if (ka->class == 0) {
		da = strlen(ka->digits);
		db = strlen(kb->digits);
		if (da != db)
			return da < db ? -1 : 1;
		return strcmp(ka->digits, kb->digits);
	}
	return 0;
}

int
ctl_audit_files_cmp(const char *a, const char *b)
{
	struct files_key ka, kb;
	size_t sa, sb, ta, tb;
	int c;

	sa = files_guess_stem(a, &ta);
	sb = files_guess_stem(b, &tb);
	/* Different logs: by name, so that each one's copies stay together. */
	c = strncmp(a, b, sa < sb ? sa : sb);
	if (c != 0 || sa != sb)
		return c != 0 ? c : (sa < sb ? -1 : 1);
	files_key(a + sa, ta, &ka);
	files_key(b + sb, tb, &kb);
	if ((c = files_key_cmp(&ka, &kb)) != 0)
		return c;
	return strcmp(a, b);        /* x.1 before x.1.gz: stable */
}

static int
files_qsort_cmp(const void *a, const void *b)
{
	return ctl_audit_files_cmp(*(char *const *)a, *(char *const *)b);
}

/* A rotated copy found next to the live log, with its key. */
struct files_found {
	char *path;
	struct files_key key;
};

static int
files_found_cmp(const void *a, const void *b)
{
	const struct files_found *fa = a, *fb = b;
	int c = files_key_cmp(&fa->key, &fb->key);

	return c != 0 ? c : strcmp(fa->path, fb->path);
}

static int
files_is_regular(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int
ctl_audit_files_default(struct ctl_audit_files *fl, const char *log_file, struct buf *err)
{
	struct buf dir = BUF_INIT, path = BUF_INIT;
	const char *slash = strrchr(log_file, '/'), *base;
	struct files_found *found = NULL;
	size_t baselen, nfound = 0, capfound = 0, i, tl;
	struct dirent *de;
	DIR *d;
	int live = 0;

	if (slash == NULL) {
		buf_puts(&dir, ".");
		base = log_file;
	} else {
		buf_append(&dir, log_file, (size_t)(slash - log_file) + (slash == log_file));
		base = slash + 1;
	}
	baselen = strlen(base);
	if ((d = opendir(buf_cstr(&dir))) == NULL) {
		buf_printf(err, "%s: cannot read its directory %s: %s\n", log_file, buf_cstr(&dir),
		    strerror(errno));
		buf_free(&dir);
		return RELAY_EIO;
	}
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, base, baselen) != 0)
			continue;
		if (de->d_name[baselen] == '\0') {
			live = 1;
			continue;
		}
		/* A rotated copy: the rest of the name is a rotation tail. */
		tl = files_strip_codec(de->d_name, strlen(de->d_name));
		if (tl <= baselen || !files_is_tail(de->d_name + baselen, tl - baselen))
			continue;
		tl -= baselen;
		buf_reset(&path);
		if (slash != NULL)
			buf_append(&path, log_file, (size_t)(slash - log_file) + 1);
		buf_puts(&path, de->d_name);
		if (!files_is_regular(buf_cstr(&path)))
			continue;
		if (nfound == capfound) {
			capfound = capfound ? capfound * 2 : 8;
			found = xrealloc(found, capfound * sizeof(*found));
		}
		found[nfound].path = buf_steal(&path);
		files_key(de->d_name + baselen, tl, &found[nfound].key);
		nfound++;
	}
	closedir(d);
	buf_free(&dir);
	buf_free(&path);
	if (nfound > 0)
		qsort(found, nfound, sizeof(*found), files_found_cmp);
	for (i = 0; i < nfound; i++) {
		files_push(fl, found[i].path);
		free(found[i].path);
	}
	free(found);
	/* The live log is read last; it may be missing right after rotation. */
	if (live || nfound == 0)
		files_push(fl, log_file);
	return 0;
}

int
ctl_audit_files_add(struct ctl_audit_files *fl, const char *arg, struct buf *err)
{
	glob_t g;
	size_t i;
	int rc;

	if (strpbrk(arg, "*?[") == NULL || access(arg, F_OK) == 0) {
		files_push(fl, arg);
		return 0;
	}
	memset(&g, 0, sizeof(g));
	rc = glob(arg, 0, NULL, &g);
	if (rc != 0) {
		globfree(&g);
		buf_printf(err, "%s: no such file (the pattern matches nothing)\n", arg);
		return RELAY_ENOENT;
	}
	qsort(g.gl_pathv, g.gl_pathc, sizeof(*g.gl_pathv), files_qsort_cmp);
	for (i = 0; i < g.gl_pathc; i++)
		files_push(fl, g.gl_pathv[i]);
	globfree(&g);
	return 0;
}

/* Spawn prog -dc with fd on its stdin; r->fp reads its stdout. */
static int
files_spawn(struct ctl_audit_reader *r, int fd, const char *prog, struct buf *err)
{
	posix_spawn_file_actions_t fa;
	char *argv[3];
	int p[2], rc;

	if (pipe2(p, O_CLOEXEC) != 0) {
		buf_printf(err, "%s: pipe: %s\n", r->path, strerror(errno));
		return RELAY_EIO;
	}
	argv[0] = (char *)prog;
	argv[1] = (char *)"-dc";
	argv[2] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fd, 0);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	/* Its complaints would name "stdin"; ours names the file. */
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	rc = posix_spawnp(&r->pid, prog, &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[1]);
	if (rc != 0) {
		close(p[0]);
		r->pid = -1;
		buf_printf(err, "%s: is %s-compressed, but %s cannot be run: %s\n", r->path, prog, prog,
		    strerror(rc));
		return RELAY_EIO;
	}
	if ((r->fp = fdopen(p[0], "r")) == NULL)
		fatalx("%s: fdopen: %s", __func__, strerror(errno));
	return 0;
}

int
ctl_audit_reader_open(struct ctl_audit_reader *r, const char *path, struct buf *err)
{
	unsigned char magic[8];
	struct stat st;
	ssize_t n;
	size_t i;
	int fd;

	memset(r, 0, sizeof(*r));
	r->path = path;
	r->pid = -1;
	if (strcmp(path, "-") == 0) {
		r->fp = stdin;
		return 0;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		buf_printf(err, "%s: cannot read: %s\n", path, strerror(errno));
		return RELAY_EIO;
	}
	if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
		buf_printf(err, "%s: cannot read: %s\n", path, S_ISDIR(st.st_mode) ? "is a directory" :
		    strerror(errno));
		close(fd);
		return RELAY_EIO;
	}
	n = S_ISREG(st.st_mode) ? pread(fd, magic, sizeof(magic), 0) : 0;
	if (n < 0) {
		buf_printf(err, "%s: cannot read: %s\n", path, strerror(errno));
		close(fd);
		return RELAY_EIO;
	}
	for (i = 0; i < RELAY_ARRAY_LEN(files_codecs); i++) {
		if ((size_t)n >= files_codecs[i].magiclen &&
		    memcmp(magic, files_codecs[i].magic, files_codecs[i].magiclen) == 0) {
			int rc;

			r->prog = files_codecs[i].prog;
			rc = files_spawn(r, fd, r->prog, err);
			close(fd);
			return rc;
		}
	}
	if ((r->fp = fdopen(fd, "r")) == NULL)
		fatalx("%s: fdopen: %s", __func__, strerror(errno));
	return 0;
}

ssize_t
ctl_audit_reader_next(struct ctl_audit_reader *r, const char **line)
{
	ssize_t n = getline(&r->line, &r->linecap, r->fp);

	if (n < 0)
		return -1;
	while (n > 0 && (r->line[n - 1] == '\n' || r->line[n - 1] == '\r'))
		r->line[--n] = '\0';
	*line = r->line;
	return n;
}

int
ctl_audit_reader_close(struct ctl_audit_reader *r, struct buf *err)
{
	int rc = 0, status;

	if (r->fp != NULL && ferror(r->fp)) {
		buf_printf(err, "%s: read error: %s\n", r->path, strerror(errno));
		rc = RELAY_EIO;
	}
	if (r->fp != NULL && r->fp != stdin)
		fclose(r->fp);
	r->fp = NULL;
	if (r->pid > 0) {
		while (waitpid(r->pid, &status, 0) < 0) {
			if (errno != EINTR) {
				status = -1;
				break;
			}
		}
		if (rc == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			if (status != -1 && WIFEXITED(status))
				buf_printf(err, "%s: %s -dc failed (exit %d): the file is damaged or truncated\n",
				    r->path, r->prog, WEXITSTATUS(status));
			else
				buf_printf(err, "%s: %s -dc did not finish\n", r->path, r->prog);
			rc = RELAY_EIO;
		}
		r->pid = -1;
	}
	free(r->line);
	r->line = NULL;
	r->linecap = 0;
	return rc;
}
