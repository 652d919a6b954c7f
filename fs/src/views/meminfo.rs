//! `/proc/meminfo` shaped by the caller's memory cgroup.
//!
//! Every host line is kept, in the host's order and byte for byte, except the figures a
//! memory limit changes. Those are rewritten in the kernel's layout: the label padded to
//! the host's column (16 on every kernel), the number right-aligned in 8 columns (wider
//! numbers in full), then the host's unit (" kB").
//!
//! With a memory limit (values in kB, cgroup figures from `memory.stat`):
//! - MemTotal = min(limit, host MemTotal); MemFree = MemTotal - usage (saturating);
//!   MemAvailable = min(MemTotal, MemFree + active_file + inactive_file + slab_reclaimable);
//! - Buffers = 0 (a cgroup has no separate buffer figure; its buffers are in `file`);
//! - Cached = file - swapcached: the kernel's Cached is its file pages minus swap cache
//!   and buffers, shmem included, and the cgroup's `file` counts swap cache pages too;
//! - SwapCached, Active(anon), Inactive(anon), Active(file), Inactive(file), Unevictable,
//!   Dirty, Writeback, Mapped (= mapped_file), Shmem, SReclaimable, SUnreclaim,
//!   KernelStack, PageTables straight from the stat; Active and Inactive are the sums of
//!   their anon and file parts; AnonPages = anon; Slab = SReclaimable + SUnreclaim;
//!   KReclaimable = SReclaimable (the other reclaimable kernel memory is not charged
//!   per cgroup);
//! - Mlocked, AnonHugePages, ShmemHugePages, ShmemPmdMapped, FileHugePages and
//!   FilePmdMapped have no figure here: the host's value, capped by the cgroup figure
//!   that contains it (Unevictable, AnonPages, Shmem, Shmem, Cached, Cached), so the
//!   view stays self-consistent;
//! - every other line (Commit*, Vmalloc*, HugePages_*, DirectMap*, ...) is the host's.
//!
//! Swap, when the host has swap (host SwapTotal > 0) and the cgroup has a memory or a
//! swap limit: SwapTotal = min(host SwapTotal, swap limit), the host's SwapTotal when
//! swap is unlimited; SwapFree = SwapTotal - swap usage (saturating). A host without swap
//! keeps its zero lines.
//!
//! No memory controller, or neither a memory nor a swap limit: the host's bytes.

use super::{Request, ViewError};
use crate::cgroup::MemoryInfo;
use crate::host::fmt::push_u64_width;

const PATH: &str = "/proc/meminfo";

/// Columns the kernel right-aligns meminfo numbers in (`show_val_kb`).
const VALUE_WIDTH: usize = 8;
/// The label column of the kernel's meminfo lines ("MemTotal:       ").
const LABEL_WIDTH: usize = 16;

/// The host's /proc/meminfo: its text and the figures the view needs, in kB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMeminfo<'a> {
    pub text: &'a str,
    pub mem_total_kb: u64,
    /// 0 when the host has no swap (or no SwapTotal line).
    pub swap_total_kb: u64,
}

/// Parses the host's /proc/meminfo. It must have a numeric MemTotal line.
pub fn parse(text: &str) -> Result<HostMeminfo<'_>, ViewError> {
    let mut mem_total = None;
    let mut swap_total = 0;
    for line in text.lines() {
        let Some(f) = Field::parse(line) else { continue };
        match f.name {
            "MemTotal" => mem_total = f.value,
            "SwapTotal" => swap_total = f.value.unwrap_or(0),
            _ => {}
        }
    }
    let mem_total_kb = mem_total.ok_or_else(|| ViewError::Malformed {
        path: PATH.into(),
        reason: "no numeric MemTotal line".into(),
    })?;
    Ok(HostMeminfo { text, mem_total_kb, swap_total_kb: swap_total })
}

/// The figures of the view, in kB, computed once per render.
struct Figures {
    mem: bool,
    swap: bool,
    total: u64,
    free: u64,
    available: u64,
    cached: u64,
    swap_total: u64,
    swap_free: u64,
}

impl Figures {
    fn new(host: &HostMeminfo<'_>, m: &MemoryInfo) -> Figures {
        let s = &m.stat;
        let total = m.limit.map_or(host.mem_total_kb, |l| kb(l).min(host.mem_total_kb));
        let free = total.saturating_sub(kb(m.usage));
        let reclaimable = kb(s.active_file)
            .saturating_add(kb(s.inactive_file))
            .saturating_add(kb(s.slab_reclaimable));
        let available = free.saturating_add(reclaimable).min(total);
        let swap_total = match m.swap_limit {
            Some(l) => kb(l).min(host.swap_total_kb),
            None => host.swap_total_kb,
        };
        Figures {
            mem: m.limit.is_some(),
            swap: host.swap_total_kb > 0 && (m.limit.is_some() || m.swap_limit.is_some()),
            total,
            free,
            available,
            cached: kb(s.file.saturating_sub(s.swapcached)),
            swap_total,
            swap_free: swap_total.saturating_sub(kb(m.swap_usage)),
        }
    }

    /// The view's value for line `name` whose host value is `host`, or `None` to keep
    /// the host's line.
    fn value(&self, m: &MemoryInfo, name: &str, host: Option<u64>) -> Option<u64> {
        let s = &m.stat;
        if self.swap {
            match name {
                "SwapTotal" => return Some(self.swap_total),
                "SwapFree" => return Some(self.swap_free),
                _ => {}
            }
        }
        if !self.mem {
            return None;
        }
        let capped = |cap: u64| host.map(|h| h.min(cap));
        Some(match name {
            "MemTotal" => self.total,
            "MemFree" => self.free,
            "MemAvailable" => self.available,
            "Buffers" => 0,
            "Cached" => self.cached,
            "SwapCached" => kb(s.swapcached),
            "Active" => kb(s.active_anon.saturating_add(s.active_file)),
            "Inactive" => kb(s.inactive_anon.saturating_add(s.inactive_file)),
            "Active(anon)" => kb(s.active_anon),
            "Inactive(anon)" => kb(s.inactive_anon),
            "Active(file)" => kb(s.active_file),
            "Inactive(file)" => kb(s.inactive_file),
            "Unevictable" => kb(s.unevictable),
            "Mlocked" => capped(kb(s.unevictable))?,
            "Dirty" => kb(s.dirty),
            "Writeback" => kb(s.writeback),
            "AnonPages" => kb(s.anon),
            "Mapped" => kb(s.mapped_file),
            "Shmem" => kb(s.shmem),
            "KReclaimable" | "SReclaimable" => kb(s.slab_reclaimable),
            "Slab" => kb(s.slab_reclaimable.saturating_add(s.slab_unreclaimable)),
            "SUnreclaim" => kb(s.slab_unreclaimable),
            "KernelStack" => kb(s.kernel_stack),
            "PageTables" => kb(s.pagetables),
            "AnonHugePages" => capped(kb(s.anon))?,
            "ShmemHugePages" | "ShmemPmdMapped" => capped(kb(s.shmem))?,
            "FileHugePages" | "FilePmdMapped" => capped(self.cached)?,
            _ => return None,
        })
    }
}

fn kb(bytes: u64) -> u64 {
    bytes / 1024
}

/// Renders the view for a cgroup with memory figures `mem` (`None`: no memory
/// controller), over the parsed host file.
pub fn render(host: &HostMeminfo<'_>, mem: Option<&MemoryInfo>) -> Vec<u8> {
    let Some(m) = mem else { return host.text.as_bytes().to_vec() };
    let fig = Figures::new(host, m);
    if !fig.mem && !fig.swap {
        return host.text.as_bytes().to_vec();
    }
    let mut out = Vec::with_capacity(host.text.len() + 64);
    for line in host.text.split_inclusive('\n') {
        let field = Field::parse(line);
        match field.as_ref().and_then(|f| Some((f, fig.value(m, f.name, f.value)?))) {
            Some((f, v)) => f.write_with(&mut out, line, v),
            None => out.extend_from_slice(line.as_bytes()),
        }
    }
    out
}

/// One "Name:   value unit" line, located.
struct Field<'a> {
    name: &'a str,
    value: Option<u64>,
    /// Byte offsets of the number in the line (equal when there is none).
    digits: (usize, usize),
}

impl<'a> Field<'a> {
    fn parse(line: &'a str) -> Option<Field<'a>> {
        let colon = line.find(':')?;
        let name = &line[..colon];
        let b = line.as_bytes();
        let mut start = colon + 1;
        while b.get(start) == Some(&b' ') {
            start += 1;
        }
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        let value = line.get(start..end).and_then(|d| d.parse::<u64>().ok());
        Some(Field { name, value, digits: (start, end) })
    }

    /// Writes `line` with its number replaced by `v`, in the host's layout.
    fn write_with(&self, out: &mut Vec<u8>, line: &str, v: u64) {
        let name_end = self.name.len() + 1; // after ':'
        let (start, end) = self.digits;
        let (column, suffix) = if end > start {
            // The host's label column: where its number ends, less the number's field.
            let column = end.saturating_sub((end - start).max(VALUE_WIDTH));
            (column, &line[end..])
        } else {
            (LABEL_WIDTH, if line.ends_with('\n') { " kB\n" } else { " kB" })
        };
        let column = column.max(name_end + 1);
        out.extend_from_slice(&line.as_bytes()[..name_end]);
        out.resize(out.len() + column - name_end, b' ');
        push_u64_width(out, v, VALUE_WIDTH);
        out.extend_from_slice(suffix.as_bytes());
    }
}

/// `/proc/meminfo` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let text = req.host.read("meminfo")?;
    let mem = req.cgroups.memory(&req.caller.cgroups)?;
    let needs_render = mem.as_ref().is_some_and(|m| m.limit.is_some() || m.swap_limit.is_some());
    if !needs_render {
        return Ok(text.into_bytes());
    }
    let host = parse(&text)?;
    Ok(render(&host, mem.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::MemoryStat;

    const VM2: &str = include_str!("../../tests/fixtures/host/vm2/proc/meminfo");
    const BIG4: &str = include_str!("../../tests/fixtures/host/big4/proc/meminfo");

    const MIB: u64 = 1 << 20;

    fn limited(limit: u64) -> MemoryInfo {
        MemoryInfo {
            limit: Some(limit),
            usage: 100 * MIB,
            swap_limit: None,
            swap_usage: 0,
            stat: MemoryStat {
                anon: 40 * MIB,
                file: 50 * MIB,
                shmem: 2 * MIB,
                mapped_file: 10 * MIB,
                dirty: 4096,
                writeback: 0,
                active_anon: 30 * MIB,
                inactive_anon: 10 * MIB,
                active_file: 20 * MIB,
                inactive_file: 28 * MIB,
                unevictable: 2 * MIB,
                slab_reclaimable: 3 * MIB,
                slab_unreclaimable: MIB,
                kernel_stack: 512 * 1024,
                pagetables: 256 * 1024,
                swapcached: MIB,
            },
        }
    }

    fn lines(out: &[u8]) -> Vec<String> {
        String::from_utf8(out.to_vec()).unwrap().lines().map(str::to_owned).collect()
    }

    fn line<'a>(all: &'a [String], name: &str) -> &'a str {
        let prefix = format!("{name}:");
        all.iter().find(|l| l.starts_with(&prefix)).map(String::as_str).unwrap_or("")
    }

    #[test]
    fn parses_host() {
        let h = parse(VM2).unwrap();
        assert_eq!(h.mem_total_kb, 24683656);
        assert_eq!(h.swap_total_kb, 0);
        let h = parse(BIG4).unwrap();
        assert_eq!((h.mem_total_kb, h.swap_total_kb), (16302436, 10485752));
    }

    #[test]
    fn unlimited_is_host_bytes() {
        let h = parse(VM2).unwrap();
        assert_eq!(render(&h, None), VM2.as_bytes());
        let mut m = limited(0);
        m.limit = None;
        assert_eq!(render(&h, Some(&m)), VM2.as_bytes());
        let h = parse(BIG4).unwrap();
        assert_eq!(render(&h, Some(&m)), BIG4.as_bytes());
    }

    #[test]
    fn limited_lines() {
        let h = parse(VM2).unwrap();
        let out = render(&h, Some(&limited(256 * MIB)));
        let l = lines(&out);
        assert_eq!(l.len(), VM2.lines().count());
        assert!(out.ends_with(b" kB\n"));
        assert_eq!(line(&l, "MemTotal"), "MemTotal:         262144 kB");
        assert_eq!(line(&l, "MemFree"), "MemFree:          159744 kB");
        // free + active_file + inactive_file + slab_reclaimable = 156 + 20 + 28 + 3 MiB
        assert_eq!(line(&l, "MemAvailable"), "MemAvailable:     211968 kB");
        assert_eq!(line(&l, "Buffers"), "Buffers:               0 kB");
        assert_eq!(line(&l, "Cached"), "Cached:            50176 kB");
        assert_eq!(line(&l, "SwapCached"), "SwapCached:         1024 kB");
        assert_eq!(line(&l, "Active"), "Active:            51200 kB");
        assert_eq!(line(&l, "Inactive"), "Inactive:          38912 kB");
        assert_eq!(line(&l, "Active(anon)"), "Active(anon):      30720 kB");
        assert_eq!(line(&l, "Inactive(anon)"), "Inactive(anon):    10240 kB");
        assert_eq!(line(&l, "Active(file)"), "Active(file):      20480 kB");
        assert_eq!(line(&l, "Inactive(file)"), "Inactive(file):    28672 kB");
        assert_eq!(line(&l, "Unevictable"), "Unevictable:        2048 kB");
        assert_eq!(line(&l, "Mlocked"), "Mlocked:            2048 kB");
        assert_eq!(line(&l, "Dirty"), "Dirty:                 4 kB");
        assert_eq!(line(&l, "AnonPages"), "AnonPages:         40960 kB");
        assert_eq!(line(&l, "Mapped"), "Mapped:            10240 kB");
        assert_eq!(line(&l, "Shmem"), "Shmem:              2048 kB");
        assert_eq!(line(&l, "KReclaimable"), "KReclaimable:       3072 kB");
        assert_eq!(line(&l, "Slab"), "Slab:               4096 kB");
        assert_eq!(line(&l, "SReclaimable"), "SReclaimable:       3072 kB");
        assert_eq!(line(&l, "SUnreclaim"), "SUnreclaim:         1024 kB");
        assert_eq!(line(&l, "KernelStack"), "KernelStack:         512 kB");
        assert_eq!(line(&l, "PageTables"), "PageTables:          256 kB");
        // Host without swap keeps its zero lines; untouched lines are the host's.
        assert_eq!(line(&l, "SwapTotal"), "SwapTotal:             0 kB");
        assert_eq!(line(&l, "SwapFree"), "SwapFree:              0 kB");
        for name in
            ["VmallocTotal", "CommitLimit", "HugePages_Total", "DirectMap1G", "Hugepagesize"]
        {
            let host: Vec<String> = VM2.lines().map(str::to_owned).collect();
            assert_eq!(line(&l, name), line(&host, name));
        }
    }

    #[test]
    fn limit_above_host_and_usage_above_limit() {
        let h = parse(VM2).unwrap();
        let mut m = limited(u64::MAX);
        m.usage = u64::MAX;
        let l = lines(&render(&h, Some(&m)));
        assert_eq!(line(&l, "MemTotal"), "MemTotal:       24683656 kB");
        assert_eq!(line(&l, "MemFree"), "MemFree:               0 kB");
        assert_eq!(line(&l, "MemAvailable"), "MemAvailable:      52224 kB");
        let m = MemoryInfo { limit: Some(1), ..Default::default() };
        let l = lines(&render(&h, Some(&m)));
        assert_eq!(line(&l, "MemTotal"), "MemTotal:              0 kB");
        assert_eq!(line(&l, "MemAvailable"), "MemAvailable:          0 kB");
    }

    #[test]
    fn swap_figures() {
        let h = parse(BIG4).unwrap();
        // Memory limit, swap unlimited: the host's SwapTotal, less the cgroup's swap.
        let mut m = limited(512 * MIB);
        m.swap_usage = 10 * MIB;
        let l = lines(&render(&h, Some(&m)));
        assert_eq!(line(&l, "SwapTotal"), "SwapTotal:      10485752 kB");
        assert_eq!(line(&l, "SwapFree"), "SwapFree:       10475512 kB");
        // Huge page lines are capped by what contains them.
        assert_eq!(line(&l, "AnonHugePages"), "AnonHugePages:     40960 kB");
        assert_eq!(line(&l, "Mlocked"), "Mlocked:              32 kB");
        assert_eq!(line(&l, "HardwareCorrupted"), "HardwareCorrupted:     0 kB");
        assert_eq!(line(&l, "VmallocTotal"), "VmallocTotal:   34359738367 kB");
        // Swap limit.
        m.swap_limit = Some(64 * MIB);
        let l = lines(&render(&h, Some(&m)));
        assert_eq!(line(&l, "SwapTotal"), "SwapTotal:         65536 kB");
        assert_eq!(line(&l, "SwapFree"), "SwapFree:          55296 kB");
        // Swap limit only: memory lines stay the host's.
        m.limit = None;
        m.swap_usage = 128 * MIB;
        let out = render(&h, Some(&m));
        let l = lines(&out);
        assert_eq!(line(&l, "SwapTotal"), "SwapTotal:         65536 kB");
        assert_eq!(line(&l, "SwapFree"), "SwapFree:              0 kB");
        let host: Vec<String> = BIG4.lines().map(str::to_owned).collect();
        assert_eq!(line(&l, "MemTotal"), line(&host, "MemTotal"));
        assert_eq!(line(&l, "Cached"), line(&host, "Cached"));
        assert_eq!(out.len(), BIG4.len());
    }

    #[test]
    fn procps_free_invariants() {
        // free(1): used = total - free - buffers - cache(+SReclaimable) must not be
        // negative, available <= total, swap free <= swap total.
        let h = parse(BIG4).unwrap();
        let mut m = limited(256 * MIB);
        m.swap_limit = Some(128 * MIB);
        m.swap_usage = 4 * MIB;
        let out = String::from_utf8(render(&h, Some(&m))).unwrap();
        let get = |n: &str| -> u64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{n}:")))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        let (total, free, avail) = (get("MemTotal"), get("MemFree"), get("MemAvailable"));
        let cache = get("Buffers") + get("Cached") + get("SReclaimable");
        assert!(total >= free + cache, "{total} {free} {cache}");
        assert!(avail <= total && avail >= free);
        assert!(get("SwapFree") <= get("SwapTotal"));
        assert!(get("Active") + get("Inactive") + get("Unevictable") <= total);
    }

    #[test]
    fn odd_layouts() {
        // A line without a number, a wide number, one-space layouts: no panic; the label
        // column follows the host's line, with at least one space after the colon.
        let host = "MemTotal: 1048576 kB\nMemFree:\nCached:       123456789012 kB\nOdd line\n\
                    Buffers:1 kB\nShmem:       7";
        let h = parse(host).unwrap();
        let m = limited(4 * MIB);
        let out = String::from_utf8(render(&h, Some(&m))).unwrap();
        assert_eq!(
            out,
            "MemTotal:     4096 kB\nMemFree:               0 kB\n\
             Cached:          50176 kB\nOdd line\nBuffers:        0 kB\nShmem:     2048"
        );
        let m = MemoryInfo { limit: Some(u64::MAX), ..Default::default() };
        let h = parse("MemTotal:99999999999999 kB\n").unwrap();
        let out = String::from_utf8(render(&h, Some(&m))).unwrap();
        assert_eq!(out, "MemTotal: 99999999999999 kB\n");
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in ["", "garbage", "\0\0\0", "MemTotal: x kB\n", "MemFree: 1 kB\n", ":::\n"] {
            assert!(matches!(parse(bad), Err(ViewError::Malformed { .. })), "{bad:?}");
        }
        // Garbage around a valid MemTotal passes through untouched.
        let host = "MemTotal: 10 kB\n\u{1}\u{2}:\n:\n\n:99999999999999999999999 kB\nSlab";
        let out = render(&parse(host).unwrap(), Some(&limited(MIB)));
        assert!(String::from_utf8(out).unwrap().starts_with("MemTotal:       10 kB\n\u{1}"));
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::{TestEnv, MEMORY_STAT};
        let base = [("memory.current", "104857600\n"), ("memory.stat", MEMORY_STAT)];
        // No memory controller in the cgroup, or no limit: the host's bytes.
        let env = TestEnv::new("big4", &[]);
        assert_eq!(env.run(generate).unwrap(), env.host_file("meminfo"));
        let env = TestEnv::new("big4", &[base[0], base[1], ("memory.max", "max\n")]);
        assert_eq!(env.run(generate).unwrap(), env.host_file("meminfo"));
        // A limit.
        let env = TestEnv::new("big4", &[base[0], base[1], ("memory.max", "268435456\n")]);
        let out = env.run(generate).unwrap();
        assert!(
            out.starts_with("MemTotal:         262144 kB\nMemFree:          159744 kB\n"),
            "{out}"
        );
        assert!(out.contains("\nSwapTotal:      10485752 kB\n"));
        // Swap accounting with a swap limit.
        let env = TestEnv::new(
            "big4",
            &[
                base[0],
                base[1],
                ("memory.max", "268435456\n"),
                ("memory.swap.current", "1048576\n"),
                ("memory.swap.max", "67108864\n"),
            ],
        );
        let out = env.run(generate).unwrap();
        assert!(
            out.contains("\nSwapTotal:         65536 kB\nSwapFree:          64512 kB\n"),
            "{out}"
        );
        // A cgroup file gone bad is an error, not a panic.
        let env =
            TestEnv::new("big4", &[base[0], ("memory.stat", "garbage\n"), ("memory.max", "1\n")]);
        assert!(matches!(env.run(generate), Err(ViewError::Cgroup(_))));
    }
}
