//! Writes to emulated sysctls (`sysctl::format`, the kernel's proc handlers mirrored):
//! never a panic; write(2) never reports more bytes than were written; a stored value is
//! what the kernel would print (no newline) and, written back whole, is accepted and
//! stored unchanged (so what a container reads it can write again).
//!
//! Input: byte 0 picks the format (every format of the rule tables), byte 1 the offset (0
//! unless it is 200 or more), the rest is what is written; the current value is the host's
//! usual one for that format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::sysctl::format::{render, Format};
use sysvisor_fs::sysctl::rules::{Kind, MIRRORS};

fn formats() -> Vec<Format> {
    let mut out = vec![Format::Ints { len: 2, min: 0, max: i32::MAX as i64 }];
    for mirror in MIRRORS {
        for rule in mirror.rules {
            if let Kind::Emulated(f) | Kind::NetOrEmulated(f) = rule.kind {
                if !out.contains(&f) {
                    out.push(f);
                }
            }
        }
    }
    out
}

fn usual(format: &Format) -> &'static str {
    match format {
        Format::Ints { len: 4, .. } => "4\t4\t1\t7",
        Format::Ints { len: 2, .. } => "1\t0",
        Format::Name { .. } => "pfifo_fast",
        Format::Param { .. } => "262144",
        Format::Jiffies => "600",
        Format::Ints { min, .. } if *min > 10 => "32768",
        _ => "1",
    }
}

fuzz_target!(|data: &[u8]| {
    let formats = formats();
    let Some((&pick, rest)) = data.split_first() else { return };
    let format = formats[usize::from(pick) % formats.len()];
    let (offset, input) = match rest.split_first() {
        Some((&o, input)) => (if o >= 200 { u64::from(o - 200) } else { 0 }, input),
        None => (0, rest),
    };
    let current = usual(&format);
    let written = format.write(current, input, offset);
    if let Ok(n) = written.result {
        assert!(n <= input.len(), "{format:?}: {n} bytes of {}", input.len());
    }
    if let Some(value) = written.value {
        assert!(!value.contains('\n'), "{format:?}: value {value:?}");
        let again = format.write(&value, &render(&value), 0);
        assert!(again.result.is_ok(), "{format:?}: {value:?} written back: {again:?}");
        let back = again.value.unwrap_or_else(|| value.clone());
        assert_eq!(back, value, "{format:?}: {value:?} written back");
    }
});
