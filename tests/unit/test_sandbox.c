/*
 * test_sandbox.c - the sandbox's pieces: the permission-bit check that
 * relayd -n uses for another account, the seccomp deny-list (a child that
 * loads it and then calls execve is killed by SIGSYS), and the Landlock
 * ruleset (a child restricted to one directory gets EACCES elsewhere).
 * Each kernel-facing check runs in a forked child, so the test process
 * itself is never restricted.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"
#include "sandbox/sandbox.h"
#include "tests/unit/check.h"

static void
test_may_access(void)
{
	static const gid_t groups[] = { 50, 111 };   /* e.g. staff, ssl-cert */
	static const struct {
		uid_t owner; gid_t group; mode_t mode; uid_t uid; int want; bool ok;
	} rows[] = {
		/* a key only root reads */
		{ 0, 0, S_IFREG | 0600, 101, R_OK, false },
		/* the same key, group ssl-cert, of which the user is a member */
		{ 0, 111, S_IFREG | 0640, 101, R_OK, true },
		/* group-readable, but a group the user is not in */
		{ 0, 112, S_IFREG | 0640, 101, R_OK, false },
		/* the primary group */
		{ 0, 101, S_IFREG | 0640, 101, R_OK, true },
		/* owner bits apply to the owner, even when others may read */
		{ 101, 0, S_IFREG | 0044, 101, R_OK, false },
		{ 101, 0, S_IFREG | 0400, 101, R_OK, true },
		{ 0, 0, S_IFREG | 0644, 101, R_OK, true },
		{ 0, 0, S_IFREG | 0644, 101, W_OK, false },
		/* directories on the path need search (x) */
		{ 0, 0, S_IFDIR | 0700, 101, X_OK, false },
		{ 0, 0, S_IFDIR | 0711, 101, X_OK, true },
		{ 0, 111, S_IFDIR | 0750, 101, X_OK, true },
		/* root reads anything */
		{ 0, 0, S_IFREG | 0000, 0, R_OK, true },
	};
	size_t i;

	for (i = 0; i < RELAY_ARRAY_LEN(rows); i++) {
		struct stat st;

		memset(&st, 0, sizeof(st));
		st.st_uid = rows[i].owner;
		st.st_gid = rows[i].group;
		st.st_mode = rows[i].mode;
		CHECK_MSG(sandbox_may_access(&st, rows[i].uid, 101, groups, 2, rows[i].want) ==
		    rows[i].ok, "row %zu", i);
	}
}

/* Run fn in a child; its wait status. */
static int
in_child(int (*fn)(void *), void *arg)
{
	pid_t pid;
	int status;

	fflush(NULL);
	if ((pid = fork()) == -1)
		return -1;
	if (pid == 0)
		_exit(fn(arg));
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

static int
child_exec(void *arg)
{
	char *const argv[] = { "true", NULL };
	struct buf err = BUF_INIT;

	if (arg != NULL && sandbox_seccomp_install(&err) != 0) {
		fprintf(stderr, "%s", buf_cstr(&err));
		return 3;
	}
#ifdef RELAY_SANITIZE
	/* A sanitizer build allows execve (its symbolizer): try another denied call. */
	if (arg != NULL) {
		syscall(SYS_acct, NULL);
		return 4;
	}
#endif
	execv("/bin/true", argv);
	return 4;       /* execve failed without killing us */
}

/* A thread starts under the filter (clone3 gets ENOSYS, glibc falls back to clone). */
static void *
thread_main(void *arg)
{
	return arg;
}

static int
child_thread_then_clone_newuser(void *arg)
{
	struct buf err = BUF_INIT;
	pthread_t t;
	void *ret = NULL;

	if (sandbox_seccomp_install(&err) != 0)
		return 3;
	if (pthread_create(&t, NULL, thread_main, (void *)1) != 0 ||
	    pthread_join(t, &ret) != 0 || ret != (void *)1)
		return 5;
	if (arg == NULL)
		return 0;
	/* clone() into a new user namespace: killed (without the filter: two returns of 6). */
	syscall(SYS_clone, (unsigned long)(CLONE_NEWUSER | SIGCHLD), 0UL, 0UL, 0UL, 0UL);
	return 6;
}

static void
test_seccomp_allows_threads_and_kills_clone_newuser(void)
{
	int st;

	st = in_child(child_thread_then_clone_newuser, NULL);
	CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	st = in_child(child_thread_then_clone_newuser, "newuser");
	CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS, "status %#x", st);
}

static void
test_seccomp_kills_execve(void)
{
	int st;

	/* Without the filter the child runs /bin/true (so the check below means something). */
	st = in_child(child_exec, NULL);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	st = in_child(child_exec, "filter");
	CHECK_MSG(WIFSIGNALED(st) && WTERMSIG(st) == SIGSYS, "status %#x", st);
}

struct ll_dirs {
	char inside[64], outside[64];
};

/* 0: inside works and outside is refused with EACCES; else which step failed. */
static int
child_landlock(void *arg)
{
	struct ll_dirs *d = arg;
	struct sandbox_rule rule = { d->inside, SANDBOX_FS_ALL };
	struct buf err = BUF_INIT;
	char path[128];
	int fd;

	if (sandbox_landlock_apply(&rule, 1, &err) != 0) {
		fprintf(stderr, "landlock: %s\n", buf_cstr(&err));
		return 10;
	}
	snprintf(path, sizeof(path), "%s/new", d->inside);
	if ((fd = open(path, O_RDWR | O_CREAT, 0600)) == -1)
		return 11;
	close(fd);
	snprintf(path, sizeof(path), "%s/f", d->outside);
	if ((fd = open(path, O_RDONLY)) != -1 || errno != EACCES)
		return 12;
	snprintf(path, sizeof(path), "%s/new", d->outside);
	if ((fd = open(path, O_RDWR | O_CREAT, 0600)) != -1 || errno != EACCES)
		return 13;
	return 0;
}

static void
test_landlock_confines(void)
{
	struct ll_dirs d;
	char path[128];
	int st, fd;

	if (sandbox_landlock_abi() < 2) {
		printf("SKIP landlock: the kernel has no Landlock ABI 2 (abi %d)\n",
		    sandbox_landlock_abi());
		return;
	}
	snprintf(d.inside, sizeof(d.inside), "/tmp/test_sandbox-in-XXXXXX");
	snprintf(d.outside, sizeof(d.outside), "/tmp/test_sandbox-out-XXXXXX");
	if (mkdtemp(d.inside) == NULL || mkdtemp(d.outside) == NULL) {
		CHECK(!"mkdtemp");
		return;
	}
	snprintf(path, sizeof(path), "%s/f", d.outside);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	st = in_child(child_landlock, &d);
	CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
	/* The parent is not restricted: the file outside is still ours. */
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0);
	if (fd >= 0)
		close(fd);
	unlink(path);
	snprintf(path, sizeof(path), "%s/new", d.inside);
	unlink(path);
	rmdir(d.inside);
	rmdir(d.outside);
}

int
main(void)
{
	test_may_access();
	test_seccomp_kills_execve();
	test_seccomp_allows_threads_and_kills_clone_newuser();
	test_landlock_confines();
	return check_done();
}
