//! Content of the per-container `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Resolver settings read from a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines.
    pub nameservers: Vec<IpAddr>,
    /// `search` domains.
    pub search: Vec<String>,
    /// `options` values.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Parses resolv.conf text (unknown lines are ignored).
    pub fn parse(text: &str) -> Self {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.split('%').next()?.parse().ok()) {
                        rc.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => {
                    rc.search = words.map(str::to_string).collect();
                }
                Some("options") => rc.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        rc
    }

    /// The host's nameservers without loopback ones (unreachable from a container), or
    /// Google's public resolvers when none is left (what Docker does).
    pub fn container_nameservers(&self) -> Vec<IpAddr> {
        let ns: Vec<IpAddr> = self
            .nameservers
            .iter()
            .copied()
            .filter(|ip| !ip.is_loopback())
            .collect();
        if ns.is_empty() {
            vec![
                IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)),
                IpAddr::V4(Ipv4Addr::new(8, 8, 4, 4)),
            ]
        } else {
            ns
        }
    }

    /// The nameservers as UDP port-53 addresses (upstreams of the embedded DNS server).
    pub fn upstreams(&self) -> Vec<SocketAddr> {
        self.nameservers
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect()
    }

    /// Renders resolv.conf text with the given nameservers and our search/options.
    pub fn render(&self, nameservers: &[IpAddr]) -> String {
        let mut out = String::new();
        for ns in nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// Renders an /etc/hosts: localhost lines, then `ip names...` for each entry.
pub fn render_hosts(entries: &[(IpAddr, Vec<String>)]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (ip, names) in entries {
        if !names.is_empty() {
            out.push_str(&format!("{ip}\t{}\n", names.join(" ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_loopback_and_falls_back() {
        let rc =
            ResolvConf::parse("# x\nnameserver 127.0.0.53\nsearch a.example b\noptions edns0\n");
        assert_eq!(
            rc.container_nameservers(),
            vec![
                "8.8.8.8".parse::<IpAddr>().unwrap(),
                "8.8.4.4".parse().unwrap()
            ]
        );
        let text = rc.render(&["10.0.0.1".parse().unwrap()]);
        assert_eq!(
            text,
            "nameserver 10.0.0.1\nsearch a.example b\noptions edns0\n"
        );
        let rc2 = ResolvConf::parse("nameserver 10.255.255.53\nnameserver ::1\n");
        assert_eq!(
            rc2.container_nameservers(),
            vec!["10.255.255.53".parse::<IpAddr>().unwrap()]
        );
        let hosts = render_hosts(&[(
            "10.0.0.2".parse().unwrap(),
            vec!["abc".into(), "web".into()],
        )]);
        assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(hosts.ends_with("10.0.0.2\tabc web\n"));
    }
}
