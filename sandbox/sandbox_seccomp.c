/*
 * sandbox_seccomp.c - the seccomp filter: a deny-list of the system calls
 * relayd never makes (running programs, debugging other processes, mounts,
 * kernel modules, kexec, reboot, swap, BPF, keyrings, namespaces, changing
 * ids or the clock ..., and clone() with namespace flags).  The default is to allow, so a library update that
 * starts using a new call cannot break relayd; a denied call kills the whole
 * process (SECCOMP_RET_KILL_PROCESS), and the kernel logs it (audit).
 * Loaded after the switch to the user, on every thread (TSYNC).
 */
#include "sandbox/sandbox_int.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

#include <seccomp.h>

#include "common/util.h"

static const char *const sandbox_denied[] = {
	/* running programs */
#ifndef RELAY_SANITIZE          /* ASan runs its symbolizer, LSan ptraces us at exit */
	"execve", "ptrace",
#endif
	"execveat", "uselib",
	/* other processes' memory */
	"process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
	/* mounts and the root */
	"mount", "umount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
	"fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
	/* the kernel itself */
	"init_module", "finit_module", "delete_module", "create_module",
	"kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "bpf",
	"perf_event_open", "userfaultfd", "iopl", "ioperm", "acct", "quotactl",
	"quotactl_fd", "syslog", "lookup_dcookie", "nfsservctl", "vhangup",
	"_sysctl", "sethostname", "setdomainname",
	/* keyrings */
	"keyctl", "add_key", "request_key",
	/* execution domain, namespaces, file handles */
	"personality", "unshare", "setns", "open_by_handle_at", "name_to_handle_at",
	/* ids and capabilities: the switch is done */
	"setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
	"setfsuid", "setfsgid", "setgroups", "capset",
	/* the clock */
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
};

/* clone() flags that make namespaces: unshare(2) by another name. */
static const unsigned long sandbox_clone_denied[] = {
	CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWUTS,
	CLONE_NEWIPC, CLONE_NEWCGROUP,
};

int
sandbox_seccomp_install(struct buf *err)
{
	scmp_filter_ctx ctx;
	size_t i;
	int rc = 0, nr;

	if ((ctx = seccomp_init(SCMP_ACT_ALLOW)) == NULL) {
		buf_puts(err, "seccomp: cannot create a filter\n");
		return -1;
	}
	/* no_new_privs is set already (sandbox_restrict_fs); TSYNC: every thread. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1)) != 0 ||
	    (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) != 0 ||
	    (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1)) != 0) {
		buf_printf(err, "seccomp: attributes: %s\n", strerror(-rc));
		goto out;
	}
	for (i = 0; i < RELAY_ARRAY_LEN(sandbox_denied); i++) {
		/* A call this architecture does not have needs no rule. */
		if ((nr = seccomp_syscall_resolve_name(sandbox_denied[i])) == __NR_SCMP_ERROR)
			continue;
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, nr, 0)) != 0) {
			buf_printf(err, "seccomp: rule for %s: %s\n", sandbox_denied[i],
			    strerror(-rc));
			goto out;
		}
	}
	/*
	 * clone3() passes its flags in memory, out of a filter's reach: it gets
	 * ENOSYS, and glibc (2.34+) falls back to clone(), whose flags we see.
	 */
	for (i = 0; i < RELAY_ARRAY_LEN(sandbox_clone_denied); i++) {
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_KILL_PROCESS, SCMP_SYS(clone), 1,
		    SCMP_A0(SCMP_CMP_MASKED_EQ, sandbox_clone_denied[i],
		    sandbox_clone_denied[i]))) != 0) {
			buf_printf(err, "seccomp: rule for clone: %s\n", strerror(-rc));
			goto out;
		}
	}
	if ((nr = seccomp_syscall_resolve_name("clone3")) != __NR_SCMP_ERROR &&
	    (rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0)) != 0) {
		buf_printf(err, "seccomp: rule for clone3: %s\n", strerror(-rc));
		goto out;
	}
	if ((rc = seccomp_load(ctx)) != 0)
		buf_printf(err, "seccomp: cannot load the filter: %s\n", strerror(-rc));
out:
	seccomp_release(ctx);
	return rc == 0 ? 0 : -1;
}
