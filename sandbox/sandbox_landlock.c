/*
 * sandbox_landlock.c - no_new_privs and the Landlock ruleset: after start-up
 * relayd may use only the queue (everything), the log's directory (create and
 * append), the control socket's directory, the directories of its
 * configuration and of the files it names (read), and the system files its
 * libraries read (resolver, TLS trust store, SASL plugins, shared libraries).
 *
 * Directories rather than files are allowed, so that a certificate renewed
 * by replacing the file (certbot, an editor's rename) is still readable on
 * SIGHUP.  The paths are fixed at start: a reload that names a file in a
 * directory the start did not allow fails with "Permission denied"
 * (event=reload_failed), and a restart picks it up.  Raw system calls: glibc
 * has no wrappers.  Where the kernel lacks Landlock ABI 2 (Linux 5.19; ABI 1
 * refuses every rename between directories, which the queue does), relayd
 * logs event=landlock_unavailable once and goes on.
 */
#include "sandbox/sandbox_int.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/landlock.h>

#include "common/log.h"
#include "common/util.h"

#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER	(1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE	(1ULL << 14)
#endif
#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION	(1U << 0)
#endif

#define LL_FILE_RIGHTS	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | \
    LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE)
#define LL_ABI1_RIGHTS	((1ULL << 13) - 1)

/*
 * The system files relayd's libraries read after start-up.  /etc is granted
 * whole, read-only: a Landlock rule binds an inode, and the tools that edit
 * /etc/passwd, /etc/group or /etc/resolv.conf (useradd, groupadd,
 * resolvconf) write a new file and rename it over the old, so a rule on the
 * file itself stops matching after the first edit (getpwnam() then fails as
 * "no such user").  Unix permissions still keep /etc/shadow and the like
 * from relayd's user.
 */
static const char *const sandbox_system_read[] = {
	"/etc",                 /* resolv.conf, hosts, nsswitch.conf, passwd, group,
				   ssl/, sasl2/, ldap/ (libldap's ldap.conf) */
	"/run/systemd/resolve",                 /* where resolv.conf may point */
	"/usr/lib/ssl", "/usr/share/ca-certificates",
	"/usr/local/share/ca-certificates",     /* the trust store and its links */
	"/usr/lib", "/usr/local/lib", "/lib", "/lib64",
	"/usr/share/zoneinfo", "/dev/urandom", "/dev/random", "/dev/null",
	"/proc/self",
};

int
sandbox_landlock_abi(void)
{
	int abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);

	return abi < 0 ? 0 : abi;
}

static uint64_t
sandbox_rights(enum sandbox_fs access, uint64_t handled)
{
	switch (access) {
	case SANDBOX_FS_READ:
		return LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
	case SANDBOX_FS_APPEND:
		return LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_MAKE_REG;
	case SANDBOX_FS_SOCKET:
		return LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_REMOVE_FILE;
	case SANDBOX_FS_ALL:
		return handled & ~LANDLOCK_ACCESS_FS_EXECUTE;
	}
	return 0;
}

int
sandbox_landlock_apply(const struct sandbox_rule *rules, size_t n, struct buf *err)
{
	struct landlock_ruleset_attr attr;
	struct landlock_path_beneath_attr pb;
	struct stat st;
	int abi, rfd, fd;
	size_t i;

	if ((abi = sandbox_landlock_abi()) < 2) {
		buf_printf(err, abi == 0 ? "the kernel has no Landlock (Linux 5.13+, "
		    "enabled with lsm=landlock)" : "the kernel's Landlock is ABI %d, "
		    "relayd needs 2 (Linux 5.19+)", abi);
		return 1;
	}
	memset(&attr, 0, sizeof(attr));
	attr.handled_access_fs = LL_ABI1_RIGHTS | LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
	rfd = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
	if (rfd < 0) {
		buf_printf(err, "landlock_create_ruleset: %s", strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++) {
		if ((fd = open(rules[i].path, O_PATH | O_CLOEXEC)) == -1)
			continue;               /* not on this system: nothing to allow */
		memset(&pb, 0, sizeof(pb));
		pb.parent_fd = fd;
		pb.allowed_access = sandbox_rights(rules[i].access, attr.handled_access_fs) &
		    attr.handled_access_fs;
		if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
			pb.allowed_access &= LL_FILE_RIGHTS;
		if (pb.allowed_access != 0 && syscall(SYS_landlock_add_rule, rfd,
		    LANDLOCK_RULE_PATH_BENEATH, &pb, 0) != 0) {
			buf_printf(err, "landlock_add_rule %s: %s", rules[i].path, strerror(errno));
			close(fd);
			close(rfd);
			return -1;
		}
		close(fd);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    syscall(SYS_landlock_restrict_self, rfd, 0) != 0) {
		buf_printf(err, "landlock_restrict_self: %s", strerror(errno));
		close(rfd);
		return -1;
	}
	close(rfd);
	return 0;
}

/* The directory of path, and that of the file it resolves to if that differs. */
static void
sandbox_add_dirs(struct sandbox_rule **v, size_t *n, char ***strs, size_t *ns,
    const char *path, enum sandbox_fs access)
{
	char *copy, *real;
	char *cands[2];
	size_t i;

	if (path == NULL || path[0] == '\0' || strcmp(path, "-") == 0)
		return;
	copy = xstrdup(path);
	cands[0] = xstrdup(dirname(copy));
	free(copy);
	cands[1] = NULL;
	if ((real = realpath(path, NULL)) != NULL) {
		cands[1] = xstrdup(dirname(real));
		free(real);
	}
	for (i = 0; i < 2; i++) {
		if (cands[i] == NULL)
			continue;
		*v = xrealloc(*v, (*n + 1) * sizeof(**v));
		(*v)[*n].path = cands[i];
		(*v)[(*n)++].access = access;
		*strs = xrealloc(*strs, (*ns + 1) * sizeof(**strs));
		(*strs)[(*ns)++] = cands[i];
	}
}

int
sandbox_restrict_fs(struct sandbox *sb, const struct conf *c, struct buf *err)
{
	struct sandbox_rule *v = NULL;
	char **strs = NULL;
	struct buf why = BUF_INIT;
	size_t i, n = 0, ns = 0;
	int rc;

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		buf_printf(err, "prctl(PR_SET_NO_NEW_PRIVS): %s\n", strerror(errno));
		return -1;
	}
	v = xcalloc(RELAY_ARRAY_LEN(sandbox_system_read) + 1, sizeof(*v));
	for (i = 0; i < RELAY_ARRAY_LEN(sandbox_system_read); i++) {
		v[n].path = sandbox_system_read[i];
		v[n++].access = SANDBOX_FS_READ;
	}
	v[n].path = "/dev/null";
	v[n++].access = SANDBOX_FS_APPEND;
	v = xrealloc(v, (n + 1) * sizeof(*v));
	v[n].path = c->queue_dir;
	v[n++].access = SANDBOX_FS_ALL;
	sandbox_add_dirs(&v, &n, &strs, &ns, c->path, SANDBOX_FS_READ);
	sandbox_add_dirs(&v, &n, &strs, &ns, c->submit.tls_cert, SANDBOX_FS_READ);
	sandbox_add_dirs(&v, &n, &strs, &ns, c->submit.tls_key, SANDBOX_FS_READ);
	sandbox_add_dirs(&v, &n, &strs, &ns, c->submit.sasl_db, SANDBOX_FS_READ);
	sandbox_add_dirs(&v, &n, &strs, &ns, c->submit.senders, SANDBOX_FS_READ);
	for (i = 0; i < sandbox_nsasl_paths; i++)
		sandbox_add_dirs(&v, &n, &strs, &ns,
		    conf_sasl_option(c, sandbox_sasl_paths[i].option), SANDBOX_FS_READ);
	sandbox_add_dirs(&v, &n, &strs, &ns, c->submit.senders_ldap.bind_password_file,
	    SANDBOX_FS_READ);
	sandbox_add_dirs(&v, &n, &strs, &ns, c->deliver.ca_file, SANDBOX_FS_READ);
	for (i = 0; i < c->dkim.nkeys; i++)
		sandbox_add_dirs(&v, &n, &strs, &ns, c->dkim.keys[i].key, SANDBOX_FS_READ);
	sandbox_add_dirs(&v, &n, &strs, &ns, c->log_file, SANDBOX_FS_APPEND);
	sandbox_add_dirs(&v, &n, &strs, &ns, c->control_socket, SANDBOX_FS_SOCKET);
#if defined(RELAY_TSAN) || defined(RELAY_SANITIZE)
	/* A sanitizer build: its symbolizer reads relayd's own file for a report. */
	sandbox_add_dirs(&v, &n, &strs, &ns, "/proc/self/exe", SANDBOX_FS_READ);
#endif

	rc = sandbox_landlock_apply(v, n, &why);
	for (i = 0; i < ns; i++)
		free(strs[i]);
	free(strs);
	free(v);
	if (rc == 1)
		log_event(LOG_WARNING, "landlock_unavailable", "reason", buf_cstr(&why), NULL);
	else if (rc < 0)
		buf_printf(err, "sandbox: %s\n", buf_cstr(&why));
	else {
		sb->landlock = true;
		sb->landlock_abi = sandbox_landlock_abi();
	}
	buf_free(&why);
	return rc < 0 ? -1 : 0;
}
