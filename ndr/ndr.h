/*
 * ndr.h - (internal to router/) delivery status notifications:
 * builds RFC 3464 reports (multipart/report; report-type=delivery-status)
 * for failed, delayed and relayed recipients of a queued message and
 * enqueues them through the normal queue with envelope sender <>.
 */
#ifndef RELAY_ROUTER_NDR_H
#define RELAY_ROUTER_NDR_H

#include "common/stats.h"
#include "queue/queue.h"

enum ndr_kind {
	NDR_FAILED,         /* Action: failed  (permanent failure or administrator bounce) */
	NDR_EXPIRED,        /* Action: failed, Status 4.4.7, after max_queue_age */
	NDR_DELAYED,        /* Action: delayed, with Will-Retry-Until */
	NDR_SUCCESS,        /* Action: relayed (NOTIFY=SUCCESS, next hop without DSN) */
};

/* What the report says about one recipient (from its queue_rcpt and context). */
struct ndr_rcpt {
	int index;                  /* into m->env.rcpts */
	const char *status;         /* "5.1.1", "4.4.7", ... */
	const char *remote_host;    /* Remote-MTA (exchanger name) or NULL */
	const char *diagnostic;     /* the remote reply text (Diagnostic-Code: smtp; ...) or our own words */
	uint64_t last_attempt_ms;   /* 0 = none */
	unsigned attempts;
	uint64_t down_since_ms;     /* destination down since (0 = not down) */
};

struct dkim_keys;

struct ndr_params {
	const char *reporting_mta;  /* conf hostname */
	uint64_t now_ms;
	uint64_t will_retry_until_ms;   /* for NDR_DELAYED: arrival + max_queue_age */
	const char *reason_text;    /* optional extra sentence ("returned by the administrator") */
	/* DKIM: with a key for reporting_mta's domain the report is signed on
	 * the libuv thread pool of loop before its commit (dkim/) */
	struct dkim_keys *dkim;     /* or NULL: unsigned (the default header list) */
	uv_loop_t *loop;
};

/* The report's commit ended: err 0 = it is durable (queued), else RELAY_E*
 * (it could not be queued; nothing of it remains). */
typedef void ndr_done_cb(void *arg, int err, const char *ndr_qid);

/*
 * Build and enqueue one report for recipients rcpts[0..n) of m (which share
 * the kind).  Honours NOTIFY (a recipient whose NOTIFY excludes this kind is
 * left out; if none is left, nothing is sent and 0 is returned with *ndr_qid
 * set to ""), RET (FULL: whole message; else headers only, text/rfc822-headers),
 * ENVID, ORCPT.  Never reports on a message whose envelope sender is <>.
 * On success logs `event=ndr qid= ndr_qid= to= reason=failed|expired|delayed|delivered`
 * with each recipient's status, attempts and down-since, bumps stats->ndr_sent,
 * and copies the report's queue id into ndr_qid (QID_MAX bytes).
 * The report is committed asynchronously through queue_txn_commit; 0 or RELAY_E*.
 * done (may be NULL) is called exactly once, later, on the loop, when that
 * commit ends -- if and only if ndr_send returned 0 with ndr_qid set; never
 * when it returned an error or sent nothing.  Only then is the report safely
 * queued: the caller records that it was sent (QREC_REPORTED) from done.
 */
int ndr_send(struct queue *q, const struct queue_msg *m, enum ndr_kind kind,
    const struct ndr_rcpt *rcpts, size_t n, const struct ndr_params *p,
    struct relay_stats *stats, char *ndr_qid, ndr_done_cb *done, void *done_arg);

/*
 * Commit t, whose bytes are text (a message relayd wrote itself: a report),
 * DKIM-signed first on the thread pool when p->dkim holds a key for
 * p->reporting_mta's domain (p->loop set).  cb(arg, err, qid) fires exactly
 * once, on the loop, as queue_txn_commit's does; a failed signature aborts
 * t (event=dkim_sign_failed) and is RELAY_EIO: never an unsigned copy.
 */
void ndr_commit_signed(struct queue_txn *t, const struct buf *text, const struct ndr_params *p,
    queue_commit_cb *cb, void *arg);

/* Build the report's bytes only (for unit tests): the full RFC 5322 message,
 * the original read from its file at path (NULL: not attached, as when the
 * file cannot be read). */
int ndr_format(const struct queue_msg *m, const char *path, enum ndr_kind kind,
    const struct ndr_rcpt *rcpts, size_t n, const struct ndr_params *p, const char *ndr_qid,
    struct buf *out);

/*
 * Append one header field "name: value" CRLF to out, safe whatever value
 * holds: CR, LF and other controls become spaces, lines are folded before a
 * space to stay within 78 columns where possible and never exceed 998 octets
 * (a longer unbroken run is split).  With NDR_HDR_TEXT (an unstructured
 * value such as Subject:), a value with non-ASCII bytes is written as
 * RFC 2047 encoded-words (utf-8, B).  Used by ndr_format; exported for tests.
 */
#define NDR_HDR_TEXT 0x01
void ndr_header_put(struct buf *out, const char *name, const char *value, unsigned flags);

#endif
