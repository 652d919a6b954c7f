//! System containers through a real Docker engine (`docker run --runtime=sysvisor-runc`).
//!
//! Needs root; everything else (docker.io, busybox-static, a private dockerd, the image,
//! the sysvisor-fs daemon) is set up by the harness (see `sysvisor_e2e`). Each test removes
//! its containers (guards) and checks that nothing of them is left.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use sysvisor_e2e::cmd;
use sysvisor_e2e::{
    parse_uid_map, scratch_dir, Container, Engine, IdMap, Output, RANGE, RUNTIME, RUN_DIR,
};

/// The uid map the container's own processes see (first line).
fn inner_uid_map(c: &Container) -> IdMap {
    let out = c.exec(&["cat", "/proc/self/uid_map"]).expect_success();
    parse_uid_map(&out.stdout).unwrap_or_else(|| panic!("bad uid_map: {out}"))
}

/// The MemTotal of /proc/meminfo inside, in kB.
fn mem_total_kb(c: &Container) -> u64 {
    let out = c.exec(&["head", "-1", "/proc/meminfo"]).expect_success();
    parse_mem_total(&out.stdout).unwrap_or_else(|| panic!("bad meminfo: {out}"))
}

fn parse_mem_total(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn host_mem_total_kb() -> u64 {
    parse_mem_total(&fs::read_to_string("/proc/meminfo").unwrap()).unwrap()
}

/// A sysvisor container's id map: non-zero base, 65536 ids, the same seen from in and out.
#[track_caller]
fn system_range(c: &Container) -> IdMap {
    let inner = inner_uid_map(c);
    assert_eq!(inner.inside, 0, "uid 0 inside must be mapped: {inner:?}");
    assert_ne!(inner.outside, 0, "root inside must not be root on the host: {inner:?}");
    assert_eq!(inner.count, RANGE, "{inner:?}");
    assert_eq!(c.uid_map(), Some(inner), "the host sees another map for the container's init");
    inner
}

/// Asserts that a failed `docker run` shows the runtime's error: Docker's wrapper around an
/// OCI runtime failure and every one of `words` (case-insensitively).
#[track_caller]
fn assert_runtime_error(out: &Output, words: &[&str]) {
    assert!(!out.success(), "docker run should have failed: {out}");
    let err = out.stderr.to_lowercase();
    assert!(err.contains("oci runtime"), "docker does not show an OCI runtime error: {out}");
    for w in words {
        assert!(err.contains(&w.to_lowercase()), "the error does not mention {w:?}: {out}");
    }
}

#[test]
fn system_container_sees_its_limits_and_owns_its_rootfs() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["-m", "256m", "--cpus", "1"]);
    let range = system_range(&c);

    // Views of sysvisor-fs.
    assert_eq!(mem_total_kb(&c), 256 * 1024, "MemTotal inside a -m 256m container");
    let out = c
        .sh("echo online=$(cat /sys/devices/system/cpu/online); echo processors=$(grep -c ^processor /proc/cpuinfo); echo nproc=$(nproc); \
             echo uptime=$(cut -d' ' -f1 /proc/uptime)")
        .expect_success();
    let f = out.fields();
    assert_eq!(f["online"], "0", "{out}");
    assert_eq!(f["processors"], "1", "{out}");
    // busybox nproc counts the CPUs of sched_getaffinity: --cpus 1 pins one CPU.
    assert_eq!(f["nproc"], "1", "{out}");
    let uptime: f64 = f["uptime"].parse().unwrap_or_else(|_| panic!("{out}"));
    let host_uptime: f64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        uptime < 30.0,
        "uptime counts from the container's start: {uptime} (host {host_uptime})"
    );
    if host_uptime > 120.0 {
        assert!(uptime + 60.0 < host_uptime, "uptime is the host's: {uptime} vs {host_uptime}");
    } else {
        sysvisor_skip::optional(&format!(
            "partly: the host is up {host_uptime} s, too little to tell its uptime from the container's"
        ));
    }

    // The image's files belong to root inside; root can change them and make new ones.
    let out =
        c.sh("stat -c '%u:%g %n' / /bin /bin/busybox /etc /etc/passwd /tmp /root").expect_success();
    for line in out.out().lines() {
        assert!(line.starts_with("0:0 "), "not owned by root inside: {line}\n{out}");
    }
    let out = c
        .sh("set -e; echo x > /new-file; mkdir /new-dir; echo y >> /etc/passwd; chown 0:0 /bin/busybox; \
             chmod 600 /etc/group; rm /etc/group; stat -c '%u:%g' /new-file /new-dir")
        .expect_success();
    assert_eq!(out.out(), "0:0\n0:0", "{out}");

    // Docker's bind mounts (/etc/hosts, /etc/hostname, /etc/resolv.conf) belong to root too.
    let out = c
        .sh("stat -c '%u:%g %n' /etc/hosts /etc/hostname /etc/resolv.conf && echo '# e2e' >> /etc/hosts && cat /etc/hostname")
        .expect_success();
    for line in out.out().lines().take(3) {
        assert!(
            line.starts_with("0:0 "),
            "Docker's bind mount not owned by root inside: {line}\n{out}"
        );
    }

    // On the host, the container's root is the range's first id, and so are its new files.
    let pid = c.pid().expect("running container has a pid");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid_line.split_whitespace().nth(1).unwrap(),
        range.outside.to_string(),
        "init's host uid: {uid_line}"
    );
    let meta = fs::metadata(format!("/proc/{pid}/root/new-file"))
        .expect("new file through /proc/PID/root");
    assert_eq!(meta.uid(), range.outside, "a new file's owner on the host");

    let id = c.id();
    let out = c.remove();
    assert!(out.success(), "{out}");
    e.assert_no_leaks(&id, Some(range));
}

#[test]
fn ten_containers_get_disjoint_ranges_and_their_own_limits() {
    let Some(e) = Engine::get() else { return };
    let megs: Vec<u64> = (0..10).map(|i| 64 + 32 * i).collect();
    let containers: Vec<Container> = thread::scope(|s| {
        let handles: Vec<_> = megs
            .iter()
            .map(|mb| {
                let e = &*e;
                s.spawn(move || e.start_system(&["-m", &format!("{mb}m")]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("docker run")).collect()
    });
    let ranges: Vec<IdMap> = containers.iter().map(system_range).collect();
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            assert!(!a.overlaps(b), "ranges overlap: {a:?} and {b:?} (all: {ranges:?})");
        }
    }
    for (c, mb) in containers.iter().zip(&megs) {
        assert_eq!(mem_total_kb(c), mb * 1024, "MemTotal of {} (-m {mb}m)", c.name);
    }
    let ids: Vec<String> = containers.iter().map(|c| c.id()).collect();
    thread::scope(|s| {
        for c in containers {
            s.spawn(move || assert!(c.remove().success()));
        }
    });
    for (id, range) in ids.iter().zip(ranges) {
        e.assert_no_leaks(id, Some(range));
    }
}

/// A container whose init prints a line, exits 0 on SIGTERM and otherwise waits.
const POLITE_INIT: &str =
    "trap 'echo bye; exit 0' TERM; echo hello from $(hostname); while :; do sleep 0.2; done";

#[test]
fn lifecycle_exec_stop_start_restart_pause_logs_update_top() {
    let Some(e) = Engine::get() else { return };
    let (c, out) =
        e.run_detached(&["--runtime", RUNTIME, "-m", "256m"], &["sh", "-c", POLITE_INIT]);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let range = system_range(&c);

    // exec, also with a user, a working directory and an environment variable.
    let out = c.exec(&["sh", "-c", "echo $FOO:$(id -u):$(pwd)"]).expect_success();
    assert_eq!(out.out(), ":0:/");
    let out = e.docker(&[
        "exec",
        "-u",
        "65534",
        "-w",
        "/tmp",
        "-e",
        "FOO=bar",
        &c.name,
        "sh",
        "-c",
        "echo $FOO:$(id -u):$(pwd)",
    ]);
    assert_eq!(out.expect_success().out(), "bar:65534:/tmp");
    let out = e.docker(&["exec", "-d", &c.name, "sh", "-c", "echo detached > /tmp/d"]);
    out.expect_success();
    wait_for(|| c.exec(&["cat", "/tmp/d"]).out() == "detached", "detached exec");

    // top (runc ps), logs.
    let out = c.docker("top").expect_success();
    assert!(out.stdout.contains("sleep") || out.stdout.contains("sh"), "{out}");
    wait_for(|| c.docker("logs").stdout.contains("hello from"), "logs");

    // update: the new limit shows in the view.
    e.docker(&["update", "-m", "384m", "--memory-swap", "768m", &c.name]).expect_success();
    assert_eq!(mem_total_kb(&c), 384 * 1024, "MemTotal after docker update -m 384m");

    // pause / unpause.
    c.docker("pause").expect_success();
    assert_eq!(c.status(), "paused");
    c.docker("unpause").expect_success();
    assert_eq!(c.status(), "running");
    c.exec(&["true"]).expect_success();

    // stop (SIGTERM reaches init: exit code 0), start, restart.
    c.docker("stop").expect_success();
    assert_eq!(c.status(), "exited");
    assert_eq!(c.inspect("{{.State.ExitCode}}").as_deref(), Some("0"));
    assert!(c.docker("logs").stdout.contains("bye"), "init saw SIGTERM");
    c.docker("start").expect_success();
    assert_eq!(c.status(), "running");
    assert_eq!(inner_uid_map(&c), range, "the range after stop + start");
    let pid_before = c.pid();
    c.docker("restart").expect_success();
    assert_eq!(c.status(), "running");
    assert_ne!(c.pid(), pid_before, "restart made a new init");
    assert_eq!(inner_uid_map(&c), range, "the range after restart");
    assert_eq!(mem_total_kb(&c), 384 * 1024, "the updated limit survives restart");
    wait_for(
        || c.docker("logs").stdout.matches("hello from").count() == 3,
        "three starts in the logs",
    );

    // rm -f of a running container.
    let id = c.id();
    let out = c.remove();
    assert!(out.success(), "{out}");
    e.assert_no_leaks(&id, Some(range));
}

#[test]
fn kill_and_exit_codes_reach_docker() {
    let Some(e) = Engine::get() else { return };
    let out = e.run_fg(&["--runtime", RUNTIME], &["sh", "-c", "exit 42"]);
    assert_eq!(out.code(), Some(42), "{out}");
    let (c, out) = e.run_detached(&["--runtime", RUNTIME], &["sleep", "3600"]);
    assert!(out.success(), "{out}");
    let range = system_range(&c);
    e.docker(&["kill", "-s", "KILL", &c.name]).expect_success();
    wait_for(|| c.status() == "exited", "killed container exits");
    assert_eq!(c.inspect("{{.State.ExitCode}}").as_deref(), Some("137"));
    let id = c.id();
    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
}

#[test]
fn run_with_a_tty() {
    let Some(e) = Engine::get() else { return };
    // -t without -i: the CLI needs no terminal of its own.
    let out = e.run_fg(&["--runtime", RUNTIME, "-t"], &["sh", "-c", "tty; id -u"]);
    let text = out.out();
    assert!(out.success(), "{out}");
    assert!(text.contains("/dev/pts/0"), "no tty inside: {out}");
    assert!(text.lines().any(|l| l == "0"), "{out}");

    // -it, the CLI on a pty made by script(1): an interactive shell reads our input.
    let line = format!(
        "{} run -it --rm --pull never --label sysvisor-e2e=1 --runtime {RUNTIME} {} sh",
        e.docker_cmdline(),
        e.image()
    );
    let out = cmd::run(
        Command::new("script").args(["-qec", &line, "/dev/null"]),
        Some(b"echo marker-$((6*7)) $(id -u) $(tty)\nexit 7\n"),
        Duration::from_secs(60),
    );
    assert!(
        out.stdout.contains("marker-42 0 /dev/pts/0"),
        "interactive shell did not answer: {out}"
    );
    assert_eq!(out.code(), Some(7), "exit code of the interactive shell: {out}");
}

/// The standalone use, exactly as with LXCFS: plain runc, the views bind-mounted with `-v`.
#[test]
fn plain_runc_with_views_bind_mounted_like_lxcfs() {
    let Some(e) = Engine::get() else { return };
    let mnt = sysvisor_e2e::FS_MOUNTPOINT;
    let vol = |rel: &str| format!("{mnt}/{rel}:/{rel}:ro");
    let (meminfo, cpuinfo, online, uptime) = (
        vol("proc/meminfo"),
        vol("proc/cpuinfo"),
        vol("sys/devices/system/cpu/online"),
        vol("proc/uptime"),
    );
    let c = e.start(
        &[
            "--runtime",
            "runc",
            "-m",
            "256m",
            "--cpuset-cpus",
            "0",
            "-v",
            &meminfo,
            "-v",
            &cpuinfo,
            "-v",
            &online,
            "-v",
            &uptime,
        ],
        &["sleep", "3600"],
    );
    assert_eq!(mem_total_kb(&c), 256 * 1024);
    let out = c
        .sh("grep -c ^processor /proc/cpuinfo; cat /sys/devices/system/cpu/online; cat /proc/uptime")
        .expect_success();
    let text = out.out();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(&lines[..2], ["1", "0"], "{out}");
    let up: f64 = lines[2].split_whitespace().next().and_then(|v| v.parse().ok()).expect("uptime");
    assert!(up < 120.0, "uptime counts from the container's start: {up}");
    // busybox cat reads with sendfile: the whole view too.
    let cat = c.sh("cat /proc/meminfo | head -1").expect_success();
    assert_eq!(parse_mem_total(&cat.stdout), Some(256 * 1024), "{cat}");
}

#[test]
fn runc_containers_run_beside_unaffected() {
    let Some(e) = Engine::get() else { return };
    let sys = e.start_system(&["-m", "256m", "--cpus", "1"]);
    let plain = e.start(&["--runtime", "runc", "-m", "256m"], &["sleep", "3600"]);
    let range = system_range(&sys);
    let plain_map = plain.exec(&["cat", "/proc/self/uid_map"]).expect_success();
    assert_eq!(
        parse_uid_map(&plain_map.stdout),
        Some(IdMap { inside: 0, outside: 0, count: u32::MAX }),
        "a runc container has no user namespace"
    );
    assert_eq!(
        mem_total_kb(&plain),
        host_mem_total_kb(),
        "a runc container sees the host's meminfo"
    );
    assert_eq!(mem_total_kb(&sys), 256 * 1024);
    let out = plain.sh("stat -c %u /bin/busybox && echo hi > /f && stat -c %u /f").expect_success();
    assert_eq!(out.out(), "0\n0");
    // Removing the system container leaves the runc one alone.
    let id = sys.id();
    assert!(sys.remove().success());
    e.assert_no_leaks(&id, Some(range));
    assert_eq!(plain.status(), "running");
    plain.exec(&["true"]).expect_success();
    assert!(plain.remove().success());
}

#[test]
fn files_keep_their_owner_across_stop_and_start() {
    let Some(e) = Engine::get() else { return };
    let (c, out) = e.run_detached(&["--runtime", RUNTIME], &["sh", "-c", POLITE_INIT]);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let range = system_range(&c);
    c.sh("set -e; echo data > /persist; mkdir -p /pdir/sub; touch /pdir/sub/f; chown 65534:65534 /pdir/sub/f; \
          echo more >> /etc/passwd")
        .expect_success();
    c.docker("stop").expect_success();
    c.docker("start").expect_success();
    assert_eq!(system_range(&c), range, "the container got another range back");
    let out = c
        .sh("stat -c '%u:%g %n' /persist /pdir /pdir/sub /etc/passwd /pdir/sub/f; cat /persist")
        .expect_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    for line in &lines[..4] {
        assert!(line.starts_with("0:0 "), "not owned by root after stop + start: {line}\n{out}");
    }
    assert!(lines[4].starts_with("65534:65534 "), "{out}");
    assert_eq!(lines[5], "data");
    c.sh("echo again >> /persist && rm /pdir/sub/f").expect_success();
    let id = c.id();
    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
}

#[test]
fn volumes_shifted_on_request_are_usable_by_root_inside() {
    let Some(e) = Engine::get() else { return };
    let dir = scratch_dir("volume");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("from-host"), "host\n").unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let volume = format!("{}:/data", dir.display());
    // Binds are id-shifted only when asked (tests/tests/security.rs has the default).
    let c = e.start_system(&["-v", &volume, "-e", "SYSVISOR_SHIFT_BINDS=/data"]);
    let range = system_range(&c);
    let out = c.sh("stat -c '%u:%g' /data /data/from-host && cat /data/from-host && echo inside > /data/from-container").expect_success();
    assert_eq!(out.out(), "0:0\n0:0\nhost", "a host root's volume seen from inside");
    let meta = fs::metadata(dir.join("from-container")).unwrap();
    assert_eq!(
        meta.uid(),
        0,
        "a file written by root inside a volume belongs to the volume owner on the host"
    );
    let id = c.id();
    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
}

struct RemoveDir(std::path::PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn rm_frees_the_range_and_leaves_nothing() {
    // Alone: another test's `create` would reclaim the range for us and hide a lazy free.
    let Some(e) = Engine::exclusive() else { return };
    let c = e.start_system(&[]);
    let range = system_range(&c);
    let id = c.id();
    c.sh("echo x > /x").expect_success();
    let registered = sysvisor_proto::call(
        Path::new(sysvisor_e2e::FS_SOCKET),
        &sysvisor_proto::Request::List,
        Duration::from_secs(5),
    )
    .expect("the sysvisor-fs daemon lists its containers");
    let me = registered.containers.iter().find(|r| r.id == id);
    let me =
        me.unwrap_or_else(|| panic!("container {id} not registered: {:?}", registered.containers));
    assert_eq!((me.uid_base, me.id_count), (range.outside, RANGE), "registration: {me:?}");
    assert_eq!(Some(me.init_pid), c.pid(), "registration: {me:?}");
    assert!(c.remove().success());
    // At `runc delete` time Docker still holds the layer, so the runtime frees the range
    // from a short background watch that sees the layer go: within seconds, with no other
    // container created meanwhile.
    wait_until_freed(Path::new("/var/lib/sysvisor/idranges"), &id);
    e.assert_no_leaks_strict(&id, Some(range));
}

/// Waits (at most 20 s) until the allocation state in `state_dir` no longer names `id` and
/// its upper layer is gone: what the runtime's background reclaim does after `docker rm`.
fn wait_until_freed(state_dir: &Path, id: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let state = state_dir.join("state.json");
    let upper = Path::new("/var/lib/sysvisor/rootfs").join(id);
    while std::fs::read_to_string(&state).unwrap_or_default().contains(id) || upper.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "range of {id} not freed within 20 s of docker rm"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---- bad input ------------------------------------------------------------------------

#[test]
fn host_network_is_refused() {
    let Some(e) = Engine::get() else { return };
    let (c, out) = e.run_detached(&["--runtime", RUNTIME, "--network", "host"], &["true"]);
    assert_runtime_error(&out, &["own network namespace"]);
    let id = c.id();
    drop(c);
    e.assert_no_leaks(&id, None);
}

#[test]
fn host_pid_namespace_is_refused() {
    let Some(e) = Engine::get() else { return };
    let (c, out) = e.run_detached(&["--runtime", RUNTIME, "--pid", "host"], &["true"]);
    assert_runtime_error(&out, &["own pid namespace"]);
    let id = c.id();
    drop(c);
    e.assert_no_leaks(&id, None);
}

#[test]
fn host_and_joined_uts_and_ipc_namespaces_are_refused() {
    // In the host's UTS or IPC namespace the container's root would set the host's name
    // and IPC limits through /proc/sys; joining another container's is refused alike.
    let Some(e) = Engine::get() else { return };
    let other = e.start(&["--ipc", "shareable"], &["sleep", "3600"]);
    let join = format!("container:{}", other.name);
    for (options, words) in [
        (["--uts", "host"], ["own uts namespace", "--uts=host is not supported"]),
        (["--ipc", "host"], ["own ipc namespace", "--ipc=host is not supported"]),
        (["--ipc", join.as_str()], ["own ipc namespace", "--ipc=container:"]),
    ] {
        let mut all = vec!["--runtime", RUNTIME];
        all.extend_from_slice(&options);
        let (c, out) = e.run_detached(&all, &["true"]);
        assert_runtime_error(&out, &words);
        let id = c.id();
        drop(c);
        e.assert_no_leaks(&id, None);
    }
}

#[test]
fn unreachable_fs_daemon_is_a_clear_error() {
    let Some(e) = Engine::get() else { return };
    // The runtime under test, told (SYSVISOR_FS_SOCKET) to use a socket nobody serves.
    let missing = format!("{RUN_DIR}/no-daemon.sock");
    let runtime = e
        .add_runtime("sysvisor-runc-nofs", &[("SYSVISOR_FS_SOCKET", &missing)], &[])
        .expect("add a runtime to the engine");
    let (c, out) = e.run_detached(&["--runtime", &runtime], &["true"]);
    assert_runtime_error(&out, &["sysvisor-fs daemon not reachable"]);
    let id = c.id();
    drop(c);
    e.assert_no_leaks(&id, None);
}

#[test]
fn stopped_fs_daemon_is_a_clear_error_and_a_restart_recovers() {
    // Stops the real daemon: no other test may run meanwhile.
    let Some(e) = Engine::exclusive() else { return };
    e.stop_fs_daemon().expect("stop the harness's sysvisor-fs daemon");
    let (c, out) = e.run_detached(&["--runtime", RUNTIME], &["true"]);
    let restarted = e.start_fs_daemon();
    assert_runtime_error(&out, &["sysvisor-fs daemon not reachable"]);
    let id = c.id();
    drop(c);
    e.assert_no_leaks(&id, None);
    restarted.expect("restart the sysvisor-fs daemon");
    let out = e.run_fg(&["--runtime", RUNTIME, "-m", "128m"], &["head", "-1", "/proc/meminfo"]);
    assert_eq!(parse_mem_total(&out.expect_success().stdout), Some(128 * 1024));
}

#[test]
fn exhausted_pool_is_a_clear_error_and_rm_frees_a_range() {
    let Some(e) = Engine::get() else { return };
    // The runtime under test on a pool of exactly one range, with its own allocation state.
    let dir = scratch_dir("tiny-pool");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("state")).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let base = 4_000_000_000u32 / RANGE * RANGE;
    for f in ["subuid", "subgid"] {
        fs::write(dir.join(f), format!("sysvisor:{base}:{RANGE}\n")).unwrap();
    }
    let (subuid, subgid, state) = (dir.join("subuid"), dir.join("subgid"), dir.join("state"));
    let runtime = e
        .add_runtime(
            "sysvisor-runc-tinypool",
            &[
                ("SYSVISOR_SUBUID", subuid.to_str().unwrap()),
                ("SYSVISOR_SUBGID", subgid.to_str().unwrap()),
                ("SYSVISOR_IDRANGE_STATE", state.to_str().unwrap()),
            ],
            &[],
        )
        .expect("add a runtime to the engine");
    let first = e.start(&["--runtime", &runtime], &["sleep", "3600"]);
    let range = system_range(&first);
    assert_eq!(
        range.outside, base,
        "the runtime ignored SYSVISOR_SUBUID/SYSVISOR_SUBGID/SYSVISOR_IDRANGE_STATE (the test needs a way to point it at a tiny pool)"
    );
    let (second, out) = e.run_detached(&["--runtime", &runtime], &["sleep", "3600"]);
    assert_runtime_error(&out, &["pool exhausted"]);
    let second_id = second.id();
    drop(second);
    e.assert_no_leaks_with(&second_id, None, &runtime);
    // Once the first is gone, its range serves the next container.
    let first_id = first.id();
    assert!(first.remove().success());
    let third = e.start(&["--runtime", &runtime], &["sleep", "3600"]);
    assert_eq!(
        system_range(&third).outside,
        base,
        "the range of a removed container is free again"
    );
    e.assert_no_leaks_with(&first_id, None, &runtime);
    let third_id = third.id();
    assert!(third.remove().success());
    // Before the tiny pool's state goes with the scratch dir: once it is gone, nothing
    // would ever reclaim the third container's upper layer.
    wait_until_freed(&state, &third_id);
    e.assert_no_leaks_with(&third_id, Some(range), &runtime);
}

/// Runs the runtime binary directly, as containerd would, on a bundle of our own.
fn runtime_direct(e: &Engine, dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(&e.runtime_bin);
    cmd.args(sysvisor_e2e::runtime_args())
        .arg("--root")
        .arg(dir.join("state"))
        .arg("--log")
        .arg(dir.join("log.json"))
        .args(["--log-format", "json"]);
    cmd.args(args);
    cmd::run(&mut cmd, None, Duration::from_secs(60))
}

#[test]
fn malformed_config_json_is_a_runc_style_error() {
    let Some(e) = Engine::get() else { return };
    for (n, config) in
        ["{ this is not json", r#"{"ociVersion": 5, "root": "nope"}"#, ""].iter().enumerate()
    {
        let dir = scratch_dir(&format!("malformed-{n}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bundle/rootfs")).unwrap();
        let _cleanup = RemoveDir(dir.clone());
        fs::write(dir.join("bundle/config.json"), config).unwrap();
        let id = format!("e2e-malformed-{}-{n}", std::process::id());
        let bundle = dir.join("bundle");
        let out = runtime_direct(&e, &dir, &["create", "--bundle", bundle.to_str().unwrap(), &id]);
        assert!(
            out.code().is_some_and(|c| c != 0),
            "create with config.json {config:?} should fail: {out}"
        );
        let log = fs::read_to_string(dir.join("log.json")).unwrap_or_default();
        let errors: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "error")
            .collect();
        let last = errors
            .last()
            .unwrap_or_else(|| panic!("no runc-style error line in the log: {log:?}\n{out}"));
        let msg = last["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("config.json"), "the error does not name config.json: {msg:?}");
        assert!(last["time"].is_string(), "{last}");
        assert_eq!(
            fs::read_to_string(dir.join("bundle/config.json")).unwrap(),
            *config,
            "the bundle's config.json was changed"
        );
        e.assert_no_leaks(&id, None);
    }
}

#[test]
fn runtime_answers_runc_queries() {
    let Some(e) = Engine::get() else { return };
    let dir = scratch_dir("queries");
    fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let out = runtime_direct(&e, &dir, &["--version"]).expect_success();
    assert!(out.stdout.contains("runc version") || out.stdout.contains("sysvisor"), "{out}");
    let out = runtime_direct(&e, &dir, &["state", "no-such-container"]).expect_failure();
    assert!(out.stderr.contains("does not exist") || out.stderr.contains("not exist"), "{out}");
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// The host directory of the container's cgroup on the unified hierarchy (cgroup v2, or
/// the hybrid layout's `unified` mount), where the kernel keeps its pressure figures.
fn unified_cgroup_dir(c: &Container) -> Option<std::path::PathBuf> {
    let pid = c.pid()?;
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/');
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|root| Path::new(root).join(path))
        .find(|dir| dir.join("cgroup.procs").exists() && dir.join("cgroup.pressure").exists())
}

fn psi_total(text: &str, kind: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(kind)).unwrap_or_else(|| panic!("{text}"));
    line.rsplit_once("total=").and_then(|(_, t)| t.trim().parse().ok()).unwrap()
}

/// /proc/pressure/{cpu,memory,io} inside are the container's cgroup's figures (between two
/// readings of its cgroup file on the host), never the host's; read-only, and readable by
/// uid 1000 as the kernel's are.
#[test]
fn pressure_files_are_the_containers_own() {
    let Some(e) = Engine::get() else { return };
    if !Path::new("/proc/pressure").is_dir() {
        sysvisor_skip::optional("the host kernel has no /proc/pressure (PSI off)");
        return;
    }
    let c = e.start_system(&["--cpus", "1"]);
    // Some CPU stall of its own: two busy loops on one CPU's quota.
    c.sh("(timeout 3 sh -c 'while :; do :; done' &); (timeout 3 sh -c 'while :; do :; done' &); sleep 3")
        .expect_success();
    let dir = unified_cgroup_dir(&c);
    match &dir {
        Some(dir) => eprintln!("docker: pressure figures of {}", dir.display()),
        None => eprintln!("docker: no unified cgroup with pressure files: expecting ENOENT"),
    }
    for resource in ["cpu", "memory", "io"] {
        let host_cgroup =
            || dir.as_ref().map(|d| fs::read_to_string(d.join(format!("{resource}.pressure"))));
        let before = host_cgroup();
        let out = c.exec(&["cat", &format!("/proc/pressure/{resource}")]);
        let after = host_cgroup();
        match (before, after) {
            (Some(Ok(before)), Some(Ok(after))) => {
                let view = out.expect_success().stdout;
                let (low, high) = (psi_total(&before, "some"), psi_total(&after, "some"));
                let seen = psi_total(&view, "some");
                assert!(
                    low <= seen && seen <= high,
                    "{resource}: {low} <= {seen} <= {high}\n{view}"
                );
                let host = fs::read_to_string(format!("/proc/pressure/{resource}")).unwrap();
                assert!(seen < psi_total(&host, "some"), "{resource}: the host's figures\n{view}");
                for line in view.lines() {
                    let fields: Vec<&str> = line.split(' ').collect();
                    assert_eq!(fields.len(), 5, "{line}");
                    assert!(fields[1].starts_with("avg10=") && fields[4].starts_with("total="));
                }
            }
            // No per-cgroup figures on this host: no file, rather than the host's.
            _ => {
                assert!(!out.success() && out.stderr.contains("No such file"), "{resource}: {out}")
            }
        }
    }
    if dir.is_some() {
        assert!(psi_total(&c.exec(&["cat", "/proc/pressure/cpu"]).stdout, "some") > 0);
    }
    let user = e.docker(&[
        "exec",
        "-u",
        "1000",
        &c.id(),
        "sh",
        "-c",
        "cat /proc/pressure/io >/dev/null && echo read; echo x > /proc/pressure/io || echo refused",
    ]);
    let user = user.expect_success().stdout;
    assert!(user.contains("refused"), "{user}");
    assert!(user.contains("read") || dir.is_none(), "{user}");
    let id = c.id();
    let out = c.remove();
    assert!(out.success(), "{out}");
    e.assert_no_leaks(&id, None);
}

/// /proc/slabinfo inside: root-only like the kernel's (0400, owned by the container's
/// root), readable by the container's root, refused to uid 1000, and never the host's
/// caches (only the header, or the cgroup's own file).
#[test]
fn slabinfo_is_root_only_and_never_the_hosts() {
    let Some(e) = Engine::get() else { return };
    if !Path::new("/proc/slabinfo").exists() {
        sysvisor_skip::optional("the host kernel has no /proc/slabinfo");
        return;
    }
    let c = e.start_system(&[]);
    let out = c.exec(&["stat", "-c", "%a %u:%g", "/proc/slabinfo"]).expect_success();
    assert_eq!(out.out(), "400 0:0");
    let view = c.exec(&["cat", "/proc/slabinfo"]).expect_success().stdout;
    assert!(view.starts_with("slabinfo - version: "), "{view}");
    let host = fs::read_to_string("/proc/slabinfo").unwrap();
    let host_caches: Vec<&str> = host.lines().skip(2).collect();
    for line in view.lines().skip(2) {
        assert!(!host_caches.contains(&line), "a host cache line: {line}");
    }
    let user = e.docker(&["exec", "-u", "1000", &c.id(), "cat", "/proc/slabinfo"]);
    assert!(!user.success() && user.stderr.contains("Permission denied"), "{user}");
    let id = c.id();
    let out = c.remove();
    assert!(out.success(), "{out}");
    e.assert_no_leaks(&id, None);
}
