//! Named volumes with the `local` driver, as Docker has them.
//!
//! # Model
//! A volume is a directory owned by Berth: `<root>/<name>/_data` holds the data that
//! containers see, `<root>/<name>/volume.json` its metadata (labels, options, creation
//! time, whether it is anonymous). A volume appears atomically: it is built under a
//! hidden temporary name and renamed into place, so a crash never leaves half a volume
//! visible. Names follow Docker's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, which also rules out
//! `/` and `..`; anonymous volumes get a random 64-hex name.
//!
//! Containers take a reference on a volume while they exist ([`VolumeStore::acquire`]);
//! a referenced volume cannot be removed or pruned. References live in memory: after a
//! restart the engine acquires again for every container it re-adopts.
//!
//! A new, empty volume mounted over a path that has content in the image is populated
//! from that content the first time ([`VolumeStore::populate_from`]), which is Docker's
//! behaviour (and what `volume-nocopy` turns off).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use errkind::{ErrorKind, HasKind};
use serde::{Deserialize, Serialize};

/// Errors of the volume service.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// No volume has this name.
    #[error("no such volume: {0}")]
    NotFound(String),
    /// The name does not match `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    #[error("invalid volume name {0:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at least 2 characters")]
    InvalidName(String),
    /// Containers still use the volume.
    #[error("remove {name}: volume is in use - [{containers}]")]
    InUse {
        /// The volume.
        name: String,
        /// The containers using it, comma-separated.
        containers: String,
    },
    /// A filesystem operation on the volume's directory failed.
    #[error("volume {op} failed on {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The volume's metadata file is not valid JSON.
    #[error("corrupt volume metadata at {path}")]
    Corrupt {
        /// The metadata file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl HasKind for VolumeError {
    fn kind(&self) -> ErrorKind {
        match self {
            VolumeError::NotFound(_) => ErrorKind::NotFound,
            VolumeError::InvalidName(_) => ErrorKind::InvalidArgument,
            VolumeError::InUse { .. } => ErrorKind::Conflict,
            VolumeError::Io { .. } | VolumeError::Corrupt { .. } => ErrorKind::Internal,
        }
    }
}

type Result<T> = std::result::Result<T, VolumeError>;

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> VolumeError {
    let path = path.to_path_buf();
    move |source| VolumeError::Io { op, path, source }
}

/// A volume as the API shows it (`docker volume inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// The volume's name.
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// Where the data lives on the host (`<root>/<name>/_data`).
    pub mountpoint: PathBuf,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options as given at creation.
    pub options: BTreeMap<String, String>,
    /// True for volumes created without a name (from an image's VOLUME or `-v /path`).
    pub anonymous: bool,
}

/// The on-disk metadata of a volume (everything but the mountpoint, which is derived).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    created_at: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
    #[serde(default)]
    anonymous: bool,
}

/// What a prune removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Names of the removed volumes.
    pub deleted: Vec<String>,
    /// Bytes freed.
    pub space_reclaimed: u64,
}

/// The volume service: all volumes under one root directory.
pub struct VolumeStore {
    root: PathBuf,
    /// Volume name → ids of the containers holding it.
    refs: Mutex<HashMap<String, HashSet<String>>>,
}

/// Checks a volume name against Docker's rule.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() >= 2 && name.len() <= 255 {
        Ok(())
    } else {
        Err(VolumeError::InvalidName(name.to_string()))
    }
}

impl VolumeStore {
    /// Opens (creating if needed) the volume root, removing leftovers of interrupted creates.
    pub fn open(root: &Path) -> Result<VolumeStore> {
        fs::create_dir_all(root).map_err(io_err("create root", root))?;
        for entry in fs::read_dir(root).map_err(io_err("read root", root))? {
            let entry = entry.map_err(io_err("read root", root))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(VolumeStore {
            root: root.to_path_buf(),
            refs: Mutex::new(HashMap::new()),
        })
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn load(&self, name: &str) -> Result<Volume> {
        validate_name(name)?;
        let dir = self.dir(name);
        let meta_path = dir.join("volume.json");
        let text = match fs::read(&meta_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(VolumeError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io_err("read metadata", &meta_path)(e)),
        };
        let meta: Meta = serde_json::from_slice(&text).map_err(|source| VolumeError::Corrupt {
            path: meta_path.clone(),
            source,
        })?;
        Ok(Volume {
            name: name.to_string(),
            driver: "local".into(),
            mountpoint: dir.join("_data"),
            created_at: meta.created_at,
            labels: meta.labels,
            options: meta.options,
            anonymous: meta.anonymous,
        })
    }

    /// Creates a volume; with no name an anonymous one with a random 64-hex name.
    ///
    /// Creating a name that exists returns the existing volume unchanged, as Docker does.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
    ) -> Result<Volume> {
        let (name, anonymous) = match name {
            Some(n) if !n.is_empty() => (n.to_string(), false),
            _ => (hex::encode(rand::random::<[u8; 32]>()), true),
        };
        validate_name(&name)?;
        match self.load(&name) {
            Ok(v) => return Ok(v),
            Err(VolumeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let tmp = self.root.join(format!(
            ".tmp-{name}-{}",
            hex::encode(rand::random::<[u8; 4]>())
        ));
        let build = || -> Result<()> {
            fs::create_dir_all(tmp.join("_data")).map_err(io_err("create", &tmp))?;
            fs::set_permissions(tmp.join("_data"), fs::Permissions::from_mode(0o755))
                .map_err(io_err("chmod", &tmp))?;
            let meta = Meta {
                created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                labels,
                options,
                anonymous,
            };
            let text = serde_json::to_vec_pretty(&meta).map_err(|source| VolumeError::Corrupt {
                path: tmp.join("volume.json"),
                source,
            })?;
            let meta_path = tmp.join("volume.json");
            fs::write(&meta_path, text).map_err(io_err("write metadata", &meta_path))?;
            fs::File::open(&meta_path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("sync metadata", &meta_path))?;
            let dest = self.dir(&name);
            fs::rename(&tmp, &dest).map_err(io_err("commit", &dest))
        };
        if let Err(e) = build() {
            let _ = fs::remove_dir_all(&tmp);
            // Lost a race with a concurrent create of the same name: that one wins.
            if let Ok(v) = self.load(&name) {
                return Ok(v);
            }
            return Err(e);
        }
        self.load(&name)
    }

    /// Looks a volume up by name.
    pub fn get(&self, name: &str) -> Result<Volume> {
        self.load(name)
    }

    /// All volumes, sorted by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err("read root", &self.root))? {
            let entry = entry.map_err(io_err("read root", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match self.load(&name) {
                Ok(v) => out.push(v),
                Err(VolumeError::NotFound(_)) | Err(VolumeError::InvalidName(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The containers currently holding `name`.
    pub fn users(&self, name: &str) -> Vec<String> {
        let refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = refs
            .get(name)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Takes a reference on `name` for `container_id`, creating the volume if missing
    /// (as `-v name:/path` does).
    pub fn acquire(&self, name: &str, container_id: &str) -> Result<Volume> {
        let v = self.create(Some(name), BTreeMap::new(), BTreeMap::new())?;
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        refs.entry(v.name.clone())
            .or_default()
            .insert(container_id.to_string());
        Ok(v)
    }

    /// Drops `container_id`'s reference on `name` (no error if it held none).
    pub fn release(&self, name: &str, container_id: &str) {
        let mut refs = self.refs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = refs.get_mut(name) {
            set.remove(container_id);
            if set.is_empty() {
                refs.remove(name);
            }
        }
    }

    /// Removes a volume and its data. In use → Conflict, unless `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<()> {
        self.load(name)?;
        let users = self.users(name);
        if !users.is_empty() && !force {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                containers: users.join(", "),
            });
        }
        self.delete_dir(name)
    }

    /// Renames the volume out of sight first, so a crash mid-delete leaves no half volume.
    fn delete_dir(&self, name: &str) -> Result<()> {
        let dir = self.dir(name);
        let tmp = self.root.join(format!(
            ".tmp-rm-{name}-{}",
            hex::encode(rand::random::<[u8; 4]>())
        ));
        fs::rename(&dir, &tmp).map_err(io_err("remove", &dir))?;
        fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))
    }

    /// Removes unused volumes: anonymous ones only, or all unused with `all` (Docker's
    /// `volume prune` and `volume prune -a`), restricted to those carrying every label in
    /// `labels` (`key` or `key=value`).
    pub fn prune(&self, all: bool, labels: &[String]) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for v in self.list()? {
            if !(all || v.anonymous) || !self.users(&v.name).is_empty() {
                continue;
            }
            let matches = labels.iter().all(|l| match l.split_once('=') {
                Some((k, val)) => v.labels.get(k).map(String::as_str) == Some(val),
                None => v.labels.contains_key(l.as_str()),
            });
            if !matches {
                continue;
            }
            let size = dir_size(&v.mountpoint);
            self.delete_dir(&v.name)?;
            report.space_reclaimed += size;
            report.deleted.push(v.name);
        }
        Ok(report)
    }

    /// Bytes used by a volume's data.
    pub fn usage(&self, name: &str) -> Result<u64> {
        Ok(dir_size(&self.load(name)?.mountpoint))
    }

    /// Copies `src` (the image's content at the mount path) into the volume if the volume
    /// is empty; returns whether it copied. Ownership, modes and symlinks are kept; device
    /// nodes and sockets are skipped. `src` missing is not an error (nothing to copy).
    pub fn populate_from(&self, name: &str, src: &Path) -> Result<bool> {
        let v = self.load(name)?;
        let mut entries = fs::read_dir(&v.mountpoint).map_err(io_err("read", &v.mountpoint))?;
        if entries.next().is_some() || !src.is_dir() {
            return Ok(false);
        }
        copy_tree(src, &v.mountpoint)?;
        // The volume's root takes the mode and owner of the directory it shadows.
        let meta = fs::symlink_metadata(src).map_err(io_err("stat", src))?;
        fs::set_permissions(
            &v.mountpoint,
            fs::Permissions::from_mode(meta.mode() & 0o7777),
        )
        .map_err(io_err("chmod", &v.mountpoint))?;
        std::os::unix::fs::lchown(&v.mountpoint, Some(meta.uid()), Some(meta.gid()))
            .map_err(io_err("chown", &v.mountpoint))?;
        Ok(true)
    }
}

/// Recursively copies the contents of `src` into the existing directory `dst`.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    for entry in fs::read_dir(src).map_err(io_err("read", src))? {
        let entry = entry.map_err(io_err("read", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(io_err("stat", &from))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io_err("readlink", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err("symlink", &to))?;
        } else if ft.is_dir() {
            fs::create_dir(&to).map_err(io_err("mkdir", &to))?;
            copy_tree(&from, &to)?;
        } else if ft.is_file() {
            fs::copy(&from, &to).map_err(io_err("copy", &to))?;
        } else {
            continue;
        }
        if !ft.is_symlink() {
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err("chmod", &to))?;
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
            .map_err(io_err("chown", &to))?;
    }
    Ok(())
}

/// Sum of the sizes of the regular files under `dir` (0 if unreadable).
fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) if m.is_file() => m.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, VolumeStore) {
        let d = tempfile::tempdir().unwrap();
        let s = VolumeStore::open(&d.path().join("volumes")).unwrap();
        (d, s)
    }

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["ab", "data", "my_vol.1-x", "0abc"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a", "../x", "a/b", "..", "-x", ".hidden", "a b", "ä1"] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn create_get_list_remove() {
        let (_d, s) = store();
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        let v = s
            .create(Some("data"), labels.clone(), BTreeMap::new())
            .unwrap();
        assert_eq!(v.name, "data");
        assert!(v.mountpoint.is_dir());
        assert!(!v.anonymous);
        // Idempotent: same name returns the existing volume with its labels.
        let again = s
            .create(Some("data"), BTreeMap::new(), BTreeMap::new())
            .unwrap();
        assert_eq!(again.labels, labels);
        let anon = s.create(None, BTreeMap::new(), BTreeMap::new()).unwrap();
        assert!(anon.anonymous);
        assert_eq!(anon.name.len(), 64);
        let names: Vec<_> = s.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"data".to_string()));
        s.remove("data", false).unwrap();
        assert_eq!(s.get("data").unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            s.remove("data", false).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn data_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = VolumeStore::open(d.path()).unwrap();
            let v = s
                .create(Some("keep"), BTreeMap::new(), BTreeMap::new())
                .unwrap();
            fs::write(v.mountpoint.join("f"), "x").unwrap();
        }
        // A leftover of a create interrupted by a crash is cleaned at open.
        fs::create_dir_all(d.path().join(".tmp-half-1234/_data")).unwrap();
        let s = VolumeStore::open(d.path()).unwrap();
        let v = s.get("keep").unwrap();
        assert_eq!(fs::read_to_string(v.mountpoint.join("f")).unwrap(), "x");
        assert!(!d.path().join(".tmp-half-1234").exists());
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn in_use_volume_cannot_be_removed_or_pruned() {
        let (_d, s) = store();
        let v = s.acquire("shared", "c1").unwrap();
        s.acquire("shared", "c2").unwrap();
        let e = s.remove("shared", false).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.to_string().contains("c1, c2"), "{e}");
        assert!(s.prune(true, &[]).unwrap().deleted.is_empty());
        s.release("shared", "c1");
        s.release("shared", "c2");
        fs::write(v.mountpoint.join("big"), vec![0u8; 4096]).unwrap();
        let r = s.prune(true, &[]).unwrap();
        assert_eq!(r.deleted, vec!["shared".to_string()]);
        assert_eq!(r.space_reclaimed, 4096);
    }

    #[test]
    fn prune_keeps_named_unless_all_and_filters_labels() {
        let (_d, s) = store();
        s.create(Some("named"), BTreeMap::new(), BTreeMap::new())
            .unwrap();
        let anon = s.create(None, BTreeMap::new(), BTreeMap::new()).unwrap();
        let mut l = BTreeMap::new();
        l.insert("tier".to_string(), "db".to_string());
        s.create(Some("labelled"), l, BTreeMap::new()).unwrap();
        assert_eq!(s.prune(false, &[]).unwrap().deleted, vec![anon.name]);
        assert_eq!(
            s.prune(true, &["tier=db".to_string()]).unwrap().deleted,
            vec!["labelled".to_string()]
        );
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn populate_copies_image_content_once() {
        let (d, s) = store();
        let src = d.path().join("image-etc");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/conf"), "v=1").unwrap();
        fs::set_permissions(src.join("sub/conf"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/conf", src.join("link")).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o700)).unwrap();
        let v = s
            .create(Some("cfg"), BTreeMap::new(), BTreeMap::new())
            .unwrap();
        assert!(s.populate_from("cfg", &src).unwrap());
        assert_eq!(
            fs::read_to_string(v.mountpoint.join("sub/conf")).unwrap(),
            "v=1"
        );
        let mode = fs::metadata(v.mountpoint.join("sub/conf")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            fs::read_link(v.mountpoint.join("link")).unwrap(),
            Path::new("sub/conf")
        );
        assert_eq!(fs::metadata(&v.mountpoint).unwrap().mode() & 0o777, 0o700);
        // Not empty any more: a second populate copies nothing.
        fs::write(src.join("new"), "n").unwrap();
        assert!(!s.populate_from("cfg", &src).unwrap());
        assert!(!v.mountpoint.join("new").exists());
        // A missing source is nothing to copy.
        let v2 = s
            .create(Some("empty"), BTreeMap::new(), BTreeMap::new())
            .unwrap();
        assert!(!s.populate_from("empty", &d.path().join("nope")).unwrap());
        assert!(v2.mountpoint.is_dir());
    }
}
