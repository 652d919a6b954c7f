//! sysvisor-bench: measures sysvisor-fs against LXCFS and native /proc on the same machine
//! in the same run (issue #4). See docs/benchmarks.md.
//!
//! `sysvisor-bench read`: open + read to EOF + close in a loop on each virtual file, with
//! 1, 2 and 8 reader threads, from a process inside a cgroup with a memory and a CPU limit.
//! Each (target, file, threads) cell runs in a fresh `sysvisor-bench read-worker` process
//! placed in the cgroup; the FUSE servers run outside it, as they would on a host.

mod cgroup;
mod chart;
mod memory;
mod targets;
mod worker;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sysvisor-bench", version, about = "sysvisor-fs vs LXCFS vs native /proc")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenario "read": ops/s and latency of open+read+close per (target, file, threads).
    Read(ReadArgs),
    /// Scenario "memory": daemon RSS with N containers registered on its control socket.
    Memory(MemoryArgs),
    /// Internal: one measurement cell, run inside the cgroup; prints JSON.
    #[command(hide = true)]
    ReadWorker {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        seconds: f64,
    },
}

#[derive(clap::Args, Clone)]
struct ReadArgs {
    /// Measurement time per cell, seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Reader thread counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,8")]
    threads: Vec<usize>,
    /// Files below proc/, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "meminfo,cpuinfo,stat,uptime")]
    files: Vec<String>,
    /// Targets, comma-separated: native, lxcfs, sysvisor-fs.
    #[arg(long, value_delimiter = ',', default_value = "native,lxcfs,sysvisor-fs")]
    targets: Vec<String>,
    /// The sysvisor-fs binary (default: next to this binary, i.e. target/<profile>/).
    #[arg(long)]
    sysvisor_fs: Option<PathBuf>,
    /// The lxcfs binary.
    #[arg(long, default_value = "lxcfs")]
    lxcfs: String,
    /// Memory limit of the readers' cgroup, MiB.
    #[arg(long, default_value_t = 512)]
    memory_mib: u64,
    /// CPU limit (CFS quota) of the readers' cgroup, in CPUs (default: the number of CPUs).
    #[arg(long)]
    cpus: Option<f64>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG chart of ops/s here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Fail instead of skipping a target that cannot be started (e.g. lxcfs not installed).
    #[arg(long)]
    require_all: bool,
}

#[derive(clap::Args, Clone)]
struct MemoryArgs {
    /// Numbers of registered containers, comma-separated (each is a process in a pid
    /// namespace of its own).
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000")]
    containers: Vec<usize>,
    /// The sysvisor-fs binary (default: next to this binary).
    #[arg(long)]
    sysvisor_fs: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn memory_scenario(a: MemoryArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (FUSE mount, pid namespaces)");
    }
    let command = std::env::args().map(|a| shell_quote(&a)).collect::<Vec<_>>().join(" ");
    let machine = machine();
    let bin = a.sysvisor_fs.clone().unwrap_or_else(default_sysvisor_fs);
    let git =
        cmd_output("git", &["describe", "--always", "--dirty", "--tags"], Some(&workspace_root()));
    println!("# sysvisor-bench memory");
    println!("command: {command}");
    println!(
        "machine: {} CPUs ({}), {} MiB, kernel {}",
        machine.nproc,
        machine.cpu_model,
        machine.mem_total_kb / 1024,
        machine.kernel
    );
    println!(
        "versions: sysvisor-fs {git} ({})",
        cmd_output(&bin.display().to_string(), &["--version"], None)
    );
    println!();
    let points = memory::run(&bin, &a.containers)?;
    println!("{:>10} {:>10} {:>12} (20 MB + 50 KB each)", "containers", "RSS kB", "target kB");
    for p in &points {
        println!(
            "{:>10} {:>10} {:>12} {}",
            p.containers,
            p.rss_kb,
            p.target_kb,
            if p.met { "met" } else { "NOT met" }
        );
    }
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "scenario": "memory",
            "command": command,
            "machine": machine,
            "versions": { "sysvisor_fs_git": git },
            "results": points,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("write {}", path.display()))?;
        println!("\nJSON: {}", path.display());
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Read(a) => read(a),
        Cmd::Memory(a) => memory_scenario(a),
        Cmd::ReadWorker { path, threads, seconds } => {
            worker::run(path, threads, seconds).and_then(|r| {
                println!("{}", serde_json::to_string(&r)?);
                Ok(())
            })
        }
    };
    if let Err(e) = r {
        eprintln!("sysvisor-bench: {e:#}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Run description
// ---------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Machine {
    nproc: usize,
    mem_total_kb: u64,
    cpu_model: String,
    kernel: String,
}

#[derive(Serialize)]
struct Versions {
    sysvisor_bench: String,
    sysvisor_fs_git: String,
    sysvisor_fs_binary: String,
    lxcfs: String,
}

#[derive(Serialize)]
struct CgroupInfo {
    version: u8,
    dirs: String,
    memory_limit_bytes: u64,
    cpu_limit_cpus: f64,
}

#[derive(Serialize)]
struct Cell {
    target: String,
    file: String,
    threads: usize,
    #[serde(flatten)]
    r: worker::WorkerResult,
}

#[derive(Serialize)]
struct TargetCheck {
    file: String,
    threads: usize,
    /// sysvisor-fs ops/s divided by LXCFS ops/s; goal >= 10.
    ops_ratio_vs_lxcfs: Option<f64>,
    /// sysvisor-fs p50 divided by native /proc p50; goal <= 5.
    p50_ratio_vs_native: Option<f64>,
    /// Each half of the target; `None` when a reference target was not measured.
    ops_met: Option<bool>,
    p50_met: Option<bool>,
}

#[derive(Serialize)]
struct Report {
    scenario: &'static str,
    command: String,
    date_unix: u64,
    machine: Machine,
    versions: Versions,
    cgroup: CgroupInfo,
    seconds_per_cell: f64,
    skipped: Vec<String>,
    results: Vec<Cell>,
    targets: Vec<TargetCheck>,
}

fn cmd_output(program: &str, args: &[&str], dir: Option<&Path>) -> String {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    if let Some(d) = dir {
        c.current_dir(d);
    }
    match c.output() {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if s.is_empty() {
                s = String::from_utf8_lossy(&o.stderr).trim().to_string();
            }
            if o.status.success() || !s.is_empty() {
                s
            } else {
                format!("unknown ({program} exited with {})", o.status)
            }
        }
        Err(e) => format!("unknown ({program}: {e})"),
    }
}

fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_kb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    Machine {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        mem_total_kb,
        cpu_model,
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// The workspace root (for `git describe`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf()
}

fn default_sysvisor_fs() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("sysvisor-fs")))
        .unwrap_or_else(|| workspace_root().join("target/release/sysvisor-fs"))
}

// ---------------------------------------------------------------------------------------
// Scenario "read"
// ---------------------------------------------------------------------------------------

/// Runs one cell: a `read-worker` process inside the cgroup.
fn run_cell(
    procs_files: &[PathBuf],
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
    let procs: Vec<CString> = procs_files
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).expect("path with NUL"))
        .collect();
    // SAFETY: the closure only makes raw syscalls (open/write/close) on data prepared before
    // fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                let err = io::Error::last_os_error();
                libc::close(fd);
                if n != 1 {
                    return Err(err);
                }
            }
            Ok(())
        });
    }
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

fn read(a: ReadArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (cgroups and FUSE mounts)");
    }
    let command = std::env::args().map(|a| shell_quote(&a)).collect::<Vec<_>>().join(" ");
    let machine = machine();
    let cpus = a.cpus.unwrap_or(machine.nproc as f64);
    let memory = a.memory_mib << 20;
    let mut skipped = Vec::new();

    let sysvisor_bin = a.sysvisor_fs.clone().unwrap_or_else(default_sysvisor_fs);
    let lxcfs_bin = targets::which(&a.lxcfs);
    let versions = Versions {
        sysvisor_bench: env!("CARGO_PKG_VERSION").to_string(),
        sysvisor_fs_git: cmd_output(
            "git",
            &["describe", "--always", "--dirty", "--tags"],
            Some(&workspace_root()),
        ),
        sysvisor_fs_binary: cmd_output(&sysvisor_bin.display().to_string(), &["--version"], None),
        lxcfs: match &lxcfs_bin {
            Some(b) => cmd_output(&b.display().to_string(), &["--version"], None),
            None => "not installed".into(),
        },
    };

    // Start the servers (outside the cgroup). Dropped, i.e. stopped and unmounted, at the
    // end of this function whatever happens.
    let mut servers: Vec<targets::Server> = Vec::new();
    let mut roots: Vec<(String, PathBuf)> = Vec::new();
    for t in &a.targets {
        let started = match t.as_str() {
            "native" => {
                roots.push((t.clone(), PathBuf::from("/")));
                continue;
            }
            "lxcfs" => match &lxcfs_bin {
                Some(b) => targets::start_lxcfs(b),
                None => Err(anyhow::anyhow!("{} not found (apt-get install lxcfs)", a.lxcfs)),
            },
            "sysvisor-fs" => targets::start_sysvisor_fs(&sysvisor_bin),
            other => bail!("unknown target {other:?} (native, lxcfs, sysvisor-fs)"),
        };
        match started {
            Ok(s) => {
                roots.push((t.clone(), s.mnt().to_path_buf()));
                servers.push(s);
            }
            Err(e) if !a.require_all => {
                eprintln!("sysvisor-bench: skipping {t}: {e:#}");
                skipped.push(format!("{t}: {e:#}"));
            }
            Err(e) => return Err(e.context(format!("starting {t}"))),
        }
    }

    let cg = cgroup::BenchCgroup::new(memory, cpus)?;
    let cgroup_info = CgroupInfo {
        version: cg.version,
        dirs: cg.describe(),
        memory_limit_bytes: memory,
        cpu_limit_cpus: cpus,
    };

    println!("# sysvisor-bench read");
    println!("command: {command}");
    println!(
        "machine: {} CPUs ({}), {} MiB, kernel {}",
        machine.nproc,
        machine.cpu_model,
        machine.mem_total_kb / 1024,
        machine.kernel
    );
    println!(
        "versions: sysvisor-fs {} ({}), lxcfs {}",
        versions.sysvisor_fs_git, versions.sysvisor_fs_binary, versions.lxcfs
    );
    println!(
        "readers: cgroup v{} with memory {} MiB, CPU quota {cpus} CPUs; {} s per cell",
        cg.version, a.memory_mib, a.seconds
    );
    for s in &skipped {
        println!("skipped: {s}");
    }
    println!();
    println!(
        "{:<12} {:<8} {:>3} {:>10} {:>9} {:>9} {:>9} {:>7} {:>14}",
        "target", "file", "thr", "ops/s", "p50 us", "p99 us", "p999 us", "errors", "MemTotal"
    );
    let mut results = Vec::new();
    for file in &a.files {
        for &threads in &a.threads {
            for (target, root) in &roots {
                let path = root.join("proc").join(file);
                let r = run_cell(&cg.procs_files(), &path, threads, a.seconds)
                    .with_context(|| format!("{target} {file} {threads} threads"))?;
                println!(
                    "{:<12} {:<8} {:>3} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>14}",
                    target,
                    file,
                    threads,
                    r.ops_per_s,
                    r.p50_us,
                    r.p99_us,
                    r.p999_us,
                    r.errors,
                    r.memtotal.clone().unwrap_or_default()
                );
                if let Some(e) = &r.first_error {
                    println!("    first error: {e}");
                }
                let _ = io::stdout().flush();
                results.push(Cell { target: target.clone(), file: file.clone(), threads, r });
            }
        }
    }
    drop(cg);
    drop(servers);

    let checks = check_targets(&results);
    println!();
    println!("targets (1 and 2 threads): sysvisor-fs ops/s >= 10 x LXCFS, p50 <= 5 x native");
    for c in &checks {
        let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}"));
        let m = |v: Option<bool>| match v {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "n/a",
        };
        println!(
            "  {:<8} {} thr: ops/s vs lxcfs x{:>6} ({:<7})  p50 vs native x{:>6} ({})",
            c.file,
            c.threads,
            f(c.ops_ratio_vs_lxcfs),
            m(c.ops_met),
            f(c.p50_ratio_vs_native),
            m(c.p50_met),
        );
    }

    let report = Report {
        scenario: "read",
        command,
        date_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        machine,
        versions,
        cgroup: cgroup_info,
        seconds_per_cell: a.seconds,
        skipped,
        results,
        targets: checks,
    };
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("write {}", p.display()))?;
        println!("\nJSON: {}", p.display());
    }
    if let Some(p) = &a.svg {
        let bars: Vec<(String, String, f64)> = report
            .results
            .iter()
            .map(|c| (format!("{} {}t", c.file, c.threads), c.target.clone(), c.r.ops_per_s))
            .collect();
        let title = format!(
            "open+read+close ops/s, {} CPUs, kernel {}, {} s per cell",
            report.machine.nproc, report.machine.kernel, report.seconds_per_cell
        );
        std::fs::write(p, chart::read_svg(&bars, &title))
            .with_context(|| format!("write {}", p.display()))?;
        println!("SVG: {}", p.display());
    }
    let errors: u64 = report.results.iter().map(|c| c.r.errors).sum();
    if errors > 0 {
        bail!("{errors} reads failed");
    }
    Ok(())
}

fn check_targets(results: &[Cell]) -> Vec<TargetCheck> {
    let find = |t: &str, f: &str, n: usize| {
        results.iter().find(|c| c.target == t && c.file == f && c.threads == n)
    };
    let mut out = Vec::new();
    for c in
        results.iter().filter(|c| c.target == "sysvisor-fs" && (c.threads == 1 || c.threads == 2))
    {
        let ops = find("lxcfs", &c.file, c.threads)
            .filter(|l| l.r.ops_per_s > 0.0)
            .map(|l| c.r.ops_per_s / l.r.ops_per_s);
        let p50 = find("native", &c.file, c.threads)
            .filter(|n| n.r.p50_us > 0.0)
            .map(|n| c.r.p50_us / n.r.p50_us);
        out.push(TargetCheck {
            file: c.file.clone(),
            threads: c.threads,
            ops_ratio_vs_lxcfs: ops,
            p50_ratio_vs_native: p50,
            ops_met: ops.map(|o| o >= 10.0),
            p50_met: p50.map(|p| p <= 5.0),
        });
    }
    out
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}
