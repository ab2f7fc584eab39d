//! Kernel tests of the network manager: real bridges, veths, iptables and network
//! namespaces standing in for containers. Traffic only flows between the host and
//! namespaces these tests create, or over loopback.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::{hex, sh, subnet, Netns, TestManager};
use errkind::{ErrorKind, HasKind};
use net::{ContainerNet, NetworkSpec, PortMapping, Proto};

fn cid() -> String {
    format!("{}{}", hex(32), hex(32))
}

fn conn(c: &str, name: &str, ns: &Netns, network: &str) -> ContainerNet {
    ContainerNet {
        container_id: c.to_string(),
        container_name: name.to_string(),
        netns_path: ns.path(),
        network: network.to_string(),
        ..Default::default()
    }
}

fn user_net(tm: &TestManager, name: &str, sub: ipnet::Ipv4Net) -> net::Network {
    tm.m()
        .create_network(NetworkSpec {
            name: name.to_string(),
            subnet: Some(sub),
            ..Default::default()
        })
        .expect("create network")
}

fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn wait_http(addr: SocketAddr) -> String {
    for _ in 0..50 {
        if let Ok(body) = http_get(addr) {
            if body.contains("200") {
                return body;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no http answer from {addr}");
}

/// The host's first global IPv4 address that is not on one of our bridges.
fn host_addr() -> Option<Ipv4Addr> {
    let out = sh("ip", &["-4", "-o", "addr", "show", "scope", "global"]);
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 4 || f[1].starts_with("bt") || f[1].starts_with("br-") {
            return None;
        }
        f[3].split('/').next()?.parse().ok()
    })
}

#[test]
fn two_containers_on_a_user_network_ping_each_other() {
    if !common::can_run() {
        return;
    }
    let tm = TestManager::new(subnet(201, 0));
    let n = user_net(&tm, &format!("n{}", hex(6)), subnet(201, 1));
    let (a, b) = (Netns::new(), Netns::new());
    let (ca, cb) = (cid(), cid());
    let ea = tm.m().connect(conn(&ca, "alpha", &a, &n.name)).unwrap();
    let eb = tm.m().connect(conn(&cb, "beta", &b, &n.id[..10])).unwrap();
    assert_eq!(ea.gateway, n.gateway.unwrap());
    assert_eq!(ea.ifname, "eth0");
    assert_ne!(ea.ip, eb.ip);
    assert!(n.subnet.unwrap().contains(&ea.ip));
    // Default route via the gateway, address and mac on eth0, lo up.
    let routes = String::from_utf8_lossy(&a.exec(&["ip", "-4", "route"]).stdout).to_string();
    assert!(
        routes.contains(&format!("default via {} dev eth0", ea.gateway)),
        "{routes}"
    );
    let link = String::from_utf8_lossy(&a.exec(&["ip", "addr", "show", "eth0"]).stdout).to_string();
    assert!(link.contains(&format!("{}/24", ea.ip)), "{link}");
    assert!(link.contains(&ea.mac), "{link}");
    assert!(a.ping(eb.ip), "alpha cannot ping beta");
    assert!(b.ping(ea.ip), "beta cannot ping alpha");
    assert!(a.ping(ea.gateway), "alpha cannot ping its gateway");
    // Double connect is a conflict.
    let err = tm.m().connect(conn(&ca, "alpha", &a, &n.name)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    // The network lists its endpoints; disconnect removes veth and address.
    assert_eq!(tm.m().inspect(&n.name).unwrap().endpoints.len(), 2);
    tm.m().disconnect(&cb, &n.name).unwrap();
    assert!(!std::path::Path::new("/sys/class/net")
        .join(&eb.veth_host)
        .exists());
    let out = b.exec(&["ip", "-o", "link"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("eth0"));
    assert!(!a.ping(eb.ip));
    assert_eq!(
        tm.m().disconnect(&cb, &n.name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The network cannot go while alpha is attached.
    assert_eq!(
        tm.m().remove_network(&n.name).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    // Requested address and a second network give eth1 without a second default route.
    let n2 = user_net(&tm, &format!("m{}", hex(6)), subnet(201, 2));
    let want = Ipv4Addr::from(u32::from(n2.subnet.unwrap().network()) + 77);
    let mut c2 = conn(&ca, "alpha", &a, &n2.name);
    c2.ip = Some(want);
    let e2 = tm.m().connect(c2).unwrap();
    assert_eq!(
        (e2.ip, e2.ifname.as_str(), e2.default_route),
        (want, "eth1", false)
    );
    let mut c3 = conn(&cb, "beta", &b, &n2.name);
    c3.ip = Some(want);
    assert_eq!(tm.m().connect(c3).unwrap_err().kind(), ErrorKind::Conflict);
}

#[test]
fn default_bridge_gives_default_route_and_outbound_nat_rule() {
    if !common::can_run() {
        return;
    }
    let sub = subnet(202, 0);
    let tm = TestManager::new(sub);
    let ns = Netns::new();
    let c = cid();
    let ep = tm.m().connect(conn(&c, "x", &ns, "bridge")).unwrap();
    assert_eq!(ep.gateway, Ipv4Addr::from(u32::from(sub.network()) + 1));
    assert!(ns.ping(ep.gateway));
    let routes = String::from_utf8_lossy(&ns.exec(&["ip", "route"]).stdout).to_string();
    assert!(
        routes.contains(&format!("default via {}", ep.gateway)),
        "{routes}"
    );
    let rules = tm.our_rules().join("\n");
    assert!(
        rules.contains(&format!(
            "-s {sub} ! -o {} -j MASQUERADE",
            tm.default_bridge
        )),
        "{rules}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    // The default network's resolv.conf never has loopback resolvers.
    let rc = tm.m().resolv_conf(&c, &[]);
    assert!(rc.contains("nameserver"), "{rc}");
    assert!(!rc.contains("nameserver 127."), "{rc}");
    let hosts = tm.m().hosts_file(&c, "myhost", &[]);
    assert!(hosts.contains(&format!("{}\tmyhost", ep.ip)), "{hosts}");
}

#[test]
fn published_port_reaches_container_from_loopback_host_address_and_itself() {
    if !common::can_run() {
        return;
    }
    let tm = TestManager::new(subnet(203, 0));
    let mut ns = Netns::new();
    let c = cid();
    let ep = tm.m().connect(conn(&c, "web", &ns, "bridge")).unwrap();
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello from berth\n").unwrap();
    let dir = www.path().to_str().unwrap().to_string();
    ns.spawn(&["busybox", "httpd", "-f", "-p", "80", "-h", &dir]);
    // Direct first (waits for httpd to listen).
    wait_http(SocketAddr::new(IpAddr::V4(ep.ip), 80));
    let got = tm
        .m()
        .publish_ports(
            &c,
            ep.ip,
            &[PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 80,
                proto: Proto::Tcp,
            }],
        )
        .unwrap();
    let hp = got[0].host_port.unwrap();
    assert!(hp >= 49153);
    assert_eq!(tm.m().published_ports(&c), got);
    let body = wait_http(SocketAddr::from((Ipv4Addr::LOCALHOST, hp)));
    assert!(body.contains("hello from berth"), "{body}");
    if let Some(h) = host_addr() {
        let body = http_get(SocketAddr::from((h, hp))).unwrap();
        assert!(body.contains("hello from berth"), "{body}");
    }
    // Hairpin: the container reaches itself through the published port on its gateway.
    // (busybox nc: busybox wget crashes on some hosts)
    let script = format!(
        "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {} {hp}",
        ep.gateway
    );
    let out = ns.exec(&["sh", "-c", &script]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello from berth"),
        "hairpin: {out:?}"
    );
    // UDP: a datagram to 127.0.0.1:HOSTPORT arrives in the container.
    // (a receiver thread inside the namespace: busybox nc has no UDP mode)
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let nsfile = std::fs::File::open(ns.path()).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&nsfile, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = UdpSocket::bind("0.0.0.0:5353").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 100];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    ready_rx.recv().unwrap();
    let uhp = tm
        .m()
        .publish_ports(
            &c,
            ep.ip,
            &[PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 5353,
                proto: Proto::Udp,
            }],
        )
        .unwrap()[0]
        .host_port
        .unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.send_to(b"ping-udp", ("127.0.0.1", uhp)).unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("udp datagram not delivered");
    assert_eq!(got, b"ping-udp");
    // The host port is held: nobody else can bind it.
    assert!(TcpListener::bind(("0.0.0.0", hp)).is_err());
    tm.m().unpublish_ports(&c).unwrap();
    let err = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, hp)),
        Duration::from_secs(2),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(!tm
        .our_rules()
        .iter()
        .any(|l| l.contains(&format!("--dport {hp}"))));
    assert!(TcpListener::bind(("0.0.0.0", hp)).is_ok());
}

#[test]
fn port_clash_is_a_conflict() {
    if !common::can_run() {
        return;
    }
    let tm = TestManager::new(subnet(204, 0));
    let (a, b) = (Netns::new(), Netns::new());
    let (ca, cb) = (cid(), cid());
    let ea = tm.m().connect(conn(&ca, "a", &a, "bridge")).unwrap();
    let eb = tm.m().connect(conn(&cb, "b", &b, "bridge")).unwrap();
    // A host process already listens.
    let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let taken = l.local_addr().unwrap().port();
    let pm = |port: u16| PortMapping {
        host_ip: None,
        host_port: Some(port),
        container_port: 80,
        proto: Proto::Tcp,
    };
    let err = tm.m().publish_ports(&ca, ea.ip, &[pm(taken)]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(tm.m().published_ports(&ca).is_empty());
    // Our own allocation clashes too, and a failed batch publishes nothing.
    let got = tm.m().publish_ports(&ca, ea.ip, &[pm(0)]).unwrap();
    let hp = got[0].host_port.unwrap();
    let err = tm
        .m()
        .publish_ports(&cb, eb.ip, &[pm(0), pm(hp)])
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(tm.m().published_ports(&cb).is_empty());
    // Same port number over UDP is fine.
    let udp = PortMapping {
        proto: Proto::Udp,
        ..pm(hp)
    };
    tm.m().publish_ports(&cb, eb.ip, &[udp]).unwrap();
    // Ports given to connect are published in the same step; a clash there fails the
    // whole connect and leaks nothing.
    let c = Netns::new();
    let cc = cid();
    let mut req = conn(&cc, "c", &c, "bridge");
    req.ports = vec![pm(hp)];
    assert_eq!(
        tm.m().connect(req.clone()).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert!(tm.m().endpoints(&cc).is_empty());
    let out = c.exec(&["ip", "-o", "link"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("eth0"));
    req.ports = vec![pm(0)];
    let ec = tm.m().connect(req).unwrap();
    let got = tm.m().published_ports(&cc);
    assert_eq!(got.len(), 1);
    let chp = got[0].host_port.unwrap();
    assert!(tm.our_rules().iter().any(|l| l.contains(&format!(
        "--dport {chp} -j DNAT --to-destination {}:80",
        ec.ip
    ))));
    // Disconnecting releases the container's ports.
    tm.m().disconnect(&ca, "bridge").unwrap();
    assert!(tm.m().published_ports(&ca).is_empty());
    assert!(TcpListener::bind(("0.0.0.0", hp)).is_ok());
}

fn dns_query(server: SocketAddr, name: &str) -> (u16, Vec<Ipv4Addr>) {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let q = net::dns::build_query(0x1234, name, 1);
    s.send_to(&q, server).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0x12, 0x34]);
    net::dns::parse_response(&buf[..n]).unwrap()
}

#[test]
fn embedded_dns_resolves_names_and_aliases_and_forwards_the_rest() {
    if !common::can_run() {
        return;
    }
    // A fake upstream on loopback that answers every query with 10.99.99.99.
    let up = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_addr = up.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = up.recv_from(&mut buf) {
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80;
            r[7] = 1;
            r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 99, 99, 99]);
            let _ = up.send_to(&r, peer);
        }
    });
    let mut opts = TestManager::options(subnet(205, 0));
    opts.dns_upstreams = Some(vec![up_addr]);
    let tm = TestManager::with(opts);
    let n = user_net(&tm, &format!("d{}", hex(6)), subnet(205, 1));
    let (a, b) = (Netns::new(), Netns::new());
    let (ca, cb) = (cid(), cid());
    let ea = tm.m().connect(conn(&ca, "/alpha", &a, &n.name)).unwrap();
    let mut c = conn(&cb, "beta", &b, &n.name);
    c.aliases = vec!["db".into()];
    let eb = tm.m().connect(c).unwrap();
    let server = SocketAddr::new(IpAddr::V4(n.gateway.unwrap()), 53);
    assert_eq!(dns_query(server, "alpha"), (0, vec![ea.ip]));
    assert_eq!(dns_query(server, "BETA."), (0, vec![eb.ip]));
    assert_eq!(dns_query(server, "db"), (0, vec![eb.ip]));
    assert_eq!(dns_query(server, &cb[..12]), (0, vec![eb.ip]));
    // The same over TCP (length-prefixed).
    let mut t = TcpStream::connect_timeout(&server, Duration::from_secs(2)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let q = net::dns::build_query(0x4321, "alpha", 1);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    t.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    t.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; u16::from_be_bytes(len) as usize];
    t.read_exact(&mut resp).unwrap();
    assert_eq!(net::dns::parse_response(&resp), Some((0, vec![ea.ip])));
    assert_eq!(
        dns_query(server, "elsewhere.example"),
        (0, vec![Ipv4Addr::new(10, 99, 99, 99)])
    );
    // From inside a container, with busybox nslookup, against resolv.conf's server.
    let rc = tm.m().resolv_conf(&ca, &[]);
    assert!(
        rc.contains(&format!("nameserver {}", n.gateway.unwrap())),
        "{rc}"
    );
    let out = a.exec(&["busybox", "nslookup", "db", &n.gateway.unwrap().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&eb.ip.to_string()), "{text} {out:?}");
    // Gone after disconnect.
    tm.m().disconnect(&cb, &n.name).unwrap();
    assert_eq!(
        dns_query(server, "db").1,
        vec![Ipv4Addr::new(10, 99, 99, 99)]
    );
}

#[test]
fn dns_without_upstreams_says_nxdomain() {
    if !common::can_run() {
        return;
    }
    let tm = TestManager::new(subnet(206, 0));
    let n = user_net(&tm, &format!("x{}", hex(6)), subnet(206, 1));
    let server = SocketAddr::new(IpAddr::V4(n.gateway.unwrap()), 53);
    assert_eq!(dns_query(server, "nobody"), (3, vec![]));
    // Removing the network stops its server.
    tm.m().remove_network(&n.name).unwrap();
    assert!(!std::path::Path::new("/sys/class/net")
        .join(n.bridge.unwrap())
        .exists());
}

#[test]
fn networks_are_isolated_from_each_other() {
    if !common::can_run() {
        return;
    }
    let tm = TestManager::new(subnet(207, 0));
    let na = user_net(&tm, &format!("a{}", hex(6)), subnet(207, 1));
    let nb = user_net(&tm, &format!("b{}", hex(6)), subnet(207, 2));
    let (a, b, a2) = (Netns::new(), Netns::new(), Netns::new());
    let ea = tm.m().connect(conn(&cid(), "a", &a, &na.name)).unwrap();
    let eb = tm.m().connect(conn(&cid(), "b", &b, &nb.name)).unwrap();
    let ea2 = tm.m().connect(conn(&cid(), "a2", &a2, &na.name)).unwrap();
    assert!(a.ping(ea2.ip));
    assert!(a.ping(ea.gateway));
    assert!(b.ping(eb.gateway));
    assert!(!a.ping(eb.ip), "network a reached network b");
    assert!(!b.ping(ea.ip), "network b reached network a");
}

#[test]
fn overlapping_subnets_are_refused() {
    if !common::can_run() {
        return;
    }
    let tm = TestManager::new(subnet(208, 0));
    let n = user_net(&tm, &format!("o{}", hex(6)), subnet(208, 1));
    let s = n.subnet.unwrap();
    let wider = ipnet::Ipv4Net::new(s.network(), 16).unwrap();
    for sub in [s, wider, subnet(208, 0)] {
        let err = tm
            .m()
            .create_network(NetworkSpec {
                name: format!("p{}", hex(6)),
                subnet: Some(sub),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{sub}: {err}");
    }
    // Same name twice, bad name, bad gateway.
    let err = tm
        .m()
        .create_network(NetworkSpec {
            name: n.name.clone(),
            subnet: Some(subnet(208, 3)),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = tm
        .m()
        .create_network(NetworkSpec {
            name: "-bad name".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    let err = tm
        .m()
        .create_network(NetworkSpec {
            name: format!("g{}", hex(6)),
            subnet: Some(subnet(208, 3)),
            gateway: Some(Ipv4Addr::new(192, 0, 2, 200)),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // Pre-defined networks cannot be removed.
    for p in ["bridge", "host", "none"] {
        assert_eq!(
            tm.m().remove_network(p).unwrap_err().kind(),
            ErrorKind::FailedPrecondition
        );
    }
    assert_eq!(
        tm.m().inspect("nonexistent-net").unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn rules_and_bridges_go_with_their_network_and_teardown() {
    if !common::can_run() {
        return;
    }
    let mut tm = TestManager::new(subnet(209, 0));
    let n = user_net(&tm, &format!("r{}", hex(6)), subnet(209, 1));
    let internal = tm
        .m()
        .create_network(NetworkSpec {
            name: format!("i{}", hex(6)),
            subnet: Some(subnet(209, 2)),
            internal: true,
            ..Default::default()
        })
        .unwrap();
    let br = n.bridge.clone().unwrap();
    let ibr = internal.bridge.clone().unwrap();
    let ns = Netns::new();
    let c = cid();
    let ep = tm.m().connect(conn(&c, "r", &ns, &n.name)).unwrap();
    tm.m()
        .publish_ports(
            &c,
            ep.ip,
            &[PortMapping {
                host_ip: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                host_port: None,
                container_port: 80,
                proto: Proto::Tcp,
            }],
        )
        .unwrap();
    let rules = tm.our_rules().join("\n");
    assert!(rules.contains(&br), "{rules}");
    assert!(
        rules.contains(&format!("-A {} -d 127.0.0.1/32", tm.prefix)),
        "{rules}"
    );
    // Internal: isolation drops, no masquerade for its subnet, no default route.
    assert!(
        rules.contains(&format!("-i {ibr} ! -o {ibr} -j DROP")),
        "{rules}"
    );
    assert!(!rules.contains(&format!("-s {} ! -o {ibr}", internal.subnet.unwrap())));
    let ins = Netns::new();
    let iep = tm
        .m()
        .connect(conn(&cid(), "i", &ins, &internal.name))
        .unwrap();
    assert!(!iep.default_route);
    let routes = String::from_utf8_lossy(&ins.exec(&["ip", "route"]).stdout).to_string();
    assert!(!routes.contains("default"), "{routes}");
    tm.m().disconnect(&c, &n.name).unwrap();
    tm.m().remove_network(&n.name).unwrap();
    let rules = tm.our_rules().join("\n");
    assert!(!rules.contains(&br), "{rules}");
    assert!(!rules.contains("DNAT"), "{rules}");
    assert!(!std::path::Path::new("/sys/class/net").join(&br).exists());
    // Prune removes networks without endpoints only.
    let spare = user_net(&tm, &format!("s{}", hex(6)), subnet(209, 3));
    let pruned = tm.m().prune().unwrap();
    assert_eq!(pruned, vec![spare.name.clone()]);
    assert!(tm.m().inspect(&internal.name).is_ok());
    // Teardown leaves nothing of ours in iptables or the link list.
    let m = tm.mgr.take().unwrap();
    m.teardown().unwrap();
    drop(m);
    assert!(tm.our_rules().is_empty(), "{:?}", tm.our_rules());
    assert!(!std::path::Path::new("/sys/class/net").join(&ibr).exists());
    assert!(!std::path::Path::new("/sys/class/net")
        .join(&tm.default_bridge)
        .exists());
}

#[test]
fn none_network_has_only_loopback() {
    if !common::can_run() {
        return;
    }
    let tm = TestManager::new(subnet(210, 0));
    let ns = Netns::new();
    tm.m().setup_loopback(&ns.path()).unwrap();
    let out = String::from_utf8_lossy(&ns.exec(&["ip", "-o", "link"]).stdout).to_string();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("lo:") && out.contains("UP"), "{out}");
    assert!(ns.ping(Ipv4Addr::LOCALHOST));
    let err = tm.m().connect(conn(&cid(), "n", &ns, "none")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let names: Vec<String> = tm.m().list().into_iter().map(|n| n.name).collect();
    assert_eq!(names, vec!["bridge", "host", "none"]);
}

#[test]
fn state_survives_restart_and_reconcile_releases_dead_containers() {
    if !common::can_run() {
        return;
    }
    let opts = TestManager::options(subnet(211, 0));
    let mut tm = TestManager::with(opts.clone());
    let n = user_net(&tm, &format!("s{}", hex(6)), subnet(211, 1));
    let (a, b) = (Netns::new(), Netns::new());
    let (ca, cb) = (cid(), cid());
    let ea = tm.m().connect(conn(&ca, "a", &a, &n.name)).unwrap();
    let eb = tm.m().connect(conn(&cb, "b", &b, &n.name)).unwrap();
    let hp = tm
        .m()
        .publish_ports(
            &ca,
            ea.ip,
            &[PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 80,
                proto: Proto::Tcp,
            }],
        )
        .unwrap()[0]
        .host_port
        .unwrap();
    // "Reboot": the daemon goes and the bridge with it (veths die with it too).
    tm.mgr = None;
    sh("ip", &["link", "del", n.bridge.as_deref().unwrap()]);
    tm.reopen(opts.clone());
    let back = tm.m().inspect(&n.name).unwrap();
    assert_eq!(back.id, n.id);
    assert_eq!(back.endpoints.len(), 2);
    assert!(std::path::Path::new("/sys/class/net")
        .join(n.bridge.as_deref().unwrap())
        .exists());
    assert!(
        TcpListener::bind(("0.0.0.0", hp)).is_err(),
        "port not re-reserved"
    );
    assert!(tm
        .our_rules()
        .iter()
        .any(|l| l.contains(&format!("--dport {hp}"))));
    // Someone flushed our DNAT chain: reopening renders it again.
    sh("iptables", &["-w", "-t", "nat", "-F", &tm.prefix]);
    assert!(!tm
        .our_rules()
        .iter()
        .any(|l| l.contains(&format!("--dport {hp}"))));
    tm.reopen(opts.clone());
    assert!(tm
        .our_rules()
        .iter()
        .any(|l| l.contains(&format!("--dport {hp}"))));
    // A veth left in the bridge by a crash before it was recorded.
    let stray = format!("vs{}", hex(8));
    let out = sh(
        "ip",
        &[
            "link",
            "add",
            &stray,
            "master",
            n.bridge.as_deref().unwrap(),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{stray}p"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    // b is gone: reconcile releases its address; a keeps everything.
    let rep = tm.m().reconcile(std::slice::from_ref(&ca)).unwrap();
    assert_eq!(rep.stray_links_removed, vec![stray.clone()]);
    assert!(!std::path::Path::new("/sys/class/net").join(&stray).exists());
    assert_eq!(rep.endpoints_released, vec![(cb.clone(), n.name.clone())]);
    assert!(rep.ports_released.is_empty());
    assert_eq!(tm.m().inspect(&n.name).unwrap().endpoints.len(), 1);
    // The released address is free again, a's is not.
    let c = cid();
    let mut req = conn(&c, "c", &b, &n.name);
    req.ip = Some(ea.ip);
    assert_eq!(
        tm.m().connect(req.clone()).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    req.ip = Some(eb.ip);
    assert_eq!(tm.m().connect(req).unwrap().ip, eb.ip);
    let rep = tm.m().reconcile(std::slice::from_ref(&c)).unwrap();
    assert_eq!(rep.ports_released, vec![ca.clone()]);
    assert!(TcpListener::bind(("0.0.0.0", hp)).is_ok());
}

#[test]
fn netns_at_a_path_can_be_connected_and_removed() {
    if !common::can_run() {
        return;
    }
    let tm = TestManager::new(subnet(212, 0));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ns1");
    net::create_netns(&path).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = net::remove_netns(&self.0);
        }
    }
    let _rm = Rm(path.clone());
    assert_eq!(
        net::create_netns(&path).unwrap_err().kind(),
        ErrorKind::Internal
    );
    let c = cid();
    let ep = tm
        .m()
        .connect(ContainerNet {
            container_id: c.clone(),
            container_name: "p".into(),
            netns_path: path.clone(),
            network: "bridge".into(),
            ..Default::default()
        })
        .unwrap();
    let netarg = format!("--net={}", path.display());
    let out = sh(
        "nsenter",
        &[
            &netarg,
            "busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            &ep.gateway.to_string(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = sh("nsenter", &[&netarg, "ip", "-o", "link", "show", "lo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("UP"));
    // Removing the namespace takes the veth pair with it (asynchronously in the kernel).
    net::remove_netns(&path).unwrap();
    assert!(!path.exists());
    let veth = std::path::Path::new("/sys/class/net").join(&ep.veth_host);
    for _ in 0..100 {
        if !veth.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!veth.exists(), "veth survived its namespace");
    // Disconnect still works (and releases the address) when the veth is gone.
    tm.m().disconnect(&c, "bridge").unwrap();
    net::remove_netns(&path).unwrap();
}

/// The nsfs inode of the namespace bind-mounted at `p`.
fn ns_inode(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

fn mounted_under(dir: &std::path::Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&d)))
        .map(str::to_string)
        .collect()
}

#[test]
fn netns_pool_hands_out_fresh_namespaces_and_cleans_up() {
    if !common::can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pool_dir = dir.path().join("pool");
    // A spare left by a previous process is removed when a pool opens.
    std::fs::create_dir_all(&pool_dir).unwrap();
    net::create_netns(&pool_dir.join("spare-stale")).unwrap();
    let pool = net::NetnsPool::open(&pool_dir, 2).unwrap();
    assert!(!pool_dir.join("spare-stale").exists());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pool.ready() < 2 {
        assert!(std::time::Instant::now() < deadline, "pool never filled");
        std::thread::sleep(Duration::from_millis(5));
    }
    let host = ns_inode(std::path::Path::new("/proc/self/ns/net"));
    let mut seen = Vec::new();
    // More than it holds: the rest are made on demand or by the refill.
    for i in 0..5 {
        let p = dir.path().join(format!("ns{i}"));
        pool.take(&p).unwrap();
        let ino = ns_inode(&p);
        assert_ne!(ino, host, "ns{i} is the host's namespace");
        assert!(!seen.contains(&ino), "ns{i} handed out twice");
        seen.push(ino);
        // lo is up and nothing else is there.
        let netarg = format!("--net={}", p.display());
        let out = sh("nsenter", &[&netarg, "ip", "-o", "link"]);
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:") && links.contains("UP"), "{links}");
        // Taking onto an existing path fails and leaves it alone.
        assert!(pool.take(&p).is_err());
        assert_eq!(ns_inode(&p), ino);
    }
    for i in 0..5 {
        net::remove_netns(&dir.path().join(format!("ns{i}"))).unwrap();
    }
    pool.drain();
    assert_eq!(std::fs::read_dir(&pool_dir).unwrap().count(), 0);
    assert!(
        mounted_under(dir.path()).is_empty(),
        "{:?}",
        mounted_under(dir.path())
    );
    // Drained: it makes them on demand.
    let p = dir.path().join("late");
    pool.take(&p).unwrap();
    net::remove_netns(&p).unwrap();
    drop(pool);
    assert!(mounted_under(dir.path()).is_empty());
}
