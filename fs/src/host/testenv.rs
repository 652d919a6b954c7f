//! Test support: a fake host (fixture /proc and /sys) and a fake cgroup v2 tree in a
//! temporary directory, to run the views' `generate` end to end.

use std::path::Path;
use std::sync::Arc;

use super::HostProc;
use crate::caller::Caller;
use crate::cgroup::{Cgroups, Layout, ProcCgroups};
use crate::loadavg::LoadavgTracker;
use crate::views::{Request, ViewError};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/host");

/// A fixture host plus a cgroup v2 mount with the caller's cgroup `/ct`.
pub struct TestEnv {
    _tmp: tempfile::TempDir,
    pub host: HostProc,
    pub cgroups: Cgroups,
    pub caller: Caller,
    pub loadavg: LoadavgTracker,
}

impl TestEnv {
    /// `host` names a fixture host ("vm2", "big4"); the caller's cgroup `/ct` has the
    /// files in `files` (name, content), and `cpu.stat` unless given.
    pub fn new(host: &str, files: &[(&str, &str)]) -> TestEnv {
        Self::with_path(host, "/ct", files)
    }

    /// As [`TestEnv::new`], with the caller in cgroup `path` ("/" for the root).
    pub fn with_path(host: &str, path: &str, files: &[(&str, &str)]) -> TestEnv {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("cg");
        let dir = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(dir.join("cgroup.threads"), "").unwrap();
        if !files.iter().any(|(n, _)| *n == "cpu.stat") {
            std::fs::write(dir.join("cpu.stat"), "usage_usec 0\nuser_usec 0\nsystem_usec 0\n")
                .unwrap();
        }
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        let mountinfo = format!("30 1 0:26 / {} rw - cgroup2 cgroup2 rw\n", root.display());
        let cgroups = Cgroups::new(Layout::from_mountinfo(&mountinfo).unwrap());
        let pc = Arc::new(ProcCgroups::parse(&format!("0::{path}\n")).unwrap());
        let caller = Caller {
            pid: 1,
            start_ticks: 0,
            cgroups: pc,
            cgroup_id: 1,
            pid_ns: 1,
            ns_init_start_ticks: None,
        };
        let loadavg = LoadavgTracker::new(Arc::new(cgroups.clone()));
        let host = HostProc::new(
            Path::new(FIXTURES).join(host).join("proc"),
            Path::new(FIXTURES).join(host).join("sys"),
        );
        TestEnv { _tmp: tmp, host, cgroups, caller, loadavg }
    }

    pub fn request(&self) -> Request<'_> {
        Request {
            host: &self.host,
            cgroups: &self.cgroups,
            caller: &self.caller,
            loadavg: &self.loadavg,
        }
    }

    /// Runs a generator for this environment.
    pub fn run(
        &self,
        generate: fn(&Request<'_>) -> Result<Vec<u8>, ViewError>,
    ) -> Result<String, ViewError> {
        generate(&self.request()).map(|b| String::from_utf8(b).unwrap())
    }

    /// The fixture host's file `rel` below proc (or below sys for `sys/...`).
    pub fn host_file(&self, rel: &str) -> String {
        match rel.strip_prefix("sys/") {
            Some(r) => self.host.read_sys(r).unwrap(),
            None => self.host.read(rel).unwrap(),
        }
    }
}

/// A v2 `memory.stat` with the keys the meminfo view reads.
pub const MEMORY_STAT: &str =
    "anon 41943040\nfile 52428800\nkernel_stack 524288\npagetables 262144\n\
shmem 2097152\nfile_mapped 10485760\nfile_dirty 4096\nfile_writeback 0\nswapcached 1048576\n\
inactive_anon 10485760\nactive_anon 31457280\ninactive_file 29360128\nactive_file 20971520\n\
unevictable 2097152\nslab_reclaimable 3145728\nslab_unreclaimable 1048576\n";
