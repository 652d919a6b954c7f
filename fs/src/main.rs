//! `sysvisor-fs mount DIR`: mounts the virtual /proc and /sys files on DIR and serves them in
//! the foreground until SIGINT or SIGTERM, then unmounts.
//!
//! `sysvisor-fs serve`: the same, as the daemon of system containers: one mount for all of
//! them plus a control socket on which the runtime registers each container, so that its
//! uptime counts from its creation (see `sysvisor_fs::daemon`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use sysvisor_fs::caller::NsStartTimes;
use sysvisor_fs::daemon::{self, ControlOptions, ControlServer, Housekeeper, Registry};
use sysvisor_fs::fuse::{
    session, ActiveTransport, ContainerInits, Mount, OwnFs, ShutdownSignals, StopReason, Transport,
    Tree, VirtualFs,
};
use sysvisor_fs::host::HostProc;
use sysvisor_fs::mounttrap::{self, MountTrap, MountTrapOptions};
use sysvisor_fs::service::{Service, ServiceConfig};
use sysvisor_fs::sysctl;
use sysvisor_fs::sysctl::identity::Containers;
use sysvisor_fs::sysctl::store::Store;

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
    /// Run the daemon for system containers: one mount for all, and a control socket on
    /// which the runtime registers them. Stops on SIGINT/SIGTERM.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
struct MountArgs {
    /// Directory to mount on: it must exist and not be a mount point already.
    dir: PathBuf,

    #[command(flatten)]
    options: ServerOptions,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Directory to mount on (created if missing; a dead mount left by a crashed daemon is
    /// detached first).
    #[arg(long, default_value = sysvisor_proto::DEFAULT_MOUNTPOINT)]
    mountpoint: PathBuf,

    /// The control socket (its directory is created mode 0700 if missing).
    #[arg(long, default_value = sysvisor_proto::DEFAULT_SOCKET)]
    socket: PathBuf,

    /// Where the registry of containers is kept across restarts.
    #[arg(long, default_value = daemon::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// On kernels without MOVE_MOUNT_BENEATH (before 6.5) a container's /proc and /sys
    /// views cannot be made locked mounts, and such containers are refused. With this, they
    /// run, and the mount trap refuses unmounts and moves of their views by mount identity
    /// instead; a container that races a path change against the check can still get
    /// past it (see docs/security.md).
    #[arg(long, env = "SYSVISOR_FS_ALLOW_UNLOCKED_VIEWS")]
    allow_unlocked_views: bool,

    /// Trapped mount calls of one container served at once (of the trap's 4 workers), so
    /// that one container's flood of mounts cannot hold up the others'.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    trap_per_container: u32,

    #[command(flatten)]
    options: ServerOptions,
}

/// Options of the FUSE server, the same for `mount` and `serve`.
#[derive(Debug, Args)]
struct ServerOptions {
    /// Worker threads (default: one per online CPU; worker i is pinned to CPU i mod N).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    threads: Option<u32>,

    /// How long a rendered view may be served again to callers with the same view, in ms.
    #[arg(long, default_value_t = 100)]
    cache_ttl_ms: u64,

    /// How requests reach the server: FUSE over io_uring (one queue per CPU, served on the
    /// caller's CPU), /dev/fuse (one blocking worker per CPU), or auto: io_uring when the
    /// kernel has it (CONFIG_FUSE_IO_URING; the fuse module's enable_uring parameter is
    /// turned on), else /dev/fuse.
    #[arg(long, value_enum, env = "SYSVISOR_FS_TRANSPORT", default_value_t = TransportArg::Auto)]
    transport: TransportArg,

    /// Log format (logs go to stderr; filter with RUST_LOG, default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TransportArg {
    Auto,
    Uring,
    Epoll,
}

impl From<TransportArg> for Transport {
    fn from(arg: TransportArg) -> Transport {
        match arg {
            TransportArg::Auto => Transport::Auto,
            TransportArg::Uring => Transport::Uring,
            TransportArg::Epoll => Transport::Epoll,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    // The mount trap's helper process (see sysvisor_fs::mounttrap::helper): not a command.
    if std::env::args_os().nth(1).is_some_and(|a| a == mounttrap::helper::HELPER_ARG) {
        return ExitCode::from(mounttrap::helper::main() as u8);
    }
    // A sysctl writer process (see sysvisor_fs::sysctl::writer): not a command either.
    if std::env::args_os().nth(1).is_some_and(|a| a == sysctl::writer::WRITER_ARG) {
        return ExitCode::from(sysctl::writer::main() as u8);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) => {
            init_logging(args.options.log_format);
            mount(&args)
        }
        Command::Serve(args) => {
            init_logging(args.options.log_format);
            run_daemon(&args)
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
    let options = &args.options;
    // Everything that can be checked is checked before anything is started or mounted.
    session::check_privileges()?;
    let mountpoint = session::check_mountpoint(&args.dir)?;
    let cpus = session::online_cpus()?;
    let threads = options.threads.map_or(cpus.len().max(1), |t| t as usize);
    let tree = Tree::from_table()?;

    // Before any other thread exists (the service's included), so all inherit the mask.
    let signals = ShutdownSignals::block()?;

    let service = Service::new(ServiceConfig {
        cache_ttl: Duration::from_millis(options.cache_ttl_ms),
        host: HostProc::system(),
        registry: None,
        containers: None,
        sysctl_store: Arc::new(Store::in_memory()),
    })
    .context("cannot start the service")?;
    let fs = VirtualFs::new(tree, Arc::clone(&service));
    let result =
        serve(&mountpoint, fs, &cpus, threads, options.transport.into(), &signals, || Ok(()));
    service.shutdown();
    result
}

fn run_daemon(args: &ServeArgs) -> anyhow::Result<()> {
    let options = &args.options;
    // As for `mount`: check everything first. Another daemon on the socket is an error
    // before the mount point is touched.
    session::check_privileges()?;
    daemon::control::check_socket(&args.socket)?;
    let mountpoint = daemon::prepare_mountpoint(&args.mountpoint)?;
    let containers_mountpoint =
        daemon::prepare_mountpoint(&sysvisor_proto::containers_mountpoint_for(&args.mountpoint))?;
    let cpus = session::online_cpus()?;
    let threads = options.threads.map_or(cpus.len().max(1), |t| t as usize);
    let tree = Tree::from_table()?;
    let (registry, _report) = Registry::open(&args.state_dir)?;
    let registry = Arc::new(registry);

    // Before any other thread exists (the service's included), so all inherit the mask.
    let signals = ShutdownSignals::block()?;

    // The emulated sysctls of the containers still registered; from now on a container's
    // values go when its registration ends (or a new one begins).
    let store = Arc::new(Store::open(&args.state_dir));
    store.retain(|id| registry.contains(id));
    let hook_store = Arc::clone(&store);
    registry.on_reset(move |id| hook_store.drop_container(id));

    let ns_starts: Arc<dyn NsStartTimes> = registry.clone();
    let containers: Arc<dyn Containers> = registry.clone();
    let service = Service::new(ServiceConfig {
        cache_ttl: Duration::from_millis(options.cache_ttl_ms),
        host: HostProc::system(),
        registry: Some(ns_starts),
        containers: Some(containers),
        sysctl_store: store,
    })
    .context("cannot start the service")?;
    // A container's sysctl writers run with its ids: they end with its registration.
    let hook_service = Arc::clone(&service);
    registry.on_reset(move |id| hook_service.mirrors().end_container(id));
    let fs = VirtualFs::new(tree, Arc::clone(&service));
    let inits: Arc<dyn ContainerInits> = registry.clone();
    let ttl = Duration::from_millis(options.cache_ttl_ms);
    let own_fs = OwnFs::new(Arc::clone(&service), inits, ttl)?;
    // The socket appears only once the mounts are up: a runtime that can register can also
    // bind-mount the views. It goes away first at the end, the containers' mount last.
    let transport = options.transport.into();
    let result = serve(&mountpoint, fs, &cpus, threads, transport, &signals, || {
        let own =
            Mount::start(&containers_mountpoint, own_fs, &cpus, threads, &signals, transport)?;
        tracing::info!(
            mountpoint = %containers_mountpoint.display(),
            transport = own.transport().name(),
            "mounted the containers' own files"
        );
        let mut trap_options = MountTrapOptions::new(
            sysvisor_proto::seccomp_socket_for(&args.socket),
            mountpoint.clone(),
        );
        trap_options.allow_unlocked_views = args.allow_unlocked_views;
        trap_options.per_container = args.trap_per_container as usize;
        trap_options.sysinfo =
            Some(Arc::clone(&service) as Arc<dyn mounttrap::sysinfo::FiguresSource>);
        let control_options =
            ControlOptions { views: Some(trap_options.locks.clone()), ..ControlOptions::default() };
        let control = ControlServer::start(&args.socket, registry.clone(), control_options)?;
        let housekeeper = Housekeeper::start(registry.clone(), daemon::HOUSEKEEPING_INTERVAL)?;
        let trap = MountTrap::start(&trap_options)?;
        tracing::info!(
            socket = %args.socket.display(),
            seccomp = %trap.socket().unwrap_or(Path::new("")).display(),
            state = %registry.state_path().display(),
            containers = registry.len(),
            "listening"
        );
        // Dropped in order: the control socket, housekeeping, the trap, the own files.
        Ok((control, housekeeper, trap, OwnMount(Some(own))))
    });
    service.shutdown();
    result
}

/// The containers' own files' mount: unmounted (its requests logged) when dropped.
struct OwnMount(Option<Mount>);

impl Drop for OwnMount {
    fn drop(&mut self) {
        let Some(mount) = self.0.take() else { return };
        match mount.stop() {
            Ok(stats) => tracing::info!(
                mountpoint = "containers",
                requests = stats.total(),
                by_opcode = %stats.summary(),
                "unmounted the containers' own files"
            ),
            Err(err) => tracing::error!(error = %err, "cannot unmount the containers' own files"),
        }
    }
}

/// Mounts, runs `attach` (what else the mode serves; dropped before unmounting), waits for
/// SIGINT/SIGTERM or an unmount, unmounts.
fn serve<A>(
    mountpoint: &Path,
    fs: VirtualFs<Arc<Service>>,
    cpus: &[usize],
    threads: usize,
    transport: Transport,
    signals: &ShutdownSignals,
    attach: impl FnOnce() -> anyhow::Result<A>,
) -> anyhow::Result<()> {
    let mount = Mount::start(mountpoint, fs, cpus, threads, signals, transport)?;
    let active = mount.transport();
    let queues = match active {
        ActiveTransport::Uring { queues } => *queues,
        ActiveTransport::Epoll { .. } => 0,
    };
    tracing::info!(
        mountpoint = %mountpoint.display(),
        threads,
        transport = active.name(),
        queues,
        fstype = %format_args!("fuse.{}", session::SUBTYPE),
        "mounted"
    );
    if let ActiveTransport::Epoll { fallback: Some(why) } = active {
        tracing::info!(reason = %why, "FUSE over io_uring not used; serving /dev/fuse");
    }
    if session::in_host_pid_namespace() == Some(false) {
        tracing::warn!("not in the host pid namespace: callers outside it are seen as pid 0");
    }
    // On error, dropping `mount` unmounts.
    let attached = attach()?;
    let reason = mount.wait();
    match &reason {
        Ok(StopReason::Signal(signal)) => tracing::info!(%signal, "shutting down"),
        Ok(StopReason::Unmounted) => tracing::info!("unmounted externally; shutting down"),
        Ok(StopReason::WorkerFailed) => tracing::error!("a worker failed; shutting down"),
        Err(err) => tracing::error!(error = %err, "shutting down"),
    }
    drop(attached);
    // Unmounts even if waiting failed.
    let stats = mount.stop()?;
    tracing::info!(
        mountpoint = %mountpoint.display(),
        requests = stats.total(),
        via_uring = stats.via_uring(),
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
        let Command::Mount(args) = cli.command else { panic!("not mount") };
        assert_eq!(args.dir, PathBuf::from("/mnt"));
        assert_eq!(args.options.threads, None);
        assert_eq!(args.options.cache_ttl_ms, 100);
        assert_eq!(args.options.log_format, LogFormat::Text);
        if std::env::var_os("SYSVISOR_FS_TRANSPORT").is_none() {
            assert_eq!(args.options.transport, TransportArg::Auto);
        }
    }

    #[test]
    fn transport_option() {
        for (arg, want) in
            [("auto", Transport::Auto), ("uring", Transport::Uring), ("epoll", Transport::Epoll)]
        {
            let cli =
                Cli::try_parse_from(["sysvisor-fs", "mount", "/mnt", "--transport", arg]).unwrap();
            let Command::Mount(args) = cli.command else { panic!("not mount") };
            assert_eq!(Transport::from(args.options.transport), want);
        }
        let bad = ["sysvisor-fs", "serve", "--transport", "splice"];
        assert!(Cli::try_parse_from(bad).is_err());
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
        let Command::Mount(args) = cli.command else { panic!("not mount") };
        assert_eq!(args.options.threads, Some(3));
        assert_eq!(args.options.cache_ttl_ms, 0);
        assert_eq!(args.options.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["sysvisor-fs", "mount", "/mnt", "--threads", "0"]).is_err());
        assert!(Cli::try_parse_from(["sysvisor-fs", "mount"]).is_err());
    }

    #[test]
    fn serve_defaults() {
        let cli = Cli::try_parse_from(["sysvisor-fs", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.mountpoint, PathBuf::from(sysvisor_proto::DEFAULT_MOUNTPOINT));
        assert_eq!(args.socket, PathBuf::from(sysvisor_proto::DEFAULT_SOCKET));
        assert_eq!(args.state_dir, PathBuf::from("/var/lib/sysvisor/fs"));
        assert_eq!(args.options.threads, None);
        assert_eq!(args.options.cache_ttl_ms, 100);
        assert_eq!(args.options.log_format, LogFormat::Text);
    }

    #[test]
    fn serve_options() {
        let cli = Cli::try_parse_from([
            "sysvisor-fs",
            "serve",
            "--mountpoint",
            "/m",
            "--socket",
            "/s.sock",
            "--state-dir",
            "/st",
            "--threads",
            "2",
            "--cache-ttl-ms",
            "5",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else { panic!("not serve") };
        assert_eq!(args.mountpoint, PathBuf::from("/m"));
        assert_eq!(args.socket, PathBuf::from("/s.sock"));
        assert_eq!(args.state_dir, PathBuf::from("/st"));
        assert_eq!(args.options.threads, Some(2));
        assert_eq!(args.options.cache_ttl_ms, 5);
        assert_eq!(args.options.log_format, LogFormat::Json);
        // `serve` takes no positional directory.
        assert!(Cli::try_parse_from(["sysvisor-fs", "serve", "/mnt"]).is_err());
    }
}
