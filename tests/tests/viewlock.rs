//! The views are locked before a container's first instruction, or the container does not
//! run (issue 11, item 5; docs/security.md "View locking and fairness").
//!
//! Each attack is the container's entrypoint itself, so it runs as the very first thing:
//! moving, unmounting, `open_tree`+`move_mount` of, and shallow copies without the views
//! of `/proc/meminfo`, `/proc` and a sysfs view, as root and as uid 1000 through its own
//! `unshare -Urm`. All must fail and `/proc/meminfo` must still show the container's limit.
//! The same attacks run against a daemon that behaves as on a kernel without
//! MOVE_MOUNT_BENEATH (the hidden test switch) with `--allow-unlocked-views`, where only the
//! trap's checks by mount identity stand in the way; without the opt-in such a daemon
//! makes `docker run` fail with the reason.
//!
//! Needs root, Docker (the harness's private engine) and gcc with a static libc for the
//! `open_tree`/`move_mount` tool (tests/tools/viewattack.c; installed by the harness).

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use sysvisor_e2e::{leaks, Engine, RUNTIME};

/// The MemTotal of a container with `-m 256m`, in kB.
const LIMIT_KB: &str = "262144";

/// The attacks; each prints `NAME=ok` or `NAME=fail:<error>`, then `after_NAME=<MemTotal>`.
const ATTACKS: &str = r#"
mem() { head -1 /proc/meminfo | tr -s " " | cut -d" " -f2; }
t() { n=$1; shift; if o=$("$@" 2>&1); then echo "$n=ok"; else echo "$n=fail:$(echo $o | tr '\n' ' ')"; fi; echo "after_$n=$(mem)"; }
tool() { n=$1; shift; echo "$n=$(/t/viewattack "$@" 2>&1)"; echo "after_$n=$(mem)"; }
cd /w && mkdir -p d1 d2 d3 && touch f1 f2 f3 f4 fake
echo "first=$(mem)"
t move_view mount --move /proc/meminfo /w/f1
t umount_view umount /proc/meminfo
t umount_lazy umount -l /proc/meminfo
t umount_sys_view umount /sys/devices/system/cpu/online
t bind_shallow mount --bind /proc /w/d1
echo "d1=$(head -1 /w/d1/meminfo 2>&1)"
tool open_tree_move move_attached /proc/meminfo /w/f2
tool opath_move move_opath /proc/meminfo /w/f3
tool clone_shallow clone_shallow /proc /w/d2
echo "d2=$(head -1 /w/d2/meminfo 2>&1)"
tool sys_open_tree_move move_attached /sys/devices/system/cpu/online /w/f4
echo "MemTotal: 1 kB" > /w/fake
t bind_over mount --bind /w/fake /proc/meminfo
echo "over=$(mem)"
t umount_bind_over umount /proc/meminfo
t umount_again umount /proc/meminfo
echo "last=$(mem)"
"#;

/// The attacks that must fail.
const REFUSED: &[&str] = &[
    "move_view",
    "umount_view",
    "umount_lazy",
    "umount_sys_view",
    "bind_shallow",
    "open_tree_move",
    "opath_move",
    "clone_shallow",
    "sys_open_tree_move",
    "umount_again",
];

fn host_mem_total_kb() -> String {
    let text = fs::read_to_string("/proc/meminfo").unwrap();
    text.lines().next().unwrap().split_whitespace().nth(1).unwrap().to_string()
}

/// Runs the attacks as the entrypoint of a new container, as root or as uid 1000 in its
/// own user and mount namespaces, and checks that every one failed and the view stayed.
#[track_caller]
fn assert_attacks_fail(e: &Engine, tool: &Path, as_user: bool) {
    let host_kb = host_mem_total_kb();
    assert_ne!(host_kb, LIMIT_KB);
    let volume = format!("{}:/t:ro", tool.display());
    let mut options =
        vec!["--runtime", RUNTIME, "-m", "256m", "--tmpfs", "/w:mode=1777", "-v", &volume];
    let command: Vec<&str> = if as_user {
        options.extend(["--user", "1000:1000"]);
        vec!["unshare", "-Urm", "sh", "-c", ATTACKS]
    } else {
        vec!["sh", "-c", ATTACKS]
    };
    let out = e.run_fg(&options, &command).expect_success();
    let f = out.fields();
    let who = if as_user { "uid 1000 (unshare -Urm)" } else { "root" };
    let field = |key: &str| f.get(key).cloned().unwrap_or_else(|| panic!("no {key}: {out}"));
    assert_eq!(field("first"), LIMIT_KB, "{who}: {out}");
    for key in REFUSED {
        assert!(field(key).starts_with("fail:"), "{who}: {key} got through: {out}");
    }
    for (key, value) in &f {
        if key.starts_with("after_") && key != "after_bind_over" {
            assert_eq!(value, LIMIT_KB, "{who}: /proc/meminfo {key}: {out}");
        }
    }
    // Hiding a view behind one's own file is allowed, and unmounting it shows the view again.
    assert_eq!(field("bind_over"), "ok", "{who}: {out}");
    assert_eq!(field("over"), "1", "{who}: {out}");
    assert_eq!(field("umount_bind_over"), "ok", "{who}: {out}");
    assert_eq!(field("last"), LIMIT_KB, "{who}: {out}");
    assert!(!out.stdout.contains(&host_kb), "{who}: the host's {host_kb} kB showed: {out}");
}

/// Nothing of the trap is left on the host: no mount on its stage directory, no helper.
#[track_caller]
fn assert_trap_clean() {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.contains("mounttrap-stage"), "mounts on the stage directory");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leaks::pids_with_cmdline("__mounttrap-helper").is_empty() {
        assert!(Instant::now() < deadline, "mount helpers still running");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn attacks_on_the_views_as_the_first_instruction_fail() {
    let Some(e) = Engine::get() else { return };
    let Some(tool) = sysvisor_e2e::static_tool("viewattack") else { return };
    assert_attacks_fail(&e, &tool, false);
    assert_attacks_fail(&e, &tool, true);
    assert_trap_clean();
}

const PRETEND: (&str, &str) = ("SYSVISOR_FS_TEST_PRETEND_NO_MOVE_MOUNT_BENEATH", "1");

/// On a kernel without MOVE_MOUNT_BENEATH (pretended): refused with the reason unless the
/// host opted in; with the opt-in the trap alone holds against every attack.
#[test]
fn without_move_mount_beneath_containers_are_refused_unless_the_host_opts_in() {
    let Some(e) = Engine::exclusive() else { return };
    let Some(tool) = sysvisor_e2e::static_tool("viewattack") else { return };
    let Some(_plain_after) = e.fs_daemon_with(&[], &[PRETEND]) else { return };
    let before = e.containers();
    let out = e.run_fg(&["--runtime", RUNTIME, "-m", "256m"], &["head", "-1", "/proc/meminfo"]);
    assert!(!out.success(), "a container with unlocked views ran: {out}");
    let message = format!("{}{}", out.stdout, out.stderr);
    assert!(message.contains("MOVE_MOUNT_BENEATH"), "docker run should say why: {out}");
    assert!(message.contains("--allow-unlocked-views"), "and what the host can do: {out}");
    assert!(!out.stdout.contains("MemTotal"), "the container's process ran: {out}");
    assert_eq!(e.containers(), before, "the refused container is gone");
    assert_trap_clean();

    e.stop_fs_daemon().expect("stop the daemon");
    e.start_fs_daemon_with(&["--allow-unlocked-views"], &[PRETEND]).expect("start the daemon");
    assert_attacks_fail(&e, &tool, false);
    assert_attacks_fail(&e, &tool, true);
    assert_trap_clean();
}
