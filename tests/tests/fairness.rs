//! One container's flood of trapped mount calls must not hold up another's (issue 11,
//! item 7; docs/benchmarks.md "Fairness of the mount trap").
//!
//! A flooder container runs 16 shell loops of `mount -t proc` + `umount` (each a helper
//! process of the daemon); a second container times 300 pairs of a new tmpfs mount and its
//! umount (trapped, continued) with tests/tools/mountlat.c. The daemon serves at most
//! `--trap-per-container` (2 of its 4 workers) notifications of one container at once.
//!
//! The bound is generous on purpose: the target is a p99 under 5 ms, but this test runs on
//! a shared 2-core VM where other builds and tests compete for the CPUs, so it fails only
//! above [`P99_BOUND_US`] (before the cap, 11 ms was measured with 16 flooding threads).
//! The figures are printed (run with `--nocapture`).
//!
//! Needs root, Docker (the harness's private engine) and gcc with a static libc.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sysvisor_e2e::{Container, Engine, RUNTIME};

/// The p99 a victim's mount+umount pair may take while another container floods.
const P99_BOUND_US: u64 = 50_000;

const FLOOD: &str = r#"
for i in $(seq 16); do
  ( mkdir -p /p$i; while [ ! -e /stop ]; do mount -t proc proc /p$i && umount /p$i; done ) &
done
touch /flooding
wait
"#;

/// The victim's figures: p50_us, p99_us, max_us.
fn measure(e: &Engine, tool: &Path) -> HashMap<String, String> {
    let volume = format!("{}:/t:ro", tool.display());
    let options = ["--runtime", RUNTIME, "--tmpfs", "/w", "-v", &volume];
    let out = e.run_fg(&options, &["sh", "-c", "mkdir -p /w/m && /t/mountlat 300 /w/m"]);
    let out = out.expect_success();
    out.fields()
}

fn us(f: &HashMap<String, String>, key: &str) -> u64 {
    f.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key} in {f:?}"))
}

/// Starts the flooder and waits until its loops run.
fn flood(e: &Engine) -> Container<'_> {
    let c = e.start(&["--runtime", RUNTIME], &["sh", "-c", FLOOD]);
    for _ in 0..100 {
        if c.exec(&["test", "-e", "/flooding"]).success() {
            std::thread::sleep(Duration::from_secs(1));
            return c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the flooder did not start: {}", c.sh("ls /").stdout);
}

/// The victim's figures while a flooder runs; the flooder is removed after.
fn measure_flooded(e: &Engine, tool: &Path) -> HashMap<String, String> {
    let flooder = flood(e);
    let figures = measure(e, tool);
    let _ = flooder.exec(&["touch", "/stop"]);
    let id = flooder.id();
    let range = flooder.uid_map();
    assert!(flooder.remove().success());
    e.assert_no_leaks(&id, range);
    figures
}

#[test]
fn a_flood_of_mounts_in_one_container_keeps_anothers_p99_low() {
    let Some(e) = Engine::exclusive() else { return };
    let Some(tool) = sysvisor_e2e::static_tool("mountlat") else { return };
    let idle = measure(&e, &tool);
    let flooded = measure_flooded(&e, &tool);
    // For comparison, not checked: the trap without the cap (every worker for one
    // container), as it was before.
    let uncapped = {
        let Some(_plain_after) = e.fs_daemon_with(&["--trap-per-container", "4"], &[]) else {
            return;
        };
        measure_flooded(&e, &tool)
    };
    let _ = std::fs::remove_dir_all(&tool);
    let show = |f: &HashMap<String, String>| {
        format!("p50 {} p99 {} max {}", us(f, "p50_us"), us(f, "p99_us"), us(f, "max_us"))
    };
    println!(
        "victim mount+umount pair, us: idle {}; flooded, cap 2: {}; flooded, no cap: {}",
        show(&idle),
        show(&flooded),
        show(&uncapped)
    );
    assert!(
        us(&flooded, "p99_us") < P99_BOUND_US,
        "another container's flood held this one's mounts up: {flooded:?} (idle: {idle:?})"
    );
}
