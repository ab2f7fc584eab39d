//! `berth`: the Docker-style command line, `berth daemon` and `berth registry serve`.
//!
//! Everything but `daemon` and `registry` is the client ([`cli`]), which talks to the
//! daemon over the Engine API only.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Berth: a Docker-compatible container engine.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about, disable_help_subcommand = true)]
struct Berth {
    #[command(flatten)]
    global: cli::GlobalOpts,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the berth daemon (the Docker Engine API on a unix socket)
    Daemon(DaemonArgs),
    /// Run an OCI registry
    #[command(subcommand)]
    Registry(RegistryCmd),
    #[command(flatten)]
    Cli(Box<cli::Command>),
}

#[derive(Args, Debug)]
struct DaemonArgs {
    /// Root directory of persistent state
    #[arg(long, default_value = "/var/lib/berth")]
    root: PathBuf,
    /// Root directory of runtime state and sockets
    #[arg(long = "run-root", default_value = "/run/berth")]
    run_root: PathBuf,
    /// Socket(s) to listen on (unix:///PATH); repeatable
    #[arg(short = 'H', long = "host")]
    hosts: Vec<String>,
    /// The OCI runtime binary (default: berth-runtime next to berth, then on PATH)
    #[arg(long)]
    runtime: Option<PathBuf>,
    /// Enable debug logging
    #[arg(short = 'D', long)]
    debug: bool,
    /// Device of the default bridge network (default berth0)
    #[arg(long)]
    bridge: Option<String>,
    /// Subnet of the default bridge network (CIDR, e.g. 172.30.0.0/16)
    #[arg(long = "bip", alias = "fixed-cidr")]
    bip: Option<String>,
    /// Prefix of the daemon's iptables chains (default BERTH)
    #[arg(long = "iptables-chain-prefix")]
    chain_prefix: Option<String>,
    /// The init binary that `--init` runs as pid 1 with a runtime other than berth-runtime
    /// (default: docker-init on PATH); berth-runtime has its own
    #[arg(long = "init-path")]
    init_path: Option<PathBuf>,
}

fn daemon(a: DaemonArgs) -> i32 {
    let hosts = if a.hosts.is_empty() {
        vec![cli::client::DEFAULT_HOST.to_string()]
    } else {
        a.hosts
    };
    let opts = daemon::DaemonOptions {
        root: a.root,
        run_root: a.run_root,
        hosts,
        runtime: a.runtime,
        debug: a.debug,
        bridge: a.bridge,
        bridge_subnet: a.bip,
        chain_prefix: a.chain_prefix,
        init_path: a.init_path,
    };
    match daemon::run(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth daemon: {}", error_chain(&e));
            1
        }
    }
}

#[derive(Subcommand, Debug)]
enum RegistryCmd {
    /// Serve an OCI distribution registry over HTTP
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: SocketAddr,
    /// Directory holding the registry's content
    #[arg(long)]
    root: PathBuf,
    /// htpasswd file (bcrypt entries) enabling basic authentication
    #[arg(long)]
    htpasswd: Option<PathBuf>,
}

fn registry(cmd: RegistryCmd) -> i32 {
    let RegistryCmd::Serve(a) = cmd;
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return 1;
        }
    };
    match rt.block_on(distribution::server::serve(a.addr, a.root, a.htpasswd)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("berth registry: {}", error_chain(&e));
            1
        }
    }
}

/// An error and its sources, joined with ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn main() {
    // Die quietly on a closed pipe (`berth ps | head`) like other unix tools, instead of
    // panicking in println!.
    // SAFETY: signal(2) with SIG_DFL installs no handler code; it runs before any thread
    // is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = match Berth::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
                _ => 125,
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let args = match Berth::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            std::process::exit(125);
        }
    };
    // Servers must survive a client that hangs up mid-response (a write to a closed
    // unix socket raises SIGPIPE): ignore it there, so the write fails with EPIPE.
    if matches!(args.command, Cmd::Daemon(_) | Cmd::Registry(_)) {
        // SAFETY: as above; SIG_IGN installs no handler code and no thread runs yet.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        }
    }
    let code = match args.command {
        Cmd::Daemon(d) => daemon(d),
        Cmd::Registry(r) => registry(r),
        Cmd::Cli(c) => cli::execute(&args.global, *c),
    };
    std::process::exit(code);
}
