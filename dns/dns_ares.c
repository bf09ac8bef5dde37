/*
 * dns_ares.c - c-ares on the one libuv loop, for the resolver.  A
 * channel (struct dns_chan) is one ares_channel with the resolver's servers
 * and timing: its sockets are watched by uv_poll_t handles
 * (ARES_OPT_SOCK_STATE_CB), its timeouts by one uv_timer_t, and
 * ares_process_fd() does the work.  c-ares' timer is rearmed once per loop
 * iteration (the resolver's uv_prepare_t, before the loop blocks), never per
 * request: ares_timeout() walks every request in flight.  A reload or a new
 * timeout makes a new channel current; the old one is retired and drains
 * its requests, then the kick (dns.c) destroys it.
 *
 * Owns: the channels (the current one and retired ones still draining),
 * their poll and timer handles; a channel is freed once it is destroyed and
 * its last handle is closed.
 *
 * Must never: block the loop (no getaddrinfo, no /etc/hosts), call
 * ares_destroy() from inside a c-ares callback, or look at what the
 * requests ask (dns_resolve.c does).
 */
#include "dns/dns_int.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/log.h"
#include "common/util.h"

/* One socket c-ares asked us to watch. */
struct dns_poll {
	uv_poll_t h;
	struct dns_chan *c;
	ares_socket_t fd;
	LIST_ENTRY(dns_poll) entry;
};

static void
dns_chan_timeout(uv_timer_t *t)
{
	struct dns_chan *c = t->data;

	if (c->magic != DNS_MAGIC_CHAN)
		fatalx("%s: bad channel", __func__);
	ares_process_fd(c->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	dns_chan_touch(c);
}

/*
 * Run the channel's timer for c-ares' next timeout, if it has queries.
 * ares_timeout() walks every request in flight: called once per loop
 * iteration at most (dns_prepare_cb), never per request.
 */
static void
dns_chan_rearm(struct dns_chan *c)
{
	struct timeval tv, *tvp;
	uint64_t ms;

	if (c->destroyed)
		return;
	if ((tvp = ares_timeout(c->ch, NULL, &tv)) == NULL) {
		uv_timer_stop(&c->timer);
		return;
	}
	ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
	uv_timer_start(&c->timer, dns_chan_timeout, ms, 0);
}

/* Before the loop blocks: rearm the timers of the channels whose requests changed. */
static void
dns_prepare_cb(uv_prepare_t *h)
{
	struct dns_resolver *r = h->data;
	struct dns_chan *c;

	if (r->magic != DNS_MAGIC_RESOLVER)
		fatalx("%s: bad resolver", __func__);
	uv_prepare_stop(h);
	TAILQ_FOREACH(c, &r->chans, entry) {
		if (c->rearm) {
			c->rearm = false;
			dns_chan_rearm(c);
		}
	}
}

/* The channel's requests changed (sent, answered, timed out): rearm it soon. */
void
dns_chan_touch(struct dns_chan *c)
{
	c->rearm = true;
	if (!c->r->closing)
		uv_prepare_start(&c->r->prepare, dns_prepare_cb);
}

static void
dns_chan_free_if_done(struct dns_chan *c)
{
	struct dns_resolver *r = c->r;

	if (!c->destroyed || c->nhandles > 0)
		return;
	TAILQ_REMOVE(&r->chans, c, entry);
	c->magic = 0;
	free(c);
	dns_resolver_maybe_free(r);
}

static void
dns_poll_closed(uv_handle_t *h)
{
	struct dns_poll *p = h->data;
	struct dns_chan *c = p->c;

	free(p);
	c->nhandles--;
	c->r->nhandles--;
	dns_chan_free_if_done(c);
}

static void
dns_chan_timer_closed(uv_handle_t *h)
{
	struct dns_chan *c = h->data;

	c->nhandles--;
	c->r->nhandles--;
	dns_chan_free_if_done(c);
}

static void
dns_poll_cb(uv_poll_t *h, int status, int events)
{
	struct dns_poll *p = h->data;
	struct dns_chan *c = p->c;
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

	if (c->magic != DNS_MAGIC_CHAN)
		fatalx("%s: bad channel", __func__);
	if (status < 0) {
		/* let c-ares find the error on the socket */
		rfd = wfd = p->fd;
	} else {
		if (events & UV_READABLE)
			rfd = p->fd;
		if (events & UV_WRITABLE)
			wfd = p->fd;
	}
	/* p may be closed by the socket state callback from here on */
	ares_process_fd(c->ch, rfd, wfd);
	dns_chan_touch(c);
}

/* c-ares tells which sockets to watch, and for what. */
static void
dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_chan *c = data;
	struct dns_resolver *r = c->r;
	struct dns_poll *p;
	int rc;

	LIST_FOREACH(p, &c->polls, entry)
		if (p->fd == fd)
			break;
	if (readable || writable) {
		if (p == NULL) {
			p = xcalloc(1, sizeof(*p));
			p->c = c;
			p->fd = fd;
			if ((rc = uv_poll_init_socket(r->loop, &p->h, fd)) != 0) {
				log_event(LOG_WARNING, "dns_error", "reason", uv_strerror(rc), NULL);
				free(p);
				return;
			}
			p->h.data = p;
			LIST_INSERT_HEAD(&c->polls, p, entry);
			c->nhandles++;
			r->nhandles++;
		}
		uv_poll_start(&p->h, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0),
		    dns_poll_cb);
	} else if (p != NULL) {
		LIST_REMOVE(p, entry);
		uv_poll_stop(&p->h);
		uv_close((uv_handle_t *)&p->h, dns_poll_closed);
	}
}

/* The servers c-ares has on ch (a channel it would leave without any: 0). */
static size_t
dns_ares_count(ares_channel ch)
{
	struct ares_addr_port_node *list = NULL, *s;
	size_t n = 0;

	if (ares_get_servers_ports(ch, &list) != ARES_SUCCESS)
		return 0;
	for (s = list; s != NULL; s = s->next)
		n++;
	ares_free_data(list);
	return n;
}

/* ares_init_options()'s resolv.conf: the system's, or in a test-hooks
 * build RELAYD_TEST_RESOLV_CONF (a file of the test's own). */
static void
dns_ares_resolvconf(struct ares_options *o, int *mask)
{
#ifdef RELAY_TEST_HOOKS
	char *path = getenv("RELAYD_TEST_RESOLV_CONF");

	if (path != NULL && *path != '\0') {
		o->resolvconf_path = path;
		*mask |= ARES_OPT_RESOLVCONF;
	}
#else
	(void)o;
	(void)mask;
#endif
}

size_t
dns_ares_system_servers(void)
{
	struct ares_options o;
	ares_channel ch;
	size_t n;
	int mask = ARES_OPT_FLAGS;

	if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
		return 0;
	memset(&o, 0, sizeof(o));
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	dns_ares_resolvconf(&o, &mask);
	if (ares_init_options(&ch, &o, mask) != ARES_SUCCESS) {
		ares_library_cleanup();
		return 0;
	}
	n = dns_ares_count(ch);
	ares_destroy(ch);
	ares_library_cleanup();
	return n;
}

static struct dns_chan *
dns_chan_new(struct dns_resolver *r, struct buf *err)
{
	struct ares_options o;
	struct dns_chan *c;
	size_t i;
	int rc, mask;

	c = xcalloc(1, sizeof(*c));
	c->magic = DNS_MAGIC_CHAN;
	c->r = r;
	LIST_INIT(&c->polls);

	memset(&o, 0, sizeof(o));
	mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	o.timeout = (int)r->timeout_ms;
	o.tries = (int)r->tries;
	o.sock_state_cb = dns_sock_state;
	o.sock_state_cb_data = c;
	dns_ares_resolvconf(&o, &mask);
	if ((rc = ares_init_options(&c->ch, &o, mask)) != ARES_SUCCESS) {
		buf_printf(err, "DNS resolver: %s", ares_strerror(rc));
		free(c);
		return NULL;
	}
	if (r->nservers > 0) {
		for (i = 0; i < r->nservers; i++)
			r->servers[i].next = i + 1 < r->nservers ? &r->servers[i + 1] : NULL;
		if ((rc = ares_set_servers_ports(c->ch, r->servers)) != ARES_SUCCESS) {
			buf_printf(err, "DNS resolver: setting servers: %s", ares_strerror(rc));
			ares_destroy(c->ch);
			free(c);
			return NULL;
		}
	}
	c->nservers = dns_ares_count(c->ch);
	uv_timer_init(r->loop, &c->timer);
	c->timer.data = c;
	c->nhandles = 1;
	r->nhandles++;
	TAILQ_INSERT_TAIL(&r->chans, c, entry);
	return c;
}

/* Destroy a channel: outstanding requests call back with ARES_EDESTRUCTION. */
void
dns_chan_destroy(struct dns_chan *c)
{
	if (c->destroyed)
		return;
	c->destroyed = true;
	uv_timer_stop(&c->timer);
	ares_destroy(c->ch);    /* closes its sockets through dns_sock_state() */
	c->ch = NULL;
	uv_close((uv_handle_t *)&c->timer, dns_chan_timer_closed);
}

/* A new channel with the resolver's current settings becomes the current one. */
int
dns_chan_replace(struct dns_resolver *r, struct buf *err)
{
	struct dns_chan *c;

	if ((c = dns_chan_new(r, err)) == NULL)
		return RELAY_EINVAL;
	if (r->chan != NULL) {
		r->chan->retired = true;
		if (r->chan->inflight == 0)
			dns_kick(r);
	}
	r->chan = c;
	return 0;
}
