//! Pid namespaces: which one a process is in, and when that namespace's init started.
//!
//! A container's uptime counts from the start of its pid namespace's init. The init is
//! found by walking up the caller's parents; processes that joined the namespace from
//! outside (`docker exec`, `nsenter`) have parents outside it, so for them the namespace's
//! init is found by one scan of /proc. Either way the answer is cached per namespace.

use std::os::unix::fs::MetadataExt;

use dashmap::DashMap;

/// The pid namespace of `pid` as its nsfs inode number.
pub fn pid_ns_of(pid: u32) -> std::io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/pid"))?.ino())
}

/// A /proc/PID file as text. Thread names are arbitrary bytes (prctl PR_SET_NAME), so
/// invalid UTF-8 is replaced rather than failing the whole read.
pub fn read_proc_text(path: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    })
}

/// Start time (clock ticks since boot) of a process, from /proc/PID/stat.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let text = read_proc_text(&format!("/proc/{pid}/stat"))?;
    parse_stat_start(&text)
}

/// Field 22 (starttime) and field 4 (ppid) of /proc/PID/stat. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After ')': state(3) ppid(4) ... starttime(22): ppid is the 2nd, starttime the 20th.
    let ppid = fields.nth(1)?.parse().ok()?;
    let start = fields.nth(17)?.parse().ok()?;
    Some((ppid, start))
}

fn parse_stat_start(text: &str) -> Option<u64> {
    parse_stat(text).map(|(_, start)| start)
}

/// Init of one pid namespace, as seen from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NsInit {
    pid: u32,
    start_ticks: u64,
}

/// Cache: pid namespace inode -> its init. Entries are checked against the init's start
/// time before use, so a recycled namespace inode or init pid is never trusted.
#[derive(Debug, Default)]
pub struct NsInits {
    inits: DashMap<u64, NsInit>,
}

impl NsInits {
    pub fn new() -> NsInits {
        NsInits::default()
    }

    /// Start time of the init of namespace `ns`, which process `pid` is in.
    pub fn init_start(&self, ns: u64, pid: u32) -> Option<u64> {
        if let Some(init) = self.inits.get(&ns).map(|e| *e) {
            if start_ticks(init.pid) == Some(init.start_ticks)
                && pid_ns_of(init.pid).ok() == Some(ns)
            {
                return Some(init.start_ticks);
            }
            self.inits.remove(&ns);
        }
        let init = find_by_parents(ns, pid).or_else(|| find_by_scan(ns))?;
        self.inits.insert(ns, init);
        Some(init.start_ticks)
    }

    /// Drops namespaces whose init is gone.
    pub fn sweep(&self) {
        self.inits.retain(|_, init| start_ticks(init.pid) == Some(init.start_ticks));
    }

    pub fn len(&self) -> usize {
        self.inits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inits.is_empty()
    }
}

/// Whether `pid` is pid 1 of its innermost namespace (last NSpid entry).
fn is_ns_init(pid: u32) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .ok()
        .and_then(|s| s.nspid)
        .and_then(|ids| ids.last().copied())
        == Some(1)
}

/// Walks from `pid` up its parents while they stay in namespace `ns`; the last one in it is
/// the init when it is pid 1 there.
fn find_by_parents(ns: u64, pid: u32) -> Option<NsInit> {
    let mut current = pid;
    // A parent chain is short; the bound only guards against a cycle through pid reuse.
    for _ in 0..64 {
        let text = read_proc_text(&format!("/proc/{current}/stat"))?;
        let (ppid, start) = parse_stat(&text)?;
        if is_ns_init(current) {
            return Some(NsInit { pid: current, start_ticks: start });
        }
        if ppid == 0 || pid_ns_of(ppid).ok()? != ns {
            return None;
        }
        current = ppid;
    }
    None
}

/// Scans /proc for pid 1 of namespace `ns`.
fn find_by_scan(ns: u64) -> Option<NsInit> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid_ns_of(pid).ok() == Some(ns) && is_ns_init(pid) {
            return Some(NsInit { pid, start_ticks: start_ticks(pid)? });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_odd_command_names() {
        let text = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        assert_eq!(parse_stat(text), Some((7, 12345)));
    }

    #[test]
    fn thread_with_a_non_utf8_name_still_has_a_start_time() {
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let name = b"bad\xff\xfename\0";
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            // SAFETY: gettid has no arguments and cannot fail.
            tid_tx.send(unsafe { libc::gettid() } as u32).expect("send");
            stop_rx.recv().ok();
        });
        let tid = tid_rx.recv().expect("tid");
        assert!(std::fs::read_to_string(format!("/proc/{tid}/stat")).is_err(), "name is not UTF-8");
        assert!(start_ticks(tid).is_some());
        stop_tx.send(()).expect("stop");
        thread.join().expect("join");
    }

    #[test]
    fn truncated_stat_is_none() {
        assert_eq!(parse_stat("42 (a) S 7 42"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_has_a_namespace_and_start() {
        let me = std::process::id();
        assert!(pid_ns_of(me).is_ok());
        assert!(start_ticks(me).is_some());
    }
}
