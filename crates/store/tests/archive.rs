//! save / load: round trips, docker legacy layout, OCI layout, bad archives, skopeo interop.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;

use common::{gzip, TarBuilder};
use errkind::{ErrorKind, HasKind};
use store::{Digest, ImportOptions, Reference, Store};

fn two_layer_image(s: &Store) -> store::ImageRecord {
    let base = s
        .import(
            &TarBuilder::new()
                .dir("etc")
                .file("etc/base", b"base")
                .build()[..],
            &ImportOptions {
                changes: vec!["CMD [\"sh\"]".into()],
                reference: Some(Reference::parse("base:1").unwrap()),
                message: None,
            },
        )
        .unwrap();
    // Second layer via a container commit.
    s.prepare_container("tmp-ctr", &base).unwrap();
    let upper = s.snapshots().upper_dir("tmp-ctr").unwrap();
    fs::write(upper.join("added"), b"added").unwrap();
    let img = s
        .commit_container("tmp-ctr", Some(&base), &[], Some("c"), None)
        .unwrap();
    s.snapshots().remove("tmp-ctr").unwrap();
    s.images()
        .tag(&img.id, &Reference::parse("localhost:5000/app:v1").unwrap())
        .unwrap();
    s.images().get(&img.id).unwrap()
}

fn entries(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(tar);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        out.push((p, v));
    }
    out
}

fn state(s: &Store) -> (BTreeSet<Digest>, usize, usize, usize) {
    let partial = fs::read_dir(s.root().join("ingest"))
        .unwrap()
        .filter(|e| {
            let e = e.as_ref().unwrap();
            e.file_name().to_string_lossy().ends_with(".data")
        })
        .count();
    (
        s.content()
            .list()
            .unwrap()
            .into_iter()
            .map(|b| b.digest)
            .collect(),
        s.snapshots().list_committed().unwrap().len(),
        s.images().list().unwrap().len(),
        partial,
    )
}

#[test]
fn save_then_load_keeps_ids_and_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path().join("a")).unwrap();
    let img = two_layer_image(&a);
    let base = a.images().lookup("base:1").unwrap();
    let tar = a
        .save(
            &["localhost:5000/app:v1".to_string(), "base:1".to_string()],
            Vec::new(),
        )
        .unwrap();
    let names: BTreeSet<String> = entries(&tar).into_iter().map(|e| e.0).collect();
    for n in ["manifest.json", "index.json", "oci-layout", "repositories"] {
        assert!(names.contains(n), "{n} missing: {names:?}");
    }
    assert!(names.contains(&format!("blobs/sha256/{}", img.id.hex())));

    let b = Store::open(tmp.path().join("b")).unwrap();
    let loaded = b.load(&tar[..]).unwrap();
    assert_eq!(loaded.len(), 2);
    let got = b.images().lookup("localhost:5000/app:v1").unwrap();
    assert_eq!(got.id, img.id);
    assert_eq!(got.manifest.digest, img.manifest.digest);
    assert_eq!(got.diff_ids, img.diff_ids);
    assert_eq!(got.layers, img.layers);
    assert_eq!(b.images().lookup("base:1").unwrap().id, base.id);
    let top = b.snapshots().committed_fs(got.top_chain_id().unwrap());
    assert_eq!(fs::read(top.join("added")).unwrap(), b"added");
    // Loading again is idempotent.
    let before = state(&b);
    b.load(&tar[..]).unwrap();
    assert_eq!(state(&b), before);
    // Also works gzip-compressed (docker load accepts that).
    let c = Store::open(tmp.path().join("c")).unwrap();
    c.load(&gzip(&tar)[..]).unwrap();
    assert_eq!(c.images().lookup("base:1").unwrap().id, base.id);
}

#[test]
fn loads_legacy_docker_layout_and_oci_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = TarBuilder::new().file("hello", b"world").build();
    let diff = Digest::sha256_of(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"rootfs":{{"type":"layers","diff_ids":["{diff}","{diff}"]}}}}"#
    );
    let cfg_d = Digest::sha256_of(config.as_bytes());
    let manifest = format!(
        r#"[{{"Config":"{}.json","RepoTags":["legacy:old"],"Layers":["aaa/layer.tar","bbb/layer.tar"]}}]"#,
        cfg_d.hex()
    );
    // Old docker: layer dirs, the duplicate layer as a symlink.
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("aaa/VERSION", b"1.0");
    add("aaa/json", b"{}");
    add("aaa/layer.tar", &layer);
    add(&format!("{}.json", cfg_d.hex()), config.as_bytes());
    add("manifest.json", manifest.as_bytes());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "bbb/layer.tar", "../aaa/layer.tar")
        .unwrap();
    let tar = b.into_inner().unwrap();

    let s = Store::open(tmp.path().join("s")).unwrap();
    let loaded = s.load(&tar[..]).unwrap();
    assert_eq!(loaded[0].id, cfg_d);
    let rec = s.images().lookup("legacy:old").unwrap();
    assert_eq!(rec.id, cfg_d);
    assert_eq!(rec.layers.len(), 2);
    assert!(s
        .snapshots()
        .committed_fs(rec.top_chain_id().unwrap())
        .join("hello")
        .is_file());

    // OCI layout only: our save without the docker files.
    let saved = s.save(&["legacy:old".to_string()], Vec::new()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries(&saved) {
        if name == "manifest.json" || name == "repositories" {
            continue;
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, &name, &data[..]).unwrap();
    }
    let oci = b.into_inner().unwrap();
    let t = Store::open(tmp.path().join("t")).unwrap();
    let loaded = t.load(&oci[..]).unwrap();
    assert_eq!(loaded[0].id, cfg_d);
    assert_eq!(
        loaded[0].references,
        vec![Reference::parse("legacy:old").unwrap()]
    );
    assert_eq!(
        t.images().lookup("legacy:old").unwrap().manifest.digest,
        rec.manifest.digest
    );
}

#[test]
fn bad_archives_leave_the_store_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path().join("a")).unwrap();
    let img = two_layer_image(&a);
    let tar = a
        .save(&["localhost:5000/app:v1".to_string()], Vec::new())
        .unwrap();
    let b = Store::open(tmp.path().join("b")).unwrap();
    // Something already in b, which must survive.
    b.import(
        &TarBuilder::new().file("x", b"x").build()[..],
        &ImportOptions {
            reference: Some(Reference::parse("existing").unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let before = state(&b);

    // 1. A blob whose content does not match its name.
    let mut bad = Vec::new();
    {
        let mut builder = tar::Builder::new(&mut bad);
        for (name, mut data) in entries(&tar) {
            if name == format!("blobs/sha256/{}", img.layers[1].digest.hex()) {
                let n = data.len();
                data[n / 2] ^= 0xff;
            }
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            builder.append_data(&mut h, &name, &data[..]).unwrap();
        }
        builder.finish().unwrap();
    }
    let e = b.load(&bad[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:?}");
    assert_eq!(state(&b), before);

    // 2. A config whose diff ids do not match the layers (detected while unpacking).
    let layer = TarBuilder::new().file("f", b"f").build();
    let wrong = Digest::sha256_of(b"wrong");
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{wrong}"]}}}}"#
    );
    let manifest = r#"[{"Config":"c.json","RepoTags":["bad:1"],"Layers":["l/layer.tar"]}]"#;
    let mut bld = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("l/layer.tar", layer.as_slice()),
        ("c.json", config.as_bytes()),
        ("manifest.json", manifest.as_bytes()),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        bld.append_data(&mut h, name, data).unwrap();
    }
    let e = b.load(&bld.into_inner().unwrap()[..]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:?}");
    assert_eq!(state(&b), before);
    assert!(b.images().lookup("bad:1").is_err());

    // 3. A truncated archive.
    let e = b.load(&tar[..tar.len() / 2]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e:?}");
    assert_eq!(state(&b), before);

    // 4. An entry climbing out of the archive.
    let e = b
        .load(&TarBuilder::new().file("../manifest.json", b"[]").build()[..])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(state(&b), before);

    // 5. Not an archive of images at all.
    let e = b
        .load(&TarBuilder::new().file("readme", b"hi").build()[..])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(state(&b), before);
}

#[test]
fn skopeo_reads_saved_archives() {
    let Ok(out) = std::process::Command::new("skopeo")
        .arg("--version")
        .output()
    else {
        eprintln!("skipping: skopeo not installed");
        return;
    };
    assert!(out.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let s = Store::open(tmp.path().join("s")).unwrap();
    let img = two_layer_image(&s);
    let path = tmp.path().join("img.tar");
    let f = fs::File::create(&path).unwrap();
    s.save(&["localhost:5000/app:v1".to_string()], f).unwrap();
    for transport in ["docker-archive", "oci-archive"] {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--config"])
            .arg(format!("{transport}:{}", path.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The config skopeo sees is byte-identical to ours (same image id).
        assert_eq!(Digest::sha256_of(&out.stdout), img.id, "{transport}");
    }
}
