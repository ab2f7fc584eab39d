//! Predicting the layers of `COPY` steps while the context arrives.
//!
//! A cold `COPY` of a large context would hash its data twice after the context is in:
//! once for the step's cache key (done already while the context arrives, see
//! [`crate::context`]) and once for the layer's diff id, the sha256 of the layer tar.
//! When the Dockerfile comes first in the context tar (as `berth build` sends it: the
//! `.dockerignore`, then the Dockerfile, then the rest in name order), the unpack knows
//! the `COPY` steps before their files arrive. For each simple `COPY` from the context
//! ([`CopyPlan`]: literal sources without globs, an absolute or `WORKDIR`-relative literal
//! destination, no `--from`, `--chmod` or `--link`, a numeric `--chown` at most) it maps
//! each arriving file to the path it will have in that step's layer and feeds a
//! `store::layer::TarPredictor`, on the thread that hashes the context, with the entry the
//! layer will hold for it. The step's seal then takes every file it finds as predicted
//! without reading it again (`store::layer::seal_diff_predicted`), and hashes the rest.
//!
//! A prediction is a guess that costs nothing when wrong: the seal checks every header
//! byte and the inode of every file it takes, and from the first difference hashes what
//! it reads. What the guess cannot see (a destination that is a symlink in the image, a
//! base image's `WORKDIR`, files that are not linked into the layer) only makes it
//! shorter.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use store::layer::{PredictedTar, TarPredictor};

use crate::dockerignore::{clean_rel, DockerIgnore};
use crate::parser::{self, CopySource, InstructionKind};

/// At most this many `COPY` steps are predicted per build (each costs a pass of sha256
/// over its files while the context arrives).
const MAX_PLANS: usize = 8;

/// Files that arrive before the Dockerfile is known are kept for the prediction up to
/// this size in all.
const MAX_LEADING: usize = 1 << 20;

/// A `COPY` step whose layer can be predicted: where each context file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyPlan {
    /// The sources, relative to the context root, cleaned (`""` is the root itself).
    sources: Vec<String>,
    /// The destination, absolute and cleaned, without a trailing `/` (`""` is `/`).
    dest: String,
    /// Whether the destination is a directory (a trailing `/`, or several sources).
    dest_is_dir: bool,
    /// The owner the files get.
    uid: u64,
    gid: u64,
}

impl CopyPlan {
    /// The path context file `rel` will have in this step's layer (relative to the layer
    /// root), when this step copies it.
    fn layer_path(&self, rel: &str) -> Option<String> {
        for s in &self.sources {
            let inside = if s.is_empty() {
                Some(rel)
            } else if rel == s {
                let name = rel.rsplit('/').next().unwrap_or(rel);
                return Some(if self.dest_is_dir {
                    join(&self.dest, name)
                } else {
                    self.dest.trim_start_matches('/').to_string()
                });
            } else {
                rel.strip_prefix(s.as_str())
                    .and_then(|r| r.strip_prefix('/'))
            };
            if let Some(r) = inside {
                return Some(join(&self.dest, r));
            }
        }
        None
    }
}

/// `dest` (absolute) joined with `rel`, relative to the root.
fn join(dest: &str, rel: &str) -> String {
    let d = dest.trim_start_matches('/');
    if d.is_empty() {
        rel.to_string()
    } else {
        format!("{d}/{rel}")
    }
}

/// A word the prediction can take as it is written: no variables, no globs.
fn literal(w: &str) -> bool {
    !w.contains(['$', '*', '?', '[', '\\'])
}

/// A numeric `--chown` (`uid` or `uid:gid`).
fn numeric_owner(chown: Option<&str>) -> Option<(u64, u64)> {
    let Some(c) = chown else {
        return Some((0, 0));
    };
    let (u, g) = c.split_once(':').unwrap_or((c, c));
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// `/`-joined clean components of `p` relative to `base` (absolute).
fn clean_abs(base: &str, p: &str) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{base}/{p}")
    };
    let mut out: Vec<String> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    format!("/{}", out.join("/"))
}

/// The `COPY` steps of `dockerfile` whose layers can be predicted, in order.
pub(crate) fn plans(dockerfile: &str) -> Vec<CopyPlan> {
    let Ok(df) = parser::parse(dockerfile) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for stage in &df.stages {
        // The base image's WORKDIR is not known here: `/` is the guess.
        let mut workdir = "/".to_string();
        for ins in &stage.instructions {
            match &ins.kind {
                InstructionKind::Workdir(w) if literal(w) => workdir = clean_abs(&workdir, w),
                InstructionKind::Workdir(_) => workdir = String::new(),
                InstructionKind::Copy(spec)
                    if !spec.add && spec.from.is_none() && spec.chmod.is_none() && !spec.link =>
                {
                    let Some((uid, gid)) = numeric_owner(spec.chown.as_deref()) else {
                        continue;
                    };
                    let mut sources = Vec::new();
                    for s in &spec.sources {
                        match s {
                            CopySource::Path(p) if literal(p) => sources.push(clean_rel(p)),
                            _ => sources.clear(),
                        }
                        if sources.is_empty() {
                            break;
                        }
                    }
                    let dest = &spec.dest;
                    if sources.len() != spec.sources.len()
                        || !literal(dest)
                        || (workdir.is_empty() && !dest.starts_with('/'))
                        || sources.iter().any(|s| s.first().is_some_and(|c| c == ".."))
                    {
                        continue;
                    }
                    let dest_is_dir = dest.ends_with('/') || sources.len() > 1;
                    let abs = clean_abs(&workdir, dest);
                    out.push(CopyPlan {
                        sources: sources.iter().map(|s| s.join("/")).collect(),
                        dest: abs.trim_end_matches('/').to_string(),
                        dest_is_dir,
                        uid,
                        gid,
                    });
                    if out.len() == MAX_PLANS {
                        return out;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The order of a layer tar's regular files: name by name, each directory's entries
/// sorted (`store::layer`'s walk).
fn layer_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// A context file's metadata as the unpack reports it.
#[derive(Debug, Clone)]
pub(crate) struct FileMeta {
    /// Its path in the context, relative, `/`-separated.
    pub rel: String,
    pub mode: u32,
    pub mtime: u64,
    pub size: u64,
}

/// A whole file kept until its place in a layer comes.
struct Kept {
    meta: FileMeta,
    data: Vec<u8>,
    dev: u64,
    ino: u64,
}

/// One predicted layer.
struct Stream {
    plan: CopyPlan,
    pred: TarPredictor,
    /// Files that arrived before the prediction began, by layer path, sorted.
    deferred: Vec<(String, Kept)>,
}

impl Stream {
    fn add(&mut self, layer: &str, meta: &FileMeta) {
        self.pred.begin_file(
            Path::new(layer),
            meta.mode,
            self.plan.uid,
            self.plan.gid,
            meta.mtime,
            meta.size,
        );
    }

    /// Predicts the deferred files that come before `layer` (all with `None`).
    fn flush_before(&mut self, layer: Option<&str>) {
        while let Some((first, _)) = self.deferred.first() {
            if layer.is_some_and(|l| layer_order(first, l) != Ordering::Less) {
                break;
            }
            let (path, k) = self.deferred.remove(0);
            self.add(&path, &k.meta);
            self.pred.data(&k.data);
            self.pred.end_file(k.dev, k.ino);
        }
    }
}

/// The predictions of one context unpack: fed the files as they arrive (on the thread
/// that hashes them), in the order they arrive.
#[derive(Default)]
pub(crate) struct Predictor {
    /// Set once the plans are known.
    streams: Option<Vec<Stream>>,
    ignore: Option<DockerIgnore>,
    /// Files seen before the plans (small ones, kept whole).
    leading: Vec<Kept>,
    leading_bytes: usize,
    /// The file being received: its metadata, and the stream it goes to (before the
    /// plans: kept whole while small).
    cur: Option<(FileMeta, Option<usize>, Vec<u8>)>,
}

impl Predictor {
    /// The plans are known (`ignore`: the context's `.dockerignore`, when it came first).
    pub(crate) fn plan(&mut self, plans: Vec<CopyPlan>, ignore: Option<DockerIgnore>) {
        if self.streams.is_some() {
            return;
        }
        self.ignore = ignore;
        let mut streams: Vec<Stream> = plans
            .into_iter()
            .map(|plan| Stream {
                plan,
                pred: TarPredictor::new(),
                deferred: Vec::new(),
            })
            .collect();
        for k in std::mem::take(&mut self.leading) {
            if let Some((i, layer)) = self.target(&streams, &k.meta.rel) {
                streams[i].deferred.push((layer, k));
            }
        }
        for s in &mut streams {
            s.deferred.sort_by(|a, b| layer_order(&a.0, &b.0));
        }
        self.streams = Some(streams);
    }

    /// The first stream that copies `rel`, and its path in that layer.
    fn target(&self, streams: &[Stream], rel: &str) -> Option<(usize, String)> {
        if self.ignore.as_ref().is_some_and(|i| i.is_excluded(rel)) {
            return None;
        }
        streams
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.plan.layer_path(rel).map(|l| (i, l)))
    }

    /// A regular file starts.
    pub(crate) fn start(&mut self, meta: FileMeta) {
        self.abort();
        let Some(streams) = self.streams.as_deref() else {
            self.cur = Some((meta, None, Vec::new()));
            return;
        };
        let target = self.target(streams, &meta.rel);
        let Some(streams) = self.streams.as_mut() else {
            return;
        };
        let idx = target.map(|(i, layer)| {
            let s = &mut streams[i];
            s.flush_before(Some(&layer));
            s.add(&layer, &meta);
            i
        });
        self.cur = Some((meta, idx, Vec::new()));
    }

    /// Its next bytes.
    pub(crate) fn data(&mut self, bytes: &[u8]) {
        let Some((_, idx, kept)) = self.cur.as_mut() else {
            return;
        };
        match (self.streams.as_mut(), idx) {
            (Some(streams), Some(i)) => streams[*i].pred.data(bytes),
            (Some(_), None) => {}
            (None, _) => {
                if self.leading_bytes + kept.len() + bytes.len() <= MAX_LEADING {
                    kept.extend_from_slice(bytes);
                } else {
                    // Too large to keep: it will not be predicted.
                    self.cur = None;
                }
            }
        }
    }

    /// It was written whole, into inode `ino` of `dev`.
    pub(crate) fn end(&mut self, dev: u64, ino: u64) {
        let Some((meta, idx, data)) = self.cur.take() else {
            return;
        };
        match (self.streams.as_mut(), idx) {
            (Some(streams), Some(i)) => streams[i].pred.end_file(dev, ino),
            (Some(_), None) => {}
            (None, _) => {
                self.leading_bytes += data.len();
                self.leading.push(Kept {
                    meta,
                    data,
                    dev,
                    ino,
                });
            }
        }
    }

    /// The file being received will not be what was announced.
    pub(crate) fn abort(&mut self) {
        if let Some((_, Some(i), _)) = self.cur.take() {
            if let Some(streams) = self.streams.as_mut() {
                streams[i].pred.abort_file();
            }
        }
    }

    /// The predicted layers (those with at least one file).
    pub(crate) fn finish(mut self) -> Vec<PredictedTar> {
        self.abort();
        let Some(streams) = self.streams.take() else {
            return Vec::new();
        };
        streams
            .into_iter()
            .map(|mut s| {
                s.flush_before(None);
                s.pred.finish()
            })
            .filter(|p| p.files() > 0)
            .collect()
    }
}

/// Whether context entry `rel` is the Dockerfile `dockerfile` (cleaned the same way).
pub(crate) fn is_dockerfile(rel: &Path, dockerfile: &str) -> bool {
    let want: PathBuf = clean_rel(dockerfile).iter().collect();
    !want.as_os_str().is_empty() && rel == want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(df: &str) -> Vec<CopyPlan> {
        plans(df)
    }

    #[test]
    fn simple_copies_are_planned_and_the_rest_is_not() {
        let p = plan_of(
            "FROM busybox\nCOPY big/ /big/\nWORKDIR /app\nCOPY a.txt b.txt ./\nCOPY --chown=10:20 c /c\n\
             COPY $X /x/\nCOPY *.txt /t/\nCOPY --from=0 /a /a\nADD d /d\nCOPY --chown=app e /e\n\
             COPY --chmod=600 f /f\n",
        );
        assert_eq!(p.len(), 3, "{p:?}");
        assert_eq!(p[0].layer_path("big/p1.bin").as_deref(), Some("big/p1.bin"));
        assert_eq!(p[0].layer_path("big/sub/x").as_deref(), Some("big/sub/x"));
        assert_eq!(p[0].layer_path("bigger"), None);
        assert_eq!(p[1].dest, "/app");
        assert_eq!(p[1].layer_path("b.txt").as_deref(), Some("app/b.txt"));
        assert_eq!(p[1].layer_path("c.txt"), None);
        assert_eq!((p[2].uid, p[2].gid), (10, 20));
        assert_eq!(p[2].layer_path("c").as_deref(), Some("c"));
    }

    #[test]
    fn the_context_root_and_relative_destinations() {
        let p = plan_of("FROM x\nWORKDIR /usr/src\nWORKDIR app\nCOPY . .\nCOPY one /opt/\n");
        assert_eq!(
            p[0].layer_path("Dockerfile").as_deref(),
            Some("usr/src/app/Dockerfile")
        );
        assert_eq!(p[0].layer_path("a/b").as_deref(), Some("usr/src/app/a/b"));
        assert_eq!(p[1].layer_path("one").as_deref(), Some("opt/one"));
        // A WORKDIR with a variable leaves only absolute destinations.
        let p = plan_of("FROM x\nWORKDIR $D\nCOPY a b\nCOPY a /b\n");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].layer_path("a").as_deref(), Some("b"));
        assert!(plans("this is not a dockerfile").is_empty());
    }

    #[test]
    fn layer_order_is_per_directory_name_order() {
        assert_eq!(layer_order("app/Dockerfile", "app/big/p1"), Ordering::Less);
        assert_eq!(layer_order("app/b", "app/a/z"), Ordering::Greater);
        assert_eq!(layer_order("a-b/x", "a/x"), Ordering::Greater);
    }

    #[test]
    fn files_that_came_first_are_predicted_in_their_layer_place() {
        let mut p = Predictor::default();
        let file = |p: &mut Predictor, rel: &str, data: &[u8], ino: u64| {
            p.start(FileMeta {
                rel: rel.into(),
                mode: 0o644,
                mtime: 5,
                size: data.len() as u64,
            });
            p.data(data);
            p.end(1, ino);
        };
        file(&mut p, "Dockerfile", b"FROM x\nCOPY . /app/\n", 1);
        p.plan(plans("FROM x\nCOPY . /app/\n"), None);
        file(&mut p, "a", b"aaa", 2);
        file(&mut p, "z", b"zzz", 3);
        let out = p.finish();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].files(), 3);
        assert!(out[0].holds(1, 1) && out[0].holds(1, 2) && out[0].holds(1, 3));
    }
}
