//! Root integration tests of the dynamic trees (`proc/sys`, `sys/kernel`,
//! `sys/devices/virtual/dmi/id`, `sys/module/nf_conntrack/parameters`): a `sysvisor-fs
//! serve` daemon, fake system containers made of real namespaces (a user namespace mapping
//! 65536 ids, and network, UTS, IPC and pid namespaces of their own) registered with it,
//! and readers and writers run inside them with `nsenter`.
//!
//! Skipped (with a message) unless running as root with /dev/fuse and python3. Every
//! daemon, namespace and directory is undone by a guard, also when a test fails; the
//! host's sysctls are only ever read (and checked unchanged).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;

use sysvisor_fs::sysctl::format::{Format, Written};
use sysvisor_fs::sysctl::{container_uuid, rules};
use sysvisor_proto::{Container, Request};

use common::daemon::*;
use common::*;

const A_BASE: u32 = 1_100_000;
const B_BASE: u32 = 1_200_000;

/// Writes or reads one file and prints `ok N` / `ok CONTENT` or `err ERRNO`.
const IO_SCRIPT: &str = r#"
import os, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "w":
        data = sys.argv[3].encode().decode("unicode_escape").encode("latin-1")
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            n = os.write(fd, data)
        finally:
            os.close(fd)
        print("ok", n)
    else:
        with open(path, "rb") as f:
            print("ok", f.read().decode(), end="")
except OSError as e:
    print("err", e.errno)
"#;

fn have_python() -> bool {
    let ok = Path::new(python3()).exists()
        || std::process::Command::new(python3()).arg("-V").output().is_ok();
    if !ok {
        sysvisor_skip::required("no python3");
    }
    ok
}

/// A registered system container: its init and its id.
struct Sys {
    init: NsInit,
    id: String,
}

impl Sys {
    fn start(site: &Site, id: &str, base: u32) -> Sys {
        let init = NsInit::container(base);
        let c = Container {
            id: id.into(),
            init_pid: init.pid,
            uid_base: base,
            gid_base: base,
            id_count: 65536,
            cgroup: None,
            created_unix_ms: now_unix_ms(),
        };
        register(site, &c);
        Sys { init, id: id.into() }
    }

    /// `python3 IO_SCRIPT args` as user `uid` of the container.
    fn io(&self, uid: u32, args: &[&str]) -> Result<String, i32> {
        let out = self.init.reader(uid).args([python3(), "-c", IO_SCRIPT]).args(args).run_ok();
        parse_io(&out)
    }

    fn read(&self, path: &Path) -> Result<String, i32> {
        self.io(0, &["r", path.to_str().unwrap()])
    }

    fn write(&self, uid: u32, path: &Path, data: &str) -> Result<usize, i32> {
        self.io(uid, &["w", path.to_str().unwrap(), data]).map(|n| n.trim().parse().unwrap())
    }

    /// `sh -c script` as the container's root.
    fn sh(&self, script: &str) -> String {
        self.init.reader(0).args(["sh", "-c", script]).run_ok()
    }
}

/// Stops the daemon (cleanly: it must exit 0 and leave nothing) and checks its log.
fn finish(daemon: &mut Daemon, site: &Site) {
    daemon.terminate();
    assert!(!site.log().contains("panicked"), "{}", site.log());
}

fn parse_io(out: &str) -> Result<String, i32> {
    if let Some(rest) = out.strip_prefix("ok ") {
        return Ok(rest.to_string());
    }
    let errno = out.strip_prefix("err ").and_then(|e| e.trim().parse().ok());
    Err(errno.unwrap_or_else(|| panic!("unexpected output {out:?}")))
}

/// The test process's own read of a path (the host, unregistered).
fn host_read(path: &Path) -> Result<String, i32> {
    let p = path.to_path_buf();
    with_timeout(&format!("read {}", path.display()), READER_TIMEOUT, move || {
        fs::read_to_string(p).map_err(|e| e.raw_os_error().unwrap_or(0))
    })
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn namespaced_sysctls_are_the_callers_own() {
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    let a = Sys::start(&site, "sysctl-a", A_BASE);
    let b = Sys::start(&site, "sysctl-b", B_BASE);
    let sys = site.path("proc/sys");
    let host_before: Vec<String> =
        ["net/ipv4/ip_forward", "kernel/hostname", "kernel/shmmni", "net/ipv4/ping_group_range"]
            .iter()
            .map(|p| host_file(&format!("/proc/sys/{p}")))
            .collect();

    // net: A turns forwarding on in its own network namespace only.
    let forward = sys.join("net/ipv4/ip_forward");
    assert_eq!(a.write(0, &forward, "1\n"), Ok(2));
    assert_eq!(a.read(&forward).as_deref(), Ok("1\n"));
    assert_eq!(a.sh("cat /proc/sys/net/ipv4/ip_forward"), "1\n", "the kernel's own view in A");
    assert_eq!(b.read(&forward).as_deref(), Ok("0\n"));
    // What the kernel refuses stays refused.
    assert_eq!(a.write(0, &forward, "junk\n"), Err(libc::EINVAL));
    // Only the container's root writes.
    assert_eq!(a.write(1000, &forward, "0\n"), Err(libc::EACCES));
    // uts: the container's host name.
    let hostname = sys.join("kernel/hostname");
    assert_eq!(a.write(0, &hostname, "alpha\n"), Ok(6));
    assert_eq!(a.sh("hostname"), "alpha\n");
    assert_eq!(a.read(&hostname).as_deref(), Ok("alpha\n"));
    assert_ne!(b.read(&hostname).as_deref(), Ok("alpha\n"));
    // ipc.
    let shmmni = sys.join("kernel/shmmni");
    assert_eq!(a.write(0, &shmmni, "1234\n"), Ok(5));
    assert_eq!(a.sh("cat /proc/sys/kernel/shmmni"), "1234\n");
    assert_ne!(b.read(&shmmni).as_deref(), Ok("1234\n"));
    // ping_group_range in the container's own group ids, as its kernel view shows them.
    let ping = sys.join("net/ipv4/ping_group_range");
    assert_eq!(a.write(0, &ping, "0 2000\n"), Ok(7));
    assert_eq!(a.read(&ping).as_deref(), Ok("0\t2000\n"));
    assert_eq!(a.sh("cat /proc/sys/net/ipv4/ping_group_range"), "0\t2000\n");
    assert_eq!(a.write(0, &ping, "0 70000\n"), Err(libc::EINVAL), "gid 70000 is not mapped");
    assert_eq!(a.read(&ping).as_deref(), Ok("0\t2000\n"));

    // Listings are each caller's: A has only lo; the host has its own interfaces, and the
    // host's listing is not served to A (or back) from a cache.
    let conf = sys.join("net/ipv4/conf");
    let host_conf = names(Path::new("/proc/sys/net/ipv4/conf"));
    for _ in 0..2 {
        assert_eq!(names(&conf), host_conf);
        assert_eq!(a.sh(&format!("ls {}", conf.display())), "all\ndefault\nlo\n");
    }
    assert_eq!(a.read(&sys.join("net/ipv4/conf/eth0/forwarding")), Err(libc::ENOENT));
    // Owned by the container's root, as the kernel shows net sysctls in a container.
    let ls = a.sh(&format!("stat -c '%u %g %a' {}", forward.display()));
    assert_eq!(ls, "0 0 644\n");

    // The host saw none of it.
    let host_after: Vec<String> =
        ["net/ipv4/ip_forward", "kernel/hostname", "kernel/shmmni", "net/ipv4/ping_group_range"]
            .iter()
            .map(|p| host_file(&format!("/proc/sys/{p}")))
            .collect();
    assert_eq!(host_after, host_before);
    finish(&mut daemon, &site);
}

#[test]
fn emulated_sysctls_are_per_container_checked_and_kept_across_restarts() {
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    let a = Sys::start(&site, "emu-a", A_BASE);
    let b = Sys::start(&site, "emu-b", B_BASE);
    let sys = site.path("proc/sys");
    let host_panic = host_file("/proc/sys/kernel/panic");
    let host_max = host_file("/proc/sys/net/netfilter/nf_conntrack_max");

    let panic = sys.join("kernel/panic");
    // Unwritten: the host's value.
    assert_eq!(a.read(&panic), Ok(host_panic.clone()));
    assert_eq!(a.write(0, &panic, "5\n"), Ok(2));
    assert_eq!(b.write(0, &panic, "7\n"), Ok(2));
    assert_eq!(a.read(&panic).as_deref(), Ok("5\n"));
    assert_eq!(b.read(&panic).as_deref(), Ok("7\n"));
    assert_eq!(host_read(&panic), Ok(host_panic.clone()), "the host reads its own value");
    // Checked like the kernel does: malformed and out-of-range values are EINVAL.
    assert_eq!(a.write(0, &panic, "five\n"), Err(libc::EINVAL));
    let overcommit = sys.join("vm/overcommit_memory");
    assert_eq!(a.write(0, &overcommit, "3\n"), Err(libc::EINVAL));
    assert_eq!(a.write(0, &overcommit, "1\n"), Ok(2));
    assert_eq!(a.read(&panic).as_deref(), Ok("5\n"), "a refused write changes nothing");
    // A vector: only what is written changes.
    let printk = sys.join("kernel/printk");
    let host_printk = host_file("/proc/sys/kernel/printk");
    assert_eq!(a.write(0, &printk, "3\n"), Ok(2));
    let rest: Vec<&str> = host_printk.trim().split('\t').skip(1).collect();
    assert_eq!(a.read(&printk), Ok(format!("3\t{}\n", rest.join("\t"))));
    // Emulated even where the kernel has the entry read-only in a container's namespace.
    let max = sys.join("net/netfilter/nf_conntrack_max");
    if Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists() {
        assert_eq!(a.read(&max), Ok(host_max.clone()));
        assert_eq!(a.write(0, &max, "131072\n"), Ok(7));
        assert_eq!(a.read(&max).as_deref(), Ok("131072\n"));
        assert_eq!(b.read(&max), Ok(host_max.clone()));
        assert_eq!(a.write(0, &max, "-1\n"), Err(libc::EINVAL));
    }
    // What the kernel hides in a container's network namespace is emulated where the host
    // has it: the default neighbour thresholds, the default qdisc.
    if Path::new("/proc/sys/net/ipv4/neigh/default/gc_thresh3").exists() {
        let gc = sys.join("net/ipv4/neigh/default/gc_thresh3");
        assert_eq!(a.read(&gc), Ok(host_file("/proc/sys/net/ipv4/neigh/default/gc_thresh3")));
        assert_eq!(a.write(0, &gc, "4096\n"), Ok(5));
        assert_eq!(a.read(&gc).as_deref(), Ok("4096\n"));
        let neigh = sys.join("net/ipv4/neigh");
        assert_eq!(a.sh(&format!("ls {}", neigh.display())), "default\nlo\n");
        let listed = a.sh(&format!("ls {}", neigh.join("default").display()));
        assert_eq!(listed, "gc_thresh1\ngc_thresh2\ngc_thresh3\n");
    }
    if Path::new("/proc/sys/net/core/default_qdisc").exists() {
        let qdisc = sys.join("net/core/default_qdisc");
        assert_eq!(a.write(0, &qdisc, "fq\n"), Ok(3));
        assert_eq!(a.read(&qdisc).as_deref(), Ok("fq\n"));
        assert_eq!(a.write(0, &qdisc, "bogus\n"), Err(libc::ENOENT));
        assert_eq!(b.read(&qdisc), Ok(host_file("/proc/sys/net/core/default_qdisc")));
    }
    // Read-only entries refuse writes; non-root users write nothing.
    for ro in ["kernel/ngroups_max", "kernel/cap_last_cap", "kernel/random/uuid", "vm/swappiness"] {
        assert_eq!(a.write(0, &sys.join(ro), "1\n"), Err(libc::EACCES), "{ro}");
    }
    assert_eq!(a.write(1000, &panic, "9\n"), Err(libc::EACCES));
    // The kernel's random UUID: new at every read.
    let uuid = sys.join("kernel/random/uuid");
    assert_ne!(a.read(&uuid), a.read(&uuid));

    // A restart of the daemon keeps every container's values.
    daemon.terminate();
    drop(daemon);
    let state = fs::read_to_string(site.state.join("sysctl.json")).expect("the saved values");
    assert!(state.contains("emu-a") && state.contains("proc/sys/kernel/panic"), "{state}");
    let mut daemon = Daemon::start(&site);
    assert_eq!(a.read(&panic).as_deref(), Ok("5\n"));
    assert_eq!(b.read(&panic).as_deref(), Ok("7\n"));
    assert_eq!(a.read(&overcommit).as_deref(), Ok("1\n"));

    // Unregistered: its values go (a container with the same id starts afresh).
    site.call(&Request::Unregister { id: a.id.clone() }).expect("unregister");
    let state = fs::read_to_string(site.state.join("sysctl.json")).expect("the saved values");
    assert!(!state.contains("emu-a"), "{state}");
    assert_eq!(a.read(&panic), Ok(host_panic.clone()));
    assert_eq!(a.write(0, &panic, "6\n"), Err(libc::EACCES), "unregistered: read-only");
    assert_eq!(b.read(&panic).as_deref(), Ok("7\n"));
    assert_eq!(host_file("/proc/sys/kernel/panic"), host_panic);
    assert_eq!(host_file("/proc/sys/net/netfilter/nf_conntrack_max"), host_max);
    finish(&mut daemon, &site);
}

#[test]
fn sys_trees_hide_kernel_internals_and_give_each_container_its_own_ids() {
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    let a = Sys::start(&site, "sys-a", A_BASE);
    let b = Sys::start(&site, "sys-b", B_BASE);

    // sys/kernel: the host's, but debug, tracing, security and config are empty.
    let kernel = site.path("sys/kernel");
    for dir in ["debug", "tracing", "security", "config"] {
        let host = Path::new("/sys/kernel").join(dir);
        if !host.exists() {
            continue;
        }
        assert!(names(&kernel.join(dir)).is_empty(), "{dir} is not empty");
        assert_eq!(a.sh(&format!("ls -A {}", kernel.join(dir).display())), "", "{dir}");
    }
    let host_names = names(Path::new("/sys/kernel"));
    assert_eq!(names(&kernel), host_names);
    let a_names: BTreeSet<String> =
        a.sh(&format!("ls {}", kernel.display())).lines().map(str::to_string).collect();
    assert_eq!(a_names, host_names);
    if Path::new("/sys/kernel/uevent_seqnum").exists() {
        assert!(a.read(&kernel.join("uevent_seqnum")).is_ok());
        assert_eq!(a.write(0, &kernel.join("uevent_seqnum"), "1"), Err(libc::EACCES));
    }

    // DMI: a product UUID per container, stable, readable by its root only.
    let uuid = site.path("sys/devices/virtual/dmi/id/product_uuid");
    let a_uuid = a.read(&uuid).expect("A's product_uuid");
    assert_eq!(a_uuid, format!("{}\n", container_uuid(&a.id)));
    assert_eq!(b.read(&uuid), Ok(format!("{}\n", container_uuid(&b.id))));
    assert_ne!(Ok(a_uuid.clone()), b.read(&uuid));
    assert_eq!(a.sh(&format!("stat -c '%u %a' {}", uuid.display())), "0 400\n");
    assert_eq!(a.io(1000, &["r", uuid.to_str().unwrap()]), Err(libc::EACCES));
    assert_eq!(a.write(0, &uuid, "x"), Err(libc::EACCES));
    // Listed for the container (whatever the host has), the host's own for the host.
    let id_dir = site.path("sys/devices/virtual/dmi/id");
    assert!(a.sh(&format!("ls {}", id_dir.display())).lines().any(|l| l == "product_uuid"));
    let host_dmi = Path::new("/sys/devices/virtual/dmi/id");
    let host_names = if host_dmi.exists() { names(host_dmi) } else { BTreeSet::new() };
    assert_eq!(names(&id_dir), host_names);

    // nf_conntrack's hashsize: per container, rounded like the kernel's hash table.
    let hashsize = site.path("sys/module/nf_conntrack/parameters/hashsize");
    if Path::new("/sys/module/nf_conntrack/parameters/hashsize").exists() {
        let host = host_file("/sys/module/nf_conntrack/parameters/hashsize");
        assert_eq!(a.read(&hashsize), Ok(host.clone()));
        assert_eq!(a.write(0, &hashsize, "1000\n"), Ok(5));
        assert_eq!(a.read(&hashsize).as_deref(), Ok("1024\n"));
        assert_eq!(b.read(&hashsize), Ok(host.clone()));
        assert_eq!(a.write(0, &hashsize, "0\n"), Err(libc::EINVAL));
        assert_eq!(a.write(0, &hashsize, "12 \n"), Err(libc::EINVAL));
        assert_eq!(host_file("/sys/module/nf_conntrack/parameters/hashsize"), host);
    }
    finish(&mut daemon, &site);
}

#[test]
fn unregistered_callers_get_a_read_only_mirror_of_their_own_view() {
    let Some(_leaks) = setup() else { return };
    let m = Mounted::new();
    let sys = m.path("proc/sys");
    for file in ["kernel/ostype", "kernel/osrelease", "vm/swappiness", "net/ipv4/ip_forward"] {
        assert_eq!(
            host_read(&sys.join(file)),
            Ok(host_file(&format!("/proc/sys/{file}"))),
            "{file}"
        );
        let meta = fs::metadata(sys.join(file)).unwrap();
        assert_eq!(meta.mode() & 0o222, 0, "{file} is read-only");
        let path = sys.join(file);
        let err = with_timeout("open for writing", READER_TIMEOUT, move || {
            fs::OpenOptions::new().write(true).open(path).map(drop)
        });
        assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::EACCES), "{file}");
    }
    assert_eq!(names(&sys), names(Path::new("/proc/sys")));
    assert_eq!(names(&sys.join("net/ipv4/conf")), names(Path::new("/proc/sys/net/ipv4/conf")));
    // A caller in a network namespace of its own sees its own: only lo, its own values.
    let out = Reader::new("unshare")
        .args(["--net", "--", "sh", "-c"])
        .arg(format!(
            "echo 1 > /proc/sys/net/ipv4/ip_forward; ls {conf}; cat {fwd}",
            conf = sys.join("net/ipv4/conf").display(),
            fwd = sys.join("net/ipv4/ip_forward").display()
        ))
        .run_ok();
    assert_eq!(out, "all\ndefault\nlo\n1\n");
    // The sys trees too.
    assert_eq!(names(&m.path("sys/kernel")), names(Path::new("/sys/kernel")));
    drop(m);
}

#[test]
fn many_readers_and_writers_across_containers() {
    let Some(_leaks) = setup() else { return };
    if !have_python() {
        return;
    }
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    let containers: Vec<Sys> =
        (0..3).map(|i| Sys::start(&site, &format!("busy-{i}"), A_BASE + i * 100_000)).collect();
    let sys = site.path("proc/sys");
    // In each container, four threads write their own values and read them back 100
    // times, on emulated, namespaced and per-container-namespaced entries at once.
    const LOOP: &str = r#"
import os, sys, threading
base, tag = sys.argv[1], int(sys.argv[2])
errors = []
def work(t):
    for i in range(100):
        for rel, value in (("kernel/panic", tag * 1000 + t), ("net/core/somaxconn", tag * 1000 + t),
                           ("net/ipv4/ip_forward", i % 2), ("kernel/ostype", None)):
            path = os.path.join(base, rel)
            try:
                if value is not None:
                    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
                    os.write(fd, b"%d\n" % value)
                    os.close(fd)
                with open(path, "rb") as f:
                    f.read()
            except OSError as e:
                errors.append("%s: %s" % (rel, e))
threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in threads: t.start()
for t in threads: t.join()
for rel in ("kernel/panic", "net/core/somaxconn"):
    v = int(open(os.path.join(base, rel)).read())
    if v // 1000 != tag:
        errors.append("%s read %d, not this container's" % (rel, v))
print("errors:", len(errors), errors[:3])
"#;
    let host_panic = host_file("/proc/sys/kernel/panic");
    let host_somaxconn = host_file("/proc/sys/net/core/somaxconn");
    thread::scope(|scope| {
        for (i, c) in containers.iter().enumerate() {
            let sys = sys.clone();
            scope.spawn(move || {
                let tag = (i + 1).to_string();
                let out = c
                    .init
                    .reader(0)
                    .args([python3(), "-c", LOOP, sys.to_str().unwrap(), &tag])
                    .timeout(std::time::Duration::from_secs(120))
                    .run_ok();
                assert_eq!(out, "errors: 0 []\n", "container {i}");
            });
        }
        // Meanwhile the host reads its own view.
        for _ in 0..200 {
            assert_eq!(host_read(&sys.join("kernel/panic")), Ok(host_panic.clone()));
        }
    });
    assert_eq!(host_file("/proc/sys/kernel/panic"), host_panic);
    assert_eq!(host_file("/proc/sys/net/core/somaxconn"), host_somaxconn);
    daemon.terminate();
    drop(containers);
    assert!(!site.log().contains("panicked"), "{}", site.log());
}

/// Applies `format` to a copy of a value like the kernel's own handler of `real` (a
/// sysctl of the same kind in a fresh network or IPC namespace) and compares every outcome.
fn compare_with_kernel(real: &str, format: Format, inputs: &[&[u8]]) {
    compare_with_kernel_file(&Path::new("/proc/sys").join(real), format, inputs);
}

/// As [`compare_with_kernel`], for any kernel file that takes writes (`path`).
fn compare_with_kernel_file(path: &Path, format: Format, inputs: &[&[u8]]) {
    let real = path.display();
    for input in inputs {
        let before = fs::read_to_string(path).unwrap();
        let kernel = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write(&mut f, input))
            .map_err(|e| e.raw_os_error().unwrap());
        let after = fs::read_to_string(path).unwrap();
        let ours: Written = format.write(before.trim_end_matches('\n'), input, 0);
        let shown = String::from_utf8_lossy(input);
        assert_eq!(ours.result, kernel, "{real} <- {shown:?}: write(2) result");
        let value = ours.value.unwrap_or_else(|| before.trim_end_matches('\n').to_string());
        assert_eq!(format!("{value}\n"), after, "{real} <- {shown:?}: value");
    }
}

#[test]
fn write_formats_match_the_kernels_handlers() {
    if !sysvisor_skip::unless_root() {
        return;
    }
    // A thread of its own in a fresh network namespace: per-thread, so nothing else moves.
    thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare -n");
        let inputs: &[&[u8]] = &[
            b"7",
            b"0x10",
            b"010",
            b"08",
            b" 5",
            b"5x",
            b"\n",
            b"-1",
            b"2147483647",
            b"2147483648",
            b"-2147483648",
            b"99999999999999999999999",
            b"1 2",
            b"3\t",
            b"4\n\n",
            b"+5",
            b"0X1f",
            b"00000000000000000001",
            b"0000000000000000000001",
            b"\x0b9",
            b"9\x0b",
            b"0x",
            b"-",
            b"-0",
            b"12 junk",
        ];
        let kind = |path: &str| match rules::kind_of(rules::PROC_SYS, path) {
            rules::Kind::NetOrEmulated(f) | rules::Kind::Emulated(f) => f,
            other => panic!("{path}: {other:?}"),
        };
        for real in ["net/core/somaxconn", "net/unix/max_dgram_qlen"] {
            compare_with_kernel(real, kind(real), inputs);
        }
        let netfilter = Path::new("/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal");
        if netfilter.exists() {
            for real in [
                "net/netfilter/nf_conntrack_tcp_be_liberal",
                "net/netfilter/nf_conntrack_generic_timeout",
            ] {
                compare_with_kernel(real, kind(real), inputs);
            }
            // The jiffies bound depends on HZ: both sides of it.
            let hz = sysvisor_fs::sysctl::format::kernel_hz();
            let limit = (i32::MAX as u64 / hz).to_string();
            let over = (i32::MAX as u64 / hz + 1).to_string();
            compare_with_kernel(
                "net/netfilter/nf_conntrack_generic_timeout",
                Format::Jiffies,
                &[limit.as_bytes(), over.as_bytes(), b"600"],
            );
        } else {
            // Whether it is loaded depends on what ran on the host before (a Docker with
            // iptables loads it): say so rather than pass silently.
            sysvisor_skip::record(
                "sysctl::write_formats_match_the_kernels_handlers (netfilter part)",
                sysvisor_skip::Kind::Optional,
                "nf_conntrack is not loaded: its tcp_be_liberal and jiffies formats are not compared with the kernel",
            );
        }
    })
    .join()
    .expect("the comparisons hold");
}

/// Runs `check` as root in a thread of its own that left the host's namespaces `flags`
/// (so nothing the host or another test sees changes); skips visibly when not root.
fn in_fresh_namespaces(flags: nix::sched::CloneFlags, check: impl FnOnce() + Send + 'static) {
    if !sysvisor_skip::unless_root() {
        return;
    }
    thread::spawn(move || {
        nix::sched::unshare(flags).expect("unshare");
        check();
    })
    .join()
    .expect("the comparisons hold");
}

/// Numbers as `proc_doulongvec_minmax` reads them, and values above LONG_MAX: compared on
/// `kernel/shmmax` of a fresh IPC namespace (the same handler, without bounds, as
/// vm.mmap_min_addr; it starts at ULONG_MAX - 2^24).
#[test]
fn ulongs_match_the_kernels_proc_doulongvec_minmax() {
    in_fresh_namespaces(nix::sched::CloneFlags::CLONE_NEWIPC, || {
        let inputs: &[&[u8]] = &[
            b"18446744073709551615",
            b"18446744073709551616",
            b"9223372036854775808",
            b"4096",
            b"0x10",
            b"010",
            b"08",
            b"-1",
            b"-0",
            b" 7\n",
            b"7 8",
            b"5x",
            b"\n",
            b"99999999999999999999999",
            b"0xffffffffffffffff",
            b"00000000000000000001",
            b"0000000000000000000001",
        ];
        let format = Format::Ulongs { len: 1, min: 0, max: u64::MAX };
        assert_eq!(
            rules::kind_of(rules::PROC_SYS, "vm/mmap_min_addr"),
            rules::Kind::Emulated(format)
        );
        compare_with_kernel("kernel/shmmax", format, inputs);
    });
}

/// Vectors as `proc_dointvec_minmax` fills them (kernel.printk's format): element by
/// element, stopping at the length, keeping what was stored before an error. Compared on
/// `net/ipv4/tcp_wmem` of a fresh network namespace (3 ints, each at least 1).
#[test]
fn int_vectors_match_the_kernels_proc_dointvec_minmax() {
    in_fresh_namespaces(nix::sched::CloneFlags::CLONE_NEWNET, || {
        let inputs: &[&[u8]] = &[
            b"4096 16384 4194304",
            b"1 2",
            b"7",
            b"1 2 3 4",
            b"5\t6\n7\n",
            b"0 5 6",
            b"8 0 9",
            b"10 x",
            b"11 12 13x",
            b"  ",
            b"-1 5",
            b"2147483647 2147483648",
            b"0x10 010 08",
            b"20  21   22   ",
        ];
        compare_with_kernel(
            "net/ipv4/tcp_wmem",
            Format::Ints { len: 3, min: 1, max: i32::MAX as i64 },
            inputs,
        );
    });
}

/// `IntLocked` (kernel.yama.ptrace_scope) parses and bounds as `proc_dointvec_minmax`
/// while it is not locked: compared on `net/ipv4/tcp_min_snd_mss` (48..65535) of a fresh
/// network namespace. Yama's lock itself has no namespaced kernel entry to compare with;
/// the unit tests of `sysctl::format` cover it.
#[test]
fn int_locked_matches_the_kernels_proc_dointvec_minmax_until_locked() {
    in_fresh_namespaces(nix::sched::CloneFlags::CLONE_NEWNET, || {
        let inputs: &[&[u8]] =
            &[b"100", b"47", b"48", b"65535", b"65536", b"-48", b"0x40", b"1 2", b"\n", b"60 junk"];
        // The lock value is never written, so the entry stays unlocked.
        let format = Format::IntLocked { min: 48, max: 65535, lock: 4242 };
        compare_with_kernel("net/ipv4/tcp_min_snd_mss", format, inputs);
    });
}

/// Names as `proc_dostring` takes them into a 16-byte buffer, then checked against a list
/// (net.core.default_qdisc): compared on `net/ipv4/tcp_congestion_control` of a fresh
/// network namespace (`proc_dostring` into TCP_CA_NAME_MAX = 16 bytes, then the name must
/// be a known algorithm, ENOENT otherwise), with the algorithms a namespace may pick. (For
/// an unknown name the kernel first tries `modprobe tcp_NAME`, which finds nothing.)
#[test]
fn names_match_the_kernels_proc_dostring() {
    in_fresh_namespaces(nix::sched::CloneFlags::CLONE_NEWNET, || {
        let allowed =
            fs::read_to_string("/proc/sys/net/ipv4/tcp_allowed_congestion_control").unwrap();
        let names: Vec<&'static str> = allowed
            .split_whitespace()
            .map(|name| &*Box::leak(name.to_string().into_boxed_str()))
            .collect();
        assert!(names.contains(&"reno"), "reno is always built in: {allowed}");
        let names: &'static [&'static str] = Box::leak(names.into_boxed_slice());
        let inputs: &[&[u8]] = &[
            b"reno",
            b"reno\n",
            b"reno\njunk",
            b"reno\0junk",
            b"renox",
            b" reno",
            b"reno ",
            b"RENO",
            b"\n",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            b"renoaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ];
        let format = Format::Name { maxlen: 16, names };
        compare_with_kernel("net/ipv4/tcp_congestion_control", format, inputs);
        for name in names {
            compare_with_kernel("net/ipv4/tcp_congestion_control", format, &[name.as_bytes()]);
        }
    });
}

/// Module parameters as `kstrtouint(.., 0)` reads them (nf_conntrack's hashsize, which is
/// global): compared on a sysfs attribute of a fresh network namespace that takes the same
/// numbers, `/sys/class/net/lo/tx_queue_len` (`kstrtoul`, then ERANGE above UINT_MAX),
/// through a sysfs mounted in a private mount namespace. Bounds and rounding are
/// hashsize's own (unit-tested); here there are none.
#[test]
fn params_match_the_kernels_kstrtouint() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().to_path_buf();
    in_fresh_namespaces(
        nix::sched::CloneFlags::CLONE_NEWNET | nix::sched::CloneFlags::CLONE_NEWNS,
        move || {
            use nix::mount::{mount, MsFlags};
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .expect("a private mount namespace");
            mount(Some("sysfs"), &sys, Some("sysfs"), MsFlags::empty(), None::<&str>)
                .expect("mount sysfs");
            let inputs: &[&[u8]] = &[
                b"1000",
                b"0x10",
                b"0X1f",
                b"010",
                b"08",
                b"+5",
                b"5\n",
                b"5\n\n",
                b" 5",
                b"5 ",
                // (Not UINT_MAX itself: lo prints tx_queue_len as a signed int, hashsize as
                // unsigned.)
                b"2147483647",
                b"4294967296",
                b"18446744073709551616",
                b"-1",
                b"5\0junk",
                b"\n",
                b"0x",
                b"0",
            ];
            let format = Format::Param { min: 0, max: u32::MAX as u64, round: 1 };
            compare_with_kernel_file(&sys.join("class/net/lo/tx_queue_len"), format, inputs);
            // The namespace (and the mount in it) goes with this thread.
        },
    );
    drop(dir);
}
