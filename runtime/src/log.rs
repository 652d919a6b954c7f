//! Writing to runc's `--log` file in runc's own format.
//!
//! containerd reads that file when runc fails and shows the last `error` line to the user
//! ("OCI runtime create failed: <msg>"), so our errors go there exactly as runc's do:
//! JSON lines `{"level":"error","msg":"...","time":"<RFC 3339>"}` with `--log-format json`,
//! logrus text lines `time="..." level=error msg="..."` otherwise. runc appends to the same
//! file, so it is opened in append mode for every line.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::LogFormat;

/// A log level, spelled as logrus spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One line in the given format (with its newline).
pub fn format_line(format: LogFormat, level: Level, msg: &str, time: &str) -> String {
    match format {
        LogFormat::Json => {
            // Keys in logrus' (alphabetical) order.
            let line = serde_json::json!({ "level": level.as_str(), "msg": msg, "time": time });
            format!("{line}\n")
        }
        LogFormat::Text => {
            format!("time={} level={} msg={}\n", quote(time), level.as_str(), quote(msg))
        }
    }
}

/// A Go `%q`-style quoted string (what logrus' text formatter writes).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// RFC 3339 time in UTC with second precision, e.g. `2024-05-06T07:08:09Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Where our log lines go: runc's `--log` file (if any) and, for warnings and errors,
/// stderr.
#[derive(Debug, Clone, Default)]
pub struct RuncLog {
    pub path: Option<PathBuf>,
    pub format: LogFormat,
    pub debug: bool,
}

impl RuncLog {
    pub fn new(path: Option<PathBuf>, format: LogFormat, debug: bool) -> RuncLog {
        RuncLog { path, format, debug }
    }

    /// Writes one line to the log file. Failing to log is not worth failing for.
    pub fn write(&self, level: Level, msg: &str) {
        if level == Level::Debug && !self.debug {
            return;
        }
        let Some(path) = &self.path else { return };
        let line = format_line(self.format, level, msg, &rfc3339(SystemTime::now()));
        if let Ok(mut file) = OpenOptions::new().create(true).append(true).mode(0o644).open(path) {
            let _ = file.write_all(line.as_bytes());
        }
    }

    /// An error: to the log file and to stderr.
    pub fn error(&self, msg: &str) {
        self.write(Level::Error, msg);
        eprintln!("sysvisor-runc: {msg}");
    }

    /// A warning: to the log file and to stderr. containerd only reports `error` lines, so
    /// warnings never hide runc's own error.
    pub fn warn(&self, msg: &str) {
        self.write(Level::Warning, msg);
        eprintln!("sysvisor-runc: warning: {msg}");
    }

    /// A debug line, written with `--debug` only.
    pub fn debug(&self, msg: &str) {
        self.write(Level::Debug, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_714_979_289)),
            "2024-05-06T07:08:09Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(4_102_444_799)),
            "2099-12-31T23:59:59Z"
        );
    }

    #[test]
    fn json_line_is_what_containerd_parses() {
        let line =
            format_line(LogFormat::Json, Level::Error, "bad \"x\"\nnext", "2024-05-06T07:08:09Z");
        assert_eq!(line, "{\"level\":\"error\",\"msg\":\"bad \\\"x\\\"\\nnext\",\"time\":\"2024-05-06T07:08:09Z\"}\n");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "bad \"x\"\nnext");
    }

    #[test]
    fn text_line_is_logrus_style() {
        let line =
            format_line(LogFormat::Text, Level::Error, "no \"daemon\"", "2024-05-06T07:08:09Z");
        assert_eq!(line, "time=\"2024-05-06T07:08:09Z\" level=error msg=\"no \\\"daemon\\\"\"\n");
        assert_eq!(quote("a\tb\u{1}"), "\"a\\tb\\x01\"");
    }

    #[test]
    fn lines_are_appended_and_debug_needs_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        std::fs::write(
            &path,
            "{\"level\":\"info\",\"msg\":\"runc\",\"time\":\"2024-05-06T07:08:09Z\"}\n",
        )
        .unwrap();
        let log = RuncLog::new(Some(path.clone()), LogFormat::Json, false);
        log.debug("hidden");
        log.write(Level::Error, "first");
        log.warn("second");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["level"], "error");
        assert_eq!(lines[1]["msg"], "first");
        assert_eq!(lines[2]["level"], "warning");
    }
}
