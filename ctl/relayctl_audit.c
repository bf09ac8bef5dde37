/*
 * relayctl_audit.c - `relayctl audit`: reads relayd's log (and rotated
 * copies) without the daemon and reports every NDR.  (Placeholder until the
 * audit work lands.)
 */
#include <stdio.h>

#include "ctl/ctl.h"

int
ctl_audit(const struct conf *conf, int argc, char **argv)
{
	(void)conf;
	(void)argc;
	(void)argv;
	fprintf(stderr, "relayctl: audit is not implemented yet\n");
	return CTL_EXIT_ERROR;
}
