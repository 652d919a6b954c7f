//! The order of the side effects around runc, and the clean-up after each failure, with a
//! fake host (no root, no daemon, no runc).

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sysvisor_proto::Container;
use sysvisor_runc::cgroups::Layout;
use sysvisor_runc::cli::{self, Command, Invocation};
use sysvisor_runc::idrange::DiskRoot;
use sysvisor_runc::lifecycle::{self, Host, HostError, Ids, LifecycleError};
use sysvisor_runc::runc::RuncState;
use sysvisor_runc::spec;

const IDS: Ids = Ids { uid_base: 165536, gid_base: 165536, count: 65536 };

/// The container id in the fixtures' paths of Docker's own files; the bundles use `c1`,
/// as Docker names the runtime's container by that id.
const FIXTURE_ID: &str = "4ca3138ecd76d85c574b6f2e78045daae3cf49e78a735bffd2d3fe698dccf1ba";

#[derive(Default)]
struct Fake {
    calls: RefCell<Vec<String>>,
    registered: RefCell<Vec<Container>>,
    daemon_down: bool,
    allocate_fails: bool,
    shift_fails: bool,
    binds_unsupported: bool,
    register_fails: bool,
    delegate_fails: bool,
    lock_fails: bool,
    /// Exit code of the runc command (the first one; later ones exit 0).
    runc_code: i32,
    /// `runc state` answer.
    state: Option<RuncState>,
    /// Written to the pid file named in the runc arguments.
    pid: u32,
}

impl Fake {
    fn new() -> Fake {
        Fake { pid: 4242, ..Fake::default() }
    }
    fn log(&self, s: impl Into<String>) {
        self.calls.borrow_mut().push(s.into());
    }
    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
    fn names(&self) -> Vec<String> {
        self.calls().iter().map(|c| c.split(' ').next().unwrap().to_string()).collect()
    }
}

impl Host for Fake {
    type Range = Ids;
    fn range_ids(&self, range: &Ids) -> Ids {
        *range
    }
    fn ping_daemon(&self) -> Result<(), HostError> {
        self.log("ping");
        if self.daemon_down {
            return Err("sysvisor-fs daemon not reachable at /run/sysvisor/fs.sock: No such file or directory".into());
        }
        Ok(())
    }
    fn fs_mountpoint(&self) -> PathBuf {
        PathBuf::from("/var/lib/sysvisor-fs")
    }
    fn own_views(&self, id: &str) -> Option<PathBuf> {
        Some(PathBuf::from("/var/lib/sysvisor-fs-containers").join(id))
    }
    fn host_capabilities(&self) -> Result<Vec<String>, HostError> {
        Ok(vec!["CAP_SYS_ADMIN".into(), "CAP_CHOWN".into()])
    }
    fn reclaim_ranges(&self) -> Result<(), HostError> {
        self.log("reclaim");
        Ok(())
    }
    fn schedule_reclaim(&self, id: &str) {
        self.log(format!("schedule-reclaim {id}"));
    }
    fn allocate(&self, id: &str, bundle: &Path) -> Result<Ids, HostError> {
        self.log(format!("allocate {id} {}", bundle.display()));
        if self.allocate_fails {
            return Err("uid/gid pool exhausted".into());
        }
        Ok(IDS)
    }
    fn shift_rootfs(
        &self,
        id: &str,
        rootfs: &Path,
        _: &Ids,
        disk: DiskRoot,
    ) -> Result<PathBuf, HostError> {
        let from = if disk == DiskRoot::HOST {
            String::new()
        } else {
            format!(" from {}:{}", disk.uid, disk.gid)
        };
        self.log(format!("shift {id} {}{from}", rootfs.display()));
        if self.shift_fails {
            return Err("kernel lacks idmapped mounts".into());
        }
        Ok(PathBuf::from(format!("/run/sysvisor/rootfs/{id}/root")))
    }
    fn shift_bind_source(
        &self,
        id: &str,
        source: &Path,
        _: &Ids,
    ) -> Result<Option<PathBuf>, HostError> {
        self.log(format!("bind {}", source.display()));
        if self.binds_unsupported {
            return Ok(None);
        }
        Ok(Some(PathBuf::from(format!("/run/sysvisor/rootfs/{id}/bind{}", source.display()))))
    }
    fn give_to_range(&self, path: &Path, range: &Ids) -> Result<(), HostError> {
        self.log(format!("own {} {}", path.display(), range.uid_base));
        Ok(())
    }
    fn unshift_rootfs(&self, id: &str) -> Result<(), HostError> {
        self.log(format!("unshift {id}"));
        Ok(())
    }
    fn volumes_dir(&self, id: &str) -> Option<PathBuf> {
        Some(PathBuf::from(format!("/var/lib/sysvisor/volumes/{id}")))
    }
    fn ensure_volumes(&self, id: &str, _: &Ids, sources: &[PathBuf]) -> Result<(), HostError> {
        let names: Vec<_> =
            sources.iter().map(|s| s.file_name().unwrap().to_string_lossy().into_owned()).collect();
        self.log(format!("volumes {id} {}", names.join(",")));
        Ok(())
    }
    fn seed_volumes(&self, id: &str, root: &Path, sources: &[PathBuf]) -> Result<(), HostError> {
        self.log(format!("seed {id} {} {}", root.display(), sources.len()));
        Ok(())
    }
    fn save_volumes(&self, id: &str) -> Result<(), HostError> {
        self.log(format!("save {id}"));
        Ok(())
    }
    fn refresh_engine_mount(&self, id: &str) -> Result<(), HostError> {
        self.log(format!("refresh {id}"));
        Ok(())
    }
    fn cgroup_layout(&self) -> Layout {
        Layout::Hybrid
    }
    fn delegate_cgroups(&self, pid: u32, ids: Ids) -> Result<(), HostError> {
        self.log(format!("delegate {pid} {}", ids.uid_base));
        if self.delegate_fails {
            return Err("chown /sys/fs/cgroup/memory/docker/c1: read-only file system".into());
        }
        Ok(())
    }
    fn register(&self, container: Container) -> Result<(), HostError> {
        self.log(format!("register {}", container.id));
        if self.register_fails {
            return Err("daemon went away".into());
        }
        self.registered.borrow_mut().push(container);
        Ok(())
    }
    fn unregister(&self, id: &str) -> Result<(), HostError> {
        self.log(format!("unregister {id}"));
        Ok(())
    }
    fn views_locked(&self, id: &str, init_pid: u32) -> Result<(), HostError> {
        self.log(format!("locked {id} {init_pid}"));
        if self.lock_fails {
            return Err("the views of container c1 could not be locked, so it must not run: \
                        this kernel cannot lock the views"
                .into());
        }
        Ok(())
    }
    fn cgroup_of(&self, _: u32) -> Option<String> {
        Some("/docker/c1".into())
    }
    fn now_unix_ms(&self) -> u64 {
        1_700_000_000_000
    }
    fn runc(&self, args: &[OsString]) -> Result<i32, HostError> {
        let first = !self.calls().iter().any(|c| c.starts_with("runc"));
        let line: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        self.log(format!("runc {}", line.join(" ")));
        let code = if first { self.runc_code } else { 0 };
        if code == 0 {
            if let Some(i) = line.iter().position(|a| a == "--pid-file") {
                std::fs::write(&line[i + 1], self.pid.to_string()).unwrap();
            }
        }
        Ok(code)
    }
    fn runc_state(&self, id: &str) -> Result<Option<RuncState>, HostError> {
        self.log(format!("state {id}"));
        Ok(self.state.clone())
    }
    fn self_exe(&self) -> Result<PathBuf, HostError> {
        Ok(PathBuf::from("/usr/bin/sysvisor-runc"))
    }
    fn daemon_socket(&self) -> PathBuf {
        PathBuf::from("/run/sysvisor/fs.sock")
    }
    fn warn(&self, msg: &str) {
        self.log(format!("warn {msg}"));
    }
    fn debug(&self, _: &str) {}
}

struct Bundle {
    dir: tempfile::TempDir,
    original: String,
}

impl Bundle {
    fn new(fixture: &str) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
        let original = std::fs::read_to_string(src).unwrap().replace(FIXTURE_ID, "c1");
        std::fs::write(dir.path().join("config.json"), &original).unwrap();
        Bundle { dir, original }
    }
    fn path(&self) -> PathBuf {
        std::fs::canonicalize(self.dir.path()).unwrap()
    }
    fn config(&self) -> String {
        std::fs::read_to_string(self.path().join("config.json")).unwrap()
    }
    fn config_json(&self) -> Value {
        serde_json::from_str(&self.config()).unwrap()
    }
    fn has_original(&self) -> bool {
        self.path().join(spec::ORIGINAL_FILE).exists()
    }
    fn untouched(&self) -> bool {
        self.config() == self.original && !self.has_original()
    }
    fn create_line(&self) -> Invocation {
        let b = self.path();
        cli::parse(
            format!(
                "--root /run/r --log {b}/log.json --log-format json create --bundle {b} --pid-file {b}/init.pid c1",
                b = b.display()
            )
            .split(' '),
        )
        .unwrap()
    }
}

fn create(host: &Fake, bundle: &Bundle) -> Result<i32, LifecycleError> {
    let inv = bundle.create_line();
    let Command::Create(args) = &inv.command else { panic!() };
    lifecycle::create(host, &inv, args)
}

#[test]
fn create_prepares_everything_then_runs_runc_then_registers() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake::new();
    assert_eq!(create(&host, &bundle).unwrap(), 0);
    assert_eq!(
        host.names(),
        [
            "ping", "reclaim", "allocate", "volumes", "shift", "own", "own", "own", "seed", "runc",
            "locked", "register", "delegate"
        ]
    );
    let calls = host.calls();
    assert_eq!(calls[2], format!("allocate c1 {}", bundle.path().display()));
    assert_eq!(calls[3], "volumes c1 docker,containerd,kubelet");
    assert!(calls[4].ends_with(
        "/overlay2/7c71886fa21a93d6229edffc4ac7b3ee1258af91d90abd843b2dfa7c521b7cb7/merged"
    ));
    // Docker's own files are given to the container's root.
    assert_eq!(calls[5], format!("own /var/lib/docker/containers/c1/resolv.conf {}", IDS.uid_base));
    // An empty volume gets what the shifted rootfs holds at its place.
    assert_eq!(calls[8], "seed c1 /run/sysvisor/rootfs/c1/root 3");
    // runc gets the shim's arguments unchanged.
    assert!(calls[9].starts_with("runc --root /run/r --log "), "{}", calls[9]);
    assert!(calls[9].ends_with("init.pid c1"));
    assert_eq!(calls[10], "locked c1 4242");
    assert_eq!(calls[12], format!("delegate 4242 {}", IDS.uid_base));

    let registered = host.registered.borrow()[0].clone();
    assert_eq!(
        registered,
        Container {
            id: "c1".into(),
            init_pid: 4242,
            uid_base: IDS.uid_base,
            gid_base: IDS.gid_base,
            id_count: IDS.count,
            cgroup: Some("/docker/c1".into()),
            created_unix_ms: 1_700_000_000_000,
        }
    );

    // The rewritten config: runc's root is the shifted one, bind sources are not shifted
    // unless asked (nor are the views, the container's own files), the original is kept
    // beside it.
    let config = bundle.config_json();
    assert_eq!(config["root"]["path"], "/run/sysvisor/rootfs/c1/root");
    assert_eq!(config["linux"]["uidMappings"][0]["hostID"], IDS.uid_base);
    let mounts = config["mounts"].as_array().unwrap();
    let source_of =
        |dest: &str| mounts.iter().find(|m| m["destination"] == dest).unwrap()["source"].clone();
    assert_eq!(source_of("/data"), "/srv/data");
    assert_eq!(source_of("/etc/hosts"), "/var/lib/docker/containers/c1/hosts");
    assert_eq!(source_of("/proc/meminfo"), "/var/lib/sysvisor-fs-containers/c1/proc/meminfo");
    // The volumes are bound as they are (they belong to the range already).
    assert_eq!(source_of("/var/lib/docker"), "/var/lib/sysvisor/volumes/c1/docker");
    // Not a systemd container: no /run tmpfs, no stop-signal record.
    assert!(!mounts.iter().any(|m| m["destination"] == "/run"));
    assert!(config["annotations"].get("io.sysvisor.init").is_none());
    assert_eq!(
        std::fs::read_to_string(bundle.path().join(spec::ORIGINAL_FILE)).unwrap(),
        bundle.original
    );
}

/// The bundle's config with `SYSVISOR_SHIFT_BINDS=list` in the process's environment.
fn ask_to_shift(bundle: &Bundle, list: &str) {
    let mut config = bundle.config_json();
    let env = config["process"]["env"].as_array_mut().unwrap();
    env.push(Value::String(format!("SYSVISOR_SHIFT_BINDS={list}")));
    std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
}

fn mount_of(config: &Value, dest: &str) -> Value {
    config["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == dest).unwrap().clone()
}

#[test]
fn binds_are_shifted_only_when_asked_and_then_nosuid_nodev() {
    let bundle = Bundle::new("docker-run.json");
    ask_to_shift(&bundle, "/data");
    let host = Fake::new();
    create(&host, &bundle).unwrap();
    assert_eq!(host.names().iter().filter(|n| *n == "bind").count(), 1);
    assert!(host.calls().contains(&"bind /srv/data".to_string()));
    let data = mount_of(&bundle.config_json(), "/data");
    assert_eq!(data["source"], "/run/sysvisor/rootfs/c1/bind/srv/data");
    assert_eq!(data["options"], serde_json::json!(["rbind", "rprivate", "nosuid", "nodev"]));
}

#[test]
fn a_shift_that_cannot_be_done_or_names_no_bind_is_an_error() {
    let bundle = Bundle::new("docker-run.json");
    ask_to_shift(&bundle, "/data");
    let host = Fake { binds_unsupported: true, ..Fake::new() };
    let err = create(&host, &bundle).unwrap_err();
    assert!(err.to_string().contains("no idmapped-mount support"), "{err}");
    assert!(!host.names().contains(&"runc".to_string()));

    let bundle = Bundle::new("docker-run.json");
    ask_to_shift(&bundle, "/data,/proc");
    let host = Fake::new();
    let err = create(&host, &bundle).unwrap_err();
    assert!(err.to_string().contains("\"/proc\""), "{err}");
    assert!(!host.names().contains(&"runc".to_string()));
}

#[test]
fn a_malformed_config_is_refused_before_anything_happens() {
    let bundle = Bundle::new("docker-run.json");
    let broken = &bundle.original[..bundle.original.len() / 2];
    std::fs::write(bundle.path().join("config.json"), broken).unwrap();
    let host = Fake::new();
    let err = create(&host, &bundle).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("malformed OCI config {}/config.json: ", bundle.path().display())),
        "{msg}"
    );
    assert!(msg.contains("EOF while parsing"), "{msg}");
    assert!(host.calls().is_empty(), "{:?}", host.calls());
    assert_eq!(bundle.config(), broken);
    assert!(!bundle.has_original());
}

#[test]
fn host_network_is_refused_before_the_daemon_or_the_allocator() {
    let bundle = Bundle::new("docker-hostnet.json");
    let host = Fake::new();
    let err = create(&host, &bundle).unwrap_err();
    assert!(err.to_string().contains("--network=host"), "{err}");
    assert!(host.calls().is_empty());
    assert!(bundle.untouched());
}

#[test]
fn no_daemon_no_container_and_nothing_allocated() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake { daemon_down: true, ..Fake::new() };
    let err = create(&host, &bundle).unwrap_err();
    assert!(
        err.to_string().starts_with("sysvisor-fs daemon not reachable at /run/sysvisor/fs.sock"),
        "{err}"
    );
    assert_eq!(host.names(), ["ping"]);
    assert!(bundle.untouched());
}

#[test]
fn an_exhausted_pool_leaves_nothing_behind() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake { allocate_fails: true, ..Fake::new() };
    let err = create(&host, &bundle).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot allocate a uid/gid range for container c1: uid/gid pool exhausted"
    );
    assert_eq!(host.names(), ["ping", "reclaim", "allocate"]);
    assert!(bundle.untouched());
}

#[test]
fn a_failed_shift_is_undone_and_runc_never_runs() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake { shift_fails: true, ..Fake::new() };
    let err = create(&host, &bundle).unwrap_err();
    assert!(
        err.to_string().starts_with("cannot shift the rootfs /var/lib/docker/overlay2/"),
        "{err}"
    );
    assert!(err.to_string().ends_with("kernel lacks idmapped mounts"), "{err}");
    assert_eq!(host.names(), ["ping", "reclaim", "allocate", "volumes", "shift", "unshift"]);
    assert!(bundle.untouched());
}

#[test]
fn a_failed_runc_create_is_undone_and_its_code_returned() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake { runc_code: 1, ..Fake::new() };
    assert_eq!(create(&host, &bundle).unwrap(), 1);
    let names = host.names();
    assert_eq!(&names[names.len() - 2..], ["runc", "unshift"]);
    assert!(!names.contains(&"register".to_string()));
    assert!(bundle.untouched());
}

#[test]
fn a_failed_registration_removes_the_created_container() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake { register_fails: true, ..Fake::new() };
    let err = create(&host, &bundle).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot register container c1 with the sysvisor-fs daemon: daemon went away"
    );
    let calls = host.calls();
    let tail: Vec<_> = calls[calls.len() - 4..].to_vec();
    assert_eq!(
        tail,
        ["register c1", "runc --root /run/r delete --force c1", "unregister c1", "unshift c1"]
    );
    assert!(bundle.untouched());
}

#[test]
fn a_second_create_starts_from_the_original() {
    let bundle = Bundle::new("docker-run.json");
    create(&Fake::new(), &bundle).unwrap();
    let first = bundle.config_json();
    create(&Fake::new(), &bundle).unwrap();
    assert_eq!(bundle.config_json(), first);
    assert_eq!(
        std::fs::read_to_string(bundle.path().join(spec::ORIGINAL_FILE)).unwrap(),
        bundle.original
    );
}

fn state_of(bundle: &Bundle) -> Option<RuncState> {
    Some(RuncState {
        id: "c1".into(),
        pid: 4242,
        status: "stopped".into(),
        bundle: bundle.path(),
        annotations: None,
    })
}

fn delete(host: &Fake, line: &str) -> Result<i32, LifecycleError> {
    let inv = cli::parse(line.split(' ')).unwrap();
    let Command::Delete(args) = &inv.command else { panic!() };
    lifecycle::delete(host, &inv, args)
}

#[test]
fn delete_runs_runc_then_cleans_up_and_restores_the_config() {
    let bundle = Bundle::new("docker-run.json");
    create(&Fake::new(), &bundle).unwrap();
    let host = Fake { state: state_of(&bundle), ..Fake::new() };
    assert_eq!(delete(&host, "--root /run/r delete c1").unwrap(), 0);
    assert_eq!(
        host.calls(),
        [
            "state c1",
            "runc --root /run/r delete c1",
            "unregister c1",
            "save c1",
            "unshift c1",
            "schedule-reclaim c1"
        ]
    );
    assert!(bundle.untouched());
}

fn pause(host: &Fake, line: &str) -> Result<i32, LifecycleError> {
    let inv = cli::parse(line.split(' ')).unwrap();
    let Command::Pause(args) = &inv.command else { panic!() };
    lifecycle::pause(host, &inv, &args.id)
}

/// `docker commit` pauses the container: the inner engines' data is copied into the
/// rootfs once runc has frozen it, not when runc refused.
#[test]
fn pause_copies_the_volumes_after_runc_froze_the_container() {
    let host = Fake::new();
    assert_eq!(pause(&host, "--root /run/r pause c1").unwrap(), 0);
    assert_eq!(host.calls(), ["runc --root /run/r pause c1", "save c1", "refresh c1"]);
    let host = Fake { runc_code: 1, ..Fake::new() };
    assert_eq!(pause(&host, "pause c1").unwrap(), 1);
    assert_eq!(host.names(), ["runc"]);
}

#[test]
fn delete_refused_by_runc_keeps_everything() {
    let bundle = Bundle::new("docker-run.json");
    create(&Fake::new(), &bundle).unwrap();
    let host = Fake { state: state_of(&bundle), runc_code: 1, ..Fake::new() };
    assert_eq!(delete(&host, "delete c1").unwrap(), 1);
    assert_eq!(host.names(), ["state", "runc"]);
    assert!(bundle.has_original());
}

#[test]
fn delete_of_a_container_runc_does_not_know_still_cleans_up() {
    // Docker's second `delete --force` after `delete`, or a create that died half-way.
    let host = Fake { state: None, runc_code: 1, ..Fake::new() };
    assert_eq!(delete(&host, "delete --force c1").unwrap(), 1);
    assert_eq!(
        host.calls(),
        [
            "state c1",
            "runc delete --force c1",
            "unregister c1",
            "save c1",
            "unshift c1",
            "schedule-reclaim c1"
        ]
    );
}

fn kill(host: &Fake, line: &str) -> Vec<String> {
    let inv = cli::parse(line.split(' ')).unwrap();
    let Command::Kill(args) = &inv.command else { panic!() };
    lifecycle::kill_args(host, &inv, args)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// A bundle whose process is systemd (by name: the fixture's rootfs does not exist here).
fn systemd_bundle() -> Bundle {
    let bundle = Bundle::new("docker-run.json");
    let mut config: Value = serde_json::from_str(&bundle.original).unwrap();
    config["process"]["args"] = serde_json::json!(["/lib/systemd/systemd", "--log-level=info"]);
    std::fs::write(bundle.path().join("config.json"), config.to_string()).unwrap();
    bundle
}

#[test]
fn a_systemd_container_gets_run_tmpfs_env_and_its_init_recorded() {
    let bundle = systemd_bundle();
    create(&Fake::new(), &bundle).unwrap();
    let config = bundle.config_json();
    assert_eq!(config["annotations"]["io.sysvisor.init"], "systemd");
    let mounts = config["mounts"].as_array().unwrap();
    let run = mounts.iter().find(|m| m["destination"] == "/run").unwrap();
    assert_eq!(run["type"], "tmpfs");
    assert!(mounts.iter().any(|m| m["destination"] == "/run/lock"));
    let env = config["process"]["env"].as_array().unwrap();
    assert!(env.contains(&serde_json::json!("container=sysvisor")), "{env:?}");
    // Writable cgroups and, on this hybrid host, the unified hierarchy.
    let cgroup = mounts.iter().find(|m| m["destination"] == "/sys/fs/cgroup").unwrap();
    assert!(!cgroup["options"].as_array().unwrap().contains(&serde_json::json!("ro")));
    assert!(mounts.iter().any(|m| m["destination"] == "/sys/fs/cgroup/unified"));
}

#[test]
fn a_failed_delegation_removes_the_created_container() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake { delegate_fails: true, ..Fake::new() };
    let err = create(&host, &bundle).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot delegate the cgroups of container c1 to its root: chown /sys/fs/cgroup/memory/docker/c1: read-only file system"
    );
    let calls = host.calls();
    assert_eq!(
        calls[calls.len() - 4..],
        [
            format!("delegate 4242 {}", IDS.uid_base),
            "runc --root /run/r delete --force c1".into(),
            "unregister c1".into(),
            "unshift c1".into()
        ]
    );
    assert!(bundle.untouched());
}

#[test]
fn views_that_cannot_be_locked_remove_the_created_container() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake { lock_fails: true, ..Fake::new() };
    let err = create(&host, &bundle).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container c1 not started: the views of container c1 could not be locked, so it must \
         not run: this kernel cannot lock the views"
    );
    let calls = host.calls();
    assert_eq!(
        calls[calls.len() - 4..],
        [
            "locked c1 4242".to_string(),
            "runc --root /run/r delete --force c1".into(),
            "unregister c1".into(),
            "unshift c1".into()
        ]
    );
    assert!(bundle.untouched());
}

#[test]
fn sigterm_to_systemd_becomes_sigrtmin_plus_3() {
    let bundle = systemd_bundle();
    create(&Fake::new(), &bundle).unwrap();
    // runc state reports the annotations of the running config.
    let annotations = serde_json::from_value(bundle.config_json()["annotations"].clone()).unwrap();
    let state = state_of(&bundle).map(|s| RuncState { annotations: Some(annotations), ..s });
    let host = Fake { state, ..Fake::new() };
    let rtmin3 = (libc::SIGRTMIN() + 3).to_string();
    assert_eq!(rtmin3, "37");
    assert_eq!(kill(&host, "--root /r kill c1 15"), ["--root", "/r", "kill", "c1", "37"]);
    assert_eq!(kill(&host, "kill c1 SIGTERM"), ["kill", "c1", "37"]);
    assert_eq!(kill(&host, "kill c1"), ["kill", "c1", "37"]);
    assert_eq!(kill(&host, "kill c1 9"), ["kill", "c1", "9"]);
    assert_eq!(kill(&host, "kill --all c1 15"), ["kill", "--all", "c1", "15"]);
}

#[test]
fn sigterm_to_anything_else_stays() {
    let bundle = Bundle::new("docker-init.json"); // /sbin/docker-init
    create(&Fake::new(), &bundle).unwrap();
    let annotations = serde_json::from_value(bundle.config_json()["annotations"].clone()).unwrap();
    let state = state_of(&bundle).map(|s| RuncState { annotations: Some(annotations), ..s });
    let host = Fake { state, ..Fake::new() };
    assert_eq!(kill(&host, "kill c1 15"), ["kill", "c1", "15"]);
    let host = Fake { state: None, ..Fake::new() };
    assert_eq!(kill(&host, "kill c1 15"), ["kill", "c1", "15"]);
}

fn run(host: &Fake, bundle: &Bundle, flags: &str) -> Result<i32, LifecycleError> {
    let line = format!("--root /run/r run {flags} --bundle {} c1", bundle.path().display());
    let inv = cli::parse(line.split(' ').filter(|s| !s.is_empty())).unwrap();
    let Command::Run(args) = &inv.command else { panic!() };
    lifecycle::run(host, &inv, args)
}

#[test]
fn run_in_the_foreground_cleans_up_after() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake::new();
    assert_eq!(run(&host, &bundle, "").unwrap(), 0);
    let calls = host.calls();
    let runc = calls.iter().find(|c| c.starts_with("runc")).unwrap();
    assert_eq!(*runc, format!("runc --root /run/r run --bundle {} c1", bundle.path().display()));
    let names = host.names();
    assert_eq!(&names[names.len() - 3..], ["runc", "unregister", "unshift"]);
    assert!(bundle.untouched());
}

#[test]
fn run_registers_through_a_create_runtime_hook_and_detached_stays() {
    let bundle = Bundle::new("docker-run.json");
    let host = Fake::new();
    assert_eq!(run(&host, &bundle, "-d").unwrap(), 0);
    let names = host.names();
    assert_eq!(names.last().unwrap(), "runc");
    let config = bundle.config_json();
    let hooks = config["hooks"]["createRuntime"].as_array().unwrap();
    assert_eq!(
        hooks[0],
        serde_json::json!({
            "path": "/usr/bin/sysvisor-runc",
            "args": ["sysvisor-runc", lifecycle::HOOK_COMMAND],
            "env": ["SYSVISOR_FS_SOCKET=/run/sysvisor/fs.sock"],
        })
    );
    // Docker's own hooks stay.
    assert_eq!(config["hooks"]["prestart"][0]["args"][0], "libnetwork-setkey");
    // A plain create has no such hook.
    let bundle = Bundle::new("docker-run.json");
    create(&Fake::new(), &bundle).unwrap();
    assert!(bundle.config_json()["hooks"].get("createRuntime").is_none());
}

#[test]
fn create_and_run_mount_the_dynamic_trees_through_a_create_container_hook() {
    for detach in [false, true] {
        let bundle = Bundle::new("docker-run.json");
        let host = Fake::new();
        if detach {
            assert_eq!(run(&host, &bundle, "-d").unwrap(), 0);
        } else {
            create(&host, &bundle).unwrap();
        }
        let config = bundle.config_json();
        // Given the shifted rootfs the container really gets.
        assert_eq!(
            config["hooks"]["createContainer"],
            serde_json::json!([{
                "path": "/usr/bin/sysvisor-runc",
                "args": ["sysvisor-runc", sysvisor_runc::mirrors::HOOK_COMMAND, "/run/sysvisor/rootfs/c1/root"],
            }])
        );
        assert_eq!(config["root"]["path"], "/run/sysvisor/rootfs/c1/root");
        assert!(config["annotations"][sysvisor_runc::mirrors::ANNOTATION].is_string());
    }
}

#[test]
fn the_hook_registers_from_the_state_runc_passes() {
    let host = Fake::new();
    let state = serde_json::json!({
        "ociVersion": "1.0.2", "id": "c9", "status": "creating", "pid": 31337, "bundle": "/b",
        "annotations": {"io.sysvisor.uid-base": "231072", "io.sysvisor.gid-base": "296608", "io.sysvisor.id-count": "65536"},
    });
    lifecycle::hook_register(&host, state.to_string().as_bytes()).unwrap();
    let c = host.registered.borrow()[0].clone();
    assert_eq!(
        (c.id.as_str(), c.init_pid, c.uid_base, c.gid_base, c.id_count),
        ("c9", 31337, 231072, 296608, 65536)
    );
    // ...and gives the container's cgroups to its root, before its first instruction.
    assert_eq!(host.calls().last().unwrap(), "delegate 31337 231072");

    let err = lifecycle::hook_register(&host, br#"{"id":"c9","pid":1}"#).unwrap_err();
    assert!(err.to_string().contains("io.sysvisor.uid-base"), "{err}");
    let err = lifecycle::hook_register(&host, b"nonsense").unwrap_err();
    assert!(
        err.to_string().starts_with("sysvisor-runc registration hook: unreadable hook state"),
        "{err}"
    );
}

#[test]
fn exec_process_keeps_what_the_container_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("process.json");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker-exec-process.json");
    let mut process: Value = serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    // `docker exec` in a `--cap-drop ALL --cap-add KILL` container.
    for set in ["bounding", "effective", "permitted"] {
        process["capabilities"][set] = serde_json::json!(["CAP_KILL"]);
    }
    std::fs::write(&path, process.to_string()).unwrap();
    lifecycle::rewrite_exec_process(&path, &["CAP_SYS_ADMIN".into(), "CAP_KILL".into()]).unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
        assert_eq!(v["capabilities"][set], serde_json::json!(["CAP_KILL"]), "{set}");
    }
}

#[test]
fn exec_process_gets_the_system_containers_capabilities() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("process.json");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/docker-exec-process.json");
    std::fs::copy(src, &path).unwrap();
    lifecycle::rewrite_exec_process(&path, &["CAP_SYS_ADMIN".into(), "CAP_NET_ADMIN".into()])
        .unwrap();
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
        let mut caps: Vec<_> = v["capabilities"][set]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        caps.sort();
        assert_eq!(caps, ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"], "{set}");
    }
    assert_eq!(v["args"][0], "id");
    assert_eq!(v["env"][1], "HOSTNAME=f0ea2b760366");
}
