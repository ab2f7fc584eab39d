//! `berth-runtime`: the runc-compatible OCI runtime command line.
//!
//! Same commands and flags as runc (`create`, `start`, `state`, `kill`, `delete`, `run`,
//! `exec`, `ps`, `list`, `features`, `spec`, `pause`, `resume`, `update`, `events`), so
//! containerd, docker, podman and the berth engine can drive it. Errors go to stderr and,
//! with `--log`, to that file (`--log-format json` writes runc's JSON lines, which
//! containerd reads back).
//!
//! The argument parser is a small hand-written one (see `args.rs`): it keeps the binary
//! small, which matters for a program started once per container operation.

#[path = "../runtime_cli/args.rs"]
mod args;

use anyhow::{anyhow, bail, Context};
use args::{Cli, Cmd, CreateArgs, ExecArgs};
use oci_spec::runtime::{Capability, Process};
use runtime::{CreateOptions, ExecOptions, Runtime};
use std::io::Write;

pub fn main() {
    let cli = match args::parse(std::env::args().skip(1).collect()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth-runtime: {e}\n\n{}", args::USAGE);
            std::process::exit(2);
        }
    };
    if cli.help {
        println!("{}", args::USAGE);
        return;
    }
    if cli.version {
        println!(
            "berth-runtime version {}\nspec: {}",
            env!("CARGO_PKG_VERSION"),
            runtime::state::OCI_VERSION
        );
        return;
    }
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            log_error(&cli, &msg);
            eprintln!("berth-runtime: {msg}");
            1
        }
    };
    std::process::exit(code);
}

fn log_error(cli: &Cli, msg: &str) {
    let Some(path) = &cli.log else {
        return;
    };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let time = runtime::util::now_rfc3339();
    let line = if cli.log_format == "json" {
        serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
    } else {
        format!("time=\"{time}\" level=error msg={msg:?}")
    };
    let _ = writeln!(f, "{line}");
}

fn create_opts(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn run(cli: &Cli) -> anyhow::Result<i32> {
    let rt = Runtime::new(&cli.root)
        .with_systemd_cgroup(cli.systemd_cgroup)
        .with_attach_warmup(true);
    let Some(cmd) = &cli.cmd else {
        bail!("no command given (try --help)");
    };
    match cmd {
        Cmd::Create(a) => {
            rt.create(&a.id, &create_opts(a))?;
        }
        Cmd::Start { id } => rt.start(id)?,
        Cmd::State { id } => print_json(&rt.state(id)?)?,
        Cmd::Kill { all, id, signal } => {
            let s = signal.as_deref().unwrap_or("SIGTERM");
            let sig =
                runtime::util::parse_signal(s).ok_or_else(|| anyhow!("unknown signal {s:?}"))?;
            rt.kill(id, sig, *all)?;
        }
        Cmd::Delete { force, id } => rt.delete(id, *force)?,
        Cmd::Run { create, detach } => {
            return Ok(rt.run(&create.id, &create_opts(create), *detach)?)
        }
        Cmd::Exec(a) => return exec(&rt, a),
        Cmd::Ps { format, id, .. } => {
            let pids = rt.ps(id)?;
            if format == "json" {
                print_json(&pids)?;
            } else {
                println!("{:>8} CMD", "PID");
                for p in pids {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    let cmd: Vec<String> = cmd
                        .split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect();
                    println!("{p:>8} {}", cmd.join(" "));
                }
            }
        }
        Cmd::List { format, quiet } => {
            let all = rt.list()?;
            if *quiet {
                for s in &all {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                print_json(&all)?;
            } else {
                println!("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER");
                for s in &all {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.id,
                        s.pid,
                        s.status,
                        s.bundle.display(),
                        s.created,
                        if s.owner.is_empty() { "root" } else { &s.owner }
                    );
                }
            }
        }
        Cmd::Features => print_json(&runtime::features())?,
        Cmd::Spec { bundle } => {
            let rootless = cli.rootless.as_deref() == Some("true");
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists; remove it first", path.display());
            }
            let text = serde_json::to_vec_pretty(&runtime::default_spec(rootless))?;
            std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        }
        Cmd::Pause { id } => rt.pause(id)?,
        Cmd::Resume { id } => rt.resume(id)?,
        Cmd::Update { resources, id } => {
            let data = match resources.as_deref() {
                None => bail!("update needs --resources FILE (or - for stdin)"),
                Some("-") => {
                    let mut s = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut s)?;
                    s
                }
                Some(f) => std::fs::read(f).with_context(|| format!("read {f}"))?,
            };
            let r: oci_spec::runtime::LinuxResources =
                serde_json::from_slice(&data).context("parse resources")?;
            rt.update(id, &r)?;
        }
        Cmd::Events { stats, id, .. } => {
            if !stats {
                bail!("only `events --stats` is supported");
            }
            let s = rt.stats(id)?;
            println!(
                "{}",
                serde_json::json!({"type": "stats", "id": id, "data": s})
            );
        }
    }
    Ok(0)
}

fn exec(rt: &Runtime, a: &ExecArgs) -> anyhow::Result<i32> {
    let process: Process = match &a.process {
        Some(p) => {
            let data = std::fs::read(p).with_context(|| format!("read {}", p.display()))?;
            serde_json::from_slice(&data).with_context(|| format!("parse {}", p.display()))?
        }
        None => {
            if a.args.is_empty() {
                bail!("exec needs a command (or --process)");
            }
            let mut p = rt.container_process(&a.id)?;
            p.set_args(Some(a.args.clone()));
            p.set_terminal(Some(a.tty));
            if let Some(c) = &a.cwd {
                p.set_cwd(c.clone());
            }
            let mut env = p.env().clone().unwrap_or_default();
            for e in &a.env {
                let key = e.split('=').next().unwrap_or("");
                env.retain(|x| x.split('=').next() != Some(key));
                env.push(e.clone());
            }
            p.set_env(Some(env));
            if let Some(u) = &a.user {
                let (uid, gid) = match u.split_once(':') {
                    Some((u, g)) => (u.parse()?, g.parse()?),
                    None => (u.parse()?, 0),
                };
                let user = p.user_mut();
                user.set_uid(uid);
                user.set_gid(gid);
            }
            if !a.additional_gids.is_empty() {
                p.user_mut()
                    .set_additional_gids(Some(a.additional_gids.clone()));
            }
            if !a.cap.is_empty() {
                let mut caps = p.capabilities().clone().unwrap_or_default();
                for c in &a.cap {
                    let cap: Capability = serde_json::from_value(serde_json::json!(c))
                        .with_context(|| format!("unknown capability {c}"))?;
                    for set in [
                        caps.bounding().clone(),
                        caps.effective().clone(),
                        caps.permitted().clone(),
                    ]
                    .iter_mut()
                    .enumerate()
                    {
                        let mut s = set.1.clone().unwrap_or_default();
                        s.insert(cap);
                        match set.0 {
                            0 => caps.set_bounding(Some(s)),
                            1 => caps.set_effective(Some(s)),
                            _ => caps.set_permitted(Some(s)),
                        };
                    }
                }
                p.set_capabilities(Some(caps));
            }
            if a.no_new_privs {
                p.set_no_new_privileges(Some(true));
            }
            p
        }
    };
    let opts = ExecOptions {
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        detach: a.detach,
        preserve_fds: a.preserve_fds,
    };
    Ok(rt.exec(&a.id, &process, &opts)?)
}
