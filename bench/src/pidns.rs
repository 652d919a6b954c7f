//! Processes shaped like a container's init: pid 1 of a pid namespace of their own, run as
//! `unshare --pid --fork --kill-child PROGRAM ARGS` (so the init dies with `unshare`), in a
//! process group of their own that is SIGKILLed on drop, also when the run fails.

use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::thread;
use std::time::{Duration, Instant};

/// `unshare --pid --fork --kill-child -- PROGRAM`: add the program's arguments, stdio and
/// a cgroup to join, then [`NsInit::spawn`] it.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--"]).arg(program);
    cmd
}

pub struct NsInit {
    /// The `unshare` process (its stdio is the init's).
    pub child: Child,
    /// The host pid of the namespace's init (the program).
    pub pid: u32,
}

impl NsInit {
    /// Spawns `cmd` (from [`command`]) and waits until the init runs the program, i.e. its
    /// `comm` is `comm` (the identity a daemon records must be the final one).
    pub fn spawn(mut cmd: Command, comm: &str) -> Result<NsInit> {
        let child = cmd.process_group(0).spawn().context("cannot start unshare")?;
        let mut ns = NsInit { child, pid: 0 };
        ns.pid = init_of(&mut ns.child, comm)?;
        Ok(ns)
    }
}

impl Drop for NsInit {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// The pid of `unshare`'s child once it has exec'd the program named `comm`.
fn init_of(unshare: &mut Child, comm: &str) -> Result<u32> {
    let id = unshare.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
        if let Some(p) = children.split_whitespace().next().and_then(|p| p.parse().ok()) {
            let c = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            if c.trim() == comm {
                return Ok(p);
            }
        }
        if let Some(st) = unshare.try_wait()? {
            bail!("unshare exited with {st} before its child ran {comm}");
        }
        if Instant::now() > deadline {
            bail!("unshare {id} has no child running {comm} after 10 s");
        }
        thread::sleep(Duration::from_millis(2));
    }
}
