//! The mount trap through a real Docker engine: proc and sysfs mounts inside system
//! containers get the virtual views, and nothing a container does with mount, umount or a
//! new mount namespace uncovers the host's files (see docs/mounttrap.md).
//!
//! Needs root; the harness sets up the engine, the image and the sysvisor-fs daemon (see
//! `sysvisor_e2e`). Each test removes its containers and checks that nothing is left,
//! including mounts on the trap's stage directory and helper processes.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sysvisor_e2e::{cmd, leaks, Container, Engine};

/// Runs `name=ok` / `name=fail:<message>` checks: the script defines `t NAME CMD...`.
const PRELUDE: &str = r#"
t() { n=$1; shift; if o=$("$@" 2>&1); then echo "$n=ok"; else echo "$n=fail:$(echo $o | tr '\n' ' ')"; fi; }
"#;

/// Runs a script (with [`PRELUDE`]) in the container and returns its fields.
#[track_caller]
fn checks(c: &Container, script: &str) -> HashMap<String, String> {
    let out = c.sh(&format!("{PRELUDE}\n{script}")).expect_success();
    out.fields()
}

#[track_caller]
fn field<'a>(f: &'a HashMap<String, String>, key: &str) -> &'a str {
    f.get(key).map(String::as_str).unwrap_or_else(|| panic!("no {key} in {f:#?}"))
}

#[track_caller]
fn assert_ok(f: &HashMap<String, String>, key: &str) {
    assert_eq!(field(f, key), "ok", "{key} should have worked: {f:#?}");
}

/// The check failed, with `error` in its message.
#[track_caller]
fn assert_refused(f: &HashMap<String, String>, key: &str, error: &str) {
    let value = field(f, key);
    assert!(value.starts_with("fail:"), "{key} should have failed: {f:#?}");
    assert!(value.contains(error), "{key} should fail with {error:?}, got {value:?}");
}

/// The MemTotal of a container with `-m 256m`, in kB.
const LIMIT_KB: &str = "262144";

fn host_mem_total_kb() -> String {
    let text = fs::read_to_string("/proc/meminfo").unwrap();
    text.lines().next().unwrap().split_whitespace().nth(1).unwrap().to_string()
}

/// Removes the container and checks that nothing of it (or of the trap) is left.
#[track_caller]
fn remove(e: &Engine, c: Container<'_>) {
    leaks::remove_and_assert_clean(e, c);
}

#[test]
fn unshare_mount_proc_shows_the_containers_views() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["-m", "256m", "--cpus", "1"]);
    let f = checks(
        &c,
        r#"
        unshare -fmp --mount-proc sh -c '
            echo pid=$$
            echo mem=$(head -1 /proc/meminfo | tr -s " " | cut -d" " -f2)
            echo cpus=$(grep -c ^processor /proc/cpuinfo)
            echo pids=$(ls /proc | grep -c "^[0-9]")
            echo up=$(cut -d. -f1 /proc/uptime)
            echo meminfo_fs=$(grep " /proc/meminfo " /proc/self/mountinfo | tail -1 | sed "s/.* - //" | cut -d" " -f1)'
        # A user namespace of its own inside (the kernel alone refuses this one).
        unshare -Urfmp --mount-proc sh -c '
            echo userns_mem=$(head -1 /proc/meminfo | tr -s " " | cut -d" " -f2)
            echo userns_pid=$$'
        echo after=$(head -1 /proc/meminfo | tr -s " " | cut -d" " -f2)
        "#,
    );
    assert_eq!(field(&f, "pid"), "1", "a new pid namespace: {f:#?}");
    assert_eq!(field(&f, "mem"), LIMIT_KB, "the container's limit: {f:#?}");
    assert_eq!(field(&f, "cpus"), "1", "{f:#?}");
    let pids: u32 = field(&f, "pids").parse().unwrap();
    assert!(pids <= 5, "only the new namespace's processes: {f:#?}");
    let up: u64 = field(&f, "up").parse().unwrap();
    // The container started seconds ago; on a host up longer than that, the host's uptime
    // would show.
    assert!(up < 120, "uptime of the container, not of the host: {f:#?}");
    let host_up = fs::read_to_string("/proc/uptime").unwrap();
    let host_up: f64 = host_up.split_whitespace().next().unwrap().parse().unwrap();
    if host_up < 180.0 {
        sysvisor_skip::optional(&format!(
            "partly: the host is up {host_up} s, too little to tell its uptime from the container's"
        ));
    }
    assert_eq!(field(&f, "meminfo_fs"), "fuse.sysvisor-fs", "{f:#?}");
    assert_eq!(field(&f, "userns_mem"), LIMIT_KB, "{f:#?}");
    assert_eq!(field(&f, "userns_pid"), "1", "{f:#?}");
    assert_eq!(field(&f, "after"), LIMIT_KB, "{f:#?}");
    remove(&e, c);
}

#[test]
fn proc_and_sysfs_mounted_anywhere_carry_views_masks_and_read_only_paths() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["-m", "256m", "--cpus", "1"]);
    let f = checks(
        &c,
        r#"
        mkdir -p /p /s
        t proc mount -t proc proc /p
        echo mem=$(head -1 /p/meminfo | tr -s " " | cut -d" " -f2)
        echo keys_bytes=$(wc -c < /p/keys)
        echo acpi_entries=$(ls /p/acpi | wc -l)
        t sysctl_write sh -c 'echo 1 > /p/sys/kernel/printk_ratelimit'
        t sysctl_emulated sh -c 'echo 7 > /p/sys/kernel/panic'
        echo panic=$(cat /proc/sys/kernel/panic)
        echo bus_options=$(grep " /p/bus " /proc/self/mountinfo | cut -d" " -f6)
        t write_ro_path sh -c 'echo 1 > /p/irq/default_smp_affinity'
        t umount_view umount /p/meminfo
        t umount_mask umount /p/keys
        t umount_ro umount /p/bus
        t umount_sys umount /p/sys
        echo mem_after=$(head -1 /p/meminfo | tr -s " " | cut -d" " -f2)
        t umount_whole umount /p
        echo p_mounts=$(grep -cE " /p(/| )" /proc/self/mountinfo)
        t proc_options mount -t proc -o ro,hidepid=2 proc /p
        echo p_options=$(grep " /p " /proc/self/mountinfo | cut -d" " -f6)
        umount -l /p

        t sysfs mount -t sysfs sysfs /s
        echo online=$(cat /s/devices/system/cpu/online)
        echo own_online=$(cat /sys/devices/system/cpu/online)
        echo firmware_entries=$(ls /s/firmware | wc -l)
        t umount_sys_view umount /s/devices/system/cpu/online
        t umount_sys_whole umount /s
        echo s_mounts=$(grep -cE " /s(/| )" /proc/self/mountinfo)
        "#,
    );
    assert_ok(&f, "proc");
    assert_eq!(field(&f, "mem"), LIMIT_KB, "{f:#?}");
    assert_eq!(field(&f, "keys_bytes"), "0", "/proc/keys masked: {f:#?}");
    assert_eq!(field(&f, "acpi_entries"), "0", "/proc/acpi masked: {f:#?}");
    // /proc/sys is the sysctl mirror (writable for the container's own sysctls only), the
    // others of Docker's read-only paths are read-only binds.
    assert_refused(&f, "sysctl_write", "Permission denied");
    assert_ok(&f, "sysctl_emulated");
    assert_eq!(field(&f, "panic"), "7", "an emulated sysctl written through the new proc: {f:#?}");
    assert!(field(&f, "bus_options").starts_with("ro,"), "{f:#?}");
    assert_refused(&f, "write_ro_path", "Read-only file system");
    assert_refused(&f, "umount_view", "Operation not permitted");
    assert_refused(&f, "umount_mask", "Operation not permitted");
    assert_refused(&f, "umount_ro", "Operation not permitted");
    assert_refused(&f, "umount_sys", "Operation not permitted");
    assert_eq!(field(&f, "mem_after"), LIMIT_KB, "{f:#?}");
    assert_ok(&f, "umount_whole");
    assert_eq!(field(&f, "p_mounts"), "0", "{f:#?}");
    assert_ok(&f, "proc_options");
    assert!(field(&f, "p_options").starts_with("ro,"), "{f:#?}");

    assert_ok(&f, "sysfs");
    assert_eq!(field(&f, "online"), field(&f, "own_online"), "the cpu/online view: {f:#?}");
    assert!(!field(&f, "online").contains('-'), "one CPU (--cpus 1): {f:#?}");
    assert_eq!(field(&f, "firmware_entries"), "0", "/sys/firmware masked: {f:#?}");
    assert_refused(&f, "umount_sys_view", "Operation not permitted");
    assert_ok(&f, "umount_sys_whole");
    assert_eq!(field(&f, "s_mounts"), "0", "{f:#?}");
    remove(&e, c);
}

#[test]
fn escape_attempts_fail() {
    let Some(e) = Engine::get() else { return };
    let host_kb = host_mem_total_kb();
    assert_ne!(host_kb, LIMIT_KB);
    let c = e.start_system(&["-m", "256m"]);
    let f = checks(
        &c,
        r#"
        mkdir -p /x /y
        mem() { head -1 /proc/meminfo | tr -s " " | cut -d" " -f2; }
        # Unmount a view, a mask, a read-only path: refused.
        t umount_view umount /proc/meminfo
        t umount_lazy umount -l /proc/meminfo
        t umount_mask umount /proc/keys
        t umount_ro umount /proc/sys
        t umount_sys_mask umount /sys/firmware
        t umount_sys_view umount /sys/devices/system/cpu/online
        # Through a symlink the trap's lexical check misses: the kernel refuses (locked).
        ln -s /proc/meminfo /tmp/link
        t umount_symlink umount /tmp/link
        # In a new mount namespace, with and without a user namespace: still locked.
        t nested_umount unshare -m umount /proc/meminfo
        t nested_userns_umount unshare -Urm umount -l /proc/meminfo
        # Move a view away, or copy /proc without its overlays.
        t move_view mount --move /proc/meminfo /x
        t bind_without_overlays mount --bind /proc /x
        t rbind mount --rbind /proc /y
        echo rbind_mem=$(head -1 /y/meminfo | tr -s " " | cut -d" " -f2)
        umount -l /y
        # Writable again: refused.
        t remount_ro_path mount -o remount,rw /proc/bus
        t remount_ro_bind mount -o remount,bind,rw /proc/bus
        t remount_view mount -o remount,bind,rw /proc/meminfo
        t remount_sysfs mount -o remount,rw /sys
        t remount_mask mount -o remount,rw /sys/firmware
        # Overmounting a view with one's own file hides the view with the container's own
        # content (no host file): allowed, and unmounting it brings the view back.
        echo "MemTotal: 1 kB" > /tmp/fake
        t overmount mount --bind /tmp/fake /proc/meminfo
        echo overmounted=$(mem)
        t umount_overmount umount /proc/meminfo
        echo mem=$(mem)
        "#,
    );
    for key in [
        "umount_view",
        "umount_lazy",
        "umount_mask",
        "umount_ro",
        "umount_sys_mask",
        "umount_sys_view",
    ] {
        assert_refused(&f, key, "Operation not permitted");
    }
    // Refused by the trap (EPERM) or, where its lexical check does not see the view, by
    // the kernel because the view is a locked mount (EINVAL).
    for key in ["umount_symlink", "nested_umount", "nested_userns_umount"] {
        let value = field(&f, key);
        assert!(
            value.contains("Operation not permitted") || value.contains("Invalid argument"),
            "{key} should have been refused: {f:#?}"
        );
    }
    for key in ["move_view", "bind_without_overlays"] {
        assert_refused(&f, key, "Invalid argument");
    }
    assert_ok(&f, "rbind");
    assert_eq!(field(&f, "rbind_mem"), LIMIT_KB, "a recursive bind keeps the views: {f:#?}");
    for key in
        ["remount_ro_path", "remount_ro_bind", "remount_view", "remount_sysfs", "remount_mask"]
    {
        assert_refused(&f, key, "");
    }
    assert_ok(&f, "overmount");
    assert_eq!(field(&f, "overmounted"), "1", "{f:#?}");
    assert_ok(&f, "umount_overmount");
    assert_eq!(field(&f, "mem"), LIMIT_KB, "the view, never the host's {host_kb} kB: {f:#?}");
    remove(&e, c);
}

/// A loop device on the host with an ext4 file system; detached and deleted on drop.
struct LoopDevice {
    device: String,
    image: PathBuf,
}

impl LoopDevice {
    fn new() -> LoopDevice {
        let image = sysvisor_e2e::scratch_dir("mounttrap-loop").join("disk.img");
        let f = fs::File::create(&image).unwrap();
        f.set_len(16 << 20).unwrap();
        let mkfs = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image).output().unwrap();
        assert!(mkfs.status.success(), "mkfs.ext4: {mkfs:?}");
        let out = cmd::run(
            Command::new("losetup").args(["--find", "--show"]).arg(&image),
            None,
            Duration::from_secs(30),
        )
        .expect_success();
        LoopDevice { device: out.out(), image }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        if let Some(dir) = self.image.parent() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn host_block_devices_cannot_be_mounted() {
    let Some(e) = Engine::get() else { return };
    let disk = LoopDevice::new();
    // The same path inside: runc binds device nodes from the host's path of the same name
    // in a user namespace, where it cannot create them.
    let c = e.start_system(&["--device", &disk.device]);
    let script = r#"
        mkdir -p /m
        t readable head -c 1 DEV
        echo dev_owner=$(stat -c %u DEV)
        t mount_device mount DEV /m
        t mount_ext4 mount -t ext4 DEV /m
        t mount_ro mount -o ro -t ext4 DEV /m
        t mknod mknod /dev/sdz b 8 0
        echo m_mounts=$(grep -c " /m " /proc/self/mountinfo)
        "#;
    let f = checks(&c, &script.replace("DEV", &disk.device));
    // The node is the host's, owned by the host's root: not even readable inside.
    assert_eq!(field(&f, "dev_owner"), "65534", "{f:#?}");
    for key in ["readable", "mount_device", "mount_ext4", "mount_ro", "mknod"] {
        assert_refused(&f, key, "");
    }
    assert!(field(&f, "mount_ext4").contains("permission denied"), "{f:#?}");
    assert_eq!(field(&f, "m_mounts"), "0", "{f:#?}");
    remove(&e, c);
    drop(disk);
}

#[test]
fn ordinary_mounts_work_as_without_the_trap() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&[]);
    let f = checks(
        &c,
        r#"
        mkdir -p /t /b
        t tmpfs mount -t tmpfs -o size=1m t /t
        t write sh -c 'echo hi > /t/f'
        t remount_ro mount -o remount,bind,ro /t
        t write_ro sh -c 'echo hi > /t/g'
        t umount umount /t
        t bind mount --bind /etc /b
        echo bound=$(ls /b/hostname)
        t umount_bind umount /b
        t rprivate mount --make-rprivate /
        t mqueue_remount mount -o remount,ro /dev/mqueue
        echo leftover=$(grep -cE " /(t|b) " /proc/self/mountinfo)
        "#,
    );
    for key in [
        "tmpfs",
        "write",
        "remount_ro",
        "umount",
        "bind",
        "umount_bind",
        "rprivate",
        "mqueue_remount",
    ] {
        assert_ok(&f, key);
    }
    assert_refused(&f, "write_ro", "Read-only file system");
    assert_eq!(field(&f, "bound"), "/b/hostname", "{f:#?}");
    assert_eq!(field(&f, "leftover"), "0", "{f:#?}");
    remove(&e, c);
}

#[test]
fn exec_unconfined_and_no_new_privileges_containers_are_served_too() {
    let Some(e) = Engine::get() else { return };
    for option in ["seccomp=unconfined", "no-new-privileges"] {
        // The container's own process (its init's filter) and `docker exec` processes (a
        // notify fd each, from runc) alike.
        let script =
            "mkdir -p /p && mount -t proc proc /p && head -1 /p/meminfo > /init.out 2>&1; \
                      exec sleep 3600";
        let c = e.start(
            &["--runtime", sysvisor_e2e::RUNTIME, "-m", "256m", "--security-opt", option],
            &["sh", "-c", script],
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let init = loop {
            let out = c.exec(&["cat", "/init.out"]);
            if out.success() && !out.out().is_empty() {
                break out;
            }
            assert!(Instant::now() < deadline, "{option}: the init's mount did not finish");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(init.out().contains(LIMIT_KB), "{option}: {init}");
        let out = c
            .exec(&["unshare", "-fmp", "--mount-proc", "head", "-1", "/proc/meminfo"])
            .expect_success();
        assert!(out.out().contains(LIMIT_KB), "{option}: {out}");
        remove(&e, c);
    }
}

#[test]
fn many_proc_mounts_at_once() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["-m", "256m"]);
    let out = c
        .sh(r#"
            for i in $(seq 16); do
                (unshare -fmp --mount-proc head -1 /proc/meminfo > /tmp/out.$i 2>&1 &)
            done
            sleep 1; while pgrep -f "unshare -fmp" > /dev/null; do sleep 0.2; done
            cat /tmp/out.*"#)
        .expect_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 16, "{out}");
    assert!(lines.iter().all(|l| l.contains(LIMIT_KB)), "{out}");
    remove(&e, c);
}

/// runc itself inside a system container (the host's binary and libraries, bound in): its
/// container gets the views on the /proc it mounts (through `/proc/self/fd/N`).
#[test]
fn an_inner_runc_container_sees_the_views() {
    let Some(e) = Engine::get() else { return };
    let runc = Path::new("/usr/sbin/runc");
    if !runc.exists() {
        sysvisor_skip::required(&format!("no {} (the engine installs docker.io)", runc.display()));
        return;
    }
    let c = e.start_system(&[
        "-m",
        "256m",
        "-v",
        "/usr/sbin/runc:/usr/sbin/runc:ro",
        "-v",
        "/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro",
        "-v",
        "/lib64:/lib64:ro",
    ]);
    let out = c
        .sh(r#"
            set -e
            mkdir -p /b/rootfs/bin /b/rootfs/proc /b/rootfs/sys /b/rootfs/dev
            cp /bin/busybox /b/rootfs/bin/
            for a in sh head grep sed cut; do ln -s busybox /b/rootfs/bin/$a; done
            printf '#!/bin/sh\necho mem=$(head -1 /proc/meminfo | sed "s/  */ /g" | cut -d" " -f2)\necho fs=$(grep " /proc/meminfo " /proc/self/mountinfo | sed "s/.* - //" | cut -d" " -f1)\necho pid=$$\n' > /b/rootfs/show
            chmod +x /b/rootfs/show
            cd /b
            runc spec
            sed -i 's/"terminal": true/"terminal": false/; s/"sh"$/"\/show"/' config.json
            runc --rootless=true run --no-new-keyring inner"#)
        .expect_success();
    let f = out.fields();
    assert_eq!(field(&f, "mem"), LIMIT_KB, "{out}");
    assert_eq!(field(&f, "fs"), "fuse.sysvisor-fs", "{out}");
    assert_eq!(field(&f, "pid"), "1", "{out}");
    remove(&e, c);
}

/// A daemon restart closes the notify fds of running containers: their mount-family calls
/// then fail at once with ENOSYS (the kernel's answer when the listener is gone), they never
/// hang, and the views stay locked. New containers, and new `docker exec` processes (runc
/// hands each its own notify fd), are served by the new daemon.
#[test]
fn after_a_daemon_restart_old_processes_get_enosys_new_ones_work() {
    let Some(e) = Engine::exclusive() else { return };
    e.stop_fs_daemon().expect("stop the harness's sysvisor-fs daemon");
    e.start_fs_daemon().expect("restart the daemon");
    // The container's own process tree tries its mounts when told to (/go), after the
    // restart: it runs under the filter whose listener was the old daemon.
    let script = r#"
        mkdir -p /t
        while [ ! -e /go ]; do sleep 0.1; done
        mount -t tmpfs t /t 2> /tmpfs.err; echo $? > /tmpfs.rc
        umount /proc/meminfo 2> /umount.err; echo $? > /umount.rc
        head -1 /proc/meminfo > /meminfo 2>&1
        touch /done
        exec sleep 3600"#;
    let old = e.start(&["--runtime", sysvisor_e2e::RUNTIME, "-m", "256m"], &["sh", "-c", script]);
    e.stop_fs_daemon().expect("stop the daemon");
    e.start_fs_daemon().expect("start the daemon");
    let started = Instant::now();
    old.exec(&["touch", "/go"]).expect_success();
    while !old.exec(&["test", "-e", "/done"]).success() {
        assert!(started.elapsed() < Duration::from_secs(30), "the old process hangs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = |name: &str| old.exec(&["cat", name]).expect_success().out();
    assert_ne!(result("/tmpfs.rc"), "0");
    assert!(result("/tmpfs.err").contains("Function not implemented"), "{}", result("/tmpfs.err"));
    assert_ne!(result("/umount.rc"), "0");
    assert!(
        result("/umount.err").contains("Function not implemented"),
        "{}",
        result("/umount.err")
    );
    // The old daemon's FUSE mount is gone: the container's views fail until it restarts
    // (docs/design.md), but they are still there, never the host's files.
    assert!(!result("/meminfo").contains(&host_mem_total_kb()), "{}", result("/meminfo"));

    // A new exec in the old container, and a new container: served.
    let out = old
        .sh("mkdir -p /p && mount -t proc proc /p && grep -c sysvisor-fs /proc/self/mountinfo")
        .expect_success();
    assert_ne!(out.out(), "0", "{out}");
    let new = e.start_system(&["-m", "256m"]);
    let out = new
        .exec(&["unshare", "-fmp", "--mount-proc", "head", "-1", "/proc/meminfo"])
        .expect_success();
    assert!(out.out().contains(LIMIT_KB), "{out}");
    remove(&e, old);
    remove(&e, new);
}

/// The container's own /proc and /sys cannot be unmounted, lazily or not, by root inside
/// or by uid 1000 with a user namespace of its own: the kernel's EBUSY (the views stand on
/// them) or, in a nested user namespace where they are locked, EINVAL. Afterwards the
/// views are there and `docker exec` still works.
#[test]
fn the_containers_proc_and_sys_cannot_be_unmounted() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["-m", "256m"]);
    let attacks = r#"
        t umount_proc umount /proc
        t umount_lazy_proc umount -l /proc
        t umount_sys umount /sys
        t umount_lazy_sys umount -l /sys
        t userns_umount_proc unshare -Urm umount /proc
        t userns_umount_lazy_proc unshare -Urm umount -l /proc
        t userns_umount_sys unshare -Urm umount -l /sys
        echo mem=$(head -1 /proc/meminfo | tr -s " " | cut -d" " -f2)
        echo online=$(cat /sys/devices/system/cpu/online)
        "#;
    let root = checks(&c, attacks);
    let user = checks_as(&e, &c, 1000, attacks);
    for (who, f) in [("root", &root), ("1000", &user)] {
        for key in ["umount_proc", "umount_lazy_proc", "umount_sys", "umount_lazy_sys"] {
            let value = field(f, key);
            // Root gets the trap's EBUSY; uid 1000 the kernel's EPERM.
            assert!(
                value.contains("busy") || (who == "1000" && value.contains("not permitted")),
                "{who}: {key} should have been refused: {f:#?}"
            );
        }
        for key in ["userns_umount_proc", "userns_umount_lazy_proc", "userns_umount_sys"] {
            let value = field(f, key);
            assert!(
                value.contains("busy") || value.contains("Invalid argument"),
                "{who}: {key} should have been refused: {f:#?}"
            );
        }
        assert_eq!(field(f, "mem"), LIMIT_KB, "{who}: {f:#?}");
        assert!(!field(f, "online").is_empty(), "{who}: {f:#?}");
    }
    let out = c.exec(&["head", "-1", "/proc/meminfo"]);
    assert!(out.success() && out.out().contains(LIMIT_KB), "docker exec after the attacks: {out}");
    remove(&e, c);
}

/// A read-only proc mounted inside is read-only through every tree grafted on it:
/// the writable sysctl mirror of /proc/sys gives EROFS there, and the container's value
/// stays. As root, and as uid 1000 with user and pid namespaces of its own.
#[test]
fn a_read_only_proc_is_read_only_through_its_sys() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&[]);
    let root = checks(
        &c,
        r#"
        mkdir -p /tmp/p /tmp/w
        echo before=$(cat /proc/sys/kernel/panic)
        t mount_ro mount -o ro -t proc proc /tmp/p
        t write_ro sh -c 'echo 5 > /tmp/p/sys/kernel/panic'
        t write_ro_hostname sh -c 'echo evil > /tmp/p/sys/kernel/hostname'
        echo after=$(cat /proc/sys/kernel/panic)
        # A read-write proc keeps its writable mirror: the rule is the mount's own flag.
        t mount_rw mount -t proc proc /tmp/w
        t write_rw sh -c 'echo 7 > /tmp/w/sys/kernel/panic'
        echo rw=$(cat /proc/sys/kernel/panic)
        echo 0 > /proc/sys/kernel/panic
        umount /tmp/p; umount /tmp/w
        "#,
    );
    assert_ok(&root, "mount_ro");
    assert_refused(&root, "write_ro", "Read-only file system");
    assert_refused(&root, "write_ro_hostname", "Read-only file system");
    assert_eq!(field(&root, "after"), field(&root, "before"), "{root:#?}");
    assert_ok(&root, "mount_rw");
    assert_ok(&root, "write_rw");
    assert_eq!(field(&root, "rw"), "7", "{root:#?}");

    let user = checks_as(
        &e,
        &c,
        1000,
        r#"
        echo before=$(cat /proc/sys/kernel/panic)
        t write_ro unshare -Urfmp sh -c 'mkdir -p /tmp/u && mount -o ro -t proc proc /tmp/u && echo 5 > /tmp/u/sys/kernel/panic'
        echo after=$(cat /proc/sys/kernel/panic)
        "#,
    );
    assert!(field(&user, "write_ro").starts_with("fail:"), "{user:#?}");
    assert_eq!(field(&user, "after"), field(&user, "before"), "{user:#?}");
    remove(&e, c);
}

/// As [`checks`], as `uid` (`docker exec -u UID`).
#[track_caller]
fn checks_as(e: &Engine, c: &Container, uid: u32, script: &str) -> HashMap<String, String> {
    let script = format!("{PRELUDE}\n{script}");
    e.docker(&["exec", "-u", &uid.to_string(), &c.id(), "sh", "-c", &script])
        .expect_success()
        .fields()
}

/// debugfs, tracefs, securityfs and configfs, which no user namespace may mount, are
/// answered with an empty, read-only tmpfs with the kernel's root mode (systemd's
/// `sys-kernel-debug.mount` & co succeed, nothing of the host shows): for root inside, and
/// for uid 1000 only in a user namespace of its own; never for uid 1000 itself.
#[test]
fn kernel_file_systems_are_answered_with_empty_ones() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&[]);
    let root = checks(
        &c,
        r#"
        mkdir -p /tmp/sec /tmp/cfg
        for fs in debugfs:/sys/kernel/debug tracefs:/sys/kernel/tracing securityfs:/tmp/sec configfs:/tmp/cfg; do
            # (not $n: the t function sets it)
            dir=${fs#*:}; kind=${fs%%:*}
            t mount_$kind mount -t $kind -o nosuid,nodev,noexec $kind $dir
            echo ${kind}_entries=$(ls -A $dir | wc -l)
            echo ${kind}_mode=$(stat -c %a $dir)
            echo ${kind}_type=$(awk -v d=$dir '$5 == d { f = $(NF-2) } END { print f }' /proc/self/mountinfo)
            t write_$kind touch $dir/x
            t umount_$kind umount $dir
        done
        "#,
    );
    for (fs, mode) in
        [("debugfs", "700"), ("tracefs", "700"), ("securityfs", "755"), ("configfs", "755")]
    {
        assert_ok(&root, &format!("mount_{fs}"));
        assert_eq!(field(&root, &format!("{fs}_entries")), "0", "{root:#?}");
        assert_eq!(field(&root, &format!("{fs}_mode")), mode, "{root:#?}");
        assert_eq!(field(&root, &format!("{fs}_type")), "tmpfs", "{root:#?}");
        assert_refused(&root, &format!("write_{fs}"), "Read-only file system");
        assert_ok(&root, &format!("umount_{fs}"));
    }
    let user = checks_as(
        &e,
        &c,
        1000,
        r#"
        mkdir -p /tmp/u
        t plain mount -t debugfs debugfs /tmp/u
        t own_userns unshare -Urm sh -c 'mount -t debugfs debugfs /tmp/u && ls -A /tmp/u | wc -l'
        "#,
    );
    assert_refused(&user, "plain", "");
    // In a user and mount namespace of its own uid 1000 may mount a tmpfs anyway: the
    // empty one is nothing more.
    assert_ok(&user, "own_userns");
    remove(&e, c);
}
