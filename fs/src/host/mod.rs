//! The host's own /proc and /sys files, read from configurable roots (fixtures in tests).

use std::path::PathBuf;

use crate::views::ViewError;

/// Where the host's /proc and /sys are.
#[derive(Debug, Clone)]
pub struct HostProc {
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
}

impl HostProc {
    pub fn new(proc_root: impl Into<PathBuf>, sys_root: impl Into<PathBuf>) -> Self {
        HostProc { proc_root: proc_root.into(), sys_root: sys_root.into() }
    }

    /// The running system's /proc and /sys.
    pub fn system() -> Self {
        HostProc::new("/proc", "/sys")
    }

    /// Reads a file below the proc root, e.g. `meminfo`.
    pub fn read(&self, rel: &str) -> Result<String, ViewError> {
        let path = self.proc_root.join(rel);
        std::fs::read_to_string(&path)
            .map_err(|source| ViewError::Host { path: path.display().to_string(), source })
    }
}
