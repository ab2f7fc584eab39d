//! Image pull and load, Berth against Docker, side by side in one run.
//!
//! ```text
//! cargo run --release -p distribution --example pull_vs_docker -- [--layers 5] [--mb 100] [--runs 5]
//! ```
//! (`bench/images/pull.sh` builds and runs it.)
//!
//! Builds a `--layers`-layer image of about `--mb` MB of compressed layers (each layer a
//! tar.gz of 1 MiB random files and 100 KiB hex-text files, so gzip has real work on part
//! of it), pushes it with Berth's client into Debian's `docker-registry` on 127.0.0.1
//! (the neutral server for both sides), starts a private dockerd (its own data root under
//! the bench directory), and then, `--runs` times, interleaved:
//!
//! * **pull, docker**: `docker pull` after `docker rmi` + `docker image prune -a -f` (no
//!   layer left: docker downloads and extracts everything again);
//! * **pull, berth**: [`RegistryClient::pull`] into a fresh [`Store`] plus
//!   [`Store::unpack`] (layers extracted into overlay snapshots, like docker does);
//! * **load, docker**: `docker load -i` of `docker save`'s archive of the image, after rmi;
//! * **load, berth**: [`Store::load`] of the same archive into a fresh store (which
//!   extracts and verifies every layer before registering the image).
//!
//! `sync` runs before every timed step, outside the timing. Docker's figures include the
//! docker CLI process (tens of ms); Berth's are the library calls in this process.
//! Prints medians, MB/s and the ratio berth/docker.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use distribution::client::{ClientConfig, RegistryClient};
use sha2::Digest as _;
use store::image::{media_types, Descriptor, ImageConfig};
use store::{Digest, Reference, Store};

struct Args {
    layers: usize,
    mb: u64,
    runs: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        layers: 5,
        mb: 100,
        runs: 5,
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

/// Deterministic pseudo-random bytes (xorshift64).
struct Rng(u64);

impl Rng {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
        .expect("append to layer");
}

/// One layer: `(uncompressed tar digest, tar size, gzip bytes)`, about `target`
/// compressed bytes.
fn make_layer(i: usize, target: usize) -> (Digest, u64, Vec<u8>) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) * 0x1000_0001));
    let mut tar = tar::Builder::new(Vec::with_capacity(target * 2));
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(1_700_000_000);
    tar.append_data(&mut dir, format!("layer{i}/"), std::io::empty())
        .expect("append dir");
    // 3/4 of the target incompressible, the rest from hex text (gzip halves it).
    let random = target * 3 / 4;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0;
    while n * buf.len() < random {
        rng.fill(&mut buf);
        append(&mut tar, &format!("layer{i}/random-{n}.bin"), &buf);
        n += 1;
    }
    let text_files = (target / 2) / (100 << 10);
    let mut raw = vec![0u8; 50 << 10];
    for t in 0..text_files {
        rng.fill(&mut raw);
        let hex = hex::encode(&raw);
        append(&mut tar, &format!("layer{i}/text-{t}.txt"), hex.as_bytes());
    }
    let data = tar.into_inner().expect("finish layer tar");
    let diff_id = Digest::parse(&format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&data))
    ))
    .expect("diff id");
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(target + (1 << 20)),
        flate2::Compression::default(),
    );
    gz.write_all(&data).expect("gzip layer");
    (diff_id, data.len() as u64, gz.finish().expect("gzip layer"))
}

/// Builds the bench image into `st` under `reference`; returns (compressed, uncompressed)
/// layer bytes.
fn build_image(st: &Store, reference: &Reference, args: &Args) -> (u64, u64) {
    let per = (args.mb as usize * 1_000_000) / args.layers;
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let (mut compressed, mut raw) = (0u64, 0u64);
    for i in 0..args.layers {
        let (diff_id, tar_len, gz) = make_layer(i, per);
        let d = st.content().put_bytes(&gz).expect("store layer");
        compressed += gz.len() as u64;
        raw += tar_len;
        layers.push(Descriptor::new(
            media_types::OCI_LAYER_GZIP,
            d,
            gz.len() as u64,
        ));
        diff_ids.push(diff_id.to_string());
    }
    let p = st.images().platform().clone();
    let config = serde_json::json!({
        "architecture": p.architecture, "os": p.os,
        "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": (0..args.layers).map(|i| serde_json::json!({"created_by": format!("layer {i}")})).collect::<Vec<_>>(),
    });
    let config = ImageConfig::parse(&serde_json::to_vec(&config).expect("encode config"))
        .expect("parse config");
    let rec = st.register_image(&config, layers).expect("register image");
    st.images().tag(&rec.id, reference).expect("tag image");
    (compressed, raw)
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // A graceful stop first: dockerd unmounts its layers and stops its containerd.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(15);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    format!("127.0.0.1:{port}")
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{what} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_docker_registry(dir: &Path) -> (Killed, String) {
    let addr = free_addr();
    let cfg = dir.join("config.yml");
    fs::create_dir_all(dir).expect("registry dir");
    fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        ),
    )
    .expect("registry config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry (apt-get install docker-registry)");
    let k = Killed(child);
    wait_for("docker-registry", || {
        std::net::TcpStream::connect(&addr).is_ok()
    });
    (k, addr)
}

struct Docker {
    host: String,
    config: PathBuf,
}

impl Docker {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .env("DOCKER_CONFIG", &self.config)
            .arg("-H")
            .arg(&self.host)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Removes every image and layer (docker keeps no blob cache of its own).
    fn clear(&self) {
        let ids = self.ok(&["images", "-aq"]);
        for id in ids.split_whitespace() {
            let _ = self.run(&["rmi", "-f", id]);
        }
        self.ok(&["image", "prune", "-a", "-f"]);
        assert_eq!(self.ok(&["images", "-aq"]).trim(), "", "images left");
    }
}

fn start_dockerd(dir: &Path, registry: &str) -> (Killed, Docker) {
    fs::create_dir_all(dir.join("cfg")).expect("dockerd dir");
    fs::write(dir.join("daemon.json"), "{}").expect("daemon.json");
    let sock = dir.join("d.sock");
    let log = fs::File::create(dir.join("dockerd.log")).expect("dockerd log");
    let ns = format!("berth-bench-{}", std::process::id());
    let child = Command::new("dockerd")
        .arg("--config-file")
        .arg(dir.join("daemon.json"))
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(dir.join("exec"))
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args([
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--userland-proxy=false",
        ])
        .arg("--containerd-namespace")
        .arg(&ns)
        .arg("--containerd-plugins-namespace")
        .arg(format!("{ns}-p"))
        .arg("--insecure-registry")
        .arg(registry)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log)
        .spawn()
        .expect("start dockerd (apt-get install docker.io)");
    let k = Killed(child);
    let d = Docker {
        host: format!("unix://{}", sock.display()),
        config: dir.join("cfg"),
    };
    wait_for("dockerd", || d.run(&["version"]).status.success());
    (k, d)
}

fn sync() {
    let _ = Command::new("sync").status();
}

fn timed<T>(f: impl FnOnce() -> T) -> (f64, T) {
    sync();
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Asserts that the store's snapshots hold the image's files (the layers were extracted,
/// not just downloaded): at least the uncompressed tar bytes minus tar headers.
fn check_extracted(st: &Store, raw: u64) {
    let used = store::snapshot::dir_usage(st.snapshots().root());
    assert!(
        used as f64 >= raw as f64 * 0.95,
        "snapshots hold {used} bytes, the layers {raw}"
    );
}

/// Removes a finished store (outside the timings).
fn remove_tree(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

fn main() {
    let args = parse_args();
    let base = std::env::var_os("BENCH_DIR").unwrap_or_else(|| "/tmp".into());
    let work = tempfile::Builder::new()
        .prefix("bimg")
        .tempdir_in(base)
        .expect("bench dir");
    let w = work.path();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");

    let (_registry, raddr) = start_docker_registry(&w.join("registry"));
    let name = format!("{raddr}/bench/layers:v1");
    let reference = Reference::parse(&name).expect("reference");

    let src = Store::open(w.join("src")).expect("source store");
    let t = Instant::now();
    let (compressed, raw) = build_image(&src, &reference, &args);
    println!(
        "image: {} layers, {:.1} MB compressed ({:.1} MB uncompressed), built in {:.1} s",
        args.layers,
        compressed as f64 / 1e6,
        raw as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let client = RegistryClient::new(ClientConfig::default()).expect("client");
    let pushed = rt
        .block_on(client.push(&reference, src.images(), &|_| {}))
        .expect("push to docker-registry");
    println!("pushed {name} ({pushed}) to docker-registry");
    drop(src);
    remove_tree(&w.join("src"));

    let (dockerd, docker) = start_dockerd(&w.join("dockerd"), &raddr);
    let ver = docker.ok(&["version", "--format", "{{.Server.Version}}"]);
    println!(
        "dockerd {} (overlay2), docker-registry 2.8, {} runs each, interleaved\n",
        ver.trim(),
        args.runs
    );

    // Warm-up (untimed): one pull each side; docker's copy also gives the archive.
    docker.ok(&["pull", "-q", &name]);
    let archive = w.join("image.tar");
    docker.ok(&["save", "-o", archive.to_str().expect("path"), &name]);
    let archive_mb = fs::metadata(&archive).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    docker.clear();
    {
        let st = Store::open(w.join("warm")).expect("store");
        let rec = rt
            .block_on(client.pull(&reference, st.images(), &|_| {}))
            .expect("warm-up pull");
        st.unpack(&rec).expect("warm-up unpack");
    }
    remove_tree(&w.join("warm"));

    let (mut dp, mut bp, mut dl, mut bl) = (vec![], vec![], vec![], vec![]);
    let mb = compressed as f64 / 1e6;
    for run in 0..args.runs {
        docker.clear();
        let (s, _) = timed(|| docker.ok(&["pull", "-q", &name]));
        dp.push(s);

        let dir = w.join(format!("pull-{run}"));
        let st = Store::open(&dir).expect("fresh store");
        let (s, layers) = timed(|| {
            let rec = rt
                .block_on(client.pull(&reference, st.images(), &|_| {}))
                .expect("berth pull");
            st.unpack(&rec).expect("berth unpack");
            rec.chain_ids.len()
        });
        assert_eq!(layers, args.layers);
        check_extracted(&st, raw);
        bp.push(s);
        drop(st);
        remove_tree(&dir);

        docker.clear();
        let (s, out) = timed(|| docker.ok(&["load", "-q", "-i", archive.to_str().expect("path")]));
        assert!(out.contains("Loaded image"), "{out}");
        dl.push(s);

        let dir = w.join(format!("load-{run}"));
        let st = Store::open(&dir).expect("fresh store");
        let (s, loaded) = timed(|| {
            st.load(fs::File::open(&archive).expect("open archive"))
                .expect("berth load")
        });
        assert_eq!(loaded.len(), 1);
        check_extracted(&st, raw);
        bl.push(s);
        drop(st);
        remove_tree(&dir);
        println!(
            "run {}: pull docker {:6.3} s  berth {:6.3} s | load docker {:6.3} s  berth {:6.3} s",
            run + 1,
            dp[run],
            bp[run],
            dl[run],
            bl[run]
        );
    }
    let (mdp, mbp, mdl, mbl) = (median(&dp), median(&bp), median(&dl), median(&bl));
    println!();
    println!(
        "median of {} runs                   seconds     MB/s",
        args.runs
    );
    println!(
        "pull + extract, docker pull       {mdp:8.3} {:8.1}   ({mb:.1} MB compressed)",
        mb / mdp
    );
    println!(
        "pull + unpack, berth              {mbp:8.3} {:8.1}",
        mb / mbp
    );
    println!(
        "load, docker load -i              {mdl:8.3} {:8.1}   ({archive_mb:.1} MB archive)",
        archive_mb / mdl
    );
    println!(
        "load, berth Store::load           {mbl:8.3} {:8.1}",
        archive_mb / mbl
    );
    println!();
    println!(
        "ratio berth/docker, pull: {:.2}  (target <= 0.7)",
        mbp / mdp
    );
    println!("ratio berth/docker, load: {:.2}", mbl / mdl);
    docker.clear();
    drop(dockerd);
}
