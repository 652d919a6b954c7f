//! Running commands with a time limit and keeping everything they printed.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a finished (or timed-out) command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// `None` when the command was killed after its time limit, or could not start.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The exit code, if it exited (not killed by a signal or the time limit).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panics with everything the command printed unless it succeeded.
    #[track_caller]
    pub fn expect_success(self) -> Output {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panics unless it failed (exited non-zero).
    #[track_caller]
    pub fn expect_failure(self) -> Output {
        assert!(self.status.is_some() && !self.success(), "command should have failed: {self}");
        self
    }

    /// stdout with surrounding whitespace (and a tty's `\r`) removed.
    pub fn out(&self) -> String {
        self.stdout.replace('\r', "").trim().to_string()
    }

    /// The `KEY=value` lines of stdout (what test scripts print), by key.
    pub fn fields(&self) -> std::collections::HashMap<String, String> {
        self.out()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed after its time limit (or never started)".to_string(),
        };
        write!(
            f,
            "`{}`: {status}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, feeding it `stdin` (if any), killing it after `timeout`.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let command = describe(cmd);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Output {
                command,
                status: None,
                stdout: String::new(),
                stderr: format!("cannot start: {e}"),
            }
        }
    };
    let input = stdin.map(|data| {
        let mut pipe = child.stdin.take().expect("piped stdin");
        let data = data.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    if let Some(input) = input {
        let _ = input.join();
    }
    // A grandchild that keeps the pipes open must not hang us: give the readers a moment.
    let stdout = join_reader(out, deadline);
    let mut stderr = join_reader(err, deadline);
    if status.is_none() {
        stderr.push_str(&format!("\n[killed after {timeout:?}]"));
    }
    Output { command, status, stdout, stderr }
}

fn join_reader(handle: thread::JoinHandle<Vec<u8>>, deadline: Instant) -> String {
    let give_up = deadline.max(Instant::now()) + Duration::from_secs(5);
    while !handle.is_finished() && Instant::now() < give_up {
        thread::sleep(Duration::from_millis(10));
    }
    if handle.is_finished() {
        String::from_utf8_lossy(&handle.join().unwrap_or_default()).into_owned()
    } else {
        "[output still open; not collected]".to_string()
    }
}

/// `prog arg arg ...`, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs a shell command line (for set-up steps); output as for [`run`].
pub fn sh(script: &str, timeout: Duration) -> Output {
    run(Command::new("sh").arg("-c").arg(script), None, timeout)
}
