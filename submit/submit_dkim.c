/*
 * submit_dkim.c - DKIM signing at acceptance: the message is fed to the
 * signer (dkim/) as it streams into the queue, and at the end of DATA the
 * header From's domain picks the keys; the signatures are computed on the
 * libuv thread pool, then stored with the message (queue_txn_prefix()) before
 * it is committed and answered 250.  A message whose From domain has no key
 * is committed unsigned at once; a signing failure is a 451, never an
 * unsigned 250.
 *
 * Owns the session's struct dkim_msg and its reference to the keys until the
 * work takes them; the work owns them (and the txn) until its after-callback,
 * which always runs on the loop.  Never signs on the loop.
 */
#include "submit/submit_int.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

struct submit_dkim_work {
	uv_work_t req;
	struct submit_session *s;
	struct queue_txn *txn;
	struct dkim_keys *keys;
	struct dkim_msg *msg;
	char *domain;
	const char *const *headers; /* the session's conf (it holds a reference) */
	uint64_t now_s;
	unsigned delay_ms;          /* tests: RELAYD_TEST_DKIM_DELAY_MS */
	struct buf out, ids, err;
	int rc;
};

void
submit_dkim_begin(struct submit_session *s)
{
	submit_dkim_reset(s);
	if (dkim_keys_count(s->srv->dkim) == 0)
		return;
	s->dkim_keys = dkim_keys_ref(s->srv->dkim);
	s->dkim_msg = dkim_msg_new();
}

void
submit_dkim_write(struct submit_session *s, const void *p, size_t len)
{
	if (s->dkim_msg != NULL)
		dkim_msg_write(s->dkim_msg, p, len);
}

void
submit_dkim_reset(struct submit_session *s)
{
	dkim_msg_free(s->dkim_msg);
	s->dkim_msg = NULL;
	dkim_keys_unref(s->dkim_keys);
	s->dkim_keys = NULL;
}

static void
submit_dkim_domain_cb(void *arg, const char *addr)
{
	struct buf *dom = arg;
	const char *at;

	if (dom->len == 0 && (at = strrchr(addr, '@')) != NULL && at[1] != '\0')
		buf_puts(dom, at + 1);
}

static void
submit_dkim_work(uv_work_t *req)
{
	struct submit_dkim_work *w = req->data;

	if (w->delay_ms > 0)
		usleep(w->delay_ms * 1000);
	w->rc = dkim_sign(w->keys, w->domain, w->msg, w->headers, w->now_s, &w->out, &w->ids,
	    &w->err);
}

static void
submit_dkim_done(uv_work_t *req, int status)
{
	struct submit_dkim_work *w = req->data;
	struct submit_session *s = w->s;
	struct log_line l;

	if (status != 0 && w->rc == 0) {
		w->rc = -1;
		buf_printf(&w->err, "%s", uv_strerror(status));
	}
	if (w->rc == 0) {
		queue_txn_prefix(w->txn, buf_cstr(&w->out), buf_cstr(&w->ids));
		buf_reset(&s->dkim_ids);
		buf_append(&s->dkim_ids, w->ids.data, w->ids.len);
		submit_session_commit(s, w->txn);
	} else {
		log_begin(&l, LOG_ERR, "dkim_sign_failed");
		log_kv(&l, "session", s->id);
		log_kv(&l, "domain", w->domain);
		log_kv(&l, "error", buf_cstr(&w->err));
		log_end(&l);
		if (s->srv->front != NULL)
			submit_worker_txn_abort(s->srv, w->txn);
		else
			queue_txn_abort(w->txn);
		submit_session_sign_failed(s);
	}
	dkim_msg_free(w->msg);
	dkim_keys_unref(w->keys);
	free(w->domain);
	buf_free(&w->out);
	buf_free(&w->ids);
	buf_free(&w->err);
	free(w);
}

int
submit_dkim_sign(struct submit_session *s, struct queue_txn *txn)
{
	struct submit_dkim_work *w;
	struct buf from = BUF_INIT, dom = BUF_INIT;
	const char *v;

	buf_reset(&s->dkim_ids);
	buf_puts(&s->dkim_ids, "none");
	if (s->dkim_msg == NULL)
		return 0;
	if (dkim_msg_field(s->dkim_msg, "From", &from) == 0)
		(void)submit_parse_header_addrs(from.data, from.len, submit_dkim_domain_cb, &dom);
	buf_free(&from);
	if (dom.len == 0 || !dkim_keys_has(s->dkim_keys, buf_cstr(&dom))) {
		buf_free(&dom);
		submit_dkim_reset(s);
		return 0;
	}
	w = xcalloc(1, sizeof(*w));
	w->req.data = w;
	w->s = s;
	w->txn = txn;
	w->keys = s->dkim_keys;
	w->msg = s->dkim_msg;
	s->dkim_keys = NULL;
	s->dkim_msg = NULL;
	w->domain = buf_steal(&dom);
	w->headers = (const char *const *)s->conf->dkim.headers;
	w->now_s = util_now_ms() / 1000;
#ifdef RELAY_TEST_HOOKS
	if ((v = getenv("RELAYD_TEST_DKIM_DELAY_MS")) != NULL)
		w->delay_ms = (unsigned)strtoul(v, NULL, 10);
#else
	(void)v;
#endif
	if (uv_queue_work(s->srv->loop, &w->req, submit_dkim_work, submit_dkim_done) != 0)
		fatalx("%s: uv_queue_work failed", __func__);
	return 1;
}
