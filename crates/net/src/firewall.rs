//! Firewall rules (iptables, IPv4), all inside chains of our own.
//!
//! Chains, named after a configurable prefix `P` (default `BERTH`) so that several
//! managers (parallel tests, a second daemon) never touch each other's rules:
//!
//! | table | chain | jumped to from | holds |
//! |---|---|---|---|
//! | filter | `P-FORWARD` | `FORWARD` (first rule) | per bridge: accept established, intra-bridge, outbound; drop other inbound |
//! | filter | `P-ISOLATION` / `P-ISOLATION-2` | `P-FORWARD` | drop traffic from one of our bridges to another; internal networks: drop in/out |
//! | filter | `P-PORTS` | `P-FORWARD` | accept forwarded traffic to published container ports |
//! | nat | `P` | `PREROUTING`, `OUTPUT` (`--dst-type LOCAL`) | DNAT of published host ports |
//! | nat | `P-POSTROUTING` | `POSTROUTING` | outbound MASQUERADE, loopback-sourced and hairpin MASQUERADE |
//!
//! The whole content of our chains is re-rendered from the manager's state on every change
//! and loaded with one `iptables-restore --noflush` (one atomic transaction; declaring a
//! chain flushes only that chain). Host rules and other tools' chains (docker's) are never
//! flushed or reordered; we only insert our jumps once, at the top of the built-in chains.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::cmd::run;
use crate::error::Result;
use crate::Proto;

/// A bridge network as the firewall sees it.
#[derive(Debug, Clone)]
pub(crate) struct FwNetwork {
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub internal: bool,
}

/// A published port as the firewall sees it.
#[derive(Debug, Clone)]
pub(crate) struct FwPort {
    pub bridge: String,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub proto: Proto,
}

struct Chains {
    forward: String,
    isolation: String,
    isolation2: String,
    ports: String,
    nat: String,
    postrouting: String,
}

fn chains(prefix: &str) -> Chains {
    Chains {
        forward: format!("{prefix}-FORWARD"),
        isolation: format!("{prefix}-ISOLATION"),
        isolation2: format!("{prefix}-ISOLATION-2"),
        ports: format!("{prefix}-PORTS"),
        nat: prefix.to_string(),
        postrouting: format!("{prefix}-POSTROUTING"),
    }
}

/// The jump rules from built-in chains, as (table, chain, rule-spec after `-A CHAIN`).
fn jumps(prefix: &str) -> Vec<(&'static str, &'static str, String)> {
    let c = chains(prefix);
    vec![
        ("filter", "FORWARD", format!("-j {}", c.forward)),
        (
            "nat",
            "PREROUTING",
            format!("-m addrtype --dst-type LOCAL -j {}", c.nat),
        ),
        (
            "nat",
            "OUTPUT",
            format!("-m addrtype --dst-type LOCAL -j {}", c.nat),
        ),
        ("nat", "POSTROUTING", format!("-j {}", c.postrouting)),
    ]
}

/// Checks that a chain prefix is usable (letters, digits, `-`, `_`; at most 16 characters
/// so that `P-ISOLATION-2` fits iptables' 28-character limit).
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 16
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Renders the `iptables-restore` input for our chains; `add_jumps` lists jumps to insert.
pub(crate) fn render(
    prefix: &str,
    networks: &[FwNetwork],
    ports: &[FwPort],
    add_jumps: &[(&str, &str, String)],
) -> String {
    let c = chains(prefix);
    let mut f = String::new();
    let _ = writeln!(f, "*filter");
    for ch in [&c.forward, &c.isolation, &c.isolation2, &c.ports] {
        let _ = writeln!(f, ":{ch} - [0:0]");
    }
    let _ = writeln!(f, "-A {} -j {}", c.forward, c.isolation);
    let _ = writeln!(f, "-A {} -j {}", c.forward, c.ports);
    for n in networks {
        let b = &n.bridge;
        if n.internal {
            let _ = writeln!(f, "-A {} -i {b} ! -o {b} -j DROP", c.isolation);
            let _ = writeln!(f, "-A {} -o {b} ! -i {b} -j DROP", c.isolation);
        } else {
            let _ = writeln!(f, "-A {} -i {b} ! -o {b} -j {}", c.isolation, c.isolation2);
            let _ = writeln!(f, "-A {} -o {b} -j DROP", c.isolation2);
        }
        let _ = writeln!(
            f,
            "-A {} -o {b} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            c.forward
        );
        let _ = writeln!(f, "-A {} -i {b} -o {b} -j ACCEPT", c.forward);
        if !n.internal {
            let _ = writeln!(f, "-A {} -i {b} ! -o {b} -j ACCEPT", c.forward);
        }
        let _ = writeln!(f, "-A {} -o {b} -j DROP", c.forward);
    }
    for p in ports {
        let _ = writeln!(f, "-A {}", port_rules(&c, p).0);
    }
    for (table, chain, spec) in add_jumps {
        if *table == "filter" {
            let _ = writeln!(f, "-I {chain} 1 {spec}");
        }
    }
    let _ = writeln!(f, "COMMIT");
    let _ = writeln!(f, "*nat");
    for ch in [&c.nat, &c.postrouting] {
        let _ = writeln!(f, ":{ch} - [0:0]");
    }
    for p in ports {
        let (_, dnat, masq) = port_rules(&c, p);
        let _ = writeln!(f, "-A {dnat}");
        let _ = writeln!(f, "-A {masq}");
    }
    for n in networks {
        let b = &n.bridge;
        if !n.internal {
            let _ = writeln!(
                f,
                "-A {} -s {} ! -o {b} -j MASQUERADE",
                c.postrouting, n.subnet
            );
        }
        let _ = writeln!(
            f,
            "-A {} -s 127.0.0.0/8 -o {b} -j MASQUERADE",
            c.postrouting
        );
    }
    for (table, chain, spec) in add_jumps {
        if *table == "nat" {
            let _ = writeln!(f, "-I {chain} 1 {spec}");
        }
    }
    let _ = writeln!(f, "COMMIT");
    f
}

/// The rules of one published port: (filter accept, nat DNAT, nat hairpin MASQUERADE),
/// each as `CHAIN rule-spec`.
fn port_rules(c: &Chains, p: &FwPort) -> (String, String, String) {
    let pr = p.proto.as_str();
    let (ip, cp, b) = (p.container_ip, p.container_port, &p.bridge);
    let dst = p.host_ip.map(|h| format!("-d {h}/32 ")).unwrap_or_default();
    (
        format!(
            "{} -d {ip}/32 ! -i {b} -o {b} -p {pr} -m {pr} --dport {cp} -j ACCEPT",
            c.ports
        ),
        format!(
            "{} {dst}-p {pr} -m {pr} --dport {hp} -j DNAT --to-destination {ip}:{cp}",
            c.nat,
            hp = p.host_port
        ),
        format!(
            "{} -s {ip}/32 -d {ip}/32 -p {pr} -m {pr} --dport {cp} -j MASQUERADE",
            c.postrouting
        ),
    )
}

/// Adds (`add`) or deletes the rules of `ports` without touching any other rule. This is
/// the fast path of publishing: appending rules commits much faster than re-loading whole
/// chains on nft-backed iptables. Fails if a rule to delete is missing (callers then fall
/// back to [`apply`]).
pub(crate) fn change_ports(prefix: &str, ports: &[FwPort], add: bool) -> Result<()> {
    if ports.is_empty() {
        return Ok(());
    }
    let c = chains(prefix);
    let op = if add { "-A" } else { "-D" };
    let mut f = String::from("*filter\n");
    let rules: Vec<_> = ports.iter().map(|p| port_rules(&c, p)).collect();
    for (accept, _, _) in &rules {
        let _ = writeln!(f, "{op} {accept}");
    }
    f.push_str("COMMIT\n*nat\n");
    for (_, dnat, masq) in &rules {
        let _ = writeln!(f, "{op} {dnat}");
        let _ = writeln!(f, "{op} {masq}");
    }
    f.push_str("COMMIT\n");
    restore(&f)
}

fn restore(input: &str) -> Result<()> {
    run("iptables-restore", &["-w", "--noflush"], Some(input)).map(|_| ())
}

fn saved(table: &str) -> Result<String> {
    run("iptables-save", &["-t", table], None)
}

/// The jumps that are not installed yet.
fn missing_jumps(prefix: &str) -> Result<Vec<(&'static str, &'static str, String)>> {
    let filter = saved("filter")?;
    let nat = saved("nat")?;
    Ok(jumps(prefix)
        .into_iter()
        .filter(|(table, chain, spec)| {
            let text = if *table == "filter" { &filter } else { &nat };
            let line = format!("-A {chain} {spec}");
            !text.lines().any(|l| l.trim() == line)
        })
        .collect())
}

/// Loads our chains (and inserts missing jumps when `ensure_jumps`) from the model.
pub(crate) fn apply(
    prefix: &str,
    networks: &[FwNetwork],
    ports: &[FwPort],
    ensure_jumps: bool,
) -> Result<()> {
    let add = if ensure_jumps {
        missing_jumps(prefix)?
    } else {
        Vec::new()
    };
    restore(&render(prefix, networks, ports, &add))
}

/// Removes our jumps and chains entirely.
pub(crate) fn remove_all(prefix: &str) -> Result<()> {
    let c = chains(prefix);
    let filter = saved("filter")?;
    let nat = saved("nat")?;
    let mut f = String::from("*filter\n");
    for (table, chain, spec) in jumps(prefix) {
        let text = if table == "filter" { &filter } else { &nat };
        let line = format!("-A {chain} {spec}");
        if table == "filter" && text.lines().any(|l| l.trim() == line) {
            let _ = writeln!(f, "-D {chain} {spec}");
        }
    }
    let has = |text: &str, ch: &str| {
        text.lines()
            .any(|l| l == format!(":{ch} - [0:0]") || l.starts_with(&format!(":{ch} ")))
    };
    let fch = [&c.forward, &c.isolation, &c.isolation2, &c.ports];
    for ch in fch {
        if has(&filter, ch) {
            let _ = writeln!(f, "-F {ch}");
        }
    }
    for ch in fch {
        if has(&filter, ch) {
            let _ = writeln!(f, "-X {ch}");
        }
    }
    f.push_str("COMMIT\n*nat\n");
    for (table, chain, spec) in jumps(prefix) {
        let line = format!("-A {chain} {spec}");
        if table == "nat" && nat.lines().any(|l| l.trim() == line) {
            let _ = writeln!(f, "-D {chain} {spec}");
        }
    }
    let nch = [&c.nat, &c.postrouting];
    for ch in nch {
        if has(&nat, ch) {
            let _ = writeln!(f, "-F {ch}");
        }
    }
    for ch in nch {
        if has(&nat, ch) {
            let _ = writeln!(f, "-X {ch}");
        }
    }
    f.push_str("COMMIT\n");
    restore(&f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_our_chains_only() {
        let nets = vec![
            FwNetwork {
                bridge: "br-a".into(),
                subnet: "10.1.0.0/24".parse().unwrap(),
                internal: false,
            },
            FwNetwork {
                bridge: "br-i".into(),
                subnet: "10.2.0.0/24".parse().unwrap(),
                internal: true,
            },
        ];
        let ports = vec![FwPort {
            bridge: "br-a".into(),
            container_ip: Ipv4Addr::new(10, 1, 0, 2),
            container_port: 80,
            host_ip: None,
            host_port: 8080,
            proto: Proto::Tcp,
        }];
        let text = render("TST", &nets, &ports, &jumps("TST"));
        // Every appended rule goes to one of our chains.
        for l in text.lines().filter(|l| l.starts_with("-A ")) {
            assert!(l.starts_with("-A TST"), "{l}");
        }
        assert!(text.contains("-I FORWARD 1 -j TST-FORWARD"));
        assert!(
            text.contains("-A TST -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.1.0.2:80")
        );
        assert!(text.contains("-A TST-POSTROUTING -s 10.1.0.0/24 ! -o br-a -j MASQUERADE"));
        // Internal network: no outbound NAT, isolation drops.
        assert!(!text.contains("-s 10.2.0.0/24 ! -o br-i -j MASQUERADE"));
        assert!(text.contains("-A TST-ISOLATION -i br-i ! -o br-i -j DROP"));
        assert!(valid_prefix("BERTH-T1"));
        assert!(!valid_prefix("BAD PREFIX"));
    }
}
