/*
 * mxsink.h - a real SMTP sink for the unit tests written in C: a SinkMX
 * (tests/harness/smtpsink.py) in a child process (sink_cli.py), listening on
 * its own loopback address (127.0.0.2, .3 ... are distinct hosts), driven
 * over pipes with one-line Python requests (exec / eval) that answer at once.
 * Used by test_deliver*.c and test_sched_scenario.c.  Not a test (CMake
 * builds only test_*.c); include it after check.h.  Everything here is
 * static: each test program gets its own copy.
 *
 * The harness is found through RELAY_SOURCE_DIR, else relative to __FILE__.
 */
#ifndef RELAY_MXSINK_H
#define RELAY_MXSINK_H

#include <sys/wait.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "check.h"

static char mxsink_harness[1024];

struct mxsink {
	pid_t pid;
	FILE *to;
	FILE *from;
	int port;
	char host[32];
	char answer[1 << 20];
};

/* Find tests/harness/sink_cli.py once (fatal when it is not there). */
static inline void
mxsink_find_harness(void)
{
	const char *src = getenv("RELAY_SOURCE_DIR");

	if (src != NULL && *src != '\0')
		snprintf(mxsink_harness, sizeof(mxsink_harness), "%s/tests/harness/sink_cli.py", src);
	else {
		/* __FILE__ is .../tests/unit/mxsink.h */
		char here[900];
		char *slash;

		snprintf(here, sizeof(here), "%s", __FILE__);
		slash = strrchr(here, '/');
		if (slash != NULL)
			*slash = '\0';
		snprintf(mxsink_harness, sizeof(mxsink_harness), "%s/../harness/sink_cli.py",
		    slash != NULL ? here : ".");
	}
	if (access(mxsink_harness, R_OK) != 0)
		fatalx("%s: %s: %s (set RELAY_SOURCE_DIR)", __func__, mxsink_harness,
		    strerror(errno));
}

/*
 * Start a sink on host, a free port (s->port), with SinkMX keyword
 * arguments as a JSON object (NULL: none).  Listening when this returns.
 */
static inline void
mxsink_start(struct mxsink *s, const char *host, const char *json)
{
	int in[2], out[2];
	char line[256];

	if (mxsink_harness[0] == '\0')
		mxsink_find_harness();
	memset(s, 0, sizeof(*s));
	snprintf(s->host, sizeof(s->host), "%s", host);
	if (pipe(in) != 0 || pipe(out) != 0)
		fatalx("%s: pipe: %s", __func__, strerror(errno));
	s->pid = fork();
	if (s->pid < 0)
		fatalx("%s: fork: %s", __func__, strerror(errno));
	if (s->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		close(in[0]);
		close(in[1]);
		close(out[0]);
		close(out[1]);
		execlp("python3", "python3", mxsink_harness, host, json != NULL ? json : "{}",
		    (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	s->to = fdopen(in[1], "w");
	s->from = fdopen(out[0], "r");
	if (fgets(line, sizeof(line), s->from) == NULL || sscanf(line, "READY %d", &s->port) != 1)
		fatalx("%s: sink on %s did not start (%s)", __func__, host, line);
}

/* One request, one answer line (without "OK "); "ERR ..." on failure. */
static inline const char *
mxsink_req(struct mxsink *s, const char *verb, const char *fmt, va_list ap)
{
	size_t n;

	fprintf(s->to, "%s ", verb);
	vfprintf(s->to, fmt, ap);
	fputc('\n', s->to);
	fflush(s->to);
	if (fgets(s->answer, sizeof(s->answer), s->from) == NULL)
		fatalx("%s: sink on %s went away", __func__, s->host);
	n = strlen(s->answer);
	if (n > 0 && s->answer[n - 1] == '\n')
		s->answer[--n] = '\0';
	if (strncmp(s->answer, "OK", 2) == 0)
		return s->answer[2] == ' ' ? s->answer + 3 : s->answer + 2;
	fprintf(stderr, "sink %s: %s\n", s->host, s->answer);
	return s->answer;
}

/* The value of a Python expression, as text (valid until the next request). */
static inline const char *
mxsink_eval(struct mxsink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline const char *
mxsink_eval(struct mxsink *s, const char *fmt, ...)
{
	va_list ap;
	const char *r;

	va_start(ap, fmt);
	r = mxsink_req(s, "eval", fmt, ap);
	va_end(ap);
	return r;
}

/* Run a Python statement (`sink` is the SinkMX); a failure is a failed check. */
static inline void
mxsink_exec(struct mxsink *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline void
mxsink_exec(struct mxsink *s, const char *fmt, ...)
{
	va_list ap;
	const char *r;

	va_start(ap, fmt);
	r = mxsink_req(s, "exec", fmt, ap);
	va_end(ap);
	CHECK_MSG(r[0] == '\0', "sink exec failed: %s", r);
}

/* An integer expression. */
static inline long
mxsink_long(struct mxsink *s, const char *expr)
{
	return atol(mxsink_eval(s, "%s", expr));
}

static inline void
mxsink_stop(struct mxsink *s)
{
	int st;

	fputs("quit\n", s->to);
	fflush(s->to);
	if (fgets(s->answer, sizeof(s->answer), s->from) == NULL)
		fprintf(stderr, "sink %s: no answer to quit\n", s->host);
	fclose(s->to);
	fclose(s->from);
	waitpid(s->pid, &st, 0);
}

#endif
