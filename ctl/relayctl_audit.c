/*
 * relayctl_audit.c - `relayctl audit [--log FILE...] [--since DUR]
 * [--domain D] [--rcpt ADDR] [--json]`: reads relayd's log and its rotated
 * copies (plain or compressed) without the daemon, and reports every NDR
 * relayd sent -- when, for which message and recipient, the status, the
 * remote host and its reply, how many attempts -- with totals by recipient
 * domain and by status.  It answers "why did mail to X bounce?".
 *
 * Owns the command's options, the records that pass the filters and their
 * rendering.  The pieces: relayctl_audit_files.c (which files, oldest first,
 * streamed), relayctl_audit_parse.c (one line), relayctl_audit_ndr.c (events
 * into records).  Must never need relayd running, write anything but stdout
 * and stderr, or hold a whole log in memory.
 *
 * Files: each --log FILE (repeatable; "-" is stdin; a quoted glob pattern is
 * expanded and its matches read oldest first), else the configuration's
 * log_file and its rotated copies in the same directory (FILE.1, FILE.2.gz,
 * FILE-20261122, ...), oldest first.
 *
 * Exit: 0 (also when no NDR is found), 1 a log cannot be read (the message
 * names the file), 2 usage (bad --since, no log known).
 *
 * --json prints one object, a stable shape (keys are never removed; absent
 * values are null):
 *   {
 *     "ndrs": [
 *       { "time": "2026-11-22T10:15:02.118Z",  ts of the ndr line (RFC 3339)
 *         "qid": "...",                        the original message
 *         "ndr_qid": "...",                    the report relayd sent
 *         "sender": "alice@example.org",       the original sender
 *         "recipient": "bob@example.net",
 *         "status": "5.1.1",
 *         "reason": "failed",                  failed | expired | delayed (a success
 *                                              notice is not an NDR: not reported)
 *         "remote_host": "mx1.example.net",    the last attempt's host (null: none reached)
 *         "remote_ip": "192.0.2.25",           (null: none reached)
 *         "reply": "550 5.1.1 <bob@example.net>: no such user",   in full
 *         "attempts": 3,                       integer or null
 *         "down_since": null }                 when the host was marked down
 *     ],
 *     "totals": { "ndrs": 1,
 *                 "by_domain": { "example.net": 1 },     recipient domain, lowercase
 *                 "by_status": { "5.1.1": 1 } },
 *     "files": [ "/var/log/relayd.log.1", "/var/log/relayd.log" ],
 *     "lines": 5120,                           lines read
 *     "malformed_lines": 0                     lines skipped as not in the log format
 *   }
 * ndrs are in log order; totals are sorted by count (descending), then name.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/json.h"
#include "common/util.h"
#include "ctl/ctl.h"
#include "ctl/relayctl_audit.h"

#define AUDIT_REPLY_WIDTH 60        /* the table's REPLY column; JSON has it in full */

/* A record kept for the report: owned copies of a struct ctl_audit_ndr. */
struct audit_rec {
	uint64_t ts_ms;
	char *time, *qid, *ndr_qid, *sender, *recipient, *status, *reason;
	char *host, *ip, *reply, *down_since;
	long attempts;
};

struct audit_run {
	/* filters */
	uint64_t since_ms;          /* 0 = all */
	const char *domain, *rcpt;
	int json;
	/* input */
	struct ctl_audit_files files;
	size_t lines, malformed;
	/* output */
	struct audit_rec *recs;
	size_t nrecs, caprecs;
};

/* A count by name, for the totals. */
struct audit_tally {
	const char *key;
	size_t count;
};

/* ------------------------------------------------------------------ */
/* Filters                                                            */

/* addr without one pair of angle brackets: start and length. */
static const char *
audit_bare(const char *addr, size_t *len)
{
	size_t n = strlen(addr);

	if (n >= 2 && addr[0] == '<' && addr[n - 1] == '>') {
		*len = n - 2;
		return addr + 1;
	}
	*len = n;
	return addr;
}

/* The domain of a recipient address (after its last '@'): start and length. */
static const char *
audit_domain(const char *rcpt, size_t *len)
{
	size_t n;
	const char *a = audit_bare(rcpt, &n), *at;

	for (at = a + n; at > a && at[-1] != '@'; at--)
		;
	if (at == a) {
		*len = 0;
		return a;
	}
	*len = n - (size_t)(at - a);
	return at;
}

int
ctl_audit_match(const struct ctl_audit_ndr *ndr, uint64_t since_ms, const char *domain,
    const char *rcpt)
{
	const char *rc = ndr->recipient ? ndr->recipient : "", *p, *q;
	size_t pl, ql;

	if (since_ms != 0 && ndr->ts_ms < since_ms)
		return 0;
	if (domain != NULL) {
		p = audit_domain(rc, &pl);
		q = audit_bare(domain, &ql);
		if (ql > 0 && q[0] == '@') {
			q++;
			ql--;
		}
		if (pl != ql || util_strncasecmp(p, q, pl) != 0)
			return 0;
	}
	if (rcpt != NULL) {
		p = audit_bare(rc, &pl);
		q = audit_bare(rcpt, &ql);
		if (pl != ql || util_strncasecmp(p, q, pl) != 0)
			return 0;
	}
	return 1;
}

static char *
audit_dup(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static void
audit_emit(const struct ctl_audit_ndr *n, void *arg)
{
	struct audit_run *run = arg;
	struct audit_rec *r;

	if (!ctl_audit_match(n, run->since_ms, run->domain, run->rcpt))
		return;
	if (run->nrecs == run->caprecs) {
		run->caprecs = run->caprecs ? run->caprecs * 2 : 32;
		run->recs = xrealloc(run->recs, run->caprecs * sizeof(*run->recs));
	}
	r = &run->recs[run->nrecs++];
	r->ts_ms = n->ts_ms;
	r->time = audit_dup(n->time);
	r->qid = audit_dup(n->qid);
	r->ndr_qid = audit_dup(n->ndr_qid);
	r->sender = audit_dup(n->sender);
	r->recipient = audit_dup(n->recipient);
	r->status = audit_dup(n->status);
	r->reason = audit_dup(n->reason);
	r->host = audit_dup(n->host);
	r->ip = audit_dup(n->ip);
	r->reply = audit_dup(n->reply);
	r->down_since = audit_dup(n->down_since);
	r->attempts = n->attempts;
}

static void
audit_run_free(struct audit_run *run)
{
	size_t i;

	for (i = 0; i < run->nrecs; i++) {
		struct audit_rec *r = &run->recs[i];
		free(r->time); free(r->qid); free(r->ndr_qid); free(r->sender);
		free(r->recipient); free(r->status); free(r->reason); free(r->host);
		free(r->ip); free(r->reply); free(r->down_since);
	}
	free(run->recs);
	ctl_audit_files_free(&run->files);
}

/* ------------------------------------------------------------------ */
/* Reading                                                            */

/* Stream every file through the parser into the correlation.  0 or RELAY_EIO. */
static int
audit_read(struct audit_run *run, struct buf *err)
{
	struct ctl_audit_corr *corr = ctl_audit_corr_new(audit_emit, run);
	struct ctl_audit_line line;
	struct ctl_audit_reader rd;
	const char *text;
	ssize_t n;
	size_t i;
	int rc = 0;

	ctl_audit_line_init(&line);
	for (i = 0; i < run->files.n && rc == 0; i++) {
		if ((rc = ctl_audit_reader_open(&rd, run->files.paths[i], err)) != 0)
			break;
		while ((n = ctl_audit_reader_next(&rd, &text)) >= 0) {
			run->lines++;
			if (n == 0)
				continue;
			if (ctl_audit_line_parse(&line, text, (size_t)n) != 0) {
				run->malformed++;
				continue;
			}
			ctl_audit_corr_feed(corr, &line);
		}
		rc = ctl_audit_reader_close(&rd, err);
	}
	ctl_audit_line_free(&line);
	ctl_audit_corr_free(corr);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Totals                                                             */

static int
audit_strcmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
audit_tally_cmp(const void *a, const void *b)
{
	const struct audit_tally *x = a, *y = b;

	if (x->count != y->count)
		return x->count > y->count ? -1 : 1;
	return strcmp(x->key, y->key);
}

/*
 * Count keys[0..n) (which it sorts) into tallies (caller frees the array, not
 * the keys), most frequent first.  Returns how many distinct keys.
 */
static size_t
audit_tally(char **keys, size_t n, struct audit_tally **out)
{
	struct audit_tally *t = xcalloc(n ? n : 1, sizeof(*t));
	size_t i, nt = 0;

	qsort(keys, n, sizeof(*keys), audit_strcmp);
	for (i = 0; i < n; i++) {
		if (nt > 0 && strcmp(t[nt - 1].key, keys[i]) == 0)
			t[nt - 1].count++;
		else {
			t[nt].key = keys[i];
			t[nt].count = 1;
			nt++;
		}
	}
	qsort(t, nt, sizeof(*t), audit_tally_cmp);
	*out = t;
	return nt;
}

/* The totals by recipient domain and by status; keys are freed with audit_keys_free. */
static void
audit_totals(const struct audit_run *run, char ***dkeys, struct audit_tally **dom, size_t *ndom,
    char ***skeys, struct audit_tally **st, size_t *nst)
{
	size_t i, dl, k;
	const char *d;

	*dkeys = xcalloc(run->nrecs ? run->nrecs : 1, sizeof(char *));
	*skeys = xcalloc(run->nrecs ? run->nrecs : 1, sizeof(char *));
	for (i = 0; i < run->nrecs; i++) {
		const struct audit_rec *r = &run->recs[i];

		d = audit_domain(r->recipient ? r->recipient : "", &dl);
		if (dl == 0)
			(*dkeys)[i] = xstrdup("(none)");
		else {
			(*dkeys)[i] = xstrndup(d, dl);
			for (k = 0; k < dl; k++)
				if ((*dkeys)[i][k] >= 'A' && (*dkeys)[i][k] <= 'Z')
					(*dkeys)[i][k] += 'a' - 'A';
		}
		(*skeys)[i] = xstrdup(r->status && *r->status ? r->status : "(none)");
	}
	*ndom = audit_tally(*dkeys, run->nrecs, dom);
	*nst = audit_tally(*skeys, run->nrecs, st);
}

static void
audit_keys_free(char **keys, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
}

/* ------------------------------------------------------------------ */
/* JSON                                                               */

static void
audit_json_tally(struct buf *b, const char *name, const struct audit_tally *t, size_t n)
{
	size_t i;

	buf_printf(b, ",\n    \"%s\": {", name);
	for (i = 0; i < n; i++) {
		buf_puts(b, i ? ", " : "");
		json_str(b, t[i].key);
		buf_printf(b, ": %zu", t[i].count);
	}
	buf_puts(b, "}");
}

static void
audit_print_json(const struct audit_run *run, const struct audit_tally *dom, size_t ndom,
    const struct audit_tally *st, size_t nst)
{
	static const char *const keys[] = { "time", "qid", "ndr_qid", "sender", "recipient", "status",
	    "reason", "remote_host", "remote_ip", "reply" };
	struct buf b = BUF_INIT;
	size_t i, k;

	buf_puts(&b, "{\n  \"ndrs\": [");
	for (i = 0; i < run->nrecs; i++) {
		const struct audit_rec *r = &run->recs[i];
		const char *vals[] = { r->time, r->qid, r->ndr_qid, r->sender, r->recipient, r->status,
		    r->reason, r->host, r->ip, r->reply };

		buf_puts(&b, i ? ",\n    {" : "\n    {");
		for (k = 0; k < RELAY_ARRAY_LEN(keys); k++) {
			buf_printf(&b, "%s\"%s\": ", k ? ", " : "", keys[k]);
			json_str(&b, vals[k]);
		}
		if (r->attempts >= 0)
			buf_printf(&b, ", \"attempts\": %ld", r->attempts);
		else
			buf_puts(&b, ", \"attempts\": null");
		buf_puts(&b, ", \"down_since\": ");
		json_str(&b, r->down_since);
		buf_puts(&b, "}");
	}
	buf_puts(&b, run->nrecs ? "\n  ],\n" : "],\n");
	buf_printf(&b, "  \"totals\": {\n    \"ndrs\": %zu", run->nrecs);
	audit_json_tally(&b, "by_domain", dom, ndom);
	audit_json_tally(&b, "by_status", st, nst);
	buf_puts(&b, "\n  },\n  \"files\": [");
	for (i = 0; i < run->files.n; i++) {
		buf_puts(&b, i ? ", " : "");
		json_str(&b, run->files.paths[i]);
	}
	buf_printf(&b, "],\n  \"lines\": %zu,\n  \"malformed_lines\": %zu\n}\n", run->lines, run->malformed);
	fwrite(b.data, 1, b.len, stdout);
	buf_free(&b);
}

/* ------------------------------------------------------------------ */
/* The table                                                          */

enum { COL_TIME, COL_QID, COL_SENDER, COL_RCPT, COL_STATUS, COL_REASON, COL_HOST, COL_ATTEMPTS,
    COL_REPLY, COL_N };

static const char *const audit_heads[COL_N] = { "TIME", "QID", "SENDER", "RECIPIENT", "STATUS",
    "REASON", "HOST", "ATTEMPTS", "REPLY" };

/* Display width: UTF-8 code points. */
static size_t
audit_width(const char *s)
{
	size_t w = 0;

	for (; *s != '\0'; s++)
		if (((unsigned char)*s & 0xc0) != 0x80)
			w++;
	return w;
}

/* A table cell: "-" when unknown, control characters made harmless, at most max wide (0 = any). */
static char *
audit_cell(const char *s, size_t max)
{
	struct buf b = BUF_INIT;
	size_t w = 0;

	if (s == NULL || *s == '\0')
		return xstrdup("-");
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c & 0xc0) != 0x80) {
			if (max > 0 && w == max - 3 && audit_width(s) > 3) {
				buf_puts(&b, "...");
				break;
			}
			w++;
		}
		if (c == '\t' || c == '\r' || c == '\n')
			buf_putc(&b, ' ');
		else if (c < 0x20 || c == 0x7f)
			buf_putc(&b, '?');
		else
			buf_putc(&b, (char)c);
	}
	return buf_steal(&b);
}

static void
audit_print_table(const struct audit_run *run, const struct audit_tally *dom, size_t ndom,
    const struct audit_tally *st, size_t nst)
{
	size_t width[COL_N], i, k, w;
	char **cells, tbuf[40], abuf[24];

	if (run->nrecs == 0) {
		printf("No NDRs found (%zu file%s, %zu lines read).\n", run->files.n,
		    run->files.n == 1 ? "" : "s", run->lines);
		if (run->malformed > 0)
			printf("note: %zu malformed line%s skipped.\n", run->malformed,
			    run->malformed == 1 ? "" : "s");
		return;
	}
	cells = xcalloc(run->nrecs * COL_N, sizeof(*cells));
	for (k = 0; k < COL_N; k++)
		width[k] = strlen(audit_heads[k]);
	for (i = 0; i < run->nrecs; i++) {
		const struct audit_rec *r = &run->recs[i];
		char **row = cells + i * COL_N;

		util_rfc3339_sec(r->ts_ms, tbuf, sizeof(tbuf));
		if (r->attempts >= 0)
			snprintf(abuf, sizeof(abuf), "%ld", r->attempts);
		else
			abuf[0] = '\0';
		row[COL_TIME] = audit_cell(tbuf, 0);
		row[COL_QID] = audit_cell(r->qid, 0);
		row[COL_SENDER] = audit_cell(r->sender, 0);
		row[COL_RCPT] = audit_cell(r->recipient, 0);
		row[COL_STATUS] = audit_cell(r->status, 0);
		row[COL_REASON] = audit_cell(r->reason, 0);
		row[COL_HOST] = audit_cell(r->host ? r->host : r->ip, 0);
		row[COL_ATTEMPTS] = audit_cell(abuf, 0);
		row[COL_REPLY] = audit_cell(r->reply, AUDIT_REPLY_WIDTH);
		for (k = 0; k < COL_N; k++)
			if ((w = audit_width(row[k])) > width[k])
				width[k] = w;
	}
	for (i = 0; i <= run->nrecs; i++) {
		for (k = 0; k < COL_N; k++) {
			const char *s = i == 0 ? audit_heads[k] : cells[(i - 1) * COL_N + k];

			if (k + 1 == COL_N) {
				printf("%s\n", s);
				break;
			}
			printf("%s%*s  ", s, (int)(width[k] - audit_width(s)), "");
		}
	}
	for (i = 0; i < run->nrecs * COL_N; i++)
		free(cells[i]);
	free(cells);

	printf("\n%zu NDR%s (%zu file%s, %zu lines read).\n", run->nrecs, run->nrecs == 1 ? "" : "s",
	    run->files.n, run->files.n == 1 ? "" : "s", run->lines);
	if (run->malformed > 0)
		printf("note: %zu malformed line%s skipped.\n", run->malformed,
		    run->malformed == 1 ? "" : "s");
	printf("\nBy recipient domain:\n");
	for (i = 0, w = 0; i < ndom; i++)
		if (audit_width(dom[i].key) > w)
			w = audit_width(dom[i].key);
	for (i = 0; i < ndom; i++)
		printf("  %s%*s  %zu\n", dom[i].key, (int)(w - audit_width(dom[i].key)), "", dom[i].count);
	printf("\nBy status:\n");
	for (i = 0, w = 0; i < nst; i++)
		if (audit_width(st[i].key) > w)
			w = audit_width(st[i].key);
	for (i = 0; i < nst; i++)
		printf("  %s%*s  %zu\n", st[i].key, (int)(w - audit_width(st[i].key)), "", st[i].count);
}

/* ------------------------------------------------------------------ */
/* The command                                                        */

/* Parse the arguments (relayctl.c checked the option names).  An exit code. */
static int
audit_options(struct audit_run *run, const struct conf *conf, int argc, char **argv)
{
	struct buf err = BUF_INIT;
	const char *since = NULL;
	int i, nlog = 0;
	uint64_t dur, now;

	for (i = 0; i < argc; i++) {
		const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(o, "--json") == 0) {
			run->json = 1;
			continue;
		}
		if (v == NULL || strncmp(o, "--", 2) != 0) {
			fprintf(stderr, "relayctl: audit: unexpected argument '%s'\n", o);
			return CTL_EXIT_USAGE;
		}
		i++;
		if (strcmp(o, "--since") == 0)
			since = v;
		else if (strcmp(o, "--domain") == 0)
			run->domain = v;
		else if (strcmp(o, "--rcpt") == 0)
			run->rcpt = v;
		else if (strcmp(o, "--log") == 0) {
			/* --log FILE... : every following argument up to the next option
			 * is a file too, so a shell glob (--log /var/log/relayd.log*) works. */
			for (;;) {
				nlog++;
				if (ctl_audit_files_add(&run->files, v, &err) != 0) {
					fprintf(stderr, "relayctl: audit: %s", buf_cstr(&err));
					buf_free(&err);
					return CTL_EXIT_ERROR;
				}
				if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0)
					break;
				v = argv[++i];
			}
		} else {
			fprintf(stderr, "relayctl: audit: unknown option %s\n", o);
			return CTL_EXIT_USAGE;
		}
	}
	if (since != NULL) {
		if (util_parse_duration(since, &dur) != 0) {
			fprintf(stderr, "relayctl: audit: bad --since '%s' (a duration such as 30m, 2h, 3d)\n",
			    since);
			return CTL_EXIT_USAGE;
		}
		now = util_now_ms();
		run->since_ms = dur < now ? now - dur : 1;      /* 0 would mean "no filter" */
	}
	if (nlog > 0)
		return CTL_EXIT_OK;
	if (conf == NULL || conf->log_file == NULL || *conf->log_file == '\0' ||
	    strcmp(conf->log_file, "-") == 0) {
		fprintf(stderr, "relayctl: audit: %s: give --log FILE\n", conf == NULL ?
		    "no configuration to find the log in (no -c FILE)" :
		    "the configuration sets no log_file (relayd logs to stderr)");
		return CTL_EXIT_USAGE;
	}
	if (ctl_audit_files_default(&run->files, conf->log_file, &err) != 0) {
		fprintf(stderr, "relayctl: audit: %s", buf_cstr(&err));
		buf_free(&err);
		return CTL_EXIT_ERROR;
	}
	return CTL_EXIT_OK;
}

int
ctl_audit(const struct conf *conf, int argc, char **argv)
{
	struct audit_run run;
	struct audit_tally *dom, *st;
	struct buf err = BUF_INIT;
	char **dkeys, **skeys;
	size_t ndom, nst;
	int rc;

	memset(&run, 0, sizeof(run));
	if ((rc = audit_options(&run, conf, argc, argv)) != CTL_EXIT_OK) {
		audit_run_free(&run);
		return rc;
	}
	if (audit_read(&run, &err) != 0) {
		fprintf(stderr, "relayctl: audit: %s", buf_cstr(&err));
		buf_free(&err);
		audit_run_free(&run);
		return CTL_EXIT_ERROR;
	}
	audit_totals(&run, &dkeys, &dom, &ndom, &skeys, &st, &nst);
	if (run.json)
		audit_print_json(&run, dom, ndom, st, nst);
	else
		audit_print_table(&run, dom, ndom, st, nst);
	audit_keys_free(dkeys, run.nrecs);
	audit_keys_free(skeys, run.nrecs);
	free(dom);
	free(st);
	audit_run_free(&run);
	buf_free(&err);
	return fflush(stdout) == 0 ? CTL_EXIT_OK : CTL_EXIT_ERROR;
}
