//! The `createContainer` hook that mounts sysvisor-fs's dynamic trees, run as runc runs it
//! (the binary, the OCI state on stdin), in a private mount namespace (`unshare -m`) over
//! a fake rootfs. Root only (skipped otherwise); everything happens in the throwaway mount
//! namespace and a temporary directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use sysvisor_runc::mirrors::{MirrorMount, Plan, ANNOTATION, HOOK_COMMAND};

const BIN: &str = env!("CARGO_BIN_EXE_sysvisor-runc");

fn state(plan: &Plan) -> String {
    let plan = serde_json::to_string(plan).unwrap();
    serde_json::json!({
        "ociVersion": "1.0.2", "id": "c1", "status": "creating", "pid": 1, "bundle": "/b",
        "annotations": { ANNOTATION: plan },
    })
    .to_string()
}

/// Runs the hook on `rootfs` with `plan` in a new mount namespace, then `script` there;
/// returns (hook succeeded, script output).
fn run_hook(rootfs: &Path, plan: &Plan, script: &str) -> (bool, String) {
    let full = format!(
        "{BIN} {HOOK_COMMAND} {root} < \"$STATE\" || {{ echo hook-failed; exit 0; }}\n{script}",
        root = rootfs.display()
    );
    let dir = rootfs.parent().unwrap();
    let state_file = dir.join("state.json");
    fs::File::create(&state_file).unwrap().write_all(state(plan).as_bytes()).unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", &full])
        .env("STATE", &state_file)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{stderr}");
    (!text.contains("hook-failed"), format!("{text}{stderr}"))
}

fn mount(source: &Path, target: &str, writable: bool) -> MirrorMount {
    MirrorMount { source: source.to_path_buf(), target: target.into(), writable }
}

#[test]
fn the_hook_mounts_each_tree_with_its_flags_inside_the_rootfs() {
    if !sysvisor_skip::unless_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let rootfs = tmp.path().join("rootfs");
    for d in ["proc/sys", "sys/kernel"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    fs::write(src.join("proc/sys/marker"), "rw tree\n").unwrap();
    fs::write(src.join("sys/kernel/marker"), "ro tree\n").unwrap();
    for d in ["proc/sys", "sys/kernel", "etc"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    // A target that does not exist (no DMI table) is skipped; one reached through a symlink
    // pointing out of the rootfs resolves inside it (and so does not exist either).
    symlink("/etc", rootfs.join("sys/module")).unwrap();
    // The sysctls are written before the mounts, into what is there then (here a file
    // standing for the container's procfs entry, which the mount then covers).
    fs::create_dir_all(rootfs.join("proc/sys/net/ipv4")).unwrap();
    fs::write(rootfs.join("proc/sys/net/ipv4/ip_unprivileged_port_start"), "1024\n").unwrap();
    let plan = Plan {
        mounts: vec![
            mount(&src.join("proc/sys"), "/proc/sys", true),
            mount(&src.join("sys/kernel"), "/sys/kernel", false),
            mount(&src.join("sys/kernel"), "/sys/devices/virtual/dmi/id", false),
            mount(&src.join("sys/kernel"), "/sys/module/nf_conntrack/parameters", true),
        ],
        sysctl: [("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())].into(),
    };
    let root = rootfs.display();
    let script = format!(
        "cat {root}/proc/sys/marker {root}/sys/kernel/marker\n\
         grep ' {root}/' /proc/self/mountinfo | cut -d' ' -f5,6\n\
         touch {root}/proc/sys/new && echo rw-ok\n\
         touch {root}/sys/kernel/new 2>/dev/null || echo ro-refused\n"
    );
    let (ok, out) = run_hook(&rootfs, &plan, &script);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["rw tree", "ro tree"], "{out}");
    let mounts: Vec<&str> = lines.iter().filter(|l| l.starts_with('/')).copied().collect();
    assert_eq!(mounts.len(), 2, "only the existing targets: {out}");
    let proc_sys = mounts.iter().find(|l| l.contains("/proc/sys ")).expect("proc/sys mounted");
    assert!(proc_sys.contains("rw,nosuid,nodev,noexec"), "{proc_sys}");
    let kernel = mounts.iter().find(|l| l.contains("/sys/kernel ")).expect("sys/kernel mounted");
    assert!(kernel.contains("ro,nosuid,nodev,noexec"), "{kernel}");
    assert!(out.contains("rw-ok") && out.contains("ro-refused"), "{out}");
    // Nothing happened outside the mount namespace, nor in /etc.
    assert!(!Path::new("/etc/nf_conntrack").exists());
    assert!(src.join("proc/sys/new").exists(), "the rw tree took the write");
    let written = fs::read_to_string(rootfs.join("proc/sys/net/ipv4/ip_unprivileged_port_start"));
    assert_eq!(written.unwrap(), "0", "the sysctl was written before the mount");
}

#[test]
fn a_missing_source_fails_the_hook_with_a_clear_error() {
    if !sysvisor_skip::unless_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("proc/sys")).unwrap();
    let plan = Plan {
        mounts: vec![mount(&tmp.path().join("nope/proc/sys"), "/proc/sys", true)],
        ..Plan::default()
    };
    let (ok, out) = run_hook(&rootfs, &plan, "true");
    assert!(!ok);
    assert!(out.contains("cannot mount") && out.contains("clone the source"), "{out}");
    // A sysctl the container does not have: runc's error, from the hook.
    let plan = Plan { sysctl: [("kernel.nope".into(), "1".into())].into(), ..Plan::default() };
    let (ok, out) = run_hook(&rootfs, &plan, "true");
    assert!(!ok);
    assert!(out.contains("cannot set sysctl kernel.nope=\"1\""), "{out}");
    // Nothing to do: success.
    let (ok, _) = run_hook(&rootfs, &Plan::default(), "true");
    assert!(ok);
}
