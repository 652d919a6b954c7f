//! Scenario "memory": RSS of `sysvisor-fs serve` with N registered containers. Each
//! container is a `unshare --pid --fork sleep infinity` (its init in a pid namespace of its
//! own, as the daemon requires), registered over the control socket (sysvisor-proto).
//! Everything (holders, daemon, mount, temp dirs) is removed at the end, also on failure.

use crate::targets::Server;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use sysvisor_proto::{Container, Request};

#[derive(Serialize)]
pub struct MemoryPoint {
    pub containers: usize,
    pub rss_kb: u64,
    /// The bound: 20 MB + 50 KB per registered container.
    pub target_kb: u64,
    pub met: bool,
}

/// Holders of pid namespaces, killed (with their process groups) on drop.
struct Holders(Vec<Child>);

impl Drop for Holders {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// The pid of `unshare`'s child (the namespace's init), once it is there.
fn init_of(unshare: u32) -> Result<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        if let Some(p) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            // Wait for the exec, so that the identity the daemon records is final.
            let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            if comm.trim() == "sleep" {
                return Ok(p);
            }
        }
        if Instant::now() > deadline {
            bail!("unshare {unshare} has no child after 10 s");
        }
        thread::sleep(Duration::from_millis(2));
    }
}

fn rss_kb(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("no VmRSS")
}

pub fn run(sysvisor_fs: &Path, counts: &[usize]) -> Result<Vec<MemoryPoint>> {
    let srv = Server::start("sysvisor-fs-serve", sysvisor_fs, |root, mnt| {
        vec![
            "serve".into(),
            "--mountpoint".into(),
            mnt.display().to_string(),
            "--socket".into(),
            root.join("fs.sock").display().to_string(),
            "--state-dir".into(),
            root.join("state").display().to_string(),
        ]
    })?;
    let socket = srv.root().join("fs.sock");
    let pid = srv.pid().context("daemon pid")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!("no control socket at {}", socket.display());
        }
        thread::sleep(Duration::from_millis(10));
    }
    let mut holders = Holders(Vec::new());
    let mut sorted = counts.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let now_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    for n in sorted {
        while holders.0.len() < n {
            let i = holders.0.len();
            let child = Command::new("unshare")
                .args(["--pid", "--fork", "sleep", "infinity"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .context("cannot start unshare")?;
            let unshare = child.id();
            holders.0.push(child);
            let init_pid = init_of(unshare)?;
            let container = Container {
                id: format!("sysvisor-bench-{i:04}"),
                init_pid,
                uid_base: 100_000 + (i as u32) * 65_536,
                gid_base: 100_000 + (i as u32) * 65_536,
                id_count: 65_536,
                cgroup: None,
                created_unix_ms: now_ms,
            };
            let r = sysvisor_proto::call(
                &socket,
                &Request::Register { container },
                Duration::from_secs(10),
            )?;
            if !r.ok {
                bail!("registration {i} refused: {}", r.error.unwrap_or_default());
            }
        }
        thread::sleep(Duration::from_millis(300));
        let rss = rss_kb(pid)?;
        let target_kb = 20_000 + 50 * n as u64;
        out.push(MemoryPoint { containers: n, rss_kb: rss, target_kb, met: rss <= target_kb });
    }
    drop(holders);
    drop(srv);
    Ok(out)
}
