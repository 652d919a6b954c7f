//! `/proc/pressure/*`: `views::pressure::parse` never panics; what it accepts renders in
//! the kernel's layout (valid UTF-8, one line per parsed line, `some` first), and the
//! rendering parses back to the same lines. A file in the kernel's own layout (two
//! decimals, no leading zeros in the integer part) renders byte for byte as it came.
//!
//! Input: the cgroup file's text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::views::pressure;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(lines) = pressure::parse(text) else { return };
    assert!(!lines.is_empty() && lines.len() <= 2);
    assert!(!lines[0].full);
    let out = pressure::render(&lines);
    let out = String::from_utf8(out).expect("pressure view is not UTF-8");
    assert_eq!(out.lines().count(), lines.len());
    let again = pressure::parse(&out).unwrap_or_else(|e| panic!("view does not parse: {e}\n{out:?}"));
    assert_eq!(again, lines);
    assert_eq!(pressure::render(&again), out.as_bytes());
});
