/*
 * cluster.c - the link to Redis shared by the nodes of a cluster: two
 * hiredis asynchronous connections on the loop (libuv adapter), one for
 * commands and one subscribed to the health channel; the windowed counters
 * (one Lua script, EVALSHA) and the health news (PUBLISH, and a hash of the
 * hosts down for nodes that connect later).  See cluster.h.
 *
 * Owns: struct cluster, both redisAsyncContexts (hiredis frees a context
 * after its disconnect; the adapter closes its poll handle), one timer
 * (the connect deadline, the oldest command's deadline, or the next
 * reconnect), and every request in flight (struct cluster_req, freed in
 * its reply callback, which hiredis also calls with NULL when a context
 * goes away).
 * Never: blocks, waits for Redis longer than CLUSTER_TIMEOUT_MS, reads a
 * value back to write it (every counter changes inside Redis), or calls a
 * caller's callback from inside the call that asked.
 */
#include "cluster/cluster.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libuv.h>

#include "common/log.h"
#include "common/util.h"

#define CLUSTER_MAGIC           0xc1057e12U
#define CLUSTER_REQ_MAGIC       0xc1057e13U
#define CLUSTER_PASSWORD_MAX    1024
#define CLUSTER_CHANNEL         "relayd:health"
#define CLUSTER_HOSTS_KEY       "relayd:hosts"
#define CLUSTER_HOSTS_TTL_MS    "86400000"      /* the hash of down hosts: a day after the last change */
#define CLUSTER_ARGS_MAX        (4 + 2 * CLUSTER_COUNT_MAX + 1)

/*
 * KEYS[1] a hash; ARGV: field, increment pairs, then the window (ms).
 * Returns the fields' values and the window's time left (0: no window).
 * A read (all increments 0) of a missing key creates nothing.
 */
static const char cluster_count_lua[] =
    "local w = ARGV[#ARGV]\n"
    "local t = redis.call('PTTL', KEYS[1])\n"
    "local add = false\n"
    "for i = 2, #ARGV - 1, 2 do if tonumber(ARGV[i]) ~= 0 then add = true end end\n"
    "local out = {}\n"
    "if t == -2 and not add then\n"
    "  for i = 1, #ARGV - 1, 2 do out[#out + 1] = 0 end\n"
    "  out[#out + 1] = 0\n"
    "  return out\n"
    "end\n"
    "for i = 1, #ARGV - 1, 2 do\n"
    "  out[#out + 1] = redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])\n"
    "end\n"
    "if t < 0 then redis.call('PEXPIRE', KEYS[1], w); t = tonumber(w) end\n"
    "out[#out + 1] = t\n"
    "return out\n";

enum cluster_state {
	CLUSTER_DOWN,                   /* waiting to reconnect */
	CLUSTER_CONNECTING,             /* until both links are ready */
	CLUSTER_UP,
};

struct cluster_req {
	uint32_t magic;
	TAILQ_ENTRY(cluster_req) entry;         /* in cl->pending, oldest first */
	struct cluster *cl;
	uint64_t deadline;                      /* util_mono_ms() */
	void (*done)(struct cluster_req *, redisReply *);       /* NULL: nothing to do */
	cluster_count_cb cb;
	void *arg;
	size_t n;                               /* counters asked for */
};

struct cluster {
	uint32_t magic;
	uv_loop_t *loop;
	char *host;                     /* numeric, no brackets */
	int port;
	char *redis;                    /* as configured, for the log */
	char *node;
	char *password;                 /* NULL: no AUTH */
	redisAsyncContext *cmd, *sub;
	enum cluster_state state;
	bool cmd_ready, sub_ready;
	bool degraded;                  /* cluster_degraded logged, cluster_restored not yet */
	bool connected_once;
	bool hosts_known;               /* this link's HGETALL: the node remembers its own marks */
	bool closing;
	char sha[41];                   /* the count script's, "" until loaded */
	uint64_t retry_ms;              /* the next back-off */
	uv_timer_t timer;
	TAILQ_HEAD(, cluster_req) pending;
	struct cluster_health_ops health;
};

static void cluster_connect(struct cluster *cl);
static void cluster_arm(struct cluster *cl);

bool
cluster_up(const struct cluster *cl)
{
	return cl != NULL && cl->state == CLUSTER_UP;
}

const char *
cluster_node(const struct cluster *cl)
{
	return cl->node;
}

/* ------------------------------------------------------------------ */
/* The link: up, down, back. */

/* The link is lost (why): free what is left of it, log once, retry later. */
static void
cluster_link_down(struct cluster *cl, const char *why)
{
	redisAsyncContext *cmd = cl->cmd, *sub = cl->sub;

	if (cl->state == CLUSTER_DOWN)
		return;
	cl->state = CLUSTER_DOWN;
	cl->cmd = cl->sub = NULL;
	cl->cmd_ready = cl->sub_ready = false;
	if (!cl->degraded && !cl->closing) {
		cl->degraded = true;
		log_event(LOG_WARNING, "cluster_degraded", "redis", cl->redis, "node", cl->node,
		    "error", why, NULL);
	}
	/* Requests still in flight are answered NULL from here (local state decides). */
	if (cmd != NULL)
		redisAsyncFree(cmd);
	if (sub != NULL)
		redisAsyncFree(sub);
	cluster_arm(cl);
}

static void
cluster_link_ready(struct cluster *cl)
{
	if (cl->state != CLUSTER_CONNECTING || !cl->cmd_ready || !cl->sub_ready)
		return;
	cl->state = CLUSTER_UP;
	cl->retry_ms = CLUSTER_RETRY_MIN_MS;
	if (cl->degraded) {
		cl->degraded = false;
		log_event(LOG_NOTICE, "cluster_restored", "redis", cl->redis, "node", cl->node, NULL);
	} else if (!cl->connected_once)
		log_event(LOG_INFO, "cluster_connected", "redis", cl->redis, "node", cl->node, NULL);
	cl->connected_once = true;
	cluster_arm(cl);
}

/* The timer: the connect deadline, the oldest command's, or the next attempt. */
static void
cluster_on_timer(uv_timer_t *t)
{
	struct cluster *cl = t->data;
	struct cluster_req *r;

	if (cl->magic != CLUSTER_MAGIC)
		fatalx("%s: bad cluster", __func__);
	switch (cl->state) {
	case CLUSTER_DOWN:
		cluster_connect(cl);
		break;
	case CLUSTER_CONNECTING:
		cluster_link_down(cl, "connect timeout");
		break;
	case CLUSTER_UP:
		r = TAILQ_FIRST(&cl->pending);
		if (r != NULL && r->deadline <= util_mono_ms())
			cluster_link_down(cl, "command timeout");
		else
			cluster_arm(cl);
		break;
	}
}

static void
cluster_arm(struct cluster *cl)
{
	struct cluster_req *r;
	uint64_t now = util_mono_ms();

	if (cl->closing)
		return;
	uv_timer_stop(&cl->timer);
	switch (cl->state) {
	case CLUSTER_DOWN:
		uv_timer_start(&cl->timer, cluster_on_timer, cl->retry_ms, 0);
		cl->retry_ms = cl->retry_ms * 2 > CLUSTER_RETRY_MAX_MS ? CLUSTER_RETRY_MAX_MS :
		    cl->retry_ms * 2;
		break;
	case CLUSTER_CONNECTING:
		uv_timer_start(&cl->timer, cluster_on_timer, CLUSTER_TIMEOUT_MS, 0);
		break;
	case CLUSTER_UP:
		if ((r = TAILQ_FIRST(&cl->pending)) != NULL)
			uv_timer_start(&cl->timer, cluster_on_timer,
			    r->deadline > now ? r->deadline - now : 0, 0);
		break;
	}
}

/* hiredis: a context's connect ended; on failure hiredis frees it next. */
static void
cluster_on_connect(const redisAsyncContext *ac, int status)
{
	struct cluster *cl = ac->data;

	if (status == REDIS_OK)
		return;                 /* ready once AUTH, SCRIPT LOAD, SUBSCRIBE answer */
	if (ac == cl->cmd)
		cl->cmd = NULL;
	else if (ac == cl->sub)
		cl->sub = NULL;
	else
		return;                 /* a context given up already */
	cluster_link_down(cl, ac->errstr[0] ? ac->errstr : "connect failed");
}

/* hiredis: a context is gone (the server closed it, or we freed it). */
static void
cluster_on_disconnect(const redisAsyncContext *ac, int status)
{
	struct cluster *cl = ac->data;

	if (ac == cl->cmd)
		cl->cmd = NULL;
	else if (ac == cl->sub)
		cl->sub = NULL;
	else
		return;
	cluster_link_down(cl, status == REDIS_OK ? "disconnected" :
	    ac->errstr[0] ? ac->errstr : "connection lost");
}

/* ------------------------------------------------------------------ */
/* Requests. */

static void
cluster_on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct cluster_req *r = privdata;
	struct cluster *cl = r->cl;

	if (r->magic != CLUSTER_REQ_MAGIC)
		fatalx("%s: bad request", __func__);
	TAILQ_REMOVE(&cl->pending, r, entry);
	r->magic = 0;
	if (r->done != NULL)
		r->done(r, reply);
	free(r);
	if (cl->state == CLUSTER_UP && ac == cl->cmd)
		cluster_arm(cl);
}

/* Send argv on the command link; done sees the reply (NULL: none in time).  0 or -1. */
static int
cluster_send(struct cluster *cl, int argc, const char **argv, const size_t *argvlen,
    void (*done)(struct cluster_req *, redisReply *), cluster_count_cb cb, void *arg, size_t n)
{
	struct cluster_req *r;

	if (cl->cmd == NULL)
		return -1;
	r = xcalloc(1, sizeof(*r));
	r->magic = CLUSTER_REQ_MAGIC;
	r->cl = cl;
	r->deadline = util_mono_ms() + CLUSTER_TIMEOUT_MS;
	r->done = done;
	r->cb = cb;
	r->arg = arg;
	r->n = n;
	if (redisAsyncCommandArgv(cl->cmd, cluster_on_reply, r, argc, argv, argvlen) != REDIS_OK) {
		free(r);
		return -1;
	}
	TAILQ_INSERT_TAIL(&cl->pending, r, entry);
	if (TAILQ_FIRST(&cl->pending) == r && cl->state == CLUSTER_UP)
		cluster_arm(cl);
	return 0;
}

/* Send a command given as strings (none binary). */
static int
cluster_sendv(struct cluster *cl, void (*done)(struct cluster_req *, redisReply *), int argc,
    const char **argv)
{
	size_t len[CLUSTER_ARGS_MAX];
	int i;

	for (i = 0; i < argc; i++)
		len[i] = strlen(argv[i]);
	return cluster_send(cl, argc, argv, len, done, NULL, NULL, 0);
}

static bool
cluster_reply_error(const redisReply *reply)
{
	return reply == NULL || reply->type == REDIS_REPLY_ERROR;
}

static void
cluster_on_auth(struct cluster_req *r, redisReply *reply)
{
	if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
		cluster_link_down(r->cl, reply->str);
}

static void
cluster_on_script(struct cluster_req *r, redisReply *reply)
{
	struct cluster *cl = r->cl;

	if (cluster_reply_error(reply) || reply->type != REDIS_REPLY_STRING || reply->len != 40) {
		if (reply != NULL)
			cluster_link_down(cl, reply->type == REDIS_REPLY_ERROR ? reply->str :
			    "SCRIPT LOAD: unexpected reply");
		return;
	}
	memcpy(cl->sha, reply->str, 40);
	cl->sha[40] = '\0';
	cl->cmd_ready = true;
	cluster_link_ready(cl);
}

/* "NODE FAILURES UNTIL BACKOFF WHY..." (the hash's values, the news after "down ") */
static void
cluster_host_down_news(struct cluster *cl, const char *addr, const char *text)
{
	struct cluster_host_news n;
	char node[65], why[256];
	unsigned long long until, backoff;
	int off = 0;

	why[0] = '\0';
	if (cl->health.host_down == NULL ||
	    sscanf(text, "%64s %u %llu %llu %n", node, &n.failures, &until, &backoff, &off) < 4)
		return;
	if (cl->hosts_known && strcmp(node, cl->node) == 0)
		return;                 /* ours, still in our health table */
	snprintf(why, sizeof(why), "%s", off > 0 ? text + off : "");
	if (until <= util_now_ms())
		return;                 /* over already */
	n.node = node;
	n.addr = addr;
	n.until_ms = until;
	n.backoff_ms = backoff;
	n.why = why;
	cl->health.host_down(cl->health.arg, &n);
}

/* HGETALL relayd:hosts after connecting: the hosts still down. */
static void
cluster_on_hosts(struct cluster_req *r, redisReply *reply)
{
	size_t i;

	if (cluster_reply_error(reply) || reply->type != REDIS_REPLY_ARRAY)
		return;
	for (i = 0; i + 1 < reply->elements; i += 2)
		if (reply->element[i]->type == REDIS_REPLY_STRING &&
		    reply->element[i + 1]->type == REDIS_REPLY_STRING)
			cluster_host_down_news(r->cl, reply->element[i]->str,
			    reply->element[i + 1]->str);
}

/* A message on the health channel: "down NODE ADDR ...", "up NODE ADDR", "release NODE DEST". */
static void
cluster_on_message(struct cluster *cl, const char *msg)
{
	char kind[16], node[65], what[300];
	int off = 0;

	if (sscanf(msg, "%15s %64s %299s %n", kind, node, what, &off) < 3)
		return;
	if (strcmp(node, cl->node) == 0)
		return;                 /* our own news */
	if (strcmp(kind, "down") == 0 && off > 0) {
		char text[600];

		snprintf(text, sizeof(text), "%s %s", node, msg + off);
		cluster_host_down_news(cl, what, text);
	} else if (strcmp(kind, "up") == 0 && cl->health.host_up != NULL)
		cl->health.host_up(cl->health.arg, node, what);
	else if (strcmp(kind, "release") == 0 && cl->health.dest_up != NULL)
		cl->health.dest_up(cl->health.arg, node, what);
}

/* hiredis: the subscription's replies (NULL when the context goes). */
static void
cluster_on_sub(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct cluster *cl = privdata;
	redisReply *rp = reply;

	if (rp == NULL || cl->magic != CLUSTER_MAGIC || ac != cl->sub)
		return;
	if (rp->type == REDIS_REPLY_ERROR) {
		cluster_link_down(cl, rp->str);
		return;
	}
	if (rp->type != REDIS_REPLY_ARRAY || rp->elements < 3 ||
	    rp->element[0]->type != REDIS_REPLY_STRING)
		return;
	if (strcmp(rp->element[0]->str, "subscribe") == 0) {
		cl->sub_ready = true;
		cluster_link_ready(cl);
	} else if (strcmp(rp->element[0]->str, "message") == 0 &&
	    rp->element[2]->type == REDIS_REPLY_STRING)
		cluster_on_message(cl, rp->element[2]->str);
}

/* The subscription's AUTH: an error ends the link. */
static void
cluster_on_sub_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
	struct cluster *cl = privdata;
	redisReply *rp = reply;

	if (rp != NULL && rp->type == REDIS_REPLY_ERROR && ac == cl->sub)
		cluster_link_down(cl, rp->str);
}

static redisAsyncContext *
cluster_open(struct cluster *cl)
{
	redisAsyncContext *ac = redisAsyncConnect(cl->host, cl->port);

	if (ac == NULL)
		return NULL;
	if (ac->err != 0 || redisLibuvAttach(ac, cl->loop) != REDIS_OK) {
		redisAsyncFree(ac);
		return NULL;
	}
	ac->data = cl;
	redisAsyncSetConnectCallback(ac, cluster_on_connect);
	redisAsyncSetDisconnectCallback(ac, cluster_on_disconnect);
	return ac;
}

/* Open both links and ask what makes them ready; the timer bounds it. */
static void
cluster_connect(struct cluster *cl)
{
	const char *auth[] = { "AUTH", cl->password };
	const char *load[] = { "SCRIPT", "LOAD", cluster_count_lua };
	const char *hosts[] = { "HGETALL", CLUSTER_HOSTS_KEY };
	const char *subscribe[] = { "SUBSCRIBE", CLUSTER_CHANNEL };

	cl->state = CLUSTER_CONNECTING;
	cl->cmd_ready = cl->sub_ready = false;
	/* a reconnect reads back the hosts this node marked: it has them (a
	 * node that restarted has not, and takes them like any other news) */
	cl->hosts_known = cl->connected_once;
	cl->sha[0] = '\0';
	if ((cl->cmd = cluster_open(cl)) == NULL || (cl->sub = cluster_open(cl)) == NULL) {
		cluster_link_down(cl, "cannot connect");
		return;
	}
	if ((cl->password != NULL && (cluster_sendv(cl, cluster_on_auth, 2, auth) != 0 ||
	    redisAsyncCommandArgv(cl->sub, cluster_on_sub_auth, cl, 2, auth, NULL) != REDIS_OK)) ||
	    cluster_sendv(cl, cluster_on_script, 3, load) != 0 ||
	    cluster_sendv(cl, cluster_on_hosts, 2, hosts) != 0 ||
	    redisAsyncCommandArgv(cl->sub, cluster_on_sub, cl, 2, subscribe, NULL) != REDIS_OK) {
		cluster_link_down(cl, "cannot send");
		return;
	}
	cluster_arm(cl);
}

/* ------------------------------------------------------------------ */
/* Counters. */

static void
cluster_on_count(struct cluster_req *r, redisReply *reply)
{
	struct cluster_counts c;
	size_t i;

	if (cluster_reply_error(reply) || reply->type != REDIS_REPLY_ARRAY ||
	    reply->elements != r->n + 1) {
		if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
		    strncmp(reply->str, "NOSCRIPT", 8) == 0)
			r->cl->sha[0] = '\0';   /* flushed: the next link loads it again */
		if (r->cb != NULL)
			r->cb(r->arg, NULL);
		if (reply != NULL && r->cl->sha[0] == '\0')
			cluster_link_down(r->cl, "the count script is gone");
		return;
	}
	memset(&c, 0, sizeof(c));
	for (i = 0; i <= r->n; i++)
		if (reply->element[i]->type != REDIS_REPLY_INTEGER) {
			if (r->cb != NULL)
				r->cb(r->arg, NULL);
			return;
		}
	for (i = 0; i < r->n; i++)
		c.v[i] = reply->element[i]->integer;
	c.ttl_ms = reply->element[r->n]->integer > 0 ? (uint64_t)reply->element[r->n]->integer : 0;
	if (r->cb != NULL)
		r->cb(r->arg, &c);
}

int
cluster_count(struct cluster *cl, const char *kind, const char *name, const char *const *fields,
    const long long *incr, size_t n, uint64_t window_ms, cluster_count_cb cb, void *arg)
{
	const char *argv[CLUSTER_ARGS_MAX];
	size_t len[CLUSTER_ARGS_MAX];
	char nums[CLUSTER_COUNT_MAX + 1][24];
	struct buf key = BUF_INIT;
	int argc = 0, rc;
	size_t i;

	if (!cluster_up(cl) || n == 0 || n > CLUSTER_COUNT_MAX)
		return RELAY_ETEMP;
	buf_printf(&key, "relayd:%s:", kind);
	buf_puts(&key, name);
	argv[argc] = "EVALSHA";
	len[argc++] = 7;
	argv[argc] = cl->sha;
	len[argc++] = 40;
	argv[argc] = "1";
	len[argc++] = 1;
	argv[argc] = key.data;
	len[argc++] = key.len;
	for (i = 0; i < n; i++) {
		snprintf(nums[i], sizeof(nums[i]), "%lld", incr[i]);
		argv[argc] = fields[i];
		len[argc++] = strlen(fields[i]);
		argv[argc] = nums[i];
		len[argc++] = strlen(nums[i]);
	}
	snprintf(nums[n], sizeof(nums[n]), "%llu", (unsigned long long)(window_ms > 0 ? window_ms : 1));
	argv[argc] = nums[n];
	len[argc++] = strlen(nums[n]);
	rc = cluster_send(cl, argc, argv, len, cluster_on_count, cb, arg, n);
	buf_free(&key);
	return rc == 0 ? 0 : RELAY_ETEMP;
}

/* ------------------------------------------------------------------ */
/* Health news. */

void
cluster_set_health(struct cluster *cl, const struct cluster_health_ops *ops)
{
	if (ops != NULL)
		cl->health = *ops;
	else
		memset(&cl->health, 0, sizeof(cl->health));
}

static void
cluster_publish(struct cluster *cl, const char *msg)
{
	const char *argv[] = { "PUBLISH", CLUSTER_CHANNEL, msg };

	(void)cluster_sendv(cl, NULL, 3, argv);
}

void
cluster_host_down(struct cluster *cl, const char *addr, unsigned failures, uint64_t until_ms,
    uint64_t backoff_ms, const char *why)
{
	struct buf v = BUF_INIT, msg = BUF_INIT;
	const char *hset[4], *expire[] = { "PEXPIRE", CLUSTER_HOSTS_KEY, CLUSTER_HOSTS_TTL_MS };
	size_t i;

	if (!cluster_up(cl))
		return;
	buf_printf(&v, "%s %u %llu %llu ", cl->node, failures, (unsigned long long)until_ms,
	    (unsigned long long)backoff_ms);
	for (i = 0; why != NULL && why[i] != '\0' && i < 200; i++)
		buf_putc(&v, why[i] == '\r' || why[i] == '\n' ? ' ' : why[i]);
	hset[0] = "HSET";
	hset[1] = CLUSTER_HOSTS_KEY;
	hset[2] = addr;
	hset[3] = buf_cstr(&v);
	(void)cluster_sendv(cl, NULL, 4, hset);
	(void)cluster_sendv(cl, NULL, 3, expire);
	buf_printf(&msg, "down %s %s ", cl->node, addr);
	buf_puts(&msg, buf_cstr(&v) + strlen(cl->node) + 1);
	cluster_publish(cl, buf_cstr(&msg));
	buf_free(&v);
	buf_free(&msg);
}

void
cluster_host_up(struct cluster *cl, const char *addr)
{
	const char *hdel[] = { "HDEL", CLUSTER_HOSTS_KEY, addr };
	struct buf msg = BUF_INIT;

	if (!cluster_up(cl))
		return;
	(void)cluster_sendv(cl, NULL, 3, hdel);
	buf_printf(&msg, "up %s %s", cl->node, addr);
	cluster_publish(cl, buf_cstr(&msg));
	buf_free(&msg);
}

void
cluster_dest_up(struct cluster *cl, const char *dest)
{
	struct buf msg = BUF_INIT;

	if (!cluster_up(cl))
		return;
	buf_printf(&msg, "release %s %s", cl->node, dest);
	cluster_publish(cl, buf_cstr(&msg));
	buf_free(&msg);
}

/* ------------------------------------------------------------------ */
/* Life. */

int
cluster_new(uv_loop_t *loop, const struct conf *c, struct cluster **out, struct buf *err)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char ip[INET6_ADDRSTRLEN];
	struct cluster *cl;

	*out = NULL;
	if (!c->cluster.enabled)
		return 0;
	if (conf_parse_listen(c->cluster.redis, &ss, &len) != 0) {
		buf_printf(err, "cluster.redis: bad address '%s'\n", c->cluster.redis);
		return -1;
	}
	cl = xcalloc(1, sizeof(*cl));
	if (c->cluster.password_file != NULL &&
	    util_read_secret(c->cluster.password_file, CLUSTER_PASSWORD_MAX, &cl->password, err) != 0) {
		free(cl);
		return -1;
	}
	if (ss.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, ip, sizeof(ip));
		cl->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	} else {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, ip, sizeof(ip));
		cl->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	}
	cl->magic = CLUSTER_MAGIC;
	cl->loop = loop;
	cl->host = xstrdup(ip);
	cl->redis = xstrdup(c->cluster.redis);
	cl->node = xstrdup(c->cluster.node);
	cl->retry_ms = CLUSTER_RETRY_MIN_MS;
	TAILQ_INIT(&cl->pending);
	uv_timer_init(loop, &cl->timer);
	cl->timer.data = cl;
	/* connect once the loop runs: its deadline counts from there */
	cl->state = CLUSTER_DOWN;
	uv_timer_start(&cl->timer, cluster_on_timer, 0, 0);
	*out = cl;
	return 0;
}

static void
cluster_on_closed(uv_handle_t *h)
{
	struct cluster *cl = h->data;

	if (cl->password != NULL) {
		explicit_bzero(cl->password, strlen(cl->password));
		free(cl->password);
	}
	free(cl->host);
	free(cl->redis);
	free(cl->node);
	cl->magic = 0;
	free(cl);
}

void
cluster_close(struct cluster *cl)
{
	if (cl == NULL)
		return;
	if (cl->magic != CLUSTER_MAGIC || cl->closing)
		fatalx("%s: bad cluster", __func__);
	cl->closing = true;
	memset(&cl->health, 0, sizeof(cl->health));
	cluster_link_down(cl, "closing");
	uv_close((uv_handle_t *)&cl->timer, cluster_on_closed);
}
