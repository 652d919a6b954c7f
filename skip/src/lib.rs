//! Skips that show.
//!
//! libtest has no "skipped" outcome: a test that cannot run here returns early and passes as
//! `ok`, and its "skipped: ..." line is hidden with the rest of its output. So every test of
//! the workspace that skips says so through this crate, which
//!
//! - prints `skipped: REASON` (seen with `--nocapture` or when the test fails);
//! - appends `TEST\tKIND\tREASON` to a file in `$SYSVISOR_SKIP_DIR` when that is set
//!   (`scripts/test.sh` sets it and ends with the list of skipped tests and why);
//! - with `CI=true`, fails the test (panics) when the skip is [`Kind::Required`]: CI runs as
//!   root on a machine that has /dev/fuse and everything `scripts/install-deps.sh`
//!   installs, so such a skip means the CI machine is not what the tests need.
//!
//! [`Kind::Optional`] skips are what a correct machine may lack (a kernel feature, a cgroup
//! controller, a second CPU, or a suite turned off on purpose with `SYSVISOR_E2E=skip`):
//! listed, never failed.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The directory the skip records go to.
pub const ENV_DIR: &str = "SYSVISOR_SKIP_DIR";

/// Whether CI may skip this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Something a CI machine has: root, /dev/fuse, an installed tool (runc, busybox,
    /// docker, python3, lxcfs, ...). Fails the test when `CI=true`.
    Required,
    /// Something a correct machine may lack, or a suite turned off on purpose.
    Optional,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Required => "required",
            Kind::Optional => "optional",
        }
    }
}

/// Records that the calling test skips, and why. Panics when `CI=true` and `kind` is
/// [`Kind::Required`].
#[track_caller]
pub fn skip(kind: Kind, reason: &str) {
    println!("skipped: {reason}");
    record(&test_name(), kind, reason);
    if kind == Kind::Required && ci() {
        panic!("CI=true: this test must run here, but it would skip: {reason}");
    }
}

/// [`skip`] of a [`Kind::Required`] reason.
#[track_caller]
pub fn required(reason: &str) {
    skip(Kind::Required, reason)
}

/// [`skip`] of a [`Kind::Optional`] reason.
#[track_caller]
pub fn optional(reason: &str) {
    skip(Kind::Optional, reason)
}

/// Whether this process runs as root; if not, records a required skip (`not root`).
#[track_caller]
pub fn unless_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        required("not root");
    }
    root
}

/// Root with /dev/fuse (what mounting a FUSE server takes); if not, records a required
/// skip saying which is missing.
#[track_caller]
pub fn unless_root_and_fuse() -> bool {
    if !unless_root() {
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        required("no /dev/fuse");
        return false;
    }
    true
}

/// Whether `CI` is set to true (`true` or `1`, as CI services set it).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// `BINARY::TEST`: libtest runs each test on a thread named after it; the binary is the
/// test executable's name without cargo's hash (`daemon-0123abcd` -> `daemon`).
pub fn test_name() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
    let binary = stem.map(|s| strip_hash(&s).to_string()).unwrap_or_else(|| "?".into());
    let thread = std::thread::current();
    match thread.name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => binary,
    }
}

/// `name` without a trailing `-HASH` of 16 hex digits (cargo's test binaries).
fn strip_hash(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((base, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            base
        }
        _ => name,
    }
}

/// Appends one record to `$SYSVISOR_SKIP_DIR/skips-PID.tsv` (one file per process: lines
/// of one process never interleave with another's). A record that cannot be written is
/// reported on stderr; the skip itself stands.
pub fn record(test: &str, kind: Kind, reason: &str) {
    let Some(dir) = std::env::var_os(ENV_DIR).filter(|d| !d.is_empty()).map(PathBuf::from) else {
        return;
    };
    let path = dir.join(format!("skips-{}.tsv", std::process::id()));
    let line = format!("{}\t{}\t{}\n", one_line(test), kind.as_str(), one_line(reason));
    let written = std::fs::create_dir_all(&dir).and_then(|_| {
        OpenOptions::new().create(true).append(true).open(&path)?.write_all(line.as_bytes())
    });
    if let Err(e) = written {
        eprintln!("sysvisor-skip: cannot record the skip in {}: {e}", path.display());
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_hashes_are_stripped() {
        assert_eq!(strip_hash("daemon-0123456789abcdef"), "daemon");
        assert_eq!(strip_hash("sysvisor-bench"), "sysvisor-bench");
        assert_eq!(strip_hash("a-b-0123456789ABCDEF"), "a-b");
        assert_eq!(strip_hash("x-0123"), "x-0123");
    }

    #[test]
    fn the_test_name_is_the_threads() {
        assert!(test_name().ends_with("::tests::the_test_name_is_the_threads"), "{}", test_name());
    }

    #[test]
    fn records_are_one_line_each() {
        let dir = std::env::temp_dir().join(format!("sysvisor-skip-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::env::set_var(ENV_DIR, &dir);
        record("bin::a", Kind::Optional, "no\tio_uring\nhere");
        record("bin::b", Kind::Required, "not root");
        std::env::remove_var(ENV_DIR);
        let text =
            std::fs::read_to_string(dir.join(format!("skips-{}.tsv", std::process::id()))).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(text, "bin::a\toptional\tno io_uring here\nbin::b\trequired\tnot root\n");
    }
}
