/*
 * envelope.h - the SMTP envelope every module shares: sender, recipients with
 * their DSN parameters (RFC 3461), and where the message came from.  submit/
 * fills it, queue/ stores it, router/ and ndr/ read it, deliver/ sends it.
 */
#ifndef RELAY_COMMON_ENVELOPE_H
#define RELAY_COMMON_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* DSN (RFC 3461) NOTIFY flags; 0 means "not given" (= FAILURE,DELAY). */
#define ENV_NOTIFY_NEVER    0x01
#define ENV_NOTIFY_SUCCESS  0x02
#define ENV_NOTIFY_FAILURE  0x04
#define ENV_NOTIFY_DELAY    0x08

enum env_ret { ENV_RET_NONE = 0, ENV_RET_HDRS, ENV_RET_FULL };

#define QID_MAX 32               /* a queue id is at most 31 characters [0-9A-Z] */

struct env_rcpt {
	char *addr;                  /* as given in RCPT TO, without <> */
	char *orcpt;                 /* ORCPT value ("rfc822;x@y", xtext-decoded) or NULL */
	unsigned notify;             /* ENV_NOTIFY_* bits */
};

struct envelope {
	char *sender;                /* "" for the null sender <> */
	struct env_rcpt *rcpts;
	size_t nrcpts;
	char *envid;                 /* ENVID (xtext-decoded) or NULL */
	enum env_ret ret;
	bool body_8bit;              /* BODY=8BITMIME */
	bool smtputf8;               /* SMTPUTF8 */
	bool packed;                 /* envelope_copy()'s: the rcpts array and every string are
	                                one allocation, which starts at rcpts (but see shared) */
	bool shared;                 /* envelope_share()'s (packed too): auth_user, client_ip
	                                and client_helo are in an interned block (common/
	                                intern.h), not in the allocation at rcpts */
	char *auth_user;             /* authenticated login; NULL for internal mail (NDRs) */
	char *client_ip;             /* NULL for internal mail */
	char *client_helo;
	uint64_t arrival_ms;         /* wall clock at MAIL FROM */
	uint64_t size;               /* body size in bytes once known */
};

struct intern_table;

void envelope_free(struct envelope *env);          /* frees members, not env itself */
/* A deep copy in one allocation (packed).  Its strings are not to be
 * replaced; envelope_free() frees it. */
void envelope_copy(struct envelope *dst, const struct envelope *src);
/* envelope_copy(), but the strings of the client's session, the same for
 * its messages (auth_user, client_ip, client_helo), go into one interned
 * block, shared through t with every envelope whose three are equal (NULL
 * apart from ""; all three NULL: no block; t NULL: a block of dst's own);
 * the rest, the sender too, is packed.
 * The queue keeps one per queued message.  Its strings are not to be
 * replaced; envelope_free() drops its reference. */
void envelope_share(struct envelope *dst, const struct envelope *src, struct intern_table *t);

_Static_assert(sizeof(void *) != 8 || sizeof(struct envelope) == 80, "struct envelope grew");

#endif
