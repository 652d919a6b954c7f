//! The runc command line, as Docker's containerd shim sends it.
//!
//! sysvisor-runc acts on only a few commands (`create`, `run`, `delete`, `kill`, `exec`)
//! and hands every command to runc with its original arguments, so this module parses in
//! two steps: the global flags up to the subcommand, then the subcommand's own flags for
//! the commands we act on. A command we only forward is never rejected here: runc judges
//! it, so flags added by a future runc keep working.
//!
//! Like runc (Go's flag package through urfave/cli), long flags may be written with one
//! dash (`-bundle`) and boolean flags take an optional `=true`/`=false`.
//!
//! Two global flags are sysvisor-runc's own ([`DaemonOpts`]): `--fs-socket` and
//! `--fs-mountpoint` point it at a sysvisor-fs daemon other than the default one (Docker
//! passes them from the runtime's `runtimeArgs` in daemon.json). They are taken out of the
//! command line handed to runc ([`Invocation::args`]).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};

/// Format of runc's `--log` file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// runc's global flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct GlobalOpts {
    /// Enable debug logging.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub debug: bool,
    /// Log file (runc writes its errors there; so do we).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Root directory of runc's container state.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Path to criu.
    #[arg(long)]
    pub criu: Option<OsString>,
    /// Use systemd for cgroups.
    #[arg(long = "systemd-cgroup", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub systemd_cgroup: bool,
    /// Rootless mode: true, false or auto.
    #[arg(long)]
    pub rootless: Option<OsString>,
}

impl GlobalOpts {
    /// The flags to give runc for a helper command of our own (`state`): where the
    /// containers live and how, but not the log file nor debug output.
    pub fn state_flags(&self) -> Vec<OsString> {
        let mut out = Vec::new();
        if let Some(root) = &self.root {
            out.push("--root".into());
            out.push(root.clone().into_os_string());
        }
        if self.systemd_cgroup {
            out.push("--systemd-cgroup".into());
        }
        if let Some(rootless) = &self.rootless {
            let mut flag = OsString::from("--rootless=");
            flag.push(rootless);
            out.push(flag);
        }
        out
    }
}

/// sysvisor-runc's own global flags, not runc's: which sysvisor-fs daemon this runtime
/// uses. Each overrides its environment variable, which overrides the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct DaemonOpts {
    /// The daemon's control socket (`$SYSVISOR_FS_SOCKET`, default /run/sysvisor/fs.sock);
    /// its mount trap socket is `seccomp.sock` beside it.
    #[arg(long = "fs-socket")]
    pub fs_socket: Option<PathBuf>,
    /// Where the daemon serves its views (`$SYSVISOR_FS_MOUNTPOINT`, default
    /// /var/lib/sysvisor-fs).
    #[arg(long = "fs-mountpoint")]
    pub fs_mountpoint: Option<PathBuf>,
}

/// [`DaemonOpts`]' flags, which take a value each.
const OWN_FLAGS: &[&str] = &["--fs-socket", "--fs-mountpoint"];
/// runc's global flags that take a value (the next argument unless given as `--flag=value`).
const GLOBAL_VALUE_FLAGS: &[&str] = &["--log", "--log-format", "--root", "--criu", "--rootless"];

#[derive(Debug, Parser)]
#[command(name = "sysvisor-runc", disable_help_flag = true, disable_version_flag = true)]
struct TopLevel {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(flatten)]
    daemon: DaemonOpts,
    #[arg(short = 'v', long = "version")]
    version: bool,
    #[arg(short = 'h', long = "help")]
    help: bool,
    #[command(subcommand)]
    sub: Option<External>,
}

#[derive(Debug, clap::Subcommand)]
enum External {
    #[command(external_subcommand)]
    Args(Vec<OsString>),
}

/// `create` (and the shared part of `run`).
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "create", disable_help_flag = true, disable_version_flag = true)]
pub struct CreateArgs {
    /// Bundle directory (default: the current directory).
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "pidfd-socket")]
    pub pidfd_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "no-pivot", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub no_pivot: bool,
    #[arg(long = "no-new-keyring", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub no_new_keyring: bool,
    #[arg(long = "preserve-fds")]
    pub preserve_fds: Option<u32>,
    /// The container id.
    pub id: String,
}

/// `run`: `create` plus start, in the foreground unless `--detach`.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "run", disable_help_flag = true, disable_version_flag = true)]
pub struct RunArgs {
    #[arg(short = 'b', long, default_value = ".")]
    pub bundle: PathBuf,
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "pidfd-socket")]
    pub pidfd_socket: Option<PathBuf>,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(short = 'd', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub detach: bool,
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub keep: bool,
    #[arg(long = "no-subreaper", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub no_subreaper: bool,
    #[arg(long = "no-pivot", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub no_pivot: bool,
    #[arg(long = "no-new-keyring", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub no_new_keyring: bool,
    #[arg(long = "preserve-fds")]
    pub preserve_fds: Option<u32>,
    pub id: String,
}

/// `delete`.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "delete", disable_help_flag = true, disable_version_flag = true)]
pub struct DeleteArgs {
    #[arg(short = 'f', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub force: bool,
    pub id: String,
}

/// `kill`.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "kill", disable_help_flag = true, disable_version_flag = true)]
pub struct KillArgs {
    #[arg(short = 'a', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub all: bool,
    pub id: String,
    /// The signal (name or number); runc's default is SIGTERM.
    pub signal: Option<String>,
}

/// `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "exec", disable_help_flag = true, disable_version_flag = true)]
pub struct ExecArgs {
    #[arg(long = "console-socket")]
    pub console_socket: Option<PathBuf>,
    #[arg(long = "pidfd-socket")]
    pub pidfd_socket: Option<PathBuf>,
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    #[arg(short = 'e', long)]
    pub env: Vec<String>,
    #[arg(short = 't', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub tty: bool,
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<String>,
    /// A process.json to run instead of the command line.
    #[arg(short = 'p', long)]
    pub process: Option<PathBuf>,
    #[arg(short = 'l', long = "process-label")]
    pub process_label: Option<String>,
    #[arg(long)]
    pub apparmor: Option<String>,
    #[arg(long = "no-new-privs", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub no_new_privs: bool,
    #[arg(short = 'c', long)]
    pub cap: Vec<String>,
    #[arg(short = 'd', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub detach: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "preserve-fds")]
    pub preserve_fds: Option<u32>,
    #[arg(long)]
    pub cgroup: Vec<String>,
    #[arg(long = "ignore-paused", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = parse_go_bool)]
    pub ignore_paused: bool,
    pub id: String,
    /// The command to run, when no `--process` is given.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Create(CreateArgs),
    Run(RunArgs),
    Delete(DeleteArgs),
    Kill(KillArgs),
    Exec(Box<ExecArgs>),
    /// `--version`: ours, then runc's.
    Version,
    /// Anything else (another subcommand, `--help`, no subcommand, or a command we act on
    /// whose flags we could not parse and may pass through, see [`Invocation::note`]):
    /// handed to runc unchanged.
    Forward {
        name: Option<String>,
    },
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The original arguments (without the program name and [`DaemonOpts`]' flags), as they
    /// are handed to runc.
    pub args: Vec<OsString>,
    pub global: GlobalOpts,
    pub daemon: DaemonOpts,
    pub command: Command,
    /// Index of the subcommand's name in [`Invocation::args`] (`args.len()` when none).
    pub sub_index: usize,
    /// Why a command we normally act on is forwarded as is (its flags did not parse).
    pub note: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    fn from_clap(err: clap::Error) -> CliError {
        // clap's message on one line, without usage and tips.
        let text = err.render().to_string();
        let mut parts = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with("Usage:") || line.starts_with("For more information") {
                break;
            }
            if !line.is_empty() && !line.starts_with("tip:") {
                parts.push(line);
            }
        }
        let msg = parts.join(" ");
        CliError::Usage(msg.strip_prefix("error: ").unwrap_or(&msg).to_string())
    }
}

/// Every long flag name sysvisor-runc parses; a single-dash spelling of one of them
/// (`-bundle`, `-pid-file=x`) is read as the double-dash one, as runc does.
const LONG_FLAGS: &[&str] = &[
    "fs-socket",
    "fs-mountpoint",
    "debug",
    "log",
    "log-format",
    "root",
    "criu",
    "systemd-cgroup",
    "rootless",
    "version",
    "help",
    "bundle",
    "console-socket",
    "pidfd-socket",
    "pid-file",
    "no-pivot",
    "no-new-keyring",
    "preserve-fds",
    "detach",
    "keep",
    "no-subreaper",
    "force",
    "all",
    "cwd",
    "env",
    "tty",
    "user",
    "additional-gids",
    "process",
    "process-label",
    "apparmor",
    "no-new-privs",
    "cap",
    "cgroup",
    "ignore-paused",
];

fn normalize(arg: &OsStr) -> OsString {
    if let Some(s) = arg.to_str() {
        if let Some(rest) = s.strip_prefix('-') {
            if !rest.starts_with('-') && rest.len() > 1 {
                let name = rest.split('=').next().unwrap_or(rest);
                if LONG_FLAGS.contains(&name) {
                    return format!("--{rest}").into();
                }
            }
        }
    }
    arg.to_os_string()
}

/// Go's `strconv.ParseBool`, which runc's boolean flags use.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean value {s:?}")),
    }
}

/// Parses a command line (without the program name).
pub fn parse<I, S>(args: I) -> Result<Invocation, CliError>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let normalized: Vec<OsString> = args.iter().map(|a| normalize(a)).collect();
    let top = TopLevel::try_parse_from(
        std::iter::once(OsString::from("sysvisor-runc")).chain(normalized.clone()),
    )
    .map_err(CliError::from_clap)?;
    let sub = match top.sub {
        Some(External::Args(sub)) => sub,
        None => Vec::new(),
    };
    // runc does not know our own flags: drop them from the global part.
    let global_part = without_own_flags(&args[..args.len() - sub.len()]);
    let sub_index = global_part.len();
    let normalized: Vec<OsString> = without_own_flags(&normalized[..normalized.len() - sub.len()])
        .into_iter()
        .chain(normalized[normalized.len() - sub.len()..].iter().cloned())
        .collect();
    let args: Vec<OsString> =
        global_part.into_iter().chain(args[args.len() - sub.len()..].iter().cloned()).collect();
    let daemon = top.daemon.clone();
    let forward = |name: Option<String>, note: Option<String>| Invocation {
        args: args.clone(),
        global: top.global.clone(),
        daemon: daemon.clone(),
        command: Command::Forward { name },
        sub_index,
        note,
    };
    if top.help {
        return Ok(forward(None, None));
    }
    if top.version {
        return Ok(Invocation {
            args: args.clone(),
            global: top.global.clone(),
            daemon,
            command: Command::Version,
            sub_index,
            note: None,
        });
    }
    let Some(name) = sub.first().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(forward(None, None));
    };
    let sub_args = &normalized[sub_index..];
    let help = sub_args.iter().any(|a| a == "--help" || a == "-h");
    let parsed = match name.as_str() {
        _ if help => return Ok(forward(Some(name), None)),
        "create" => CreateArgs::try_parse_from(sub_args).map(Command::Create),
        "run" => RunArgs::try_parse_from(sub_args).map(Command::Run),
        "delete" => DeleteArgs::try_parse_from(sub_args).map(Command::Delete),
        "kill" => KillArgs::try_parse_from(sub_args).map(Command::Kill),
        "exec" => ExecArgs::try_parse_from(sub_args).map(|a| Command::Exec(Box::new(a))),
        _ => return Ok(forward(Some(name), None)),
    };
    match parsed {
        Ok(command) => {
            Ok(Invocation { args, global: top.global, daemon, command, sub_index, note: None })
        }
        // Without its flags we cannot rewrite the bundle: refuse rather than start an
        // ordinary container under the system-container runtime.
        Err(e) if name == "create" || name == "run" => Err(CliError::from_clap(e)),
        // The others still work unchanged in runc; what we add to them is skipped.
        Err(e) => {
            let note = CliError::from_clap(e).to_string();
            Ok(forward(Some(name), Some(note)))
        }
    }
}

/// The global flags `global` (everything before the subcommand) without [`OWN_FLAGS`] and
/// their values, in either spelling (`--fs-socket P`, `-fs-socket=P`).
fn without_own_flags(global: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(global.len());
    let mut iter = global.iter();
    while let Some(arg) = iter.next() {
        let norm = normalize(arg);
        let text = norm.to_string_lossy();
        let (name, has_value) = match text.split_once('=') {
            Some((name, _)) => (name, true),
            None => (&*text, false),
        };
        if OWN_FLAGS.contains(&name) {
            if !has_value {
                iter.next();
            }
            continue;
        }
        out.push(arg.clone());
        // A value of runc's (`--root DIR`) is kept as it is, even if it looks like a flag.
        if GLOBAL_VALUE_FLAGS.contains(&name) && !has_value {
            if let Some(value) = iter.next() {
                out.push(value.clone());
            }
        }
    }
    out
}

/// Where runc's log goes, read from a command line that may not parse (to report that it
/// does not).
pub fn log_target(args: &[OsString]) -> (Option<PathBuf>, LogFormat) {
    let mut path = None;
    let mut format = LogFormat::Text;
    let mut iter = args.iter().map(|a| normalize(a));
    while let Some(arg) = iter.next() {
        let Some(s) = arg.to_str() else { continue };
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) => (n, Some(OsString::from(v))),
            None => (s, None),
        };
        if name != "--log" && name != "--log-format" {
            continue;
        }
        let Some(value) = inline.or_else(|| iter.next()) else {
            break;
        };
        if name == "--log" {
            path = Some(PathBuf::from(value));
        } else if value == "json" {
            format = LogFormat::Json;
        }
    }
    (path, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_target_without_a_parse() {
        let args: Vec<OsString> = ["-log", "/l.json", "--log-format=json", "create", "--bogus"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(log_target(&args), (Some(PathBuf::from("/l.json")), LogFormat::Json));
        assert_eq!(log_target(&[]), (None, LogFormat::Text));
    }

    #[test]
    fn go_bools() {
        assert_eq!(parse_go_bool("true"), Ok(true));
        assert_eq!(parse_go_bool("F"), Ok(false));
        assert!(parse_go_bool("yes").is_err());
    }

    #[test]
    fn single_dash_long_flags_are_normalized() {
        assert_eq!(normalize(OsStr::new("-bundle")), "--bundle");
        assert_eq!(normalize(OsStr::new("-pid-file=/p")), "--pid-file=/p");
        assert_eq!(normalize(OsStr::new("-b")), "-b");
        assert_eq!(normalize(OsStr::new("-unknown")), "-unknown");
        assert_eq!(normalize(OsStr::new("--bundle")), "--bundle");
        assert_eq!(normalize(OsStr::new("-")), "-");
    }

    #[test]
    fn own_flags_are_parsed_and_not_handed_to_runc() {
        let inv = parse([
            "--fs-socket",
            "/t/fs.sock",
            "-fs-mountpoint=/t/views",
            "--root",
            "/r",
            "--log",
            "/l.json",
            "create",
            "--bundle",
            "/b",
            "x",
        ])
        .unwrap();
        assert_eq!(inv.daemon.fs_socket, Some(PathBuf::from("/t/fs.sock")));
        assert_eq!(inv.daemon.fs_mountpoint, Some(PathBuf::from("/t/views")));
        let runc: Vec<&str> = inv.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(runc, ["--root", "/r", "--log", "/l.json", "create", "--bundle", "/b", "x"]);
        assert_eq!(inv.sub_index, 4);
        assert_eq!(inv.global.root, Some(PathBuf::from("/r")));
        assert!(matches!(inv.command, Command::Create(ref c) if c.id == "x"));
        // Docker's runtimeArgs come first; the same flags after the subcommand are the
        // subcommand's (and `create` has none such).
        assert!(parse(["create", "--fs-socket", "/s", "x"]).is_err());
        // A value of runc's that looks like our flag stays runc's.
        let kept = without_own_flags(&["--root".into(), "--fs-socket".into()]);
        assert_eq!(kept, [OsString::from("--root"), OsString::from("--fs-socket")]);
        // Forwarded commands lose them too.
        let inv = parse(["--fs-socket=/s", "list"]).unwrap();
        assert_eq!(inv.args, [OsString::from("list")]);
        assert_eq!(inv.sub_index, 0);
    }

    #[test]
    fn no_subcommand_is_forwarded() {
        let inv = parse(["--root", "/r"]).unwrap();
        assert_eq!(inv.command, Command::Forward { name: None });
        assert_eq!(inv.sub_index, 2);
        assert_eq!(inv.global.root, Some(PathBuf::from("/r")));
    }
}
