#!/usr/bin/env bash
# The main job, on a fresh machine: build sysvisor-fs, mount the standalone (LXCFS-style)
# views, and show what a process in a cgroup limited to 256 MiB and one CPU sees, next to
# what the host sees. Everything it creates is removed on exit, even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it mounts and creates cgroups)" >&2; exit 1; }
bash scripts/install-deps.sh
cargo build --release -p sysvisor-fs

mnt=$(mktemp -d /tmp/sysvisor-demo.XXXXXX)
name=sysvisor-demo-$$
daemon=
cgdirs=()

cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    mountpoint -q "$mnt" && umount -l "$mnt" || true
    rmdir "$mnt" 2>/dev/null || true
    for d in "${cgdirs[@]}"; do rmdir "$d" 2>/dev/null || true; done
}
trap cleanup EXIT

target/release/sysvisor-fs mount "$mnt" &
daemon=$!
for _ in $(seq 100); do [ -e "$mnt/proc/meminfo" ] && break; sleep 0.05; done
[ -e "$mnt/proc/meminfo" ] || { echo "demo.sh: sysvisor-fs did not mount" >&2; exit 1; }

# A cgroup with 256 MiB of memory and a CFS quota of one CPU, on v1 or v2.
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
    d=/sys/fs/cgroup/$name
    echo "+memory +cpu" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
    mkdir "$d"; cgdirs+=("$d")
    echo $((256 << 20)) > "$d/memory.max"
    echo "100000 100000" > "$d/cpu.max"
    procs=("$d/cgroup.procs")
else
    mkdir /sys/fs/cgroup/memory/$name /sys/fs/cgroup/cpu/$name
    cgdirs+=(/sys/fs/cgroup/memory/$name /sys/fs/cgroup/cpu/$name)
    echo $((256 << 20)) > /sys/fs/cgroup/memory/$name/memory.limit_in_bytes
    echo 100000 > /sys/fs/cgroup/cpu/$name/cpu.cfs_period_us
    echo 100000 > /sys/fs/cgroup/cpu/$name/cpu.cfs_quota_us
    procs=(/sys/fs/cgroup/memory/$name/cgroup.procs /sys/fs/cgroup/cpu/$name/cgroup.procs)
fi

show() {
    unshare -m sh -c "
        for f in meminfo cpuinfo stat uptime loadavg; do mount --bind $mnt/proc/\$f /proc/\$f; done
        mount --bind $mnt/sys/devices/system/cpu/online /sys/devices/system/cpu/online
        free -m; echo; echo \"nproc (glibc, /sys/devices/system/cpu/online): \$(getconf _NPROCESSORS_ONLN)\"
        echo \"processors in cpuinfo: \$(grep -c ^processor /proc/cpuinfo)\"; echo \"uptime: \$(cat /proc/uptime)\""
}

echo "== the host"
show
echo
echo "== a process in cgroup $name (memory 256 MiB, CFS quota of one CPU)"
( for f in "${procs[@]}"; do echo $BASHPID > "$f"; done; show )
