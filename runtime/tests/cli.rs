//! Parsing the command lines Docker's containerd shim sends (tests/fixtures/docker-argv.txt
//! was captured from dockerd 20.10 + containerd 1.6 through a logging runtime).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sysvisor_runc::cli::{self, Command, LogFormat};

const ID: &str = "4ca3138ecd76d85c574b6f2e78045daae3cf49e78a735bffd2d3fe698dccf1ba";

fn split(line: &str) -> Vec<OsString> {
    line.split_whitespace().map(OsString::from).collect()
}

fn captured() -> Vec<Vec<OsString>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker-argv.txt");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(split)
        .collect()
}

#[test]
fn the_shims_create_line() {
    let line = format!(
        "--root /var/run/docker/runtime-runc/moby --log /run/containerd/io.containerd.runtime.v2.task/moby/{ID}/log.json \
         --log-format json create --bundle /run/containerd/io.containerd.runtime.v2.task/moby/{ID} \
         --pid-file /run/containerd/io.containerd.runtime.v2.task/moby/{ID}/init.pid \
         --console-socket /tmp/pty123/pty.sock {ID}"
    );
    let inv = cli::parse(split(&line)).unwrap();
    assert_eq!(inv.global.root, Some(PathBuf::from("/var/run/docker/runtime-runc/moby")));
    assert_eq!(
        inv.global.log,
        Some(PathBuf::from(format!(
            "/run/containerd/io.containerd.runtime.v2.task/moby/{ID}/log.json"
        )))
    );
    assert_eq!(inv.global.log_format, LogFormat::Json);
    assert!(!inv.global.systemd_cgroup);
    assert_eq!(inv.sub_index, 6);
    assert_eq!(inv.args, split(&line));
    let Command::Create(create) = inv.command else { panic!("{:?}", inv.command) };
    assert_eq!(create.id, ID);
    assert_eq!(
        create.bundle,
        PathBuf::from(format!("/run/containerd/io.containerd.runtime.v2.task/moby/{ID}"))
    );
    assert_eq!(
        create.pid_file,
        Some(PathBuf::from(format!(
            "/run/containerd/io.containerd.runtime.v2.task/moby/{ID}/init.pid"
        )))
    );
    assert_eq!(create.console_socket, Some(PathBuf::from("/tmp/pty123/pty.sock")));
}

#[test]
fn every_captured_line_parses_and_keeps_its_arguments() {
    let lines = captured();
    assert!(lines.len() >= 10);
    let mut names = Vec::new();
    for args in lines {
        let inv = cli::parse(args.clone()).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(inv.args, args);
        assert_eq!(inv.global.log_format, LogFormat::Json);
        assert!(inv.note.is_none(), "{args:?}: {:?}", inv.note);
        let name = args[inv.sub_index].to_string_lossy().into_owned();
        match (&inv.command, name.as_str()) {
            (Command::Create(c), "create") => assert!(c.pid_file.is_some()),
            (Command::Delete(_), "delete")
            | (Command::Pause(_), "pause")
            | (Command::Kill(_), "kill")
            | (Command::Exec(_), "exec") => {}
            (Command::Forward { name: Some(n) }, other) => assert_eq!(n, other),
            (command, other) => panic!("{other}: {command:?}"),
        }
        names.push(name);
    }
    for name in ["create", "start", "delete", "kill", "exec", "pause", "resume", "ps", "update"] {
        assert!(names.iter().any(|n| n == name), "{name} not captured");
    }
}

#[test]
fn delete_kill_and_exec_flags() {
    let inv =
        cli::parse(split(&format!("--root /r --log /l --log-format json delete --force {ID}")))
            .unwrap();
    let Command::Delete(d) = inv.command else { panic!() };
    assert!(d.force);
    assert_eq!(d.id, ID);

    let inv = cli::parse(split(&format!("--root /r kill {ID} 15"))).unwrap();
    let Command::Kill(k) = inv.command else { panic!() };
    assert!(!k.all);
    assert_eq!(k.signal.as_deref(), Some("15"));
    let inv = cli::parse(split(&format!("kill --all {ID} SIGKILL"))).unwrap();
    let Command::Kill(k) = inv.command else { panic!() };
    assert!(k.all);
    assert_eq!(k.signal.as_deref(), Some("SIGKILL"));
    let inv = cli::parse(split(&format!("kill -a {ID}"))).unwrap();
    let Command::Kill(k) = inv.command else { panic!() };
    assert!(k.all);
    assert_eq!(k.signal, None);

    let line = format!(
        "--root /r --log /l --log-format json exec --process /tmp/runc-process1 --console-socket /tmp/pty/pty.sock \
         --detach --pid-file /b/x.pid {ID}"
    );
    let inv = cli::parse(split(&line)).unwrap();
    let Command::Exec(e) = inv.command else { panic!() };
    assert_eq!(e.process, Some(PathBuf::from("/tmp/runc-process1")));
    assert!(e.detach);
    assert_eq!(e.pid_file, Some(PathBuf::from("/b/x.pid")));
    assert_eq!(e.id, ID);

    let inv = cli::parse(split(&format!(
        "exec -t -e A=1 --env B=2 -u 1000:1000 --cwd /tmp --cap CAP_SYS_ADMIN --no-new-privs \
         --preserve-fds 2 --process-label l --apparmor p {ID} ls -la /"
    )))
    .unwrap();
    let Command::Exec(e) = inv.command else { panic!() };
    assert!(e.tty && e.no_new_privs);
    assert_eq!(e.env, vec!["A=1", "B=2"]);
    assert_eq!(e.user.as_deref(), Some("1000:1000"));
    assert_eq!(e.cap, vec!["CAP_SYS_ADMIN"]);
    assert_eq!(e.preserve_fds, Some(2));
    assert_eq!(e.command, vec![OsString::from("ls"), "-la".into(), "/".into()]);
}

#[test]
fn global_flags_in_every_spelling() {
    let inv = cli::parse(split(
        "--debug --systemd-cgroup --criu /usr/sbin/criu --rootless=false -root /r -log=/l -log-format text state x",
    ))
    .unwrap();
    assert!(inv.global.debug && inv.global.systemd_cgroup);
    assert_eq!(inv.global.root, Some(PathBuf::from("/r")));
    assert_eq!(inv.global.log, Some(PathBuf::from("/l")));
    assert_eq!(inv.global.log_format, LogFormat::Text);
    assert_eq!(inv.global.rootless, Some(OsString::from("false")));
    assert_eq!(inv.command, Command::Forward { name: Some("state".into()) });
    assert_eq!(
        inv.global.state_flags(),
        vec![
            OsString::from("--root"),
            "/r".into(),
            "--systemd-cgroup".into(),
            "--rootless=false".into()
        ]
    );

    let inv = cli::parse(split("--systemd-cgroup=false --debug=true list")).unwrap();
    assert!(!inv.global.systemd_cgroup && inv.global.debug);
}

#[test]
fn create_and_run_flags_in_every_spelling() {
    let inv = cli::parse(split(
        "create -b /b --no-pivot --no-new-keyring --preserve-fds 3 --pidfd-socket /s c1",
    ))
    .unwrap();
    let Command::Create(c) = inv.command else { panic!() };
    assert_eq!(c.bundle, PathBuf::from("/b"));
    assert!(c.no_pivot && c.no_new_keyring);
    assert_eq!(c.preserve_fds, Some(3));

    let inv = cli::parse(split("create -bundle=/b -pid-file /p c1")).unwrap();
    let Command::Create(c) = inv.command else { panic!() };
    assert_eq!(c.bundle, PathBuf::from("/b"));
    assert_eq!(c.pid_file, Some(PathBuf::from("/p")));

    let inv = cli::parse(split("create c1")).unwrap();
    let Command::Create(c) = inv.command else { panic!() };
    assert_eq!(c.bundle, PathBuf::from("."));

    let inv = cli::parse(split("run -d --keep --no-subreaper -b /b c2")).unwrap();
    let Command::Run(r) = inv.command else { panic!() };
    assert!(r.detach && r.keep && r.no_subreaper);
    assert_eq!(r.id, "c2");
}

#[test]
fn forwarded_commands_are_never_judged_here() {
    for line in [
        "ps --format json c",
        "ps -f table c -- -ef",
        "update --resources - c",
        "update -r /tmp/r.json --memory 1g c",
        "events --stats --interval 5s c",
        "features",
        "resume c",
        "start c",
        "state c",
        "list -q",
        "spec --rootless",
        "checkpoint --image-path /i --leave-running c",
        "restore --image-path /i -b /b c",
        "some-future-command --with --flags",
        "--help",
        "create --help",
    ] {
        let args = split(line);
        let inv = cli::parse(args.clone()).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(matches!(inv.command, Command::Forward { .. }), "{line}: {:?}", inv.command);
        assert_eq!(inv.args, args);
    }
    let inv = cli::parse(split("--version")).unwrap();
    assert_eq!(inv.command, Command::Version);
    let inv = cli::parse(split("-v")).unwrap();
    assert_eq!(inv.command, Command::Version);
}

#[test]
fn unknown_flags_are_refused_for_create_and_passed_on_for_the_others() {
    let err = cli::parse(split("create --bundle /b --frobnicate c")).unwrap_err();
    assert!(err.to_string().contains("--frobnicate"), "{err}");
    let err = cli::parse(split("create --bundle /b")).unwrap_err();
    assert!(err.to_string().contains("<ID>"), "{err}");

    let inv = cli::parse(split("delete --frobnicate c")).unwrap();
    assert_eq!(inv.command, Command::Forward { name: Some("delete".into()) });
    assert!(inv.note.as_deref().unwrap().contains("--frobnicate"));

    let err = cli::parse(split("--log-format yaml state c")).unwrap_err();
    assert!(err.to_string().contains("yaml"), "{err}");
}
