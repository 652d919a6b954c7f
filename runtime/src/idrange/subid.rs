//! /etc/subuid and /etc/subgid: reading the pool, adding the install entry.
//!
//! The parsing is pure ([`parse`], [`slices_in`], [`install_base`]) so that the fuzz
//! targets in `fuzz/` can reach it; only [`slices`] and [`ensure_subid_entries`] touch files.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::Path;

use super::{IdRange, IdRangeError, RANGE_SIZE, SUBID_USER};

/// Lowest base the install picks (the customary start of subordinate ids).
const MIN_BASE: u64 = 100_000;
/// Ids are u32 and `(u32)-1` is invalid: slices must end at or below this.
const ID_LIMIT: u64 = u32::MAX as u64;

/// One `owner:start:count` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub owner: String,
    pub start: u64,
    pub count: u64,
}

impl Entry {
    /// One past the last id (saturating: a huge count cannot overflow).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.count)
    }
}

/// Every line of a subid file: `Ok` for a well-formed entry, `Err(reason)` otherwise.
/// Blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Vec<(usize, &str, Result<Entry, String>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| (i + 1, l, parse_line(l.trim())))
        .collect()
}

fn parse_line(line: &str) -> Result<Entry, String> {
    let mut parts = line.split(':');
    let (Some(owner), Some(start), Some(count), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("expected owner:start:count".into());
    };
    if owner.is_empty() {
        return Err("empty owner".into());
    }
    let start: u64 = start.parse().map_err(|_| format!("bad start {start:?}"))?;
    let count: u64 = count.parse().map_err(|_| format!("bad count {count:?}"))?;
    Ok(Entry { owner: owner.to_string(), start, count })
}

fn read_optional(path: &Path) -> Result<String, IdRangeError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(IdRangeError::io(format!("reading {}", path.display()), e)),
    }
}

/// The 65536-aligned slice bases of the `sysvisor` entries of `file`, in file order.
pub(crate) fn slices(file: &Path) -> Result<Vec<u32>, IdRangeError> {
    slices_in(&read_optional(file)?, file)
}

/// The 65536-aligned slice bases of the `sysvisor` entries of `text` (the contents of
/// `file`, named in errors), in file order, each once.
pub fn slices_in(text: &str, file: &Path) -> Result<Vec<u32>, IdRangeError> {
    let mut found = false;
    let mut seen = BTreeSet::new();
    let mut out: Vec<u32> = Vec::new();
    for (line_no, line, entry) in parse(text) {
        let owner = line.split(':').next().unwrap_or("").trim();
        if owner != SUBID_USER {
            continue;
        }
        let entry = entry.map_err(|reason| IdRangeError::BadEntry {
            file: file.to_path_buf(),
            line_no,
            line: line.to_string(),
            reason,
        })?;
        found = true;
        let size = u64::from(RANGE_SIZE);
        // Bases stop below ID_LIMIT, so only starts below it can give any (and rounding
        // them up cannot overflow).
        let end = entry.end().min(ID_LIMIT);
        let mut base = entry.start.min(ID_LIMIT).div_ceil(size) * size;
        while base + size <= end {
            let b = base as u32;
            if seen.insert(b) {
                out.push(b);
            }
            base += size;
        }
    }
    if !found {
        return Err(IdRangeError::MissingEntry { file: file.to_path_buf() });
    }
    Ok(out)
}

/// Slot `i` = (`uids[i]`, `gids[i]`).
pub(crate) struct Pool {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Pool {
    pub fn new(uids: Vec<u32>, gids: Vec<u32>) -> Pool {
        Pool { uids, gids }
    }

    pub fn len(&self) -> usize {
        self.uids.len().min(self.gids.len())
    }

    /// The lowest slot whose uid and gid slices meet no recorded range.
    pub fn first_free(&self, st: &super::state::State) -> Option<IdRange> {
        (0..self.len())
            .map(|i| IdRange { uid_base: self.uids[i], gid_base: self.gids[i], count: RANGE_SIZE })
            .find(|cand| st.ranges.values().all(|rec| !rec.range().overlaps(cand)))
    }
}

/// Install step: adds `sysvisor:BASE:COUNT` to each of `subuid` and `subgid` that has no
/// `sysvisor` entry yet (creating a missing file). BASE is 65536-aligned, at least 100000,
/// and after the end of every entry of both files, so the pool overlaps no other user's
/// subordinate ids and is the same in both files when both are added. Each file is replaced
/// atomically, keeping its mode and owner. Returns whether a file changed.
pub fn ensure_subid_entries(
    subuid: &Path,
    subgid: &Path,
    count: u32,
) -> Result<bool, IdRangeError> {
    if count < RANGE_SIZE {
        return Err(IdRangeError::InvalidPoolSize(count.into()));
    }
    let files = [subuid, subgid];
    let texts = [read_optional(subuid)?, read_optional(subgid)?];
    let missing: Vec<usize> = (0..texts.len()).filter(|&i| !has_entry(&texts[i])).collect();
    if missing.is_empty() {
        return Ok(false);
    }
    let base = install_base(&[texts[0].as_str(), texts[1].as_str()], count)?;
    for i in missing {
        let mut text = texts[i].clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("{SUBID_USER}:{base}:{count}\n"));
        replace_file(files[i], &text)?;
    }
    Ok(true)
}

/// Whether `text` has a `sysvisor` line (well-formed or not).
fn has_entry(text: &str) -> bool {
    parse(text).iter().any(|(_, l, _)| l.split(':').next().map(str::trim) == Some(SUBID_USER))
}

/// The base of a new pool of `count` ids: 65536-aligned, at least 100000 and after the end
/// of every well-formed entry of `texts`. Fails when such a pool would not fit below 2^32-1.
pub fn install_base(texts: &[&str], count: u32) -> Result<u64, IdRangeError> {
    if count < RANGE_SIZE {
        return Err(IdRangeError::InvalidPoolSize(count.into()));
    }
    let end = texts
        .iter()
        .flat_map(|text| parse(text))
        .filter_map(|(_, _, entry)| entry.ok())
        .fold(MIN_BASE, |end, entry| end.max(entry.end()));
    let size = u64::from(RANGE_SIZE);
    // An entry ending past the id space leaves no room: checked before rounding up, which
    // could overflow.
    let base = end.min(ID_LIMIT).div_ceil(size) * size;
    if base + u64::from(count) > ID_LIMIT {
        return Err(IdRangeError::InvalidPoolSize(base + u64::from(count)));
    }
    Ok(base)
}

/// Writes `text` to `path` via a temp file in the same directory and a rename.
fn replace_file(path: &Path, text: &str) -> Result<(), IdRangeError> {
    crate::atomic_file::replace(path, text.as_bytes(), 0o644)
        .map_err(|e| IdRangeError::io(format!("writing {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let got = parse("alice:100000:65536\n\n# c\nbad\nbob:x:1\nsysvisor:131072:131072\n");
        assert_eq!(got.len(), 4);
        assert!(got[0].2.is_ok());
        assert!(got[1].2.is_err());
        assert!(got[2].2.is_err());
        assert_eq!(
            got[3].2.as_ref().unwrap(),
            &Entry { owner: "sysvisor".into(), start: 131072, count: 131072 }
        );
    }

    #[test]
    fn ids_near_the_top_of_u64_give_no_slices_and_no_pool() {
        let file = Path::new("subuid");
        let top = format!("sysvisor:{}:{}\n", u64::MAX, u64::MAX);
        assert_eq!(slices_in(&top, file).unwrap(), Vec::<u32>::new());
        assert!(matches!(
            install_base(&[&top, ""], RANGE_SIZE),
            Err(IdRangeError::InvalidPoolSize(_))
        ));
        let big = format!("other:0:{}\n", u64::MAX);
        assert!(matches!(install_base(&[&big], RANGE_SIZE), Err(IdRangeError::InvalidPoolSize(_))));
        // A pool of every id is cut into its 65535 slices, each once.
        let all = format!("sysvisor:0:{}\nsysvisor:0:{}\n", u32::MAX, u32::MAX);
        assert_eq!(slices_in(&all, file).unwrap().len(), 65535);
        assert_eq!(install_base(&["alice:100000:65536"], RANGE_SIZE).unwrap(), 196608);
    }

    #[test]
    fn slices_are_aligned_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("subuid");
        // 100000 rounds up to 131072; 100000+300000 = 400000 holds 131072, 196608, 262144
        // and 327680 (ends 393216); a duplicate entry adds nothing.
        fs::write(&f, "sysvisor:100000:300000\nsysvisor:131072:65536\n").unwrap();
        assert_eq!(slices(&f).unwrap(), vec![131072, 196608, 262144, 327680]);
        fs::write(&f, "other:0:10\n").unwrap();
        assert!(matches!(slices(&f), Err(IdRangeError::MissingEntry { .. })));
        fs::write(&f, "sysvisor:abc:10\n").unwrap();
        assert!(matches!(slices(&f), Err(IdRangeError::BadEntry { .. })));
        // The last id 2^32-1 is invalid: a slice may not include it.
        fs::write(&f, format!("sysvisor:{}:65536\n", u32::MAX as u64 + 1 - 65536)).unwrap();
        assert_eq!(slices(&f).unwrap(), Vec::<u32>::new());
    }
}
