//! sysinfo(2) inside a system container, answered by the sysvisor-fs trap with the
//! container's figures (issue 15, item 1; docs/fs.md, "System calls"), and attacks on the
//! write of the answer into the caller's memory (docs/security.md).
//!
//! busybox `free` and `uptime` ask sysinfo; glibc's `sysconf(_SC_PHYS_PAGES)` (what
//! `getconf _PHYS_PAGES` prints; the busybox image has no getconf) and `get_phys_pages`
//! too: a small static C program (tests/tools/sysinfo_probe.c, built with `gcc -static` at
//! test time, [`sysvisor_e2e::static_tool`]) prints what they say.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use sysvisor_e2e::{leaks, Container, Engine, Output};

/// `-m 256m`, in bytes and KiB.
const LIMIT: u64 = 256 << 20;
const LIMIT_KB: u64 = LIMIT / 1024;

/// The built probe, shared by the tests of this file (they run at once; `static_tool`
/// rebuilds into the same scratch directory, which goes at the end of the run).
struct Probe(PathBuf);

impl Probe {
    fn build() -> Option<&'static Probe> {
        static PROBE: OnceLock<Option<Probe>> = OnceLock::new();
        PROBE.get_or_init(|| sysvisor_e2e::static_tool("sysinfo_probe").map(Probe)).as_ref()
    }

    /// The `-v` option that binds it at /probe.
    fn volume(&self) -> String {
        format!("{}:/probe:ro", self.0.display())
    }
}

#[track_caller]
fn number(f: &HashMap<String, String>, key: &str, out: &Output) -> u64 {
    let value = f.get(key).unwrap_or_else(|| panic!("no {key}: {out}"));
    value.parse().unwrap_or_else(|_| panic!("{key}={value}: {out}"))
}

/// What the probe says as `user` ("" for root) in `c`, checked to be the container's.
#[track_caller]
fn assert_container_figures(e: &Engine, c: &Container<'_>, user: &str) {
    let out = if user.is_empty() {
        c.exec(&["/probe/sysinfo_probe", "show"])
    } else {
        e.docker(&["exec", "-u", user, c.name.as_str(), "/probe/sysinfo_probe", "show"])
    };
    assert!(out.success(), "{out}");
    let f = out.fields();
    assert_eq!(number(&f, "total_bytes", &out), LIMIT, "sysinfo's totalram: {out}");
    assert_eq!(number(&f, "mem_unit", &out), 1, "bytes, as the kernel gives them: {out}");
    assert!(number(&f, "freeram", &out) <= LIMIT, "{out}");
    let page = number(&f, "page_size", &out);
    assert_eq!(number(&f, "phys_pages", &out) * page, LIMIT, "sysconf(_SC_PHYS_PAGES): {out}");
    assert_eq!(number(&f, "get_phys_pages", &out) * page, LIMIT, "get_phys_pages: {out}");
    // The container started moments ago (the host has been up far longer in any CI run
    // worth the name; the bound is generous for a loaded machine).
    assert!(number(&f, "uptime", &out) < 300, "uptime counts from the container's start: {out}");
    // Its own tasks, not the host's hundreds.
    let procs = number(&f, "procs", &out);
    assert!((1..50).contains(&procs), "procs: {out}");
}

/// busybox `free` and `uptime`, glibc's page count, as root and as uid 1000: the
/// container's 256 MiB and its own uptime, agreeing with its /proc/meminfo.
#[test]
fn busybox_free_uptime_and_glibc_see_the_container() {
    let Some(e) = Engine::get() else { return };
    let Some(probe) = Probe::build() else { return };
    let c = e.start_system(&["-m", "256m", "-v", &probe.volume()]);

    let out = c.exec(&["free"]);
    assert!(out.success(), "{out}");
    let text = out.out();
    let mem = text.lines().find(|l| l.trim_start().starts_with("Mem:"));
    let total = mem.and_then(|l| l.split_whitespace().nth(1)).and_then(|t| t.parse::<u64>().ok());
    assert_eq!(total, Some(LIMIT_KB), "busybox free shows the limit: {text}");
    let meminfo = c.exec(&["head", "-1", "/proc/meminfo"]).out();
    assert!(meminfo.contains(&LIMIT_KB.to_string()), "free and meminfo agree: {meminfo}");

    let out = c.exec(&["uptime"]);
    assert!(out.success(), "{out}");
    // busybox prints "up N min" below an hour, "up H:MM" or "N days" beyond.
    let text = out.out();
    assert!(text.contains(" min,") && !text.contains("day"), "uptime is small: {text}");

    assert_container_figures(&e, &c, "");
    assert_container_figures(&e, &c, "1000");
    leaks::remove_and_assert_clean(&e, c);
}

/// Bad buffers, as root and as uid 1000: EFAULT as from the kernel, nothing read-only
/// written (a read-only page, the program's code, a read-only shared file mapped into the
/// buffer by a racing thread), and the daemon keeps answering.
#[test]
fn a_bad_sysinfo_buffer_gets_efault_and_nothing_is_written_elsewhere() {
    let Some(e) = Engine::get() else { return };
    let Some(probe) = Probe::build() else { return };
    let c = e.start_system(&["-m", "256m", "-v", &probe.volume()]);
    c.sh("echo 'read-only file' > /tmp/file && chmod 644 /tmp/file").expect_success();
    const ROUNDS: u64 = 2000;
    let rounds = ROUNDS.to_string();
    let command = ["/probe/sysinfo_probe", "attack", "/tmp/file", rounds.as_str()];
    let root = c.exec(&command);
    let mut as_user = vec!["exec", "-u", "1000", c.name.as_str()];
    as_user.extend_from_slice(&command);
    let user = e.docker(&as_user);
    for (who, out) in [("root", &root), ("uid 1000", &user)] {
        eprintln!("{who}: {}", out.out().replace('\n', " "));
        assert!(out.success(), "{who}: {out}");
        let f = out.fields();
        for key in ["null", "wild", "readonly", "code", "straddle"] {
            assert_eq!(f.get(key).map(String::as_str), Some("EFAULT"), "{who}: {key}: {out}");
        }
        for key in ["readonly_intact", "code_intact", "file_intact"] {
            assert_eq!(number(&f, key, out), 1, "{who}: {key}: {out}");
        }
        assert_eq!(number(&f, "race_other", out), 0, "{who}: EFAULT or an answer: {out}");
        assert_eq!(number(&f, "race_wrong", out), 0, "{who}: answers stay right: {out}");
        let (ok, efault) = (number(&f, "race_ok", out), number(&f, "race_efault", out));
        assert_eq!(ok + efault, ROUNDS, "{who}: {out}");
    }
    let file = c.exec(&["cat", "/tmp/file"]).out();
    assert_eq!(file.trim(), "read-only file", "the file mapped read-only is unchanged");
    // The daemon survived all of it and still answers for the container.
    assert_container_figures(&e, &c, "");
    leaks::remove_and_assert_clean(&e, c);
}
