//! `/proc/PID/stat`: `caller::pidns::parse_stat` and `loadavg::task_state` never panic and
//! read their fields from after the last ')' (the command name may hold spaces and ')').
//!
//! Input: the text of a stat line. The same bytes also build a well-formed line
//! (ppid u32, start time u64, state byte, then the rest as the command name) whose fields
//! must be read back exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sysvisor_fs::caller::pidns::parse_stat;
use sysvisor_fs::loadavg::task_state;
use sysvisor_fuzz::{utf8_prefix, Reader};

/// A straightforward reading of the format: ppid is the 4th field, starttime the 22nd,
/// counting from 3 after the last ')'.
fn reference(text: &str) -> Option<(u32, u64)> {
    let close = text.bytes().rposition(|b| b == b')')?;
    let fields: Vec<&str> = text[close + 1..].split_ascii_whitespace().collect();
    Some((fields.get(4 - 3)?.parse().ok()?, fields.get(22 - 3)?.parse().ok()?))
}

fuzz_target!(|data: &[u8]| {
    let text = utf8_prefix(data);
    assert_eq!(parse_stat(text), reference(text), "parse_stat of {text:?}");
    let state = task_state(text);
    assert_eq!(state.is_some(), text.rfind(')').is_some_and(|i| !text[i + 1..].trim_start().is_empty()));

    let mut r = Reader::new(data);
    let ppid = r.u32();
    let start = r.u64();
    let state = char::from(b'A' + r.u8() % 26);
    let comm = String::from_utf8_lossy(data.get(13..).unwrap_or_default());
    let mut line = format!("4242 ({comm}) {state} {ppid}");
    for field in 5..=52 {
        let v = if field == 22 { start } else { field };
        line.push_str(&format!(" {v}"));
    }
    line.push('\n');
    assert_eq!(parse_stat(&line), Some((ppid, start)), "{line:?}");
    assert_eq!(task_state(&line), Some(state), "{line:?}");
});
