//! Discovery of cgroup hierarchies from `/proc/self/mountinfo` and of the calling
//! process's cgroups from `/proc/self/cgroup`.
//!
//! The parsers are pure functions over text so that v1, v2 and hybrid layouts can be
//! tested with sample input; [`crate::hierarchies`] glues them to the live files.

use std::path::PathBuf;

/// The cgroup v1 controllers this crate recognises in mount options. Other mount options
/// (`rw`, `nosuid`, `clone_children`, `release_agent=...`) are not controllers.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
    "debug",
];

/// One cgroup mount found in mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// The path inside the hierarchy that is the root of this mount (usually `/`).
    pub root: String,
    /// Whether it is cgroup2.
    pub v2: bool,
    /// For v1: the controllers (and `name=...`) from the super options. Empty for v2
    /// (read from `cgroup.controllers` by the caller).
    pub controllers: Vec<String>,
}

/// Undo the octal escapes (`\040` for space, ...) the kernel uses in mountinfo paths.
pub(crate) fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text into its cgroup mounts, in file order, dropping later mounts of a
/// hierarchy already seen (bind mounts of the same controllers, a second cgroup2 mount).
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out: Vec<CgroupMount> = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split_whitespace().collect();
        let post: Vec<&str> = post.split_whitespace().collect();
        if pre.len() < 5 || post.is_empty() {
            continue;
        }
        let fstype = post[0];
        let v2 = match fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        let controllers = if v2 {
            Vec::new()
        } else {
            let opts = post.get(2).copied().unwrap_or("");
            opts.split(',')
                .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                .map(str::to_string)
                .collect()
        };
        let m = CgroupMount {
            mountpoint: PathBuf::from(unescape(pre[4])),
            root: unescape(pre[3]),
            v2,
            controllers,
        };
        let dup = out
            .iter()
            .any(|o| o.v2 == m.v2 && (m.v2 || sorted(&o.controllers) == sorted(&m.controllers)));
        if !dup {
            out.push(m);
        }
    }
    out
}

fn sorted(v: &[String]) -> Vec<String> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcCgroup {
    /// Hierarchy id (0 for the unified hierarchy).
    pub id: u32,
    /// Controllers of the hierarchy (empty for the unified hierarchy).
    pub controllers: Vec<String>,
    /// The process's cgroup in that hierarchy (absolute, from the hierarchy root).
    pub path: String,
}

/// Parse the text of `/proc/<pid>/cgroup`.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<ProcCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let ctrls = parts.next()?;
            let path = parts.next()?.to_string();
            let controllers = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(str::to_string).collect()
            };
            Some(ProcCgroup {
                id,
                controllers,
                path,
            })
        })
        .collect()
}

/// The process's cgroup path in the hierarchy `m` according to `procs`, if listed.
pub(crate) fn current_path<'a>(m: &CgroupMount, procs: &'a [ProcCgroup]) -> Option<&'a str> {
    procs
        .iter()
        .find(|p| {
            if m.v2 {
                p.id == 0 && p.controllers.is_empty()
            } else {
                !p.controllers.is_empty() && sorted(&p.controllers) == sorted(&m.controllers)
            }
        })
        .map(|p| p.path.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 22 0:23 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,cpu,cpuacct
30 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,memory
31 25 0:29 / /sys/fs/cgroup/cpuset rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpuset,clone_children
32 25 0:30 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,net_cls,net_prio
40 28 0:28 / /mnt/memory\\040copy rw,relatime - cgroup cgroup rw,memory
";

    const V2: &str = "\
24 29 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
28 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn parses_v1_host() {
        let m = parse_mountinfo(V1);
        assert_eq!(m.len(), 5, "{m:?}");
        assert!(m.iter().all(|m| !m.v2));
        assert_eq!(m[0].controllers, vec!["name=systemd"]);
        assert_eq!(m[1].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(m[1].mountpoint, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m[3].controllers, vec!["cpuset"]);
        assert_eq!(m[4].controllers, vec!["net_cls", "net_prio"]);
    }

    #[test]
    fn parses_v2_host() {
        let m = parse_mountinfo(V2);
        assert_eq!(m.len(), 1);
        assert!(m[0].v2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m[0].root, "/");
    }

    #[test]
    fn parses_hybrid_host() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 4);
        assert_eq!(m.iter().filter(|m| m.v2).count(), 1);
        assert_eq!(m[3].mountpoint, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\\\"), "/a\\\\");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn parses_proc_cgroup_and_matches_mounts() {
        let procs = parse_proc_cgroup(
            "12:cpu,cpuacct:/user.slice\n4:memory:/process_api/x\n1:name=systemd:/init.scope\n0::/user.slice/session-1.scope\n",
        );
        assert_eq!(procs.len(), 4);
        let mounts = parse_mountinfo(V1);
        assert_eq!(current_path(&mounts[1], &procs), Some("/user.slice"));
        assert_eq!(current_path(&mounts[2], &procs), Some("/process_api/x"));
        assert_eq!(current_path(&mounts[0], &procs), Some("/init.scope"));
        assert_eq!(current_path(&mounts[3], &procs), None);
        let v2 = parse_mountinfo(V2);
        assert_eq!(
            current_path(&v2[0], &procs),
            Some("/user.slice/session-1.scope")
        );
    }
}
