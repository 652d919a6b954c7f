//! Attacks on the mount trap from inside a system container, as its root and as an
//! unprivileged user (uid 1000) through a user namespace of its own (`unshare -Urmpf`):
//! each test fails if the attack gets through (see docs/security.md, "The mount trap").
//!
//! The attacker is a small static C program (tests/attack/mounttrap_attack.c), built with
//! `cc -static` at test time and bound into the container read-only; without a C compiler
//! that links static programs (or off x86_64) the tests skip visibly (`sysvisor_skip`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sysvisor_e2e::{cmd, leaks, scratch_dir, Container, Engine, Output};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/attack/mounttrap_attack.c");

/// The attacker's binary, its host-side files, and their cleanup.
struct Attack {
    dir: PathBuf,
}

impl Attack {
    /// Builds the attacker; `None` (after saying why) where it cannot be built.
    fn build(name: &str) -> Option<Attack> {
        if !cfg!(target_arch = "x86_64") {
            sysvisor_skip::optional("the attacker injects x86_64 system calls");
            return None;
        }
        let dir = scratch_dir(name);
        let attack = Attack { dir };
        fs::create_dir_all(attack.bin_dir()).unwrap();
        let out = cmd::run(
            Command::new("cc")
                .args(["-static", "-O2", "-o"])
                .arg(attack.bin_dir().join("attack"))
                .arg(SOURCE),
            None,
            Duration::from_secs(120),
        );
        if !out.success() {
            // cc links every Rust test here; a static libc comes with libc6-dev.
            sysvisor_skip::required(&format!("cannot build the static attacker with cc: {out}"));
            return None;
        }
        // A host file the container cannot see, readable by anyone who reaches it.
        fs::write(attack.secret(), "host secret\n").unwrap();
        fs::set_permissions(attack.secret(), fs::Permissions::from_mode(0o644)).unwrap();
        Some(attack)
    }

    fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }

    /// The `-v` option that binds the attacker at /attack.
    fn volume(&self) -> String {
        format!("{}:/attack:ro", self.bin_dir().display())
    }

    fn secret(&self) -> PathBuf {
        self.dir.join("secret")
    }

    /// Where an injected write of attacker `who` would land: a directory only host root
    /// may write to.
    fn pwned(&self, who: &str) -> PathBuf {
        self.dir.join(format!("pwned-{who}"))
    }
}

impl Drop for Attack {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The uid 1000 user's own user, mount and pid namespaces, with its own /proc (mounted
/// through the trap), around `command`.
fn as_user_in_own_namespaces(c: &Container<'_>, e: &Engine, command: &[&str]) -> Output {
    let mut args = vec!["exec", "-u", "1000", c.name.as_str()];
    args.extend_from_slice(&["unshare", "-Urmpf", "--mount-proc"]);
    args.extend_from_slice(command);
    e.docker(&args)
}

#[track_caller]
fn count(out: &Output, key: &str) -> u64 {
    let fields = out.fields();
    let value = fields.get(key).unwrap_or_else(|| panic!("no {key}: {out}"));
    value.parse().unwrap_or_else(|_| panic!("{key}={value}: {out}"))
}

/// Races the helper processes the trap starts (ptrace, /proc/PID/root) and checks that
/// none was reached, that the race really happened, and that proc mounts still worked.
#[track_caller]
fn assert_race_refused(out: &Output, pwned: &Path, who: &str) {
    assert!(out.success(), "{who}: the attacker failed to run: {out}");
    assert!(!pwned.exists(), "{who}: an injected write reached the host: {out}");
    assert_eq!(count(out, "injected"), 0, "{who}: code injected into a helper: {out}");
    assert_eq!(count(out, "attached"), 0, "{who}: ptrace attached to a helper: {out}");
    assert_eq!(count(out, "read_host"), 0, "{who}: read a host file through a helper: {out}");
    assert!(count(out, "mounts") > 0, "{who}: proc mounts should still work: {out}");
    assert!(count(out, "seen") > 0, "{who}: the race never saw a helper: {out}");
}

/// Issue 11, item 1: the helper that performs a trapped proc mount can be neither ptraced
/// (and made to write host files) nor entered through /proc/PID/root.
#[test]
fn the_mount_helper_cannot_be_reached_from_the_container() {
    let Some(e) = Engine::get() else { return };
    let Some(attack) = Attack::build("mounttrap-attack-race") else { return };
    let c = e.start_system(&["-v", &attack.volume()]);
    let secret = attack.secret().display().to_string();
    let race = |who: &str| {
        let pwned = attack.pwned(who).display().to_string();
        let command = ["/attack/attack", "race", "/tmp/race", &secret, &pwned, "60"];
        let out = match who {
            "root" => c.exec(&command),
            _ => as_user_in_own_namespaces(&c, &e, &command),
        };
        let written = attack.pwned(who).exists();
        eprintln!("{who}: {} host_file_written={written}", out.out().replace('\n', " "));
        out
    };
    // Both attacks first, then the verdicts: each one's result is shown either way.
    let root = race("root");
    let user = race("uid1000");
    assert_race_refused(&root, &attack.pwned("root"), "container root");
    assert_race_refused(&user, &attack.pwned("uid1000"), "uid 1000 in its own user namespace");
    leaks::remove_and_assert_clean(&e, c);
}

/// Issue 11, items 6 and 8: mount targets resolve inside the caller's root, also through
/// `/proc/self/root` and symlinks to host paths, and a symlink target is followed as
/// mount(2) follows it.
#[test]
fn mount_targets_resolve_inside_the_callers_root() {
    let Some(e) = Engine::get() else { return };
    let Some(attack) = Attack::build("mounttrap-attack-paths") else { return };
    // A host directory only host root may enter, with something in it.
    let private = attack.dir.join("private");
    fs::create_dir_all(private.join("exists")).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let c = e.start_system(&["-m", "256m", "-v", &attack.volume()]);
    let setup = format!(
        "mkdir -p /tmp/d && ln -s /tmp/d /tmp/link && ln -s {} /tmp/host && chmod 1777 /tmp",
        private.display()
    );
    c.sh(&setup).expect_success();
    let probes = [
        "/proc/self/root/tmp/host/exists",
        "/proc/self/root/tmp/host/missing",
        "/proc/self/root/tmp/link",
        "/tmp/link",
        "/tmp/d",
    ];
    let mut command = vec!["/attack/attack", "probe"];
    command.extend_from_slice(&probes);

    let root = c.exec(&command);
    let user = as_user_in_own_namespaces(&c, &e, &command);
    for (who, out) in [("container root", &root), ("uid 1000", &user)] {
        assert!(out.success(), "{who}: {out}");
        let f = out.fields();
        let get = |p: &str| f.get(p).cloned().unwrap_or_else(|| panic!("{who}: no {p}: {out}"));
        // Both missing inside the container: the host's directory is not consulted.
        assert_eq!(get(probes[0]), "ENOENT", "{who}: a host path told apart: {out}");
        assert_eq!(get(probes[1]), "ENOENT", "{who}: {out}");
        // Mounted, with the views (the container's 256 MiB).
        for probe in &probes[2..] {
            assert_eq!(get(probe), "0:262144", "{who}: {probe}: {out}");
        }
    }
    leaks::remove_and_assert_clean(&e, c);
    assert!(private.join("exists").is_dir(), "the host directory is untouched");
}

/// The trap resolves a target with no more rights than its caller: container root without
/// CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH cannot mount below a directory of another
/// user of the container that it could not enter itself.
#[test]
fn the_trap_resolves_targets_with_the_callers_capabilities() {
    let Some(e) = Engine::get() else { return };
    let Some(attack) = Attack::build("mounttrap-attack-caps") else { return };
    let c = e.start_system(&["-m", "256m", "-v", &attack.volume()]);
    c.sh(
        "mkdir -p /srv/private/d /srv/open/d && chown 2000 /srv/private && chmod 700 /srv/private",
    )
    .expect_success();
    let out = c.exec(&["/attack/attack", "probe-without-dac", "/srv/private/d", "/srv/open/d"]);
    assert!(out.success(), "{out}");
    let f = out.fields();
    assert_eq!(f.get("/srv/private/d").map(String::as_str), Some("EACCES"), "{out}");
    assert_eq!(f.get("/srv/open/d").map(String::as_str), Some("0:262144"), "{out}");
    // With its capabilities, root enters the directory, and so does the trap for it.
    let out = c.exec(&["/attack/attack", "probe", "/srv/private/d"]);
    assert_eq!(out.fields().get("/srv/private/d").map(String::as_str), Some("0:262144"), "{out}");
    leaks::remove_and_assert_clean(&e, c);
}
