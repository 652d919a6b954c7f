#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ from fs/tests/fixtures.

Run from anywhere: python3 fuzz/make_seeds.py. It overwrites the seeds it makes and leaves
other files in seeds/ alone. The header layouts are those of fuzz/src/lib.rs and of each
target's doc comment; keep them in step.
"""

import struct
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
FIX = FUZZ.parent / "fs" / "tests" / "fixtures"
SEEDS = FUZZ / "seeds"

MiB = 1 << 20


def fixture(rel):
    return (FIX / rel).read_bytes()


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def u8(v):
    return struct.pack("<B", v)


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def memory_info(limit=None, usage=0, swap_limit=None, swap_usage=0, stat=()):
    """MEMORY_INFO_LEN bytes: flags, limit, usage, swap limit, swap usage, 16 stat fields."""
    flags = (1 if limit is not None else 0) | (2 if swap_limit is not None else 0)
    stat = list(stat) + [0] * (16 - len(stat))
    return u8(flags) + u64(limit or 0) + u64(usage) + u64(swap_limit or 0) + u64(swap_usage) + b"".join(
        u64(v) for v in stat
    )


def cpu_set(cpus):
    """CPU_SET_LEN bytes: base, 64-bit mask."""
    base = min(cpus) if cpus else 0
    mask = 0
    for c in cpus:
        mask |= 1 << (c - base)
    return u16(base) + u64(mask)


def cpu_usage(user_ns=None, system_ns=0, per_cpu=None):
    """CPU_USAGE_LEN bytes: flags, user, system, per-CPU count, per-CPU seeds."""
    if user_ns is None:
        return bytes(1 + 8 + 8 + 1 + 8 + 8)
    flags = 1 | (2 if per_cpu else 0)
    n, pu, ps = per_cpu or (0, 0, 0)
    return u8(flags) + u64(user_ns) + u64(system_ns) + u8(n) + u64(pu) + u64(ps)


def io_stats(devices, unsorted=False):
    """IO_STATS_LEN bytes: count, then 4 slots (pick, major, minor, 6 figures)."""
    out = u8(len(devices) | (0x80 if unsorted else 0))
    for i in range(4):
        if i < len(devices):
            major, minor, figs = devices[i]
            out += u8(0x80) + u32(major) + u32(minor) + b"".join(u64(v) for v in figs)
        else:
            out += u8(i) + bytes(8 + 6 * 8)
    return out


# Texts-only targets: fixture files as they are.
def plain(target, files):
    for rel in files:
        write(target, rel.replace("/", "_"), fixture(rel))


plain("proc_cgroup", ["cgroup/v1/cgroup", "cgroup/v2/cgroup", "cgroup/hybrid/cgroup", "cgroup/v1-comounted/cgroup"])
write("proc_cgroup", "deleted_colons", b"0::/a:b/c (deleted)\n3:cpuset:/x:y\n")

PROC_CGROUPS = (
    b"#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
    b"cpuset\t4\t1\t1\ncpu\t2\t1\t1\ncpuacct\t2\t1\t1\nmemory\t6\t1\t1\npids\t0\t1\t1\n"
)
for name in ["v1", "v2", "hybrid", "v1-comounted"]:
    text = fixture(f"cgroup/{name}/mountinfo").replace(b"@ROOT@", b"/nonexistent/cgroup")
    write("mountinfo", name, text)
    write("mountinfo", name + "_with_proc_cgroups", text + b"\0" + PROC_CGROUPS)
write(
    "mountinfo",
    "escaped",
    b"40 31 0:38 /a\\040b /sys/fs/cgroup/my\\040mem rw - cgroup cgroup rw,memory,clone_children\n",
)

plain(
    "cgroup_v1",
    [
        "cgroup/v1/memory/parent/child/memory.stat",
        "cgroup/v1/memory/parent/child/memory.limit_in_bytes",
        "cgroup/v1-comounted/memory/memory.stat",
        "cgroup/v1/cpuset/parent/child/cpuset.cpus",
        "cgroup/v1-comounted/cpu,cpuacct/lxc/c1/cpuacct.usage_all",
        "cgroup/v1/cpuacct/parent/child/cpuacct.usage_percpu",
        "cgroup/v1/cpuacct/parent/child/cpuacct.stat",
        "cgroup/v1/blkio/parent/child/blkio.throttle.io_service_bytes",
        "cgroup/v1/cpu/parent/child/tasks",
        "cgroup/broken/v1/memory/garbage/memory.stat",
        "cgroup/broken/v1/blkio/garbage/blkio.throttle.io_serviced",
    ],
)
write(
    "cgroup_v1",
    "cfs_pair",
    fixture("cgroup/v1/cpu/parent/child/cpu.cfs_quota_us") + b"\0" + fixture("cgroup/v1/cpu/parent/child/cpu.cfs_period_us"),
)
write(
    "cgroup_v1",
    "blkio_pair",
    fixture("cgroup/v1/blkio/parent/child/blkio.throttle.io_serviced")
    + b"\0"
    + fixture("cgroup/v1/blkio/parent/child/blkio.throttle.io_service_bytes"),
)

plain(
    "cgroup_v2",
    [
        "cgroup/v2/machine.slice/ctr/cpu.max",
        "cgroup/v2/machine.slice/ctr/memory.max",
        "cgroup/v2/machine.slice/ctr/memory.stat",
        "cgroup/v2/machine.slice/ctr/cpu.stat",
        "cgroup/v2/machine.slice/ctr/io.stat",
        "cgroup/v2/machine.slice/ctr/cpuset.cpus.effective",
        "cgroup/broken/v2/garbage/io.stat",
        "cgroup/broken/v2/garbage/cpu.max",
    ],
)

# Render targets: header ++ host text.
STAT16 = [40 * MiB, 50 * MiB, 2 * MiB, 10 * MiB, 1 * MiB, 0, 30 * MiB, 10 * MiB, 20 * MiB, 30 * MiB, 0, 3 * MiB, 1 * MiB, 512 << 10, 256 << 10, 1 * MiB]
MEM_HEADERS = {
    "limited": memory_info(512 * MiB, 100 * MiB, 256 * MiB, 10 * MiB, STAT16),
    "swap_only": memory_info(None, 100 * MiB, 64 * MiB, 1 * MiB, STAT16),
    "mem_only": memory_info(1 << 40, 2 * MiB, None, 0, STAT16),
    "none": memory_info(),
}
for host in ["big4", "vm2"]:
    for hname, header in MEM_HEADERS.items():
        write("meminfo", f"{host}_{hname}", header + fixture(f"host/{host}/proc/meminfo"))
        write("swaps", f"{host}_{hname}", header + fixture(f"host/{host}/proc/swaps"))

for name, rel, cpus in [
    ("big4", "host/big4/proc/cpuinfo", [1, 3]),
    ("vm2", "host/vm2/proc/cpuinfo", [1]),
    ("arm64", "host/misc/cpuinfo.arm64", [0, 2]),
    ("ppc64", "host/misc/cpuinfo.ppc64", [1]),
    ("s390", "host/misc/cpuinfo.s390", [0]),
]:
    write("cpuinfo", name, cpu_set(cpus) + fixture(rel))

for host in ["big4", "vm2"]:
    text = fixture(f"host/{host}/proc/stat")
    write("stat", f"{host}_host_figures", cpu_set([1, 2]) + u8(0) + u16(100) + cpu_usage() + text)
    write("stat", f"{host}_spread", cpu_set([0, 1]) + u8(0) + u16(100) + cpu_usage(7_500_000_000, 2_500_000_000) + text)
    write(
        "stat",
        f"{host}_per_cpu",
        cpu_set([0, 1]) + u8(1) + u16(100) + cpu_usage(7_500_000_000, 2_500_000_000, (2, 4_000_000_000, 1_000_000_000)) + text,
    )

for host in ["big4", "vm2"]:
    text = fixture(f"host/{host}/proc/uptime")
    write("uptime", f"{host}_usage", u64(150_000) + u16(100) + u16(2) + u8(1) + u64(30_000_000_000) + text)
    write("uptime", f"{host}_scaled", u64(150_000) + u16(100) + u16(1) + u8(0) + u64(0) + text)
    write("loadavg", f"{host}", u64(2048 * 3 // 2) + u64(1024) + u64(100) + u32(2) + u32(17) + fixture(f"host/{host}/proc/loadavg"))

for name, rel in [
    ("big4", "host/big4/proc/diskstats"),
    ("vm2", "host/vm2/proc/diskstats"),
    ("k414", "host/misc/diskstats.14"),
    ("k418", "host/misc/diskstats.18"),
]:
    text = fixture(rel)
    devices = []
    for line in text.decode().splitlines()[:2]:
        f = line.split()
        devices.append((int(f[0]), int(f[1]), [10, 20, 1, 4096, 81920, 512]))
    write("diskstats", name, io_stats(devices) + text)
    write("diskstats", name + "_unsorted", io_stats(list(reversed(devices)), unsorted=True) + text)

plain(
    "cpulist",
    [
        "host/big4/sys/devices/system/cpu/online",
        "host/vm2/sys/devices/system/cpu/online",
        "cgroup/v1/cpuset/parent/child/cpuset.cpus",
        "cgroup/hybrid/cpuset/cpuset.effective_cpus",
        "cgroup/broken/v1/cpuset/garbage/cpuset.effective_cpus",
    ],
)
write("cpulist", "mixed", b"0-3,5,7-8,2,64-65\n")

STAT_TAIL = b"0 -1 4194560 1234 0 0 0 12 34 0 0 20 0 1 0 4321 12345678 456 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
write("proc_pid_stat", "plain", b"1234 (bash) S 1000 1234 1234 34816 1234 " + STAT_TAIL)
write("proc_pid_stat", "parens", b"77 (a) b) (c ) R 1 77 77 0 -1 " + STAT_TAIL)
write("proc_pid_stat", "newline_comm", b"78 (x\n) 1 2 3) D 2 78 78 0 -1 " + STAT_TAIL)

# ---- the control protocol, the mount trap and sysvisor-runc --------------------------------

CONTAINER = (
    b'{"id":"web","init_pid":4242,"uid_base":165536,"gid_base":165536,"id_count":65536,'
    b'"cgroup":"/docker/web","created_unix_ms":1764800000000}'
)
write("control_request", "ping", b'{"op":"ping"}\n')
write("control_request", "list", b'{"op":"list"}')
write("control_request", "register", b'{"op":"register","container":' + CONTAINER + b"}\n")
write("control_request", "unregister", b'{"op":"unregister","id":"web"}\n')
write("control_request", "unknown_op", b'{"op":"reboot"}\n')
write("control_request", "op_not_a_string", b'{"op":7}\n')
write("control_request", "answer_list", b'{"ok":true,"containers":[' + CONTAINER + b"]}\n")
write("control_request", "answer_error", b'{"ok":false,"error":"unknown container"}\n')

STATE = (
    b'{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":%d,"metadata":"",'
    b'"state":{"ociVersion":"1.0.2","id":"web","status":"%s","pid":4242,'
    b'"bundle":"/run/containerd/io.containerd.runtime.v2.task/moby/web",'
    b'"annotations":{"io.sysvisor.init":"systemd"}}}'
)
write("seccomp_state", "init", STATE % (4242, b"creating"))
write("seccomp_state", "exec", STATE % (4300, b"running"))
write("seccomp_state", "no_fds", b'{"pid":1,"state":{"id":"x"}}')
write("seccomp_state", "cut_short", (STATE % (4242, b"creating"))[:90])

# The mountinfo of a system container (as in fs/src/mounttrap/mountinfo.rs' tests).
CONTAINER_MOUNTINFO = b"""\
115 62 0:43 / / rw,relatime - overlay none rw,lowerdir=/l
116 115 0:46 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
119 115 0:49 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
120 116 0:40 /proc/meminfo /proc/meminfo ro,nosuid,nodev,noexec,noatime - fuse.sysvisor-fs sysvisor-fs rw,user_id=0
127 119 0:40 /sys/devices/system/cpu/online /sys/devices/system/cpu/online ro,nosuid,nodev,noexec,noatime - fuse.sysvisor-fs sysvisor-fs rw
66 116 0:46 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
68 116 0:6 /null /proc/keys rw,relatime - devtmpfs devtmpfs rw,size=1k
90 119 0:59 / /sys/firmware ro,relatime - tmpfs tmpfs ro
201 120 254:0 /x /proc/meminfo rw,relatime - ext4 /dev/vda rw
210 115 0:80 / /mnt\\040dir rw,nosuid,nodev,noexec,relatime - proc proc rw
211 210 0:40 /proc/meminfo /mnt\\040dir/meminfo ro,nosuid,nodev,noexec - fuse.sysvisor-fs sysvisor-fs rw
"""
write("mounttrap_mountinfo", "container_umount_meminfo", CONTAINER_MOUNTINFO + b"\0/\0/proc/meminfo")
write("mounttrap_mountinfo", "relative_dots", CONTAINER_MOUNTINFO + b"\0/tmp\0../proc/./sys/")
write("mounttrap_mountinfo", "escaped_mount_point", CONTAINER_MOUNTINFO + b"\0/mnt dir\0meminfo")

X86_64 = 0


def notification(arch, nr, args):
    """The mounttrap_policy header: architecture index, number, six arguments."""
    return u8(arch) + u32(nr) + b"".join(u64(a) for a in (list(args) + [0] * 6)[:6])


DOCKER_CONFIG = (FUZZ.parent / "runtime" / "tests" / "fixtures" / "docker-run.json").read_bytes()
STRINGS = b"\0".join([b"proc", b"/proc", b"proc", b"hidepid=2", b"sysfs", b"/sys/fs/cgroup", b""])
# mount("proc", "/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC, "hidepid=2")
write("mounttrap_policy", "mount_proc", notification(X86_64, 165, [0, 1, 2, 2 | 4 | 8, 3]) + DOCKER_CONFIG + b"\0" + STRINGS)
# mount("sysfs", "/sys", "sysfs", MS_RDONLY, NULL) with the old magic number
write("mounttrap_policy", "mount_sysfs_magic", notification(X86_64, 165, [4, 5, 4, 0xC0ED0001, 0]) + b"{}\0" + STRINGS)
# a bind mount: continued
write("mounttrap_policy", "bind", notification(X86_64, 165, [1, 5, 6, 4096, 0]) + b"{}\0" + STRINGS)
# umount2("/proc", MNT_DETACH)
write("mounttrap_policy", "umount2", notification(X86_64, 166, [1, 2]) + DOCKER_CONFIG + b"\0" + STRINGS)
# i386 umount("/sys/fs/cgroup")
write("mounttrap_policy", "i386_umount", notification(1, 22, [5]) + b"{}\0" + STRINGS)
# fsopen("proc", 0): ENOSYS
write("mounttrap_policy", "fsopen_proc", notification(X86_64, 430, [0, 0]) + b"{}\0" + STRINGS)
MIRRORS = (
    b'{"mounts":[{"destination":"/proc/meminfo","type":"bind","source":"/var/lib/sysvisor-fs/proc/meminfo",'
    b'"options":["rbind","ro"]}],"annotations":{"io.sysvisor.mirrors":'
    b'"{\\"mounts\\":[{\\"source\\":\\"/var/lib/sysvisor-fs/proc/sys\\",\\"target\\":\\"/proc/sys\\",\\"writable\\":true}]}"},'
    b'"linux":{"maskedPaths":["/proc/kcore","/sys/firmware"],"readonlyPaths":["/proc/bus","/proc/sys"]}}'
)
write("mounttrap_policy", "config_with_mirrors", notification(X86_64, 166, [1, 0]) + MIRRORS + b"\0" + STRINGS)

write("runtime_subuid", "installed", u8(16) + b"root:100000:65536\nsysvisor:231072:67108864\n\0sysvisor:231072:67108864\n")
write("runtime_subuid", "comments_and_bad_lines", u8(1) + b"# pool\n\nalice:100000:65536\nbad\nbob:x:1\nsysvisor:100000:300000\nsysvisor:131072:65536\n")
write("runtime_subuid", "near_the_top", u8(255) + b"sysvisor:4294901760:65536\nother:4294967295:1\n")

RUNTIME_MOUNTINFO = fixture("cgroup/hybrid/mountinfo").replace(b"@ROOT@", b"/sys/fs/cgroup") + (
    b"40 1 0:50 / /run/sysvisor/rootfs/web/root rw,relatime - overlay overlay "
    b"rw,lowerdir=/run/sysvisor/rootfs/web/lower/0:/run/a\\054b\\072c,upperdir=/var/lib/sysvisor/rootfs/web/upper,"
    b"workdir=/var/lib/sysvisor/rootfs/web/work\n"
    b"41 40 0:51 / /run/sysvisor/rootfs/web/root rw - overlay overlay rw,lowerdir+=/a,lowerdir+=/b\n"
    b"42 1 0:52 / /mnt/with\\040space rw shared:1 master:2 - ext4 /dev/vda1 rw\n"
    b"43 1 0:53 / /data rw - overlay overlay rw,lowerdir=/x::/y\n"
)
write("runtime_mountinfo", "hybrid_with_overlays", RUNTIME_MOUNTINFO)

for resource in ("cpu", "memory", "io"):
    write("pressure", f"vm2_{resource}", fixture(f"host/vm2/proc/pressure/{resource}"))
write("pressure", "some_only", b"some avg10=100.00 avg60=0.05 avg300=12.30 total=18446744073709551615\n")

write("slabinfo", "vm2_no_own", u16(0xFFFF) + fixture("host/vm2/proc/slabinfo"))
write("slabinfo", "vm2_empty_own", u16(0) + fixture("host/vm2/proc/slabinfo"))
OWN = b"slabinfo - version: 2.1\n# name x\ndentry 5 5 192 21 1 : tunables 0 0 0 : slabdata 1 1 0\n"
write("slabinfo", "vm2_own", u16(len(OWN)) + OWN + fixture("host/vm2/proc/slabinfo"))
