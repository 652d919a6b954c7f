//! Scenario "many": N containers reading the views at once. Each container is a cgroup of
//! its own with a memory limit (BASE + i MiB: every container's MemTotal differs) and a CPU
//! quota (1, 2, ... CPUs in turn, always fewer than the machine has, so that every
//! reader's CPU-count check can fail), holding one reader process (`many-reader`) that is the
//! init of a pid namespace of its own and is registered with the sysvisor-fs daemon as
//! `sysvisor-runc` would register it. For each (rate, file set, target) every reader reads
//! for the same window; latency over all reads, errors (including reads showing another
//! container's limits), the server's CPU time per read and its RSS are reported.

use crate::chart::{self, Bar, Chart};
use crate::many_reader::{container_id, Job, JobResult};
use crate::memory::{register, rss_target_kb};
use crate::report::{self, Header, Percentiles};
use crate::{cgroup::BenchCgroup, pidns, procstat, read::met, targets};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone)]
pub struct ManyArgs {
    /// Containers: a cgroup, a pid namespace and a reader each.
    #[arg(long, default_value_t = 50)]
    count: usize,
    /// Measurement window per (rate, file set, target), seconds.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// File sets below proc/, comma-separated; the files of one set are joined with '+' and
    /// read in turn by each reader.
    #[arg(long, value_delimiter = ',', default_value = "meminfo,meminfo+cpuinfo+stat+uptime")]
    files: Vec<String>,
    /// Reads per second of each container, comma-separated; 0: back to back (closed loop,
    /// saturates the machine).
    #[arg(long, value_delimiter = ',', default_value = "0,100")]
    rates: Vec<f64>,
    #[command(flatten)]
    targets: targets::TargetArgs,
    /// Times a window is taken again when other processes used more than 0.15 CPUs during
    /// it (a shared machine); the cleanest is kept.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// Memory limit of container i: this + i MiB.
    #[arg(long, default_value_t = 64)]
    memory_mib: u64,
    #[command(flatten)]
    out: report::OutputArgs,
}

#[derive(Serialize)]
struct FileLatency {
    file: String,
    ops: u64,
    #[serde(flatten)]
    latency: Percentiles,
}

#[derive(Serialize)]
struct Row {
    /// Reads per second per container; 0: back to back.
    rate: f64,
    files: String,
    target: String,
    ops: u64,
    ops_per_s: f64,
    errors: u64,
    first_error: Option<String>,
    /// Over all reads of all containers.
    #[serde(flatten)]
    latency: Percentiles,
    per_file: Vec<FileLatency>,
    /// The least and most reads one container completed (fairness).
    container_ops_min: u64,
    container_ops_max: u64,
    /// The server's user + system CPU time from handing out the jobs to the last answer,
    /// divided by the reads it served then (the warm-up reads included).
    server_cpu_us_per_read: Option<f64>,
    /// The server's CPU time in the window divided by the window (in CPUs).
    server_cpus_busy: Option<f64>,
    server_rss: Option<procstat::Rss>,
    /// The readers' CPU time in the window divided by the window (in CPUs).
    readers_cpus: f64,
    /// How busy the machine's CPUs were in the window (0-1; readers, servers and anything
    /// else that ran).
    host_cpu_busy: f64,
    /// CPU used in the window by other processes than the harness, its readers and its
    /// servers (in CPUs; kernel threads and interrupts included): what the window is
    /// taken again for when above 0.15.
    other_cpus: f64,
    /// Windows taken for this row (the one with the least `other_cpus` is kept).
    tries: u32,
    /// The machine's CPU busy fraction just before the kept window.
    host_cpu_busy_before: f64,
}

#[derive(Serialize)]
struct Check {
    target: String,
    rate: f64,
    files: String,
    p99_us: f64,
    errors: u64,
    /// p99 < 1 ms and no errors.
    latency_met: bool,
    rss_kb: Option<u64>,
    rss_target_kb: u64,
    rss_met: Option<bool>,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header,
    containers: usize,
    cgroup_version: u8,
    memory_mib_base: u64,
    seconds: f64,
    skipped: Vec<String>,
    results: Vec<Row>,
    targets: Vec<Check>,
}

/// One container's reader: its pid namespace init, and the pipe on which it gets jobs.
struct Reader {
    stdin: ChildStdin,
    _init: pidns::NsInit,
}

/// The CPU quota of container `i`: 1, 2, ... up to one less than the machine has, in turn,
/// so that a server that passed the host's cpuinfo or stat through (the host's CPU count)
/// fails the reader's check. A 1-CPU machine cannot give less than its CPU count.
fn container_cpus(i: usize, nproc: usize) -> usize {
    1 + i % nproc.saturating_sub(1).max(1)
}

pub fn run(a: ManyArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (cgroups, pid namespaces, FUSE mounts)");
    }
    if a.count == 0 || a.files.is_empty() || a.rates.is_empty() {
        bail!("--count, --files and --rates must not be empty");
    }
    let mut header = Header::new("many", &a.targets.versions());
    let nproc = header.machine.nproc;
    // Dropped in reverse order, also on failure: readers, then cgroups, then servers.
    let servers = targets::Servers::start(&a.targets, true)?;
    header.versions.extend(servers.transports());
    let mut cgroups: Vec<(BenchCgroup, u64, usize)> = Vec::new();
    for i in 0..a.count {
        let mib = a.memory_mib + i as u64;
        let cpus = container_cpus(i, nproc);
        let name = format!("sysvisor-bench-{}-{i:03}", std::process::id());
        cgroups.push((BenchCgroup::named(&name, mib << 20, cpus as f64)?, mib * 1024, cpus));
    }
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut readers: Vec<Reader> = Vec::new();
    let exe = std::env::current_exe().context("current_exe")?;
    for (i, (cg, memtotal_kb, cpus)) in cgroups.iter().enumerate() {
        let mut cmd = pidns::command(&exe);
        cmd.arg("many-reader")
            .args(["--index", &i.to_string()])
            .args(["--memtotal-kb", &memtotal_kb.to_string()])
            .args(["--cpus", &cpus.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        cg.join_on_spawn(&mut cmd);
        let mut init = pidns::NsInit::spawn(cmd, "sysvisor-bench")?;
        let stdin = init.child.stdin.take().context("reader stdin")?;
        let stdout = init.child.stdout.take().context("reader stdout")?;
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
        });
        readers.push(Reader { stdin, _init: init });
    }
    drop(tx);
    let ready = collect(&rx, a.count, Duration::from_secs(30))?;
    if let Some(bad) = ready.iter().find(|l| l.as_str() != "ready") {
        bail!("a reader said {bad:?} instead of ready");
    }
    for daemon in servers.sysvisor_fs() {
        for (i, r) in readers.iter().enumerate() {
            register(&daemon.socket(), container_id(i), r._init.pid, i)?;
        }
    }

    header.print();
    let version = cgroups[0].0.version;
    println!(
        "containers: {} x (cgroup v{version} with memory {}+i MiB and a CPU quota of {} \
         CPUs in turn, a reader as the init of its own pid namespace, registered with the \
         sysvisor-fs daemon); {} s per window",
        a.count,
        a.memory_mib,
        (0..a.count.min(nproc.saturating_sub(1).max(1)))
            .map(|i| container_cpus(i, nproc).to_string())
            .collect::<Vec<_>>()
            .join(", "),
        a.seconds
    );
    if nproc < 2 {
        println!(
            "note: on a 1-CPU machine every container's quota equals the machine's CPU count, \
             so the readers' cpuinfo/stat checks cannot tell a rendered file from the host's"
        );
    }
    println!(
        "rate: reads/s per container (0: back to back); srv us/op: the server's CPU time per \
         read; other: CPUs used by other processes in the window (taken again above {MAX_OTHER_CPUS})"
    );
    for s in &servers.skipped {
        println!("skipped: {s}");
    }
    println!();
    println!(
        "{:>5} {:<28} {:<17} {:>8} {:>8} {:>8} {:>8} {:>6} {:>10} {:>9} {:>6}",
        "rate",
        "files",
        "target",
        "ops/s",
        "p50 us",
        "p99 us",
        "p999 us",
        "errors",
        "srv us/op",
        "srv RSS",
        "other"
    );
    let all_servers = servers.pids();
    let mut rows = Vec::new();
    for &rate in &a.rates {
        for set in &a.files {
            let files: Vec<String> = set.split('+').map(str::to_string).collect();
            for (target, root) in &servers.roots {
                let server_pid = servers.server(target).and_then(|s| s.pid());
                let job = Job {
                    root: root.clone(),
                    files: files.clone(),
                    rate,
                    start_ns: 0,
                    seconds: a.seconds,
                    phase: 0.0,
                    check: target != "native",
                    own: target == targets::OWN_TARGET,
                };
                let acct = Accounting { server_pid, all_servers: &all_servers, retries: a.retries };
                let row = window(&mut readers, &rx, &job, target, &acct)
                    .with_context(|| format!("{target}, files {set}, rate {rate}"))?;
                print_row(&row);
                rows.push(row);
            }
        }
    }
    drop(readers);
    drop(cgroups);
    let skipped = servers.skipped.clone();
    drop(servers);

    let checks = check_targets(&rows, a.count);
    println!();
    println!(
        "targets ({} containers): sysvisor-fs p99 < 1 ms with no errors; RSS <= 20 MB + 50 KB \
         per container ({} kB)",
        a.count,
        rss_target_kb(a.count)
    );
    for c in &checks {
        println!(
            "  {:<17} rate {:>5} {:<28} p99 {:>8.1} us, {} errors ({:<7})  RSS {} kB ({})",
            c.target,
            c.rate,
            c.files,
            c.p99_us,
            c.errors,
            met(Some(c.latency_met)),
            c.rss_kb.map_or("n/a".into(), |v| v.to_string()),
            met(c.rss_met)
        );
    }
    println!();
    let report = Report {
        header,
        containers: a.count,
        cgroup_version: version,
        memory_mib_base: a.memory_mib,
        seconds: a.seconds,
        skipped,
        results: rows,
        targets: checks,
    };
    a.out.write(&report, || chart::svg(&latency_chart(&report)))?;
    let errors: u64 = report
        .results
        .iter()
        .filter(|r| r.target.starts_with("sysvisor-fs"))
        .map(|r| r.errors)
        .sum();
    if errors > 0 {
        bail!("{errors} sysvisor-fs reads failed");
    }
    Ok(())
}

/// The next `n` lines of the readers (one each), by reader index.
fn collect(
    rx: &mpsc::Receiver<(usize, String)>,
    n: usize,
    timeout: Duration,
) -> Result<Vec<String>> {
    let deadline = Instant::now() + timeout;
    let mut lines: Vec<Option<String>> = vec![None; n];
    let mut got = 0;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, line)) if lines[i].is_none() => {
                lines[i] = Some(line);
                got += 1;
            }
            Ok((i, line)) => bail!("reader {i} said more than expected: {line:?}"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let missing: Vec<usize> = (0..n).filter(|&i| lines[i].is_none()).collect();
                bail!("no answer within {timeout:?} from readers {missing:?}");
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("every reader is gone"),
        }
    }
    Ok(lines.into_iter().flatten().collect())
}

fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The most CPU (in CPUs) other processes may use during a window before it is taken again.
const MAX_OTHER_CPUS: f64 = 0.15;

/// Our processes in a window: the readers (by their answers), the servers and the harness.
struct Accounting<'a> {
    server_pid: Option<u32>,
    all_servers: &'a [u32],
    retries: u32,
}

/// One measurement window, taken again (at most `retries` times) while other processes
/// used more than [`MAX_OTHER_CPUS`] during it; the cleanest one is kept.
fn window(
    readers: &mut [Reader],
    rx: &mpsc::Receiver<(usize, String)>,
    job: &Job,
    target: &str,
    acct: &Accounting,
) -> Result<Row> {
    let mut best: Option<Row> = None;
    for attempt in 1..=acct.retries + 1 {
        let busy_before = procstat::wait_quiet();
        let mut row = window_once(readers, rx, job.clone(), target, acct)?;
        row.tries = attempt;
        row.host_cpu_busy_before = busy_before;
        let clean = row.other_cpus <= MAX_OTHER_CPUS;
        if !clean {
            eprintln!(
                "sysvisor-bench: other processes used {:.2} CPUs during the {target} window{}",
                row.other_cpus,
                if attempt <= acct.retries { "; taking it again" } else { "" }
            );
        }
        if best.as_ref().is_none_or(|b| row.other_cpus < b.other_cpus) {
            best = Some(row);
        }
        if clean {
            break;
        }
    }
    Ok(best.expect("at least one try"))
}

/// Every reader runs `job` over the same interval.
fn window_once(
    readers: &mut [Reader],
    rx: &mpsc::Receiver<(usize, String)>,
    mut job: Job,
    target: &str,
    acct: &Accounting,
) -> Result<Row> {
    let n = readers.len();
    let servers_cpu =
        || -> Result<f64> { acct.all_servers.iter().map(|&p| procstat::cpu_seconds(p)).sum() };
    // Time enough to hand every reader its job and for their warm-up reads.
    job.start_ns = monotonic_ns() + 200_000_000 + 5_000_000 * n as u64;
    let t0 = Instant::now();
    let host0 = procstat::HostCpu::now();
    let own0 = procstat::self_cpu_seconds();
    let servers0 = servers_cpu()?;
    let cpu0 = acct.server_pid.map(procstat::cpu_seconds).transpose()?;
    for (i, r) in readers.iter_mut().enumerate() {
        job.phase = i as f64 / n as f64;
        writeln!(r.stdin, "{}", serde_json::to_string(&job)?).context("sending a job")?;
    }
    let timeout = Duration::from_secs_f64(job.seconds) + Duration::from_secs(60 + n as u64);
    let answers = collect(rx, n, timeout)?;
    let cpu1 = acct.server_pid.map(procstat::cpu_seconds).transpose()?;
    let servers1 = servers_cpu()?;
    let own1 = procstat::self_cpu_seconds();
    let host_busy_s = host0.busy_seconds_since();
    let host_cpu_busy = host0.busy_fraction_since();
    let elapsed = t0.elapsed().as_secs_f64();
    let results: Vec<JobResult> = answers
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("reader answer {l:?}")))
        .collect::<Result<_>>()?;
    let readers_s: f64 = results.iter().map(|r| r.cpu_s).sum();
    let ours = (servers1 - servers0) + (own1 - own0) + readers_s;
    let mut all: Vec<u32> = Vec::new();
    let mut per_file = Vec::new();
    for (fi, f) in job.files.iter().enumerate() {
        let mut lat: Vec<u32> =
            results.iter().flat_map(|r| r.lat_ns.get(fi).into_iter().flatten()).copied().collect();
        lat.sort_unstable();
        per_file.push(FileLatency {
            file: f.clone(),
            ops: lat.len() as u64,
            latency: Percentiles::of_sorted(&lat),
        });
        all.extend_from_slice(&lat);
    }
    all.sort_unstable();
    let ops: u64 = results.iter().map(|r| r.ops).sum();
    let attempts: u64 = results.iter().map(|r| r.attempts).sum();
    let cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
    Ok(Row {
        rate: job.rate,
        files: job.files.join("+"),
        target: target.to_string(),
        ops,
        ops_per_s: ops as f64 / job.seconds,
        errors: results.iter().map(|r| r.errors).sum(),
        first_error: results.iter().find_map(|r| r.first_error.clone()),
        latency: Percentiles::of_sorted(&all),
        per_file,
        container_ops_min: results.iter().map(|r| r.ops).min().unwrap_or(0),
        container_ops_max: results.iter().map(|r| r.ops).max().unwrap_or(0),
        server_cpu_us_per_read: cpu.filter(|_| attempts > 0).map(|c| c * 1e6 / attempts as f64),
        server_cpus_busy: cpu.map(|c| c / elapsed),
        server_rss: acct.server_pid.map(procstat::rss).transpose()?,
        readers_cpus: readers_s / elapsed,
        host_cpu_busy,
        other_cpus: ((host_busy_s - ours) / elapsed).max(0.0),
        tries: 1,
        host_cpu_busy_before: 0.0,
    })
}

fn print_row(r: &Row) {
    println!(
        "{:>5} {:<28} {:<17} {:>8.0} {:>8.1} {:>8.1} {:>8.1} {:>6} {:>10} {:>9} {:>6.2}",
        r.rate,
        r.files,
        r.target,
        r.ops_per_s,
        r.latency.p50_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.errors,
        r.server_cpu_us_per_read.map_or("-".into(), |v| format!("{v:.1}")),
        r.server_rss.map_or("-".into(), |m| format!("{} kB", m.rss_kb)),
        r.other_cpus,
    );
    if let Some(e) = &r.first_error {
        println!("      first error: {e}");
    }
    let _ = std::io::stdout().flush();
}

fn check_targets(rows: &[Row], count: usize) -> Vec<Check> {
    rows.iter()
        .filter(|r| r.target.starts_with("sysvisor-fs"))
        .map(|r| {
            let rss_kb = r.server_rss.map(|m| m.rss_kb);
            Check {
                target: r.target.clone(),
                rate: r.rate,
                files: r.files.clone(),
                p99_us: r.latency.p99_us,
                errors: r.errors,
                latency_met: r.latency.p99_us < 1000.0 && r.errors == 0,
                rss_kb,
                rss_target_kb: rss_target_kb(count),
                rss_met: rss_kb.map(|v| v <= rss_target_kb(count)),
            }
        })
        .collect()
}

/// p50, p99 and p999 per (rate, file set), one bar per target, log scale, with the 1 ms line.
fn latency_chart(report: &Report) -> Chart {
    let mut bars = Vec::new();
    for r in &report.results {
        let load = if r.rate > 0.0 { format!("{}/s", r.rate) } else { "closed-loop".to_string() };
        let files = if r.files.contains('+') { "mix" } else { r.files.as_str() };
        for (q, v) in
            [("p50", r.latency.p50_us), ("p99", r.latency.p99_us), ("p999", r.latency.p999_us)]
        {
            bars.push(Bar::new(format!("{files} {load} {q}"), &r.target, v));
        }
    }
    let title = format!(
        "{} containers reading at once: latency (us, log), {} CPUs, kernel {}",
        report.containers, report.header.machine.nproc, report.header.machine.kernel
    );
    Chart {
        title,
        y_label: "latency us (log)".into(),
        log: true,
        bars,
        reference: Some((1000.0, "1 ms".into())),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_container_has_fewer_cpus_than_the_machine() {
        let two: Vec<usize> = (0..4).map(|i| super::container_cpus(i, 2)).collect();
        assert_eq!(two, [1, 1, 1, 1]);
        let four: Vec<usize> = (0..5).map(|i| super::container_cpus(i, 4)).collect();
        assert_eq!(four, [1, 2, 3, 1, 2]);
        assert_eq!(super::container_cpus(3, 1), 1);
    }
}
