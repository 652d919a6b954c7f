//! `docker commit`, `diff`, `export` and `cp` on system containers (issue 14): every change
//! made inside lands in Docker's own layer with the owner it has inside (root 0, uid 1000
//! stays 1000), never the shifted host ids; the images are looked into with plain runc.
//! The inner engines' data (/var/lib/docker) goes into committed images too.
//!
//! Needs root and the harness's private engine (see `sysvisor_e2e`); each test removes its
//! containers and images and checks that nothing of them is left.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sysvisor_e2e::{scratch_dir, Container, Engine, IdMap, RANGE, RUNTIME};

/// Removes the images it names (`docker rmi -f`) when dropped.
struct Images<'e>(&'e Engine, Vec<String>);

impl Images<'_> {
    /// `docker commit CONTAINER NAME`, remembered for removal.
    #[track_caller]
    fn commit(&mut self, c: &Container, name: &str) -> String {
        let out = self.0.docker(&["commit", &c.name, name]);
        self.1.push(name.to_string());
        assert!(out.success(), "docker commit: {out}");
        name.to_string()
    }
}

impl Drop for Images<'_> {
    fn drop(&mut self) {
        for image in &self.1 {
            let _ = self.0.docker(&["rmi", "-f", image]);
        }
    }
}

/// `sh -c SCRIPT` in a throwaway container of `image` run by plain runc.
#[track_caller]
fn with_runc(e: &Engine, image: &str, script: &str) -> String {
    let out = e.docker(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--runtime",
        "runc",
        "--label",
        "sysvisor-e2e=1",
        image,
        "sh",
        "-c",
        script,
    ]);
    assert!(out.success(), "plain runc in {image}: {out}");
    out.out()
}

/// `docker diff` as path -> kind (A, C, D).
fn diff(e: &Engine, c: &Container) -> BTreeMap<String, String> {
    let out = e.docker(&["diff", &c.name]);
    assert!(out.success(), "docker diff: {out}");
    out.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(kind, path)| (path.to_string(), kind.to_string()))
        .collect()
}

/// `docker export` unpacked (owners kept) into `dir`.
#[track_caller]
fn export(e: &Engine, c: &Container, dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    let tar = dir.with_extension("tar");
    let out = e.docker(&["export", "-o", tar.to_str().unwrap(), &c.name]);
    assert!(out.success(), "docker export: {out}");
    let untar = std::process::Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(untar.status.success(), "tar: {}", String::from_utf8_lossy(&untar.stderr));
    fs::remove_file(tar).unwrap();
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

#[track_caller]
fn range_of(c: &Container) -> IdMap {
    let map = c.uid_map().unwrap_or_else(|| panic!("no uid map for {}", c.name));
    assert_eq!((map.inside, map.count), (0, RANGE), "{map:?}");
    assert_ne!(map.outside, 0, "{map:?}");
    map
}

/// What the container does inside, and what `docker cp` copies in (as root, and with
/// `-a` a file of uid 1000), checked in the container, in Docker's layer, in `docker diff`,
/// `docker export` and a committed image; then the same once the container is stopped.
#[test]
fn commit_diff_export_and_cp_keep_the_owners_of_inside() {
    let Some(e) = Engine::get() else { return };
    let scratch = scratch_dir("commit");
    let mut images = Images(&e, Vec::new());
    let c = e.start_system(&[]);
    let range = range_of(&c);
    let changes_inside = "set -e; echo hello > /root/made-inside; mkdir -p /home/u; \
                          echo u > /home/u/f; chown -R 1000:1000 /home/u; rm /etc/group";
    c.sh(changes_inside).expect_success();

    // docker cp in, while it runs: as into a runc container (a file of host root is
    // root's inside, not nobody's; other owners as Docker keeps them, with and without -a).
    // The same in a runc container, the reference for what Docker makes of it.
    let reference = e.start(&[], &["sleep", "3600"]);
    reference.sh(changes_inside).expect_success();
    for (name, uid) in [("copied", 0), ("u4242", 4242), ("u1000", 1000)] {
        fs::write(scratch.join(name), format!("{name}\n")).unwrap();
        std::os::unix::fs::chown(scratch.join(name), Some(uid), Some(uid)).unwrap();
    }
    let to = |c: &Container, name: &str| format!("{}:/root/{name}", c.name);
    for target in [&c, &reference] {
        for (name, flags) in [("copied", "-L"), ("u4242", "-L"), ("u1000", "-a")] {
            let from = scratch.join(name);
            e.docker(&["cp", flags, from.to_str().unwrap(), &to(target, name)]).expect_success();
        }
    }
    let owners = "cat /root/copied; stat -c %u:%g /root/copied /root/u4242 /root/u1000";
    let out = c.sh(owners).expect_success();
    assert_eq!(out.out(), reference.sh(owners).expect_success().out(), "as with runc");
    assert!(out.out().starts_with("copied\n0:0\n"), "{out}");
    assert!(out.out().ends_with("\n1000:1000"), "{out}");
    // docker cp out.
    let out_file = scratch.join("made-inside");
    e.docker(&["cp", &format!("{}:/root/made-inside", c.name), out_file.to_str().unwrap()])
        .expect_success();
    assert_eq!(fs::read_to_string(&out_file).unwrap(), "hello\n");

    // Docker's own layer holds it all, with the ids of inside.
    let upper = c.inspect("{{.GraphDriver.Data.UpperDir}}").expect("upper dir");
    let upper = Path::new(&upper);
    assert_eq!(owner(&upper.join("root/made-inside")), (0, 0));
    assert_eq!(owner(&upper.join("home/u/f")), (1000, 1000));
    assert_eq!(owner(&upper.join("root/copied")), (0, 0));
    assert!(!range.contains_host(owner(&upper.join("root")).0), "shifted ids in the layer");

    // docker diff and export of the running container, paused (at pause, Docker's overlay
    // is mounted afresh: unpaused, it may still show entries it looked up before the
    // container changed them, such as /etc).
    c.docker("pause").expect_success();
    // docker diff: as with runc (but for the mount points of the inner engines' volumes).
    let mut changes = diff(&e, &c);
    changes.retain(|path, _| !path.starts_with("/var"));
    assert_eq!(changes, diff(&e, &reference), "docker diff, sysvisor-runc vs runc");
    for (path, kind) in [("/root/made-inside", "A"), ("/home/u/f", "A"), ("/root/copied", "A")] {
        assert_eq!(changes.get(path).map(String::as_str), Some(kind), "{path}: {changes:?}");
    }
    drop(reference);

    let exported = scratch.join("running");
    export(&e, &c, &exported);
    assert_eq!(fs::read_to_string(exported.join("root/made-inside")).unwrap(), "hello\n");
    assert_eq!(owner(&exported.join("root/made-inside")), (0, 0));
    assert_eq!(owner(&exported.join("home/u/f")), (1000, 1000));
    assert_eq!(owner(&exported.join("root/u1000")), (1000, 1000));
    assert!(!exported.join("etc/group").exists());
    c.docker("unpause").expect_success();

    let image = images.commit(&c, "sysvisor-e2e/commit-running");
    assert_eq!(c.status(), "running", "commit pauses and resumes");
    let inside = with_runc(
        &e,
        &image,
        "cat /root/made-inside; stat -c %u:%g /root/made-inside /root/copied /home/u/f /root/u1000; \
         test -e /etc/group || echo no-group",
    );
    assert_eq!(inside, "hello\n0:0\n0:0\n1000:1000\n1000:1000\nno-group");

    // Stopped: cp both ways, diff and export; then started again, it has the file.
    c.docker("stop").expect_success();
    e.docker(&["cp", scratch.join("copied").to_str().unwrap(), &to(&c, "stopped-in")])
        .expect_success();
    let out_file = scratch.join("made-inside-stopped");
    e.docker(&["cp", &format!("{}:/home/u/f", c.name), out_file.to_str().unwrap()])
        .expect_success();
    assert_eq!(fs::read_to_string(&out_file).unwrap(), "u\n");
    assert_eq!(diff(&e, &c).get("/root/stopped-in").map(String::as_str), Some("A"));
    let exported = scratch.join("stopped");
    export(&e, &c, &exported);
    assert_eq!(owner(&exported.join("root/stopped-in")), (0, 0));
    assert_eq!(owner(&exported.join("home/u/f")), (1000, 1000));
    let image = images.commit(&c, "sysvisor-e2e/commit-stopped");
    let inside = with_runc(&e, &image, "stat -c %u:%g /root/stopped-in /home/u/f");
    assert_eq!(inside, "0:0\n1000:1000");

    c.docker("start").expect_success();
    let out = c
        .sh("cat /root/made-inside; stat -c %u:%g /root/stopped-in /home/u/f /root/copied")
        .expect_success();
    assert_eq!(out.out(), "hello\n0:0\n1000:1000\n0:0", "{out}");
    assert_eq!(range_of(&c), range, "the range after stop + start");

    // A system container of the committed image: its files are root's inside.
    let (c2, out) = e.run_image_detached(&image, &["--runtime", RUNTIME], &["sleep", "3600"]);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let range2 = range_of(&c2);
    let out = c2.sh("stat -c %u:%g /root/stopped-in /home/u/f; id -u").expect_success();
    assert_eq!(out.out(), "0:0\n1000:1000\n0", "{out}");

    let ids = [(c.id(), range), (c2.id(), range2)];
    assert!(c.remove().success());
    assert!(c2.remove().success());
    drop(images);
    let _ = fs::remove_dir_all(&scratch);
    for (id, range) in ids {
        e.assert_no_leaks(&id, Some(range));
    }
}

/// What the inner engine keeps in the host-backed /var/lib/docker goes into the committed
/// image (owners of inside), at commit of a running container (which pauses it) and of a
/// stopped one; a system container of that image finds it in its own /var/lib/docker.
#[test]
fn inner_engine_data_is_committed() {
    let Some(e) = Engine::get() else { return };
    let mut images = Images(&e, Vec::new());
    let c = e.start_system(&[]);
    let range = range_of(&c);
    c.sh("set -e; mkdir -p /var/lib/docker/image/overlay2; echo repo > /var/lib/docker/image/repositories.json; \
          echo u > /var/lib/docker/image/overlay2/u; chown 1000:1000 /var/lib/docker/image/overlay2/u")
        .expect_success();
    let image = images.commit(&c, "sysvisor-e2e/commit-inner");
    assert_eq!(c.status(), "running");
    let inside = with_runc(
        &e,
        &image,
        "cat /var/lib/docker/image/repositories.json; \
         stat -c %u:%g /var/lib/docker/image/repositories.json /var/lib/docker/image/overlay2/u",
    );
    assert_eq!(inside, "repo\n0:0\n1000:1000");

    // Stopped after a change: the commit has the change.
    c.sh("echo later > /var/lib/docker/later; rm /var/lib/docker/image/repositories.json")
        .expect_success();
    c.docker("stop").expect_success();
    let image = images.commit(&c, "sysvisor-e2e/commit-inner-stopped");
    let inside = with_runc(
        &e,
        &image,
        "cat /var/lib/docker/later; test -e /var/lib/docker/image/repositories.json || echo gone",
    );
    assert_eq!(inside, "later\ngone");

    // A system container of it: the data is in its own volume, owned by its range.
    let (c2, out) = e.run_image_detached(&image, &["--runtime", RUNTIME], &["sleep", "3600"]);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    let range2 = range_of(&c2);
    let out = c2
        .sh("cat /var/lib/docker/later; stat -c %u:%g /var/lib/docker/image/overlay2/u; \
             grep -c ' /var/lib/docker ' /proc/self/mountinfo")
        .expect_success();
    assert_eq!(out.out(), "later\n1000:1000\n1", "{out}");

    let ids = [(c.id(), range), (c2.id(), range2)];
    assert!(c.remove().success());
    assert!(c2.remove().success());
    drop(images);
    for (id, range) in ids {
        e.assert_no_leaks(&id, Some(range));
    }
}
