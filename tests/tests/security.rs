//! What the user asks of a system container's security settings is honoured, and bind
//! mounts give container root no power over host files (docs/security.md).
//!
//! Capabilities: `--cap-drop ALL` leaves none, `--cap-drop X` removes just X, `--cap-drop
//! ALL --cap-add ...` gives exactly those. Seccomp: a user's profile is enforced inside, with
//! the mount trap still serving the views; `unconfined` still gets the system profile.
//! Bind mounts: attacks as root and as uid 1000 inside through a `-v` bind, unshifted (the
//! default) and shifted on request.
//!
//! Needs root and the harness's private Docker engine, like docker.rs.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sysvisor_e2e::{
    parse_uid_map, scratch_dir, Container, Engine, IdMap, Output, EXEC_ROOT, RANGE, RUNTIME,
};

/// The capability sets of `status` (a /proc/PID/status text): (CapEff, CapBnd) masks.
fn cap_masks(status: &str) -> (u64, u64) {
    let mask = |key: &str| {
        let line = status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| {
            panic!("no {key} in status:\n{status}");
        });
        u64::from_str_radix(line.trim(), 16).unwrap_or_else(|_| panic!("bad {key} {line}"))
    };
    (mask("CapEff:"), mask("CapBnd:"))
}

/// The capability masks of the container's shell, and of `docker exec`.
fn masks_inside(c: &Container) -> (u64, u64) {
    cap_masks(&c.exec(&["cat", "/proc/self/status"]).expect_success().stdout)
}

/// The host's bounding set (what a system container gets by default).
fn host_bounding() -> u64 {
    cap_masks(&fs::read_to_string("/proc/self/status").unwrap()).1
}

const CAP_KILL: u64 = 1 << 5;
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;
const CAP_SYS_ADMIN: u64 = 1 << 21;

fn range_of(c: &Container) -> IdMap {
    let out = c.exec(&["cat", "/proc/self/uid_map"]).expect_success();
    let map = parse_uid_map(&out.stdout).unwrap_or_else(|| panic!("bad uid_map: {out}"));
    assert_ne!(map.outside, 0, "container root is host root: {map:?}");
    assert_eq!(map.count, RANGE);
    map
}

fn remove(e: &Engine, c: Container<'_>) {
    let id = c.id();
    let range = c.uid_map();
    assert!(c.remove().success());
    e.assert_no_leaks(&id, range);
}

/// `docker exec -u UID CONTAINER sh -c SCRIPT`.
fn sh_as(e: &Engine, c: &Container, uid: u32, script: &str) -> Output {
    e.docker(&["exec", "-u", &uid.to_string(), &c.id(), "sh", "-c", script])
}

// ---- capabilities ---------------------------------------------------------------------

#[test]
fn cap_drop_all_leaves_no_capability_inside() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["--cap-drop", "ALL"]);
    range_of(&c);
    let init = fs::read_to_string(format!("/proc/{}/status", c.pid().unwrap())).unwrap();
    assert_eq!(cap_masks(&init), (0, 0), "the container's init: CapEff, CapBnd");
    assert_eq!(masks_inside(&c), (0, 0), "docker exec: CapEff, CapBnd");
    // Root without capabilities cannot mount, chown or read what it does not own.
    let out = c.sh("mkdir -p /m && mount -t tmpfs t /m");
    assert!(out.status.is_some() && !out.success(), "mount without capabilities: {out}");
    let out = c.sh("touch /f && chmod 000 /f && cat /f");
    assert!(out.status.is_some() && !out.success(), "DAC override without capabilities: {out}");
    remove(&e, c);
}

#[test]
fn cap_drop_one_removes_just_that_one() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["--cap-drop", "NET_RAW"]);
    let (eff, bnd) = masks_inside(&c);
    assert_eq!(bnd, host_bounding() & !CAP_NET_RAW, "bounding: the host's set but NET_RAW");
    assert_eq!(eff, bnd, "effective");
    // What a system container needs is still there.
    assert_ne!(eff & CAP_SYS_ADMIN, 0);
    c.sh("mkdir -p /m && mount -t tmpfs t /m && umount /m").expect_success();
    remove(&e, c);
}

#[test]
fn cap_add_after_cap_drop_all_gives_exactly_those() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "--cap-add", "KILL"]);
    assert_eq!(masks_inside(&c), (CAP_NET_ADMIN | CAP_KILL, CAP_NET_ADMIN | CAP_KILL));
    c.sh("ip link set lo down && ip link set lo up").expect_success();
    let out = c.sh("mkdir -p /m && mount -t tmpfs t /m");
    assert!(out.status.is_some() && !out.success(), "mount without CAP_SYS_ADMIN: {out}");
    remove(&e, c);

    // --cap-add alone: every capability, as without it.
    let c = e.start_system(&["--cap-add", "SYS_PTRACE"]);
    assert_eq!(masks_inside(&c).1, host_bounding());
    remove(&e, c);
}

// ---- seccomp --------------------------------------------------------------------------

/// `seccomp=FILE` for a profile written to the scratch directory `name` (one per test:
/// they run in parallel; removed with the guard).
fn profile_option(name: &str, profile: serde_json::Value) -> (String, RemoveDir) {
    let dir = scratch_dir(name);
    let path = dir.join("profile.json");
    fs::write(&path, profile.to_string()).unwrap();
    (format!("seccomp={}", path.display()), RemoveDir(dir))
}

/// The system call names with a rule in the seccomp filter runc loaded for the container,
/// and its listener path (from runc's state of the container).
fn loaded_filter(c: &Container) -> (Vec<String>, String) {
    let state = Path::new(EXEC_ROOT).join("runtime-runc/moby").join(c.id()).join("state.json");
    let text = fs::read_to_string(&state).unwrap_or_else(|e| panic!("{}: {e}", state.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let seccomp = &v["config"]["seccomp"];
    let names = seccomp["syscalls"]
        .as_array()
        .unwrap_or_else(|| panic!("no seccomp rules in {}: {seccomp}", state.display()))
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_string))
        .collect();
    (names, seccomp["listener_path"].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_users_seccomp_profile_is_enforced_and_the_views_still_served() {
    let Some(e) = Engine::get() else { return };
    let denied = ["mkdir", "mkdirat", "chmod", "fchmod", "fchmodat", "fchmodat2"];
    let (opt, _cleanup) = profile_option(
        "seccomp-user",
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": denied, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM}]
        }),
    );
    let c = e.start_system(&["-m", "256m", "--security-opt", &opt]);
    range_of(&c);
    for script in ["mkdir /blocked", "chmod 600 /etc/passwd"] {
        let out = c.sh(script);
        assert!(out.status.is_some() && !out.success(), "{script} must be refused: {out}");
        assert!(out.stderr.contains("not permitted"), "{script}: {out}");
    }
    // Everything else runs, and proc mounts still go to the trap (the container's memory).
    let out = c
        .sh("touch /allowed && rm /allowed && cd /tmp && mount -t proc proc /tmp && head -1 /tmp/meminfo")
        .expect_success();
    assert!(out.out().contains("262144 kB"), "the trap's view in a new proc mount: {out}");
    let status = c.exec(&["cat", "/proc/self/status"]).expect_success().stdout;
    assert!(status.contains("Seccomp:\t2"), "{status}");
    // The loaded filter: the user's rules, the deny list, the trap.
    let (names, listener) = loaded_filter(&c);
    for name in ["mkdir", "chmod", "kexec_load", "init_module", "mount", "umount2"] {
        assert!(names.iter().any(|n| n == name), "no rule for {name} in the filter: {names:?}");
    }
    assert!(listener.ends_with("seccomp.sock"), "listener path {listener:?}");
    remove(&e, c);
}

#[test]
fn seccomp_unconfined_still_gets_the_system_profile() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["-m", "256m", "--security-opt", "seccomp=unconfined"]);
    let status = c.exec(&["cat", "/proc/self/status"]).expect_success().stdout;
    assert!(status.contains("Seccomp:\t2"), "filter mode expected: {status}");
    let out = c.sh("mkdir -p /p && mount -t proc proc /p && head -1 /p/meminfo").expect_success();
    assert!(out.out().contains("262144 kB"), "the trap serves the views: {out}");
    remove(&e, c);
}

#[test]
fn a_profile_that_cannot_be_merged_is_a_clear_error() {
    let Some(e) = Engine::get() else { return };
    let (opt, _cleanup) = profile_option(
        "seccomp-conditional",
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO",
                          "args": [{"index": 3, "value": 1, "op": "SCMP_CMP_EQ"}]}]
        }),
    );
    let (c, out) = e.run_detached(&["--runtime", RUNTIME, "--security-opt", &opt], &["true"]);
    assert!(!out.success(), "docker run should have failed: {out}");
    assert!(out.stderr.contains("argument conditions on mount"), "{out}");
    drop(c);
}

// ---- bind mounts ----------------------------------------------------------------------

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A host directory on the root disk (not a nodev tmpfs, which would prove less), mode
/// 0777 so that anyone inside may write, holding a host-root file `host-file` (0644).
fn host_dir(name: &str) -> (PathBuf, RemoveDir) {
    let dir = Path::new("/var/lib/sysvisor-e2e").join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(dir.join("host-file"), "host\n").unwrap();
    fs::set_permissions(dir.join("host-file"), fs::Permissions::from_mode(0o644)).unwrap();
    (dir.clone(), RemoveDir(dir))
}

/// The attacks of root (`who` = root) or uid 1000 inside on the bind at /x. Each prints
/// `NAME=ok` when it got through; what is refused prints nothing.
fn attack(who: &str) -> String {
    format!(
        "cp /bin/busybox /x/suid-{who} && chmod 4755 /x/suid-{who} && echo copy=ok
         chown 0:0 /x/suid-{who} && chmod 4755 /x/suid-{who} && echo chown_root=ok
         mknod /x/disk-{who} b 8 0 2>/dev/null && echo mknod=ok
         echo pwned >> /x/host-file 2>/dev/null && echo write_host_file=ok
         chmod 4777 /x/host-file 2>/dev/null && echo chmod_host_file=ok
         chown {who} /x/host-file 2>/dev/null && echo chown_host_file=ok
         true"
    )
}

/// Every entry below `dir` but `dir` and `host-file`: (path, uid, gid, mode, is a device).
fn created(dir: &Path) -> Vec<(PathBuf, u32, u32, u32, bool)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == "host-file" {
            continue;
        }
        let m = fs::symlink_metadata(entry.path()).unwrap();
        let device = m.file_type().is_block_device() || m.file_type().is_char_device();
        out.push((entry.path(), m.uid(), m.gid(), m.mode(), device));
    }
    out
}

#[test]
fn an_unshifted_bind_gives_container_root_no_host_root_files() {
    let Some(e) = Engine::get() else { return };
    let (dir, _cleanup) = host_dir("bind-attack");
    let volume = format!("{}:/x", dir.display());
    let c = e.start_system(&["-v", &volume]);
    let range = range_of(&c);
    let gid_out = c.exec(&["cat", "/proc/self/gid_map"]).expect_success();
    let gids = parse_uid_map(&gid_out.stdout).unwrap_or_else(|| panic!("bad gid_map: {gid_out}"));

    // Host root's file shows as nobody and cannot be touched.
    let out = c.sh("stat -c '%u:%g' /x/host-file").expect_success();
    assert_eq!(out.out(), "65534:65534", "a host root file seen from inside: {out}");
    let root = c.sh(&attack("root")).expect_success().fields();
    let user = sh_as(&e, &c, 1000, &attack("1000")).expect_success().fields();
    // Docker's own /etc/hosts: root inside owns it, the host sees the range.
    c.sh("chmod 4755 /etc/hosts && echo '# e2e' >> /etc/hosts").expect_success();
    let hosts = c.inspect("{{.HostsPath}}").expect("HostsPath");

    for (who, f) in [("root", &root), ("1000", &user)] {
        assert_eq!(f.get("copy").map(String::as_str), Some("ok"), "{who}: {f:?}");
        for refused in ["mknod", "write_host_file", "chmod_host_file", "chown_host_file"] {
            assert!(!f.contains_key(refused), "{who} inside got through: {refused} ({f:?})");
        }
    }
    assert!(!user.contains_key("chown_root"), "uid 1000 chowned to root: {user:?}");

    let host_file = fs::metadata(dir.join("host-file")).unwrap();
    assert_eq!((host_file.uid(), host_file.mode() & 0o7777), (0, 0o644));
    assert_eq!(fs::read_to_string(dir.join("host-file")).unwrap(), "host\n");
    let made = created(&dir);
    assert_eq!(made.len(), 2, "the two copies: {made:?}");
    for (path, uid, gid, mode, device) in made {
        assert!(!device, "a device node on the host: {}", path.display());
        assert!(
            range.contains_host(uid) && gids.contains_host(gid),
            "{} created with host ids {uid}:{gid}, outside the range {range:?} (mode {mode:o})",
            path.display()
        );
    }
    assert_eq!(fs::metadata(dir.join("suid-root")).unwrap().uid(), range.outside);
    assert_eq!(fs::metadata(dir.join("suid-1000")).unwrap().uid(), range.outside + 1000);
    let hosts = fs::metadata(hosts).unwrap();
    assert_eq!(hosts.uid(), range.outside, "Docker's hosts file on the host");
    remove(&e, c);
}

#[test]
fn a_shifted_bind_is_asked_for_and_nosuid_nodev() {
    let Some(e) = Engine::get() else { return };
    let (dir, _cleanup) = host_dir("bind-shift");
    let volume = format!("{}:/x", dir.display());
    let c = e.start_system(&["-v", &volume, "-e", "SYSVISOR_SHIFT_BINDS=/x"]);
    let range = range_of(&c);
    // The documented trade-off: container root is host root on this path.
    let out = c.sh("stat -c '%u:%g' /x/host-file && echo more >> /x/host-file && touch /x/by-root && stat -c '%u' /x/by-root").expect_success();
    assert_eq!(out.out(), "0:0\n0", "{out}");
    assert_eq!(fs::metadata(dir.join("by-root")).unwrap().uid(), 0);
    // But nothing setuid nor any device works through it inside.
    let opts = c.sh("awk '$5 == \"/x\" {print $6}' /proc/self/mountinfo").expect_success().out();
    let opts: Vec<&str> = opts.split(',').collect();
    assert!(opts.contains(&"nosuid") && opts.contains(&"nodev"), "mount options of /x: {opts:?}");
    for script in ["mknod /x/disk b 8 0", "mknod /x/null c 1 3"] {
        let out = c.sh(script);
        assert!(out.status.is_some() && !out.success(), "{script}: {out}");
        let out = sh_as(&e, &c, 1000, script);
        assert!(out.status.is_some() && !out.success(), "uid 1000: {script}: {out}");
    }
    // uid 1000 inside is refused the host root's files.
    let out = sh_as(&e, &c, 1000, "echo x >> /x/host-file");
    assert!(out.status.is_some() && !out.success(), "uid 1000 wrote a root file: {out}");
    assert!(range.outside > 0);
    remove(&e, c);
}

#[test]
fn a_shift_request_naming_no_bind_is_a_clear_error() {
    let Some(e) = Engine::get() else { return };
    let (c, out) =
        e.run_detached(&["--runtime", RUNTIME, "-e", "SYSVISOR_SHIFT_BINDS=/nothing"], &["true"]);
    assert!(!out.success(), "docker run should have failed: {out}");
    assert!(out.stderr.contains("SYSVISOR_SHIFT_BINDS asks to id-shift \"/nothing\""), "{out}");
    drop(c);
}
