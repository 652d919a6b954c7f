//! A second private Docker engine beside the harness's own ([`crate::Engine`]), for tests
//! that need a dockerd configured differently (`"userns-remap": "default"`). Everything of
//! it is named after it and kept apart from the first engine: config, socket, pid file,
//! exec root and log under `/run/sysvisor-e2e/NAME/`, data root `/var/lib/sysvisor-e2e/NAME`,
//! its own bridge; the runtime `sysvisor-runc` is the binary under test, pointed at the
//! harness's sysvisor-fs daemon ([`engine::runtime_args`]). It runs only while the first engine's guard is held (so
//! under its process lock), and is stopped and removed when dropped, with what dockerd
//! added to the host for `userns-remap` (the `dockremap` user and its subordinate ids).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

use crate::cmd::{self, Output};
use crate::engine::{self, pid_alive, spawn_daemon, stop_child, terminate, unmount_under};
use crate::{leaks, Engine, RUNTIME, RUN_DIR};

/// The user dockerd makes for `"userns-remap": "default"`.
pub const REMAP_USER: &str = "dockremap";
const SUBID_FILES: [&str; 2] = ["/etc/subuid", "/etc/subgid"];

/// A second dockerd; stopped and cleaned up on drop.
pub struct SecondEngine {
    name: String,
    dockerd: Option<Child>,
    bridge: String,
    /// The `dockremap` user did not exist before: it goes at the end.
    remove_remap_user: bool,
    /// The `dockremap` lines of /etc/subuid and /etc/subgid before the engine started.
    subid_lines_before: Vec<String>,
}

impl SecondEngine {
    /// Starts dockerd `name` (a short word: it names the paths and the bridge `sve2e-NAME`)
    /// with the daemon.json keys of `extra` merged over the private ones, the bridge
    /// address `bridge_addr`, and the busybox image of `main` loaded.
    pub fn start(
        main: &Engine,
        name: &str,
        bridge_addr: &str,
        extra: serde_json::Value,
    ) -> Result<SecondEngine, String> {
        let bridge = format!("sve2e-{name}");
        let remap_user_existed = user_exists(REMAP_USER);
        let mut engine = SecondEngine {
            name: name.to_string(),
            dockerd: None,
            bridge: bridge.clone(),
            remove_remap_user: !remap_user_existed,
            subid_lines_before: remap_subid_lines(),
        };
        engine.clean();
        fs::create_dir_all(engine.dir()).map_err(|e| format!("mkdir: {e}"))?;
        let out = cmd::sh(
            &format!(
                "ip link add {bridge} type bridge && ip addr add {bridge_addr} dev {bridge} && \
                 ip link set {bridge} up"
            ),
            Duration::from_secs(10),
        );
        if !out.success() {
            return Err(format!("cannot make the bridge {bridge}: {out}"));
        }
        let mut config = serde_json::json!({
            "data-root": engine.data_root(),
            "exec-root": engine.exec_root(),
            "pidfile": engine.dir().join("docker.pid"),
            "hosts": [format!("unix://{}", engine.socket().display())],
            "bridge": bridge,
            "iptables": false,
            "ip-forward": false,
            "ip-masq": false,
            "runtimes": {
                RUNTIME: { "path": main.runtime_bin, "runtimeArgs": engine::runtime_args() }
            },
        });
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            config.extend(extra.clone());
        }
        let config_path = engine.dir().join("daemon.json");
        fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap())
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
        let log = fs::File::create(engine.dir().join("dockerd.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file").arg(&config_path);
        engine.dockerd =
            Some(spawn_daemon(cmd, log, true).map_err(|e| format!("cannot start dockerd: {e}"))?);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.docker(&["version"]).success() {
            if let Some(status) = engine.dockerd.as_mut().and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!("dockerd {name} exited ({status}):\n{}", engine.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("dockerd {name} not ready after 60s:\n{}", engine.log_tail()));
            }
            thread::sleep(Duration::from_millis(200));
        }
        let load = format!(
            "{} save {} | {} load",
            main.docker_cmdline(),
            main.image(),
            engine.docker_cmdline()
        );
        let out = cmd::sh(&load, Duration::from_secs(120));
        if !out.success() {
            return Err(format!("loading the image into dockerd {name}: {out}"));
        }
        Ok(engine)
    }

    fn dir(&self) -> PathBuf {
        Path::new(RUN_DIR).join(&self.name)
    }

    fn socket(&self) -> PathBuf {
        self.dir().join("docker.sock")
    }

    fn exec_root(&self) -> PathBuf {
        self.dir().join("exec")
    }

    fn data_root(&self) -> PathBuf {
        Path::new(crate::DATA_ROOT).parent().unwrap().join(&self.name)
    }

    /// The last lines of this dockerd's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir().join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn docker_cmdline(&self) -> String {
        format!("docker -H unix://{}", self.socket().display())
    }

    /// `docker -H unix://SOCKET ARGS`.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.socket().display())).args(args);
        c.env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", Path::new(RUN_DIR).join("cli"));
        cmd::run(&mut c, None, engine::DOCKER_TIMEOUT)
    }

    /// Stops dockerd, its shims, unmounts and removes its directories and bridge.
    fn clean(&mut self) {
        if let Some(child) = self.dockerd.take() {
            let left = self.docker(&["ps", "-aq"]).stdout;
            let ids: Vec<&str> = left.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.docker(&args);
            }
            stop_child(child, "the second dockerd", Duration::from_secs(40));
        } else if let Some(pid) = fs::read_to_string(self.dir().join("docker.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            // The dockerd a killed earlier run left, by its own pid file.
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if pid_alive(pid) && comm.trim() == "dockerd" {
                terminate(&[pid], Duration::from_secs(40));
            }
        }
        let exec_root = self.exec_root().display().to_string();
        let stragglers = leaks::pids_with_cmdline(&exec_root);
        // Shims and containerd of this engine: their command lines name its exec root.
        terminate(&stragglers, Duration::from_secs(5));
        let data_root = self.data_root().display().to_string();
        unmount_under(&exec_root);
        unmount_under(&data_root);
        let _ = cmd::run(
            Command::new("rm").args(["-rf", "--one-file-system", &exec_root, &data_root]),
            None,
            Duration::from_secs(120),
        );
        let _ = cmd::run(
            Command::new("ip").args(["link", "del", &self.bridge]),
            None,
            Duration::from_secs(10),
        );
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        self.clean();
        let _ = fs::remove_dir_all(self.dir());
        if self.remove_remap_user && user_exists(REMAP_USER) {
            let out =
                cmd::run(Command::new("userdel").arg(REMAP_USER), None, Duration::from_secs(30));
            if !out.success() {
                eprintln!("sysvisor-e2e: warning: userdel {REMAP_USER}: {out}");
            }
        }
        // The subordinate ids dockerd added for the user (userdel may leave them).
        for file in SUBID_FILES {
            let Ok(text) = fs::read_to_string(file) else { continue };
            let kept: String = text
                .lines()
                .filter(|l| {
                    !l.starts_with(&format!("{REMAP_USER}:"))
                        || self.subid_lines_before.iter().any(|b| b == &format!("{file}\t{l}"))
                })
                .map(|l| format!("{l}\n"))
                .collect();
            if kept != text {
                let _ = fs::write(file, kept);
            }
        }
    }
}

fn user_exists(user: &str) -> bool {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(':').next() == Some(user))
}

/// The `dockremap` lines of the subordinate id files, as "FILE\tLINE".
fn remap_subid_lines() -> Vec<String> {
    SUBID_FILES
        .iter()
        .flat_map(|f| {
            fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with(&format!("{REMAP_USER}:")))
                .map(|l| format!("{f}\t{l}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The first id and the count of `user`'s entry in `file` (/etc/subuid or /etc/subgid).
pub fn subid_range(file: &str, user: &str) -> Option<(u32, u32)> {
    fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let mut parts = l.split(':');
        (parts.next()? == user).then_some(())?;
        Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
    })
}

/// A container of a [`SecondEngine`], removed (`docker rm -f`) when dropped.
pub struct SecondContainer<'e> {
    engine: &'e SecondEngine,
    pub name: String,
}

impl SecondEngine {
    /// `docker run -d --name NAME OPTIONS IMAGE COMMAND` of the busybox image; panics with
    /// docker's output and the log if it fails (the guard removes what it left).
    #[track_caller]
    pub fn start_container(&self, options: &[&str], command: &[&str]) -> SecondContainer<'_> {
        self.start_image(crate::IMAGE, options, command)
    }

    /// As [`SecondEngine::start_container`], of `image` (an empty `command`: its own).
    #[track_caller]
    pub fn start_image(
        &self,
        image: &str,
        options: &[&str],
        command: &[&str],
    ) -> SecondContainer<'_> {
        static NAMES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NAMES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("e2e-{}-{}-{n}", self.name, std::process::id());
        let mut args = vec!["run", "-d", "--pull", "never", "--name", &name];
        args.extend_from_slice(options);
        args.push(image);
        args.extend_from_slice(command);
        let out = self.docker(&args);
        let container = SecondContainer { engine: self, name };
        assert!(out.success(), "docker run failed: {out}\n{}", self.log_tail());
        container
    }
}

impl SecondEngine {
    /// The systemd + Docker image ([`crate::images`]) imported into this engine.
    pub fn import_systemd_docker(&self) -> Result<&'static str, String> {
        let tarball = crate::images::systemd_docker_tarball()?;
        let out = self.docker(&[
            "import",
            "--change",
            "CMD [\"/sbin/init\"]",
            &tarball,
            crate::SYSTEMD_DOCKER_IMAGE,
        ]);
        if !out.success() {
            return Err(format!("docker import: {out}"));
        }
        Ok(crate::SYSTEMD_DOCKER_IMAGE)
    }
}

impl SecondContainer<'_> {
    /// `docker exec NAME sh -c SCRIPT`.
    pub fn sh(&self, script: &str) -> Output {
        self.sh_as("0", script)
    }

    /// `docker exec -u USER NAME sh -c SCRIPT`.
    pub fn sh_as(&self, user: &str, script: &str) -> Output {
        self.engine.docker(&["exec", "-u", user, &self.name, "sh", "-c", script])
    }

    /// The host pid of the container's init.
    pub fn pid(&self) -> Option<u32> {
        let out = self.engine.docker(&["inspect", "-f", "{{.State.Pid}}", &self.name]);
        out.out().parse().ok().filter(|&p| p != 0)
    }

    /// The uid map of the container's init as the host sees it.
    pub fn uid_map(&self) -> Option<leaks::IdMap> {
        let text = fs::read_to_string(format!("/proc/{}/uid_map", self.pid()?)).ok()?;
        leaks::parse_uid_map(&text)
    }
}

impl Drop for SecondContainer<'_> {
    fn drop(&mut self) {
        let _ = self.engine.docker(&["rm", "-f", &self.name]);
    }
}
