/*
 * submit_deadline.c - how long a submission client may take.  Deadlines, not
 * idle timers: a timer that every received byte restarts lets a client that
 * drips one byte every few seconds hold its slot for ever.  Each phase has
 * one deadline on the session's io (io_set_deadline()), which reads never
 * move:
 *
 *   PROXY header        proxy_timeout from accept (proxy listeners only)
 *   TLS handshake       tls_timeout from its start (accept on 465, STARTTLS)
 *   each command line   command_timeout from when relayd is ready for it
 *                       (its reply sent, or the server's turn over)
 *   an AUTH exchange    auth_exchange_timeout for the client's turns
 *                       together; while a SASL step runs the clock stops
 *                       (submit.auth_timeout bounds the server's turn)
 *   DATA                data_timeout from the 354, and every octet taken
 *                       earns 1/min_data_rate s, but the time left never
 *                       grows beyond data_timeout (Postfix's
 *                       smtpd_min_data_rate): a client that keeps the rate
 *                       never times out, one that stops is closed within
 *                       data_timeout, one that drips is closed after about
 *                       data_timeout
 *
 * While the server has the turn (commit, directory lookup, a held-back AUTH
 * reply) there is no deadline: the io is paused.  The close at a deadline
 * (421 4.4.2, event=session_timeout) is submit_session.c's IO_EV_TIMEOUT.
 *
 * Owns nothing: it sets the session's io deadline and s->deadline,
 * s->auth_left.  It never changes the session's state.
 */
#include "submit/submit_int.h"

#include "common/util.h"

uint64_t
submit_deadline_credit(uint64_t left_ms, uint64_t nbytes, unsigned rate, uint64_t cap_ms)
{
	uint64_t earned;

	if (rate == 0 || left_ms >= cap_ms)
		return left_ms;
	/* nbytes is at most what one loop iteration read: no overflow */
	earned = nbytes * 1000 / rate;
	return earned >= cap_ms - left_ms ? cap_ms : left_ms + earned;
}

const char *
submit_deadline_phase(enum submit_deadline d)
{
	switch (d) {
	case SUBMIT_DL_TLS: return "tls";
	case SUBMIT_DL_AUTH:
	case SUBMIT_DL_AUTH_CHECK: return "auth";
	case SUBMIT_DL_DATA: return "data";
	case SUBMIT_DL_PROXY: return "proxy";
	case SUBMIT_DL_COMMAND:
	case SUBMIT_DL_NONE:
	default: return "command";
	}
}

/* An io deadline of ms (a time already used up fires at once, not never). */
static void
submit_deadline_arm(struct submit_session *s, uint64_t ms)
{
	io_set_deadline(s->io, ms > 0 ? ms : 1);
}

void
submit_deadline_enter(struct submit_session *s, enum submit_deadline d)
{
	const struct conf *c = s->conf;
	enum submit_deadline old = s->deadline;

	s->deadline = d;
	switch (d) {
	case SUBMIT_DL_TLS:
		submit_deadline_arm(s, c->submit.tls_timeout);
		break;
	case SUBMIT_DL_PROXY:
		submit_deadline_arm(s, c->submit.proxy_timeout);
		break;
	case SUBMIT_DL_COMMAND:
		/* HELO -> MAIL -> RCPT: each line re-arms it (progress) */
		if (old != SUBMIT_DL_COMMAND)
			submit_deadline_arm(s, c->submit.command_timeout);
		break;
	case SUBMIT_DL_AUTH_CHECK:
		/* the AUTH command starts an exchange; a response continues it */
		s->auth_left = old == SUBMIT_DL_AUTH ? io_deadline_left(s->io) :
		    c->submit.auth_exchange_timeout;
		io_set_deadline(s->io, 0);
		break;
	case SUBMIT_DL_AUTH:
		if (old != SUBMIT_DL_AUTH)
			submit_deadline_arm(s, s->auth_left);
		break;
	case SUBMIT_DL_DATA:
		if (old != SUBMIT_DL_DATA)
			submit_deadline_arm(s, c->submit.data_timeout);
		break;
	case SUBMIT_DL_NONE:
	default:
		io_set_deadline(s->io, 0);
		break;
	}
}

void
submit_deadline_progress(struct submit_session *s, size_t nlines, uint64_t ndata)
{
	const struct conf *c = s->conf;

	if (s->io == NULL)
		return;
	if (s->deadline == SUBMIT_DL_COMMAND && nlines > 0)
		submit_deadline_arm(s, c->submit.command_timeout);
	else if (s->deadline == SUBMIT_DL_DATA && ndata > 0)
		submit_deadline_arm(s, submit_deadline_credit(io_deadline_left(s->io), ndata,
		    c->submit.min_data_rate, c->submit.data_timeout));
}
