/* The latency of trapped mount calls as one container sees them: N pairs of a new tmpfs
 * mount and its umount on DIR, each pair timed. Built static by the e2e tests
 * (tests/tests/fairness.rs) and run inside a system container. Prints
 * "pairs=N", "p50_us=..", "p99_us=..", "max_us=.." lines (microseconds per pair), or "error=..." and
 * exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

static long now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000L + ts.tv_nsec / 1000;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: mountlat PAIRS DIR\n");
        return 2;
    }
    int n = atoi(argv[1]);
    if (n <= 0)
        return 2;
    long *lat = calloc(n, sizeof(long));
    for (int i = 0; i < n; i++) {
        long t0 = now_us();
        if (mount("t", argv[2], "tmpfs", 0, "size=64k") < 0) {
            printf("error=mount: %s\n", strerror(errno));
            return 1;
        }
        if (umount2(argv[2], 0) < 0) {
            printf("error=umount: %s\n", strerror(errno));
            return 1;
        }
        lat[i] = now_us() - t0;
    }
    qsort(lat, n, sizeof(long), cmp);
    printf("pairs=%d\np50_us=%ld\np99_us=%ld\nmax_us=%ld\n", n, lat[n / 2], lat[(n * 99) / 100],
           lat[n - 1]);
    return 0;
}
