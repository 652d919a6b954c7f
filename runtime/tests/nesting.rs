//! Root tests of the side effects for nested system software: the volume directories and
//! the cgroup delegation, on this host's real filesystems and cgroup hierarchies. Each test
//! skips with a message when not run as root and cleans up after itself (guards).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use sysvisor_runc::cgroups::{self, Hierarchy};
use sysvisor_runc::idrange::IdRange;
use sysvisor_runc::rootfs::mountinfo;
use sysvisor_runc::volumes::{VolumeError, Volumes, VOLUMES};

/// Root (chown, mounts, cgroups), or a recorded skip.
fn is_root() -> bool {
    sysvisor_skip::unless_root()
}

const RANGE: IdRange = IdRange { uid_base: 3_200_000_000, gid_base: 3_300_000_000, count: 65536 };

fn sources(v: &Volumes, id: &str) -> Vec<PathBuf> {
    let dir = v.dir(id).unwrap();
    VOLUMES.iter().map(|(name, _)| dir.join(name)).collect()
}

/// Unmounts what a failed test left below a directory.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: umount2 of a NUL-terminated path; failing (not mounted) is fine.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn volumes_belong_to_the_range_and_go_only_when_nothing_is_mounted() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("volumes");
    let v = Volumes::at(&root);
    let wanted = sources(&v, "c1");
    v.ensure("c1", &RANGE, &wanted).unwrap();

    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let owner = |p: &Path| {
        let m = fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!((mode(&root), owner(&root)), (0o711, (0, 0)));
    let dir = v.dir("c1").unwrap();
    assert_eq!((mode(&dir), owner(&dir)), (0o710, (0, RANGE.gid_base)));
    for s in &wanted {
        assert_eq!((mode(s), owner(s)), (0o700, (RANGE.uid_base, RANGE.gid_base)), "{s:?}");
    }

    // Kept as they are on the next create (docker start), contents included.
    fs::write(wanted[0].join("data"), "x").unwrap();
    v.ensure("c1", &RANGE, &wanted).unwrap();
    assert_eq!(fs::read_to_string(wanted[0].join("data")).unwrap(), "x");

    // Another range (an id range lost and given anew) must not silently own old data.
    let other = IdRange { uid_base: RANGE.uid_base + 65536, ..RANGE };
    let err = v.ensure("c1", &other, &wanted).unwrap_err();
    assert!(matches!(err, VolumeError::RangeMismatch { .. }), "{err}");

    // Nothing is removed while something is mounted below.
    let mnt = wanted[0].join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _guard = Unmount(mnt.clone());
    let out = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&mnt).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = v.remove("c1").unwrap_err();
    assert!(matches!(err, VolumeError::Busy { .. }), "{err}");
    assert!(wanted[0].join("data").exists());
    drop(_guard);

    // Files the container made with any owner and mode go too.
    fs::create_dir(wanted[1].join("locked")).unwrap();
    fs::write(wanted[1].join("locked/f"), "").unwrap();
    fs::set_permissions(wanted[1].join("locked"), fs::Permissions::from_mode(0o000)).unwrap();
    v.remove("c1").unwrap();
    assert!(!dir.exists());
    v.remove("c1").unwrap(); // idempotent
    assert!(root.exists(), "the shared parent stays");
}

/// A process moved into fresh cgroups of every hierarchy of the host, removed on drop.
struct TestCgroups {
    dirs: Vec<PathBuf>,
    child: Child,
}

impl TestCgroups {
    fn new(hierarchies: &[Hierarchy]) -> TestCgroups {
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        let name = format!("sysvisor-nesting-test-{}", std::process::id());
        let mut t = TestCgroups { dirs: Vec::new(), child };
        for h in hierarchies {
            let dir = h.mount_point.join(&name);
            fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            t.dirs.push(dir.clone());
            // A v1 cpuset cgroup takes no process before it has CPUs and memory nodes.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(h.mount_point.join(f)) {
                    fs::write(dir.join(f), v.trim()).unwrap();
                }
            }
            fs::write(dir.join("cgroup.procs"), t.child.id().to_string())
                .unwrap_or_else(|e| panic!("moving into {}: {e}", dir.display()));
        }
        t
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in &self.dirs {
            let _ = fs::remove_dir(d);
        }
    }
}

#[test]
fn a_processs_cgroups_are_given_to_the_range_but_not_their_limits() {
    if !is_root() {
        return;
    }
    let hierarchies = cgroups::hierarchies(&mountinfo::read().unwrap());
    if hierarchies.is_empty() {
        sysvisor_skip::optional("no cgroup hierarchy mounted");
        return;
    }
    let t = TestCgroups::new(&hierarchies);
    let changed = cgroups::delegate(t.child.id(), RANGE.uid_base, RANGE.gid_base).unwrap();

    let delegate_file = fs::read_to_string(cgroups::DELEGATE_FILE).unwrap_or_default();
    for (dir, h) in t.dirs.iter().zip(&hierarchies) {
        let owned = |f: &str| {
            let m = fs::metadata(dir.join(f)).unwrap();
            (m.uid(), m.gid()) == (RANGE.uid_base, RANGE.gid_base)
        };
        assert!(owned(""), "{}", dir.display());
        assert!(changed.contains(dir));
        let files: Vec<String> = match &h.v1 {
            None if !delegate_file.is_empty() => cgroups::parse_delegate_file(&delegate_file),
            None => cgroups::V2_DELEGATE_FALLBACK.iter().map(|s| s.to_string()).collect(),
            Some(_) => cgroups::V1_DELEGATED.iter().map(|s| s.to_string()).collect(),
        };
        for f in files.iter().filter(|f| dir.join(f).exists()) {
            assert!(owned(f), "{}/{f}", dir.display());
        }
        // Everything else stays root's: limits, notify_on_release, ...
        for entry in fs::read_dir(dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if !files.contains(&name) {
                let m = fs::metadata(dir.join(&name)).unwrap();
                assert_eq!(m.uid(), 0, "{}/{name} was given away", dir.display());
            }
        }
    }
    // The parents (the host's root cgroups) were not touched.
    for h in &hierarchies {
        assert_eq!(fs::metadata(&h.mount_point).unwrap().uid(), 0);
    }
}
