//! Times the builder's own overhead: a fully cached rebuild of a 7-step Dockerfile with a
//! 50-file context, next to the time it takes just to read and hash that context.
//!
//! `cargo run --release -p build --example rebuild_timing [files] [KiB per file]`
//!
//! Uses the directory-backed test backend (RUN needs root and chroot(8); without root the
//! RUN step is replaced by a metadata step).

#[path = "../tests/support/dir_backend.rs"]
mod dir_backend;

use std::fs;
use std::time::{Duration, Instant};

use build::{build, BuildContext, BuildOptions};
use sha2::{Digest, Sha256};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let files: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let kib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let rounds = 20;

    let ctx_dir = tempfile::tempdir()?;
    for i in 0..files {
        let sub = ctx_dir.path().join(format!("src/m{}", i % 5));
        fs::create_dir_all(&sub)?;
        let body: Vec<u8> = (0..kib * 1024)
            .map(|j| ((i * 31 + j) % 251) as u8)
            .collect();
        fs::write(sub.join(format!("file{i}.dat")), body)?;
    }
    let root = testutil::is_root() && std::path::Path::new("/usr/sbin/chroot").exists();
    let run = if root {
        "RUN ls -R /app > /listing.txt"
    } else {
        "LABEL run=skipped"
    };
    fs::write(
        ctx_dir.path().join("Dockerfile"),
        format!(
            "FROM busybox\nENV APP=/app\nWORKDIR $APP\nCOPY src/ ./src/\n{run}\nLABEL version=1\nCMD [\"sh\"]\n"
        ),
    )?;

    let mut backend = dir_backend::DirBackend::new()?;
    let opts = BuildOptions {
        tags: vec!["timing:latest".into()],
        ..Default::default()
    };
    let t = Instant::now();
    let ctx = BuildContext::from_dir(ctx_dir.path())?;
    let first = build(&opts, &ctx, &mut backend, &mut std::io::sink())?;
    let cold = t.elapsed();

    let mut cached = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let ctx = BuildContext::from_dir(ctx_dir.path())?;
        let r = build(&opts, &ctx, &mut backend, &mut std::io::sink())?;
        cached.push(t.elapsed());
        assert_eq!(r.image_id, first.image_id);
        assert_eq!(r.cached_steps, 6);
    }

    // Baseline: walk the context and sha256 every file, nothing else.
    let mut hash_only = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let mut h = Sha256::new();
        build::context::walk(ctx_dir.path(), "", None, &mut |e| {
            if let build::context::EntryKind::File(_) = e.kind {
                h.update(fs::read(&e.path).map_err(|source| build::ContextError::Io {
                    path: e.path.clone(),
                    source,
                })?);
            }
            Ok(())
        })?;
        std::hint::black_box(h.finalize());
        hash_only.push(t.elapsed());
    }

    let med = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (c, h) = (med(&mut cached), med(&mut hash_only));
    println!(
        "context: {files} files x {kib} KiB; Dockerfile: 7 steps (RUN {})",
        if root { "real" } else { "replaced" }
    );
    println!(
        "cold build:            {:>9.3} ms",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "cached rebuild median: {:>9.3} ms ({rounds} rounds)",
        c.as_secs_f64() * 1e3
    );
    println!("hash-only median:      {:>9.3} ms", h.as_secs_f64() * 1e3);
    println!(
        "builder overhead over hashing: {:.3} ms ({:.2}x)",
        (c.as_secs_f64() - h.as_secs_f64()) * 1e3,
        c.as_secs_f64() / h.as_secs_f64()
    );
    Ok(())
}
