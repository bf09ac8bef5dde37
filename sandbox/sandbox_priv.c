/*
 * sandbox_priv.c - the switch from root to the configured `user`: resolving
 * the account, preparing the queue directory so that it is the user's, the
 * temporary switch of the effective ids while the queue opens, the final
 * setgroups/setgid/setuid (checked: regaining root must fail), and the
 * readability warnings of relayd -n.  Owns struct sandbox.  Never runs a
 * session as root: a switch that did not take aborts the process.
 */
#include "sandbox/sandbox_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

/* The account name's ids and groups.  0, RELAY_ENOENT (no such user) or RELAY_EIO. */
static int
sandbox_lookup(const char *name, uid_t *uid, gid_t *gid, gid_t **groups, size_t *ngroups)
{
	struct passwd pw, *res = NULL;
	char sbuf[4096];
	int n = 16, e;
	gid_t *g = NULL;

	e = getpwnam_r(name, &pw, sbuf, sizeof(sbuf), &res);
	if (res == NULL)
		return e == 0 || e == ENOENT || e == ESRCH ? RELAY_ENOENT : RELAY_EIO;
	*uid = pw.pw_uid;
	*gid = pw.pw_gid;
	for (;;) {
		int want = n;

		g = xrealloc(g, (size_t)n * sizeof(*g));
		if (getgrouplist(name, pw.pw_gid, g, &n) != -1)
			break;
		if (n <= want)          /* no growth asked for: give up */
			n = want * 2;
		if (n > 65536) {
			free(g);
			return RELAY_EIO;
		}
	}
	*groups = g;
	*ngroups = (size_t)n;
	return 0;
}

bool
sandbox_may_access(const struct stat *st, uid_t uid, gid_t gid, const gid_t *groups,
    size_t ngroups, int want)
{
	mode_t bits;
	size_t i;
	bool member = st->st_gid == gid;

	if (uid == 0)
		return (want & X_OK) == 0 || S_ISDIR(st->st_mode) ||
		    (st->st_mode & (S_IXUSR | S_IXGRP | S_IXOTH)) != 0;
	for (i = 0; !member && i < ngroups; i++)
		member = groups[i] == st->st_gid;
	if (st->st_uid == uid)
		bits = (st->st_mode >> 6) & 7;
	else if (member)
		bits = (st->st_mode >> 3) & 7;
	else
		bits = st->st_mode & 7;
	return ((want & R_OK) == 0 || (bits & 4)) && ((want & W_OK) == 0 || (bits & 2)) &&
	    ((want & X_OK) == 0 || (bits & 1));
}

/* Are the directories on the way to path all searchable by the account? */
static bool
sandbox_user_can_reach(const struct sandbox *sb, const char *path)
{
	struct stat st;
	char *p = xstrdup(path), *slash;
	bool ok = true;

	for (slash = strchr(p + 1, '/'); ok && slash != NULL; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		if (stat(p, &st) == 0 && !sandbox_may_access(&st, sb->uid, sb->gid,
		    sb->groups, sb->ngroups, X_OK))
			ok = false;
		*slash = '/';
	}
	free(p);
	return ok;
}

const struct sandbox_sasl_path sandbox_sasl_paths[] = {
	{ "sasldb_path", R_OK },
	{ "sql_database", R_OK },
	{ "saslauthd_path", W_OK },     /* connect(2) needs write on the socket */
};
const size_t sandbox_nsasl_paths = RELAY_ARRAY_LEN(sandbox_sasl_paths);

/* Can the account open path for want (R_OK, W_OK)?  0, or -1 with the reason in *why. */
static int
sandbox_user_can(const struct sandbox *sb, const char *path, int want, const char **why)
{
	struct stat st;

	if (!sandbox_user_can_reach(sb, path)) {
		*why = "a directory on its path is not searchable";
		return -1;
	}
	if (stat(path, &st) == -1) {
		*why = strerror(errno);
		return -1;
	}
	if (!sandbox_may_access(&st, sb->uid, sb->gid, sb->groups, sb->ngroups, want)) {
		*why = want == R_OK ? "not readable" : "not writable";
		return -1;
	}
	return 0;
}

static int
sandbox_user_can_read(const struct sandbox *sb, const char *path, const char **why)
{
	return sandbox_user_can(sb, path, R_OK, why);
}

static void
sandbox_free_user(struct sandbox *sb)
{
	free(sb->user);
	free(sb->groups);
	free(sb->log_file);
}

void
sandbox_free(struct sandbox *sb)
{
	if (sb == NULL)
		return;
	sandbox_free_user(sb);
	free(sb);
}

bool
sandbox_switches(const struct sandbox *sb)
{
	return sb != NULL && sb->do_switch;
}

uid_t
sandbox_uid(const struct sandbox *sb)
{
	return sb->uid;
}

/* Resolve c->user into sb; as root a missing or uid 0 account is an error. */
static int
sandbox_resolve(struct sandbox *sb, const struct conf *c, bool root, struct buf *err)
{
	int rc;

	sb->user = xstrdup(c->user);
	rc = sandbox_lookup(c->user, &sb->uid, &sb->gid, &sb->groups, &sb->ngroups);
	if (rc == 0 && sb->uid == 0 && root) {
		buf_printf(err, "%s: user '%s' is uid 0: relayd does not run sessions as root; "
		    "set user to an unprivileged account (e.g. relayd)\n", c->path, c->user);
		return -1;
	}
	if (rc != 0 && root) {
		buf_printf(err, "%s: user '%s' %s: create it (useradd --system --home-dir %s "
		    "--shell /usr/sbin/nologin %s) or set user\n", c->path, c->user,
		    rc == RELAY_ENOENT ? "does not exist" : "cannot be looked up",
		    c->queue_dir, c->user);
		return -1;
	}
	return rc;
}

/* A queue that root made (an older relayd): give its files to the user. */
static int
sandbox_chown_tree(int dirfd, const char *dir, uid_t uid, gid_t gid, int depth,
    unsigned *count, struct buf *err)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int fd, rc = 0;

	if ((fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1 ||
	    (d = fdopendir(fd)) == NULL) {
		if (fd != -1)
			close(fd);
		buf_printf(err, "queue_dir %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while (rc == 0 && (de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == -1)
			continue;
		if (S_ISLNK(st.st_mode))
			continue;               /* never follow a link out of the queue */
		if (st.st_uid == 0) {
			if (fchownat(dirfd, de->d_name, uid, gid, AT_SYMLINK_NOFOLLOW) == -1) {
				buf_printf(err, "queue_dir %s: chown %s: %s\n", dir, de->d_name,
				    strerror(errno));
				rc = -1;
				break;
			}
			(*count)++;
		}
		if (S_ISDIR(st.st_mode) && depth > 0) {
			int sub = openat(dirfd, de->d_name,
			    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

			if (sub == -1)
				continue;
			rc = sandbox_chown_tree(sub, dir, uid, gid, depth - 1, count, err);
			close(sub);
		}
	}
	closedir(d);
	return rc;
}

/*
 * The queue directory is the user's: created 0700 for it, or checked.  A
 * world-writable one, or one of another account, is refused; root's (a
 * queue of a relayd that ran as root) is handed over, files and all.
 */
static int
sandbox_prepare_queue(const struct sandbox *sb, const char *dir, bool root, struct buf *err)
{
	struct stat st;
	unsigned count = 0;
	char num[16];
	int fd;

	if (root && !sandbox_user_can_reach(sb, dir)) {
		buf_printf(err, "queue_dir %s: user '%s' cannot reach it: a directory on its "
		    "path is not searchable (chmod o+x, or move the queue)\n", dir, sb->user);
		return -1;
	}
	if (stat(dir, &st) == -1) {
		if (errno != ENOENT || !root)
			return 0;               /* queue_open() creates it, or says why not */
		if (mkdir(dir, 0700) == -1 || chown(dir, sb->uid, sb->gid) == -1) {
			buf_printf(err, "queue_dir %s: cannot create it for user '%s': %s\n", dir,
			    sb->user, strerror(errno));
			return -1;
		}
		return 0;
	}
	if (!S_ISDIR(st.st_mode)) {
		buf_printf(err, "queue_dir %s: not a directory\n", dir);
		return -1;
	}
	if (st.st_mode & S_IWOTH) {
		buf_printf(err, "queue_dir %s: is world-writable (mode %04o): refusing it; "
		    "chmod 0700 %s\n", dir, (unsigned)(st.st_mode & 07777), dir);
		return -1;
	}
	if (st.st_uid != sb->uid && st.st_uid != 0) {
		buf_printf(err, "queue_dir %s: belongs to uid %u, not to user '%s' (uid %u): "
		    "refusing it; chown -R %s: %s, or set user\n", dir, (unsigned)st.st_uid,
		    sb->user, (unsigned)sb->uid, sb->user, dir);
		return -1;
	}
	if (st.st_uid != 0 || sb->uid == 0 || !root)
		return 0;
	/* root's queue: everything in it, to the depth of msg/<qid>, becomes the user's. */
	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) == -1 ||
	    fchown(fd, sb->uid, sb->gid) == -1 || fchmod(fd, 0700) == -1) {
		buf_printf(err, "queue_dir %s: cannot give it to user '%s': %s\n", dir, sb->user,
		    strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	if (sandbox_chown_tree(fd, dir, sb->uid, sb->gid, 1, &count, err) != 0) {
		close(fd);
		return -1;
	}
	close(fd);
	snprintf(num, sizeof(num), "%u", count + 1);
	log_event(LOG_NOTICE, "queue_chowned", "queue_dir", dir, "user", sb->user,
	    "files", num, NULL);
	return 0;
}

int
sandbox_new(const struct conf *c, struct sandbox **out, struct buf *err)
{
	struct sandbox *sb = xcalloc(1, sizeof(*sb));
	bool root = geteuid() == 0;
	struct stat st;
	int rc;

	*out = NULL;
	sb->start_egid = getegid();
	sb->log_file = c->log_file != NULL ? xstrdup(c->log_file) : NULL;
	rc = sandbox_resolve(sb, c, root, err);
	if (rc != 0 && root) {
		sandbox_free(sb);
		return -1;
	}
	if (!root) {
		struct passwd *pw = getpwuid(geteuid());

		/* Nothing to switch: we are who we run as (systemd's User=). */
		if (rc != 0 || sb->uid != geteuid())
			log_event(LOG_WARNING, "user_ignored", "user", c->user,
			    "running_as", pw != NULL ? pw->pw_name : "?",
			    "reason", "not started as root", NULL);
		free(sb->groups);
		sb->groups = NULL;
		sb->ngroups = 0;
		sb->uid = geteuid();
		sb->gid = getegid();
	}
	sb->do_switch = root;
	/* The log is reopened as the user (SIGHUP, SIGUSR1): a file root made is handed over. */
	if (root && c->log_file != NULL && lstat(c->log_file, &st) == 0 && S_ISREG(st.st_mode) &&
	    st.st_uid == 0 && chown(c->log_file, sb->uid, (gid_t)-1) == -1)
		log_event(LOG_WARNING, "log_chown_failed", "log_file", c->log_file,
		    "error", strerror(errno), NULL);
	if (sandbox_prepare_queue(sb, c->queue_dir, root, err) != 0) {
		sandbox_free(sb);
		return -1;
	}
	*out = sb;
	return 0;
}

/*
 * The file-system ids (setfsuid/setfsgid) are the calling thread's own, and
 * threads started meanwhile inherit them.  So the threads the queue starts
 * make every file as the user, and keep doing so when this thread switches
 * back to bind and read keys as root; and, unlike with the effective ids,
 * they keep the capabilities that the final setgroups/setgid/setuid (which
 * glibc runs on every thread) needs.
 */
void
sandbox_as_user(struct sandbox *sb, bool on)
{
	if (!sandbox_switches(sb))
		return;
	/* setfsuid() returns the previous id and cannot report a failure: check. */
	if (on) {
		setfsgid(sb->gid);
		setfsuid(sb->uid);
		if ((uid_t)setfsuid((uid_t)-1) != sb->uid || (gid_t)setfsgid((gid_t)-1) != sb->gid)
			fatalx("%s: cannot switch to user %s", __func__, sb->user);
	} else {
		setfsuid(0);
		setfsgid(sb->start_egid);
		if ((uid_t)setfsuid((uid_t)-1) != 0)
			fatalx("%s: cannot switch back to root", __func__);
	}
}

/* setgroups, setgid, setuid to the user, then prove there is no way back. */
static int
sandbox_switch(struct sandbox *sb, struct buf *err)
{
	if (setgroups(sb->ngroups, sb->groups) == -1 || setgid(sb->gid) == -1 ||
	    setuid(sb->uid) == -1) {
		buf_printf(err, "cannot switch to user '%s' (uid %u): %s\n", sb->user,
		    (unsigned)sb->uid, strerror(errno));
		return -1;
	}
	if (getuid() != sb->uid || geteuid() != sb->uid || getgid() != sb->gid ||
	    getegid() != sb->gid)
		fatalx("%s: still not user %s after setuid", __func__, sb->user);
	if (setuid(0) != -1 || seteuid(0) != -1 || (sb->gid != 0 && setgid(0) != -1))
		fatalx("%s: root could be regained after switching to %s", __func__, sb->user);
#ifdef RELAY_SANITIZE
	/* The switch made us non-dumpable: LeakSanitizer's ptrace at exit needs it back. */
	prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
#endif
	return 0;
}

/*
 * Started without root but with capabilities (systemd's AmbientCapabilities=
 * CAP_NET_BIND_SERVICE, used to bind 587): the listeners are bound, so give
 * them all up, ambient ones too.
 */
static int
sandbox_drop_caps(struct buf *err)
{
	struct __user_cap_header_struct hdr;
	struct __user_cap_data_struct data[2];

	memset(&hdr, 0, sizeof(hdr));
	memset(data, 0, sizeof(data));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	(void)prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);   /* EINVAL before 4.3 */
	if (syscall(SYS_capset, &hdr, data) != 0) {
		buf_printf(err, "cannot drop capabilities: %s\n", strerror(errno));
		return -1;
	}
	return 0;
}

int
sandbox_drop(struct sandbox *sb, struct buf *err)
{
	struct log_line l;

	if (sb->do_switch && sandbox_switch(sb, err) != 0)
		return -1;
	if (!sb->do_switch && sandbox_drop_caps(err) != 0)
		return -1;
	if (sandbox_seccomp_install(err) != 0)
		return -1;
	log_begin(&l, LOG_NOTICE, "sandbox");
	log_kv(&l, "user", sb->do_switch ? sb->user : NULL);
	log_kvu(&l, "uid", (uint64_t)getuid());
	log_kv(&l, "no_new_privs", "yes");
	log_kv(&l, "seccomp", "yes");
	log_kv(&l, "landlock", sb->landlock ? "yes" : "no");
	if (sb->landlock)
		log_kvi(&l, "landlock_abi", sb->landlock_abi);
	log_end(&l);
	return 0;
}

static bool
sandbox_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

int
sandbox_reload_check(const struct sandbox *sb, const struct conf *c, struct buf *err)
{
	if (sb == NULL)
		return 0;
	if (sb->do_switch && !sandbox_same(sb->user, c->user)) {
		buf_printf(err, "user: changed from '%s' to '%s': a new user needs a restart",
		    sb->user, c->user);
		return -1;
	}
	if (sb->landlock && !sandbox_same(sb->log_file, c->log_file)) {
		buf_printf(err, "log_file: changed from '%s' to '%s': the sandbox fixes file "
		    "paths at start; a new log file needs a restart",
		    sb->log_file != NULL ? sb->log_file : "-",
		    c->log_file != NULL ? c->log_file : "-");
		return -1;
	}
	return 0;
}

int
sandbox_check_conf(const struct conf *c, struct buf *warn, struct buf *err)
{
	struct sandbox sb;
	const struct { const char *key, *path; } files[] = {
		{ "config", c->path },
		{ "submit.tls_cert", c->submit.tls_cert },
		{ "submit.tls_key", c->submit.tls_key },
		{ "submit.sasl_db", c->submit.sasl_db },
		{ "submit.senders", c->submit.senders },
		{ "submit.senders_ldap.bind_password_file", c->submit.senders_ldap.bind_password_file },
		{ "deliver.ca_file", c->deliver.ca_file },
	};
	const char *why;
	bool root = geteuid() == 0;
	size_t i;
	int rc;

	memset(&sb, 0, sizeof(sb));
	rc = sandbox_resolve(&sb, c, root, err);
	if (rc != 0) {
		if (!root)
			buf_printf(warn, "%s: warning: user '%s' does not exist: started as root, "
			    "relayd would refuse to start\n", c->path, c->user);
		sandbox_free_user(&sb);
		return root ? -1 : 0;
	}
	for (i = 0; i < RELAY_ARRAY_LEN(files); i++) {
		if (files[i].path == NULL || sandbox_user_can_read(&sb, files[i].path, &why) == 0)
			continue;
		buf_printf(warn, "%s: warning: %s '%s' will not be readable by user '%s' "
		    "(%s): a reload (SIGHUP) would fail; make it group-readable by a group "
		    "of '%s'\n", c->path, files[i].key, files[i].path, c->user, why, c->user);
	}
	for (i = 0; i < c->dkim.nkeys; i++) {
		if (sandbox_user_can_read(&sb, c->dkim.keys[i].key, &why) == 0)
			continue;
		buf_printf(warn, "%s: warning: dkim.keys[%zu].key '%s' will not be readable by "
		    "user '%s' (%s): a reload (SIGHUP) would fail; make it group-readable by a "
		    "group of '%s'\n", c->path, i, c->dkim.keys[i].key, c->user, why, c->user);
	}
	for (i = 0; i < sandbox_nsasl_paths; i++) {
		const char *p = conf_sasl_option(c, sandbox_sasl_paths[i].option);

		if (p == NULL || sandbox_user_can(&sb, p, sandbox_sasl_paths[i].want, &why) == 0)
			continue;
		buf_printf(warn, "%s: warning: submit.sasl_options.%s '%s' will not be %s by "
		    "user '%s' (%s): AUTH would fail with 454; give a group of '%s' access\n",
		    c->path, sandbox_sasl_paths[i].option, p,
		    sandbox_sasl_paths[i].want == R_OK ? "readable" : "writable", c->user, why,
		    c->user);
	}
	sandbox_free_user(&sb);
	return 0;
}
