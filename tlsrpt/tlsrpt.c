/*
 * tlsrpt.c - the tlsrpt module's life (tlsrpt.h): counting sessions into
 * the table (tlsrpt_count.c), writing it to queue_dir/tlsrpt, and sending
 * the reports (tlsrpt_report.c builds them) once per slot.
 *
 * Reporting: a timer fires at the end of each slot (router.tlsrpt_interval,
 * cut at UTC midnight).  Every bucket of an earlier slot is then due: its
 * domain's _smtp._tls record is looked up; with none (or none usable) the
 * bucket is dropped (event=tlsrpt_skipped); with one, the report goes to
 * each rua that has not taken it yet (mailto: queued, https: POSTed).  A
 * bucket leaves the table once every rua has taken it; a failed lookup or
 * destination leaves it for the next slot's attempt, with the same
 * report-id, for up to TLSRPT_MAX_AGE_MS (then event=tlsrpt_dropped).  A
 * crash between a destination taking the report and the file saying so
 * sends that report again: at least once, never lost.
 *
 * At most TLSRPT_MAILS_MAX mailto: reports are being queued at once (each a
 * queue transaction holding its file until its commit): a slot's end can
 * make every domain's report due together.  A mailto: destination that
 * finds no room waits in t->mail_wait, in the order the reports were
 * built, and is queued (tlsrpt_mail_pump) as one in flight commits; its
 * send keeps the gzipped report meanwhile, and its bucket stays "sending".
 * At a stop the waiting ones fail ("relayd is stopping"): not marked sent,
 * the next start sends them.
 *
 * The file: rewritten whole (write, fsync, rename, fsync of the directory)
 * on the thread pool, one write at a time, TLSRPT_SAVE_DELAY_MS after the
 * first change since the last write, so that a burst of sessions costs one
 * write.
 *
 * Owns: the table, the known-record cache, the timers, the sends in flight
 * and the mailto: reports waiting for room.
 * Must never: block the loop (the file is read synchronously once, in
 * tlsrpt_new, before the loop runs); lose counts because a report failed.
 */
#include "tlsrpt/tlsrpt_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/envelope.h"
#include "common/log.h"
#include "common/util.h"
#include "dkim/dkim.h"
#include "dns/dns.h"
#include "http/http.h"
#include "ndr/ndr.h"
#include "queue/queue.h"

#define TLSRPT_MAGIC            0x544c5352u
#define TLSRPT_MAGIC_SEND       0x544c5353u
#define TLSRPT_FILE             "tlsrpt"
#define TLSRPT_FILE_TMP         "tlsrpt.tmp"
#define TLSRPT_FILE_CORRUPT     "tlsrpt.corrupt"
#define TLSRPT_MAX_FILE         (16 * 1024 * 1024)
#define TLSRPT_SAVE_DELAY_MS    1000
#define TLSRPT_KNOWN_TTL_MS     3600000ULL      /* a domain's record, seen or not */
#define TLSRPT_KNOWN_TEMP_MS    300000ULL       /* after a failed lookup */
#define TLSRPT_MAX_AGE_MS       (3 * 86400000ULL)
#define TLSRPT_START_DELAY_MS   1000            /* due buckets found at start-up */
#define TLSRPT_HTTP_TIMEOUT_MS  60000           /* one POST, resolution included */

enum tlsrpt_known_state { TLSRPT_KNOWN_PENDING, TLSRPT_KNOWN_YES, TLSRPT_KNOWN_NO };

/* Does a domain without a policy publish _smtp._tls?  (no-policy-found counts) */
struct tlsrpt_known {
	struct htab_node node;          /* in t->known, by domain */
	char *domain;
	enum tlsrpt_known_state state;
	uint64_t until_ms;              /* wall clock: ask again after this */
	uint64_t looked_up_ms;          /* the last answer (0: none yet) */
	char *rua;                      /* its rua URIs, ","-separated, or NULL */
	struct dns_query *q;            /* while PENDING */
	struct tlsrpt *t;
};

struct tlsrpt_send;

/* One destination of a report in flight. */
struct tlsrpt_dest {
	struct tlsrpt_send *s;
	char *rua;                      /* "mailto:x@y" or the https URI, as recorded */
	char *to;                       /* the mail address, or the URI */
	char kind;                      /* 'm' or 'h' */
	struct http_req *hq;            /* 'h': the POST in flight */
	LIST_ENTRY(tlsrpt_dest) entry;  /* 'h': in t->posts */
	TAILQ_ENTRY(tlsrpt_dest) wait_entry; /* 'm': in t->mail_wait while it waits for room */
	bool waited;                    /* 'm': it had to wait */
};

/* One bucket's report: its lookup, then its destinations. */
struct tlsrpt_send {
	uint32_t magic;
	struct tlsrpt *t;
	char *key;                      /* the bucket's */
	char *domain;
	uint64_t end_ms;                /* the report's end-datetime */
	struct dns_query *q;            /* the _smtp._tls lookup, while out */
	unsigned pending;               /* destinations in flight */
	unsigned failed;                /* destinations that did not take it */
	uint64_t ok, bad;               /* the totals, for the logs */
	struct buf gz;                  /* the gzipped report, once built (its mails may wait) */
	LIST_ENTRY(tlsrpt_send) entry;
};

struct tlsrpt {
	uint32_t magic;
	uv_loop_t *loop;
	struct conf *conf;
	struct queue *queue;
	struct dns_resolver *dns;
	struct dkim_keys *dkim;
	struct tlsrpt_table tb;
	struct htab known;              /* struct tlsrpt_known by domain (no case) */
	LIST_HEAD(, tlsrpt_send) sends;
	struct http_client *http;       /* https: reports */
	LIST_HEAD(, tlsrpt_dest) posts; /* POSTs in flight */
	unsigned nmails;                /* mailto: reports being queued: at most TLSRPT_MAILS_MAX */
	TAILQ_HEAD(, tlsrpt_dest) mail_wait; /* mailto: reports waiting for room, FIFO */

	char *path, *tmp_path;
	uv_timer_t report_timer;
	uv_timer_t save_timer;
	bool save_armed;
	uv_work_t work;                 /* the write in flight */
	bool writing;
	bool dirty;                     /* changed since the last write began */
	char *wtext;
	int werr;

	bool closing;
	int open_handles;
	void (*close_done)(void *arg);
	void *close_arg;
};

static void tlsrpt_save_soon(struct tlsrpt *t);
static void tlsrpt_close_check(struct tlsrpt *t);
static void tlsrpt_arm(struct tlsrpt *t, uint64_t now);

/*
 * The file.
 */

static int
tlsrpt_load(struct tlsrpt *t, struct buf *err)
{
	struct buf why = BUF_INIT, cp = BUF_INIT;
	char *text = NULL;
	size_t len = 0;
	int rc = 0;

	if (util_read_file(t->path, TLSRPT_MAX_FILE, &text, &len) != 0) {
		if (errno == ENOENT)
			return 0;
		if (errno != EFBIG) {
			buf_printf(err, "%s: %s", t->path, strerror(errno));
			return -1;
		}
		buf_printf(&why, "larger than %d bytes", TLSRPT_MAX_FILE);
	} else if (strlen(text) != len)
		buf_puts(&why, "NUL byte");
	else if (tlsrpt_table_load(&t->tb, text, &why) != 0) {
		tlsrpt_table_free(&t->tb);
		tlsrpt_table_init(&t->tb);
	}
	free(text);
	if (why.len > 0) {
		/* keep what was there for the admin; count afresh */
		buf_printf(&cp, "%s/%s", t->conf->queue_dir, TLSRPT_FILE_CORRUPT);
		if (rename(t->path, buf_cstr(&cp)) != 0) {
			buf_printf(err, "%s: %s, and it cannot be moved aside: %s", t->path,
			    buf_cstr(&why), strerror(errno));
			rc = -1;
		} else
			log_event(LOG_ERR, "tlsrpt_corrupt", "path", t->path, "error", buf_cstr(&why),
			    "moved_to", buf_cstr(&cp), NULL);
	}
	buf_free(&why);
	buf_free(&cp);
	return rc;
}

/* Thread pool: write the text to the temporary file, sync it, rename it
 * over, and sync the directory (util_write_file_atomic). */
static void
tlsrpt_write_work(uv_work_t *w)
{
	struct tlsrpt *t = w->data;

	t->werr = 0;
	if (util_write_file_atomic(t->path, t->tmp_path, t->wtext, strlen(t->wtext)) != 0)
		t->werr = errno != 0 ? errno : EIO;
}

static void
tlsrpt_write_done(uv_work_t *w, int status)
{
	struct tlsrpt *t = w->data;

	t->writing = false;
	free(t->wtext);
	t->wtext = NULL;
	if (status != 0 || t->werr != 0) {
		log_event(LOG_ERR, "tlsrpt_save_failed", "path", t->path,
		    "error", status != 0 ? uv_strerror(status) : strerror(t->werr), NULL);
		t->dirty = true;        /* try again */
		if (t->closing) {
			t->dirty = false;       /* once is enough at a stop */
			tlsrpt_close_check(t);
			return;
		}
	}
	if (t->dirty)
		tlsrpt_save_soon(t);
	tlsrpt_close_check(t);
}

static void
tlsrpt_write_start(struct tlsrpt *t)
{
	struct buf b = BUF_INIT;

	if (t->writing || !t->dirty)
		return;
	tlsrpt_table_save(&t->tb, &b);
	t->wtext = buf_steal(&b);
	t->dirty = false;
	t->work.data = t;
	if (uv_queue_work(t->loop, &t->work, tlsrpt_write_work, tlsrpt_write_done) != 0) {
		log_event(LOG_ERR, "tlsrpt_save_failed", "path", t->path, "error", "queue_work", NULL);
		free(t->wtext);
		t->wtext = NULL;
		return;
	}
	t->writing = true;
}

static void
tlsrpt_on_save_timer(uv_timer_t *h)
{
	struct tlsrpt *t = h->data;

	t->save_armed = false;
	tlsrpt_write_start(t);
}

/* The table changed: write it within TLSRPT_SAVE_DELAY_MS. */
static void
tlsrpt_save_soon(struct tlsrpt *t)
{
	t->dirty = true;
	if (t->closing) {
		tlsrpt_write_start(t);
		return;
	}
	if (t->save_armed || t->writing)
		return;         /* the write's end looks at dirty again */
	t->save_armed = true;
	uv_timer_start(&t->save_timer, tlsrpt_on_save_timer, TLSRPT_SAVE_DELAY_MS, 0);
}

/*
 * Does a domain without a policy publish a record?
 */

static void
tlsrpt_known_free(struct tlsrpt_known *k)
{
	free(k->rua);
	free(k->domain);
	free(k);
}

static struct tlsrpt_known *
tlsrpt_known_get(struct tlsrpt *t, const char *domain)
{
	struct htab_node *n = htab_find(&t->known, domain);
	struct tlsrpt_known *k;

	if (n != NULL)
		return HTAB_ENTRY(n, struct tlsrpt_known, node);
	k = xcalloc(1, sizeof(*k));
	k->domain = xstrdup(domain);
	k->t = t;
	k->state = TLSRPT_KNOWN_NO;
	htab_insert(&t->known, &k->node, k->domain);
	return k;
}

/* Remember an answer for relayctl policy: n rua URIs (0: no record). */
static void
tlsrpt_known_note(struct tlsrpt_known *k, char *const *rua, const char *kind, int n,
    uint64_t now)
{
	struct buf b = BUF_INIT;
	int i;

	for (i = 0; i < n; i++)
		buf_printf(&b, "%s%s%s", i > 0 ? "," : "", kind[i] == 'm' ? "mailto:" : "", rua[i]);
	free(k->rua);
	k->rua = n > 0 ? buf_steal(&b) : NULL;
	buf_free(&b);
	k->looked_up_ms = now;
	if (k->state != TLSRPT_KNOWN_PENDING) {
		k->state = n > 0 ? TLSRPT_KNOWN_YES : TLSRPT_KNOWN_NO;
		k->until_ms = now + TLSRPT_KNOWN_TTL_MS;
	}
}

static void
tlsrpt_on_known(void *arg, struct dns_result *res)
{
	struct tlsrpt_known *k = arg;
	struct tlsrpt *t = k->t;
	char *rua[TLSRPT_MAX_RUA], kind[TLSRPT_MAX_RUA];
	const char *why;
	uint64_t now = util_now_ms();
	int n, i;

	k->q = NULL;
	if (res->err == RELAY_ETEMP) {
		k->state = TLSRPT_KNOWN_YES;    /* keep counting; the report's lookup decides */
		k->until_ms = now + TLSRPT_KNOWN_TEMP_MS;
	} else if (res->err == 0 && (n = tlsrpt_parse_record(res->txt, res->ntxt, rua, kind,
	    &why)) > 0) {
		k->state = TLSRPT_KNOWN_YES;
		tlsrpt_known_note(k, rua, kind, n, now);
		for (i = 0; i < n; i++)
			free(rua[i]);
	} else {
		k->state = TLSRPT_KNOWN_NO;
		tlsrpt_known_note(k, NULL, NULL, 0, now);
		tlsrpt_table_drop_nopolicy(&t->tb, k->domain);
		tlsrpt_save_soon(t);
	}
	dns_result_free(res);
}

/* Should a no-policy-found session with domain be counted?  Looks the
 * record up when the last answer is older than TLSRPT_KNOWN_TTL_MS. */
static bool
tlsrpt_known_wanted(struct tlsrpt *t, const char *domain, uint64_t now)
{
	struct htab_node *n = htab_find(&t->known, domain);
	struct tlsrpt_known *k;
	struct buf name = BUF_INIT;

	k = n != NULL ? HTAB_ENTRY(n, struct tlsrpt_known, node) : NULL;
	if (k != NULL && (k->state == TLSRPT_KNOWN_PENDING || now < k->until_ms))
		return k->state != TLSRPT_KNOWN_NO;
	k = tlsrpt_known_get(t, domain);
	k->state = TLSRPT_KNOWN_PENDING;
	buf_printf(&name, "_smtp._tls.%s", domain);
	k->q = dns_lookup_txt(t->dns, buf_cstr(&name), tlsrpt_on_known, k);
	buf_free(&name);
	return true;
}

/* Forget the answers that have expired (the report timer's sweep). */
static void
tlsrpt_known_sweep(struct tlsrpt *t, uint64_t now)
{
	struct htab_iter it;
	struct htab_node *n;
	struct tlsrpt_known *k;

	for (n = htab_first(&t->known, &it); n != NULL; n = htab_next(&it)) {
		k = HTAB_ENTRY(n, struct tlsrpt_known, node);
		if (k->state != TLSRPT_KNOWN_PENDING && now >= k->until_ms) {
			htab_remove(&t->known, &k->node);
			tlsrpt_known_free(k);
		}
	}
}

/*
 * Counting.
 */

void
tlsrpt_session(struct tlsrpt *t, const struct tlsrpt_session *ev, uint64_t now_ms)
{
	uint64_t start, end;

	if (t == NULL || t->closing || ev->domain == NULL || ev->domain[0] == '\0')
		return;
	if (t->magic != TLSRPT_MAGIC)
		fatalx("%s: bad tlsrpt", __func__);
	/* the lookup also tells relayctl policy where the domain's reports go */
	if (!tlsrpt_known_wanted(t, ev->domain, now_ms) && ev->type == TLSRPT_NO_POLICY)
		return;
	tlsrpt_slot(now_ms, t->conf->router.tlsrpt_interval, &start, &end);
	tlsrpt_table_add(&t->tb, ev, start, end);
	tlsrpt_save_soon(t);
}

/*
 * Sending.
 */

static void
tlsrpt_org(const struct tlsrpt *t, struct tlsrpt_org *org, struct buf *contact)
{
	const struct conf *c = t->conf;

	org->hostname = c->hostname;
	org->organization = c->tlsrpt.organization != NULL ? c->tlsrpt.organization : c->hostname;
	if (c->tlsrpt.contact != NULL)
		buf_puts(contact, c->tlsrpt.contact);
	else
		buf_printf(contact, "postmaster@%s", c->hostname);
	org->contact = buf_cstr(contact);
}

static struct tlsrpt_bucket *
tlsrpt_send_bucket(struct tlsrpt_send *s)
{
	struct htab_node *n = htab_find(&s->t->tb.buckets, s->key);

	return n != NULL ? HTAB_ENTRY(n, struct tlsrpt_bucket, node) : NULL;
}

/* The lookup and every destination of s have ended. */
static void
tlsrpt_send_finish(struct tlsrpt_send *s, bool drop)
{
	struct tlsrpt *t = s->t;
	struct tlsrpt_bucket *b = tlsrpt_send_bucket(s);

	if (b != NULL) {
		b->sending = false;
		if (drop || s->failed == 0)
			tlsrpt_table_remove(&t->tb, b);
		tlsrpt_save_soon(t);
	}
	LIST_REMOVE(s, entry);
	s->magic = 0;
	buf_free(&s->gz);
	free(s->key);
	free(s->domain);
	free(s);
	tlsrpt_close_check(t);
}

static void
tlsrpt_dest_done(struct tlsrpt_dest *d, int err, const char *qid, const char *error)
{
	struct tlsrpt_send *s = d->s;
	struct tlsrpt_bucket *b;
	struct log_line l;

	if (s->magic != TLSRPT_MAGIC_SEND)
		fatalx("%s: bad send", __func__);
	b = tlsrpt_send_bucket(s);
	if (err == 0) {
		if (b != NULL)
			tlsrpt_bucket_mark_sent(b, d->rua);
		log_begin(&l, LOG_INFO, "tlsrpt_sent");
	} else {
		s->failed++;
		log_begin(&l, LOG_WARNING, "tlsrpt_failed");
	}
	log_kv(&l, "domain", s->domain);
	log_kv(&l, "rua", d->rua);
	if (qid != NULL)
		log_kv(&l, "report_qid", qid);
	if (b != NULL)
		log_kv(&l, "report_id", b->report_id);
	log_kvu(&l, "successes", s->ok);
	log_kvu(&l, "failures", s->bad);
	if (err != 0)
		log_kv(&l, "error", error != NULL ? error : "?");
	log_end(&l);
	free(d->rua);
	free(d->to);
	free(d);
	if (--s->pending == 0)
		tlsrpt_send_finish(s, false);
}

static void tlsrpt_mail_pump(struct tlsrpt *t);

static void
tlsrpt_on_committed(void *arg, int err, const char *qid)
{
	struct tlsrpt_dest *d = arg;
	struct tlsrpt *t = d->s->t;
	bool closing = t->closing;
	char why[64];

	if (t->nmails == 0)
		fatalx("%s: no report being queued", __func__);
	t->nmails--;
	if (err != 0)
		snprintf(why, sizeof(why), "could not be queued (%d)", err);
	tlsrpt_dest_done(d, err, qid, err != 0 ? why : NULL);
	/* Closing, d's end may have finished the close: t is no longer ours
	 * (and nothing waits: tlsrpt_close failed the waiting ones). */
	if (!closing)
		tlsrpt_mail_pump(t);
}

/* Queue the report for d->to; 0, or -1 (d is then still the caller's). */
static int
tlsrpt_send_mail(struct tlsrpt_send *s, struct tlsrpt_dest *d, const struct tlsrpt_bucket *b,
    const struct buf *gz, uint64_t now)
{
	struct tlsrpt *t = s->t;
	struct tlsrpt_org org;
	struct buf contact = BUF_INIT, from = BUF_INIT, text = BUF_INIT;
	struct ndr_params p;
	struct envelope env;
	struct env_rcpt er;
	struct queue_txn *txn;
	int rc;

	memset(&er, 0, sizeof(er));
	er.addr = d->to;
	er.notify = ENV_NOTIFY_NEVER;
	memset(&env, 0, sizeof(env));
	env.sender = "";                /* automated, as an NDR: nothing ever comes back */
	env.rcpts = &er;
	env.nrcpts = 1;
	env.ret = ENV_RET_NONE;
	env.arrival_ms = now;
	if ((rc = queue_txn_begin(t->queue, &env, &txn)) != 0)
		return -1;
	tlsrpt_org(t, &org, &contact);
	buf_printf(&from, "noreply-smtp-tls-reporting@%s", t->conf->hostname);
	tlsrpt_report_mail(b, &org, buf_cstr(&from), d->to, now, s->end_ms, gz, &text);
	if (queue_txn_write(txn, text.data, text.len) != 0) {
		queue_txn_abort(txn);
		rc = -1;
	} else {
		memset(&p, 0, sizeof(p));
		p.reporting_mta = t->conf->hostname;
		p.now_ms = now;
		p.dkim = t->dkim;
		p.loop = t->loop;
		ndr_commit_signed(txn, &text, &p, tlsrpt_on_committed, d);
	}
	buf_free(&contact);
	buf_free(&from);
	buf_free(&text);
	return rc;
}

/* Queue d's report now, taking a room (given back by tlsrpt_on_committed). */
static void
tlsrpt_mail_run(struct tlsrpt_dest *d)
{
	struct tlsrpt_send *s = d->s;
	struct tlsrpt *t = s->t;
	struct tlsrpt_bucket *b = tlsrpt_send_bucket(s);

	if (b == NULL)
		fatalx("%s: the bucket of a send went away", __func__);
	t->nmails++;
	log_event(LOG_DEBUG, "tlsrpt_queueing", "domain", s->domain, "rua", d->rua,
	    "report_id", b->report_id, "waited", d->waited ? "yes" : "no", NULL);
	if (tlsrpt_send_mail(s, d, b, &s->gz, util_now_ms()) != 0) {
		t->nmails--;
		tlsrpt_dest_done(d, RELAY_EIO, NULL, "could not be queued");
	}
}

/* d's report to a mailto: rua: queued now if there is room and nobody waits
 * for it, else it waits its turn. */
static void
tlsrpt_mail_start(struct tlsrpt_dest *d)
{
	struct tlsrpt *t = d->s->t;

	if (t->nmails < TLSRPT_MAILS_MAX && TAILQ_EMPTY(&t->mail_wait)) {
		tlsrpt_mail_run(d);
		return;
	}
	d->waited = true;
	TAILQ_INSERT_TAIL(&t->mail_wait, d, wait_entry);
}

/* Room for mailto: reports: the waiting ones are queued, oldest first. */
static void
tlsrpt_mail_pump(struct tlsrpt *t)
{
	struct tlsrpt_dest *d;

	while (!t->closing && t->nmails < TLSRPT_MAILS_MAX &&
	    (d = TAILQ_FIRST(&t->mail_wait)) != NULL) {
		TAILQ_REMOVE(&t->mail_wait, d, wait_entry);
		tlsrpt_mail_run(d);
	}
}

static void
tlsrpt_on_posted(void *arg, struct http_response *res)
{
	struct tlsrpt_dest *d = arg;
	char why[320];

	d->hq = NULL;
	LIST_REMOVE(d, entry);
	if (res->err != HTTP_OK) {
		snprintf(why, sizeof(why), "%s: %s", http_error_name(res->err), res->error);
		tlsrpt_dest_done(d, RELAY_ETEMP, NULL, why);
	} else if (res->status < 200 || res->status > 299) {
		/* RFC 8460 3: a 2xx is success; anything else is tried again */
		snprintf(why, sizeof(why), "HTTP status %ld", res->status);
		tlsrpt_dest_done(d, RELAY_ETEMP, NULL, why);
	} else
		tlsrpt_dest_done(d, 0, NULL, NULL);
}

/* POST the report to d->to (RFC 8460 3: application/tlsrpt+gzip); 0, or -1
 * with why (d is then still the caller's). */
static int
tlsrpt_send_https(struct tlsrpt_send *s, struct tlsrpt_dest *d, const struct buf *gz,
    struct buf *why)
{
	struct tlsrpt *t = s->t;
	struct http_request rq;

	if (t->http == NULL) {
		buf_puts(why, "no HTTPS client");
		return -1;
	}
	memset(&rq, 0, sizeof(rq));
	rq.method = HTTP_POST;
	rq.url = d->to;
	rq.content_type = "application/tlsrpt+gzip";
	rq.body = gz->data;
	rq.body_len = gz->len;
	rq.timeout_ms = TLSRPT_HTTP_TIMEOUT_MS;
	rq.ca_file = t->conf->deliver.ca_file;
	if ((d->hq = http_start(t->http, &rq, tlsrpt_on_posted, d, why)) == NULL)
		return -1;
	LIST_INSERT_HEAD(&t->posts, d, entry);
	return 0;
}

/* The _smtp._tls answer for a due bucket. */
static void
tlsrpt_on_record(void *arg, struct dns_result *res)
{
	struct tlsrpt_send *s = arg;
	struct tlsrpt *t = s->t;
	struct tlsrpt_bucket *b;
	struct tlsrpt_org org;
	struct buf contact = BUF_INIT, json = BUF_INIT, id = BUF_INIT;
	struct buf herr = BUF_INIT;
	char *rua[TLSRPT_MAX_RUA], kind[TLSRPT_MAX_RUA];
	const char *why = NULL;
	uint64_t now = util_now_ms();
	size_t i;
	int n = 0, k;

	if (s->magic != TLSRPT_MAGIC_SEND)
		fatalx("%s: bad send", __func__);
	s->q = NULL;
	if ((b = tlsrpt_send_bucket(s)) == NULL)
		fatalx("%s: the bucket of a send went away", __func__);
	for (i = 0; i < b->np; i++) {
		s->ok += b->p[i].ok;
		s->bad += b->p[i].failed;
	}
	if (res->err == RELAY_ETEMP) {
		log_event(LOG_WARNING, "tlsrpt_failed", "domain", s->domain, "error",
		    res->reason[0] != '\0' ? res->reason : "_smtp._tls lookup failed", NULL);
		dns_result_free(res);
		s->failed++;
		tlsrpt_send_finish(s, false);
		return;
	}
	if (res->err != 0 || (n = tlsrpt_parse_record(res->txt, res->ntxt, rua, kind, &why)) < 0) {
		log_event(LOG_INFO, "tlsrpt_skipped", "domain", s->domain, "reason",
		    res->err != 0 ? "no _smtp._tls record" : why, NULL);
		dns_result_free(res);
		tlsrpt_known_note(tlsrpt_known_get(t, s->domain), NULL, NULL, 0, now);
		tlsrpt_send_finish(s, true);
		return;
	}
	dns_result_free(res);
	tlsrpt_known_note(tlsrpt_known_get(t, s->domain), rua, kind, n, now);
	if (b->report_id == NULL) {
		buf_printf(&id, "%llu.%s@%s", (unsigned long long)(b->start_ms / 1000), b->domain,
		    t->conf->hostname);
		b->report_id = buf_steal(&id);
		tlsrpt_save_soon(t);
	}
	tlsrpt_org(t, &org, &contact);
	tlsrpt_report_json(b, &org, s->end_ms, &json);
	if (tlsrpt_gzip(json.data, json.len, &s->gz) != 0)
		fatalx("%s: zlib failed", __func__);
	s->pending = 1;         /* held until every destination has started */
	for (k = 0; k < n; k++) {
		struct tlsrpt_dest *d;
		struct buf u = BUF_INIT;

		if (kind[k] == 'm')
			buf_printf(&u, "mailto:%s", rua[k]);
		else
			buf_puts(&u, rua[k]);
		if (tlsrpt_bucket_was_sent(b, buf_cstr(&u))) {
			buf_free(&u);
			continue;
		}
		d = xcalloc(1, sizeof(*d));
		d->s = s;
		d->rua = buf_steal(&u);
		d->to = xstrdup(rua[k]);
		d->kind = kind[k];
		s->pending++;
		buf_reset(&herr);
		if (kind[k] == 'm')
			tlsrpt_mail_start(d);
		else if (tlsrpt_send_https(s, d, &s->gz, &herr) != 0)
			tlsrpt_dest_done(d, RELAY_EIO, NULL, buf_cstr(&herr));
	}
	buf_free(&herr);
	for (k = 0; k < n; k++)
		free(rua[k]);
	buf_free(&contact);
	buf_free(&json);
	if (--s->pending == 0)
		tlsrpt_send_finish(s, false);
}

static void
tlsrpt_send_start(struct tlsrpt *t, struct tlsrpt_bucket *b, uint64_t now)
{
	struct tlsrpt_send *s = xcalloc(1, sizeof(*s));
	struct buf name = BUF_INIT;

	s->magic = TLSRPT_MAGIC_SEND;
	s->t = t;
	s->key = xstrdup(b->key);
	s->domain = xstrdup(b->domain);
	s->end_ms = b->end_ms < now ? b->end_ms : now;
	LIST_INSERT_HEAD(&t->sends, s, entry);
	b->sending = true;
	buf_printf(&name, "_smtp._tls.%s", b->domain);
	s->q = dns_lookup_txt(t->dns, buf_cstr(&name), tlsrpt_on_record, s);
	buf_free(&name);
}

/* The report timer: send every bucket of an earlier slot. */
static void
tlsrpt_on_report_timer(uv_timer_t *h)
{
	struct tlsrpt *t = h->data;
	struct htab_iter it;
	struct htab_node *n;
	struct tlsrpt_bucket *b;
	uint64_t now = util_now_ms(), cur, end;

	tlsrpt_slot(now, t->conf->router.tlsrpt_interval, &cur, &end);
	for (n = htab_first(&t->tb.buckets, &it); n != NULL; n = htab_next(&it)) {
		b = HTAB_ENTRY(n, struct tlsrpt_bucket, node);
		if (b->sending || b->start_ms >= cur)
			continue;
		if (now > b->end_ms + TLSRPT_MAX_AGE_MS) {
			log_event(LOG_WARNING, "tlsrpt_dropped", "domain", b->domain,
			    "report_id", b->report_id != NULL ? b->report_id : "-",
			    "error", "not sent for 3 days", NULL);
			tlsrpt_table_remove(&t->tb, b);
			tlsrpt_save_soon(t);
			continue;
		}
		tlsrpt_send_start(t, b, now);
	}
	tlsrpt_known_sweep(t, now);
	tlsrpt_arm(t, now);
}

/* The next report run: at the end of the current slot. */
static void
tlsrpt_arm(struct tlsrpt *t, uint64_t now)
{
	uint64_t start, end;

	tlsrpt_slot(now, t->conf->router.tlsrpt_interval, &start, &end);
	uv_timer_start(&t->report_timer, tlsrpt_on_report_timer, end - now, 0);
}

/*
 * Life cycle.
 */

struct tlsrpt *
tlsrpt_new(const struct tlsrpt_deps *deps, struct buf *err)
{
	struct tlsrpt *t = xcalloc(1, sizeof(*t));
	struct buf p = BUF_INIT;
	struct htab_iter it;
	struct htab_node *n;
	uint64_t now = util_now_ms(), cur, end;
	bool due = false;

	t->magic = TLSRPT_MAGIC;
	t->loop = deps->loop;
	t->conf = conf_ref(deps->conf);
	t->queue = deps->queue;
	t->dns = deps->dns;
	t->dkim = dkim_keys_ref(deps->dkim);
	tlsrpt_table_init(&t->tb);
	htab_init(&t->known, &htab_ops_nocase);
	LIST_INIT(&t->sends);
	buf_printf(&p, "%s/%s", t->conf->queue_dir, TLSRPT_FILE);
	t->path = buf_steal(&p);
	buf_printf(&p, "%s/%s", t->conf->queue_dir, TLSRPT_FILE_TMP);
	t->tmp_path = buf_steal(&p);
	LIST_INIT(&t->posts);
	TAILQ_INIT(&t->mail_wait);
	if (tlsrpt_load(t, err) != 0 || (t->http = http_new(t->loop, t->dns, err)) == NULL) {
		tlsrpt_free(t);
		return NULL;
	}
	uv_timer_init(t->loop, &t->report_timer);
	uv_timer_init(t->loop, &t->save_timer);
	t->report_timer.data = t;
	t->save_timer.data = t;
	t->open_handles = 2;
	tlsrpt_slot(now, t->conf->router.tlsrpt_interval, &cur, &end);
	for (n = htab_first(&t->tb.buckets, &it); n != NULL; n = htab_next(&it))
		if (HTAB_ENTRY(n, struct tlsrpt_bucket, node)->start_ms < cur)
			due = true;
	if (due)
		uv_timer_start(&t->report_timer, tlsrpt_on_report_timer, TLSRPT_START_DELAY_MS, 0);
	else
		tlsrpt_arm(t, now);
	return t;
}

void
tlsrpt_reload(struct tlsrpt *t, struct conf *conf, struct dkim_keys *dkim)
{
	if (t == NULL)
		return;
	conf_ref(conf);
	conf_unref(t->conf);
	t->conf = conf;
	dkim_keys_ref(dkim);
	dkim_keys_unref(t->dkim);
	t->dkim = dkim;
	if (!t->closing)
		tlsrpt_arm(t, util_now_ms());
}

static void
tlsrpt_on_closed(uv_handle_t *h)
{
	struct tlsrpt *t = h->data;

	t->open_handles--;
	tlsrpt_close_check(t);
}

static void
tlsrpt_on_http_closed(void *arg)
{
	struct tlsrpt *t = arg;

	t->http = NULL;
	t->open_handles--;
	tlsrpt_close_check(t);
}

static void
tlsrpt_close_check(struct tlsrpt *t)
{
	void (*done)(void *);

	if (!t->closing || t->close_done == NULL || t->writing || !LIST_EMPTY(&t->sends))
		return;
	if (t->dirty) {
		tlsrpt_write_start(t);
		if (t->writing)
			return;
	}
	if (t->open_handles > 0)
		return;
	done = t->close_done;
	t->close_done = NULL;
	done(t->close_arg);
}

void
tlsrpt_close(struct tlsrpt *t, void (*done)(void *arg), void *arg)
{
	struct tlsrpt_send *s, *sn;
	struct tlsrpt_dest *d;
	struct htab_iter it;
	struct htab_node *n;
	struct tlsrpt_known *k;

	if (t->magic != TLSRPT_MAGIC || t->closing)
		fatalx("%s: bad tlsrpt or closed twice", __func__);
	t->closing = true;
	t->close_done = done;
	t->close_arg = arg;
	for (n = htab_first(&t->known, &it); n != NULL; n = htab_next(&it)) {
		k = HTAB_ENTRY(n, struct tlsrpt_known, node);
		if (k->q != NULL) {
			dns_cancel(k->q);
			k->q = NULL;
		}
	}
	/* Lookups not answered yet: their buckets stay for the next start.
	 * Destinations in flight (queue commits) finish on their own. */
	for (s = LIST_FIRST(&t->sends); s != NULL; s = sn) {
		sn = LIST_NEXT(s, entry);
		if (s->q != NULL) {
			dns_cancel(s->q);
			s->q = NULL;
			s->failed++;    /* not sent: the bucket stays */
			tlsrpt_send_finish(s, false);
		}
	}
	/* POSTs in flight fail now (not marked sent: the next start sends them) */
	while ((d = LIST_FIRST(&t->posts)) != NULL) {
		LIST_REMOVE(d, entry);
		http_cancel(d->hq);
		d->hq = NULL;
		tlsrpt_dest_done(d, RELAY_ECLOSED, NULL, "relayd is stopping");
	}
	/* mailto: reports waiting for room likewise; those being queued finish on their own */
	while ((d = TAILQ_FIRST(&t->mail_wait)) != NULL) {
		TAILQ_REMOVE(&t->mail_wait, d, wait_entry);
		tlsrpt_dest_done(d, RELAY_ECLOSED, NULL, "relayd is stopping");
	}
	t->open_handles++;
	http_close(t->http, tlsrpt_on_http_closed, t);
	uv_timer_stop(&t->report_timer);
	uv_timer_stop(&t->save_timer);
	t->save_armed = false;
	uv_close((uv_handle_t *)&t->report_timer, tlsrpt_on_closed);
	uv_close((uv_handle_t *)&t->save_timer, tlsrpt_on_closed);
	tlsrpt_close_check(t);
}

void
tlsrpt_free(struct tlsrpt *t)
{
	struct htab_iter it;
	struct htab_node *n;

	if (t == NULL)
		return;
	if (t->writing || !LIST_EMPTY(&t->sends))
		fatalx("%s: freed with work in flight", __func__);
	if (t->http != NULL)            /* never closed: a failed start-up */
		http_close(t->http, NULL, NULL);
	for (n = htab_first(&t->known, &it); n != NULL; n = htab_next(&it)) {
		struct tlsrpt_known *k = HTAB_ENTRY(n, struct tlsrpt_known, node);

		htab_remove(&t->known, &k->node);
		tlsrpt_known_free(k);
	}
	htab_free(&t->known);
	tlsrpt_table_free(&t->tb);
	dkim_keys_unref(t->dkim);
	conf_unref(t->conf);
	free(t->path);
	free(t->tmp_path);
	t->magic = 0;
	free(t);
}

/*
 * relayctl policy.
 */

void
tlsrpt_view(struct tlsrpt *t, const char *domain, uint64_t now_ms, struct tlsrpt_view *out)
{
	uint64_t day = now_ms - now_ms % 86400000ULL;
	struct htab_node *n;
	struct htab_iter it;
	const struct tlsrpt_bucket *b;
	const struct tlsrpt_known *k;
	size_t i;

	memset(out, 0, sizeof(*out));
	if ((n = htab_find(&t->known, domain)) != NULL) {
		k = HTAB_ENTRY(n, struct tlsrpt_known, node);
		if (k->looked_up_ms != 0 && now_ms < k->looked_up_ms + TLSRPT_KNOWN_TTL_MS) {
			out->looked_up = true;
			out->looked_up_ms = k->looked_up_ms;
			out->record = k->rua != NULL;
			out->rua = k->rua;
		}
	}
	for (n = htab_first(&t->tb.buckets, &it); n != NULL; n = htab_next(&it)) {
		b = HTAB_ENTRY(n, struct tlsrpt_bucket, node);
		if (b->start_ms < day || util_strcasecmp(b->domain, domain) != 0)
			continue;
		for (i = 0; i < b->np; i++) {
			out->ok[b->p[i].type] += b->p[i].ok;
			out->failed[b->p[i].type] += b->p[i].failed;
			out->counted = true;
		}
	}
}
