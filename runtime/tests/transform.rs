//! The config rewrite on real Docker-generated configs (tests/fixtures/docker-*.json were
//! captured from dockerd 20.10 + containerd 1.6 through a runtime that copied the bundle's
//! config.json, then host paths were renamed to Docker's defaults; runc-spec.json is
//! `runc spec` 1.1.5).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction, Spec};
use serde_json::{json, Value};
use sysvisor_runc::cgroups::Layout;
use sysvisor_runc::nesting::NestingInputs;
use sysvisor_runc::transform::{
    self, to_system_container, validate, TransformError, TransformInputs, VIEWS,
};
use sysvisor_runc::{caps, mirrors};

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
        host_cpus: vec![0, 1],
        cpu_spread: 0,
        nesting: NestingInputs::default(),
    }
}

fn transformed(name: &str) -> Spec {
    to_system_container(fixture(name), &inputs()).unwrap()
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
    assert_eq!(
        v["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": UID_BASE, "size": 65536}])
    );
    assert_eq!(
        v["linux"]["gidMappings"],
        json!([{"containerID": 0, "hostID": GID_BASE, "size": 65536}])
    );
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
        TransformError::UserNamespacePresent
    );
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
    assert_eq!(targets, [PathBuf::from("/proc/sys")]);
    // The user's own mount below a tree wins (and so does one on it).
    v["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/proc/sys/kernel/ns_last_pid", "type": "bind", "source": "/x", "options": ["rbind"]
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
