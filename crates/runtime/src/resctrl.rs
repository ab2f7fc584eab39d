//! `linux.intelRdt`: the container's processes in a resctrl group (Intel RDT cache and
//! memory-bandwidth allocation, and monitoring).
//!
//! # Model
//!
//! resctrl is a pseudo-filesystem, found here from `/proc/self/mountinfo` (fstype
//! `resctrl`; none mounted is a create error when `intelRdt` is set). Its root is the
//! default group; every directory below it is a CTRL_MON group with a `schemata` file (one
//! line per resource: `L3:0=7ff;1=7ff`, `MB:0=100;1=100`) and a `tasks` file (writing a
//! pid moves that task into the group); `mon_groups/<name>` inside a group is a MON group
//! that counts the usage of the tasks written to its own `tasks` (they must already be
//! in the parent group). The kernel fills a new directory itself on `mkdir` and removes
//! it with everything in it on `rmdir`.
//!
//! The group is `closID` (`/` is the root), or the container id when `closID` is not set.
//! [`Resctrl::setup`] applies the spec's rules during `create`, before the fork:
//!
//! * the group exists: the schemas given (if any) must already be what its `schemata`
//!   holds (see [`schemata_mismatch`]), and nothing is written;
//! * it does not exist: with `closID` and no schema, that is an error (a pre-configured
//!   group was asked for); otherwise it is created and `l3CacheSchema`, `memBwSchema`
//!   and then each `schemata` line are written to its `schemata`, one write each and in
//!   that order (a later line may override an earlier one's domains; one write holding
//!   both would be refused as a duplicate domain);
//! * `enableMonitoring` creates the MON group `mon_groups/<container-id>` in it.
//!
//! The outcome, a [`Placement`], is kept in the container's state: the runtime writes
//! the init's pid to the group's `tasks` (then to the MON group's) at the moment it
//! moves the init into its cgroup, an `exec` process joins the same way from stage 1
//! (its child inherits the group). `delete` removes the MON group, and the group when
//! the runtime created it for the container id: never one that already existed, the root,
//! nor a `closID` group even if created here (other containers may share it). A failed
//! `create` removes everything `setup` created. Without `intelRdt` nothing here runs,
//! and resctrl is never touched.

use errkind::{ErrorKind, HasKind};
use oci_spec::runtime::{LinuxIntelRdt, Spec};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the kernel lists the mounts of the runtime's mount namespace.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Names in the resctrl root that are not groups.
const RESERVED: &[&str] = &["info", "mon_groups", "mon_data"];

/// What applying `linux.intelRdt` can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ResctrlError {
    /// No resctrl filesystem is mounted in the runtime's mount namespace.
    #[error("linux.intelRdt is set but no resctrl filesystem is mounted (none in {MOUNTINFO}; the host needs Intel RDT or AMD PQoS and `mount -t resctrl resctrl /sys/fs/resctrl`)")]
    NotMounted,
    /// `closID` names a group that does not exist, and no schema was given to create it.
    #[error("linux.intelRdt.closID {closid:?}: no such group in {} (without l3CacheSchema, memBwSchema or schemata it must be pre-configured)", root.display())]
    MissingGroup {
        /// The closID.
        closid: String,
        /// The resctrl mount.
        root: PathBuf,
    },
    /// The existing group's `schemata` does not hold a schema the config asks for.
    #[error("linux.intelRdt: the existing group {} has schemata {have:?}, not {want:?} as the config asks", group.display())]
    Mismatch {
        /// The group directory.
        group: PathBuf,
        /// The config's line.
        want: String,
        /// The group's line for that resource (empty when it has none).
        have: String,
    },
    /// A resctrl file operation failed (with the kernel's `info/last_cmd_status`, when it
    /// says more than `ok`).
    #[error("linux.intelRdt: {what}")]
    Io {
        /// What failed, on which path.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl HasKind for ResctrlError {
    fn kind(&self) -> ErrorKind {
        match self {
            ResctrlError::NotMounted => ErrorKind::Unavailable,
            ResctrlError::MissingGroup { .. } | ResctrlError::Mismatch { .. } => {
                ErrorKind::FailedPrecondition
            }
            ResctrlError::Io { .. } => ErrorKind::Internal,
        }
    }
}

type Result<T> = std::result::Result<T, ResctrlError>;

/// Checks `linux.intelRdt` without touching the host: `memBwSchema` starts with `MB:`,
/// no value holds a newline or an empty schemata line, and `closID` is `/` or one
/// directory name that is not one of resctrl's own.
pub(crate) fn validate_spec(spec: &Spec) -> std::result::Result<(), String> {
    let Some(rdt) = spec.linux().as_ref().and_then(|l| l.intel_rdt().as_ref()) else {
        return Ok(());
    };
    let mut values: Vec<(&str, &str)> = Vec::new();
    if let Some(c) = rdt.clos_id() {
        values.push(("closID", c));
    }
    if let Some(l3) = rdt.l3_cache_schema() {
        values.push(("l3CacheSchema", l3));
    }
    if let Some(mb) = rdt.mem_bw_schema() {
        if !mb.starts_with("MB:") {
            return Err(format!(
                "linux.intelRdt.memBwSchema {mb:?} does not start with \"MB:\""
            ));
        }
        values.push(("memBwSchema", mb));
    }
    for line in rdt.schemata().iter().flatten() {
        if line.trim().is_empty() {
            return Err("linux.intelRdt.schemata has an empty line".into());
        }
        values.push(("schemata", line));
    }
    if let Some((field, v)) = values.iter().find(|(_, v)| v.contains(['\n', '\r'])) {
        return Err(format!("linux.intelRdt.{field} {v:?} contains a newline"));
    }
    match closid(rdt) {
        None | Some("/") => Ok(()),
        Some(c) if c.contains('/') || c == "." || c == ".." || RESERVED.contains(&c) => Err(
            format!("linux.intelRdt.closID {c:?} is not \"/\" nor a group name"),
        ),
        Some(_) => Ok(()),
    }
}

/// `closID`, an empty one counting as unset (as runc does).
fn closid(rdt: &LinuxIntelRdt) -> Option<&str> {
    rdt.clos_id().as_deref().filter(|c| !c.is_empty())
}

/// The lines to write to (or find in) `schemata`, in the spec's order.
fn schema_lines(rdt: &LinuxIntelRdt) -> Vec<&str> {
    let mut lines: Vec<&str> = Vec::new();
    lines.extend(rdt.l3_cache_schema().as_deref());
    lines.extend(rdt.mem_bw_schema().as_deref());
    lines.extend(rdt.schemata().iter().flatten().map(String::as_str));
    lines
}

/// The first resctrl mount (of the filesystem's root) in mountinfo text.
fn mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let fstype = post.split(' ').next()?;
        if fstype != "resctrl" || pre.get(3) != Some(&"/") {
            return None;
        }
        Some(PathBuf::from(unoctal(pre.get(4)?)))
    })
}

/// Decodes mountinfo's `\ooo` escapes (space, tab, newline, backslash in paths).
fn unoctal(field: &str) -> String {
    let mut out: Vec<u8> = Vec::with_capacity(field.len());
    let mut rest = field.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let code = tail
            .get(..3)
            .filter(|d| b == b'\\' && d.iter().all(u8::is_ascii_digit))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match code {
            Some(c) => {
                out.push(c);
                rest = &tail[3..];
            }
            None => {
                out.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The kernel's side of making and removing resctrl directories: resctrl fills a new
/// directory (`schemata`, `tasks`, `mon_groups`, ...) on `mkdir` and removes a populated
/// one on `rmdir`. Unit tests give a plain directory tree the same behaviour.
#[derive(Clone, Copy)]
pub(crate) struct Kernel {
    mkdir: fn(&Path) -> std::io::Result<()>,
    rmdir: fn(&Path) -> std::io::Result<()>,
}

/// The real kernel: plain `mkdir` and `rmdir`.
const KERNEL: Kernel = Kernel {
    mkdir: |p| std::fs::create_dir(p),
    rmdir: |p| std::fs::remove_dir(p),
};

/// A mounted resctrl filesystem.
pub(crate) struct Resctrl {
    root: PathBuf,
    kernel: Kernel,
}

/// What [`Resctrl::setup`] chose and created for a container (kept in its state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The CTRL_MON group directory the container's processes join.
    pub group: PathBuf,
    /// Whether the runtime created `group`.
    pub created: bool,
    /// Whether `group` was named by `closID`: then `delete` keeps it even when created
    /// here, as other containers may share it (a failed `create` removes it).
    pub named: bool,
    /// The MON group made for `enableMonitoring` (removed by `delete`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<PathBuf>,
}

impl Resctrl {
    /// The resctrl filesystem mounted in the runtime's mount namespace.
    pub(crate) fn find() -> Result<Resctrl> {
        let text = std::fs::read_to_string(MOUNTINFO).map_err(|source| ResctrlError::Io {
            what: format!("read {MOUNTINFO}"),
            source,
        })?;
        let root = mount_point(&text).ok_or(ResctrlError::NotMounted)?;
        Ok(Resctrl {
            root,
            kernel: KERNEL,
        })
    }

    /// Chooses the container's group and creates what the rules ask for (see the module
    /// docs). On failure, whatever it created is removed again.
    pub(crate) fn setup(&self, id: &str, rdt: &LinuxIntelRdt) -> Result<Placement> {
        let closid = closid(rdt);
        let name = closid.unwrap_or(id);
        let group = if name == "/" {
            self.root.clone()
        } else {
            self.root.join(name)
        };
        let lines = schema_lines(rdt);
        let exists = match std::fs::symlink_metadata(&group) {
            Ok(m) => m.is_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(ResctrlError::Io {
                    what: format!("look up {}", group.display()),
                    source,
                })
            }
        };
        let created = if exists {
            false
        } else if let (Some(c), true) = (closid, lines.is_empty()) {
            return Err(ResctrlError::MissingGroup {
                closid: c.to_string(),
                root: self.root.clone(),
            });
        } else {
            match (self.kernel.mkdir)(&group) {
                Ok(()) => true,
                // Made meanwhile by another container of the same closID.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(self.error(format!("create {}", group.display()), e)),
            }
        };
        let mut placement = Placement {
            group,
            created,
            named: closid.is_some(),
            monitor: None,
        };
        let file = placement.group.join("schemata");
        if created {
            for line in &lines {
                if let Err(e) = self.append(&file, line) {
                    let _ = placement.undo_with(&self.kernel);
                    return Err(e);
                }
            }
        } else if !lines.is_empty() {
            let have = std::fs::read_to_string(&file).map_err(|source| ResctrlError::Io {
                what: format!("read {}", file.display()),
                source,
            })?;
            if let Some((want, have)) = schemata_mismatch(&have, &lines) {
                return Err(ResctrlError::Mismatch {
                    group: placement.group,
                    want: want.to_string(),
                    have,
                });
            }
        }
        if rdt.enable_monitoring() == &Some(true) {
            let mon = placement.group.join("mon_groups").join(id);
            if let Err(e) = (self.kernel.mkdir)(&mon) {
                let e = self.error(format!("create the MON group {}", mon.display()), e);
                let _ = placement.undo_with(&self.kernel);
                return Err(e);
            }
            placement.monitor = Some(mon);
        }
        Ok(placement)
    }

    /// Writes one line to a resctrl file (a single write, as the kernel parses it).
    fn append(&self, file: &Path, line: &str) -> Result<()> {
        write_line(file, line)
            .map_err(|e| self.error(format!("write {line:?} to {}", file.display()), e))
    }

    /// An [`ResctrlError::Io`] with the kernel's explanation of the last failed command
    /// (`info/last_cmd_status`, "Duplicate domain 0" say), when it has one.
    fn error(&self, what: String, source: std::io::Error) -> ResctrlError {
        let status = std::fs::read_to_string(self.root.join("info/last_cmd_status"));
        let what = match status.as_deref().map(str::trim) {
            Ok(s) if !s.is_empty() && s != "ok" => format!("{what} ({s})"),
            _ => what,
        };
        ResctrlError::Io { what, source }
    }
}

/// Writes `line` and a newline to an existing file in one write. Appending keeps a
/// test tree's record of every write; resctrl files ignore the position.
fn write_line(file: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(file)?;
    f.write_all(format!("{line}\n").as_bytes())
}

impl Placement {
    /// The `tasks` files a process joins, in order: the group's, then the MON group's
    /// (the kernel only takes a task into a MON group from its parent group).
    fn tasks_files(&self) -> Vec<PathBuf> {
        std::iter::once(&self.group)
            .chain(self.monitor.as_ref())
            .map(|d| d.join("tasks"))
            .collect()
    }

    /// Moves `pid` into the group (and the MON group). The kernel reads the pid in the
    /// writer's pid namespace.
    pub(crate) fn join(&self, pid: i32) -> Result<()> {
        for file in self.tasks_files() {
            write_line(&file, &pid.to_string()).map_err(|source| ResctrlError::Io {
                what: format!("add pid {pid} to {}", file.display()),
                source,
            })?;
        }
        Ok(())
    }

    /// What `delete` removes: the MON group, then the group if the runtime created it
    /// for the container id (not a `closID` one). Ones already gone are fine.
    pub(crate) fn remove(&self) -> Result<()> {
        self.remove_with(&KERNEL)
    }

    fn remove_with(&self, kernel: &Kernel) -> Result<()> {
        self.rmdirs(kernel, self.created && !self.named)
    }

    /// What a failed `create` removes: everything `setup` created.
    pub(crate) fn undo(&self) -> Result<()> {
        self.undo_with(&KERNEL)
    }

    fn undo_with(&self, kernel: &Kernel) -> Result<()> {
        self.rmdirs(kernel, self.created)
    }

    fn rmdirs(&self, kernel: &Kernel, group: bool) -> Result<()> {
        let group = group.then_some(&self.group);
        for dir in self.monitor.iter().chain(group) {
            match (kernel.rmdir)(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ResctrlError::Io {
                        what: format!("remove {}", dir.display()),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The first of `want` (schemata lines) that `have` (a group's `schemata` file) does not
/// hold, with `have`'s line for that resource. Lenient like the kernel's parser: each
/// domain the line sets must have that value in `have` (other domains and resources are
/// not compared), names and values compared without surrounding whitespace, and values
/// without case, a `0x` prefix or leading zeros (the kernel prints masks zero-padded,
/// `L3:0=007ff`, and bandwidths space-padded). A line that does not parse as
/// `NAME:ID=VALUE;...` must be in `have` as is (whitespace aside).
pub(crate) fn schemata_mismatch<'a>(have: &str, want: &[&'a str]) -> Option<(&'a str, String)> {
    let have_lines: Vec<(&str, Option<Schema>)> =
        have.lines().map(|l| (l.trim(), parse_schema(l))).collect();
    for w in want {
        let Some(ws) = parse_schema(w) else {
            let squash = |s: &str| s.split_whitespace().collect::<String>();
            if !have_lines.iter().any(|(l, _)| squash(l) == squash(w)) {
                return Some((w, String::new()));
            }
            continue;
        };
        let same_resource = have_lines
            .iter()
            .find(|(_, s)| s.as_ref().is_some_and(|s| s.resource == ws.resource));
        let Some((line, Some(hs))) = same_resource else {
            return Some((w, String::new()));
        };
        let held = ws
            .domains
            .iter()
            .all(|(id, v)| hs.domains.iter().any(|(hid, hv)| hid == id && hv == v));
        if !held {
            return Some((w, line.to_string()));
        }
    }
    None
}

/// One parsed schemata line: resource name and (domain, value) pairs, normalised.
struct Schema {
    resource: String,
    domains: Vec<(String, String)>,
}

fn parse_schema(line: &str) -> Option<Schema> {
    let (name, rest) = line.split_once(':')?;
    let mut domains = Vec::new();
    for d in rest.split(';').filter(|d| !d.trim().is_empty()) {
        let (id, v) = d.split_once('=')?;
        domains.push((normalise(id), normalise(v)));
    }
    Some(Schema {
        resource: name.trim().to_string(),
        domains,
    })
}

/// A number as the kernel would read it back: trimmed, lower case, without `0x` and
/// leading zeros.
fn normalise(v: &str) -> String {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_prefix("0x").unwrap_or(&v);
    let v = v.trim_start_matches('0');
    if v.is_empty() {
        "0".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs;

    /// A test tree behaves like resctrl: `mkdir` fills the new group (a MON group gets
    /// only `tasks`), `rmdir` takes a populated one.
    const FAKE: Kernel = Kernel {
        mkdir: |p| {
            fs::create_dir(p)?;
            fs::write(p.join("tasks"), "")?;
            let in_mon_groups = p.parent().and_then(Path::file_name) == Some("mon_groups".as_ref());
            if !in_mon_groups {
                fs::write(p.join("schemata"), "")?;
                fs::create_dir(p.join("mon_groups"))?;
            }
            Ok(())
        },
        rmdir: |p| fs::remove_dir_all(p),
    };

    /// The root of a fake resctrl mount, as a two-socket host shows it.
    const ROOT_SCHEMATA: &str = "    L3:0=007ff;1=007ff\n    MB:0=100;1=100\n";

    fn tree() -> (tempfile::TempDir, Resctrl) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        fs::write(root.join("schemata"), ROOT_SCHEMATA).unwrap();
        fs::write(root.join("tasks"), "").unwrap();
        fs::create_dir_all(root.join("mon_groups")).unwrap();
        fs::create_dir_all(root.join("info")).unwrap();
        fs::write(root.join("info/last_cmd_status"), "ok\n").unwrap();
        (t, Resctrl { root, kernel: FAKE })
    }

    /// An existing group `name` whose `schemata` reads `schemata`.
    fn group(r: &Resctrl, name: &str, schemata: &str) -> PathBuf {
        let g = r.root.join(name);
        (FAKE.mkdir)(&g).unwrap();
        fs::write(g.join("schemata"), schemata).unwrap();
        g
    }

    fn rdt(v: serde_json::Value) -> LinuxIntelRdt {
        serde_json::from_value(v).unwrap()
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap()
    }

    /// The names in the root, apart from the fake's own files.
    fn groups(r: &Resctrl) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(&r.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !["schemata", "tasks", "mon_groups", "info"].contains(&n.as_str()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_mount_is_found_in_mountinfo() {
        let mi = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 22 0:36 /sub /mnt/bound rw,relatime - resctrl resctrl rw
41 22 0:36 / /sys/fs/my\\040resctrl rw,relatime shared:20 - resctrl resctrl rw,cdp
42 22 0:36 / /second rw - resctrl resctrl rw
";
        assert_eq!(mount_point(mi), Some(PathBuf::from("/sys/fs/my resctrl")));
        let none = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n30 22 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(mount_point(none), None);
        assert_eq!(unoctal(r"a\134b\011c\0"), "a\\b\tc\\0");
    }

    #[test]
    fn validation_rules() {
        let check = |v: serde_json::Value| {
            let spec: Spec =
                serde_json::from_value(json!({"ociVersion": "1.2.1", "linux": {"intelRdt": v}}))
                    .unwrap();
            validate_spec(&spec)
        };
        for ok in [
            json!({}),
            json!({"closID": "/"}),
            json!({"closID": "guaranteed_group", "l3CacheSchema": "L3:0=f", "memBwSchema": "MB:0=20"}),
            json!({"schemata": ["L3:0=7f0;1=1f", "L2:0=f", "MB:0=20;1=70"], "enableMonitoring": true}),
        ] {
            assert_eq!(check(ok.clone()), Ok(()), "{ok}");
        }
        for (bad, why) in [
            (
                json!({"memBwSchema": "0=20"}),
                "does not start with \"MB:\"",
            ),
            (json!({"memBwSchema": "MB:0=20\nL3:0=f"}), "memBwSchema"),
            (json!({"l3CacheSchema": "L3:0=f\n"}), "newline"),
            (json!({"schemata": ["L3:0=f", "MB:0=1\r"]}), "newline"),
            (json!({"schemata": ["L3:0=f", " "]}), "empty line"),
            (json!({"closID": "a\nb"}), "newline"),
            (json!({"closID": "../x"}), "not \"/\" nor a group name"),
            (json!({"closID": "a/b"}), "group name"),
            (json!({"closID": ".."}), "group name"),
            (json!({"closID": "info"}), "group name"),
            (json!({"closID": "mon_groups"}), "group name"),
        ] {
            let e = check(bad.clone()).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let none: Spec = serde_json::from_value(json!({"ociVersion": "1.2.1"})).unwrap();
        assert_eq!(validate_spec(&none), Ok(()));
    }

    #[test]
    fn without_closid_the_container_id_group_is_created_written_in_order_and_removed() {
        let (_t, r) = tree();
        let spec = rdt(json!({
            "l3CacheSchema": "L3:0=f0;1=f",
            "memBwSchema": "MB:0=20;1=70",
            "schemata": ["L2:0=f;1=f", "L3:0=ff"]
        }));
        let p = r.setup("ctr1", &spec).unwrap();
        assert_eq!(p.group, r.root.join("ctr1"));
        assert!(p.created && !p.named && p.monitor.is_none());
        // One line per write (the fake keeps them all): l3CacheSchema, memBwSchema, then
        // the schemata lines.
        assert_eq!(
            read(&p.group.join("schemata")),
            "L3:0=f0;1=f\nMB:0=20;1=70\nL2:0=f;1=f\nL3:0=ff\n"
        );
        p.join(4242).unwrap();
        assert_eq!(read(&p.group.join("tasks")), "4242\n");
        assert_eq!(read(&r.root.join("tasks")), "", "root group untouched");
        assert_eq!(read(&r.root.join("schemata")), ROOT_SCHEMATA);
        p.remove_with(&FAKE).unwrap();
        assert!(groups(&r).is_empty());
        // Already gone is fine (a repeated delete).
        p.remove_with(&FAKE).unwrap();
    }

    #[test]
    fn without_schemas_or_closid_an_empty_group_is_still_created() {
        let (_t, r) = tree();
        let p = r.setup("ctr2", &rdt(json!({}))).unwrap();
        assert!(p.created);
        assert_eq!(read(&p.group.join("schemata")), "", "no schemata write");
        assert_eq!(groups(&r), ["ctr2"]);
    }

    #[test]
    fn an_existing_group_is_compared_leniently_and_never_written_nor_removed() {
        let (_t, r) = tree();
        let have = "    L3:0=000f0;1=0001f\n    MB:0= 20;1= 70\n";
        let g = group(&r, "gold", have);
        // Other domain order, case, 0x, no padding, a subset of domains: all held.
        let spec = rdt(json!({
            "closID": "gold",
            "l3CacheSchema": "L3:1=0x1F;0=f0",
            "memBwSchema": "MB:0=20",
            "schemata": ["  MB : 1 = 70 "]
        }));
        let p = r.setup("ctr3", &spec).unwrap();
        assert_eq!(p.group, g);
        assert!(!p.created && p.named);
        assert_eq!(read(&g.join("schemata")), have, "nothing written");
        p.join(77).unwrap();
        assert_eq!(read(&g.join("tasks")), "77\n");
        p.remove_with(&FAKE).unwrap();
        assert!(g.is_dir(), "an existing group is kept");
        p.undo_with(&FAKE).unwrap();
        assert!(g.is_dir(), "a failed create keeps it too");
    }

    #[test]
    fn an_existing_group_with_other_schemas_is_an_error() {
        let (_t, r) = tree();
        let g = group(&r, "gold", "    L3:0=000f0;1=0001f\n    MB:0= 20;1= 70\n");
        for (v, want, have) in [
            (
                json!({"l3CacheSchema": "L3:0=ff"}),
                "L3:0=ff",
                "L3:0=000f0;1=0001f",
            ),
            (
                json!({"memBwSchema": "MB:1=50"}),
                "MB:1=50",
                "MB:0= 20;1= 70",
            ),
            (json!({"schemata": ["L3:0=f0", "L2:0=f"]}), "L2:0=f", ""),
            (
                json!({"schemata": ["L3:2=f0"]}),
                "L3:2=f0",
                "L3:0=000f0;1=0001f",
            ),
            (json!({"schemata": ["garbage"]}), "garbage", ""),
        ] {
            let mut v = v;
            v["closID"] = json!("gold");
            let e = r.setup("ctr4", &rdt(v.clone())).unwrap_err();
            match &e {
                ResctrlError::Mismatch {
                    group,
                    want: w,
                    have: h,
                } => {
                    assert_eq!((group, w.as_str(), h.as_str()), (&g, want, have), "{v}");
                }
                other => panic!("{v}: {other}"),
            }
            assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
            assert!(e.to_string().contains("not"), "{e}");
        }
        // The default closID (the container id) is compared the same way.
        group(&r, "ctr5", "L3:0=1\n");
        let e = r.setup("ctr5", &rdt(json!({"l3CacheSchema": "L3:0=3"})));
        assert!(matches!(e, Err(ResctrlError::Mismatch { .. })), "{e:?}");
        assert_eq!(groups(&r), ["ctr5", "gold"], "nothing created");
    }

    #[test]
    fn a_closid_without_schemas_must_exist() {
        let (_t, r) = tree();
        let e = r
            .setup("ctr6", &rdt(json!({"closID": "preset"})))
            .unwrap_err();
        assert!(matches!(&e, ResctrlError::MissingGroup { closid, .. } if closid == "preset"));
        assert!(e.to_string().contains("must be pre-configured"), "{e}");
        assert!(groups(&r).is_empty(), "nothing created");
        let g = group(&r, "preset", "L3:0=1\n");
        let p = r.setup("ctr6", &rdt(json!({"closID": "preset"}))).unwrap();
        assert_eq!((p.group.clone(), p.created), (g, false));
    }

    #[test]
    fn a_missing_closid_with_schemas_is_created_and_kept_on_delete() {
        let (_t, r) = tree();
        let spec = rdt(json!({"closID": "silver", "memBwSchema": "MB:0=50"}));
        let p = r.setup("ctr7", &spec).unwrap();
        assert!(p.created && p.named);
        assert_eq!(read(&p.group.join("schemata")), "MB:0=50\n");
        p.remove_with(&FAKE).unwrap();
        assert_eq!(groups(&r), ["silver"], "a closID group is not removed");
        // A second container of that closID finds it, compares, and shares it.
        let q = r.setup("ctr8", &spec).unwrap();
        assert_eq!((q.group.clone(), q.created), (p.group.clone(), false));
        // A failed create removes what it made, closID or not.
        p.undo_with(&FAKE).unwrap();
        assert!(groups(&r).is_empty());
    }

    #[test]
    fn closid_slash_is_the_root_group() {
        let (_t, r) = tree();
        let p = r.setup("ctr9", &rdt(json!({"closID": "/"}))).unwrap();
        assert_eq!((p.group.clone(), p.created), (r.root.clone(), false));
        p.join(5).unwrap();
        assert_eq!(read(&r.root.join("tasks")), "5\n");
        let same = rdt(json!({"closID": "/", "l3CacheSchema": "L3:0=7ff;1=7ff"}));
        assert!(r.setup("ctr9", &same).is_ok());
        let other = rdt(json!({"closID": "/", "l3CacheSchema": "L3:0=1"}));
        assert!(matches!(
            r.setup("ctr9", &other),
            Err(ResctrlError::Mismatch { .. })
        ));
        p.undo_with(&FAKE).unwrap();
        assert!(r.root.join("schemata").exists(), "the root stays");
        assert_eq!(read(&r.root.join("schemata")), ROOT_SCHEMATA);
    }

    #[test]
    fn monitoring_makes_a_mon_group_named_after_the_container() {
        let (_t, r) = tree();
        let p = r
            .setup("ctr10", &rdt(json!({"enableMonitoring": true})))
            .unwrap();
        let mon = r.root.join("ctr10/mon_groups/ctr10");
        assert_eq!(p.monitor.as_ref(), Some(&mon));
        p.join(99).unwrap();
        // The group first (the kernel takes a task into a MON group only from its
        // parent), then the MON group.
        assert_eq!(read(&p.group.join("tasks")), "99\n");
        assert_eq!(read(&mon.join("tasks")), "99\n");
        p.remove_with(&FAKE).unwrap();
        assert!(groups(&r).is_empty());

        // In a shared closID group only the MON group goes.
        let g = group(&r, "gold", "L3:0=f\n");
        let spec = rdt(json!({"closID": "gold", "enableMonitoring": true}));
        let p = r.setup("ctr11", &spec).unwrap();
        assert!(g.join("mon_groups/ctr11").is_dir());
        p.remove_with(&FAKE).unwrap();
        assert!(g.is_dir() && !g.join("mon_groups/ctr11").exists());

        // And in the root group, root/mon_groups.
        let p = r
            .setup(
                "ctr12",
                &rdt(json!({"closID": "/", "enableMonitoring": true})),
            )
            .unwrap();
        assert_eq!(p.monitor, Some(r.root.join("mon_groups/ctr12")));
        p.remove_with(&FAKE).unwrap();
        assert!(!r.root.join("mon_groups/ctr12").exists() && r.root.is_dir());
    }

    #[test]
    fn a_failed_mon_group_is_an_error_and_undoes_the_group() {
        let (_t, r) = tree();
        // Taken already (or the kernel's limit of MON groups reached).
        fs::create_dir(r.root.join("mon_groups/ctr13")).unwrap();
        let spec = rdt(json!({"closID": "/", "enableMonitoring": true}));
        let e = r.setup("ctr13", &spec).unwrap_err();
        assert!(e.to_string().contains("MON group"), "{e}");
        // A new group made for it is removed again.
        let spec = rdt(json!({"enableMonitoring": true, "l3CacheSchema": "L3:0=f"}));
        let no_mon = Kernel {
            mkdir: |p| {
                if p.parent().and_then(Path::file_name) == Some("mon_groups".as_ref()) {
                    return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
                }
                (FAKE.mkdir)(p)
            },
            rmdir: FAKE.rmdir,
        };
        let r2 = Resctrl {
            root: r.root.clone(),
            kernel: no_mon,
        };
        let e = r2.setup("ctr14", &spec).unwrap_err();
        assert!(matches!(e, ResctrlError::Io { .. }), "{e}");
        assert!(groups(&r).is_empty(), "{:?}", groups(&r));
    }

    #[test]
    fn a_refused_schemata_write_reports_the_kernel_status_and_undoes_the_group() {
        let (_t, r) = tree();
        fs::write(r.root.join("info/last_cmd_status"), "Duplicate domain 0\n").unwrap();
        // The kernel refuses the write: here a `schemata` that cannot be written.
        let refusing = Kernel {
            mkdir: |p| {
                (FAKE.mkdir)(p)?;
                fs::remove_file(p.join("schemata"))?;
                fs::create_dir(p.join("schemata"))
            },
            rmdir: FAKE.rmdir,
        };
        let r = Resctrl {
            root: r.root.clone(),
            kernel: refusing,
        };
        let e = r
            .setup("ctr15", &rdt(json!({"schemata": ["L3:0=f;0=f"]})))
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("L3:0=f;0=f") && msg.contains("(Duplicate domain 0)"),
            "{msg}"
        );
        assert!(groups(&r).is_empty(), "group left behind");
    }

    #[test]
    fn a_missing_mount_is_unavailable() {
        let e = ResctrlError::NotMounted;
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e
            .to_string()
            .starts_with("linux.intelRdt is set but no resctrl filesystem is mounted"));
    }

    #[test]
    fn placement_round_trips_through_the_state() {
        let p = Placement {
            group: "/sys/fs/resctrl/c".into(),
            created: true,
            named: false,
            monitor: Some("/sys/fs/resctrl/c/mon_groups/c".into()),
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["monitor"], "/sys/fs/resctrl/c/mon_groups/c");
        assert_eq!(serde_json::from_value::<Placement>(v).unwrap(), p);
    }
}
