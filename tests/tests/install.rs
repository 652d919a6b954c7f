//! scripts/install.sh, staged with `--destdir` (no root, nothing started): what it writes,
//! that a second run changes nothing, that `--uninstall` restores what was there, and that
//! a bad daemon.json stops it before it changes anything.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sysvisor_e2e::cmd::{self, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install.sh")
}

struct Stage {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Stage {
    fn new() -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fake-binary");
        fs::write(&bin, "#!/bin/sh\necho fake\n").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        Stage { dir, bin }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn path(&self, p: &str) -> PathBuf {
        self.root().join(p.trim_start_matches('/'))
    }

    fn write(&self, p: &str, text: &str) {
        let path = self.path(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn read(&self, p: &str) -> String {
        fs::read_to_string(self.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn run(&self, extra: &[&str]) -> Output {
        let mut c = Command::new("bash");
        c.arg(script()).arg("--destdir").arg(self.root());
        if !extra.contains(&"--uninstall") {
            c.arg("--fs-bin").arg(&self.bin).arg("--runc-bin").arg(&self.bin);
        }
        c.args(extra);
        cmd::run(&mut c, None, Duration::from_secs(60))
    }

    /// Every file under the stage with its content, sorted.
    fn snapshot(&self) -> Vec<(String, String)> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    let rel = path.strip_prefix(base).unwrap().display().to_string();
                    out.push((rel, fs::read_to_string(&path).unwrap_or_default()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root(), &self.root(), &mut out);
        out.sort();
        out
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn fresh_install_writes_everything_and_is_idempotent() {
    let s = Stage::new();
    let out = s.run(&[]).expect_success();
    for bin in ["usr/local/bin/sysvisor-fs", "usr/local/bin/sysvisor-runc"] {
        let mode = fs::metadata(s.path(bin)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755, "{bin}");
        assert_eq!(s.read(bin), "#!/bin/sh\necho fake\n");
    }
    let unit = s.read("etc/systemd/system/sysvisor-fs.service");
    assert!(unit.lines().any(|l| l == "ExecStart=/usr/local/bin/sysvisor-fs serve"), "{unit}");
    assert!(unit.lines().any(|l| l == "Restart=on-failure"), "{unit}");
    for f in ["etc/subuid", "etc/subgid"] {
        assert_eq!(s.read(f), "sysvisor:131072:67108864\n", "{f}");
    }
    let config = json(&s.read("etc/docker/daemon.json"));
    assert_eq!(
        config,
        serde_json::json!({"runtimes": {"sysvisor-runc": {"path": "/usr/local/bin/sysvisor-runc"}}})
    );
    assert!(out.stdout.contains("nothing started"), "{out}");

    let before = s.snapshot();
    let again = s.run(&[]).expect_success();
    assert_eq!(s.snapshot(), before, "a second run changed files: {again}");
    assert!(!again.stdout.contains("installed:") && !again.stdout.contains("added"), "{again}");

    s.run(&["--uninstall"]).expect_success();
    let left: Vec<String> =
        s.snapshot().into_iter().filter(|(_, text)| !text.is_empty()).map(|(p, _)| p).collect();
    assert!(left.is_empty(), "left after --uninstall: {left:?}");
    assert!(!s.path("etc/docker/daemon.json").exists(), "an empty daemon.json is removed");
}

#[test]
fn existing_config_is_merged_and_restored_by_uninstall() {
    let s = Stage::new();
    let config = r#"{"log-level": "warn", "runtimes": {"crun": {"path": "/usr/bin/crun"}},
        "default-runtime": "runc"}"#;
    s.write("etc/docker/daemon.json", config);
    s.write("etc/subuid", "alice:100000:65536\nbob:165536:65536");
    s.write("etc/subgid", "alice:100000:65536\ncarol:300000:10\n");
    s.run(&[]).expect_success();
    let merged = json(&s.read("etc/docker/daemon.json"));
    assert_eq!(merged["log-level"], "warn");
    assert_eq!(merged["default-runtime"], "runc");
    assert_eq!(merged["runtimes"]["crun"]["path"], "/usr/bin/crun");
    assert_eq!(merged["runtimes"]["sysvisor-runc"]["path"], "/usr/local/bin/sysvisor-runc");
    // BASE: after every entry of both files (carol ends at 300010), 65536-aligned.
    assert_eq!(
        s.read("etc/subuid"),
        "alice:100000:65536\nbob:165536:65536\nsysvisor:327680:67108864\n"
    );
    assert_eq!(
        s.read("etc/subgid"),
        "alice:100000:65536\ncarol:300000:10\nsysvisor:327680:67108864\n"
    );

    s.run(&["--uninstall"]).expect_success();
    assert_eq!(json(&s.read("etc/docker/daemon.json")), json(config));
    assert_eq!(s.read("etc/subuid"), "alice:100000:65536\nbob:165536:65536\n");
    assert_eq!(s.read("etc/subgid"), "alice:100000:65536\ncarol:300000:10\n");
    assert!(!s.path("usr/local/bin/sysvisor-runc").exists());
}

#[test]
fn an_existing_sysvisor_entry_is_kept() {
    let s = Stage::new();
    s.write("etc/subuid", "sysvisor:1000000:131072\n");
    s.write("etc/subgid", "");
    s.run(&[]).expect_success();
    assert_eq!(s.read("etc/subuid"), "sysvisor:1000000:131072\n");
    // The other file gets a range after every entry of both.
    assert_eq!(s.read("etc/subgid"), "sysvisor:1179648:67108864\n");
}

#[test]
fn prefix_is_used_everywhere() {
    let s = Stage::new();
    s.run(&["--prefix", "/opt/sysvisor"]).expect_success();
    assert!(s.path("opt/sysvisor/bin/sysvisor-fs").exists());
    let unit = s.read("etc/systemd/system/sysvisor-fs.service");
    assert!(unit.contains("ExecStart=/opt/sysvisor/bin/sysvisor-fs serve"), "{unit}");
    let config = json(&s.read("etc/docker/daemon.json"));
    assert_eq!(config["runtimes"]["sysvisor-runc"]["path"], "/opt/sysvisor/bin/sysvisor-runc");
}

#[test]
fn a_bad_daemon_json_stops_the_install_before_any_change() {
    for bad in ["{not json", "[1, 2]", r#"{"runtimes": 3}"#] {
        let s = Stage::new();
        s.write("etc/docker/daemon.json", bad);
        let out = s.run(&[]).expect_failure();
        assert!(out.stderr.contains("daemon.json"), "{out}");
        assert_eq!(s.snapshot().len(), 1, "files written despite {bad:?}: {:?}", s.snapshot());
        assert_eq!(s.read("etc/docker/daemon.json"), bad);
    }
}

#[test]
fn half_given_binaries_are_refused() {
    let s = Stage::new();
    let mut c = Command::new("bash");
    c.arg(script()).arg("--destdir").arg(s.root()).arg("--fs-bin").arg(&s.bin);
    let out = cmd::run(&mut c, None, Duration::from_secs(30)).expect_failure();
    assert!(out.stderr.contains("--runc-bin"), "{out}");
}
