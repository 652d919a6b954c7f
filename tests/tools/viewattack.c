/* The attacks on a container's views that busybox cannot make: open_tree and move_mount
 * (new mount API), built static by the e2e tests (tests/tests/viewlock.rs) and run inside
 * system containers. Each prints "ok" when the kernel or the trap let it through, else
 * "fail:<error>"; the exit status is 0 either way, the test reads what it printed.
 *
 *   viewattack move_attached PATH DEST   open_tree(PATH) (attached, no clone), move_mount to DEST
 *   viewattack move_opath PATH DEST      open(PATH, O_PATH), move_mount to DEST
 *   viewattack clone_shallow PATH DEST   open_tree(PATH, OPEN_TREE_CLONE) without AT_RECURSIVE,
 *                                        attached at DEST
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define OPEN_TREE_CLONE 1
#define MOVE_MOUNT_F_EMPTY_PATH 0x04

static int report(const char *what, long rc) {
    if (rc < 0)
        printf("fail:%s: %s\n", what, strerror(errno));
    else
        printf("ok\n");
    return 0;
}

static long move_to(int fd, const char *dest) {
    return syscall(SYS_move_mount, fd, "", AT_FDCWD, dest, MOVE_MOUNT_F_EMPTY_PATH);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: viewattack move_attached|move_opath|clone_shallow PATH DEST\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2], *dest = argv[3];
    int fd;
    if (strcmp(mode, "move_attached") == 0)
        fd = syscall(SYS_open_tree, AT_FDCWD, path, O_CLOEXEC);
    else if (strcmp(mode, "move_opath") == 0)
        fd = open(path, O_PATH | O_CLOEXEC);
    else if (strcmp(mode, "clone_shallow") == 0)
        fd = syscall(SYS_open_tree, AT_FDCWD, path, OPEN_TREE_CLONE | O_CLOEXEC);
    else
        return 2;
    if (fd < 0)
        return report("open", fd);
    return report("move_mount", move_to(fd, dest));
}
