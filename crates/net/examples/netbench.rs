//! Benchmark of the network manager (run by `bench/net/run.sh`; needs root).
//!
//! 1. Latency: time of `connect` + `publish_ports` (one port), and of `unpublish_ports` +
//!    `disconnect`, for fresh network namespaces standing in for containers.
//! 2. Throughput: a TCP sink inside a namespace; bytes pushed through the published port
//!    on 127.0.0.1 versus straight to the container address.
//!
//! Usage: `netbench [ITERATIONS] [MEGABYTES]`; `netbench sink PORT` is the sink itself.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use net::{ContainerNet, ManagerOptions, NetworkManager, PortMapping, Proto};

fn sink(port: u16) {
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind sink");
    for c in l.incoming() {
        let Ok(mut c) = c else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut total: u64 = 0;
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = c.write_all(&total.to_be_bytes());
        });
    }
}

fn push(addr: SocketAddr, megabytes: usize) -> f64 {
    let mut s = None;
    for _ in 0..100 {
        if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            s = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut s = s.expect("connect to sink");
    let buf = vec![7u8; 1 << 20];
    let t = Instant::now();
    for _ in 0..megabytes {
        s.write_all(&buf).expect("write");
    }
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut total = [0u8; 8];
    s.read_exact(&mut total).expect("read total");
    assert_eq!(u64::from_be_bytes(total), (megabytes as u64) << 20);
    let secs = t.elapsed().as_secs_f64();
    (megabytes as f64) / secs
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("spawn");
    assert!(st.success(), "{args:?}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("sink") {
        sink(args[2].parse().expect("port"));
        return;
    }
    let iterations: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let megabytes: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2048);
    let tag = format!("{:05x}", std::process::id() & 0xFFFFF);
    let mut failed = false;
    for (k, (label, base)) in [
        ("state on disk (/var/tmp)", "/var/tmp"),
        ("state on tmpfs (/dev/shm)", "/dev/shm"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = tempfile::tempdir_in(base).expect("tempdir");
        let tag = format!("{tag}{k}");
        let opts = ManagerOptions {
            default_bridge: format!("bb{tag}"),
            default_subnet: Some(format!("10.250.{k}.0/24").parse().expect("subnet")),
            chain_prefix: format!("BB{tag}").to_uppercase(),
            address_pools: vec![],
            dns_upstreams: Some(vec![]),
            ..ManagerOptions::default()
        };
        let m =
            NetworkManager::open(&dir.path().join("s"), &dir.path().join("r"), opts).expect("open");
        println!("== {label}");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            latency(&m, &tag, iterations);
            if k == 0 {
                throughput(&m, &tag, megabytes);
            }
        }));
        let _ = m.teardown();
        failed |= result.is_err();
    }
    if failed {
        std::process::exit(1);
    }
}

fn one_port(port: u16) -> Vec<PortMapping> {
    vec![PortMapping {
        host_ip: None,
        host_port: None,
        container_port: port,
        proto: Proto::Tcp,
    }]
}

fn latency(m: &NetworkManager, tag: &str, iterations: usize) {
    let (mut up1, mut up2, mut down, mut netns_add) = (vec![], vec![], vec![], vec![]);
    for i in 0..iterations {
        let ns = format!("bb{tag}-{i}");
        let t = Instant::now();
        sh(&["ip", "netns", "add", &ns]);
        netns_add.push(t.elapsed().as_secs_f64() * 1e3);
        let cid = format!("{:064x}", i + 1);
        let req = ContainerNet {
            container_id: cid.clone(),
            container_name: format!("c{i}"),
            netns_path: format!("/var/run/netns/{ns}").into(),
            network: "bridge".into(),
            ..Default::default()
        };
        // Alternate: connect with ports in one call, or connect then publish_ports.
        let t = Instant::now();
        if i % 2 == 0 {
            m.connect(ContainerNet {
                ports: one_port(80),
                ..req
            })
            .expect("connect");
            up1.push(t.elapsed().as_secs_f64() * 1e3);
        } else {
            let ep = m.connect(req).expect("connect");
            m.publish_ports(&cid, ep.ip, &one_port(80))
                .expect("publish");
            up2.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        m.disconnect(&cid, "bridge").expect("disconnect");
        down.push(t.elapsed().as_secs_f64() * 1e3);
        sh(&["ip", "netns", "del", &ns]);
    }
    println!(
        "latency (ms, median/p90): connect{{ports}} {:.2}/{:.2} | connect+publish_ports {:.2}/{:.2} | disconnect {:.2}/{:.2} | reference: ip netns add {:.2}",
        pct(&mut up1, 0.5),
        pct(&mut up1, 0.9),
        pct(&mut up2, 0.5),
        pct(&mut up2, 0.9),
        pct(&mut down, 0.5),
        pct(&mut down, 0.9),
        pct(&mut netns_add, 0.5),
    );
}

fn throughput(m: &NetworkManager, tag: &str, megabytes: usize) {
    // Throughput.
    let ns = format!("bb{tag}-tp");
    sh(&["ip", "netns", "add", &ns]);
    let cid = format!("{:064x}", 999_999);
    let ep = m
        .connect(ContainerNet {
            container_id: cid.clone(),
            container_name: "sink".into(),
            netns_path: format!("/var/run/netns/{ns}").into(),
            network: "bridge".into(),
            ..Default::default()
        })
        .expect("connect");
    let hp = m
        .publish_ports(
            &cid,
            ep.ip,
            &[PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 5001,
                proto: Proto::Tcp,
            }],
        )
        .expect("publish")[0]
        .host_port
        .expect("port");
    let exe = std::env::current_exe().expect("exe");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(&exe)
        .args(["sink", "5001"])
        .spawn()
        .expect("sink");
    let direct = SocketAddr::from((ep.ip, 5001));
    let published = SocketAddr::from((Ipv4Addr::LOCALHOST, hp));
    // Warm up, then alternate.
    push(direct, 64);
    let (mut d, mut p) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        d.push(push(direct, megabytes));
        p.push(push(published, megabytes));
    }
    let (dm, pm) = (pct(&mut d, 0.5), pct(&mut p, 0.5));
    println!(
        "throughput ({megabytes} MiB per run, median of 3): direct {dm:.0} MiB/s | published 127.0.0.1:{hp} {pm:.0} MiB/s | ratio {:.1}%",
        pm / dm * 100.0
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = m.disconnect(&cid, "bridge");
    sh(&["ip", "netns", "del", &ns]);
}
