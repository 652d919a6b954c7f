//! What every scenario's output starts with: the exact command, the date, the machine, the
//! kernel and the versions of what is measured. Printed as the header of the table on stdout
//! and kept (flattened) at the top of the scenario's JSON; plus writing the JSON and SVG files.

use crate::procstat::HostCpu;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub mem_total_kb: u64,
    pub cpu_model: String,
    pub kernel: String,
}

#[derive(Serialize)]
pub struct Header {
    pub scenario: &'static str,
    pub command: String,
    pub date_unix: u64,
    pub machine: Machine,
    /// What was measured, e.g. `sysvisor_fs_git`, `lxcfs`, `docker`: one line each.
    pub versions: BTreeMap<String, String>,
    /// How busy the machine's CPUs were (0-1, all processes) in the second before the run:
    /// other work on the machine (another build) skews every figure.
    pub host_cpu_busy_before: f64,
    /// /proc/loadavg then.
    pub loadavg_before: String,
}

impl Header {
    /// The header of a run of `scenario`: the command line of this process, the machine,
    /// and the git state of the tree plus `versions`.
    pub fn new(scenario: &'static str, versions: &[(&str, String)]) -> Header {
        let mut v = BTreeMap::new();
        v.insert("sysvisor_bench".to_string(), env!("CARGO_PKG_VERSION").to_string());
        v.insert("git".to_string(), git_state());
        for (k, val) in versions {
            v.insert(k.to_string(), val.clone());
        }
        let busy = HostCpu::now();
        std::thread::sleep(std::time::Duration::from_secs(1));
        Header {
            host_cpu_busy_before: busy.busy_fraction_since(),
            loadavg_before: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_string(),
            scenario,
            command: std::env::args().map(|a| shell_quote(&a)).collect::<Vec<_>>().join(" "),
            date_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            machine: machine(),
            versions: v,
        }
    }

    /// Prints the header lines (`# sysvisor-bench SCENARIO`, command, machine, versions).
    pub fn print(&self) {
        let m = &self.machine;
        println!("# sysvisor-bench {}", self.scenario);
        println!("command: {}", self.command);
        println!(
            "machine: {} CPUs ({}), {} MiB, kernel {}",
            m.nproc,
            m.cpu_model,
            m.mem_total_kb / 1024,
            m.kernel
        );
        println!(
            "host before the run: CPUs {:.0}% busy (1 s), loadavg {}",
            self.host_cpu_busy_before * 100.0,
            self.loadavg_before
        );
        println!("versions:");
        for (k, v) in &self.versions {
            println!("  {k}: {v}");
        }
    }
}

/// Where a scenario writes its results besides the table on stdout.
#[derive(clap::Args, Clone)]
pub struct OutputArgs {
    /// Write the results (and the run's header) as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the scenario's SVG chart here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

impl OutputArgs {
    /// Writes the JSON and the chart (made only if asked for).
    pub fn write(&self, report: &impl Serialize, chart: impl FnOnce() -> String) -> Result<()> {
        if let Some(p) = &self.json {
            write_json(p, report)?;
        }
        if let Some(p) = &self.svg {
            write_svg(p, &chart())?;
        }
        Ok(())
    }
}

/// Writes `report` as pretty JSON to `path` and says so on stdout.
pub fn write_json(path: &Path, report: &impl Serialize) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    println!("JSON: {}", path.display());
    Ok(())
}

/// Writes an SVG chart to `path` and says so on stdout.
pub fn write_svg(path: &Path, svg: &str) -> Result<()> {
    std::fs::write(path, svg).with_context(|| format!("write {}", path.display()))?;
    println!("SVG: {}", path.display());
    Ok(())
}

/// The first line `program args` prints (stdout, else stderr), or why there is none.
pub fn cmd_output(program: &str, args: &[&str], dir: Option<&Path>) -> String {
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
            let s = s.lines().next().unwrap_or_default().to_string();
            if o.status.success() || !s.is_empty() {
                s
            } else {
                format!("unknown ({program} exited with {})", o.status)
            }
        }
        Err(e) => format!("unknown ({program}: {e})"),
    }
}

/// `git describe` of the tree, `-dirty` when a tracked file differs from the commit, the
/// results directory excepted (a run writes its own results there).
fn git_state() -> String {
    let root = workspace_root();
    let describe = cmd_output("git", &["describe", "--always", "--tags"], Some(&root));
    let changed = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"])
        .current_dir(&root)
        .stderr(Stdio::null())
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if changed {
        format!("{describe}-dirty")
    } else {
        describe
    }
}

/// `BINARY --version` with the binary's path, for the versions of a report.
pub fn binary_version(bin: &Path) -> String {
    format!("{} ({})", cmd_output(&bin.display().to_string(), &["--version"], None), bin.display())
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
        nproc: online_cpus(),
        mem_total_kb,
        cpu_model,
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// The number of online CPUs (not this process's affinity).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as usize
    } else {
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    }
}

/// The workspace root (for `git describe`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap_or(Path::new(".")).to_path_buf()
}

/// A workspace binary next to this one (i.e. `target/<profile>/NAME`): what a scenario runs
/// unless told otherwise, so a release harness measures release servers.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| workspace_root().join("target/release").join(name))
}

pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Latency percentiles of a set of operations, microseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Percentiles {
    /// From latencies in ns, sorted ascending.
    pub fn of_sorted(sorted: &[u32]) -> Percentiles {
        Percentiles {
            p50_us: percentile_us(sorted, 0.50),
            p99_us: percentile_us(sorted, 0.99),
            p999_us: percentile_us(sorted, 0.999),
            max_us: sorted.last().map_or(0.0, |&v| v as f64 / 1000.0),
        }
    }
}

/// Nearest-rank percentile of sorted latencies in ns, in microseconds.
pub fn percentile_us(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::{percentile_us, shell_quote};

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_us(&v, 0.50), 500.0);
        assert_eq!(percentile_us(&v, 0.99), 990.0);
        assert_eq!(percentile_us(&v, 0.999), 999.0);
        assert_eq!(percentile_us(&[], 0.5), 0.0);
        assert_eq!(percentile_us(&[7000], 0.999), 7.0);
    }

    #[test]
    fn quoting_keeps_plain_words() {
        assert_eq!(shell_quote("--files=a,b"), "--files=a,b");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
