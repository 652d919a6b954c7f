//! The `sysvisor-runc` binary with a fake runc (a shell script that records its arguments)
//! and no sysvisor-fs daemon: argument pass-through, and errors reported in runc's log
//! format before anything is touched. Needs no root: every case here fails or finishes
//! before the id range allocator or the rootfs shifting would run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const FAKE_RUNC: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_DIR/calls"
for a in "$@"; do
  case "$a" in
    state) cat "$FAKE_DIR/state.json"; exit 0 ;;
    --version) echo "runc version 1.1.5-fake"; exit 0 ;;
  esac
done
exit "$(cat "$FAKE_DIR/exit" 2>/dev/null || echo 0)"
"#;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let runc = dir.path().join("runc");
        std::fs::write(&runc, FAKE_RUNC).unwrap();
        std::fs::set_permissions(&runc, std::fs::Permissions::from_mode(0o755)).unwrap();
        Env { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn bundle(&self, fixture: &str) -> PathBuf {
        let bundle = self.path("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
        std::fs::copy(src, bundle.join("config.json")).unwrap();
        bundle
    }
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sysvisor-runc"))
            .args(args)
            .env("SYSVISOR_RUNC", self.path("runc"))
            .env("FAKE_DIR", self.dir.path())
            .env("SYSVISOR_FS_SOCKET", self.path("no-daemon.sock"))
            .env("SYSVISOR_FS_MOUNTPOINT", self.path("views"))
            .output()
            .unwrap()
    }
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
    fn log_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.path("log.json")).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }
    /// The message of the log's last `error` line, as containerd picks it.
    fn last_error(&self) -> String {
        let lines = self.log_lines();
        let last = lines.iter().rev().find(|l| l["level"] == "error").expect("an error line");
        let time = last["time"].as_str().unwrap();
        assert!(time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
        last["msg"].as_str().unwrap().to_string()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn other_commands_reach_runc_unchanged_with_its_exit_code() {
    let env = Env::new();
    std::fs::write(env.path("exit"), "3").unwrap();
    let log = env.path("log.json");
    let out = env.run(&["--root", "/r", "--log", s(&log), "--log-format", "json", "pause", "c1"]);
    assert_eq!(out.status.code(), Some(3));
    let out2 = env.run(&["ps", "--format", "json", "c1", "--", "-ef"]);
    assert_eq!(out2.status.code(), Some(3));
    let out3 = env.run(&["some-new-command", "--new-flag=1", "c1"]);
    assert_eq!(out3.status.code(), Some(3));
    assert_eq!(
        env.calls(),
        [
            format!("--root /r --log {} --log-format json pause c1", log.display()),
            "ps --format json c1 -- -ef".to_string(),
            "some-new-command --new-flag=1 c1".to_string(),
        ]
    );
}

#[test]
fn a_malformed_config_is_a_clear_error_in_the_log_and_the_file_stays() {
    let env = Env::new();
    let bundle = env.path("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("config.json"), "{\"ociVersion\": \"1.0.2\", \"process\": [}")
        .unwrap();
    let log = env.path("log.json");
    let out = env.run(&[
        "--log",
        s(&log),
        "--log-format",
        "json",
        "create",
        "--bundle",
        s(&bundle),
        "c1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let msg = env.last_error();
    assert!(
        msg.starts_with(&format!("malformed OCI config {}/config.json: ", bundle.display())),
        "{msg}"
    );
    assert!(msg.contains("line 1 column"), "{msg}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&msg));
    assert_eq!(
        std::fs::read_to_string(bundle.join("config.json")).unwrap(),
        "{\"ociVersion\": \"1.0.2\", \"process\": [}"
    );
    assert_eq!(std::fs::read_dir(&bundle).unwrap().count(), 1);
    assert!(env.calls().is_empty());
}

#[test]
fn no_daemon_fails_before_runc_and_says_how_to_start_it() {
    let env = Env::new();
    let bundle = env.bundle("docker-run.json");
    let original = std::fs::read_to_string(bundle.join("config.json")).unwrap();
    let log = env.path("log.json");
    let pid = env.path("init.pid");
    let out = env.run(&[
        "--root",
        "/r",
        "--log",
        s(&log),
        "--log-format",
        "json",
        "create",
        "--bundle",
        s(&bundle),
        "--pid-file",
        s(&pid),
        "c1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let msg = env.last_error();
    assert!(
        msg.starts_with(&format!(
            "sysvisor-fs daemon not reachable at {}: ",
            env.path("no-daemon.sock").display()
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with("start it with `systemctl start sysvisor-fs` or `sysvisor-fs serve`"),
        "{msg}"
    );
    assert!(env.calls().is_empty());
    assert_eq!(std::fs::read_to_string(bundle.join("config.json")).unwrap(), original);
    assert_eq!(std::fs::read_dir(&bundle).unwrap().count(), 1);
}

#[test]
fn host_network_is_refused_in_the_text_format_too() {
    let env = Env::new();
    let bundle = env.bundle("docker-hostnet.json");
    let log = env.path("log.txt");
    let out = env.run(&["--log", s(&log), "create", "-b", s(&bundle), "c1"]);
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().last().unwrap();
    assert!(line.starts_with("time=\""), "{line}");
    assert!(
        line.contains(
            " level=error msg=\"system containers need their own network namespace; --network=host and \
             --network=container:... are not supported (the config joins /var/run/docker/netns/default)\""
        ),
        "{line}"
    );
    assert!(env.calls().is_empty());
}

#[test]
fn a_bad_command_line_is_reported_in_the_log() {
    let env = Env::new();
    let log = env.path("log.json");
    let out = env.run(&["--log", s(&log), "--log-format", "json", "create", "--bundle", "/b"]);
    assert_eq!(out.status.code(), Some(1));
    let msg = env.last_error();
    assert!(msg.contains("required arguments were not provided") && msg.contains("<ID>"), "{msg}");
    assert!(env.calls().is_empty());
}

#[test]
fn errors_follow_runcs_own_log_lines() {
    let env = Env::new();
    let log = env.path("log.json");
    std::fs::write(
        &log,
        "{\"level\":\"info\",\"msg\":\"earlier\",\"time\":\"2024-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let bundle = env.bundle("docker-hostpid.json");
    env.run(&["--log", s(&log), "--log-format", "json", "create", "--bundle", s(&bundle), "c1"]);
    let lines = env.log_lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["msg"], "earlier");
    assert_eq!(
        env.last_error(),
        "system containers need their own pid namespace; --pid=host is not supported"
    );
}

#[test]
fn version_is_ours_then_runcs() {
    let env = Env::new();
    let out = env.run(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!("sysvisor-runc version {}\nrunc version 1.1.5-fake\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn stopping_a_systemd_container_sends_sigrtmin_plus_3() {
    let env = Env::new();
    let bundle = env.bundle("docker-run.json");
    // runc state reports the annotations `create` recorded in the config.
    let state = |annotations: Value| {
        let state = serde_json::json!({"ociVersion": "1.0.2", "id": "c1", "pid": 77, "status": "running",
            "bundle": bundle, "annotations": annotations});
        std::fs::write(env.path("state.json"), state.to_string()).unwrap();
    };
    state(serde_json::json!({"io.sysvisor.init": "systemd", "io.sysvisor.uid-base": "165536"}));
    let out = env.run(&["--root", "/r", "kill", "c1", "15"]);
    assert!(out.status.success());
    let out = env.run(&["--root", "/r", "kill", "c1", "9"]);
    assert!(out.status.success());
    assert_eq!(env.calls(), ["--root /r state c1", "--root /r kill c1 37", "--root /r kill c1 9"]);

    state(serde_json::json!({"io.sysvisor.uid-base": "165536"}));
    let out = env.run(&["--root", "/r", "kill", "c1", "TERM"]);
    assert!(out.status.success());
    assert_eq!(env.calls()[3..], ["--root /r state c1", "--root /r kill c1 TERM"]);
}

#[test]
fn exec_gets_every_capability_of_the_host() {
    let env = Env::new();
    let process = env.path("process.json");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker-exec-process.json");
    std::fs::copy(src, &process).unwrap();
    let out = env.run(&["--root", "/r", "exec", "--process", s(&process), "--detach", "c1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        env.calls(),
        [format!("--root /r exec --process {} --detach c1", process.display())]
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&process).unwrap()).unwrap();
    let host = sysvisor_runc::caps::host_bounding_set().unwrap();
    let bounding: Vec<String> = v["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    // In kernel order, and exactly the host's bounding set.
    assert_eq!(bounding, host);
}

#[test]
fn runc_must_exist_and_not_be_us() {
    let env = Env::new();
    let log = env.path("log.json");
    let out = Command::new(env!("CARGO_BIN_EXE_sysvisor-runc"))
        .args(["--log", s(&log), "--log-format", "json", "state", "c1"])
        .env("SYSVISOR_RUNC", env.path("missing-runc"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(env.last_error().starts_with("runc not found"), "{}", env.last_error());

    let out = Command::new(env!("CARGO_BIN_EXE_sysvisor-runc"))
        .args(["--log", s(&log), "--log-format", "json", "state", "c1"])
        .env("SYSVISOR_RUNC", env!("CARGO_BIN_EXE_sysvisor-runc"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(env.last_error().contains("is sysvisor-runc itself"), "{}", env.last_error());
}

#[test]
fn a_daemon_without_its_views_at_the_mountpoint_is_a_clear_error() {
    use std::io::{BufRead, BufReader, Write};
    let env = Env::new();
    // A daemon that answers every request with ok.
    let listener = std::os::unix::net::UnixListener::bind(env.path("no-daemon.sock")).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_ok() {
                let _ = (&stream).write_all(b"{\"ok\":true}\n");
            }
        }
    });
    let bundle = env.bundle("docker-run.json");
    let log = env.path("log.json");
    let out = env.run(&[
        "--log",
        s(&log),
        "--log-format",
        "json",
        "create",
        "--bundle",
        s(&bundle),
        "c1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let msg = env.last_error();
    assert!(
        msg.starts_with(&format!("sysvisor-fs views not found at {}", env.path("views").display())),
        "{msg}"
    );
    assert!(msg.contains("SYSVISOR_FS_MOUNTPOINT"), "{msg}");
    assert!(env.calls().is_empty());
    assert_eq!(std::fs::read_dir(&bundle).unwrap().count(), 1);
}
