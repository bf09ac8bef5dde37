/*
 * tlsrpt.h - the tlsrpt module's one public face: SMTP TLS reporting
 * (RFC 8460).  The scheduler tells it how each outbound TLS session with a
 * recipient domain's exchanger went (tlsrpt_session); it counts them per
 * policy domain and reporting slot (a UTC day by default), keeps the counts
 * in queue_dir/tlsrpt so that they survive a restart, and once per
 * router.tlsrpt_interval sends every domain that publishes a
 * "_smtp._tls" TXT record (v=TLSRPTv1; rua=...) its gzipped JSON report:
 * to mailto: through relayd's own queue (multipart/report;
 * report-type=tlsrpt, DKIM-signed when dkim/ holds a key for the
 * reporting host's domain), to https: by POST.
 *
 * What is counted: sessions under a policy (DANE today: policy-type tlsa,
 * MTA-STS next) always; sessions without one (no-policy-found) only for a
 * domain whose _smtp._tls record the module has seen (it looks the record
 * up, once an hour at most, the first time such a domain comes by; counts
 * made while the answer is out are dropped if there is no record).  The
 * lookup is made for policy domains too, for relayctl policy.
 * Reports go only to domains that publish a valid record when the report
 * is due; the others' counts are dropped then.
 *
 * Everything runs on the loop: DNS through dns/, the file written on the
 * libuv thread pool (write, fsync, rename, fsync of queue_dir), at most once a second.
 *
 * Ownership: the module keeps references to the conf and DKIM keys it is
 * given and borrows the queue and resolver, which must outlive
 * tlsrpt_close()'s callback.
 */
#ifndef RELAY_TLSRPT_H
#define RELAY_TLSRPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "conf/conf.h"

struct tlsrpt;
struct queue;
struct dns_resolver;
struct dkim_keys;

/* RFC 8460 4.4 "policy-type". */
enum tlsrpt_ptype {
	TLSRPT_NO_POLICY = 0,           /* "no-policy-found" */
	TLSRPT_TLSA,                    /* "tlsa": DANE */
	TLSRPT_STS,                     /* "sts": MTA-STS */
};

/* One outbound session (or a refusal before connecting), as the scheduler saw it. */
struct tlsrpt_session {
	const char *domain;             /* the policy domain: the recipient domain */
	enum tlsrpt_ptype type;
	const char *const *strings;     /* "policy-string": the TLSA records in presentation
	                                   form, or the MTA-STS policy's lines */
	size_t nstrings;
	const char *mx_host;            /* "mx-host": the exchanger (tlsa) or pattern (sts), or NULL */
	const char *result;             /* NULL: a successful TLS session; else the RFC 8460
	                                   result-type of the failure */
	const char *sending_ip;         /* NULL where unknown */
	const char *receiving_mx;       /* the exchanger's name, or NULL */
	const char *receiving_ip;       /* or NULL (refused before connecting) */
	const char *info;               /* "failure-reason-code" (free text), or NULL */
};

struct tlsrpt_deps {
	uv_loop_t *loop;
	struct conf *conf;              /* referenced */
	struct queue *queue;            /* reports to mailto: are queued here */
	struct dns_resolver *dns;       /* _smtp._tls lookups */
	struct dkim_keys *dkim;         /* referenced; NULL: reports are not signed */
};

/*
 * Create the module and load queue_dir/tlsrpt (synchronously: at start-up,
 * before the loop runs).  A file that cannot be parsed is renamed to
 * tlsrpt.corrupt and logged (event=tlsrpt_corrupt); counting starts afresh.
 * NULL with a message in err only when the file cannot be read at all.
 */
struct tlsrpt *tlsrpt_new(const struct tlsrpt_deps *deps, struct buf *err);
/* A new configuration and key set (SIGHUP): the interval takes effect at the next report. */
void tlsrpt_reload(struct tlsrpt *t, struct conf *conf, struct dkim_keys *dkim);
/* Count one session at now_ms (wall clock).  Copies what it keeps. */
void tlsrpt_session(struct tlsrpt *t, const struct tlsrpt_session *ev, uint64_t now_ms);
/*
 * Stop: no more reports, lookups cancelled; the counts are written; done(arg)
 * once every write, lookup and report in flight has ended.  Sessions told
 * after this are ignored.
 */
void tlsrpt_close(struct tlsrpt *t, void (*done)(void *arg), void *arg);
/* After tlsrpt_close's done (or when it never ran: at a failed start-up). */
void tlsrpt_free(struct tlsrpt *t);

/* What the module holds for a domain (relayctl policy). */
struct tlsrpt_view {
	bool looked_up;                 /* _smtp._tls was looked up within the last hour */
	bool record;                    /* ... and had a usable record */
	uint64_t looked_up_ms;
	const char *rua;                /* record: its rua URIs, ","-separated (valid until the
	                                   next call into the module) */
	uint64_t ok[3], failed[3];      /* today's (UTC) sessions by enum tlsrpt_ptype */
	bool counted;                   /* any session counted today */
};
void tlsrpt_view(struct tlsrpt *t, const char *domain, uint64_t now_ms, struct tlsrpt_view *out);

/* ------------------------------------------------------------------ */
/* Pure parts, exported for the unit tests. */

/* The reporting slot of now: [start, end), the intersection of the interval's
 * slot (multiples of interval since the epoch) and the UTC day. */
void tlsrpt_slot(uint64_t now_ms, uint64_t interval_ms, uint64_t *start, uint64_t *end);

#define TLSRPT_MAX_RUA 8

/*
 * Reports to a mailto: rua being queued at once: each is a queue
 * transaction that holds its file until its commit.  The others wait, in
 * the order their reports were built, and start as these end
 * (daemon/DESCRIPTORS.md counts them).
 */
#define TLSRPT_MAILS_MAX 16
/*
 * Parse the TXT records of _smtp._tls.DOMAIN (RFC 8460 3): the records that
 * begin with "v=TLSRPTv1" count; exactly one must; its rua= is a comma-
 * separated list of mailto: and https: URIs (others are ignored; one given
 * twice counts once).  Fills rua[] with malloc'd strings (mailto: addresses
 * %-decoded, without "mailto:")
 * and returns how many, or -1 with the reason in why when the domain has no
 * usable record.  kind[i] is 'm' (mailto) or 'h' (https).
 */
int tlsrpt_parse_record(char *const *txt, size_t ntxt, char *rua[TLSRPT_MAX_RUA],
    char kind[TLSRPT_MAX_RUA], const char **why);

/* "tlsa", "sts", "no-policy-found". */
const char *tlsrpt_ptype_name(enum tlsrpt_ptype t);

#endif
