//! Command-line parsing for `berth-runtime`, runc's syntax: global flags, a command, its
//! flags and positional arguments. Flags are `--name value`, `--name=value`, a single-dash
//! long form (`-bundle value`, as Go's flag parsing allows) or a short alias (`-b value`).
//! For `exec`, everything after the container id is the command line.

use std::collections::HashMap;
use std::path::PathBuf;

/// Usage text for `--help` and errors.
pub const USAGE: &str = "usage: berth-runtime [--root DIR] [--log FILE] [--log-format text|json] \
[--systemd-cgroup] [--debug] COMMAND [OPTIONS] ID

commands:
  create [--bundle DIR] [--pid-file F] [--console-socket S] [--preserve-fds N] [--no-pivot] [--no-new-keyring] ID
  start ID | state ID | pause ID | resume ID
  kill [--all] ID [SIGNAL]
  delete [--force] ID
  run [--bundle DIR] [--pid-file F] [--console-socket S] [--detach] [--preserve-fds N] [--no-pivot] ID
  exec [--process FILE] [--tty] [--console-socket S] [--detach] [--pid-file F] [--cwd DIR]
       [--env K=V]... [--user UID[:GID]] [--additional-gids G]... [--cap CAP]... [--no-new-privs] ID [ARGS...]
  ps [--format table|json] ID
  list [--format table|json] [--quiet]
  update --resources FILE|- ID
  events --stats ID
  features | spec [--bundle DIR] [--rootless] | --version";

/// Global options and the command.
#[derive(Debug)]
pub struct Cli {
    /// State root.
    pub root: PathBuf,
    /// Error log file.
    pub log: Option<PathBuf>,
    /// `text` or `json`.
    pub log_format: String,
    /// systemd-style cgroupsPath.
    pub systemd_cgroup: bool,
    /// `--rootless` (runc's global; for `spec`, a rootless config).
    pub rootless: Option<String>,
    /// `--version`.
    pub version: bool,
    /// `--help`.
    pub help: bool,
    /// The command, if any.
    pub cmd: Option<Cmd>,
}

/// Options of `create` and `run`.
#[derive(Debug, Clone)]
pub struct CreateArgs {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub id: String,
}

/// Options of `exec`.
#[derive(Debug)]
pub struct ExecArgs {
    pub process: Option<PathBuf>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub cwd: Option<PathBuf>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub cap: Vec<String>,
    pub no_new_privs: bool,
    pub preserve_fds: i32,
    pub id: String,
    pub args: Vec<String>,
}

/// A command with its arguments.
#[derive(Debug)]
pub enum Cmd {
    Create(CreateArgs),
    Start {
        id: String,
    },
    State {
        id: String,
    },
    Kill {
        all: bool,
        id: String,
        signal: Option<String>,
    },
    Delete {
        force: bool,
        id: String,
    },
    Run {
        create: CreateArgs,
        detach: bool,
    },
    Exec(Box<ExecArgs>),
    Ps {
        format: String,
        id: String,
    },
    List {
        format: String,
        quiet: bool,
    },
    Features,
    Spec {
        bundle: PathBuf,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    Update {
        resources: Option<String>,
        id: String,
    },
    Events {
        stats: bool,
        id: String,
    },
}

/// A flag a command accepts: long name, short alias, whether it takes a value.
type FlagSpec = (&'static str, Option<char>, bool);

const CREATE_FLAGS: &[FlagSpec] = &[
    ("bundle", Some('b'), true),
    ("pid-file", None, true),
    ("console-socket", None, true),
    ("preserve-fds", None, true),
    ("no-pivot", None, false),
    ("no-new-keyring", None, false),
];

const RUN_FLAGS: &[FlagSpec] = &[
    ("bundle", Some('b'), true),
    ("pid-file", None, true),
    ("console-socket", None, true),
    ("preserve-fds", None, true),
    ("no-pivot", None, false),
    ("no-new-keyring", None, false),
    ("detach", Some('d'), false),
    ("keep", None, false),
];

const EXEC_FLAGS: &[FlagSpec] = &[
    ("process", Some('p'), true),
    ("tty", Some('t'), false),
    ("console-socket", None, true),
    ("detach", Some('d'), false),
    ("pid-file", None, true),
    ("cwd", None, true),
    ("env", Some('e'), true),
    ("user", Some('u'), true),
    ("additional-gids", Some('g'), true),
    ("cap", Some('c'), true),
    ("no-new-privs", None, false),
    ("preserve-fds", None, true),
    ("apparmor", None, true),
    ("process-label", None, true),
    ("ignore-paused", None, false),
];

/// Global flags (accepted before the command, and among its flags).
const GLOBAL_FLAGS: &[FlagSpec] = &[
    ("root", None, true),
    ("log", None, true),
    ("log-format", None, true),
    ("systemd-cgroup", None, false),
    ("debug", None, false),
    ("criu", None, true),
    ("version", Some('v'), false),
    ("help", Some('h'), false),
];

/// Parsed flags and positionals of one command.
struct Parsed {
    values: HashMap<&'static str, Vec<String>>,
    pos: Vec<String>,
}

impl Parsed {
    fn one(&self, name: &str) -> Option<String> {
        self.values.get(name).and_then(|v| v.last().cloned())
    }
    fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.values.get(name).cloned().unwrap_or_default()
    }
    fn id(&self, cmd: &str) -> Result<String, String> {
        self.pos
            .first()
            .cloned()
            .ok_or_else(|| format!("{cmd}: missing container id"))
    }
    fn int(&self, name: &str) -> Result<i32, String> {
        match self.one(name) {
            None => Ok(0),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: {v:?} is not a number")),
        }
    }
}

/// Splits `--name=value` / `-name` / `-n` into (name, inline value); None if not a flag.
fn split_flag(arg: &str) -> Option<(String, Option<String>)> {
    let body = if let Some(b) = arg.strip_prefix("--") {
        b
    } else {
        let b = arg.strip_prefix('-')?;
        if b.is_empty() || b.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        b
    };
    if body.is_empty() {
        return None;
    }
    Some(match body.split_once('=') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (body.to_string(), None),
    })
}

fn find<'a>(specs: &'a [FlagSpec], name: &str) -> Option<&'a FlagSpec> {
    specs.iter().find(|(long, short, _)| {
        *long == name || (name.len() == 1 && short.is_some_and(|s| name.starts_with(s)))
    })
}

/// Parses a command's arguments. With `rest_after_id`, everything after the first
/// positional is positional too (exec's command line).
fn parse_cmd(
    cli: &mut Cli,
    args: &mut std::vec::IntoIter<String>,
    specs: &[FlagSpec],
    rest_after_id: bool,
) -> Result<Parsed, String> {
    let mut p = Parsed {
        values: HashMap::new(),
        pos: Vec::new(),
    };
    while let Some(a) = args.next() {
        if a == "--" {
            p.pos.extend(args.by_ref());
            break;
        }
        if rest_after_id && !p.pos.is_empty() {
            p.pos.push(a);
            p.pos.extend(args.by_ref());
            break;
        }
        let Some((name, inline)) = split_flag(&a) else {
            p.pos.push(a);
            continue;
        };
        if let Some(&(long, _, takes)) = find(specs, &name) {
            let v = if takes {
                match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .ok_or_else(|| format!("--{long} needs a value"))?,
                }
            } else {
                String::new()
            };
            p.values.entry(long).or_default().push(v);
        } else if let Some(spec) = find(GLOBAL_FLAGS, &name) {
            apply_global(cli, spec, inline, args)?;
        } else if name == "rootless" {
            cli.rootless = Some(inline.unwrap_or_else(|| "true".into()));
        } else {
            return Err(format!("unknown flag {a}"));
        }
    }
    Ok(p)
}

fn apply_global(
    cli: &mut Cli,
    spec: &FlagSpec,
    inline: Option<String>,
    args: &mut std::vec::IntoIter<String>,
) -> Result<(), String> {
    let (long, _, takes) = *spec;
    let value = if takes {
        Some(match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| format!("--{long} needs a value"))?,
        })
    } else {
        None
    };
    let value = value.unwrap_or_default();
    match long {
        "root" => cli.root = PathBuf::from(value),
        "log" => cli.log = Some(PathBuf::from(value)),
        "log-format" => cli.log_format = value,
        "systemd-cgroup" => cli.systemd_cgroup = true,
        "version" => cli.version = true,
        "help" => cli.help = true,
        _ => {} // debug, criu: accepted
    }
    Ok(())
}

fn create_args(p: &Parsed, cmd: &str) -> Result<CreateArgs, String> {
    Ok(CreateArgs {
        bundle: PathBuf::from(p.one("bundle").unwrap_or_else(|| ".".into())),
        pid_file: p.one("pid-file").map(PathBuf::from),
        console_socket: p.one("console-socket").map(PathBuf::from),
        preserve_fds: p.int("preserve-fds")?,
        no_pivot: p.has("no-pivot"),
        no_new_keyring: p.has("no-new-keyring"),
        id: p.id(cmd)?,
    })
}

/// Parses the whole command line (without the program name).
pub fn parse(argv: Vec<String>) -> Result<Cli, String> {
    let mut cli = Cli {
        root: PathBuf::from("/run/berth-runtime"),
        log: None,
        log_format: "text".into(),
        systemd_cgroup: false,
        rootless: None,
        version: false,
        help: false,
        cmd: None,
    };
    let mut args = argv.into_iter();
    let name = loop {
        let Some(a) = args.next() else {
            return Ok(cli);
        };
        match split_flag(&a) {
            Some((n, inline)) => {
                if n == "rootless" {
                    cli.rootless = Some(inline.unwrap_or_else(|| "true".into()));
                    continue;
                }
                let spec = find(GLOBAL_FLAGS, &n).ok_or_else(|| format!("unknown flag {a}"))?;
                apply_global(&mut cli, spec, inline, &mut args)?;
            }
            None => break a,
        }
    };
    let a = &mut args;
    let cmd = match name.as_str() {
        "create" => {
            let p = parse_cmd(&mut cli, a, CREATE_FLAGS, false)?;
            Cmd::Create(create_args(&p, "create")?)
        }
        "run" => {
            let p = parse_cmd(&mut cli, a, RUN_FLAGS, false)?;
            Cmd::Run {
                create: create_args(&p, "run")?,
                detach: p.has("detach"),
            }
        }
        "start" | "state" | "pause" | "resume" => {
            let id = parse_cmd(&mut cli, a, &[], false)?.id(&name)?;
            match name.as_str() {
                "start" => Cmd::Start { id },
                "state" => Cmd::State { id },
                "pause" => Cmd::Pause { id },
                _ => Cmd::Resume { id },
            }
        }
        "kill" => {
            let p = parse_cmd(&mut cli, a, &[("all", Some('a'), false)], false)?;
            Cmd::Kill {
                all: p.has("all"),
                id: p.id("kill")?,
                signal: p.pos.get(1).cloned(),
            }
        }
        "delete" => {
            let p = parse_cmd(&mut cli, a, &[("force", Some('f'), false)], false)?;
            Cmd::Delete {
                force: p.has("force"),
                id: p.id("delete")?,
            }
        }
        "exec" => {
            let p = parse_cmd(&mut cli, a, EXEC_FLAGS, true)?;
            let gids = p
                .all("additional-gids")
                .iter()
                .map(|g| g.parse().map_err(|_| format!("bad gid {g:?}")))
                .collect::<Result<Vec<u32>, String>>()?;
            Cmd::Exec(Box::new(ExecArgs {
                process: p.one("process").map(PathBuf::from),
                tty: p.has("tty"),
                console_socket: p.one("console-socket").map(PathBuf::from),
                detach: p.has("detach"),
                pid_file: p.one("pid-file").map(PathBuf::from),
                cwd: p.one("cwd").map(PathBuf::from),
                env: p.all("env"),
                user: p.one("user"),
                additional_gids: gids,
                cap: p.all("cap"),
                no_new_privs: p.has("no-new-privs"),
                preserve_fds: p.int("preserve-fds")?,
                id: p.id("exec")?,
                args: p.pos.iter().skip(1).cloned().collect(),
            }))
        }
        "ps" => {
            let p = parse_cmd(&mut cli, a, &[("format", Some('f'), true)], true)?;
            Cmd::Ps {
                format: p.one("format").unwrap_or_else(|| "table".into()),
                id: p.id("ps")?,
            }
        }
        "list" => {
            let specs = [("format", Some('f'), true), ("quiet", Some('q'), false)];
            let p = parse_cmd(&mut cli, a, &specs, false)?;
            Cmd::List {
                format: p.one("format").unwrap_or_else(|| "table".into()),
                quiet: p.has("quiet"),
            }
        }
        "features" => {
            parse_cmd(&mut cli, a, &[], false)?;
            Cmd::Features
        }
        "spec" => {
            let p = parse_cmd(&mut cli, a, &[("bundle", Some('b'), true)], false)?;
            Cmd::Spec {
                bundle: PathBuf::from(p.one("bundle").unwrap_or_else(|| ".".into())),
            }
        }
        "update" => {
            let specs: &[FlagSpec] = &[("resources", Some('r'), true)];
            let p = parse_cmd(&mut cli, a, specs, false)?;
            Cmd::Update {
                resources: p.one("resources"),
                id: p.id("update")?,
            }
        }
        "events" => {
            let specs = [("stats", None, false), ("interval", None, true)];
            let p = parse_cmd(&mut cli, a, &specs, false)?;
            Cmd::Events {
                stats: p.has("stats"),
                id: p.id("events")?,
            }
        }
        "help" => {
            cli.help = true;
            return Ok(cli);
        }
        other => return Err(format!("unknown command {other:?}")),
    };
    cli.cmd = Some(cmd);
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Cli {
        parse(s.split_whitespace().map(String::from).collect()).unwrap()
    }

    #[test]
    fn parses_runc_style_lines() {
        let c = p("--root /r --log /l --log-format json create --bundle /b --pid-file /p x1");
        assert_eq!(c.root, PathBuf::from("/r"));
        assert_eq!(c.log_format, "json");
        match c.cmd {
            Some(Cmd::Create(a)) => {
                assert_eq!(a.bundle, PathBuf::from("/b"));
                assert_eq!(a.pid_file, Some(PathBuf::from("/p")));
                assert_eq!(a.id, "x1");
            }
            other => panic!("{other:?}"),
        }
        let c = p("exec -e A=1 --env=B=2 --tty id sh -c -x");
        match c.cmd {
            Some(Cmd::Exec(e)) => {
                assert_eq!(e.env, ["A=1", "B=2"]);
                assert!(e.tty);
                assert_eq!(e.args, ["sh", "-c", "-x"]);
            }
            other => panic!("{other:?}"),
        }
        match p("kill --all id KILL").cmd {
            Some(Cmd::Kill { all, id, signal }) => {
                assert!(all);
                assert_eq!(id, "id");
                assert_eq!(signal.as_deref(), Some("KILL"));
            }
            other => panic!("{other:?}"),
        }
        match p("run -bundle /b -d x").cmd {
            Some(Cmd::Run { create, detach }) => {
                assert!(detach);
                assert_eq!(create.id, "x");
                assert_eq!(create.bundle, PathBuf::from("/b"));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(vec!["create".into(), "--nope".into(), "x".into()]).is_err());
        assert!(p("--version").version);
    }
}
