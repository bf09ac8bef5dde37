/*
 * tlsrpt_int.h - (internal to tlsrpt/) the counts table and the report
 * builder shared by tlsrpt.c (life cycle, timers, sending),
 * tlsrpt_count.c (the table and its file) and tlsrpt_report.c (the RFC
 * 8460 JSON, the gzip, the mail).
 *
 * Ownership: a struct tlsrpt_table owns its buckets; a bucket owns its
 * policies, their failure details and every string in them.
 */
#ifndef RELAY_TLSRPT_INT_H
#define RELAY_TLSRPT_INT_H

#include "common/buf.h"
#include "common/htab.h"
#include "tlsrpt/tlsrpt.h"

struct tlsrpt_detail {                  /* one "failure-details" entry */
	char *result;                   /* result-type */
	char *sending_ip;               /* these four: NULL when unknown */
	char *mx;
	char *ip;
	char *info;
	uint64_t count;
};

struct tlsrpt_policy {                  /* one "policies" entry */
	enum tlsrpt_ptype type;
	char *strings;                  /* policy-string lines, '\n'-separated, or NULL */
	char *mx;                       /* mx-host, or NULL */
	uint64_t ok, failed;
	struct tlsrpt_detail *d;
	size_t nd;
};

struct tlsrpt_bucket {                  /* one domain's counts for one slot */
	struct htab_node node;          /* in the table, by key */
	char *key;                      /* "<start_ms> <domain>" */
	char *domain;
	uint64_t start_ms, end_ms;      /* the slot */
	char *report_id;                /* given at the first send, kept for its retries */
	char **sent;                    /* the rua URIs that took the report */
	size_t nsent;
	struct tlsrpt_policy *p;
	size_t np;
	bool sending;                   /* a send is in flight (tlsrpt.c) */
};

struct tlsrpt_table {
	struct htab buckets;            /* struct tlsrpt_bucket by key */
};

void tlsrpt_table_init(struct tlsrpt_table *tb);
void tlsrpt_table_free(struct tlsrpt_table *tb);
/* Count ev into the bucket of (ev->domain, slot start..end). */
void tlsrpt_table_add(struct tlsrpt_table *tb, const struct tlsrpt_session *ev, uint64_t start,
    uint64_t end);
struct tlsrpt_bucket *tlsrpt_table_find(struct tlsrpt_table *tb, const char *domain, uint64_t start);
void tlsrpt_table_remove(struct tlsrpt_table *tb, struct tlsrpt_bucket *b);
/* Drop domain's no-policy-found rows (a domain without a record); empty buckets go. */
void tlsrpt_table_drop_nopolicy(struct tlsrpt_table *tb, const char *domain);
/* The file's text, and back (0, or -1 with the line number in why). */
void tlsrpt_table_save(const struct tlsrpt_table *tb, struct buf *out);
int tlsrpt_table_load(struct tlsrpt_table *tb, char *text, struct buf *why);
bool tlsrpt_bucket_was_sent(const struct tlsrpt_bucket *b, const char *rua);
void tlsrpt_bucket_mark_sent(struct tlsrpt_bucket *b, const char *rua);

/* What a report says about its sender. */
struct tlsrpt_org {
	const char *organization;       /* organization-name */
	const char *contact;            /* contact-info */
	const char *hostname;           /* the reporting MTA: TLS-Report-Submitter */
};

/* The RFC 8460 4.4 JSON report of bucket b (b->report_id set), ending at end_ms. */
void tlsrpt_report_json(const struct tlsrpt_bucket *b, const struct tlsrpt_org *org,
    uint64_t end_ms, struct buf *out);
/* gzip (RFC 1952) of in into out: 0, or -1 (zlib failed). */
int tlsrpt_gzip(const void *in, size_t len, struct buf *out);
/*
 * The RFC 8460 5.3 mail: multipart/report; report-type=tlsrpt, a text part
 * and the report as application/tlsrpt+gzip (base64), From: from, To: to.
 */
void tlsrpt_report_mail(const struct tlsrpt_bucket *b, const struct tlsrpt_org *org,
    const char *from, const char *to, uint64_t now_ms, uint64_t end_ms,
    const struct buf *gz, struct buf *out);

#endif
