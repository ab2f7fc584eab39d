//! A bare daemon launcher for tests and benchmarks (until `berth daemon` exists):
//! `berthd --root DIR --run-root DIR -H unix:///PATH [--runtime PATH] [--debug]`.

fn main() {
    let mut opts = daemon::DaemonOptions::default();
    let mut hosts = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => opts.root = args.next().unwrap_or_default().into(),
            "--run-root" => opts.run_root = args.next().unwrap_or_default().into(),
            "-H" | "--host" => hosts.push(args.next().unwrap_or_default()),
            "--runtime" => opts.runtime = args.next().map(Into::into),
            "--debug" => opts.debug = true,
            other => {
                eprintln!("berthd: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    if !hosts.is_empty() {
        opts.hosts = hosts;
    }
    if let Err(e) = daemon::run(opts) {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        eprintln!("berthd: {msg}");
        std::process::exit(1);
    }
}
