//! The config rewrite on real Docker-generated configs (tests/fixtures/docker-*.json were
//! captured from dockerd 20.10 + containerd 1.6 through a runtime that copied the bundle's
//! config.json, then host paths were renamed to Docker's defaults; runc-spec.json is
//! `runc spec` 1.1.5).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction, Spec};
use serde_json::{json, Value};
use sysvisor_runc::cgroups::Layout;
use sysvisor_runc::idrange::DiskRoot;
use sysvisor_runc::nesting::NestingInputs;
use sysvisor_runc::transform::{
    self, to_system_container, validate, TransformError, TransformInputs, VIEWS,
};
use sysvisor_runc::{caps, mirrors, seccomp};

const UID_BASE: u32 = 231072;
const GID_BASE: u32 = 296608;
const MOUNTPOINT: &str = "/var/lib/sysvisor-fs";

fn fixture_text(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> Spec {
    serde_json::from_str(&fixture_text(name)).unwrap()
}

/// The bounding set of these machines: everything but CAP_SYS_RESOURCE.
fn host_caps() -> Vec<String> {
    caps::ALL.iter().filter(|c| **c != "CAP_SYS_RESOURCE").map(|c| c.to_string()).collect()
}

fn inputs() -> TransformInputs {
    TransformInputs {
        uid_base: UID_BASE,
        gid_base: GID_BASE,
        id_count: 65536,
        fs_mountpoint: PathBuf::from(MOUNTPOINT),
        own_views: None,
        host_capabilities: host_caps(),
        seccomp_listener: None,
        seccomp_origin: seccomp::Origin::EngineDefault,
        host_cpus: vec![0, 1],
        host_slabinfo: true,
        cpu_spread: 0,
        nesting: NestingInputs::default(),
    }
}

fn transformed(name: &str) -> Spec {
    to_system_container(fixture(name), &inputs()).unwrap()
}

/// The uid and gid mappings of a transformed spec are the container's range, alone.
#[track_caller]
fn assert_maps_to_the_range(v: &Value) {
    assert_eq!(
        v["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": UID_BASE, "size": 65536}])
    );
    assert_eq!(
        v["linux"]["gidMappings"],
        json!([{"containerID": 0, "hostID": GID_BASE, "size": 65536}])
    );
}

fn json_of(spec: &Spec) -> Value {
    serde_json::to_value(spec).unwrap()
}

fn cap_set(v: &Value) -> HashSet<String> {
    v.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

#[test]
fn fixtures_survive_a_round_trip_through_oci_spec() {
    // Saving the config must not lose or invent anything Docker wrote.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.contains("process") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut original: Value = serde_json::from_str(&text).unwrap();
        let mut back = serde_json::to_value(serde_json::from_str::<Spec>(&text).unwrap()).unwrap();
        sort_capabilities(&mut original);
        sort_capabilities(&mut back);
        assert_eq!(original, back, "{name}");
        seen += 1;
    }
    assert!(seen >= 8);
}

/// Capabilities are sets in oci-spec: their order is not kept.
fn sort_capabilities(v: &mut Value) {
    if let Some(caps) = v.pointer_mut("/process/capabilities").and_then(Value::as_object_mut) {
        for set in caps.values_mut() {
            set.as_array_mut().unwrap().sort_by_key(|c| c.to_string());
        }
    }
}

#[test]
fn docker_run_gets_a_user_namespace_with_its_range_and_a_cgroup_namespace() {
    let out = transformed("docker-run.json");
    let linux = out.linux().as_ref().unwrap();
    let namespaces = linux.namespaces().as_ref().unwrap();
    let types: Vec<_> = namespaces.iter().map(|ns| ns.typ()).collect();
    for typ in [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Cgroup,
    ] {
        assert_eq!(types.iter().filter(|t| **t == typ).count(), 1, "{typ:?} in {types:?}");
    }
    assert!(namespaces.iter().all(|ns| ns.path().is_none()));

    let v = json_of(&out);
    assert_maps_to_the_range(&v);
    assert_eq!(v["annotations"]["io.sysvisor.uid-base"], UID_BASE.to_string());
    assert_eq!(v["annotations"]["io.sysvisor.gid-base"], GID_BASE.to_string());
    assert_eq!(v["annotations"]["io.sysvisor.id-count"], "65536");
    assert!(transform::is_transformed(&out));
}

#[test]
fn docker_run_gets_the_views_after_proc_and_sys_and_keeps_its_own_mounts() {
    let original = fixture("docker-run.json");
    let out = transformed("docker-run.json");
    let before = json_of(&original)["mounts"].as_array().unwrap().clone();
    let after = json_of(&out)["mounts"].as_array().unwrap().clone();
    assert_eq!(after.len(), before.len() + VIEWS.len());

    // Docker's mounts, bind mounts of /etc/hosts & co and the volume included, unchanged
    // and in their order, but the cgroups, now read-write (see `nesting` below).
    let views: Vec<_> = VIEWS.iter().map(|v| format!("/{v}")).collect();
    let kept: Vec<_> = after
        .iter()
        .filter(|m| !views.contains(&m["destination"].as_str().unwrap().to_string()))
        .cloned()
        .collect();
    let mut expected = before.clone();
    for m in expected.iter_mut().filter(|m| m["destination"] == "/sys/fs/cgroup") {
        assert_eq!(m["options"], json!(["ro", "nosuid", "noexec", "nodev"]));
        m["options"] = json!(["rw", "nosuid", "noexec", "nodev"]);
    }
    assert_eq!(kept, expected);
    for dest in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname", "/data"] {
        assert!(kept.iter().any(|m| m["destination"] == dest), "{dest}");
    }

    // The views: read-only binds from the daemon's mountpoint, right after /sys (the last
    // of /proc and /sys), so before /sys/fs/cgroup and the bind mounts.
    let dests: Vec<&str> = after.iter().map(|m| m["destination"].as_str().unwrap()).collect();
    let sys = dests.iter().position(|d| *d == "/sys").unwrap();
    let proc = dests.iter().position(|d| *d == "/proc").unwrap();
    for (i, view) in VIEWS.iter().enumerate() {
        let m = &after[sys + 1 + i];
        assert_eq!(
            *m,
            json!({
                "destination": format!("/{view}"),
                "type": "bind",
                "source": format!("{MOUNTPOINT}/{view}"),
                "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
            })
        );
        assert!(sys + 1 + i > proc);
    }
    assert_eq!(dests[sys + 1 + VIEWS.len()], "/sys/fs/cgroup");
}

#[test]
fn root_gets_every_capability_the_host_has() {
    let v = json_of(&transformed("docker-run.json"));
    let expected: HashSet<String> = host_caps().into_iter().collect();
    assert_eq!(expected.len(), 40);
    for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
        assert_eq!(cap_set(&v["process"]["capabilities"][set]), expected, "{set}");
    }
    assert!(!cap_set(&v["process"]["capabilities"]["bounding"]).contains("CAP_SYS_RESOURCE"));
}

#[test]
fn a_non_root_user_keeps_no_capabilities_across_exec() {
    let out = transformed("docker-user1000.json");
    let caps = out.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 40);
    assert_eq!(caps.permitted().as_ref().unwrap().len(), 40);
    assert!(caps.inheritable().as_ref().unwrap().is_empty());
    assert!(caps.ambient().as_ref().unwrap().is_empty());
}

#[test]
fn privileged_asks_only_for_what_the_host_has() {
    // Docker's --privileged asks for CAP_SYS_RESOURCE, which these hosts lack: runc would
    // fail with "unable to apply caps".
    let original = json_of(&fixture("docker-priv.json"));
    assert!(cap_set(&original["process"]["capabilities"]["bounding"]).contains("CAP_SYS_RESOURCE"));
    assert!(original["linux"].get("seccomp").is_none());
    let out = transformed("docker-priv.json");
    let caps = out.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    assert!(!caps.bounding().as_ref().unwrap().contains(&Capability::SysResource));
    assert!(caps.bounding().as_ref().unwrap().contains(&Capability::SysAdmin));
    // It gets our profile too: module loading stays blocked for a privileged system container.
    assert!(out.linux().as_ref().unwrap().seccomp().is_some());
}

#[test]
fn docker_seccomp_profile_is_replaced() {
    let original = json_of(&fixture("docker-run.json"));
    assert_eq!(original["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    let out = transformed("docker-run.json");
    let seccomp = out.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActAllow);
    assert_eq!(*seccomp, sysvisor_runc::seccomp::system_container_profile());
    let blocked = &seccomp.syscalls().as_ref().unwrap()[0];
    assert_eq!(blocked.action(), LinuxSeccompAction::ScmpActErrno);
    for name in ["kexec_load", "init_module", "finit_module", "delete_module"] {
        assert!(blocked.names().iter().any(|n| n == name), "{name}");
    }
    for name in ["mount", "unshare", "setns", "pivot_root", "umount2"] {
        assert!(!blocked.names().iter().any(|n| n == name), "{name}");
    }
}

#[test]
fn everything_else_is_left_as_docker_wrote_it() {
    let mut before = json_of(&fixture("docker-run.json"));
    let mut after = json_of(&transformed("docker-run.json"));
    // --cpus 1 on a 2-CPU host: the transform pins one CPU (see pin_cpus_for_quota).
    assert_eq!(after["linux"]["resources"]["cpu"]["cpus"], "0");
    after["linux"]["resources"]["cpu"].as_object_mut().unwrap().remove("cpus");
    for v in [&mut before, &mut after] {
        let o = v.as_object_mut().unwrap();
        o.remove("mounts");
        o.remove("annotations");
        o["process"].as_object_mut().unwrap().remove("capabilities");
        let linux = o["linux"].as_object_mut().unwrap();
        for key in ["namespaces", "uidMappings", "gidMappings", "seccomp"] {
            linux.remove(key);
        }
        // The sysctls go to the mirror hook (see mirrors_are_planned...), and /proc/sys is
        // sysvisor-fs's, read-write.
        linux.remove("sysctl");
        linux["readonlyPaths"].as_array_mut().unwrap().retain(|p| p != "/proc/sys");
    }
    // hooks (libnetwork-setkey), sysctls, resources (-m 256m --cpus 1), devices, masked and
    // read-only paths, cgroupsPath, root, hostname, env, user, oomScoreAdj, ...
    assert_eq!(before, after);
    assert_eq!(after["linux"]["resources"]["memory"]["limit"], 268435456);
    assert_eq!(after["hooks"]["prestart"][0]["args"][0], "libnetwork-setkey");
}

#[test]
fn dockers_ping_group_range_is_cut_to_the_mapped_groups() {
    let before = json_of(&fixture("docker-run.json"));
    assert_eq!(before["linux"]["sysctl"]["net.ipv4.ping_group_range"], "0 2147483647");
    // (Written by the mirror hook: see mirrors_are_planned...)
    let after = transformed("docker-run.json");
    let plan: mirrors::Plan =
        serde_json::from_str(&after.annotations().as_ref().unwrap()[mirrors::ANNOTATION]).unwrap();
    assert_eq!(plan.sysctl["net.ipv4.ping_group_range"], "0 65535");
    assert_eq!(plan.sysctl["net.ipv4.ip_unprivileged_port_start"], "0");
    // Without /proc mirrored (no procfs), they stay runc's.
    let mut v = json_of(&fixture("docker-run.json"));
    v["mounts"].as_array_mut().unwrap().retain(|m| m["destination"] != "/proc");
    let out = json_of(&to_system_container(serde_json::from_value(v).unwrap(), &inputs()).unwrap());
    assert_eq!(out["linux"]["sysctl"]["net.ipv4.ping_group_range"], "0 65535");
}

#[test]
fn host_and_joined_uts_and_ipc_namespaces_are_refused() {
    // Docker leaves the entry out for --uts=host and --ipc=host, and gives a path for
    // --ipc=container:X: either way the container's root would write the hostname or IPC
    // limits of a namespace that is not its own.
    let without = |typ| {
        let mut spec = fixture("docker-run.json");
        let linux = spec.linux_mut().as_mut().unwrap();
        linux.namespaces_mut().as_mut().unwrap().retain(|ns| ns.typ() != typ);
        spec
    };
    let joining = |typ, path: &str| {
        let mut spec = fixture("docker-run.json");
        let linux = spec.linux_mut().as_mut().unwrap();
        for ns in linux.namespaces_mut().as_mut().unwrap().iter_mut() {
            if ns.typ() == typ {
                ns.set_path(Some(path.into()));
            }
        }
        spec
    };
    let err = validate(&without(LinuxNamespaceType::Uts)).unwrap_err();
    assert_eq!(err, TransformError::HostUts);
    assert!(err.to_string().contains("--uts=host is not supported"), "{err}");
    let err = to_system_container(without(LinuxNamespaceType::Ipc), &inputs()).unwrap_err();
    assert_eq!(err, TransformError::HostIpc);
    assert!(err.to_string().contains("--ipc=host is not supported"), "{err}");
    let err = validate(&joining(LinuxNamespaceType::Uts, "/proc/1/ns/uts")).unwrap_err();
    assert_eq!(err, TransformError::SharedUts("/proc/1/ns/uts".into()));
    let err = validate(&joining(LinuxNamespaceType::Ipc, "/proc/42/ns/ipc")).unwrap_err();
    assert_eq!(err, TransformError::SharedIpc("/proc/42/ns/ipc".into()));
    assert!(err.to_string().contains("--ipc=container:"), "{err}");
    // The container's own namespaces pass.
    validate(&fixture("docker-run.json")).unwrap();
}

#[test]
fn host_and_shared_namespaces_are_refused() {
    let err = to_system_container(fixture("docker-hostpid.json"), &inputs()).unwrap_err();
    assert_eq!(err, TransformError::HostPid);
    assert_eq!(
        err.to_string(),
        "system containers need their own pid namespace; --pid=host is not supported"
    );

    // Docker gives --network=host as a path to the host's network namespace.
    let err = validate(&fixture("docker-hostnet.json")).unwrap_err();
    assert_eq!(err, TransformError::SharedNetwork("/var/run/docker/netns/default".into()));
    assert!(err.to_string().contains("--network=host"), "{err}");

    let err = validate(&fixture("docker-sharenet.json")).unwrap_err();
    assert!(
        matches!(err, TransformError::SharedNetwork(ref p) if p.starts_with("/proc/")),
        "{err}"
    );

    let mut spec = fixture("docker-run.json");
    let linux = spec.linux_mut().as_mut().unwrap();
    linux.namespaces_mut().as_mut().unwrap().retain(|ns| ns.typ() != LinuxNamespaceType::Network);
    let err = validate(&spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "system containers need their own network namespace; --network=host is not supported"
    );
}

#[test]
fn existing_user_namespaces_are_refused_so_a_rewrite_is_never_rewritten() {
    let once = transformed("docker-run.json");
    assert_eq!(
        to_system_container(once, &inputs()).unwrap_err(),
        TransformError::AlreadySystemContainer
    );
}

/// docker-run.json as Docker writes it under `"userns-remap": "default"`: a new user
/// namespace and one mapping of container id 0 to the `dockremap` ranges.
fn userns_remap_spec(uid_maps: Value, gid_maps: Value, user_ns: Value) -> Spec {
    let mut v: Value = serde_json::from_str(&fixture_text("docker-run.json")).unwrap();
    v["linux"]["namespaces"].as_array_mut().unwrap().push(user_ns);
    v["linux"]["uidMappings"] = uid_maps;
    v["linux"]["gidMappings"] = gid_maps;
    serde_json::from_value(v).unwrap()
}

#[test]
fn userns_remap_specs_get_their_own_range_and_say_who_owns_the_layers() {
    let spec = userns_remap_spec(
        json!([{"containerID": 0, "hostID": 165536, "size": 65536}]),
        json!([{"containerID": 0, "hostID": 165537, "size": 65536}]),
        json!({"type": "user"}),
    );
    assert_eq!(transform::disk_root(&spec).unwrap(), DiskRoot { uid: 165536, gid: 165537 });
    let v = json_of(&to_system_container(spec, &inputs()).unwrap());
    // Docker's shared range is replaced by the container's exclusive one.
    assert_maps_to_the_range(&v);
    let users = v["linux"]["namespaces"].as_array().unwrap().iter().filter(|n| n["type"] == "user");
    assert_eq!(users.count(), 1);
    assert_eq!(transform::disk_root(&fixture("docker-run.json")).unwrap(), DiskRoot::HOST);
}

#[test]
fn user_namespaces_and_mappings_of_other_shapes_are_refused() {
    let one = json!([{"containerID": 0, "hostID": 165536, "size": 65536}]);
    let joined = userns_remap_spec(
        one.clone(),
        one.clone(),
        json!({"type": "user", "path": "/proc/1/ns/user"}),
    );
    assert_eq!(
        validate(&joined).unwrap_err(),
        TransformError::UserNamespacePresent("/proc/1/ns/user".into())
    );
    let two = json!([{"containerID": 0, "hostID": 165536, "size": 1000},
                     {"containerID": 1000, "hostID": 1000, "size": 1}]);
    let split = userns_remap_spec(two, one.clone(), json!({"type": "user"}));
    let err = validate(&split).unwrap_err();
    assert!(matches!(err, TransformError::UnsupportedIdMappings(_)), "{err}");
    assert!(err.to_string().contains("0 165536 1000, 1000 1000 1"), "{err}");
    let shifted = json!([{"containerID": 1, "hostID": 165536, "size": 65536}]);
    let err =
        validate(&userns_remap_spec(one.clone(), shifted, json!({"type": "user"}))).unwrap_err();
    assert!(matches!(err, TransformError::UnsupportedIdMappings(_)), "{err}");
    let mut no_ns: Value = serde_json::from_str(&fixture_text("docker-run.json")).unwrap();
    no_ns["linux"]["uidMappings"] = one.clone();
    no_ns["linux"]["gidMappings"] = one;
    let err = validate(&serde_json::from_value(no_ns).unwrap()).unwrap_err();
    assert!(matches!(err, TransformError::UnsupportedIdMappings(_)), "{err}");
}

#[test]
fn other_docker_flavours_transform() {
    for name in [
        "docker-init.json",
        "docker-tty.json",
        "docker-user1000.json",
        "docker-priv.json",
        "runc-spec.json",
    ] {
        let out =
            to_system_container(fixture(name), &inputs()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dests: Vec<_> =
            out.mounts().as_ref().unwrap().iter().map(|m| m.destination().clone()).collect();
        for view in VIEWS {
            assert!(dests.contains(&Path::new("/").join(view)), "{name}: {view}");
        }
        // Serializes to what runc reads.
        let back: Spec = serde_json::from_value(json_of(&out)).unwrap();
        assert_eq!(back, out, "{name}");
    }
}

#[test]
fn a_containers_own_views_are_bound_when_the_daemon_serves_them() {
    let own = format!("{MOUNTPOINT}-containers/abc");
    let inputs = TransformInputs { own_views: Some(PathBuf::from(&own)), ..inputs() };
    let out = to_system_container(fixture("docker-run.json"), &inputs).unwrap();
    let after = json_of(&out)["mounts"].as_array().unwrap().clone();
    for view in VIEWS {
        let m = after.iter().find(|m| m["destination"] == format!("/{view}")).unwrap();
        assert_eq!(m["source"], format!("{own}/{view}"), "{view}");
    }
    // The dynamic trees stay on the per-caller mount.
    let plan = &json_of(&out)["annotations"]["io.sysvisor.mirrors"];
    let plan = plan.as_str().unwrap_or_default();
    assert!(!plan.contains("-containers"), "{plan}");
}

#[test]
fn masked_paths_that_would_hide_a_view_are_dropped_and_others_kept() {
    let mut spec = fixture("docker-run.json");
    let linux = spec.linux_mut().as_mut().unwrap();
    let masked = linux.masked_paths_mut().as_mut().unwrap();
    masked.extend([
        "/proc/meminfo".to_string(),
        "/sys/devices/system/cpu".to_string(),
        "/proc/uptimes".to_string(),
    ]);
    let mut readonly_before = linux.readonly_paths().clone();
    if let Some(paths) = readonly_before.as_mut() {
        paths.retain(|p| p != "/proc/sys");
    }
    let out = to_system_container(spec, &inputs()).unwrap();
    let linux = out.linux().as_ref().unwrap();
    let masked = linux.masked_paths().as_ref().unwrap();
    assert!(!masked.iter().any(|p| p == "/proc/meminfo" || p == "/sys/devices/system/cpu"));
    for keep in ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware", "/proc/uptimes"]
    {
        assert!(masked.iter().any(|p| p == keep), "{keep}");
    }
    assert_eq!(*linux.readonly_paths(), readonly_before);
}

#[test]
fn a_users_own_mount_of_a_view_path_wins() {
    // LXCFS users: -v /var/lib/lxcfs/proc/meminfo:/proc/meminfo:ro
    let mut v = json_of(&fixture("docker-run.json"));
    v["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/proc/meminfo", "type": "bind", "source": "/var/lib/lxcfs/proc/meminfo", "options": ["rbind", "ro"]
    }));
    let out = json_of(&to_system_container(serde_json::from_value(v).unwrap(), &inputs()).unwrap());
    let meminfo: Vec<_> = out["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] == "/proc/meminfo")
        .collect();
    assert_eq!(meminfo.len(), 1);
    assert_eq!(meminfo[0]["source"], "/var/lib/lxcfs/proc/meminfo");
    assert!(out["mounts"].as_array().unwrap().iter().any(|m| m["destination"] == "/proc/cpuinfo"));
}

#[test]
fn views_need_the_filesystem_they_cover() {
    let mut v = json_of(&fixture("docker-run.json"));
    v["mounts"].as_array_mut().unwrap().retain(|m| m["destination"] != "/sys");
    let out = to_system_container(serde_json::from_value(v).unwrap(), &inputs()).unwrap();
    let dests: Vec<_> = out
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    assert!(dests.contains(&"/proc/stat".to_string()));
    assert!(!dests.contains(&"/sys/devices/system/cpu/online".to_string()));
}

#[test]
fn the_range_must_be_sane() {
    let mut bad = inputs();
    bad.uid_base = 0;
    assert_eq!(
        to_system_container(fixture("docker-run.json"), &bad).unwrap_err(),
        TransformError::RootRange { kind: "uid" }
    );
}

#[test]
fn a_host_without_capabilities_gives_none() {
    let mut none = inputs();
    none.host_capabilities.clear();
    let out = to_system_container(fixture("docker-run.json"), &none).unwrap();
    let caps = out.process().as_ref().unwrap().capabilities().as_ref().unwrap();
    assert!(caps.bounding().as_ref().unwrap().is_empty());
}

/// The planned mounts of sysvisor-fs's dynamic trees, from the annotation.
fn mirror_plan(spec: &Spec) -> Vec<mirrors::MirrorMount> {
    match spec.annotations().as_ref().and_then(|a| a.get(mirrors::ANNOTATION)) {
        Some(json) => serde_json::from_str::<mirrors::Plan>(json).unwrap().mounts,
        None => Vec::new(),
    }
}

#[test]
fn mirrors_are_planned_and_proc_sys_leaves_the_read_only_paths() {
    let before = fixture("docker-run.json");
    let readonly = before.linux().as_ref().unwrap().readonly_paths().clone().unwrap();
    assert!(readonly.iter().any(|p| p == "/proc/sys"), "Docker makes /proc/sys read-only");
    let out = transformed("docker-run.json");
    let plan = mirror_plan(&out);
    let expect = |path: &str, writable| mirrors::MirrorMount {
        source: Path::new(MOUNTPOINT).join(path),
        target: Path::new("/").join(path),
        writable,
    };
    assert_eq!(
        plan,
        [
            expect("proc/sys", true),
            expect("proc/pressure", false),
            expect("sys/kernel", false),
            expect("sys/devices/virtual/dmi/id", false),
            expect("sys/module/nf_conntrack/parameters", true),
        ]
    );
    // /proc/sys is no longer remounted read-only by runc (it would make ours read-only);
    // every other read-only path stays.
    let after = out.linux().as_ref().unwrap().readonly_paths().clone().unwrap();
    let expected: Vec<String> = readonly.into_iter().filter(|p| p != "/proc/sys").collect();
    assert_eq!(after, expected);
    // The sysctls go to the hook (runc would write them through our tree before the
    // container is registered), Docker's ping_group_range cut to the mapped groups.
    assert!(out.linux().as_ref().unwrap().sysctl().is_none());
    let annotation = &out.annotations().as_ref().unwrap()[mirrors::ANNOTATION];
    let sysctl = serde_json::from_str::<mirrors::Plan>(annotation).unwrap().sysctl;
    assert_eq!(sysctl["net.ipv4.ping_group_range"], "0 65535");
    assert_eq!(sysctl["net.ipv4.ip_unprivileged_port_start"], "0");
    // They are not OCI mounts: runc refuses mounts inside /proc.
    let dests: Vec<_> =
        out.mounts().as_ref().unwrap().iter().map(|m| m.destination().clone()).collect();
    assert!(!dests.contains(&PathBuf::from("/proc/sys")));
    assert!(!dests.contains(&PathBuf::from("/sys/kernel")));
}

#[test]
fn mirrors_follow_the_containers_proc_and_sys_and_give_way_to_the_users_mounts() {
    // No sysfs at /sys: only /proc/sys.
    let mut v = json_of(&fixture("docker-run.json"));
    v["mounts"].as_array_mut().unwrap().retain(|m| m["destination"] != "/sys");
    let out = to_system_container(serde_json::from_value(v.clone()).unwrap(), &inputs()).unwrap();
    let targets: Vec<PathBuf> = mirror_plan(&out).into_iter().map(|m| m.target).collect();
    assert_eq!(targets, [PathBuf::from("/proc/sys"), PathBuf::from("/proc/pressure")]);
    // The user's own mount below a tree wins (and so does one on it).
    v["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/proc/sys/kernel/ns_last_pid", "type": "bind", "source": "/x", "options": ["rbind"]
    }));
    let out = to_system_container(serde_json::from_value(v.clone()).unwrap(), &inputs()).unwrap();
    let targets: Vec<PathBuf> = mirror_plan(&out).into_iter().map(|m| m.target).collect();
    assert_eq!(targets, [PathBuf::from("/proc/pressure")]);
    v["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/proc/pressure", "type": "bind", "source": "/y", "options": ["rbind"]
    }));
    let out = to_system_container(serde_json::from_value(v).unwrap(), &inputs()).unwrap();
    assert!(mirror_plan(&out).is_empty());
    assert!(!out.annotations().as_ref().unwrap().contains_key(mirrors::ANNOTATION));
    // Masks that would hide a tree go; read-only parents stay.
    let mut spec = fixture("docker-run.json");
    let linux = spec.linux_mut().as_mut().unwrap();
    linux.masked_paths_mut().as_mut().unwrap().push("/sys/kernel".into());
    linux.readonly_paths_mut().as_mut().unwrap().push("/proc".into());
    let out = to_system_container(spec, &inputs()).unwrap();
    let linux = out.linux().as_ref().unwrap();
    assert!(!linux.masked_paths().as_ref().unwrap().iter().any(|p| p == "/sys/kernel"));
    assert!(linux.readonly_paths().as_ref().unwrap().iter().any(|p| p == "/proc"));
}

#[test]
fn the_mirror_hook_is_added_only_with_a_plan() {
    let mut out = transformed("docker-run.json");
    mirrors::add_hook(&mut out, Path::new("/usr/bin/sysvisor-runc"), Path::new("/r/root"));
    let v = json_of(&out);
    assert_eq!(
        v["hooks"]["createContainer"],
        json!([{"path": "/usr/bin/sysvisor-runc", "args": ["sysvisor-runc", mirrors::HOOK_COMMAND, "/r/root"]}])
    );
    // Docker's own hooks stay.
    assert_eq!(v["hooks"]["prestart"][0]["args"][0], "libnetwork-setkey");
    let mut plain = fixture("docker-run.json");
    mirrors::add_hook(&mut plain, Path::new("/usr/bin/sysvisor-runc"), Path::new("/r/root"));
    assert!(json_of(&plain)["hooks"].get("createContainer").is_none());
}

#[test]
fn nesting_adds_volumes_the_unified_hierarchy_and_systemds_needs() {
    let mut inputs = inputs();
    inputs.nesting = NestingInputs {
        volumes_dir: Some(PathBuf::from("/var/lib/sysvisor/volumes/c1")),
        cgroup_layout: Layout::Hybrid,
        systemd: true,
    };
    let out = to_system_container(fixture("docker-run.json"), &inputs).unwrap();
    let v = json_of(&out);
    let mounts = v["mounts"].as_array().unwrap();
    let dests: Vec<&str> = mounts.iter().map(|m| m["destination"].as_str().unwrap()).collect();
    let at =
        |d: &str| dests.iter().position(|x| *x == d).unwrap_or_else(|| panic!("{d}: {dests:?}"));
    assert_eq!(at("/sys/fs/cgroup/unified"), at("/sys/fs/cgroup") + 1);
    assert_eq!(mounts[at("/sys/fs/cgroup/unified")]["type"], "cgroup2");
    for (name, dest) in [
        ("docker", "/var/lib/docker"),
        ("containerd", "/var/lib/containerd"),
        ("kubelet", "/var/lib/kubelet"),
    ] {
        assert_eq!(
            mounts[at(dest)],
            json!({"destination": dest, "type": "bind",
                   "source": format!("/var/lib/sysvisor/volumes/c1/{name}"), "options": ["rbind", "rw"]})
        );
    }
    assert_eq!(mounts[at("/run")]["type"], "tmpfs");
    assert_eq!(mounts[at("/run/lock")]["type"], "tmpfs");
    assert!(v["process"]["env"].as_array().unwrap().contains(&json!("container=sysvisor")));
    assert_eq!(v["annotations"]["io.sysvisor.init"], "systemd");

    // A v2 host: its cgroup2 mount at /sys/fs/cgroup is all there is; no volumes without a
    // directory; not systemd: nothing of it.
    inputs.nesting = NestingInputs { cgroup_layout: Layout::Unified, ..NestingInputs::default() };
    let v = json_of(&to_system_container(fixture("docker-run.json"), &inputs).unwrap());
    let dests: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    for absent in ["/sys/fs/cgroup/unified", "/var/lib/docker", "/run"] {
        assert!(!dests.contains(&absent), "{absent}: {dests:?}");
    }
    assert!(v["annotations"].get("io.sysvisor.init").is_none());
}

// ---- what the user asked for: capabilities --------------------------------------------

/// docker-run.json with its capability sets replaced by `caps` (what Docker writes for
/// `--cap-drop`/`--cap-add`: the same list in bounding, effective and permitted).
fn with_caps(caps: &[&str]) -> Spec {
    let mut v = json_of(&fixture("docker-run.json"));
    for set in ["bounding", "effective", "permitted"] {
        v["process"]["capabilities"][set] = json!(caps);
    }
    serde_json::from_value(v).unwrap()
}

fn granted(spec: Spec) -> Value {
    json_of(&to_system_container(spec, &inputs()).unwrap())["process"]["capabilities"].clone()
}

#[test]
fn cap_drop_all_gives_no_capability() {
    let caps = granted(with_caps(&[]));
    for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
        assert_eq!(caps[set], json!([]), "{set}");
    }
    // What Docker 20.10 really writes for --cap-drop ALL: empty sets are left out.
    let mut v = json_of(&fixture("docker-run.json"));
    v["process"]["capabilities"] = json!({});
    let text = v.to_string();
    let caps =
        granted(sysvisor_runc::spec::parse(Path::new("config.json"), text.as_bytes()).unwrap());
    for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
        assert_eq!(caps[set], json!([]), "{set}");
    }
}

#[test]
fn cap_drop_one_removes_just_that_one() {
    let kept: Vec<&str> =
        caps::DOCKER_DEFAULT.iter().copied().filter(|c| *c != "CAP_NET_RAW").collect();
    let caps = granted(with_caps(&kept));
    for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
        let set_caps = cap_set(&caps[set]);
        assert_eq!(set_caps.len(), 39, "{set}: the host's 40 but NET_RAW");
        assert!(!set_caps.contains("CAP_NET_RAW"), "{set}");
        assert!(set_caps.contains("CAP_SYS_ADMIN"), "{set}: a system container still mounts");
    }
}

#[test]
fn cap_drop_all_with_cap_add_gives_exactly_the_added() {
    let caps = granted(with_caps(&["CAP_NET_ADMIN", "CAP_KILL"]));
    for set in ["bounding", "effective", "permitted", "inheritable", "ambient"] {
        assert_eq!(cap_set(&caps[set]), HashSet::from(["CAP_KILL".into(), "CAP_NET_ADMIN".into()]));
    }
    // A capability the host lacks is left out rather than failing runc.
    let caps = granted(with_caps(&["CAP_SYS_RESOURCE", "CAP_KILL"]));
    assert_eq!(cap_set(&caps["bounding"]), HashSet::from(["CAP_KILL".into()]));
}

#[test]
fn cap_add_keeps_every_capability() {
    let mut wanted = caps::DOCKER_DEFAULT.to_vec();
    wanted.push("CAP_SYS_PTRACE");
    assert_eq!(cap_set(&granted(with_caps(&wanted))["effective"]).len(), 40);
}

#[test]
fn a_non_root_user_gets_the_dropped_set_without_inheritance() {
    let mut v = json_of(&fixture("docker-user1000.json"));
    for set in ["bounding", "effective", "permitted"] {
        v["process"]["capabilities"][set] = json!(["CAP_CHOWN"]);
    }
    let caps = granted(serde_json::from_value(v).unwrap());
    assert_eq!(caps["permitted"], json!(["CAP_CHOWN"]));
    assert_eq!(caps["ambient"], json!([]));
}

// ---- what the user asked for: seccomp -------------------------------------------------

fn with_profile(profile: Value) -> Spec {
    let mut v = json_of(&fixture("docker-run.json"));
    v["linux"]["seccomp"] = profile;
    serde_json::from_value(v).unwrap()
}

fn user_inputs() -> TransformInputs {
    TransformInputs {
        seccomp_origin: seccomp::Origin::User,
        seccomp_listener: Some("/run/sysvisor/seccomp.sock".into()),
        ..inputs()
    }
}

/// The rules of a transformed profile naming `name`, as (action, has args).
fn rules_for(profile: &Value, name: &str) -> Vec<(String, bool)> {
    profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
        .map(|r| (r["action"].as_str().unwrap().to_string(), r.get("args").is_some()))
        .collect()
}

#[test]
fn a_users_deny_list_profile_is_merged_not_replaced() {
    let user = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["kexec_load", "chmod"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["umount2"], "action": "SCMP_ACT_ERRNO"}
        ]
    });
    let out = to_system_container(with_profile(user), &user_inputs()).unwrap();
    let p = json_of(&out)["linux"]["seccomp"].clone();
    assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(p["listenerPath"], "/run/sysvisor/seccomp.sock");
    // The user's rules stay.
    assert_eq!(rules_for(&p, "mkdir"), [("SCMP_ACT_ERRNO".to_string(), false)]);
    assert_eq!(rules_for(&p, "chmod"), [("SCMP_ACT_ALLOW".to_string(), false)]);
    // The deny list wins over the user's allow.
    assert_eq!(rules_for(&p, "kexec_load"), [("SCMP_ACT_ERRNO".to_string(), false)]);
    // mount goes to the trap; umount2, which the user refuses, stays refused.
    assert_eq!(rules_for(&p, "mount"), [("SCMP_ACT_NOTIFY".to_string(), true)]);
    assert_eq!(rules_for(&p, "move_mount"), [("SCMP_ACT_NOTIFY".to_string(), false)]);
    assert_eq!(rules_for(&p, "umount2"), [("SCMP_ACT_ERRNO".to_string(), false)]);
    // sysinfo, allowed by the default: answered by the daemon.
    assert_eq!(rules_for(&p, "sysinfo"), [("SCMP_ACT_NOTIFY".to_string(), false)]);
}

#[test]
fn a_users_allow_list_profile_keeps_its_default_and_traps_what_it_allows() {
    let user = json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["read", "write", "mount", "keyctl"], "action": "SCMP_ACT_ALLOW"}
        ]
    });
    let out = to_system_container(with_profile(user), &user_inputs()).unwrap();
    let p = json_of(&out)["linux"]["seccomp"].clone();
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(p["architectures"], json!(["SCMP_ARCH_X86_64"]));
    assert_eq!(rules_for(&p, "read"), [("SCMP_ACT_ALLOW".to_string(), false)]);
    // mount is allowed by the user: trapped, for every flag (the default refuses the rest).
    assert_eq!(rules_for(&p, "mount"), [("SCMP_ACT_NOTIFY".to_string(), false)]);
    // Not allowed by the user: refused by its default, no trap.
    assert!(rules_for(&p, "umount2").is_empty());
    assert!(rules_for(&p, "sysinfo").is_empty());
    // keyctl: the deny list's ENOSYS, not the user's allow.
    let keyctl: Vec<&Value> = p["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == "keyctl"))
        .collect();
    assert_eq!(keyctl.len(), 1);
    assert_eq!(keyctl[0]["errnoRet"], libc::ENOSYS);
}

#[test]
fn a_profile_that_cannot_be_merged_is_refused_with_a_clear_error() {
    // Metadata meant for the user's own listener does not go to sysvisor-fs.
    let metadata = json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "user's"});
    let out = to_system_container(with_profile(metadata), &user_inputs()).unwrap();
    let p = json_of(&out)["linux"]["seccomp"].clone();
    assert_eq!(p["listenerPath"], "/run/sysvisor/seccomp.sock");
    assert!(p.get("listenerMetadata").is_none(), "{p}");

    let own_listener = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/other.sock",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
    });
    let err = to_system_container(with_profile(own_listener), &user_inputs()).unwrap_err();
    assert!(matches!(err, TransformError::Seccomp(_)), "{err}");
    assert!(err.to_string().contains("/run/other.sock"), "{err}");
    let conditional = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ERRNO",
                      "args": [{"index": 3, "value": 1, "op": "SCMP_CMP_EQ"}]}]
    });
    let err = to_system_container(with_profile(conditional), &user_inputs()).unwrap_err();
    assert!(err.to_string().contains("argument conditions on mount"), "{err}");
}

#[test]
fn dockers_default_profile_and_no_profile_get_the_system_profile() {
    let listener = Path::new("/run/sysvisor/seccomp.sock");
    let default =
        TransformInputs { seccomp_origin: seccomp::Origin::EngineDefault, ..user_inputs() };
    let out = to_system_container(fixture("docker-run.json"), &default).unwrap();
    assert_eq!(
        out.linux().as_ref().unwrap().seccomp().as_ref(),
        Some(&seccomp::profile(Some(listener)))
    );
    // `--security-opt seccomp=unconfined` (no profile): the system profile too.
    let mut v = json_of(&fixture("docker-run.json"));
    v["linux"].as_object_mut().unwrap().remove("seccomp");
    let out = to_system_container(serde_json::from_value(v).unwrap(), &user_inputs()).unwrap();
    assert_eq!(
        out.linux().as_ref().unwrap().seccomp().as_ref(),
        Some(&seccomp::profile(Some(listener)))
    );
}

#[test]
fn the_slabinfo_view_only_where_the_host_kernel_has_the_file() {
    let dests = |host_slabinfo: bool| -> Vec<String> {
        let inputs = TransformInputs { host_slabinfo, ..inputs() };
        let out = to_system_container(fixture("docker-run.json"), &inputs).unwrap();
        out.mounts()
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.destination().display().to_string())
            .collect()
    };
    assert!(dests(true).contains(&"/proc/slabinfo".to_string()));
    let without = dests(false);
    assert!(!without.contains(&"/proc/slabinfo".to_string()), "{without:?}");
    assert!(without.contains(&"/proc/meminfo".to_string()));
}
