//! The file systems under test: native /proc, LXCFS and sysvisor-fs, the last two each
//! started on a temporary mount point and stopped (and unmounted) on drop, also when the run
//! fails.

use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const MOUNT_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a FUSE file system is mounted exactly at `dir`.
fn is_fuse_mounted(dir: &Path) -> bool {
    mount_points(true).iter().any(|m| m == dir)
}

fn is_mounted(dir: &Path) -> bool {
    mount_points(false).iter().any(|m| m == dir)
}

fn mount_points(fuse_only: bool) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mp = pre.split(' ').nth(4)?;
            let fstype = post.split(' ').next()?;
            if fuse_only && !fstype.starts_with("fuse") {
                return None;
            }
            // Mount points with spaces are escaped as \040; ours have none.
            Some(PathBuf::from(mp))
        })
        .collect()
}

/// A FUSE server started by the harness on `<tmp>/mnt`.
pub struct Server {
    pub name: String,
    root: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Starts `program args.. <mnt>` (the mount point is appended by `args`' builder) and
    /// waits until `<mnt>/proc/meminfo` is there.
    pub fn start(
        name: &str,
        program: &Path,
        args: impl FnOnce(&Path, &Path) -> Vec<String>,
    ) -> Result<Server> {
        let root =
            std::env::temp_dir().join(format!("sysvisor-bench-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("mnt"))
            .with_context(|| format!("mkdir {}", root.display()))?;
        let mnt = root.join("mnt");
        let log = root.join("server.log");
        let logf = fs::File::create(&log)?;
        let mut srv = Server {
            name: name.to_string(),
            root: root.clone(),
            mnt: mnt.clone(),
            log,
            child: None,
        };
        let child = Command::new(program)
            .args(args(&root, &mnt))
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
        srv.child = Some(child);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        loop {
            if let Some(st) = srv.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{name} exited with {st} before mounting; log:\n{}", srv.log());
            }
            if is_fuse_mounted(&mnt) && mnt.join("proc/meminfo").exists() {
                return Ok(srv);
            }
            if Instant::now() > deadline {
                bail!("{name} did not mount within {MOUNT_TIMEOUT:?}; log:\n{}", srv.log());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn mnt(&self) -> &Path {
        &self.mnt
    }

    /// The control socket of a daemon started by [`start_sysvisor_fs_daemon`].
    pub fn socket(&self) -> PathBuf {
        self.root.join("fs.sock")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The FUSE transport sysvisor-fs says it serves with (`transport="uring" queues=2` in
    /// its start-up line), waiting a moment for the line; `None` for other servers.
    pub fn transport(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if let Some(t) = transport_in_log(&self.log()) {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    _ => {
                        eprintln!(
                            "sysvisor-bench: {} did not stop after SIGTERM; killing",
                            self.name
                        );
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        // The daemon's containers' mount too (`serve` mounts both).
        let own = sysvisor_proto::containers_mountpoint_for(&self.mnt);
        for dir in [&self.mnt, &own] {
            if is_mounted(dir) {
                let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if is_mounted(&self.mnt) || is_mounted(&own) {
            eprintln!("sysvisor-bench: cannot unmount {}", self.mnt.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Starts LXCFS (`lxcfs -f --enable-cfs -p <tmp>/lxcfs.pid <mnt>`).
pub fn start_lxcfs(bin: &Path) -> Result<Server> {
    Server::start("lxcfs", bin, |root, mnt| {
        vec![
            "-f".into(),
            "--enable-cfs".into(),
            "-p".into(),
            root.join("lxcfs.pid").display().to_string(),
            mnt.display().to_string(),
        ]
    })
}

/// The transport named by the last start-up line of a sysvisor-fs log
/// (`... mounted ... transport="uring" queues=2 ...`): `uring (2 queues)` or `epoll`.
pub fn transport_in_log(log: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(" transport="))?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_string())
    };
    let t = field("transport=")?;
    Some(match field("queues=").filter(|q| q != "0") {
        Some(q) => format!("{t} ({q} queues)"),
        None => t,
    })
}

/// The options a sysvisor-fs target adds to the server's command line, or `None` for a name
/// that is not a sysvisor-fs target. `sysvisor-fs` takes the server's defaults (transport
/// auto, the 100 ms view cache); the suffixes `-uring` and `-epoll` force a transport, so
/// that both can be compared in one run, and `-cold` turns the caches off
/// (`--cache-ttl-ms 0`: every open identifies the caller and renders the view afresh, as
/// LXCFS does on every open): `sysvisor-fs-cold`, `sysvisor-fs-epoll-cold`, ...
pub fn sysvisor_fs_args(target: &str) -> Option<Vec<String>> {
    let rest = target.strip_prefix("sysvisor-fs")?;
    let mut args = Vec::new();
    for part in rest.split('-').skip(1) {
        match part {
            "uring" | "epoll" => args.extend(["--transport".to_string(), part.to_string()]),
            "cold" => args.extend(["--cache-ttl-ms".to_string(), "0".to_string()]),
            _ => return None,
        }
    }
    (rest.is_empty() || rest.starts_with('-') && !args.is_empty()).then_some(args)
}

/// The target that reads a registered container's own files (the daemon's
/// `MOUNT-containers/<id>/`, served from the page cache), as system containers do.
pub const OWN_TARGET: &str = "sysvisor-fs-own";

/// Starts `sysvisor-fs mount <mnt>` as target `target`.
pub fn start_sysvisor_fs(bin: &Path, target: &str) -> Result<Server> {
    Server::start(target, bin, |_, mnt| {
        let mut args = vec!["mount".to_string(), mnt.display().to_string()];
        args.extend(sysvisor_fs_args(target).unwrap_or_default());
        args
    })
}

/// Starts the daemon, `sysvisor-fs serve`, as target `target` on a temporary mount point,
/// control socket ([`Server::socket`]) and state directory, and waits for its socket.
pub fn start_sysvisor_fs_daemon(bin: &Path, target: &str) -> Result<Server> {
    let srv = Server::start(target, bin, |root, mnt| {
        let mut args = vec![
            "serve".into(),
            "--mountpoint".into(),
            mnt.display().to_string(),
            "--socket".into(),
            root.join("fs.sock").display().to_string(),
            "--state-dir".into(),
            root.join("state").display().to_string(),
        ];
        args.extend(sysvisor_fs_args(target).unwrap_or_default());
        args
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.socket().exists() {
        if Instant::now() > deadline {
            bail!("no control socket at {}", srv.socket().display());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(srv)
}

/// Which file systems a scenario reads, and their binaries.
#[derive(clap::Args, Clone)]
pub struct TargetArgs {
    /// Targets, comma-separated: native, lxcfs, sysvisor-fs (its default transport and
    /// 100 ms view cache), sysvisor-fs-cold (no cache: renders on every open, like LXCFS),
    /// sysvisor-fs-uring, sysvisor-fs-epoll (FUSE over io_uring or /dev/fuse, forced; also
    /// with -cold), sysvisor-fs-own (the daemon, read through a registered container's own
    /// files).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "native,lxcfs,sysvisor-fs,sysvisor-fs-cold,sysvisor-fs-own"
    )]
    pub targets: Vec<String>,
    /// The sysvisor-fs binary (default: next to this binary, i.e. target/<profile>/).
    #[arg(long)]
    pub sysvisor_fs: Option<PathBuf>,
    /// The lxcfs binary.
    #[arg(long, default_value = "lxcfs")]
    pub lxcfs: String,
    /// Fail instead of skipping a target that cannot be started (e.g. lxcfs not installed).
    #[arg(long)]
    pub require_all: bool,
}

impl TargetArgs {
    pub fn sysvisor_fs_bin(&self) -> PathBuf {
        self.sysvisor_fs.clone().unwrap_or_else(|| crate::report::sibling_binary("sysvisor-fs"))
    }

    /// The versions of the servers, for the report.
    pub fn versions(&self) -> Vec<(&'static str, String)> {
        let lxcfs = match which(&self.lxcfs) {
            Some(b) => crate::report::binary_version(&b),
            None => "not installed".into(),
        };
        vec![
            ("sysvisor_fs", crate::report::binary_version(&self.sysvisor_fs_bin())),
            ("lxcfs", lxcfs),
        ]
    }
}

/// The targets of a run: (name, root under which `proc/FILE` is read), the servers behind
/// them (stopped and unmounted on drop) and the targets skipped, with why.
pub struct Servers {
    pub roots: Vec<(String, PathBuf)>,
    pub skipped: Vec<String>,
    servers: Vec<Server>,
}

impl Servers {
    /// Starts the FUSE servers of `a.targets`; sysvisor-fs as the daemon (`serve`, with a
    /// control socket) if `daemon`, else as `sysvisor-fs mount`. A target that cannot be
    /// started is skipped (and listed) unless `a.require_all`.
    pub fn start(a: &TargetArgs, daemon: bool) -> Result<Servers> {
        let mut s = Servers { roots: Vec::new(), skipped: Vec::new(), servers: Vec::new() };
        for t in &a.targets {
            let started = match t.as_str() {
                "native" => {
                    s.roots.push((t.clone(), PathBuf::from("/")));
                    continue;
                }
                "lxcfs" => match which(&a.lxcfs) {
                    Some(b) => start_lxcfs(&b),
                    None => Err(anyhow::anyhow!("{} not found (apt-get install lxcfs)", a.lxcfs)),
                },
                OWN_TARGET => match start_sysvisor_fs_daemon(&a.sysvisor_fs_bin(), t) {
                    // Read below `<id>/` of the containers' mount, once registered.
                    Ok(srv) => {
                        s.roots.push((
                            t.clone(),
                            sysvisor_proto::containers_mountpoint_for(srv.mnt()),
                        ));
                        s.servers.push(srv);
                        continue;
                    }
                    Err(e) => Err(e),
                },
                t if sysvisor_fs_args(t).is_some() && daemon => {
                    start_sysvisor_fs_daemon(&a.sysvisor_fs_bin(), t)
                }
                t if sysvisor_fs_args(t).is_some() => start_sysvisor_fs(&a.sysvisor_fs_bin(), t),
                other => bail!(
                    "unknown target {other:?} (native, lxcfs, sysvisor-fs, sysvisor-fs-cold, \
                     sysvisor-fs-uring, sysvisor-fs-epoll, sysvisor-fs-epoll-cold, ..., \
                     sysvisor-fs-own)"
                ),
            };
            match started {
                Ok(srv) => {
                    s.roots.push((t.clone(), srv.mnt().to_path_buf()));
                    s.servers.push(srv);
                }
                Err(e) if !a.require_all => {
                    eprintln!("sysvisor-bench: skipping {t}: {e:#}");
                    // Listed by scripts/test.sh; a target the machine should have (lxcfs is
                    // installed by install-deps.sh) fails CI there.
                    let test = format!("{}::{t}", sysvisor_skip::test_name());
                    sysvisor_skip::record(&test, sysvisor_skip::Kind::Required, &format!("{e:#}"));
                    s.skipped.push(format!("{t}: {e:#}"));
                }
                Err(e) => return Err(e.context(format!("starting {t}"))),
            }
        }
        Ok(s)
    }

    /// The transport each sysvisor-fs target serves with, for the report:
    /// (`<target> transport`, what its log says).
    pub fn transports(&self) -> Vec<(String, String)> {
        self.servers
            .iter()
            .filter(|s| s.name.starts_with("sysvisor-fs"))
            .map(|s| {
                (format!("{} transport", s.name), s.transport().unwrap_or_else(|| "unknown".into()))
            })
            .collect()
    }

    /// The sysvisor-fs servers started (one per sysvisor-fs target).
    pub fn sysvisor_fs(&self) -> impl Iterator<Item = &Server> {
        self.servers.iter().filter(|s| s.name.starts_with("sysvisor-fs"))
    }

    /// The pids of every server started.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().filter_map(Server::pid).collect()
    }

    /// The server behind target `name`, if it is one the harness started.
    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }
}

/// `program`'s path: itself if it has a slash, else looked up in PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    #[test]
    fn transport_from_the_last_start_up_line() {
        let log = "2026 INFO mounted mountpoint=/a threads=2 transport=\"epoll\" queues=0 fstype=x\n\
                   2026 INFO mounted mountpoint=/a threads=2 transport=\"uring\" queues=2 fstype=x\n\
                   2026 INFO shutting down signal=SIGTERM\n";
        assert_eq!(super::transport_in_log(log).as_deref(), Some("uring (2 queues)"));
        assert_eq!(super::transport_in_log(&log[..70]).as_deref(), Some("epoll"));
        assert_eq!(super::transport_in_log("nothing\n"), None);
    }

    #[test]
    fn sysvisor_fs_targets_name_their_options() {
        let args = |t: &str| super::sysvisor_fs_args(t).map(|a| a.join(" "));
        assert_eq!(args("sysvisor-fs").as_deref(), Some(""));
        assert_eq!(args("sysvisor-fs-cold").as_deref(), Some("--cache-ttl-ms 0"));
        assert_eq!(
            args("sysvisor-fs-epoll-cold").as_deref(),
            Some("--transport epoll --cache-ttl-ms 0")
        );
        assert_eq!(args("sysvisor-fs-uring").as_deref(), Some("--transport uring"));
        for bad in ["sysvisor-fs-", "sysvisor-fsx", "sysvisor-fs-warm", "lxcfs", "native"] {
            assert_eq!(args(bad), None, "{bad}");
        }
    }
}
