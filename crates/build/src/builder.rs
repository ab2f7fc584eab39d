//! The builder: runs a parsed Dockerfile against a [`BuildBackend`] with Docker's classic
//! builder semantics and log format.
//!
//! Each step maps a parent [`ImageState`] to a child state. Metadata steps (`ENV`,
//! `LABEL`, `CMD`, ...) only change the config and add a history entry with
//! `empty_layer: true`; `RUN`, `COPY` and `ADD` may add a layer. Before running a step the
//! builder computes its [`CacheKey`] (parent state id + the step's expanded text + the
//! build args it sees + for `COPY`/`ADD` the content hash of what would be copied + for
//! `RUN` its `--network` flag, not the build's `--network`) and
//! asks the backend's cache; a hit reuses the cached state (` ---> Using cache`).
//!
//! Only the stages the target depends on (through `FROM <stage>` and `COPY --from`) are
//! built. Nothing is tagged unless every step succeeds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::backend::{
    BackendError, BuildBackend, CacheKey, CopyItem, Empty, HealthConfig, HistoryEntry, ImageState,
    RunSpec,
};
use crate::context::{self, BuildContext, Entry, EntryKind, Scope};
use crate::error::BuildError;
use crate::expand::{expand_heredoc, expand_word, expand_words};
use crate::parser::{
    self, Command, CopySource, CopySpec, Dockerfile, Instruction, InstructionKind, Stage,
};

/// Build args Docker accepts without an `ARG` and keeps out of the image and history.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What to build and how.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's path inside the context (`-f`); default `Dockerfile`.
    pub dockerfile: String,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build (name or index); default the last.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`: ask the backend to pull base images even when present.
    pub pull: bool,
    /// `--label`s added to the final image.
    pub labels: BTreeMap<String, String>,
    /// `-t` references to tag the result with.
    pub tags: Vec<String>,
    /// `--network` for `RUN` steps without `--network`.
    pub network: Option<String>,
    /// `-q`: print only the image id.
    pub quiet: bool,
    /// `--platform` default for `FROM` lines without one.
    pub platform: Option<String>,
    /// Where temporary files (extracted archives, downloads) go; default the system's.
    pub scratch_dir: Option<PathBuf>,
}

impl BuildOptions {
    /// Reads the query parameters of the Engine API's `POST /build` (`dockerfile`, `t`
    /// (repeatable), `q`, `nocache`, `pull`, `buildargs` and `labels` (JSON objects),
    /// `target`, `networkmode`, `platform`, `version`). Resource limits (`memory`,
    /// `shmsize`, `extrahosts`, ...) are the backend's business and ignored here;
    /// `remote` contexts and BuildKit (`version=2`) are refused.
    pub fn from_query<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<BuildOptions, BuildError> {
        fn flag(name: &str, v: &str) -> Result<bool, BuildError> {
            match v {
                "" | "0" | "false" | "False" | "FALSE" => Ok(false),
                "1" | "true" | "True" | "TRUE" => Ok(true),
                _ => Err(BuildError::InvalidOption(format!(
                    "{name}={v:?} is not a boolean"
                ))),
            }
        }
        fn json_map(name: &str, v: &str) -> Result<BTreeMap<String, String>, BuildError> {
            if v.is_empty() {
                return Ok(BTreeMap::new());
            }
            let m: BTreeMap<String, Option<String>> = serde_json::from_str(v).map_err(|_| {
                BuildError::InvalidOption(format!("{name} must be a JSON object of strings"))
            })?;
            // `{"FOO": null}` means "take it from the client's environment": the client
            // had none, so the arg stays unset.
            Ok(m.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
        }
        let mut o = BuildOptions::default();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            match k {
                "dockerfile" => o.dockerfile = v.to_string(),
                "t" if !v.is_empty() => o.tags.push(v.to_string()),
                "q" => o.quiet = flag(k, v)?,
                "nocache" => o.no_cache = flag(k, v)?,
                "pull" => o.pull = !matches!(v, "" | "0" | "false" | "False"),
                "buildargs" => o.build_args = json_map(k, v)?,
                "labels" => o.labels = json_map(k, v)?,
                "target" if !v.is_empty() => o.target = Some(v.to_string()),
                "networkmode" if !v.is_empty() && v != "default" => {
                    o.network = Some(v.to_string())
                }
                "platform" if !v.is_empty() => o.platform = Some(v.to_string()),
                "remote" if !v.is_empty() => {
                    return Err(BuildError::InvalidOption(
                        "remote build contexts are not supported; send the context as a tar".into(),
                    ))
                }
                "version" if !v.is_empty() && v != "1" => {
                    return Err(BuildError::InvalidOption(format!(
                        "builder version {v} (BuildKit) is not supported; use the classic builder (version=1)"
                    )))
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// The outcome of a successful build.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildResult {
    /// The committed image id (`sha256:...`).
    pub image_id: String,
    /// The final state (layers, config, history).
    pub state: ImageState,
    /// The references tagged, normalised (`app` → `app:latest`).
    pub tags: Vec<String>,
    /// Steps run (`FROM` included).
    pub steps: usize,
    /// Steps answered from the cache.
    pub cached_steps: usize,
    /// Indexes of the stages built, in order.
    pub stages_built: Vec<usize>,
}

/// Builds the Dockerfile `opts.dockerfile` of `context`, writing the classic builder's log
/// to `out`, and returns the committed (and tagged) image.
pub fn build(
    opts: &BuildOptions,
    context: &BuildContext,
    backend: &mut dyn BuildBackend,
    out: &mut dyn Write,
) -> Result<BuildResult, BuildError> {
    let name = if opts.dockerfile.is_empty() {
        "Dockerfile"
    } else {
        opts.dockerfile.as_str()
    };
    let text = context.read_dockerfile(name)?;
    let df = parser::parse(&text)?;
    backend.use_predicted_layers(context.predicted_layers());
    let mut b = Builder {
        opts,
        df: &df,
        context,
        backend,
        log: Log {
            out,
            quiet: opts.quiet,
        },
        meta: BTreeMap::new(),
        consumed: BTreeSet::new(),
        stage_results: HashMap::new(),
        base_cache: HashMap::new(),
        scratch: None,
        step: 0,
        total: 0,
        cached: 0,
        counter: 0,
    };
    let result = b.run();
    // Scratch files go now; the backend hears how it ended.
    b.scratch = None;
    b.backend.finish(result.is_ok());
    result
}

struct Log<'o> {
    out: &'o mut dyn Write,
    quiet: bool,
}

impl Log<'_> {
    fn line(&mut self, s: &str) -> Result<(), BuildError> {
        if self.quiet {
            return Ok(());
        }
        writeln!(self.out, "{s}").map_err(BuildError::Output)
    }
}

/// Discards output (quiet builds).
struct Sink;
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Builder<'a, 'o> {
    opts: &'a BuildOptions,
    df: &'a Dockerfile,
    context: &'a BuildContext,
    backend: &'a mut dyn BuildBackend,
    log: Log<'o>,
    /// Global (pre-FROM) args with values.
    meta: BTreeMap<String, String>,
    /// Build args some ARG declared.
    consumed: BTreeSet<String>,
    stage_results: HashMap<usize, ImageState>,
    base_cache: HashMap<String, crate::backend::BaseImage>,
    scratch: Option<tempfile::TempDir>,
    step: usize,
    total: usize,
    cached: usize,
    counter: u64,
}

/// Per-stage dispatch state.
struct StageCtx {
    state: ImageState,
    /// Stage args in scope with values.
    args: BTreeMap<String, String>,
    cmd_set: bool,
}

impl StageCtx {
    /// Variables for expansion: args, overridden by ENV.
    fn vars(&self) -> BTreeMap<String, String> {
        let mut v = self.args.clone();
        for kv in &self.state.config.env {
            let (k, val) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            v.insert(k.to_string(), val.to_string());
        }
        v
    }
}

fn short(id: &str) -> &str {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    h.get(..12).unwrap_or(h)
}

fn default_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Formats argv like Docker's history (`["a" "b"]`).
fn go_list(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(" "))
}

fn nop(text: &str) -> String {
    format!("/bin/sh -c #(nop)  {text}")
}

/// Normalises a tag (`app` → `app:latest`).
fn normalize_tag(t: &str) -> String {
    let last = t.rsplit('/').next().unwrap_or(t);
    if last.contains(':') || t.contains('@') {
        t.to_string()
    } else {
        format!("{t}:latest")
    }
}

/// Joins and cleans an absolute image path.
fn clean_abs(base: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{}", if base.is_empty() { "/" } else { base }, p)
    };
    let mut out: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn valid_signal(s: &str) -> bool {
    const NAMES: &[&str] = &[
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "IOT", "BUS", "FPE", "KILL", "USR1", "SEGV",
        "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU",
        "URG", "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "POLL", "PWR", "SYS", "RTMIN",
        "RTMAX",
    ];
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let u = s.to_uppercase();
    let name = u.strip_prefix("SIG").unwrap_or(&u);
    let base = name.split(['+', '-']).next().unwrap_or(name);
    NAMES.contains(&base)
        && (base == name
            || (base.starts_with("RT") && name[base.len() + 1..].parse::<u32>().is_ok()))
}

/// Expands `EXPOSE` words into `port/proto` keys (ranges expanded).
fn expose_ports(word: &str) -> Option<Vec<String>> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !["tcp", "udp", "sctp"].contains(&proto.as_str()) {
        return None;
    }
    // A leading "ip:" part (docker accepts host:port specs in EXPOSE and ignores the host).
    let ports = ports.rsplit(':').next().unwrap_or(ports);
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>().ok()?, b.parse::<u16>().ok()?),
        None => {
            let p = ports.parse::<u16>().ok()?;
            (p, p)
        }
    };
    if lo == 0 || hi < lo {
        return None;
    }
    Some((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Whether this process runs as root (owners in `ADD` archives can be kept).
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Which of a source file's formats `ADD` would extract.
#[derive(Debug, PartialEq)]
enum Archive {
    No,
    Tar,
    Gzip,
    Other(&'static str),
}

fn sniff_archive(path: &Path) -> io::Result<Archive> {
    let mut f = fs::File::open(path)?;
    let mut head = vec![0u8; 512];
    let mut n = 0;
    while n < head.len() {
        let r = f.read(&mut head[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let head = &head[..n];
    if head.starts_with(&[0x1f, 0x8b]) {
        // Only treat gzip as an archive if it holds a tar.
        let mut dec = flate2::read::GzDecoder::new(fs::File::open(path)?);
        let mut inner = vec![0u8; 512];
        let mut m = 0;
        while m < inner.len() {
            match dec.read(&mut inner[m..]) {
                Ok(0) | Err(_) => break,
                Ok(r) => m += r,
            }
        }
        return Ok(if m >= 262 && &inner[257..262] == b"ustar" {
            Archive::Gzip
        } else {
            Archive::No
        });
    }
    if head.starts_with(b"BZh") {
        return Ok(Archive::Other("bzip2"));
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Ok(Archive::Other("xz"));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Archive::Other("zstd"));
    }
    if n >= 262 && &head[257..262] == b"ustar" {
        return Ok(Archive::Tar);
    }
    Ok(Archive::No)
}

/// One planned unit of a `COPY`/`ADD`.
enum Plan {
    /// Entries copied as they are; `(entry, destination)` pairs, parents first; whether
    /// they are this build's private files (see [`CopyItem::private`]).
    Tree(Vec<(Entry, String)>, bool),
    /// A local archive extracted into a directory.
    Extract {
        archive: PathBuf,
        gzip: bool,
        dest_dir: String,
    },
}

impl<'a, 'o> Builder<'a, 'o> {
    fn run(&mut self) -> Result<BuildResult, BuildError> {
        self.eval_meta_args()?;
        let target = self.target_index()?;
        let needed = self.needed_stages(target)?;
        self.total = needed
            .iter()
            .map(|&i| 1 + self.df.stages[i].instructions.len())
            .sum();
        let mut final_state = None;
        for &i in &needed {
            let st = self.build_stage(&self.df.stages[i])?;
            if i == target {
                final_state = Some(st.clone());
            }
            self.stage_results.insert(i, st);
        }
        let mut state =
            final_state.ok_or_else(|| BuildError::TargetNotFound(target.to_string()))?;
        for (k, v) in &self.opts.labels {
            state.config.labels.insert(k.clone(), v.clone());
        }
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.consumed.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.log.line(&format!(
                "[Warning] One or more build-args [{}] were not consumed",
                names.join(" ")
            ))?;
        }
        let image_id = self
            .backend
            .commit(&state)
            .map_err(|source| BuildError::Backend {
                what: "committing the image".into(),
                source,
            })?;
        self.log
            .line(&format!("Successfully built {}", short(&image_id)))?;
        let mut tags = Vec::new();
        for t in &self.opts.tags {
            let t = normalize_tag(t);
            self.backend
                .tag(&image_id, &t)
                .map_err(|source| BuildError::Backend {
                    what: format!("tagging {t}"),
                    source,
                })?;
            self.log.line(&format!("Successfully tagged {t}"))?;
            tags.push(t);
        }
        if self.opts.quiet {
            writeln!(self.log.out, "{image_id}").map_err(BuildError::Output)?;
        }
        Ok(BuildResult {
            image_id,
            state,
            tags,
            steps: self.step,
            cached_steps: self.cached,
            stages_built: needed,
        })
    }

    fn eval_meta_args(&mut self) -> Result<(), BuildError> {
        let arch = default_arch();
        for (k, v) in [
            ("BUILDPLATFORM", format!("linux/{arch}")),
            ("BUILDOS", "linux".to_string()),
            ("BUILDARCH", arch.to_string()),
            ("TARGETPLATFORM", format!("linux/{arch}")),
            ("TARGETOS", "linux".to_string()),
            ("TARGETARCH", arch.to_string()),
        ] {
            self.meta.insert(k.to_string(), v);
        }
        for inst in &self.df.meta_args {
            if let InstructionKind::Arg(decls) = &inst.kind {
                for d in decls {
                    self.consumed.insert(d.name.clone());
                    let v = match self.opts.build_args.get(&d.name) {
                        Some(v) => Some(v.clone()),
                        None => match &d.default {
                            Some(def) => {
                                Some(expand_word(def, &self.meta, self.df.escape).map_err(
                                    |source| BuildError::Expand {
                                        line: inst.line,
                                        source,
                                    },
                                )?)
                            }
                            None => None,
                        },
                    };
                    match v {
                        Some(v) => {
                            self.meta.insert(d.name.clone(), v);
                        }
                        None => {
                            self.meta.remove(&d.name);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn target_index(&self) -> Result<usize, BuildError> {
        match &self.opts.target {
            None => Ok(self.df.stages.len() - 1),
            Some(t) => {
                let lower = t.to_lowercase();
                self.df
                    .stages
                    .iter()
                    .find(|s| s.name.as_deref() == Some(lower.as_str()))
                    .map(|s| s.index)
                    .or_else(|| {
                        t.parse::<usize>()
                            .ok()
                            .filter(|i| *i < self.df.stages.len())
                    })
                    .ok_or_else(|| BuildError::TargetNotFound(t.clone()))
            }
        }
    }

    /// The stage a `FROM`/`--from` word refers to, if any (only earlier stages).
    fn stage_ref(&self, word: &str, before: usize, allow_index: bool) -> Option<usize> {
        let lower = word.to_lowercase();
        if let Some(s) = self.df.stages[..before]
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(s.index);
        }
        if allow_index {
            if let Ok(i) = word.parse::<usize>() {
                return Some(i);
            }
        }
        None
    }

    /// Stage dependencies, resolved with the global args (as Docker does for the graph).
    fn deps(&self, stage: &Stage) -> Result<Vec<usize>, BuildError> {
        let mut deps = Vec::new();
        if let InstructionKind::From { image, .. } = &stage.from.kind {
            let img = expand_word(image, &self.meta, self.df.escape).map_err(|source| {
                BuildError::Expand {
                    line: stage.from.line,
                    source,
                }
            })?;
            if let Some(i) = self.stage_ref(&img, stage.index, false) {
                deps.push(i);
            }
        }
        for inst in &stage.instructions {
            if let InstructionKind::Copy(CopySpec {
                from: Some(from), ..
            }) = &inst.kind
            {
                let f = expand_word(from, &self.meta, self.df.escape).unwrap_or(from.clone());
                if let Some(i) = self.stage_ref(&f, stage.index, true) {
                    if i >= stage.index {
                        return Err(BuildError::step(
                            inst.line,
                            format!("COPY --from={f} refers to the current or a later stage"),
                        ));
                    }
                    deps.push(i);
                }
            }
        }
        Ok(deps)
    }

    fn needed_stages(&self, target: usize) -> Result<Vec<usize>, BuildError> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(self.deps(&self.df.stages[i])?);
            }
        }
        Ok(needed.into_iter().collect())
    }

    fn next_container_id(&mut self, key: &str) -> String {
        self.counter += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut h = Sha256::new();
        h.update(key.as_bytes());
        h.update(self.counter.to_le_bytes());
        h.update(nanos.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        hex::encode(h.finalize())
    }

    fn scratch_dir(&mut self) -> Result<PathBuf, BuildError> {
        if self.scratch.is_none() {
            let mut b = tempfile::Builder::new();
            b.prefix("berth-build-");
            let t = match &self.opts.scratch_dir {
                Some(d) => b.tempdir_in(d),
                None => b.tempdir(),
            }
            .map_err(|source| BuildError::Io {
                what: "creating scratch directory in",
                path: self
                    .opts
                    .scratch_dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir),
                source,
            })?;
            self.scratch = Some(t);
        }
        let base = self
            .scratch
            .as_ref()
            .map(|t| t.path().to_path_buf())
            .unwrap_or_default();
        self.counter += 1;
        let p = base.join(format!("s{}", self.counter));
        fs::create_dir_all(&p).map_err(|source| BuildError::Io {
            what: "creating",
            path: p.clone(),
            source,
        })?;
        Ok(p)
    }

    fn resolve_image(
        &mut self,
        image: &str,
        platform: Option<&str>,
    ) -> Result<crate::backend::BaseImage, BuildError> {
        let key = format!("{image}\0{}", platform.unwrap_or(""));
        if let Some(b) = self.base_cache.get(&key) {
            return Ok(b.clone());
        }
        let res = if self.opts.quiet {
            self.backend
                .resolve_base(image, platform, self.opts.pull, &mut Sink)
        } else {
            self.backend
                .resolve_base(image, platform, self.opts.pull, self.log.out)
        };
        let b = res.map_err(|source| BuildError::Backend {
            what: format!("resolving base image {image}"),
            source,
        })?;
        self.base_cache.insert(key, b.clone());
        Ok(b)
    }

    fn build_stage(&mut self, stage: &'a Stage) -> Result<ImageState, BuildError> {
        let InstructionKind::From {
            image, platform, ..
        } = &stage.from.kind
        else {
            return Err(BuildError::parse(stage.from.line, "stage without FROM"));
        };
        self.step += 1;
        self.log.line(&format!(
            "Step {}/{} : {}",
            self.step, self.total, stage.from.text
        ))?;
        let esc = self.df.escape;
        let line = stage.from.line;
        let img = expand_word(image, &self.meta, esc)
            .map_err(|source| BuildError::Expand { line, source })?;
        if img.is_empty() {
            return Err(BuildError::step(line, "base name should not be blank"));
        }
        let platform = match platform {
            Some(p) => Some(
                expand_word(p, &self.meta, esc)
                    .map_err(|source| BuildError::Expand { line, source })?,
            ),
            None => self.opts.platform.clone(),
        };
        let (state, shown_id) = if img.eq_ignore_ascii_case("scratch") {
            let st = ImageState {
                os: "linux".into(),
                architecture: default_arch().into(),
                ..Default::default()
            };
            let id = st.id();
            (st, id)
        } else if let Some(i) = self.stage_ref(&img, stage.index, false) {
            let st = self
                .stage_results
                .get(&i)
                .cloned()
                .ok_or_else(|| BuildError::step(line, format!("stage {img} was not built")))?;
            let id = st.id();
            (st, id)
        } else {
            let b = self.resolve_image(&img, platform.as_deref())?;
            (b.state, b.id)
        };
        self.log.line(&format!(" ---> {}", short(&shown_id)))?;
        let mut ctx = StageCtx {
            state,
            args: BTreeMap::new(),
            cmd_set: false,
        };
        // ONBUILD triggers of the base run first, then are cleared.
        let triggers = std::mem::take(&mut ctx.state.config.on_build);
        if !triggers.is_empty() {
            self.log.line(&format!(
                "# Executing {} build trigger{}",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ))?;
            for t in &triggers {
                let inst = parser::parse_trigger(t, esc, line)?;
                self.dispatch(&mut ctx, &inst, stage.index)?;
            }
        }
        for inst in &stage.instructions {
            self.step += 1;
            self.log.line(&format!(
                "Step {}/{} : {}",
                self.step, self.total, inst.text
            ))?;
            self.dispatch(&mut ctx, inst, stage.index)?;
            self.log
                .line(&format!(" ---> {}", short(&ctx.state.id())))?;
        }
        Ok(ctx.state)
    }

    fn cache_key(&self, parent: &ImageState, parts: &[&str]) -> CacheKey {
        let mut h = Sha256::new();
        h.update(b"berth-build-cache-v1\0");
        h.update(parent.id().as_bytes());
        for p in parts {
            h.update([0]);
            h.update(p.as_bytes());
        }
        CacheKey(hex::encode(h.finalize()))
    }

    fn lookup(&mut self, key: &CacheKey) -> Result<Option<ImageState>, BuildError> {
        if self.opts.no_cache {
            return Ok(None);
        }
        match self.backend.cache_get(key) {
            Some(s) => {
                self.cached += 1;
                self.log.line(" ---> Using cache")?;
                Ok(Some(s))
            }
            None => Ok(None),
        }
    }

    /// A metadata-only step: `f` edits a copy of the config; one empty-layer history entry.
    fn meta_step(
        &mut self,
        ctx: &mut StageCtx,
        created_by: String,
        f: impl FnOnce(&mut ImageState),
    ) -> Result<(), BuildError> {
        let key = self.cache_key(&ctx.state, &["meta", &created_by]);
        if let Some(s) = self.lookup(&key)? {
            ctx.state = s;
            return Ok(());
        }
        let mut next = ctx.state.clone();
        f(&mut next);
        next.history.push(HistoryEntry {
            created_by,
            empty_layer: true,
            comment: String::new(),
        });
        // Stored even with --no-cache (as Docker keeps intermediate images): a later
        // build may use it.
        self.backend.cache_put(&key, &next);
        ctx.state = next;
        Ok(())
    }

    fn shell_of(ctx: &StageCtx) -> Vec<String> {
        ctx.state
            .config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn argv(ctx: &StageCtx, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = Self::shell_of(ctx);
                v.push(s.clone());
                v
            }
        }
    }

    fn dispatch(
        &mut self,
        ctx: &mut StageCtx,
        inst: &Instruction,
        stage_index: usize,
    ) -> Result<(), BuildError> {
        let esc = self.df.escape;
        let line = inst.line;
        let xerr = |source| BuildError::Expand { line, source };
        match &inst.kind {
            InstructionKind::From { .. } => Err(BuildError::parse(line, "FROM inside a stage")),
            InstructionKind::Env(kvs) => {
                let vars = ctx.vars();
                let mut pairs = Vec::new();
                for kv in kvs {
                    let k = expand_word(&kv.key, &vars, esc).map_err(xerr)?;
                    let v = expand_word(&kv.value, &vars, esc).map_err(xerr)?;
                    if k.is_empty() {
                        return Err(BuildError::step(line, "ENV names can not be blank"));
                    }
                    pairs.push((k, v));
                }
                let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                self.meta_step(ctx, nop(&format!("ENV {}", text.join(" "))), |s| {
                    for (k, v) in &pairs {
                        s.config.env_set(k, v);
                    }
                })
            }
            InstructionKind::Label(kvs) => {
                let vars = ctx.vars();
                let mut pairs = Vec::new();
                for kv in kvs {
                    let k = expand_word(&kv.key, &vars, esc).map_err(xerr)?;
                    let v = expand_word(&kv.value, &vars, esc).map_err(xerr)?;
                    if k.is_empty() {
                        return Err(BuildError::step(line, "LABEL names can not be blank"));
                    }
                    pairs.push((k, v));
                }
                let text: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        format!(
                            "{}={}",
                            serde_json::to_string(k).unwrap_or_default(),
                            serde_json::to_string(v).unwrap_or_default()
                        )
                    })
                    .collect();
                self.meta_step(ctx, nop(&format!("LABEL {}", text.join(" "))), |s| {
                    for (k, v) in pairs {
                        s.config.labels.insert(k, v);
                    }
                })
            }
            InstructionKind::Arg(decls) => {
                let mut shown = Vec::new();
                for d in decls {
                    self.consumed.insert(d.name.clone());
                    let value = match self.opts.build_args.get(&d.name) {
                        Some(v) => Some(v.clone()),
                        None => match &d.default {
                            Some(def) => Some(expand_word(def, &ctx.vars(), esc).map_err(xerr)?),
                            None => self.meta.get(&d.name).cloned(),
                        },
                    };
                    match &d.default {
                        Some(def) => shown.push(format!("{}={def}", d.name)),
                        None => shown.push(d.name.clone()),
                    }
                    match value {
                        Some(v) => {
                            ctx.args.insert(d.name.clone(), v);
                        }
                        None => {
                            ctx.args.remove(&d.name);
                        }
                    }
                }
                // The values in scope feed later cache keys through `arg_env`.
                let created = nop(&format!("ARG {}", shown.join(" ")));
                self.meta_step(ctx, created, |_| {})
            }
            InstructionKind::Cmd(c) => {
                let argv = Self::argv(ctx, c);
                ctx.cmd_set = true;
                self.meta_step(ctx, nop(&format!("CMD {}", go_list(&argv))), |s| {
                    s.config.cmd = Some(argv);
                })
            }
            InstructionKind::Entrypoint(c) => {
                let argv = Self::argv(ctx, c);
                let keep_cmd = ctx.cmd_set;
                self.meta_step(ctx, nop(&format!("ENTRYPOINT {}", go_list(&argv))), |s| {
                    s.config.entrypoint = Some(argv);
                    if !keep_cmd {
                        s.config.cmd = None;
                    }
                })
            }
            InstructionKind::Expose(words) => {
                let vars = ctx.vars();
                let mut ports = Vec::new();
                for w in words {
                    for p in expand_words(w, &vars, esc).map_err(xerr)? {
                        let expanded = expose_ports(&p).ok_or_else(|| {
                            BuildError::step(line, format!("invalid containerPort: {p}"))
                        })?;
                        ports.extend(expanded);
                    }
                }
                self.meta_step(ctx, nop(&format!("EXPOSE {}", ports.join(" "))), |s| {
                    for p in ports {
                        s.config.exposed_ports.insert(p, Empty {});
                    }
                })
            }
            InstructionKind::Workdir(w) => {
                let w = expand_word(w, &ctx.vars(), esc).map_err(xerr)?;
                if w.is_empty() {
                    return Err(BuildError::step(line, "WORKDIR cannot be empty"));
                }
                let dir = clean_abs(&ctx.state.config.working_dir, &w);
                self.meta_step(ctx, nop(&format!("WORKDIR {dir}")), |s| {
                    s.config.working_dir = dir;
                })
            }
            InstructionKind::User(u) => {
                let u = expand_word(u, &ctx.vars(), esc).map_err(xerr)?;
                self.meta_step(ctx, nop(&format!("USER {u}")), |s| s.config.user = u)
            }
            InstructionKind::Volume(vols) => {
                let vars = ctx.vars();
                let mut out = Vec::new();
                for v in vols {
                    let v = expand_word(v, &vars, esc).map_err(xerr)?;
                    if v.trim().is_empty() {
                        return Err(BuildError::step(
                            line,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    out.push(v);
                }
                self.meta_step(ctx, nop(&format!("VOLUME {}", go_list(&out))), |s| {
                    for v in out {
                        s.config.volumes.insert(v, Empty {});
                    }
                })
            }
            InstructionKind::Stopsignal(sig) => {
                let sig = expand_word(sig, &ctx.vars(), esc).map_err(xerr)?;
                if !valid_signal(&sig) {
                    return Err(BuildError::step(line, format!("invalid signal: {sig}")));
                }
                self.meta_step(ctx, nop(&format!("STOPSIGNAL {sig}")), |s| {
                    s.config.stop_signal = Some(sig)
                })
            }
            InstructionKind::Healthcheck(h) => {
                let hc = match &h.command {
                    None => HealthConfig {
                        test: vec!["NONE".into()],
                        ..Default::default()
                    },
                    Some(c) => HealthConfig {
                        test: match c {
                            Command::Exec(v) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v.iter().cloned());
                                t
                            }
                            Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
                        },
                        interval: h.interval.unwrap_or(0),
                        timeout: h.timeout.unwrap_or(0),
                        start_period: h.start_period.unwrap_or(0),
                        start_interval: h.start_interval.unwrap_or(0),
                        retries: h.retries.unwrap_or(0),
                    },
                };
                let text = format!("HEALTHCHECK {}", go_list(&hc.test));
                self.meta_step(ctx, nop(&text), |s| s.config.healthcheck = Some(hc))
            }
            InstructionKind::Onbuild(t) => {
                let t = t.clone();
                self.meta_step(ctx, nop(&format!("ONBUILD {t}")), |s| {
                    s.config.on_build.push(t)
                })
            }
            InstructionKind::Maintainer(m) => {
                let m = m.clone();
                self.meta_step(ctx, nop(&format!("MAINTAINER {m}")), |s| s.author = m)
            }
            InstructionKind::Shell(args) => {
                let args = args.clone();
                self.meta_step(ctx, nop(&format!("SHELL {}", go_list(&args))), |s| {
                    s.config.shell = Some(args)
                })
            }
            InstructionKind::Run {
                command,
                heredoc,
                network,
            } => self.run_step(ctx, line, command, heredoc.as_ref(), network.as_deref()),
            InstructionKind::Copy(spec) => self.copy_step(ctx, line, spec, stage_index),
        }
    }

    /// Build args visible to RUN: `(persisted in history, env for the command)`.
    fn arg_env(&self, ctx: &StageCtx) -> (Vec<String>, Vec<String>) {
        let mut hist = Vec::new();
        let mut env = Vec::new();
        for (k, v) in &ctx.args {
            if ctx.state.config.env_get(k).is_some() {
                continue;
            }
            env.push(format!("{k}={v}"));
            if !PROXY_ARGS.contains(&k.as_str()) {
                hist.push(format!("{k}={v}"));
            }
        }
        for p in PROXY_ARGS {
            if let Some(v) = self.opts.build_args.get(*p) {
                if !ctx.args.contains_key(*p) {
                    env.push(format!("{p}={v}"));
                }
            }
        }
        (hist, env)
    }

    fn run_step(
        &mut self,
        ctx: &mut StageCtx,
        line: usize,
        command: &Command,
        heredoc: Option<&parser::Heredoc>,
        network: Option<&str>,
    ) -> Result<(), BuildError> {
        let (argv, stdin) = match (command, heredoc) {
            (Command::Shell(s), Some(h)) if s.is_empty() => {
                match h.content.lines().next().and_then(|l| l.strip_prefix("#!")) {
                    // A script with a shebang runs under its interpreter, fed on stdin.
                    Some(interp) if !interp.trim().is_empty() => {
                        let interp = interp.trim();
                        let v = match interp.split_once(char::is_whitespace) {
                            Some((i, arg)) => vec![i.to_string(), arg.trim().to_string()],
                            None => vec![interp.to_string()],
                        };
                        (v, Some(h.content.clone().into_bytes()))
                    }
                    _ => {
                        let mut v = Self::shell_of(ctx);
                        v.push(h.content.clone());
                        (v, None)
                    }
                }
            }
            (c, Some(h)) => (Self::argv(ctx, c), Some(h.content.clone().into_bytes())),
            (c, None) => (Self::argv(ctx, c), None),
        };
        if argv.is_empty() {
            return Err(BuildError::step(line, "RUN needs a command"));
        }
        let (hist_args, arg_env) = self.arg_env(ctx);
        let cmdline = argv.join(" ");
        let created_by = if hist_args.is_empty() {
            cmdline.clone()
        } else {
            format!("|{} {} {}", hist_args.len(), hist_args.join(" "), cmdline)
        };
        let stdin_hash = stdin
            .as_ref()
            .map(|s| hex::encode(Sha256::digest(s)))
            .unwrap_or_default();
        // The step's own `RUN --network` is part of its key, as in BuildKit (the flag is
        // the network mode of the step's ExecOp, which its cache key digests); the build's
        // `--network` is not, as in Docker's classic builder (its cache probe compares
        // only the step's container config, never the host config that holds the network
        // mode: moby image/cache compare.go). `default` is the same as no flag, and a
        // step without the flag keeps the key it always had.
        let key = match network.filter(|n| *n != "default") {
            Some(n) => self.cache_key(
                &ctx.state,
                &["run", &created_by, &stdin_hash, &format!("network={n}")],
            ),
            None => self.cache_key(&ctx.state, &["run", &created_by, &stdin_hash]),
        };
        if let Some(s) = self.lookup(&key)? {
            ctx.state = s;
            return Ok(());
        }
        let mut env = ctx.state.config.env.clone();
        env.extend(arg_env);
        let spec = RunSpec {
            container_id: self.next_container_id(&key.0),
            args: argv,
            env,
            workdir: if ctx.state.config.working_dir.is_empty() {
                "/".into()
            } else {
                ctx.state.config.working_dir.clone()
            },
            user: ctx.state.config.user.clone(),
            network: network
                .map(str::to_string)
                .or_else(|| self.opts.network.clone()),
            stdin,
        };
        self.log
            .line(&format!(" ---> Running in {}", short(&spec.container_id)))?;
        let res = if self.opts.quiet {
            self.backend.run(&ctx.state, &spec, &mut Sink)
        } else {
            self.backend.run(&ctx.state, &spec, self.log.out)
        }
        .map_err(|source| BuildError::Backend {
            what: format!("running {cmdline:?}"),
            source,
        })?;
        if res.exit_code != 0 {
            return Err(BuildError::RunFailed {
                command: cmdline,
                code: res.exit_code,
            });
        }
        self.log.line(&format!(
            "Removing intermediate container {}",
            short(&spec.container_id)
        ))?;
        let mut next = ctx.state.clone();
        if let Some(l) = &res.layer {
            next.layers.push(l.clone());
        }
        next.history.push(HistoryEntry {
            created_by,
            empty_layer: res.layer.is_none(),
            comment: String::new(),
        });
        // Stored even with --no-cache (as Docker keeps intermediate images): a later
        // build may use it.
        self.backend.cache_put(&key, &next);
        ctx.state = next;
        Ok(())
    }

    fn copy_step(
        &mut self,
        ctx: &mut StageCtx,
        line: usize,
        spec: &CopySpec,
        stage_index: usize,
    ) -> Result<(), BuildError> {
        let esc = self.df.escape;
        let vars = ctx.vars();
        let xerr = |source| BuildError::Expand { line, source };
        let keyword = if spec.add { "ADD" } else { "COPY" };
        let dest = expand_word(&spec.dest, &vars, esc).map_err(xerr)?;
        let chown = match &spec.chown {
            Some(c) => Some(expand_word(c, &vars, esc).map_err(xerr)?),
            None => None,
        };
        let chmod = match &spec.chmod {
            Some(c) => {
                let c = expand_word(c, &vars, esc).map_err(xerr)?;
                let m = u32::from_str_radix(&c, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        BuildError::step(
                            line,
                            format!("invalid --chmod value {c:?}: expected octal mode"),
                        )
                    })?;
                Some(m)
            }
            None => None,
        };
        // The root to copy from: the context, an earlier stage, or an image.
        let mut mounted: Option<PathBuf> = None;
        let (root, scope) = match &spec.from {
            None => (self.context.root().to_path_buf(), Scope::Context),
            Some(f) => {
                let f = expand_word(f, &vars, esc).map_err(xerr)?;
                let state = match self.stage_ref(&f, stage_index, true) {
                    Some(i) => self.stage_results.get(&i).cloned().ok_or_else(|| {
                        BuildError::step(line, format!("COPY --from={f}: stage not built"))
                    })?,
                    None => {
                        self.resolve_image(&f, self.opts.platform.clone().as_deref())?
                            .state
                    }
                };
                let p =
                    self.backend
                        .mount_rootfs(&state)
                        .map_err(|source| BuildError::Backend {
                            what: format!("mounting the filesystem of {f}"),
                            source,
                        })?;
                mounted = Some(p.clone());
                (p, Scope::Rootfs)
            }
        };
        let result = self.copy_from_root(
            ctx, line, spec, keyword, &root, scope, &dest, chown, chmod, &vars,
        );
        if let Some(p) = mounted {
            let unmounted = self.backend.unmount_rootfs(&p);
            if let (Ok(()), Err(source)) = (&result, unmounted) {
                return Err(BuildError::Backend {
                    what: "unmounting a stage filesystem".into(),
                    source,
                });
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_from_root(
        &mut self,
        ctx: &mut StageCtx,
        line: usize,
        spec: &CopySpec,
        keyword: &str,
        root: &Path,
        scope: Scope,
        dest: &str,
        chown: Option<String>,
        chmod: Option<u32>,
        vars: &BTreeMap<String, String>,
    ) -> Result<(), BuildError> {
        let esc = self.df.escape;
        let ignore = match scope {
            Scope::Context => Some(self.context.ignore()),
            Scope::Rootfs => None,
        };
        let workdir = ctx.state.config.working_dir.clone();
        let dest_abs = clean_abs(&workdir, dest);
        let dest_is_dir = dest.ends_with('/')
            || dest == "."
            || dest.ends_with("/.")
            || dest == ".."
            || dest.ends_with("/..");

        // Resolve every source first: (host path, name, is_dir, is archive candidate).
        struct Src {
            path: PathBuf,
            name: String,
            is_dir: bool,
            ctx_rel: Option<String>,
            local_for_add: bool,
            /// A file of this build's own (see [`CopyItem::private`]).
            private: bool,
        }
        let private_context = scope == Scope::Context && self.context.is_private();
        let mut srcs: Vec<Src> = Vec::new();
        for s in &spec.sources {
            match s {
                CopySource::Heredoc(h) => {
                    let body = if h.expand {
                        expand_heredoc(&h.content, vars, esc)
                            .map_err(|source| BuildError::Expand { line, source })?
                    } else {
                        h.content.clone()
                    };
                    let dir = self.scratch_dir()?;
                    let name = if h.name.is_empty() || h.name.contains('/') {
                        "heredoc".to_string()
                    } else {
                        h.name.clone()
                    };
                    let p = dir.join(&name);
                    fs::write(&p, body).map_err(|source| BuildError::Io {
                        what: "writing",
                        path: p.clone(),
                        source,
                    })?;
                    srcs.push(Src {
                        path: p,
                        name,
                        is_dir: false,
                        ctx_rel: None,
                        local_for_add: false,
                        private: true,
                    });
                }
                CopySource::Path(p) => {
                    let p = expand_word(p, vars, esc)
                        .map_err(|source| BuildError::Expand { line, source })?;
                    if spec.add && (p.starts_with("http://") || p.starts_with("https://")) {
                        let dir = self.scratch_dir()?;
                        let name = p
                            .split(['?', '#'])
                            .next()
                            .unwrap_or(&p)
                            .rsplit('/')
                            .find(|s| !s.is_empty())
                            .unwrap_or("download")
                            .to_string();
                        let file = dir.join(&name);
                        self.backend.fetch_url(&p, &file).map_err(|source| {
                            BuildError::Backend {
                                what: format!("line {line}: downloading {p}"),
                                source,
                            }
                        })?;
                        let _ = fs::set_permissions(
                            &file,
                            std::os::unix::fs::PermissionsExt::from_mode(0o600),
                        );
                        srcs.push(Src {
                            path: file,
                            name,
                            is_dir: false,
                            ctx_rel: None,
                            local_for_add: false,
                            private: true,
                        });
                        continue;
                    }
                    let found = context::sources_in(root, &p, scope, ignore).map_err(|e| match e {
                        context::ContextError::NotFound(_) => BuildError::step(
                            line,
                            format!("{keyword} failed: file not found in build context or excluded by .dockerignore: {p}"),
                        ),
                        other => BuildError::Context(other),
                    })?;
                    for f in found {
                        let name = f.rel.rsplit('/').next().unwrap_or("").to_string();
                        srcs.push(Src {
                            path: f.path,
                            name,
                            is_dir: f.is_dir,
                            ctx_rel: (scope == Scope::Context).then_some(f.rel),
                            local_for_add: spec.add,
                            private: private_context,
                        });
                    }
                }
            }
        }
        if srcs.len() > 1 && !dest_is_dir {
            return Err(BuildError::step(
                line,
                format!("When using {keyword} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }
        let into_existing_dir = if srcs.len() == 1 && !srcs[0].is_dir && !dest_is_dir {
            self.backend
                .is_dir(&ctx.state, &dest_abs)
                .map_err(|source| BuildError::Backend {
                    what: format!("checking {dest_abs}"),
                    source,
                })?
        } else {
            false
        };

        // Plan (stat only) and hash (file contents; hashed already while a tar context
        // arrived).
        let hash_started = std::time::Instant::now();
        let context = self.context;
        let known = (scope == Scope::Context).then_some(context);
        let mut plans = Vec::new();
        let mut h = Sha256::new();
        h.update(
            format!(
                "{keyword}\0{}\0{}\0",
                chown.as_deref().unwrap_or(""),
                chmod.unwrap_or(0)
            )
            .as_bytes(),
        );
        for s in &srcs {
            if s.is_dir {
                let mut entries = Vec::new();
                let ctx_rel = s.ctx_rel.clone().unwrap_or_default();
                context::walk(
                    &s.path,
                    &ctx_rel,
                    ignore.filter(|_| s.ctx_rel.is_some()),
                    &mut |e| {
                        let d = clean_abs(&dest_abs, &e.rel);
                        h.update(d.as_bytes());
                        context::hash_entry(&e, &mut h, known)?;
                        entries.push((e, d));
                        Ok(())
                    },
                )?;
                // An empty directory source still creates its destination.
                h.update(b"dir\0");
                h.update(dest_abs.as_bytes());
                plans.push(Plan::Tree(entries, s.private));
                continue;
            }
            let target = if dest_is_dir || into_existing_dir {
                clean_abs(&dest_abs, &s.name)
            } else {
                dest_abs.clone()
            };
            let meta = fs::metadata(&s.path).map_err(|source| BuildError::Io {
                what: "reading",
                path: s.path.clone(),
                source,
            })?;
            if s.local_for_add {
                let kind = sniff_archive(&s.path).map_err(|source| BuildError::Io {
                    what: "reading",
                    path: s.path.clone(),
                    source,
                })?;
                match kind {
                    Archive::Tar | Archive::Gzip => {
                        h.update(b"archive\0");
                        h.update(dest_abs.as_bytes());
                        context::hash_file(&s.path, &mut h)?;
                        plans.push(Plan::Extract {
                            archive: s.path.clone(),
                            gzip: kind == Archive::Gzip,
                            dest_dir: dest_abs.clone(),
                        });
                        continue;
                    }
                    Archive::Other(fmt) => {
                        return Err(BuildError::step(
                            line,
                            format!("ADD: {fmt}-compressed archive {} is not supported; use a plain or gzip tar", s.name),
                        ))
                    }
                    Archive::No => {}
                }
            }
            let e = Entry {
                rel: String::new(),
                path: s.path.clone(),
                kind: EntryKind::File(meta.len()),
                mode: std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
            };
            h.update(target.as_bytes());
            context::hash_entry(&e, &mut h, known)?;
            plans.push(Plan::Tree(vec![(e, target)], s.private));
        }
        let content = hex::encode(h.finalize());
        tracing::debug!(
            hash_ms = hash_started.elapsed().as_millis() as u64,
            "{keyword} sources hashed"
        );
        let kind = if srcs.len() == 1 {
            if srcs[0].is_dir {
                "dir"
            } else {
                "file"
            }
        } else {
            "multi"
        };
        let created_by =
            nop(&format!("{keyword} {kind}:{content} in {dest} ")).replace("#(nop)  ", "#(nop) ");
        let key = self.cache_key(&ctx.state, &["copy", &created_by]);
        if let Some(s) = self.lookup(&key)? {
            ctx.state = s;
            return Ok(());
        }
        // Cache miss: materialise the items.
        let mut items = Vec::new();
        for plan in plans {
            match plan {
                Plan::Tree(entries, private) => {
                    for (e, d) in entries {
                        items.push(CopyItem {
                            src: e.path,
                            dest: d,
                            chown: chown.clone(),
                            chmod,
                            keep_owner: false,
                            private,
                        });
                    }
                }
                Plan::Extract {
                    archive,
                    gzip,
                    dest_dir,
                } => {
                    let dir = self.scratch_dir()?;
                    let f = fs::File::open(&archive).map_err(|source| BuildError::Io {
                        what: "opening",
                        path: archive.clone(),
                        source,
                    })?;
                    let reader: Box<dyn Read> = if gzip {
                        Box::new(flate2::read::GzDecoder::new(f))
                    } else {
                        Box::new(f)
                    };
                    let as_root = running_as_root();
                    let mut ar = tar::Archive::new(reader);
                    ar.set_preserve_permissions(true);
                    ar.set_unpack_xattrs(false);
                    let entries = ar.entries().map_err(|source| BuildError::Io {
                        what: "extracting",
                        path: archive.clone(),
                        source,
                    })?;
                    for en in entries {
                        let mut en = en.map_err(|source| BuildError::Io {
                            what: "extracting",
                            path: archive.clone(),
                            source,
                        })?;
                        if !context::plain_entry(en.header().entry_type()) {
                            continue;
                        }
                        let owner = match (en.header().uid(), en.header().gid()) {
                            (Ok(u), Ok(g)) => Some((u as u32, g as u32)),
                            _ => None,
                        };
                        let rel = en.path().map(|p| p.into_owned()).ok();
                        let unpacked = en.unpack_in(&dir).map_err(|source| BuildError::Io {
                            what: "extracting",
                            path: archive.clone(),
                            source,
                        })?;
                        // Keep the archive's owners (root only can; others get their own).
                        if let (true, true, Some((u, g)), Some(rel)) =
                            (unpacked, as_root, owner, rel)
                        {
                            let p = dir.join(rel);
                            std::os::unix::fs::lchown(&p, Some(u), Some(g)).map_err(|source| {
                                BuildError::Io {
                                    what: "setting the owner of",
                                    path: p.clone(),
                                    source,
                                }
                            })?;
                        }
                    }
                    context::walk(&dir, "", None, &mut |e| {
                        let d = clean_abs(&dest_dir, &e.rel);
                        items.push(CopyItem {
                            src: e.path,
                            dest: d,
                            chown: chown.clone(),
                            chmod: None,
                            keep_owner: true,
                            private: true,
                        });
                        Ok(())
                    })?;
                }
            }
        }
        let layer = if items.is_empty() && srcs.iter().all(|s| !s.is_dir) {
            None
        } else {
            // An empty directory source still creates the destination directory.
            if items.is_empty() {
                let src = srcs
                    .iter()
                    .find(|s| s.is_dir)
                    .map(|s| s.path.clone())
                    .unwrap_or_else(|| root.to_path_buf());
                items.push(CopyItem {
                    src,
                    dest: dest_abs.clone(),
                    chown: chown.clone(),
                    chmod,
                    keep_owner: false,
                    private: false,
                });
            }
            self.backend
                .add_files(&ctx.state, &items)
                .map_err(|source| BuildError::Backend {
                    what: format!("{keyword} to {dest_abs}"),
                    source,
                })?
        };
        let mut next = ctx.state.clone();
        if let Some(l) = &layer {
            next.layers.push(l.clone());
        }
        next.history.push(HistoryEntry {
            created_by,
            empty_layer: layer.is_none(),
            comment: String::new(),
        });
        // Stored even with --no-cache (as Docker keeps intermediate images): a later
        // build may use it.
        self.backend.cache_put(&key, &next);
        ctx.state = next;
        Ok(())
    }
}

/// Errors from the backend keep their kind; convenient for implementations.
impl From<BackendError> for BuildError {
    fn from(source: BackendError) -> Self {
        BuildError::Backend {
            what: "build backend".into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_query_options() {
        let o = BuildOptions::from_query([
            ("dockerfile", "sub/Dockerfile"),
            ("t", "a:1"),
            ("t", "b"),
            ("q", "1"),
            ("nocache", "true"),
            ("pull", "1"),
            ("buildargs", r#"{"A":"1","FROM_ENV":null}"#),
            ("labels", r#"{"l":"v"}"#),
            ("target", "build"),
            ("networkmode", "host"),
            ("platform", "linux/amd64"),
            ("memory", "0"),
            ("version", "1"),
        ])
        .unwrap();
        assert_eq!(o.dockerfile, "sub/Dockerfile");
        assert_eq!(o.tags, ["a:1", "b"]);
        assert!(o.quiet && o.no_cache && o.pull);
        assert_eq!(o.build_args, BTreeMap::from([("A".into(), "1".into())]));
        assert_eq!(o.labels.get("l").map(String::as_str), Some("v"));
        assert_eq!(o.target.as_deref(), Some("build"));
        assert_eq!(o.network.as_deref(), Some("host"));
        assert_eq!(o.platform.as_deref(), Some("linux/amd64"));
        let d = BuildOptions::from_query([("pull", ""), ("networkmode", "default")]).unwrap();
        assert!(!d.pull && d.network.is_none() && d.dockerfile.is_empty());
        for bad in [
            ("q", "maybe"),
            ("buildargs", "[1]"),
            ("version", "2"),
            ("remote", "https://x/y.git"),
        ] {
            let e = BuildOptions::from_query([bad]).unwrap_err();
            assert!(matches!(e, BuildError::InvalidOption(_)), "{bad:?}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(clean_abs("/app", "src/../bin"), "/app/bin");
        assert_eq!(clean_abs("", "x"), "/x");
        assert_eq!(clean_abs("/a", "/b/"), "/b");
        assert_eq!(normalize_tag("app"), "app:latest");
        assert_eq!(
            normalize_tag("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(normalize_tag("app:v1"), "app:v1");
        assert!(valid_signal("SIGTERM") && valid_signal("kill") && valid_signal("9"));
        assert!(valid_signal("SIGRTMIN+3"));
        assert!(!valid_signal("SIGFOO") && !valid_signal("0") && !valid_signal("65"));
        assert_eq!(expose_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expose_ports("8000-8002/tcp").unwrap().len(), 3);
        assert!(expose_ports("http").is_none() && expose_ports("80/xyz").is_none());
        assert_eq!(go_list(&["a".into(), "b c".into()]), "[\"a\" \"b c\"]");
    }
}
