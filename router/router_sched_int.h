/*
 * router_sched_int.h - (internal to router_sched*.c) the scheduler's own
 * types, shared by its files: router_sched.c (messages, the wake-up heap
 * and its timer, life cycle, administration), router_sched_report.c (the
 * reports a message owes) and router_sched_dest.c
 * (destinations, jobs and their attempts: resolve, walk the exchangers with
 * host health, turn deliver's results into outcomes).  Nothing else
 * includes this header; the rest of the router uses router_sched.h.
 */
#ifndef RELAY_ROUTER_SCHED_INT_H
#define RELAY_ROUTER_SCHED_INT_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "router/router_sched.h"

struct dkim_keys;
#include "dns/dns.h"
#include "deliver/deliver.h"
#include "tlspolicy/tlspolicy.h"
#include "mtasts/mtasts.h"
#include "common/htab.h"
#include "common/log.h"

#define SCHED_MAGIC_MSG      0x5c4d5347u     /* "\\MSG" */
#define SCHED_MAGIC_JOB      0x5c4a4f42u     /* "\\JOB" */
#define SCHED_MAGIC          0x5c534348u     /* "\\SCH" */
#define SCHED_NOWAKE         UINT64_MAX
#define SCHED_MAX_PER_TICK   4096            /* wake-ups handled per timer run */
#define SCHED_DEFAULT_RETRY  (5 * 60 * 1000ULL)
#define SCHED_PROBE_FLOOR    100             /* ms: a probe is never due "in the past" */
#define SCHED_HEALTH_KEEP    (24 * 3600 * 1000ULL)
#define SCHED_SWEEP_EVERY    (3600 * 1000ULL)
#define SCHED_TRIM_CHURN     10000           /* messages/records before the heap is trimmed */
#define SCHED_BOUNCE_REASON  "returned by the administrator"   /* relayctl queue bounce's report */
#define SCHED_TRIM_QUIET     (2 * 1000ULL)   /* ms with less churn than that, first */
#define SCHED_TRIM_LAST      (128 * 1000ULL) /* the longest wait between trims that give back */
#define SCHED_TRIM_WORTH     (4u << 20)      /* bytes of RSS a trim must give back for another */
#define SCHED_PUMP_OPS_MAX   4096            /* records and removals the queue's writer may be
                                                behind before the pumps hold back (resuming at
                                                half: sched_pump_paced) */
#define SCHED_JOBS_MIN       256             /* the default cap on jobs in flight in all is 2 per
                                                router.max_connections, at least this
                                                (sched_jobs_max) */

/* ------------------------------------------------------------------ */
/* Types. */

enum sched_wake_kind { SCHED_WAKE_MSG, SCHED_WAKE_DEST, SCHED_WAKE_TRIM };

/* One entry of the wake-up heap, inside what it wakes: its kind says whose
 * it is (SCHED_WAKE_OWNER), so it keeps no pointer back (a million waiting
 * messages have one each). */
struct sched_wake {
	uint64_t at;                    /* SCHED_NOWAKE when not in the heap */
	uint32_t pos;                   /* index in the heap */
	enum sched_wake_kind kind;
};

/* The struct type (struct sched_msg, struct sched_dest) whose member wake w is. */
#define SCHED_WAKE_OWNER(w, type) ((type *)(void *)((char *)(w) - offsetof(type, wake)))

struct sched_job;

/*
 * How a job's last attempt ended.  Allocated when first set: a job that
 * never made an attempt (queued behind the window: a whole backlog when an
 * outage ends) does not carry these 848 bytes.
 */
struct sched_last {
	char host[256];
	char ip[64];
	char status[16];
	char reply[512];
};

/* Where a recipient is counted for relayctl stats (router_sched_tally.c). */
enum sched_tb {
	SCHED_TB_NONE,                  /* not counted: delivered, failed, or its message deleted */
	SCHED_TB_DUE,                   /* pending, in no job: due at retry_at */
	SCHED_TB_ACTIVE,                /* in an attempt */
	SCHED_TB_QUEUED,                /* in its destination's queued line, behind the window */
	SCHED_TB_WAITING,               /* waiting for its destination */
	SCHED_TB_HELD,                  /* its message is held */
	SCHED_TB_N
};

struct sched_tdom;
struct sched_tdest;

/*
 * A recipient as the scheduler sees it: due at retry_at (in no job), in a
 * job, or in one of its destination's lines, in no job: queued behind its
 * window (queued: in wdest->queued) or waiting for it to come back
 * (waiting: in wdest->waiting).  In a line, its link and destination are
 * where retry_at, flush_gen and job are, which it does not use there.  Use
 * sched_rcpt_job() to read job.
 */
struct sched_rcpt {
	union {
		struct {                        /* in no line */
			uint64_t retry_at;      /* pending, not in a job: next attempt */
			uint64_t flush_gen;     /* made due by this flush (s->flush_gen), 0 = not */
		};
		TAILQ_ENTRY(sched_rcpt) wentry; /* in wdest->queued or wdest->waiting */
	};
	union {
		struct sched_job *job;          /* in no line: the job it is in, or NULL */
		struct sched_dest *wdest;       /* in a line: the destination whose it is */
	};
	uint64_t down_since;            /* its destination is down since (reports), 0 = not */
	struct sched_tdom *tdom;        /* counted under its domain (tbucket != NONE), else NULL */
	struct sched_tdest *tdest;      /* and under its (job's) destination, or NULL */
	uint8_t tbucket;                /* enum sched_tb: where it is counted */
	bool report_out : 1;            /* its report's commit is in flight */
	bool outcome_out : 1;           /* its D or F record is not durable yet: no report */
	bool waiting : 1;               /* in wdest->waiting (wentry, wdest: not retry_at...) */
	bool queued : 1;                /* in wdest->queued (likewise) */
	uint32_t idx;                   /* its index in its message's rc[] (sched_rcpt_msg) */
};
TAILQ_HEAD(sched_rcptq, sched_rcpt);

/* Whether rc is in one of its destination's lines (queued or waiting). */
static inline bool
sched_rcpt_lined(const struct sched_rcpt *rc)
{
	return rc->waiting || rc->queued;
}

/* The job rc is in, or NULL (due, or in a line). */
static inline struct sched_job *
sched_rcpt_job(const struct sched_rcpt *rc)
{
	return sched_rcpt_lined(rc) ? NULL : rc->job;
}

/* Whether rc is in a job or a line (not due on its own timer). */
static inline bool
sched_rcpt_busy(const struct sched_rcpt *rc)
{
	return sched_rcpt_lined(rc) || rc->job != NULL;
}

/* How the TLS policy treated one exchanger address tried for a message
 * (router_sched_tls.c; relayctl queue show). */
#define SCHED_TLS_NOTES      8               /* kept per message, the oldest dropped */

struct sched_tls_note {
	char *host;
	char ip[64];
	char policy[16];
	char *refused;                  /* "4.7.5 tlsa-invalid ...", or NULL */
	uint64_t time_ms;
};

/* One per queued message, with its recipients: its fields are ordered so
 * that the struct has no holes. */
struct sched_msg {
	uint32_t magic;
	unsigned njobs;
	struct queue_msg *m;
	struct sched_wake wake;
	uint64_t report_retry_at;       /* a report failed: not before this */
	uint16_t report_failures;       /* reports in a row that could not be queued (at most
	                                   UINT16_MAX: the back-off's last interval long before) */
	bool deleted;                   /* gone for the admin; freed when njobs == 0 */
	bool warn_out;                  /* the delay warning's commit is in flight */
	uint8_t ntls;                   /* entries in tls, at most SCHED_TLS_NOTES */
	bool admin_bounced;             /* relayctl queue bounce: its reports say so */
	bool report_wait;               /* in s->report_wait: a report waits for room */
	struct sched_tls_note *tls;     /* at most SCHED_TLS_NOTES; NULL before any attempt */
	struct htab_node node;          /* in s->mhash, by qid */
	TAILQ_ENTRY(sched_msg) entry;   /* s->msgs, oldest first */
	struct sched_rcpt rc[];         /* m->env.nrcpts entries (at least one), in the same
	                                   allocation: the count is fixed when the message comes */
};
/* With one recipient (most messages), 152 bytes: a 160-byte malloc chunk
 * where the struct and a separate array took 128 + 64; a recipient waiting
 * for its destination keeps its place in the line within those bytes. */
_Static_assert(sizeof(void *) != 8 || sizeof(struct sched_msg) + sizeof(struct sched_rcpt) <= 152,
    "struct sched_msg grew");
_Static_assert(sizeof(void *) != 8 || sizeof(struct sched_rcpt) <= 56, "struct sched_rcpt grew");
TAILQ_HEAD(sched_msgq, sched_msg);

/* The message whose recipient rc is. */
static inline struct sched_msg *
sched_rcpt_msg(struct sched_rcpt *rc)
{
	return (struct sched_msg *)(void *)((char *)(rc - rc->idx) - offsetof(struct sched_msg, rc));
}

/* Whether sm's first round of attempts is still under way: a job of it is
 * out, or a recipient of it is queued behind its destination's window (its
 * attempt is only postponed).  Until then its in-memory image is kept for
 * that attempt (queue_msg_drop_image() once it is over). */
static inline bool
sched_msg_under_way(const struct sched_msg *sm)
{
	size_t i;

	if (sm->njobs > 0)
		return true;
	for (i = 0; i < sm->m->env.nrcpts; i++)
		if (sm->rc[i].queued)
			return true;
	return false;
}

enum sched_job_state {
	SCHED_JOB_QUEUED,               /* being made, not started yet (in no list) */
	SCHED_JOB_RESOLVING,            /* in s->active: DNS query out */
	SCHED_JOB_DELIVERING,           /* in s->active: deliver attempt out */
};

/*
 * What one attempt of a job needs while it runs (resolving, then walking the
 * exchangers with deliver/): allocated when the attempt starts
 * (sched_job_start), freed when it ends (sched_job_end) or with the job.  A
 * queued job (one per message of a backlog released after an outage) has
 * none: these ~900 bytes are paid per attempt in flight, not per message.
 * (A job is made when its attempt can start: recipients behind a
 * destination's window wait in its queued line, in no job.)
 */
struct sched_attempt {
	struct sched *s;                /* the scheduler (the callbacks' way back to it) */
	struct conf *conf;              /* the snapshot the attempt runs under (one reference) */
	struct dns_query *mxq;
	struct dns_result *mx;
	struct mtasts_query *stsq;      /* the domain's MTA-STS policy is being looked up */
	bool has_sts;                   /* sts holds the domain's policy (a copy) */
	bool soft_fail;                 /* an address failed without being down (TLS...) */
	bool probing_host;              /* this attempt is the host's probe */
	bool rerouted;                  /* its domain goes another way now (as of reroute_gen) */
	unsigned ntried;                /* connections it attempted (in the bools' word) */
	struct mtasts_policy sts;
	char sts_failure[32];           /* RFC 8460 result type of a failed MTA-STS fetch with no
	                                   policy to apply (TLSRPT counts it), or "" */
	size_t ntargets;                /* targets allowed (primary-only cuts) */
	size_t ti, ai;                  /* the address being tried */
	char addr_key[HEALTH_ADDR_MAX];
	struct deliver_req req;
	char *msg_path;                 /* req.msg_path: the message's file (queue_msg_path) */
	struct queue_image *image;      /* the reference req.body borrows, until deliver's callback */
	struct tlspolicy tlspol;        /* the current exchanger's (DANE, MTA-STS); req borrows its records */
	struct deliver_rcpt *dr;
	uint64_t reroute_gen;           /* s->reroute_gen when rerouted was last looked at */
};

/*
 * A route shared by the jobs that resolved to it (sched_route_for, through
 * the route cache and sched_route_share: most of a destination's jobs):
 * read-only once made, freed with its last reference (each job that uses it
 * holds one, its destination one for the next job, the route cache's entry
 * one).  A job used to carry a copy of its own (64 bytes per waiting job).
 */
struct sched_route {
	struct route r;
	unsigned refs;
};

/*
 * The route cache (router_sched_dest.c, sched_route_for): a recipient domain,
 * folded as route_resolve folds it (ASCII lower case, one trailing dot
 * dropped), -> the shared route its jobs take, one reference held.  Without
 * it every new job resolved its route (copies of the hosts and strings, the
 * destination key built and interned) only for the destination to find it
 * equal to its own route and throw the copy away: several allocations and a
 * route_equal per dispatched recipient.
 *
 * An entry is good for one generation: the configuration it was resolved
 * under (sched_reload flushes the cache) and the run-time routes as
 * route_table_gen counts them (a change flushes it at the next lookup).
 * Within one generation route_resolve is a function of the folded domain,
 * so an entry is what a new resolve would give (route_equal): a job still
 * delivers the way its own route says.  Bounded, as the table of interned
 * keys is: SCHED_RCACHE_SLOTS slots, a lookup looks at SCHED_RCACHE_PROBE of
 * them from the domain's hash, and a domain not found takes the first empty
 * one or evicts the first (a queue to 100,000 domains keeps at most 1,024
 * entries: 80 KiB of slots with their keys, and the routes they hold).
 * The slots are allocated at the first lookup; sched_free drops them all.
 */
#define SCHED_RCACHE_SLOTS   1024            /* a power of 2 */
#define SCHED_RCACHE_PROBE   4
#define SCHED_RCACHE_KEYMAX  64              /* a domain this long or longer is resolved
                                                every time (few are: the slots stay 80 bytes) */

struct sched_rcache_slot {
	struct sched_route *sr;         /* one reference; NULL: the slot is empty */
	uint32_t hash;                  /* util_hash_bytes of domain */
	uint32_t len;
	char domain[SCHED_RCACHE_KEYMAX]; /* folded, NUL-terminated: in the slot, so that
	                                   a miss that evicts allocates and frees no key */
};

struct sched_rcache {
	struct sched_rcache_slot *slot; /* SCHED_RCACHE_SLOTS, or NULL before the first lookup */
	uint64_t route_gen;             /* route_table_gen the entries were resolved under */
	uint64_t hits, misses;          /* lookups answered from an entry; resolved */
};

/* The most recipients one job takes (nrcpts' width); a message with more for
 * one destination gets more jobs. */
#define SCHED_JOB_RCPTS_MAX     UINT16_MAX

/*
 * One transaction of one message to one destination, made when its attempt
 * starts (or a moment before, in sched_msg_dispatch).  Kept within 72 bytes
 * (an 80-byte malloc chunk): what only an attempt needs (the scheduler, the
 * configuration, what it tried) is in its struct sched_attempt, and a job of
 * one recipient keeps its index inline.  A message queued behind its
 * destination's window, or waiting for its down destination, has none: its
 * recipients are in the destination's lines (struct sched_rcpt), and the
 * pump, the probe or the release makes jobs of them (sched_dest_take).
 */
struct sched_job {
	uint32_t magic;
	uint16_t nrcpts;
	uint8_t state;                  /* enum sched_job_state */
	bool force : 1;                 /* flush: ignore backoff and destination state */
	bool probe : 1;                 /* the destination's probe */
	bool many : 1;                  /* rc.many, not rc.one (sched_job_rcpts) */
	TAILQ_ENTRY(sched_job) entry;   /* s->active */
	struct sched_msg *sm;
	struct sched_dest *dest;
	struct sched_route *route;      /* shared, one reference held (sched_route_for) */
	union {
		int one;                /* a job that may take one recipient: its index */
		int *many;              /* else room for as many as it may take */
	} rc;                           /* indices into the message's recipients */
	struct sched_attempt *at;       /* while an attempt runs (active), else NULL */
	struct sched_last *last;        /* how its last attempt ended, or NULL (nothing yet) */
};
_Static_assert(sizeof(void *) != 8 || sizeof(struct sched_job) <= 72, "struct sched_job grew");
TAILQ_HEAD(sched_jobq, sched_job);

/* The job's recipient indices, nrcpts of them. */
static inline int *
sched_job_rcpts(struct sched_job *job)
{
	return job->many ? job->rc.many : &job->rc.one;
}

/* The job's k-th recipient index (k < nrcpts). */
static inline int
sched_job_rcpt(const struct sched_job *job, size_t k)
{
	return job->many ? job->rc.many[k] : job->rc.one;
}

enum sched_dest_state { SCHED_DEST_NEW, SCHED_DEST_UP, SCHED_DEST_DOWN };

struct sched_dest {
	char *name;
	enum sched_dest_state state;
	unsigned window;                /* jobs allowed in flight; 0 = no limit of ours */
	unsigned inflight;
	unsigned rerouted;              /* sched_reroute only: of inflight, how many go a way
	                                   their domain no longer goes */
	struct sched_rcptq queued;      /* recipients ready, behind the window, in no job */
	struct sched_rcptq waiting;     /* the destination is down: recipients, in no job */
	size_t nbacklog, nwaiting;      /* recipients in queued; in waiting */
	uint64_t down_since;
	uint64_t empty_since;           /* down with no jobs since (the sweep forgets it) */
	uint64_t probe_at;
	bool probe_out;
	bool probe_force;               /* the next probe ignores host backoff (a flush) */
	uint64_t forced_gen;            /* the flush whose one forced attempt it has had */
	struct sched_wake wake;
	struct sched_route *route;      /* the last job's route, for the next to share, or NULL */
	struct htab_node node;          /* in s->dhash, by name */
	TAILQ_ENTRY(sched_dest) entry;
	TAILQ_ENTRY(sched_dest) hentry; /* in s->held while held */
	bool held;                      /* its queued line waits for room in all (sched_dest_hold) */
	bool next_force;                /* the next job of its queued line is a flush's forced
	                                   attempt that waited for room in all */
};
TAILQ_HEAD(sched_destq, sched_dest);

struct sched {
	uint32_t magic;
	const char *outcome_tls;        /* sched_on_deliver: how the session that delivered was
	                                   secured ("dane" ...), for the delivered lines; else NULL */
	const char *outcome_tls_version;/* and its TLS version ("TLSv1.3"), or NULL */
	uv_loop_t *loop;
	struct conf *conf;
	struct relay_stats *stats;
	struct queue *q;
	struct dns_resolver *mx;
	struct deliver *d;
	struct mtasts *mtasts;          /* or NULL: router.mta_sts off */
	struct health *health;
	struct dane_seen *dane;         /* DANE as DNS last told it (relayctl policy) */
	struct route_table *routes;
	struct sched_rcache rcache;     /* recipient domain -> shared route (sched_route_for) */
	struct dkim_keys *dkim;         /* relayd's own reports are signed with these */
	struct cluster *cluster;        /* host health shared with other nodes, or NULL */

	uv_timer_t timer;
	struct sched_wake **heap;
	size_t nheap, cheap;

	struct htab mhash;              /* struct sched_msg by qid */
	struct sched_msgq msgs;
	size_t nmsgs;
	struct htab dhash;              /* struct sched_dest by name */
	struct sched_destq dests;
	size_t ndests;
	struct sched_jobq active;
	unsigned nactive;
	/* sched_tally(), kept as things change (a scrape never walks the queue). */
	size_t npending;                /* recipients not delivered or failed */
	size_t nheld, nheld_rcpts;      /* held messages; their pending recipients */
	size_t nr_active, nr_backlog, nr_waiting;  /* recipients of the jobs in s->active,
	                                   in the queued lines, in the waiting lines */
	unsigned nreports;              /* reports whose commit is in flight */
	unsigned reports_max;           /* at most; 0: SCHED_REPORTS_MAX (tests set it) */
	unsigned nreports_peak;         /* the most nreports has been (tests read it) */
	/* Messages whose report waits for room under reports_max, by queue id
	 * (a message deleted meanwhile is not found): a ring, oldest first. */
	char (*report_wait)[QID_MAX];
	size_t report_wait_head, report_wait_n, report_wait_cap;
	unsigned noutcomes;             /* D/F records whose sync callback is to come */
	/* relayctl stats (sched_stats()), kept as recipients move: router_sched_tally.c. */
	size_t tb[SCHED_TB_N];          /* recipients by enum sched_tb */
	struct htab tdoms;              /* struct sched_tdom by recipient domain, case ignored */

	bool loaded;
	struct queue_scanner *scanner; /* the msg/ walk at start-up (sched_scan_begin) */
	struct queue_waiter pump_wait;  /* the pumps wait for the queue's writer (sched_pump_paced) */
	uint64_t pump_ops_max;          /* SCHED_PUMP_OPS_MAX (tests lower it) */
	bool pump_paced;                /* pump_wait is out */
	unsigned jobs_max;              /* jobs in flight in all; 0: the default (sched_jobs_max);
	                                   tests set it */
	struct sched_destq held;        /* destinations whose queued line waits for room in all
	                                   (the job cap or the writer): taken in turn (sched_held_pump) */
	struct sched_dest *held_fresh;  /* the last of the fresh ones at the front of held (they
	                                   come first, in the order they came), or NULL */
	bool held_backlog_turn;         /* the next slot goes to the first backlog behind the
	                                   fresh: a fresh one took the last (sched_held_next) */
	bool stopping;
	bool timer_closed;
	bool routes_closed;
	bool tlsrpt_closed;
	struct tlsrpt *tlsrpt;          /* TLS reporting (RFC 8460): counts and reports */
	void (*shutdown_done)(void *);
	void *shutdown_arg;

	uint64_t (*now_fn)(void *);
	void *now_arg;
	uint32_t (*rnd_fn)(void *);
	void *rnd_arg;
	uint64_t rnd_state;
	uint64_t last_sweep;
	uint64_t flush_gen;             /* counts flush --all / --domain */
	uint64_t reroute_gen;           /* counts sched_reroute(): an attempt out meanwhile looks
	                                   at its route again (sched_attempt_rerouted) */
	/* Returning freed memory (sched_churn): a mass start-up, deferral or
	 * delivery frees as much as it keeps, in holes malloc does not give back. */
	struct sched_wake trim_wake;
	size_t churn, churn_seen;       /* since the last trim; at the last look */
	uint64_t trim_delay;            /* ms before the next follow-up trim, 0 = none due */
	uv_work_t trim_work;            /* malloc_trim on the thread pool, off the loop */
	bool trimming;                  /* trim_work is out */
	int64_t trim_gave;              /* its result: bytes of RSS given back (or < 0: unknown) */
};

enum sched_news { SCHED_NEWS_NONE, SCHED_NEWS_REACHED, SCHED_NEWS_DOWN };

/* router_sched.c: the clock, the heap, recording outcomes, running messages. */
uint64_t sched_now(struct sched *s);
uint32_t sched_rnd(struct sched *s);
void sched_heap_set(struct sched *s, struct sched_wake *w, uint64_t at);
void sched_heap_remove(struct sched *s, struct sched_wake *w);
void sched_arm(struct sched *s);
void sched_record(struct sched *s, struct sched_msg *sm, const struct queue_record *rec);
void sched_rcpt_outcome(struct sched *s, struct sched_msg *sm, int i, enum sched_outcome o,
    const char *host, const char *ip, const char *status, const char *reply, bool counted,
    const char *wait_dest, bool dsn_passed, uint64_t now);
void sched_msg_run(struct sched *s, struct sched_msg *sm, uint64_t now);
void sched_msg_rewake(struct sched *s, struct sched_msg *sm, uint64_t now);
struct sched_msg *sched_msg_lookup(struct sched *s, const char *qid);
void sched_msg_free(struct sched *s, struct sched_msg *sm);
/* n messages or records came or went: trim the heap once things are quiet. */
void sched_churn(struct sched *s, size_t n);
void sched_shutdown_check(struct sched *s);
/* router_sched_tlsrpt.c: tell tlsrpt/ how a session (res) or a refusal before
 * connecting (res NULL, the job's tlspol says why) with exchanger tg went. */
void sched_tlsrpt_session(struct sched *s, struct sched_job *job, const struct dns_target *tg,
    const struct deliver_result *res, const char *ip);
bool sched_job_active(const struct sched_job *job);
/* Whether the domain of job's attempt (in flight) goes another way now than
 * the job's route: only an attempt that sched_reroute() ran during resolves
 * the domain again, once per reroute. */
bool sched_attempt_rerouted(struct sched *s, struct sched_job *job);

/* router_sched_tally.c: relayctl stats' tallies.  Count recipient i of sm
 * again after anything its view depends on changed (its state, its job or
 * the job's state or destination, the message's hold or deletion); the
 * others for every recipient of sm, or of job. */
void sched_rcpt_tally(struct sched *s, struct sched_msg *sm, size_t i);
void sched_msg_tally(struct sched *s, struct sched_msg *sm);
void sched_job_tally(struct sched *s, struct sched_job *job);
void sched_tally_free(struct sched *s);

/* router_sched_report.c: the reports a message owes (failures, expiries,
 * successes: reason is an extra sentence or NULL; the delay warning), recorded
 * once they are durable, retried when they could not be queued. */
void sched_msg_report(struct sched *s, struct sched_msg *sm, const char *reason, uint64_t now);
void sched_report_wait_free(struct sched *s);
void sched_msg_warn(struct sched *s, struct sched_msg *sm, uint64_t now);

/* router_sched_dest.c: destinations (by name, created on demand, freed when
 * idle) and jobs (made by router_sched.c's dispatch, admitted here). */
struct sched_dest *sched_dest_get(struct sched *s, const char *name);
void sched_dest_maybe_free(struct sched *s, struct sched_dest *d);
void sched_dest_wake(struct sched *s, struct sched_dest *d);
/* A reference to the shared route of a recipient at domain: the cached one,
 * else route_resolve's, shared with like (NULL: none; the route a job holds,
 * which a route change compares first) or its destination's route when equal
 * (see struct sched_rcache).  The caller drops it (sched_route_unref). */
struct sched_route *sched_route_for(struct sched *s, const char *domain,
    struct sched_route *like);
/* Drop every entry of the route cache (the configuration changed); free:
 * and its slots (sched_free). */
void sched_route_cache_flush(struct sched *s, bool free_slots);
/* A new job of sm for destination d (sched_dest_get(s, sr->r.dest)), not
 * admitted yet, holding a reference of its own to sr (from sched_route_for),
 * which becomes d's route for the next job to share. */
struct sched_job *sched_job_new(struct sched *s, struct sched_msg *sm, struct sched_dest *d,
    struct sched_route *sr);
/* Put recipient i of job's message into job: the flush that made it due
 * (0 = none) is returned, for sched_dest_admit. */
uint64_t sched_job_add_rcpt(struct sched *s, struct sched_job *job, int i);
/* Drop one reference to a shared route (NULL: nothing); the last frees it. */
void sched_route_unref(struct sched_route *sr);
void sched_job_free(struct sched *s, struct sched_job *job);
/* The most recipients a job of s takes (router.max_rcpts_per_txn, bounded). */
unsigned sched_job_max(const struct sched *s);
/* Take recipient i of sm out of its destination's line (queued or waiting):
 * due at due, in no job (the destination is left as it is: sched_dest_rewake). */
void sched_rcpt_unwait(struct sched *s, struct sched_msg *sm, size_t i, uint64_t due);
/* Every recipient of sm in a line (queued or waiting): out of it, due at due;
 * then each destination that lost one moves on (its probe, or it is forgotten). */
void sched_msg_unwait(struct sched *s, struct sched_msg *sm, uint64_t due);
/* Start a new job, or put its recipients in d's queued line (the window is
 * full) or waiting line (d is down): the job is freed then; flush_gen: the latest flush that made one of
 * its recipients due (sched_job_add_rcpt), 0 = none. */
void sched_dest_admit(struct sched *s, struct sched_dest *d, struct sched_job *job,
    uint64_t flush_gen, uint64_t now);
void sched_dest_rewake(struct sched *s, struct sched_dest *d);
/* The scheduler stops: the pumps' wait for the queue's writer is cancelled. */
void sched_pump_stop(struct sched *s);
/* Jobs in flight in all at most: s->jobs_max, or by default 2 per
 * router.max_connections, at least SCHED_JOBS_MIN. */
unsigned sched_jobs_max(const struct sched *s);
/* The destinations held for room in all start jobs in turn while there is room. */
void sched_held_pump(struct sched *s);
/* The numeric address of a ("192.0.2.1", "2001:db8::1") into out. */
void sched_addr_ip(const struct dns_addr *a, char *out, size_t outlen);

/* router_sched_tls.c: what the TLS policy did with each exchanger address,
 * into its health entry (relayctl hosts) and the message's notes (queue show).
 * The policy refused tg before any connection (job->tlspol.refuse): */
void sched_tls_refused(struct sched *s, struct sched_job *job, const struct dns_target *tg);
/* An attempt to job's current address (ip, health entry h) ended with res. */
void sched_tls_attempt(struct sched *s, struct sched_job *job, struct health_host *h,
    const char *host, const char *ip, const struct deliver_result *res);
void sched_tls_notes_free(struct sched_msg *sm);
/* Another node saw the destination named name answer: if it is down here, its
 * backlog goes out as after a success here (the ramp).  true if it was down. */
bool sched_dest_release(struct sched *s, const char *name);

/* router_shared.c: host health shared through the cluster (cluster/). */
void sched_shared_host_down(struct sched *s, const struct health_host *h);
void sched_shared_host_up(struct sched *s, const struct health_host *h);
void sched_shared_dest_up(struct sched *s, const struct sched_dest *d);

#endif
