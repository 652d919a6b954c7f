//! Running runc.
//!
//! Its path: `$SYSVISOR_RUNC`, else the first line of `/etc/sysvisor/runc-path`, else
//! `runc` on `PATH`. Commands with nothing left to do afterwards replace this process
//! ([`exec`]); `create`, `run` and `delete` run it as a child ([`spawn`]) so that failures
//! can be cleaned up and the container registered.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use serde::Deserialize;

/// Environment variable naming the runc binary.
pub const ENV_RUNC: &str = "SYSVISOR_RUNC";
/// File whose first line names the runc binary.
pub const RUNC_PATH_FILE: &str = "/etc/sysvisor/runc-path";

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("runc not found ({what}); install it (apt-get install runc) or name it in ${ENV_RUNC} or {RUNC_PATH_FILE}")]
    NotFound { what: String },
    #[error("{path} is sysvisor-runc itself, not runc; point ${ENV_RUNC} or {RUNC_PATH_FILE} at the real runc")]
    IsSelf { path: PathBuf },
    #[error("cannot run {path}: {source}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("runc state {id}: {message}")]
    State { id: String, message: String },
}

/// The runc binary to use (see the module doc), resolved to a path that exists.
pub fn runc_path() -> Result<PathBuf, RuncError> {
    let configured = std::env::var_os(ENV_RUNC)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            let text = std::fs::read_to_string(RUNC_PATH_FILE).ok()?;
            let line = text.lines().next()?.trim();
            (!line.is_empty()).then(|| PathBuf::from(line))
        })
        .unwrap_or_else(|| PathBuf::from("runc"));
    let resolved = resolve(&configured, std::env::var_os("PATH").as_deref())
        .ok_or_else(|| RuncError::NotFound { what: configured.display().to_string() })?;
    if let (Ok(me), Ok(it)) =
        (std::fs::canonicalize("/proc/self/exe"), std::fs::canonicalize(&resolved))
    {
        if me == it {
            return Err(RuncError::IsSelf { path: resolved });
        }
    }
    Ok(resolved)
}

/// A program name resolved like `execvp` does: a name with a slash is taken as it is,
/// another is looked up in `path_var`.
pub fn resolve(program: &Path, path_var: Option<&OsStr>) -> Option<PathBuf> {
    if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Replaces this process with `runc ARGS`. Returns only on failure.
pub fn exec(runc: &Path, args: &[OsString]) -> RuncError {
    let source = Command::new(runc).args(args).exec();
    RuncError::Spawn { path: runc.to_path_buf(), source }
}

/// Starts `runc ARGS` as a child sharing our stdio.
pub fn spawn(runc: &Path, args: &[OsString]) -> Result<Child, RuncError> {
    Command::new(runc)
        .args(args)
        .spawn()
        .map_err(|source| RuncError::Spawn { path: runc.to_path_buf(), source })
}

/// Signals a waiting parent passes on to runc.
pub const FORWARDED_SIGNALS: &[libc::c_int] = &[
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Starts `runc ARGS` as a child sharing our stdio, and passes on to it the signals this
/// process gets while it waits ([`FORWARDED_SIGNALS`]) instead of dying of them with
/// the clean-up undone. Signals a terminal sends to its whole foreground group (Ctrl-C)
/// reach runc directly and are not sent twice.
pub fn spawn_forwarding(runc: &Path, args: &[OsString]) -> Result<Child, RuncError> {
    // Blocked before the child exists, so none is lost; the child starts with an empty
    // mask (std resets it), and threads started later inherit the block.
    // SAFETY: plain libc calls on a local, initialized sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in FORWARDED_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let child = spawn(runc, args)?;
    let pid = child.id() as libc::pid_t;
    std::thread::spawn(move || loop {
        // SAFETY: `set` is a valid sigset_t owned by this thread; `info` is written by the
        // kernel.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig > 0 && info.si_code != libc::SI_KERNEL {
                libc::kill(pid, sig);
            }
        }
    });
    Ok(child)
}

/// The exit code a shell would report for `status` (128 + signal for a killed child).
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

/// What `runc state` says about a container (the fields we use).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RuncState {
    pub id: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub status: String,
    pub bundle: PathBuf,
    /// The config's annotations (runc copies them into its state).
    #[serde(default)]
    pub annotations: Option<std::collections::HashMap<String, String>>,
}

/// `runc GLOBAL state ID`: `Ok(None)` when runc does not know the container.
pub fn state(runc: &Path, global: &[OsString], id: &str) -> Result<Option<RuncState>, RuncError> {
    let output = Command::new(runc)
        .args(global)
        .arg("state")
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RuncError::Spawn { path: runc.to_path_buf(), source })?;
    parse_state(id, output.status.success(), &output.stdout, &output.stderr)
}

/// Interprets `runc state`'s outcome.
pub fn parse_state(
    id: &str,
    success: bool,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<Option<RuncState>, RuncError> {
    if !success {
        let message = String::from_utf8_lossy(stderr).trim().to_string();
        if message.contains("does not exist") || message.contains("not exist") {
            return Ok(None);
        }
        return Err(RuncError::State { id: id.to_string(), message });
    }
    serde_json::from_slice(stdout).map(Some).map_err(|e| RuncError::State {
        id: id.to_string(),
        message: format!("unreadable answer: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_like_execvp() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("fake-runc");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path_var =
            std::env::join_paths(["/nonexistent", dir.path().to_str().unwrap()]).unwrap();
        assert_eq!(resolve(Path::new("fake-runc"), Some(&path_var)), Some(bin.clone()));
        assert_eq!(resolve(&bin, None), Some(bin.clone()));
        assert_eq!(resolve(Path::new("nope"), Some(&path_var)), None);
        assert_eq!(resolve(&dir.path().join("nope"), None), None);
    }

    #[test]
    fn state_answers() {
        let json = br#"{"ociVersion":"1.0.2","id":"c","pid":12,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2024-01-01T00:00:00Z","owner":""}"#;
        let state = parse_state("c", true, json, b"").unwrap().unwrap();
        assert_eq!(state.pid, 12);
        assert_eq!(state.bundle, PathBuf::from("/b"));
        assert_eq!(parse_state("c", false, b"", b"container does not exist\n").unwrap(), None);
        assert!(parse_state("c", false, b"", b"permission denied").is_err());
        assert!(parse_state("c", true, b"nonsense", b"").is_err());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }
}
