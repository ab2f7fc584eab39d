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
    /// Run an OCI registry
    #[command(subcommand)]
    Registry(RegistryCmd),
    #[command(flatten)]
    Cli(cli::Command),
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
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
    let code = match args.command {
        Cmd::Registry(r) => registry(r),
        Cmd::Cli(c) => cli::execute(&args.global, c),
    };
    std::process::exit(code);
}
