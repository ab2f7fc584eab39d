//! Store-wide behaviour: import, snapshots and real overlay mounts, image index, removal, GC.

mod common;

use std::fs;
use std::time::Duration;

use common::{busybox_tar, gzip, is_root, MountGuard, TarBuilder};
use errkind::{ErrorKind, HasKind};
use store::image::{media_types, Descriptor, ImageError};
use store::{Digest, GcOptions, ImportOptions, Reference, RemoveEvent, Store, StoreError};

fn import_tar(s: &Store, tar: &[u8], name: Option<&str>) -> store::ImageRecord {
    s.import(
        tar,
        &ImportOptions {
            changes: vec![
                r#"CMD ["sh"]"#.into(),
                "ENV A=b".into(),
                "WORKDIR /x".into(),
            ],
            reference: name.map(|n| Reference::parse(n).unwrap()),
            message: None,
        },
    )
    .unwrap()
}

#[test]
fn import_busybox_prepare_and_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path().join("store")).unwrap();
    let rec = import_tar(&s, &busybox_tar(), Some("busybox"));
    assert_eq!(rec.repo_tags, vec!["busybox:latest".to_string()]);
    assert_eq!(rec.layers.len(), 1);
    assert_eq!(rec.chain_ids, rec.diff_ids);
    let cfg = s.images().get_config(&rec.id).unwrap();
    let cc = cfg.config.unwrap();
    assert_eq!(cc.cmd, Some(vec!["sh".to_string()]));
    assert_eq!(cc.env, Some(vec!["A=b".to_string()]));
    assert_eq!(cc.working_dir.as_deref(), Some("/x"));
    // Lookups the way docker resolves names.
    assert_eq!(s.images().lookup("busybox").unwrap().id, rec.id);
    assert_eq!(s.images().lookup("busybox:latest").unwrap().id, rec.id);
    assert_eq!(
        s.images().lookup("docker.io/library/busybox").unwrap().id,
        rec.id
    );
    assert_eq!(s.images().lookup(rec.id.short()).unwrap().id, rec.id);
    assert_eq!(s.images().lookup(&rec.id.to_string()).unwrap().id, rec.id);
    assert_eq!(
        s.images().lookup("nosuch").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The layer was unpacked into a committed snapshot.
    let top = rec.top_chain_id().unwrap();
    assert!(s
        .snapshots()
        .committed_fs(top)
        .join("bin/busybox")
        .is_file());

    let mounts = s.prepare_container("c1", &rec).unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].kind, "overlay");
    // A second prepare with the same key is a conflict.
    let e = s.snapshots().prepare("c1", Some(top)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    if !is_root() {
        eprintln!("skipping mount part: needs root");
        return;
    }
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    s.snapshots().mount("c1", &rootfs).unwrap();
    let guard = MountGuard(rootfs.clone());
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(fs::symlink_metadata(rootfs.join("bin/sh"))
        .unwrap()
        .file_type()
        .is_symlink());
    fs::write(rootfs.join("tmp/hello"), b"hi").unwrap();
    fs::remove_file(rootfs.join("etc/hostname")).unwrap();
    drop(guard);
    let upper = s.snapshots().upper_dir("c1").unwrap();
    assert_eq!(fs::read(upper.join("tmp/hello")).unwrap(), b"hi");
    assert!(!s.snapshots().committed_fs(top).join("tmp/hello").exists());
    assert!(s
        .snapshots()
        .committed_fs(top)
        .join("etc/hostname")
        .exists());

    // Commit the container: new image with 2 layers, the deletion as a whiteout.
    let new = s
        .commit_container("c1", Some(&rec), &["CMD [\"cat\"]".into()], None, None)
        .unwrap();
    assert_eq!(new.layers.len(), 2);
    assert_eq!(new.chain_ids[0], rec.chain_ids[0]);
    let up2 = s.snapshots().committed_fs(&new.chain_ids[1]);
    assert_eq!(fs::read(up2.join("tmp/hello")).unwrap(), b"hi");
    let m2 = s.prepare_container("c2", &new).unwrap();
    let rootfs2 = tmp.path().join("rootfs2");
    fs::create_dir(&rootfs2).unwrap();
    store::snapshot::mount_all(&m2, &rootfs2).unwrap();
    let _g2 = MountGuard(rootfs2.clone());
    assert_eq!(fs::read(rootfs2.join("tmp/hello")).unwrap(), b"hi");
    assert!(!rootfs2.join("etc/hostname").exists());
    assert!(rootfs2.join("bin/busybox").is_file());
}

#[test]
fn deep_images_mount_past_the_page_limit() {
    if !is_root() {
        eprintln!("skipping: needs root for overlay mounts");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A long root path makes every lowerdir long.
    let root = tmp.path().join("x".repeat(100)).join("store");
    let s = Store::open(&root).unwrap();
    let mut parent: Option<Digest> = None;
    let mut diff_ids = Vec::new();
    for i in 0..40 {
        let t = TarBuilder::new()
            .file(&format!("f{i}"), format!("{i}").as_bytes())
            .build();
        let d = Digest::sha256_of(&t);
        diff_ids.push(d.clone());
        let chain = store::image::chain_ids(&diff_ids).pop().unwrap();
        s.snapshots()
            .apply_layer(&chain, parent.as_ref(), &d, &t[..], s.apply_options())
            .unwrap();
        parent = Some(chain);
    }
    let mounts = s.snapshots().prepare("deep", parent.as_ref()).unwrap();
    assert!(mounts[0].options.join(",").len() > 4096);
    let target = tmp.path().join("m");
    fs::create_dir(&target).unwrap();
    store::snapshot::mount_all(&mounts, &target).unwrap();
    let _g = MountGuard(target.clone());
    for i in 0..40 {
        assert_eq!(
            fs::read(target.join(format!("f{i}"))).unwrap(),
            format!("{i}").as_bytes()
        );
    }
}

#[test]
fn wrong_diff_id_leaves_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    let t = TarBuilder::new().file("a", b"a").build();
    let wrong = Digest::sha256_of(b"not the tar");
    let e = s
        .snapshots()
        .apply_layer(&wrong, None, &wrong, &t[..], s.apply_options())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(!s.snapshots().exists(&wrong));
    assert!(s.snapshots().list_committed().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(tmp.path().join("snapshots/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn concurrent_unpacks_of_one_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    let t = gzip(
        &TarBuilder::new()
            .dir("d")
            .file("d/a", &[7u8; 100_000])
            .build(),
    );
    let diff = {
        let dir = tempfile::tempdir().unwrap();
        store::layer::apply_layer(&t[..], dir.path(), s.apply_options())
            .unwrap()
            .diff_id
    };
    let results: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                let t = &t;
                let diff = &diff;
                sc.spawn(move || {
                    s.snapshots()
                        .apply_layer(diff, None, diff, &t[..], s.apply_options())
                        .map(|r| r.is_some())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|x| **x).count(), 1, "{results:?}");
    assert_eq!(
        fs::read(s.snapshots().committed_fs(&diff).join("d/a")).unwrap(),
        vec![7u8; 100_000]
    );
}

#[test]
fn tags_untag_and_remove_like_docker() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    let a = import_tar(
        &s,
        &TarBuilder::new().file("a", b"a").build(),
        Some("app:1"),
    );
    let b = import_tar(&s, &TarBuilder::new().file("b", b"b").build(), None);
    assert!(b.repo_tags.is_empty());
    s.images()
        .tag(&a.id, &Reference::parse("localhost:5000/app:v2").unwrap())
        .unwrap();
    let rec = s.images().get(&a.id).unwrap();
    assert_eq!(
        rec.repo_tags,
        vec!["app:1".to_string(), "localhost:5000/app:v2".to_string()]
    );
    assert_eq!(s.images().tags("app").unwrap(), vec!["1".to_string()]);
    assert_eq!(s.images().list().unwrap().len(), 2);

    // By id while named in two repositories: conflict.
    let e = s.remove_image(a.id.short(), false).unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }), "{e:?}");
    // By one of two tags: untag only.
    let ev = s.remove_image("app:1", false).unwrap();
    assert_eq!(ev, vec![RemoveEvent::Untagged("app:1".into())]);
    assert!(s.images().get(&a.id).is_ok());

    // In use by a container snapshot: conflict unless forced.
    s.prepare_container("ctr", &rec).unwrap();
    let e = s.remove_image("localhost:5000/app:v2", false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let ev = s.remove_image("localhost:5000/app:v2", true).unwrap();
    assert!(ev.contains(&RemoveEvent::Deleted(a.id.clone())), "{ev:?}");
    assert_eq!(
        s.images().get(&a.id).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // The container's layers stay while its snapshot exists.
    let top = rec.top_chain_id().unwrap();
    assert!(s.snapshots().exists(top));
    s.gc_with(&GcOptions {
        grace: Duration::ZERO,
    })
    .unwrap();
    assert!(s.snapshots().exists(top));
    s.snapshots().remove("ctr").unwrap();
    let rep = s
        .gc_with(&GcOptions {
            grace: Duration::ZERO,
        })
        .unwrap();
    assert!(rep.snapshots.contains(top), "{rep:?}");
    assert!(!s.snapshots().exists(top));
    // The untouched image b is intact.
    let b2 = s.images().get(&b.id).unwrap();
    for l in &b2.layers {
        assert!(s.content().exists(&l.digest));
    }
    assert!(s.snapshots().exists(b2.top_chain_id().unwrap()));
    // Dangling prune removes b.
    let pr = s.prune(true).unwrap();
    assert!(pr.events.contains(&RemoveEvent::Deleted(b.id.clone())));
    assert!(s.images().list().unwrap().is_empty());
    assert!(s.content().list().unwrap().is_empty());
    assert!(s.snapshots().list_committed().unwrap().is_empty());
}

#[test]
fn gc_keeps_referenced_and_removes_unreferenced() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    let a = import_tar(&s, &TarBuilder::new().file("a", b"a").build(), Some("keep"));
    let orphan = s.content().put_bytes(b"orphan blob").unwrap();
    // Default grace keeps fresh blobs (a pull in progress).
    let rep = s.gc().unwrap();
    assert!(rep.blobs.is_empty());
    assert!(s.content().exists(&orphan));
    let rep = s
        .gc_with(&GcOptions {
            grace: Duration::ZERO,
        })
        .unwrap();
    assert_eq!(rep.blobs, vec![orphan.clone()]);
    assert!(!s.content().exists(&orphan));
    for d in [&a.manifest.digest, &a.config.digest, &a.layers[0].digest] {
        assert!(s.content().exists(d), "{d}");
    }
    assert!(s.snapshots().exists(a.top_chain_id().unwrap()));
    let du = s.disk_usage().unwrap();
    assert_eq!(du.images.len(), 1);
    assert!(du.images[0].size > 0);
    assert!(du.blobs > 0);
}

#[test]
fn oversized_manifest_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    let mut big = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 5 << 20));
    big.extend(br#""},"config":{}}"#);
    let d = s.content().put_bytes(&big).unwrap();
    let desc = Descriptor::new(media_types::OCI_MANIFEST, d, big.len() as u64);
    let e = s
        .images()
        .set_ref(&Reference::parse("big").unwrap(), &desc)
        .unwrap_err();
    assert!(matches!(e, ImageError::ManifestTooLarge(_)), "{e:?}");
    assert!(s.images().repositories().unwrap().is_empty());
}

#[test]
fn refs_to_indexes_resolve_the_host_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    let img = import_tar(&s, &TarBuilder::new().file("a", b"a").build(), None);
    let mut host = img.manifest.clone();
    host.platform = Some(store::image::Platform::host());
    let mut foreign = Descriptor::new(
        media_types::OCI_MANIFEST,
        Digest::sha256_of(b"not stored"),
        10,
    );
    foreign.platform = Some(store::image::Platform {
        architecture: "s390x".into(),
        os: "linux".into(),
        ..Default::default()
    });
    let index = store::image::Index {
        schema_version: 2,
        media_type: Some(media_types::OCI_INDEX.into()),
        manifests: vec![foreign, host],
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&index).unwrap();
    let idx_d = s.content().put_bytes(&bytes).unwrap();
    let idx_desc = Descriptor::new(media_types::OCI_INDEX, idx_d.clone(), bytes.len() as u64);
    let r = Reference::parse("multi:1").unwrap();
    let rec = s.images().set_ref(&r, &idx_desc).unwrap().unwrap();
    assert_eq!(rec.id, img.id);
    assert_eq!(rec.repo_tags, vec!["multi:1".to_string()]);
    assert_eq!(rec.repo_digests, vec![format!("multi@{idx_d}")]);
    assert_eq!(s.images().get_ref(&r).unwrap(), Some(idx_desc.clone()));
    assert_eq!(
        s.images().lookup(&format!("multi@{idx_d}")).unwrap().id,
        img.id
    );
    // Registry side: any stored manifest can be named, resolvable or not.
    let art = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/x-thing","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
    let art_d = s.content().put_bytes(art).unwrap();
    let art_desc = Descriptor::new(media_types::OCI_MANIFEST, art_d, art.len() as u64);
    s.images()
        .put_ref(&Reference::parse("multi:artifact").unwrap(), &art_desc)
        .unwrap();
    assert_eq!(
        s.images().tags("multi").unwrap(),
        vec!["1".to_string(), "artifact".to_string()]
    );
    // The artifact names no image: resolving it is NotFound, not a crash.
    let e = s.images().lookup("multi:artifact").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // Removing the image frees the index it was pulled through; the artifact stays.
    let ev = s.remove_image("multi:1", false).unwrap();
    assert!(ev.contains(&RemoveEvent::Deleted(img.id.clone())), "{ev:?}");
    assert!(!s.content().exists(&idx_d));
    assert!(!s.content().exists(&img.layers[0].digest));
    assert!(s.content().exists(&art_desc.digest));
    assert_eq!(
        s.images().tags("multi").unwrap(),
        vec!["artifact".to_string()]
    );
}

#[test]
fn importing_a_non_tar_fails_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path()).unwrap();
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8 + 1).collect();
    let e = s
        .import(
            &gzip(&garbage)[..],
            &ImportOptions {
                reference: Some(Reference::parse("junk").unwrap()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:?}");
    assert!(s.content().list().unwrap().is_empty());
    assert!(s.images().list().unwrap().is_empty());
    assert!(s.snapshots().list_committed().unwrap().is_empty());
    assert!(s.images().lookup("junk").is_err());
}

/// `images` SIZE is the uncompressed content of the layers (docker's measure: file bytes,
/// symlink target lengths, hard links once, directories nothing), not the gzip blob sizes;
/// committed images add their layer's content; `system df` agrees.
#[test]
fn image_size_is_the_uncompressed_layer_content() {
    if !is_root() {
        eprintln!("skipping: layers with ownership need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path().join("store")).unwrap();
    let zeros = vec![0u8; 300_000];
    let tar = TarBuilder::new()
        .dir("d")
        .file("d/zeros", &zeros)
        .file("d/small", b"12345")
        .hardlink("d/zeros-link", "d/zeros")
        .symlink("d/sym", "small")
        .build();
    let rec = import_tar(&s, &tar, Some("sized"));
    let blob: u64 = rec.layers.iter().map(|l| l.size).sum();
    assert!(blob < 10_000, "zeros should compress well: {blob}");
    assert_eq!(rec.size, 300_000 + 5 + 5, "size of {rec:?}");
    assert_eq!(s.images().lookup("sized").unwrap().size, rec.size);
    // Recorded at apply time; recomputed when the record is gone (older stores).
    let top = rec.top_chain_id().unwrap().clone();
    let size_file = s
        .snapshots()
        .committed_fs(&top)
        .parent()
        .unwrap()
        .join("size");
    assert_eq!(fs::read_to_string(&size_file).unwrap(), "300010");
    fs::remove_file(&size_file).unwrap();
    assert_eq!(s.snapshots().committed_size(&top).unwrap(), 300_010);
    assert!(size_file.exists(), "size not cached again");
    // A commit adds the new layer's content.
    s.snapshots().prepare("ctr", Some(&top)).unwrap();
    let upper = s.snapshots().upper_dir("ctr").unwrap();
    fs::write(upper.join("new"), vec![7u8; 1234]).unwrap();
    let c = s
        .commit_container("ctr", Some(&rec), &[], None, None)
        .unwrap();
    assert_eq!(c.size, 300_010 + 1234);
    let du = s.disk_usage().unwrap();
    let u = du.images.iter().find(|i| i.id == c.id).unwrap();
    assert_eq!(u.size, c.size);
    assert_eq!(u.shared_size, 300_010);
}

/// Makes a build layer the way a build step does: `files` sealed in a directory that
/// becomes the snapshot of chain (`parent`, layer), the blob only recorded as derived
/// from it. Returns the layer's descriptor and chain id.
fn derived_layer(
    s: &Store,
    parent: Option<&Digest>,
    files: &[(&str, &[u8])],
) -> (Descriptor, Digest) {
    let dir = s.root().join("snapshots/tmp").join(format!(
        "step-{}",
        Digest::sha256_of(format!("{parent:?}{files:?}").as_bytes()).short()
    ));
    for (name, data) in files {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
    // Fixed times (directories too), so that equal files make equal layers.
    for (name, _) in files {
        let mut p = dir.join(name);
        while p != dir {
            let t = nix::sys::time::TimeSpec::new(1_700_000_000, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &p,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
            p.pop();
        }
    }
    let mut hw = store::digest::HashingWriter::new(std::io::sink());
    let r = store::layer::seal_diff(&dir, &mut hw).unwrap();
    let (_, digest, size) = hw.finish();
    assert!(r.exact);
    let chain = match parent {
        None => digest.clone(),
        Some(p) => Digest::sha256_of(format!("{p} {digest}").as_bytes()),
    };
    assert!(s.snapshots().commit_dir(&chain, parent, &dir).unwrap());
    if !s.content().exists(&digest) {
        s.content().put_derived(&digest, size, &chain).unwrap();
    }
    (Descriptor::new(media_types::OCI_LAYER, digest, size), chain)
}

fn image_of(s: &Store, layers: Vec<Descriptor>, name: &str) -> store::ImageRecord {
    use store::image::{ImageConfig, RootFs};
    let cfg = ImageConfig {
        created: None,
        author: None,
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: None,
        config: None,
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.digest.clone()).collect(),
        },
        history: vec![],
        extra: Default::default(),
    };
    let rec = s.register_image(&cfg, layers).unwrap();
    s.images()
        .tag(&rec.id, &Reference::parse(name).unwrap())
        .unwrap()
}

#[test]
fn derived_build_layers_are_blobs_until_nothing_keeps_them() {
    if !is_root() {
        eprintln!("skipping: commit_dir of a sealed dir as root only, as the builder");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path().join("store")).unwrap();
    let big = vec![42u8; 300_000];
    let (base, base_chain) = derived_layer(&s, None, &[("etc/base", b"base")]);
    let (layer, chain_a) = derived_layer(&s, None, &[("big/data", &big)]);
    // The same layer on another parent: another snapshot, the same blob.
    let (layer_b, chain_b) = derived_layer(&s, Some(&base_chain), &[("big/data", &big)]);
    assert_eq!(layer, layer_b);
    assert_ne!(chain_a, chain_b);
    let a = image_of(&s, vec![layer.clone()], "a:1");
    let b = image_of(&s, vec![base.clone(), layer.clone()], "b:1");
    assert_eq!(b.chain_ids, vec![base_chain.clone(), chain_b.clone()]);
    let c = s.content();
    // Present, not stored, not counted as blob bytes; registering read nothing.
    for d in [&layer.digest, &base.digest] {
        assert!(c.exists(d) && !c.blob_path(d).exists());
        assert!(c.info(d).unwrap().derived);
    }
    assert_eq!(c.size(&layer.digest).unwrap(), layer.size);
    let listed: Vec<_> = c
        .list()
        .unwrap()
        .into_iter()
        .filter(|b| b.derived)
        .collect();
    assert_eq!(listed.len(), 2);
    let du = s.disk_usage().unwrap();
    assert!(du.blobs < 10_000, "{}", du.blobs);
    // GC keeps what images use.
    let gc = s
        .gc_with(&GcOptions {
            grace: Duration::ZERO,
        })
        .unwrap();
    assert!(gc.blobs.is_empty() && gc.snapshots.is_empty(), "{gc:?}");
    // Removing `a` frees its snapshot only if the blob does not need it: `b` still
    // names the blob, whose record is made from `a`'s snapshot.
    s.remove_image("a:1", false).unwrap();
    assert!(s.images().get(&a.id).is_err());
    assert!(c.exists(&layer.digest), "b's layer blob went with a");
    assert!(s.snapshots().exists(&chain_a));
    // Save `b` (made from the snapshot on the way) and load it elsewhere: the same ids.
    let saved = s.save(&["b:1".to_string()], Vec::new()).unwrap();
    assert!(c.blob_path(&layer.digest).is_file(), "materialized");
    let s2 = Store::open(tmp.path().join("store2")).unwrap();
    let loaded = s2.load(&saved[..]).unwrap();
    assert_eq!(loaded[0].id, b.id);
    let b2 = s2.images().get(&b.id).unwrap();
    assert_eq!(b2.diff_ids, b.diff_ids);
    assert_eq!(
        s2.snapshots().committed_size(&chain_b).unwrap(),
        big.len() as u64
    );
    // The stored blob replaced the record; now the snapshot of `a` is free.
    s.gc_with(&GcOptions {
        grace: Duration::ZERO,
    })
    .unwrap();
    assert!(!s.snapshots().exists(&chain_a));
    assert!(c
        .list_derived()
        .unwrap()
        .iter()
        .all(|r| r.digest == base.digest));
    // Removing `b` removes the rest: blobs, records and snapshots.
    s.remove_image("b:1", false).unwrap();
    assert!(!c.exists(&layer.digest) && !c.exists(&base.digest));
    assert!(c.list_derived().unwrap().is_empty());
    assert!(s.snapshots().list_committed().unwrap().is_empty());
}

#[test]
fn a_derived_blob_whose_snapshot_is_gone_is_not_there() {
    if !is_root() {
        eprintln!("skipping: commit_dir of a sealed dir as root only, as the builder");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path().join("store")).unwrap();
    let (layer, chain) = derived_layer(&s, None, &[("f", b"data")]);
    let c = s.content();
    assert!(c.exists(&layer.digest));
    s.snapshots().remove_committed(&chain).unwrap();
    assert!(!c.exists(&layer.digest));
    assert!(c.list().unwrap().is_empty());
    assert_eq!(
        c.open_blob(&layer.digest).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Collected: the record goes.
    assert_eq!(c.list_derived().unwrap().len(), 1);
    s.gc_with(&GcOptions {
        grace: Duration::ZERO,
    })
    .unwrap();
    assert!(c.list_derived().unwrap().is_empty());
    // A snapshot changed under its record: a clear error, nothing stored.
    let (layer, chain) = derived_layer(&s, None, &[("g", b"data")]);
    fs::write(s.snapshots().committed_fs(&chain).join("g"), b"DATA").unwrap();
    let e = c.open_blob(&layer.digest).unwrap_err();
    assert!(
        matches!(e, store::content::ContentError::SourceChanged { .. }),
        "{e:?}"
    );
    assert!(!c.blob_path(&layer.digest).exists());
}
