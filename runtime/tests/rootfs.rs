//! Root tests of the id-shifted rootfs: real overlays, idmapped mounts, user namespaces.
//! Each test skips with a message when not run as root.
//!
//! Every test works in its own temporary directory (run and lib dirs included), and a
//! guard unmounts whatever is left below it before the directory is removed, even when
//! the test fails.

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sysvisor_runc::idrange::{DiskRoot, IdRange};
use sysvisor_runc::rootfs::{Rootfs, RootfsError};

/// Root (real mounts and user namespaces), or a recorded skip.
fn is_root() -> bool {
    sysvisor_skip::unless_root()
}

fn range(n: u32) -> IdRange {
    IdRange {
        uid_base: 3_000_000_000 + n * 65536,
        gid_base: 3_100_000_000 + n * 65536,
        count: 65536,
    }
}

// ---------- mountinfo helpers ----------

struct MountLine {
    mount_point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn mounts() -> Vec<MountLine> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(MountLine {
                mount_point: PathBuf::from(f[4].replace("\\040", " ")),
                fstype: f[sep + 1].to_string(),
                super_opts: f.get(sep + 3).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mounts().into_iter().filter(|m| m.mount_point.starts_with(dir)).map(|m| m.mount_point).collect()
}

/// The last-listed mount at `path` (the top of the stack for the mounts these tests make).
fn top_at(path: &Path) -> Option<MountLine> {
    mounts().into_iter().rfind(|m| m.mount_point == path)
}

fn umount(path: &Path) -> bool {
    Command::new("umount").arg("-l").arg(path).status().map(|s| s.success()).unwrap_or(false)
}

// ---------- the test environment ----------

/// A Docker-like container layout in a temp dir, and a `Rootfs` over run/lib dirs in it.
struct Env {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    rootfs: Rootfs,
    id: String,
}

impl Env {
    fn new(id: &str) -> Env {
        let dir = tempfile::Builder::new().prefix("sysvisor-rootfs-").tempdir().unwrap();
        // Searchable by the container's root, as /run and /var/lib are.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
        let root = dir.path().to_path_buf();
        let rootfs = Rootfs::with_dirs(&root.join("run"), &root.join("lib"));
        Env { dir: Some(dir), root, rootfs, id: id.to_string() }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn upper(&self) -> PathBuf {
        self.p(&format!("lib/{}/upper", self.id))
    }

    /// Docker's overlay2 layout: image layer `base`, the `-init` layer, the container's
    /// fresh upper `diff`, mounted at `merged`. Everything owned by host root but one
    /// file of uid 1000.
    fn docker_overlay(&self) -> PathBuf {
        self.docker_overlay_owned_by(DiskRoot::HOST)
    }

    /// As [`Env::docker_overlay`], with every layer's ids moved up by `disk` (as Docker's
    /// userns-remap chowns them), but for one file left to host root (`etc/hostroot`).
    fn docker_overlay_owned_by(&self, disk: DiskRoot) -> PathBuf {
        let base = self.p("layers/base");
        for d in ["etc", "bin", "home/user", "tmp"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        fs::write(base.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        fs::write(base.join("bin/tool"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(base.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(base.join("home/user/file"), "mine\n").unwrap();
        std::os::unix::fs::chown(base.join("home/user/file"), Some(1000), Some(1000)).unwrap();
        let init = self.p("layers/init");
        fs::create_dir_all(init.join("etc")).unwrap();
        fs::write(init.join("etc/hosts"), "").unwrap();
        fs::write(init.join(".dockerenv"), "").unwrap();
        // Docker writes the WORKDIR into the container's own layer before the start.
        fs::create_dir_all(self.p("layers/diff/workdir")).unwrap();
        fs::create_dir_all(self.p("layers/work")).unwrap();
        if disk != DiskRoot::HOST {
            for layer in ["layers/base", "layers/init", "layers/diff"] {
                shift_owners(&self.p(layer), disk);
            }
            fs::write(base.join("etc/hostroot"), "host\n").unwrap();
        }
        let merged = self.p("layers/merged");
        fs::create_dir_all(&merged).unwrap();
        let opts = format!(
            "lowerdir={}:{},upperdir={},workdir={}",
            init.display(),
            base.display(),
            self.p("layers/diff").display(),
            self.p("layers/work").display()
        );
        let ok = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting the docker-like overlay");
        merged
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.rootfs.unshift(&self.id);
        let _ = self.rootfs.forget(&self.id);
        for _ in 0..20 {
            let mut left = mounts_under(&self.root);
            if left.is_empty() {
                break;
            }
            left.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for m in left {
                umount(&m);
            }
        }
        let dir = self.dir.take().unwrap();
        if mounts_under(&self.root).is_empty() {
            drop(dir);
        } else {
            // Never delete through a mount: leave the directory for a human.
            eprintln!("mounts left below {}, not removing it", dir.keep().display());
        }
    }
}

/// Adds `disk` to the owner of every file below `dir` (and of `dir`).
fn shift_owners(dir: &Path, disk: DiskRoot) {
    let m = fs::symlink_metadata(dir).unwrap();
    std::os::unix::fs::lchown(dir, Some(m.uid() + disk.uid), Some(m.gid() + disk.gid)).unwrap();
    if m.is_dir() {
        for entry in fs::read_dir(dir).unwrap() {
            shift_owners(&entry.unwrap().path(), disk);
        }
    }
}

// ---------- a shell in a user namespace ----------

/// Runs `sh -c script` as root of a new user namespace mapping 0..65536 to `range`
/// (uid and gid), with no supplementary groups; returns (success, stdout+stderr).
fn in_userns(range: &IdRange, script: &str) -> (bool, String) {
    let sh = CString::new("/bin/sh").unwrap();
    let argv_c =
        [CString::new("sh").unwrap(), CString::new("-c").unwrap(), CString::new(script).unwrap()];
    let argv: Vec<*const libc::c_char> =
        argv_c.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let (ready_r, ready_w) = pipe();
    let (go_r, go_w) = pipe();
    let (out_r, out_w) = pipe();
    // SAFETY: the child only makes async-signal-safe syscalls on prepared data, then execs.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: raw syscalls on inherited descriptors and pointers prepared before the
        // fork; the child ends in execv or _exit.
        unsafe {
            let ok: u8 = if libc::unshare(libc::CLONE_NEWUSER) == 0 { 1 } else { 0 };
            libc::write(ready_w.as_raw_fd(), (&ok as *const u8).cast(), 1);
            let mut b = 0u8;
            if libc::read(go_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) != 1 {
                libc::_exit(120);
            }
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setresgid(0, 0, 0) != 0
                || libc::setresuid(0, 0, 0) != 0
            {
                libc::_exit(121);
            }
            libc::dup2(out_w.as_raw_fd(), 1);
            libc::dup2(out_w.as_raw_fd(), 2);
            libc::execv(sh.as_ptr(), argv.as_ptr());
            libc::_exit(122);
        }
    }
    drop(ready_w);
    drop(go_r);
    drop(out_w);
    let mut b = [0u8; 1];
    fs::File::from(ready_r).read_exact(&mut b).unwrap();
    assert_eq!(b[0], 1, "unshare(CLONE_NEWUSER) failed");
    fs::write(format!("/proc/{pid}/uid_map"), format!("0 {} {}\n", range.uid_base, range.count))
        .unwrap();
    fs::write(format!("/proc/{pid}/gid_map"), format!("0 {} {}\n", range.gid_base, range.count))
        .unwrap();
    let mut go = fs::File::from(go_w);
    std::io::Write::write_all(&mut go, b"g").unwrap();
    drop(go);
    let mut out = String::new();
    fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: reaping our own child into a stack variable.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, out)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: fds is a writable array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors are new and ours.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

fn expect_userns(range: &IdRange, script: &str, expected: &str) {
    let (ok, out) = in_userns(range, &format!("set -e\n{script}"));
    assert!(ok, "script failed in the user namespace:\n{script}\n--- output:\n{out}");
    assert_eq!(out.trim(), expected.trim(), "script:\n{script}");
}

// ---------- tests ----------

#[test]
fn shift_write_unshift_restart() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-main");
    let r = range(1);
    let merged = env.docker_overlay();
    env.rootfs.shift(&env.id, &merged, &r).unwrap();

    // Docker's overlay stays alone at its path; ours, at shifted_root, writes to Docker's
    // upper dir through an idmapped clone of its directory.
    let shifted = env.rootfs.shifted_root(&env.id);
    assert_eq!(shifted, env.p("run/ctr-main/root"));
    let docker_upper = format!("upperdir={}", env.p("layers/diff").display());
    assert!(top_at(&merged).unwrap().super_opts.contains(&docker_upper));
    let ours = top_at(&shifted).unwrap();
    assert_eq!(ours.fstype, "overlay");
    let our_upper = format!("upperdir={}", env.p("run/ctr-main/layer/diff").display());
    assert!(ours.super_opts.contains(&our_upper), "{}", ours.super_opts);
    let line = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = line.lines().rfind(|l| l.split(' ').nth(4) == shifted.to_str()).unwrap();
    assert!(line.split(' ').nth(5).unwrap().split(',').any(|o| o == "nodev"), "{line}");

    // Inside: image files belong to root (uid 1000 stays 1000), root can change them and
    // create new ones; Docker's own layer (workdir) and the init layer are there.
    let m = shifted.display();
    expect_userns(
        &r,
        &format!(
            "cd {m}\n\
             stat -c %u:%g . etc/passwd bin/tool workdir .dockerenv home/user/file\n\
             echo appended >> etc/passwd\n\
             echo new > newfile\n\
             mkdir newdir && chown 1000:1000 newdir\n\
             rm etc/hosts\n\
             stat -c %u:%g newfile newdir etc/passwd\n\
             id -u"
        ),
        "0:0\n0:0\n0:0\n0:0\n0:0\n1000:1000\n0:0\n1000:1000\n0:0\n0",
    );

    // On the host: the changes are in Docker's upper dir, with the ids they have inside
    // (what `docker diff` and `docker commit` read); the image layers are untouched.
    let up = env.p("layers/diff");
    assert_eq!(owner(&up.join("newfile")), (0, 0));
    assert_eq!(owner(&up.join("newdir")), (1000, 1000));
    assert_eq!(owner(&up.join("etc/passwd")), (0, 0));
    assert!(fs::read_to_string(up.join("etc/passwd")).unwrap().contains("appended"));
    let whiteout = fs::symlink_metadata(up.join("etc/hosts")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0, "{whiteout:?}");
    let base_passwd = env.p("layers/base/etc/passwd");
    assert_eq!(owner(&base_passwd), (0, 0));
    assert!(!fs::read_to_string(&base_passwd).unwrap().contains("appended"));
    assert!(env.p("layers/init/etc/hosts").exists());
    // What the engine writes at its own path as host root (`docker cp` into the running
    // container) is root's inside, and 1000 stays 1000.
    fs::write(merged.join("fromdocker"), "cp\n").unwrap();
    fs::write(merged.join("fromdocker1000"), "cp\n").unwrap();
    std::os::unix::fs::chown(merged.join("fromdocker1000"), Some(1000), Some(1000)).unwrap();
    // Also where the engine's overlay must copy a directory up (its work dir is its own).
    fs::write(merged.join("tmp/fromdocker"), "cp\n").unwrap();
    expect_userns(
        &r,
        &format!(
            "cat {m}/fromdocker; stat -c %u:%g {m}/fromdocker {m}/fromdocker1000 {m}/tmp/fromdocker"
        ),
        "cp\n0:0\n1000:1000\n0:0",
    );
    // A host user outside the range cannot enter the container's directory.
    let dir_meta = fs::metadata(env.p("run/ctr-main")).unwrap();
    assert_eq!((dir_meta.mode() & 0o777, dir_meta.gid()), (0o710, r.gid_base));

    // unshift: nothing of ours stays mounted; Docker's overlay is untouched.
    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
    assert!(top_at(&merged).unwrap().super_opts.contains(&docker_upper));
    assert!(!env.p("run/ctr-main").exists());
    assert!(merged.join("newfile").exists(), "Docker's view has the container's files");
    env.rootfs.unshift(&env.id).unwrap(); // idempotent

    // docker stop + start: shift again; the earlier file is still root's inside.
    env.rootfs.shift(&env.id, &merged, &r).unwrap();
    expect_userns(
        &r,
        &format!("cd {m}; cat newfile; stat -c %u:%g newfile; grep -c appended etc/passwd; test ! -e etc/hosts && echo gone"),
        "new\n0:0\n1\ngone",
    );
    env.rootfs.unshift(&env.id).unwrap();

    // Nothing of the container is kept outside Docker's layer.
    assert!(env.rootfs.persisted().unwrap().is_empty());
    assert!(!env.p("lib").exists());
    env.rootfs.forget(&env.id).unwrap();
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
}

#[test]
fn bind_sources_file_and_directory() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-binds");
    let r = range(2);
    // Like /var/lib/docker/containers/ID/hosts and a -v volume: owned by host root, in a
    // directory the container's root cannot search.
    let src = env.p("containers/ID");
    fs::create_dir_all(src.join("vol/sub")).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(src.join("hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(src.join("vol/data"), "data\n").unwrap();

    let file = env.rootfs.shift_bind_source(&env.id, &src.join("hosts"), &r).unwrap();
    let dir = env.rootfs.shift_bind_source(&env.id, &src.join("vol"), &r).unwrap();
    assert_ne!(file, dir);
    assert!(file.starts_with(env.p("run/ctr-binds/bind")));
    // The same source again: the same clone.
    assert_eq!(env.rootfs.shift_bind_source(&env.id, &src.join("hosts"), &r).unwrap(), file);
    assert_eq!(mounts_under(&env.p("run/ctr-binds")).len(), 2);

    expect_userns(
        &r,
        &format!(
            "stat -c %u:%g {f} {d} {d}/data {d}/sub\n\
             echo '10.0.0.1 other' >> {f}\n\
             echo made > {d}/made; mkdir {d}/sub/newdir\n\
             stat -c %u:%g {d}/made",
            f = file.display(),
            d = dir.display()
        ),
        "0:0\n0:0\n0:0\n0:0\n0:0",
    );
    // Written through the idmapped clone: on disk as host root, in the real source.
    assert!(fs::read_to_string(src.join("hosts")).unwrap().contains("10.0.0.1 other"));
    assert_eq!(owner(&src.join("vol/made")), (0, 0));
    assert_eq!(owner(&src.join("vol/sub/newdir")), (0, 0));

    // A filesystem without idmapped mounts: a clear error, nothing left behind.
    let err = env.rootfs.shift_bind_source(&env.id, Path::new("/proc/sys/kernel"), &r).unwrap_err();
    assert!(matches!(err, RootfsError::Unsupported(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(
            "kernel lacks idmapped mounts (mount_setattr MOUNT_ATTR_IDMAP: EINVAL) on proc"
        ),
        "{msg}"
    );
    assert_eq!(mounts_under(&env.p("run/ctr-binds")).len(), 2);

    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
    assert!(!env.p("run/ctr-binds").exists());
    assert_eq!(fs::read_to_string(src.join("vol/data")).unwrap(), "data\n");
}

#[test]
fn unshift_after_a_crash_and_repeated_shift() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-crash");
    let r = range(3);
    let merged = env.docker_overlay();
    env.rootfs.shift(&env.id, &merged, &r).unwrap();
    let bind = env.rootfs.shift_bind_source(&env.id, &env.p("layers/base/etc/passwd"), &r).unwrap();

    // A repeated create: the rootfs is shifted afresh, one overlay of ours on the stack,
    // the bind clone stays.
    env.rootfs.shift(&env.id, &merged, &r).unwrap();
    let shifted = env.rootfs.shifted_root(&env.id);
    let ours = |at: &Path| {
        let layer = env.p("run/ctr-crash/layer").display().to_string();
        mounts().iter().filter(|m| m.mount_point == at && m.super_opts.contains(&layer)).count()
    };
    assert_eq!(ours(&merged), 0);
    assert_eq!(ours(&shifted), 1);
    assert!(top_at(&bind).is_some());
    expect_userns(
        &r,
        &format!("stat -c %u {}/etc/passwd {}", shifted.display(), bind.display()),
        "0\n0",
    );

    // The state file is lost (crash while writing, a hand clean-up): unshift still finds
    // every mount of ours through mountinfo.
    fs::remove_file(env.p("run/ctr-crash/state.json")).unwrap();
    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
    assert_eq!(ours(&shifted), 0);
    assert!(!env.p("run/ctr-crash").exists());
    // Docker's overlay is intact.
    assert!(merged.join(".dockerenv").exists());
}

#[test]
fn plain_directory_rootfs() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-plain");
    let r = range(4);
    let rootfs = env.p("bundle/rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/motd"), "hi\n").unwrap();
    env.rootfs.shift(&env.id, &rootfs, &r).unwrap();
    expect_userns(
        &r,
        &format!(
            "cd {}; stat -c %u etc/motd; echo x >> etc/motd; touch new; stat -c %u new",
            env.rootfs.shifted_root(&env.id).display()
        ),
        "0\n0",
    );
    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(mounts_under(&env.root), Vec::<PathBuf>::new());
    // The directory itself is written, with the container's own ids, as runc would.
    assert_eq!(fs::read_to_string(rootfs.join("etc/motd")).unwrap(), "hi\nx\n");
    assert_eq!(owner(&rootfs.join("new")), (0, 0));
}

/// A container made by an older sysvisor-runc kept its writes in its own upper layer
/// (owned by its range on disk): they stay visible, above the image; Docker's layer gets
/// what is written now. A kept layer of another range is refused.
#[test]
fn upper_kept_by_an_older_version() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-legacy");
    let r = range(5);
    let merged = env.docker_overlay();
    fs::create_dir_all(env.upper()).unwrap();
    fs::set_permissions(env.p("lib"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(env.upper(), Some(r.uid_base), Some(r.gid_base)).unwrap();
    fs::write(env.upper().join("old"), "old\n").unwrap();
    std::os::unix::fs::chown(env.upper().join("old"), Some(r.uid_base), Some(r.gid_base)).unwrap();
    env.rootfs.shift(&env.id, &merged, &r).unwrap();
    let m = env.rootfs.shifted_root(&env.id);
    expect_userns(
        &r,
        &format!("cd {}; cat old; stat -c %u old etc/passwd; touch new", m.display()),
        "old\n0\n0",
    );
    assert_eq!(owner(&env.p("layers/diff/new")), (0, 0));
    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(env.rootfs.persisted().unwrap(), vec!["ctr-legacy".to_string()]);

    let err = env.rootfs.shift(&env.id, &merged, &range(6)).unwrap_err();
    assert!(matches!(err, RootfsError::RangeMismatch { .. }), "{err:?}");
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
    assert!(top_at(&merged).unwrap().super_opts.contains("layers/diff"));
    // docker rm: forget removes the kept layer.
    env.rootfs.forget(&env.id).unwrap();
    assert!(!env.p("lib/ctr-legacy").exists());
}

#[test]
fn bad_inputs() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-bad");
    let r = range(7);
    assert!(matches!(
        env.rootfs.shift("../x", &env.root, &r),
        Err(RootfsError::InvalidContainerId(_))
    ));
    assert!(matches!(env.rootfs.unshift("a/b"), Err(RootfsError::InvalidContainerId(_))));
    let err = env.rootfs.shift(&env.id, &env.p("missing"), &r).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    fs::write(env.p("file"), "").unwrap();
    assert!(matches!(
        env.rootfs.shift(&env.id, &env.p("file"), &r),
        Err(RootfsError::Layout { .. })
    ));
    // An ancestor above the run dir's parent that others cannot search: a clear error.
    fs::create_dir_all(env.p("closed/sysvisor")).unwrap();
    fs::create_dir_all(env.p("rootfs")).unwrap();
    fs::set_permissions(env.p("closed"), fs::Permissions::from_mode(0o700)).unwrap();
    let other = Rootfs::with_dirs(&env.p("closed/sysvisor/rootfs"), &env.p("lib"));
    let err = other.shift(&env.id, &env.p("rootfs"), &r).unwrap_err();
    assert!(err.to_string().contains("closed (mode 700) is not searchable by others"), "{err}");
    assert_eq!(mounts_under(&env.root), Vec::<PathBuf>::new());
}

/// The whole chain with the reference engine: runc 1.1.5 runs a container from the
/// shifted root of an overlay kept in a directory the container's root cannot search (as
/// Docker's /var/lib/docker is 0710 root:root). Skipped without runc or a static busybox.
#[test]
fn runc_runs_the_shifted_root() {
    if !is_root() {
        return;
    }
    let runc = ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/sbin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let busybox = Path::new("/bin/busybox");
    let Some(runc) = runc else {
        sysvisor_skip::required("no runc (scripts/install-deps.sh installs it)");
        return;
    };
    let static_bb = Command::new("file")
        .arg(busybox)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"));
    if !busybox.exists() || !matches!(static_bb, Ok(true)) {
        sysvisor_skip::required(
            "no static busybox (scripts/install-deps.sh installs busybox-static)",
        );
        return;
    }
    let env = Env::new("ctr-runc");
    let r = range(8);
    let merged = env.docker_overlay();
    fs::copy(busybox, env.p("layers/base/bin/busybox")).unwrap();
    for d in ["proc", "dev", "sys"] {
        fs::create_dir_all(env.p("layers/base").join(d)).unwrap();
    }
    fs::set_permissions(env.p("layers"), fs::Permissions::from_mode(0o700)).unwrap();
    // As the sysvisor-fs daemon leaves /run/sysvisor (its socket's dir): 0700.
    fs::create_dir(env.p("run")).unwrap();
    fs::set_permissions(&env.root, fs::Permissions::from_mode(0o700)).unwrap();
    env.rootfs.shift(&env.id, &merged, &r).unwrap();
    assert_eq!(fs::metadata(&env.root).unwrap().mode() & 0o777, 0o701, "o+x added, nothing else");

    let bundle = env.p("bundle");
    fs::create_dir_all(&bundle).unwrap();
    assert!(Command::new(runc)
        .args(["spec", "--rootless"])
        .current_dir(&bundle)
        .status()
        .unwrap()
        .success());
    let run = |root_path: &Path, name: &str| {
        let mut c: serde_json::Value =
            serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
        c["root"] = serde_json::json!({"path": root_path, "readonly": false});
        c["process"]["terminal"] = false.into();
        c["process"]["args"] = serde_json::json!([
            "/bin/busybox", "sh", "-c",
            "/bin/busybox id -u; /bin/busybox stat -c %u /etc/passwd /bin/busybox; echo hi > /fromrunc; /bin/busybox stat -c %u /fromrunc"
        ]);
        c["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": r.uid_base, "size": r.count}]);
        c["linux"]["gidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": r.gid_base, "size": r.count}]);
        fs::write(bundle.join("config.json"), c.to_string()).unwrap();
        Command::new(runc)
            .arg("--root")
            .arg(env.p("runc-state"))
            .args(["run", "-b"])
            .arg(&bundle)
            .arg(name)
            .output()
            .unwrap()
    };
    // Docker's path: runc resolves it as the container's root and is refused.
    let out = run(&merged, "sysvisor-test-orig");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"), "{out:?}");
    // shifted_root: works; files are root's inside, the new one is the range's outside.
    let out = run(&env.rootfs.shifted_root(&env.id), "sysvisor-test-shifted");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0\n0\n0\n0");
    assert_eq!(owner(&env.p("layers/diff/fromrunc")), (0, 0));
    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
}

/// Docker's data root is a shared mount (Docker makes it so): the overlay under it, and
/// ours on top, take part in mount propagation.
#[test]
fn under_a_shared_mount_like_dockers_data_root() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-shared");
    let r = range(9);
    let layers = env.p("layers");
    fs::create_dir_all(&layers).unwrap();
    let sh = |args: &[&str]| Command::new("mount").args(args).status().unwrap().success();
    assert!(sh(&["--bind", layers.to_str().unwrap(), layers.to_str().unwrap()]));
    assert!(sh(&["--make-rshared", layers.to_str().unwrap()]));
    let merged = env.docker_overlay();
    env.rootfs.shift(&env.id, &merged, &r).unwrap();
    expect_userns(
        &r,
        &format!(
            "stat -c %u {m}/etc/passwd; touch {m}/x; stat -c %u {m}/x",
            m = env.rootfs.shifted_root(&env.id).display()
        ),
        "0\n0",
    );
    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
    assert!(top_at(&merged).unwrap().super_opts.contains("layers/diff"));
    assert_eq!(owner(&merged.join("x")), (0, 0));
}

/// The inner engines' volume goes into Docker's upper dir with the container's own ids at
/// pause/stop (opaque, replacing an older copy), and from the shifted rootfs into an empty
/// volume (owned by the range) at create; a symlink the container planted on the way
/// refuses the copy.
#[test]
fn volumes_sync_into_the_layer_and_back() {
    use std::os::unix::fs::{chown, symlink};
    use sysvisor_runc::volumes::{sync, Volumes};
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-sync");
    let r = range(10);
    let merged = env.docker_overlay();
    // An older copy in the image below, which must not mix in.
    fs::create_dir_all(env.p("layers/base/var/lib/docker/stale")).unwrap();
    let mknod = |p: &Path, mode: libc::mode_t, dev: libc::dev_t| {
        let c = CString::new(p.to_str().unwrap()).unwrap();
        // SAFETY: c is a valid NUL-terminated path living across the call.
        assert_eq!(unsafe { libc::mknod(c.as_ptr(), mode, dev) }, 0, "mknod {}", p.display());
    };
    let volumes = Volumes::at(&env.p("volumes"));
    let docker = volumes.dir(&env.id).unwrap().join("docker");
    volumes.ensure(&env.id, &r, std::slice::from_ref(&docker)).unwrap();
    env.rootfs.shift(&env.id, &merged, &r).unwrap();

    // What the inner engine wrote (owned by the range on disk).
    fs::create_dir_all(docker.join("image/overlay2")).unwrap();
    fs::write(docker.join("image/repositories.json"), "{}").unwrap();
    fs::write(docker.join("image/overlay2/user-file"), "u").unwrap();
    for p in ["image", "image/overlay2", "image/repositories.json"] {
        chown(docker.join(p), Some(r.uid_base), Some(r.gid_base)).unwrap();
    }
    chown(
        docker.join("image/overlay2/user-file"),
        Some(r.uid_base + 1000),
        Some(r.gid_base + 1000),
    )
    .unwrap();
    // An inner overlay's whiteout, and a host device node the container could not make.
    mknod(&docker.join("image/wh"), libc::S_IFCHR, 0);
    chown(docker.join("image/wh"), Some(r.uid_base), Some(r.gid_base)).unwrap();
    let written = sync::save(&volumes, &env.rootfs, &env.id).unwrap();
    let up = env.p("layers/diff/var/lib/docker");
    // A crafted image: a node of a host device where the volume's copy comes from.
    mknod(&up.join("image/mem"), libc::S_IFCHR | 0o666, libc::makedev(1, 1));
    mknod(&up.join("image/disk"), libc::S_IFBLK | 0o666, libc::makedev(8, 0));
    assert_eq!(written, vec![up.clone()]);
    assert_eq!(owner(&up), (0, 0));
    assert_eq!(owner(&up.join("image/repositories.json")), (0, 0));
    assert_eq!(owner(&up.join("image/overlay2/user-file")), (1000, 1000));
    // The inner whiteout is an escaped empty file there, not one of the outer overlay.
    assert!(!up.join("image/wh").exists());
    assert_eq!(fs::metadata(up.join("image/.sysvisor-wh.wh")).unwrap().len(), 0);
    let (path, mut value) = (CString::new(up.to_str().unwrap()).unwrap(), [0u8; 8]);
    // SAFETY: valid NUL-terminated strings and a writable buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    assert_eq!(n, 1, "no opaque mark on {}", up.display());
    assert_eq!(value[0], b'y');
    // Again: the old copy is replaced, not merged into.
    fs::remove_file(docker.join("image/repositories.json")).unwrap();
    sync::save(&volumes, &env.rootfs, &env.id).unwrap();
    assert!(!up.join("image/repositories.json").exists());
    assert!(up.join("image/overlay2/user-file").exists());
    assert!(mounts_under(&env.p("run/ctr-sync/view")).is_empty(), "the view is unmounted");
    env.rootfs.unshift(&env.id).unwrap();

    // A container of the committed image: its empty volume gets the copy, owned by its
    // range, without the older copy of the layer below.
    let r2 = range(11);
    env.rootfs.shift("ctr-sync2", &merged, &r2).unwrap();
    let docker2 = volumes.dir("ctr-sync2").unwrap().join("docker");
    volumes.ensure("ctr-sync2", &r2, std::slice::from_ref(&docker2)).unwrap();
    let root2 = env.rootfs.shifted_root("ctr-sync2");
    let filled = sync::seed(&root2, std::slice::from_ref(&docker2)).unwrap();
    assert_eq!(filled, vec![docker2.clone()]);
    assert_eq!(owner(&docker2), (r2.uid_base, r2.gid_base));
    let user_file = docker2.join("image/overlay2/user-file");
    assert_eq!(owner(&user_file), (r2.uid_base + 1000, r2.gid_base + 1000));
    assert!(!docker2.join("stale").exists(), "the opaque copy hides the one below");
    let wh = fs::symlink_metadata(docker2.join("image/wh")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "the whiteout is back");
    assert_eq!((wh.uid(), wh.gid()), (r2.uid_base, r2.gid_base));
    assert!(!docker2.join("image/.sysvisor-wh.wh").exists());
    assert!(!docker2.join("image/mem").exists() && !docker2.join("image/disk").exists());
    // A volume with data is the container's own: left alone.
    fs::remove_file(&user_file).unwrap();
    assert!(sync::seed(&root2, std::slice::from_ref(&docker2)).unwrap().is_empty());
    assert!(!user_file.exists());
    env.rootfs.unshift("ctr-sync2").unwrap();

    // The container made /var/lib a symlink to a host directory: refused, nothing written.
    env.rootfs.shift(&env.id, &merged, &r).unwrap();
    let host_dir = env.p("host-etc");
    fs::create_dir_all(&host_dir).unwrap();
    let lib = env.p("layers/diff/var/lib");
    fs::remove_dir_all(&lib).unwrap();
    symlink(&host_dir, &lib).unwrap();
    let err = sync::save(&volumes, &env.rootfs, &env.id).unwrap_err();
    assert!(err.to_string().contains("is not a directory (a symlink?)"), "{err}");
    assert_eq!(fs::read_dir(&host_dir).unwrap().count(), 0, "the copy reached the host");
    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
}

/// Docker's overlay, mounted afresh at pause, shows what the container changed through its
/// own overlay even where Docker had looked before; one mount stays at Docker's path.
#[test]
fn refreshed_engine_mount_shows_the_containers_changes() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-refresh");
    let r = range(12);
    let merged = env.docker_overlay();
    env.rootfs.shift(&env.id, &merged, &r).unwrap();
    // Docker looks at /etc (as it does at start).
    let _ = fs::read_dir(merged.join("etc")).unwrap().count();
    assert!(merged.join("etc/hosts").exists());
    let m = env.rootfs.shifted_root(&env.id);
    expect_userns(&r, &format!("rm {m}/etc/hosts; echo n > {m}/etc/new", m = m.display()), "");

    assert!(env.rootfs.refresh_engine_mount(&env.id).unwrap());
    assert!(!merged.join("etc/hosts").exists());
    assert_eq!(fs::read_to_string(merged.join("etc/new")).unwrap(), "n\n");
    assert_eq!(owner(&merged.join("etc/new")), (0, 0));
    let at_merged = mounts().into_iter().filter(|l| l.mount_point == merged).count();
    assert_eq!(at_merged, 1, "Docker's path holds one overlay");
    assert!(top_at(&merged).unwrap().super_opts.contains("layers/diff"));
    // The container's overlay still works (its own work dir).
    expect_userns(
        &r,
        &format!("cp {m}/bin/tool {m}/etc/tool2 && stat -c %u {m}/etc/tool2", m = m.display()),
        "0",
    );
    env.rootfs.unshift(&env.id).unwrap();
    assert_eq!(mounts_under(&env.p("run")), Vec::<PathBuf>::new());
    // Not shifted: nothing to refresh.
    assert!(!env.rootfs.refresh_engine_mount(&env.id).unwrap());
}

#[test]
fn layers_of_a_userns_remap_engine_are_shifted_from_its_root() {
    if !is_root() {
        return;
    }
    let env = Env::new("ctr-remap");
    let r = range(5);
    let disk = DiskRoot { uid: 2_000_000_000, gid: 2_100_000_000 };
    let merged = env.docker_overlay_owned_by(disk);
    env.rootfs.shift_from(&env.id, &merged, &r, disk).unwrap();
    // Docker's range shows as the container's ids; a host root file is nobody's.
    let shifted = env.rootfs.shifted_root(&env.id);
    expect_userns(
        &r,
        &format!(
            "cd {}\n\
             stat -c %u:%g . etc/passwd home/user/file .dockerenv workdir etc/hostroot\n\
             echo more >> etc/passwd\n\
             ! echo more 2>/dev/null >> etc/hostroot\n\
             echo ok",
            shifted.display()
        ),
        "0:0\n0:0\n1000:1000\n0:0\n0:0\n65534:65534\nok",
    );
    // What root wrote lands in Docker's layer with Docker's remapped root as owner, as
    // the engine's own containers store it.
    assert_eq!(owner(&env.p("layers/diff/etc/passwd")), (disk.uid, disk.gid));
    assert_eq!(owner(&env.p("layers/base/etc/passwd")), (disk.uid, disk.gid), "layers untouched");
}
