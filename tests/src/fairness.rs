//! The fairness scenario of the mount trap, shared by the e2e test (tests/fairness.rs) and
//! `sysvisor-bench fairness`: a flooder container runs N shell loops of `mount -t proc` +
//! `umount` (each a helper process of the daemon) while a victim container times pairs of
//! a new tmpfs mount and its umount (trapped, then continued by the daemon) with the static
//! tool tests/tools/mountlat.c.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::{Container, Engine, RUNTIME};

/// The victim's latencies of one mount+umount pair, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p50 {} us, p99 {} us, max {} us", self.p50_us, self.p99_us, self.max_us)
    }
}

/// The flooder's script: `threads` loops until /stop exists.
fn flood_script(threads: usize) -> String {
    format!(
        r#"for i in $(seq {threads}); do
  ( mkdir -p /p$i; while [ ! -e /stop ]; do mount -t proc proc /p$i && umount /p$i; done ) &
done
touch /flooding
wait"#
    )
}

/// Times `pairs` mount+umount pairs in a new system container; `tool` is the directory
/// holding the built mountlat ([`crate::static_tool`]).
pub fn measure(e: &Engine, tool: &Path, pairs: usize) -> Result<Figures, String> {
    let volume = format!("{}:/t:ro", tool.display());
    let options = ["--runtime", RUNTIME, "--tmpfs", "/w", "-v", &volume];
    let script = format!("mkdir -p /w/m && /t/mountlat {pairs} /w/m");
    let out = e.run_fg(&options, &["sh", "-c", &script]);
    if !out.success() {
        return Err(format!("the victim failed: {out}"));
    }
    let f: HashMap<String, String> = out.fields();
    let get = |key: &str| {
        f.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| format!("no {key} in {out}"))
    };
    Ok(Figures { p50_us: get("p50_us")?, p99_us: get("p99_us")?, max_us: get("max_us")? })
}

/// Starts a flooder with `threads` loops and waits until they run.
fn flood(e: &Engine, threads: usize) -> Result<Container<'_>, String> {
    let c = e.start(&["--runtime", RUNTIME], &["sh", "-c", &flood_script(threads)]);
    for _ in 0..100 {
        if c.exec(&["test", "-e", "/flooding"]).success() {
            std::thread::sleep(Duration::from_secs(1));
            return Ok(c);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the flooder did not start: {}", c.sh("ls /")))
}

/// [`measure`] while a flooder with `threads` loops runs in another container; the
/// flooder is removed after, and nothing of it may be left.
pub fn measure_flooded(
    e: &Engine,
    tool: &Path,
    pairs: usize,
    threads: usize,
) -> Result<Figures, String> {
    let flooder = flood(e, threads)?;
    let figures = measure(e, tool, pairs);
    let _ = flooder.exec(&["touch", "/stop"]);
    let id = flooder.id();
    let range = flooder.uid_map();
    if !flooder.remove().success() {
        return Err(format!("cannot remove the flooder {id}"));
    }
    e.assert_no_leaks(&id, range);
    figures
}
