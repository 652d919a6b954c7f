//! Root integration tests of the daemon under hostile conditions: callers that die in the
//! middle of their requests, a cgroup removed while its identity is cached. The daemon must
//! never panic, never hang a reader, and keep serving everybody else.

mod common;

use std::time::Duration;

use common::*;

/// Many readers killed at random points of their open/read/close loops; afterwards the
/// server still answers and has logged no panic.
#[test]
fn callers_killed_mid_request_do_not_hurt_the_server() {
    let Some(_leaks) = setup() else { return };
    let m = Mounted::new();
    let cg = TestCgroup::new();
    cg.memory_limit(128 * MIB);
    // 40 rounds of: 4 readers hammering every view, all SIGKILLed after a few ms.
    let script = r#"
import os, signal, subprocess, sys, time
views = sys.argv[1:]
for round in range(40):
    kids = [subprocess.Popen([sys.executable, "-c",
        "import sys\nwhile True:\n for v in sys.argv[1:]:\n  open(v,'rb').read()", *views])
        for _ in range(4)]
    time.sleep(0.002 * (round % 5))
    for k in kids:
        k.send_signal(signal.SIGKILL)
    for k in kids:
        k.wait()
print("done")
"#;
    let views: Vec<_> = VIEWS.iter().map(|v| m.path(v)).collect();
    let out = Reader::new(python3())
        .args(["-c", script])
        .args(&views)
        .in_cgroup(&cg)
        .timeout(Duration::from_secs(120))
        .run_ok();
    assert!(out.contains("done"), "{out}");

    // Still serving, with the right view, for a new caller in the same cgroup.
    let meminfo = Reader::new("cat").arg(m.path("proc/meminfo")).in_cgroup(&cg).run_ok();
    assert_eq!(meminfo_value(&meminfo, "MemTotal"), Some(128 * 1024));
    let log = m.log();
    assert!(!log.contains("panicked"), "server log shows a panic:\n{log}");
    drop(cg);
    m.stop();
}

/// A process reads a view (its identity is now cached), leaves its cgroup, removes it and
/// reads another view at once: it gets the view of where it is now, not EIO.
#[test]
fn cgroup_removed_while_identity_is_cached() {
    let Some(_leaks) = setup() else { return };
    // A long TTL keeps the stale identity in the cache for the second read.
    let m = Mounted::with_args(&["--cache-ttl-ms", "5000"]);
    let cg = TestCgroup::new();
    cg.memory_limit(64 * MIB);
    let roots = cgroup_layout().roots();
    let script = r#"
import os, sys
mnt, dirs, roots = sys.argv[1], sys.argv[2].split(","), sys.argv[3].split(",")
first = open(mnt + "/proc/meminfo").read()
for r in roots:
    open(r + "/cgroup.procs", "w").write("0")
for d in dirs:
    os.rmdir(d)
try:
    swaps = open(mnt + "/proc/swaps").read()
    print("swaps ok", len(swaps))
except OSError as e:
    print("swaps error", e)
print(first.splitlines()[0])
"#;
    let join = |v: Vec<std::path::PathBuf>| {
        v.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
    };
    let out = Reader::new(python3())
        .args(["-c", script])
        .arg(m.dir())
        .arg(join(cg.dirs()))
        .arg(join(roots))
        .in_cgroup(&cg)
        .run_ok();
    assert!(out.contains("swaps ok"), "second read failed after the cgroup was removed:\n{out}");
    assert!(out.contains("MemTotal:          65536 kB"), "first read was not the cgroup's:\n{out}");
    let log = m.log();
    assert!(!log.contains("panicked"), "server log shows a panic:\n{log}");
    drop(cg);
    m.stop();
}
