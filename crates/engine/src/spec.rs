//! Building the OCI runtime spec of a container from its Docker configuration, with
//! Docker's security defaults (capabilities, masked and read-only paths, device rules,
//! seccomp profile).

use crate::error::{EngineError, Result};
use crate::fsutil::resolve_in_root;
use api::{ContainerConfig, HostConfig};
use serde_json::{json, Value};
use std::path::Path;

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability the kernel knows (for `--privileged` and `--cap-add ALL`).
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths Docker masks in every unprivileged container.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in every unprivileged container.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Normalizes a capability name (`net_admin` → `CAP_NET_ADMIN`).
pub fn normalize_cap(c: &str) -> String {
    let u = c.trim().to_ascii_uppercase();
    if u == "ALL" || u.starts_with("CAP_") {
        u
    } else {
        format!("CAP_{u}")
    }
}

/// The capability set of a container: Docker's defaults, or all with `privileged`, then
/// `cap_add`, then `cap_drop`.
pub fn capabilities(hc: &HostConfig) -> Result<Vec<String>> {
    let mut caps: Vec<String> = if hc.privileged {
        ALL_CAPS.iter().map(|s| s.to_string()).collect()
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    for c in &hc.cap_add {
        let c = normalize_cap(c);
        if c == "ALL" {
            caps = ALL_CAPS.iter().map(|s| s.to_string()).collect();
        } else if !ALL_CAPS.contains(&c.as_str()) {
            return Err(EngineError::Invalid(format!("unknown capability: {c:?}")));
        } else if !caps.contains(&c) {
            caps.push(c);
        }
    }
    for c in &hc.cap_drop {
        let c = normalize_cap(c);
        if c == "ALL" {
            caps.clear();
        } else if !ALL_CAPS.contains(&c.as_str()) {
            return Err(EngineError::Invalid(format!("unknown capability: {c:?}")));
        } else {
            caps.retain(|x| *x != c);
        }
    }
    Ok(caps)
}

/// A resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// The home directory (for `HOME`).
    pub home: String,
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, empty for root) with the
/// container's `/etc/passwd` and `/etc/group`; supplementary groups come from
/// `/etc/group` membership plus `group_add`.
pub fn resolve_user(rootfs: &Path, user: &str, group_add: &[String]) -> Result<Identity> {
    let read = |p: &str| -> String {
        resolve_in_root(rootfs, p, true)
            .ok()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .unwrap_or_default()
    };
    let passwd = read("/etc/passwd");
    let groups = read("/etc/group");
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let pw = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let (uid, mut gid, home, uname) = match (pw, u.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[5].to_string(),
            f[0].to_string(),
        ),
        (None, Ok(n)) => (n, 0, "/".to_string(), String::new()),
        (None, Err(_)) => {
            return Err(EngineError::Invalid(format!(
                "unable to find user {u}: no matching entries in passwd file"
            )))
        }
    };
    let find_group = |g: &str| -> Result<u32> {
        if let Ok(n) = g.parse::<u32>() {
            return Ok(n);
        }
        groups
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && f[0] == g)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| {
                EngineError::Invalid(format!(
                    "unable to find group {g}: no matching entries in group file"
                ))
            })
    };
    if let Some(g) = g {
        gid = find_group(g)?;
    }
    let mut additional = Vec::new();
    if !uname.is_empty() && g.is_none() {
        for f in groups.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if f.len() >= 4 && f[3].split(',').any(|m| m == uname) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if n != gid && !additional.contains(&n) {
                        additional.push(n);
                    }
                }
            }
        }
    }
    for g in group_add {
        let n = find_group(g)?;
        if !additional.contains(&n) {
            additional.push(n);
        }
    }
    Ok(Identity {
        uid,
        gid,
        additional_gids: additional,
        home,
    })
}

/// Parses a size like `64m`, `1g`, `100k` or plain bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    if v < 0.0 {
        return None;
    }
    Some((v * mult as f64) as u64)
}

/// Parses a signal name (`TERM`, `SIGTERM`, `sigkill`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(EngineError::Invalid(format!("invalid signal: {s}")));
    }
    let u = s.to_ascii_uppercase();
    let name = if u.starts_with("SIG") {
        u
    } else {
        format!("SIG{u}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| EngineError::Invalid(format!("invalid signal: {s}")))
}

/// The spec annotation asking `berth-runtime` to run the container's program under its
/// built-in init (pid 1 reaps zombies and forwards signals: `HostConfig.Init`). Other
/// runtimes ignore it.
pub const INIT_ANNOTATION: &str = "run.berth.init";

/// The inputs of [`build`] besides the configuration.
pub struct SpecInputs<'a> {
    /// The container id.
    pub id: &'a str,
    /// The mounted root filesystem (for user lookup).
    pub rootfs: &'a Path,
    /// The process arguments (entrypoint + cmd).
    pub args: Vec<String>,
    /// Host files bind-mounted at `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.
    pub etc_files: Vec<(String, String)>,
    /// The network namespace: `None` for the host's, `Some("")` for a new one,
    /// `Some(path)` to join one.
    pub netns: Option<String>,
    /// Extra mounts (volumes, binds) as OCI mount objects.
    pub mounts: Vec<Value>,
    /// The init binary to run as pid 1 (`--init`), mounted at `/sbin/docker-init`.
    pub init: Option<std::path::PathBuf>,
}

/// Builds the OCI spec for a container.
pub fn build(cfg: &ContainerConfig, hc: &HostConfig, inp: SpecInputs<'_>) -> Result<Value> {
    let id = resolve_user(inp.rootfs, &cfg.user, &hc.group_add)?;
    let caps = capabilities(hc)?;
    let mut env: Vec<String> = Vec::new();
    if !cfg.env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    env.extend(cfg.env.iter().cloned());
    if !cfg.hostname.is_empty() {
        env.push(format!("HOSTNAME={}", cfg.hostname));
    }
    if cfg.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!(
            "HOME={}",
            if id.home.is_empty() { "/" } else { &id.home }
        ));
    }
    let mut args = inp.args;
    if inp.init.is_some() {
        let mut a = vec!["/sbin/docker-init".to_string(), "--".to_string()];
        a.append(&mut args);
        args = a;
    }
    let no_new_privs = hc.security_opt.iter().any(|o| {
        o == "no-new-privileges" || o == "no-new-privileges:true" || o == "no-new-privileges=true"
    });
    let mut rlimits = Vec::new();
    for u in &hc.ulimits {
        rlimits.push(json!({
            "type": format!("RLIMIT_{}", u.name.to_ascii_uppercase()),
            "soft": u.soft.max(0), "hard": u.hard.max(0)
        }));
    }
    let mut process = json!({
        "terminal": cfg.tty,
        "user": {"uid": id.uid, "gid": id.gid, "additionalGids": id.additional_gids},
        "args": args,
        "env": env,
        "cwd": if cfg.working_dir.is_empty() { "/" } else { cfg.working_dir.as_str() },
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": no_new_privs,
    });
    if !rlimits.is_empty() {
        process["rlimits"] = Value::Array(rlimits);
    }
    if hc.oom_score_adj != 0 {
        process["oomScoreAdj"] = json!(hc.oom_score_adj);
    }
    let shm = if hc.shm_size > 0 {
        hc.shm_size
    } else {
        64 << 20
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if hc.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if hc.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm}")]}),
    ];
    let user_dests: Vec<String> = inp
        .mounts
        .iter()
        .filter_map(|m| m["destination"].as_str().map(String::from))
        .collect();
    for (dst, src) in &inp.etc_files {
        if user_dests.iter().any(|d| d == dst) {
            continue;
        }
        mounts.push(json!({"destination": dst, "type": "bind", "source": src, "options": ["rbind", "rprivate"]}));
    }
    for (path, opts) in &hc.tmpfs {
        let mut o = vec![
            "nosuid".to_string(),
            "nodev".to_string(),
            "noexec".to_string(),
        ];
        o.extend(opts.split(',').filter(|s| !s.is_empty()).map(String::from));
        mounts.push(json!({"destination": path, "type": "tmpfs", "source": "tmpfs", "options": o}));
    }
    if let Some(init) = &inp.init {
        mounts.push(json!({"destination": "/sbin/docker-init", "type": "bind", "source": init, "options": ["bind", "ro", "rprivate"]}));
    }
    mounts.extend(inp.mounts);

    let mut namespaces = vec![
        json!({"type": "mount"}),
        json!({"type": "uts"}),
        json!({"type": "ipc"}),
    ];
    if hc.pid_mode != "host" {
        namespaces.push(json!({"type": "pid"}));
    }
    match &inp.netns {
        None => {}
        Some(p) if p.is_empty() => namespaces.push(json!({"type": "network"})),
        Some(p) => namespaces.push(json!({"type": "network", "path": p})),
    }
    if hc.cgroupns_mode == "private" {
        namespaces.push(json!({"type": "cgroup"}));
    }

    let mut devices = vec![json!({"allow": false, "access": "rwm"})];
    if hc.privileged {
        devices = vec![json!({"allow": true, "access": "rwm"})];
    } else {
        for (t, maj, min, acc) in [
            ("c", Some(1), Some(3), "rwm"),
            ("c", Some(1), Some(5), "rwm"),
            ("c", Some(1), Some(7), "rwm"),
            ("c", Some(1), Some(8), "rwm"),
            ("c", Some(1), Some(9), "rwm"),
            ("c", Some(5), Some(0), "rwm"),
            ("c", Some(5), Some(1), "rwm"),
            ("c", Some(5), Some(2), "rwm"),
            ("c", Some(136), None, "rwm"),
            ("c", Some(10), Some(200), "rwm"),
            ("c", None, None, "m"),
            ("b", None, None, "m"),
        ] {
            let mut d = json!({"allow": true, "type": t, "access": acc});
            if let Some(m) = maj {
                d["major"] = json!(m);
            }
            if let Some(m) = min {
                d["minor"] = json!(m);
            }
            devices.push(d);
        }
    }
    let mut linux_devices = Vec::new();
    for d in &hc.devices {
        let meta = std::fs::metadata(&d.path_on_host).map_err(|e| {
            EngineError::Invalid(format!(
                "error gathering device information while adding custom device {:?}: {e}",
                d.path_on_host
            ))
        })?;
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let rdev = meta.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        let t = if meta.file_type().is_block_device() {
            "b"
        } else {
            "c"
        };
        let dst = if d.path_in_container.is_empty() {
            &d.path_on_host
        } else {
            &d.path_in_container
        };
        linux_devices.push(json!({"path": dst, "type": t, "major": major, "minor": minor, "fileMode": meta.mode() & 0o7777, "uid": 0, "gid": 0}));
        let acc = if d.cgroup_permissions.is_empty() {
            "rwm"
        } else {
            d.cgroup_permissions.as_str()
        };
        devices
            .push(json!({"allow": true, "type": t, "major": major, "minor": minor, "access": acc}));
    }
    let mut resources = json!({"devices": devices});
    let mut memory = serde_json::Map::new();
    if hc.memory > 0 {
        memory.insert("limit".into(), json!(hc.memory));
        let swap = if hc.memory_swap == 0 {
            hc.memory * 2
        } else {
            hc.memory_swap
        };
        memory.insert("swap".into(), json!(swap));
    }
    if hc.memory_reservation > 0 {
        memory.insert("reservation".into(), json!(hc.memory_reservation));
    }
    if let Some(s) = hc.memory_swappiness.filter(|s| *s >= 0) {
        memory.insert("swappiness".into(), json!(s));
    }
    if hc.oom_kill_disable == Some(true) {
        memory.insert("disableOOMKiller".into(), json!(true));
    }
    if !memory.is_empty() {
        resources["memory"] = Value::Object(memory);
    }
    let mut cpu = serde_json::Map::new();
    if hc.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(hc.cpu_shares));
    }
    if hc.nano_cpus > 0 {
        let period = 100_000i64;
        cpu.insert("period".into(), json!(period));
        cpu.insert("quota".into(), json!(hc.nano_cpus * period / 1_000_000_000));
    } else {
        if hc.cpu_period > 0 {
            cpu.insert("period".into(), json!(hc.cpu_period));
        }
        if hc.cpu_quota != 0 {
            cpu.insert("quota".into(), json!(hc.cpu_quota));
        }
    }
    if !hc.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(hc.cpuset_cpus));
    }
    if !hc.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(hc.cpuset_mems));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(p) = hc.pids_limit.filter(|p| *p > 0) {
        resources["pids"] = json!({"limit": p});
    }
    if hc.blkio_weight > 0 {
        resources["blockIO"] = json!({"weight": hc.blkio_weight});
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": cgroups_path(hc, inp.id),
        "devices": linux_devices,
    });
    if !hc.sysctls.is_empty() {
        linux["sysctl"] = json!(hc.sysctls);
    }
    if !hc.privileged {
        linux["maskedPaths"] = json!(hc
            .masked_paths
            .clone()
            .unwrap_or_else(|| MASKED_PATHS.iter().map(|s| s.to_string()).collect()));
        linux["readonlyPaths"] = json!(hc
            .readonly_paths
            .clone()
            .unwrap_or_else(|| READONLY_PATHS.iter().map(|s| s.to_string()).collect()));
    }
    let unconfined = hc
        .security_opt
        .iter()
        .any(|o| o == "seccomp=unconfined" || o == "seccomp:unconfined");
    if !hc.privileged && !unconfined {
        let profile = seccomp::docker_default(&caps, std::env::consts::ARCH);
        linux["seccomp"] = serde_json::to_value(&profile)
            .map_err(|e| EngineError::Runtime(format!("serialize seccomp profile: {e}")))?;
    }
    let hostname = if cfg.hostname.is_empty() {
        &inp.id[..12.min(inp.id.len())]
    } else {
        cfg.hostname.as_str()
    };
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs", "readonly": hc.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
    });
    if inp.netns.is_some() || hc.uts_mode != "host" {
        spec["hostname"] = json!(hostname);
    }
    if hc.init == Some(true) && inp.init.is_none() {
        // No init binary to mount: ask berth-runtime for its built-in one.
        spec["annotations"] = json!({INIT_ANNOTATION: "true"});
    }
    // Validate against the OCI types (the runtime boundary).
    let typed: oci_spec::runtime::Spec = serde_json::from_value(spec)
        .map_err(|e| EngineError::Runtime(format!("invalid runtime spec: {e}")))?;
    serde_json::to_value(&typed)
        .map_err(|e| EngineError::Runtime(format!("serialize runtime spec: {e}")))
}

/// The container's `linux.cgroupsPath`: `<--cgroup-parent, default /berth>/<id>`,
/// always absolute. A relative `--cgroup-parent` is relative to the cgroup of the host's
/// init, which is the root (Docker's rule for the cgroupfs driver), not to whichever
/// cgroup the daemon, the monitor or the runtime happen to run in: the daemon makes the
/// cgroup at create and reads its stats, the runtime joins it, and all must mean the
/// same directory.
pub(crate) fn cgroups_path(hc: &api::HostConfig, id: &str) -> String {
    let parent = if hc.cgroup_parent.is_empty() {
        "/berth"
    } else {
        hc.cgroup_parent.as_str()
    };
    let parent = parent.trim_matches('/');
    if parent.is_empty() {
        format!("/{id}")
    } else {
        format!("/{parent}/{id}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroups_paths_are_absolute() {
        let mut hc = HostConfig::default();
        assert_eq!(cgroups_path(&hc, "c1"), "/berth/c1");
        for (parent, want) in [
            ("/custom", "/custom/c1"),
            ("/custom/", "/custom/c1"),
            ("relative/sub", "/relative/sub/c1"),
            ("/", "/c1"),
        ] {
            hc.cgroup_parent = parent.into();
            assert_eq!(cgroups_path(&hc, "c1"), want, "{parent}");
        }
    }

    #[test]
    fn caps_defaults_add_drop() {
        let mut hc = HostConfig::default();
        assert_eq!(capabilities(&hc).unwrap().len(), DEFAULT_CAPS.len());
        hc.cap_add = vec!["net_admin".into()];
        hc.cap_drop = vec!["CHOWN".into()];
        let c = capabilities(&hc).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!c.contains(&"CAP_CHOWN".to_string()));
        hc.cap_add = vec!["BOGUS".into()];
        assert!(capabilities(&hc).is_err());
    }

    #[test]
    fn users_resolve_from_rootfs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:u:/home/user:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nusers:x:100:user\nuser:x:1000:\n",
        )
        .unwrap();
        let i = resolve_user(d.path(), "user", &[]).unwrap();
        assert_eq!(
            (i.uid, i.gid, i.additional_gids.clone(), i.home.as_str()),
            (1000, 1000, vec![100], "/home/user")
        );
        let i = resolve_user(d.path(), "user:root", &[]).unwrap();
        assert_eq!((i.uid, i.gid), (1000, 0));
        let i = resolve_user(d.path(), "", &[]).unwrap();
        assert_eq!((i.uid, i.gid), (0, 0));
        let i = resolve_user(d.path(), "4242:4243", &[]).unwrap();
        assert_eq!((i.uid, i.gid), (4242, 4243));
        assert!(resolve_user(d.path(), "nobody-here", &[]).is_err());
    }

    #[test]
    fn sizes_and_signals() {
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("NOPE").is_err());
    }
}
