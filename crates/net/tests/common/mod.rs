//! Helpers of the kernel tests: fake containers (named network namespaces) and a manager
//! with unique bridge names, subnets and chain prefix, all removed on drop.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};

use ipnet::Ipv4Net;
use net::{ManagerOptions, NetworkManager};

/// Whether the tests can touch the kernel (root, ip, iptables).
pub fn can_run() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = [
        "ip",
        "iptables-restore",
        "iptables-save",
        "nsenter",
        "busybox",
    ]
    .iter()
    .all(|t| {
        Command::new("which")
            .arg(t)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if !root || !tools {
        eprintln!("skipping: needs root and ip, iptables, nsenter, busybox");
    }
    root && tools
}

/// A random lowercase hex string of `n` characters.
pub fn hex(n: usize) -> String {
    use rand::Rng;
    let mut r = rand::rng();
    (0..n)
        .map(|_| format!("{:x}", r.random_range(0..16u8)))
        .collect()
}

/// Runs a command, returning its output (never fails on exit status).
pub fn sh(prog: &str, args: &[&str]) -> Output {
    Command::new(prog).args(args).output().expect("spawn")
}

/// A subnet `10.<a>.<b>.0/24` unique to this test process: `a` from the caller, `b` from
/// the process id so that parallel runs of the same test binary differ too.
pub fn subnet(a: u8, k: u8) -> Ipv4Net {
    let b = ((std::process::id() as u8) & 0x3F)
        .wrapping_mul(4)
        .wrapping_add(k);
    Ipv4Net::new(Ipv4Addr::new(10, a, b, 0), 24).unwrap()
}

/// A network namespace standing in for a container; deleted on drop.
pub struct Netns {
    pub name: String,
    pub children: Vec<std::process::Child>,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!("bnt-{}", hex(10));
        let out = sh("ip", &["netns", "add", &name]);
        assert!(out.status.success(), "ip netns add: {out:?}");
        Netns {
            name,
            children: Vec::new(),
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        sh("ip", &a)
    }

    /// Starts a long-running command inside the namespace (killed on drop).
    pub fn spawn(&mut self, args: &[&str]) {
        let mut a = vec!["netns", "exec", &self.name];
        a.extend_from_slice(args);
        let c = Command::new("ip").args(&a).spawn().expect("spawn");
        self.children.push(c);
    }

    pub fn ping(&self, ip: Ipv4Addr) -> bool {
        self.exec(&["busybox", "ping", "-c", "1", "-W", "1", &ip.to_string()])
            .status
            .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}

/// A manager in a temporary directory with unique names; torn down on drop.
pub struct TestManager {
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub default_bridge: String,
    pub mgr: Option<NetworkManager>,
    pub extra_bridges: Vec<String>,
}

impl TestManager {
    pub fn options(default_subnet: Ipv4Net) -> ManagerOptions {
        ManagerOptions {
            default_bridge: format!("bt{}", hex(8)),
            default_subnet: Some(default_subnet),
            chain_prefix: format!("BT{}", hex(6).to_uppercase()),
            address_pools: vec![],
            dns_upstreams: Some(vec![]),
            ..ManagerOptions::default()
        }
    }

    pub fn new(default_subnet: Ipv4Net) -> TestManager {
        Self::with(Self::options(default_subnet))
    }

    pub fn with(opts: ManagerOptions) -> TestManager {
        let dir = tempfile::tempdir().unwrap();
        let prefix = opts.chain_prefix.clone();
        let default_bridge = opts.default_bridge.clone();
        let mut tm = TestManager {
            dir,
            prefix,
            default_bridge,
            mgr: None,
            extra_bridges: Vec::new(),
        };
        tm.reopen(opts);
        tm
    }

    pub fn reopen(&mut self, opts: ManagerOptions) {
        self.mgr = None;
        let m = NetworkManager::open(
            &self.dir.path().join("state"),
            &self.dir.path().join("run"),
            opts,
        )
        .expect("open manager");
        self.mgr = Some(m);
    }

    pub fn m(&self) -> &NetworkManager {
        self.mgr.as_ref().unwrap()
    }

    /// Lines of `iptables-save` (both tables) that mention our prefix.
    pub fn our_rules(&self) -> Vec<String> {
        let mut v = Vec::new();
        for t in ["filter", "nat"] {
            let out = sh("iptables-save", &["-t", t]);
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if l.contains(&self.prefix) {
                    v.push(l.to_string());
                }
            }
        }
        v
    }
}

impl Drop for TestManager {
    fn drop(&mut self) {
        let mut bridges = vec![self.default_bridge.clone()];
        bridges.extend(self.extra_bridges.iter().cloned());
        if let Some(m) = self.mgr.take() {
            for n in m.list() {
                if let Some(b) = n.bridge {
                    bridges.push(b);
                }
            }
            let _ = m.teardown();
        }
        // Fallback when teardown could not run or failed half-way.
        for b in bridges {
            if std::path::Path::new("/sys/class/net").join(&b).exists() {
                let _ = sh("ip", &["link", "del", &b]);
            }
        }
        for (table, jumps) in [
            ("filter", vec!["FORWARD"]),
            ("nat", vec!["PREROUTING", "OUTPUT", "POSTROUTING"]),
        ] {
            let out = sh("iptables-save", &["-t", table]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            for l in text.lines() {
                for j in &jumps {
                    if l.starts_with(&format!("-A {j} "))
                        && l.contains(&format!("-j {}", self.prefix))
                    {
                        let spec: Vec<&str> = l.split_whitespace().skip(2).collect();
                        let mut args = vec!["-w", "-t", table, "-D", j];
                        args.extend(spec);
                        let _ = sh("iptables", &args);
                    }
                }
            }
            let chains: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix(':'))
                .filter_map(|l| l.split_whitespace().next())
                .filter(|c| c.starts_with(&self.prefix))
                .collect();
            for ch in &chains {
                let _ = sh("iptables", &["-w", "-t", table, "-F", ch]);
            }
            for ch in &chains {
                let _ = sh("iptables", &["-w", "-t", table, "-X", ch]);
            }
        }
    }
}
