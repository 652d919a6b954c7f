//! `/proc/swaps` shaped by the caller's swap limit.
//!
//! The kernel's `swap_show` prints a header, "Filename\t\t\t\tType\t\tSize\t\tUsed\t\t
//! Priority\n", then per swap area the path padded to 40 columns, the type ("partition"
//! or "file\t"), and "\t%lu\t%s%lu\t%s%d\n" (size, used in kB, each followed by an extra
//! tab when below 10000000, then the priority).
//!
//! When the host has swap and the caller's cgroup has a swap limit, the view is the
//! host's header and one line in that layout (as LXCFS does): file "none", type
//! "virtual", size = min(limit, host total) kB, used = the cgroup's swap usage (at most
//! size), priority 0; a limit of 0 leaves the header alone. A host without swap, a caller
//! without memory controller or swap limit (even with a memory limit), reads the host's
//! bytes.

use super::{Request, ViewError};
use crate::cgroup::MemoryInfo;
use crate::host::fmt::push_u64;

const PATH: &str = "/proc/swaps";

/// The host's /proc/swaps: its text, header line and total swap size and use, in kB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSwaps<'a> {
    pub text: &'a str,
    /// The first line, with its newline.
    pub header: &'a str,
    pub total_kb: u64,
    pub used_kb: u64,
    pub areas: usize,
}

/// Parses the host file: a "Filename..." header, then "name type size used prio" lines.
pub fn parse(text: &str) -> Result<HostSwaps<'_>, ViewError> {
    let bad = |reason: String| ViewError::Malformed { path: PATH.into(), reason };
    let mut lines = text.split_inclusive('\n');
    let header = lines.next().unwrap_or("");
    if !header.starts_with("Filename") {
        return Err(bad("no Filename header".into()));
    }
    let (mut total_kb, mut used_kb, mut areas) = (0u64, 0u64, 0);
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: [Option<&str>; 6] = {
            let mut it = line.split_ascii_whitespace();
            std::array::from_fn(|_| it.next())
        };
        let [Some(_), Some(_), Some(size), Some(used), Some(prio), None] = f else {
            return Err(bad(format!("bad line {:?}", line.trim_end())));
        };
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad(format!("bad number {s:?}")));
        prio.parse::<i64>().map_err(|_| bad(format!("bad priority {prio:?}")))?;
        total_kb = total_kb.saturating_add(num(size)?);
        used_kb = used_kb.saturating_add(num(used)?);
        areas += 1;
    }
    Ok(HostSwaps { text, header, total_kb, used_kb, areas })
}

/// Renders the view for a cgroup with memory figures `mem`.
pub fn render(host: &HostSwaps<'_>, mem: Option<&MemoryInfo>) -> Vec<u8> {
    let limit = mem.and_then(|m| m.swap_limit.map(|l| (l, m.swap_usage)));
    let Some((limit, usage)) = limit.filter(|_| host.areas > 0 && host.total_kb > 0) else {
        return host.text.as_bytes().to_vec();
    };
    let size = (limit / 1024).min(host.total_kb);
    let used = (usage / 1024).min(size);
    let mut out = Vec::with_capacity(host.header.len() + 80);
    out.extend_from_slice(host.header.as_bytes());
    if size == 0 {
        return out;
    }
    // "%*s%s\t%lu\t%s%lu\t%s%d\n" with a 4-character name padded to 40 columns.
    out.extend_from_slice(b"none");
    out.resize(out.len() + 36, b' ');
    out.extend_from_slice(b"virtual\t\t");
    push_u64(&mut out, size);
    out.extend_from_slice(if size < 10_000_000 { b"\t\t" } else { b"\t" });
    push_u64(&mut out, used);
    out.extend_from_slice(if used < 10_000_000 { b"\t\t" } else { b"\t" });
    out.extend_from_slice(b"0\n");
    out
}

/// `/proc/swaps` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let text = req.host.read("swaps")?;
    let mem = req.cgroups.memory(&req.caller.cgroups)?;
    if mem.as_ref().and_then(|m| m.swap_limit).is_none() {
        return Ok(text.into_bytes());
    }
    let host = parse(&text)?;
    Ok(render(&host, mem.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM2: &str = include_str!("../../tests/fixtures/host/vm2/proc/swaps");
    const BIG4: &str = include_str!("../../tests/fixtures/host/big4/proc/swaps");
    const HEADER: &str = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";

    fn mem(swap_limit: Option<u64>, swap_usage: u64) -> MemoryInfo {
        MemoryInfo { limit: Some(1 << 30), swap_limit, swap_usage, ..Default::default() }
    }

    #[test]
    fn parses() {
        let h = parse(VM2).unwrap();
        assert_eq!((h.header, h.areas, h.total_kb), (HEADER, 0, 0));
        let h = parse(BIG4).unwrap();
        assert_eq!((h.areas, h.total_kb, h.used_kb), (2, 8388604 + 2097148, 1024));
    }

    #[test]
    fn passthrough() {
        let vm2 = parse(VM2).unwrap();
        let big4 = parse(BIG4).unwrap();
        assert_eq!(render(&vm2, Some(&mem(Some(1 << 30), 0))), VM2.as_bytes());
        assert_eq!(render(&big4, None), BIG4.as_bytes());
        assert_eq!(render(&big4, Some(&mem(None, 5 << 20))), BIG4.as_bytes());
    }

    #[test]
    fn virtual_line() {
        let h = parse(BIG4).unwrap();
        let out = String::from_utf8(render(&h, Some(&mem(Some(256 << 20), 3 << 20)))).unwrap();
        assert_eq!(out, format!("{HEADER}none{}virtual\t\t262144\t\t3072\t\t0\n", " ".repeat(36)));
        // The "none" line lines up like a kernel "file" line: 40 columns, then the type.
        let line = out.lines().nth(1).unwrap();
        assert_eq!(line.find("virtual"), Some(40));
        assert_eq!(BIG4.lines().nth(2).unwrap().find("file\t"), Some(40));
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            ["none", "virtual", "262144", "3072", "0"]
        );
        // Above the host's total: the host's total; used at most size; wide numbers.
        let out = String::from_utf8(render(&h, Some(&mem(Some(u64::MAX), u64::MAX)))).unwrap();
        assert_eq!(
            out,
            format!("{HEADER}none{}virtual\t\t10485752\t10485752\t0\n", " ".repeat(36))
        );
        // No swap allowed: header only.
        assert_eq!(render(&h, Some(&mem(Some(1023), 0))), HEADER.as_bytes());
    }

    #[test]
    fn garbage_is_malformed() {
        for bad in [
            "",
            "garbage\n",
            "Filename\n/dev/x partition 1 2\n",
            "Filename\n/dev/x partition a 2 -1\n",
            "Filename\n/dev/x partition 1 2 x\n",
            "Filename\n/a b c 1 2 3\n",
        ] {
            assert!(matches!(parse(bad), Err(ViewError::Malformed { .. })), "{bad:?}");
        }
        // A header without newline and blank lines are fine.
        assert_eq!(parse("Filename").unwrap().areas, 0);
        assert_eq!(parse("Filename\n\n/x file 5 1 -2\n").unwrap().total_kb, 5);
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::{TestEnv, MEMORY_STAT};
        let mem = [
            ("memory.current", "104857600\n"),
            ("memory.stat", MEMORY_STAT),
            ("memory.max", "268435456\n"),
        ];
        let env = TestEnv::new("big4", &mem);
        assert_eq!(env.run(generate).unwrap(), env.host_file("swaps"));
        let env = TestEnv::new(
            "big4",
            &[
                mem[0],
                mem[1],
                mem[2],
                ("memory.swap.current", "2097152\n"),
                ("memory.swap.max", "67108864\n"),
            ],
        );
        assert_eq!(
            env.run(generate).unwrap(),
            format!("{HEADER}none{}virtual\t\t65536\t\t2048\t\t0\n", " ".repeat(36))
        );
        // Host without swap: its bytes.
        let env = TestEnv::new(
            "vm2",
            &[
                mem[0],
                mem[1],
                mem[2],
                ("memory.swap.current", "0\n"),
                ("memory.swap.max", "67108864\n"),
            ],
        );
        assert_eq!(env.run(generate).unwrap(), env.host_file("swaps"));
    }
}
