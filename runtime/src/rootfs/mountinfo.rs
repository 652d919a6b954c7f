//! /proc/self/mountinfo and overlay mount options.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub id: u32,
    pub parent: u32,
    /// Root of the mount within its filesystem.
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options, still escaped (`\054` for a comma and so on).
    pub super_opts: String,
}

pub fn read() -> std::io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read("/proc/self/mountinfo")?))
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|b| *b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let num = |f: &[u8]| std::str::from_utf8(f).ok()?.parse::<u32>().ok();
    Some(Mount {
        id: num(fields[0])?,
        parent: num(fields[1])?,
        root: path(fields[3]),
        mount_point: path(fields[4]),
        fstype: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
        source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
        super_opts: String::from_utf8_lossy(fields[sep + 3]).into_owned(),
    })
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

/// Undoes the kernel's `\ooo` octal escapes.
pub fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\'
            && i + 4 <= s.len()
            && s[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(s[i + 1] - b'0') * 64
                + u32::from(s[i + 2] - b'0') * 8
                + u32::from(s[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The mount on top of the stack at `path` (the one no other mount at `path` sits on).
pub fn top_at<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let here: Vec<&Mount> = mounts.iter().filter(|m| m.mount_point == path).collect();
    here.iter().rev().find(|m| !here.iter().any(|o| o.parent == m.id)).copied()
}

/// The mount holding `path` (longest mount point prefix, top of its stack): its fstype
/// for messages.
pub fn fstype_of(mounts: &[Mount], path: &Path) -> String {
    let best = mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .map(|m| m.mount_point.as_os_str().len())
        .max();
    best.and_then(|len| {
        let mp: Vec<&Mount> = mounts
            .iter()
            .filter(|m| path.starts_with(&m.mount_point) && m.mount_point.as_os_str().len() == len)
            .collect();
        top_at(mounts, &mp.first()?.mount_point).map(|m| m.fstype.clone())
    })
    .unwrap_or_else(|| "unknown".into())
}

/// The layer options of an overlay mount.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Overlay {
    /// Top-most first, as given to the kernel (possibly relative paths).
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
}

/// Parses overlay super options: `lowerdir=a:b` (colons inside a path come escaped),
/// `lowerdir+=a` (one per layer), `upperdir=`, `workdir=`. Data-only layers (`::` or
/// `datadir+=`) are refused.
pub fn overlay(super_opts: &str) -> Result<Overlay, String> {
    let mut out = Overlay::default();
    for opt in super_opts.split(',') {
        let (key, value) = opt.split_once('=').unwrap_or((opt, ""));
        match key {
            "lowerdir" => {
                if value.contains("::") {
                    return Err(
                        "data-only lower layers (lowerdir with \"::\") are not supported".into()
                    );
                }
                out.lowers.extend(value.split(':').filter(|s| !s.is_empty()).map(unescape_path));
            }
            "lowerdir+" => out.lowers.push(unescape_path(value)),
            "datadir+" => return Err("data-only lower layers (datadir+) are not supported".into()),
            "upperdir" => out.upper = Some(unescape_path(value)),
            "workdir" => out.work = Some(unescape_path(value)),
            _ => {}
        }
    }
    if out.lowers.is_empty() {
        return Err("no lowerdir in the overlay's options".into());
    }
    Ok(out)
}

fn unescape_path(s: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(s.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
42 27 254:0 /var/lib/docker /var/lib/docker rw,relatime shared:1 - ext4 /dev/vda rw
90 42 0:50 / /var/lib/docker/overlay2/abc/merged rw,relatime shared:2 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/AAA:/var/lib/docker/overlay2/l/BBB,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work,index=off
91 90 0:51 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir+=/run/sysvisor/rootfs/abc/lower/0,lowerdir+=/run/a\\040b\\072c,upperdir=/var/lib/sysvisor/rootfs/abc/upper,workdir=/var/lib/sysvisor/rootfs/abc/work
92 27 0:52 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn parses_and_finds_top() {
        let m = parse(SAMPLE.as_bytes());
        assert_eq!(m.len(), 5);
        assert_eq!(m[4].mount_point, Path::new("/mnt/with space"));
        let top = top_at(&m, Path::new("/var/lib/docker/overlay2/abc/merged")).unwrap();
        assert_eq!(top.id, 91);
        assert_eq!(fstype_of(&m, Path::new("/var/lib/docker/x")), "ext4");
        assert_eq!(fstype_of(&m, Path::new("/mnt/with space/y")), "tmpfs");
        let o = overlay(&top.super_opts).unwrap();
        assert_eq!(
            o.lowers,
            vec![PathBuf::from("/run/sysvisor/rootfs/abc/lower/0"), PathBuf::from("/run/a b:c")]
        );
        let docker = overlay(&m[2].super_opts).unwrap();
        assert_eq!(docker.lowers.len(), 2);
        assert_eq!(docker.upper.unwrap(), Path::new("/var/lib/docker/overlay2/abc/diff"));
    }

    #[test]
    fn refuses_data_only_layers() {
        assert!(overlay("lowerdir=/a::/b,upperdir=/u").is_err());
        assert!(overlay("lowerdir+=/a,datadir+=/b").is_err());
        assert!(overlay("upperdir=/u").is_err());
    }
}
