//! Scenario "fairness": how much one container's flood of trapped mount calls holds up
//! another container's (issue 11, item 7). The scenario itself is shared with the e2e test
//! (`sysvisor_e2e::fairness`): a flooder container runs N shell loops of `mount -t proc` +
//! `umount` (each a helper process of the daemon) while a victim container times pairs of
//! a new tmpfs mount and its umount. Measured idle, then flooded once per
//! `--trap-per-container` value (the harness's daemon is restarted with it; 4, the number
//! of trap workers, means no cap). Runs on the private Docker engine of the e2e crate.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sysvisor_e2e::fairness::{measure, measure_flooded, Figures};
use sysvisor_e2e::Engine;

use crate::procstat;
use crate::report::{self, Header};

#[derive(clap::Args, Clone)]
pub struct FairnessArgs {
    /// Timed mount+umount pairs in the victim per measurement.
    #[arg(long, default_value_t = 300)]
    pairs: usize,
    /// Mount loops in the flooder.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// `--trap-per-container` values of the daemon to measure with, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    caps: Vec<u32>,
    /// Write the results (and the run's header) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Serialize)]
struct Row {
    case: String,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// The target for a flooded victim: p99 under 5 ms.
    p99_under_5ms: bool,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header,
    pairs: usize,
    flood_threads: usize,
    results: Vec<Row>,
}

fn row(case: String, f: Figures) -> Row {
    Row {
        case,
        p50_us: f.p50_us,
        p99_us: f.p99_us,
        max_us: f.max_us,
        p99_under_5ms: f.p99_us < 5000,
    }
}

pub fn run(a: FairnessArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (a private dockerd)");
    }
    let engine = Engine::get().context("the e2e engine is disabled (SYSVISOR_E2E=skip)")?;
    let tool = sysvisor_e2e::static_tool("mountlat").context("cannot build mountlat")?;
    let versions = [
        ("sysvisor_fs", report::binary_version(&engine.fs_bin)),
        ("sysvisor_runc", report::binary_version(&engine.runtime_bin)),
    ];
    let header = Header::new("fairness", &versions);
    header.print();
    println!(
        "victim: {} tmpfs mount+umount pairs; flooder: {} loops of mount -t proc + umount",
        a.pairs, a.threads
    );
    println!();
    let mut rows = Vec::new();
    procstat::wait_quiet();
    rows.push(row("idle".into(), measure(&engine, &tool, a.pairs).map_err(anyhow::Error::msg)?));
    for cap in &a.caps {
        let arg = cap.to_string();
        let Some(_plain_after) = engine.fs_daemon_with(&["--trap-per-container", &arg], &[]) else {
            bail!("the sysvisor-fs daemon running is not the harness's");
        };
        procstat::wait_quiet();
        let figures =
            measure_flooded(&engine, &tool, a.pairs, a.threads).map_err(anyhow::Error::msg)?;
        rows.push(row(format!("flooded, --trap-per-container {cap}"), figures));
    }
    println!("{:<36} {:>10} {:>10} {:>10}", "case", "p50 us", "p99 us", "max us");
    for r in &rows {
        println!("{:<36} {:>10} {:>10} {:>10}", r.case, r.p50_us, r.p99_us, r.max_us);
    }
    if let Some(path) = &a.json {
        let report = Report { header, pairs: a.pairs, flood_threads: a.threads, results: rows };
        report::write_json(path, &report)?;
    }
    Ok(())
}
