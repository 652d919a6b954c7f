//! Each system container reads its own view files (issue 12): `/proc/meminfo` & co are
//! bound from the daemon's `MOUNT-containers/<id>/`, served from the page cache, so two
//! containers' readers never see each other's view, whatever the mix of busybox `cat`
//! (sendfile) and `head` (read(2)); `docker update -m` is seen within the cache TTL; an
//! inner proc mount in a nested pid namespace gets the per-caller views.

use std::thread;
use std::time::{Duration, Instant};

use sysvisor_e2e::{Container, Engine};

/// Reads /proc/meminfo for SECONDS (first argument) alternating busybox `cat` (sendfile)
/// and `head` (read(2)); counts the readings whose MemTotal is not KB (second argument).
const LOOP: &str = r#"
end=$(( $(date +%s) + $1 )); n=0; bad=0
while [ "$(date +%s)" -lt "$end" ]; do
  for v in "$(cat /proc/meminfo | head -1)" "$(head -1 /proc/meminfo)"; do
    n=$((n + 1))
    case "$v" in
      "MemTotal: "*" $2 kB") ;;
      *) bad=$((bad + 1)); [ "$bad" -le 3 ] && echo "wrong: $v" ;;
    esac
  done
done
echo "reads=$n bad=$bad"
"#;

/// Seconds the interleaved readers run (`SYSVISOR_OWN_SECONDS`, default 15).
fn seconds() -> u64 {
    std::env::var("SYSVISOR_OWN_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(15)
}

/// The mountinfo line of `/proc/meminfo` inside `c`.
fn meminfo_mount(c: &Container) -> String {
    let out = c.exec(&["cat", "/proc/self/mountinfo"]).expect_success();
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/proc/meminfo"))
        .unwrap_or_else(|| panic!("no /proc/meminfo mount: {out}"))
        .to_string()
}

fn mem_total_kb(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn two_containers_readers_never_see_each_others_meminfo() {
    let Some(e) = Engine::get() else { return };
    let small = e.start_system(&["-m", "256m"]);
    let large = e.start_system(&["-m", "512m"]);
    for c in [&small, &large] {
        let line = meminfo_mount(c);
        assert!(
            line.contains(&format!("/{}/proc/meminfo", c.id())),
            "not the container's own file: {line}"
        );
    }

    let secs = seconds().to_string();
    let runs: Vec<(String, String)> = thread::scope(|s| {
        let handles: Vec<_> = [(&small, 256u64), (&large, 512u64)]
            .into_iter()
            .map(|(c, mib)| {
                let (secs, kb) = (secs.clone(), (mib * 1024).to_string());
                let name = format!("{mib}m");
                s.spawn(move || {
                    let out = c.exec(&["sh", "-c", LOOP, "sh", &secs, &kb]).expect_success();
                    (name, out.stdout)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("reader thread")).collect()
    });
    for (name, out) in &runs {
        println!("{name}: {}", out.lines().last().unwrap_or_default());
        assert!(out.contains(" bad=0"), "{name} saw another container's view:\n{out}");
        assert!(!out.contains("reads=0 "), "{name}: no reads:\n{out}");
    }

    // docker update -m: seen within the TTL (100 ms; bounded generously for a busy host),
    // timed on the file the container's /proc/meminfo is bound from (the same inode).
    let own = std::path::Path::new(sysvisor_e2e::FS_MOUNTPOINT);
    let own = sysvisor_proto::containers_mountpoint_for(own).join(small.id()).join("proc/meminfo");
    // Readers keep the page cache hot meanwhile (here: this thread, reading in a loop).
    let updated: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let seen = thread::scope(|s| {
        s.spawn(|| {
            let out = e.docker(&["update", "-m", "384m", &small.id()]);
            assert!(out.success(), "docker update: {out}");
            *updated.lock().unwrap() = Some(Instant::now());
        });
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&own).expect("read the container's own meminfo");
            let done = *updated.lock().unwrap();
            if mem_total_kb(&text) == Some(384 * 1024) {
                // Seen before `docker update` returned counts as at once.
                break done.map_or(Duration::ZERO, |at| at.elapsed());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "docker update not seen: {text}");
        }
    });
    println!("docker update -m seen {} ms after it returned", seen.as_millis());
    assert!(seen < Duration::from_secs(1), "the old limit was served for {seen:?}");
    let inside = small.exec(&["head", "-1", "/proc/meminfo"]).expect_success();
    assert_eq!(mem_total_kb(&inside.stdout), Some(384 * 1024), "{inside}");
    let other = large.exec(&["head", "-1", "/proc/meminfo"]).expect_success();
    assert_eq!(mem_total_kb(&other.stdout), Some(512 * 1024), "{other}");
}

/// The root (fourth mountinfo field) of the views on `/p/meminfo` after a proc mount made
/// by `prefix` (a command run before `sh -c`), as the mounting process sees it.
fn trapped_meminfo_root(c: &Container, prefix: &str) -> String {
    let script = format!(
        r#"{prefix} sh -c 'mkdir -p /p && mount -t proc proc /p &&
            grep " /p/meminfo " /proc/self/mountinfo | tail -1 | cut -d" " -f4'"#
    );
    let out = c.sh(&script).expect_success();
    out.stdout.trim().to_string()
}

#[test]
fn proc_mounts_get_own_files_in_the_containers_pid_namespace_and_per_caller_ones_nested() {
    let Some(e) = Engine::get() else { return };
    let c = e.start_system(&["-m", "256m"]);
    let own = format!("/{}/proc/meminfo", c.id());
    // The container's own pid namespace (a new mount namespace only): its own files.
    assert_eq!(trapped_meminfo_root(&c, "unshare -m"), own);
    // A nested pid namespace (an inner runtime's container): the per-caller views.
    assert_eq!(trapped_meminfo_root(&c, "unshare -fmp"), "/proc/meminfo");
}

/// From inside, as root and as an unprivileged user: the container's own files cannot be
/// written, truncated, re-moded or unmounted, and nothing inside names another container.
#[test]
fn own_files_resist_writes_and_unmounts_from_inside() {
    let Some(e) = Engine::get() else { return };
    let a = e.start_system(&["-m", "256m"]);
    let b = e.start_system(&["-m", "512m"]);
    let attacks = r#"
        for f in /proc/meminfo /proc/stat /proc/uptime /sys/devices/system/cpu/online; do
          (echo x > $f) 2>/dev/null && echo "wrote $f"
          (: > $f) 2>/dev/null && echo "truncated $f"
          (chmod 666 $f) 2>/dev/null && echo "chmod $f"
        done
        (umount /proc/meminfo) 2>/dev/null && echo "unmounted /proc/meminfo"
        (umount -l /proc/meminfo) 2>/dev/null && echo "detached /proc/meminfo"
        head -1 /proc/meminfo
        cat /proc/self/mountinfo
    "#;
    for user in ["0", "1000"] {
        let out = e.docker(&["exec", "-u", user, &a.name, "sh", "-c", attacks]);
        assert!(out.success(), "user {user}: {out}");
        for bad in ["wrote ", "truncated ", "chmod ", "unmounted ", "detached "] {
            assert!(!out.stdout.contains(bad), "user {user} got through ({bad}):\n{out}");
        }
        assert_eq!(mem_total_kb(&out.stdout), Some(256 * 1024), "user {user}: {out}");
        assert!(!out.stdout.contains(&b.id()), "container a's mounts name b:\n{out}");
    }
    let other = b.exec(&["head", "-1", "/proc/meminfo"]).expect_success();
    assert_eq!(mem_total_kb(&other.stdout), Some(512 * 1024), "{other}");
}
