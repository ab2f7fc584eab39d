//! The client half of `berth` alone (no daemon or registry linked in): handy for measuring
//! the CLI's own start-up cost, e.g. `hyperfine 'berth-cli -H unix:///... ps'`.

use clap::{Parser, Subcommand};

/// The berth client.
#[derive(Parser, Debug)]
#[command(name = "berth-cli")]
struct Cli {
    #[command(flatten)]
    global: cli::GlobalOpts,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    #[command(flatten)]
    Cli(cli::Command),
}

fn main() {
    let args = Cli::parse();
    let Cmd::Cli(c) = args.command;
    std::process::exit(cli::execute(&args.global, c));
}
