//! `sysinfo(2)` answered with the container's figures.
//!
//! busybox `free` and `uptime`, glibc's `get_phys_pages`/`sysconf(_SC_PHYS_PAGES)` and
//! Node's `os.totalmem()` ask sysinfo, not `/proc/meminfo`, so the views alone do not reach
//! them. The profile sends `sysinfo` to the trap; the daemon takes the caller's figures
//! from its own views ([`crate::views::sysinfo`]), lays them out as the kernel does for the
//! caller's ABI ([`encode`]) and writes them into the caller's buffer.
//!
//! The write, thought through as an attack:
//! - **The right process.** `/proc/TID` is opened first, then its `mem` (read-write) and
//!   `maps`; only then is the notification checked to be still pending
//!   ([`abi::id_valid`]), so those handles are the blocked caller's, not a later process
//!   with the same number. The figures are computed before a second check, so they are
//!   the caller's too. `mem` stays bound to the caller's address space whatever happens
//!   to the pid afterwards: nothing is ever written into another process.
//! - **A bad pointer gives EFAULT, as from the kernel.** `/proc/PID/mem` writes through
//!   page protections (it is the debugger's interface), so the buffer must lie within
//!   writable mappings of the caller (`maps`, [`writable`]), else EFAULT and nothing is
//!   written: NULL, unmapped memory, read-only data, code, the vsyscall page. A short or
//!   failed write is EFAULT as well.
//! - **A racing thread** that unmaps or remaps the buffer between that check and the write
//!   can only change what happens in its own address space: a write to memory no longer
//!   mapped fails (EFAULT); one to a private mapping made read-only meanwhile lands in a
//!   private copy of the page (the caller could have written it itself before); a shared
//!   mapping that is not writable is never written through `mem` (the kernel refuses a
//!   forced write to it), so no file changes.
//! - **When the answer cannot be given** (the daemon has no figures source, the caller's
//!   cgroup or views cannot be read, `/proc/TID` cannot be opened): the call continues
//!   (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`) and the kernel answers with the host's figures.
//!   That is safe because sysinfo changes nothing and the kernel makes its own pointer
//!   checks; the worst outcome is the host's figures, what the container saw without the
//!   trap. It is logged.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use super::abi::{self, Answer, Notification};
use super::handler::{Context, Source};
use super::process;
use crate::service::ServiceError;
use crate::views::sysinfo::Figures;

/// Where the trap gets a caller's figures (the service, in the daemon).
pub trait FiguresSource: Send + Sync {
    /// sysinfo's figures for thread `pid` (in the daemon's pid namespace).
    fn figures(&self, pid: u32) -> Result<Figures, ServiceError>;
}

impl std::fmt::Debug for dyn FiguresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FiguresSource")
    }
}

impl FiguresSource for crate::service::Service {
    fn figures(&self, pid: u32) -> Result<Figures, ServiceError> {
        self.sysinfo(pid)
    }
}

/// `struct sysinfo` of 64-bit callers (x86_64, x32, aarch64): longs are 8 bytes.
pub const SIZE_64: usize = 112;
/// `struct compat_sysinfo` of 32-bit callers (i386, arm).
pub const SIZE_32: usize = 64;

/// The struct as the kernel fills it for the caller: `compat` for 32-bit callers.
///
/// The kernel counts memory in pages (`mem_unit` = the page size) and then, when total
/// RAM plus swap in bytes fits in an unsigned long, gives bytes (`mem_unit` 1)
/// (`do_sysinfo`); for a 32-bit caller whose RAM or swap does not fit in 32 bits it scales
/// back towards pages (`compat_sys_sysinfo`). Padding is zero.
pub fn encode(f: &Figures, page_size: u64, compat: bool) -> Vec<u8> {
    let page_size = page_size.max(1);
    let pages = |bytes: u64| bytes / page_size;
    let mut mem = [
        pages(f.total_ram),
        pages(f.free_ram),
        pages(f.shared_ram),
        pages(f.buffer_ram),
        pages(f.total_swap),
        pages(f.free_swap),
    ];
    let mut mem_unit = page_size;
    if mem[0].checked_add(mem[4]).and_then(|t| t.checked_mul(page_size)).is_some() {
        mem.iter_mut().for_each(|v| *v *= page_size);
        mem_unit = 1;
    }
    let procs = f.procs as u16; // the kernel truncates nr_threads the same way
    let mut out = Vec::with_capacity(SIZE_64);
    if compat {
        if mem[0] >> 32 != 0 || mem[4] >> 32 != 0 {
            let mut bits = 0;
            while mem_unit < page_size {
                mem_unit <<= 1;
                bits += 1;
            }
            mem.iter_mut().for_each(|v| *v >>= bits);
        }
        out.extend_from_slice(&(f.uptime_secs as i32).to_ne_bytes());
        for load in f.loads {
            out.extend_from_slice(&(load as u32).to_ne_bytes());
        }
        for v in mem {
            out.extend_from_slice(&(v as u32).to_ne_bytes());
        }
        out.extend_from_slice(&procs.to_ne_bytes());
        out.extend_from_slice(&[0; 2 + 4 + 4]); // pad, totalhigh, freehigh
        out.extend_from_slice(&(mem_unit as u32).to_ne_bytes());
        out.resize(SIZE_32, 0);
    } else {
        out.extend_from_slice(&(f.uptime_secs as i64).to_ne_bytes());
        for v in f.loads.into_iter().chain(mem) {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        out.extend_from_slice(&procs.to_ne_bytes());
        out.extend_from_slice(&[0; 2 + 4 + 8 + 8]); // pad, alignment, totalhigh, freehigh
        out.extend_from_slice(&(mem_unit as u32).to_ne_bytes());
        out.resize(SIZE_64, 0);
    }
    out
}

/// Whether `[address, address + len)` lies entirely in writable mappings of `maps` (the
/// text of /proc/PID/maps: "start-end perms ...", sorted, in hexadecimal).
pub fn writable(maps: &str, address: u64, len: u64) -> bool {
    let Some(end) = address.checked_add(len) else { return false };
    let mut at = address;
    for line in maps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        let Some((lo, hi)) = range.split_once('-') else { continue };
        let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) else {
            continue;
        };
        if hi <= at {
            continue;
        }
        if lo > at || perms.as_bytes().get(1) != Some(&b'w') {
            return false;
        }
        at = hi;
        if at >= end {
            return true;
        }
    }
    false
}

/// Answers a trapped sysinfo (see the module doc).
pub fn answer(ctx: &Context, source: &Source, notif: &Notification) -> Answer {
    let Some(figures) = ctx.sysinfo.as_deref() else { return Answer::Continue };
    match write(ctx, figures, source.fd.as_fd(), notif) {
        Ok(answer) => answer,
        Err(reason) => {
            tracing::warn!(
                container = %source.container,
                pid = notif.pid,
                %reason,
                "sysinfo answered by the kernel (the host's figures)"
            );
            Answer::Continue
        }
    }
}

fn write(
    ctx: &Context,
    figures: &dyn FiguresSource,
    fd: BorrowedFd<'_>,
    notif: &Notification,
) -> Result<Answer, String> {
    let dir = process::proc_dir_in(ctx.proc.as_fd(), notif.pid).map_err(|e| e.to_string())?;
    let mem = File::from(
        process::open_at(dir.as_fd(), "mem", libc::O_RDWR).map_err(|e| format!("mem: {e}"))?,
    );
    let maps = File::from(
        process::open_at(dir.as_fd(), "maps", libc::O_RDONLY).map_err(|e| format!("maps: {e}"))?,
    );
    if !abi::id_valid(fd, notif.id) {
        return Ok(Answer::Continue); // the caller is gone: nobody reads the answer
    }
    let figures = figures.figures(notif.pid).map_err(|e| e.to_string())?;
    if !abi::id_valid(fd, notif.id) {
        return Ok(Answer::Continue);
    }
    let bytes = encode(&figures, page_size(), abi::is_32bit(notif.arch, notif.nr));
    let address = abi::arg(notif.arch, notif.nr, notif.args[0]);
    let writable = buffer_writable(&maps, dir.as_fd(), address, bytes.len() as u64)
        .map_err(|e| format!("maps: {e}"))?;
    if !writable {
        return Ok(Answer::Errno(libc::EFAULT));
    }
    match mem.write_at(&bytes, address) {
        Ok(n) if n == bytes.len() => Ok(Answer::Success),
        _ => Ok(Answer::Errno(libc::EFAULT)),
    }
}

/// Whether `[address, address + len)` lies in writable mappings of the process whose
/// `maps` is open: asked with PROCMAP_QUERY (Linux 6.11; a lookup per mapping), else
/// read from the text of `maps` ([`writable`]), which costs far more for a process with
/// many mappings.
fn buffer_writable(maps: &File, dir: BorrowedFd<'_>, address: u64, len: u64) -> io::Result<bool> {
    match query_writable(maps, address, len) {
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EINVAL)) => {
            Ok(writable(&process::read_text(dir, "maps")?, address, len))
        }
        other => other,
    }
}

/// `struct procmap_query` (linux/fs.h).
#[repr(C)]
#[derive(Default)]
struct ProcmapQuery {
    size: u64,
    query_flags: u64,
    query_addr: u64,
    vma_start: u64,
    vma_end: u64,
    vma_flags: u64,
    vma_page_size: u64,
    vma_offset: u64,
    inode: u64,
    dev_major: u32,
    dev_minor: u32,
    vma_name_size: u32,
    build_id_size: u32,
    vma_name_addr: u64,
    build_id_addr: u64,
}

/// `_IOWR('f', 17, struct procmap_query)`.
const PROCMAP_QUERY: libc::Ioctl = 0xC068_6611u32 as libc::Ioctl;
const PROCMAP_QUERY_VMA_WRITABLE: u64 = 0x02;

/// [`buffer_writable`] by PROCMAP_QUERY: the mapping that contains each address in turn
/// (ENOENT: none does).
fn query_writable(maps: &File, address: u64, len: u64) -> io::Result<bool> {
    let Some(end) = address.checked_add(len) else { return Ok(false) };
    let mut at = address;
    while at < end {
        let mut query = ProcmapQuery {
            size: std::mem::size_of::<ProcmapQuery>() as u64,
            query_addr: at,
            ..ProcmapQuery::default()
        };
        // SAFETY: the ioctl reads and writes one procmap_query in memory we own; the name
        // and build id buffers are absent (their sizes 0).
        let rc = unsafe { libc::ioctl(maps.as_raw_fd(), PROCMAP_QUERY, &mut query as *mut _) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::ENOENT) => Ok(false),
                _ => Err(err),
            };
        }
        let covers = query.vma_start <= at && query.vma_end > at;
        if !covers || query.vma_flags & PROCMAP_QUERY_VMA_WRITABLE == 0 {
            return Ok(false);
        }
        at = query.vma_end;
    }
    Ok(true)
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    fn figures() -> Figures {
        Figures {
            uptime_secs: 42,
            loads: [1 << 16, 2 << 16, 3 << 16],
            procs: 70_007,
            total_ram: 256 << 20,
            free_ram: 200 << 20,
            shared_ram: 2 << 20,
            buffer_ram: 4096,
            total_swap: 512 << 20,
            free_swap: 500 << 20,
        }
    }

    #[test]
    fn laid_out_as_libc_sees_it() {
        let bytes = encode(&figures(), 4096, false);
        assert_eq!(bytes.len(), std::mem::size_of::<libc::sysinfo>());
        // SAFETY: the buffer has the struct's size, and every bit pattern is valid for it.
        let s: libc::sysinfo = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        assert_eq!(s.uptime, 42);
        assert_eq!(s.loads, [65536, 131072, 196608]);
        assert_eq!(s.procs, (70_007u64 & 0xffff) as u16);
        assert_eq!(s.mem_unit, 1, "bytes, as the kernel gives when they fit");
        assert_eq!(s.totalram, 256 << 20);
        assert_eq!(s.freeram, 200 << 20);
        assert_eq!(s.sharedram, 2 << 20);
        assert_eq!(s.bufferram, 4096);
        assert_eq!(s.totalswap, 512 << 20);
        assert_eq!(s.freeswap, 500 << 20);
        assert_eq!((s.totalhigh, s.freehigh), (0, 0));
        assert_eq!(offset_of!(libc::sysinfo, mem_unit), 104);
    }

    #[test]
    fn compat_layout_and_scaling() {
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let bytes = encode(&figures(), 4096, true);
        assert_eq!(bytes.len(), SIZE_32);
        assert_eq!(u32_at(&bytes, 0), 42);
        assert_eq!(u32_at(&bytes, 4), 65536);
        assert_eq!(u32_at(&bytes, 16), 256 << 20, "totalram in bytes");
        assert_eq!(u32_at(&bytes, 36), 500 << 20, "freeswap");
        assert_eq!(u16::from_ne_bytes([bytes[40], bytes[41]]), 70_007u32 as u16);
        assert_eq!(u32_at(&bytes, 52), 1, "mem_unit");
        // 8 GiB does not fit in 32 bits: pages for a 32-bit caller, bytes for a 64-bit one.
        let big = Figures { total_ram: 8 << 30, free_ram: 6 << 30, ..figures() };
        let bytes = encode(&big, 4096, true);
        assert_eq!(u64::from(u32_at(&bytes, 16)), (8u64 << 30) / 4096);
        assert_eq!(u64::from(u32_at(&bytes, 20)), (6u64 << 30) / 4096);
        assert_eq!(u32_at(&bytes, 52), 4096);
        // SAFETY: as above.
        let s: libc::sysinfo =
            unsafe { std::ptr::read_unaligned(encode(&big, 4096, false).as_ptr().cast()) };
        assert_eq!((s.totalram, s.mem_unit), (8 << 30, 1));
        // Bytes that overflow 64 bits stay in pages, as in do_sysinfo.
        let huge = Figures { total_ram: u64::MAX, ..figures() };
        // SAFETY: as above.
        let s: libc::sysinfo =
            unsafe { std::ptr::read_unaligned(encode(&huge, 4096, false).as_ptr().cast()) };
        assert_eq!((s.totalram, s.mem_unit), (u64::MAX / 4096, 4096));
    }

    #[test]
    fn the_kernel_is_asked_about_our_own_mappings() {
        let dir = process::proc_dir(std::process::id()).unwrap();
        let maps = File::from(process::open_at(dir.as_fd(), "maps", libc::O_RDONLY).unwrap());
        let text = process::read_text(dir.as_fd(), "maps").unwrap();
        let buffer = vec![0u8; 3 * 4096];
        let code = the_kernel_is_asked_about_our_own_mappings as *const () as u64;
        let cases = [(buffer.as_ptr() as u64, 112, true), (code, 112, false), (0, 112, false)];
        for (address, len, want) in cases {
            assert_eq!(writable(&text, address, len), want, "{address:#x} from the text");
            assert_eq!(buffer_writable(&maps, dir.as_fd(), address, len).unwrap(), want);
            match query_writable(&maps, address, len) {
                Ok(answer) => assert_eq!(answer, want, "{address:#x} by PROCMAP_QUERY"),
                // Before Linux 6.11: the text is read instead.
                Err(err) => assert_eq!(err.raw_os_error(), Some(libc::ENOTTY), "{err}"),
            }
        }
        assert_eq!(std::mem::size_of::<ProcmapQuery>(), 104);
    }

    #[test]
    fn only_writable_mappings_take_the_answer() {
        let maps = "00400000-00401000 r-xp 00000000 08:01 1 /bin/x\n\
                    00600000-00601000 rw-p 00000000 00:00 0\n\
                    00601000-00603000 rw-p 00000000 00:00 0 [heap]\n\
                    7f0000000000-7f0000001000 r--p 00000000 08:01 2 /lib/y\n\
                    ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]\n";
        assert!(writable(maps, 0x600000, 112));
        assert!(writable(maps, 0x600fc0, 112), "across two adjacent writable mappings");
        assert!(writable(maps, 0x602f90, 112));
        assert!(!writable(maps, 0x602fa0, 112), "runs off the end of the heap");
        assert!(!writable(maps, 0, 112), "NULL");
        assert!(!writable(maps, 0x400000, 112), "code");
        assert!(!writable(maps, 0x7f0000000000, 112), "read-only data");
        assert!(!writable(maps, 0x500000, 112), "unmapped");
        assert!(!writable(maps, 0xffffffffff600000, 112), "vsyscall");
        assert!(!writable(maps, u64::MAX - 8, 112), "wraps around");
        assert!(!writable("", 0x600000, 112));
    }
}
