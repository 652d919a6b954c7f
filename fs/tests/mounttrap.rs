//! Root integration tests of the mount trap without Docker: a real seccomp filter with a
//! notify listener, handed to the trap's socket the way runc does it.
//!
//! Custom harness (`harness = false`): each test runs on the main thread, and the
//! processes that install filters and enter namespaces are this same binary re-run as a
//! single-threaded child (`MOUNTTRAP_CHILD=<mode>`): unsharing a user namespace needs a
//! single-threaded process, which a libtest binary is not.
//!
//! Run: `cargo test -p sysvisor-fs --test mounttrap [NAME]` as root.

#![cfg(target_arch = "x86_64")]

use std::ffi::CString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use sysvisor_fs::mounttrap::{MountTrap, MountTrapOptions};

const CHILD_ENV: &str = "MOUNTTRAP_CHILD";
const BIN: &str = env!("CARGO_BIN_EXE_sysvisor-fs");
/// How long a child may take.
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

type TestFn = fn(&mut Site);

const TESTS: &[(&str, TestFn)] = &[
    ("bad_clients_are_refused_and_the_listener_keeps_serving", bad_clients),
    ("host_callers_and_ordinary_calls_continue_fsopen_of_proc_falls_back", host_caller),
    ("a_proc_mount_in_a_user_namespace_gets_the_overlays_locked", userns_caller),
    ("a_stopped_trap_means_enosys_at_once", stopped_trap),
];

fn main() -> ExitCode {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        return child::main(&mode);
    }
    if !sysvisor_skip::unless_root() {
        return ExitCode::SUCCESS;
    }
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in TESTS {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        ran += 1;
        let result = std::panic::catch_unwind(|| {
            let mut site = Site::new(name);
            test(&mut site);
            drop(site);
            assert_no_leaks();
        });
        match result {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!("\n{} passed; {} failed", ran - failed.len(), failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A trap on a socket in a temp directory, with a bundle whose config names the overlays.
struct Site {
    dir: PathBuf,
    trap: Option<MountTrap>,
}

impl Site {
    fn new(name: &str) -> Site {
        let index = TESTS.iter().position(|(n, _)| *n == name).unwrap_or(99);
        let dir =
            std::env::temp_dir().join(format!("sysvisor-mounttrap-{}-{index}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bundle")).unwrap();
        fs::create_dir_all(dir.join("target")).unwrap();
        fs::write(dir.join("fake-meminfo"), "MemTotal:       4242 kB\n").unwrap();
        let config = format!(
            r#"{{"mounts":[{{"destination":"/proc","type":"proc","source":"proc"}},
                {{"destination":"/proc/meminfo","type":"bind","source":"{}","options":["rbind","ro","nosuid","nodev","noexec"]}}],
              "linux":{{"maskedPaths":["/proc/keys"],"readonlyPaths":["/proc/sys"]}}}}"#,
            dir.join("fake-meminfo").display()
        );
        fs::write(dir.join("bundle/config.json"), config).unwrap();
        let mut options = MountTrapOptions::new(dir.join("seccomp.sock"), dir.join("no-fs"));
        options.helper_exe = PathBuf::from(BIN);
        options.workers = 2;
        // The site first: if the start fails, dropping it removes the directory.
        let mut site = Site { dir, trap: None };
        site.trap = Some(MountTrap::start(&options).unwrap_or_else(|e| panic!("start: {e}")));
        site
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("seccomp.sock")
    }

    /// Stops the trap (as the daemon does when it stops).
    fn stop(&mut self) {
        drop(self.trap.take());
    }

    fn containers(&self) -> Vec<(String, usize)> {
        self.trap.as_ref().map(|t| t.containers()).unwrap_or_default()
    }

    /// Waits until the trap serves `n` notify fds.
    fn wait_for_fds(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.containers().iter().map(|(_, k)| k).sum::<usize>() != n {
            assert!(
                Instant::now() < deadline,
                "the trap serves {:?}, not {n} fds",
                self.containers()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a child in `mode`; its stdin and stdout are pipes.
    fn child(&self, mode: &str) -> Child {
        Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, mode)
            .env("MOUNTTRAP_SOCKET", self.socket())
            .env("MOUNTTRAP_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        drop(self.trap.take());
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads `key=value` lines from a child until it exits (within [`CHILD_TIMEOUT`]).
fn results(mut child: Child) -> Vec<(String, String)> {
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = BufReader::new(stdout).read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = reader.join().unwrap();
    assert!(status.success(), "child failed ({status}):\n{text}");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(results: &'a [(String, String)], key: &str) -> &'a str {
    results
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key} in {results:?}"))
}

/// No mount of the test's temp dirs or the stage is left, no helper runs.
fn assert_no_leaks() {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = info
        .lines()
        .filter(|l| l.contains("sysvisor-mounttrap-") || l.contains("mounttrap-stage"))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:#?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let helpers: Vec<String> = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("__mounttrap-helper"))
            .collect();
        if helpers.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "helpers left: {helpers:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `data` with `fds` attached on `stream`.
fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[RawFd]) {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    let mut control = [0u64; 8];
    // SAFETY: one SCM_RIGHTS message built in buffers owned by this function.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let len = std::mem::size_of_val(fds) as u32;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(len) as usize;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
        assert!(libc::sendmsg(stream.as_raw_fd(), &msg, 0) > 0, "sendmsg");
    }
}

/// runc's message for a process that is not the container's init.
fn state(pid: u32, bundle: &Path) -> String {
    format!(
        r#"{{"ociVersion":"1.0.2","fds":["seccompFd"],"pid":{pid},"metadata":"",
            "state":{{"ociVersion":"1.0.2","id":"test-{pid}","status":"running","pid":1,"bundle":"{}"}}}}"#,
        bundle.display()
    )
}

fn bad_clients(site: &mut Site) {
    let connect = || UnixStream::connect(site.socket()).unwrap();
    // Garbage; a state without an fd; a state with an fd that is no notify fd; a silent
    // client that keeps its connection open.
    let garbage = connect();
    (&garbage).write_all(b"\x00\x01 not json").unwrap();
    drop(garbage);
    let no_fd = connect();
    (&no_fd).write_all(state(1, &site.dir.join("bundle")).as_bytes()).unwrap();
    drop(no_fd);
    let wrong_fd = connect();
    let null = fs::File::open("/dev/null").unwrap();
    send_with_fds(&wrong_fd, state(1, &site.dir.join("bundle")).as_bytes(), &[null.as_raw_fd()]);
    drop(wrong_fd);
    let silent = connect();
    // A real registration after all of them is served at once.
    let started = Instant::now();
    let out = results(site.child("host"));
    assert!(started.elapsed() < Duration::from_secs(4), "a silent client delayed it");
    assert_eq!(get(&out, "getpid"), "0");
    drop(silent);
    // The child's fd is dropped once it exited (its filter hangs up).
    site.wait_for_fds(0);
}

fn host_caller(site: &mut Site) {
    let out = results(site.child("host"));
    assert_eq!(get(&out, "fsopen_proc"), libc::ENOSYS.to_string(), "{out:?}");
    assert_eq!(get(&out, "fsopen_sysfs"), libc::ENOSYS.to_string(), "{out:?}");
    assert_eq!(get(&out, "fsopen_tmpfs"), "0", "{out:?}");
    assert_eq!(get(&out, "mount_tmpfs"), "0", "{out:?}");
    assert_eq!(get(&out, "umount_tmpfs"), "0", "{out:?}");
    // The host's own user namespace: the kernel mounts it, the trap does not.
    assert_eq!(get(&out, "mount_proc"), "0", "{out:?}");
    assert_eq!(get(&out, "proc_meminfo_is_the_hosts"), "1", "{out:?}");
    assert_eq!(get(&out, "umount_proc"), "0", "{out:?}");
    assert_eq!(get(&out, "getpid"), "0", "{out:?}");
}

/// The host uid and gid of the user namespace's root in [`userns_caller`]: far above the
/// ranges given to containers.
const CONTAINER_ROOT: u32 = 2_000_000_000;

fn userns_caller(site: &mut Site) {
    let mut child = site.child("userns");
    // The child has unshared its user namespace: map its root to a host id of its own, as
    // a container's (the trap refuses to act for host root in a user namespace).
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let pid: u32 = line.trim().strip_prefix("unshared=").expect("unshared=PID").parse().unwrap();
    fs::write(format!("/proc/{pid}/uid_map"), format!("0 {CONTAINER_ROOT} 1")).unwrap();
    fs::write(format!("/proc/{pid}/gid_map"), format!("0 {CONTAINER_ROOT} 1")).unwrap();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let out = results(child);
    assert_eq!(get(&out, "mount_proc"), "0", "{out:?}");
    assert_eq!(get(&out, "pid1"), "1", "the proc shows the caller's pid namespace: {out:?}");
    assert_eq!(get(&out, "meminfo"), "MemTotal:       4242 kB", "{out:?}");
    assert_eq!(get(&out, "keys"), "", "/proc/keys masked: {out:?}");
    assert_eq!(get(&out, "umount_view"), libc::EPERM.to_string(), "{out:?}");
    assert_eq!(get(&out, "umount_view_nested"), libc::EPERM.to_string(), "{out:?}");
    assert_eq!(get(&out, "move_view"), libc::EINVAL.to_string(), "locked: {out:?}");
    assert_eq!(get(&out, "remount_ro_rw"), libc::EPERM.to_string(), "locked read-only: {out:?}");
    assert_eq!(get(&out, "mount_sysfs"), "0", "{out:?}");
    assert_eq!(get(&out, "umount_whole"), "0", "{out:?}");
    assert_eq!(get(&out, "unprivileged_mount_proc"), libc::EPERM.to_string(), "{out:?}");
}

fn stopped_trap(site: &mut Site) {
    let mut child = site.child("wait");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "registered=1");
    site.wait_for_fds(1);
    // Stop the trap while the child lives: its filter has no listener any more.
    site.stop();
    let started = Instant::now();
    child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let out = results(child);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(get(&out, "mount_tmpfs"), libc::ENOSYS.to_string(), "{out:?}");
    assert_eq!(get(&out, "getpid"), "0", "{out:?}");
}

/// The children: single-threaded processes that install a notify filter, hand its fd to
/// the trap like runc, and make the calls under test. They print `name=errno` lines.
mod child {
    use super::*;

    /// The trapped calls on x86_64 (as in sysvisor_proto::MOUNT_TRAP_SYSCALLS).
    const TRAPPED: &[u32] = &[165, 166, 428, 429, 430, 442];
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter { code: code as u16, jt: 0, jf: 0, k }
    }

    fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code: code as u16, jt, jf, k }
    }

    /// Installs `arch == x86_64 && nr in TRAPPED -> USER_NOTIF`, else allow; returns the
    /// listener fd.
    fn install_filter() -> OwnedFd {
        let n = TRAPPED.len() as u8;
        let mut prog = vec![
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
            jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, AUDIT_ARCH_X86_64, 0, n + 1),
            stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        ];
        for (i, nr) in TRAPPED.iter().enumerate() {
            prog.push(jump(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, *nr, n - i as u8, 0));
        }
        prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
        prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF));
        let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
        // SAFETY: seccomp(SET_MODE_FILTER) with a valid program; returns the listener fd.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &fprog,
            )
        };
        assert!(fd >= 0, "seccomp: {}", std::io::Error::last_os_error());
        // SAFETY: the kernel just returned this fd.
        unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
    }

    /// Installs the filter and hands the listener to the trap (then closes its copy).
    fn register() {
        let listener = install_filter();
        let socket = std::env::var("MOUNTTRAP_SOCKET").unwrap();
        let dir = PathBuf::from(std::env::var("MOUNTTRAP_DIR").unwrap());
        let stream = UnixStream::connect(socket).unwrap();
        send_with_fds(
            &stream,
            state(std::process::id(), &dir.join("bundle")).as_bytes(),
            &[listener.as_raw_fd()],
        );
    }

    fn errno<T: PartialOrd + Default>(rc: T) -> i32 {
        if rc < T::default() {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        } else {
            0
        }
    }

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn mount(source: &str, target: &Path, fstype: &str, flags: u64) -> i32 {
        let (source, target, fstype) = (c(source), c(target.to_str().unwrap()), c(fstype));
        // SAFETY: mount(2) with NUL-terminated strings.
        errno(unsafe {
            libc::mount(source.as_ptr(), target.as_ptr(), fstype.as_ptr(), flags, std::ptr::null())
        })
    }

    fn umount(target: &Path, flags: i32) -> i32 {
        let target = c(target.to_str().unwrap());
        // SAFETY: umount2 with a NUL-terminated path.
        errno(unsafe { libc::umount2(target.as_ptr(), flags) })
    }

    fn fsopen(name: &str) -> i32 {
        let name = c(name);
        // SAFETY: fsopen with a NUL-terminated name; a returned fd is closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), 0) };
        let e = errno(fd);
        if fd >= 0 {
            // SAFETY: closing the fd fsopen returned.
            unsafe { libc::close(fd as RawFd) };
        }
        e
    }

    fn getpid_ok() -> i32 {
        // SAFETY: getpid cannot fail.
        i32::from(unsafe { libc::getpid() } <= 0)
    }

    fn unshare(flags: i32) {
        // SAFETY: unshare in this single-threaded process.
        assert_eq!(
            unsafe { libc::unshare(flags) },
            0,
            "unshare: {}",
            std::io::Error::last_os_error()
        );
    }

    fn private_root() {
        assert_eq!(mount("none", Path::new("/"), "", libc::MS_REC | libc::MS_PRIVATE), 0);
    }

    fn wait_for_go() {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    }

    pub fn main(mode: &str) -> ExitCode {
        let dir = PathBuf::from(std::env::var("MOUNTTRAP_DIR").unwrap());
        let target = dir.join("target");
        match mode {
            "host" => {
                register();
                println!("fsopen_proc={}", fsopen("proc"));
                println!("fsopen_sysfs={}", fsopen("sysfs"));
                println!("fsopen_tmpfs={}", fsopen("tmpfs"));
                unshare(libc::CLONE_NEWNS);
                private_root();
                println!("mount_tmpfs={}", mount("t", &target, "tmpfs", 0));
                println!("umount_tmpfs={}", umount(&target, 0));
                println!("mount_proc={}", mount("proc", &target, "proc", 0));
                let host = fs::read_to_string("/proc/meminfo").unwrap();
                let mounted = fs::read_to_string(target.join("meminfo")).unwrap_or_default();
                let same = host.lines().next() == mounted.lines().next();
                println!("proc_meminfo_is_the_hosts={}", i32::from(same));
                println!("umount_proc={}", umount(&target, libc::MNT_DETACH));
                println!("getpid={}", getpid_ok());
            }
            "userns" => {
                register();
                unshare(libc::CLONE_NEWUSER);
                println!("unshared={}", std::process::id());
                std::io::stdout().flush().unwrap();
                wait_for_go();
                // Root of the new namespace: host id CONTAINER_ROOT, like a container's root.
                // SAFETY: setresgid/setresuid change only this process's ids.
                let rc = unsafe { libc::setresgid(0, 0, 0) | libc::setresuid(0, 0, 0) };
                assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
                unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET);
                private_root();
                // SAFETY: fork in a single-threaded process; the child exits below.
                let pid = unsafe { libc::fork() };
                if pid > 0 {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    return if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    };
                }
                // pid 1 of a new pid namespace, in a user namespace of its own.
                println!("mount_proc={}", mount("proc", &target, "proc", libc::MS_NOSUID));
                let first = fs::read_dir(&target)
                    .map(|d| {
                        d.flatten()
                            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                            .min()
                    })
                    .ok()
                    .flatten();
                println!("pid1={}", first.unwrap_or(0));
                let meminfo = fs::read_to_string(target.join("meminfo")).unwrap_or_default();
                println!("meminfo={}", meminfo.lines().next().unwrap_or(""));
                let keys =
                    fs::read_to_string(target.join("keys")).unwrap_or_else(|e| e.to_string());
                println!("keys={}", keys.trim());
                println!("umount_view={}", umount(&target.join("meminfo"), 0));
                println!(
                    "move_view={}",
                    mount(target.join("meminfo").to_str().unwrap(), &dir, "", libc::MS_MOVE)
                );
                let sys = target.join("sys");
                println!("remount_ro_rw={}", mount("", &sys, "", libc::MS_REMOUNT | libc::MS_BIND));
                // In a copy of the mount namespace, the copies stay locked and protected.
                let nested = {
                    unshare(libc::CLONE_NEWNS);
                    umount(&target.join("meminfo"), libc::MNT_DETACH)
                };
                println!("umount_view_nested={nested}");
                let sysfs_target = dir.join("bundle");
                println!("mount_sysfs={}", mount("sysfs", &sysfs_target, "sysfs", libc::MS_RDONLY));
                umount(&sysfs_target, libc::MNT_DETACH);
                // A plain umount (no MNT_DETACH) of the whole proc: the trap does it lazily, the
                // kernel would say EBUSY because of the overlays on it.
                println!("umount_whole={}", umount(&target, 0));
                // Without CAP_SYS_ADMIN the trap refuses what the kernel would.
                // _LINUX_CAPABILITY_VERSION_3: a header, then two (effective, permitted,
                // inheritable) triples, all zero.
                let header: [u32; 2] = [0x2008_0522, 0];
                let data = [0u32; 6];
                // SAFETY: capset with a version-3 header and data we own.
                let rc = unsafe { libc::syscall(libc::SYS_capset, header.as_ptr(), data.as_ptr()) };
                assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
                println!("unprivileged_mount_proc={}", mount("proc", &target, "proc", 0));
            }
            "wait" => {
                register();
                unshare(libc::CLONE_NEWNS);
                private_root();
                println!("registered=1");
                std::io::stdout().flush().unwrap();
                wait_for_go();
                println!("mount_tmpfs={}", mount("t", &target, "tmpfs", 0));
                println!("getpid={}", getpid_ok());
            }
            other => panic!("unknown child mode {other}"),
        }
        ExitCode::SUCCESS
    }
}
