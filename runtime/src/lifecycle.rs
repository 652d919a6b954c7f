//! What sysvisor-runc does around runc for the commands it acts on.
//!
//! The steps are written against the [`Host`] trait, which holds every side effect (the
//! uid range allocator, the rootfs shifting, the sysvisor-fs daemon, runc itself), so that
//! their order and the clean-up on each failure are unit-tested with a fake host. The
//! binary's `SystemHost` (in `main.rs`) binds the trait to the real modules.
//!
//! `create` (and `run`): load the original config -> refuse what cannot be a system
//! container -> ping the daemon -> allocate the range -> transform (systemd detected in the
//! rootfs first) -> make the volume directories -> shift the rootfs (and the binds asked
//! for, [`crate::binds`]; Docker's own files are given to the range) -> fill an empty
//! volume with what the image holds at its place ([`crate::volumes::sync`]) -> add the hook that
//! mounts sysvisor-fs's dynamic trees ([`crate::mirrors`]) -> save the config -> runc ->
//! wait until the daemon has locked the container's `/proc` and `/sys` views (`create`
//! only: for `run` the daemon refuses every mount-family call of a container whose views
//! it cannot lock) -> register -> delegate the cgroups (for `run`, the last two from a
//! hook). A
//! failure before runc leaves nothing behind but the range and the volume directories
//! (kept for the container's next `create`, see [`crate::idrange`]); a failure of
//! runc undoes the shift and restores the original config; runc's own error is already in
//! the log. `delete`: runc delete -> unregister -> copy the inner engines' volumes into the
//! rootfs -> undo the shift -> restore the config. `pause`: runc pause -> copy the volumes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Process;
use sysvisor_proto::Container;

use crate::cgroups::Layout;
use crate::cli::{CreateArgs, DeleteArgs, ExecArgs, Invocation, KillArgs, RunArgs};
use crate::idrange::DiskRoot;
use crate::nesting::{self, NestingInputs};
use crate::runc::RuncState;
use crate::spec::{self, SpecError};
use crate::transform::{self, TransformError, TransformInputs};
use crate::{binds, daemon, docker, seccomp, systemd};

/// An error of one of the [`Host`]'s side effects.
pub type HostError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A container's id range as the transform needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uid_base: u32,
    pub gid_base: u32,
    pub count: u32,
}

/// Every side effect of the lifecycle.
pub trait Host {
    /// What the allocator hands out (passed back to [`Host::shift_rootfs`]).
    type Range;

    fn range_ids(&self, range: &Self::Range) -> Ids;
    /// Checks that the sysvisor-fs daemon answers; its error is shown as it is.
    fn ping_daemon(&self) -> Result<(), HostError>;
    /// Where the daemon's views live on the host.
    fn fs_mountpoint(&self) -> PathBuf;
    /// Where the daemon serves container `id`'s own view files (served from the page cache,
    /// see sysvisor-fs' `fuse::own`), if it does; `None`: the per-caller views are bound.
    fn own_views(&self, _id: &str) -> Option<PathBuf> {
        None
    }
    /// The host's capability bounding set.
    fn host_capabilities(&self) -> Result<Vec<String>, HostError>;
    /// The host's online CPUs (empty when unknown: then no cpuset is pinned).
    fn online_cpus(&self) -> Vec<u32> {
        std::fs::read_to_string("/sys/devices/system/cpu/online")
            .ok()
            .and_then(|text| transform::parse_cpu_list(&text))
            .unwrap_or_default()
    }
    /// Whether the kernel has `/proc/slabinfo`.
    fn has_slabinfo(&self) -> bool {
        std::path::Path::new("/proc/slabinfo").exists()
    }
    /// Returns the ranges of containers that are gone for good to the pool.
    fn reclaim_ranges(&self) -> Result<(), HostError>;
    /// After `delete`: `docker rm` removes the container's layer only once `runc delete`
    /// has returned, so whether the container is gone for good (its range free again) can
    /// only be told a moment later. The real host starts a short-lived background reclaim;
    /// `docker stop` leaves the layer, and the range stays the container's.
    fn schedule_reclaim(&self, id: &str);
    /// The container's range: the one it had if it had one, else a fresh one.
    fn allocate(&self, id: &str, bundle: &Path) -> Result<Self::Range, HostError>;
    /// Shifts the container's rootfs (whose root's files the `disk` ids own) to its
    /// range; returns the path to give runc as `root.path`.
    fn shift_rootfs(
        &self,
        id: &str,
        rootfs: &Path,
        range: &Self::Range,
        disk: DiskRoot,
    ) -> Result<PathBuf, HostError>;
    /// An id-shifted stand-in for a bind mount's source (container root = host root
    /// there), `None` when its filesystem cannot be shifted.
    fn shift_bind_source(
        &self,
        id: &str,
        source: &Path,
        range: &Self::Range,
    ) -> Result<Option<PathBuf>, HostError>;
    /// Gives a file the engine made for the container (Docker's `/etc/hosts`, ...) to the
    /// container's root (owner and group: the range's first ids).
    fn give_to_range(&self, path: &Path, range: &Self::Range) -> Result<(), HostError>;
    fn unshift_rootfs(&self, id: &str) -> Result<(), HostError>;
    /// The container's directory of host-backed volumes ([`crate::volumes`]); `None`: the
    /// container gets none.
    fn volumes_dir(&self, id: &str) -> Option<PathBuf>;
    /// Creates the host directories `sources` of the container's volume mounts, owned by
    /// its range (kept if they exist).
    fn ensure_volumes(
        &self,
        id: &str,
        range: &Self::Range,
        sources: &[PathBuf],
    ) -> Result<(), HostError>;
    /// Fills the empty volumes among `sources` with what the container's shifted rootfs
    /// holds at their place (inner engines' images committed with the image,
    /// [`crate::volumes::sync::seed`]).
    fn seed_volumes(
        &self,
        id: &str,
        shifted_root: &Path,
        sources: &[PathBuf],
    ) -> Result<(), HostError>;
    /// Copies the container's volumes of inner engines into its rootfs, for `docker commit`
    /// ([`crate::volumes::sync::save`]).
    fn save_volumes(&self, id: &str) -> Result<(), HostError>;
    /// Mounts Docker's overlay of the container afresh, so that Docker reads what the
    /// container wrote ([`crate::rootfs::Rootfs::refresh_engine_mount`]).
    fn refresh_engine_mount(&self, id: &str) -> Result<(), HostError>;
    /// How the host mounts its cgroups.
    fn cgroup_layout(&self) -> Layout;
    /// Gives the cgroups of the container's init `pid` to the container's root
    /// ([`crate::cgroups::delegate`]).
    fn delegate_cgroups(&self, pid: u32, ids: Ids) -> Result<(), HostError>;
    fn register(&self, container: Container) -> Result<(), HostError>;
    /// Waits until the daemon has locked the created container's views.
    fn views_locked(&self, id: &str, init_pid: u32) -> Result<(), HostError>;
    fn unregister(&self, id: &str) -> Result<(), HostError>;
    fn cgroup_of(&self, pid: u32) -> Option<String>;
    fn now_unix_ms(&self) -> u64;
    /// Runs `runc ARGS` as a child and returns its exit code.
    fn runc(&self, args: &[OsString]) -> Result<i32, HostError>;
    /// `runc state ID`, `None` when runc does not know the container.
    fn runc_state(&self, id: &str) -> Result<Option<RuncState>, HostError>;
    /// This binary, for the registration hook of `run`.
    fn self_exe(&self) -> Result<PathBuf, HostError>;
    /// The daemon's socket, passed on to the registration hook.
    fn daemon_socket(&self) -> PathBuf;
    fn warn(&self, msg: &str);
    fn debug(&self, msg: &str);
}

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Binds(#[from] binds::BindError),
    #[error("cannot use the bundle {path}: {source}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the config has no root (rootfs) path")]
    NoRoot { path: PathBuf },
    #[error("{0}")]
    Daemon(#[source] HostError),
    #[error("cannot read the host's capabilities: {0}")]
    Capabilities(#[source] HostError),
    #[error("cannot allocate a uid/gid range for container {id}: {source}")]
    Allocate {
        id: String,
        #[source]
        source: HostError,
    },
    #[error("cannot shift the rootfs {rootfs} of container {id} to its id range: {source}")]
    Shift {
        id: String,
        rootfs: PathBuf,
        #[source]
        source: HostError,
    },
    #[error("cannot prepare the bind mount source {source_path} of container {id}: {source}")]
    ShiftBind {
        id: String,
        source_path: PathBuf,
        #[source]
        source: HostError,
    },
    #[error("cannot undo the rootfs shift of container {id}: {source}")]
    Unshift {
        id: String,
        #[source]
        source: HostError,
    },
    #[error("cannot create the volume directories of container {id}: {source}")]
    Volumes {
        id: String,
        #[source]
        source: HostError,
    },
    #[error("cannot delegate the cgroups of container {id} to its root: {source}")]
    Cgroups {
        id: String,
        #[source]
        source: HostError,
    },
    #[error("cannot register container {id} with the sysvisor-fs daemon: {source}")]
    Register {
        id: String,
        #[source]
        source: HostError,
    },
    #[error("container {id} not started: {source}")]
    Views {
        id: String,
        #[source]
        source: HostError,
    },
    #[error("{0}")]
    Runc(#[source] HostError),
    #[error("sysvisor-runc registration hook: {0}")]
    Hook(String),
}

/// The parts of `create` and `run` that prepare the bundle.
struct Prepared {
    bundle: PathBuf,
    ids: Ids,
}

/// `create`: see the module doc. Returns runc's exit code.
pub fn create<H: Host>(
    host: &H,
    inv: &Invocation,
    args: &CreateArgs,
) -> Result<i32, LifecycleError> {
    let prepared = prepare(host, &args.id, &args.bundle, false)?;
    let code = host.runc(&inv.args).map_err(LifecycleError::Runc);
    let code = match code {
        Ok(0) => 0,
        other => {
            undo_prepare(host, &args.id, &prepared.bundle);
            return other;
        }
    };
    let pid = match init_pid(host, &args.id, args.pid_file.as_deref()) {
        Ok(pid) => pid,
        Err(e) => return Err(abort_created(host, inv, &args.id, &prepared.bundle, e)),
    };
    // The init waits for `runc start` on its exec fifo: it must not get there with views
    // that are not locked (sysvisor-fs' mounttrap::locks).
    if let Err(source) = host.views_locked(&args.id, pid) {
        let e = LifecycleError::Views { id: args.id.clone(), source };
        return Err(abort_created(host, inv, &args.id, &prepared.bundle, e));
    }
    if let Err(e) = register(host, &args.id, pid, prepared.ids) {
        return Err(abort_created(host, inv, &args.id, &prepared.bundle, e));
    }
    if let Err(e) = delegate_cgroups(host, &args.id, pid, prepared.ids) {
        return Err(abort_created(host, inv, &args.id, &prepared.bundle, e));
    }
    Ok(code)
}

/// Gives the created container's cgroups to its root, before its first instruction.
fn delegate_cgroups<H: Host>(host: &H, id: &str, pid: u32, ids: Ids) -> Result<(), LifecycleError> {
    host.delegate_cgroups(pid, ids)
        .map_err(|source| LifecycleError::Cgroups { id: id.into(), source })
}

/// `run`: like `create`, then runc starts the container, in the foreground unless
/// `--detach`. runc creates and starts in one go, so the container is registered from
/// inside runc, by a `createRuntime` hook running this binary ([`HOOK_COMMAND`], see
/// [`hook_register`]): before the container's first instruction, as after `create`.
/// In the foreground the container is unregistered and cleaned up when it ends. Returns
/// runc's exit code.
pub fn run<H: Host>(host: &H, inv: &Invocation, args: &RunArgs) -> Result<i32, LifecycleError> {
    let prepared = prepare(host, &args.id, &args.bundle, true)?;
    let code = host.runc(&inv.args).map_err(LifecycleError::Runc);
    if args.detach && matches!(code, Ok(0)) {
        return code; // it runs on; `delete` cleans up
    }
    unregister(host, &args.id);
    if !args.keep || args.detach {
        undo_prepare(host, &args.id, &prepared.bundle);
    }
    code
}

/// The argument that makes this binary the registration hook of `run`.
pub const HOOK_COMMAND: &str = "sysvisor-hook-register";

/// Internal command run in the background after `delete`: frees the container's id range
/// and upper layer once the container is gone for good (see [`Host::schedule_reclaim`]).
pub const RECLAIM_COMMAND: &str = "sysvisor-reclaim";

/// The `createRuntime` hook of `run`: registers the container described by the OCI state
/// that runc writes on the hook's stdin (id, init pid, and our range annotations).
pub fn hook_register<H: Host>(host: &H, state: &[u8]) -> Result<(), LifecycleError> {
    let hook_err = LifecycleError::Hook;
    let state: serde_json::Value = serde_json::from_slice(state)
        .map_err(|e| hook_err(format!("unreadable hook state: {e}")))?;
    let id = state["id"].as_str().ok_or_else(|| hook_err("hook state without an id".into()))?;
    let pid = state["pid"].as_u64().and_then(|p| u32::try_from(p).ok()).filter(|p| *p > 0);
    let pid = pid.ok_or_else(|| hook_err(format!("hook state of {id} without a pid")))?;
    let annotation = |key: &str| {
        state["annotations"][key]
            .as_str()
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| hook_err(format!("hook state of {id} without the {key} annotation")))
    };
    let ids = Ids {
        uid_base: annotation(transform::ANNOTATION_UID_BASE)?,
        gid_base: annotation(transform::ANNOTATION_GID_BASE)?,
        count: annotation(transform::ANNOTATION_ID_COUNT)?,
    };
    register(host, id, pid, ids)?;
    delegate_cgroups(host, id, pid, ids)
}

/// `delete`: runc first; then, if runc deleted the container (or never knew it), our part.
pub fn delete<H: Host>(
    host: &H,
    inv: &Invocation,
    args: &DeleteArgs,
) -> Result<i32, LifecycleError> {
    let state = match host.runc_state(&args.id) {
        Ok(state) => Some(state),
        Err(e) => {
            host.warn(&format!("runc state {}: {e}", args.id));
            None
        }
    };
    let code = host.runc(&inv.args).map_err(LifecycleError::Runc)?;
    let known = matches!(state, Some(Some(_)));
    let unknown = matches!(state, Some(None));
    if !(code == 0 || unknown) {
        return Ok(code); // runc kept the container (running without --force, ...)
    }
    let bundle = match &state {
        Some(Some(state)) => Some(state.bundle.clone()),
        _ => None,
    };
    host.debug(&format!("cleaning up container {} (known to runc: {known})", args.id));
    unregister(host, &args.id);
    // Before the shift is undone: the rootfs it recorded is where the copy goes.
    save_volumes(host, &args.id);
    host.unshift_rootfs(&args.id)
        .map_err(|source| LifecycleError::Unshift { id: args.id.clone(), source })?;
    if let Some(bundle) = bundle {
        if let Err(e) = spec::restore_original(&bundle) {
            host.warn(&e.to_string());
        }
    }
    host.schedule_reclaim(&args.id);
    Ok(code)
}

/// `pause`: runc freezes the container, then its inner engines' data is copied into its
/// layer and Docker's overlay is mounted afresh (`docker commit` pauses the container it
/// commits, then reads it there). Returns runc's exit code.
pub fn pause<H: Host>(host: &H, inv: &Invocation, id: &str) -> Result<i32, LifecycleError> {
    let code = host.runc(&inv.args).map_err(LifecycleError::Runc)?;
    if code == 0 {
        save_volumes(host, id);
        if let Err(e) = host.refresh_engine_mount(id) {
            host.warn(&format!(
                "cannot mount Docker's overlay of container {id} afresh (a `docker commit` \
                 now may miss what the container changed where Docker looked before): {e}"
            ));
        }
    }
    Ok(code)
}

/// Best effort: the container stays paused or gets deleted whatever the copy did.
fn save_volumes<H: Host>(host: &H, id: &str) {
    if let Err(e) = host.save_volumes(id) {
        host.warn(&format!(
            "cannot copy the inner engines' data of container {id} into its rootfs (a \
             `docker commit` now lacks it): {e}"
        ));
    }
}

/// The arguments for runc `kill`: SIGTERM to a systemd init (without `--all`) becomes
/// SIGRTMIN+3, systemd's "halt" (what `docker stop` should mean for it). Whether the
/// container runs systemd was recorded at `create` in its annotations
/// ([`systemd::ANNOTATION_INIT`]), which `runc state` reports.
pub fn kill_args<H: Host>(host: &H, inv: &Invocation, args: &KillArgs) -> Vec<OsString> {
    if args.all || !is_sigterm(args.signal.as_deref()) {
        return inv.args.clone();
    }
    let Ok(Some(state)) = host.runc_state(&args.id) else {
        return inv.args.clone();
    };
    if !systemd::runs_systemd(state.annotations.as_ref()) {
        return inv.args.clone();
    }
    let halt = OsString::from(systemd::STOP_SIGNAL.to_string());
    host.debug(&format!("container {} runs systemd: SIGTERM becomes SIGRTMIN+3", args.id));
    let mut out = inv.args.clone();
    match &args.signal {
        Some(signal) => {
            if let Some(pos) = out.iter().rposition(|a| a == signal.as_str()) {
                out[pos] = halt;
            }
        }
        None => out.push(halt),
    }
    out
}

/// Whether a runc signal argument means SIGTERM (runc's default when it is absent).
pub fn is_sigterm(signal: Option<&str>) -> bool {
    match signal {
        None => true,
        Some(s) => {
            let upper = s.trim().to_ascii_uppercase();
            upper == "15" || upper == "TERM" || upper == "SIGTERM"
        }
    }
}

/// Gives the process of an `exec` (its `--process` file) the capabilities of a system
/// container's process (see [`transform::capabilities_for`]: Docker passes the container's
/// own set, so what was dropped for the container stays dropped for `docker exec`), in
/// place and atomically.
pub fn rewrite_exec_process(
    path: &Path,
    host_capabilities: &[String],
) -> Result<(), LifecycleError> {
    let bytes = std::fs::read(path).map_err(|source| {
        LifecycleError::Spec(SpecError::Read { path: path.to_path_buf(), source })
    })?;
    let mut process: Process = spec::parse_with_capabilities(path, &bytes, "/capabilities")?;
    let caps = transform::process_capabilities(&process, host_capabilities)?;
    process.set_capabilities(Some(caps));
    spec::write_json(path, &process, "/capabilities")?;
    Ok(())
}

/// `exec`: the process file gets the system container's capabilities; the rest is runc's.
pub fn exec<H: Host>(host: &H, args: &ExecArgs) -> Result<(), LifecycleError> {
    if let Some(process) = &args.process {
        let caps = host.host_capabilities().map_err(LifecycleError::Capabilities)?;
        rewrite_exec_process(process, &caps)?;
    }
    Ok(())
}

fn absolute(bundle: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        bundle.join(path)
    }
}

/// Steps up to and including saving the rewritten config.
/// With `hook`, the config gets the registration hook of `run`.
fn prepare<H: Host>(
    host: &H,
    id: &str,
    bundle: &Path,
    hook: bool,
) -> Result<Prepared, LifecycleError> {
    let bundle = std::fs::canonicalize(bundle)
        .map_err(|source| LifecycleError::Bundle { path: bundle.to_path_buf(), source })?;
    let original = spec::load_original(&bundle)?;
    transform::validate(&original.spec)?;
    let disk = transform::disk_root(&original.spec)?;
    let rootfs = original
        .spec
        .root()
        .as_ref()
        .map(|r| absolute(&bundle, r.path()))
        .ok_or_else(|| LifecycleError::NoRoot { path: spec::config_path(&bundle) })?;
    host.ping_daemon().map_err(LifecycleError::Daemon)?;
    let host_capabilities = host.host_capabilities().map_err(LifecycleError::Capabilities)?;

    if let Err(e) = host.reclaim_ranges() {
        host.warn(&format!("cannot reclaim the id ranges of removed containers: {e}"));
    }
    let range = host
        .allocate(id, &bundle)
        .map_err(|source| LifecycleError::Allocate { id: id.into(), source })?;
    let ids = host.range_ids(&range);
    host.debug(&format!(
        "container {id}: uids {}+{}, gids {}+{}",
        ids.uid_base, ids.count, ids.gid_base, ids.count
    ));

    let nesting = NestingInputs {
        volumes_dir: host.volumes_dir(id),
        cgroup_layout: host.cgroup_layout(),
        systemd: systemd::is_systemd(&original.spec, &rootfs),
    };
    if nesting.systemd {
        host.debug(&format!("container {id} runs systemd"));
    }
    let inputs = TransformInputs {
        uid_base: ids.uid_base,
        gid_base: ids.gid_base,
        id_count: ids.count,
        fs_mountpoint: host.fs_mountpoint(),
        own_views: host.own_views(id),
        host_capabilities,
        seccomp_listener: Some(sysvisor_proto::seccomp_socket_for(&host.daemon_socket())),
        seccomp_origin: seccomp_origin(&original.spec, id),
        host_cpus: host.online_cpus(),
        host_slabinfo: host.has_slabinfo(),
        cpu_spread: ids.uid_base / ids.count.max(1),
        nesting,
    };
    let mut rewritten = transform::to_system_container(original.spec.clone(), &inputs)?;
    let exe =
        host.self_exe().map_err(|source| LifecycleError::Register { id: id.into(), source })?;
    if hook {
        add_register_hook(&mut rewritten, &exe, &host.daemon_socket());
    }
    let volumes_dir = inputs.nesting.volumes_dir.as_deref();
    if let Some(dir) = volumes_dir {
        let sources = nesting::volume_sources(rewritten.mounts().as_deref().unwrap_or(&[]), dir);
        host.ensure_volumes(id, &range, &sources)
            .map_err(|source| LifecycleError::Volumes { id: id.into(), source })?;
    }

    let keep = [Some(inputs.fs_mountpoint.as_path()), inputs.own_views.as_deref(), volumes_dir];
    let result = shift(host, id, &rootfs, &range, disk, &mut rewritten, &keep).and_then(|()| {
        let Some(dir) = volumes_dir else { return Ok(()) };
        let sources = nesting::volume_sources(rewritten.mounts().as_deref().unwrap_or(&[]), dir);
        let root = rewritten.root().as_ref().map(|r| absolute(&bundle, r.path()));
        host.seed_volumes(id, &root.unwrap_or_else(|| rootfs.clone()), &sources)
            .map_err(|source| LifecycleError::Volumes { id: id.into(), source })
    });
    if let Err(e) = result {
        if let Err(undo) = host.unshift_rootfs(id) {
            host.warn(&format!("cannot undo the partial rootfs shift of container {id}: {undo}"));
        }
        return Err(e);
    }
    // The dynamic trees' hook, given the (shifted) rootfs it mounts below.
    if let Some(root) = rewritten.root().as_ref().map(|r| absolute(&bundle, r.path())) {
        crate::mirrors::add_hook(&mut rewritten, &exe, &root);
    }
    if let Err(e) = spec::save_transformed(&bundle, &original, &rewritten) {
        undo_prepare(host, id, &bundle);
        return Err(e.into());
    }
    Ok(Prepared { bundle, ids })
}

/// Where the container's seccomp profile came from: Docker's default when Docker recorded
/// no `--security-opt seccomp=...` for it; else (the user's, or an engine that cannot be
/// asked) the user's, which is merged, never replaced.
fn seccomp_origin(spec: &oci_spec::runtime::Spec, id: &str) -> seccomp::Origin {
    match docker::seccomp_option(spec, id) {
        Some(docker::SeccompOption::Default) => seccomp::Origin::EngineDefault,
        _ => seccomp::Origin::User,
    }
}

/// Adds the `createRuntime` hook that registers the container (see [`run`]).
pub fn add_register_hook(spec: &mut oci_spec::runtime::Spec, exe: &Path, socket: &Path) {
    let mut hook = oci_spec::runtime::Hook::default();
    hook.set_path(exe.to_path_buf());
    hook.set_args(Some(vec!["sysvisor-runc".into(), HOOK_COMMAND.into()]));
    hook.set_env(Some(vec![format!("{}={}", daemon::ENV_SOCKET, socket.display())]));
    let hooks = spec.hooks_mut().get_or_insert_with(Default::default);
    let mut list = hooks.create_runtime().clone().unwrap_or_default();
    list.push(hook);
    hooks.set_create_runtime(Some(list));
}

/// Shifts the rootfs and the bind sources the user asked to shift ([`binds`]), gives
/// Docker's own per-container files to the container's root, and points `spec` at the
/// shifted paths. Binds below the `keep` directories (sysvisor-fs' views, the container's
/// own volumes) and every other bind are left as they are.
fn shift<H: Host>(
    host: &H,
    id: &str,
    rootfs: &Path,
    range: &H::Range,
    disk: DiskRoot,
    spec: &mut oci_spec::runtime::Spec,
    keep: &[Option<&Path>],
) -> Result<(), LifecycleError> {
    let wanted = binds::shift_requests(spec)?;
    let root = host.shift_rootfs(id, rootfs, range, disk).map_err(|source| {
        LifecycleError::Shift { id: id.into(), rootfs: rootfs.to_path_buf(), source }
    })?;
    if let Some(r) = spec.root_mut() {
        r.set_path(root);
    }
    for mount in spec.mounts_mut().iter_mut().flatten() {
        if !binds::is_bind(mount) {
            continue;
        }
        let Some(source) = mount.source().clone() else {
            continue;
        };
        let bind_err = |source_path: &Path, e: HostError| LifecycleError::ShiftBind {
            id: id.into(),
            source_path: source_path.to_path_buf(),
            source: e,
        };
        if keep.iter().flatten().any(|dir| source.starts_with(dir)) {
            // sysvisor-fs answers by the caller's ids itself; the volumes belong to the
            // range already.
            continue;
        }
        if docker::is_container_file(&source, id) {
            host.give_to_range(&source, range).map_err(|e| bind_err(&source, e))?;
            continue;
        }
        if !wanted.contains(mount.destination()) {
            host.debug(&format!(
                "bind mount {} of {id}: {} bound as it is (not id-shifted)",
                mount.destination().display(),
                source.display()
            ));
            continue;
        }
        match host.shift_bind_source(id, &source, range).map_err(|e| bind_err(&source, e))? {
            Some(path) => {
                host.debug(&format!(
                    "bind mount {} of {id}: {} -> {} (id-shifted, nosuid, nodev)",
                    mount.destination().display(),
                    source.display(),
                    path.display()
                ));
                mount.set_source(Some(path));
                binds::harden(mount);
            }
            None => {
                return Err(bind_err(
                    &source,
                    format!(
                        "{} asks to id-shift {}, but its filesystem has no idmapped-mount support",
                        binds::ENV,
                        mount.destination().display()
                    )
                    .into(),
                ))
            }
        }
    }
    Ok(())
}

/// Undoes [`prepare`] (not the allocation): best effort, failures are warnings.
fn undo_prepare<H: Host>(host: &H, id: &str, bundle: &Path) {
    if let Err(e) = host.unshift_rootfs(id) {
        host.warn(&format!("cannot undo the rootfs shift of container {id}: {e}"));
    }
    if let Err(e) = spec::restore_original(bundle) {
        host.warn(&e.to_string());
    }
}

/// The created container cannot be completed: remove it from runc, undo our part, and
/// return the error to report.
fn abort_created<H: Host>(
    host: &H,
    inv: &Invocation,
    id: &str,
    bundle: &Path,
    err: LifecycleError,
) -> LifecycleError {
    let mut argv = inv.global.state_flags();
    argv.extend(["delete".into(), "--force".into(), id.into()]);
    match host.runc(&argv) {
        Ok(0) => {}
        Ok(code) => host.warn(&format!("runc delete --force {id} exited with {code}")),
        Err(e) => host.warn(&format!("runc delete --force {id}: {e}")),
    }
    unregister(host, id);
    undo_prepare(host, id, bundle);
    err
}

fn init_pid<H: Host>(host: &H, id: &str, pid_file: Option<&Path>) -> Result<u32, LifecycleError> {
    if let Some(path) = pid_file {
        return daemon::read_pid_file(path)
            .map_err(|e| LifecycleError::Register { id: id.into(), source: e.into() });
    }
    match host.runc_state(id) {
        Ok(Some(state)) if state.pid > 0 => Ok(state.pid),
        Ok(_) => Err(LifecycleError::Register {
            id: id.into(),
            source: "runc does not report its init pid".into(),
        }),
        Err(source) => Err(LifecycleError::Register { id: id.into(), source }),
    }
}

fn register<H: Host>(host: &H, id: &str, pid: u32, ids: Ids) -> Result<(), LifecycleError> {
    let container = Container {
        id: id.to_string(),
        init_pid: pid,
        uid_base: ids.uid_base,
        gid_base: ids.gid_base,
        id_count: ids.count,
        cgroup: host.cgroup_of(pid),
        created_unix_ms: host.now_unix_ms(),
    };
    host.debug(&format!("registering {container:?}"));
    host.register(container).map_err(|source| LifecycleError::Register { id: id.into(), source })
}

fn unregister<H: Host>(host: &H, id: &str) {
    if let Err(e) = host.unregister(id) {
        host.warn(&format!("cannot unregister container {id} from the sysvisor-fs daemon: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_spellings() {
        for s in [None, Some("15"), Some("TERM"), Some("SIGTERM"), Some("sigterm")] {
            assert!(is_sigterm(s), "{s:?}");
        }
        for s in [Some("9"), Some("KILL"), Some("SIGRTMIN+3"), Some("37")] {
            assert!(!is_sigterm(s), "{s:?}");
        }
    }
}
