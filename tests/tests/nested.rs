//! Docker and systemd inside system containers, without `--privileged` (issue 6).
//!
//! The systemd and Docker tests use the Debian bookworm image of `sysvisor_e2e::images`
//! (debootstrap once, cached tarball, `docker import`); the others the busybox image. Each
//! test removes its containers (guards) and checks that nothing of them is left.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use sysvisor_e2e::{scratch_dir, Container, Engine, IdMap, Output, RANGE, RUNTIME, SYSVISOR_LIB};

/// The uid map of a running container's init, as the host sees it.
#[track_caller]
fn host_range(c: &Container) -> IdMap {
    let map = c.uid_map().unwrap_or_else(|| panic!("no uid map for {}", c.name));
    assert_eq!((map.inside, map.count), (0, RANGE), "{map:?}");
    assert_ne!(map.outside, 0, "{map:?}");
    map
}

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn poll(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Waits for systemd inside `c` to finish booting; returns `systemctl is-system-running`
/// and the failed units.
fn boot(c: &Container) -> (String, String) {
    // --wait blocks until the boot ends (running, degraded, ...); before systemd answers on
    // its bus at all, systemctl prints nothing ("offline" on stderr).
    let mut state = String::new();
    let answered = poll(Duration::from_secs(120), || {
        state = c.exec(&["systemctl", "is-system-running", "--wait"]).out();
        !matches!(state.as_str(), "" | "offline" | "initializing" | "starting")
    });
    assert!(answered, "systemd did not finish booting: {state:?}\n{}", c.docker("logs"));
    let failed = c.exec(&["systemctl", "--failed", "--no-legend", "--plain"]).out();
    (state, failed)
}

/// Starts the systemd + Docker image with `options`, waits until systemd has booted and the
/// inner dockerd (started by systemd) answers, and imports a busybox image `bb` into it.
#[track_caller]
fn system_container_with_docker<'e>(e: &'e Engine, options: &[&str]) -> Container<'e> {
    let image = e.systemd_docker_image().to_string();
    let mut opts = vec!["--runtime", RUNTIME];
    opts.extend_from_slice(options);
    let (c, out) = e.run_image_detached(&image, &opts, &[]);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let (state, failed) = boot(&c);
    assert!(state == "running" || state == "degraded", "systemd: {state}\nfailed units:\n{failed}");
    let ready = poll(Duration::from_secs(60), || c.exec(&["docker", "info"]).success());
    assert!(
        ready,
        "the inner dockerd does not answer: {}\n{}",
        c.exec(&["docker", "info"]),
        c.exec(&["journalctl", "-u", "docker", "--no-pager", "-n", "30"])
    );
    // A busybox rootfs from the image's busybox-static, without a registry.
    c.sh("set -e; rm -rf /tmp/bb; mkdir -p /tmp/bb/bin; cp /bin/busybox /tmp/bb/bin/; \
          for a in $(/bin/busybox --list); do [ -e /tmp/bb/bin/$a ] || ln -s busybox /tmp/bb/bin/$a; done; \
          tar -C /tmp/bb -c . | docker import -c 'ENV PATH=/bin' - bb >/dev/null; rm -rf /tmp/bb")
        .expect_success();
    c
}

#[test]
fn docker_runs_inside_a_system_container_on_overlay2() {
    let Some(e) = Engine::get() else { return };
    let c = system_container_with_docker(&e, &["-m", "512m"]);
    let range = host_range(&c);
    let id = c.id();

    // /var/lib/docker is the host directory of the container (not its rootfs overlay), so
    // the inner dockerd can use overlayfs.
    let driver = c.exec(&["docker", "info", "-f", "{{.Driver}}"]).expect_success();
    assert_eq!(driver.out(), "overlay2", "the inner storage driver");
    let mountinfo = c.exec(&["cat", "/proc/self/mountinfo"]).expect_success().stdout;
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/var/lib/docker"))
        .unwrap_or_else(|| panic!("/var/lib/docker is not a mount:\n{mountinfo}"));
    assert_eq!(
        line.split(' ').nth(3),
        Some(format!("{SYSVISOR_LIB}/volumes/{id}/docker").as_str()),
        "{line}"
    );

    // Inner containers run, in their own user-visible cgroups below the outer one's.
    let out =
        c.exec(&["docker", "run", "--rm", "bb", "sh", "-c", "echo hello; cat /proc/self/cgroup"]);
    let out = out.expect_success();
    assert!(out.stdout.starts_with("hello\n"), "{out}");
    assert!(out.stdout.contains(":/docker/"), "the inner container's cgroups: {out}");
    let out = c.exec(&["docker", "run", "--rm", "-m", "64m", "bb", "true"]);
    out.expect_success();
    // The inner engine's files belong to the container's range on the host.
    let meta = fs::metadata(format!("{SYSVISOR_LIB}/volumes/{id}/docker/image")).unwrap();
    assert_eq!(meta.uid(), range.outside);

    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
}

/// Issue 14: `docker commit` of a system container carries the images of its inner dockerd
/// (copied from the host-backed /var/lib/docker into the layer at the commit's pause); a
/// system container of the committed image boots with them in `docker images` and runs
/// them.
#[test]
fn a_committed_system_container_keeps_its_inner_images() {
    let Some(e) = Engine::get() else { return };
    let c = system_container_with_docker(&e, &[]);
    let range = host_range(&c);
    // An inner image whose top layer deletes a file (an inner overlay whiteout).
    c.sh("set -e; docker run --name nols bb rm /bin/ls; docker commit nols bb-nols >/dev/null; \
          docker rm nols >/dev/null")
        .expect_success();
    let image = format!("sysvisor-e2e/inner-images-{}", std::process::id());
    let out = e.docker(&["commit", &c.name, &image]);
    assert!(out.success(), "docker commit: {out}");
    let _image = RemoveImage(&e, image.clone());
    assert!(c.exec(&["docker", "run", "--rm", "bb", "true"]).success(), "still runs after");
    let id = c.id();
    assert!(c.remove().success());

    let (c2, out) = e.run_image_detached(&image, &["--runtime", RUNTIME], &[]);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let (state, failed) = boot(&c2);
    assert!(state == "running" || state == "degraded", "systemd: {state}\nfailed:\n{failed}");
    let range2 = host_range(&c2);
    assert!(
        poll(Duration::from_secs(60), || c2.exec(&["docker", "info"]).success()),
        "the inner dockerd of the committed image does not answer"
    );
    let images = c2.exec(&["docker", "images", "--format", "{{.Repository}}"]).expect_success();
    assert!(images.stdout.lines().any(|l| l == "bb"), "inner images: {images}");
    let out = c2.exec(&["docker", "run", "--rm", "bb", "echo", "from-the-committed-image"]);
    assert_eq!(out.expect_success().out(), "from-the-committed-image");
    let script = "test -e /bin/ls && echo ls-is-back || echo no-ls";
    let out = c2.exec(&["docker", "run", "--rm", "bb-nols", "sh", "-c", script]);
    assert_eq!(out.expect_success().out(), "no-ls", "the inner layer's whiteout");
    // The copy in the new volume belongs to the new container's range.
    let id2 = c2.id();
    let meta = fs::metadata(format!("{SYSVISOR_LIB}/volumes/{id2}/docker/image")).unwrap();
    assert_eq!(meta.uid(), range2.outside);

    assert!(c2.remove().success());
    e.assert_no_leaks(&id, Some(range));
    e.assert_no_leaks(&id2, Some(range2));
}

/// Removes an image of the engine when dropped.
struct RemoveImage<'e>(&'e Engine, String);
impl Drop for RemoveImage<'_> {
    fn drop(&mut self) {
        let _ = self.0.docker(&["rmi", "-f", &self.1]);
    }
}

/// Needs the mount trap of sysvisor-fs (issue 6, first part): the inner container's new
/// procfs gets the views too. Without it the inner container reads the host's meminfo.
#[test]
fn inner_containers_see_the_outer_containers_memory_limit() {
    let Some(e) = Engine::get() else { return };
    let c = system_container_with_docker(&e, &["-m", "512m"]);
    let range = host_range(&c);
    let id = c.id();
    let outer = c.exec(&["head", "-1", "/proc/meminfo"]).expect_success().out();
    assert_eq!(outer.split_whitespace().nth(1), Some("524288"), "outer: {outer}");
    let out =
        c.exec(&["docker", "run", "--rm", "bb", "head", "-1", "/proc/meminfo"]).expect_success();
    assert_eq!(
        out.out().split_whitespace().nth(1),
        Some("524288"),
        "/proc/meminfo in a container inside a -m 512m system container (needs the mount trap): {out}"
    );
    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
}

#[test]
fn systemd_boots_to_running_and_docker_stop_halts_it_at_once() {
    let Some(e) = Engine::get() else { return };
    let image = e.systemd_docker_image().to_string();
    let (c, out) = e.run_image_detached(&image, &["--runtime", RUNTIME], &[]);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let range = host_range(&c);
    let id = c.id();

    let (state, failed) = boot(&c);
    assert_eq!(
        state,
        "running",
        "failed units:\n{failed}\n{}",
        c.exec(&["journalctl", "-b", "-p", "err", "--no-pager"])
    );
    let out = c
        .sh("echo virt=$(systemd-detect-virt); echo docker=$(systemctl is-active docker); \
             echo init=$(grep -c init.scope /proc/1/cgroup); echo run=$(stat -f -c %T /run)")
        .expect_success();
    assert!(out.stdout.contains("virt=container-other\n"), "{out}");
    assert!(out.stdout.contains("docker=active\n"), "{out}");
    assert!(!out.stdout.contains("init=0\n"), "systemd did not make its own cgroups: {out}");
    assert!(out.stdout.contains("run=tmpfs\n"), "{out}");

    // On the host: the container's cgroups belong to its root; their limits do not.
    let pid = c.pid().unwrap();
    for dir in container_cgroup_dirs(pid, &id) {
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!(meta.uid(), range.outside, "{}", dir.display());
        let procs = fs::metadata(dir.join("cgroup.procs")).unwrap();
        assert_eq!(procs.uid(), range.outside, "{}/cgroup.procs", dir.display());
        for limit in ["memory.limit_in_bytes", "memory.max", "pids.max", "cpu.cfs_quota_us"] {
            if let Ok(meta) = fs::metadata(dir.join(limit)) {
                assert_eq!(meta.uid(), 0, "{}/{limit} must stay root's", dir.display());
            }
        }
    }

    c.exec(&["sh", "-c", "echo kept > /var/lib/docker/stop-start"]).expect_success();
    // SIGTERM from docker stop becomes SIGRTMIN+3: systemd halts, well before the timeout.
    let t0 = Instant::now();
    let out = e.docker(&["stop", "-t", "30", &c.name]);
    let took = t0.elapsed();
    out.expect_success();
    let code = c.inspect("{{.State.ExitCode}}").unwrap_or_default();
    assert!(took < Duration::from_secs(10), "docker stop took {took:?} (exit code {code})");
    assert_ne!(code, "137", "systemd was killed, not halted");
    eprintln!("nested: docker stop of systemd took {:.2}s (exit code {code})", took.as_secs_f64());

    // It boots again, with its range and its volume.
    c.docker("start").expect_success();
    assert_eq!(host_range(&c), range);
    let (state, failed) = boot(&c);
    assert_eq!(state, "running", "after docker start; failed units:\n{failed}");
    assert_eq!(c.exec(&["cat", "/var/lib/docker/stop-start"]).expect_success().out(), "kept");

    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
}

/// The host directories of the cgroups of container `id` (whose init is `pid`; systemd
/// moves itself into a sub-cgroup), below /sys/fs/cgroup (v1, hybrid or v2).
fn container_cgroup_dirs(pid: u32, id: &str) -> Vec<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let unified_only = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) =
            (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // Up to the container's own cgroup (`/docker/ID`, `/system.slice/docker-ID.scope`).
        let Some(end) = path.find(id).map(|i| i + path[i..].find('/').unwrap_or(path.len() - i))
        else {
            continue;
        };
        let path = path[..end].trim_start_matches('/');
        let dir = match controllers {
            "" if unified_only => Path::new("/sys/fs/cgroup").join(path),
            "" => Path::new("/sys/fs/cgroup/unified").join(path),
            c => Path::new("/sys/fs/cgroup").join(c.trim_start_matches("name=")).join(path),
        };
        if dir.is_dir() {
            dirs.push(dir);
        }
    }
    assert!(!dirs.is_empty(), "no cgroup directory of {id} found for {pid}: {text}");
    dirs
}

/// A container whose init exits at once on SIGTERM.
const POLITE: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.2; done"];

#[test]
fn volumes_belong_to_the_range_survive_stop_and_go_with_the_container() {
    let Some(e) = Engine::get() else { return };
    let (c, out) = e.run_detached(&["--runtime", RUNTIME], POLITE);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let range = host_range(&c);
    let id = c.id();
    let dir = Path::new(SYSVISOR_LIB).join("volumes").join(&id);

    let meta = fs::metadata(&dir).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, range.outside, 0o710));
    for name in ["docker", "containerd", "kubelet"] {
        let meta = fs::metadata(dir.join(name)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid(), meta.mode() & 0o7777),
            (range.outside, range.outside, 0o700),
            "{name}"
        );
    }
    let out = c
        .sh("stat -c '%u:%g %a %n' /var/lib/docker /var/lib/containerd /var/lib/kubelet && \
             echo data > /var/lib/docker/file && mkdir /var/lib/containerd/d && chown 1000:1000 /var/lib/containerd/d")
        .expect_success();
    for line in out.out().lines() {
        assert!(line.starts_with("0:0 700 "), "inside: {line}\n{out}");
    }
    assert_eq!(fs::metadata(dir.join("docker/file")).unwrap().uid(), range.outside);
    assert_eq!(fs::metadata(dir.join("containerd/d")).unwrap().uid(), range.outside + 1000);

    c.docker("stop").expect_success();
    assert!(dir.join("docker/file").exists(), "docker stop removed the volume");
    c.docker("start").expect_success();
    assert_eq!(host_range(&c), range);
    assert_eq!(c.exec(&["cat", "/var/lib/docker/file"]).expect_success().out(), "data");

    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
    assert!(!dir.exists(), "{} left after docker rm", dir.display());
}

#[test]
fn a_users_own_mount_on_var_lib_docker_wins() {
    let Some(e) = Engine::get() else { return };
    let mine = scratch_dir("my-docker-dir");
    let _cleanup = RemoveDir(mine.clone());
    fs::write(mine.join("mine"), "").unwrap();
    let volume = format!("{}:/var/lib/docker", mine.display());
    let (c, out) = e.run_detached(&["--runtime", RUNTIME, "-v", &volume], POLITE);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let range = host_range(&c);
    let id = c.id();
    c.exec(&["test", "-e", "/var/lib/docker/mine"]).expect_success();
    let dir = Path::new(SYSVISOR_LIB).join("volumes").join(&id);
    assert!(!dir.join("docker").exists(), "a volume was made though the user mounts there");
    assert!(dir.join("containerd").is_dir());
    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
}

#[test]
fn a_host_block_device_cannot_be_mounted_nor_read() {
    let Some(e) = Engine::get() else { return };
    // A device node of the host's root disk, in a directory on the root disk (a bind of a
    // tmpfs directory would be nodev and prove less).
    let root_dev = fs::metadata("/").unwrap().dev();
    let (major, minor) = (libc::major(root_dev), libc::minor(root_dev));
    let dir = Path::new("/var/lib/sysvisor-e2e").join(format!("devices-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let node = std::ffi::CString::new(dir.join("disk").to_str().unwrap()).unwrap();
    // SAFETY: mknod on a NUL-terminated path in our own directory.
    let rc = unsafe { libc::mknod(node.as_ptr(), libc::S_IFBLK | 0o660, root_dev) };
    assert_eq!(rc, 0, "mknod: {}", std::io::Error::last_os_error());

    let volume = format!("{}:/hostdev", dir.display());
    let (c, out) = e.run_detached(&["--runtime", RUNTIME, "-v", &volume], POLITE);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let range = host_range(&c);
    let id = c.id();
    c.exec(&["mkdir", "-p", "/mnt"]).expect_success();

    for script in [
        "mount -t ext4 /hostdev/disk /mnt".to_string(),
        "mount /hostdev/disk /mnt".to_string(),
        "mount -t ext4 -o ro /hostdev/disk /mnt".to_string(),
        "head -c 512 /hostdev/disk >/dev/null".to_string(),
        format!("mknod /tmp/disk b {major} {minor}"),
        format!("mknod /dev/disk b {major} {minor}"),
    ] {
        let out: Output = c.sh(&script);
        assert!(out.status.is_some() && !out.success(), "must fail inside: {out}");
    }
    let out = c
        .sh("ls -A /mnt | wc -l; find /dev -type b | wc -l; awk '$5 == \"/mnt\"' /proc/self/mountinfo | wc -l")
        .expect_success();
    assert_eq!(out.out(), "0\n0\n0", "/mnt entries, block devices in /dev, mounts on /mnt: {out}");

    assert!(c.remove().success());
    e.assert_no_leaks(&id, Some(range));
}
