//! cgroup v1 file formats, and the readers of one v1 controller's directory.
//!
//! The `parse_*` functions are pure: file contents in, figures out, [`ParseError`] on
//! anything unexpected (never a panic: no indexing, checked or saturating arithmetic,
//! bounded allocation). The `read_*` functions read a cgroup directory (each file once)
//! and fold limits over ancestors up to the mount point with the helpers in the reader.
//! Some of the list formats here (`cpuset` lists, `tasks`) are shared with v2.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::reader::{
    ensure_dir, min_limit, read_optional, read_parse, read_parse_optional, tighter, walk_up,
};
use super::{CgroupError, CpuQuota, CpuUsage, DeviceIo, MemoryInfo, MemoryStat, ParseError};

/// v1 limits at or above this mean "unlimited". Writing -1 stores `PAGE_COUNTER_MAX`
/// pages, which reads back as 9223372036854771712 with 4 KiB pages (and a little less
/// with larger pages); anything from 2^62 up is treated the same.
pub const UNLIMITED_FROM: u64 = 1 << 62;

/// CPU numbers from this up are rejected in CPU lists: no kernel supports that many, and
/// it bounds what a garbage range such as `0-4294967295` can make us allocate.
pub const MAX_CPUS: u32 = 1 << 16;

/// The file listing a v1 cgroup's threads.
pub const TASKS_FILE: &str = "tasks";

/// The blkio statistics files, best first: (I/Os serviced, bytes serviced). The
/// `_recursive` variants include descendant cgroups, like v2 `io.stat` and the `total_*`
/// memory figures; the throttle files are kept by every kernel with blk-throttle, the
/// others only by the CFQ and BFQ schedulers.
pub const BLKIO_FILES: [(&str, &str); 5] = [
    ("blkio.throttle.io_serviced_recursive", "blkio.throttle.io_service_bytes_recursive"),
    ("blkio.throttle.io_serviced", "blkio.throttle.io_service_bytes"),
    ("blkio.io_serviced_recursive", "blkio.io_service_bytes_recursive"),
    ("blkio.io_serviced", "blkio.io_service_bytes"),
    ("blkio.bfq.io_serviced_recursive", "blkio.bfq.io_service_bytes_recursive"),
];

pub(super) fn err(reason: impl Into<String>) -> ParseError {
    ParseError(reason.into())
}

/// A token for an error message, cut short so garbage cannot make huge messages.
pub(super) fn show(tok: &str) -> String {
    let mut end = tok.len().min(40);
    while !tok.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}", &tok[..end])
}

pub(super) fn num<T: std::str::FromStr>(tok: &str) -> Result<T, ParseError> {
    tok.parse().map_err(|_| err(format!("not a number: {}", show(tok))))
}

/// The one token of a single-value file.
fn single(text: &str) -> Result<&str, ParseError> {
    let mut it = text.split_ascii_whitespace();
    match (it.next(), it.next()) {
        (Some(v), None) => Ok(v),
        (None, _) => Err(err("empty")),
        (Some(_), Some(extra)) => Err(err(format!("unexpected {}", show(extra)))),
    }
}

/// A file holding one unsigned number, e.g. `memory.usage_in_bytes`.
pub fn parse_u64(text: &str) -> Result<u64, ParseError> {
    num(single(text)?)
}

/// A v1 memory limit token: `None` when unlimited (-1 or at least [`UNLIMITED_FROM`]).
fn limit_token(tok: &str) -> Result<Option<u64>, ParseError> {
    if tok == "-1" {
        return Ok(None);
    }
    let v: u64 = num(tok)?;
    Ok((v < UNLIMITED_FROM).then_some(v))
}

/// `memory.limit_in_bytes` or `memory.memsw.limit_in_bytes`: `None` when unlimited.
pub fn parse_limit(text: &str) -> Result<Option<u64>, ParseError> {
    limit_token(single(text)?)
}

/// The kernel's own fold of limits over ancestors, from v1 `memory.stat`
/// (`hierarchical_memory_limit`, `hierarchical_memsw_limit`). `None` when absent or
/// unlimited. It also covers ancestors above a mount's root, which a walk cannot see.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HierarchicalLimits {
    pub memory: Option<u64>,
    pub memsw: Option<u64>,
}

fn stat_field<'a>(s: &'a mut MemoryStat, key: &str) -> Option<&'a mut u64> {
    Some(match key {
        "rss" => &mut s.anon,
        "cache" => &mut s.file,
        "shmem" => &mut s.shmem,
        "mapped_file" => &mut s.mapped_file,
        "dirty" => &mut s.dirty,
        "writeback" => &mut s.writeback,
        "active_anon" => &mut s.active_anon,
        "inactive_anon" => &mut s.inactive_anon,
        "active_file" => &mut s.active_file,
        "inactive_file" => &mut s.inactive_file,
        "unevictable" => &mut s.unevictable,
        "swapcached" => &mut s.swapcached,
        _ => return None,
    })
}

/// v1 `memory.stat`, hierarchical `total_*` keys preferred (the cgroup's own keys are
/// used only when the file has no `total_*` key at all).
///
/// v1 `memory.stat` has no slab, kernel stack or page table figures, so those fields
/// stay 0. Slab could be summed from `memory.kmem.slabinfo`, but that file does not split
/// reclaimable from unreclaimable slab, is costly for the kernel to produce, and is not
/// available on every kernel, so it is deliberately not read.
pub fn parse_memory_stat(text: &str) -> Result<MemoryStat, ParseError> {
    parse_memory_stat_with_limits(text).map(|(stat, _)| stat)
}

/// [`parse_memory_stat`] plus the hierarchical limits the same file states.
pub fn parse_memory_stat_with_limits(
    text: &str,
) -> Result<(MemoryStat, HierarchicalLimits), ParseError> {
    let mut total = MemoryStat::default();
    let mut local = MemoryStat::default();
    let mut hier = HierarchicalLimits::default();
    let mut any_total = false;
    let mut known = false;
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(key) = f.next() else { continue };
        let (Some(val), None) = (f.next(), f.next()) else {
            return Err(err(format!("expected 'key value', got {}", show(line))));
        };
        match key {
            "hierarchical_memory_limit" => hier.memory = limit_token(val)?,
            "hierarchical_memsw_limit" => hier.memsw = limit_token(val)?,
            _ => {
                let (stat, name, is_total) = match key.strip_prefix("total_") {
                    Some(name) => (&mut total, name, true),
                    None => (&mut local, key, false),
                };
                let Some(field) = stat_field(stat, name) else { continue };
                *field = num(val)?;
                any_total |= is_total;
            }
        }
        known = true;
    }
    if !known {
        return Err(err("no known memory.stat key"));
    }
    Ok((if any_total { total } else { local }, hier))
}

/// `cpu.cfs_quota_us`: `None` when unlimited (-1).
pub fn parse_cfs_quota(text: &str) -> Result<Option<u64>, ParseError> {
    let q: i64 = num(single(text)?)?;
    Ok(u64::try_from(q).ok())
}

/// `cpu.cfs_period_us` (never 0).
pub fn parse_cfs_period(text: &str) -> Result<u64, ParseError> {
    match parse_u64(text)? {
        0 => Err(err("period 0")),
        p => Ok(p),
    }
}

/// `cpu.cfs_quota_us` and `cpu.cfs_period_us` together; `None` when unlimited.
pub fn parse_cfs(quota: &str, period: &str) -> Result<Option<CpuQuota>, ParseError> {
    match parse_cfs_quota(quota)? {
        None => Ok(None),
        Some(quota_us) => Ok(Some(CpuQuota { quota_us, period_us: parse_cfs_period(period)? })),
    }
}

/// A CPU list such as `0-3,5` (`cpuset.cpus`, `cpuset.effective_cpus`, v2
/// `cpuset.cpus.effective`): ascending, without duplicates; empty text gives an empty list.
pub fn parse_cpuset_list(text: &str) -> Result<Vec<u32>, ParseError> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    for part in text.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (num::<u32>(lo)?, num::<u32>(hi)?),
            None => {
                let c = num::<u32>(part)?;
                (c, c)
            }
        };
        if lo > hi || hi >= MAX_CPUS {
            return Err(err(format!("bad CPU range {}", show(part))));
        }
        cpus.extend(lo..=hi);
        if cpus.len() > MAX_CPUS as usize {
            return Err(err("too many CPUs"));
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// A per-CPU list of numbers such as `cpuacct.usage_percpu_user` (index = CPU).
pub fn parse_percpu(text: &str) -> Result<Vec<u64>, ParseError> {
    let mut out = Vec::new();
    for tok in text.split_ascii_whitespace() {
        if out.len() >= MAX_CPUS as usize {
            return Err(err("too many CPUs"));
        }
        out.push(num(tok)?);
    }
    Ok(out)
}

/// `cpuacct.usage_all`: a `cpu user system` header, then `N user_ns system_ns` per CPU.
/// Gives (user, system) ns indexed by CPU number (CPUs not listed are zero).
pub fn parse_usage_all(text: &str) -> Result<Vec<(u64, u64)>, ParseError> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(first) = f.next() else { continue };
        if first == "cpu" {
            continue;
        }
        let (Some(user), Some(sys), None) = (f.next(), f.next(), f.next()) else {
            return Err(err(format!("expected 'cpu user system', got {}", show(line))));
        };
        let cpu: u32 = num(first)?;
        if cpu >= MAX_CPUS {
            return Err(err(format!("CPU {cpu} out of range")));
        }
        let cpu = cpu as usize;
        if out.len() <= cpu {
            out.resize(cpu + 1, (0, 0));
        }
        if let Some(slot) = out.get_mut(cpu) {
            *slot = (num(user)?, num(sys)?);
        }
    }
    Ok(out)
}

/// `cpuacct.stat`: (user, system) in USER_HZ ticks.
pub fn parse_cpuacct_stat(text: &str) -> Result<(u64, u64), ParseError> {
    let (mut user, mut system) = (None, None);
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        match (f.next(), f.next()) {
            (Some("user"), Some(v)) => user = Some(num(v)?),
            (Some("system"), Some(v)) => system = Some(num(v)?),
            (None, _) => {}
            _ => return Err(err(format!("unexpected {}", show(line)))),
        }
    }
    match (user, system) {
        (Some(u), Some(s)) => Ok((u, s)),
        _ => Err(err("missing user or system")),
    }
}

/// Which figure a blkio statistics file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkioUnit {
    /// `*io_serviced*`: I/O operations.
    Ios,
    /// `*io_service_bytes*`: bytes.
    Bytes,
}

/// `MAJ:MIN` of a block device.
pub(super) fn parse_device(tok: &str) -> Result<(u32, u32), ParseError> {
    let (maj, min) = tok.split_once(':').ok_or_else(|| err(format!("bad device {}", show(tok))))?;
    Ok((num(maj)?, num(min)?))
}

/// The entry for a device, created if new. Lines of one device come together, so the
/// last entry is tried first.
pub(super) fn device_entry(
    devices: &mut Vec<DeviceIo>,
    (major, minor): (u32, u32),
) -> &mut DeviceIo {
    let is = |d: &DeviceIo| d.major == major && d.minor == minor;
    let found = match devices.last() {
        Some(d) if is(d) => Some(devices.len() - 1),
        _ => devices.iter().position(is),
    };
    let pos = found.unwrap_or_else(|| {
        devices.push(DeviceIo { major, minor, ..DeviceIo::default() });
        devices.len() - 1
    });
    // In range: `pos` is an existing element's position or the element just pushed.
    &mut devices[pos]
}

/// Adds one blkio statistics file (`8:0 Read 123` lines, a final `Total N`) to `devices`.
/// Operations other than Read, Write and Discard (Sync, Async, Total) are ignored.
pub fn merge_blkio(
    text: &str,
    unit: BlkioUnit,
    devices: &mut Vec<DeviceIo>,
) -> Result<(), ParseError> {
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some(first) = f.next() else { continue };
        if first == "Total" {
            continue;
        }
        let (Some(op), Some(val), None) = (f.next(), f.next(), f.next()) else {
            return Err(err(format!("expected 'MAJ:MIN Op N', got {}", show(line))));
        };
        let dev = parse_device(first)?;
        let val: u64 = num(val)?;
        let d = device_entry(devices, dev);
        let slot = match (op, unit) {
            ("Read", BlkioUnit::Ios) => &mut d.read_ios,
            ("Write", BlkioUnit::Ios) => &mut d.write_ios,
            ("Discard", BlkioUnit::Ios) => &mut d.discard_ios,
            ("Read", BlkioUnit::Bytes) => &mut d.read_bytes,
            ("Write", BlkioUnit::Bytes) => &mut d.write_bytes,
            ("Discard", BlkioUnit::Bytes) => &mut d.discard_bytes,
            _ => continue,
        };
        *slot = val;
    }
    Ok(())
}

/// Sorts devices by (major, minor).
pub fn sort_devices(devices: &mut [DeviceIo]) {
    devices.sort_unstable_by_key(|d| (d.major, d.minor));
}

/// `blkio.throttle.io_serviced` and `blkio.throttle.io_service_bytes` (or the
/// non-throttle files, same format) merged per device, sorted by (major, minor).
pub fn parse_blkio_throttle(
    io_serviced: &str,
    io_service_bytes: &str,
) -> Result<Vec<DeviceIo>, ParseError> {
    let mut devices = Vec::new();
    merge_blkio(io_serviced, BlkioUnit::Ios, &mut devices)
        .map_err(|e| err(format!("io_serviced: {e}")))?;
    merge_blkio(io_service_bytes, BlkioUnit::Bytes, &mut devices)
        .map_err(|e| err(format!("io_service_bytes: {e}")))?;
    sort_devices(&mut devices);
    Ok(devices)
}

/// A thread list (`tasks`, v2 `cgroup.threads`): one id per line, appended to `out`.
pub fn parse_tasks_into(text: &str, out: &mut Vec<u32>) -> Result<(), ParseError> {
    for tok in text.split_ascii_whitespace() {
        out.push(num(tok)?);
    }
    Ok(())
}

/// Memory of the v1 cgroup at `leaf`, limits folded up to `top` (the mount point).
///
/// Reads `memory.usage_in_bytes`, `memory.stat`, `memory.memsw.usage_in_bytes` at the
/// leaf and `memory.limit_in_bytes` (plus `memory.memsw.limit_in_bytes`) at every level.
/// Without the memsw files (swap accounting off) `swap_limit` is `None` and
/// `swap_usage` 0. The walk's minimum is also capped by `memory.stat`'s
/// `hierarchical_*_limit`, which sees ancestors above the mount root.
pub fn read_memory(leaf: PathBuf, top: &Path) -> Result<MemoryInfo, CgroupError> {
    let mut dir = leaf;
    let usage = read_parse(&mut dir, "memory.usage_in_bytes", parse_u64)?;
    let (stat, hier) = read_parse(&mut dir, "memory.stat", parse_memory_stat_with_limits)?;
    let memsw_usage = read_parse_optional(&mut dir, "memory.memsw.usage_in_bytes", parse_u64)?;
    let mut limit = hier.memory;
    let mut memsw = hier.memsw;
    walk_up(&mut dir, top, |d, _| {
        limit = min_limit(limit, read_parse(d, "memory.limit_in_bytes", parse_limit)?);
        if memsw_usage.is_some() {
            if let Some(l) = read_parse_optional(d, "memory.memsw.limit_in_bytes", parse_limit)? {
                memsw = min_limit(memsw, l);
            }
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    let (swap_limit, swap_usage) = match memsw_usage {
        Some(mu) => (memsw.map(|m| m.saturating_sub(limit.unwrap_or(0))), mu.saturating_sub(usage)),
        None => (None, 0),
    };
    Ok(MemoryInfo { limit, usage, swap_limit, swap_usage, stat })
}

/// The tightest CFS quota from the v1 cgroup at `leaf` up to `top`. Levels without
/// `cpu.cfs_quota_us` (kernels without CFS bandwidth control) impose nothing.
pub fn read_cpu_quota(leaf: PathBuf, top: &Path) -> Result<Option<CpuQuota>, CgroupError> {
    let mut dir = leaf;
    let mut best = None;
    walk_up(&mut dir, top, |d, is_leaf| {
        match read_parse_optional(d, "cpu.cfs_quota_us", parse_cfs_quota)? {
            Some(Some(quota_us)) => {
                let period_us = read_parse(d, "cpu.cfs_period_us", parse_cfs_period)?;
                best = tighter(best, CpuQuota { quota_us, period_us });
            }
            Some(None) => {}
            None if is_leaf => ensure_dir(d)?,
            None => {}
        }
        Ok(ControlFlow::<()>::Continue(()))
    })?;
    Ok(best)
}

/// The effective cpuset of the v1 cgroup at `leaf`: `cpuset.effective_cpus`, or
/// `cpuset.cpus` on kernels without it (v1 keeps a child's cpus within its parent's).
pub fn read_cpuset(leaf: PathBuf) -> Result<Vec<u32>, CgroupError> {
    let mut dir = leaf;
    if let Some(cpus) = read_parse_optional(&mut dir, "cpuset.effective_cpus", parse_cpuset_list)? {
        return Ok(cpus);
    }
    read_parse(&mut dir, "cpuset.cpus", parse_cpuset_list)
}

fn ticks_to_ns(ticks: u64, clk_tck: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(clk_tck.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Splits `total` ns in the ratio `user:system`; all to user when both are 0.
fn split_ns(total: u64, user: u64, system: u64) -> (u64, u64) {
    let sum = u128::from(user) + u128::from(system);
    if sum == 0 {
        return (total, 0);
    }
    let u = u64::try_from(u128::from(total) * u128::from(user) / sum).unwrap_or(total);
    (u, total.saturating_sub(u))
}

fn totals(per_cpu: &[(u64, u64)]) -> (u64, u64) {
    per_cpu
        .iter()
        .fold((0u64, 0u64), |(u, s), &(cu, cs)| (u.saturating_add(cu), s.saturating_add(cs)))
}

/// CPU time of the v1 cgroup at `leaf` (hierarchical: cpuacct counts descendants).
///
/// Per-CPU user/system from `cpuacct.usage_all`, else `cpuacct.usage_percpu_user` and
/// `cpuacct.usage_percpu_sys`. Kernels before 4.7 have neither: then `cpuacct.stat`
/// (USER_HZ ticks, `clk_tck` per second) gives the user/system ratio, applied to
/// `cpuacct.usage` for the totals and to each `cpuacct.usage_percpu` entry.
pub fn read_cpu_usage(leaf: PathBuf, clk_tck: u64) -> Result<CpuUsage, CgroupError> {
    let mut dir = leaf;
    let per_cpu =
        if let Some(all) = read_parse_optional(&mut dir, "cpuacct.usage_all", parse_usage_all)? {
            all
        } else if let Some(user) =
            read_parse_optional(&mut dir, "cpuacct.usage_percpu_user", parse_percpu)?
        {
            let sys = read_parse(&mut dir, "cpuacct.usage_percpu_sys", parse_percpu)?;
            let n = user.len().max(sys.len());
            (0..n)
                .map(|i| (user.get(i).copied().unwrap_or(0), sys.get(i).copied().unwrap_or(0)))
                .collect()
        } else {
            let (ut, st) = read_parse(&mut dir, "cpuacct.stat", parse_cpuacct_stat)?;
            let (user_ns, system_ns) =
                match read_parse_optional(&mut dir, "cpuacct.usage", parse_u64)? {
                    Some(total) => split_ns(total, ut, st),
                    None => (ticks_to_ns(ut, clk_tck), ticks_to_ns(st, clk_tck)),
                };
            let per_cpu = read_parse_optional(&mut dir, "cpuacct.usage_percpu", parse_percpu)?
                .map(|v| v.into_iter().map(|t| split_ns(t, ut, st)).collect());
            return Ok(CpuUsage { user_ns, system_ns, per_cpu });
        };
    let (user_ns, system_ns) = totals(&per_cpu);
    Ok(CpuUsage { user_ns, system_ns, per_cpu: Some(per_cpu) })
}

/// Block I/O of the v1 cgroup at `leaf`, from the first pair of [`BLKIO_FILES`] present
/// (a missing bytes file leaves the byte counts 0). `None` when the cgroup has no blkio
/// statistics file at all (kernels without blk-throttle, CFQ or BFQ).
pub fn read_io(leaf: PathBuf) -> Result<Option<Vec<DeviceIo>>, CgroupError> {
    let mut dir = leaf;
    for (ios_file, bytes_file) in BLKIO_FILES {
        let Some(text) = read_optional(&mut dir, ios_file)? else { continue };
        let mut devices = Vec::new();
        merge_blkio(&text, BlkioUnit::Ios, &mut devices).map_err(|e| e.at(&dir.join(ios_file)))?;
        if let Some(text) = read_optional(&mut dir, bytes_file)? {
            merge_blkio(&text, BlkioUnit::Bytes, &mut devices)
                .map_err(|e| e.at(&dir.join(bytes_file)))?;
        }
        sort_devices(&mut devices);
        return Ok(Some(devices));
    }
    ensure_dir(&dir)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_limits() {
        assert_eq!(parse_u64("123\n"), Ok(123));
        assert!(parse_u64("").is_err());
        assert!(parse_u64("1 2").is_err());
        assert!(parse_u64("-5").is_err());
        assert!(parse_u64("99999999999999999999999").is_err());
        assert_eq!(parse_limit("9223372036854771712\n"), Ok(None));
        assert_eq!(parse_limit("9223372036854775807"), Ok(None));
        assert_eq!(parse_limit("4611686018427387904"), Ok(None));
        assert_eq!(parse_limit("4611686018427387903"), Ok(Some(4611686018427387903)));
        assert_eq!(parse_limit("-1"), Ok(None));
        assert_eq!(parse_limit("1073741824"), Ok(Some(1 << 30)));
        assert!(parse_limit("lots").is_err());
    }

    #[test]
    fn memory_stat_prefers_total() {
        let text = "cache 1\nrss 2\nshmem 3\nmapped_file 4\ndirty 5\nwriteback 6\nswap 0\n\
                    hierarchical_memory_limit 1073741824\nhierarchical_memsw_limit 9223372036854771712\n\
                    total_cache 10\ntotal_rss 20\ntotal_rss_huge 0\ntotal_shmem 30\ntotal_mapped_file 40\n\
                    total_dirty 50\ntotal_writeback 60\ntotal_swapcached 70\ntotal_inactive_anon 80\n\
                    total_active_anon 90\ntotal_inactive_file 100\ntotal_active_file 110\n\
                    total_unevictable 120\n";
        let (s, h) = parse_memory_stat_with_limits(text).unwrap();
        assert_eq!(
            s,
            MemoryStat {
                anon: 20,
                file: 10,
                shmem: 30,
                mapped_file: 40,
                dirty: 50,
                writeback: 60,
                active_anon: 90,
                inactive_anon: 80,
                active_file: 110,
                inactive_file: 100,
                unevictable: 120,
                swapcached: 70,
                ..MemoryStat::default()
            }
        );
        assert_eq!(h, HierarchicalLimits { memory: Some(1 << 30), memsw: None });
        // Without total_* keys the cgroup's own figures are used.
        let s = parse_memory_stat("cache 1\nrss 2\nfuture_key 7\n").unwrap();
        assert_eq!((s.file, s.anon), (1, 2));
    }

    #[test]
    fn memory_stat_garbage() {
        for text in
            ["", "hello world\n", "rss\n", "rss lots\n", "total_rss 1 2\n", "cache -1\n", "\u{0}"]
        {
            assert!(parse_memory_stat(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn cfs() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), Ok(None));
        assert_eq!(parse_cfs("-1\n", "garbage"), Ok(None));
        assert_eq!(
            parse_cfs("150000\n", "100000\n"),
            Ok(Some(CpuQuota { quota_us: 150000, period_us: 100000 }))
        );
        assert!(parse_cfs("150000", "0").is_err());
        assert!(parse_cfs("fast", "100000").is_err());
        assert!(parse_cfs("", "").is_err());
    }

    #[test]
    fn cpuset_lists() {
        assert_eq!(parse_cpuset_list("0-3,5\n"), Ok(vec![0, 1, 2, 3, 5]));
        assert_eq!(parse_cpuset_list("7,0-1,1"), Ok(vec![0, 1, 7]));
        assert_eq!(parse_cpuset_list("\n"), Ok(vec![]));
        assert_eq!(parse_cpuset_list("3"), Ok(vec![3]));
        for bad in
            ["0-4294967295", "3-1", "a", "1,,2", "-", "1-", "0-3:2", "65536", "0-65535,0-65535,x"]
        {
            assert!(parse_cpuset_list(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_cpuset_list("0-65535").map(|v| v.len()), Ok(65536));
    }

    #[test]
    fn percpu_and_usage_all() {
        assert_eq!(parse_percpu("1 2 3 \n"), Ok(vec![1, 2, 3]));
        assert_eq!(parse_percpu(""), Ok(vec![]));
        assert!(parse_percpu("1 x").is_err());
        let all = "cpu user system\n0 100 10\n1 200 20\n3 400 40\n";
        assert_eq!(parse_usage_all(all), Ok(vec![(100, 10), (200, 20), (0, 0), (400, 40)]));
        assert!(parse_usage_all("cpu user system\n0 1\n").is_err());
        assert!(parse_usage_all("4294967295 1 1\n").is_err());
        assert!(parse_usage_all("x 1 1\n").is_err());
    }

    #[test]
    fn cpuacct_stat() {
        assert_eq!(parse_cpuacct_stat("user 11692\nsystem 3050\n"), Ok((11692, 3050)));
        assert!(parse_cpuacct_stat("user 1\n").is_err());
        assert!(parse_cpuacct_stat("user x\nsystem 1\n").is_err());
        assert!(parse_cpuacct_stat("idle 1\n").is_err());
        assert_eq!(ticks_to_ns(150, 100), 1_500_000_000);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
        assert_eq!(split_ns(1000, 3, 1), (750, 250));
        assert_eq!(split_ns(1000, 0, 0), (1000, 0));
        assert_eq!(split_ns(u64::MAX, u64::MAX, u64::MAX), (u64::MAX / 2, u64::MAX - u64::MAX / 2));
        assert_eq!(totals(&[(u64::MAX, 1), (1, 1)]), (u64::MAX, 2));
    }

    #[test]
    fn blkio() {
        let serviced = "253:0 Read 7\n253:0 Write 8\n253:0 Sync 15\n253:0 Async 0\n253:0 Discard 1\n253:0 Total 16\n\
                        8:0 Read 1\n8:0 Write 2\n8:0 Discard 0\n8:0 Total 3\nTotal 19\n";
        let bytes = "8:0 Read 4096\n8:0 Write 8192\n253:0 Read 70\n253:0 Write 80\n253:0 Discard 10\nTotal 0\n";
        let d = parse_blkio_throttle(serviced, bytes).unwrap();
        assert_eq!(
            d,
            vec![
                DeviceIo {
                    major: 8,
                    minor: 0,
                    read_ios: 1,
                    write_ios: 2,
                    read_bytes: 4096,
                    write_bytes: 8192,
                    ..Default::default()
                },
                DeviceIo {
                    major: 253,
                    minor: 0,
                    read_ios: 7,
                    write_ios: 8,
                    discard_ios: 1,
                    read_bytes: 70,
                    write_bytes: 80,
                    discard_bytes: 10
                },
            ]
        );
        assert_eq!(parse_blkio_throttle("Total 0\n", ""), Ok(vec![]));
        for bad in [
            "8:0 Read\n",
            "8-0 Read 1\n",
            "8:x Read 1\n",
            "8:0 Read lots\n",
            "garbage\n",
            "8:0 Read 1 2\n",
        ] {
            assert!(parse_blkio_throttle(bad, "").is_err(), "{bad:?}");
            assert!(parse_blkio_throttle("", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tasks() {
        let mut v = vec![1];
        parse_tasks_into("10\n11\n", &mut v).unwrap();
        assert_eq!(v, vec![1, 10, 11]);
        assert!(parse_tasks_into("10\nx\n", &mut v).is_err());
    }

    #[test]
    fn show_truncates() {
        let long = "é".repeat(100);
        assert!(show(&long).len() < 50);
        assert_eq!(show("ab"), "\"ab\"");
    }
}
