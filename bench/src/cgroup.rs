//! A throwaway cgroup (v1 or v2) with a memory limit and a CPU limit, in which the reader
//! processes run. Removed on drop, also when the run fails (whatever is still inside is
//! SIGKILLed first). Same layout detection as fs/tests/common/mod.rs.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

const CONTROLLERS: &[&str] = &["memory", "cpu", "cpuacct", "cpuset"];

/// Where the cgroup hierarchies are.
enum Layout {
    V2(PathBuf),
    /// controller -> mount point of its hierarchy
    V1(Vec<(String, PathBuf)>),
}

fn detect() -> Layout {
    let root = Path::new("/sys/fs/cgroup");
    if let Ok(st) = nix::sys::statfs::statfs(root) {
        if st.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            return Layout::V2(root.to_path_buf());
        }
    }
    let mut v: Vec<(String, PathBuf)> = Vec::new();
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else { continue };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if post.first() != Some(&"cgroup") {
            continue;
        }
        let (Some(mp), Some(opts)) = (pre.get(4), post.get(2)) else { continue };
        for opt in opts.split(',') {
            if CONTROLLERS.contains(&opt) && !v.iter().any(|(c, _)| c == opt) {
                v.push((opt.to_string(), PathBuf::from(mp)));
            }
        }
    }
    Layout::V1(v)
}

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("write {value:?} to {}", path.display()))
}

/// The benchmark's cgroup: `sysvisor-bench-<pid>` below the root of each hierarchy.
pub struct BenchCgroup {
    /// (controllers, directory), in creation order
    dirs: Vec<(String, PathBuf)>,
    pub version: u8,
}

impl BenchCgroup {
    /// Makes the cgroup `sysvisor-bench-<pid>` and sets `memory` bytes and a CFS quota of
    /// `cpus` CPUs.
    pub fn new(memory: u64, cpus: f64) -> Result<BenchCgroup> {
        BenchCgroup::named(&format!("sysvisor-bench-{}", std::process::id()), memory, cpus)
    }

    /// As [`BenchCgroup::new`], named `name` (below the root of each hierarchy). What was
    /// made before a failure is removed again (by the drop of the half-made value).
    pub fn named(name: &str, memory: u64, cpus: f64) -> Result<BenchCgroup> {
        let mut cg = BenchCgroup { dirs: Vec::new(), version: 2 };
        match detect() {
            Layout::V2(root) => {
                let available =
                    fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                let enabled =
                    fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
                for c in ["memory", "cpu"] {
                    let has = |s: &str| s.split_whitespace().any(|x| x == c);
                    if !has(&available) {
                        bail!("cgroup v2 controller {c} is not available");
                    }
                    if !has(&enabled) {
                        write(&root.join("cgroup.subtree_control"), &format!("+{c}"))?;
                    }
                }
                let dir = root.join(name);
                fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                cg.dirs.push((String::new(), dir));
            }
            Layout::V1(ctrls) => {
                cg.version = 1;
                if ctrls.is_empty() {
                    bail!("no cgroup v1 hierarchy with memory/cpu controllers");
                }
                let mut roots: Vec<PathBuf> = Vec::new();
                for (_, p) in &ctrls {
                    if !roots.contains(p) {
                        roots.push(p.clone());
                    }
                }
                for root in roots {
                    let label = ctrls
                        .iter()
                        .filter(|(_, p)| *p == root)
                        .map(|(c, _)| c.as_str())
                        .collect::<Vec<_>>()
                        .join(",");
                    let dir = root.join(name);
                    fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                    cg.dirs.push((label.clone(), dir.clone()));
                    if label.split(',').any(|c| c == "cpuset") {
                        for f in ["cpuset.cpus", "cpuset.mems"] {
                            let v = fs::read_to_string(root.join(f))?;
                            write(&dir.join(f), v.trim())?;
                        }
                    }
                }
            }
        }
        let period = 100_000u64;
        let quota = ((cpus * period as f64).round() as u64).max(1000);
        if cg.version == 2 {
            write(&cg.dir_of("memory")?.join("memory.max"), &memory.to_string())?;
            write(&cg.dir_of("cpu")?.join("cpu.max"), &format!("{quota} {period}"))?;
        } else {
            write(&cg.dir_of("memory")?.join("memory.limit_in_bytes"), &memory.to_string())?;
            let d = cg.dir_of("cpu")?;
            write(&d.join("cpu.cfs_period_us"), &period.to_string())?;
            write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Ok(cg)
    }

    fn dir_of(&self, controller: &str) -> Result<PathBuf> {
        self.dirs
            .iter()
            .find(|(c, _)| c.is_empty() || c.split(',').any(|x| x == controller))
            .map(|(_, d)| d.clone())
            .with_context(|| format!("no {controller} controller on this host"))
    }

    /// The `cgroup.procs` files a process writes itself into to join the cgroup.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.join("cgroup.procs")).collect()
    }

    /// Makes `cmd`'s process join this cgroup between fork and exec, so that everything it
    /// runs (and forks) is inside from its first instruction.
    pub fn join_on_spawn(&self, cmd: &mut Command) {
        let procs: Vec<CString> = self
            .procs_files()
            .iter()
            .map(|p| CString::new(p.as_os_str().as_bytes()).expect("cgroup path with NUL"))
            .collect();
        // SAFETY: the closure only makes raw syscalls (open/write/close) on data prepared
        // before fork; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = io::Error::last_os_error();
                    libc::close(fd);
                    if n != 1 {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
    }

    /// The directory names, for the report.
    pub fn describe(&self) -> String {
        self.dirs.iter().map(|(_, d)| d.display().to_string()).collect::<Vec<_>>().join(" ")
    }

    fn procs(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for (_, d) in &self.dirs {
            for p in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
            {
                if !pids.contains(&p) {
                    pids.push(p);
                }
            }
        }
        pids
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for pid in self.procs() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let mut left = Vec::new();
            for (_, d) in &self.dirs {
                match fs::remove_dir(d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => left.push(format!("{}: {e}", d.display())),
                }
            }
            if left.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                eprintln!("sysvisor-bench: cannot remove cgroup: {}", left.join(", "));
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}
