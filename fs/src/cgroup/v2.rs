//! cgroup v2 (unified hierarchy) file formats, and the readers of a v2 cgroup directory.
//!
//! The `parse_*` functions are pure: file contents in, figures out, [`ParseError`] on
//! anything unexpected, never a panic. The `read_*` functions read a cgroup directory.
//!
//! On v2 a controller is enabled per subtree: a cgroup whose parent does not enable
//! `memory` in `cgroup.subtree_control` has no `memory.*` files, and its memory is
//! charged to the nearest ancestor that has them. So the readers walk up from the
//! caller's cgroup to the first level that has the controller's files, and the root
//! cgroup (which has no `memory.max`, `cpu.max`, ...) simply imposes nothing.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::reader::{ensure_dir, min_limit, read_parse, read_parse_optional, tighter, walk_up};
pub use super::v1::parse_cpuset_list;
use super::v1::{device_entry, err, num, parse_device, parse_u64, show, sort_devices};
use super::{CgroupError, CpuQuota, CpuUsage, DeviceIo, MemoryInfo, MemoryStat, ParseError};

/// The file listing a v2 cgroup's threads.
pub const THREADS_FILE: &str = "cgroup.threads";

/// `memory.max`, `memory.swap.max`, ...: a number, or `max` (unlimited, `None`).
pub fn parse_max(text: &str) -> Result<Option<u64>, ParseError> {
    let mut it = text.split_ascii_whitespace();
    match (it.next(), it.next()) {
        (Some("max"), None) => Ok(None),
        (Some(v), None) => num(v).map(Some),
        (None, _) => Err(err("empty")),
        (Some(_), Some(extra)) => Err(err(format!("unexpected {}", show(extra)))),
    }
}

/// `cpu.max`: `$MAX $PERIOD` (`max 100000` is unlimited, `None`). A missing period means
/// the kernel default of 100000 µs.
pub fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, ParseError> {
    let mut it = text.split_ascii_whitespace();
    let (Some(max), period, None) = (it.next(), it.next(), it.next()) else {
        return Err(err("expected '$MAX $PERIOD'"));
    };
    let period_us = match period {
        Some(p) => num(p)?,
        None => 100_000,
    };
    if period_us == 0 {
        return Err(err("period 0"));
    }
    if max == "max" {
        return Ok(None);
    }
    Ok(Some(CpuQuota { quota_us: num(max)?, period_us }))
}

fn stat_field<'a>(s: &'a mut MemoryStat, key: &str) -> Option<&'a mut u64> {
    Some(match key {
        "anon" => &mut s.anon,
        "file" => &mut s.file,
        "shmem" => &mut s.shmem,
        "file_mapped" => &mut s.mapped_file,
        "file_dirty" => &mut s.dirty,
        "file_writeback" => &mut s.writeback,
        "active_anon" => &mut s.active_anon,
        "inactive_anon" => &mut s.inactive_anon,
        "active_file" => &mut s.active_file,
        "inactive_file" => &mut s.inactive_file,
        "unevictable" => &mut s.unevictable,
        "slab_reclaimable" => &mut s.slab_reclaimable,
        "slab_unreclaimable" => &mut s.slab_unreclaimable,
        "kernel_stack" => &mut s.kernel_stack,
        "pagetables" => &mut s.pagetables,
        "swapcached" => &mut s.swapcached,
        _ => return None,
    })
}

/// v2 `memory.stat` (already hierarchical). Keys an older kernel lacks stay 0; unknown
/// keys are ignored; a known key with a bad value, a line that is not `key value`, or a
/// file without any known key is malformed.
pub fn parse_memory_stat(text: &str) -> Result<MemoryStat, ParseError> {
    let mut stat = MemoryStat::default();
    let mut known = false;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(key) = f.next() else { continue };
        let (Some(val), None) = (f.next(), f.next()) else {
            return Err(err(format!("expected 'key value', got {}", show(line))));
        };
        if let Some(field) = stat_field(&mut stat, key) {
            *field = num(val)?;
            known = true;
        }
    }
    if !known {
        return Err(err("no known memory.stat key"));
    }
    Ok(stat)
}

/// v2 `cpu.stat`: `user_usec` and `system_usec`, in ns. v2 has no per-CPU figures.
pub fn parse_cpu_stat(text: &str) -> Result<CpuUsage, ParseError> {
    let (mut user, mut system) = (None, None);
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(key), Some(val)) = (f.next(), f.next()) else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(err(format!("expected 'key value', got {}", show(line))));
        };
        match key {
            "user_usec" => user = Some(num::<u64>(val)?.saturating_mul(1000)),
            "system_usec" => system = Some(num::<u64>(val)?.saturating_mul(1000)),
            _ => {}
        }
    }
    match (user, system) {
        (Some(user_ns), Some(system_ns)) => Ok(CpuUsage { user_ns, system_ns, per_cpu: None }),
        _ => Err(err("missing user_usec or system_usec")),
    }
}

/// v2 `io.stat`: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` per
/// device, sorted by (major, minor). Other keys (iocost, latency) are ignored.
pub fn parse_io_stat(text: &str) -> Result<Vec<DeviceIo>, ParseError> {
    let mut devices = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(dev) = f.next() else { continue };
        let d = device_entry(&mut devices, parse_device(dev)?);
        for kv in f {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| err(format!("expected key=value, got {}", show(kv))))?;
            let slot = match k {
                "rbytes" => &mut d.read_bytes,
                "wbytes" => &mut d.write_bytes,
                "dbytes" => &mut d.discard_bytes,
                "rios" => &mut d.read_ios,
                "wios" => &mut d.write_ios,
                "dios" => &mut d.discard_ios,
                _ => continue,
            };
            *slot = num(v)?;
        }
    }
    sort_devices(&mut devices);
    Ok(devices)
}

/// Calls `read` from `leaf` upward until it finds something. When the leaf lacks the file,
/// checks the leaf still exists, so a removed cgroup is an error and not its parent's data.
fn nearest<T>(
    dir: &mut PathBuf,
    top: &Path,
    mut read: impl FnMut(&mut PathBuf) -> Result<Option<T>, CgroupError>,
) -> Result<Option<T>, CgroupError> {
    walk_up(dir, top, |d, is_leaf| match read(d)? {
        Some(v) => Ok(ControlFlow::Break(v)),
        None => {
            if is_leaf {
                ensure_dir(d)?;
            }
            Ok(ControlFlow::Continue(()))
        }
    })
}

/// Memory of the v2 cgroup at `leaf`: usage and `memory.stat` from the nearest level with
/// `memory.current`, limits (`memory.max`, `memory.swap.max`) folded from there up to
/// `top`. `None` when no level below the root has the memory controller. Without
/// `memory.swap.current` (swap accounting off) `swap_limit` is `None`, `swap_usage` 0.
pub fn read_memory(leaf: PathBuf, top: &Path) -> Result<Option<MemoryInfo>, CgroupError> {
    let mut dir = leaf;
    let Some(usage) =
        nearest(&mut dir, top, |d| read_parse_optional(d, "memory.current", parse_u64))?
    else {
        return Ok(None);
    };
    let stat = read_parse(&mut dir, "memory.stat", parse_memory_stat)?;
    let swap_usage = read_parse_optional(&mut dir, "memory.swap.current", parse_u64)?;
    let mut limit = None;
    let mut swap_limit = None;
    walk_up(&mut dir, top, |d, _| {
        if let Some(l) = read_parse_optional(d, "memory.max", parse_max)? {
            limit = min_limit(limit, l);
        }
        if swap_usage.is_some() {
            if let Some(l) = read_parse_optional(d, "memory.swap.max", parse_max)? {
                swap_limit = min_limit(swap_limit, l);
            }
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    Ok(Some(MemoryInfo { limit, usage, swap_limit, swap_usage: swap_usage.unwrap_or(0), stat }))
}

/// The tightest `cpu.max` from the v2 cgroup at `leaf` up to `top`; levels without the
/// file (the root, subtrees without the cpu controller) impose nothing.
pub fn read_cpu_quota(leaf: PathBuf, top: &Path) -> Result<Option<CpuQuota>, CgroupError> {
    let mut dir = leaf;
    let mut best = None;
    walk_up(&mut dir, top, |d, is_leaf| {
        match read_parse_optional(d, "cpu.max", parse_cpu_max)? {
            Some(Some(q)) => best = tighter(best, q),
            Some(None) => {}
            None if is_leaf => ensure_dir(d)?,
            None => {}
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    Ok(best)
}

/// The effective cpuset of the v2 cgroup at `leaf`: `cpuset.cpus.effective`, else a
/// non-empty `cpuset.cpus`, at the nearest level that has one. `None` when no level has
/// either.
pub fn read_cpuset(leaf: PathBuf, top: &Path) -> Result<Option<Vec<u32>>, CgroupError> {
    let mut dir = leaf;
    nearest(&mut dir, top, |d| {
        for file in ["cpuset.cpus.effective", "cpuset.cpus"] {
            if let Some(cpus) = read_parse_optional(d, file, parse_cpuset_list)? {
                if !cpus.is_empty() {
                    return Ok(Some(cpus));
                }
            }
        }
        Ok(None)
    })
}

/// CPU time of the v2 cgroup at `leaf` from its `cpu.stat` (present in every cgroup, as
/// the core keeps these figures without the cpu controller). `None` only for a root
/// cgroup without `cpu.stat` (older kernels).
pub fn read_cpu_usage(leaf: PathBuf, top: &Path) -> Result<Option<CpuUsage>, CgroupError> {
    let mut dir = leaf;
    if dir.as_path() == top {
        return read_parse_optional(&mut dir, "cpu.stat", parse_cpu_stat);
    }
    read_parse(&mut dir, "cpu.stat", parse_cpu_stat).map(Some)
}

/// Block I/O of the v2 cgroup at `leaf`, from `io.stat` at the nearest level that has it.
/// `None` when no level has it.
pub fn read_io(leaf: PathBuf, top: &Path) -> Result<Option<Vec<DeviceIo>>, CgroupError> {
    let mut dir = leaf;
    nearest(&mut dir, top, |d| read_parse_optional(d, "io.stat", parse_io_stat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_values() {
        assert_eq!(parse_max("max\n"), Ok(None));
        assert_eq!(parse_max("1073741824\n"), Ok(Some(1 << 30)));
        assert_eq!(parse_max("18446744073709551615"), Ok(Some(u64::MAX)));
        for bad in ["", "\n", "maximum", "-1", "1 2", "18446744073709551616"] {
            assert!(parse_max(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(parse_cpu_max("max"), Ok(None));
        assert_eq!(
            parse_cpu_max("50000 100000\n"),
            Ok(Some(CpuQuota { quota_us: 50000, period_us: 100000 }))
        );
        assert_eq!(
            parse_cpu_max("200000"),
            Ok(Some(CpuQuota { quota_us: 200000, period_us: 100000 }))
        );
        for bad in ["", "1 2 3", "fast 100000", "max 0", "50000 x", "-1 100000"] {
            assert!(parse_cpu_max(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn memory_stat() {
        let text = "anon 1\nfile 2\nkernel 99\nkernel_stack 3\npagetables 4\nsec_pagetables 0\npercpu 5\n\
                    sock 0\nvmalloc 0\nshmem 6\nfile_mapped 7\nfile_dirty 8\nfile_writeback 9\n\
                    swapcached 10\ninactive_anon 11\nactive_anon 12\ninactive_file 13\nactive_file 14\n\
                    unevictable 15\nslab_reclaimable 16\nslab_unreclaimable 17\nslab 33\npgfault 1000\n";
        assert_eq!(
            parse_memory_stat(text),
            Ok(MemoryStat {
                anon: 1,
                file: 2,
                shmem: 6,
                mapped_file: 7,
                dirty: 8,
                writeback: 9,
                active_anon: 12,
                inactive_anon: 11,
                active_file: 14,
                inactive_file: 13,
                unevictable: 15,
                slab_reclaimable: 16,
                slab_unreclaimable: 17,
                kernel_stack: 3,
                pagetables: 4,
                swapcached: 10,
            })
        );
        for bad in ["", "total_rss 1\n", "anon\n", "anon x\n", "anon 1 2\n"] {
            assert!(parse_memory_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_stat() {
        let text = "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 0\n\
                    core_sched.force_idle_usec 0\n";
        assert_eq!(
            parse_cpu_stat(text),
            Ok(CpuUsage { user_ns: 2_000_000, system_ns: 1_000_000, per_cpu: None })
        );
        let huge = "user_usec 18446744073709551615\nsystem_usec 0\n";
        assert_eq!(parse_cpu_stat(huge).map(|u| u.user_ns), Ok(u64::MAX));
        for bad in ["", "usage_usec 1\n", "user_usec x\nsystem_usec 1\n", "garbage\n"] {
            assert!(parse_cpu_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn io_stat() {
        let text = "259:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=300 dios=3\n\
                    8:16 rbytes=10 wbytes=20 rios=4 wios=5 dbytes=0 dios=0 cost.usage=7 cost.wait=0\n\
                    8:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n";
        let d = parse_io_stat(text).unwrap();
        let keys: Vec<_> = d.iter().map(|d| (d.major, d.minor)).collect();
        assert_eq!(keys, vec![(8, 0), (8, 16), (259, 0)]);
        assert_eq!(
            d[2],
            DeviceIo {
                major: 259,
                minor: 0,
                read_ios: 1,
                write_ios: 2,
                discard_ios: 3,
                read_bytes: 100,
                write_bytes: 200,
                discard_bytes: 300
            }
        );
        assert_eq!(parse_io_stat(""), Ok(vec![]));
        for bad in ["garbage\n", "8:0 rbytes\n", "8:0 rbytes=x\n", "8 rbytes=1\n", "a:b\n"] {
            assert!(parse_io_stat(bad).is_err(), "{bad:?}");
        }
    }
}
