//! The CPU files of /sys/devices/system/cpu inside a `--cpus 1` system container
//! (issue 15, item 2): `online`, `present` and `possible` are views and all say the one
//! CPU the container sees, as `nproc` (the scheduler, under the cpuset sysvisor-runc
//! pins) does.

use sysvisor_e2e::{leaks, Engine};

#[test]
fn online_present_and_possible_show_the_containers_cpus() {
    let Some(e) = Engine::get() else { return };
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if host_cpus < 2 {
        sysvisor_skip::optional("one CPU on the host: --cpus 1 hides nothing");
        return;
    }
    let c = e.start_system(&["--cpus", "1"]);
    let script = "for f in online present possible; do \
                  echo \"$f=$(cat /sys/devices/system/cpu/$f)\"; done; echo \"nproc=$(nproc)\"; \
                  echo \"mounted=$(grep -c ' /sys/devices/system/cpu/p' /proc/self/mountinfo)\"";
    let out = c.sh(script).expect_success();
    let f = out.fields();
    for key in ["online", "present", "possible", "nproc"] {
        let want = if key == "nproc" { "1" } else { "0" };
        assert_eq!(f.get(key).map(String::as_str), Some(want), "{key}: {out}");
    }
    assert_eq!(f.get("mounted").map(String::as_str), Some("2"), "both are views: {out}");
    // A sysfs mounted inside (through the trap) carries the same views.
    let out = c
        .sh("mkdir -p /tmp/s && mount -t sysfs sysfs /tmp/s && \
             cat /tmp/s/devices/system/cpu/present /tmp/s/devices/system/cpu/possible && \
             umount /tmp/s")
        .expect_success();
    assert_eq!(out.out().split_whitespace().collect::<Vec<_>>(), ["0", "0"], "{out}");
    leaks::remove_and_assert_clean(&e, c);
}
