//! Scenario "memory": RSS of `sysvisor-fs serve` with N registered containers. Each
//! container is a `sleep infinity` that is the init of a pid namespace of its own (as the
//! daemon requires), registered over the control socket (sysvisor-proto). Everything
//! (inits, daemon, mount, temp dirs) is removed at the end, also on failure.

use crate::chart::{self, Bar, Chart};
use crate::report::{self, Header};
use crate::{pidns, procstat, read::met, targets};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::Duration;
use sysvisor_proto::{Container, Request};

#[derive(clap::Args, Clone)]
pub struct MemoryArgs {
    /// Numbers of registered containers, comma-separated (each is a process in a pid
    /// namespace of its own).
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000")]
    containers: Vec<usize>,
    /// The sysvisor-fs binary (default: next to this binary).
    #[arg(long)]
    sysvisor_fs: Option<PathBuf>,
    #[command(flatten)]
    out: report::OutputArgs,
}

#[derive(Serialize)]
pub struct MemoryPoint {
    pub containers: usize,
    pub rss_kb: u64,
    /// The bound: 20 MB + 50 KB per registered container.
    pub target_kb: u64,
    pub met: bool,
}

#[derive(Serialize)]
struct Report {
    #[serde(flatten)]
    header: Header,
    results: Vec<MemoryPoint>,
}

/// The RSS bound for a daemon with `n` registered containers, kB (20 MB + 50 KB
/// each, taken as 20,000 kB + 50 kB x n).
pub fn rss_target_kb(n: usize) -> u64 {
    20_000 + 50 * n as u64
}

/// Registers the init `pid` as container `id` with the daemon behind `socket`.
pub fn register(socket: &Path, id: String, pid: u32, index: usize) -> Result<()> {
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    let container = Container {
        uid_base: 100_000 + (index as u32) * 65_536,
        gid_base: 100_000 + (index as u32) * 65_536,
        id_count: 65_536,
        cgroup: None,
        created_unix_ms: now_ms,
        init_pid: pid,
        id,
    };
    let id = container.id.clone();
    let r =
        sysvisor_proto::call(socket, &Request::Register { container }, Duration::from_secs(10))?;
    if !r.ok {
        bail!("registration of {id} refused: {}", r.error.unwrap_or_default());
    }
    Ok(())
}

pub fn run(a: MemoryArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root (FUSE mount, pid namespaces)");
    }
    let bin = a.sysvisor_fs.clone().unwrap_or_else(|| report::sibling_binary("sysvisor-fs"));
    let mut header = Header::new("memory", &[("sysvisor_fs", report::binary_version(&bin))]);
    // Stopped, unmounted and removed when dropped, also on failure.
    let srv = targets::start_sysvisor_fs_daemon(&bin, "sysvisor-fs")?;
    if let Some(t) = srv.transport() {
        header.versions.insert("sysvisor-fs transport".into(), t);
    }
    header.print();
    println!();
    let points = measure(&srv, &a.containers)?;
    drop(srv);
    println!("{:>10} {:>10} {:>12} (20 MB + 50 KB each)", "containers", "RSS kB", "target kB");
    for p in &points {
        println!("{:>10} {:>10} {:>12} {}", p.containers, p.rss_kb, p.target_kb, met(Some(p.met)));
    }
    println!();
    let report = Report { header, results: points };
    a.out.write(&report, || chart::svg(&rss_chart(&report)))?;
    Ok(())
}

fn measure(srv: &targets::Server, counts: &[usize]) -> Result<Vec<MemoryPoint>> {
    let socket = srv.socket();
    let pid = srv.pid().context("daemon pid")?;
    let mut inits: Vec<pidns::NsInit> = Vec::new();
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    for n in sorted {
        while inits.len() < n {
            let i = inits.len();
            let mut cmd = pidns::command("sleep");
            cmd.arg("infinity").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
            let init = pidns::NsInit::spawn(cmd, "sleep")?;
            register(&socket, format!("sysvisor-bench-{i:04}"), init.pid, i)?;
            inits.push(init);
        }
        thread::sleep(Duration::from_millis(300));
        let rss = procstat::rss(pid)?.rss_kb;
        let target_kb = rss_target_kb(n);
        out.push(MemoryPoint { containers: n, rss_kb: rss, target_kb, met: rss <= target_kb });
    }
    drop(inits);
    Ok(out)
}

/// RSS and its target per number of containers, linear.
fn rss_chart(report: &Report) -> Chart {
    let mut bars = Vec::new();
    for p in &report.results {
        let group = format!("{} containers", p.containers);
        bars.push(Bar::new(&group, "daemon RSS", p.rss_kb as f64));
        bars.push(Bar::new(group, "target", p.target_kb as f64));
    }
    Chart {
        title: format!(
            "sysvisor-fs serve RSS (kB) with N registered containers, kernel {}",
            report.header.machine.kernel
        ),
        y_label: "kB".into(),
        log: false,
        bars,
        reference: None,
    }
}
