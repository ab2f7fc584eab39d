//! Pull benchmark: a 5-layer, ~100 MB image from a registry on 127.0.0.1 into a fresh
//! image store, timed; reports seconds and MB/s per run.
//!
//! ```text
//! cargo run --release -p distribution --example pull_bench -- [--layers 5] [--mb 100] [--runs 3]
//! ```
//!
//! Sources, side by side in one run: our registry server (this binary in a second
//! process) and, when
//! installed, Debian's `docker-registry` (distribution 2.8, as a subprocess). As a
//! baseline it also times plain sequential HTTP GETs of the same blobs into /dev/null
//! (what the network path alone costs). Layers are incompressible random bytes, so the
//! figure is transfer + hashing + writing to disk. Docker itself is not available on
//! this machine as an engine, so there is no `docker pull` comparison.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use distribution::client::{ClientConfig, RegistryClient};
use store::image::{media_types, Descriptor};
use store::{ContentStore, Digest, ImageStore, Reference};

struct Args {
    layers: usize,
    mb: u64,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        layers: 5,
        mb: 100,
        runs: 3,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        let n: u64 = v[i + 1].parse().unwrap_or(0);
        match v[i].as_str() {
            "--layers" => a.layers = n.max(1) as usize,
            "--mb" => a.mb = n.max(1),
            "--runs" => a.runs = n.max(1) as usize,
            _ => {}
        }
        i += 2;
    }
    a
}

fn open_store(dir: &Path) -> ImageStore {
    let content = ContentStore::open(dir.join("content")).expect("open content store");
    ImageStore::open(dir.join("images"), content).expect("open image store")
}

/// Random, incompressible bytes (xorshift).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Builds the test image in `images` under `reference`; returns its layer digests.
fn build(images: &ImageStore, reference: &str, args: &Args) -> Vec<Digest> {
    let per_layer = (args.mb * 1024 * 1024) as usize / args.layers;
    let content = images.content();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..args.layers {
        let data = random_bytes(per_layer, 0x9e37_79b9_7f4a_7c15 ^ i as u64);
        let d = content.put_bytes(&data).expect("store layer");
        diff_ids.push(d.to_string());
        layers.push(serde_json::json!({
            "mediaType": media_types::OCI_LAYER, "digest": d.to_string(), "size": data.len(),
        }));
    }
    let p = images.platform().clone();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": p.architecture, "os": p.os,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .expect("encode config");
    let cd = content.put_bytes(&config).expect("store config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::OCI_CONFIG, "digest": cd.to_string(), "size": config.len()},
        "layers": layers,
    }))
    .expect("encode manifest");
    let md = content.put_bytes(&manifest).expect("store manifest");
    let desc = Descriptor::new(media_types::OCI_MANIFEST, md, manifest.len() as u64);
    images
        .set_ref(&Reference::parse(reference).expect("reference"), &desc)
        .expect("tag image");
    layers
        .iter()
        .map(|l| Digest::parse(l["digest"].as_str().unwrap_or_default()).expect("digest"))
        .collect()
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_docker_registry(dir: &Path) -> Option<(Killed, String)> {
    if !Path::new("/usr/bin/docker-registry").exists() {
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let cfg = dir.join("config.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )
    .ok()?;
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let guard = Killed(child);
    let http = reqwest::Client::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if let Ok(r) = http.get(format!("http://{addr}/v2/")).send().await {
            if r.status().is_success() {
                return Some((guard, addr));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Times `runs` pulls into fresh stores; prints and returns the best seconds.
async fn bench_pulls(label: &str, reference: &Reference, args: &Args, total_mb: f64) -> f64 {
    let mut times = Vec::new();
    for run in 0..args.runs {
        let dir = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))
            .expect("temp dir");
        let dst = open_store(dir.path());
        let c = RegistryClient::new(ClientConfig::default()).expect("client");
        let t = Instant::now();
        c.pull(reference, &dst, &|_| {}).await.expect("pull");
        let s = t.elapsed().as_secs_f64();
        println!(
            "{label:<28} run {}: {s:7.3} s  {:8.1} MB/s",
            run + 1,
            total_mb / s
        );
        times.push(s);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times[0]
}

/// Baseline: sequential GETs of every layer into nothing.
async fn bench_raw(label: &str, base: &str, repo: &str, layers: &[Digest], total_mb: f64) -> f64 {
    use futures::StreamExt;
    let http = reqwest::Client::new();
    let t = Instant::now();
    for d in layers {
        let r = http
            .get(format!("{base}/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .expect("get blob");
        let mut s = r.bytes_stream();
        while let Some(c) = s.next().await {
            c.expect("read blob");
        }
    }
    let s = t.elapsed().as_secs_f64();
    println!("{label:<28}        {s:7.3} s  {:8.1} MB/s", total_mb / s);
    s
}

/// `--serve ROOT ADDR_FILE`: run our registry on 127.0.0.1:0 and write its address.
async fn serve_mode(root: &str, addr_file: &str) {
    let app = distribution::server::router(Path::new(root), None).expect("router");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::fs::write(addr_file, format!("{addr}\n")).expect("write address");
    let _ = distribution::server::serve_listener(listener, app).await;
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() == 4 && argv[1] == "--serve" {
        serve_mode(&argv[2], &argv[3]).await;
        return;
    }
    let args = parse_args();
    let work = tempfile::tempdir_in(std::env::var_os("BENCH_DIR").unwrap_or_else(|| ".".into()))
        .expect("temp dir");
    let src = open_store(&work.path().join("src"));

    // Our registry, in its own process (this binary with --serve), like docker-registry.
    let ours_root = work.path().join("ours");
    let addr_file = work.path().join("ours.addr");
    let exe = std::env::current_exe().expect("current exe");
    let _ours_proc = Killed(
        Command::new(exe)
            .arg("--serve")
            .arg(&ours_root)
            .arg(&addr_file)
            .spawn()
            .expect("start berth registry"),
    );
    let t = Instant::now();
    let ours = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file) {
            if a.ends_with('\n') {
                break a.trim().to_string();
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "berth registry did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let repo = "bench/image";
    let name = format!("{ours}/{repo}:v1");
    let layers = build(&src, &name, &args);
    let total: u64 = layers
        .iter()
        .map(|d| src.content().size(d).unwrap_or(0))
        .sum();
    let total_mb = total as f64 / 1e6;
    println!(
        "image: {} layers, {:.1} MB total; {} runs each, fresh store per run",
        layers.len(),
        total_mb,
        args.runs
    );
    let c = RegistryClient::new(ClientConfig::default()).expect("client");
    let reference = Reference::parse(&name).expect("reference");
    let t = Instant::now();
    c.push(&reference, &src, &|_| {})
        .await
        .expect("push to ours");
    let push_s = t.elapsed().as_secs_f64();
    println!(
        "{:<28}        {push_s:7.3} s  {:8.1} MB/s",
        "push -> berth registry",
        total_mb / push_s
    );
    let best_ours = bench_pulls("pull <- berth registry", &reference, &args, total_mb).await;
    let raw_ours = bench_raw(
        "raw GET <- berth registry",
        &format!("http://{ours}"),
        repo,
        &layers,
        total_mb,
    )
    .await;

    let mut best_ref = None;
    let ref_dir = work.path().join("docker-registry");
    std::fs::create_dir_all(&ref_dir).expect("dir");
    if let Some((_guard, addr)) = start_docker_registry(&ref_dir).await {
        let name = format!("{addr}/{repo}:v1");
        let r = Reference::parse(&name).expect("reference");
        src.tag(&src.resolve(&reference).expect("image").id, &r)
            .expect("tag");
        c.push(&r, &src, &|_| {})
            .await
            .expect("push to docker-registry");
        best_ref = Some(bench_pulls("pull <- docker-registry", &r, &args, total_mb).await);
        bench_raw(
            "raw GET <- docker-registry",
            &format!("http://{addr}"),
            repo,
            &layers,
            total_mb,
        )
        .await;
    } else {
        println!("docker-registry not installed: no comparison");
    }
    println!();
    println!(
        "best pull from berth registry: {best_ours:.3} s ({:.1} MB/s); raw transfer {raw_ours:.3} s",
        total_mb / best_ours
    );
    if let Some(b) = best_ref {
        println!(
            "best pull from docker-registry: {b:.3} s ({:.1} MB/s); ratio berth/docker-registry server = {:.2}",
            total_mb / b,
            best_ours / b
        );
    }
    println!("docker (engine) is not available on this machine: no `docker pull` comparison");
}
