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
