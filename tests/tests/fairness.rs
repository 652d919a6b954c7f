//! One container's flood of trapped mount calls must not hold up another's (issue 11,
//! item 7; docs/benchmarks.md "Fairness of the mount trap"). The scenario is
//! [`sysvisor_e2e::fairness`], also run by `sysvisor-bench fairness`: 16 threads of proc
//! mounts in one container, 300 timed tmpfs mount+umount pairs in another. The daemon
//! serves at most `--trap-per-container` (2 of its 4 workers) notifications of one
//! container at once.
//!
//! The bound is generous on purpose: the target is a p99 under 5 ms, but this test runs on
//! a shared 2-core VM where other builds and tests compete for the CPUs (an idle victim
//! alone measured a p99 of 17 ms there under load), so it fails only above
//! [`P99_BOUND_US`]; without the cap the flooded p99 was 113 ms on the same machine. The
//! figures are printed (run with `--nocapture`).
//!
//! Needs root, Docker (the harness's private engine) and gcc with a static libc.

use sysvisor_e2e::fairness::{measure, measure_flooded};
use sysvisor_e2e::Engine;

/// The p99 a victim's mount+umount pair may take while another container floods.
const P99_BOUND_US: u64 = 50_000;
const PAIRS: usize = 300;
const FLOOD_THREADS: usize = 16;

#[test]
fn a_flood_of_mounts_in_one_container_keeps_anothers_p99_low() {
    let Some(e) = Engine::exclusive() else { return };
    let Some(tool) = sysvisor_e2e::static_tool("mountlat") else { return };
    let idle = measure(&e, &tool, PAIRS).unwrap();
    let flooded = measure_flooded(&e, &tool, PAIRS, FLOOD_THREADS).unwrap();
    println!("victim mount+umount pair: idle {idle}; another container flooding: {flooded}");
    assert!(
        flooded.p99_us < P99_BOUND_US,
        "another container's flood held this one's mounts up: {flooded} (idle: {idle})"
    );
}
