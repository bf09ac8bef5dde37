/*
 * router_dane.h - what the router last learnt from DNS about a recipient
 * domain's exchangers for DANE (RFC 7672), kept for `relayctl policy
 * DOMAIN`: per domain its MX hosts with their preference and DNSSEC status
 * (MX and address answers validated or not), and per MX host name the last
 * TLSA answer for it (secure with its records, bogus, absent, or not looked
 * up because the host is insecure) with when the router got it.
 *
 * Filled by the scheduler from every DNS lookup of a job (routes with fixed
 * hosts are not DNS delivery and are not recorded); an answer may come from
 * the resolver's cache (at most 60 s old).  Entries nothing has refreshed
 * for a day are dropped at the scheduler's sweep, as host health is.
 * Memory only: a restart forgets it.  The table owns every entry; what
 * dane_seen_domain()/dane_seen_host() return is valid until the table next
 * changes (read it at once, on the loop).
 */
#ifndef RELAY_ROUTER_DANE_H
#define RELAY_ROUTER_DANE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/htab.h"
#include "common/tlsa.h"

struct dns_result;

/* The last TLSA answer for an MX host. */
enum dane_tlsa_seen {
	DANE_TLSA_INSECURE = 0,         /* not looked up: the host's MX or address answers
	                                   were not validated (or router.dnssec is off) */
	DANE_TLSA_ABSENT,               /* looked up: no validated TLSA records */
	DANE_TLSA_SECURE,               /* validated TLSA records: tlsa[] */
	DANE_TLSA_BOGUS,                /* the lookup failed (SERVFAIL = bogus, timeout): error */
};

struct dane_host {
	char *name;                     /* the MX host name, as in DNS */
	enum dane_tlsa_seen state;
	struct tlsa_rr *tlsa;           /* DANE_TLSA_SECURE: every record (owned) */
	size_t ntlsa;
	char error[160];                /* DANE_TLSA_BOGUS: why */
	uint64_t looked_up_ms;          /* when the router got this answer */
	struct htab_node node;          /* by name, case ignored */
};

struct dane_mx {
	char *host;
	unsigned pref;
	bool secure;                    /* its MX and address answers had AD */
};

struct dane_domain {
	char *name;                     /* lower case, no trailing dot */
	bool dnssec;                    /* router.dnssec was on for this lookup */
	bool implicit;                  /* no MX records: the domain itself */
	struct dane_mx *mx;             /* by preference, then name */
	size_t nmx;
	uint64_t looked_up_ms;
	struct htab_node node;          /* by name, case ignored */
};

struct dane_seen;

struct dane_seen *dane_seen_new(void);
void dane_seen_free(struct dane_seen *t);
/* Record a successful DNS lookup (res->err == 0) of domain, made at now. */
void dane_seen_record(struct dane_seen *t, const char *domain, const struct dns_result *res,
    bool dnssec, uint64_t now);
/* What is held for domain (case and a trailing dot ignored), or NULL. */
const struct dane_domain *dane_seen_domain(const struct dane_seen *t, const char *domain);
/* The last TLSA answer for an MX host, or NULL. */
const struct dane_host *dane_seen_host(const struct dane_seen *t, const char *host);
/* Drop domains and hosts not refreshed since cutoff_ms. */
void dane_seen_expire(struct dane_seen *t, uint64_t cutoff_ms);
/* "insecure", "absent", "secure", "bogus". */
const char *dane_tlsa_seen_name(enum dane_tlsa_seen s);

#endif
