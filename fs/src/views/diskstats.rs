//! `/proc/diskstats` with the I/O of the caller's cgroup.
//!
//! The kernel's `diskstats_show` prints per block device "%4d %7d %s " (major, minor,
//! name) and then its counters separated by single spaces: 11 of them before Linux 4.18,
//! 15 with the discard fields (4.18), 17 with the flush fields (5.5). The view keeps the
//! host's count on every line.
//!
//! For a caller in a non-root cgroup with I/O statistics (v1 `blkio.throttle.io_service*`,
//! v2 `io.stat`), each host device line whose (major, minor) has cgroup I/O becomes:
//! reads completed = read ios, sectors read = read bytes / 512, writes completed = write
//! ios, sectors written = write bytes / 512, discards completed = discard ios, sectors
//! discarded = discard bytes / 512, every other counter (merges, times, in flight,
//! flushes) 0. Devices the cgroup did no I/O on are left out. A caller in the root
//! cgroup, or without an io/blkio controller, reads the host's bytes.

use super::{Request, ViewError};
use crate::cgroup::{Controller, DeviceIo, IoStats};
use crate::host::fmt::{push_u64, push_u64_width};

const PATH: &str = "/proc/diskstats";

/// The fewest counters a diskstats line has (kernels before 4.18).
pub const MIN_FIELDS: usize = 11;

/// One host diskstats line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLine<'a> {
    pub major: u32,
    pub minor: u32,
    pub name: &'a str,
    /// How many counters follow the name (11, 15 or 17).
    pub fields: usize,
}

/// Parses one line (without its newline).
pub fn parse_line(line: &str) -> Result<DiskLine<'_>, ViewError> {
    let bad = |reason: &str| ViewError::Malformed {
        path: PATH.into(),
        reason: format!("{reason} in line {:?}", line.trim_end()),
    };
    let mut f = line.split_ascii_whitespace();
    let major = f.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad major"))?;
    let minor = f.next().and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad minor"))?;
    let name = f.next().ok_or_else(|| bad("no name"))?;
    let mut fields = 0;
    for v in f {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("non-numeric counter"));
        }
        fields += 1;
    }
    if fields < MIN_FIELDS {
        return Err(bad("too few counters"));
    }
    Ok(DiskLine { major, minor, name, fields })
}

/// Parses every non-empty line of the host file.
pub fn parse(text: &str) -> Result<Vec<DiskLine<'_>>, ViewError> {
    text.lines().filter(|l| !l.trim().is_empty()).map(parse_line).collect()
}

fn lookup(io: &IoStats, major: u32, minor: u32) -> Option<&DeviceIo> {
    let d = match io.devices.binary_search_by_key(&(major, minor), |d| (d.major, d.minor)) {
        Ok(i) => io.devices.get(i),
        // Not sorted after all: fall back to a scan.
        Err(_) => io.devices.iter().find(|d| (d.major, d.minor) == (major, minor)),
    }?;
    let any =
        d.read_ios | d.write_ios | d.discard_ios | d.read_bytes | d.write_bytes | d.discard_bytes;
    (any != 0).then_some(d)
}

/// Renders the view over the host file; `io` `None` gives the host's bytes.
pub fn render(host: &str, io: Option<&IoStats>) -> Result<Vec<u8>, ViewError> {
    let Some(io) = io else { return Ok(host.as_bytes().to_vec()) };
    let mut out = Vec::with_capacity(128 * io.devices.len().min(64));
    for line in host.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let d = parse_line(line)?;
        let Some(dev) = lookup(io, d.major, d.minor) else { continue };
        push_u64_width(&mut out, u64::from(d.major), 4);
        out.push(b' ');
        push_u64_width(&mut out, u64::from(d.minor), 7);
        out.push(b' ');
        out.extend_from_slice(d.name.as_bytes());
        for i in 0..d.fields {
            let v = match i {
                0 => dev.read_ios,
                2 => dev.read_bytes / 512,
                4 => dev.write_ios,
                6 => dev.write_bytes / 512,
                11 => dev.discard_ios,
                13 => dev.discard_bytes / 512,
                _ => 0,
            };
            out.push(b' ');
            push_u64(&mut out, v);
        }
        out.push(b'\n');
    }
    Ok(out)
}

/// `/proc/diskstats` for the caller.
pub fn generate(req: &Request<'_>) -> Result<Vec<u8>, ViewError> {
    let text = req.host.read("diskstats")?;
    let pc = &req.caller.cgroups;
    if req.cgroups.is_root_for(pc, Controller::Io) {
        return Ok(text.into_bytes());
    }
    match req.cgroups.io(pc)? {
        None => Ok(text.into_bytes()),
        Some(io) => render(&text, Some(&io)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VM2: &str = include_str!("../../tests/fixtures/host/vm2/proc/diskstats");
    const BIG4: &str = include_str!("../../tests/fixtures/host/big4/proc/diskstats");
    const OLD14: &str = include_str!("../../tests/fixtures/host/misc/diskstats.14");
    const OLD18: &str = include_str!("../../tests/fixtures/host/misc/diskstats.18");

    fn dev(major: u32, minor: u32, r: u64, w: u64) -> DeviceIo {
        DeviceIo {
            major,
            minor,
            read_ios: r,
            write_ios: w,
            discard_ios: 3,
            read_bytes: r * 4096,
            write_bytes: w * 8192,
            discard_bytes: 1 << 20,
        }
    }

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn parses_all_formats() {
        for (text, n) in [(VM2, 17), (BIG4, 17), (OLD14, 11), (OLD18, 15)] {
            let lines = parse(text).unwrap();
            assert!(!lines.is_empty());
            assert!(lines.iter().all(|l| l.fields == n), "{text}");
        }
        assert_eq!(
            parse(BIG4).unwrap()[1],
            DiskLine { major: 259, minor: 0, name: "nvme0n1", fields: 17 }
        );
    }

    #[test]
    fn passthrough() {
        for t in [VM2, BIG4, OLD14, OLD18] {
            assert_eq!(render(t, None).unwrap(), t.as_bytes());
        }
    }

    #[test]
    fn cgroup_io() {
        let zero = DeviceIo { major: 253, minor: 0, ..Default::default() };
        let io = IoStats { devices: vec![dev(8, 0, 10, 20), zero, dev(259, 0, 100, 7)] };
        assert_eq!(
            s(render(BIG4, Some(&io)).unwrap()),
            " 259       0 nvme0n1 100 0 800 0 7 0 112 0 0 0 0 3 0 2048 0 0 0\n\
             \u{20}  8       0 sda 10 0 80 0 20 0 320 0 0 0 0 3 0 2048 0 0 0\n"
        );
        // The host's field count is kept.
        assert_eq!(
            s(render(OLD14, Some(&io)).unwrap()),
            "   8       0 sda 10 0 80 0 20 0 320 0 0 0 0\n"
        );
        assert_eq!(
            s(render(OLD18, Some(&io)).unwrap()),
            "   8       0 sda 10 0 80 0 20 0 320 0 0 0 0 3 0 2048 0\n"
        );
        // No I/O at all: an empty file; unsorted device lists still match.
        assert_eq!(render(VM2, Some(&IoStats::default())).unwrap(), b"");
        let io = IoStats { devices: vec![dev(259, 0, 1, 1), dev(8, 0, 1, 1)] };
        assert_eq!(s(render(BIG4, Some(&io)).unwrap()).lines().count(), 2);
    }

    #[test]
    fn garbage_is_malformed() {
        let io = IoStats { devices: vec![dev(8, 0, 1, 1)] };
        for bad in [
            "garbage\n",
            "8 0\n",
            "x 0 sda 1 2 3 4 5 6 7 8 9 10 11\n",
            "8 0 sda 1 2 3\n",
            "8 0 sda 1 2 3 4 5 6 7 8 9 10 -11\n",
            "8 99999999999 sda 1 2 3 4 5 6 7 8 9 10 11\n",
        ] {
            assert!(matches!(parse(bad), Err(ViewError::Malformed { .. })), "{bad:?}");
            assert!(matches!(render(bad, Some(&io)), Err(ViewError::Malformed { .. })), "{bad:?}");
        }
        assert_eq!(render("\n\n", Some(&io)).unwrap(), b"");
        assert_eq!(render("garbage", None).unwrap(), b"garbage");
    }

    #[test]
    fn generate_end_to_end() {
        use crate::host::testenv::TestEnv;
        let io = "8:0 rbytes=40960 wbytes=163840 rios=10 wios=20 dbytes=0 dios=0\n\
                  259:0 rbytes=0 wbytes=0 rios=0 wios=0 dbytes=0 dios=0\n";
        let env = TestEnv::new("big4", &[("io.stat", io)]);
        assert_eq!(
            env.run(generate).unwrap(),
            "   8       0 sda 10 0 80 0 20 0 320 0 0 0 0 0 0 0 0 0 0\n"
        );
        let env = TestEnv::new("big4", &[]);
        assert_eq!(env.run(generate).unwrap(), BIG4);
        let env = TestEnv::with_path("big4", "/", &[("io.stat", io)]);
        assert_eq!(env.run(generate).unwrap(), BIG4);
    }
}
