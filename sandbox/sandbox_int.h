/*
 * sandbox_int.h - the sandbox module's private state, shared by
 * sandbox_priv.c (the user switch), sandbox_landlock.c and sandbox_seccomp.c.
 */
#ifndef RELAY_SANDBOX_INT_H
#define RELAY_SANDBOX_INT_H

#include "sandbox/sandbox.h"

struct sandbox {
	char *user;             /* conf `user` at start */
	uid_t uid;              /* the account's ids, or ours when not switching */
	gid_t gid;
	gid_t *groups;          /* its supplementary groups (getgrouplist) */
	size_t ngroups;
	gid_t start_egid;       /* to switch back after sandbox_as_user(true) */
	bool do_switch;         /* started as root: switch to uid */
	bool landlock;          /* a Landlock domain is in force */
	int landlock_abi;
	char *log_file;         /* at start, for sandbox_reload_check() */
};

/* The submit.sasl_options that name a file relayd uses after start-up, and
 * what the user needs on it (R_OK, or W_OK for a socket to connect to). */
struct sandbox_sasl_path {
	const char *option;
	int want;
};
extern const struct sandbox_sasl_path sandbox_sasl_paths[];
extern const size_t sandbox_nsasl_paths;

#endif
