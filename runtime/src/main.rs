//! `sysvisor-runc`: the binary. Parses runc's command line, binds the lifecycle to the real
//! side effects ([`SystemHost`]) and reports every error in runc's `--log` format, so that
//! Docker shows it ("OCI runtime create failed: ...").

use std::cell::OnceCell;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::Duration;

use anyhow::Result;
use sysvisor_proto::Container;
use sysvisor_runc::cgroups::{self, Layout};
use sysvisor_runc::cli::{self, Command, Invocation};
use sysvisor_runc::daemon::{self, Daemon};
use sysvisor_runc::idrange::{self, Allocator, DiskRoot, IdRange};
use sysvisor_runc::lifecycle::{self, Host, HostError, Ids};
use sysvisor_runc::log::RuncLog;
use sysvisor_runc::runc::{self, RuncState};
use sysvisor_runc::volumes::{sync, Volumes};
use sysvisor_runc::{caps, mirrors, rootfs};

/// Environment variables pointing the id range allocator elsewhere.
const ENV_SUBUID: &str = "SYSVISOR_SUBUID";
const ENV_SUBGID: &str = "SYSVISOR_SUBGID";
const ENV_IDRANGE_STATE: &str = "SYSVISOR_IDRANGE_STATE";

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == lifecycle::HOOK_COMMAND) {
        exit(hook());
    }
    if args.first().is_some_and(|a| a == mirrors::HOOK_COMMAND) {
        let rest: Vec<String> =
            args[1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
        exit(mirror_hook(&rest));
    }
    if args.first().is_some_and(|a| a == lifecycle::RECLAIM_COMMAND) {
        exit(reclaim_after_delete(args.get(1).and_then(|id| id.to_str()).unwrap_or("")));
    }
    let inv = match cli::parse(args.clone()) {
        Ok(inv) => inv,
        Err(e) => {
            let (path, format) = cli::log_target(&args);
            RuncLog::new(path, format, false).error(&e.to_string());
            exit(1);
        }
    };
    let log = RuncLog::new(inv.global.log.clone(), inv.global.log_format, inv.global.debug);
    daemon::use_paths(inv.daemon.fs_socket.clone(), inv.daemon.fs_mountpoint.clone());
    match run(&inv, &log) {
        Ok(code) => exit(code),
        Err(e) => {
            // Our errors carry their causes' text already (`{e:#}` would repeat them).
            log.error(&e.to_string());
            exit(1);
        }
    }
}

/// How long the background reclaim after `delete` watches for the container to be gone
/// for good (Docker removes the layer right after `runc delete` on `docker rm`).
const RECLAIM_WATCH: Duration = Duration::from_secs(60);
const RECLAIM_POLL: Duration = Duration::from_millis(500);

/// The background half of `delete` ([`lifecycle::RECLAIM_COMMAND`]): reclaims ranges of
/// containers that are gone until `id` holds none, or gives up after [`RECLAIM_WATCH`]
/// (`docker stop`: the range stays the container's for its next `start`).
fn reclaim_after_delete(id: &str) -> i32 {
    let log = RuncLog::default();
    let host = SystemHost::new(PathBuf::from("runc"), Vec::new(), log.clone());
    let deadline = std::time::Instant::now() + RECLAIM_WATCH;
    while std::time::Instant::now() < deadline {
        std::thread::sleep(RECLAIM_POLL);
        if let Err(e) = host.reclaim_ranges() {
            log.warn(&format!("reclaiming id ranges: {e}"));
            return 1;
        }
        let held = host
            .allocator()
            .and_then(|a| Ok(a.ranges()?))
            .map(|ranges| ranges.iter().any(|(owner, _)| owner == id));
        match held {
            Ok(false) => return 0,
            Ok(true) => {}
            Err(e) => {
                log.warn(&format!("reading id ranges: {e}"));
                return 1;
            }
        }
    }
    0
}

/// The registration hook of `run` (runc runs it with the container's state on stdin and
/// shows what it writes to stderr if it fails).
fn hook() -> i32 {
    let mut state = Vec::new();
    let log = RuncLog::default();
    let host = SystemHost::new(PathBuf::from("runc"), Vec::new(), log.clone());
    let result = std::io::stdin()
        .read_to_end(&mut state)
        .map_err(|e| lifecycle::LifecycleError::Hook(format!("reading the state: {e}")))
        .and_then(|_| lifecycle::hook_register(&host, &state));
    match result {
        Ok(()) => 0,
        Err(e) => {
            log.error(&e.to_string());
            1
        }
    }
}

/// The `createContainer` hook that mounts sysvisor-fs's dynamic trees (runc runs it in the
/// container's namespaces with the state on stdin, and shows its stderr if it fails).
fn mirror_hook(args: &[String]) -> i32 {
    let mut state = Vec::new();
    let result = std::io::stdin()
        .read_to_end(&mut state)
        .map_err(|e| mirrors::MirrorError::State(e.to_string()))
        .and_then(|_| mirrors::hook(args, &state));
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn run(inv: &Invocation, log: &RuncLog) -> Result<i32> {
    if let Some(note) = &inv.note {
        log.warn(&format!("passing the command to runc as it is: {note}"));
    }
    if inv.command == Command::Version {
        println!("sysvisor-runc version {}", env!("CARGO_PKG_VERSION"));
        let _ = std::io::stdout().flush();
        // Then runc's own lines, which tools parse.
        return match runc::runc_path() {
            Ok(path) => Err(runc::exec(&path, &inv.args).into()),
            Err(e) => {
                log.warn(&e.to_string());
                Ok(0)
            }
        };
    }
    let runc = runc::runc_path()?;
    let host = SystemHost::new(runc.clone(), inv.global.state_flags(), log.clone());
    match &inv.command {
        Command::Create(args) => Ok(lifecycle::create(&host, inv, args)?),
        Command::Run(args) => Ok(lifecycle::run(&host, inv, args)?),
        Command::Delete(args) => Ok(lifecycle::delete(&host, inv, args)?),
        Command::Pause(args) => Ok(lifecycle::pause(&host, inv, &args.id)?),
        Command::Kill(args) => {
            let argv = lifecycle::kill_args(&host, inv, args);
            Err(runc::exec(&runc, &argv).into())
        }
        Command::Exec(args) => {
            if let Err(e) = lifecycle::exec(&host, args) {
                log.warn(&format!("exec keeps the capabilities it asked for: {e}"));
            }
            Err(runc::exec(&runc, &inv.args).into())
        }
        Command::Forward { .. } | Command::Version => Err(runc::exec(&runc, &inv.args).into()),
    }
}

/// The lifecycle's side effects on this host.
struct SystemHost {
    runc: PathBuf,
    global: Vec<OsString>,
    log: RuncLog,
    daemon: Daemon,
    allocator: OnceCell<Allocator>,
}

impl SystemHost {
    /// `global`: runc's global flags for our own `runc state` and `runc delete` calls.
    fn new(runc: PathBuf, global: Vec<OsString>, log: RuncLog) -> SystemHost {
        SystemHost { runc, global, log, daemon: Daemon::from_env(), allocator: OnceCell::new() }
    }

    /// The host's allocator; `SYSVISOR_SUBUID`, `SYSVISOR_SUBGID` and
    /// `SYSVISOR_IDRANGE_STATE` point it at another pool and state (tests, side-by-side
    /// installs).
    fn allocator(&self) -> Result<&Allocator, HostError> {
        if let Some(a) = self.allocator.get() {
            return Ok(a);
        }
        let path = |var: &str, default: &str| {
            std::env::var_os(var)
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let a = Allocator::open(
            &path(ENV_IDRANGE_STATE, idrange::SYSTEM_STATE_DIR),
            &path(ENV_SUBUID, idrange::SYSTEM_SUBUID),
            &path(ENV_SUBGID, idrange::SYSTEM_SUBGID),
        )?;
        Ok(self.allocator.get_or_init(|| a))
    }
}

impl Host for SystemHost {
    type Range = IdRange;

    fn range_ids(&self, range: &IdRange) -> Ids {
        Ids { uid_base: range.uid_base, gid_base: range.gid_base, count: range.count }
    }

    fn ping_daemon(&self) -> Result<(), HostError> {
        self.daemon.ping()?;
        // A daemon that answers but serves its views elsewhere would only show up as a
        // mount error inside runc.
        let mountpoint = daemon::mountpoint();
        let probe = mountpoint.join(sysvisor_runc::transform::VIEWS[0]);
        if let Err(e) = std::fs::metadata(&probe) {
            return Err(format!(
                "sysvisor-fs views not found at {} ({e}): the daemon at {} serves another mount point? \
                 give it with --fs-mountpoint (or ${})",
                mountpoint.display(),
                self.daemon.socket.display(),
                daemon::ENV_MOUNTPOINT
            )
            .into());
        }
        Ok(())
    }

    fn fs_mountpoint(&self) -> PathBuf {
        daemon::mountpoint()
    }

    fn own_views(&self, id: &str) -> Option<PathBuf> {
        daemon::own_views(id)
    }

    fn host_capabilities(&self) -> Result<Vec<String>, HostError> {
        Ok(caps::host_bounding_set()?)
    }

    fn reclaim_ranges(&self) -> Result<(), HostError> {
        for id in self.allocator()?.reclaim()? {
            self.log.debug(&format!("container {id} is gone for good: its id range is free again"));
            if let Err(e) = rootfs::forget(&id) {
                self.log
                    .warn(&format!("cannot remove the upper layer of removed container {id}: {e}"));
            }
            if let Err(e) = Volumes::system().remove(&id) {
                self.log.warn(&format!("cannot remove the volumes of removed container {id}: {e}"));
            }
        }
        Ok(())
    }

    fn allocate(&self, id: &str, bundle: &Path) -> Result<IdRange, HostError> {
        Ok(self.allocator()?.allocate(id, bundle)?)
    }

    fn shift_rootfs(
        &self,
        id: &str,
        rootfs: &Path,
        range: &IdRange,
        disk: DiskRoot,
    ) -> Result<PathBuf, HostError> {
        rootfs::shift(id, rootfs, range, disk)?;
        Ok(rootfs::shifted_root(id))
    }

    fn shift_bind_source(
        &self,
        id: &str,
        source: &Path,
        range: &IdRange,
    ) -> Result<Option<PathBuf>, HostError> {
        match rootfs::shift_bind_source(id, source, range) {
            Ok(path) => Ok(Some(path)),
            Err(rootfs::RootfsError::Unsupported(reason)) => {
                self.log.debug(&format!("{}: {reason}", source.display()));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn give_to_range(&self, path: &Path, range: &IdRange) -> Result<(), HostError> {
        let meta = std::fs::symlink_metadata(path)?;
        if !meta.is_file() {
            return Err(format!("{} is not a regular file", path.display()).into());
        }
        std::os::unix::fs::lchown(path, Some(range.uid_base), Some(range.gid_base))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
        Ok(())
    }

    fn unshift_rootfs(&self, id: &str) -> Result<(), HostError> {
        Ok(rootfs::unshift(id)?)
    }

    fn volumes_dir(&self, id: &str) -> Option<PathBuf> {
        Volumes::system().dir(id).ok()
    }

    fn ensure_volumes(
        &self,
        id: &str,
        range: &IdRange,
        sources: &[PathBuf],
    ) -> Result<(), HostError> {
        Ok(Volumes::system().ensure(id, range, sources)?)
    }

    fn seed_volumes(
        &self,
        id: &str,
        shifted_root: &Path,
        sources: &[PathBuf],
    ) -> Result<(), HostError> {
        for volume in sync::seed(shifted_root, sources)? {
            self.log.debug(&format!("{id}: {} filled from the image", volume.display()));
        }
        Ok(())
    }

    fn save_volumes(&self, id: &str) -> Result<(), HostError> {
        for copy in sync::save(&Volumes::system(), &rootfs::Rootfs::system(), id)? {
            self.log.debug(&format!("{id}: inner engine data copied to {}", copy.display()));
        }
        Ok(())
    }

    fn refresh_engine_mount(&self, id: &str) -> Result<(), HostError> {
        if rootfs::Rootfs::system().refresh_engine_mount(id)? {
            self.log.debug(&format!("{id}: Docker's overlay mounted afresh"));
        }
        Ok(())
    }

    fn cgroup_layout(&self) -> Layout {
        cgroups::host_layout()
    }

    fn delegate_cgroups(&self, pid: u32, ids: Ids) -> Result<(), HostError> {
        match cgroups::delegate(pid, ids.uid_base, ids.gid_base) {
            Ok(paths) => {
                self.log.debug(&format!("cgroups of {pid} given to {}: {paths:?}", ids.uid_base));
                Ok(())
            }
            // A host without (known) cgroup mounts: nothing to delegate.
            Err(e @ cgroups::CgroupError::NotFound { .. }) => {
                self.log.warn(&e.to_string());
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn register(&self, container: Container) -> Result<(), HostError> {
        Ok(self.daemon.register(container)?)
    }

    fn unregister(&self, id: &str) -> Result<(), HostError> {
        Ok(self.daemon.unregister(id)?)
    }

    fn views_locked(&self, id: &str, init_pid: u32) -> Result<(), HostError> {
        Ok(self.daemon.views_locked(id, init_pid)?)
    }

    fn cgroup_of(&self, pid: u32) -> Option<String> {
        daemon::cgroup_of(pid)
    }

    fn now_unix_ms(&self) -> u64 {
        daemon::now_unix_ms()
    }

    fn runc(&self, args: &[OsString]) -> Result<i32, HostError> {
        let mut child = runc::spawn_forwarding(&self.runc, args)?;
        Ok(runc::exit_code(child.wait()?))
    }

    fn runc_state(&self, id: &str) -> Result<Option<RuncState>, HostError> {
        Ok(runc::state(&self.runc, &self.global, id)?)
    }

    fn self_exe(&self) -> Result<PathBuf, HostError> {
        Ok(std::env::current_exe()?)
    }

    fn schedule_reclaim(&self, id: &str) {
        use std::os::unix::process::CommandExt;
        let spawned = std::env::current_exe().and_then(|exe| {
            std::process::Command::new(exe)
                .arg(lifecycle::RECLAIM_COMMAND)
                .arg(id)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                // Its own group: signals meant for the shim's runc calls do not reach it.
                .process_group(0)
                .spawn()
        });
        if let Err(e) = spawned {
            self.log.warn(&format!("cannot start the background reclaim of {id}: {e}"));
        }
    }

    fn daemon_socket(&self) -> PathBuf {
        self.daemon.socket.clone()
    }

    fn warn(&self, msg: &str) {
        self.log.warn(msg);
    }

    fn debug(&self, msg: &str) {
        self.log.debug(msg);
    }
}
