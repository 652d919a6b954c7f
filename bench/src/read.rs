//! Scenario "read": open + read to EOF + close in a loop on each virtual file, with 1, 2
//! and 8 reader threads, from a process inside a cgroup with a memory and a CPU limit.
//! Each (target, file, threads) cell runs in a fresh `sysvisor-bench read-worker` process
//! placed in the cgroup; the FUSE servers run outside it, as they would on a host.

use crate::chart::{self, Bar, Chart};
use crate::report::{self, Header};
use crate::{cgroup, pidns, procstat, targets, worker};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct ReadArgs {
    /// Measurement time per cell, seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Reader thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,8")]
    threads: Vec<usize>,
    /// Files below proc/, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "meminfo,cpuinfo,stat,uptime")]
    files: Vec<String>,
    #[command(flatten)]
    targets: targets::TargetArgs,
    /// Memory limit of the readers' cgroup, MiB.
    #[arg(long, default_value_t = 512)]
    memory_mib: u64,
    /// CPU limit (CFS quota) of the readers' cgroup, in CPUs (default: one less than the
    /// machine has, at least 1). Below the machine's CPU count sysvisor-fs and LXCFS render
    /// cpuinfo and stat for the limit; at or above it they pass the host's files through.
    #[arg(long)]
    cpus: Option<f64>,
    #[command(flatten)]
    out: report::OutputArgs,
}

#[derive(Serialize)]
struct CgroupInfo {
    version: u8,
    dirs: String,
    memory_limit_bytes: u64,
    cpu_limit_cpus: f64,
    /// Whether the CPU limit is below the machine's CPU count, so that cpuinfo and stat
    /// are rendered for it rather than passed through.
    cpu_views_rendered: bool,
}

#[derive(Serialize)]
struct Cell {
    target: String,
    file: String,
    threads: usize,
    #[serde(flatten)]
    r: worker::WorkerResult,
    /// The machine's CPU busy fraction just before the cell (see procstat::wait_quiet).
    host_cpu_busy_before: f64,
    /// The FUSE server's CPU time per read (user + system), microseconds; `None` for
    /// native /proc.
    server_us_per_op: Option<f64>,
}

/// The goals of issue 12, at 1 and 2 threads: ops/s at least this many times LXCFS's...
const OPS_GOAL: f64 = 20.0;
/// ...and a p50 at most this many times native /proc's.
const P50_GOAL: f64 = 1.5;

#[derive(Serialize)]
struct TargetCheck {
    /// `sysvisor-fs` (view cache on), `sysvisor-fs-cold` (off), `sysvisor-fs-own`, ...
    target: String,
    file: String,
    threads: usize,
    /// sysvisor-fs ops/s divided by LXCFS ops/s; goal >= [`OPS_GOAL`].
    ops_ratio_vs_lxcfs: Option<f64>,
    /// sysvisor-fs p50 divided by native /proc p50; goal <= [`P50_GOAL`].
    p50_ratio_vs_native: Option<f64>,
    /// Each half of the target; `None` when a reference target was not measured.
    ops_met: Option<bool>,
    p50_met: Option<bool>,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header,
    cgroup: CgroupInfo,
    seconds_per_cell: f64,
    skipped: Vec<String>,
    results: Vec<Cell>,
    targets: Vec<TargetCheck>,
}

/// Runs one cell: a `read-worker` process inside the cgroup.
fn run_cell(
    cg: &cgroup::BenchCgroup,
    path: &Path,
    threads: usize,
    seconds: f64,
) -> Result<worker::WorkerResult> {
    let exe = std::env::current_exe().context("current_exe")?;
    let mut cmd = Command::new(exe);
    cmd.arg("read-worker")
        .arg("--path")
        .arg(path)
        .arg("--threads")
        .arg(threads.to_string())
        .arg("--seconds")
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    cg.join_on_spawn(&mut cmd);
    let mut child = cmd.spawn().context("cannot start the reader process")?;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds) + Duration::from_secs(60);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            bail!("reader on {} hung (killed)", path.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "reader on {} failed with {}: {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reader output")
}

pub fn run(a: ReadArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (cgroups and FUSE mounts)");
    }
    let mut header = Header::new("read", &a.targets.versions());
    let nproc = header.machine.nproc;
    let cpus = a.cpus.unwrap_or_else(|| default_cpus(nproc));
    let memory = a.memory_mib << 20;

    // Started outside the cgroup; stopped and unmounted when dropped, whatever happens.
    let servers = targets::Servers::start(&a.targets, false)?;
    header.versions.extend(servers.transports());
    let cg = cgroup::BenchCgroup::new(memory, cpus)?;
    // The own-files target reads a container registered with its init in the readers'
    // cgroup (so its files are rendered for the same limits), below `<id>/`.
    let mut roots = servers.roots.clone();
    let mut _own_init = None;
    if let Some((_, root)) = roots.iter_mut().find(|(t, _)| t == targets::OWN_TARGET) {
        let daemon = servers.server(targets::OWN_TARGET).context("the own-files daemon")?;
        let mut cmd = pidns::command("sleep");
        cmd.arg("100000").stdin(Stdio::null());
        cg.join_on_spawn(&mut cmd);
        let init = pidns::NsInit::spawn(cmd, "sleep")?;
        let id = "sysvisor-bench-read";
        crate::memory::register(&daemon.socket(), id.to_string(), init.pid, 0)?;
        *root = root.join(id);
        _own_init = Some(init);
    }
    let cgroup_info = CgroupInfo {
        version: cg.version,
        dirs: cg.describe(),
        memory_limit_bytes: memory,
        cpu_limit_cpus: cpus,
        cpu_views_rendered: cpus < nproc as f64,
    };

    header.print();
    println!(
        "readers: cgroup v{} with memory {} MiB, CPU quota {cpus} CPUs; {} s per cell",
        cg.version, a.memory_mib, a.seconds
    );
    if cgroup_info.cpu_views_rendered {
        println!("cpuinfo and stat: rendered for the quota's {cpus} of {nproc} CPUs");
    } else {
        println!(
            "cpuinfo and stat: the quota ({cpus} CPUs) is not below the machine's {nproc} CPUs, \
             so every server passes the host's files through (nothing rendered)"
        );
    }
    println!(
        "sysvisor-fs: view cache of 100 ms (re-renders at most every 100 ms per cgroup); \
         sysvisor-fs-cold: no cache (renders on every open, as LXCFS does)"
    );
    for s in &servers.skipped {
        println!("skipped: {s}");
    }
    println!();
    println!(
        "{:<22} {:<8} {:>3} {:>10} {:>9} {:>9} {:>9} {:>7} {:>14} {:>9}",
        "target",
        "file",
        "thr",
        "ops/s",
        "p50 us",
        "p99 us",
        "p999 us",
        "errors",
        "MemTotal",
        "srv us/op"
    );
    let mut results = Vec::new();
    for file in &a.files {
        for &threads in &a.threads {
            for (target, root) in &roots {
                let path = root.join("proc").join(file);
                let host_cpu_busy_before = procstat::wait_quiet();
                let server = servers.server(target).and_then(|s| s.pid());
                let cpu_before = server.and_then(|pid| procstat::cpu_seconds(pid).ok());
                let r = run_cell(&cg, &path, threads, a.seconds)
                    .with_context(|| format!("{target} {file} {threads} threads"))?;
                let ops = r.ops_per_s * a.seconds;
                let server_us_per_op = server
                    .and_then(|pid| procstat::cpu_seconds(pid).ok())
                    .zip(cpu_before)
                    .map(|(after, before)| (after - before) * 1e6 / ops.max(1.0));
                println!(
                    "{:<22} {:<8} {:>3} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>14} {:>9}",
                    target,
                    file,
                    threads,
                    r.ops_per_s,
                    r.latency.p50_us,
                    r.latency.p99_us,
                    r.latency.p999_us,
                    r.errors,
                    r.memtotal.clone().unwrap_or_default(),
                    server_us_per_op.map_or("-".into(), |v| format!("{v:.2}")),
                );
                if let Some(e) = &r.first_error {
                    println!("    first error: {e}");
                }
                let _ = io::stdout().flush();
                results.push(Cell {
                    target: target.clone(),
                    file: file.clone(),
                    threads,
                    r,
                    host_cpu_busy_before,
                    server_us_per_op,
                });
            }
        }
    }
    drop(cg);
    let skipped = servers.skipped.clone();
    drop(servers);

    let checks = check_targets(&results);
    println!();
    println!(
        "targets (1 and 2 threads): sysvisor-fs ops/s >= {OPS_GOAL} x LXCFS, p50 <= {P50_GOAL} x \
         native"
    );
    for c in &checks {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
        println!(
            "  {:<22} {:<8} {} thr: ops/s vs lxcfs x{:>6} ({:<7})  p50 vs native x{:>6} ({})",
            c.target,
            c.file,
            c.threads,
            f(c.ops_ratio_vs_lxcfs),
            met(c.ops_met),
            f(c.p50_ratio_vs_native),
            met(c.p50_met),
        );
    }
    println!();

    let report = Report {
        header,
        cgroup: cgroup_info,
        seconds_per_cell: a.seconds,
        skipped,
        results,
        targets: checks,
    };
    a.out.write(&report, || chart::svg(&ops_chart(&report)))?;
    let errors: u64 = report.results.iter().map(|c| c.r.errors).sum();
    if errors > 0 {
        bail!("{errors} reads failed");
    }
    Ok(())
}

/// The default CPU limit of the readers: below the machine's CPU count (so that cpuinfo and
/// stat are rendered, not passed through) where the machine has more than one.
pub fn default_cpus(nproc: usize) -> f64 {
    nproc.saturating_sub(1).max(1) as f64
}

/// "met", "NOT met" or "n/a", for the target lines of every scenario.
pub fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "met",
        Some(false) => "NOT met",
        None => "n/a",
    }
}

fn check_targets(results: &[Cell]) -> Vec<TargetCheck> {
    let find = |t: &str, f: &str, n: usize| {
        results.iter().find(|c| c.target == t && c.file == f && c.threads == n)
    };
    let mut out = Vec::new();
    for c in results
        .iter()
        .filter(|c| c.target.starts_with("sysvisor-fs") && (c.threads == 1 || c.threads == 2))
    {
        let ops = find("lxcfs", &c.file, c.threads)
            .filter(|l| l.r.ops_per_s > 0.0)
            .map(|l| c.r.ops_per_s / l.r.ops_per_s);
        let p50 = find("native", &c.file, c.threads)
            .filter(|n| n.r.latency.p50_us > 0.0)
            .map(|n| c.r.latency.p50_us / n.r.latency.p50_us);
        out.push(TargetCheck {
            target: c.target.clone(),
            file: c.file.clone(),
            threads: c.threads,
            ops_ratio_vs_lxcfs: ops,
            p50_ratio_vs_native: p50,
            ops_met: ops.map(|o| o >= OPS_GOAL),
            p50_met: p50.map(|p| p <= P50_GOAL),
        });
    }
    out
}

/// ops/s per (file, threads), one bar per target, log scale.
fn ops_chart(report: &Report) -> Chart {
    Chart {
        title: format!(
            "open+read+close ops/s, {} CPUs, kernel {}, {} s per cell",
            report.header.machine.nproc, report.header.machine.kernel, report.seconds_per_cell
        ),
        y_label: "ops/s (log)".into(),
        log: true,
        bars: report
            .results
            .iter()
            .map(|c| Bar::new(format!("{} {}t", c.file, c.threads), &c.target, c.r.ops_per_s))
            .collect(),
        reference: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_cpu_limit_is_below_the_machines() {
        assert_eq!(super::default_cpus(2), 1.0);
        assert_eq!(super::default_cpus(16), 15.0);
        assert_eq!(super::default_cpus(1), 1.0);
    }
}
