/*
 * deliver_auth.c - client AUTH (RFC 4954) for smarthost routes through the
 * Cyrus SASL client library: the mechanism is negotiated by libsasl from the
 * server's EHLO AUTH list, and the route's username and password reach it
 * through SASL_CB_USER / SASL_CB_AUTHNAME / SASL_CB_PASS callbacks.
 *
 * Owns: one sasl_conn_t per AUTH exchange with its copy of the credentials
 * (wiped when freed), and the pools' reference count on libsasl's client side,
 * which is process-wide like the library itself.
 *
 * libsasl's two sides: submit/ calls sasl_server_init()/sasl_server_done(),
 * we call sasl_client_init()/sasl_client_done().  Since Cyrus SASL 2.1.26
 * each side counts its own users and the state they share is freed only when
 * both are done, so the two modules may come and go in any order.  Nobody
 * calls sasl_done(): it would tear down the server side under submit/ too.
 *
 * Never: log a password or any AUTH data, send credentials outside of TLS
 * (the session checks, deliver_session.c), or use a mechanism that does not
 * authenticate with the route's username and password.
 */
#include "deliver/deliver_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sasl/sasl.h>

#include "common/codec.h"
#include "common/log.h"
#include "common/util.h"

/* libsasl stores every callback as int (*)(void); the detour silences -Wcast-function-type. */
#define DELIVER_SASL_CB(f) ((int (*)(void))(void (*)(void))(f))

/* Pools (struct deliver) holding a reference on libsasl's client side. */
static unsigned deliver_sasl_refs;

/*
 * Mechanisms never tried: they do not authenticate with a username and
 * password (Kerberos tickets, the TLS client certificate, nobody at all),
 * and libsasl would pick some of them before PLAIN when the server offers
 * them.  Prefixes end in '-'.
 */
static const char *const deliver_auth_skip[] = {
	"ANONYMOUS", "EXTERNAL", "GSSAPI", "GSS-SPNEGO", "GS2-", "KERBEROS_V4", "KERBEROS_V5",
};

struct deliver_auth {
	sasl_conn_t *conn;
	sasl_callback_t cbs[5];
	char *user;
	sasl_secret_t *secret;      /* the password as libsasl wants it */
	size_t secret_size;
	char mech[32];
};

static int
deliver_auth_log(void *context, int level, const char *message)
{
	if (level >= SASL_LOG_TRACE)    /* SASL_LOG_PASS may carry passwords */
		return SASL_OK;
	log_event(level <= SASL_LOG_ERR ? LOG_WARNING : LOG_DEBUG, "sasl_client",
	    "message", message, NULL);
	return SASL_OK;
}

static const sasl_callback_t deliver_auth_global_cbs[] = {
	{ SASL_CB_LOG, DELIVER_SASL_CB(deliver_auth_log), NULL },
	{ SASL_CB_LIST_END, NULL, NULL },
};

/* SASL_CB_USER and SASL_CB_AUTHNAME: the route's username for both (as Postfix). */
static int
deliver_auth_get_user(void *context, int id, const char **result, unsigned *len)
{
	struct deliver_auth *a = context;

	if (id != SASL_CB_USER && id != SASL_CB_AUTHNAME)
		return SASL_BADPARAM;
	*result = a->user;
	if (len != NULL)
		*len = (unsigned)strlen(a->user);
	return SASL_OK;
}

static int
deliver_auth_get_pass(sasl_conn_t *conn, void *context, int id, sasl_secret_t **psecret)
{
	struct deliver_auth *a = context;

	if (id != SASL_CB_PASS || psecret == NULL)
		return SASL_BADPARAM;
	*psecret = a->secret;
	return SASL_OK;
}

static int
deliver_auth_client_init(struct deliver *d, char *err, size_t errlen)
{
	int rc;

	if (deliver_sasl_refs == 0 && (rc = sasl_client_init(deliver_auth_global_cbs)) != SASL_OK) {
		snprintf(err, errlen, "SASL client: cannot initialise: %s",
		    sasl_errstring(rc, NULL, NULL));
		log_event(LOG_ERR, "deliver_sasl_init", "error", err, NULL);
		return -1;
	}
	deliver_sasl_refs++;
	d->sasl_client = true;
	return 0;
}

static int
deliver_auth_global_init(struct deliver *d, char *err, size_t errlen)
{
	if (d->sasl_client)
		return 0;
	if (d->sasl_by_caller) {
		/* the caller's thread tried at deliver_start(), and logged why it failed */
		snprintf(err, errlen, "SASL client: cannot initialise");
		return -1;
	}
	return deliver_auth_client_init(d, err, errlen);
}

int
deliver_auth_caller_init(struct deliver *d, char *err, size_t errlen)
{
	if (d->sasl_client)
		return 0;
	return deliver_auth_client_init(d, err, errlen);
}

void
deliver_auth_release(struct deliver *d)
{
	if (!d->sasl_client)
		return;
	d->sasl_client = false;
	if (deliver_sasl_refs == 0)
		fatalx("%s: unbalanced SASL client references", __func__);
	if (--deliver_sasl_refs == 0)
		(void)sasl_client_done();   /* SASL_CONTINUE while the server side lives */
}

struct deliver_auth *
deliver_auth_new(struct deliver *d, const char *server, const char *user, const char *password,
    unsigned ssf, char *err, size_t errlen)
{
	struct deliver_auth *a;
	sasl_security_properties_t props;
	sasl_ssf_t ext = (sasl_ssf_t)ssf;
	size_t plen = password != NULL ? strlen(password) : 0;
	int rc;

	if (deliver_auth_global_init(d, err, errlen) != 0)
		return NULL;
	a = xcalloc(1, sizeof(*a));
	a->user = xstrdup(user);
	a->secret_size = sizeof(sasl_secret_t) + plen;
	a->secret = xcalloc(1, a->secret_size);
	a->secret->len = plen;
	if (plen > 0)
		memcpy(a->secret->data, password, plen);
	a->cbs[0] = (sasl_callback_t){ SASL_CB_USER, DELIVER_SASL_CB(deliver_auth_get_user), a };
	a->cbs[1] = (sasl_callback_t){ SASL_CB_AUTHNAME, DELIVER_SASL_CB(deliver_auth_get_user), a };
	a->cbs[2] = (sasl_callback_t){ SASL_CB_PASS, DELIVER_SASL_CB(deliver_auth_get_pass), a };
	a->cbs[3] = (sasl_callback_t){ SASL_CB_LOG, DELIVER_SASL_CB(deliver_auth_log), NULL };
	a->cbs[4] = (sasl_callback_t){ SASL_CB_LIST_END, NULL, NULL };

	/* flags 0: SMTP has no room for data with the 235 (no SASL_SUCCESS_DATA) */
	rc = sasl_client_new("smtp", server, NULL, NULL, a->cbs, 0, &a->conn);
	if (rc != SASL_OK) {
		snprintf(err, errlen, "SASL client: %s", sasl_errstring(rc, NULL, NULL));
		deliver_auth_free(a);
		return NULL;
	}
	/* Authentication only: TLS is the security layer, and it counts as one. */
	memset(&props, 0, sizeof(props));
	props.security_flags = SASL_SEC_NOANONYMOUS;
	if (sasl_setprop(a->conn, SASL_SEC_PROPS, &props) != SASL_OK ||
	    sasl_setprop(a->conn, SASL_SSF_EXTERNAL, &ext) != SASL_OK) {
		snprintf(err, errlen, "SASL client: %s", sasl_errdetail(a->conn));
		deliver_auth_free(a);
		return NULL;
	}
	return a;
}

static bool
deliver_auth_skipped(const char *mech, size_t n)
{
	for (size_t i = 0; i < RELAY_ARRAY_LEN(deliver_auth_skip); i++) {
		const char *s = deliver_auth_skip[i];
		size_t sl = strlen(s);

		if (s[sl - 1] == '-' ? n >= sl && memcmp(mech, s, sl) == 0 :
		    n == sl && memcmp(mech, s, sl) == 0)
			return true;
	}
	return false;
}

/* Append base64 of n bytes of p and CRLF (libsasl's output may be binary). */
static void
deliver_auth_line(struct buf *out, const char *p, unsigned n)
{
	if (n > 0)
		codec_base64_encode(out, p, n);
	buf_puts(out, "\r\n");
}

int
deliver_auth_start(struct deliver_auth *a, const char *server_mechs, struct buf *out,
    char *err, size_t errlen)
{
	struct buf list = BUF_INIT;
	const char *p = server_mechs, *clientout = NULL, *mech = NULL;
	unsigned clientoutlen = 0;
	int rc;

	/* The server's list (upper-cased by deliver_caps_parse) minus the skipped. */
	while (*p != '\0') {
		size_t n = strcspn(p, " ");

		if (n > 0 && !deliver_auth_skipped(p, n)) {
			if (list.len > 0)
				buf_putc(&list, ' ');
			buf_append(&list, p, n);
		}
		p += n;
		while (*p == ' ')
			p++;
	}
	if (list.len == 0) {
		snprintf(err, errlen, "AUTH configured but the exchanger offers no password "
		    "mechanism (AUTH %s)", server_mechs);
		buf_free(&list);
		return -1;
	}
	rc = sasl_client_start(a->conn, buf_cstr(&list), NULL, &clientout, &clientoutlen, &mech);
	if (rc != SASL_OK && rc != SASL_CONTINUE) {
		snprintf(err, errlen, "AUTH configured but no SASL mechanism could start "
		    "(server offers %s): %s", buf_cstr(&list),
		    rc == SASL_NOMECH ? "none usable" : sasl_errdetail(a->conn));
		buf_free(&list);
		return -1;
	}
	buf_free(&list);
	snprintf(a->mech, sizeof(a->mech), "%s", mech != NULL ? mech : "");
	buf_printf(out, "AUTH %s", a->mech);
	if (clientout != NULL) {
		/* RFC 4954 4: an empty initial response is sent as "=" */
		buf_putc(out, ' ');
		if (clientoutlen == 0)
			buf_putc(out, '=');
	}
	if (clientout != NULL && clientoutlen > 0)
		deliver_auth_line(out, clientout, clientoutlen);
	else
		buf_puts(out, "\r\n");
	return 0;
}

int
deliver_auth_step(struct deliver_auth *a, const char *challenge, size_t len, struct buf *out,
    char *err, size_t errlen)
{
	const char *clientout = NULL;
	unsigned clientoutlen = 0;
	struct buf dec = BUF_INIT;
	int rc;

	if (len > 64 * 1024) {
		snprintf(err, errlen, "AUTH challenge too long (%zu bytes)", len);
		return -1;
	}
	if (codec_base64_decode(challenge, len, &dec) != 0) {
		snprintf(err, errlen, "AUTH challenge is not base64");
		buf_free(&dec);
		return -1;
	}
	rc = sasl_client_step(a->conn, dec.len > 0 ? dec.data : "", (unsigned)dec.len, NULL,
	    &clientout, &clientoutlen);
	if (dec.cap > 0)
		explicit_bzero(dec.data, dec.cap);
	buf_free(&dec);
	if (rc != SASL_OK && rc != SASL_CONTINUE) {
		snprintf(err, errlen, "SASL %s: %s", a->mech, sasl_errdetail(a->conn));
		return -1;
	}
	deliver_auth_line(out, clientout, clientout != NULL ? clientoutlen : 0);
	return 0;
}

const char *
deliver_auth_mech(const struct deliver_auth *a)
{
	return a->mech;
}

void
deliver_auth_free(struct deliver_auth *a)
{
	if (a == NULL)
		return;
	if (a->conn != NULL)
		sasl_dispose(&a->conn);
	explicit_bzero(a->secret, a->secret_size);
	free(a->secret);
	explicit_bzero(a->user, strlen(a->user));
	free(a->user);
	free(a);
}
