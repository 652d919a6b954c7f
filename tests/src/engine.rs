//! The private Docker engine, the sysvisor-fs daemon, the image and container guards. See
//! the crate documentation for the life cycle.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{self, Output};
use crate::leaks::{self, IdMap};
use crate::{
    DATA_ROOT, DOCKER_SOCK, EXEC_ROOT, FS_MOUNTPOINT, FS_SOCKET, FS_STATE, IMAGE, LABEL, RUNTIME,
    RUN_DIR, SCRATCH,
};

/// How long one docker command may take.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
const BRIDGE: &str = "sve2e0";
const BRIDGE_ADDR: &str = "172.30.254.1/24";

/// The engine, shared by every test of the process.
pub struct Engine {
    docker_bin: PathBuf,
    /// The `sysvisor-runc` binary the engine runs.
    pub runtime_bin: PathBuf,
    /// The `sysvisor-fs` binary the harness's own daemon runs.
    pub fs_bin: PathBuf,
    /// The runtimes configured in the private daemon.json: name -> (path, runtimeArgs).
    runtimes: Mutex<BTreeMap<String, (PathBuf, Vec<String>)>>,
    image: OnceLock<Result<String, String>>,
    /// The bookworm image with systemd and Docker ([`crate::images`]).
    pub(crate) systemd_docker_image: OnceLock<Result<String, String>>,
    tests: RwLock<()>,
}

/// A test's handle on the engine: derefs to [`Engine`]; holds a shared (or, from
/// [`Engine::exclusive`], an exclusive) lock so disruptive tests run alone.
pub struct Guard {
    engine: &'static Engine,
    _shared: Option<RwLockReadGuard<'static, ()>>,
    _exclusive: Option<RwLockWriteGuard<'static, ()>>,
}

impl Deref for Guard {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.engine
    }
}

/// Restarts the harness's plain sysvisor-fs daemon when dropped (see
/// [`Engine::fs_daemon_with`]).
pub struct PlainFsDaemonAfter<'e>(&'e Engine);

impl Drop for PlainFsDaemonAfter<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop_fs_daemon();
        if let Err(err) = self.0.start_fs_daemon() {
            eprintln!("cannot restart the plain sysvisor-fs daemon: {err}");
        }
    }
}

/// The daemons this process started (and so must stop).
struct Managed {
    dockerd: Option<Child>,
    fsd: Option<Child>,
    bridge: bool,
    /// Lines the harness added to /etc/subuid or /etc/subgid: (file, line).
    subids: Vec<(PathBuf, String)>,
}

static MANAGED: Mutex<Managed> =
    Mutex::new(Managed { dockerd: None, fsd: None, bridge: false, subids: Vec::new() });
static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
static LOCK_FILE: OnceLock<File> = OnceLock::new();
static NAMES: AtomicUsize = AtomicUsize::new(0);

impl Engine {
    /// The engine, set up on first use; `None` (after recording the skip) when the suite is
    /// skipped. Panics if it cannot be set up.
    pub fn get() -> Option<Guard> {
        let engine = Self::instance()?;
        let shared = engine.tests.read().unwrap_or_else(|e| e.into_inner());
        Some(Guard { engine, _shared: Some(shared), _exclusive: None })
    }

    /// As [`Engine::get`], but no other test runs while the guard lives.
    pub fn exclusive() -> Option<Guard> {
        let engine = Self::instance()?;
        let exclusive = engine.tests.write().unwrap_or_else(|e| e.into_inner());
        Some(Guard { engine, _shared: None, _exclusive: Some(exclusive) })
    }

    fn instance() -> Option<&'static Engine> {
        if !may_run() {
            return None;
        }
        match ENGINE.get_or_init(Engine::set_up) {
            Ok(engine) => Some(engine),
            Err(e) => panic!("cannot set up the e2e engine: {e}"),
        }
    }

    fn set_up() -> Result<Engine, String> {
        let t0 = Instant::now();
        fs::create_dir_all(RUN_DIR).map_err(|e| format!("mkdir {RUN_DIR}: {e}"))?;
        take_process_lock()?;
        ensure_packages()?;
        let (runtime_bin, fs_bin) = binaries()?;
        let docker_bin = if Path::new("/usr/bin/docker").exists() {
            PathBuf::from("/usr/bin/docker")
        } else {
            PathBuf::from("docker")
        };
        let mut runtimes = BTreeMap::new();
        let args = runtime_args().map(String::from).to_vec();
        runtimes.insert(RUNTIME.to_string(), (runtime_bin.clone(), args));
        let engine = Engine {
            docker_bin,
            runtime_bin,
            fs_bin,
            runtimes: Mutex::new(runtimes),
            image: OnceLock::new(),
            systemd_docker_image: OnceLock::new(),
            tests: RwLock::new(()),
        };
        // From here on anything we start is undone at exit.
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(teardown_at_exit) };
        clean_leftovers(&engine.runtime_bin);
        ensure_subids()?;
        engine.start_dockerd()?;
        engine.start_fs_daemon()?;
        eprintln!("sysvisor-e2e: engine ready in {:.1}s", t0.elapsed().as_secs_f64());
        Ok(engine)
    }

    fn write_config(&self) -> Result<(), String> {
        let runtimes: serde_json::Map<String, serde_json::Value> = self
            .runtimes
            .lock()
            .unwrap()
            .iter()
            .map(|(name, (path, args))| {
                (name.clone(), serde_json::json!({ "path": path, "runtimeArgs": args }))
            })
            .collect();
        let config = serde_json::json!({
            "data-root": DATA_ROOT,
            "exec-root": EXEC_ROOT,
            "pidfile": pidfile(),
            "hosts": [format!("unix://{DOCKER_SOCK}")],
            "bridge": BRIDGE,
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "runtimes": runtimes,
        });
        let path = config_path();
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&config).unwrap())
            .and_then(|_| fs::rename(&tmp, &path))
            .map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn start_dockerd(&self) -> Result<(), String> {
        ensure_bridge()?;
        self.write_config()?;
        let log = log_file("dockerd.log")?;
        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file").arg(config_path());
        let child =
            spawn_daemon(cmd, log, true).map_err(|e| format!("cannot start dockerd: {e}"))?;
        MANAGED.lock().unwrap().dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.docker_timeout(
                &["version", "--format", "{{.Server.Version}}"],
                Duration::from_secs(10),
            );
            if out.success() {
                return Ok(());
            }
            let exited =
                MANAGED.lock().unwrap().dockerd.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!(
                    "dockerd exited ({status}) before it was ready:\n{}",
                    log_tail("dockerd.log", 30)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "dockerd not ready after 60s: {out}\n{}",
                    log_tail("dockerd.log", 30)
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts the harness's own sysvisor-fs daemon ([`FS_SOCKET`], [`FS_MOUNTPOINT`],
    /// [`FS_STATE`]) and waits until it answers.
    pub fn start_fs_daemon(&self) -> Result<(), String> {
        self.start_fs_daemon_with(&[], &[])
    }

    /// As [`Engine::start_fs_daemon`], with extra arguments to `serve` and environment
    /// variables (tests of the daemon's options; restart it plainly afterwards).
    pub fn start_fs_daemon_with(&self, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
        if !self.fs_bin.exists() {
            return Err(format!("{} not built", self.fs_bin.display()));
        }
        let log = log_file("sysvisor-fs.log")?;
        let mut cmd = Command::new(&self.fs_bin);
        cmd.args(["serve", "--socket", FS_SOCKET, "--mountpoint", FS_MOUNTPOINT])
            .args(["--state-dir", FS_STATE])
            .args(args)
            .envs(env.iter().copied());
        // No PDEATHSIG: if this process is killed, the daemon must outlive dockerd's own
        // shutdown (which deletes the containers through the runtime, which unregisters
        // them). Its pid file lets the next run stop it.
        let mut child =
            spawn_daemon(cmd, log, false).map_err(|e| format!("cannot start sysvisor-fs: {e}"))?;
        let _ = fs::write(fs_pidfile(), child.id().to_string());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !fs_ping() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "`sysvisor-fs serve` exited ({status}):\n{}",
                    log_tail("sysvisor-fs.log", 20)
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`sysvisor-fs serve` not answering after 20s:\n{}",
                    log_tail("sysvisor-fs.log", 20)
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
        MANAGED.lock().unwrap().fsd = Some(child);
        Ok(())
    }

    /// Restarts the harness's sysvisor-fs daemon with extra `serve` arguments and
    /// environment; the plain daemon comes back when the returned guard drops, however the
    /// test ends. `None` (after recording a required skip) when the harness's daemon is not
    /// running.
    pub fn fs_daemon_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<PlainFsDaemonAfter<'_>> {
        if let Err(e) = self.stop_fs_daemon() {
            sysvisor_skip::required(&e);
            return None;
        }
        let guard = PlainFsDaemonAfter(self);
        self.start_fs_daemon_with(args, env).expect("start the sysvisor-fs daemon");
        Some(guard)
    }

    /// Stops the harness's sysvisor-fs daemon (SIGTERM, wait). Errors if it is not running.
    pub fn stop_fs_daemon(&self) -> Result<(), String> {
        let child = MANAGED.lock().unwrap().fsd.take();
        match child {
            Some(child) => {
                stop_child(child, "sysvisor-fs", Duration::from_secs(15));
                let _ = fs::remove_file(fs_pidfile());
                Ok(())
            }
            None => Err("the harness's sysvisor-fs daemon is not running".into()),
        }
    }

    /// Adds a runtime to the private engine (reloaded with SIGHUP): a wrapper script that
    /// runs the runtime under test with extra environment variables and global arguments,
    /// pointed at the harness's sysvisor-fs daemon unless these name another
    /// (`SYSVISOR_FS_SOCKET` or `--fs-socket`, `SYSVISOR_FS_MOUNTPOINT` or
    /// `--fs-mountpoint`).
    /// Returns the runtime's name for `--runtime`.
    pub fn add_runtime(
        &self,
        name: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<String, String> {
        let dir = Path::new(RUN_DIR).join("runtimes");
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join(name);
        let mut script = String::from("#!/bin/sh\n");
        for (k, v) in env {
            script.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
        script.push_str(&format!("exec {}", shell_quote(&self.runtime_bin.to_string_lossy())));
        let names =
            |flag: &str, var: &str| args.contains(&flag) || env.iter().any(|(k, _)| *k == var);
        let mut all: Vec<&str> = Vec::new();
        if !names("--fs-socket", "SYSVISOR_FS_SOCKET") {
            all.extend(["--fs-socket", FS_SOCKET]);
        }
        if !names("--fs-mountpoint", "SYSVISOR_FS_MOUNTPOINT") {
            all.extend(["--fs-mountpoint", FS_MOUNTPOINT]);
        }
        all.extend_from_slice(args);
        for a in all {
            script.push(' ');
            script.push_str(&shell_quote(a));
        }
        script.push_str(" \"$@\"\n");
        fs::write(&path, script).map_err(|e| e.to_string())?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        self.add_runtime_binary(name, &path)
    }

    /// Adds a runtime to the private engine (reloaded with SIGHUP) that runs the binary
    /// `path` as it is (an installed sysvisor-runc, say). Returns the runtime's name.
    pub fn add_runtime_binary(&self, name: &str, path: &Path) -> Result<String, String> {
        self.runtimes.lock().unwrap().insert(name.to_string(), (path.to_path_buf(), Vec::new()));
        self.write_config()?;
        let pid = MANAGED.lock().unwrap().dockerd.as_ref().map(|c| c.id());
        let pid = pid.ok_or("dockerd not running")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.docker(&["info", "--format", "{{json .Runtimes}}"]);
            if out.success() && out.stdout.contains(&format!("\"{name}\"")) {
                return Ok(name.to_string());
            }
            if Instant::now() > deadline {
                return Err(format!("runtime {name} not picked up by dockerd: {out}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `docker -H unix:///run/sysvisor-e2e/docker.sock ARGS`, with a time limit.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_timeout(args, DOCKER_TIMEOUT)
    }

    pub fn docker_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        cmd::run(&mut self.docker_cmd(args), None, timeout)
    }

    /// The docker CLI command, for callers that need more control (stdin, a pty).
    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.docker_bin);
        cmd.arg("-H").arg(format!("unix://{DOCKER_SOCK}")).args(args);
        cmd.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", Path::new(RUN_DIR).join("cli"));
        cmd
    }

    /// The shell command line of the docker CLI (for `script -c`).
    pub fn docker_cmdline(&self) -> String {
        format!("{} -H unix://{DOCKER_SOCK}", self.docker_bin.display())
    }

    /// The busybox image, built once per process with `docker import`.
    pub fn image(&self) -> &str {
        match self.image.get_or_init(|| self.build_image()) {
            Ok(image) => image,
            Err(e) => panic!("cannot build the image: {e}"),
        }
    }

    fn build_image(&self) -> Result<String, String> {
        let root = Path::new(RUN_DIR).join("rootfs");
        let _ = fs::remove_dir_all(&root);
        for dir in [
            "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "tmp",
            "var/tmp",
        ] {
            fs::create_dir_all(root.join(dir)).map_err(|e| e.to_string())?;
        }
        let busybox = Path::new("/bin/busybox");
        if !leaks::is_static_elf(busybox) {
            return Err("/bin/busybox is not statically linked (install busybox-static)".into());
        }
        fs::copy(busybox, root.join("bin/busybox")).map_err(|e| format!("copy busybox: {e}"))?;
        // `busybox --install -s`, done from outside: one symlink per applet at its usual path.
        let list =
            cmd::run(Command::new(busybox).arg("--list-full"), None, Duration::from_secs(10));
        if !list.success() {
            return Err(format!("busybox --list-full: {list}"));
        }
        for applet in list.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let link = root.join(applet);
            if link.exists() || link.symlink_metadata().is_ok() {
                continue;
            }
            std::os::unix::fs::symlink("/bin/busybox", &link)
                .map_err(|e| format!("symlink {applet}: {e}"))?;
        }
        if root.join("bin/sh").symlink_metadata().is_err() {
            std::os::unix::fs::symlink("/bin/busybox", root.join("bin/sh"))
                .map_err(|e| e.to_string())?;
        }
        fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        )
        .map_err(|e| e.to_string())?;
        fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
            .map_err(|e| e.to_string())?;
        for tmp in ["tmp", "var/tmp"] {
            fs::set_permissions(root.join(tmp), fs::Permissions::from_mode(0o1777))
                .map_err(|e| e.to_string())?;
        }
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf", "-", "."])
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("tar: {e}"))?;
        if !tar.status.success() {
            return Err(format!("tar: {}", String::from_utf8_lossy(&tar.stderr)));
        }
        let out = cmd::run(
            &mut self.docker_cmd(&["import", "--change", "CMD [\"/bin/sh\"]", "-", IMAGE]),
            Some(&tar.stdout),
            DOCKER_TIMEOUT,
        );
        let _ = fs::remove_dir_all(&root);
        if !out.success() {
            return Err(format!("docker import: {out}"));
        }
        Ok(IMAGE.to_string())
    }

    /// `docker run -d --pull never --label sysvisor-e2e=1 --name NAME OPTIONS IMAGE COMMAND`:
    /// the container's guard (it is removed on drop, also when `run` failed and left it in
    /// the Created state) and the output of `docker run`.
    pub fn run_detached(&self, options: &[&str], command: &[&str]) -> (Container<'_>, Output) {
        let image = self.image().to_string();
        self.run_image_detached(&image, options, command)
    }

    /// As [`Engine::run_detached`], of `image` (an empty `command` runs the image's own).
    pub fn run_image_detached(
        &self,
        image: &str,
        options: &[&str],
        command: &[&str],
    ) -> (Container<'_>, Output) {
        let name = unique_name();
        let label = format!("{LABEL}=1");
        let mut args = vec!["run", "-d", "--pull", "never", "--label", &label, "--name", &name];
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(command);
        let out = self.docker(&args);
        let container = Container::new(self, name);
        if out.success() {
            let _ = container.id.set(out.out());
        }
        (container, out)
    }

    /// As [`Engine::run_detached`], panicking (with docker's output) if `docker run` failed.
    #[track_caller]
    pub fn start(&self, options: &[&str], command: &[&str]) -> Container<'_> {
        let (container, out) = self.run_detached(options, command);
        assert!(out.success(), "docker run failed: {out}\n{}", self.diagnostics());
        container
    }

    /// A sysvisor container (`--runtime=sysvisor-runc` + options) running `sleep 3600`.
    #[track_caller]
    pub fn start_system(&self, options: &[&str]) -> Container<'_> {
        let mut opts = vec!["--runtime", RUNTIME];
        opts.extend_from_slice(options);
        self.start(&opts, &["sleep", "3600"])
    }

    /// `docker run --rm` in the foreground: the output (the container is removed by docker;
    /// the guard catches what `--rm` misses on failure).
    pub fn run_fg(&self, options: &[&str], command: &[&str]) -> Output {
        let image = self.image().to_string();
        let name = unique_name();
        let label = format!("{LABEL}=1");
        let mut args = vec!["run", "--rm", "--pull", "never", "--label", &label, "--name", &name];
        args.extend_from_slice(options);
        args.push(&image);
        args.extend_from_slice(command);
        let out = self.docker(&args);
        drop(Container::new(self, name));
        out
    }

    /// The ids of all containers of the engine (running or not).
    pub fn containers(&self) -> Vec<String> {
        self.docker(&["ps", "-aq", "--no-trunc"])
            .stdout
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Checks that nothing of container `id` is left (see [`leaks::leftovers`]): polls for a
    /// few seconds, then panics with the list. What the runtime frees lazily (the range's
    /// allocation and the container's upper layer, see [`leaks::is_pending_reclaim`]) may
    /// remain until the next `create` reclaims it: one throwaway system container is run to
    /// trigger that, and then it must be gone too. [`Engine::assert_no_leaks_strict`] allows
    /// no such delay.
    #[track_caller]
    pub fn assert_no_leaks(&self, id: &str, range: Option<IdMap>) {
        self.check_leaks(id, range, Some(RUNTIME))
    }

    /// As [`Engine::assert_no_leaks`], triggering the reclaim with another runtime (one with
    /// its own pool, see [`Engine::add_runtime`]).
    #[track_caller]
    pub fn assert_no_leaks_with(&self, id: &str, range: Option<IdMap>, runtime: &str) {
        self.check_leaks(id, range, Some(runtime))
    }

    /// As [`Engine::assert_no_leaks`], with nothing left for a later reclaim: the range is
    /// free and every file gone as soon as the container is.
    #[track_caller]
    pub fn assert_no_leaks_strict(&self, id: &str, range: Option<IdMap>) {
        self.check_leaks(id, range, None)
    }

    #[track_caller]
    fn check_leaks(&self, id: &str, range: Option<IdMap>, reclaim_with: Option<&str>) {
        let strict = reclaim_with.is_none();
        // Long enough for a periodic sweep (sysvisor-fs housekeeping runs every 10 s).
        let mut deadline = Instant::now() + Duration::from_secs(if strict { 15 } else { 10 });
        let mut triggered = strict;
        loop {
            let found = leaks::leftovers(self, id, range);
            if found.is_empty() {
                return;
            }
            if !triggered && found.iter().all(|l| leaks::is_pending_reclaim(l)) {
                triggered = true;
                let out = self.run_fg(&["--runtime", reclaim_with.unwrap_or(RUNTIME)], &["true"]);
                if !out.success() {
                    eprintln!("sysvisor-e2e: warning: the container run to trigger a reclaim failed: {out}");
                }
                deadline = Instant::now() + Duration::from_secs(5);
                continue;
            }
            if Instant::now() > deadline {
                let note = if triggered && !strict {
                    "\n(checked after a throwaway `docker run --runtime=sysvisor-runc`, which reclaims ranges of removed containers)"
                } else {
                    ""
                };
                panic!(
                    "container {id} left behind:\n  {}{note}\n{}",
                    found.join("\n  "),
                    self.diagnostics()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The tails of the daemons' logs, for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- dockerd.log (tail) ---\n{}\n--- sysvisor-fs.log (tail) ---\n{}",
            log_tail("dockerd.log", 15),
            log_tail("sysvisor-fs.log", 10)
        )
    }
}

/// A container of the engine, removed (`docker rm -f`) when dropped.
pub struct Container<'e> {
    engine: &'e Engine,
    /// The name given at `docker run`.
    pub name: String,
    id: OnceLock<String>,
    removed: bool,
}

impl<'e> Container<'e> {
    fn new(engine: &'e Engine, name: String) -> Container<'e> {
        Container { engine, name, id: OnceLock::new(), removed: false }
    }

    /// The full container id (looked up by name when `docker run` did not print it).
    pub fn id(&self) -> String {
        self.id.get_or_init(|| self.inspect("{{.Id}}").unwrap_or_default()).clone()
    }

    /// `docker inspect -f FORMAT`, trimmed; `None` if inspect fails.
    pub fn inspect(&self, format: &str) -> Option<String> {
        let out = self.engine.docker(&["inspect", "-f", format, &self.name]);
        out.success().then(|| out.out())
    }

    /// The host pid of the container's init (`None` unless it runs).
    pub fn pid(&self) -> Option<u32> {
        self.inspect("{{.State.Pid}}").and_then(|p| p.parse().ok()).filter(|&p| p != 0)
    }

    /// `.State.Status`: created, running, paused, exited, ...
    pub fn status(&self) -> String {
        self.inspect("{{.State.Status}}").unwrap_or_else(|| "gone".into())
    }

    /// The uid map of the container's init as the host sees it (`/proc/PID/uid_map`).
    pub fn uid_map(&self) -> Option<IdMap> {
        let pid = self.pid()?;
        let text = fs::read_to_string(format!("/proc/{pid}/uid_map")).ok()?;
        leaks::parse_uid_map(&text)
    }

    /// `docker exec NAME ARGS`.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(args);
        self.engine.docker(&all)
    }

    /// `docker exec NAME sh -c SCRIPT`.
    pub fn sh(&self, script: &str) -> Output {
        self.exec(&["sh", "-c", script])
    }

    /// `docker ACTION NAME` (stop, start, restart, pause, unpause, logs, ...).
    pub fn docker(&self, action: &str) -> Output {
        self.engine.docker(&[action, &self.name])
    }

    /// `docker rm -f`, now; the output.
    pub fn remove(mut self) -> Output {
        self.removed = true;
        self.engine.docker(&["rm", "-f", &self.name])
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if !self.removed {
            let out = self.engine.docker(&["rm", "-f", &self.name]);
            if !out.success() && !out.stderr.contains("No such container") {
                eprintln!("sysvisor-e2e: warning: cannot remove {}: {out}", self.name);
            }
        }
    }
}

fn unique_name() -> String {
    format!("e2e-{}-{}", std::process::id(), NAMES.fetch_add(1, Ordering::Relaxed))
}

/// Whether the e2e tests may run here; if not, the calling test's skip is recorded:
/// `SYSVISOR_E2E=skip` turns them off on purpose (an optional skip), not being root is a
/// required one (see the `sysvisor-skip` crate).
fn may_run() -> bool {
    if std::env::var("SYSVISOR_E2E").is_ok_and(|v| v == "skip" || v == "0") {
        sysvisor_skip::optional("SYSVISOR_E2E=skip");
        return false;
    }
    sysvisor_skip::unless_root()
}

/// sysvisor-runc's global flags that point it at the harness's own sysvisor-fs daemon:
/// every runtime of the private engine gets them (`runtimeArgs`), and so does every direct
/// call of the runtime.
pub fn runtime_args() -> [&'static str; 4] {
    ["--fs-socket", FS_SOCKET, "--fs-mountpoint", FS_MOUNTPOINT]
}

fn pidfile() -> PathBuf {
    Path::new(RUN_DIR).join("docker.pid")
}

fn fs_pidfile() -> PathBuf {
    Path::new(RUN_DIR).join("sysvisor-fs.pid")
}

/// Lines added to /etc/subuid and /etc/subgid by a run ("FILE\tLINE"), so that a run that
/// was killed has them removed by the next one.
fn subids_marker() -> PathBuf {
    Path::new(RUN_DIR).join("subids.added")
}

fn config_path() -> PathBuf {
    Path::new(RUN_DIR).join("daemon.json")
}

fn log_file(name: &str) -> Result<File, String> {
    let path = Path::new(RUN_DIR).join(name);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The last `lines` lines of a log in RUN_DIR.
pub fn log_tail(name: &str, lines: usize) -> String {
    let bytes = fs::read(Path::new(RUN_DIR).join(name)).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One flock for the life of the process: a second test process waits for the first.
fn take_process_lock() -> Result<(), String> {
    let path = Path::new(RUN_DIR).join("lock");
    let file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| e.to_string())?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!("sysvisor-e2e: another e2e run holds {}; waiting", path.display());
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(format!("flock {}: {}", path.display(), io::Error::last_os_error()));
        }
    }
    let _ = LOCK_FILE.set(file);
    Ok(())
}

/// apt-get installs what the suite needs and is missing.
fn ensure_packages() -> Result<(), String> {
    let mut missing = Vec::new();
    if which("dockerd").is_none() || which("containerd").is_none() || which("runc").is_none() {
        missing.push("docker.io");
    }
    if !leaks::is_static_elf(Path::new("/bin/busybox")) {
        missing.push("busybox-static");
    }
    if which("ip").is_none() {
        missing.push("iproute2");
    }
    if which("script").is_none() {
        missing.push("bsdutils");
    }
    // Static test tools (tests/tools/*.c) for attacks busybox cannot make.
    if which("gcc").is_none() || !Path::new("/usr/lib/x86_64-linux-gnu/libc.a").exists() {
        missing.extend(["gcc", "libc6-dev"]);
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("sysvisor-e2e: installing {}", missing.join(" "));
    let update =
        cmd::sh("DEBIAN_FRONTEND=noninteractive apt-get update -qq", Duration::from_secs(300));
    if !update.success() {
        return Err(format!("apt-get update: {update}"));
    }
    let install = cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
        None,
        Duration::from_secs(600),
    );
    if !install.success() {
        return Err(format!("apt-get install: {install}"));
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(tool)).find(|p| p.is_file())
}

/// The binaries under test: `target/<profile>/{sysvisor-runc,sysvisor-fs}`, i.e. next to
/// the test executable's `deps/` directory, or next to the executable itself when it is not
/// in `deps/` (the benchmark harness `target/<profile>/sysvisor-bench`), unless overridden
/// by the environment.
fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe_dir = exe.parent().ok_or("test executable has no directory")?;
    let profile_dir = if exe_dir.file_name().is_some_and(|n| n == "deps") {
        exe_dir.parent().ok_or("test executable has no target dir")?
    } else {
        exe_dir
    }
    .to_path_buf();
    let pick = |var: &str, name: &str| -> PathBuf {
        std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| profile_dir.join(name))
    };
    let runtime = pick("SYSVISOR_E2E_RUNC", "sysvisor-runc");
    let fs_bin = pick("SYSVISOR_E2E_FS", "sysvisor-fs");
    if !runtime.is_file() {
        return Err(format!(
            "{} not found: build it first (cargo build -p sysvisor-runc -p sysvisor-fs) or set SYSVISOR_E2E_RUNC",
            runtime.display()
        ));
    }
    Ok((runtime, fs_bin))
}

fn fs_ping() -> bool {
    sysvisor_proto::call(
        Path::new(FS_SOCKET),
        &sysvisor_proto::Request::Ping,
        Duration::from_secs(2),
    )
    .is_ok()
}

/// The uid/gid pool of the runtime: a `sysvisor:BASE:COUNT` line in /etc/subuid and
/// /etc/subgid, added (as scripts/install.sh does) when missing and removed at exit.
fn ensure_subids() -> Result<(), String> {
    const USER: &str = "sysvisor";
    const COUNT: u64 = 65536 * 1024;
    let files = [PathBuf::from("/etc/subuid"), PathBuf::from("/etc/subgid")];
    // Lines an earlier (killed) run added are ours to remove too.
    for record in fs::read_to_string(subids_marker()).unwrap_or_default().lines() {
        if let Some((file, line)) = record.split_once('\t') {
            let present =
                fs::read_to_string(file).unwrap_or_default().lines().any(|l| l.trim() == line);
            if present {
                MANAGED.lock().unwrap().subids.push((PathBuf::from(file), line.to_string()));
            }
        }
    }
    let texts: Vec<String> =
        files.iter().map(|f| fs::read_to_string(f).unwrap_or_default()).collect();
    let entries = |text: &str| -> Vec<(String, u64, u64)> {
        text.lines()
            .filter_map(|l| {
                let mut parts = l.trim().split(':');
                let (user, start, count) = (parts.next()?, parts.next()?, parts.next()?);
                Some((user.to_string(), start.parse().ok()?, count.parse().ok()?))
            })
            .collect()
    };
    let end = texts.iter().flat_map(|t| entries(t)).map(|(_, s, c)| s + c).fold(100_000, u64::max);
    let base = end.div_ceil(65536) * 65536;
    let line = format!("{USER}:{base}:{COUNT}");
    for (file, text) in files.iter().zip(&texts) {
        if entries(text).iter().any(|(u, _, _)| u == USER) {
            continue;
        }
        let mut new = text.clone();
        if !new.is_empty() && !new.ends_with('\n') {
            new.push('\n');
        }
        new.push_str(&line);
        new.push('\n');
        let mut marker = OpenOptions::new()
            .create(true)
            .append(true)
            .open(subids_marker())
            .map_err(|e| e.to_string())?;
        writeln!(marker, "{}\t{line}", file.display()).map_err(|e| e.to_string())?;
        fs::write(file, new).map_err(|e| format!("{}: {e}", file.display()))?;
        eprintln!("sysvisor-e2e: added {line} to {} (removed at exit)", file.display());
        MANAGED.lock().unwrap().subids.push((file.clone(), line.clone()));
    }
    Ok(())
}

fn remove_subids() {
    let added = MANAGED.lock().map(|mut m| std::mem::take(&mut m.subids)).unwrap_or_default();
    for (file, line) in added {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        let kept: String =
            text.lines().filter(|l| l.trim() != line).map(|l| format!("{l}\n")).collect();
        let _ = fs::write(&file, kept);
    }
    let _ = fs::remove_file(subids_marker());
}

fn ensure_bridge() -> Result<(), String> {
    let _ =
        cmd::run(Command::new("ip").args(["link", "del", BRIDGE]), None, Duration::from_secs(10));
    let out = cmd::sh(
        &format!("ip link add {BRIDGE} type bridge && ip addr add {BRIDGE_ADDR} dev {BRIDGE} && ip link set {BRIDGE} up"),
        Duration::from_secs(10),
    );
    if !out.success() {
        return Err(format!("cannot make the bridge {BRIDGE}: {out}"));
    }
    MANAGED.lock().unwrap().bridge = true;
    Ok(())
}

// The keeper: one thread for the life of the process that spawns the daemons, so their
// PR_SET_PDEATHSIG (which fires when the spawning *thread* exits) fires only when the
// process dies.
type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);
static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

/// Spawns a daemon in its own session, logging to `log`; with `pdeathsig`, it gets SIGTERM
/// when this process dies.
pub(crate) fn spawn_daemon(mut cmd: Command, log: File, pdeathsig: bool) -> io::Result<Child> {
    let err = log.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            if pdeathsig && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("sysvisor-e2e-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static: never reached, but park for good measure.
                loop {
                    thread::park();
                }
            })
            .expect("spawn keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    keeper
        .lock()
        .unwrap()
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("keeper thread gone"))?;
    reply_rx.recv().map_err(|_| io::Error::other("keeper thread gone"))?
}

pub(crate) fn stop_child(mut child: Child, what: &str, grace: Duration) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("sysvisor-e2e: {what} did not stop in {grace:?}; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn pid_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks existence.
    pid > 0 && unsafe { libc::kill(pid, 0) } == 0
}

/// Mount points under `dir` (deepest first), from /proc/self/mountinfo.
fn mounts_under(dir: &str) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(leaks::unescape_mount_path)
        .filter(|m| m == dir || m.starts_with(&format!("{dir}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    mounts
}

pub(crate) fn unmount_under(dir: &str) {
    for m in mounts_under(dir) {
        let c = std::ffi::CString::new(m.clone()).unwrap();
        // SAFETY: plain umount2 of a path string.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!("sysvisor-e2e: warning: umount {m}: {}", io::Error::last_os_error());
        }
    }
}

/// What a killed earlier run may have left: its dockerd (stopped), its containers (deleted
/// through the runtime so their ranges and mounts go too), mounts and state under our roots.
fn clean_leftovers(runtime_bin: &Path) {
    if let Some(pid) = fs::read_to_string(pidfile()).ok().and_then(|s| s.trim().parse::<i32>().ok())
    {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if pid_alive(pid) && comm.trim() == "dockerd" {
            eprintln!("sysvisor-e2e: stopping a dockerd left by an earlier run (pid {pid})");
            // The leftover dockerd of our own pid file.
            terminate(&[pid], Duration::from_secs(40));
        }
    }
    // Containers whose engine died without stopping them: delete them through the runtime.
    let runc_root = Path::new(EXEC_ROOT).join("runtime-runc/moby");
    if let Ok(entries) = fs::read_dir(&runc_root) {
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            eprintln!("sysvisor-e2e: deleting container {id} left by an earlier run");
            let out = cmd::run(
                Command::new(runtime_bin)
                    .args(runtime_args())
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force", &id]),
                None,
                Duration::from_secs(30),
            );
            if !out.success() {
                let _ = cmd::run(
                    Command::new("runc")
                        .arg("--root")
                        .arg(&runc_root)
                        .args(["delete", "--force", &id]),
                    None,
                    Duration::from_secs(30),
                );
            }
        }
    }
    kill_stragglers();
    // The sysvisor-fs daemon of a killed run (after its containers are gone).
    if let Some(pid) =
        fs::read_to_string(fs_pidfile()).ok().and_then(|s| s.trim().parse::<i32>().ok())
    {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if pid_alive(pid) && comm.trim() == "sysvisor-fs" {
            eprintln!(
                "sysvisor-e2e: stopping the sysvisor-fs daemon of an earlier run (pid {pid})"
            );
            // The daemon named by our own pid file.
            terminate(&[pid], Duration::from_secs(15));
        }
        let _ = fs::remove_file(fs_pidfile());
    }
    unmount_fs_mounts();
    unmount_under(EXEC_ROOT);
    unmount_under(DATA_ROOT);
    unmount_under(SCRATCH);
    remove_trees();
}

/// The harness daemon's mount points: the per-caller views and the containers' own files.
fn fs_mountpoints() -> [String; 2] {
    let own = sysvisor_proto::containers_mountpoint_for(Path::new(FS_MOUNTPOINT));
    [FS_MOUNTPOINT.to_string(), own.to_string_lossy().into_owned()]
}

fn unmount_fs_mounts() {
    for m in fs_mountpoints() {
        unmount_under(&m);
    }
}

/// Removes the engine's and the daemon's directories (after their mounts are gone): each
/// run starts with no state of an earlier one.
fn remove_trees() {
    let socket_dir = Path::new(FS_SOCKET).parent().unwrap().to_string_lossy().into_owned();
    let _ = cmd::run(
        Command::new("rm")
            .args(["-rf", "--one-file-system", EXEC_ROOT, DATA_ROOT, SCRATCH])
            .args(fs_mountpoints())
            .args([FS_STATE, &socket_dir]),
        None,
        Duration::from_secs(120),
    );
}

/// Shims (and a containerd) of our engine still running once dockerd is gone: their
/// command lines name our private exec root. SIGTERM, then SIGKILL.
fn kill_stragglers() {
    let pids = leaks::pids_with_cmdline(EXEC_ROOT);
    if pids.is_empty() {
        return;
    }
    eprintln!("sysvisor-e2e: stopping processes of the private engine still running: {pids:?}");
    // Processes whose command lines name our private exec root.
    terminate(&pids, Duration::from_secs(5));
}

/// SIGTERM to `pids` (processes of this harness's own engine or daemon, found by the caller),
/// up to `grace` for them to exit, then SIGKILL to those still alive.
pub(crate) fn terminate(pids: &[i32], grace: Duration) {
    for &pid in pids {
        // SAFETY: kill(2) on a pid the caller identified as ours; no memory is involved.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| pid_alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids.iter().filter(|&&p| pid_alive(p)) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

extern "C" fn teardown_at_exit() {
    let _ = std::panic::catch_unwind(teardown);
}

fn teardown() {
    // Whatever set-up got to (it may have failed half-way) is undone.
    let engine = match ENGINE.get() {
        Some(Ok(engine)) => Some(engine),
        _ => None,
    };
    let dockerd = MANAGED.lock().map(|mut m| m.dockerd.take()).unwrap_or(None);
    if let Some(dockerd) = dockerd {
        let left = engine.map(Engine::containers).unwrap_or_default();
        if !left.is_empty() {
            eprintln!("sysvisor-e2e: removing {} container(s) the tests left behind", left.len());
            let mut args = vec!["rm", "-f"];
            args.extend(left.iter().map(String::as_str));
            if let Some(engine) = engine {
                let _ = engine.docker(&args);
            }
        }
        // The runtime frees the ranges and upper layers of removed containers at its next
        // `create`: run one throwaway system container so that the run leaves none behind.
        if let Some(engine) = engine.filter(|_| fs_ping()) {
            let image = engine.image.get().and_then(|i| i.as_ref().ok()).cloned();
            if let Some(image) = image {
                let _ = engine.docker_timeout(
                    &["run", "--rm", "--pull", "never", "--runtime", RUNTIME, &image, "true"],
                    Duration::from_secs(30),
                );
            }
        }
        stop_child(dockerd, "dockerd", Duration::from_secs(40));
        kill_stragglers();
    }
    let (fsd, bridge) =
        MANAGED.lock().map(|mut m| (m.fsd.take(), m.bridge)).unwrap_or((None, false));
    if let Some(fsd) = fsd {
        stop_child(fsd, "sysvisor-fs", Duration::from_secs(15));
        let _ = fs::remove_file(fs_pidfile());
    }
    // A daemon killed hard leaves dead FUSE mounts behind (the per-caller views and the
    // containers' own files).
    unmount_fs_mounts();
    if bridge {
        let _ = cmd::run(
            Command::new("ip").args(["link", "del", BRIDGE]),
            None,
            Duration::from_secs(10),
        );
    }
    unmount_under(EXEC_ROOT);
    unmount_under(DATA_ROOT);
    unmount_under(SCRATCH);
    remove_trees();
    remove_subids();
    let _ = fs::remove_dir_all(Path::new(RUN_DIR).join("runtimes"));
    let _ = fs::remove_dir(Path::new(DATA_ROOT).parent().unwrap());
    let _ = io::stderr().flush();
}
