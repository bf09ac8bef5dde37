/*
 * util.c - checked allocation, fatal errors, clocks, and the small parsers
 * (durations, sizes) that the configuration and relayctl share.
 * Owns no state.
 */
#include "common/util.h"
#include "common/buf.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		fatalx("%s: out of memory (%zu bytes)", __func__, n);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		fatalx("%s: out of memory", __func__);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		fatalx("%s: out of memory (%zu bytes)", __func__, n);
	return q;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;
	char ts[40];

	util_rfc3339(util_now_ms(), ts, sizeof(ts));
	fprintf(stderr, "ts=%s level=crit event=fatal msg=\"", ts);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\"\n");
	fflush(stderr);
	abort();
}

uint64_t
util_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t
util_mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* "2026-11-22T11:21:31" (UTC) into out, which has at least 20 bytes. */
static void
util_rfc3339_base(uint64_t ms, char *out, size_t outlen)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	if (strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm) == 0 && outlen > 0)
		out[0] = '\0';
}

void
util_rfc3339(uint64_t ms, char *out, size_t outlen)
{
	char base[32];

	util_rfc3339_base(ms, base, sizeof(base));
	snprintf(out, outlen, "%s.%03uZ", base, (unsigned)(ms % 1000));
}

void
util_rfc3339_sec(uint64_t ms, char *out, size_t outlen)
{
	char base[32];

	util_rfc3339_base(ms, base, sizeof(base));
	snprintf(out, outlen, "%sZ", base);
}

/* Read exactly n digits at *p into *v. */
static int
util_digits(const char **p, int n, int *v)
{
	int i;

	*v = 0;
	for (i = 0; i < n; i++) {
		if ((*p)[i] < '0' || (*p)[i] > '9')
			return -1;
		*v = *v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	return 0;
}

int
util_rfc3339_parse(const char *s, uint64_t *ms)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	const char *p = s;
	int y, mo, d, h, mi, sec, frac = 0, oh = 0, om = 0, sign = 0;
	struct tm tm;
	time_t t;

	if (util_digits(&p, 4, &y) || *p++ != '-' || util_digits(&p, 2, &mo) || *p++ != '-' ||
	    util_digits(&p, 2, &d))
		return RELAY_EINVAL;
	if (*p != 'T' && *p != 't')
		return RELAY_EINVAL;
	p++;
	if (util_digits(&p, 2, &h) || *p++ != ':' || util_digits(&p, 2, &mi) || *p++ != ':' ||
	    util_digits(&p, 2, &sec))
		return RELAY_EINVAL;
	if (*p == '.') {
		int n = 0;

		p++;
		if (*p < '0' || *p > '9')
			return RELAY_EINVAL;
		for (; *p >= '0' && *p <= '9'; p++, n++)
			if (n < 3)
				frac = frac * 10 + (*p - '0');
		for (; n < 3; n++)
			frac *= 10;
	}
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '+' ? 1 : -1;
		if (util_digits(&p, 2, &oh) || *p++ != ':' || util_digits(&p, 2, &om))
			return RELAY_EINVAL;
		if (oh > 23 || om > 59)
			return RELAY_EINVAL;
	} else
		return RELAY_EINVAL;
	if (*p != '\0')
		return RELAY_EINVAL;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
		return RELAY_EINVAL;
	if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return RELAY_EINVAL;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;                /* a leap second (60) is the next minute's 0 */
	t = timegm(&tm);
	if (t == (time_t)-1)
		return RELAY_EINVAL;
	t -= sign * (oh * 3600 + om * 60);
	if (t < 0)
		return RELAY_EINVAL;
	*ms = (uint64_t)t * 1000 + (uint64_t)frac;
	return 0;
}

void
util_rfc5322_date(uint64_t ms, char *out, size_t outlen)
{
	static const char *days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(out, outlen, "%s, %d %s %d %02d:%02d:%02d +0000",
	    days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
	    tm.tm_hour, tm.tm_min, tm.tm_sec);
}

int
util_strcasecmp(const char *a, const char *b)
{
	for (;; a++, b++) {
		int ca = tolower((unsigned char)*a), cb = tolower((unsigned char)*b);
		if (ca != cb || ca == '\0')
			return ca - cb;
	}
}

int
util_strncasecmp(const char *a, const char *b, size_t n)
{
	for (; n > 0; a++, b++, n--) {
		int ca = tolower((unsigned char)*a), cb = tolower((unsigned char)*b);
		if (ca != cb || ca == '\0')
			return ca - cb;
	}
	return 0;
}

int
util_parse_duration(const char *s, uint64_t *ms)
{
	static const struct { const char *unit; uint64_t mult; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
		{ "d", 86400000 }, { "w", 7 * 86400000ULL },
	};
	uint64_t total = 0;
	const char *p = s;

	if (s == NULL || *s == '\0')
		return -1;
	if (strcmp(s, "0") == 0) {
		*ms = 0;
		return 0;
	}
	/* One or more <number><unit> groups: "1h30m". */
	while (*p != '\0') {
		char *end;
		uint64_t n, mult = 0;
		size_t i;

		if (!isdigit((unsigned char)*p))
			return -1;
		errno = 0;
		n = strtoull(p, &end, 10);
		if (errno != 0 || end == p)
			return -1;
		p = end;
		for (i = 0; i < RELAY_ARRAY_LEN(units); i++) {
			size_t ul = strlen(units[i].unit);
			if (strncmp(p, units[i].unit, ul) == 0 &&
			    !(ul == 1 && units[i].unit[0] == 'm' && p[1] == 's')) {
				mult = units[i].mult;
				p += ul;
				break;
			}
		}
		if (mult == 0)
			return -1;
		if (n > UINT64_MAX / mult || total + n * mult < total)
			return -1;
		total += n * mult;
	}
	*ms = total;
	return 0;
}

int
util_parse_size(const char *s, uint64_t *bytes)
{
	char *end;
	uint64_t n, mult = 1;

	if (s == NULL || !isdigit((unsigned char)*s))
		return -1;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': mult = 1024; end++; break;
	case 'm': case 'M': mult = 1024 * 1024; end++; break;
	case 'g': case 'G': mult = 1024 * 1024 * 1024; end++; break;
	default: return -1;
	}
	if ((*end == 'b' || *end == 'B') && mult != 1)
		end++;
	if (*end != '\0' || (mult > 1 && n > UINT64_MAX / mult))
		return -1;
	*bytes = n * mult;
	return 0;
}

void
util_format_duration(uint64_t ms, char *out, size_t outlen)
{
	static const struct { char unit; uint64_t mult; } units[] = {
		{ 'd', 86400000 }, { 'h', 3600000 }, { 'm', 60000 }, { 's', 1000 },
	};
	size_t used = 0, i;

	if (ms == 0) {
		snprintf(out, outlen, "0s");
		return;
	}
	out[0] = '\0';
	for (i = 0; i < RELAY_ARRAY_LEN(units) && used < outlen; i++) {
		if (ms >= units[i].mult) {
			int w = snprintf(out + used, outlen - used, "%llu%c",
			    (unsigned long long)(ms / units[i].mult), units[i].unit);
			if (w < 0)
				return;
			used += (size_t)w;
			ms %= units[i].mult;
		}
	}
	if (ms > 0 && used < outlen)
		snprintf(out + used, outlen - used, "%llums", (unsigned long long)ms);
}

int
util_pread_full(int fd, void *p, size_t len, uint64_t off)
{
	char *c = p;
	ssize_t n;

	while (len > 0) {
		n = pread(fd, c, len, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;       /* the file is shorter */
			return -1;
		}
		c += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int
util_pwrite_full(int fd, const void *p, size_t len, uint64_t off)
{
	const char *c = p;
	ssize_t n;

	while (len > 0) {
		n = pwrite(fd, c, len, (off_t)off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		c += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int
util_read_file(const char *path, size_t max, char **out, size_t *len)
{
	char *data = NULL;
	size_t n = 0, cap = 0;
	ssize_t got;
	int fd, e;

	*out = NULL;
	*len = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	for (;;) {
		if (cap - n < 8192) {
			cap = cap ? cap * 2 : 8192;
			data = xrealloc(data, cap + 1);
		}
		got = read(fd, data + n, cap - n);
		if (got == -1 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		n += (size_t)got;
		if (n > max) {
			got = -1;
			errno = EFBIG;
			break;
		}
	}
	e = errno;
	close(fd);
	if (got < 0) {
		free(data);
		errno = e;
		return -1;
	}
	data[n] = '\0';
	*out = data;
	*len = n;
	return 0;
}

int
util_write_file_atomic(const char *path, const char *tmp_path, const void *p, size_t len)
{
	int fd, e = 0;

	if ((fd = open(tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) == -1)
		return -1;
	if (len > 0 && util_pwrite_full(fd, p, len, 0) != 0)
		e = errno;
	if (e == 0 && fsync(fd) != 0)
		e = errno;
	if (close(fd) != 0 && e == 0)
		e = errno;
	if (e == 0 && rename(tmp_path, path) != 0)
		e = errno;
	if (e == 0 && util_fsync_parent(path) != 0)
		e = errno;
	if (e != 0) {
		errno = e;
		return -1;
	}
	return 0;
}

/*
 * fsync the directory that holds path: a rename (or a new name) in it is
 * durable only then.  "name" alone means the current directory.
 */
int
util_fsync_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int fd, e = 0;

	if (slash == NULL)
		dir = xstrdup(".");
	else if (slash == path)
		dir = xstrdup("/");
	else
		dir = xstrndup(path, (size_t)(slash - path));
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(dir);
	if (fd == -1)
		return -1;
	if (fsync(fd) != 0)
		e = errno;
	close(fd);
	if (e != 0) {
		errno = e;
		return -1;
	}
	return 0;
}

uint32_t
util_hash_bytes(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint32_t h = 2166136261u;

	while (len-- > 0)
		h = (h ^ *b++) * 16777619u;
	return h;
}

uint32_t
util_hash_str(const char *s)
{
	return util_hash_bytes(s, strlen(s));
}

/* The first line of path (a password), at most max bytes, without its newline. */
int
util_read_secret(const char *path, size_t max, char **out, struct buf *err)
{
	char *text;
	ssize_t n;
	size_t len = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		buf_printf(err, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	text = xmalloc(max + 2);
	while (len < (max + 2) - 1) {
		n = read(fd, text + len, (max + 2) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			buf_printf(err, "%s: %s\n", path, strerror(errno));
			close(fd);
			explicit_bzero(text, max + 2);
			free(text);
			return -1;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	text[len] = '\0';
	len = strcspn(text, "\r\n");
	if (len > max) {
		buf_printf(err, "%s: the password is longer than %zu bytes\n", path, max);
		explicit_bzero(text, max + 2);
		free(text);
		return -1;
	}
	text[len] = '\0';
	*out = xstrdup(text);
	explicit_bzero(text, max + 2);
	free(text);
	return 0;
}
