//! Shared test fixtures: a small busybox root filesystem and OCI bundles built on it.
//!
//! The root filesystem comes from Debian's `busybox-static` (`/bin/busybox`, a static
//! binary), with one symlink per applet (`sh`, `echo`, `true`, `cat`, `sleep`, `httpd`,
//! ...), the directories a container expects, and minimal `/etc/passwd` and `/etc/group`.
//! Each test gets its own copy (a few MiB), so tests can write into it and run in
//! parallel. Nothing here needs the network.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the static busybox binary is looked for, in order.
const BUSYBOX_CANDIDATES: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// Returns the path of a static busybox on this host, or an error saying how to get it.
pub fn busybox_binary() -> io::Result<PathBuf> {
    for c in BUSYBOX_CANDIDATES {
        let p = Path::new(c);
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "busybox not found: apt-get install busybox-static",
    ))
}

/// Lists busybox's applets (`busybox --list`).
fn applets(busybox: &Path) -> io::Result<Vec<String>> {
    let out = Command::new(busybox).arg("--list").output()?;
    if !out.status.success() {
        return Err(io::Error::other("busybox --list failed"));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.contains('/'))
        .collect())
}

/// Builds a busybox root filesystem at `dest` (created if missing).
///
/// Layout: `/bin/busybox` plus a symlink per applet in `/bin`, `/sbin`, `/usr/bin` links to
/// `/bin`, empty `/proc /sys /dev /tmp /run /root /home /var/www /mnt`, and `/etc/passwd`,
/// `/etc/group`, `/etc/hostname`. Assumes `dest` is empty or holds an earlier copy.
pub fn busybox_rootfs(dest: &Path) -> io::Result<()> {
    let bb = busybox_binary()?;
    for d in [
        "bin", "sbin", "usr", "etc", "proc", "sys", "dev", "tmp", "run", "root", "home", "var/www",
        "var/log", "mnt",
    ] {
        fs::create_dir_all(dest.join(d))?;
    }
    fs::set_permissions(dest.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    let target = dest.join("bin/busybox");
    if !target.exists() {
        fs::copy(&bb, &target)?;
    }
    for applet in applets(&bb)? {
        let link = dest.join("bin").join(&applet);
        if applet != "busybox" && fs::symlink_metadata(&link).is_err() {
            symlink("busybox", &link)?;
        }
    }
    for (link, to) in [("usr/bin", "../bin"), ("usr/sbin", "../bin")] {
        if fs::symlink_metadata(dest.join(link)).is_err() {
            symlink(to, dest.join(link))?;
        }
    }
    fs::write(
        dest.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\nuser:x:1000:1000:user:/home:/bin/sh\n",
    )?;
    fs::write(
        dest.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nusers:x:100:user\nnogroup:x:65534:\nuser:x:1000:\n",
    )?;
    fs::write(dest.join("etc/hostname"), "busybox\n")?;
    fs::write(dest.join("var/www/index.html"), "hello from berth\n")?;
    Ok(())
}

/// A temporary OCI bundle (`config.json` + `rootfs/`) holding a busybox root filesystem.
///
/// The directory is removed on drop. The config starts as [`default_spec`] and tests edit
/// it as JSON before calling [`Bundle::write_config`].
pub struct Bundle {
    dir: tempfile_lite::TempDir,
    /// The config that [`Bundle::write_config`] writes.
    pub config: serde_json::Value,
}

impl Bundle {
    /// Creates a bundle under `/tmp` with a fresh busybox rootfs and a default config
    /// running `args`.
    pub fn new(args: &[&str]) -> io::Result<Bundle> {
        let dir = tempfile_lite::TempDir::new("berth-bundle")?;
        busybox_rootfs(&dir.path().join("rootfs"))?;
        let b = Bundle {
            dir,
            config: default_spec(args),
        };
        b.write_config()?;
        Ok(b)
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The bundle's root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Writes `self.config` to `config.json`.
    pub fn write_config(&self) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(&self.config).map_err(io::Error::other)?;
        fs::write(self.dir.path().join("config.json"), text)
    }
}

/// A runc-style default config (as `runc spec` writes, without a terminal) running `args`
/// as root in new pid, ipc, uts, mount and network namespaces.
pub fn default_spec(args: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "berth",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Whether the cgroup berth's runtime makes by default for container `id`
/// (`/berth/<id>`) exists in any hierarchy: each v1 controller's, or the cgroup2 root
/// (a v2-only host).
pub fn berth_cgroup_left(id: &str) -> bool {
    fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path())
        .chain([PathBuf::from("/sys/fs/cgroup")])
        .any(|h| h.join("berth").join(id).exists())
}

/// A unique name for test resources (containers, networks, cgroups): `prefix-PID-N`.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// True when the test runs as root (most end-to-end tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Host networking of one test daemon: its own bridge device, subnet and iptables chain
/// prefix, so daemons of parallel tests never share `berth0` or the `BERTH` chains.
///
/// Pass [`DaemonNet::args`] to `berth daemon`; dropping the value (after the daemon has
/// stopped) deletes the bridge, any `extra_bridges` and every rule and chain carrying the
/// prefix.
pub struct DaemonNet {
    /// The default bridge device (at most 15 characters).
    pub bridge: String,
    /// The default bridge's subnet, a /24 in 10.160.0.0–10.199.255.0 no host route uses.
    pub subnet: String,
    /// The iptables chain prefix.
    pub prefix: String,
    /// More bridges to delete on drop (user-defined networks of the daemon).
    pub extra_bridges: Vec<String>,
}

fn rand_u32() -> u32 {
    use std::io::Read;
    let mut b = [0u8; 4];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u32::from_le_bytes(b)
}

impl DaemonNet {
    /// Picks a unique bridge name and chain prefix (`tag` + 8 hex digits; `tag` at most 5
    /// characters) and a free subnet.
    pub fn new(tag: &str) -> DaemonNet {
        let hex = format!("{:08x}", rand_u32());
        DaemonNet {
            bridge: format!("{tag}{hex}"),
            subnet: free_subnet(),
            prefix: format!("{}{}", tag.to_uppercase(), hex.to_uppercase()),
            extra_bridges: Vec::new(),
        }
    }

    /// The `berth daemon` flags: `--bridge`, `--bip`, `--iptables-chain-prefix`.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--bridge".into(),
            self.bridge.clone(),
            "--bip".into(),
            self.subnet.clone(),
            "--iptables-chain-prefix".into(),
            self.prefix.clone(),
        ]
    }
}

impl Drop for DaemonNet {
    fn drop(&mut self) {
        for b in std::iter::once(&self.bridge).chain(&self.extra_bridges) {
            let _ = Command::new("ip").args(["link", "del", b]).output();
        }
        remove_chains(&self.prefix);
    }
}

/// A /24 in 10.160.0.0–10.199.255.0 that no host route overlaps.
pub fn free_subnet() -> String {
    let routes = Command::new("ip")
        .args(["-4", "route"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    loop {
        let r = rand_u32();
        let pre = format!("10.{}.{}.", 160 + (r % 40), (r >> 8) % 256);
        if !routes.contains(&pre) {
            return format!("{pre}0/24");
        }
    }
}

/// Removes every iptables rule and chain (filter and nat tables) whose chain name starts
/// with `prefix`, and the jumps to them from other chains.
pub fn remove_chains(prefix: &str) {
    for table in ["filter", "nat"] {
        let saved = Command::new("iptables-save")
            .args(["-t", table])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let ours = |c: &str| c.starts_with(prefix);
        for rule in saved.lines().filter_map(|l| l.strip_prefix("-A ")) {
            let chain = rule.split_whitespace().next().unwrap_or("");
            if !ours(chain) && rule.contains(prefix) {
                let args: Vec<&str> = rule.split_whitespace().collect();
                let _ = Command::new("iptables")
                    .args(["-t", table, "-D"])
                    .args(&args)
                    .output();
            }
        }
        let chains: Vec<&str> = saved
            .lines()
            .filter_map(|l| l.strip_prefix(':'))
            .filter_map(|c| c.split_whitespace().next())
            .filter(|c| ours(c))
            .collect();
        for flag in ["-F", "-X"] {
            for ch in &chains {
                let _ = Command::new("iptables")
                    .args(["-t", table, flag, ch])
                    .output();
            }
        }
    }
}

/// Busy-looping threads that keep the CPUs loaded while they live, so that races between
/// processes show up in tests (the scheduler interleaves them more). Stopped on drop, also
/// when the test panics.
pub struct CpuLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    /// Starts `n` spinning threads.
    pub fn start(n: usize) -> CpuLoad {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A tiny self-deleting temporary directory, so this crate needs no `tempfile` at runtime.
mod tempfile_lite {
    use std::io;
    use std::path::{Path, PathBuf};

    /// A directory under the system temp dir removed (recursively) on drop.
    pub struct TempDir(PathBuf);

    impl TempDir {
        /// Creates `/tmp/<prefix>-<pid>-<n>-<nanos>`.
        pub fn new(prefix: &str) -> io::Result<TempDir> {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!("{}-{nanos}", super::unique_name(prefix)));
            std::fs::create_dir_all(&p)?;
            Ok(TempDir(p))
        }

        /// The directory.
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_has_shell_and_applets() {
        let d = tempfile_lite::TempDir::new("testutil").unwrap();
        busybox_rootfs(d.path()).unwrap();
        assert!(d.path().join("bin/busybox").is_file());
        assert_eq!(
            fs::read_link(d.path().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(d.path().join("bin/httpd").symlink_metadata().is_ok());
        // Idempotent: building again over an existing copy works.
        busybox_rootfs(d.path()).unwrap();
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("x"), unique_name("x"));
    }
}
