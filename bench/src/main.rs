//! sysvisor-bench: measures sysvisor-fs against LXCFS and native /proc, and sysvisor-runc
//! against runc, on the same machine in the same run (issue #4). See docs/benchmarks.md.
//!
//! Scenarios: `read` (one reader process, 1-8 threads, per file), `many` (N containers
//! reading at once), `lifecycle` (`docker run` with runc vs sysvisor-runc), `memory`
//! (daemon RSS with N registered containers), `fairness` (one container's mount p99 while
//! another floods the mount trap). Each prints a table with the command,
//! machine, kernel and versions, and can write JSON (`--json`) and an SVG chart (`--svg`).

mod cgroup;
mod chart;
mod fairness;
mod lifecycle;
mod many;
mod many_reader;
mod memory;
mod pidns;
mod procstat;
mod read;
mod report;
mod targets;
mod worker;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "sysvisor-bench", version, about = "sysvisor-fs vs LXCFS vs native /proc")]
struct Cli {
    /// Before each measurement, wait at most this many seconds for the machine's CPUs to be
    /// at most 10% busy (other work on a shared machine skews every figure); 0: never wait.
    #[arg(long, global = true, default_value_t = 120.0)]
    quiet_wait: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Scenario "read": ops/s and latency of open+read+close per (target, file, threads).
    Read(read::ReadArgs),
    /// Scenario "many": N containers (cgroup + pid namespace each) reading at once.
    Many(many::ManyArgs),
    /// Scenario "lifecycle": `docker run` with runc vs sysvisor-runc (private dockerd).
    Lifecycle(lifecycle::LifecycleArgs),
    /// Scenario "memory": daemon RSS with N containers registered on its control socket.
    Memory(memory::MemoryArgs),
    /// Scenario "fairness": one container's mount p99 while another floods the mount trap.
    Fairness(fairness::FairnessArgs),
    /// Internal: one measurement cell of "read", run inside the cgroup; prints JSON.
    #[command(hide = true)]
    ReadWorker {
        #[arg(long)]
        path: PathBuf,
        #[arg(long)]
        threads: usize,
        #[arg(long)]
        seconds: f64,
    },
    /// Internal: the reader of one container of "many" (jobs on stdin, JSON on stdout).
    #[command(hide = true)]
    ManyReader {
        #[arg(long)]
        index: usize,
        #[arg(long)]
        memtotal_kb: u64,
        #[arg(long)]
        cpus: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    procstat::set_quiet_wait(std::time::Duration::from_secs_f64(cli.quiet_wait.max(0.0)));
    let r = match cli.cmd {
        Cmd::Read(a) => read::run(a),
        Cmd::Many(a) => many::run(a),
        Cmd::Lifecycle(a) => lifecycle::run(a),
        Cmd::Memory(a) => memory::run(a),
        Cmd::Fairness(a) => fairness::run(a),
        Cmd::ReadWorker { path, threads, seconds } => {
            worker::run(path, threads, seconds).and_then(|r| {
                println!("{}", serde_json::to_string(&r)?);
                Ok(())
            })
        }
        Cmd::ManyReader { index, memtotal_kb, cpus } => {
            many_reader::run(index, many_reader::Expect { memtotal_kb, cpus })
        }
    };
    if let Err(e) = r {
        eprintln!("sysvisor-bench: {e:#}");
        // exit() runs the atexit handlers (the e2e engine's teardown in "lifecycle").
        std::process::exit(1);
    }
}
