/*
 * submit.h - the submit module's one public face: the SMTP submission server
 * (RFC 6409) on submit.listen (STARTTLS, 587) and submit.listen_tls (implicit
 * TLS, 465), with Cyrus SASL AUTH over TLS only, the senders map, and
 * streaming of DATA into the router's queue.
 */
#ifndef RELAY_SUBMIT_H
#define RELAY_SUBMIT_H

#include <uv.h>

#include "common/buf.h"
#include "common/stats.h"
#include "conf/conf.h"
#include "router/router.h"

struct submit;

/*
 * Bind every listener, load the TLS certificate, initialise SASL and read the
 * senders map.  Returns 0, or -1 with a message in err (nothing left bound).
 */
int submit_new(uv_loop_t *loop, struct conf *conf, struct router *router,
    struct relay_stats *stats, struct submit **out, struct buf *err);
/*
 * A new configuration snapshot (SIGHUP): re-read the certificate, key and the
 * senders map; new sessions use the new snapshot, sessions in progress keep
 * theirs.  Listener addresses are not changed at run time (logged if they
 * differ).  Returns 0, or -1 with err filled and the old state kept.
 */
int submit_reload(struct submit *s, struct conf *conf, struct buf *err);
/* Stop listening, close sessions (421 to each), done(arg) once every handle is closed. */
void submit_shutdown(struct submit *s, void (*done)(void *arg), void *arg);
void submit_free(struct submit *s);

#endif
