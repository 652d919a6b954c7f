//! The kernel's cpu-list format ("0-3,5,7-8"), as in `/sys/devices/system/cpu/online`
//! and `cpuset.cpus`.

use std::fmt;

use super::fmt::push_u64;

/// CPU numbers above this are rejected (the kernel's NR_CPUS tops out at 8192), so that
/// a malformed list cannot make a huge allocation.
pub const MAX_CPU_ID: u32 = 65_535;

/// Why a cpu list could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuListError(pub String);

impl fmt::Display for CpuListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad cpu list: {}", self.0)
    }
}

impl std::error::Error for CpuListError {}

/// Parses a cpu list ("0-3,5\n") into ascending, de-duplicated CPU numbers. Surrounding
/// whitespace is ignored; an empty list gives an empty vector.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, CpuListError> {
    let s = s.trim();
    let mut cpus = Vec::new();
    if s.is_empty() {
        return Ok(cpus);
    }
    let num = |t: &str| -> Result<u32, CpuListError> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CpuListError(format!("{t:?} is not a CPU number")));
        }
        match t.parse::<u32>() {
            Ok(n) if n <= MAX_CPU_ID => Ok(n),
            _ => Err(CpuListError(format!("CPU number {t} too large"))),
        }
    };
    let mut ranges = Vec::new();
    let mut sorted = true;
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let a = num(part)?;
                (a, a)
            }
        };
        if a > b {
            return Err(CpuListError(format!("reversed range {}", part.trim())));
        }
        if ranges.last().is_some_and(|&(_, last): &(u32, u32)| last >= a) {
            sorted = false;
        }
        ranges.push((a, b));
    }
    if !sorted {
        ranges.sort_unstable();
    }
    // Expand, skipping what overlaps the previous range: at most MAX_CPU_ID + 1 CPUs.
    for (a, b) in ranges {
        let from = match cpus.last() {
            Some(&last) if last >= b => continue,
            Some(&last) if last >= a => last + 1,
            _ => a,
        };
        cpus.extend(from..=b);
    }
    Ok(cpus)
}

/// Appends `cpus` (ascending) in the kernel's list format, without a newline:
/// runs of two or more become "a-b", as the kernel's `%*pbl` prints them.
pub fn write_cpu_list(out: &mut Vec<u8>, cpus: &[u32]) {
    let mut i = 0;
    let mut first = true;
    while let Some(&start) = cpus.get(i) {
        let mut end = start;
        let mut j = i + 1;
        while let Some(&c) = cpus.get(j) {
            if Some(c) != end.checked_add(1) {
                break;
            }
            end = c;
            j += 1;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        push_u64(out, u64::from(start));
        if end != start {
            out.push(b'-');
            push_u64(out, u64::from(end));
        }
        i = j;
    }
}

/// `cpus` (ascending) in the kernel's list format, without a newline.
pub fn format_cpu_list(cpus: &[u32]) -> String {
    let mut out = Vec::with_capacity(cpus.len() * 3);
    write_cpu_list(&mut out, cpus);
    // Only ASCII digits, '-' and ',' were written.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!(parse_cpu_list("0-3,5\n").unwrap(), vec![0, 1, 2, 3, 5]);
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list(" 7 , 2-3 ,2").unwrap(), vec![2, 3, 7]);
        assert_eq!(parse_cpu_list("\n").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_cpu_list("1-1").unwrap(), vec![1]);
        assert_eq!(parse_cpu_list("65535").unwrap(), vec![65535]);
        for bad in
            ["x", "1-", "-1", "3-1", "1,,2", "0-3:1/2", "65536", "0-99999999999", "+1", "1 2"]
        {
            assert!(parse_cpu_list(bad).is_err(), "{bad}");
        }
        // Many overlapping ranges stay bounded.
        let many = vec!["0-65535"; 40].join(",");
        assert_eq!(parse_cpu_list(&many).unwrap().len(), 65536);
    }

    #[test]
    fn format() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 5]), "0-3,5");
        assert_eq!(format_cpu_list(&[0]), "0");
        assert_eq!(format_cpu_list(&[0, 1]), "0-1");
        assert_eq!(format_cpu_list(&[1, 3, 5, 6]), "1,3,5-6");
        assert_eq!(format_cpu_list(&[]), "");
        assert_eq!(format_cpu_list(&[u32::MAX - 1, u32::MAX]), "4294967294-4294967295");
        for s in ["0-3,5", "0", "2,4-7,9-10"] {
            assert_eq!(format_cpu_list(&parse_cpu_list(s).unwrap()), s);
        }
    }
}
