/*
 * mtasts.h - the mtasts module's one public face: MTA-STS (RFC 8461), the
 * policy a recipient domain publishes for its MX hosts, found, fetched,
 * cached and kept across restarts.
 *
 * What mtasts_get(DOMAIN) does:
 *   - the "_mta-sts.DOMAIN" TXT record (dns/): exactly one record starting
 *     "v=STSv1" with an id= (RFC 8461 3.1), else DOMAIN has no policy;
 *   - a cached, unexpired policy with that id is used as it is; the TXT
 *     record is looked at again at most once a minute per domain
 *     (MTASTS_RECHECK_MS; mtasts_recheck() forgets those times);
 *   - otherwise the policy is fetched from
 *     https://mta-sts.DOMAIN/.well-known/mta-sts.txt (http/: the name by
 *     relayd's resolver, the certificate against deliver.ca_file or the
 *     system store, at most MTASTS_MAX_POLICY bytes, router.mta_sts_timeout,
 *     no redirects, status 200 and Content-Type text/plain; RFC 8461 3.3)
 *     and parsed (mtasts_parse_policy); a good one replaces the cached one
 *     and the cache file is rewritten;
 *   - a failed fetch (no answer, not 200, not text/plain, invalid policy)
 *     keeps an unexpired cached policy (RFC 8461 5.1); with none, DOMAIN is
 *     treated as having no policy (RFC 8461 3.3: "senders MUST continue with
 *     delivery as though the domain has not implemented MTA-STS"), and the
 *     answer carries the RFC 8460 result type of the failure
 *     (sts-policy-fetch-error, sts-webpki-invalid, sts-policy-invalid) for
 *     reporting.  A failure is never permanent: the next check tries again;
 *   - lookups of one domain while one is in flight wait for it.
 *
 * The cache: queue_dir/mta-sts, one line per domain, read at start-up
 * (mtasts_new) and rewritten whole (write, fsync, rename) on the libuv
 * thread pool after a policy changes; expired policies are dropped then.
 *
 * Ownership: an answer's policy is borrowed for the callback's duration
 * (copy it with mtasts_policy_copy).  Callbacks fire exactly once, from the
 * loop, never from inside mtasts_get(), never after mtasts_cancel() or
 * mtasts_close().  The module borrows the resolver and the HTTPS client:
 * close it before them.
 */
#ifndef RELAY_MTASTS_H
#define RELAY_MTASTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "conf/conf.h"

struct dns_resolver;
struct http_client;
struct mtasts;
struct mtasts_query;

#define MTASTS_MAX_POLICY     (64 * 1024)     /* bytes of policy body (RFC 8461 3.3) */
#define MTASTS_MAX_AGE        31557600u       /* seconds: a year (RFC 8461 3.2) */
#define MTASTS_MAX_MX         64              /* mx: patterns kept per policy */
#define MTASTS_ID_MAX         32              /* id= is 1*32 alphanumerics */
#define MTASTS_RECHECK_MS     60000           /* the TXT id looked at again after this */
#define MTASTS_KEEP_MS        (24 * 3600 * 1000ULL) /* a domain unchecked this long is dropped */

enum mtasts_mode {
	MTASTS_MODE_NONE = 0,
	MTASTS_MODE_TESTING,
	MTASTS_MODE_ENFORCE,
};

struct mtasts_policy {
	enum mtasts_mode mode;
	char id[MTASTS_ID_MAX + 1];     /* the TXT id it was fetched under */
	uint32_t max_age;               /* seconds, <= MTASTS_MAX_AGE */
	char **mx;                      /* patterns: "mx1.example.net", "*.example.net" */
	size_t nmx;
	uint64_t fetched_ms;            /* wall clock */
	uint64_t expires_ms;            /* fetched_ms + max_age s */
};

/* What mtasts_get found out. */
struct mtasts_answer {
	const struct mtasts_policy *policy; /* the policy to apply, or NULL: none */
	bool cached;                    /* policy is the cached one (fresh or kept after a failure) */
	const char *failure;            /* RFC 8460 result type of a failed discovery or fetch
	                                   (even when a cached policy is kept), else NULL */
	char reason[256];               /* failure: why */
};

typedef void mtasts_cb(void *arg, const struct mtasts_answer *a);

/* ---- pure (unit-tested from tables) ---- */

/*
 * A "_mta-sts" TXT record: "v=STSv1; id=ID[; ext=...]" with optional
 * white space around fields; v= must come first; id 1-32 alphanumerics.
 * 0 with id filled, or RELAY_EINVAL.
 */
int mtasts_parse_txt(const char *txt, char id[MTASTS_ID_MAX + 1]);
/*
 * Whether a TXT record at _mta-sts counts as an STS record at all (RFC 8461
 * 3.1: records that do not begin with "v=STSv1;" are discarded, and exactly
 * one may be left).  Blanks before the ';' are allowed, as the ABNF's
 * sts-field-delim allows them.
 */
bool mtasts_txt_is_sts(const char *txt);
/*
 * A policy body (RFC 8461 3.2): "key: value" lines ending in LF or CRLF;
 * version STSv1, mode, max_age and, unless mode is none, at least one mx
 * are required; unknown keys are ignored; max_age above a year is cut to
 * a year.  0 with out filled (release it), or RELAY_EINVAL with err.
 */
int mtasts_parse_policy(const char *text, size_t len, struct mtasts_policy *out, struct buf *err);
/*
 * Whether MX host name host matches one of p's mx patterns (RFC 8461 4.1):
 * case-insensitive, trailing dots ignored; "*.example.net" matches exactly
 * one more left-most label ("mx.example.net", not "example.net" nor
 * "a.b.example.net").
 */
bool mtasts_mx_match(const struct mtasts_policy *p, const char *host);
/* Deep copy into dst (release it); mtasts_policy_release frees and zeroes. */
void mtasts_policy_copy(struct mtasts_policy *dst, const struct mtasts_policy *src);
void mtasts_policy_release(struct mtasts_policy *p);
/* "enforce", "testing", "none". */
const char *mtasts_mode_name(enum mtasts_mode m);

/* ---- the module ---- */

/*
 * Create the module (at start-up, before the loop runs): loads
 * queue_dir/mta-sts (an unreadable or malformed file is logged,
 * event=mtasts_cache_error, and ignored: policies are fetched again).
 * dns and http are borrowed.  Never NULL.
 */
struct mtasts *mtasts_new(uv_loop_t *loop, const struct conf *conf, struct dns_resolver *dns,
    struct http_client *http);
/* A new configuration (SIGHUP): the fetch timeout and the CA file. */
void mtasts_reload(struct mtasts *m, const struct conf *conf);
/*
 * The policy for domain (lower case, no trailing dot).  Returns 0 with *a
 * filled when the cache answers at once (a->policy borrowed until the next
 * mtasts_* call), or 1 with *q set: cb(arg, answer) fires later.
 */
int mtasts_get(struct mtasts *m, const char *domain, struct mtasts_answer *a, mtasts_cb *cb,
    void *arg, struct mtasts_query **q);
/* Forget a pending query: its callback never fires. */
void mtasts_cancel(struct mtasts_query *q);
/* Look at every domain's TXT record again on next use (relayctl queue flush). */
void mtasts_recheck(struct mtasts *m);
/*
 * Drop the domains with nothing in flight, no policy in force and no check
 * for MTASTS_KEEP_MS (the scheduler's sweep), so that the table does not
 * grow with every recipient domain ever seen.
 */
void mtasts_sweep(struct mtasts *m);
/* What the module holds for a domain (relayctl policy). */
struct mtasts_held {
	const struct mtasts_policy *policy; /* the cached policy (maybe expired), or NULL */
	uint64_t checked_ms;            /* when its last check ended; 0: none since start-up */
	const char *failure;            /* that check's failure (RFC 8460 type), or NULL */
	const char *reason;             /* why it failed, or why there is no policy; "" */
};
/* false when nothing is held for domain; out is valid until the next mtasts_* call. */
bool mtasts_held(const struct mtasts *m, const char *domain, struct mtasts_held *out);
/* Inject the wall clock in ms (tests); NULL restores the default. */
void mtasts_set_clock(struct mtasts *m, uint64_t (*now)(void *arg), void *arg);
/*
 * Cancel every query (no callback fires), wait for a cache write in
 * flight, free the module; done(arg) from the loop or at once (may be NULL).
 */
void mtasts_close(struct mtasts *m, void (*done)(void *arg), void *arg);

#endif
