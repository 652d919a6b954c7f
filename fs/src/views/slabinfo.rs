//! `/proc/slabinfo`: the caller's memory cgroup's slab caches, never the host's.
//!
//! The kernel's file starts with two header lines (`slabinfo - version: 2.1` and the
//! `# name <active_objs> ...` column line), then one line per cache. A cgroup v1 memory
//! cgroup has `memory.kmem.slabinfo` in the same layout (LXCFS 7 serves that file); since
//! Linux 5.9 it holds the header only, and cgroup v2 has no such file at all.
//!
//! - A caller in a memory cgroup below the root whose `memory.kmem.slabinfo` has the
//!   header reads that file as it is.
//! - Any other caller in a container (v2, no memory controller, an empty or missing file)
//!   reads the host's two header lines and no cache: the container has no caches of its
//!   own to show, and the host's are never shown (LXCFS shows the host's file then).
//! - A caller in the root cgroup (the host) reads the host's bytes.
//!
//! Like the kernel's, the file is readable by root only (0400): the container's root (the
//! transport makes it the owner for a container's callers; see `views::ROOT_ONLY`).

use super::{Request, ViewError};
use crate::cgroup::Controller;

const PATH: &str = "/proc/slabinfo";

/// The first line of every slabinfo the kernel prints (its version follows).
const VERSION_PREFIX: &str = "slabinfo - version: ";

/// The header of a slabinfo text: its first two lines (the version and the column line),
/// with their newlines.
pub fn header(text: &str) -> Result<&str, String> {
    if !text.starts_with(VERSION_PREFIX) {
        return Err(format!("no {VERSION_PREFIX:?} line"));
    }
    let first = text.find('\n').ok_or("no end of the version line")?;
    let rest = &text[first + 1..];
    if !rest.starts_with("# name") {
        return Err("no \"# name\" column line".into());
    }
    let second = rest.find('\n').ok_or("no end of the column line")?;
    Ok(&text[..first + 1 + second + 1])
}

/// The view: the cgroup's own file when it is a slabinfo, else the host's header alone.
pub fn render(host: &str, cgroup: Option<&str>) -> Result<Vec<u8>, String> {
    if let Some(own) = cgroup.filter(|own| header(own).is_ok()) {
        return Ok(own.as_bytes().to_vec());
    }
    Ok(header(host)?.as_bytes().to_vec())
}

/// `/proc/slabinfo` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let host = req.host.read("slabinfo")?;
    if req.cgroups.is_root(&req.caller.cgroups) {
        return Ok(host.into_bytes());
    }
    let own = req
        .cgroups
        .dir(&req.caller.cgroups, Controller::Memory)
        .filter(|_| !req.cgroups.is_root_for(&req.caller.cgroups, Controller::Memory))
        .and_then(|dir| std::fs::read_to_string(dir.join("memory.kmem.slabinfo")).ok());
    render(&host, own.as_deref())
        .map_err(|reason| ViewError::Malformed { path: PATH.into(), reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "slabinfo - version: 2.1\n\
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n\
btrfs_delayed_node      0      0    312   13    1 : tunables    0    0    0 : slabdata      0      0      0\n";

    #[test]
    fn the_host_caches_are_never_shown() {
        let out = String::from_utf8(render(HOST, None).unwrap()).unwrap();
        assert_eq!(out.lines().count(), 2);
        assert!(out.starts_with("slabinfo - version: 2.1\n# name "));
        assert!(!out.contains("btrfs"));
        // An empty cgroup file (Linux 5.9+ v1): the header alone as well.
        assert_eq!(render(HOST, Some("")).unwrap(), out.as_bytes());
    }

    #[test]
    fn the_cgroups_own_caches_are_shown() {
        let own = "slabinfo - version: 2.1\n# name x\ndentry 5 5 192 21 1 : tunables 0 0 0 : slabdata 1 1 0\n";
        assert_eq!(render(HOST, Some(own)).unwrap(), own.as_bytes());
    }

    #[test]
    fn a_malformed_host_file_is_an_error() {
        for bad in
            ["", "slabinfo - version: 2.1\n", "version\n# name\n", "slabinfo - version: 2.1\nx\n"]
        {
            assert!(render(bad, None).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::TestEnv;
        let env = TestEnv::new("vm2", &[]);
        let out = env.run(generate).unwrap();
        assert_eq!(out, header(&env.host_file("slabinfo")).unwrap());
        let env = TestEnv::with_path("vm2", "/", &[]);
        assert_eq!(env.run(generate).unwrap(), env.host_file("slabinfo"));
    }
}
