/* sysinfo(2) inside a system container, answered by the sysvisor-fs trap.
 *
 *   sysinfo_probe show     the figures, as key=value lines: what sysinfo, glibc's
 *                          sysconf(_SC_PHYS_PAGES) and get_phys_pages() say
 *   sysinfo_probe attack F bad buffers: NULL, a wild pointer, a read-only page, the
 *                          program's own code, a buffer running into an unmapped page,
 *                          and N rounds of a thread that unmaps the buffer (and maps the
 *                          read-only shared file F in its place) while another calls
 *                          sysinfo on it. Each must give EFAULT or a correct answer,
 *                          and nothing read-only may change.
 *   sysinfo_probe loop N   N sysinfo calls, then ns per call (the trap's cost)
 *   sysinfo_probe getpid N N getpid calls, then ns per call (an untrapped call)
 *
 * Built static at test time (tests/src/lib.rs, static_tool). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

static long raw_sysinfo(void *buf) { return syscall(SYS_sysinfo, buf); }

static const char *outcome(long rc) {
	if (rc == 0) return "ok";
	if (errno == EFAULT) return "EFAULT";
	return strerror(errno);
}

static int show(void) {
	struct sysinfo s;
	if (raw_sysinfo(&s) != 0) {
		perror("sysinfo");
		return 1;
	}
	printf("totalram=%lu\nfreeram=%lu\nsharedram=%lu\nbufferram=%lu\n", s.totalram, s.freeram,
	       s.sharedram, s.bufferram);
	printf("totalswap=%lu\nfreeswap=%lu\nmem_unit=%u\n", s.totalswap, s.freeswap, s.mem_unit);
	printf("uptime=%ld\nprocs=%u\nload1=%lu\n", s.uptime, s.procs, s.loads[0]);
	printf("total_bytes=%llu\n", (unsigned long long)s.totalram * s.mem_unit);
	printf("phys_pages=%ld\nget_phys_pages=%ld\npage_size=%ld\n", sysconf(_SC_PHYS_PAGES),
	       get_phys_pages(), sysconf(_SC_PAGESIZE));
	return 0;
}

struct race {
	char *volatile page;
	int fd;
	volatile int stop;
	long size;
};

/* Unmaps the buffer and maps the read-only file in its place, back and forth. */
static void *unmapper(void *arg) {
	struct race *r = arg;
	while (!r->stop) {
		char *p = r->page;
		munmap(p, r->size);
		mmap(p, r->size, PROT_READ, MAP_SHARED | MAP_FIXED, r->fd, 0);
		mmap(p, r->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
		     0);
	}
	return NULL;
}

static int attack(const char *file, long rounds) {
	long size = sysconf(_SC_PAGESIZE);
	struct sysinfo good;
	if (raw_sysinfo(&good) != 0) {
		perror("sysinfo");
		return 1;
	}
	long rc = raw_sysinfo(NULL);
	printf("null=%s\n", outcome(rc));
	rc = raw_sysinfo((void *)16);
	printf("wild=%s\n", outcome(rc));

	char *ro = mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	rc = raw_sysinfo(ro);
	int intact = 1;
	for (long i = 0; i < size; i++) intact &= ro[i] == 0;
	printf("readonly=%s\nreadonly_intact=%d\n", outcome(rc), intact);

	unsigned char code[128];
	memcpy(code, (void *)show, sizeof code);
	rc = raw_sysinfo((void *)show);
	printf("code=%s\ncode_intact=%d\n", outcome(rc), memcmp(code, (void *)show, sizeof code) == 0);

	/* A writable page followed by an unmapped one; the struct runs into the hole. */
	char *two = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(two + size, size);
	rc = raw_sysinfo(two + size - 8);
	printf("straddle=%s\n", outcome(rc));

	/* The race. */
	struct race r = {.size = size, .stop = 0};
	r.fd = open(file, O_RDONLY);
	if (r.fd < 0) {
		perror(file);
		return 1;
	}
	char before[64] = {0}, after[64] = {0};
	pread(r.fd, before, sizeof before - 1, 0);
	r.page = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	pthread_t t;
	pthread_create(&t, NULL, unmapper, &r);
	long ok = 0, efault = 0, other = 0, wrong = 0;
	for (long i = 0; i < rounds; i++) {
		rc = raw_sysinfo(r.page);
		if (rc == 0) {
			ok++;
		} else if (errno == EFAULT) {
			efault++;
		} else {
			other++;
			fprintf(stderr, "race: %s\n", strerror(errno));
		}
		/* A stable buffer still gets the right answer meanwhile. */
		struct sysinfo s;
		if (raw_sysinfo(&s) != 0 || s.totalram != good.totalram) wrong++;
	}
	r.stop = 1;
	pthread_join(t, NULL);
	pread(r.fd, after, sizeof after - 1, 0);
	printf("race_ok=%ld\nrace_efault=%ld\nrace_other=%ld\nrace_wrong=%ld\n", ok, efault, other,
	       wrong);
	printf("file_intact=%d\n", strcmp(before, after) == 0);
	return 0;
}

static int loop(long n, int getpid_only) {
	struct sysinfo s;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++) {
		if (getpid_only)
			syscall(SYS_getpid);
		else
			raw_sysinfo(&s);
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	double ns = (b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec);
	printf("ns_per_call=%.1f\n", ns / n);
	return 0;
}

int main(int argc, char **argv) {
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && strcmp(argv[1], "show") == 0) return show();
	if (argc >= 3 && strcmp(argv[1], "attack") == 0)
		return attack(argv[2], argc >= 4 ? atol(argv[3]) : 2000);
	if (argc >= 3 && strcmp(argv[1], "loop") == 0) return loop(atol(argv[2]), 0);
	if (argc >= 3 && strcmp(argv[1], "getpid") == 0) return loop(atol(argv[2]), 1);
	fprintf(stderr, "usage: %s show | attack FILE [ROUNDS] | loop N | getpid N\n", argv[0]);
	return 2;
}
