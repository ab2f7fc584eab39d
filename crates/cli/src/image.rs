//! Image commands: pull, push, images, rmi, tag, save, load, import, history, login, logout.
//!
//! Registry credentials live in docker's `config.json` (`auths.<registry>.auth` holds
//! base64 `user:password`), or in a credential helper that `credsStore` / `credHelpers`
//! name (see [`creds`]); commands that reach a registry send them to the daemon in the
//! `X-Registry-Auth` header (base64url JSON), as docker does.

pub mod creds;

use std::io::{BufRead, IsTerminal, Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::{json, Map, Value};

use crate::client::{self, enc, query, Body};
use crate::container::{body_to_output, filters_json, headers, print_formatted};
use crate::format::{ago, ellipsis, human_size, short_id};
use crate::stream::{JsonStream, Progress};
use crate::Ctx;

/// The registry docker means when a name has no registry part.
pub const DEFAULT_REGISTRY: &str = "https://index.docker.io/v1/";

/// `berth pull`.
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// NAME[:TAG|@DIGEST]
    pub name: String,
}

/// `berth push`.
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// NAME[:TAG]
    pub name: String,
}

/// `berth images`.
#[derive(Args, Debug, Default)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long)]
    pub filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// REPOSITORY[:TAG]
    pub repository: Option<String>,
}

/// `berth rmi`.
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    pub no_prune: bool,
    /// Images
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `berth tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG]
    pub source: String,
    /// TARGET_IMAGE[:TAG]
    pub target: String,
}

/// `berth save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Images
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `berth load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short = 'i', long)]
    pub input: Option<String>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `berth import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long)]
    pub change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// A tar file, a URL, or - for stdin
    pub file: String,
    /// REPOSITORY[:TAG]
    pub reference: Option<String>,
}

/// `berth history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, num_args = 0..=1, default_missing_value = "true", default_value = "true", action = clap::ArgAction::Set)]
    pub human: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    /// Image
    pub image: String,
}

/// `berth login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Registry server
    pub server: Option<String>,
}

/// `berth logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry server
    pub server: Option<String>,
}

/// Splits `name[:tag|@digest]` into the repository and the tag or digest.
pub fn split_ref(r: &str) -> (String, Option<String>) {
    if let Some((name, digest)) = r.split_once('@') {
        let name = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => &name[..i],
            _ => name,
        };
        return (name.to_string(), Some(digest.to_string()));
    }
    match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => (r[..i].to_string(), Some(r[i + 1..].to_string())),
        _ => (r.to_string(), None),
    }
}

/// `name` with `:latest` added when it names neither a tag nor a digest.
pub fn with_tag(r: &str) -> String {
    match split_ref(r) {
        (_, Some(_)) => r.to_string(),
        (n, None) => format!("{n}:latest"),
    }
}

/// Docker's fully qualified form (`busybox` → `docker.io/library/busybox:latest`).
pub fn full_name(r: &str) -> String {
    let r = with_tag(r);
    let first = r.split('/').next().unwrap_or("");
    let has_domain =
        r.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        r
    } else if r.contains('/') {
        format!("docker.io/{r}")
    } else {
        format!("docker.io/library/{r}")
    }
}

/// The registry a repository name lives on (its domain part, else docker's default).
pub fn registry_of(repo: &str) -> String {
    match repo.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first.to_string()
        }
        _ => DEFAULT_REGISTRY.to_string(),
    }
}

/// Normalises a `login`/`logout` server argument to its config.json key.
pub fn server_key(server: &str) -> String {
    let s = server.trim();
    if s.is_empty() || s.contains("index.docker.io") || s == "docker.io" {
        return DEFAULT_REGISTRY.to_string();
    }
    s.trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

fn config_path(ctx: &Ctx) -> std::path::PathBuf {
    ctx.config_dir.join("config.json")
}

fn read_config(ctx: &Ctx) -> Result<Value> {
    match std::fs::read(config_path(ctx)) {
        Ok(b) if !b.is_empty() => serde_json::from_slice(&b)
            .with_context(|| format!("parsing {}", config_path(ctx).display())),
        Ok(_) => Ok(json!({})),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", config_path(ctx).display())),
    }
}

fn write_config(ctx: &Ctx, v: &Value) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(&ctx.config_dir)
        .with_context(|| format!("creating {}", ctx.config_dir.display()))?;
    let path = config_path(ctx);
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(&serde_json::to_vec_pretty(v)?)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The stored credentials (user, password) for a registry, if any: from its credential
/// helper when one is configured (helpers on `PATH`), else from `auths`.
pub fn credentials(config: &Value, registry: &str) -> Option<(String, String)> {
    credentials_with(config, registry, &creds::Helpers::from_env())
}

/// [`credentials`] with helpers looked up through `helpers`. A failing helper is reported
/// on stderr and treated as holding nothing (the request then goes out anonymous).
pub fn credentials_with(
    config: &Value,
    registry: &str,
    helpers: &creds::Helpers,
) -> Option<(String, String)> {
    if let Some(name) = creds::helper_for(config, registry) {
        match helpers.get(&name, registry) {
            Ok(Some(c)) => return Some(c),
            Ok(None) => {}
            Err(e) => eprintln!("WARNING: {e:#}"),
        }
    }
    let auths = config.get("auths")?.as_object()?;
    let candidates = [
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/"),
    ];
    for c in candidates {
        if let Some(a) = auths
            .get(&c)
            .and_then(|e| e.get("auth"))
            .and_then(Value::as_str)
        {
            let raw = base64::engine::general_purpose::STANDARD.decode(a).ok()?;
            let s = String::from_utf8(raw).ok()?;
            let (u, p) = s.split_once(':')?;
            return Some((u.to_string(), p.to_string()));
        }
    }
    None
}

/// The `X-Registry-Auth` header value for a registry (`{}` when no credentials).
pub fn registry_auth_header(config: &Value, registry: &str) -> String {
    registry_auth_header_with(config, registry, &creds::Helpers::from_env())
}

/// [`registry_auth_header`] with helpers looked up through `helpers`.
pub fn registry_auth_header_with(
    config: &Value,
    registry: &str,
    helpers: &creds::Helpers,
) -> String {
    let v = match credentials_with(config, registry, helpers) {
        Some((u, p)) if u == creds::TOKEN_USERNAME => {
            json!({"identitytoken": p, "serveraddress": registry})
        }
        Some((u, p)) => json!({"username": u, "password": p, "serveraddress": registry}),
        None => json!({}),
    };
    base64::engine::general_purpose::URL_SAFE.encode(v.to_string())
}

/// Reads a JSON-message stream, showing it docker-style; fails on an error message.
pub async fn show_stream(
    resp: hyper::Response<hyper::body::Incoming>,
    to_stderr: bool,
    quiet: bool,
) -> Result<Vec<Value>> {
    let tty = if to_stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let out: Box<dyn Write> = if quiet {
        Box::new(std::io::sink())
    } else if to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let mut progress = Progress::new(out, tty);
    let mut dec = JsonStream::new();
    let mut body = resp.into_body();
    let mut all = Vec::new();
    while let Some(chunk) = client::next_chunk(&mut body).await? {
        for m in dec.feed(&chunk)? {
            if let Some(e) = progress.show(&m)? {
                bail!("{e}");
            }
            all.push(m);
        }
    }
    Ok(all)
}

/// Pulls `image` through the daemon, showing progress on stdout or stderr.
pub async fn pull_image(ctx: &Ctx, image: &str, quiet: bool, to_stderr: bool) -> Result<()> {
    let (repo, tag) = split_ref(image);
    let config = read_config(ctx).unwrap_or_else(|_| json!({}));
    let auth = registry_auth_header(&config, &registry_of(&repo));
    let q = query(&[
        ("fromImage", repo.clone()),
        ("tag", tag.unwrap_or_else(|| "latest".into())),
    ]);
    let resp = ctx
        .client
        .request(
            Method::POST,
            &format!("/images/create{q}"),
            Body::Empty,
            &[("X-Registry-Auth", auth)],
        )
        .await?;
    show_stream(resp, to_stderr, quiet).await?;
    Ok(())
}

/// `berth pull`.
pub async fn pull(ctx: &Ctx, a: PullArgs) -> Result<i32> {
    if split_ref(&a.name).1.is_none() && !a.all_tags && !a.quiet {
        println!("Using default tag: latest");
    }
    pull_image(ctx, &a.name, a.quiet, false).await?;
    println!("{}", full_name(&a.name));
    Ok(0)
}

/// `berth push`.
pub async fn push(ctx: &Ctx, a: PushArgs) -> Result<i32> {
    let (repo, tag) = split_ref(&a.name);
    let config = read_config(ctx)?;
    let auth = registry_auth_header(&config, &registry_of(&repo));
    let mut q = Vec::new();
    if let Some(t) = &tag {
        q.push(("tag", t.clone()));
    } else if !a.all_tags {
        q.push(("tag", "latest".to_string()));
    }
    if tag.is_none() && !a.all_tags && !a.quiet {
        println!("Using default tag: latest");
    }
    let resp = ctx
        .client
        .request(
            Method::POST,
            &format!("/images/{}/push{}", enc(&repo), query(&q)),
            Body::Empty,
            &[("X-Registry-Auth", auth)],
        )
        .await?;
    show_stream(resp, false, a.quiet).await?;
    if a.quiet {
        println!("{}", with_tag(&a.name));
    }
    Ok(0)
}

/// Rows of `images` (one per tag; `<none>` for untagged images).
pub fn image_rows(list: &[Value], no_trunc: bool) -> Vec<Value> {
    let mut rows = Vec::new();
    for img in list {
        let id = img["Id"].as_str().unwrap_or("");
        let id = if no_trunc {
            id.to_string()
        } else {
            short_id(id)
        };
        let created = img["Created"].as_i64().unwrap_or(0);
        let size = human_size(img["Size"].as_f64().unwrap_or(0.0));
        let digest = img["RepoDigests"]
            .as_array()
            .and_then(|d| d.first())
            .and_then(Value::as_str)
            .and_then(|d| d.split_once('@'))
            .map(|(_, d)| d.to_string())
            .unwrap_or_else(|| "<none>".into());
        let tags: Vec<&str> = img["RepoTags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let tags = if tags.is_empty() {
            vec!["<none>:<none>"]
        } else {
            tags
        };
        for t in tags {
            let (repo, tag) = match split_ref(t) {
                (r, Some(t)) => (r, t),
                (r, None) => (r, "<none>".into()),
            };
            rows.push(json!({
                "ID": id,
                "Repository": repo,
                "Tag": tag,
                "Digest": digest.clone(),
                "CreatedSince": ago(created),
                "CreatedAt": chrono::DateTime::from_timestamp(created, 0)
                    .map(|d| d.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string())
                    .unwrap_or_default(),
                "Size": size,
                "Containers": img["Containers"].as_i64().map(|c| c.to_string()).unwrap_or_else(|| "N/A".into()),
            }));
        }
    }
    rows
}

fn image_headers() -> Map<String, Value> {
    headers(&[
        ("ID", "IMAGE ID"),
        ("Repository", "REPOSITORY"),
        ("Tag", "TAG"),
        ("Digest", "DIGEST"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("Size", "SIZE"),
        ("Containers", "CONTAINERS"),
    ])
}

/// `berth images`.
pub async fn images(ctx: &Ctx, a: ImagesArgs) -> Result<i32> {
    let mut filters = a.filter.clone();
    if let Some(r) = &a.repository {
        filters.push(format!("reference={r}"));
    }
    let mut q = Vec::new();
    if a.all {
        q.push(("all", "1".to_string()));
    }
    if let Some(f) = filters_json(&filters)? {
        q.push(("filters", f));
    }
    let list = ctx
        .client
        .get_json(&format!("/images/json{}", query(&q)))
        .await?;
    let list = list.as_array().cloned().unwrap_or_default();
    if a.quiet {
        let mut seen = Vec::new();
        for img in &list {
            let id = img["Id"].as_str().unwrap_or("");
            let id = if a.no_trunc {
                id.to_string()
            } else {
                short_id(id)
            };
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(0);
    }
    let rows = image_rows(&list, a.no_trunc);
    let fmt = match a.format.clone().filter(|f| f != "table") {
        Some(f) => f,
        None if a.digests => {
            "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
                .into()
        }
        None => "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}".into(),
    };
    print_formatted(&fmt, &rows, &image_headers())?;
    Ok(0)
}

/// `berth rmi`.
pub async fn rmi(ctx: &Ctx, a: RmiArgs) -> Result<i32> {
    let q = query(&[
        ("force", a.force.to_string()),
        ("noprune", a.no_prune.to_string()),
    ]);
    let mut failed = false;
    for i in &a.images {
        match ctx.client.delete(&format!("/images/{}{q}", enc(i))).await {
            Ok(v) => {
                for e in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
                    if let Some(u) = e["Untagged"].as_str() {
                        println!("Untagged: {u}");
                    }
                    if let Some(d) = e["Deleted"].as_str() {
                        println!("Deleted: {d}");
                    }
                }
            }
            Err(e) => {
                eprintln!("{e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// `berth tag`.
pub async fn tag(ctx: &Ctx, a: TagArgs) -> Result<i32> {
    let (repo, tag) = split_ref(&a.target);
    let q = query(&[
        ("repo", repo),
        ("tag", tag.unwrap_or_else(|| "latest".into())),
    ]);
    ctx.client
        .post_json(&format!("/images/{}/tag{q}", enc(&a.source)), None)
        .await?;
    Ok(0)
}

/// `berth save`.
pub async fn save(ctx: &Ctx, a: SaveArgs) -> Result<i32> {
    let q: Vec<String> = a
        .images
        .iter()
        .map(|i| format!("names={}", enc(i)))
        .collect();
    let resp = ctx
        .client
        .request(
            Method::GET,
            &format!("/images/get?{}", q.join("&")),
            Body::Empty,
            &[],
        )
        .await?;
    body_to_output(resp, a.output.as_deref()).await?;
    Ok(0)
}

fn read_input(path: Option<&str>) -> Result<Vec<u8>> {
    match path {
        Some(p) if p != "-" => std::fs::read(p).with_context(|| format!("open {p}")),
        _ => {
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v)?;
            Ok(v)
        }
    }
}

/// `berth load`.
pub async fn load(ctx: &Ctx, a: LoadArgs) -> Result<i32> {
    if a.input.is_none() && std::io::stdin().is_terminal() {
        bail!("requested load from stdin, but stdin is empty");
    }
    let data = read_input(a.input.as_deref())?;
    let q = if a.quiet { "?quiet=1" } else { "" };
    let resp = ctx
        .client
        .request(
            Method::POST,
            &format!("/images/load{q}"),
            Body::Raw(Bytes::from(data), "application/x-tar"),
            &[],
        )
        .await?;
    // Load output ("Loaded image: x") is printed even with -q, like docker.
    show_stream(resp, false, false).await?;
    Ok(0)
}

/// `berth import`.
pub async fn import(ctx: &Ctx, a: ImportArgs) -> Result<i32> {
    let mut q = Vec::new();
    let is_url = a.file.starts_with("http://") || a.file.starts_with("https://");
    q.push(("fromSrc", if is_url { a.file.clone() } else { "-".into() }));
    if let Some(r) = &a.reference {
        let (repo, tag) = split_ref(r);
        q.push(("repo", repo));
        if let Some(t) = tag {
            q.push(("tag", t));
        }
    }
    if let Some(m) = &a.message {
        q.push(("message", m.clone()));
    }
    if let Some(p) = &a.platform {
        q.push(("platform", p.clone()));
    }
    for c in &a.change {
        q.push(("changes", c.clone()));
    }
    let body = if is_url {
        Body::Empty
    } else {
        Body::Raw(Bytes::from(read_input(Some(&a.file))?), "application/x-tar")
    };
    let resp = ctx
        .client
        .request(
            Method::POST,
            &format!("/images/create{}", query(&q)),
            body,
            &[],
        )
        .await?;
    let msgs = show_stream(resp, false, true).await?;
    for m in msgs {
        if let Some(s) = m["status"].as_str() {
            println!("{s}");
        }
    }
    Ok(0)
}

/// `berth history`.
pub async fn history(ctx: &Ctx, a: HistoryArgs) -> Result<i32> {
    let v = ctx
        .client
        .get_json(&format!("/images/{}/history", enc(&a.image)))
        .await?;
    let mut rows = Vec::new();
    for h in v.as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let id = h["Id"].as_str().unwrap_or("");
        let id = if id.is_empty() || id == "<missing>" {
            "<missing>".to_string()
        } else if a.no_trunc {
            id.to_string()
        } else {
            short_id(id)
        };
        let created = h["Created"].as_i64().unwrap_or(0);
        let by = h["CreatedBy"]
            .as_str()
            .unwrap_or("")
            .replace(['\t', '\n'], " ");
        let by = if a.no_trunc { by } else { ellipsis(&by, 45) };
        let size = h["Size"].as_f64().unwrap_or(0.0);
        rows.push(json!({
            "ID": id,
            "CreatedSince": if a.human { ago(created) } else { created.to_string() },
            "CreatedAt": chrono::DateTime::from_timestamp(created, 0).map(|d| d.to_rfc3339()).unwrap_or_default(),
            "CreatedBy": by,
            "Size": if a.human { human_size(size) } else { (size as i64).to_string() },
            "Comment": h["Comment"].as_str().unwrap_or(""),
        }));
    }
    let mut headers = Map::new();
    for (k, v) in [
        ("ID", "IMAGE"),
        ("CreatedSince", "CREATED"),
        ("CreatedAt", "CREATED AT"),
        ("CreatedBy", "CREATED BY"),
        ("Size", "SIZE"),
        ("Comment", "COMMENT"),
    ] {
        headers.insert(k.into(), json!(v));
    }
    let fmt = if a.quiet {
        "{{.ID}}".to_string()
    } else {
        a.format.clone().unwrap_or_else(|| {
            "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into()
        })
    };
    print_formatted(&fmt, &rows, &headers)?;
    Ok(0)
}

fn prompt(label: &str) -> Result<String> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `berth login`.
pub async fn login(ctx: &Ctx, a: LoginArgs) -> Result<i32> {
    login_with(ctx, a, &creds::Helpers::from_env()).await
}

/// `berth login` with credential helpers looked up through `helpers`: the daemon checks the
/// credentials (`POST /auth`), then they go to the registry's helper when `config.json`
/// names one (leaving an empty `auths` entry, as docker does), else into `auths`.
pub async fn login_with(ctx: &Ctx, a: LoginArgs, helpers: &creds::Helpers) -> Result<i32> {
    let server = server_key(a.server.as_deref().unwrap_or(""));
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let username = match &a.username {
        Some(u) => u.clone(),
        None if a.password_stdin => bail!("Must provide --username with --password-stdin"),
        None => prompt("Username: ")?,
    };
    if username.is_empty() {
        bail!("Username is required");
    }
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else if let Some(p) = &a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        prompt("Password: ")?
    };
    if password.is_empty() {
        bail!("Password is required");
    }
    let resp = ctx
        .client
        .post_json(
            "/auth",
            Some(json!({"username": username, "password": password, "serveraddress": server})),
        )
        .await?;
    let mut config = read_config(ctx)?;
    if !config.is_object() {
        config = json!({});
    }
    let entry = match creds::helper_for(&config, &server) {
        Some(name) => {
            helpers.store(&name, &server, &username, &password)?;
            json!({})
        }
        None => {
            let auth =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            json!({ "auth": auth })
        }
    };
    let auths = config
        .as_object_mut()
        .ok_or_else(|| anyhow!("config.json is not an object"))?
        .entry("auths")
        .or_insert_with(|| json!({}));
    if !auths.is_object() {
        *auths = json!({});
    }
    if let Some(m) = auths.as_object_mut() {
        m.insert(server.clone(), entry);
    }
    write_config(ctx, &config)?;
    println!(
        "{}",
        resp["Status"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("Login Succeeded")
    );
    Ok(0)
}

/// `berth logout`.
pub async fn logout(ctx: &Ctx, a: LogoutArgs) -> Result<i32> {
    logout_with(ctx, a, &creds::Helpers::from_env()).await
}

/// `berth logout` with credential helpers looked up through `helpers`: erases the
/// registry's entry in its helper (when one is configured) and in `auths`.
pub async fn logout_with(ctx: &Ctx, a: LogoutArgs, helpers: &creds::Helpers) -> Result<i32> {
    let server = server_key(a.server.as_deref().unwrap_or(""));
    let mut config = read_config(ctx)?;
    let mut in_helper = false;
    if let Some(name) = creds::helper_for(&config, &server) {
        in_helper = matches!(helpers.get(&name, &server), Ok(Some(_)));
        if let Err(e) = helpers.erase(&name, &server) {
            eprintln!("WARNING: could not erase credentials: {e:#}");
        }
    }
    let removed = config
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .map(|m| {
            let keys: Vec<String> = m
                .keys()
                .filter(|k| server_key(k) == server)
                .cloned()
                .collect();
            for k in &keys {
                m.remove(k);
            }
            !keys.is_empty()
        })
        .unwrap_or(false);
    if !removed && !in_helper {
        println!("Not logged in to {server}");
        return Ok(0);
    }
    println!("Removing login credentials for {server}");
    write_config(ctx, &config)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_ref("busybox"), ("busybox".into(), None));
        assert_eq!(
            split_ref("busybox:1.36"),
            ("busybox".into(), Some("1.36".into()))
        );
        assert_eq!(
            split_ref("localhost:5000/a/b"),
            ("localhost:5000/a/b".into(), None)
        );
        assert_eq!(
            split_ref("localhost:5000/a:v1"),
            ("localhost:5000/a".into(), Some("v1".into()))
        );
        assert_eq!(
            split_ref("a@sha256:00"),
            ("a".into(), Some("sha256:00".into()))
        );
        assert_eq!(
            split_ref("a:t@sha256:00"),
            ("a".into(), Some("sha256:00".into()))
        );
        assert_eq!(with_tag("busybox"), "busybox:latest");
        assert_eq!(with_tag("localhost:5000/x"), "localhost:5000/x:latest");
        assert_eq!(full_name("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full_name("me/app:1"), "docker.io/me/app:1");
        assert_eq!(full_name("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(registry_of("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_of("busybox"), DEFAULT_REGISTRY);
        assert_eq!(registry_of("me/app"), DEFAULT_REGISTRY);
    }

    #[test]
    fn auth_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let cfg = json!({"auths": {"localhost:5000": {"auth": auth}}});
        assert_eq!(
            credentials(&cfg, "localhost:5000"),
            Some(("bob".into(), "s3cret".into()))
        );
        assert_eq!(credentials(&cfg, "other:5000"), None);
        let h = registry_auth_header(&cfg, "localhost:5000");
        let decoded = base64::engine::general_purpose::URL_SAFE.decode(h).unwrap();
        let v: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(
            v,
            json!({"username": "bob", "password": "s3cret", "serveraddress": "localhost:5000"})
        );
        assert_eq!(server_key("http://localhost:5000/"), "localhost:5000");
        assert_eq!(server_key(""), DEFAULT_REGISTRY);
    }

    #[tokio::test]
    async fn login_stores_and_logout_removes_credentials() {
        use crate::client::testing::{fake_daemon, http};
        let (dir, host, seen) = fake_daemon(|line| {
            if line.starts_with("POST /v1.47/auth") {
                http(
                    "200 OK",
                    r#"{"Status":"Login Succeeded","IdentityToken":""}"#,
                )
            } else {
                http("404 Not Found", "{}")
            }
        });
        let ctx = Ctx {
            client: crate::client::Client::new(&host).unwrap(),
            config_dir: dir.path().join("cfg"),
        };
        let a = LoginArgs {
            username: Some("bob".into()),
            password: Some("s3cret".into()),
            password_stdin: false,
            server: Some("http://localhost:5000/".into()),
        };
        assert_eq!(login(&ctx, a).await.unwrap(), 0);
        assert_eq!(seen.lock().unwrap().len(), 1);
        let cfg = read_config(&ctx).unwrap();
        assert_eq!(
            credentials(&cfg, "localhost:5000"),
            Some(("bob".into(), "s3cret".into()))
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("cfg/config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let a = LogoutArgs {
            server: Some("localhost:5000".into()),
        };
        assert_eq!(logout(&ctx, a).await.unwrap(), 0);
        assert_eq!(
            credentials(&read_config(&ctx).unwrap(), "localhost:5000"),
            None
        );
    }

    #[tokio::test]
    async fn login_logout_and_auth_header_through_a_credential_helper() {
        use crate::client::testing::{fake_daemon, http};
        let (dir, host, _seen) = fake_daemon(|line| {
            if line.starts_with("POST /v1.47/auth") {
                http("200 OK", r#"{"Status":"Login Succeeded"}"#)
            } else {
                http("404 Not Found", "{}")
            }
        });
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        creds::tests::fake_helper(&bin, "fake");
        creds::tests::fake_helper(&bin.join("other"), "other");
        let helpers =
            creds::Helpers::with_path(std::env::join_paths([&bin, &bin.join("other")]).unwrap());
        let cfg_dir = dir.path().join("cfg");
        std::fs::create_dir_all(&cfg_dir).unwrap();
        std::fs::write(
            cfg_dir.join("config.json"),
            r#"{"credsStore":"fake","credHelpers":{"special:5000":"other"}}"#,
        )
        .unwrap();
        let ctx = Ctx {
            client: crate::client::Client::new(&host).unwrap(),
            config_dir: cfg_dir.clone(),
        };
        for (server, user) in [("localhost:5000", "bob"), ("special:5000", "eve")] {
            let a = LoginArgs {
                username: Some(user.into()),
                password: Some(format!("{user}-pw")),
                password_stdin: false,
                server: Some(server.into()),
            };
            assert_eq!(login_with(&ctx, a, &helpers).await.unwrap(), 0);
        }
        // The secret is in the helpers, not in config.json.
        let raw = std::fs::read_to_string(cfg_dir.join("config.json")).unwrap();
        assert!(!raw.contains("bob-pw") && !raw.contains("auth\""), "{raw}");
        let cfg = read_config(&ctx).unwrap();
        assert_eq!(cfg["auths"]["localhost:5000"], json!({}));
        assert_eq!(
            helpers.get("fake", "localhost:5000").unwrap(),
            Some(("bob".into(), "bob-pw".into()))
        );
        assert_eq!(helpers.get("fake", "special:5000").unwrap(), None);
        assert_eq!(
            helpers.get("other", "special:5000").unwrap(),
            Some(("eve".into(), "eve-pw".into()))
        );
        // Pull/push headers carry what the helper holds.
        let h = registry_auth_header_with(&cfg, "special:5000", &helpers);
        let v: Value =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE.decode(h).unwrap())
                .unwrap();
        assert_eq!(v["username"], "eve");
        assert_eq!(v["password"], "eve-pw");
        // Logout erases it from the helper and config.json.
        let a = LogoutArgs {
            server: Some("localhost:5000".into()),
        };
        assert_eq!(logout_with(&ctx, a, &helpers).await.unwrap(), 0);
        assert_eq!(helpers.get("fake", "localhost:5000").unwrap(), None);
        let cfg = read_config(&ctx).unwrap();
        assert!(cfg["auths"].get("localhost:5000").is_none());
        assert_eq!(credentials_with(&cfg, "localhost:5000", &helpers), None);
        // A configured helper that is missing: anonymous, with a warning, no panic.
        let missing = creds::Helpers::with_path(dir.path().join("nowhere"));
        assert_eq!(credentials_with(&cfg, "special:5000", &missing), None);
    }

    #[test]
    fn image_table() {
        let now = crate::format::now_unix();
        let list = vec![
            json!({"Id": "sha256:abcdef0123456789", "RepoTags": ["busybox:latest", "bb:1"], "Created": now - 7200, "Size": 4_256_000}),
            json!({"Id": "sha256:1111222233334444", "RepoTags": [], "Created": now - 30, "Size": 512}),
        ];
        let rows = image_rows(&list, false);
        assert_eq!(rows.len(), 3);
        let out = crate::template::Format::parse(
            "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}",
        )
        .unwrap()
        .render(&rows, &image_headers())
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "REPOSITORY   TAG       IMAGE ID       CREATED          SIZE"
        );
        assert_eq!(
            lines[1],
            "busybox      latest    abcdef012345   2 hours ago      4.26MB"
        );
        assert_eq!(
            lines[3],
            "<none>       <none>    111122223333   30 seconds ago   512B"
        );
    }
}
