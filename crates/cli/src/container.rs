//! Container commands: run, create, start, stop, ps, logs, exec, attach, inspect, cp, ...

use std::io::{IsTerminal, Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use clap::{ArgAction, Args};
use hyper::Method;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{self, enc, query, ApiError, Body, Hijacked};
use crate::format::{self, ago, ellipsis, human_size, short_id, tabwrite};
use crate::opts::{create_body, ContainerOpts, Deferred};
use crate::stream::{Demuxer, StreamKind};
use crate::template::Format;
use crate::tty;
use crate::Ctx;

/// Ends a command with an exit code (and optionally a message for stderr).
#[derive(Debug, thiserror::Error)]
#[error("exit status {code}")]
pub struct StatusError {
    /// The process exit code.
    pub code: i32,
    /// Printed to stderr when set.
    pub message: Option<String>,
}

fn status(code: i32, message: impl Into<String>) -> anyhow::Error {
    StatusError {
        code,
        message: Some(message.into()),
    }
    .into()
}

/// `berth run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    /// Proxy received signals to the process
    #[arg(long = "sig-proxy", num_args = 0..=1, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    pub sig_proxy: bool,
    #[command(flatten)]
    pub opts: Deferred<ContainerOpts>,
}

/// `berth create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    #[command(flatten)]
    pub opts: Deferred<ContainerOpts>,
}

/// `berth start`.
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach container's STDIN
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `berth stop` / `berth restart`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container
    #[arg(
        short = 't',
        long = "time",
        alias = "timeout",
        allow_hyphen_values = true
    )]
    pub time: Option<i64>,
    /// Signal to send to the container
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `berth kill`.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `berth rm`.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    /// Remove the specified link
    #[arg(short = 'l', long)]
    pub link: bool,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `berth ps`.
#[derive(Args, Debug, Default)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long = "last")]
    pub last: Option<i64>,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

/// `berth logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Show logs since timestamp or relative (e.g. 42m for 42 minutes)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative
    #[arg(long)]
    pub until: Option<String>,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show extra details provided to logs
    #[arg(long)]
    pub details: bool,
    /// Container
    pub container: String,
}

/// `berth exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Username or UID
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Give extended privileges to the command
    #[arg(long)]
    pub privileged: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    /// The container, then the command and its arguments
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        num_args = 2..,
        value_name = "CONTAINER COMMAND [ARG...]"
    )]
    pub args: Vec<String>,
}

/// `berth attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    pub no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", num_args = 0..=1, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    pub sig_proxy: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys")]
    pub detach_keys: Option<String>,
    /// Container
    pub container: String,
}

/// `berth inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Only inspect objects of the given type (container, image, volume, network)
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    pub size: bool,
    /// Names or ids
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `berth top`.
#[derive(Args, Debug)]
pub struct TopArgs {
    /// Container
    pub container: String,
    /// ps options
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// `berth stats`.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Containers
    pub containers: Vec<String>,
}

/// `berth cp`.
#[derive(Args, Debug)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Source: CONTAINER:SRC_PATH, a local path, or - (tar from stdin)
    pub src: String,
    /// Destination: CONTAINER:DEST_PATH, a local path, or - (tar to stdout)
    pub dst: String,
}

/// Commands that take only container names.
#[derive(Args, Debug)]
pub struct NamesArgs {
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `berth rename`.
#[derive(Args, Debug)]
pub struct RenameArgs {
    /// Container
    pub container: String,
    /// New name
    pub new_name: String,
}

/// `berth update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// Memory limit
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    /// CPUs in which to allow execution
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    /// Containers
    #[arg(required = true)]
    pub containers: Vec<String>,
}

/// `berth port`.
#[derive(Args, Debug)]
pub struct PortArgs {
    /// Container
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub port: Option<String>,
}

/// `berth export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Container
    pub container: String,
}

/// `berth commit`.
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long)]
    pub change: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, num_args = 0..=1, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    pub pause: bool,
    /// Container
    pub container: String,
    /// REPOSITORY[:TAG]
    pub repository: Option<String>,
}

fn path_of(name: &str) -> String {
    enc(name)
}

fn read_env_file(p: &str) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("open {p}: no such file or directory"))
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Creates a container, pulling its image when missing (per `--pull`); returns the id.
async fn create_container(ctx: &Ctx, opts: &ContainerOpts, auto_remove: bool) -> Result<String> {
    let mut body = create_body(opts, &env_lookup, &read_env_file)?;
    if auto_remove {
        body["HostConfig"]["AutoRemove"] = json!(true);
    }
    let image = opts.image().to_string();
    if image.is_empty() {
        bail!("image name cannot be empty");
    }
    match opts.pull.as_str() {
        "always" => crate::image::pull_image(ctx, &image, false, true).await?,
        "missing" | "never" => {}
        other => bail!(
            "invalid pull option: '{other}': must be one of \"always\", \"missing\" or \"never\""
        ),
    }
    let mut q = Vec::new();
    if let Some(n) = &opts.name {
        q.push(("name", n.clone()));
    }
    if let Some(p) = &opts.platform {
        q.push(("platform", p.clone()));
    }
    let path = format!("/containers/create{}", query(&q));
    let resp = match ctx.client.post_json(&path, Some(body.clone())).await {
        Ok(v) => v,
        Err(e) => {
            let missing_image = e.downcast_ref::<ApiError>().is_some_and(|a| {
                a.status == 404 && a.message.to_ascii_lowercase().contains("image")
            });
            if !missing_image || opts.pull == "never" {
                return Err(e);
            }
            eprintln!(
                "Unable to find image '{}' locally",
                crate::image::with_tag(&image)
            );
            crate::image::pull_image(ctx, &image, false, true).await?;
            ctx.client.post_json(&path, Some(body)).await?
        }
    };
    if let Some(ws) = resp.get("Warnings").and_then(Value::as_array) {
        for w in ws.iter().filter_map(Value::as_str) {
            eprintln!("WARNING: {w}");
        }
    }
    resp.get("Id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the daemon returned no container id"))
}

/// Maps a failed start to docker's exit code: 127 command not found, 126 cannot invoke,
/// else 125.
pub fn start_failure_code(message: &str) -> i32 {
    let m = message.to_ascii_lowercase();
    if m.contains("executable file not found")
        || m.contains("no such file or directory")
        || m.contains("command not found")
    {
        127
    } else if m.contains("permission denied")
        || m.contains("cannot execute")
        || m.contains("not executable")
    {
        126
    } else {
        125
    }
}

/// Copies the container's output to our stdout/stderr until the stream ends; forwards
/// stdin when `stdin` is set. Returns true when the user detached.
async fn pump(h: Hijacked, tty: bool, stdin: bool, detach_keys: Vec<u8>) -> Result<bool> {
    let Hijacked {
        mut reader,
        writer,
        multiplexed,
    } = h;
    let raw = multiplexed.map(|m| !m).unwrap_or(tty);
    let (det_tx, mut det_rx) = tokio::sync::oneshot::channel::<()>();
    if stdin {
        if let Some(mut w) = writer {
            tokio::spawn(async move {
                let mut input = tokio::io::stdin();
                let mut buf = vec![0u8; 8192];
                let mut watch = tty::DetachWatch::new(detach_keys);
                loop {
                    let n: usize = input.read(&mut buf).await.unwrap_or_default();
                    if n == 0 {
                        let _ = w.shutdown().await;
                        return;
                    }
                    let (fwd, detached) = watch.feed(&buf[..n]);
                    if !fwd.is_empty() && w.write_all(&fwd).await.is_err() {
                        return;
                    }
                    let _ = w.flush().await;
                    if detached {
                        let _ = det_tx.send(());
                        return;
                    }
                }
            });
        }
    } else {
        // Keep the write half open until the output ends.
        std::mem::forget(det_tx);
        drop(writer);
    }
    let output = async move {
        let mut buf = vec![0u8; 32 * 1024];
        let mut demux = Demuxer::new();
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if raw {
                let mut out = std::io::stdout().lock();
                out.write_all(&buf[..n])?;
                out.flush()?;
            } else {
                for (kind, data) in demux.feed(&buf[..n]) {
                    if kind == StreamKind::Stderr || kind == StreamKind::System {
                        let mut err = std::io::stderr().lock();
                        err.write_all(&data)?;
                        err.flush()?;
                    } else {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&data)?;
                        out.flush()?;
                    }
                }
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::pin!(output);
    tokio::select! {
        r = &mut output => { r?; return Ok(false) }
        // Err: the stdin task ended without a detach (stdin EOF); keep copying output.
        d = &mut det_rx => if d.is_ok() { return Ok(true) },
    }
    output.await?;
    Ok(false)
}

async fn resize(ctx: &Ctx, path: &str) {
    if let Some((h, w)) = tty::size() {
        let _ = ctx
            .client
            .post_json(&format!("{path}/resize?h={h}&w={w}"), None)
            .await;
    }
}

/// Keeps the remote TTY's size in step with ours (SIGWINCH).
fn watch_winch(ctx: &Ctx, path: String) -> Option<tokio::task::JoinHandle<()>> {
    let host_client = client::Client::new(&ctx.host_string()).ok()?;
    let mut sig =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()?;
    Some(tokio::spawn(async move {
        while sig.recv().await.is_some() {
            if let Some((h, w)) = tty::size() {
                let _ = host_client
                    .post_json(&format!("{path}/resize?h={h}&w={w}"), None)
                    .await;
            }
        }
    }))
}

/// Forwards the signals a user sends to `berth run`/`start -a` to the container
/// (docker's `--sig-proxy`).
fn proxy_signals(ctx: &Ctx, id: &str) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let client = client::Client::new(&ctx.host_string()).ok()?;
    let mut streams = Vec::new();
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ] {
        streams.push((signal(kind).ok()?, name));
    }
    let path = format!("/containers/{id}/kill");
    Some(tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(8);
        for (mut s, name) in streams {
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(name).await.is_err() {
                        return;
                    }
                }
            });
        }
        while let Some(name) = rx.recv().await {
            let _ = client
                .post_json(&format!("{path}?signal={name}"), None)
                .await;
        }
    }))
}

impl Ctx {
    fn host_string(&self) -> String {
        self.client.host().to_string()
    }
}

fn detach_keys(spec: &Option<String>) -> Result<Vec<u8>> {
    tty::parse_detach_keys(spec.as_deref().unwrap_or("ctrl-p,ctrl-q"))
}

async fn wait_exit(ctx: &Ctx, id: &str) -> Result<i32> {
    let v = ctx
        .client
        .post_json(&format!("/containers/{}/wait", path_of(id)), None)
        .await?;
    Ok(wait_code(&v))
}

/// The exit code in a wait response, printing its error message if it has one.
fn wait_code(v: &Value) -> i32 {
    if let Some(e) = v
        .get("Error")
        .and_then(|e| e.get("Message"))
        .and_then(Value::as_str)
    {
        if !e.is_empty() {
            eprintln!("{e}");
        }
    }
    v.get("StatusCode").and_then(Value::as_i64).unwrap_or(0) as i32
}

/// `berth run`.
pub async fn run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    let opts = &a.opts;
    if opts.tty && opts.interactive && !a.detach && !std::io::stdin().is_terminal() {
        bail!("the input device is not a TTY");
    }
    let keys = detach_keys(&a.detach_keys)?;
    // As docker: `--rm` is the daemon's AutoRemove, so the container goes as soon as it
    // exits, even if this client dies.
    let id = create_container(ctx, opts, opts.rm).await?;
    let cpath = format!("/containers/{id}");
    if a.detach {
        if let Err(e) = ctx.client.post_json(&format!("{cpath}/start"), None).await {
            return Err(map_start_error(e));
        }
        println!("{id}");
        return Ok(0);
    }
    let stdin = opts.interactive;
    let q = query(&[
        ("stream", "1".into()),
        ("stdin", if stdin { "1" } else { "0" }.into()),
        ("stdout", "1".into()),
        ("stderr", "1".into()),
    ]);
    // With AutoRemove the container may be gone by the time the program's output ends:
    // register the wait for its removal first (the daemon answers the headers once the
    // wait is registered), and read its exit code from that. Both requests go at once.
    let attach_path = format!("{cpath}/attach{q}");
    let attach = ctx.client.hijack(Method::POST, &attach_path, Body::Empty);
    let wait = async {
        if !opts.rm {
            return Ok(None);
        }
        ctx.client
            .request(
                Method::POST,
                &format!("{cpath}/wait?condition=removed"),
                Body::Empty,
                &[],
            )
            .await
            .map(Some)
    };
    let (hijacked, wait_resp) = tokio::join!(attach, wait);
    let (hijacked, wait_resp) = (hijacked?, wait_resp?);
    let _raw = if opts.tty && stdin {
        tty::RawMode::enter()
    } else {
        None
    };
    let removed = wait_resp.map(|resp| {
        tokio::spawn(async move {
            use http_body_util::BodyExt as _;
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(wait_code(&serde_json::from_slice(&body)?))
        })
    });
    if let Err(e) = ctx.client.post_json(&format!("{cpath}/start"), None).await {
        drop(_raw);
        if let Some(w) = removed {
            w.abort();
            let _ = ctx.client.delete(&format!("{cpath}?force=1&v=1")).await;
        }
        return Err(map_start_error(e));
    }
    let winch = if opts.tty {
        resize(ctx, &cpath).await;
        watch_winch(ctx, cpath.clone())
    } else {
        None
    };
    let proxy = if a.sig_proxy && !opts.tty {
        proxy_signals(ctx, &id)
    } else {
        None
    };
    let detached = pump(hijacked, opts.tty, stdin, keys).await?;
    drop(_raw);
    if let Some(w) = winch {
        w.abort();
    }
    if let Some(p) = proxy {
        p.abort();
    }
    if detached {
        return Ok(0);
    }
    match removed {
        Some(w) => w.await?,
        None => wait_exit(ctx, &id).await,
    }
}

fn map_start_error(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<ApiError>() {
        Some(api) => status(start_failure_code(&api.message), api.to_string()),
        None => e,
    }
}

/// `berth create`.
pub async fn create(ctx: &Ctx, a: CreateArgs) -> Result<i32> {
    let id = create_container(ctx, &a.opts, false).await?;
    println!("{id}");
    Ok(0)
}

/// `berth start`.
pub async fn start(ctx: &Ctx, a: StartArgs) -> Result<i32> {
    if a.attach || a.interactive {
        if a.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        let name = &a.containers[0];
        let info = ctx
            .client
            .get_json(&format!("/containers/{}/json", path_of(name)))
            .await?;
        let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
        let stdin = a.interactive && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
        let id = info["Id"].as_str().unwrap_or(name).to_string();
        let cpath = format!("/containers/{id}");
        let q = query(&[
            ("stream", "1".into()),
            ("stdin", if stdin { "1" } else { "0" }.into()),
            ("stdout", "1".into()),
            ("stderr", "1".into()),
        ]);
        let h = ctx
            .client
            .hijack(Method::POST, &format!("{cpath}/attach{q}"), Body::Empty)
            .await?;
        let _raw = if tty && stdin {
            tty::RawMode::enter()
        } else {
            None
        };
        ctx.client
            .post_json(&format!("{cpath}/start"), None)
            .await
            .map_err(map_start_error)?;
        if tty {
            resize(ctx, &cpath).await;
        }
        let proxy = if tty { None } else { proxy_signals(ctx, &id) };
        let detached = pump(h, tty, stdin, detach_keys(&a.detach_keys)?).await?;
        drop(_raw);
        if let Some(p) = proxy {
            p.abort();
        }
        if detached {
            return Ok(0);
        }
        return wait_exit(ctx, &id).await;
    }
    let mut failed = false;
    for c in &a.containers {
        match ctx
            .client
            .post_json(&format!("/containers/{}/start", path_of(c)), None)
            .await
        {
            Ok(_) => println!("{c}"),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

async fn for_each(
    ctx: &Ctx,
    names: &[String],
    f: impl Fn(&str) -> (Method, String),
) -> Result<i32> {
    let mut failed = false;
    for c in names {
        let (m, p) = f(c);
        match ctx.client.call(m, &p, Body::Empty).await {
            Ok(_) => println!("{c}"),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `berth stop` and `berth restart`.
pub async fn stop(ctx: &Ctx, a: StopArgs, verb: &str) -> Result<i32> {
    let mut q = Vec::new();
    if let Some(t) = a.time {
        q.push(("t", t.to_string()));
    }
    if let Some(s) = &a.signal {
        q.push(("signal", s.clone()));
    }
    let q = query(&q);
    for_each(ctx, &a.containers, |c| {
        (
            Method::POST,
            format!("/containers/{}/{verb}{q}", path_of(c)),
        )
    })
    .await
}

/// `berth kill`.
pub async fn kill(ctx: &Ctx, a: KillArgs) -> Result<i32> {
    let q = query(&[("signal", a.signal.clone())]);
    for_each(ctx, &a.containers, |c| {
        (Method::POST, format!("/containers/{}/kill{q}", path_of(c)))
    })
    .await
}

/// `berth rm`.
pub async fn rm(ctx: &Ctx, a: RmArgs) -> Result<i32> {
    let q = query(&[
        ("force", a.force.to_string()),
        ("v", a.volumes.to_string()),
        ("link", a.link.to_string()),
    ]);
    for_each(ctx, &a.containers, |c| {
        (Method::DELETE, format!("/containers/{}{q}", path_of(c)))
    })
    .await
}

/// `berth pause` / `berth unpause`.
pub async fn simple_post(ctx: &Ctx, a: NamesArgs, verb: &str) -> Result<i32> {
    for_each(ctx, &a.containers, |c| {
        (Method::POST, format!("/containers/{}/{verb}", path_of(c)))
    })
    .await
}

/// Parses repeated `--filter key=value` flags into the API's filters JSON.
pub fn filters_json(filters: &[String]) -> Result<Option<String>> {
    if filters.is_empty() {
        return Ok(None);
    }
    let mut m: Map<String, Value> = Map::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("bad format of filter (expected name=value)"))?;
        let e = m
            .entry(k.trim().to_ascii_lowercase())
            .or_insert_with(|| json!({}));
        if let Some(o) = e.as_object_mut() {
            o.insert(v.to_string(), json!(true));
        }
    }
    Ok(Some(serde_json::to_string(&m)?))
}

/// Formats a container's port list like docker (`0.0.0.0:8080->80/tcp, 443/tcp`).
pub fn format_ports(ports: &[Value]) -> String {
    let mut out: Vec<String> = Vec::new();
    for p in ports {
        let private = p["PrivatePort"].as_u64().unwrap_or(0);
        let typ = p["Type"].as_str().unwrap_or("tcp");
        let s = match (p["IP"].as_str(), p["PublicPort"].as_u64()) {
            (Some(ip), Some(public)) if !ip.is_empty() || public > 0 => {
                let ip = if ip.contains(':') {
                    format!("[{ip}]")
                } else {
                    ip.to_string()
                };
                format!("{ip}:{public}->{private}/{typ}")
            }
            (None, Some(public)) if public > 0 => format!("{public}->{private}/{typ}"),
            _ => format!("{private}/{typ}"),
        };
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out.join(", ")
}

/// The row object `ps --format` templates see (docker's field names).
pub fn ps_row(c: &Value, no_trunc: bool) -> Value {
    let id = c["Id"].as_str().unwrap_or("");
    let names: Vec<String> = c["Names"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|n| n.trim_start_matches('/').to_string())
                .filter(|n| no_trunc || !n.contains('/'))
                .collect()
        })
        .unwrap_or_default();
    let command = c["Command"].as_str().unwrap_or("");
    let command = if no_trunc {
        format!("\"{command}\"")
    } else {
        format!("\"{}\"", ellipsis(command, 20))
    };
    let mut image = c["Image"].as_str().unwrap_or("").to_string();
    if image.starts_with("sha256:") && !no_trunc {
        image = short_id(&image);
    }
    let created = c["Created"].as_i64().unwrap_or(0);
    let labels = c["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mounts = c["Mounts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let n = m["Name"].as_str().filter(|n| !n.is_empty());
                    let n = n.or(m["Source"].as_str()).unwrap_or("");
                    if no_trunc {
                        n.to_string()
                    } else {
                        ellipsis(n, 15)
                    }
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let networks = c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|m| m.keys().cloned().collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    let size = match (c["SizeRw"].as_f64(), c["SizeRootFs"].as_f64()) {
        (Some(rw), Some(root)) => format!("{} (virtual {})", human_size(rw), human_size(root)),
        (Some(rw), None) => human_size(rw),
        _ => String::new(),
    };
    json!({
        "ID": if no_trunc { id.to_string() } else { short_id(id) },
        "Names": names.join(","),
        "Image": image,
        "Command": command,
        "CreatedAt": chrono::DateTime::from_timestamp(created, 0)
            .map(|d| d.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
            .unwrap_or_default(),
        "RunningFor": ago(created),
        "Ports": format_ports(c["Ports"].as_array().map(Vec::as_slice).unwrap_or(&[])),
        "State": c["State"].as_str().unwrap_or(""),
        "Status": c["Status"].as_str().unwrap_or(""),
        "Size": size,
        "Labels": labels,
        "Mounts": mounts,
        "Networks": networks,
        "LocalVolumes": c["Mounts"].as_array().map(|a| a.iter().filter(|m| m["Type"] == "volume").count()).unwrap_or(0).to_string(),
    })
}

fn ps_headers() -> Map<String, Value> {
    headers(&[
        ("ID", "CONTAINER ID"),
        ("Names", "NAMES"),
        ("Image", "IMAGE"),
        ("Command", "COMMAND"),
        ("CreatedAt", "CREATED AT"),
        ("RunningFor", "CREATED"),
        ("Ports", "PORTS"),
        ("State", "STATE"),
        ("Status", "STATUS"),
        ("Size", "SIZE"),
        ("Labels", "LABELS"),
        ("Mounts", "MOUNTS"),
        ("Networks", "NETWORKS"),
        ("LocalVolumes", "LOCAL VOLUMES"),
    ])
}

/// `berth ps`.
pub async fn ps(ctx: &Ctx, a: PsArgs) -> Result<i32> {
    let mut q = Vec::new();
    if a.all {
        q.push(("all", "1".to_string()));
    }
    let limit = if a.latest { Some(1) } else { a.last };
    if let Some(n) = limit {
        q.push(("limit", n.to_string()));
    }
    if a.size {
        q.push(("size", "1".into()));
    }
    if let Some(f) = filters_json(&a.filter)? {
        q.push(("filters", f));
    }
    let list = ctx
        .client
        .get_json(&format!("/containers/json{}", query(&q)))
        .await?;
    let rows: Vec<Value> = list
        .as_array()
        .map(|l| l.iter().map(|c| ps_row(c, a.no_trunc)).collect())
        .unwrap_or_default();
    let fmt = if a.quiet {
        "{{.ID}}".to_string()
    } else if let Some(f) = a.format.clone().filter(|f| f != "table") {
        f
    } else if a.size {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}\t{{.Size}}".into()
    } else {
        "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}".into()
    };
    print_formatted(&fmt, &rows, &ps_headers())?;
    Ok(0)
}

/// Column headers of a table: field name → header text (`("ID", "CONTAINER ID")`).
pub fn headers(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, t)| (k.to_string(), json!(t)))
        .collect()
}

/// Renders `items` with a docker `--format` value (`json` is `{{json .}}`).
pub fn print_formatted(fmt: &str, items: &[Value], headers: &Map<String, Value>) -> Result<()> {
    let fmt = if fmt == "json" { "{{json .}}" } else { fmt };
    let f = Format::parse(fmt)?;
    let out = f.render(items, headers)?;
    let mut so = std::io::stdout().lock();
    so.write_all(out.as_bytes())?;
    so.flush()?;
    Ok(())
}

/// Turns docker's `--since`/`--until` values (unix seconds, RFC 3339, or a relative
/// duration like `10m`, `1h30m`) into unix seconds for the API.
pub fn time_arg(s: &str, now: i64) -> Result<String> {
    if s.chars().all(|c| c.is_ascii_digit() || c == '.') && !s.is_empty() {
        return Ok(s.to_string());
    }
    if let Some(t) = format::parse_rfc3339(s) {
        return Ok(t.to_string());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp().to_string());
        }
    }
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            chars.next();
            unit = "ms".into();
        }
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow!("invalid time value {s:?}"))?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => bail!("invalid time value {s:?}"),
        };
        any = true;
    }
    if !num.is_empty() || !any {
        bail!("invalid time value {s:?}");
    }
    Ok((now - total as i64).to_string())
}

/// `berth logs`.
pub async fn logs(ctx: &Ctx, a: LogsArgs) -> Result<i32> {
    let now = format::now_unix();
    let mut q = vec![
        ("stdout", "1".to_string()),
        ("stderr", "1".to_string()),
        ("tail", a.tail.clone()),
    ];
    if a.follow {
        q.push(("follow", "1".into()));
    }
    if a.timestamps {
        q.push(("timestamps", "1".into()));
    }
    if a.details {
        q.push(("details", "1".into()));
    }
    if let Some(s) = &a.since {
        q.push(("since", time_arg(s, now)?));
    }
    if let Some(s) = &a.until {
        q.push(("until", time_arg(s, now)?));
    }
    let cpath = format!("/containers/{}", path_of(&a.container));
    let resp = ctx
        .client
        .request(
            Method::GET,
            &format!("{cpath}/logs{}", query(&q)),
            Body::Empty,
            &[],
        )
        .await?;
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let raw = if ct.contains("multiplexed") {
        false
    } else if ct.contains("raw-stream") {
        true
    } else {
        let info = ctx.client.get_json(&format!("{cpath}/json")).await?;
        info["Config"]["Tty"].as_bool().unwrap_or(false)
    };
    let h = Hijacked {
        reader: Box::new(client::body_reader(resp.into_body())),
        writer: None,
        multiplexed: Some(!raw),
    };
    pump(h, raw, false, Vec::new()).await?;
    Ok(0)
}

/// `berth exec`.
pub async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<i32> {
    let container = &a.args[0];
    if container.starts_with('-') {
        bail!("unknown flag: {container}");
    }
    let cmd = &a.args[1..];
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(crate::opts::parse_env_file(
            &read_env_file(f)?,
            &env_lookup,
        )?);
    }
    env.extend(crate::opts::expand_env(&a.env, &env_lookup));
    let mut body = json!({
        "AttachStdin": a.interactive && !a.detach,
        "AttachStdout": !a.detach,
        "AttachStderr": !a.detach,
        "Tty": a.tty,
        "Cmd": cmd,
        "Env": env,
        "Privileged": a.privileged,
    });
    if let Some(w) = &a.workdir {
        body["WorkingDir"] = json!(w);
    }
    if let Some(u) = &a.user {
        body["User"] = json!(u);
    }
    if a.tty {
        if let Some((h, w)) = tty::size() {
            body["ConsoleSize"] = json!([h, w]);
        }
    }
    let created = ctx
        .client
        .post_json(
            &format!("/containers/{}/exec", path_of(container)),
            Some(body),
        )
        .await?;
    let id = created["Id"]
        .as_str()
        .ok_or_else(|| anyhow!("the daemon returned no exec id"))?
        .to_string();
    let start_body = json!({"Detach": a.detach, "Tty": a.tty});
    if a.detach {
        ctx.client
            .post_json(&format!("/exec/{id}/start"), Some(start_body))
            .await
            .map_err(map_start_error)?;
        return Ok(0);
    }
    let h = ctx
        .client
        .hijack(
            Method::POST,
            &format!("/exec/{id}/start"),
            Body::Json(start_body),
        )
        .await
        .map_err(map_start_error)?;
    let _raw = if a.tty && a.interactive {
        tty::RawMode::enter()
    } else {
        None
    };
    if a.tty {
        resize(ctx, &format!("/exec/{id}")).await;
    }
    let detached = pump(h, a.tty, a.interactive, detach_keys(&a.detach_keys)?).await?;
    drop(_raw);
    if detached {
        return Ok(0);
    }
    let info = ctx.client.get_json(&format!("/exec/{id}/json")).await?;
    Ok(info["ExitCode"].as_i64().unwrap_or(0) as i32)
}

/// `berth attach`.
pub async fn attach(ctx: &Ctx, a: AttachArgs) -> Result<i32> {
    let info = ctx
        .client
        .get_json(&format!("/containers/{}/json", path_of(&a.container)))
        .await?;
    if !info["State"]["Running"].as_bool().unwrap_or(false) {
        bail!("You cannot attach to a stopped container, start it first");
    }
    let tty = info["Config"]["Tty"].as_bool().unwrap_or(false);
    let stdin = !a.no_stdin && info["Config"]["OpenStdin"].as_bool().unwrap_or(false);
    let id = info["Id"].as_str().unwrap_or(&a.container).to_string();
    let cpath = format!("/containers/{id}");
    let q = query(&[
        ("stream", "1".into()),
        ("stdin", if stdin { "1" } else { "0" }.into()),
        ("stdout", "1".into()),
        ("stderr", "1".into()),
    ]);
    let h = ctx
        .client
        .hijack(Method::POST, &format!("{cpath}/attach{q}"), Body::Empty)
        .await?;
    let _raw = if tty && stdin {
        tty::RawMode::enter()
    } else {
        None
    };
    if tty {
        resize(ctx, &cpath).await;
    }
    let proxy = if a.sig_proxy && !tty {
        proxy_signals(ctx, &id)
    } else {
        None
    };
    let detached = pump(h, tty, stdin, detach_keys(&a.detach_keys)?).await?;
    drop(_raw);
    if let Some(p) = proxy {
        p.abort();
    }
    if detached {
        return Ok(0);
    }
    wait_exit(ctx, &id).await
}

/// Writes values as docker's indented JSON array.
pub fn print_json_array(items: &[Value]) -> Result<()> {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(&items, &mut ser)?;
    buf.push(b'\n');
    let mut so = std::io::stdout().lock();
    so.write_all(&buf)?;
    so.flush()?;
    Ok(())
}

async fn inspect_one(
    ctx: &Ctx,
    name: &str,
    kind: Option<&str>,
    size: bool,
) -> Result<Option<Value>> {
    let n = path_of(name);
    let kinds: &[&str] = match kind {
        Some(k) => match k {
            "container" => &["container"],
            "image" => &["image"],
            "volume" => &["volume"],
            "network" => &["network"],
            other => bail!("\"{other}\" is not a valid value for --type"),
        },
        None => &["container", "image", "network", "volume"],
    };
    for k in kinds {
        let path = match *k {
            "container" => format!("/containers/{n}/json{}", if size { "?size=1" } else { "" }),
            "image" => format!("/images/{n}/json"),
            "network" => format!("/networks/{n}"),
            _ => format!("/volumes/{n}"),
        };
        match ctx.client.get_json(&path).await {
            Ok(v) => return Ok(Some(v)),
            Err(e) => {
                if e.downcast_ref::<ApiError>()
                    .is_some_and(|a| a.status == 404)
                {
                    continue;
                }
                return Err(e);
            }
        }
    }
    Ok(None)
}

/// `berth inspect`.
pub async fn inspect(ctx: &Ctx, a: InspectArgs) -> Result<i32> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for name in &a.names {
        match inspect_one(ctx, name, a.kind.as_deref(), a.size).await? {
            Some(v) => found.push(v),
            None => missing.push(name.clone()),
        }
    }
    match &a.format {
        Some(f) if f != "json" => print_formatted(f, &found, &Map::new())?,
        _ => print_json_array(&found)?,
    }
    if missing.is_empty() {
        return Ok(0);
    }
    for m in &missing {
        let what = match a.kind.as_deref() {
            Some("container") => "container",
            Some("image") => "image",
            Some("volume") => "volume",
            Some("network") => "network",
            _ => "object",
        };
        eprintln!("Error: No such {what}: {m}");
    }
    Ok(1)
}

/// `berth top`.
pub async fn top(ctx: &Ctx, a: TopArgs) -> Result<i32> {
    let mut q = Vec::new();
    if !a.ps_args.is_empty() {
        q.push(("ps_args", a.ps_args.join(" ")));
    }
    let v = ctx
        .client
        .get_json(&format!(
            "/containers/{}/top{}",
            path_of(&a.container),
            query(&q)
        ))
        .await?;
    let mut text = String::new();
    let titles: Vec<&str> = v["Titles"]
        .as_array()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    text.push_str(&titles.join("\t"));
    text.push('\n');
    for p in v["Processes"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let cells: Vec<&str> = p
            .as_array()
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        text.push_str(&cells.join("\t"));
        text.push('\n');
    }
    print!("{}", tabwrite(&text));
    Ok(0)
}

/// The row `stats` prints for one stats sample.
pub fn stats_row(name: &str, s: &Value, no_trunc: bool) -> Value {
    let cpu = &s["cpu_stats"];
    let pre = &s["precpu_stats"];
    let cpu_delta = cpu["cpu_usage"]["total_usage"].as_f64().unwrap_or(0.0)
        - pre["cpu_usage"]["total_usage"].as_f64().unwrap_or(0.0);
    let sys_delta = cpu["system_cpu_usage"].as_f64().unwrap_or(0.0)
        - pre["system_cpu_usage"].as_f64().unwrap_or(0.0);
    let online = cpu["online_cpus"]
        .as_f64()
        .filter(|n| *n > 0.0)
        .or_else(|| {
            cpu["cpu_usage"]["percpu_usage"]
                .as_array()
                .map(|a| a.len() as f64)
        })
        .unwrap_or(1.0);
    let cpu_pct = if sys_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / sys_delta * online * 100.0
    } else {
        0.0
    };
    let mem = &s["memory_stats"];
    let inactive = mem["stats"]["inactive_file"]
        .as_f64()
        .or_else(|| mem["stats"]["total_inactive_file"].as_f64())
        .unwrap_or(0.0);
    let usage = (mem["usage"].as_f64().unwrap_or(0.0) - inactive).max(0.0);
    let limit = mem["limit"].as_f64().unwrap_or(0.0);
    let mem_pct = if limit > 0.0 {
        usage / limit * 100.0
    } else {
        0.0
    };
    let (mut rx, mut tx) = (0.0, 0.0);
    if let Some(nets) = s["networks"].as_object() {
        for n in nets.values() {
            rx += n["rx_bytes"].as_f64().unwrap_or(0.0);
            tx += n["tx_bytes"].as_f64().unwrap_or(0.0);
        }
    }
    let (mut rd, mut wr) = (0.0, 0.0);
    for e in s["blkio_stats"]["io_service_bytes_recursive"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        match e["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
            Some("read") => rd += e["value"].as_f64().unwrap_or(0.0),
            Some("write") => wr += e["value"].as_f64().unwrap_or(0.0),
            _ => {}
        }
    }
    let id = s["id"].as_str().unwrap_or("");
    json!({
        "Container": name,
        "ID": if no_trunc { id.to_string() } else { short_id(id) },
        "Name": s["name"].as_str().unwrap_or(name).trim_start_matches('/'),
        "CPUPerc": format!("{cpu_pct:.2}%"),
        "MemUsage": format!("{} / {}", format::bytes_size(usage), format::bytes_size(limit)),
        "MemPerc": format!("{mem_pct:.2}%"),
        "NetIO": format!("{} / {}", human_size(rx), human_size(tx)),
        "BlockIO": format!("{} / {}", human_size(rd), human_size(wr)),
        "PIDs": s["pids_stats"]["current"].as_u64().unwrap_or(0).to_string(),
    })
}

/// `berth stats`.
pub async fn stats(ctx: &Ctx, a: StatsArgs) -> Result<i32> {
    let mut headers = Map::new();
    for (k, v) in [
        ("Container", "CONTAINER"),
        ("ID", "CONTAINER ID"),
        ("Name", "NAME"),
        ("CPUPerc", "CPU %"),
        ("MemUsage", "MEM USAGE / LIMIT"),
        ("MemPerc", "MEM %"),
        ("NetIO", "NET I/O"),
        ("BlockIO", "BLOCK I/O"),
        ("PIDs", "PIDS"),
    ] {
        headers.insert(k.into(), json!(v));
    }
    let fmt = a.format.clone().unwrap_or_else(|| {
        "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}".into()
    });
    let mut prev: std::collections::HashMap<String, Value> = Default::default();
    loop {
        let names: Vec<String> = if a.containers.is_empty() {
            let q = if a.all { "?all=1" } else { "" };
            let list = ctx.client.get_json(&format!("/containers/json{q}")).await?;
            list.as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|c| c["Id"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        } else {
            a.containers.clone()
        };
        // One-shot readings of every container, a second apart; each row's CPU % is
        // from the reading before (so N containers take one second, not N).
        let mut rows = Vec::new();
        for n in &names {
            let mut s = ctx
                .client
                .get_json(&format!(
                    "/containers/{}/stats?stream=false&one-shot=true",
                    path_of(n)
                ))
                .await?;
            let id = s["id"].as_str().unwrap_or(n).to_string();
            if let Some(p) = prev.get(&id) {
                s["precpu_stats"] = p["cpu_stats"].clone();
                s["preread"] = p["read"].clone();
            }
            rows.push((id, n, s));
        }
        let first = prev.is_empty() && !rows.is_empty();
        prev = rows
            .iter()
            .map(|(id, _, s)| (id.clone(), s.clone()))
            .collect();
        if first {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            continue;
        }
        let rows: Vec<Value> = rows
            .iter()
            .map(|(_, n, s)| stats_row(n, s, a.no_trunc))
            .collect();
        if !a.no_stream {
            print!("\x1b[2J\x1b[H");
        }
        print_formatted(&fmt, &rows, &headers)?;
        if a.no_stream {
            return Ok(0);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Splits `CONTAINER:PATH` (a path with a `/` before any `:` is local).
pub fn split_cp_arg(s: &str) -> Option<(&str, &str)> {
    if s.starts_with('/') || s.starts_with('.') {
        return None;
    }
    let (c, p) = s.split_once(':')?;
    if c.is_empty() || c.contains('/') {
        return None;
    }
    Some((c, p))
}

/// Rewrites the first component of `p` to `new_first`; rejects non-normal components.
fn rebase(p: &Path, new_first: Option<&str>) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for (i, c) in p.components().enumerate() {
        match c {
            Component::Normal(n) => {
                if i == 0 {
                    if let Some(f) = new_first {
                        out.push(f);
                        continue;
                    }
                }
                out.push(n);
            }
            Component::CurDir => {}
            _ => bail!("archive entry {:?} escapes the destination", p),
        }
    }
    Ok(out)
}

/// Extracts a tar copied out of a container to `dst` with docker's rules: into `dst` when
/// it is an existing directory, else as `dst` (the archive's top entry renamed).
pub fn extract_copy(tar_bytes: &[u8], dst: &Path) -> Result<()> {
    let (base, rename) = if dst.is_dir() {
        (dst.to_path_buf(), None)
    } else {
        let parent = dst
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!("destination directory {:?} does not exist", parent);
        }
        let name = dst
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow!("invalid destination path {:?}", dst))?;
        (parent.to_path_buf(), Some(name.to_string()))
    };
    let mut ar = tar::Archive::new(tar_bytes);
    ar.set_preserve_permissions(true);
    ar.set_overwrite(true);
    for entry in ar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let rel = rebase(&path, rename.as_deref())?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = base.join(&rel);
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p)?;
        }
        entry
            .unpack(&target)
            .with_context(|| format!("extracting {}", target.display()))?;
    }
    Ok(())
}

/// Builds a tar of the local `src` with its top entry named `name`.
pub fn tar_path(src: &Path, name: &str) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let meta = std::fs::symlink_metadata(src).with_context(|| {
        format!(
            "could not find the file {} in the local filesystem",
            src.display()
        )
    })?;
    if meta.is_dir() {
        b.append_dir_all(name, src)?;
    } else {
        b.append_path_with_name(src, name)?;
    }
    Ok(b.into_inner()?)
}

/// `berth cp`.
pub async fn cp(ctx: &Ctx, a: CpArgs) -> Result<i32> {
    match (split_cp_arg(&a.src), split_cp_arg(&a.dst)) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
        (Some((c, p)), None) => {
            let q = query(&[("path", p.to_string())]);
            let body = ctx
                .client
                .call(
                    Method::GET,
                    &format!("/containers/{}/archive{q}", path_of(c)),
                    Body::Empty,
                )
                .await?;
            if a.dst == "-" {
                let mut so = std::io::stdout().lock();
                so.write_all(&body)?;
                so.flush()?;
            } else {
                extract_copy(&body, Path::new(&a.dst))?;
            }
            Ok(0)
        }
        (None, Some((c, p))) => {
            let cpath = format!("/containers/{}/archive", path_of(c));
            let tar = if a.src == "-" {
                let mut v = Vec::new();
                std::io::stdin().read_to_end(&mut v)?;
                ctx.client
                    .request(
                        Method::PUT,
                        &format!("{cpath}{}", query(&[("path", p.to_string())])),
                        Body::Raw(Bytes::from(v), "application/x-tar"),
                        &[],
                    )
                    .await?;
                return Ok(0);
            } else {
                let src = Path::new(&a.src);
                let stat = ctx
                    .client
                    .request(
                        Method::HEAD,
                        &format!("{cpath}{}", query(&[("path", p.to_string())])),
                        Body::Empty,
                        &[],
                    )
                    .await;
                let dst_is_dir = match stat {
                    Ok(resp) => resp
                        .headers()
                        .get("x-docker-container-path-stat")
                        .and_then(|h| h.to_str().ok())
                        .and_then(|h| base64::engine::general_purpose::STANDARD.decode(h).ok())
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        .and_then(|v| v["mode"].as_u64())
                        .is_some_and(|m| m & (1 << 31) != 0),
                    Err(e)
                        if e.downcast_ref::<ApiError>()
                            .is_some_and(|x| x.status == 404) =>
                    {
                        false
                    }
                    Err(e) => return Err(e),
                };
                let src_name = src
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(".")
                    .to_string();
                let (target_dir, name) = if dst_is_dir {
                    (p.to_string(), src_name)
                } else {
                    let pp = Path::new(p);
                    let parent = pp
                        .parent()
                        .map(|x| x.to_string_lossy().to_string())
                        .filter(|x| !x.is_empty())
                        .unwrap_or_else(|| "/".into());
                    let name = pp
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or(src_name);
                    (parent, name)
                };
                (tar_path(src, &name)?, target_dir)
            };
            let (bytes, dir) = tar;
            ctx.client
                .request(
                    Method::PUT,
                    &format!("{cpath}{}", query(&[("path", dir)])),
                    Body::Raw(Bytes::from(bytes), "application/x-tar"),
                    &[],
                )
                .await?;
            Ok(0)
        }
    }
}

/// `berth wait`.
pub async fn wait(ctx: &Ctx, a: NamesArgs) -> Result<i32> {
    let mut failed = false;
    for c in &a.containers {
        match wait_exit(ctx, c).await {
            Ok(code) => println!("{code}"),
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `berth rename`.
pub async fn rename(ctx: &Ctx, a: RenameArgs) -> Result<i32> {
    ctx.client
        .post_json(
            &format!(
                "/containers/{}/rename{}",
                path_of(&a.container),
                query(&[("name", a.new_name.clone())])
            ),
            None,
        )
        .await?;
    Ok(0)
}

/// `berth update`.
pub async fn update(ctx: &Ctx, a: UpdateArgs) -> Result<i32> {
    let mut body = Map::new();
    if let Some(m) = &a.memory {
        body.insert("Memory".into(), json!(format::ram_in_bytes(m)?));
    }
    if let Some(m) = &a.memory_swap {
        let v = if m == "-1" {
            -1
        } else {
            format::ram_in_bytes(m)?
        };
        body.insert("MemorySwap".into(), json!(v));
    }
    if let Some(c) = a.cpus {
        body.insert("NanoCpus".into(), json!((c * 1e9).round() as i64));
    }
    if let Some(c) = a.cpu_shares {
        body.insert("CpuShares".into(), json!(c));
    }
    if let Some(c) = &a.cpuset_cpus {
        body.insert("CpusetCpus".into(), json!(c));
    }
    if let Some(p) = a.pids_limit {
        body.insert("PidsLimit".into(), json!(p));
    }
    if let Some(r) = &a.restart {
        body.insert("RestartPolicy".into(), crate::opts::parse_restart(r)?);
    }
    let body = Value::Object(body);
    let mut failed = false;
    for c in &a.containers {
        match ctx
            .client
            .post_json(
                &format!("/containers/{}/update", path_of(c)),
                Some(body.clone()),
            )
            .await
        {
            Ok(v) => {
                for w in v["Warnings"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    if let Some(w) = w.as_str() {
                        eprintln!("WARNING: {w}");
                    }
                }
                println!("{c}");
            }
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Lines of `berth port` for a container's `NetworkSettings.Ports`.
pub fn port_lines(ports: &Value, filter: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(m) = ports.as_object() else {
        return out;
    };
    let want = filter.map(|f| {
        if f.contains('/') {
            f.to_string()
        } else {
            format!("{f}/tcp")
        }
    });
    let mut keys: Vec<&String> = m.keys().collect();
    keys.sort_by_key(|k| {
        let (p, proto) = k.split_once('/').unwrap_or((k, ""));
        (p.parse::<u32>().unwrap_or(0), proto.to_string())
    });
    for k in keys {
        if want.as_ref().is_some_and(|w| w != k) {
            continue;
        }
        for b in m[k].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            let ip = b["HostIp"].as_str().unwrap_or("");
            let ip = if ip.is_empty() { "0.0.0.0" } else { ip };
            let ip = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            let hp = b["HostPort"].as_str().unwrap_or("");
            if want.is_some() {
                out.push(format!("{ip}:{hp}"));
            } else {
                out.push(format!("{k} -> {ip}:{hp}"));
            }
        }
    }
    out
}

/// `berth port`.
pub async fn port(ctx: &Ctx, a: PortArgs) -> Result<i32> {
    let info = ctx
        .client
        .get_json(&format!("/containers/{}/json", path_of(&a.container)))
        .await?;
    let lines = port_lines(&info["NetworkSettings"]["Ports"], a.port.as_deref());
    if lines.is_empty() {
        if let Some(p) = &a.port {
            bail!("Error: No public port '{p}' published for {}", a.container);
        }
    }
    for l in lines {
        println!("{l}");
    }
    Ok(0)
}

/// Streams a response body to a file or stdout (refusing a terminal).
pub async fn body_to_output(
    resp: hyper::Response<hyper::body::Incoming>,
    output: Option<&str>,
) -> Result<()> {
    let mut sink: Box<dyn Write> = match output {
        Some(p) if p != "-" => {
            Box::new(std::fs::File::create(p).with_context(|| format!("open {p}"))?)
        }
        _ => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            Box::new(std::io::stdout().lock())
        }
    };
    let mut body = resp.into_body();
    while let Some(chunk) = client::next_chunk(&mut body).await? {
        sink.write_all(&chunk)?;
    }
    sink.flush()?;
    Ok(())
}

/// `berth export`.
pub async fn export(ctx: &Ctx, a: ExportArgs) -> Result<i32> {
    let resp = ctx
        .client
        .request(
            Method::GET,
            &format!("/containers/{}/export", path_of(&a.container)),
            Body::Empty,
            &[],
        )
        .await?;
    body_to_output(resp, a.output.as_deref()).await?;
    Ok(0)
}

/// `berth commit`.
pub async fn commit(ctx: &Ctx, a: CommitArgs) -> Result<i32> {
    let mut q = vec![
        ("container", a.container.clone()),
        ("pause", a.pause.to_string()),
    ];
    if let Some(r) = &a.repository {
        let (repo, tag) = crate::image::split_ref(r);
        q.push(("repo", repo));
        if let Some(t) = tag {
            q.push(("tag", t));
        }
    }
    if let Some(m) = &a.message {
        q.push(("comment", m.clone()));
    }
    if let Some(au) = &a.author {
        q.push(("author", au.clone()));
    }
    for c in &a.change {
        q.push(("changes", c.clone()));
    }
    let v = ctx
        .client
        .post_json(&format!("/commit{}", query(&q)), Some(json!({})))
        .await?;
    println!("{}", v["Id"].as_str().unwrap_or(""));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct R {
        #[command(flatten)]
        a: RunArgs,
    }

    #[derive(Parser)]
    struct E {
        #[command(flatten)]
        a: ExecArgs,
    }

    #[test]
    fn run_flags_stop_at_the_image() {
        let r = R::try_parse_from([
            "run", "-d", "--rm", "-e", "A=1", "img", "echo", "-n", "--rm", "-d",
        ])
        .unwrap();
        assert!(r.a.detach);
        assert!(r.a.opts.rm);
        assert_eq!(r.a.opts.image(), "img");
        assert_eq!(r.a.opts.command(), ["echo", "-n", "--rm", "-d"]);
        let r = R::try_parse_from(["run", "--sig-proxy=false", "img"]).unwrap();
        assert!(!r.a.sig_proxy);
        assert!(R::try_parse_from(["run", "-d"]).is_err());
    }

    fn fake_ctx(host: &str, dir: &Path) -> Ctx {
        Ctx {
            client: client::Client::new(host).unwrap(),
            config_dir: dir.to_path_buf(),
        }
    }

    /// A fake daemon for `run`: the image is missing until pulled; the container writes a
    /// line and exits 7.
    fn run_daemon() -> (
        tempfile::TempDir,
        String,
        std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) {
        use crate::client::testing::{fake_daemon, http};
        let pulled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        fake_daemon(move |line| {
            use std::sync::atomic::Ordering;
            if line.starts_with("POST /v1.47/containers/create") {
                if !pulled.load(Ordering::SeqCst) {
                    return http(
                        "404 Not Found",
                        r#"{"message":"No such image: busybox:latest"}"#,
                    );
                }
                return http("201 Created", r#"{"Id":"abc123","Warnings":[]}"#);
            }
            if line.starts_with("POST /v1.47/images/create?fromImage=busybox&tag=latest") {
                pulled.store(true, Ordering::SeqCst);
                return http(
                    "200 OK",
                    r#"{"status":"Pulling from library/busybox","id":"latest"}
{"status":"Status: Downloaded newer image for busybox:latest"}"#,
                );
            }
            if line.starts_with("POST /v1.47/containers/abc123/attach") {
                let mut v = b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n".to_vec();
                v.extend(crate::stream::frame(1, b"from the container\n"));
                return v;
            }
            if line.starts_with("POST /v1.47/containers/abc123/start") {
                return b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
            }
            if line.starts_with("POST /v1.47/containers/abc123/wait") {
                return http("200 OK", r#"{"StatusCode":7}"#);
            }
            if line.starts_with("DELETE /v1.47/containers/abc123") {
                return b"HTTP/1.1 204 No Content\r\n\r\n".to_vec();
            }
            http("404 Not Found", r#"{"message":"unexpected request"}"#)
        })
    }

    #[tokio::test]
    async fn run_pulls_attaches_starts_waits_and_removes() {
        let (dir, host, seen) = run_daemon();
        let ctx = fake_ctx(&host, dir.path());
        let r = R::try_parse_from(["run", "--rm", "busybox", "echo", "hi"]).unwrap();
        let code = run(&ctx, r.a).await.unwrap();
        assert_eq!(code, 7);
        let seen_full = seen.clone();
        let seen: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.split(['?', ' ']).take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            seen[..3],
            [
                "POST /v1.47/containers/create",
                "POST /v1.47/images/create",
                "POST /v1.47/containers/create",
            ]
        );
        // Attach and the removal wait go at once (either may arrive first), both before
        // the start.
        let mut both = seen[3..5].to_vec();
        both.sort();
        assert_eq!(
            both,
            [
                "POST /v1.47/containers/abc123/attach",
                "POST /v1.47/containers/abc123/wait",
            ]
        );
        assert_eq!(seen[5..], ["POST /v1.47/containers/abc123/start"]);
        // `--rm` is the daemon's AutoRemove; the wait is for the removal.
        let seen = seen_full.lock().unwrap().clone();
        assert!(
            seen.iter()
                .any(|l| l.starts_with("POST /v1.47/containers/abc123/wait?condition=removed")),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn run_never_pull_fails_on_missing_image() {
        let (dir, host, seen) = run_daemon();
        let ctx = fake_ctx(&host, dir.path());
        let r = R::try_parse_from(["run", "--pull", "never", "busybox"]).unwrap();
        let e = run(&ctx, r.a).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "Error response from daemon: No such image: busybox:latest"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn detached_run_prints_no_attach() {
        let (dir, host, seen) = run_daemon();
        let ctx = fake_ctx(&host, dir.path());
        let r = R::try_parse_from(["run", "-d", "--pull", "always", "busybox"]).unwrap();
        assert_eq!(run(&ctx, r.a).await.unwrap(), 0);
        let seen = seen.lock().unwrap().clone();
        assert!(
            seen.iter()
                .all(|l| !l.contains("/attach") && !l.contains("/wait")),
            "{seen:?}"
        );
        assert!(seen[0].starts_with("POST /v1.47/images/create"), "{seen:?}");
    }

    #[tokio::test]
    async fn exec_reports_the_exec_exit_code() {
        use crate::client::testing::{fake_daemon, http};
        let (dir, host, seen) = fake_daemon(|line| {
            if line.starts_with("POST /v1.47/containers/web/exec") {
                http("201 Created", r#"{"Id":"e1"}"#)
            } else if line.starts_with("POST /v1.47/exec/e1/start") {
                let mut v = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                    .to_vec();
                v.extend(crate::stream::frame(2, b"oops\n"));
                v
            } else if line.starts_with("GET /v1.47/exec/e1/json") {
                http("200 OK", r#"{"ExitCode":127,"Running":false}"#)
            } else {
                http("404 Not Found", r#"{"message":"No such container: other"}"#)
            }
        });
        let ctx = fake_ctx(&host, dir.path());
        let e = E::try_parse_from(["exec", "-e", "A=1", "web", "nosuch"]).unwrap();
        assert_eq!(exec(&ctx, e.a).await.unwrap(), 127);
        assert_eq!(seen.lock().unwrap().len(), 3);
        let e = E::try_parse_from(["exec", "other", "true"]).unwrap();
        let err = exec(&ctx, e.a).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error response from daemon: No such container: other"
        );
    }

    #[test]
    fn exec_flags() {
        let e =
            E::try_parse_from(["exec", "-it", "-e", "X=1", "ctr", "sh", "-c", "echo hi"]).unwrap();
        assert!(e.a.interactive && e.a.tty);
        assert_eq!(e.a.args, ["ctr", "sh", "-c", "echo hi"]);
        assert!(E::try_parse_from(["exec", "ctr"]).is_err());
    }

    #[test]
    fn exit_codes_for_start_failures() {
        assert_eq!(
            start_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(
            start_failure_code("open /x: no such file or directory"),
            127
        );
        assert_eq!(
            start_failure_code("exec /etc/passwd: permission denied"),
            126
        );
        assert_eq!(start_failure_code("cgroup setup failed"), 125);
    }

    #[test]
    fn filters() {
        assert_eq!(filters_json(&[]).unwrap(), None);
        let f = filters_json(&[
            "status=exited".into(),
            "label=a=b".into(),
            "status=created".into(),
        ])
        .unwrap()
        .unwrap();
        let v: Value = serde_json::from_str(&f).unwrap();
        assert_eq!(
            v,
            json!({"status": {"exited": true, "created": true}, "label": {"a=b": true}})
        );
        assert!(filters_json(&["nope".into()]).is_err());
    }

    #[test]
    fn ps_rows() {
        let now = format::now_unix();
        let c = json!({
            "Id": "0123456789abcdef0123", "Names": ["/web", "/other/link"], "Image": "busybox",
            "Command": "sh -c 'while true; do sleep 1; done'", "Created": now - 5,
            "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}, {"PrivatePort": 443, "Type": "tcp"}],
            "State": "running", "Status": "Up 5 seconds", "Labels": {"a": "b"}
        });
        let r = ps_row(&c, false);
        assert_eq!(r["ID"], "0123456789ab");
        assert_eq!(r["Names"], "web");
        assert_eq!(r["Command"], "\"sh -c 'while true; …\"");
        assert_eq!(r["RunningFor"], "5 seconds ago");
        assert_eq!(r["Ports"], "0.0.0.0:8080->80/tcp, 443/tcp");
        assert_eq!(r["Labels"], "a=b");
        let t = Format::parse("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}")
            .unwrap()
            .render(&[r], &ps_headers())
            .unwrap();
        let header = t.lines().next().unwrap();
        assert!(header.starts_with("CONTAINER ID   IMAGE     COMMAND                  CREATED         STATUS         PORTS"), "{header}");
        assert!(t.lines().nth(1).unwrap().starts_with("0123456789ab   busybox   \"sh -c 'while true; …\"   5 seconds ago   Up 5 seconds   "), "{t}");
    }

    #[test]
    fn time_args() {
        assert_eq!(time_arg("1700000000", 0).unwrap(), "1700000000");
        assert_eq!(time_arg("10m", 1000).unwrap(), "400");
        assert_eq!(time_arg("1h30m", 10_000).unwrap(), "4600");
        assert_eq!(time_arg("1970-01-01T00:01:00Z", 0).unwrap(), "60");
        assert!(time_arg("soon", 0).is_err());
        assert!(time_arg("10", 0).is_ok());
        assert!(time_arg("5x", 0).is_err());
    }

    #[test]
    fn cp_args() {
        assert_eq!(split_cp_arg("ctr:/etc/hosts"), Some(("ctr", "/etc/hosts")));
        assert_eq!(split_cp_arg("/tmp/a:b"), None);
        assert_eq!(split_cp_arg("./x:y"), None);
        assert_eq!(split_cp_arg("local"), None);
    }

    #[test]
    fn cp_roundtrip_and_rename() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("srcdir");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("sub/f.txt"), b"hello").unwrap();
        let tar = tar_path(&src, "srcdir").unwrap();
        // Into an existing directory: keeps the name.
        let into = d.path().join("into");
        std::fs::create_dir(&into).unwrap();
        extract_copy(&tar, &into).unwrap();
        assert_eq!(
            std::fs::read(into.join("srcdir/sub/f.txt")).unwrap(),
            b"hello"
        );
        // To a new path: renamed.
        let renamed = d.path().join("renamed");
        extract_copy(&tar, &renamed).unwrap();
        assert_eq!(std::fs::read(renamed.join("sub/f.txt")).unwrap(), b"hello");
        // Missing parent fails.
        assert!(extract_copy(&tar, &d.path().join("no/such/dir")).is_err());
        // A single file to a new name.
        let ftar = tar_path(&src.join("sub/f.txt"), "f.txt").unwrap();
        extract_copy(&ftar, &d.path().join("g.txt")).unwrap();
        assert_eq!(std::fs::read(d.path().join("g.txt")).unwrap(), b"hello");
    }

    #[test]
    fn cp_rejects_escaping_entries() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Write a raw ../ name (the safe setters refuse it).
        let name = b"../evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let dst = d.path().join("out");
        std::fs::create_dir(&dst).unwrap();
        assert!(extract_copy(&tar, &dst).is_err());
        assert!(!d.path().join("evil").exists());
    }

    #[test]
    fn ports_of_container() {
        let p = json!({"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "53/udp": [{"HostIp": "::", "HostPort": "5353"}], "9/tcp": null});
        assert_eq!(
            port_lines(&p, None),
            vec!["53/udp -> [::]:5353", "80/tcp -> 0.0.0.0:8080"]
        );
        assert_eq!(port_lines(&p, Some("80")), vec!["0.0.0.0:8080"]);
        assert!(port_lines(&p, Some("81")).is_empty());
    }

    #[test]
    fn stats_rows() {
        let s = json!({
            "id": "0123456789abcdef", "name": "/web",
            "cpu_stats": {"cpu_usage": {"total_usage": 2_000_000}, "system_cpu_usage": 100_000_000, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000}, "system_cpu_usage": 90_000_000},
            "memory_stats": {"usage": 2_097_152, "limit": 1_073_741_824u64, "stats": {"inactive_file": 1_048_576}},
            "networks": {"eth0": {"rx_bytes": 1200, "tx_bytes": 0}},
            "blkio_stats": {"io_service_bytes_recursive": [{"op": "Read", "value": 4096}, {"op": "Write", "value": 0}]},
            "pids_stats": {"current": 3}
        });
        let r = stats_row("web", &s, false);
        assert_eq!(r["CPUPerc"], "20.00%");
        assert_eq!(r["MemUsage"], "1MiB / 1GiB");
        assert_eq!(r["MemPerc"], "0.10%");
        assert_eq!(r["NetIO"], "1.2kB / 0B");
        assert_eq!(r["BlockIO"], "4.1kB / 0B");
        assert_eq!(r["PIDs"], "3");
        assert_eq!(r["Name"], "web");
    }
}
