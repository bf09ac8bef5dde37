/*
 * control_proto.h - the control socket protocol, shared by relayd
 * (daemon/control.c) and relayctl (ctl/).  A Unix stream socket; the daemon
 * accepts only root and its own uid (SO_PEERCRED).
 *
 *   request:  argv strings, each terminated by '\0', then one more '\0'
 *             (flags such as "--json" travel as ordinary arguments)
 *   response: "OK\n" or "ERR <code> <message>\n", then the body, then EOF
 *
 * <code> is one of the words below; relayctl exits 0 on OK, 2 on "usage",
 * 1 on any other ERR.
 */
#ifndef RELAY_CONTROL_PROTO_H
#define RELAY_CONTROL_PROTO_H

#define CONTROL_MAX_REQUEST   (64 * 1024)
#define CONTROL_MAX_ARGS      256

#define CONTROL_ERR_NOTFOUND  "notfound"    /* unknown QID, host, route */
#define CONTROL_ERR_USAGE     "usage"       /* request the daemon does not understand */
#define CONTROL_ERR_PERM      "permission"  /* peer not allowed */
#define CONTROL_ERR_FAILED    "failed"      /* the operation failed */
#define CONTROL_ERR_BUSY      "busy"        /* too many control connections open */

#endif
