//! System, volume and network commands: version, info, events, df, prune, volume *, network *.

use std::io::{BufRead, Write};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::client::{self, enc, query};
use crate::container::{filters_json, headers, print_formatted, print_json_array};
use crate::format::{bytes_size, human_size, short_id};
use crate::stream::JsonStream;
use crate::Ctx;

/// Commands that only take `--format`.
#[derive(Args, Debug)]
pub struct FormatArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

/// `berth events`.
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    /// Show all events created since timestamp
    #[arg(long)]
    pub since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long)]
    pub until: Option<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
}

/// `prune` commands.
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all unused objects, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Prune volumes too (system prune)
    #[arg(long)]
    pub volumes: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long)]
    pub filter: Vec<String>,
}

/// `berth volume ...`.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume
    Create {
        /// Specify volume driver name
        #[arg(short = 'd', long, default_value = "local")]
        driver: String,
        /// Set driver specific options
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        /// Set metadata for a volume
        #[arg(long)]
        label: Vec<String>,
        /// Volume name
        name: Option<String>,
    },
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only display volume names
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Provide filter values
        #[arg(short = 'f', long)]
        filter: Vec<String>,
        /// Format output using a custom template
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on one or more volumes
    Inspect {
        /// Format output using a custom template
        #[arg(short = 'f', long)]
        format: Option<String>,
        /// Volumes
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm {
        /// Force the removal of one or more volumes
        #[arg(short = 'f', long)]
        force: bool,
        /// Volumes
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused local volumes
    Prune(PruneArgs),
}

/// `berth network ...`.
#[derive(Subcommand, Debug)]
pub enum NetworkCommand {
    /// Create a network
    Create {
        /// Driver to manage the Network
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format that represents a network segment
        #[arg(long)]
        subnet: Vec<String>,
        /// IPv4 or IPv6 Gateway for the master subnet
        #[arg(long)]
        gateway: Vec<String>,
        /// Allocate container ip from a sub-range
        #[arg(long = "ip-range")]
        ip_range: Vec<String>,
        /// Restrict external access to the network
        #[arg(long)]
        internal: bool,
        /// Enable manual container attachment
        #[arg(long)]
        attachable: bool,
        /// Enable or disable IPv6 networking
        #[arg(long)]
        ipv6: bool,
        /// Set metadata on a network
        #[arg(long)]
        label: Vec<String>,
        /// Set driver specific options
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        /// Network name
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only display network IDs
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Do not truncate the output
        #[arg(long = "no-trunc")]
        no_trunc: bool,
        /// Provide filter values
        #[arg(short = 'f', long)]
        filter: Vec<String>,
        /// Format output using a custom template
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on one or more networks
    Inspect {
        /// Format output using a custom template
        #[arg(short = 'f', long)]
        format: Option<String>,
        /// Networks
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove one or more networks
    #[command(alias = "remove")]
    Rm {
        /// Networks
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Connect a container to a network
    Connect {
        /// Add network-scoped alias for the container
        #[arg(long)]
        alias: Vec<String>,
        /// IPv4 address
        #[arg(long)]
        ip: Option<String>,
        /// Network
        network: String,
        /// Container
        container: String,
    },
    /// Disconnect a container from a network
    Disconnect {
        /// Force the container to disconnect from a network
        #[arg(short = 'f', long)]
        force: bool,
        /// Network
        network: String,
        /// Container
        container: String,
    },
    /// Remove all unused networks
    Prune(PruneArgs),
}

/// `berth system ...`.
#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show docker disk usage
    Df {
        /// Show detailed information on space usage
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Format output using a custom template
        #[arg(long)]
        format: Option<String>,
    },
    /// Remove unused data
    Prune(PruneArgs),
    /// Display system-wide information
    Info(FormatArgs),
    /// Get real time events from the server
    Events(EventsArgs),
}

fn key_values(vals: &[String]) -> Map<String, Value> {
    let mut m = Map::new();
    for l in vals {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        m.insert(k.to_string(), json!(v));
    }
    m
}

/// `berth version`.
pub async fn version(ctx: &Ctx, a: FormatArgs) -> Result<i32> {
    let client_info = json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": client::DEFAULT_API_VERSION,
        "Os": std::env::consts::OS,
        "Arch": std::env::consts::ARCH,
    });
    let server = ctx.client.get_json("/version").await;
    if let Some(f) = &a.format {
        let data = json!({"Client": client_info, "Server": server.as_ref().ok()});
        print_formatted(f, &[data], &Map::new())?;
        return server.map(|_| 0);
    }
    println!("Client:");
    println!(" Version:           {}", env!("CARGO_PKG_VERSION"));
    println!(" API version:       {}", client::DEFAULT_API_VERSION);
    println!(
        " OS/Arch:           {}/{}",
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    println!();
    let s = server?;
    println!("Server:");
    println!(" Engine:");
    println!(
        "  Version:          {}",
        s["Version"].as_str().unwrap_or("")
    );
    println!(
        "  API version:      {} (minimum version {})",
        s["ApiVersion"].as_str().unwrap_or(""),
        s["MinAPIVersion"].as_str().unwrap_or("")
    );
    println!(
        "  OS/Arch:          {}/{}",
        s["Os"].as_str().unwrap_or(""),
        s["Arch"].as_str().unwrap_or("")
    );
    if let Some(k) = s["KernelVersion"].as_str() {
        println!("  Kernel Version:   {k}");
    }
    Ok(0)
}

/// `berth info`.
pub async fn info(ctx: &Ctx, a: FormatArgs) -> Result<i32> {
    let v = ctx.client.get_json("/info").await?;
    if let Some(f) = &a.format {
        print_formatted(f, &[v], &Map::new())?;
        return Ok(0);
    }
    let s = |k: &str| match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!(" Context:    default");
    println!();
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    println!(" Logging Driver: {}", s("LoggingDriver"));
    println!(" Cgroup Driver: {}", s("CgroupDriver"));
    println!(" Cgroup Version: {}", s("CgroupVersion"));
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" OSType: {}", s("OSType"));
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(
        " Total Memory: {}",
        bytes_size(v["MemTotal"].as_f64().unwrap_or(0.0))
    );
    println!(" Name: {}", s("Name"));
    println!(" ID: {}", s("ID"));
    println!(" Docker Root Dir: {}", s("DockerRootDir"));
    println!(" Debug Mode: {}", s("Debug"));
    Ok(0)
}

/// Docker's default one-line event display.
pub fn event_line(e: &Value) -> String {
    let nanos = e["timeNano"]
        .as_i64()
        .unwrap_or_else(|| e["time"].as_i64().unwrap_or(0) * 1_000_000_000);
    let ts =
        chrono::DateTime::from_timestamp(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32)
            .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string())
            .unwrap_or_default();
    let typ = e["Type"].as_str().unwrap_or("");
    let action = e["Action"].as_str().or(e["status"].as_str()).unwrap_or("");
    let id = e["Actor"]["ID"].as_str().or(e["id"].as_str()).unwrap_or("");
    let attrs = e["Actor"]["Attributes"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    if attrs.is_empty() {
        format!("{ts} {typ} {action} {id}")
    } else {
        format!("{ts} {typ} {action} {id} ({attrs})")
    }
}

/// `berth events`.
pub async fn events(ctx: &Ctx, a: EventsArgs) -> Result<i32> {
    let now = crate::format::now_unix();
    let mut q = Vec::new();
    if let Some(s) = &a.since {
        q.push(("since", crate::container::time_arg(s, now)?));
    }
    if let Some(s) = &a.until {
        q.push(("until", crate::container::time_arg(s, now)?));
    }
    if let Some(f) = filters_json(&a.filter)? {
        q.push(("filters", f));
    }
    let resp = ctx
        .client
        .request(
            hyper::Method::GET,
            &format!("/events{}", query(&q)),
            client::Body::Empty,
            &[],
        )
        .await?;
    let tmpl = match &a.format {
        Some(f) => Some(crate::template::Format::parse(if f == "json" {
            "{{json .}}"
        } else {
            f
        })?),
        None => None,
    };
    let mut dec = JsonStream::new();
    let mut body = resp.into_body();
    while let Some(chunk) = client::next_chunk(&mut body).await? {
        for e in dec.feed(&chunk)? {
            let line = match &tmpl {
                Some(t) => t.template.render(&e)?,
                None => event_line(&e),
            };
            let mut so = std::io::stdout().lock();
            writeln!(so, "{line}")?;
            so.flush()?;
        }
    }
    Ok(0)
}

fn confirm(warning: &str) -> Result<bool> {
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes" | "Yes"))
}

/// Prints a prune result section and returns the space reclaimed.
fn print_pruned(title: &str, items: &[String], space: u64) -> u64 {
    if !items.is_empty() {
        println!("{title}:");
        for i in items {
            println!("{i}");
        }
        println!();
    }
    space
}

async fn prune_kind(ctx: &Ctx, kind: &str, a: &PruneArgs) -> Result<u64> {
    let mut filters = a.filter.clone();
    if kind == "images" {
        filters.push(format!("dangling={}", !a.all));
    }
    if kind == "volumes" && a.all {
        filters.push("all=true".into());
    }
    let q = match filters_json(&filters)? {
        Some(f) => query(&[("filters", f)]),
        None => String::new(),
    };
    let v = ctx
        .client
        .post_json(&format!("/{kind}/prune{q}"), None)
        .await?;
    let space = v["SpaceReclaimed"].as_u64().unwrap_or(0);
    let strs = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(match kind {
        "containers" => print_pruned("Deleted Containers", &strs("ContainersDeleted"), space),
        "volumes" => print_pruned("Deleted Volumes", &strs("VolumesDeleted"), space),
        "networks" => print_pruned("Deleted Networks", &strs("NetworksDeleted"), space),
        _ => {
            let mut items = Vec::new();
            for d in v["ImagesDeleted"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                if let Some(u) = d["Untagged"].as_str() {
                    items.push(format!("untagged: {u}"));
                }
                if let Some(x) = d["Deleted"].as_str() {
                    items.push(format!("deleted: {x}"));
                }
            }
            print_pruned("Deleted Images", &items, space)
        }
    })
}

/// `berth container prune`, `image prune`, `volume prune`, `network prune`.
pub async fn prune(ctx: &Ctx, a: PruneArgs, kind: &str) -> Result<i32> {
    let warning = match kind {
        "containers" => "WARNING! This will remove all stopped containers.",
        "volumes" if a.all => "WARNING! This will remove all local volumes not used by at least one container.",
        "volumes" => "WARNING! This will remove anonymous local volumes not used by at least one container.",
        "networks" => "WARNING! This will remove all custom networks not used by at least one container.",
        _ if a.all => "WARNING! This will remove all images without at least one container associated to them.",
        _ => "WARNING! This will remove all dangling images.",
    };
    if !a.force && !confirm(warning)? {
        return Ok(0);
    }
    let space = prune_kind(ctx, kind, &a).await?;
    if kind != "networks" {
        println!("Total reclaimed space: {}", human_size(space as f64));
    }
    Ok(0)
}

/// `berth volume ...`.
pub async fn volume(ctx: &Ctx, c: VolumeCommand) -> Result<i32> {
    match c {
        VolumeCommand::Create {
            driver,
            opt,
            label,
            name,
        } => {
            let mut body = json!({"Driver": driver, "DriverOpts": key_values(&opt), "Labels": key_values(&label)});
            if let Some(n) = name {
                body["Name"] = json!(n);
            }
            let v = ctx.client.post_json("/volumes/create", Some(body)).await?;
            println!("{}", v["Name"].as_str().unwrap_or(""));
            Ok(0)
        }
        VolumeCommand::Ls {
            quiet,
            filter,
            format,
        } => {
            let q = match filters_json(&filter)? {
                Some(f) => query(&[("filters", f)]),
                None => String::new(),
            };
            let v = ctx.client.get_json(&format!("/volumes{q}")).await?;
            let rows: Vec<Value> = v["Volumes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|vol| {
                            json!({
                                "Name": vol["Name"], "Driver": vol["Driver"], "Scope": vol["Scope"],
                                "Mountpoint": vol["Mountpoint"],
                                "Labels": vol["Labels"].as_object().map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let h = headers(&[
                ("Name", "VOLUME NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
                ("Mountpoint", "MOUNTPOINT"),
                ("Labels", "LABELS"),
            ]);
            let fmt = if quiet {
                "{{.Name}}".to_string()
            } else {
                format.unwrap_or_else(|| "table {{.Driver}}\t{{.Name}}".into())
            };
            print_formatted(&fmt, &rows, &h)?;
            Ok(0)
        }
        VolumeCommand::Inspect { format, names } => {
            inspect_list(
                ctx,
                &names,
                |n| format!("/volumes/{}", enc(n)),
                format,
                "volume",
            )
            .await
        }
        VolumeCommand::Rm { force, names } => {
            let mut failed = false;
            for n in &names {
                match ctx
                    .client
                    .delete(&format!("/volumes/{}?force={force}", enc(n)))
                    .await
                {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("{e:#}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        VolumeCommand::Prune(a) => prune(ctx, a, "volumes").await,
    }
}

async fn inspect_list(
    ctx: &Ctx,
    names: &[String],
    path: impl Fn(&str) -> String,
    format: Option<String>,
    what: &str,
) -> Result<i32> {
    let mut found = Vec::new();
    let mut failed = false;
    for n in names {
        match ctx.client.get_json(&path(n)).await {
            Ok(v) => found.push(v),
            Err(e) => {
                if e.downcast_ref::<client::ApiError>()
                    .is_some_and(|a| a.status == 404)
                {
                    eprintln!("Error: No such {what}: {n}");
                } else {
                    eprintln!("{e:#}");
                }
                failed = true;
            }
        }
    }
    match format {
        Some(f) if f != "json" => print_formatted(&f, &found, &Map::new())?,
        _ => print_json_array(&found)?,
    }
    Ok(if failed { 1 } else { 0 })
}

/// `berth network ...`.
pub async fn network(ctx: &Ctx, c: NetworkCommand) -> Result<i32> {
    match c {
        NetworkCommand::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            attachable,
            ipv6,
            label,
            opt,
            name,
        } => {
            let mut configs = Vec::new();
            for (i, s) in subnet.iter().enumerate() {
                let mut c = json!({"Subnet": s});
                if let Some(g) = gateway.get(i) {
                    c["Gateway"] = json!(g);
                }
                if let Some(r) = ip_range.get(i) {
                    c["IPRange"] = json!(r);
                }
                configs.push(c);
            }
            if subnet.is_empty() && !gateway.is_empty() {
                bail!("every ip-range or gateway must have a corresponding subnet");
            }
            let body = json!({
                "Name": name, "Driver": driver, "Internal": internal, "Attachable": attachable,
                "EnableIPv6": ipv6, "Labels": key_values(&label), "Options": key_values(&opt),
                "IPAM": {"Driver": "default", "Config": configs},
            });
            let v = ctx.client.post_json("/networks/create", Some(body)).await?;
            if let Some(w) = v["Warning"].as_str().filter(|w| !w.is_empty()) {
                eprintln!("WARNING: {w}");
            }
            println!("{}", v["Id"].as_str().unwrap_or(""));
            Ok(0)
        }
        NetworkCommand::Ls {
            quiet,
            no_trunc,
            filter,
            format,
        } => {
            let q = match filters_json(&filter)? {
                Some(f) => query(&[("filters", f)]),
                None => String::new(),
            };
            let v = ctx.client.get_json(&format!("/networks{q}")).await?;
            let rows: Vec<Value> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|n| {
                            let id = n["Id"].as_str().unwrap_or("");
                            json!({
                                "ID": if no_trunc { id.to_string() } else { short_id(id) },
                                "Name": n["Name"], "Driver": n["Driver"], "Scope": n["Scope"],
                                "IPv6": n["EnableIPv6"].as_bool().unwrap_or(false).to_string(),
                                "Internal": n["Internal"].as_bool().unwrap_or(false).to_string(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            let h = headers(&[
                ("ID", "NETWORK ID"),
                ("Name", "NAME"),
                ("Driver", "DRIVER"),
                ("Scope", "SCOPE"),
                ("IPv6", "IPV6"),
                ("Internal", "INTERNAL"),
            ]);
            let fmt = if quiet {
                "{{.ID}}".to_string()
            } else {
                format.unwrap_or_else(|| "table {{.ID}}\t{{.Name}}\t{{.Driver}}\t{{.Scope}}".into())
            };
            print_formatted(&fmt, &rows, &h)?;
            Ok(0)
        }
        NetworkCommand::Inspect { format, names } => {
            inspect_list(
                ctx,
                &names,
                |n| format!("/networks/{}", enc(n)),
                format,
                "network",
            )
            .await
        }
        NetworkCommand::Rm { names } => {
            let mut failed = false;
            for n in &names {
                match ctx.client.delete(&format!("/networks/{}", enc(n))).await {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("{e:#}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
        NetworkCommand::Connect {
            alias,
            ip,
            network,
            container,
        } => {
            let mut ep = json!({"Aliases": alias});
            if let Some(ip) = ip {
                ep["IPAMConfig"] = json!({"IPv4Address": ip});
            }
            ctx.client
                .post_json(
                    &format!("/networks/{}/connect", enc(&network)),
                    Some(json!({"Container": container, "EndpointConfig": ep})),
                )
                .await?;
            Ok(0)
        }
        NetworkCommand::Disconnect {
            force,
            network,
            container,
        } => {
            ctx.client
                .post_json(
                    &format!("/networks/{}/disconnect", enc(&network)),
                    Some(json!({"Container": container, "Force": force})),
                )
                .await?;
            Ok(0)
        }
        NetworkCommand::Prune(a) => prune(ctx, a, "networks").await,
    }
}

/// Rows of `system df` from a `/system/df` answer.
pub fn df_rows(v: &Value) -> Vec<Value> {
    let arr = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let images = arr("Images");
    let containers = arr("Containers");
    let volumes = arr("Volumes");
    let cache = arr("BuildCache");
    let img_active = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) > 0)
        .count();
    let img_size = v["LayersSize"].as_f64().unwrap_or_else(|| {
        images
            .iter()
            .map(|i| i["Size"].as_f64().unwrap_or(0.0))
            .sum()
    });
    let img_active_size: f64 = images
        .iter()
        .filter(|i| i["Containers"].as_i64().unwrap_or(0) > 0)
        .map(|i| i["Size"].as_f64().unwrap_or(0.0))
        .sum();
    let img_reclaim = (img_size - img_active_size).max(0.0);
    let pct = |r: f64, t: f64| {
        if t > 0.0 {
            format!(" ({}%)", (r / t * 100.0) as i64)
        } else {
            String::new()
        }
    };
    let c_active = containers
        .iter()
        .filter(|c| c["State"] == "running")
        .count();
    let c_size: f64 = containers
        .iter()
        .map(|c| c["SizeRw"].as_f64().unwrap_or(0.0))
        .sum();
    let c_reclaim: f64 = containers
        .iter()
        .filter(|c| c["State"] != "running")
        .map(|c| c["SizeRw"].as_f64().unwrap_or(0.0))
        .sum();
    let v_active = volumes
        .iter()
        .filter(|x| x["UsageData"]["RefCount"].as_i64().unwrap_or(0) > 0)
        .count();
    let v_size: f64 = volumes
        .iter()
        .map(|x| x["UsageData"]["Size"].as_f64().unwrap_or(0.0).max(0.0))
        .sum();
    let v_reclaim: f64 = volumes
        .iter()
        .filter(|x| x["UsageData"]["RefCount"].as_i64().unwrap_or(0) == 0)
        .map(|x| x["UsageData"]["Size"].as_f64().unwrap_or(0.0).max(0.0))
        .sum();
    let b_size: f64 = cache
        .iter()
        .map(|x| x["Size"].as_f64().unwrap_or(0.0))
        .sum();
    let b_active = cache
        .iter()
        .filter(|x| x["InUse"].as_bool().unwrap_or(false))
        .count();
    vec![
        json!({"Type": "Images", "TotalCount": images.len().to_string(), "Active": img_active.to_string(), "Size": human_size(img_size), "Reclaimable": format!("{}{}", human_size(img_reclaim), pct(img_reclaim, img_size))}),
        json!({"Type": "Containers", "TotalCount": containers.len().to_string(), "Active": c_active.to_string(), "Size": human_size(c_size), "Reclaimable": format!("{}{}", human_size(c_reclaim), pct(c_reclaim, c_size))}),
        json!({"Type": "Local Volumes", "TotalCount": volumes.len().to_string(), "Active": v_active.to_string(), "Size": human_size(v_size), "Reclaimable": format!("{}{}", human_size(v_reclaim), pct(v_reclaim, v_size))}),
        json!({"Type": "Build Cache", "TotalCount": cache.len().to_string(), "Active": b_active.to_string(), "Size": human_size(b_size), "Reclaimable": human_size(b_size)}),
    ]
}

/// `berth system ...`.
pub async fn system(ctx: &Ctx, c: SystemCommand) -> Result<i32> {
    match c {
        SystemCommand::Df { verbose: _, format } => {
            let v = ctx.client.get_json("/system/df").await?;
            let rows = df_rows(&v);
            let h = headers(&[
                ("Type", "TYPE"),
                ("TotalCount", "TOTAL"),
                ("Active", "ACTIVE"),
                ("Size", "SIZE"),
                ("Reclaimable", "RECLAIMABLE"),
            ]);
            let fmt = format.unwrap_or_else(|| {
                "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}".into()
            });
            print_formatted(&fmt, &rows, &h)?;
            Ok(0)
        }
        SystemCommand::Prune(a) => {
            let mut warning = String::from("WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container\n");
            if a.volumes {
                warning.push_str("  - all anonymous volumes not used by at least one container\n");
            }
            warning.push_str(if a.all {
                "  - all images without at least one container associated to them\n"
            } else {
                "  - all dangling images\n"
            });
            if !a.force && !confirm(&warning)? {
                return Ok(0);
            }
            let mut total = 0;
            total += prune_kind(ctx, "containers", &a).await?;
            total += prune_kind(ctx, "networks", &a).await?;
            if a.volumes {
                let va = PruneArgs {
                    all: false,
                    force: true,
                    volumes: true,
                    filter: a.filter.clone(),
                };
                total += prune_kind(ctx, "volumes", &va).await?;
            }
            total += prune_kind(ctx, "images", &a).await?;
            println!("Total reclaimed space: {}", human_size(total as f64));
            Ok(0)
        }
        SystemCommand::Info(a) => info(ctx, a).await,
        SystemCommand::Events(a) => events(ctx, a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lines() {
        let e = json!({"Type": "container", "Action": "start", "Actor": {"ID": "abc", "Attributes": {"name": "web", "image": "busybox"}}, "timeNano": 1_700_000_000_123_456_789i64});
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20.123456789Z container start abc (image=busybox, name=web)"
        );
    }

    #[test]
    fn df_table() {
        let v = json!({
            "LayersSize": 4_256_000,
            "Images": [{"Size": 4_256_000, "Containers": 1}],
            "Containers": [{"State": "exited", "SizeRw": 1000}],
            "Volumes": [],
            "BuildCache": []
        });
        let rows = df_rows(&v);
        assert_eq!(rows[0]["Reclaimable"], "0B (0%)");
        assert_eq!(rows[1]["Reclaimable"], "1kB (100%)");
        assert_eq!(rows[2]["TotalCount"], "0");
    }
}
