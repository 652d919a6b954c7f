//! System containers under a dockerd with `"userns-remap": "default"`: Docker hands
//! sysvisor-runc a spec with its own user namespace (container root = the first `dockremap`
//! subordinate id, shared by every container of that engine) and image layers chowned to
//! that range. sysvisor-runc replaces the mapping with the container's own exclusive range
//! from the `sysvisor` pool and id-shifts the rootfs from Docker's range to it. Checked
//! here: the range, the rootfs' owners inside, the views, a sysctl, the mount trap, two
//! containers' ranges apart, and runc containers of the same engine beside them.

use sysvisor_e2e::second::{subid_range, SecondContainer, SecondEngine, REMAP_USER};
use sysvisor_e2e::{Engine, RANGE, RUNTIME};

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
    drop((a, b, plain));
}
