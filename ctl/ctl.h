/*
 * ctl.h - relayctl's internal interface: the command grammar table is
 * common/control_cmds.h (shared with relayd), relayctl.c checks the command
 * line against it; commands that run locally (audit) live in files of their own.
 */
#ifndef RELAY_CTL_H
#define RELAY_CTL_H

#include "conf/conf.h"

/* Exit codes: the contract with scripts. */
#define CTL_EXIT_OK     0
#define CTL_EXIT_ERROR  1
#define CTL_EXIT_USAGE  2

/* `relayctl audit ...`: argv starts after "audit"; conf may be NULL (-s was used).
 * Returns an exit code. */
int ctl_audit(const struct conf *conf, int argc, char **argv);

#endif
