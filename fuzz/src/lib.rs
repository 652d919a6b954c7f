//! Shared helpers of the fuzz targets: turning fuzz bytes into parser text and into the
//! cgroup figures the renderers take.
//!
//! Targets that render (meminfo, swaps, cpuinfo, stat, uptime, loadavg, diskstats) read
//! a fixed-size binary header from the front of the input and take the rest as the host
//! file's text; the header's size per target is the `*_LEN` constant below, so the text
//! always starts at the same offset and a seed is `header ++ fixture text` (see
//! `make_seeds.py`). A header cut short reads as zeros. Numbers are little-endian.
//!
//! Real readers use `read_to_string`, so parsers only ever see valid UTF-8: the text is
//! the longest valid UTF-8 prefix of the bytes.

use sysvisor_fs::cgroup::{CpuUsage, DeviceIo, IoStats, MemoryInfo, MemoryStat};

/// Reads fixed-size fields from a byte slice; past its end every byte reads as 0.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data }
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    pub fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// The longest valid UTF-8 prefix of `bytes`.
pub fn utf8_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        // `valid_up_to` is a char boundary, so this second conversion cannot fail.
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// Splits an input into a `len`-byte header and the text after it.
pub fn split_header(data: &[u8], len: usize) -> (Reader<'_>, &str) {
    let cut = len.min(data.len());
    (Reader::new(&data[..cut]), utf8_prefix(&data[cut..]))
}

/// Splits text in two at the first NUL (for parsers of two files); the second part is
/// empty when there is none.
pub fn split2(text: &str) -> (&str, &str) {
    text.split_once('\0').unwrap_or((text, ""))
}

/// Header bytes of [`memory_info`].
pub const MEMORY_INFO_LEN: usize = 1 + 4 * 8 + 16 * 8;

/// [`MemoryInfo`]: flags (bit 0: limit is set, bit 1: swap limit is set), limit, usage,
/// swap limit, swap usage, then the 16 [`MemoryStat`] fields in declaration order.
pub fn memory_info(r: &mut Reader<'_>) -> MemoryInfo {
    let flags = r.u8();
    let limit = r.u64();
    let usage = r.u64();
    let swap_limit = r.u64();
    let swap_usage = r.u64();
    let stat = MemoryStat {
        anon: r.u64(),
        file: r.u64(),
        shmem: r.u64(),
        mapped_file: r.u64(),
        dirty: r.u64(),
        writeback: r.u64(),
        active_anon: r.u64(),
        inactive_anon: r.u64(),
        active_file: r.u64(),
        inactive_file: r.u64(),
        unevictable: r.u64(),
        slab_reclaimable: r.u64(),
        slab_unreclaimable: r.u64(),
        kernel_stack: r.u64(),
        pagetables: r.u64(),
        swapcached: r.u64(),
    };
    MemoryInfo {
        limit: (flags & 1 != 0).then_some(limit),
        usage,
        swap_limit: (flags & 2 != 0).then_some(swap_limit),
        swap_usage,
        stat,
    }
}

/// Header bytes of [`cpu_set`].
pub const CPU_SET_LEN: usize = 2 + 8;

/// An ascending CPU list: base (u16), then a 64-bit mask; bit i set means CPU base + i.
pub fn cpu_set(r: &mut Reader<'_>) -> Vec<u32> {
    let base = u32::from(r.u16());
    let mask = r.u64();
    (0..64).filter(|i| mask & (1 << i) != 0).map(|i| base + i).collect()
}

/// Header bytes of [`cpu_usage`].
pub const CPU_USAGE_LEN: usize = 1 + 8 + 8 + 1 + 8 + 8;

/// `Option<CpuUsage>`: flags (bit 0: some, bit 1: per-CPU figures), user ns, system ns,
/// per-CPU count (u8), per-CPU user and system seeds (CPU i gets each seed rotated by i).
pub fn cpu_usage(r: &mut Reader<'_>) -> Option<CpuUsage> {
    let flags = r.u8();
    let user_ns = r.u64();
    let system_ns = r.u64();
    let n = u32::from(r.u8());
    let (pu, ps) = (r.u64(), r.u64());
    let per_cpu = (flags & 2 != 0).then(|| (0..n).map(|i| (pu.rotate_left(i), ps.rotate_left(i))).collect());
    (flags & 1 != 0).then_some(CpuUsage { user_ns, system_ns, per_cpu })
}

/// Device slots in [`io_stats`].
pub const IO_SLOTS: usize = 4;
/// Header bytes of [`io_stats`].
pub const IO_STATS_LEN: usize = 1 + IO_SLOTS * (1 + 4 + 4 + 6 * 8);

/// [`IoStats`]: a byte (low bits: device count mod 5; bit 7: leave unsorted), then 4 slots
/// of pick (u8), major, minor (u32), read/write/discard ios, read/write/discard bytes
/// (u64). A slot whose pick has bit 7 clear and `known` is non-empty takes its device
/// numbers from `known[pick % len]` (so the fuzzer hits host lines), else major/minor.
pub fn io_stats(r: &mut Reader<'_>, known: &[(u32, u32)]) -> IoStats {
    let head = r.u8();
    let count = usize::from(head & 0x7f) % (IO_SLOTS + 1);
    let mut devices = Vec::new();
    for i in 0..IO_SLOTS {
        let pick = r.u8();
        let (mut major, mut minor) = (r.u32(), r.u32());
        if pick & 0x80 == 0 && !known.is_empty() {
            (major, minor) = known[usize::from(pick) % known.len()];
        }
        let d = DeviceIo {
            major,
            minor,
            read_ios: r.u64(),
            write_ios: r.u64(),
            discard_ios: r.u64(),
            read_bytes: r.u64(),
            write_bytes: r.u64(),
            discard_bytes: r.u64(),
        };
        if i < count {
            devices.push(d);
        }
    }
    if head & 0x80 == 0 {
        devices.sort_by_key(|d| (d.major, d.minor));
    }
    IoStats { devices }
}

/// Number of `\n` bytes in `b`.
pub fn newlines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

/// Asserts `v` is strictly ascending (sorted, no duplicates).
pub fn assert_strictly_ascending<T: Ord + std::fmt::Debug>(v: &[T], what: &str) {
    for w in v.windows(2) {
        assert!(w[0] < w[1], "{what} not strictly ascending: {:?} then {:?}", w[0], w[1]);
    }
}
