//! `sysvisor-fs mount DIR`: mounts the virtual /proc and /sys files on DIR and serves them in
//! the foreground until SIGINT or SIGTERM, then unmounts.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use sysvisor_fs::fuse::{session, Mount, ShutdownSignals, StopReason, Tree, VirtualFs};
use sysvisor_fs::host::HostProc;
use sysvisor_fs::service::{Service, ServiceConfig};

/// Serves each process a virtual view of /proc and /sys shaped by its own cgroup limits.
#[derive(Debug, Parser)]
#[command(name = "sysvisor-fs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mount on DIR and serve in the foreground; unmount on SIGINT/SIGTERM.
    Mount(MountArgs),
}

#[derive(Debug, Args)]
struct MountArgs {
    /// Directory to mount on: it must exist and not be a mount point already.
    dir: PathBuf,

    /// Worker threads (default: one per online CPU; worker i is pinned to CPU i mod N).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    threads: Option<u32>,

    /// How long a rendered view may be served again to callers with the same view, in ms.
    #[arg(long, default_value_t = 100)]
    cache_ttl_ms: u64,

    /// Log format (logs go to stderr; filter with RUST_LOG, default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) => {
            init_logging(args.log_format);
            mount(&args)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let message = format!("{err:#}").replace('\n', " ");
            eprintln!("sysvisor-fs: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    // fuse-backend-rs logs every INIT and unmount at info: keep it at warn unless asked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,fuse_backend_rs=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn mount(args: &MountArgs) -> anyhow::Result<()> {
    // Everything that can be checked is checked before anything is started or mounted.
    session::check_privileges()?;
    let mountpoint = session::check_mountpoint(&args.dir)?;
    let cpus = session::online_cpus()?;
    let threads = args.threads.map_or(cpus.len().max(1), |t| t as usize);
    let tree = Tree::from_table()?;

    // Before any other thread exists (the service's included), so all inherit the mask.
    let signals = ShutdownSignals::block()?;

    let service = Service::new(ServiceConfig {
        cache_ttl: Duration::from_millis(args.cache_ttl_ms),
        host: HostProc::system(),
    })
    .context("cannot start the service")?;
    let result =
        serve(&mountpoint, VirtualFs::new(tree, Arc::clone(&service)), &cpus, threads, &signals);
    service.shutdown();
    result
}

fn serve(
    mountpoint: &std::path::Path,
    fs: VirtualFs<Arc<Service>>,
    cpus: &[usize],
    threads: usize,
    signals: &ShutdownSignals,
) -> anyhow::Result<()> {
    let mount = Mount::start(mountpoint, fs, cpus, threads, signals)?;
    tracing::info!(
        mountpoint = %mountpoint.display(),
        threads,
        fstype = %format_args!("fuse.{}", session::SUBTYPE),
        "mounted"
    );
    if session::in_host_pid_namespace() == Some(false) {
        tracing::warn!("not in the host pid namespace: callers outside it are seen as pid 0");
    }
    let reason = mount.wait();
    match &reason {
        Ok(StopReason::Signal(signal)) => tracing::info!(%signal, "shutting down"),
        Ok(StopReason::Unmounted) => tracing::info!("unmounted externally; shutting down"),
        Ok(StopReason::WorkerFailed) => tracing::error!("a worker failed; shutting down"),
        Err(err) => tracing::error!(error = %err, "shutting down"),
    }
    // Unmounts even if waiting failed.
    let stats = mount.stop()?;
    tracing::info!(
        mountpoint = %mountpoint.display(),
        requests = stats.total(),
        by_opcode = %stats.summary(),
        "unmounted"
    );
    match reason? {
        StopReason::WorkerFailed => anyhow::bail!("a FUSE worker failed (see the log); unmounted"),
        StopReason::Signal(_) | StopReason::Unmounted => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn mount_defaults() {
        let cli = Cli::try_parse_from(["sysvisor-fs", "mount", "/mnt"]).unwrap();
        let Command::Mount(args) = cli.command;
        assert_eq!(args.dir, PathBuf::from("/mnt"));
        assert_eq!(args.threads, None);
        assert_eq!(args.cache_ttl_ms, 100);
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn mount_options() {
        let cli = Cli::try_parse_from([
            "sysvisor-fs",
            "mount",
            "/mnt",
            "--threads",
            "3",
            "--cache-ttl-ms",
            "0",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Mount(args) = cli.command;
        assert_eq!(args.threads, Some(3));
        assert_eq!(args.cache_ttl_ms, 0);
        assert_eq!(args.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["sysvisor-fs", "mount", "/mnt", "--threads", "0"]).is_err());
        assert!(Cli::try_parse_from(["sysvisor-fs", "mount"]).is_err());
    }
}
