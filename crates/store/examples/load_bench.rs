//! Measures `Store::load` / `Store::save` throughput on a synthetic 5-layer image.
//!
//! `cargo run --release -p store --example load_bench -- [total_MB] [dir]`
//!
//! Builds an image of 5 gzip layers (~total_MB uncompressed, ~1000 files each, half
//! incompressible data), saves it as a docker-archive, then loads it into a fresh store
//! (verifying every blob and unpacking every layer into overlay snapshots) and reports
//! MB/s of archive bytes and of uncompressed layer bytes.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::time::Instant;

use store::{ImportOptions, Reference, Store};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for (i, chunk) in buf.chunks_mut(8).enumerate() {
            let v = self.next();
            if i % 2 == 0 {
                for (j, b) in chunk.iter_mut().enumerate() {
                    *b = (v >> (j * 8)) as u8;
                }
            } else {
                for b in chunk.iter_mut() {
                    *b = b'a' + (v % 4) as u8;
                }
            }
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let total_mb: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let base = match args.get(2) {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let src = Store::open(base.path().join("src"))?;
    let per_layer = total_mb * 1024 * 1024 / 5;
    let files = 1000;
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let mut uncompressed = 0u64;
    let mut parent: Option<store::ImageRecord> = None;
    for layer in 0..5 {
        // Build the layer as a container's writes, then commit it (gzip) like docker commit.
        let key = format!("bench-{layer}");
        match &parent {
            Some(p) => src.prepare_container(&key, p)?,
            None => src.snapshots().prepare(&key, None)?,
        };
        let upper = src.snapshots().upper_dir(&key)?;
        let dir = upper.join(format!("layer{layer}"));
        std::fs::create_dir_all(&dir)?;
        let mut buf = vec![0u8; per_layer / files];
        for f in 0..files {
            rng.fill(&mut buf);
            std::fs::write(dir.join(format!("f{f}")), &buf)?;
            uncompressed += buf.len() as u64;
        }
        let img = if let Some(p) = &parent {
            src.commit_container(&key, Some(p), &[], None, None)?
        } else {
            let mut tar = Vec::new();
            store::layer::write_diff(&upper, &mut tar)?;
            src.import(&tar[..], &ImportOptions::default())?
        };
        src.snapshots().remove(&key)?;
        parent = Some(img);
    }
    let img = parent.ok_or("no image")?;
    src.images()
        .tag(&img.id, &Reference::parse("bench:latest")?)?;
    let archive = base.path().join("bench.tar");
    let t = Instant::now();
    let mut w = BufWriter::new(File::create(&archive)?);
    src.save(&["bench:latest".to_string()], &mut w)?;
    w.flush()?;
    drop(w);
    let save_s = t.elapsed().as_secs_f64();
    let archive_mb = std::fs::metadata(&archive)?.len() as f64 / 1e6;

    let dst = Store::open(base.path().join("dst"))?;
    let t = Instant::now();
    let loaded = dst.load(BufReader::with_capacity(1 << 20, File::open(&archive)?))?;
    let load_s = t.elapsed().as_secs_f64();
    assert_eq!(loaded[0].id, img.id);
    let un_mb = uncompressed as f64 / 1e6;
    // Layer application alone (decompress + hash + write files, no blob ingest, no syncfs).
    let t = Instant::now();
    for l in &img.layers {
        let out = tempfile::tempdir_in(base.path())?;
        let blob = BufReader::with_capacity(1 << 20, dst.content().open_blob(&l.digest)?);
        store::layer::apply_layer(blob, out.path(), dst.apply_options())?;
    }
    let apply_s = t.elapsed().as_secs_f64();
    // Reference point: GNU tar extracting the same gzip layers.
    let t = Instant::now();
    for l in &img.layers {
        let out = tempfile::tempdir_in(base.path())?;
        let st = std::process::Command::new("tar")
            .arg("-xzf")
            .arg(dst.content().blob_path(&l.digest))
            .arg("-C")
            .arg(out.path())
            .status()?;
        assert!(st.success());
    }
    let gnu_s = t.elapsed().as_secs_f64();
    println!(
        "layers=5 files={} uncompressed={un_mb:.1} MB archive={archive_mb:.1} MB",
        files * 5
    );
    println!(
        "save: {save_s:.2} s ({:.0} MB/s archive)",
        archive_mb / save_s
    );
    println!(
        "load: {load_s:.2} s ({:.0} MB/s archive, {:.0} MB/s uncompressed)",
        archive_mb / load_s,
        un_mb / load_s
    );
    println!(
        "apply only: {apply_s:.2} s ({:.0} MB/s uncompressed)",
        un_mb / apply_s
    );
    println!(
        "GNU tar -xzf of the same layers: {gnu_s:.2} s ({:.0} MB/s uncompressed)",
        un_mb / gnu_s
    );
    Ok(())
}
