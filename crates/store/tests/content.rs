//! Content store behaviour: verification, resumable ingest, concurrent writers.

use std::io::Write;
use std::sync::Arc;

use errkind::{ErrorKind, HasKind};
use store::content::{ContentError, ContentStore};
use store::Digest;

fn blob_files(cs: &ContentStore) -> usize {
    std::fs::read_dir(cs.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn digest_mismatch_is_an_error_and_leaves_store_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let cs = ContentStore::open(dir.path()).unwrap();
    let wrong = Digest::sha256_of(b"something else");
    let mut w = cs.writer("upload-1").unwrap();
    w.write_all(b"actual data").unwrap();
    let e = w.commit(None, Some(&wrong)).unwrap_err();
    assert!(matches!(e, ContentError::DigestMismatch { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(blob_files(&cs), 0);
    assert!(!cs.exists(&wrong));
    assert!(!cs.exists(&Digest::sha256_of(b"actual data")));
    // The partial data was discarded: a new writer starts from zero.
    assert_eq!(cs.ingest_offset("upload-1"), 0);
    assert_eq!(cs.writer("upload-1").unwrap().offset(), 0);

    // Size mismatch too.
    let mut w = cs.writer("upload-2").unwrap();
    w.write_all(b"12345").unwrap();
    let e = w.commit(Some(4), None).unwrap_err();
    assert!(matches!(
        e,
        ContentError::SizeMismatch {
            expected: 4,
            actual: 5
        }
    ));
    assert_eq!(blob_files(&cs), 0);
}

#[test]
fn ingest_resumes_after_a_dropped_writer() {
    let dir = tempfile::tempdir().unwrap();
    let cs = ContentStore::open(dir.path()).unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let expected = Digest::sha256_of(&data);
    {
        let mut w = cs.writer("layer-x").unwrap();
        w.write_all(&data[..1_234_567]).unwrap();
        // Dropped without commit: simulates a killed pull.
    }
    assert!(!cs.exists(&expected));
    assert_eq!(cs.ingest_offset("layer-x"), 1_234_567);
    let mut w = cs.writer("layer-x").unwrap();
    assert_eq!(w.offset(), 1_234_567);
    assert_eq!(w.digest(), Digest::sha256_of(&data[..1_234_567]));
    let off = w.offset() as usize;
    w.write_all(&data[off..]).unwrap();
    let d = w.commit(Some(data.len() as u64), Some(&expected)).unwrap();
    assert_eq!(d, expected);
    assert_eq!(cs.read_blob(&d, 10 << 20).unwrap(), data);
    assert_eq!(cs.ingest_offset("layer-x"), 0);
}

#[test]
fn concurrent_ingests_of_the_same_blob() {
    let dir = tempfile::tempdir().unwrap();
    let cs = Arc::new(ContentStore::open(dir.path()).unwrap());
    let data: Arc<Vec<u8>> = Arc::new((0..1_000_000u32).map(|i| (i % 13) as u8).collect());
    let expected = Digest::sha256_of(&data);
    let mut handles = Vec::new();
    for i in 0..8 {
        let cs = cs.clone();
        let data = data.clone();
        let expected = expected.clone();
        handles.push(std::thread::spawn(move || {
            // Half share a ref key (serialised by the lock, resuming each other's data),
            // half use their own.
            let key = if i % 2 == 0 {
                "shared".to_string()
            } else {
                format!("own-{i}")
            };
            let mut w = cs.writer(&key).unwrap();
            let off = w.offset() as usize;
            for chunk in data[off..].chunks(4096) {
                w.write_all(chunk).unwrap();
            }
            w.commit(Some(data.len() as u64), Some(&expected))
        }));
    }
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap(), expected);
    }
    assert_eq!(blob_files(&cs), 1);
    assert_eq!(cs.read_blob(&expected, 2 << 20).unwrap(), *data);
    let leftovers: Vec<_> = std::fs::read_dir(cs.root().join("ingest"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
