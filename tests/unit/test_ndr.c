/*
 * test_ndr.c - delivery status notifications (ndr/ndr.c).
 *
 * ndr_format() is checked by parsing the bytes it produces: the top-level
 * headers, the multipart/report boundary, the three parts, and every
 * RFC 3464 field of the delivery-status part, for a table of cases (kind,
 * RET, NOTIFY, ENVID, ORCPT, down destinations).  ndr_header_put() is
 * checked for folding, header injection and RFC 2047.  ndr_send() runs
 * against a recording stand-in for the router_txn_* calls (defined below;
 * the real queue is covered by tests/integration/test_ndr.py), checking the
 * report's envelope, the log lines and suppression (sender <>, NOTIFY).
 */
#include "ndr/ndr.h"
#include "common/log.h"
#include "common/util.h"
#include "check.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/stat.h>

/*
 * A recording stand-in for the router's transaction API: ndr_send() is the
 * only caller in this program, so these definitions satisfy the linker
 * instead of the queue's.
 */
struct queue_txn {
	char qid[QID_MAX];
	struct envelope env;
	struct buf data;
};

static struct {
	int begun, committed, aborted;
	int commit_err;              /* what the commit callback reports */
	struct envelope env;         /* the last report's envelope */
	struct buf data;             /* the last report's bytes */
	const char *dir;             /* the queue_dir of the last msg_new() */
} fake;

/* The queue's file name, under the directory of the last msg_new(). */
const char *
queue_msg_path(const struct queue *q, const struct queue_msg *m, char *buf, size_t len)
{
	int n;

	(void)q;
	n = snprintf(buf, len, "%s/msg/%s", fake.dir, m->qid);
	return n < 0 || (size_t)n >= len ? NULL : buf;
}

/* m's file (what ndr_send reads through queue_msg_path), for ndr_format. */
static const char *
msg_file(const struct queue_msg *m)
{
	static char path[PATH_MAX];

	return queue_msg_path(NULL, m, path, sizeof(path));
}

int
queue_txn_begin(struct queue *q, const struct envelope *env, struct queue_txn **out)
{
	struct queue_txn *t = xcalloc(1, sizeof(*t));

	snprintf(t->qid, sizeof(t->qid), "NDRQ%04d", ++fake.begun);
	envelope_copy(&t->env, env);
	*out = t;
	return 0;
}

const char *
queue_txn_qid(const struct queue_txn *t)
{
	return t->qid;
}

int
queue_txn_write(struct queue_txn *t, const void *p, size_t len)
{
	buf_append(&t->data, p, len);
	return 0;
}

void
queue_txn_commit(struct queue_txn *t, queue_commit_cb *cb, void *arg)
{
	fake.committed++;
	envelope_free(&fake.env);
	envelope_copy(&fake.env, &t->env);
	buf_reset(&fake.data);
	buf_append(&fake.data, t->data.data, t->data.len);
	cb(arg, fake.commit_err, fake.commit_err ? NULL : t->qid);
	envelope_free(&t->env);
	buf_free(&t->data);
	free(t);
}

void
queue_txn_prefix(struct queue_txn *t, const char *fields, const char *ids)
{
	buf_append(&t->data, fields, strlen(fields));    /* unused: no keys here */
	(void)ids;
}

void
queue_txn_abort(struct queue_txn *t)
{
	fake.aborted++;
	envelope_free(&t->env);
	buf_free(&t->data);
	free(t);
}

/*
 * A tiny RFC 5322 / MIME reader for the checks.
 */
#define MAXF 64

struct fields {
	int n;
	char name[MAXF][64];
	struct buf value[MAXF];      /* unfolded */
};

static void
fields_free(struct fields *fs)
{
	int i;

	for (i = 0; i < fs->n; i++)
		buf_free(&fs->value[i]);
	fs->n = 0;
}

/* Parse a header block at p (up to end); returns where the block's empty
 * line ends (or end).  Every line must end in CRLF. */
static const char *
fields_parse(const char *p, const char *end, struct fields *fs)
{
	memset(fs, 0, sizeof(*fs));
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		CHECK(eol > p && eol[-1] == '\r');
		if (eol - p <= 1)
			return eol + 1;                 /* the empty line */
		if (*p == ' ' || *p == '\t') {
			if (fs->n > 0)
				buf_append(&fs->value[fs->n - 1], p, (size_t)(eol - 1 - p));
		} else if (fs->n < MAXF) {
			const char *colon = memchr(p, ':', (size_t)(eol - p));
			CHECK(colon != NULL);
			if (colon == NULL)
				return end;
			snprintf(fs->name[fs->n], sizeof(fs->name[0]), "%.*s", (int)(colon - p), p);
			colon++;
			while (colon < eol - 1 && *colon == ' ')
				colon++;
			buf_append(&fs->value[fs->n], colon, (size_t)(eol - 1 - colon));
			fs->n++;
		}
		p = eol + 1;
	}
	return end;
}

static const char *
fields_get(const struct fields *fs, const char *name)
{
	int i;

	for (i = 0; i < fs->n; i++)
		if (util_strcasecmp(fs->name[i], name) == 0)       /* FWS may lead */
			return buf_cstr(&fs->value[i]) + strspn(buf_cstr(&fs->value[i]), " \t");
	return NULL;
}

static int
fields_count(const struct fields *fs, const char *name)
{
	int i, c = 0;

	for (i = 0; i < fs->n; i++)
		if (util_strcasecmp(fs->name[i], name) == 0)
			c++;
	return c;
}

/* Does text contain words, ignoring how lines were wrapped and indented? */
static bool
text_has_words(const char *text, const char *words)
{
	struct buf a = BUF_INIT, b = BUF_INIT;
	const char *src[2] = { text, words };
	struct buf *dst[2] = { &a, &b };
	bool found;
	int k;

	for (k = 0; k < 2; k++) {
		const char *p;
		bool space = false;
		for (p = src[k]; *p != '\0'; p++) {
			if (isspace((unsigned char)*p)) {
				space = true;
				continue;
			}
			if (space && dst[k]->len > 0)
				buf_putc(dst[k], ' ');
			space = false;
			buf_putc(dst[k], *p);
		}
	}
	found = strstr(buf_cstr(&a), buf_cstr(&b)) != NULL;
	buf_free(&a);
	buf_free(&b);
	return found;
}

struct part {
	struct fields h;
	const char *body;
	size_t len;
};

struct report {
	struct fields top;
	char boundary[200];
	int nparts;
	struct part part[4];
	bool closed;                 /* the closing delimiter was seen */
	struct fields group[8];      /* delivery-status: [0] per-message, then per-rcpt */
	int ngroups;
};

static void
report_free(struct report *rp)
{
	int i;

	fields_free(&rp->top);
	for (i = 0; i < rp->nparts; i++)
		fields_free(&rp->part[i].h);
	for (i = 0; i < rp->ngroups; i++)
		fields_free(&rp->group[i]);
}

/* Every line ends in CRLF, none is longer than 998 octets. */
static void
check_lines(const struct buf *b)
{
	size_t i, col = 0, bad_lf = 0, too_long = 0;

	for (i = 0; i < b->len; i++) {
		if (b->data[i] == '\n') {
			if (i == 0 || b->data[i - 1] != '\r')
				bad_lf++;
			col = 0;
		} else if (b->data[i] != '\r' && ++col > 998) {
			too_long++;
		}
	}
	CHECK_INT(bad_lf, 0);
	CHECK_INT(too_long, 0);
	CHECK(b->len >= 2 && b->data[b->len - 2] == '\r' && b->data[b->len - 1] == '\n');
}

static void
report_parse(const struct buf *b, struct report *rp)
{
	const char *p = b->data, *end = b->data + b->len, *ct, *bd, *q, *next;
	char delim[220];
	size_t dlen;

	memset(rp, 0, sizeof(*rp));
	check_lines(b);
	p = fields_parse(p, end, &rp->top);
	ct = fields_get(&rp->top, "Content-Type");
	CHECK(ct != NULL && strncmp(ct, "multipart/report;", 17) == 0);
	CHECK(ct != NULL && strstr(ct, "report-type=delivery-status") != NULL);
	bd = ct ? strstr(ct, "boundary=\"") : NULL;
	CHECK(bd != NULL);
	if (bd == NULL)
		return;
	bd += 10;
	snprintf(rp->boundary, sizeof(rp->boundary), "%.*s", (int)(strchr(bd, '"') - bd), bd);
	dlen = (size_t)snprintf(delim, sizeof(delim), "\r\n--%s", rp->boundary);

	/* preamble, then parts */
	q = memmem(p - 2, (size_t)(end - p + 2), delim, dlen);
	CHECK(q != NULL);
	while (q != NULL) {
		q += dlen;
		if (q + 2 <= end && q[0] == '-' && q[1] == '-') {
			rp->closed = true;
			CHECK(q + 4 == end);            /* "--" CRLF ends the message */
			break;
		}
		CHECK(q + 2 <= end && q[0] == '\r' && q[1] == '\n');
		q += 2;
		next = memmem(q, (size_t)(end - q), delim, dlen);
		CHECK(next != NULL);
		if (next == NULL || rp->nparts == 4)
			break;
		struct part *pt = &rp->part[rp->nparts++];
		pt->body = fields_parse(q, next, &pt->h);
		pt->len = (size_t)(next - pt->body);
		q = next;
	}
	/* delivery-status: groups separated by empty lines */
	if (rp->nparts >= 2) {
		const char *s = rp->part[1].body, *e = s + rp->part[1].len + 2;  /* + the delimiter's CRLF */
		while (s < e && rp->ngroups < 8)
			s = fields_parse(s, e, &rp->group[rp->ngroups++]);
	}
}

/*
 * The message under test.
 */
static char tmpdir[] = "/tmp/test_ndr.XXXXXX";

static const char original[] =
    "Received: from client (127.0.0.1) by relay.test\r\n"
    "From: Alice <alice@relay.test>\r\n"
    "To: bob@example.org, carol@example.org\r\n"
    "Subject: quarterly numbers\r\n"
    "Message-ID: <orig-1@relay.test>\r\n"
    "\r\n"
    "The numbers are in.\r\n"
    "--=_relayd_ndr_NDRX_Q1\r\n"
    "(a line that looks like the first boundary choice)\r\n";

static struct env_rcpt rcpts[3] = {
	{ "bob@example.org", "rfc822;Bob@Example.org", 0 },
	{ "carol@example.org", NULL, ENV_NOTIFY_NEVER },
	{ "dave@example.net", NULL, ENV_NOTIFY_SUCCESS | ENV_NOTIFY_FAILURE },
};

/*
 * A queued message Q1 whose file is dir/msg/Q1 (its queue_dir is dir), with
 * room for its recipients (rcpt[] is a flexible array member, as
 * queue_msg_new() makes it, zeroed); the caller frees it.
 */
static struct queue_msg *
msg_new(const char *dir, const char *body, size_t len)
{
	static const char prefix[] = "ENVELOPE LINES THAT ARE NOT THE MESSAGE\n";
	struct queue_msg *m;
	char path[PATH_MAX];
	FILE *f;

	m = xcalloc(1, sizeof(*m) + RELAY_ARRAY_LEN(rcpts) * sizeof(m->rcpt[0]));
	snprintf(m->qid, sizeof(m->qid), "Q1");
	fake.dir = dir;
	snprintf(path, sizeof(path), "%s/msg", dir);
	if ((mkdir(dir, 0700) == -1 && errno != EEXIST) || (mkdir(path, 0700) == -1 && errno != EEXIST))
		fatalx("%s: cannot make %s", __func__, path);
	f = fopen(msg_file(m), "wb");
	if (f == NULL || fwrite(prefix, 1, sizeof(prefix) - 1, f) != sizeof(prefix) - 1 ||
	    fwrite(body, 1, len, f) != len || fclose(f) != 0)
		fatalx("%s: cannot write %s", __func__, path);
	m->env.sender = "alice@relay.test";
	m->env.rcpts = rcpts;
	m->env.nrcpts = RELAY_ARRAY_LEN(rcpts);
	m->env.arrival_ms = 1700000000000ull;
	m->body_offset = sizeof(prefix) - 1;
	m->body_len = len;
	return m;
}

static const struct ndr_params params = {
	"relay.test", 1700000600000ull, 1700432000000ull, NULL, NULL, NULL,
};

/*
 * ndr_header_put: folding, injection, RFC 2047.
 */

static int
b64val(int c)
{
	const char *t = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const char *p = c ? strchr(t, c) : NULL;
	return p ? (int)(p - t) : -1;
}

/* Decode a value made of =?utf-8?B?...?= words separated by spaces. */
static void
decode_2047(const char *v, struct buf *out)
{
	while (*v != '\0') {
		const char *s, *e;
		unsigned acc = 0;
		int bits = 0;
		if (*v == ' ') {
			v++;
			continue;
		}
		CHECK(strncmp(v, "=?utf-8?B?", 10) == 0);
		if (strncmp(v, "=?utf-8?B?", 10) != 0)
			return;
		s = v + 10;
		e = strstr(s, "?=");
		CHECK(e != NULL);
		if (e == NULL)
			return;
		CHECK(e + 2 - v <= 75);                 /* RFC 2047 2: at most 75 chars */
		for (; s < e && *s != '='; s++) {
			acc = (acc << 6) | (unsigned)b64val(*s);
			bits += 6;
			if (bits >= 8) {
				bits -= 8;
				buf_putc(out, (char)((acc >> bits) & 0xff));
			}
		}
		v = e + 2;
	}
}

static void
test_header_put(void)
{
	static const struct {
		const char *name, *value;
		unsigned flags;
		const char *want;            /* exact bytes, or NULL to check structurally */
		const char *unfolded;        /* value after unfolding (and decoding) */
	} cases[] = {
		{ "Subject", "hello", NDR_HDR_TEXT, "Subject: hello\r\n", "hello" },
		{ "Subject", "", 0, "Subject: \r\n", "" },
		{ "To", "<a@b>\r\nBcc: evil@x", 0, "To: <a@b>  Bcc: evil@x\r\n", "<a@b>  Bcc: evil@x" },
		{ "X-Ctl", "a\tb\x01" "c", 0, "X-Ctl: a b c\r\n", "a b c" },
		{ "Diagnostic-Code", "smtp; 550 5.1.1 <bob@example.org>: Recipient address "
		    "rejected: User unknown in virtual mailbox table; please check the address",
		    0, NULL, "smtp; 550 5.1.1 <bob@example.org>: Recipient address "
		    "rejected: User unknown in virtual mailbox table; please check the address" },
		{ "Subject", "Zustellung fehlgeschlagen: Empf\xc3\xa4nger unbekannt \xe2\x80\x94 "
		    "bitte pr\xc3\xbc" "fen Sie die Adresse und versuchen Sie es sp\xc3\xa4ter erneut",
		    NDR_HDR_TEXT, NULL, "Zustellung fehlgeschlagen: Empf\xc3\xa4nger unbekannt \xe2\x80\x94 "
		    "bitte pr\xc3\xbc" "fen Sie die Adresse und versuchen Sie es sp\xc3\xa4ter erneut" },
		{ "Subject", "\xe2\x82\xac", NDR_HDR_TEXT, "Subject: =?utf-8?B?4oKs?=\r\n", "\xe2\x82\xac" },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(cases); i++) {
		struct buf out = BUF_INIT, dec = BUF_INIT;
		struct fields fs;
		const char *v;

		ndr_header_put(&out, cases[i].name, cases[i].value, cases[i].flags);
		if (cases[i].want != NULL)
			CHECK_STR(buf_cstr(&out), cases[i].want);
		check_lines(&out);
		buf_puts(&out, "\r\n");
		fields_parse(out.data, out.data + out.len, &fs);
		CHECK_INT(fs.n, 1);
		v = fields_get(&fs, cases[i].name);
		CHECK(v != NULL);
		if (v != NULL && strncmp(v, "=?", 2) == 0) {
			/* encoded: every line still ASCII and <= 78 */
			CHECK(strspn(v, "=?-_.+/0123456789abcdefghijklmnopqrstuvwxyz"
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ ") == strlen(v));
			decode_2047(v, &dec);
			CHECK_STR(buf_cstr(&dec), cases[i].unfolded);
		} else if (v != NULL) {
			CHECK_STR(v, cases[i].unfolded);
		}
		/* folded lines stay within 78 columns when words allow it */
		{
			const char *l = out.data, *nl;
			while ((nl = strstr(l, "\r\n")) != NULL && nl != l) {
				CHECK_MSG(nl - l <= 78, "case %zu: line of %d", i, (int)(nl - l));
				l = nl + 2;
			}
		}
		fields_free(&fs);
		buf_free(&out);
		buf_free(&dec);
	}

	/* An unbroken 3000-octet value is split, never a line over 998. */
	{
		struct buf out = BUF_INIT;
		char *big = xmalloc(3001);
		memset(big, 'x', 3000);
		big[3000] = '\0';
		ndr_header_put(&out, "X-Long", big, 0);
		check_lines(&out);
		CHECK(out.len > 3000);
		free(big);
		buf_free(&out);
	}
}

/*
 * ndr_format: a table of reports, parsed back.
 */

struct format_case {
	const char *name;
	enum ndr_kind kind;
	enum env_ret ret;
	const char *envid;
	int idx[3];                  /* recipients passed (index, -1 ends) */
	int want_rcpts;              /* recipients reported after NOTIFY, -1 = ENOENT */
	const char *subject;
	const char *action;
	const char *status;          /* of the first reported recipient */
	const char *part3;           /* Content-Type of part 3 (NULL: none) */
	bool retry_until;
	const char *text_has;        /* a phrase the text part must carry */
	uint64_t body_len_override;  /* pretend the message is this big (0: real) */
};

static const struct format_case format_cases[] = {
	{ "failed, RET=HDRS, ORCPT", NDR_FAILED, ENV_RET_HDRS, NULL, { 0, -1 }, 1,
	  "Undelivered Mail Returned to Sender", "failed", "5.1.1", "text/rfc822-headers", false,
	  "check the address", 0 },
	{ "failed, RET=FULL, ENVID", NDR_FAILED, ENV_RET_FULL, "ENV-42", { 0, -1 }, 1,
	  "Undelivered Mail Returned to Sender", "failed", "5.1.1", "message/rfc822", false,
	  "attached in full", 0 },
	{ "failed, RET=FULL too large", NDR_FAILED, ENV_RET_FULL, NULL, { 0, -1 }, 1,
	  "Undelivered Mail Returned to Sender", "failed", "5.1.1", "text/rfc822-headers", false,
	  "too large to be returned in full", 11u * 1024 * 1024 },
	{ "failed, two recipients, one NOTIFY=NEVER", NDR_FAILED, ENV_RET_NONE, NULL, { 0, 1, 2 }, 2,
	  "Undelivered Mail Returned to Sender", "failed", "5.1.1", "text/rfc822-headers", false,
	  "dave@example.net", 0 },
	{ "expired, destination down", NDR_EXPIRED, ENV_RET_FULL, NULL, { 0, -1 }, 1,
	  "Undelivered Mail Returned to Sender", "failed", "4.4.7", "message/rfc822", false,
	  "unreachable since", 0 },
	{ "delayed: headers only even with RET=FULL", NDR_DELAYED, ENV_RET_FULL, NULL, { 0, -1 }, 1,
	  "Delayed Mail (still being retried)", "delayed", "4.4.1", "text/rfc822-headers", true,
	  "keep trying until", 0 },
	{ "delayed: NOTIFY=SUCCESS,FAILURE excludes DELAY", NDR_DELAYED, ENV_RET_NONE, NULL, { 2, -1 }, -1,
	  NULL, NULL, NULL, NULL, false, NULL, 0 },
	{ "success asked", NDR_SUCCESS, ENV_RET_FULL, NULL, { 2, -1 }, 1,
	  "Successful Mail Delivery Report", "relayed", "2.0.0", "text/rfc822-headers", false,
	  "was relayed", 0 },
	{ "success not asked (NOTIFY absent)", NDR_SUCCESS, ENV_RET_NONE, NULL, { 0, -1 }, -1,
	  NULL, NULL, NULL, NULL, false, NULL, 0 },
	{ "NOTIFY=NEVER only", NDR_FAILED, ENV_RET_NONE, NULL, { 1, -1 }, -1,
	  NULL, NULL, NULL, NULL, false, NULL, 0 },
};

/* What the caller knows about each recipient, by kind. */
static void
rcpt_info(const struct format_case *fc, int idx, struct ndr_rcpt *nr)
{
	memset(nr, 0, sizeof(*nr));
	nr->index = idx;
	nr->attempts = 3;
	nr->last_attempt_ms = 1700000500000ull;
	switch (fc->kind) {
	case NDR_FAILED:
		nr->status = "5.1.1";
		nr->remote_host = "mx1.example.org";
		nr->diagnostic = "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown";
		break;
	case NDR_EXPIRED:
		nr->status = "4.4.7";
		nr->remote_host = NULL;
		nr->diagnostic = "connect to mx1.example.org[192.0.2.1]:25: Connection refused";
		nr->down_since_ms = 1699990000000ull;
		nr->attempts = 12;
		break;
	case NDR_DELAYED:
		nr->status = "4.4.1";
		nr->remote_host = "mx1.example.org";
		nr->diagnostic = "451 4.3.0 try again later";
		break;
	case NDR_SUCCESS:
		nr->status = NULL;                  /* defaults to 2.0.0 */
		nr->remote_host = "mx1.example.org";
		nr->diagnostic = "250 2.0.0 Ok: queued as 12345";
		break;
	}
}

static void
test_format_case(const struct format_case *fc, const char *path)
{
	struct queue_msg *m;
	struct ndr_rcpt nr[3];
	struct report rp;
	struct buf out = BUF_INIT;
	size_t n = 0;
	const char *v;
	int rc, g;

	m = msg_new(path, original, sizeof(original) - 1);
	m->env.ret = fc->ret;
	m->env.envid = (char *)fc->envid;
	if (fc->body_len_override)
		m->body_len = fc->body_len_override;
	while (n < 3 && fc->idx[n] >= 0) {
		rcpt_info(fc, fc->idx[n], &nr[n]);
		n++;
	}
	rc = ndr_format(m, msg_file(m), fc->kind, nr, n, &params, "NDRX", &out);
	if (fc->want_rcpts < 0) {
		CHECK_MSG(rc == RELAY_ENOENT, "%s: rc %d", fc->name, rc);
		buf_free(&out);
		free(m);
		return;
	}
	CHECK_MSG(rc == 0, "%s: rc %d", fc->name, rc);
	report_parse(&out, &rp);

	/* top-level headers */
	CHECK_STR(fields_get(&rp.top, "From"), "Mail Delivery System <MAILER-DAEMON@relay.test>");
	CHECK_STR(fields_get(&rp.top, "To"), "<alice@relay.test>");
	CHECK_STR(fields_get(&rp.top, "Subject"), fc->subject);
	CHECK_STR(fields_get(&rp.top, "Date"), "Tue, 14 Nov 2023 22:23:20 +0000");
	CHECK_STR(fields_get(&rp.top, "MIME-Version"), "1.0");
	CHECK_STR(fields_get(&rp.top, "Auto-Submitted"), "auto-replied");
	v = fields_get(&rp.top, "Message-ID");
	CHECK(v != NULL && v[0] == '<' && strstr(v, "NDRX") != NULL && strstr(v, "@relay.test>") != NULL);
	CHECK_INT(fields_count(&rp.top, "Subject"), 1);

	/* boundary: names both queue ids, and avoids the text in the original */
	CHECK(strstr(rp.boundary, "NDRX") != NULL && strstr(rp.boundary, "Q1") != NULL);
	CHECK(strcmp(rp.boundary, "=_relayd_ndr_NDRX_Q1") != 0 || fc->part3 == NULL ||
	    strcmp(fc->part3, "message/rfc822") != 0);
	CHECK(rp.closed);
	CHECK_INT(rp.nparts, fc->part3 ? 3 : 2);

	/* part 1: plain text */
	CHECK(rp.nparts >= 1 && strncmp(fields_get(&rp.part[0].h, "Content-Type") ?: "",
	    "text/plain; charset=utf-8", 25) == 0);
	if (rp.nparts >= 1) {
		struct buf t = BUF_INIT;
		buf_append(&t, rp.part[0].body, rp.part[0].len);
		CHECK_MSG(strstr(t.data, fc->text_has) != NULL, "%s: text lacks \"%s\":\n%s",
		    fc->name, fc->text_has, t.data);
		CHECK(strstr(t.data, "relay.test") != NULL);
		if (fc->kind != NDR_EXPIRED)                    /* the remote's words */
			CHECK_MSG(text_has_words(t.data, nr[0].diagnostic), "%s: %s", fc->name, t.data);
		buf_free(&t);
	}

	/* part 2: message/delivery-status */
	CHECK(rp.nparts >= 2 && strcmp(fields_get(&rp.part[1].h, "Content-Type") ?: "",
	    "message/delivery-status") == 0);
	CHECK_INT(rp.ngroups, 1 + fc->want_rcpts);
	CHECK_STR(fields_get(&rp.group[0], "Reporting-MTA"), "dns; relay.test");
	CHECK_STR(fields_get(&rp.group[0], "Arrival-Date"), "Tue, 14 Nov 2023 22:13:20 +0000");
	if (fc->envid != NULL)
		CHECK_STR(fields_get(&rp.group[0], "Original-Envelope-Id"), fc->envid);
	else
		CHECK(fields_get(&rp.group[0], "Original-Envelope-Id") == NULL);
	for (g = 1; g < rp.ngroups; g++) {
		const struct fields *gr = &rp.group[g];
		const struct env_rcpt *er = NULL;
		int k;
		for (k = 0; k < (int)n; k++) {
			char want[128];
			snprintf(want, sizeof(want), "rfc822; %s", rcpts[nr[k].index].addr);
			if (strcmp(fields_get(gr, "Final-Recipient") ?: "", want) == 0)
				er = &rcpts[nr[k].index];
		}
		CHECK_MSG(er != NULL, "%s: Final-Recipient %s", fc->name,
		    fields_get(gr, "Final-Recipient") ?: "(none)");
		CHECK(er == NULL || !(er->notify & ENV_NOTIFY_NEVER));
		if (er != NULL && er->orcpt != NULL)
			CHECK_STR(fields_get(gr, "Original-Recipient"), er->orcpt);
		else
			CHECK(fields_get(gr, "Original-Recipient") == NULL);
		CHECK_STR(fields_get(gr, "Action"), fc->action);
		CHECK_STR(fields_get(gr, "Status"), fc->status);
		CHECK_STR(fields_get(gr, "Last-Attempt-Date"), "Tue, 14 Nov 2023 22:21:40 +0000");
		if (nr[0].remote_host != NULL)
			CHECK_STR(fields_get(gr, "Remote-MTA"), "dns; mx1.example.org");
		else
			CHECK(fields_get(gr, "Remote-MTA") == NULL);
		v = fields_get(gr, "Diagnostic-Code");
		if (fc->kind == NDR_EXPIRED)
			CHECK(v != NULL && strncmp(v, "X-Relayd; connect to", 20) == 0);
		else
			CHECK(v != NULL && strncmp(v, "smtp; ", 6) == 0 &&
			    strcmp(v + 6, nr[0].diagnostic) == 0);
		if (fc->retry_until)
			CHECK_STR(fields_get(gr, "Will-Retry-Until"), "Sun, 19 Nov 2023 22:13:20 +0000");
		else
			CHECK(fields_get(gr, "Will-Retry-Until") == NULL);
	}

	/* part 3: the original */
	if (fc->part3 != NULL && rp.nparts >= 3) {
		struct buf t = BUF_INIT;
		CHECK_STR(fields_get(&rp.part[2].h, "Content-Type"), fc->part3);
		buf_append(&t, rp.part[2].body, rp.part[2].len);
		CHECK(strstr(t.data, "Subject: quarterly numbers\r\n") != NULL);
		if (strcmp(fc->part3, "message/rfc822") == 0)
			CHECK(strstr(t.data, "The numbers are in.\r\n") != NULL);
		else
			CHECK(strstr(t.data, "The numbers are in.") == NULL);
		buf_free(&t);
	}
	report_free(&rp);
	buf_free(&out);
	free(m);
}

static void
test_format(void)
{
	char path[256];
	size_t i;

	snprintf(path, sizeof(path), "%s/msg", tmpdir);
	for (i = 0; i < RELAY_ARRAY_LEN(format_cases); i++)
		test_format_case(&format_cases[i], path);
}

/* Odd originals: unreadable file, no body, 8-bit text, hostile diagnostics. */
static void
test_format_edges(void)
{
	char path[256];
	struct queue_msg *m;
	struct ndr_rcpt nr;
	struct report rp;
	struct buf out = BUF_INIT;
	static const char hdrs_only[] = "Subject: no body\r\nFrom: alice@relay.test\r\n";

	snprintf(path, sizeof(path), "%s/msg2", tmpdir);

	/* The queue file is gone: the report still goes, without part 3. */
	m = msg_new(path, original, sizeof(original) - 1);
	{
		char file[PATH_MAX];

		unlink(queue_msg_path(NULL, m, file, sizeof(file)));
	}
	memset(&nr, 0, sizeof(nr));
	nr.index = 0;
	nr.status = "5.1.1";
	CHECK_INT(ndr_format(m, msg_file(m), NDR_FAILED, &nr, 1, &params, "NDRX", &out), 0);
	report_parse(&out, &rp);
	CHECK_INT(rp.nparts, 2);
	CHECK(strstr(out.data, "could not be read") != NULL);
	report_free(&rp);
	buf_reset(&out);

	/* A message that is all headers (no empty line): all of it is returned. */
	free(m);
	m = msg_new(path, hdrs_only, sizeof(hdrs_only) - 1);
	CHECK_INT(ndr_format(m, msg_file(m), NDR_FAILED, &nr, 1, &params, "NDRX", &out), 0);
	report_parse(&out, &rp);
	CHECK_INT(rp.nparts, 3);
	CHECK(rp.nparts == 3 && rp.part[2].len == sizeof(hdrs_only) - 1 &&
	    memcmp(rp.part[2].body, hdrs_only, rp.part[2].len) == 0);
	report_free(&rp);
	buf_reset(&out);

	/* A message with an empty header section. */
	free(m);
	m = msg_new(path, "\r\nbody only\r\n", 13);
	CHECK_INT(ndr_format(m, msg_file(m), NDR_FAILED, &nr, 1, &params, "NDRX", &out), 0);
	report_parse(&out, &rp);
	CHECK(rp.nparts == 3 && rp.part[2].len == 0);
	report_free(&rp);
	buf_reset(&out);

	/* Hostile / 8-bit diagnostic and a bad status: delivery-status stays
	 * 7-bit ASCII with no injected field; the text part is 8bit utf-8. */
	free(m);
	m = msg_new(path, original, sizeof(original) - 1);
	nr.status = "5.1.1\r\nX-Evil: 1";
	nr.remote_host = "mx.example\r\nX-Evil: 2";
	nr.diagnostic = "550 5.7.1 Empf\xc3\xa4nger abgelehnt\r\nX-Evil: 3 \xff";
	CHECK_INT(ndr_format(m, msg_file(m), NDR_FAILED, &nr, 1, &params, "NDRX", &out), 0);
	report_parse(&out, &rp);
	CHECK_INT(rp.ngroups, 2);
	CHECK(fields_get(&rp.group[1], "X-Evil") == NULL);
	CHECK_STR(fields_get(&rp.group[1], "Status"), "5.0.0");
	CHECK_STR(fields_get(&rp.group[1], "Diagnostic-Code"),
	    "smtp; 550 5.7.1 Empf\\x{C3}\\x{A4}nger abgelehnt  X-Evil: 3 \\x{FF}");
	CHECK_STR(fields_get(&rp.top, "Content-Transfer-Encoding"), "8bit");
	CHECK_STR(fields_get(&rp.part[0].h, "Content-Transfer-Encoding"), "8bit");
	CHECK_STR(fields_get(&rp.part[1].h, "Content-Transfer-Encoding"), "7bit");
	{
		struct buf t = BUF_INIT;
		buf_append(&t, rp.part[0].body, rp.part[0].len);
		CHECK(strstr(t.data, "Empf\xc3\xa4nger abgelehnt") != NULL);
		CHECK(strstr(t.data, "\xff") == NULL);   /* invalid UTF-8 replaced */
		CHECK(strstr(t.data, "\nX-Evil") == NULL);
		buf_free(&t);
	}
	report_free(&rp);
	buf_free(&out);
	free(m);
}

/* The Status field: the caller's when well formed and fitting the Action. */
static void
test_status(void)
{
	static const struct {
		enum ndr_kind kind;
		const char *given, *want;
	} cases[] = {
		{ NDR_FAILED, "5.1.1", "5.1.1" },
		{ NDR_FAILED, "4.4.1", "5.0.0" },       /* "failed" never says 4.x.x */
		{ NDR_FAILED, NULL, "5.0.0" },
		{ NDR_FAILED, "5.1", "5.0.0" },
		{ NDR_FAILED, "5.1.1234", "5.0.0" },
		{ NDR_EXPIRED, "4.4.1", "4.4.1" },
		{ NDR_EXPIRED, "5.4.4", "5.4.4" },
		{ NDR_EXPIRED, "", "4.4.7" },
		{ NDR_DELAYED, "4.2.2", "4.2.2" },
		{ NDR_DELAYED, "2.0.0", "4.0.0" },
		{ NDR_SUCCESS, "2.6.0", "2.6.0" },
		{ NDR_SUCCESS, "5.1.1", "2.0.0" },
	};
	char path[256];
	struct queue_msg *m;
	struct ndr_rcpt nr;
	size_t i;

	snprintf(path, sizeof(path), "%s/msg4", tmpdir);
	for (i = 0; i < RELAY_ARRAY_LEN(cases); i++) {
		struct buf out = BUF_INIT;
		struct report rp;

		m = msg_new(path, original, sizeof(original) - 1);
		memset(&nr, 0, sizeof(nr));
		nr.index = 2;                           /* NOTIFY=SUCCESS,FAILURE */
		nr.status = cases[i].given;
		if (cases[i].kind == NDR_DELAYED)
			nr.index = 0;                   /* NOTIFY absent */
		CHECK_INT(ndr_format(m, msg_file(m), cases[i].kind, &nr, 1, &params, "NDRX", &out), 0);
		report_parse(&out, &rp);
		CHECK_INT(rp.ngroups, 2);
		if (rp.ngroups == 2)
			CHECK_STR(fields_get(&rp.group[1], "Status"), cases[i].want);
		report_free(&rp);
		buf_free(&out);
		free(m);
	}
}

/*
 * ndr_send: suppression, envelope, log lines, stats.
 */

static char logpath[256];

static void
log_text(struct buf *b)
{
	char tmp[4096];
	size_t got;
	FILE *f = fopen(logpath, "r");

	buf_reset(b);
	if (f == NULL)
		return;
	while ((got = fread(tmp, 1, sizeof(tmp), f)) > 0)
		buf_append(b, tmp, got);
	fclose(f);
}

static int
count(const char *hay, const char *needle)
{
	int c = 0;

	for (; (hay = strstr(hay, needle)) != NULL; hay++)
		c++;
	return c;
}

static void
test_send(void)
{
	char path[256];
	struct queue_msg *m;
	struct ndr_rcpt nr[3];
	struct relay_stats stats;
	struct buf lg = BUF_INIT, want = BUF_INIT;
	char qid[QID_MAX];
	struct report rp;
	int before;

	snprintf(path, sizeof(path), "%s/msg3", tmpdir);
	snprintf(logpath, sizeof(logpath), "%s/log", tmpdir);
	CHECK_INT(log_open(logpath), 0);
	memset(&stats, 0, sizeof(stats));
	m = msg_new(path, original, sizeof(original) - 1);
	memset(nr, 0, sizeof(nr));
	nr[0].index = 0;
	nr[0].status = "4.4.7";
	nr[0].attempts = 12;
	nr[0].down_since_ms = 1699990000000ull;
	nr[0].diagnostic = "connect to mx1.example.org: Connection refused";
	nr[1] = nr[0];
	nr[1].index = 1;                            /* NOTIFY=NEVER */
	nr[2] = nr[0];
	nr[2].index = 2;

	/* 1. Sender <>: nothing is sent, the log says why. */
	m->env.sender = "";
	before = fake.begun;
	strcpy(qid, "junk");
	CHECK_INT(ndr_send(NULL, m, NDR_FAILED, nr, 1, &params, &stats, qid, NULL, NULL), 0);
	CHECK_STR(qid, "");
	CHECK_INT(fake.begun, before);
	CHECK_INT(stats.ndr_sent, 0);
	log_text(&lg);
	CHECK(strstr(lg.data ?: "", "event=ndr_suppressed qid=Q1") != NULL);
	CHECK(strstr(lg.data ?: "", "reason=null_sender") != NULL);
	CHECK(strstr(lg.data ?: "", "event=ndr ") == NULL);

	/* 2. Only a NOTIFY=NEVER recipient: nothing is sent. */
	m->env.sender = "alice@relay.test";
	CHECK_INT(ndr_send(NULL, m, NDR_EXPIRED, &nr[1], 1, &params, &stats, qid, NULL, NULL), 0);
	CHECK_STR(qid, "");
	CHECK_INT(fake.begun, before);
	log_text(&lg);
	CHECK(strstr(lg.data, "rcpt=carol@example.org reason=notify") != NULL);

	/* 3. Three recipients expire together: one report for the two that
	 * asked, one `event=ndr` line for each, sharing the ndr_qid. */
	CHECK_INT(ndr_send(NULL, m, NDR_EXPIRED, nr, 3, &params, &stats, qid, NULL, NULL), 0);
	CHECK_INT(fake.begun, before + 1);
	CHECK_INT(fake.committed, before + 1);
	CHECK(qid[0] != '\0');
	CHECK_INT(stats.ndr_sent, 1);
	CHECK_STR(fake.env.sender, "");
	CHECK_INT(fake.env.nrcpts, 1);
	CHECK_STR(fake.env.rcpts[0].addr, "alice@relay.test");
	CHECK(fake.env.auth_user == NULL);
	CHECK(!fake.env.body_8bit);
	/* the bytes are exactly what ndr_format makes */
	CHECK_INT(ndr_format(m, msg_file(m), NDR_EXPIRED, nr, 3, &params, qid, &want), 0);
	CHECK(want.len == fake.data.len && memcmp(want.data, fake.data.data, want.len) == 0);
	report_parse(&fake.data, &rp);
	CHECK_INT(rp.ngroups, 3);
	report_free(&rp);
	log_text(&lg);
	{
		char pat[128];
		snprintf(pat, sizeof(pat), "event=ndr qid=Q1 ndr_qid=%s to=alice@relay.test reason=expired", qid);
		CHECK_INT(count(lg.data, pat), 2);
		CHECK_INT(count(lg.data, "rcpt=bob@example.org status=4.4.7 attempts=12 "
		    "down_since=2023-11-14T19:26:40.000Z"), 1);
		CHECK_INT(count(lg.data, "rcpt=dave@example.net status=4.4.7"), 1);
		CHECK_INT(count(lg.data, "event=ndr qid=Q1 ndr_qid=") , 2);
	}

	/* 4. The commit fails: logged as ndr_failed, not counted. */
	fake.commit_err = RELAY_EIO;
	CHECK_INT(ndr_send(NULL, m, NDR_FAILED, nr, 1, &params, &stats, qid, NULL, NULL), 0);
	fake.commit_err = 0;
	CHECK_INT(stats.ndr_sent, 1);
	log_text(&lg);
	CHECK(strstr(lg.data, "event=ndr_failed qid=Q1") != NULL);

	/* 5. 8-bit diagnostic: the report's envelope asks for 8BITMIME. */
	nr[0].diagnostic = "550 Empf\xc3\xa4nger unbekannt";
	CHECK_INT(ndr_send(NULL, m, NDR_FAILED, nr, 1, &params, &stats, qid, NULL, NULL), 0);
	CHECK(fake.env.body_8bit);
	CHECK(!fake.env.smtputf8);
	CHECK_INT(stats.ndr_sent, 2);

	log_close();
	envelope_free(&fake.env);
	buf_free(&fake.data);
	buf_free(&lg);
	buf_free(&want);
	free(m);
}

int
main(void)
{
	char cmd[300];

	if (mkdtemp(tmpdir) == NULL)
		fatalx("mkdtemp: %s", tmpdir);
	test_header_put();
	test_format();
	test_format_edges();
	test_status();
	test_send();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", tmpdir);
	return check_done();
}
