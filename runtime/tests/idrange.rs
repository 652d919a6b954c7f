//! Id range allocator: temp dirs only, no root needed.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use sysvisor_runc::idrange::{
    container_ids_in, ensure_subid_entries, Allocator, IdRange, IdRangeError, RANGE_SIZE,
};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A pool of `slots` ranges; uid and gid entries at different bases.
    fn new(slots: u32) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let n = slots * RANGE_SIZE;
        fs::write(dir.path().join("subuid"), format!("alice:100000:65536\nsysvisor:1000000:{n}\n"))
            .unwrap();
        fs::write(dir.path().join("subgid"), format!("sysvisor:2000000:{n}\nbob:5000:10\n"))
            .unwrap();
        Env { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn alloc(&self) -> Allocator {
        Allocator::open(&self.path("state"), &self.path("subuid"), &self.path("subgid")).unwrap()
    }

    fn bundle(&self, name: &str) -> PathBuf {
        let b = self.path(&format!("bundles/{name}"));
        fs::create_dir_all(&b).unwrap();
        b
    }
}

fn assert_disjoint(ranges: &[(String, IdRange)]) {
    for (i, (a, ra)) in ranges.iter().enumerate() {
        assert_eq!(ra.count, RANGE_SIZE);
        assert_eq!(ra.uid_base % RANGE_SIZE, 0, "{a} uid base not aligned");
        assert_eq!(ra.gid_base % RANGE_SIZE, 0, "{a} gid base not aligned");
        for (b, rb) in &ranges[i + 1..] {
            assert!(!ra.overlaps(rb), "{a} {ra} and {b} {rb} overlap");
        }
    }
}

#[test]
fn disjoint_aligned_and_from_the_pool() {
    let env = Env::new(8);
    let a = env.alloc();
    let mut got = Vec::new();
    for i in 0..7 {
        let id = format!("c{i}");
        let r = a.allocate(&id, &env.bundle(&id)).unwrap();
        // 1000000 rounds up to 1048576 (16 * 65536); gids 2000000 -> 2031616 (31 * 65536).
        assert!(r.uid_base >= 1_048_576 && u64::from(r.uid_base) + 65536 <= 1_000_000 + 8 * 65536);
        assert!(r.gid_base >= 2_031_616 && u64::from(r.gid_base) + 65536 <= 2_000_000 + 8 * 65536);
        got.push((id, r));
    }
    assert_disjoint(&got);
    // The lowest slot goes first; slot i pairs the i-th uid slice with the i-th gid slice.
    assert_eq!(got[0].1, IdRange { uid_base: 1_048_576, gid_base: 2_031_616, count: 65536 });
    assert_eq!(got[1].1, IdRange { uid_base: 1_114_112, gid_base: 2_097_152, count: 65536 });
    assert_eq!(a.ranges().unwrap(), {
        let mut g = got.clone();
        g.sort();
        g
    });
    // The aligned pool holds 7 whole ranges in both files (8*65536 from an unaligned start).
    assert_eq!(a.capacity().unwrap(), 7);
}

#[test]
fn same_id_gets_the_same_range_across_allocators() {
    let env = Env::new(4);
    let b = env.bundle("x");
    let r1 = env.alloc().allocate("x", &b).unwrap();
    env.alloc().allocate("y", &env.bundle("y")).unwrap();
    // A new allocator (another process, after a reboot) and even a gone bundle: same range.
    fs::remove_dir_all(&b).unwrap();
    let b2 = env.bundle("x-again");
    assert_eq!(env.alloc().allocate("x", &b2).unwrap(), r1);
    assert_eq!(env.alloc().allocate("x", &b2).unwrap(), r1);
}

#[test]
fn release_frees_the_range() {
    let env = Env::new(3);
    let a = env.alloc();
    let r1 = a.allocate("a", &env.bundle("a")).unwrap();
    a.allocate("b", &env.bundle("b")).unwrap();
    a.release("a").unwrap();
    a.release("a").unwrap(); // idempotent
    assert_eq!(a.allocate("c", &env.bundle("c")).unwrap(), r1);
    assert_eq!(a.ranges().unwrap().len(), 2);
}

#[test]
fn exhaustion_is_a_clear_error_and_reclaim_frees_removed_containers() {
    let env = Env::new(3); // 2 whole aligned ranges
    let a = env.alloc();
    let ba = env.bundle("a");
    let ra = a.allocate("a", &ba).unwrap();
    a.allocate("b", &env.bundle("b")).unwrap();
    let err = a.allocate("c", &env.bundle("c")).unwrap_err();
    assert!(matches!(err, IdRangeError::Exhausted { ranges: 2, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("all 2 ranges"), "{msg}");
    assert!(msg.contains("sysvisor") && msg.contains("subuid") && msg.contains("COUNT"), "{msg}");
    // Nothing to reclaim while the bundles exist.
    assert_eq!(a.reclaim().unwrap(), Vec::<String>::new());
    // "a" is gone for good: allocate reclaims it before giving up.
    fs::remove_dir_all(&ba).unwrap();
    assert_eq!(a.allocate("c", &env.bundle("c")).unwrap(), ra);
    let ids: Vec<String> = a.ranges().unwrap().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, ["b", "c"]);
}

#[test]
fn reclaim_keeps_a_stopped_docker_container() {
    // Docker: bundle under /run/containerd, rootfs <home>/overlay2/<layer>/merged. After
    // `docker stop` the bundle and `merged` are gone, the layer dir stays until `docker rm`.
    let env = Env::new(4);
    let a = env.alloc();
    let bundle = env.bundle("ctr");
    let layer = env.path("overlay2/layer1");
    fs::create_dir_all(layer.join("merged")).unwrap();
    fs::write(
        bundle.join("config.json"),
        format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"{}"}}}}"#,
            layer.join("merged").display()
        ),
    )
    .unwrap();
    let r = a.allocate("ctr", &bundle).unwrap();
    fs::remove_dir_all(&bundle).unwrap();
    fs::remove_dir(layer.join("merged")).unwrap();
    assert_eq!(
        a.reclaim().unwrap(),
        Vec::<String>::new(),
        "a stopped container must keep its range"
    );
    // docker start: same range.
    let bundle = env.bundle("ctr");
    assert_eq!(a.allocate("ctr", &bundle).unwrap(), r);
    fs::remove_dir_all(&bundle).unwrap();
    // docker rm: the layer goes.
    fs::remove_dir_all(&layer).unwrap();
    assert_eq!(a.reclaim().unwrap(), vec!["ctr".to_string()]);
    assert!(a.ranges().unwrap().is_empty());
}

#[test]
fn relative_rootfs_in_the_bundle_is_an_anchor() {
    let env = Env::new(2);
    let a = env.alloc();
    let bundle = env.bundle("r");
    fs::create_dir(bundle.join("rootfs")).unwrap();
    fs::write(bundle.join("config.json"), r#"{"root":{"path":"rootfs"}}"#).unwrap();
    a.allocate("r", &bundle).unwrap();
    assert!(a.reclaim().unwrap().is_empty());
    fs::remove_dir_all(&bundle).unwrap();
    assert_eq!(a.reclaim().unwrap(), vec!["r".to_string()]);
}

#[test]
fn missing_entry_says_to_run_the_install() {
    let env = Env::new(1);
    fs::write(env.path("subgid"), "bob:5000:10\n").unwrap();
    let err =
        Allocator::open(&env.path("state"), &env.path("subuid"), &env.path("subgid")).unwrap_err();
    assert!(matches!(err, IdRangeError::MissingEntry { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("subgid") && msg.contains("install") && msg.contains("sysvisor:BASE:COUNT"),
        "{msg}"
    );
    fs::remove_file(env.path("subuid")).unwrap();
    let err =
        Allocator::open(&env.path("state"), &env.path("subuid"), &env.path("subgid")).unwrap_err();
    assert!(matches!(err, IdRangeError::MissingEntry { .. }), "{err:?}");
}

#[test]
fn too_small_pool() {
    let env = Env::new(1);
    fs::write(env.path("subuid"), "sysvisor:1000000:65536\n").unwrap(); // unaligned: no whole slice
    let err =
        Allocator::open(&env.path("state"), &env.path("subuid"), &env.path("subgid")).unwrap_err();
    assert!(matches!(err, IdRangeError::PoolTooSmall { .. }), "{err:?}");
}

#[test]
fn corrupt_state_is_an_error_never_reset() {
    let env = Env::new(4);
    let a = env.alloc();
    a.allocate("a", &env.bundle("a")).unwrap();
    let state = env.path("state/state.json");
    let good = fs::read_to_string(&state).unwrap();
    for bad in ["", "{", "[]", r#"{"version":99,"ranges":{}}"#] {
        fs::write(&state, bad).unwrap();
        let err = a.allocate("b", &env.bundle("b")).unwrap_err();
        assert!(matches!(err, IdRangeError::CorruptState { .. }), "{bad:?}: {err:?}");
        assert!(err.to_string().contains("twice"), "{err}");
        assert_eq!(fs::read_to_string(&state).unwrap(), bad, "the state must stay as it was");
        assert!(
            Allocator::open(&env.path("state"), &env.path("subuid"), &env.path("subgid")).is_err()
        );
    }
    // Two records overlapping: corrupt too.
    let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let rec = v["ranges"]["a"].clone();
    v["ranges"]["b"] = rec;
    fs::write(&state, v.to_string()).unwrap();
    let err = a.ranges().unwrap_err();
    assert!(err.to_string().contains("overlap"), "{err}");
    fs::write(&state, good).unwrap();
    assert_eq!(a.ranges().unwrap().len(), 1);
}

#[test]
fn invalid_ids_are_refused() {
    let env = Env::new(2);
    let a = env.alloc();
    for id in ["", "../x", "a/b", ".."] {
        assert!(matches!(
            a.allocate(id, &env.bundle("z")),
            Err(IdRangeError::InvalidContainerId(_))
        ));
    }
}

#[test]
fn sixteen_threads_get_disjoint_ranges() {
    let env = Arc::new(Env::new(80));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let env = Arc::clone(&env);
            std::thread::spawn(move || {
                let a = env.alloc();
                let mut mine = Vec::new();
                for i in 0..4 {
                    let id = format!("t{t}-{i}");
                    let r = a.allocate(&id, &env.bundle(&id)).unwrap();
                    // Asking again in the middle of the storm gives the same range.
                    assert_eq!(a.allocate(&id, &env.bundle(&id)).unwrap(), r);
                    mine.push((id, r));
                }
                mine
            })
        })
        .collect();
    let got: Vec<(String, IdRange)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(got.len(), 64);
    assert_disjoint(&got);
    let mut recorded = env.alloc().ranges().unwrap();
    recorded.sort();
    let mut got = got;
    got.sort();
    assert_eq!(recorded, got);
}

/// The body of the child processes of `processes_get_disjoint_ranges`: a no-op unless
/// started by it.
#[test]
fn child_allocator_process() {
    let Ok(dir) = std::env::var("SYSVISOR_IDRANGE_CHILD_DIR") else {
        return;
    };
    let tag = std::env::var("SYSVISOR_IDRANGE_CHILD_TAG").unwrap();
    let dir = Path::new(&dir);
    let a = Allocator::open(&dir.join("state"), &dir.join("subuid"), &dir.join("subgid")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let a = a.clone();
            let (dir, tag) = (dir.to_path_buf(), tag.clone());
            std::thread::spawn(move || {
                for i in 0..5 {
                    let id = format!("p{tag}-{t}-{i}");
                    let b = dir.join("bundles").join(&id);
                    fs::create_dir_all(&b).unwrap();
                    a.allocate(&id, &b).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn processes_get_disjoint_ranges() {
    let env = Env::new(140);
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..6)
        .map(|p| {
            Command::new(&exe)
                .args(["--exact", "child_allocator_process", "--test-threads=1", "--quiet"])
                .env("SYSVISOR_IDRANGE_CHILD_DIR", env.dir.path())
                .env("SYSVISOR_IDRANGE_CHILD_TAG", p.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // This process allocates at the same time.
    let a = env.alloc();
    for i in 0..10 {
        let id = format!("parent-{i}");
        a.allocate(&id, &env.bundle(&id)).unwrap();
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let got = a.ranges().unwrap();
    assert_eq!(got.len(), 6 * 4 * 5 + 10);
    assert_disjoint(&got);
    let ids: HashSet<&String> = got.iter().map(|(id, _)| id).collect();
    assert!(ids.contains(&"p5-3-4".to_string()));
}

#[test]
fn ensure_subid_entries_adds_once_after_every_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (u, g) = (dir.path().join("subuid"), dir.path().join("subgid"));
    fs::write(&u, "alice:100000:65536\nbob:165536:65536").unwrap(); // no final newline
    fs::write(&g, "alice:100000:65536\ncarol:900000:1000\n").unwrap();
    let count = 65536 * 1024;
    assert!(ensure_subid_entries(&u, &g, count).unwrap());
    // Ends: 165536, 231072, 901000 -> next multiple of 65536 at or after 901000 = 917504.
    let line = format!("sysvisor:917504:{count}");
    assert_eq!(
        fs::read_to_string(&u).unwrap(),
        format!("alice:100000:65536\nbob:165536:65536\n{line}\n")
    );
    assert_eq!(
        fs::read_to_string(&g).unwrap(),
        format!("alice:100000:65536\ncarol:900000:1000\n{line}\n")
    );
    // Idempotent.
    assert!(!ensure_subid_entries(&u, &g, count).unwrap());
    assert_eq!(fs::read_to_string(&u).unwrap().matches("sysvisor").count(), 1);
    // The pool it made works.
    let a = Allocator::open(&dir.path().join("state"), &u, &g).unwrap();
    assert_eq!(a.capacity().unwrap(), 1024);
    let r = a.allocate("x", dir.path()).unwrap();
    assert_eq!((r.uid_base, r.gid_base), (917504, 917504));
}

#[test]
fn ensure_subid_entries_on_empty_or_missing_files_and_one_side_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (u, g) = (dir.path().join("subuid"), dir.path().join("subgid"));
    fs::write(&u, "").unwrap();
    assert!(ensure_subid_entries(&u, &g, 65536).unwrap());
    // Base at least 100000, aligned: 131072.
    assert_eq!(fs::read_to_string(&u).unwrap(), "sysvisor:131072:65536\n");
    assert_eq!(fs::read_to_string(&g).unwrap(), "sysvisor:131072:65536\n");
    // Only subgid lacks it: only subgid changes, after every entry of both files.
    fs::write(&g, "x:0:10\n").unwrap();
    assert!(ensure_subid_entries(&u, &g, 65536).unwrap());
    assert_eq!(fs::read_to_string(&u).unwrap(), "sysvisor:131072:65536\n");
    assert_eq!(fs::read_to_string(&g).unwrap(), "x:0:10\nsysvisor:196608:65536\n");
    // A pool smaller than one range is refused.
    assert!(matches!(
        ensure_subid_entries(&u, &dir.path().join("none"), 100),
        Err(IdRangeError::InvalidPoolSize(_))
    ));
}

#[test]
fn ensure_subid_entries_keeps_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (u, g) = (dir.path().join("subuid"), dir.path().join("subgid"));
    fs::write(&u, "a:100000:10\n").unwrap();
    fs::set_permissions(&u, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(ensure_subid_entries(&u, &g, 65536).unwrap());
    assert_eq!(fs::metadata(&u).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(fs::metadata(&g).unwrap().permissions().mode() & 0o777, 0o644);
    // No temp file left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}

/// The orphan sweep's inputs: under the lock, the ids freed now and which ids still hold a
/// range; directories named like container ids are listed, others ignored.
#[test]
fn reclaim_with_tells_freed_ids_and_who_still_holds_a_range() {
    let env = Env::new(4);
    let a = env.alloc();
    a.allocate("kept", &env.bundle("kept")).unwrap();
    let gone = env.bundle("gone");
    a.allocate("gone", &gone).unwrap();
    fs::remove_dir_all(&gone).unwrap();
    let mut seen = None;
    let freed = a
        .reclaim_with(|freed, holds| {
            seen = Some((freed.to_vec(), holds("kept"), holds("gone"), holds("orphan")));
        })
        .unwrap();
    assert_eq!(freed, vec!["gone".to_string()]);
    assert_eq!(seen, Some((vec!["gone".to_string()], true, false, false)));

    let dir = env.path("uppers");
    assert!(container_ids_in(&dir).unwrap().is_empty(), "a missing directory lists nothing");
    for name in ["orphan", "kept", "not an id", ".."] {
        fs::create_dir_all(dir.join(name)).ok();
    }
    let mut ids = container_ids_in(&dir).unwrap();
    ids.sort();
    assert_eq!(ids, vec!["kept".to_string(), "orphan".to_string()]);
}
