//! System containers under a dockerd with `"userns-remap": "default"`: Docker hands
//! sysvisor-runc a spec with its own user namespace (container root = the first `dockremap`
//! subordinate id, shared by every container of that engine) and image layers chowned to
//! that range. sysvisor-runc replaces the mapping with the container's own exclusive range
//! from the `sysvisor` pool and id-shifts the rootfs from Docker's range to it. Checked
//! here: the range, the rootfs' owners inside, the views, a sysctl, the mount trap, two
//! containers' ranges apart, runc containers of the same engine beside them, that files
//! of Docker's shared range are out of reach of a system container's root and users, and
//! Docker inside (systemd + dockerd image, an inner container).

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::thread;
use std::time::{Duration, Instant};

use sysvisor_e2e::second::{subid_range, SecondContainer, SecondEngine, REMAP_USER};
use sysvisor_e2e::{scratch_dir, Engine, RANGE, RUNTIME};

/// The `sysvisor` pool of /etc/subuid (first id, count).
fn pool() -> (u32, u32) {
    subid_range("/etc/subuid", "sysvisor").expect("the harness adds the sysvisor pool")
}

fn field(c: &SecondContainer, script: &str) -> String {
    let out = c.sh(script);
    assert!(out.success(), "{script}: {out}");
    out.out()
}

#[test]
fn system_containers_work_under_userns_remap_with_their_own_ranges() {
    let Some(e) = Engine::get() else { return };
    let second = SecondEngine::start(
        &e,
        "remap",
        "172.30.253.1/24",
        serde_json::json!({ "userns-remap": "default" }),
    )
    .unwrap_or_else(|err| panic!("cannot start the userns-remap dockerd: {err}"));
    let (remap_base, _) = subid_range("/etc/subuid", REMAP_USER)
        .unwrap_or_else(|| panic!("dockerd made no {REMAP_USER} range:\n{}", second.log_tail()));
    let (pool_base, pool_count) = pool();

    let a = second.start_container(&["--runtime", RUNTIME, "-m", "256m"], &["sleep", "3600"]);
    let b = second.start_container(&["--runtime", RUNTIME], &["sleep", "3600"]);
    let (ma, mb) = (a.uid_map().expect("uid map of a"), b.uid_map().expect("uid map of b"));
    for m in [&ma, &mb] {
        assert_eq!((m.inside, m.count), (0, RANGE), "{m:?}");
        assert!(
            m.outside >= pool_base && m.outside + m.count <= pool_base + pool_count,
            "the range comes from the sysvisor pool {pool_base}+{pool_count}, not Docker's \
             {remap_base}: {m:?}"
        );
    }
    assert!(ma.outside + RANGE <= mb.outside || mb.outside + RANGE <= ma.outside, "{ma:?} {mb:?}");

    // The image's files belong to root inside (shifted from Docker's range), and root can
    // change them.
    assert_eq!(field(&a, "stat -c %u:%g / /bin/busybox /etc"), "0:0\n0:0\n0:0");
    assert_eq!(field(&a, "echo x > /etc/new && stat -c %u:%g /etc/new && id -u"), "0:0\n0");
    // Docker's /etc/hosts (made for its range) is given to the container's root.
    assert_eq!(field(&a, "stat -c %u:%g /etc/hosts && echo ok >> /etc/hosts && echo w"), "0:0\nw");

    // The views, a sysctl of the container's own, and the mount trap.
    let mem = field(&a, "head -1 /proc/meminfo | tr -s ' ' | cut -d' ' -f2");
    assert_eq!(mem, (256 * 1024).to_string(), "MemTotal of a -m 256m container");
    assert_eq!(
        field(&a, "sysctl -w net.core.somaxconn=1234 >/dev/null && sysctl -n net.core.somaxconn"),
        "1234"
    );
    assert_eq!(
        field(
            &a,
            "mkdir -p /mnt/p && mount -t proc proc /mnt/p && head -1 /mnt/p/meminfo | tr -s ' ' \
             | cut -d' ' -f2; umount /mnt/p"
        ),
        (256 * 1024).to_string(),
        "a procfs mounted inside carries the views (mount trap)"
    );

    // A runc container of the same engine keeps Docker's mapping.
    let plain = second.start_container(&[], &["sleep", "3600"]);
    let mp = plain.uid_map().expect("uid map of the runc container");
    assert_eq!((mp.inside, mp.outside), (0, remap_base), "{mp:?}");
    assert_eq!(field(&plain, "stat -c %u /bin/busybox && id -u"), "0\n0");
    drop((a, b));

    // Attack: files of Docker's shared range (a runc container's volume, say) bound into
    // a system container are out of reach of its root and of its users: they are not its
    // ids. The runc container of the same engine, in that shared range, can read them.
    let dir = scratch_dir("remap-shared");
    fs::write(dir.join("secret"), "runc's\n").unwrap();
    fs::set_permissions(dir.join("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    chown(dir.join("secret"), Some(remap_base), Some(remap_base)).unwrap();
    chown(&dir, Some(remap_base), Some(remap_base)).unwrap();
    let bind = format!("{}:/shared", dir.display());
    let c = second.start_container(&["--runtime", RUNTIME, "-v", &bind], &["sleep", "3600"]);
    for user in ["0", "1000"] {
        for attack in [
            "cat /shared/secret",
            "ls /shared",
            "touch /shared/new",
            "chown 0:0 /shared/secret",
            "chmod 777 /shared",
        ] {
            let out = c.sh_as(user, attack);
            assert!(!out.success(), "user {user} of a system container: `{attack}` worked: {out}");
        }
    }
    assert!(!dir.join("new").exists());
    let runc_side =
        second.start_container(&["-v", &bind], &["sleep", "3600"]).sh("cat /shared/secret");
    assert_eq!(runc_side.out(), "runc's", "the runc container reads its range's file: {runc_side}");
    drop((c, plain));
    let _ = fs::remove_dir_all(&dir);

    docker_runs_inside(&second);
}

/// Polls `ok` every 250 ms until it holds or `timeout` passes.
fn poll(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        thread::sleep(Duration::from_millis(250));
    }
    false
}

/// The systemd + Docker image as a system container of the userns-remap engine: systemd
/// boots, the inner dockerd answers, and an inner container runs.
fn docker_runs_inside(second: &SecondEngine) {
    let image = second.import_systemd_docker().unwrap_or_else(|e| panic!("{e}"));
    let c = second.start_image(image, &["--runtime", RUNTIME, "-m", "512m"], &[]);
    let mut state = String::new();
    let booted = poll(Duration::from_secs(180), || {
        state = c.sh("systemctl is-system-running --wait").out();
        !matches!(state.as_str(), "" | "offline" | "initializing" | "starting")
    });
    assert!(booted && (state == "running" || state == "degraded"), "systemd: {state:?}");
    let ready = poll(Duration::from_secs(90), || c.sh("docker info >/dev/null").success());
    assert!(ready, "the inner dockerd does not answer: {}", c.sh("journalctl -u docker -n 30"));
    let out = c.sh("set -e; rm -rf /tmp/bb; mkdir -p /tmp/bb/bin; cp /bin/busybox /tmp/bb/bin/; \
         ln -s busybox /tmp/bb/bin/sh; ln -s busybox /tmp/bb/bin/echo; \
         tar -C /tmp/bb -c . | docker import -c 'ENV PATH=/bin' - bb >/dev/null; rm -rf /tmp/bb; \
         docker run --rm bb echo hello");
    assert_eq!(out.out(), "hello", "an inner container: {out}");
}
