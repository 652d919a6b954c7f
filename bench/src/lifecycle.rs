//! Scenario "lifecycle": the cost of a container's life with runc and with sysvisor-runc,
//! on the private Docker engine of the e2e crate (`sysvisor_e2e::Engine`: its own dockerd
//! with `sysvisor-runc` configured, a busybox image made with `docker import`, a
//! sysvisor-fs daemon; everything undone at exit).
//!
//! 1. `docker run --rm --pull never --runtime R IMAGE true`, N times per runtime, the two
//!    runtimes alternating (and which goes first alternating too): wall time of the CLI.
//! 2. Time to the first read of /proc/meminfo inside: a FIFO on the host is bind-mounted
//!    into a container whose command is `exec head -n 1 /proc/meminfo > /fifo`; the time
//!    runs from just before `docker run -d` is spawned until the harness (holding the FIFO
//!    open for reading) receives the line. The line is checked: the container's memory limit
//!    under sysvisor-runc, the host's MemTotal under runc.

use crate::chart::{self, Bar, Chart};
use crate::procstat;
use crate::read::met;
use crate::report::{self, Header};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use sysvisor_e2e::Engine;

const RUNTIMES: [&str; 2] = ["runc", sysvisor_e2e::RUNTIME];
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(clap::Args, Clone)]
pub struct LifecycleArgs {
    /// Timed `docker run --rm IMAGE true` per runtime.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Timed runs to the first read of /proc/meminfo per runtime (default: --runs).
    #[arg(long)]
    first_read_runs: Option<usize>,
    /// Untimed runs of each kind per runtime before the timed ones.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Memory limit (MiB) of the first-read containers: sysvisor-runc must show it.
    #[arg(long, default_value_t = 256)]
    memory_mib: u64,
    #[command(flatten)]
    out: report::OutputArgs,
}

#[derive(Serialize)]
struct Timing {
    measure: &'static str,
    runtime: String,
    median_ms: f64,
    p90_ms: f64,
    min_ms: f64,
    max_ms: f64,
    /// Every timed run, in order.
    runs_ms: Vec<f64>,
}

impl Timing {
    fn new(measure: &'static str, runtime: &str, runs_ms: Vec<f64>) -> Timing {
        let mut s = runs_ms.clone();
        s.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if s.is_empty() {
                return 0.0;
            }
            s[((s.len() as f64 * p).ceil() as usize).clamp(1, s.len()) - 1]
        };
        Timing {
            measure,
            runtime: runtime.to_string(),
            median_ms: q(0.5),
            p90_ms: q(0.9),
            min_ms: s.first().copied().unwrap_or(0.0),
            max_ms: s.last().copied().unwrap_or(0.0),
            runs_ms,
        }
    }
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header,
    image: String,
    warmup: usize,
    /// Medians and p90s per (measure, runtime).
    results: Vec<Timing>,
    /// sysvisor-runc median / runc median, `docker run --rm true`; target <= 1.25.
    docker_run_ratio: f64,
    docker_run_met: bool,
    /// The same for the time to the first read of /proc/meminfo.
    first_read_ratio: f64,
    /// The machine's CPU busy fraction before each round of both runtimes (each round waits
    /// for a quiet machine, see procstat::wait_quiet), docker runs then first reads.
    host_cpu_busy_before_rounds: Vec<f64>,
    /// The MemTotal line each runtime's container saw (the last run; every run is checked).
    memtotal_seen: Vec<(String, String)>,
}

const RUN: &str = "docker run --rm true";
const FIRST_READ: &str = "to first /proc/meminfo read";

pub fn run(a: LifecycleArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (a private dockerd)");
    }
    if a.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let engine = Engine::get().context("the e2e engine is disabled (SYSVISOR_E2E=skip)")?;
    let image = engine.image().to_string();
    let header = Header::new("lifecycle", &versions(&engine));
    header.print();
    println!(
        "engine: private dockerd of sysvisor-e2e ({}), image {image} (busybox, docker import)",
        sysvisor_e2e::DOCKER_SOCK
    );
    if let Some(w) = daemon_warning(&engine) {
        println!("warning: {w}");
    }
    println!("runs: {} warm-up + {} timed per runtime, runtimes alternating", a.warmup, a.runs);
    println!();

    let run_args = |rt: &'static str| -> Vec<String> {
        ["run", "--rm", "--pull", "never", "--runtime", rt, image.as_str(), "true"]
            .map(String::from)
            .to_vec()
    };
    let mut run_ms: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut busy_before = Vec::new();
    for i in 0..a.warmup + a.runs {
        busy_before.push(procstat::wait_quiet());
        for k in order(i) {
            let ms = docker_timed(&engine, &run_args(RUNTIMES[k]))?;
            if i >= a.warmup {
                run_ms[k].push(ms);
            }
        }
    }

    let fifo = Fifo::new()?;
    let host_memtotal = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .next()
        .map(memtotal_kb)
        .context("no MemTotal in /proc/meminfo")?;
    let expected = [host_memtotal, Some(a.memory_mib * 1024)];
    let mut first_ms: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut seen: Vec<(String, String)> = Vec::new();
    let first_runs = a.first_read_runs.unwrap_or(a.runs);
    for i in 0..a.warmup + first_runs {
        busy_before.push(procstat::wait_quiet());
        for k in order(i) {
            let (ms, line) = first_read(&engine, &fifo, RUNTIMES[k], a.memory_mib)?;
            if memtotal_kb(&line) != expected[k] {
                bail!(
                    "{} container saw {line:?}, expected MemTotal {:?} kB",
                    RUNTIMES[k],
                    expected[k]
                );
            }
            if i >= a.warmup {
                first_ms[k].push(ms);
            }
            seen.retain(|(rt, _)| rt != RUNTIMES[k]);
            seen.push((RUNTIMES[k].to_string(), line));
        }
    }

    let [run_runc, run_sys] = run_ms;
    let [first_runc, first_sys] = first_ms;
    let results = vec![
        Timing::new(RUN, RUNTIMES[0], run_runc),
        Timing::new(RUN, RUNTIMES[1], run_sys),
        Timing::new(FIRST_READ, RUNTIMES[0], first_runc),
        Timing::new(FIRST_READ, RUNTIMES[1], first_sys),
    ];
    println!(
        "{:<28} {:<14} {:>9} {:>9} {:>9} {:>9} {:>5}",
        "measure", "runtime", "median ms", "p90 ms", "min ms", "max ms", "runs"
    );
    for t in &results {
        println!(
            "{:<28} {:<14} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>5}",
            t.measure,
            t.runtime,
            t.median_ms,
            t.p90_ms,
            t.min_ms,
            t.max_ms,
            t.runs_ms.len()
        );
    }
    for (rt, line) in &seen {
        println!("MemTotal seen under {rt} (-m {}m): {line}", a.memory_mib);
    }
    let ratio =
        |a: &Timing, b: &Timing| if a.median_ms > 0.0 { b.median_ms / a.median_ms } else { 0.0 };
    let docker_run_ratio = ratio(&results[0], &results[1]);
    let first_read_ratio = ratio(&results[2], &results[3]);
    println!();
    println!(
        "target: docker run with sysvisor-runc <= 1.25 x runc (medians): x{docker_run_ratio:.2} ({})",
        met(Some(docker_run_ratio <= 1.25))
    );
    println!("time to the first /proc/meminfo read, sysvisor-runc / runc (medians): x{first_read_ratio:.2}");
    println!();
    let report = Report {
        header,
        image,
        warmup: a.warmup,
        results,
        docker_run_ratio,
        docker_run_met: docker_run_ratio <= 1.25,
        first_read_ratio,
        host_cpu_busy_before_rounds: busy_before,
        memtotal_seen: seen,
    };
    a.out.write(&report, || chart::svg(&lifecycle_chart(&report)))?;
    Ok(())
}

/// Which runtime goes first in round `i`: alternating, so neither always follows the other.
fn order(i: usize) -> [usize; 2] {
    if i.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    }
}

/// The kB figure of a `MemTotal:   N kB` line.
fn memtotal_kb(line: &str) -> Option<u64> {
    line.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// Runs the docker CLI with `args` to completion and returns its wall time in ms; an error
/// (with its output) if it fails or takes longer than TIMEOUT (then it is killed).
fn docker_timed(engine: &Engine, args: &[String]) -> Result<f64> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = engine.docker_cmd(&args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let (elapsed, out) = timed(cmd)?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed.as_secs_f64() * 1000.0)
}

/// Spawns `cmd` and waits for it (exactly, not by polling), killing it after TIMEOUT.
fn timed(mut cmd: Command) -> Result<(Duration, std::process::Output)> {
    let t0 = Instant::now();
    let child = cmd.spawn().context("cannot start docker")?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = tx.send((t0.elapsed(), out));
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok((elapsed, out)) => Ok((elapsed, out?)),
        Err(_) => {
            // SAFETY: our own child, not yet reaped (its waiter thread is still blocked).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            bail!("docker did not finish within {TIMEOUT:?} (killed)")
        }
    }
}

/// A FIFO in the e2e scratch directory, held open for reading (and writing, so it never
/// reports end of file) by a thread that timestamps each line it receives.
struct Fifo {
    path: PathBuf,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Fifo {
    fn new() -> Result<Fifo> {
        let dir = sysvisor_e2e::scratch_dir("bench-lifecycle");
        let path = dir.join("meminfo.fifo");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o666))
            .with_context(|| format!("mkfifo {}", path.display()))?;
        // Writable by a container's root, which is an unprivileged host uid under
        // sysvisor-runc (mkfifo's mode is cut by the umask).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(file).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Ok(Fifo { path, lines })
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One container that reads /proc/meminfo first thing: ms from `docker run -d` to the
/// line's arrival, and the line. The container is removed (untimed) before returning.
fn first_read(
    engine: &Engine,
    fifo: &Fifo,
    runtime: &str,
    memory_mib: u64,
) -> Result<(f64, String)> {
    while fifo.lines.try_recv().is_ok() {}
    let volume = format!("{}:/fifo", fifo.path.display());
    let memory = format!("{memory_mib}m");
    let t0 = Instant::now();
    let (container, out) = engine.run_detached(
        &["--runtime", runtime, "-m", &memory, "-v", &volume],
        &["sh", "-c", "exec head -n 1 /proc/meminfo > /fifo"],
    );
    if !out.success() {
        bail!("docker run -d with {runtime} failed: {out}");
    }
    let (t1, line) = fifo.lines.recv_timeout(TIMEOUT).map_err(|_| {
        anyhow::anyhow!(
            "no line from the {runtime} container within {TIMEOUT:?} (status {})",
            container.status()
        )
    })?;
    drop(container);
    Ok(((t1 - t0).as_secs_f64() * 1000.0, line))
}

fn versions(engine: &Engine) -> Vec<(&'static str, String)> {
    let server = engine.docker(&["version", "--format", "{{.Server.Version}}"]).out();
    vec![
        ("dockerd", server),
        ("containerd", report::cmd_output("containerd", &["--version"], None)),
        ("runc", report::cmd_output("runc", &["--version"], None)),
        ("sysvisor_runc", report::binary_version(&engine.runtime_bin)),
        (
            "sysvisor_fs_daemon",
            fs_daemon()
                .map_or("not found".into(), |(pid, exe)| format!("pid {pid}, {}", exe.display())),
        ),
        (
            "sysvisor_fs_daemon transport",
            // The engine's daemon logs there (appending: the last start-up line is its own).
            std::fs::read_to_string(Path::new(sysvisor_e2e::RUN_DIR).join("sysvisor-fs.log"))
                .ok()
                .and_then(|log| crate::targets::transport_in_log(&log))
                .unwrap_or_else(|| "unknown".into()),
        ),
    ]
}

/// The running `sysvisor-fs serve` of the e2e engine (on its socket,
/// [`sysvisor_e2e::FS_SOCKET`]): (pid, executable).
fn fs_daemon() -> Option<(u32, PathBuf)> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_daemon = args.first().is_some_and(|a| a.ends_with(b"sysvisor-fs"))
            && args.get(1) == Some(&&b"serve"[..])
            && args.windows(2).any(|w| w == [&b"--socket"[..], sysvisor_e2e::FS_SOCKET.as_bytes()]);
        if is_daemon {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            return Some((pid, exe));
        }
    }
    None
}

/// Why the measured daemon may not be the binary next to the harness (`SYSVISOR_E2E_FS`
/// names another).
fn daemon_warning(engine: &Engine) -> Option<String> {
    let (pid, exe) = fs_daemon()?;
    let ours = std::fs::canonicalize(&engine.fs_bin).ok()?;
    let exe_path = Path::new(&exe);
    (exe_path != ours).then(|| {
        format!(
            "the sysvisor-fs daemon in use (pid {pid}) runs {}, not {}",
            exe.display(),
            ours.display()
        )
    })
}

/// Medians and p90s per measure, one bar per runtime, linear.
fn lifecycle_chart(report: &Report) -> Chart {
    let mut bars = Vec::new();
    for t in &report.results {
        let short = if t.measure == RUN { "run --rm true" } else { "to first read" };
        bars.push(Bar::new(format!("{short} median"), &t.runtime, t.median_ms));
        bars.push(Bar::new(format!("{short} p90"), &t.runtime, t.p90_ms));
    }
    Chart {
        title: format!(
            "Container lifecycle (ms), private dockerd, {} CPUs, kernel {}",
            report.header.machine.nproc, report.header.machine.kernel
        ),
        y_label: "ms".into(),
        log: false,
        bars,
        reference: None,
    }
}
