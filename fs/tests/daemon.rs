//! Root integration tests of daemon mode (`sysvisor-fs serve`): the control socket, the
//! registry (uptime counted from a container's registered creation, kept across restarts),
//! bad clients, and recovery from a crashed daemon.
//!
//! Skipped (with a message) unless running as root with /dev/fuse. Every daemon, temporary
//! directory, mount and namespace made here is undone by a guard, also when a test fails.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use sysvisor_proto::{Container, Request, Response};

use common::daemon::*;
use common::*;

/// `/proc/uptime` of the mount as a process of `init`'s namespace reads it (`nsenter -p`
/// forks, so `cat` runs inside), in seconds.
fn read_uptime(init: &NsInit, site: &Site) -> f64 {
    let out = Reader::new("nsenter")
        .args(["-t", &init.pid.to_string(), "-p", "--", "cat"])
        .arg(site.path("proc/uptime"))
        .run_ok();
    parse_uptime(&out)
}

/// The uptime a container created `age` seconds ago must read: `age`, unless the host has
/// been up for less (a creation before boot counts from boot).
fn expected_uptime(age: f64) -> f64 {
    age.min(parse_uptime(&host_file("/proc/uptime")))
}

/// A container age (seconds) to register: `wanted`, or 80 % of the host's uptime on a host
/// up for less, so that the creation lies after boot and ages stay apart on a host booted
/// minutes ago.
fn age_within_uptime(wanted: f64) -> f64 {
    wanted.min(parse_uptime(&host_file("/proc/uptime")) * 0.8)
}

/// Wall-clock milliseconds of a creation `age` seconds ago.
fn created_ago(age: f64) -> u64 {
    now_unix_ms() - (age * 1000.0) as u64
}

/// Asserts that `up` is about `expected` (it is read a little later).
fn assert_about(up: f64, expected: f64, what: &str) {
    assert!(
        up >= expected - 5.0 && up <= expected + 60.0,
        "{what}: uptime {up}, expected about {expected}"
    );
}

fn parse_uptime(text: &str) -> f64 {
    let up = text.split_whitespace().next().unwrap_or_else(|| panic!("empty uptime {text:?}"));
    up.parse().unwrap_or_else(|e| panic!("uptime {text:?}: {e}"))
}

/// Writes `line` on `stream` and reads one answer line.
fn exchange(stream: &UnixStream, line: &str) -> Response {
    (&*stream).write_all(line.as_bytes()).expect("send");
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).expect("read answer");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?} to {line:?}: {e}"))
}

fn refusal(response: Response) -> String {
    assert!(!response.ok, "expected a refusal, got {response:?}");
    response.error.expect("refusal with a reason")
}

#[test]
fn registered_container_uptime_counts_from_its_creation_and_survives_restarts() {
    let Some(_leaks) = setup() else { return };
    let site = Site::new();
    let mut daemon = Daemon::start(&site);

    // Made by the daemon, privately.
    assert!(fs::symlink_metadata(&site.sock).unwrap().file_type().is_socket());
    assert_eq!(mode(&site.sock), 0o600);
    assert_eq!(mode(site.sock.parent().unwrap()), 0o711);
    assert_eq!(mode(&site.state), 0o700);
    assert!(site.mnt.is_dir());
    site.ping();
    assert!(site.list().is_empty());

    let mut init = NsInit::start();
    // Not registered: the namespace counts from its init, seconds ago.
    let up = read_uptime(&init, &site);
    assert!(up < 60.0, "unregistered namespace uptime {up}");

    let old = age_within_uptime(3600.0);
    let c = container("sysvisor-test-c1", init.pid, created_ago(old));
    register(&site, &c);
    // (The namespace's view rendered just before may be served for --cache-ttl-ms more.)
    let hour = expected_uptime(old);
    eventually("uptime after registration", || (read_uptime(&init, &site) - hour).abs() < 30.0);
    assert_about(read_uptime(&init, &site), hour, "registered container");
    assert_eq!(site.list(), std::slice::from_ref(&c));
    // The host's own view is untouched.
    let host_view = parse_uptime(&with_timeout("read uptime", READER_TIMEOUT, {
        let p = site.path("proc/uptime");
        move || fs::read_to_string(p).expect("read uptime from the host")
    }));
    let host = parse_uptime(&host_file("/proc/uptime"));
    assert!((host_view - host).abs() < 5.0, "host reads {host_view}, /proc/uptime says {host}");
    // Registering the same id again replaces it (`docker start`).
    let c = Container { created_unix_ms: created_ago(old / 2.0), ..c };
    register(&site, &c);
    assert_eq!(site.list(), std::slice::from_ref(&c));
    let half_hour = expected_uptime(old / 2.0);
    eventually("uptime after re-registration", || {
        (read_uptime(&init, &site) - half_hour).abs() < 30.0
    });

    // Restart: the registration is reloaded and the mount serves again.
    daemon.terminate();
    drop(daemon);
    let mut daemon = Daemon::start(&site);
    assert_eq!(site.list(), std::slice::from_ref(&c), "registration reloaded after a restart");
    assert_about(read_uptime(&init, &site), half_hour, "after a restart");
    assert!(site.log().contains("registry loaded"), "{}", site.log());

    // Unregister (twice: idempotent); the namespace counts from its init again.
    for _ in 0..2 {
        site.call(&Request::Unregister { id: c.id.clone() }).expect("unregister");
    }
    assert!(site.list().is_empty());
    eventually("uptime after unregister", || read_uptime(&init, &site) < 60.0);

    daemon.terminate();
    init.kill();
    assert!(!site.log().contains("panicked"), "{}", site.log());
}

#[test]
fn bad_requests_get_an_error_and_the_daemon_keeps_serving() {
    let Some(_leaks) = setup() else { return };
    let site = Site::new();
    let mut daemon = Daemon::start(&site);

    // Clients that connect and say nothing, or half a line, hold up no one.
    let silent = UnixStream::connect(&site.sock).expect("connect");
    let half = UnixStream::connect(&site.sock).expect("connect");
    (&half).write_all(br#"{"op":"regis"#).expect("send half a line");

    let stream = UnixStream::connect(&site.sock).expect("connect");
    stream.set_read_timeout(Some(CALL_TIMEOUT)).expect("timeout");
    let cases = [
        ("this is not json\n", "malformed request"),
        ("{\"op\":\"frobnicate\"}\n", "unknown op \"frobnicate\""),
        ("{\"op\":\"register\",\"container\":{\"id\":\"x\"}}\n", "malformed register request"),
        ("{\"no_op\":1}\n", "malformed request"),
        ("\n", "empty request"),
    ];
    for (line, expected) in cases {
        let message = refusal(exchange(&stream, line));
        assert!(message.contains(expected), "{line:?}: {message}");
    }
    // Registrations that cannot be right: a dead init, an init in the host's namespace.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let dead = child.id();
    child.wait().expect("wait");
    let line = |c: Container| {
        format!("{}\n", serde_json::to_string(&Request::Register { container: c }).unwrap())
    };
    let message = refusal(exchange(&stream, &line(container("dead", dead, 0))));
    assert!(message.contains("does not exist"), "{message}");
    let message = refusal(exchange(&stream, &line(container("host", std::process::id(), 0))));
    assert!(message.contains("own pid namespace"), "{message}");
    // The same connection still works, and so does everyone else.
    assert!(exchange(&stream, "{\"op\":\"ping\"}\n").ok);
    let started = Instant::now();
    for _ in 0..10 {
        site.ping();
    }
    assert!(started.elapsed() < Duration::from_secs(5), "pings took {:?}", started.elapsed());
    assert!(site.list().is_empty());
    drop((stream, half));

    // A client that sends far too much is cut off; the daemon goes on.
    let flood = UnixStream::connect(&site.sock).expect("connect");
    let sent = (&flood).write_all(&vec![b'x'; 3 << 20]);
    let mut answer = String::new();
    let _ = BufReader::new(&flood).read_line(&mut answer);
    assert!(answer.contains("longer than") || sent.is_err(), "flood answered {answer:?}");
    drop(flood);
    site.ping();

    // A second daemon on the same socket is refused, before touching anything.
    let second = Command::new(BIN)
        .args(["serve", "--socket"])
        .arg(&site.sock)
        .arg("--mountpoint")
        .arg(&site.mnt)
        .arg("--state-dir")
        .arg(&site.state)
        .output()
        .expect("run a second daemon");
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another sysvisor-fs daemon is listening"), "{stderr}");
    site.ping();
    let meminfo = with_timeout("read meminfo", READER_TIMEOUT, {
        let p = site.path("proc/meminfo");
        move || fs::read_to_string(p)
    });
    assert!(meminfo.expect("read meminfo").contains("MemTotal"));

    // SIGTERM with a client still connected: clean exit all the same.
    daemon.terminate();
    drop(silent);
    assert!(!site.log().contains("panicked"), "{}", site.log());
}

#[test]
fn a_crashed_daemon_is_replaced_cleanly() {
    let Some(_leaks) = setup() else { return };
    let site = Site::new();
    let mut daemon = Daemon::start(&site);
    let survivor = NsInit::start();
    let mut victim = NsInit::start();
    let survivor_age = age_within_uptime(600.0);
    register(&site, &container("survivor", survivor.pid, created_ago(survivor_age)));
    register(&site, &container("victim", victim.pid, now_unix_ms()));

    // Killed: a dead mount (ENOTCONN) and a socket nobody listens on stay behind.
    daemon.crash();
    drop(daemon);
    // (statfs: the root's attributes are cached, so stat may still succeed.)
    let mnt = site.mnt.clone();
    let statfs = with_timeout("statfs of the dead mount", READER_TIMEOUT, move || {
        nix::sys::statfs::statfs(&mnt).map(|_| ())
    });
    // ECONNABORTED if the statfs reached the dead daemon's io_uring queues before the kernel
    // tore them down (the rings outlive the process briefly), ENOTCONN after.
    assert!(
        matches!(statfs, Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED)),
        "dead mount: {statfs:?}"
    );
    assert!(site.sock.exists());
    assert!(
        UnixStream::connect(&site.sock).is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
    );
    // A container goes away while no daemon runs.
    victim.kill();

    let mut daemon = Daemon::start(&site);
    let log = site.log();
    assert!(log.contains("detached the dead mount"), "{log}");
    assert!(log.contains("removed a stale control socket"), "{log}");
    let ids: Vec<String> = site.list().into_iter().map(|c| c.id).collect();
    assert_eq!(ids, ["survivor"], "the container whose init died is dropped on load");
    assert_about(read_uptime(&survivor, &site), expected_uptime(survivor_age), "survivor");
    // Exactly one mount on the mount point: the dead one is gone.
    let mounts = mountinfo().into_iter().filter(|m| m.mount_point == site.mnt).count();
    assert_eq!(mounts, 1);

    daemon.terminate();
    assert!(!site.log().contains("panicked"), "{}", site.log());
}
