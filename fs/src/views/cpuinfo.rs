//! `/proc/cpuinfo` showing only the caller's visible CPUs.
//!
//! x86, arm64, powerpc and most other architectures print one block per online CPU,
//! starting with "processor\t: N" and ended by a blank line; some add blocks without a
//! processor line (powerpc's trailing "timebase/platform" block, arm32's "Hardware"),
//! which are kept as they are. For a caller that sees fewer CPUs than the host, only the
//! blocks of the visible host CPUs are kept, in order, renumbered from 0: on the block's
//! i-th visible CPU "processor" = i, and, where the host prints them (x86), "physical id"
//! = 0, "siblings" = "cpu cores" = the number of visible CPUs, "core id" = "apicid" =
//! "initial apicid" = i, so that tools counting sockets, cores and threads agree with
//! the CPU count. Each rewritten line keeps the host's label and tab layout; the other
//! lines are the host's. A host format without processor blocks (s390) and a caller
//! seeing every host CPU read the host's bytes.

use super::{Request, ViewError};
use crate::host::fmt::push_u64;

const PATH: &str = "/proc/cpuinfo";

/// One blank-line-separated block of the host file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Byte range in the host text, including the blank line(s) that end it.
    pub start: usize,
    pub end: usize,
    /// The value of its "processor" line, if it has one.
    pub processor: Option<u32>,
}

/// The host's /proc/cpuinfo split into blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCpuinfo<'a> {
    pub text: &'a str,
    pub blocks: Vec<Block>,
}

impl HostCpuinfo<'_> {
    /// Whether the file has per-CPU ("processor") blocks the view can filter.
    pub fn has_processor_blocks(&self) -> bool {
        self.blocks.iter().any(|b| b.processor.is_some())
    }
}

/// "key<ws>: value" -> (key without trailing whitespace, offset after ": ").
fn split_kv(line: &str) -> Option<(&str, usize)> {
    let colon = line.find(':')?;
    let mut value = colon + 1;
    while line.as_bytes().get(value) == Some(&b' ') {
        value += 1;
    }
    Some((line[..colon].trim_end(), value))
}

/// Splits the host file into blocks. A "processor" line whose value is not a CPU number
/// is [`ViewError::Malformed`]; a file without any is accepted (passed through).
pub fn parse(text: &str) -> Result<HostCpuinfo<'_>, ViewError> {
    let mut blocks = Vec::new();
    let mut cur: Option<Block> = None;
    // Whether `cur` has reached its ending blank line(s).
    let mut ended = false;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        if line.trim().is_empty() {
            match cur.as_mut() {
                Some(b) => {
                    b.end = pos;
                    ended = true;
                }
                // Blank lines before any content: a block of their own.
                None => blocks.push(Block { start, end: pos, processor: None }),
            }
            continue;
        }
        if ended {
            blocks.extend(cur.take());
            ended = false;
        }
        let b = cur.get_or_insert(Block { start, end: start, processor: None });
        b.end = pos;
        if let Some(("processor", v)) = split_kv(line) {
            let value = line[v..].trim();
            let n = value.parse::<u32>().map_err(|_| ViewError::Malformed {
                path: PATH.into(),
                reason: format!("processor {value:?} is not a CPU number"),
            })?;
            b.processor.get_or_insert(n);
        }
    }
    blocks.extend(cur);
    Ok(HostCpuinfo { text, blocks })
}

/// The value a rewritten line gets, for the block's position `i` among `n` visible CPUs.
fn rewrite(key: &str, i: usize, n: usize) -> Option<u64> {
    Some(match key {
        "processor" | "core id" | "apicid" | "initial apicid" => i as u64,
        "siblings" | "cpu cores" => n as u64,
        "physical id" => 0,
        _ => return None,
    })
}

/// Renders the view for the visible host CPUs (ascending).
pub fn render(host: &HostCpuinfo<'_>, visible: &[u32]) -> Vec<u8> {
    if !host.has_processor_blocks() {
        return host.text.as_bytes().to_vec();
    }
    let n = visible.len();
    let mut out = Vec::with_capacity(host.text.len().min(4096 * n.max(1)));
    for b in &host.blocks {
        let Some(text) = host.text.get(b.start..b.end) else { continue };
        let Some(cpu) = b.processor else {
            out.extend_from_slice(text.as_bytes());
            continue;
        };
        let Ok(i) = visible.binary_search(&cpu) else { continue };
        for line in text.split_inclusive('\n') {
            match split_kv(line).and_then(|(k, v)| Some((v, rewrite(k, i, n)?))) {
                Some((v, value)) => {
                    out.extend_from_slice(&line.as_bytes()[..v]);
                    push_u64(&mut out, value);
                    if line.ends_with('\n') {
                        out.push(b'\n');
                    }
                }
                None => out.extend_from_slice(line.as_bytes()),
            }
        }
    }
    out
}

/// `/proc/cpuinfo` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let text = req.host.read("cpuinfo")?;
    let online = req.host.online_cpus()?;
    let visible = req.cgroups.cpu_limits(&req.caller.cgroups)?.visible_cpus(&online);
    if visible.len() == online.len() {
        return Ok(text.into_bytes());
    }
    let host = parse(&text)?;
    Ok(render(&host, &visible))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM2: &str = include_str!("../../tests/fixtures/host/vm2/proc/cpuinfo");
    const BIG4: &str = include_str!("../../tests/fixtures/host/big4/proc/cpuinfo");
    const ARM64: &str = include_str!("../../tests/fixtures/host/misc/cpuinfo.arm64");
    const PPC64: &str = include_str!("../../tests/fixtures/host/misc/cpuinfo.ppc64");
    const S390: &str = include_str!("../../tests/fixtures/host/misc/cpuinfo.s390");

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    fn field<'a>(block: &'a str, key: &str) -> Vec<&'a str> {
        block.lines().filter(|l| split_kv(l).is_some_and(|(k, _)| k == key)).collect()
    }

    #[test]
    fn blocks() {
        let h = parse(BIG4).unwrap();
        assert_eq!(h.blocks.len(), 4);
        assert_eq!(
            h.blocks.iter().map(|b| b.processor).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2), Some(3)]
        );
        assert_eq!(h.blocks.last().unwrap().end, BIG4.len());
        let h = parse(PPC64).unwrap();
        assert_eq!(h.blocks.len(), 5);
        assert_eq!(h.blocks[4].processor, None);
        assert!(!parse(S390).unwrap().has_processor_blocks());
        assert_eq!(parse(VM2).unwrap().blocks.len(), 2);
    }

    #[test]
    fn all_visible_is_host() {
        for (t, n) in [(VM2, 2), (BIG4, 4), (ARM64, 4), (PPC64, 4)] {
            let visible: Vec<u32> = (0..n).collect();
            let out = s(render(&parse(t).unwrap(), &visible));
            if t == BIG4 {
                // Topology lines are rewritten (this host has SMT); nothing else.
                assert_eq!(out.lines().count(), t.lines().count());
            } else {
                assert_eq!(out, t);
            }
        }
    }

    #[test]
    fn x86_subset() {
        let out = s(render(&parse(BIG4).unwrap(), &[1, 3]));
        let blocks: Vec<&str> = out.split_inclusive("\n\n").collect();
        assert_eq!(blocks.len(), 2);
        assert!(out.ends_with("power management:\n\n"));
        assert_eq!(field(blocks[0], "processor"), ["processor\t: 0"]);
        assert_eq!(field(blocks[1], "processor"), ["processor\t: 1"]);
        assert_eq!(field(blocks[1], "physical id"), ["physical id\t: 0"]);
        assert_eq!(field(blocks[1], "siblings"), ["siblings\t: 2"]);
        assert_eq!(field(blocks[1], "cpu cores"), ["cpu cores\t: 2"]);
        assert_eq!(field(blocks[1], "core id"), ["core id\t\t: 1"]);
        assert_eq!(field(blocks[1], "apicid"), ["apicid\t\t: 1"]);
        assert_eq!(field(blocks[1], "initial apicid"), ["initial apicid\t: 1"]);
        // Everything else is the host block's, byte for byte.
        let host3 = BIG4.split_inclusive("\n\n").nth(3).unwrap();
        let keep = |b: &str| -> Vec<String> {
            b.lines()
                .filter(|l| split_kv(l).is_none_or(|(k, _)| rewrite(k, 0, 0).is_none()))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(keep(blocks[1]), keep(host3));
        // The real 2-CPU host, one CPU visible.
        let out = s(render(&parse(VM2).unwrap(), &[1]));
        assert_eq!(out.matches("processor\t: ").count(), 1);
        assert!(out.starts_with("processor\t: 0\nvendor_id\t: AuthenticAMD\n"));
        assert!(out.contains("\nsiblings\t: 1\n") && out.contains("\ncpu cores\t: 1\n"));
        assert!(out.contains("\ncore id\t\t: 0\n") && out.contains("\napicid\t\t: 0\n"));
        assert!(out.ends_with("power management:\n\n"));
    }

    #[test]
    fn other_architectures() {
        let out = s(render(&parse(ARM64).unwrap(), &[2]));
        assert_eq!(
            out,
            ARM64
                .split_inclusive("\n\n")
                .nth(2)
                .unwrap()
                .replace("processor\t: 2", "processor\t: 0")
        );
        let out = s(render(&parse(PPC64).unwrap(), &[0, 3]));
        assert_eq!(out.matches("processor").count(), 2);
        assert!(out.contains("processor\t: 1\ncpu\t\t: POWER9"));
        assert!(out.ends_with("MMU\t\t: Radix\n"));
        assert_eq!(render(&parse(S390).unwrap(), &[0]), S390.as_bytes());
    }

    #[test]
    fn garbage() {
        assert!(matches!(parse("processor\t: x\n"), Err(ViewError::Malformed { .. })));
        assert!(matches!(parse("processor: -1\n"), Err(ViewError::Malformed { .. })));
        for t in [
            "",
            "\n\n\n",
            "garbage",
            ":\n:\n\n:",
            "processor\t: 1",
            "\n\nprocessor : 0\n\n\nx\r\n\r\n",
        ] {
            let h = parse(t).unwrap();
            let _ = render(&h, &[0, 1]);
            let _ = render(&h, &[]);
        }
        let h = parse("\n\nprocessor : 0\nsiblings : 8\n\n\nx\n").unwrap();
        assert_eq!(s(render(&h, &[0])), "\n\nprocessor : 0\nsiblings : 1\n\n\nx\n");
        assert_eq!(s(render(&h, &[5])), "\n\nx\n");
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::TestEnv;
        let env = TestEnv::new("big4", &[]);
        assert_eq!(env.run(generate).unwrap(), BIG4);
        let env = TestEnv::new("big4", &[("cpuset.cpus.effective", "1,3\n")]);
        assert_eq!(env.run(generate).unwrap(), s(render(&parse(BIG4).unwrap(), &[1, 3])));
        let env = TestEnv::new("vm2", &[("cpu.max", "100000 100000\n")]);
        let out = env.run(generate).unwrap();
        assert_eq!(out.matches("processor").count(), 1);
    }
}
