/*
 * relay_status.c - the one-line status relayd gives the service manager
 * (systemctl status, through notify/): messages queued and destinations
 * down, read from the router's in-memory state.  Costs one walk over the
 * destinations; notify/ asks at most once a second.
 */
#include "daemon/relay.h"

#include <string.h>

#include "router/router.h"

static void
relay_count_down(void *arg, const struct sched_dest_view *d)
{
	size_t *down = arg;

	if (strcmp(d->state, "down") == 0)
		(*down)++;
}

void
relay_status(void *arg, struct buf *out)
{
	struct relay *r = arg;
	struct sched *s;
	size_t queued, down = 0, loaded, corrupt;

	if (r->magic != RELAY_MAGIC || r->router == NULL) {
		buf_puts(out, "starting");
		return;
	}
	s = router_sched(r->router);
	queued = sched_count(s);
	sched_foreach_dest(s, relay_count_down, &down);
	buf_printf(out, "%zu message%s queued, %zu destination%s down",
	    queued, queued == 1 ? "" : "s", down, down == 1 ? "" : "s");
	if (sched_scanning(s, &loaded, &corrupt))
		buf_printf(out, ", scanning the queue: %zu loaded so far", loaded);
}
