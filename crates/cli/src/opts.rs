//! `run`/`create` flags and their translation into a `POST /containers/create` body.
//!
//! The translation is pure (environment lookups are passed in), so every flag's mapping is
//! unit-tested: ports (`-p 127.0.0.1:8080:80/udp`), binds (`-v src:dst:ro`), mounts
//! (`--mount type=bind,...`), sizes (`--memory 512m`), CPUs (`--cpus 1.5` → `NanoCpus`),
//! ulimits, devices, restart policies and env files.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgAction, Args};
use serde_json::{json, Map, Value};

use crate::format::ram_in_bytes;

/// Flags whose clap definitions are built only when their subcommand is parsed or its
/// help shown ([`clap::Command::defer`]). clap's derive builds every subcommand's
/// arguments before it parses anything; the ~100 flags of [`ContainerOpts`], flattened
/// into `run`, `create`, `container run` and `container create`, made that build the
/// largest user-space cost of a short command such as `berth run --rm image true`.
/// Derefs to the flags.
#[derive(Debug, Default, Clone)]
pub struct Deferred<T>(pub T);

impl<T: Args> Args for Deferred<T> {
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args)
    }
    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        cmd.defer(T::augment_args_for_update)
    }
}

impl<T: clap::FromArgMatches> clap::FromArgMatches for Deferred<T> {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Deferred)
    }
    fn from_arg_matches_mut(m: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(Deferred)
    }
    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut clap::ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

impl<T> std::ops::Deref for Deferred<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Flags shared by `run` and `create` (docker's names and short forms).
#[derive(Args, Debug, Default, Clone)]
pub struct ContainerOpts {
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports
    #[arg(long)]
    pub expose: Vec<String>,
    /// Bind mount a volume
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container
    #[arg(long)]
    pub mount: Vec<String>,
    /// Connect a container to a network
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Add network-scoped alias for the container
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Restart policy to apply when a container exits
    #[arg(long)]
    pub restart: Option<String>,
    /// Container host name
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Set meta data on a container
    #[arg(short = 'l', long = "label")]
    pub label: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Security Options
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Run an init inside the container
    #[arg(long)]
    pub init: bool,
    /// Command to run to check health
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h)
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Maximum time to allow one check to run (ms|s|m|h)
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries")]
    pub health_retries: Option<i64>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h)
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Time between running the check during the start period (ms|s|m|h)
    #[arg(long = "health-start-interval")]
    pub health_start_interval: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Signal to stop the container
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<i64>,
    /// Memory limit
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    pub memory_swap: Option<String>,
    /// Number of CPUs
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus")]
    pub cpuset_cpus: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Optional parent cgroup for the container
    #[arg(long = "cgroup-parent")]
    pub cgroup_parent: Option<String>,
    /// Ulimit options
    #[arg(long)]
    pub ulimit: Vec<String>,
    /// Add a host device to the container
    #[arg(long)]
    pub device: Vec<String>,
    /// Size of /dev/shm
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Mount a tmpfs directory
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Logging driver for the container
    #[arg(long = "log-driver")]
    pub log_driver: Option<String>,
    /// Log driver options
    #[arg(long = "log-opt")]
    pub log_opt: Vec<String>,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Attach to STDIN, STDOUT or STDERR
    #[arg(short = 'a', long)]
    pub attach: Vec<String>,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host")]
    pub add_host: Vec<String>,
    /// Set custom DNS servers
    #[arg(long)]
    pub dns: Vec<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Container IPv4 address
    #[arg(long)]
    pub ip: Option<String>,
    /// Print help
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// The image, then the command and its arguments (everything after the image belongs
    /// to the command, as with docker)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    pub args: Vec<String>,
}

impl ContainerOpts {
    /// The image reference.
    pub fn image(&self) -> &str {
        self.args.first().map(String::as_str).unwrap_or("")
    }

    /// The command after the image.
    pub fn command(&self) -> &[String] {
        self.args.get(1..).unwrap_or(&[])
    }
}

/// Parses an env file: `KEY=VALUE` lines kept verbatim, bare `KEY` taken from `lookup`
/// (dropped when unset), blank lines and `#` comments skipped.
pub fn parse_env_file(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim_start();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.split_once('=') {
            Some((k, _)) => {
                if k.is_empty() {
                    bail!("invalid environment variable on line {}: {line}", n + 1);
                }
                if k.contains(char::is_whitespace) {
                    bail!("variable '{}' contains whitespaces", k);
                }
                out.push(l.to_string());
            }
            None => {
                let k = l.trim_end();
                if let Some(v) = lookup(k) {
                    out.push(format!("{k}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// Expands `-e` values: `K=V` verbatim, bare `K` from `lookup` (dropped when unset).
pub fn expand_env(vals: &[String], lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    vals.iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e.clone())
            } else {
                lookup(e).map(|v| format!("{e}={v}"))
            }
        })
        .collect()
}

fn split_port_proto(s: &str) -> (&str, &str) {
    match s.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (s, "tcp"),
    }
}

fn port_range(s: &str) -> Result<(u16, u16)> {
    let parse =
        |x: &str| -> Result<u16> { x.parse::<u16>().map_err(|_| anyhow!("invalid port {x:?}")) };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if b < a {
                bail!("invalid port range {s:?}");
            }
            Ok((a, b))
        }
        None => {
            let p = parse(s)?;
            Ok((p, p))
        }
    }
}

/// One `-p` value as (container port key like `80/tcp`, host ip, host port) entries.
pub fn parse_publish(spec: &str) -> Result<Vec<(String, String, String)>> {
    let (rest, proto) = split_port_proto(spec);
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        bail!("invalid proto: {proto}");
    }
    // Split off a bracketed IPv6 host address first.
    let (ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, after) = r
            .split_once("]:")
            .ok_or_else(|| anyhow!("invalid publish spec {spec:?}"))?;
        (ip.to_string(), after.to_string())
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), rest.to_string()),
            3 => (parts[0].to_string(), format!("{}:{}", parts[1], parts[2])),
            _ => bail!("invalid publish spec {spec:?}"),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h.to_string(), c.to_string()),
        None => (String::new(), rest.clone()),
    };
    if container.is_empty() {
        bail!("no port specified: {spec}<empty>");
    }
    let (c0, c1) = port_range(&container)?;
    let host_range = if host.is_empty() {
        None
    } else {
        Some(port_range(&host)?)
    };
    let mut out = Vec::new();
    for (i, cp) in (c0..=c1).enumerate() {
        let hp = match host_range {
            None => String::new(),
            Some((h0, h1)) if h1 - h0 == c1 - c0 => (h0 + i as u16).to_string(),
            Some((h0, h1)) if h0 == h1 => h0.to_string(),
            Some((h0, h1)) => format!("{h0}-{h1}"),
        };
        out.push((format!("{cp}/{proto}"), ip.clone(), hp));
    }
    Ok(out)
}

/// Parses a `--mount` value into an API `Mount` object.
pub fn parse_mount(spec: &str) -> Result<Value> {
    let mut m = Map::new();
    let mut typ = "volume".to_string();
    let mut bind = Map::new();
    let mut vol = Map::new();
    let mut vol_opts = Map::new();
    let mut tmpfs = Map::new();
    let mut labels = Map::new();
    for field in spec.split(',') {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let val = || {
            v.clone()
                .ok_or_else(|| anyhow!("invalid field '{field}' must be a key=value pair"))
        };
        let boolean = || -> Result<bool> {
            match v.as_deref() {
                None | Some("1") | Some("true") => Ok(true),
                Some("0") | Some("false") => Ok(false),
                Some(o) => bail!("invalid value for {k}: {o}"),
            }
        };
        match k.as_str() {
            "type" => typ = val()?,
            "source" | "src" => {
                m.insert("Source".into(), json!(val()?));
            }
            "target" | "destination" | "dst" => {
                m.insert("Target".into(), json!(val()?));
            }
            "readonly" | "ro" => {
                m.insert("ReadOnly".into(), json!(boolean()?));
            }
            "consistency" => {
                m.insert("Consistency".into(), json!(val()?));
            }
            "bind-propagation" => {
                bind.insert("Propagation".into(), json!(val()?));
            }
            "bind-nonrecursive" => {
                bind.insert("NonRecursive".into(), json!(boolean()?));
            }
            "volume-nocopy" => {
                vol.insert("NoCopy".into(), json!(boolean()?));
            }
            "volume-driver" => {
                vol.insert("DriverConfig".into(), json!({"Name": val()?}));
            }
            "volume-label" => {
                let kv = val()?;
                let (a, b) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                labels.insert(a.into(), json!(b));
            }
            "volume-opt" => {
                let kv = val()?;
                let (a, b) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                vol_opts.insert(a.into(), json!(b));
            }
            "volume-subpath" => {
                vol.insert("Subpath".into(), json!(val()?));
            }
            "tmpfs-size" => {
                tmpfs.insert("SizeBytes".into(), json!(ram_in_bytes(&val()?)?));
            }
            "tmpfs-mode" => {
                let mode = i64::from_str_radix(&val()?, 8).context("invalid tmpfs-mode")?;
                tmpfs.insert("Mode".into(), json!(mode));
            }
            other => bail!("unexpected key '{other}' in '{field}'"),
        }
    }
    if !matches!(typ.as_str(), "bind" | "volume" | "tmpfs") {
        bail!("invalid mount type {typ:?}");
    }
    if !m.contains_key("Target") {
        bail!("target is required");
    }
    if typ == "bind" && !m.contains_key("Source") {
        bail!("source is required when specifying bind mount");
    }
    m.insert("Type".into(), json!(typ));
    if !bind.is_empty() {
        m.insert("BindOptions".into(), Value::Object(bind));
    }
    if !vol_opts.is_empty() {
        vol.insert(
            "DriverConfig".into(),
            json!({"Name": vol.get("DriverConfig").and_then(|d| d.get("Name")).cloned().unwrap_or(json!("local")), "Options": vol_opts}),
        );
    }
    if !labels.is_empty() {
        vol.insert("Labels".into(), Value::Object(labels));
    }
    if !vol.is_empty() {
        m.insert("VolumeOptions".into(), Value::Object(vol));
    }
    if !tmpfs.is_empty() {
        m.insert("TmpfsOptions".into(), Value::Object(tmpfs));
    }
    Ok(Value::Object(m))
}

/// Parses `--ulimit name=soft[:hard]`.
pub fn parse_ulimit(spec: &str) -> Result<Value> {
    let (name, vals) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid ulimit argument: {spec}"))?;
    let parse = |s: &str| -> Result<i64> {
        s.parse::<i64>()
            .map_err(|_| anyhow!("invalid ulimit argument: {spec}"))
    };
    let (soft, hard) = match vals.split_once(':') {
        Some((s, h)) => (parse(s)?, parse(h)?),
        None => {
            let v = parse(vals)?;
            (v, v)
        }
    };
    if soft > hard {
        bail!("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}");
    }
    Ok(json!({"Name": name, "Soft": soft, "Hard": hard}))
}

/// Parses `--device host[:container[:perms]]`.
pub fn parse_device(spec: &str) -> Result<Value> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (host, ctr, perms) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, x] if x.chars().all(|c| "rwm".contains(c)) && !x.starts_with('/') => (*h, *h, *x),
        [h, c] => (*h, *c, "rwm"),
        [h, c, p] => (*h, *c, *p),
        _ => bail!("invalid device specification: {spec}"),
    };
    Ok(json!({"PathOnHost": host, "PathInContainer": ctr, "CgroupPermissions": perms}))
}

/// Parses `--restart no|always|unless-stopped|on-failure[:N]`.
pub fn parse_restart(spec: &str) -> Result<Value> {
    let (name, count) = match spec.split_once(':') {
        Some((n, c)) => (
            n,
            c.parse::<i64>().map_err(|_| {
                anyhow!("invalid restart policy format: maximum retry count must be an integer")
            })?,
        ),
        None => (spec, 0),
    };
    match name {
        "no" | "" => Ok(json!({"Name": "no", "MaximumRetryCount": 0})),
        "always" | "unless-stopped" => {
            if count != 0 {
                bail!("invalid restart policy format: maximum retry count cannot be used with restart policy '{name}'");
            }
            Ok(json!({"Name": name, "MaximumRetryCount": 0}))
        }
        "on-failure" => Ok(json!({"Name": name, "MaximumRetryCount": count})),
        _ => bail!("invalid restart policy format: unknown policy '{name}'"),
    }
}

/// A Go duration (`1h2m3.5s`, `300ms`, `10us`) in nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<i64> {
    let bad = || anyhow!("invalid duration {s:?}");
    if s == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let v: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += v * mult;
        rest = &rest[u..];
    }
    Ok(total as i64)
}

/// `Config.Healthcheck` from the `--health-*` flags (None: keep the image's).
fn healthcheck(opts: &ContainerOpts) -> Result<Option<Value>> {
    let any = opts.health_cmd.is_some()
        || opts.health_interval.is_some()
        || opts.health_timeout.is_some()
        || opts.health_retries.is_some()
        || opts.health_start_period.is_some()
        || opts.health_start_interval.is_some();
    if opts.no_healthcheck {
        if any {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(json!({"Test": ["NONE"]})));
    }
    if !any {
        return Ok(None);
    }
    let mut h = Map::new();
    if let Some(c) = &opts.health_cmd {
        h.insert("Test".into(), json!(["CMD-SHELL", c]));
    }
    for (key, v) in [
        ("Interval", &opts.health_interval),
        ("Timeout", &opts.health_timeout),
        ("StartPeriod", &opts.health_start_period),
        ("StartInterval", &opts.health_start_interval),
    ] {
        if let Some(v) = v {
            let ns = parse_go_duration(v)?;
            if ns < 0 {
                bail!("--health-{} cannot be negative", key.to_ascii_lowercase());
            }
            h.insert(key.into(), json!(ns));
        }
    }
    if let Some(r) = opts.health_retries {
        if r < 0 {
            bail!("--health-retries cannot be negative");
        }
        h.insert("Retries".into(), json!(r));
    }
    Ok(Some(Value::Object(h)))
}

fn key_values(vals: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    for l in vals {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        m.insert(k.to_string(), json!(v));
    }
    m
}

/// Builds the create body for `opts`; `lookup` resolves environment variables and
/// `read_file` reads env files (both injected for tests).
pub fn create_body(
    opts: &ContainerOpts,
    lookup: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Result<String>,
) -> Result<Value> {
    if opts.image().starts_with('-') {
        bail!("unknown flag: {}", opts.image());
    }
    let mut env = Vec::new();
    for f in &opts.env_file {
        env.extend(parse_env_file(&read_file(f)?, lookup)?);
    }
    env.extend(expand_env(&opts.env, lookup));

    let mut exposed: BTreeMap<String, Value> = BTreeMap::new();
    let mut bindings: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in &opts.publish {
        for (key, ip, hp) in parse_publish(p)? {
            exposed.insert(key.clone(), json!({}));
            bindings
                .entry(key)
                .or_default()
                .push(json!({"HostIp": ip, "HostPort": hp}));
        }
    }
    for e in &opts.expose {
        let (rest, proto) = split_port_proto(e);
        let (a, b) = port_range(rest)?;
        for p in a..=b {
            exposed.insert(format!("{p}/{proto}"), json!({}));
        }
    }

    let mut binds = Vec::new();
    let mut volumes = Map::new();
    for v in &opts.volume {
        if v.contains(':') {
            binds.push(json!(v));
        } else {
            volumes.insert(v.clone(), json!({}));
        }
    }
    let mounts = opts
        .mount
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<Vec<_>>>()?;

    let detached_stdio = !opts.attach.is_empty();
    let attach = |s: &str| -> bool {
        if detached_stdio {
            opts.attach.iter().any(|a| a.eq_ignore_ascii_case(s))
        } else {
            s != "stdin" || opts.interactive
        }
    };

    let mut config = Map::new();
    config.insert("Image".into(), json!(opts.image()));
    config.insert(
        "Hostname".into(),
        json!(opts.hostname.clone().unwrap_or_default()),
    );
    config.insert("AttachStdin".into(), json!(attach("stdin")));
    config.insert("AttachStdout".into(), json!(attach("stdout")));
    config.insert("AttachStderr".into(), json!(attach("stderr")));
    config.insert("Tty".into(), json!(opts.tty));
    config.insert("OpenStdin".into(), json!(opts.interactive));
    config.insert("StdinOnce".into(), json!(opts.interactive));
    config.insert("Env".into(), json!(env));
    if !opts.command().is_empty() {
        config.insert("Cmd".into(), json!(opts.command()));
    }
    if let Some(ep) = &opts.entrypoint {
        config.insert("Entrypoint".into(), json!([ep]));
    }
    if let Some(w) = &opts.workdir {
        config.insert("WorkingDir".into(), json!(w));
    }
    if let Some(u) = &opts.user {
        config.insert("User".into(), json!(u));
    }
    if !exposed.is_empty() {
        config.insert("ExposedPorts".into(), json!(exposed));
    }
    if !volumes.is_empty() {
        config.insert("Volumes".into(), Value::Object(volumes));
    }
    config.insert("Labels".into(), Value::Object(key_values(&opts.label)));
    if let Some(s) = &opts.stop_signal {
        config.insert("StopSignal".into(), json!(s));
    }
    if let Some(t) = opts.stop_timeout {
        config.insert("StopTimeout".into(), json!(t));
    }
    if let Some(h) = healthcheck(opts)? {
        config.insert("Healthcheck".into(), h);
    }

    let mut host = Map::new();
    host.insert("Binds".into(), json!(binds));
    if !mounts.is_empty() {
        host.insert("Mounts".into(), json!(mounts));
    }
    host.insert("PortBindings".into(), json!(bindings));
    host.insert("PublishAllPorts".into(), json!(opts.publish_all));
    host.insert(
        "NetworkMode".into(),
        json!(opts.network.clone().unwrap_or_else(|| "default".into())),
    );
    host.insert(
        "RestartPolicy".into(),
        match &opts.restart {
            Some(r) => parse_restart(r)?,
            None => json!({"Name": "no", "MaximumRetryCount": 0}),
        },
    );
    if opts.rm && opts.restart.as_deref().is_some_and(|r| r != "no") {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    host.insert("AutoRemove".into(), json!(false));
    host.insert("ReadonlyRootfs".into(), json!(opts.read_only));
    host.insert("Privileged".into(), json!(opts.privileged));
    if !opts.cap_add.is_empty() {
        host.insert("CapAdd".into(), json!(opts.cap_add));
    }
    if !opts.cap_drop.is_empty() {
        host.insert("CapDrop".into(), json!(opts.cap_drop));
    }
    if !opts.security_opt.is_empty() {
        host.insert("SecurityOpt".into(), json!(opts.security_opt));
    }
    if opts.init {
        host.insert("Init".into(), json!(true));
    }
    if let Some(m) = &opts.memory {
        host.insert("Memory".into(), json!(ram_in_bytes(m)?));
    }
    if let Some(m) = &opts.memory_swap {
        let v = if m == "-1" { -1 } else { ram_in_bytes(m)? };
        host.insert("MemorySwap".into(), json!(v));
    }
    if let Some(c) = opts.cpus {
        if c < 0.0 {
            bail!("invalid value {c} for --cpus");
        }
        host.insert("NanoCpus".into(), json!((c * 1e9).round() as i64));
    }
    if let Some(s) = opts.cpu_shares {
        host.insert("CpuShares".into(), json!(s));
    }
    if let Some(s) = &opts.cpuset_cpus {
        host.insert("CpusetCpus".into(), json!(s));
    }
    if let Some(p) = opts.pids_limit {
        host.insert("PidsLimit".into(), json!(p));
    }
    if let Some(p) = &opts.cgroup_parent {
        host.insert("CgroupParent".into(), json!(p));
    }
    if !opts.ulimit.is_empty() {
        let u = opts
            .ulimit
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<Vec<_>>>()?;
        host.insert("Ulimits".into(), json!(u));
    }
    if !opts.device.is_empty() {
        let d = opts
            .device
            .iter()
            .map(|d| parse_device(d))
            .collect::<Result<Vec<_>>>()?;
        host.insert("Devices".into(), json!(d));
    }
    if let Some(s) = &opts.shm_size {
        host.insert("ShmSize".into(), json!(ram_in_bytes(s)?));
    }
    if !opts.tmpfs.is_empty() {
        let mut t = Map::new();
        for spec in &opts.tmpfs {
            let (path, o) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
            t.insert(path.to_string(), json!(o));
        }
        host.insert("Tmpfs".into(), Value::Object(t));
    }
    if opts.log_driver.is_some() || !opts.log_opt.is_empty() {
        host.insert(
            "LogConfig".into(),
            json!({"Type": opts.log_driver.clone().unwrap_or_default(), "Config": key_values(&opts.log_opt)}),
        );
    }
    if !opts.add_host.is_empty() {
        host.insert("ExtraHosts".into(), json!(opts.add_host));
    }
    if !opts.dns.is_empty() {
        host.insert("Dns".into(), json!(opts.dns));
    }

    let mut body = Value::Object(config);
    body["HostConfig"] = Value::Object(host);
    if let Some(net) = &opts.network {
        if !opts.network_alias.is_empty() || opts.ip.is_some() {
            let mut ep = json!({"Aliases": opts.network_alias});
            if let Some(ip) = &opts.ip {
                ep["IPAMConfig"] = json!({"IPv4Address": ip});
            }
            body["NetworkingConfig"] = json!({"EndpointsConfig": {net.clone(): ep}});
        }
    } else if !opts.network_alias.is_empty() {
        bail!("network-scoped aliases are only supported for user-defined networks");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct T {
        #[command(flatten)]
        o: ContainerOpts,
    }

    #[test]
    fn health_flags() {
        assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_go_duration("250ms").unwrap(), 250_000_000);
        assert_eq!(parse_go_duration("1.5s").unwrap(), 1_500_000_000);
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("1x").is_err());
        let b = body(&[
            "--health-cmd",
            "true || false",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "img",
        ])
        .unwrap();
        assert_eq!(
            b["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "true || false"], "Interval": 1_000_000_000u64, "Retries": 2})
        );
        let b = body(&["--no-healthcheck", "img"]).unwrap();
        assert_eq!(b["Healthcheck"], json!({"Test": ["NONE"]}));
        assert!(body(&["img"]).unwrap().get("Healthcheck").is_none());
        assert!(body(&["--no-healthcheck", "--health-retries", "1", "img"]).is_err());
    }

    fn body(args: &[&str]) -> Result<Value> {
        let mut v = vec!["run"];
        v.extend_from_slice(args);
        let t = T::try_parse_from(v)?;
        let lookup = |k: &str| (k == "HOME_X").then(|| "/home/x".to_string());
        let read = |p: &str| -> Result<String> {
            if p == "envs" {
                Ok("# comment\n\nA=1\n  B=2 \nHOME_X\nUNSET\nC=x=y\n".into())
            } else {
                bail!("no such file {p}")
            }
        };
        create_body(&t.o, &lookup, &read)
    }

    #[test]
    fn ports() {
        let b = body(&[
            "-p",
            "127.0.0.1:8080:80/udp",
            "-p",
            "9000:90",
            "-p",
            "53",
            "img",
        ])
        .unwrap();
        let hc = &b["HostConfig"]["PortBindings"];
        assert_eq!(
            hc["80/udp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": "8080"}])
        );
        assert_eq!(hc["90/tcp"], json!([{"HostIp": "", "HostPort": "9000"}]));
        assert_eq!(hc["53/tcp"], json!([{"HostIp": "", "HostPort": ""}]));
        assert_eq!(
            b["ExposedPorts"],
            json!({"80/udp": {}, "90/tcp": {}, "53/tcp": {}})
        );
        assert_eq!(
            parse_publish("8000-8001:80-81").unwrap(),
            vec![
                ("80/tcp".into(), "".into(), "8000".into()),
                ("81/tcp".into(), "".into(), "8001".into())
            ]
        );
        assert_eq!(
            parse_publish("[::1]:8080:80").unwrap(),
            vec![("80/tcp".into(), "::1".into(), "8080".into())]
        );
        assert!(parse_publish("1:2:3:4").is_err());
        assert!(parse_publish("80/foo").is_err());
        assert!(parse_publish("abc").is_err());
    }

    #[test]
    fn volumes_and_mounts() {
        let b = body(&[
            "-v",
            "/src:/dst:ro",
            "-v",
            "/anon",
            "-v",
            "named:/data",
            "img",
        ])
        .unwrap();
        assert_eq!(
            b["HostConfig"]["Binds"],
            json!(["/src:/dst:ro", "named:/data"])
        );
        assert_eq!(b["Volumes"], json!({"/anon": {}}));
        let m = parse_mount("type=bind,src=/a,dst=/b,readonly").unwrap();
        assert_eq!(
            m,
            json!({"Type": "bind", "Source": "/a", "Target": "/b", "ReadOnly": true})
        );
        let m = parse_mount("type=tmpfs,destination=/t,tmpfs-size=64m,tmpfs-mode=1777").unwrap();
        assert_eq!(
            m["TmpfsOptions"],
            json!({"SizeBytes": 64 << 20, "Mode": 0o1777})
        );
        let m = parse_mount(
            "type=volume,source=v1,target=/v,volume-opt=o=size=1m,bind-propagation=rshared",
        )
        .unwrap();
        assert_eq!(
            m["VolumeOptions"]["DriverConfig"]["Options"],
            json!({"o": "size=1m"})
        );
        assert_eq!(m["BindOptions"]["Propagation"], json!("rshared"));
        assert!(parse_mount("type=bind,dst=/x").is_err());
        assert!(parse_mount("type=volume,src=x").is_err());
        assert!(parse_mount("type=nfs,dst=/x").is_err());
        assert!(parse_mount("type=bind,src=/a,dst=/b,bogus=1").is_err());
    }

    #[test]
    fn resources() {
        let b = body(&[
            "--memory",
            "512m",
            "--memory-swap",
            "-1",
            "--cpus",
            "1.5",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "0-1",
            "--pids-limit",
            "100",
            "--ulimit",
            "nofile=1024:2048",
            "--ulimit",
            "nproc=64",
            "--shm-size",
            "64m",
            "--device",
            "/dev/fuse",
            "--device",
            "/dev/sda:/dev/xvda:r",
            "img",
        ])
        .unwrap();
        let h = &b["HostConfig"];
        assert_eq!(h["Memory"], json!(512 * 1024 * 1024));
        assert_eq!(h["MemorySwap"], json!(-1));
        assert_eq!(h["NanoCpus"], json!(1_500_000_000i64));
        assert_eq!(h["CpuShares"], json!(512));
        assert_eq!(h["CpusetCpus"], json!("0-1"));
        assert_eq!(h["PidsLimit"], json!(100));
        assert_eq!(
            h["Ulimits"],
            json!([{"Name": "nofile", "Soft": 1024, "Hard": 2048}, {"Name": "nproc", "Soft": 64, "Hard": 64}])
        );
        assert_eq!(h["ShmSize"], json!(64 << 20));
        assert_eq!(
            h["Devices"][0],
            json!({"PathOnHost": "/dev/fuse", "PathInContainer": "/dev/fuse", "CgroupPermissions": "rwm"})
        );
        assert_eq!(
            h["Devices"][1],
            json!({"PathOnHost": "/dev/sda", "PathInContainer": "/dev/xvda", "CgroupPermissions": "r"})
        );
        assert!(parse_ulimit("nofile=2048:1024").is_err());
        assert!(parse_ulimit("nofile").is_err());
        assert!(body(&["--memory", "lots", "img"]).is_err());
    }

    #[test]
    fn env_and_config() {
        let b = body(&[
            "-e",
            "X=1",
            "-e",
            "HOME_X",
            "-e",
            "NOPE",
            "--env-file",
            "envs",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
            "--name",
            "n",
            "-h",
            "host1",
            "--label",
            "a=b",
            "--entrypoint",
            "/bin/sh",
            "--stop-signal",
            "SIGINT",
            "--stop-timeout",
            "3",
            "-it",
            "img",
            "echo",
            "-n",
            "hi",
        ])
        .unwrap();
        assert_eq!(
            b["Env"],
            json!([
                "A=1",
                "B=2 ",
                "HOME_X=/home/x",
                "C=x=y",
                "X=1",
                "HOME_X=/home/x"
            ])
        );
        assert_eq!(b["WorkingDir"], json!("/tmp"));
        assert_eq!(b["User"], json!("1000:1000"));
        assert_eq!(b["Hostname"], json!("host1"));
        assert_eq!(b["Labels"], json!({"a": "b"}));
        assert_eq!(b["Entrypoint"], json!(["/bin/sh"]));
        assert_eq!(b["Cmd"], json!(["echo", "-n", "hi"]));
        assert_eq!(b["StopSignal"], json!("SIGINT"));
        assert_eq!(b["StopTimeout"], json!(3));
        assert_eq!(b["Tty"], json!(true));
        assert_eq!(b["OpenStdin"], json!(true));
        assert_eq!(b["AttachStdin"], json!(true));
        assert_eq!(b["Image"], json!("img"));
        assert!(body(&["--env-file", "missing", "img"]).is_err());
        let e = body(&["--bogus", "img"]).unwrap_err();
        assert_eq!(e.to_string(), "unknown flag: --bogus");
    }

    #[test]
    fn env_file_errors() {
        let none = |_: &str| None;
        assert!(parse_env_file("=x\n", &none).is_err());
        assert!(parse_env_file("A B=x\n", &none).is_err());
        assert!(parse_env_file("B =x\n", &none).is_err());
    }

    #[test]
    fn security_network_restart() {
        let b = body(&[
            "--privileged",
            "--read-only",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "seccomp=unconfined",
            "--init",
            "--network",
            "n1",
            "--network-alias",
            "web",
            "--restart",
            "on-failure:3",
            "--tmpfs",
            "/run:size=1m",
            "--log-opt",
            "max-size=1m",
            "img",
        ])
        .unwrap();
        let h = &b["HostConfig"];
        assert_eq!(h["Privileged"], json!(true));
        assert_eq!(h["ReadonlyRootfs"], json!(true));
        assert_eq!(h["CapAdd"], json!(["NET_ADMIN"]));
        assert_eq!(h["CapDrop"], json!(["ALL"]));
        assert_eq!(h["SecurityOpt"], json!(["seccomp=unconfined"]));
        assert_eq!(h["Init"], json!(true));
        assert_eq!(h["NetworkMode"], json!("n1"));
        assert_eq!(
            h["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
        assert_eq!(h["Tmpfs"], json!({"/run": "size=1m"}));
        assert_eq!(h["LogConfig"]["Config"], json!({"max-size": "1m"}));
        assert_eq!(
            b["NetworkingConfig"]["EndpointsConfig"]["n1"]["Aliases"],
            json!(["web"])
        );
        assert!(body(&["--rm", "--restart", "always", "img"]).is_err());
        assert!(body(&["--restart", "sometimes", "img"]).is_err());
        assert!(body(&["--network-alias", "x", "img"]).is_err());
    }
}
