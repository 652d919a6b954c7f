//! The Debian package (scripts/build-deb.sh) on this machine: built from the binaries under
//! test, installed with `dpkg -i`, a system container run with the installed runtime and
//! daemon, upgraded to a rebuilt package (a newer version) while the container runs,
//! removed, purged; then the machine must be as before (the id pool lines, daemon.json, the
//! package's files and state directories). Where systemd does not run the host (this
//! machine) the test starts the daemon as the postinst says.
//!
//! It runs under the e2e engine's lock, and exclusively in it. The package's daemon serves
//! the default socket and mount point (the harness's own daemon has private ones), so the
//! test refuses to run where something answers there already. Whatever the test changed
//! is put back also when it fails (see [`Restore`]).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use sysvisor_e2e::cmd::{self, Output};
use sysvisor_e2e::{scratch_dir, Container, Engine};

const PACKAGE: &str = "sysvisor";
const RUNC: &str = "/usr/bin/sysvisor-runc";
const FS: &str = "/usr/bin/sysvisor-fs";
const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Files whose content the package may change and must give back.
const CONFIG_FILES: [&str; 3] = ["/etc/subuid", "/etc/subgid", DAEMON_JSON];
/// Paths the package adds (or its programs create) and purge must leave as they were.
const PATHS: [&str; 9] = [
    RUNC,
    FS,
    "/lib/systemd/system/sysvisor-fs.service",
    "/usr/share/doc/sysvisor",
    "/var/lib/sysvisor",
    "/var/lib/sysvisor/package",
    "/var/lib/sysvisor-fs",
    "/run/sysvisor",
    "/etc/sysvisor",
];

/// What the package may touch on the host: config file contents, and which paths exist.
#[derive(Debug, PartialEq)]
struct HostState {
    files: Vec<(&'static str, Option<String>)>,
    paths: Vec<(&'static str, bool)>,
}

fn host_state() -> HostState {
    HostState {
        files: CONFIG_FILES.iter().map(|&f| (f, fs::read_to_string(f).ok())).collect(),
        paths: PATHS.iter().map(|&p| (p, Path::new(p).exists())).collect(),
    }
}

/// Puts the host back on drop (the test passed or not): stops the package's daemon,
/// purges the package and writes back config files that still differ.
struct Restore {
    before: HostState,
    daemon: Option<Child>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            // SAFETY: kill(2) on the daemon this test spawned.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while daemon.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(100));
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        if installed_version().is_some() {
            eprintln!("deb test: purging the package left installed");
            let out = dpkg(&["--purge", PACKAGE], &[("SYSVISOR_FORCE_REMOVE", "1")]);
            if !out.success() {
                eprintln!("deb test: warning: dpkg --purge: {out}");
            }
        }
        for (file, text) in &self.before.files {
            if fs::read_to_string(file).ok() != *text {
                eprintln!("deb test: restoring {file}");
                let _ = match text {
                    Some(text) => fs::write(file, text),
                    None => fs::remove_file(file),
                };
            }
        }
    }
}

fn dpkg(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("dpkg");
    c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    cmd::run(&mut c, None, Duration::from_secs(300))
}

/// The installed version of the package, if it is installed (not only its config files).
fn installed_version() -> Option<String> {
    let out = cmd::run(
        Command::new("dpkg-query").args(["-W", "-f", "${Status} ${Version}", PACKAGE]),
        None,
        Duration::from_secs(30),
    );
    let text = out.out();
    let version = text.strip_prefix("install ok installed ")?;
    out.success().then(|| version.to_string())
}

fn build_package(engine: &Engine, dir: &Path, version: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-deb.sh");
    let out = cmd::run(
        Command::new("bash")
            .arg(script)
            .arg("--fs-bin")
            .arg(&engine.fs_bin)
            .arg("--runc-bin")
            .arg(&engine.runtime_bin)
            .args(["--version", version, "--compression", "none", "--output"])
            .arg(dir),
        None,
        Duration::from_secs(300),
    )
    .expect_success();
    let arch =
        cmd::run(Command::new("dpkg").arg("--print-architecture"), None, Duration::from_secs(10))
            .out();
    let deb = dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    assert!(deb.is_file(), "{} not built: {out}", deb.display());
    deb
}

/// Whether a sysvisor-fs daemon answers on the default socket (the package's).
fn default_daemon_answers() -> bool {
    let socket = Path::new(sysvisor_proto::DEFAULT_SOCKET);
    sysvisor_proto::call(socket, &sysvisor_proto::Request::Ping, Duration::from_secs(2)).is_ok()
}

/// Starts the installed daemon as the postinst says, and waits until it answers.
fn start_package_daemon(log: &Path) -> Child {
    let log = File::create(log).unwrap();
    let mut daemon = Command::new(FS)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("{FS} serve: {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !default_daemon_answers() {
        if let Ok(Some(status)) = daemon.try_wait() {
            panic!("{FS} serve exited: {status}");
        }
        assert!(Instant::now() < deadline, "{FS} serve not answering after 20 s");
        thread::sleep(Duration::from_millis(50));
    }
    daemon
}

fn mem_total_kb(c: &Container) -> u64 {
    let out = c.exec(&["head", "-1", "/proc/meminfo"]).expect_success();
    let kb = out.stdout.split_whitespace().nth(1).and_then(|v| v.parse().ok());
    kb.unwrap_or_else(|| panic!("bad meminfo: {out}"))
}

fn daemon_json() -> serde_json::Value {
    let text = fs::read_to_string(DAEMON_JSON).unwrap_or_else(|e| panic!("{DAEMON_JSON}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DAEMON_JSON} not JSON ({e}): {text}"))
}

/// Whether the package may be installed here; if not, the skip is recorded (dpkg is part
/// of every Debian machine; the rest is what a correct machine may have).
fn can_install() -> bool {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        sysvisor_skip::required("dpkg-deb is not installed");
        return false;
    }
    if Path::new("/run/systemd/system").exists() {
        // The package would enable and start a systemd unit on the host itself.
        sysvisor_skip::optional("systemd runs this host: the package test runs only where not");
        return false;
    }
    if installed_version().is_some() || Path::new(RUNC).exists() || Path::new(FS).exists() {
        sysvisor_skip::optional(&format!("a {PACKAGE} package (or {RUNC}) is installed here"));
        return false;
    }
    if default_daemon_answers() {
        sysvisor_skip::optional("a sysvisor-fs daemon answers on the default socket already");
        return false;
    }
    true
}

#[test]
fn package_installs_upgrades_under_a_running_container_and_purges_clean() {
    let Some(e) = Engine::exclusive() else { return };
    if !can_install() {
        return;
    }
    let dir = scratch_dir("deb");
    let old = build_package(&e, &dir, "0.1.0~e2e1");
    let new = build_package(&e, &dir, "0.1.0~e2e2");
    let before = host_state();
    let before_config: Option<serde_json::Value> =
        fs::read_to_string(DAEMON_JSON).ok().and_then(|t| serde_json::from_str(&t).ok());
    let mut restore = Restore { before, daemon: None };

    // Install: files, the pool, the runtime entry merged; no systemd, so it says how to start.
    let out = dpkg(&["-i", old.to_str().unwrap()], &[]).expect_success();
    assert!(out.stdout.contains(&format!("{FS} serve")), "no start hint: {out}");
    assert_eq!(installed_version().as_deref(), Some("0.1.0~e2e1"));
    let unit = fs::read_to_string("/lib/systemd/system/sysvisor-fs.service").unwrap();
    assert!(unit.lines().any(|l| l == format!("ExecStart={FS} serve")), "{unit}");
    let config = daemon_json();
    assert_eq!(config["runtimes"]["sysvisor-runc"]["path"], RUNC, "{config}");
    if let Some(serde_json::Value::Object(before)) = &before_config {
        for (key, value) in before.iter().filter(|(k, _)| *k != "runtimes") {
            assert_eq!(&config[key], value, "{key} changed in {DAEMON_JSON}");
        }
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = fs::read_to_string(file).unwrap();
        assert!(text.lines().any(|l| l.starts_with("sysvisor:")), "no pool in {file}: {text}");
    }
    let pool_after_install: Vec<Option<String>> =
        CONFIG_FILES[..2].iter().map(|f| fs::read_to_string(f).ok()).collect();

    restore.daemon = Some(start_package_daemon(&dir.join("sysvisor-fs.log")));
    let runtime = e.add_runtime_binary("sysvisor-pkg", Path::new(RUNC)).unwrap();
    let c = e.start(&["--runtime", &runtime, "-m", "256m"], &["sleep", "3600"]);
    assert_eq!(mem_total_kb(&c), 256 * 1024, "MemTotal through the package's daemon");
    let range = c.uid_map().expect("uid map of the container");
    assert_ne!(range.outside, 0, "the container's root is not the host's: {range:?}");

    // Upgrade with the container running: the daemon keeps serving (old binary), the
    // container keeps its views, and new containers start with the new runtime.
    let out = dpkg(&["-i", new.to_str().unwrap()], &[]).expect_success();
    assert!(out.stdout.contains("keeps running the old binary"), "{out}");
    assert_eq!(installed_version().as_deref(), Some("0.1.0~e2e2"));
    let daemon = restore.daemon.as_mut().unwrap();
    assert!(daemon.try_wait().unwrap().is_none(), "the upgrade stopped the daemon: {out}");
    assert_eq!(c.status(), "running");
    assert_eq!(mem_total_kb(&c), 256 * 1024, "MemTotal after the upgrade");
    let fresh = e.start(&["--runtime", &runtime, "-m", "128m"], &["sleep", "3600"]);
    assert_eq!(mem_total_kb(&fresh), 128 * 1024, "MemTotal of a container started after it");
    fresh.remove().expect_success();
    let id = c.id();
    c.remove().expect_success();
    e.assert_no_leaks(&id, Some(range));

    // Remove: the daemon stopped, the binaries and the runtime entry gone, the pool kept.
    let out = dpkg(&["--remove", PACKAGE], &[]).expect_success();
    let daemon = restore.daemon.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(35);
    while daemon.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "dpkg --remove did not stop the daemon: {out}");
        thread::sleep(Duration::from_millis(100));
    }
    restore.daemon = None;
    assert!(!Path::new(RUNC).exists() && !Path::new(FS).exists(), "binaries left: {out}");
    match &before_config {
        Some(before) => assert_eq!(&daemon_json(), before, "{DAEMON_JSON} after remove"),
        None => assert!(!Path::new(DAEMON_JSON).exists(), "{DAEMON_JSON} left: {out}"),
    }
    let pool: Vec<Option<String>> =
        CONFIG_FILES[..2].iter().map(|f| fs::read_to_string(f).ok()).collect();
    assert_eq!(pool, pool_after_install, "remove (not purge) keeps the id pool");

    // Purge: the machine as before.
    let out = dpkg(&["--purge", PACKAGE], &[]).expect_success();
    assert_eq!(installed_version(), None);
    assert_eq!(host_state(), restore.before, "purge left the host changed: {out}");
    let _ = fs::remove_dir_all(&dir);
}

/// A daemon.json with other keys and the runtime entry of scripts/install.sh: the package
/// points the entry at its binary and keeps the rest; removing the package points the entry
/// back, and purge leaves the file as it was.
#[test]
fn an_existing_daemon_json_and_install_sh_entry_come_back_after_purge() {
    let Some(e) = Engine::exclusive() else { return };
    if !can_install() {
        return;
    }
    if Path::new(DAEMON_JSON).exists() {
        sysvisor_skip::optional(&format!(
            "{DAEMON_JSON} exists; the test seeds one only where there is none"
        ));
        return;
    }
    let dir = scratch_dir("deb-config");
    let deb = build_package(&e, &dir, "0.1.0~e2e1");
    // Restore removes the seed (there was no file before).
    let restore = Restore { before: host_state(), daemon: None };
    let seed = serde_json::json!({
        "log-level": "warn",
        "runtimes": {
            "crun": {"path": "/usr/bin/crun"},
            "sysvisor-runc": {"path": "/usr/local/bin/sysvisor-runc", "runtimeArgs": ["--debug"]}
        }
    });
    fs::create_dir_all(Path::new(DAEMON_JSON).parent().unwrap()).unwrap();
    fs::write(DAEMON_JSON, serde_json::to_string_pretty(&seed).unwrap()).unwrap();

    dpkg(&["-i", deb.to_str().unwrap()], &[]).expect_success();
    let config = daemon_json();
    assert_eq!(config["log-level"], "warn", "{config}");
    assert_eq!(config["runtimes"]["crun"], seed["runtimes"]["crun"], "{config}");
    assert_eq!(config["runtimes"]["sysvisor-runc"]["path"], RUNC, "{config}");
    assert_eq!(config["runtimes"]["sysvisor-runc"]["runtimeArgs"], serde_json::json!(["--debug"]));

    let out = dpkg(&["--purge", PACKAGE], &[]).expect_success();
    assert_eq!(daemon_json(), seed, "{DAEMON_JSON} after purge: {out}");
    let mut after = host_state();
    for (file, text) in after.files.iter_mut() {
        if *file == DAEMON_JSON {
            *text = None; // the seed, checked above; Restore removes it
        }
    }
    assert_eq!(after, restore.before, "purge left the host changed: {out}");
    drop(restore);
    assert!(!Path::new(DAEMON_JSON).exists());
    let _ = fs::remove_dir_all(&dir);
}
