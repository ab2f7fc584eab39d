//! `berth build`: tar the context (honouring `.dockerignore`), `POST /build`, stream output.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::{json, Map, Value};

use crate::client::{self, enc};
use crate::ignore::Ignore;
use crate::stream::{JsonStream, Progress};
use crate::Ctx;

/// `berth build`.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short = 't', long)]
    pub tag: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile")
    #[arg(short = 'f', long)]
    pub file: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg")]
    pub build_arg: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pub pull: bool,
    /// Set metadata for an image
    #[arg(long)]
    pub label: Vec<String>,
    /// Set the networking mode for the RUN instructions during build
    #[arg(long)]
    pub network: Option<String>,
    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the image ID to the file
    #[arg(long)]
    pub iidfile: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Build context directory (or - for a tar on stdin)
    pub path: String,
}

/// Tars the build context at `dir` into `out`, skipping what `.dockerignore` excludes (the
/// Dockerfile and `.dockerignore` are always sent), and adds `extra` (a file name and its
/// content: a Dockerfile from stdin or from outside the context) at the end. Symlinks are
/// stored as links, not followed.
pub fn write_context<W: Write>(
    dir: &Path,
    dockerfile_rel: &str,
    extra: Option<(&str, &[u8])>,
    out: W,
) -> Result<W> {
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(t) => Ignore::parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
        Err(e) => return Err(e).context("reading .dockerignore"),
    };
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let keep = |rel: &str| rel == dockerfile_rel || rel == ".dockerignore";
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        let abs = dir.join(&rel_dir);
        let mut entries: Vec<_> = std::fs::read_dir(&abs)
            .with_context(|| format!("reading build context {}", abs.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = rel_dir.join(e.file_name());
            let rel_s = rel.to_string_lossy().to_string();
            let ft = e.file_type()?;
            let ignored = ignore.is_ignored(&rel_s) && !keep(&rel_s);
            if ft.is_dir() {
                if !ignored {
                    b.append_path_with_name(e.path(), &rel)?;
                }
                if !ignored || ignore.has_exclusions() {
                    stack.push(rel);
                }
            } else if !ignored {
                b.append_path_with_name(e.path(), &rel)
                    .with_context(|| format!("adding {} to the build context", rel_s))?;
            }
        }
    }
    if let Some((name, content)) = extra {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        b.append_data(&mut h, name, content)?;
    }
    Ok(b.into_inner()?)
}

/// [`write_context`] into memory.
#[cfg(test)]
fn context_tar(dir: &Path, dockerfile_rel: &str) -> Result<Vec<u8>> {
    write_context(dir, dockerfile_rel, None, Vec::new())
}

/// Where the context comes from.
#[derive(Clone)]
enum Source {
    /// A context tar read from stdin (`berth build -`).
    Tar(Bytes),
    /// A directory, tarred while it is sent, with the extra file [`write_context`] takes.
    Dir {
        dir: PathBuf,
        dockerfile_rel: String,
        extra: Option<(String, Vec<u8>)>,
    },
}

/// A writer that sends what it is given as body chunks of a streamed request.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

/// Size of the chunks a context is sent in.
const CHUNK: usize = 256 * 1024;

impl ChunkWriter {
    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the daemon stopped reading the build context",
            )
        })
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

/// Starts sending `source` as a request body: a blocking thread tars the directory into
/// a bounded channel, so the context is never whole in memory and the upload overlaps
/// the reading. A failure of that thread is kept in `failed` and aborts the body.
fn stream_source(
    source: Source,
    failed: std::sync::Arc<std::sync::Mutex<Option<String>>>,
) -> client::ChannelBody {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let res = match source {
            Source::Tar(b) => tx
                .blocking_send(Ok(b))
                .map_err(|_| anyhow!("the daemon stopped reading the build context")),
            Source::Dir {
                dir,
                dockerfile_rel,
                extra,
            } => {
                let w = ChunkWriter {
                    tx: tx.clone(),
                    buf: Vec::with_capacity(CHUNK),
                };
                let extra = extra.as_ref().map(|(n, c)| (n.as_str(), c.as_slice()));
                write_context(&dir, &dockerfile_rel, extra, w)
                    .and_then(|mut w| w.flush().map_err(Into::into))
            }
        };
        if let Err(e) = res {
            let msg = format!("{e:#}");
            if let Ok(mut f) = failed.lock() {
                *f = Some(msg.clone());
            }
            let _ = tx.blocking_send(Err(std::io::Error::other(msg)));
        }
    });
    client::ChannelBody(rx)
}

/// `berth build`.
pub async fn build(ctx: &Ctx, a: BuildArgs) -> Result<i32> {
    let mut q: Vec<(String, String)> = Vec::new();
    let source = if a.path == "-" {
        if std::io::stdin().is_terminal() {
            bail!("requested build from stdin, but stdin is a terminal");
        }
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v)?;
        if let Some(f) = &a.file {
            q.push(("dockerfile".into(), f.clone()));
        }
        Source::Tar(Bytes::from(v))
    } else {
        let dir = PathBuf::from(&a.path);
        if !dir.is_dir() {
            bail!("unable to prepare context: path {:?} not found", a.path);
        }
        let dockerfile = match &a.file {
            Some(f) if f == "-" => None,
            Some(f) => Some(PathBuf::from(f)),
            None => Some(dir.join("Dockerfile")),
        };
        match dockerfile {
            None => {
                // Dockerfile from stdin: add it to the context under a private name.
                let mut content = Vec::new();
                std::io::stdin().read_to_end(&mut content)?;
                let name = ".berth-dockerfile";
                q.push(("dockerfile".into(), name.into()));
                Source::Dir {
                    dir: dir.clone(),
                    dockerfile_rel: name.into(),
                    extra: Some((name.into(), content)),
                }
            }
            Some(df) => {
                let df_abs = std::fs::canonicalize(&df)
                    .map_err(|_| anyhow!("unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {}: no such file or directory", df.display()))?;
                let dir_abs = std::fs::canonicalize(&dir)?;
                match df_abs.strip_prefix(&dir_abs) {
                    Ok(rel) => {
                        let rel = rel.to_string_lossy().to_string();
                        q.push(("dockerfile".into(), rel.clone()));
                        Source::Dir {
                            dir: dir.clone(),
                            dockerfile_rel: rel,
                            extra: None,
                        }
                    }
                    Err(_) => {
                        let content = std::fs::read(&df_abs)?;
                        let name = ".berth-dockerfile";
                        q.push(("dockerfile".into(), name.into()));
                        Source::Dir {
                            dir: dir.clone(),
                            dockerfile_rel: name.into(),
                            extra: Some((name.into(), content)),
                        }
                    }
                }
            }
        }
    };
    for t in &a.tag {
        q.push(("t".into(), t.clone()));
    }
    if !a.build_arg.is_empty() {
        let mut m = Map::new();
        for b in &a.build_arg {
            match b.split_once('=') {
                Some((k, v)) => {
                    m.insert(k.into(), json!(v));
                }
                None => {
                    if let Ok(v) = std::env::var(b) {
                        m.insert(b.clone(), json!(v));
                    }
                }
            }
        }
        q.push(("buildargs".into(), Value::Object(m).to_string()));
    }
    if !a.label.is_empty() {
        let mut m = Map::new();
        for l in &a.label {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            m.insert(k.into(), json!(v));
        }
        q.push(("labels".into(), Value::Object(m).to_string()));
    }
    if let Some(t) = &a.target {
        q.push(("target".into(), t.clone()));
    }
    if a.no_cache {
        q.push(("nocache".into(), "1".into()));
    }
    if a.pull {
        q.push(("pull".into(), "1".into()));
    }
    if a.quiet {
        q.push(("q".into(), "1".into()));
    }
    if let Some(n) = &a.network {
        q.push(("networkmode".into(), n.clone()));
    }
    if let Some(p) = &a.platform {
        q.push(("platform".into(), p.clone()));
    }
    q.push(("rm".into(), "1".into()));
    let qs: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect();
    let path = format!("/build?{}", qs.join("&"));
    let mut headers = Vec::new();
    if let Ok(cfg) = std::fs::read(ctx.config_dir.join("config.json")) {
        if let Ok(cfg) = serde_json::from_slice::<Value>(&cfg) {
            let mut m = Map::new();
            if let Some(auths) = cfg["auths"].as_object() {
                for reg in auths.keys() {
                    if let Some((u, p)) = crate::image::credentials(&cfg, reg) {
                        m.insert(
                            reg.clone(),
                            json!({"username": u, "password": p, "serveraddress": reg}),
                        );
                    }
                }
            }
            if !m.is_empty() {
                headers.push((
                    "X-Registry-Config",
                    base64::engine::general_purpose::URL_SAFE.encode(Value::Object(m).to_string()),
                ));
            }
        }
    }
    // Streamed; sent again only if the daemon asked for another API version.
    let mut resp = None;
    for _ in 0..2 {
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
        let body = stream_source(source.clone(), failed.clone());
        let sent = ctx
            .client
            .request_streaming(Method::POST, &path, "application/x-tar", body, &headers)
            .await;
        if let Some(msg) = failed.lock().ok().and_then(|f| f.clone()) {
            bail!("sending the build context: {msg}");
        }
        if let Some(r) = sent? {
            resp = Some(r);
            break;
        }
    }
    let resp = resp.ok_or_else(|| anyhow!("the daemon refused every API version offered"))?;
    let out: Box<dyn std::io::Write> = if a.quiet {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::stdout())
    };
    let mut progress = Progress::new(out, std::io::stdout().is_terminal());
    let mut dec = JsonStream::new();
    let mut body = resp.into_body();
    let mut image_id = None;
    while let Some(chunk) = client::next_chunk(&mut body).await? {
        for m in dec.feed(&chunk)? {
            if let Some(id) = m["aux"]["ID"].as_str() {
                image_id = Some(id.to_string());
            }
            if let Some(e) = progress.show(&m)? {
                bail!("{e}");
            }
            if a.quiet && image_id.is_none() {
                if let Some(s) = m["stream"].as_str() {
                    if s.trim().starts_with("sha256:") {
                        image_id = Some(s.trim().to_string());
                    }
                }
            }
        }
    }
    if let Some(id) = &image_id {
        if a.quiet {
            println!("{id}");
        }
        if let Some(f) = &a.iidfile {
            std::fs::write(f, id).with_context(|| format!("writing {f}"))?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<String> {
        let mut ar = tar::Archive::new(tar);
        let mut v: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn context_honours_dockerignore() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            p.join(".dockerignore"),
            "*.log\nnode_modules\nDockerfile\ndocs\n!docs/keep.md\n",
        )
        .unwrap();
        std::fs::write(p.join("app.log"), "x").unwrap();
        std::fs::write(p.join("main.c"), "x").unwrap();
        std::fs::create_dir_all(p.join("node_modules/x")).unwrap();
        std::fs::write(p.join("node_modules/x/y.js"), "x").unwrap();
        std::fs::create_dir_all(p.join("docs")).unwrap();
        std::fs::write(p.join("docs/keep.md"), "x").unwrap();
        std::fs::write(p.join("docs/drop.md"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", p.join("link")).unwrap();
        let tar = context_tar(p, "Dockerfile").unwrap();
        assert_eq!(
            names(&tar),
            vec![
                ".dockerignore",
                "Dockerfile",
                "docs/keep.md",
                "link",
                "main.c"
            ]
        );
        // The symlink is stored as a link, not the host file.
        let mut ar = tar::Archive::new(tar.as_slice());
        let link = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_string_lossy() == "link")
            .unwrap();
        assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
        let with = write_context(
            p,
            ".berth-dockerfile",
            Some((".berth-dockerfile", b"FROM x\n")),
            Vec::new(),
        )
        .unwrap();
        assert!(names(&with).contains(&".berth-dockerfile".to_string()));
    }
}
