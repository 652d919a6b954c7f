//! The end-to-end harness of Sysvisor: a real Docker engine with `sysvisor-runc` configured,
//! a busybox image, the `sysvisor-fs` daemon, container guards and leak checks.
//!
//! # How the engine is managed
//!
//! [`Engine::get`] sets everything up once per test binary (the first test that calls it
//! pays; the others wait for it):
//!
//! 1. Skips (recorded through the `sysvisor-skip` crate, returns `None`) unless running as
//!    root, or when `SYSVISOR_E2E=skip`.
//! 2. Takes an exclusive `flock` on `/run/sysvisor-e2e/lock` for the life of the process, so
//!    two test processes never share or fight over the private engine (the second waits).
//! 3. Installs `docker.io`, `busybox-static` and `iproute2` with apt-get when missing.
//! 4. Cleans up what a killed earlier run left (its dockerd, its containers through
//!    `sysvisor-runc delete --force`, mounts under its directories).
//! 5. Starts a **private** dockerd: config `/run/sysvisor-e2e/daemon.json`, data root
//!    `/var/lib/sysvisor-e2e/docker`, exec root `/run/sysvisor-e2e/exec`, pid file
//!    `/run/sysvisor-e2e/docker.pid`, socket `/run/sysvisor-e2e/docker.sock`, its own
//!    containerd (under the exec root), its own bridge `sve2e0` (172.30.254.1/24), and no
//!    iptables, ip-forward or masquerading changes: it never touches a user's Docker (nor
//!    docker0 nor the host firewall). The runtime `sysvisor-runc` points at the workspace's
//!    `target/<profile>/sysvisor-runc` (the binary next to the test's own `deps/` directory,
//!    or next to the executable itself when it is not in `deps/`, as for the benchmark
//!    harness `target/<profile>/sysvisor-bench`; override with `SYSVISOR_E2E_RUNC`). A
//!    private engine is always started, also when the host runs its own Docker.
//! 6. Starts its **own** `sysvisor-fs` daemon, `target/<profile>/sysvisor-fs serve`
//!    (override with `SYSVISOR_E2E_FS`), on its own socket [`FS_SOCKET`] (mount trap socket
//!    beside it), mount point [`FS_MOUNTPOINT`] and state directory [`FS_STATE`] (emptied at
//!    start and at exit). A daemon on the default socket (a user's, or another install) is
//!    never used nor touched: every runtime of the private engine gets `--fs-socket` and
//!    `--fs-mountpoint` as `runtimeArgs` in its daemon.json, so sysvisor-runc talks to the
//!    harness's daemon only.
//!
//! 7. Adds the runtime's uid/gid pool (`sysvisor:BASE:67108864` in /etc/subuid and
//!    /etc/subgid, as scripts/install.sh does) when missing, and records that it did in
//!    `/run/sysvisor-e2e/subids.added`.
//!
//! Both daemons run in their own session. dockerd is spawned from a dedicated thread that
//! lives as long as the process, with `PR_SET_PDEATHSIG(SIGTERM)`: if the test process dies
//! (panic abort, Ctrl-C, SIGKILL), dockerd shuts down cleanly and deletes its containers
//! through the runtime. The sysvisor-fs daemon has no death signal, so that it is still
//! there for those deletes; its pid file (`/run/sysvisor-e2e/sysvisor-fs.pid`) lets the next
//! run stop it. On a normal exit of the test binary (tests passed or not), an `atexit`
//! handler removes every container still there, runs one throwaway system container (the
//! runtime frees the ranges of removed containers at its next `create`), stops dockerd
//! (SIGTERM, then SIGKILL after 40 s) and any shim left, stops its sysvisor-fs daemon and
//! unmounts its views, deletes the bridge, removes the subuid/subgid lines it added, unmounts what is
//! left under its directories and removes the data root, exec root and scratch
//! directories. Logs stay in `/run/sysvisor-e2e/*.log`.
//!
//! [`second::SecondEngine`] starts a second private dockerd beside it (for
//! `"userns-remap": "default"`), with everything named after it: `/run/sysvisor-e2e/NAME/`,
//! `/var/lib/sysvisor-e2e/NAME`, bridge `sve2e-NAME`; dropping it stops it and removes its
//! files and the `dockremap` user and subordinate ids that dockerd added.
//!
//! Tests run in parallel; a test that disturbs everyone (stopping the sysvisor-fs daemon) or
//! must not be disturbed (nothing else may reclaim a range while it checks that `docker rm`
//! freed it) takes [`Engine::exclusive`] instead of [`Engine::get`].

pub mod cmd;
mod engine;
pub mod fairness;
pub mod images;
pub mod leaks;
pub mod second;

pub use cmd::Output;
pub use engine::{runtime_args, Container, Engine, Guard, PlainFsDaemonAfter};
pub use images::SYSTEMD_DOCKER_IMAGE;
pub use leaks::{parse_uid_map, IdMap};

/// Everything the harness owns at run time lives under here.
pub const RUN_DIR: &str = "/run/sysvisor-e2e";
/// The private engine's socket.
pub const DOCKER_SOCK: &str = "/run/sysvisor-e2e/docker.sock";
/// The private engine's data root (images, container layers): removed at the end.
pub const DATA_ROOT: &str = "/var/lib/sysvisor-e2e/docker";
/// The private engine's exec root (containerd state, runc state, network namespaces).
pub const EXEC_ROOT: &str = "/run/sysvisor-e2e/exec";
/// The image built by [`Engine::image`].
pub const IMAGE: &str = "sysvisor-e2e/busybox";
/// The runtime name under test.
pub const RUNTIME: &str = "sysvisor-runc";
/// Every container started through the harness carries this label.
pub const LABEL: &str = "sysvisor-e2e";
/// The harness's sysvisor-fs daemon: control socket (its mount trap socket,
/// `seccomp.sock`, is beside it).
pub const FS_SOCKET: &str = "/run/sysvisor-e2e/fs-sock/fs.sock";
/// Where the harness's sysvisor-fs daemon serves its views.
pub const FS_MOUNTPOINT: &str = "/run/sysvisor-e2e/fs-views";
/// The harness's sysvisor-fs daemon's state directory (registrations, emulated sysctls).
pub const FS_STATE: &str = "/run/sysvisor-e2e/fs-state";
/// The runtime's own directories, searched by the leak check.
pub const SYSVISOR_RUN: &str = "/run/sysvisor";
pub const SYSVISOR_LIB: &str = "/var/lib/sysvisor";
/// Where the runtime prepares the id-shifted rootfs of each container.
pub const SYSVISOR_ROOTFS: &str = "/run/sysvisor/rootfs";
/// The size of each container's uid/gid range.
pub const RANGE: u32 = 65536;
/// Scratch directories of the tests (bundles, volumes, pools): emptied at start and at exit.
pub const SCRATCH: &str = "/run/sysvisor-e2e/scratch";

/// A fresh (empty) scratch directory `SCRATCH/NAME-PID`; remove it when done (it also goes
/// at the end of the run, and at the start of the next one after a crash).
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(SCRATCH).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    dir
}

/// Builds the static test tool `tests/tools/NAME.c` (attacks and measurements that busybox
/// cannot make) into a scratch directory of its own, to be mounted into containers. Built
/// once per process: tests running at once share the directory (the harness removes it at
/// the end of the run). `None`, after recording a required skip (gcc and a static libc
/// come with scripts/install-deps.sh), when it cannot be built.
pub fn static_tool(name: &str) -> Option<std::path::PathBuf> {
    static BUILT: std::sync::Mutex<Vec<(String, std::path::PathBuf)>> =
        std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, dir)) = built.iter().find(|(n, _)| n == name) {
        return Some(dir.clone());
    }
    let dir = scratch_dir(&format!("tool-{name}"));
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tools/{name}.c"));
    let out = cmd::run(
        std::process::Command::new("gcc")
            .args(["-static", "-O2", "-o"])
            .arg(dir.join(name))
            .arg(source),
        None,
        std::time::Duration::from_secs(120),
    );
    if !out.success() {
        sysvisor_skip::required(&format!("cannot build the static tool {name}: {out}"));
        return None;
    }
    built.push((name.to_string(), dir.clone()));
    Some(dir)
}
