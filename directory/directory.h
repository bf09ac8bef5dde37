/*
 * directory.h - the directory module's one public face: which addresses a
 * login owns according to an LDAP directory (OpenLDAP, Active Directory),
 * looked up without ever blocking the loop (submit.senders_ldap).
 *
 * The prefix is directory_, not ldap_: libldap owns every ldap_ and LDAP_
 * name, and ours name the capability (the organisation's directory), not the
 * protocol.
 *
 * Lookups run one at a time on the libuv thread pool with one pooled LDAP
 * handle (reconnected after any failure), so a directory that hangs holds one
 * pool thread for at most submit.senders_ldap.timeout and never the loop or
 * the queue's pool work.  Answers (positive and negative) are cached for
 * cache_ttl; an outage is never cached.  The module logs ldap_unavailable
 * once when the directory stops answering and ldap_restored when it answers
 * again.
 *
 * Ownership: struct directory owns its settings (and the bind password), the
 * cache, the waiting requests and the LDAP handle.  A caller's callback fires
 * exactly once per directory_lookup(), always from the loop thread, never
 * from inside directory_lookup() itself; a caller tries directory_cached()
 * first.
 */
#ifndef RELAY_DIRECTORY_H
#define RELAY_DIRECTORY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "common/buf.h"
#include "conf/conf.h"

/* Descriptors with senders_ldap: the one handle's connection (one lookup at
 * a time; a failed one is dropped before the next connects), and the C
 * library's resolver socket or hosts file while libldap connects (it looks
 * the URI's host up with getaddrinfo). */
#define DIRECTORY_FD_NEED 2

struct directory;

/* The addresses one login owns: plain "local@domain" or "@domain" values. */
struct directory_owned {
	atomic_uint refs;               /* taken and dropped on any thread (submit.workers) */
	char **addrs;
	size_t n;
};

enum directory_status {
	DIRECTORY_OK = 0,               /* owned is the answer (n may be 0) */
	DIRECTORY_UNAVAILABLE,          /* unreachable, timed out, or refused our bind */
};

/* owned is NULL unless status is DIRECTORY_OK; take a reference to keep it. */
typedef void directory_cb(void *arg, enum directory_status status,
    struct directory_owned *owned);

/*
 * A directory for c->submit.senders_ldap (call only when it is configured):
 * reads bind_password_file now (before the privilege drop).  0, or -1 with
 * err filled.
 */
int directory_new(uv_loop_t *loop, const struct conf *c, struct directory **out,
    struct buf *err);
/*
 * New settings (SIGHUP): re-read bind_password_file, use the new settings for
 * the next lookup, clear the cache.  0, or -1 with err filled and the old
 * settings kept.
 */
int directory_reload(struct directory *d, const struct conf *c, struct buf *err);
/* The cached answer for login (borrowed: ref it to keep it), or NULL. */
struct directory_owned *directory_cached(struct directory *d, const char *login);
/* Ask the directory about login; cb(arg, ...) later, on the loop, exactly once. */
void directory_lookup(struct directory *d, const char *login, directory_cb *cb, void *arg);
/*
 * The same, but never answered from the cache: is the directory answering
 * now?  (AUTH asks when saslauthd said no, to tell an outage from a wrong
 * password.)  The answer refreshes the cache like any other.
 */
void directory_lookup_fresh(struct directory *d, const char *login, directory_cb *cb,
    void *arg);
/* Answer every waiting request DIRECTORY_UNAVAILABLE now (shutdown). */
void directory_cancel_all(struct directory *d);
/* Free (once a lookup out on the thread pool has come back); no request may wait. */
void directory_free(struct directory *d);

struct directory_owned *directory_owned_ref(struct directory_owned *o);
void directory_owned_unref(struct directory_owned *o);
/* Does o grant addr ("local@domain")?  Domains case-insensitive, local parts exact. */
bool directory_owns(const struct directory_owned *o, const char *addr);

/* ---- pure parts (directory_filter.c), for the unit tests ---- */

/* Append s to out escaped for an LDAP filter value (RFC 4515 3: * ( ) \ NUL). */
void directory_escape(struct buf *out, const char *s);
/*
 * Expand a filter template: %u the login, %d its domain (after the last '@',
 * else ""), %% a '%', each value escaped.  0, or -1 for any other %x.
 */
int directory_filter(struct buf *out, const char *tmpl, const char *login);
/*
 * One attribute value as an owned address, into out: blanks trimmed, a
 * leading "smtp:" (any case, Active Directory's proxyAddresses) stripped.
 * 0, or -1 when it is not "local@domain" or "@domain" (e.g. "X500:...").
 */
int directory_value(struct buf *out, const char *v, size_t len);

#endif
