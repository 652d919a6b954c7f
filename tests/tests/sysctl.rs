//! /proc/sys and /sys in system containers through a real Docker engine: sysvisor-fs's
//! dynamic trees mounted by sysvisor-runc. Namespaced sysctls are the container's own,
//! emulated ones are per container and survive a restart of the sysvisor-fs daemon, the
//! host's values never change.
//!
//! Needs root; the harness (`sysvisor_e2e`) sets up the engine. Each test removes its
//! containers and checks that nothing of them is left.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use sysvisor_e2e::cmd;
use sysvisor_e2e::{Container, Engine, Output};

/// The host's value of a sysctl (dotted name).
fn host_sysctl(name: &str) -> String {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().into()
}

/// `sysctl -n NAME` inside.
fn sysctl(c: &Container, name: &str) -> String {
    c.exec(&["sysctl", "-n", name]).expect_success().out()
}

/// `sysctl -w NAME=VALUE` inside (busybox: exit status 0 on success).
fn sysctl_w(c: &Container, name: &str, value: &str) -> Output {
    c.exec(&["sysctl", "-w", &format!("{name}={value}")])
}

const WATCHED: &[&str] = &[
    "kernel.panic",
    "net.netfilter.nf_conntrack_max",
    "net.core.somaxconn",
    "net.ipv4.ip_forward",
];

/// Removes the containers and checks that nothing of them is left.
fn remove_all(e: &Engine, containers: Vec<Container>) {
    let ids: Vec<String> = containers.iter().map(Container::id).collect();
    drop(containers);
    for id in ids {
        e.assert_no_leaks(&id, None);
    }
}

fn host_values() -> Vec<(String, String)> {
    host_values_of(WATCHED)
}

/// The host's values of those of `names` (dotted) that it has.
fn host_values_of(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .filter(|n| Path::new("/proc/sys").join(n.replace('.', "/")).exists())
        .map(|n| (n.to_string(), host_sysctl(n)))
        .collect()
}

#[test]
fn five_containers_keep_their_own_sysctls_and_the_host_its_own() {
    let Some(e) = Engine::get() else { return };
    let host_before = host_values();
    let has_conntrack = Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists();
    let containers: Vec<Container> = (0..5).map(|_| e.start_system(&[])).collect();
    thread::scope(|scope| {
        for (i, c) in containers.iter().enumerate() {
            scope.spawn(move || {
                let mut writes = vec![
                    ("kernel.panic", (20 + i).to_string()),
                    ("net.core.somaxconn", (1000 + i).to_string()),
                ];
                if has_conntrack {
                    writes.push(("net.netfilter.nf_conntrack_max", (100_000 + i).to_string()));
                }
                for (name, value) in &writes {
                    let out = sysctl_w(c, name, value);
                    assert!(out.success(), "container {i}: {name}={value}: {out}");
                }
                for (name, value) in &writes {
                    assert_eq!(&sysctl(c, name), value, "container {i}: {name}");
                }
            });
        }
    });
    // Each still has its own after the others wrote.
    for (i, c) in containers.iter().enumerate() {
        assert_eq!(sysctl(c, "kernel.panic"), (20 + i).to_string());
        assert_eq!(sysctl(c, "net.core.somaxconn"), (1000 + i).to_string());
        if has_conntrack {
            assert_eq!(sysctl(c, "net.netfilter.nf_conntrack_max"), (100_000 + i).to_string());
        }
    }
    assert_eq!(host_values(), host_before, "the host's sysctls changed");
    remove_all(&e, containers);
}

#[test]
fn sysctl_a_completes_and_ip_forward_is_the_containers_own() {
    let Some(e) = Engine::get() else { return };
    let host_before = host_values();
    let a = e.start_system(&[]);
    let b = e.start_system(&[]);
    // The whole tree reads (busybox sysctl; a few entries, like the kernel's own
    // net.ipv6.conf.*.stable_secret, refuse reads natively too).
    let out = cmd::run(
        &mut e.docker_cmd(&["exec", &a.name, "sysctl", "-a"]),
        None,
        Duration::from_secs(120),
    );
    assert!(out.status.is_some(), "sysctl -a did not finish: {out}");
    let lines = out.stdout.lines().count();
    assert!(lines > 300, "sysctl -a printed {lines} lines: {out}");
    for line in out.stderr.lines() {
        assert!(line.contains("stable_secret"), "unexpected error: {line}\n{out}");
    }
    assert!(out.stdout.contains("kernel.panic = "), "{out}");
    assert!(out.stdout.contains("net.ipv4.ip_forward = "), "{out}");
    // /proc/sys is sysvisor-fs's, read-write.
    let mounts = a.exec(&["cat", "/proc/self/mountinfo"]).expect_success().out();
    let proc_sys = mounts.lines().find(|l| l.split(' ').nth(4) == Some("/proc/sys"));
    let proc_sys = proc_sys.unwrap_or_else(|| panic!("no /proc/sys mount: {mounts}"));
    assert!(proc_sys.contains("fuse.sysvisor-fs") && proc_sys.contains(" rw,"), "{proc_sys}");
    let sys_kernel = mounts.lines().find(|l| l.split(' ').nth(4) == Some("/sys/kernel"));
    assert!(sys_kernel.is_some_and(|l| l.contains(" ro,")), "{mounts}");

    // ip_forward: the container's network namespace only.
    let out = sysctl_w(&a, "net.ipv4.ip_forward", "1");
    assert!(out.success(), "{out}");
    assert_eq!(sysctl(&a, "net.ipv4.ip_forward"), "1");
    assert_eq!(sysctl(&b, "net.ipv4.ip_forward"), "0");
    // The kernel's own view in A (its network namespace) agrees: read through sysfs-less
    // means, /proc/net/snmp's Forwarding (1 = forwarding).
    let snmp = a.exec(&["cat", "/proc/net/snmp"]).expect_success().out();
    let fields: Vec<&str> = snmp.lines().nth(1).unwrap_or("").split_whitespace().collect();
    assert_eq!(fields.get(1), Some(&"1"), "Forwarding in A's namespace: {snmp}");
    // The host name too, for real (uname).
    let out = a.sh("echo sysctl-host > /proc/sys/kernel/hostname && hostname").expect_success();
    assert_eq!(out.out(), "sysctl-host");
    assert_ne!(b.exec(&["hostname"]).expect_success().out(), "sysctl-host");
    assert_eq!(host_values(), host_before, "the host's sysctls changed");
    remove_all(&e, vec![a, b]);
}

#[test]
fn invalid_values_and_read_only_entries_are_refused() {
    let Some(e) = Engine::get() else { return };
    let host_before = host_values();
    let c = e.start_system(&[]);
    let before = sysctl(&c, "kernel.panic");
    for (path, value, error) in [
        ("kernel/panic", "abc", "Invalid argument"),
        ("kernel/panic", "99999999999", "Invalid argument"),
        ("vm/overcommit_memory", "3", "Invalid argument"),
        ("net/core/somaxconn", "-1", "Invalid argument"),
        ("kernel/ngroups_max", "5", "Permission denied"),
        ("kernel/cap_last_cap", "5", "Permission denied"),
        ("vm/swappiness", "5", "Permission denied"),
    ] {
        let out = c.sh(&format!("echo {value} > /proc/sys/{path}"));
        assert!(!out.success(), "{path} took {value}: {out}");
        assert!(out.stderr.contains(error), "{path} <- {value}: {out}");
    }
    assert_eq!(sysctl(&c, "kernel.panic"), before, "a refused write changed the value");
    // Only root writes.
    let out =
        e.docker(&["exec", "-u", "1000", &c.name, "sh", "-c", "echo 3 > /proc/sys/kernel/panic"]);
    assert!(!out.success() && out.stderr.contains("Permission denied"), "{out}");
    // The DMI product UUID, where the host has DMI: the container's own, root only.
    if Path::new("/sys/devices/virtual/dmi/id/product_uuid").exists() {
        let uuid = c.exec(&["cat", "/sys/devices/virtual/dmi/id/product_uuid"]).expect_success();
        assert_ne!(
            uuid.out(),
            fs::read_to_string("/sys/devices/virtual/dmi/id/product_uuid").unwrap().trim()
        );
    }
    // /sys/kernel's internals are empty.
    for dir in ["debug", "tracing", "security"] {
        if Path::new("/sys/kernel").join(dir).exists() {
            let out = c.sh(&format!("ls -A /sys/kernel/{dir} | wc -l")).expect_success();
            assert_eq!(out.out(), "0", "/sys/kernel/{dir}: {out}");
            // The host's mode, the container's root as owner (not 65534).
            let host_mode = fs::metadata(Path::new("/sys/kernel").join(dir)).unwrap().mode();
            let out = c.exec(&["stat", "-c", "%a %u:%g", &format!("/sys/kernel/{dir}")]);
            let expected = format!("{:o} 0:0", host_mode & 0o7777);
            assert_eq!(out.expect_success().out(), expected, "/sys/kernel/{dir}");
        }
    }
    assert_eq!(host_values(), host_before, "the host's sysctls changed");
    remove_all(&e, vec![c]);
}

#[test]
fn many_concurrent_readers_and_writers_across_containers() {
    let Some(e) = Engine::get() else { return };
    let host_before = host_values();
    let containers: Vec<Container> = (0..4).map(|_| e.start_system(&[])).collect();
    // In each container, two shell loops write their own values and read them back while
    // a third reads the whole of kernel/ and net/core/.
    const LOOP: &str = r#"
set -u
n=$1
w() { i=0; while [ $i -lt 150 ]; do
        echo $((n * 1000 + i % 7)) > /proc/sys/kernel/panic || exit 11
        echo $((n * 1000 + i % 5)) > /proc/sys/net/core/somaxconn || exit 12
        v=$(cat /proc/sys/kernel/panic) || exit 13
        [ $((v / 1000)) -eq $n ] || { echo "panic read $v" >&2; exit 14; }
        i=$((i + 1)); done; }
r() { i=0; while [ $i -lt 30 ]; do cat /proc/sys/kernel/* /proc/sys/net/core/* > /dev/null 2>&1; i=$((i + 1)); done; }
w & p1=$!; w & p2=$!; r & p3=$!
wait $p1 || exit 21; wait $p2 || exit 22; wait $p3
echo done
"#;
    let engine: &Engine = &e;
    thread::scope(|scope| {
        for (i, c) in containers.iter().enumerate() {
            scope.spawn(move || {
                let n = (i + 1).to_string();
                let out = cmd::run(
                    &mut engine.docker_cmd(&["exec", &c.name, "sh", "-c", LOOP, "sh", &n]),
                    None,
                    Duration::from_secs(300),
                );
                assert!(out.success() && out.out() == "done", "container {i}: {out}");
            });
        }
    });
    assert_eq!(host_values(), host_before, "the host's sysctls changed");
    remove_all(&e, containers);
}

#[test]
fn a_restart_of_the_fs_daemon_keeps_the_containers_values() {
    // Stops the real daemon: no other test may run meanwhile.
    let Some(e) = Engine::exclusive() else { return };
    let c = e.start_system(&[]);
    let out = sysctl_w(&c, "kernel.panic", "33");
    assert!(out.success(), "{out}");
    let host_panic = host_sysctl("kernel.panic");
    e.stop_fs_daemon().expect("stop the harness's sysvisor-fs daemon");
    let restarted = e.start_fs_daemon();
    restarted.expect("restart the sysvisor-fs daemon");
    // The container's own mounts belonged to the stopped daemon; a process of the container
    // (its namespaces, its root) reads the new daemon's tree.
    let pid = c.pid().expect("the container runs").to_string();
    let read = |rel: &str| {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &pid, "-U", "-p", "-n", "-u", "-i", "--", "cat"]);
        cmd.arg(Path::new(sysvisor_e2e::FS_MOUNTPOINT).join(rel));
        cmd::run(&mut cmd, None, Duration::from_secs(30))
    };
    let out = read("proc/sys/kernel/panic");
    assert_eq!(out.clone().expect_success().out(), "33", "{out}");
    assert_eq!(host_sysctl("kernel.panic"), host_panic);
    // A container started now gets the new daemon's trees, and the host's values.
    let fresh = e.start_system(&[]);
    assert_eq!(sysctl(&fresh, "kernel.panic"), host_panic);
    remove_all(&e, vec![c, fresh]);
}

/// Namespaced entries an attacker inside would aim at the host through (those the host has).
const NAMESPACED: &[&str] = &[
    "kernel.hostname",
    "kernel.domainname",
    "kernel.shmmni",
    "kernel.msgmax",
    "fs.mqueue.msg_max",
    "net.ipv4.tcp_congestion_control",
];

fn namespaced_host_values() -> Vec<(String, String)> {
    host_values_of(NAMESPACED)
}

/// Puts host values back on drop where they changed: should an attack get through, the
/// test fails and the host keeps its name.
struct RestoreHost(Vec<(String, String)>);

impl Drop for RestoreHost {
    fn drop(&mut self) {
        for (name, value) in &self.0 {
            let path = Path::new("/proc/sys").join(name.replace('.', "/"));
            if fs::read_to_string(&path).map(|v| v.trim().to_string()).ok().as_ref() != Some(value)
            {
                let _ = fs::write(&path, format!("{value}\n"));
            }
        }
    }
}

#[test]
fn namespaced_writes_stay_in_the_containers_namespaces_and_carry_only_its_roots_power() {
    let Some(e) = Engine::get() else { return };
    let before = namespaced_host_values();
    let _restore = RestoreHost(before.clone());
    let c = e.start_system(&[]);

    // Root inside: its own host name, domain name and IPC limits, for real.
    let out = c
        .sh("echo sysns-pwn > /proc/sys/kernel/hostname && \
             echo sysns-dom > /proc/sys/kernel/domainname && \
             echo 1234 > /proc/sys/kernel/shmmni && echo 4321 > /proc/sys/kernel/msgmax && \
             echo 77 > /proc/sys/fs/mqueue/msg_max && hostname && \
             cat /proc/sys/kernel/domainname /proc/sys/kernel/shmmni /proc/sys/kernel/msgmax \
                 /proc/sys/fs/mqueue/msg_max")
        .expect_success();
    assert_eq!(out.out(), "sysns-pwn\nsysns-dom\n1234\n4321\n77");
    assert_eq!(namespaced_host_values(), before, "a container's write reached the host");

    // uid 1000 inside: refused.
    for (path, value) in [
        ("kernel/hostname", "user-pwn"),
        ("kernel/domainname", "user-pwn"),
        ("kernel/shmmni", "17"),
        ("net/ipv4/tcp_congestion_control", "reno"),
    ] {
        let script = format!("echo {value} > /proc/sys/{path}");
        let out = e.docker(&["exec", "-u", "1000", &c.name, "sh", "-c", &script]);
        assert!(!out.success() && out.stderr.contains("Permission denied"), "{path}: {out}");
    }
    assert_eq!(c.exec(&["hostname"]).expect_success().out(), "sysns-pwn");

    // An unknown congestion control: ENOENT, what the root of a network namespace gets (a
    // writer with host capabilities would have the host load module tcp_<name>).
    let cc = sysctl(&c, "net.ipv4.tcp_congestion_control");
    let out = c.sh("echo sysns_bogus > /proc/sys/net/ipv4/tcp_congestion_control");
    assert!(!out.success() && out.stderr.contains("No such file or directory"), "{out}");
    assert_eq!(sysctl(&c, "net.ipv4.tcp_congestion_control"), cc);
    c.sh("echo reno > /proc/sys/net/ipv4/tcp_congestion_control").expect_success();
    assert_eq!(sysctl(&c, "net.ipv4.tcp_congestion_control"), "reno");

    // Its writer is its root on the host: the container's host ids, in its user namespace
    // (no capability of the host's), not dumpable (its /proc files are host root's).
    let pid = c.pid().expect("the container runs");
    let map = c.uid_map().expect("the container's uid map");
    let link = |pid: i32, ns: &str| fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
    let writers: Vec<i32> = sysvisor_e2e::leaks::pids_with_cmdline("__sysctl-writer")
        .into_iter()
        .filter(|w| link(*w, "net").is_some() && link(*w, "net") == link(pid as i32, "net"))
        .collect();
    assert_eq!(writers.len(), 1, "the container's writers: {writers:?}");
    let w = writers[0];
    let status = fs::read_to_string(format!("/proc/{w}/status")).unwrap();
    let ids = format!("{0}\t{0}\t{0}\t{0}", map.outside);
    assert!(status.contains(&format!("Uid:\t{ids}\n")), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert_eq!(link(w, "user"), link(pid as i32, "user"));
    assert_eq!(link(w, "uts"), link(pid as i32, "uts"));
    assert_eq!(link(w, "ipc"), link(pid as i32, "ipc"));
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(format!("/proc/{w}/status")).unwrap().uid(), 0, "dumpable");

    assert_eq!(namespaced_host_values(), before, "a container's write reached the host");
    remove_all(&e, vec![c]);
}
